/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The gate: one migration from preflight to verified completion. It pauses QEMU before
 * switchover, probes the device state, and continues only when no device would lose a
 * transaction; otherwise it calls the attempt off (the source resumes) and retries.
 *
 * Written as straight-line code over the synchronous libqmp layer on the thread-default
 * main context: the CLI runs it on the main thread, the daemon on one thread per migration.
 * Waits iterate the context, so QMP events, signals and cancel requests wake them. */
#include "gate.h"
#include "probe.h"
#include "qmp-commands.h"

#include <gio/gio.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 10000
#define DEST_READY_TIMEOUT_MS 30000
#define PROGRESS_INTERVAL_MS 1000
#define QMP_COMMAND_TIMEOUT_MS 30000
/* Capabilities the gate sets on each side, whose values it records first and restores. */
static const char *const src_managed_caps[] = {"events", "pause-before-switchover", "multifd",
                                               "auto-converge", NULL};
static const char *const dst_managed_caps[] = {"events", "multifd", NULL};
static const char *const managed_params[] = {"downtime-limit", "max-bandwidth", "multifd-channels",
                                             NULL};

/* Where a run is. Each phase has one step and one exit handler (see "The phase machine"). */
typedef enum {
    PHASE_PREFLIGHT,      /* connected; checking both sides; nothing started */
    PHASE_ITERATING,      /* an attempt's stream flows, up to QEMU's pause before switchover */
    PHASE_PRE_SWITCHOVER, /* QEMU paused at pre-switchover: probing and deciding */
    PHASE_HOLDING,        /* the attempt called off, the source running; waiting to retry */
    PHASE_SWITCHING,      /* migrate-continue sent: QEMU's outcome, never cancelled */
    PHASE_VERIFYING,      /* QEMU says completed: checking both sides' run states */
    PHASE_DONE,           /* the result reported; both sides restored */
} Phase;

struct SmMigration {
    SmPolicy policy;
    SmEventFunc emit_func;
    gpointer emit_data;
    SmRegistry *registry;
    GMutex context_lock; /* guards context: sm_migration_request_cancel reads it anywhere */
    GMainContext *context;
    gint n_cancels;            /* atomic: cancel requests so far */
    GCancellable *cancellable; /* cancelled by a cancel request: interrupts connects */

    QmpClient *src, *dst;
    /* What QEMU had before the gate changed it (see save_settings), per side; NULL until
     * taken. Restored on every outcome. */
    struct Settings *src_saved, *dst_saved;
    gint in_call;            /* >0: a QMP call that may be abandoned on a cancel is in flight */
    GSource *abandon_source; /* pending abandon_call, under context_lock */
    gboolean resumed;        /* the source emitted RESUME since the preflight verdict */
    guint resume_sub;        /* RESUME subscription on m->src */
    /* Read before each attempt's switchover, so that at pre-switchover the only command is
     * the save into the prepared fd: the source's devices and facts, and the capture. */
    GPtrArray *devices;
    SmCapture *capture;
    gint64 event_us, event_latency_us; /* when the last awaited status came, and its delay */
    gint64 captured_us;                /* when the switchover's capture returned (0: none) */
    gint64 t0_us;
    guint attempts, holds;
    gint64 hold_started_us; /* when the first hold began: the hold budget counts from it */
    gint64 hold_backoff_ms; /* how long the current hold waits */
    gboolean src_was_running;
    gboolean via_fix;        /* QEMU's fix carries a busy device through (path "fix") */
    SmReport *paused_report; /* a paused source's preflight verdict, or NULL */
    gint cancel_signal;      /* atomic: signal number (or -1 for a plain cancel) */
    GError *src_lost;        /* set when the source QMP connection went away */
    gint switch_cancels;     /* in SWITCHING: cancel requests that do not yet leave */
    Phase phase;             /* where the run is: see the phase machine below */
    int exit_code;           /* set as the run ends (PHASE_DONE) */
    char *src_machine, *dst_machine;
    GHashTable *dst_fix; /* device key (id or qom path) -> SmFix */
};

/* ------------------------------------------------------------------------------------- */
/* Events */

static gint64 elapsed_ms(SmMigration *m)
{
    return (g_get_monotonic_time() - m->t0_us) / 1000;
}

/* The run's state, touched only by the thread that runs it. */
static void assert_owner(SmMigration *m)
{
    g_assert(m->context && g_main_context_is_owner(m->context));
}

static void emit(SmMigration *m, const char *event, json_object *fields)
{
    assert_owner(m);
    g_autoptr(json_object) obj = json_object_new_object();
    json_object_object_add(obj, SM_EVENT_KEY_EVENT, json_object_new_string(event));
    json_object_object_add(obj, "t_ms", json_object_new_int64(elapsed_ms(m)));
    /* Wall-clock time too (RFC 3339, UTC, ms), to line events up with logs of other hosts. */
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *stamp = g_date_time_format(now, "%Y-%m-%dT%H:%M:%S");
    g_autofree char *time =
        g_strdup_printf("%s.%03dZ", stamp, g_date_time_get_microsecond(now) / 1000);
    json_object_object_add(obj, "time", json_object_new_string(time));
    if (fields) {
        json_object_object_foreach(fields, key, value)
        {
            json_object_object_add(obj, key, json_object_get(value));
        }
        json_object_put(fields);
    }
    /* The schema is a contract (CLI --json, the daemon's wire, metrics): an event outside it
     * is a bug here, fatal in the tests (G_DEBUG=fatal-criticals). */
    g_autoptr(GError) invalid = NULL;
    if (!sm_event_validate(obj, &invalid))
        g_critical("gate engine: an event outside the schema in events.c: %s", invalid->message);
    if (m->emit_func)
        m->emit_func(obj, m->emit_data);
}

/* key, json_object*, key, json_object*, ..., FIELDS_END: a typed terminator, since a bare
 * NULL in a variadic call need not be a pointer. */
#define FIELDS_END ((const char *)NULL)
static json_object *fields_new(const char *key, ...) G_GNUC_NULL_TERMINATED;
static json_object *fields_new(const char *key, ...)
{
    json_object *obj = json_object_new_object();
    va_list ap;
    va_start(ap, key);
    for (const char *k = key; k; k = va_arg(ap, const char *))
        json_object_object_add(obj, k, va_arg(ap, json_object *));
    va_end(ap);
    return obj;
}

