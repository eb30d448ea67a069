/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The safe-migrated test harness (see daemon-harness.h). */
#include "daemon-harness.h"
#include "gate.h"

#include <errno.h>
#include <gio/gunixsocketaddress.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- The daemon ------------------------------------------------------------------------ */

static guint daemon_counter;

char *bin_path(const char *name)
{
    return g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", name, NULL);
}

char *notify_recv(Daemon *d, guint timeout_ms)
{
    g_socket_set_timeout(d->notify, (timeout_ms + 999) / 1000);
    char buf[512];
    g_autoptr(GError) error = NULL;
    gssize n = g_socket_receive(d->notify, buf, sizeof buf - 1, NULL, &error);
    if (n < 0)
        return NULL;
    buf[n] = '\0';
    return g_strdup(buf);
}

void daemon_write_vm(Daemon *d, const char *name, const char *text)
{
    g_autofree char *path = g_strdup_printf("%s/vms.d/%s.conf", d->dir, name);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(path, text, -1, &error));
}

/* In the daemon's child: it dies with the test (an aborted test must not leave a daemon
 * holding the test's stdout, which meson waits on), and gets its fd limit if one is set. */
static void child_setup(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (GPOINTER_TO_UINT(data)) {
        struct rlimit rl = {GPOINTER_TO_UINT(data), GPOINTER_TO_UINT(data)};
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

Daemon *daemon_new(void)
{
    Daemon *d = g_new0(Daemon, 1);
    d->dir = g_strdup_printf("%s/daemon%u", rig_tmpdir(), ++daemon_counter);
    g_autofree char *vms = g_build_filename(d->dir, "vms.d", NULL);
    g_assert_cmpint(g_mkdir_with_parents(vms, 0700), ==, 0);
    d->sock = g_build_filename(d->dir, "control.sock", NULL);
    d->log = g_build_filename(d->dir, "daemon.log", NULL);
    return d;
}

/* Starts it and waits for READY=1 on NOTIFY_SOCKET, as systemd would. */
void daemon_start(Daemon *d, const char *const *extra)
{
    g_autoptr(GError) error = NULL;
    g_clear_object(&d->proc);
    g_clear_object(&d->notify);
    g_autofree char *notify_path = g_build_filename(d->dir, "notify.sock", NULL);
    unlink(notify_path);
    d->notify = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM,
                             G_SOCKET_PROTOCOL_DEFAULT, &error);
    g_assert_no_error(error);
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(notify_path);
    g_assert_true(g_socket_bind(d->notify, addr, TRUE, &error));

    g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
    g_subprocess_launcher_setenv(l, "NOTIFY_SOCKET", notify_path, TRUE);
    g_subprocess_launcher_unsetenv(l, "JOURNAL_STREAM");
    g_subprocess_launcher_set_stderr_file_path(l, d->log);
    g_subprocess_launcher_set_child_setup(l, child_setup, GUINT_TO_POINTER(d->nofile), NULL);
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, bin_path("safe-migrated"));
    const char *base[] = {"--config-dir",    d->dir, "--socket", d->sock,
                          "--reconnect-max", "1s",   "--verbose"};
    for (guint i = 0; i < G_N_ELEMENTS(base); i++)
        g_ptr_array_add(argv, g_strdup(base[i]));
    for (guint i = 0; extra && extra[i]; i++)
        g_ptr_array_add(argv, g_strdup(extra[i]));
    g_ptr_array_add(argv, NULL);
    d->proc = g_subprocess_launcher_spawnv(l, (const char *const *)argv->pdata, &error);
    g_assert_no_error(error);
    g_autofree char *state = notify_recv(d, 10000);
    g_assert_nonnull(state);
    g_assert_nonnull(strstr(state, "READY=1"));
}

void daemon_dump_log(Daemon *d)
{
    g_autofree char *text = NULL;
    if (g_file_get_contents(d->log, &text, NULL, NULL))
        g_test_message("daemon log:\n%s", text);
}

/* SIGTERM; returns the exit status. */
int daemon_stop(Daemon *d)
{
    g_subprocess_send_signal(d->proc, SIGTERM);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_subprocess_wait(d->proc, NULL, &error));
    daemon_dump_log(d);
    return g_subprocess_get_if_exited(d->proc) ? g_subprocess_get_exit_status(d->proc) : -1;
}

