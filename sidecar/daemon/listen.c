/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: accepting connections without being starved by them. One listener for the
 * control socket and one for the metrics port: accept errors (EMFILE above all) pause the
 * listener with a growing back-off instead of spinning on a readable socket, warnings are
 * rate-limited, and connections are only accepted while the fds reserved for the VMs' own
 * QMP connections stay free. */
#include "listen.h"

#include <sys/resource.h>

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 2000
#define ACCEPTS_PER_WAKEUP 32

struct Listener {
    GSocket *socket;
    char *what; /* "control socket", "metrics port" */
    ListenerAccept func;
    gpointer data;
    GSource *source;
    guint backoff_ms;
    RateLimit errors;
};

/* ---- The fd budget ---------------------------------------------------------------------- */

/* Raises the soft fd limit to the hard one (GLib polls, it never select()s); the unit's
 * LimitNOFILE= sets both. */
void fd_raise_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Whether one more client connection fits next to what the VMs may need: per VM its status
 * connection, a migration's two, a capture's memfd pair, dest-prepare's pipes and its
 * thread's wakeup fd; plus a base for logging, signals and the listeners. */
gboolean fd_budget_allows(const FdUse *use)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return TRUE;
    guint64 reserved = SM_FDS_BASE + (guint64)SM_FDS_PER_VM * use->vms;
    guint64 used = (guint64)use->clients + use->http;
    return rl.rlim_cur > reserved && used + 1 <= rl.rlim_cur - reserved;
}

/* ---- The listener ----------------------------------------------------------------------- */

static gboolean on_ready(GSocket *socket, GIOCondition cond, gpointer data);

static void watch(Listener *l)
{
    l->source = g_socket_create_source(l->socket, G_IO_IN, NULL);
    g_source_set_callback(l->source, G_SOURCE_FUNC(on_ready), l, NULL);
    g_source_attach(l->source, NULL);
}

static gboolean resume(gpointer data)
{
    Listener *l = data;
    g_source_unref(l->source);
    watch(l);
    return G_SOURCE_REMOVE;
}

/* Stops watching the socket for a while: the pending connections wait in the backlog
 * instead of waking us thousands of times a second. */
static void pause_listener(Listener *l, const GError *error)
{
    l->backoff_ms = l->backoff_ms ? MIN(l->backoff_ms * 2, BACKOFF_MAX_MS) : BACKOFF_FIRST_MS;
    ratelimit_log(&l->errors, G_LOG_LEVEL_WARNING, "%s: cannot accept: %s (pausing %u ms)", l->what,
                  error->message, l->backoff_ms);
    g_source_destroy(l->source);
    g_source_unref(l->source);
    l->source = g_timeout_source_new(l->backoff_ms);
    g_source_set_callback(l->source, resume, l, NULL);
    g_source_attach(l->source, NULL);
}

static gboolean on_ready(GSocket *socket, GIOCondition cond, gpointer data)
{
    Listener *l = data;
    (void)cond;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        g_autoptr(GError) error = NULL;
        GSocket *conn = g_socket_accept(socket, NULL, &error);
        if (!conn) {
            if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                return G_SOURCE_CONTINUE;
            pause_listener(l, error);
            return G_SOURCE_REMOVE;
        }
        l->backoff_ms = 0;
        l->func(conn, l->data);
        g_object_unref(conn);
    }
    return G_SOURCE_CONTINUE;
}

Listener *listener_new(GSocket *socket, const char *what, ListenerAccept func, gpointer data)
{
    ASSERT_MAIN();
    Listener *l = g_new0(Listener, 1);
    l->socket = g_object_ref(socket);
    l->what = g_strdup(what);
    l->func = func;
    l->data = data;
    g_socket_set_blocking(socket, FALSE);
    watch(l);
    return l;
}

void listener_free(Listener *l)
{
    if (!l)
        return;
    g_source_destroy(l->source);
    g_source_unref(l->source);
    g_socket_close(l->socket, NULL);
    g_object_unref(l->socket);
    g_free(l->what);
    g_free(l);
}
