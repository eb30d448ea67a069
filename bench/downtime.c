/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Gate cost: the same VM migrated back and forth, plain QMP migrations and safe-migrate
 * migrations alternating in one run (idle device), compared on QEMU's reported downtime and
 * total time and on its event timestamps (us); then the probe's own latency on a running VM
 * and the parse time alone. */
#include "common.h"
#include "fixture.h"
#include "probe.h"

#include <math.h>
#include <stdio.h>

static gint opt_migrations = 20, opt_probe_runs = 50, opt_parse_runs = 2000, opt_ram_mb = 8;
static char *opt_qemu, *opt_machine;
static gboolean opt_parse_only;

static const GOptionEntry entries[] = {
    {"migrations", 'n', 0, G_OPTION_ARG_INT, &opt_migrations, "Migrations of each kind (20)", "N"},
    {"qemu", 0, 0, G_OPTION_ARG_STRING, &opt_qemu, "7.2 or 10.0 (7.2)", "VERSION"},
    {"machine", 0, 0, G_OPTION_ARG_STRING, &opt_machine, "Machine type (pc)", "TYPE"},
    {"ram-mb", 0, 0, G_OPTION_ARG_INT, &opt_ram_mb, "Guest RAM made non-zero, MiB (8)", "MB"},
    {"probe-runs", 0, 0, G_OPTION_ARG_INT, &opt_probe_runs, "Probes on the live VM (50)", "N"},
    {"parse-runs", 0, 0, G_OPTION_ARG_INT, &opt_parse_runs, "Parses per fixture (2000)", "N"},
    {"parse-only", 0, 0, G_OPTION_ARG_NONE, &opt_parse_only,
     "Only the parse table, no VM (for callgrind: instruction counts do not depend on load)", NULL},
    G_OPTION_ENTRY_NULL,
};

typedef struct {
    GArray *downtime, *total, *wall; /* ms, double */
    GArray *downtime_us;             /* QEMU's STOP on the source to RESUME on the destination */
} Series;

/* QEMU's own timestamps of one switchover (host clock, us; both QEMUs on this host): the
 * source's last STOP and its pre-switchover and device MIGRATION events, the destination's
 * RESUME. query-migrate's `downtime` is whole milliseconds; these resolve microseconds. */
typedef struct {
    gint64 stop, pre, device, resume;
    QmpClient *src, *dst;
    guint src_sub, dst_sub;
} Switch;

/* The gated switchovers' breakdown (us): QEMU's stop to its pre-switchover event, the gate
 * reading it, its capture, its parse and verdict up to migrate-continue, QEMU's device phase
 * to the destination's RESUME; and the continue's round trip (not on the guest's path). */
typedef struct {
    GArray *stop_pre, *event, *wait, *capture, *verdict, *pre_device, *device_resume, *cont;
} Breakdown;
static Breakdown bd;

/* From the gated runs' own events: the capture at pre-switchover, the wait from the event to
 * it, and the CLI's start to its first `migrate` (connects, preflight, caps, discovery). */
static GArray *gate_probe_us, *gate_wait_us, *gate_start_ms;

static GArray *doubles(void)
{
    return g_array_new(FALSE, FALSE, sizeof(double));
}

static void series_init(Series *s)
{
    s->downtime_us = doubles();
    s->downtime = g_array_new(FALSE, FALSE, sizeof(double));
    s->total = g_array_new(FALSE, FALSE, sizeof(double));
    s->wall = g_array_new(FALSE, FALSE, sizeof(double));
}

static void add(GArray *a, double v)
{
    g_array_append_val(a, v);
}

static void row(const char *label, GArray *plain, GArray *gated, double p)
{
    double a = p == 50 ? median(plain) : percentile(plain, p);
    double b = p == 50 ? median(gated) : percentile(gated, p);
    printf("  %-28s %12.1f %14.1f %12.1f %8.2fx\n", label, a, b, b - a, a > 0 ? b / a : NAN);
}

static double elapsed_ms(gint64 t0)
{
    return (double)(g_get_monotonic_time() - t0) / 1000.0;
}

