/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrate-filter: one per gated domain, started by the holder on libvirt's monitor
 * connection (fd 3) and QEMU's (fd 4). A byte-exact relay of libvirt's QMP, passed fds
 * included, except that it holds libvirt's `migrate` and `migrate-continue` for the gate,
 * keeps libvirt's `migrate_cancel` from QEMU once the switchover has begun, multiplexes
 * its own QMP client (the gate worker, on a private socket) onto QEMU's connection with
 * ids libvirt never sees, and hides the STOP/RESUME events its own captures cause. Its
 * argv carries "safe-migrate" and the domain name:
 *   safe-migrate-filter --domain NAME --config-dir DIR [--resume] */
#define G_LOG_DOMAIN "safe-migrate-filter"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "filter.h"
#include "qmp-wire.h"
#include "sm-config.h" /* SM_CONFIG_DIR, from meson's sysconfdir */

#define MAX_FDS 16
#define MAX_LINE (16u * 1024u * 1024u)
#define PARSE_LIMIT (64u * 1024u) /* longer QEMU lines are replies: libvirt's, never ours */
#define OUR_ID_PREFIX "sm-filter-"

/* The relay's fast path (relay_plain): a line is parsed only when it may hold one of its
 * side's words (qmp_line_may_hold: the word among its bytes, or an escape); any other line
 * goes from the read buffer to the other side untouched, with no copy, parse or allocation.
 * A line the filter is to act on must therefore name one of these: libvirt's commands held
 * for the gate (migrate, migrate-continue) or while switching (migrate_cancel); QEMU's
 * greeting, events (STOP/RESUME hidden, MIGRATION watched, all copied to the gate's client)
 * and replies to our commands (ids with OUR_ID_PREFIX). */
static const char *const libvirt_words[] = {"migrate", NULL};
static const char *const qemu_words[] = {"QMP", "event", OUR_ID_PREFIX, NULL};

/* Everything below runs on the main thread, which owns the default main context (main()
 * acquires it); the gate worker reaches it only through sm_gate_submit and on_gate_done. */
#define ASSERT_MAIN() g_assert(g_main_context_is_owner(g_main_context_default()))

typedef struct {
    char *data;
    gsize len;
    GArray *fds;            /* int, owned: sent with the line, then closed */
    json_object *client_id; /* the gate's lines: the id its client gave (ours replaced it) */
} Line;

typedef struct {
    const char *name;
    int fd;
    GByteArray *in;
    GArray *fds; /* received, not yet attached to a complete line */
    guint watch;
} Peer;

typedef struct {
    GMainLoop *loop;
    SmPolicy policy;
    gboolean gate_on;
    gboolean resume;
    Peer libvirt, qemu, probe;
    int probe_listen, control_listen;
    guint libvirt_inflight; /* libvirt commands forwarded and not yet answered */
    GQueue deferred;        /* libvirt lines waiting for our command or a held one */
    GQueue ours;            /* the worker's lines (ids rewritten) waiting for a free turn */
    char *our_id;           /* our command in flight at QEMU */
    json_object *client_id; /* the worker's own id for it */
    gboolean hide_events;   /* it may stop and resume the VM: hide STOP/RESUME */
    Line *held;             /* libvirt's command held for the gate, or its held cancel */
    json_object *held_id;
    gboolean held_cancel;  /* `held` is a migrate_cancel waiting for the switchover's end */
    gboolean switching;    /* libvirt's migrate-continue went to QEMU, its outcome unseen */
    guint switch_poll;     /* while a cancel waits: asks query-migrate (events may be off) */
    gboolean switch_asked; /* that query-migrate is queued or in flight */
    GBytes *greeting;
    SmReport *paused_report;
    char *paused_unread;        /* PRE_MIGRATE found the VM paused and could not probe it: why */
    gboolean at_pre_switchover; /* QEMU's last MIGRATION event said so */
    SmGate *gate;
    guint our_seq;
} Filter;

static void line_free(Line *line)
{
    if (!line)
        return;
    for (guint i = 0; line->fds && i < line->fds->len; i++)
        close(g_array_index(line->fds, int, i));
    if (line->fds)
        g_array_unref(line->fds);
    if (line->client_id)
        json_object_put(line->client_id);
    g_free(line->data);
    g_free(line);
}

static Line *line_new(const char *data, gsize len, GArray *fds)
{
    Line *line = g_new0(Line, 1);
    line->data = g_malloc(len + 1); /* NUL-terminated for the JSON parser, sent without it */
    memcpy(line->data, data, len);
    line->data[len] = 0;
    line->len = len;
    line->fds = fds;
    return line;
}

