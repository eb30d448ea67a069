/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: metrics in the Prometheus text format (metrics.c): counters fed by the
 * migrations' own events, rendered for the `metrics` op and served over plain HTTP. Main
 * thread only. */
#pragma once

#include "listen.h"
#include "util.h"

/* At most SM_MAX_HTTP metrics connections at once, each closed after SM_HTTP_DEADLINE_MS
 * whatever it sent. */
#define SM_MAX_HTTP 16
#define SM_HTTP_DEADLINE_MS 10000

#define SM_DOWNTIME_BUCKETS 11
#define SM_PROBE_BUCKETS 11
typedef struct {
    GHashTable *migrations; /* "result\npath" -> count (GUINT_TO_POINTER) */
    guint64 attempts, holds, reconnects, client_rejects;
    guint64 downtime_counts[SM_DOWNTIME_BUCKETS + 1]; /* last: +Inf */
    double downtime_sum;
    guint64 probe_counts[SM_PROBE_BUCKETS + 1];
    double probe_sum;
} Metrics;

void metrics_init(Metrics *m);
void metrics_clear(Metrics *m);
void metrics_observe_event(Metrics *m, json_object *event);
void metrics_observe_probe(Metrics *m, gint64 probe_us);

/* The gauges, from the daemon's state at render time. `vms_by_connection` counts the VMs per
 * connection state, in the order of metrics_connection_states. */
extern const char *const metrics_connection_states[]; /* NULL-terminated */
#define SM_CONNECTION_STATES 6
typedef struct {
    guint vms_by_connection[SM_CONNECTION_STATES];
    guint policy_errors, active_migrations, clients;
} MetricsGauges;
char *metrics_render(const Metrics *m, const MetricsGauges *g);

/* Plain HTTP: GET or HEAD /metrics on HOST:PORT; `render` makes the text per request. */
typedef char *(*MetricsRender)(gpointer data);
typedef struct MetricsServer MetricsServer;
MetricsServer *metrics_listen(const char *host_port, MetricsRender render, gpointer data,
                              FdUse *fds, RateLimit *reject_log, GError **error);
guint metrics_server_port(MetricsServer *server);
void metrics_server_free(MetricsServer *server);
