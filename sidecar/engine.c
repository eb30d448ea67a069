/* The gate: one migration from preflight to verified completion. It pauses QEMU before
 * switchover, probes the device state, and continues only when no device would lose a
 * transaction; otherwise it calls the attempt off (the source resumes) and retries.
 *
 * Written as straight-line code over the synchronous libqmp layer on the thread-default
 * main context: the CLI runs it on the main thread, the daemon on one thread per migration.
 * Waits iterate the context, so QMP events, signals and cancel requests wake them. */
#include "sidecar.h"
#include "probe.h"

#include <signal.h>
#include <string.h>

#define CONNECT_TIMEOUT_MS 10000
#define DEST_READY_TIMEOUT_MS 30000
#define PROGRESS_INTERVAL_MS 1000
#define QMP_COMMAND_TIMEOUT_MS 30000

struct SmMigration {
    SmPolicy policy;
    SmEventFunc emit_func;
    gpointer emit_data;
    GMainContext *context;
    SmRegistry *registry;

    QmpClient *src, *dst;
    gint64 t0_us;
    guint attempts, holds;
    gint64 hold_started_us;
    gboolean src_was_running;
    gboolean migration_started; /* a `migrate` was issued for the current attempt */
    const char *path;           /* "idle", "held" or "fix": how the migration is going through */
    gint cancel_signal;         /* atomic: signal number (or -1 for a plain cancel) */
    GError *src_lost;           /* set when the source QMP connection went away */
    char *src_machine, *dst_machine;
    GHashTable *dst_fix; /* device key (id or qom path) -> SmFix */
};

/* ------------------------------------------------------------------------------------- */
/* Events */

static gint64 elapsed_ms(SmMigration *m)
{
    return (g_get_monotonic_time() - m->t0_us) / 1000;
}

static void emit(SmMigration *m, const char *event, json_object *fields)
{
    g_autoptr(json_object) obj = json_object_new_object();
    json_object_object_add(obj, "event", json_object_new_string(event));
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
 * dest-prepare) stops the process with SIGSTOP the first time it gets there, so that the
 * fault-injection tests can act in a known phase instead of racing the event stream. */
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

/* Sleeps on the context for ms, returning early (FALSE) on a cancel request. */
static gboolean sleep_ms(SmMigration *m, gint64 ms)
{
    gboolean done = FALSE;
    GSource *t = g_timeout_source_new((guint)ms);
    g_source_set_callback(t, wake, &done, NULL);
    g_source_attach(t, m->context);
    while (!done && !cancel_requested(m))
        g_main_context_iteration(m->context, TRUE);
    g_source_destroy(t);
    g_source_unref(t);
    return done;
}

void sm_migration_request_cancel(SmMigration *m, int signum)
{
    g_atomic_int_set(&m->cancel_signal, signum ? signum : -1);
    g_main_context_wakeup(m->context);
}

static void on_src_disconnect(QmpClient *client, const GError *reason, gpointer data)
{
    SmMigration *m = data;
    (void)client;
    if (!m->src_lost)
        m->src_lost = g_error_copy(reason);
}

/* ------------------------------------------------------------------------------------- */
/* QMP helpers */

static json_object *member(json_object *obj, const char *key)
{
    json_object *v = NULL;
    return obj && json_object_object_get_ex(obj, key, &v) ? v : NULL;
}

