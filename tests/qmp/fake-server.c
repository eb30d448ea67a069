/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The scripted fake QMP peer used by test-qmp-fake: plain POSIX sockets in a GThread, so that
 * it can misbehave in ways a GIO server would not (partial lines, huge lines, no greeting). */
#include "fake-server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct FakeServer {
    int listen_fd;
    int fd;
    char *dir;
    char *address;
    GThread *thread;
    FakeScript script;
    gpointer data;
    GAsyncQueue *signals;

    GByteArray *rx;        /* received, not yet consumed */
    guint64 rx_consumed;   /* stream offset of rx[0] */
    GArray *rx_fd_offsets; /* guint64 stream offsets where fds arrived */
    GArray *rx_fds;        /* the fds, parallel to rx_fd_offsets */
};

static gpointer server_thread(gpointer user_data)
{
    FakeServer *fs = user_data;

    fs->fd = accept(fs->listen_fd, NULL, NULL);
    g_assert_cmpint(fs->fd, >=, 0);
    fs->script(fs, fs->data);
    fs_close(fs);
    return NULL;
}

FakeServer *fake_server_new(gboolean tcp, FakeScript script, gpointer data)
{
    FakeServer *fs = g_new0(FakeServer, 1);

    fs->fd = -1;
    fs->script = script;
    fs->data = data;
    fs->signals = g_async_queue_new();
    fs->rx = g_byte_array_new();
    fs->rx_fd_offsets = g_array_new(FALSE, FALSE, sizeof(guint64));
    fs->rx_fds = g_array_new(FALSE, FALSE, sizeof(int));
    if (tcp) {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        socklen_t len = sizeof sin;

        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fs->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(bind(fs->listen_fd, (struct sockaddr *)&sin, sizeof sin), ==, 0);
        g_assert_cmpint(getsockname(fs->listen_fd, (struct sockaddr *)&sin, &len), ==, 0);
        fs->address = g_strdup_printf("tcp:127.0.0.1:%u", ntohs(sin.sin_port));
    } else {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        g_autofree char *path = NULL;

        fs->dir = g_dir_make_tmp("qmp-fake-XXXXXX", NULL);
        g_assert_nonnull(fs->dir);
        path = g_build_filename(fs->dir, "qmp.sock", NULL);
        g_strlcpy(sun.sun_path, path, sizeof sun.sun_path);
        fs->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(bind(fs->listen_fd, (struct sockaddr *)&sun, sizeof sun), ==, 0);
        fs->address = g_strdup_printf("unix:%s", path);
    }
    g_assert_cmpint(listen(fs->listen_fd, 4), ==, 0);
    fs->thread = g_thread_new("fake-qmp", server_thread, fs);
    return fs;
}

const char *fake_server_address(FakeServer *fs)
{
    return fs->address;
}

void fake_server_signal(FakeServer *fs)
{
    g_async_queue_push(fs->signals, GINT_TO_POINTER(1));
}

void fs_wait_signal(FakeServer *fs)
{
    g_async_queue_pop(fs->signals);
}

void fake_server_free(FakeServer *fs)
{
    g_thread_join(fs->thread);
    close(fs->listen_fd);
    if (fs->dir) {
        g_autofree char *path = g_build_filename(fs->dir, "qmp.sock", NULL);

        unlink(path);
        rmdir(fs->dir);
    }
    for (guint i = 0; i < fs->rx_fds->len; i++)
        close(g_array_index(fs->rx_fds, int, i));
    g_array_unref(fs->rx_fds);
    g_array_unref(fs->rx_fd_offsets);
    g_byte_array_unref(fs->rx);
    g_async_queue_unref(fs->signals);
    g_free(fs->dir);
    g_free(fs->address);
    g_free(fs);
}

void fs_close(FakeServer *fs)
{
    if (fs->fd >= 0) {
        close(fs->fd);
        fs->fd = -1;
    }
}

