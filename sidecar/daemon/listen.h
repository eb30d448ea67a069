/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: accepting connections without being starved by them (listen.c), and the fd
 * budget that keeps file descriptors free for the VMs' own QMP connections. */
#pragma once

#include "util.h"

#include <gio/gio.h>

/* File descriptors: SM_FDS_BASE plus SM_FDS_PER_VM per VM stay free for the VMs' own QMP
 * connections (size LimitNOFILE= from these). */
#define SM_FDS_BASE 64
#define SM_FDS_PER_VM 10

/* What holds descriptors now; main thread (each counter kept by its owner). */
typedef struct {
    guint vms;     /* the daemon's VM table */
    guint clients; /* control clients (control.c) */
    guint http;    /* metrics connections (metrics.c) */
} FdUse;

/* Raises the soft fd limit to the hard one. */
void fd_raise_limit(void);
/* Whether one more connection fits next to what the VMs may need. */
gboolean fd_budget_allows(const FdUse *use);

typedef struct Listener Listener;
typedef void (*ListenerAccept)(GSocket *connection, gpointer data);
/* Watches a listening socket on the main context; `func` gets each accepted connection (a
 * borrowed reference). `what` names it in logs ("control socket"). */
Listener *listener_new(GSocket *socket, const char *what, ListenerAccept func, gpointer data);
void listener_free(Listener *l);
