/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Integration tests of safe-migrated: the real daemon binary over its real control socket,
 * watching and migrating real QEMU VMs from the rig, with the guest played over qtest. */
#include "rig.h"

#include <errno.h>
#include <grp.h>
#include <gio/gunixsocketaddress.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-harness.h"

/* After a migration the guest carries on, byte-correct, on the destination (which the
 * daemon's dest-prepare replaced if the migration was held). */
static void assert_guest_moved(Pair *p, gboolean reprepared)
{
    g_autoptr(GError) error = NULL;
    if (reprepared)
        g_assert_true(rig_vm_reload(p->dst, &error));
    g_assert_no_error(error);
    assert_runstate(p->src, "postmigrate");
    assert_runstate(p->dst, "running");
    g_assert_true(rig_guest_attach(p->guest, p->dst, &error));
    g_assert_no_error(error);
    guint8 buf[8];
    rig_guest_answer8(p->guest, rig_cmd_gesn(), buf);
    g_assert_cmpmem(buf, 8, p->gesn, 8);
}

/* ---- Cases ----------------------------------------------------------------------------- */

/* Several VMs of both QEMUs under one daemon; a broken policy file is reported and the
 * others are served; list is cheap, status probes. */
static void test_several_vms(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair a = {0}, b = {0}, c = {0};
    pair_start(&a, RIG_QEMU_72, "a", FALSE);
    pair_start(&b, RIG_QEMU_72, "b", FALSE);
    pair_start(&c, RIG_QEMU_10, "c", FALSE);
    pair_policy(d, &a, "a", NULL);
    pair_policy(d, &b, "b", NULL);
    pair_policy(d, &c, "c", NULL);
    daemon_write_vm(d, "broken", "[vm]\nsource-qmp=unix:/nowhere\n[gate]\nmax-hold=forever\n");
    daemon_start(d, NULL);

    g_autoptr(json_object) va = wait_connection(d, "a", "connected", 10000);
    g_autoptr(json_object) vb = wait_connection(d, "b", "connected", 10000);
    g_assert_cmpstr(str(vb, "runstate"), ==, "running");
    g_autoptr(json_object) vc = wait_connection(d, "c", "connected", 10000);
    g_assert_cmpstr(str(va, "runstate"), ==, "running");
    g_assert_cmpstr(str(va, "qemu_version"), ==, "7.2.22");
    g_assert_true(g_str_has_prefix(str(vc, "qemu_version"), "10."));
    /* The machine type as QEMU resolved "pc", without QOM's "-machine" suffix. */
    g_assert_cmpstr(str(va, "machine"), ==, "pc-i440fx-7.2");
    g_assert_true(g_str_has_prefix(str(vc, "machine"), "pc-i440fx-10."));
    g_assert_false(g_str_has_suffix(str(vc, "machine"), "-machine"));
    /* The cheap view names the usb-storage device and its fix state: absent in 7.2, on
     * for QEMU 10's current pc machine. */
    json_object *dev = json_object_array_get_idx(member(va, "devices"), 0);
    g_assert_cmpstr(str(dev, "type"), ==, "usb-storage");
    g_assert_cmpstr(str(dev, "fix"), ==, "absent");
    dev = json_object_array_get_idx(member(vc, "devices"), 0);
    g_assert_cmpstr(str(dev, "fix"), ==, "enabled");

    g_autoptr(json_object) broken = list_vm(d, "broken");
    g_assert_cmpstr(str(broken, "connection"), ==, "unconfigured");
    g_assert_nonnull(strstr(str(broken, "config_error"), "broken.conf:4: [gate] max-hold"));

    /* status captures the device state: idle, then busy with the GESN pending. */
    g_autoptr(json_object) st = call(d, "{\"op\":\"status\",\"vm\":\"b\",\"id\":7}");
    g_assert_cmpint(num(st, "id"), ==, 7);
    json_object *v = json_object_array_get_idx(member(member(st, "report"), "devices"), 0);
    g_assert_cmpstr(str(v, "state"), ==, "idle");
    leave_pending_gesn(&b);
    g_autoptr(json_object) st2 = call(d, "{\"op\":\"status\",\"vm\":\"b\"}");
    v = json_object_array_get_idx(member(member(st2, "report"), "devices"), 0);
    g_assert_cmpstr(str(v, "state"), ==, "busy");
    g_assert_cmpstr(str(member(v, "pending"), "name"), ==, "GET EVENT STATUS NOTIFICATION");
    finish_pending_gesn(&b);
    /* list --probe: every configured VM probed, the broken one listed with its error. */
    g_autoptr(json_object) all = call(d, "{\"op\":\"list\",\"probe\":true}");
    json_object *vms = member(all, "vms");
    g_assert_cmpuint(json_object_array_length(vms), ==, 4);
    for (size_t i = 0; i < 4; i++) {
        json_object *e = json_object_array_get_idx(vms, i);
        if (!g_str_equal(str(e, "name"), "broken"))
            g_assert_nonnull(member(e, "report"));
    }
    /* Errors are answers, tagged with the request id. */
    g_autoptr(json_object) e1 = call(d, "{\"op\":\"status\",\"vm\":\"nope\",\"id\":\"x\"}");
    g_assert_false(json_object_get_boolean(member(e1, "ok")));
    g_assert_cmpstr(str(e1, "id"), ==, "x");
    g_assert_cmpstr(str(member(e1, "error"), "code"), ==, "unknown-vm");
    g_autoptr(json_object) e2 = call(d, "not json");
    g_assert_cmpstr(str(member(e2, "error"), "code"), ==, "bad-request");
    g_autoptr(json_object) e3 = call(d, "{\"op\":\"migrate\",\"vm\":\"a\"}");
    g_assert_cmpstr(str(member(e3, "error"), "code"), ==, "usage");
    g_assert_nonnull(strstr(str(member(e3, "error"), "message"), "dest-qmp"));

    g_assert_cmpint(daemon_stop(d), ==, 0);
    g_autofree char *stopping = notify_recv(d, 2000);
    g_assert_nonnull(stopping);
    g_assert_nonnull(strstr(stopping, "STOPPING=1"));
    g_assert_false(g_file_test(d->sock, G_FILE_TEST_EXISTS));
    rig_pair_clear(&a);
    rig_pair_clear(&b);
    rig_pair_clear(&c);
}

