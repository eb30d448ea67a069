/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Inside the filter process: the relay (filter.c, main thread) and the gate worker (gate.c,
 * its own thread and main context) that probes through the relay and decides. */
#pragma once

#include <glib.h>
#include <json-c/json.h>

#include "probe.h"
#include "sm-libvirt.h"

typedef enum {
    SM_GATE_JOB_PRE_MIGRATE, /* libvirt sent `migrate`: devices read, capture prepared (or
                              * refused); a paused VM is probed now */
    SM_GATE_JOB_SWITCHOVER,  /* libvirt sent `migrate-continue`: continue or cancel */
    SM_GATE_JOB_STATUS,      /* a control-socket client asks for the devices' state */
    SM_GATE_JOB_RELEASE,     /* the migration ended without our switchover: give the fd back
                              * (nothing is held; done is called, nothing to answer) */
} SmGateJobKind;

typedef enum {
    SM_GATE_PROCEED, /* forward libvirt's command */
    SM_GATE_REFUSE,  /* answer libvirt's command with `message` as a QMP error */
} SmGateAction;

typedef struct {
    SmGateJobKind kind;
    SmReport *paused_report; /* in: PRE_MIGRATE's report of a paused VM (owned), or NULL */
    /* in: why PRE_MIGRATE could not probe the VM it found paused (owned), or NULL: then a
     * SWITCHOVER must not capture it (see switchover in gate.c) */
    char *paused_unread;
    /* SWITCHOVER, in: QEMU's last MIGRATION event said "pre-switchover" (no query needed) */
    gboolean at_pre_switchover;
    int client_fd; /* STATUS: the control client, answered by the main thread */
    /* Results. */
    SmGateAction action;
    char *message;
    char *reply; /* STATUS: one JSON line */
} SmGateJob;

void sm_gate_job_free(SmGateJob *job);

typedef struct SmGate SmGate;
typedef void (*SmGateDoneFunc)(SmGateJob *job, gpointer user_data);
/* The worker connects its QMP client to probe_socket (served by the relay). done runs on
 * main_context with the finished job (the callee owns it); sm_gate_submit may be called from
 * any thread (in the filter: its main thread). */
SmGate *sm_gate_new(const SmPolicy *policy, const char *probe_socket, GMainContext *main_context,
                    SmGateDoneFunc done, gpointer user_data);
void sm_gate_submit(SmGate *gate, SmGateJob *job);
