package firmware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/takt-edge/takt/models/bundle"
)

// Config configures an Updater.
type Config struct {
	// Root holds what the updater writes at run time: slots/a, slots/b, the current
	// symlink, state.json, config/ and, for Watch, staging/ and watch.json. Default
	// /var/lib/takt/firmware (the .deb's packaged agent in /usr/lib/takt is only the seed
	// of slot a: /usr is package content, read-only at run time).
	Root string `yaml:"root"`
	// HealthURL is the new agent's readiness endpoint; 200 means healthy.
	// Default http://127.0.0.1:8080/readyz.
	HealthURL string `yaml:"health_url"`
	// HealthTimeout is how long the new agent has, after its restart, to become healthy.
	// Default 2m.
	HealthTimeout time.Duration `yaml:"health_timeout"`
	// Arch is the architecture releases must be built for. Default: the updater's GOARCH.
	Arch string `yaml:"arch"`
	// AgentConfig is the station's agent config, the file the agent runs with and the
	// operator edits; the new release's agent migrates and checks it before the switch, and
	// a rollback restores the one the previous release ran with (config.go). Default
	// /etc/takt/agent.yaml.
	AgentConfig string `yaml:"agent_config"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Root: "/var/lib/takt/firmware", HealthURL: "http://127.0.0.1:8080/readyz", HealthTimeout: 2 * time.Minute, Arch: goarch,
		AgentConfig: "/etc/takt/agent.yaml"}
}

// Validate checks the keys.
func (c Config) Validate() error {
	var errs []error
	if c.Root == "" {
		errs = append(errs, errors.New("firmware.root: empty"))
	}
	if !strings.HasPrefix(c.HealthURL, "http://") && !strings.HasPrefix(c.HealthURL, "https://") {
		errs = append(errs, fmt.Errorf("firmware.health_url: %q is not an http(s) URL", c.HealthURL))
	}
	if c.AgentConfig == "" {
		errs = append(errs, errors.New("firmware.agent_config: empty (the agent's config file, e.g. /etc/takt/agent.yaml)"))
	}
	if c.HealthTimeout <= 0 {
		errs = append(errs, fmt.Errorf("firmware.health_timeout: %s must be > 0", c.HealthTimeout))
	}
	return errors.Join(errs...)
}

// Phases of State.
const (
	PhaseIdle        = "idle"         // nothing in flight; Slot is committed
	PhaseInstalling  = "installing"   // writing NewSlot; current still names Slot
	PhaseSwitching   = "switching"    // current names Slot or NewSlot
	PhaseTesting     = "testing"      // current names NewSlot; health not yet confirmed
	PhaseRollingBack = "rolling-back" // current names NewSlot or Slot; going back to Slot
)

// State is the updater's durable state, <root>/state.json.
type State struct {
	Phase string `json:"phase"`
	// Slot and Version are the committed slot and its version ("" before the first commit).
	Slot    string `json:"slot,omitempty"`
	Version string `json:"version,omitempty"`
	// NewSlot and NewVersion are the update in flight.
	NewSlot    string    `json:"new_slot,omitempty"`
	NewVersion string    `json:"new_version,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	// ConfigSwapped says the live agent config was replaced by the new slot's migrated one;
	// the committed slot's is in config/<Slot>.yaml, restored on rollback or abandon.
	ConfigSwapped bool `json:"config_swapped,omitempty"`
	// Last is the outcome of the last update (committed, rolled-back, abandoned, failed).
	Last     string    `json:"last,omitempty"`
	LastErr  string    `json:"last_error,omitempty"`
	LastTime time.Time `json:"last_time,omitzero"`
}

// Updater installs agent releases into A/B slots; see the package doc.
type Updater struct {
	cfg  Config
	keys bundle.TrustedKeys
	sup  Supervisor
	rep  Reporter
	hc   *http.Client
}

// New validates cfg and returns an Updater; it does no I/O.
func New(cfg Config, keys bundle.TrustedKeys, sup Supervisor, rep Reporter) (*Updater, error) {
	def := DefaultConfig()
	if cfg.Root == "" {
		cfg.Root = def.Root
	}
	if cfg.HealthURL == "" {
		cfg.HealthURL = def.HealthURL
	}
	if cfg.HealthTimeout == 0 {
		cfg.HealthTimeout = def.HealthTimeout
	}
	if cfg.Arch == "" {
		cfg.Arch = def.Arch
	}
	if cfg.AgentConfig == "" {
		cfg.AgentConfig = def.AgentConfig
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("firmware: no trusted keys")
	}
	if sup == nil || rep == nil {
		return nil, errors.New("firmware: nil supervisor or reporter")
	}
	return &Updater{cfg: cfg, keys: keys, sup: sup, rep: rep, hc: &http.Client{Timeout: 2 * time.Second}}, nil
}

