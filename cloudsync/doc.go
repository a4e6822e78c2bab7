// Package cloudsync holds both ends of Takt's edge-to-cloud sync: the protocol
// stations and the cloud share (MQTT topics and message types, object keys, the
// MQTT connection with TLS and reconnect), the station uploader that drains the
// local outbox to S3-compatible object storage, and the cloud companion
// takt-cloud (cmd/takt-cloud).
//
// cloudsync sits between the ground floor (camera, models) and the top floor
// (agent, firmware): it never imports agent, so takt-cloud builds without the
// station. Third-party client types (paho, minio-go) do not cross its API.
//
// Tests use real servers started by package cloudsync/cloudtest.
package cloudsync
