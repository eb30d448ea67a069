/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: one worker thread per VM. It holds the VM's status QMP connection
 * (reconnecting with backoff), keeps a cheap snapshot of it (run state, devices and their fix)
 * for `list`, and runs the VM's probes, recover and migrations, each on the worker's own
 * GMainContext: a slow or hung QEMU stalls only its own thread, never the main loop. */
#include "vm.h"

#include <stdlib.h>
#include <unistd.h>

#define STATUS_CONNECT_TIMEOUT_MS 5000
#define STATUS_COMMAND_TIMEOUT_MS 10000
#define RECONNECT_FIRST_MS 250

typedef enum { JOB_PROBE, JOB_RECOVER, JOB_MIGRATE, JOB_ADDRESS } JobKind;

/* Probes of one VM are coalesced: every request that arrives while a probe is queued (not
 * yet started) joins it and gets its result; a request during a running probe makes the
 * next one (a verdict is never older than its request). A migration cancels the queued one. */
typedef struct {
    VmJobDone done;
    gpointer data;
} Waiter;

typedef struct ProbeBatch {
    GArray *waiters; /* Waiter; main thread, or under vm->probe_lock until started */
    gboolean started, cancelled;
} ProbeBatch;

typedef struct {
    JobKind kind;
    guint64 seq;
    VmJobDone done;
    gpointer data;
    /* JOB_MIGRATE */
    char *mig_id;
    SmMigration **engine;
    GMutex *engine_lock;
    VmMigrationDone mig_done;
    char *address, *dest_address;
    ProbeBatch *batch;
} Job;

static void job_free(Job *job)
{
    g_free(job->mig_id);
    g_free(job->address);
    g_free(job->dest_address);
    g_free(job);
}

static void batch_free(ProbeBatch *b)
{
    g_array_unref(b->waiters);
    g_free(b);
}

#define vm_log(vm, level, ...)                                                                     \
    g_log_structured(G_LOG_DOMAIN, level, "SM_VM", (vm)->name, "MESSAGE", __VA_ARGS__)

/* ---- Main-thread side ------------------------------------------------------------------ */

Vm *vm_new(const VmHost *host, const char *name)
{
    ASSERT_MAIN();
    Vm *vm = g_new0(Vm, 1);
    vm->ref = 1;
    vm->host = host;
    vm->name = g_strdup(name);
    vm->marker = g_build_filename(host->state_dir, name, NULL);
    g_mutex_init(&vm->probe_lock);
    sm_policy_init(&vm->policy);
    vm->jobs = g_async_queue_new_full((GDestroyNotify)job_free);
    vm->snapshot = json_object_new_object();
    json_object_object_add(vm->snapshot, "connection", json_object_new_string("connecting"));
    return vm;
}

Vm *vm_ref(Vm *vm)
{
    g_atomic_int_inc(&vm->ref);
    return vm;
}

void vm_unref(Vm *vm)
{
    if (!vm || !g_atomic_int_dec_and_test(&vm->ref))
        return;
    /* The last reference is dropped on the main thread, after the worker said it exited. */
    ASSERT_MAIN();
    if (vm->thread)
        g_thread_join(vm->thread);
    sm_policy_clear(&vm->policy);
    g_free(vm->config_error);
    g_free(vm->config_error_public);
    json_object_put(vm->snapshot);
    g_async_queue_unref(vm->jobs);
    if (vm->wctx)
        g_main_context_unref(vm->wctx);
    g_free(vm->source_qmp);
    g_free(vm->dest_qmp);
    g_free(vm->plugin_dir);
    g_free(vm->name);
    g_free(vm->marker);
    g_mutex_clear(&vm->probe_lock);
    g_free(vm);
}

/* Migrations, recovers and address changes go before probes: a migration never waits
 * behind a queue of probes. Otherwise first come, first served. */
