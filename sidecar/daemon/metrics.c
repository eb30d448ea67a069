/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: metrics in the Prometheus text format (0.0.4), fed by the migrations'
 * own events, served by the `metrics` op and optionally over plain HTTP. */
#include "metrics.h"
#include "gate.h"      /* the event schema's names */
#include "sm-config.h" /* SM_VERSION */

#include <string.h>

/* Upper bounds in seconds. */
static const double downtime_bounds[SM_DOWNTIME_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                            0.5,   1,    2.5,   5,    10};
static const double probe_bounds[SM_PROBE_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,   0.5,   1};

void metrics_init(Metrics *m)
{
    memset(m, 0, sizeof *m);
    m->migrations = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
}

void metrics_clear(Metrics *m)
{
    g_clear_pointer(&m->migrations, g_hash_table_unref);
}

static void observe(guint64 *counts, const double *bounds, guint n, double *sum, double value)
{
    guint i = 0;
    while (i < n && value > bounds[i])
        i++;
    counts[i]++; /* cumulated when rendered */
    *sum += value;
}

void metrics_observe_probe(Metrics *m, gint64 probe_us)
{
    ASSERT_MAIN();
    if (probe_us > 0)
        observe(m->probe_counts, probe_bounds, SM_PROBE_BUCKETS, &m->probe_sum, probe_us / 1e6);
}

void metrics_observe_event(Metrics *m, json_object *event)
{
    ASSERT_MAIN();
    const char *name = qmp_json_string(event, SM_EVENT_KEY_EVENT);
    json_object *v;
    if (g_strcmp0(name, SM_EVENT_PRE_SWITCHOVER) == 0 &&
        json_object_object_get_ex(event, SM_EVENT_KEY_PROBE_US, &v))
        metrics_observe_probe(m, json_object_get_int64(v));
    if (g_strcmp0(name, SM_EVENT_RESULT) != 0)
        return;
    const char *result = qmp_json_string(event, SM_EVENT_KEY_RESULT);
    const char *path = qmp_json_string(event, SM_EVENT_KEY_PATH);
    g_autofree char *key = g_strdup_printf("%s\n%s", result ?: "unknown", path ? path : "none");
    gpointer old = g_hash_table_lookup(m->migrations, key);
    g_hash_table_insert(m->migrations, g_steal_pointer(&key),
                        GUINT_TO_POINTER(GPOINTER_TO_UINT(old) + 1));
    if (json_object_object_get_ex(event, SM_EVENT_KEY_ATTEMPTS, &v))
        m->attempts += (guint64)MAX(json_object_get_int64(v), 0);
    if (json_object_object_get_ex(event, SM_EVENT_KEY_HOLDS, &v))
        m->holds += (guint64)MAX(json_object_get_int64(v), 0);
    if (g_strcmp0(result, SM_RESULT_MIGRATED) == 0 &&
        json_object_object_get_ex(event, SM_EVENT_KEY_DOWNTIME_MS, &v) &&
        json_object_get_int64(v) >= 0)
        observe(m->downtime_counts, downtime_bounds, SM_DOWNTIME_BUCKETS, &m->downtime_sum,
                json_object_get_int64(v) / 1e3);
}

static void histogram(GString *out, const char *name, const char *help, const guint64 *counts,
                      const double *bounds, guint n, double sum)
{
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    guint64 cumulated = 0;
    for (guint i = 0; i < n; i++) {
        cumulated += counts[i];
        g_string_append_printf(out, "%s_bucket{le=\"%g\"} %" G_GUINT64_FORMAT "\n", name, bounds[i],
                               cumulated);
    }
    cumulated += counts[n];
    g_string_append_printf(out, "%s_bucket{le=\"+Inf\"} %" G_GUINT64_FORMAT "\n", name, cumulated);
    g_string_append_printf(out, "%s_sum %.6f\n%s_count %" G_GUINT64_FORMAT "\n", name, sum, name,
                           cumulated);
}

static void counter(GString *out, const char *name, const char *help, guint64 value)
{
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %" G_GUINT64_FORMAT "\n", name,
                           help, name, name, value);
}

/* VMs by connection state, every state always present so that series do not vanish. */
const char *const metrics_connection_states[SM_CONNECTION_STATES + 1] = {
    "connected", "connecting", "disconnected", "migrating", "recovering", "unconfigured", NULL};

