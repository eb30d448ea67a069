/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A paused source through the gate: its verdict is final while it stays paused (an unsafe
 * device refuses the migration before anything starts), and never reused once the VM was
 * resumed mid-migration (the guest may have started a transfer since). Real QEMU pairs. */
#include "gate-cli.h"

#include <string.h>

/* Idle and paused: migrates, and the destination stays paused as the source was. */
static void test_paused_idle(gconstpointer data)
{
    RigQemu qemu = GPOINTER_TO_INT(data);
    RigPair p;
    rig_pair_start(&p, &(RigPairConfig){.src_qemu = qemu, .dst_qemu = qemu, .machine = "pc"});
    qmp_ok(p.src, "stop");
    g_autofree char *before = rig_vm_migration_settings(p.src);
    g_autoptr(Gate) g = gate_start("migrate", "--source", p.src_addr, "--dest", p.dst_addr, "--uri",
                                   p.uri, "--json", NULL);
    g_assert_cmpint(gate_wait(g), ==, 0);
    g_assert_cmpstr(result_str(g, "path"), ==, "idle");
    assert_runstate(p.src, "postmigrate");
    assert_runstate(p.dst, "paused");
    assert_settings(p.src, before);
    qmp_ok(p.dst, "cont");
    g_autoptr(GError) error = NULL;
    g_assert_true(rig_guest_attach(p.guest, p.dst, &error));
    g_assert_no_error(error);
    rig_pair_assert_healthy(&p);
    rig_pair_clear(&p);
}

/* Busy and paused: the guest cannot finish its transfer, so the preflight verdict is final:
 * refused there (exit 4, device named), no migration started, the VM left paused. */
static void test_paused_busy_refused(gconstpointer data)
{
    RigQemu qemu = GPOINTER_TO_INT(data);
    RigPair p;
    rig_pair_start(&p, &(RigPairConfig){.src_qemu = qemu, .dst_qemu = qemu, .machine = "pc"});
    leave_pending(&p, rig_cmd_gesn());
    qmp_ok(p.src, "stop");
    g_autofree char *before = rig_vm_migration_settings(p.src);
    g_autoptr(Gate) g = gate_start("migrate", "--source", p.src_addr, "--dest", p.dst_addr, "--uri",
                                   p.uri, "--dest-prepare", p.prepare, "--json", NULL);
    g_assert_cmpint(gate_wait(g), ==, 4);
    g_assert_false(saw(g, "attempt"));
    g_assert_cmpstr(result_str(g, "result"), ==, "refused");
    g_assert_nonnull(strstr(result_str(g, "error"), "usbcd0"));
    g_autofree char *mig = rig_vm_migration_status(p.src);
    g_assert_cmpstr(mig, ==, "none");
    assert_runstate(p.src, "paused");
    assert_runstate(p.dst, "inmigrate");
    assert_settings(p.src, before);
    /* Once resumed, the guest completes its read with the right bytes. */
    qmp_ok(p.src, "cont");
    rig_pair_finish_pending(&p, p.gesn);
    rig_pair_clear(&p);
}

/* Idle when paused, then resumed mid-migration and a CBW sent: the preflight verdict is
 * stale. The gate probes at pre-switchover instead, finds the device busy and holds; it
 * never continues on the old "idle". */
static void test_resumed_mid_migration(gconstpointer data)
{
    RigQemu qemu = GPOINTER_TO_INT(data);
    RigPair p;
    rig_pair_start(&p, &(RigPairConfig){.src_qemu = qemu, .dst_qemu = qemu, .machine = "pc"});
    make_ram_heavy(&p);
    qmp_ok(p.src, "stop");
    g_autoptr(Gate) g = gate_start("migrate", "--source", p.src_addr, "--dest", p.dst_addr, "--uri",
                                   p.uri, "--dest-prepare", p.prepare, "--backoff", "50ms",
                                   "--max-attempts", "2", "--max-bandwidth", "2M", "--json", NULL);
    json_object *ev = gate_until(g, "attempt");
    g_assert_nonnull(ev);
    json_object_put(ev);
    qmp_ok(p.src, "cont");
    leave_pending(&p, rig_cmd_gesn());
    g_assert_cmpint(gate_wait(g), ==, 4);
    g_assert_cmpstr(result_str(g, "result"), ==, "aborted");
    g_assert_true(saw(g, "hold"));
    assert_runstate(p.src, "running");
    rig_pair_finish_pending(&p, p.gesn);
    rig_pair_assert_healthy(&p);
    rig_pair_clear(&p);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    static const RigQemu versions[] = {RIG_QEMU_72, RIG_QEMU_10};
    for (guint i = 0; i < G_N_ELEMENTS(versions); i++) {
        gconstpointer v = GINT_TO_POINTER(versions[i]);
        const char *name = rig_qemu_name(versions[i]);
        g_autofree char *p1 = g_strdup_printf("/paused/%s/idle-migrates", name);
        g_autofree char *p2 = g_strdup_printf("/paused/%s/busy-refused-at-preflight", name);
        g_autofree char *p3 = g_strdup_printf("/paused/%s/resumed-mid-migration", name);
        g_test_add_data_func(p1, v, test_paused_idle);
        g_test_add_data_func(p2, v, test_paused_busy_refused);
        g_test_add_data_func(p3, v, test_resumed_mid_migration);
    }
    return g_test_run();
}
