#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The installed unit as systemd sees it: `meson install` into a scratch root (with the host's
# own units and /bin/kill copied in, so the unit's dependencies resolve), then
# `systemd-analyze verify` (ExecStart= must name the installed binary, whatever the prefix)
# and `systemd-analyze security` (the sandbox's exposure, printed, at most 3.0).
set -euo pipefail
build=${1:?build dir}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
meson install -C "$build" --no-rebuild --quiet --destdir "$root" >/dev/null
mkdir -p "$root/lib/systemd" "$root/bin"
cp -a /lib/systemd/system "$root/lib/systemd/"
cp /bin/kill "$root/bin/"
unit=$(cd "$root" && find . -name safe-migrated.service -path '*systemd/system*' | head -n1)
[ -n "$unit" ] || { echo "no safe-migrated.service installed"; exit 1; }
echo "unit: ${unit#.}"
grep -E '^(ExecStart|ReadOnlyPaths|RuntimeDirectoryMode)=' "$root/$unit"
# The host's systemd knows some syscall names its seccomp library does not: not ours.
filter() { grep -v 'Failed to parse system call' || true; }
out=$(systemd-analyze verify --root="$root" safe-migrated.service 2>&1) || {
  echo "$out" | filter; echo "systemd-analyze verify: FAILED"; exit 1; }
[ -z "$(echo "$out" | filter)" ] || { echo "$out" | filter; echo "verify: warnings"; exit 1; }
echo "systemd-analyze verify: ok"
systemd-analyze security --offline=true --root="$root" --threshold=30 safe-migrated.service \
  2>&1 | filter | grep -E 'Overall exposure'
