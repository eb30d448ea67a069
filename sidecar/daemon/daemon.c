/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the per-host sidecar daemon. It loads vms.d/NAME.conf, watches every VM over a
 * QMP monitor of its own (daemon-vm.c), runs migrations with the same gate engine as the CLI
 * (one worker thread per VM), and serves a JSON-lines control socket (daemon-control.c). */
#include "daemon.h"
#include "sm-config.h" /* SM_VERSION, SM_CONFIG_DIR */

#include <errno.h>
#include <glib-unix.h>
#include <grp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_CONFIG_DIR SM_CONFIG_DIR
#define DEFAULT_SOCKET "/run/safe-migrated/control.sock"
#define MAX_FINISHED 256

/* ---- Small helpers --------------------------------------------------------------------- */

const char *json_str(json_object *obj, const char *key)
{
    json_object *v;
    if (!obj || !json_object_object_get_ex(obj, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

void json_unref(gpointer obj)
{
    json_object_put(obj);
}

json_object *json_strv(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

/* A request's boolean member: absent means `fallback`; anything but true/false (the string
 * "false" above all, which json-c would coerce to true) is refused. */
static gboolean json_flag(json_object *obj, const char *key, gboolean fallback, gboolean *out,
                          GError **error)
{
    json_object *v;
    *out = fallback;
    if (!obj || !json_object_object_get_ex(obj, key, &v))
        return TRUE;
    if (!json_object_is_type(v, json_type_boolean)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"%s\" must be true or false",
                    key);
        return FALSE;
    }
    *out = json_object_get_boolean(v);
    return TRUE;
}

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET ("@..." is abstract). */
void sd_notify_send(const char *state)
{
    const char *path = g_getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof sa.sun_path)
        return;
    gsize len = strlen(path);
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE", "sd_notify: %s",
                         g_strerror(errno));
    close(fd);
}

/* ---- Logging: journald fields under systemd, plain lines otherwise ---------------------- */

static gboolean opt_verbose, log_to_journal;

static GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField *fields, gsize n,
                                   gpointer data)
{
    const char *domain = NULL, *message = NULL;
    for (gsize i = 0; i < n; i++) {
        if (g_str_equal(fields[i].key, "MESSAGE"))
            message = fields[i].value;
        else if (g_str_equal(fields[i].key, "GLIB_DOMAIN"))
            domain = fields[i].value;
    }
    /* --verbose: our own and the layers' debug logs (qmp, sm-*), not GLib's. */
    if ((level & (G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO)) &&
        (!opt_verbose || (domain && g_str_has_prefix(domain, "GLib"))))
        return G_LOG_WRITER_HANDLED;
    if (log_to_journal && g_log_writer_journald(level, fields, n, data) == G_LOG_WRITER_HANDLED)
        return G_LOG_WRITER_HANDLED;
    const char *tag = (level & G_LOG_LEVEL_CRITICAL)  ? "critical"
                      : (level & G_LOG_LEVEL_WARNING) ? "warning"
                      : (level & G_LOG_LEVEL_MESSAGE) ? "notice"
                                                      : "debug";
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format(now, "%H:%M:%S.%f");
    stamp[12] = '\0'; /* milliseconds */
    fprintf(stderr, "%s %s%s%s: %s\n", stamp, tag, domain ? " " : "", domain ? domain : "",
            message ? message : "");
    return G_LOG_WRITER_HANDLED;
}

/* ---- Posting from workers to the main thread, in order ---------------------------------- */

typedef struct {
    GSourceFunc func;
    gpointer data;
    GDestroyNotify destroy;
} Post;

static void run_posts(Daemon *d)
{
    Post *p;
    while ((p = sm_queue_try_pop(d->inbox))) {
        p->func(p->data);
        if (p->destroy)
            p->destroy(p->data);
        g_free(p);
    }
}

static gboolean drain(gpointer data)
{
    run_posts(data);
    return G_SOURCE_REMOVE;
}

void daemon_post(Daemon *d, GSourceFunc func, gpointer data, GDestroyNotify destroy)
{
    Post *p = g_new0(Post, 1);
    p->func = func;
    p->data = data;
    p->destroy = destroy;
    /* One queue for all workers keeps every VM's events in the order they were made; the
     * idle source only wakes the main thread to drain it. */
    sm_queue_push(d->inbox, p);
    GSource *s = g_idle_source_new();
    g_source_set_callback(s, drain, d, NULL);
    g_source_attach(s, d->ctx);
    g_source_unref(s);
}

/* ---- Policies --------------------------------------------------------------------------- */

static void policy_copy(SmPolicy *dst, const SmPolicy *src)
{
    *dst = *src;
    dst->name = g_strdup(src->name);
    dst->file = g_strdup(src->file);
    dst->source_qmp = g_strdup(src->source_qmp);
    dst->dest_qmp = g_strdup(src->dest_qmp);
    dst->uri = g_strdup(src->uri);
    dst->dest_prepare = g_strdup(src->dest_prepare);
    dst->plugin_dir = g_strdup(src->plugin_dir);
}

static void remove_vm(Daemon *d, Vm *vm)
{
    vm->removed = TRUE;
    if (vm->mig)
        return; /* its migration runs on; the VM goes when it ends */
    vm_stop(vm);
    if (g_hash_table_lookup(d->vms, vm->name) == vm)
        g_hash_table_remove(d->vms, vm->name);
}

