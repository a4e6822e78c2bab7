// Package firmware is the appliance's own software update: signed agent release bundles,
// A/B installation, a health-gated commit and automatic rollback.
//
// # Basics
//
// A release (release.tar) holds manifest.json (ReleaseManifest: version, target
// architecture, the ONNX Runtime and OpenCV versions the agent needs, migration notes, the
// sha256 of every other member), bin/takt-agent, etc/agent.yaml (the default config),
// optional further files, and signature: the same ed25519 signature over manifest.json that
// model bundles carry (models.SignManifest), so stations trust one set of keys.
//
// The Updater keeps two slots, <root>/slots/a and <root>/slots/b, and a symlink
// <root>/current naming the running one (the systemd unit starts
// /opt/takt/current/bin/takt-agent). Install verifies a release, refuses a version that is
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
// back. The updater migrates nothing: /etc/takt and the verdict store in /var/lib/takt are
// shared by both slots, so a newer agent must keep its store readable by the older one.
package firmware
