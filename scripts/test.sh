#!/usr/bin/env bash
# The test command: installs what is missing, starts a private broker and a private PostgreSQL
# server, builds, runs every test against them (the store and worker suites run on SQLite and on
# PostgreSQL), validates the contract and the replies the tests produced, and stops both servers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh test

# Two passes over the same build, each on servers of its own ports (so what one pass leaves never
# meets the other):
#   pass 1: RabbitMQ 3.10 (Debian 12's) and PostgreSQL 15: every test, the memory test, the bench;
#   pass 2: RabbitMQ 4.x and PostgreSQL 18 (Debian unstable's, from the root scripts/server-root.sh
#           builds once and reuses): every test but the memory test (it measures this process, not
#           a server) and the bench (it measures, it does not check a server's behaviour).
# Each broker version thus runs the AMQP, worker, recovery, dead-letter and cluster suites, and each
# PostgreSQL version the store and worker suites; pairing them (3.10 with 15, 4.x with 18) instead
# of crossing them keeps the cold run near 25 minutes (docs/operations.md, "Supported versions").
PASS1_BROKER_PORT="${BROKER_PORT:-5673}"
PASS1_PG_PORT="${PG_PORT:-5433}"
PASS2_BROKER_PORT="${BROKER4_PORT:-$((PASS1_BROKER_PORT + 20))}"
PASS2_PG_PORT="${PG18_PORT:-$((PASS1_PG_PORT + 10))}"
export BROKER_PORT PG_PORT BROKER_EXTRA_PORT BROKER_OUTAGE_PORT PG_TLS_PORT PG_OUTAGE_PORT RABBITMQ POSTGRES

# Sets the ports and versions of one pass: $1 broker port, $2 PostgreSQL port, $3 RabbitMQ, $4 PostgreSQL.
use_pass() {
  BROKER_PORT=$1 PG_PORT=$2 RABBITMQ=$3 POSTGRES=$4
  # The broker-restart test starts (and stops) a second node on the next port.
  BROKER_EXTRA_PORT=$((BROKER_PORT + 1))
  # The outage tests lower the acknowledgement timeout (broker-wide) on a node of their own
  # (+ 2 is the main node's TLS port), and crash a PostgreSQL server of their own.
  BROKER_OUTAGE_PORT=$((BROKER_PORT + 4))
  PG_OUTAGE_PORT=$((PG_PORT + 3))
  # The TLS tests' PostgreSQL (PG_TLS=1): far from PG_PORT, so sessions on neighbouring ports never meet.
  PG_TLS_PORT=$((PG_PORT + 100))
}
# The servers the tests start themselves (the restart and outage suites' nodes, the outage
# suite's PostgreSQL): stopped and wiped, so what a killed run left never meets the next one.
stop_test_started_servers() {
  local port
  for port in $BROKER_EXTRA_PORT $BROKER_OUTAGE_PORT; do
    BROKER_PORT=$port scripts/broker.sh stop >/dev/null 2>&1
    rm -rf "${TMPDIR:-/tmp}/customer-worker-broker-$port/mnesia"
  done
  PG_PORT=$PG_OUTAGE_PORT PG_DIR="${TMPDIR:-/tmp}/customer-worker-postgres-outage-$PG_OUTAGE_PORT" scripts/postgres.sh stop >/dev/null 2>&1
  return 0
}

# Worker processes a test or the benchmark started carry CUSTOMER_WORKER_TEST_CHILD=<broker port>.
# They die with their parent; this also ends any that an earlier run, killed before its clean-up,
# left consuming from this pass's broker (other runs, on other brokers, are left alone).
kill_test_children() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qx "CUSTOMER_WORKER_TEST_CHILD=$BROKER_PORT" && kill -9 "$pid" 2>/dev/null
  done
  return 0
}
# Stops the servers of the pass whose settings are in force.
stop_pass_servers() {
  kill_test_children
  scripts/broker.sh stop >/dev/null 2>&1
  stop_test_started_servers
  scripts/broker.sh cluster stop >/dev/null 2>&1
  scripts/postgres.sh stop >/dev/null 2>&1
  PG_PORT=$PG_TLS_PORT scripts/postgres.sh stop >/dev/null 2>&1
  return 0
}
stop_servers() {
  use_pass "$PASS1_BROKER_PORT" "$PASS1_PG_PORT" 3.10 15; stop_pass_servers
  use_pass "$PASS2_BROKER_PORT" "$PASS2_PG_PORT" 4 18; stop_pass_servers
  return 0
}
trap stop_servers EXIT
trap 'exit 130' INT TERM  # so that a stopped run still runs the EXIT trap
# The tests' PostgreSQL servers run without fsync: every DROP DATABASE (one per test) forces an
# immediate checkpoint, and with the parallel suite's SQLite and broker fsyncs on the same disk one
# was seen spending 16 s in fsync (PostgreSQL 18's log: `sync=16.452 s`) while new connections
# waited, failing three tests' set-up ("no connection to the server within 10 s"). Without fsync a
# server killed with `pg_ctl -m immediate` (the crash tests) still recovers everything committed
# (the kernel keeps what was written); only a machine crash would lose it, which no test makes.
# The benchmarks and scripts/run.sh keep fsync on (postgres.sh's default).
export PG_FSYNC=off

