/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The libvirt hook and the relay without libvirt: the test plays libvirt (it runs the hook as
 * libvirt does, domain XML on stdin, and connects to monitor.sock) and QEMU (it listens on the
 * domain's monitor.sock first). Domains without USB storage and other operations are left
 * untouched; a USB domain gets the holder and filter, which relay bytes exactly and pass fds
 * (SCM_RIGHTS) both ways, by the holder alone when the filter cannot run; a malformed reply
 * to the gate's own command goes to the gate, never to libvirt, even with its id spelt with
 * escapes; libvirt's migrate is held for the gate however it is spelt, and a line that may
 * name it but is not one command is refused; a policy the filter cannot
 * apply leaves the socket in place, and require-gate=true refuses the start. */
#include <errno.h>
#include <gio/gio.h>
#include <poll.h>
#include <glib/gstdio.h>
#include <json-c/json.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const char usb_xml[] =
    "<domain type='qemu' id='7'><name>hooked</name><devices>"
    "<disk type='file' device='cdrom'><target dev='sda' bus='usb'/></disk>"
    "</devices></domain>";
static const char plain_xml[] =
    "<domain type='qemu' id='7'><name>hooked</name><devices>"
    "<disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>"
    "</devices></domain>";

typedef struct {
    char *root, *lib, *dir, *config, *logs;
    int qemu_listen; /* the test's "QEMU" */
} Host;

static int listen_at(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
    g_assert_cmpint(listen(fd, 4), ==, 0);
    return fd;
}

static int connect_to(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
    return fd;
}

static void host_init(Host *h)
{
    h->root = g_dir_make_tmp("sm-hook-XXXXXX", NULL);
    h->lib = g_build_filename(h->root, "qemu", NULL);
    h->dir = g_build_filename(h->lib, "domain-7-hooked", NULL);
    h->config = g_build_filename(h->root, "etc", NULL);
    h->logs = g_build_filename(h->root, "log", NULL);
    g_mkdir_with_parents(h->dir, 0750);
    g_mkdir_with_parents(h->config, 0755);
    g_mkdir_with_parents(h->logs, 0755);
    g_autofree char *monitor = g_build_filename(h->dir, "monitor.sock", NULL);
    h->qemu_listen = listen_at(monitor);
}

/* Removing the directory is what libvirt does at stop: the holder leaves within a second. */
static void host_clear(Host *h)
{
    close(h->qemu_listen);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", h->root);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(h->root), g_free(h->lib), g_free(h->dir), g_free(h->config), g_free(h->logs);
}

static const char *hook_path;

/* Runs the hook as libvirt does; returns its exit status, stderr in *err. */
static int run_hook(Host *h, const char *op, const char *subop, const char *xml, char **err)
{
    const char *hook = hook_path;
    const char *argv[] = {hook,    "--config-dir", h->config, "--libvirt-dir", h->lib, "--log-dir",
                          h->logs, "hooked",       op,        subop,           "-",    NULL};
    g_autoptr(GError) error = NULL;
    g_autoptr(GSubprocess) p = g_subprocess_newv(
        argv, G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
    g_assert_no_error(error);
    g_autoptr(GBytes) in = g_bytes_new_static(xml, strlen(xml));
    g_autoptr(GBytes) errb = NULL;
    g_assert_true(g_subprocess_communicate(p, in, NULL, NULL, &errb, &error));
    if (err)
        *err = errb && g_bytes_get_size(errb)
                   ? g_strndup(g_bytes_get_data(errb, NULL), g_bytes_get_size(errb))
                   : g_strdup("");
    return g_subprocess_get_exit_status(p);
}

static gboolean has(Host *h, const char *file)
{
    g_autofree char *path = g_build_filename(h->dir, file, NULL);
    return g_file_test(path, G_FILE_TEST_EXISTS);
}

static void test_untouched(void)
{
    Host h;
    host_init(&h);
    g_assert_cmpint(run_hook(&h, "start", "begin", plain_xml, NULL), ==, 0);
    g_assert_cmpint(run_hook(&h, "stopped", "end", usb_xml, NULL), ==, 0);
    g_assert_cmpint(run_hook(&h, "migrate", "begin", usb_xml, NULL), ==, 0);
    g_assert_false(has(&h, "safe-migrate-qemu.sock"));
    g_assert_false(has(&h, "safe-migrate.args"));
    host_clear(&h);
}

static void send_fd(int sock, const char *text, int fd)
{
    struct iovec iov = {.iov_base = (char *)text, .iov_len = strlen(text)};
    char control[CMSG_SPACE(sizeof(int))] = {0};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET, c->cmsg_type = SCM_RIGHTS, c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    g_assert_cmpint(sendmsg(sock, &msg, 0), ==, (ssize_t)strlen(text));
}

/* Reads until `len` bytes arrived; the fd that came with them (or -1) in *fd. */
static char *recv_exact(int sock, gsize len, int *fd)
{
    char *buf = g_malloc0(len + 1);
    gsize got = 0;
    *fd = -1;
    while (got < len) {
        struct iovec iov = {.iov_base = buf + got, .iov_len = len - got};
        char control[CMSG_SPACE(sizeof(int) * 4)];
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t n = recvmsg(sock, &msg, 0);
        g_assert_cmpint(n, >, 0);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        if (c && c->cmsg_type == SCM_RIGHTS)
            memcpy(fd, CMSG_DATA(c), sizeof(int));
        got += (gsize)n;
    }
    return buf;
}

static void relay_round(void)
{
    Host h;
    host_init(&h);
    g_autofree char *err = NULL;
    g_assert_cmpint(run_hook(&h, "start", "begin", usb_xml, &err), ==, 0);
    g_assert_cmpstr(err, ==, "");
    g_assert_true(has(&h, "safe-migrate-qemu.sock")); /* QEMU's socket, renamed aside */
    g_autofree char *monitor = g_build_filename(h.dir, "monitor.sock", NULL);
    int lv = connect_to(monitor); /* "libvirt" connects; the holder reaches "QEMU" */
    int qemu = accept(h.qemu_listen, NULL, NULL);
    g_assert_cmpint(qemu, >=, 0);
    const char *greeting = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                           "\"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n";
    send_fd(qemu, greeting, -1);
    int fd;
    g_autofree char *g = recv_exact(lv, strlen(greeting), &fd);
    g_assert_cmpstr(g, ==, greeting);
    /* libvirt's getfd: the fd travels with the command, byte-exact, odd spacing kept. */
    int pipefd[2];
    g_assert_cmpint(pipe(pipefd), ==, 0);
    const char *getfd = "{\"execute\":\"getfd\",  \"arguments\":{\"fdname\":\"migrate\"},"
                        "\"id\":\"libvirt-9\"}\r\n";
    send_fd(lv, getfd, pipefd[1]);
    g_autofree char *cmd = recv_exact(qemu, strlen(getfd), &fd);
    g_assert_cmpstr(cmd, ==, getfd);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, "x", 1), ==, 1); /* the very pipe */
    char c = 0;
    g_assert_cmpint(read(pipefd[0], &c, 1), ==, 1);
    g_assert_cmpint(c, ==, 'x');
    const char *reply = "{\"return\": {}, \"id\": \"libvirt-9\"}\r\n";
    send_fd(qemu, reply, -1);
    g_autofree char *r = recv_exact(lv, strlen(reply), &fd);
    g_assert_cmpstr(r, ==, reply);
    close(fd), close(pipefd[0]), close(pipefd[1]);
    /* QEMU goes away: libvirt sees its monitor close, as it would without us. */
    close(qemu);
    char byte;
    g_assert_cmpint(read(lv, &byte, 1), ==, 0);
    close(lv);
    host_clear(&h);
}

