#!/usr/bin/env bash
# The test command: installs what is missing, starts a private broker and a private PostgreSQL
# server, builds, runs every test against them (the store and worker suites run on SQLite and on
# PostgreSQL), validates the contract and the replies the tests produced, and stops both servers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

export BROKER_PORT="${BROKER_PORT:-5673}"
export PG_PORT="${PG_PORT:-5433}"
# The TLS tests' PostgreSQL (PG_TLS=1): far from PG_PORT, so sessions on neighbouring ports never meet.
export PG_TLS_PORT="${PG_TLS_PORT:-$((PG_PORT + 100))}"
scripts/broker.sh start
trap 'scripts/broker.sh stop >/dev/null; scripts/postgres.sh stop >/dev/null 2>&1; PG_PORT=$PG_TLS_PORT scripts/postgres.sh stop >/dev/null 2>&1; [ -n "${BROKER_EXTRA_PORT:-}" ] && BROKER_PORT=$BROKER_EXTRA_PORT scripts/broker.sh stop >/dev/null 2>&1; scripts/broker.sh cluster stop >/dev/null 2>&1 || true' EXIT
scripts/postgres.sh start
# Each store or worker test on PostgreSQL creates a database of its own on this server.
export POSTGRES_TEST_URL="$(scripts/postgres.sh url)"
# The TLS tests' server (sslmode, right and wrong CA, host names), with a throwaway CA.
PG_PORT=$PG_TLS_PORT PG_TLS=1 scripts/postgres.sh start
export POSTGRES_TLS_URL="$(PG_PORT=$PG_TLS_PORT scripts/postgres.sh url)"
export POSTGRES_TLS_DIR="$(PG_PORT=$PG_TLS_PORT scripts/postgres.sh tls-dir)"
# The broker-restart test starts (and stops) a second node on the next port.
export BROKER_EXTRA_PORT=$((BROKER_PORT + 1))
export AMQP_URL="$(scripts/broker.sh url)"
# The cluster test's three nodes (ports BROKER_PORT + 10 … + 12).
scripts/broker.sh cluster start
export AMQP_CLUSTER_URL="$(scripts/broker.sh cluster url)"

# Replies produced by the tests land here and are checked against schemas/ afterwards.
CONFORMANCE_OUTPUT_DIR="$(mktemp -d)"
export CONFORMANCE_OUTPUT_DIR

# The compose file and its PostgreSQL variant must stay valid (there is no Docker engine to run them here).
docker-compose config -q
docker-compose -f docker-compose.yml -f docker-compose.postgres.yml config -q

swift build --build-tests
# Every test, in two runs: the memory test measures this process's RSS, so it runs alone, after
# the others (which would otherwise grow the same process beside it).
test_log="$CONFORMANCE_OUTPUT_DIR.swift-test.log"
memory_test=memoryStaysFlatOverALongRun
swift test --skip-build --skip "$memory_test" 2>&1 | tee "$test_log"
swift test --skip-build --filter "$memory_test" 2>&1 | tee -a "$test_log"
tests=0
for count in $(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .* passed.*/\1/p' "$test_log"); do
  tests=$((tests + count))
done
[ "$tests" -gt 1 ] || { echo "test.sh: swift test reported no passing run" >&2; exit 1; }

# The benchmark end to end, small (a smoke test: it checks replies and customers, not timings).
"$(swift build --show-bin-path)/customer-worker" bench --messages 500 --replicas 2 --duplicates 10 --log-level warning > /dev/null
"$(swift build --show-bin-path)/customer-worker" bench --messages 500 --backlog --log-level warning > /dev/null
# The same on PostgreSQL.
"$(swift build --show-bin-path)/customer-worker" bench --messages 500 --replicas 2 --duplicates 10 --log-level warning \
  --database "$POSTGRES_TEST_URL" > /dev/null

# Debian's interpreter, whose python3-jsonschema bootstrap.sh installed.
python=/usr/bin/python3
[ -x "$python" ] || python=python3
"$python" scripts/check-schemas.py "$CONFORMANCE_OUTPUT_DIR"
rm -rf "$CONFORMANCE_OUTPUT_DIR" "$test_log"
echo "tests: $tests passed, 0 failed"
