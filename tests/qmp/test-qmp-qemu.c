/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp against real QEMU 7.2 and 10.0: greeting, concurrent commands, error classes,
 * events, fd passing (add-fd, getfd) and QEMU dying with a command in flight. */
#include "qemu-launch.h"
#include "async-result.h"
#include "qmp.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

static json_object *member(json_object *obj, const char *key)
{
    json_object *v = NULL;

    if (!json_object_object_get_ex(obj, key, &v))
        g_error("no \"%s\" in %s", key, json_object_to_json_string(obj));
    return v;
}

static QmpClient *connect_qemu(Qemu *qemu)
{
    g_autoptr(GError) error = NULL;
    QmpClient *client;

    if (!qemu)
        return NULL; /* already failed */
    client = qmp_client_connect(qemu->address, 10000, &error);

    g_assert_no_error(error);
    return client;
}

static void test_basics(gconstpointer data)
{
    const QemuVariant *v = data;
    static const char *const cmds[] = {"query-status", "query-version", "query-name", "query-kvm",
                                       "query-status"};
    g_autoptr(Qemu) qemu = qemu_start(v);
    g_autoptr(QmpClient) client = connect_qemu(qemu);
    g_autoptr(GError) error = NULL;
    g_autofree char *prefix = g_strdup_printf("%d.%d.", v->major, v->minor);
    AsyncResult r[G_N_ELEMENTS(cmds)] = {{0}};
    int major = -1, minor = -1, micro = -1;

    if (!client)
        return;
    g_test_message("QEMU %s, package \"%s\"", qmp_client_get_version(client),
                   qmp_client_get_package(client));
    g_assert_true(g_str_has_prefix(qmp_client_get_version(client), prefix));
    qmp_client_get_version_numbers(client, &major, &minor, &micro);
    g_assert_cmpint(major, ==, v->major);
    g_assert_cmpint(minor, ==, v->minor);
    g_assert_cmpint(micro, >=, 0);
    g_assert_cmpstr(qmp_client_get_package(client), !=, "");
    g_assert_true(qmp_client_has_capability(client, "oob"));

    /* All in flight at once; each reply must land with its own command. */
    for (guint i = 0; i < G_N_ELEMENTS(cmds); i++)
        qmp_client_execute_async(client, cmds[i], NULL, NULL, 0, 0, NULL, on_async_done, &r[i]);
    for (guint i = 0; i < G_N_ELEMENTS(cmds); i++) {
        iterate_until(&r[i].done, 20);
        g_assert_no_error(r[i].error);
    }
    g_assert_cmpstr(json_object_get_string(member(r[0].reply, "status")), ==, "prelaunch");
    g_assert_cmpint(json_object_get_int(member(member(r[1].reply, "qemu"), "major")), ==, v->major);
    g_assert_cmpstr(json_object_get_string(member(r[2].reply, "name")), ==, "testvm");
    g_assert_true(json_object_is_type(member(r[3].reply, "present"), json_type_boolean));
    g_assert_false(json_object_get_boolean(member(r[4].reply, "running")));
    for (guint i = 0; i < G_N_ELEMENTS(cmds); i++)
        json_object_put(r[i].reply);

    /* Error replies keep QEMU's class and leave the connection usable. */
    g_assert_null(qmp_client_execute(client, "no-such-command", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_COMMAND);
    g_assert_cmpstr(qmp_error_get_class(error), ==, "CommandNotFound");
    g_clear_error(&error);
    g_assert_null(qmp_client_execute_json(client, "device_del", "{\"id\": \"nope\"}", &error));
    g_assert_cmpstr(qmp_error_get_class(error), ==, "DeviceNotFound");
    g_clear_error(&error);
    g_assert_null(qmp_client_execute(client, "human-monitor-command", NULL, &error));
    g_assert_cmpstr(qmp_error_get_class(error), ==, "GenericError");
    g_clear_error(&error);
    g_assert_true(qmp_client_is_connected(client));
}

typedef struct {
    GPtrArray *names;
    GArray *timestamps;
} EventLog;

static void on_event(QmpClient *client, const char *name, json_object *data, gint64 timestamp_us,
                     gpointer user_data)
{
    EventLog *log = user_data;

    (void)client;
    g_assert_nonnull(data);
    g_ptr_array_add(log->names, g_strdup(name));
    g_array_append_val(log->timestamps, timestamp_us);
}

static void test_events(gconstpointer data)
{
    const QemuVariant *v = data;
    g_autoptr(Qemu) qemu = qemu_start(v);
    g_autoptr(QmpClient) client = connect_qemu(qemu);
    g_autoptr(GError) error = NULL;
    EventLog log = {g_ptr_array_new_with_free_func(g_free),
                    g_array_new(FALSE, FALSE, sizeof(gint64))};
    json_object *reply, *ev;
    gint64 now_us = g_get_real_time();

    if (!client) {
        g_ptr_array_unref(log.names);
        g_array_unref(log.timestamps);
        return;
    }
    qmp_client_subscribe(client, "RESUME", on_event, &log, NULL);
    qmp_client_subscribe(client, "STOP", on_event, &log, NULL);

    reply = qmp_client_execute(client, "cont", NULL, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    ev = qmp_client_wait_event(client, "RESUME", 5000, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(json_object_get_string(member(ev, "event")), ==, "RESUME");
    json_object_put(ev);
    reply = qmp_client_execute(client, "query-status", NULL, &error);
    g_assert_true(json_object_get_boolean(member(reply, "running")));
    json_object_put(reply);

    reply = qmp_client_execute(client, "stop", NULL, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    ev = qmp_client_wait_event(client, "STOP", 5000, &error);
    g_assert_no_error(error);
    json_object_put(ev);
    reply = qmp_client_execute(client, "query-status", NULL, &error);
    g_assert_cmpstr(json_object_get_string(member(reply, "status")), ==, "paused");
    json_object_put(reply);

    g_assert_cmpuint(log.names->len, ==, 2);
    g_assert_cmpstr(log.names->pdata[0], ==, "RESUME");
    g_assert_cmpstr(log.names->pdata[1], ==, "STOP");
    /* QEMU stamps events with the wall clock. */
    g_assert_cmpint(g_array_index(log.timestamps, gint64, 0), >, now_us - 60 * G_USEC_PER_SEC);
    g_assert_cmpint(g_array_index(log.timestamps, gint64, 1), >=,
                    g_array_index(log.timestamps, gint64, 0));
    g_ptr_array_unref(log.names);
    g_array_unref(log.timestamps);
}

static gboolean fdset_listed(QmpClient *client, int fdset_id, int *fd_out)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) sets = qmp_client_execute(client, "query-fdsets", NULL, &error);

    g_assert_no_error(error);
    for (size_t i = 0; i < json_object_array_length(sets); i++) {
        json_object *set = json_object_array_get_idx(sets, i);
        json_object *fds = member(set, "fds");

        if (json_object_get_int(member(set, "fdset-id")) != fdset_id)
            continue;
        g_assert_cmpuint(json_object_array_length(fds), ==, 1);
        g_assert_cmpstr(json_object_get_string(member(json_object_array_get_idx(fds, 0), "opaque")),
                        ==, "libqmp-test");
        if (fd_out)
            *fd_out = json_object_get_int(member(json_object_array_get_idx(fds, 0), "fd"));
        return TRUE;
    }
    return FALSE;
}

static void test_fds(gconstpointer data)
{
    const QemuVariant *v = data;
    g_autoptr(Qemu) qemu = qemu_start(v);
    g_autoptr(QmpClient) client = connect_qemu(qemu);
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) args = json_object_new_object();
    json_object *reply;
    int p[2], listed_fd = -1, qemu_fd;

    if (!client)
        return;
    g_assert_cmpint(pipe(p), ==, 0);

    /* add-fd: QEMU takes the descriptor that came with the command. */
    json_object_object_add(args, "fdset-id", json_object_new_int(7));
    json_object_object_add(args, "opaque", json_object_new_string("libqmp-test"));
    reply = qmp_client_execute_full(client, "add-fd", args, &p[1], 1, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpint(json_object_get_int(member(reply, "fdset-id")), ==, 7);
    qemu_fd = json_object_get_int(member(reply, "fd"));
    json_object_put(reply);
    g_assert_true(fdset_listed(client, 7, &listed_fd));
    g_assert_cmpint(listed_fd, ==, qemu_fd);

    reply = qmp_client_execute_json(client, "remove-fd", "{\"fdset-id\": 7}", &error);
    g_assert_no_error(error);
    json_object_put(reply);
    /* QEMU 10 drops the emptied set at once; 7.2 lists removed fds until the monitor
     * disconnects. Either way a second removal is refused only where it is gone. */
    if (v->major >= 10) {
        g_assert_false(fdset_listed(client, 7, NULL));
        g_assert_null(qmp_client_execute_json(client, "remove-fd", "{\"fdset-id\": 7}", &error));
        g_assert_cmpstr(qmp_error_get_class(error), ==, "GenericError");
        g_clear_error(&error);
    }

    /* getfd without a descriptor is refused: proof that the fd really travels. */
    g_assert_null(qmp_client_execute_json(client, "getfd", "{\"fdname\": \"myfd\"}", &error));
    g_assert_cmpstr(qmp_error_get_class(error), ==, "GenericError");
    g_assert_nonnull(strstr(error->message, "SCM_RIGHTS"));
    g_clear_error(&error);

    json_object_put(args);
    args = json_tokener_parse("{\"fdname\": \"myfd\"}");
    reply = qmp_client_execute_full(client, "getfd", args, &p[0], 1, 0, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    reply = qmp_client_execute(client, "closefd", args, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    /* It existed exactly once. */
    g_assert_null(qmp_client_execute(client, "closefd", args, &error));
    g_assert_cmpstr(qmp_error_get_class(error), ==, "GenericError");

    close(p[0]);
    close(p[1]);
}

typedef struct {
    int count;
    GError *reason;
} DisconnectRecord;

static void on_disconnect(QmpClient *client, const GError *reason, gpointer user_data)
{
    DisconnectRecord *rec = user_data;

    (void)client;
    rec->count++;
    g_clear_error(&rec->reason);
    rec->reason = g_error_copy(reason);
}

static void test_sigkill(gconstpointer data)
{
    const QemuVariant *v = data;
    g_autoptr(Qemu) qemu = qemu_start(v);
    g_autoptr(QmpClient) client = connect_qemu(qemu);
    DisconnectRecord rec = {0};
    AsyncResult r = {0};

    if (!client)
        return;
    qmp_client_set_disconnect_handler(client, on_disconnect, &rec, NULL);
    /* Frozen, QEMU cannot answer: the command is surely still in flight when it dies. */
    g_assert_cmpint(kill(qemu->pid, SIGSTOP), ==, 0);
    qmp_client_execute_async(client, "query-status", NULL, NULL, 0, 0, NULL, on_async_done, &r);
    for (int i = 0; i < 5; i++)
        g_main_context_iteration(NULL, FALSE);
    g_assert_false(r.done);
    g_assert_cmpint(kill(qemu->pid, SIGKILL), ==, 0);
    iterate_until(&r.done, 20);

    g_assert_null(r.reply);
    g_assert_error(r.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_cmpint(rec.count, ==, 1);
    g_assert_error(rec.reason, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_false(qmp_client_is_connected(client));
    g_clear_error(&r.error);
    g_clear_error(&rec.reason);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(qemu_variants); i++) {
        const QemuVariant *v = &qemu_variants[i];
        struct {
            const char *name;
            GTestDataFunc func;
        } tests[] = {
            {"basics", test_basics},
            {"events", test_events},
            {"fds", test_fds},
            {"sigkill", test_sigkill},
        };

        for (guint j = 0; j < G_N_ELEMENTS(tests); j++) {
            g_autofree char *path = g_strdup_printf("/qmp/%s/%s", v->label, tests[j].name);

            g_test_add_data_func(path, v, tests[j].func);
        }
    }
    return g_test_run();
}
