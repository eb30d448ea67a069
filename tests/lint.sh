#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Lint as a test: cppcheck on the C sources and clang-format conformance of every C file.
set -uo pipefail
cd "${SM_SOURCE_ROOT:-$(dirname "$0")/..}"
status=0
# cppcheck does not read GLib's headers; these attribute macros would otherwise confuse it.
cppcheck --enable=warning,performance,portability --error-exitcode=1 -q \
  "-DG_DEFINE_AUTOPTR_CLEANUP_FUNC(a,b)=" "-DG_GNUC_PRINTF(a,b)=" "-DG_GNUC_NULL_TERMINATED=" \
  qmp/ plugin/ sidecar/ tests/rig/rig-vm.c tests/rig/rig-guest.c tests/rig/rig-demo.c || status=1
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
clang-format --dry-run --Werror $files || status=1
exit $status
