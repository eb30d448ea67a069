/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The typed QMP calls of typed-calls.h. */
#include "typed-calls.h"

static gboolean query_status(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    gboolean running = FALSE;
    g_autofree char *s = qmp_query_status(c, &running, e);
    return s != NULL;
}

static gboolean query_migrate(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autofree char *status = NULL;
    g_autoptr(json_object) info = qmp_query_migrate(c, &status, e);
    g_assert_true(!info || status);
    return info != NULL;
}

static gboolean qom_list(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autoptr(GPtrArray) props = qmp_qom_list(c, "/machine", e);
    for (guint i = 0; props && i < props->len; i++) {
        QmpObjectProperty *p = g_ptr_array_index(props, i);
        g_assert_true(p->name && p->type);
    }
    return props != NULL;
}

static gboolean qom_get(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autoptr(json_object) v = qmp_qom_get(c, "/machine", "type", e);
    return v != NULL;
}

static gboolean qom_get_string(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autofree char *s = qmp_qom_get_string(c, "/machine", "type", e);
    return s != NULL;
}

static gboolean qom_get_bool(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    gboolean b;
    return qmp_qom_get_bool(c, "/machine/x", "migrate-emulated-scsi-request", &b, e);
}

static gboolean qom_get_int(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    gint64 v;
    return qmp_qom_get_int(c, "/machine/x", "lun", &v, e);
}

static gboolean set_caps(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    const QmpCapability caps[] = {{"events", TRUE}, {"pause-before-switchover", TRUE}};
    return qmp_migrate_set_capabilities(c, caps, G_N_ELEMENTS(caps), e);
}

static gboolean set_params(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autoptr(json_object) p = json_object_new_object();
    json_object_object_add(p, "downtime-limit", json_object_new_int(300));
    return qmp_migrate_set_parameters(c, p, e);
}

static gboolean query_caps(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autoptr(GHashTable) caps = qmp_query_migrate_capabilities(c, e);
    return caps != NULL;
}

static gboolean query_params(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autoptr(json_object) p = qmp_query_migrate_parameters(c, e);
    return p != NULL;
}

static gboolean add_fd(QmpClient *c, int fd, GError **e)
{
    gint64 set = -1, added = -1;
    gboolean ok = qmp_add_fd(c, fd, -1, "test", &set, &added, e);
    g_assert_true(!ok || (set >= 0 && added >= 0));
    return ok;
}

static gboolean remove_fd(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_remove_fd(c, 1, e);
}

static gboolean getfd(QmpClient *c, int fd, GError **e)
{
    return qmp_getfd(c, fd, "mig", e);
}

static gboolean save(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_xen_save_devices_state(c, "/dev/fdset/1", FALSE, e);
}

static gboolean migrate(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_migrate(c, "tcp:127.0.0.1:1", e);
}

static gboolean incoming(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_migrate_incoming(c, "tcp:127.0.0.1:1", e);
}

static gboolean cancel(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_migrate_cancel(c, e);
}

static gboolean migrate_continue(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_migrate_continue(c, "pre-switchover", e);
}

static gboolean cont(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_cont(c, e);
}

static gboolean stop(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    return qmp_stop(c, e);
}

static gboolean query_fdsets(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autoptr(GPtrArray) sets = qmp_query_fdsets(c, e);
    for (guint i = 0; sets && i < sets->len; i++) {
        QmpFdset *set = g_ptr_array_index(sets, i);
        g_assert_cmpuint(set->fds->len, ==, set->opaque->len);
    }
    return sets != NULL;
}

static gboolean query_migrate_info(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    QmpMigrationInfo info;
    gboolean ok = qmp_query_migrate_info(c, &info, e);
    g_assert_true(!ok || info.status);
    qmp_migration_info_clear(&info);
    return ok;
}

static gboolean machine_type(QmpClient *c, int fd, GError **e)
{
    (void)fd;
    g_autofree char *t = qmp_query_machine_type(c, e);
    return t != NULL;
}

const QmpTypedCall qmp_typed_calls[] = {
    {"query-status", json_type_object, "{\"status\":\"running\",\"running\":true}", query_status},
    {"query-migrate", json_type_object, "{\"status\":\"active\"}", query_migrate},
    {"qom-list", json_type_array, "[{\"name\":\"type\",\"type\":\"string\"}]", qom_list},
    {"qom-get", json_type_null, "\"pc-i440fx-7.2-machine\"", qom_get},
    {"qom-get", json_type_string, "\"pc-i440fx-7.2-machine\"", qom_get_string},
    {"qom-get", json_type_boolean, "true", qom_get_bool},
    {"qom-get", json_type_int, "0", qom_get_int},
    {"migrate-set-capabilities", json_type_object, "{}", set_caps},
    {"migrate-set-parameters", json_type_object, "{}", set_params},
    {"query-migrate-capabilities", json_type_array, "[{\"capability\":\"events\",\"state\":true}]",
     query_caps},
    {"query-migrate-parameters", json_type_object, "{\"downtime-limit\":300}", query_params},
    {"add-fd", json_type_object, "{\"fdset-id\":1,\"fd\":4}", add_fd},
    {"remove-fd", json_type_object, "{}", remove_fd},
    {"getfd", json_type_object, "{}", getfd},
    {"xen-save-devices-state", json_type_object, "{}", save},
    {"migrate", json_type_object, "{}", migrate},
    {"migrate-incoming", json_type_object, "{}", incoming},
    {"migrate_cancel", json_type_object, "{}", cancel},
    {"migrate-continue", json_type_object, "{}", migrate_continue},
    {"cont", json_type_object, "{}", cont},
    {"stop", json_type_object, "{}", stop},
    {"query-fdsets", json_type_array,
     "[{\"fdset-id\":1,\"fds\":[{\"fd\":27,\"opaque\":\"safe-migrate probe\"},{\"fd\":28}]}]",
     query_fdsets},
    {"query-migrate", json_type_object,
     "{\"status\":\"active\",\"total-time\":5,\"ram\":{\"total\":1,\"mbps\":0}}",
     query_migrate_info},
    {"qom-get", json_type_string, "\"pc-i440fx-7.2-machine\"", machine_type},
};
const guint qmp_n_typed_calls = G_N_ELEMENTS(qmp_typed_calls);
