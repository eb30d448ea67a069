/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the policy loader: the shipped example files load, values parse exactly,
 * and every kind of mistake is reported with its file, line and key. */
#include "gate.h"

#include <glib/gstdio.h>
#include <string.h>

static void test_shipped_examples(void)
{
    g_autofree char *etc = g_build_filename(g_getenv("SM_SOURCE_ROOT"), "etc", NULL);
    SmPolicy p;
    sm_policy_init(&p);
    g_autoptr(GError) error = NULL;
    g_assert_true(sm_policy_load(&p, etc, "web1", &error));
    g_assert_no_error(error);
    g_assert_true(sm_policy_check_complete(&p, &error));
    g_assert_cmpstr(p.name, ==, "web1");
    g_assert_cmpstr(p.source_qmp, ==, "unix:/run/safe-migrate/web1.qmp");
    g_assert_cmpuint(p.max_attempts, ==, 5); /* the VM's file wins */
    g_assert_cmpint(p.max_hold_ms, ==, 30000);
    g_assert_cmpint(p.backoff_ms, ==, 200); /* from defaults.conf */
    g_assert_cmpint(p.max_backoff_ms, ==, 10000);
    g_assert_cmpint(p.on_unquiesceable, ==, SM_FALLBACK_USE_FIX_IF_BENIGN);
    g_assert_cmpint(p.downtime_limit_ms, ==, -1); /* commented out: QEMU's own */
    g_assert_false(p.multifd);
    g_assert_cmpint(p.on_client_disconnect, ==, SM_DISCONNECT_CONTINUE);
    sm_policy_clear(&p);
}

static void test_durations_and_bytes(void)
{
    gint64 v = 0;
    g_assert_true(sm_parse_duration("250ms", &v) && v == 250);
    g_assert_true(sm_parse_duration("2s", &v) && v == 2000);
    g_assert_true(sm_parse_duration("3m", &v) && v == 180000);
    g_assert_true(sm_parse_duration("0", &v) && v == 0);
    const char *bad[] = {"",    "10", "-1s",     "s",  "99999999999999999999ms", "+2s", "1min 30",
                         "1.s", "1x", "1 min x", "1.5"};
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++)
        g_assert_false(sm_parse_duration(bad[i], &v));
    sm_parse_bytes("0", &v);
    g_assert_true(sm_parse_bytes("100B", &v) && v == 100);
    g_assert_true(sm_parse_bytes("1024", &v) && v == 1024);
    g_assert_true(sm_parse_bytes("2M", &v) && v == 2 << 20);
    g_assert_true(sm_parse_bytes("1G", &v) && v == 1 << 30);
    g_assert_false(sm_parse_bytes("1T", &v));
    g_assert_false(sm_parse_bytes("-5", &v));
    SmFallback f;
    g_assert_true(sm_parse_fallback("use-fix", &f) && f == SM_FALLBACK_USE_FIX);
    g_assert_false(sm_parse_fallback("Use-Fix", &f));
}

typedef struct {
    const char *text;
    int code;
    const char *message; /* substring, after the file name */
} BadFile;

/* systemd.time(7) forms. */
static void test_systemd_durations(void)
{
    static const struct {
        const char *text;
        gint64 ms;
    } good[] = {{"1.5s", 1500},
                {"1min 30s", 90000},
                {"1min30s", 90000},
                {"1h", 3600000},
                {"2 hours", 7200000},
                {"1d", 86400000},
                {"7d", 604800000},
                {"1w", 604800000},
                {"500 msec", 500},
                {"1500us", 2},
                {" 3 sec ", 3000},
                {"0.25s", 250},
                {"1h 1min 1s 1ms", 3661001},
                {"1 minute", 60000},
                {"2m", 120000},
                /* Tiny but not zero is not "none" (0): it rounds up. */
                {"0.0001ms", 1},
                {"0s", 0},
                {"0.0 min", 0}};
    for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
        gint64 v = -1;
        g_autoptr(GError) error = NULL;
        g_test_message("%s", good[i].text);
        g_assert_true(sm_parse_duration_full(good[i].text, 0, &v, &error));
        g_assert_no_error(error);
        g_assert_cmpint(v, ==, good[i].ms);
    }
    /* Bare numbers only where the caller documents the unit, and only alone. */
    gint64 v = 0;
    g_autoptr(GError) error = NULL;
    g_assert_true(sm_parse_duration_full("300", 1, &v, NULL) && v == 300);
    g_assert_true(sm_parse_duration_full("30", 1000, &v, NULL) && v == 30000);
    g_assert_true(sm_parse_duration_full("2.5", 1000, &v, NULL) && v == 2500);
    g_assert_false(sm_parse_duration_full("30", 0, &v, &error));
    g_assert_nonnull(strstr(error->message, "needs a unit"));
    g_clear_error(&error);
    g_assert_false(sm_parse_duration_full("1min 30", 1000, &v, NULL));
    /* Huge values are refused with the limit named, never wrapped into "none" (0). */
    const char *huge[] = {
        "8d",         "169h",      "99999999999999999999s", "18446744073709551617ms", "604800001ms",
        "6d 24h 1ms", "1.0000001w"};
    for (guint i = 0; i < G_N_ELEMENTS(huge); i++) {
        g_test_message("%s", huge[i]);
        v = 12345;
        g_assert_false(sm_parse_duration_full(huge[i], 0, &v, &error));
        g_assert_nonnull(strstr(error->message, "7d"));
        g_assert_cmpint(v, ==, 12345);
        g_clear_error(&error);
    }
    g_assert_false(sm_parse_duration_full("9999999999999", 1000, &v, &error));
    g_assert_nonnull(strstr(error->message, "7d"));
}

