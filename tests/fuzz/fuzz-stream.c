/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target for the device-state stream walker and the usb-storage probe: any input
 * must give a verdict (unknown with a reason when in doubt), never a crash or a bad read;
 * "safe" only for an idle device or one whose every pending request migrates; and the probe's
 * typed detail agrees with the verdict. */
#include "probe.h"
#include "usb-storage.h"

#include <stdint.h>

/* Safe means switching over now loses nothing: idle, or busy with all the state inside the
 * stream. A final verdict is an unknown one. */
static gboolean verdict_consistent(const SmDeviceVerdict *v)
{
    if (v->final && (v->state != SM_STATE_UNKNOWN || v->safe))
        return FALSE;
    if (!v->safe)
        return TRUE;
    if (v->state == SM_STATE_IDLE)
        return TRUE;
    if (v->state != SM_STATE_BUSY || sm_verdict_get_n_pending(v) == 0)
        return FALSE;
    for (guint i = 0; i < sm_verdict_get_n_pending(v); i++) {
        if (!sm_verdict_get_pending(v, i)->migrates)
            return FALSE;
    }
    return TRUE;
}

/* The devices the verdicts are asked for: a usb-storage CD-ROM on two ports, and a usb-bot
 * with a CD-ROM on LUN 0 and a disk on LUN 1, with the LUN facts inspect() would set (without
 * them the probe refuses before decoding anything). */
static SmDevice *device(gsize setup, const char *fix)
{
    static const char *const paths[] = {"0000:00:02.0/1", "0000:00:02.0/2", "0000:00:02.0/1"};
    gboolean bot = setup == 2;
    SmDevice *dev = sm_device_new("/machine/peripheral/usbcd", "usbcd",
                                  bot ? "usb-bot" : "usb-storage", paths[setup]);
    sm_device_set_fact(dev, SM_FACT_FIX, fix);
    sm_device_set_fact(dev, "usb-storage.luns", bot ? "2" : "1");
    sm_device_set_fact(dev, "usb-storage.lun0.type", "scsi-cd");
    sm_device_set_fact(dev, "usb-storage.lun0.addr", "0:0:0");
    if (bot) {
        sm_device_set_fact(dev, "usb-storage.lun1.type", "scsi-hd");
        sm_device_set_fact(dev, "usb-storage.lun1.addr", "0:0:1");
        sm_device_set_fact(dev, "usb-storage.lun1.id", "disk1");
    }
    return dev;
}

/* The typed detail agrees with the generic verdict, and every way of printing it works. */
static gboolean detail_consistent(const SmDeviceVerdict *v)
{
    const SmUsbStorageDetail *d = sm_usb_storage_detail(v);
    guint n = sm_verdict_get_n_pending(v);
    if (!d || (n && d->n_requests != n) || d->n_luns > SM_USB_STORAGE_MAX_LUNS)
        return FALSE;
    for (guint i = 0; i < n; i++) {
        g_autofree char *summary = sm_verdict_pending_summary(v, i);
        if (!summary || sm_verdict_get_pending(v, i)->migrates != d->requests[i].migrates)
            return FALSE;
    }
    return sm_verdict_pending_name(v) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy so the sanitizer sees any read past the end. */
    GBytes *bytes = g_bytes_new(data, size);
    SmStream *stream = sm_stream_parse(bytes);
    const SmProbe *probe = sm_usb_storage_probe();
    static const char *const fixes[] = {"absent", "disabled", "enabled", NULL};
    for (gsize f = 0; f < G_N_ELEMENTS(fixes); f++) {
        for (gsize setup = 0; setup < 3; setup++) {
            SmDevice *dev = device(setup, fixes[f]);
            SmDeviceVerdict *v = probe->analyse(probe, stream, dev);
            if (!v || !v->reason || (v->state == SM_STATE_UNKNOWN && v->safe) ||
                !verdict_consistent(v) || !detail_consistent(v)) {
                __builtin_trap();
            }
            json_object_put(sm_verdict_to_json(v));
            sm_verdict_free(v);
            sm_device_free(dev);
        }
    }
    for (guint i = 0; i < sm_stream_get_n_sections(stream); i++) {
        const SmSection *s = sm_stream_get_section(stream, i);
        if (s->footer_offset + 5 > size || data[s->footer_offset] != SM_VM_SECTION_FOOTER) {
            __builtin_trap();
        }
    }
    sm_stream_free(stream);
    g_bytes_unref(bytes);
    return 0;
}
