/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the control requests (hello, list, status, migrate, follow, cancel, recover,
 * reload, metrics), each answered exactly once, and the migration table: what happens when a
 * migration ends, and what a client's leaving means for the migrations it followed. */
#include "daemon.h"
#include "privilege.h"
#include "sm-config.h" /* SM_VERSION */

#include <signal.h>
#include <unistd.h>

#define MAX_FINISHED 256

/* ---- The migration table ---------------------------------------------------------------- */

guint daemon_active_migrations(Daemon *d)
{
    guint n = 0;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value))
        n += !((Mig *)value)->done;
    return n;
}

/* A migration ended (mig.c did its own bookkeeping): the table keeps the latest
 * MAX_FINISHED, a VM whose file went leaves now, and a stopping daemon goes with the last. */
static void migration_ended(Mig *mig, gpointer data)
{
    Daemon *d = data;
    Vm *vm = mig->vm;
    ASSERT_MAIN();
    g_queue_push_tail(&d->finished, mig);
    while (g_queue_get_length(&d->finished) > MAX_FINISHED) {
        Mig *old = g_queue_pop_head(&d->finished);
        g_hash_table_remove(d->migrations, old->id);
        mig_free(old);
    }
    if (vm->removed)
        daemon_remove_vm(d, vm);
    if (d->stopping && daemon_active_migrations(d) == 0)
        g_main_loop_quit(d->loop);
}

static void client_gone(gpointer data, Client *c)
{
    Daemon *d = data;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value))
        mig_client_gone(value, c);
}

static gboolean client_follows(gpointer data, Client *c)
{
    Daemon *d = data;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value))
        if (mig_followed_by(value, c))
            return TRUE;
    return FALSE;
}

char *daemon_render_metrics(gpointer data)
{
    Daemon *d = data;
    MetricsGauges g = {.clients = control_n_clients(d->control)};
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Vm *vm = value;
        g_autoptr(json_object) o = vm_to_json(vm);
        const char *state = qmp_json_string(o, "connection");
        for (guint i = 0; i < SM_CONNECTION_STATES; i++)
            if (g_strcmp0(state, metrics_connection_states[i]) == 0)
                g.vms_by_connection[i]++;
        g.active_migrations += vm->mig != NULL;
        g.policy_errors += vm->config_error != NULL;
    }
    return metrics_render(&d->metrics, &g);
}

/* ---- Requests -------------------------------------------------------------------------- */

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
    const char *name = qmp_json_string(req, "vm");
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
            client_reply_ok(g->client, g->id, f);
        } else {
            json_object *code = json_object_object_get(entry, "probe_error_code");
            client_reply_error(g->client, g->id, json_object_get_string(code),
                               g_str_equal(json_object_get_string(code), "unreachable")
                                   ? SM_EXIT_UNREACHABLE
                                   : SM_EXIT_FAILURE,
                               "%s", qmp_json_string(entry, "probe_error"));
        }
    } else {
        json_object *f = json_object_new_object();
        json_object_object_add(f, "vms", json_object_get(g->vms));
        client_reply_ok(g->client, g->id, f);
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
        mig_describe_vm(vm, entry);
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
    sm_policy_copy(&p, &vm->policy);
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
    g_autofree char *mid = g_strdup_printf("%s-%u", vm->name, ++d->next_migration);
    Mig *mig = mig_new(vm, mid, &p, migration_ended, d);
    sm_policy_clear(&p);
    g_hash_table_insert(d->migrations, mig->id, mig);
    /* The queued probe would only run after the migration: answer it now. */
    g_autofree char *why = g_strdup_printf("%s is busy with %s", vm->name, mig->id);
    vm_cancel_queued_probe(vm, why);
    /* "follow": false is fire-and-forget: no events, and leaving does not count. */
    if (follow) {
        mig->owner = c;
        mig_add_follower(mig, c, id);
    }
    json_object *f = json_object_new_object();
    json_object_object_add(f, "migration", json_object_new_string(mig->id));
    json_object_object_add(f, "vm", json_object_new_string(vm->name));
    client_reply_ok(c, id, f);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SM_VM", vm->name, "SM_MIGRATION", mig->id,
                     "MESSAGE", "%s: migration %s requested", vm->name, mig->id);
    mig_run(mig);
}

/* The migration named by "migration", or the VM's latest by "vm". */
static Mig *request_mig(Daemon *d, Client *c, json_object *id, json_object *req)
{
    const char *mid = qmp_json_string(req, "migration");
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
    client_reply_ok(c, id, f);
    /* What happened so far, then live: the follower sees the same sequence as the owner. */
    mig_replay(mig, c, id);
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
    client_reply_ok(c, id, f);
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
        client_reply_ok(p->client, p->id, result);
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

static void handle_request(gpointer data, Client *c, json_object *req)
{
    Daemon *d = data;
    ASSERT_MAIN();
    json_object *id = NULL;
    json_object_object_get_ex(req, "id", &id);
    const char *op = qmp_json_string(req, "op");
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
        client_reply_ok(c, id, daemon_reload(d, c));
    } else if (g_str_equal(op, "metrics")) {
        g_autofree char *text = daemon_render_metrics(d);
        json_object *f = json_object_new_object();
        json_object_object_add(f, "text", json_object_new_string(text));
        client_reply_ok(c, id, f);
    } else if (g_str_equal(op, "hello")) {
        json_object *f = json_object_new_object();
        json_object_object_add(f, "daemon", json_object_new_string("safe-migrated"));
        json_object_object_add(f, "version", json_object_new_string(SM_VERSION));
        json_object_object_add(f, "pid", json_object_new_int(getpid()));
        json_object_object_add(f, "vms", json_object_new_int((int)g_hash_table_size(d->vms)));
        json_object_object_add(
            f, "metrics_port",
            d->metrics_server ? json_object_new_int((int)metrics_server_port(d->metrics_server))
                              : NULL);
        client_reply_ok(c, id, f);
    } else {
        client_reply_error(c, id, "unknown-op", SM_EXIT_USAGE,
                           "unknown op '%s' (hello, list, status, migrate, follow, cancel, "
                           "recover, reload, metrics)",
                           op);
    }
}

const ControlHandlers daemon_control_handlers = {
    .request = handle_request,
    .gone = client_gone,
    .follows = client_follows,
};
