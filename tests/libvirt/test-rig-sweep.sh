#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# `rig.sh down` kills only its own host's processes. The kernel hands a freed mount
# namespace's id to the next namespace made at once; a sweep that went on by the recorded id
# after the anchor died SIGKILLed whatever unshared next (another rig's QEMU 10, whose wrapper
# makes a namespace: libvirt then saw its destination domain "crash" right after a successful
# virsh migrate). A host with a real anchor is taken down while a bystander unshares a mount
# namespace the moment the anchor is gone; the bystander must survive. TAP.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
echo "1..1"
[ "$(id -u)" = 0 ] && command -v unshare >/dev/null || {
  echo "ok 1 # SKIP needs root and unshare"
  exit 0
}
dir=$(mktemp -d /tmp/smrigsweep-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
alive() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
mkdir -p "$dir/A/run"
# The anchor as rig.sh makes it: a process of its own mount namespace, not our child.
(setsid unshare --mount --propagation private sleep infinity </dev/null >/dev/null 2>&1 &
  echo $! >"$dir/A/anchor.pid")
anchor=$(cat "$dir/A/anchor.pid")
for _ in $(seq 1 100); do
  ns=$(readlink "/proc/$anchor/ns/mnt" 2>/dev/null) && [ "$ns" != "$(readlink /proc/self/ns/mnt)" ] &&
    break
  sleep 0.02
done
echo "$ns" >"$dir/A/mntns"
touch "$dir/A/run/.anchor"
# The bystander: a new mount namespace as soon as the anchor has left its own (even if the
# anchor is not reaped yet).
(while readlink "/proc/$anchor/ns/mnt" >/dev/null 2>&1; do sleep 0.002; done
  exec unshare --mount --propagation private sleep 30) &
bystander=$!
disown "$bystander" # its end is no news
pids+=("$anchor" "$bystander")
"$here/rig.sh" down "$dir" >/dev/null 2>&1
for _ in $(seq 1 100); do # until the bystander has its namespace
  [ "$(readlink "/proc/$bystander/ns/mnt" 2>/dev/null)" != "$(readlink /proc/self/ns/mnt)" ] && break
  sleep 0.02
done
sleep 0.3 # a sweep by the stale id would have reached it by now
if alive "$anchor"; then
  echo "not ok 1 rig.sh down left the anchor running"
elif ! alive "$bystander"; then
  echo "not ok 1 rig.sh down killed a process of another namespace (its own was $ns)"
else
  echo "ok 1 rig.sh down kills its host and leaves a namespace made after it alone"
fi
