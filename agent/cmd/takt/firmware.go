package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/takt-edge/takt/agent"
	"github.com/takt-edge/takt/agent/store"
	"github.com/takt-edge/takt/cloudsync/cli"
	"github.com/takt-edge/takt/firmware"
	"github.com/takt-edge/takt/models/bundle"
)

// firmwareCommands is "takt firmware ...".
func firmwareCommands() []*cli.Command {
	return []*cli.Command{
		{Name: "pack", Summary: "pack an agent binary, default config and notes into a release (signed with --key)", Run: cmdFirmwarePack},
		{Name: "sign", Summary: "sign (or re-sign, or mark as rollback) a release", Run: cmdFirmwareSign},
		{Name: "verify", Summary: "check a release's signature and sha256 sums", Run: cmdFirmwareVerify},
		{Name: "install", Summary: "install a release into the inactive slot, restart the agent, commit or roll back",
			Run: func(args []string, stdout, stderr io.Writer) error {
				return cmdFirmwareInstall(args, false, stdout, stderr)
			}},
		{Name: "recover", Summary: "finish or roll back an update a crash interrupted (install does this first)",
			Run: func(args []string, stdout, stderr io.Writer) error {
				return cmdFirmwareInstall(args, true, stdout, stderr)
			}},
		{Name: "status", Summary: "the slots, the committed version and the last update", Run: cmdFirmwareStatus},
		{Name: "watch", Summary: "install the releases announced on MQTT firmware/available (a service beside the agent)", Run: cmdFirmwareWatch},
	}
}

func keyFlag(fs *flag.FlagSet, keyFiles *[]string) {
	fs.Func("key", "trusted public key file, KEYFILE.pub (repeatable, required)", func(v string) error {
		*keyFiles = append(*keyFiles, v)
		return nil
	})
}

func loadKeys(fs *flag.FlagSet, keyFiles []string) (bundle.TrustedKeys, error) {
	if len(keyFiles) == 0 {
		fs.Usage()
		return nil, cli.Usagef("%s: give at least one --key KEYFILE.pub", fs.Name())
	}
	return bundle.LoadTrustedKeys(keyFiles...)
}

func cmdFirmwarePack(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firmware pack", stderr)
	binary := fs.String("binary", "", "agent binary (required)")
	config := fs.String("config", "", "default agent config (required)")
	version := fs.String("version", "", "release version, semantic (required)")
	arch := fs.String("arch", runtime.GOARCH, "GOARCH of the binary")
	ort := fs.String("onnxruntime", "1.24", "ONNX Runtime version the agent needs")
	opencv := fs.String("opencv", "4.6", "OpenCV version the agent needs")
	notes := fs.String("migration", "", "migration notes file (optional)")
	key := fs.String("key", "", "private key file to sign with (optional: unsigned, sign later)")
	rollback := fs.Bool("rollback", false, "sign as a rollback (installable over a higher version)")
	storeFormat := fs.Uint64("store-format", store.CurrentFormat(), "verdict store format the agent migrates to (default: this build's)")
	storeMinReader := fs.Uint64("store-min-reader", store.CurrentMinReader(), "oldest store format that opens the store after it (default: this build's)")
	configVersion := fs.Int("config-version", agent.CurrentConfigVersion(), "agent config version the agent reads (default: this build's)")
	extra := map[string]string{}
	fs.Func("file", "extra member NAME=PATH, e.g. share/README=README.md (repeatable)", func(v string) error {
		name, path, ok := strings.Cut(v, "=")
		if !ok {
			return errors.New("want NAME=PATH")
		}
		extra[name] = path
		return nil
	})
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if *binary == "" || *config == "" || *version == "" {
		fs.Usage()
		return cli.Usagef("firmware pack: --binary, --config and --version are required")
	}
	files := map[string][]byte{}
	for name, path := range map[string]string{firmware.AgentFile: *binary, firmware.ConfigFile: *config} {
		extra[name] = path
	}
	for name, path := range extra {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("firmware pack: %w", err)
		}
		files[name] = data
	}
	m := firmware.ReleaseManifest{Version: *version, Arch: *arch, ONNXRuntime: *ort, OpenCV: *opencv, Rollback: *rollback,
		StoreFormat: *storeFormat, StoreMinReader: *storeMinReader, ConfigVersion: *configVersion}
	if *notes != "" {
		data, err := os.ReadFile(*notes)
		if err != nil {
			return fmt.Errorf("firmware pack: %w", err)
		}
		m.Migration = string(data)
	}
	var k ed25519.PrivateKey
	if *key != "" {
		var err error
		if k, err = bundle.ReadPrivateKey(*key); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	if err := firmware.BuildRelease(&buf, m, files, k); err != nil {
		return err
	}
	if err := bundle.WriteFileAtomic(fs.Arg(0), buf.Bytes()); err != nil {
		return err
	}
	state := "unsigned (run takt firmware sign)"
	if *key != "" {
		state = "signed"
	}
	fmt.Fprintf(stdout, "pack: %s: release %s for %s, %d files, %s\n", fs.Arg(0), *version, *arch, len(files), state)
	return nil
}

