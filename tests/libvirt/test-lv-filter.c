/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The filter under real libvirtd (the hook linked into both rig hosts by run.sh through
 * SM_LV_HOOKS): a USB CD-ROM domain starts through the hook with the filter on its monitor;
 * libvirt's own commands pass through the relay; kill -9 of the filter leaves the VM running,
 * reachable and gated again; a pending result at switchover makes plain `virsh migrate` fail
 * with the filter's message while the domain keeps running on the source with its data
 * intact, and the retry migrates; the same for usb-bot + scsi-cd; kill -9 of the filter while
 * it holds migrate-continue, or while a status probe has the VM stopped. */
#include "lv.h"

#include <gio/gio.h>

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static gboolean skip_without_rig(void)
{
    g_autofree char *why = NULL;
    if (lv_rig_dir(&why))
        return FALSE;
    g_test_skip(why);
    return TRUE;
}

static char *unique_name(const char *prefix)
{
    static guint counter;
    return g_strdup_printf("%s%u-%u", prefix, (guint)getpid(), ++counter);
}

/* Processes whose argv holds every one of `words` (NULL-terminated). */
static GArray *pids_with(const char *const *words)
{
    GArray *pids = g_array_new(FALSE, FALSE, sizeof(GPid));
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *e;
    while (proc && (e = g_dir_read_name(proc))) {
        if (!g_ascii_isdigit(e[0]))
            continue;
        g_autofree char *path = g_strdup_printf("/proc/%s/cmdline", e);
        g_autofree char *cmdline = NULL;
        gsize len;
        if (!g_file_get_contents(path, &cmdline, &len, NULL) || len == 0)
            continue;
        for (gsize i = 0; i + 1 < len; i++)
            if (cmdline[i] == 0)
                cmdline[i] = ' ';
        gboolean all = TRUE;
        for (guint w = 0; words[w]; w++)
            all = all && strstr(cmdline, words[w]);
        GPid pid = atoi(e);
        if (all && pid != getpid())
            g_array_append_val(pids, pid);
    }
    return pids;
}

/* The one process carrying both "safe-migrate" and the domain name: the filter. */
static GPid filter_pid(const char *name)
{
    const char *const words[] = {"safe-migrate", name, NULL};
    for (int i = 0; i < 100; i++) {
        g_autoptr(GArray) pids = pids_with(words);
        g_assert_cmpuint(pids->len, <=, 1);
        if (pids->len == 1)
            return g_array_index(pids, GPid, 0);
        g_usleep(50000);
    }
    return 0;
}

static char *query_status(LvHost host, const char *name)
{
    g_autofree char *out = NULL, *err = NULL;
    int rc = lv_virsh(host, &out, &err, "qemu-monitor-command", name,
                      "{\"execute\":\"query-status\"}", NULL);
    g_test_message("query-status: %d %s %s", rc, out, err);
    return rc == 0 ? g_steal_pointer(&out) : NULL;
}

/* The domain's directory on host A, where the filter's control socket is. */
static char *domain_dir(LvHost host, const char *name)
{
    g_autofree char *why = NULL;
    g_autofree char *lib = g_strdup_printf("%s/%s/lib/qemu", lv_rig_dir(&why), lv_host_name(host));
    g_autoptr(GDir) dir = g_dir_open(lib, 0, NULL);
    g_autofree char *suffix = g_strdup_printf("-%s", name);
    const char *e;
    while (dir && (e = g_dir_read_name(dir)))
        if (g_str_has_prefix(e, "domain-") && g_str_has_suffix(e, suffix))
            return g_build_filename(lib, e, NULL);
    return NULL;
}

static char *ask_status(LvHost host, const char *name)
{
    g_autofree char *dir = domain_dir(host, name);
    g_assert_nonnull(dir);
    g_autofree char *path = g_build_filename(dir, "safe-migrate.ctl", NULL);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
    g_assert_cmpint(write(fd, "status\n", 7), ==, 7);
    GString *reply = g_string_new(NULL);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        g_string_append_len(reply, buf, n);
    close(fd);
    return g_string_free(reply, FALSE);
}

