/* SPDX-License-Identifier: GPL-2.0-or-later */
/* `safe-migrate status`: captures the VM's device state once (stopping a running VM for the
 * capture and resuming it) and prints each USB storage device's verdict (idle/busy/unknown,
 * pending request, fix state) as a table or JSON. */
#define G_LOG_DOMAIN "safe-migrate"

#include <glib.h>
#include <stdio.h>

#include "commands.h"
#include "probe.h"
#include "qmp.h"

/* One capture of the VM at `addr`, its verdicts printed; the exit code. */
static int probe_and_print(const char *addr, const char *plugin_dir, guint timeout_ms,
                           gboolean json)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(SmRegistry) registry = sm_registry_new();
    if (plugin_dir && !sm_registry_load_dir(registry, plugin_dir, &error)) {
        fprintf(stderr, "safe-migrate status: plugins: %s\n", error->message);
        return SM_EXIT_FAILURE;
    }
    g_autoptr(QmpClient) qmp = qmp_client_connect(addr, timeout_ms, &error);
    if (!qmp) {
        fprintf(stderr, "safe-migrate status: cannot reach the VM at %s: %s\n", addr,
                error->message);
        return SM_EXIT_UNREACHABLE;
    }
    qmp_client_set_default_timeout(qmp, timeout_ms);
    /* Someone else's migration at pre-switchover: a capture would rewrite its run state. */
    g_autoptr(SmReport) report =
        sm_probe_switchover_free(qmp, &error) ? sm_probe_vm(qmp, registry, &error) : NULL;
    qmp_client_close(qmp);
    if (!report) {
        fprintf(stderr, "safe-migrate status: %s\n", error->message);
        return g_error_matches(error, SM_PROBE_ERROR, SM_PROBE_ERROR_UNREACHABLE)
                   ? SM_EXIT_UNREACHABLE
                   : SM_EXIT_FAILURE;
    }
    if (json) {
        json_object *o = sm_report_to_json(report);
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
    } else {
        g_autofree char *table = sm_report_to_table(report);
        fputs(table, stdout);
    }
    return SM_EXIT_OK;
}

int sm_cmd_status(int argc, char **argv)
{
    if (sm_daemon_socket)
        return sm_daemon_cmd_status(argc, argv);
    if (sm_status_is_libvirt_form(argc, argv))
        return sm_cmd_status_libvirt(argc, argv);
    g_autofree char *addr = NULL;
    g_autofree char *plugin_dir = NULL;
    g_autofree char *timeout = NULL;
    gboolean json = FALSE;
    gint64 timeout_ms = 5000;
    /* No -q here: -q is --quiet wherever it exists. */
    GOptionEntry entries[] = {
        {"qmp", 0, 0, G_OPTION_ARG_STRING, &addr, "QMP socket: unix:PATH, tcp:HOST:PORT or PATH",
         "ADDR"},
        {"json", 'j', 0, G_OPTION_ARG_NONE, &json, "Print one JSON object", NULL},
        {"plugin-dir", 0, 0, G_OPTION_ARG_FILENAME, &plugin_dir,
         "Load further probes (*.so) from DIR", "DIR"},
        {"timeout", 0, 0, G_OPTION_ARG_STRING, &timeout,
         "QMP timeout, e.g. 500ms, 10s (default 5s)", "DURATION"},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
    g_option_context_set_summary(
        ctx, "Reads QEMU's device state once and tells, per USB storage device, whether a\n"
             "transaction is in flight and whether migrating now would keep it intact.\n"
             "Exit codes: 0 state read, 1 other failure, 2 usage, 3 VM unreachable.");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        fprintf(stderr, "safe-migrate status: %s\n", error->message);
        return SM_EXIT_USAGE;
    }
    if (!addr || argc > 1) {
        fprintf(stderr, "usage: safe-migrate status --qmp ADDR [--json] [--plugin-dir DIR] "
                        "[--timeout DURATION]\n");
        return SM_EXIT_USAGE;
    }
    if (timeout && (!sm_parse_duration_full(timeout, 0, &timeout_ms, &error) || timeout_ms == 0)) {
        fprintf(stderr, "safe-migrate status: --timeout: %s\n",
                error ? error->message : "0 is not a timeout");
        return SM_EXIT_USAGE;
    }
    g_autoptr(GSocketAddress) parsed = NULL;
    if (!qmp_address_parse(addr, &parsed, &error)) {
        fprintf(stderr, "safe-migrate status: --qmp: %s\n", error->message);
        return SM_EXIT_USAGE;
    }
    return probe_and_print(addr, plugin_dir, (guint)timeout_ms, json);
}
