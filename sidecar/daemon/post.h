/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: work posted to the main thread by the worker threads, run in the order it
 * was posted across all workers (so every VM's events keep their order). */
#pragma once

#include <glib.h>

typedef struct Inbox Inbox;

/* The main thread's inbox, drained on `ctx` (the default context the main thread owns). */
Inbox *inbox_new(GMainContext *ctx);
/* Runs what is still queued, then frees it; main thread, once the workers have exited. */
void inbox_free(Inbox *inbox);
/* Any thread: `func(data)` runs on the main thread, then `destroy(data)`. */
void inbox_post(Inbox *inbox, GSourceFunc func, gpointer data, GDestroyNotify destroy);
