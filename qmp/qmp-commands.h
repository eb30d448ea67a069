/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp typed commands: one synchronous function per QMP command safe-migrate sends. Every
 * reply is type-checked here, in one place: a reply of the wrong JSON type (null included)
 * is a QMP_ERROR_PROTOCOL GError, never a NULL without an error and never a json-c assert. */
#pragma once

#include "qmp.h"

G_BEGIN_DECLS

/* The one place replies are checked: runs `command` (args not consumed; fds as for
 * qmp_client_execute_full) and returns its "return" member if it has type `expect`, else
 * NULL with an error. expect json_type_null means "any value but null". timeout_ms: 0 = the
 * client's default, G_MAXUINT = none. */
json_object *qmp_command_execute(QmpClient *client, const char *command, json_object *args,
                                 const int *fds, guint n_fds, guint timeout_ms, json_type expect,
                                 GError **error);
/* For replies obtained otherwise (qmp_client_execute_finish): `reply` (borrowed; may be NULL
 * only when *error is already set) must have type `expect`. */
gboolean qmp_reply_check(const char *command, json_object *reply, json_type expect, GError **error);
/* A member of a reply object, of a given type: a string, int or bool, or NULL/FALSE with a
 * QMP_ERROR_PROTOCOL error naming the command and the member. */
const char *qmp_reply_get_string(const char *command, json_object *obj, const char *member,
                                 GError **error);
gboolean qmp_reply_get_int(const char *command, json_object *obj, const char *member, gint64 *out,
                           GError **error);
/* obj[member] if obj is an object and that member a string, else NULL: for JSON where a
 * missing member is normal (events, the daemon's wire protocol). The one such helper. */
const char *qmp_json_string(json_object *obj, const char *member);

/* query-status: the run state ("running", "paused", "inmigrate", "postmigrate", ...);
 * *running (may be NULL) from the reply's "running". */
char *qmp_query_status(QmpClient *client, gboolean *running, GError **error);
/* query-migrate: the whole MigrationInfo object (new reference); *status (may be NULL) is
 * its "status", or "none" when QEMU has no migration to report. */
json_object *qmp_query_migrate(QmpClient *client, char **status, GError **error);
/* query-migrate-capabilities: capability name -> GINT_TO_POINTER(state). */
GHashTable *qmp_query_migrate_capabilities(QmpClient *client, GError **error);
/* query-migrate-parameters: the MigrationParameters object (new reference). */
json_object *qmp_query_migrate_parameters(QmpClient *client, GError **error);

typedef struct {
    char *name;
    char *type; /* "child<scsi-cd>", "link<...>", "bool", ... */
} QmpObjectProperty;
void qmp_object_property_free(QmpObjectProperty *prop);
/* qom-list: QmpObjectProperty* (owned by the array). */
GPtrArray *qmp_qom_list(QmpClient *client, const char *path, GError **error);
/* qom-get: any JSON value but null (new reference), or typed. */
json_object *qmp_qom_get(QmpClient *client, const char *path, const char *property, GError **error);
char *qmp_qom_get_string(QmpClient *client, const char *path, const char *property, GError **error);
gboolean qmp_qom_get_bool(QmpClient *client, const char *path, const char *property, gboolean *out,
                          GError **error);
gboolean qmp_qom_get_int(QmpClient *client, const char *path, const char *property, gint64 *out,
                         GError **error);

typedef struct {
    const char *name;
    gboolean state;
} QmpCapability;
gboolean qmp_migrate_set_capabilities(QmpClient *client, const QmpCapability *caps, guint n_caps,
                                      GError **error);
/* params: a MigrationParameters object, e.g. {"downtime-limit": 300} (not consumed). */
gboolean qmp_migrate_set_parameters(QmpClient *client, json_object *params, GError **error);

/* add-fd: passes `fd` into a new fd set (fdset_id < 0) or an existing one; returns QEMU's
 * fd set id and fd number through the out pointers (either may be NULL). */
gboolean qmp_add_fd(QmpClient *client, int fd, gint64 fdset_id, const char *opaque,
                    gint64 *out_fdset_id, gint64 *out_fd, GError **error);
gboolean qmp_remove_fd(QmpClient *client, gint64 fdset_id, GError **error);
typedef struct {
    gint64 fdset_id;
    GArray *fds;       /* gint64: QEMU's fd numbers */
    GPtrArray *opaque; /* char* per fd, NULL where QEMU has none */
} QmpFdset;
void qmp_fdset_free(QmpFdset *set);
/* query-fdsets: QmpFdset* (owned by the array). */
GPtrArray *qmp_query_fdsets(QmpClient *client, GError **error);
/* getfd: passes `fd` under the name `fdname` (for "fd:NAME" migration URIs). */
gboolean qmp_getfd(QmpClient *client, int fd, const char *fdname, GError **error);
gboolean qmp_xen_save_devices_state(QmpClient *client, const char *filename, gboolean live,
                                    GError **error);

gboolean qmp_migrate(QmpClient *client, const char *uri, GError **error);
gboolean qmp_migrate_incoming(QmpClient *client, const char *uri, GError **error);
gboolean qmp_migrate_cancel(QmpClient *client, GError **error);
/* migrate-continue from a paused state, e.g. "pre-switchover". */
gboolean qmp_migrate_continue(QmpClient *client, const char *state, GError **error);
gboolean qmp_cont(QmpClient *client, GError **error);
gboolean qmp_stop(QmpClient *client, GError **error);

/* ---- Decoded replies the gate engine reads ------------------------------------------------ */

/* query-migrate, decoded: what the gate reads of MigrationInfo. A member QEMU leaves out is
 * -1 (has_ram / has_mbps FALSE); one of the wrong type is a QMP_ERROR_PROTOCOL error. */
typedef struct {
    char *status; /* "none" when QEMU has no migration to report */
    gint64 total_time_ms, downtime_ms;
    gboolean has_ram;
    gint64 ram_total, ram_transferred, ram_remaining;
    gboolean has_mbps;
    double ram_mbps; /* an integer or a number on the wire */
} QmpMigrationInfo;
gboolean qmp_query_migrate_info(QmpClient *client, QmpMigrationInfo *info, GError **error);
void qmp_migration_info_clear(QmpMigrationInfo *info);
/* query-kvm "enabled": FALSE under TCG. */
gboolean qmp_query_kvm_enabled(QmpClient *client, gboolean *enabled, GError **error);
/* query-memory-size-summary: the boot RAM and the hotplugged RAM (0 without any), in bytes. */
gboolean qmp_query_memory_size(QmpClient *client, gint64 *base, gint64 *plugged, GError **error);
/* qom-get /machine type, without QEMU's "-machine" suffix: "pc-i440fx-9.0". */
char *qmp_query_machine_type(QmpClient *client, GError **error);

G_END_DECLS