static void test_relay_and_kill(void)
{
    if (skip_without_rig())
        return;
    g_autofree char *name = unique_name("flt");
    LvDomainConfig config = {.name = name, .form = LV_FORM_LIBVIRT, .qemu = RIG_QEMU_72};
    lv_domain_create(LV_A, &config);
    GPid filter = filter_pid(name);
    g_assert_cmpint(filter, >, 0);
    /* Nothing else of ours names both (the holder names no domain). */
    const char *const holder_words[] = {"safe-migrate-holder", NULL};
    g_autoptr(GArray) holders = pids_with(holder_words);
    g_assert_cmpuint(holders->len, >=, 1);

    g_autofree char *st = query_status(LV_A, name);
    g_assert_nonnull(strstr(st, "\"running\""));
    g_autoptr(RigGuest) guest = lv_guest_new(LV_A, name);
    guint8 inq[36], again[36];
    lv_guest_settle(guest, rig_cmd_inquiry(), inq, sizeof inq);
    g_autofree char *status = ask_status(LV_A, name);
    g_test_message("status: %s", status);
    g_assert_nonnull(strstr(status, "\"state\":\"idle\""));

    GPid qemu = lv_qemu_pid(LV_A, name);
    g_assert_cmpint(kill(filter, SIGKILL), ==, 0);
    g_assert_true(lv_wait_gone(filter, 5000));
    GPid next = filter_pid(name);
    g_assert_cmpint(next, >, 0);
    g_assert_cmpint(next, !=, filter);
    g_autofree char *st2 = query_status(LV_A, name);
    g_assert_nonnull(st2);
    g_assert_nonnull(strstr(st2, "\"running\""));
    g_assert_true(lv_domain_running(LV_A, name));
    g_assert_cmpint(lv_qemu_pid(LV_A, name), ==, qemu);
    lv_guest_answer(guest, rig_cmd_inquiry(), again, sizeof again);
    g_assert_cmpmem(again, sizeof again, inq, sizeof inq);
    g_autofree char *status2 = ask_status(LV_A, name);
    g_assert_nonnull(strstr(status2, "\"state\":\"idle\""));
    /* The captures stopped the VM briefly; libvirt was not told (no Suspended state). */
    g_autofree char *state = NULL;
    g_assert_cmpint(lv_virsh(LV_A, &state, NULL, "domstate", name, "--reason", NULL), ==, 0);
    g_assert_nonnull(strstr(state, "running"));
    lv_domain_destroy(LV_A, name);
}

/* A READ CAPACITY result is pending: virsh migrate fails with the filter's message, the
 * domain stays on A, the guest fetches the right bytes there, and the retry migrates. */
static void test_held_then_retry(gconstpointer data)
{
    LvForm form = GPOINTER_TO_INT(data);
    if (skip_without_rig())
        return;
    g_autoptr(GError) error = NULL;
    g_autofree char *name = unique_name("held");
    LvDomainConfig config = {.name = name, .form = form, .qemu = RIG_QEMU_72};
    lv_domain_create(LV_A, &config);
    g_autoptr(RigGuest) guest = lv_guest_new(LV_A, name);
    RigCommand cmd = rig_cmd_read_capacity();
    guint8 reference[8], buf[8];
    lv_guest_settle(guest, cmd, reference, sizeof reference);
    g_assert_true(rig_guest_send_cbw(guest, 0, &cmd, NULL, &error));
    g_assert_no_error(error);

    g_autofree char *err = NULL;
    int rc = lv_migrate(LV_A, name, NULL, &err);
    g_test_message("virsh migrate (pending): %d %s", rc, err);
    g_assert_cmpint(rc, !=, 0);
    g_assert_nonnull(strstr(err, "safe-migrate"));
    g_assert_nonnull(strstr(err, "held"));
    g_assert_true(lv_domain_running(LV_A, name));
    g_assert_false(lv_domain_running(LV_B, name));
    g_autofree char *st = query_status(LV_A, name);
    g_assert_nonnull(strstr(st, "\"running\""));

    g_assert_cmpint(rig_guest_data_in(guest, 0, buf, sizeof buf, &error), ==, sizeof buf);
    g_assert_no_error(error);
    guint8 csw;
    g_assert_true(rig_guest_read_csw(guest, 0, &csw, NULL, &error));
    g_assert_cmpint(csw, ==, 0);
    g_assert_cmpmem(buf, sizeof buf, reference, sizeof reference);

    g_assert_nonnull(strstr(err, "READ CAPACITY"));
    g_clear_pointer(&err, g_free);
    rc = lv_migrate(LV_A, name, NULL, &err);
    g_test_message("virsh migrate (idle): %d %s", rc, err);
    g_assert_cmpint(rc, ==, 0);
    g_assert_true(lv_domain_running(LV_B, name));
    g_autofree char *qtest_b = lv_qtest_path(LV_B, name);
    g_assert_true(rig_guest_attach_at(guest, qtest_b, name, &error));
    g_assert_no_error(error);
    lv_guest_answer(guest, cmd, buf, sizeof buf);
    g_assert_cmpmem(buf, sizeof buf, reference, sizeof reference);
    g_assert_true(lv_domain_running(LV_B, name));
    lv_domain_destroy(LV_B, name);
}