static void test_relay(void)
{
    relay_round();
}

/* The hooked domain with "libvirt" (*lv) connected and QEMU's greeting relayed to it; *qemu is
 * the test's QEMU end. */
static void hooked(Host *h, int *lv, int *qemu)
{
    g_assert_cmpint(run_hook(h, "start", "begin", usb_xml, NULL), ==, 0);
    g_autofree char *monitor = g_build_filename(h->dir, "monitor.sock", NULL);
    *lv = connect_to(monitor);
    *qemu = accept(h->qemu_listen, NULL, NULL);
    g_assert_cmpint(*qemu, >=, 0);
    const char *greeting = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                           "\"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n";
    send_fd(*qemu, greeting, -1);
    int fd;
    g_autofree char *g = recv_exact(*lv, strlen(greeting), &fd);
    g_assert_cmpstr(g, ==, greeting);
}

/* The gate's probe (asked for by `safe-migrate status` on the control socket) gets a reply of
 * the wrong shape for each of its commands ("error" not an object): the filter hands it to the
 * gate, whose status answer is an error, and libvirt never sees a byte of it. */
static void malformed_reply_to_gate(gboolean escape_id)
{
    Host h;
    host_init(&h);
    int lv, qemu;
    hooked(&h, &lv, &qemu);
    g_autofree char *ctl = g_build_filename(h.dir, "safe-migrate.ctl", NULL);
    int status = connect_to(ctl);
    g_assert_cmpint(write(status, "status\n", 7), ==, 7);
    g_autoptr(GString) from_qemu = g_string_new(NULL), answer = g_string_new(NULL);
    guint answered = 0;
    while (!strchr(answer->str, '\n')) {
        struct pollfd p[2] = {{.fd = qemu, .events = POLLIN}, {.fd = status, .events = POLLIN}};
        g_assert_cmpint(poll(p, 2, 30000), >, 0);
        char buf[4096];
        if (p[1].revents) {
            ssize_t n = read(status, buf, sizeof buf);
            g_assert_cmpint(n, >, 0);
            g_string_append_len(answer, buf, n);
        }
        if (!p[0].revents)
            continue;
        ssize_t n = read(qemu, buf, sizeof buf);
        g_assert_cmpint(n, >, 0);
        g_string_append_len(from_qemu, buf, n);
        char *nl;
        while ((nl = strchr(from_qemu->str, '\n'))) { /* each of the gate's commands */
            g_autofree char *line = g_strndup(from_qemu->str, nl - from_qemu->str);
            g_string_erase(from_qemu, 0, nl - from_qemu->str + 1);
            json_object *cmd = json_tokener_parse(line), *id;
            g_assert_true(json_object_object_get_ex(cmd, "id", &id));
            /* The id may come back spelt with escapes: still ours, still the gate's. */
            g_autofree char *id_text = g_strdup(json_object_to_json_string(id));
            if (escape_id) {
                g_auto(GStrv) parts = g_strsplit(id_text, "-", -1);
                g_free(id_text);
                id_text = g_strjoinv("\\u002d", parts);
            }
            g_autofree char *bad =
                g_strdup_printf("{\"error\": \"oops\", \"id\": %s}\r\n", id_text);
            json_object_put(cmd);
            send_fd(qemu, bad, -1);
            answered++;
        }
    }
    g_test_message("%u command(s) answered; status: %s", answered, answer->str);
    g_assert_cmpuint(answered, >, 0);
    g_assert_nonnull(strstr(answer->str, "\"error\""));
    /* Whatever the filter forwarded to libvirt, it did before answering the status client. */
    struct pollfd p = {.fd = lv, .events = POLLIN};
    g_assert_cmpint(poll(&p, 1, 0), ==, 0);
    close(status), close(qemu), close(lv);
    host_clear(&h);
}

