/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Helpers shared by the probe core's files (capture, discovery, reports): not exported. */
#pragma once

#include "capture.h"

/* Discovery's fact: the dev_path of a USB device's controller. */
#define FACT_USB_CONTROLLER "usb.controller_dev_path"

/* A command with one or two string arguments (k2 may be NULL) whose reply must have type
 * `expect` (libqmp's typed layer checks it: another type is a QMP_ERROR_PROTOCOL error). */
G_GNUC_INTERNAL json_object *sm_qmp_call(QmpClient *qmp, const char *cmd, json_type expect,
                                         const char *k1, const char *v1, const char *k2,
                                         const char *v2, GError **error);
/* A QEMU-side refusal (error reply), or a reply of a type we do not understand, is an answer;
 * anything else means the VM is gone. */
G_GNUC_INTERNAL gboolean sm_is_command_error(const GError *e);
/* e (taken) as an SM_PROBE_ERROR: CAPTURE for an answer, UNREACHABLE otherwise. */
G_GNUC_INTERNAL void sm_to_probe_error(GError **error, GError *e);
/* Devices whose USB port could not be read, resolved from the stream's sections. */
G_GNUC_INTERNAL void sm_resolve_by_elimination(GPtrArray *devices, const SmStream *stream,
                                               const SmRegistry *registry);
