/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the control socket (control.c): JSON lines over a unix stream socket, peers
 * checked, reads and writes bounded, connections capped. It knows nothing of VMs or
 * migrations: each request goes to the handlers the daemon gives it. Main thread only. */
#pragma once

#include "listen.h"
#include "metrics.h"
#include "util.h"

#include <sys/types.h>

/* Connection caps: the owner (root, the daemon's user) always has SM_OWNER_RESERVED slots
 * of SM_MAX_CLIENTS that members cannot take; one member uid holds at most
 * SM_MAX_CLIENTS_PER_UID. */
#define SM_MAX_CLIENTS 128
#define SM_OWNER_RESERVED 16
#define SM_MAX_CLIENTS_PER_UID 32
/* A control request line (and so the read buffer) is at most this long. */
#define SM_MAX_REQUEST_BYTES (1u << 20)

typedef struct Control Control;
typedef struct Client Client;

/* The daemon's side, called on the main thread. */
typedef struct {
    /* One request (a JSON object); the handler replies, now or later, exactly once. */
    void (*request)(gpointer data, Client *client, json_object *request);
    /* The client is gone (it stays valid while referenced). */
    void (*gone)(gpointer data, Client *client);
    /* Whether the client follows a running migration (then it is never idle). */
    gboolean (*follows)(gpointer data, Client *client);
} ControlHandlers;

typedef struct {
    const char *socket_path;
    guint socket_mode; /* 0600 or 0660 */
    gid_t socket_gid;
    guint client_idle_ms; /* a client idle this long (and following nothing) goes */
} ControlConfig;

/* Listens on config->socket_path. fds, metrics (client_rejects) and reject_log are the
 * daemon's and outlive the Control. */
Control *control_listen(const ControlConfig *config, const ControlHandlers *handlers, gpointer data,
                        FdUse *fds, Metrics *metrics, RateLimit *reject_log, GError **error);
/* Stops accepting; clients already connected stay until they or the daemon leave. */
void control_close(Control *ctl);
/* Hangs up on every client (after what is queued for it went out, two seconds at most),
 * then frees the Control. */
void control_free(Control *ctl);
guint control_n_clients(Control *ctl);

Client *client_ref(Client *client);
void client_unref(Client *client);
gboolean client_is_open(Client *client);
gboolean client_is_privileged(Client *client);
/* Queues one JSON line; `obj` is consumed. */
void client_send(Client *client, json_object *obj);
/* {"id": id, "ok": true, ...fields} (fields consumed, may be NULL). */
void client_reply_ok(Client *client, json_object *id, json_object *fields);
void client_reply_error(Client *client, json_object *id, const char *code, int exit_code,
                        const char *fmt, ...) G_GNUC_PRINTF(5, 6);
