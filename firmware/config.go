package firmware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/takt-edge/takt/models/bundle"
)

// The station's agent config across slots.
//
// The operator edits one file, Config.AgentConfig (/etc/takt/agent.yaml), and the agent
// runs with it. A release may add or rename keys (the agent's config_version); the agent of
// the other release may then refuse the file. So:
//
//   - Before the switch, the NEW slot's agent migrates and checks the live file
//     ("takt-agent config migrate -config LIVE -out <root>/config/<new>.yaml"). If it
//     refuses it, the release is refused (StepFailed, ErrConfigRejected): the running agent
//     was never stopped.
//   - At the switch, the live file is copied to <root>/config/<committed>.yaml, the
//     snapshot of the config the committed slot ran with, and (when the migration changed
//     it) the migrated file replaces the live one.
//   - A rollback, or an update cut before its switch, puts the snapshot back. An operator
//     edit made to the live file while the new release was tested is not lost: it is moved
//     to LIVE.edited-<version> and the status says so.
//   - After a commit, the live file is the new release's; edits go there as before.

// ErrConfigRejected: the release's agent refuses the station's config (an unknown key, a
// config_version it does not read, a value it rejects); nothing was switched. It wraps
// ErrBadRelease.
var ErrConfigRejected = fmt.Errorf("%w: its agent refuses this station's config", ErrBadRelease)

// configCheckTimeout bounds "takt-agent config migrate" of the new slot.
const configCheckTimeout = time.Minute

func (u *Updater) configDir() string { return filepath.Join(u.cfg.Root, "config") }

// slotConfig is the config slot ran (or will run) with.
func (u *Updater) slotConfig(slot string) string {
	if slot == "" {
		slot = "before-first-install"
	}
	return filepath.Join(u.configDir(), slot+".yaml")
}

// prepareConfig runs the new slot's agent to migrate and check the live config into
// config/<new>.yaml and describes the result. A release whose manifest states no
// config_version predates "takt-agent config" (its agent would take the command for a
// normal start): the live config is kept as it is, unchecked, and the status says so.
func (u *Updater) prepareConfig(ctx context.Context, st State, m *ReleaseManifest) (string, error) {
	live, err := os.ReadFile(u.cfg.AgentConfig)
	if err != nil {
		return "", fmt.Errorf("firmware: the station's agent config: %w", err)
	}
	if err := os.MkdirAll(u.configDir(), 0o750); err != nil {
		return "", fmt.Errorf("firmware: %w", err)
	}
	out := u.slotConfig(st.NewSlot)
	os.Remove(out)
	if m.ConfigVersion == 0 {
		info, err := os.Stat(u.cfg.AgentConfig)
		if err != nil {
			return "", fmt.Errorf("firmware: %w", err)
		}
		if err := bundle.WriteFileAtomicLike(out, live, info); err != nil {
			return "", fmt.Errorf("firmware: %w", err)
		}
		return "release states no config_version (its agent has no config check): config kept unchecked", nil
	}
	ctx, cancel := context.WithTimeout(ctx, configCheckTimeout)
	defer cancel()
	bin := filepath.Join(u.slotDir(st.NewSlot), filepath.FromSlash(AgentFile))
	var output []byte
	for attempt := 0; ; attempt++ {
		// A binary just written can be briefly "busy" (see Process.Restart).
		output, err = exec.CommandContext(ctx, bin, "config", "migrate", "-config", u.cfg.AgentConfig, "-out", out).CombinedOutput()
		if !errors.Is(err, syscall.ETXTBSY) || attempt == 20 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("firmware: %s config migrate: %w", st.NewVersion, ctx.Err())
		}
		return "", fmt.Errorf("%w: %s says: %s (%v)", ErrConfigRejected, st.NewVersion, bytes.TrimSpace(output), err)
	}
	migrated, err := os.ReadFile(out)
	if err != nil {
		return "", fmt.Errorf("%w: %s config migrate wrote no %s: %v", ErrConfigRejected, st.NewVersion, out, err)
	}
	if err := syncDir(u.configDir()); err != nil {
		return "", err
	}
	if bytes.Equal(migrated, live) {
		return "config accepted unchanged", nil
	}
	return "config migrated by " + st.NewVersion + "; takes effect at the switch", nil
}

// swapConfig snapshots the live config for the committed slot and, when the new slot's
// differs, installs it; it records ConfigSwapped (durably) before the live file changes.
func (u *Updater) swapConfig(st *State) error {
	live, err := os.ReadFile(u.cfg.AgentConfig)
	if err != nil {
		return fmt.Errorf("firmware: the station's agent config: %w", err)
	}
	info, err := os.Stat(u.cfg.AgentConfig)
	if err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	if err := bundle.WriteFileAtomicLike(u.slotConfig(st.Slot), live, info); err != nil {
		return fmt.Errorf("firmware: config snapshot: %w", err)
	}
	next, err := os.ReadFile(u.slotConfig(st.NewSlot))
	if err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	if bytes.Equal(next, live) {
		return nil
	}
	st.ConfigSwapped = true
	if err := u.save(*st); err != nil {
		return err
	}
	if err := bundle.WriteFileAtomicLike(u.cfg.AgentConfig, next, info); err != nil {
		return fmt.Errorf("firmware: install the migrated config: %w", err)
	}
	return nil
}

// restoreConfig puts the committed slot's snapshot back as the live config, when the
// update had replaced it, and describes what it did. It is idempotent: a rollback cut by a
// crash runs it again.
func (u *Updater) restoreConfig(st State) (string, error) {
	if !st.ConfigSwapped {
		return "", nil
	}
	snap, err := os.ReadFile(u.slotConfig(st.Slot))
	if err != nil {
		return "", fmt.Errorf("firmware: config snapshot of slot %s: %w", st.Slot, err)
	}
	live, err := os.ReadFile(u.cfg.AgentConfig)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("firmware: %w", err)
	}
	info, statErr := os.Stat(u.slotConfig(st.Slot))
	if statErr != nil {
		return "", fmt.Errorf("firmware: %w", statErr)
	}
	if live != nil {
		info, _ = os.Stat(u.cfg.AgentConfig)
	}
	note := fmt.Sprintf("config restored from the snapshot slot %s ran with (%s)", st.Slot, u.slotConfig(st.Slot))
	installed, _ := os.ReadFile(u.slotConfig(st.NewSlot))
	if live != nil && !bytes.Equal(live, snap) && !bytes.Equal(live, installed) {
		// Edited while the new release ran: keep the edit for the operator.
		kept := u.cfg.AgentConfig + ".edited-" + st.NewVersion
		if err := bundle.WriteFileAtomicLike(kept, live, info); err != nil {
			return "", fmt.Errorf("firmware: keep the config edited during the test: %w", err)
		}
		note += "; the edits made while " + st.NewVersion + " was tested are in " + kept
	}
	if !bytes.Equal(live, snap) {
		if err := bundle.WriteFileAtomicLike(u.cfg.AgentConfig, snap, info); err != nil {
			return "", fmt.Errorf("firmware: restore the config: %w", err)
		}
	}
	return note, nil
}
