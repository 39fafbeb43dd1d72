#!/usr/bin/env bash
# A private RabbitMQ node for development and tests: its own node name, AMQP port, distribution
# port and data directory, so it never collides with another broker on the machine.
#
#   scripts/broker.sh start|fresh|stop|pause|resume|status|version|url|tls-url|ctl ARGS...
#   scripts/broker.sh cluster start|stop|url
#
# `fresh` is `start` on an empty node: whatever runs under this node's name is killed and its
# queues and messages are deleted first. The tests use it, since a node's data outlives a stop:
# queues that earlier runs (and crashed ones) left pile up, and a node recovering hundreds of
# quorum queues on two cores answers logins too slowly for the next run (seen: 312, and logins
# timed out after 30 s).
#
# Settings (environment):
#   RABBITMQ      which RabbitMQ: 3.10 (default: Debian 12's package, 3.10.8) or 4 (Debian
#                 unstable's, 4.3.x, run from the root scripts/server-root.sh builds once and
#                 reuses). A node of the other version, or data it left, under this node's name is
#                 killed and wiped on start: a node never starts on another version's data.
#   BROKER_PORT   AMQP port (default 5673); the Erlang distribution port is BROKER_PORT + 20000
#   BROKER_DIR    data, logs and pid file (default ${TMPDIR:-/tmp}/customer-worker-broker-$BROKER_PORT)
#   BROKER_NODE   node name (default customer-worker-$BROKER_PORT@localhost)
#
# The node also listens for AMQP over TLS on BROKER_PORT + 2 with a certificate for `localhost`
# issued by a CA made for it ($BROKER_DIR/tls/ca.pem), so clients can test verified TLS.
#
# `pause` stops the node's VM (SIGSTOP) and `resume` lets it go on: the kernel still accepts
# connections, and nothing is answered in between (a broker that hangs, for the tests). `start`
# and `stop` resume a node a crashed run left paused.
#
# `cluster` runs three such nodes (without TLS) on CLUSTER_PORT, CLUSTER_PORT + 1 and
# CLUSTER_PORT + 2 (default BROKER_PORT + 10), joined into one cluster with rabbitmqctl
# join_cluster; `cluster url` prints their three URLs, comma-separated, as AMQP_URL takes them.
# Each node is also an ordinary private node: `BROKER_PORT=<its port> scripts/broker.sh ctl …`.
# `cluster stop` removes their data, so the next start forms a fresh cluster.
set -euo pipefail

BROKER_PORT="${BROKER_PORT:-5673}"
BROKER_DIR="${BROKER_DIR:-${TMPDIR:-/tmp}/customer-worker-broker-$BROKER_PORT}"
BROKER_NODE="${BROKER_NODE:-customer-worker-$BROKER_PORT@localhost}"
export BROKER_PORT BROKER_DIR BROKER_NODE
SELF="$(readlink -f "$0")"
SCRIPTS="$(dirname "$SELF")"
RABBIT_BIN=/usr/lib/rabbitmq/bin

die() { echo "broker.sh: $*" >&2; exit 1; }

# The version asked for, as one word: 3.10 or 4.
case "${RABBITMQ:-3.10}" in
  3|3.10|3.10.*) RABBITMQ=3.10; SERVER_ROOT_DIR=/ ;;
  4|4.*) RABBITMQ=4; SERVER_ROOT_DIR="$("$SCRIPTS/server-root.sh" path)" ;;
  *) die "RABBITMQ=$RABBITMQ: expected 3.10 (Debian 12's RabbitMQ) or 4 (RabbitMQ 4.x from Debian unstable)" ;;
esac
export RABBITMQ
# Every rabbitmqctl call and every wait has a time limit (seconds), so a node that is half up
# (its Erlang VM alive, its app stopped or stuck) fails a script instead of hanging it.
BROKER_TIMEOUT="${BROKER_TIMEOUT:-120}"

# Runs "$@" where the asked-for version is installed: on the host, or inside the root.
in_server_root() {
  if [ "$RABBITMQ" = 4 ]; then chroot "$SERVER_ROOT_DIR" "$@"; else "$@"; fi
}

