// Package station holds what the station agent's service packages (MQTT roles, PLC
// handshake, operator HTTP side) share about a running station: the errors of its live
// operations and the operator labels. Each service package defines the few methods it
// needs of the station as its own interface; package agent satisfies them.
//
// # Caveats
//
// The errors are sentinels compared with errors.Is; package agent re-exports them under
// the same names, with the same values.
package station

import "errors"

// Operator labels a verdict can get (the operator page, POST /verdicts/{id}/label, MQTT
// cmd/label).
const (
	// LabelFalseReject: the part was FAILed (or got NO_DECISION) but is good.
	LabelFalseReject = "false_reject"
	// LabelFalseAccept: the part PASSed but is defective.
	LabelFalseAccept = "false_accept"
)

// Errors of the station's live operations (label, trigger).
var (
	// ErrNotRunning: the agent is not inside Run (or is shutting down).
	ErrNotRunning = errors.New("agent is not running")
	// ErrBadLabel: the label is not one of the known labels or does not fit the verdict.
	ErrBadLabel = errors.New("bad label")
	// ErrNoTrigger: the camera cannot be triggered (not in triggered mode, too many
	// triggers waiting, closed).
	ErrNoTrigger = errors.New("camera cannot take a trigger")
)