/* A QMP peer that accepts connections and never says a word (a hung QEMU): the daemon
 * keeps answering, and probing the healthy VM is not held up by probing the hung one. */
static void test_hung_peer(void)
{
    g_autoptr(Daemon) d = daemon_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *hung_path = g_build_filename(d->dir, "hung.sock", NULL);
    g_autoptr(GSocket) hung =
        g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, &error);
    g_autoptr(GSocketAddress) haddr = g_unix_socket_address_new(hung_path);
    g_assert_true(g_socket_bind(hung, haddr, TRUE, &error));
    g_socket_set_listen_backlog(hung, 16);
    g_assert_true(g_socket_listen(hung, &error)); /* connects succeed; nobody ever answers */
    g_autofree char *htext = g_strdup_printf("[vm]\nsource-qmp=unix:%s\n", hung_path);
    daemon_write_vm(d, "hung", htext);
    Pair p = {0};
    pair_start(&p, RIG_QEMU_72, "fine", FALSE);
    pair_policy(d, &p, "fine", NULL);
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "fine", "connected", 10000));

    g_autoptr(Client) stuck = client_new(d);
    client_send(stuck, "{\"op\":\"status\",\"vm\":\"hung\",\"id\":1}");
    g_autoptr(json_object) listed = list_vm(d, "hung");
    g_assert_cmpstr(str(listed, "connection"), !=, "connected");
    g_autoptr(json_object) st = call(d, "{\"op\":\"status\",\"vm\":\"fine\"}");
    g_assert_true(json_object_get_boolean(member(st, "ok")));
    /* Both answers came while the hung VM's probe was still waiting for its greeting. */
    GSocket *raw = g_socket_connection_get_socket(stuck->conn);
    g_assert_false(g_socket_condition_check(raw, G_IO_IN) & G_IO_IN);
    g_autoptr(json_object) late = client_next(stuck);
    g_assert_false(json_object_get_boolean(member(late, "ok")));
    g_assert_cmpstr(str(member(late, "error"), "code"), ==, "unreachable");
    g_assert_cmpint(num(late, "exit_code"), ==, 3);
    g_assert_cmpint(daemon_stop(d), ==, 0);
    rig_pair_clear(&p);
}

