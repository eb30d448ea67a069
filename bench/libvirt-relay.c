/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the libvirt filter adds to each relayed QMP command: query-status round trips on a
 * real QEMU's spare monitor, straight (the baseline) and through safe-migrate-filter on the
 * fds a holder would give it (libvirt's end a socketpair, QEMU's a connection), in
 * alternating blocks of the same run. Prints median and p99 of both and the difference.
 *   bench/libvirt-relay [--rounds N] [--blocks N] */
#include "common.h"
#include "sm-libvirt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static gboolean read_line(int fd, GString *buf)
{
    g_string_truncate(buf, 0);
    char c;
    while (read(fd, &c, 1) == 1) {
        if (c == '\n')
            return TRUE;
        g_string_append_c(buf, c);
    }
    return FALSE;
}

static void command(int fd, const char *line, GString *buf)
{
    gsize len = strlen(line);
    if (write(fd, line, len) != (ssize_t)len)
        g_error("write: %s", g_strerror(errno));
    do { /* skip events */
        if (!read_line(fd, buf))
            g_error("monitor closed");
    } while (!strstr(buf->str, "\"return\"") && !strstr(buf->str, "\"error\""));
}

/* `rounds` round trips on a negotiated monitor, each in ns. */
static void measure(int fd, guint rounds, GArray *out)
{
    g_autoptr(GString) buf = g_string_new(NULL);
    if (!read_line(fd, buf) || !strstr(buf->str, "\"QMP\""))
        g_error("no greeting");
    command(fd, "{\"execute\":\"qmp_capabilities\"}\r\n", buf);
    for (guint i = 0; i < rounds; i++) {
        gint64 t0 = g_get_monotonic_time();
        command(fd, "{\"execute\":\"query-status\",\"id\":\"libvirt-1\"}\r\n", buf);
        double us = (double)(g_get_monotonic_time() - t0);
        g_array_append_val(out, us);
    }
}

static int connect_qemu(RigVm *vm)
{
    for (int i = 0; i < 100; i++) {
        int fd = sm_lv_connect_unix(rig_vm_sidecar_qmp_path(vm));
        if (fd >= 0)
            return fd;
        g_usleep(20000); /* QEMU accepts the next client once it has seen the last go */
    }
    g_error("cannot connect to QEMU");
}

static GPid spawn_filter(int libvirt_end, int qemu, const char *dir)
{
    g_autofree char *filter = g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "libvirt",
                                               "safe-migrate-filter", NULL);
    GPid pid = fork();
    if (pid == 0) {
        if (chdir(dir) < 0)
            _exit(127);
        dup2(libvirt_end, SM_LV_FD_LIBVIRT);
        dup2(qemu, SM_LV_FD_QEMU);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        for (int fd = 5; fd < 1024; fd++) /* our end of the pair above all: EOF must reach it */
            close(fd);
        execl(filter, "safe-migrate-filter", "--domain", "bench", "--config-dir", "/nonexistent",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void block(RigVm *vm, gboolean filtered, guint rounds, GArray *out)
{
    int qemu = connect_qemu(vm);
    if (!filtered) {
        measure(qemu, rounds, out);
        close(qemu);
        return;
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0)
        g_error("socketpair: %s", g_strerror(errno));
    g_autofree char *dir = g_build_filename(rig_tmpdir(), "filter", NULL);
    g_mkdir_with_parents(dir, 0700);
    GPid pid = spawn_filter(pair[1], qemu, dir);
    close(pair[1]);
    close(qemu);
    measure(pair[0], rounds, out);
    close(pair[0]); /* the filter ends with its libvirt side */
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
    gint rounds = 2000, blocks = 5;
    GOptionEntry entries[] = {
        {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "Round trips per block", "N"},
        {"blocks", 0, 0, G_OPTION_ARG_INT, &blocks, "Blocks of each kind, alternating", "N"},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the libvirt filter's relay cost");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, NULL) || rounds < 1 || blocks < 1)
        return 2;
    bench_env_defaults();
    g_autoptr(GError) error = NULL;
    RigVmConfig config = {.qemu = RIG_QEMU_72, .name = "relay"};
    RigVm *vm = rig_vm_start(&config, &error);
    if (!vm)
        g_error("%s", error->message);
    g_autoptr(GArray) direct = g_array_new(FALSE, FALSE, sizeof(double));
    g_autoptr(GArray) relayed = g_array_new(FALSE, FALSE, sizeof(double));
    for (gint b = 0; b < blocks; b++) {
        block(vm, FALSE, (guint)rounds, direct);
        block(vm, TRUE, (guint)rounds, relayed);
    }
    double dm = median(direct), dp = percentile(direct, 99);
    double rm = median(relayed), rp = percentile(relayed, 99);
    printf("QMP round trip (query-status), QEMU 7.2, %d x %d rounds each:\n", blocks, rounds);
    printf("  %-22s median %8.1f us   p99 %8.1f us\n", "direct (baseline)", dm, dp);
    printf("  %-22s median %8.1f us   p99 %8.1f us\n", "through the filter", rm, rp);
    printf("  %-22s median %8.1f us   p99 %8.1f us\n", "added by the filter", rm - dm, rp - dp);
    rig_vm_free(vm);
    return 0;
}