static gint job_order(gconstpointer a, gconstpointer b, gpointer data)
{
    const Job *x = a, *y = b;
    (void)data;
    int px = x->kind == JOB_PROBE, py = y->kind == JOB_PROBE;
    if (px != py)
        return px - py;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void push_job(Vm *vm, Job *job)
{
    static guint64 seq; /* main thread only */
    ASSERT_MAIN();
    job->seq = ++seq;
    sm_queue_push_sorted(vm->jobs, job, job_order);
    g_main_context_wakeup(vm->wctx);
}

void vm_stop(Vm *vm)
{
    ASSERT_MAIN();
    if (!vm->thread || g_atomic_int_get(&vm->stop))
        return;
    g_atomic_int_set(&vm->stop, 1);
    g_main_context_wakeup(vm->wctx);
}

void vm_join(Vm *vm)
{
    ASSERT_MAIN();
    if (vm->thread) {
        g_thread_join(vm->thread);
        vm->thread = NULL;
    }
}

void vm_set_address(Vm *vm, const char *source_qmp, const char *dest_qmp)
{
    Job *job = g_new0(Job, 1);
    job->kind = JOB_ADDRESS;
    job->address = g_strdup(source_qmp);
    job->dest_address = g_strdup(dest_qmp);
    push_job(vm, job);
}

static void push_done_job(Vm *vm, JobKind kind, VmJobDone done, gpointer data)
{
    Job *job = g_new0(Job, 1);
    job->kind = kind;
    job->done = done;
    job->data = data;
    push_job(vm, job);
}

void vm_probe(Vm *vm, VmJobDone done, gpointer data)
{
    ASSERT_MAIN();
    Waiter w = {done, data};
    sm_lock(&vm->probe_lock);
    ProbeBatch *b = vm->probe_next;
    if (b && !b->started) {
        g_array_append_val(b->waiters, w);
        sm_unlock(&vm->probe_lock);
        return;
    }
    b = g_new0(ProbeBatch, 1);
    b->waiters = g_array_new(FALSE, FALSE, sizeof(Waiter));
    g_array_append_val(b->waiters, w);
    vm->probe_next = b;
    sm_unlock(&vm->probe_lock);
    Job *job = g_new0(Job, 1);
    job->kind = JOB_PROBE;
    job->batch = b;
    push_job(vm, job);
}

void vm_cancel_queued_probe(Vm *vm, const char *why)
{
    ASSERT_MAIN();
    sm_lock(&vm->probe_lock);
    ProbeBatch *b = vm->probe_next;
    g_autoptr(GArray) waiters = NULL;
    if (b && !b->started) {
        b->cancelled = TRUE; /* the worker frees it when it pops the job */
        waiters = b->waiters;
        b->waiters = g_array_new(FALSE, FALSE, sizeof(Waiter));
        vm->probe_next = NULL;
    }
    sm_unlock(&vm->probe_lock);
    if (!waiters)
        return;
    g_autoptr(GError) error = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_BUSY, why);
    for (guint i = 0; i < waiters->len; i++) {
        Waiter *w = &g_array_index(waiters, Waiter, i);
        w->done(vm, NULL, error, w->data);
    }
}

void vm_recover(Vm *vm, VmJobDone done, gpointer data)
{
    push_done_job(vm, JOB_RECOVER, done, data);
}

void vm_migrate(Vm *vm, const char *id, SmMigration **engine, GMutex *lock, VmMigrationDone done,
                gpointer data)
{
    Job *job = g_new0(Job, 1);
    job->kind = JOB_MIGRATE;
    job->mig_id = g_strdup(id);
    job->engine = engine;
    job->engine_lock = lock;
    job->mig_done = done;
    job->data = data;
    push_job(vm, job);
}

json_object *vm_to_json(Vm *vm)
{
    ASSERT_MAIN();
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_strv(vm->name));
    json_object_object_add(o, "file", json_strv(vm->policy.file));
    json_object_object_add(o, "source_qmp", json_strv(vm->policy.source_qmp));
    json_object_object_add(o, "dest_qmp", json_strv(vm->policy.dest_qmp));
    json_object_object_foreach(vm->snapshot, key, value)
    {
        json_object_object_add(o, key, json_object_get(value));
    }
    if (!vm->has_policy)
        json_object_object_add(o, "connection", json_object_new_string("unconfigured"));
    else if (vm->mig)
        json_object_object_add(o, "connection", json_object_new_string("migrating"));
    else if (vm->job_busy)
        json_object_object_add(o, "connection", json_object_new_string("recovering"));
    json_object_object_add(o, "config_error", json_strv(vm->config_error));
    return o;
}