static void on_src_event(QmpClient *client, const char *name, json_object *data, gint64 ts,
                         gpointer user_data)
{
    Switch *w = user_data;
    json_object *v;
    (void)client;
    const char *status = data && json_object_object_get_ex(data, "status", &v) &&
                                 json_object_is_type(v, json_type_string)
                             ? json_object_get_string(v)
                             : "";
    if (g_str_equal(name, "STOP"))
        w->stop = ts; /* the last one: a held attempt's stop is followed by its RESUME */
    else if (g_str_equal(name, "MIGRATION") && g_str_equal(status, "pre-switchover"))
        w->pre = ts;
    else if (g_str_equal(name, "MIGRATION") && g_str_equal(status, "device"))
        w->device = ts;
}

static void on_dst_event(QmpClient *client, const char *name, json_object *data, gint64 ts,
                         gpointer user_data)
{
    Switch *w = user_data;
    (void)client, (void)data;
    if (g_str_equal(name, "RESUME"))
        w->resume = ts;
}

static void switch_watch(Switch *w, Pair *p)
{
    *w = (Switch){.src = rig_vm_qmp(p->src), .dst = rig_vm_qmp(p->dst)};
    w->src_sub = qmp_client_subscribe(w->src, NULL, on_src_event, w, NULL);
    w->dst_sub = qmp_client_subscribe(w->dst, NULL, on_dst_event, w, NULL);
}

/* Until the destination runs: its RESUME is in by then (QEMU sends an event before the
 * replies that follow it), as are the source's events once it answered. */
static gboolean switch_end(Switch *w, GError **error)
{
    for (int i = 0; i < 2000 && !w->resume; i++) {
        g_autoptr(json_object) r = qmp_client_execute(w->dst, "query-status", NULL, error);
        if (!r)
            break;
        if (!w->resume)
            g_usleep(1000);
    }
    g_autoptr(json_object) r =
        w->resume ? qmp_client_execute(w->src, "query-status", NULL, error) : NULL;
    qmp_client_unsubscribe(w->src, w->src_sub);
    qmp_client_unsubscribe(w->dst, w->dst_sub);
    if (r && (!w->stop || w->resume < w->stop))
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "no STOP before the RESUME");
    else if (r == NULL && !(error && *error))
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "the destination never resumed");
    return r && w->stop && w->resume >= w->stop;
}

/* QEMU's own downtime and total time of the migration just done, and the wall time; then the
 * guest goes back, so the next round starts from the same side. */
static gboolean record(Pair *p, Series *s, Switch *w, double wall, GError **error)
{
    gint64 downtime, total;
    if (!switch_end(w, error) || !migration_times(p->src, &downtime, &total, error))
        return FALSE;
    add(s->downtime_us, (double)(w->resume - w->stop));
    add(s->downtime, (double)downtime);
    add(s->total, (double)total);
    add(s->wall, wall);
    return pair_swap(p, FALSE, error);
}

static gboolean plain_migration(Pair *p, Series *s, GError **error)
{
    Switch w;
    switch_watch(&w, p);
    gint64 t0 = g_get_monotonic_time();
    g_autofree char *status = rig_migrate(p->src, p->dst, NULL, error);
    double wall = elapsed_ms(t0);
    if (status && !g_str_equal(status, "completed"))
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "plain migration ended '%s'", status);
    if (!status || !g_str_equal(status, "completed")) {
        qmp_client_unsubscribe(w.src, w.src_sub);
        qmp_client_unsubscribe(w.dst, w.dst_sub);
        return FALSE;
    }
    return record(p, s, &w, wall, error);
}

/* libvirt's way, with no gate: pause-before-switchover on the source, and migrate-continue
 * sent the moment its pre-switchover event arrives (waited on, not polled). QEMU's own cost
 * of the pause; against it the gate's capture and verdict stand alone. */
static gboolean execute_args(QmpClient *q, const char *command, const char *key, const char *value,
                             GError **error)
{
    g_autoptr(json_object) args = json_object_new_object();
    json_object_object_add(args, key, json_object_new_string(value));
    g_autoptr(json_object) r = qmp_client_execute(q, command, args, error);
    return r != NULL;
}