static void test_malformed_reply_to_gate(gconstpointer escape_id)
{
    malformed_reply_to_gate(GPOINTER_TO_INT(escape_id));
}

/* Reads one line from `fd` (30 s at most: a liveness bound, not a timing). */
static char *read_line_from(int fd)
{
    g_autoptr(GString) line = g_string_new(NULL);
    while (!strchr(line->str, '\n')) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        g_assert_cmpint(poll(&p, 1, 30000), ==, 1);
        char c;
        g_assert_cmpint(read(fd, &c, 1), ==, 1);
        g_string_append_c(line, c);
    }
    return g_string_free(g_steal_pointer(&line), FALSE);
}

/* libvirt's migrate spelt with an escape is still held for the gate: what reaches QEMU first
 * is the gate's own command, not the migrate. */
static void test_escaped_migrate_held(void)
{
    Host h;
    host_init(&h);
    int lv, qemu;
    hooked(&h, &lv, &qemu);
    static const char migrate[] = "{\"execute\":\"migr\\u0061te\",\"arguments\":{\"uri\":"
                                  "\"tcp:127.0.0.1:1\"},\"id\":\"libvirt-5\"}\r\n";
    send_fd(lv, migrate, -1);
    g_autofree char *first = read_line_from(qemu);
    g_test_message("QEMU got: %s", first);
    g_assert_null(strstr(first, "libvirt-5"));
    g_assert_nonnull(strstr(first, "\"sm-filter-"));
    close(qemu), close(lv);
    host_clear(&h);
}

