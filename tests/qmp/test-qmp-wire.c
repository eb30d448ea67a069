/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp's wire messages (qmp-wire.h), as a relay sees them: hostile and wrong-typed lines
 * classify as INVALID or read as absent members, never crash or reach a json-c assert; the
 * lines it encodes parse back to what was meant, whatever the id's type and the text. */
#include "qmp-wire.h"

#include <string.h>

typedef struct {
    const char *line;
    QmpMessageKind kind;
    const char *command, *event, *id; /* what the typed readers must return */
} Case;

static const Case cases[] = {
    {"{\"QMP\":{\"version\":{},\"capabilities\":[]}}\r\n", QMP_MESSAGE_GREETING, NULL, NULL, NULL},
    {"{\"QMP\":7}", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"{\"event\":\"STOP\",\"timestamp\":{}}\r\n", QMP_MESSAGE_EVENT, NULL, "STOP", NULL},
    {"{\"event\":5}", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"{\"event\":null,\"return\":{}}", QMP_MESSAGE_REPLY, NULL, NULL, NULL},
    {"{\"execute\":\"migrate\",\"id\":\"libvirt-12\"}", QMP_MESSAGE_COMMAND, "migrate", NULL,
     "libvirt-12"},
    {"{\"exec-oob\":\"migrate-pause\"}", QMP_MESSAGE_COMMAND, "migrate-pause", NULL, NULL},
    {"{\"execute\":[\"migrate\"],\"id\":1}", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"{\"execute\":\"cont\",\"id\":{\"a\":1}}", QMP_MESSAGE_COMMAND, "cont", NULL, NULL},
    {"{\"return\":{},\"id\":\"sm-filter-1\"}", QMP_MESSAGE_REPLY, NULL, NULL, "sm-filter-1"},
    {"{\"return\":null}", QMP_MESSAGE_REPLY, NULL, NULL, NULL},
    {"{\"return\":{},\"id\":42}", QMP_MESSAGE_REPLY, NULL, NULL, NULL},
    {"{\"error\":{\"class\":\"GenericError\",\"desc\":\"x\"}}", QMP_MESSAGE_REPLY, NULL, NULL,
     NULL},
    {"{\"error\":\"oops\"}", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"{\"error\":{},\"return\":{}}", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"{}", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"[]", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"\"return\"", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"null", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"12", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"{\"return\":{}", QMP_MESSAGE_INVALID, NULL, NULL, NULL},                 /* cut short */
    {"{\"return\":{}}{\"return\":{}}", QMP_MESSAGE_INVALID, NULL, NULL, NULL}, /* two on one line */
    {"{\"return\":{}} x", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
    {"\x01\xff{\"execute\"", QMP_MESSAGE_INVALID, NULL, NULL, NULL},
};

static void test_classify(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        const Case *c = &cases[i];
        QmpMessageKind kind = (QmpMessageKind)-1;
        json_object *msg = qmp_message_parse(c->line, strlen(c->line), &kind);
        g_autofree char *shown = g_strescape(c->line, NULL); /* TAP output must stay UTF-8 */
        g_test_message("%s -> %d", shown, kind);
        g_assert_cmpint(kind, ==, c->kind);
        g_assert_cmpint(qmp_message_kind(msg), ==, kind);
        g_assert_cmpstr(qmp_message_command(msg), ==, c->command);
        g_assert_cmpstr(qmp_message_event(msg), ==, c->event);
        g_assert_cmpstr(qmp_message_string_id(msg), ==, c->id);
        json_object_put(msg);
    }
    /* A NUL inside the line: not one message. Nesting deeper than json-c's limit: none. */
    static const char nul[] = "{\"return\":{}}\0{\"return\":{}}";
    g_assert_null(qmp_message_parse(nul, sizeof nul - 1, NULL));
    g_autoptr(GString) deep = g_string_new("{\"return\":");
    for (int i = 0; i < 200; i++)
        g_string_append_c(deep, '[');
    for (int i = 0; i < 200; i++)
        g_string_append_c(deep, ']');
    g_string_append_c(deep, '}');
    QmpMessageKind deep_kind;
    g_assert_null(qmp_message_parse(deep->str, deep->len, &deep_kind));
    g_assert_cmpint(deep_kind, ==, QMP_MESSAGE_INVALID);
    /* Not NUL-terminated: only `len` bytes are read. */
    static const char partial[] = "{\"return\":{}}GARBAGE";
    g_autoptr(json_object) msg = qmp_message_parse(partial, 13, NULL);
    g_assert_cmpint(qmp_message_kind(msg), ==, QMP_MESSAGE_REPLY);
    g_assert_cmpint(qmp_message_kind(NULL), ==, QMP_MESSAGE_INVALID);
}

