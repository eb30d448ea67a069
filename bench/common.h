/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared by the benchmarks: a VM pair that migrates back and forth (the rig's QEMUs and
 * guest), the safe-migrate CLI run as a child with its JSON events, and small statistics. */
#pragma once

#include "rig.h"

#include <gio/gio.h>

/* ---- A VM and its empty twin, migrating back and forth ---------------------------------- */

typedef struct {
    RigQemu qemu;
    const char *machine;
    guint memory_mb;  /* guest RAM; 0 = the rig's 16 MiB */
    RigVm *src, *dst; /* src holds the guest and runs; dst waits with -incoming defer */
    char *src_prepare, *dst_prepare;
    RigGuest *guest;
} Pair;

/* Starts both QEMUs and the guest; the guest clears power-on events and fills `ram_mb` of
 * RAM with non-zero bytes, so every migration carries real pages. */
Pair *pair_new(RigQemu qemu, const char *machine, guint ram_mb, GError **error);
/* The same with `memory_mb` of guest RAM (0 = 16 MiB); the fill starts at 2 MiB. */
Pair *pair_new_sized(RigQemu qemu, const char *machine, guint memory_mb, guint ram_mb,
                     GError **error);
void pair_free(Pair *p);
/* After a migration that completed: the guest follows the VM to dst, the old source is
 * replaced by a fresh -incoming QEMU, and the roles swap. `dst_replaced`: dest-prepare ran
 * (the destination process is not the one the rig started). */
gboolean pair_swap(Pair *p, gboolean dst_replaced, GError **error);
/* The sidecar-monitor addresses, for safe-migrate. */
char *pair_src_addr(Pair *p);
char *pair_dst_addr(Pair *p);

/* ---- safe-migrate migrate as a child ----------------------------------------------------- */

typedef struct {
    GSubprocess *proc;
    GDataInputStream *out;
    json_object *result; /* the "result" event */
} Gate;

/* argv after "safe-migrate"; NULL-terminated. Always --json. */
Gate *gate_spawn(const char *const *args, GError **error);
/* Next event (new reference), NULL at EOF. Keeps the result event. */
json_object *gate_next(Gate *g);
/* Reads to EOF and reaps; returns the exit code (128+N for a signal). */
int gate_finish(Gate *g);
void gate_free(Gate *g);
const char *event_name(json_object *ev);
gint64 event_int(json_object *ev, const char *key, gint64 fallback);

/* ---- Plumbing ------------------------------------------------------------------------------ */

/* The tests' environment (SM_QEMU72, SM_QEMU10, SM_QEMU10_DATADIR, SM_SOURCE_ROOT,
 * SM_BUILD_ROOT) where not set already, from the build configuration: a bench runs straight
 * from the build tree. */
void bench_env_defaults(void);

/* SM_BUILD_ROOT/sidecar/safe-migrate. */
char *safe_migrate_path(void);
/* query-migrate on the test's monitor: "downtime" and "total-time" in ms (-1 if absent). */
gboolean migration_times(RigVm *vm, gint64 *downtime_ms, gint64 *total_ms, GError **error);

/* ---- Statistics ---------------------------------------------------------------------------- */

/* Sorts `v` in place; nearest-rank percentile (p in 0..100). */
double percentile(GArray *v, double p);
double median(GArray *v);