/* Blocking write of the whole buffer, fds with the first chunk (QEMU attaches received fds
 * to the monitor, and getfd takes the last one: the bytes that follow are what matters). */
static gboolean send_all(int fd, const char *data, gsize len, const GArray *fds)
{
    gsize done = 0;
    gboolean fds_sent = !fds || fds->len == 0;
    while (done < len) {
        struct iovec iov = {.iov_base = (char *)data + done, .iov_len = len - done};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        if (!fds_sent) {
            gsize bytes = sizeof(int) * fds->len;
            memset(control, 0, sizeof control);
            msg.msg_control = control;
            msg.msg_controllen = CMSG_SPACE(bytes);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(bytes);
            memcpy(CMSG_DATA(c), fds->data, bytes);
        }
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 100);
            continue;
        }
        if (n < 0)
            return FALSE;
        fds_sent = TRUE;
        done += (gsize)n;
    }
    return TRUE;
}

static void send_line(Filter *f, Peer *to, const Line *line)
{
    if (to->fd >= 0 && !send_all(to->fd, line->data, line->len, line->fds))
        g_warning("write to %s: %s", to->name, g_strerror(errno));
    (void)f;
}

/* Reads what is there; FALSE at EOF or error. */
static gboolean peer_read(Peer *p)
{
    char buf[65536];
    char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(p->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return TRUE;
    if (n <= 0)
        return FALSE;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        guint count = (guint)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        g_array_append_vals(p->fds, CMSG_DATA(c), count);
    }
    g_byte_array_append(p->in, (guint8 *)buf, (guint)n);
    return TRUE;
}

/* The length of the next complete line, 0 if none yet. An over-long partial line is passed
 * on as it is: nothing of ours is ever that long. */
static gsize peer_line_len(const Peer *p)
{
    const guint8 *nl = memchr(p->in->data, '\n', p->in->len);
    return nl ? (gsize)(nl - p->in->data) + 1 : (p->in->len > MAX_LINE ? p->in->len : 0);
}

/* The next `len` bytes as a Line, with the fds received so far. */
static Line *peer_take_line(Peer *p, gsize len)
{
    GArray *fds = NULL;
    if (p->fds->len) {
        fds = p->fds;
        p->fds = g_array_new(FALSE, FALSE, sizeof(int));
    }
    Line *line = line_new((char *)p->in->data, len, fds);
    g_byte_array_remove_range(p->in, 0, (guint)len);
    return line;
}

/* The line as a QMP message (libqmp's wire layer checks every member's type), NULL when it
 * is none or too long to be one of ours. */
static json_object *parse(const Line *line, QmpMessageKind *kind)
{
    if (line->len > PARSE_LIMIT) {
        if (kind)
            *kind = QMP_MESSAGE_INVALID;
        return NULL;
    }
    return qmp_message_parse(line->data, line->len, kind);
}

/* Sends one encoded line (qmp-wire.h) to `to`, then frees it. */
static void send_text(Peer *to, char *text)
{
    if (to->fd >= 0 && !send_all(to->fd, text, strlen(text), NULL))
        g_warning("write to %s: %s", to->name, g_strerror(errno));
    g_free(text);
}

/* ---- Persisted state: a held command survives a restart of the filter ------------------ */

static void save_held(Filter *f)
{
    g_autoptr(GError) error = NULL;
    if (!f->held)
        unlink(SM_LV_STATE);
    else if (!g_file_set_contents(SM_LV_STATE, f->held->data, (gssize)f->held->len, &error))
        g_warning("%s", error->message);
}

/* Tests: stop here once if SM_LV_FAULT names this phase ("hold": a held command saved). */
static void fault_point(const char *phase)
{
    g_autofree char *want = NULL;
    if (!g_file_get_contents(SM_LV_FAULT, &want, NULL, NULL) ||
        !g_str_equal(g_strstrip(want), phase))
        return;
    unlink(SM_LV_FAULT);
    raise(SIGSTOP);
}

/* ---- Turn-taking on QEMU's connection ----------------------------------------------------- */

static void from_libvirt(Filter *f, Line *line);

