/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The command-line contract of the three binaries, run as an operator would: --version,
 * exit codes in every --help, one message prefix, virsh's flag vocabulary and units, errors
 * that name the flag, the side and the address, and the JSON event encoding. No QEMU: every
 * case here ends before a VM is needed (or at an unreachable one). */
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

typedef struct {
    int status;
    char *out, *err;
} Run;

static void run_clear(Run *r)
{
    g_free(r->out);
    g_free(r->err);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Run, run_clear)

static char *binary(const char *dir, const char *name)
{
    return g_build_filename(g_getenv("SM_BUILD_ROOT"), dir, name, NULL);
}

/* Runs argv (argv[0] a path) with LC_ALL=C.UTF-8; returns the exit code. */
static int run(Run *r, const char *const *argv)
{
    g_auto(GStrv) env = g_get_environ();
    env = g_environ_setenv(env, "LC_ALL", "C.UTF-8", TRUE);
    g_autoptr(GError) error = NULL;
    int wait = 0;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, env, G_SPAWN_DEFAULT, NULL, NULL, &r->out,
                               &r->err, &wait, &error));
    g_assert_no_error(error);
    g_assert_true(WIFEXITED(wait));
    r->status = WEXITSTATUS(wait);
    g_test_message("%s -> %d\nstdout: %s\nstderr: %s", argv[1] ? argv[1] : "", r->status, r->out,
                   r->err);
    return r->status;
}

#define SM_ARGS(...) ((const char *const[]){sm, __VA_ARGS__, NULL})

static void test_version(void)
{
    const struct {
        const char *dir, *name;
    } bins[] = {{"sidecar", "safe-migrate"}, {"sidecar", "safe-migrated"}, {"qmp", "qmp-call"}};
    for (guint i = 0; i < G_N_ELEMENTS(bins); i++) {
        g_autofree char *path = binary(bins[i].dir, bins[i].name);
        g_auto(Run) r = {0};
        g_assert_cmpint(run(&r, (const char *const[]){path, "--version", NULL}), ==, 0);
        g_autofree char *want = g_strdup_printf("%s %s\n", bins[i].name, SM_EXPECTED_VERSION);
        g_assert_cmpstr(r.out, ==, want);
    }
}

static void test_help_lists_exit_codes(void)
{
    g_autofree char *sm = binary("sidecar", "safe-migrate");
    const char *subs[] = {"migrate", "recover", "status", "list", "cancel"};
    for (guint i = 0; i < G_N_ELEMENTS(subs); i++) {
        g_auto(Run) r = {0};
        g_assert_cmpint(run(&r, SM_ARGS(subs[i], "--help")), ==, 0);
        g_assert_nonnull(strstr(r.out, "Exit codes: 0 "));
        g_autofree char *usage = g_strdup_printf("Usage:\n  safe-migrate %s [OPTION", subs[i]);
        g_assert_nonnull(strstr(r.out, usage));
    }
    g_autofree char *smd = binary("sidecar", "safe-migrated");
    g_autofree char *qc = binary("qmp", "qmp-call");
    const char *others[] = {smd, qc};
    for (guint i = 0; i < G_N_ELEMENTS(others); i++) {
        g_auto(Run) r = {0};
        g_assert_cmpint(run(&r, (const char *const[]){others[i], "--help", NULL}), ==, 0);
        g_assert_nonnull(strstr(r.out, "Exit codes: 0 "));
    }
}