/* A line of libvirt's that may name migrate but is not one QMP command (a NUL before it, two
 * objects on the line): QEMU's parser could still run the migrate, so the filter answers it
 * with an error and QEMU never sees it. */
static void test_not_one_command_refused(void)
{
    static const char nul_first[] = "\0{\"execute\":\"migrate\",\"id\":\"libvirt-6\"}\r\n";
    static const char two[] = "{\"execute\":\"query-status\"}{\"execute\":\"migrate\"}\r\n";
    const struct {
        const char *data;
        gsize len;
    } lines[] = {{nul_first, sizeof nul_first - 1}, {two, sizeof two - 1}};
    Host h;
    host_init(&h);
    int lv, qemu;
    hooked(&h, &lv, &qemu);
    for (guint i = 0; i < G_N_ELEMENTS(lines); i++) {
        g_assert_cmpint(write(lv, lines[i].data, lines[i].len), ==, (ssize_t)lines[i].len);
        g_autofree char *reply = read_line_from(lv);
        g_test_message("libvirt got: %s", reply);
        g_assert_nonnull(strstr(reply, "\"error\""));
        g_assert_nonnull(strstr(reply, "safe-migrate"));
        /* The filter answered after deciding: anything it had sent QEMU would be there now. */
        struct pollfd p = {.fd = qemu, .events = POLLIN};
        g_assert_cmpint(poll(&p, 1, 0), ==, 0);
    }
    close(qemu), close(lv);
    host_clear(&h);
}

/* Discovery fails before libvirt's migrate (this QEMU answers query-status, refuses every
 * other command of the gate's, qom-list included): the gate cannot judge the devices at
 * switchover either, so the filter answers the migrate itself, with an error naming why, and
 * QEMU never sees it (fail closed; issue 15). Fails before: the migrate went to QEMU. */
static void test_discovery_fails_migrate_refused(void)
{
    Host h;
    host_init(&h);
    int lv, qemu;
    hooked(&h, &lv, &qemu);
    static const char migrate[] = "{\"execute\":\"migrate\",\"arguments\":{\"uri\":"
                                  "\"tcp:127.0.0.1:1\"},\"id\":\"libvirt-7\"}\r\n";
    send_fd(lv, migrate, -1);
    g_autofree char *reply = NULL;
    guint answered = 0;
    while (!reply) {
        struct pollfd p[2] = {{.fd = qemu, .events = POLLIN}, {.fd = lv, .events = POLLIN}};
        g_assert_cmpint(poll(p, 2, 30000), >, 0);
        if (p[1].revents) {
            reply = read_line_from(lv);
            break;
        }
        g_autofree char *line = read_line_from(qemu);
        g_assert_null(strstr(line, "libvirt-7")); /* the migrate never reaches QEMU */
        json_object *cmd = json_tokener_parse(line), *id, *exec;
        g_assert_true(json_object_object_get_ex(cmd, "id", &id));
        g_assert_true(json_object_object_get_ex(cmd, "execute", &exec));
        const char *ans = g_str_equal(json_object_get_string(exec), "query-status")
                              ? "{\"return\": {\"status\": \"running\", \"running\": true, "
                                "\"singlestep\": false}, \"id\": %s}\r\n"
                              : "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                                "\"refused by the test\"}, \"id\": %s}\r\n";
        g_autofree char *text = g_strdup_printf(ans, json_object_to_json_string(id));
        json_object_put(cmd);
        send_fd(qemu, text, -1);
        answered++;
    }
    g_test_message("%u command(s) of the gate answered; libvirt got: %s", answered, reply);
    g_assert_nonnull(strstr(reply, "\"libvirt-7\""));
    g_assert_nonnull(strstr(reply, "\"error\""));
    g_assert_nonnull(strstr(reply, "safe-migrate: migration refused: cannot read the domain's "
                                   "devices (qom-list"));
    g_assert_nonnull(strstr(reply, "nothing was started"));
    close(qemu), close(lv);
    host_clear(&h);
}