/* Two migrations at once: one holds on a busy device for as long as the guest keeps it
 * busy, the other completes meanwhile. */
static void test_concurrent(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair held = {0}, free_ = {0};
    pair_start(&held, RIG_QEMU_72, "held", TRUE);
    pair_start(&free_, RIG_QEMU_72, "free", TRUE);
    pair_policy(d, &held, "held", "max-hold=1m\nmax-attempts=100\n");
    pair_policy(d, &free_, "free", NULL);
    make_ram_heavy(&free_);
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "held", "connected", 10000));
    json_object_put(wait_connection(d, "free", "connected", 10000));

    leave_pending_gesn(&held);
    g_autoptr(Client) ch = client_new(d);
    client_send(ch, "{\"op\":\"migrate\",\"vm\":\"held\",\"id\":1}");
    g_autoptr(json_object) hold = until_event(ch, "hold", NULL);
    g_assert_cmpstr(str(hold, "pending"), ==, "GET EVENT STATUS NOTIFICATION");
    g_autoptr(json_object) listed = list_vm(d, "held");
    g_assert_cmpstr(str(listed, "connection"), ==, "migrating");

    g_autoptr(Client) cf = client_new(d);
    client_send(cf, "{\"op\":\"migrate\",\"vm\":\"free\",\"id\":2,"
                    "\"options\":{\"max-bandwidth\":\"8M\"}}");
    g_autoptr(json_object) reply = client_next(cf);
    g_assert_true(json_object_get_boolean(member(reply, "ok")));
    g_assert_cmpint(num(reply, "id"), ==, 2);
    g_autoptr(json_object) result = until_event(cf, "result", NULL);
    g_assert_cmpstr(str(result, "result"), ==, "migrated");
    g_assert_cmpstr(str(result, "path"), ==, "idle");
    /* The held one is still held: it waited for its guest, not for the other VM. */
    g_autoptr(json_object) still = list_vm(d, "held");
    g_assert_cmpstr(str(still, "connection"), ==, "migrating");
    /* Between its attempts the held VM runs on its source; an attempt's pre-switchover stops
     * it for a moment, so one query may land there (seen once under load). */
    await_runstate(held.src, "running", 10000);

    finish_pending_gesn(&held);
    g_autoptr(json_object) hresult = until_event(ch, "result", NULL);
    g_assert_cmpstr(str(hresult, "result"), ==, "migrated");
    g_assert_cmpstr(str(hresult, "path"), ==, "held");
    g_assert_cmpint(num(hresult, "holds"), >=, 1);
    assert_guest_moved(&held, TRUE);
    assert_guest_moved(&free_, FALSE);

    g_autoptr(json_object) m = call(d, "{\"op\":\"metrics\"}");
    const char *text = str(m, "text");
    g_test_message("%s", text);
    g_assert_nonnull(
        strstr(text, "safe_migrated_migrations_total{result=\"migrated\",path=\"held\"} 1"));
    g_assert_nonnull(
        strstr(text, "safe_migrated_migrations_total{result=\"migrated\",path=\"idle\"} 1"));
    g_assert_nonnull(strstr(text, "safe_migrated_downtime_seconds_count 2"));
    g_assert_null(strstr(text, "safe_migrated_holds_total 0\n"));
    g_assert_cmpint(daemon_stop(d), ==, 0);
    rig_pair_clear(&held);
    rig_pair_clear(&free_);
}

