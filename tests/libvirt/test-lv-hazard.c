/* The hazard under libvirt, no gate: plain `virsh migrate --live` between the rig's two
 * libvirt hosts. Idle, the guest carries on byte-correct on the destination; with a SCSI result
 * left pending by a CBW, virsh still returns 0 and the destination QEMU dies when the guest
 * fetches the data (QEMU 7.2), taking the domain with it. */
#include "lv.h"

#include <string.h>
#include <unistd.h>

typedef struct {
    const char *path;
    LvForm form;
    RigCommand (*command)(void);
    gsize len;
    gboolean pending;
} HazardCase;

static gboolean skip_without_rig(void)
{
    g_autofree char *why = NULL;
    if (lv_rig_dir(&why))
        return FALSE;
    g_test_skip(why);
    return TRUE;
}

/* The guest's view after a migration to B: the same answers as on A, and a READ of the ISO. */
static void assert_healthy_on_b(RigGuest *guest, RigCommand cmd, const guint8 *reference, gsize len)
{
    guint8 buf[64];
    lv_guest_answer(guest, cmd, buf, len);
    g_assert_cmpmem(buf, len, reference, len);
    RigCommand inquiry = rig_cmd_inquiry();
    guint8 inq[36];
    lv_guest_answer(guest, inquiry, inq, sizeof inq);
}

static void test_hazard(gconstpointer data)
{
    const HazardCase *c = data;
    if (skip_without_rig())
        return;
    g_autoptr(GError) error = NULL;
    static guint counter;
    g_autofree char *name = g_strdup_printf("hz%u-%u", (guint)getpid(), ++counter);
    LvDomainConfig config = {.name = name, .form = c->form, .qemu = RIG_QEMU_72};
    lv_domain_create(LV_A, &config);
    g_autoptr(RigGuest) guest = lv_guest_new(LV_A, name);
    RigCommand cmd = c->command();
    guint8 reference[64];
    lv_guest_settle(guest, cmd, reference, c->len);
    if (c->pending)
        g_assert_true(rig_guest_send_cbw(guest, 0, &cmd, NULL, &error));
    g_assert_no_error(error);

    g_autofree char *err = NULL;
    int rc = lv_migrate(LV_A, name, NULL, &err);
    g_test_message("virsh migrate: %d %s", rc, err);
    g_assert_cmpint(rc, ==, 0);
    g_assert_false(lv_domain_running(LV_A, name));
    g_assert_true(lv_domain_running(LV_B, name));
    GPid dst = lv_qemu_pid(LV_B, name);
    g_assert_cmpint(dst, >, 0);
    g_autofree char *qtest_b = lv_qtest_path(LV_B, name);
    g_assert_true(rig_guest_attach_at(guest, qtest_b, name, &error));
    g_assert_no_error(error);

    if (!c->pending) {
        assert_healthy_on_b(guest, cmd, reference, c->len);
        g_assert_true(lv_domain_running(LV_B, name));
        lv_domain_destroy(LV_B, name);
        return;
    }
    /* The guest fetches the result the source computed: the destination has no request
     * behind the device's buffered state and dies. */
    guint8 buf[64];
    gssize got = rig_guest_data_in(guest, 0, buf, c->len, &error);
    g_test_message("DATA-IN on B: %zd (%s)", got, error ? error->message : "no error");
    g_assert_cmpint(got, <, 0);
    g_assert_error(error, RIG_ERROR, RIG_ERROR_VM_DIED);
    g_assert_true(lv_wait_gone(dst, 10000));
    for (int i = 0; i < 100 && lv_domain_running(LV_B, name); i++)
        g_usleep(50000);
    g_assert_false(lv_domain_running(LV_B, name));
    g_assert_false(lv_domain_running(LV_A, name));
    g_autofree char *log = lv_qemu_log(LV_B, name);
    g_test_message("B's QEMU log ends: %s", log + (strlen(log) > 400 ? strlen(log) - 400 : 0));
    /* libvirt saw the monitor close without a SHUTDOWN event. */
    g_assert_nonnull(strstr(log, "shutting down, reason=crashed"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    static const HazardCase cases[] = {
        {"/libvirt/hazard/scsi-hd/inquiry/idle", LV_FORM_LIBVIRT, rig_cmd_inquiry, 36, FALSE},
        {"/libvirt/hazard/scsi-hd/inquiry/pending", LV_FORM_LIBVIRT, rig_cmd_inquiry, 36, TRUE},
        {"/libvirt/hazard/scsi-hd/read-capacity/pending", LV_FORM_LIBVIRT, rig_cmd_read_capacity, 8,
         TRUE},
        {"/libvirt/hazard/scsi-cd/gesn/pending", LV_FORM_BOT_CD, rig_cmd_gesn, 8, TRUE},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++)
        g_test_add_data_func(cases[i].path, &cases[i], test_hazard);
    return g_test_run();
}