/* What a member of the socket's group may see of a policy error: where and what kind, never
 * the file's content (a vms.d entry may be a symlink to any file the daemon can read). */
static char *public_policy_error(const GError *e)
{
    static const char *const kinds[] = {
        [SM_POLICY_ERROR_FILE] = "cannot read it",
        [SM_POLICY_ERROR_SYNTAX] = "syntax error",
        [SM_POLICY_ERROR_UNKNOWN_KEY] = "unknown group or key",
        [SM_POLICY_ERROR_VALUE] = "bad value",
        [SM_POLICY_ERROR_MISSING] = "a required key is missing",
    };
    const char *kind = e->domain == SM_POLICY_ERROR && e->code >= 0 &&
                               e->code < (int)G_N_ELEMENTS(kinds) && kinds[e->code]
                           ? kinds[e->code]
                           : "not loaded";
    /* "PATH[:LINE]: ..." -> "PATH[:LINE]" */
    const char *sep = strstr(e->message, ": ");
    g_autofree char *where = sep ? g_strndup(e->message, (gsize)(sep - e->message)) : NULL;
    if (!where || !g_utf8_validate(where, -1, NULL)) {
        g_free(where);
        where = g_strdup("policy");
    }
    return g_strdup_printf("%s: %s (details for root and the daemon's user, and in the log)", where,
                           kind);
}

/* (Re)reads vms.d: new files start a VM, gone files end one (after its migration), changed
 * files take effect for the next migration. A file that does not load keeps the VM's last
 * good policy and is reported (list: config_error; metrics: policy errors). */
static json_object *reload(Daemon *d)
{
    json_object *summary = json_object_new_object();
    json_object *added = json_object_new_array(), *removed = json_object_new_array(),
                *errors = json_object_new_array(), *public_errors = json_object_new_array();
    g_autofree char *dir_path = g_build_filename(d->config_dir, "vms.d", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GDir) dir = g_dir_open(dir_path, 0, &error);
    if (!dir)
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE", "%s", error->message);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    const char *entry;
    while (dir && (entry = g_dir_read_name(dir))) {
        if (entry[0] == '.' || !g_str_has_suffix(entry, ".conf") || strlen(entry) == 5)
            continue;
        g_autofree char *name = g_strndup(entry, strlen(entry) - 5);
        g_hash_table_add(seen, g_strdup(name));
        SmPolicy p;
        sm_policy_init(&p);
        g_autoptr(GError) e = NULL;
        gboolean ok = sm_policy_load(&p, d->config_dir, name, &e);
        if (ok && !p.source_qmp) {
            g_set_error(&e, SM_POLICY_ERROR, SM_POLICY_ERROR_MISSING,
                        "%s: [vm] source-qmp: missing (the daemon watches the VM through it)",
                        p.file);
            ok = FALSE;
        }
        Vm *vm = g_hash_table_lookup(d->vms, name);
        if (vm && vm->removed) /* its file came back while its migration ran */
            vm->removed = FALSE;
        if (!vm) {
            vm = vm_new(d, name);
            g_hash_table_insert(d->vms, g_strdup(name), vm);
            json_object_array_add(added, json_object_new_string(name));
        }
        g_clear_pointer(&vm->config_error, g_free);
        g_clear_pointer(&vm->config_error_public, g_free);
        if (!ok) {
            g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "SM_VM", name, "MESSAGE",
                             "%s: policy not loaded: %s%s", name, e->message,
                             vm->has_policy ? " (keeping the previous one)" : "");
            vm->config_error = g_strdup(e->message);
            vm->config_error_public = public_policy_error(e);
            json_object_array_add(errors, json_object_new_string(e->message));
            json_object_array_add(public_errors, json_object_new_string(vm->config_error_public));
            sm_policy_clear(&p);
            continue;
        }
        gboolean moved = vm->has_policy && (g_strcmp0(vm->policy.source_qmp, p.source_qmp) != 0 ||
                                            g_strcmp0(vm->policy.dest_qmp, p.dest_qmp) != 0);
        sm_policy_clear(&vm->policy);
        vm->policy = p;
        vm->has_policy = TRUE;
        if (!vm->thread)
            vm_start(vm);
        else if (moved)
            vm_set_address(vm, vm->policy.source_qmp, vm->policy.dest_qmp);
    }
    GHashTableIter it;
    gpointer key, value;
    g_autoptr(GPtrArray) gone = g_ptr_array_new();
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, &key, &value))
        if (!g_hash_table_contains(seen, key) && !((Vm *)value)->removed)
            g_ptr_array_add(gone, value);
    for (guint i = 0; i < gone->len; i++) {
        Vm *vm = g_ptr_array_index(gone, i);
        json_object_array_add(removed, json_object_new_string(vm->name));
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", vm->name, "MESSAGE",
                         "%s: policy file gone%s", vm->name,
                         vm->mig ? "; removed once its migration ends" : "; removed");
        remove_vm(d, vm);
    }
    json_object_object_add(summary, "added", added);
    json_object_object_add(summary, "removed", removed);
    json_object_object_add(summary, "errors", errors);
    json_object_object_add(summary, "public_errors", public_errors); /* see reload_for() */
    json_object_object_add(summary, "vms", json_object_new_int((int)g_hash_table_size(d->vms)));
    return summary;
}

