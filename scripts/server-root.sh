#!/usr/bin/env bash
# A Debian unstable (sid) root that runs the servers Debian 12 cannot: RabbitMQ 4.x and
# PostgreSQL 18. Their packages need a newer glibc than Debian 12's (sid's Erlang needs glibc
# 2.43; Debian 12 has 2.36), so they live in a root of their own and run there with chroot,
# listening on the host's loopback like any server.
#
#   scripts/server-root.sh ensure    build the root once (about 4 min), then reuse it; prints its path
#   scripts/server-root.sh path      prints the root's path (built or not)
#   scripts/server-root.sh mount     mounts a built root's folders again (after a reboot); builds nothing
#   scripts/server-root.sh run CMD…  runs CMD inside the root (ensuring it first)
#   scripts/server-root.sh versions  the servers' versions in the root
#   scripts/server-root.sh remove    unmounts and deletes the root
#
# Settings (environment):
#   SERVER_ROOT   where the root lives (default /var/cache/customer-worker/sid-root): outside any
#                 clone, so every clone, CI run and session on this machine reuses it
#
# The root is reused only when it is whole: the last step of a build writes a stamp naming the
# packages it installed; a build that was killed half-way leaves no stamp, and the next `ensure`
# starts it again from scratch. Builds are serialised with a lock, so the three nodes of a
# cluster starting at once build it once.
#
# The mirror is the one apt on this machine uses (its sources), never a host written here.
# Inside the root: proc, sys and dev are mounted, and the host's temporary folder
# (${TMPDIR:-/tmp}) is bind-mounted at the same path, so a server's data, sockets, certificates
# and logs have one path inside and outside (scripts/broker.sh and scripts/postgres.sh keep theirs
# there). `policy-rc.d` keeps the packages' own scripts from starting a default node, an epmd or
# a PostgreSQL cluster while they install.
set -euo pipefail

SERVER_ROOT="${SERVER_ROOT:-/var/cache/customer-worker/sid-root}"
SUITE=sid
# What the newer servers need; the stamp names them, so a change here rebuilds the root.
ROOT_PACKAGES=(rabbitmq-server postgresql-18 procps)
STAMP="$SERVER_ROOT/.customer-worker-root"
SHARED_TMP="$(readlink -f "${TMPDIR:-/tmp}")"

die() { echo "server-root.sh: $*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The Debian mirror apt uses here: the first URI of a deb822 source or a one-line source that
# serves Debian itself (not its security archive).
debian_mirror() {
  local file uri
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$file")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) { print $i; exit } else break } }' "$file")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  return 1
}

stamp_text() { echo "suite=$SUITE packages=${ROOT_PACKAGES[*]}"; }

is_built() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_text)" ]; }

# Mounts what servers in the root need; each only once (the checks make it safe to repeat).
mount_all() {
  local point
  point="$SERVER_ROOT/proc"; mountpoint -q "$point" || as_root mount -t proc proc "$point"
  point="$SERVER_ROOT/sys"; mountpoint -q "$point" || as_root mount -t sysfs sysfs "$point"
  point="$SERVER_ROOT/dev"; mountpoint -q "$point" || as_root mount --rbind /dev "$point"
  point="$SERVER_ROOT$SHARED_TMP"
  mkdir -p "$point"
  mountpoint -q "$point" || as_root mount --bind "$SHARED_TMP" "$point"
}

unmount_all() {
  local point
  for point in "$SERVER_ROOT$SHARED_TMP" "$SERVER_ROOT/dev" "$SERVER_ROOT/sys" "$SERVER_ROOT/proc"; do
    mountpoint -q "$point" 2>/dev/null && as_root umount -l "$point"
  done
  # Deleting the root with the host's /tmp or /dev still mounted inside would delete those.
  if awk -v root="$SERVER_ROOT/" 'index($2, root) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    die "something is still mounted under $SERVER_ROOT (see /proc/mounts); not touching it"
  fi
}

remove_root() {
  unmount_all
  as_root rm -rf "$SERVER_ROOT"
}

build() {
  local mirror log
  command -v debootstrap >/dev/null || {
    echo "server-root.sh: installing debootstrap" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  mirror=$(debian_mirror) || die "no Debian mirror in apt's sources (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)"
  # A half-built root (a killed build, an old package list) is removed and built again.
  remove_root
  mkdir -p "$(dirname "$SERVER_ROOT")"
  log="$SERVER_ROOT.build.log"
  echo "server-root.sh: building a Debian $SUITE root in $SERVER_ROOT (a few minutes, once; log: $log)" >&2
  as_root timeout -k 10 900 debootstrap --variant=minbase "$SUITE" "$SERVER_ROOT" "$mirror" >"$log" 2>&1 \
    || die "debootstrap $SUITE failed; see $log"
  # The packages' own scripts must start nothing: the servers are started by our scripts only.
  printf '#!/bin/sh\nexit 101\n' > "$SERVER_ROOT/usr/sbin/policy-rc.d"
  chmod 755 "$SERVER_ROOT/usr/sbin/policy-rc.d"
  # Without localhost, epmd fails (nxdomain) and a RabbitMQ node dies at once.
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$SERVER_ROOT/etc/hosts"
  mount_all
  timeout -k 10 900 chroot "$SERVER_ROOT" env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
    apt-get install -y -qq --no-install-recommends "${ROOT_PACKAGES[@]}" >>"$log" 2>&1 \
    || die "installing ${ROOT_PACKAGES[*]} in the $SUITE root failed; see $log"
  chroot "$SERVER_ROOT" apt-get clean >/dev/null 2>&1 || true
  stamp_text > "$STAMP"
  echo "server-root.sh: root ready: $(versions | tr '\n' ' ')" >&2
}

ensure() {
  mkdir -p "$(dirname "$SERVER_ROOT")"
  # One build at a time; whoever waited finds the root built.
  exec 9>"$SERVER_ROOT.lock"
  flock -w 1200 9 || die "waited 20 min for another build of $SERVER_ROOT"
  is_built || build
  mount_all
  exec 9>&-
}

versions() {
  echo "rabbitmq-server $(chroot "$SERVER_ROOT" dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null)"
  echo "erlang $(chroot "$SERVER_ROOT" dpkg-query -W -f='${Version}' erlang-base 2>/dev/null)"
  echo "postgresql-18 $(chroot "$SERVER_ROOT" dpkg-query -W -f='${Version}' postgresql-18 2>/dev/null)"
}

case "${1:-}" in
  ensure) ensure; echo "$SERVER_ROOT" ;;
  path) echo "$SERVER_ROOT" ;;
  mount) if is_built; then mount_all; fi ;;  # a built root only (after a reboot); builds nothing
  run) shift; ensure; exec chroot "$SERVER_ROOT" "$@" ;;
  versions) is_built || die "no root built at $SERVER_ROOT (scripts/server-root.sh ensure)"; versions ;;
  remove) remove_root; echo "removed $SERVER_ROOT" ;;
  *) echo "usage: $0 ensure|path|run CMD...|versions|remove" >&2; exit 2 ;;
esac
