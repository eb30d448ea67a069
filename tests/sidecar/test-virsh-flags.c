/* SPDX-License-Identifier: GPL-2.0-or-later */
/* virsh's migrate vocabulary against real QEMU: --parallel-connections, --auto-converge,
 * --bandwidth, --timeout and --live reach QEMU and leave both VMs' settings as found, and
 * the --json stream is in its one encoding (RFC 3339 time, no escaped slashes, two-decimal
 * throughput). */
#include "gate-cli.h"

#include <string.h>

/* Reads every line of the event stream; returns them and the exit code. */
static GPtrArray *read_all(Gate *g, int *code)
{
    GPtrArray *lines = g_ptr_array_new_with_free_func(g_free);
    char *line;
    while ((line = g_data_input_stream_read_line(g->out, NULL, NULL, NULL)))
        g_ptr_array_add(lines, line);
    *code = gate_wait(g);
    return lines;
}

static void assert_encoding(GPtrArray *lines, guint *progress_with_rate)
{
    g_autoptr(GRegex) stamp =
        g_regex_new("\"time\":\"\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z\"", 0, 0, NULL);
    g_autoptr(GRegex) rate = g_regex_new("\"mbps\":(-?[0-9.eE+-]+)", 0, 0, NULL);
    for (guint i = 0; i < lines->len; i++) {
        const char *l = g_ptr_array_index(lines, i);
        g_test_message("%s", l);
        g_assert_true(g_regex_match(stamp, l, 0, NULL));
        g_assert_null(strstr(l, "\\/"));
        g_autoptr(GMatchInfo) m = NULL;
        if (g_regex_match(rate, l, 0, &m)) {
            g_autofree char *num = g_match_info_fetch(m, 1);
            const char *dot = strchr(num, '.');
            g_assert_true(!dot || strlen(dot + 1) <= 2); /* not 537.13295999999991 */
            (*progress_with_rate)++;
        }
    }
}

static void test_multifd_and_friends(void)
{
    RigPair p;
    rig_pair_start(
        &p, &(RigPairConfig){.src_qemu = RIG_QEMU_72, .dst_qemu = RIG_QEMU_72, .machine = "pc"});
    g_autofree char *src_before = rig_vm_migration_settings(p.src),
                    *dst_before = rig_vm_migration_settings(p.dst);
    g_autoptr(Gate) g = gate_start("migrate", "--source", p.src_addr, "--dest", p.dst_addr, "--uri",
                                   p.uri, "--live", "--parallel-connections", "3",
                                   "--auto-converge", "--timeout", "5min", "--json", NULL);
    int code = -1;
    g_autoptr(GPtrArray) lines = read_all(g, &code);
    g_assert_cmpint(code, ==, 0);
    guint rated = 0;
    assert_encoding(lines, &rated);
    /* multifd-channels was set on both ends (they must agree) and is put back on both. */
    assert_settings(p.src, src_before);
    assert_settings(p.dst, dst_before);
    assert_runstate(p.dst, "running");
    rig_pair_clear(&p);
}

/* --bandwidth is MiB/s as in virsh: 2 MiB/s over 8 MiB of real pages takes seconds, long
 * enough for progress events with their throughput. */
static void test_bandwidth_mib(void)
{
    RigPair p;
    rig_pair_start(
        &p, &(RigPairConfig){.src_qemu = RIG_QEMU_72, .dst_qemu = RIG_QEMU_72, .machine = "pc"});
    make_ram_heavy(&p);
    g_autofree char *before = rig_vm_migration_settings(p.src);
    g_autoptr(Gate) g = gate_start("migrate", "--source", p.src_addr, "--dest", p.dst_addr, "--uri",
                                   p.uri, "--bandwidth", "2", "--json", NULL);
    int code = -1;
    g_autoptr(GPtrArray) lines = read_all(g, &code);
    g_assert_cmpint(code, ==, 0);
    guint rated = 0;
    assert_encoding(lines, &rated);
    g_assert_cmpuint(rated, >, 0);
    assert_settings(p.src, before);
    rig_pair_clear(&p);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/virsh-flags/multifd-and-friends", test_multifd_and_friends);
    g_test_add_func("/virsh-flags/bandwidth-mib", test_bandwidth_mib);
    return g_test_run();
}