static json_object *jstr(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

/* ------------------------------------------------------------------------------------- */
/* Test hook: SM_FAULT_STOP_AT=PHASE (preflight, iterating, pre-switchover, cancel,
 * dest-prepare, prepared, switching) stops the process with SIGSTOP the first time it gets there,
 * so that the fault-injection tests can act in a known phase instead of racing the events. */
static void fault_point(const char *phase)
{
    static gint fired;
    const char *at = g_getenv("SM_FAULT_STOP_AT");
    if (at && g_str_equal(at, phase) && g_atomic_int_compare_and_exchange(&fired, 0, 1))
        raise(SIGSTOP);
}

/* ------------------------------------------------------------------------------------- */
/* Waiting */

static gboolean cancel_requested(SmMigration *m)
{
    return g_atomic_int_get(&m->cancel_signal) != 0;
}

static gboolean wake(gpointer data)
{
    *(gboolean *)data = TRUE;
    return G_SOURCE_REMOVE;
}

/* Overflow-safe time arithmetic: a policy may hold any gint64 of milliseconds, and none of
 * them may wrap into "now" or "never" (UBSan checks it). */
static gint64 deadline_after_ms(gint64 ms)
{
    gint64 now = g_get_monotonic_time();
    if (ms <= 0)
        return now;
    if (ms > (G_MAXINT64 - now) / 1000)
        return G_MAXINT64;
    return now + ms * 1000;
}

/* A timer length GLib can take: between 1 ms and G_MAXUINT - 1 (G_MAXUINT means "none" to
 * libqmp, and a cast would truncate 2^32 ms to 0, "forever"). Longer waits loop. */
static guint timer_ms(gint64 ms)
{
    return (guint)CLAMP(ms, 1, (gint64)G_MAXUINT - 1);
}

/* Sleeps on the context for ms, returning early (FALSE) on a cancel request. */
static gboolean sleep_ms(SmMigration *m, gint64 ms)
{
    assert_owner(m);
    gint64 deadline = deadline_after_ms(ms);
    while (!cancel_requested(m)) {
        gint64 left = (deadline - g_get_monotonic_time()) / 1000;
        if (left <= 0)
            return TRUE;
        gboolean done = FALSE;
        GSource *t = g_timeout_source_new(timer_ms(left));
        g_source_set_callback(t, wake, &done, NULL);
        g_source_attach(t, m->context);
        while (!done && !cancel_requested(m))
            g_main_context_iteration(m->context, TRUE);
        g_source_destroy(t);
        g_source_unref(t);
    }
    return FALSE;
}

/* Runs on the migration's context after a cancel request: a QMP call that may be abandoned
 * (queries, a capture; never migrate_cancel or anything after migrate-continue) is cut
 * short by closing the connections, so that a hung command cannot hold a signal for its
 * whole timeout. The phase's exit handler then reconnects to the source and calls the
 * attempt off. */
static gboolean abandon_call(gpointer data)
{
    SmMigration *m = data;
    assert_owner(m);
    g_mutex_lock(&m->context_lock);
    g_clear_pointer(&m->abandon_source, g_source_unref);
    g_mutex_unlock(&m->context_lock);
    if (m->in_call > 0 && m->phase < PHASE_SWITCHING && m->src) {
        if (!m->src_lost)
            m->src_lost = g_error_new(G_IO_ERROR, G_IO_ERROR_CANCELLED,
                                      "interrupted while waiting for a QMP reply");
        qmp_client_close(m->src);
        if (m->dst)
            qmp_client_close(m->dst);
    }
    return G_SOURCE_REMOVE;
}

void sm_migration_request_cancel(SmMigration *m, int signum)
{
    g_atomic_int_set(&m->cancel_signal, signum ? signum : -1);
    g_atomic_int_inc(&m->n_cancels);
    g_cancellable_cancel(m->cancellable);
    g_mutex_lock(&m->context_lock);
    if (m->context) {
        if (!m->abandon_source) {
            m->abandon_source = g_idle_source_new();
            g_source_set_callback(m->abandon_source, abandon_call, m, NULL);
            g_source_attach(m->abandon_source, m->context);
        }
        g_main_context_wakeup(m->context);
    }
    g_mutex_unlock(&m->context_lock);
}

static void on_src_disconnect(QmpClient *client, const GError *reason, gpointer data)
{
    SmMigration *m = data;
    (void)client;
    assert_owner(m); /* dispatched on the run's context, as every libqmp callback here */
    if (!m->src_lost)
        m->src_lost = g_error_copy(reason);
}

/* ------------------------------------------------------------------------------------- */
/* QMP, through libqmp's typed commands (qmp-commands.h): every reply type-checked there. */

static char *runstate(QmpClient *qmp, GError **error)
{
    return qmp_query_status(qmp, NULL, error);
}

/* The run state once QEMU is done moving between the migration's states: the status
 * (completed, cancelled) is published by the migration thread a moment before the main loop
 * sets the run state (postmigrate, running), and a destination stays "inmigrate" until it
 * has loaded the last section. */
static char *settled_runstate(QmpClient *qmp, GError **error)
{
    static const char *const transitional[] = {"finish-migrate", "inmigrate", "save-vm", NULL};
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    for (;;) {
        char *state = runstate(qmp, error);
        if (!state || !g_strv_contains(transitional, state) || g_get_monotonic_time() > deadline)
            return state;
        g_free(state);
        g_usleep(10000);
    }
}

static char *migration_status(QmpClient *qmp, GError **error)
{
    char *status = NULL;
    g_autoptr(json_object) r = qmp_query_migrate(qmp, &status, error);
    return r ? status : NULL;
}

/* What QEMU had before the gate changed it, restored on every outcome. */
typedef struct Settings {
    GArray *caps;        /* QmpCapability; names from the static lists above */
    json_object *params; /* {name: integer} of managed_params */
} Settings;

static void settings_free(Settings *s)
{
    g_array_unref(s->caps);
    json_object_put(s->params);
    g_free(s);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Settings, settings_free)

/* Records the capabilities in `caps` and the parameters the gate sets as QEMU has them. */
static Settings *save_settings(QmpClient *qmp, const char *const *caps, GError **error)
{
    g_autoptr(GHashTable) now = qmp_query_migrate_capabilities(qmp, error);
    if (!now)
        return NULL;
    g_autoptr(Settings) saved = g_new0(Settings, 1);
    saved->caps = g_array_new(FALSE, FALSE, sizeof(QmpCapability));
    saved->params = json_object_new_object();
    gpointer state;
    for (guint i = 0; caps[i]; i++) {
        if (g_hash_table_lookup_extended(now, caps[i], NULL, &state)) {
            QmpCapability c = {caps[i], GPOINTER_TO_INT(state) != 0};
            g_array_append_val(saved->caps, c);
        }
    }
    g_autoptr(json_object) params = qmp_query_migrate_parameters(qmp, error);
    if (!params)
        return NULL;
    for (guint i = 0; managed_params[i]; i++) {
        gint64 v;
        if (!json_object_object_get_ex(params, managed_params[i], NULL))
            continue;
        if (!qmp_reply_get_int("query-migrate-parameters", params, managed_params[i], &v, error))
            return NULL;
        json_object_object_add(saved->params, managed_params[i], json_object_new_int64(v));
    }
    return g_steal_pointer(&saved);
}

/* Puts back what save_settings recorded. Fails while a migration runs (QEMU refuses). */
static gboolean restore_settings(QmpClient *qmp, const Settings *saved, GError **error)
{
    if (saved->caps->len > 0 &&
        !qmp_migrate_set_capabilities(qmp, (const QmpCapability *)(void *)saved->caps->data,
                                      saved->caps->len, error))
        return FALSE;
    return json_object_object_length(saved->params) == 0 ||
           qmp_migrate_set_parameters(qmp, saved->params, error);
}

/* Leaves both QEMUs as they were found: every outcome ends here. A side the gate cannot
 * reach or that still migrates keeps the gate's settings; the event says which. */
static void restore_all(SmMigration *m)
{
    json_object *f = json_object_new_object();
    struct {
        const char *name;
        QmpClient *qmp;
        Settings **saved;
    } sides[] = {{"source", m->src, &m->src_saved}, {"dest", m->dst, &m->dst_saved}};
    for (guint i = 0; i < G_N_ELEMENTS(sides); i++) {
        if (!*sides[i].saved)
            continue;
        g_autoptr(GError) e = NULL;
        if (!sides[i].qmp || !qmp_client_is_connected(sides[i].qmp))
            e = g_error_new(QMP_ERROR, QMP_ERROR_DISCONNECTED, "not connected");
        else
            restore_settings(sides[i].qmp, *sides[i].saved, &e);
        json_object_object_add(f, sides[i].name, jstr(e ? e->message : "restored"));
        g_clear_pointer(sides[i].saved, settings_free);
    }
    if (json_object_object_length(f) > 0)
        emit(m, SM_EVENT_RESTORED, f);
    else
        json_object_put(f);
}

static gboolean configure(SmMigration *m, GError **error)
{
    const SmPolicy *p = &m->policy;
    const QmpCapability src_caps[] = {{"events", TRUE},
                                      {"pause-before-switchover", TRUE},
                                      {"multifd", p->multifd},
                                      {"auto-converge", p->auto_converge}};
    const QmpCapability dst_caps[] = {{"events", TRUE}, {"multifd", p->multifd}};
    if (!qmp_migrate_set_capabilities(m->src, src_caps, G_N_ELEMENTS(src_caps), error) ||
        !qmp_migrate_set_capabilities(m->dst, dst_caps, G_N_ELEMENTS(dst_caps), error))
        return FALSE;
    g_autoptr(json_object) params = json_object_new_object();
    if (p->downtime_limit_ms >= 0)
        json_object_object_add(params, "downtime-limit",
                               json_object_new_int64(p->downtime_limit_ms));
    if (p->max_bandwidth >= 0)
        json_object_object_add(params, "max-bandwidth", json_object_new_int64(p->max_bandwidth));
    if (p->multifd && p->multifd_channels > 0) {
        /* Both ends must agree on the channel count. */
        g_autoptr(json_object) dparams = fields_new(
            "multifd-channels", json_object_new_int((int)p->multifd_channels), FIELDS_END);
        if (!qmp_migrate_set_parameters(m->dst, dparams, error))
            return FALSE;
        json_object_object_add(params, "multifd-channels",
                               json_object_new_int((int)p->multifd_channels));
    }
    return json_object_object_length(params) == 0 ||
           qmp_migrate_set_parameters(m->src, params, error);
}

/* ------------------------------------------------------------------------------------- */
/* Following the source's MIGRATION events */

typedef struct {
    const char *const *wanted;
    char *status;
    gint64 at_us;      /* monotonic time it was seen */
    gint64 latency_us; /* from QEMU's event timestamp to then (wall clocks), or -1 */
} StatusWait;

static void on_migration_event(QmpClient *client, const char *name, json_object *data,
                               gint64 timestamp_us, gpointer user_data)
{
    StatusWait *w = user_data;
    (void)client, (void)name;
    const char *s = qmp_json_string(data, "status") /* events are not replies: may be absent */;
    if (s && !w->status && g_strv_contains(w->wanted, s)) {
        w->status = g_strdup(s);
        w->at_us = g_get_monotonic_time();
        w->latency_us = timestamp_us > 0 ? g_get_real_time() - timestamp_us : -1;
    }
}

static void emit_progress(SmMigration *m)
{
    QmpMigrationInfo info;
    m->in_call++;
    gboolean ok = qmp_query_migrate_info(m->src, &info, NULL);
    m->in_call--;
    if (!ok) {
        qmp_migration_info_clear(&info);
        return;
    }
    json_object *f = fields_new("status", jstr(info.status), SM_EVENT_KEY_ATTEMPT,
                                json_object_new_int(m->attempts), SM_EVENT_KEY_MAX_ATTEMPTS,
                                json_object_new_int((int)m->policy.max_attempts), FIELDS_END);
    const struct {
        const char *key;
        gint64 value;
    } ram[] = {{"ram_total", info.ram_total},
               {"ram_transferred", info.ram_transferred},
               {"ram_remaining", info.ram_remaining}};
    for (guint i = 0; i < G_N_ELEMENTS(ram); i++)
        if (ram[i].value >= 0)
            json_object_object_add(f, ram[i].key, json_object_new_int64(ram[i].value));
    if (info.has_mbps) {
        /* QEMU prints 17 digits (537.13295999999991); two decimals are what it means. */
        g_autofree char *text = g_strdup_printf("%.2f", info.ram_mbps);
        json_object_object_add(f, "mbps",
                               json_object_new_double_s(g_ascii_strtod(text, NULL), text));
    }
    qmp_migration_info_clear(&info);
    emit(m, SM_EVENT_PROGRESS, f);
}

/* Whether more cancel requests came than `allowed` (G_MAXINT: the wait is not
 * interruptible; 0: the first request interrupts). */
static gboolean cancelled_past(SmMigration *m, gint allowed)
{
    return g_atomic_int_get(&m->n_cancels) > allowed;
}

/* Waits until the source's migration reaches one of `wanted`. The subscription is made
 * before the status is read, so a transition between the two cannot be missed. Returns the
 * status, or NULL with an error on a lost connection, a timeout (0: none), or more than
 * `allowed` cancel requests. */
static char *wait_status(SmMigration *m, const char *const *wanted, gint64 timeout_ms,
                         gboolean progress, gint allowed, GError **error)
{
    assert_owner(m);
    StatusWait w = {.wanted = wanted, .latency_us = -1};
    guint sub = qmp_client_subscribe(m->src, "MIGRATION", on_migration_event, &w, NULL);
    m->in_call += allowed == 0;
    g_autofree char *now = migration_status(m->src, error);
    m->in_call -= allowed == 0;
    if (!now) {
        qmp_client_unsubscribe(m->src, sub);
        g_free(w.status);
        return NULL;
    }
    /* The event may have come in while query-migrate was on its way. */
    if (!w.status && g_strv_contains(wanted, now)) {
        w.status = g_steal_pointer(&now);
        w.at_us = g_get_monotonic_time();
    }
    gint64 deadline = timeout_ms > 0 ? deadline_after_ms(timeout_ms) : G_MAXINT64;
    gint64 next_progress = deadline_after_ms(PROGRESS_INTERVAL_MS);
    while (!w.status && !cancelled_past(m, allowed) && !m->src_lost) {
        gboolean tick = FALSE;
        gint64 until = MIN(deadline, progress ? next_progress : deadline);
        gint64 wait = (until - g_get_monotonic_time()) / 1000;
        if (wait <= 0) {
            if (g_get_monotonic_time() >= deadline)
                break;
            emit_progress(m);
            next_progress = deadline_after_ms(PROGRESS_INTERVAL_MS);
            continue;
        }
        GSource *t = g_timeout_source_new(timer_ms(wait));
        g_source_set_callback(t, wake, &tick, NULL);
        g_source_attach(t, m->context);
        while (!tick && !w.status && !cancelled_past(m, allowed) && !m->src_lost)
            g_main_context_iteration(m->context, TRUE);
        g_source_destroy(t);
        g_source_unref(t);
    }
    if (m->src)
        qmp_client_unsubscribe(m->src, sub);
    m->event_us = w.at_us;
    m->event_latency_us = w.latency_us;
    if (w.status)
        return w.status;
    if (m->src_lost)
        g_set_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED, "lost the source QMP: %s",
                    m->src_lost->message);
    else if (cancelled_past(m, allowed))
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "interrupted");
    else
        g_set_error(error, QMP_ERROR, QMP_ERROR_TIMEOUT, "migration did not reach %s in time",
                    wanted[0]);
    return NULL;
}

