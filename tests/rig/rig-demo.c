/* SPDX-License-Identifier: GPL-2.0-or-later */
/* rig-demo: the hazard and the gate on two local QEMUs. A USB CD-ROM with a GET EVENT STATUS
 * NOTIFICATION result still unfetched is migrated plainly (the destination dies, or hands the
 * guest wrong bytes), then with safe-migrate (held, retried, the guest gets the right bytes). */
#include "rig.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

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

static char *hex8(const guint8 *b)
{
    return g_strdup_printf("%02x%02x%02x%02x %02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
                           b[6], b[7]);
}

typedef struct {
    RigVm *src, *dst;
    RigGuest *guest;
    guint8 answer[8]; /* the GESN answer before any migration */
} Scene;

static void scene_clear(Scene *s)
{
    rig_guest_free(s->guest);
    rig_vm_free(s->src);
    rig_vm_free(s->dst);
}

/* Two QEMUs, the guest enumerates the CD-ROM, polls it like Linux does, and sends one more
 * GESN whose result it does not fetch yet. */
static gboolean scene_start(Scene *s, RigQemu qemu, GError **error)
{
    RigVmConfig config = {.qemu = qemu, .machine = opt_machine, .name = "src"};
    s->src = rig_vm_start(&config, error);
    config.incoming = TRUE;
    config.name = "dst";
    s->dst = s->src ? rig_vm_start(&config, error) : NULL;
    s->guest = s->dst ? rig_guest_new(s->src, error) : NULL;
    if (!s->guest)
        return FALSE;
    RigCommand tur = rig_cmd_test_unit_ready(), gesn = rig_cmd_gesn();
    gsize len;
    for (int i = 0; i < 2; i++)
        if (!rig_guest_transact(s->guest, 0, &tur, NULL, NULL, NULL, error) ||
            !rig_guest_transact(s->guest, 0, &gesn, s->answer, &len, NULL, error))
            return FALSE;
    g_autofree char *a = hex8(s->answer);
    step("QEMU %s, machine %s: source pid %d, destination pid %d; the guest polls: GESN = %s",
         rig_qemu_name(qemu), opt_machine ? opt_machine : "pc", rig_vm_pid(s->src),
         rig_vm_pid(s->dst), a);
    if (!rig_guest_send_cbw(s->guest, 0, &gesn, NULL, error))
        return FALSE;
    step("the guest sends another GESN CBW; its result waits in the device, unfetched");
    return TRUE;
}

/* The guest fetches its pending result on whichever QEMU holds it now. */
static void fetch(Scene *s, RigVm *vm)
{
    g_autoptr(GError) error = NULL;
    guint8 buf[8] = {0}, status = 0xff;
    if (!rig_guest_attach(s->guest, vm, &error) ||
        rig_guest_data_in(s->guest, 0, buf, 8, &error) != 8 ||
        !rig_guest_read_csw(s->guest, 0, &status, NULL, &error)) {
        int sig = 0;
        if (rig_vm_wait_exit(vm, 5000, &sig, NULL) && sig)
            step("the guest fetches its data: %s DIES (signal %d, %s)", rig_vm_name(vm), sig,
                 g_strsignal(sig));
        else
            step("the guest's fetch failed: %s", error ? error->message : "?");
        return;
    }
    g_autofree char *got = hex8(buf);
    gboolean right = memcmp(buf, s->answer, 8) == 0;
    step("the guest fetches its data on %s: %s, status %s -> %s", rig_vm_name(vm), got,
         status == 0 ? "GOOD" : "CHECK CONDITION", right ? "the right bytes" : "WRONG BYTES");
}

static void plain(RigQemu qemu)
{
    Scene s = {0};
    g_autoptr(GError) error = NULL;
    if (scene_start(&s, qemu, &error)) {
        g_autofree char *result = rig_migrate(s.src, s.dst, NULL, &error);
        step("plain QMP migrate: %s", result ? result : error->message);
        if (result)
            fetch(&s, s.dst);
    } else {
        step("setup failed: %s", error->message);
    }
    scene_clear(&s);
}

