/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The built-in usb-storage probe (USB mass storage over Bulk-Only Transport with scsi-disk)
 * and its typed verdict detail: the BOT transport state, the LUNs and the SCSI requests the
 * device holds, reached with sm_usb_storage_detail(). */
#pragma once

#include "probe-abi.h"

G_BEGIN_DECLS

#define SM_USB_STORAGE_MAX_LUNS 16     /* usb-storage's SCSI bus: max_target 0, max_lun 15 */
#define SM_USB_STORAGE_MAX_REQUESTS 64 /* per LUN; more is not a state QEMU gets into */

/* A SCSI request the device holds in its state. */
typedef struct {
    guint8 cdb[16];
    guint32 tag;
    guint32 lun;
    gboolean retry;    /* to be re-issued on the destination */
    gboolean emulated; /* served from a QEMU-emulated buffer (not the DMA data path) */
    /* The stream carries what the destination needs to finish it: DMA requests (data saved,
     * or re-issued when retry), never emulated ones in 7.2 or with the fix off, and with the
     * fix on only when the saved buffer covers what the guest has yet to fetch (QEMU 10.0
     * saves it empty once the transfer started). */
    gboolean migrates;
    gint64 bytes; /* bytes buffered for the guest, -1 if not known */
} SmScsiRequest;

/* One decoded LUN (scsi-disk section). */
typedef struct {
    guint32 lun;
    char type[64];     /* "scsi-cd", "scsi-hd" */
    char section[256]; /* its section's idstr (QEMU bounds idstrs to 255 bytes) */
    guint requests;
    gboolean tray_open;
    guint32 sense_len;
    guint8 unit_attention_key;
} SmUsbStorageLun;

/* What the probe decoded, as far as it got (the has_* flags say how far; the arrays are valid
 * up to their counts only). */
typedef struct {
    gboolean unsupported; /* refused before decoding (see the verdict's reason) */
    gboolean has_transport;
    /* vmstate_usb_msd: the USB device and the BOT transport */
    guint8 usb_addr;
    guint32 usb_state;
    const char *bot_mode; /* "CBW", "DATAOUT", "DATAIN", "CSW" */
    guint32 data_len, scsi_len, scsi_off;
    guint32 csw_tag, csw_residue;
    guint8 csw_status;
    gboolean has_luns;
    guint n_luns;
    gboolean has_scsi_section; /* luns[0]'s section was found: scsi_section */
    gboolean has_busy_lun;     /* the device has several LUNs and one holds requests */
    guint32 busy_lun;
    gboolean has_saved_bytes; /* a DATA-IN pending: the bytes the stream saved for it */
    gint64 saved_bytes;
    guint n_requests; /* the requests of the busy LUN, in the verdict's pending order */
    SmUsbStorageLun luns[SM_USB_STORAGE_MAX_LUNS];
    char scsi_section[256];
    SmScsiRequest requests[SM_USB_STORAGE_MAX_REQUESTS];
} SmUsbStorageDetail;

const SmProbe *sm_usb_storage_probe(void);
/* The usb-storage detail of a verdict, NULL if the verdict is another probe's. */
const SmUsbStorageDetail *sm_usb_storage_detail(const SmDeviceVerdict *verdict);

/* SCSI opcode names ("GET EVENT STATUS NOTIFICATION"); "UNKNOWN" for others. */
const char *sm_scsi_opcode_name(guint8 opcode);

G_END_DECLS
