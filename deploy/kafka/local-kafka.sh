#!/usr/bin/env bash
# Run Apache Kafka in KRaft mode on this machine, straight from the jars on Maven Central.
#
# No Docker and no tarball: `mvn dependency:copy-dependencies` fetches the broker's classpath
# (deploy/kafka/pom.xml) once into a cache, and each node runs as `java -cp "libs/*" kafka.Kafka`.
# Used by `make kafka-up`, the test fixtures (tests/conftest.py) and CI (.ci/run).
# docs/kafka.md explains the layout; `local-kafka.sh --help` lists the options.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
readonly SCRIPT_DIR REPO_ROOT
readonly POM="$SCRIPT_DIR/pom.xml"
readonly PROG="local-kafka"

usage() {
    cat <<EOF
Usage: deploy/kafka/local-kafka.sh COMMAND [--nodes 1|3] [--port PORT] [--data-dir DIR] [--sasl] [--tls]

Commands:
  start    start the node(s) unless already running, wait until the broker answers metadata
           requests, print KAFKA_BOOTSTRAP_SERVERS=... on stdout
  stop     stop the node(s): SIGTERM, wait for a clean shutdown, SIGKILL after a timeout
  status   say what runs; exit 0 when every node runs, 3 when not
  fetch    only install the prerequisites (Java 17+, Maven) and fetch the broker jars

Commands for one node N of a started instance (fault tests, docs/reliability.md):
  stop-node N   SIGTERM node N (a clean shutdown), SIGKILL after the stop timeout
  kill-node N   SIGKILL node N at once (a crash)
  start-node N  start node N again and wait until it serves as a broker

Options:
  --nodes N      1 (default): one broker on PORT, its controller on PORT+1
                 3: three combined broker+controller nodes, brokers on PORT..PORT+2,
                 controllers on PORT+100..PORT+102
  --port PORT    broker port (base port for 3 nodes); default 9092 (\$STORMWATCH_KAFKA_PORT),
                 29092 for 3 nodes (\$STORMWATCH_KAFKA_CLUSTER_PORT)
  --data-dir DIR data, logs and PID files; default var/kafka/single, var/kafka/cluster for 3 nodes
  --sasl         (start, on a new data directory) clients must authenticate with SASL/SCRAM
                 (SCRAM-SHA-256 or -512) on the broker port (SASL_PLAINTEXT, loopback only).
                 User 'stormwatch', its password generated into DIR/sasl/stormwatch.password;
                 an instance formatted this way always starts with SASL (docs/security.md)
  --tls          (start) the broker port speaks TLS and requires a client certificate (mutual
                 TLS; SASL_SSL together with --sasl). A throwaway CA, a broker certificate for
                 IP 127.0.0.1 and a client certificate are generated once into DIR/tls
                 (ca.pem, client.pem, client.key: PEM, key unencrypted); start and status print
                 them as STORMWATCH_KAFKA__* lines. An instance started this way keeps TLS
                 on every later start (docs/security.md)

Environment:
  STORMWATCH_KAFKA_VERSION        Kafka release (default: kafka.version in deploy/kafka/pom.xml)
  STORMWATCH_KAFKA_CACHE          jar cache (default: .cache/kafka; jars in VERSION/libs)
  STORMWATCH_KAFKA_START_TIMEOUT  seconds to wait for the broker to answer (default 60)
  STORMWATCH_KAFKA_STOP_TIMEOUT   seconds to wait for a clean shutdown before SIGKILL (default 30)
  STORMWATCH_KAFKA_HEAP_OPTS      JVM heap options per node (default "-Xms256m -Xmx512m")
  STORMWATCH_KAFKA_CHECK=java     check readiness with Kafka's Java admin tool even when the
                                  project's .venv (confluent-kafka) exists
  STORMWATCH_KAFKA_NETNS_PREFIX   run node N in network namespace PREFIXN (e.g. swt-b: node 2 under
                                  'ip netns exec swt-b2'). deploy/faults/netswitch.py must already
                                  run, with those namespaces as hosts and every node's broker and
                                  controller port as their servers; readiness is checked from here,
                                  through the switch (deploy/faults/README.md). Needs root
EOF
}

log() { echo "$PROG: $*" >&2; }
die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

# --- arguments ----------------------------------------------------------------------------

COMMAND=${1:-}
[[ -n $COMMAND ]] || {
    usage >&2
    exit 2
}
shift
NODE_ARG=""
case $COMMAND in
start | stop | status | fetch) ;;
stop-node | kill-node | start-node)
    NODE_ARG=${1:-}
    [[ $NODE_ARG =~ ^[0-9]+$ ]] || die "$COMMAND needs a node number, e.g. '$COMMAND 2'"
    shift
    ;;
-h | --help | help)
    usage
    exit 0
    ;;
*)
    usage >&2
    die "unknown command '$COMMAND'"
    ;;
esac

