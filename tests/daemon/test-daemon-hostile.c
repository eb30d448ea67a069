/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated under attack (issue 11): a member of the socket's group trying to steer the
 * root daemon, hostile and malformed requests, fd starvation through the metrics port and
 * the control socket, hostile policy files, a VM's QEMU answering ill-typed replies, a flood
 * of probes ahead of a migration, and a daemon killed while a VM was held at pre-switchover.
 * The real daemon binary, real sockets, real QEMU where QEMU is involved. */
#include "daemon-harness.h"
#include "fake-server.h"
#include "qmp-commands.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixsocketaddress.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MEMBER_UID 65534
#define MEMBER_GID 65534

/* ---- A member of the socket's group ---------------------------------------------------- */

/* Child side, async-signal-safe calls only: becomes uid MEMBER_UID whose only supplementary
 * group is `group` (the socket's; its primary group is another), connects `n` times and
 * hands every connection back over `back`. */
static int member_child(const char *path, gid_t group, int back, int n)
{
    if (setgroups(1, &group) != 0 || setresgid(MEMBER_GID, MEMBER_GID, MEMBER_GID) != 0 ||
        setresuid(MEMBER_UID, MEMBER_UID, MEMBER_UID) != 0)
        return 10;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            return 11;
        char byte = 'x';
        struct iovec iov = {&byte, 1};
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } u;
        memset(&u, 0, sizeof u);
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
        if (sendmsg(back, &msg, 0) != 1)
            return 12;
        close(fd);
    }
    return 0;
}

