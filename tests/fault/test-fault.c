/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Fault injection: safe-migrate killed -9 in each phase, QMP connections cut under it, the
 * destination killed mid-stream, dest-prepare failing or hanging. After each fault the VM
 * must run on exactly one side (or `safe-migrate recover` must bring it back) and the
 * guest's pending transaction must complete with the right bytes. */
#include "gate.h"
#include "rig.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- A unix-socket relay that the test can cut ------------------------------------------
 * Sits between safe-migrate and a VM's sidecar monitor. It forwards SCM_RIGHTS too: the
 * probe hands QEMU its capture fd with add-fd. */

typedef enum { PROXY_RUN, PROXY_CUT, PROXY_CUT_FOR_GOOD, PROXY_STALL, PROXY_STOP } ProxyRequest;

typedef struct {
    char *path, *target;
    int listen_fd, wake[2];
    GThread *thread;
    GMutex lock;
    GCond cond;
    ProxyRequest request;
    GArray *fds;    /* pairs: client, upstream */
    guint stalled;  /* the first `stalled` fds: their clients' commands are swallowed */
    GPtrArray *log; /* the monitor traffic (log_traffic), or NULL */
} Proxy;

/* What the source's monitor saw, in order: each command's name as the client sent it, and
 * "EVENT:pre-switchover" where QEMU announced that status. Text scanned per read: enough for
 * QMP's one-object-per-line traffic here. */
static void log_traffic(GPtrArray *log, const char *buf, gssize n, gboolean from_client)
{
    g_autofree char *text = g_strndup(buf, (gsize)n);
    for (const char *at = text; (at = strstr(at, from_client ? "\"execute\"" : "\"event\""));
         at++) {
        if (!from_client) {
            const char *end = strchr(at, '\n');
            g_autofree char *line = end ? g_strndup(at, (gsize)(end - at)) : g_strdup(at);
            if (strstr(line, "\"MIGRATION\"") && strstr(line, "\"pre-switchover\""))
                g_ptr_array_add(log, g_strdup("EVENT:pre-switchover"));
            continue;
        }
        const char *q = strchr(at + 9, '"');
        const char *e = q ? strchr(q + 1, '"') : NULL;
        if (e)
            g_ptr_array_add(log, g_strndup(q + 1, (gsize)(e - q - 1)));
    }
}

static gboolean relay(int from, int to, GPtrArray *log, gboolean from_client)
{
    char buf[65536];
    char control[CMSG_SPACE(sizeof(int) * 16)];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(from, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0)
        return FALSE;
    if (log)
        log_traffic(log, buf, n, from_client);
    /* Forward the descriptors with the first byte, as they came. */
    struct msghdr out = {.msg_iov = &iov, .msg_iovlen = 1};
    int fds[16], n_fds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            n_fds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(fds, CMSG_DATA(c), sizeof(int) * (gsize)n_fds);
        }
    }
    char out_control[CMSG_SPACE(sizeof(int) * 16)];
    if (n_fds > 0) {
        out.msg_control = out_control;
        out.msg_controllen = CMSG_SPACE(sizeof(int) * (gsize)n_fds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&out);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (gsize)n_fds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (gsize)n_fds);
    }
    gboolean ok = TRUE;
    for (ssize_t done = 0; done < n && ok;) {
        iov.iov_base = buf + done;
        iov.iov_len = (gsize)(n - done);
        ssize_t w = sendmsg(to, &out, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        done += MAX(w, 0);
        out.msg_control = NULL;
        out.msg_controllen = 0;
    }
    for (int i = 0; i < n_fds; i++)
        close(fds[i]);
    return ok;
}

