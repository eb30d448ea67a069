/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The rig's test fixture: a source with the guest on it and a destination waiting, and
 * asserting helpers shared by the integration tests. */
#include "rig.h"

#include <string.h>

void rig_guest_answer8(RigGuest *guest, RigCommand cmd, guint8 out[8])
{
    g_autoptr(GError) error = NULL;
    gsize len = 0;
    guint8 status = 0xff;
    g_assert_true(rig_guest_transact(guest, 0, &cmd, out, &len, &status, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(status, ==, 0);
    g_assert_cmpuint(len, ==, 8);
}

void rig_pair_start(RigPair *p, const RigPairConfig *c)
{
    g_autoptr(GError) error = NULL;
    memset(p, 0, sizeof *p);
    g_autofree char *dst_name = c->name ? g_strconcat(c->name, "-dst", NULL) : g_strdup("dst");
    p->src = rig_vm_start(&(RigVmConfig){.qemu = c->src_qemu,
                                         .machine = c->machine,
                                         .name = c->name ? c->name : "src",
                                         .exact_memory = c->exact_memory},
                          &error);
    g_assert_no_error(error);
    if (!c->no_dest) {
        p->dst = rig_vm_start(&(RigVmConfig){.qemu = c->dst_qemu,
                                             .machine = c->machine,
                                             .name = dst_name,
                                             .incoming = TRUE,
                                             .exact_memory = c->exact_memory},
                              &error);
        g_assert_no_error(error);
        p->prepare = rig_vm_prepare_script(p->dst, TRUE, &error);
        g_assert_no_error(error);
        p->dst_addr = g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(p->dst));
    }
    p->src_addr = g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(p->src));
    p->uri = rig_migration_uri();
    p->guest = rig_guest_new(p->src, &error);
    g_assert_no_error(error);
    /* As a guest does after power-on: TEST UNIT READY until the unit attention is gone, and
     * a first GESN that reports the media event. The next two answers must agree. */
    RigCommand tur = rig_cmd_test_unit_ready();
    for (int i = 0; i < 2; i++)
        g_assert_true(rig_guest_transact(p->guest, 0, &tur, NULL, NULL, NULL, &error));
    g_assert_no_error(error);
    guint8 again[8];
    rig_guest_answer8(p->guest, rig_cmd_gesn(), p->gesn);
    rig_guest_answer8(p->guest, rig_cmd_gesn(), p->gesn);
    rig_guest_answer8(p->guest, rig_cmd_gesn(), again);
    g_assert_cmpmem(p->gesn, 8, again, 8);
    rig_guest_answer8(p->guest, rig_cmd_read_capacity(), p->rdcap);
}

void rig_pair_clear(RigPair *p)
{
    rig_guest_free(p->guest);
    rig_vm_free(p->src);
    rig_vm_free(p->dst);
    g_free(p->src_addr);
    g_free(p->dst_addr);
    g_free(p->uri);
    g_free(p->prepare);
    memset(p, 0, sizeof *p);
}

void rig_pair_finish_pending(RigPair *p, const guint8 expected[8])
{
    g_autoptr(GError) error = NULL;
    guint8 buf[8];
    gssize got = rig_guest_data_in(p->guest, 0, buf, 8, &error);
    g_assert_no_error(error);
    g_assert_cmpint(got, ==, 8);
    g_assert_cmpmem(buf, 8, expected, 8);
    guint8 status = 0xff;
    g_assert_true(rig_guest_read_csw(p->guest, 0, &status, NULL, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(status, ==, 0);
}

void rig_pair_assert_healthy(RigPair *p)
{
    guint8 buf[8];
    rig_guest_answer8(p->guest, rig_cmd_gesn(), buf);
    g_assert_cmpmem(buf, 8, p->gesn, 8);
    rig_guest_answer8(p->guest, rig_cmd_read_capacity(), buf);
    g_assert_cmpmem(buf, 8, p->rdcap, 8);
    g_autoptr(GError) error = NULL;
    guint8 sector[2048], expected[2048];
    gsize len = 0;
    guint8 status = 0xff;
    RigCommand read = rig_cmd_read10(20, 1);
    g_assert_true(rig_guest_transact(p->guest, 0, &read, sector, &len, &status, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(status, ==, 0);
    g_assert_true(rig_iso_sector(20, expected));
    g_assert_cmpmem(sector, len, expected, 2048);
}
