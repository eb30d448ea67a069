/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Hold cost: what one held attempt costs on a VM that keeps dirtying memory. A large VM whose
 * "guest" (qtest memsets from a thread of this program) keeps rewriting part of its RAM while
 * it migrates back and forth; per round a plain QMP migration, a safe-migrate migration with
 * an idle device and one with a GESN parked at the switchover (one hold). Times and bytes are
 * printed as ratios to the clean gated run of the same rounds. */
#include "common.h"

#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <gio/gunixinputstream.h>

static gint opt_rounds = 3, opt_memory_mb = 1024, opt_dirty_mb = 512, opt_rate = 64,
            opt_bandwidth = 1024;
static char *opt_qemu, *opt_backoff;
static gboolean opt_verbose;

static const GOptionEntry entries[] = {
    {"rounds", 'n', 0, G_OPTION_ARG_INT, &opt_rounds, "Rounds of the three migrations (3)", "N"},
    {"qemu", 0, 0, G_OPTION_ARG_STRING, &opt_qemu, "7.2 or 10.0 (7.2)", "VERSION"},
    {"memory-mb", 0, 0, G_OPTION_ARG_INT, &opt_memory_mb, "Guest RAM, MiB (1024)", "MB"},
    {"dirty-mb", 0, 0, G_OPTION_ARG_INT, &opt_dirty_mb, "RAM the guest keeps rewriting (512)",
     "MB"},
    {"dirty-rate", 0, 0, G_OPTION_ARG_INT, &opt_rate, "Its rewrite rate, MiB/s (64)", "MIBS"},
    {"bandwidth", 0, 0, G_OPTION_ARG_INT, &opt_bandwidth, "max-bandwidth, MiB/s (1024)", "MIBS"},
    {"backoff", 0, 0, G_OPTION_ARG_STRING, &opt_backoff, "safe-migrate --backoff (its default)",
     "DURATION"},
    {"verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "safe-migrate's events on stderr", NULL},
    G_OPTION_ENTRY_NULL,
};

#define DIRTY_BASE (256ull << 20) /* clear of the rig's UHCI structures in the first MiB */
#define CHUNK (4u << 20)

/* ---- The guest's writes: one thread, paced, sharing the qtest connection under a lock ---- */

typedef struct {
    RigGuest *guest;
    GMutex lock; /* the guest's qtest connection: the writer and the main thread's transfers */
    GCond cond;
    gboolean paused, quit;
    guint64 written, failures;
    gint64 busy_us; /* time the writer was not paused */
    GThread *thread;
} Dirtier;

static gpointer dirtier_main(gpointer data)
{
    Dirtier *d = data;
    guint64 off = 0, size = (guint64)opt_dirty_mb << 20;
    guint8 value = 1;
    gint64 period = (gint64)CHUNK * G_USEC_PER_SEC / ((gint64)opt_rate << 20);
    gint64 next = g_get_monotonic_time(), since = next;
    g_mutex_lock(&d->lock);
    while (!d->quit) {
        gint64 now = g_get_monotonic_time();
        if (d->paused) {
            d->busy_us += now - since;
            while (d->paused && !d->quit)
                g_cond_wait(&d->cond, &d->lock);
            next = since = g_get_monotonic_time();
            continue;
        }
        if (now < next) {
            g_cond_wait_until(&d->cond, &d->lock, next);
            continue;
        }
        g_autoptr(GError) error = NULL;
        if (rig_guest_fill_ram(d->guest, DIRTY_BASE + off, CHUNK, value, &error))
            d->written += CHUNK;
        else
            d->failures++;
        off += CHUNK;
        if (off >= size) {
            off = 0;
            value = value == 0xff ? 1 : value + 1; /* every pass really changes the pages */
        }
        /* Paced, with no burst to catch up after a stall (a stopped VM writes nothing). */
        next = MAX(next + period, g_get_monotonic_time() - period);
    }
    d->busy_us += g_get_monotonic_time() - since;
    g_mutex_unlock(&d->lock);
    return NULL;
}

static void dirtier_pause(Dirtier *d, gboolean paused)
{
    g_mutex_lock(&d->lock);
    d->paused = paused;
    g_cond_signal(&d->cond);
    g_mutex_unlock(&d->lock);
}

/* ---- Measurements ------------------------------------------------------------------------ */

typedef struct {
    GArray *wall, *downtime;      /* whole migration, ms */
    GArray *held_ms, *held_mib;   /* the held attempt: attempt event to hold, bytes sent */
    GArray *precopy_ms;           /* the final attempt: attempt event to pre-switchover */
    GArray *gap_ms;               /* hold event to the next attempt event */
    GArray *final_ms, *final_mib; /* the attempt that switched over */
    GArray *total_mib;            /* every attempt's bytes */
    GArray *qemu_ms;              /* QEMU's total-time of the attempt that switched over */
    GArray *stopped_ms;           /* the held attempt: the guest stopped, QEMU's STOP to RESUME */
    guint holds;
} Series;

static void series_init(Series *s)
{
    GArray **all[] = {&s->wall,       &s->downtime, &s->held_ms,   &s->held_mib,
                      &s->precopy_ms, &s->gap_ms,   &s->final_ms,  &s->final_mib,
                      &s->total_mib,  &s->qemu_ms,  &s->stopped_ms};
    for (guint i = 0; i < G_N_ELEMENTS(all); i++)
        *all[i] = g_array_new(FALSE, FALSE, sizeof(double));
}

static void add(GArray *a, double v)
{
    g_array_append_val(a, v);
}

static double ms_since(gint64 t0)
{
    return (double)(g_get_monotonic_time() - t0) / 1000.0;
}

/* query-migrate on the rig's own monitor: status, and RAM bytes sent if QEMU reports them. */
static char *migration_bytes(RigVm *vm, double *mib, gint64 *downtime, gint64 *total)
{
    g_autoptr(json_object) r = qmp_client_execute(rig_vm_qmp(vm), "query-migrate", NULL, NULL);
    json_object *v, *ram;
    if (!r || !json_object_object_get_ex(r, "status", &v))
        return NULL;
    if (json_object_object_get_ex(r, "ram", &ram) &&
        json_object_object_get_ex(ram, "transferred", &v))
        *mib = (double)json_object_get_int64(v) / (1 << 20);
    if (downtime && json_object_object_get_ex(r, "downtime", &v))
        *downtime = json_object_get_int64(v);
    if (total && json_object_object_get_ex(r, "total-time", &v))
        *total = json_object_get_int64(v);
    json_object_object_get_ex(r, "status", &v);
    return g_strdup(json_object_get_string(v));
}

static void swap(Pair *p, Dirtier *d, gboolean replaced)
{
    g_autoptr(GError) error = NULL;
    dirtier_pause(d, TRUE);
    if (!pair_swap(p, replaced, &error))
        g_error("swapping the pair: %s", error->message);
    dirtier_pause(d, FALSE);
}

static void plain_migration(Pair *p, Dirtier *d, Series *s)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) args = json_object_new_object();
    json_object_object_add(args, "max-bandwidth",
                           json_object_new_int64((gint64)opt_bandwidth << 20));
    g_autoptr(json_object) r =
        qmp_client_execute(rig_vm_qmp(p->src), "migrate-set-parameters", args, &error);
    if (!r)
        g_error("migrate-set-parameters: %s", error->message);
    gint64 t0 = g_get_monotonic_time();
    g_autofree char *status = rig_migrate(p->src, p->dst, NULL, &error);
    if (!status || !g_str_equal(status, "completed"))
        g_error("plain migration: %s", status ? status : error->message);
    add(s->wall, ms_since(t0));
    double mib = 0;
    gint64 downtime = -1, total = -1;
    g_free(migration_bytes(p->src, &mib, &downtime, &total));
    add(s->downtime, (double)downtime);
    add(s->qemu_ms, (double)total);
    add(s->final_mib, mib);
    add(s->total_mib, mib);
    swap(p, d, FALSE);
}