static void send_ours(Filter *f)
{
    Line *line = g_queue_pop_head(&f->ours);
    g_autoptr(json_object) cmd = parse(line, NULL);
    const char *exec = qmp_message_command(cmd);
    f->our_id = g_strdup(qmp_message_string_id(cmd));
    g_clear_pointer(&f->client_id, json_object_put);
    f->client_id = g_steal_pointer(&line->client_id);
    f->hide_events = exec && (g_str_equal(exec, "xen-save-devices-state") ||
                              g_str_equal(exec, "stop") || g_str_equal(exec, "cont"));
    /* A filter killed between the probe's stop and cont must not leave the VM paused: the
     * next one resumes it (restore()). */
    if (exec && g_str_equal(exec, "stop"))
        g_file_set_contents(SM_LV_STOPPED, "", 0, NULL);
    else if (exec && g_str_equal(exec, "cont"))
        unlink(SM_LV_STOPPED);
    send_line(f, &f->qemu, line);
    if (exec && g_str_equal(exec, "stop"))
        fault_point("probe-stopped");
    line_free(line);
}

/* Whoever may talk to QEMU next: libvirt's deferred lines first, then ours when libvirt has
 * nothing in flight (QEMU runs one command at a time, so events seen between our command
 * and its reply are ours). */
static void pump(Filter *f)
{
    ASSERT_MAIN();
    while (!f->our_id && !f->held && !g_queue_is_empty(&f->deferred))
        from_libvirt(f, g_queue_pop_head(&f->deferred));
    if (!f->our_id && f->libvirt_inflight == 0 && !g_queue_is_empty(&f->ours))
        send_ours(f);
}

/* ---- Once switching, never cancel -------------------------------------------------------- */

/* Once libvirt's migrate-continue has gone to QEMU, QEMU is switching over: the source is
 * stopped, its disks are inactivated and its device state sent under the BQL, and it
 * reports completed (the destination takes over) or failed. A migrate_cancel then
 * (`virsh domjobabort`, or libvirt's own error path) can no longer call the attempt off
 * cleanly: QEMU 7.2 runs it after the device state has gone out (migrate_fd_cancel then
 * reactivates the disks and resumes the source while the destination holds the whole
 * state), or finds the migration completed and does nothing, and answers "ok" either way;
 * a source QEMU 7.2 once died afterwards in bdrv_inactivate_recurse. So such a cancel is
 * held here, never sent, and answered when QEMU's outcome is seen (a MIGRATION event, or
 * our own query-migrate each second: a restarted filter, or events off): completed: a QMP
 * error saying why (libvirt's job then ends by that outcome: the destination runs);
 * failed or cancelled: the cancel goes to QEMU, which answers it (nothing left to cancel:
 * the source already runs again). Answering only then, not at once, is deliberate:
 * libvirt's error path (qemuMigrationSrcRun -> qemuMigrationSrcCancel) waits for the end
 * only when its cancel succeeds; an early error would let it send `cont` while QEMU is
 * still in finish-migrate, which 7.2 refuses, leaving the domain paused. Answered after
 * the end, that `cont` finds the source postmigrate and resumes it (qmp_cont reactivates
 * the disks), and the destination, never resumed, is torn down by libvirt: one side runs. */

static gboolean is_cancel(const char *exec)
{
    return exec && (g_str_equal(exec, "migrate_cancel") || g_str_equal(exec, "migrate-cancel"));
}

/* A migration status after which nothing is switching any more ("none": no migration). */
static gboolean switch_ended(const char *status)
{
    static const char *const ended[] = {"completed", "failed", "cancelled", "none", NULL};
    return status && g_strv_contains(ended, status);
}

/* Persisted, so that a filter restarted mid-switchover still holds a cancel back. */
static void set_switching(Filter *f, gboolean on)
{
    f->switching = on;
    if (on)
        g_file_set_contents(SM_LV_SWITCHING, "", 0, NULL);
    else
        unlink(SM_LV_SWITCHING);
}

/* The id of our own query-migrate: this process's (a dead filter's reply is dropped). */
static const char *switch_poll_id(void)
{
    static char id[64];
    if (!id[0])
        g_snprintf(id, sizeof id, OUR_ID_PREFIX "switch-%d", (int)getpid());
    return id;
}

static gboolean poll_switch(gpointer data)
{
    Filter *f = data;
    ASSERT_MAIN();
    if (!f->switching) { /* ended without us: a new `migrate` reset it */
        f->switch_poll = 0;
        return G_SOURCE_REMOVE;
    }
    if (!f->switch_asked) {
        g_autofree char *query = qmp_command_line("query-migrate", NULL, switch_poll_id());
        g_queue_push_tail(&f->ours, line_new(query, strlen(query), NULL));
        f->switch_asked = TRUE;
        pump(f);
    }
    return G_SOURCE_CONTINUE;
}

