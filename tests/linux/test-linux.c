/* SPDX-License-Identifier: GPL-2.0-or-later */
/* End-to-end migrations of a real Linux guest (Debian kernel, its own usb-storage driver, a
 * USB CD-ROM under media polling, checksummed reads and an SG_IO loop) back and forth between
 * QEMUs, with plain `migrate` and with `safe-migrate migrate`; the guest reports on its serial
 * console. Controllers UHCI, EHCI (and ich9 EHCI with UHCI companions) and xHCI; forms
 * usb-storage CD-ROM and stick, usb-bot with a CD-ROM and with a CD-ROM and a disk on two LUNs;
 * and `status` probing the running guest. SM_LINUX_MIGRATIONS=N (or --long: 40) sets the
 * migrations per configuration; --long runs every shape, CI a rotating one.
 * SM_LINUX_CANCEL_FIRST=1 (a diagnostic, bench/README): each migration is preceded by one
 * attempt called off at pre-switchover, as a gate's hold does. */
#include "rig.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static guint n_migrations = 4;
static guint n_status = 100;
static gboolean long_run;
static const char *accel; /* chosen by the first campaign: choose_accel() */

/* ---- The guest's files ------------------------------------------------------------------ */

static char *guest_file(const char *name)
{
    const char *dir = g_getenv("SM_GUEST_DIR");
    g_autofree char *def = g_build_filename(g_getenv("SM_SOURCE_ROOT"), ".guest", NULL);
    return g_build_filename(dir ? dir : def, name, NULL);
}

/* An ISO with one file of pseudo-random bytes; returns its path and the file's MD5. */
static const char *guest_iso(const char **md5_out)
{
    static char *iso, *md5;
    if (!iso) {
        g_autofree char *root = g_build_filename(rig_tmpdir(), "linux-iso", NULL);
        g_autofree char *data_path = g_build_filename(root, "DATA.BIN", NULL);
        g_mkdir_with_parents(root, 0700);
        gsize len = 512 * 1024;
        g_autofree guint8 *data = g_malloc(len);
        g_autoptr(GRand) rand = g_rand_new_with_seed(20240611);
        for (gsize i = 0; i < len; i += 4) {
            guint32 v = g_rand_int(rand);
            memcpy(data + i, &v, 4);
        }
        g_autoptr(GError) error = NULL;
        g_assert_true(g_file_set_contents(data_path, (const char *)data, (gssize)len, &error));
        g_autofree char *path = g_build_filename(rig_tmpdir(), "linux.iso", NULL);
        const char *argv[] = {"genisoimage", "-quiet", "-V", "SMLINUX", "-R",
                              "-J",          "-o",     path, root,      NULL};
        int status = 0;
        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                                   NULL, &status, &error));
        g_assert_no_error(error);
        g_assert_true(g_spawn_check_wait_status(status, NULL));
        md5 = g_compute_checksum_for_data(G_CHECKSUM_MD5, data, len);
        iso = g_steal_pointer(&path);
    }
    *md5_out = md5;
    return iso;
}

/* ---- The serial console ----------------------------------------------------------------- */

typedef struct {
    char *path;
    goffset offset;
    GString *partial;
    guint ready, hb;
    guint problems;   /* every line below, and any READY after the first (a reboot) */
    guint mismatches; /* MISMATCH: a read or an SG_IO answer differed from the reference */
    guint kerrs;      /* KERR: storage-related kernel messages (I/O errors, resets) */
    guint fatals;     /* FATAL: the guest's init gave up */
    guint oopses;     /* the kernel's own BUG / Oops / panic lines (untagged, on the console) */
    guint last_hb;
    guint64 read_ok, read_bad, sg_ok, sg_bad; /* from the latest heartbeat */
    gboolean lost;                            /* the file vanished under us */
    GPtrArray *problem_lines;
} Console;

static void console_line(Console *c, char *line)
{
    g_strchomp(line);
    char *start = line;
    /* A line may follow a kernel message or shell noise without a newline. */
    const char *tags[] = {"HB ", "MISMATCH", "KERR ", "FATAL", "READY", "SG "};
    for (guint i = 0; i < G_N_ELEMENTS(tags); i++) {
        char *at = strstr(line, tags[i]);
        if (at && (at == line || at[-1] == '\r' || at[-1] == ' ' || at[-1] == '\n')) {
            start = at;
            break;
        }
    }
    guint n;
    unsigned long long a, b, d, e;
    /* A kernel that corrupts itself says so before it dies (panic=-1 then ends QEMU, which
     * would otherwise look like a destination crash). */
    static const char *const oops[] = {
        "Kernel panic", "BUG:",     "kernel BUG", "Oops:", "general protection fault",
        "list_add ",    "list_del "};
    for (guint i = 0; i < G_N_ELEMENTS(oops); i++) {
        if (strstr(line, oops[i])) {
            c->oopses++;
            c->problems++;
            g_ptr_array_add(c->problem_lines, g_strdup(line));
            g_test_message("guest kernel: %s", line);
            return;
        }
    }
    if (sscanf(start, "HB %u read=%llu/%llu sg=%llu/%llu", &n, &a, &b, &d, &e) == 5) {
        c->hb++;
        c->last_hb = n;
        c->read_ok = a;
        c->read_bad = b;
        c->sg_ok = d;
        c->sg_bad = e;
    } else if (g_str_has_prefix(start, "READY") && c->ready++ == 0) {
        g_test_message("guest: %s", start);
    } else if (g_str_has_prefix(start, "MISMATCH") || g_str_has_prefix(start, "KERR") ||
               g_str_has_prefix(start, "FATAL") || g_str_has_prefix(start, "READY")) {
        c->problems++;
        c->mismatches += g_str_has_prefix(start, "MISMATCH");
        c->kerrs += g_str_has_prefix(start, "KERR");
        c->fatals += g_str_has_prefix(start, "FATAL") || g_str_has_prefix(start, "READY");
        g_ptr_array_add(c->problem_lines, g_strdup(start));
        g_test_message("guest: %s", start);
    }
}

