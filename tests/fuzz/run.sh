#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the libFuzzer targets (clang, -Dfuzzing=true, in build-fuzz/) and runs each for
# SECONDS (default 60) from its seed corpus in tests/fuzz/corpus/. Fails on any crash, leak,
# sanitizer report or hang. Writes one TAP result per target to build-fuzz/fuzz-results.json
# (meson testlog format) so that tests/count-results.py counts them.
# Usage: tests/fuzz/run.sh [SECONDS] [TARGET...]   e.g. tests/fuzz/run.sh 3600 fuzz-qmp
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
seconds=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz-qmp fuzz-wire fuzz-stream fuzz-policy)
build=build-fuzz
results="$build/fuzz-results.json"

if [ ! -f "$build/build.ninja" ]; then
  CC=clang meson setup "$build" -Dwerror=true -Dfuzzing=true >"$build.setup.log" 2>&1 ||
    { cat "$build.setup.log"; exit 1; }
fi
ninja -C "$build" $(printf 'tests/fuzz/%s ' "${targets[@]}") >/dev/null ||
  ninja -C "$build" $(printf 'tests/fuzz/%s ' "${targets[@]}") || exit 1

: >"$results"
status=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
for t in "${targets[@]}"; do
  seeds="tests/fuzz/corpus/${t#fuzz-}"
  work="$build/fuzz-corpus/$t"       # what the fuzzer finds goes here, not into the seeds
  artifacts="$build/fuzz-artifacts/$t/"
  log="$build/fuzz-$t.log"
  mkdir -p "$work" "$artifacts"
  echo "fuzz: $t for ${seconds}s (seeds $seeds)"
  "$build/tests/fuzz/$t" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts" "$work" "$seeds" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  if [ $rc -eq 0 ]; then
    line="ok 1 $t: ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}"
    result=OK
  else
    line="not ok 1 $t: exit $rc after ${runs:-?} runs; see $log and $artifacts"
    result=FAIL
    status=1
    tail -n 40 "$log"
  fi
  echo "$line"
  python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "protocol": "tap",
    "result": sys.argv[2], "stdout": "1..1\n" + sys.argv[3] + "\n"}))' \
    "$t" "$result" "$line" >>"$results"
done
exit $status
