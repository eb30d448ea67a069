/* SPDX-License-Identifier: GPL-2.0-or-later */
/* `safe-migrate --daemon SOCKET ...`: the CLI as a client of safe-migrated's JSON-lines
 * control socket, with the same output and exit codes as the in-process commands. */
#include "commands.h"
#include "qmp-commands.h" /* qmp_json_string */
#include "qmp.h"          /* json_object autoptr */

#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

const char *sm_daemon_socket;

typedef struct {
    GSocketConnection *conn;
    GDataInputStream *in;
    GOutputStream *out;
    gint next_id;
} Conn;

static void conn_free(Conn *c)
{
    if (!c)
        return;
    g_clear_object(&c->in);
    if (c->conn)
        g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
    g_clear_object(&c->conn);
    g_free(c);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Conn, conn_free)

static Conn *conn_open(const char *prog)
{
    g_autoptr(GSocketClient) client = g_socket_client_new();
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(sm_daemon_socket);
    g_autoptr(GError) error = NULL;
    GSocketConnection *conn =
        g_socket_client_connect(client, G_SOCKET_CONNECTABLE(addr), NULL, &error);
    if (!conn) {
        g_printerr("%s: cannot reach safe-migrated at %s: %s\n", prog, sm_daemon_socket,
                   error->message);
        return NULL;
    }
    Conn *c = g_new0(Conn, 1);
    c->conn = conn;
    c->in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(conn)));
    c->out = g_io_stream_get_output_stream(G_IO_STREAM(conn));
    return c;
}

/* Sends a request (consumed) with a fresh id; returns the id. */
static gint conn_send(Conn *c, json_object *req, GError **error)
{
    gint id = ++c->next_id;
    json_object_object_add(req, "id", json_object_new_int(id));
    g_autofree char *line =
        g_strconcat(json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN), "\n", NULL);
    json_object_put(req);
    return g_output_stream_write_all(c->out, line, strlen(line), NULL, NULL, error) ? id : -1;
}

static json_object *parse_line(const char *line, GError **error)
{
    json_object *o = line ? json_tokener_parse(line) : NULL;
    if (!o && line)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "the daemon sent garbage");
    else if (!o && error && !*error)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED, "the daemon closed the connection");
    return o;
}

/* Blocking: the next line that is not a streamed event. */
static json_object *conn_reply(Conn *c, GError **error)
{
    for (;;) {
        g_autofree char *line = g_data_input_stream_read_line(c->in, NULL, NULL, error);
        json_object *o = parse_line(line, error);
        if (!o || !json_object_object_get_ex(o, "event", NULL))
            return o;
        json_object_put(o);
    }
}

static int int_of(json_object *o, const char *key, int fallback)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && v ? json_object_get_int(v) : fallback;
}

/* An error reply: prints it and returns its exit code. */
static int report_error(const char *prog, json_object *reply)
{
    json_object *e = json_object_object_get(reply, "error");
    g_printerr("%s: %s\n", prog,
               qmp_json_string(e, "message") ? qmp_json_string(e, "message") : "daemon error");
    return int_of(reply, "exit_code", SM_EXIT_FAILURE);
}

static gboolean reply_ok(json_object *reply)
{
    json_object *v;
    return json_object_object_get_ex(reply, "ok", &v) && json_object_get_boolean(v);
}

/* One request, one reply. Returns the reply or NULL (message printed, *code set). */
static json_object *call(const char *prog, json_object *req, int *code)
{
    g_autoptr(Conn) c = conn_open(prog);
    if (!c) {
        json_object_put(req);
        *code = SM_EXIT_UNREACHABLE;
        return NULL;
    }
    g_autoptr(GError) error = NULL;
    json_object *reply = NULL;
    if (conn_send(c, req, &error) < 0 || !(reply = conn_reply(c, &error))) {
        g_printerr("%s: %s\n", prog, error->message);
        *code = SM_EXIT_UNREACHABLE;
        return NULL;
    }
    if (!reply_ok(reply)) {
        *code = report_error(prog, reply);
        json_object_put(reply);
        return NULL;
    }
    *code = SM_EXIT_OK;
    return reply;
}

/* ---- migrate ---------------------------------------------------------------------------- */

typedef struct {
    Conn *conn;
    GMainLoop *loop;
    SmEventFunc func;
    gpointer data;
    char *migration;
    int pending_signal, cancel_sent;
    int code;
    gboolean got_result;
} Run;