static const char *member_str(json_object *obj, const char *key)
{
    json_object *v = member(obj, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static char *runstate(QmpClient *qmp, GError **error)
{
    g_autoptr(json_object) r = qmp_client_execute(qmp, "query-status", NULL, error);
    return r ? g_strdup(member_str(r, "status")) : NULL;
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

static char *migration_status(QmpClient *qmp, json_object **info, GError **error)
{
    json_object *r = qmp_client_execute(qmp, "query-migrate", NULL, error);
    if (!r)
        return NULL;
    const char *s = member_str(r, "status");
    char *status = g_strdup(s ? s : "none");
    if (info)
        *info = r;
    else
        json_object_put(r);
    return status;
}

static char *machine_type(QmpClient *qmp, GError **error)
{
    g_autoptr(json_object) args =
        fields_new("path", jstr("/machine"), "property", jstr("type"), FIELDS_END);
    g_autoptr(json_object) r = qmp_client_execute(qmp, "qom-get", args, error);
    if (!r)
        return NULL;
    const char *t = json_object_get_string(r);
    /* "pc-i440fx-9.0-machine" -> "pc-i440fx-9.0" */
    return g_str_has_suffix(t, "-machine") ? g_strndup(t, strlen(t) - 8) : g_strdup(t);
}

static gboolean set_capabilities(QmpClient *qmp, const char *const *caps, GError **error)
{
    g_autoptr(json_object) list = json_object_new_array();
    for (guint i = 0; caps[i]; i += 2)
        json_object_array_add(list,
                              fields_new("capability", jstr(caps[i]), "state",
                                         json_object_new_boolean(caps[i + 1] != NULL), FIELDS_END));
    g_autoptr(json_object) args = fields_new("capabilities", json_object_get(list), FIELDS_END);
    g_autoptr(json_object) r = qmp_client_execute(qmp, "migrate-set-capabilities", args, error);
    return r != NULL;
}

static gboolean configure(SmMigration *m, GError **error)
{
    const SmPolicy *p = &m->policy;
    const char *on = "on";
    /* name, non-NULL for on */
    const char *src_caps[] = {"events",
                              on,
                              "pause-before-switchover",
                              on,
                              "multifd",
                              p->multifd ? on : NULL,
                              "auto-converge",
                              p->auto_converge ? on : NULL,
                              NULL};
    const char *dst_caps[] = {"events", on, "multifd", p->multifd ? on : NULL, NULL};
    if (!set_capabilities(m->src, src_caps, error) || !set_capabilities(m->dst, dst_caps, error))
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
        g_autoptr(json_object) r =
            qmp_client_execute(m->dst, "migrate-set-parameters", dparams, error);
        if (!r)
            return FALSE;
        json_object_object_add(params, "multifd-channels",
                               json_object_new_int((int)p->multifd_channels));
    }
    if (json_object_object_length(params) > 0) {
        g_autoptr(json_object) r =
            qmp_client_execute(m->src, "migrate-set-parameters", params, error);
        if (!r)
            return FALSE;
    }
    return TRUE;
}

static gboolean execute_uri(QmpClient *qmp, const char *command, const char *uri, GError **error)
{
    g_autoptr(json_object) args = fields_new("uri", jstr(uri), FIELDS_END);
    g_autoptr(json_object) r = qmp_client_execute(qmp, command, args, error);
    return r != NULL;
}

static gboolean simple_command(QmpClient *qmp, const char *command, json_object *args,
                               GError **error)
{
    g_autoptr(json_object) r = qmp_client_execute(qmp, command, args, error);
    if (args)
        json_object_put(args);
    return r != NULL;
}

/* ------------------------------------------------------------------------------------- */
/* Following the source's MIGRATION events */

typedef struct {
    const char *const *wanted;
    char *status;
} StatusWait;

static void on_migration_event(QmpClient *client, const char *name, json_object *data,
                               gint64 timestamp_us, gpointer user_data)
{
    StatusWait *w = user_data;
    (void)client, (void)name, (void)timestamp_us;
    const char *s = member_str(data, "status");
    if (s && !w->status && g_strv_contains(w->wanted, s))
        w->status = g_strdup(s);
}

static void emit_progress(SmMigration *m)
{
    g_autoptr(json_object) info = NULL;
    g_autofree char *status = migration_status(m->src, &info, NULL);
    if (!status)
        return;
    json_object *ram = member(info, "ram");
    json_object *f =
        fields_new("status", jstr(status), "attempt", json_object_new_int(m->attempts),
                   "max_attempts", json_object_new_int((int)m->policy.max_attempts), FIELDS_END);
    if (ram) {
        json_object *v;
        if ((v = member(ram, "total")))
            json_object_object_add(f, "ram_total", json_object_get(v));
        if ((v = member(ram, "transferred")))
            json_object_object_add(f, "ram_transferred", json_object_get(v));
        if ((v = member(ram, "remaining")))
            json_object_object_add(f, "ram_remaining", json_object_get(v));
        if ((v = member(ram, "mbps")) && json_object_is_type(v, json_type_double)) {
            /* QEMU prints 17 digits (537.13295999999991); two decimals are what it means. */
            g_autofree char *text = g_strdup_printf("%.2f", json_object_get_double(v));
            json_object_object_add(f, "mbps",
                                   json_object_new_double_s(g_ascii_strtod(text, NULL), text));
        }
    }
    emit(m, "progress", f);
}

/* Waits until the source's migration reaches one of `wanted`. The subscription is made
 * before the status is read, so a transition between the two cannot be missed. Returns the
 * status, or NULL with an error on a lost connection, a timeout, or (when `interruptible`) a
 * cancel request. */
static char *wait_status(SmMigration *m, const char *const *wanted, gint64 timeout_ms,
                         gboolean progress, gboolean interruptible, GError **error)
{
    StatusWait w = {.wanted = wanted};
    guint sub = qmp_client_subscribe(m->src, "MIGRATION", on_migration_event, &w, NULL);
    g_autofree char *now = migration_status(m->src, NULL, error);
    if (!now) {
        qmp_client_unsubscribe(m->src, sub);
        return NULL;
    }
    /* The event may have come in while query-migrate was on its way. */
    if (!w.status && g_strv_contains(wanted, now))
        w.status = g_steal_pointer(&now);
    gint64 deadline = timeout_ms > 0 ? g_get_monotonic_time() + timeout_ms * 1000 : G_MAXINT64;
    gint64 next_progress = g_get_monotonic_time() + PROGRESS_INTERVAL_MS * 1000;
    while (!w.status && !(interruptible && cancel_requested(m)) && !m->src_lost) {
        gboolean tick = FALSE;
        gint64 until = MIN(deadline, progress ? next_progress : deadline);
        gint64 wait = (until - g_get_monotonic_time()) / 1000;
        if (wait <= 0) {
            if (g_get_monotonic_time() >= deadline)
                break;
            emit_progress(m);
            next_progress = g_get_monotonic_time() + PROGRESS_INTERVAL_MS * 1000;
            continue;
        }
        GSource *t = g_timeout_source_new((guint)MIN(wait, G_MAXUINT));
        g_source_set_callback(t, wake, &tick, NULL);
        g_source_attach(t, m->context);
        while (!tick && !w.status && !(interruptible && cancel_requested(m)) && !m->src_lost)
            g_main_context_iteration(m->context, TRUE);
        g_source_destroy(t);
        g_source_unref(t);
    }
    qmp_client_unsubscribe(m->src, sub);
    if (w.status)
        return w.status;
    if (m->src_lost)
        g_set_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED, "lost the source QMP: %s",
                    m->src_lost->message);
    else if (interruptible && cancel_requested(m))
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

static const char *pending_name(const SmDeviceVerdict *v)
{
    if (v->pending && v->pending->len > 0) {
        const SmPendingRequest *r = g_ptr_array_index(v->pending, 0);
        return sm_scsi_opcode_name(r->cdb[0]);
    }
    return v->mode ? v->mode : "a transfer";
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

static gboolean benign_opcode(guint8 opcode)
{
    /* Losing these costs the guest nothing: a GESN poll is repeated within seconds and
     * carries no state the guest keeps; TEST UNIT READY has no data at all. */
    return opcode == 0x4a || opcode == 0x00;
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
        if (benign_only) {
            if (!v->pending || v->pending->len == 0) {
                *why = g_strdup_printf("%s: busy with no SCSI command named", name);
                return FALSE;
            }
            for (guint j = 0; j < v->pending->len; j++) {
                const SmPendingRequest *r = g_ptr_array_index(v->pending, j);
                if (!benign_opcode(r->cdb[0])) {
                    *why = g_strdup_printf("%s: pending %s is not harmless to lose", name,
                                           sm_scsi_opcode_name(r->cdb[0]));
                    return FALSE;
                }
            }
        }
    }
    return TRUE;
}

static const SmDeviceVerdict *first_unsafe(const SmReport *report)
{
    for (guint i = 0; i < report->devices->len; i++) {
        const SmDeviceVerdict *v = g_ptr_array_index(report->devices, i);
        if (!v->safe)
            return v;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------- */
/* Steps */

static QmpClient *connect_vm(SmMigration *m, const char *address, guint timeout_ms, GError **error)
{
    GError *local = NULL;
    QmpClient *c = qmp_client_connect(address, timeout_ms, &local);
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
    m->dst_machine = machine_type(m->dst, error);
    if (!m->dst_machine)
        return FALSE;
    if (g_strcmp0(m->src_machine, m->dst_machine) != 0) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_PREFLIGHT,
                    "machine types differ: source %s, destination %s", m->src_machine,
                    m->dst_machine);
        return FALSE;
    }
    return read_dest_fix(m, error);
}

static json_object *verdicts_json(const SmReport *report)
{
    json_object *list = json_object_new_array();
    for (guint i = 0; i < report->devices->len; i++)
        json_object_array_add(list, sm_verdict_to_json(g_ptr_array_index(report->devices, i)));
    return list;
}

/* The probe under its own time limit: at pre-switchover the guest is stopped while it runs,
 * so a hung capture must not stretch the downtime without bound. */
static SmReport *probe_source(SmMigration *m, GError **error)
{
    qmp_client_set_default_timeout(m->src, (guint)MAX(m->policy.probe_timeout_ms, 1));
    SmReport *report = sm_probe_vm(m->src, m->registry, error);
    qmp_client_set_default_timeout(m->src, QMP_COMMAND_TIMEOUT_MS);
    return report;
}

static gboolean preflight(SmMigration *m, SmReport **paused_report, GError **error)
{
    g_autofree char *src_state = runstate(m->src, error);
    if (!src_state)
        return FALSE;
    if (!g_str_equal(src_state, "running") && !g_str_equal(src_state, "paused")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_PREFLIGHT,
                    "source is '%s'; only a running or paused VM can be migrated", src_state);
        return FALSE;
    }
    m->src_was_running = g_str_equal(src_state, "running");
    g_autofree char *mig = migration_status(m->src, NULL, error);
    if (!mig)
        return FALSE;
    if (g_str_equal(mig, "active") || g_str_equal(mig, "pre-switchover") ||
        g_str_equal(mig, "setup") || g_str_equal(mig, "device") || g_str_equal(mig, "cancelling")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_PREFLIGHT,
                    "source already has a migration '%s' (see: safe-migrate recover)", mig);
        return FALSE;
    }
    m->src_machine = machine_type(m->src, error);
    if (!m->src_machine || !check_dest_ready(m, error))
        return FALSE;

    /* Probing writes "running" into the migration's global run state, so a paused source
     * is probed now, before the stream starts, and never at pre-switchover. With the guest
     * paused its devices cannot move on, so this verdict is final. */
    g_autoptr(SmReport) report = probe_source(m, error);
    if (!report)
        return FALSE;
    json_object *dest_devices = json_object_new_object();
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, m->dst_fix);
    while (g_hash_table_iter_next(&it, &k, &v))
        json_object_object_add(dest_devices, k, jstr(sm_fix_to_string(GPOINTER_TO_INT(v))));
    emit(m, "preflight",
         fields_new("source_qemu", jstr(qmp_client_get_version(m->src)), "dest_qemu",
                    jstr(qmp_client_get_version(m->dst)), "machine", jstr(m->src_machine),
                    "source_state", jstr(src_state), "devices", verdicts_json(report), "dest_fix",
                    dest_devices, FIELDS_END));
    fault_point("preflight");
    if (!m->src_was_running)
        *paused_report = g_steal_pointer(&report);
    return TRUE;
}

