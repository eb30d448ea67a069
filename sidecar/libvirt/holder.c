/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrate-holder: the minimal process that keeps libvirt's monitor connection and QEMU's
 * alive while the filter (which parses and decides) may die. It accepts libvirt on the
 * monitor path, connects to QEMU's renamed socket, runs the filter on both fds and starts it
 * again on the same fds when it dies: libvirt never sees its monitor close, so it never
 * decides that QEMU crashed. A filter that cannot run at all is replaced by a plain relay. Runs in
 * the domain's directory; its argv names no domain. safe-migrate-holder FILTER  (fd 3: the
 * listening monitor socket; fd 4: a ready pipe) */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sm-libvirt.h" /* file names only; no GLib calls here */

enum { LISTEN_FD = 10, LIBVIRT_FD = 11, QEMU_FD = 12 };

static void logf_(const char *fmt, const char *arg)
{
    time_t now = time(NULL);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%F %T", gmtime(&now));
    fprintf(stderr, "%s holder[%d]: ", stamp, (int)getpid());
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
}

/* The filter's argv, as the hook wrote it (NUL-separated), plus room for --resume. */
static char **read_args(void)
{
    static char buf[8192];
    static char *argv[64];
    int fd = open(SM_LV_ARGS, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    int argc = 0;
    for (ssize_t i = 0; i < n && argc < 60; i += (ssize_t)strlen(buf + i) + 1)
        argv[argc++] = buf + i;
    argv[argc] = NULL;
    return argv;
}

static int qemu_gone(pid_t qemu_pid)
{
    if (access(SM_LV_QEMU_SOCK, F_OK) != 0) /* libvirt deleted the domain's directory */
        return 1;
    return qemu_pid > 0 && kill(qemu_pid, 0) != 0 && errno == ESRCH;
}

/* Waits for libvirt to connect; -1 once the domain is gone. */
static int accept_libvirt(pid_t qemu_pid)
{
    for (;;) {
        struct pollfd p = {.fd = LISTEN_FD, .events = POLLIN};
        int r = poll(&p, 1, 1000);
        if (r > 0) {
            int fd = accept4(LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                return fd;
        }
        if (qemu_gone(qemu_pid))
            return -1;
    }
}

static pid_t spawn_filter(const char *filter, char **args, int resume)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    dup2(LIBVIRT_FD, SM_LV_FD_LIBVIRT); /* dup2 clears close-on-exec on the copies */
    dup2(QEMU_FD, SM_LV_FD_QEMU);
    char *argv[66];
    int n = 0;
    for (; n < 63 && args[n]; n++)
        argv[n] = args[n];
    if (resume)
        argv[n++] = "--resume";
    argv[n] = NULL;
    execv(filter, argv);
    _exit(127);
}

/* The peer shut its end: a filter that died after that (or exited with a sanitizer's code)
 * is not restarted on a dead connection. */
static int side_closed(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* One read's bytes and fds from `from`, written whole to `to`; 0 when a side is gone. */
static int pass(int from, int to)
{
    char buf[65536], control[CMSG_SPACE(sizeof(int) * 16)];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(from, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0)
        return n < 0 && errno == EINTR;
    struct msghdr out = {.msg_iov = &iov, .msg_iovlen = 1};
    if (msg.msg_controllen > 0) {
        out.msg_control = control;
        out.msg_controllen = msg.msg_controllen;
    }
    int ok = 1;
    for (size_t done = 0; ok && done < (size_t)n;) {
        iov.iov_base = buf + done;
        iov.iov_len = (size_t)n - done;
        ssize_t w = sendmsg(to, &out, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        done += ok ? (size_t)w : 0;
        out.msg_control = NULL, out.msg_controllen = 0; /* fds go with the first bytes */
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
                close(((int *)CMSG_DATA(c))[i]);
    return ok;
}

/* The filter cannot run at all (a broken install or upgrade): relay libvirt's monitor as it
 * is, without the gate, rather than leave libvirt waiting on a monitor nobody reads. */
static void relay_alone(void)
{
    logf_("%s", "the filter keeps failing: relaying this connection WITHOUT the gate");
    for (;;) {
        struct pollfd p[2] = {{.fd = LIBVIRT_FD, .events = POLLIN},
                              {.fd = QEMU_FD, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if ((p[0].revents && !pass(LIBVIRT_FD, QEMU_FD)) ||
            (p[1].revents && !pass(QEMU_FD, LIBVIRT_FD)))
            return;
    }
}

/* Runs filters on one libvirt connection until it is over. */
static void serve_connection(const char *filter, char **args)
{
    int resume = 0, fast_failures = 0;
    for (;;) {
        time_t started = time(NULL);
        pid_t pid = spawn_filter(filter, args, resume);
        int status = 0;
        while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == SM_LV_FILTER_EXIT_CLOSED)
            return;
        if (side_closed(LIBVIRT_FD) || side_closed(QEMU_FD)) /* nothing left to relay */
            return;
        logf_("filter ended (%s); starting it again on the same connection",
              pid < 0               ? "fork failed"
              : WIFSIGNALED(status) ? strsignal(WTERMSIG(status))
                                    : "exit");
        fast_failures = time(NULL) - started < 2 ? fast_failures + 1 : 0;
        if (fast_failures >= 5) {
            relay_alone();
            return;
        }
        /* A filter that cannot run at all would spin: back off up to a second. */
        struct timespec pause = {0, 50000000L * (fast_failures < 20 ? fast_failures : 20)};
        nanosleep(&pause, NULL);
        resume = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2 || fcntl(3, F_GETFD) < 0) {
        fprintf(stderr, "usage: safe-migrate-holder FILTER (fd 3: listening socket)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    if (dup2(3, LISTEN_FD) < 0 || fcntl(LISTEN_FD, F_SETFD, FD_CLOEXEC) < 0)
        return 2;
    close(3);
    char **args = read_args();
    if (fcntl(4, F_GETFD) >= 0) { /* tell the hook we run */
        if (write(4, args ? "ok\n" : "no\n", 3) != 3)
            logf_("%s", "cannot answer the hook");
        close(4);
    }
    if (!args || access(argv[1], X_OK) != 0) {
        logf_("cannot run the filter %s (or read its arguments)", argv[1]);
        return 2;
    }
    pid_t qemu_pid = 0;
    for (;;) {
        int lv = accept_libvirt(qemu_pid);
        if (lv < 0)
            break;
        int qemu = sm_lv_connect_unix(SM_LV_QEMU_SOCK);
        if (qemu < 0) { /* QEMU is gone: libvirt learns it from the closed connection */
            logf_("cannot reach QEMU: %s", strerror(errno));
            close(lv);
            break;
        }
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (getsockopt(qemu, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            qemu_pid = cred.pid;
        /* dup2 clears close-on-exec: set it again, the filter gets its copies as 3 and 4. */
        dup2(lv, LIBVIRT_FD);
        dup2(qemu, QEMU_FD);
        fcntl(LIBVIRT_FD, F_SETFD, FD_CLOEXEC);
        fcntl(QEMU_FD, F_SETFD, FD_CLOEXEC);
        close(lv);
        close(qemu);
        serve_connection(argv[1], args);
        close(LIBVIRT_FD);
        close(QEMU_FD);
    }
    logf_("%s", "the domain is gone; exiting");
    return 0;
}
