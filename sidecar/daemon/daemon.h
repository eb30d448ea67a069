/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated internals, shared by daemon*.c: the VM table and its per-VM worker threads,
 * migrations, control clients and metrics. Not a public header (the API is the socket). */
#pragma once

#define G_LOG_DOMAIN "safe-migrated"

#include "gate.h"
#include "probe.h"
#include "qmp-commands.h"

#include <gio/gio.h>

typedef struct Daemon Daemon;
typedef struct Vm Vm;
typedef struct Mig Mig;
typedef struct Client Client;
typedef struct Listener Listener;

/* At most one message per 10 s; the rest are counted and the count logged with the next. */
typedef struct {
    gint64 last_us;
    guint suppressed;
} RateLimit;
void ratelimit_log(RateLimit *rl, GLogLevelFlags level, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* Connection caps. Control clients: the owner (root, the daemon's user) always has
 * SM_OWNER_RESERVED slots of SM_MAX_CLIENTS that members cannot take; one member uid holds at
 * most SM_MAX_CLIENTS_PER_UID. Metrics: SM_MAX_HTTP at once, each closed after
 * SM_HTTP_DEADLINE_MS whatever it sent. File descriptors: SM_FDS_BASE plus SM_FDS_PER_VM per
 * VM stay free for the VMs' own QMP connections (size LimitNOFILE= from these). */
#define SM_MAX_CLIENTS 128
#define SM_OWNER_RESERVED 16
#define SM_MAX_CLIENTS_PER_UID 32
#define SM_MAX_HTTP 16
#define SM_HTTP_DEADLINE_MS 10000
#define SM_FDS_BASE 64
#define SM_FDS_PER_VM 10
/* A control request line (and so the read buffer) is at most this long. */
#define SM_MAX_REQUEST_BYTES (1u << 20)

/* Metrics, touched on the main thread only. */
#define SM_DOWNTIME_BUCKETS 11
#define SM_PROBE_BUCKETS 11
typedef struct {
    GHashTable *migrations; /* "result\npath" -> count (GUINT_TO_POINTER) */
    guint64 attempts, holds, reconnects, client_rejects;
    guint64 downtime_counts[SM_DOWNTIME_BUCKETS + 1]; /* last: +Inf */
    double downtime_sum;
    guint64 probe_counts[SM_PROBE_BUCKETS + 1];
    double probe_sum;
} Metrics;

struct Daemon {
    GMainContext *ctx;
    GMainLoop *loop;
    char *config_dir;
    guint reconnect_max_ms;
    guint refresh_ms;
    GHashTable *vms;        /* name -> Vm* (one reference) */
    GHashTable *migrations; /* id -> Mig*, running and recent */
    GQueue finished;        /* Mig* that ended, oldest first (bounded history) */
    guint next_migration;
    GList *clients; /* Client* */
    guint n_clients, n_http;
    guint client_idle_ms; /* a control client idle this long (and following nothing) goes */
    Listener *control;
    GSource *idle_sweep;
    char *socket_path;
    guint socket_mode;
    gid_t socket_gid;
    Listener *metrics_listener;
    guint metrics_port;
    RateLimit reject_log;
    GAsyncQueue *inbox; /* Post*: work for the main thread, in order */
    Metrics metrics;
    /* One file per VM whose migration this daemon runs ("PID MIGRATION"): found at the next
     * start, it means the migration lost its owner and the VM is recovered. */
    char *state_dir;
    gboolean stopping, stop_expired;
    gint exit_code;
};

/* ---- Posting work to the main thread (FIFO across all worker threads) ------------------ */
void daemon_post(Daemon *d, GSourceFunc func, gpointer data, GDestroyNotify destroy);

/* ---- VMs (daemon-vm.c) ----------------------------------------------------------------- */

struct Vm {
    gint ref;
    Daemon *daemon;
    char *name;
    char *marker; /* state_dir/NAME: its running migration's owner mark (immutable path) */
    /* Main thread. */
    SmPolicy policy;           /* the last policy that loaded */
    gboolean has_policy;       /* FALSE: the file never loaded; no worker runs */
    char *config_error;        /* the last load's error, or NULL */
    char *config_error_public; /* the same without file content, for members */
    json_object *snapshot;     /* what the worker saw last: connection, runstate, devices, ... */
    Mig *mig;                  /* the running migration, or NULL */
    Mig *last_mig;             /* the latest migration (running or ended), or NULL */
    gboolean removed;          /* its file is gone; freed when its migration ends */
    gboolean job_busy;         /* a recover runs on the worker */
    /* The worker thread: owns the VM's status QMP connection; runs probes, recover and the
     * migrations of this VM, so a slow or hung QEMU only ever stalls its own thread. */
    GThread *thread;
    GMainContext *wctx;
    GMutex probe_lock;
    struct ProbeBatch *probe_next; /* the queued (not started) probe, under probe_lock */
    GAsyncQueue *jobs;
    gint stop;                   /* atomic */
    gboolean stopped;            /* main: the thread said it exited */
    char *source_qmp, *dest_qmp; /* worker's copies, replaced by a job */
    char *plugin_dir;
    SmRegistry *registry;
    QmpClient *qmp;
    gboolean lost, dirty;
};

Vm *vm_new(Daemon *d, const char *name);
Vm *vm_ref(Vm *vm);
void vm_unref(Vm *vm);
/* Starts the worker (policy must be set). */
void vm_start(Vm *vm);
/* Asks the worker to end; the VM leaves the table when it did. */
void vm_stop(Vm *vm);
/* A new source address for the status connection. */
void vm_set_address(Vm *vm, const char *source_qmp, const char *dest_qmp);
/* The VM as `list` shows it (new object). */
json_object *vm_to_json(Vm *vm);

/* Completion of worker jobs, called on the main thread. result: a report or recover
 * result object (owned by the callee), or NULL with error. */
typedef void (*VmJobDone)(Vm *vm, json_object *result, const GError *error, gpointer data);
/* A full device-state probe (briefly stops a running VM). */
void vm_probe(Vm *vm, VmJobDone done, gpointer data);
/* A queued probe that has not started yet is answered with a G_IO_ERROR_BUSY `why`. */
void vm_cancel_queued_probe(Vm *vm, const char *why);
void vm_recover(Vm *vm, VmJobDone done, gpointer data);
void vm_migrate(Vm *vm, Mig *mig);

/* ---- Migrations (daemon.c) ------------------------------------------------------------- */

typedef struct {
    Client *client;
    json_object *id; /* the request id, or NULL */
} Follower;

struct Mig {
    char *id;
    Vm *vm;
    /* Until it ran: the worker frees it right after sm_migration_run (its QMP clients live on
     * the worker's context and are closed there); `lock` guards the pointer against a
     * cancel from the main thread meanwhile. */
    SmMigration *engine;
    GMutex lock;
    GPtrArray *events;    /* json_object*: every event so far */
    GPtrArray *followers; /* Follower* */
    Client *owner;        /* who asked for it; NULL once gone */
    SmClientDisconnect on_disconnect;
    gboolean done;
    int exit_code;
};

/* The owner mark of a migration (daemon.c; written and removed on the main thread). */
void mig_mark(Mig *mig);
void mig_unmark(Mig *mig);

/* Thread ownership, asserted at every boundary a comment names: the main thread owns the
 * default context (acquired for the daemon's whole life), a worker its VM's context. */
/* Hand-offs between threads go through GLib (GAsyncQueue, GMutex), whose futex-based locks
 * ThreadSanitizer cannot see: these wrappers tell it (a no-op in other builds), so that the
 * TSan run of the daemon tests reports real races only. */
#if defined(__SANITIZE_THREAD__)
#define SM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SM_TSAN 1
#endif
#endif
#ifdef SM_TSAN
#include <sanitizer/tsan_interface.h>
#define TSAN_RELEASE(p) __tsan_release((void *)(p))
#define TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define TSAN_RELEASE(p) ((void)(p))
#define TSAN_ACQUIRE(p) ((void)(p))
#endif
/* The queue's own lock, as TSan should see it: every operation acquires and releases it. */
static inline void sm_queue_push(GAsyncQueue *q, gpointer item)
{
    TSAN_ACQUIRE(q);
    g_async_queue_push(q, item);
    TSAN_RELEASE(q);
}
static inline void sm_queue_push_sorted(GAsyncQueue *q, gpointer item, GCompareDataFunc func)
{
    TSAN_ACQUIRE(q);
    g_async_queue_push_sorted(q, item, func, NULL);
    TSAN_RELEASE(q);
}
static inline gpointer sm_queue_try_pop(GAsyncQueue *q)
{
    TSAN_ACQUIRE(q);
    gpointer item = g_async_queue_try_pop(q);
    TSAN_RELEASE(q);
    return item;
}
static inline void sm_lock(GMutex *m)
{
    g_mutex_lock(m);
    TSAN_ACQUIRE(m);
}
static inline void sm_unlock(GMutex *m)
{
    TSAN_RELEASE(m);
    g_mutex_unlock(m);
}

#define ASSERT_MAIN(d) g_assert(g_main_context_is_owner((d)->ctx))
#define ASSERT_WORKER(vm) g_assert(g_main_context_is_owner((vm)->wctx))

/* Called by the worker thread (engine callback) and the main thread respectively. */
void mig_event_from_worker(json_object *event, gpointer mig);
void mig_finished_from_worker(Mig *mig, int exit_code);
void mig_cancel(Mig *mig, int signum);

/* ---- Listening (daemon-listen.c) ------------------------------------------------------ */

typedef void (*ListenerAccept)(Daemon *d, GSocket *connection, gpointer data);
/* Watches a listening socket on the main context; `func` gets each accepted connection (a
 * borrowed reference). */
Listener *listener_new(Daemon *d, GSocket *socket, const char *what, ListenerAccept func,
                       gpointer data);
void listener_free(Listener *l);
GSocket *listener_socket(Listener *l);
void daemon_raise_fd_limit(void);
gboolean daemon_fd_budget_allows(Daemon *d);

/* ---- Control clients (daemon-control.c) ------------------------------------------------ */

gboolean control_listen(Daemon *d, GError **error);
void control_close(Daemon *d);
void control_drop_clients(Daemon *d);
Client *client_ref(Client *client);
void client_unref(Client *client);
gboolean client_is_open(Client *client);
gboolean client_is_privileged(Client *client);
/* Queues one JSON line; `obj` is consumed. */
void client_send(Client *client, json_object *obj);
void client_reply_error(Client *client, json_object *id, const char *code, int exit_code,
                        const char *fmt, ...) G_GNUC_PRINTF(5, 6);
/* Dispatch of one request (daemon.c). */
void daemon_handle_request(Daemon *d, Client *client, json_object *request);
void daemon_client_gone(Daemon *d, Client *client);
/* Whether the client follows a running migration (then it is never idle). */
gboolean daemon_client_follows(Daemon *d, Client *client);

/* ---- The privilege model (daemon-privilege.c) ----------------------------------------- */

/* Applies a migrate request's "options" to `p` (a copy of the VM's policy `base`). owner:
 * root or the daemon's user. A refusal is G_IO_ERROR_PERMISSION_DENIED (the same text for
 * every key a member may not set); a bad value an SM_POLICY_ERROR. */
gboolean privilege_apply_options(gboolean owner, const SmPolicy *base, SmPolicy *p,
                                 json_object *options, GError **error);
/* Whether the peer of the unix socket `fd` is in group `gid` (its primary group, or a
 * supplementary group as recorded at connect time). */
gboolean privilege_peer_in_group(int fd, pid_t pid, gid_t primary, gid_t gid);

/* ---- Metrics (daemon-metrics.c) -------------------------------------------------------- */

void metrics_init(Metrics *m);
void metrics_clear(Metrics *m);
void metrics_observe_event(Metrics *m, json_object *event);
void metrics_observe_probe(Metrics *m, gint64 probe_us);
char *metrics_render(Daemon *d);
gboolean metrics_listen(Daemon *d, const char *host_port, GError **error);
void metrics_close(Daemon *d);

/* ---- Helpers --------------------------------------------------------------------------- */

const char *json_str(json_object *obj, const char *key);
void json_unref(gpointer obj);         /* json_object_put as a GDestroyNotify */
json_object *json_strv(const char *s); /* NULL-safe json string */
void sd_notify_send(const char *state);