/* ---- Worker -> main -------------------------------------------------------------------- */

typedef struct {
    Vm *vm;
    json_object *obj;
    GError *error;
    VmJobDone done;
    gpointer data;
    ProbeBatch *batch; /* a probe's: every waiter gets the result */
} Result;

static void result_free(gpointer p)
{
    Result *r = p;
    if (r->batch)
        batch_free(r->batch);
    vm_unref(r->vm);
    if (r->obj)
        json_object_put(r->obj);
    g_clear_error(&r->error);
    g_free(r);
}

static gboolean apply_snapshot(gpointer p)
{
    Result *r = p;
    ASSERT_MAIN();
    json_object_put(r->vm->snapshot);
    r->vm->snapshot = g_steal_pointer(&r->obj);
    return G_SOURCE_REMOVE;
}

static void publish(Vm *vm, json_object *snapshot)
{
    ASSERT_WORKER(vm);
    Result *r = g_new0(Result, 1);
    r->vm = vm_ref(vm);
    r->obj = snapshot;
    inbox_post(vm->host->inbox, apply_snapshot, r, result_free);
}

static gboolean deliver_result(gpointer p)
{
    Result *r = p;
    ASSERT_MAIN();
    if (!r->batch) {
        r->done(r->vm, g_steal_pointer(&r->obj), r->error, r->data);
        return G_SOURCE_REMOVE;
    }
    /* One capture, however many asked: counted once. */
    json_object *v;
    if (r->obj && json_object_object_get_ex(r->obj, "capture_us", &v))
        metrics_observe_probe(r->vm->host->metrics, json_object_get_int64(v));
    for (guint i = 0; i < r->batch->waiters->len; i++) {
        Waiter *w = &g_array_index(r->batch->waiters, Waiter, i);
        json_object *copy = NULL;
        if (r->obj)
            json_object_deep_copy(r->obj, &copy, NULL);
        w->done(r->vm, copy, r->error, w->data);
    }
    return G_SOURCE_REMOVE;
}

static void finish_job(Vm *vm, Job *job, json_object *obj, GError *error)
{
    ASSERT_WORKER(vm);
    Result *r = g_new0(Result, 1);
    r->vm = vm_ref(vm);
    r->obj = obj;
    r->error = error;
    r->done = job->done;
    r->data = job->data;
    r->batch = job->batch;
    inbox_post(vm->host->inbox, deliver_result, r, result_free);
}

typedef struct {
    VmMigrationDone done;
    gpointer data;
    int code;
} MigrationEnd;

static gboolean deliver_migration_end(gpointer p)
{
    MigrationEnd *e = p;
    ASSERT_MAIN();
    e->done(e->data, e->code);
    return G_SOURCE_REMOVE;
}

static void finish_migration(Vm *vm, Job *job, int code)
{
    ASSERT_WORKER(vm);
    MigrationEnd *e = g_new0(MigrationEnd, 1);
    e->done = job->mig_done;
    e->data = job->data;
    e->code = code;
    inbox_post(vm->host->inbox, deliver_migration_end, e, g_free);
}

static gboolean count_reconnect(gpointer p)
{
    ASSERT_MAIN();
    ((Metrics *)p)->reconnects++;
    return G_SOURCE_REMOVE;
}

static gboolean thread_exited(gpointer p)
{
    Vm *vm = p;
    ASSERT_MAIN();
    vm->stopped = TRUE;
    return G_SOURCE_REMOVE;
}

/* ---- The status connection (worker thread) --------------------------------------------- */