static void proxy_close_pairs(Proxy *p)
{
    for (guint i = 0; i < p->fds->len; i++)
        close(g_array_index(p->fds, int, i));
    g_array_set_size(p->fds, 0);
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static gpointer proxy_thread(gpointer data)
{
    Proxy *p = data;
    for (;;) {
        g_autoptr(GArray) pfds = g_array_new(FALSE, TRUE, sizeof(struct pollfd));
        struct pollfd w = {.fd = p->wake[0], .events = POLLIN};
        g_array_append_val(pfds, w);
        struct pollfd l = {.fd = p->listen_fd, .events = POLLIN};
        g_array_append_val(pfds, l);
        for (guint i = 0; i < p->fds->len; i++) {
            struct pollfd c = {.fd = g_array_index(p->fds, int, i), .events = POLLIN};
            g_array_append_val(pfds, c);
        }
        if (poll((struct pollfd *)pfds->data, pfds->len, -1) < 0)
            continue;
        struct pollfd *pf = (struct pollfd *)pfds->data;
        if (pf[0].revents) {
            char b;
            (void)!read(p->wake[0], &b, 1);
            g_mutex_lock(&p->lock);
            ProxyRequest r = p->request;
            if (r == PROXY_STALL)
                p->stalled = p->fds->len; /* a hung QEMU, as the clients connected now see it */
            else
                proxy_close_pairs(p), p->stalled = 0;
            if ((r == PROXY_CUT_FOR_GOOD || r == PROXY_STOP) && p->listen_fd >= 0) {
                close(p->listen_fd);
                p->listen_fd = -1;
                unlink(p->path);
            }
            p->request = PROXY_RUN;
            g_cond_broadcast(&p->cond);
            g_mutex_unlock(&p->lock);
            if (r == PROXY_STOP)
                return NULL;
            continue;
        }
        if (p->listen_fd >= 0 && pf[1].revents) {
            int c = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            int u = c >= 0 ? connect_unix(p->target) : -1;
            if (u < 0) {
                if (c >= 0)
                    close(c);
            } else {
                g_array_append_val(p->fds, c);
                g_array_append_val(p->fds, u);
            }
        }
        for (guint i = 2; i < pfds->len; i++) {
            if (!pf[i].revents)
                continue;
            guint k = i - 2, peer = k ^ 1u;
            if (k < p->stalled && k % 2 == 0) {
                char sink[65536];
                if (recv(pf[i].fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
                    continue;
            }
            if (!relay(pf[i].fd, g_array_index(p->fds, int, peer), p->log, k % 2 == 0)) {
                /* One side went away: so does the other, as with a real connection. */
                guint first = k & ~1u;
                close(g_array_index(p->fds, int, first));
                close(g_array_index(p->fds, int, first + 1));
                g_array_remove_range(p->fds, first, 2);
                if (first < p->stalled)
                    p->stalled -= 2;
                break; /* indices moved: poll again */
            }
        }
    }
}

static Proxy *proxy_new(const char *target, gboolean logged)
{
    Proxy *p = g_new0(Proxy, 1);
    p->log = logged ? g_ptr_array_new_with_free_func(g_free) : NULL; /* set before the thread */
    static guint counter;
    p->path = g_strdup_printf("%s/proxy%u", rig_tmpdir(), ++counter);
    p->target = g_strdup(target);
    p->fds = g_array_new(FALSE, FALSE, sizeof(int));
    g_mutex_init(&p->lock);
    g_cond_init(&p->cond);
    g_assert_cmpint(pipe2(p->wake, O_CLOEXEC), ==, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    g_strlcpy(sa.sun_path, p->path, sizeof sa.sun_path);
    p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(bind(p->listen_fd, (struct sockaddr *)&sa, sizeof sa), ==, 0);
    g_assert_cmpint(listen(p->listen_fd, 8), ==, 0);
    p->thread = g_thread_new("proxy", proxy_thread, p);
    return p;
}

/* Closes every relayed connection (both ends); FOR_GOOD also stops accepting new ones.
 * Returns once done. */
static void proxy_request(Proxy *p, ProxyRequest r)
{
    g_mutex_lock(&p->lock);
    p->request = r;
    g_assert_cmpint(write(p->wake[1], "x", 1), ==, 1);
    while (p->request != PROXY_RUN)
        g_cond_wait(&p->cond, &p->lock);
    g_mutex_unlock(&p->lock);
}

static void proxy_free(Proxy *p)
{
    if (!p)
        return;
    proxy_request(p, PROXY_STOP);
    g_thread_join(p->thread);
    close(p->wake[0]);
    close(p->wake[1]);
    g_array_unref(p->fds);
    if (p->log)
        g_ptr_array_unref(p->log);
    g_mutex_clear(&p->lock);
    g_cond_clear(&p->cond);
    g_free(p->path);
    g_free(p->target);
    g_free(p);
}

/* ---- The gate under test ----------------------------------------------------------------- */

typedef struct {
    GSubprocess *proc;
    pid_t pid;
    GPtrArray *events; /* json_object, in order */
} Gate;

static void json_put(gpointer obj)
{
    json_object_put(obj);
}

static char *safe_migrate_path(void)
{
    return g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "safe-migrate", NULL);
}

static Gate *gate_start(const char *stop_at, const char *const *args)
{
    g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
    if (stop_at)
        g_subprocess_launcher_setenv(l, "SM_FAULT_STOP_AT", stop_at, TRUE);
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, safe_migrate_path());
    for (guint i = 0; args[i]; i++)
        g_ptr_array_add(argv, g_strdup(args[i]));
    g_ptr_array_add(argv, NULL);
    g_autofree char *line = g_strjoinv(" ", (char **)argv->pdata);
    g_test_message("running %s%s%s", stop_at ? "SM_FAULT_STOP_AT=" : "", stop_at ? stop_at : "",
                   line);
    g_autoptr(GError) error = NULL;
    Gate *g = g_new0(Gate, 1);
    g->events = g_ptr_array_new_with_free_func(json_put);
    g->proc = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
    g_assert_no_error(error);
    g->pid = (pid_t)g_ascii_strtoll(g_subprocess_get_identifier(g->proc), NULL, 10);
    return g;
}

/* Waits until the gate stopped itself at its SM_FAULT_STOP_AT point. */
static void gate_wait_stopped(Gate *g)
{
    for (int i = 0; i < 6000; i++) {
        char s = rig_process_state(g->pid);
        if (s == 'T')
            return;
        if (s == 0 || s == 'Z')
            g_error("safe-migrate exited before reaching its fault point");
        g_usleep(10000);
    }
    g_error("safe-migrate never reached its fault point");
}

/* Collects the events and the exit code (128+N for a signal). */
static int gate_wait(Gate *g)
{
    g_autoptr(GDataInputStream) in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(g->proc));
    GString *names = g_string_new(NULL);
    for (;;) {
        g_autofree char *line = g_data_input_stream_read_line(in, NULL, NULL, NULL);
        if (!line)
            break;
        json_object *ev = json_tokener_parse(line);
        g_assert_nonnull(ev);
        GError *invalid = NULL; /* every event must fit the schema (sidecar/gate/events.c) */
        if (!sm_event_validate(ev, &invalid))
            g_test_message("outside the schema: %s", json_object_to_json_string(ev));
        g_assert_no_error(invalid);
        g_ptr_array_add(g->events, ev);
        json_object *v;
        if (json_object_object_get_ex(ev, "event", &v))
            g_string_append_printf(names, "%s ", json_object_get_string(v));
        if (json_object_object_get_ex(ev, "result", NULL))
            g_test_message("result: %s", line);
    }
    g_test_message("events: %s", names->str);
    g_string_free(names, TRUE);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_subprocess_wait(g->proc, NULL, &error));
    g_assert_no_error(error);
    if (g_subprocess_get_if_signaled(g->proc))
        return 128 + g_subprocess_get_term_sig(g->proc);
    return g_subprocess_get_exit_status(g->proc);
}