NODES=1
PORT=""
DATA_DIR=""
SASL=0
TLS=0
while [[ $# -gt 0 ]]; do
    case $1 in
    --nodes) NODES=${2:?--nodes needs a value} && shift 2 ;;
    --nodes=*) NODES=${1#*=} && shift ;;
    --port) PORT=${2:?--port needs a value} && shift 2 ;;
    --port=*) PORT=${1#*=} && shift ;;
    --data-dir) DATA_DIR=${2:?--data-dir needs a value} && shift 2 ;;
    --data-dir=*) DATA_DIR=${1#*=} && shift ;;
    --sasl) SASL=1 && shift ;;
    --tls) TLS=1 && shift ;;
    -h | --help) usage && exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ $NODES == 1 || $NODES == 3 ]] || die "--nodes must be 1 or 3, not '$NODES'"
if [[ -n $NODE_ARG ]] && ((NODE_ARG < 1 || NODE_ARG > NODES)); then
    die "node $NODE_ARG does not exist (--nodes $NODES: nodes 1..$NODES)"
fi
if [[ $NODES == 1 ]]; then
    PORT=${PORT:-${STORMWATCH_KAFKA_PORT:-9092}}
    DATA_DIR=${DATA_DIR:-$REPO_ROOT/var/kafka/single}
else
    PORT=${PORT:-${STORMWATCH_KAFKA_CLUSTER_PORT:-29092}}
    DATA_DIR=${DATA_DIR:-$REPO_ROOT/var/kafka/cluster}
fi
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1024 || PORT > 65000)); then
    die "--port must be a number in 1024..65000, not '$PORT'"
fi
mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)

# SASL/SCRAM (--sasl): credentials live in DATA_DIR/sasl; an instance formatted with them keeps
# SASL on every later start (its brokers have no plaintext client listener any more).
readonly SASL_DIR=$DATA_DIR/sasl SASL_USER=stormwatch SASL_ADMIN=admin
SASL_REQUESTED=$SASL
[[ -f $SASL_DIR/enabled ]] && SASL=1

# Mutual TLS (--tls): the CA, broker and client certificates live in DATA_DIR/tls; an instance
# started with them keeps TLS on every later start, like SASL.
readonly TLS_DIR=$DATA_DIR/tls
TLS_REQUESTED=$TLS
[[ -f $TLS_DIR/enabled ]] && TLS=1

KAFKA_VERSION=${STORMWATCH_KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1)}
[[ -n $KAFKA_VERSION ]] || die "cannot read kafka.version from $POM"
CACHE_ROOT=${STORMWATCH_KAFKA_CACHE:-$REPO_ROOT/.cache/kafka}
LIBS_DIR=$CACHE_ROOT/$KAFKA_VERSION/libs
START_TIMEOUT=${STORMWATCH_KAFKA_START_TIMEOUT:-60}
STOP_TIMEOUT=${STORMWATCH_KAFKA_STOP_TIMEOUT:-30}
read -r -a HEAP_OPTS <<<"${STORMWATCH_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
NETNS_PREFIX=${STORMWATCH_KAFKA_NETNS_PREFIX:-}

# --- layout -------------------------------------------------------------------------------
# One node: everything in DATA_DIR. Three nodes: DATA_DIR/node-N each, cluster.id shared.

node_dir() { if [[ $NODES == 1 ]]; then echo "$DATA_DIR"; else echo "$DATA_DIR/node-$1"; fi; }
broker_port() { if [[ $NODES == 1 ]]; then echo "$PORT"; else echo $((PORT + $1 - 1)); fi; }
controller_port() { if [[ $NODES == 1 ]]; then echo $((PORT + 1)); else echo $((PORT + 100 + $1 - 1)); fi; }

bootstrap_servers() {
    local i out=""
    for ((i = 1; i <= NODES; i++)); do out+="${out:+,}127.0.0.1:$(broker_port "$i")"; done
    echo "$out"
}

quorum_voters() {
    local i out=""
    for ((i = 1; i <= NODES; i++)); do out+="${out:+,}$i@127.0.0.1:$(controller_port "$i")"; done
    echo "$out"
}

# --- prerequisites --------------------------------------------------------------------------

JAVA=""