func cmdFirmwareSign(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firmware sign", stderr)
	key := fs.String("key", "", "private key file (required)")
	out := fs.String("out", "", "signed release file (default: overwrite the input)")
	rollback := fs.Bool("rollback", false, "mark the release as a rollback before signing")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if *key == "" {
		fs.Usage()
		return cli.Usagef("firmware sign: --key is required")
	}
	k, err := bundle.ReadPrivateKey(*key)
	if err != nil {
		return err
	}
	rel, err := firmware.InspectRelease(fs.Arg(0))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := rel.Sign(&buf, k, *rollback); err != nil {
		return err
	}
	dst := *out
	if dst == "" {
		dst = fs.Arg(0)
	}
	if err := bundle.WriteFileAtomic(dst, buf.Bytes()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sign: %s: release %s signed by key %s (rollback %v)\n", dst, rel.Manifest.Version,
		bundle.KeyID(k.Public().(ed25519.PublicKey)), rel.Manifest.Rollback || *rollback)
	return nil
}

func cmdFirmwareVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firmware verify", stderr)
	var keyFiles []string
	keyFlag(fs, &keyFiles)
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	keys, err := loadKeys(fs, keyFiles)
	if err != nil {
		return err
	}
	rel, err := firmware.OpenRelease(fs.Arg(0), keys)
	if err != nil {
		return err
	}
	m := rel.Manifest
	fmt.Fprintf(stdout, "verify: ok: release %s for %s signed by key %s, %d files match their sha256; needs ONNX Runtime %s, OpenCV %s; rollback %v\n",
		m.Version, m.Arch, rel.KeyID, len(m.Files), m.ONNXRuntime, m.OpenCV, m.Rollback)
	if m.StoreFormat > 0 || m.ConfigVersion > 0 {
		fmt.Fprintf(stdout, "formats: config_version %d, store format %d (min_reader %d)\n", m.ConfigVersion, m.StoreFormat, m.StoreMinReader)
	}
	if m.Migration != "" {
		fmt.Fprintf(stdout, "migration notes:\n%s\n", strings.TrimRight(m.Migration, "\n"))
	}
	return nil
}

// updaterFlags are the flags of the commands that install releases.
type updaterFlags struct {
	keyFiles   []string
	root       *string
	healthURL  *string
	timeout    *time.Duration
	supervisor *string
	unit       *string
	agentArgs  []string
	config     *string
}

func addUpdaterFlags(fs *flag.FlagSet) *updaterFlags {
	f := &updaterFlags{}
	keyFlag(fs, &f.keyFiles)
	def := firmware.DefaultConfig()
	f.root = fs.String("root", def.Root, "updater root: slots/{a,b}, current, state.json")
	f.healthURL = fs.String("health-url", def.HealthURL, "the agent's readiness URL; 200 means healthy")
	f.timeout = fs.Duration("health-timeout", def.HealthTimeout, "how long the new agent has to become healthy")
	f.supervisor = fs.String("supervisor", "systemd", "how to restart the agent: systemd or process")
	f.unit = fs.String("unit", "takt-agent.service", "systemd unit (--supervisor systemd)")
	f.config = fs.String("config", def.AgentConfig, "the agent's config file: checked by the new release's agent before the switch, restored on rollback")
	fs.Func("agent-arg", "agent argument (--supervisor process; repeatable)", func(v string) error {
		f.agentArgs = append(f.agentArgs, v)
		return nil
	})
	return f
}

