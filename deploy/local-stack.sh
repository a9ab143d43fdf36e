#!/usr/bin/env bash
# The whole stormwatch stack on this machine, for `make up` / `make down`:
#   up      Kafka, topics, ingest, correlator, agent (dry run), executor, gateway, then a demo storm
#   down    stop everything this script started
#   status  what runs
# With a running Docker engine it uses docker compose (docker-compose.yml); otherwise the local
# JVM broker (deploy/kafka/local-kafka.sh) and the workers as background processes with their logs
# and pid files in var/stack/. Every server listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STACK_DIR=${STORMWATCH_STACK_DIR:-var/stack}
PY=${VENV:-.venv}/bin/python
CONFIG=$STACK_DIR/stormwatch.yaml
RULES=deploy/demo/correlation_rules.yaml
WORKFLOWS=deploy/incident_workflow_config.yaml
KAFKA_PORT=${STORMWATCH_KAFKA_PORT:-9092}
GATEWAY_PORT=${STORMWATCH_GATEWAY_PORT:-9095}
# name:metrics-port:subcommand and arguments
WORKERS=(
    "ingest:9096:ingest --rules $RULES --instance-id local-ingest"
    "correlator:9097:correlate --rules $RULES --instance-id local-correlator"
    "agent:9098:agent --workflows $WORKFLOWS --dry-run"
    "executor:9099:executor"
    "gateway:0:gateway --port $GATEWAY_PORT"
)

log() { echo "[stack] $*" >&2; }
sw() { "$PY" -m stormwatch.cli --config "$CONFIG" "$@"; }

docker_engine() {
    command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1
}

write_config() {
    mkdir -p "$STACK_DIR"
    cat >"$CONFIG" <<YAML
# written by deploy/local-stack.sh
kafka:
  bootstrap_servers: 127.0.0.1:$KAFKA_PORT
correlator:
  rules_file: $RULES
agent:
  workflows_file: $WORKFLOWS
gateway:
  host: 127.0.0.1
  port: $GATEWAY_PORT
YAML
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_worker() {
    local name=$1 port=$2 args=$3
    local pidfile=$STACK_DIR/$name.pid
    if alive "$pidfile"; then
        log "$name already running (pid $(cat "$pidfile"))"
        return
    fi
    # shellcheck disable=SC2086 # args is a word list by design
    STORMWATCH_METRICS_PORT=$port STORMWATCH_LOG_LEVEL=INFO \
        nohup "$PY" -m stormwatch.cli --config "$CONFIG" $args >"$STACK_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local metrics=""
    if [[ $port != 0 ]]; then metrics=", metrics on 127.0.0.1:$port"; fi
    log "started $name (pid $!, log $STACK_DIR/$name.log$metrics)"
}

check_workers() {
    local entry name pidfile
    for entry in "${WORKERS[@]}"; do
        name=${entry%%:*}
        pidfile=$STACK_DIR/$name.pid
        if ! alive "$pidfile"; then
            log "$name is not running; last lines of $STACK_DIR/$name.log:"
            tail -n 20 "$STACK_DIR/$name.log" >&2 || true
            return 1
        fi
    done
}

up_local() {
    write_config
    bash deploy/kafka/local-kafka.sh start --port "$KAFKA_PORT" </dev/null
    sw topics create
    local entry rest
    for entry in "${WORKERS[@]}"; do
        rest=${entry#*:}
        start_worker "${entry%%:*}" "${rest%%:*}" "${rest#*:}"
    done
    sleep 3
    check_workers
}

up_docker() {
    write_config
    log "Docker engine found: starting the stack with docker compose"
    # the same demo timings and dry-run agent as the local mode
    STORMWATCH_RULES_FILE=./deploy/demo/correlation_rules.yaml STORMWATCH_AGENT_DRY_RUN=true \
        docker compose up -d --build
}

down_local() {
    local entry name pidfile pid
    for entry in "${WORKERS[@]}"; do
        name=${entry%%:*}
        pidfile=$STACK_DIR/$name.pid
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
            log "stopped $name"
        fi
        rm -f "$pidfile"
    done
    bash deploy/kafka/local-kafka.sh stop --port "$KAFKA_PORT" </dev/null || true
}

status_local() {
    local entry name pidfile
    for entry in "${WORKERS[@]}"; do
        name=${entry%%:*}
        pidfile=$STACK_DIR/$name.pid
        if alive "$pidfile"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: stopped"; fi
    done
    bash deploy/kafka/local-kafka.sh status --port "$KAFKA_PORT" </dev/null || true
}

case ${1:-} in
    up)
        if docker_engine; then up_docker; else up_local; fi
        log "running the demo storm through the gateway"
        sw demo --gateway "http://127.0.0.1:$GATEWAY_PORT"
        ;;
    down)
        if docker_engine && [[ ! -f $STACK_DIR/ingest.pid ]]; then docker compose down; else down_local; fi
        ;;
    status)
        status_local
        ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
