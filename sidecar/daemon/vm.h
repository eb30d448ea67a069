/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: one VM and its worker thread (vm.c). The worker owns the VM's status QMP
 * connection and runs the VM's probes, recover and migrations on its own GMainContext, so a
 * slow or hung QEMU only ever stalls its own thread; results reach the main thread through
 * the inbox. It knows nothing of clients or of the daemon's tables. */
#pragma once

#include "gate.h"
#include "metrics.h"
#include "post.h"
#include "probe.h"
#include "qmp-commands.h"
#include "util.h"

typedef struct Vm Vm;
struct Mig; /* mig.h: the VM only holds pointers to its migrations, never looks inside */

/* What every VM's worker shares with the daemon (owned by it, outliving the VMs). */
typedef struct {
    Inbox *inbox;
    Metrics *metrics; /* main thread only */
    const char *state_dir;
    guint reconnect_max_ms;
    guint refresh_ms;
} VmHost;

struct Vm {
    gint ref;
    const VmHost *host;
    char *name;
    char *marker; /* state_dir/NAME: its running migration's owner mark (immutable path) */
    /* Main thread. */
    SmPolicy policy;           /* the last policy that loaded */
    gboolean has_policy;       /* FALSE: the file never loaded; no worker runs */
    char *config_error;        /* the last load's error, or NULL */
    char *config_error_public; /* the same without file content, for members */
    json_object *snapshot;     /* what the worker saw last: connection, runstate, devices, ... */
    struct Mig *mig;           /* the running migration, or NULL (kept by mig.c) */
    struct Mig *last_mig;      /* the latest migration (running or ended), or NULL */
    gboolean removed;          /* its file is gone; freed when its migration ends */
    gboolean job_busy;         /* a recover runs on the worker */
    /* The worker thread: owns the VM's status QMP connection; runs probes, recover and the
     * migrations of this VM. */
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

#define ASSERT_WORKER(vm) g_assert(g_main_context_is_owner((vm)->wctx))

/* Main thread, all of them, but vm_ref and vm_unref (any thread; the last unref is the main
 * thread's, after the worker said it exited). */
Vm *vm_new(const VmHost *host, const char *name);
Vm *vm_ref(Vm *vm);
void vm_unref(Vm *vm);
/* Starts the worker (policy must be set). */
void vm_start(Vm *vm);
/* Asks the worker to end. */
void vm_stop(Vm *vm);
/* Waits for the worker to end (after vm_stop). */
void vm_join(Vm *vm);
/* A new source address for the status connection. */
void vm_set_address(Vm *vm, const char *source_qmp, const char *dest_qmp);
/* The VM as `list` shows it, without its migrations (new object). */
json_object *vm_to_json(Vm *vm);

/* Completion of worker jobs, called on the main thread. result: a report or recover
 * result object (owned by the callee), or NULL with error. */
typedef void (*VmJobDone)(Vm *vm, json_object *result, const GError *error, gpointer data);
/* A full device-state probe (briefly stops a running VM). */
void vm_probe(Vm *vm, VmJobDone done, gpointer data);
/* A queued probe that has not started yet is answered with a G_IO_ERROR_BUSY `why`. */
void vm_cancel_queued_probe(Vm *vm, const char *why);
void vm_recover(Vm *vm, VmJobDone done, gpointer data);

/* A migration run by the worker: `*engine` is taken (set to NULL under `lock`) and freed on
 * the worker once it ran, so that a cancel from the main thread holding `lock` never sees a
 * freed engine; `done(data, exit code)` then runs on the main thread. If the worker ends
 * before running it, `done` gets SM_EXIT_UNREACHABLE. */
typedef void (*VmMigrationDone)(gpointer data, int exit_code);
void vm_migrate(Vm *vm, const char *id, SmMigration **engine, GMutex *lock, VmMigrationDone done,
                gpointer data);
