/* SPDX-License-Identifier: GPL-2.0-or-later */
/* `safe-migrate migrate DOMAIN DESTURI` and `safe-migrate status -c URI DOMAIN`: libvirt
 * domains, through libvirt's C API. The gate itself runs in the filter on the domain's
 * monitor (sidecar/libvirt/); this drives libvirt's migration job, shows its progress from
 * the job stats, retries a held attempt (the filter's error) with backoff within the budget,
 * and speaks the same events and exit codes as the QMP form. */
#include "commands.h"
#include "qmp.h" /* json_object autoptr */
#include "sm-libvirt.h"

#include <errno.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef SM_HAVE_LIBVIRT
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#endif

static char *opt_connect, *opt_migrateuri, *opt_listen;
static gint64 opt_bandwidth = -1;
static gboolean opt_live, opt_p2p, opt_persistent, opt_undefinesource;
/* The gate's own flags (--policy, --max-hold, --json, ...) are sm_gate_flags (gate-flags.c). */
#define LV_FALLBACK_HELP "When the budget is spent: abort (use-fix* is refused under libvirt)"

static const GOptionEntry entries[] = {
    {"connect", 'c', 0, G_OPTION_ARG_STRING, &opt_connect, "Source libvirt URI", "URI"},
    {"live", 0, 0, G_OPTION_ARG_NONE, &opt_live, "Live migration", NULL},
    {"p2p", 0, 0, G_OPTION_ARG_NONE, &opt_p2p, "Peer-to-peer (the source libvirtd drives)", NULL},
    {"persistent", 0, 0, G_OPTION_ARG_NONE, &opt_persistent, "Persist on the destination", NULL},
    {"undefinesource", 0, 0, G_OPTION_ARG_NONE, &opt_undefinesource, "Undefine on the source",
     NULL},
    {"migrateuri", 0, 0, G_OPTION_ARG_STRING, &opt_migrateuri, "Migration data URI", "URI"},
    {"listen-address", 0, 0, G_OPTION_ARG_STRING, &opt_listen, "Destination listen address",
     "ADDR"},
    {"bandwidth", 0, 0, G_OPTION_ARG_INT64, &opt_bandwidth, "Bandwidth limit", "MiB/s"},
    G_OPTION_ENTRY_NULL,
};

static gboolean takes_value(const GOptionEntry *table, const char *arg)
{
    for (guint i = 0; table[i].long_name; i++) {
        gboolean named = (arg[1] == '-' && g_str_equal(arg + 2, table[i].long_name)) ||
                         (arg[1] && !arg[2] && arg[1] == table[i].short_name);
        if (named)
            return table[i].arg != G_OPTION_ARG_NONE;
    }
    return FALSE;
}

/* The libvirt form is chosen by its positional DOMAIN DESTURI, or by an option only it has. */
gboolean sm_migrate_is_libvirt_form(int argc, char **argv)
{
    GOptionEntry gate[SM_GATE_ENTRIES + 1];
    sm_gate_entries(gate, LV_FALLBACK_HELP);
    static const char *const only_libvirt[] = {
        "-c",           "--connect",        "--p2p", "--persistent", "--undefinesource",
        "--migrateuri", "--listen-address", NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        g_autofree char *name = g_strndup(a, strcspn(a, "="));
        if (g_str_equal(a, "--") || a[0] != '-' || g_strv_contains(only_libvirt, name))
            return TRUE;
        if (!strchr(a, '=') && (takes_value(sm_migrate_qmp_entries(), a) ||
                                takes_value(entries, a) || takes_value(gate, a)))
            i++;
    }
    return FALSE;
}

/* status DOMAIN, status -c URI DOMAIN; the QMP form always names its --qmp. */
gboolean sm_status_is_libvirt_form(int argc, char **argv)
{
    gboolean qmp = FALSE, word = FALSE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (g_str_equal(a, "-c") || g_str_has_prefix(a, "--connect"))
            return TRUE;
        qmp = qmp || g_str_has_prefix(a, "--qmp");
        word = word || a[0] != '-';
    }
    return word && !qmp;
}

#ifndef SM_HAVE_LIBVIRT
int sm_cmd_migrate_libvirt(int argc, char **argv)
{
    (void)argc, (void)argv;
    g_printerr("safe-migrate migrate: built without libvirt (libvirt-dev)\n");
    return SM_EXIT_USAGE;
}