/* The reload summary as `c` may see it: members get the errors without file content. */
static json_object *reload_for(Daemon *d, Client *c)
{
    json_object *summary = reload(d);
    json_object *pub = json_object_get(json_object_object_get(summary, "public_errors"));
    json_object_object_del(summary, "public_errors");
    if (c && !client_is_privileged(c))
        json_object_object_add(summary, "errors", json_object_get(pub));
    json_object_put(pub);
    return summary;
}

/* ---- Migrations ------------------------------------------------------------------------ */

static void follower_free(gpointer p)
{
    Follower *f = p;
    client_unref(f->client);
    if (f->id)
        json_object_put(f->id);
    g_free(f);
}

static void mig_free(Mig *mig)
{
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

static json_object *wrap_event(Mig *mig, json_object *id, json_object *event)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_get(id));
    json_object_object_add(o, "migration", json_object_new_string(mig->id));
    json_object_object_add(o, "vm", json_object_new_string(mig->vm->name));
    json_object_object_add(o, "event", json_object_get(event));
    return o;
}

static void add_follower(Mig *mig, Client *c, json_object *id)
{
    Follower *f = g_new0(Follower, 1);
    f->client = client_ref(c);
    f->id = id ? json_object_get(id) : NULL;
    g_ptr_array_add(mig->followers, f);
}

typedef struct {
    Mig *mig;
    char *text;
    int code;
} MigPost;

static void mig_post_free(gpointer p)
{
    g_free(((MigPost *)p)->text);
    g_free(p);
}

static gboolean deliver_event(gpointer p)
{
    MigPost *mp = p;
    Mig *mig = mp->mig;
    Daemon *d = mig->vm->daemon;
    json_object *event = json_tokener_parse(mp->text);
    if (!event)
        return G_SOURCE_REMOVE;
    const char *name = json_str(event, SM_EVENT_KEY_EVENT);
    /* The history replayed to late followers keeps every event but only the latest of a
     * run of progress ticks: a long migration does not grow it every second. */
    json_object *prev =
        mig->events->len ? g_ptr_array_index(mig->events, mig->events->len - 1) : NULL;
    if (g_strcmp0(name, SM_EVENT_PROGRESS) == 0 &&
        g_strcmp0(json_str(prev, SM_EVENT_KEY_EVENT), SM_EVENT_PROGRESS) == 0)
        g_ptr_array_remove_index(mig->events, mig->events->len - 1);
    g_ptr_array_add(mig->events, event);
    metrics_observe_event(&d->metrics, event);
    if (g_strcmp0(name, SM_EVENT_HOLD) == 0 || g_strcmp0(name, SM_EVENT_RESULT) == 0 ||
        g_strcmp0(name, SM_EVENT_ATTEMPT) == 0 || g_strcmp0(name, SM_EVENT_FIX_FALLBACK) == 0)
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", mig->vm->name, "SM_MIGRATION",
                         mig->id, "MESSAGE", "%s: %s %s", mig->id, name, mp->text);
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

void mig_event_from_worker(json_object *event, gpointer data)
{
    Mig *mig = data;
    MigPost *mp = g_new0(MigPost, 1);
    mp->mig = mig;
    mp->text = g_strdup(json_object_to_json_string_ext(event, JSON_C_TO_STRING_PLAIN |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
    daemon_post(mig->vm->daemon, deliver_event, mp, mig_post_free);
}

static guint active_migrations(Daemon *d)
{
    guint n = 0;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value))
        n += !((Mig *)value)->done;
    return n;
}

static gboolean finish_mig(gpointer p)
{
    MigPost *mp = p;
    Mig *mig = mp->mig;
    Vm *vm = mig->vm;
    Daemon *d = vm->daemon;
    ASSERT_MAIN(d);
    mig->done = TRUE;
    mig->exit_code = mp->code;
    mig_unmark(mig);
    g_ptr_array_set_size(mig->followers, 0);
    mig->owner = NULL;
    if (vm->mig == mig)
        vm->mig = NULL;
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", vm->name, "SM_MIGRATION", mig->id,
                     "MESSAGE", "%s: migration %s ended with exit code %d", vm->name, mig->id,
                     mp->code);
    g_queue_push_tail(&d->finished, mig);
    while (g_queue_get_length(&d->finished) > MAX_FINISHED) {
        Mig *old = g_queue_pop_head(&d->finished);
        if (old->vm->last_mig == old)
            old->vm->last_mig = NULL;
        g_hash_table_remove(d->migrations, old->id);
        mig_free(old);
    }
    if (vm->removed)
        remove_vm(d, vm);
    if (d->stopping && active_migrations(d) == 0)
        g_main_loop_quit(d->loop);
    return G_SOURCE_REMOVE;
}

void mig_finished_from_worker(Mig *mig, int exit_code)
{
    MigPost *mp = g_new0(MigPost, 1);
    mp->mig = mig;
    mp->code = exit_code;
    daemon_post(mig->vm->daemon, finish_mig, mp, mig_post_free);
}

void mig_cancel(Mig *mig, int signum)
{
    ASSERT_MAIN(mig->vm->daemon);
    sm_lock(&mig->lock);
    if (mig->engine && !mig->done)
        sm_migration_request_cancel(mig->engine, signum);
    sm_unlock(&mig->lock);
}

void mig_mark(Mig *mig)
{
    g_autofree char *text = g_strdup_printf("%d %s\n", (int)getpid(), mig->id);
    g_autoptr(GError) error = NULL;
    if (!g_file_set_contents(mig->vm->marker, text, -1, &error))
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "SM_VM", mig->vm->name, "MESSAGE",
                         "%s: cannot mark migration %s as ours (a crash now would leave the VM "
                         "to `safe-migrate recover`): %s",
                         mig->vm->name, mig->id, error->message);
}

