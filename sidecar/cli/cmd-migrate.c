/* SPDX-License-Identifier: GPL-2.0-or-later */
/* `safe-migrate migrate` and `safe-migrate recover`: the drop-in for `virsh migrate`, with
 * its option and exit-code contract, human progress line or JSON lines. */
#include "gate.h"
#include "commands.h"
#include "qmp-commands.h" /* qmp_json_string */
#include "qmp.h"          /* json_object autoptr */

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef SmCliOutput Output;

static void end_line(Output *out)
{
    if (out->line_open) {
        fputc('\n', stderr);
        out->line_open = FALSE;
    }
}

static gint64 int_field(json_object *event, const char *key, gint64 fallback)
{
    json_object *v;
    return json_object_object_get_ex(event, key, &v) ? json_object_get_int64(v) : fallback;
}

/* The progress line: phase, percent of RAM, throughput, attempt n of N, what it waits for. */
static void show_progress(Output *out, const char *text)
{
    if (out->quiet)
        return;
    if (out->tty) {
        fprintf(stderr, "\r\033[K%s", text);
        out->line_open = TRUE;
    } else {
        fprintf(stderr, "%s\n", text);
    }
    fflush(stderr);
}

static void show_line(Output *out, const char *text)
{
    if (out->quiet)
        return;
    end_line(out);
    fprintf(stderr, "%s\n", text);
}

static void on_event(json_object *event, gpointer data)
{
    Output *out = data;
    if (out->json) {
        printf("%s\n", json_object_to_json_string_ext(event, JSON_C_TO_STRING_PLAIN |
                                                                 JSON_C_TO_STRING_NOSLASHESCAPE));
        fflush(stdout);
        return;
    }
    const char *name = qmp_json_string(event, SM_EVENT_KEY_EVENT);
    g_autofree char *text = NULL;
    if (g_str_equal(name, SM_EVENT_PROGRESS)) {
        gint64 total = int_field(event, "ram_total", 0),
               done = int_field(event, "ram_transferred", 0);
        json_object *mbps;
        double rate =
            json_object_object_get_ex(event, "mbps", &mbps) ? json_object_get_double(mbps) : 0.0;
        text = g_strdup_printf(
            "%s: RAM %3d%%, %.1f Mbit/s, attempt %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT,
            qmp_json_string(event, "status"), total > 0 ? (int)MIN(100, done * 100 / total) : 0,
            rate, int_field(event, "attempt", 1), int_field(event, "max_attempts", 1));
        show_progress(out, text);
    } else if (g_str_equal(name, SM_EVENT_PREFLIGHT)) {
        json_object *warnings = NULL;
        json_object_object_get_ex(event, "warnings", &warnings);
        for (size_t i = 0; warnings && i < json_object_array_length(warnings); i++) {
            g_autofree char *line = g_strdup_printf(
                "warning: %s", json_object_get_string(json_object_array_get_idx(warnings, i)));
            show_line(out, line);
        }
    } else if (g_str_equal(name, SM_EVENT_ATTEMPT)) {
        text = g_strdup_printf("migrating: attempt %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT,
                               int_field(event, "attempt", 1), int_field(event, "max_attempts", 1));
        show_progress(out, text);
    } else if (g_str_equal(name, SM_EVENT_PRE_SWITCHOVER)) {
        text = g_strdup_printf("pre-switchover: probing devices (attempt %" G_GINT64_FORMAT ")",
                               int_field(event, "attempt", 1));
        show_progress(out, text);
    } else if (g_str_equal(name, SM_EVENT_HOLD)) {
        text = g_strdup_printf("holding: %s; next attempt in %.1f s",
                               qmp_json_string(event, "waiting_for"),
                               (double)int_field(event, "retry_in_ms", 0) / 1000.0);
        show_progress(out, text);
    } else if (g_str_equal(name, SM_EVENT_DEST_PREPARE)) {
        show_progress(out, "preparing a fresh destination");
    } else if (g_str_equal(name, SM_EVENT_FIX_FALLBACK)) {
        text = g_strdup_printf("continuing through QEMU's fix: %s has %s pending",
                               qmp_json_string(event, "device"), qmp_json_string(event, "pending"));
        show_line(out, text);
    } else if (g_str_equal(name, SM_EVENT_RESULT)) {
        const char *result = qmp_json_string(event, SM_EVENT_KEY_RESULT);
        const char *error = qmp_json_string(event, "error");
        if (g_str_equal(result, SM_RESULT_MIGRATED))
            text = g_strdup_printf(
                "migrated (path %s) in %" G_GINT64_FORMAT " ms, downtime %" G_GINT64_FORMAT
                " ms, %" G_GINT64_FORMAT " attempt(s)",
                qmp_json_string(event, "path"), int_field(event, "total_ms", 0),
                int_field(event, "downtime_ms", -1), int_field(event, "attempts", 0));
        else
            text = g_strdup_printf(
                "safe-migrate migrate: %s after %" G_GINT64_FORMAT " attempt(s)%s%s", result,
                int_field(event, "attempts", 0), error ? ": " : "", error ? error : "");
        if (!out->quiet || !g_str_equal(result, "migrated")) {
            end_line(out);
            fprintf(stderr, "%s\n", text);
        }
    }
}