/* ------------------------------------------------------------------------------------- */
/* Devices */

static const char *device_key(const char *id, const char *qom_path)
{
    return id ? id : qom_path;
}

/* The fix state of every probed device on the destination, read without capturing state:
 * the destination is waiting for an incoming stream and has nothing to dump. */
static gboolean read_dest_fix(SmMigration *m, GError **error)
{
    g_autoptr(GPtrArray) devices = sm_inspect_devices(m->dst, m->registry, error);
    if (!devices)
        return FALSE;
    g_hash_table_remove_all(m->dst_fix);
    for (guint i = 0; i < devices->len; i++) {
        SmDevice *d = g_ptr_array_index(devices, i);
        g_hash_table_insert(m->dst_fix, g_strdup(device_key(d->id, d->qom_path)),
                            GINT_TO_POINTER(sm_device_get_fix(d)));
    }
    return TRUE;
}

static SmFix dest_fix(SmMigration *m, const SmDeviceVerdict *v)
{
    gpointer value;
    if (g_hash_table_lookup_extended(m->dst_fix, device_key(v->id, v->qom_path), NULL, &value))
        return (SmFix)GPOINTER_TO_INT(value);
    return SM_FIX_UNKNOWN;
}

/* Whether the in-tree fix may carry every unsafe device across. Fills *why otherwise. */
static gboolean fix_covers(SmMigration *m, const SmReport *report, gboolean benign_only, char **why)
{
    for (guint i = 0; i < report->devices->len; i++) {
        const SmDeviceVerdict *v = g_ptr_array_index(report->devices, i);
        const char *name = device_key(v->id, v->qom_path);
        if (v->safe)
            continue;
        if (v->state == SM_STATE_UNKNOWN) {
            *why = g_strdup_printf("%s: state unknown (%s)", name, v->reason ? v->reason : "?");
            return FALSE;
        }
        if (v->fix != SM_FIX_ENABLED || dest_fix(m, v) != SM_FIX_ENABLED) {
            *why = g_strdup_printf("%s: fix is %s on the source and %s on the destination", name,
                                   sm_fix_to_string(v->fix), sm_fix_to_string(dest_fix(m, v)));
            return FALSE;
        }
        /* The probe's finding rules: a request the stream cannot carry (an emulated one with
         * the fix off, or QEMU 10 saving its buffer empty once the transfer started) reaches
         * the guest as zeros or stale bytes. use-fix never knowingly hands those over;
         * use-fix-if-benign only when losing the command is harmless. */
        guint n = sm_verdict_get_n_pending(v);
        for (guint j = 0; j < n; j++) {
            const SmPendingOp *r = sm_verdict_get_pending(v, j);
            if (!r->migrates && !(benign_only && r->harmless)) {
                *why = g_strdup_printf("%s: QEMU's fix cannot carry the pending %s (the guest "
                                       "would get lost data)",
                                       name, r->name);
                return FALSE;
            }
        }
        if (benign_only) {
            if (n == 0) {
                *why = g_strdup_printf("%s: busy with no SCSI command named", name);
                return FALSE;
            }
            /* The probe says what losing costs the guest nothing (a repeated poll). */
            for (guint j = 0; j < n; j++) {
                const SmPendingOp *r = sm_verdict_get_pending(v, j);
                if (!r->harmless) {
                    *why = g_strdup_printf("%s: pending %s is not harmless to lose", name, r->name);
                    return FALSE;
                }
            }
        }
    }
    return TRUE;
}

/* ------------------------------------------------------------------------------------- */
/* Steps */

static void store_result(GObject *source, GAsyncResult *result, gpointer data)
{
    (void)source;
    *(GAsyncResult **)data = g_object_ref(result);
}

/* Connects on the migration's context; a cancel request cuts the handshake short (until the
 * switchover: after it, connecting is how the outcome is verified). */
static QmpClient *connect_vm(SmMigration *m, const char *address, guint timeout_ms, GError **error)
{
    assert_owner(m);
    GError *local = NULL;
    g_autoptr(GAsyncResult) result = NULL;
    qmp_client_connect_async(address, timeout_ms,
                             m->phase >= PHASE_SWITCHING ? NULL : m->cancellable, store_result,
                             &result);
    while (!result)
        g_main_context_iteration(m->context, TRUE);
    QmpClient *c = qmp_client_connect_finish(result, &local);
    if (c) {
        qmp_client_set_default_timeout(c, QMP_COMMAND_TIMEOUT_MS);
        return c;
    }
    /* Name the side, the address and the likely cause: the operator has two monitors. */
    const char *side = address == m->policy.source_qmp ? "source" : "destination";
    const char *hint =
        g_error_matches(local, QMP_ERROR, QMP_ERROR_TIMEOUT)
            ? " (QEMU serves one QMP client at a time: is another one, safe-migrated or "
              "libvirt, holding this monitor?)"
        : g_error_matches(local, QMP_ERROR, QMP_ERROR_CONNECT)
            ? " (is QEMU running, with -qmp ...,server=on at this address?)"
            : "";
    g_propagate_prefixed_error(error, local, "%s QMP %s: ", side, address);
    if (error && *error && *hint) {
        char *msg = g_strconcat((*error)->message, hint, NULL);
        g_free((*error)->message);
        (*error)->message = msg;
    }
    return NULL;
}

/* Connects to the destination, retrying while it is still starting (dest-prepare may return
 * before QEMU has created its socket). */
static QmpClient *connect_dest(SmMigration *m, guint timeout_ms, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        g_autoptr(GError) local = NULL;
        QmpClient *c = connect_vm(m, m->policy.dest_qmp, 2000, &local);
        if (c)
            return c;
        if (g_get_monotonic_time() > deadline || cancel_requested(m)) {
            g_propagate_error(error, g_steal_pointer(&local));
            return NULL;
        }
        sleep_ms(m, 100);
    }
}

static gboolean check_dest_ready(SmMigration *m, GError **error)
{
    g_autofree char *dst_state = runstate(m->dst, error);
    if (!dst_state)
        return FALSE;
    if (!g_str_equal(dst_state, "inmigrate")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_PREFLIGHT,
                    "destination %s is '%s', not waiting for a migration (start it with "
                    "-incoming defer)",
                    m->policy.dest_qmp, dst_state);
        return FALSE;
    }
    g_free(m->dst_machine);
    m->dst_machine = qmp_query_machine_type(m->dst, error);
    if (!m->dst_machine)
        return FALSE;
    if (g_strcmp0(m->src_machine, m->dst_machine) != 0) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_PREFLIGHT,
                    "machine types differ: source %s, destination %s", m->src_machine,
                    m->dst_machine);
        return FALSE;
    }
    if (!read_dest_fix(m, error))
        return FALSE;
    /* A fresh destination (dest-prepare) is found anew: its own values are restored. */
    g_clear_pointer(&m->dst_saved, settings_free);
    /* With params: multifd-channels is set on the destination too. */
    m->dst_saved = save_settings(m->dst, dst_managed_caps, error);
    return m->dst_saved != NULL;
}

static json_object *verdicts_json(const SmReport *report)
{
    json_object *list = json_object_new_array();
    for (guint i = 0; i < report->devices->len; i++)
        json_object_array_add(list, sm_verdict_to_json(g_ptr_array_index(report->devices, i)));
    return list;
}

/* The probe under its own time limit: at pre-switchover the guest is stopped while it runs,
 * so a hung capture must not stretch the downtime without bound. Only ever called on a
 * stopped VM: a capture stops a running one as SAVE_VM, which device models react to. */
