#!/usr/bin/env bash
# Build the local base image `fraudloop/debian:bookworm` when no image registry is reachable:
# debootstrap a minimal Debian bookworm from the mirror apt already uses, import it into Docker.
# Idempotent: does nothing when the image exists. Needs root and debootstrap.
#
# Users with a registry do not need this: the Dockerfiles default to python:3.11-slim
# (BASE_IMAGE build argument). Bookworm's python3 is 3.11, the version the project pins.
set -euo pipefail

IMAGE=${FRAUDLOOP_BASE_IMAGE:-fraudloop/debian:bookworm}
DOCKER=${DOCKER:-docker}

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

# The mirror: the first `deb` URI for Debian (not -security) in apt's sources, one-line or deb822.
mirror=${FRAUDLOOP_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(
    {
      grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | sed -E 's/^\s*deb\s+(\[[^]]*\]\s+)?(\S+).*/\2/'
      grep -hsiE '^\s*URIs:' /etc/apt/sources.list.d/*.sources | sed -E 's/^\s*URIs:\s*//I' | tr ' ' '\n'
    } | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1
  )
fi
if [ -z "$mirror" ]; then
  echo "no Debian mirror found in /etc/apt/sources.list*; set FRAUDLOOP_DEBIAN_MIRROR" >&2
  exit 1
fi

rootfs=$(mktemp -d /var/tmp/fraudloop-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm from $mirror -> $IMAGE"
started=$(date +%s)
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  exit 1
}
rm -f "$rootfs.log"
# Same mirror inside the image, and no apt caches in it.
echo "deb $mirror bookworm main" >"$rootfs/etc/apt/sources.list"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "$IMAGE imported in $(( $(date +%s) - started )) s"