if [ "$RABBITMQ" = 4 ]; then
  # The root sees the host's temporary folder at the same path (server-root.sh), and nothing else.
  case "$(readlink -m "$BROKER_DIR")/" in
    "$(readlink -f "${TMPDIR:-/tmp}")"/*) ;;
    *) die "RABBITMQ=4 keeps its data under ${TMPDIR:-/tmp} (the folder the server root shares); BROKER_DIR=$BROKER_DIR is not" ;;
  esac
  # Built once (a few minutes) and reused; mounted again after a reboot.
  case "${1:-}" in
    start|fresh|cluster|ctl) "$SCRIPTS/server-root.sh" ensure >/dev/null ;;
    *) "$SCRIPTS/server-root.sh" mount ;;
  esac
else
  [ -x "$RABBIT_BIN/rabbitmq-server" ] || die "rabbitmq-server is not installed (Debian/Ubuntu: apt-get install rabbitmq-server)"
fi

# Debian's wrappers drop root to the rabbitmq user; a node run as root would also leave root-owned
# files behind. Run the node and the CLI as `rabbitmq` when we are root, as ourselves otherwise.
as_broker_user() {
  local env=(
    RABBITMQ_NODENAME="$BROKER_NODE"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$BROKER_PORT"
    RABBITMQ_DIST_PORT="$((BROKER_PORT + 20000))"
    RABBITMQ_MNESIA_BASE="$BROKER_DIR/mnesia"
    RABBITMQ_LOG_BASE="$BROKER_DIR/log"
    RABBITMQ_PID_FILE="$BROKER_DIR/rabbitmq.pid"
    RABBITMQ_ENABLED_PLUGINS_FILE="$BROKER_DIR/enabled_plugins"
    RABBITMQ_CONFIG_FILE="$BROKER_DIR/rabbitmq"
    RABBITMQ_ADVANCED_CONFIG_FILE="$BROKER_DIR/advanced.config"
    RABBITMQ_CONF_ENV_FILE="$BROKER_DIR/rabbitmq-env.conf"
    PATH="$PATH"
  )
  if [ "$RABBITMQ" = 4 ]; then
    # chroot needs root; the root's own PATH (its Erlang), and its own rabbitmq user.
    env -i HOME=/var/lib/rabbitmq "${env[@]/#PATH=*/PATH=/usr/sbin:/usr/bin:/sbin:/bin}" \
      chroot "$SERVER_ROOT_DIR" runuser -u rabbitmq -- sh -c "$RAISE_OPEN_FILES" sh "$@"
  elif [ "$(id -u)" = 0 ]; then
    env -i HOME=/var/lib/rabbitmq "${env[@]}" runuser -u rabbitmq -- sh -c "$RAISE_OPEN_FILES" sh "$@"
  else
    env "${env[@]}" sh -c "$RAISE_OPEN_FILES" sh "$@"
  fi
}
# Open files up to the hard limit: runuser's session starts at 1024, and 3.10 counts every
# socket and every open quorum-queue segment against that (its file handle cache): a parallel
# test run declares a few hundred quorum queues (fair share's shards in every fixture), and once
# the cache was full, new connections waited forever in their handshake (a login "timed out";
# `rabbitmqctl eval 'file_handle_cache:info().'` showed total_used 1041 of total_limit 927).
# RabbitMQ's own production checklist asks for at least 50,000.
RAISE_OPEN_FILES='ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null; exec "$@"'

# The version of a node's VM: 4 when it runs inside the server root, 3.10 otherwise.
vm_version() {
  local root
  root=$(readlink "/proc/$1/root" 2>/dev/null) || return 0
  if [ "$root" = / ]; then echo 3.10; else echo 4; fi
}

# rabbitmqctl against this node, bounded by CTL_LIMIT seconds (default BROKER_TIMEOUT).
ctl() { timeout -k 5 "${CTL_LIMIT:-$BROKER_TIMEOUT}" "$SELF" __as_broker_user "$RABBIT_BIN/rabbitmqctl" -n "$BROKER_NODE" "$@"; }

