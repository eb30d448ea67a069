#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Installs everything the build and the tests need on Debian 12: compilers, libraries, tools,
# QEMU 7.2 from the distribution, QEMU 10 unpacked into .qemu10 (tests/setup-qemu.sh), and the
# real-Linux test guest built into .guest (tests/linux/setup-guest.sh), and libvirt 9.0 for
# tests/libvirt (tests/libvirt/setup.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
packages=(meson ninja-build pkg-config gcc clang libclang-rt-14-dev libglib2.0-dev libjson-c-dev
          qemu-system-x86 genisoimage python3 cppcheck clang-format cpio kmod xz-utils libc6-dev
          scdoc bash-completion man-db systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
bash "$top/tests/setup-qemu.sh" "$top/.qemu10"
bash "$top/tests/linux/setup-guest.sh" "$top/.guest"
bash "$top/tests/libvirt/setup.sh"