/* Every catchable signal whose default would kill the CLI mid-migration (an ssh drop sends
 * SIGHUP, a Ctrl-\\ SIGQUIT) calls the migration off instead: the VM stays on the source and
 * the exit code is 128 + the signal's number. SIGPIPE is ignored: a reader of --json that
 * goes away must not leave the VM paused at pre-switchover. */
static const int call_off_signals[] = {SIGHUP,  SIGINT,  SIGQUIT,   SIGTERM, SIGUSR1, SIGUSR2,
                                       SIGALRM, SIGXCPU, SIGVTALRM, SIGPROF, SIGPWR};
static int signal_pipe[2] = {-1, -1};

static void on_raw_signal(int signum)
{
    int saved = errno;
    unsigned char b = (unsigned char)signum;
    (void)!write(signal_pipe[1], &b, 1);
    errno = saved;
}

static gboolean on_signal(gint fd, GIOCondition condition, gpointer data)
{
    (void)condition;
    unsigned char b;
    while (read(fd, &b, 1) == 1)
        sm_migration_request_cancel(data, b);
    return G_SOURCE_CONTINUE;
}

/* Self-pipe: the handler only writes the signal's number; the main context reads it. */
static guint catch_signals(SmMigration *m)
{
    if (signal_pipe[0] < 0 && pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return 0;
    struct sigaction sa = {.sa_handler = on_raw_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    for (guint i = 0; i < G_N_ELEMENTS(call_off_signals); i++)
        sigaction(call_off_signals[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return g_unix_fd_add(signal_pipe[0], G_IO_IN, on_signal, m);
}

static void release_signals(guint watch)
{
    for (guint i = 0; i < G_N_ELEMENTS(call_off_signals); i++)
        signal(call_off_signals[i], SIG_DFL);
    if (watch)
        g_source_remove(watch);
}

/* Option values are strings so that "not given" is visible and the file's value stays. */
static char *opt_source, *opt_dest, *opt_uri, *opt_dest_prepare, *opt_dest_prepare_timeout, *opt_vm,
    *opt_downtime, *opt_bandwidth_mib, *opt_bandwidth, *opt_plugin_dir, *opt_timeout,
    *opt_probe_timeout, *opt_parallel_connections;
static gboolean opt_verbose, opt_live, opt_auto_converge, opt_parallel;
/* The gate's own flags (--policy, --max-hold, --json, ...) are sm_gate_flags (gate-flags.c). */

static const GOptionEntry migrate_entries[] = {
    {"source", 0, 0, G_OPTION_ARG_STRING, &opt_source, "Source QMP address", "ADDR"},
    {"dest", 0, 0, G_OPTION_ARG_STRING, &opt_dest, "Destination QMP address", "ADDR"},
    {"uri", 0, 0, G_OPTION_ARG_STRING, &opt_uri, "Migration URI (unix:PATH, tcp:HOST:PORT)", "URI"},
    {"dest-prepare", 0, 0, G_OPTION_ARG_STRING, &opt_dest_prepare,
     "Shell command that starts a fresh destination before each retry", "CMD"},
    {"dest-prepare-timeout", 0, 0, G_OPTION_ARG_STRING, &opt_dest_prepare_timeout,
     "Kill dest-prepare and fail after this long (default 2min)", "DURATION"},
    {"vm", 0, 0, G_OPTION_ARG_STRING, &opt_vm, "Take everything from vms.d/NAME.conf", "NAME"},
    {"probe-timeout", 0, 0, G_OPTION_ARG_STRING, &opt_probe_timeout,
     "Longest device-state capture (default 5s)", "DURATION"},
    {"timeout", 0, 0, G_OPTION_ARG_STRING, &opt_timeout,
     "Give up a migration not done after this long (a number: seconds, as virsh)", "DURATION"},
    {"downtime-limit", 0, 0, G_OPTION_ARG_STRING, &opt_downtime,
     "QEMU downtime-limit (a number: milliseconds)", "DURATION"},
    {"bandwidth", 0, 0, G_OPTION_ARG_STRING, &opt_bandwidth_mib,
     "Bandwidth limit in MiB/s, as virsh", "MIB"},
    {"max-bandwidth", 0, 0, G_OPTION_ARG_STRING, &opt_bandwidth,
     "Bandwidth limit in bytes/s with a unit: B, K, M, G (e.g. 100M)", "RATE"},
    {"auto-converge", 0, 0, G_OPTION_ARG_NONE, &opt_auto_converge,
     "Throttle the guest's vCPUs if RAM does not converge", NULL},
    {"parallel", 0, 0, G_OPTION_ARG_NONE, &opt_parallel, "Multifd: several streams", NULL},
    {"parallel-connections", 0, 0, G_OPTION_ARG_STRING, &opt_parallel_connections,
     "Number of multifd streams (implies --parallel)", "N"},
    {"live", 0, 0, G_OPTION_ARG_NONE, &opt_live, "Accepted for virsh: migration is always live",
     NULL},
    {"plugin-dir", 0, 0, G_OPTION_ARG_FILENAME, &opt_plugin_dir, "Extra probe modules", "DIR"},
    {"verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "Debug logs (QMP traffic) on stderr",
     NULL},
    G_OPTION_ENTRY_NULL,
};

/* One flag as a policy key and the value to give it: flag names follow virsh where they
 * overlap; values are normalised so that the daemon (which applies them with the same
 * policy code) needs no knowledge of the CLI's units. */
typedef struct {
    const char *key;  /* policy key */
    const char *flag; /* as typed, for errors */
    char *value;      /* normalised */
} Setting;

static void setting_clear(Setting *s)
{
    g_free(s->value);
}

/* A duration whose bare number has a documented unit, as "<N>ms". */
static gboolean norm_duration(const char *flag, const char *text, gint64 bare_unit_ms, char **out,
                              GError **error)
{
    gint64 ms = 0;
    g_autoptr(GError) local = NULL;
    if (!sm_parse_duration_full(text, bare_unit_ms, &ms, &local)) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE, "%s: %s", flag, local->message);
        return FALSE;
    }
    *out = g_strdup_printf("%" G_GINT64_FORMAT "ms", ms);
    return TRUE;
}

static gboolean norm_bandwidth(const char *flag, const char *text, gboolean mib, char **out,
                               GError **error)
{
    gboolean digits = *text && text[strspn(text, "0123456789")] == 0;
    if (mib && !digits) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "%s: '%s' is not a whole number of MiB/s (for another unit: --max-bandwidth "
                    "100M)",
                    flag, text);
        return FALSE;
    }
    if (!mib && digits && !g_str_equal(text, "0")) {
        /* Bytes or MiB? virsh's --bandwidth is MiB/s: a bare number here is ambiguous. */
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "%s: '%s' needs a unit: %sM for MiB/s, %sB for bytes/s (or --bandwidth %s)",
                    flag, text, text, text, text);
        return FALSE;
    }
    *out = g_strconcat(text, mib ? "M" : "", NULL);
    return TRUE;
}

