/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp typed commands: arguments built and replies type-checked in one place, so that no
 * caller ever dereferences a reply QEMU (or something posing as QEMU) shaped differently. */
#include "qmp-commands.h"

#include <string.h>

static const char *type_name(json_type type)
{
    switch (type) {
    case json_type_null:
        return "null";
    case json_type_boolean:
        return "a boolean";
    case json_type_double:
        return "a number";
    case json_type_int:
        return "an integer";
    case json_type_object:
        return "an object";
    case json_type_array:
        return "an array";
    case json_type_string:
        return "a string";
    }
    return "?";
}

static void set_type_error(GError **error, const char *command, const char *what,
                           json_object *value, json_type expect)
{
    g_set_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL, "QEMU's reply to %s: %s is %s, not %s: %.80s",
                command, what, type_name(json_object_get_type(value)),
                expect == json_type_null ? "a value" : type_name(expect),
                value ? json_object_to_json_string_ext(value, JSON_C_TO_STRING_PLAIN) : "null");
}

gboolean qmp_reply_check(const char *command, json_object *reply, json_type expect, GError **error)
{
    if (expect == json_type_null ? reply != NULL : json_object_is_type(reply, expect))
        return TRUE;
    set_type_error(error, command, "the result", reply, expect);
    return FALSE;
}

json_object *qmp_command_execute(QmpClient *client, const char *command, json_object *args,
                                 const int *fds, guint n_fds, guint timeout_ms, json_type expect,
                                 GError **error)
{
    GError *local = NULL;
    json_object *reply =
        qmp_client_execute_full(client, command, args, fds, n_fds, timeout_ms, &local);

    if (local) {
        json_object_put(reply);
        g_propagate_error(error, local);
        return NULL;
    }
    if (!qmp_reply_check(command, reply, expect, error)) {
        json_object_put(reply);
        return NULL;
    }
    return reply;
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpFdset, qmp_fdset_free)

static json_object *get_member(const char *command, json_object *obj, const char *member,
                               json_type expect, GError **error)
{
    json_object *v = NULL;

    if (!json_object_object_get_ex(obj, member, &v)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL, "QEMU's reply to %s has no \"%s\"",
                    command, member);
        return NULL;
    }
    if (!json_object_is_type(v, expect)) {
        g_autofree char *what = g_strdup_printf("\"%s\"", member);
        set_type_error(error, command, what, v, expect);
        return NULL;
    }
    return v;
}

const char *qmp_reply_get_string(const char *command, json_object *obj, const char *member,
                                 GError **error)
{
    json_object *v = get_member(command, obj, member, json_type_string, error);
    return v ? json_object_get_string(v) : NULL;
}