int sm_cmd_status_libvirt(int argc, char **argv)
{
    (void)argc, (void)argv;
    g_printerr("safe-migrate status: built without libvirt (libvirt-dev)\n");
    return SM_EXIT_USAGE;
}
#else

static void quiet_errors(void *data, virErrorPtr error)
{
    (void)data, (void)error; /* reported by us, once, with context */
}

static const char *last_error(void)
{
    const char *m = virGetLastErrorMessage();
    return m ? m : "unknown libvirt error";
}

/* ---- status ------------------------------------------------------------------------------ */

static char *opt_st_connect, *opt_st_libvirt_dir;
static gboolean opt_st_json;

/* Asks the domain's filter on its control socket: the filter probes on its own connection,
 * so the domain is not tainted (no qemu-monitor-command). */
int sm_cmd_status_libvirt(int argc, char **argv)
{
    GOptionEntry entries[] = {
        {"connect", 'c', 0, G_OPTION_ARG_STRING, &opt_st_connect, "libvirt URI", "URI"},
        {"libvirt-dir", 0, 0, G_OPTION_ARG_FILENAME, &opt_st_libvirt_dir,
         "libvirt's QEMU state directory (default " SM_LV_DEFAULT_LIB_DIR ")", "DIR"},
        {"json", 'j', 0, G_OPTION_ARG_NONE, &opt_st_json, "Print one JSON object", NULL},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("DOMAIN - a libvirt domain's devices");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc != 2) {
        g_printerr("safe-migrate status: %s\n", error ? error->message : "give one DOMAIN");
        return SM_EXIT_USAGE;
    }
    virSetErrorFunc(NULL, quiet_errors);
    virConnectPtr conn = virConnectOpen(opt_st_connect);
    virDomainPtr dom = conn ? virDomainLookupByName(conn, argv[1]) : NULL;
    unsigned int id = dom ? virDomainGetID(dom) : (unsigned int)-1;
    if (id == (unsigned int)-1 || id > G_MAXINT) { /* -1: not running */
        g_printerr("safe-migrate status: %s: %s\n", argv[1], dom ? "not running" : last_error());
        if (dom)
            virDomainFree(dom);
        if (conn)
            virConnectClose(conn);
        return SM_EXIT_UNREACHABLE;
    }
    virDomainFree(dom);
    virConnectClose(conn);
    g_autofree char *dir = sm_lv_domain_dir(
        opt_st_libvirt_dir ? opt_st_libvirt_dir : SM_LV_DEFAULT_LIB_DIR, (int)id, &error);
    g_autofree char *path = dir ? g_build_filename(dir, SM_LV_CONTROL_SOCK, NULL) : NULL;
    int fd = path ? sm_lv_connect_unix(path) : -1;
    if (fd < 0) {
        g_printerr("safe-migrate status: %s is not gated here (%s)\n", argv[1],
                   error ? error->message : g_strerror(errno));
        return SM_EXIT_UNREACHABLE;
    }
    GString *reply = g_string_new(NULL);
    char buf[4096];
    ssize_t n = write(fd, "status\n", 7);
    while (n > 0 && (n = read(fd, buf, sizeof buf)) > 0 && reply->len < (1u << 20))
        g_string_append_len(reply, buf, n);
    close(fd);
    g_autofree char *text = g_string_free(reply, FALSE);
    g_autoptr(json_object) obj = json_tokener_parse(text);
    json_object *err = NULL;
    if (!obj || !json_object_is_type(obj, json_type_object) ||
        json_object_object_get_ex(obj, "error", &err)) {
        /* E.g. a migration in progress: the filter does not probe under it (exit 1). */
        if (err && json_object_is_type(err, json_type_string))
            g_printerr("safe-migrate status: %s: %s\n", argv[1], json_object_get_string(err));
        else
            g_printerr("safe-migrate status: the filter says: %s", text);
        return SM_EXIT_FAILURE;
    }
    if (opt_st_json)
        printf("%s", text);
    else
        printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY));
    return SM_EXIT_OK;
}

/* ---- migrate ----------------------------------------------------------------------------- */

typedef struct {
    SmPolicy policy;
    const char *domain, *dest_uri;
    virConnectPtr conn;
    virDomainPtr dom;
    SmCliOutput out;
    gint64 t0_us;
    /* One attempt, run by a thread: libvirt's call blocks for the whole migration. */
    GMainLoop *loop;
    gboolean done, ok;
    char *error;
    int signum; /* SIGINT/SIGTERM received: the job was aborted */
    guint attempts, holds;
    int start_state; /* virDomainState before the first attempt: a paused domain stays paused */
} LvMigration;

