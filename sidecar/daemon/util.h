/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated's bottom layer, holding no daemon state: JSON helpers, sd_notify, rate-limited
 * logs, the thread-ownership checks and the hand-offs between threads as TSan should see them.
 * Every other daemon component may use it; it uses none of them. */
#pragma once

#include "qmp-commands.h" /* qmp_json_string: a string member, or NULL */

#include <glib.h>
#include <json-c/json.h>

/* ---- JSON ------------------------------------------------------------------------------ */

void json_unref(gpointer obj);         /* json_object_put as a GDestroyNotify */
json_object *json_strv(const char *s); /* NULL-safe json string */
/* A request's boolean member: absent means `fallback`; anything but true/false (the string
 * "false" above all, which json-c would coerce to true) is refused. */
gboolean json_flag(json_object *obj, const char *key, gboolean fallback, gboolean *out,
                   GError **error);

/* ---- Logging and systemd --------------------------------------------------------------- */

/* sd_notify(3) without libsystemd. */
void sd_notify_send(const char *state);

/* At most one message per 10 s; the rest are counted and the count logged with the next. */
typedef struct {
    gint64 last_us;
    guint suppressed;
} RateLimit;
void ratelimit_log(RateLimit *rl, GLogLevelFlags level, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* ---- Threads --------------------------------------------------------------------------- */

/* Thread ownership, asserted at every boundary a comment names: the main thread owns the
 * default context (acquired in main() for the daemon's whole life), a VM's worker thread its
 * VM's context (vm.h, ASSERT_WORKER). */
#define ASSERT_MAIN() g_assert(g_main_context_is_owner(g_main_context_default()))

/* Hand-offs between threads go through GLib (GAsyncQueue, GMutex), whose futex-based locks
 * ThreadSanitizer cannot see: these wrappers tell it (a no-op in other builds), so that the
 * TSan run of the daemon tests reports real races only. */
#if defined(__SANITIZE_THREAD__)
#define SM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SM_TSAN 1
#endif
#endif
#ifdef SM_TSAN
#include <sanitizer/tsan_interface.h>
#define TSAN_RELEASE(p) __tsan_release((void *)(p))
#define TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define TSAN_RELEASE(p) ((void)(p))
#define TSAN_ACQUIRE(p) ((void)(p))
#endif
/* The queue's own lock, as TSan should see it: each operation takes and gives it once, on the
 * side of the real lock that keeps the order. A push gives it before the item is visible
 * (given after, a popper could take the item in between and read its fields unordered: a
 * reported race, seen in CI); a pop takes it after it took the item. */
static inline void sm_queue_push(GAsyncQueue *q, gpointer item)
{
    TSAN_ACQUIRE(q);
    TSAN_RELEASE(q);
    g_async_queue_push(q, item);
}
static inline void sm_queue_push_sorted(GAsyncQueue *q, gpointer item, GCompareDataFunc func)
{
    TSAN_ACQUIRE(q);
    TSAN_RELEASE(q);
    g_async_queue_push_sorted(q, item, func, NULL);
}
static inline gpointer sm_queue_try_pop(GAsyncQueue *q)
{
    gpointer item = g_async_queue_try_pop(q);
    TSAN_ACQUIRE(q);
    TSAN_RELEASE(q);
    return item;
}
static inline void sm_lock(GMutex *m)
{
    g_mutex_lock(m);
    TSAN_ACQUIRE(m);
}
static inline void sm_unlock(GMutex *m)
{
    TSAN_RELEASE(m);
    g_mutex_unlock(m);
}
