/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Load benchmark of safe-migrated: many real QEMU VMs (HLT BIOS, 16 MiB) under one daemon.
 * Reports the daemon's RSS, CPU and threads, and list / list --probe / migration wall times,
 * each against a baseline measured in the same run (an empty daemon, one VM, one migration). */
#include "common.h"

#include <gio/gunixsocketaddress.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int opt_vms = 100, opt_concurrent = 8, opt_idle_s = 10;

static const GOptionEntry entries[] = {
    {"vms", 0, 0, G_OPTION_ARG_INT, &opt_vms, "VMs under the daemon (default 100)", "N"},
    {"concurrent", 0, 0, G_OPTION_ARG_INT, &opt_concurrent,
     "Migrations started at once (default 8)", "K"},
    {"idle", 0, 0, G_OPTION_ARG_INT, &opt_idle_s, "Idle window for CPU, seconds (default 10)", "S"},
    G_OPTION_ENTRY_NULL,
};

/* ---- The daemon process ------------------------------------------------------------------ */

typedef struct {
    GSubprocess *proc;
    pid_t pid;
    char *dir, *sock;
} Daemon;

static void daemon_start(Daemon *d)
{
    g_autoptr(GError) error = NULL;
    d->dir = g_build_filename(rig_tmpdir(), "daemon", NULL);
    g_autofree char *vms = g_build_filename(d->dir, "vms.d", NULL);
    g_assert(g_mkdir_with_parents(vms, 0700) == 0);
    d->sock = g_build_filename(d->dir, "control.sock", NULL);
    g_autofree char *notify_path = g_build_filename(d->dir, "notify.sock", NULL);
    g_autoptr(GSocket) notify = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM,
                                             G_SOCKET_PROTOCOL_DEFAULT, &error);
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(notify_path);
    g_assert(g_socket_bind(notify, addr, TRUE, &error));
    g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
    g_subprocess_launcher_setenv(l, "NOTIFY_SOCKET", notify_path, TRUE);
    g_autofree char *log = g_build_filename(d->dir, "daemon.log", NULL);
    g_subprocess_launcher_set_stderr_file_path(l, log);
    g_autofree char *bin =
        g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "safe-migrated", NULL);
    d->proc = g_subprocess_launcher_spawn(l, &error, bin, "--config-dir", d->dir, "--socket",
                                          d->sock, NULL);
    g_assert_no_error(error);
    d->pid = (pid_t)g_ascii_strtoll(g_subprocess_get_identifier(d->proc), NULL, 10);
    char buf[256];
    g_socket_set_timeout(notify, 10);
    gssize n = g_socket_receive(notify, buf, sizeof buf - 1, NULL, &error);
    g_assert(n > 0 && g_str_has_prefix(buf, "READY=1"));
}

static void daemon_stop(Daemon *d)
{
    g_subprocess_send_signal(d->proc, SIGTERM);
    g_subprocess_wait(d->proc, NULL, NULL);
    g_clear_object(&d->proc);
    g_free(d->dir);
    g_free(d->sock);
}

/* VmRSS (KiB) and Threads from /proc/PID/status. */
static void proc_status(pid_t pid, gint64 *rss_kib, gint64 *threads)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    const char *p = strstr(text, "VmRSS:");
    *rss_kib = p ? g_ascii_strtoll(p + 6, NULL, 10) : -1;
    p = strstr(text, "Threads:");
    *threads = p ? g_ascii_strtoll(p + 8, NULL, 10) : -1;
}

/* utime + stime in seconds. */
static double proc_cpu(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *text = NULL;
    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    const char *p = strrchr(text, ')'); /* the command name may hold spaces */
    g_auto(GStrv) f = g_strsplit(p + 2, " ", -1);
    /* Fields after ")": state is [0], utime is field 14 of the line, [11] here. */
    double ticks = (double)g_ascii_strtoll(f[11], NULL, 10) + g_ascii_strtoll(f[12], NULL, 10);
    return ticks / (double)sysconf(_SC_CLK_TCK);
}

/* ---- Talking to it ------------------------------------------------------------------------ */

static json_object *call(Daemon *d, const char *json)
{
    g_autoptr(GSocketClient) sc = g_socket_client_new();
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(d->sock);
    g_autoptr(GError) error = NULL;
    g_autoptr(GSocketConnection) c =
        g_socket_client_connect(sc, G_SOCKET_CONNECTABLE(addr), NULL, &error);
    g_assert_no_error(error);
    g_autofree char *line = g_strconcat(json, "\n", NULL);
    g_assert(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(c)), line,
                                       strlen(line), NULL, NULL, &error));
    g_autoptr(GDataInputStream) in =
        g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(c)));
    g_autofree char *reply = g_data_input_stream_read_line(in, NULL, NULL, &error);
    g_assert(reply);
    return json_tokener_parse(reply);
}

