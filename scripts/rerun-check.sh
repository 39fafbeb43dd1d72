#!/usr/bin/env bash
# Proves that the test command recovers from a crashed run with no manual clean-up:
#   1. starts the servers and runs the worker-process tests, and kills the test process
#      (SIGKILL, no clean-up) once they have started worker processes;
#   2. requires those workers to die with it (they must not consume the next run's commands);
#   3. leaves what such a crash leaves: the servers running, and a cluster node with its app
#      stopped (as the cluster test leaves it mid-test);
#   4. runs scripts/test.sh, which must pass.
#
#   scripts/rerun-check.sh          all four steps
#   scripts/rerun-check.sh crash    steps 1-3 only (CI then runs scripts/test.sh itself)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "rerun-check.sh: $*" >&2; exit 1; }

scripts/bootstrap.sh test
export BROKER_PORT="${BROKER_PORT:-5673}" PG_PORT="${PG_PORT:-5433}"
export CI="${CI:-true}"

swift build --build-tests
scripts/broker.sh fresh
scripts/postgres.sh start
scripts/broker.sh cluster start
export AMQP_URL="$(scripts/broker.sh url)" POSTGRES_TEST_URL="$(scripts/postgres.sh url)"
export AMQP_CLUSTER_URL="$(scripts/broker.sh cluster url)" CONFORMANCE_OUTPUT_DIR="$(mktemp -d)"

marked_workers() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qx "CUSTOMER_WORKER_TEST_CHILD=$BROKER_PORT" && echo "$pid"
  done
  return 0
}

log="$(mktemp)"
# Its own process group, so the kill takes swift-test and the test runner it starts together.
setsid swift test --skip-build --filter 'WorkerProcessTests' >"$log" 2>&1 &
leader=$!
deadline=$((SECONDS + 300))
until [ -n "$(marked_workers)" ]; do
  kill -0 "$leader" 2>/dev/null || { cat "$log" >&2; die "the tests ended before starting a worker process"; }
  [ $SECONDS -lt $deadline ] || { kill -9 -- -"$leader"; die "no worker process within 300 s; log: $log"; }
  sleep 0.5
done
# Only the process that started the workers (the test runner), so that nothing but the
# parent-death signal can end them; then the rest of the run's process group. A worker can end
# between two listings (the tests kill some themselves): ask each one found until one answers.
runner=""
until [ -n "$runner" ]; do
  for pid in $(marked_workers); do
    runner=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$runner" ] && break
  done
  [ -n "$runner" ] && break
  kill -0 "$leader" 2>/dev/null || { cat "$log" >&2; die "the tests ended before their worker processes could be found"; }
  [ $SECONDS -lt $deadline ] || { kill -9 -- -"$leader"; die "no worker process within 300 s; log: $log"; }
  sleep 0.2
done
workers=$(marked_workers | tr '\n' ' ')
kill -9 "$runner"
echo "rerun-check.sh: killed the test runner (pid $runner, SIGKILL) while its workers ($workers) ran"

# The workers die with the test process (parent-death signal), not by anyone's clean-up.
deadline=$((SECONDS + 20))
while [ -n "$(marked_workers)" ]; do
  [ $SECONDS -lt $deadline ] || die "worker processes outlived the killed test run: $(marked_workers | tr '\n' ' ')"
  sleep 0.2
done
echo "rerun-check.sh: its worker processes died with it"
kill -9 -- -"$leader" 2>/dev/null || true
wait "$leader" 2>/dev/null || true

# What a crash in the middle of the cluster test leaves: one node with its app stopped.
node_port=$((BROKER_PORT + 11))
BROKER_PORT=$node_port BROKER_DIR="${TMPDIR:-/tmp}/customer-worker-broker-$node_port" \
  BROKER_NODE="customer-worker-$node_port@localhost" scripts/broker.sh ctl stop_app >/dev/null
echo "rerun-check.sh: left the servers running and a cluster node with its app stopped"
rm -rf "$CONFORMANCE_OUTPUT_DIR" "$log"

[ "${1:-}" = crash ] && exit 0
exec scripts/test.sh
