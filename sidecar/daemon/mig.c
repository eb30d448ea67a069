/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: one migration (mig.h). The engine runs on the VM's worker and reports each
 * event from there; the event crosses to the main thread as text (json-c's reference counts
 * are not atomic), joins the history replayed to late followers, feeds the metrics and goes
 * to every follower. */
#include "mig.h"

#include <unistd.h>

typedef struct {
    Client *client;
    json_object *id; /* the request id, or NULL */
} Follower;

static void follower_free(gpointer p)
{
    Follower *f = p;
    client_unref(f->client);
    if (f->id)
        json_object_put(f->id);
    g_free(f);
}

void mig_add_follower(Mig *mig, Client *c, json_object *id)
{
    ASSERT_MAIN();
    Follower *f = g_new0(Follower, 1);
    f->client = client_ref(c);
    f->id = id ? json_object_get(id) : NULL;
    g_ptr_array_add(mig->followers, f);
}

static json_object *wrap_event(Mig *mig, json_object *id, json_object *event)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_get(id));
    json_object_object_add(o, "migration", json_object_new_string(mig->id));
    json_object_object_add(o, "vm", json_object_new_string(mig->vm->name));
    json_object_object_add(o, "event", json_object_get(event));
    return o;
}

typedef struct {
    Mig *mig;
    char *text;
} MigEvent;

static void mig_event_free(gpointer p)
{
    g_free(((MigEvent *)p)->text);
    g_free(p);
}

/* Keeps the event; the history replayed to late followers keeps every event but only the
 * latest of a run of progress ticks: a long migration does not grow it every second. */
static void record_event(Mig *mig, json_object *event, const char *name, const char *text)
{
    json_object *prev =
        mig->events->len ? g_ptr_array_index(mig->events, mig->events->len - 1) : NULL;
    if (g_strcmp0(name, SM_EVENT_PROGRESS) == 0 &&
        g_strcmp0(qmp_json_string(prev, SM_EVENT_KEY_EVENT), SM_EVENT_PROGRESS) == 0)
        g_ptr_array_remove_index(mig->events, mig->events->len - 1);
    g_ptr_array_add(mig->events, event);
    metrics_observe_event(mig->vm->host->metrics, event);
    if (g_strcmp0(name, SM_EVENT_HOLD) == 0 || g_strcmp0(name, SM_EVENT_RESULT) == 0 ||
        g_strcmp0(name, SM_EVENT_ATTEMPT) == 0 || g_strcmp0(name, SM_EVENT_FIX_FALLBACK) == 0)
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", mig->vm->name, "SM_MIGRATION",
                         mig->id, "MESSAGE", "%s: %s %s", mig->id, name, text);
}

static gboolean deliver_event(gpointer p)
{
    MigEvent *me = p;
    Mig *mig = me->mig;
    ASSERT_MAIN();
    json_object *event = json_tokener_parse(me->text);
    if (!event)
        return G_SOURCE_REMOVE;
    record_event(mig, event, qmp_json_string(event, SM_EVENT_KEY_EVENT), me->text);
    /* A send may drop a slow client, which edits the follower list: walk a copy. */
    g_autoptr(GPtrArray) followers = g_ptr_array_new_with_free_func(follower_free);
    for (guint i = 0; i < mig->followers->len; i++) {
        Follower *f = g_ptr_array_index(mig->followers, i);
        Follower *copy = g_new0(Follower, 1);
        copy->client = client_ref(f->client);
        copy->id = f->id ? json_object_get(f->id) : NULL;
        g_ptr_array_add(followers, copy);
    }
    for (guint i = 0; i < followers->len; i++) {
        Follower *f = g_ptr_array_index(followers, i);
        if (client_is_open(f->client))
            client_send(f->client, wrap_event(mig, f->id, event));
    }
    return G_SOURCE_REMOVE;
}

