#!/usr/bin/env bash
# A private PostgreSQL server for development and tests: its own port, data directory and socket
# folder, so it never collides with a system cluster (Debian's package may start one on 5432).
#
#   scripts/postgres.sh start|stop|crash|status|version|url|tls-dir|psql ARGS...
#
# Settings (environment):
#   POSTGRES  which PostgreSQL: 15 (default: Debian 12's package) or 18 (Debian unstable's, run
#             from the root scripts/server-root.sh builds once and reuses). A server of the other
#             version in PG_DIR, or its data, is replaced on start (a throwaway server).
#   PG_PORT   port on 127.0.0.1 (default 5433)
#   PG_DIR    data, log and socket folder (default ${TMPDIR:-/tmp}/customer-worker-postgres-$PG_PORT)
#   PG_BIN    PostgreSQL's programs (default: POSTGRES=15: the newest /usr/lib/postgresql/*/bin on the
#             host; POSTGRES=18: /usr/lib/postgresql/18/bin inside the root)
#   PG_TLS    1: the server also accepts TLS, with a certificate for `localhost` from a throwaway CA
#   PG_FSYNC  on (default) or off: `fsync` of the server (scripts/test.sh: off, see there); a
#             running server with the other value is restarted
#             that `start` makes with openssl in $PG_DIR/tls (`tls-dir` prints it): ca.pem, and
#             other-ca.pem, a CA that signed nothing the server has (for tests of a wrong CA).
#
# A throwaway server: it trusts local connections (no password) and `stop` deletes its data. `url` prints
# postgres://postgres@127.0.0.1:PORT/customers?sslmode=disable, a database `start` creates.
set -euo pipefail

PG_PORT="${PG_PORT:-5433}"
PG_DIR="${PG_DIR:-${TMPDIR:-/tmp}/customer-worker-postgres-$PG_PORT}"
PG_DATABASE=customers
export PG_PORT PG_DIR
SELF="$(readlink -f "$0")"
SCRIPTS="$(dirname "$SELF")"

die() { echo "postgres.sh: $*" >&2; exit 1; }

case "${POSTGRES:-15}" in
  15|15.*) POSTGRES=15; SERVER_ROOT_DIR=/ ;;
  18|18.*) POSTGRES=18; SERVER_ROOT_DIR="$("$SCRIPTS/server-root.sh" path)" ;;
  *) die "POSTGRES=$POSTGRES: expected 15 (Debian 12's PostgreSQL) or 18 (Debian unstable's)" ;;
esac
export POSTGRES

