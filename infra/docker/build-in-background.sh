#!/usr/bin/env bash
# Build the stack's images in the background while something else runs (`make test`: the
# virtualenv's sync and the suite), then wait for that build.
#
#   infra/docker/build-in-background.sh start   # returns at once
#   infra/docker/build-in-background.sh wait    # until that build ends; prints how it went
#
# Why: on a fresh machine the images' cold build (the Debian base by debootstrap, then the locked
# dependencies from PyPI into three images) takes ~3.5 min, most of it waiting on the network and
# the disk, and the stack's system test used to start with it after the suite. Started first,
# it is done by the time the suite ends, and the stack's test finds nothing left to build.
# A failed or missing background build is not an error here: the stack's test builds the images
# itself and reports what failed. Log: $FRAUDLOOP_BUILD_STATE/build.log.
set -uo pipefail
cd "$(dirname "$0")/../.."

STATE=${FRAUDLOOP_BUILD_STATE:-/tmp/fraudloop-images-build}
mkdir -p "$STATE"

case "${1:-}" in
  start)
    if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      echo "the stack's images are already being built (pid $(cat "$STATE/pid"))"
      exit 0
    fi
    rm -f "$STATE/rc" "$STATE/started" "$STATE/ended"
    date +%s >"$STATE/started"
    (
      rc=0
      bash infra/docker/ensure-dockerd.sh && bash infra/docker/build.sh || rc=$?
      date +%s >"$STATE/ended"
      echo "$rc" >"$STATE/rc"
    ) >"$STATE/build.log" 2>&1 </dev/null &
    echo $! >"$STATE/pid"
    echo "building the stack's images in the background (log: $STATE/build.log)"
    ;;
  wait)
    [ -f "$STATE/pid" ] || { echo "no background build of the stack's images was started"; exit 0; }
    while kill -0 "$(cat "$STATE/pid")" 2>/dev/null; do sleep 2; done
    rc=$(cat "$STATE/rc" 2>/dev/null || echo "unknown")
    took=$(( $(cat "$STATE/ended" 2>/dev/null || date +%s) - $(cat "$STATE/started") ))
    if [ "$rc" = "0" ]; then
      echo "the stack's images were built in the background in ${took} s"
    else
      echo "the background build of the stack's images failed (exit $rc, log $STATE/build.log);" \
        "the stack's test builds them again"
    fi
    rm -f "$STATE/pid"
    ;;
  *)
    echo "usage: $0 start|wait" >&2
    exit 2
    ;;
esac