static gboolean gate_saw(Gate *g, const char *name)
{
    for (guint i = 0; i < g->events->len; i++) {
        json_object *v;
        if (json_object_object_get_ex(g_ptr_array_index(g->events, i), "event", &v) &&
            g_str_equal(json_object_get_string(v), name))
            return TRUE;
    }
    return FALSE;
}

static void gate_free(Gate *g)
{
    if (g->proc && g_subprocess_get_identifier(g->proc)) {
        g_subprocess_force_exit(g->proc);
        g_subprocess_wait(g->proc, NULL, NULL);
    }
    g_clear_object(&g->proc);
    g_ptr_array_unref(g->events);
    g_free(g);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Gate, gate_free)

/* ---- Faults ------------------------------------------------------------------------------ */

typedef enum {
    FAULT_KILL_GATE,       /* kill -9 safe-migrate at its stop point */
    FAULT_CUT_SRC,         /* cut the source QMP connection; the monitor takes new ones */
    FAULT_CUT_SRC_FOREVER, /* cut it and refuse reconnection */
    FAULT_CUT_DST,         /* cut the destination QMP connection */
    FAULT_KILL_DST,        /* kill -9 the destination QEMU */
    FAULT_PREPARE_FAILS,   /* dest-prepare exits 7 */
    FAULT_PREPARE_HANGS,   /* dest-prepare (and a child of it) never returns */
    FAULT_SIGHUP,          /* SIGHUP at the stop point (an ssh drop) */
    FAULT_SIGQUIT,         /* SIGQUIT at the stop point */
    FAULT_SIGINT,          /* SIGINT at the stop point */
    FAULT_STALL_SRC,       /* the source stops answering commands; then SIGINT */
    FAULT_WATCH_SRC,       /* no fault: the source's monitor traffic is recorded */
} Fault;