static void send_cancel(Run *r)
{
    if (!r->migration || !r->pending_signal || r->cancel_sent)
        return;
    json_object *req = json_object_new_object();
    json_object_object_add(req, "op", json_object_new_string("cancel"));
    json_object_object_add(req, "migration", json_object_new_string(r->migration));
    json_object_object_add(req, "signal", json_object_new_int(r->pending_signal));
    g_autoptr(GError) error = NULL;
    if (conn_send(r->conn, req, &error) < 0)
        g_printerr("safe-migrate migrate: cannot ask the daemon to cancel: %s\n", error->message);
    r->cancel_sent = r->pending_signal;
}

static gboolean on_signal(gpointer data)
{
    Run *r = ((gpointer *)data)[0];
    r->pending_signal = GPOINTER_TO_INT(((gpointer *)data)[1]);
    send_cancel(r);
    return G_SOURCE_CONTINUE;
}

static void on_line(GObject *source, GAsyncResult *res, gpointer data)
{
    Run *r = data;
    g_autoptr(GError) error = NULL;
    g_autofree char *line =
        g_data_input_stream_read_line_finish(G_DATA_INPUT_STREAM(source), res, NULL, &error);
    g_autoptr(json_object) o = parse_line(line, &error);
    if (!o) {
        /* The daemon went away mid-way: only it knew how the migration stood. */
        g_printerr("safe-migrate migrate: %s before the migration's result; check the VM "
                   "(safe-migrate --daemon %s list)\n",
                   error->message, sm_daemon_socket);
        r->code = r->migration ? SM_EXIT_UNCERTAIN : SM_EXIT_UNREACHABLE;
        g_main_loop_quit(r->loop);
        return;
    }
    json_object *event = NULL;
    if (json_object_object_get_ex(o, "event", &event)) {
        r->func(event, r->data);
        if (g_strcmp0(qmp_json_string(event, SM_EVENT_KEY_EVENT), SM_EVENT_RESULT) == 0) {
            r->code = int_of(event, SM_EVENT_KEY_EXIT_CODE, SM_EXIT_UNCERTAIN);
            r->got_result = TRUE;
            g_main_loop_quit(r->loop);
            return;
        }
    } else if (int_of(o, "id", 0) == 1) {
        if (!reply_ok(o)) {
            r->code = report_error("safe-migrate migrate", o);
            g_main_loop_quit(r->loop);
            return;
        }
        r->migration = g_strdup(qmp_json_string(o, "migration"));
        send_cancel(r);
    } else if (!reply_ok(o)) {
        /* A refused cancel (the migration had just ended): its result is on the way. */
        json_object *e = json_object_object_get(o, "error");
        g_printerr("safe-migrate migrate: cancel: %s\n", qmp_json_string(e, "message"));
    }
    g_data_input_stream_read_line_async(r->conn->in, G_PRIORITY_DEFAULT, NULL, on_line, r);
}

int sm_daemon_migrate(const char *vm, json_object *options, SmEventFunc func, gpointer data)
{
    g_autoptr(Conn) c = conn_open("safe-migrate migrate");
    if (!c) {
        json_object_put(options);
        return SM_EXIT_UNREACHABLE;
    }
    json_object *req = json_object_new_object();
    json_object_object_add(req, "op", json_object_new_string("migrate"));
    json_object_object_add(req, "vm", json_object_new_string(vm));
    json_object_object_add(req, "options", options);
    g_autoptr(GError) error = NULL;
    if (conn_send(c, req, &error) < 0) {
        g_printerr("safe-migrate migrate: %s\n", error->message);
        return SM_EXIT_UNREACHABLE;
    }
    Run r = {.conn = c, .func = func, .data = data, .code = SM_EXIT_UNCERTAIN};
    r.loop = g_main_loop_new(NULL, FALSE);
    /* Ctrl-C asks the daemon to call the migration off, then waits for its result, as the
     * in-process run does: the exit code is the engine's (130/143). */
    gpointer int_data[2] = {&r, GINT_TO_POINTER(SIGINT)};
    gpointer term_data[2] = {&r, GINT_TO_POINTER(SIGTERM)};
    guint sigint = g_unix_signal_add(SIGINT, on_signal, int_data);
    guint sigterm = g_unix_signal_add(SIGTERM, on_signal, term_data);
    g_data_input_stream_read_line_async(c->in, G_PRIORITY_DEFAULT, NULL, on_line, &r);
    g_main_loop_run(r.loop);
    g_source_remove(sigint);
    g_source_remove(sigterm);
    /* Let a pending read see the closed stream before the loop goes. */
    g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
    while (g_main_context_iteration(NULL, FALSE))
        ;
    g_main_loop_unref(r.loop);
    g_free(r.migration);
    return r.code;
}

/* ---- status, list, cancel, recover ------------------------------------------------------ */

static const char *or_dash(const char *s)
{
    return s ? s : "-";
}