void daemon_free(Daemon *d)
{
    if (d->proc && g_subprocess_get_identifier(d->proc)) {
        g_subprocess_force_exit(d->proc);
        g_subprocess_wait(d->proc, NULL, NULL);
        daemon_dump_log(d);
    }
    g_clear_object(&d->proc);
    g_clear_object(&d->notify);
    g_free(d->dir);
    g_free(d->sock);
    g_free(d->log);
    g_free(d);
}

/* ---- A control client ------------------------------------------------------------------ */

Client *client_new(Daemon *d)
{
    g_autoptr(GSocketClient) sc = g_socket_client_new();
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(d->sock);
    g_autoptr(GError) error = NULL;
    Client *c = g_new0(Client, 1);
    c->conn = g_socket_client_connect(sc, G_SOCKET_CONNECTABLE(addr), NULL, &error);
    g_assert_no_error(error);
    /* A daemon that stopped answering fails the test instead of hanging it. */
    g_socket_set_timeout(g_socket_connection_get_socket(c->conn), 180);
    c->in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(c->conn)));
    c->daemon = d;
    return c;
}

Client *client_new_from_fd(int fd)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GSocket) sock = g_socket_new_from_fd(fd, &error);
    g_assert_no_error(error);
    Client *c = g_new0(Client, 1);
    c->conn = g_socket_connection_factory_create_connection(sock);
    c->in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(c->conn)));
    return c;
}

void client_free(Client *c)
{
    if (!c)
        return;
    g_clear_object(&c->in);
    g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
    g_object_unref(c->conn);
    g_free(c);
}

void client_send(Client *c, const char *json)
{
    g_autofree char *line = g_strconcat(json, "\n", NULL);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(c->conn)),
                                            line, strlen(line), NULL, NULL, &error));
    g_assert_no_error(error);
}

/* The next line, parsed; NULL at EOF. */
/* A hang-up the test did not expect aborts it, and the abort skips daemon_free: say here why
 * the daemon closed (its exit status, its log: a sanitizer report ends up there). */
static void explain_hangup(Client *c)
{
    Daemon *d = c->daemon;
    g_test_message("the daemon closed the connection, or it timed out");
    if (!d || !d->proc)
        return;
    if (g_subprocess_get_identifier(d->proc) == NULL)
        g_test_message("the daemon has exited: %s %d",
                       g_subprocess_get_if_exited(d->proc) ? "status" : "signal",
                       g_subprocess_get_if_exited(d->proc) ? g_subprocess_get_exit_status(d->proc)
                                                           : g_subprocess_get_term_sig(d->proc));
    daemon_dump_log(d);
}

json_object *client_next(Client *c)
{
    g_autofree char *line = g_data_input_stream_read_line(c->in, NULL, NULL, NULL);
    if (!line)
        return NULL;
    json_object *o = json_tokener_parse(line);
    g_assert_nonnull(o);
    return o;
}

json_object *member(json_object *o, const char *key)
{
    json_object *v = NULL;
    return o && json_object_object_get_ex(o, key, &v) ? v : NULL;
}

const char *str(json_object *o, const char *key)
{
    json_object *v = member(o, key);
    return v ? json_object_get_string(v) : NULL;
}

gint64 num(json_object *o, const char *key)
{
    json_object *v = member(o, key);
    return v ? json_object_get_int64(v) : -1;
}

/* One request on a fresh connection; the reply. */
json_object *call(Daemon *d, const char *json)
{
    g_autoptr(Client) c = client_new(d);
    client_send(c, json);
    json_object *reply = client_next(c);
    if (!reply)
        explain_hangup(c);
    g_assert_nonnull(reply);
    return reply;
}

json_object *list_vm(Daemon *d, const char *name)
{
    g_autoptr(json_object) reply = call(d, "{\"op\":\"list\",\"id\":1}");
    g_assert_true(json_object_get_boolean(member(reply, "ok")));
    json_object *vms = member(reply, "vms");
    for (size_t i = 0; i < json_object_array_length(vms); i++) {
        json_object *vm = json_object_array_get_idx(vms, i);
        if (g_strcmp0(str(vm, "name"), name) == 0)
            return json_object_get(vm);
    }
    return NULL;
}