/* "safe-migrate SUBCOMMAND: ..." whatever path the binary is run by; GLib's quotes print. */
static void test_one_prefix(void)
{
    g_autofree char *sm = binary("sidecar", "safe-migrate");
    g_auto(Run) a = {0}, b = {0}, c = {0};
    g_assert_cmpint(run(&a, SM_ARGS("list")), ==, 2);
    g_assert_true(g_str_has_prefix(a.err, "safe-migrate list: "));
    g_assert_cmpint(run(&b, SM_ARGS("status", "--qmp", "tcp:nocolon")), ==, 2);
    g_assert_true(g_str_has_prefix(b.err, "safe-migrate status: "));
    g_assert_cmpint(run(&c, SM_ARGS("migrate", "--no-such-flag")), ==, 2);
    g_assert_true(g_str_has_prefix(c.err, "safe-migrate migrate: "));
    /* GLib's typographic quotes print in a UTF-8 locale (without setlocale they are "?"). */
    g_autofree char *dir = g_dir_make_tmp("smcli-XXXXXX", NULL);
    g_autofree char *policy = g_build_filename(dir, "bad.conf", NULL);
    g_assert_true(g_file_set_contents(policy, "[gate]\nbackoff=1s\n[gate\n", -1, NULL));
    g_auto(Run) d = {0};
    g_assert_cmpint(run(&d, SM_ARGS("migrate", "--config-dir", "/nonexistent", "--policy", policy)),
                    ==, 2);
    g_assert_nonnull(strstr(d.err, "\u201c[gate\u201d"));
    g_unlink(policy);
    g_rmdir(dir);
    /* A failed migration's last line carries the prefix too. */
    g_auto(Run) e = {0};
    g_assert_cmpint(
        run(&e, SM_ARGS("migrate", "--source", "/nonexistent/s", "--dest", "/nonexistent/d",
                        "--uri", "unix:/nonexistent/m", "--config-dir", "/nonexistent")),
        ==, 3);
    g_assert_true(g_str_has_prefix(e.err, "safe-migrate migrate: refused"));
}

/* A bad address is a usage error (2) in every subcommand, before anything is started. */
static void test_bad_address_is_usage(void)
{
    g_autofree char *sm = binary("sidecar", "safe-migrate");
    g_auto(Run) a = {0}, b = {0}, c = {0};
    g_assert_cmpint(run(&a, SM_ARGS("migrate", "--source", "tcp:nocolon", "--dest", "/run/d",
                                    "--uri", "unix:/run/m", "--config-dir", "/nonexistent")),
                    ==, 2);
    g_assert_nonnull(strstr(a.err, "source QMP address 'tcp:nocolon'"));
    /* The flag as typed, not the policy key (--source-qmp). */
    g_assert_cmpint(run(&b, SM_ARGS("migrate", "--source", "", "--config-dir", "/nonexistent")), ==,
                    2);
    g_assert_true(g_str_has_prefix(b.err, "safe-migrate migrate: --source: "));
    g_assert_cmpint(run(&c, SM_ARGS("migrate", "--source", "/run/x", "--dest", "unix:/run/x",
                                    "--uri", "unix:/run/m", "--config-dir", "/nonexistent")),
                    ==, 2);
    g_assert_nonnull(strstr(c.err, "same address"));
}

