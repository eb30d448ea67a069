#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs the whole test suite: unit and real-QEMU integration tests, in a normal build and in an
# ASan/UBSan build. Installs what is missing first. Ends with "N passed, N failed".
set -uo pipefail
top=$(cd "$(dirname "$0")" && pwd)
cd "$top"
bash tests/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

logs=()
build() { # DIR [meson options...]
  local dir=$1; shift
  [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
    { cat "$dir.setup.log"; return 1; }
  ninja -C "$dir" >/dev/null || ninja -C "$dir"
}
run() { # DIR
  meson test -C "$1" --print-errorlogs --num-processes 2 "${@:2}"
  logs+=("$1/meson-logs/testlog.json")
}

status=0
build build -Dwerror=true && run build || status=1
if [ "${SM_SKIP_ASAN:-0}" != 1 ]; then
  CC=clang build build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false && run build-asan || status=1
fi
[ ${#logs[@]} -gt 0 ] || logs=(build/meson-logs/testlog.json)
python3 tests/count-results.py "${logs[@]}" || status=1
exit $status
