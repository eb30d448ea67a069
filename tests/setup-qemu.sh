#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Installs the two QEMUs the tests need: 7.2 from the distribution, 10.x unpacked from the
# bookworm-backports suite of this machine's own configured mirror into a private prefix.
# Usage: tests/setup-qemu.sh [PREFIX]   (default: .qemu10 under the source tree)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$top/.qemu10}
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

if ! command -v qemu-system-x86_64 >/dev/null; then
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 >/dev/null
fi

if [ -x "$prefix/usr/bin/qemu-system-x86_64" ]; then
  echo "qemu 10 already in $prefix"; exit 0
fi

# The mirror is whatever the machine's apt configuration says for the main archive (never a
# host name written here): deb822 files first, then one-line sources.list entries.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "setup-qemu: no Debian mirror found in the apt configuration" >&2; exit 1; }

# A private apt state so the system's sources and package lists are left alone.
state=$(mktemp -d); trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc"
echo "deb $mirror bookworm-backports main" > "$state/etc/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$state/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o "APT::Get::List-Cleanup=0"
          -o "Debug::NoLocking=1")
apt-get "${apt_opts[@]}" -q update >/dev/null
# Pin the three packages to backports: the private list holds only that suite.
pkgs=(qemu-system-x86 qemu-system-common qemu-system-data)
mkdir -p "$state/debs"
(cd "$state/debs" && apt-get "${apt_opts[@]}" -q download "${pkgs[@]}" >/dev/null)
mkdir -p "$prefix"
for d in "$state"/debs/*.deb; do dpkg -x "$d" "$prefix"; done
"$prefix/usr/bin/qemu-system-x86_64" -L "$prefix/usr/share/qemu" --version | head -1
