#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock; start one when none does.
#
# On these machines the engine is Debian's dockerd (package docker.io), started as root with
# exactly `--bridge=none --iptables=false --ip-masq=false`: no docker0 bridge, no NAT rules.
# Every container of the stack uses host networking and its own 127.0.0.1 port.
#
# Prints `started <pid>` when it started the engine (the caller may stop it afterwards), or
# `running` when one was already there. Exit 1 if the engine cannot be started.
# Env: FRAUDLOOP_DOCKERD_LOG (default /var/log/fraudloop-dockerd.log),
#      FRAUDLOOP_DOCKERD_DATA_ROOT (optional --data-root, e.g. to measure a cold build).
set -euo pipefail

SOCK=/var/run/docker.sock
DOCKER=${DOCKER:-docker}

answers() { [ -S "$SOCK" ] && timeout 10 "$DOCKER" info >/dev/null 2>&1; }

if answers; then
  echo running
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd is not installed: apt-get install -y docker.io docker-compose debootstrap" \
    "(or run infra/system-deps.sh as root)" >&2
  exit 1
fi
if [ "$(id -u)" != "0" ]; then
  echo "no Docker engine answers on $SOCK, and starting one needs root" >&2
  exit 1
fi
log=${FRAUDLOOP_DOCKERD_LOG:-/var/log/fraudloop-dockerd.log}
args=(--bridge=none --iptables=false --ip-masq=false)
if [ -n "${FRAUDLOOP_DOCKERD_DATA_ROOT:-}" ]; then
  args+=(--data-root "$FRAUDLOOP_DOCKERD_DATA_ROOT")
fi
# A stale socket or pid file from an engine that died would stop the new one from starting.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid "$SOCK"
fi
setsid dockerd "${args[@]}" >>"$log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 1 120); do
  if answers; then
    echo "started $pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "dockerd exited; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "dockerd did not answer within 60 s; see $log" >&2
exit 1