typedef struct {
    const char *name;
    RigQemu qemu;
    const char *machine;
    Fault fault;
    const char *stop_at; /* SM_FAULT_STOP_AT; NULL for none */
    gboolean pending;    /* a GESN left between CBW and DATA-IN */
    gboolean slow;       /* heavy RAM and 2 MB/s, so that the stream is still flowing */
    int exit_code;       /* expected from the gate */
} FaultCase;

static char *vm_state(RigVm *vm)
{
    /* An adopted (daemonized) QEMU that exited may linger as a zombie nobody reaps. */
    if (!rig_vm_alive(vm) || rig_process_state(rig_vm_pid(vm)) == 0 ||
        rig_process_state(rig_vm_pid(vm)) == 'Z')
        return g_strdup("dead");
    if (!rig_vm_qmp(vm)) /* a reload that lost the race with its exit */
        return g_strdup("no monitor");
    g_autoptr(GError) error = NULL;
    char *state = rig_vm_runstate(vm, &error);
    return state ? state : g_strdup_printf("unreachable (%s)", error->message);
}

static void run_recover(const char *src_addr, const char *dst_addr)
{
    g_autofree char *bin = safe_migrate_path();
    const char *argv[] = {bin, "recover", "--source", src_addr, "--dest", dst_addr, NULL};
    g_autofree char *out = NULL, *err = NULL;
    int status = 0;
    g_autoptr(GError) error = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err,
                               &status, &error));
    g_assert_no_error(error);
    g_test_message("recover: %s%s", out, err);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
}

static gboolean pause_before_switchover(RigVm *vm)
{
    g_autofree char *s = rig_vm_migration_settings(vm);
    return strstr(s, "\"state\": true, \"capability\": \"pause-before-switchover\"") != NULL;
}

/* The dest-prepare script restarts the destination in the background: adopt the new
 * process. Called once the gate ended; a gate killed during dest-prepare leaves its script
 * running: wait until it has started the new QEMU (no process runs the script), and while a
 * QEMU in the directory has yet to write its pid file. The new QEMU may be gone already (a
 * later attempt that was called off ends its incoming migration and QEMU exits, removing its
 * pid file). */
static void adopt_new_dest(RigVm *dst, GPid old_pid)
{
    g_autofree char *dir = g_build_filename(rig_tmpdir(), rig_vm_name(dst), NULL); /* the rig's */
    g_autofree char *pid_path = g_build_filename(dir, "pid", NULL);                /* layout */
    g_autofree char *script = g_build_filename(dir, "prepare.sh", NULL);
    for (int i = 0; i < 500; i++) {
        g_autoptr(GArray) scripts = rig_processes_naming(script);
        g_autoptr(GArray) in_dir = rig_processes_naming(dir);
        g_autofree char *text = NULL;
        if (scripts->len == 0 && !g_file_get_contents(pid_path, &text, NULL, NULL)) {
            if (in_dir->len == 0)
                return;
            g_usleep(20000);
            continue;
        }
        GPid pid = text ? (GPid)g_ascii_strtoll(text, NULL, 10) : 0;
        char state = rig_process_state(pid);
        g_autoptr(GError) error = NULL;
        if (scripts->len == 0 &&
            (pid == old_pid || state == 0 || state == 'Z' || rig_vm_reload(dst, &error)))
            return;
        g_usleep(20000);
    }
    g_error("the restarted destination never came up");
}

#define KILLED (128 + SIGKILL)