# Starts the servers of the pass whose settings are in force and exports their URLs.
start_pass_servers() {
  kill_test_children
  # Nodes and a server an earlier run's restart and outage tests left running, and their data.
  stop_test_started_servers
  # The broker starts empty (an earlier run's node, in whatever state, is killed, and the queues
  # runs left behind are deleted); PostgreSQL's start reuses a server of its own name that answers,
  # and restarts (or replaces) one that an earlier run left half up (each test makes a database of
  # its own there). Each fails within its time limit naming the server and its log.
  scripts/broker.sh fresh
  scripts/postgres.sh start
  # Each store or worker test on PostgreSQL creates a database of its own on this server.
  export POSTGRES_TEST_URL="$(scripts/postgres.sh url)"
  # The TLS tests' server (sslmode, right and wrong CA, host names), with a throwaway CA.
  PG_PORT=$PG_TLS_PORT PG_TLS=1 scripts/postgres.sh start
  export POSTGRES_TLS_URL="$(PG_PORT=$PG_TLS_PORT scripts/postgres.sh url)"
  export POSTGRES_TLS_DIR="$(PG_PORT=$PG_TLS_PORT scripts/postgres.sh tls-dir)"
  export AMQP_URL="$(scripts/broker.sh url)"
  # The cluster test's three nodes (ports BROKER_PORT + 10 … + 12).
  scripts/broker.sh cluster start
  export AMQP_CLUSTER_URL="$(scripts/broker.sh cluster url)"
  echo "test.sh: servers of this pass: RabbitMQ $(scripts/broker.sh version) (port $BROKER_PORT, cluster $((BROKER_PORT + 10))-$((BROKER_PORT + 12))), PostgreSQL $(scripts/postgres.sh version) (port $PG_PORT)"
}

# Replies produced by the tests land here and are checked against schemas/ afterwards.
CONFORMANCE_OUTPUT_DIR="$(mktemp -d)"
export CONFORMANCE_OUTPUT_DIR

# The compose file and its PostgreSQL variant must stay valid (there is no Docker engine to run them here).
docker-compose config -q
docker-compose -f docker-compose.yml -f docker-compose.postgres.yml config -q

# The newer servers' root (built once, a few minutes; reused by every later run on this machine),
# while nothing else runs.
scripts/server-root.sh ensure >/dev/null
swift build --build-tests
test_log="$CONFORMANCE_OUTPUT_DIR.swift-test.log"
# At most this many tests at once (swift-testing's own limit; unbounded by default). Started all
# at once, the ~70 suites' set-ups (each fixture declares a dozen quorum queues under fair share
# and makes a database) came in one burst on two cores: a 3.10 node then elected no leader for
# new queues within its 5 s (`cluster_not_formed`) and new PostgreSQL connections waited over
# 10 s, failing nine tests' set-up in one CI run. Most tests wait on servers, not the CPU, so a
# bound this size costs little time.
TEST_PARALLELISM="${TEST_PARALLELISM:-12}"
swift_test=(swift test --skip-build --experimental-maximum-parallelization-width "$TEST_PARALLELISM")
memory_test=memoryStaysFlatOverALongRun

use_pass "$PASS1_BROKER_PORT" "$PASS1_PG_PORT" 3.10 15
# The other pass's servers, left by an earlier run, would only take CPU from this one.
(use_pass "$PASS2_BROKER_PORT" "$PASS2_PG_PORT" 4 18; stop_pass_servers)
start_pass_servers
pass1="RabbitMQ $(scripts/broker.sh version), PostgreSQL $(scripts/postgres.sh version)"
echo "test.sh: pass 1 of 2: $pass1"
# Every test, in two runs: the memory test measures this process's RSS, so it runs alone, after
# the others (which would otherwise grow the same process beside it).
"${swift_test[@]}" --skip "$memory_test" 2>&1 | tee "$test_log"
"${swift_test[@]}" --filter "$memory_test" 2>&1 | tee -a "$test_log"

# The benchmark end to end, small (a smoke test: it checks replies and customers, not timings).
# Its workers carry the test marker, so a run killed here leaves nothing the next one misses.
bench=(env "CUSTOMER_WORKER_TEST_CHILD=$BROKER_PORT" "$(swift build --show-bin-path)/customer-worker-bench")
"${bench[@]}" --messages 500 --replicas 2 --duplicates 10 --log-level warning > /dev/null
"${bench[@]}" --messages 500 --backlog --downstream-queues 1 --syscalls --log-level warning > /dev/null
# The same on PostgreSQL.
"${bench[@]}" --messages 500 --replicas 2 --duplicates 10 --log-level warning \
  --database "$POSTGRES_TEST_URL" > /dev/null
# Tenants mode (fair share, then the single queue): a heavy merchant's flood beside a light one.
"${bench[@]}" --tenants --messages 1000 --light-rate 20 --unloaded-seconds 1 --log-level warning > /dev/null

stop_pass_servers
use_pass "$PASS2_BROKER_PORT" "$PASS2_PG_PORT" 4 18
start_pass_servers
pass2="RabbitMQ $(scripts/broker.sh version), PostgreSQL $(scripts/postgres.sh version)"
echo "test.sh: pass 2 of 2: $pass2"
"${swift_test[@]}" --skip "$memory_test" 2>&1 | tee -a "$test_log"
stop_pass_servers
tests=0
for count in $(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .* passed.*/\1/p' "$test_log"); do
  tests=$((tests + count))
done
[ "$tests" -gt 1 ] || { echo "test.sh: swift test reported no passing run" >&2; exit 1; }

# Debian's interpreter, whose python3-jsonschema bootstrap.sh installed.
python=/usr/bin/python3
[ -x "$python" ] || python=python3
"$python" scripts/check-schemas.py "$CONFORMANCE_OUTPUT_DIR"
rm -rf "$CONFORMANCE_OUTPUT_DIR" "$test_log"
echo "test.sh: pass 1 ran on $pass1; pass 2 on $pass2"
echo "tests: $tests passed, 0 failed"