static SmReport *probe_source(SmMigration *m, GError **error)
{
    qmp_client_set_default_timeout(m->src, timer_ms(m->policy.probe_timeout_ms));
    m->in_call++;
    SmReport *report = sm_probe_vm(m->src, m->registry, error);
    m->in_call--;
    if (m->src)
        qmp_client_set_default_timeout(m->src, QMP_COMMAND_TIMEOUT_MS);
    return report;
}

/* At pre-switchover, the guest stopped: the save into the prepared fd is the only command.
 * Judged against the devices read before the switchover. */
static SmReport *probe_at_switchover(SmMigration *m, gint64 *wait_us, GError **error)
{
    gint64 t0 = g_get_monotonic_time();
    *wait_us = t0 - m->event_us;
    qmp_client_set_default_timeout(m->src, timer_ms(m->policy.probe_timeout_ms));
    m->in_call++;
    g_autoptr(GBytes) state = sm_capture_take(m->capture, m->src, error);
    m->in_call--;
    gint64 t1 = g_get_monotonic_time();
    m->captured_us = t1;
    if (m->src)
        qmp_client_set_default_timeout(m->src, QMP_COMMAND_TIMEOUT_MS);
    if (!state)
        return NULL;
    SmReport *report = sm_report_from_split_capture(state, m->devices, m->registry,
                                                    qmp_client_get_version(m->src));
    report->capture_us = t1 - t0;
    return report;
}

/* A device whose state this gate cannot read in its present layout (sm_check_layouts): holding
 * cannot change that, so the migration is refused before anything starts. */
static gboolean check_layouts(GPtrArray *devices, GError **error)
{
    g_autoptr(GError) e = NULL;
    if (sm_check_layouts(devices, &e))
        return TRUE;
    g_set_error_literal(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_HELD_OUT, e->message);
    return FALSE;
}

/* A paused source's verdict is final (its guest cannot move on): an unsafe device refuses
 * the migration now, before anything starts. */
static gboolean check_paused_verdicts(SmMigration *m, const SmReport *report, GError **error)
{
    const SmDeviceVerdict *v = sm_report_first_unsafe(report);
    if (!v)
        return TRUE;
    g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_HELD_OUT,
                "%s is %s (%s) and the source is paused, so it cannot finish: resume the VM "
                "and let the guest complete its transfer, then migrate (the VM stays on %s)",
                device_key(v->id, v->qom_path), sm_state_to_string(v->state),
                v->reason ? v->reason : sm_verdict_pending_name(v), m->policy.source_qmp);
    return FALSE;
}

static void on_resume(QmpClient *client, const char *name, json_object *data, gint64 timestamp_us,
                      gpointer user_data)
{
    (void)client, (void)name, (void)data, (void)timestamp_us;
    assert_owner(user_data);
    ((SmMigration *)user_data)->resumed = TRUE;
}

static json_object *dest_fix_json(SmMigration *m)
{
    json_object *dest_devices = json_object_new_object();
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, m->dst_fix);
    while (g_hash_table_iter_next(&it, &k, &v))
        json_object_object_add(dest_devices, k, jstr(sm_fix_to_string(GPOINTER_TO_INT(v))));
    return dest_devices;
}

static json_object *devices_json(GPtrArray *devices)
{
    json_object *list = json_object_new_array();
    for (guint i = 0; i < devices->len; i++) {
        SmDevice *d = g_ptr_array_index(devices, i);
        json_object_array_add(list,
                              fields_new("id", jstr(d->id), "qom_path", jstr(d->qom_path), "type",
                                         jstr(d->type), "fix",
                                         jstr(sm_fix_to_string(sm_device_get_fix(d))), FIELDS_END));
    }
    return list;
}

/* QEMU before 9.0 under TCG loses guest stores in a migration when a RAM block's size is a
 * multiple of 256 KiB: its dirty-page sync clears 64 pages' bits at once without invalidating
 * TCG's TLB, so later stores mark nothing and those pages go stale on the destination
 * (upstream "physmem: Fix migration dirty bitmap coherency with TCG memory access", 9.0;
 * tests/rig/test-rig.c /rig/tcg-stores). No gate prevents that, so it is said up front.
 * Hotplugged RAM comes in such blocks. Best effort: a query QEMU refuses says nothing. */
char *sm_tcg_warning(QmpClient *qmp)
{
    int major = 0;
    gboolean kvm = TRUE;
    gint64 base = 0, plugged = 0;
    qmp_client_get_version_numbers(qmp, &major, NULL, NULL);
    if (major == 0 || major >= 9 || !qmp_query_kvm_enabled(qmp, &kvm, NULL) || kvm ||
        !qmp_query_memory_size(qmp, &base, &plugged, NULL) ||
        (base % (256 * 1024) != 0 && plugged == 0))
        return NULL;
    return g_strdup_printf(
        "QEMU %s runs this VM without KVM (TCG), and QEMU before 9.0 can lose guest memory "
        "writes in any TCG migration of RAM sized in multiples of 256 KiB (%" G_GINT64_FORMAT
        " bytes here): the guest may come up corrupted on the destination whatever its USB "
        "devices do. Use KVM or QEMU 9.0 or newer, or size the RAM off a 256 KiB multiple "
        "(QEMU then tracks it page by page)",
        qmp_client_get_version(qmp), base + plugged);
}

static json_object *tcg_warnings(SmMigration *m)
{
    g_autofree char *text = sm_tcg_warning(m->src);
    if (!text)
        return NULL;
    json_object *list = json_object_new_array();
    json_object_array_add(list, json_object_new_string(text));
    return list;
}

static gboolean check_source(SmMigration *m, char **src_state, GError **error)
{
    *src_state = runstate(m->src, error);
    if (!*src_state)
        return FALSE;
    if (!g_str_equal(*src_state, "running") && !g_str_equal(*src_state, "paused")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_PREFLIGHT,
                    "source is '%s'; only a running or paused VM can be migrated", *src_state);
        return FALSE;
    }
    m->src_was_running = g_str_equal(*src_state, "running");
    g_autofree char *mig = migration_status(m->src, error);
    if (!mig)
        return FALSE;
    if (g_str_equal(mig, "active") || g_str_equal(mig, "pre-switchover") ||
        g_str_equal(mig, "setup") || g_str_equal(mig, "device") || g_str_equal(mig, "cancelling")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_PREFLIGHT,
                    "source already has a migration '%s' (see: safe-migrate recover)", mig);
        return FALSE;
    }
    m->src_machine = qmp_query_machine_type(m->src, error);
    return m->src_machine != NULL;
}

/* Everything that can be known before the stream starts. A running source is inspected
 * (discovery and facts), never captured. A paused one is captured now (probing writes
 * "running" into the migration's global run state, so never at pre-switchover) and its
 * verdict is final for as long as no RESUME comes (tracked from here on). */
static gboolean preflight(SmMigration *m, SmReport **paused_report, GError **error)
{
    g_autofree char *src_state = NULL;
    if (!check_source(m, &src_state, error) || !check_dest_ready(m, error))
        return FALSE;
    m->resume_sub = qmp_client_subscribe(m->src, "RESUME", on_resume, m, NULL);
    g_autoptr(GPtrArray) devices = sm_inspect_devices(m->src, m->registry, error);
    if (!devices)
        return FALSE;
    g_autoptr(SmReport) report = NULL;
    if (!m->src_was_running) {
        report = probe_source(m, error);
        if (!report)
            return FALSE;
    }
    json_object *event = fields_new(
        "source_qemu", jstr(qmp_client_get_version(m->src)), "dest_qemu",
        jstr(qmp_client_get_version(m->dst)), "machine", jstr(m->src_machine), "source_state",
        jstr(src_state), "devices", report ? verdicts_json(report) : devices_json(devices),
        "dest_fix", dest_fix_json(m), FIELDS_END);
    json_object *warnings = tcg_warnings(m);
    if (warnings)
        json_object_object_add(event, "warnings", warnings);
    emit(m, SM_EVENT_PREFLIGHT, event);
    fault_point("preflight");
    if (!check_layouts(devices, error) || (report && !check_paused_verdicts(m, report, error)))
        return FALSE;
    m->src_saved = save_settings(m->src, src_managed_caps, error);
    if (!m->src_saved)
        return FALSE;
    *paused_report = g_steal_pointer(&report);
    return TRUE;
}

/* Discovery, facts and the capture's fd, per attempt and while the guest runs: at
 * pre-switchover only the save itself remains. QEMU refuses device_add and device_del while a
 * migration runs (qdev_device_add_from_qdict / qdev_unplug: "not allowed while migrating",
 * 7.2 and 10.0; only failover devices may be unplugged), so the devices found now are the
 * ones the stream will hold; judge_stream still checks it, section by section. */
static gboolean prepare_probe(SmMigration *m, GError **error)
{
    if (!m->capture && !(m->capture = sm_capture_new(error)))
        return FALSE;
    sm_capture_release(m->capture, m->src);
    g_clear_pointer(&m->devices, g_ptr_array_unref);
    m->devices = sm_inspect_devices(m->src, m->registry, error);
    return m->devices && sm_capture_prepare(m->capture, m->src, error);
}

static gboolean start_attempt(SmMigration *m, GError **error)
{
    m->attempts++;
    if (!prepare_probe(m, error))
        return FALSE;
    fault_point("prepared");
    if (!configure(m, error) || !qmp_migrate_incoming(m->dst, m->policy.uri, error))
        return FALSE;
    if (!qmp_migrate(m->src, m->policy.uri, error))
        return FALSE;
    emit(m, SM_EVENT_ATTEMPT,
         fields_new(SM_EVENT_KEY_ATTEMPT, json_object_new_int((int)m->attempts),
                    SM_EVENT_KEY_MAX_ATTEMPTS, json_object_new_int((int)m->policy.max_attempts),
                    FIELDS_END));
    fault_point("iterating");
    return TRUE;
}