/* Collects the flags given, in the order they apply. Returns FALSE on a bad value. */
static gboolean collect_settings(GArray *out, GError **error)
{
    const struct {
        const char *key, *flag, *value;
    } plain[] = {{"source-qmp", "--source", opt_source},
                 {"dest-qmp", "--dest", opt_dest},
                 {"uri", "--uri", opt_uri},
                 {"dest-prepare", "--dest-prepare", opt_dest_prepare},
                 {"dest-prepare-timeout", "--dest-prepare-timeout", opt_dest_prepare_timeout},
                 {"max-attempts", "--max-attempts", sm_gate_flags.max_attempts},
                 {"max-hold", "--max-hold", sm_gate_flags.max_hold},
                 {"backoff", "--backoff", sm_gate_flags.backoff},
                 {"max-backoff", "--max-backoff", sm_gate_flags.max_backoff},
                 {"on-unquiesceable", "--on-unquiesceable", sm_gate_flags.on_unquiesceable},
                 {"probe-timeout", "--probe-timeout", opt_probe_timeout},
                 {"plugin-dir", "--plugin-dir", opt_plugin_dir}};
    for (guint i = 0; i < G_N_ELEMENTS(plain); i++) {
        if (plain[i].value) {
            Setting s = {plain[i].key, plain[i].flag, g_strdup(plain[i].value)};
            g_array_append_val(out, s);
        }
    }
    Setting s = {NULL, NULL, NULL};
    if (opt_downtime) {
        s = (Setting){"downtime-limit", "--downtime-limit", NULL};
        if (!norm_duration(s.flag, opt_downtime, 1, &s.value, error))
            return FALSE;
        g_array_append_val(out, s);
    }
    if (opt_timeout) {
        s = (Setting){"timeout", "--timeout", NULL};
        if (!norm_duration(s.flag, opt_timeout, 1000, &s.value, error))
            return FALSE;
        g_array_append_val(out, s);
    }
    if (opt_bandwidth_mib && opt_bandwidth) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "--bandwidth and --max-bandwidth are one setting: give one");
        return FALSE;
    }
    if (opt_bandwidth_mib || opt_bandwidth) {
        s = (Setting){"max-bandwidth", opt_bandwidth ? "--max-bandwidth" : "--bandwidth", NULL};
        if (!norm_bandwidth(s.flag, opt_bandwidth ? opt_bandwidth : opt_bandwidth_mib,
                            !opt_bandwidth, &s.value, error))
            return FALSE;
        g_array_append_val(out, s);
    }
    if (opt_auto_converge) {
        s = (Setting){"auto-converge", "--auto-converge", g_strdup("true")};
        g_array_append_val(out, s);
    }
    if (opt_parallel || opt_parallel_connections) {
        s = (Setting){"multifd", opt_parallel_connections ? "--parallel-connections" : "--parallel",
                      g_strdup(opt_parallel_connections ? opt_parallel_connections : "true")};
        g_array_append_val(out, s);
    }
    return TRUE;
}