static void on_lost(QmpClient *client, const GError *reason, gpointer data)
{
    Vm *vm = data;
    ASSERT_WORKER(vm);
    (void)client;
    vm_log(vm, G_LOG_LEVEL_MESSAGE, "%s: QMP connection lost: %s", vm->name, reason->message);
    vm->lost = TRUE;
}

static void on_qmp_event(QmpClient *client, const char *name, json_object *data, gint64 ts,
                         gpointer user_data)
{
    static const char *const interesting[] = {"STOP",      "RESUME",         "SHUTDOWN",  "RESET",
                                              "MIGRATION", "DEVICE_DELETED", "POWERDOWN", NULL};
    Vm *vm = user_data;
    (void)client, (void)data, (void)ts;
    ASSERT_WORKER(vm);
    if (g_strv_contains(interesting, name))
        vm->dirty = TRUE;
}

static void drop_status(Vm *vm)
{
    ASSERT_WORKER(vm);
    if (!vm->qmp)
        return;
    qmp_client_set_disconnect_handler(vm->qmp, NULL, NULL, NULL);
    qmp_client_close(vm->qmp);
    g_clear_pointer(&vm->qmp, qmp_client_unref);
    vm->lost = FALSE;
}

static json_object *disconnected_snapshot(const char *why)
{
    json_object *s = json_object_new_object();
    json_object_object_add(s, "connection", json_object_new_string("disconnected"));
    json_object_object_add(s, "error", json_strv(why));
    return s;
}

static gboolean status_connect(Vm *vm, GError **error)
{
    ASSERT_WORKER(vm);
    vm->qmp = qmp_client_connect(vm->source_qmp, STATUS_CONNECT_TIMEOUT_MS, error);
    if (!vm->qmp)
        return FALSE;
    qmp_client_set_default_timeout(vm->qmp, STATUS_COMMAND_TIMEOUT_MS);
    qmp_client_set_disconnect_handler(vm->qmp, on_lost, vm, NULL);
    qmp_client_subscribe(vm->qmp, NULL, on_qmp_event, vm, NULL);
    vm->lost = FALSE;
    vm->dirty = TRUE;
    return TRUE;
}

/* The cheap view: run state, machine, devices and their fix; no device-state capture (that
 * would stop the VM for a moment). */
static void refresh(Vm *vm)
{
    ASSERT_WORKER(vm);
    g_autoptr(GError) error = NULL;
    g_autofree char *status = qmp_query_status(vm->qmp, NULL, &error);
    g_autofree char *machine = status ? qmp_query_machine_type(vm->qmp, &error) : NULL;
    g_autoptr(GPtrArray) devices =
        machine ? sm_inspect_devices(vm->qmp, vm->registry, &error) : NULL;
    json_object *list = json_object_new_array();
    for (guint i = 0; devices && i < devices->len; i++) {
        SmDevice *dev = g_ptr_array_index(devices, i);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "id", json_strv(dev->id));
        json_object_object_add(o, "qom_path", json_strv(dev->qom_path));
        json_object_object_add(o, "type", json_strv(dev->type));
        json_object_object_add(o, "fix", json_strv(sm_fix_to_string(sm_device_get_fix(dev))));
        json_object_array_add(list, o);
    }
    /* Events also queue for synchronous waiters nobody runs here: keep that queue empty. */
    qmp_client_clear_events(vm->qmp);
    if (vm->lost || g_error_matches(error, QMP_ERROR, QMP_ERROR_DISCONNECTED) ||
        g_error_matches(error, SM_PROBE_ERROR, SM_PROBE_ERROR_UNREACHABLE)) {
        json_object_put(list);
        vm->lost = TRUE;
        return;
    }
    json_object *s = json_object_new_object();
    json_object_object_add(s, "connection", json_object_new_string("connected"));
    json_object_object_add(s, "qemu_version", json_strv(qmp_client_get_version(vm->qmp)));
    json_object_object_add(s, "runstate", json_strv(status));
    json_object_object_add(s, "machine", json_strv(machine));
    json_object_object_add(s, "devices", list);
    json_object_object_add(s, "error", error ? json_strv(error->message) : NULL);
    json_object_object_add(s, "updated_us", json_object_new_int64(g_get_real_time()));
    publish(vm, s);
}

