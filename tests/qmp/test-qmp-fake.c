/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp against a scripted, misbehaving peer: framing, id matching, events, timeouts,
 * errors, fd passing, address parsing, and every way a connection can break. */
#include "fake-server.h"
#include "async-result.h"
#include "qmp.h"

#include <gio/gunixsocketaddress.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* Helpers (main thread) */

typedef struct {
    int count;
    GError *reason;
} DisconnectRecord;

static void on_disconnect(QmpClient *client, const GError *reason, gpointer user_data)
{
    DisconnectRecord *rec = user_data;

    g_assert_nonnull(client);
    rec->count++;
    g_clear_error(&rec->reason);
    rec->reason = g_error_copy(reason);
}

static QmpClient *connect_to(FakeServer *fs, DisconnectRecord *rec)
{
    g_autoptr(GError) error = NULL;
    QmpClient *client = qmp_client_connect(fake_server_address(fs), 5000, &error);

    g_assert_no_error(error);
    g_assert_nonnull(client);
    if (rec)
        qmp_client_set_disconnect_handler(client, on_disconnect, rec, NULL);
    return client;
}

static const char *reply_string(json_object *reply, const char *key)
{
    json_object *v;

    g_assert_true(json_object_object_get_ex(reply, key, &v));
    return json_object_get_string(v);
}

/* ------------------------------------------------------------------------------------ */
/* Address parsing */

