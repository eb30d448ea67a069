/* rig-demo: shows the hazard on two local QEMUs: an idle USB CD-ROM migrates fine, one with
 * a GET EVENT STATUS NOTIFICATION result still unfetched kills the destination. */
#include "rig.h"

#include <signal.h>
#include <stdio.h>

static gboolean opt_qemu10;
static char *opt_machine;

static const GOptionEntry entries[] = {
    {"qemu10", 0, 0, G_OPTION_ARG_NONE, &opt_qemu10, "Use QEMU 10 instead of 7.2", NULL},
    {"machine", 0, 0, G_OPTION_ARG_STRING, &opt_machine, "Machine type (default pc)", "TYPE"},
    G_OPTION_ENTRY_NULL,
};

static void step(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void step(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    printf("==> %s\n", text);
    fflush(stdout);
}

static gboolean migrate_once(RigQemu qemu, gboolean leave_pending, GError **error)
{
    RigVmConfig config = {.qemu = qemu, .machine = opt_machine, .name = "src"};
    g_autoptr(RigVm) src = rig_vm_start(&config, error);
    if (!src)
        return FALSE;
    config.incoming = TRUE;
    config.name = "dst";
    g_autoptr(RigVm) dst = rig_vm_start(&config, error);
    if (!dst)
        return FALSE;
    g_autoptr(RigGuest) guest = rig_guest_new(src, error);
    if (!guest)
        return FALSE;
    step("QEMU %s, machine %s: source pid %d, destination pid %d", rig_qemu_name(qemu),
         opt_machine ? opt_machine : "pc", rig_vm_pid(src), rig_vm_pid(dst));

    RigCommand gesn = rig_cmd_gesn();
    guint8 buf[8];
    gsize len;
    guint8 status;
    for (int i = 0; i < 2; i++)
        if (!rig_guest_transact(guest, 0, &gesn, buf, &len, &status, error))
            return FALSE;
    step("guest polled the CD-ROM (GESN): %02x%02x%02x%02x%02x%02x%02x%02x", buf[0], buf[1], buf[2],
         buf[3], buf[4], buf[5], buf[6], buf[7]);
    if (leave_pending) {
        if (!rig_guest_send_cbw(guest, 0, &gesn, NULL, error))
            return FALSE;
        step("guest sent another GESN CBW and has not fetched the result yet");
    }
    g_autofree char *result = rig_migrate(src, dst, NULL, error);
    if (!result)
        return FALSE;
    step("plain QMP migrate: %s", result);
    if (!rig_guest_attach(guest, dst, error))
        return FALSE;
    gssize got = rig_guest_data_in(guest, 0, buf, sizeof buf, error);
    if (got < 0) {
        int sig = 0;
        if (rig_vm_wait_exit(dst, 5000, &sig, NULL) && sig)
            step("guest fetched its data on the destination: the destination died (signal %d, %s)",
                 sig, g_strsignal(sig));
        return FALSE;
    }
    if (leave_pending) {
        if (!rig_guest_read_csw(guest, 0, &status, NULL, error))
            return FALSE;
        step("destination survived; guest got %02x%02x%02x%02x%02x%02x%02x%02x (CSW status %u)",
             buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], status);
        return TRUE;
    }
    if (!rig_guest_read_csw(guest, 0, &status, NULL, error))
        return FALSE;
    step("guest polled again on the destination: fine");
    return TRUE;
}

int main(int argc, char **argv)
{
    g_autoptr(GOptionContext) context =
        g_option_context_new("- show the USB CD-ROM migration hazard");
    g_option_context_add_main_entries(context, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    RigQemu qemu = opt_qemu10 ? RIG_QEMU_10 : RIG_QEMU_72;
    step("1. migrating with the CD-ROM idle");
    if (!migrate_once(qemu, FALSE, &error)) {
        g_printerr("unexpected failure: %s\n", error->message);
        return 1;
    }
    step("2. migrating between CBW and DATA-IN");
    if (!migrate_once(qemu, TRUE, &error))
        step("as feared: %s", error->message);
    return 0;
}