void mig_unmark(Mig *mig)
{
    g_autofree char *text = NULL;
    g_autofree char *mine = g_strdup_printf("%d %s\n", (int)getpid(), mig->id);
    if (g_file_get_contents(mig->vm->marker, &text, NULL, NULL) && g_str_equal(text, mine))
        unlink(mig->vm->marker);
}

void daemon_client_gone(Daemon *d, Client *c)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Mig *mig = value;
        for (guint i = mig->followers->len; i-- > 0;)
            if (((Follower *)g_ptr_array_index(mig->followers, i))->client == c)
                g_ptr_array_remove_index(mig->followers, i);
        if (mig->owner != c || mig->done)
            continue;
        mig->owner = NULL;
        gboolean cancel = mig->on_disconnect == SM_DISCONNECT_CANCEL;
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", mig->vm->name, "SM_MIGRATION",
                         mig->id, "MESSAGE",
                         "%s: the client that asked for %s went away; on-client-disconnect=%s",
                         mig->vm->name, mig->id, cancel ? "cancel" : "continue");
        if (cancel)
            mig_cancel(mig, 0);
    }
}

gboolean daemon_client_follows(Daemon *d, Client *c)
{
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Mig *mig = value;
        for (guint i = 0; !mig->done && i < mig->followers->len; i++)
            if (((Follower *)g_ptr_array_index(mig->followers, i))->client == c)
                return TRUE;
    }
    return FALSE;
}

/* ---- Requests -------------------------------------------------------------------------- */

static void reply_ok(Client *c, json_object *id, json_object *fields)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_get(id));
    json_object_object_add(o, "ok", json_object_new_boolean(TRUE));
    if (fields) {
        json_object_object_foreach(fields, key, value)
        {
            json_object_object_add(o, key, json_object_get(value));
        }
        json_object_put(fields);
    }
    client_send(c, o);
}

static gint compare_vms(gconstpointer a, gconstpointer b)
{
    return g_strcmp0((*(Vm *const *)a)->name, (*(Vm *const *)b)->name);
}

static GPtrArray *sorted_vms(Daemon *d)
{
    GPtrArray *vms = g_ptr_array_new();
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, NULL, &value))
        g_ptr_array_add(vms, value);
    g_ptr_array_sort(vms, compare_vms);
    return vms;
}

/* Finds the VM named in the request, or replies with the error and returns NULL. */
static Vm *request_vm(Daemon *d, Client *c, json_object *id, json_object *req,
                      gboolean needs_worker)
{
    const char *name = json_str(req, "vm");
    if (!name) {
        client_reply_error(c, id, "bad-request", SM_EXIT_USAGE, "\"vm\" (a string) is required");
        return NULL;
    }
    Vm *vm = g_hash_table_lookup(d->vms, name);
    if (!vm || vm->removed) {
        client_reply_error(c, id, "unknown-vm", SM_EXIT_USAGE, "no VM '%s' (no %s/vms.d/%s.conf)",
                           name, d->config_dir, name);
        return NULL;
    }
    if (needs_worker && !vm->has_policy) {
        client_reply_error(c, id, "policy", SM_EXIT_USAGE, "%s",
                           client_is_privileged(c) ? vm->config_error : vm->config_error_public);
        return NULL;
    }
    if (needs_worker && (vm->mig || vm->job_busy)) {
        client_reply_error(c, id, "busy", SM_EXIT_UNREACHABLE, "%s is busy with %s", name,
                           vm->mig ? vm->mig->id : "a recover");
        return NULL;
    }
    return vm;
}

typedef struct {
    Client *client;
    json_object *id;
    json_object *vms;    /* the reply's array */
    GHashTable *entries; /* VM name -> entry in vms */
    guint remaining;
    gboolean single; /* `status`: one VM, reply {"report": ...} */
} Gather;

static void gather_free(Gather *g)
{
    client_unref(g->client);
    if (g->id)
        json_object_put(g->id);
    json_object_put(g->vms);
    g_hash_table_unref(g->entries);
    g_free(g);
}

static void gather_done(Gather *g)
{
    if (g->single) {
        json_object *entry = json_object_array_get_idx(g->vms, 0);
        json_object *v;
        if (json_object_object_get_ex(entry, "report", &v)) {
            json_object *f = json_object_new_object();
            json_object_object_add(f, "vm", json_object_get(json_object_object_get(entry, "name")));
            json_object_object_add(f, "report", json_object_get(v));
            reply_ok(g->client, g->id, f);
        } else {
            json_object *code = json_object_object_get(entry, "probe_error_code");
            client_reply_error(g->client, g->id, json_object_get_string(code),
                               g_str_equal(json_object_get_string(code), "unreachable")
                                   ? SM_EXIT_UNREACHABLE
                                   : SM_EXIT_FAILURE,
                               "%s", json_str(entry, "probe_error"));
        }
    } else {
        json_object *f = json_object_new_object();
        json_object_object_add(f, "vms", json_object_get(g->vms));
        reply_ok(g->client, g->id, f);
    }
    gather_free(g);
}

