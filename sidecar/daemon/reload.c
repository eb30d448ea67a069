/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: reading vms.d (daemon.h). New files start a VM, gone files end one (after
 * its migration), changed files take effect for the next migration; a file that does not load
 * keeps the VM's last good policy and is reported without its content to members. */
#include "daemon.h"

#include <string.h>

void daemon_remove_vm(Daemon *d, Vm *vm)
{
    ASSERT_MAIN();
    vm->removed = TRUE;
    if (vm->mig)
        return; /* its migration runs on; the VM goes when it ends */
    vm_stop(vm);
    if (g_hash_table_lookup(d->vms, vm->name) == vm)
        g_hash_table_remove(d->vms, vm->name);
    d->fds.vms = g_hash_table_size(d->vms);
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

/* Loads vms.d/NAME.conf into the VM of that name (made if new; `added` gets the name). A
 * file that does not load keeps the VM's previous policy; `errors` gets the message and
 * `public_errors` what a member may see of it. */
static void load_vm(Daemon *d, const char *name, json_object *added, json_object *errors,
                    json_object *public_errors)
{
    SmPolicy p;
    sm_policy_init(&p);
    g_autoptr(GError) e = NULL;
    gboolean ok = sm_policy_load(&p, d->config_dir, name, &e);
    if (ok && !p.source_qmp) {
        g_set_error(&e, SM_POLICY_ERROR, SM_POLICY_ERROR_MISSING,
                    "%s: [vm] source-qmp: missing (the daemon watches the VM through it)", p.file);
        ok = FALSE;
    }
    Vm *vm = g_hash_table_lookup(d->vms, name);
    if (vm && vm->removed) /* its file came back while its migration ran */
        vm->removed = FALSE;
    if (!vm) {
        vm = vm_new(&d->host, name);
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
        return;
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

/* VMs whose file is gone leave (after their migration); `removed` gets their names. */
static void drop_unseen(Daemon *d, GHashTable *seen, json_object *removed)
{
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
        daemon_remove_vm(d, vm);
    }
}

/* (Re)reads vms.d; the summary has every error in "errors" and the members' view of them in
 * "public_errors". */
static json_object *reload(Daemon *d)
{
    ASSERT_MAIN();
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
        load_vm(d, name, added, errors, public_errors);
    }
    drop_unseen(d, seen, removed);
    d->fds.vms = g_hash_table_size(d->vms);
    json_object_object_add(summary, "added", added);
    json_object_object_add(summary, "removed", removed);
    json_object_object_add(summary, "errors", errors);
    json_object_object_add(summary, "public_errors", public_errors); /* see daemon_reload() */
    json_object_object_add(summary, "vms", json_object_new_int((int)d->fds.vms));
    return summary;
}

/* Members get the errors without file content. */
json_object *daemon_reload(Daemon *d, Client *c)
{
    json_object *summary = reload(d);
    json_object *pub = json_object_get(json_object_object_get(summary, "public_errors"));
    json_object_object_del(summary, "public_errors");
    if (c && !client_is_privileged(c))
        json_object_object_add(summary, "errors", json_object_get(pub));
    json_object_put(pub);
    return summary;
}
