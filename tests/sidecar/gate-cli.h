/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The integration tests' side of the safe-migrate CLI: run it, read its --json events, and
 * check what it leaves on the VMs (run state, migration settings). */
#pragma once

#include "rig.h"

#include <gio/gio.h>

typedef struct {
    GSubprocess *proc;
    GDataInputStream *out;
    json_object *result;
    GPtrArray *names; /* every event name seen, in order */
} Gate;

char *safe_migrate_path(void);
/* Starts safe-migrate with these arguments, stdout (the events) piped to the test. */
Gate *gate_start(const char *first, ...) G_GNUC_NULL_TERMINATED;
void gate_free(Gate *g);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Gate, gate_free)
/* Reads events until one named `name` (or the result, or EOF): a new reference or NULL. */
json_object *gate_until(Gate *g, const char *name);
/* Drains the output and waits for the exit code (128+N for a signal). */
int gate_wait(Gate *g);
const char *result_str(Gate *g, const char *key);
gint64 result_int(Gate *g, const char *key);
gboolean saw(Gate *g, const char *name);

void assert_runstate(RigVm *vm, const char *want);
/* The migration capabilities and parameters a VM has: what the gate must leave as found. */
void assert_settings(RigVm *vm, const char *before);
gboolean capability(RigVm *vm, const char *name);
/* A command through the test's own monitor, without arguments, that must succeed. */
void qmp_ok(RigVm *vm, const char *command);

/* A CBW sent and its DATA-IN not fetched: the transaction the gate must not cut. */
void leave_pending(RigPair *p, RigCommand cmd);
/* Real (non-zero) pages: with a low bandwidth cap the migration iterates for seconds. */
void make_ram_heavy(RigPair *p);