/* The daemon holds the policies: the flags travel as overrides, validated there by the
 * same code; the events come back as they would in-process. */
static int migrate_via_daemon(GArray *settings)
{
    if (!opt_vm || sm_gate_flags.policy || sm_gate_flags.config_dir) {
        g_printerr("safe-migrate migrate: with --daemon, give --vm NAME (the daemon reads "
                   "its own policy files; no --policy or --config-dir)\n");
        return SM_EXIT_USAGE;
    }
    json_object *options = json_object_new_object();
    for (guint i = 0; i < settings->len; i++) {
        const Setting *s = &g_array_index(settings, Setting, i);
        json_object_object_add(options, s->key, json_object_new_string(s->value));
    }
    Output out = {
        .json = sm_gate_flags.json, .quiet = sm_gate_flags.quiet, .tty = isatty(STDERR_FILENO)};
    int code = sm_daemon_migrate(opt_vm, options, on_event, &out);
    end_line(&out);
    return code;
}

/* The policy (defaults.conf, then --vm's file or --policy, then the flags) and the engine in
 * this process. */
static int migrate_here(GArray *settings)
{
    g_autoptr(GError) error = NULL;
    SmPolicy policy;
    sm_policy_init(&policy);
    const char *config_dir =
        sm_gate_flags.config_dir ? sm_gate_flags.config_dir : SM_DEFAULT_CONFIG_DIR;
    /* defaults.conf (when present) applies to every migration, as in the daemon. */
    gboolean ok = sm_policy_load(&policy, config_dir, opt_vm, &error);
    if (ok && sm_gate_flags.policy)
        ok = sm_policy_load_file(&policy, sm_gate_flags.policy, &error);
    for (guint i = 0; ok && i < settings->len; i++) {
        const Setting *s = &g_array_index(settings, Setting, i);
        ok = sm_policy_apply_flag(&policy, s->key, s->flag, s->value, &error);
    }
    if (ok)
        ok = sm_policy_check_complete(&policy, &error);
    if (!ok) {
        g_printerr("safe-migrate migrate: %s\n", error->message);
        sm_policy_clear(&policy);
        return SM_EXIT_USAGE;
    }
    Output out = {
        .json = sm_gate_flags.json, .quiet = sm_gate_flags.quiet, .tty = isatty(STDERR_FILENO)};
    g_autoptr(SmMigration) m = sm_migration_new(&policy, on_event, &out);
    sm_policy_clear(&policy);
    guint watch = catch_signals(m);
    int code = sm_migration_run(m);
    release_signals(watch);
    end_line(&out);
    return code;
}