static void hold_cancel(Filter *f, Line *line, json_object *cmd)
{
    f->held = line;
    f->held_id = json_object_get(qmp_message_id(cmd));
    f->held_cancel = TRUE;
    save_held(f);
    g_warning("holding libvirt's %s: the migration is switching over; it is answered when "
              "QEMU reports the outcome",
              qmp_message_command(cmd));
    if (!f->switch_poll)
        f->switch_poll = g_timeout_add_seconds(1, poll_switch, f);
}

static void refuse_held(Filter *f, const char *message);

/* QEMU's outcome of the switchover: a held cancel is answered now. */
static void end_switching(Filter *f, const char *status)
{
    ASSERT_MAIN();
    if (!f->switching)
        return;
    g_info("the switchover ended: %s", status);
    set_switching(f, FALSE);
    if (f->switch_poll)
        g_source_remove(f->switch_poll);
    f->switch_poll = 0;
    if (!f->held || !f->held_cancel)
        return;
    Line *line = g_steal_pointer(&f->held);
    f->held_cancel = FALSE;
    if (g_str_equal(status, "completed")) {
        g_autofree char *msg = g_strdup_printf(
            "safe-migrate: migrate_cancel refused: the migration was switching over "
            "(migrate-continue sent) and cannot be cancelled; QEMU's outcome: %s, the domain "
            "runs on the destination",
            status);
        g_warning("%s", msg);
        refuse_held(f, msg);
    } else {
        f->libvirt_inflight++;
        send_line(f, &f->qemu, line);
    }
    line_free(line);
    g_clear_pointer(&f->held_id, json_object_put);
    save_held(f);
    pump(f);
}

/* ---- libvirt -> QEMU ---------------------------------------------------------------------- */

static void on_gate_done(SmGateJob *job, gpointer data);

static void hold(Filter *f, Line *line, json_object *cmd, SmGateJobKind kind)
{
    f->held = line;
    f->held_id = json_object_get(qmp_message_id(cmd));
    save_held(f);
    if (kind == SM_GATE_JOB_SWITCHOVER)
        fault_point("hold");
    SmGateJob *job = g_new0(SmGateJob, 1);
    job->kind = kind;
    job->client_fd = -1;
    if (kind == SM_GATE_JOB_SWITCHOVER) {
        job->paused_report = g_steal_pointer(&f->paused_report);
        job->paused_unread = g_steal_pointer(&f->paused_unread);
        job->at_pre_switchover = f->at_pre_switchover;
    }
    g_info("holding libvirt's %s for the gate",
           kind == SM_GATE_JOB_SWITCHOVER ? "migrate-continue" : "migrate");
    sm_gate_submit(f->gate, job);
}

/* A line of libvirt's that may name a gated command but is not one JSON object: QEMU's own
 * parser might still run a migrate from it (say after a NUL, or as the second object of the
 * line), so it is answered with an error, as QEMU answers what it cannot parse, and dropped. */
static void refuse_line(Filter *f, Line *line)
{
    g_warning("refusing a libvirt line that may name a migration command but is not one QMP "
              "command");
    send_text(&f->libvirt, qmp_reply_error_line(NULL, "GenericError",
                                                "safe-migrate: not one QMP command (a line that "
                                                "may name a migration command is gated)"));
    line_free(line);
}

static void from_libvirt(Filter *f, Line *line)
{
    ASSERT_MAIN();
    if (f->our_id || f->held) {
        g_queue_push_tail(&f->deferred, line);
        return;
    }
    if (f->gate_on && qmp_line_may_hold(line->data, line->len, libvirt_words)) {
        /* Parsed whatever its length: PARSE_LIMIT bounds QEMU's lines, not the owner's. */
        g_autoptr(json_object) cmd = qmp_message_parse(line->data, line->len, NULL);
        if (!cmd) { /* QEMU's parser may still find a migrate in it (a NUL, two objects) */
            refuse_line(f, line);
            return;
        }
        const char *exec = qmp_message_command(cmd);
        if (exec && g_str_equal(exec, "migrate-continue")) {
            hold(f, line, cmd, SM_GATE_JOB_SWITCHOVER);
            return;
        }
        if (exec && g_str_equal(exec, "migrate")) {
            set_switching(f, FALSE); /* a new migration: the last one's end was missed */
            hold(f, line, cmd, SM_GATE_JOB_PRE_MIGRATE);
            return;
        }
        if (f->switching && is_cancel(exec)) {
            hold_cancel(f, line, cmd);
            return;
        }
    }
    f->libvirt_inflight++;
    send_line(f, &f->qemu, line);
    line_free(line);
}

