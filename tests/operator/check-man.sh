#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The man pages render (`man -l`, with groff's warnings on) and say what the binaries do:
# every long option a --help lists appears in its page.
set -euo pipefail
build=${1:?build dir}
status=0
for page in safe-migrate.1 safe-migrated.8 safe-migrate.conf.5 qmp-call.1; do
  f=$build/doc/$page
  [ -s "$f" ] || { echo "$page: not built"; status=1; continue; }
  err=$(MANWIDTH=80 man --warnings -l "$f" 2>&1 >/dev/null) || true
  [ -z "$err" ] || { echo "$page: $err"; status=1; }
  MANWIDTH=80 man -l "$f" 2>/dev/null | grep -q '^NAME' || { echo "$page: no NAME"; status=1; }
done
# Options: each --flag of each --help must be in the page (as groff renders it).
check() { # PAGE COMMAND...
  local page=$1 text flag; shift
  text=$(MANWIDTH=200 man -l "$build/doc/$page" 2>/dev/null)
  for flag in $("$@" --help 2>/dev/null | grep -oE '^ +(-[a-zA-Z], )?--[a-z-]+' | grep -oE -- '--[a-z-]+'); do
    [ "$flag" = --help ] && continue
    grep -qe "$flag" <<<"$text" || { echo "$page: $flag of '$*' not documented"; status=1; }
  done
}
sm=$build/sidecar/safe-migrate
for sub in migrate status recover; do check safe-migrate.1 "$sm" "$sub"; done
check safe-migrated.8 "$build/sidecar/safe-migrated"
check qmp-call.1 "$build/qmp/qmp-call"
# Policy keys: each key the loader knows (sidecar/gate/policy.c's table) is in safe-migrate.conf(5).
src=$(cd "$(dirname "$0")/../.." && pwd)
conf=$(MANWIDTH=200 man -l "$build/doc/safe-migrate.conf.5" 2>/dev/null)
for key in $(grep -oE '^\s*\{"(vm|gate|migration)", "[a-z-]+"' "$src/sidecar/gate/policy.c" |
  grep -oE '"[a-z-]+"$' | tr -d '"'); do
  grep -qe "$key" <<<"$conf" || { echo "safe-migrate.conf.5: key $key not documented"; status=1; }
done
[ $status = 0 ] && echo "man pages: ok"
exit $status