char *metrics_render(const Metrics *m, const MetricsGauges *g)
{
    ASSERT_MAIN();
    GString *out = g_string_new(NULL);
    g_string_append_printf(out,
                           "# HELP safe_migrated_build_info The daemon's version.\n"
                           "# TYPE safe_migrated_build_info gauge\n"
                           "safe_migrated_build_info{version=\"%s\"} 1\n",
                           SM_VERSION);
    g_string_append(out, "# HELP safe_migrated_vms VMs under the daemon, by QMP connection "
                         "state.\n# TYPE safe_migrated_vms gauge\n");
    for (guint i = 0; i < SM_CONNECTION_STATES; i++)
        g_string_append_printf(out, "safe_migrated_vms{connection=\"%s\"} %u\n",
                               metrics_connection_states[i], g->vms_by_connection[i]);
    g_string_append_printf(out,
                           "# HELP safe_migrated_policy_errors VM policy files that did not "
                           "load.\n# TYPE safe_migrated_policy_errors gauge\n"
                           "safe_migrated_policy_errors %u\n",
                           g->policy_errors);
    g_string_append_printf(out,
                           "# HELP safe_migrated_migrations_active Migrations running now.\n"
                           "# TYPE safe_migrated_migrations_active gauge\n"
                           "safe_migrated_migrations_active %u\n",
                           g->active_migrations);
    g_string_append_printf(out,
                           "# HELP safe_migrated_clients Control clients connected.\n"
                           "# TYPE safe_migrated_clients gauge\nsafe_migrated_clients %u\n",
                           g->clients);

    g_string_append(out, "# HELP safe_migrated_migrations_total Finished migrations, by result "
                         "and path (idle, held, fix, none).\n"
                         "# TYPE safe_migrated_migrations_total counter\n");
    g_autoptr(GList) keys = g_list_sort(g_hash_table_get_keys(m->migrations), (GCompareFunc)strcmp);
    for (GList *l = keys; l; l = l->next) {
        g_auto(GStrv) parts = g_strsplit(l->data, "\n", 2);
        g_string_append_printf(
            out, "safe_migrated_migrations_total{result=\"%s\",path=\"%s\"} %u\n", parts[0],
            parts[1], GPOINTER_TO_UINT(g_hash_table_lookup(m->migrations, l->data)));
    }
    counter(out, "safe_migrated_attempts_total", "Migration attempts started.", m->attempts);
    counter(out, "safe_migrated_holds_total",
            "Attempts called off because a device was busy at switchover.", m->holds);
    counter(out, "safe_migrated_qmp_reconnects_total",
            "Status connections re-established after a VM's QMP went away.", m->reconnects);
    counter(out, "safe_migrated_client_rejects_total",
            "Control connections refused by the peer-credentials check.", m->client_rejects);
    histogram(out, "safe_migrated_downtime_seconds", "Downtime of completed migrations (QEMU's).",
              m->downtime_counts, downtime_bounds, SM_DOWNTIME_BUCKETS, m->downtime_sum);
    histogram(out, "safe_migrated_probe_seconds", "Device-state capture time of each probe.",
              m->probe_counts, probe_bounds, SM_PROBE_BUCKETS, m->probe_sum);
    return g_string_free(out, FALSE);
}

/* ---- Plain HTTP: GET or HEAD /metrics, one request per connection --------------------
 * At most SM_MAX_HTTP connections at once; each gets SM_HTTP_DEADLINE_MS in all to send its
 * request and take the answer (a slow or silent peer is cut off, it cannot pin an fd). */

struct MetricsServer {
    Listener *listener;
    guint port;
    MetricsRender render;
    gpointer data;
    FdUse *fds;
    RateLimit *reject_log;
};

typedef struct {
    FdUse *fds; /* the server's: the counters and the render function outlive it */
    MetricsRender render;
    gpointer render_data;
    GSocketConnection *conn;
    GCancellable *cancel;
    GSource *deadline;
    char buf[4096];
    gsize len;
    char *response;
} Http;

static void http_free(Http *h)
{
    g_cancellable_cancel(h->cancel);
    g_source_destroy(h->deadline);
    g_source_unref(h->deadline);
    g_io_stream_close(G_IO_STREAM(h->conn), NULL, NULL);
    g_object_unref(h->conn);
    g_object_unref(h->cancel);
    g_free(h->response);
    h->fds->http--;
    g_free(h);
}

/* Every pending operation holds the Http; the deadline cancels them and they free it. */
static gboolean on_http_deadline(gpointer data)
{
    Http *h = data;
    g_cancellable_cancel(h->cancel);
    return G_SOURCE_REMOVE;
}

static void on_http_written(GObject *source, GAsyncResult *res, gpointer data)
{
    g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL, NULL);
    http_free(data);
}

/* "GET /metrics?x=1 HTTP/1.1" -> status line and whether a body goes with it. */
static const char *http_route(const char *request, gboolean *found, gboolean *head)
{
    g_autofree char *line = g_strndup(request, strcspn(request, "\r\n"));
    g_auto(GStrv) parts = g_strsplit(line, " ", 3);
    *found = FALSE;
    *head = FALSE;
    if (g_strv_length(parts) < 2)
        return "400 Bad Request";
    *head = g_str_equal(parts[0], "HEAD");
    if (!*head && !g_str_equal(parts[0], "GET"))
        return "405 Method Not Allowed";
    parts[1][strcspn(parts[1], "?#")] = '\0'; /* Prometheus may add query parameters */
    *found = g_str_equal(parts[1], "/metrics") || g_str_equal(parts[1], "/");
    return *found ? "200 OK" : "404 Not Found";
}

