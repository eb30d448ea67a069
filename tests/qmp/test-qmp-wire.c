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

/* ---- The relay's fast path: qmp_line_may_hold ------------------------------------------ */

/* The words of the libvirt filter (sidecar/libvirt/filter.c): QEMU's lines it acts on, and
 * libvirt's commands it holds. */
static const char *const qemu_words[] = {"QMP", "event", "sm-filter-", NULL};
static const char *const libvirt_words[] = {"migrate", NULL};

/* The contract: a line the scan lets through unparsed is, by json-c's full parse, neither a
 * greeting, nor an event, nor a reply with our id, nor a command naming "migrate". A false
 * positive only costs a parse; a false negative would let a line past the filter. */
static void assert_no_false_negative(const char *line, gsize len)
{
    g_autoptr(json_object) msg = qmp_message_parse(line, len, NULL);
    QmpMessageKind kind = qmp_message_kind(msg);
    const char *id = qmp_message_string_id(msg), *exec = qmp_message_command(msg);
    if (!qmp_line_may_hold(line, len, qemu_words)) {
        g_assert_cmpint(kind, !=, QMP_MESSAGE_GREETING);
        g_assert_cmpint(kind, !=, QMP_MESSAGE_EVENT);
        g_assert_false(id && g_str_has_prefix(id, "sm-filter-"));
    }
    if (!qmp_line_may_hold(line, len, libvirt_words))
        g_assert_false(exec && strstr(exec, "migrate"));
}

typedef struct {
    const char *line;
    gboolean qemu, libvirt; /* what qmp_line_may_hold must say with each side's words */
} ScanCase;

static const ScanCase scan_cases[] = {
    /* The hot path: libvirt's everyday commands and QEMU's replies, never parsed. */
    {"{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, "
     "\"id\": \"libvirt-1\"}\r\n",
     FALSE, FALSE},
    {"{\"execute\":\"query-status\",\"id\":\"libvirt-1\"}\r\n", FALSE, FALSE},
    {"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": \"libvirt-2\"}", FALSE,
     FALSE},
    {"{\"return\": {}, \"id\": \"sm-filte\"}", FALSE, FALSE}, /* not the whole prefix */
    {"\x01\xff not json", FALSE, FALSE},
    {"", FALSE, FALSE},
    /* What the filter acts on, plainly written. */
    {"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n", TRUE, FALSE},
    {"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}", TRUE, FALSE},
    {"{\"return\": {}, \"id\": \"sm-filter-12-3\"}", TRUE, FALSE},
    {"{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"fd:migrate\"},\"id\":\"libvirt-9\"}", FALSE,
     TRUE},
    {"{\"execute\":\"migrate-continue\",\"arguments\":{\"state\":\"pre-switchover\"}}", FALSE,
     TRUE},
    {"{\"exec-oob\":\"migrate\"}", FALSE, TRUE},
    /* Escapes: a key, a name or an id spelt with \u or \" never hides. */
    {"{\"ev\\u0065nt\": \"STOP\"}", TRUE, TRUE},
    {"{\"\\u0051MP\": {}}", TRUE, TRUE},
    {"{\"return\": {}, \"id\": \"sm\\u002dfilter-1-2\"}", TRUE, TRUE},
    {"{\"execute\":\"migr\\u0061te\",\"id\":\"libvirt-9\"}", TRUE, TRUE},
    {"{\"return\": \"\\\"event\\\": \\\"STOP\\\"\", \"id\": \"libvirt-3\"}", TRUE, TRUE},
    /* json-c's single quotes, and bytes past a NUL (strstr would stop there). */
    {"{'event': 'RESUME'}", TRUE, FALSE},
    /* The words inside strings or nested objects: parsed, then found to be libvirt's. */
    {"{\"return\": {\"event\": \"x\"}, \"id\": \"libvirt-4\"}", TRUE, FALSE},
    {"{\"return\": \"sm-filter-\", \"id\": \"libvirt-5\"}", TRUE, FALSE},
    {"{\"return\": [\"QMP\"], \"id\": \"libvirt-6\"}", TRUE, FALSE},
    {"{\"execute\":\"query-migrate\",\"id\":\"libvirt-7\"}", FALSE, TRUE},
};