static void emit(LvMigration *m, const char *event, json_object *fields)
{
    json_object *obj = json_object_new_object();
    json_object_object_add(obj, "event", json_object_new_string(event));
    json_object_object_add(obj, "t_ms",
                           json_object_new_int64((g_get_monotonic_time() - m->t0_us) / 1000));
    if (fields) {
        json_object_object_foreach(fields, key, value)
            json_object_object_add(obj, key, json_object_get(value));
        json_object_put(fields);
    }
    sm_cli_print_event(obj, &m->out);
    json_object_put(obj);
}

static json_object *jstr(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

/* ---- One attempt: libvirt's migration call on a thread, progress and signals here ---------- */

/* "Here" is the main thread, running the default main context (its loop acquires it). The
 * attempt thread touches only m->dom (libvirt's handles are thread-safe) and m->ok / m->error,
 * which the main thread reads after joining it. */
#define ASSERT_MAIN() g_assert(g_main_context_is_owner(g_main_context_default()))

static void add_params(virTypedParameterPtr *params, int *n, int *max)
{
    if (opt_migrateuri)
        virTypedParamsAddString(params, n, max, VIR_MIGRATE_PARAM_URI, opt_migrateuri);
    if (opt_listen)
        virTypedParamsAddString(params, n, max, VIR_MIGRATE_PARAM_LISTEN_ADDRESS, opt_listen);
    if (opt_bandwidth >= 0)
        virTypedParamsAddULLong(params, n, max, VIR_MIGRATE_PARAM_BANDWIDTH,
                                (unsigned long long)opt_bandwidth);
}

static unsigned int migrate_flags(void)
{
    return (opt_live ? VIR_MIGRATE_LIVE : 0) | (opt_p2p ? VIR_MIGRATE_PEER2PEER : 0) |
           (opt_persistent ? VIR_MIGRATE_PERSIST_DEST : 0) |
           (opt_undefinesource ? VIR_MIGRATE_UNDEFINE_SOURCE : 0);
}

static gboolean attempt_done(gpointer data)
{
    LvMigration *m = data;
    ASSERT_MAIN();
    m->done = TRUE;
    g_main_loop_quit(m->loop);
    return G_SOURCE_REMOVE;
}

static gpointer attempt_thread(gpointer data)
{
    LvMigration *m = data;
    virTypedParameterPtr params = NULL;
    int n = 0, max = 0;
    add_params(&params, &n, &max);
    if (opt_p2p) {
        m->ok = virDomainMigrateToURI3(m->dom, m->dest_uri, params, (unsigned int)n,
                                       migrate_flags()) == 0;
    } else {
        virConnectPtr dest = virConnectOpen(m->dest_uri);
        virDomainPtr moved =
            dest ? virDomainMigrate3(m->dom, dest, params, (unsigned int)n, migrate_flags()) : NULL;
        m->ok = moved != NULL;
        if (!m->ok) /* before virConnectClose, which resets the thread's last error */
            m->error = g_strdup(last_error());
        if (moved)
            virDomainFree(moved);
        if (dest)
            virConnectClose(dest);
    }
    if (!m->ok && !m->error)
        m->error = g_strdup(last_error());
    virTypedParamsFree(params, n);
    g_main_context_invoke(NULL, attempt_done, m);
    return NULL;
}

static gboolean on_tick(gpointer data)
{
    LvMigration *m = data;
    int type = 0, n = 0;
    virTypedParameterPtr params = NULL;
    ASSERT_MAIN();
    if (virDomainGetJobStats(m->dom, &type, &params, &n, 0) < 0 || type == VIR_DOMAIN_JOB_NONE) {
        virTypedParamsFree(params, n);
        return G_SOURCE_CONTINUE;
    }
    unsigned long long total = 0, done = 0, bps = 0;
    virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_MEMORY_TOTAL, &total);
    virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_MEMORY_PROCESSED, &done);
    virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_MEMORY_BPS, &bps);
    virTypedParamsFree(params, n);
    json_object *f = json_object_new_object();
    json_object_object_add(f, "status", json_object_new_string("active"));
    json_object_object_add(f, "ram_total", json_object_new_int64((gint64)total));
    json_object_object_add(f, "ram_transferred", json_object_new_int64((gint64)done));
    json_object_object_add(f, "mbps", json_object_new_double((double)bps * 8 / 1e6));
    json_object_object_add(f, "attempt", json_object_new_int((int)m->attempts));
    json_object_object_add(f, "max_attempts", json_object_new_int((int)m->policy.max_attempts));
    emit(m, "progress", f);
    return G_SOURCE_CONTINUE;
}

