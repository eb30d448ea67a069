/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The real Linux guest of tests/linux in a libvirt domain, gated by the hook: its own USB
 * storage driver reading the CD-ROM (checksummed reads, an SG_IO loop, media polling), migrated
 * back and forth between the rig's hosts with plain `virsh migrate`. A held attempt fails
 * with the gate's message and is retried after a pause, as Nova or KubeVirt would; the guest
 * must never see a wrong byte or reboot, and must keep working on whichever side runs it.
 * SM_LV_LINUX_MIGRATIONS=N sets the number of migrations (default 4). */
#include "lv.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* What the guest's console said so far (tests/linux/guest/init: READY once, then
 * "HB n read=ok/bad sg=ok/bad" every second; MISMATCH, KERR, FATAL lines are problems). */
typedef struct {
    const char *path;
    guint lines_shown; /* complete lines already passed through g_test_message */
    guint ready, hb, mismatches, kerrs, fatals;
    guint64 read_ok, read_bad, sg_ok, sg_bad; /* from the latest heartbeat */
} Console;

static void console_read(Console *c)
{
    g_autofree char *text = NULL;
    /* Counted afresh from the whole file each time (it is small). */
    *c = (Console){.path = c->path, .lines_shown = c->lines_shown};
    if (!g_file_get_contents(c->path, &text, NULL, NULL))
        return;
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    guint n_lines = g_strv_length(lines);       /* 0 for an empty file */
    guint complete = n_lines ? n_lines - 1 : 0; /* the last one may still be growing */
    for (guint i = 0; i < complete; i++) {
        const char *tags[] = {"HB ", "READY", "MISMATCH", "KERR ", "FATAL"};
        const char *at = NULL;
        for (guint t = 0; t < G_N_ELEMENTS(tags) && !at; t++) {
            const char *hit = strstr(lines[i], tags[t]);
            if (hit && (hit == lines[i] || hit[-1] == ' ' || hit[-1] == '\r'))
                at = hit;
        }
        unsigned long long r, rb, s, sb;
        guint n;
        if (!at)
            continue;
        if (sscanf(at, "HB %u read=%llu/%llu sg=%llu/%llu", &n, &r, &rb, &s, &sb) == 5) {
            c->hb++;
            c->read_ok = r;
            c->read_bad = rb;
            c->sg_ok = s;
            c->sg_bad = sb;
            continue;
        }
        if (i >= c->lines_shown)
            g_test_message("guest: %s", at);
        c->ready += g_str_has_prefix(at, "READY");
        c->mismatches += g_str_has_prefix(at, "MISMATCH");
        c->kerrs += g_str_has_prefix(at, "KERR");
        c->fatals += g_str_has_prefix(at, "FATAL");
    }
    c->lines_shown = complete;
}

/* Waits for `beats` more heartbeats in which both workloads made progress. */
static gboolean console_progress(Console *c, guint beats, guint timeout_ms)
{
    console_read(c);
    guint hb0 = c->hb;
    guint64 read0 = c->read_ok, sg0 = c->sg_ok;
    for (guint waited = 0; waited < timeout_ms; waited += 200) {
        g_usleep(200000);
        console_read(c);
        if (c->hb >= hb0 + beats && c->read_ok > read0 && c->sg_ok > sg0)
            return TRUE;
    }
    return FALSE;
}

static char *guest_file(const char *name)
{
    return g_build_filename(g_getenv("SM_SOURCE_ROOT"), ".guest", name, NULL);
}

/* An ISO with one file of pseudo-random bytes, and the file's MD5 (the guest checks reads). */
static char *make_iso(char **md5)
{
    g_autofree char *root = g_build_filename(rig_tmpdir(), "lv-linux-iso", NULL);
    g_autofree char *data_path = g_build_filename(root, "DATA.BIN", NULL);
    g_mkdir_with_parents(root, 0700);
    gsize len = 512 * 1024;
    g_autofree guint8 *data = g_malloc(len);
    g_autoptr(GRand) rand = g_rand_new_with_seed(20261126);
    for (gsize i = 0; i < len; i++)
        data[i] = (guint8)g_rand_int(rand);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(data_path, (const char *)data, (gssize)len, &error));
    char *iso = g_build_filename(rig_tmpdir(), "lv-linux.iso", NULL);
    const char *argv[] = {"genisoimage", "-quiet", "-R", "-J", "-o", iso, root, NULL};
    int status = 0;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                               NULL, &status, &error));
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    *md5 = g_compute_checksum_for_data(G_CHECKSUM_MD5, data, len);
    return iso;
}

/* Migrates from `from`, retrying held attempts (a pause between them) up to 30 times;
 * returns the number of held attempts. */
static guint migrate_until_done(LvHost from, const char *name)
{
    for (guint held = 0; held < 30; held++) {
        g_autofree char *err = NULL;
        int rc = lv_migrate(from, name, NULL, &err);
        if (rc == 0)
            return held;
        g_test_message("held attempt from %s: %s", lv_host_name(from), err);
        g_assert_nonnull(strstr(err, "safe-migrate"));
        g_assert_nonnull(strstr(err, "held"));
        g_assert_true(lv_domain_running(from, name));
        g_usleep(300000);
    }
    g_error("30 held attempts in a row");
}