static void console_poll(Console *c)
{
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < c->offset) {
        /* Only ever appended to: gone or shorter means something outside removed it. */
        if (!c->lost)
            g_test_message("console %s vanished or shrank (removed from outside?)", c->path);
        c->lost = TRUE;
        if (fd >= 0)
            close(fd);
        return;
    }
    char buf[4096];
    ssize_t n;
    while ((n = pread(fd, buf, sizeof(buf), c->offset)) > 0) {
        c->offset += n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                console_line(c, c->partial->str);
                g_string_truncate(c->partial, 0);
            } else if (buf[i] != '\r' && buf[i] != '\0') {
                g_string_append_c(c->partial, buf[i]);
            }
        }
    }
    close(fd);
}

/* Waits for `beats` heartbeats after now in which both workloads made progress (the guest's
 * reads and SG_IO commands complete). FALSE on timeout or if `vm` died. */
static gboolean console_wait_progress(Console *c, RigVm *vm, guint beats, guint timeout_ms)
{
    console_poll(c);
    guint hb0 = c->hb;
    guint64 read0 = c->read_ok, sg0 = c->sg_ok;
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    while (g_get_monotonic_time() < deadline) {
        console_poll(c);
        if (c->hb >= hb0 + beats && c->read_ok > read0 && c->sg_ok > sg0)
            return TRUE;
        if (!rig_vm_alive(vm))
            return FALSE;
        g_usleep(100 * 1000);
    }
    return FALSE;
}

/* ---- A campaign: one guest migrated N times ---------------------------------------------- */

typedef struct {
    RigQemu qemu;
    const char *machine;
    RigController controller;
    RigForm form;
    gboolean safe; /* through safe-migrate; plain QMP migrate otherwise */
    gboolean long_only;
} Config;

static gboolean form_has_cd(RigForm form)
{
    return form != RIG_FORM_STORAGE_DISK;
}

static gboolean form_has_disk(RigForm form)
{
    return form == RIG_FORM_STORAGE_DISK || form == RIG_FORM_BOT_CD_DISK;
}

typedef struct {
    const Config *cfg;
    Console con;
    char *append;
    const char *iso;
    char *disk; /* the campaign's disk image (shared storage of every VM of the chain) */
    RigVm *vm;  /* the QEMU that holds the guest now */
    /* Outcomes. */
    guint done, migrated, crashes, failed, stalled, held_out, attempts, holds;
    guint errors; /* guest-visible problem lines that appeared during the campaign, of which: */
    guint mismatches, kerrs, fatals;
    guint panics;           /* destinations that ended because the guest kernel panicked */
    guint oopses0;          /* the console's oops count when the migration began */
    gint64 downtime_sum_ms; /* QEMU's downtime of the completing attempt */
    gint64 total_sum_ms;    /* wall clock from the command to the guest running on the dest */
    GString *crash_signals;
} Campaign;

static RigVmConfig vm_config(Campaign *k, gboolean incoming, const char *name)
{
    static char *kernel, *initrd;
    if (!kernel) {
        kernel = guest_file("vmlinuz");
        initrd = guest_file("initrd.gz");
    }
    return (RigVmConfig){.qemu = k->cfg->qemu,
                         .machine = k->cfg->machine,
                         .controller = k->cfg->controller,
                         .form = k->cfg->form,
                         .disk = k->disk,
                         .incoming = incoming,
                         .iso = k->iso,
                         .name = name,
                         .kernel = kernel,
                         .initrd = initrd,
                         .append = k->append,
                         .console = k->con.path,
                         .accel = accel};
}

static json_object *qmp_query(RigVm *vm, const char *command)
{
    g_autoptr(GError) error = NULL;
    json_object *ret = qmp_client_execute(rig_vm_qmp(vm), command, NULL, &error);
    if (!ret)
        g_test_message("%s on %s: %s", command, rig_vm_name(vm), error->message);
    return ret;
}

static gint64 member_int(json_object *obj, const char *key)
{
    json_object *v;
    return obj && json_object_object_get_ex(obj, key, &v) ? json_object_get_int64(v) : -1;
}

static const char *member_str(json_object *obj, const char *key)
{
    json_object *v;
    return obj && json_object_object_get_ex(obj, key, &v) ? json_object_get_string(v) : "";
}

