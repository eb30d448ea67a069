/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the control socket. JSON lines over a unix stream socket, mode 0600/0660,
 * every peer checked with SO_PEERCRED and SO_PEERGROUPS; reads and writes are asynchronous
 * and bounded by bytes both ways (a request line is checked while it is read, not after it
 * was buffered whole), connections are capped (with room kept for the owner) and idle ones
 * closed, so that a slow, stuck or hostile client never holds the main loop or the
 * migrations. Every request gets exactly one reply, or the connection is closed. */
#include "control.h"
#include "gate.h" /* exit codes */
#include "privilege.h"

#include <errno.h>
#include <gio/gunixsocketaddress.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* A client that lets this much output pile up is dropped (it still cannot stall anyone). */
#define MAX_QUEUED_BYTES (8u << 20)
#define READ_CHUNK 4096

struct Control {
    ControlConfig config; /* socket_path owned */
    ControlHandlers handlers;
    gpointer data;
    FdUse *fds;
    Metrics *metrics;
    RateLimit *reject_log;
    Listener *listener;
    GSource *idle_sweep;
    GList *clients; /* Client* */
};

struct Client {
    gint ref;
    Control *ctl;
    GSocketConnection *conn;
    GInputStream *in;
    GOutputStream *out;
    GCancellable *cancel;
    guint8 chunk[READ_CHUNK];
    GByteArray *inbuf; /* at most SM_MAX_REQUEST_BYTES + READ_CHUNK */
    GQueue outq;       /* GBytes* */
    gsize queued;
    gboolean writing, open, close_after_flush, privileged, counted;
    gint64 last_active_us;
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
    g_byte_array_unref(c->inbuf);
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
    Control *ctl = c->ctl;
    ctl->clients = g_list_remove(ctl->clients, c);
    ctl->fds->clients--;
    ctl->handlers.gone(ctl->data, c);
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
    c->last_active_us = g_get_monotonic_time();
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
    ASSERT_MAIN();
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

void client_reply_ok(Client *c, json_object *id, json_object *fields)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_get(id));
    json_object_object_add(o, "ok", json_object_new_boolean(TRUE));
    if (fields) {
        json_object_object_foreach(fields, key, value)
        {
            json_object_object_add(o, key, json_object_get(value));
        }
        json_object_put(fields);
    }
    client_send(c, o);
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

/* One complete request line (terminator stripped). */
static void handle_line(Client *c, const char *line, gsize len)
{
    while (len > 0 && g_ascii_isspace(line[len - 1]))
        len--;
    gsize start = 0;
    while (start < len && g_ascii_isspace(line[start]))
        start++;
    if (start == len && !memchr(line, '\0', len))
        return; /* blank lines are not requests */
    /* Checked before parsing, so that no error message ever echoes NUL or invalid UTF-8. */
    if (memchr(line, '\0', len)) {
        client_reply_error(c, NULL, "bad-request", SM_EXIT_USAGE,
                           "a request is one JSON object per line (it contains a NUL byte)");
        return;
    }
    if (!g_utf8_validate_len(line, len, NULL)) {
        client_reply_error(c, NULL, "bad-request", SM_EXIT_USAGE,
                           "a request is one JSON object per line, in UTF-8");
        return;
    }
    json_tokener *tok = json_tokener_new();
    json_object *req = json_tokener_parse_ex(tok, line + start, (int)(len - start));
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (req && jerr == json_tokener_success && json_tokener_get_parse_end(tok) < len - start)
        jerr = json_tokener_error_parse_unexpected;
    if (!req || jerr != json_tokener_success || !json_object_is_type(req, json_type_object))
        client_reply_error(
            c, NULL, "bad-request", SM_EXIT_USAGE, "a request is one JSON object per line (%s)",
            req && jerr == json_tokener_success ? "not an object" : json_tokener_error_desc(jerr));
    else
        c->ctl->handlers.request(c->ctl->data, c, req);
    json_object_put(req);
    json_tokener_free(tok);
}

/* Hands out the complete lines in the buffer; a line that outgrows the limit is refused as
 * soon as it does, without waiting for its end. */
static void process_input(Client *c)
{
    gsize start = 0;
    guint8 *nl;
    while (c->open && !c->close_after_flush &&
           (nl = memchr(c->inbuf->data + start, '\n', c->inbuf->len - start))) {
        gsize len = (gsize)(nl - c->inbuf->data) - start;
        if (len <= SM_MAX_REQUEST_BYTES)
            handle_line(c, (const char *)c->inbuf->data + start, len);
        else
            break;
        start += len + 1;
    }
    g_byte_array_remove_range(c->inbuf, 0, (guint)MIN(start, c->inbuf->len));
    if (c->open && !c->close_after_flush && c->inbuf->len > SM_MAX_REQUEST_BYTES) {
        client_reply_error(c, NULL, "bad-request", SM_EXIT_USAGE, "request longer than %u bytes",
                           SM_MAX_REQUEST_BYTES);
        c->close_after_flush = TRUE;
        g_byte_array_set_size(c->inbuf, 0);
        if (!c->writing && g_queue_is_empty(&c->outq))
            client_close(c);
    }
}

