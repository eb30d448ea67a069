/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Helpers for libqmp's asynchronous calls in tests (see async-result.h). */
#include "async-result.h"

void on_async_done(GObject *source, GAsyncResult *result, gpointer user_data)
{
    AsyncResult *r = user_data;

    (void)source;
    r->reply = qmp_client_execute_finish(NULL, result, &r->error);
    r->done = TRUE;
}

void async_result_clear(AsyncResult *r)
{
    json_object_put(r->reply);
    g_clear_error(&r->error);
}

void iterate_until(gboolean *flag, guint seconds)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)seconds * G_USEC_PER_SEC;

    while (!*flag) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_main_context_iteration(NULL, TRUE);
    }
}