static gboolean is_running(RigVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *state = rig_vm_alive(vm) ? rig_vm_runstate(vm, &error) : NULL;
    return state && g_str_equal(state, "running");
}

/* The guest stopped making progress on a live destination: say what QEMU and the console
 * show. */
static void stall_diagnostics(Campaign *k, RigVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *state = rig_vm_runstate(vm, &error);
    g_autofree char *text = NULL;
    g_file_get_contents(k->con.path, &text, NULL, NULL);
    gsize len = text ? strlen(text) : 0;
    g_test_message("migration %u: the guest makes no progress on %s (run state %s); last heartbeat "
                   "%u (read %" G_GUINT64_FORMAT " sg %" G_GUINT64_FORMAT "); console ends:\n%s",
                   k->done, rig_vm_name(vm), state ? state : error->message, k->con.last_hb,
                   k->con.read_ok, k->con.sg_ok, text ? text + (len > 600 ? len - 600 : 0) : "");
    /* Where the vCPU is and what the USB side holds: a guest spinning, halted or waiting on
     * a transfer look different here. */
    static const char *const hmp[] = {"info registers", "info usb", "info qtree"};
    for (guint i = 0; i < G_N_ELEMENTS(hmp) && rig_vm_alive(vm); i++) {
        g_autoptr(json_object) args = json_object_new_object();
        json_object_object_add(args, "command-line", json_object_new_string(hmp[i]));
        g_autoptr(GError) herr = NULL;
        g_autoptr(json_object) ret =
            qmp_client_execute(rig_vm_qmp(vm), "human-monitor-command", args, &herr);
        g_test_message("%s on %s:\n%s", hmp[i], rig_vm_name(vm),
                       ret ? json_object_get_string(ret) : herr->message);
    }
}

/* The destination died: with what signal (0 if it exited). */
static int death_signal(RigVm *vm)
{
    int sig = 0, status = 0;
    if (rig_vm_wait_exit(vm, 2000, &sig, &status))
        return sig;
    return -1;
}

/* The destination is gone: its QEMU crashed, or the guest's kernel panicked (panic=-1 with
 * -no-reboot ends QEMU); counted apart, as they are different failures. */
static void count_death(Campaign *k, RigVm *dst, const char *how)
{
    int sig = death_signal(dst);
    console_poll(&k->con);
    if (k->con.oopses > k->oopses0) {
        k->panics++;
        g_test_message("migration %u: the guest kernel died on the destination %s (QEMU exited, "
                       "signal %d); console lines above",
                       k->done, how, sig);
        return;
    }
    k->crashes++;
    g_string_append_printf(k->crash_signals, "%s%d", k->crash_signals->len ? "," : "", sig);
    g_autofree char *err = rig_vm_stderr(dst);
    g_test_message("migration %u: destination died %s (signal %d): %s", k->done, how, sig,
                   err ? err : "");
}

/* One plain migration from k->vm to dst. Returns the VM holding the guest afterwards. */
static RigVm *migrate_plain(Campaign *k, RigVm *dst, gint64 t0)
{
    g_autoptr(GError) error = NULL;
    RigVm *src = k->vm;
    g_autofree char *status = rig_migrate(src, dst, NULL, &error);
    if (!status || !g_str_equal(status, "completed")) {
        k->failed++;
        g_test_message("migration %u: %s", k->done, status ? status : error->message);
        return src;
    }
    g_autoptr(json_object) info = qmp_query(src, "query-migrate");
    gint64 downtime = member_int(info, "downtime");
    if (console_wait_progress(&k->con, dst, 2, 30000) && is_running(dst)) {
        k->migrated++;
        k->downtime_sum_ms += downtime;
        k->total_sum_ms += (g_get_monotonic_time() - t0) / 1000;
        return dst;
    }
    if (!rig_vm_alive(dst)) {
        count_death(k, dst, "after plain migrate");
        /* The source still has the guest as it was at switchover: resume it there. */
        g_autoptr(json_object) ret = qmp_client_execute(rig_vm_qmp(src), "cont", NULL, &error);
        if (!ret)
            g_test_message("cont on the source: %s", error->message);
        return src;
    }
    k->stalled++;
    stall_diagnostics(k, dst);
    return dst;
}

static char *safe_migrate_path(void)
{
    return g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "safe-migrate", NULL);
}

/* The gate's whole output (JSON events, stderr) of one migration, next to the console in the
 * rig's directory (kept with SM_KEEP_TMP=1), to explain a failure after the run. */
static void keep_gate_output(Campaign *k, const char *out, const char *err)
{
    g_autofree char *base = g_path_get_basename(k->con.path); /* console-N.txt */
    g_autofree char *path = g_strdup_printf("%s/gate-%.*s-%u.txt", rig_tmpdir(),
                                            (int)(strlen(base) - 4), base, k->done);
    g_autofree char *text = g_strdup_printf("%s\n-- stderr --\n%s", out ? out : "", err ? err : "");
    g_file_set_contents(path, text, -1, NULL);
}