/* The VM's QEMU dies and comes back at the same socket: the daemon reconnects. */
static void test_vm_restart(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair p = {0};
    pair_start(&p, RIG_QEMU_72, "r", FALSE);
    pair_policy(d, &p, "r", NULL);
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "r", "connected", 10000));
    g_autoptr(GError) error = NULL;
    g_autofree char *script = rig_vm_prepare_script(p.src, FALSE, &error);
    g_assert_no_error(error);
    kill(rig_vm_pid(p.src), SIGKILL);
    json_object_put(wait_connection(d, "r", "disconnected", 5000));
    g_assert_true(g_spawn_command_line_sync(script, NULL, NULL, NULL, &error));
    g_assert_no_error(error);
    g_assert_true(rig_vm_reload(p.src, &error));
    g_assert_no_error(error);
    g_autoptr(json_object) back = wait_connection(d, "r", "connected", 10000);
    g_assert_cmpstr(str(back, "runstate"), ==, "running");
    g_autoptr(json_object) m = call(d, "{\"op\":\"metrics\"}");
    g_assert_nonnull(strstr(str(m, "text"), "safe_migrated_qmp_reconnects_total 1\n"));
    /* And it is fully usable again. */
    g_autoptr(json_object) st = call(d, "{\"op\":\"status\",\"vm\":\"r\"}");
    g_assert_true(json_object_get_boolean(member(st, "ok")));
    g_assert_cmpint(daemon_stop(d), ==, 0);
    rig_pair_clear(&p);
}

/* The client that asked for a migration goes away mid-way; a second client follows it to
 * its end. With "continue" it migrates; with "cancel" the VM stays running on the source.
 * Never paused. */
static void test_client_disconnect(gconstpointer data)
{
    gboolean cancel = GPOINTER_TO_INT(data);
    g_autoptr(Daemon) d = daemon_new();
    Pair p = {0};
    pair_start(&p, RIG_QEMU_72, "cd", TRUE);
    make_ram_heavy(&p);
    pair_policy(d, &p, "cd", cancel ? "on-client-disconnect=cancel\n" : NULL);
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "cd", "connected", 10000));

    Client *owner = client_new(d);
    client_send(owner, "{\"op\":\"migrate\",\"vm\":\"cd\",\"id\":1,"
                       "\"options\":{\"max-bandwidth\":\"4M\"}}");
    g_autoptr(json_object) reply = client_next(owner);
    g_assert_true(json_object_get_boolean(member(reply, "ok")));
    json_object_put(until_event(owner, "attempt", NULL));

    g_autoptr(Client) follower = client_new(d);
    client_send(follower, "{\"op\":\"follow\",\"vm\":\"cd\",\"id\":9}");
    g_autoptr(json_object) freply = client_next(follower);
    g_assert_true(json_object_get_boolean(member(freply, "ok")));
    g_assert_cmpstr(str(freply, "migration"), ==, str(reply, "migration"));
    client_free(owner);

    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(json_object) result = until_event(follower, "result", names);
    /* The follower got the whole story from the start, replayed, then live. */
    g_assert_cmpstr(g_ptr_array_index(names, 0), ==, "start");
    if (cancel) {
        g_assert_cmpstr(str(result, "result"), ==, "interrupted");
        assert_runstate(p.src, "running");
        guint8 buf[8];
        rig_guest_answer8(p.guest, rig_cmd_gesn(), buf);
        g_assert_cmpmem(buf, 8, p.gesn, 8);
    } else {
        g_assert_cmpstr(str(result, "result"), ==, "migrated");
        assert_guest_moved(&p, FALSE);
    }
    g_assert_cmpint(daemon_stop(d), ==, 0);
    rig_pair_clear(&p);
}

static int child_connect(const char *path, gboolean expect_reply)
{
    /* Only async-signal-safe calls after fork. */
    if (setresgid(65534, 65534, 65534) != 0 || setgroups(0, NULL) != 0 ||
        setresuid(65534, 65534, 65534) != 0)
        return 10;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return errno == EACCES && !expect_reply ? 0 : 11;
    if (!expect_reply)
        return 12;
    const char req[] = "{\"op\":\"list\"}\n";
    if (write(fd, req, sizeof req - 1) < 0) {
        /* The daemon may have hung up already: fine, the reply is still there to read. */
    }
    char buf[1024];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    /* One refusal line, then EOF: no VM data. */
    return strstr(buf, "permission-denied") && !strstr(buf, "\"vms\"") ? 0 : 13;
}

static int run_as_nobody(const char *path, gboolean expect_reply)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
        _exit(child_connect(path, expect_reply));
    int status = 0;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

