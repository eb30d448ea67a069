/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The qmp-call CLI run as a subprocess against a real QEMU 7.2: output and exit codes
 * (0 ok, 1 QMP error, 2 usage, 3 cannot connect), and --fd passing. */
#include "fake-server.h"
#include "qemu-launch.h"

#include <gio/gio.h>
#include <json-c/json.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct {
    int status;
    char *out;
    char *err;
} Run;

static char *qmp_call_path(void)
{
    const char *build = g_getenv("SM_BUILD_ROOT");

    g_assert_nonnull(build);
    return g_build_filename(build, "qmp", "qmp-call", NULL);
}

/* Runs qmp-call with the NULL-terminated arguments; inherit_fd (>= 0) becomes fd 5. */
static Run run_qmp_call(int inherit_fd, const char *first, ...)
{
    g_autoptr(GSubprocessLauncher) launcher =
        g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE);
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GSubprocess) proc = NULL;
    g_autoptr(GError) error = NULL;
    Run run = {0};
    va_list ap;

    g_ptr_array_add(argv, qmp_call_path());
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, g_strdup(a));
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    if (inherit_fd >= 0)
        g_subprocess_launcher_take_fd(launcher, dup(inherit_fd), 5);

    proc = g_subprocess_launcher_spawnv(launcher, (const char *const *)argv->pdata, &error);
    g_assert_no_error(error);
    g_subprocess_communicate_utf8(proc, NULL, NULL, &run.out, &run.err, &error);
    g_assert_no_error(error);
    g_assert_true(g_subprocess_get_if_exited(proc));
    run.status = g_subprocess_get_exit_status(proc);
    g_test_message("exit %d, stdout: %s, stderr: %s", run.status, run.out, run.err);
    return run;
}

static void run_clear(Run *run)
{
    g_free(run->out);
    g_free(run->err);
}

static void test_query_status(void)
{
    g_autoptr(Qemu) qemu = qemu_start(&qemu_variants[0]);
    json_object *reply, *status;
    Run run;

    if (!qemu)
        return;
    run = run_qmp_call(-1, qemu->address, "query-status", NULL);
    g_assert_cmpint(run.status, ==, 0);
    reply = json_tokener_parse(run.out);
    g_assert_nonnull(reply);
    g_assert_true(json_object_object_get_ex(reply, "status", &status));
    g_assert_cmpstr(json_object_get_string(status), ==, "prelaunch");
    g_assert_nonnull(strchr(run.out, '\n')); /* pretty-printed */
    json_object_put(reply);
    run_clear(&run);

    /* Bare path, JSON arguments. */
    run = run_qmp_call(-1, qemu->socket_path, "qom-get",
                       "{\"path\": \"/machine\", \"property\": \"type\"}", NULL);
    g_assert_cmpint(run.status, ==, 0);
    g_assert_nonnull(strstr(run.out, "pc-i440fx"));
    run_clear(&run);

    /* --wait-event: the command's events are not lost. */
    run = run_qmp_call(-1, "--wait-event", "RESUME", "--timeout", "5000", qemu->address, "cont",
                       NULL);
    g_assert_cmpint(run.status, ==, 0);
    g_assert_nonnull(strstr(run.out, "\"RESUME\""));
    run_clear(&run);
}

static void test_qmp_error(void)
{
    g_autoptr(Qemu) qemu = qemu_start(&qemu_variants[0]);
    Run run;

    if (!qemu)
        return;
    run = run_qmp_call(-1, qemu->address, "no-such-command", NULL);
    g_assert_cmpint(run.status, ==, 1);
    g_assert_cmpstr(run.out, ==, "");
    g_assert_nonnull(strstr(run.err, "CommandNotFound"));
    run_clear(&run);
}

