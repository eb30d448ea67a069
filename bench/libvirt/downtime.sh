#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Plain against gated `virsh migrate` in one run, on the two-host libvirt rig of tests/libvirt:
# the same USB CD-ROM domain (qtest guest, HLT BIOS, RAM filled so pages really move) created
# and migrated N times with no hook, then N times with the build tree's safe-migrate hook
# (libvirtd restarted in between: it reads hooks when it starts), alternating in blocks.
# Reports per mode the median / p90 of: `virsh create` (hook + filter start-up included), the
# wall time of `virsh migrate`, QEMU's own downtime from `virsh domjobinfo --completed`, and
# the median and p99 round trip of a QMP command through libvirt (bench/libvirt/qmp-latency.c,
# 500 query-status per round), with the gated/plain ratio and what the filter adds.
#   bench/libvirt/downtime.sh [-n ROUNDS] [-b BUILD_DIR]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
rounds=10 build=$top/build
while getopts "n:b:" o; do
  case $o in n) rounds=$OPTARG ;; b) build=$(realpath "$OPTARG") ;; *) exit 2 ;; esac
done
hook=$build/sidecar/libvirt/safe-migrate-libvirt-hook
latency=$build/bench/libvirt-qmp-latency
for f in "$hook" "$latency"; do
  [ -x "$f" ] || { echo "no $f: build first (ninja -C $build)" >&2; exit 1; }
done
rig=$top/tests/libvirt/rig.sh
dir=$(mktemp -d /tmp/smlvbench-XXXXXX)
trap '"$rig" down "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
"$rig" up "$dir" >/dev/null
uri() { echo "qemu:///system?socket=$dir/$1/run/libvirt-sock"; }
vsh() { local h=$1; shift; virsh -q -c "$(uri "$h")" "$@"; }

# The domain's files: a 1 MiB ISO, the HLT BIOS, the XML of the libvirt form.
mkdir -p "$dir/data/iso"
head -c 1048576 /dev/urandom >"$dir/data/iso/DATA.BIN"
genisoimage -quiet -o "$dir/data/cd.iso" "$dir/data/iso"
printf '\xf4%.0s' $(seq 1 65536) >"$dir/data/hlt.bin"
sed -e "s|@NAME@|bench|g; s|@MEMORY@|64|; s|@BIOS@|$dir/data/hlt.bin|" \
  -e "s|@EMULATOR@|/usr/bin/qemu-system-x86_64|; s|@ISO@|$dir/data/cd.iso|" \
  "$top/tests/libvirt/domain-usb-cdrom.xml" >"$dir/data/bench.xml"

now_ms() { date +%s%3N; }
set_hook() { # on|off: link or unlink the hook in both hosts, restart their libvirtd
  local h
  for h in A B; do
    if [ "$1" = on ]; then ln -sfn "$hook" "$dir/$h/etc/hooks/qemu.d/safe-migrate"
    else rm -f "$dir/$h/etc/hooks/qemu.d/safe-migrate"; fi
    "$rig" restart "$dir" "$h" >/dev/null
  done
}
# 48 MiB of guest RAM that is not zero, written through the domain's qtest socket.
fill_ram() {
  python3 - "$dir/A/lib/qtest/bench.sock" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"memset 0x100000 50331648 0x5a\n")
assert s.makefile().readline().startswith("OK")
EOF
}

one_round() { # MODE: appends "create migrate downtime" (ms) "rtt-median rtt-p99" (us) to $dir/MODE
  local t0 t1 t2 down
  t0=$(now_ms)
  vsh A create "$dir/data/bench.xml" >/dev/null
  t1=$(now_ms)
  fill_ram
  local rtt
  rtt=$("$latency" "$(uri A)" bench 500)
  t2=$(now_ms)
  vsh A migrate --live bench "qemu+unix:///system?socket=$dir/B/run/libvirt-sock" \
    --migrateuri tcp://127.0.0.1 --listen-address 127.0.0.1
  local t3
  t3=$(now_ms)
  down=$(vsh B domjobinfo --completed bench | awk '/Total downtime/ {print $3}')
  vsh B destroy bench >/dev/null
  echo "$((t1 - t0)) $((t3 - t2)) ${down:-NA} $rtt" >>"$dir/$1"
}

# Blocks of up to 5 rounds per mode (each switch restarts both libvirtds), the order of the two
# modes alternating from one pair of blocks to the next, so that neither always runs first.
block=$((rounds / 2 < 1 ? 1 : rounds / 2 > 5 ? 5 : rounds / 2))
pair=0
for ((done_ = 0; done_ < rounds; done_ += block)); do
  order="plain gated"
  [ $((pair++ % 2)) = 1 ] && order="gated plain"
  for mode in $order; do
    set_hook "$([ $mode = gated ] && echo on || echo off)"
    for ((i = 0; i < block && done_ + i < rounds; i++)); do one_round $mode; done
  done
done

stats() { # FILE COLUMN -> "median p90"
  awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{v[NR] = $1} END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    p = v[int(0.9 * NR + 0.999)]; printf "%g %g", m, p}'
}
echo "libvirt $(virsh --version), QEMU 7.2 ($(/usr/bin/qemu-system-x86_64 --version | head -1 |
  awk '{print $4}')), $rounds rounds per mode, 64 MiB guest with 48 MiB written"
printf '| %-28s | %-15s | %-15s | %-12s |\n' "median / p90 of rounds" plain gated "ratio (med)"
printf '|%s|%s|%s|%s|\n' ------------------------------ ----------------- ----------------- --------------
col=1
for what in "virsh create, ms" "virsh migrate (wall), ms" "downtime (QEMU), ms" \
  "QMP round trip median, us" "QMP round trip p99, us"; do
  read -r pm pp <<<"$(stats "$dir/plain" $col)"
  read -r gm gp <<<"$(stats "$dir/gated" $col)"
  ratio=$(awk -v a="$gm" -v b="$pm" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
  printf '| %-28s | %-15s | %-15s | %-12s |\n' "$what" "$pm / $pp" "$gm / $gp" "$ratio"
  [ $col = 3 ] && down_added=$(awk -v a="$gm" -v b="$pm" 'BEGIN {printf "%+g", a - b}')
  col=$((col + 1))
done
echo "gated minus plain downtime (medians): ${down_added:-?} ms"
# The QMP rows compare different rounds (and libvirtd restarts), not pairs: the filter's own
# per-command cost is bench/libvirt-relay's (direct and filtered round trips paired).
echo "per-command cost of the filter: build/bench/libvirt-relay --rounds 20000 (paired)"