/* Calls the attempt off and waits until the source runs again. */
static gboolean cancel_attempt(SmMigration *m, GError **error)
{
    if (!qmp_migrate_cancel(m->src, error))
        return FALSE;
    fault_point("cancel");
    static const char *const ends[] = {"cancelled", "failed", "completed", NULL};
    /* Not interruptible: a Ctrl-C now must not leave the source half-cancelled. */
    g_autofree char *end = wait_status(m, ends, 30000, FALSE, G_MAXINT, error);
    if (!end)
        return FALSE;
    if (g_str_equal(end, "completed")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_COMPLETED_ANYWAY,
                    "the migration completed before the cancel took effect");
        return FALSE;
    }
    return TRUE;
}

/* After a cancel or failure: the VM must be running on the source again (or paused, if it
 * was paused to begin with). */
static gboolean source_resumed(SmMigration *m, GError **error)
{
    g_autofree char *state = settled_runstate(m->src, error);
    if (!state)
        return FALSE;
    const char *want = m->src_was_running ? "running" : "paused";
    if (!g_str_equal(state, want)) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                    "source is '%s' after the migration was called off, expected '%s'", state,
                    want);
        return FALSE;
    }
    return TRUE;
}

static void on_prepare_exited(GObject *source, GAsyncResult *result, gpointer data)
{
    g_subprocess_wait_finish(G_SUBPROCESS(source), result, NULL);
    *(gboolean *)data = TRUE;
}

/* dest-prepare's own process group, so that a timeout or a cancel kills all it started;
 * SIGPIPE back to its default (the CLI ignores it, and exec keeps an ignored signal). */
static void prepare_child_setup(gpointer data)
{
    (void)data;
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
}

/* Copies dest-prepare's output to our stderr: its stdout must never mix into the --json
 * event stream on ours. Read through a pipe we close as soon as the command exits, so that
 * a daemon it leaves behind holding the pipe cannot hold the gate (or whoever reads the
 * gate's own output) open. */
static gboolean forward_output(GObject *stream, gpointer data)
{
    (void)data;
    char buf[4096];
    gssize n = g_pollable_input_stream_read_nonblocking(G_POLLABLE_INPUT_STREAM(stream), buf,
                                                        sizeof buf, NULL, NULL);
    if (n > 0) {
        (void)!write(STDERR_FILENO, buf, (size_t)n);
        return G_SOURCE_CONTINUE;
    }
    return n < 0 ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static GSubprocess *spawn_prepare(SmMigration *m, GError **error)
{
    g_autoptr(GSubprocessLauncher) l =
        g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE);
    g_subprocess_launcher_set_child_setup(l, prepare_child_setup, NULL, NULL);
    g_autofree char *attempt = g_strdup_printf("%u", m->attempts + 1);
    g_subprocess_launcher_setenv(l, "SM_VM", m->policy.name ? m->policy.name : "", TRUE);
    g_subprocess_launcher_setenv(l, "SM_ATTEMPT", attempt, TRUE);
    g_subprocess_launcher_setenv(l, "SM_DEST", m->policy.dest_qmp, TRUE);
    g_subprocess_launcher_setenv(l, "SM_URI", m->policy.uri, TRUE);
    const char *argv[] = {"/bin/sh", "-c", m->policy.dest_prepare, NULL};
    return g_subprocess_launcher_spawnv(l, argv, error);
}

static void kill_group(GSubprocess *proc)
{
    const char *id = g_subprocess_get_identifier(proc);
    if (id)
        kill(-(pid_t)g_ascii_strtoll(id, NULL, 10), SIGKILL);
    g_subprocess_force_exit(proc);
}

/* Runs dest-prepare to its end on the context, so that Ctrl-C still gets through; its
 * process group is killed then, or when it overruns dest-prepare-timeout: a hung
 * preparation must not hang the gate. */
static gboolean wait_prepare(SmMigration *m, GSubprocess *proc, GError **error)
{
    assert_owner(m);
    gboolean done = FALSE, timed_out = FALSE;
    g_subprocess_wait_async(proc, NULL, on_prepare_exited, &done);
    GInputStream *out = g_subprocess_get_stdout_pipe(proc);
    GSource *reader = g_pollable_input_stream_create_source(G_POLLABLE_INPUT_STREAM(out), NULL);
    g_source_set_callback(reader, G_SOURCE_FUNC(forward_output), NULL, NULL);
    g_source_attach(reader, m->context);
    gint64 deadline = m->policy.dest_prepare_timeout_ms > 0
                          ? deadline_after_ms(m->policy.dest_prepare_timeout_ms)
                          : G_MAXINT64;
    while (!done && !timed_out && !cancel_requested(m)) {
        gboolean tick = FALSE;
        GSource *timer = g_timeout_source_new(
            timer_ms(MIN((deadline - g_get_monotonic_time()) / 1000, (gint64)G_MAXUINT)));
        g_source_set_callback(timer, wake, &tick, NULL);
        g_source_attach(timer, m->context);
        while (!done && !tick && !cancel_requested(m))
            g_main_context_iteration(m->context, TRUE);
        g_source_destroy(timer);
        g_source_unref(timer);
        timed_out = !done && g_get_monotonic_time() >= deadline;
    }
    if (!done) {
        kill_group(proc);
        while (!done)
            g_main_context_iteration(m->context, TRUE);
    }
    /* What it wrote before it exited is still in the pipe: pass it on (bounded: a daemon
     * it left behind may write on), then let go. */
    for (int i = 0; i < 64 && g_pollable_input_stream_is_readable(G_POLLABLE_INPUT_STREAM(out)) &&
                    forward_output(G_OBJECT(out), NULL) == G_SOURCE_CONTINUE;
         i++)
        ;
    g_source_destroy(reader);
    g_source_unref(reader);
    g_input_stream_close(out, NULL, NULL);
    if (timed_out)
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_DEST_PREPARE,
                    "dest-prepare did not finish within %" G_GINT64_FORMAT " ms (killed): %s",
                    m->policy.dest_prepare_timeout_ms, m->policy.dest_prepare);
    else if (!done || cancel_requested(m))
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "interrupted during dest-prepare");
    return !timed_out && !cancel_requested(m);
}

static gboolean run_dest_prepare(SmMigration *m, GError **error)
{
    if (m->dst) {
        qmp_client_close(m->dst);
        g_clear_pointer(&m->dst, qmp_client_unref);
    }
    /* That destination is gone (dest-prepare replaces it): nothing to restore there. */
    g_clear_pointer(&m->dst_saved, settings_free);
    emit(m, SM_EVENT_DEST_PREPARE, fields_new("command", jstr(m->policy.dest_prepare), FIELDS_END));
    g_autoptr(GSubprocess) proc = spawn_prepare(m, error);
    if (!proc)
        return FALSE;
    fault_point("dest-prepare");
    if (!wait_prepare(m, proc, error))
        return FALSE;
    if (!g_subprocess_get_successful(proc)) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_DEST_PREPARE,
                    "dest-prepare failed (%s %d): %s",
                    g_subprocess_get_if_signaled(proc) ? "signal" : "exit status",
                    g_subprocess_get_if_signaled(proc) ? g_subprocess_get_term_sig(proc)
                                                       : g_subprocess_get_exit_status(proc),
                    m->policy.dest_prepare);
        return FALSE;
    }
    m->dst = connect_dest(m, DEST_READY_TIMEOUT_MS, error);
    return m->dst && check_dest_ready(m, error);
}

static gboolean verify_completed(SmMigration *m, gint64 *downtime_ms, gint64 *total_ms,
                                 GError **error)
{
    QmpMigrationInfo info;
    gboolean ok = qmp_query_migrate_info(m->src, &info, error);
    qmp_migration_info_clear(&info);
    if (!ok)
        return FALSE;
    *downtime_ms = info.downtime_ms;
    *total_ms = info.total_time_ms;
    g_autofree char *src_state = settled_runstate(m->src, error);
    if (!src_state)
        return FALSE;
    /* The destination's monitor connection may have dropped while the stream flowed (the
     * engine does not use it then): a fresh one tells where the VM runs. */
    if (!m->dst || !qmp_client_is_connected(m->dst)) {
        g_clear_pointer(&m->dst, qmp_client_unref);
        m->dst = connect_dest(m, CONNECT_TIMEOUT_MS, error);
        if (!m->dst)
            return FALSE;
    }
    g_autofree char *dst_state = settled_runstate(m->dst, error);
    if (!dst_state)
        return FALSE;
    const char *want = m->src_was_running ? "running" : "paused";
    if (!g_str_equal(src_state, "postmigrate") || !g_str_equal(dst_state, want)) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                    "after completion the source is '%s' (expected postmigrate) and the "
                    "destination '%s' (expected %s)",
                    src_state, dst_state, want);
        return FALSE;
    }
    return TRUE;
}

/* ------------------------------------------------------------------------------------- */

GQuark sm_engine_error_quark(void)
{
    return g_quark_from_static_string("sm-engine-error-quark");
}

SmMigration *sm_migration_new(const SmPolicy *policy, SmEventFunc func, gpointer user_data)
{
    SmMigration *m = g_new0(SmMigration, 1);
    sm_policy_copy(&m->policy, policy);
    m->emit_func = func;
    m->emit_data = user_data;
    m->dst_fix = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_mutex_init(&m->context_lock);
    m->cancellable = g_cancellable_new();
    return m;
}

