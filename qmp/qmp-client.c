/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp protocol layer: greeting and capabilities negotiation, commands matched to replies
 * by id, timeouts, events (subscribers and a bounded queue), and the synchronous wrappers. */
#include "qmp-private.h"

#include <string.h>

#define DEFAULT_COMMAND_TIMEOUT_MS 30000
#define EVENT_QUEUE_MAX 4096
/* The queue is also bounded by bytes (of the events' lines): 4096 events of 256 KiB each
 * would otherwise hold a gigabyte. */
#define EVENT_QUEUE_MAX_BYTES (4u << 20)

typedef struct {
    json_object *event;
    gsize bytes;
} QueuedEvent;

typedef struct ConnectData ConnectData;

typedef struct {
    QmpClient *client; /* not a reference: the client fails every pending command first */
    gint64 id;
    GTask *task;
    GSource *timeout_source;
    GSource *cancel_source;
} Pending;

typedef struct {
    gint refcount;
    guint id;
    char *name; /* NULL = every event */
    QmpEventFunc func;
    gpointer user_data;
    GDestroyNotify destroy;
    gboolean removed;
} Subscription;

struct QmpClient {
    gint refcount;
    GMainContext *context;
    GThread *owner; /* the thread that connected it: its sources are on that thread's context */
    QmpTransport *transport;
    json_tokener *tokener;
    gboolean connected;
    gboolean closed_locally;
    ConnectData *connect; /* non-NULL during the handshake */
    gboolean greeted;

    char *version;
    int major, minor, micro;
    char *package;
    GStrv capabilities;

    guint default_timeout_ms;
    gsize max_line;

    gint64 next_id;
    GHashTable *pending;   /* gint64 id -> Pending */
    GHashTable *abandoned; /* ids that timed out or were cancelled: late replies are dropped */

    GPtrArray *subscriptions;
    guint next_subscription;
    GQueue events; /* QueuedEvent: {"event","data","timestamp"} and its size */
    gsize events_bytes;

    QmpDisconnectFunc disconnect_func;
    gpointer disconnect_data;
    GDestroyNotify disconnect_destroy;
};

struct ConnectData {
    GTask *task;
    QmpClient *client; /* reference, once the socket is connected */
    GCancellable *socket_cancellable;
    GSource *timeout_source;
    GSource *cancel_source;
    gboolean done;
};

static void client_disconnected(QmpClient *client, const GError *reason, gboolean locally);
static void send_command(QmpClient *client, const char *command, json_object *args,
                         GUnixFDList *fds, guint timeout_ms, GTask *task);

/* ------------------------------------------------------------------------------------ */
/* Small helpers */

static GSource *attach_timeout(GMainContext *ctx, guint ms, GSourceFunc func, gpointer data)
{
    GSource *source = g_timeout_source_new(ms);

    g_source_set_callback(source, func, data, NULL);
    g_source_attach(source, ctx);
    return source;
}

static GSource *attach_cancel(GMainContext *ctx, GCancellable *cancellable,
                              GCancellableSourceFunc func, gpointer data)
{
    GSource *source;

    if (!cancellable)
        return NULL;
    source = g_cancellable_source_new(cancellable);
    g_source_set_callback(source, G_SOURCE_FUNC(func), data, NULL);
    g_source_attach(source, ctx);
    return source;
}

/* json_object_put returns int, so it cannot be a GDestroyNotify directly. */
static void json_put(gpointer obj)
{
    json_object_put(obj);
}

static void queued_event_free(gpointer p)
{
    QueuedEvent *q = p;

    json_object_put(q->event);
    g_free(q);
}

static void events_clear(QmpClient *client)
{
    g_queue_clear_full(&client->events, queued_event_free);
    client->events_bytes = 0;
}

/* Pushes one event and drops the oldest past the count or byte bound. */
static void events_push(QmpClient *client, json_object *msg, gsize bytes)
{
    QueuedEvent *q = g_new(QueuedEvent, 1);

    q->event = json_object_get(msg);
    q->bytes = bytes;
    g_queue_push_tail(&client->events, q);
    client->events_bytes += bytes;
    while (g_queue_get_length(&client->events) > EVENT_QUEUE_MAX ||
           client->events_bytes > EVENT_QUEUE_MAX_BYTES) {
        QueuedEvent *old = g_queue_pop_head(&client->events);

        client->events_bytes -= old->bytes;
        queued_event_free(old);
    }
}

