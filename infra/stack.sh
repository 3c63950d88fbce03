#!/usr/bin/env bash
# The local Docker stack: `make stack` / `make stack-down` (and the system test) go through here.
#
#   infra/stack.sh up       start the engine if needed, build the images, write the env file,
#                           `docker-compose up -d`, wait until every service is healthy
#   infra/stack.sh down     remove the stack: its containers, the run containers its daemon
#                           launched, its volumes (FRAUDLOOP_STACK_KEEP_DATA=1 keeps the volumes)
#   infra/stack.sh ps|runs|logs [service]|config|compose ARGS...
#
# Compose files: infra/docker-compose.yaml + infra/docker-compose.stack.yaml (host networking,
# moto S3 with a journal, Debian's PostgreSQL). The env file (default .stack/stack.env) keeps
# generated secrets between `up`s; ports, bucket and the extra settings come from the variables
# below, and every FRAUDLOOP_* setting from FRAUDLOOP_STACK_SETTINGS (an env file) is appended.
#
#   FRAUDLOOP_STACK_DIR        .stack                    env file, state
#   FRAUDLOOP_STACK_PROJECT    fraudloop-stack           compose project (containers, volumes)
#   FRAUDLOOP_STACK_PG_PORT    15432   FRAUDLOOP_STACK_S3_PORT      19000
#   FRAUDLOOP_STACK_GRPC_PORT  14000   FRAUDLOOP_STACK_WEB_PORT     13000
#   FRAUDLOOP_STACK_SCORING_PORT 18000 FRAUDLOOP_STACK_REDIS_PORT  16379
#   FRAUDLOOP_STACK_SCORING_2_PORT 18001 (second replica)
#   FRAUDLOOP_STACK_BALANCER_PORT 18080 FRAUDLOOP_STACK_BALANCER_STATS_PORT 18404
#   FRAUDLOOP_STACK_SETTINGS   (none)                    extra FRAUDLOOP_* settings, env-file format
#   FRAUDLOOP_STACK_MAX_RUNS   cores + 1                 run containers at a time (the daemon's
#                              and webserver's dagster.yaml: infra/production/dagster.yaml with
#                              this max_concurrent_runs; its 8 is for a 16 GB multi-core host)
#   FRAUDLOOP_STACK_NO_BUILD   unset                     1: use the images as they are
#   FRAUDLOOP_AUTOMATION       on                        off: leave sensors/schedules stopped
#   FRAUDLOOP_IMAGE_TAG        latest
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DIR=${FRAUDLOOP_STACK_DIR:-$ROOT/.stack}
PROJECT=${FRAUDLOOP_STACK_PROJECT:-fraudloop-stack}
ENV_FILE=$DIR/stack.env
TAG=${FRAUDLOOP_IMAGE_TAG:-latest}
if [ -x /usr/bin/docker ]; then DOCKER=${DOCKER:-/usr/bin/docker}; else DOCKER=${DOCKER:-docker}; fi
export DOCKER
COMPOSE=(docker-compose -p "$PROJECT" --env-file "$ENV_FILE"
  -f "$ROOT/infra/docker-compose.yaml" -f "$ROOT/infra/docker-compose.stack.yaml")

secret() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