static gboolean start_attempt(SmMigration *m, GError **error)
{
    m->attempts++;
    if (!configure(m, error) || !execute_uri(m->dst, "migrate-incoming", m->policy.uri, error))
        return FALSE;
    if (!execute_uri(m->src, "migrate", m->policy.uri, error))
        return FALSE;
    m->migration_started = TRUE;
    emit(m, "attempt",
         fields_new("attempt", json_object_new_int((int)m->attempts), "max_attempts",
                    json_object_new_int((int)m->policy.max_attempts), FIELDS_END));
    fault_point("iterating");
    return TRUE;
}

/* Calls the attempt off and waits until the source runs again. */
static gboolean cancel_attempt(SmMigration *m, GError **error)
{
    if (!simple_command(m->src, "migrate_cancel", NULL, error))
        return FALSE;
    fault_point("cancel");
    static const char *const ends[] = {"cancelled", "failed", "completed", NULL};
    /* Not interruptible: a Ctrl-C now must not leave the source half-cancelled. */
    g_autofree char *end = wait_status(m, ends, 30000, FALSE, FALSE, error);
    if (!end)
        return FALSE;
    m->migration_started = FALSE;
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

static gboolean run_dest_prepare(SmMigration *m, GError **error)
{
    if (m->dst) {
        qmp_client_close(m->dst);
        g_clear_pointer(&m->dst, qmp_client_unref);
    }
    emit(m, "dest-prepare", fields_new("command", jstr(m->policy.dest_prepare), FIELDS_END));
    const char *argv[] = {"/bin/sh", "-c", m->policy.dest_prepare, NULL};
    g_autoptr(GSubprocess) proc = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_NONE, error);
    if (!proc)
        return FALSE;
    fault_point("dest-prepare");
    /* Wait on the context so that Ctrl-C still gets through; the command is killed then, or
     * when it overruns dest-prepare-timeout: a hung preparation must not hang the gate. */
    gboolean done = FALSE, timed_out = FALSE;
    g_subprocess_wait_async(proc, NULL, on_prepare_exited, &done);
    GSource *timer = NULL;
    if (m->policy.dest_prepare_timeout_ms > 0) {
        timer = g_timeout_source_new((guint)MIN(m->policy.dest_prepare_timeout_ms, G_MAXUINT));
        g_source_set_callback(timer, wake, &timed_out, NULL);
        g_source_attach(timer, m->context);
    }
    while (!done && !timed_out && !cancel_requested(m))
        g_main_context_iteration(m->context, TRUE);
    if (timer) {
        g_source_destroy(timer);
        g_source_unref(timer);
    }
    if (!done) {
        g_subprocess_force_exit(proc);
        while (!done)
            g_main_context_iteration(m->context, TRUE);
        if (timed_out)
            g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_DEST_PREPARE,
                        "dest-prepare did not finish within %" G_GINT64_FORMAT " ms (killed): %s",
                        m->policy.dest_prepare_timeout_ms, m->policy.dest_prepare);
        else
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "interrupted during dest-prepare");
        return FALSE;
    }
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
    g_autoptr(json_object) info = NULL;
    g_autofree char *status = migration_status(m->src, &info, error);
    if (!status)
        return FALSE;
    json_object *v;
    *downtime_ms = (v = member(info, "downtime")) ? json_object_get_int64(v) : -1;
    *total_ms = (v = member(info, "total-time")) ? json_object_get_int64(v) : -1;
    g_autofree char *src_state = settled_runstate(m->src, error);
    if (!src_state)
        return FALSE;
    /* The destination's monitor connection may have dropped while the stream flowed (the
     * engine does not use it then): a fresh one tells where the VM runs. */
    if (!qmp_client_is_connected(m->dst)) {
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
    sm_policy_init(&m->policy);
    m->policy = *policy;
    m->policy.name = g_strdup(policy->name);
    m->policy.file = g_strdup(policy->file);
    m->policy.source_qmp = g_strdup(policy->source_qmp);
    m->policy.dest_qmp = g_strdup(policy->dest_qmp);
    m->policy.uri = g_strdup(policy->uri);
    m->policy.dest_prepare = g_strdup(policy->dest_prepare);
    m->policy.plugin_dir = g_strdup(policy->plugin_dir);
    m->emit_func = func;
    m->emit_data = user_data;
    m->dst_fix = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return m;
}