/* Ctrl-C: libvirt aborts its job (it cancels QEMU's migration; the domain stays). */
static gboolean on_signal(gpointer data, int signum)
{
    LvMigration *m = data;
    ASSERT_MAIN();
    if (!m->signum)
        m->signum = signum;
    if (!m->done && virDomainAbortJob(m->dom) < 0)
        g_printerr("safe-migrate migrate: abort: %s\n", last_error());
    g_main_loop_quit(m->loop); /* ends a backoff wait; an attempt waits for its thread */
    return G_SOURCE_CONTINUE;
}

static gboolean on_sigint(gpointer data)
{
    return on_signal(data, SIGINT);
}

static gboolean on_sigterm(gpointer data)
{
    return on_signal(data, SIGTERM);
}

static void run_attempt(LvMigration *m)
{
    m->attempts++;
    m->done = m->ok = FALSE;
    g_clear_pointer(&m->error, g_free);
    json_object *f = json_object_new_object();
    json_object_object_add(f, "attempt", json_object_new_int((int)m->attempts));
    json_object_object_add(f, "max_attempts", json_object_new_int((int)m->policy.max_attempts));
    emit(m, "attempt", f);
    GThread *thread = g_thread_new("migrate", attempt_thread, m);
    guint tick = g_timeout_add(500, on_tick, m);
    while (!m->done)
        g_main_loop_run(m->loop);
    g_source_remove(tick);
    g_thread_join(thread);
}

