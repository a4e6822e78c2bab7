// Package stationmqtt runs the station agent's MQTT roles.
//
// # Basics
//
// New builds the roles without I/O; Role.Run connects and runs them. The roles are:
//
//   - status: retained; "online" at every connect (birth), refreshed every
//     mqtt.status_interval, "offline" as the last will and when the agent stops.
//   - verdict and alert: through the store's MQTT outbox. The enqueuer turns
//     committed verdicts into verdict messages (and fail / no_decision alerts)
//     reading the store from a durable cursor, so a verdict committed right
//     before a crash is still announced after the restart; raise adds other
//     alerts. The sender publishes the outbox with QoS 1 and removes a message
//     only after the broker's PUBACK. Every message carries a unique id;
//     those of verdicts and their alerts are derived from the verdict, so a
//     message sent twice has the same id.
//   - cmd/trigger and cmd/label in; a rejected command is answered on error.
//   - with mqtt.sparkplug, Sparkplug B in place of status and verdict: NBIRTH and
//     DBIRTH at every connect and on a rebirth NCMD, NDEATH as the will (bdSeq
//     kept in a file across restarts), one DDATA per verdict through the same
//     outbox, given its seq only when sent so seq stays continuous (sparkplug.go).
//
// paho.mqtt.golang speaks MQTT 3.1.1, which has no response topic or
// correlation data (MQTT 5): the trigger's correlation_id comes back as a
// field of the verdict message.
//
// # Caveats
//
// The verdict and alert messages are durable in the store's outbox before they count as
// sent, so they survive a restart; the retained status is not queued (only the latest
// matters).
package stationmqtt
