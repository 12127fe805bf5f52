#!/bin/sh
# make_base_image.sh - a local stand-in for the official debian:bookworm-slim
# image, for machines that cannot reach an image registry.
#
# usage: tests/deploy/make_base_image.sh OUT.tar [MIRROR]
#
# Runs `debootstrap --variant=minbase bookworm` from MIRROR (default
# http://deb.debian.org/debian) and slims the tree the way the official
# image is slimmed (debuerreotype), with the updates and security fixes
# applied as in the official image: no documentation, manual pages or
# translations (and a dpkg configuration that keeps them out of later
# installs), no package lists or cached .debs, apt sources for bookworm,
# bookworm-updates and bookworm-security. Writes the root file system as
# a tarball that `docker import` or `podman import` turns into an image.
# An existing OUT.tar is kept (delete it to rebuild). Needs root and the
# debootstrap package. Exit status 0, or 1 with a message.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 OUT.tar [MIRROR]" >&2
    exit 2
fi
out=$1
mirror=${2:-http://deb.debian.org/debian}

if [ -s "$out" ]; then
    echo "base image: using cached $out"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "base image: debootstrap needs root" >&2
    exit 1
fi
command -v debootstrap >/dev/null 2>&1 || {
    echo "base image: debootstrap is not installed (apt-get install debootstrap)" >&2
    exit 1
}

dir=$(mktemp -d "${TMPDIR:-/tmp}/dae-rootfs.XXXXXX")
trap 'rm -rf "$dir"' EXIT

echo "base image: debootstrap --variant=minbase bookworm from $mirror"
if ! debootstrap --variant=minbase bookworm "$dir/root" "$mirror" > "$dir/debootstrap.log" 2>&1; then
    tail -20 "$dir/debootstrap.log" >&2
    echo "base image: debootstrap failed (is $mirror reachable?)" >&2
    exit 1
fi

root=$dir/root
# What the official image's dpkg keeps out of every later install.
cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
cat > "$root/etc/apt/apt.conf.d/docker-no-languages" <<'CFG'
Acquire::Languages "none";
CFG
cat > "$root/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'CFG'
Apt::AutoRemove::SuggestsImportant "false";
CFG
rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<CFG
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
CFG

# The official image is rebuilt with the suite's updates and security
# fixes, and so is this one: on a base without them every image built on
# it keeps a second copy of each base library a fix replaced (apt
# upgrades it in the image's own layer when a package list names it).
cp /etc/resolv.conf "$root/etc/resolv.conf"
if ! { chroot "$root" apt-get update -q &&
       chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q; } > "$dir/upgrade.log" 2>&1; then
    tail -20 "$dir/upgrade.log" >&2
    echo "base image: apt-get upgrade in the new root failed" >&2
    exit 1
fi
echo "base image: $(grep -c '^Unpacking' "$dir/upgrade.log") packages upgraded from bookworm-updates and bookworm-security"

# Remove what the exclusions above would have kept out.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$root/usr/share/man/"* "$root/usr/share/groff/"* "$root/usr/share/info/"* \
       "$root/usr/share/lintian/"* "$root/usr/share/linda/"*
rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb \
       "$root/var/cache/ldconfig/"* "$root/var/log/"*.log "$root/var/log/apt/"* "$root/debootstrap"
: > "$root/etc/machine-id" 2>/dev/null || true
rm -f "$root/etc/hostname" "$root/etc/resolv.conf"

mkdir -p "$(dirname "$out")"
tar --numeric-owner --xattrs -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "base image: wrote $out ($(du -m "$out" | cut -f1) MB)"
