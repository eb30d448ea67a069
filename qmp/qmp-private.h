/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp internals: the transport layer (socket, line framing, fd passing) shared by
 * qmp-client.c and qmp-address.c. Not installed. */
#pragma once

#include "qmp.h"

#include <gio/gunixfdlist.h>

G_BEGIN_DECLS

GError *qmp_error_new_command(const char *klass, const char *desc);

/* Destroys and drops a source if there is one (both the client's timers and the transport's
 * read watch go this way). */
static inline void qmp_destroy_source(GSource **source)
{
    if (*source) {
        g_source_destroy(*source);
        g_source_unref(*source);
        *source = NULL;
    }
}

typedef struct QmpTransport QmpTransport;

/* One complete line, without its terminator ("\n" or "\r\n"); NUL-terminated. */
typedef void (*QmpTransportLineFunc)(QmpTransport *transport, const char *line, gsize len,
                                     gpointer user_data);
/* Called at most once, when the transport fails (EOF, I/O error, oversized line); the
 * transport is already closed. Not called for qmp_transport_close(). */
typedef void (*QmpTransportErrorFunc)(QmpTransport *transport, const GError *error,
                                      gpointer user_data);

QmpTransport *qmp_transport_new(GSocketConnection *connection, GMainContext *context,
                                gsize max_line, QmpTransportLineFunc line_func,
                                QmpTransportErrorFunc error_func, gpointer user_data);
QmpTransport *qmp_transport_ref(QmpTransport *transport);
void qmp_transport_unref(QmpTransport *transport);
void qmp_transport_set_max_line(QmpTransport *transport, gsize max_line);
gboolean qmp_transport_is_open(QmpTransport *transport);
gboolean qmp_transport_can_pass_fds(QmpTransport *transport);
/* Queues `len` bytes; `fds` (may be NULL) travel with the first byte. Failures after
 * queuing are reported through the error callback. */
void qmp_transport_send(QmpTransport *transport, const char *data, gsize len, GUnixFDList *fds);
/* Closes the socket and stops every callback. Idempotent. */
void qmp_transport_close(QmpTransport *transport);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpTransport, qmp_transport_unref)

G_END_DECLS
