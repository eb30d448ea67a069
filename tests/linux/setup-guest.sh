#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Builds the real-Linux test guest from Debian packages into a private directory: the
# distribution kernel (vmlinuz), an initramfs with busybox-static, the USB (UHCI, EHCI, xHCI) and
# SCSI CD-ROM and disk modules,
# the guest's init script and the static SG_IO workload program. Nothing is installed
# system-wide for it. Idempotent: does nothing when its inputs have not changed.
# Usage: tests/linux/setup-guest.sh [DIR]   (default: .guest under the source tree)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:-$top/.guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The kernel version follows the archive's linux-image-amd64; the stamp covers it and our inputs.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$kpkg" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q >/dev/null
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$kpkg" ] || { echo "setup-guest: no linux-image package for linux-image-amd64" >&2; exit 1; }
stamp=$( { echo "$kpkg"; cat "$here/setup-guest.sh" "$here/guest/init" "$here/guest/sgloop.c"; } | sha256sum | cut -d' ' -f1)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] && [ -f "$out/initrd.gz" ] && [ -f "$out/vmlinuz" ]; then
  echo "linux guest already in $out ($kpkg)"; exit 0
fi

# Packages: downloaded once (apt's own cache is not used, so no root needed for it).
debs="$out/debs"
mkdir -p "$debs"
if ! ls "$debs/$kpkg"_*.deb >/dev/null 2>&1 || ! ls "$debs"/busybox-static_*.deb >/dev/null 2>&1; then
  rm -f "$debs"/*.deb
  # apt's sandbox user may not write here; downloading as ourselves is fine for two files.
  (cd "$debs" && apt-get -q -o APT::Sandbox::User="$(id -un)" download "$kpkg" busybox-static >/dev/null)
fi
rm -rf "$out/pkg" "$out/root"
mkdir -p "$out/pkg"
for d in "$debs"/*.deb; do dpkg -x "$d" "$out/pkg"; done
kver=$(ls "$out/pkg/lib/modules" | head -1)
moddir="$out/pkg/lib/modules/$kver"
PATH=$PATH:/usr/sbin:/sbin depmod -b "$out/pkg" "$kver"

# Modules in load order: each one's dependencies (modules.dep lists them last-loaded first)
# before itself, each once. EHCI first: it must own the ports before its UHCI companions.
# xHCI for the qemu-xhci configurations, sd_mod for USB sticks and usb-bot disk LUNs.
wanted=(ehci-hcd ehci-pci uhci-hcd xhci-hcd xhci-pci usb-storage sd_mod cdrom sr_mod isofs)
root="$out/root"
mkdir -p "$root"/{bin,dev,proc,sys,cd,tmp,lib/modules}
order=()
add() { local m; for m in "${order[@]:-}"; do [ "$m" = "$1" ] && return; done; order+=("$1"); }
for w in "${wanted[@]}"; do
  line=$(grep -E "/$w\.ko(\.xz)?:" "$moddir/modules.dep") ||
    { echo "setup-guest: module $w not in $kver" >&2; exit 1; }
  read -r -a parts <<<"${line#*:}"
  for ((i = ${#parts[@]} - 1; i >= 0; i--)); do add "${parts[i]}"; done
  add "${line%%:*}"
done
: >"$root/lib/modules/order"
for rel in "${order[@]}"; do
  name=$(basename "$rel")
  case "$name" in
    *.xz) xz -dc "$moddir/$rel" >"$root/lib/modules/${name%.xz}"; name=${name%.xz} ;; # busybox insmod reads plain .ko
    *) cp "$moddir/$rel" "$root/lib/modules/$name" ;;
  esac
  echo "$name" >>"$root/lib/modules/order"
done

cp "$out/pkg/bin/busybox" "$root/bin/busybox"
gcc -static -O2 -Wall -Wextra -Werror -std=gnu11 -o "$root/bin/sgloop" "$here/guest/sgloop.c"
install -m 0755 "$here/guest/init" "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -9n >"$out/initrd.gz.new")
mv "$out/initrd.gz.new" "$out/initrd.gz"
cp "$out/pkg/boot/vmlinuz-$kver" "$out/vmlinuz"
echo "$kver" >"$out/kernel-version"
rm -rf "$out/pkg"
# What this guest can do, for the test to check before asking for it.
echo "cd ehci uhci xhci disk" >"$out/features"
echo "$stamp" >"$out/stamp"
echo "linux guest built in $out: kernel $kver, modules: $(tr '\n' ' ' <"$root/lib/modules/order")"
