/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the per-host sidecar daemon. It loads vms.d/NAME.conf (reload.c), watches
 * every VM over a QMP monitor of its own (vm.c), runs migrations with the same gate engine as
 * the CLI (one worker thread per VM; mig.c), and serves a JSON-lines control socket
 * (control.c, requests in ops.c). This file: options, logging, signals and the lifecycle. */
#include "daemon.h"
#include "sm-config.h" /* SM_VERSION, SM_CONFIG_DIR */

#include <errno.h>
#include <glib-unix.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#define DEFAULT_CONFIG_DIR SM_CONFIG_DIR
#define DEFAULT_SOCKET "/run/safe-migrated/control.sock"

/* ---- Logging: journald fields under systemd, plain lines otherwise ---------------------- */

static gboolean opt_verbose, log_to_journal;

static GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField *fields, gsize n,
                                   gpointer data)
{
    const char *domain = NULL, *message = NULL;
    for (gsize i = 0; i < n; i++) {
        if (g_str_equal(fields[i].key, "MESSAGE"))
            message = fields[i].value;
        else if (g_str_equal(fields[i].key, "GLIB_DOMAIN"))
            domain = fields[i].value;
    }
    /* --verbose: our own and the layers' debug logs (qmp, sm-*), not GLib's. */
    if ((level & (G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO)) &&
        (!opt_verbose || (domain && g_str_has_prefix(domain, "GLib"))))
        return G_LOG_WRITER_HANDLED;
    if (log_to_journal && g_log_writer_journald(level, fields, n, data) == G_LOG_WRITER_HANDLED)
        return G_LOG_WRITER_HANDLED;
    const char *tag = (level & G_LOG_LEVEL_CRITICAL)  ? "critical"
                      : (level & G_LOG_LEVEL_WARNING) ? "warning"
                      : (level & G_LOG_LEVEL_MESSAGE) ? "notice"
                                                      : "debug";
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format(now, "%H:%M:%S.%f");
    stamp[12] = '\0'; /* milliseconds */
    fprintf(stderr, "%s %s%s%s: %s\n", stamp, tag, domain ? " " : "", domain ? domain : "",
            message ? message : "");
    return G_LOG_WRITER_HANDLED;
}

/* ---- Signals and main ------------------------------------------------------------------ */

/* The unit's TimeoutStopSec= is 90 s: the daemon never waits for its migrations longer than
 * this, and leaves what is still running to the next start (their owner marks stay, so the
 * VMs are recovered then) rather than be killed mid-way by systemd. */
#define STOP_DEADLINE_MS 60000

static gboolean on_stop_deadline(gpointer data)
{
    Daemon *d = data;
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE",
                     "stopping: %u migration(s) did not end within %d s; exiting anyway, the next "
                     "start recovers their VMs",
                     daemon_active_migrations(d), STOP_DEADLINE_MS / 1000);
    d->stop_expired = TRUE;
    g_main_loop_quit(d->loop);
    return G_SOURCE_REMOVE;
}

static gboolean on_stop_signal(gpointer data)
{
    Daemon *d = data;
    if (d->stopping)
        return G_SOURCE_CONTINUE;
    d->stopping = TRUE;
    sd_notify_send("STOPPING=1");
    guint active = daemon_active_migrations(d);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE",
                     "stopping: calling off %u running migration(s)", active);
    control_close(d->control);
    /* Every running migration is called off (the VM stays on the source) and reports its
     * result to its followers before the daemon goes. */
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->migrations);
    while (g_hash_table_iter_next(&it, NULL, &value))
        mig_cancel(value, SIGTERM);
    if (active == 0)
        g_main_loop_quit(d->loop);
    else
        g_timeout_add(STOP_DEADLINE_MS, on_stop_deadline, d);
    return G_SOURCE_CONTINUE;
}

static gboolean on_hup(gpointer data)
{
    Daemon *d = data;
    g_autofree char *reloading =
        g_strdup_printf("RELOADING=1\nMONOTONIC_USEC=%" G_GINT64_FORMAT, g_get_monotonic_time());
    sd_notify_send(reloading);
    g_autoptr(json_object) summary = daemon_reload(d, NULL);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE", "reloaded: %s",
                     json_object_to_json_string_ext(summary, JSON_C_TO_STRING_PLAIN));
    sd_notify_send("READY=1");
    return G_SOURCE_CONTINUE;
}

static char *opt_config_dir, *opt_socket, *opt_socket_mode, *opt_socket_group, *opt_metrics,
    *opt_reconnect_max, *opt_refresh, *opt_client_idle;
static gboolean opt_version;