static void test_fault(gconstpointer data)
{
    const FaultCase *c = data;
    g_autoptr(GError) error = NULL;
    RigPair pair;
    rig_pair_start(
        &pair, &(RigPairConfig){.src_qemu = c->qemu, .dst_qemu = c->qemu, .machine = c->machine});
    RigVm *src = pair.src, *dst = pair.dst;
    RigGuest *guest = pair.guest;
    if (c->slow)
        g_assert_true(rig_guest_fill_ram(guest, 0x200000, 8 << 20, 0x5a, &error));
    g_assert_no_error(error);
    if (c->pending) {
        RigCommand cmd = rig_cmd_gesn();
        g_assert_true(rig_guest_send_cbw(guest, 0, &cmd, NULL, &error));
        g_assert_no_error(error);
    }

    const char *src_direct = pair.src_addr, *dst_direct = pair.dst_addr;
    Proxy *src_proxy = NULL, *dst_proxy = NULL;
    if (c->fault == FAULT_CUT_SRC || c->fault == FAULT_CUT_SRC_FOREVER ||
        c->fault == FAULT_STALL_SRC || c->fault == FAULT_WATCH_SRC)
        src_proxy = proxy_new(rig_vm_sidecar_qmp_path(src), c->fault == FAULT_WATCH_SRC);
    if (c->fault == FAULT_CUT_DST)
        dst_proxy = proxy_new(rig_vm_sidecar_qmp_path(dst), FALSE);
    g_autofree char *src_addr =
        src_proxy ? g_strdup_printf("unix:%s", src_proxy->path) : g_strdup(src_direct);
    g_autofree char *dst_addr =
        dst_proxy ? g_strdup_printf("unix:%s", dst_proxy->path) : g_strdup(dst_direct);
    const char *uri = pair.uri;
    g_autofree char *hang_pid = g_build_filename(rig_tmpdir(), "hang.pid", NULL);
    g_autofree char *child_pid = g_build_filename(rig_tmpdir(), "hang-child.pid", NULL);
    g_autofree char *prepare = NULL;
    if (c->fault == FAULT_PREPARE_FAILS)
        prepare = g_strdup("exit 7");
    else if (c->fault == FAULT_PREPARE_HANGS)
        prepare =
            g_strdup_printf("sleep 600 & echo $! > %s; echo $$ > %s; wait", child_pid, hang_pid);
    else
        prepare = g_strdup(pair.prepare);
    g_assert_no_error(error);
    unlink(hang_pid);
    unlink(child_pid);
    g_autofree char *before = rig_vm_migration_settings(src);
    const char *args[] = {"migrate",
                          "--source",
                          src_addr,
                          "--dest",
                          dst_addr,
                          "--uri",
                          uri,
                          "--dest-prepare",
                          prepare,
                          "--backoff",
                          "50ms",
                          "--max-attempts",
                          "3",
                          "--dest-prepare-timeout",
                          "1s",
                          "--json",
                          "--max-bandwidth",
                          c->slow ? "2M" : "1G",
                          NULL};
    GPid old_dst_pid = rig_vm_pid(dst);
    g_autoptr(Gate) g = gate_start(c->stop_at, args);

    if (c->stop_at) {
        gate_wait_stopped(g);
        switch (c->fault) {
        case FAULT_KILL_GATE:
            kill(g->pid, SIGKILL);
            break;
        case FAULT_CUT_SRC:
            proxy_request(src_proxy, PROXY_CUT);
            break;
        case FAULT_CUT_SRC_FOREVER:
            proxy_request(src_proxy, PROXY_CUT_FOR_GOOD);
            break;
        case FAULT_CUT_DST:
            proxy_request(dst_proxy, PROXY_CUT);
            break;
        case FAULT_KILL_DST:
            kill(rig_vm_pid(dst), SIGKILL);
            break;
        case FAULT_SIGHUP:
            kill(g->pid, SIGHUP);
            break;
        case FAULT_SIGQUIT:
            kill(g->pid, SIGQUIT);
            break;
        case FAULT_SIGINT:
            kill(g->pid, SIGINT);
            break;
        case FAULT_STALL_SRC:
            proxy_request(src_proxy, PROXY_STALL);
            break;
        default:
            g_assert_not_reached();
        }
        kill(g->pid, SIGCONT);
    }
    if (c->fault == FAULT_STALL_SRC) {
        /* The gate now waits for replies that never come (the probe at pre-switchover): an
         * interrupt must still call the migration off, not wait for a command timeout. */
        static const char *const pre[] = {"pre-switchover", NULL};
        char *st = rig_wait_migration_status(src, pre, 60000, &error);
        g_assert_no_error(error);
        g_free(st);
        g_usleep(300 * 1000);
        kill(g->pid, SIGINT);
    }
    if (c->fault == FAULT_PREPARE_HANGS) {
        for (int i = 0; i < 3000 && !g_file_test(hang_pid, G_FILE_TEST_EXISTS); i++)
            g_usleep(10000);
        g_assert_true(g_file_test(hang_pid, G_FILE_TEST_EXISTS));
        /* While it hangs the VM runs on the source and the guest is served there. */
        g_autofree char *state = vm_state(src);
        g_assert_cmpstr(state, ==, "running");
        /* Past dest-prepare-timeout the gate kills the command and gives up (exit 5). */
        g_autofree char *text = NULL;
        g_assert_true(g_file_get_contents(hang_pid, &text, NULL, NULL));
        pid_t hung = (pid_t)g_ascii_strtoll(text, NULL, 10);
        g_assert_cmpint(gate_wait(g), ==, c->exit_code);
        g_assert_cmpint(kill(hung, 0), ==, -1);
        /* Its whole process group went with it. */
        g_autofree char *child_text = NULL;
        g_assert_true(g_file_get_contents(child_pid, &child_text, NULL, NULL));
        pid_t child = (pid_t)g_ascii_strtoll(child_text, NULL, 10);
        for (int i = 0; i < 100 && kill(child, 0) == 0 && rig_process_state(child) != 'Z'; i++)
            g_usleep(10000);
        g_assert_true(kill(child, 0) == -1 || rig_process_state(child) == 'Z');
    }
    if (c->fault != FAULT_PREPARE_HANGS)
        g_assert_cmpint(gate_wait(g), ==, c->exit_code);
    if (c->fault == FAULT_WATCH_SRC) {
        /* The guest is stopped from the pre-switchover event to migrate-continue: the gate
         * sends nothing then but the save into the fd it prepared before (issue 15). */
        proxy_request(src_proxy, PROXY_CUT_FOR_GOOD);
        GPtrArray *log = src_proxy->log;
        guint at = 0;
        while (at < log->len && !g_str_equal(g_ptr_array_index(log, at), "EVENT:pre-switchover"))
            at++;
        g_assert_cmpuint(at + 2, <, log->len);
        g_assert_cmpstr(g_ptr_array_index(log, at + 1), ==, "xen-save-devices-state");
        g_assert_cmpstr(g_ptr_array_index(log, at + 2), ==, "migrate-continue");
    }
    /* A dest-prepare the gate started goes on without it: wait for its new QEMU. */
    if (gate_saw(g, "dest-prepare") && c->fault != FAULT_PREPARE_FAILS &&
        c->fault != FAULT_PREPARE_HANGS)
        adopt_new_dest(dst, old_dst_pid);
    proxy_free(src_proxy);
    proxy_free(dst_proxy);

    /* The VM runs on exactly one side, or recover brings it back to the source. */
    /* A migration the dead gate left in flight would pause the VM at pre-switchover any
     * moment: that is not "running on one side" either. */
    g_autofree char *s1 = vm_state(src), *d1 = vm_state(dst), *m1 = rig_vm_migration_status(src);
    g_test_message("after the fault: source %s (migration %s), destination %s", s1, m1, d1);
    g_assert_cmpstr(s1, !=, "dead");
    static const char *const settled[] = {"none", "completed", "cancelled", "failed", NULL};
    if ((!g_str_equal(s1, "running") && !g_str_equal(d1, "running")) ||
        !g_strv_contains(settled, m1) || c->exit_code == KILLED || c->exit_code == 6)
        run_recover(src_direct, dst_direct);
    g_autofree char *s2 = vm_state(src), *d2 = vm_state(dst), *m2 = rig_vm_migration_status(src);
    g_test_message("settled: source %s (migration %s), destination %s", s2, m2, d2);
    g_assert_true(g_strv_contains(settled, m2));
    /* QEMU is left as found: whatever the gate set is restored by the gate, or, for a gate
     * that could not (killed, or cut off for good), recover turns off what would stop the
     * next plain migration. */
    if (c->exit_code == KILLED || c->exit_code == 6) {
        g_assert_false(pause_before_switchover(src));
    } else {
        g_autofree char *after = rig_vm_migration_settings(src);
        g_assert_cmpstr(after, ==, before);
    }
    gboolean on_src = g_str_equal(s2, "running");
    gboolean on_dst = g_str_equal(d2, "running");
    g_assert_true(on_src != on_dst);
    if (on_dst) {
        g_assert_cmpstr(s2, ==, "postmigrate");
        g_assert_true(rig_guest_attach(guest, dst, &error));
        g_assert_no_error(error);
    }

    /* The transaction the guest left pending completes with the answer it had before. */
    if (c->pending)
        rig_pair_finish_pending(&pair, pair.gesn);
    /* And the device goes on answering correctly. */
    rig_pair_assert_healthy(&pair);
    rig_pair_clear(&pair);
}