void sm_migration_free(SmMigration *m)
{
    if (!m)
        return;
    g_mutex_lock(&m->context_lock);
    if (m->abandon_source) {
        g_source_destroy(m->abandon_source);
        g_clear_pointer(&m->abandon_source, g_source_unref);
    }
    GMainContext *context = g_steal_pointer(&m->context);
    g_mutex_unlock(&m->context_lock);
    if (m->src) {
        qmp_client_set_disconnect_handler(m->src, NULL, NULL, NULL);
        if (m->resume_sub)
            qmp_client_unsubscribe(m->src, m->resume_sub);
        qmp_client_close(m->src);
        qmp_client_unref(m->src);
    }
    if (m->dst) {
        qmp_client_close(m->dst);
        qmp_client_unref(m->dst);
    }
    if (context)
        g_main_context_unref(context);
    sm_policy_clear(&m->policy);
    g_clear_pointer(&m->registry, sm_registry_free);
    g_clear_error(&m->src_lost);
    g_clear_pointer(&m->src_saved, settings_free);
    g_clear_pointer(&m->dst_saved, settings_free);
    g_clear_pointer(&m->capture, sm_capture_free);
    g_clear_object(&m->cancellable);
    g_clear_pointer(&m->devices, g_ptr_array_unref);
    g_clear_pointer(&m->paused_report, sm_report_free);
    g_free(m->src_machine);
    g_free(m->dst_machine);
    g_hash_table_unref(m->dst_fix);
    g_mutex_clear(&m->context_lock);
    g_free(m);
}

/* ------------------------------------------------------------------------------------- */
/* The phase machine. Each phase has a step (its work, ending in the move to the next phase)
 * and an exit handler, the one place that decides what an error, a signal or a lost source
 * means in that phase. Every run ends through end_run. */

static const char *const phase_names[] = {
    [PHASE_PREFLIGHT] = "preflight",
    [PHASE_ITERATING] = "iterating",
    [PHASE_PRE_SWITCHOVER] = "pre-switchover",
    [PHASE_HOLDING] = "holding",
    [PHASE_SWITCHING] = "switching",
    [PHASE_VERIFYING] = "verifying",
    [PHASE_DONE] = "done",
};

#define TO(p) (1u << (p))
/* The moves each phase may make. A run can end (DONE) from anywhere; a source found
 * "completed" while an attempt is being called off is verified like a switch (VERIFYING);
 * a refused migrate-continue switched nothing, so it returns to PRE_SWITCHOVER. */
static const guint phase_moves[] = {
    [PHASE_PREFLIGHT] = TO(PHASE_ITERATING) | TO(PHASE_DONE),
    [PHASE_ITERATING] = TO(PHASE_PRE_SWITCHOVER) | TO(PHASE_VERIFYING) | TO(PHASE_DONE),
    [PHASE_PRE_SWITCHOVER] =
        TO(PHASE_HOLDING) | TO(PHASE_SWITCHING) | TO(PHASE_VERIFYING) | TO(PHASE_DONE),
    [PHASE_HOLDING] = TO(PHASE_ITERATING) | TO(PHASE_DONE),
    [PHASE_SWITCHING] = TO(PHASE_VERIFYING) | TO(PHASE_PRE_SWITCHOVER) | TO(PHASE_DONE),
    [PHASE_VERIFYING] = TO(PHASE_DONE),
    [PHASE_DONE] = 0,
};

static void set_phase(SmMigration *m, Phase to)
{
    assert_owner(m);
    if (!(phase_moves[m->phase] & TO(to)))
        g_critical("gate engine: invalid phase change %s -> %s", phase_names[m->phase],
                   phase_names[to]);
    m->phase = to;
}

/* How the migration went through, for the events: "idle", "held" (an attempt was called
 * off for a busy device and retried) or "fix" (QEMU's fix carried a busy device). */
static const char *path_of(SmMigration *m)
{
    return m->via_fix ? "fix" : m->attempts > 1 ? "held" : "idle";
}

/* The one way out: restores what the gate changed, reports the result, ends the run. */
static void end_run(SmMigration *m, int code, const char *result, const char *path,
                    gint64 downtime_ms, gint64 total_ms, const GError *error)
{
    if (m->capture && m->src && qmp_client_is_connected(m->src))
        sm_capture_release(m->capture, m->src);
    restore_all(m);
    json_object *f = fields_new(
        SM_EVENT_KEY_RESULT, jstr(result), SM_EVENT_KEY_EXIT_CODE, json_object_new_int(code),
        SM_EVENT_KEY_ATTEMPTS, json_object_new_int((int)m->attempts), SM_EVENT_KEY_HOLDS,
        json_object_new_int((int)m->holds), "total_ms",
        json_object_new_int64(total_ms >= 0 ? total_ms : elapsed_ms(m)), FIELDS_END);
    if (path)
        json_object_object_add(f, SM_EVENT_KEY_PATH, jstr(path));
    if (downtime_ms >= 0)
        json_object_object_add(f, SM_EVENT_KEY_DOWNTIME_MS, json_object_new_int64(downtime_ms));
    if (error)
        json_object_object_add(f, "error", jstr(error->message));
    emit(m, SM_EVENT_RESULT, f);
    m->exit_code = code;
    set_phase(m, PHASE_DONE);
}

/* 128 + the signal's number, the shell's convention; a plain cancel counts as SIGINT. */
static int interrupted_code(SmMigration *m)
{
    gint sig = g_atomic_int_get(&m->cancel_signal);
    return sig > 0 ? 128 + sig : SM_EXIT_SIGINT;
}

/* The source QMP went away: QEMU's monitor accepts a new connection, and the VM may be
 * paused at pre-switchover waiting for us, so getting back in is worth a few tries. */
static gboolean reconnect_source(SmMigration *m, GError **error)
{
    if (m->src) {
        qmp_client_set_disconnect_handler(m->src, NULL, NULL, NULL);
        g_clear_pointer(&m->src, qmp_client_unref);
    }
    m->resume_sub = 0;
    for (int i = 0; i < 20 && !m->src; i++) {
        m->src = qmp_client_connect(m->policy.source_qmp, 1000, NULL);
        if (!m->src)
            g_usleep(250000);
    }
    g_clear_error(&m->src_lost);
    if (!m->src) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                    "lost the source QMP (%s) and cannot reconnect; the VM may be paused at "
                    "pre-switchover: check 'query-migrate' on the source and run "
                    "safe-migrate recover --source %s --dest %s",
                    m->policy.source_qmp, m->policy.source_qmp, m->policy.dest_qmp);
        return FALSE;
    }
    qmp_client_set_default_timeout(m->src, QMP_COMMAND_TIMEOUT_MS);
    qmp_client_set_disconnect_handler(m->src, on_src_disconnect, m, NULL);
    m->resume_sub = qmp_client_subscribe(m->src, "RESUME", on_resume, m, NULL);
    return TRUE;
}

/* The exit of every phase in which an attempt may be running (ITERATING, PRE_SWITCHOVER):
 * asks the source where its migration is (it is the only authority, also after a lost
 * connection), calls a live one off, checks that the source runs again, and ends the run
 * with `code`. A migration QEMU completed meanwhile is verified instead. */
static void unwind(SmMigration *m, int code, const char *result, const GError *why)
{
    g_autoptr(GError) error = NULL;
    if (m->src_lost && !reconnect_source(m, &error)) {
        end_run(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, error);
        return;
    }
    g_autofree char *st = migration_status(m->src, NULL);
    if (st && g_str_equal(st, "completed"))
    /* It went through while we were away: fine if both ends say so. */
    {
        set_phase(m, PHASE_VERIFYING);
        return;
    }
    static const char *const ended[] = {"none", "cancelled", "failed", NULL};
    if (st && !g_strv_contains(ended, st) && !cancel_attempt(m, &error)) {
        if (g_error_matches(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_COMPLETED_ANYWAY)) {
            set_phase(m, PHASE_VERIFYING);
            return;
        }
        g_autoptr(GError) e =
            g_error_new(SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                        "could not call the migration off (%s); check both sides with "
                        "query-status and run safe-migrate recover --source %s --dest %s",
                        error->message, m->policy.source_qmp, m->policy.dest_qmp);
        {
            end_run(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, e);
            return;
        }
    }
    if (!source_resumed(m, &error)) {
        end_run(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, error);
        return;
    }
    emit(m, SM_EVENT_ABORTED, fields_new("reason", jstr(why ? why->message : result), FIELDS_END));
    end_run(m, code, result, NULL, -1, -1, why);
}

/* ---- PREFLIGHT: connect, check both sides, record their settings ---------------------- */

static gboolean step_preflight(SmMigration *m, GError **error)
{
    const SmPolicy *p = &m->policy;
    m->registry = sm_registry_new();
    if (p->plugin_dir && !sm_registry_load_dir(m->registry, p->plugin_dir, error))
        return FALSE;
    m->src = connect_vm(m, p->source_qmp, CONNECT_TIMEOUT_MS, error);
    if (m->src)
        m->dst = connect_vm(m, p->dest_qmp, CONNECT_TIMEOUT_MS, error);
    if (!m->src || !m->dst || cancel_requested(m))
        return FALSE;
    qmp_client_set_disconnect_handler(m->src, on_src_disconnect, m, NULL);
    m->in_call++;
    gboolean ok = preflight(m, &m->paused_report, error);
    m->in_call--;
    if (!ok || cancel_requested(m))
        return FALSE;
    set_phase(m, PHASE_ITERATING);
    return TRUE;
}

/* Nothing has started: the run is refused (or interrupted) with both sides as found. */
static void exit_preflight(SmMigration *m, const GError *error)
{
    if (g_error_matches(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN))
        end_run(m, SM_EXIT_USAGE, "refused", NULL, -1, -1, error);
    else if (cancel_requested(m))
        end_run(m, interrupted_code(m), "interrupted", NULL, -1, -1, NULL);
    else if (g_error_matches(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_HELD_OUT))
        end_run(m, SM_EXIT_HELD_OUT, "refused", NULL, -1, -1, error);
    else
        end_run(m, SM_EXIT_UNREACHABLE, "refused", NULL, -1, -1, error);
}

/* ---- ITERATING: one attempt's stream, up to QEMU's pause before switchover ------------- */

