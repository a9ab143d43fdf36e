#!/usr/bin/env bash
# The whole stormwatch stack on this machine, for `make up` / `make down`:
#   up      Kafka, topics, ingest, correlator, linker, agent (dry run), executor, gateway, the
#           notifier with a demo webhook receiver, then a demo storm
#   down    stop everything this script started (a Kafka that already ran before `up` is left running)
#   status  what runs
# With a running Docker engine it uses docker compose (docker-compose.yml); otherwise the local
# JVM broker (deploy/kafka/local-kafka.sh) and the workers as background processes with their logs
# and pid files in var/stack/. Every server listens on 127.0.0.1 only.
#
# The correlator and the linker share the topology deploy/topology.yaml (correlator.topology_file
# in the generated config): related label groups become one incident with its root cause named.
# The notifier (`stormwatch notify`, notify.notify_file deploy/notify.yaml) sends the incidents to
# the demo webhook receiver (`stormwatch demo-receiver`, 127.0.0.1:9102), which appends each
# notification to $STACK_DIR/notifications.jsonl; the demo summary shows one.
#
# Environment: STORMWATCH_STACK_DIR (config, logs, pids; default var/stack), STORMWATCH_KAFKA_PORT
# (broker port, default 9092; its controller takes the next port), STORMWATCH_STACK_KAFKA_DIR
# (Kafka's data directory; default that of `make kafka-up`, var/kafka/single),
# STORMWATCH_GATEWAY_PORT (default 9095), STORMWATCH_DEMO_RECEIVER_PORT (the demo webhook receiver,
# default 9102), NOTIFY_WEBHOOK_URL (where deploy/notify.yaml's webhook sends; default the demo
# receiver), STORMWATCH_DEMO_ARGS (extra `stormwatch demo` arguments), STORMWATCH_STACK_KEEP=1
# (keep Kafka data that no process touched for STORMWATCH_STACK_MAX_GAP_MIN minutes, default 30;
# otherwise a stopped stack's stale data is deleted at `up`, see reset_stale_data).
# A second stack next to a running one, e.g.:
#   STORMWATCH_STACK_DIR=var/stack2 STORMWATCH_STACK_KAFKA_DIR=var/kafka/stack2 \
#   STORMWATCH_KAFKA_PORT=19092 STORMWATCH_GATEWAY_PORT=19095 STORMWATCH_DEMO_RECEIVER_PORT=19102 \
#   bash deploy/local-stack.sh up
# (the workers' metrics ports 9094, 9096-9099 and 9101 stay the same: stop the other stack's
# workers first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STACK_DIR=${STORMWATCH_STACK_DIR:-var/stack}
PY=${VENV:-.venv}/bin/python
CONFIG=$STACK_DIR/stormwatch.yaml
RULES=deploy/demo/correlation_rules.yaml
TOPOLOGY=deploy/topology.yaml
WORKFLOWS=deploy/incident_workflow_config.yaml
KAFKA_PORT=${STORMWATCH_KAFKA_PORT:-9092}
KAFKA_DIR=${STORMWATCH_STACK_KAFKA_DIR:-}
# A broker this script did not start (already running at `up`, e.g. `make kafka-up`) is left
# running by `down`: this file says so.
KAFKA_KEPT=$STACK_DIR/kafka.kept
GATEWAY_PORT=${STORMWATCH_GATEWAY_PORT:-9095}
NOTIFY_FILE=deploy/notify.yaml
RECEIVER_PORT=${STORMWATCH_DEMO_RECEIVER_PORT:-9102}
NOTIFICATIONS=$STACK_DIR/notifications.jsonl
# deploy/notify.yaml reads its webhook URL from this variable (the notifier inherits it).
export NOTIFY_WEBHOOK_URL=${NOTIFY_WEBHOOK_URL:-http://127.0.0.1:$RECEIVER_PORT/alerts}
# name:metrics-port:subcommand and arguments
WORKERS=(
    "ingest:9096:ingest --rules $RULES --instance-id local-ingest"
    "correlator:9097:correlate --rules $RULES --instance-id local-correlator"
    "linker:9094:link --instance-id local-linker"
    "agent:9098:agent --workflows $WORKFLOWS --dry-run"
    "executor:9099:executor"
    "gateway:0:gateway --port $GATEWAY_PORT"
    "receiver:0:demo-receiver --port $RECEIVER_PORT --out $NOTIFICATIONS"
    "notifier:9101:notify --instance-id local-notifier"
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
  topology_file: $TOPOLOGY
agent:
  workflows_file: $WORKFLOWS
gateway:
  host: 127.0.0.1
  port: $GATEWAY_PORT
notify:
  notify_file: $NOTIFY_FILE
  external_url: http://127.0.0.1:$GATEWAY_PORT
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

kafka() {
    local command=$1
    shift
    if [[ -n $KAFKA_DIR ]]; then set -- "$@" --data-dir "$KAFKA_DIR"; fi
    bash deploy/kafka/local-kafka.sh "$command" --port "$KAFKA_PORT" "$@" </dev/null
}

# A demo stack brought up again after a long stop starts from empty topics. With a topology the
# correlator's event time walks through the whole gap, three quarters of link.delay per round trip
# through the linker, before it reaches the new storm (docs/operations.md, "Catching up over a long
# gap"): minutes for a gap of hours, longer than the demo waits. STORMWATCH_STACK_KEEP=1 keeps them.
reset_stale_data() {
    local dir=${KAFKA_DIR:-var/kafka/single} max_gap=${STORMWATCH_STACK_MAX_GAP_MIN:-30}
    [[ -f $dir/cluster.id ]] && [[ ${STORMWATCH_STACK_KEEP:-0} != 1 ]] || return 0
    kafka status >/dev/null 2>&1 && return 0 # a broker we did not stop: never touch its data
    if [[ -z $(find "$dir" -type f -newermt "-$max_gap minutes" -print -quit 2>/dev/null) ]]; then
        log "the stack's Kafka data in $dir is older than $max_gap minutes: starting from empty topics"
        log "(linking would first walk event time through the whole gap; STORMWATCH_STACK_KEEP=1 keeps the data)"
        rm -rf "$dir"
    fi
}

up_local() {
    write_config
    if [[ ! -f $STACK_DIR/ingest.pid ]]; then
        # A new stack: remember whether the broker was there before it.
        if kafka status >/dev/null 2>&1; then
            touch "$KAFKA_KEPT"
            log "Kafka on 127.0.0.1:$KAFKA_PORT already runs; \`down\` will leave it running"
        else
            rm -f "$KAFKA_KEPT"
        fi
    fi
    if [[ ! -f $STACK_DIR/ingest.pid ]] && [[ ! -f $KAFKA_KEPT ]]; then reset_stale_data; fi
    kafka start
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
    # the same demo timings, topology and dry-run agent as the local mode
    STORMWATCH_RULES_FILE=./deploy/demo/correlation_rules.yaml STORMWATCH_TOPOLOGY_FILE=./$TOPOLOGY \
        STORMWATCH_AGENT_DRY_RUN=true \
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
    if [[ -f $KAFKA_KEPT ]]; then
        log "Kafka on 127.0.0.1:$KAFKA_PORT ran before \`up\`: left running (make kafka-down stops it)"
        rm -f "$KAFKA_KEPT"
    else
        kafka stop || true
    fi
}

status_local() {
    local entry name pidfile
    for entry in "${WORKERS[@]}"; do
        name=${entry%%:*}
        pidfile=$STACK_DIR/$name.pid
        if alive "$pidfile"; then echo "$name: running (pid $(cat "$pidfile"))"; else echo "$name: stopped"; fi
    done
    kafka status || true
}

case ${1:-} in
    up)
        demo_args=()
        if docker_engine; then
            up_docker
        else
            up_local
            demo_args=(--notifications-file "$NOTIFICATIONS")
        fi
        log "running the demo storm through the gateway"
        # shellcheck disable=SC2086 # extra arguments, a word list by design
        sw demo --gateway "http://127.0.0.1:$GATEWAY_PORT" "${demo_args[@]}" ${STORMWATCH_DEMO_ARGS:-}
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