static const GOptionEntry entries[] = {
    {"config-dir", 'c', 0, G_OPTION_ARG_FILENAME, &opt_config_dir,
     "Policy directory (defaults.conf, vms.d/NAME.conf; default " DEFAULT_CONFIG_DIR ")", "DIR"},
    {"socket", 's', 0, G_OPTION_ARG_FILENAME, &opt_socket,
     "Control socket (default " DEFAULT_SOCKET ")", "PATH"},
    {"socket-mode", 0, 0, G_OPTION_ARG_STRING, &opt_socket_mode,
     "0600 (owner only) or 0660 (owner and group; the default)", "MODE"},
    {"socket-group", 0, 0, G_OPTION_ARG_STRING, &opt_socket_group,
     "Group allowed on the socket (default: the daemon's group)", "GROUP"},
    {"metrics-listen", 0, 0, G_OPTION_ARG_STRING, &opt_metrics,
     "Serve Prometheus metrics over HTTP on HOST:PORT (e.g. 127.0.0.1:9187)", "HOST:PORT"},
    {"reconnect-max", 0, 0, G_OPTION_ARG_STRING, &opt_reconnect_max,
     "Longest wait between reconnects to a VM's QMP (default 10s)", "DURATION"},
    {"refresh", 0, 0, G_OPTION_ARG_STRING, &opt_refresh,
     "Re-read each VM's devices this often besides on events (default 60s)", "DURATION"},
    {"client-idle-timeout", 0, 0, G_OPTION_ARG_STRING, &opt_client_idle,
     "Close control clients that are idle and follow nothing this long (default 5min)", "DURATION"},
    {"verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "Debug logs", NULL},
    {"version", 0, 0, G_OPTION_ARG_NONE, &opt_version, "Print the version and exit", NULL},
    G_OPTION_ENTRY_NULL,
};

static gboolean parse_ms(const char *flag, const char *text, guint fallback, guint *out,
                         GError **error)
{
    gint64 ms = fallback;
    g_autoptr(GError) local = NULL;
    if (text && !sm_parse_duration_full(text, 0, &ms, &local)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "--%s: %s", flag,
                    local->message);
        return FALSE;
    }
    if (ms <= 0) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--%s: '%s': give a duration above 0", flag, text);
        return FALSE;
    }
    *out = (guint)ms;
    return TRUE;
}

static gboolean configure(Daemon *d, GError **error)
{
    d->config_dir = g_strdup(opt_config_dir ? opt_config_dir : DEFAULT_CONFIG_DIR);
    d->socket_path = g_strdup(opt_socket ? opt_socket : DEFAULT_SOCKET);
    if (!g_file_test(d->config_dir, G_FILE_TEST_IS_DIR)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "configuration directory %s does not exist", d->config_dir);
        return FALSE;
    }
    ControlConfig *cc = &d->control_config;
    cc->socket_path = d->socket_path;
    cc->socket_mode = 0660;
    if (opt_socket_mode) {
        if (g_str_equal(opt_socket_mode, "0600") || g_str_equal(opt_socket_mode, "600"))
            cc->socket_mode = 0600;
        else if (!g_str_equal(opt_socket_mode, "0660") && !g_str_equal(opt_socket_mode, "660")) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--socket-mode: '%s' is neither 0600 nor 0660", opt_socket_mode);
            return FALSE;
        }
    }
    cc->socket_gid = getegid();
    if (opt_socket_group) {
        struct group *gr = getgrnam(opt_socket_group);
        if (!gr) {
            g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                        "--socket-group: no group '%s'", opt_socket_group);
            return FALSE;
        }
        cc->socket_gid = gr->gr_gid;
    }
    return parse_ms("reconnect-max", opt_reconnect_max, 10000, &d->host.reconnect_max_ms, error) &&
           parse_ms("refresh", opt_refresh, 60000, &d->host.refresh_ms, error) &&
           parse_ms("client-idle-timeout", opt_client_idle, 300000, &cc->client_idle_ms, error);
}

/* Options and logging; FALSE with the exit code when the daemon is not to run. */
static gboolean parse_options(int *argc, char ***argv, int *exit_code)
{
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the safe-migrate host daemon");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_summary(
        ctx, "Watches the VMs of vms.d/*.conf over QMP and migrates them through the gate on\n"
             "request, over a JSON-lines control socket (see README, \"Daemon\").\n"
             "SIGHUP reloads the policies; SIGTERM calls running migrations off and exits.\n"
             "Exit codes: 0 stopped on a signal, 1 cannot listen, 2 usage or configuration error.");
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, argc, argv, &error) || *argc > 1) {
        g_printerr("safe-migrated: %s\n", error ? error->message : "unexpected argument");
        *exit_code = SM_EXIT_USAGE;
        return FALSE;
    }
    if (opt_version) {
        printf("safe-migrated %s\n", SM_VERSION);
        *exit_code = SM_EXIT_OK;
        return FALSE;
    }
    return TRUE;
}

