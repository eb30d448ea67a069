/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target for libqmp's reader: the input is what "QEMU" sends down a real unix
 * socket (greeting, replies, events, garbage), written whole, line by line or in small
 * chunks; the client must end in a clean error or disconnect, never a crash or a hang.
 * A fourth mode feeds the typed command layer: each input line is the "return" value of the
 * next command safe-migrate sends (every JSON type, any shape); each call must give a result
 * or an error, never neither. */
#include "qmp-commands.h"
#include "qmp-private.h"
#include "typed-calls.h" /* tests/qmp/: the calls, shared with test-qmp-commands */

#include <fcntl.h>

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Commands the harness has in flight once connected: ids 2..N_COMMANDS+1, so a transcript
 * can answer them (qmp_capabilities is id 1). */
#define N_COMMANDS 8

static char *socket_path;
static int listen_fd = -1;

typedef struct {
    QmpClient *client;
    gboolean connect_done;
    gboolean disconnected;
    guint outstanding;
    guint events, replies;
} Run;

static void setup_listener(void)
{
    if (listen_fd >= 0)
        return;
    char *dir = g_dir_make_tmp("fuzzqmp-XXXXXX", NULL);
    g_assert(dir);
    socket_path = g_build_filename(dir, "s", NULL);
    g_free(dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    g_strlcpy(sa.sun_path, socket_path, sizeof sa.sun_path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(listen_fd, 16) < 0)
        g_error("fuzz-qmp: cannot listen on %s: %s", socket_path, g_strerror(errno));
}

static void on_reply(GObject *source, GAsyncResult *result, gpointer data)
{
    Run *r = data;
    g_autoptr(GError) error = NULL;
    (void)source;
    json_object *reply = qmp_client_execute_finish(r->client, result, &error);
    /* No reply and no error is what crashed the daemon and the CLI. */
    if (!reply && !error)
        __builtin_trap();
    if (reply) {
        json_object_put(reply);
        r->replies++;
    } else
        (void)qmp_error_get_class(error);
    r->outstanding--;
}

static void on_event(QmpClient *client, const char *name, json_object *event_data,
                     gint64 timestamp_us, gpointer user_data)
{
    Run *r = user_data;
    (void)client, (void)timestamp_us;
    /* What subscribers rely on: a name and an object. */
    if (!name || !event_data)
        __builtin_trap();
    (void)json_object_to_json_string(event_data);
    r->events++;
}

static void on_disconnect(QmpClient *client, const GError *reason, gpointer user_data)
{
    Run *r = user_data;
    (void)client;
    if (!reason || !reason->message)
        __builtin_trap();
    r->disconnected = TRUE;
}

static void on_connected(GObject *source, GAsyncResult *result, gpointer data)
{
    Run *r = data;
    g_autoptr(GError) error = NULL;
    (void)source;
    r->client = qmp_client_connect_finish(result, &error);
    r->connect_done = TRUE;
    if (!r->client)
        return;
    qmp_client_set_disconnect_handler(r->client, on_disconnect, r, NULL);
    qmp_client_subscribe(r->client, NULL, on_event, r, NULL);
    qmp_client_subscribe(r->client, "MIGRATION", on_event, r, NULL);
    (void)qmp_client_get_version(r->client);
    (void)qmp_client_get_package(r->client);
    (void)qmp_client_has_capability(r->client, "oob");
    static const char *const commands[N_COMMANDS] = {
        "query-status",   "query-migrate", "stop",     "cont", "migrate-set-capabilities",
        "migrate_cancel", "query-version", "qom-list",
    };
    for (guint i = 0; i < N_COMMANDS; i++) {
        r->outstanding++;
        /* G_MAXUINT: no timeout; the harness ends every run with EOF instead. */
        qmp_client_execute_async(r->client, commands[i], NULL, NULL, 0, G_MAXUINT, NULL, on_reply,
                                 r);
    }
}

/* Runs every ready source without blocking, and swallows what the client wrote. */
static void settle(GMainContext *ctx, int server)
{
    char sink[4096];
    for (int i = 0; i < 1000; i++) {
        while (server >= 0 && recv(server, sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
        if (!g_main_context_iteration(ctx, FALSE))
            break;
    }
}

static void send_all(GMainContext *ctx, int server, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(server, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return; /* the client hung up: the rest is moot */
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        }
        settle(ctx, server);
    }
}

/* ---- Typed mode ---------------------------------------------------------------------- */

static int spare_fd = -1; /* passed by add-fd and getfd */

static void write_all(int server, const char *text)
{
    size_t n = strlen(text);
    while (n > 0) {
        ssize_t w = send(server, text, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        text += w;
        n -= (size_t)w;
    }
}

static void store_result(GObject *source, GAsyncResult *result, gpointer data)
{
    (void)source;
    *(GAsyncResult **)data = g_object_ref(result);
}

static int accept_client(GMainContext *ctx)
{
    int server = -1;
    for (int i = 0; server < 0; i++) {
        g_main_context_iteration(ctx, FALSE);
        server = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (server < 0 && i > 100000)
            g_error("fuzz-qmp: the client never connected");
    }
    return server;
}

/* The reply to id N is written before the call that sends command N: the socket holds it
 * until the client reads, so the synchronous typed call finds it waiting. */
static void run_typed(GMainContext *ctx, const uint8_t *p, size_t n)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GAsyncResult) result = NULL;
    g_autofree char *address = g_strdup_printf("unix:%s", socket_path);
    qmp_client_connect_async(address, 0, NULL, store_result, &result);
    int server = accept_client(ctx);
    write_all(server, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, "
                      "\"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\n"
                      "{\"return\": {}, \"id\": 1}\n");
    while (!result)
        g_main_context_iteration(ctx, TRUE);
    QmpClient *client = qmp_client_connect_finish(result, &error);
    if (!client)
        __builtin_trap();
    /* An input that turns a reply into an event must not wait 30 s for the reply. */
    qmp_client_set_default_timeout(client, 50);
    if (spare_fd < 0)
        spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    gint64 id = 2;
    for (guint i = 0; n > 0 && i < 64; i++, id++) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t len = nl ? (size_t)(nl - p) : n;
        g_autofree char *value = g_strndup((const char *)p, len);
        g_autofree char *line =
            g_strdup_printf("{\"return\": %s, \"id\": %" G_GINT64_FORMAT "}\n", value, id);
        p += nl ? len + 1 : len;
        n -= nl ? len + 1 : len;
        if (qmp_client_is_connected(client))
            write_all(server, line);
        gboolean ok = qmp_typed_calls[i % qmp_n_typed_calls].run(client, spare_fd, &error);
        if (ok == (error != NULL))
            __builtin_trap();
        g_clear_error(&error);
        char sink[4096];
        while (recv(server, sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
    }
    qmp_client_unref(client);
    close(server);
    while (g_main_context_iteration(ctx, FALSE)) {
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup_listener();
    GMainContext *ctx = g_main_context_default();
    if (data[0] % 4 == 3) {
        /* Typed mode: the harness plays the handshake, the input the replies. */
        run_typed(ctx, data + 1, size - 1);
        return 0;
    }
    Run r = {0};
    g_autofree char *address = g_strdup_printf("unix:%s", socket_path);
    qmp_client_connect_async(address, 0, NULL, on_connected, &r);
    int server = -1;
    for (int i = 0; server < 0; i++) {
        g_main_context_iteration(ctx, FALSE);
        server = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (server < 0 && i > 100000)
            g_error("fuzz-qmp: the client never connected");
    }

    /* First byte: how the stream is cut into writes (whole, line by line, fixed chunks). */
    guint mode = data[0] % 4;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (mode == 0) {
        send_all(ctx, server, p, n);
    } else if (mode == 1) {
        while (n > 0) {
            const uint8_t *nl = memchr(p, '\n', n);
            size_t len = nl ? (size_t)(nl - p) + 1 : n;
            send_all(ctx, server, p, len);
            p += len;
            n -= len;
        }
    } else if (n > 0) {
        /* Second byte: the write size, 1..16. */
        size_t chunk = (size_t)(p[0] % 16) + 1;
        p++, n--;
        for (size_t off = 0; off < n; off += chunk)
            send_all(ctx, server, p + off, MIN(chunk, n - off));
    }
    shutdown(server, SHUT_WR);

    /* EOF must end everything: the handshake, or the connection and every command. */
    while (!r.connect_done || (r.client && !r.disconnected) || r.outstanding > 0) {
        char sink[4096];
        while (recv(server, sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
        g_main_context_iteration(ctx, TRUE);
    }
    /* FUZZ_QMP_VERBOSE=1: how far each input got, to check that seeds reach the protocol. */
    if (g_getenv("FUZZ_QMP_VERBOSE"))
        g_printerr("fuzz-qmp: connected %d, replies %u, events %u\n", r.client != NULL, r.replies,
                   r.events);
    if (r.client) {
        g_autoptr(GError) error = NULL;
        json_object *ev;
        while ((ev = qmp_client_wait_event(r.client, NULL, 0, &error)))
            json_object_put(ev);
        if (qmp_client_is_connected(r.client))
            __builtin_trap();
        qmp_client_unref(r.client);
    }
    close(server);
    settle(ctx, -1);
    return 0;
}