/* Locale-suffixed keys, duplicates, oversized files, multifd's channel count. */
static void test_loader_edges(void)
{
    g_autofree char *dir = g_dir_make_tmp("smpolicy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "edge.conf", NULL);
    SmPolicy p;
    sm_policy_init(&p);
    g_autoptr(GError) error = NULL;

    /* GKeyFile would hide "max-hold[de]" behind "max-hold" and accept it. */
    g_assert_true(g_file_set_contents(path, "[gate]\nmax-hold=5s\nmax-hold[de]=5x\n", -1, NULL));
    g_assert_false(sm_policy_load_file(&p, path, &error));
    g_assert_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_UNKNOWN_KEY);
    g_assert_nonnull(strstr(error->message, ":3: max-hold[de]: locale"));
    g_clear_error(&error);

    /* The last of duplicate keys is the one in force, and the one an error points at. */
    g_assert_true(
        g_file_set_contents(path, "[gate]\nbackoff=1s\nmax-hold=2s\nbackoff=soon\n", -1, NULL));
    g_assert_false(sm_policy_load_file(&p, path, &error));
    g_assert_nonnull(strstr(error->message, ":4: [gate] backoff"));
    g_clear_error(&error);
    g_assert_true(g_file_set_contents(path, "[gate]\nbackoff=soon\nbackoff=3s\n", -1, NULL));
    g_assert_true(sm_policy_load_file(&p, path, &error));
    g_assert_cmpint(p.backoff_ms, ==, 3000);

    /* multifd: a boolean or a channel count. */
    g_assert_true(g_file_set_contents(path, "[migration]\nmultifd=4\n", -1, NULL));
    g_assert_true(sm_policy_load_file(&p, path, &error));
    g_assert_true(p.multifd);
    g_assert_cmpuint(p.multifd_channels, ==, 4);
    g_assert_true(sm_policy_apply(&p, "multifd", "false", &error));
    g_assert_false(p.multifd);
    g_assert_true(sm_policy_apply(&p, "multifd", "1", &error));
    g_assert_true(p.multifd);
    g_assert_cmpuint(p.multifd_channels, ==, 1);
    g_assert_false(sm_policy_apply(&p, "multifd", "256", &error));
    g_assert_nonnull(strstr(error->message, "channel count"));
    g_clear_error(&error);

    /* A file far bigger than any policy is refused before it is parsed. */
    GString *big = g_string_new("[gate]\n");
    while (big->len < 100 * 1024)
        g_string_append(big, "# padding padding padding padding padding padding padding\n");
    g_assert_true(g_file_set_contents(path, big->str, (gssize)big->len, NULL));
    g_string_free(big, TRUE);
    g_assert_false(sm_policy_load_file(&p, path, &error));
    g_assert_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_FILE);
    g_assert_nonnull(strstr(error->message, "KiB"));
    g_clear_error(&error);
    sm_policy_clear(&p);
    g_unlink(path);
    g_rmdir(dir);
}

