/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp's typed command layer against a scripted peer: every command safe-migrate sends,
 * answered with a reply of every JSON type. Each call either succeeds without an error or
 * fails with one (a wrong type is QMP_ERROR_PROTOCOL); never NULL without an error, never a
 * json-c assert. Then one well-formed reply each, which must decode. */
#include "fake-server.h"
#include "qmp-commands.h"
#include "typed-calls.h"

#include <string.h>
#include <unistd.h>

/* Replies of every JSON type, and shapes that are nearly right. */
static const char *const replies[] = {
    "null",
    "true",
    "0",
    "1.5",
    "\"x\"",
    "[]",
    "{}",
    "[null]",
    "[1]",
    "[{}]",
    "[{\"name\":1,\"type\":\"x\"}]",
    "[{\"name\":\"a\",\"type\":null}]",
    "[{\"capability\":\"events\",\"state\":\"yes\"}]",
    "{\"status\":null}",
    "{\"status\":7,\"running\":true}",
    "{\"status\":\"running\",\"running\":\"yes\"}",
    "{\"fdset-id\":\"1\",\"fd\":3}",
    "{\"fdset-id\":1}",
    "{\"fdset-id\":-1,\"fd\":3}", /* well-typed, impossible: no fd set or fd is negative */
    "[[[[[]]]]]",
    "[{\"fdset-id\":1,\"fds\":{}}]",
    "[{\"fdset-id\":1,\"fds\":[{\"fd\":\"3\"}]}]",
    "[{\"fdset-id\":1,\"fds\":[{\"fd\":3,\"opaque\":7}]}]",
    "{\"a\":{\"b\":[{},null]}}",
    "{\"status\":\"active\",\"ram\":[]}",
    "{\"status\":\"active\",\"ram\":{\"total\":\"1\"}}",
    "{\"status\":\"active\",\"ram\":{\"mbps\":\"fast\"}}",
    "{\"status\":\"completed\",\"downtime\":1.5}",
};

static void script_every_reply(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    for (guint c = 0; c < qmp_n_typed_calls; c++) {
        for (guint r = 0; r < G_N_ELEMENTS(replies); r++)
            fs_reply(fs, fs_expect(fs, qmp_typed_calls[c].execute), replies[r]);
        fs_reply(fs, fs_expect(fs, qmp_typed_calls[c].execute), qmp_typed_calls[c].good);
    }
}

static void test_every_reply_type(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_every_reply, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpClient) client = qmp_client_connect(fake_server_address(fs), 5000, &error);
    g_assert_no_error(error);

    for (guint c = 0; c < qmp_n_typed_calls; c++) {
        const QmpTypedCall *cmd = &qmp_typed_calls[c];
        for (guint r = 0; r < G_N_ELEMENTS(replies); r++) {
            g_autoptr(json_object) reply = json_tokener_parse(replies[r]);
            gboolean ok = cmd->run(client, STDERR_FILENO, &error);
            g_test_message("%s <- %s: %s", cmd->execute, replies[r],
                           ok      ? "ok"
                           : error ? error->message
                                   : "NO ERROR");
            /* Exactly one of: a result, an error. */
            g_assert_true(ok == (error == NULL));
            gboolean type_fits =
                cmd->type == json_type_null ? reply != NULL : json_object_is_type(reply, cmd->type);
            if (!type_fits)
                g_assert_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL);
            g_clear_error(&error);
            g_assert_true(qmp_client_is_connected(client));
        }
        g_assert_true(cmd->run(client, STDERR_FILENO, &error));
        g_assert_no_error(error);
    }
    fake_server_free(fs);
}