/* The guest finishes the GESN it parked, on the source once it runs again. */
static void finish_parked(Pair *p, Dirtier *d)
{
    g_autoptr(GError) error = NULL;
    for (int i = 0; i < 5000; i++) {
        g_autofree char *state = rig_vm_runstate(p->src, NULL);
        if (state && g_str_equal(state, "running"))
            break;
        g_usleep(1000);
    }
    guint8 buf[8], status = 0xff;
    g_mutex_lock(&d->lock);
    gboolean ok = rig_guest_data_in(p->guest, 0, buf, sizeof buf, &error) == sizeof buf &&
                  rig_guest_read_csw(p->guest, 0, &status, NULL, &error);
    g_mutex_unlock(&d->lock);
    if (!ok || status != 0)
        g_error("the parked GESN did not finish on the source: %s",
                error ? error->message : "CSW not GOOD");
}

typedef struct {
    gint64 attempt_ms, hold_ms, switchover_ms; /* the events' own t_ms */
    double attempt_mib; /* RAM sent so far by the attempt under way (polled) */
    double held_mib;    /* by the attempts called off */
    gboolean replaced, held;
    gint64 stop_us;  /* QEMU's STOP timestamp on the source, until its RESUME */
    GArray *stopped; /* where the STOP-to-RESUME spans go (ms) */
} Watch;