/* The engine's event callback: on the VM's worker thread. */
static void event_from_worker(json_object *event, gpointer data)
{
    Mig *mig = data;
    ASSERT_WORKER(mig->vm);
    MigEvent *me = g_new0(MigEvent, 1);
    me->mig = mig;
    me->text = g_strdup(json_object_to_json_string_ext(event, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
    inbox_post(mig->vm->host->inbox, deliver_event, me, mig_event_free);
}

/* The owner mark of a migration (written and removed on the main thread). */
static void mark(Mig *mig)
{
    ASSERT_MAIN();
    g_autofree char *text = g_strdup_printf("%d %s\n", (int)getpid(), mig->id);
    g_autoptr(GError) error = NULL;
    if (!g_file_set_contents(mig->vm->marker, text, -1, &error))
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "SM_VM", mig->vm->name, "MESSAGE",
                         "%s: cannot mark migration %s as ours (a crash now would leave the VM "
                         "to `safe-migrate recover`): %s",
                         mig->vm->name, mig->id, error->message);
}

static void unmark(Mig *mig)
{
    ASSERT_MAIN();
    g_autofree char *text = NULL;
    g_autofree char *mine = g_strdup_printf("%d %s\n", (int)getpid(), mig->id);
    if (g_file_get_contents(mig->vm->marker, &text, NULL, NULL) && g_str_equal(text, mine))
        unlink(mig->vm->marker);
}

/* The worker ran it (or ended before): main thread. */
static void finished(gpointer data, int exit_code)
{
    Mig *mig = data;
    Vm *vm = mig->vm;
    ASSERT_MAIN();
    mig->done = TRUE;
    mig->exit_code = exit_code;
    unmark(mig);
    g_ptr_array_set_size(mig->followers, 0);
    mig->owner = NULL;
    if (vm->mig == mig)
        vm->mig = NULL;
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", vm->name, "SM_MIGRATION", mig->id,
                     "MESSAGE", "%s: migration %s ended with exit code %d", vm->name, mig->id,
                     exit_code);
    mig->ended(mig, mig->ended_data);
}

Mig *mig_new(Vm *vm, const char *id, const SmPolicy *p, MigEnded ended, gpointer data)
{
    ASSERT_MAIN();
    Mig *mig = g_new0(Mig, 1);
    mig->id = g_strdup(id);
    mig->vm = vm_ref(vm);
    g_mutex_init(&mig->lock);
    mig->events = g_ptr_array_new_with_free_func(json_unref);
    mig->followers = g_ptr_array_new_with_free_func(follower_free);
    mig->on_disconnect = p->on_client_disconnect;
    mig->ended = ended;
    mig->ended_data = data;
    mig->engine = sm_migration_new(p, event_from_worker, mig);
    vm->mig = mig;
    vm->last_mig = mig;
    return mig;
}

void mig_run(Mig *mig)
{
    mark(mig);
    vm_migrate(mig->vm, mig->id, &mig->engine, &mig->lock, finished, mig);
}

void mig_free(Mig *mig)
{
    ASSERT_MAIN();
    if (mig->vm->last_mig == mig)
        mig->vm->last_mig = NULL;
    /* Only a migration whose job never ran still has its engine (it never connected). */
    if (mig->engine)
        sm_migration_free(mig->engine);
    g_mutex_clear(&mig->lock);
    g_ptr_array_unref(mig->events);
    g_ptr_array_unref(mig->followers);
    vm_unref(mig->vm);
    g_free(mig->id);
    g_free(mig);
}

void mig_cancel(Mig *mig, int signum)
{
    ASSERT_MAIN();
    sm_lock(&mig->lock);
    if (mig->engine && !mig->done)
        sm_migration_request_cancel(mig->engine, signum);
    sm_unlock(&mig->lock);
}

void mig_replay(Mig *mig, Client *c, json_object *id)
{
    ASSERT_MAIN();
    for (guint i = 0; i < mig->events->len; i++)
        client_send(c, wrap_event(mig, id, g_ptr_array_index(mig->events, i)));
    if (!mig->done)
        mig_add_follower(mig, c, id);
}

void mig_client_gone(Mig *mig, Client *c)
{
    ASSERT_MAIN();
    for (guint i = mig->followers->len; i-- > 0;)
        if (((Follower *)g_ptr_array_index(mig->followers, i))->client == c)
            g_ptr_array_remove_index(mig->followers, i);
    if (mig->owner != c || mig->done)
        return;
    mig->owner = NULL;
    gboolean cancel = mig->on_disconnect == SM_DISCONNECT_CANCEL;
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", mig->vm->name, "SM_MIGRATION",
                     mig->id, "MESSAGE",
                     "%s: the client that asked for %s went away; on-client-disconnect=%s",
                     mig->vm->name, mig->id, cancel ? "cancel" : "continue");
    if (cancel)
        mig_cancel(mig, 0);
}

gboolean mig_followed_by(Mig *mig, Client *c)
{
    ASSERT_MAIN();
    for (guint i = 0; !mig->done && i < mig->followers->len; i++)
        if (((Follower *)g_ptr_array_index(mig->followers, i))->client == c)
            return TRUE;
    return FALSE;
}

void mig_describe_vm(Vm *vm, json_object *entry)
{
    ASSERT_MAIN();
    Mig *last = vm->last_mig;
    json_object_object_add(entry, "migration", vm->mig ? json_strv(vm->mig->id) : NULL);
    if (!last || !last->done)
        return;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_strv(last->id));
    json_object_object_add(o, "exit_code", json_object_new_int(last->exit_code));
    json_object *result =
        last->events->len ? g_ptr_array_index(last->events, last->events->len - 1) : NULL;
    json_object_object_add(o, "result", json_strv(qmp_json_string(result, "result")));
    json_object_object_add(entry, "last_migration", o);
}
