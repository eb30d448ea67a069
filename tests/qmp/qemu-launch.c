/* SPDX-License-Identifier: GPL-2.0-or-later */
/* QEMU launcher for the libqmp integration tests (see qemu-launch.h). */
#include "qemu-launch.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

const QemuVariant qemu_variants[2] = {
    {"qemu72", "SM_QEMU72", NULL, "/usr/bin/qemu-system-x86_64", 7, 2},
    {"qemu10", "SM_QEMU10", "SM_QEMU10_DATADIR", NULL, 10, 0},
};

static char *variant_path(const char *env, const char *fallback, const char *suffix)
{
    const char *value = g_getenv(env);
    const char *root = g_getenv("SM_SOURCE_ROOT");

    if (value && *value)
        return g_strdup(value);
    if (fallback)
        return g_strdup(fallback);
    return g_build_filename(root ? root : ".", ".qemu10", suffix, NULL);
}

/* A test that aborts must not leave QEMU running: it would hold the test's stdout open and
 * stall the harness until its timeout. */
static void child_setup(gpointer data)
{
    (void)data;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* The socket file appears at bind(), slightly before listen(): probe until a connect works. */
static gboolean socket_accepts(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    gboolean ok;

    g_strlcpy(sun.sun_path, path, sizeof sun.sun_path);
    ok = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
    close(fd);
    return ok;
}

Qemu *qemu_start(const QemuVariant *variant)
{
    g_autofree char *binary =
        variant_path(variant->binary_env, variant->fallback, "usr/bin/qemu-system-x86_64");
    g_autofree char *qmp_arg = NULL;
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autoptr(GError) error = NULL;
    Qemu *qemu = g_new0(Qemu, 1);
    gint64 deadline;

    if (!g_file_test(binary, G_FILE_TEST_IS_EXECUTABLE)) {
        /* A failure, not a skip: these tests exist to run against this QEMU. */
        g_test_fail_printf("QEMU for %s not found at %s (set %s)", variant->label, binary,
                           variant->binary_env);
        g_free(qemu);
        return NULL;
    }
    qemu->dir = g_dir_make_tmp("qmp-qemu-XXXXXX", &error);
    g_assert_no_error(error);
    qemu->socket_path = g_build_filename(qemu->dir, "qmp.sock", NULL);
    qemu->address = g_strconcat("unix:", qemu->socket_path, NULL);
    qmp_arg = g_strdup_printf("unix:%s,server=on,wait=off", qemu->socket_path);

    g_ptr_array_add(argv, binary);
    if (variant->datadir_env) {
        g_ptr_array_add(argv, "-L");
        g_ptr_array_add(argv, variant_path(variant->datadir_env, NULL, "usr/share/qemu"));
    }
    for (const char *const *a =
             (const char *const[]){"-nodefaults", "-display", "none", "-machine", "pc", "-m", "16",
                                   "-name", "testvm", "-S", "-qmp", NULL};
         *a; a++)
        g_ptr_array_add(argv, (gpointer)*a);
    g_ptr_array_add(argv, qmp_arg);
    g_ptr_array_add(argv, NULL);

    g_spawn_async(NULL, (char **)argv->pdata, NULL,
                  G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL, child_setup, NULL,
                  &qemu->pid, &error);
    g_assert_no_error(error);
    if (variant->datadir_env)
        g_free(argv->pdata[2]);

    deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (!socket_accepts(qemu->socket_path)) {
        int status;

        if (waitpid(qemu->pid, &status, WNOHANG) == qemu->pid) {
            g_test_fail_printf("QEMU (%s) exited early with status %d", binary, status);
            qemu->pid = 0;
            qemu_stop(qemu);
            return NULL;
        }
        if (g_get_monotonic_time() > deadline) {
            g_test_fail_printf("QEMU (%s) did not open its QMP socket", binary);
            qemu_stop(qemu);
            return NULL;
        }
        g_usleep(10 * 1000);
    }
    return qemu;
}

void qemu_stop(Qemu *qemu)
{
    if (!qemu)
        return;
    if (qemu->pid > 0) {
        kill(qemu->pid, SIGKILL);
        waitpid(qemu->pid, NULL, 0);
        g_spawn_close_pid(qemu->pid);
    }
    unlink(qemu->socket_path);
    rmdir(qemu->dir);
    g_free(qemu->socket_path);
    g_free(qemu->address);
    g_free(qemu->dir);
    g_free(qemu);
}