static int recv_fd(int from)
{
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    if (recvmsg(from, &msg, 0) != 1)
        return -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    int fd = -1;
    if (cm && cm->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

/* `n` connections made by a member process that has exited (and been reaped) before this
 * returns: the daemon can only learn who it was from what the kernel recorded at connect. */
static GArray *member_connect_n(Daemon *d, int n)
{
    int sp[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
        _exit(member_child(d->sock, getegid(), sp[1], n));
    close(sp[1]);
    GArray *fds = g_array_new(FALSE, FALSE, sizeof(int));
    for (int i = 0; i < n; i++) {
        int fd = recv_fd(sp[0]);
        g_assert_cmpint(fd, >=, 0);
        g_array_append_val(fds, fd);
    }
    close(sp[0]);
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    return fds;
}

static Client *member_client(Daemon *d)
{
    g_autoptr(GArray) fds = member_connect_n(d, 1);
    return client_new_from_fd(g_array_index(fds, int, 0));
}

static json_object *member_call(Daemon *d, const char *json)
{
    g_autoptr(Client) c = member_client(d);
    client_send(c, json);
    json_object *reply = client_next(c);
    g_assert_nonnull(reply);
    return reply;
}

/* The socket must be reachable by the member for the daemon's checks to be what decides. */
static void open_dirs(Daemon *d)
{
    g_assert_cmpint(chmod(d->dir, 0755), ==, 0);
    g_assert_cmpint(chmod(rig_tmpdir(), 0755), ==, 0);
}

static const char *error_code(json_object *reply)
{
    return str(member(reply, "error"), "code");
}

static const char *error_message(json_object *reply)
{
    return str(member(reply, "error"), "message");
}

/* ---- Item 1: the privilege model -------------------------------------------------------- */

static void write_unreachable_vm(Daemon *d, const char *name)
{
    g_autofree char *text = g_strdup_printf("[vm]\nsource-qmp=unix:%s/nowhere-src.sock\n"
                                            "dest-qmp=unix:%s/nowhere-dst.sock\n"
                                            "uri=unix:%s/nowhere-mig.sock\n"
                                            "[gate]\nmax-hold=10s\nmax-attempts=3\nbackoff=1s\n"
                                            "on-unquiesceable=use-fix-if-benign\n",
                                            d->dir, d->dir, d->dir);
    daemon_write_vm(d, name, text);
}

static void test_privilege(void)
{
    if (geteuid() != 0) {
        g_test_skip("needs root to switch to another uid");
        return;
    }
    g_autoptr(Daemon) d = daemon_new();
    open_dirs(d);
    write_unreachable_vm(d, "vm1");
    daemon_start(d, NULL);
    g_autofree char *marker = g_build_filename(d->dir, "pwned", NULL);
    g_autofree char *exec_req = g_strdup_printf(
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"uri\":\"exec:id > %s\"}}", marker);
    /* Every key a member may not set, with existing and missing paths alike. */
    const char *const refused[] = {
        exec_req,
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"uri\":\"tcp:127.0.0.1:1\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"source\":\"unix:/etc/shadow\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"source\":\"unix:/no/such\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"dest\":\"unix:/run/x.sock\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"dest-qmp\":\"tcp:10.0.0.1:4444\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"dest-prepare\":\"touch /tmp/x\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"plugin-dir\":\"/tmp\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"max-bandwidth\":\"1G\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"no-such-key\":\"1\"}}",
    };
    g_autofree char *first = NULL;
    for (guint i = 0; i < G_N_ELEMENTS(refused); i++) {
        g_autoptr(json_object) r = member_call(d, refused[i]);
        g_test_message("%s -> %s", refused[i], json_object_to_json_string(r));
        g_assert_false(json_object_get_boolean(member(r, "ok")));
        g_assert_cmpstr(error_code(r), ==, "permission-denied");
        /* One answer for all: it tells nothing about which paths or keys exist. */
        if (!first)
            first = g_strdup(error_message(r));
        g_assert_cmpstr(error_message(r), ==, first);
    }
    /* Within the policy's limits only: shorter, fewer, stricter. */
    const char *const too_far[] = {
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"max-hold\":\"1h\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"max-attempts\":4}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"max-backoff\":\"1min\"}}",
        "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"on-unquiesceable\":\"use-fix\"}}",
    };
    for (guint i = 0; i < G_N_ELEMENTS(too_far); i++) {
        g_autoptr(json_object) r = member_call(d, too_far[i]);
        g_assert_cmpstr(error_code(r), ==, "permission-denied");
    }
    /* exec: URIs never come from a request, not even the owner's. */
    g_autoptr(json_object) owner_exec = call(d, exec_req);
    g_assert_cmpstr(error_code(owner_exec), ==, "permission-denied");

    g_autoptr(Client) m = member_client(d);
    client_send(m, "{\"op\":\"migrate\",\"vm\":\"vm1\",\"options\":{\"max-hold\":\"2s\","
                   "\"max-attempts\":1,\"on-unquiesceable\":\"abort\",\"backoff\":\"100ms\","
                   "\"max-backoff\":\"1s\"}}");
    g_autoptr(json_object) ok = client_next(m);
    g_assert_true(json_object_get_boolean(member(ok, "ok")));
    g_autoptr(json_object) start = until_event(m, "start", NULL);
    g_assert_cmpint(num(start, "max_hold_ms"), ==, 2000);
    g_autoptr(json_object) result = until_event(m, "result", NULL);
    g_assert_cmpint(num(result, "exit_code"), ==, 3); /* nothing reachable: refused */
    g_assert_false(g_file_test(marker, G_FILE_TEST_EXISTS));
    g_assert_cmpint(daemon_stop(d), ==, 0);
}

/* ---- Item 9: SO_PEERGROUPS ------------------------------------------------------------- */

/* A member whose process exited before the daemon accepted its connection is still a
 * member: the kernel recorded its groups at connect(). The daemon is stopped (SIGSTOP)
 * meanwhile so that it cannot look too early. */
static void test_peer_groups(void)
{
    if (geteuid() != 0) {
        g_test_skip("needs root to switch to another uid");
        return;
    }
    g_autoptr(Daemon) d = daemon_new();
    open_dirs(d);
    daemon_start(d, NULL);
    g_subprocess_send_signal(d->proc, SIGSTOP);
    g_autoptr(Client) m = member_client(d);
    g_subprocess_send_signal(d->proc, SIGCONT);
    client_send(m, "{\"op\":\"hello\",\"id\":1}");
    g_autoptr(json_object) r = client_next(m);
    g_test_message("%s", json_object_to_json_string(r));
    g_assert_true(json_object_get_boolean(member(r, "ok")));
    g_assert_cmpint(daemon_stop(d), ==, 0);
}

/* ---- Item 8: requests ------------------------------------------------------------------ */

static void send_raw(Client *c, const void *data, gsize len)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(c->conn)),
                                            data, len, NULL, NULL, &error));
}

