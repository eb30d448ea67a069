#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Installs libvirt 9.0 from Debian 12 for tests/libvirt (daemon, QEMU driver, virsh, headers)
# and the accounts the monolithic libvirtd refuses to start without. Idempotent.
set -euo pipefail
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
packages=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "libvirt setup: installing ${missing[*]}"
  $sudo apt-get update -q >/dev/null
  # No recommends: libvirt-daemon-system would start a system libvirtd (and its networks) that
  # the tests' private daemons must not meet.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
# Debian's libvirt-daemon-system creates these; without that package libvirtd will not start.
for g in kvm libvirt-qemu; do
  getent group "$g" >/dev/null || $sudo groupadd --system "$g"
done
if ! getent passwd libvirt-qemu >/dev/null; then
  $sudo useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
    --gid libvirt-qemu --groups kvm libvirt-qemu
fi
