#!/usr/bin/env bash
# Instructions per command: a figure that does not move with the machine's load (this machine's
# `perf stat` has no hardware counters). The release worker drains a fixed backlog under
# `valgrind --tool=callgrind`; a second run drains a small backlog, and the difference of the two
# totals over the difference of the commands is the cost of one command, start-up, migration and
# shutdown subtracted. Then the functions of the large run by inclusive cost, per command.
#
#   scripts/instructions.sh [--messages N] [--small M] [--bin DIR] [--database URL] [--fair-share-shards S] [--top K] [--keep]
#
#   --messages N   commands of the measured backlog (default 2000)
#   --small M      commands of the backlog subtracted (default 200)
#   --bin DIR      folder holding the release `customer-worker` and `customer-worker-bench`
#                  (default: .build/release; build it with `swift build -c release`)
#   --database URL the workers' database as the bench takes it (default: a fresh SQLite file,
#                  synchronous=FULL); a postgres:// URL counts the worker's instructions only
#   --fair-share-shards S  the worker's FAIR_SHARE_SHARDS (default: the worker's, 8; 0: one queue)
#   --top K        functions listed (default 30)
#   --keep         keep the temporary folder (callgrind files, bench output)
#
# The broker is AMQP_URL, else the private node of BROKER_PORT (scripts/broker.sh; started when
# it is not running). Each run is `customer-worker-bench --messages X --backlog` with the worker
# started through valgrind (the bench's `--worker-binary` is a wrapper that execs it, so the bench
# sees the worker's own process); the bench checks every reply and customer as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

messages=2000 small=200 bin=.build/release database="" top=30 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages=$2; shift 2 ;;
    --small) small=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --database) database=$2; shift 2 ;;
    --top) top=$2; shift 2 ;;
    --fair-share-shards) shards=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "instructions.sh: unknown argument $1 (see the comment at the top of the script)" >&2; exit 64 ;;
  esac
done
[ "$messages" -gt "$small" ] || { echo "instructions.sh: --messages ($messages) must exceed --small ($small)" >&2; exit 64; }
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
bin="$(cd "$bin" && pwd)"
for tool in customer-worker customer-worker-bench; do
  [ -x "$bin/$tool" ] || { echo "instructions.sh: $bin/$tool is missing (swift build -c release)" >&2; exit 1; }
done
if [ -z "${AMQP_URL:-}" ]; then
  scripts/broker.sh status >/dev/null 2>&1 || scripts/broker.sh start >/dev/null
  AMQP_URL="$(scripts/broker.sh url)"
fi
export AMQP_URL

work="$(mktemp -d "${TMPDIR:-/tmp}/instructions.XXXXXX")"
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
# Valgrind 3.19 (Debian 12) cannot read the DWARF 5 debug information Swift 6 writes ("Possibly
# corrupted debuginfo file … Giving up"): the worker runs as a copy without it, its symbol table
# kept (function names, as callgrind_annotate shows them).
objcopy --strip-debug "$bin/customer-worker" "$work/customer-worker"
# Valgrind 3.19 also dies (SIGSEGV inside valgrind, "the 'impossible' happened") when a program
# calls rt_sigsuspend with its mask in read-only memory, as libdispatch's main thread does under
# `dispatchMain()` (its mask is a constant): valgrind writes into the mask. Preloaded, this
# sigsuspend passes a copy of the mask instead; the worker's behaviour is the same.
cat > "$work/sigsuspend.c" <<'C'
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
int sigsuspend(const sigset_t *mask) {
    sigset_t copy = *mask;
    return (int)syscall(SYS_rt_sigsuspend, &copy, _NSIG / 8);
}
C
cc -shared -fPIC -O2 -o "$work/sigsuspend.so" "$work/sigsuspend.c"

# Runs a backlog of $1 commands with the worker under callgrind; prints the instructions counted.
drain() {
  local count=$1 dir="$work/run-$1"
  mkdir -p "$dir"
  cat > "$dir/worker" <<EOF
#!/bin/sh
LD_PRELOAD="$work/sigsuspend.so" exec valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" --log-file="$dir/valgrind.log" "$work/customer-worker" "\$@"
EOF
  chmod +x "$dir/worker"
  local args=(--messages "$count" --backlog --json --reply-timeout 600 --worker-binary "$dir/worker" --log-level warning)
  [ -z "${shards:-}" ] || args+=(--fair-share-shards "$shards")
  [ -z "$database" ] || args+=(--database "$database")
  if ! "$bin/customer-worker-bench" "${args[@]}" > "$dir/bench.json" 2> "$dir/bench.log"; then
    echo "instructions.sh: the bench failed on a backlog of $count (its log: $dir/bench.log)" >&2
    tail -20 "$dir/bench.log" >&2
    keep=1; trap - EXIT
    exit 1
  fi
  sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$dir/callgrind.out" | head -1
}

large=$(drain "$messages")
little=$(drain "$small")
per_command=$(( (large - little) / (messages - small) ))
echo "instructions.sh: $large instructions for $messages commands, $little for $small"
echo "instructions per command: $per_command"

# Functions by their cost per command: each function's instructions in the large run minus the
# small run's, over the commands between them (start-up subtracted as for the total), by
# inclusive cost (the function and what it calls, on every thread of the worker) and by self cost.
annotate() { callgrind_annotate --inclusive="$1" --threshold=100 "$work/run-$2/callgrind.out" 2>/dev/null; }
demangle() { if command -v swift >/dev/null; then swift demangle --simplified --compact 2>/dev/null || cat; else cat; fi; }
for kind in inclusive self; do
  inclusive=yes; [ "$kind" = self ] && inclusive=no
  echo "top $top functions by $kind instructions per command:"
  python3 - "$top" "$((messages - small))" <(annotate $inclusive "$messages") <(annotate $inclusive "$small") <<'PYTHON' | demangle
import re, sys
top, commands = int(sys.argv[1]), int(sys.argv[2])
def costs(path):
    found = {}
    for line in open(path):
        match = re.match(r"^\s*([0-9,]+)\s+(?:\([^)]*\)\s+)?(\S.*?:.*?)(?:\s+\[[^\]]*\])?\s*$", line)
        if match:
            found[match.group(2)] = found.get(match.group(2), 0) + int(match.group(1).replace(",", ""))
    return found
large, small = costs(sys.argv[3]), costs(sys.argv[4])
rows = sorted(((large[name] - small.get(name, 0)) / commands, name) for name in large)
for cost, name in reversed(rows[-top:]):
    print(f"{cost:10.0f}  {name[:180]}")
PYTHON
done
[ "$keep" = 0 ] || echo "instructions.sh: kept $work"