static gboolean step_iterating(SmMigration *m, GError **error)
{
    m->in_call++;
    gboolean started = start_attempt(m, error);
    m->in_call--;
    if (!started)
        return FALSE;
    static const char *const stops[] = {"pre-switchover", "completed", "failed", "cancelled", NULL};
    g_autofree char *status = wait_status(m, stops, m->policy.migration_timeout_ms, TRUE, 0, error);
    if (!status)
        return FALSE;
    if (!g_str_equal(status, "pre-switchover")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_FAILED,
                    "migration ended '%s' before switchover", status);
        return FALSE;
    }
    set_phase(m, PHASE_PRE_SWITCHOVER);
    return TRUE;
}

static void exit_iterating(SmMigration *m, const GError *error)
{
    if (cancel_requested(m))
        unwind(m, interrupted_code(m), "interrupted", NULL);
    else
        unwind(m, SM_EXIT_FAILED, "failed", error);
}

/* ---- PRE_SWITCHOVER: the VM stopped, its device state final: look before leaping -------- */

/* A busy device and budget left: call the attempt off (the guest finishes its transfer on
 * the source) and move to HOLDING. A call-off that fails with the source still connected
 * leaves the VM's state in doubt: the error says so (SM_ENGINE_ERROR_UNCERTAIN). */
static gboolean start_hold(SmMigration *m, const SmDeviceVerdict *busy, gint64 held_ms,
                           GError **error)
{
    m->holds++;
    m->hold_backoff_ms = sm_policy_hold_wait(&m->policy, m->holds, held_ms);
    const char *name = device_key(busy->id, busy->qom_path);
    g_autofree char *waiting =
        g_strdup_printf("%s has %s pending", name, sm_verdict_pending_name(busy));
    emit(m, SM_EVENT_HOLD,
         fields_new("device", jstr(name), "state", jstr(sm_state_to_string(busy->state)), "pending",
                    jstr(sm_verdict_pending_name(busy)), "waiting_for", jstr(waiting), "held_ms",
                    json_object_new_int64(held_ms), "retry_in_ms",
                    json_object_new_int64(m->hold_backoff_ms), FIELDS_END));
    GError *local = NULL;
    if (cancel_attempt(m, &local) && source_resumed(m, &local)) {
        set_phase(m, PHASE_HOLDING);
        return TRUE;
    }
    if (!m->src_lost && !g_error_matches(local, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN)) {
        GError *doubt =
            g_error_new_literal(SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN, local->message);
        g_error_free(local);
        local = doubt;
    }
    g_propagate_error(error, local);
    return FALSE;
}

/* A device is unsafe and holding is over (or cannot help): QEMU's fix if the policy and
 * the probe allow it, else a SM_ENGINE_ERROR_HELD_OUT error. */
static gboolean fall_back(SmMigration *m, const SmReport *report, const SmDeviceVerdict *busy,
                          gint64 held_ms, GError **error)
{
    const SmPolicy *p = &m->policy;
    gboolean benign_only = p->on_unquiesceable == SM_FALLBACK_USE_FIX_IF_BENIGN;
    g_autofree char *why = NULL;
    if (busy->final)
        why = g_strdup_printf("unknown: layout not understood (%s): holding cannot change it",
                              busy->reason ? busy->reason : "?");
    if (!busy->final && p->on_unquiesceable != SM_FALLBACK_ABORT &&
        fix_covers(m, report, benign_only, &why)) {
        emit(m, SM_EVENT_FIX_FALLBACK,
             fields_new("device", jstr(device_key(busy->id, busy->qom_path)), "pending",
                        jstr(sm_verdict_pending_name(busy)), "policy",
                        jstr(sm_fallback_to_string(p->on_unquiesceable)), FIELDS_END));
        m->via_fix = TRUE;
        return TRUE;
    }
    g_autofree char *what = busy->state == SM_STATE_UNKNOWN
                                ? g_strdup(busy->reason ? busy->reason : "unreadable")
                                : g_strdup_printf("%s pending", sm_verdict_pending_name(busy));
    g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_HELD_OUT,
                "%s stayed %s (%s) after %u attempt(s) and %" G_GINT64_FORMAT " ms; policy %s%s%s",
                device_key(busy->id, busy->qom_path), sm_state_to_string(busy->state), what,
                m->attempts, held_ms, sm_fallback_to_string(p->on_unquiesceable), why ? ": " : "",
                why ? why : "");
    return FALSE;
}

static json_object *switchover_event(SmMigration *m, const SmReport *report, gint64 wait_us)
{
    return fields_new(SM_EVENT_KEY_ATTEMPT, json_object_new_int((int)m->attempts), "devices",
                      verdicts_json(report), SM_EVENT_KEY_PROBE_US,
                      json_object_new_int64(report->capture_us), "wait_us",
                      json_object_new_int64(wait_us), "event_us",
                      json_object_new_int64(m->event_latency_us), "reused",
                      json_object_new_boolean(report == m->paused_report), FIELDS_END);
}

/* The move to SWITCHING: from migrate-continue on, nothing is called off. A refusal
 * switched nothing: back to PRE_SWITCHOVER, whose exit calls the attempt off. Any other
 * failure (a lost or slow monitor) may have switched: SWITCHING waits for QEMU's outcome.
 * `report` (NULL if its event went out already): the verdicts, whose pre-switchover event is
 * built and written only after migrate-continue: building and writing it (a pipe, a log, the
 * daemon's cross-thread post) while the guest is stopped would stretch its downtime (issue
 * 15). */
static gboolean start_switch(SmMigration *m, const SmReport *report, gint64 wait_us, GError **error)
{
    set_phase(m, PHASE_SWITCHING);
    g_autoptr(GError) local = NULL;
    gint64 t_continue = g_get_monotonic_time();
    gboolean continued = qmp_migrate_continue(m->src, "pre-switchover", &local);
    gint64 t_done = g_get_monotonic_time();
    if (report) {
        json_object *event = switchover_event(m, report, wait_us);
        /* From the capture's end to the continue: what the gate adds besides the capture. */
        json_object_object_add(
            event, "verdict_us",
            json_object_new_int64(m->captured_us ? t_continue - m->captured_us : -1));
        json_object_object_add(event, "continue_us", json_object_new_int64(t_done - t_continue));
        emit(m, SM_EVENT_PRE_SWITCHOVER, event);
    }
    if (!continued && g_error_matches(local, QMP_ERROR, QMP_ERROR_COMMAND)) {
        set_phase(m, PHASE_PRE_SWITCHOVER);
        g_propagate_error(error, g_steal_pointer(&local));
        return FALSE;
    }
    if (!local)
        fault_point("switching");
    /* One interrupt is not enough to leave (the switch takes milliseconds): a second one
     * leaves and reports both sides. */
    m->switch_cancels = g_atomic_int_get(&m->n_cancels) + 1;
    return TRUE;
}

static gboolean step_pre_switchover(SmMigration *m, GError **error)
{
    g_autoptr(SmReport) fresh = NULL;
    const SmReport *report = m->resumed ? NULL : m->paused_report;
    gint64 wait_us = 0;
    m->captured_us = 0;
    if (!report) {
        /* Resumed since preflight: a running VM now, stopped here by the migration. (One
         * paused again before the switchover cannot be told apart from events alone: its
         * STOP and the switchover's look alike; it is judged, and expected on the
         * destination, as running.) */
        m->src_was_running = m->src_was_running || m->resumed;
        if (!(fresh = probe_at_switchover(m, &wait_us, error)))
            return FALSE;
        report = fresh;
    }
    const SmDeviceVerdict *busy = sm_report_first_unsafe(report);
    gboolean told = busy || cancel_requested(m);
    if (told)
        emit(m, SM_EVENT_PRE_SWITCHOVER, switchover_event(m, report, wait_us));
    fault_point("pre-switchover");
    if (cancel_requested(m)) {
        if (!told)
            emit(m, SM_EVENT_PRE_SWITCHOVER, switchover_event(m, report, wait_us));
        return FALSE;
    }
    if (!busy)
        return start_switch(m, told ? NULL : report, wait_us, error);
    gint64 now = g_get_monotonic_time();
    if (!m->hold_started_us)
        m->hold_started_us = now;
    gint64 held_ms = (now - m->hold_started_us) / 1000;
    /* A paused guest cannot finish its transfer, an unreadable layout stays unreadable, and
     * without dest-prepare there is no destination to retry on: holding cannot help then. */
    const SmPolicy *p = &m->policy;
    if (m->src_was_running && !busy->final && p->dest_prepare && m->attempts < p->max_attempts &&
        held_ms < p->max_hold_ms)
        return start_hold(m, busy, held_ms, error);
    return fall_back(m, report, busy, held_ms, error) && start_switch(m, NULL, 0, error);
}

/* The attempt is still paused at pre-switchover (or its call-off went wrong): unwind it. */
static void exit_pre_switchover(SmMigration *m, const GError *error)
{
    if (g_error_matches(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_HELD_OUT))
        unwind(m, SM_EXIT_HELD_OUT, "aborted", error);
    else if (g_error_matches(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN))
        unwind(m, SM_EXIT_UNCERTAIN, "uncertain", error);
    else if (cancel_requested(m))
        unwind(m, interrupted_code(m), "interrupted", NULL);
    else
        unwind(m, SM_EXIT_FAILED, "failed", error);
}

/* ---- HOLDING: the attempt called off, the source running: wait, get a fresh destination */

static gboolean step_holding(SmMigration *m, GError **error)
{
    if (!sleep_ms(m, m->hold_backoff_ms)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "interrupted while holding");
        return FALSE;
    }
    if (!run_dest_prepare(m, error))
        return FALSE;
    emit(m, SM_EVENT_RETRY,
         fields_new(SM_EVENT_KEY_ATTEMPT, json_object_new_int((int)m->attempts + 1), FIELDS_END));
    set_phase(m, PHASE_ITERATING);
    return TRUE;
}

