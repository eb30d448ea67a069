#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The Debian package end to end: builds the .debs from a copy of the tree
# (dpkg-buildpackage -us -uc -b), runs lintian (no errors allowed), then "installs" them in a
# private mount namespace (the package's /usr, /etc and /lib overlaid on the machine's, so
# the machine itself is not touched) and checks what a user gets: --version of the three
# binaries (through the package's RUNPATH to its private libraries), the man pages, the
# completion, and the installed unit with systemd-analyze verify and security.
# Usage: check-deb.sh [OUTDIR]  (keeps the .debs there; default: a temporary directory)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
missing=()
for p in debhelper lintian dpkg-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] ||
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=${1:-$work/out}
mkdir -p "$out" "$work/src"
# The working tree as it is (tracked and new files), without build directories.
(cd "$top" && git ls-files -co --exclude-standard -z | grep -zv '^\.qemu10\|^\.guest' |
  xargs -0 cp --parents -t "$work/src")
start=$(date +%s)
(cd "$work/src" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
  { tail -n 40 "$work/build.log"; echo "dpkg-buildpackage: FAILED"; exit 1; }
echo "dpkg-buildpackage: ok in $(($(date +%s) - start))s"
cp "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out/"
debs=("$out"/safe-migrate_*.deb)
lintian --fail-on error --suppress-tags-from-file /dev/null "$out"/*.changes 2>&1 | tee "$work/lintian.log"
echo "lintian: no errors"
root=$work/root
for d in "${debs[@]}"; do dpkg-deb -x "$d" "$root"; done
dpkg-deb -c "${debs[0]}" | awk '{print $6}' |
  grep -E 'bin/|\.service$|man[158]/|completions/|etc/|lib/.*/safe-migrate/' | sed 's/^\./  /'
# Overlay the package's trees on the machine's, in a mount namespace of our own.
unshare -m bash -eu -c '
  root=$1
  for d in usr etc lib; do
    [ -d "$root/$d" ] || continue
    mount -t overlay overlay -o "lowerdir=$root/$d:/$d" "/$d"
  done
  safe-migrate --version
  /usr/sbin/safe-migrated --version
  qmp-call --version
  for p in safe-migrate safe-migrated safe-migrate.conf qmp-call; do
    MANWIDTH=80 man "$p" 2>&1 >/dev/null | grep . && exit 1
  done
  echo "man pages: ok"
  source /usr/share/bash-completion/completions/safe-migrate
  COMP_WORDS=(safe-migrate mi); COMP_CWORD=1; _safe_migrate
  [ "${COMPREPLY[*]}" = migrate ] && echo "completion: ok"
  [ -d /etc/safe-migrate/vms.d ] && echo "config: /etc/safe-migrate (vms.d present)"
  # defaults.conf of the configured directory applies without --vm or --config-dir.
  mount -t tmpfs tmpfs /etc/safe-migrate
  printf "[gate]\nmax-hold=forever\n" >/etc/safe-migrate/defaults.conf
  set +e
  err=$(safe-migrate migrate --source /run/a.qmp --dest /run/b.qmp --uri unix:/run/m 2>&1)
  code=$?
  set -e
  [ $code = 2 ] && grep -q "/etc/safe-migrate/defaults.conf:2: \[gate\] max-hold" <<<"$err" ||
    { echo "defaults.conf not read by default: $code $err"; exit 1; }
  echo "defaults.conf read by default: ok"
  umount /etc/safe-migrate
  grep "^ExecStart=" /lib/systemd/system/safe-migrated.service
  systemd-analyze verify safe-migrated.service 2>&1 | grep -v "Failed to parse system call" | grep . && exit 1
  echo "systemd-analyze verify: ok"
  systemd-analyze security --offline=true --threshold=30 safe-migrated.service 2>&1 |
    grep "Overall exposure"
' _ "$root"
echo "package: ok"
