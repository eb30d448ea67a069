/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated's top layer: the daemon's state (its VM and migration tables), the control
 * requests (ops.c), the reading of vms.d (reload.c), and main() with options, logging and
 * signals (daemon.c). Components below it (mig, vm, control, metrics, listen, privilege,
 * post, util) never call up into it: they get callbacks. Main thread only. */
#pragma once

#include "control.h"
#include "metrics.h"
#include "mig.h"
#include "post.h"
#include "vm.h"

typedef struct {
    GMainLoop *loop;
    char *config_dir;
    char *socket_path;
    VmHost host;            /* what the VMs' workers share: inbox, metrics, state_dir, timings */
    GHashTable *vms;        /* name -> Vm* (one reference) */
    GHashTable *migrations; /* id -> Mig*, running and recent */
    GQueue finished;        /* Mig* that ended, oldest first (bounded history) */
    guint next_migration;
    Control *control;
    ControlConfig control_config;
    MetricsServer *metrics_server;
    Metrics metrics;
    FdUse fds;
    RateLimit reject_log;
    /* One file per VM whose migration this daemon runs ("PID MIGRATION"): found at the next
     * start, it means the migration lost its owner and the VM is recovered. */
    char *state_dir;
    gboolean stopping, stop_expired;
} Daemon;

/* ---- Requests (ops.c) -------------------------------------------------------------------- */

/* The control socket's handlers; their data is the Daemon. */
extern const ControlHandlers daemon_control_handlers;
guint daemon_active_migrations(Daemon *d);
/* The metrics text, gauges from the daemon's state (a MetricsRender; data: the Daemon). */
char *daemon_render_metrics(gpointer d);

/* ---- vms.d (reload.c) -------------------------------------------------------------------- */

/* (Re)reads vms.d; the summary (new object) as `client` may see it (NULL: the owner). */
json_object *daemon_reload(Daemon *d, Client *client);
/* The VM leaves the table (after its migration, if one runs). */
void daemon_remove_vm(Daemon *d, Vm *vm);
