/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The plugin ABI: what a probe (built in, or a GModule plugin) sees and does. A probe reads
 * devices and streams, and builds its verdicts only through the functions below: it never
 * writes a structure the library allocated, so the library can grow them. Structures a probe
 * hands over (SmProbe, SmDetailType) carry their size, so they can grow too: a field added
 * later is absent from an older plugin, never read past its end. */
#pragma once

#include <glib.h>
#include <json-c/json.h>

#include "qmp.h"
#include "stream.h"

G_BEGIN_DECLS

/* Major: a change old plugins cannot survive (refused at load). Minor: additions only (a
 * plugin built against a newer minor than the library's is refused too). */
#define SM_PROBE_ABI_MAJOR 2u
#define SM_PROBE_ABI_MINOR 0u
#define SM_PROBE_ABI_VERSION ((SM_PROBE_ABI_MAJOR << 16) | SM_PROBE_ABI_MINOR)

/* ---- Devices: found by discovery, facts added by probes' inspect() ---------------------- */

typedef enum { SM_STATE_IDLE, SM_STATE_BUSY, SM_STATE_UNKNOWN } SmState;
const char *sm_state_to_string(SmState state);

/* The device family's own in-QEMU migration fix, when it has one (for scsi-disk: QEMU >= 9.1's
 * property migrate-emulated-scsi-request), as probes report it: absent / disabled / enabled.
 * The sidecar compares it across both ends for its use-fix policies. */
typedef enum { SM_FIX_UNKNOWN, SM_FIX_ABSENT, SM_FIX_DISABLED, SM_FIX_ENABLED } SmFix;
const char *sm_fix_to_string(SmFix fix);

typedef struct SmDevice SmDevice;
const char *sm_device_get_qom_path(const SmDevice *device); /* "/machine/peripheral/cd" */
const char *sm_device_get_id(const SmDevice *device);       /* qdev id, NULL if none */
const char *sm_device_get_type(const SmDevice *device);     /* QOM type, "usb-storage" */
/* How QEMU names the device's state sections (qdev_get_dev_path: "0000:00:02.0/1" for a USB
 * device, "0000:00:06.0" for a PCI one); NULL when it could not be determined. */
const char *sm_device_get_dev_path(const SmDevice *device);
/* The USB port ("1", "2.3" behind a hub); NULL for a device that is not on a USB bus. */
const char *sm_device_get_usb_port(const SmDevice *device);
void sm_device_set_fact(SmDevice *device, const char *key, const char *value);
const char *sm_device_get_fact(const SmDevice *device, const char *key);
/* The fact every probe's inspect() sets when the device has a migration fix of its own:
 * "absent" / "disabled" / "enabled". */
#define SM_FACT_FIX "fix"
SmFix sm_device_get_fix(const SmDevice *device); /* SM_FIX_UNKNOWN when not set */
/* The fact discovery or a probe's inspect() sets when the device's state can never be judged,
 * whatever the guest does (QEMU cannot migrate it, or its layout or topology is one the probe
 * does not decode); its value says why, in one line. Holding cannot change such a device's
 * verdict (always unknown, with this reason), so the gate refuses it at preflight, from
 * discovery alone. */
#define SM_FACT_UNSUPPORTED "unsupported"
/* Set by discovery for USB devices: the QOM type of the controller whose bus they sit on. */
#define SM_FACT_USB_CONTROLLER_TYPE "usb.controller_type"

/* ---- Verdicts --------------------------------------------------------------------------- */

typedef struct SmDeviceVerdict SmDeviceVerdict;

/* A probe's typed detail of a verdict (e.g. the usb-storage probe's SmUsbStorageDetail): the
 * core keeps it opaque and prints it through these functions. Static, owned by the probe. */
typedef struct {
    gsize struct_size; /* sizeof(SmDetailType) as the probe was built */
    const char *name;  /* the detail's type name, e.g. "usb-storage" */
    void (*free)(gpointer detail);
    /* Adds the detail's members to the verdict's JSON "details" object. */
    void (*to_json)(gconstpointer detail, json_object *details);
    /* Optional: the JSON of the verdict's pending operation `index` (as added by
     * sm_verdict_add_pending); without it the core writes the operation's generic fields. */
    json_object *(*pending_to_json)(gconstpointer detail, guint index);
    /* Optional: operation `index` in a few words for tables (newly allocated); without it,
     * its name. */
    char *(*pending_summary)(gconstpointer detail, guint index);
} SmDetailType;