/* One migration through the safe-migrate CLI. Returns the VM holding the guest afterwards. */
static RigVm *migrate_safe(Campaign *k, RigVm *dst)
{
    g_autoptr(GError) error = NULL;
    RigVm *src = k->vm;
    g_autofree char *prepare = rig_vm_prepare_script(dst, TRUE, &error);
    g_assert_no_error(error);
    g_autofree char *src_addr = g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(src));
    g_autofree char *dst_addr = g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(dst));
    g_autofree char *uri = rig_migration_uri();
    g_autofree char *bin = safe_migrate_path();
    /* The guest's SG_IO loop keeps its device busy at 45% (xHCI) to 77% (EHCI) of switchovers,
     * far more than real guests, so a migration may need many attempts: the waits between them
     * stop doubling at max-backoff (10 s), and 300 s leave room for the 40. (Before that cap the
     * doubling reached 102 s, and a budget ran out after 12 busy switchovers in a row.) */
    const char *argv[] = {bin,          "migrate",        "--source", src_addr,         "--dest",
                          dst_addr,     "--uri",          uri,        "--dest-prepare", prepare,
                          "--json",     "--max-attempts", "40",       "--backoff",      "100ms",
                          "--max-hold", "300s",           NULL};
    g_autofree char *out = NULL, *err = NULL;
    int wait_status = 0;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                               &wait_status, &error));
    g_assert_no_error(error);
    keep_gate_output(k, out, err);
    g_autoptr(json_object) result = NULL;
    g_autoptr(GString) verdicts = g_string_new(NULL);
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
    for (guint i = 0; lines[i]; i++) {
        json_object *ev = json_tokener_parse(lines[i]);
        json_object *devices;
        if (ev && g_str_equal(member_str(ev, "event"), "result")) {
            g_clear_pointer(&result, json_object_put);
            result = ev;
            continue;
        }
        /* What the gate saw at each switchover, to tie a guest-visible error to a state. */
        if (ev && g_str_equal(member_str(ev, "event"), "pre-switchover") &&
            json_object_object_get_ex(ev, "devices", &devices) &&
            json_object_array_length(devices) > 0) {
            json_object *d = json_object_array_get_idx(devices, 0), *pending;
            g_string_append_printf(verdicts, " [%s %s %s %s]", member_str(d, "state"),
                                   member_str(d, "mode"),
                                   json_object_object_get_ex(d, "pending", &pending) && pending
                                       ? member_str(pending, "name")
                                       : "-",
                                   member_str(d, "safe"));
        }
        if (ev)
            json_object_put(ev);
    }
    int code = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
    g_test_message("migration %u: safe-migrate exit %d, path %s, attempts %" G_GINT64_FORMAT
                   ", holds %" G_GINT64_FORMAT ", at switchover:%s",
                   k->done, code, member_str(result, "path"), member_int(result, "attempts"),
                   member_int(result, "holds"), verdicts->str);
    k->attempts += (guint)MAX(member_int(result, "attempts"), 0);
    k->holds += (guint)MAX(member_int(result, "holds"), 0);
    /* A retry replaced the destination process (dest-prepare): adopt the new one. */
    if (!rig_vm_alive(dst) && !rig_vm_reload(dst, &error)) {
        g_test_message("migration %u: no destination after dest-prepare: %s", k->done,
                       error->message);
        g_clear_error(&error);
    }
    if (code != 0) {
        if (code == 4)
            k->held_out++;
        else
            k->failed++;
        g_test_message("migration %u: safe-migrate exit %d: %s %s", k->done, code,
                       result ? json_object_to_json_string(result) : "(no result)", err);
        return src;
    }
    return dst;
}

/* After safe-migrate said "migrated": the guest must run on the destination. */
static RigVm *verify_after(Campaign *k, RigVm *holder, RigVm *src, RigVm *dst, gint64 t0)
{
    if (holder != dst)
        return holder;
    if (console_wait_progress(&k->con, dst, 2, 30000) && is_running(dst)) {
        k->migrated++;
        g_autoptr(json_object) info = qmp_query(src, "query-migrate");
        k->downtime_sum_ms += member_int(info, "downtime");
        k->total_sum_ms += (g_get_monotonic_time() - t0) / 1000;
        return dst;
    }
    if (!rig_vm_alive(dst)) {
        count_death(k, dst, "after safe-migrate");
        return NULL;
    }
    k->stalled++;
    stall_diagnostics(k, dst);
    return dst;
}

static const char *const controller_names[] = {"uhci", "ehci", "ich9-ehci", "xhci"};
static const char *const form_names[] = {"cd", "disk", "bot-cd", "bot-cd-disk", "none"};

static const char *config_name(const Config *cfg)
{
    static char name[128];
    g_snprintf(name, sizeof(name), "%s/%s/%s/%s/%s", rig_qemu_name(cfg->qemu), cfg->machine,
               controller_names[cfg->controller], form_names[cfg->form],
               cfg->safe ? "safe-migrate" : "plain");
    return name;
}