static guint count_connected(Daemon *d)
{
    g_autoptr(json_object) r = call(d, "{\"op\":\"list\"}");
    json_object *vms = json_object_object_get(r, "vms");
    guint n = 0;
    for (size_t i = 0; i < json_object_array_length(vms); i++) {
        json_object *vm = json_object_array_get_idx(vms, i);
        json_object *c = json_object_object_get(vm, "connection");
        n += c && g_str_equal(json_object_get_string(c), "connected") &&
             json_object_object_get_ex(vm, "devices", NULL);
    }
    return n;
}

/* Median wall time (ms) of `reps` calls. */
static double time_call(Daemon *d, const char *json, guint reps)
{
    g_autoptr(GArray) t = g_array_new(FALSE, FALSE, sizeof(double));
    for (guint i = 0; i < reps; i++) {
        gint64 t0 = g_get_monotonic_time();
        json_object_put(call(d, json));
        double ms = (g_get_monotonic_time() - t0) / 1000.0;
        g_array_append_val(t, ms);
    }
    return median(t);
}

/* Starts the migrations of `names` at once, each on its own connection, and waits for all
 * results. Returns the wall time in ms; counts the migrated ones. */
static double migrate_all(Daemon *d, GPtrArray *names, guint *migrated)
{
    g_autoptr(GPtrArray) conns = g_ptr_array_new_with_free_func(g_object_unref);
    g_autoptr(GPtrArray) ins = g_ptr_array_new_with_free_func(g_object_unref);
    gint64 t0 = g_get_monotonic_time();
    for (guint i = 0; i < names->len; i++) {
        g_autoptr(GSocketClient) sc = g_socket_client_new();
        g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(d->sock);
        GSocketConnection *c = g_socket_client_connect(sc, G_SOCKET_CONNECTABLE(addr), NULL, NULL);
        g_assert(c);
        g_autofree char *req =
            g_strdup_printf("{\"op\":\"migrate\",\"vm\":\"%s\"}\n", (char *)names->pdata[i]);
        g_assert(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(c)), req,
                                           strlen(req), NULL, NULL, NULL));
        g_ptr_array_add(conns, c);
        g_ptr_array_add(ins, g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(c))));
    }
    *migrated = 0;
    for (guint i = 0; i < names->len; i++) {
        for (;;) {
            g_autofree char *line = g_data_input_stream_read_line(ins->pdata[i], NULL, NULL, NULL);
            g_assert(line);
            if (strstr(line, "\"event\":\"result\"")) {
                *migrated += strstr(line, "\"result\":\"migrated\"") != NULL;
                break;
            }
        }
    }
    return (g_get_monotonic_time() - t0) / 1000.0;
}

/* ---- The run ------------------------------------------------------------------------------- */

static void write_policy(Daemon *d, const char *name, RigVm *src, RigVm *dst)
{
    g_autofree char *path = g_strdup_printf("%s/vms.d/%s.conf", d->dir, name);
    g_autofree char *uri = dst ? rig_migration_uri() : NULL;
    g_autofree char *text =
        dst ? g_strdup_printf("[vm]\nsource-qmp=unix:%s\ndest-qmp=unix:%s\nuri=%s\n",
                              rig_vm_sidecar_qmp_path(src), rig_vm_sidecar_qmp_path(dst), uri)
            : g_strdup_printf("[vm]\nsource-qmp=unix:%s\n", rig_vm_sidecar_qmp_path(src));
    g_assert(g_file_set_contents(path, text, -1, NULL));
}

