/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the main thread's inbox (post.h). One queue for all workers keeps every VM's
 * events in the order they were made; an idle source only wakes the main thread to drain it. */
#include "post.h"
#include "util.h"

struct Inbox {
    GAsyncQueue *queue; /* Post*, in order */
    GMainContext *ctx;
};

typedef struct {
    GSourceFunc func;
    gpointer data;
    GDestroyNotify destroy;
} Post;

Inbox *inbox_new(GMainContext *ctx)
{
    Inbox *inbox = g_new0(Inbox, 1);
    inbox->queue = g_async_queue_new();
    inbox->ctx = g_main_context_ref(ctx);
    return inbox;
}

static void drain(Inbox *inbox)
{
    ASSERT_MAIN();
    Post *p;
    while ((p = sm_queue_try_pop(inbox->queue))) {
        p->func(p->data);
        if (p->destroy)
            p->destroy(p->data);
        g_free(p);
    }
}

static gboolean on_wakeup(gpointer data)
{
    drain(data);
    return G_SOURCE_REMOVE;
}

void inbox_post(Inbox *inbox, GSourceFunc func, gpointer data, GDestroyNotify destroy)
{
    Post *p = g_new0(Post, 1);
    p->func = func;
    p->data = data;
    p->destroy = destroy;
    sm_queue_push(inbox->queue, p);
    GSource *s = g_idle_source_new();
    g_source_set_callback(s, on_wakeup, inbox, NULL);
    g_source_attach(s, inbox->ctx);
    g_source_unref(s);
}

void inbox_free(Inbox *inbox)
{
    drain(inbox);
    g_async_queue_unref(inbox->queue);
    g_main_context_unref(inbox->ctx);
    g_free(inbox);
}
