/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The event schema (sidecar/gate/events.c): its validator refuses unknown events, unknown
 * members, missing required ones and wrong types; and doc/events.md is exactly what the
 * table says (SM_UPDATE_DOC=1 rewrites the generated part). The real gate tests validate
 * every event they read against the same table. */
#include "gate.h"
#include "qmp.h" /* g_autoptr(json_object) */

#include <gio/gio.h>
#include <string.h>

#define BEGIN_MARK                                                                                 \
    "<!-- BEGIN generated from sidecar/gate/events.c (tests/sidecar/test-events.c) -->\n"
#define END_MARK "<!-- END generated -->\n"

static const char *type_names(guint types)
{
    static const struct {
        guint bit;
        const char *name;
    } names[] = {{SM_EVENT_STRING, "string"}, {SM_EVENT_INT, "integer"},
                 {SM_EVENT_DOUBLE, "number"}, {SM_EVENT_BOOL, "boolean"},
                 {SM_EVENT_ARRAY, "array"},   {SM_EVENT_OBJECT, "object"},
                 {SM_EVENT_NULL, "null"}};
    static char buf[128];
    buf[0] = '\0';
    if ((types & (SM_EVENT_INT | SM_EVENT_DOUBLE)) == (SM_EVENT_INT | SM_EVENT_DOUBLE))
        types &= ~(guint)SM_EVENT_INT; /* "number" covers both */
    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        if (types & names[i].bit) {
            if (buf[0])
                g_strlcat(buf, " or ", sizeof buf);
            g_strlcat(buf, names[i].name, sizeof buf);
        }
    }
    return buf;
}

static void render_members(GString *out, const SmEventMember *members)
{
    g_string_append(out, "| member | type | required | meaning |\n|---|---|---|---|\n");
    for (const SmEventMember *m = members; m->name; m++)
        g_string_append_printf(out, "| `%s` | %s | %s | %s |\n", m->name, type_names(m->types),
                               m->optional ? "no" : "yes", m->meaning);
}

/* The generated part of doc/events.md. */
static char *render(void)
{
    GString *out = g_string_new(BEGIN_MARK "\n## Members of every event\n\n");
    render_members(out, sm_event_common_members());
    guint n;
    const SmEventSpec *specs = sm_event_specs(&n);
    for (guint i = 0; i < n; i++) {
        g_string_append_printf(out, "\n## `%s`\n\nWhen: %s.\n\n", specs[i].name, specs[i].when);
        render_members(out, specs[i].members);
    }
    g_string_append(out, "\n" END_MARK);
    return g_string_free(out, FALSE);
}

static void test_doc(void)
{
    g_autofree char *path =
        g_build_filename(g_getenv("SM_SOURCE_ROOT") ?: ".", "doc", "events.md", NULL);
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, &error));
    char *begin = strstr(text, BEGIN_MARK), *end = begin ? strstr(begin, END_MARK) : NULL;
    g_assert_nonnull(begin);
    g_assert_nonnull(end);
    end += strlen(END_MARK);
    g_autofree char *want = render();
    g_autofree char *have = g_strndup(begin, (gsize)(end - begin));
    if (g_strcmp0(want, have) != 0 && g_getenv("SM_UPDATE_DOC")) {
        g_autofree char *head = g_strndup(text, (gsize)(begin - text));
        g_autofree char *whole = g_strconcat(head, want, end, NULL);
        g_assert_true(g_file_set_contents(path, whole, -1, &error));
        return;
    }
    if (g_strcmp0(want, have) != 0)
        g_test_message("doc/events.md is out of date (SM_UPDATE_DOC=1 rewrites it); the table "
                       "says:\n%s",
                       want);
    g_assert_cmpstr(want, ==, have);
}

