/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Running the safe-migrate CLI from the integration tests, and the checks they share on the
 * VMs it leaves behind. */
#include "gate-cli.h"
#include "gate.h"

#include <string.h>

/* ---- Running the CLI ------------------------------------------------------------------- */

void gate_free(Gate *g)
{
    if (!g)
        return;
    if (g->proc && g_subprocess_get_identifier(g->proc)) {
        g_subprocess_force_exit(g->proc);
        g_subprocess_wait(g->proc, NULL, NULL);
    }
    g_clear_object(&g->out);
    g_clear_object(&g->proc);
    if (g->result)
        json_object_put(g->result);
    g_ptr_array_unref(g->names);
    g_free(g);
}

char *safe_migrate_path(void)
{
    return g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "safe-migrate", NULL);
}

Gate *gate_start(const char *first, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, safe_migrate_path());
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        g_ptr_array_add(argv, g_strdup(a));
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    g_autofree char *line = g_strjoinv(" ", (char **)argv->pdata);
    g_test_message("running %s", line);
    g_autoptr(GError) error = NULL;
    Gate *g = g_new0(Gate, 1);
    g->names = g_ptr_array_new_with_free_func(g_free);
    g->proc =
        g_subprocess_newv((const char *const *)argv->pdata, G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error);
    g_assert_no_error(error);
    g->out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(g->proc));
    return g;
}

/* Reads events until one named `name` (or the result, or EOF). Returns a new reference or
 * NULL. */
json_object *gate_until(Gate *g, const char *name)
{
    for (;;) {
        gsize len;
        g_autofree char *line = g_data_input_stream_read_line(g->out, &len, NULL, NULL);
        if (!line)
            return NULL;
        json_object *ev = json_tokener_parse(line);
        g_assert_nonnull(ev);
        GError *invalid = NULL; /* every event must fit the schema (sidecar/gate/events.c) */
        if (!sm_event_validate(ev, &invalid))
            g_test_message("outside the schema: %s", json_object_to_json_string(ev));
        g_assert_no_error(invalid);
        json_object *v;
        g_assert_true(json_object_object_get_ex(ev, "event", &v));
        const char *ev_name = json_object_get_string(v);
        g_ptr_array_add(g->names, g_strdup(ev_name));
        if (g_str_equal(ev_name, "result") && !g->result)
            g->result = json_object_get(ev);
        if (name && g_str_equal(ev_name, name))
            return ev;
        json_object_put(ev);
    }
}

/* Drains the output and waits for the exit code (128+N for a signal). */
int gate_wait(Gate *g)
{
    json_object *rest = gate_until(g, NULL);
    g_assert_null(rest);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_subprocess_wait(g->proc, NULL, &error));
    g_assert_no_error(error);
    g_autofree char *names = NULL;
    g_ptr_array_add(g->names, NULL);
    names = g_strjoinv(" ", (char **)g->names->pdata);
    g_ptr_array_remove_index(g->names, g->names->len - 1);
    g_test_message("events: %s", names);
    if (g->result)
        g_test_message("result: %s", json_object_to_json_string(g->result));
    if (g_subprocess_get_if_signaled(g->proc))
        return 128 + g_subprocess_get_term_sig(g->proc);
    return g_subprocess_get_exit_status(g->proc);
}

const char *result_str(Gate *g, const char *key)
{
    json_object *v;
    g_assert_nonnull(g->result);
    return json_object_object_get_ex(g->result, key, &v) ? json_object_get_string(v) : NULL;
}

gint64 result_int(Gate *g, const char *key)
{
    json_object *v;
    g_assert_nonnull(g->result);
    return json_object_object_get_ex(g->result, key, &v) ? json_object_get_int64(v) : -1;
}

gboolean saw(Gate *g, const char *name)
{
    for (guint i = 0; i < g->names->len; i++)
        if (g_str_equal(g_ptr_array_index(g->names, i), name))
            return TRUE;
    return FALSE;
}

/* ---- A source/destination pair with a guest (RigPair) ------------------------------- */

void assert_runstate(RigVm *vm, const char *want)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *state = rig_vm_runstate(vm, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(state, ==, want);
}

/* The migration capabilities and parameters a VM has: what the gate must leave as found. */
void assert_settings(RigVm *vm, const char *before)
{
    g_autofree char *after = rig_vm_migration_settings(vm);
    g_assert_cmpstr(after, ==, before);
}

gboolean capability(RigVm *vm, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) caps =
        qmp_client_execute(rig_vm_qmp(vm), "query-migrate-capabilities", NULL, &error);
    g_assert_no_error(error);
    for (size_t i = 0; i < json_object_array_length(caps); i++) {
        json_object *c = json_object_array_get_idx(caps, i), *n, *st;
        if (json_object_object_get_ex(c, "capability", &n) &&
            g_str_equal(json_object_get_string(n), name) &&
            json_object_object_get_ex(c, "state", &st))
            return json_object_get_boolean(st);
    }
    g_assert_not_reached();
}

void leave_pending(RigPair *p, RigCommand cmd)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(rig_guest_send_cbw(p->guest, 0, &cmd, NULL, &error));
    g_assert_no_error(error);
}

/* Slows migration down: real (non-zero) pages and a low bandwidth cap keep it iterating for
 * seconds, so a test can act while it runs. */
void make_ram_heavy(RigPair *p)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(rig_guest_fill_ram(p->guest, 0x200000, 8 << 20, 0x5a, &error));
    g_assert_no_error(error);
}

void qmp_ok(RigVm *vm, const char *command)
{
    g_autoptr(GError) error = NULL;
    json_object *r = qmp_client_execute(rig_vm_qmp(vm), command, NULL, &error);
    g_assert_no_error(error);
    json_object_put(r);
}
