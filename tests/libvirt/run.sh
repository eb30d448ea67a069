#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs one libvirt test program (TAP) with the two-host rig of rig.sh around it: brings the
# hosts up in a fresh directory, hands it over in SM_LV_RIG, and always takes them down
# again, whatever the test does (an assertion aborts the program without any cleanup of its
# own). If libvirtd cannot run here, the whole program is one TAP skip saying why.
# Usage: run.sh TEST-PROGRAM [ARGS...]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "1..0 # SKIP $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "libvirt rig needs root (unshare, bind mounts, libvirtd)"
[ -x /usr/sbin/libvirtd ] && command -v virsh >/dev/null ||
  skip "libvirtd/virsh not installed (tests/libvirt/setup.sh)"
getent passwd libvirt-qemu >/dev/null || skip "no libvirt-qemu user (tests/libvirt/setup.sh)"
dir=$(mktemp -d /tmp/smlv-XXXXXX)
cleanup() {
  "$here/rig.sh" down "$dir" >/dev/null 2>&1
  if [ -n "${SM_KEEP_TMP:-}" ]; then echo "# rig kept in $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT
# meson's timeout ends with SIGKILL of the whole process group, which no trap survives: a
# watcher in a session of its own takes the rig down once this script is gone, however.
setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
  "$2/rig.sh" down "$3"; [ -n "$4" ] || rm -rf "$3"' watcher $$ "$here" "$dir" \
  "${SM_KEEP_TMP:-}" </dev/null >/dev/null 2>&1 &
if ! "$here/rig.sh" up "$dir" >"$dir/rig-up.log" 2>&1; then
  why=$(grep -m1 -iE "error|cannot|failed|denied" "$dir/rig-up.log" "$dir"/*/daemon.out \
    "$dir"/*/log/libvirtd.log 2>/dev/null | head -n1 | cut -c1-200)
  skip "libvirtd cannot run here: ${why:-see $dir/rig-up.log}"
fi
SM_LV_RIG=$dir "$@"