static void subscription_unref(Subscription *sub)
{
    if (!g_atomic_int_dec_and_test(&sub->refcount))
        return;
    if (sub->destroy)
        sub->destroy(sub->user_data);
    g_free(sub->name);
    g_free(sub);
}

/* ------------------------------------------------------------------------------------ */
/* Pending commands */

static Pending *pending_take(QmpClient *client, gint64 id)
{
    Pending *p = NULL;

    if (!g_hash_table_steal_extended(client->pending, &id, NULL, (gpointer *)&p))
        return NULL;
    qmp_destroy_source(&p->timeout_source);
    qmp_destroy_source(&p->cancel_source);
    return p;
}

static void pending_finish(Pending *p, json_object *result, GError *error)
{
    GTask *task = p->task;

    g_free(p);
    if (error)
        g_task_return_error(task, error);
    else
        g_task_return_pointer(task, result, json_put);
    g_object_unref(task);
}

static void pending_abandon(Pending *p, GError *error)
{
    gint64 *key = g_new(gint64, 1);

    *key = p->id;
    g_hash_table_add(p->client->abandoned, key);
    pending_finish(p, NULL, error);
}

static gboolean on_command_timeout(gpointer data)
{
    Pending *p = data;

    p = pending_take(p->client, p->id);
    g_info("command id %" G_GINT64_FORMAT " timed out", p->id);
    pending_abandon(
        p, g_error_new(QMP_ERROR, QMP_ERROR_TIMEOUT,
                       "Timed out waiting for the reply to command id %" G_GINT64_FORMAT, p->id));
    return G_SOURCE_REMOVE;
}

static gboolean on_command_cancelled(GCancellable *cancellable, gpointer data)
{
    Pending *p = data;

    (void)cancellable;
    p = pending_take(p->client, p->id);
    pending_abandon(
        p, g_error_new_literal(G_IO_ERROR, G_IO_ERROR_CANCELLED, "Operation was cancelled"));
    return G_SOURCE_REMOVE;
}

static void fail_all_pending(QmpClient *client, const char *why)
{
    /* Copy the ids: a completion callback may run (and change the table) before we go on. */
    g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    GHashTableIter iter;
    gpointer key;

    g_hash_table_iter_init(&iter, client->pending);
    while (g_hash_table_iter_next(&iter, &key, NULL))
        g_array_append_val(ids, *(gint64 *)key);
    for (guint i = 0; i < ids->len; i++) {
        Pending *p = pending_take(client, g_array_index(ids, gint64, i));

        if (p)
            pending_finish(p, NULL,
                           g_error_new(QMP_ERROR, QMP_ERROR_DISCONNECTED, "Disconnected: %s", why));
    }
}

/* ------------------------------------------------------------------------------------ */
/* Handshake */

static void connect_data_clear(ConnectData *data)
{
    g_clear_object(&data->task);
    if (data->client)
        qmp_client_unref(data->client);
    g_clear_object(&data->socket_cancellable);
    qmp_destroy_source(&data->timeout_source);
    qmp_destroy_source(&data->cancel_source);
}

static void connect_data_release(ConnectData *data)
{
    g_rc_box_release_full(data, (GDestroyNotify)connect_data_clear);
}

/* Completes the connect task once; success iff error is NULL. Consumes error. */
static void connect_complete(ConnectData *data, GError *error)
{
    QmpClient *client = data->client;

    if (data->done) {
        g_clear_error(&error);
        return;
    }
    data->done = TRUE;
    qmp_destroy_source(&data->timeout_source);
    qmp_destroy_source(&data->cancel_source);
    if (client)
        client->connect = NULL;
    if (error) {
        g_cancellable_cancel(data->socket_cancellable);
        if (client)
            qmp_client_close(client);
        g_task_return_error(data->task, error);
    } else {
        g_task_return_pointer(data->task, qmp_client_ref(client), (GDestroyNotify)qmp_client_unref);
    }
    /* The handshake itself held this reference. */
    connect_data_release(data);
}

static gboolean on_connect_timeout(gpointer user_data)
{
    ConnectData *data = user_data;

    connect_complete(
        data, g_error_new_literal(QMP_ERROR, QMP_ERROR_TIMEOUT, "Timed out connecting to QEMU"));
    return G_SOURCE_REMOVE;
}

