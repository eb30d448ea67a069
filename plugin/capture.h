/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capture, discovery and reports: reads QEMU's own serialization of device state (without the
 * guest noticing), finds the devices in the QOM tree, and has the registered probes judge each
 * one into a report. */
#pragma once

#include "registry.h"
#include "verdict.h"

G_BEGIN_DECLS

/* QEMU's serialization of all device state (no RAM), via add-fd + xen-save-devices-state
 * live=false + remove-fd: QEMU never opens a path. It stores the migration global run state
 * as "running". On a running VM the command stops it as SAVE_VM, which device models react
 * to (EHCI cancels in-flight packets): call it only on a stopped VM (sm_probe_vm does). */
GBytes *sm_capture_device_state(QmpClient *qmp, GError **error);
/* QEMU 7.2 keeps the fd of a capture taken while the VM was stopped (its remove-fd acts only
 * on a running VM): call this once the VM runs again to close every fd set of our captures.
 * Best effort, errors ignored. sm_probe_vm does it after resuming. */
void sm_release_probe_fds(QmpClient *qmp);
/* How many such fds of a stopped VM sm_probe_vm lets QEMU hold before it refuses another
 * capture of it (SM_PROBE_ERROR_CAPTURE): no normal flow captures a stopped VM more than once
 * or twice before it runs again. */
#define SM_PROBE_STOPPED_FD_CAP 8

/* The capture split in two for the gate, whose guest is stopped from pre-switchover until
 * migrate-continue: everything but the save itself happens before (prepare: the memfd is
 * emptied and handed to QEMU with add-fd while the VM runs) or after (release: remove-fd),
 * so that at switchover the only command is xen-save-devices-state into that fd. One memfd
 * serves every attempt; the stream is mapped, never copied. */
typedef struct SmCapture SmCapture;
SmCapture *sm_capture_new(GError **error);
void sm_capture_free(SmCapture *capture);
/* Empties the memfd and adds it to QEMU (a new fd set, tagged as ours). */
gboolean sm_capture_prepare(SmCapture *capture, QmpClient *qmp, GError **error);
/* The one command at switchover (the VM must be stopped). The bytes map the memfd: drop them
 * before the next prepare. */
GBytes *sm_capture_take(SmCapture *capture, QmpClient *qmp, GError **error);
/* Gives the fd set back (best effort; 7.2 closes it only once the VM runs, see above). */
void sm_capture_release(SmCapture *capture, QmpClient *qmp);

/* For a probe on behalf of anyone but the migration's own gate (status, list --probe): FALSE
 * with SM_PROBE_ERROR_MIGRATING when a migration waits at pre-switchover or is in its device
 * phase. That migration has stored the run state the destination resumes with, and a capture
 * would overwrite it with "running" (a paused source would come up running there). */
gboolean sm_probe_switchover_free(QmpClient *qmp, GError **error);
/* The strict form, for a caller through which every migration's start passes, so that none
 * can start between this check and the probe (the libvirt filter's worker): FALSE with
 * SM_PROBE_ERROR_MIGRATING while any migration is in progress, whatever its phase. */
gboolean sm_probe_migration_free(QmpClient *qmp, GError **error);

/* Devices of types any registered probe understands, from /machine/peripheral,
 * /machine/peripheral-anon and /machine/unattached, each with its QOM path and, when possible,
 * the dev_path QEMU names its sections by: a USB device's also gives it its USB port and the
 * controller's type (SM_FACT_USB_CONTROLLER_TYPE), a PCI device's is its PCI path. A USB device
 * whose section name cannot be derived, or a device whose bus cannot be read, is marked
 * SM_FACT_UNSUPPORTED. Fails (closed) when a container QEMU has cannot be listed or lists
 * entries of a shape not understood. */
GPtrArray *sm_discover_devices(QmpClient *qmp, const SmRegistry *registry, GError **error);
/* sm_discover_devices, then every device's probe gathers its facts (fix state...) with
 * read-only queries; the device state is not captured. */
GPtrArray *sm_inspect_devices(QmpClient *qmp, const SmRegistry *registry, GError **error);
/* FALSE with SM_PROBE_ERROR_LAYOUT naming the first inspected device the gate cannot judge in
 * its present layout (SM_FACT_UNSUPPORTED, or no dev_path to find its section by), and why:
 * holding cannot change that, so a gate refuses such a VM before its migration starts. From
 * discovery facts alone: a running VM is never captured for it. */
gboolean sm_check_layouts(GPtrArray *devices, GError **error);

typedef struct {
    char *qemu_version; /* "7.2.22" */
    GPtrArray *devices; /* SmDeviceVerdict* */
    char *stream_error; /* NULL when the stream was walked completely */
    gsize stream_bytes;
    gint64 capture_us; /* wall time of the capture command */
} SmReport;

/* Offline: judge devices against a captured stream. */
SmReport *sm_report_from_stream(GBytes *state, GPtrArray *devices, const SmRegistry *registry,
                                const char *qemu_version);
/* The same for a capture taken after the devices were discovered (the gate's split capture:
 * devices read while the guest ran, the state at switchover): a state section of a probed
 * kind that no device claims (one the discovery did not see) makes an unknown verdict of its
 * own, never "no device, so idle". */
SmReport *sm_report_from_split_capture(GBytes *state, GPtrArray *devices,
                                       const SmRegistry *registry, const char *qemu_version);
/* The whole thing, as the sidecar calls it: discovery and inspection, then the capture. The
 * guest never sees a capture of its running self: a running VM is stopped with an ordinary
 * `stop`, captured and resumed (only if that stop is what stopped it, on every outcome), and
 * refused while a migration is in progress; a stopped VM is captured as it is. Errors only
 * when the VM cannot be reached or refuses the capture; per-device doubt is an UNKNOWN
 * verdict instead. */
SmReport *sm_probe_vm(QmpClient *qmp, const SmRegistry *registry, GError **error);
void sm_report_free(SmReport *report);
json_object *sm_report_to_json(const SmReport *report);
/* The first device that is not safe to switch over, or NULL when all are. */
const SmDeviceVerdict *sm_report_first_unsafe(const SmReport *report);
char *sm_report_to_table(const SmReport *report);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmReport, sm_report_free);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmCapture, sm_capture_free);

G_END_DECLS