static void on_read(GObject *source, GAsyncResult *res, gpointer data)
{
    Client *c = data;
    g_autoptr(GError) error = NULL;
    gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, &error);
    if (!c->open) {
        client_unref(c);
        return;
    }
    if (n <= 0) {
        client_close(c); /* EOF or error */
        client_unref(c);
        return;
    }
    c->last_active_us = g_get_monotonic_time();
    g_byte_array_append(c->inbuf, c->chunk, (guint)n);
    process_input(c);
    read_next(c);
    client_unref(c);
}

static void read_next(Client *c)
{
    if (!c->open || c->close_after_flush)
        return;
    g_input_stream_read_async(c->in, c->chunk, sizeof c->chunk, G_PRIORITY_DEFAULT, c->cancel,
                              on_read, client_ref(c));
}

/* The kernel's word on who connected (the file mode keeps strangers out already; this is
 * the second lock, and covers a socket whose mode someone loosened). */
static gboolean check_peer(Control *ctl, Client *c, GSocket *sock)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GCredentials) creds = g_socket_get_credentials(sock, &error);
    gboolean allowed = FALSE;
    gid_t gid = (gid_t)-1;
    if (creds) {
        const struct ucred *uc = g_credentials_get_native(creds, G_CREDENTIALS_TYPE_LINUX_UCRED);
        c->uid = uc->uid;
        c->pid = uc->pid;
        gid = uc->gid;
        c->privileged = uc->uid == 0 || uc->uid == geteuid();
        allowed = c->privileged || ((ctl->config.socket_mode & 0070) &&
                                    privilege_peer_in_group(g_socket_get_fd(sock), uc->pid, uc->gid,
                                                            ctl->config.socket_gid));
    }
    if (!allowed) {
        ctl->metrics->client_rejects++;
        ratelimit_log(ctl->reject_log, G_LOG_LEVEL_WARNING,
                      "refused a client: pid %d uid %d gid %d is neither the owner nor in the "
                      "socket's group%s%s",
                      (int)c->pid, (int)c->uid, (int)gid, error ? ": " : "",
                      error ? error->message : "");
        client_reply_error(c, NULL, "permission-denied", SM_EXIT_UNREACHABLE,
                           "uid %d may not use this socket", (int)c->uid);
    }
    return allowed;
}

/* Room for one more client: members never take the owner's reserved slots, and one member
 * uid never takes all of theirs. */
static gboolean has_room(Control *ctl, Client *c)
{
    guint n = ctl->fds->clients;
    if (!c->privileged) {
        guint same_uid = 0;
        for (GList *l = ctl->clients; l; l = l->next)
            same_uid += ((Client *)l->data)->uid == c->uid;
        if (n > SM_MAX_CLIENTS - SM_OWNER_RESERVED || same_uid > SM_MAX_CLIENTS_PER_UID)
            return FALSE;
    }
    return n <= SM_MAX_CLIENTS;
}

static void on_accept(GSocket *sock, gpointer data)
{
    Control *ctl = data;
    if (!fd_budget_allows(ctl->fds)) {
        /* Closed at once: the fds left belong to the VMs' QMP connections. */
        ratelimit_log(ctl->reject_log, G_LOG_LEVEL_WARNING,
                      "control socket: no file descriptors to spare for another client "
                      "(%u connected): connection closed",
                      ctl->fds->clients);
        g_socket_close(sock, NULL);
        return;
    }
    Client *c = g_new0(Client, 1);
    c->ref = 1;
    c->ctl = ctl;
    c->conn = g_socket_connection_factory_create_connection(sock);
    c->cancel = g_cancellable_new();
    c->in = g_io_stream_get_input_stream(G_IO_STREAM(c->conn));
    c->out = g_io_stream_get_output_stream(G_IO_STREAM(c->conn));
    c->inbuf = g_byte_array_new();
    c->open = TRUE;
    c->pid = -1;
    c->uid = (uid_t)-1;
    c->last_active_us = g_get_monotonic_time();
    ctl->clients = g_list_prepend(ctl->clients, c);
    ctl->fds->clients++;
    if (!check_peer(ctl, c, sock)) {
        c->close_after_flush = TRUE;
        return;
    }
    if (!has_room(ctl, c)) {
        ratelimit_log(ctl->reject_log, G_LOG_LEVEL_WARNING,
                      "control socket: too many clients (%u; uid %u): connection refused",
                      ctl->fds->clients, (unsigned)c->uid);
        client_reply_error(c, NULL, "busy", SM_EXIT_UNREACHABLE,
                           "too many connections to the daemon; try again later");
        c->close_after_flush = TRUE;
        return;
    }
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, "MESSAGE", "client pid %d uid %u connected",
                     (int)c->pid, (unsigned)c->uid);
    read_next(c);
}