static void on_probed(Vm *vm, json_object *report, const GError *error, gpointer data)
{
    Gather *g = data;
    json_object *entry = g_hash_table_lookup(g->entries, vm->name);
    if (report) {
        json_object_object_add(entry, "report", report);
    } else {
        gboolean busy = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_BUSY);
        gboolean migrating = g_error_matches(error, SM_PROBE_ERROR, SM_PROBE_ERROR_MIGRATING);
        gboolean unreachable =
            error->domain != SM_PROBE_ERROR || error->code == SM_PROBE_ERROR_UNREACHABLE;
        json_object_object_add(entry, "probe_error", json_object_new_string(error->message));
        json_object_object_add(entry, "probe_error_code",
                               json_object_new_string(busy          ? "busy"
                                                      : migrating   ? "migrating"
                                                      : unreachable ? "unreachable"
                                                                    : "probe"));
    }
    if (--g->remaining == 0)
        gather_done(g);
}

static void op_list(Daemon *d, Client *c, json_object *id, json_object *req, gboolean single)
{
    Gather *g = g_new0(Gather, 1);
    g->client = client_ref(c);
    g->id = id ? json_object_get(id) : NULL;
    g->vms = json_object_new_array();
    g->entries = g_hash_table_new(g_str_hash, g_str_equal);
    g->single = single;
    gboolean probe = FALSE;
    g_autoptr(GError) error = NULL;
    if (!json_flag(req, "probe", FALSE, &probe, &error)) {
        client_reply_error(c, id, "bad-request", SM_EXIT_USAGE, "%s", error->message);
        gather_free(g);
        return;
    }
    probe = probe || single;
    g_autoptr(GPtrArray) vms = NULL;
    if (single) {
        Vm *vm = request_vm(d, c, id, req, TRUE);
        if (!vm) {
            gather_free(g);
            return;
        }
        vms = g_ptr_array_new();
        g_ptr_array_add(vms, vm);
    } else {
        vms = sorted_vms(d);
    }
    g_autoptr(GPtrArray) to_probe = g_ptr_array_new();
    for (guint i = 0; i < vms->len; i++) {
        Vm *vm = g_ptr_array_index(vms, i);
        if (vm->removed)
            continue;
        json_object *entry = vm_to_json(vm);
        if (!client_is_privileged(c))
            json_object_object_add(entry, "config_error", json_strv(vm->config_error_public));
        json_object_array_add(g->vms, entry);
        g_hash_table_insert(g->entries, vm->name, entry);
        if (probe && vm->thread && !vm->mig && !vm->job_busy)
            g_ptr_array_add(to_probe, vm);
    }
    /* Count first: a probe may complete only on a later main-loop turn, but be safe. */
    g->remaining = to_probe->len + 1;
    for (guint i = 0; i < to_probe->len; i++)
        vm_probe(g_ptr_array_index(to_probe, i), on_probed, g);
    if (--g->remaining == 0)
        gather_done(g);
}

static void op_migrate(Daemon *d, Client *c, json_object *id, json_object *req)
{
    if (d->stopping) {
        client_reply_error(c, id, "stopping", SM_EXIT_UNREACHABLE, "the daemon is stopping");
        return;
    }
    Vm *vm = request_vm(d, c, id, req, TRUE);
    if (!vm)
        return;
    g_autoptr(GError) error = NULL;
    gboolean follow = TRUE;
    if (!json_flag(req, "follow", TRUE, &follow, &error)) {
        client_reply_error(c, id, "bad-request", SM_EXIT_USAGE, "%s", error->message);
        return;
    }
    SmPolicy p;
    policy_copy(&p, &vm->policy);
    json_object *options = NULL;
    json_object_object_get_ex(req, "options", &options);
    if (!privilege_apply_options(client_is_privileged(c), &vm->policy, &p, options, &error) ||
        !sm_policy_check_complete(&p, &error)) {
        gboolean refused = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED);
        client_reply_error(c, id, refused ? "permission-denied" : "usage", SM_EXIT_USAGE, "%s",
                           error->message);
        sm_policy_clear(&p);
        return;
    }
    Mig *mig = g_new0(Mig, 1);
    mig->id = g_strdup_printf("%s-%u", vm->name, ++d->next_migration);
    mig->vm = vm_ref(vm);
    g_mutex_init(&mig->lock);
    mig->events = g_ptr_array_new_with_free_func(json_unref);
    mig->followers = g_ptr_array_new_with_free_func(follower_free);
    mig->on_disconnect = p.on_client_disconnect;
    mig->engine = sm_migration_new(&p, mig_event_from_worker, mig);
    sm_policy_clear(&p);
    g_hash_table_insert(d->migrations, mig->id, mig);
    vm->mig = mig;
    vm->last_mig = mig;
    /* The queued probe would only run after the migration: answer it now. */
    g_autofree char *why = g_strdup_printf("%s is busy with %s", vm->name, mig->id);
    vm_cancel_queued_probe(vm, why);
    /* "follow": false is fire-and-forget: no events, and leaving does not count. */
    if (follow) {
        mig->owner = c;
        add_follower(mig, c, id);
    }
    json_object *f = json_object_new_object();
    json_object_object_add(f, "migration", json_object_new_string(mig->id));
    json_object_object_add(f, "vm", json_object_new_string(vm->name));
    reply_ok(c, id, f);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", vm->name, "SM_MIGRATION", mig->id,
                     "MESSAGE", "%s: migration %s requested", vm->name, mig->id);
    mig_mark(mig);
    vm_migrate(vm, mig);
}