/* Answers the held command with a QMP error, as QEMU would. */
static void refuse_held(Filter *f, const char *message)
{
    send_text(&f->libvirt, qmp_reply_error_line(f->held_id, "GenericError", message));
}

static void on_gate_done(SmGateJob *job, gpointer data)
{
    Filter *f = data;
    ASSERT_MAIN();
    if (job->kind == SM_GATE_JOB_STATUS) {
        if (job->reply && !send_all(job->client_fd, job->reply, strlen(job->reply), NULL))
            g_debug("status client went away");
        close(job->client_fd);
        sm_gate_job_free(job);
        return;
    }
    if (job->kind == SM_GATE_JOB_RELEASE) {
        sm_gate_job_free(job);
        return;
    }
    g_return_if_fail(f->held);
    if (job->kind == SM_GATE_JOB_PRE_MIGRATE) {
        f->paused_report = g_steal_pointer(&job->paused_report);
        g_free(f->paused_unread);
        f->paused_unread = g_steal_pointer(&job->paused_unread);
    }
    Line *line = g_steal_pointer(&f->held);
    if (job->action == SM_GATE_PROCEED) {
        if (job->kind == SM_GATE_JOB_SWITCHOVER)
            set_switching(f, TRUE); /* before it goes: QEMU may answer at once */
        f->libvirt_inflight++;
        send_line(f, &f->qemu, line);
    } else {
        g_warning("%s", job->message);
        refuse_held(f, job->message); /* with the held command's id, cleared only after */
    }
    g_clear_pointer(&f->held_id, json_object_put);
    line_free(line);
    save_held(f);
    sm_gate_job_free(job);
    pump(f);
}

/* ---- QEMU -> libvirt ---------------------------------------------------------------------- */

/* QEMU's MIGRATION events: the gate then knows a migration waits at pre-switchover without a
 * query while the guest is stopped, and gives the capture's fd back when one ends without
 * its switchover (libvirt's abort, a failure). Returns the status that ended a switchover in
 * progress (borrowed from msg), else NULL. */
static const char *on_migration_event(Filter *f, json_object *msg)
{
    const char *s = qmp_message_inner_string(msg, "data", "status");
    if (!s)
        return NULL;
    f->at_pre_switchover = g_str_equal(s, "pre-switchover");
    if (f->gate && (g_str_equal(s, "cancelled") || g_str_equal(s, "failed"))) {
        SmGateJob *job = g_new0(SmGateJob, 1);
        job->kind = SM_GATE_JOB_RELEASE;
        job->client_fd = -1;
        sm_gate_submit(f->gate, job);
    }
    return f->switching && switch_ended(s) ? s : NULL;
}

/* Our reply: back to the worker under its own id. Replies to a previous incarnation's
 * commands (it was killed mid-command) are dropped: libvirt must never see our ids. */
static void our_reply(Filter *f, json_object *reply, const char *id)
{
    if (!f->our_id || !g_str_equal(id, f->our_id)) {
        g_info("dropping a reply to %s (not in flight)", id);
        return;
    }
    g_clear_pointer(&f->our_id, g_free);
    f->hide_events = FALSE;
    if (g_str_equal(id, switch_poll_id())) { /* ours alone: the worker never sees it */
        f->switch_asked = FALSE;
        const char *status = qmp_message_inner_string(reply, "return", "status");
        if (!status && json_object_object_get_ex(reply, "return", NULL))
            status = "none"; /* {"return": {}}: no migration at all */
        if (switch_ended(status))
            end_switching(f, status);
        return;
    }
    qmp_message_set_id(reply, f->client_id);
    g_clear_pointer(&f->client_id, json_object_put);
    send_text(&f->probe, qmp_message_encode(reply));
}

