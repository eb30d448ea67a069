/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The filter's gate worker: its own thread and main context, and a QMP client that reaches
 * QEMU through the relay (which multiplexes it onto libvirt's connection). It answers one
 * job at a time: before `migrate`, read the devices and hand QEMU the capture's fd while the
 * guest runs (refusing a device it cannot judge; a paused VM is probed then), decide at
 * pre-switchover with the save alone (continue, or cancel and refuse with a message naming
 * the device and the pending command), and report the devices' state to `status`. */
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
    /* Worker thread only: the split capture (plugin/capture.h). The fd QEMU saves into at
     * switchover, added before `migrate`; and the devices read then, for that migration's one
     * switchover (NULL: none prepared). QEMU refuses device_add/del while migrating. */
    SmCapture *capture;
    GPtrArray *devices;
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

/* Where the domain is after its migration was called off, as the refusal says it: a paused
 * domain is not "running" (7.2 leaves it postmigrate after a cancelled switchover). */
static char *where_it_stays(QmpClient *qmp)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *status = qmp ? qmp_query_status(qmp, NULL, &error) : NULL;
    if (!status)
        return g_strdup_printf("the domain stays on the source (its run state could not be "
                               "read: %s)",
                               error ? error->message : "no QMP client");
    if (g_str_equal(status, "running"))
        return g_strdup("the domain keeps running on the source");
    return g_strdup_printf("the domain stays on the source, not running (QEMU: %s)", status);
}

/* Answers libvirt's `migrate` itself: nothing has started. */
static void refuse_migrate(SmGateJob *job, QmpClient *qmp, const char *why)
{
    g_autofree char *where = where_it_stays(qmp);
    job->action = SM_GATE_REFUSE;
    job->message = g_strdup_printf("safe-migrate: migration refused: %s; nothing was started "
                                   "and %s",
                                   why, where);
}

/* Gives QEMU back the capture's fd set and forgets the devices read for it. */
static void release_capture(SmGate *g, QmpClient *qmp)
{
    ASSERT_WORKER(g);
    if (g->capture && qmp)
        sm_capture_release(g->capture, qmp);
    g_clear_pointer(&g->devices, g_ptr_array_unref);
}

/* Probing writes "running" into the migration's global run state: a paused VM is probed
 * before its migration starts, and that verdict (its guest cannot move) used at switchover. */
static void probe_paused(SmGate *g, QmpClient *qmp, SmGateJob *job)
{
    g_autoptr(GError) error = NULL;
    qmp_client_set_default_timeout(qmp, (guint)MAX(g->policy.probe_timeout_ms, 1));
    job->paused_report = sm_probe_vm(qmp, g->registry, &error);
    qmp_client_set_default_timeout(qmp, QMP_TIMEOUT_MS);
    if (!job->paused_report) {
        g_warning("probe of the paused VM: %s", error->message);
        job->paused_unread = g_strdup(error->message);
    }
}

/* What a device the gate will not call idle has: "DEV is busy with X pending (why)" or "DEV:
 * state unknown, ..." (the CLI's libvirt form reads these words). */
static char *unsafe_why(const SmDeviceVerdict *busy)
{
    const char *device = busy->id ? busy->id : busy->qom_path;
    const char *reason = busy->reason ? busy->reason : "";
    return busy->state == SM_STATE_UNKNOWN
               ? g_strdup_printf("%s: state unknown, never called idle (%s)", device, reason)
               : g_strdup_printf("%s is busy with %s pending (%s)", device,
                                 sm_verdict_pending_name(busy), reason);
}

/* A paused guest cannot finish a transfer, so holding its switchover changes nothing; and a
 * held switchover leaves QEMU 7.2 "postmigrate", whose next `migrate` QEMU refuses ("Can't
 * migrate the vm that was paused due to previous migration") until someone resumes it. So a
 * paused VM the gate would hold is refused before anything starts: it stays "paused". */