void sm_migration_free(SmMigration *m)
{
    if (!m)
        return;
    if (m->src) {
        qmp_client_set_disconnect_handler(m->src, NULL, NULL, NULL);
        qmp_client_close(m->src);
        qmp_client_unref(m->src);
    }
    if (m->dst) {
        qmp_client_close(m->dst);
        qmp_client_unref(m->dst);
    }
    sm_policy_clear(&m->policy);
    g_clear_pointer(&m->registry, sm_registry_free);
    g_clear_error(&m->src_lost);
    g_free(m->src_machine);
    g_free(m->dst_machine);
    g_hash_table_unref(m->dst_fix);
    g_free(m);
}

static int finish(SmMigration *m, int code, const char *result, const char *path,
                  gint64 downtime_ms, gint64 total_ms, const GError *error)
{
    json_object *f = fields_new(
        "result", jstr(result), "exit_code", json_object_new_int(code), "attempts",
        json_object_new_int((int)m->attempts), "holds", json_object_new_int((int)m->holds),
        "total_ms", json_object_new_int64(total_ms >= 0 ? total_ms : elapsed_ms(m)), FIELDS_END);
    if (path)
        json_object_object_add(f, "path", jstr(path));
    if (downtime_ms >= 0)
        json_object_object_add(f, "downtime_ms", json_object_new_int64(downtime_ms));
    if (error)
        json_object_object_add(f, "error", jstr(error->message));
    emit(m, "result", f);
    return code;
}