static gboolean continue_at_pre_switchover(QmpClient *src, GError **error)
{
    for (;;) {
        g_autoptr(json_object) ev = qmp_client_wait_event(src, "MIGRATION", 60000, error);
        json_object *data, *st;
        if (!ev)
            return FALSE;
        if (!json_object_object_get_ex(ev, "data", &data) ||
            !json_object_object_get_ex(data, "status", &st) ||
            !json_object_is_type(st, json_type_string))
            continue;
        const char *status = json_object_get_string(st);
        if (g_str_equal(status, "pre-switchover"))
            return execute_args(src, "migrate-continue", "state", "pre-switchover", error);
        if (g_str_equal(status, "failed") || g_str_equal(status, "cancelled")) {
            g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "migration %s", status);
            return FALSE;
        }
    }
}

static gboolean paused_migration(Pair *p, Series *s, GError **error)
{
    static const char *const ends[] = {"completed", "failed", "cancelled", NULL};
    QmpClient *src = rig_vm_qmp(p->src);
    g_autofree char *uri = rig_migration_uri();
    g_autoptr(json_object) caps = qmp_client_execute_json(
        src, "migrate-set-capabilities",
        "{\"capabilities\":[{\"capability\":\"pause-before-switchover\",\"state\":true},"
        "{\"capability\":\"events\",\"state\":true}]}",
        error);
    if (!caps)
        return FALSE;
    qmp_client_clear_events(src);
    Switch w;
    switch_watch(&w, p);
    gint64 t0 = g_get_monotonic_time();
    g_autofree char *status = NULL;
    if (execute_args(rig_vm_qmp(p->dst), "migrate-incoming", "uri", uri, error) &&
        execute_args(src, "migrate", "uri", uri, error) && continue_at_pre_switchover(src, error))
        status = rig_wait_migration_status(p->src, ends, 60000, error);
    double wall = elapsed_ms(t0);
    if (status && !g_str_equal(status, "completed"))
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "paused migration ended '%s'", status);
    if (!status || !g_str_equal(status, "completed")) {
        qmp_client_unsubscribe(w.src, w.src_sub);
        qmp_client_unsubscribe(w.dst, w.dst_sub);
        return FALSE;
    }
    return record(p, s, &w, wall, error); /* the source, caps and all, is replaced */
}

/* One gated switchover in QEMU's timestamps and the gate's own (its pre-switchover event:
 * event_us = QEMU's event to the gate reading it, wait_us, probe_us = the capture, verdict_us
 * = capture end to migrate-continue sent, continue_us = its round trip). */
static void breakdown_add(const Switch *w, json_object *ev)
{
    if (w->pre && w->device) {
        add(bd.stop_pre, (double)(w->pre - w->stop));
        add(bd.pre_device, (double)(w->device - w->pre));
        add(bd.device_resume, (double)(w->resume - w->device));
    }
    GArray *const dest[] = {bd.event, bd.wait, bd.capture, bd.verdict, bd.cont};
    static const char *const keys[] = {"event_us", "wait_us", "probe_us", "verdict_us",
                                       "continue_us"};
    for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
        gint64 v = event_int(ev, keys[i], -1);
        if (v >= 0)
            add(dest[i], (double)v);
    }
}

