/* SPDX-License-Identifier: GPL-2.0-or-later */
/* `safe-migrate migrate DOMAIN DESTURI` (libvirt's C API) and `safe-migrate status -c URI
 * DOMAIN` between the rig's two libvirt hosts, the filter on both through the hook: a held
 * attempt is retried once the guest has fetched its result and the domain arrives intact; a
 * guest that never fetches ends in exit 4 with the domain running on the source and its data
 * intact; Ctrl-C during a migration leaves the domain on the source (exit 130). */
#include "lv.h"

#include <gio/gio.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static gboolean skip_without_rig(void)
{
    g_autofree char *why = NULL;
    if (lv_rig_dir(&why))
        return FALSE;
    g_test_skip(why);
    return TRUE;
}

static char *cli_path(void)
{
    return g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "safe-migrate", NULL);
}

/* safe-migrate migrate --json ... NAME URI_B from host A; stdout piped. */
static GSubprocess *start_migrate(const char *name, const char *const *extra)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, cli_path());
    const char *head[] = {"migrate", "--json", "--live", "-c"};
    for (guint i = 0; i < G_N_ELEMENTS(head); i++)
        g_ptr_array_add(argv, g_strdup(head[i]));
    g_ptr_array_add(argv, lv_uri(LV_A));
    for (guint i = 0; extra && extra[i]; i++)
        g_ptr_array_add(argv, g_strdup(extra[i]));
    const char *tail[] = {"--migrateuri",
                          "tcp://127.0.0.1",
                          "--listen-address",
                          "127.0.0.1",
                          "--config-dir",
                          "/nonexistent",
                          name};
    for (guint i = 0; i < G_N_ELEMENTS(tail); i++)
        g_ptr_array_add(argv, g_strdup(tail[i]));
    g_ptr_array_add(argv, lv_uri(LV_B));
    g_ptr_array_add(argv, NULL);
    g_autoptr(GError) error = NULL;
    GSubprocess *p =
        g_subprocess_newv((const char *const *)argv->pdata, G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error);
    g_assert_no_error(error);
    return p;
}

/* The next event line named `event` (NULL: any), or NULL at EOF; every line is logged. */
static json_object *next_event(GDataInputStream *in, const char *event)
{
    for (;;) {
        g_autofree char *line = g_data_input_stream_read_line(in, NULL, NULL, NULL);
        if (!line)
            return NULL;
        g_test_message("cli: %s", line);
        json_object *obj = json_tokener_parse(line);
        json_object *name;
        g_assert_nonnull(obj);
        if (!event || (json_object_object_get_ex(obj, "event", &name) &&
                       g_str_equal(json_object_get_string(name), event)))
            return obj;
        json_object_put(obj);
    }
}

static gint64 int_member(json_object *obj, const char *key)
{
    json_object *v;
    g_assert_true(json_object_object_get_ex(obj, key, &v));
    return json_object_get_int64(v);
}

static void finish_on_a(RigGuest *guest, const guint8 *reference, gsize len)
{
    g_autoptr(GError) error = NULL;
    guint8 buf[64], csw = 0xff;
    g_assert_cmpint(rig_guest_data_in(guest, 0, buf, len, &error), ==, (gssize)len);
    g_assert_no_error(error);
    g_assert_true(rig_guest_read_csw(guest, 0, &csw, NULL, &error));
    g_assert_cmpint(csw, ==, 0);
    g_assert_cmpmem(buf, len, reference, len);
}

typedef struct {
    char *name;
    RigGuest *guest;
    RigCommand cmd;
    guint8 reference[8];
} Pending;

static void pending_start(Pending *p, const char *prefix)
{
    static guint counter;
    g_autoptr(GError) error = NULL;
    p->name = g_strdup_printf("%s%u-%u", prefix, (guint)getpid(), ++counter);
    LvDomainConfig config = {.name = p->name, .form = LV_FORM_LIBVIRT, .qemu = RIG_QEMU_72};
    lv_domain_create(LV_A, &config);
    p->guest = lv_guest_new(LV_A, p->name);
    p->cmd = rig_cmd_read_capacity();
    lv_guest_settle(p->guest, p->cmd, p->reference, sizeof p->reference);
    g_assert_true(rig_guest_send_cbw(p->guest, 0, &p->cmd, NULL, &error));
    g_assert_no_error(error);
}

static void pending_clear(Pending *p)
{
    lv_domain_destroy(LV_A, p->name);
    lv_domain_destroy(LV_B, p->name);
    rig_guest_free(p->guest);
    g_free(p->name);
}