static void from_qemu(Filter *f, Line *line)
{
    ASSERT_MAIN();
    QmpMessageKind kind;
    g_autoptr(json_object) msg = parse(line, &kind);
    const char *ended = NULL; /* the MIGRATION status that ended a switchover */
    if (!msg) {               /* a long reply, or not JSON: libvirt's business */
        if (f->libvirt_inflight)
            f->libvirt_inflight--;
    } else if (kind == QMP_MESSAGE_GREETING) {
        g_clear_pointer(&f->greeting, g_bytes_unref);
        f->greeting = g_bytes_new(line->data, line->len);
        g_file_set_contents(SM_LV_GREETING, line->data, (gssize)line->len, NULL);
    } else if (kind == QMP_MESSAGE_EVENT) {
        const char *name = qmp_message_event(msg);
        gboolean run_event = name && (g_str_equal(name, "STOP") || g_str_equal(name, "RESUME"));
        /* The gate's client sees every event: its probe resumes a VM only on the STOP
         * event of its own stop. */
        send_line(f, &f->probe, line);
        if (run_event && f->hide_events) {
            g_info("hiding %s (caused by the gate's own capture)", name);
            return;
        }
        if (name && g_str_equal(name, "MIGRATION"))
            ended = on_migration_event(f, msg);
        if (name && g_str_equal(name, "RESUME")) { /* a verdict never outlives a RESUME */
            g_clear_pointer(&f->paused_report, sm_report_free);
            g_clear_pointer(&f->paused_unread, g_free);
        }
    } else { /* a reply (QEMU sends no commands), well-formed or not: whoever's id it bears
              * gets it, so that ours never reach libvirt and our client is never left
              * waiting (its typed layer refuses a malformed one) */
        const char *id = qmp_message_string_id(msg);
        if (id && g_str_has_prefix(id, OUR_ID_PREFIX)) {
            our_reply(f, msg, id);
            pump(f);
            return;
        }
        if (f->libvirt_inflight)
            f->libvirt_inflight--;
    }
    send_line(f, &f->libvirt, line);
    if (ended) /* after the event: libvirt learns the outcome before the cancel's answer */
        end_switching(f, ended);
    if (f->libvirt_inflight == 0)
        pump(f);
}

/* ---- The worker's QMP client, on the private probe socket --------------------------------- */

static void from_probe(Filter *f, Line *line)
{
    ASSERT_MAIN();
    g_autoptr(json_object) cmd = parse(line, NULL);
    const char *exec = qmp_message_command(cmd);
    if (!exec) {
        line_free(line);
        return;
    }
    json_object *id = qmp_message_id(cmd);
    if (g_str_equal(exec, "qmp_capabilities")) { /* libvirt negotiated the connection */
        send_text(&f->probe, qmp_reply_return_line(id, NULL));
        line_free(line);
        return;
    }
    json_object *client_id = json_object_get(id); /* set_id below drops cmd's reference */
    g_autofree char *ours = g_strdup_printf(OUR_ID_PREFIX "%d-%u", (int)getpid(), ++f->our_seq);
    g_autoptr(json_object) our_id = json_object_new_string(ours);
    qmp_message_set_id(cmd, our_id);
    g_autofree char *text = qmp_message_encode(cmd);
    Line *mine = line_new(text, strlen(text), g_steal_pointer(&line->fds));
    mine->client_id = client_id;
    g_queue_push_tail(&f->ours, mine);
    line_free(line);
    pump(f);
}