/* The source's STOP and RESUME, by QEMU's own timestamps: a held attempt stops the guest from
 * the switchover until the cancelled attempt gives it back. */
static void on_run_event(QmpClient *client, const char *name, json_object *data,
                         gint64 timestamp_us, gpointer user_data)
{
    Watch *w = user_data;
    (void)client, (void)data;
    if (g_str_equal(name, "STOP"))
        w->stop_us = timestamp_us;
    else if (g_str_equal(name, "RESUME") && w->stop_us > 0) {
        add(w->stopped, (double)(timestamp_us - w->stop_us) / 1000.0);
        w->stop_us = 0;
    }
}

/* One event of the gate's: attempt boundaries, and the parked transfer finished on a hold. */
static void on_event(Pair *p, Dirtier *d, Series *s, Watch *w, const char *line)
{
    g_autoptr(json_object) ev = json_tokener_parse(line);
    const char *name = ev ? event_name(ev) : "";
    gint64 t = event_int(ev, "t_ms", 0);
    if (opt_verbose)
        fprintf(stderr, "    %s\n", line);
    if (g_str_equal(name, "attempt")) {
        if (w->held && s->gap_ms->len < s->held_ms->len)
            add(s->gap_ms, (double)(t - w->hold_ms));
        w->attempt_ms = t;
        w->attempt_mib = 0;
    } else if (g_str_equal(name, "pre-switchover")) {
        w->switchover_ms = t - w->attempt_ms;
    } else if (g_str_equal(name, "dest-prepare")) {
        w->replaced = TRUE;
    } else if (g_str_equal(name, "hold")) {
        s->holds++;
        if (!w->held) {
            add(s->held_ms, (double)(t - w->attempt_ms));
            add(s->held_mib, w->attempt_mib);
        }
        w->held_mib += w->attempt_mib;
        w->held = TRUE;
        w->hold_ms = t;
        finish_parked(p, d);
    } else if (g_str_equal(name, "completed")) {
        add(s->final_ms, (double)(t - w->attempt_ms));
        add(s->precopy_ms, (double)w->switchover_ms);
    }
}

/* safe-migrate migrate, reading its events while polling the source's RAM counter (QEMU
 * drops it once an attempt is cancelled, so the held attempt's bytes are its last reading,
 * at pre-switchover or a poll before). */