static int interrupted_code(SmMigration *m)
{
    gint sig = g_atomic_int_get(&m->cancel_signal);
    return sig == SIGTERM ? SM_EXIT_SIGTERM : SM_EXIT_SIGINT;
}

/* The attempt is off the rails (interrupt, error): bring the source back and say how it
 * ended. Every path out of a started migration goes through here. */
static int call_off(SmMigration *m, int code, const char *result, const GError *why)
{
    g_autoptr(GError) error = NULL;
    if (m->src_lost) {
        /* The socket went away: QEMU's monitor accepts a new connection. The VM may be
         * paused at pre-switchover waiting for us, so getting back in is worth a retry. */
        if (m->src) {
            qmp_client_set_disconnect_handler(m->src, NULL, NULL, NULL);
            g_clear_pointer(&m->src, qmp_client_unref);
        }
        for (int i = 0; i < 20 && !m->src; i++) {
            m->src = qmp_client_connect(m->policy.source_qmp, 1000, NULL);
            if (!m->src)
                g_usleep(250000);
        }
        g_clear_error(&m->src_lost);
        if (!m->src) {
            g_autoptr(GError) e = g_error_new(
                SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                "lost the source QMP (%s) and cannot reconnect; the VM may be paused at "
                "pre-switchover: check 'query-migrate' on the source and run "
                "safe-migrate recover --source %s",
                m->policy.source_qmp, m->policy.source_qmp);
            return finish(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, e);
        }
        qmp_client_set_disconnect_handler(m->src, on_src_disconnect, m, NULL);
        g_autofree char *st = migration_status(m->src, NULL, NULL);
        m->migration_started = st && !g_str_equal(st, "completed") &&
                               !g_str_equal(st, "cancelled") && !g_str_equal(st, "failed") &&
                               !g_str_equal(st, "none");
        if (st && g_str_equal(st, "completed")) {
            /* It went through while we were away: fine if both ends say so. */
            gint64 downtime = -1, total = -1;
            g_autoptr(GError) verr = NULL;
            if (m->dst && verify_completed(m, &downtime, &total, &verr))
                return finish(m, SM_EXIT_OK, "migrated", m->path, downtime, total, NULL);
            g_autoptr(GError) e = g_error_new(
                SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                "the migration completed while the source QMP was away, but the destination "
                "could not be confirmed running (%s); check it with query-status",
                verr ? verr->message : "no connection");
            return finish(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, e);
        }
    }
    if (m->migration_started && !cancel_attempt(m, &error)) {
        if (g_error_matches(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_COMPLETED_ANYWAY)) {
            gint64 downtime = -1, total = -1;
            g_autoptr(GError) verr = NULL;
            if (verify_completed(m, &downtime, &total, &verr))
                return finish(m, SM_EXIT_OK, "migrated", m->path, downtime, total, NULL);
        }
        g_autoptr(GError) e =
            g_error_new(SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                        "could not call the migration off (%s); check both sides with "
                        "query-status and run safe-migrate recover --source %s",
                        error->message, m->policy.source_qmp);
        return finish(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, e);
    }
    if (!source_resumed(m, &error))
        return finish(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, -1, error);
    emit(m, "aborted", fields_new("reason", jstr(why ? why->message : result), FIELDS_END));
    return finish(m, code, result, NULL, -1, -1, why);
}