static void peer_close(Peer *p)
{
    if (p->watch)
        g_source_remove(p->watch);
    p->watch = 0;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

static gboolean on_readable(int fd, GIOCondition cond, gpointer data);

static void peer_watch(Filter *f, Peer *p, int fd)
{
    p->fd = fd;
    g_byte_array_set_size(p->in, 0);
    GSource *source = g_unix_fd_source_new(fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
    /* GLib blocks a source that may not recurse around each dispatch by taking its fd out of
     * the poll set and back, and each time signals the context's wakeup eventfd: two writes,
     * a read and an extra poll per relayed line (GLib 2.74, strace). Nothing here iterates
     * the default context from a callback (the gate's worker runs its own), so allowing
     * recursion changes nothing else. */
    g_source_set_can_recurse(source, TRUE);
    g_source_set_callback(source, G_SOURCE_FUNC(on_readable), f, NULL);
    p->watch = g_source_attach(source, NULL);
    g_source_unref(source);
}

/* Sends bytes of a read buffer (no fds) to `to`. */
static void send_bytes(Peer *to, const guint8 *data, gsize len)
{
    if (to->fd >= 0 && !send_all(to->fd, (const char *)data, len, NULL))
        g_warning("write to %s: %s", to->name, g_strerror(errno));
}

/* What a relayed command costs past this is the two extra wakeups (one per direction), on
 * purpose: no busy-polling or spinning for the reply (CPU taken from the QEMU and libvirt it
 * waits for, on hosts where they share cores), no raised priority (a sidecar must not
 * outrank the VM it serves; under contention its peers wait as long); unix sockets deliver
 * at once (nothing like TCP_NODELAY or SO_BUSY_POLL applies). bench/README.md has figures.
 *
 * The fast path: the next line of `p` (len bytes), when the filter has nothing to do with it
 * but pass it on, goes from the read buffer to the other side as it is. FALSE leaves it to
 * from_libvirt / from_qemu, whose decisions it must equal for such a line: libvirt's command
 * goes to QEMU when nothing is in the way (no command of ours or held one, nothing deferred)
 * and it cannot be migrate or migrate-continue; QEMU's line that is neither the greeting, an
 * event nor a reply to our id is a reply to libvirt (or not JSON: libvirt's business too). A
 * line with fds takes the Line path, which sends them with it. */
static gboolean relay_plain(Filter *f, Peer *p, gsize len)
{
    const guint8 *data = p->in->data;
    if (p->fds->len)
        return FALSE;
    if (p == &f->libvirt) {
        if (f->our_id || f->held || !g_queue_is_empty(&f->deferred) ||
            (f->gate_on && qmp_line_may_hold((const char *)data, len, libvirt_words)))
            return FALSE;
        f->libvirt_inflight++;
        send_bytes(&f->qemu, data, len);
    } else if (p == &f->qemu) {
        if (qmp_line_may_hold((const char *)data, len, qemu_words))
            return FALSE;
        if (f->libvirt_inflight)
            f->libvirt_inflight--;
        send_bytes(&f->libvirt, data, len);
    } else {
        return FALSE;
    }
    g_byte_array_remove_range(p->in, 0, (guint)len);
    if (p == &f->qemu && f->libvirt_inflight == 0)
        pump(f);
    return TRUE;
}

static gboolean on_readable(int fd, GIOCondition cond, gpointer data)
{
    Filter *f = data;
    Peer *p = fd == f->libvirt.fd ? &f->libvirt : fd == f->qemu.fd ? &f->qemu : &f->probe;
    (void)cond;
    if (!peer_read(p)) {
        if (p == &f->probe) {
            g_info("the gate's client disconnected");
            p->watch = 0;
            peer_close(p);
            return G_SOURCE_REMOVE;
        }
        g_info("%s closed the connection", p->name);
        g_main_loop_quit(f->loop);
        return G_SOURCE_CONTINUE;
    }
    gsize len;
    while (p->fd >= 0 && (len = peer_line_len(p))) {
        if (relay_plain(f, p, len))
            continue;
        Line *line = peer_take_line(p, len);
        if (p == &f->libvirt)
            from_libvirt(f, line);
        else if (p == &f->qemu)
            from_qemu(f, line), line_free(line);
        else
            from_probe(f, line);
    }
    return G_SOURCE_CONTINUE;
}

/* Only this process may be the gate's client: it reaches QEMU past libvirt. */
static gboolean on_probe_connect(int fd, GIOCondition cond, gpointer data)
{
    Filter *f = data;
    (void)cond;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (c < 0)
        return G_SOURCE_CONTINUE;
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid != getpid() ||
        !f->greeting || f->probe.fd >= 0) {
        close(c);
        return G_SOURCE_CONTINUE;
    }
    peer_watch(f, &f->probe, c);
    gsize glen;
    const char *g = g_bytes_get_data(f->greeting, &glen);
    send_all(c, g, glen, NULL);
    return G_SOURCE_CONTINUE;
}

/* `safe-migrate status`: one request line, one JSON reply line. */
static gboolean on_control_connect(int fd, GIOCondition cond, gpointer data)
{
    Filter *f = data;
    (void)cond;
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return G_SOURCE_CONTINUE;
    char buf[256];
    struct pollfd p = {.fd = c, .events = POLLIN};
    ssize_t n = poll(&p, 1, 1000) > 0 ? recv(c, buf, sizeof buf - 1, MSG_DONTWAIT) : -1;
    if (n <= 0 || strncmp(buf, "status", 6) != 0) {
        static const char bad[] = "{\"error\":\"unknown request (want: status)\"}\n";
        send_all(c, bad, sizeof bad - 1, NULL);
        close(c);
        return G_SOURCE_CONTINUE;
    }
    SmGateJob *job = g_new0(SmGateJob, 1);
    job->kind = SM_GATE_JOB_STATUS;
    job->client_fd = c;
    sm_gate_submit(f->gate, job);
    return G_SOURCE_CONTINUE;
}

static int listen_at(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    mode_t old = umask(0077);
    int ok = fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 4) == 0;
    umask(old);
    if (!ok && fd >= 0)
        close(fd), fd = -1;
    return fd;
}