int main(int argc, char **argv)
{
    g_autoptr(GOptionContext) ctx = g_option_context_new("- load benchmark of safe-migrated");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error) || opt_vms < opt_concurrent + 1 ||
        opt_concurrent < 1) {
        g_printerr("daemon-load: %s\n", error ? error->message : "--vms must exceed --concurrent");
        return 2;
    }
    bench_env_defaults();
    signal(SIGPIPE, SIG_IGN);
    guint n = (guint)opt_vms, k = (guint)opt_concurrent;

    g_printerr("starting %u VMs and %u destinations (QEMU 7.2, 16 MiB, HLT BIOS)...\n", n, k + 1);
    g_autoptr(GPtrArray) vms = g_ptr_array_new_with_free_func((GDestroyNotify)rig_vm_free);
    g_autoptr(GPtrArray) dsts = g_ptr_array_new_with_free_func((GDestroyNotify)rig_vm_free);
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("v%u", i);
        RigVm *vm = rig_vm_start(&(RigVmConfig){.qemu = RIG_QEMU_72, .name = name}, &error);
        g_assert_no_error(error);
        g_ptr_array_add(vms, vm);
    }
    for (guint i = 0; i <= k; i++) {
        g_autofree char *name = g_strdup_printf("d%u", i);
        RigVm *vm = rig_vm_start(
            &(RigVmConfig){.qemu = RIG_QEMU_72, .name = name, .incoming = TRUE}, &error);
        g_assert_no_error(error);
        g_ptr_array_add(dsts, vm);
    }

    /* Baseline: the same daemon with no VM. */
    Daemon d = {0};
    daemon_start(&d);
    g_usleep(500 * 1000);
    gint64 rss0, threads0;
    proc_status(d.pid, &rss0, &threads0);
    double cpu_a = proc_cpu(d.pid);
    g_usleep((gulong)opt_idle_s * G_USEC_PER_SEC);
    double idle0 = proc_cpu(d.pid) - cpu_a;
    double list0 = time_call(&d, "{\"op\":\"list\"}", 20);

    /* One VM: the per-call baselines. */
    write_policy(&d, "v0", vms->pdata[0], dsts->pdata[0]);
    json_object_put(call(&d, "{\"op\":\"reload\"}"));
    while (count_connected(&d) < 1)
        g_usleep(20000);
    double probe1 = time_call(&d, "{\"op\":\"list\",\"probe\":true}", 5);

    /* All of them. */
    for (guint i = 1; i < n; i++) {
        g_autofree char *name = g_strdup_printf("v%u", i);
        write_policy(&d, name, vms->pdata[i], i <= k ? dsts->pdata[i] : NULL);
    }
    double cpu_b = proc_cpu(d.pid);
    gint64 t0 = g_get_monotonic_time();
    json_object_put(call(&d, "{\"op\":\"reload\"}"));
    while (count_connected(&d) < n)
        g_usleep(20000);
    double connect_ms = (g_get_monotonic_time() - t0) / 1000.0;
    double connect_cpu = proc_cpu(d.pid) - cpu_b;
    g_usleep(500 * 1000);
    gint64 rss_n, threads_n;
    proc_status(d.pid, &rss_n, &threads_n);
    cpu_a = proc_cpu(d.pid);
    g_usleep((gulong)opt_idle_s * G_USEC_PER_SEC);
    double idle_n = proc_cpu(d.pid) - cpu_a;
    double list_n = time_call(&d, "{\"op\":\"list\"}", 20);
    double probe_n = time_call(&d, "{\"op\":\"list\",\"probe\":true}", 3);

    /* One migration alone, then k at once. */
    g_autoptr(GPtrArray) one = g_ptr_array_new();
    g_ptr_array_add(one, "v0");
    guint ok1 = 0, okk = 0;
    double mig1 = migrate_all(&d, one, &ok1);
    g_autoptr(GPtrArray) many = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 1; i <= k; i++)
        g_ptr_array_add(many, g_strdup_printf("v%u", i));
    cpu_a = proc_cpu(d.pid);
    double mig_k = migrate_all(&d, many, &okk);
    double mig_cpu = proc_cpu(d.pid) - cpu_a;
    double list_during = time_call(&d, "{\"op\":\"list\"}", 5);
    gint64 rss_after, threads_after;
    proc_status(d.pid, &rss_after, &threads_after);
    daemon_stop(&d);

    printf("safe-migrated load: %u VMs (QEMU 7.2, 16 MiB, HLT BIOS), 2 cores\n\n", n);
    printf("%-44s %12s %12s %10s\n", "measure", "baseline", "loaded", "ratio");
    printf("%-44s %12.1f %12.1f %10.2f\n", "RSS, MiB (0 VMs / N VMs)", rss0 / 1024.0,
           rss_n / 1024.0, (double)rss_n / (double)rss0);
    printf("%-44s %12s %12.1f %10s\n", "RSS per VM, KiB", "", (double)(rss_n - rss0) / (double)n,
           "");
    printf("%-44s %12" G_GINT64_FORMAT " %12" G_GINT64_FORMAT " %10s\n", "threads (0 / N VMs)",
           threads0, threads_n, "");
    printf("%-44s %12.3f %12.3f %10s\n", "idle CPU, % of a core (0 / N VMs)",
           100.0 * idle0 / opt_idle_s, 100.0 * idle_n / opt_idle_s, "");
    printf("%-44s %12s %12.0f %10s\n", "connect all N (reload to all listed), ms", "", connect_ms,
           "");
    printf("%-44s %12s %12.2f %10s\n", "  CPU spent connecting, s", "", connect_cpu, "");
    printf("%-44s %12.2f %12.2f %10.2f\n", "list, ms (0 / N VMs), median", list0, list_n,
           list_n / list0);
    printf("%-44s %12.1f %12.1f %10.2f\n", "list --probe, ms (1 / N VMs), median", probe1, probe_n,
           probe_n / probe1);
    printf("%-44s %12.0f %12.0f %10.2f\n", "migration wall, ms (1 alone / K at once)", mig1, mig_k,
           mig_k / mig1);
    printf("%-44s %12u %12u %10s\n", "  migrated (of 1 / of K)", ok1, okk, "");
    printf("%-44s %12s %12.2f %10s\n", "  daemon CPU for the K migrations, s", "", mig_cpu, "");
    printf("%-44s %12.2f %12.2f %10.2f\n", "list after the migrations, ms (0 VMs / N)", list0,
           list_during, list_during / list0);
    printf("%-44s %12.1f %12.1f %10.2f\n", "RSS after migrations, MiB (0 VMs / N)", rss0 / 1024.0,
           rss_after / 1024.0, (double)rss_after / (double)rss0);
    printf("\nK = %u concurrent migrations\n", k);
    return okk == k && ok1 == 1 ? 0 : 1;
}