static gboolean stopped(GPid pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *stat = NULL;
    if (!g_file_get_contents(path, &stat, NULL, NULL))
        return FALSE;
    const char *end = strrchr(stat, ')');
    return end && end[1] == ' ' && end[2] == 'T';
}

/* kill -9 of the filter while it holds libvirt's migrate-continue (stopped there by the fault
 * file): its restart takes the held command up again; idle, the migration completes;
 * pending, it is refused and the domain runs on the source, never left paused. */
static void test_kill_while_held(gconstpointer data)
{
    gboolean pending = GPOINTER_TO_INT(data);
    if (skip_without_rig())
        return;
    g_autoptr(GError) error = NULL;
    g_autofree char *name = unique_name("kil");
    LvDomainConfig config = {.name = name, .form = LV_FORM_LIBVIRT, .qemu = RIG_QEMU_72};
    lv_domain_create(LV_A, &config);
    g_autoptr(RigGuest) guest = lv_guest_new(LV_A, name);
    RigCommand cmd = rig_cmd_read_capacity();
    guint8 reference[8], buf[8];
    lv_guest_settle(guest, cmd, reference, sizeof reference);
    if (pending)
        g_assert_true(rig_guest_send_cbw(guest, 0, &cmd, NULL, &error));
    g_assert_no_error(error);
    g_autofree char *dir = domain_dir(LV_A, name);
    g_autofree char *fault = g_build_filename(dir, "safe-migrate.fault", NULL);
    g_assert_true(g_file_set_contents(fault, "hold\n", -1, NULL));
    GPid filter = filter_pid(name);

    g_autofree char *uri_a = lv_uri(LV_A), *uri_b = lv_uri(LV_B);
    const char *argv[] = {"virsh",
                          "-c",
                          uri_a,
                          "migrate",
                          "--live",
                          "--migrateuri",
                          "tcp://127.0.0.1",
                          "--listen-address",
                          "127.0.0.1",
                          name,
                          uri_b,
                          NULL};
    g_autoptr(GSubprocess) virsh = g_subprocess_newv(
        argv, G_SUBPROCESS_FLAGS_STDERR_PIPE | G_SUBPROCESS_FLAGS_STDOUT_SILENCE, &error);
    g_assert_no_error(error);
    for (int i = 0; i < 600 && !stopped(filter); i++)
        g_usleep(50000);
    g_assert_true(stopped(filter));
    g_assert_cmpint(kill(filter, SIGKILL), ==, 0);
    g_autofree char *err = NULL;
    g_assert_true(g_subprocess_communicate_utf8(virsh, NULL, NULL, NULL, &err, &error));
    int rc = g_subprocess_get_exit_status(virsh);
    g_test_message("virsh migrate with the filter killed while holding: %d %s", rc, err);
    g_assert_cmpint(filter_pid(name) == filter, ==, FALSE);
    if (!pending) {
        g_assert_cmpint(rc, ==, 0);
        g_assert_true(lv_domain_running(LV_B, name));
        g_autofree char *qtest_b = lv_qtest_path(LV_B, name);
        g_assert_true(rig_guest_attach_at(guest, qtest_b, name, &error));
        lv_guest_answer(guest, cmd, buf, sizeof buf);
        g_assert_cmpmem(buf, sizeof buf, reference, sizeof reference);
        lv_domain_destroy(LV_B, name);
        return;
    }
    g_assert_cmpint(rc, !=, 0);
    g_assert_nonnull(strstr(err, "safe-migrate"));
    g_assert_nonnull(strstr(err, "held"));
    g_assert_true(lv_domain_running(LV_A, name));
    g_assert_false(lv_domain_running(LV_B, name));
    g_autofree char *st = query_status(LV_A, name);
    g_assert_nonnull(strstr(st, "\"running\""));
    g_assert_cmpint(rig_guest_data_in(guest, 0, buf, sizeof buf, &error), ==, sizeof buf);
    g_assert_no_error(error);
    g_assert_cmpmem(buf, sizeof buf, reference, sizeof reference);
    lv_domain_destroy(LV_A, name);
}