static void test_held_then_migrated(void)
{
    if (skip_without_rig())
        return;
    Pending p;
    pending_start(&p, "cli");
    const char *extra[] = {"--max-hold", "60s", "--backoff", "300ms", NULL};
    g_autoptr(GSubprocess) cli = start_migrate(p.name, extra);
    g_autoptr(GDataInputStream) in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(cli));
    g_autoptr(json_object) hold = next_event(in, "hold");
    g_assert_nonnull(hold);
    g_assert_true(lv_domain_running(LV_A, p.name));
    /* The guest finishes on the source while the CLI backs off; the retry migrates. */
    finish_on_a(p.guest, p.reference, sizeof p.reference);
    g_autoptr(json_object) res = next_event(in, "result");
    g_assert_nonnull(res);
    g_assert_true(g_subprocess_wait(cli, NULL, NULL));
    g_assert_cmpint(g_subprocess_get_exit_status(cli), ==, 0);
    g_assert_cmpint(int_member(res, "exit_code"), ==, 0);
    g_assert_cmpint(int_member(res, "holds"), >=, 1);
    g_assert_true(lv_domain_running(LV_B, p.name));
    g_assert_false(lv_domain_running(LV_A, p.name));
    g_autoptr(GError) error = NULL;
    g_autofree char *qtest_b = lv_qtest_path(LV_B, p.name);
    g_assert_true(rig_guest_attach_at(p.guest, qtest_b, p.name, &error));
    g_assert_no_error(error);
    guint8 buf[8];
    lv_guest_answer(p.guest, p.cmd, buf, sizeof buf);
    g_assert_cmpmem(buf, sizeof buf, p.reference, sizeof p.reference);

    /* status through B's filter: idle, and libvirt saw no pause. */
    g_autofree char *uri_b = lv_uri(LV_B);
    g_autofree char *why = NULL;
    g_autofree char *libdir = g_strdup_printf("%s/B/lib/qemu", lv_rig_dir(&why));
    g_autofree char *cli_bin = cli_path();
    const char *argv[] = {cli_bin, "status", "-c",   uri_b, "--libvirt-dir",
                          libdir,  "--json", p.name, NULL};
    g_autofree char *out = NULL;
    int status = -1;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, NULL,
                               &status, NULL));
    g_test_message("status: %s", out);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_assert_nonnull(strstr(out, "\"state\":\"idle\""));
    pending_clear(&p);
}

static void test_never_fetches(void)
{
    if (skip_without_rig())
        return;
    Pending p;
    pending_start(&p, "clx");
    const char *extra[] = {"--max-hold", "1s", "--backoff", "200ms", "--max-attempts", "3", NULL};
    g_autoptr(GSubprocess) cli = start_migrate(p.name, extra);
    g_autoptr(GDataInputStream) in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(cli));
    g_autoptr(json_object) res = next_event(in, "result");
    g_assert_nonnull(res);
    g_assert_true(g_subprocess_wait(cli, NULL, NULL));
    g_assert_cmpint(g_subprocess_get_exit_status(cli), ==, 4);
    g_assert_true(lv_domain_running(LV_A, p.name));
    g_assert_false(lv_domain_running(LV_B, p.name));
    finish_on_a(p.guest, p.reference, sizeof p.reference);
    pending_clear(&p);
}

/* Ctrl-C while held: the CLI stops retrying and the domain stays on the source. */
static void test_interrupted(void)
{
    if (skip_without_rig())
        return;
    Pending p;
    pending_start(&p, "cli");
    const char *extra[] = {"--max-hold", "60s", "--backoff", "5s", NULL};
    g_autoptr(GSubprocess) cli = start_migrate(p.name, extra);
    g_autoptr(GDataInputStream) in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(cli));
    g_autoptr(json_object) hold = next_event(in, "hold");
    g_assert_nonnull(hold);
    g_subprocess_send_signal(cli, SIGINT);
    g_autoptr(json_object) res = next_event(in, "result");
    g_assert_nonnull(res);
    g_assert_true(g_subprocess_wait(cli, NULL, NULL));
    g_assert_cmpint(g_subprocess_get_exit_status(cli), ==, 130);
    g_assert_true(lv_domain_running(LV_A, p.name));
    g_assert_false(lv_domain_running(LV_B, p.name));
    finish_on_a(p.guest, p.reference, sizeof p.reference);
    pending_clear(&p);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/libvirt/cli/held-then-migrated", test_held_then_migrated);
    g_test_add_func("/libvirt/cli/never-fetches", test_never_fetches);
    g_test_add_func("/libvirt/cli/interrupted-while-held", test_interrupted);
    return g_test_run();
}
