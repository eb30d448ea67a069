/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp: an asynchronous QMP (QEMU Machine Protocol) client on the GLib main loop, with a
 * synchronous layer on top. The one public header of the qmp/ layer. */
#pragma once

#include <gio/gio.h>
#include <glib.h>
#include <json-c/json.h>

G_BEGIN_DECLS

/* g_autoptr(json_object) for code that asks for it (define QMP_WANT_JSON_AUTOPTR before
 * including): json-c has no GLib cleanup of its own, and a header that defined one for every
 * consumer would clash with the consumer's own (or another library's) definition. */
#ifdef QMP_WANT_JSON_AUTOPTR
G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)
#endif

#define QMP_ERROR (qmp_error_quark())
GQuark qmp_error_quark(void);

typedef enum {
    QMP_ERROR_ADDRESS,      /* the address string cannot be parsed */
    QMP_ERROR_CONNECT,      /* socket connect failed */
    QMP_ERROR_TIMEOUT,      /* connect or command timed out */
    QMP_ERROR_DISCONNECTED, /* the peer closed, or the client was closed */
    QMP_ERROR_PROTOCOL,     /* garbage, oversized line, bad greeting, unmatched id */
    QMP_ERROR_COMMAND,      /* QEMU answered {"error":...}; see qmp_error_get_class() */
} QmpErrorCode;

/* For a QMP_ERROR_COMMAND error, QEMU's error class ("GenericError", "CommandNotFound",
 * "DeviceNotFound", ...); NULL for any other error. */
const char *qmp_error_get_class(const GError *error);

/* Lines longer than this (bytes) are a protocol error; the connection is closed. */
#define QMP_DEFAULT_MAX_LINE (16u * 1024u * 1024u)

typedef struct QmpClient QmpClient;

/* address: "unix:PATH", "tcp:HOST:PORT", or a bare PATH (unix socket). Host names are
 * resolved (blocking). */
gboolean qmp_address_parse(const char *address, GSocketAddress **out, GError **error);
/* The same syntax check, without resolving: host names stay a GNetworkAddress, so that
 * neither checking nor connecting blocks on DNS. */
GSocketConnectable *qmp_address_parse_connectable(const char *address, GError **error);

/* Connects, reads the greeting, negotiates qmp_capabilities. Uses the thread-default main
 * context. timeout_ms covers the whole handshake (0 = no timeout). */
void qmp_client_connect_async(const char *address, guint timeout_ms, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data);
QmpClient *qmp_client_connect_finish(GAsyncResult *result, GError **error);
/* Synchronous: iterates the thread-default main context until done. */
QmpClient *qmp_client_connect(const char *address, guint timeout_ms, GError **error);

QmpClient *qmp_client_ref(QmpClient *client);
void qmp_client_unref(QmpClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpClient, qmp_client_unref)

/* Closes the connection: pending commands fail with QMP_ERROR_DISCONNECTED. Idempotent.
 * A client is used, closed and (while connected) dropped by the thread that connected it. */
void qmp_client_close(QmpClient *client);
gboolean qmp_client_is_connected(QmpClient *client);

/* From the greeting. */
const char *qmp_client_get_version(QmpClient *client); /* "7.2.22" */
void qmp_client_get_version_numbers(QmpClient *client, int *major, int *minor, int *micro);
const char *qmp_client_get_package(QmpClient *client); /* e.g. "Debian 1:7.2+dfsg-7" */
gboolean qmp_client_has_capability(QmpClient *client, const char *capability);

/* Per-command timeout default (ms, 0 = none); initial value 30000. */
void qmp_client_set_default_timeout(QmpClient *client, guint timeout_ms);
void qmp_client_set_max_line(QmpClient *client, gsize max_line);

/* Called once when the connection goes away for any reason other than qmp_client_close(). */
typedef void (*QmpDisconnectFunc)(QmpClient *client, const GError *reason, gpointer user_data);
void qmp_client_set_disconnect_handler(QmpClient *client, QmpDisconnectFunc func,
                                       gpointer user_data, GDestroyNotify destroy);

/* Commands. args may be NULL; it is not consumed (the caller keeps its reference). fds are
 * sent with SCM_RIGHTS together with the command (they are duplicated by the kernel; the
 * caller still owns and closes them). timeout_ms: 0 = client default, G_MAXUINT = none.
 * The result is the "return" member (new reference), or a GError. */
void qmp_client_execute_async(QmpClient *client, const char *command, json_object *args,
                              const int *fds, guint n_fds, guint timeout_ms,
                              GCancellable *cancellable, GAsyncReadyCallback callback,
                              gpointer user_data);
json_object *qmp_client_execute_finish(QmpClient *client, GAsyncResult *result, GError **error);

json_object *qmp_client_execute(QmpClient *client, const char *command, json_object *args,
                                GError **error);
json_object *qmp_client_execute_full(QmpClient *client, const char *command, json_object *args,
                                     const int *fds, guint n_fds, guint timeout_ms, GError **error);
/* Convenience: args given as a JSON text, e.g. "{\"name\":\"x\"}" (NULL = none). */
json_object *qmp_client_execute_json(QmpClient *client, const char *command, const char *args_json,
                                     GError **error);

/* Events. Subscribers get events in arrival order; name NULL = every event.
 * timestamp_us is QEMU's timestamp (seconds*1e6 + microseconds). */
typedef void (*QmpEventFunc)(QmpClient *client, const char *name, json_object *data,
                             gint64 timestamp_us, gpointer user_data);
guint qmp_client_subscribe(QmpClient *client, const char *name, QmpEventFunc func,
                           gpointer user_data, GDestroyNotify destroy);
void qmp_client_unsubscribe(QmpClient *client, guint subscription);

/* Synchronous event consumption: every event is also kept in a bounded per-client queue
 * (oldest dropped past 4096 events or 4 MiB of their text) so that events arriving while a
 * synchronous call waits are not lost. Returns and removes the first queued event named `name`
 * (NULL = any); events of other names stay queued. Blocks up to timeout_ms (0 = do not block).
 * Returns the whole event object {"event","data","timestamp"} (new reference) or NULL with an
 * error. */
json_object *qmp_client_wait_event(QmpClient *client, const char *name, guint timeout_ms,
                                   GError **error);
/* Drops every queued event. */
void qmp_client_clear_events(QmpClient *client);

G_END_DECLS