func (u *Updater) statePath() string       { return filepath.Join(u.cfg.Root, "state.json") }
func (u *Updater) slotDir(s string) string { return filepath.Join(u.cfg.Root, "slots", s) }

// ReadState reads <root>/state.json; a missing file is an idle state on whatever slot
// current names (a station seeded by the .deb).
func ReadState(root string) (State, error) {
	data, err := os.ReadFile(filepath.Join(root, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		st := State{Phase: PhaseIdle, Slot: CurrentSlot(root)}
		if st.Slot != "" {
			st.Version = slotVersion(filepath.Join(root, "slots", st.Slot))
		}
		return st, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("firmware state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return State{}, fmt.Errorf("firmware state %s: %w", filepath.Join(root, "state.json"), err)
	}
	return st, nil
}

// CurrentSlot returns the slot (a or b) the current symlink under root names, or "".
func CurrentSlot(root string) string {
	target, err := os.Readlink(filepath.Join(root, "current"))
	if err != nil {
		return ""
	}
	switch filepath.Clean(target) {
	case filepath.Join("slots", "a"):
		return "a"
	case filepath.Join("slots", "b"):
		return "b"
	}
	return ""
}

// slotVersion is the version in a slot's manifest.json, or "".
func slotVersion(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return ""
	}
	var m ReleaseManifest
	if json.Unmarshal(data, &m) != nil {
		return ""
	}
	return m.Version
}

func (u *Updater) save(st State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return bundle.WriteFileAtomic(u.statePath(), append(data, '\n'))
}

func (u *Updater) report(st State, step string, err error) {
	u.reportNote(st, step, "", err)
}

func (u *Updater) reportNote(st State, step, note string, err error) {
	s := Status{Time: time.Now().UTC(), Step: step, Version: st.NewVersion, From: st.Version, Slot: st.NewSlot, Config: note}
	if err != nil {
		s.Err = err.Error()
	}
	u.rep.Report(s)
}

// Install verifies the release at path and installs it: see the package doc. It first
// finishes an interrupted update (Recover). It returns nil when the release is committed,
// an error wrapping ErrRolledBack when the agent was not healthy in time and the previous
// slot runs again, ErrBadRelease / ErrDowngrade / bundle.ErrBadSignature when the release
// was refused (nothing changed), or another error.
func (u *Updater) Install(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Join(u.cfg.Root, "slots"), 0o755); err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	if err := u.Recover(ctx); err != nil {
		return err
	}
	st, err := ReadState(u.cfg.Root)
	if err != nil {
		return err
	}
	rel, err := OpenRelease(path, u.keys)
	if err == nil && rel.Manifest.Arch != u.cfg.Arch {
		err = fmt.Errorf("%w: built for %s, this station is %s", ErrBadRelease, rel.Manifest.Arch, u.cfg.Arch)
	}
	if err == nil {
		err = CheckUpgrade(st.Version, rel.Manifest)
	}
	if err == nil && st.Slot != "" {
		err = checkStoreFormat(u.slotDir(st.Slot), st.Version, rel.Manifest)
	}
	if err != nil {
		u.rep.Report(Status{Time: time.Now().UTC(), Step: StepFailed, From: st.Version, Err: err.Error()})
		return err
	}
	st.NewSlot, st.NewVersion, st.Started = "a", rel.Manifest.Version, time.Now().UTC()
	if st.Slot == "a" {
		st.NewSlot = "b"
	}
	u.report(st, StepVerified, nil)

	st.Phase = PhaseInstalling
	if err := u.save(st); err != nil {
		return err
	}
	u.report(st, StepInstalling, nil)
	if err := u.writeSlot(st, rel); err != nil {
		return u.fail(st, err)
	}
	u.report(st, StepInstalled, nil)
	note, err := u.prepareConfig(ctx, st, rel.Manifest)
	if err != nil {
		return u.fail(st, err)
	}
	u.reportNote(st, StepConfigChecked, note, nil)

	st.Phase = PhaseSwitching
	if err := u.save(st); err != nil {
		return u.fail(st, err)
	}
	if err := u.swapConfig(&st); err != nil {
		return u.fail(st, err)
	}
	if err := u.switchTo(st, st.NewSlot); err != nil {
		return u.fail(st, err)
	}
	st.Phase = PhaseTesting
	if err := u.save(st); err != nil {
		return err
	}
	u.report(st, StepSwitched, nil)
	return u.test(ctx, st)
}