static const FaultCase cases[] = {
    /* kill -9 of the gate in each phase */
    {"kill-gate/preflight", RIG_QEMU_72, "pc", FAULT_KILL_GATE, "preflight", TRUE, FALSE, KILLED},
    {"kill-gate/iterating", RIG_QEMU_72, "pc", FAULT_KILL_GATE, "iterating", TRUE, TRUE, KILLED},
    {"kill-gate/pre-switchover", RIG_QEMU_72, "pc", FAULT_KILL_GATE, "pre-switchover", TRUE, FALSE,
     KILLED},
    {"kill-gate/cancel", RIG_QEMU_72, "pc", FAULT_KILL_GATE, "cancel", TRUE, FALSE, KILLED},
    {"kill-gate/dest-prepare", RIG_QEMU_72, "pc", FAULT_KILL_GATE, "dest-prepare", TRUE, FALSE,
     KILLED},
    {"kill-gate/preflight", RIG_QEMU_10, "pc", FAULT_KILL_GATE, "preflight", TRUE, FALSE, KILLED},
    {"kill-gate/iterating", RIG_QEMU_10, "pc", FAULT_KILL_GATE, "iterating", TRUE, TRUE, KILLED},
    {"kill-gate/pre-switchover", RIG_QEMU_10, "pc", FAULT_KILL_GATE, "pre-switchover", TRUE, FALSE,
     KILLED},
    {"kill-gate/cancel", RIG_QEMU_10, "pc", FAULT_KILL_GATE, "cancel", TRUE, FALSE, KILLED},
    {"kill-gate/dest-prepare", RIG_QEMU_10, "pc", FAULT_KILL_GATE, "dest-prepare", TRUE, FALSE,
     KILLED},
    /* QMP connections dropped under the gate */
    {"cut-source/iterating", RIG_QEMU_72, "pc", FAULT_CUT_SRC, "iterating", TRUE, TRUE, 5},
    {"cut-source/pre-switchover", RIG_QEMU_72, "pc", FAULT_CUT_SRC, "pre-switchover", TRUE, FALSE,
     5},
    {"cut-source-for-good/pre-switchover", RIG_QEMU_72, "pc", FAULT_CUT_SRC_FOREVER,
     "pre-switchover", TRUE, FALSE, 6},
    {"cut-dest/iterating", RIG_QEMU_72, "pc", FAULT_CUT_DST, "iterating", FALSE, TRUE, 0},
    {"cut-dest/pre-switchover", RIG_QEMU_10, "pc", FAULT_CUT_DST, "pre-switchover", TRUE, FALSE, 4},
    /* the destination dies while the stream flows */
    {"kill-dest/iterating", RIG_QEMU_72, "pc", FAULT_KILL_DST, "iterating", TRUE, TRUE, 5},
    {"kill-dest/iterating", RIG_QEMU_10, "pc", FAULT_KILL_DST, "iterating", TRUE, TRUE, 5},
    /* dest-prepare fails, or hangs until dest-prepare-timeout */
    {"dest-prepare-fails", RIG_QEMU_72, "pc", FAULT_PREPARE_FAILS, NULL, TRUE, FALSE, 5},
    {"dest-prepare-hangs", RIG_QEMU_72, "pc", FAULT_PREPARE_HANGS, NULL, TRUE, FALSE, 5},
    /* an ssh drop or a Ctrl-\\ calls the migration off, in each phase that matters */
    {"sighup/iterating", RIG_QEMU_72, "pc", FAULT_SIGHUP, "iterating", TRUE, TRUE, 129},
    {"sighup/pre-switchover", RIG_QEMU_72, "pc", FAULT_SIGHUP, "pre-switchover", TRUE, FALSE, 129},
    {"sigquit/pre-switchover", RIG_QEMU_10, "pc", FAULT_SIGQUIT, "pre-switchover", TRUE, FALSE,
     131},
    {"sigquit/dest-prepare", RIG_QEMU_72, "pc", FAULT_SIGQUIT, "dest-prepare", TRUE, FALSE, 131},
    /* after migrate-continue nothing is called off: QEMU's outcome stands (migrated) */
    {"sigint/switching", RIG_QEMU_72, "pc", FAULT_SIGINT, "switching", FALSE, FALSE, 0},
    {"sigint/switching", RIG_QEMU_10, "pc", FAULT_SIGINT, "switching", FALSE, FALSE, 0},
    /* no fault: between pre-switchover and migrate-continue only the capture */
    {"watch-source/switchover-traffic", RIG_QEMU_72, "pc", FAULT_WATCH_SRC, NULL, FALSE, FALSE, 0},
    {"watch-source/switchover-traffic", RIG_QEMU_10, "pc", FAULT_WATCH_SRC, NULL, FALSE, FALSE, 0},
    /* a source that stops answering mid-probe: SIGINT still acts at once */
    {"stall-source/pre-switchover+SIGINT", RIG_QEMU_72, "pc", FAULT_STALL_SRC, "iterating", TRUE,
     FALSE, 130},
};