const char *qmp_json_string(json_object *obj, const char *member)
{
    json_object *v = NULL;
    return obj && json_object_is_type(obj, json_type_object) &&
                   json_object_object_get_ex(obj, member, &v) &&
                   json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

gboolean qmp_reply_get_int(const char *command, json_object *obj, const char *member, gint64 *out,
                           GError **error)
{
    json_object *v = get_member(command, obj, member, json_type_int, error);
    if (v && out)
        *out = json_object_get_int64(v);
    return v != NULL;
}

/* A command whose reply is an empty object (or one whose content we do not use). */
static gboolean run_void(QmpClient *client, const char *command, json_object *args, GError **error)
{
    g_autoptr(json_object) r =
        qmp_command_execute(client, command, args, NULL, 0, 0, json_type_object, error);
    return r != NULL;
}

static json_object *args1(const char *key, json_object *value)
{
    json_object *args = json_object_new_object();
    json_object_object_add(args, key, value);
    return args;
}

/* ---- Queries --------------------------------------------------------------------------- */

char *qmp_query_status(QmpClient *client, gboolean *running, GError **error)
{
    g_autoptr(json_object) r =
        qmp_command_execute(client, "query-status", NULL, NULL, 0, 0, json_type_object, error);
    json_object *run;
    const char *status;

    if (!r || !(status = qmp_reply_get_string("query-status", r, "status", error)))
        return NULL;
    if (running) {
        if (!(run = get_member("query-status", r, "running", json_type_boolean, error)))
            return NULL;
        *running = json_object_get_boolean(run);
    }
    return g_strdup(status);
}

json_object *qmp_query_migrate(QmpClient *client, char **status, GError **error)
{
    g_autoptr(json_object) r =
        qmp_command_execute(client, "query-migrate", NULL, NULL, 0, 0, json_type_object, error);
    const char *s = "none";

    if (!r)
        return NULL;
    /* No "status" at all: QEMU has never migrated this VM. */
    if (json_object_object_get_ex(r, "status", NULL) &&
        !(s = qmp_reply_get_string("query-migrate", r, "status", error)))
        return NULL;
    if (status)
        *status = g_strdup(s);
    return g_steal_pointer(&r);
}

GHashTable *qmp_query_migrate_capabilities(QmpClient *client, GError **error)
{
    const char *cmd = "query-migrate-capabilities";
    g_autoptr(json_object) r =
        qmp_command_execute(client, cmd, NULL, NULL, 0, 0, json_type_array, error);
    g_autoptr(GHashTable) caps = NULL;

    if (!r)
        return NULL;
    caps = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (size_t i = 0; i < json_object_array_length(r); i++) {
        json_object *e = json_object_array_get_idx(r, i), *state;
        const char *name;

        if (!qmp_reply_check(cmd, e, json_type_object, error) ||
            !(name = qmp_reply_get_string(cmd, e, "capability", error)) ||
            !(state = get_member(cmd, e, "state", json_type_boolean, error)))
            return NULL;
        g_hash_table_insert(caps, g_strdup(name),
                            GINT_TO_POINTER(json_object_get_boolean(state) ? 1 : 0));
    }
    return g_steal_pointer(&caps);
}

json_object *qmp_query_migrate_parameters(QmpClient *client, GError **error)
{
    return qmp_command_execute(client, "query-migrate-parameters", NULL, NULL, 0, 0,
                               json_type_object, error);
}

/* ---- QOM ------------------------------------------------------------------------------- */

void qmp_object_property_free(QmpObjectProperty *prop)
{
    if (!prop)
        return;
    g_free(prop->name);
    g_free(prop->type);
    g_free(prop);
}

GPtrArray *qmp_qom_list(QmpClient *client, const char *path, GError **error)
{
    g_autoptr(json_object) args = args1("path", json_object_new_string(path));
    g_autoptr(json_object) r =
        qmp_command_execute(client, "qom-list", args, NULL, 0, 0, json_type_array, error);
    g_autoptr(GPtrArray) props = NULL;

    if (!r)
        return NULL;
    props = g_ptr_array_new_with_free_func((GDestroyNotify)qmp_object_property_free);
    for (size_t i = 0; i < json_object_array_length(r); i++) {
        json_object *e = json_object_array_get_idx(r, i);
        const char *name, *type;
        QmpObjectProperty *prop;

        if (!qmp_reply_check("qom-list", e, json_type_object, error) ||
            !(name = qmp_reply_get_string("qom-list", e, "name", error)) ||
            !(type = qmp_reply_get_string("qom-list", e, "type", error)))
            return NULL;
        prop = g_new0(QmpObjectProperty, 1);
        prop->name = g_strdup(name);
        prop->type = g_strdup(type);
        g_ptr_array_add(props, prop);
    }
    return g_steal_pointer(&props);
}

static json_object *qom_get(QmpClient *client, const char *path, const char *property,
                            json_type expect, GError **error)
{
    g_autoptr(json_object) args = args1("path", json_object_new_string(path));

    json_object_object_add(args, "property", json_object_new_string(property));
    return qmp_command_execute(client, "qom-get", args, NULL, 0, 0, expect, error);
}

json_object *qmp_qom_get(QmpClient *client, const char *path, const char *property, GError **error)
{
    return qom_get(client, path, property, json_type_null, error);
}

char *qmp_qom_get_string(QmpClient *client, const char *path, const char *property, GError **error)
{
    g_autoptr(json_object) r = qom_get(client, path, property, json_type_string, error);
    return r ? g_strdup(json_object_get_string(r)) : NULL;
}

gboolean qmp_qom_get_bool(QmpClient *client, const char *path, const char *property, gboolean *out,
                          GError **error)
{
    g_autoptr(json_object) r = qom_get(client, path, property, json_type_boolean, error);
    if (r && out)
        *out = json_object_get_boolean(r);
    return r != NULL;
}

gboolean qmp_qom_get_int(QmpClient *client, const char *path, const char *property, gint64 *out,
                         GError **error)
{
    g_autoptr(json_object) r = qom_get(client, path, property, json_type_int, error);
    if (r && out)
        *out = json_object_get_int64(r);
    return r != NULL;
}

/* ---- Migration ------------------------------------------------------------------------- */

gboolean qmp_migrate_set_capabilities(QmpClient *client, const QmpCapability *caps, guint n_caps,
                                      GError **error)
{
    json_object *list = json_object_new_array();
    g_autoptr(json_object) args = args1("capabilities", list);

    for (guint i = 0; i < n_caps; i++) {
        json_object *c = args1("capability", json_object_new_string(caps[i].name));
        json_object_object_add(c, "state", json_object_new_boolean(caps[i].state));
        json_object_array_add(list, c);
    }
    return run_void(client, "migrate-set-capabilities", args, error);
}

gboolean qmp_migrate_set_parameters(QmpClient *client, json_object *params, GError **error)
{
    if (!json_object_is_type(params, json_type_object)) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "migrate-set-parameters: the parameters are not an object");
        return FALSE;
    }
    return run_void(client, "migrate-set-parameters", params, error);
}