static void test_address(void)
{
    static const char *const bad[] = {
        "",
        "unix:",
        "tcp:",
        "tcp:1.2.3.4",
        "tcp:1.2.3.4:0",
        "tcp:1.2.3.4:65536",
        "tcp:1.2.3.4:x",
        "tcp:[::1:5",
        "tcp:[::1]5",
        "tcp:::1:5",
        "tcp::5",
        "tcp:[1.2.3.4]:5",
        "vsock:3:4",
        "tpc:1.2.3.4:5",
    };
    g_autofree char *long_path = g_strnfill(200, 'x');
    g_autofree char *long_addr = g_strconcat("unix:/", long_path, NULL);
    GSocketAddress *addr = NULL;
    GError *error = NULL;

    g_assert_true(qmp_address_parse("unix:/run/q.sock", &addr, &error));
    g_assert_no_error(error);
    g_assert_true(G_IS_UNIX_SOCKET_ADDRESS(addr));
    g_assert_cmpstr(g_unix_socket_address_get_path(G_UNIX_SOCKET_ADDRESS(addr)), ==, "/run/q.sock");
    g_clear_object(&addr);

    g_assert_true(qmp_address_parse("rel/q.sock", &addr, &error));
    g_assert_cmpstr(g_unix_socket_address_get_path(G_UNIX_SOCKET_ADDRESS(addr)), ==, "rel/q.sock");
    g_clear_object(&addr);

    g_assert_true(qmp_address_parse("tcp:127.0.0.1:4444", &addr, &error));
    g_assert_true(G_IS_INET_SOCKET_ADDRESS(addr));
    g_assert_cmpuint(g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(addr)), ==, 4444);
    g_clear_object(&addr);

    g_assert_true(qmp_address_parse("tcp:[::1]:5555", &addr, &error));
    g_assert_no_error(error);
    g_assert_cmpint(g_socket_address_get_family(addr), ==, G_SOCKET_FAMILY_IPV6);
    g_assert_cmpuint(g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(addr)), ==, 5555);
    g_clear_object(&addr);

    g_assert_true(qmp_address_parse("tcp:localhost:4444", &addr, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(addr)), ==, 4444);
    g_clear_object(&addr);

    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_test_message("bad address \"%s\"", bad[i]);
        g_assert_false(qmp_address_parse(bad[i], &addr, &error));
        g_assert_error(error, QMP_ERROR, QMP_ERROR_ADDRESS);
        g_assert_null(addr);
        g_clear_error(&error);
    }
    g_assert_false(qmp_address_parse(long_addr, &addr, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_ADDRESS);
    g_clear_error(&error);

    /* The same parser guards connecting. */
    g_assert_null(qmp_client_connect("tcp:nope", 1000, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_ADDRESS);
    g_clear_error(&error);
}

/* ------------------------------------------------------------------------------------ */
/* Greeting, a command, its arguments on the wire */

static void script_basic(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    {
        g_autoptr(FakeMsg) msg = fs_recv(fs);
        json_object *args, *a;

        g_assert_cmpstr(msg->execute, ==, "query-thing");
        g_assert_true(json_object_object_get_ex(msg->obj, "arguments", &args));
        g_assert_true(json_object_object_get_ex(args, "name", &a));
        g_assert_cmpstr(json_object_get_string(a), ==, "dev/0");
        g_assert_cmpuint(msg->fds->len, ==, 0);
        fs_reply(fs, msg->id, "{\"ok\": true, \"name\": \"dev/0\"}");
    }
    {
        g_autoptr(FakeMsg) msg = fs_recv(fs);

        g_assert_cmpstr(msg->execute, ==, "no-args");
        g_assert_false(json_object_object_get_ex(msg->obj, "arguments", NULL));
        fs_reply(fs, msg->id, "[1, 2]");
    }
    fs_expect_eof(fs);
}

static void test_basic(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_basic, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(json_object) args = json_object_new_object();
    g_autoptr(json_object) reply = NULL;
    g_autoptr(GError) error = NULL;
    int major = 0, minor = 0, micro = 0;

    g_assert_true(qmp_client_is_connected(client));
    g_assert_cmpstr(qmp_client_get_version(client), ==, "7.2.22");
    qmp_client_get_version_numbers(client, &major, &minor, &micro);
    g_assert_cmpint(major, ==, 7);
    g_assert_cmpint(minor, ==, 2);
    g_assert_cmpint(micro, ==, 22);
    g_assert_cmpstr(qmp_client_get_package(client), ==, "Debian 1:7.2+dfsg-7");
    g_assert_true(qmp_client_has_capability(client, "oob"));
    g_assert_false(qmp_client_has_capability(client, "nope"));

    json_object_object_add(args, "name", json_object_new_string("dev/0"));
    reply = qmp_client_execute(client, "query-thing", args, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(reply_string(reply, "name"), ==, "dev/0");
    /* args not consumed: still ours and intact */
    g_assert_cmpstr(json_object_get_string(json_object_object_get(args, "name")), ==, "dev/0");
    json_object_put(reply);

    reply = qmp_client_execute(client, "no-args", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(json_object_is_type(reply, json_type_array));
    g_assert_cmpuint(json_object_array_length(reply), ==, 2);

    qmp_client_close(client);
    fake_server_free(fs);
}

/* ------------------------------------------------------------------------------------ */
/* Broken peers */

static void script_garbage(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_expect(fs, "query-status");
    fs_send(fs, "this is not json\n");
    fs_expect_eof(fs); /* the client hangs up */
}

static void test_garbage(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_garbage, NULL);
    DisconnectRecord rec = {0};
    QmpClient *client = connect_to(fs, &rec);
    g_autoptr(GError) error = NULL;
    json_object *reply;

    reply = qmp_client_execute(client, "query-status", NULL, &error);
    g_assert_null(reply);
    g_assert_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_false(qmp_client_is_connected(client));
    g_assert_cmpint(rec.count, ==, 1);
    g_assert_error(rec.reason, QMP_ERROR, QMP_ERROR_PROTOCOL);
    g_clear_error(&error);

    /* Later commands fail at once, and the handler is not called again. */
    g_assert_null(qmp_client_execute(client, "query-status", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_cmpint(rec.count, ==, 1);

    qmp_client_unref(client);
    fake_server_free(fs);
    g_clear_error(&rec.reason);
}

static void script_bad_greeting(FakeServer *fs, gpointer data)
{
    fs_send(fs, data);
}

static void test_bad_greeting(void)
{
    static const char *const greetings[] = {
        "{\"hello\": 1}\n",         "garbage\n", "{\"QMP\": {\"version\": 7}}\n", "[1]\n",
        "{\"QMP\": {}} trailing\n",
    };

    for (guint i = 0; i < G_N_ELEMENTS(greetings); i++) {
        FakeServer *fs = fake_server_new(FALSE, script_bad_greeting, (gpointer)greetings[i]);
        g_autoptr(GError) error = NULL;

        g_test_message("greeting %s", greetings[i]);
        g_assert_null(qmp_client_connect(fake_server_address(fs), 5000, &error));
        g_assert_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL);
        fake_server_free(fs);
    }
}

static void script_close_mid_line(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_expect(fs, "query-status");
    fs_send(fs, "{\"return\": {}, \"i");
}

static void test_close_mid_line(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_close_mid_line, NULL);
    DisconnectRecord rec = {0};
    g_autoptr(QmpClient) client = connect_to(fs, &rec);
    g_autoptr(GError) error = NULL;

    g_assert_null(qmp_client_execute(client, "query-status", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_cmpint(rec.count, ==, 1);
    g_assert_error(rec.reason, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_nonnull(strstr(rec.reason->message, "middle"));
    g_assert_false(qmp_client_is_connected(client));
    fake_server_free(fs);
    g_clear_error(&rec.reason);
}

static void script_peer_close(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_expect(fs, "a");
    fs_expect(fs, "b");
}

static void test_peer_close(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_peer_close, NULL);
    DisconnectRecord rec = {0};
    g_autoptr(QmpClient) client = connect_to(fs, &rec);
    AsyncResult a = {0}, b = {0};

    qmp_client_execute_async(client, "a", NULL, NULL, 0, 0, NULL, on_async_done, &a);
    qmp_client_execute_async(client, "b", NULL, NULL, 0, 0, NULL, on_async_done, &b);
    iterate_until(&a.done, 10);
    iterate_until(&b.done, 10);
    g_assert_error(a.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_error(b.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_cmpint(rec.count, ==, 1);
    g_assert_error(rec.reason, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    async_result_clear(&a);
    async_result_clear(&b);
    fake_server_free(fs);
    g_clear_error(&rec.reason);
}

#define HUGE_LINE (100u * 1024u * 1024u)

static void script_huge_line(FakeServer *fs, gpointer data)
{
    gsize *sent = data;
    g_autofree char *chunk = g_strnfill(1024 * 1024, 'a');

    fs_handshake(fs);
    fs_expect(fs, "query-status");
    fs_send(fs, "{\"return\": \"");
    /* No newline ever: the client must give up on its own, long before 100 MB. */
    while (*sent < HUGE_LINE && fs_send(fs, chunk))
        *sent += 1024 * 1024;
}

static void test_huge_line(void)
{
    gsize sent = 0;
    FakeServer *fs = fake_server_new(FALSE, script_huge_line, &sent);
    DisconnectRecord rec = {0};
    g_autoptr(QmpClient) client = connect_to(fs, &rec);
    g_autoptr(GError) error = NULL;

    g_assert_null(qmp_client_execute(client, "query-status", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_false(qmp_client_is_connected(client));
    g_assert_cmpint(rec.count, ==, 1);
    g_assert_error(rec.reason, QMP_ERROR, QMP_ERROR_PROTOCOL);
    fake_server_free(fs);
    /* The server could only push the limit (16 MiB) plus socket buffers before the client
     * hung up: the client never buffered the whole line. */
    g_test_message("server sent %" G_GSIZE_FORMAT " bytes before the client hung up", sent);
    g_assert_cmpuint(sent, <, HUGE_LINE / 2);
    g_assert_cmpuint(sent, >=, QMP_DEFAULT_MAX_LINE - 2 * 1024 * 1024);
    g_clear_error(&rec.reason);
}

static void script_max_line(FakeServer *fs, gpointer data)
{
    g_autofree char *ok = g_strnfill(3000, 'b');
    g_autofree char *big = g_strnfill(5000, 'c');

    (void)data;
    fs_handshake(fs);
    fs_sendf(fs, "{\"return\": \"%s\", \"id\": %" G_GINT64_FORMAT "}\n", ok, fs_expect(fs, "x"));
    /* Complete line, delivered at once, but over the limit. */
    fs_sendf(fs, "{\"return\": \"%s\", \"id\": %" G_GINT64_FORMAT "}\n", big, fs_expect(fs, "y"));
    fs_expect_eof(fs);
}

static void test_max_line(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_max_line, NULL);
    DisconnectRecord rec = {0};
    g_autoptr(QmpClient) client = connect_to(fs, &rec);
    g_autoptr(GError) error = NULL;
    json_object *reply;

    qmp_client_set_max_line(client, 4096);
    reply = qmp_client_execute(client, "x", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(strlen(json_object_get_string(reply)), ==, 3000);
    json_object_put(reply);

    g_assert_null(qmp_client_execute(client, "y", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_error(rec.reason, QMP_ERROR, QMP_ERROR_PROTOCOL);
    g_assert_cmpint(rec.count, ==, 1);
    fake_server_free(fs);
    g_clear_error(&rec.reason);
}

/* ------------------------------------------------------------------------------------ */
/* Concurrency, events, timeouts, errors */

static void script_out_of_order(FakeServer *fs, gpointer data)
{
    FakeMsg *msgs[3];

    (void)data;
    fs_handshake(fs);
    for (int i = 0; i < 3; i++)
        msgs[i] = fs_recv(fs);
    g_assert_cmpint(msgs[0]->id, !=, msgs[1]->id);
    g_assert_cmpint(msgs[1]->id, !=, msgs[2]->id);
    g_assert_cmpint(msgs[0]->id, !=, msgs[2]->id);
    for (int i = 2; i >= 0; i--) {
        g_autofree char *ret = g_strdup_printf("{\"cmd\": \"%s\"}", msgs[i]->execute);

        fs_reply(fs, msgs[i]->id, ret);
        fake_msg_free(msgs[i]);
    }
}

static void test_out_of_order(void)
{
    static const char *const names[] = {"first", "second", "third"};
    FakeServer *fs = fake_server_new(FALSE, script_out_of_order, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    AsyncResult r[3] = {{0}};

    for (int i = 0; i < 3; i++)
        qmp_client_execute_async(client, names[i], NULL, NULL, 0, 0, NULL, on_async_done, &r[i]);
    for (int i = 0; i < 3; i++) {
        iterate_until(&r[i].done, 10);
        g_assert_no_error(r[i].error);
        g_assert_cmpstr(reply_string(r[i].reply, "cmd"), ==, names[i]);
        async_result_clear(&r[i]);
    }
    fake_server_free(fs);
}

typedef struct {
    GPtrArray *names;
    GArray *timestamps;
    GPtrArray *data;
} EventLog;

static void on_event(QmpClient *client, const char *name, json_object *data, gint64 timestamp_us,
                     gpointer user_data)
{
    EventLog *log = user_data;

    g_assert_nonnull(client);
    g_assert_nonnull(data);
    g_ptr_array_add(log->names, g_strdup(name));
    g_array_append_val(log->timestamps, timestamp_us);
    g_ptr_array_add(log->data, g_strdup(json_object_to_json_string(data)));
}

static void event_log_init(EventLog *log)
{
    log->names = g_ptr_array_new_with_free_func(g_free);
    log->timestamps = g_array_new(FALSE, FALSE, sizeof(gint64));
    log->data = g_ptr_array_new_with_free_func(g_free);
}

static void event_log_clear(EventLog *log)
{
    g_ptr_array_unref(log->names);
    g_array_unref(log->timestamps);
    g_ptr_array_unref(log->data);
}

static void script_events(FakeServer *fs, gpointer data)
{
    gint64 id;

    (void)data;
    fs_handshake(fs);
    id = fs_expect(fs, "one");
    fs_send(fs, "{\"timestamp\": {\"seconds\": 100, \"microseconds\": 1}, \"event\": \"EV_A\", "
                "\"data\": {\"x\": 1}}\r\n");
    fs_send(fs, "{\"timestamp\": {\"seconds\": 100, \"microseconds\": 500000}, "
                "\"event\": \"EV_B\"}\r\n");
    fs_reply(fs, id, "{}");
    fs_send(fs, "{\"timestamp\": {\"seconds\": 101, \"microseconds\": 2}, \"event\": \"EV_C\", "
                "\"data\": {}}\r\n");
    fs_reply(fs, fs_expect(fs, "two"), "{}");
}

static void test_events(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_events, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;
    EventLog all, only_b;
    json_object *reply, *ev;
    guint sub_all, sub_b;

    event_log_init(&all);
    event_log_init(&only_b);
    sub_all = qmp_client_subscribe(client, NULL, on_event, &all, NULL);
    sub_b = qmp_client_subscribe(client, "EV_B", on_event, &only_b, NULL);
    g_assert_cmpuint(sub_all, !=, sub_b);

    reply = qmp_client_execute(client, "one", NULL, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    reply = qmp_client_execute(client, "two", NULL, &error);
    g_assert_no_error(error);
    json_object_put(reply);

    g_assert_cmpuint(all.names->len, ==, 3);
    g_assert_cmpstr(all.names->pdata[0], ==, "EV_A");
    g_assert_cmpstr(all.names->pdata[1], ==, "EV_B");
    g_assert_cmpstr(all.names->pdata[2], ==, "EV_C");
    g_assert_cmpint(g_array_index(all.timestamps, gint64, 0), ==, 100000001);
    g_assert_cmpint(g_array_index(all.timestamps, gint64, 1), ==, 100500000);
    g_assert_cmpint(g_array_index(all.timestamps, gint64, 2), ==, 101000002);
    g_assert_cmpstr(all.data->pdata[0], ==, "{ \"x\": 1 }");
    g_assert_cmpstr(all.data->pdata[1], ==, "{ }");
    g_assert_cmpuint(only_b.names->len, ==, 1);
    g_assert_cmpstr(only_b.names->pdata[0], ==, "EV_B");

    /* All three were queued while the synchronous calls waited. By name first... */
    ev = qmp_client_wait_event(client, "EV_C", 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(reply_string(ev, "event"), ==, "EV_C");
    g_assert_true(json_object_object_get_ex(ev, "timestamp", NULL));
    json_object_put(ev);
    /* ...then the rest in arrival order. */
    ev = qmp_client_wait_event(client, NULL, 0, &error);
    g_assert_cmpstr(reply_string(ev, "event"), ==, "EV_A");
    json_object_put(ev);
    ev = qmp_client_wait_event(client, NULL, 100, &error);
    g_assert_cmpstr(reply_string(ev, "event"), ==, "EV_B");
    json_object_put(ev);
    g_assert_null(qmp_client_wait_event(client, NULL, 0, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_TIMEOUT);
    g_clear_error(&error);

    /* Unsubscribed: no more deliveries (the connection is gone anyway: no crash). */
    qmp_client_unsubscribe(client, sub_b);
    qmp_client_unsubscribe(client, sub_all);
    fake_server_free(fs);
    /* The peer has gone: waiting reports it instead of blocking for the timeout. */
    g_assert_null(qmp_client_wait_event(client, "NEVER", 10000, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_cmpuint(all.names->len, ==, 3);
    event_log_clear(&all);
    event_log_clear(&only_b);
}

#define MANY_EVENTS 5000

static void script_many_events(FakeServer *fs, gpointer data)
{
    GString *burst = g_string_new(NULL);
    gint64 id;

    (void)data;
    fs_handshake(fs);
    id = fs_expect(fs, "flood");
    for (int i = 0; i < MANY_EVENTS; i++)
        g_string_append_printf(burst,
                               "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, "
                               "\"event\": \"E\", \"data\": {\"n\": %d}}\n",
                               i);
    fs_send(fs, burst->str);
    g_string_free(burst, TRUE);
    fs_reply(fs, id, "{}");
}

static void test_event_queue_bound(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_many_events, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;
    json_object *ev, *data, *n;
    int count = 0;

    json_object_put(qmp_client_execute(client, "flood", NULL, &error));
    g_assert_no_error(error);
    while ((ev = qmp_client_wait_event(client, "E", 0, NULL))) {
        g_assert_true(json_object_object_get_ex(ev, "data", &data));
        g_assert_true(json_object_object_get_ex(data, "n", &n));
        /* Oldest dropped: the survivors are the last 4096, in order. */
        g_assert_cmpint(json_object_get_int(n), ==, MANY_EVENTS - 4096 + count);
        count++;
        json_object_put(ev);
    }
    g_assert_cmpint(count, ==, 4096);

    fake_server_free(fs);
}

/* Big events: the queue is bounded by bytes too (64 events of 256 KiB would be 16 MiB; a
 * flood of them held a gigabyte). The survivors are the newest, in order. */
#define BIG_EVENTS 64
#define BIG_EVENT_BYTES (256 * 1024)

static void script_big_events(FakeServer *fs, gpointer data)
{
    g_autofree char *pad = g_strnfill(BIG_EVENT_BYTES, 'x');
    gint64 id;

    (void)data;
    fs_handshake(fs);
    id = fs_expect(fs, "flood");
    for (int i = 0; i < BIG_EVENTS; i++)
        fs_sendf(fs, "{\"event\": \"E\", \"data\": {\"n\": %d, \"pad\": \"%s\"}}\n", i, pad);
    fs_reply(fs, id, "{}");
}

static void test_event_queue_bytes(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_big_events, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;
    json_object *ev;
    int count = 0, last = -1;

    json_object_put(qmp_client_execute(client, "flood", NULL, &error));
    g_assert_no_error(error);
    while ((ev = qmp_client_wait_event(client, "E", 0, NULL))) {
        json_object *data = json_object_object_get(ev, "data");
        int n = json_object_get_int(json_object_object_get(data, "n"));

        g_assert_cmpint(n, >, last);
        last = n;
        count++;
        json_object_put(ev);
    }
    g_assert_cmpint(last, ==, BIG_EVENTS - 1);
    /* At most 4 MiB of event text stays queued. */
    g_assert_cmpint(count, >, 0);
    g_assert_cmpint((gint64)count * BIG_EVENT_BYTES, <=, 4 << 20);
    fake_server_free(fs);
}

/* {"return": null} and ill-typed error members: a NULL result always comes with an error
 * (callers rely on it; a missing error was dereferenced by the CLI and the daemon). */
static void script_null_return(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_reply(fs, fs_expect(fs, "a"), "null");
    fs_sendf(fs, "{\"error\": 5, \"id\": %" G_GINT64_FORMAT "}\n", fs_expect(fs, "b"));
    fs_sendf(fs, "{\"error\": {\"class\": [1], \"desc\": {}}, \"id\": %" G_GINT64_FORMAT "}\n",
             fs_expect(fs, "c"));
    fs_reply(fs, fs_expect(fs, "d"), "{}");
}

static void test_null_return(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_null_return, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;

    g_assert_null(qmp_client_execute(client, "a", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_PROTOCOL);
    g_clear_error(&error);
    g_assert_null(qmp_client_execute(client, "b", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_COMMAND);
    g_assert_cmpstr(qmp_error_get_class(error), ==, "GenericError");
    g_clear_error(&error);
    g_assert_null(qmp_client_execute(client, "c", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_COMMAND);
    g_assert_cmpstr(qmp_error_get_class(error), ==, "GenericError");
    g_clear_error(&error);
    /* The connection stays usable. */
    json_object_put(qmp_client_execute(client, "d", NULL, &error));
    g_assert_no_error(error);
    fake_server_free(fs);
}

/* A connected client's sources live on its owner's context: closing it from another thread
 * is the race the daemon once had (a migration's clients closed by the main thread while the
 * worker iterated). libqmp says so, as a critical. */
static void script_idle(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_expect_eof(fs);
}

static gpointer close_elsewhere(gpointer client)
{
    qmp_client_close(client);
    return NULL;
}

static void test_close_other_thread(void)
{
    if (g_test_subprocess()) {
        FakeServer *fs = fake_server_new(FALSE, script_idle, NULL);
        g_autoptr(QmpClient) client = connect_to(fs, NULL);

        g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL);
        g_thread_join(g_thread_new("other", close_elsewhere, client));
        fake_server_free(fs);
        return;
    }
    /* Fatal in the child (criticals are fatal in the tests), with the reason on stderr. */
    g_test_trap_subprocess(NULL, 10 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*belongs to another thread*");
}

/* A subscriber that itself runs synchronous calls while the transport is mid-buffer. */
typedef struct {
    json_object *later;
    json_object *inner;
    GError *error;
    GPtrArray *order;
} Reentrant;

static void on_kick(QmpClient *client, const char *name, json_object *data, gint64 ts,
                    gpointer user_data)
{
    Reentrant *re = user_data;

    (void)name;
    (void)data;
    (void)ts;
    /* LATER sits in the client's buffer already, and the socket stays quiet: only a nested
     * drain of the buffer can deliver it. */
    re->later = qmp_client_wait_event(client, "LATER", 3000, &re->error);
    if (re->later)
        re->inner = qmp_client_execute(client, "inner", NULL, &re->error);
}

static void on_any(QmpClient *client, const char *name, json_object *data, gint64 ts,
                   gpointer user_data)
{
    (void)client;
    (void)data;
    (void)ts;
    g_ptr_array_add(((Reentrant *)user_data)->order, g_strdup(name));
}

static void script_reentrant(FakeServer *fs, gpointer data)
{
    gint64 outer;

    (void)data;
    fs_handshake(fs);
    outer = fs_expect(fs, "outer");
    fs_send(fs, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 0}, \"event\": \"KICK\"}\n"
                "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 1}, \"event\": \"LATER\"}\n");
    fs_reply(fs, fs_expect(fs, "inner"), "{\"inner\": true}");
    fs_send(fs, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"LAST\"}\n");
    fs_reply(fs, outer, "{}");
}

static void test_reentrant(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_reentrant, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;
    Reentrant re = {0};
    json_object *reply;

    re.order = g_ptr_array_new_with_free_func(g_free);
    qmp_client_subscribe(client, NULL, on_any, &re, NULL);
    qmp_client_subscribe(client, "KICK", on_kick, &re, NULL);
    reply = qmp_client_execute(client, "outer", NULL, &error);
    g_assert_no_error(error);
    json_object_put(reply);

    g_assert_no_error(re.error);
    g_assert_nonnull(re.later);
    g_assert_nonnull(re.inner);
    g_assert_cmpuint(re.order->len, ==, 3);
    g_assert_cmpstr(re.order->pdata[0], ==, "KICK");
    g_assert_cmpstr(re.order->pdata[1], ==, "LATER");
    g_assert_cmpstr(re.order->pdata[2], ==, "LAST");
    json_object_put(re.later);
    json_object_put(re.inner);
    g_ptr_array_unref(re.order);
    fake_server_free(fs);
}

static void script_timeout(FakeServer *fs, gpointer data)
{
    gint64 slow;

    (void)data;
    fs_handshake(fs);
    slow = fs_expect(fs, "slow");
    fs_wait_signal(fs); /* the client has given up */
    fs_reply(fs, slow, "{\"late\": true}");
    fs_reply(fs, fs_expect(fs, "fast"), "{\"fast\": true}");
    fs_expect(fs, "never");
    fs_wait_signal(fs);
}

static void test_timeout(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_timeout, NULL);
    DisconnectRecord rec = {0};
    g_autoptr(QmpClient) client = connect_to(fs, &rec);
    g_autoptr(GError) error = NULL;
    json_object *reply;
    gint64 start = g_get_monotonic_time();

    g_assert_null(qmp_client_execute_full(client, "slow", NULL, NULL, 0, 200, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_TIMEOUT);
    g_assert_cmpint(g_get_monotonic_time() - start, >=, 190 * 1000);
    g_clear_error(&error);
    fake_server_signal(fs);

    /* The late reply arrives first and is dropped silently: no protocol error. */
    reply = qmp_client_execute(client, "fast", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(json_object_object_get_ex(reply, "fast", NULL));
    json_object_put(reply);
    g_assert_true(qmp_client_is_connected(client));
    g_assert_cmpint(rec.count, ==, 0);

    /* The client-wide default applies when the call says 0. */
    qmp_client_set_default_timeout(client, 100);
    g_assert_null(qmp_client_execute(client, "never", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_TIMEOUT);
    fake_server_signal(fs);
    fake_server_free(fs);
}

static void script_error_reply(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_sendf(fs,
             "{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}, "
             "\"id\": %" G_GINT64_FORMAT "}\r\n",
             fs_expect(fs, "device_del"));
    fs_reply(fs, fs_expect(fs, "after"), "{}");
}

static void test_error_reply(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_error_reply, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GError) copy = NULL;
    g_autoptr(GError) other = g_error_new_literal(QMP_ERROR, QMP_ERROR_TIMEOUT, "x");
    json_object *reply;

    g_assert_null(qmp_client_execute_json(client, "device_del", "{\"id\": \"x\"}", &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_COMMAND);
    g_assert_cmpstr(qmp_error_get_class(error), ==, "DeviceNotFound");
    g_assert_cmpstr(error->message, ==, "Device 'x' not found");
    copy = g_error_copy(error);
    g_prefix_error(&copy, "while unplugging: ");
    g_assert_cmpstr(qmp_error_get_class(copy), ==, "DeviceNotFound");
    g_assert_null(qmp_error_get_class(other));
    g_assert_null(qmp_error_get_class(NULL));
    g_clear_error(&error);

    /* Bad JSON arguments fail locally, before anything is sent. */
    g_assert_null(qmp_client_execute_json(client, "after", "{oops", &error));
    g_assert_nonnull(error);
    g_assert_null(qmp_error_get_class(error));
    g_clear_error(&error);

    /* An error reply is not a connection problem. */
    reply = qmp_client_execute(client, "after", NULL, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    fake_server_free(fs);
}

/* ------------------------------------------------------------------------------------ */
/* Endpoints and connecting */

static void script_tcp(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_reply(fs, fs_expect(fs, "query-status"), "{\"status\": \"running\"}");
}

static void test_tcp(void)
{
    FakeServer *fs = fake_server_new(TRUE, script_tcp, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) reply = NULL;
    int fd = 0;

    g_assert_true(g_str_has_prefix(fake_server_address(fs), "tcp:127.0.0.1:"));
    /* No SCM_RIGHTS over TCP: this command fails alone, nothing is sent. */
    g_assert_null(qmp_client_execute_full(client, "getfd", NULL, &fd, 1, 0, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
    g_clear_error(&error);
    reply = qmp_client_execute(client, "query-status", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(reply_string(reply, "status"), ==, "running");
    fake_server_free(fs);
}

static void script_silent(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_wait_signal(fs);
}

static void test_connect_timeout(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_silent, NULL);
    g_autoptr(GError) error = NULL;
    gint64 start = g_get_monotonic_time(), elapsed;

    g_assert_null(qmp_client_connect(fake_server_address(fs), 300, &error));
    elapsed = g_get_monotonic_time() - start;
    g_assert_error(error, QMP_ERROR, QMP_ERROR_TIMEOUT);
    g_assert_cmpint(elapsed, >=, 290 * 1000);
    g_assert_cmpint(elapsed, <, 5 * G_USEC_PER_SEC);
    fake_server_signal(fs);
    fake_server_free(fs);
}

static void test_connect_refused(void)
{
    g_autofree char *dir = g_dir_make_tmp("qmp-none-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "absent.sock", NULL);
    g_autoptr(GError) error = NULL;

    g_assert_null(qmp_client_connect(path, 1000, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_CONNECT);
    rmdir(dir);
}

static void on_connected(GObject *source, GAsyncResult *result, gpointer user_data)
{
    AsyncResult *r = user_data;
    QmpClient *client;

    (void)source;
    client = qmp_client_connect_finish(result, &r->error);
    g_assert_null(client);
    r->done = TRUE;
}

static gboolean cancel_later(gpointer data)
{
    g_cancellable_cancel(data);
    return G_SOURCE_REMOVE;
}

static void test_connect_cancel(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_silent, NULL);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    AsyncResult r = {0};

    qmp_client_connect_async(fake_server_address(fs), 0, cancellable, on_connected, &r);
    g_timeout_add(100, cancel_later, cancellable);
    iterate_until(&r.done, 10);
    g_assert_error(r.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    async_result_clear(&r);
    fake_server_signal(fs);
    fake_server_free(fs);
}

/* ------------------------------------------------------------------------------------ */
/* Lifetime */

/* The common pattern: the disconnect handler drops the owner's (last) reference. */
static void on_disconnect_unref(QmpClient *client, const GError *reason, gpointer user_data)
{
    (void)reason;
    *(gboolean *)user_data = TRUE;
    qmp_client_unref(client);
}

static void test_unref_in_handler(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_peer_close, NULL);
    QmpClient *client = connect_to(fs, NULL);
    gboolean called = FALSE;
    AsyncResult a = {0}, b = {0};

    qmp_client_set_disconnect_handler(client, on_disconnect_unref, &called, NULL);
    qmp_client_execute_async(client, "a", NULL, NULL, 0, 0, NULL, on_async_done, &a);
    qmp_client_execute_async(client, "b", NULL, NULL, 0, 0, NULL, on_async_done, &b);
    iterate_until(&called, 10);
    iterate_until(&a.done, 10);
    iterate_until(&b.done, 10);
    g_assert_error(a.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_error(b.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    async_result_clear(&a);
    async_result_clear(&b);
    fake_server_free(fs);
}

static void script_hold(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_expect(fs, "a");
    fs_expect(fs, "b");
    fs_expect_eof(fs); /* the client closed */
}

static void test_unref_pending(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_hold, NULL);
    DisconnectRecord rec = {0};
    QmpClient *client = connect_to(fs, &rec);
    AsyncResult a = {0}, b = {0};

    qmp_client_execute_async(client, "a", NULL, NULL, 0, 0, NULL, on_async_done, &a);
    qmp_client_execute_async(client, "b", NULL, NULL, 0, 0, NULL, on_async_done, &b);
    qmp_client_unref(client);
    iterate_until(&a.done, 10);
    iterate_until(&b.done, 10);
    g_assert_error(a.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_error(b.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_cmpint(rec.count, ==, 0); /* a local close is not reported */
    async_result_clear(&a);
    async_result_clear(&b);
    fake_server_free(fs);
}

static void test_close(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_hold, NULL);
    DisconnectRecord rec = {0};
    g_autoptr(QmpClient) client = connect_to(fs, &rec);
    g_autoptr(GError) error = NULL;
    AsyncResult a = {0}, b = {0};

    qmp_client_execute_async(client, "a", NULL, NULL, 0, 0, NULL, on_async_done, &a);
    qmp_client_execute_async(client, "b", NULL, NULL, 0, 0, NULL, on_async_done, &b);
    qmp_client_close(client);
    qmp_client_close(client);
    g_assert_false(qmp_client_is_connected(client));
    iterate_until(&a.done, 10);
    iterate_until(&b.done, 10);
    g_assert_error(a.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_error(b.error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    g_assert_cmpint(rec.count, ==, 0);
    g_assert_null(qmp_client_execute(client, "c", NULL, &error));
    g_assert_error(error, QMP_ERROR, QMP_ERROR_DISCONNECTED);
    async_result_clear(&a);
    async_result_clear(&b);
    fake_server_free(fs);
}

static void script_cancel(FakeServer *fs, gpointer data)
{
    gint64 id;

    (void)data;
    fs_handshake(fs);
    id = fs_expect(fs, "slow");
    fs_wait_signal(fs);
    fs_reply(fs, id, "{}");
    fs_reply(fs, fs_expect(fs, "next"), "{\"next\": 1}");
}

static void test_cancel(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_cancel, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) reply = NULL;
    AsyncResult a = {0};

    qmp_client_execute_async(client, "slow", NULL, NULL, 0, 0, cancellable, on_async_done, &a);
    g_cancellable_cancel(cancellable);
    iterate_until(&a.done, 10);
    g_assert_error(a.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    fake_server_signal(fs);
    reply = qmp_client_execute(client, "next", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(qmp_client_is_connected(client));
    async_result_clear(&a);
    fake_server_free(fs);
}

/* ------------------------------------------------------------------------------------ */
/* File-descriptor passing */

static void script_fds(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    {
        g_autoptr(FakeMsg) msg = fs_recv(fs);

        g_assert_cmpstr(msg->execute, ==, "getfd");
        g_assert_cmpuint(msg->fds->len, ==, 1);
        g_assert_true(msg->fds_at_start);
        g_assert_cmpint(write(g_array_index(msg->fds, int, 0), "hello", 5), ==, 5);
        fs_reply(fs, msg->id, "{}");
    }
    {
        g_autoptr(FakeMsg) msg = fs_recv(fs);

        g_assert_cmpstr(msg->execute, ==, "two-fds");
        g_assert_cmpuint(msg->fds->len, ==, 2);
        g_assert_true(msg->fds_at_start);
        g_assert_cmpint(write(g_array_index(msg->fds, int, 0), "A", 1), ==, 1);
        g_assert_cmpint(write(g_array_index(msg->fds, int, 1), "B", 1), ==, 1);
        fs_reply(fs, msg->id, "{}");
    }
    {
        g_autoptr(FakeMsg) msg = fs_recv(fs);

        g_assert_cmpstr(msg->execute, ==, "plain");
        g_assert_cmpuint(msg->fds->len, ==, 0);
        fs_reply(fs, msg->id, "{}");
    }
}

static void test_fd_passing(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_fds, NULL);
    g_autoptr(QmpClient) client = connect_to(fs, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) args = json_object_new_object();
    int p1[2], p2[2], bad_fd = 1000;
    char buf[8] = {0};
    json_object *reply;

    g_assert_cmpint(pipe(p1), ==, 0);
    g_assert_cmpint(pipe(p2), ==, 0);
    json_object_object_add(args, "fdname", json_object_new_string("x"));
    reply = qmp_client_execute_full(client, "getfd", args, &p1[1], 1, 0, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    /* The caller keeps its fd: the peer got a duplicate. */
    g_assert_cmpint(write(p1[1], "!", 1), ==, 1);
    g_assert_cmpint(read(p1[0], buf, sizeof buf), ==, 6);
    g_assert_cmpstr(buf, ==, "hello!");

    /* A bad fd fails that command alone, before anything is sent. */
    g_assert_null(qmp_client_execute_full(client, "getfd", args, &bad_fd, 1, 0, &error));
    g_assert_nonnull(error);
    g_assert_true(error->domain == G_IO_ERROR);
    g_clear_error(&error);

    {
        int two[2] = {p1[1], p2[1]};

        reply = qmp_client_execute_full(client, "two-fds", NULL, two, 2, 0, &error);
        g_assert_no_error(error);
        json_object_put(reply);
    }
    memset(buf, 0, sizeof buf);
    g_assert_cmpint(read(p1[0], buf, 1), ==, 1);
    g_assert_cmpint(read(p2[0], buf + 1, 1), ==, 1);
    g_assert_cmpstr(buf, ==, "AB");

    reply = qmp_client_execute(client, "plain", NULL, &error);
    g_assert_no_error(error);
    json_object_put(reply);
    for (int i = 0; i < 2; i++) {
        close(p1[i]);
        close(p2[i]);
    }
    fake_server_free(fs);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp/address/parse", test_address);
    g_test_add_func("/qmp/fake/basic", test_basic);
    g_test_add_func("/qmp/fake/garbage", test_garbage);
    g_test_add_func("/qmp/fake/bad-greeting", test_bad_greeting);
    g_test_add_func("/qmp/fake/close-mid-line", test_close_mid_line);
    g_test_add_func("/qmp/fake/peer-close", test_peer_close);
    g_test_add_func("/qmp/fake/huge-line", test_huge_line);
    g_test_add_func("/qmp/fake/max-line", test_max_line);
    g_test_add_func("/qmp/fake/out-of-order", test_out_of_order);
    g_test_add_func("/qmp/fake/events", test_events);
    g_test_add_func("/qmp/fake/event-queue-bound", test_event_queue_bound);
    g_test_add_func("/qmp/fake/event-queue-bytes", test_event_queue_bytes);
    g_test_add_func("/qmp/fake/null-return", test_null_return);
    g_test_add_func("/qmp/fake/close-other-thread", test_close_other_thread);
    g_test_add_func("/qmp/fake/reentrant-subscriber", test_reentrant);
    g_test_add_func("/qmp/fake/timeout", test_timeout);
    g_test_add_func("/qmp/fake/error-reply", test_error_reply);
    g_test_add_func("/qmp/fake/tcp", test_tcp);
    g_test_add_func("/qmp/fake/connect-timeout", test_connect_timeout);
    g_test_add_func("/qmp/fake/connect-refused", test_connect_refused);
    g_test_add_func("/qmp/fake/connect-cancel", test_connect_cancel);
    g_test_add_func("/qmp/fake/unref-pending", test_unref_pending);
    g_test_add_func("/qmp/fake/unref-in-disconnect-handler", test_unref_in_handler);
    g_test_add_func("/qmp/fake/close", test_close);
    g_test_add_func("/qmp/fake/cancel", test_cancel);
    g_test_add_func("/qmp/fake/fd-passing", test_fd_passing);
    return g_test_run();
}
