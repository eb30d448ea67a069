#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Sets everything up on a fresh Debian 12 machine, builds, and runs the demo: two local QEMUs,
# a USB CD-ROM, and what a migration between CBW and DATA-IN does.
set -euo pipefail
top=$(cd "$(dirname "$0")" && pwd)
cd "$top"
bash tests/setup.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
export SM_QEMU72=/usr/bin/qemu-system-x86_64 SM_QEMU10=$top/.qemu10/usr/bin/qemu-system-x86_64 \
       SM_QEMU10_DATADIR=$top/.qemu10/usr/share/qemu
export SM_BUILD_ROOT=$top/build
exec build/tests/rig/rig-demo "$@"
