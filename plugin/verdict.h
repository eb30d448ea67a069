/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The verdict model: devices found in the QOM tree with their facts, and a probe's verdict on
 * each (state, safety, reason, pending operations, and the probe's own typed detail). Probes
 * build verdicts only through the setters of probe-abi.h; the structure definitions below are
 * for the library and its in-tree consumers (the sidecar), not part of the plugin ABI. */
#pragma once

#include "probe-abi.h"

G_BEGIN_DECLS

/* A pending operation as the probe reported it (sm_verdict_add_pending). */
typedef struct {
    char *name;
    gboolean migrates;
    gboolean harmless;
    gint64 bytes;
} SmPendingOp;

struct SmDevice {
    char *qom_path; /* "/machine/peripheral/usbcd" */
    char *id;       /* qdev id, NULL when it has none */
    char *type;     /* QOM type, "usb-storage" */
    /* qdev_get_dev_path() of the device as QEMU names sections by it ("0000:00:02.0/1" for
     * a USB device, "0000:00:06.0" for a PCI one), NULL when it could not be determined. */
    char *dev_path;
    char *usb_port;    /* "1", "2.3" behind a hub; NULL for a device not on a USB bus */
    GHashTable *facts; /* string -> string, e.g. "usb-storage.lun0.addr", "fix" */
};

struct SmDeviceVerdict {
    char *qom_path;
    char *id;
    char *type;
    char *probe;   /* name of the probe that judged */
    char *section; /* idstr of the device's main section, NULL if not found */
    /* IDLE: no transaction in flight. BUSY: a transaction is in flight. UNKNOWN: the state
     * could not be read with certainty (never reported as idle). */
    SmState state;
    /* Switching over now keeps the in-flight transaction intact (idle, or busy with all
     * state inside the stream). Always FALSE when UNKNOWN. */
    gboolean safe;
    char *reason;         /* one line: why this verdict */
    char *mode;           /* transport phase, e.g. BOT "CBW" / "DATAIN"; NULL if none */
    gint64 bytes_pending; /* bytes the guest has yet to transfer, -1 if not known */
    GArray *pending;      /* SmPendingOp, the one the transport works on first */
    SmFix fix;
    /* UNKNOWN that no wait can change ("layout not understood"): refused, never held. Set
     * by sm_verdict_set_unsupported(); FALSE for a transient unknown. */
    gboolean final;
    const SmDetailType *detail_type; /* the probe's typed detail, NULL if none */
    gpointer detail;
};

SmDevice *sm_device_new(const char *qom_path, const char *id, const char *type,
                        const char *dev_path);
void sm_device_free(SmDevice *device);
void sm_device_set_dev_path(SmDevice *device, const char *dev_path);
void sm_device_set_usb_port(SmDevice *device, const char *port);

guint sm_verdict_get_n_pending(const SmDeviceVerdict *verdict);
const SmPendingOp *sm_verdict_get_pending(const SmDeviceVerdict *verdict, guint index);
/* What the device is busy with, for messages: the first pending operation's name, else the
 * transfer mode, else "a transfer". */
const char *sm_verdict_pending_name(const SmDeviceVerdict *verdict);
/* Pending operation `index` in a few words for tables (newly allocated). */
char *sm_verdict_pending_summary(const SmDeviceVerdict *verdict, guint index);
json_object *sm_verdict_to_json(const SmDeviceVerdict *verdict);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmDevice, sm_device_free);

G_END_DECLS