/* The values decode: the typed layer returns what QEMU said. */
static void script_values(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_reply(fs, fs_expect(fs, "query-status"), "{\"status\":\"paused\",\"running\":false}");
    fs_reply(fs, fs_expect(fs, "query-migrate"), "{}");
    fs_reply(fs, fs_expect(fs, "query-migrate"), "{\"status\":\"pre-switchover\"}");
    fs_reply(fs, fs_expect(fs, "qom-list"),
             "[{\"name\":\"type\",\"type\":\"string\"},{\"name\":\"bus\","
             "\"type\":\"child<SCSI>\",\"description\":\"d\"}]");
    fs_reply(fs, fs_expect(fs, "query-migrate-capabilities"),
             "[{\"capability\":\"events\",\"state\":true},"
             "{\"capability\":\"multifd\",\"state\":false}]");
    fs_reply(fs, fs_expect(fs, "add-fd"), "{\"fdset-id\":3,\"fd\":27}");
    fs_reply(fs, fs_expect(fs, "query-migrate"),
             "{\"status\":\"completed\",\"total-time\":1200,\"downtime\":4,\"ram\":{\"total\":100,"
             "\"transferred\":90,\"remaining\":0,\"mbps\":537.13295999999991}}");
    fs_reply(fs, fs_expect(fs, "query-migrate"), "{\"status\":\"active\",\"ram\":{\"mbps\":0}}");
    fs_reply(fs, fs_expect(fs, "query-migrate"), "{\"status\":\"completed\",\"downtime\":\"4\"}");
    fs_reply(fs, fs_expect(fs, "qom-get"), "\"pc-q35-10.0-machine\"");
    fs_reply(fs, fs_expect(fs, "qom-get"), "\"microvm\"");
}

/* query-migrate decoded as the gate reads it: absent members -1, a wrong-typed one an error. */
static void check_migrate_info(QmpClient *client)
{
    g_autoptr(GError) error = NULL;
    QmpMigrationInfo info;
    g_assert_true(qmp_query_migrate_info(client, &info, &error));
    g_assert_cmpstr(info.status, ==, "completed");
    g_assert_cmpint(info.total_time_ms, ==, 1200);
    g_assert_cmpint(info.downtime_ms, ==, 4);
    g_assert_cmpint(info.ram_total, ==, 100);
    g_assert_cmpint(info.ram_transferred, ==, 90);
    g_assert_cmpint(info.ram_remaining, ==, 0);
    g_assert_true(info.has_mbps);
    g_assert_cmpfloat_with_epsilon(info.ram_mbps, 537.13, 0.01);
    qmp_migration_info_clear(&info);
    g_assert_true(qmp_query_migrate_info(client, &info, &error));
    g_assert_cmpint(info.downtime_ms, ==, -1);
    g_assert_cmpint(info.ram_total, ==, -1);
    g_assert_true(info.has_mbps); /* 0, read by json-c as an integer */
    g_assert_cmpfloat(info.ram_mbps, ==, 0.0);
    qmp_migration_info_clear(&info);
    g_assert_false(qmp_query_migrate_info(client, &info, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL);
    qmp_migration_info_clear(&info);
    g_clear_error(&error);
    g_autofree char *t1 = qmp_query_machine_type(client, &error);
    g_assert_cmpstr(t1, ==, "pc-q35-10.0");
    g_autofree char *t2 = qmp_query_machine_type(client, &error);
    g_assert_cmpstr(t2, ==, "microvm");
}

static void test_values(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_values, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpClient) client = qmp_client_connect(fake_server_address(fs), 5000, &error);
    g_assert_no_error(error);
    gboolean running = TRUE;
    g_autofree char *status = qmp_query_status(client, &running, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(status, ==, "paused");
    g_assert_false(running);
    g_autofree char *m1 = NULL, *m2 = NULL;
    json_object_put(qmp_query_migrate(client, &m1, &error));
    g_assert_cmpstr(m1, ==, "none");
    json_object_put(qmp_query_migrate(client, &m2, &error));
    g_assert_cmpstr(m2, ==, "pre-switchover");
    g_autoptr(GPtrArray) props = qmp_qom_list(client, "/machine/peripheral/cd", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(props->len, ==, 2);
    g_assert_cmpstr(((QmpObjectProperty *)g_ptr_array_index(props, 1))->type, ==, "child<SCSI>");
    g_autoptr(GHashTable) caps = qmp_query_migrate_capabilities(client, &error);
    g_assert_no_error(error);
    g_assert_cmpint(GPOINTER_TO_INT(g_hash_table_lookup(caps, "events")), ==, 1);
    g_assert_true(g_hash_table_contains(caps, "multifd"));
    g_assert_cmpint(GPOINTER_TO_INT(g_hash_table_lookup(caps, "multifd")), ==, 0);
    gint64 set = -1, fd = -1;
    g_assert_true(qmp_add_fd(client, STDERR_FILENO, -1, NULL, &set, &fd, &error));
    g_assert_cmpint(set, ==, 3);
    g_assert_cmpint(fd, ==, 27);
    check_migrate_info(client);
    fake_server_free(fs);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp/commands/every-reply-type", test_every_reply_type);
    g_test_add_func("/qmp/commands/values", test_values);
    return g_test_run();
}