static gboolean run_uri(QmpClient *client, const char *command, const char *uri, GError **error)
{
    g_autoptr(json_object) args = args1("uri", json_object_new_string(uri));
    return run_void(client, command, args, error);
}

gboolean qmp_migrate(QmpClient *client, const char *uri, GError **error)
{
    return run_uri(client, "migrate", uri, error);
}

gboolean qmp_migrate_incoming(QmpClient *client, const char *uri, GError **error)
{
    return run_uri(client, "migrate-incoming", uri, error);
}

gboolean qmp_migrate_cancel(QmpClient *client, GError **error)
{
    return run_void(client, "migrate_cancel", NULL, error);
}

gboolean qmp_migrate_continue(QmpClient *client, const char *state, GError **error)
{
    g_autoptr(json_object) args = args1("state", json_object_new_string(state));
    return run_void(client, "migrate-continue", args, error);
}

gboolean qmp_cont(QmpClient *client, GError **error)
{
    return run_void(client, "cont", NULL, error);
}

gboolean qmp_stop(QmpClient *client, GError **error)
{
    return run_void(client, "stop", NULL, error);
}

/* ---- File descriptors and device state ------------------------------------------------- */

gboolean qmp_add_fd(QmpClient *client, int fd, gint64 fdset_id, const char *opaque,
                    gint64 *out_fdset_id, gint64 *out_fd, GError **error)
{
    g_autoptr(json_object) args = json_object_new_object();
    g_autoptr(json_object) r = NULL;

    if (fdset_id >= 0)
        json_object_object_add(args, "fdset-id", json_object_new_int64(fdset_id));
    if (opaque)
        json_object_object_add(args, "opaque", json_object_new_string(opaque));
    r = qmp_command_execute(client, "add-fd", args, &fd, 1, 0, json_type_object, error);
    gint64 set = -1, added = -1;
    if (!r || !qmp_reply_get_int("add-fd", r, "fdset-id", &set, error) ||
        !qmp_reply_get_int("add-fd", r, "fd", &added, error))
        return FALSE;
    /* Both name things the caller uses next (/dev/fdset/N, remove-fd): never a negative. */
    if (set < 0 || added < 0) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL,
                    "QEMU's reply to add-fd: fdset-id %" G_GINT64_FORMAT " fd %" G_GINT64_FORMAT
                    " (negative)",
                    set, added);
        return FALSE;
    }
    if (out_fdset_id)
        *out_fdset_id = set;
    if (out_fd)
        *out_fd = added;
    return TRUE;
}

gboolean qmp_remove_fd(QmpClient *client, gint64 fdset_id, GError **error)
{
    g_autoptr(json_object) args = args1("fdset-id", json_object_new_int64(fdset_id));
    return run_void(client, "remove-fd", args, error);
}

void qmp_fdset_free(QmpFdset *set)
{
    if (!set)
        return;
    g_array_unref(set->fds);
    g_ptr_array_unref(set->opaque);
    g_free(set);
}

/* One FdsetInfo: {"fdset-id": int, "fds": [{"fd": int, "opaque"?: str}]}. */
static QmpFdset *fdset_from_json(json_object *e, GError **error)
{
    const char *cmd = "query-fdsets";
    g_autoptr(QmpFdset) set = g_new0(QmpFdset, 1);
    json_object *fds;

    set->fds = g_array_new(FALSE, FALSE, sizeof(gint64));
    set->opaque = g_ptr_array_new_with_free_func(g_free);
    if (!qmp_reply_check(cmd, e, json_type_object, error) ||
        !qmp_reply_get_int(cmd, e, "fdset-id", &set->fdset_id, error) ||
        !(fds = get_member(cmd, e, "fds", json_type_array, error)))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(fds); i++) {
        json_object *f = json_object_array_get_idx(fds, i), *o = NULL;
        gint64 fd;

        if (!qmp_reply_check(cmd, f, json_type_object, error) ||
            !qmp_reply_get_int(cmd, f, "fd", &fd, error))
            return NULL;
        if (json_object_object_get_ex(f, "opaque", &o) &&
            !(o = get_member(cmd, f, "opaque", json_type_string, error)))
            return NULL;
        g_array_append_val(set->fds, fd);
        g_ptr_array_add(set->opaque, o ? g_strdup(json_object_get_string(o)) : NULL);
    }
    return g_steal_pointer(&set);
}