/* The next line as raw bytes (NULL at EOF). */
static char *next_raw(Client *c, gsize *len)
{
    return g_data_input_stream_read_line(c->in, len, NULL, NULL);
}

static void test_requests(void)
{
    g_autoptr(Daemon) d = daemon_new();
    write_unreachable_vm(d, "vm1");
    daemon_start(d, NULL);
    g_autoptr(Client) c = client_new(d);
    /* Strings are not booleans: "false" would be coerced to true. */
    client_send(c, "{\"op\":\"list\",\"probe\":\"false\",\"id\":1}");
    client_send(c, "{\"op\":\"migrate\",\"vm\":\"vm1\",\"follow\":\"false\",\"id\":2}");
    client_send(c, "{\"op\":\"cancel\",\"vm\":\"vm1\",\"signal\":\"15\",\"id\":3}");
    /* A request starting with NUL, one with invalid UTF-8, a deep one, trailing garbage. */
    send_raw(c, "\0{\"op\":\"hello\"}\n", 16);
    send_raw(c, "{\"op\":\"\xff\xfe hello\",\"id\":5}\n", 25);
    g_autofree char *deep = g_strnfill(5000, '[');
    client_send(c, deep);
    client_send(c, "{\"op\":\"hello\"} {\"op\":\"hello\"}");
    client_send(c, "{\"op\":\"hello\",\"id\":9}");
    const char *const codes[] = {"bad-request", "bad-request", NULL,         "bad-request",
                                 "bad-request", "bad-request", "bad-request"};
    for (guint i = 0; i < G_N_ELEMENTS(codes); i++) {
        gsize len = 0;
        g_autofree char *line = next_raw(c, &len);
        g_assert_nonnull(line);
        g_test_message("reply %u: %s", i, line);
        g_assert_true(g_utf8_validate_len(line, len, NULL));
        g_assert_null(memchr(line, '\0', len));
        g_autoptr(json_object) r = json_tokener_parse(line);
        g_assert_false(json_object_get_boolean(member(r, "ok")));
        if (codes[i])
            g_assert_cmpstr(error_code(r), ==, codes[i]);
    }
    /* Exactly one reply each: the next one is the last request's. */
    g_autoptr(json_object) last = client_next(c);
    g_assert_cmpint(num(last, "id"), ==, 9);
    g_assert_true(json_object_get_boolean(member(last, "ok")));
    g_assert_cmpint(daemon_stop(d), ==, 0);
}

/* ---- Item 4: a request line is bounded while it is read -------------------------------- */

static void test_long_line(void)
{
    g_autoptr(Daemon) d = daemon_new();
    daemon_start(d, NULL);
    g_autoptr(Client) c = client_new(d);
    /* 3 MiB and no newline: the daemon answers and hangs up before any end of line. */
    g_autofree char *chunk = g_strnfill(64 * 1024, 'a');
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(c->conn));
    for (int i = 0; i < 48; i++)
        if (!g_output_stream_write_all(out, chunk, 64 * 1024, NULL, NULL, NULL))
            break; /* it hung up already */
    GSocket *raw = g_socket_connection_get_socket(c->conn);
    g_socket_set_timeout(raw, 30); /* a failure, not a measurement */
    g_autoptr(json_object) r = client_next(c);
    g_assert_nonnull(r);
    g_assert_cmpstr(error_code(r), ==, "bad-request");
    g_assert_null(client_next(c)); /* then EOF */
    g_autoptr(json_object) hello = call(d, "{\"op\":\"hello\"}");
    g_assert_true(json_object_get_boolean(member(hello, "ok")));
    g_assert_cmpint(daemon_stop(d), ==, 0);
}

/* ---- Item 3: fd starvation through the metrics port and the control socket -------------- */

static GSocketConnection *metrics_connect(guint port)
{
    g_autoptr(GSocketClient) sc = g_socket_client_new();
    g_socket_client_set_enable_proxy(sc, FALSE);
    g_autoptr(GSocketAddress) addr = g_inet_socket_address_new_from_string("127.0.0.1", port);
    return g_socket_client_connect(sc, G_SOCKET_CONNECTABLE(addr), NULL, NULL);
}

