#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The long real-Linux campaign: migrates the Debian-kernel test guest N times per configuration
# (QEMU 7.2 pc with UHCI, EHCI, ich9 EHCI and xHCI x usb-storage CD-ROM and stick, usb-bot with
# a CD-ROM and with a CD-ROM and a disk; 10.0 pc, 10.0 pc-i440fx-9.0, 10.0 xHCI; plain migrate
# vs safe-migrate) and prints the side-by-side table: destination crashes, guest kernel
# panics, guest-visible errors, holds, downtime, total time.
# Usage: bench/linux/campaign.sh [-n MIGRATIONS (40)] [-b BUILD_DIR (build)] [-o REPORT.jsonl]
#          [-p /linux/QEMU/MACHINE/CONTROLLER/FORM/MODE ...]  (only those configurations)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
n=40 build=$top/build report="" only=()
while getopts "n:b:o:p:" opt; do
  case $opt in
    n) n=$OPTARG ;;
    b) build=$(cd "$OPTARG" && pwd) ;;
    o) report=$OPTARG ;;
    p) only+=(-p "$OPTARG") ;;
    *) sed -n 7,8p "$0" >&2; exit 2 ;;
  esac
done
[ -n "$report" ] || report=$(mktemp /tmp/sm-linux-campaign-XXXXXX.jsonl)
: >"$report"
bash "$top/tests/linux/setup-guest.sh" "$top/.guest" >/dev/null
[ -f "$build/build.ninja" ] || meson setup "$build" "$top" >/dev/null
ninja -C "$build" >/dev/null

export SM_QEMU72=/usr/bin/qemu-system-x86_64
export SM_QEMU10=$top/.qemu10/usr/bin/qemu-system-x86_64 SM_QEMU10_DATADIR=$top/.qemu10/usr/share/qemu
export SM_SOURCE_ROOT=$top SM_BUILD_ROOT=$build SM_LINUX_MIGRATIONS=$n SM_LINUX_REPORT=$report
log=${report%.jsonl}.log
echo "campaign: $n migrations per configuration; TAP log in $log, per-configuration JSON in $report" >&2
status=0
"$build/tests/linux/test-linux" --tap --long "${only[@]}" >"$log" 2>&1 || status=$?
grep -E '^(ok|not ok)' "$log" >&2 || true

python3 - "$report" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    *shape, mode = r["config"].split("/")  # QEMU/machine[/controller/form]/mode
    by.setdefault(tuple(shape), {})[mode] = r
def cell(r, key, fmt="{}"):
    return fmt.format(r[key]) if r else "-"
print(f"accel: {rows[0]['accel'] if rows else '?'}")
head = ("QEMU / machine / controller / form", "mode", "migr.", "migrated", "dest crashes", "wrong bytes (MISMATCH)",
        "kernel I/O errors/resets (KERR lines)", "guest kernel BUG/Oops lines / panics",
        "failed/held out/stalled", "holds", "attempts", "mean downtime ms", "mean total ms", "total vs plain")
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for shape, modes in by.items():
    plain = modes.get("plain")
    for mode in ("plain", "safe-migrate"):
        r = modes.get(mode)
        if not r:
            continue
        ratio = "-"
        if plain and plain["mean_total_ms"] > 0 and r["mean_total_ms"] > 0:
            ratio = f"{r['mean_total_ms'] / plain['mean_total_ms']:.2f}x"
        print("| " + " | ".join([
            " ".join(shape), mode, str(r["migrations"]), str(r["migrated"]),
            f"{r['crashes']}" + (f" (signals {r['crash_signals']})" if r["crash_signals"] else ""),
            str(r["mismatches"]), str(r["kernel_errors"]),
            f"{r.get('guest_oopses', '?')} / {r.get('guest_panics', '?')}",
            f"{r['failed']}/{r['held_out']}/{r['stalled']}",
            str(r["holds"]), str(r["attempts"]),
            f"{r['mean_downtime_ms']:.1f}", f"{r['mean_total_ms']:.0f}", ratio]) + " |")
EOF
exit $status
