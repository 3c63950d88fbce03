#!/usr/bin/env bash
# Build the stack's images from the repository's Dockerfiles with the locked dependencies.
#
#   infra/docker/build.sh            # all images: code, instance, serve, s3, postgres, redis, haproxy
#   infra/docker/build.sh code serve # some of them
#
# BASE_IMAGE: FRAUDLOOP_BASE_IMAGE if set (e.g. python:3.11-slim where a registry is reachable);
# otherwise the local Debian bookworm imported by base-image.sh (built first when missing).
# Builds use BuildKit (cache mounts keep uv's downloads between builds) through Debian's docker
# CLI, and the host's network: the engine here runs without a bridge (--bridge=none).
# Tag: FRAUDLOOP_IMAGE_TAG (default latest). Prints the seconds each image took (two lanes run at
# once: see the end; FRAUDLOOP_BUILD_JOBS=1 builds one image at a time).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -x /usr/bin/docker ]; then DOCKER=${DOCKER:-/usr/bin/docker}; else DOCKER=${DOCKER:-docker}; fi
export DOCKER DOCKER_BUILDKIT=1
TAG=${FRAUDLOOP_IMAGE_TAG:-latest}
BASE=${FRAUDLOOP_BASE_IMAGE:-}
if [ -z "$BASE" ]; then
  BASE=fraudloop/debian:bookworm
  FRAUDLOOP_BASE_IMAGE=$BASE bash infra/docker/base-image.sh
fi
# A proxy that intercepts TLS (as on these machines) needs its CA inside the build: the host's
# bundle goes in as a BuildKit secret, used by pip/uv only, never written to a layer.
CA=${FRAUDLOOP_BUILD_CA_BUNDLE:-${SSL_CERT_FILE:-}}
if [ -z "$CA" ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  CA=/etc/ssl/certs/ca-certificates.crt
fi
SECRET=()
if [ -n "$CA" ] && [ -s "$CA" ]; then SECRET=(--secret "id=ca,src=$CA"); fi
PLAIN=(--progress=plain)
[ -n "${FRAUDLOOP_BUILD_VERBOSE:-}" ] || PLAIN=(--quiet)

build() {
  local name=$1
  shift
  local started
  started=$(date +%s.%N)
  if ! "$DOCKER" build --network host --build-arg "BASE_IMAGE=$BASE" "${SECRET[@]}" "${PLAIN[@]}" "$@" >/tmp/fraudloop-build-"$name".log 2>&1; then
    echo "building $name failed; log: /tmp/fraudloop-build-$name.log" >&2
    tail -n 40 /tmp/fraudloop-build-"$name".log >&2
    exit 1
  fi
  printf 'built %-9s in %6.1f s\n' "$name" "$(echo "$(date +%s.%N) - $started" | bc)"
}

image() {
  case "$1" in
    code)
      build code -f infra/docker/Dockerfile.dagster --target code \
        --build-arg "DAGSTER_CURRENT_IMAGE=fraudloop-dagster:$TAG" -t "fraudloop-dagster:$TAG" . ;;
    instance)
      build instance -f infra/docker/Dockerfile.dagster --target instance \
        -t "fraudloop-dagster-instance:$TAG" . ;;
    serve)
      build serve -f infra/docker/Dockerfile.serve -t "fraudloop-serve:$TAG" . ;;
    s3)
      build s3 -f infra/docker/Dockerfile.s3 -t "fraudloop-s3:$TAG" . ;;
    postgres)
      build postgres -f infra/docker/Dockerfile.postgres -t "fraudloop-postgres:$TAG" infra/docker ;;
    redis)
      build redis -f infra/docker/Dockerfile.redis -t "fraudloop-redis:$TAG" infra/docker ;;
    haproxy)
      build haproxy -f infra/docker/Dockerfile.haproxy -t "fraudloop-haproxy:$TAG" infra/docker ;;
    *)
      echo "unknown image $1 (code instance serve s3 postgres redis haproxy)" >&2
      exit 2 ;;
  esac
}

lane() { for target in "$@"; do image "$target"; done; }

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(code instance serve s3 postgres redis haproxy)
# Two lanes by default: the project's images (code, instance, serve share stages and spend their
# time installing and byte-compiling the locked venv: CPU) one after the other, and the service
# images (s3, postgres, redis, haproxy: mostly apt and pip downloads) beside them, so the
# downloads overlap the CPU work. FRAUDLOOP_BUILD_JOBS=1 builds one image at a time.
project=() services=()
for target in "${targets[@]}"; do
  case "$target" in
    code | instance | serve) project+=("$target") ;;
    *) services+=("$target") ;;
  esac
done
if [ "${FRAUDLOOP_BUILD_JOBS:-2}" = 1 ] || [ ${#project[@]} -eq 0 ] || [ ${#services[@]} -eq 0 ]; then
  lane "${targets[@]}"
  exit 0
fi
lane "${services[@]}" &
services_lane=$!
status=0
( lane "${project[@]}" ) || status=$?
wait "$services_lane" || status=$?
exit "$status"
