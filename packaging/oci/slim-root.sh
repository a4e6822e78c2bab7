#!/bin/sh
# slim-root.sh ROOT [MIRROR]: a Debian 12 root like docker.io/library/debian:12-slim, for
# building or checking the images where that image cannot be pulled: debootstrap
# --variant=minbase bookworm, then what the slim image's build (debuerreotype's slimify)
# does: dpkg excludes for docs, man pages, info and locales, kept for later installs, and
# those files removed; apt lists and caches emptied; the release, updates and security in
# deb822 sources with Signed-By, as the real image lists them. Used by build-local.sh and
# rootfs-check.sh.
set -eu

root=${1:?usage: slim-root.sh ROOT [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}

debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
	echo "slim-root: debootstrap failed, see $root.debootstrap.log" >&2
	exit 1
}
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CFG
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
for d in groff info linda lintian locale man; do
	rm -rf "${root:?}/usr/share/$d/"*
done
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
