#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The bash completion, called the way bash calls it (COMP_WORDS, COMP_CWORD): subcommands,
# each subcommand's flags (every flag its --help lists), values, and VM names from vms.d.
set -uo pipefail
build=${1:?build dir}
# shellcheck source=/dev/null
source "$build/completion/safe-migrate"
status=0
complete_line() { # FUNCTION WORD... (the last word is the one being completed)
  local fn=$1; shift
  COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
  "$fn"
  echo "${COMPREPLY[*]}"
}
expect() { # WANT GOT WHAT
  [[ " $2 " == *" $1 "* ]] || { echo "FAIL: $3: '$1' not in '$2'"; status=1; }
}
expect migrate "$(complete_line _safe_migrate safe-migrate mi)" "subcommand"
expect list "$(complete_line _safe_migrate safe-migrate --daemon /run/s li)" "after --daemon"
expect --version "$(complete_line _safe_migrate safe-migrate --v)" "global flag"
expect --bandwidth "$(complete_line _safe_migrate safe-migrate migrate --band)" "migrate flag"
expect use-fix-if-benign "$(complete_line _safe_migrate safe-migrate migrate --on-unquiesceable use)" "value"
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
mkdir "$dir/vms.d" && touch "$dir/vms.d/web1.conf" "$dir/vms.d/db2.conf"
expect web1 "$(complete_line _safe_migrate safe-migrate migrate --config-dir "$dir" --vm w)" "VM name"
expect 0600 "$(complete_line _safe_migrated safe-migrated --socket-mode 06)" "daemon value"
expect --wait-event "$(complete_line _qmp_call qmp-call --wa)" "qmp-call flag"
# Every flag of every --help is offered.
sm=$build/sidecar/safe-migrate
flags() { "$@" --help 2>/dev/null | grep -oE '^ +(-[a-zA-Z], )?--[a-z-]+' | grep -oE -- '--[a-z-]+'; }
for sub in migrate status recover list cancel; do
  got=$(complete_line _safe_migrate safe-migrate "$sub" --)
  for f in $(flags "$sm" "$sub"); do expect "$f" "$got" "safe-migrate $sub"; done
done
got=$(complete_line _safe_migrated safe-migrated --)
for f in $(flags "$build/sidecar/safe-migrated"); do expect "$f" "$got" safe-migrated; done
got=$(complete_line _qmp_call qmp-call --)
for f in $(flags "$build/qmp/qmp-call"); do expect "$f" "$got" qmp-call; done
[ $status = 0 ] && echo "completion: ok"
exit $status