// updater builds the Updater the flags describe, reporting to rep.
func (f *updaterFlags) updater(name string, fs *flag.FlagSet, rep firmware.Reporter) (*firmware.Updater, error) {
	keys, err := loadKeys(fs, f.keyFiles)
	if err != nil {
		return nil, err
	}
	var sup firmware.Supervisor
	switch *f.supervisor {
	case "systemd":
		sup = firmware.Systemd{Unit: *f.unit}
	case "process":
		sup = &firmware.Process{Root: *f.root, Args: f.agentArgs}
	default:
		return nil, fmt.Errorf("%s: --supervisor %q: want systemd or process", name, *f.supervisor)
	}
	return firmware.New(firmware.Config{Root: *f.root, HealthURL: *f.healthURL, HealthTimeout: *f.timeout, AgentConfig: *f.config}, keys, sup, rep)
}

func firmwareLogger(stderr io.Writer) zerolog.Logger {
	return zerolog.New(zerolog.ConsoleWriter{Out: stderr, NoColor: true, TimeFormat: time.TimeOnly}).With().Timestamp().Str("component", "firmware").Logger()
}

func cmdFirmwareInstall(args []string, recoverOnly bool, stdout, stderr io.Writer) error {
	name := "firmware install"
	want := 1
	if recoverOnly {
		name, want = "firmware recover", 0
	}
	fs := newFlags(name, stderr)
	uf := addUpdaterFlags(fs)
	if err := parseFlags(fs, args, want); err != nil {
		return err
	}
	u, err := uf.updater(name, fs, firmware.LogReporter{Log: firmwareLogger(stderr)})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if recoverOnly {
		err = u.Recover(ctx)
	} else {
		err = u.Install(ctx, fs.Arg(0))
	}
	if err != nil {
		return err
	}
	st, err := firmware.ReadState(*uf.root)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok: slot %s runs %s (last update: %s)\n", strings.TrimPrefix(name, "firmware "), st.Slot, st.Version, st.Last)
	return nil
}

// cmdFirmwareWatch runs the firmware watcher: the station's broker, topics and object store
// come from the agent's config file.
func cmdFirmwareWatch(args []string, stdout, stderr io.Writer) error {
	const name = "firmware watch"
	fs := newFlags(name, stderr)
	uf := addUpdaterFlags(fs) // --config: also the agent's mqtt (broker, site, line), station and sync (object store)
	config := uf.config
	budget := fs.Int64("max-bytes", firmware.DefaultWatchBudget, "largest release to download, bytes")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*config)
	if err != nil {
		return err
	}
	if !cfg.MQTT.Enabled() {
		return fmt.Errorf("%s: %s: mqtt.broker is empty; releases are announced over MQTT", name, *config)
	}
	conn, topics, err := cfg.MQTTConn()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	conn.ClientID += "-firmware" // the agent holds its own client id
	log := firmwareLogger(stderr)
	w, err := firmware.NewWatcher(firmware.WatchConfig{Topics: topics, MQTT: conn, Sync: cfg.Sync, MaxBytes: *budget, Logger: log},
		func(rep firmware.Reporter) (*firmware.Updater, error) { return uf.updater(name, fs, rep) })
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info().Str("station", topics.Station).Str("topic", topics.Topic("firmware/available")).Msg("watching for agent releases")
	return w.Run(ctx)
}

func cmdFirmwareStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firmware status", stderr)
	root := fs.String("root", firmware.DefaultConfig().Root, "updater root")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	st, err := firmware.ReadState(*root)
	if err != nil {
		return err
	}
	out := struct {
		Current string            `json:"current"`
		Slots   map[string]string `json:"slots"`
		State   firmware.State    `json:"state"`
	}{Current: firmware.CurrentSlot(*root), Slots: map[string]string{}, State: st}
	for _, s := range []string{"a", "b"} {
		rel, err := firmware.InspectSlot(filepath.Join(*root, "slots", s))
		switch {
		case err == nil:
			out.Slots[s] = rel.Version
		case errors.Is(err, os.ErrNotExist):
			out.Slots[s] = ""
		default:
			out.Slots[s] = "unreadable: " + err.Error()
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
