#!/usr/bin/env bash
# A private RabbitMQ node for development and tests: its own node name, AMQP port, distribution
# port and data directory, so it never collides with another broker on the machine.
#
#   scripts/broker.sh start|stop|status|url|tls-url|ctl ARGS...
#
# Settings (environment):
#   BROKER_PORT   AMQP port (default 5673); the Erlang distribution port is BROKER_PORT + 20000
#   BROKER_DIR    data, logs and pid file (default ${TMPDIR:-/tmp}/customer-worker-broker-$BROKER_PORT)
#   BROKER_NODE   node name (default customer-worker-$BROKER_PORT@localhost)
#
# The node also listens for AMQP over TLS on BROKER_PORT + 2 with a certificate for `localhost`
# issued by a CA made for it ($BROKER_DIR/tls/ca.pem), so clients can test verified TLS.
set -euo pipefail

BROKER_PORT="${BROKER_PORT:-5673}"
BROKER_DIR="${BROKER_DIR:-${TMPDIR:-/tmp}/customer-worker-broker-$BROKER_PORT}"
BROKER_NODE="${BROKER_NODE:-customer-worker-$BROKER_PORT@localhost}"
RABBIT_BIN=/usr/lib/rabbitmq/bin

die() { echo "broker.sh: $*" >&2; exit 1; }

[ -x "$RABBIT_BIN/rabbitmq-server" ] || die "rabbitmq-server is not installed (Debian/Ubuntu: apt-get install rabbitmq-server)"

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
  if [ "$(id -u)" = 0 ]; then
    env -i HOME=/var/lib/rabbitmq "${env[@]}" runuser -u rabbitmq -- "$@"
  else
    env "${env[@]}" "$@"
  fi
}

ctl() { as_broker_user "$RABBIT_BIN/rabbitmqctl" -n "$BROKER_NODE" "$@"; }

is_running() { ctl status >/dev/null 2>&1; }

start() {
  if is_running; then echo "broker already running: $(url)"; return 0; fi
  mkdir -p "$BROKER_DIR/mnesia" "$BROKER_DIR/log"
  : > "$BROKER_DIR/enabled_plugins"
  : > "$BROKER_DIR/rabbitmq-env.conf"
  : > "$BROKER_DIR/advanced.config"
  echo "[]." > "$BROKER_DIR/advanced.config"
  make_certificates
  cat > "$BROKER_DIR/rabbitmq.conf" <<CONF
# guest may connect from loopback only (the default); the node listens on 127.0.0.1 only.
log.console = false
log.file.level = warning
listeners.ssl.default = 127.0.0.1:$((BROKER_PORT + 2))
ssl_options.cacertfile = $BROKER_DIR/tls/ca.pem
ssl_options.certfile = $BROKER_DIR/tls/server.pem
ssl_options.keyfile = $BROKER_DIR/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
ssl_options.versions.1 = tlsv1.2
ssl_options.versions.2 = tlsv1.3
CONF
  if [ "$(id -u)" = 0 ]; then chown -R rabbitmq:rabbitmq "$BROKER_DIR"; fi
  as_broker_user "$RABBIT_BIN/rabbitmq-server" -detached >/dev/null 2>&1 \
    || die "rabbitmq-server did not start; see $BROKER_DIR/log"
  # The node answers rabbitmqctl before its AMQP listener is up: wait for the app itself.
  local deadline=$((SECONDS + 60))
  until ctl await_startup >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "broker did not come up within 60 s; see $BROKER_DIR/log"
    sleep 1
  done
  echo "broker running: $(url)"
}

stop() {
  if ! is_running; then echo "broker not running"; return 0; fi
  ctl stop "$BROKER_DIR/rabbitmq.pid" >/dev/null 2>&1 || ctl stop >/dev/null 2>&1 || true
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

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if is_running; then echo "running: $(url) (node $BROKER_NODE, data $BROKER_DIR)"; else echo "not running"; exit 1; fi ;;
  url) url ;;
  tls-url) tls_url ;;
  ctl) shift; ctl "$@" ;;
  *) echo "usage: $0 start|stop|status|url|tls-url|ctl ARGS..." >&2; exit 2 ;;
esac
