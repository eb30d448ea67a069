/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The filter's gate worker: its own thread and main context, and a QMP client that reaches
 * QEMU through the relay (which multiplexes it onto libvirt's connection). It answers one
 * job at a time: probe a paused VM before `migrate`, decide at pre-switchover (continue, or
 * cancel and refuse with a message naming the device and the pending command), and report
 * the devices' state to `safe-migrate status`. */
#define G_LOG_DOMAIN "safe-migrate-filter"

#include <string.h>
#include <unistd.h>

#include "filter.h"
#include "qmp-commands.h"

#define QMP_TIMEOUT_MS 10000
#define CANCEL_TIMEOUT_MS 30000

struct SmGate {
    SmPolicy policy; /* worker's copy of what it reads */
    char *address;
    GMainContext *main_context;
    SmGateDoneFunc done;
    gpointer user_data;
    GAsyncQueue *jobs;
    SmRegistry *registry;
    GMainContext *worker_context; /* the worker thread's own, acquired by it */
    QmpClient *qmp;               /* worker thread only */
    GThread *thread;
};

#define ASSERT_WORKER(g) g_assert(g_main_context_is_owner((g)->worker_context))

void sm_gate_job_free(SmGateJob *job)
{
    if (!job)
        return;
    if (job->paused_report)
        sm_report_free(job->paused_report);
    g_free(job->paused_unread);
    g_free(job->message);
    g_free(job->reply);
    g_free(job);
}

static QmpClient *client(SmGate *g, GError **error)
{
    ASSERT_WORKER(g);
    if (g->qmp && !qmp_client_is_connected(g->qmp))
        g_clear_pointer(&g->qmp, qmp_client_unref);
    if (!g->qmp) {
        g->qmp = qmp_client_connect(g->address, QMP_TIMEOUT_MS, error);
        if (g->qmp)
            qmp_client_set_default_timeout(g->qmp, QMP_TIMEOUT_MS);
    }
    return g->qmp;
}

/* query-migrate's status (typed layer: "none" when QEMU reports no migration). */
static char *migration_status(QmpClient *qmp, GError **error)
{
    char *status = NULL;
    g_autoptr(json_object) info = qmp_query_migrate(qmp, &status, error);
    return info ? status : NULL;
}

/* Probing writes "running" into the migration's global run state: a paused VM is probed
 * before its migration starts, and that verdict (its guest cannot move) used at switchover. */
static void pre_migrate(SmGate *g, SmGateJob *job)
{
    g_autoptr(GError) error = NULL;
    QmpClient *qmp = client(g, &error);
    g_autofree char *status = qmp ? qmp_query_status(qmp, NULL, &error) : NULL;
    job->action = SM_GATE_PROCEED;
    if (!status) {
        g_warning("before migrate: %s", error->message);
        return;
    }
    if (g_str_equal(status, "running"))
        return;
    qmp_client_set_default_timeout(qmp, (guint)MAX(g->policy.probe_timeout_ms, 1));
    job->paused_report = sm_probe_vm(qmp, g->registry, &error);
    qmp_client_set_default_timeout(qmp, QMP_TIMEOUT_MS);
    if (!job->paused_report) {
        g_warning("probe of the paused VM: %s", error->message);
        job->paused_unread = g_strdup(error->message);
    }
}

/* migrate_cancel, then wait for QEMU's end of it: the source runs again on "cancelled". */
static gboolean cancel(QmpClient *qmp, GError **error)
{
    if (!qmp_migrate_cancel(qmp, error))
        return FALSE;
    gint64 deadline = g_get_monotonic_time() + CANCEL_TIMEOUT_MS * 1000;
    while (g_get_monotonic_time() < deadline) {
        g_autofree char *st = migration_status(qmp, error);
        if (!st)
            return FALSE;
        if (g_str_equal(st, "cancelled") || g_str_equal(st, "failed"))
            return TRUE;
        if (g_str_equal(st, "completed")) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_COMMAND, "the migration completed anyway");
            return FALSE;
        }
        g_usleep(5000);
    }
    g_set_error(error, QMP_ERROR, QMP_ERROR_TIMEOUT, "the cancel did not end in %d ms",
                CANCEL_TIMEOUT_MS);
    return FALSE;
}

static void refuse(SmGateJob *job, QmpClient *qmp, const char *why)
{
    g_autoptr(GError) error = NULL;
    job->action = SM_GATE_REFUSE;
    if (qmp && cancel(qmp, &error))
        job->message = g_strdup_printf("safe-migrate: switchover held: %s; the migration was "
                                       "cancelled and the domain keeps running on the source; "
                                       "retry later",
                                       why);
    else
        job->message = g_strdup_printf("safe-migrate: switchover held: %s; cancelling the "
                                       "migration failed (%s)",
                                       why, error ? error->message : "no QMP client");
}