static gboolean on_connect_cancelled(GCancellable *cancellable, gpointer user_data)
{
    (void)cancellable;
    connect_complete(user_data, g_error_new_literal(G_IO_ERROR, G_IO_ERROR_CANCELLED,
                                                    "Operation was cancelled"));
    return G_SOURCE_REMOVE;
}

static void on_capabilities(GObject *source, GAsyncResult *result, gpointer user_data)
{
    ConnectData *data = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) reply = NULL;

    (void)source;
    reply = g_task_propagate_pointer(G_TASK(result), &error);
    if (g_error_matches(error, QMP_ERROR, QMP_ERROR_COMMAND))
        connect_complete(data, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                           "qmp_capabilities refused: %s", error->message));
    else if (error)
        connect_complete(data, g_steal_pointer(&error));
    else
        connect_complete(data, NULL);
    connect_data_release(data);
}

static gboolean handle_greeting(QmpClient *client, json_object *msg, GError **error)
{
    json_object *qmp, *version, *qemu, *v, *caps;

    if (!json_object_object_get_ex(msg, "QMP", &qmp) ||
        !json_object_is_type(qmp, json_type_object) ||
        !json_object_object_get_ex(qmp, "version", &version) ||
        !json_object_object_get_ex(version, "qemu", &qemu) ||
        !json_object_is_type(qemu, json_type_object)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL, "Bad QMP greeting: %.200s",
                    json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
        return FALSE;
    }
    if (json_object_object_get_ex(qemu, "major", &v))
        client->major = json_object_get_int(v);
    if (json_object_object_get_ex(qemu, "minor", &v))
        client->minor = json_object_get_int(v);
    if (json_object_object_get_ex(qemu, "micro", &v))
        client->micro = json_object_get_int(v);
    client->version = g_strdup_printf("%d.%d.%d", client->major, client->minor, client->micro);
    if (json_object_object_get_ex(version, "package", &v) &&
        json_object_is_type(v, json_type_string))
        client->package = g_strstrip(g_strdup(json_object_get_string(v)));
    else
        client->package = g_strdup("");

    {
        g_autoptr(GStrvBuilder) builder = g_strv_builder_new();

        if (json_object_object_get_ex(qmp, "capabilities", &caps) &&
            json_object_is_type(caps, json_type_array)) {
            for (size_t i = 0; i < json_object_array_length(caps); i++) {
                json_object *c = json_object_array_get_idx(caps, i);

                if (json_object_is_type(c, json_type_string))
                    g_strv_builder_add(builder, json_object_get_string(c));
            }
        }
        client->capabilities = g_strv_builder_end(builder);
    }
    client->greeted = TRUE;
    g_debug("greeting: QEMU %s (%s)", client->version, client->package);
    return TRUE;
}

/* ------------------------------------------------------------------------------------ */
/* Incoming messages */

static void protocol_error(QmpClient *client, GError *error)
{
    g_info("protocol error: %s", error->message);
    qmp_transport_close(client->transport);
    client_disconnected(client, error, FALSE);
    g_error_free(error);
}

static void handle_reply(QmpClient *client, json_object *msg)
{
    json_object *id_obj, *ret, *err;
    gint64 id;
    Pending *p;

    if (!json_object_object_get_ex(msg, "id", &id_obj) ||
        !json_object_is_type(id_obj, json_type_int)) {
        protocol_error(client, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                           "Reply without a valid id: %.200s",
                                           json_object_to_json_string(msg)));
        return;
    }
    id = json_object_get_int64(id_obj);
    p = pending_take(client, id);
    if (!p) {
        if (g_hash_table_remove(client->abandoned, &id)) {
            g_debug("dropping late reply to command id %" G_GINT64_FORMAT, id);
            return;
        }
        protocol_error(client, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                           "Reply to unknown command id %" G_GINT64_FORMAT, id));
        return;
    }
    if (json_object_object_get_ex(msg, "return", &ret) && ret) {
        pending_finish(p, json_object_get(ret), NULL);
    } else if (json_object_object_get_ex(msg, "return", NULL)) {
        /* QEMU never returns null ({} for "nothing"); a NULL result must carry an error,
         * or every caller that trusts "NULL means error" dereferences a missing one. */
        pending_finish(p, NULL,
                       g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                   "Reply to command id %" G_GINT64_FORMAT " returns null", id));
    } else {
        json_object *klass = NULL, *desc = NULL;

        json_object_object_get_ex(msg, "error", &err);
        json_object_object_get_ex(err, "class", &klass);
        json_object_object_get_ex(err, "desc", &desc);
        if (!json_object_is_type(klass, json_type_string))
            klass = NULL;
        if (!json_object_is_type(desc, json_type_string))
            desc = NULL;
        pending_finish(
            p, NULL,
            qmp_error_new_command(klass ? json_object_get_string(klass) : "GenericError",
                                  desc ? json_object_get_string(desc) : "Unknown error"));
    }
}