/* A filter that cannot run (here: one that exits at once, next to a copy of the hook and the
 * holder): the holder gives up on it and relays by itself, fds included; libvirt keeps its
 * monitor. */
static void test_filter_broken(void)
{
    g_autofree char *bin = g_dir_make_tmp("sm-hook-bin-XXXXXX", NULL);
    const char *names[] = {"safe-migrate-libvirt-hook", "safe-migrate-holder"};
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *from =
            g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "libvirt", names[i], NULL);
        g_autofree char *to = g_build_filename(bin, names[i], NULL);
        g_autofree char *cmd = g_strdup_printf("cp '%s' '%s'", from, to);
        g_assert_cmpint(system(cmd), ==, 0);
    }
    g_autofree char *filter = g_build_filename(bin, "safe-migrate-filter", NULL);
    g_assert_true(g_file_set_contents(filter, "#!/bin/sh\nexit 1\n", -1, NULL));
    g_assert_cmpint(g_chmod(filter, 0755), ==, 0);
    g_autofree char *hook = g_build_filename(bin, names[0], NULL);
    const char *saved = hook_path;
    hook_path = hook;
    relay_round();
    hook_path = saved;
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", bin);
    g_assert_cmpint(system(cmd), ==, 0);
}

static void test_refused(gconstpointer data)
{
    gboolean require = GPOINTER_TO_INT(data);
    Host h;
    host_init(&h);
    g_autofree char *conf = g_build_filename(h.config, "defaults.conf", NULL);
    g_autofree char *text = g_strdup_printf("[gate]\non-unquiesceable=use-fix\nrequire-gate=%s\n",
                                            require ? "true" : "false");
    g_assert_true(g_file_set_contents(conf, text, -1, NULL));
    g_autofree char *err = NULL;
    int rc = run_hook(&h, "start", "begin", usb_xml, &err);
    g_test_message("hook: %d %s", rc, err);
    g_assert_cmpint(rc, ==, require ? 1 : 0);
    g_assert_nonnull(
        strstr(err, "defaults.conf: [gate] on-unquiesceable=use-fix is not supported"));
    g_assert_nonnull(strstr(err, require ? "refusing" : "UNGATED"));
    g_assert_false(has(&h, "safe-migrate-qemu.sock")); /* QEMU's socket left where it was */
    g_autofree char *log = g_build_filename(h.logs, "hooked.log", NULL);
    g_autofree char *logged = NULL;
    g_assert_true(g_file_get_contents(log, &logged, NULL, NULL));
    g_assert_nonnull(strstr(logged, "safe-migrate: hooked:"));
    host_clear(&h);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autofree char *hook = g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "libvirt",
                                             "safe-migrate-libvirt-hook", NULL);
    hook_path = hook;
    g_test_add_func("/libvirt/hook/untouched", test_untouched);
    g_test_add_func("/libvirt/hook/relay-bytes-and-fds", test_relay);
    g_test_add_func("/libvirt/hook/filter-broken-holder-relays", test_filter_broken);
    g_test_add_data_func("/libvirt/hook/malformed-reply-to-gate", GINT_TO_POINTER(FALSE),
                         test_malformed_reply_to_gate);
    g_test_add_data_func("/libvirt/hook/malformed-reply-to-gate/escaped-id", GINT_TO_POINTER(TRUE),
                         test_malformed_reply_to_gate);
    g_test_add_func("/libvirt/hook/escaped-migrate-held", test_escaped_migrate_held);
    g_test_add_func("/libvirt/hook/not-one-command-refused", test_not_one_command_refused);
    g_test_add_func("/libvirt/hook/discovery-fails-migrate-refused",
                    test_discovery_fails_migrate_refused);
    g_test_add_data_func("/libvirt/hook/policy-refused/ungated", GINT_TO_POINTER(FALSE),
                         test_refused);
    g_test_add_data_func("/libvirt/hook/policy-refused/require-gate", GINT_TO_POINTER(TRUE),
                         test_refused);
    return g_test_run();
}
