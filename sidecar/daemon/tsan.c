/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated, ThreadSanitizer builds only (-Db_sanitize=thread): GLib is not instrumented
 * and its GMutex/GCond/GRecMutex are futex-based, so TSan cannot see them and would report
 * every hand-off guarded by one (the engine's cancel, GAsyncQueue) as a race. These wrappers
 * interpose GLib's lock functions (for calls that go through the PLT) and tell TSan what
 * they do; everything else is the real GLib, found with dlsym(RTLD_NEXT). */
#include <dlfcn.h>
#include <glib.h>
#include <sanitizer/tsan_interface.h>

#define REAL(name, type)                                                                           \
    static type real_##name;                                                                       \
    if (!real_##name)                                                                              \
        real_##name = (type)dlsym(RTLD_NEXT, #name);

typedef void (*MutexFn)(GMutex *);
typedef gboolean (*TryFn)(GMutex *);
typedef void (*RecFn)(GRecMutex *);
typedef void (*WaitFn)(GCond *, GMutex *);
typedef gboolean (*WaitUntilFn)(GCond *, GMutex *, gint64);

void g_mutex_lock(GMutex *m)
{
    REAL(g_mutex_lock, MutexFn);
    real_g_mutex_lock(m);
    __tsan_acquire(m);
}

gboolean g_mutex_trylock(GMutex *m)
{
    REAL(g_mutex_trylock, TryFn);
    gboolean got = real_g_mutex_trylock(m);
    if (got)
        __tsan_acquire(m);
    return got;
}

void g_mutex_unlock(GMutex *m)
{
    REAL(g_mutex_unlock, MutexFn);
    __tsan_release(m);
    real_g_mutex_unlock(m);
}

void g_rec_mutex_lock(GRecMutex *m)
{
    REAL(g_rec_mutex_lock, RecFn);
    real_g_rec_mutex_lock(m);
    __tsan_acquire(m);
}

void g_rec_mutex_unlock(GRecMutex *m)
{
    REAL(g_rec_mutex_unlock, RecFn);
    __tsan_release(m);
    real_g_rec_mutex_unlock(m);
}

/* Waiting releases the mutex and takes it again. */
void g_cond_wait(GCond *c, GMutex *m)
{
    REAL(g_cond_wait, WaitFn);
    __tsan_release(m);
    real_g_cond_wait(c, m);
    __tsan_acquire(m);
}

gboolean g_cond_wait_until(GCond *c, GMutex *m, gint64 end_time)
{
    REAL(g_cond_wait_until, WaitUntilFn);
    __tsan_release(m);
    gboolean signalled = real_g_cond_wait_until(c, m, end_time);
    __tsan_acquire(m);
    return signalled;
}