/* The gate's output blocked (a full pipe: a reader that stalls, a slow log) at the
 * switchover: the guest must not wait for it. Between the pre-switchover event and
 * migrate-continue the gate writes nothing (issue 15): the migration completes while the
 * gate is still blocked on its pre-switchover line, which it writes after the continue. */
static void test_blocked_output(void)
{
    g_autoptr(GError) error = NULL;
    RigPair pair;
    rig_pair_start(&pair, &(RigPairConfig){.src_qemu = RIG_QEMU_72, .dst_qemu = RIG_QEMU_72});
    int fds[2];
    g_assert_cmpint(pipe2(fds, O_CLOEXEC), ==, 0);
    fcntl(fds[1], F_SETPIPE_SZ, 4096);
    g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
    g_subprocess_launcher_setenv(l, "SM_FAULT_STOP_AT", "iterating", TRUE);
    g_subprocess_launcher_take_stdout_fd(l, dup(fds[1]));
    g_autofree char *bin = safe_migrate_path();
    const char *argv[] = {bin,           "migrate", "--source", pair.src_addr, "--dest",
                          pair.dst_addr, "--uri",   pair.uri,   "--json",      NULL};
    Gate g = {.proc = g_subprocess_launcher_spawnv(l, argv, &error)};
    g_assert_no_error(error);
    g_clear_object(&l); /* and its copy of the write end: EOF once the gate exits */
    g.pid = (pid_t)g_ascii_strtoll(g_subprocess_get_identifier(g.proc), NULL, 10);
    /* Stopped after its "attempt" line: fill the pipe, so that its next line blocks. */
    gate_wait_stopped(&g);
    /* Through a description of our own: O_NONBLOCK on the shared one would make the gate's
     * writes fail rather than block. */
    g_autofree char *again = g_strdup_printf("/proc/self/fd/%d", fds[1]);
    int filler_fd = open(again, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    g_assert_cmpint(filler_fd, >=, 0);
    char filler[512];
    memset(filler, ' ', sizeof(filler));
    while (write(filler_fd, filler, sizeof(filler)) > 0)
        ;
    g_assert_cmpint(errno, ==, EAGAIN);
    close(filler_fd);
    close(fds[1]);
    kill(g.pid, SIGCONT);

    static const char *const final[] = {"completed", "failed", "cancelled", NULL};
    g_autofree char *status = rig_wait_migration_status(pair.src, final, 60000, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(status, ==, "completed");
    /* Now let it write: it ends with the migration done, the guest on the destination. */
    char buf[4096];
    ssize_t n;
    g_autoptr(GString) out = g_string_new(NULL);
    while ((n = read(fds[0], buf, sizeof(buf))) > 0)
        g_string_append_len(out, buf, n);
    close(fds[0]);
    g_test_message("gate output (after the filler): %s", g_strstrip(out->str));
    g_assert_true(g_subprocess_wait(g.proc, NULL, &error));
    g_assert_cmpint(g_subprocess_get_exit_status(g.proc), ==, 0);
    g_autofree char *state = vm_state(pair.dst);
    g_assert_cmpstr(state, ==, "running");
    g_assert_true(rig_guest_attach(pair.guest, pair.dst, &error));
    g_assert_no_error(error);
    rig_pair_assert_healthy(&pair);
    g_object_unref(g.proc);
    rig_pair_clear(&pair);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/fault/7.2/pc/blocked-output/switchover", test_blocked_output);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *path = g_strdup_printf("/fault/%s/%s/%s", rig_qemu_name(cases[i].qemu),
                                                cases[i].machine, cases[i].name);
        g_test_add_data_func(path, &cases[i], test_fault);
    }
    return g_test_run();
}