static gboolean quit_loop(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

/* FALSE when a signal cut the wait short. */
static gboolean backoff(LvMigration *m, gint64 ms)
{
    guint id = g_timeout_add((guint)ms, quit_loop, m->loop);
    g_main_loop_run(m->loop);
    if (m->signum)
        g_source_remove(id);
    return !m->signum;
}

/* ---- The attempts, and what they add up to ------------------------------------------------ */

static int result(LvMigration *m, int code, const char *res, const char *path, gint64 downtime,
                  const char *error)
{
    json_object *f = json_object_new_object();
    json_object_object_add(f, "result", json_object_new_string(res));
    json_object_object_add(f, "exit_code", json_object_new_int(code));
    json_object_object_add(f, "path", jstr(path));
    json_object_object_add(f, "attempts", json_object_new_int((int)m->attempts));
    json_object_object_add(f, "holds", json_object_new_int((int)m->holds));
    json_object_object_add(f, "downtime_ms", json_object_new_int64(downtime));
    json_object_object_add(f, "total_ms",
                           json_object_new_int64((g_get_monotonic_time() - m->t0_us) / 1000));
    json_object_object_add(f, "error", jstr(error));
    emit(m, "result", f);
    return code;
}

/* After a failed or aborted attempt the domain must be on the source as it was: running, or
 * paused if it was paused before we started (libvirt migrates a paused domain paused). */
static gboolean running_on_source(LvMigration *m)
{
    int state = 0, reason = 0;
    if (virDomainGetState(m->dom, &state, &reason, 0) != 0)
        return FALSE;
    return state == VIR_DOMAIN_RUNNING ||
           (state == VIR_DOMAIN_PAUSED && m->start_state == VIR_DOMAIN_PAUSED);
}

/* The destination's record of the finished job: downtime in ms, or -1. */
static gint64 dest_downtime(LvMigration *m)
{
    virConnectPtr dest = virConnectOpen(m->dest_uri);
    virDomainPtr dom = dest ? virDomainLookupByName(dest, m->domain) : NULL;
    int type = 0, n = 0;
    virTypedParameterPtr params = NULL;
    unsigned long long downtime = 0;
    gint64 result = -1;
    if (dom && virDomainGetJobStats(dom, &type, &params, &n, VIR_DOMAIN_JOB_STATS_COMPLETED) == 0 &&
        virTypedParamsGetULLong(params, n, VIR_DOMAIN_JOB_DOWNTIME, &downtime) == 1)
        result = (gint64)downtime;
    virTypedParamsFree(params, n);
    if (dom)
        virDomainFree(dom);
    if (dest)
        virConnectClose(dest);
    return result;
}

/* The filter's refusal names the device and what it has pending ("switchover held: DEV is busy
 * with CMD pending (" or "DEV: state unknown"). */
static void parse_hold(const char *error, char **device, char **pending, gboolean *unknown)
{
    g_autoptr(GRegex) busy = g_regex_new("held: (\\S+) is busy with (.+?) pending \\(", 0, 0, NULL);
    g_autoptr(GRegex) unk = g_regex_new("held: (\\S+): state unknown", 0, 0, NULL);
    g_autoptr(GMatchInfo) match = NULL;
    *unknown = FALSE;
    if (g_regex_match(busy, error, 0, &match)) {
        *device = g_match_info_fetch(match, 1);
        *pending = g_match_info_fetch(match, 2);
    } else {
        g_clear_pointer(&match, g_match_info_free);
        *unknown = g_regex_match(unk, error, 0, &match);
        *device = *unknown ? g_match_info_fetch(match, 1) : g_strdup("?");
        *pending = g_strdup(*unknown ? "an undecoded state" : "?");
    }
}

static int after_failure(LvMigration *m, gint64 *hold_started_us)
{
    if (m->signum)
        return running_on_source(m)
                   ? result(m, m->signum == SIGINT ? SM_EXIT_SIGINT : SM_EXIT_SIGTERM,
                            "interrupted", NULL, -1, m->error)
                   : result(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, m->error);
    if (!running_on_source(m))
        return result(m, SM_EXIT_UNCERTAIN, "uncertain", NULL, -1, m->error);
    /* The filter answered libvirt's migrate itself: a device it cannot judge, or a paused
     * guest that cannot finish what it has pending. No retry changes that: refused, as the
     * QMP form's preflight refuses (exit 4, nothing started). */
    if (strstr(m->error, "safe-migrate: migration refused"))
        return result(m, SM_EXIT_HELD_OUT, "refused", NULL, -1, m->error);
    if (!strstr(m->error, "safe-migrate") || !strstr(m->error, "held"))
        return result(m, SM_EXIT_FAILED, "failed", NULL, -1, m->error);
    g_autofree char *device = NULL, *pending = NULL;
    gboolean unknown;
    parse_hold(m->error, &device, &pending, &unknown);
    gint64 now = g_get_monotonic_time();
    if (!*hold_started_us)
        *hold_started_us = now;
    gint64 held_ms = (now - *hold_started_us) / 1000;
    const SmPolicy *p = &m->policy;
    /* Holding cannot change an undecoded state: refused at once, not retried. */
    if (unknown || m->attempts >= p->max_attempts || held_ms >= p->max_hold_ms)
        return result(m, SM_EXIT_HELD_OUT, "aborted", NULL, -1, m->error);
    m->holds++;
    g_autofree char *waiting = g_strdup_printf("%s has %s pending", device, pending);
    json_object *f = json_object_new_object();
    json_object_object_add(f, "device", json_object_new_string(device));
    json_object_object_add(f, "state", json_object_new_string("busy"));
    json_object_object_add(f, "pending", json_object_new_string(pending));
    json_object_object_add(f, "waiting_for", json_object_new_string(waiting));
    json_object_object_add(f, "held_ms", json_object_new_int64(held_ms));
    gint64 wait = sm_policy_hold_wait(p, m->holds, held_ms);
    json_object_object_add(f, "retry_in_ms", json_object_new_int64(wait));
    emit(m, "hold", f);
    if (!backoff(m, wait))
        return after_failure(m, hold_started_us);
    json_object *r = json_object_new_object();
    json_object_object_add(r, "attempt", json_object_new_int((int)m->attempts + 1));
    emit(m, "retry", r);
    return -1; /* go on */
}

static int migrate(LvMigration *m)
{
    gint64 hold_started_us = 0;
    for (;;) {
        run_attempt(m);
        if (m->ok) {
            gint64 downtime = dest_downtime(m);
            const char *path = m->holds ? "held" : "idle";
            json_object *f = json_object_new_object();
            json_object_object_add(f, "path", json_object_new_string(path));
            json_object_object_add(f, "downtime_ms", json_object_new_int64(downtime));
            emit(m, "completed", f);
            return result(m, SM_EXIT_OK, "migrated", path, downtime, NULL);
        }
        int code = after_failure(m, &hold_started_us);
        if (code >= 0)
            return code;
    }
}

static gboolean load_policy(SmPolicy *p, const char *domain, GError **error)
{
    const struct {
        const char *key, *value;
    } flags[] = {{"max-attempts", sm_gate_flags.max_attempts},
                 {"max-hold", sm_gate_flags.max_hold},
                 {"backoff", sm_gate_flags.backoff},
                 {"max-backoff", sm_gate_flags.max_backoff},
                 {"on-unquiesceable", sm_gate_flags.on_unquiesceable}};
    const char *config_dir =
        sm_gate_flags.config_dir ? sm_gate_flags.config_dir : SM_DEFAULT_CONFIG_DIR;
    if (!sm_lv_load_policy(p, config_dir, domain, error))
        return FALSE;
    if (sm_gate_flags.policy && !sm_policy_load_file(p, sm_gate_flags.policy, error))
        return FALSE;
    for (guint i = 0; i < G_N_ELEMENTS(flags); i++)
        if (flags[i].value && !sm_policy_apply(p, flags[i].key, flags[i].value, error))
            return FALSE;
    if (p->on_unquiesceable != SM_FALLBACK_ABORT) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "on-unquiesceable=%s is not supported under libvirt: the gate runs in the "
                    "domain's filter, which cannot read the destination's fix state",
                    sm_fallback_to_string(p->on_unquiesceable));
        return FALSE;
    }
    return TRUE;
}