int sm_cmd_migrate(int argc, char **argv)
{
    if (sm_migrate_is_libvirt_form(argc, argv)) /* DOMAIN DESTURI: cmd-migrate-libvirt.c */
        return sm_cmd_migrate_libvirt(argc, argv);
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- migrate a VM, gated on its USB devices");
    GOptionEntry gate[SM_GATE_ENTRIES + 1];
    sm_gate_entries(gate, "When the budget is spent: abort, use-fix, use-fix-if-benign");
    g_option_context_add_main_entries(ctx, migrate_entries, NULL);
    g_option_context_add_main_entries(ctx, gate, NULL);
    g_option_context_set_summary(
        ctx, "Durations as systemd.time(7): 500ms, 1.5s, 1min 30s, 2h (at most 7d).\n"
             "Without --vm, --policy or the flags, defaults.conf of the configuration\n"
             "directory applies.\n\n"
             "Exit codes: 0 migrated, 2 usage/policy error, 3 unreachable or refused,\n"
             "4 held out or refused for a device (VM on source), 5 failed (VM on source),\n"
             "6 VM state uncertain, 128+N interrupted by signal N (VM on source): 129 SIGHUP,\n"
             "130 SIGINT, 131 SIGQUIT, 143 SIGTERM (also SIGUSR1/2, SIGALRM, SIGXCPU,\n"
             "SIGVTALRM, SIGPROF, SIGPWR). After migrate-continue a signal does not call the\n"
             "migration off: the gate waits for QEMU's outcome (a second signal leaves, exit 6).\n"
             "SIGPIPE is ignored.");
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        g_printerr("safe-migrate migrate: %s\n", error->message);
        return SM_EXIT_USAGE;
    }
    if (argc > 1) {
        g_printerr("safe-migrate migrate: unexpected argument '%s'\n", argv[1]);
        return SM_EXIT_USAGE;
    }
    if (opt_verbose) /* the layers' debug logs (QMP traffic), not GLib's own */
        g_setenv("G_MESSAGES_DEBUG", "qmp sm-capture sm-registry sm-stream sm-usb-storage", TRUE);
    g_autoptr(GArray) settings = g_array_new(FALSE, TRUE, sizeof(Setting));
    g_array_set_clear_func(settings, (GDestroyNotify)setting_clear);
    if (!collect_settings(settings, &error)) {
        g_printerr("safe-migrate migrate: %s\n", error->message);
        return SM_EXIT_USAGE;
    }
    return sm_daemon_socket ? migrate_via_daemon(settings) : migrate_here(settings);
}

static char *opt_recover_source, *opt_recover_dest;
static gboolean opt_recover_json;
static const GOptionEntry recover_entries[] = {
    {"source", 0, 0, G_OPTION_ARG_STRING, &opt_recover_source, "Source QMP address", "ADDR"},
    {"dest", 0, 0, G_OPTION_ARG_STRING, &opt_recover_dest,
     "Destination QMP address: without it, where the VM runs is judged from the source only "
     "and a completed migration stays unconfirmed (exit 6)",
     "ADDR"},
    {"json", 0, 0, G_OPTION_ARG_NONE, &opt_recover_json, "Print one JSON object", NULL},
    G_OPTION_ENTRY_NULL,
};

int sm_cmd_recover(int argc, char **argv)
{
    if (sm_daemon_socket)
        return sm_daemon_cmd_recover(argc, argv);
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("- release a VM left mid-migration by a gate that died");
    g_option_context_add_main_entries(ctx, recover_entries, NULL);
    g_option_context_set_summary(
        ctx, "Exit codes: 0 the VM runs, on one side (the summary says which),\n"
             "2 usage error, 3 unreachable, 6 VM state uncertain (check it).");
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error) || !opt_recover_source) {
        g_printerr("safe-migrate recover: %s\n", error ? error->message : "--source is required");
        return SM_EXIT_USAGE;
    }
    g_autofree char *summary = NULL;
    int code = sm_recover(opt_recover_source, opt_recover_dest, &summary, &error);
    if (opt_recover_json) {
        g_autoptr(json_object) obj = json_object_new_object();
        json_object_object_add(obj, "exit_code", json_object_new_int(code));
        if (summary)
            json_object_object_add(obj, "summary", json_object_new_string(summary));
        if (error)
            json_object_object_add(obj, "error", json_object_new_string(error->message));
        printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    } else if (error) {
        if (summary)
            printf("%s\n", summary);
        g_printerr("safe-migrate recover: %s\n", error->message);
    } else {
        printf("%s\n", summary);
    }
    return code;
}

void sm_cli_print_event(json_object *event, gpointer output)
{
    on_event(event, output);
}

void sm_cli_end_line(SmCliOutput *output)
{
    end_line(output);
}

const GOptionEntry *sm_migrate_qmp_entries(void)
{
    return migrate_entries;
}
