#!/usr/bin/env bash
# A private PostgreSQL server for development and tests: its own port, data directory and socket
# folder, so it never collides with a system cluster (Debian's package may start one on 5432).
#
#   scripts/postgres.sh start|stop|status|url|tls-dir|psql ARGS...
#
# Settings (environment):
#   PG_PORT   port on 127.0.0.1 (default 5433)
#   PG_DIR    data, log and socket folder (default ${TMPDIR:-/tmp}/customer-worker-postgres-$PG_PORT)
#   PG_BIN    PostgreSQL's programs (default: the newest /usr/lib/postgresql/*/bin)
#   PG_TLS    1: the server also accepts TLS, with a certificate for `localhost` from a throwaway CA
#             that `start` makes with openssl in $PG_DIR/tls (`tls-dir` prints it): ca.pem, and
#             other-ca.pem, a CA that signed nothing the server has (for tests of a wrong CA).
#
# A throwaway server: it trusts local connections (no password) and `stop` deletes its data. `url` prints
# postgres://postgres@127.0.0.1:PORT/customers?sslmode=disable, a database `start` creates.
set -euo pipefail

PG_PORT="${PG_PORT:-5433}"
PG_DIR="${PG_DIR:-${TMPDIR:-/tmp}/customer-worker-postgres-$PG_PORT}"
PG_DATABASE=customers

die() { echo "postgres.sh: $*" >&2; exit 1; }

if [ -z "${PG_BIN:-}" ]; then
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ] || die "PostgreSQL is not installed (Debian/Ubuntu: apt-get install postgresql)"

# initdb refuses to run as root: run the server's programs as `postgres` when we are root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

url() { echo "postgres://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE?sslmode=disable"; }

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
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$dir"; fi
  fi
  echo "-c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key"
}

is_running() { as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; }

start() {
  if is_running; then echo "postgres already running: $(url)"; return 0; fi
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR"; fi
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
      || die "initdb failed; see $PG_DIR/initdb.log"
  fi
  local tls=""
  if [ "${PG_TLS:-0}" = 1 ]; then tls="$(tls_options)"; fi
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on $tls" start >/dev/null \
    || die "the server did not start; see $PG_DIR/log"
  if ! psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'" | grep -q 1; then
    psql_ -d postgres -qc "CREATE DATABASE $PG_DATABASE" >/dev/null
  fi
  echo "postgres started: $(url)"
}

stop() {
  if is_running; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null
    echo "postgres stopped"
  fi
  rm -rf "$PG_DIR"
}

psql_() { as_postgres "$PG_BIN/psql" -h "$PG_DIR" -p "$PG_PORT" -U postgres "$@"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if is_running; then echo "running: $(url)"; else echo "stopped"; exit 1; fi ;;
  url) url ;;
  tls-dir) echo "$PG_DIR/tls" ;;
  psql) shift; psql_ -d "$PG_DATABASE" "$@" ;;
  *) die "usage: scripts/postgres.sh start|stop|status|url|tls-dir|psql ARGS..." ;;
esac