static char *http_get(guint port, const char *request)
{
    g_autoptr(GSocketConnection) conn = metrics_connect(port);
    g_assert_nonnull(conn);
    g_socket_set_timeout(g_socket_connection_get_socket(conn), 30);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(conn)),
                                            request, strlen(request), NULL, NULL, &error));
    char body[65536];
    gsize got = 0;
    g_input_stream_read_all(g_io_stream_get_input_stream(G_IO_STREAM(conn)), body, sizeof body - 1,
                            &got, NULL, &error);
    body[got] = '\0';
    return g_strdup(body);
}

static guint count_in_file(const char *path, const char *needle)
{
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return 0;
    guint n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void test_fd_starvation(void)
{
    if (geteuid() != 0) {
        g_test_skip("needs root to switch to another uid");
        return;
    }
    g_autoptr(Daemon) d = daemon_new();
    open_dirs(d);
    d->nofile = 256;
    Pair p = {0};
    pair_start(&p, RIG_QEMU_72, "fdvm", FALSE);
    const char *const extra[] = {"--metrics-listen", "127.0.0.1:0", "--client-idle-timeout", "3s",
                                 NULL};
    daemon_start(d, extra);
    g_autoptr(json_object) hello = call(d, "{\"op\":\"hello\"}");
    guint port = (guint)num(hello, "metrics_port");

    /* 400 idle TCP connections (more than the daemon has fds) and 150 idle members. */
    g_autoptr(GPtrArray) idle = g_ptr_array_new_with_free_func(g_object_unref);
    for (int i = 0; i < 400; i++) {
        GSocketConnection *conn = metrics_connect(port);
        if (conn)
            g_ptr_array_add(idle, conn);
    }
    g_autoptr(GArray) members = member_connect_n(d, 150);

    /* The owner is still served, and a VM added now still gets its QMP connection. */
    g_autoptr(json_object) still = call(d, "{\"op\":\"hello\"}");
    g_assert_true(json_object_get_boolean(member(still, "ok")));
    pair_policy(d, &p, "fdvm", NULL);
    g_autoptr(json_object) reload = call(d, "{\"op\":\"reload\"}");
    g_assert_true(json_object_get_boolean(member(reload, "ok")));
    json_object_put(wait_connection(d, "fdvm", "connected", 20000));

    /* Idle connections are cut off (metrics after 10 s, members after 3 s), then HTTP works
     * again, with HEAD and a query string. */
    for (guint i = 0; i < idle->len; i++) {
        GSocketConnection *conn = g_ptr_array_index(idle, i);
        g_socket_set_timeout(g_socket_connection_get_socket(conn), 30);
        char buf[16];
        gssize n = g_input_stream_read(g_io_stream_get_input_stream(G_IO_STREAM(conn)), buf,
                                       sizeof buf, NULL, NULL);
        g_assert_cmpint(n, <=, 0);
    }
    g_ptr_array_set_size(idle, 0);
    g_autofree char *get = http_get(port, "GET /metrics?name[]=x HTTP/1.1\r\nHost: x\r\n\r\n");
    g_assert_true(g_str_has_prefix(get, "HTTP/1.0 200 OK"));
    g_assert_nonnull(strstr(get, "safe_migrated_build_info{version=\""));
    g_autofree char *head = http_get(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
    g_assert_true(g_str_has_prefix(head, "HTTP/1.0 200 OK"));
    g_assert_null(strstr(head, "safe_migrated_vms"));
    for (guint i = 0; i < members->len; i++) {
        int fd = g_array_index(members, int, i);
        struct timeval tv = {30, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[4096];
        while (read(fd, buf, sizeof buf) > 0) {
        }
        close(fd);
    }
    /* And the log did not drown: accept trouble is reported at most every 10 s. */
    daemon_stop(d);
    guint warnings = count_in_file(d->log, "cannot accept") + count_in_file(d->log, "no room") +
                     count_in_file(d->log, "too many clients") +
                     count_in_file(d->log, "no file descriptors");
    g_test_message("%u accept warnings", warnings);
    g_assert_cmpuint(warnings, <=, 12);
    rig_pair_clear(&p);
}

/* ---- Item 7: hostile policy files -------------------------------------------------------- */

static void test_policy_files(void)
{
    if (geteuid() != 0) {
        g_test_skip("needs root to switch to another uid");
        return;
    }
    g_autoptr(Daemon) d = daemon_new();
    open_dirs(d);
    g_autofree char *fifo = g_strdup_printf("%s/vms.d/fifo.conf", d->dir);
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    g_autofree char *zero = g_strdup_printf("%s/vms.d/zero.conf", d->dir);
    g_assert_cmpint(symlink("/dev/zero", zero), ==, 0);
    /* A secret the daemon can read and a member must not see (stands for /etc/shadow). */
    g_autofree char *secret = g_build_filename(d->dir, "secret", NULL);
    g_assert_true(
        g_file_set_contents(secret, "root:$6$SECRET-HASH:19000:0:99999:7:::\n", -1, NULL));
    g_assert_cmpint(chmod(secret, 0600), ==, 0);
    g_autofree char *shadow = g_strdup_printf("%s/vms.d/shadow.conf", d->dir);
    g_assert_cmpint(symlink(secret, shadow), ==, 0);
    g_autofree char *big = g_strnfill(2 << 20, '#');
    daemon_write_vm(d, "big", big);
    write_unreachable_vm(d, "fine");
    daemon_start(d, NULL); /* READY=1 came: no file hung it */

    g_autoptr(json_object) list = member_call(d, "{\"op\":\"list\"}");
    const char *text = json_object_to_json_string(list);
    g_test_message("member's list: %s", text);
    g_assert_null(strstr(text, "SECRET"));
    g_assert_null(strstr(text, "root:"));
    json_object *vms = member(list, "vms");
    g_assert_cmpuint(json_object_array_length(vms), ==, 5);
    for (size_t i = 0; i < 5; i++) {
        json_object *vm = json_object_array_get_idx(vms, i);
        if (!g_str_equal(str(vm, "name"), "fine"))
            g_assert_nonnull(str(vm, "config_error"));
    }
    /* The owner gets the whole story. */
    g_autoptr(json_object) vfifo = list_vm(d, "fifo");
    g_assert_nonnull(strstr(str(vfifo, "config_error"), "not a regular file"));
    g_autoptr(json_object) vbig = list_vm(d, "big");
    g_assert_nonnull(strstr(str(vbig, "config_error"), "larger than"));
    g_autoptr(json_object) reload = call(d, "{\"op\":\"reload\"}");
    g_assert_true(json_object_get_boolean(member(reload, "ok")));
    g_assert_cmpint(daemon_stop(d), ==, 0);
}

/* ---- Item 2: a VM's QEMU answering ill-typed replies -------------------------------------- */

static void script_null_replies(FakeServer *fs, gpointer data)
{
    (void)data;
    fs_handshake(fs);
    fs_reply(fs, fs_expect(fs, "query-status"), "{\"status\":\"running\",\"running\":true}");
    fs_reply(fs, fs_expect(fs, "qom-get"), "\"pc-i440fx-7.2-machine\"");
    /* Device discovery: null where a list belongs (crashed the daemon: a NULL result
     * without an error), then hang up. */
    g_autoptr(FakeMsg) msg = fs_recv(fs);
    g_assert_cmpstr(msg->execute, ==, "qom-list");
    fs_reply(fs, msg->id, "null");
    fs_close(fs);
}

static void test_ill_typed_qemu(void)
{
    g_autoptr(Daemon) d = daemon_new();
    FakeServer *fs = fake_server_new(FALSE, script_null_replies, NULL);
    g_autofree char *text = g_strdup_printf("[vm]\nsource-qmp=%s\n", fake_server_address(fs));
    daemon_write_vm(d, "liar", text);
    daemon_start(d, NULL);
    fake_server_free(fs); /* waits for the script: the daemon talked to it and hung up */
    g_autoptr(json_object) vm = list_vm(d, "liar");
    g_test_message("%s", json_object_to_json_string(vm));
    g_autoptr(json_object) hello = call(d, "{\"op\":\"hello\"}");
    g_assert_true(json_object_get_boolean(member(hello, "ok")));
    g_assert_cmpint(daemon_stop(d), ==, 0);
}

/* ---- Item 4: probes coalesce, a migration never waits behind them ----------------------- */

static guint64 metric(Daemon *d, const char *name)
{
    g_autoptr(json_object) m = call(d, "{\"op\":\"metrics\"}");
    const char *text = str(m, "text");
    g_autofree char *needle = g_strdup_printf("\n%s ", name);
    const char *at = strstr(text, needle);
    g_assert_nonnull(at);
    return g_ascii_strtoull(at + strlen(needle), NULL, 10);
}

static void test_probe_flood(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair p = {0};
    pair_start(&p, RIG_QEMU_72, "flood", TRUE);
    pair_policy(d, &p, "flood", NULL);
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "flood", "connected", 10000));
    guint64 before = metric(d, "safe_migrated_probe_seconds_count");

    /* 40 status requests (each a device-state capture that stops the VM for a moment) and a
     * migrate, pipelined on one connection. */
    g_autoptr(Client) c = client_new(d);
    GString *burst = g_string_new(NULL);
    for (int i = 1; i <= 40; i++)
        g_string_append_printf(burst, "{\"op\":\"status\",\"vm\":\"flood\",\"id\":%d}\n", i);
    g_string_append(burst, "{\"op\":\"migrate\",\"vm\":\"flood\",\"id\":100}\n");
    send_raw(c, burst->str, burst->len);
    g_string_free(burst, TRUE);

    /* Exactly one reply per request; the probes are answered by one capture or two, or
     * refused as busy once the migration is asked for. */
    guint replies = 0, probed = 0;
    gboolean result = FALSE;
    while (replies < 41 || !result) {
        g_autoptr(json_object) o = client_next(c);
        g_assert_nonnull(o);
        json_object *ev = member(o, "event");
        if (ev) {
            if (g_str_equal(str(ev, "event"), "result")) {
                g_assert_cmpstr(str(ev, "result"), ==, "migrated");
                result = TRUE;
            }
            continue;
        }
        replies++;
        gint64 id = num(o, "id");
        if (id == 100)
            g_assert_true(json_object_get_boolean(member(o, "ok")));
        else if (json_object_get_boolean(member(o, "ok")))
            probed++;
        else
            g_assert_cmpstr(error_code(o), ==, "busy");
    }
    g_assert_cmpuint(replies, ==, 41);
    guint64 captures = metric(d, "safe_migrated_probe_seconds_count") - before;
    g_test_message("%u status answered by a probe, %" G_GUINT64_FORMAT " captures", probed,
                   captures);
    g_assert_cmpuint(captures, <=, 3);
    g_assert_cmpint(daemon_stop(d), ==, 0);
    rig_pair_clear(&p);
}

/* ---- Item 6: a VM stranded at pre-switchover by a daemon that died ----------------------- */

/* The state a daemon killed mid-migration leaves: the source paused at pre-switchover and
 * the dead daemon's owner mark. The next start recovers the VM; a VM at pre-switchover
 * without our mark (someone else's migration) is left alone. */
static void pause_at_pre_switchover(Pair *p)
{
    g_autoptr(GError) error = NULL;
    const QmpCapability caps[] = {{"events", TRUE}, {"pause-before-switchover", TRUE}};
    g_assert_true(qmp_migrate_incoming(rig_vm_qmp(p->dst), p->uri, &error));
    g_assert_true(
        qmp_migrate_set_capabilities(rig_vm_qmp(p->src), caps, G_N_ELEMENTS(caps), &error));
    g_assert_true(qmp_migrate(rig_vm_qmp(p->src), p->uri, &error));
    g_assert_no_error(error);
    const char *const want[] = {"pre-switchover", NULL};
    g_free(rig_wait_migration_status(p->src, want, 30000, &error));
    g_assert_no_error(error);
    assert_runstate(p->src, "finish-migrate"); /* stopped, waiting for migrate-continue */
}

static void test_stranded(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair p = {0}, q = {0};
    pair_start(&p, RIG_QEMU_72, "strand", TRUE);
    pair_start(&q, RIG_QEMU_72, "other", TRUE);
    pair_policy(d, &p, "strand", NULL);
    pair_policy(d, &q, "other", NULL);
    leave_pending_gesn(&p);
    pause_at_pre_switchover(&p);
    pause_at_pre_switchover(&q);
    g_autofree char *marks = g_build_filename(d->dir, "migrations", NULL);
    g_assert_cmpint(g_mkdir_with_parents(marks, 0700), ==, 0);
    g_autofree char *mark = g_build_filename(marks, "strand", NULL);
    g_assert_true(g_file_set_contents(mark, "999999 strand-7\n", -1, NULL));

    daemon_start(d, NULL);
    g_autoptr(json_object) vm = wait_connection(d, "strand", "connected", 60000);
    g_assert_cmpstr(str(vm, "runstate"), ==, "running");
    assert_runstate(p.src, "running");
    g_assert_false(g_file_test(mark, G_FILE_TEST_EXISTS));
    finish_pending_gesn(&p); /* the guest's command completes on the source */
    /* Not ours: untouched. */
    json_object_put(wait_connection(d, "other", "connected", 20000));
    assert_runstate(q.src, "finish-migrate");
    g_assert_cmpint(daemon_stop(d), ==, 0);
    g_autofree char *log = NULL;
    g_assert_true(g_file_get_contents(d->log, &log, NULL, NULL));
    g_assert_nonnull(strstr(log, "whose owner is gone"));
    rig_pair_clear(&p);
    rig_pair_clear(&q);
}

/* Someone else's migration waiting at pre-switchover has stored the run state the destination
 * resumes with; a capture then would store "running" instead (a paused source would come up
 * running there). list --probe and status must leave that VM alone and say why, and the
 * source must come out of that migration's cancel as it went in. */
static void test_probe_under_foreign_switchover(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair p = {0};
    pair_start(&p, RIG_QEMU_72, "foreign", TRUE);
    pair_policy(d, &p, "foreign", NULL);
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "foreign", "connected", 20000));
    pause_at_pre_switchover(&p);
    g_autofree char *settings = rig_vm_migration_settings(p.src);

    g_autoptr(json_object) all = call(d, "{\"op\":\"list\",\"probe\":true}");
    json_object *e = json_object_array_get_idx(member(all, "vms"), 0);
    g_assert_cmpstr(str(e, "name"), ==, "foreign");
    g_assert_null(member(e, "report"));
    g_assert_cmpstr(str(e, "probe_error_code"), ==, "migrating");
    g_assert_nonnull(strstr(str(e, "probe_error"), "pre-switchover"));
    g_autoptr(json_object) st = call(d, "{\"op\":\"status\",\"vm\":\"foreign\"}");
    g_assert_false(json_object_get_boolean(member(st, "ok")));
    g_assert_cmpstr(str(member(st, "error"), "code"), ==, "migrating");
    /* The CLI's table says so too. */
    g_autofree char *bin = bin_path("safe-migrate");
    const char *argv[] = {bin, "--daemon", d->sock, "list", "--probe", NULL};
    g_autofree char *out = NULL;
    int status = 0;
    g_autoptr(GError) error = NULL;
    g_assert_true(
        g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, &out, NULL, &status, &error));
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_nonnull(strstr(out, "not probed: a migration is at pre-switchover"));

    /* Nothing captured: 7.2 keeps the fd of a capture of a stopped VM in its fd set. */
    g_autoptr(json_object) fds =
        qmp_client_execute(rig_vm_qmp(p.src), "query-fdsets", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(json_object_array_length(fds), ==, 0);
    assert_runstate(p.src, "finish-migrate");
    g_autofree char *settings_held = rig_vm_migration_settings(p.src);
    g_assert_cmpstr(settings_held, ==, settings);

    /* That migration's owner cancels it: the source runs again, its settings untouched. */
    g_assert_true(qmp_migrate_cancel(rig_vm_qmp(p.src), &error));
    g_assert_no_error(error);
    const char *const ended[] = {"cancelled", NULL};
    g_free(rig_wait_migration_status(p.src, ended, 30000, &error));
    g_assert_no_error(error);
    await_runstate(p.src, "running", 10000);
    g_autofree char *settings_after = rig_vm_migration_settings(p.src);
    g_assert_cmpstr(settings_after, ==, settings);
    g_assert_cmpint(daemon_stop(d), ==, 0);
    rig_pair_clear(&p);
}

