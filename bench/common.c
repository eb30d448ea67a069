/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared bench plumbing: VM pairs that migrate back and forth, the safe-migrate CLI as a
 * child process, percentiles. */
#include "common.h"

#include <math.h>
#include <signal.h>
#include <string.h>

void bench_env_defaults(void)
{
    g_setenv("SM_QEMU72", "/usr/bin/qemu-system-x86_64", FALSE);
    g_setenv("SM_QEMU10", BENCH_QEMU10_PREFIX "/usr/bin/qemu-system-x86_64", FALSE);
    g_setenv("SM_QEMU10_DATADIR", BENCH_QEMU10_PREFIX "/usr/share/qemu", FALSE);
    g_setenv("SM_SOURCE_ROOT", BENCH_SOURCE_ROOT, FALSE);
    g_setenv("SM_BUILD_ROOT", BENCH_BUILD_ROOT, FALSE);
}

char *safe_migrate_path(void)
{
    return g_build_filename(g_getenv("SM_BUILD_ROOT"), "sidecar", "safe-migrate", NULL);
}

gboolean migration_times(RigVm *vm, gint64 *downtime_ms, gint64 *total_ms, GError **error)
{
    g_autoptr(json_object) r = qmp_client_execute(rig_vm_qmp(vm), "query-migrate", NULL, error);
    if (!r)
        return FALSE;
    json_object *v;
    *downtime_ms = json_object_object_get_ex(r, "downtime", &v) ? json_object_get_int64(v) : -1;
    *total_ms = json_object_object_get_ex(r, "total-time", &v) ? json_object_get_int64(v) : -1;
    return TRUE;
}

/* ---- Pair ----------------------------------------------------------------------------------- */

Pair *pair_new(RigQemu qemu, const char *machine, guint ram_mb, GError **error)
{
    return pair_new_sized(qemu, machine, 0, ram_mb, error);
}

Pair *pair_new_sized(RigQemu qemu, const char *machine, guint memory_mb, guint ram_mb,
                     GError **error)
{
    Pair *p = g_new0(Pair, 1);
    p->qemu = qemu;
    p->machine = machine;
    p->memory_mb = memory_mb;
    p->src = rig_vm_start(
        &(RigVmConfig){.qemu = qemu, .machine = machine, .name = "a", .memory_mb = memory_mb},
        error);
    if (p->src)
        p->dst = rig_vm_start(&(RigVmConfig){.qemu = qemu,
                                             .machine = machine,
                                             .name = "b",
                                             .incoming = TRUE,
                                             .memory_mb = memory_mb},
                              error);
    if (p->dst)
        p->guest = rig_guest_new(p->src, error);
    if (!p->guest) {
        pair_free(p);
        return NULL;
    }
    p->src_prepare = rig_vm_prepare_script(p->src, TRUE, error);
    p->dst_prepare = p->src_prepare ? rig_vm_prepare_script(p->dst, TRUE, error) : NULL;
    RigCommand tur = rig_cmd_test_unit_ready();
    /* Power-on unit attention, then the media-change event, as a guest clears them. */
    for (int i = 0; p->dst_prepare && i < 2; i++)
        if (!rig_guest_transact(p->guest, 0, &tur, NULL, NULL, NULL, error))
            break;
    if ((error && *error) || !p->dst_prepare ||
        (ram_mb && !rig_guest_fill_ram(p->guest, 0x200000, (gsize)ram_mb << 20, 0x5a, error))) {
        pair_free(p);
        return NULL;
    }
    return p;
}

void pair_free(Pair *p)
{
    if (!p)
        return;
    rig_guest_free(p->guest);
    rig_vm_free(p->src);
    rig_vm_free(p->dst);
    g_free(p->src_prepare);
    g_free(p->dst_prepare);
    g_free(p);
}

