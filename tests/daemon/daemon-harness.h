/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The safe-migrated test harness: the real daemon started like systemd would, control
 * clients on its socket, and the rig's VM pairs with their policy files. Shared by the
 * end-to-end tests (test-daemon.c) and the hostile-client tests (test-daemon-hostile.c). */
#pragma once

#include "rig.h"

#include <gio/gio.h>

typedef RigPair Pair;

typedef struct {
    GSubprocess *proc;
    char *dir;  /* config dir */
    char *sock; /* control socket */
    char *log;
    GSocket *notify; /* our end of NOTIFY_SOCKET */
    guint nofile;    /* if set, the daemon's RLIMIT_NOFILE (soft and hard) */
} Daemon;
typedef struct {
    GSocketConnection *conn;
    GDataInputStream *in;
    Daemon *daemon; /* whose log explains a hang-up (NULL for client_new_from_fd) */
} Client;

/* The daemon */
char *bin_path(const char *name);
char *notify_recv(Daemon *d, guint timeout_ms);
void daemon_write_vm(Daemon *d, const char *name, const char *text);
Daemon *daemon_new(void);
void daemon_start(Daemon *d, const char *const *extra);
void daemon_dump_log(Daemon *d);
int daemon_stop(Daemon *d);
void daemon_free(Daemon *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Daemon, daemon_free)

/* Control clients and their JSON lines */
Client *client_new(Daemon *d);
/* A client on an already connected socket fd (taken). */
Client *client_new_from_fd(int fd);
void client_free(Client *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Client, client_free)
void client_send(Client *c, const char *json);
json_object *client_next(Client *c);
json_object *member(json_object *o, const char *key);
const char *str(json_object *o, const char *key);
gint64 num(json_object *o, const char *key);
json_object *call(Daemon *d, const char *json);
json_object *list_vm(Daemon *d, const char *name);
json_object *wait_connection(Daemon *d, const char *name, const char *want, guint ms);
json_object *until_event(Client *c, const char *name, GPtrArray *names);

/* VMs */
void pair_start(Pair *p, RigQemu qemu, const char *name, gboolean with_dest);
void pair_policy(Daemon *d, Pair *p, const char *name, const char *extra);
void assert_runstate(RigVm *vm, const char *want);
/* The VM reaches run state `want` within timeout_ms (for a VM that a retrying gate stops at
 * each attempt's pre-switchover, so that any one instant may catch it stopped). */
void await_runstate(RigVm *vm, const char *want, gint64 timeout_ms);
/* The guest leaves a GET EVENT STATUS NOTIFICATION pending (CBW sent, data not fetched):
 * the device is busy until finish_pending_gesn() fetches and checks the data. */
void leave_pending_gesn(Pair *p);
void finish_pending_gesn(Pair *p);
/* Guest RAM dirtied so that a migration takes a while. */
void make_ram_heavy(Pair *p);