/* Closes control clients that said nothing, were sent nothing and follow no migration for
 * the idle timeout: a member cannot hold connections open forever. */
static gboolean sweep_idle(gpointer data)
{
    Control *ctl = data;
    gint64 now = g_get_monotonic_time();
    g_autoptr(GList) copy = g_list_copy(ctl->clients);
    for (GList *l = copy; l; l = l->next) {
        Client *c = l->data;
        if (c->open && !c->writing &&
            now - c->last_active_us >= (gint64)ctl->config.client_idle_ms * 1000 &&
            !ctl->handlers.follows(ctl->data, c)) {
            g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, "MESSAGE",
                             "client pid %d uid %u idle: closed", (int)c->pid, (unsigned)c->uid);
            client_close(c);
        }
    }
    return G_SOURCE_CONTINUE;
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

/* A socket bound with no looser mode than asked, not even for an instant, and listening. */
static GSocket *bind_socket(const ControlConfig *config, GError **error)
{
    if (!claim_path(config->socket_path, error))
        return NULL;
    g_autoptr(GSocket) sock =
        g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, error);
    if (!sock)
        return NULL;
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(config->socket_path);
    mode_t old = umask(0777 & ~config->socket_mode);
    gboolean ok = g_socket_bind(sock, addr, TRUE, error);
    umask(old);
    g_socket_set_listen_backlog(sock, SM_MAX_CLIENTS);
    if (!ok || !g_socket_listen(sock, error))
        return NULL;
    if (chown(config->socket_path, (uid_t)-1, config->socket_gid) != 0 ||
        chmod(config->socket_path, config->socket_mode) != 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "%s: %s", config->socket_path,
                    g_strerror(errno));
        return NULL;
    }
    return g_steal_pointer(&sock);
}

Control *control_listen(const ControlConfig *config, const ControlHandlers *handlers, gpointer data,
                        FdUse *fds, Metrics *metrics, RateLimit *reject_log, GError **error)
{
    ASSERT_MAIN();
    g_autoptr(GSocket) sock = bind_socket(config, error);
    if (!sock)
        return NULL;
    Control *ctl = g_new0(Control, 1);
    ctl->config = *config;
    ctl->config.socket_path = g_strdup(config->socket_path);
    ctl->handlers = *handlers;
    ctl->data = data;
    ctl->fds = fds;
    ctl->metrics = metrics;
    ctl->reject_log = reject_log;
    ctl->listener = listener_new(sock, "control socket", on_accept, ctl);
    ctl->idle_sweep = g_timeout_source_new(MAX(config->client_idle_ms / 4, 100));
    g_source_set_callback(ctl->idle_sweep, sweep_idle, ctl, NULL);
    g_source_attach(ctl->idle_sweep, NULL);
    return ctl;
}

void control_close(Control *ctl)
{
    if (!ctl)
        return;
    if (ctl->listener) {
        g_clear_pointer(&ctl->listener, listener_free);
        unlink(ctl->config.socket_path);
    }
    if (ctl->idle_sweep) {
        g_source_destroy(ctl->idle_sweep);
        g_clear_pointer(&ctl->idle_sweep, g_source_unref);
    }
}

guint control_n_clients(Control *ctl)
{
    return ctl ? g_list_length(ctl->clients) : 0;
}

static gboolean set_flag(gpointer data)
{
    *(gboolean *)data = TRUE;
    return G_SOURCE_REMOVE;
}

/* Results of migrations called off at shutdown above all go out before the hang-up. */
void control_free(Control *ctl)
{
    if (!ctl)
        return;
    control_close(ctl);
    g_autoptr(GList) copy = g_list_copy(ctl->clients);
    for (GList *l = copy; l; l = l->next) {
        Client *c = l->data;
        if (!c->writing && g_queue_is_empty(&c->outq))
            client_close(c);
        else
            c->close_after_flush = TRUE;
    }
    gboolean expired = FALSE;
    guint timer = g_timeout_add(2000, set_flag, &expired);
    while (ctl->clients && !expired)
        g_main_context_iteration(NULL, TRUE);
    if (!expired)
        g_source_remove(timer);
    while (ctl->clients)
        client_close(ctl->clients->data);
    g_free((char *)ctl->config.socket_path);
    g_free(ctl);
}