// fail abandons an update that had not switched yet.
func (u *Updater) fail(st State, cause error) error {
	u.report(st, StepFailed, cause)
	if CurrentSlot(u.cfg.Root) == st.NewSlot {
		return cause // switched: Recover will test or roll back
	}
	if _, err := u.restoreConfig(st); err != nil {
		return errors.Join(cause, err)
	}
	st = idle(st, StepFailed, cause)
	if err := u.save(st); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

func idle(st State, last string, cause error) State {
	st.Phase, st.Last, st.LastErr, st.LastTime = PhaseIdle, last, "", time.Now().UTC()
	if cause != nil {
		st.LastErr = cause.Error()
	}
	st.NewSlot, st.NewVersion, st.Started, st.ConfigSwapped = "", "", time.Time{}, false
	return st
}

// test restarts the agent on the new slot and commits or rolls back.
func (u *Updater) test(ctx context.Context, st State) error {
	err := u.sup.Restart(ctx)
	if err == nil {
		u.report(st, StepRestarted, nil)
		err = u.waitHealthy(ctx)
	}
	if err == nil {
		u.report(st, StepHealthy, nil)
		from := st.Version
		st.Slot, st.Version = st.NewSlot, st.NewVersion
		st = idle(st, StepCommitted, nil)
		if err := u.save(st); err != nil {
			return err
		}
		u.rep.Report(Status{Time: time.Now().UTC(), Step: StepCommitted, Version: st.Version, From: from, Slot: st.Slot})
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err() // cancelled, not unhealthy: the next Recover tests again
	}
	u.report(st, StepUnhealthy, err)
	return u.rollback(ctx, st, err)
}

// rollback switches back to the committed slot and restarts its agent.
func (u *Updater) rollback(ctx context.Context, st State, cause error) error {
	st.Phase = PhaseRollingBack
	if st.LastErr == "" && cause != nil {
		st.LastErr = cause.Error()
	}
	if err := u.save(st); err != nil {
		return err
	}
	u.report(st, StepRollingBack, cause)
	if st.Slot == "" {
		// The first install has nothing to go back to: keep it and say so.
		st.Slot, st.Version = st.NewSlot, st.NewVersion
		st = idle(st, StepFailed, cause)
		if err := u.save(st); err != nil {
			return err
		}
		return fmt.Errorf("firmware: first install %s is not healthy and has no previous slot: %w", st.Version, cause)
	}
	configNote, err := u.restoreConfig(st)
	if err != nil {
		return err
	}
	if err := u.switchTo(st, st.Slot); err != nil {
		return err
	}
	if err := u.sup.Restart(ctx); err != nil {
		return fmt.Errorf("firmware: rollback to %s: %w", st.Version, err)
	}
	healthErr := u.waitHealthy(ctx)
	version := st.NewVersion
	reason := st.LastErr
	st = idle(st, StepRolledBack, errors.New(reason))
	if err := u.save(st); err != nil {
		return err
	}
	s := Status{Time: time.Now().UTC(), Step: StepRolledBack, Version: version, From: st.Version, Slot: st.Slot, Err: reason, Config: configNote}
	if healthErr != nil {
		s.Err += "; previous agent not healthy either: " + healthErr.Error()
	}
	u.rep.Report(s)
	return fmt.Errorf("%w: %s stayed on %s: %s", ErrRolledBack, version, st.Version, reason)
}

// Recover finishes an update a crash interrupted: one cut before the switch is abandoned
// (current still names the committed slot), one cut after it is tested again and committed
// or rolled back, an interrupted rollback is completed. It returns nil when nothing was in
// flight or the update was committed, an error wrapping ErrRolledBack after a rollback.
func (u *Updater) Recover(ctx context.Context) error {
	st, err := ReadState(u.cfg.Root)
	if err != nil {
		return err
	}
	cur := CurrentSlot(u.cfg.Root)
	if st.Phase == PhaseIdle {
		if st.Slot != "" && cur != st.Slot {
			// Not reachable through Install; repair the link to the committed slot.
			return u.switchTo(st, st.Slot)
		}
		return nil
	}
	u.report(st, StepRecovering, nil)
	switch {
	case st.Phase == PhaseRollingBack:
		return u.rollback(ctx, st, errors.New(st.LastErr))
	case cur == st.NewSlot && st.NewSlot != "":
		st.Phase = PhaseTesting
		if err := u.save(st); err != nil {
			return err
		}
		return u.test(ctx, st)
	default:
		// Cut before the switch: the new slot may be partial; current is untouched.
		os.RemoveAll(u.slotDir("." + st.NewSlot + ".new"))
		os.Remove(filepath.Join(u.cfg.Root, ".current.tmp"))
		note, err := u.restoreConfig(st)
		if err != nil {
			return err
		}
		abandoned := st
		st = idle(st, StepAbandoned, errors.New("update interrupted before the switch"))
		if err := u.save(st); err != nil {
			return err
		}
		u.reportNote(abandoned, StepAbandoned, note, errors.New("update interrupted before the switch"))
		return nil
	}
}

// waitHealthy polls HealthURL until it answers 200 or HealthTimeout passes.
func (u *Updater) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.HealthTimeout)
	defer cancel()
	last := errors.New("no answer yet")
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.cfg.HealthURL, nil)
		resp, err := u.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answered %s", u.cfg.HealthURL, resp.Status)
		} else if ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if pctx := context.Cause(ctx); errors.Is(pctx, context.DeadlineExceeded) {
				return fmt.Errorf("not healthy within %s: %v", u.cfg.HealthTimeout, last)
			}
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeSlot writes rel into slots/.<slot>.new, syncs it and renames it to slots/<slot>.
func (u *Updater) writeSlot(st State, rel *Release) error {
	final := u.slotDir(st.NewSlot)
	tmp := u.slotDir("." + st.NewSlot + ".new")
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	files := map[string][]byte{ManifestFile: rel.ManifestJSON, SignatureFile: rel.Signature}
	for name, data := range rel.Files {
		files[name] = data
	}
	first := true
	dirs := map[string]bool{tmp: true}
	for name, data := range files {
		p := filepath.Join(tmp, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("firmware: %w", err)
		}
		for d := filepath.Dir(p); strings.HasPrefix(d, tmp); d = filepath.Dir(d) {
			dirs[d] = true
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		if err := writeFileSynced(p, data, mode); err != nil {
			return err
		}
		if first {
			u.report(st, StepExtracting, nil)
			first = false
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	return syncDir(filepath.Dir(final))
}

// switchTo points current at slots/<slot>: a symlink under a temp name, renamed over current.
func (u *Updater) switchTo(st State, slot string) error {
	tmp := filepath.Join(u.cfg.Root, ".current.tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("slots", slot), tmp); err != nil {
		return fmt.Errorf("firmware: switch to slot %s: %w", slot, err)
	}
	u.report(st, StepSwitching, nil)
	if err := os.Rename(tmp, filepath.Join(u.cfg.Root, "current")); err != nil {
		return fmt.Errorf("firmware: switch to slot %s: %w", slot, err)
	}
	return syncDir(u.cfg.Root)
}

// VerifySlot checks an installed slot: its manifest.json is signed by one of keys and every
// file it lists is present with its sha256.
func VerifySlot(dir string, keys bundle.TrustedKeys) error {
	manifest, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return fmt.Errorf("slot %s: %w", dir, err)
	}
	sig, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	if err != nil {
		return fmt.Errorf("slot %s: %w", dir, err)
	}
	if _, err := bundle.VerifyManifest(manifest, sig, keys); err != nil {
		return fmt.Errorf("slot %s: %w", dir, err)
	}
	var m ReleaseManifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return fmt.Errorf("slot %s: %w: %v", dir, ErrBadRelease, err)
	}
	for name, want := range m.Files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return fmt.Errorf("slot %s: %w", dir, err)
		}
		if got := sha256Hex(data); got != want {
			return fmt.Errorf("slot %s: %w: %s: sha256 %s, manifest says %s", dir, ErrBadRelease, name, got, want)
		}
	}
	return nil
}

// InspectSlot reads an installed slot's manifest without verifying it (for display).
// A slot that does not exist gives an error wrapping os.ErrNotExist.
func InspectSlot(dir string) (*ReleaseManifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("slot %s: %w", dir, err)
	}
	var m ReleaseManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("slot %s: %w: %v", dir, ErrBadRelease, err)
	}
	return &m, nil
}