static void gated_migration(Pair *p, Dirtier *d, Series *s, gboolean park)
{
    g_autoptr(GError) error = NULL;
    if (park) {
        RigCommand gesn = rig_cmd_gesn();
        g_mutex_lock(&d->lock);
        gboolean ok = rig_guest_send_cbw(p->guest, 0, &gesn, NULL, &error);
        g_mutex_unlock(&d->lock);
        if (!ok)
            g_error("parking a GESN: %s", error->message);
    }
    g_autofree char *src = pair_src_addr(p), *dst = pair_dst_addr(p);
    g_autofree char *uri = rig_migration_uri();
    g_autofree char *bw = g_strdup_printf("%dM", opt_bandwidth);
    const char *args[] = {"--source",
                          src,
                          "--dest",
                          dst,
                          "--uri",
                          uri,
                          "--dest-prepare",
                          p->dst_prepare,
                          "--max-hold",
                          "120s",
                          "--max-bandwidth",
                          bw,
                          NULL,
                          NULL,
                          NULL};
    if (opt_backoff) { /* else safe-migrate's default, what an operator gets */
        args[G_N_ELEMENTS(args) - 3] = "--backoff";
        args[G_N_ELEMENTS(args) - 2] = opt_backoff;
    }
    gint64 t0 = g_get_monotonic_time();
    Gate *g = gate_spawn(args, &error);
    if (!g)
        g_error("safe-migrate: %s", error->message);
    int fd = g_unix_input_stream_get_fd(G_UNIX_INPUT_STREAM(g_subprocess_get_stdout_pipe(g->proc)));
    g_autoptr(GString) buf = g_string_new(NULL);
    Watch w = {.stopped = s->stopped_ms};
    QmpClient *qmp = rig_vm_qmp(p->src);
    guint sub = qmp_client_subscribe(qmp, NULL, on_run_event, &w, NULL);
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 2) > 0) {
            char chunk[4096];
            ssize_t n = read(fd, chunk, sizeof chunk);
            if (n <= 0)
                break;
            g_string_append_len(buf, chunk, n);
            char *nl;
            while ((nl = memchr(buf->str, '\n', buf->len))) {
                *nl = '\0';
                on_event(p, d, s, &w, buf->str);
                g_string_erase(buf, 0, nl - buf->str + 1);
            }
        }
        double mib = 0;
        g_autofree char *status = migration_bytes(p->src, &mib, NULL, NULL);
        if (status && (g_str_equal(status, "active") || g_str_equal(status, "pre-switchover") ||
                       g_str_equal(status, "device")))
            w.attempt_mib = MAX(w.attempt_mib, mib);
    }
    qmp_client_unsubscribe(qmp, sub);
    g_subprocess_wait(g->proc, NULL, NULL);
    int code = g_subprocess_get_if_exited(g->proc) ? g_subprocess_get_exit_status(g->proc) : -1;
    gate_free(g);
    if (code != 0)
        g_error("safe-migrate exited %d", code);
    add(s->wall, ms_since(t0));
    double mib = 0;
    gint64 downtime = -1, total = -1;
    g_free(migration_bytes(p->src, &mib, &downtime, &total));
    add(s->downtime, (double)downtime);
    add(s->qemu_ms, (double)total);
    add(s->final_mib, mib);
    add(s->total_mib, w.held_mib + mib);
    swap(p, d, w.replaced);
}

/* ---- Report ---------------------------------------------------------------------------------- */

static void row(const char *label, GArray *v, double base)
{
    double m = median(v);
    printf("  %-46s %10.1f %10.1f %8.2fx\n", label, m, percentile(v, 100), m / base);
}

static char *loadavg(void)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents("/proc/loadavg", &text, NULL, NULL))
        return g_strdup("?");
    char **f = g_strsplit(text, " ", 4);
    char *out = g_strdup_printf("%s %s %s", f[0], f[1] ? f[1] : "", f[1] && f[2] ? f[2] : "");
    g_strfreev(f);
    return out;
}