static gboolean gated_migration(Pair *p, Series *s, GError **error)
{
    g_autofree char *src = pair_src_addr(p), *dst = pair_dst_addr(p), *uri = rig_migration_uri();
    const char *args[] = {"--source", src, "--dest", dst, "--uri", uri, NULL};
    Switch w;
    switch_watch(&w, p);
    gint64 t0 = g_get_monotonic_time();
    Gate *g = gate_spawn(args, error);
    if (!g) {
        qmp_client_unsubscribe(w.src, w.src_sub);
        qmp_client_unsubscribe(w.dst, w.dst_sub);
        return FALSE;
    }
    json_object *ev, *last = NULL; /* the last pre-switchover: the attempt that switched */
    while ((ev = gate_next(g))) {
        if (g_str_equal(event_name(ev), "attempt") && event_int(ev, "attempt", 0) == 1)
            add(gate_start_ms, (double)event_int(ev, "t_ms", 0));
        if (g_str_equal(event_name(ev), "pre-switchover")) {
            add(gate_probe_us, (double)event_int(ev, "probe_us", 0));
            add(gate_wait_us, (double)event_int(ev, "wait_us", 0));
            if (last)
                json_object_put(last);
            last = json_object_get(ev);
        }
        json_object_put(ev);
    }
    int code = gate_finish(g);
    double wall = elapsed_ms(t0);
    const char *result =
        g->result ? json_object_get_string(json_object_object_get(g->result, "result")) : "none";
    if (code != 0) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "safe-migrate exited %d (%s)", code,
                    result);
        gate_free(g);
        if (last)
            json_object_put(last);
        qmp_client_unsubscribe(w.src, w.src_sub);
        qmp_client_unsubscribe(w.dst, w.dst_sub);
        return FALSE;
    }
    gate_free(g);
    gboolean ok = record(p, s, &w, wall, error);
    if (ok && last)
        breakdown_add(&w, last);
    if (last)
        json_object_put(last);
    return ok;
}

static void bd_row(const char *label, GArray *v)
{
    if (v->len)
        printf("  %-52s %8.0f %8.0f\n", label, median(v), percentile(v, 90));
    else
        printf("  %-52s %8s %8s\n", label, "-", "-");
}

/* Downtime in microseconds side by side, the gated switchover's breakdown, and issue 15's
 * target: gate median <= plain median + capture median + 1 ms. */
static void print_us(Series *plain, Series *gated, Series *paused)
{
    printf("\nDowntime at us resolution (QEMU's own event timestamps: the source's STOP to the\n"
           "destination's RESUME, one host clock):\n");
    printf("  %-28s %12s %14s %12s %9s\n", "", "plain (us)", "safe-migrate", "difference", "ratio");
    row("downtime median", plain->downtime_us, gated->downtime_us, 50);
    row("downtime p90", plain->downtime_us, gated->downtime_us, 90);
    printf("  %-28s %12s %14s %12s %9s\n", "", "pause (us)", "safe-migrate", "difference", "ratio");
    row("downtime median", paused->downtime_us, gated->downtime_us, 50);
    row("downtime p90", paused->downtime_us, gated->downtime_us, 90);
    printf("  (pause: pause-before-switchover with migrate-continue sent at the pre-switchover\n"
           "   event, no probe: libvirt's own way, what QEMU's pause costs without a gate)\n");
    printf("\nThe gated switchover, step by step (us):                  median      p90\n");
    bd_row("STOP to the pre-switchover event (QEMU)", bd.stop_pre);
    bd_row("pre-switchover event to the gate reading it", bd.event);
    bd_row("read to capture start", bd.wait);
    bd_row("capture (xen-save-devices-state into the fd)", bd.capture);
    bd_row("capture end to migrate-continue sent (verdict)", bd.verdict);
    bd_row("pre-switchover to device, QEMU (all of the above)", bd.pre_device);
    bd_row("device to the destination's RESUME (QEMU)", bd.device_resume);
    bd_row("migrate-continue round trip (guest already going)", bd.cont);
    if (!plain->downtime_us->len || !gated->downtime_us->len || !bd.capture->len)
        return;
    double target = median(plain->downtime_us) + median(bd.capture) + 1000.0;
    double got = median(gated->downtime_us);
    printf("  target (issue 15): gate median %.0f <= plain median + capture median + 1000 = %.0f: "
           "%s\n",
           got, target, got <= target ? "met" : "NOT met");
    if (!paused->downtime_us->len)
        return;
    double target_paused = median(paused->downtime_us) + median(bd.capture) + 1000.0;
    printf("  against the pause baseline: gate median %.0f <= pause median + capture median + "
           "1000 = %.0f: %s\n",
           got, target_paused, got <= target_paused ? "met" : "NOT met");
}

/* The guest-visible stop of a probe on a running VM, by QEMU's own STOP and RESUME event
 * timestamps (status and list --probe stop, capture and resume). */
typedef struct {
    gint64 stop_us;
    GArray *stopped; /* us, double */
} StopWatch;

