/* safe-migrated: metrics in the Prometheus text format (0.0.4), fed by the migrations'
 * own events, served by the `metrics` op and optionally over plain HTTP. */
#include "daemon.h"

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
    if (probe_us > 0)
        observe(m->probe_counts, probe_bounds, SM_PROBE_BUCKETS, &m->probe_sum, probe_us / 1e6);
}

void metrics_observe_event(Metrics *m, json_object *event)
{
    const char *name = json_str(event, "event");
    json_object *v;
    if (g_strcmp0(name, "pre-switchover") == 0 && json_object_object_get_ex(event, "probe_us", &v))
        metrics_observe_probe(m, json_object_get_int64(v));
    if (g_strcmp0(name, "result") != 0)
        return;
    const char *path = json_str(event, "path");
    g_autofree char *key =
        g_strdup_printf("%s\n%s", json_str(event, "result") ?: "unknown", path ? path : "none");
    gpointer old = g_hash_table_lookup(m->migrations, key);
    g_hash_table_insert(m->migrations, g_steal_pointer(&key),
                        GUINT_TO_POINTER(GPOINTER_TO_UINT(old) + 1));
    if (json_object_object_get_ex(event, "attempts", &v))
        m->attempts += (guint64)MAX(json_object_get_int64(v), 0);
    if (json_object_object_get_ex(event, "holds", &v))
        m->holds += (guint64)MAX(json_object_get_int64(v), 0);
    if (g_strcmp0(json_str(event, "result"), "migrated") == 0 &&
        json_object_object_get_ex(event, "downtime_ms", &v) && json_object_get_int64(v) >= 0)
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

char *metrics_render(Daemon *d)
{
    Metrics *m = &d->metrics;
    GString *out = g_string_new(NULL);

    /* VMs by connection state, every state always present so that series do not vanish. */
    static const char *const states[] = {
        "connected", "connecting", "disconnected", "migrating", "recovering", "unconfigured", NULL};
    guint counts[G_N_ELEMENTS(states)] = {0};
    guint active = 0, policy_errors = 0;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        Vm *vm = value;
        g_autoptr(json_object) o = vm_to_json(vm);
        const char *state = json_str(o, "connection");
        for (guint i = 0; states[i]; i++)
            if (g_strcmp0(state, states[i]) == 0)
                counts[i]++;
        active += vm->mig != NULL;
        policy_errors += vm->config_error != NULL;
    }
    g_string_append(out, "# HELP safe_migrated_vms VMs under the daemon, by QMP connection "
                         "state.\n# TYPE safe_migrated_vms gauge\n");
    for (guint i = 0; states[i]; i++)
        g_string_append_printf(out, "safe_migrated_vms{connection=\"%s\"} %u\n", states[i],
                               counts[i]);
    g_string_append_printf(out,
                           "# HELP safe_migrated_policy_errors VM policy files that did not "
                           "load.\n# TYPE safe_migrated_policy_errors gauge\n"
                           "safe_migrated_policy_errors %u\n",
                           policy_errors);
    g_string_append_printf(out,
                           "# HELP safe_migrated_migrations_active Migrations running now.\n"
                           "# TYPE safe_migrated_migrations_active gauge\n"
                           "safe_migrated_migrations_active %u\n",
                           active);
    g_string_append_printf(out,
                           "# HELP safe_migrated_clients Control clients connected.\n"
                           "# TYPE safe_migrated_clients gauge\nsafe_migrated_clients %u\n",
                           g_list_length(d->clients));

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

/* ---- Plain HTTP: GET /metrics, one request per connection ------------------------------- */

typedef struct {
    Daemon *daemon;
    GSocketConnection *conn;
    char buf[4096];
    gsize len;
    char *response;
} Http;

static void http_free(Http *h)
{
    g_io_stream_close(G_IO_STREAM(h->conn), NULL, NULL);
    g_object_unref(h->conn);
    g_free(h->response);
    g_free(h);
}

static void on_http_written(GObject *source, GAsyncResult *res, gpointer data)
{
    g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL, NULL);
    http_free(data);
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
    if (!strstr(h->buf, "\r\n\r\n") && !strstr(h->buf, "\n\n")) {
        if (h->len + 1 >= sizeof h->buf) {
            http_free(h);
            return;
        }
        g_input_stream_read_async(G_INPUT_STREAM(source), h->buf + h->len,
                                  sizeof h->buf - 1 - h->len, G_PRIORITY_DEFAULT, NULL,
                                  on_http_read, h);
        return;
    }
    gboolean found =
        g_str_has_prefix(h->buf, "GET /metrics ") || g_str_has_prefix(h->buf, "GET / ");
    g_autofree char *body = found ? metrics_render(h->daemon) : g_strdup("not found\n");
    h->response = g_strdup_printf("HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4; "
                                  "charset=utf-8\r\nContent-Length: %zu\r\nConnection: "
                                  "close\r\n\r\n%s",
                                  found ? "200 OK" : "404 Not Found", strlen(body), body);
    g_output_stream_write_all_async(g_io_stream_get_output_stream(G_IO_STREAM(h->conn)),
                                    h->response, strlen(h->response), G_PRIORITY_DEFAULT, NULL,
                                    on_http_written, h);
}

static gboolean on_http_incoming(GSocketService *service, GSocketConnection *conn, GObject *source,
                                 gpointer data)
{
    (void)service, (void)source;
    Http *h = g_new0(Http, 1);
    h->daemon = data;
    h->conn = g_object_ref(conn);
    g_input_stream_read_async(g_io_stream_get_input_stream(G_IO_STREAM(conn)), h->buf,
                              sizeof h->buf - 1, G_PRIORITY_DEFAULT, NULL, on_http_read, h);
    return TRUE;
}

gboolean metrics_listen(Daemon *d, const char *host_port, GError **error)
{
    const char *colon = strrchr(host_port, ':');
    guint64 port = 0;
    if (!colon || !g_ascii_string_to_unsigned(colon + 1, 10, 0, 65535, &port, NULL)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "--metrics-listen: '%s' is not HOST:PORT", host_port);
        return FALSE;
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
        return FALSE;
    }
    d->metrics_service = g_socket_service_new();
    g_autoptr(GSocketAddress) effective = NULL;
    if (!g_socket_listener_add_address(G_SOCKET_LISTENER(d->metrics_service), addr,
                                       G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL,
                                       &effective, error))
        return FALSE;
    d->metrics_port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(effective));
    g_signal_connect(d->metrics_service, "incoming", G_CALLBACK(on_http_incoming), d);
    g_socket_service_start(d->metrics_service);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE",
                     "metrics on http://%s:%u/metrics", host, d->metrics_port);
    return TRUE;
}