/* A VM found mid-migration (pre-switchover above all: paused, waiting for a gate) whose
 * owner is gone is recovered as `safe-migrate recover` would: the migration is cancelled
 * and the source checked to run. "Owner gone" is what the owner mark says: a mark left by
 * another daemon process (this daemon crashed or was killed while the migration ran). A
 * migration without our mark belongs to someone else (libvirt, an operator) and is left
 * alone. Runs at every (re)connect of the status connection. */
static void check_stranded(Vm *vm)
{
    ASSERT_WORKER(vm);
    g_autofree char *mark = NULL;
    if (!g_file_get_contents(vm->marker, &mark, NULL, NULL))
        return;
    if (atoi(mark) == (int)getpid())
        return; /* ours: its job is queued and owns the VM */
    g_autoptr(GError) error = NULL;
    g_autofree char *status = NULL;
    g_autoptr(json_object) info = qmp_query_migrate(vm->qmp, &status, &error);
    if (!info)
        return; /* the mark stays: the next connect looks again */
    static const char *const ended[] = {"none", "completed", "cancelled", "failed", NULL};
    g_strchomp(mark);
    if (!g_strv_contains(ended, status)) {
        vm_log(vm, G_LOG_LEVEL_WARNING,
               "%s: migration '%s' whose owner is gone (daemon pid and migration %s): "
               "recovering",
               vm->name, status, mark);
        drop_status(vm);
        g_autofree char *summary = NULL;
        g_autoptr(GError) e = NULL;
        int code = sm_recover(vm->source_qmp, vm->dest_qmp, &summary, &e);
        vm_log(vm, code == SM_EXIT_OK ? G_LOG_LEVEL_MESSAGE : G_LOG_LEVEL_WARNING,
               "%s: recovered (exit code %d): %s", vm->name, code,
               summary ? summary
               : e     ? e->message
                       : "");
    }
    unlink(vm->marker);
}

/* ---- Jobs (worker thread) -------------------------------------------------------------- */

/* Takes the batch off the main thread's hands; FALSE if a migration cancelled it. */
static gboolean start_batch(Vm *vm, Job *job)
{
    ASSERT_WORKER(vm);
    sm_lock(&vm->probe_lock);
    job->batch->started = TRUE;
    if (vm->probe_next == job->batch)
        vm->probe_next = NULL;
    gboolean cancelled = job->batch->cancelled;
    sm_unlock(&vm->probe_lock);
    if (cancelled)
        g_clear_pointer(&job->batch, batch_free);
    return !cancelled;
}

static void run_probe(Vm *vm, Job *job)
{
    ASSERT_WORKER(vm);
    if (!start_batch(vm, job))
        return;
    GError *error = NULL;
    if (!vm->qmp && !status_connect(vm, &error)) {
        finish_job(vm, job, NULL, error);
        return;
    }
    /* Someone else's migration at pre-switchover: a capture would rewrite its run state. */
    SmReport *report = sm_probe_switchover_free(vm->qmp, &error)
                           ? sm_probe_vm(vm->qmp, vm->registry, &error)
                           : NULL;
    qmp_client_clear_events(vm->qmp);
    json_object *obj = report ? sm_report_to_json(report) : NULL;
    /* The report is let go of here, before the JSON crosses to the main thread: a probe's
     * detail printer may share json-c objects with it, and json-c's reference counts are not
     * atomic (ThreadSanitizer caught a late put when verdicts kept their details as JSON). */
    g_clear_pointer(&report, sm_report_free);
    finish_job(vm, job, obj, error);
}

static void run_recover(Vm *vm, Job *job)
{
    ASSERT_WORKER(vm);
    /* QEMU serves one client per monitor: the status connection makes room. */
    drop_status(vm);
    GError *error = NULL;
    g_autofree char *summary = NULL;
    int code = sm_recover(vm->source_qmp, vm->dest_qmp, &summary, &error);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "exit_code", json_object_new_int(code));
    json_object_object_add(o, "summary", json_strv(summary));
    json_object_object_add(o, "error", error ? json_strv(error->message) : NULL);
    g_clear_error(&error);
    finish_job(vm, job, o, NULL);
}