GPtrArray *qmp_query_fdsets(QmpClient *client, GError **error)
{
    g_autoptr(json_object) r =
        qmp_command_execute(client, "query-fdsets", NULL, NULL, 0, 0, json_type_array, error);
    g_autoptr(GPtrArray) sets = NULL;

    if (!r)
        return NULL;
    sets = g_ptr_array_new_with_free_func((GDestroyNotify)qmp_fdset_free);
    for (size_t i = 0; i < json_object_array_length(r); i++) {
        QmpFdset *set = fdset_from_json(json_object_array_get_idx(r, i), error);

        if (!set)
            return NULL;
        g_ptr_array_add(sets, set);
    }
    return g_steal_pointer(&sets);
}

gboolean qmp_getfd(QmpClient *client, int fd, const char *fdname, GError **error)
{
    g_autoptr(json_object) args = args1("fdname", json_object_new_string(fdname));
    g_autoptr(json_object) r =
        qmp_command_execute(client, "getfd", args, &fd, 1, 0, json_type_object, error);
    return r != NULL;
}

gboolean qmp_xen_save_devices_state(QmpClient *client, const char *filename, gboolean live,
                                    GError **error)
{
    g_autoptr(json_object) args = args1("filename", json_object_new_string(filename));
    json_object_object_add(args, "live", json_object_new_boolean(live));
    return run_void(client, "xen-save-devices-state", args, error);
}

/* ---- Decoded replies the gate engine reads ------------------------------------------------ */

/* An optional integer member: -1 when absent. */
static gboolean opt_int(const char *command, json_object *obj, const char *member, gint64 *out,
                        GError **error)
{
    *out = -1;
    return !json_object_object_get_ex(obj, member, NULL) ||
           qmp_reply_get_int(command, obj, member, out, error);
}

static gboolean decode_ram(json_object *ram, QmpMigrationInfo *info, GError **error)
{
    const char *cmd = "query-migrate";
    json_object *mbps = NULL;

    if (!qmp_reply_check(cmd, ram, json_type_object, error) ||
        !opt_int(cmd, ram, "total", &info->ram_total, error) ||
        !opt_int(cmd, ram, "transferred", &info->ram_transferred, error) ||
        !opt_int(cmd, ram, "remaining", &info->ram_remaining, error))
        return FALSE;
    if (!json_object_object_get_ex(ram, "mbps", &mbps))
        return TRUE;
    /* QEMU prints a whole number without a decimal point: json-c reads it as an integer. */
    if (!json_object_is_type(mbps, json_type_int) &&
        !(mbps = get_member(cmd, ram, "mbps", json_type_double, error)))
        return FALSE;
    info->has_mbps = TRUE;
    info->ram_mbps = json_object_get_double(mbps);
    return TRUE;
}

gboolean qmp_query_migrate_info(QmpClient *client, QmpMigrationInfo *info, GError **error)
{
    const char *cmd = "query-migrate";
    g_autoptr(json_object) r = NULL;
    json_object *ram = NULL;
    g_autofree char *status = NULL;

    memset(info, 0, sizeof *info);
    info->total_time_ms = info->downtime_ms = -1;
    info->ram_total = info->ram_transferred = info->ram_remaining = -1;
    if (!(r = qmp_query_migrate(client, &status, error)) ||
        !opt_int(cmd, r, "total-time", &info->total_time_ms, error) ||
        !opt_int(cmd, r, "downtime", &info->downtime_ms, error))
        return FALSE;
    if (json_object_object_get_ex(r, "ram", &ram)) {
        info->has_ram = TRUE;
        if (!decode_ram(ram, info, error))
            return FALSE;
    }
    info->status = g_steal_pointer(&status);
    return TRUE;
}

void qmp_migration_info_clear(QmpMigrationInfo *info)
{
    g_clear_pointer(&info->status, g_free);
}

gboolean qmp_query_kvm_enabled(QmpClient *client, gboolean *enabled, GError **error)
{
    g_autoptr(json_object) r =
        qmp_command_execute(client, "query-kvm", NULL, NULL, 0, 0, json_type_object, error);
    json_object *v = r ? get_member("query-kvm", r, "enabled", json_type_boolean, error) : NULL;
    if (v)
        *enabled = json_object_get_boolean(v);
    return v != NULL;
}

gboolean qmp_query_memory_size(QmpClient *client, gint64 *base, gint64 *plugged, GError **error)
{
    const char *cmd = "query-memory-size-summary";
    g_autoptr(json_object) r =
        qmp_command_execute(client, cmd, NULL, NULL, 0, 0, json_type_object, error);
    if (!r || !qmp_reply_get_int(cmd, r, "base-memory", base, error) ||
        !opt_int(cmd, r, "plugged-memory", plugged, error))
        return FALSE;
    *plugged = MAX(*plugged, 0);
    return TRUE;
}

char *qmp_query_machine_type(QmpClient *client, GError **error)
{
    g_autofree char *t = qmp_qom_get_string(client, "/machine", "type", error);

    if (t && g_str_has_suffix(t, "-machine"))
        t[strlen(t) - strlen("-machine")] = '\0';
    return g_steal_pointer(&t);
}