/* The daemon's tables and the state directory; the main thread owns the default context from
 * here on, for the daemon's whole life (ASSERT_MAIN checks it). */
static void daemon_init(Daemon *d)
{
    g_main_context_acquire(g_main_context_default());
    g_autofree char *sock_dir = g_path_get_dirname(d->socket_path);
    d->state_dir = g_build_filename(sock_dir, "migrations", NULL);
    if (g_mkdir_with_parents(d->state_dir, 0700) != 0)
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE", "%s: %s", d->state_dir,
                         g_strerror(errno));
    d->loop = g_main_loop_new(NULL, FALSE);
    d->vms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)vm_unref);
    d->migrations = g_hash_table_new(g_str_hash, g_str_equal);
    metrics_init(&d->metrics);
    d->host.inbox = inbox_new(g_main_context_default());
    d->host.metrics = &d->metrics;
    d->host.state_dir = d->state_dir;
}

/* After the main loop: migrations have ended (on_stop_signal waits for them), so the workers
 * can go; followers read the results already queued before the hang-up. */
static void daemon_shutdown(Daemon *d)
{
    g_clear_pointer(&d->control, control_free);
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, NULL, &value))
        vm_stop(value);
    g_hash_table_iter_init(&it, d->vms);
    while (g_hash_table_iter_next(&it, NULL, &value))
        vm_join(value);
    /* What the workers posted last (their exits above all) runs now. */
    g_clear_pointer(&d->host.inbox, inbox_free);
    g_hash_table_unref(d->vms);
    GList *migs = g_hash_table_get_values(d->migrations);
    g_list_free_full(migs, (GDestroyNotify)mig_free);
    g_hash_table_unref(d->migrations);
    g_queue_clear(&d->finished);
    g_clear_pointer(&d->metrics_server, metrics_server_free);
    metrics_clear(&d->metrics);
    g_main_loop_unref(d->loop);
    g_free(d->config_dir);
    g_free(d->socket_path);
    g_free(d->state_dir);
    g_free(d);
}

int main(int argc, char **argv)
{
    sm_setlocale();
    int exit_code;
    if (!parse_options(&argc, &argv, &exit_code))
        return exit_code;
    log_to_journal = g_log_writer_is_journald(fileno(stderr));
    g_log_set_writer_func(log_writer, NULL, NULL);
    signal(SIGPIPE, SIG_IGN);
    fd_raise_limit();

    g_autoptr(GError) error = NULL;
    Daemon *d = g_new0(Daemon, 1);
    if (!configure(d, &error)) {
        g_printerr("safe-migrated: %s\n", error->message);
        return SM_EXIT_USAGE;
    }
    daemon_init(d);
    d->control = control_listen(&d->control_config, &daemon_control_handlers, d, &d->fds,
                                &d->metrics, &d->reject_log, &error);
    if (d->control && opt_metrics)
        d->metrics_server =
            metrics_listen(opt_metrics, daemon_render_metrics, d, &d->fds, &d->reject_log, &error);
    if (!d->control || (opt_metrics && !d->metrics_server)) {
        g_printerr("safe-migrated: %s\n", error->message);
        control_close(d->control);
        return SM_EXIT_FAILURE;
    }
    g_autoptr(json_object) summary = daemon_reload(d, NULL);
    guint sig_term = g_unix_signal_add(SIGTERM, on_stop_signal, d);
    guint sig_int = g_unix_signal_add(SIGINT, on_stop_signal, d);
    guint sig_hup = g_unix_signal_add(SIGHUP, on_hup, d);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE",
                     "listening on %s (mode %04o), %u VM(s) from %s/vms.d, %u policy error(s)",
                     d->socket_path, d->control_config.socket_mode, g_hash_table_size(d->vms),
                     d->config_dir,
                     (guint)json_object_array_length(json_object_object_get(summary, "errors")));
    g_autofree char *ready = g_strdup_printf("READY=1\nSTATUS=serving %u VMs\nMAINPID=%d",
                                             g_hash_table_size(d->vms), (int)getpid());
    sd_notify_send(ready);

    g_main_loop_run(d->loop);
    if (d->stop_expired) {
        /* Workers are stuck in their migrations: no join, no cleanup; the marks stay. */
        control_free(d->control);
        return SM_EXIT_FAILURE;
    }
    g_source_remove(sig_term);
    g_source_remove(sig_int);
    g_source_remove(sig_hup);
    daemon_shutdown(d);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "MESSAGE", "stopped");
    return SM_EXIT_OK;
}