static void report(Campaign *k)
{
    double mean_down = k->migrated ? (double)k->downtime_sum_ms / k->migrated : -1;
    double mean_total = k->migrated ? (double)k->total_sum_ms / k->migrated : -1;
    g_autofree char *line = g_strdup_printf(
        "{\"config\":\"%s\",\"accel\":\"%s\",\"migrations\":%u,\"migrated\":%u,\"crashes\":%u,"
        "\"crash_signals\":\"%s\",\"failed\":%u,\"held_out\":%u,\"stalled\":%u,"
        "\"guest_errors\":%u,\"mismatches\":%u,\"kernel_errors\":%u,\"reboots\":%u,"
        "\"guest_oopses\":%u,\"guest_panics\":%u,"
        "\"attempts\":%u,\"holds\":%u,\"mean_downtime_ms\":%.1f,\"mean_total_ms\":%.1f}",
        config_name(k->cfg), accel, k->done, k->migrated, k->crashes, k->crash_signals->str,
        k->failed, k->held_out, k->stalled, k->errors, k->mismatches, k->kerrs, k->fatals,
        k->con.oopses, k->panics, k->attempts, k->holds, mean_down, mean_total);
    g_test_message("summary %s", line);
    const char *path = g_getenv("SM_LINUX_REPORT");
    if (path) {
        FILE *f = fopen(path, "a");
        if (f) {
            fprintf(f, "%s\n", line);
            fclose(f);
        }
    }
}

static const char *choose_accel(void);

/* Whether the guest image has what the configuration needs (setup-guest.sh writes the list;
 * an image from before xHCI and disks were added has none). */
static gboolean guest_supports(const Config *cfg)
{
    g_autofree char *path = guest_file("features");
    g_autofree char *features = NULL;
    if (cfg->controller != RIG_CTRL_XHCI && !form_has_disk(cfg->form))
        return TRUE;
    return g_file_get_contents(path, &features, NULL, NULL) &&
           (cfg->controller != RIG_CTRL_XHCI || strstr(features, "xhci")) &&
           (!form_has_disk(cfg->form) || strstr(features, "disk"));
}

static gboolean guest_has(const Config *cfg)
{
    g_autofree char *path = guest_file("features");
    if (!guest_supports(cfg)) {
        g_test_fail_printf("the guest in %s lacks xHCI or disk support: rerun "
                           "tests/linux/setup-guest.sh",
                           path);
        return FALSE;
    }
    return TRUE;
}

/* Boots the campaign's guest and checks the workloads run clean before anything else. */
static gboolean campaign_boot(Campaign *k, const Config *cfg)
{
    if (!accel)
        accel = choose_accel();
    g_autofree char *vmlinuz = guest_file("vmlinuz");
    g_autofree char *initrd = guest_file("initrd.gz");
    if (!g_file_test(vmlinuz, G_FILE_TEST_EXISTS) || !g_file_test(initrd, G_FILE_TEST_EXISTS)) {
        g_test_fail_printf("no guest in %s: run tests/linux/setup-guest.sh", vmlinuz);
        return FALSE;
    }
    if (!guest_has(cfg))
        return FALSE;
    static guint serial;
    *k = (Campaign){.cfg = cfg};
    const char *md5;
    k->iso = guest_iso(&md5);
    g_autoptr(GError) error = NULL;
    g_autofree char *disk_md5 = NULL;
    if (form_has_disk(cfg->form)) {
        g_autofree char *name = g_strdup_printf("lxdisk%u", serial + 1);
        k->disk = rig_disk_copy(name, &error);
        g_assert_no_error(error);
        g_autofree char *bytes = NULL;
        gsize len;
        g_assert_true(g_file_get_contents(k->disk, &bytes, &len, NULL));
        g_assert_cmpuint(len, >=, 256 * 1024);
        disk_md5 = g_compute_checksum_for_data(G_CHECKSUM_MD5, (const guchar *)bytes, 256 * 1024);
    }
    /* no_timer_check: under a loaded TCG host the kernel's IO-APIC timer check can fail and
     * panic at boot ("IO-APIC + timer doesn't work!"), seen once in a campaign here. */
    k->append = g_strdup_printf(
        "console=ttyS0 quiet panic=-1 no_timer_check sm_md5=%s sm_poll=20 sm_cd=%d%s%s", md5,
        form_has_cd(cfg->form), disk_md5 ? " sm_disk_md5=" : "", disk_md5 ? disk_md5 : "");
    k->con.path = g_strdup_printf("%s/console-%u.txt", rig_tmpdir(), ++serial);
    k->con.partial = g_string_new(NULL);
    k->con.problem_lines = g_ptr_array_new_with_free_func(g_free);
    k->crash_signals = g_string_new(NULL);

    RigVmConfig boot = vm_config(k, FALSE, "lx");
    gint64 t_boot = g_get_monotonic_time();
    k->vm = rig_vm_start(&boot, &error);
    g_assert_no_error(error);
    gboolean up = console_wait_progress(&k->con, k->vm, 3, 240000);
    if (!up) {
        g_autofree char *err = rig_vm_stderr(k->vm);
        g_autofree char *text = NULL;
        g_file_get_contents(k->con.path, &text, NULL, NULL);
        g_test_message("QEMU: %s\nconsole:\n%s", err, text ? text : "");
    }
    g_assert_true(up);
    g_assert_cmpuint(k->con.ready, ==, 1);
    g_test_message("%s: guest up in %.1f s (%s)", config_name(cfg),
                   (g_get_monotonic_time() - t_boot) / 1e6, accel);
    g_assert_cmpuint(k->con.problems, ==, 0);
    return TRUE;
}