/* The migration named by "migration", or the VM's latest by "vm". */
static Mig *request_mig(Daemon *d, Client *c, json_object *id, json_object *req)
{
    const char *mid = json_str(req, "migration");
    Mig *mig = NULL;
    if (mid) {
        mig = g_hash_table_lookup(d->migrations, mid);
        if (!mig)
            client_reply_error(c, id, "unknown-migration", SM_EXIT_USAGE, "no migration '%s'", mid);
        return mig;
    }
    Vm *vm = request_vm(d, c, id, req, FALSE);
    if (vm && !(mig = vm->last_mig))
        client_reply_error(c, id, "unknown-migration", SM_EXIT_USAGE, "%s has no migration",
                           vm->name);
    return mig;
}

static void op_follow(Daemon *d, Client *c, json_object *id, json_object *req)
{
    Mig *mig = request_mig(d, c, id, req);
    if (!mig)
        return;
    json_object *f = json_object_new_object();
    json_object_object_add(f, "migration", json_object_new_string(mig->id));
    json_object_object_add(f, "vm", json_object_new_string(mig->vm->name));
    json_object_object_add(f, "done", json_object_new_boolean(mig->done));
    reply_ok(c, id, f);
    /* What happened so far, then live: the follower sees the same sequence as the owner. */
    for (guint i = 0; i < mig->events->len; i++)
        client_send(c, wrap_event(mig, id, g_ptr_array_index(mig->events, i)));
    if (!mig->done)
        add_follower(mig, c, id);
}

static void op_cancel(Daemon *d, Client *c, json_object *id, json_object *req)
{
    Mig *mig = request_mig(d, c, id, req);
    if (!mig)
        return;
    if (mig->done) {
        client_reply_error(c, id, "finished", SM_EXIT_FAILURE,
                           "migration %s already ended (exit code %d)", mig->id, mig->exit_code);
        return;
    }
    json_object *sig = NULL;
    gboolean has_sig = json_object_object_get_ex(req, "signal", &sig);
    int signum = has_sig && json_object_is_type(sig, json_type_int) ? json_object_get_int(sig) : 0;
    if ((has_sig && !json_object_is_type(sig, json_type_int)) ||
        (signum != 0 && signum != SIGINT && signum != SIGTERM)) {
        client_reply_error(c, id, "bad-request", SM_EXIT_USAGE,
                           "\"signal\" is 0, %d (SIGINT) or %d (SIGTERM)", SIGINT, SIGTERM);
        return;
    }
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", mig->vm->name, "SM_MIGRATION",
                     mig->id, "MESSAGE", "%s: cancel requested for %s", mig->vm->name, mig->id);
    mig_cancel(mig, signum);
    json_object *f = json_object_new_object();
    json_object_object_add(f, "migration", json_object_new_string(mig->id));
    reply_ok(c, id, f);
}

typedef struct {
    Client *client;
    json_object *id;
} Pending;

static void on_recovered(Vm *vm, json_object *result, const GError *error, gpointer data)
{
    Pending *p = data;
    vm->job_busy = FALSE;
    if (result) {
        json_object_object_add(result, "vm", json_object_new_string(vm->name));
        reply_ok(p->client, p->id, result);
    } else {
        client_reply_error(p->client, p->id, "unreachable", SM_EXIT_UNREACHABLE, "%s",
                           error->message);
    }
    client_unref(p->client);
    if (p->id)
        json_object_put(p->id);
    g_free(p);
}

static void op_recover(Daemon *d, Client *c, json_object *id, json_object *req)
{
    Vm *vm = request_vm(d, c, id, req, TRUE);
    if (!vm)
        return;
    Pending *p = g_new0(Pending, 1);
    p->client = client_ref(c);
    p->id = id ? json_object_get(id) : NULL;
    vm->job_busy = TRUE;
    vm_recover(vm, on_recovered, p);
}

void daemon_handle_request(Daemon *d, Client *c, json_object *req)
{
    json_object *id = NULL;
    json_object_object_get_ex(req, "id", &id);
    const char *op = json_str(req, "op");
    if (!op) {
        client_reply_error(c, id, "bad-request", SM_EXIT_USAGE, "\"op\" (a string) is required");
    } else if (g_str_equal(op, "list")) {
        op_list(d, c, id, req, FALSE);
    } else if (g_str_equal(op, "status")) {
        op_list(d, c, id, req, TRUE);
    } else if (g_str_equal(op, "migrate")) {
        op_migrate(d, c, id, req);
    } else if (g_str_equal(op, "follow")) {
        op_follow(d, c, id, req);
    } else if (g_str_equal(op, "cancel")) {
        op_cancel(d, c, id, req);
    } else if (g_str_equal(op, "recover")) {
        op_recover(d, c, id, req);
    } else if (g_str_equal(op, "reload")) {
        reply_ok(c, id, reload_for(d, c));
    } else if (g_str_equal(op, "metrics")) {
        g_autofree char *text = metrics_render(d);
        json_object *f = json_object_new_object();
        json_object_object_add(f, "text", json_object_new_string(text));
        reply_ok(c, id, f);
    } else if (g_str_equal(op, "hello")) {
        json_object *f = json_object_new_object();
        json_object_object_add(f, "daemon", json_object_new_string("safe-migrated"));
        json_object_object_add(f, "version", json_object_new_string(SM_VERSION));
        json_object_object_add(f, "pid", json_object_new_int(getpid()));
        json_object_object_add(f, "vms", json_object_new_int((int)g_hash_table_size(d->vms)));
        json_object_object_add(f, "metrics_port",
                               d->metrics_listener ? json_object_new_int((int)d->metrics_port)
                                                   : NULL);
        reply_ok(c, id, f);
    } else {
        client_reply_error(c, id, "unknown-op", SM_EXIT_USAGE,
                           "unknown op '%s' (hello, list, status, migrate, follow, cancel, "
                           "recover, reload, metrics)",
                           op);
    }
}

