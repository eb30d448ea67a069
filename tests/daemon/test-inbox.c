/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The daemon's inbox (sidecar/daemon/post.c) under many posting threads: every post runs once,
 * on the main thread, in each poster's order. Built with -Db_sanitize=thread it is also the
 * check that the hand-off's annotations order a post's writes before the main thread reads
 * them (a race there made CI's TSan run of the daemon fail). */
#include <glib.h>
#include <string.h>

#include "post.h"

#define POSTERS 4
#define POSTS 20000
#define ROUNDS 20 /* the race the TSan build looks for shows in about one round of five */

typedef struct {
    guint poster, seq;
    guint64 payload; /* written by the poster before posting, read by the main thread */
} Item;

static guint next_seq[POSTERS];
static guint ran;

static gboolean run_item(gpointer data)
{
    Item *it = data;
    g_assert_true(g_main_context_is_owner(g_main_context_default()));
    g_assert_cmpuint(it->payload, ==, (guint64)it->poster * POSTS + it->seq);
    g_assert_cmpuint(it->seq, ==, next_seq[it->poster]);
    next_seq[it->poster]++;
    ran++;
    return G_SOURCE_REMOVE;
}

typedef struct {
    Inbox *inbox;
    guint id;
} Poster;

static gpointer poster(gpointer data)
{
    Inbox *inbox = ((Poster *)data)->inbox;
    guint id = ((Poster *)data)->id;
    for (guint i = 0; i < POSTS; i++) {
        Item *it = g_new(Item, 1);
        it->poster = id;
        it->seq = i;
        it->payload = (guint64)id * POSTS + i;
        inbox_post(inbox, run_item, it, g_free);
    }
    return NULL;
}

static void one_round(void)
{
    memset(next_seq, 0, sizeof next_seq);
    ran = 0;
    GMainContext *main_ctx = g_main_context_default();
    g_assert_true(g_main_context_acquire(main_ctx));
    Inbox *inbox = inbox_new(main_ctx);
    GThread *threads[POSTERS];
    Poster args[POSTERS];
    for (guint i = 0; i < POSTERS; i++) {
        args[i] = (Poster){.inbox = inbox, .id = i};
        threads[i] = g_thread_new("poster", poster, &args[i]);
    }
    /* Drained while they post, as the daemon's main loop does. */
    while (ran < POSTERS * POSTS)
        g_main_context_iteration(main_ctx, TRUE);
    for (guint i = 0; i < POSTERS; i++)
        g_thread_join(threads[i]);
    while (g_main_context_pending(main_ctx)) /* the last wake-ups find it empty */
        g_main_context_iteration(main_ctx, FALSE);
    inbox_free(inbox);
    g_assert_cmpuint(ran, ==, POSTERS * POSTS);
    g_main_context_release(main_ctx);
}

static void test_many_posters(void)
{
    for (guint r = 0; r < ROUNDS; r++)
        one_round();
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/inbox/many-posters", test_many_posters);
    return g_test_run();
}
