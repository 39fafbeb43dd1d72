#!/usr/bin/env bash
# Installs the system packages the project needs, only those missing (Debian/Ubuntu, apt-get).
#   scripts/bootstrap.sh            packages to build and run
#   scripts/bootstrap.sh test       and what the tests need beyond them
# Elsewhere it names what to install and fails.
set -euo pipefail

PACKAGES=(librabbitmq-dev libsqlite3-dev rabbitmq-server postgresql openssl ca-certificates python3-jsonschema python3-yaml docker-compose)
# The bench's --syscalls mode (scripts/test.sh runs it once) counts with perf stat; debootstrap
# builds the root that runs RabbitMQ 4.x and PostgreSQL 18 (scripts/server-root.sh).
[ "${1:-}" = test ] && PACKAGES+=(linux-perf debootstrap)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
install_packages() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap.sh: install these packages (or their equivalents): ${missing[*]}" >&2
    exit 1
  fi
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "bootstrap.sh: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  # The packages' own init scripts must not start the system-wide broker or PostgreSQL cluster: ours
  # are private (scripts/broker.sh, scripts/postgres.sh), on ports of their own.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
[ ${#missing[@]} -eq 0 ] || install_packages

# The tracing test's OTLP receiver (scripts/otlp-receiver.py) decodes spans with the OpenTelemetry
# protobuf types, from PyPI (Debian's python3-protobuf is too old for them).
OTLP_PROTO=opentelemetry-proto==1.45.2
if [ "${1:-}" = test ] && ! python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' >/dev/null 2>&1; then
  echo "bootstrap.sh: installing $OTLP_PROTO (PyPI)"
  python3 -m pip install -q "$OTLP_PROTO" 2>/dev/null || python3 -m pip install -q --break-system-packages "$OTLP_PROTO"
fi
