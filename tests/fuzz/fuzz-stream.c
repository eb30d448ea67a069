/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target for the device-state stream walker and the usb-storage probe: any input
 * must give a verdict (unknown with a reason when in doubt), never a crash or a bad read;
 * and "safe" only for an idle device or one whose every pending request migrates. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy so the sanitizer sees any read past the end. */
    GBytes *bytes = g_bytes_new(data, size);
    SmStream *stream = sm_stream_parse(bytes);
    const SmProbe *probe = sm_usb_storage_probe();
    static const char *const fixes[] = {"absent", "disabled", "enabled", NULL};
    static const char *const paths[] = {"0000:00:02.0/1", "0000:00:02.0/2"};
    for (gsize f = 0; f < G_N_ELEMENTS(fixes); f++) {
        for (gsize p = 0; p < G_N_ELEMENTS(paths); p++) {
            SmDevice *dev =
                sm_device_new("/machine/peripheral/usbcd", "usbcd", "usb-storage", paths[p]);
            sm_device_set_fact(dev, SM_FACT_FIX, fixes[f]);
            SmDeviceVerdict *v = probe->analyse(probe, stream, dev);
            if (!v || !v->reason || (v->state == SM_STATE_UNKNOWN && v->safe) ||
                !verdict_consistent(v)) {
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