static void handle_event(QmpClient *client, json_object *msg, gsize bytes)
{
    json_object *name_obj, *data = NULL, *ts, *v;
    g_autoptr(GPtrArray) subs = NULL;
    g_autoptr(json_object) empty = NULL;
    gint64 timestamp_us = 0;
    const char *name;

    json_object_object_get_ex(msg, "event", &name_obj);
    name = json_object_get_string(name_obj);
    if (json_object_object_get_ex(msg, "timestamp", &ts)) {
        /* A peer's numbers are not trusted: one that would overflow gives no timestamp (0)
         * rather than undefined arithmetic. */
        gint64 seconds = 0, micros = 0;
        if (json_object_object_get_ex(ts, "seconds", &v))
            seconds = json_object_get_int64(v);
        if (json_object_object_get_ex(ts, "microseconds", &v))
            micros = json_object_get_int64(v);
        if (seconds >= 0 && seconds <= G_MAXINT64 / G_USEC_PER_SEC - 1 && micros >= 0 &&
            micros < G_USEC_PER_SEC)
            timestamp_us = seconds * G_USEC_PER_SEC + micros;
    }
    /* Subscribers always get an object, so that they need no NULL check. */
    if (!json_object_object_get_ex(msg, "data", &data) || !data)
        data = empty = json_object_new_object();

    events_push(client, msg, bytes);

    /* Snapshot: a subscriber may (un)subscribe or run a nested synchronous call. */
    subs = g_ptr_array_new_with_free_func((GDestroyNotify)subscription_unref);
    for (guint i = 0; i < client->subscriptions->len; i++) {
        Subscription *sub = g_ptr_array_index(client->subscriptions, i);

        if (!sub->name || strcmp(sub->name, name) == 0) {
            g_atomic_int_inc(&sub->refcount);
            g_ptr_array_add(subs, sub);
        }
    }
    for (guint i = 0; i < subs->len; i++) {
        Subscription *sub = g_ptr_array_index(subs, i);

        if (!sub->removed)
            sub->func(client, name, data, timestamp_us, sub->user_data);
    }
}

static void handle_line(QmpClient *client, const char *line, gsize len)
{
    json_tokener *tok = client->tokener;
    g_autoptr(json_object) msg = NULL;
    g_autoptr(GError) error = NULL;
    json_object *ev;
    gsize start = 0;

    while (start < len && g_ascii_isspace(line[start]))
        start++;
    if (start == len)
        return;
    if (len > G_MAXINT) {
        protocol_error(
            client, g_error_new_literal(QMP_ERROR, QMP_ERROR_PROTOCOL, "Line too long to parse"));
        return;
    }

    json_tokener_reset(tok);
    msg = json_tokener_parse_ex(tok, line, (int)len);
    if (!msg || json_tokener_get_error(tok) != json_tokener_success) {
        protocol_error(client,
                       g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                   "Malformed JSON from QEMU (%s): %.80s",
                                   json_tokener_error_desc(json_tokener_get_error(tok)), line));
        return;
    }
    for (gsize i = json_tokener_get_parse_end(tok); i < len; i++) {
        if (!g_ascii_isspace(line[i])) {
            protocol_error(client,
                           g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                       "Trailing data after JSON from QEMU: %.80s", line + i));
            return;
        }
    }
    if (!json_object_is_type(msg, json_type_object)) {
        protocol_error(client, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                           "Message from QEMU is not an object: %.80s", line));
        return;
    }
    g_debug("<- %.1000s", line);

    if (!client->greeted) {
        if (!client->connect) {
            /* The handshake already failed (timeout); nothing is waiting for this. */
        } else if (!handle_greeting(client, msg, &error)) {
            protocol_error(client, g_steal_pointer(&error));
        } else {
            GTask *task =
                g_task_new(NULL, NULL, on_capabilities, g_rc_box_acquire(client->connect));

            send_command(client, "qmp_capabilities", NULL, NULL, 0, task);
        }
    } else if (json_object_object_get_ex(msg, "event", &ev) &&
               json_object_is_type(ev, json_type_string)) {
        handle_event(client, msg, len);
    } else if (json_object_object_get_ex(msg, "return", NULL) ||
               json_object_object_get_ex(msg, "error", NULL)) {
        handle_reply(client, msg);
    } else {
        protocol_error(client, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                           "Unexpected message from QEMU: %.80s", line));
    }
}

