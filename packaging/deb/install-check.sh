#!/bin/sh
# install-check.sh DEB: installs a takt .deb into a clean Debian 12 root and runs it there.
#
# The root is `debootstrap --variant=minbase bookworm` for the package's architecture (a
# foreign one, e.g. arm64 on an amd64 box, runs under qemu-user-static through binfmt_misc,
# registered here if it is not). In it: apt installs the .deb with its dependencies, then, as
# the `takt` user, `takt-agent version` and `config check` of the packaged config, and a real
# inspection: `takt synth` renders 12 parts and a 10-part video of new parts on the same fixture, `takt model train` trains on
# the 12, and the agent inspects the video through OpenCV's FFmpeg reader with ONNX Runtime.
# The check passes only if the agent's verdicts, part by part, are the rendered ones: PASS
# for each good part, FAIL for each defect, none NO_DECISION or missing. Needs root, debootstrap and network to a Debian mirror.
#
#   sudo packaging/deb/install-check.sh dist/takt_0.1.0_arm64.deb [ROOT_DIR]
set -eu

deb=$(readlink -f "${1:?usage: install-check.sh DEB [ROOT_DIR]}")
root=${2:-$(mktemp -d /tmp/takt-install-check.XXXXXX)/root}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
arch=$(dpkg-deb -f "$deb" Architecture)
host=$(dpkg --print-architecture)

say() { echo "install-check: $*"; }
fail() { echo "install-check: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and chroot)"
command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"

if [ "$arch" != "$host" ]; then
	case "$arch" in
	arm64) qemu=qemu-aarch64 magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' \
		mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
	*) fail "no emulation set up for $arch on $host" ;;
	esac
	command -v "$qemu-static" >/dev/null || fail "$qemu-static is missing (apt-get install qemu-user-static)"
	bm=/proc/sys/fs/binfmt_misc
	[ -e "$bm/register" ] || mount -t binfmt_misc binfmt_misc "$bm" || fail "cannot mount $bm"
	if [ ! -e "$bm/$qemu" ]; then
		# F: the kernel opens the interpreter now, so it also works inside the chroot.
		printf '%s' ":$qemu:M::$magic:$mask:$(command -v "$qemu-static"):F" >"$bm/register" ||
			fail "cannot register $qemu with binfmt_misc"
		say "registered $qemu-static for $arch binaries"
	fi
fi

start=$(date +%s)
if [ ! -x "$root/usr/bin/apt-get" ]; then
	say "debootstrap $arch minbase into $root"
	debootstrap --arch="$arch" --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
		fail "debootstrap failed, see $root.debootstrap.log"
fi
base_kb=$(du -skx "$root" | cut -f1)

# The root sees none of the caller's environment (e.g. a developer's ONNXRUNTIME_LIB).
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

cleanup() { umount "$root/sys" "$root/proc" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount --bind /sys "$root/sys"
cp "$deb" "$root/tmp/takt.deb"

say "apt-get install the .deb and its dependencies"
in_root sh -c 'export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq && apt-get install -y -qq --no-install-recommends /tmp/takt.deb' \
	>"$root.install.log" 2>&1 || fail "apt-get install failed, see $root.install.log"
installed_kb=$(du -skx "$root" | cut -f1)

# The agent reads its config as the takt user: the package must make that possible.
in_root runuser -u takt -- /var/lib/takt/firmware/current/bin/takt-agent version
in_root runuser -u takt -- /var/lib/takt/firmware/current/bin/takt-agent config check --config /etc/takt/agent.yaml ||
	fail "the packaged config does not pass config check as the takt user"

say "a real inspection: synth, train, agent on a video"
in_root runuser -u takt -- sh -eu -c '
	w=$(mktemp -d /tmp/check.XXXXXX)
	cd "$w"
	takt synth -good 8 -defective 4 -width 320 -height 240 -out train >synth.log
	# The same fixture (seed), new parts; the serial number and codes differ per part.
	takt synth -layout line -first 1001 -good 7 -defective 3 -width 320 -height 240 -video -out line >/dev/null
	ignore=$(sed -n "s/.*--ignore \([0-9,]*\).*/\1/p" synth.log | head -1)
	takt model train --data train --ignore "$ignore" --out model.onnx 2>&1 | tail -1
	cat >run.yaml <<EOF
station: install-check
data_dir: $w/data
camera: {id: top, kind: file, path: $w/line/line.avi, fps: 2}
model: {path: $w/model.onnx}
deadline: 30s
log: {level: warn}
EOF
	/var/lib/takt/firmware/current/bin/takt-agent --config run.yaml 2>&1 | grep -v -e cpuinfo -e "CPU vendor" || true
	takt store counts --data-dir data >counts
	# Frame n of the video is part n of the labels: one line "PASS"/"FAIL" each, in order.
	takt store list --data-dir data | sed -n "s/.*\"decision\":\"\([A-Z_]*\)\".*/\1/p" >decided
	sed -n "s/^[0-9]*,[^,]*,good,.*/PASS/p; s/^[0-9]*,[^,]*,defective,.*/FAIL/p" line/labels.csv >expected
	echo "$w" >/tmp/check.dir
' || fail "the inspection run failed"
w=$(cat "$root/tmp/check.dir")
counts=$(cat "$root$w/counts")
say "$counts; rendered: $(grep -c PASS "$root$w/expected") good, $(grep -c FAIL "$root$w/expected") defective"
cmp -s "$root$w/decided" "$root$w/expected" ||
	fail "verdicts (left) differ from the rendered parts (right): $(paste -d' ' "$root$w/decided" "$root$w/expected" | tr '\n' ';')"

say "ok: $arch, $(((installed_kb - base_kb) / 1024)) MB installed on a $((base_kb / 1024)) MB minbase root, $(($(date +%s) - start)) s"