# The Erlang VM of this node (by its node name in its environment, and booting rabbit: not a
# rabbitmqctl, which carries the same name), whatever state it is in.
node_vms() {
  local pid
  for pid in $(pgrep -x beam.smp 2>/dev/null); do
    { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- '-s rabbit boot' || continue
    { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$BROKER_NODE" && echo "$pid"
  done
  return 0
}

# True when something accepts connections on the node's AMQP port.
amqp_listening() { timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$BROKER_PORT" 2>/dev/null; }

# running: the app is up (its AMQP listener, which runs only while the app does, accepts
# connections); stopped: the VM answers but its app is not running (stop_app, or a start that
# never finished); stuck: a VM exists but does not answer within BROKER_TIMEOUT; absent: no VM.
node_state() {
  local answer vms
  vms=$(node_vms)
  if [ -z "$vms" ]; then echo absent; return 0; fi
  if [ "$(vm_version ${vms%% *})" != "$RABBITMQ" ]; then echo other-version; return 0; fi
  if amqp_listening; then echo running; return 0; fi
  if answer=$(ctl -q eval 'rabbit:is_running().' 2>/dev/null); then
    [ "$answer" = true ] && echo running || echo stopped
  else
    echo stuck
  fi
}

is_running() { [ "$(node_state)" = running ]; }

# Ends every VM of this node at once (SIGKILL), waiting until they are gone.
kill_node() {
  local pids deadline=$((SECONDS + 15))
  pids=$(node_vms)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  while [ -n "$(node_vms)" ]; do
    [ $SECONDS -lt $deadline ] || die "node $BROKER_NODE (pids $(node_vms)) did not die after SIGKILL"
    sleep 0.2
  done
  rm -f "$BROKER_DIR/rabbitmq.pid"
}

# Lets a paused node (SIGSTOP, `pause`) go on.
resume() {
  local pids
  pids=$(node_vms)
  [ -z "$pids" ] || kill -CONT $pids 2>/dev/null || true
}

pause() {
  local pids
  pids=$(node_vms)
  [ -n "$pids" ] || die "node $BROKER_NODE is not running"
  kill -STOP $pids
}

start() {
  resume
  case "$(node_state)" in
    running) ensure_plugin; echo "broker already running: $(url)"; return 0 ;;
    stopped)
      # Left by an earlier run with its app stopped (e.g. a test that stopped it, then crashed).
      if ctl start_app >/dev/null 2>&1 && CTL_LIMIT=$BROKER_TIMEOUT ctl await_startup >/dev/null 2>&1; then
        ensure_plugin
        echo "broker running (its app was stopped; started it): $(url)"; return 0
      fi
      echo "broker.sh: node $BROKER_NODE did not start its app; killing it and starting afresh" >&2
      kill_node ;;
    stuck)
      echo "broker.sh: node $BROKER_NODE does not answer (left by an earlier run?); killing it" >&2
      kill_node ;;
    other-version)
      echo "broker.sh: node $BROKER_NODE runs another RabbitMQ than $RABBITMQ; killing it" >&2
      kill_node ;;
  esac
  # Data of another version (an upgrade across 3.10 and 4.x is not supported): wiped.
  if [ -d "$BROKER_DIR/mnesia" ] && [ "$(cat "$BROKER_DIR/server-version" 2>/dev/null)" != "$RABBITMQ" ]; then
    rm -rf "$BROKER_DIR/mnesia"
  fi
  mkdir -p "$BROKER_DIR/mnesia" "$BROKER_DIR/log"
  echo "$RABBITMQ" > "$BROKER_DIR/server-version"
  # The consistent-hash exchange shards commands by merchant (fair share, docs/operations.md).
  echo "[$FAIR_SHARE_PLUGIN]." > "$BROKER_DIR/enabled_plugins"
  : > "$BROKER_DIR/rabbitmq-env.conf"
  : > "$BROKER_DIR/advanced.config"
  echo "[]." > "$BROKER_DIR/advanced.config"
  cat > "$BROKER_DIR/rabbitmq.conf" <<CONF
# guest may connect from loopback only (the default); the node listens on 127.0.0.1 only.
log.console = false
log.file.level = warning
CONF
  if [ -z "${BROKER_NO_TLS:-}" ]; then
    make_certificates
    cat >> "$BROKER_DIR/rabbitmq.conf" <<CONF
