package ota

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/takt-edge/takt/cloudsync/wire"
	"github.com/takt-edge/takt/models/bundle"
)

// The model update's durable state lives in <data_dir>/models/:
//
//	state.json           State, written atomically (temp, fsync, rename, fsync dir)
//	bundles/*.tar        the active bundle and the previous one (kept for rollback)
//	staging/*.tar[.part] the candidate being downloaded or checked
//
// The state names every file it depends on; a file it does not name is garbage from an
// interrupted step and is removed at boot.

// Phases of a candidate (otaCandidate.Phase), in order.
const (
	PhaseDownloading = "downloading"
	PhaseVerifying   = "verifying"
	PhaseValidating  = "validating"
	PhaseShadow      = "shadow"
	PhaseSwapping    = "swapping"
)

// otaBundle is an installed bundle.
type otaBundle struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"` // of the model file
	File    string `json:"file"`   // relative to <data_dir>/models
	// Operating is the bundle's operating point (its manifest's thresholds).
	Operating *wire.OperatingPoint `json:"operating_point,omitempty"`
}

// otaCandidate is the update in flight.
type otaCandidate struct {
	// Target is the station model it replaces; known once the bundle is verified.
	Target  string `json:"target,omitempty"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Source: an object key (Key) or a local file (File, copied to staging first).
	Key        string    `json:"key,omitempty"`
	Source     string    `json:"source,omitempty"`
	SHA256     string    `json:"sha256,omitempty"` // announced sha256 of the bundle tar
	Size       int64     `json:"size,omitempty"`
	Staged     string    `json:"staged"` // relative to <data_dir>/models
	Phase      string    `json:"phase"`
	Restarts   int       `json:"restarts,omitempty"` // agent starts while this candidate was in flight
	Started    time.Time `json:"started"`
	Rollback   bool      `json:"rollback,omitempty"`
	BundleHash string    `json:"bundle_sha256,omitempty"` // sha256 of the staged tar, once verified
	// Operating is the bundle's operating point, once verified.
	Operating *wire.OperatingPoint `json:"operating_point,omitempty"`
}

// otaWatch is a promotion under watch.
type otaWatch struct {
	Since    time.Time `json:"since"`
	Restarts int       `json:"restarts,omitempty"`
	// Baseline is the previous model's figures the watch compares with.
	Baseline otaBaseline `json:"baseline"`
}

// otaBaseline is a model's figures over recent parts.
type otaBaseline struct {
	Parts     int     `json:"parts"`
	FailRate  float64 `json:"fail_rate"`
	ErrorRate float64 `json:"error_rate"`
	InferP99  float64 `json:"infer_p99_ms"`
}

// otaLast is the last status published on model/status, so a restarted agent repeats it.
type otaLast struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
	// Figures the step was decided on (model/status figures), nil when it measured none.
	Figures *wire.ModelFigures `json:"figures,omitempty"`
	// Operating is the model's operating point, nil when unknown.
	Operating *wire.OperatingPoint `json:"operating_point,omitempty"`
}

// otaModel is the update state of one station model (by its name: models[].name, or the
// model's own name for a single model).
type otaModel struct {
	// Active is the bundle serving; nil: the configured model (bundle or path).
	Active *otaBundle `json:"active,omitempty"`
	// Previous is the bundle Active replaced, kept for rollback; nil with Active set means
	// the configured model was the previous one.
	Previous *otaBundle `json:"previous,omitempty"`
	// Watch is set while Active, just promoted, is watched.
	Watch *otaWatch `json:"watch,omitempty"`
}

// State is state.json.
type State struct {
	Models    map[string]*otaModel `json:"models,omitempty"`
	Candidate *otaCandidate        `json:"candidate,omitempty"`
	// Rejected are the bundle sha256s (or name@version when none was announced) refused or
	// rolled back; the same retained announcement is not tried again after a restart.
	Rejected []string `json:"rejected,omitempty"`
	Last     *otaLast `json:"last,omitempty"`
}

// ReadState reads the update state in dir (<data_dir>/models); a missing file is the empty state.
func ReadState(dir string) (State, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("model update state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, fmt.Errorf("model update state %s: %w", filepath.Join(dir, "state.json"), err)
	}
	return st, nil
}

func writeOTAState(dir string, st State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return bundle.WriteFileAtomic(filepath.Join(dir, "state.json"), append(data, '\n'))
}

// model returns the state of the station model named name, creating it.
func (st *State) model(name string) *otaModel {
	if st.Models == nil {
		st.Models = map[string]*otaModel{}
	}
	m := st.Models[name]
	if m == nil {
		m = &otaModel{}
		st.Models[name] = m
	}
	return m
}

// clone copies st deeply, for readers outside the updater's lock.
func (st State) clone() State {
	cp := func(b *otaBundle) *otaBundle {
		if b == nil {
			return nil
		}
		c := *b
		return &c
	}
	out := State{Rejected: append([]string(nil), st.Rejected...)}
	if st.Models != nil {
		out.Models = map[string]*otaModel{}
		for k, m := range st.Models {
			c := otaModel{Active: cp(m.Active), Previous: cp(m.Previous)}
			if m.Watch != nil {
				w := *m.Watch
				c.Watch = &w
			}
			out.Models[k] = &c
		}
	}
	if st.Candidate != nil {
		c := *st.Candidate
		out.Candidate = &c
	}
	if st.Last != nil {
		l := *st.Last
		out.Last = &l
	}
	return out
}

func (st *State) rejected(id string) bool {
	for _, r := range st.Rejected {
		if r == id {
			return true
		}
	}
	return false
}

func (st *State) reject(id string) {
	if id == "" || st.rejected(id) {
		return
	}
	st.Rejected = append(st.Rejected, id)
	if len(st.Rejected) > 64 {
		st.Rejected = st.Rejected[len(st.Rejected)-64:]
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