static void on_line(QmpTransport *transport, const char *line, gsize len, gpointer user_data)
{
    QmpClient *client = user_data;

    (void)transport;
    /* Callbacks (and a failed handshake) may drop the last reference meanwhile. */
    qmp_client_ref(client);
    handle_line(client, line, len);
    qmp_client_unref(client);
}

static void on_transport_error(QmpTransport *transport, const GError *error, gpointer user_data)
{
    QmpClient *client = user_data;

    (void)transport;
    qmp_client_ref(client);
    client_disconnected(client, error, FALSE);
    qmp_client_unref(client);
}

/* The single place where a connection ends. */
static void client_disconnected(QmpClient *client, const GError *reason, gboolean locally)
{
    QmpDisconnectFunc func = client->disconnect_func;

    if (!client->connected)
        return;
    client->connected = FALSE;
    client->closed_locally = locally;
    if (client->connect)
        connect_complete(client->connect, g_error_copy(reason));
    fail_all_pending(client, reason->message);
    if (!locally && func) {
        /* Once only, even if the handler re-enters. */
        client->disconnect_func = NULL;
        func(client, reason, client->disconnect_data);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Connecting */

static void on_socket_connected(GObject *source, GAsyncResult *result, gpointer user_data)
{
    ConnectData *data = user_data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GSocketConnection) conn = NULL;
    QmpClient *client;

    conn = g_socket_client_connect_finish(G_SOCKET_CLIENT(source), result, &error);
    if (data->done) {
        connect_data_release(data); /* timed out or cancelled meanwhile; conn is dropped */
        return;
    }
    if (!conn) {
        connect_complete(
            data, g_error_new(QMP_ERROR, QMP_ERROR_CONNECT, "Cannot connect: %s", error->message));
        connect_data_release(data);
        return;
    }

    client = g_new0(QmpClient, 1);
    client->refcount = 1;
    client->context = g_main_context_ref(g_task_get_context(data->task));
    client->owner = g_thread_self();
    client->connected = TRUE;
    client->default_timeout_ms = DEFAULT_COMMAND_TIMEOUT_MS;
    client->max_line = QMP_DEFAULT_MAX_LINE;
    client->next_id = 1;
    /* Deeper than json-c's default of 32: long backing chains nest deeply. */
    client->tokener = json_tokener_new_ex(256);
    client->pending = g_hash_table_new(g_int64_hash, g_int64_equal);
    client->abandoned = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    client->subscriptions = g_ptr_array_new();
    g_queue_init(&client->events);
    client->connect = data;
    data->client = client;
    client->transport = qmp_transport_new(conn, client->context, client->max_line, on_line,
                                          on_transport_error, client);
    connect_data_release(data);
}

void qmp_client_connect_async(const char *address, guint timeout_ms, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data)
{
    g_autoptr(GSocketConnectable) connectable = NULL;
    g_autoptr(GSocketClient) sc = NULL;
    g_autoptr(GError) error = NULL;
    GMainContext *ctx;
    ConnectData *data;
    GTask *task;

    task = g_task_new(NULL, cancellable, callback, user_data);
    g_task_set_source_tag(task, qmp_client_connect_async);
    connectable = qmp_address_parse_connectable(address, &error);
    if (!connectable) {
        g_task_return_error(task, g_steal_pointer(&error));
        g_object_unref(task);
        return;
    }

    ctx = g_task_get_context(task);
    data = g_rc_box_new0(ConnectData);
    data->task = task;
    data->socket_cancellable = g_cancellable_new();
    if (timeout_ms)
        data->timeout_source = attach_timeout(ctx, timeout_ms, on_connect_timeout, data);
    data->cancel_source = attach_cancel(ctx, cancellable, on_connect_cancelled, data);

    sc = g_socket_client_new();
    /* A QEMU monitor is never reached through an HTTP/SOCKS proxy (and libproxy lookups are
     * slow and spawn threads). */
    g_socket_client_set_enable_proxy(sc, FALSE);
    /* One reference for the handshake (released by connect_complete), one for the socket
     * client callback. */
    g_socket_client_connect_async(sc, connectable, data->socket_cancellable, on_socket_connected,
                                  g_rc_box_acquire(data));
}

QmpClient *qmp_client_connect_finish(GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, NULL), NULL);
    return g_task_propagate_pointer(G_TASK(result), error);
}

