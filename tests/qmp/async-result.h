/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Helpers for libqmp's asynchronous calls in tests: collect one result, and iterate the
 * default main context until a flag is set, failing the test past a deadline. */
#pragma once

#include "qmp.h"

typedef struct {
    gboolean done;
    json_object *reply;
    GError *error;
} AsyncResult;

/* GAsyncReadyCallback for qmp_client_execute_async; user_data is an AsyncResult. */
void on_async_done(GObject *source, GAsyncResult *result, gpointer user_data);
void async_result_clear(AsyncResult *r);
void iterate_until(gboolean *flag, guint seconds);