static void test_mistakes_are_located(void)
{
    static const BadFile cases[] = {
        {"[gate]\nmax-attempts=0\n", SM_POLICY_ERROR_VALUE, ":2: [gate] max-attempts"},
        {"[gate]\n\n# comment\nbackoff = soon\n", SM_POLICY_ERROR_VALUE, ":4: [gate] backoff"},
        {"[migration]\nmultifd=maybe\n", SM_POLICY_ERROR_VALUE, ":2: [migration] multifd"},
        {"[migration]\nmax-bandwidth=lots\n", SM_POLICY_ERROR_VALUE,
         ":2: [migration] max-bandwidth"},
        {"[vm]\nuri=\n", SM_POLICY_ERROR_VALUE, ":2: [vm] uri: empty value"},
        {"[gate]\non-client-disconnect=pause\n", SM_POLICY_ERROR_VALUE,
         ":2: [gate] on-client-disconnect"},
        {"[vm]\nsource=unix:/x\n", SM_POLICY_ERROR_UNKNOWN_KEY, ":2: [vm] source: unknown key"},
        {"[gate]\nmax-hold=1s\n[extra]\nx=1\n", SM_POLICY_ERROR_UNKNOWN_KEY,
         ":3: unknown group [extra]"},
        {"max-hold=1s\n", SM_POLICY_ERROR_SYNTAX, ":1: "},
        {"[gate]\nbackoff=1s\n[gate\n", SM_POLICY_ERROR_SYNTAX, ":3: "},
    };
    g_autofree char *dir = g_dir_make_tmp("smpolicy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "bad.conf", NULL);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_assert_true(g_file_set_contents(path, cases[i].text, -1, NULL));
        SmPolicy p;
        sm_policy_init(&p);
        g_autoptr(GError) error = NULL;
        g_assert_false(sm_policy_load_file(&p, path, &error));
        g_assert_error(error, SM_POLICY_ERROR, cases[i].code);
        g_test_message("case %u: %s", i, error->message);
        g_assert_true(g_str_has_prefix(error->message, path));
        g_assert_nonnull(strstr(error->message + strlen(path), cases[i].message));
        sm_policy_clear(&p);
    }
    g_unlink(path);
    g_rmdir(dir);
}

/* A probe without a time limit would let a capture that never answers keep the guest
 * stopped at pre-switchover for good: 0 is refused, with the key named. */
static void test_probe_timeout_zero(void)
{
    SmPolicy p;
    sm_policy_init(&p);
    g_autoptr(GError) error = NULL;
    g_assert_false(sm_policy_apply(&p, "probe-timeout", "0", &error));
    g_assert_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE);
    g_assert_nonnull(strstr(error->message, "--probe-timeout"));
    g_clear_error(&error);
    g_assert_false(sm_policy_apply(&p, "probe-timeout", "0ms", &error));
    g_clear_error(&error);
    g_assert_true(sm_policy_apply(&p, "probe-timeout", "1ms", &error));
    g_assert_cmpint(p.probe_timeout_ms, ==, 1);
    sm_policy_clear(&p);
}

/* The wait between attempts: doubling from backoff, never above max-backoff, jittered within
 * the upper half; a cap below backoff means backoff; near the budget's end, cut short. The
 * defect it pins: the doubling ran to 1024 x backoff, so a 300 s budget allowed 12 attempts
 * of a guest whose device is busy at most switchovers. */
static void test_hold_wait(void)
{
    SmPolicy p;
    sm_policy_init(&p);
    g_autoptr(GError) error = NULL;
    g_assert_true(sm_policy_apply(&p, "backoff", "100ms", &error));
    g_assert_true(sm_policy_apply(&p, "max-backoff", "2s", &error));
    g_assert_true(sm_policy_apply(&p, "max-hold", "300s", &error));
    g_assert_no_error(error);
    gint64 total = 0;
    for (guint holds = 1; holds <= 40; holds++) {
        gint64 full = MIN((gint64)100 << MIN(holds - 1, 20u), (gint64)2000);
        gint64 wait = sm_policy_hold_wait(&p, holds, total);
        g_assert_cmpint(wait, >=, full - full / 2);
        g_assert_cmpint(wait, <=, full);
        total += wait;
    }
    /* 40 holds fit in the 300 s budget, with room for the attempts themselves. */
    g_assert_cmpint(total, <, 80000);
    /* Jitter: the waits at the cap are not all alike. */
    gint64 first = sm_policy_hold_wait(&p, 30, 0);
    gboolean differ = FALSE;
    for (guint i = 0; i < 50 && !differ; i++)
        differ = sm_policy_hold_wait(&p, 30, 0) != first;
    g_assert_true(differ);
    /* The budget's end: no wait beyond what is left of it plus one backoff. */
    g_assert_cmpint(sm_policy_hold_wait(&p, 30, 299950), <=, 150);
    g_assert_cmpint(sm_policy_hold_wait(&p, 30, 400000), <=, 100);
    /* A cap below the first wait: every wait is the first one's. */
    g_assert_true(sm_policy_apply(&p, "max-backoff", "10ms", &error));
    for (guint holds = 1; holds <= 5; holds++)
        g_assert_cmpint(sm_policy_hold_wait(&p, holds, 0), >=, 50);
    /* A huge backoff does not overflow. */
    g_assert_true(sm_policy_apply(&p, "backoff", "7d", &error));
    g_assert_true(sm_policy_apply(&p, "max-backoff", "7d", &error));
    g_assert_true(sm_policy_apply(&p, "max-hold", "7d", &error));
    g_assert_no_error(error);
    g_assert_cmpint(sm_policy_hold_wait(&p, 1000, 0), >=, (gint64)7 * 86400000 / 2);
    g_assert_false(sm_policy_apply(&p, "max-backoff", "soon", &error));
    g_assert_nonnull(strstr(error->message, "max-backoff"));
    sm_policy_clear(&p);
}

