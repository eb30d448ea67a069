/* safe-migrated: the control socket. JSON lines over a unix stream socket, mode 0600/0660,
 * every peer checked with SO_PEERCRED; reads and writes are asynchronous with a bounded
 * output queue, so a slow or stuck client never holds the main loop or the migrations. */
#include "daemon.h"

#include <errno.h>
#include <gio/gunixsocketaddress.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* A client that lets this much output pile up is dropped (it still cannot stall anyone). */
#define MAX_QUEUED_BYTES (8u << 20)
#define MAX_REQUEST_BYTES (1u << 20)

struct Client {
    gint ref;
    Daemon *daemon;
    GSocketConnection *conn;
    GDataInputStream *in;
    GOutputStream *out;
    GCancellable *cancel;
    GQueue outq; /* GBytes* */
    gsize queued;
    gboolean writing, open, close_after_flush, privileged;
    uid_t uid;
    pid_t pid;
};

Client *client_ref(Client *c)
{
    g_atomic_int_inc(&c->ref);
    return c;
}

void client_unref(Client *c)
{
    if (!c || !g_atomic_int_dec_and_test(&c->ref))
        return;
    g_queue_clear_full(&c->outq, (GDestroyNotify)g_bytes_unref);
    g_clear_object(&c->in);
    g_clear_object(&c->conn);
    g_clear_object(&c->cancel);
    g_free(c);
}

gboolean client_is_open(Client *c)
{
    return c->open;
}

gboolean client_is_privileged(Client *c)
{
    return c->privileged;
}

static void client_close(Client *c)
{
    if (!c->open)
        return;
    c->open = FALSE;
    g_cancellable_cancel(c->cancel);
    g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
    Daemon *d = c->daemon;
    d->clients = g_list_remove(d->clients, c);
    daemon_client_gone(d, c);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, "MESSAGE", "client pid %d uid %u gone",
                     (int)c->pid, (unsigned)c->uid);
    client_unref(c);
}

static void write_next(Client *c);

static void on_written(GObject *source, GAsyncResult *res, gpointer data)
{
    Client *c = data;
    g_autoptr(GError) error = NULL;
    gboolean ok = g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL, &error);
    c->writing = FALSE;
    GBytes *done = g_queue_pop_head(&c->outq);
    if (done) {
        c->queued -= g_bytes_get_size(done);
        g_bytes_unref(done);
    }
    if (!ok)
        client_close(c);
    else if (!g_queue_is_empty(&c->outq))
        write_next(c);
    else if (c->close_after_flush)
        client_close(c);
    client_unref(c);
}

static void write_next(Client *c)
{
    if (c->writing || !c->open || g_queue_is_empty(&c->outq))
        return;
    GBytes *b = g_queue_peek_head(&c->outq);
    gsize len;
    const void *data = g_bytes_get_data(b, &len);
    c->writing = TRUE;
    g_output_stream_write_all_async(c->out, data, len, G_PRIORITY_DEFAULT, c->cancel, on_written,
                                    client_ref(c));
}

void client_send(Client *c, json_object *obj)
{
    if (!c->open) {
        json_object_put(obj);
        return;
    }
    const char *text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE);
    gsize len = strlen(text);
    char *line = g_malloc(len + 1);
    memcpy(line, text, len);
    line[len] = '\n';
    json_object_put(obj);
    g_queue_push_tail(&c->outq, g_bytes_new_take(line, len + 1));
    c->queued += len + 1;
    if (c->queued > MAX_QUEUED_BYTES) {
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE",
                         "client pid %d reads too slowly (%zu bytes queued): dropped", (int)c->pid,
                         c->queued);
        client_close(c);
        return;
    }
    write_next(c);
}

void client_reply_error(Client *c, json_object *id, const char *code, int exit_code,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_get(id));
    json_object_object_add(o, "ok", json_object_new_boolean(FALSE));
    json_object *e = json_object_new_object();
    json_object_object_add(e, "code", json_object_new_string(code));
    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(o, "error", e);
    json_object_object_add(o, "exit_code", json_object_new_int(exit_code));
    client_send(c, o);
}

static void read_next(Client *c);

static void on_line(GObject *source, GAsyncResult *res, gpointer data)
{
    Client *c = data;
    gsize len = 0;
    g_autoptr(GError) error = NULL;
    g_autofree char *line =
        g_data_input_stream_read_line_finish(G_DATA_INPUT_STREAM(source), res, &len, &error);
    if (!c->open) {
        client_unref(c);
        return;
    }
    if (!line) {
        client_close(c); /* EOF or error */
        client_unref(c);
        return;
    }
    if (len > MAX_REQUEST_BYTES) {
        client_reply_error(c, NULL, "bad-request", SM_EXIT_USAGE, "request longer than %u bytes",
                           MAX_REQUEST_BYTES);
        c->close_after_flush = TRUE;
        client_unref(c);
        return;
    }
    g_strstrip(line);
    if (*line) {
        enum json_tokener_error jerr = json_tokener_success;
        json_object *req = json_tokener_parse_verbose(line, &jerr);
        if (!req || !json_object_is_type(req, json_type_object))
            client_reply_error(c, NULL, "bad-request", SM_EXIT_USAGE,
                               "a request is one JSON object per line (%s)",
                               req ? "not an object" : json_tokener_error_desc(jerr));
        else
            daemon_handle_request(c->daemon, c, req);
        if (req)
            json_object_put(req);
    }
    read_next(c);
    client_unref(c);
}

static void read_next(Client *c)
{
    if (!c->open || c->close_after_flush)
        return;
    g_data_input_stream_read_line_async(c->in, G_PRIORITY_DEFAULT, c->cancel, on_line,
                                        client_ref(c));
}

