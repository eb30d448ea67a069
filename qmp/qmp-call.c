/* SPDX-License-Identifier: GPL-2.0-or-later */
/* qmp-call: runs one QMP command against a QEMU monitor socket and prints the reply.
 * Exit status: 0 success, 1 QMP or runtime error, 2 usage, 3 cannot connect. */
#include "qmp.h"
#include "sm-config.h" /* SM_VERSION */

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>

enum { EXIT_QMP = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3 };

static void print_json(json_object *obj)
{
    puts(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                 JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* --fd N...: descriptors this process inherited, passed with the command. */
static gboolean parse_fds(char **fd_strs, GArray *fds)
{
    for (guint i = 0; fd_strs && fd_strs[i]; i++) {
        guint64 n;
        g_autoptr(GError) error = NULL;
        if (!g_ascii_string_to_unsigned(fd_strs[i], 10, 0, G_MAXINT, &n, &error)) {
            g_printerr("qmp-call: --fd %s: %s\n", fd_strs[i], error->message);
            return FALSE;
        }
        int fd = (int)n; /* the array holds ints: append one, not the low bytes of a guint64 */
        g_array_append_val(fds, fd);
    }
    return TRUE;
}

/* JSON-ARGS: a JSON object, or NULL with the message printed. */
static json_object *parse_args(const char *text)
{
    enum json_tokener_error jerr = json_tokener_success;
    json_object *args = json_tokener_parse_verbose(text, &jerr);
    if (!args || !json_object_is_type(args, json_type_object)) {
        g_printerr("qmp-call: JSON-ARGS must be a JSON object (%s)\n",
                   args ? "wrong type" : json_tokener_error_desc(jerr));
        json_object_put(args);
        return NULL;
    }
    return args;
}

/* The command, its reply printed, then the awaited event if any; the exit code. */
static int call(const char *address, const char *command, json_object *args, GArray *fds,
                const char *wait_event, guint timeout_ms)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpClient) client = qmp_client_connect(address, timeout_ms, &error);
    if (!client) {
        g_printerr("qmp-call: %s\n", error->message);
        return g_error_matches(error, QMP_ERROR, QMP_ERROR_ADDRESS) ? EXIT_USAGE : EXIT_CONNECT;
    }
    guint wait_ms = timeout_ms ? timeout_ms : G_MAXUINT;
    g_autoptr(json_object) reply = qmp_client_execute_full(
        client, command, args, (const int *)(void *)fds->data, fds->len, wait_ms, &error);
    if (!reply) {
        if (!error) /* libqmp guarantees one; a missing error must still not crash us */
            g_set_error_literal(&error, QMP_ERROR, QMP_ERROR_PROTOCOL, "no reply and no error");
        const char *klass = qmp_error_get_class(error);
        if (klass)
            g_printerr("qmp-call: %s: %s\n", klass, error->message);
        else
            g_printerr("qmp-call: %s\n", error->message);
        return EXIT_QMP;
    }
    print_json(reply);
    if (wait_event) {
        g_autoptr(json_object) ev = qmp_client_wait_event(client, wait_event, wait_ms, &error);
        if (!ev) {
            g_printerr("qmp-call: %s\n", error->message);
            return EXIT_QMP;
        }
        print_json(ev);
    }
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    gint timeout_ms = 30000;
    g_auto(GStrv) fd_strs = NULL;
    g_autofree char *wait_event = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) args = NULL;
    g_autoptr(GArray) fds = g_array_new(FALSE, FALSE, sizeof(int));
    gboolean version = FALSE;
    const GOptionEntry entries[] = {
        {"timeout", 't', 0, G_OPTION_ARG_INT, &timeout_ms,
         "Timeout in ms for connecting and for the command (default 30000, 0 = none)", "MS"},
        {"fd", 0, 0, G_OPTION_ARG_STRING_ARRAY, &fd_strs,
         "Pass inherited file descriptor N with the command (repeatable)", "N"},
        {"wait-event", 0, 0, G_OPTION_ARG_STRING, &wait_event,
         "After the command succeeds, wait for event NAME and print it too", "NAME"},
        {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL},
        G_OPTION_ENTRY_NULL,
    };

    setlocale(LC_ALL, ""); /* GLib's messages and quotes; numbers stay C (JSON) */
    setlocale(LC_NUMERIC, "C");
    g_autoptr(GOptionContext) ctx =
        g_option_context_new("ADDRESS COMMAND [JSON-ARGS] - run one QMP command");
    g_option_context_set_description(ctx,
                                     "ADDRESS is unix:PATH, tcp:HOST:PORT or a socket path.\n"
                                     "Exit codes: 0 ok, 1 QMP error, 2 usage, 3 cannot connect.");
    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        g_printerr("qmp-call: %s\n", error->message);
        return EXIT_USAGE;
    }
    if (version) {
        printf("qmp-call %s\n", SM_VERSION);
        return 0;
    }
    if (argc < 3 || argc > 4 || timeout_ms < 0) {
        g_autofree char *help = g_option_context_get_help(ctx, TRUE, NULL);
        g_printerr("%s", help);
        return EXIT_USAGE;
    }
    if (!parse_fds(fd_strs, fds) || (argc == 4 && !(args = parse_args(argv[3]))))
        return EXIT_USAGE;
    return call(argv[1], argv[2], args, fds, wait_event, (guint)timeout_ms);
}