/* ---- The CLI against a daemon answering ill-shaped replies -------------------------------- */

typedef struct {
    GSocket *listener;
    const char *reply;
} FakeDaemon;

static gpointer fake_daemon_thread(gpointer data)
{
    FakeDaemon *f = data;
    g_autoptr(GSocket) conn = g_socket_accept(f->listener, NULL, NULL);
    if (!conn)
        return NULL;
    char buf[4096];
    g_socket_receive(conn, buf, sizeof buf, NULL, NULL);
    g_socket_send(conn, f->reply, strlen(f->reply), NULL, NULL);
    g_socket_close(conn, NULL);
    return NULL;
}

static void test_cli_ill_shaped_daemon(void)
{
    static const char *const replies[] = {
        "{\"ok\":true,\"vms\":5}\n",
        "{\"ok\":true,\"vms\":[{\"name\":\"x\",\"devices\":{}}]}\n",
        "{\"ok\":true,\"vms\":[7,null,\"x\"]}\n",
        "[1,2]\n",
    };
    g_autofree char *dir = g_dir_make_tmp("smfake-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "s", NULL);
    for (guint i = 0; i < G_N_ELEMENTS(replies); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
        FakeDaemon f = {g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM,
                                     G_SOCKET_PROTOCOL_DEFAULT, &error),
                        replies[i]};
        unlink(path);
        g_assert_true(g_socket_bind(f.listener, addr, TRUE, &error));
        g_assert_true(g_socket_listen(f.listener, &error));
        GThread *t = g_thread_new("fake-daemon", fake_daemon_thread, &f);
        g_autofree char *bin = bin_path("safe-migrate");
        const char *argv[] = {bin, "--daemon", path, "list", NULL};
        int status = 0;
        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL,
                                   NULL, NULL, NULL, &status, &error));
        g_thread_join(t);
        g_object_unref(f.listener);
        g_test_message("%s -> status %d", replies[i], status);
        g_assert_true(WIFEXITED(status)); /* an answer, not a json-c assert */
    }
    unlink(path);
    rmdir(dir);
}