/* The number of elements of an array, 0 for anything else (a daemon reply of the wrong
 * shape must not trip json-c's assertion). */
static size_t array_length(json_object *a)
{
    return json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

static void print_devices_table(json_object *devices)
{
    printf("%-28s %-8s %-5s %-32s %s\n", "DEVICE", "STATE", "SAFE", "PENDING", "FIX");
    for (size_t i = 0; i < array_length(devices); i++) {
        json_object *d = json_object_array_get_idx(devices, i);
        json_object *pending = json_object_object_get(d, "pending");
        const char *what = NULL;
        if (pending && json_object_is_type(pending, json_type_object))
            what = qmp_json_string(pending, "name");
        json_object *safe = json_object_object_get(d, "safe");
        printf("%-28s %-8s %-5s %-32s %s\n",
               qmp_json_string(d, "id") ? qmp_json_string(d, "id")
                                        : or_dash(qmp_json_string(d, "qom_path")),
               or_dash(qmp_json_string(d, "state")),
               safe && json_object_get_boolean(safe) ? "yes" : "no",
               what ? what : or_dash(qmp_json_string(d, "mode")),
               or_dash(qmp_json_string(d, "fix")));
    }
}

static char *opt_vm, *opt_migration;
static gboolean opt_json, opt_probe;

static gboolean parse(int *argc, char ***argv, const GOptionEntry *entries, const char *what)
{
    g_autoptr(GOptionContext) ctx = g_option_context_new(what);
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_summary(ctx,
                                 "Exit codes: 0 done, 1 the daemon refused or failed, 2 usage,\n"
                                 "3 the daemon or the VM unreachable.");
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, argc, argv, &error)) {
        g_printerr("%s: %s\n", (*argv)[0], error->message);
        return FALSE;
    }
    if (*argc > 1) {
        g_printerr("%s: unexpected argument '%s'\n", (*argv)[0], (*argv)[1]);
        return FALSE;
    }
    return TRUE;
}

static json_object *request(const char *op)
{
    json_object *req = json_object_new_object();
    json_object_object_add(req, "op", json_object_new_string(op));
    if (opt_vm)
        json_object_object_add(req, "vm", json_object_new_string(opt_vm));
    if (opt_migration)
        json_object_object_add(req, "migration", json_object_new_string(opt_migration));
    return req;
}

static void print_json(json_object *o)
{
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE));
}

int sm_daemon_cmd_status(int argc, char **argv)
{
    const GOptionEntry entries[] = {
        {"vm", 0, 0, G_OPTION_ARG_STRING, &opt_vm, "The VM, as the daemon names it", "NAME"},
        {"json", 'j', 0, G_OPTION_ARG_NONE, &opt_json, "Print one JSON object", NULL},
        G_OPTION_ENTRY_NULL,
    };
    if (!parse(&argc, &argv, entries, "- probe one VM through the daemon"))
        return SM_EXIT_USAGE;
    if (!opt_vm) {
        g_printerr("usage: safe-migrate --daemon SOCKET status --vm NAME [--json]\n");
        return SM_EXIT_USAGE;
    }
    int code;
    g_autoptr(json_object) reply = call(argv[0], request("status"), &code);
    if (!reply)
        return code;
    json_object *report = json_object_object_get(reply, "report");
    if (opt_json) {
        print_json(report);
    } else {
        printf("%s: QEMU %s, device state %d bytes\n", opt_vm,
               or_dash(qmp_json_string(report, "qemu")), int_of(report, "stream_bytes", 0));
        print_devices_table(json_object_object_get(report, "devices"));
    }
    return SM_EXIT_OK;
}