static void campaign_clear(Campaign *k)
{
    if (k->vm)
        rig_vm_free(k->vm);
    g_free(k->append);
    g_free(k->disk);
    g_free(k->con.path);
    g_string_free(k->con.partial, TRUE);
    g_ptr_array_unref(k->con.problem_lines);
    g_string_free(k->crash_signals, TRUE);
}

/* SM_LINUX_CANCEL_FIRST=1 (a diagnostic of the campaign): before each migration, one
 * attempt that stops at pre-switchover and is called off with migrate_cancel, as a gate's
 * hold does, but without any probe; the source resumes and the migration proper follows. */
static void cancelled_attempt(Campaign *k)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *name = g_strdup_printf("lxc%u", k->done + 1);
    RigVmConfig incoming = vm_config(k, TRUE, name);
    RigVm *dst = rig_vm_start(&incoming, &error);
    g_assert_no_error(error);
    static const char *const caps[] = {"pause-before-switchover", NULL};
    g_autofree char *status = rig_migrate(k->vm, dst, caps, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(status, ==, "pre-switchover");
    g_autoptr(json_object) r =
        qmp_client_execute(rig_vm_qmp(k->vm), "migrate_cancel", NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(r);
    static const char *const ends[] = {"cancelled", "failed", "completed", NULL};
    g_autofree char *end = rig_wait_migration_status(k->vm, ends, 30000, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(end, ==, "cancelled");
    g_autoptr(json_object) off = qmp_client_execute_json(
        rig_vm_qmp(k->vm), "migrate-set-capabilities",
        "{\"capabilities\":[{\"capability\":\"pause-before-switchover\",\"state\":false}]}",
        &error);
    g_assert_no_error(error);
    g_assert_nonnull(off);
    rig_vm_free(dst);
    for (int i = 0; i < 100 && !is_running(k->vm); i++)
        g_usleep(20000);
    g_assert_true(is_running(k->vm));
    g_usleep(g_random_int_range(50, 400) * 1000);
}

static void test_campaign(gconstpointer data)
{
    const Config *cfg = data;
    Campaign k;
    if (!campaign_boot(&k, cfg))
        return;
    g_autoptr(GError) error = NULL;
    guint problems0 = k.con.problems;

    for (k.done = 0; k.done < n_migrations && k.vm;) {
        g_autofree char *name = g_strdup_printf("lx%u", k.done + 1);
        RigVmConfig incoming = vm_config(&k, TRUE, name);
        RigVm *dst = rig_vm_start(&incoming, &error);
        g_assert_no_error(error);
        RigVm *src = k.vm;
        guint before = k.con.problems;
        k.oopses0 = k.con.oopses;
        if (g_getenv("SM_LINUX_CANCEL_FIRST"))
            cancelled_attempt(&k);
        k.done++;
        gint64 t0 = g_get_monotonic_time();
        RigVm *holder = cfg->safe ? verify_after(&k, migrate_safe(&k, dst), src, dst, t0)
                                  : migrate_plain(&k, dst, t0);
        console_poll(&k.con);
        if (k.con.problems > before)
            g_test_message("migration %u: %u new guest-visible problem(s)", k.done,
                           k.con.problems - before);
        if (holder == dst) {
            rig_vm_free(src);
        } else {
            rig_vm_free(dst);
        }
        k.vm = holder;
        /* The guest must be able to go on wherever it is now; if not, the campaign ends. */
        if (k.vm && !console_wait_progress(&k.con, k.vm, 1, 30000)) {
            g_test_message("migration %u: the guest is gone", k.done);
            break;
        }
    }
    /* Errors that surface late (a SCSI command timing out takes 30 s in the guest) show up
     * here, or in the migrations after them. */
    if (k.vm)
        console_wait_progress(&k.con, k.vm, 3, 30000);
    k.errors = k.con.problems - problems0;
    k.mismatches = k.con.mismatches;
    k.kerrs = k.con.kerrs;
    k.fatals = k.con.fatals;
    report(&k);

    if (cfg->safe) {
        /* What the gate must guarantee: every migration goes through, no destination dies,
         * the guest never reads wrong bytes, never reboots, and keeps working. */
        g_assert_cmpuint(k.crashes, ==, 0);
        g_assert_cmpuint(k.panics, ==, 0);
        g_assert_cmpuint(k.con.oopses, ==, 0);
        g_assert_cmpuint(k.done, ==, n_migrations);
        g_assert_cmpuint(k.stalled, ==, 0);
        g_assert_cmpuint(k.mismatches, ==, 0);
        g_assert_cmpuint(k.fatals, ==, 0);
        g_assert_cmpuint(k.failed + k.held_out, ==, 0);
        g_assert_cmpuint(k.migrated, ==, n_migrations);
        /* And the guest's kernel logs no storage error (USB reset, I/O error): the last
         * cause (a pending CSW judged safe) is held since, and 316 gated migrations then saw
         * none (README). The lines are in the messages above. */
        g_assert_cmpuint(k.kerrs, ==, 0);
    }
    /* Plain migrations are reported, never asserted: whether one lands between a command and
     * its data is chance. */

    campaign_clear(&k);
}

/* `safe-migrate status` on the running guest while it does I/O, `n_status` times: every probe
 * answers, the guest never sees an error, the VM keeps running. Each probe stops and resumes
 * the VM (sm_probe_vm); a capture of the running VM would stop it as SAVE_VM instead, which
 * EHCI acts on (hw/usb/hcd-ehci.c). */
static void test_status(gconstpointer data)
{
    const Config *cfg = data;
    Campaign k;
    if (!campaign_boot(&k, cfg))
        return;
    g_autofree char *bin = safe_migrate_path();
    g_autofree char *addr = g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(k.vm));
    guint idle = 0, busy = 0;
    for (guint i = 0; i < n_status; i++) {
        const char *argv[] = {bin, "status", "--qmp", addr, "--json", NULL};
        g_autofree char *out = NULL, *err = NULL;
        int wait_status = 0;
        g_autoptr(GError) error = NULL;
        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out,
                                   &err, &wait_status, &error));
        if (!g_spawn_check_wait_status(wait_status, NULL))
            g_test_message("status %u: %s", i, err);
        g_assert_true(g_spawn_check_wait_status(wait_status, NULL));
        g_autoptr(json_object) rep = json_tokener_parse(out);
        json_object *devs = json_object_object_get(rep, "devices");
        g_assert_cmpuint(json_object_array_length(devs), ==, 1);
        const char *state = member_str(json_object_array_get_idx(devs, 0), "state");
        g_assert_cmpstr(state, !=, "unknown");
        idle += g_str_equal(state, "idle");
        busy += g_str_equal(state, "busy");
        g_assert_true(is_running(k.vm));
        g_usleep(g_random_int_range(10, 200) * 1000);
    }
    /* A SCSI command the guest lost times out after 30 s: wait that long for its trace. */
    console_wait_progress(&k.con, k.vm, 3, 60000);
    g_usleep(35 * G_USEC_PER_SEC);
    console_poll(&k.con);
    g_test_message("%s: %u probes (%u idle, %u busy), %u guest-visible problem(s)",
                   config_name(cfg), n_status, idle, busy, k.con.problems);
    g_assert_cmpuint(k.con.problems, ==, 0);
    g_assert_true(console_wait_progress(&k.con, k.vm, 2, 30000));
    campaign_clear(&k);
}

