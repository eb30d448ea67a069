#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# libqmp as an outside project sees it: `meson install` into a scratch root, then a consumer
# that includes <safe-migrate/qmp.h> through `pkg-config libqmp`, defines its own
# g_autoptr(json_object) cleanup (qmp.h must not have defined one for it) and links.
set -euo pipefail
build=${1:?build dir}
compiler=${2:-cc}
sanitize=${3:-none}
cflags=()
[ "$sanitize" = none ] || cflags=(-fsanitize="$sanitize")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
meson install -C "$build" --no-rebuild --quiet --destdir "$root" >/dev/null
pc=$(find "$root" -name libqmp.pc | head -n1)
[ -n "$pc" ] || { echo "libqmp.pc not installed"; exit 1; }
cat >"$root/consumer.c" <<'C'
#include <safe-migrate/qmp.h>
#include <stdio.h>
/* A consumer's own cleanup for json-c objects: must not clash with the library's header. */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)
int main(void)
{
    g_autoptr(json_object) o = json_object_new_object();
    g_autoptr(GSocketAddress) a = NULL;
    printf("%d\n", qmp_address_parse("unix:/run/x.qmp", &a, NULL) && o != NULL);
    return 0;
}
C
# The .pc file as it would read installed at $root (only its own prefix moves, not GLib's).
mkdir "$root/pc"
sed "s|^prefix=|prefix=$root|" "$pc" >"$root/pc/libqmp.pc"
flags=$(PKG_CONFIG_PATH=$root/pc pkg-config --cflags --libs libqmp)
# shellcheck disable=SC2086
"$compiler" -Wall -Werror "${cflags[@]}" -o "$root/consumer" "$root/consumer.c" $flags
LD_LIBRARY_PATH=$(dirname "$(dirname "$pc")") "$root/consumer" | grep -qx 1
echo "libqmp consumer: ok"
