/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp transport: a non-blocking socket split into '\n'-terminated lines, with a bounded
 * input buffer and an output queue whose messages may carry SCM_RIGHTS file descriptors. */
#include "qmp-private.h"

#include <gio/gunixfdmessage.h>
#include <string.h>

#define READ_CHUNK (64 * 1024)

typedef struct {
    char *data;
    gsize len;
    gsize offset;
    GUnixFDList *fds; /* sent with the first bytes, then dropped */
} OutMessage;

struct QmpTransport {
    gint refcount;
    gboolean open;
    GSocketConnection *connection;
    GSocket *socket;
    GMainContext *context;
    gsize max_line;

    GByteArray *inbuf;
    gsize scanned; /* bytes of inbuf already known to hold no '\n' */
    GSource *read_source;
    GSource *drain_source;

    GQueue outq;
    GSource *write_source;

    QmpTransportLineFunc line_func;
    QmpTransportErrorFunc error_func;
    gpointer user_data;
};

static void out_message_free(OutMessage *msg)
{
    g_free(msg->data);
    g_clear_object(&msg->fds);
    g_free(msg);
}

static gboolean on_readable(GSocket *socket, GIOCondition condition, gpointer user_data);
static gboolean on_drain(gpointer user_data);

QmpTransport *qmp_transport_new(GSocketConnection *connection, GMainContext *context,
                                gsize max_line, QmpTransportLineFunc line_func,
                                QmpTransportErrorFunc error_func, gpointer user_data)
{
    QmpTransport *t = g_new0(QmpTransport, 1);

    t->refcount = 1;
    t->open = TRUE;
    t->connection = g_object_ref(connection);
    t->socket = g_socket_connection_get_socket(connection);
    t->context = context ? g_main_context_ref(context) : g_main_context_ref_thread_default();
    t->max_line = max_line ? max_line : QMP_DEFAULT_MAX_LINE;
    t->inbuf = g_byte_array_new();
    g_queue_init(&t->outq);
    t->line_func = line_func;
    t->error_func = error_func;
    t->user_data = user_data;

    /* All I/O is driven by GSources; the socket must never block the main loop. */
    g_socket_set_blocking(t->socket, FALSE);

    t->read_source = g_socket_create_source(t->socket, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
    /* A line callback may run a synchronous call, which iterates this context again: the
     * read source must be able to dispatch recursively or that call would never see its
     * reply. */
    g_source_set_can_recurse(t->read_source, TRUE);
    g_source_set_callback(t->read_source, G_SOURCE_FUNC(on_readable), t, NULL);
    g_source_attach(t->read_source, t->context);
    return t;
}

QmpTransport *qmp_transport_ref(QmpTransport *t)
{
    g_atomic_int_inc(&t->refcount);
    return t;
}

void qmp_transport_unref(QmpTransport *t)
{
    if (!t || !g_atomic_int_dec_and_test(&t->refcount))
        return;
    qmp_transport_close(t);
    g_byte_array_unref(t->inbuf);
    g_main_context_unref(t->context);
    g_object_unref(t->connection);
    g_free(t);
}

void qmp_transport_set_max_line(QmpTransport *t, gsize max_line)
{
    t->max_line = max_line ? max_line : QMP_DEFAULT_MAX_LINE;
}

gboolean qmp_transport_is_open(QmpTransport *t)
{
    return t->open;
}

gboolean qmp_transport_can_pass_fds(QmpTransport *t)
{
    return g_socket_get_family(t->socket) == G_SOCKET_FAMILY_UNIX;
}

void qmp_transport_close(QmpTransport *t)
{
    if (!t->open)
        return;
    t->open = FALSE;
    qmp_destroy_source(&t->read_source);
    qmp_destroy_source(&t->drain_source);
    qmp_destroy_source(&t->write_source);
    g_queue_clear_full(&t->outq, (GDestroyNotify)out_message_free);
    g_byte_array_set_size(t->inbuf, 0);
    t->scanned = 0;
    g_io_stream_close(G_IO_STREAM(t->connection), NULL, NULL);
}

static void transport_fail(QmpTransport *t, GError *error)
{
    if (!t->open) {
        g_error_free(error);
        return;
    }
    g_info("transport failed: %s", error->message);
    qmp_transport_close(t);
    if (t->error_func)
        t->error_func(t, error, t->user_data);
    g_error_free(error);
}

/* Returns the length of the first complete line in inbuf (including '\n'), or 0. */
static gsize find_line(QmpTransport *t)
{
    const guint8 *nl;

    if (t->scanned >= t->inbuf->len)
        return 0;
    nl = memchr(t->inbuf->data + t->scanned, '\n', t->inbuf->len - t->scanned);
    if (!nl) {
        t->scanned = t->inbuf->len;
        return 0;
    }
    return (gsize)(nl - t->inbuf->data) + 1;
}

static void ensure_drain(QmpTransport *t)
{
    if (t->drain_source || !t->open)
        return;
    t->drain_source = g_idle_source_new();
    g_source_set_can_recurse(t->drain_source, TRUE);
    g_source_set_callback(t->drain_source, on_drain, t, NULL);
    g_source_attach(t->drain_source, t->context);
}

/* Hands out complete lines one at a time, always taking the head of the buffer, so that a
 * nested dispatch (a callback running the main loop) continues in order where we stopped. */
static void process_lines(QmpTransport *t)
{
    gsize n;

    while (t->open && (n = find_line(t)) > 0) {
        gsize len = n - 1;
        char *line;

        if (len > t->max_line) {
            transport_fail(t, g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                          "Received a line of %" G_GSIZE_FORMAT
                                          " bytes, more than the limit of %" G_GSIZE_FORMAT,
                                          len, t->max_line));
            return;
        }
        if (len > 0 && t->inbuf->data[len - 1] == '\r')
            len--;
        line = g_strndup((const char *)t->inbuf->data, len);
        g_byte_array_remove_range(t->inbuf, 0, n);
        t->scanned = 0;
        /* If the callback blocks in a nested loop, the lines still buffered must keep
         * flowing even when the socket stays quiet. */
        if (find_line(t) > 0)
            ensure_drain(t);
        t->line_func(t, line, len, t->user_data);
        g_free(line);
    }
    if (t->open && t->inbuf->len > t->max_line)
        transport_fail(t,
                       g_error_new(QMP_ERROR, QMP_ERROR_PROTOCOL,
                                   "Incoming line exceeds the limit of %" G_GSIZE_FORMAT " bytes",
                                   t->max_line));
}