# infra/production/dagster.yaml with max_concurrent_runs set to $1: the production file sizes
# the run queue for a multi-core host; on this 2-core machine its 8 run containers at a time
# drove the load average to ~20 and a features run took minutes (the system test never closed
# the loop). Everything else is the production file's.
instance_yaml() {
  local runs=$1 out
  [[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "max concurrent runs must be a positive integer, got '$runs'" >&2; return 1; }
  out=$(sed -E "s/^(    max_concurrent_runs:) [0-9]+$/\1 $runs/" "$ROOT/infra/production/dagster.yaml")
  grep -qx "    max_concurrent_runs: $runs" <<<"$out" \
    || { echo "infra/production/dagster.yaml has no 'max_concurrent_runs:' line to size" >&2; return 1; }
  printf '%s\n' "$out"
}

write_env() {
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  local secrets=$DIR/secrets.env
  if [ ! -s "$secrets" ]; then
    umask 077
    {
      echo "DAGSTER_PG_PASSWORD=$(secret)"
      echo "FRAUDLOOP_S3_ACCESS_KEY=fraudloop"
      echo "FRAUDLOOP_S3_SECRET_KEY=$(secret)"
      echo "FRAUDLOOP_ADMIN_TOKEN=$(secret)"
    } >"$secrets"
  fi
  # added after the first stacks were made: give an older secrets file its own
  grep -q '^FRAUDLOOP_REDIS_PASSWORD=' "$secrets" || echo "FRAUDLOOP_REDIS_PASSWORD=$(secret)" >>"$secrets"
  local s3=${FRAUDLOOP_STACK_S3_PORT:-19000} grpc=${FRAUDLOOP_STACK_GRPC_PORT:-14000}
  local instance
  instance="$(cd "$DIR" && pwd)/dagster.yaml"
  instance_yaml "${FRAUDLOOP_STACK_MAX_RUNS:-$(($(nproc) + 1))}" >"$instance"
  chmod 644 "$instance"  # read by the containers' user; it holds no secret (env references)
  umask 077
  {
    echo "# written by infra/stack.sh; secrets from $secrets"
    cat "$secrets"
    echo "FRAUDLOOP_IMAGE_TAG=$TAG"
    echo "DAGSTER_PG_USERNAME=dagster"
    echo "DAGSTER_PG_DB=dagster"
    echo "DAGSTER_PG_HOST=127.0.0.1"
    echo "DAGSTER_PG_PORT=${FRAUDLOOP_STACK_PG_PORT:-15432}"
    echo "DAGSTER_DOCKER_NETWORK=host"
    echo "DAGSTER_BIND_HOST=127.0.0.1"
    echo "DAGSTER_GRPC_HOST=127.0.0.1"
    echo "DAGSTER_GRPC_PORT=$grpc"
    echo "DAGSTER_WEBSERVER_PORT=${FRAUDLOOP_STACK_WEB_PORT:-13000}"
    echo "FRAUDLOOP_SCORING_PORT=${FRAUDLOOP_STACK_SCORING_PORT:-18000}"
    echo "FRAUDLOOP_SCORING_2_PORT=${FRAUDLOOP_STACK_SCORING_2_PORT:-18001}"
    echo "FRAUDLOOP_SCORING_HOST=127.0.0.1"
    echo "FRAUDLOOP_SCORING_2_HOST=127.0.0.1"
    echo "FRAUDLOOP_BALANCER_BIND=127.0.0.1"
    echo "FRAUDLOOP_BALANCER_PORT=${FRAUDLOOP_STACK_BALANCER_PORT:-18080}"
    echo "FRAUDLOOP_BALANCER_STATS_PORT=${FRAUDLOOP_STACK_BALANCER_STATS_PORT:-18404}"
    echo "FRAUDLOOP_REDIS_PORT=${FRAUDLOOP_STACK_REDIS_PORT:-16379}"
    echo "FRAUDLOOP_REDIS_HOST=127.0.0.1"
    echo "FRAUDLOOP_STACK_S3_PORT=$s3"
    echo "FRAUDLOOP_S3_BUCKET=${FRAUDLOOP_S3_BUCKET:-fraudloop}"
    echo "FRAUDLOOP_S3_ENDPOINT_URL=http://127.0.0.1:$s3"
    echo "FRAUDLOOP_AUTOMATION=${FRAUDLOOP_AUTOMATION:-on}"
    echo "FRAUDLOOP_STACK_INSTANCE_YAML=$instance"
    echo "DOCKER_GID=$(stat -c %g /var/run/docker.sock)"
    if [ -n "${FRAUDLOOP_STACK_SETTINGS:-}" ]; then
      echo "# settings from $FRAUDLOOP_STACK_SETTINGS"
      grep -E '^(FRAUDLOOP|AWS)_[A-Z0-9_]+=' "$FRAUDLOOP_STACK_SETTINGS"
    fi
  } >"$ENV_FILE"
}

value() { grep -E "^$1=" "$ENV_FILE" | tail -n 1 | cut -d= -f2-; }

wait_healthy() {
  local deadline=$((SECONDS + ${1:-300})) unhealthy
  while :; do
    unhealthy=()
    for id in $("${COMPOSE[@]}" ps -q); do
      local state
      state=$("$DOCKER" inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}' "$id")
      case "$state" in
        *" running healthy "* | *" running - "* | *" exited - 0") ;;
        *" exited "*)
          echo "a stack container stopped: $state" >&2
          return 1 ;;
        *) unhealthy+=("$state") ;;
      esac
    done
    [ ${#unhealthy[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      echo "not healthy in time: ${unhealthy[*]}" >&2
      return 1
    fi
    sleep 1
  done
}

run_containers() {
  # The containers this stack's daemon launched (one per run): labelled by the DockerRunLauncher,
  # and given this stack's environment (its S3 endpoint and Postgres port are unique per stack).
  # Not by image: a rebuilt tag no longer matches the containers of the image it replaced.
  local endpoint port id
  endpoint=$(value FRAUDLOOP_S3_ENDPOINT_URL)
  port=$(value DAGSTER_PG_PORT)
  for id in $("$DOCKER" ps -aq --filter label=dagster/run_id); do
    if "$DOCKER" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id" 2>/dev/null \
      | grep -qx "FRAUDLOOP_S3_ENDPOINT_URL=$endpoint" \
      && "$DOCKER" inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id" \
      | grep -qx "DAGSTER_PG_PORT=$port"; then
      echo "$id"
    fi
  done
}

cmd=${1:-up}
[ $# -gt 0 ] && shift
case "$cmd" in
  up)
    bash "$ROOT/infra/docker/ensure-dockerd.sh" >/dev/null
    if [ -z "${FRAUDLOOP_STACK_NO_BUILD:-}" ]; then
      FRAUDLOOP_IMAGE_TAG=$TAG bash "$ROOT/infra/docker/build.sh"
    fi
    write_env
    started=$SECONDS
    "${COMPOSE[@]}" up -d --no-build >"$DIR/up.log" 2>&1 || { cat "$DIR/up.log" >&2; exit 1; }
    wait_healthy 300
    echo "stack healthy in $((SECONDS - started)) s (project $PROJECT, env $ENV_FILE)"
    echo "  Dagster UI      http://127.0.0.1:$(value DAGSTER_WEBSERVER_PORT)"
    echo "  scoring service http://127.0.0.1:$(value FRAUDLOOP_BALANCER_PORT)  (HAProxy over two replicas; /readyz once a model is released)"
    echo "  S3 (moto)       $(value FRAUDLOOP_S3_ENDPOINT_URL)  bucket $(value FRAUDLOOP_S3_BUCKET)"
    echo "  PostgreSQL      127.0.0.1:$(value DAGSTER_PG_PORT)  db $(value DAGSTER_PG_DB)"
    echo "  feed data:      infra/stack.sh compose exec code-location fraudloop simulate --days 3"
    ;;
  down)
    if [ ! -f "$ENV_FILE" ]; then
      echo "no stack env file at $ENV_FILE: nothing to remove"
      exit 0
    fi
    if ! "$DOCKER" info >/dev/null 2>&1; then
      echo "no Docker engine answers: nothing to remove"
      exit 0
    fi
    volumes=(-v)
    [ -n "${FRAUDLOOP_STACK_KEEP_DATA:-}" ] && volumes=()
    "${COMPOSE[@]}" down "${volumes[@]}" --remove-orphans --timeout 20
    runs=$(run_containers)
    if [ -n "$runs" ]; then
      # shellcheck disable=SC2086
      "$DOCKER" rm -f $runs >/dev/null
      echo "removed $(echo "$runs" | wc -w) run container(s)"
    fi
    ;;
  ps) "${COMPOSE[@]}" ps ;;
  runs) run_containers ;;
  logs) "${COMPOSE[@]}" logs --no-color --tail 200 "$@" ;;
  config) "${COMPOSE[@]}" config ;;
  compose) "${COMPOSE[@]}" "$@" ;;
  env) write_env && echo "$ENV_FILE" ;;
  instance-yaml) instance_yaml "${1:?usage: infra/stack.sh instance-yaml MAX_CONCURRENT_RUNS}" ;;
  *)
    echo "usage: infra/stack.sh up|down|ps|logs [service]|config|compose ARGS..." >&2
    exit 2 ;;
esac