int sm_cmd_list(int argc, char **argv)
{
    const GOptionEntry entries[] = {
        {"probe", 0, 0, G_OPTION_ARG_NONE, &opt_probe,
         "Also capture each VM's device state (stops each VM for about a millisecond)", NULL},
        {"json", 'j', 0, G_OPTION_ARG_NONE, &opt_json, "Print one JSON object", NULL},
        G_OPTION_ENTRY_NULL,
    };
    if (!parse(&argc, &argv, entries, "- the daemon's VMs, their USB storage and fix state"))
        return SM_EXIT_USAGE;
    if (!sm_daemon_socket) {
        g_printerr("safe-migrate list: needs --daemon SOCKET\n");
        return SM_EXIT_USAGE;
    }
    json_object *req = request("list");
    json_object_object_add(req, "probe", json_object_new_boolean(opt_probe));
    int code;
    g_autoptr(json_object) reply = call(argv[0], req, &code);
    if (!reply)
        return code;
    json_object *vms = json_object_object_get(reply, "vms");
    if (opt_json) {
        g_autoptr(json_object) o = json_object_new_object();
        json_object_object_add(o, "vms", json_object_get(vms));
        print_json(o);
        return SM_EXIT_OK;
    }
    printf("%-16s %-13s %-13s %-8s %-10s %s\n", "VM", "CONNECTION", "RUNSTATE", "QEMU", "MIGRATION",
           "USB STORAGE");
    for (size_t i = 0; i < array_length(vms); i++) {
        json_object *vm = json_object_array_get_idx(vms, i);
        json_object *report = json_object_object_get(vm, "report");
        json_object *devices = json_object_object_get(report ? report : vm, "devices");
        GString *devs = g_string_new(NULL);
        for (size_t j = 0; j < array_length(devices); j++) {
            json_object *d = json_object_array_get_idx(devices, j);
            g_string_append_printf(devs, "%s%s (fix %s%s%s)", j ? ", " : "",
                                   qmp_json_string(d, "id")
                                       ? qmp_json_string(d, "id")
                                       : or_dash(qmp_json_string(d, "qom_path")),
                                   or_dash(qmp_json_string(d, "fix")), report ? ", " : "",
                                   report ? or_dash(qmp_json_string(d, "state")) : "");
        }
        if (!report && qmp_json_string(vm, "probe_error")) /* e.g. someone else's migration */
            g_string_append_printf(devs, "%snot probed: %s", devs->len ? "; " : "",
                                   qmp_json_string(vm, "probe_error"));
        if (qmp_json_string(vm, "config_error"))
            g_string_append_printf(devs, "%spolicy: %s", devs->len ? "; " : "",
                                   qmp_json_string(vm, "config_error"));
        printf("%-16s %-13s %-13s %-8s %-10s %s\n", qmp_json_string(vm, "name"),
               or_dash(qmp_json_string(vm, "connection")), or_dash(qmp_json_string(vm, "runstate")),
               or_dash(qmp_json_string(vm, "qemu_version")),
               or_dash(qmp_json_string(vm, "migration")), devs->str);
        g_string_free(devs, TRUE);
    }
    return SM_EXIT_OK;
}

int sm_cmd_cancel(int argc, char **argv)
{
    const GOptionEntry entries[] = {
        {"vm", 0, 0, G_OPTION_ARG_STRING, &opt_vm, "Cancel this VM's migration", "NAME"},
        {"migration", 0, 0, G_OPTION_ARG_STRING, &opt_migration, "Cancel this migration", "ID"},
        G_OPTION_ENTRY_NULL,
    };
    if (!parse(&argc, &argv, entries, "- call a daemon's migration off (the VM stays put)"))
        return SM_EXIT_USAGE;
    if (!sm_daemon_socket || (!opt_vm == !opt_migration)) {
        g_printerr("usage: safe-migrate --daemon SOCKET cancel (--vm NAME | --migration ID)\n");
        return SM_EXIT_USAGE;
    }
    int code;
    g_autoptr(json_object) reply = call(argv[0], request("cancel"), &code);
    if (reply)
        printf("cancel requested for %s\n", qmp_json_string(reply, "migration"));
    return code;
}

int sm_daemon_cmd_recover(int argc, char **argv)
{
    const GOptionEntry entries[] = {
        {"vm", 0, 0, G_OPTION_ARG_STRING, &opt_vm, "The VM, as the daemon names it", "NAME"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "Print one JSON object", NULL},
        G_OPTION_ENTRY_NULL,
    };
    if (!parse(&argc, &argv, entries, "- release a VM through the daemon"))
        return SM_EXIT_USAGE;
    if (!opt_vm) {
        g_printerr("usage: safe-migrate --daemon SOCKET recover --vm NAME [--json]\n");
        return SM_EXIT_USAGE;
    }
    int code;
    g_autoptr(json_object) reply = call(argv[0], request("recover"), &code);
    if (!reply)
        return code;
    code = int_of(reply, "exit_code", SM_EXIT_UNCERTAIN);
    if (opt_json) {
        g_autoptr(json_object) o = json_object_new_object();
        json_object_object_add(o, "exit_code", json_object_new_int(code));
        if (qmp_json_string(reply, "summary"))
            json_object_object_add(o, "summary",
                                   json_object_new_string(qmp_json_string(reply, "summary")));
        if (qmp_json_string(reply, "error"))
            json_object_object_add(o, "error",
                                   json_object_new_string(qmp_json_string(reply, "error")));
        print_json(o);
    } else if (qmp_json_string(reply, "error")) {
        g_printerr("safe-migrate recover: %s\n", qmp_json_string(reply, "error"));
    } else {
        printf("%s\n", or_dash(qmp_json_string(reply, "summary")));
    }
    return code;
}