/* ---- Signals and main ------------------------------------------------------------------ */

/* The unit's TimeoutStopSec= is 90 s: the daemon never waits for its migrations longer than
 * this, and leaves what is still running to the next start (their owner marks stay, so the
 * VMs are recovered then) rather than be killed mid-way by systemd. */
#define STOP_DEADLINE_MS 60000

static gboolean on_stop_deadline(gpointer data)
{
    Daemon *d = data;
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE",
                     "stopping: %u migration(s) did not end within %d s; exiting anyway, the next "
                     "start recovers their VMs",
                     active_migrations(d), STOP_DEADLINE_MS / 1000);
    d->stop_expired = TRUE;
    g_main_loop_quit(d->loop);
    return G_SOURCE_REMOVE;
}

static gboolean on_stop_signal(gpointer data)
{
    Daemon *d = data;
    if (d->stopping)
        return G_SOURCE_CONTINUE;
    d->stopping = TRUE;
    sd_notify_send("STOPPING=1");
    guint active = active_migrations(d);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE",
                     "stopping: calling off %u running migration(s)", active);
    control_close(d);
    /* Every running migration is called off (the VM stays on the source) and reports its
     * result to its followers before the daemon goes. */
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value))
        mig_cancel(value, SIGTERM);
    if (active == 0)
        g_main_loop_quit(d->loop);
    else
        g_timeout_add(STOP_DEADLINE_MS, on_stop_deadline, d);
    return G_SOURCE_CONTINUE;
}

static gboolean on_hup(gpointer data)
{
    Daemon *d = data;
    g_autofree char *reloading =
        g_strdup_printf("RELOADING=1\nMONOTONIC_USEC=%" G_GINT64_FORMAT, g_get_monotonic_time());
    sd_notify_send(reloading);
    g_autoptr(json_object) summary = reload_for(d, NULL);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE", "reloaded: %s",
                     json_object_to_json_string_ext(summary, JSON_C_TO_STRING_PLAIN));
    sd_notify_send("READY=1");
    return G_SOURCE_CONTINUE;
}

static char *opt_config_dir, *opt_socket, *opt_socket_mode, *opt_socket_group, *opt_metrics,
    *opt_reconnect_max, *opt_refresh, *opt_client_idle;
static gboolean opt_version;

static const GOptionEntry entries[] = {
    {"config-dir", 'c', 0, G_OPTION_ARG_FILENAME, &opt_config_dir,
     "Policy directory (defaults.conf, vms.d/NAME.conf; default " DEFAULT_CONFIG_DIR ")", "DIR"},
    {"socket", 's', 0, G_OPTION_ARG_FILENAME, &opt_socket,
     "Control socket (default " DEFAULT_SOCKET ")", "PATH"},
    {"socket-mode", 0, 0, G_OPTION_ARG_STRING, &opt_socket_mode,
     "0600 (owner only) or 0660 (owner and group; the default)", "MODE"},
    {"socket-group", 0, 0, G_OPTION_ARG_STRING, &opt_socket_group,
     "Group allowed on the socket (default: the daemon's group)", "GROUP"},
    {"metrics-listen", 0, 0, G_OPTION_ARG_STRING, &opt_metrics,
     "Serve Prometheus metrics over HTTP on HOST:PORT (e.g. 127.0.0.1:9187)", "HOST:PORT"},
    {"reconnect-max", 0, 0, G_OPTION_ARG_STRING, &opt_reconnect_max,
     "Longest wait between reconnects to a VM's QMP (default 10s)", "DURATION"},
    {"refresh", 0, 0, G_OPTION_ARG_STRING, &opt_refresh,
     "Re-read each VM's devices this often besides on events (default 60s)", "DURATION"},
    {"client-idle-timeout", 0, 0, G_OPTION_ARG_STRING, &opt_client_idle,
     "Close control clients that are idle and follow nothing this long (default 5min)", "DURATION"},
    {"verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "Debug logs", NULL},
    {"version", 0, 0, G_OPTION_ARG_NONE, &opt_version, "Print the version and exit", NULL},
    G_OPTION_ENTRY_NULL,
};

static gboolean parse_ms(const char *flag, const char *text, guint fallback, guint *out,
                         GError **error)
{
    gint64 ms = fallback;
    g_autoptr(GError) local = NULL;
    if (text && !sm_parse_duration_full(text, 0, &ms, &local)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--%s: %s", flag,
                    local->message);
        return FALSE;
    }
    if (ms <= 0) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--%s: '%s': give a duration above 0", flag, text);
        return FALSE;
    }
    *out = (guint)ms;
    return TRUE;
}