static void test_permissions(void)
{
    if (geteuid() != 0) {
        g_test_skip("needs root to switch to another uid");
        return;
    }
    g_autoptr(Daemon) d = daemon_new();
    /* Another user must be able to reach the socket's directory for the peer check to be the
     * thing that stops it. */
    g_assert_cmpint(chmod(d->dir, 0755), ==, 0);
    g_assert_cmpint(chmod(rig_tmpdir(), 0755), ==, 0);
    daemon_start(d, NULL);
    struct stat st;
    g_assert_cmpint(stat(d->sock, &st), ==, 0);
    g_assert_cmpuint(st.st_mode & 07777, ==, 0660);
    g_assert_cmpuint(st.st_gid, ==, getegid());
    /* The file mode keeps a stranger out... */
    g_assert_cmpint(run_as_nobody(d->sock, FALSE), ==, 0);
    /* ...and with the mode loosened by mistake, SO_PEERCRED still does. */
    g_assert_cmpint(chmod(d->sock, 0666), ==, 0);
    g_assert_cmpint(run_as_nobody(d->sock, TRUE), ==, 0);
    g_autoptr(json_object) m = call(d, "{\"op\":\"metrics\"}");
    g_assert_nonnull(strstr(str(m, "text"), "safe_migrated_client_rejects_total 1\n"));
    g_assert_cmpint(daemon_stop(d), ==, 0);

    /* Owner only. */
    const char *const owner_only[] = {"--socket-mode", "0600", NULL};
    daemon_start(d, owner_only);
    g_assert_cmpint(stat(d->sock, &st), ==, 0);
    g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
    /* A second daemon on the same socket refuses to start, and the first keeps serving. */
    g_autofree char *second = bin_path("safe-migrated");
    const char *argv[] = {second, "--config-dir", d->dir, "--socket", d->sock, NULL};
    g_autofree char *err = NULL;
    int status = 0;
    g_autoptr(GError) error = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                               NULL, &err, &status, &error));
    g_assert_false(g_spawn_check_wait_status(status, NULL));
    g_assert_nonnull(strstr(err, "another daemon is listening"));
    g_autoptr(json_object) hello = call(d, "{\"op\":\"hello\"}");
    g_assert_true(json_object_get_boolean(member(hello, "ok")));
    g_assert_cmpint(daemon_stop(d), ==, 0);
}

/* SIGHUP: a new file adds a VM, a removed file drops one, a broken file is reported and the
 * VM keeps its last good policy. */
static void test_reload(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair a = {0}, b = {0};
    pair_start(&a, RIG_QEMU_72, "ra", FALSE);
    pair_start(&b, RIG_QEMU_72, "rb", FALSE);
    pair_policy(d, &a, "ra", NULL);
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "ra", "connected", 10000));
    g_assert_null(list_vm(d, "rb"));

    pair_policy(d, &b, "rb", NULL);
    g_subprocess_send_signal(d->proc, SIGHUP);
    g_autofree char *n1 = notify_recv(d, 5000);
    g_assert_nonnull(strstr(n1, "RELOADING=1"));
    g_autofree char *n2 = notify_recv(d, 5000);
    g_assert_nonnull(strstr(n2, "READY=1"));
    json_object_put(wait_connection(d, "rb", "connected", 10000));

    daemon_write_vm(d, "ra", "[vm]\nsource-qmp=unix:/x\n[gate]\nbackof=1s\n");
    g_autofree char *rb = g_strdup_printf("%s/vms.d/rb.conf", d->dir);
    g_assert_cmpint(unlink(rb), ==, 0);
    g_autoptr(json_object) summary = call(d, "{\"op\":\"reload\"}");
    g_test_message("%s", json_object_to_json_string(summary));
    g_assert_cmpstr(
        json_object_get_string(json_object_array_get_idx(member(summary, "removed"), 0)), ==, "rb");
    g_assert_nonnull(
        strstr(json_object_get_string(json_object_array_get_idx(member(summary, "errors"), 0)),
               "ra.conf:4: [gate] backof: unknown key"));
    g_assert_null(list_vm(d, "rb"));
    g_autoptr(json_object) ra = list_vm(d, "ra");
    g_assert_cmpstr(str(ra, "connection"), ==, "connected");
    g_assert_nonnull(str(ra, "config_error"));
    g_assert_true(g_str_has_suffix(str(ra, "source_qmp"), rig_vm_sidecar_qmp_path(a.src)));
    g_assert_cmpint(daemon_stop(d), ==, 0);
    rig_pair_clear(&a);
    rig_pair_clear(&b);
}