static void run_migration(Vm *vm, Job *job)
{
    ASSERT_WORKER(vm);
    drop_status(vm);
    publish(vm, disconnected_snapshot("the monitor is lent to a migration"));
    vm_log(vm, G_LOG_LEVEL_MESSAGE, "%s: migration %s starts", vm->name, job->mig_id);
    int code = sm_migration_run(*job->engine);
    /* The engine's QMP clients have their sources on this context: they are closed here,
     * on the thread that owns them, never by the main thread while this one iterates. */
    sm_lock(job->engine_lock);
    SmMigration *engine = g_steal_pointer(job->engine);
    sm_unlock(job->engine_lock);
    sm_migration_free(engine);
    finish_migration(vm, job, code);
}

static gboolean just_wake(gpointer data)
{
    (void)data;
    return G_SOURCE_REMOVE;
}

/* The worker's own schedule of its status connection. */
typedef struct {
    gint64 next_connect, next_refresh;
    guint backoff_ms;
    gboolean ever_connected;
    char *last_error; /* logged once until it changes */
} Schedule;

static void run_job(Vm *vm, Job *job, Schedule *s)
{
    ASSERT_WORKER(vm);
    switch (job->kind) {
    case JOB_PROBE:
        run_probe(vm, job);
        return;
    case JOB_RECOVER:
        run_recover(vm, job);
        break;
    case JOB_MIGRATE:
        run_migration(vm, job);
        break;
    case JOB_ADDRESS:
        drop_status(vm);
        g_free(vm->source_qmp);
        vm->source_qmp = g_strdup(job->address);
        g_free(vm->dest_qmp);
        vm->dest_qmp = g_strdup(job->dest_address);
        break;
    }
    /* The monitor was lent or moved: reconnect now. */
    s->next_connect = 0;
    s->backoff_ms = 0;
}

static void try_connect(Vm *vm, Schedule *s)
{
    g_autoptr(GError) error = NULL;
    if (status_connect(vm, &error)) {
        vm_log(vm, G_LOG_LEVEL_MESSAGE, "%s: connected to %s (QEMU %s)", vm->name, vm->source_qmp,
               qmp_client_get_version(vm->qmp));
        if (s->ever_connected)
            inbox_post(vm->host->inbox, count_reconnect, vm->host->metrics, NULL);
        s->ever_connected = TRUE;
        s->backoff_ms = 0;
        g_clear_pointer(&s->last_error, g_free);
        check_stranded(vm);
        return;
    }
    if (g_strcmp0(s->last_error, error->message) != 0) {
        vm_log(vm, G_LOG_LEVEL_WARNING, "%s: cannot reach %s: %s (retrying)", vm->name,
               vm->source_qmp, error->message);
        g_free(s->last_error);
        s->last_error = g_strdup(error->message);
    }
    publish(vm, disconnected_snapshot(error->message));
    s->backoff_ms =
        s->backoff_ms ? MIN(s->backoff_ms * 2, vm->host->reconnect_max_ms) : RECONNECT_FIRST_MS;
    s->next_connect = g_get_monotonic_time() + (gint64)s->backoff_ms * 1000;
}

/* Reconnects when due, refreshes the snapshot when due or when QEMU said something changed. */
static void keep_status(Vm *vm, Schedule *s)
{
    ASSERT_WORKER(vm);
    gint64 now = g_get_monotonic_time();
    if (vm->qmp && vm->lost) {
        drop_status(vm);
        publish(vm, disconnected_snapshot("QMP connection lost"));
        s->backoff_ms = RECONNECT_FIRST_MS;
        s->next_connect = now + s->backoff_ms * 1000;
    }
    if (!vm->qmp && now >= s->next_connect)
        try_connect(vm, s);
    if (vm->qmp && !vm->lost && (vm->dirty || now >= s->next_refresh)) {
        vm->dirty = FALSE;
        refresh(vm);
        s->next_refresh = g_get_monotonic_time() + (gint64)vm->host->refresh_ms * 1000;
    }
}