static void store_result(GObject *source, GAsyncResult *result, gpointer user_data)
{
    (void)source;
    *(GAsyncResult **)user_data = g_object_ref(result);
}

QmpClient *qmp_client_connect(const char *address, guint timeout_ms, GError **error)
{
    g_autoptr(GMainContext) ctx = g_main_context_ref_thread_default();
    g_autoptr(GAsyncResult) result = NULL;

    qmp_client_connect_async(address, timeout_ms, NULL, store_result, &result);
    while (!result)
        g_main_context_iteration(ctx, TRUE);
    return qmp_client_connect_finish(result, error);
}

/* ------------------------------------------------------------------------------------ */
/* Lifetime and properties */

QmpClient *qmp_client_ref(QmpClient *client)
{
    g_return_val_if_fail(client != NULL, NULL);
    g_atomic_int_inc(&client->refcount);
    return client;
}

void qmp_client_unref(QmpClient *client)
{
    if (!client || !g_atomic_int_dec_and_test(&client->refcount))
        return;
    /* Keep it alive while pending tasks are failed (their callbacks may take a ref). */
    client->refcount = 1;
    qmp_client_close(client);
    if (!g_atomic_int_dec_and_test(&client->refcount))
        return; /* resurrected by a callback; freed at its final unref */

    g_assert(g_hash_table_size(client->pending) == 0);
    for (guint i = 0; i < client->subscriptions->len; i++) {
        Subscription *sub = g_ptr_array_index(client->subscriptions, i);

        sub->removed = TRUE;
        subscription_unref(sub);
    }
    g_ptr_array_unref(client->subscriptions);
    events_clear(client);
    if (client->disconnect_destroy)
        client->disconnect_destroy(client->disconnect_data);
    g_hash_table_unref(client->pending);
    g_hash_table_unref(client->abandoned);
    qmp_transport_unref(client->transport);
    g_main_context_unref(client->context);
    json_tokener_free(client->tokener);
    g_free(client->version);
    g_free(client->package);
    g_strfreev(client->capabilities);
    g_free(client);
}

void qmp_client_close(QmpClient *client)
{
    g_autoptr(GError) reason = NULL;

    g_return_if_fail(client != NULL);
    if (!client->connected)
        return;
    /* Closing destroys sources that another thread's context may be dispatching right now:
     * a connected client is closed (or dropped) by the thread that owns it. */
    if (client->owner != g_thread_self())
        g_critical("qmp_client_close: the client belongs to another thread");
    qmp_transport_close(client->transport);
    reason =
        g_error_new_literal(QMP_ERROR, QMP_ERROR_DISCONNECTED, "Connection closed by the client");
    qmp_client_ref(client);
    client_disconnected(client, reason, TRUE);
    qmp_client_unref(client);
}

gboolean qmp_client_is_connected(QmpClient *client)
{
    g_return_val_if_fail(client != NULL, FALSE);
    return client->connected;
}

const char *qmp_client_get_version(QmpClient *client)
{
    g_return_val_if_fail(client != NULL, NULL);
    return client->version;
}

void qmp_client_get_version_numbers(QmpClient *client, int *major, int *minor, int *micro)
{
    g_return_if_fail(client != NULL);
    if (major)
        *major = client->major;
    if (minor)
        *minor = client->minor;
    if (micro)
        *micro = client->micro;
}

const char *qmp_client_get_package(QmpClient *client)
{
    g_return_val_if_fail(client != NULL, NULL);
    return client->package;
}

gboolean qmp_client_has_capability(QmpClient *client, const char *capability)
{
    g_return_val_if_fail(client != NULL, FALSE);
    return client->capabilities &&
           g_strv_contains((const char *const *)client->capabilities, capability);
}

void qmp_client_set_default_timeout(QmpClient *client, guint timeout_ms)
{
    g_return_if_fail(client != NULL);
    client->default_timeout_ms = timeout_ms;
}

