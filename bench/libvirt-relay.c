/* SPDX-License-Identifier: GPL-2.0-or-later */
/* What the libvirt filter adds to each relayed QMP command: query-status round trips on a
 * real QEMU, straight on one monitor (the baseline) and through safe-migrate-filter on the
 * other (on the fds a holder would give it: libvirt's end a socketpair, QEMU's a connection),
 * interleaved pairwise in the same run, so that both sides of a pair see the same machine.
 * Prints median and p99 of each side and of the paired differences (the filter's cost).
 * --compare measures a second filter (an older build's, say) on a second VM in the same
 * rounds, so that a before/after sees the same machine too.
 *   bench/libvirt-relay [--rounds N] [--warmup N] [--filter PATH] [--compare PATH] */
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
    /* Its own directory: sockets and state files are per filter. */
    g_autofree char *name = g_strdup_printf("%s-filter", rig_vm_name(vm));
    g_autofree char *dir = g_build_filename(rig_tmpdir(), name, NULL);
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

/* One VM with its two connections: straight, and through a filter. */
typedef struct {
    const char *filter;
    RigVm *vm;
    Conn direct, filtered;
    GPid pid;
    Samples s;
} Setup;

static void setup_start(Setup *x, const char *name, const char *filter)
{
    g_autoptr(GError) error = NULL;
    RigVmConfig config = {.qemu = RIG_QEMU_72, .name = name};
    x->filter = filter;
    x->vm = rig_vm_start(&config, &error);
    if (!x->vm)
        g_error("%s", error->message);
    /* The rig's own client leaves the main monitor to the baseline's connection. */
    qmp_client_close(rig_vm_qmp(x->vm));
    x->direct = (Conn){connect_qemu(rig_vm_qmp_path(x->vm)), g_string_new(NULL)};
    x->filtered = (Conn){-1, g_string_new(NULL)};
    x->pid = filtered_monitor(x->vm, filter, &x->filtered.fd);
    g_autoptr(GString) buf = g_string_new(NULL);
    negotiate(&x->direct, buf);
    negotiate(&x->filtered, buf);
    x->s.direct = g_array_new(FALSE, FALSE, sizeof(double));
    x->s.filtered = g_array_new(FALSE, FALSE, sizeof(double));
    x->s.added = g_array_new(FALSE, FALSE, sizeof(double));
}

static void setup_stop(Setup *x)
{
    close(x->filtered.fd); /* the filter ends with its libvirt side */
    waitpid(x->pid, NULL, 0);
    close(x->direct.fd);
    g_string_free(x->direct.in, TRUE);
    g_string_free(x->filtered.in, TRUE);
    g_array_unref(x->s.direct);
    g_array_unref(x->s.filtered);
    g_array_unref(x->s.added);
    rig_vm_free(x->vm);
}

/* One pair of round trips, in the order `filtered_first` says; kept unless warming up. */
static void measure_pair(Setup *x, gboolean filtered_first, gboolean keep, GString *buf)
{
    double d, f;
    if (filtered_first) {
        f = round_trip(&x->filtered, buf);
        d = round_trip(&x->direct, buf);
    } else {
        d = round_trip(&x->direct, buf);
        f = round_trip(&x->filtered, buf);
    }
    if (!keep)
        return;
    double added = f - d;
    g_array_append_val(x->s.direct, d);
    g_array_append_val(x->s.filtered, f);
    g_array_append_val(x->s.added, added);
}

/* `rounds` pairs of round trips on each setup, the order alternating so that neither side
 * (nor, with two setups, neither setup) always runs first; the first `warmup` are not kept. */
static void measure(Setup *setups, guint n, guint rounds, guint warmup)
{
    g_autoptr(GString) buf = g_string_new(NULL);
    for (guint i = 0; i < warmup + rounds; i++)
        for (guint k = 0; k < n; k++)
            measure_pair(&setups[(i / 2 + k) % n], i % 2 == 0, i >= warmup, buf);
}

static void print_row(const char *what, GArray *v)
{
    printf("  %-34s median %7.1f us   p90 %7.1f us   p99 %7.1f us\n", what, median(v),
           percentile(v, 90), percentile(v, 99));
}

static void print_setup(const Setup *x)
{
    printf("filter %s:\n", x->filter);
    print_row("direct (baseline)", x->s.direct);
    print_row("through the filter", x->s.filtered);
    print_row("added by the filter (paired diff)", x->s.added);
}

int main(int argc, char **argv)
{
    gint rounds = 20000, warmup = 200;
    g_autofree char *filter = NULL, *compare = NULL;
    GOptionEntry entries[] = {
        {"filter", 0, 0, G_OPTION_ARG_FILENAME, &filter,
         "The filter to measure (default: the build's), e.g. an older build's for a before/after",
         "PATH"},
        {"compare", 0, 0, G_OPTION_ARG_FILENAME, &compare,
         "Also measure this filter, on a second VM, in the same rounds (before/after in one run)",
         "PATH"},
        {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "Pairs of round trips (default 20000)", "N"},
        {"warmup", 0, 0, G_OPTION_ARG_INT, &warmup, "Pairs not counted (default 200)", "N"},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the libvirt filter's relay cost");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, NULL) || rounds < 100 || warmup < 0) {
        g_printerr("libvirt-relay: --rounds N (at least 100: a p99 needs them) [--warmup N] "
                   "[--filter PATH] [--compare PATH]\n");
        return 2;
    }
    bench_env_defaults();
    /* Absolute paths: each filter runs in its own directory. */
    char *paths[2] = {filter ? g_canonicalize_filename(filter, NULL)
                             : g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "libvirt",
                                                "safe-migrate-filter", NULL),
                      compare ? g_canonicalize_filename(compare, NULL) : NULL};
    Setup setups[2] = {0};
    guint n = compare ? 2 : 1;
    for (guint k = 0; k < n; k++)
        setup_start(&setups[k], k ? "relay-compare" : "relay", paths[k]);
    measure(setups, n, (guint)rounds, (guint)warmup);
    printf("QMP round trip (query-status), QEMU 7.2, %d pairs (direct and through the filter,\n"
           "interleaved, order alternating; %d warm-up pairs not counted)%s:\n",
           rounds, warmup, n > 1 ? ", two VMs, one per filter, in the same rounds" : "");
    for (guint k = 0; k < n; k++)
        print_setup(&setups[k]);
    double m1 = n > 1 ? median(setups[1].s.added) : 0,
           p1 = n > 1 ? percentile(setups[1].s.added, 99) : 0;
    if (m1 > 0 && p1 > 0) /* a ratio against nothing (a negative median under load) means nothing */
        printf("ratio of the added cost (first / second filter): median %.2f, p99 %.2f\n",
               median(setups[0].s.added) / m1, percentile(setups[0].s.added, 99) / p1);
    for (guint k = 0; k < n; k++)
        setup_stop(&setups[k]);
    g_free(paths[0]);
    g_free(paths[1]);
    return 0;
}