/* What a relay writes parses back to what it meant: any id type, any text in a desc. */
static void test_encode(void)
{
    static const char *const ids[] = {"\"libvirt-7\"", "42", "{\"a\":[1,2]}", "null", NULL};
    static const char hostile[] = "held \"x\"\r\n{\"return\":{}}\n\t\\ end";
    for (guint i = 0; ids[i]; i++) {
        g_autoptr(json_object) id = json_tokener_parse(ids[i]);
        g_autofree char *err = qmp_reply_error_line(id, NULL, hostile);
        g_autofree char *ret = qmp_reply_return_line(id, NULL);
        g_test_message("%s | %s", err, ret);
        for (const char *line = err; line; line = line == err ? ret : NULL) {
            /* One line: the only newline is the terminator. */
            g_assert_true(g_str_has_suffix(line, "\r\n"));
            g_assert_null(memchr(line, '\n', strlen(line) - 1));
            QmpMessageKind kind;
            g_autoptr(json_object) back = qmp_message_parse(line, strlen(line), &kind);
            g_assert_cmpint(kind, ==, QMP_MESSAGE_REPLY);
            json_object *back_id = qmp_message_id(back);
            g_assert_true(json_object_equal(back_id, id));
        }
        g_autoptr(json_object) back = qmp_message_parse(err, strlen(err), NULL);
        json_object *e = json_object_object_get(back, "error");
        g_assert_cmpstr(json_object_get_string(json_object_object_get(e, "desc")), ==, hostile);
        g_assert_cmpstr(json_object_get_string(json_object_object_get(e, "class")), ==,
                        "GenericError");
    }
    g_autoptr(json_object) args = json_tokener_parse("{\"filename\":\"/dev/fdset/1\"}");
    g_autofree char *cmd = qmp_command_line("xen-save-devices-state", args, "sm-filter-1-\"2");
    g_autoptr(json_object) back = qmp_message_parse(cmd, strlen(cmd), NULL);
    g_assert_cmpint(qmp_message_kind(back), ==, QMP_MESSAGE_COMMAND);
    g_assert_cmpstr(qmp_message_command(back), ==, "xen-save-devices-state");
    g_assert_cmpstr(qmp_message_string_id(back), ==, "sm-filter-1-\"2");
    g_assert_true(json_object_equal(json_object_object_get(back, "arguments"), args));
}

/* Replacing an id with itself, another type, or nothing. */
static void test_set_id(void)
{
    g_autoptr(json_object) msg = json_tokener_parse("{\"execute\":\"stop\",\"id\":\"a\"}");
    qmp_message_set_id(msg, qmp_message_id(msg)); /* the same object: must survive */
    g_assert_cmpstr(qmp_message_string_id(msg), ==, "a");
    g_autoptr(json_object) n = json_object_new_int(9);
    qmp_message_set_id(msg, n);
    g_assert_null(qmp_message_string_id(msg));
    g_assert_cmpint(json_object_get_int(qmp_message_id(msg)), ==, 9);
    qmp_message_set_id(msg, NULL);
    g_assert_null(qmp_message_id(msg));
    g_assert_cmpint(qmp_message_kind(msg), ==, QMP_MESSAGE_COMMAND);
}

/* A member inside an object member (a MIGRATION event's data.status), types checked. */
static void test_inner_string(void)
{
    static const struct {
        const char *json, *outer, *want;
    } cases[] = {
        {"{\"event\":\"MIGRATION\",\"data\":{\"status\":\"completed\"}}", "data", "completed"},
        {"{\"return\":{\"status\":\"device\"}}", "return", "device"},
        {"{\"return\":{}}", "return", NULL},
        {"{\"event\":\"MIGRATION\",\"data\":{\"status\":7}}", "data", NULL},
        {"{\"event\":\"MIGRATION\",\"data\":\"completed\"}", "data", NULL},
        {"{\"event\":\"MIGRATION\"}", "data", NULL},
        {"[1]", "data", NULL},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(json_object) msg = json_tokener_parse(cases[i].json);
        g_assert_cmpstr(qmp_message_inner_string(msg, cases[i].outer, "status"), ==, cases[i].want);
    }
    g_assert_null(qmp_message_inner_string(NULL, "data", "status"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp/wire/classify", test_classify);
    g_test_add_func("/qmp/wire/encode", test_encode);
    g_test_add_func("/qmp/wire/set-id", test_set_id);
    g_test_add_func("/qmp/wire/inner-string", test_inner_string);
    return g_test_run();
}