static void on_run_event(QmpClient *client, const char *name, json_object *data,
                         gint64 timestamp_us, gpointer user_data)
{
    StopWatch *w = user_data;
    (void)client, (void)data;
    if (g_str_equal(name, "STOP"))
        w->stop_us = timestamp_us;
    else if (g_str_equal(name, "RESUME") && w->stop_us > 0) {
        add(w->stopped, (double)(timestamp_us - w->stop_us));
        w->stop_us = 0;
    }
}

static void probe_latency(Pair *p)
{
    g_autoptr(GArray) stopped = g_array_new(FALSE, FALSE, sizeof(double));
    StopWatch watch = {0, stopped};
    g_autoptr(GArray) rtt = g_array_new(FALSE, FALSE, sizeof(double));
    g_autoptr(GArray) probe = g_array_new(FALSE, FALSE, sizeof(double));
    g_autoptr(GArray) capture = g_array_new(FALSE, FALSE, sizeof(double));
    SmRegistry *registry = sm_registry_new();
    QmpClient *qmp = rig_vm_qmp(p->src);
    guint sub = qmp_client_subscribe(qmp, NULL, on_run_event, &watch, NULL);
    gsize bytes = 0;
    for (int i = 0; i < opt_probe_runs; i++) {
        g_autoptr(GError) error = NULL;
        gint64 t0 = g_get_monotonic_time();
        g_autoptr(json_object) r = qmp_client_execute(qmp, "query-status", NULL, &error);
        if (!r)
            g_error("query-status failed: %s", error->message);
        add(rtt, (double)(g_get_monotonic_time() - t0));
        t0 = g_get_monotonic_time();
        SmReport *report = sm_probe_vm(qmp, registry, &error);
        if (!report)
            g_error("probe failed: %s", error->message);
        add(probe, (double)(g_get_monotonic_time() - t0));
        add(capture, (double)report->capture_us);
        bytes = report->stream_bytes;
        sm_report_free(report);
    }
    qmp_client_unsubscribe(qmp, sub);
    sm_registry_free(registry);
    printf("\nProbe on the running VM (%s, %d runs, %" G_GSIZE_FORMAT "-byte device state):\n",
           rig_qemu_name(p->qemu), opt_probe_runs, bytes);
    printf("  %-44s %10s %10s\n", "", "median us", "p90 us");
    printf("  %-44s %10.0f %10.0f\n", "QMP round trip (query-status)", median(rtt),
           percentile(rtt, 90));
    printf("  %-44s %10.0f %10.0f\n", "capture (add-fd + xen-save-devices-state)", median(capture),
           percentile(capture, 90));
    printf("  %-44s %10.0f %10.0f\n", "whole probe (discover + capture + parse)", median(probe),
           percentile(probe, 90));
    if (stopped->len > 0)
        printf("  %-44s %10.0f %10.0f (p99 %.0f, %u stops)\n",
               "guest stopped (QEMU's STOP to RESUME)", median(stopped), percentile(stopped, 90),
               percentile(stopped, 99), stopped->len);
}

/* The fastest of batches of 10: a run preempted by another process only slows some batches,
 * so the best one tells the cost itself on a shared machine. */
static double best_batch_ns(const Fixture *f, int runs)
{
    double best = INFINITY;
    for (int done = 0; done < runs; done += 10) {
        int n = MIN(10, runs - done);
        gint64 t0 = g_get_monotonic_time();
        for (int k = 0; k < n; k++)
            sm_report_free(fixture_report(f, f->state));
        best = MIN(best, (double)(g_get_monotonic_time() - t0) * 1000.0 / n);
    }
    return best;
}

