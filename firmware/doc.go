// Package firmware is the appliance's own software update: signed agent release bundles,
// A/B installation, a health-gated commit and automatic rollback.
//
// # Basics
//
// A release (release.tar) holds manifest.json (ReleaseManifest: version, target
// architecture, the ONNX Runtime and OpenCV versions the agent needs, migration notes, the
// sha256 of every other member), bin/takt-agent, etc/agent.yaml (the default config),
// optional further files, and signature: the same ed25519 signature over manifest.json that
// model bundles carry (bundle.SignManifest), so stations trust one set of keys.
//
// The Updater keeps two slots, <root>/slots/a and <root>/slots/b, and a symlink
// <root>/current naming the running one (root is /var/lib/takt/firmware by default; the
// systemd unit starts /var/lib/takt/firmware/current/bin/takt-agent). Install verifies a release, refuses a version that is
// not above the committed one unless the release is signed as a rollback, writes it into the
// inactive slot, switches current (symlink to a temp name, rename), restarts the agent
// through a Supervisor and commits only if the agent answers GET /readyz with 200 within
// the health timeout; otherwise it switches back and restarts the previous agent.
//
// # Caveats
//
// Every step is recorded first in <root>/state.json (temp file, fsync, rename, fsync of
// the folder). After a power cut or SIGKILL at any step, current names a complete slot, and
// Recover (which Install calls first) finishes the interrupted update: an update cut before
// the switch is abandoned, one cut after it is health-checked again and committed or rolled
// back.
//
// The station config (/etc/takt/agent.yaml) and the verdict store (/var/lib/takt, the
// agent's data_dir, whose firmware/ folder is the updater's root) are shared by both
// slots. Before the switch the new slot's agent migrates and checks the
// config ("takt-agent config migrate"; a refusal refuses the release); the config each
// slot ran with is kept under <root>/config and restored on rollback (config.go). The store
// migrates itself on open (agent/store format and min_reader); the updater refuses a
// release whose store min_reader the committed release could not read, so a rollback
// always opens the store the newer agent wrote.
package firmware