/* A value of one of the types in `types`, or (with `outside`) of none of them. */
static json_object *value_of(guint types, gboolean outside)
{
    static const guint order[] = {SM_EVENT_STRING, SM_EVENT_INT,   SM_EVENT_DOUBLE,
                                  SM_EVENT_BOOL,   SM_EVENT_ARRAY, SM_EVENT_OBJECT};
    for (guint i = 0; i < G_N_ELEMENTS(order); i++) {
        gboolean in = (types & order[i]) != 0;
        if (in == outside)
            continue;
        switch (order[i]) {
        case SM_EVENT_STRING:
            return json_object_new_string("x");
        case SM_EVENT_INT:
            return json_object_new_int(1);
        case SM_EVENT_DOUBLE:
            return json_object_new_double(1.5);
        case SM_EVENT_BOOL:
            return json_object_new_boolean(TRUE);
        case SM_EVENT_ARRAY:
            return json_object_new_array();
        default:
            return json_object_new_object();
        }
    }
    g_assert_not_reached();
}

/* An event with every required member (and, with `all`, every optional one). */
static json_object *sample(const SmEventSpec *spec, gboolean all)
{
    json_object *ev = json_object_new_object();
    const SmEventMember *lists[] = {sm_event_common_members(), spec->members};
    for (guint l = 0; l < G_N_ELEMENTS(lists); l++)
        for (const SmEventMember *m = lists[l]; m->name; m++)
            if (all || !m->optional)
                json_object_object_add(ev, m->name, value_of(m->types, FALSE));
    json_object_object_add(ev, SM_EVENT_KEY_EVENT, json_object_new_string(spec->name));
    return ev;
}

static void assert_invalid(json_object *ev)
{
    g_autoptr(GError) error = NULL;
    g_assert_false(sm_event_validate(ev, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    g_test_message("refused: %s", error->message);
}

static void test_each_event(void)
{
    guint n;
    const SmEventSpec *specs = sm_event_specs(&n);
    g_assert_cmpuint(n, >=, 13);
    for (guint i = 0; i < n; i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(json_object) minimal = sample(&specs[i], FALSE);
        g_autoptr(json_object) full = sample(&specs[i], TRUE);
        sm_event_validate(minimal, &error);
        g_assert_no_error(error);
        sm_event_validate(full, &error);
        g_assert_no_error(error);
        /* Each member: missing (if required), then of a type it may not have. */
        const SmEventMember *lists[] = {sm_event_common_members(), specs[i].members};
        for (guint l = 0; l < G_N_ELEMENTS(lists); l++) {
            for (const SmEventMember *m = lists[l]; m->name; m++) {
                g_autoptr(json_object) ev = sample(&specs[i], TRUE);
                if (!m->optional) {
                    json_object_object_del(ev, m->name);
                    assert_invalid(ev);
                }
                json_object_object_add(ev, m->name, value_of(m->types, TRUE));
                assert_invalid(ev);
                if (!(m->types & SM_EVENT_NULL)) {
                    json_object_object_add(ev, m->name, NULL);
                    assert_invalid(ev);
                }
            }
        }
        g_autoptr(json_object) extra = sample(&specs[i], TRUE);
        json_object_object_add(extra, "not_in_the_schema", json_object_new_int(1));
        assert_invalid(extra);
    }
}

static void test_not_events(void)
{
    const char *const bad[] = {
        "[]",
        "null",
        "{}",
        "{\"event\":7,\"t_ms\":1}",
        "{\"event\":\"no-such-event\",\"t_ms\":1}",
        "{\"event\":\"retry\",\"t_ms\":1}", /* no attempt */
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(json_object) ev = json_tokener_parse(bad[i]);
        assert_invalid(ev);
    }
    g_autoptr(json_object) ok = json_tokener_parse(
        "{\"event\":\"retry\",\"t_ms\":5,\"time\":\"2026-01-01T00:00:00.000Z\",\"attempt\":2}");
    g_autoptr(GError) error = NULL;
    g_assert_true(sm_event_validate(ok, &error));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/events/doc", test_doc);
    g_test_add_func("/events/each-event", test_each_event);
    g_test_add_func("/events/not-events", test_not_events);
    return g_test_run();
}