/* kill -9 of the filter while a status probe has the VM stopped (between its stop and its
 * cont): the restarted filter resumes the VM, and libvirt never saw it paused. */
static void test_kill_while_stopped(void)
{
    if (skip_without_rig())
        return;
    g_autofree char *name = unique_name("stp");
    LvDomainConfig config = {.name = name, .form = LV_FORM_LIBVIRT, .qemu = RIG_QEMU_72};
    lv_domain_create(LV_A, &config);
    g_autoptr(RigGuest) guest = lv_guest_new(LV_A, name);
    guint8 inq[36], again[36];
    lv_guest_settle(guest, rig_cmd_inquiry(), inq, sizeof inq);
    g_autofree char *dir = domain_dir(LV_A, name);
    g_autofree char *fault = g_build_filename(dir, "safe-migrate.fault", NULL);
    g_assert_true(g_file_set_contents(fault, "probe-stopped\n", -1, NULL));
    GPid filter = filter_pid(name);
    g_autofree char *path = g_build_filename(dir, "safe-migrate.ctl", NULL);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
    g_assert_cmpint(write(fd, "status\n", 7), ==, 7);
    for (int i = 0; i < 600 && !stopped(filter); i++)
        g_usleep(50000);
    g_assert_true(stopped(filter));
    g_autofree char *marker = g_build_filename(dir, "safe-migrate.stopped", NULL);
    g_assert_true(g_file_test(marker, G_FILE_TEST_EXISTS)); /* the probe's stop was sent */
    g_assert_cmpint(kill(filter, SIGKILL), ==, 0);
    close(fd);
    g_autofree char *st = query_status(LV_A, name);
    g_assert_nonnull(st);
    g_assert_nonnull(strstr(st, "\"running\""));
    lv_guest_answer(guest, rig_cmd_inquiry(), again, sizeof again);
    g_assert_cmpmem(again, sizeof again, inq, sizeof inq);
    g_autofree char *state = NULL;
    g_assert_cmpint(lv_virsh(LV_A, &state, NULL, "domstate", name, NULL), ==, 0);
    g_assert_nonnull(strstr(state, "running"));
    lv_domain_destroy(LV_A, name);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/libvirt/filter/relay-and-kill", test_relay_and_kill);
    g_test_add_data_func("/libvirt/filter/held-then-retry/scsi-hd",
                         GINT_TO_POINTER(LV_FORM_LIBVIRT), test_held_then_retry);
    g_test_add_data_func("/libvirt/filter/held-then-retry/scsi-cd", GINT_TO_POINTER(LV_FORM_BOT_CD),
                         test_held_then_retry);
    g_test_add_data_func("/libvirt/filter/kill-while-held/idle", GINT_TO_POINTER(FALSE),
                         test_kill_while_held);
    g_test_add_data_func("/libvirt/filter/kill-while-held/pending", GINT_TO_POINTER(TRUE),
                         test_kill_while_held);
    g_test_add_func("/libvirt/filter/kill-while-stopped-for-status", test_kill_while_stopped);
    return g_test_run();
}