/* Nothing runs but the source (checked on the way in): nothing to unwind. */
static void exit_holding(SmMigration *m, const GError *error)
{
    if (cancel_requested(m)) {
        end_run(m, interrupted_code(m), "interrupted", NULL, -1, -1, NULL);
        return;
    }
    emit(m, SM_EVENT_ABORTED,
         fields_new("reason", jstr(error ? error->message : "failed"), FIELDS_END));
    end_run(m, SM_EXIT_FAILED, "failed", NULL, -1, -1, error);
}

/* ---- SWITCHING: after migrate-continue: QEMU's outcome, never a cancel ------------------ */

/* Waits, with progress and without a time limit, for QEMU's own outcome. */
static gboolean step_switching(SmMigration *m, GError **error)
{
    static const char *const ends[] = {"completed", "failed", "cancelled", NULL};
    g_autofree char *end = wait_status(m, ends, 0, TRUE, m->switch_cancels, error);
    if (!end)
        return FALSE;
    if (!g_str_equal(end, "completed")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_FAILED,
                    "migration ended '%s' after switchover", end);
        return FALSE;
    }
    set_phase(m, PHASE_VERIFYING);
    return TRUE;
}

/* The gate must leave while QEMU is switching over: say where each side is, as seen now. */
static void where_it_runs(SmMigration *m, const GError *why)
{
    g_autofree char *src_state = m->src ? runstate(m->src, NULL) : NULL;
    g_autofree char *dst_state = m->dst ? runstate(m->dst, NULL) : NULL;
    g_autoptr(GError) e = g_error_new(
        SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
        "left while QEMU was switching over (%s; a migration past migrate-continue is never "
        "called off): the source is '%s', the destination '%s'; the one that ends 'running' "
        "holds the VM: check both with query-status",
        why ? why->message : "interrupted", src_state ? src_state : "unreachable",
        dst_state ? dst_state : "unreachable");
    end_run(m, SM_EXIT_UNCERTAIN, "uncertain", path_of(m), -1, -1, e);
}

/* QEMU failed the switch (it restarts the source itself), the monitor went away (get back
 * in and keep waiting), or a second interrupt asks to leave now. */
static void exit_switching(SmMigration *m, const GError *error)
{
    g_autoptr(GError) e = NULL;
    if (g_error_matches(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_FAILED)) {
        if (!source_resumed(m, &e)) {
            end_run(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, e);
            return;
        }
        emit(m, SM_EVENT_ABORTED, fields_new("reason", jstr(error->message), FIELDS_END));
        {
            end_run(m, SM_EXIT_FAILED, "failed", NULL, -1, -1, error);
            return;
        }
    }
    if (!m->src_lost || cancelled_past(m, m->switch_cancels)) {
        where_it_runs(m, error);
        return;
    }
    if (!reconnect_source(m, &e)) {
        where_it_runs(m, e);
        return;
    }
    /* Still SWITCHING: the step waits again on the new connection. */
}

/* ---- VERIFYING: both sides' own account of where the VM runs --------------------------- */

static gboolean step_verifying(SmMigration *m, GError **error)
{
    gint64 downtime = -1, total = -1;
    if (!verify_completed(m, &downtime, &total, error))
        return FALSE;
    emit(m, SM_EVENT_COMPLETED,
         fields_new(SM_EVENT_KEY_PATH, jstr(path_of(m)), SM_EVENT_KEY_DOWNTIME_MS,
                    json_object_new_int64(downtime), FIELDS_END));
    end_run(m, SM_EXIT_OK, "migrated", path_of(m), downtime, elapsed_ms(m), NULL);
    return TRUE;
}

static void exit_verifying(SmMigration *m, const GError *error)
{
    end_run(m, SM_EXIT_UNCERTAIN, "uncertain", path_of(m), -1, -1, error);
}

static const struct {
    gboolean (*step)(SmMigration *m, GError **error);
    void (*leave)(SmMigration *m, const GError *error);
} phases[] = {
    [PHASE_PREFLIGHT] = {step_preflight, exit_preflight},
    [PHASE_ITERATING] = {step_iterating, exit_iterating},
    [PHASE_PRE_SWITCHOVER] = {step_pre_switchover, exit_pre_switchover},
    [PHASE_HOLDING] = {step_holding, exit_holding},
    [PHASE_SWITCHING] = {step_switching, exit_switching},
    [PHASE_VERIFYING] = {step_verifying, exit_verifying},
};

int sm_migration_run(SmMigration *m)
{
    g_mutex_lock(&m->context_lock);
    g_assert(!m->context);
    m->context = g_main_context_ref_thread_default();
    g_mutex_unlock(&m->context_lock);
    /* Held for the whole run, so that every step can assert it runs on its owner. */
    if (!g_main_context_acquire(m->context))
        g_critical("gate engine: the thread-default main context is owned by another thread");
    m->t0_us = g_get_monotonic_time();
    const SmPolicy *p = &m->policy;
    emit(m, SM_EVENT_START,
         fields_new("vm", jstr(p->name), "source", jstr(p->source_qmp), "dest", jstr(p->dest_qmp),
                    "uri", jstr(p->uri), SM_EVENT_KEY_MAX_ATTEMPTS,
                    json_object_new_int((int)p->max_attempts), "max_hold_ms",
                    json_object_new_int64(p->max_hold_ms), "on_unquiesceable",
                    jstr(sm_fallback_to_string(p->on_unquiesceable)), FIELDS_END));
    m->phase = PHASE_PREFLIGHT;
    while (m->phase != PHASE_DONE) {
        g_autoptr(GError) error = NULL;
        if (!phases[m->phase].step(m, &error))
            phases[m->phase].leave(m, error);
    }
    g_main_context_release(m->context);
    return m->exit_code;
}

/* Waits (30 s at most) for a migrate_cancel to end the migration. */
static char *recover_cancel(QmpClient *src, GError **error)
{
    if (!qmp_migrate_cancel(src, error))
        return NULL;
    gint64 deadline = deadline_after_ms(30000);
    for (;;) {
        char *status = migration_status(src, error);
        if (!status || g_str_equal(status, "cancelled") || g_str_equal(status, "failed") ||
            g_str_equal(status, "completed"))
            return status;
        if (g_get_monotonic_time() > deadline) {
            g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                        "migration still '%s' 30 s after migrate_cancel", status);
            g_free(status);
            return NULL;
        }
        g_free(status);
        g_usleep(20000);
    }
}

/* The gate's pause-before-switchover, left on by a gate that died, would stop the next
 * plain migration at pre-switchover. recover cannot know what else the gate changed nor
 * the values before it (they lived in the dead process): it turns only that one off. */
static char *recover_disarm(QmpClient *src)
{
    static const QmpCapability off[] = {{"pause-before-switchover", FALSE}};
    g_autoptr(GError) e = NULL;
    if (!qmp_migrate_set_capabilities(src, off, G_N_ELEMENTS(off), &e))
        return g_strdup_printf("; could not turn pause-before-switchover off (%s)", e->message);
    return g_strdup("; pause-before-switchover is off (events, downtime-limit and max-bandwidth "
                    "stay as the gate left them)");
}

/* Where the VM runs, from both sides' own run states: never claimed from one side only. */
static int recover_where(QmpClient *src, const char *dest_qmp, gboolean completed, char **where,
                         GError **error)
{
    g_autofree char *src_state = settled_runstate(src, error);
    if (!src_state)
        return SM_EXIT_UNCERTAIN;
    g_autofree char *dst_state = NULL;
    if (dest_qmp) {
        g_autoptr(GError) e = NULL;
        g_autoptr(QmpClient) dst = qmp_client_connect(dest_qmp, CONNECT_TIMEOUT_MS, &e);
        dst_state = dst ? settled_runstate(dst, &e) : NULL;
        if (!dst_state)
            dst_state = g_strdup_printf("unreachable: %s", e->message);
    }
    /* A paused source still holds the VM (it may have been paused before). A destination
     * that is not running after completion does not: recover cannot tell a VM paused before
     * the migration from one that never started there, so it says so instead. */
    gboolean src_live = g_str_equal(src_state, "running") || g_str_equal(src_state, "paused");
    gboolean dst_live = dst_state && g_str_equal(dst_state, "running");
    *where = g_strdup_printf("the source is '%s', the destination %s%s%s", src_state,
                             dst_state ? "'" : "", dst_state ? dst_state : "was not checked",
                             dst_state ? "'" : " (give --dest)");
    if (completed ? (dst_live && !src_live) : (src_live && !dst_live && dst_state))
        return SM_EXIT_OK;
    if (!completed && src_live && !dest_qmp)
        return SM_EXIT_OK; /* it runs on the source; the summary says what was not checked */
    g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                "the VM does not run on exactly one side that recover could check: %s", *where);
    return SM_EXIT_UNCERTAIN;
}

int sm_recover(const char *source_qmp, const char *dest_qmp, char **summary, GError **error)
{
    g_autoptr(QmpClient) src = qmp_client_connect(source_qmp, CONNECT_TIMEOUT_MS, error);
    if (!src)
        return SM_EXIT_UNREACHABLE;
    g_autofree char *status = migration_status(src, error);
    if (!status)
        return SM_EXIT_UNREACHABLE;
    gboolean in_progress = !g_str_equal(status, "none") && !g_str_equal(status, "cancelled") &&
                           !g_str_equal(status, "failed") && !g_str_equal(status, "completed");
    if (in_progress) {
        /* migrate_cancel also releases a migration paused at pre-switchover; QEMU then
         * resumes the VM if it was running when the migration began. */
        g_free(status);
        status = recover_cancel(src, error);
        if (!status)
            return SM_EXIT_UNCERTAIN;
    }
    gboolean completed = g_str_equal(status, "completed");
    g_autofree char *disarm = recover_disarm(src);
    g_autofree char *where = NULL;
    int code = recover_where(src, dest_qmp, completed, &where, error);
    *summary = g_strdup_printf("%s: %s%s",
                               completed     ? "the migration completed"
                               : in_progress ? "cancelled the migration in progress"
                                             : "no migration in progress",
                               where ? where : "", disarm);
    return code;
}
