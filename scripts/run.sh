#!/usr/bin/env bash
# The run command: on a fresh Debian/Ubuntu machine installs what is missing, builds the worker,
# starts a private broker when none answers at AMQP_URL, migrates the database, seeds a demo
# merchant with the example plan catalog (once; its secret key is printed every time), and runs
# the worker in the foreground. Ctrl-C stops it gracefully.
#
#   AMQP_URL       default amqp://guest:guest@127.0.0.1:5672/%2f
#   DATABASE_URL   default ./data/customers.sqlite (a SQLite file), or postgres://user:password@host:port/db
#   other settings: .build/release/customer-worker run --help
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
swift build -c release --product customer-worker
worker=.build/release/customer-worker

export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
# DATABASE_PATH is the older name of a SQLite DATABASE_URL.
export DATABASE_URL="${DATABASE_URL:-${DATABASE_PATH:-./data/customers.sqlite}}"

# host and port of AMQP_URL, to see whether a broker answers there.
hostport="${AMQP_URL#*://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"; hostport="${hostport%%\?*}"
host="${hostport%%:*}"; port=5672
[[ "$hostport" == *:* ]] && port="${hostport##*:}"
if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  case "$host" in
    127.0.0.1|localhost) echo "run.sh: no broker at $host:$port; starting a private one"; BROKER_PORT="$port" scripts/broker.sh start ;;
    *) echo "run.sh: no broker answers at $host:$port (AMQP_URL)" >&2; exit 1 ;;
  esac
fi

"$worker" migrate >/dev/null
# The demo merchant's keys are kept beside a SQLite file, else in ./data.
case "$DATABASE_URL" in
  postgres://*|postgresql://*) demo=./data/demo-merchant.json; mkdir -p ./data ;;
  *) path="${DATABASE_URL#sqlite:}"; path="${path#//}"; demo="$(dirname "$path")/demo-merchant.json" ;;
esac
if [ ! -s "$demo" ]; then
  "$worker" merchants create --name "Demo merchant" > "$demo.tmp"
  merchant_id="$(sed -n 's/.*"merchantId":"\([^"]*\)".*/\1/p' "$demo.tmp")"
  "$worker" plans import --merchant "$merchant_id" schemas/examples/plan-catalog.example.json
  mv "$demo.tmp" "$demo"
fi
secret_key="$(sed -n 's/.*"secretKey":"\([^"]*\)".*/\1/p' "$demo")"
cat <<MSG
Demo merchant: $demo
Demo secret key: $secret_key
In another terminal:
  $worker publish --api-key $secret_key schemas/examples/create-customer.full.json --wait
MSG

exec "$worker" run