gboolean fs_send(FakeServer *fs, const char *text)
{
    gsize len = strlen(text), off = 0;

    while (off < len) {
        ssize_t n = send(fs->fd, text + off, len - off, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        off += (gsize)n;
    }
    return TRUE;
}

gboolean fs_sendf(FakeServer *fs, const char *fmt, ...)
{
    g_autofree char *text = NULL;
    va_list ap;

    va_start(ap, fmt);
    text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return fs_send(fs, text);
}

/* Reads more bytes, remembering at which stream offset SCM_RIGHTS fds arrived. */
static gboolean fill(FakeServer *fs)
{
    char buf[4096];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    do
        n = recvmsg(fs->fd, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return FALSE;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            guint nfds = (guint)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            guint64 offset = fs->rx_consumed + fs->rx->len;

            for (guint i = 0; i < nfds; i++) {
                int fd;

                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                g_array_append_val(fs->rx_fds, fd);
                g_array_append_val(fs->rx_fd_offsets, offset);
            }
        }
    }
    g_byte_array_append(fs->rx, (guint8 *)buf, (guint)n);
    return TRUE;
}

FakeMsg *fs_recv(FakeServer *fs)
{
    FakeMsg *msg = g_new0(FakeMsg, 1);
    guint8 *nl;
    json_object *v;
    guint64 start, end;
    gsize len;

    msg->id = -1;
    msg->fds = g_array_new(FALSE, FALSE, sizeof(int));
    while (!fs->rx->len || !(nl = memchr(fs->rx->data, '\n', fs->rx->len)))
        if (!fill(fs))
            return msg;
    len = (gsize)(nl - fs->rx->data);
    {
        /* json_tokener_parse needs a NUL-terminated string. */
        g_autofree char *line = g_strndup((char *)fs->rx->data, len);

        msg->obj = json_tokener_parse(line);
        g_assert_nonnull(msg->obj);
    }
    start = fs->rx_consumed;
    end = start + len + 1;
    g_byte_array_remove_range(fs->rx, 0, (guint)len + 1);
    fs->rx_consumed = end;

    msg->fds_at_start = TRUE;
    for (guint i = 0; i < fs->rx_fds->len;) {
        guint64 off = g_array_index(fs->rx_fd_offsets, guint64, i);

        if (off < end) {
            if (off != start)
                msg->fds_at_start = FALSE;
            g_array_append_val(msg->fds, g_array_index(fs->rx_fds, int, i));
            g_array_remove_index(fs->rx_fds, i);
            g_array_remove_index(fs->rx_fd_offsets, i);
        } else {
            i++;
        }
    }
    if (json_object_object_get_ex(msg->obj, "id", &v))
        msg->id = json_object_get_int64(v);
    if (json_object_object_get_ex(msg->obj, "execute", &v))
        msg->execute = json_object_get_string(v);
    return msg;
}

void fake_msg_free(FakeMsg *msg)
{
    for (guint i = 0; i < msg->fds->len; i++)
        close(g_array_index(msg->fds, int, i));
    g_array_unref(msg->fds);
    json_object_put(msg->obj);
    g_free(msg);
}

void fs_handshake(FakeServer *fs)
{
    /* QEMU's exact greeting shape, with CRLF line ends like QEMU's monitor. */
    g_assert_true(fs_send(fs, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, "
                              "\"major\": 7}, \"package\": \" Debian 1:7.2+dfsg-7 \"}, "
                              "\"capabilities\": [\"oob\"]}}\r\n"));
    fs_reply(fs, fs_expect(fs, "qmp_capabilities"), "{}");
}

gint64 fs_expect(FakeServer *fs, const char *execute)
{
    g_autoptr(FakeMsg) msg = fs_recv(fs);

    g_assert_nonnull(msg->obj);
    g_assert_cmpstr(msg->execute, ==, execute);
    g_assert_cmpint(msg->id, >=, 0);
    return msg->id;
}

void fs_reply(FakeServer *fs, gint64 id, const char *return_json)
{
    fs_sendf(fs, "{\"return\": %s, \"id\": %" G_GINT64_FORMAT "}\r\n", return_json, id);
}

void fs_expect_eof(FakeServer *fs)
{
    g_autoptr(FakeMsg) msg = fs_recv(fs);

    g_assert_null(msg->obj);
}
