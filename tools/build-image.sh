#!/usr/bin/env bash
# Build the local Debian systemd base image (debootstrap -> docker import) unless it already exists.
# Usage: tools/build-image.sh [bookworm|trixie]
# No registry is reachable here, so the image is made from Debian's own mirror.
set -euo pipefail

release="${1:-bookworm}"
case "$release" in
  bookworm|trixie) ;;
  *) echo "build-image: unknown Debian release '$release' (use bookworm or trixie)" >&2; exit 2 ;;
esac

# Bump when the package set below changes, so existing machines rebuild.
image_version="v1"
image="${WEBSTACK_IMAGE_REPO:-webstack-debian}:${release}-${image_version}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

mirror="${WEBSTACK_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
  mirror="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | awk '{print $2}' | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

if ! command -v debootstrap >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

packages="python3,python3-apt,systemd,systemd-sysv,sudo,iproute2,procps,ca-certificates,gnupg,openssh-server,curl"
workdir="$(mktemp -d /var/tmp/webstack-rootfs-XXXXXX)"
trap 'rm -rf "$workdir"' EXIT

echo "build-image: debootstrap $release from $mirror" >&2
debootstrap --variant=minbase --include="$packages" "$release" "$workdir/rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 \
  || { tail -n 30 "$workdir/debootstrap.log" >&2; exit 1; }

root="$workdir/rootfs"
# A container has no console: do not wait for getty, and keep the journal small.
rm -f "$root"/etc/systemd/system/getty.target.wants/* "$root"/etc/machine-id
: >"$root/etc/machine-id"
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' >"$root/etc/systemd/journald.conf.d/webstack.conf"
# Host keys are generated per container at first boot, never baked into the image.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
  >"$root/etc/systemd/system/ssh.service.d/webstack-hostkeys.conf"
rm -rf "$root"/var/cache/apt/archives/*.deb

tar -C "$root" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' - "$image" >/dev/null
echo "$image"