# Client programs (pg_isready, psql) are the host's: a client of 15 talks to a server of 18.
CLIENT_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
[ -n "$CLIENT_BIN" ] && [ -x "$CLIENT_BIN/psql" ] || die "PostgreSQL is not installed (Debian/Ubuntu: apt-get install postgresql)"
if [ "$POSTGRES" = 18 ]; then
  # The root sees the host's temporary folder at the same path (server-root.sh), and nothing else.
  case "$(readlink -m "$PG_DIR")/" in
    "$(readlink -f "${TMPDIR:-/tmp}")"/*) ;;
    *) die "POSTGRES=18 keeps its data under ${TMPDIR:-/tmp} (the folder the server root shares); PG_DIR=$PG_DIR is not" ;;
  esac
  case "${1:-}" in start|psql) "$SCRIPTS/server-root.sh" ensure >/dev/null ;;
    *) "$SCRIPTS/server-root.sh" mount ;; esac
  PG_BIN="${PG_BIN:-/usr/lib/postgresql/18/bin}"  # inside the root
  [ -x "$SERVER_ROOT_DIR$PG_BIN/pg_ctl" ] || [ "${1:-}" != start ] || die "no $PG_BIN/pg_ctl in the server root $SERVER_ROOT_DIR"
else
  PG_BIN="${PG_BIN:-$CLIENT_BIN}"
  [ -x "$PG_BIN/pg_ctl" ] || die "PostgreSQL is not installed (Debian/Ubuntu: apt-get install postgresql)"
fi

# initdb refuses to run as root: run the server's programs as `postgres` when we are root, on the
# host or inside the root (whose postgres user may have other ids).
as_postgres() {
  if [ "$POSTGRES" = 18 ]; then chroot "$SERVER_ROOT_DIR" runuser -u postgres -- "$@"
  elif [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"
  else "$@"; fi
}
# chown to the server's postgres user (the host's, or the root's).
chown_postgres() {
  if [ "$(id -u)" != 0 ]; then return 0; fi
  if [ "$POSTGRES" = 18 ]; then chroot "$SERVER_ROOT_DIR" chown "$@"; else chown "$@"; fi
}

url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE?sslmode=disable"; }

# Every wait has a time limit (seconds): a server that is half up fails the script, never hangs it.
PG_TIMEOUT="${PG_TIMEOUT:-60}"
PG_FSYNC="${PG_FSYNC:-on}"
case "$PG_FSYNC" in on|off) ;; *) echo "postgres.sh: PG_FSYNC must be on or off, not '$PG_FSYNC'" >&2; exit 64 ;; esac

is_running() { timeout -k 5 30 "$SELF" __as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

answers() { "$CLIENT_BIN/pg_isready" -q -h "$PG_DIR" -p "$PG_PORT" -t 10 >/dev/null 2>&1; }

# The postmaster of this data folder, from its lock file, if that process still exists.
postmaster_pid() {
  local pid
  pid=$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null) || return 0
  # A zombie (killed, not yet reaped by init) is gone for our purposes.
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && echo "$pid"
  return 0
}

# Ends a server that does not answer or stop (a throwaway server: SIGKILL loses nothing we keep).
kill_server() {
  local pid deadline=$((SECONDS + 15))
  pid=$(postmaster_pid)
  if [ -n "$pid" ]; then
    pkill -9 -P "$pid" 2>/dev/null  # its backends, which would keep the shared memory in use
    kill -9 "$pid" 2>/dev/null
  fi
  while [ -n "$(postmaster_pid)" ]; do
    [ $SECONDS -lt $deadline ] || die "the server of $PG_DIR (pid $(postmaster_pid)) did not die after SIGKILL"
    sleep 0.2
  done
  rm -f "$PG_DIR/data/postmaster.pid"
}

# PG_TLS=1: makes the CA, a second CA and the server's certificate once, and prints the server options.
tls_options() {
  local dir="$PG_DIR/tls" key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  if [ ! -f "$dir/server.pem" ]; then
    command -v openssl >/dev/null || die "PG_TLS=1 needs openssl (apt-get install openssl)"
    mkdir -p "$dir"
    for ca in ca other-ca; do
      openssl req -x509 "${key[@]}" -days 7 -subj "/CN=customer-worker test $ca" -keyout "$dir/$ca.key" -out "$dir/$ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null || die "openssl failed ($ca)"
    done
    openssl req "${key[@]}" -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null || die "openssl failed (server key)"
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 7 \
      -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null || die "openssl failed (server certificate)"
    chmod 600 "$dir/server.key"
    chown_postgres -R postgres:postgres "$dir"
  fi
  echo "-c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key"
}

start() {
  # A server or data of the other version (an earlier run with another POSTGRES): replaced.
  if [ -f "$PG_DIR/data/PG_VERSION" ] && [ "$(cat "$PG_DIR/data/PG_VERSION")" != "$POSTGRES" ]; then
    echo "postgres.sh: $PG_DIR holds PostgreSQL $(cat "$PG_DIR/data/PG_VERSION"), not $POSTGRES; replacing it" >&2
    kill_server
    rm -rf "$PG_DIR/data"
  fi
  if is_running && answers && [ "$(psql_ -d postgres -tAc 'SHOW fsync' 2>/dev/null)" != "$PG_FSYNC" ]; then
    echo "postgres.sh: the server in $PG_DIR runs with another fsync setting than PG_FSYNC=$PG_FSYNC; restarting it" >&2
    timeout -k 5 $((PG_TIMEOUT + 10)) "$SELF" __as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t "$PG_TIMEOUT" stop >/dev/null 2>&1 \
      || kill_server
  fi
  if is_running; then
    if answers; then echo "postgres already running: $(url) (PostgreSQL $POSTGRES)"; return 0; fi
    echo "postgres.sh: the server in $PG_DIR runs but does not answer (left by an earlier run?); killing it" >&2
    kill_server
  elif [ -f "$PG_DIR/data/postmaster.pid" ] && [ -z "$(postmaster_pid)" ]; then
    rm -f "$PG_DIR/data/postmaster.pid"  # a crashed server's lock file
  fi
  mkdir -p "$PG_DIR"
  chown_postgres postgres:postgres "$PG_DIR"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
      || die "initdb failed; see $PG_DIR/initdb.log"
  fi
  local tls=""
  if [ "${PG_TLS:-0}" = 1 ]; then tls="$(tls_options)"; fi
  if ! start_server "$tls"; then
    # A throwaway server: data an earlier run left half-written is not worth keeping.
    echo "postgres.sh: the server in $PG_DIR did not start (see $PG_DIR/log); starting it on a fresh data folder" >&2
    kill_server
    rm -rf "$PG_DIR/data"
    as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
      || die "initdb failed; see $PG_DIR/initdb.log"
    start_server "$tls" || die "the server on port $PG_PORT did not start within $PG_TIMEOUT s; see $PG_DIR/log"
  fi
  if ! psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'" | grep -q 1; then
    psql_ -d postgres -qc "CREATE DATABASE $PG_DATABASE" >/dev/null || die "cannot create the database $PG_DATABASE; see $PG_DIR/log"
  fi
  echo "postgres started: $(url) (PostgreSQL $(psql_ -d postgres -tAc 'SHOW server_version' 2>/dev/null || echo "$POSTGRES"))"
}

# Starts the server (with the TLS options in $1, if any) and waits until it answers.
start_server() {
  timeout -k 5 $((PG_TIMEOUT + 10)) "$SELF" __as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t "$PG_TIMEOUT" \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=$PG_FSYNC ${1:-}" start >/dev/null 2>&1 && answers
}

stop() {
  if is_running || [ -n "$(postmaster_pid)" ]; then
    timeout -k 5 $((PG_TIMEOUT + 10)) "$SELF" __as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t "$PG_TIMEOUT" stop >/dev/null 2>&1 \
      || kill_server
    echo "postgres stopped"
  fi
  rm -rf "$PG_DIR"
}

psql_() { PGCONNECT_TIMEOUT=10 timeout -k 5 "$PG_TIMEOUT" "$SELF" __as_client "$CLIENT_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres "$@"; }

case "${1:-}" in
  __as_postgres) shift; as_postgres "$@" ;;  # internal: lets `timeout` bound a call as postgres
  __as_client) shift; if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi ;;  # the host's client, as postgres
  version) if answers; then psql_ -d postgres -tAc 'SHOW server_version'; else echo "$POSTGRES (not running)"; fi ;;
  start) start ;;
  stop) stop ;;
  # A crash for fault tests: an immediate stop (no shutdown checkpoint; clients see their
  # connections drop), data kept; `start` brings the server back.
  crash) timeout -k 5 $((PG_TIMEOUT + 10)) "$SELF" __as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t "$PG_TIMEOUT" stop >/dev/null 2>&1 \
           || die "the server in $PG_DIR did not stop; see $PG_DIR/log" ;;
  status) if is_running; then echo "running: $(url)"; else echo "stopped"; exit 1; fi ;;
  url) url ;;
  tls-dir) echo "$PG_DIR/tls" ;;
  psql) shift; psql_ -d "$PG_DATABASE" "$@" ;;
  *) die "usage: scripts/postgres.sh start|stop|crash|status|version|url|tls-dir|psql ARGS..." ;;
esac
