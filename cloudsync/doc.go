// Package cloudsync holds both ends of Takt's edge-to-cloud sync: the MQTT
// connection with TLS and reconnect, the object-store client, the station
// uploader that drains the local outbox to S3-compatible object storage, and
// the cloud companion takt-cloud (cmd/takt-cloud). The protocol itself (MQTT
// topics and message types, object keys, outbox items) lives in the leaf
// package cloudsync/wire, which imports no client library, so the station
// store uses it without linking paho or minio-go.
//
// cloudsync sits between the ground floor (camera, models) and the top floor
// (agent, firmware): it never imports agent, so takt-cloud builds without the
// station. Third-party client types (paho, minio-go) do not cross its API.
//
// Tests use real servers started by package cloudsync/cloudtest.
package cloudsync