/* KVM when /dev/kvm really runs a guest (nested setups may open it and then hang): the
 * kernel's first message must appear within a few seconds. SM_LINUX_ACCEL overrides. */
static const char *choose_accel(void)
{
    const char *forced = g_getenv("SM_LINUX_ACCEL");
    if (forced && *forced)
        return forced;
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return "tcg";
    g_autofree char *kernel = guest_file("vmlinuz");
    g_autofree char *initrd = guest_file("initrd.gz");
    g_autofree char *console = g_build_filename(rig_tmpdir(), "kvm-probe.txt", NULL);
    if (!g_file_test(kernel, G_FILE_TEST_EXISTS))
        return "tcg";
    RigVmConfig probe = {.qemu = RIG_QEMU_72,
                         .name = "kvmprobe",
                         .kernel = kernel,
                         .initrd = initrd,
                         .append = "console=ttyS0 earlyprintk=serial panic=-1",
                         .console = console,
                         .accel = "kvm",
                         .memory_mb = 64};
    g_autoptr(GError) error = NULL;
    g_autoptr(RigVm) vm = rig_vm_start(&probe, &error);
    if (!vm)
        return "tcg";
    for (int i = 0; i < 50; i++) {
        g_autofree char *text = NULL;
        if (g_file_get_contents(console, &text, NULL, NULL) && strstr(text, "Linux version"))
            return "kvm";
        g_usleep(100 * 1000);
    }
    return "tcg";
}

/* The CI set: UHCI + usb-storage CD-ROM plain and gated on 7.2 and 10.0. */
static const Config configs[] = {
    {RIG_QEMU_72, "pc", RIG_CTRL_UHCI, RIG_FORM_STORAGE_CD, FALSE, FALSE},
    {RIG_QEMU_72, "pc", RIG_CTRL_UHCI, RIG_FORM_STORAGE_CD, TRUE, FALSE},
    {RIG_QEMU_10, "pc", RIG_CTRL_UHCI, RIG_FORM_STORAGE_CD, FALSE, FALSE},
    {RIG_QEMU_10, "pc", RIG_CTRL_UHCI, RIG_FORM_STORAGE_CD, TRUE, FALSE},
    /* QEMU 10 with the pre-9.1 machine type: its fix is off, as on 7.2. */
    {RIG_QEMU_10, "pc-i440fx-9.0", RIG_CTRL_UHCI, RIG_FORM_STORAGE_CD, FALSE, TRUE},
    {RIG_QEMU_10, "pc-i440fx-9.0", RIG_CTRL_UHCI, RIG_FORM_STORAGE_CD, TRUE, TRUE},
};