/* ---- Issue 16's metrics items: an IPv6 URL in brackets ------------------------------------- */

static void test_metrics_ipv6(void)
{
    g_autoptr(Daemon) d = daemon_new();
    const char *const extra[] = {"--metrics-listen", "[::1]:0", NULL};
    daemon_start(d, extra);
    g_autoptr(json_object) hello = call(d, "{\"op\":\"hello\"}");
    g_autofree char *url =
        g_strdup_printf("http://[::1]:%d/metrics", (int)num(hello, "metrics_port"));
    g_assert_cmpint(daemon_stop(d), ==, 0);
    g_autofree char *log = NULL;
    g_assert_true(g_file_get_contents(d->log, &log, NULL, NULL));
    g_assert_nonnull(strstr(log, url));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/daemon-hostile/privilege", test_privilege);
    g_test_add_func("/daemon-hostile/peer-groups", test_peer_groups);
    g_test_add_func("/daemon-hostile/requests", test_requests);
    g_test_add_func("/daemon-hostile/long-line", test_long_line);
    g_test_add_func("/daemon-hostile/fd-starvation", test_fd_starvation);
    g_test_add_func("/daemon-hostile/policy-files", test_policy_files);
    g_test_add_func("/daemon-hostile/ill-typed-qemu", test_ill_typed_qemu);
    g_test_add_func("/daemon-hostile/probe-flood", test_probe_flood);
    g_test_add_func("/daemon-hostile/stranded", test_stranded);
    g_test_add_func("/daemon-hostile/probe-under-foreign-switchover",
                    test_probe_under_foreign_switchover);
    g_test_add_func("/daemon-hostile/cli-ill-shaped-daemon", test_cli_ill_shaped_daemon);
    g_test_add_func("/daemon-hostile/metrics-ipv6", test_metrics_ipv6);
    return g_test_run();
}