/* A new verdict on a device: unknown, no reason yet. */
SmDeviceVerdict *sm_verdict_new(const SmDevice *device, const char *probe);
void sm_verdict_free(SmDeviceVerdict *verdict);
/* No transaction in flight: idle and safe. Returns the verdict. */
__attribute__((format(printf, 2, 3))) SmDeviceVerdict *sm_verdict_set_idle(SmDeviceVerdict *verdict,
                                                                           const char *fmt, ...);
/* A transaction in flight; `safe` when all of its state is inside the stream. */
__attribute__((format(printf, 3, 4))) SmDeviceVerdict *
sm_verdict_set_busy(SmDeviceVerdict *verdict, gboolean safe, const char *fmt, ...);
/* Unknown (not safe) with a reason: a transient doubt, which holding may clear. */
__attribute__((format(printf, 2, 3))) SmDeviceVerdict *
sm_verdict_set_unknown(SmDeviceVerdict *verdict, const char *fmt, ...);
/* As sm_verdict_set_unknown, and final: the probe does not understand this layout. */
__attribute__((format(printf, 2, 3))) SmDeviceVerdict *
sm_verdict_set_unsupported(SmDeviceVerdict *verdict, const char *fmt, ...);
void sm_verdict_set_section(SmDeviceVerdict *verdict, const char *idstr);
/* The transport phase, e.g. BOT "CBW" / "DATAIN". */
void sm_verdict_set_mode(SmDeviceVerdict *verdict, const char *mode);
void sm_verdict_set_bytes_pending(SmDeviceVerdict *verdict, gint64 bytes);
void sm_verdict_set_fix(SmDeviceVerdict *verdict, SmFix fix);
/* An operation the device holds, first the one the transport works on: its name for messages
 * ("GET EVENT STATUS NOTIFICATION"), whether the stream carries it to the destination,
 * whether losing it costs the guest nothing (a poll it repeats), bytes buffered for the guest
 * (-1 if not known). */
void sm_verdict_add_pending(SmDeviceVerdict *verdict, const char *name, gboolean migrates,
                            gboolean harmless, gint64 bytes);
/* Hands the probe's detail over to the verdict (freed with it by type->free). */
void sm_verdict_set_detail(SmDeviceVerdict *verdict, const SmDetailType *type, gpointer detail);
/* The verdict's detail if it is of this type, else NULL. */
gpointer sm_verdict_get_detail(const SmDeviceVerdict *verdict, const SmDetailType *type);

/* ---- Probes ----------------------------------------------------------------------------- */

typedef struct SmProbe SmProbe;
struct SmProbe {
    guint abi_version; /* SM_PROBE_ABI_VERSION; first in every version (read before all else) */
    gsize struct_size; /* sizeof(SmProbe) */
    const char *name;
    const char *description;
    const char *const *device_types;  /* QOM types it judges, NULL-terminated */
    const char *const *section_names; /* vmsd names it decodes, NULL-terminated */
    /* Optional: gathers facts over QMP (read-only queries such as qom-get) into the device's
     * facts before the state is captured. */
    gboolean (*inspect)(const SmProbe *probe, QmpClient *qmp, SmDevice *device, GError **error);
    /* Judges one device from the stream and its facts. Must not fail: returns UNKNOWN with a
     * reason when unsure. The stream may be incomplete. */
    SmDeviceVerdict *(*analyse)(const SmProbe *probe, const SmStream *stream,
                                const SmDevice *device);
};

/* What every probe's definition starts with. */
#define SM_PROBE_HEADER .abi_version = SM_PROBE_ABI_VERSION, .struct_size = sizeof(SmProbe)

/* A plugin module (.so in the plugin directory) exports this function. */
#define SM_PROBE_MODULE_SYMBOL "sm_probe_module_get"
typedef const SmProbe *(*SmProbeModuleGetFunc)(void);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmDeviceVerdict, sm_verdict_free);

G_END_DECLS