static void test_fd(void)
{
    g_autoptr(Qemu) qemu = qemu_start(&qemu_variants[0]);
    int p[2];
    Run run;

    if (!qemu)
        return;
    g_assert_cmpint(pipe(p), ==, 0);
    run = run_qmp_call(p[1], "--fd", "5", qemu->address, "add-fd", "{\"fdset-id\": 9}", NULL);
    g_assert_cmpint(run.status, ==, 0);
    g_assert_nonnull(strstr(run.out, "\"fdset-id\": 9"));
    run_clear(&run);

    /* Without --fd QEMU gets nothing and says so. */
    run = run_qmp_call(p[1], qemu->address, "add-fd", "{\"fdset-id\": 9}", NULL);
    g_assert_cmpint(run.status, ==, 1);
    g_assert_nonnull(strstr(run.err, "SCM_RIGHTS"));
    run_clear(&run);

    /* An fd that is not open is a failure of the command, not a crash. */
    run = run_qmp_call(-1, "--fd", "77", qemu->address, "add-fd", NULL);
    g_assert_cmpint(run.status, ==, 1);
    run_clear(&run);
    close(p[0]);
    close(p[1]);
}

static void test_dead_socket(void)
{
    g_autofree char *dir = g_dir_make_tmp("qmp-call-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "dead.sock", NULL);
    g_autofree char *missing = g_build_filename(dir, "missing.sock", NULL);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    Run run;

    /* A socket file nobody listens on, like the one a killed QEMU leaves behind. */
    g_strlcpy(sun.sun_path, path, sizeof sun.sun_path);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sun, sizeof sun), ==, 0);
    close(fd);

    run = run_qmp_call(-1, path, "query-status", NULL);
    g_assert_cmpint(run.status, ==, 3);
    g_assert_cmpstr(run.out, ==, "");
    run_clear(&run);
    run = run_qmp_call(-1, missing, "query-status", NULL);
    g_assert_cmpint(run.status, ==, 3);
    run_clear(&run);
    unlink(path);
    rmdir(dir);
}

static void test_usage(void)
{
    Run run = run_qmp_call(-1, NULL, NULL);

    g_assert_cmpint(run.status, ==, 2);
    g_assert_nonnull(strstr(run.err, "ADDRESS COMMAND"));
    run_clear(&run);

    run = run_qmp_call(-1, "/tmp/x.sock", NULL);
    g_assert_cmpint(run.status, ==, 2);
    run_clear(&run);

    run = run_qmp_call(-1, "/tmp/x.sock", "cmd", "{not json", NULL);
    g_assert_cmpint(run.status, ==, 2);
    run_clear(&run);

    run = run_qmp_call(-1, "/tmp/x.sock", "cmd", "[1]", NULL);
    g_assert_cmpint(run.status, ==, 2);
    run_clear(&run);

    run = run_qmp_call(-1, "--fd", "x", "/tmp/x.sock", "cmd", NULL);
    g_assert_cmpint(run.status, ==, 2);
    run_clear(&run);

    run = run_qmp_call(-1, "--bogus", "/tmp/x.sock", "cmd", NULL);
    g_assert_cmpint(run.status, ==, 2);
    run_clear(&run);

    run = run_qmp_call(-1, "vsock:3:4", "cmd", NULL);
    g_assert_cmpint(run.status, ==, 2);
    run_clear(&run);
}

/* A peer answering {"return": null}: a clean QMP error (exit 1), not a crash on the
 * missing GError. */
static void script_null(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_reply(fs, fs_expect(fs, "query-status"), "null");
    fs_expect_eof(fs);
}

static void test_null_reply(void)
{
    FakeServer *fs = fake_server_new(FALSE, script_null, NULL);
    Run run = run_qmp_call(-1, fake_server_address(fs), "query-status", NULL);

    g_assert_cmpint(run.status, ==, 1);
    g_assert_nonnull(strstr(run.err, "null"));
    run_clear(&run);
    fake_server_free(fs);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp-call/query-status", test_query_status);
    g_test_add_func("/qmp-call/qmp-error", test_qmp_error);
    g_test_add_func("/qmp-call/fd", test_fd);
    g_test_add_func("/qmp-call/dead-socket", test_dead_socket);
    g_test_add_func("/qmp-call/usage", test_usage);
    g_test_add_func("/qmp-call/null-reply", test_null_reply);
    return g_test_run();
}