/* Polls list until the VM's "connection" is `want`. */
json_object *wait_connection(Daemon *d, const char *name, const char *want, guint ms)
{
    gint64 deadline = g_get_monotonic_time() + ms * 1000;
    for (;;) {
        json_object *vm = list_vm(d, name);
        if (vm && g_strcmp0(str(vm, "connection"), want) == 0 &&
            (!g_str_equal(want, "connected") || member(vm, "devices")))
            return vm;
        if (g_get_monotonic_time() > deadline) {
            g_test_message("%s: %s", name, vm ? json_object_to_json_string(vm) : "absent");
            g_assert_not_reached();
        }
        if (vm)
            json_object_put(vm);
        g_usleep(50000);
    }
}

/* Reads a migration's wrapped events until the one named `name`; returns it (new ref). */
json_object *until_event(Client *c, const char *name, GPtrArray *names)
{
    for (;;) {
        g_autoptr(json_object) o = client_next(c);
        if (!o)
            explain_hangup(c);
        g_assert_nonnull(o);
        json_object *ev = member(o, "event");
        if (!ev)
            continue;           /* a reply */
        GError *invalid = NULL; /* every event must fit the schema (sidecar/gate/events.c) */
        if (!sm_event_validate(ev, &invalid))
            g_test_message("outside the schema: %s", json_object_to_json_string(ev));
        g_assert_no_error(invalid);
        if (names)
            g_ptr_array_add(names, g_strdup(str(ev, "event")));
        if (g_str_equal(str(ev, "event"), name))
            return json_object_get(ev);
    }
}

/* ---- VMs ------------------------------------------------------------------------------- */

void pair_start(Pair *p, RigQemu qemu, const char *name, gboolean with_dest)
{
    rig_pair_start(p, &(RigPairConfig){
                          .src_qemu = qemu, .dst_qemu = qemu, .name = name, .no_dest = !with_dest});
}

void pair_policy(Daemon *d, Pair *p, const char *name, const char *extra)
{
    g_autofree char *text = g_strdup_printf(
        "[vm]\nsource-qmp=unix:%s\n%s%s%s%s%s%s\n[gate]\nbackoff=100ms\n%s",
        rig_vm_sidecar_qmp_path(p->src), p->dst ? "dest-qmp=unix:" : "",
        p->dst ? rig_vm_sidecar_qmp_path(p->dst) : "", p->dst ? "\nuri=" : "", p->dst ? p->uri : "",
        p->dst ? "\ndest-prepare=" : "", p->dst ? p->prepare : "", extra ? extra : "");
    daemon_write_vm(d, name, text);
}

void assert_runstate(RigVm *vm, const char *want)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *state = rig_vm_runstate(vm, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(state, ==, want);
}

void await_runstate(RigVm *vm, const char *want, gint64 timeout_ms)
{
    gint64 deadline = g_get_monotonic_time() + timeout_ms * 1000;
    for (;;) {
        g_autoptr(GError) error = NULL;
        g_autofree char *state = rig_vm_runstate(vm, &error);
        g_assert_no_error(error);
        if (g_str_equal(state, want) || g_get_monotonic_time() > deadline) {
            g_assert_cmpstr(state, ==, want);
            return;
        }
        g_usleep(20000);
    }
}

void leave_pending_gesn(Pair *p)
{
    g_autoptr(GError) error = NULL;
    RigCommand cmd = rig_cmd_gesn();
    g_assert_true(rig_guest_send_cbw(p->guest, 0, &cmd, NULL, &error));
    g_assert_no_error(error);
}

void finish_pending_gesn(Pair *p)
{
    g_autoptr(GError) error = NULL;
    guint8 buf[8];
    g_assert_cmpint(rig_guest_data_in(p->guest, 0, buf, 8, &error), ==, 8);
    g_assert_no_error(error);
    g_assert_cmpmem(buf, 8, p->gesn, 8);
    guint8 status = 0xff;
    g_assert_true(rig_guest_read_csw(p->guest, 0, &status, NULL, &error));
    g_assert_cmpuint(status, ==, 0);
}

void make_ram_heavy(Pair *p)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(rig_guest_fill_ram(p->guest, 0x200000, 8 << 20, 0x5a, &error));
    g_assert_no_error(error);
}
