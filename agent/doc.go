// Package agent is the station agent: it reads frames from the station's camera, scores
// each part with the station's model, decides PASS / FAIL / NO_DECISION within the part's
// deadline, and commits every verdict, with its image, to the durable store before the part
// counts as done.
//
// # Basics
//
// LoadConfig reads and validates the YAML configuration; New builds an Agent without I/O;
// Run opens the store, the model and the camera, inspects parts until the context ends, the
// source is exhausted or MaxParts is reached, and closes everything before it returns.
//
// # Line and operators
//
// While Run runs, and as configured, it serves the operator page, the HTTP API, /metrics,
// /healthz and /readyz (package agent/web), answers the PLC over Modbus TCP (agent/plc),
// runs the MQTT roles (agent/stationmqtt) and model updates (agent/ota) and talks to
// systemd (agent/sdnotify). Each reaches the running station (live.go) through a small
// interface of its own; Agent.Label and Agent.Trigger are the one path for labels and
// triggers from the page, the API, the PLC and MQTT. Every committed part goes to the
// observers registered while the services are wired (metrics, yield, alerts, waiting
// triggers, MQTT, the page's recent parts, the model updater), in that order.
//
// # Caveats
//
// A verdict is durable when Run logs it ("part committed"); a SIGKILL after that loses
// nothing. Parts in flight when Run's context is cancelled are still committed.
package agent