static void http_respond(Http *h)
{
    gboolean found, head;
    const char *status = http_route(h->buf, &found, &head);
    g_autofree char *body = found ? h->render(h->render_data) : g_strdup_printf("%s\n", status);
    h->response = g_strdup_printf("HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; "
                                  "charset=utf-8\r\nContent-Length: %zu\r\n%sConnection: "
                                  "close\r\n\r\n%s",
                                  status, strlen(body),
                                  g_str_has_prefix(status, "405") ? "Allow: GET, HEAD\r\n" : "",
                                  head ? "" : body);
    g_output_stream_write_all_async(g_io_stream_get_output_stream(G_IO_STREAM(h->conn)),
                                    h->response, strlen(h->response), G_PRIORITY_DEFAULT, h->cancel,
                                    on_http_written, h);
}

static void on_http_read(GObject *source, GAsyncResult *res, gpointer data)
{
    Http *h = data;
    gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, NULL);
    if (n <= 0) {
        http_free(h);
        return;
    }
    h->len += (gsize)n;
    h->buf[h->len] = '\0';
    if (strstr(h->buf, "\r\n\r\n") || strstr(h->buf, "\n\n")) {
        http_respond(h);
        return;
    }
    if (h->len + 1 >= sizeof h->buf || memchr(h->buf, '\0', h->len)) {
        http_free(h);
        return;
    }
    g_input_stream_read_async(G_INPUT_STREAM(source), h->buf + h->len, sizeof h->buf - 1 - h->len,
                              G_PRIORITY_DEFAULT, h->cancel, on_http_read, h);
}

static void on_http_accept(GSocket *sock, gpointer data)
{
    MetricsServer *server = data;
    if (server->fds->http >= SM_MAX_HTTP || !fd_budget_allows(server->fds)) {
        ratelimit_log(server->reject_log, G_LOG_LEVEL_WARNING,
                      "metrics port: %u connections open, no room for another: closed",
                      server->fds->http);
        g_socket_close(sock, NULL);
        return;
    }
    Http *h = g_new0(Http, 1);
    h->fds = server->fds;
    h->render = server->render;
    h->render_data = server->data;
    h->conn = g_socket_connection_factory_create_connection(sock);
    h->cancel = g_cancellable_new();
    h->deadline = g_timeout_source_new(SM_HTTP_DEADLINE_MS);
    g_source_set_callback(h->deadline, on_http_deadline, h, NULL);
    g_source_attach(h->deadline, NULL);
    server->fds->http++;
    g_input_stream_read_async(g_io_stream_get_input_stream(G_IO_STREAM(h->conn)), h->buf,
                              sizeof h->buf - 1, G_PRIORITY_DEFAULT, h->cancel, on_http_read, h);
}

MetricsServer *metrics_listen(const char *host_port, MetricsRender render, gpointer data,
                              FdUse *fds, RateLimit *reject_log, GError **error)
{
    const char *colon = strrchr(host_port, ':');
    guint64 port = 0;
    if (!colon || !g_ascii_string_to_unsigned(colon + 1, 10, 0, 65535, &port, NULL)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "--metrics-listen: '%s' is not HOST:PORT", host_port);
        return NULL;
    }
    g_autofree char *host = g_strndup(host_port, colon - host_port);
    if (host[0] == '[' && g_str_has_suffix(host, "]")) {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    g_autoptr(GSocketAddress) addr = g_inet_socket_address_new_from_string(host, (guint)port);
    if (!addr) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "--metrics-listen: '%s' is not an IP address", host);
        return NULL;
    }
    g_autoptr(GSocket) sock = g_socket_new(g_socket_address_get_family(addr), G_SOCKET_TYPE_STREAM,
                                           G_SOCKET_PROTOCOL_TCP, error);
    if (!sock)
        return NULL;
    g_socket_set_listen_backlog(sock, SM_MAX_HTTP);
    if (!g_socket_bind(sock, addr, TRUE, error) || !g_socket_listen(sock, error))
        return NULL;
    g_autoptr(GSocketAddress) effective = g_socket_get_local_address(sock, error);
    if (!effective)
        return NULL;
    MetricsServer *server = g_new0(MetricsServer, 1);
    server->port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(effective));
    server->render = render;
    server->data = data;
    server->fds = fds;
    server->reject_log = reject_log;
    server->listener = listener_new(sock, "metrics port", on_http_accept, server);
    /* An IPv6 address goes in brackets in a URL. */
    gboolean v6 = strchr(host, ':') != NULL;
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE",
                     "metrics on http://%s%s%s:%u/metrics", v6 ? "[" : "", host, v6 ? "]" : "",
                     server->port);
    return server;
}

guint metrics_server_port(MetricsServer *server)
{
    return server->port;
}

/* Stops listening; connections being answered finish on their own. */
void metrics_server_free(MetricsServer *server)
{
    if (!server)
        return;
    listener_free(server->listener);
    g_free(server);
}