gboolean pair_swap(Pair *p, gboolean dst_replaced, GError **error)
{
    if (dst_replaced && !rig_vm_reload(p->dst, error))
        return FALSE;
    if (!rig_guest_attach(p->guest, p->dst, error))
        return FALSE;
    /* The old source is a postmigrate shell: a fresh incoming QEMU takes its place. Started
     * by us rather than by its prepare script, so that it is our child and a crash shows its
     * signal. */
    RigVm *fresh = rig_vm_start(&(RigVmConfig){.qemu = p->qemu,
                                               .machine = p->machine,
                                               .name = "vm",
                                               .incoming = TRUE,
                                               .memory_mb = p->memory_mb},
                                error);
    if (!fresh)
        return FALSE;
    char *prepare = rig_vm_prepare_script(fresh, TRUE, error);
    if (!prepare) {
        rig_vm_free(fresh);
        return FALSE;
    }
    rig_vm_free(p->src);
    g_free(p->src_prepare);
    p->src = p->dst;
    p->src_prepare = p->dst_prepare;
    p->dst = fresh;
    p->dst_prepare = prepare;
    return TRUE;
}

char *pair_src_addr(Pair *p)
{
    return g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(p->src));
}

char *pair_dst_addr(Pair *p)
{
    return g_strdup_printf("unix:%s", rig_vm_sidecar_qmp_path(p->dst));
}

/* ---- Gate ----------------------------------------------------------------------------------- */

Gate *gate_spawn(const char *const *args, GError **error)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(argv, safe_migrate_path());
    g_ptr_array_add(argv, g_strdup("migrate"));
    for (guint i = 0; args[i]; i++)
        g_ptr_array_add(argv, g_strdup(args[i]));
    g_ptr_array_add(argv, g_strdup("--json"));
    g_ptr_array_add(argv, NULL);
    GSubprocess *proc =
        g_subprocess_newv((const char *const *)argv->pdata, G_SUBPROCESS_FLAGS_STDOUT_PIPE, error);
    if (!proc)
        return NULL;
    Gate *g = g_new0(Gate, 1);
    g->proc = proc;
    g->out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(proc));
    return g;
}

const char *event_name(json_object *ev)
{
    json_object *v;
    return json_object_object_get_ex(ev, "event", &v) ? json_object_get_string(v) : "";
}

gint64 event_int(json_object *ev, const char *key, gint64 fallback)
{
    json_object *v;
    return ev && json_object_object_get_ex(ev, key, &v) ? json_object_get_int64(v) : fallback;
}

json_object *gate_next(Gate *g)
{
    g_autofree char *line = g_data_input_stream_read_line(g->out, NULL, NULL, NULL);
    if (!line)
        return NULL;
    json_object *ev = json_tokener_parse(line);
    if (!ev)
        return gate_next(g); /* not ours (a stray line); skip it */
    if (g_str_equal(event_name(ev), "result") && !g->result)
        g->result = json_object_get(ev);
    return ev;
}

int gate_finish(Gate *g)
{
    json_object *ev;
    while ((ev = gate_next(g)))
        json_object_put(ev);
    g_subprocess_wait(g->proc, NULL, NULL);
    if (g_subprocess_get_if_signaled(g->proc))
        return 128 + g_subprocess_get_term_sig(g->proc);
    return g_subprocess_get_exit_status(g->proc);
}

void gate_free(Gate *g)
{
    if (!g)
        return;
    if (g_subprocess_get_identifier(g->proc)) {
        g_subprocess_force_exit(g->proc);
        g_subprocess_wait(g->proc, NULL, NULL);
    }
    g_object_unref(g->out);
    g_object_unref(g->proc);
    if (g->result)
        json_object_put(g->result);
    g_free(g);
}

/* ---- Statistics ----------------------------------------------------------------------------- */

static gint cmp_double(gconstpointer a, gconstpointer b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double percentile(GArray *v, double p)
{
    if (v->len == 0)
        return NAN;
    g_array_sort(v, cmp_double);
    guint rank = (guint)ceil(p / 100.0 * v->len);
    return g_array_index(v, double, rank == 0 ? 0 : rank - 1);
}

double median(GArray *v)
{
    if (v->len == 0)
        return NAN;
    g_array_sort(v, cmp_double);
    guint n = v->len;
    return n % 2 ? g_array_index(v, double, n / 2)
                 : (g_array_index(v, double, n / 2 - 1) + g_array_index(v, double, n / 2)) / 2;
}