static gboolean on_drain(gpointer user_data)
{
    QmpTransport *t = user_data;

    qmp_transport_ref(t);
    qmp_destroy_source(&t->drain_source);
    process_lines(t);
    qmp_transport_unref(t);
    return G_SOURCE_REMOVE;
}

static gboolean on_readable(GSocket *socket, GIOCondition condition, gpointer user_data)
{
    QmpTransport *t = user_data;
    g_autoptr(GError) error = NULL;
    guint old_len = t->inbuf->len;
    gssize n;
    gboolean keep;

    (void)condition;
    qmp_transport_ref(t);
    /* Receive straight into the buffer tail: it never exceeds max_line + READ_CHUNK. */
    g_byte_array_set_size(t->inbuf, old_len + READ_CHUNK);
    n = g_socket_receive(socket, (gchar *)t->inbuf->data + old_len, READ_CHUNK, NULL, &error);
    g_byte_array_set_size(t->inbuf, old_len + (guint)MAX(n, 0));
    if (n < 0) {
        if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
            transport_fail(t, g_error_new(QMP_ERROR, QMP_ERROR_DISCONNECTED, "Receive failed: %s",
                                          error->message));
    } else if (n == 0) {
        /* Lines still buffered (a nested dispatch may be reading ahead) come first. */
        process_lines(t);
        if (t->open && t->inbuf->len > 0)
            transport_fail(t, g_error_new(QMP_ERROR, QMP_ERROR_DISCONNECTED,
                                          "Connection closed by peer in the middle of a "
                                          "message (%u bytes unterminated)",
                                          t->inbuf->len));
        else
            transport_fail(t, g_error_new_literal(QMP_ERROR, QMP_ERROR_DISCONNECTED,
                                                  "Connection closed by peer"));
    } else {
        process_lines(t);
    }
    keep = t->open;
    qmp_transport_unref(t);
    return keep ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* Writes as much of the queue as the socket takes. FALSE if the transport failed. */
static gboolean flush(QmpTransport *t)
{
    OutMessage *msg;

    while (t->open && (msg = g_queue_peek_head(&t->outq))) {
        g_autoptr(GError) error = NULL;
        GOutputVector vec = {msg->data + msg->offset, msg->len - msg->offset};
        GSocketControlMessage *cmsg = NULL;
        gssize n;

        if (msg->fds && msg->offset == 0)
            cmsg = g_unix_fd_message_new_with_fd_list(msg->fds);
        n = g_socket_send_message(t->socket, NULL, &vec, 1, cmsg ? &cmsg : NULL, cmsg ? 1 : 0,
                                  G_SOCKET_MSG_NONE, NULL, &error);
        g_clear_object(&cmsg);
        if (n < 0) {
            if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                return TRUE;
            transport_fail(t, g_error_new(QMP_ERROR, QMP_ERROR_DISCONNECTED, "Send failed: %s",
                                          error->message));
            return FALSE;
        }
        if (n > 0)
            g_clear_object(&msg->fds); /* the kernel attached them to the first byte */
        msg->offset += (gsize)n;
        if (msg->offset == msg->len)
            out_message_free(g_queue_pop_head(&t->outq));
    }
    return t->open;
}

static gboolean on_writable(GSocket *socket, GIOCondition condition, gpointer user_data)
{
    QmpTransport *t = user_data;
    gboolean keep;

    (void)socket;
    (void)condition;
    qmp_transport_ref(t);
    keep = flush(t) && !g_queue_is_empty(&t->outq);
    if (!keep && t->write_source) {
        g_source_unref(t->write_source);
        t->write_source = NULL;
    }
    qmp_transport_unref(t);
    return keep ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

void qmp_transport_send(QmpTransport *t, const char *data, gsize len, GUnixFDList *fds)
{
    OutMessage *msg;

    if (!t->open)
        return;
    msg = g_new0(OutMessage, 1);
    msg->data = g_memdup2(data, len);
    msg->len = len;
    msg->fds = fds ? g_object_ref(fds) : NULL;
    g_queue_push_tail(&t->outq, msg);

    if (t->write_source)
        return; /* already waiting for the socket; keeps the queue in order */
    qmp_transport_ref(t);
    if (flush(t) && !g_queue_is_empty(&t->outq)) {
        t->write_source = g_socket_create_source(t->socket, G_IO_OUT, NULL);
        g_source_set_callback(t->write_source, G_SOURCE_FUNC(on_writable), t, NULL);
        g_source_attach(t->write_source, t->context);
    }
    qmp_transport_unref(t);
}
