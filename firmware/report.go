package firmware

import (
	"time"

	"github.com/rs/zerolog"
)

// Steps of an update, in the order Install reports them.
const (
	StepVerified   = "verified"   // release signature, sums and version accepted
	StepInstalling = "installing" // state recorded; the inactive slot is being written
	StepExtracting = "extracting" // the first file of the release is in the temp slot
	StepInstalled  = "installed"  // the slot is complete and synced
	// StepConfigChecked: the new slot's agent accepted the station's config (migrated into
	// config/<slot>.yaml); Status.Config says whether it changed.
	StepConfigChecked = "config-checked"
	StepSwitching     = "switching"    // the temp symlink exists; current not yet renamed
	StepSwitched      = "switched"     // current names the new slot
	StepRestarted     = "restarted"    // the supervisor restarted the agent
	StepHealthy       = "healthy"      // the agent answered /readyz in time; not yet committed
	StepCommitted     = "committed"    // the new slot is committed
	StepUnhealthy     = "unhealthy"    // the agent did not become healthy in time
	StepRollingBack   = "rolling-back" // the rollback is recorded; current not yet switched back
	StepRolledBack    = "rolled-back"  // the previous slot runs again
	StepAbandoned     = "abandoned"    // an update cut before its switch was dropped by Recover
	StepRecovering    = "recovering"   // Recover found an interrupted update
	StepFailed        = "failed"       // an error stopped the update (Err says which)
)

// Status is one step of an update, as a Reporter receives it.
type Status struct {
	Time    time.Time `json:"time"`
	Step    string    `json:"step"`
	Version string    `json:"version,omitempty"` // the release being installed
	From    string    `json:"from,omitempty"`    // the committed version before the update
	Slot    string    `json:"slot,omitempty"`    // the slot being installed (a or b)
	Err     string    `json:"error,omitempty"`
	// Config says what happened to the station's agent config at this step (migrated,
	// restored from a slot's snapshot, edits kept aside).
	Config string `json:"config,omitempty"`
}

// Reporter receives each step of an update (for the station's firmware/status topic).
// Report is called synchronously from the updater's goroutine, after the step's state is
// durable; it must return quickly and must not call back into the Updater.
type Reporter interface {
	Report(Status)
}

// LogReporter logs each step.
type LogReporter struct{ Log zerolog.Logger }

var _ Reporter = LogReporter{}

// Report logs s at info level, or at warn level for unhealthy, rolled-back and failed steps.
func (r LogReporter) Report(s Status) {
	ev := r.Log.Info()
	switch s.Step {
	case StepUnhealthy, StepRollingBack, StepRolledBack, StepFailed, StepAbandoned:
		ev = r.Log.Warn()
	}
	ev.Str("step", s.Step).Str("version", s.Version).Str("from", s.From).Str("slot", s.Slot)
	if s.Err != "" {
		ev = ev.Str("error", s.Err)
	}
	if s.Config != "" {
		ev = ev.Str("config", s.Config)
	}
	ev.Msg("firmware update")
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(Status)

// Report calls f(s).
func (f ReporterFunc) Report(s Status) { f(s) }