java_major() {
    local version
    version=$("$1" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    if [[ $version == 1.* ]]; then version=${version#1.}; fi
    echo "${version%%[.+-]*}"
}

find_java() {
    local candidate major
    local candidates=()
    [[ -n ${JAVA_HOME:-} ]] && candidates+=("$JAVA_HOME/bin/java")
    command -v java >/dev/null 2>&1 && candidates+=("$(command -v java)")
    candidates+=(/usr/lib/jvm/*/bin/java)
    for candidate in "${candidates[@]}"; do
        [[ -x $candidate ]] || continue
        major=$(java_major "$candidate" || true)
        if [[ $major =~ ^[0-9]+$ ]] && ((major >= 17)); then
            JAVA=$candidate
            return 0
        fi
    done
    return 1
}

apt_install() {
    [[ $(id -u) == 0 ]] || die "missing $*; install them (Debian/Ubuntu: sudo apt-get install $*) and retry"
    command -v apt-get >/dev/null 2>&1 || die "missing $*, and this machine has no apt-get; install them and retry"
    log "installing $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

ensure_java() {
    find_java && return 0
    apt_install openjdk-17-jre-headless
    find_java || die "Java 17 or newer not found even after installing openjdk-17-jre-headless"
}

ensure_maven() {
    command -v mvn >/dev/null 2>&1 && return 0
    apt_install maven
    command -v mvn >/dev/null 2>&1 || die "mvn not found even after installing maven"
}

# Fetch the broker's runtime classpath into LIBS_DIR once (a .complete marker guards half copies).
fetch_libs() {
    [[ -f $LIBS_DIR/.complete ]] && return 0
    mkdir -p "$CACHE_ROOT/$KAFKA_VERSION"
    exec 8>"$CACHE_ROOT/$KAFKA_VERSION/.lock"
    flock 8
    if [[ ! -f $LIBS_DIR/.complete ]]; then
        ensure_maven
        local tmp="$LIBS_DIR.tmp.$$" started=$SECONDS
        rm -rf "$tmp"
        log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR"
        local mvn_log="$CACHE_ROOT/$KAFKA_VERSION/mvn.log"
        if ! mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies -Dkafka.version="$KAFKA_VERSION" \
            -DoutputDirectory="$tmp" -DincludeScope=runtime </dev/null >"$mvn_log" 2>&1; then
            rm -rf "$tmp"
            grep -E 'ERROR|Could not' "$mvn_log" | head -n 20 >&2 || tail -n 20 "$mvn_log" >&2
            die "mvn could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (is Maven Central reachable? full log: $mvn_log)"
        fi
        ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn ran but fetched no kafka_2.13 jar into $tmp"
        rm -rf "$LIBS_DIR"
        mv "$tmp" "$LIBS_DIR"
        touch "$LIBS_DIR/.complete"
        log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $((SECONDS - started))s"
    fi
    flock -u 8
}

# --- processes ------------------------------------------------------------------------------

# The PID of node $1 when it runs: the PID file names a live process started on this node's config.
node_pid() {
    local dir pid
    dir=$(node_dir "$1")
    [[ -f $dir/kafka.pid ]] || return 1
    pid=$(<"$dir/kafka.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/server.properties" || return 1
    echo "$pid"
}

port_in_use() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# STORMWATCH_KAFKA_NETNS_PREFIX: node $1 runs in its own network namespace. Its ports in this
# namespace are the switch's, so whether a port of node $1 is taken is asked inside its namespace.
node_netns() {
    local ns=$NETNS_PREFIX$1
    [[ -e /run/netns/$ns ]] || die "network namespace $ns (node $1, STORMWATCH_KAFKA_NETNS_PREFIX=$NETNS_PREFIX) does not exist; start the switch first: deploy/faults/netswitch.py up --prefix ... (deploy/faults/README.md)"
    echo "$ns"
}
node_port_in_use() {
    if [[ -z $NETNS_PREFIX ]]; then
        port_in_use "$2"
    else
        local ns
        ns=$(node_netns "$1") || exit 1
        ip netns exec "$ns" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null
    fi
}

# Ports inside the kernel's ephemeral range can be taken at any moment by an outgoing connection
# (a node failed to bind its controller port that way), so say so before it bites.
warn_ephemeral() {
    local low high
    read -r low high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || return 0
    if (($1 >= low && $1 <= high)); then
        log "warning: port $1 is in the ephemeral port range $low-$high; the start can fail at random, pick a port below $low"
    fi
}

render() {
    # render TEMPLATE OUTPUT KEY=VALUE...: replace @KEY@ placeholders.
    local template=$1 output=$2 pair content
    shift 2
    content=$(<"$template")
    for pair in "$@"; do content=${content//@${pair%%=*}@/${pair#*=}}; done
    printf '%s\n' "$content" >"$output"
}

write_config() {
    local i=$1 dir internal_rf internal_isr
    dir=$(node_dir "$i")
    internal_rf=$((NODES < 3 ? NODES : 3))
    internal_isr=$((internal_rf < 2 ? internal_rf : 2))
    mkdir -p "$dir/data" "$dir/logs"
    render "$SCRIPT_DIR/server.properties.template" "$dir/server.properties" \
        "NODE_ID=$i" "QUORUM_VOTERS=$(quorum_voters)" \
        "BROKER_PORT=$(broker_port "$i")" "CONTROLLER_PORT=$(controller_port "$i")" \
        "LOG_DIRS=$dir/data" "DEFAULT_RF=$internal_rf" \
        "INTERNAL_RF=$internal_rf" "INTERNAL_MIN_ISR=$internal_isr"
    render "$SCRIPT_DIR/log4j2.properties.template" "$dir/log4j2.properties" "LOG_FILE=$dir/logs/server.log"
    if [[ $SASL == 1 || $TLS == 1 ]]; then append_security_config "$i"; fi
    return 0
}

# The protocol of the broker port (clients and the other brokers): --sasl and --tls decide.
client_protocol() {
    case $SASL$TLS in
    10) echo SASL_PLAINTEXT ;;
    01) echo SSL ;;
    11) echo SASL_SSL ;;
    *) echo PLAINTEXT ;;
    esac
}

# The broker port speaks SASL_PLAINTEXT, SSL or SASL_SSL, and brokers talk to each other on it:
# as the admin user with SASL, with the broker certificate (it is also a client certificate) with TLS.
append_security_config() {
    local i=$1 dir protocol listener jaas mech
    dir=$(node_dir "$i")
    protocol=$(client_protocol)
    listener=$(tr '[:upper:]' '[:lower:]' <<<"$protocol")
    {
        echo ""
        echo "# --- $protocol, appended by local-kafka.sh (later keys override the ones above)"
        echo "listeners=$protocol://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")"
        echo "advertised.listeners=$protocol://127.0.0.1:$(broker_port "$i")"
        echo "listener.security.protocol.map=$protocol:$protocol,CONTROLLER:PLAINTEXT"
        echo "inter.broker.listener.name=$protocol"
        if [[ $SASL == 1 ]]; then
            jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$SASL_ADMIN\" password=\"$(sasl_password "$SASL_ADMIN")\";"
            echo "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512"
            echo "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512"
            for mech in scram-sha-256 scram-sha-512; do
                echo "listener.name.$listener.$mech.sasl.jaas.config=$jaas"
            done
        fi
        if [[ $TLS == 1 ]]; then
            echo "ssl.keystore.type=PEM"
            echo "ssl.keystore.location=$TLS_DIR/broker.keystore.pem"
            echo "ssl.truststore.type=PEM"
            echo "ssl.truststore.location=$TLS_DIR/ca.pem"
            echo "ssl.endpoint.identification.algorithm=https"
            # Listener-prefixed: a SASL_SSL listener ignores the broker-wide ssl.client.auth.
            echo "listener.name.$listener.ssl.client.auth=required"
        fi
    } >>"$dir/server.properties"
    chmod 600 "$dir/server.properties"
}

# --- SASL/SCRAM (--sasl) -------------------------------------------------------------------

sasl_password() { cat "$SASL_DIR/$1.password"; }

# Create the credentials once, before the storage is formatted with them.
sasl_prepare() {
    local name formatted=0 i
    for ((i = 1; i <= NODES; i++)); do [[ -f $(node_dir "$i")/data/meta.properties ]] && formatted=1; done
    if [[ ! -f $SASL_DIR/enabled ]] && ((formatted == 1)); then
        die "$DATA_DIR was formatted without --sasl; SCRAM users are created when the storage is formatted, so use a new --data-dir (or stop and delete this one)"
    fi
    mkdir -p "$SASL_DIR"
    chmod 700 "$SASL_DIR"
    for name in "$SASL_USER" "$SASL_ADMIN"; do
        if [[ ! -s $SASL_DIR/$name.password ]]; then
            (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$SASL_DIR/$name.password")
        fi
    done
    touch "$SASL_DIR/enabled"
}

# --add-scram arguments for the storage format: both mechanisms for the client user, and the
# inter-broker user. (The passwords are on this short-lived command line: fine for a loopback
# development broker, see docs/security.md for production.)
sasl_format_args() {
    local name mech
    for name in "$SASL_USER" "$SASL_ADMIN"; do
        for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
            printf '%s\n' "--add-scram" "$mech=[name=$name,password=$(sasl_password "$name")]"
        done
    done
}

# --- mutual TLS (--tls) ----------------------------------------------------------------------

readonly TLS_FILES=(ca.pem broker.keystore.pem client.pem client.key client.keystore.pem)

tls_files_present() {
    local name
    for name in "${TLS_FILES[@]}"; do [[ -s $TLS_DIR/$name ]] || return 1; done
}

# Generate the certificates once per data directory: a throwaway CA, the broker's certificate
# (CN and IP SAN 127.0.0.1, for server and client use: brokers connect to each other) and the
# client's (CN stormwatch), both signed by the CA. All PEM with unencrypted PKCS#8 keys, readable
# by the owner only: Kafka reads PEM key stores itself (ssl.keystore.type=PEM), librdkafka reads
# the files that stormwatch's kafka.ssl_* options name. The CA key is deleted after signing.
tls_prepare() {
    if ! tls_files_present; then
        command -v openssl >/dev/null 2>&1 || apt_install openssl
        local tmp=$TLS_DIR.tmp.$$
        rm -rf "$TLS_DIR".tmp.*
        (umask 077 && mkdir -p "$tmp")
        tls_openssl "$tmp" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/ca.key"
        tls_openssl "$tmp" req -x509 -new -sha256 -days 3650 -key "$tmp/ca.key" -out "$tmp/ca.pem" \
            -subj "/CN=stormwatch local-kafka throwaway CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        tls_sign "$tmp" broker "/CN=127.0.0.1" "subjectAltName=IP:127.0.0.1" "extendedKeyUsage=serverAuth,clientAuth"
        tls_sign "$tmp" client "/CN=stormwatch" "extendedKeyUsage=clientAuth"
        rm -f "$tmp"/ca.key "$tmp"/ca.srl "$tmp"/*.csr "$tmp"/*.ext "$tmp/openssl.log"
        rm -rf "$TLS_DIR"
        mv "$tmp" "$TLS_DIR"
        log "generated a throwaway CA, a broker and a client certificate into $TLS_DIR"
    fi
    chmod 700 "$TLS_DIR"
    touch "$TLS_DIR/enabled"
}

# tls_openssl DIR ARGS...: run openssl quietly, show its output and stop when it fails.
tls_openssl() {
    local dir=$1
    shift
    openssl "$@" </dev/null >>"$dir/openssl.log" 2>&1 || {
        tail -n 20 "$dir/openssl.log" >&2
        die "openssl $1 failed while generating the TLS files in $dir"
    }
}

# tls_sign DIR NAME SUBJECT EXTENSION...: a key and a certificate signed by DIR's CA, plus
# NAME.keystore.pem (key and certificate in one file) for Java clients and the broker.
tls_sign() {
    local dir=$1 name=$2 subject=$3
    shift 3
    (umask 077 && printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "$@" >"$dir/$name.ext")
    tls_openssl "$dir" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name.key"
    tls_openssl "$dir" req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr"
    tls_openssl "$dir" x509 -req -sha256 -days 3650 -in "$dir/$name.csr" -CA "$dir/ca.pem" \
        -CAkey "$dir/ca.key" -CAserial "$dir/ca.srl" -CAcreateserial -extfile "$dir/$name.ext" \
        -out "$dir/$name.pem"
    (umask 077 && cat "$dir/$name.key" "$dir/$name.pem" >"$dir/$name.keystore.pem")
}

# The client settings of a --tls instance, as stormwatch's environment variables.
tls_settings() {
    echo "STORMWATCH_KAFKA__SECURITY_PROTOCOL=$(client_protocol)"
    echo "STORMWATCH_KAFKA__SSL_CA_LOCATION=$TLS_DIR/ca.pem"
    echo "STORMWATCH_KAFKA__SSL_CERTIFICATE_LOCATION=$TLS_DIR/client.pem"
    echo "STORMWATCH_KAFKA__SSL_KEY_LOCATION=$TLS_DIR/client.key"
}

CLUSTER_ID=""
cluster_id() {
    local file=$DATA_DIR/cluster.id id
    if [[ ! -s $file ]]; then
        # 16 random bytes, base64url without padding, as Kafka's Uuid prints them (never a leading '-').
        while :; do
            id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
            [[ $id != -* ]] && break
        done
        echo "$id" >"$file"
    fi
    cat "$file"
}

format_storage() {
    local i=$1 dir
    dir=$(node_dir "$i")
    [[ -f $dir/data/meta.properties ]] && return 0
    local scram=()
    [[ $SASL == 1 ]] && mapfile -t scram < <(sasl_format_args)
    "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$LIBS_DIR/*" \
        kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$dir/server.properties" "${scram[@]+"${scram[@]}"}" \
        >"$dir/logs/format.log" 2>&1 || {
        tail -n 20 "$dir/logs/format.log" >&2
        die "formatting the storage of node $i ($dir/data) failed; see $dir/logs/format.log"
    }
}

launch_node() {
    local i=$1 dir netns=()
    dir=$(node_dir "$i")
    # STORMWATCH_KAFKA_NETNS_PREFIX: in the node's own namespace (ip netns exec execs, no fork).
    if [[ -n $NETNS_PREFIX ]]; then
        local ns
        ns=$(node_netns "$i") || exit 1
        netns=(ip netns exec "$ns")
    fi
    # The child writes its own PID and execs Java, so the PID file names the JVM even if setsid forks.
    # shellcheck disable=SC2016  # $$ and $@ belong to the child shell
    setsid "${netns[@]+"${netns[@]}"}" bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/kafka.pid" \
        "$JAVA" "${HEAP_OPTS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -Dkafka.logs.dir="$dir/logs" -cp "$LIBS_DIR/*" kafka.Kafka "$dir/server.properties" \
        >"$dir/logs/stdout.log" 2>&1 </dev/null 8>&- 9>&- &
    # Wait for the PID file only; wait_ready notices (and reports) a JVM that exits early.
    local waited=0
    until [[ -s $dir/kafka.pid ]]; do
        ((waited++ < 50)) || die "node $i did not start; see $dir/logs/stdout.log"
        sleep 0.1
    done
}

show_logs() {
    local i dir
    for ((i = 1; i <= NODES; i++)); do
        dir=$(node_dir "$i")
        for f in "$dir/logs/stdout.log" "$dir/logs/server.log"; do
            [[ -s $f ]] || continue
            echo "----- last lines of $f -----" >&2
            tail -n 25 "$f" >&2
        done
    done
}

# --- readiness: a real metadata request -------------------------------------------------------

# argv: bootstrap, minimum broker count[, a broker id that must be registered]. With --sasl it
# authenticates as the admin user, with --tls with the client certificate (LOCAL_KAFKA_* set by
# pick_checker).
PYTHON_CHECK='
import os, sys
from confluent_kafka.admin import AdminClient
conf = {"bootstrap.servers": sys.argv[1], "log_level": 0, "socket.connection.setup.timeout.ms": 1000,
        "security.protocol": os.environ.get("LOCAL_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")}
if os.environ.get("LOCAL_KAFKA_SASL_USER"):
    with open(os.environ["LOCAL_KAFKA_SASL_PASSWORD_FILE"]) as f:
        password = f.read().strip()
    conf.update({"sasl.mechanism": "SCRAM-SHA-512",
                 "sasl.username": os.environ["LOCAL_KAFKA_SASL_USER"], "sasl.password": password})
if os.environ.get("LOCAL_KAFKA_TLS_DIR"):
    tls = os.environ["LOCAL_KAFKA_TLS_DIR"]
    conf.update({"ssl.ca.location": tls + "/ca.pem", "ssl.certificate.location": tls + "/client.pem",
                 "ssl.key.location": tls + "/client.key"})
admin = AdminClient(conf)
try:
    metadata = admin.list_topics(timeout=2)
except Exception:
    sys.exit(1)
ok = len(metadata.brokers) >= int(sys.argv[2])
sys.exit(0 if ok and (len(sys.argv) < 4 or int(sys.argv[3]) in metadata.brokers) else 1)
'

CHECKER=""
pick_checker() {
    local python=$REPO_ROOT/.venv/bin/python properties=$DATA_DIR/admin-check.properties
    if [[ ${STORMWATCH_KAFKA_CHECK:-} != java ]] && [[ -x $python ]] && "$python" -c 'import confluent_kafka' 2>/dev/null; then
        CHECKER=$python
    else
        CHECKER=java
        (umask 077 && printf 'default.api.timeout.ms=3000\nrequest.timeout.ms=2000\n' >"$properties")
        chmod 600 "$properties"
        echo "security.protocol=$(client_protocol)" >>"$properties"
    fi
    LOCAL_KAFKA_SECURITY_PROTOCOL=$(client_protocol)
    export LOCAL_KAFKA_SECURITY_PROTOCOL
    if [[ $SASL == 1 ]]; then
        export LOCAL_KAFKA_SASL_USER=$SASL_ADMIN LOCAL_KAFKA_SASL_PASSWORD_FILE=$SASL_DIR/$SASL_ADMIN.password
        if [[ $CHECKER == java ]]; then
            {
                echo "sasl.mechanism=SCRAM-SHA-512"
                echo "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$SASL_ADMIN\" password=\"$(sasl_password "$SASL_ADMIN")\";"
            } >>"$properties"
        fi
    fi
    if [[ $TLS == 1 ]]; then
        export LOCAL_KAFKA_TLS_DIR=$TLS_DIR
        if [[ $CHECKER == java ]]; then
            {
                echo "ssl.truststore.type=PEM"
                echo "ssl.truststore.location=$TLS_DIR/ca.pem"
                echo "ssl.keystore.type=PEM"
                echo "ssl.keystore.location=$TLS_DIR/client.keystore.pem"
            } >>"$properties"
        fi
    fi
}

# One attempt: does the cluster answer a metadata request with all NODES brokers registered?
cluster_answers() {
    local bootstrap
    bootstrap=$(bootstrap_servers)
    if [[ $CHECKER != java ]]; then
        timeout 10 "$CHECKER" -c "$PYTHON_CHECK" "$bootstrap" "$NODES" 2>/dev/null
    else
        # Without the project's venv: Kafka's own ConfigCommand lists every registered broker.
        local out
        out=$(timeout 20 "$JAVA" -Xmx128m -cp "$LIBS_DIR/*" kafka.admin.ConfigCommand \
            --bootstrap-server "$bootstrap" --command-config "$DATA_DIR/admin-check.properties" \
            --describe --entity-type brokers 2>/dev/null) || return 1
        (($(grep -cE '^Dynamic configs for broker [0-9]+ are' <<<"$out") >= NODES))
    fi
}

wait_ready() {
    local started=$SECONDS i
    pick_checker
    while :; do
        for ((i = 1; i <= NODES; i++)); do
            if ! node_pid "$i" >/dev/null; then
                show_logs
                stop_nodes quiet
                die "node $i exited during startup (logs above; data in $DATA_DIR)"
            fi
        done
        cluster_answers && return 0
        if ((SECONDS - started >= START_TIMEOUT)); then
            show_logs
            stop_nodes quiet
            die "Kafka at $(bootstrap_servers) did not answer metadata requests within ${START_TIMEOUT}s (logs above)"
        fi
        sleep 0.5
    done
}

# --- commands -------------------------------------------------------------------------------

cmd_start() {
    local i running=0 started=$SECONDS bootstrap
    bootstrap=$(bootstrap_servers)
    exec 9>"$DATA_DIR/.lock"
    flock 9
    for ((i = 1; i <= NODES; i++)); do node_pid "$i" >/dev/null && running=$((running + 1)); done
    if ((running > 0)) && [[ -f $DATA_DIR/bootstrap ]] && [[ $(<"$DATA_DIR/bootstrap") != "$bootstrap" ]]; then
        die "$DATA_DIR already runs Kafka at $(<"$DATA_DIR/bootstrap"), not $bootstrap; stop it first"
    fi
    ensure_java
    fetch_libs
    if [[ $SASL_REQUESTED == 1 || $SASL == 1 ]] && ((running < NODES)); then
        SASL=1
        sasl_prepare
    elif [[ $SASL_REQUESTED == 1 && ! -f $SASL_DIR/enabled ]]; then
        die "$DATA_DIR already runs Kafka without SASL; stop it and start a new --data-dir with --sasl"
    fi
    if [[ $TLS_REQUESTED == 1 && ! -f $TLS_DIR/enabled ]] && ((running > 0)); then
        die "$DATA_DIR already runs Kafka without TLS; stop it and start it again with --tls"
    fi
    if [[ $TLS == 1 ]] && ((running < NODES)); then tls_prepare; fi
    if ((running == NODES)); then
        log "already running ($NODES node(s), data in $DATA_DIR)"
    else
        for ((i = 1; i <= NODES; i++)); do
            node_pid "$i" >/dev/null && continue
            local p
            for p in "$(broker_port "$i")" "$(controller_port "$i")"; do
                warn_ephemeral "$p"
                node_port_in_use "$i" "$p" && die "port 127.0.0.1:$p is taken by another process; pick another with --port"
            done
            write_config "$i"
        done
        CLUSTER_ID=$(cluster_id)
        for ((i = 1; i <= NODES; i++)); do
            node_pid "$i" >/dev/null || format_storage "$i" &
        done
        wait_all_or_die "formatting storage"
        for ((i = 1; i <= NODES; i++)); do
            node_pid "$i" >/dev/null || {
                rm -f "$(node_dir "$i")/kafka.pid"
                launch_node "$i"
            }
        done
        echo "$bootstrap" >"$DATA_DIR/bootstrap"
        log "started Apache Kafka $KAFKA_VERSION ($NODES node(s), data and logs in $DATA_DIR), waiting for it to answer"
    fi
    wait_ready
    log "Kafka at $bootstrap is up (${NODES} node(s), ready after $((SECONDS - started))s)"
    if [[ $SASL == 1 ]]; then
        log "SASL/SCRAM required (security.protocol $(client_protocol), SCRAM-SHA-256 or SCRAM-SHA-512): user $SASL_USER, password in $SASL_DIR/$SASL_USER.password"
    fi
    if [[ $TLS == 1 ]]; then
        log "mutual TLS required (security.protocol $(client_protocol)): CA $TLS_DIR/ca.pem, client certificate $TLS_DIR/client.pem, its key $TLS_DIR/client.key"
    fi
    echo "KAFKA_BOOTSTRAP_SERVERS=$bootstrap"
    if [[ $TLS == 1 ]]; then tls_settings; fi
}

wait_all_or_die() {
    local pid failed=0
    for pid in $(jobs -p); do wait "$pid" || failed=1; done
    ((failed == 0)) || die "$1 failed (see the messages above)"
}

# stop_nodes [quiet]: SIGTERM every running node, wait, SIGKILL what is left.
stop_nodes() {
    local i pid started=$SECONDS pids=() nodes=()
    for ((i = 1; i <= NODES; i++)); do
        if pid=$(node_pid "$i"); then
            pids+=("$pid")
            nodes+=("$i")
        else
            rm -f "$(node_dir "$i")/kafka.pid"
        fi
    done
    if ((${#pids[@]} == 0)); then
        [[ ${1:-} == quiet ]] || log "not running (data in $DATA_DIR)"
        return 0
    fi
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local left=("${pids[@]}")
    while ((${#left[@]} > 0)) && ((SECONDS - started < STOP_TIMEOUT)); do
        sleep 0.2
        local still=()
        for pid in "${left[@]}"; do kill -0 "$pid" 2>/dev/null && still+=("$pid"); done
        left=("${still[@]+"${still[@]}"}")
    done
    if ((${#left[@]} > 0)); then
        log "no clean shutdown within ${STOP_TIMEOUT}s; killing PID(s) ${left[*]}"
        kill -KILL "${left[@]}" 2>/dev/null || true
        sleep 0.5
    fi
    for i in "${nodes[@]}"; do rm -f "$(node_dir "$i")/kafka.pid"; done
    [[ ${1:-} == quiet ]] || log "stopped ${#pids[@]} node(s) in $((SECONDS - started))s (data kept in $DATA_DIR)"
}

cmd_stop() {
    exec 9>"$DATA_DIR/.lock"
    flock 9
    stop_nodes
}

cmd_status() {
    local i pid up=0 state
    for ((i = 1; i <= NODES; i++)); do
        if pid=$(node_pid "$i"); then
            up=$((up + 1))
            if node_port_in_use "$i" "$(broker_port "$i")"; then state="running, listening"; else state="running, not listening yet"; fi
            echo "node $i: $state (pid $pid), broker 127.0.0.1:$(broker_port "$i"), controller 127.0.0.1:$(controller_port "$i")"
        else
            echo "node $i: stopped (broker port $(broker_port "$i"))"
        fi
    done
    echo "data and logs: $DATA_DIR"
    if ((up == NODES)); then
        echo "KAFKA_BOOTSTRAP_SERVERS=$(bootstrap_servers)"
        if [[ $TLS == 1 ]]; then tls_settings; fi
        return 0
    fi
    ((up == 0)) && echo "Kafka is not running" || echo "Kafka is degraded: $up of $NODES node(s) run"
    return 3
}

cmd_fetch() {
    ensure_java
    fetch_libs
    log "Apache Kafka $KAFKA_VERSION jars are in $LIBS_DIR; java is $JAVA"
}

# --- one node of a started instance (fault tests) -------------------------------------------

# One attempt: does node $1 answer a metadata request on its own port and list itself as a broker?
node_answers() {
    local port
    port=$(broker_port "$1")
    if [[ $CHECKER != java ]]; then
        timeout 10 "$CHECKER" -c "$PYTHON_CHECK" "127.0.0.1:$port" 1 "$1" 2>/dev/null
    else
        timeout 20 "$JAVA" -Xmx128m -cp "$LIBS_DIR/*" kafka.admin.ConfigCommand \
            --bootstrap-server "127.0.0.1:$port" --command-config "$DATA_DIR/admin-check.properties" \
            --describe --entity-type brokers --entity-name "$1" >/dev/null 2>&1
    fi
}

# cmd_stop_node TERM|KILL: stop node NODE_ARG only; the others keep running.
cmd_stop_node() {
    local signal=$1 i=$NODE_ARG pid started=$SECONDS
    exec 9>"$DATA_DIR/.lock"
    flock 9
    if ! pid=$(node_pid "$i"); then
        rm -f "$(node_dir "$i")/kafka.pid"
        log "node $i is not running (data in $(node_dir "$i"))"
        return 0
    fi
    kill "-$signal" "$pid" 2>/dev/null || true
    # node_pid, not kill -0: a killed JVM nobody has reaped yet is a zombie without a command line.
    while node_pid "$i" >/dev/null; do
        if [[ $signal == TERM ]] && ((SECONDS - started >= STOP_TIMEOUT)); then
            log "node $i: no clean shutdown within ${STOP_TIMEOUT}s; killing PID $pid"
            kill -KILL "$pid" 2>/dev/null || true
            signal=KILL
        elif ((SECONDS - started >= STOP_TIMEOUT + 10)); then
            die "node $i (PID $pid) is still running $((SECONDS - started))s after SIG$signal"
        fi
        sleep 0.1
    done
    rm -f "$(node_dir "$i")/kafka.pid"
    log "node $i stopped with SIG$signal in $((SECONDS - started))s (broker port $(broker_port "$i"), data kept)"
}

# Start node NODE_ARG of an instance that was started before, and wait until it serves as a
# broker again (it needs a controller quorum: a majority of the nodes must run).
cmd_start_node() {
    local i=$NODE_ARG started=$SECONDS p
    exec 9>"$DATA_DIR/.lock"
    flock 9
    [[ -f $DATA_DIR/cluster.id ]] || die "no Kafka instance in $DATA_DIR yet; run '$PROG start' first"
    if [[ -f $DATA_DIR/bootstrap ]] && [[ $(<"$DATA_DIR/bootstrap") != "$(bootstrap_servers)" ]]; then
        die "$DATA_DIR runs Kafka at $(<"$DATA_DIR/bootstrap"), not $(bootstrap_servers); pass the same --nodes/--port"
    fi
    ensure_java
    fetch_libs
    if node_pid "$i" >/dev/null; then
        log "node $i is already running"
    else
        for p in "$(broker_port "$i")" "$(controller_port "$i")"; do
            node_port_in_use "$i" "$p" && die "port 127.0.0.1:$p is taken by another process"
        done
        write_config "$i"
        CLUSTER_ID=$(cluster_id)
        format_storage "$i"
        rm -f "$(node_dir "$i")/kafka.pid"
        launch_node "$i"
    fi
    pick_checker
    until node_answers "$i"; do
        if ! node_pid "$i" >/dev/null; then
            show_logs
            die "node $i exited during startup (logs above)"
        fi
        if ((SECONDS - started >= START_TIMEOUT)); then
            tail -n 40 "$(node_dir "$i")/logs/server.log" >&2 2>/dev/null || true
            die "node $i did not serve as a broker within ${START_TIMEOUT}s (a majority of the nodes must run for a controller quorum); logs in $(node_dir "$i")/logs"
        fi
        sleep 0.5
    done
    log "node $i is up on 127.0.0.1:$(broker_port "$i") (ready after $((SECONDS - started))s)"
}

case $COMMAND in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
fetch) cmd_fetch ;;
stop-node) cmd_stop_node TERM ;;
kill-node) cmd_stop_node KILL ;;
start-node) cmd_start_node ;;
esac