void qmp_client_set_max_line(QmpClient *client, gsize max_line)
{
    g_return_if_fail(client != NULL);
    client->max_line = max_line ? max_line : QMP_DEFAULT_MAX_LINE;
    qmp_transport_set_max_line(client->transport, client->max_line);
}

void qmp_client_set_disconnect_handler(QmpClient *client, QmpDisconnectFunc func,
                                       gpointer user_data, GDestroyNotify destroy)
{
    g_return_if_fail(client != NULL);
    if (client->disconnect_destroy)
        client->disconnect_destroy(client->disconnect_data);
    client->disconnect_func = func;
    client->disconnect_data = user_data;
    client->disconnect_destroy = destroy;
}

/* ------------------------------------------------------------------------------------ */
/* Commands */

/* Takes ownership of task. */
static void send_command(QmpClient *client, const char *command, json_object *args,
                         GUnixFDList *fds, guint timeout_ms, GTask *task)
{
    g_autoptr(json_object) msg = json_object_new_object();
    g_autofree char *line = NULL;
    Pending *p;

    if (!client->connected) {
        g_task_return_new_error(task, QMP_ERROR, QMP_ERROR_DISCONNECTED, "Not connected");
        g_object_unref(task);
        return;
    }
    p = g_new0(Pending, 1);
    p->client = client;
    p->id = client->next_id++;
    p->task = task;

    json_object_object_add(msg, "execute", json_object_new_string(command));
    if (args)
        json_object_object_add(msg, "arguments", json_object_get(args));
    json_object_object_add(msg, "id", json_object_new_int64(p->id));
    line = g_strconcat(json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE),
                       "\n", NULL);

    if (timeout_ms == 0)
        timeout_ms = client->default_timeout_ms;
    if (timeout_ms != 0 && timeout_ms != G_MAXUINT)
        p->timeout_source = attach_timeout(client->context, timeout_ms, on_command_timeout, p);
    p->cancel_source =
        attach_cancel(client->context, g_task_get_cancellable(task), on_command_cancelled, p);
    g_hash_table_insert(client->pending, &p->id, p);

    g_debug("-> %.*s", (int)strlen(line) - 1, line);
    /* May fail the transport, and so this very command, synchronously: GTask then defers
     * the callback to an idle, so the caller never sees it run inside execute_async. */
    qmp_transport_send(client->transport, line, strlen(line), fds);
}

void qmp_client_execute_async(QmpClient *client, const char *command, json_object *args,
                              const int *fds, guint n_fds, guint timeout_ms,
                              GCancellable *cancellable, GAsyncReadyCallback callback,
                              gpointer user_data)
{
    g_autoptr(GUnixFDList) fd_list = NULL;
    GTask *task;

    g_return_if_fail(client != NULL);
    g_return_if_fail(command != NULL);
    g_return_if_fail(n_fds == 0 || fds != NULL);

    task = g_task_new(NULL, cancellable, callback, user_data);
    g_task_set_source_tag(task, qmp_client_execute_async);
    if (g_task_return_error_if_cancelled(task)) {
        g_object_unref(task);
        return;
    }
    if (n_fds > 0) {
        g_autoptr(GError) error = NULL;

        if (client->connected && !qmp_transport_can_pass_fds(client->transport)) {
            g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                                    "File descriptors can only be passed over a unix socket");
            g_object_unref(task);
            return;
        }
        /* Duplicated now, so that a bad fd fails this command only, not the connection. */
        fd_list = g_unix_fd_list_new();
        for (guint i = 0; i < n_fds; i++) {
            if (g_unix_fd_list_append(fd_list, fds[i], &error) < 0) {
                g_task_return_new_error(task, error->domain, error->code, "Cannot pass fd %d: %s",
                                        fds[i], error->message);
                g_object_unref(task);
                return;
            }
        }
    }
    qmp_client_ref(client);
    send_command(client, command, args, fd_list, timeout_ms, task);
    qmp_client_unref(client);
}

json_object *qmp_client_execute_finish(QmpClient *client, GAsyncResult *result, GError **error)
{
    /* client is deliberately not used: it may be gone (unref with commands in flight). */
    (void)client;
    g_return_val_if_fail(g_task_is_valid(result, NULL), NULL);
    return g_task_propagate_pointer(G_TASK(result), error);
}