static gboolean configure(Daemon *d, GError **error)
{
    d->config_dir = g_strdup(opt_config_dir ? opt_config_dir : DEFAULT_CONFIG_DIR);
    d->socket_path = g_strdup(opt_socket ? opt_socket : DEFAULT_SOCKET);
    if (!g_file_test(d->config_dir, G_FILE_TEST_IS_DIR)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "configuration directory %s does not exist", d->config_dir);
        return FALSE;
    }
    d->socket_mode = 0660;
    if (opt_socket_mode) {
        if (g_str_equal(opt_socket_mode, "0600") || g_str_equal(opt_socket_mode, "600"))
            d->socket_mode = 0600;
        else if (!g_str_equal(opt_socket_mode, "0660") && !g_str_equal(opt_socket_mode, "660")) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--socket-mode: '%s' is neither 0600 nor 0660", opt_socket_mode);
            return FALSE;
        }
    }
    d->socket_gid = getegid();
    if (opt_socket_group) {
        struct group *gr = getgrnam(opt_socket_group);
        if (!gr) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--socket-group: no group '%s'", opt_socket_group);
            return FALSE;
        }
        d->socket_gid = gr->gr_gid;
    }
    return parse_ms("reconnect-max", opt_reconnect_max, 10000, &d->reconnect_max_ms, error) &&
           parse_ms("refresh", opt_refresh, 60000, &d->refresh_ms, error) &&
           parse_ms("client-idle-timeout", opt_client_idle, 300000, &d->client_idle_ms, error);
}

int main(int argc, char **argv)
{
    sm_setlocale();
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the safe-migrate host daemon");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_summary(
        ctx, "Watches the VMs of vms.d/*.conf over QMP and migrates them through the gate on\n"
             "request, over a JSON-lines control socket (see README, \"Daemon\").\n"
             "SIGHUP reloads the policies; SIGTERM calls running migrations off and exits.\n"
             "Exit codes: 0 stopped on a signal, 1 cannot listen, 2 usage or configuration error.");
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc > 1) {
        g_printerr("safe-migrated: %s\n", error ? error->message : "unexpected argument");
        return SM_EXIT_USAGE;
    }
    if (opt_version) {
        printf("safe-migrated %s\n", SM_VERSION);
        return SM_EXIT_OK;
    }
    log_to_journal = g_log_writer_is_journald(fileno(stderr));
    g_log_set_writer_func(log_writer, NULL, NULL);
    signal(SIGPIPE, SIG_IGN);
    daemon_raise_fd_limit();

    Daemon *d = g_new0(Daemon, 1);
    if (!configure(d, &error)) {
        g_printerr("safe-migrated: %s\n", error->message);
        return SM_EXIT_USAGE;
    }
    d->ctx = g_main_context_default();
    /* Held for the daemon's whole life: ASSERT_MAIN checks it. */
    g_main_context_acquire(d->ctx);
    g_autofree char *sock_dir = g_path_get_dirname(d->socket_path);
    d->state_dir = g_build_filename(sock_dir, "migrations", NULL);
    if (g_mkdir_with_parents(d->state_dir, 0700) != 0)
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE", "%s: %s", d->state_dir,
                         g_strerror(errno));
    d->loop = g_main_loop_new(d->ctx, FALSE);
    d->vms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)vm_unref);
    d->migrations = g_hash_table_new(g_str_hash, g_str_equal);
    d->inbox = g_async_queue_new();
    metrics_init(&d->metrics);

    if (!control_listen(d, &error) || (opt_metrics && !metrics_listen(d, opt_metrics, &error))) {
        g_printerr("safe-migrated: %s\n", error->message);
        control_close(d);
        return SM_EXIT_FAILURE;
    }
    g_autoptr(json_object) summary = reload(d);
    guint sig_term = g_unix_signal_add(SIGTERM, on_stop_signal, d);
    guint sig_int = g_unix_signal_add(SIGINT, on_stop_signal, d);
    guint sig_hup = g_unix_signal_add(SIGHUP, on_hup, d);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE",
                     "listening on %s (mode %04o), %u VM(s) from %s/vms.d, %u policy error(s)",
                     d->socket_path, d->socket_mode, g_hash_table_size(d->vms), d->config_dir,
                     (guint)json_object_array_length(json_object_object_get(summary, "errors")));
    g_autofree char *ready = g_strdup_printf("READY=1\nSTATUS=serving %u VMs\nMAINPID=%d",
                                             g_hash_table_size(d->vms), (int)getpid());
    sd_notify_send(ready);

    g_main_loop_run(d->loop);
    if (d->stop_expired) {
        /* Workers are stuck in their migrations: no join, no cleanup; the marks stay. */
        control_drop_clients(d);
        return SM_EXIT_FAILURE;
    }

    /* Migrations have ended (on_stop_signal waits for them): the workers can go. */
    g_source_remove(sig_term);
    g_source_remove(sig_int);
    g_source_remove(sig_hup);
    control_close(d);
    /* Let followers read the results already queued, then hang up. */
    control_drop_clients(d);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, NULL, &value))
        vm_stop(value);
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Vm *vm = value;
        if (vm->thread) {
            g_thread_join(vm->thread);
            vm->thread = NULL;
        }
    }
    run_posts(d);
    g_hash_table_unref(d->vms);
    GList *migs = g_hash_table_get_values(d->migrations);
    g_list_free_full(migs, (GDestroyNotify)mig_free);
    g_hash_table_unref(d->migrations);
    g_queue_clear(&d->finished);
    metrics_close(d);
    metrics_clear(&d->metrics);
    g_async_queue_unref(d->inbox);
    g_main_loop_unref(d->loop);
    g_free(d->config_dir);
    g_free(d->socket_path);
    g_free(d->state_dir);
    g_free(d);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE", "stopped");
    return SM_EXIT_OK;
}