static gboolean refuse_paused(SmGateJob *job, QmpClient *qmp)
{
    const SmDeviceVerdict *busy =
        job->paused_report ? sm_report_first_unsafe(job->paused_report) : NULL;
    g_autofree char *what = NULL;
    if (job->paused_unread)
        what = g_strdup_printf("the paused VM's state could not be read before the migration (%s)",
                               job->paused_unread);
    else if (busy)
        what = unsafe_why(busy);
    else
        return FALSE;
    g_autofree char *why = g_strdup_printf("the switchover would be held: %s; the domain is "
                                           "paused, its guest cannot change that: resume it and "
                                           "retry",
                                           what);
    g_clear_pointer(&job->paused_report, sm_report_free);
    g_clear_pointer(&job->paused_unread, g_free);
    refuse_migrate(job, qmp, why);
    return TRUE;
}

/* Before libvirt's `migrate`, while the guest runs: the devices and their facts, a device the
 * gate cannot judge refused now (holding could not change it), and the capture's fd handed
 * to QEMU, so that at pre-switchover the save is the only command. Fails closed: what cannot
 * be read now could not be judged at switchover either, so nothing is started. */
static void pre_migrate(SmGate *g, SmGateJob *job)
{
    g_autoptr(GError) error = NULL;
    QmpClient *qmp = client(g, &error);
    g_autofree char *status = qmp ? qmp_query_status(qmp, NULL, &error) : NULL;
    job->action = SM_GATE_PROCEED;
    release_capture(g, qmp);
    if (!status) {
        g_autofree char *why = g_strdup_printf("cannot read the domain (%s)", error->message);
        refuse_migrate(job, qmp, why);
        return;
    }
    g_autoptr(GPtrArray) devices = sm_inspect_devices(qmp, g->registry, &error);
    if (!devices || !sm_check_layouts(devices, &error)) {
        g_autofree char *why =
            devices ? g_strdup(error->message)
                    : g_strdup_printf("cannot read the domain's devices (%s)", error->message);
        refuse_migrate(job, qmp, why);
        return;
    }
    g_autofree char *tcg = sm_tcg_warning(qmp);
    if (tcg) /* not a refusal: no USB gate can prevent it, but the administrator should know */
        g_warning("%s", tcg);
    gboolean running = g_str_equal(status, "running");
    if (running)
        sm_release_probe_fds(qmp); /* what an earlier filter left (closed: the VM runs) */
    else
        probe_paused(g, qmp, job);
    if (!running && refuse_paused(job, qmp))
        return;
    if ((!g->capture && !(g->capture = sm_capture_new(&error))) ||
        !sm_capture_prepare(g->capture, qmp, &error)) {
        g_autofree char *why = g_strdup_printf("cannot prepare the capture (%s)", error->message);
        g_clear_pointer(&job->paused_report, sm_report_free);
        refuse_migrate(job, qmp, why);
        return;
    }
    g->devices = g_steal_pointer(&devices);
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

/* Calls the attempt off; once the source runs again ("cancelled") the capture's fd set is
 * given back, so that QEMU 7.2, which closes a removed fd only while the VM runs, keeps none. */
static void refuse(SmGate *g, SmGateJob *job, QmpClient *qmp, const char *why)
{
    g_autoptr(GError) error = NULL;
    job->action = SM_GATE_REFUSE;
    if (qmp && cancel(qmp, &error)) {
        release_capture(g, qmp);
        g_autofree char *where = where_it_stays(qmp);
        job->message = g_strdup_printf("safe-migrate: switchover held: %s; the migration was "
                                       "cancelled and %s; retry later",
                                       why, where);
    } else {
        job->message = g_strdup_printf("safe-migrate: switchover held: %s; cancelling the "
                                       "migration failed (%s)",
                                       why, error ? error->message : "no QMP client");
    }
}

/* The save into the fd prepared before `migrate`, the one command while the guest is stopped,
 * judged against the devices read then. */
static SmReport *capture_prepared(SmGate *g, QmpClient *qmp, GPtrArray *devices, GError **error)
{
    qmp_client_set_default_timeout(qmp, (guint)MAX(g->policy.probe_timeout_ms, 1));
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(GBytes) state = sm_capture_take(g->capture, qmp, error);
    gint64 t1 = g_get_monotonic_time();
    qmp_client_set_default_timeout(qmp, QMP_TIMEOUT_MS);
    if (!state)
        return NULL;
    SmReport *report =
        sm_report_from_split_capture(state, devices, g->registry, qmp_client_get_version(qmp));
    report->capture_us = t1 - t0;
    return report;
}

/* The migration waits at pre-switchover: known from QEMU's MIGRATION events (no query while
 * the guest is stopped), else asked. FALSE with the refusal done otherwise. */
static gboolean at_pre_switchover(SmGate *g, SmGateJob *job, QmpClient *qmp)
{
    g_autoptr(GError) error = NULL;
    if (job->at_pre_switchover)
        return TRUE;
    g_autofree char *st = qmp ? migration_status(qmp, &error) : NULL;
    if (!st) { /* cannot look: not "idle" (the cancel may fail too, said in the message) */
        g_autofree char *why = g_strdup_printf("cannot read the migration (%s)",
                                               error ? error->message : "no QMP client");
        refuse(g, job, qmp, why);
        return FALSE;
    }
    if (!g_str_equal(st, "pre-switchover")) { /* e.g. a restarted filter after its cancel */
        job->action = SM_GATE_REFUSE;
        job->message = g_strdup_printf("safe-migrate: switchover held: the migration is '%s', "
                                       "not waiting at pre-switchover",
                                       st);
        return FALSE;
    }
    return TRUE;
}

static void switchover(SmGate *g, SmGateJob *job)
{
    g_autoptr(GError) error = NULL;
    QmpClient *qmp = client(g, &error);
    /* One verdict per preparation: a later switchover without a `migrate` is probed whole. */
    g_autoptr(GPtrArray) devices = g_steal_pointer(&g->devices);
    if (!qmp) {
        g_autofree char *why = g_strdup_printf("cannot reach QEMU (%s)", error->message);
        refuse(g, job, NULL, why);
        return;
    }
    if (!at_pre_switchover(g, job, qmp))
        return;
    SmReport *report = job->paused_report;
    g_autoptr(SmReport) fresh = NULL;
    if (!report && job->paused_unread) {
        /* A capture now would store "running" as the run state the destination resumes
         * with (QEMU's xen-save-devices-state): the domain paused by its user would come
         * up running there. Never captured: held. */
        g_autofree char *why =
            g_strdup_printf("the paused VM's state could not be read before the migration (%s)",
                            job->paused_unread);
        refuse(g, job, qmp, why);
        return;
    }
    if (!report && !devices) {
        /* This worker did not see the migration's `migrate` (its filter restarted since): no
         * devices read, no fd prepared. The whole probe, discovery included, with the guest
         * stopped: slower, but decoded (this case alone). */
        g_warning("switchover of a migration this filter did not prepare: probing it whole");
        qmp_client_set_default_timeout(qmp, (guint)MAX(g->policy.probe_timeout_ms, 1));
        report = fresh = sm_probe_vm(qmp, g->registry, &error);
        qmp_client_set_default_timeout(qmp, QMP_TIMEOUT_MS);
    } else if (!report) {
        report = fresh = capture_prepared(g, qmp, devices, &error);
    }
    if (!report) {
        g_autofree char *why = g_strdup_printf("device state unreadable (%s)", error->message);
        refuse(g, job, qmp, why);
        return;
    }
    const SmDeviceVerdict *busy = sm_report_first_unsafe(report);
    if (!busy) {
        job->action = SM_GATE_PROCEED;
        g_info("switchover: %u device(s) idle, continuing", report->devices->len);
        return;
    }
    g_autofree char *why = unsafe_why(busy);
    refuse(g, job, qmp, why);
}

/* The migration ended without our switchover (libvirt's abort, a failure): the fd set goes
 * back to QEMU (the source runs again, so 7.2 closes it too). */
static void release(SmGate *g)
{
    g_autoptr(GError) error = NULL;
    release_capture(g, client(g, &error));
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
        else if (job->kind == SM_GATE_JOB_RELEASE)
            release(g);
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