/* virsh's words and units; durations as systemd writes them, bounded. */
static void test_virsh_vocabulary(void)
{
    g_autofree char *sm = binary("sidecar", "safe-migrate");
    const char *base[] = {
        "--source", "/nonexistent/src.qmp", "--dest",       "/nonexistent/dst.qmp",
        "--uri",    "unix:/nonexistent/m",  "--config-dir", "/nonexistent"};
    const struct {
        const char *flags[4];
        int code;
        const char *err; /* substring of stderr */
    } cases[] = {
        /* Accepted: the run goes on to connect, which fails (3) naming side and address. */
        {{"--live", "--bandwidth", "100"}, 3, "source QMP /nonexistent/src.qmp: "},
        {{"--timeout", "30", "--auto-converge"}, 3, "is QEMU running"},
        {{"--parallel", "--parallel-connections", "4"}, 3, NULL},
        {{"--probe-timeout", "1.5s", "--verbose"}, 3, NULL},
        {{"--max-hold", "1min 30s", "--downtime-limit", "300"}, 3, NULL},
        {{"--max-bandwidth", "100M"}, 3, NULL},
        /* Refused (2) with the flag and the reason. */
        {{"--max-bandwidth", "100"}, 2, "--max-bandwidth: '100' needs a unit"},
        {{"--bandwidth", "1.5G"}, 2, "--bandwidth: '1.5G' is not a whole number of MiB/s"},
        {{"--timeout", "8d"}, 2, "--timeout: '8d' is more than the longest duration allowed, 7d"},
        {{"--max-hold", "99999999999999999999s"}, 2, "7d"},
        {{"--max-hold", "30"}, 2, "--max-hold: '30' is not a duration"},
        {{"--parallel-connections", "0"}, 2, "--parallel-connections: '0' is not a channel count"},
        {{"--bandwidth", "1", "--max-bandwidth", "1M"}, 2, "give one"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        GPtrArray *argv = g_ptr_array_new();
        g_ptr_array_add(argv, sm);
        g_ptr_array_add(argv, "migrate");
        for (guint j = 0; j < G_N_ELEMENTS(base); j++)
            g_ptr_array_add(argv, (char *)base[j]);
        for (guint j = 0; j < G_N_ELEMENTS(cases[i].flags) && cases[i].flags[j]; j++)
            g_ptr_array_add(argv, (char *)cases[i].flags[j]);
        g_ptr_array_add(argv, NULL);
        g_auto(Run) r = {0};
        g_assert_cmpint(run(&r, (const char *const *)argv->pdata), ==, cases[i].code);
        if (cases[i].err)
            g_assert_nonnull(strstr(r.err, cases[i].err));
        g_ptr_array_free(argv, TRUE);
    }
}

/* -q is --quiet wherever it exists (status had it as --qmp); status --timeout is a duration. */
static void test_status_flags(void)
{
    g_autofree char *sm = binary("sidecar", "safe-migrate");
    g_auto(Run) a = {0}, b = {0}, c = {0};
    g_assert_cmpint(run(&a, SM_ARGS("status", "-q", "/nonexistent/x.qmp")), ==, 2);
    g_assert_cmpint(run(&b, SM_ARGS("status", "--qmp", "/nonexistent/x.qmp", "--timeout", "500")),
                    ==, 2);
    g_assert_nonnull(strstr(b.err, "--timeout: '500' is not a duration"));
    g_assert_cmpint(run(&c, SM_ARGS("status", "--qmp", "/nonexistent/x.qmp", "--timeout", "1.5s")),
                    ==, 3);
}

/* JSON events: wall-clock time next to t_ms, slashes unescaped (as in every other output). */
static void test_json_events(void)
{
    g_autofree char *sm = binary("sidecar", "safe-migrate");
    g_auto(Run) r = {0};
    g_assert_cmpint(run(&r, SM_ARGS("migrate", "--source", "/nonexistent/src.qmp", "--dest",
                                    "/nonexistent/dst.qmp", "--uri", "unix:/nonexistent/m",
                                    "--config-dir", "/nonexistent", "--json")),
                    ==, 3);
    g_auto(GStrv) lines = g_strsplit(g_strstrip(r.out), "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), >=, 2);
    g_autoptr(GRegex) stamp =
        g_regex_new("\"time\":\"\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z\"", 0, 0, NULL);
    for (guint i = 0; lines[i]; i++) {
        g_assert_true(g_regex_match(stamp, lines[i], 0, NULL));
        g_assert_nonnull(strstr(lines[i], "\"t_ms\":"));
        g_assert_null(strstr(lines[i], "\\/"));
    }
    g_assert_nonnull(strstr(r.out, "/nonexistent/src.qmp"));
}

/* A monitor another client holds: QEMU accepts the connection but never greets. The error
 * names the side, the address and that likely cause (it was a bare "Timed out"). */
static void test_held_monitor(void)
{
    g_autofree char *dir = g_dir_make_tmp("smcli-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "held.qmp", NULL);
    g_autoptr(GSocket) sock =
        g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, NULL);
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
    g_assert_true(g_socket_bind(sock, addr, TRUE, NULL));
    g_assert_true(g_socket_listen(sock, NULL)); /* never accepted: no greeting */
    g_autofree char *sm = binary("sidecar", "safe-migrate");
    g_autofree char *dst = g_build_filename(dir, "dst.qmp", NULL);
    g_auto(Run) r = {0};
    g_assert_cmpint(run(&r, SM_ARGS("migrate", "--source", path, "--dest", dst, "--uri",
                                    "unix:/nonexistent/m", "--config-dir", "/nonexistent")),
                    ==, 3);
    g_autofree char *want = g_strdup_printf("source QMP %s: ", path);
    g_assert_nonnull(strstr(r.err, want));
    g_assert_nonnull(strstr(r.err, "holding this monitor"));
    g_socket_close(sock, NULL);
    g_unlink(path);
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cli/version", test_version);
    g_test_add_func("/cli/help-lists-exit-codes", test_help_lists_exit_codes);
    g_test_add_func("/cli/one-prefix", test_one_prefix);
    g_test_add_func("/cli/bad-address-is-usage", test_bad_address_is_usage);
    g_test_add_func("/cli/virsh-vocabulary", test_virsh_vocabulary);
    g_test_add_func("/cli/status-flags", test_status_flags);
    g_test_add_func("/cli/json-events", test_json_events);
    g_test_add_func("/cli/held-monitor", test_held_monitor);
    return g_test_run();
}