int sm_migration_run(SmMigration *m)
{
    g_autoptr(GError) error = NULL;
    m->context = g_main_context_ref_thread_default();
    m->t0_us = g_get_monotonic_time();
    const SmPolicy *p = &m->policy;
    emit(m, "start",
         fields_new("vm", jstr(p->name), "source", jstr(p->source_qmp), "dest", jstr(p->dest_qmp),
                    "uri", jstr(p->uri), "max_attempts", json_object_new_int((int)p->max_attempts),
                    "max_hold_ms", json_object_new_int64(p->max_hold_ms), "on_unquiesceable",
                    jstr(sm_fallback_to_string(p->on_unquiesceable)), FIELDS_END));

    m->registry = sm_registry_new();
    if (p->plugin_dir && !sm_registry_load_dir(m->registry, p->plugin_dir, &error))
        return finish(m, SM_EXIT_USAGE, "refused", NULL, -1, -1, error);
    m->src = connect_vm(m, p->source_qmp, CONNECT_TIMEOUT_MS, &error);
    if (m->src)
        m->dst = connect_vm(m, p->dest_qmp, CONNECT_TIMEOUT_MS, &error);
    if (!m->src || !m->dst)
        return finish(m, SM_EXIT_UNREACHABLE, "refused", NULL, -1, -1, error);
    qmp_client_set_disconnect_handler(m->src, on_src_disconnect, m, NULL);

    g_autoptr(SmReport) paused_report = NULL;
    if (!preflight(m, &paused_report, &error))
        return finish(m, SM_EXIT_UNREACHABLE, "refused", NULL, -1, -1, error);
    if (cancel_requested(m))
        return finish(m, interrupted_code(m), "interrupted", NULL, -1, -1, NULL);

    m->path = "idle";
    for (;;) {
        if (!start_attempt(m, &error))
            return call_off(m, SM_EXIT_FAILED, "failed", error);
        static const char *const stops[] = {"pre-switchover", "completed", "failed", "cancelled",
                                            NULL};
        g_autofree char *status =
            wait_status(m, stops, p->migration_timeout_ms, TRUE, TRUE, &error);
        if (!status) {
            if (cancel_requested(m))
                return call_off(m, interrupted_code(m), "interrupted", NULL);
            return call_off(m, SM_EXIT_FAILED, "failed", error);
        }
        if (!g_str_equal(status, "pre-switchover")) {
            m->migration_started = FALSE;
            g_autoptr(GError) e = g_error_new(SM_ENGINE_ERROR, SM_ENGINE_ERROR_FAILED,
                                              "migration ended '%s' before switchover", status);
            return call_off(m, SM_EXIT_FAILED, "failed", e);
        }

        /* The VM is stopped and its device state final: look before leaping. */
        g_autoptr(SmReport) fresh = NULL;
        const SmReport *report = paused_report;
        if (!report) {
            fresh = probe_source(m, &error);
            if (!fresh)
                return call_off(m, SM_EXIT_FAILED, "failed", error);
            report = fresh;
        }
        emit(m, "pre-switchover",
             fields_new("attempt", json_object_new_int((int)m->attempts), "devices",
                        verdicts_json(report), "probe_us",
                        json_object_new_int64(report->capture_us), FIELDS_END));
        fault_point("pre-switchover");
        if (cancel_requested(m))
            return call_off(m, interrupted_code(m), "interrupted", NULL);

        const SmDeviceVerdict *busy = first_unsafe(report);
        if (busy) {
            gint64 now = g_get_monotonic_time();
            if (!m->hold_started_us)
                m->hold_started_us = now;
            gint64 held_ms = (now - m->hold_started_us) / 1000;
            /* A paused guest cannot finish its transfer, and without dest-prepare there is
             * no destination to retry on: holding cannot help then. */
            gboolean can_hold = m->src_was_running && p->dest_prepare &&
                                m->attempts < p->max_attempts && held_ms < p->max_hold_ms;
            if (can_hold) {
                m->holds++;
                g_autofree char *waiting = g_strdup_printf(
                    "%s has %s pending", device_key(busy->id, busy->qom_path), pending_name(busy));
                emit(m, "hold",
                     fields_new("device", jstr(device_key(busy->id, busy->qom_path)), "state",
                                jstr(sm_state_to_string(busy->state)), "pending",
                                jstr(pending_name(busy)), "waiting_for", jstr(waiting), "held_ms",
                                json_object_new_int64(held_ms), FIELDS_END));
                if (!cancel_attempt(m, &error) || !source_resumed(m, &error))
                    /* With the source QMP lost, call_off reconnects, cancels and checks
                     * that the source runs, so it can vouch for the outcome itself. */
                    return call_off(m, m->src_lost ? SM_EXIT_FAILED : SM_EXIT_UNCERTAIN,
                                    m->src_lost ? "failed" : "uncertain", error);
                /* Exponential backoff from `backoff`, capped so it never overshoots the
                 * hold budget by much. */
                gint64 backoff = p->backoff_ms << MIN(m->holds - 1, 10u);
                backoff = MIN(backoff, MAX(p->max_hold_ms - held_ms, (gint64)0) + p->backoff_ms);
                if (!sleep_ms(m, backoff))
                    return finish(m, interrupted_code(m), "interrupted", NULL, -1, -1, NULL);
                if (!run_dest_prepare(m, &error)) {
                    if (cancel_requested(m))
                        return finish(m, interrupted_code(m), "interrupted", NULL, -1, -1, NULL);
                    emit(m, "aborted", fields_new("reason", jstr(error->message), FIELDS_END));
                    return finish(m, SM_EXIT_FAILED, "failed", NULL, -1, -1, error);
                }
                emit(m, "retry",
                     fields_new("attempt", json_object_new_int((int)m->attempts + 1), FIELDS_END));
                m->path = "held";
                continue;
            }
            gboolean benign_only = p->on_unquiesceable == SM_FALLBACK_USE_FIX_IF_BENIGN;
            g_autofree char *why = NULL;
            if (p->on_unquiesceable == SM_FALLBACK_ABORT ||
                !fix_covers(m, report, benign_only, &why)) {
                g_autoptr(GError) e = g_error_new(
                    SM_ENGINE_ERROR, SM_ENGINE_ERROR_HELD_OUT,
                    "%s stayed busy (%s pending) after %u attempt(s) and %" G_GINT64_FORMAT
                    " ms; policy %s%s%s",
                    device_key(busy->id, busy->qom_path), pending_name(busy), m->attempts, held_ms,
                    sm_fallback_to_string(p->on_unquiesceable), why ? ": " : "", why ? why : "");
                return call_off(m, SM_EXIT_HELD_OUT, "aborted", e);
            }
            emit(m, "fix-fallback",
                 fields_new("device", jstr(device_key(busy->id, busy->qom_path)), "pending",
                            jstr(pending_name(busy)), "policy",
                            jstr(sm_fallback_to_string(p->on_unquiesceable)), FIELDS_END));
            m->path = "fix";
        }

        if (!simple_command(m->src, "migrate-continue",
                            fields_new("state", jstr("pre-switchover"), FIELDS_END), &error))
            return call_off(m, SM_EXIT_FAILED, "failed", error);
        static const char *const ends[] = {"completed", "failed", "cancelled", NULL};
        g_autofree char *end = wait_status(m, ends, 60000, FALSE, TRUE, &error);
        if (!end) {
            if (cancel_requested(m))
                return call_off(m, interrupted_code(m), "interrupted", NULL);
            return call_off(m, SM_EXIT_FAILED, "failed", error);
        }
        if (!g_str_equal(end, "completed")) {
            m->migration_started = FALSE;
            g_autoptr(GError) e = g_error_new(SM_ENGINE_ERROR, SM_ENGINE_ERROR_FAILED,
                                              "migration ended '%s' after switchover", end);
            return call_off(m, SM_EXIT_FAILED, "failed", e);
        }
        m->migration_started = FALSE;
        gint64 downtime = -1, total = -1;
        if (!verify_completed(m, &downtime, &total, &error))
            return finish(m, SM_EXIT_UNCERTAIN, "uncertain", m->path, -1, -1, error);
        emit(m, "completed",
             fields_new("path", jstr(m->path), "downtime_ms", json_object_new_int64(downtime),
                        FIELDS_END));
        return finish(m, SM_EXIT_OK, "migrated", m->path, downtime, elapsed_ms(m), NULL);
    }
}