json_object *qmp_client_execute_full(QmpClient *client, const char *command, json_object *args,
                                     const int *fds, guint n_fds, guint timeout_ms, GError **error)
{
    g_autoptr(QmpClient) hold = NULL;
    g_autoptr(GAsyncResult) result = NULL;
    GMainContext *ctx;

    g_return_val_if_fail(client != NULL, NULL);
    hold = qmp_client_ref(client);
    ctx = client->context;
    /* The reply, timeout and GTask completion all live on the client's context. */
    g_main_context_push_thread_default(ctx);
    qmp_client_execute_async(client, command, args, fds, n_fds, timeout_ms, NULL, store_result,
                             &result);
    while (!result)
        g_main_context_iteration(ctx, TRUE);
    g_main_context_pop_thread_default(ctx);
    return qmp_client_execute_finish(client, result, error);
}

json_object *qmp_client_execute(QmpClient *client, const char *command, json_object *args,
                                GError **error)
{
    return qmp_client_execute_full(client, command, args, NULL, 0, 0, error);
}

json_object *qmp_client_execute_json(QmpClient *client, const char *command, const char *args_json,
                                     GError **error)
{
    g_autoptr(json_object) args = NULL;

    if (args_json) {
        enum json_tokener_error jerr = json_tokener_success;

        args = json_tokener_parse_verbose(args_json, &jerr);
        if (!args || !json_object_is_type(args, json_type_object)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Arguments are not a JSON object: %s",
                        args ? "wrong type" : json_tokener_error_desc(jerr));
            return NULL;
        }
    }
    return qmp_client_execute(client, command, args, error);
}

/* ------------------------------------------------------------------------------------ */
/* Events */

guint qmp_client_subscribe(QmpClient *client, const char *name, QmpEventFunc func,
                           gpointer user_data, GDestroyNotify destroy)
{
    Subscription *sub;

    g_return_val_if_fail(client != NULL, 0);
    g_return_val_if_fail(func != NULL, 0);
    sub = g_new0(Subscription, 1);
    sub->refcount = 1;
    sub->id = ++client->next_subscription;
    sub->name = g_strdup(name);
    sub->func = func;
    sub->user_data = user_data;
    sub->destroy = destroy;
    g_ptr_array_add(client->subscriptions, sub);
    return sub->id;
}

void qmp_client_unsubscribe(QmpClient *client, guint subscription)
{
    g_return_if_fail(client != NULL);
    for (guint i = 0; i < client->subscriptions->len; i++) {
        Subscription *sub = g_ptr_array_index(client->subscriptions, i);

        if (sub->id == subscription) {
            sub->removed = TRUE;
            g_ptr_array_remove_index(client->subscriptions, i);
            subscription_unref(sub);
            return;
        }
    }
}

static json_object *take_event(QmpClient *client, const char *name)
{
    for (GList *l = client->events.head; l; l = l->next) {
        QueuedEvent *q = l->data;
        json_object *ev = q->event, *n;

        if (!name || (json_object_object_get_ex(ev, "event", &n) &&
                      g_strcmp0(json_object_get_string(n), name) == 0)) {
            client->events_bytes -= q->bytes;
            g_free(q);
            g_queue_delete_link(&client->events, l);
            return ev;
        }
    }
    return NULL;
}

static gboolean set_flag(gpointer data)
{
    *(gboolean *)data = TRUE;
    return G_SOURCE_REMOVE;
}

json_object *qmp_client_wait_event(QmpClient *client, const char *name, guint timeout_ms,
                                   GError **error)
{
    g_autoptr(QmpClient) hold = NULL;
    GSource *timer = NULL;
    gboolean timed_out = FALSE;
    json_object *ev;

    g_return_val_if_fail(client != NULL, NULL);
    hold = qmp_client_ref(client);
    if (timeout_ms != 0 && timeout_ms != G_MAXUINT)
        timer = attach_timeout(client->context, timeout_ms, set_flag, &timed_out);
    while (!(ev = take_event(client, name)) && client->connected && !timed_out && timeout_ms != 0)
        g_main_context_iteration(client->context, TRUE);
    qmp_destroy_source(&timer);
    if (ev)
        return ev;
    if (!client->connected)
        g_set_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED,
                    "Disconnected while waiting for event %s", name ? name : "(any)");
    else
        g_set_error(error, QMP_ERROR, QMP_ERROR_TIMEOUT, "Timed out waiting for event %s",
                    name ? name : "(any)");
    return NULL;
}

void qmp_client_clear_events(QmpClient *client)
{
    g_return_if_fail(client != NULL);
    events_clear(client);
}