static void switchover(SmGate *g, SmGateJob *job)
{
    g_autoptr(GError) error = NULL;
    QmpClient *qmp = client(g, &error);
    g_autofree char *st = qmp ? migration_status(qmp, &error) : NULL;
    if (!st) { /* cannot look: not "idle" (the cancel may fail too, said in the message) */
        g_autofree char *why = g_strdup_printf("cannot read the migration (%s)", error->message);
        refuse(job, qmp, why);
        return;
    }
    if (!g_str_equal(st, "pre-switchover")) { /* e.g. a restarted filter after its cancel */
        job->action = SM_GATE_REFUSE;
        job->message = g_strdup_printf("safe-migrate: switchover held: the migration is '%s', "
                                       "not waiting at pre-switchover",
                                       st);
        return;
    }
    SmReport *report = job->paused_report;
    g_autoptr(SmReport) fresh = NULL;
    if (!report && job->paused_unread) {
        /* A capture now would store "running" as the run state the destination resumes
         * with (QEMU's xen-save-devices-state): the domain paused by its user would come
         * up running there. Never captured: held. */
        g_autofree char *why =
            g_strdup_printf("the paused VM's state could not be read before the migration (%s)",
                            job->paused_unread);
        refuse(job, qmp, why);
        return;
    }
    if (!report) {
        qmp_client_set_default_timeout(qmp, (guint)MAX(g->policy.probe_timeout_ms, 1));
        report = fresh = sm_probe_vm(qmp, g->registry, &error);
        qmp_client_set_default_timeout(qmp, QMP_TIMEOUT_MS);
    }
    if (!report) {
        g_autofree char *why = g_strdup_printf("device state unreadable (%s)", error->message);
        refuse(job, qmp, why);
        return;
    }
    const SmDeviceVerdict *busy = sm_report_first_unsafe(report);
    if (!busy) {
        job->action = SM_GATE_PROCEED;
        g_info("switchover: %u device(s) idle, continuing", report->devices->len);
        return;
    }
    const char *device = busy->id ? busy->id : busy->qom_path;
    const char *reason = busy->reason ? busy->reason : "";
    g_autofree char *why =
        busy->state == SM_STATE_UNKNOWN
            ? g_strdup_printf("%s: state unknown, never called idle (%s)", device, reason)
            : g_strdup_printf("%s is busy with %s pending (%s)", device,
                              sm_verdict_pending_name(busy), reason);
    refuse(job, qmp, why);
}

static void status(SmGate *g, SmGateJob *job)
{
    g_autoptr(GError) error = NULL;
    QmpClient *qmp = client(g, &error);
    /* No probe under any migration: a capture stores "running" as the run state the
     * destination resumes with (between QEMU's pre-switchover and our SWITCHOVER job a paused
     * domain would come up running). Every libvirt migrate passes through a PRE_MIGRATE job on
     * this worker, so none can start between the check and the capture. */
    g_autoptr(SmReport) report =
        qmp && sm_probe_migration_free(qmp, &error) ? sm_probe_vm(qmp, g->registry, &error) : NULL;
    g_autoptr(json_object) obj = report ? sm_report_to_json(report) : json_object_new_object();
    if (!report)
        json_object_object_add(obj, "error", json_object_new_string(error->message));
    job->reply =
        g_strdup_printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
}

typedef struct {
    SmGate *gate;
    SmGateJob *job;
} Delivery;

static gboolean on_delivery(gpointer data)
{
    Delivery *d = data;
    g_assert(g_main_context_is_owner(d->gate->main_context));
    d->gate->done(d->job, d->gate->user_data);
    g_free(d);
    return G_SOURCE_REMOVE;
}

static gpointer worker(gpointer data)
{
    SmGate *g = data;
    g_main_context_acquire(g->worker_context);
    g_main_context_push_thread_default(g->worker_context);
    for (;;) {
        SmGateJob *job = g_async_queue_pop(g->jobs);
        if (job->kind == SM_GATE_JOB_PRE_MIGRATE)
            pre_migrate(g, job);
        else if (job->kind == SM_GATE_JOB_SWITCHOVER)
            switchover(g, job);
        else
            status(g, job);
        Delivery *d = g_new0(Delivery, 1);
        d->gate = g;
        d->job = job;
        g_main_context_invoke(g->main_context, on_delivery, d);
    }
    return NULL;
}

SmGate *sm_gate_new(const SmPolicy *policy, const char *probe_socket, GMainContext *main_context,
                    SmGateDoneFunc done, gpointer user_data)
{
    SmGate *g = g_new0(SmGate, 1);
    g->policy.probe_timeout_ms = policy->probe_timeout_ms;
    g->address = g_strconcat("unix:", probe_socket, NULL);
    g->main_context = main_context ? main_context : g_main_context_default();
    g->done = done;
    g->user_data = user_data;
    g->jobs = g_async_queue_new();
    g->registry = sm_registry_new();
    g->worker_context = g_main_context_new();
    g_autoptr(GError) error = NULL;
    if (policy->plugin_dir && !sm_registry_load_dir(g->registry, policy->plugin_dir, &error))
        g_warning("plugins: %s (built-in probes only)", error->message);
    g->thread = g_thread_new("gate", worker, g);
    return g;
}

void sm_gate_submit(SmGate *gate, SmGateJob *job)
{
    g_async_queue_push(gate->jobs, job);
}
