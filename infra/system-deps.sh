#!/usr/bin/env bash
# System packages the test suite drives for real: headless Chromium (UI tests), a PostgreSQL
# server (the production profile's instance storage), Prometheus (alert rules), redis-server (the
# scoring replicas' shared online store), HAProxy (the balancer in front of the replicas), and
# the Docker engine, docker-compose and
# debootstrap (the Docker stack's system test, `make stack`). Installed from Debian's packages
# when missing; needs root (CI runs as root). Idempotent and quiet when all is there.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
# Debian's engine (dockerd 20.10 + containerd + runc), not only a client: /usr/sbin/dockerd.
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v bc >/dev/null 2>&1 || missing+=(bc)
# Prometheus and promtool: the alert rules' unit tests and a real scrape of the service
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# Redis: the shared online feature store's tests start their own server on a free port
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# HAProxy: the load balancer in front of the scoring replicas (infra/haproxy/haproxy.cfg); the
# high-availability tests run it on free ports. Debian installs it in /usr/sbin.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