/* SIGTERM to the daemon mid-migration: the migration is called off, its follower gets the
 * result, the VM runs on the source, the daemon exits cleanly. */
static void test_sigterm_mid_migration(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair p = {0};
    pair_start(&p, RIG_QEMU_72, "st", TRUE);
    make_ram_heavy(&p);
    pair_policy(d, &p, "st", "[migration]\nmax-bandwidth=2M\n");
    daemon_start(d, NULL);
    json_object_put(wait_connection(d, "st", "connected", 10000));
    g_autoptr(Client) c = client_new(d);
    client_send(c, "{\"op\":\"migrate\",\"vm\":\"st\"}");
    json_object_put(until_event(c, "progress", NULL));
    g_subprocess_send_signal(d->proc, SIGTERM);
    g_autoptr(json_object) result = until_event(c, "result", NULL);
    g_assert_cmpstr(str(result, "result"), ==, "interrupted");
    g_assert_cmpint(num(result, "exit_code"), ==, 143);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_subprocess_wait(d->proc, NULL, &error));
    g_assert_cmpint(g_subprocess_get_exit_status(d->proc), ==, 0);
    daemon_dump_log(d);
    assert_runstate(p.src, "running");
    rig_pair_clear(&p);
}

/* ---- The CLI as a client: safe-migrate --daemon SOCKET ---------------------------------- */