int sm_cmd_migrate_libvirt(int argc, char **argv)
{
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("DOMAIN DESTURI - migrate a libvirt domain, gated by its filter");
    GOptionEntry gate[SM_GATE_ENTRIES + 1];
    sm_gate_entries(gate, LV_FALLBACK_HELP);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_add_main_entries(ctx, gate, NULL);
    g_option_context_set_summary(
        ctx, "The drop-in for `virsh migrate`. Exit codes: 0 migrated, 2 usage/policy error,\n"
             "3 unreachable, 4 held out (domain on the source), 5 failed (domain on the\n"
             "source), 6 domain state uncertain, 130/143 interrupted (domain on the source).");
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc != 3) {
        g_printerr("safe-migrate migrate: %s\n", error ? error->message : "give DOMAIN DESTURI");
        return SM_EXIT_USAGE;
    }
    LvMigration m = {.domain = argv[1], .dest_uri = argv[2], .t0_us = g_get_monotonic_time()};
    m.out = (SmCliOutput){
        .json = sm_gate_flags.json, .quiet = sm_gate_flags.quiet, .tty = isatty(STDERR_FILENO)};
    sm_policy_init(&m.policy);
    if (!load_policy(&m.policy, m.domain, &error)) {
        g_printerr("safe-migrate migrate: %s\n", error->message);
        sm_policy_clear(&m.policy);
        return SM_EXIT_USAGE;
    }
    json_object *f = json_object_new_object();
    json_object_object_add(f, "vm", json_object_new_string(m.domain));
    json_object_object_add(f, "source", jstr(opt_connect));
    json_object_object_add(f, "dest", json_object_new_string(m.dest_uri));
    json_object_object_add(f, "uri", jstr(opt_migrateuri));
    json_object_object_add(f, "max_attempts", json_object_new_int((int)m.policy.max_attempts));
    json_object_object_add(f, "max_hold_ms", json_object_new_int64(m.policy.max_hold_ms));
    json_object_object_add(f, "on_unquiesceable", json_object_new_string("abort"));
    emit(&m, "start", f);
    virSetErrorFunc(NULL, quiet_errors);
    int code;
    m.conn = virConnectOpen(opt_connect);
    m.dom = m.conn ? virDomainLookupByName(m.conn, m.domain) : NULL;
    if (!m.dom) {
        code = result(&m, SM_EXIT_UNREACHABLE, "refused", NULL, -1, last_error());
    } else {
        int reason = 0;
        if (virDomainGetState(m.dom, &m.start_state, &reason, 0) != 0)
            m.start_state = VIR_DOMAIN_NOSTATE;
        m.loop = g_main_loop_new(NULL, FALSE);
        guint sigint = g_unix_signal_add(SIGINT, on_sigint, &m);
        guint sigterm = g_unix_signal_add(SIGTERM, on_sigterm, &m);
        code = migrate(&m);
        g_source_remove(sigint);
        g_source_remove(sigterm);
        g_main_loop_unref(m.loop);
        virDomainFree(m.dom);
    }
    sm_cli_end_line(&m.out);
    if (m.conn)
        virConnectClose(m.conn);
    g_free(m.error);
    sm_policy_clear(&m.policy);
    return code;
}
#endif