static void report(RigQemu qemu, Series *plain, Series *clean, Series *held, Dirtier *d,
                   const char *load0, const char *load1)
{
    printf("Hold cost: QEMU %s, %d MiB guest, %d MiB of it rewritten continuously at %d MiB/s\n"
           "(achieved %.0f MiB/s), max-bandwidth %d MiB/s; %d rounds of plain / gate idle /\n"
           "gate with a GESN parked at the switchover, same VM; safe-migrate's default backoff\n"
           "(200 ms); load average %s at the start, %s at the end\n\n",
           rig_qemu_name(qemu), opt_memory_mb, opt_dirty_mb, opt_rate,
           d->busy_us ? (double)d->written / (1 << 20) / ((double)d->busy_us / G_USEC_PER_SEC)
                      : 0.0,
           opt_bandwidth, opt_rounds, load0, load1);
    printf("  %-46s %10s %10s %9s\n", "", "median", "max", "ratio");
    double base_ms = median(clean->final_ms), base_mib = median(clean->final_mib);
    double base_wall = median(clean->wall);
    printf("  attempts (ratio: to the clean gated attempt)\n");
    double base_pre = median(clean->precopy_ms);
    row("clean attempt, ms to pre-switchover", clean->precopy_ms, base_pre);
    row("held attempt, ms to its hold", held->held_ms, base_pre);
    row("attempt after the hold, ms to pre-switchover", held->precopy_ms, base_pre);
    row("clean attempt, ms to completed", clean->final_ms, base_ms);
    row("attempt after the hold, ms to completed", held->final_ms, base_ms);
    row("hold to the next attempt, ms (ratio: to clean)", held->gap_ms, base_ms);
    row("plain QMP, QEMU total-time ms", plain->qemu_ms, median(clean->qemu_ms));
    row("clean attempt, QEMU total-time ms", clean->qemu_ms, median(clean->qemu_ms));
    row("attempt after the hold, QEMU total-time ms", held->qemu_ms, median(clean->qemu_ms));
    row("clean attempt, MiB sent", clean->final_mib, base_mib);
    row("held attempt, MiB sent (to pre-switchover)", held->held_mib, base_mib);
    row("attempt after the hold, MiB sent", held->final_mib, base_mib);
    printf("  whole migration (ratio: to the gated one with no hold)\n");
    row("plain QMP, wall ms", plain->wall, base_wall);
    row("gate, no hold, wall ms", clean->wall, base_wall);
    row("gate, one hold, wall ms", held->wall, base_wall);
    row("plain QMP, MiB sent", plain->total_mib, median(clean->total_mib));
    row("gate, no hold, MiB sent", clean->total_mib, median(clean->total_mib));
    row("gate, one hold, MiB sent (all attempts)", held->total_mib, median(clean->total_mib));
    printf("  downtime, ms (QEMU's; ratio: to plain)\n");
    row("plain QMP", plain->downtime, median(plain->downtime));
    row("gate, no hold", clean->downtime, median(plain->downtime));
    row("gate, one hold (the final attempt)", held->downtime, median(plain->downtime));
    row("held attempt: guest stopped (STOP to RESUME)", held->stopped_ms, median(plain->downtime));
    printf(
        "  holds in the parked runs: %u (of %d runs); guest writes that failed: %" G_GUINT64_FORMAT
        "\n",
        held->holds, opt_rounds, d->failures);
}

int main(int argc, char **argv)
{
    bench_env_defaults();
    g_autoptr(GOptionContext) ctx = g_option_context_new("- what a hold costs a large busy VM");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    if (opt_rounds < 1 || opt_rate < 1 || opt_bandwidth < 1 || opt_dirty_mb < 4 ||
        DIRTY_BASE + ((guint64)opt_dirty_mb << 20) > (guint64)opt_memory_mb << 20) {
        g_printerr("need rounds, rates >= 1 and 256 MiB + dirty-mb <= memory-mb\n");
        return 2;
    }
    RigQemu qemu = opt_qemu && g_str_equal(opt_qemu, "10.0") ? RIG_QEMU_10 : RIG_QEMU_72;
    Pair *p = pair_new_sized(qemu, "pc", (guint)opt_memory_mb, 0, &error);
    if (!p || !rig_guest_fill_ram(p->guest, DIRTY_BASE, (gsize)opt_dirty_mb << 20, 0x5a, &error))
        g_error("cannot start the VM pair: %s", error->message);
    g_autofree char *load0 = loadavg();
    Dirtier d = {.guest = p->guest};
    g_mutex_init(&d.lock);
    g_cond_init(&d.cond);
    d.thread = g_thread_new("dirtier", dirtier_main, &d);
    Series plain, clean, held;
    series_init(&plain);
    series_init(&clean);
    series_init(&held);
    /* Interleaved, so that the machine's load drifts over all three alike. */
    for (int i = 0; i < opt_rounds; i++) {
        plain_migration(p, &d, &plain);
        gated_migration(p, &d, &clean, FALSE);
        gated_migration(p, &d, &held, TRUE);
        fprintf(stderr, "round %d of %d done\n", i + 1, opt_rounds);
    }
    g_mutex_lock(&d.lock);
    d.quit = TRUE;
    g_cond_signal(&d.cond);
    g_mutex_unlock(&d.lock);
    g_thread_join(d.thread);
    g_autofree char *load1 = loadavg();
    report(qemu, &plain, &clean, &held, &d, load0, load1);
    pair_free(p);
    return 0;
}