/* The shapes users run (issue 14), plain and gated: 7.2 with every controller and form
 * (the UHCI CD-ROM is above), ich9 EHCI with UHCI companions, and xHCI on 10.0. All in
 * --long; CI runs one of the gated ones, a different one each day. */
static GArray *shape_configs(void)
{
    GArray *out = g_array_new(FALSE, FALSE, sizeof(Config));
    static const RigForm forms[] = {RIG_FORM_STORAGE_CD, RIG_FORM_STORAGE_DISK, RIG_FORM_BOT_CD,
                                    RIG_FORM_BOT_CD_DISK};
    static const RigController ctrls[] = {RIG_CTRL_UHCI, RIG_CTRL_EHCI, RIG_CTRL_XHCI};
    for (gsize c = 0; c < G_N_ELEMENTS(ctrls); c++) {
        for (gsize f = 0; f < G_N_ELEMENTS(forms); f++) {
            if (ctrls[c] == RIG_CTRL_UHCI && forms[f] == RIG_FORM_STORAGE_CD)
                continue;
            for (int safe = 0; safe <= 1; safe++) {
                Config k = {RIG_QEMU_72, "pc", ctrls[c], forms[f], safe, TRUE};
                g_array_append_val(out, k);
            }
        }
    }
    static const Config more[] = {
        {RIG_QEMU_72, "pc", RIG_CTRL_ICH9_EHCI, RIG_FORM_STORAGE_CD, FALSE, TRUE},
        {RIG_QEMU_72, "pc", RIG_CTRL_ICH9_EHCI, RIG_FORM_STORAGE_CD, TRUE, TRUE},
        {RIG_QEMU_10, "pc", RIG_CTRL_XHCI, RIG_FORM_STORAGE_CD, FALSE, TRUE},
        {RIG_QEMU_10, "pc", RIG_CTRL_XHCI, RIG_FORM_STORAGE_CD, TRUE, TRUE},
        {RIG_QEMU_10, "pc", RIG_CTRL_XHCI, RIG_FORM_BOT_CD, FALSE, TRUE},
        {RIG_QEMU_10, "pc", RIG_CTRL_XHCI, RIG_FORM_BOT_CD, TRUE, TRUE},
    };
    g_array_append_vals(out, more, G_N_ELEMENTS(more));
    return out;
}

/* `status` under guest I/O on EHCI and xHCI (issue 14): in CI. */
static const Config status_configs[] = {
    {RIG_QEMU_72, "pc", RIG_CTRL_EHCI, RIG_FORM_STORAGE_CD, FALSE, FALSE},
    {RIG_QEMU_72, "pc", RIG_CTRL_XHCI, RIG_FORM_STORAGE_CD, FALSE, FALSE},
};

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (int i = 1; i < argc; i++)
        if (g_str_equal(argv[i], "--long"))
            long_run = TRUE;
    const char *n = g_getenv("SM_LINUX_MIGRATIONS");
    if (n && *n) {
        n_migrations = (guint)g_ascii_strtoull(n, NULL, 10);
        long_run = TRUE;
    } else if (long_run) {
        n_migrations = 40;
    }
    const char *ns = g_getenv("SM_LINUX_STATUS_PROBES");
    if (ns && *ns)
        n_status = (guint)g_ascii_strtoull(ns, NULL, 10);
    for (guint i = 0; i < G_N_ELEMENTS(configs); i++) {
        /* Not even listed as skipped by default: CI counts a skip as a failure. */
        if (configs[i].long_only && !long_run)
            continue;
        g_autofree char *path = g_strdup_printf("/linux/%s", config_name(&configs[i]));
        g_test_add_data_func(path, &configs[i], test_campaign);
    }
    GArray *shapes = shape_configs(); /* lives as long as the tests */
    guint today = (guint)(g_get_real_time() / G_USEC_PER_SEC / 86400);
    guint n_gated = 0, gated = 0;
    for (guint i = 0; i < shapes->len; i++)
        n_gated += g_array_index(shapes, Config, i).safe;
    for (guint i = 0; i < shapes->len; i++) {
        const Config *cfg = &g_array_index(shapes, Config, i);
        gboolean rotating = cfg->safe && gated++ == today % n_gated;
        if (!long_run && !rotating)
            continue;
        if (!long_run && !guest_supports(cfg)) {
            /* CI rebuilds the guest (tests/setup.sh); a stale shared image only loses this. */
            g_printerr("# the guest image predates xHCI/disk support: %s not run (rerun "
                       "tests/linux/setup-guest.sh)\n",
                       config_name(cfg));
            continue;
        }
        g_autofree char *path = g_strdup_printf("/linux/%s", config_name(cfg));
        g_test_add_data_func(path, cfg, test_campaign);
    }
    for (guint i = 0; i < G_N_ELEMENTS(status_configs); i++) {
        if (!long_run && !guest_supports(&status_configs[i])) {
            g_printerr("# the guest image predates xHCI support: status on %s not run\n",
                       config_name(&status_configs[i]));
            continue;
        }
        g_autofree char *path =
            g_strdup_printf("/linux/status/%s", config_name(&status_configs[i]));
        g_test_add_data_func(path, &status_configs[i], test_status);
    }
    return g_test_run();
}