static int run_cli(Daemon *d, const char *const *args, char **out, char **err)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, bin_path("safe-migrate"));
    g_ptr_array_add(argv, g_strdup("--daemon"));
    g_ptr_array_add(argv, g_strdup(d->sock));
    for (guint i = 0; args[i]; i++)
        g_ptr_array_add(argv, g_strdup(args[i]));
    g_ptr_array_add(argv, NULL);
    int status = 0;
    g_autoptr(GError) error = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_DEFAULT, NULL, NULL, out,
                               err, &status, &error));
    g_assert_no_error(error);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_cli(void)
{
    g_autoptr(Daemon) d = daemon_new();
    Pair p = {0}, q = {0};
    pair_start(&p, RIG_QEMU_72, "cli", TRUE);
    pair_start(&q, RIG_QEMU_72, "cli2", TRUE);
    make_ram_heavy(&q);
    pair_policy(d, &p, "cli", NULL);
    pair_policy(d, &q, "cli2", NULL);
    const char *const metrics[] = {"--metrics-listen", "127.0.0.1:0", NULL};
    daemon_start(d, metrics);
    json_object_put(wait_connection(d, "cli", "connected", 10000));
    json_object_put(wait_connection(d, "cli2", "connected", 10000));

    g_autofree char *out = NULL, *err = NULL;
    const char *const list[] = {"list", NULL};
    g_assert_cmpint(run_cli(d, list, &out, &err), ==, 0);
    g_test_message("%s", out);
    g_assert_nonnull(strstr(out, "cli2"));
    g_assert_nonnull(strstr(out, "fix absent"));
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);

    /* Same event stream and exit code as the in-process run. */
    const char *const migrate[] = {"migrate", "--vm", "cli", "--json", NULL};
    g_assert_cmpint(run_cli(d, migrate, &out, &err), ==, 0);
    g_auto(GStrv) lines = g_strsplit(g_strstrip(out), "\n", -1);
    g_autoptr(json_object) first = json_tokener_parse(lines[0]);
    g_autoptr(json_object) last = json_tokener_parse(lines[g_strv_length(lines) - 1]);
    g_assert_cmpstr(str(first, "event"), ==, "start");
    g_assert_cmpstr(str(last, "event"), ==, "result");
    g_assert_cmpstr(str(last, "result"), ==, "migrated");
    assert_guest_moved(&p, FALSE);
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);

    /* Errors keep the CLI's exit codes. */
    const char *const unknown[] = {"migrate", "--vm", "nope", NULL};
    g_assert_cmpint(run_cli(d, unknown, &out, &err), ==, 2);
    g_assert_nonnull(strstr(err, "no VM 'nope'"));
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);
    const char *const bad[] = {"migrate", "--vm", "cli2", "--max-hold", "forever", NULL};
    g_assert_cmpint(run_cli(d, bad, &out, &err), ==, 2);
    g_assert_nonnull(strstr(err, "--max-hold"));
    g_clear_pointer(&out, g_free);
    g_clear_pointer(&err, g_free);

    /* Ctrl-C on the client cancels through the daemon: 130, the VM runs on the source. */
    g_autofree char *bin = bin_path("safe-migrate");
    g_autoptr(GError) error = NULL;
    g_autoptr(GSubprocess) cli =
        g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, bin, "--daemon", d->sock,
                         "migrate", "--vm", "cli2", "--max-bandwidth", "2M", "--json", NULL);
    g_assert_no_error(error);
    g_autoptr(GDataInputStream) in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(cli));
    for (;;) {
        g_autofree char *line = g_data_input_stream_read_line(in, NULL, NULL, NULL);
        g_assert_nonnull(line);
        if (strstr(line, "\"event\":\"progress\""))
            break;
    }
    g_subprocess_send_signal(cli, SIGINT);
    g_assert_true(g_subprocess_wait(cli, NULL, &error));
    g_assert_cmpint(g_subprocess_get_exit_status(cli), ==, 130);
    assert_runstate(q.src, "running");

    /* The metrics, over HTTP too. */
    g_autoptr(json_object) hello = call(d, "{\"op\":\"hello\"}");
    g_autoptr(GSocketClient) sc = g_socket_client_new();
    g_socket_client_set_enable_proxy(sc, FALSE); /* no libproxy lookups for a loopback address */
    g_autoptr(GSocketAddress) maddr =
        g_inet_socket_address_new_from_string("127.0.0.1", (guint)num(hello, "metrics_port"));
    g_autoptr(GSocketConnection) http =
        g_socket_client_connect(sc, G_SOCKET_CONNECTABLE(maddr), NULL, &error);
    g_assert_no_error(error);
    const char get[] = "GET /metrics HTTP/1.0\r\n\r\n";
    g_assert_true(g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(http)), get,
                                            strlen(get), NULL, NULL, &error));
    char body[16384];
    gsize got = 0;
    g_input_stream_read_all(g_io_stream_get_input_stream(G_IO_STREAM(http)), body, sizeof body - 1,
                            &got, NULL, &error);
    g_assert_no_error(error);
    body[got] = '\0';
    g_assert_true(g_str_has_prefix(body, "HTTP/1.0 200 OK"));
    g_assert_nonnull(
        strstr(body, "safe_migrated_migrations_total{result=\"migrated\",path=\"idle\"} 1"));
    g_assert_nonnull(
        strstr(body, "safe_migrated_migrations_total{result=\"interrupted\",path=\"none\"} 1"));
    g_assert_nonnull(strstr(body, "safe_migrated_probe_seconds_count"));

    g_assert_cmpint(daemon_stop(d), ==, 0);
    /* No daemon: unreachable. */
    const char *const after[] = {"list", NULL};
    g_assert_cmpint(run_cli(d, after, &out, &err), ==, 3);
    rig_pair_clear(&p);
    rig_pair_clear(&q);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/daemon/several-vms", test_several_vms);
    g_test_add_func("/daemon/hung-peer", test_hung_peer);
    g_test_add_func("/daemon/concurrent-migrations", test_concurrent);
    g_test_add_func("/daemon/vm-restart", test_vm_restart);
    g_test_add_data_func("/daemon/client-disconnect/continue", GINT_TO_POINTER(FALSE),
                         test_client_disconnect);
    g_test_add_data_func("/daemon/client-disconnect/cancel", GINT_TO_POINTER(TRUE),
                         test_client_disconnect);
    g_test_add_func("/daemon/socket-permissions", test_permissions);
    g_test_add_func("/daemon/sighup-reload", test_reload);
    g_test_add_func("/daemon/sigterm-mid-migration", test_sigterm_mid_migration);
    g_test_add_func("/daemon/cli", test_cli);
    return g_test_run();
}
