/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the libvirt filter adds to each relayed QMP command: query-status round trips on a
 * real QEMU, straight on one monitor (the baseline) and through safe-migrate-filter on the
 * other (on the fds a holder would give it: libvirt's end a socketpair, QEMU's a connection),
 * interleaved pairwise in the same run, so that both sides of a pair see the same machine.
 * Prints median and p99 of each side and of the paired differences (the filter's cost).
 *   bench/libvirt-relay [--rounds N] [--warmup N] [--filter PATH] */
#include "common.h"
#include "sm-libvirt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* One monitor connection, read through a buffer: a byte-wise read would cost both sides of a
 * pair ~100 syscalls per reply and bury the filter's cost in the client's own. */
typedef struct {
    int fd;
    GString *in; /* received, not yet returned as a line */
} Conn;

static gboolean read_line(Conn *c, GString *line)
{
    char *nl;
    while (!(nl = memchr(c->in->str, '\n', c->in->len))) {
        char chunk[4096];
        ssize_t n = read(c->fd, chunk, sizeof chunk);
        if (n <= 0)
            return FALSE;
        g_string_append_len(c->in, chunk, n);
    }
    gsize len = (gsize)(nl - c->in->str);
    g_string_truncate(line, 0);
    g_string_append_len(line, c->in->str, (gssize)len);
    g_string_erase(c->in, 0, (gssize)len + 1);
    return TRUE;
}

static void command(Conn *c, const char *line, GString *buf)
{
    gsize len = strlen(line);
    if (write(c->fd, line, len) != (ssize_t)len)
        g_error("write: %s", g_strerror(errno));
    do { /* skip events */
        if (!read_line(c, buf))
            g_error("monitor closed");
    } while (!strstr(buf->str, "\"return\"") && !strstr(buf->str, "\"error\""));
}

/* Reads the greeting and negotiates: the monitor is ready for commands. */
static void negotiate(Conn *c, GString *buf)
{
    if (!read_line(c, buf) || !strstr(buf->str, "\"QMP\""))
        g_error("no greeting");
    command(c, "{\"execute\":\"qmp_capabilities\"}\r\n", buf);
}

/* One query-status round trip, in us. */
static double round_trip(Conn *c, GString *buf)
{
    gint64 t0 = g_get_monotonic_time();
    command(c, "{\"execute\":\"query-status\",\"id\":\"libvirt-1\"}\r\n", buf);
    return (double)(g_get_monotonic_time() - t0);
}

static int connect_qemu(const char *path)
{
    for (int i = 0; i < 100; i++) {
        int fd = sm_lv_connect_unix(path);
        if (fd >= 0)
            return fd;
        g_usleep(20000); /* QEMU accepts the next client once it has seen the last go */
    }
    g_error("cannot connect to QEMU");
}

static GPid spawn_filter(const char *filter, int libvirt_end, int qemu, const char *dir)
{
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

/* The filter on the VM's spare monitor, as the holder would start it: libvirt's end is
 * *libvirt (a socketpair), the filter's pid is returned. */
static GPid filtered_monitor(RigVm *vm, const char *filter, int *libvirt)
{
    int qemu = connect_qemu(rig_vm_sidecar_qmp_path(vm));
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0)
        g_error("socketpair: %s", g_strerror(errno));
    g_autofree char *dir = g_build_filename(rig_tmpdir(), "filter", NULL);
    g_mkdir_with_parents(dir, 0700);
    GPid pid = spawn_filter(filter, pair[1], qemu, dir);
    close(pair[1]);
    close(qemu);
    *libvirt = pair[0];
    return pid;
}

typedef struct {
    GArray *direct, *filtered, *added; /* us per round trip; added[i] = filtered[i] - direct[i] */
} Samples;

/* `rounds` pairs of round trips, one on each connection, the order alternating so that
 * neither side always runs first; the first `warmup` pairs are not kept. */
static void measure_pairs(Conn *direct, Conn *filtered, guint rounds, guint warmup, Samples *out)
{
    g_autoptr(GString) buf = g_string_new(NULL);
    for (guint i = 0; i < warmup + rounds; i++) {
        double d, f;
        if (i % 2) {
            d = round_trip(direct, buf);
            f = round_trip(filtered, buf);
        } else {
            f = round_trip(filtered, buf);
            d = round_trip(direct, buf);
        }
        if (i < warmup)
            continue;
        double added = f - d;
        g_array_append_val(out->direct, d);
        g_array_append_val(out->filtered, f);
        g_array_append_val(out->added, added);
    }
}

static void print_row(const char *what, GArray *v)
{
    printf("  %-34s median %7.1f us   p90 %7.1f us   p99 %7.1f us\n", what, median(v),
           percentile(v, 90), percentile(v, 99));
}

int main(int argc, char **argv)
{
    gint rounds = 20000, warmup = 200;
    g_autofree char *filter = NULL;
    GOptionEntry entries[] = {
        {"filter", 0, 0, G_OPTION_ARG_FILENAME, &filter,
         "The filter to measure (default: the build's), e.g. an older build's for a before/after",
         "PATH"},
        {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "Pairs of round trips (default 20000)", "N"},
        {"warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "Pairs not counted (default 200)", "N"},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the libvirt filter's relay cost");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, NULL) || rounds < 100 || warmup < 0) {
        g_printerr("libvirt-relay: --rounds N (at least 100: a p99 needs them) [--warmup N] "
                   "[--filter PATH]\n");
        return 2;
    }
    bench_env_defaults();
    g_autofree char *filter_path =
        filter ? g_canonicalize_filename(filter, NULL) /* it runs in its own directory */
               : g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "libvirt",
                                  "safe-migrate-filter", NULL);
    g_autoptr(GError) error = NULL;
    RigVmConfig config = {.qemu = RIG_QEMU_72, .name = "relay"};
    RigVm *vm = rig_vm_start(&config, &error);
    if (!vm)
        g_error("%s", error->message);
    /* The rig's own client leaves the main monitor to the baseline's connection. */
    qmp_client_close(rig_vm_qmp(vm));
    Conn direct = {connect_qemu(rig_vm_qmp_path(vm)), g_string_new(NULL)};
    Conn filtered = {-1, g_string_new(NULL)};
    GPid pid = filtered_monitor(vm, filter_path, &filtered.fd);
    g_autoptr(GString) buf = g_string_new(NULL);
    negotiate(&direct, buf);
    negotiate(&filtered, buf);
    Samples s = {g_array_new(FALSE, FALSE, sizeof(double)),
                 g_array_new(FALSE, FALSE, sizeof(double)),
                 g_array_new(FALSE, FALSE, sizeof(double))};
    measure_pairs(&direct, &filtered, (guint)rounds, (guint)warmup, &s);
    close(filtered.fd); /* the filter ends with its libvirt side */
    waitpid(pid, NULL, 0);
    close(direct.fd);
    g_string_free(direct.in, TRUE);
    g_string_free(filtered.in, TRUE);
    printf("QMP round trip (query-status), QEMU 7.2, %d pairs (direct and through the filter,\n"
           "interleaved, order alternating; %d warm-up pairs not counted):\n",
           rounds, warmup);
    print_row("direct (baseline)", s.direct);
    print_row("through the filter", s.filtered);
    print_row("added by the filter (paired diff)", s.added);
    g_array_unref(s.direct);
    g_array_unref(s.filtered);
    g_array_unref(s.added);
    rig_vm_free(vm);
    return 0;
}