listeners.ssl.default = 127.0.0.1:$((BROKER_PORT + 2))
ssl_options.cacertfile = $BROKER_DIR/tls/ca.pem
ssl_options.certfile = $BROKER_DIR/tls/server.pem
ssl_options.keyfile = $BROKER_DIR/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.2
ssl_options.versions.2 = tlsv1.3
CONF
  fi
  # The node's user: the host's, or the root's (whose ids may differ).
  if [ "$(id -u)" = 0 ]; then in_server_root chown -R rabbitmq:rabbitmq "$BROKER_DIR"; fi
  rm -f "$BROKER_DIR/rabbitmq.pid"
  # From its own data folder: a node started from a clone that is later deleted would lose its
  # working directory, and rabbitmqctl then fails on it (badmatch enoent in filename:absname).
  (cd "$BROKER_DIR" && timeout -k 5 "$BROKER_TIMEOUT" "$SELF" __as_broker_user "$RABBIT_BIN/rabbitmq-server" -detached >/dev/null 2>&1) \
    || die "rabbitmq-server (node $BROKER_NODE) did not start; see $BROKER_DIR/log"
  # The node answers rabbitmqctl before its AMQP listener is up: wait for the app itself.
  local deadline=$((SECONDS + BROKER_TIMEOUT))
  until [ -n "$(node_vms)" ] && amqp_listening; do
    [ $SECONDS -lt $deadline ] || die "node $BROKER_NODE did not come up within $BROKER_TIMEOUT s; see $BROKER_DIR/log"
    sleep 0.5
  done
  echo "broker running: $(url) (RabbitMQ $(server_version))"
}

# The plugin the worker's fair share needs (both 3.10 and 4.x ship it, disabled).
FAIR_SHARE_PLUGIN=rabbitmq_consistent_hash_exchange

# A node an earlier version of this script started runs without the plugin: enabled while it runs.
ensure_plugin() {
  grep -q "$FAIR_SHARE_PLUGIN" "$BROKER_DIR/enabled_plugins" 2>/dev/null && return 0
  timeout -k 5 "$BROKER_TIMEOUT" "$SELF" __as_broker_user "$RABBIT_BIN/rabbitmq-plugins" -n "$BROKER_NODE" enable "$FAIR_SHARE_PLUGIN" >/dev/null \
    || die "could not enable $FAIR_SHARE_PLUGIN on node $BROKER_NODE"
}

# The version of the running node's server, as its package says.
server_version() { in_server_root dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo unknown; }

fresh() {
  kill_node
  rm -rf "$BROKER_DIR/mnesia"
  start
}

stop() {
  resume
  if [ "$(node_state)" = absent ]; then echo "broker not running"; return 0; fi
  ctl stop "$BROKER_DIR/rabbitmq.pid" >/dev/null 2>&1 || ctl stop >/dev/null 2>&1 || true
  # Whatever did not stop in time (a stuck VM) is killed: stop always leaves nothing behind.
  [ -z "$(node_vms)" ] || kill_node
  echo "broker stopped"
}

url() { echo "amqp://guest:guest@127.0.0.1:$BROKER_PORT/%2f"; }

tls_url() { echo "amqps://guest:guest@localhost:$((BROKER_PORT + 2))/%2f?cacertfile=$BROKER_DIR/tls/ca.pem"; }

# A throwaway CA and a server certificate for localhost, made once per data directory.
make_certificates() {
  local tls="$BROKER_DIR/tls"
  [ -s "$tls/server.pem" ] && return 0
  mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=customer-worker test CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$tls/server.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 3650 \
    -extfile "$tls/server.ext" -out "$tls/server.pem" >/dev/null 2>&1
}

CLUSTER_PORT="${CLUSTER_PORT:-$((BROKER_PORT + 10))}"
cluster_ports() { echo "$CLUSTER_PORT" "$((CLUSTER_PORT + 1))" "$((CLUSTER_PORT + 2))"; }

