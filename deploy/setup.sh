#!/bin/sh
# One-shot setup for docker-compose (the `setup` service), safe to run any number of times:
#   1. migrate the database;
#   2. create the demo merchant once, keeping its credentials in the data volume;
#   3. import the plan catalog for it (an import replaces the merchant's catalog: idempotent);
#   4. print the merchant's secret key, for `customer-worker publish --api-key …`.
# Settings: DATABASE_URL (the worker's: SQLite file or postgres:// URL), MERCHANT_FILE, MERCHANT_NAME,
# PLAN_CATALOG.
set -eu

: "${DATABASE_URL:=/data/customers.sqlite}"
: "${MERCHANT_FILE:=/data/demo-merchant.json}"
: "${MERCHANT_NAME:=Demo merchant}"
: "${PLAN_CATALOG:=/deploy/plan-catalog.json}"
export DATABASE_URL

customer-worker migrate

if [ -s "$MERCHANT_FILE" ]; then
    echo "setup: demo merchant already created ($MERCHANT_FILE)"
else
    # The keys are shown only once (only their hashes are stored): keep the JSON, readable by the
    # worker user only, and move it into place only when complete.
    (umask 077 && customer-worker merchants create --name "$MERCHANT_NAME" > "$MERCHANT_FILE.tmp")
    mv "$MERCHANT_FILE.tmp" "$MERCHANT_FILE"
    echo "setup: demo merchant created ($MERCHANT_FILE)"
fi

# {"merchantId":"…","publishableKey":"…","secretKey":"…"} on one line, in any key order.
field() {
    sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" "$MERCHANT_FILE"
}
merchant_id=$(field merchantId)
secret_key=$(field secretKey)
if [ -z "$merchant_id" ] || [ -z "$secret_key" ]; then
    echo "setup: $MERCHANT_FILE has no merchantId/secretKey; delete it to create a new merchant" >&2
    exit 1
fi

customer-worker plans import --merchant "$merchant_id" "$PLAN_CATALOG"

echo "setup: merchant id:         $merchant_id"
echo "setup: merchant secret key: $secret_key"