/* A restarted filter picks up what the dead one held and QEMU's greeting. */
static void restore(Filter *f)
{
    gchar *text = NULL;
    gsize len = 0;
    if (g_file_get_contents(SM_LV_GREETING, &text, &len, NULL))
        f->greeting = g_bytes_new_take(text, len);
    if (f->resume && g_file_test(SM_LV_STOPPED, G_FILE_TEST_EXISTS)) {
        /* Queued here, not asked of the worker: it must reach QEMU before any libvirt
         * command does, so that libvirt never sees the VM paused (the worker connects first). */
        g_autofree char *cont = qmp_command_line("cont", NULL, OUR_ID_PREFIX "resume");
        g_warning("the previous filter died with the VM stopped for a probe: resuming it");
        g_queue_push_tail(&f->ours, line_new(cont, strlen(cont), NULL));
        pump(f); /* send_ours() removes the marker as the `cont` goes out */
    }
    /* Same QEMU (the directory goes with the domain), restarted filter or libvirtd: the
     * switchover may still run. Our query-migrate settles it either way. */
    if (g_file_test(SM_LV_SWITCHING, G_FILE_TEST_EXISTS)) {
        g_info("a previous filter saw the switchover start and not end");
        f->switching = TRUE;
        f->switch_poll = g_timeout_add_seconds(1, poll_switch, f);
    }
    if (f->resume && g_file_get_contents(SM_LV_STATE, &text, &len, NULL)) {
        g_info("taking up the command the previous filter held");
        from_libvirt(f, line_new(text, len, NULL));
        g_free(text);
    }
}

int main(int argc, char **argv)
{
    g_autofree char *domain = NULL, *config_dir = NULL;
    gboolean resume = FALSE;
    GOptionEntry entries[] = {
        {"domain", 0, 0, G_OPTION_ARG_STRING, &domain, "libvirt domain name", "NAME"},
        {"config-dir", 0, 0, G_OPTION_ARG_FILENAME, &config_dir, "Policy directory", "DIR"},
        {"resume", 0, 0, G_OPTION_ARG_NONE, &resume, "Taking over a live connection", NULL},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- safe-migrate's libvirt QMP filter");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error) || !domain ||
        fcntl(SM_LV_FD_LIBVIRT, F_GETFD) < 0 || fcntl(SM_LV_FD_QEMU, F_GETFD) < 0) {
        g_printerr("safe-migrate-filter: %s\n", error ? error->message : "needs --domain, fds 3 4");
        return SM_LV_FILTER_EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    g_main_context_acquire(NULL); /* ASSERT_MAIN: this thread owns the default context */
    Filter f = {.resume = resume, .probe_listen = -1, .control_listen = -1};
    sm_policy_init(&f.policy);
    /* A policy that does not load leaves a plain relay: the domain must stay reachable. */
    f.gate_on =
        sm_lv_load_policy(&f.policy, config_dir ? config_dir : SM_CONFIG_DIR, domain, &error);
    if (!f.gate_on)
        g_warning("gate off for %s: %s", domain, error->message);
    Peer *peers[] = {&f.libvirt, &f.qemu, &f.probe};
    const char *names[] = {"libvirt", "QEMU", "the gate"};
    for (guint i = 0; i < 3; i++) {
        peers[i]->name = names[i];
        peers[i]->fd = -1;
        peers[i]->in = g_byte_array_new();
        peers[i]->fds = g_array_new(FALSE, FALSE, sizeof(int));
    }
    f.loop = g_main_loop_new(NULL, FALSE);
    peer_watch(&f, &f.libvirt, SM_LV_FD_LIBVIRT);
    peer_watch(&f, &f.qemu, SM_LV_FD_QEMU);
    g_autofree char *cwd = g_get_current_dir();
    g_autofree char *probe_path = g_build_filename(cwd, SM_LV_PROBE_SOCK, NULL);
    f.probe_listen = listen_at(SM_LV_PROBE_SOCK);
    f.control_listen = listen_at(SM_LV_CONTROL_SOCK);
    if (f.probe_listen < 0 || f.control_listen < 0) {
        g_warning("gate off: cannot listen in %s: %s", cwd, g_strerror(errno));
        f.gate_on = FALSE;
    } else {
        g_unix_fd_add(f.probe_listen, G_IO_IN, on_probe_connect, &f);
        g_unix_fd_add(f.control_listen, G_IO_IN, on_control_connect, &f);
        f.gate = sm_gate_new(&f.policy, probe_path, NULL, on_gate_done, &f);
    }
    restore(&f);
    g_info("relaying for %s%s", domain, resume ? " (restarted)" : "");
    g_main_loop_run(f.loop);
    /* One side closed: close the other so that libvirt sees QEMU's end (and QEMU a new
     * client next time); the holder waits for the next connection. */
    return SM_LV_FILTER_EXIT_CLOSED;
}