static void test_missing_required(void)
{
    g_autofree char *dir = g_dir_make_tmp("smpolicy-XXXXXX", NULL);
    g_autofree char *vms = g_build_filename(dir, "vms.d", NULL);
    g_mkdir(vms, 0700);
    g_autofree char *path = g_build_filename(vms, "db.conf", NULL);
    g_assert_true(g_file_set_contents(path, "[vm]\nsource-qmp=/run/x\nuri=unix:/y\n", -1, NULL));
    SmPolicy p;
    sm_policy_init(&p);
    g_autoptr(GError) error = NULL;
    g_assert_true(sm_policy_load(&p, dir, "db", &error));
    g_assert_false(sm_policy_check_complete(&p, &error));
    g_assert_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_MISSING);
    g_assert_nonnull(strstr(error->message, "db.conf: [vm] dest-qmp: missing"));
    /* The hint names the flag the CLI has, --dest, not the key. */
    g_assert_nonnull(strstr(error->message, "give --dest)"));
    g_clear_error(&error);
    /* Source and destination on one monitor: refused up front, not a connect timeout. */
    g_assert_true(sm_policy_apply(&p, "dest-qmp", "/run/x", &error));
    g_assert_false(sm_policy_check_complete(&p, &error));
    g_assert_nonnull(strstr(error->message, "same address"));
    g_clear_error(&error);
    g_assert_true(sm_policy_apply(&p, "dest-qmp", "tcp:nocolon", &error));
    g_assert_false(sm_policy_check_complete(&p, &error));
    g_assert_nonnull(strstr(error->message, "destination QMP address 'tcp:nocolon'"));
    g_clear_error(&error);
    /* Errors name the flag as typed. */
    g_assert_false(sm_policy_apply_flag(&p, "source-qmp", "--source", "", &error));
    g_assert_true(g_str_has_prefix(error->message, "--source: "));
    g_clear_error(&error);
    /* A flag fills the gap, and a bad flag names itself. */
    g_assert_true(sm_policy_apply(&p, "dest-qmp", "unix:/z", &error));
    g_assert_true(sm_policy_check_complete(&p, &error));
    g_assert_false(sm_policy_apply(&p, "backoff", "fast", &error));
    g_assert_nonnull(strstr(error->message, "--backoff: 'fast' is not a duration"));
    g_clear_error(&error);
    /* A VM name cannot reach outside vms.d. */
    g_assert_false(sm_policy_load(&p, dir, "../etc/passwd", &error));
    g_assert_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE);
    g_clear_error(&error);
    g_assert_false(sm_policy_load(&p, dir, "nosuchvm", &error));
    g_assert_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_FILE);
    sm_policy_clear(&p);
    g_unlink(path);
    g_rmdir(vms);
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/policy/shipped-examples", test_shipped_examples);
    g_test_add_func("/policy/durations-and-bytes", test_durations_and_bytes);
    g_test_add_func("/policy/mistakes-are-located", test_mistakes_are_located);
    g_test_add_func("/policy/systemd-durations", test_systemd_durations);
    g_test_add_func("/policy/loader-edges", test_loader_edges);
    g_test_add_func("/policy/missing-required", test_missing_required);
    g_test_add_func("/policy/probe-timeout-zero", test_probe_timeout_zero);
    g_test_add_func("/policy/hold-wait", test_hold_wait);
    return g_test_run();
}
