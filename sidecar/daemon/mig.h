/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: one migration the daemon runs (mig.c): its engine (run by the VM's worker),
 * its event history, the clients that follow it, its owner mark. Main thread, except the
 * engine's event callback. */
#pragma once

#include "control.h"
#include "vm.h"

typedef struct Mig Mig;
/* Called on the main thread once the migration ended and its own bookkeeping is done. */
typedef void (*MigEnded)(Mig *mig, gpointer data);

struct Mig {
    char *id;
    Vm *vm;
    /* Until it ran: the worker frees it right after sm_migration_run (its QMP clients live on
     * the worker's context and are closed there); `lock` guards the pointer against a
     * cancel from the main thread meanwhile. */
    SmMigration *engine;
    GMutex lock;
    GPtrArray *events;    /* json_object*: every event so far */
    GPtrArray *followers; /* Follower* (mig.c) */
    Client *owner;        /* who asked for it; NULL once gone */
    SmClientDisconnect on_disconnect;
    gboolean done;
    int exit_code;
    MigEnded ended;
    gpointer ended_data;
};

/* A migration of `vm` under policy `p` (copied): the VM's running and latest migration from
 * now on. Nothing runs until mig_run. */
Mig *mig_new(Vm *vm, const char *id, const SmPolicy *p, MigEnded ended, gpointer data);
/* Marks it as ours and hands it to the VM's worker. */
void mig_run(Mig *mig);
void mig_free(Mig *mig);
void mig_cancel(Mig *mig, int signum);

/* `client` gets every event from now on, tagged with the request id `id`. */
void mig_add_follower(Mig *mig, Client *client, json_object *id);
/* The events so far, then (while it runs) the live ones: what the owner saw. */
void mig_replay(Mig *mig, Client *client, json_object *id);
/* The client left: it follows no more; if it owned the migration, on-client-disconnect. */
void mig_client_gone(Mig *mig, Client *client);
gboolean mig_followed_by(Mig *mig, Client *client);

/* Adds the VM's "migration" (running) and "last_migration" (ended) to a `list` entry. */
void mig_describe_vm(Vm *vm, json_object *entry);