static void test_linux(void)
{
    g_autofree char *why = NULL;
    if (!lv_rig_dir(&why) || !g_getenv("SM_LV_HOOKS")) {
        g_test_skip(why ? why : "no safe-migrate hook in the rig (SM_LV_HOOKS unset)");
        return;
    }
    g_autofree char *kernel = guest_file("vmlinuz"), *initrd = guest_file("initrd.gz");
    if (!g_file_test(kernel, G_FILE_TEST_EXISTS)) {
        g_test_skip("no Linux guest in .guest (tests/linux/setup-guest.sh)");
        return;
    }
    const char *n_env = g_getenv("SM_LV_LINUX_MIGRATIONS");
    guint migrations = n_env ? (guint)g_ascii_strtoull(n_env, NULL, 10) : 4;
    g_autofree char *md5 = NULL;
    g_autofree char *iso = make_iso(&md5);
    g_autofree char *cmdline =
        g_strdup_printf("console=ttyS0 quiet panic=-1 sm_md5=%s sm_poll=20", md5);
    g_autofree char *console = g_build_filename(rig_tmpdir(), "lv-linux-console.txt", NULL);
    g_autofree char *name = g_strdup_printf("linux%u", (guint)getpid());
    /* TCG (libvirt's type='qemu') unless SM_LINUX_ACCEL=kvm: /dev/kvm can be there and not
     * run a guest (nested, this machine: no console output in 15 s even with -cpu host). */
    const char *type = g_strcmp0(g_getenv("SM_LINUX_ACCEL"), "kvm") == 0 ? "kvm" : "qemu";
    LvDomainConfig config = {.name = name,
                             .form = LV_FORM_LINUX,
                             .qemu = RIG_QEMU_72,
                             .iso = iso,
                             .type = type,
                             .memory_mb = 256,
                             .kernel = kernel,
                             .initrd = initrd,
                             .cmdline = cmdline,
                             .console = console};
    lv_domain_create(LV_A, &config);
    g_assert_cmpint(lv_wait_filter(LV_A, name, 0, 5000), >, 0);
    Console con = {.path = console};
    gint64 t0 = g_get_monotonic_time();
    g_assert_true(console_progress(&con, 3, 240000));
    g_test_message("guest up in %.1f s (domain type %s)", (g_get_monotonic_time() - t0) / 1e6,
                   type);
    g_assert_cmpuint(con.ready, ==, 1);
    if (g_str_equal(type, "qemu")) {
        /* The <emulator> wrapper (lv.c) took the guest's RAM off a 256 KiB multiple, out of
         * reach of QEMU 7.2's TCG dirty-tracking bug: 256 MiB + 8 KiB. */
        g_autofree char *out = NULL;
        g_assert_cmpint(lv_virsh(LV_A, &out, NULL, "qemu-monitor-command", name,
                                 "{\"execute\":\"query-memory-size-summary\"}", NULL),
                        ==, 0);
        g_test_message("memory: %s", out);
        g_assert_nonnull(strstr(out, "268443648"));
    }

    LvHost on = LV_A;
    guint holds = 0;
    for (guint i = 0; i < migrations; i++) {
        holds += migrate_until_done(on, name);
        on = on == LV_A ? LV_B : LV_A;
        g_assert_true(lv_domain_running(on, name));
        g_assert_cmpint(lv_wait_filter(on, name, 0, 5000), >, 0);
        g_assert_true(console_progress(&con, 1, 30000));
    }
    /* Errors that surface late (a SCSI timeout takes 30 s in the guest) would show here. */
    g_assert_true(console_progress(&con, 3, 30000));
    g_test_message("%u migrations, %u held attempts, read ok %" G_GUINT64_FORMAT
                   ", SG_IO ok %" G_GUINT64_FORMAT ", kernel error lines %u",
                   migrations, holds, con.read_ok, con.sg_ok, con.kerrs);
    g_assert_cmpuint(con.mismatches, ==, 0);
    g_assert_cmpuint(con.read_bad, ==, 0);
    g_assert_cmpuint(con.sg_bad, ==, 0);
    g_assert_cmpuint(con.fatals, ==, 0);
    g_assert_cmpuint(con.ready, ==, 1); /* never rebooted */
    /* Nor did the filter see a reason to warn of that bug on either host. */
    for (LvHost h = LV_A; h <= LV_B; h++) {
        g_autofree char *log = lv_filter_log(h, name);
        g_assert_null(strstr(log, "without KVM (TCG)"));
    }
    if (con.kerrs) /* reported, as in tests/linux: a known gap, not pinned down yet */
        g_test_message("WARNING: %u kernel error line(s) under the gate", con.kerrs);
    lv_domain_destroy(on, name);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/libvirt/linux/gated-migrations", test_linux);
    return g_test_run();
}