static void test_may_hold(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(scan_cases); i++) {
        const ScanCase *c = &scan_cases[i];
        gsize len = strlen(c->line);
        g_autofree char *shown = g_strescape(c->line, NULL);
        g_test_message("%s -> qemu %d libvirt %d", shown, c->qemu, c->libvirt);
        g_assert_cmpint(qmp_line_may_hold(c->line, len, qemu_words), ==, c->qemu);
        g_assert_cmpint(qmp_line_may_hold(c->line, len, libvirt_words), ==, c->libvirt);
        assert_no_false_negative(c->line, len);
    }
    /* Past a NUL: every byte of the line is scanned. */
    static const char nul_qemu[] = "{\"return\":{}}\0{\"event\":\"STOP\"}";
    static const char nul_libvirt[] = "\0{\"execute\":\"migrate\"}";
    g_assert_true(qmp_line_may_hold(nul_qemu, sizeof nul_qemu - 1, qemu_words));
    g_assert_true(qmp_line_may_hold(nul_libvirt, sizeof nul_libvirt - 1, libvirt_words));
    /* Only `len` bytes are read. */
    g_assert_false(qmp_line_may_hold("{\"return\":{}}event", 13, qemu_words));
    g_assert_false(qmp_line_may_hold("{}", 2, NULL));
}

/* Random lines from QMP's pieces, the words, escapes and quotes: whatever json-c makes of
 * them, a line the scan lets through is none of what the filter acts on (reproducible with
 * the test's --seed). */
static void test_may_hold_random(void)
{
    static const char *const pieces[] = {
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\"",
        "'",
        "\\",
        "\\u0065",
        "\\u002d",
        "\"event\"",
        "'event'",
        "\"ev",
        "ent\"",
        "\"QMP\"",
        "\"id\"",
        "'id'",
        "\"return\"",
        "\"error\"",
        "\"execute\"",
        "\"STOP\"",
        "\"RESUME\"",
        "{}",
        "\"sm-filter-1-2\"",
        "\"sm-filter-\"",
        "\"sm\\u002dfilter-1\"",
        "\"migrate\"",
        "\"migr\\u0061te\"",
        "\"migrate-continue\"",
        "\"libvirt-1\"",
        "1",
        "null",
        "true",
        "\"\\\"event\\\"\"",
        "\"QM",
        "P\"",
        "\r\n",
    };
    g_autoptr(GString) line = g_string_new(NULL);
    for (guint round = 0; round < 50000; round++) {
        g_string_assign(line, "{");
        guint n = (guint)g_test_rand_int_range(1, 12);
        for (guint i = 0; i < n; i++)
            g_string_append(line, pieces[g_test_rand_int_range(0, G_N_ELEMENTS(pieces))]);
        if (g_test_rand_bit())
            g_string_append_c(line, '}');
        assert_no_false_negative(line->str, line->len);
    }
    /* And the shapes that parse: a key and a value drawn from the pieces. */
    static const char *const keys[] = {"\"event\"",    "\"ev\\u0065nt\"", "'event'",
                                       "\"QMP\"",      "\"\\u0051MP\"",   "\"id\"",
                                       "\"i\\u0064\"", "\"execute\"",     "\"exec-oob\""};
    static const char *const values[] = {
        "\"STOP\"",      "{}",          "\"sm-filter-1\"",   "\"sm\\u002dfilter-1\"",
        "'sm-filter-2'", "\"migrate\"", "\"migr\\u0061te\"", "'migrate-continue'"};
    for (guint k = 0; k < G_N_ELEMENTS(keys); k++)
        for (guint v = 0; v < G_N_ELEMENTS(values); v++)
            for (guint r = 0; r < 2; r++) {
                g_string_printf(line, "{%s: %s%s}", keys[k], values[v],
                                r ? ", \"return\": {}" : "");
                assert_no_false_negative(line->str, line->len);
                g_autoptr(json_object) msg = qmp_message_parse(line->str, line->len, NULL);
                g_assert_nonnull(msg); /* these do parse: the contract was really tested */
            }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qmp/wire/classify", test_classify);
    g_test_add_func("/qmp/wire/encode", test_encode);
    g_test_add_func("/qmp/wire/set-id", test_set_id);
    g_test_add_func("/qmp/wire/inner-string", test_inner_string);
    g_test_add_func("/qmp/wire/may-hold", test_may_hold);
    g_test_add_func("/qmp/wire/may-hold-random", test_may_hold_random);
    return g_test_run();
}