static void gated(RigQemu qemu, const char *self)
{
    Scene s = {0};
    g_autoptr(GError) error = NULL;
    if (!scene_start(&s, qemu, &error)) {
        step("setup failed: %s", error->message);
        scene_clear(&s);
        return;
    }
    const char *root = g_getenv("SM_BUILD_ROOT");
    g_autofree char *here = g_path_get_dirname(self);
    g_autofree char *bin =
        root ? g_build_filename(root, "sidecar", "safe-migrate", NULL)
             : g_build_filename(here, "..", "..", "sidecar", "safe-migrate", NULL);
    g_autofree char *prepare = rig_vm_prepare_script(s.dst, TRUE, &error);
    g_autofree char *src = g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(s.src));
    g_autofree char *dst = g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(s.dst));
    g_autofree char *uri = rig_migration_uri();
    const char *argv[] = {bin,     "migrate", "--source",       src,     "--dest", dst,
                          "--uri", uri,       "--dest-prepare", prepare, "--json", NULL};
    step("safe-migrate migrate --source %s --dest %s --uri %s --dest-prepare ...", src, dst, uri);
    g_autoptr(GSubprocess) proc = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error);
    if (!proc) {
        step("cannot run %s: %s", bin, error->message);
        scene_clear(&s);
        return;
    }
    g_autoptr(GDataInputStream) out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(proc));
    char *line;
    gboolean fetched = FALSE;
    while ((line = g_data_input_stream_read_line(out, NULL, NULL, NULL))) {
        g_autoptr(json_object) ev = json_tokener_parse(line);
        g_free(line);
        json_object *v;
        const char *name =
            ev && json_object_object_get_ex(ev, "event", &v) ? json_object_get_string(v) : "";
        if (g_str_equal(name, "pre-switchover"))
            step("  gate: at pre-switchover the VM is paused; the probe reads the device state");
        else if (g_str_equal(name, "hold") && json_object_object_get_ex(ev, "waiting_for", &v))
            step("  gate: holding, %s: the attempt is called off, the source resumes",
                 json_object_get_string(v));
        else if (g_str_equal(name, "retry"))
            step("  gate: a fresh destination is ready; retrying");
        else if (g_str_equal(name, "result"))
            step("  gate: %s", json_object_to_json_string(ev));
        if (g_str_equal(name, "hold") && !fetched) {
            fetch(&s, s.src); /* the guest goes on, on the source */
            fetched = TRUE;
        }
    }
    g_subprocess_wait(proc, NULL, NULL);
    if (g_subprocess_get_if_exited(proc) && g_subprocess_get_exit_status(proc) == 0 &&
        rig_vm_reload(s.dst, &error) && rig_guest_attach(s.guest, s.dst, &error)) {
        RigCommand gesn = rig_cmd_gesn();
        guint8 buf[8];
        gsize len;
        if (rig_guest_transact(s.guest, 0, &gesn, buf, &len, NULL, &error)) {
            g_autofree char *got = hex8(buf);
            step("the guest polls again, now on the destination: %s -> %s", got,
                 memcmp(buf, s.answer, 8) == 0 ? "the right bytes" : "WRONG BYTES");
        }
    }
    if (error)
        step("error: %s", error->message);
    scene_clear(&s);
}

int main(int argc, char **argv)
{
    g_autoptr(GOptionContext) context =
        g_option_context_new("- show the USB CD-ROM migration hazard and the gate");
    g_option_context_add_main_entries(context, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    RigQemu qemu = opt_qemu10 ? RIG_QEMU_10 : RIG_QEMU_72;
    step("1. A plain QMP migration between CBW and DATA-IN");
    plain(qemu);
    printf("\n");
    step("2. The same, through safe-migrate");
    gated(qemu, argv[0]);
    return 0;
}