static void parse_time(void)
{
    g_autoptr(GPtrArray) names = fixture_list();
    printf("\nParse alone on the fixtures (%d runs each):\n", opt_parse_runs);
    printf("  %-32s %6s %13s %13s %13s\n", "fixture", "bytes", "walk ns", "walk+verdict",
           "best batch");
    for (guint i = 0; i < names->len; i++) {
        g_autoptr(Fixture) f = fixture_load(g_ptr_array_index(names, i));
        gint64 t0 = g_get_monotonic_time();
        for (int k = 0; k < opt_parse_runs; k++)
            sm_stream_free(sm_stream_parse(f->state));
        double walk = (double)(g_get_monotonic_time() - t0) * 1000.0 / opt_parse_runs;
        t0 = g_get_monotonic_time();
        for (int k = 0; k < opt_parse_runs; k++)
            sm_report_free(fixture_report(f, f->state));
        double full = (double)(g_get_monotonic_time() - t0) * 1000.0 / opt_parse_runs;
        printf("  %-32s %6" G_GSIZE_FORMAT " %13.0f %13.0f %13.0f\n", f->name,
               g_bytes_get_size(f->state), walk, full, best_batch_ns(f, opt_parse_runs));
    }
    printf("  (ns per dump: means over all runs, and the fastest batch of 10 walk+verdicts)\n");
}

int main(int argc, char **argv)
{
    bench_env_defaults();
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the gate's cost, side by side");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    if (opt_parse_only) {
        parse_time();
        return 0;
    }
    RigQemu qemu = opt_qemu && g_str_equal(opt_qemu, "10.0") ? RIG_QEMU_10 : RIG_QEMU_72;
    const char *machine = opt_machine ? opt_machine : "pc";
    Pair *p = pair_new(qemu, machine, (guint)opt_ram_mb, &error);
    if (!p)
        g_error("cannot start the VM pair: %s", error->message);

    gate_probe_us = g_array_new(FALSE, FALSE, sizeof(double));
    gate_wait_us = g_array_new(FALSE, FALSE, sizeof(double));
    gate_start_ms = g_array_new(FALSE, FALSE, sizeof(double));
    bd = (Breakdown){doubles(), doubles(), doubles(), doubles(),
                     doubles(), doubles(), doubles(), doubles()};
    Series plain, gated, paused;
    series_init(&plain);
    series_init(&gated);
    series_init(&paused);
    /* In turn, so that drift (page cache, CPU frequency) hits every kind alike. */
    static const char *const kinds[] = {"plain", "safe-migrate", "pause + continue"};
    for (int i = 0; i < 3 * opt_migrations; i++) {
        gboolean ok = i % 3 == 0   ? plain_migration(p, &plain, &error)
                      : i % 3 == 1 ? gated_migration(p, &gated, &error)
                                   : paused_migration(p, &paused, &error);
        if (!ok)
            g_error("migration %d (%s) failed: %s", i + 1, kinds[i % 3], error->message);
    }
    printf("Gate cost: QEMU %s, machine %s, 16 MiB guest with %d MiB non-zero, idle device;\n"
           "%d plain QMP migrations, %d safe-migrate migrations and %d paused-and-continued ones,\n"
           "in turn, same VM\n\n",
           rig_qemu_name(qemu), machine, opt_ram_mb, opt_migrations, opt_migrations,
           opt_migrations);
    printf("  %-28s %12s %14s %12s %9s\n", "", "plain (ms)", "safe-migrate", "difference", "ratio");
    row("downtime median", plain.downtime, gated.downtime, 50);
    row("downtime p90", plain.downtime, gated.downtime, 90);
    row("QEMU total-time median", plain.total, gated.total, 50);
    row("QEMU total-time p90", plain.total, gated.total, 90);
    row("wall median", plain.wall, gated.wall, 50);
    row("wall p90", plain.wall, gated.wall, 90);
    printf(
        "  (wall: plain = migrate-incoming to 'completed' seen; safe-migrate = process start to\n"
        "   exit, including connects, preflight probe and verification)\n");
    printf("\nInside the gated runs (their pre-switchover and attempt events):\n"
           "  %-44s %10s %10s\n",
           "", "median", "p90");
    printf("  %-44s %10.0f %10.0f\n", "capture at pre-switchover (us)", median(gate_probe_us),
           percentile(gate_probe_us, 90));
    printf("  %-44s %10.0f %10.0f\n", "event to capture (us)", median(gate_wait_us),
           percentile(gate_wait_us, 90));
    printf("  %-44s %10.0f %10.0f\n", "CLI start to first migrate (ms)", median(gate_start_ms),
           percentile(gate_start_ms, 90));
    print_us(&plain, &gated, &paused);
    probe_latency(p);
    parse_time();
    pair_free(p);
    return 0;
}
