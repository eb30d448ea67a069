/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The hazard under libvirt, no gate: plain `virsh migrate --live` between the rig's two
 * libvirt hosts. Idle, the guest carries on byte-correct on the destination. With a SCSI result
 * left pending by a CBW, virsh still returns 0 and then, on QEMU 7.2, the destination QEMU dies
 * when the guest fetches the data, taking the domain with it; on QEMU 10 (its fix on) the guest
 * gets bytes that are not the answer, with GOOD status. */
#include "lv.h"

#include <string.h>
#include <unistd.h>

typedef enum { EXPECT_CORRECT, EXPECT_CRASH, EXPECT_GARBAGE } Expectation;

typedef struct {
    const char *path;
    LvForm form;
    RigQemu qemu;
    RigCommand (*command)(void);
    gsize len;
    gboolean pending;
    Expectation expect;
} HazardCase;

static gboolean skip_without_rig(void)
{
    g_autofree char *why = NULL;
    if (lv_rig_dir(&why))
        return FALSE;
    g_test_skip(why);
    return TRUE;
}

/* The destination died under the guest: QEMU gone, libvirt saw its monitor close without a
 * SHUTDOWN event ("crashed"), the domain exists on neither host. */
static void assert_crashed_on_b(const char *name, GPid dst)
{
    g_assert_true(lv_wait_gone(dst, 10000));
    for (int i = 0; i < 100 && lv_domain_running(LV_B, name); i++)
        g_usleep(50000);
    g_assert_false(lv_domain_running(LV_B, name));
    g_assert_false(lv_domain_running(LV_A, name));
    g_autofree char *log = lv_qemu_log(LV_B, name);
    g_assert_nonnull(strstr(log, "shutting down, reason=crashed"));
}

static void test_hazard(gconstpointer data)
{
    const HazardCase *c = data;
    if (skip_without_rig())
        return;
    g_autoptr(GError) error = NULL;
    static guint counter;
    g_autofree char *name = g_strdup_printf("hz%u-%u", (guint)getpid(), ++counter);
    LvDomainConfig config = {.name = name, .form = c->form, .qemu = c->qemu};
    lv_domain_create(LV_A, &config);
    g_autoptr(RigGuest) guest = lv_guest_new(LV_A, name);
    RigCommand cmd = c->command();
    guint8 reference[64], buf[64];
    lv_guest_settle(guest, cmd, reference, c->len);
    if (c->pending)
        g_assert_true(rig_guest_send_cbw(guest, 0, &cmd, NULL, &error));
    g_assert_no_error(error);

    g_autofree char *err = NULL;
    int rc = lv_migrate(LV_A, name, NULL, &err);
    g_test_message("virsh migrate: exit %d %s", rc, err);
    g_assert_cmpint(rc, ==, 0);
    g_assert_false(lv_domain_running(LV_A, name));
    g_assert_true(lv_domain_running(LV_B, name));
    GPid dst = lv_qemu_pid(LV_B, name);
    g_assert_cmpint(dst, >, 0);
    g_autofree char *qtest_b = lv_qtest_path(LV_B, name);
    g_assert_true(rig_guest_attach_at(guest, qtest_b, name, &error));
    g_assert_no_error(error);

    if (c->pending) {
        gssize got = rig_guest_data_in(guest, 0, buf, c->len, &error);
        g_test_message("DATA-IN on B: %zd (%s)", got, error ? error->message : "no error");
        if (c->expect == EXPECT_CRASH) {
            g_assert_cmpint(got, <, 0);
            g_assert_error(error, RIG_ERROR, RIG_ERROR_VM_DIED);
            assert_crashed_on_b(name, dst);
            return;
        }
        g_assert_no_error(error);
        g_assert_cmpint(got, ==, (gssize)c->len);
        guint8 status = 0xff;
        g_assert_true(rig_guest_read_csw(guest, 0, &status, NULL, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(status, ==, 0);
        g_assert_true(memcmp(buf, reference, c->len) != 0); /* GOOD, and wrong */
    }
    /* Whatever happened to the pending one, the next transaction is right. */
    lv_guest_answer(guest, cmd, buf, c->len);
    g_assert_cmpmem(buf, c->len, reference, c->len);
    g_assert_true(lv_domain_running(LV_B, name));
    lv_domain_destroy(LV_B, name);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    static const HazardCase cases[] = {
        {"/libvirt/hazard/7.2/scsi-hd/inquiry/idle", LV_FORM_LIBVIRT, RIG_QEMU_72, rig_cmd_inquiry,
         36, FALSE, EXPECT_CORRECT},
        {"/libvirt/hazard/7.2/scsi-hd/inquiry/pending", LV_FORM_LIBVIRT, RIG_QEMU_72,
         rig_cmd_inquiry, 36, TRUE, EXPECT_CRASH},
        {"/libvirt/hazard/7.2/scsi-hd/read-capacity/pending", LV_FORM_LIBVIRT, RIG_QEMU_72,
         rig_cmd_read_capacity, 8, TRUE, EXPECT_CRASH},
        {"/libvirt/hazard/7.2/scsi-cd/gesn/pending", LV_FORM_BOT_CD, RIG_QEMU_72, rig_cmd_gesn, 8,
         TRUE, EXPECT_CRASH},
        {"/libvirt/hazard/10.0/scsi-hd/inquiry/pending", LV_FORM_LIBVIRT, RIG_QEMU_10,
         rig_cmd_inquiry, 36, TRUE, EXPECT_GARBAGE},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++)
        g_test_add_data_func(cases[i].path, &cases[i], test_hazard);
    return g_test_run();
}