# Runs "$@" (a function of this script) for the cluster node on port $1.
on_node() {
  local port=$1; shift
  BROKER_PORT=$port BROKER_DIR="${TMPDIR:-/tmp}/customer-worker-broker-$port" \
    BROKER_NODE="customer-worker-$port@localhost" BROKER_NO_TLS=1 "$@"
}

cluster_url() {
  local urls=() port
  for port in $(cluster_ports); do urls+=("amqp://guest:guest@127.0.0.1:$port/%2f"); done
  (IFS=,; echo "${urls[*]}")
}

# True when all three nodes run and see each other: a cluster to reuse as it is.
cluster_healthy() {
  local port
  for port in $(cluster_ports); do
    [ "$(on_node "$port" node_state)" = running ] || return 1
  done
  [ "$(on_node "$CLUSTER_PORT" running_nodes 2>/dev/null)" = 3 ]
}

# rabbit_nodes:all_running/0 is gone in 4.x; cluster_status's JSON is the same in both.
running_nodes() {
  ctl -q cluster_status --formatter json 2>/dev/null \
    | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["running_nodes"]))'
}

cluster_start() {
  local ports=($(cluster_ports)) pids=() port pid
  if cluster_healthy; then echo "cluster already running: $(cluster_url)"; return 0; fi
  # Anything an earlier run left (a node with its app stopped, a stuck VM, half-joined data)
  # is killed and wiped: the cluster always starts fresh.
  for port in "${ports[@]}"; do
    on_node "$port" kill_node
    rm -rf "${TMPDIR:-/tmp}/customer-worker-broker-$port"
  done
  for port in "${ports[@]}"; do
    (on_node "$port" start >/dev/null) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || die "a cluster node did not start (logs: ${TMPDIR:-/tmp}/customer-worker-broker-{$(cluster_ports | tr ' ' ',')}/log)"; done
  local first="customer-worker-${ports[0]}@localhost"
  for port in "${ports[@]:1}"; do
    if on_node "$port" ctl cluster_status 2>/dev/null | grep -q "$first"; then continue; fi
    on_node "$port" ctl stop_app >/dev/null || die "node on port $port did not stop its app; see ${TMPDIR:-/tmp}/customer-worker-broker-$port/log"
    on_node "$port" ctl join_cluster "$first" >/dev/null 2>&1 || die "node on port $port could not join $first; see ${TMPDIR:-/tmp}/customer-worker-broker-$port/log"
    on_node "$port" ctl start_app >/dev/null || die "node on port $port did not start its app; see ${TMPDIR:-/tmp}/customer-worker-broker-$port/log"
  done
  on_node "${ports[0]}" ctl await_startup >/dev/null || die "node on port ${ports[0]} did not come up; see ${TMPDIR:-/tmp}/customer-worker-broker-${ports[0]}/log"
  echo "cluster running: $(cluster_url)"
}

cluster_stop() {
  local port
  for port in $(cluster_ports); do
    on_node "$port" stop >/dev/null
    rm -rf "${TMPDIR:-/tmp}/customer-worker-broker-$port"
  done
  echo "cluster stopped"
}

case "${1:-}" in
  # Internal: the script calls itself through these so `timeout` can bound a shell function.
  __as_broker_user) shift; as_broker_user "$@" ;;
  cluster)
    case "${2:-}" in
      start) cluster_start ;;
      stop) cluster_stop ;;
      url) cluster_url ;;
      *) echo "usage: $0 cluster start|stop|url" >&2; exit 2 ;;
    esac ;;
  start) start ;;
  fresh) fresh ;;
  stop) stop ;;
  pause) pause; echo "broker paused" ;;
  resume) resume; echo "broker resumed" ;;
  status) if is_running; then echo "running: $(url) (node $BROKER_NODE, RabbitMQ $(server_version), data $BROKER_DIR)"; else echo "not running"; exit 1; fi ;;
  version) server_version ;;
  url) url ;;
  tls-url) tls_url ;;
  ctl) shift; ctl "$@" ;;
  *) echo "usage: $0 start|fresh|stop|pause|resume|status|version|url|tls-url|ctl ARGS...|cluster start|stop|url" >&2; exit 2 ;;
esac