/* Blocks until a job, a stop, a QMP event or the next reconnect or refresh is due. */
static void wait_for_work(Vm *vm, const Schedule *s)
{
    gint64 wake_at = vm->qmp ? s->next_refresh : s->next_connect;
    GSource *timer = NULL;
    if (wake_at != G_MAXINT64) {
        gint64 ms = MAX((wake_at - g_get_monotonic_time()) / 1000 + 1, 0);
        timer = g_timeout_source_new((guint)MIN(ms, G_MAXINT));
        g_source_set_callback(timer, just_wake, NULL, NULL);
        g_source_attach(timer, vm->wctx);
    }
    g_main_context_iteration(vm->wctx, TRUE);
    if (timer) {
        g_source_destroy(timer);
        g_source_unref(timer);
    }
}

/* Jobs nobody will run: their completions still reach the main thread. */
static void abandon_jobs(Vm *vm)
{
    ASSERT_WORKER(vm);
    Job *job;
    while ((job = sm_queue_try_pop(vm->jobs))) {
        /* A cancelled probe's waiters were answered already. */
        gboolean cancelled = job->kind == JOB_PROBE && !start_batch(vm, job);
        if (!cancelled && (job->done || job->batch))
            finish_job(vm, job, NULL,
                       g_error_new(G_IO_ERROR, G_IO_ERROR_CANCELLED, "the VM was removed"));
        else if (job->kind == JOB_MIGRATE)
            finish_migration(vm, job, SM_EXIT_UNREACHABLE);
        job_free(job);
    }
}

static gpointer vm_thread(gpointer data)
{
    Vm *vm = data;
    g_main_context_push_thread_default(vm->wctx);
    ASSERT_WORKER(vm);
    Schedule s = {.next_connect = 0, .next_refresh = G_MAXINT64};
    while (!g_atomic_int_get(&vm->stop)) {
        Job *job;
        while (!g_atomic_int_get(&vm->stop) && (job = sm_queue_try_pop(vm->jobs))) {
            run_job(vm, job, &s);
            job_free(job);
        }
        if (g_atomic_int_get(&vm->stop))
            break;
        keep_status(vm, &s);
        /* Nested iterations (the synchronous QMP calls above) may have swallowed the wakeup
         * of a stop or a job: look again before blocking. A later one wakes the poll. */
        if (vm->lost || vm->dirty || g_async_queue_length(vm->jobs) > 0 ||
            g_atomic_int_get(&vm->stop))
            continue;
        wait_for_work(vm, &s);
    }
    g_free(s.last_error);
    drop_status(vm);
    g_clear_pointer(&vm->registry, sm_registry_free);
    abandon_jobs(vm);
    g_main_context_pop_thread_default(vm->wctx);
    inbox_post(vm->host->inbox, thread_exited, vm, (GDestroyNotify)vm_unref);
    return NULL;
}

void vm_start(Vm *vm)
{
    ASSERT_MAIN();
    g_assert(!vm->thread && vm->policy.source_qmp);
    vm->wctx = g_main_context_new();
    vm->source_qmp = g_strdup(vm->policy.source_qmp);
    vm->dest_qmp = g_strdup(vm->policy.dest_qmp);
    vm->plugin_dir = g_strdup(vm->policy.plugin_dir);
    vm->registry = sm_registry_new();
    g_autoptr(GError) error = NULL;
    if (vm->plugin_dir && !sm_registry_load_dir(vm->registry, vm->plugin_dir, &error))
        vm_log(vm, G_LOG_LEVEL_WARNING, "%s: plugins: %s", vm->name, error->message);
    g_autofree char *thread_name = g_strdup_printf("vm:%.12s", vm->name);
    vm->thread = g_thread_new(thread_name, vm_thread, vm_ref(vm));
}