/* Whether the process is in group `gid` (supplementary groups included). */
static gboolean pid_in_group(pid_t pid, gid_t gid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return FALSE;
    const char *groups = strstr(text, "\nGroups:");
    if (!groups)
        return FALSE;
    g_autofree char *line = g_strndup(groups + 8, strcspn(groups + 8, "\n"));
    g_auto(GStrv) parts = g_strsplit_set(line, " \t", -1);
    for (guint i = 0; parts[i]; i++)
        if (*parts[i] && g_ascii_strtoull(parts[i], NULL, 10) == gid)
            return TRUE;
    return FALSE;
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *conn, GObject *source,
                            gpointer data)
{
    Daemon *d = data;
    (void)service, (void)source;
    Client *c = g_new0(Client, 1);
    c->ref = 1;
    c->daemon = d;
    c->conn = g_object_ref(conn);
    c->cancel = g_cancellable_new();
    c->in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(conn)));
    c->out = g_io_stream_get_output_stream(G_IO_STREAM(conn));
    c->open = TRUE;
    c->pid = -1;
    c->uid = (uid_t)-1;
    d->clients = g_list_prepend(d->clients, c);

    /* The file mode keeps strangers out already; the kernel's word on who connected is the
     * second lock, and covers a socket whose mode someone loosened. */
    g_autoptr(GError) error = NULL;
    g_autoptr(GCredentials) creds =
        g_socket_get_credentials(g_socket_connection_get_socket(conn), &error);
    gboolean allowed = FALSE;
    gid_t gid = (gid_t)-1;
    if (creds) {
        const struct ucred *uc = g_credentials_get_native(creds, G_CREDENTIALS_TYPE_LINUX_UCRED);
        c->uid = uc->uid;
        c->pid = uc->pid;
        gid = uc->gid;
        c->privileged = uc->uid == 0 || uc->uid == geteuid();
        allowed =
            c->privileged || ((d->socket_mode & 0070) &&
                              (uc->gid == d->socket_gid || pid_in_group(uc->pid, d->socket_gid)));
    }
    if (!allowed) {
        d->metrics.client_rejects++;
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE",
                         "refused a client: pid %d uid %d gid %d is neither the owner nor in "
                         "the socket's group%s%s",
                         (int)c->pid, (int)c->uid, (int)gid, error ? ": " : "",
                         error ? error->message : "");
        client_reply_error(c, NULL, "permission-denied", SM_EXIT_UNREACHABLE,
                           "uid %d may not use this socket", (int)c->uid);
        c->close_after_flush = TRUE;
        return TRUE;
    }
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, "MESSAGE", "client pid %d uid %u connected",
                     (int)c->pid, (unsigned)c->uid);
    read_next(c);
    return TRUE;
}

/* Refuses to take over the socket of a daemon that still answers; removes a stale one. */
static gboolean claim_path(const char *path, GError **error)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT || (g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                                               "%s: %s", path, g_strerror(errno)),
                                   FALSE);
    if (!S_ISSOCK(st.st_mode)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS, "%s exists and is not a socket", path);
        return FALSE;
    }
    g_autoptr(GSocketClient) probe = g_socket_client_new();
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
    g_autoptr(GSocketConnection) conn =
        g_socket_client_connect(probe, G_SOCKET_CONNECTABLE(addr), NULL, NULL);
    if (conn) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE,
                    "another daemon is listening on %s", path);
        return FALSE;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "cannot remove %s: %s", path,
                    g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

gboolean control_listen(Daemon *d, GError **error)
{
    if (!claim_path(d->socket_path, error))
        return FALSE;
    d->service = g_socket_service_new();
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(d->socket_path);
    /* The socket never exists with a looser mode than asked, not even for an instant. */
    mode_t old = umask(0777 & ~d->socket_mode);
    gboolean ok =
        g_socket_listener_add_address(G_SOCKET_LISTENER(d->service), addr, G_SOCKET_TYPE_STREAM,
                                      G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL, error);
    umask(old);
    if (!ok)
        return FALSE;
    if (chown(d->socket_path, (uid_t)-1, d->socket_gid) != 0 ||
        chmod(d->socket_path, d->socket_mode) != 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "%s: %s", d->socket_path,
                    g_strerror(errno));
        return FALSE;
    }
    g_signal_connect(d->service, "incoming", G_CALLBACK(on_incoming), d);
    g_socket_service_start(d->service);
    return TRUE;
}

/* Stops accepting; clients already connected stay until they or the daemon leave. */
void control_close(Daemon *d)
{
    if (d->service) {
        g_socket_service_stop(d->service);
        g_socket_listener_close(G_SOCKET_LISTENER(d->service));
        g_clear_object(&d->service);
        unlink(d->socket_path);
    }
}

static gboolean set_flag(gpointer data)
{
    *(gboolean *)data = TRUE;
    return G_SOURCE_REMOVE;
}

/* Hangs up on every client, after what is queued for it went out (results of migrations
 * called off at shutdown above all), giving slow readers two seconds. */
void control_drop_clients(Daemon *d)
{
    g_autoptr(GList) copy = g_list_copy(d->clients);
    for (GList *l = copy; l; l = l->next) {
        Client *c = l->data;
        if (!c->writing && g_queue_is_empty(&c->outq))
            client_close(c);
        else
            c->close_after_flush = TRUE;
    }
    gboolean expired = FALSE;
    guint timer = g_timeout_add(2000, set_flag, &expired);
    while (d->clients && !expired)
        g_main_context_iteration(d->ctx, TRUE);
    if (!expired)
        g_source_remove(timer);
    while (d->clients)
        client_close(d->clients->data);
}