int sm_recover(const char *source_qmp, char **summary, GError **error)
{
    g_autoptr(QmpClient) src = qmp_client_connect(source_qmp, CONNECT_TIMEOUT_MS, error);
    if (!src)
        return SM_EXIT_UNREACHABLE;
    g_autofree char *status = migration_status(src, NULL, error);
    if (!status)
        return SM_EXIT_UNREACHABLE;
    if (g_str_equal(status, "completed")) {
        *summary = g_strdup("the migration completed: the VM runs on the destination; the "
                            "source is only a shell now (postmigrate)");
        return SM_EXIT_OK;
    }
    gboolean in_progress = !g_str_equal(status, "none") && !g_str_equal(status, "cancelled") &&
                           !g_str_equal(status, "failed");
    if (in_progress) {
        /* migrate_cancel also releases a migration paused at pre-switchover; QEMU then
         * resumes the VM if it was running when the migration began. */
        g_autoptr(json_object) r = qmp_client_execute(src, "migrate_cancel", NULL, error);
        if (!r)
            return SM_EXIT_UNCERTAIN;
        gint64 deadline = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
        for (;;) {
            g_free(status);
            status = migration_status(src, NULL, error);
            if (!status)
                return SM_EXIT_UNCERTAIN;
            if (g_str_equal(status, "cancelled") || g_str_equal(status, "failed") ||
                g_str_equal(status, "completed"))
                break;
            if (g_get_monotonic_time() > deadline) {
                g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                            "migration still '%s' 30 s after migrate_cancel", status);
                return SM_EXIT_UNCERTAIN;
            }
            g_usleep(20000);
        }
        if (g_str_equal(status, "completed")) {
            *summary = g_strdup("the migration completed before it could be cancelled: the VM "
                                "runs on the destination");
            return SM_EXIT_OK;
        }
    }
    g_autofree char *state = settled_runstate(src, error);
    if (!state)
        return SM_EXIT_UNCERTAIN;
    *summary = g_strdup_printf(
        "%s; the source is '%s'",
        in_progress ? "cancelled the migration in progress" : "no migration in progress", state);
    if (!g_str_equal(state, "running") && !g_str_equal(state, "paused")) {
        g_set_error(error, SM_ENGINE_ERROR, SM_ENGINE_ERROR_UNCERTAIN,
                    "source is '%s' after recovery; inspect it by hand", state);
        return SM_EXIT_UNCERTAIN;
    }
    return SM_EXIT_OK;
}
