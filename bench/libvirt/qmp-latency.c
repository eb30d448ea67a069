/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Round-trip time of one QMP command through libvirt (virDomainQemuMonitorCommand, the path
 * of every command libvirt sends), to compare a domain behind the safe-migrate filter with a
 * plain one: prints the median and p99 in microseconds of N query-status calls.
 *   libvirt-qmp-latency URI DOMAIN [N] */
#include <glib.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <stdio.h>
#include <stdlib.h>

static int compare(gconstpointer a, gconstpointer b)
{
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s URI DOMAIN [N]\n", argv[0]);
        return 2;
    }
    guint n = argc > 3 ? (guint)g_ascii_strtoull(argv[3], NULL, 10) : 1000;
    virConnectPtr conn = virConnectOpen(argv[1]);
    virDomainPtr dom = conn ? virDomainLookupByName(conn, argv[2]) : NULL;
    if (!dom || n == 0) {
        fprintf(stderr, "cannot reach domain %s at %s\n", argv[2], argv[1]);
        return 1;
    }
    g_autoptr(GArray) us = g_array_sized_new(FALSE, FALSE, sizeof(gint64), n);
    for (guint i = 0; i < n + n / 10; i++) {
        char *reply = NULL;
        gint64 t0 = g_get_monotonic_time();
        int rc = virDomainQemuMonitorCommand(dom, "{\"execute\":\"query-status\"}", &reply, 0);
        gint64 dt = g_get_monotonic_time() - t0;
        free(reply);
        if (rc < 0)
            return 1;
        if (i >= n / 10) /* the first tenth warms caches up and is not counted */
            g_array_append_val(us, dt);
    }
    g_array_sort(us, compare);
    printf("%" G_GINT64_FORMAT " %" G_GINT64_FORMAT "\n", g_array_index(us, gint64, n / 2),
           g_array_index(us, gint64, (n * 99) / 100));
    virDomainFree(dom);
    virConnectClose(conn);
    return 0;
}
