// Package wire is what a station and the cloud exchange, as data: the MQTT
// topics and message types with their strict decoders, the object keys of the
// bucket layout, the outbox items and label records the uploader turns into
// objects, and small value types that configuration shares (ByteSize).
//
// # Caveats
//
// wire is a leaf: it imports no MQTT or object-storage client, so the station
// store and the firmware updater can use it without linking either. Decoders
// accept unknown fields but exactly [MessageSchema]; a station and a cloud
// must be upgraded together when the schema changes.
package wire
