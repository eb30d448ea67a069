/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Example plugin: a probe for usb-tablet that only locates the device's state section and
 * reports it as unknown, final ("layout not understood": it decodes nothing, so no wait
 * can make it idle) — the smallest complete use of the plugin interface, which is all of
 * probe-abi.h and nothing else. */
#include "probe-abi.h"

#include <gmodule.h>

static SmDeviceVerdict *analyse(const SmProbe *probe, const SmStream *stream,
                                const SmDevice *device)
{
    SmDeviceVerdict *v = sm_verdict_new(device, probe->name);
    const char *dev_path = sm_device_get_dev_path(device);
    if (!dev_path) {
        return sm_verdict_set_unsupported(v, "example: device path unknown");
    }
    g_autofree char *idstr = g_strdup_printf("%s/usb-ptr", dev_path);
    const SmSection *s = sm_stream_find_section(stream, idstr, 0);
    if (!s) {
        return sm_verdict_set_unsupported(v, "example: no section %s", idstr);
    }
    sm_verdict_set_section(v, idstr);
    /* Not decoded, so never "idle": the example only says where the state is. */
    return sm_verdict_set_unsupported(v, "example: section %s has %" G_GSIZE_FORMAT " bytes", idstr,
                                      s->footer_offset - s->body_offset);
}

/* Known before any capture: this probe decodes nothing, so the gate can refuse at once. */
static gboolean inspect(const SmProbe *probe, QmpClient *qmp, SmDevice *device, GError **error)
{
    (void)probe, (void)qmp, (void)error;
    sm_device_set_fact(device, SM_FACT_UNSUPPORTED,
                       "the example probe locates usb-tablet state but decodes none of it");
    return TRUE;
}

static const char *const types[] = {"usb-tablet", NULL};
static const char *const sections[] = {"usb-ptr", NULL};

static const SmProbe example_probe = {
    SM_PROBE_HEADER,
    .name = "example-usb-tablet",
    .description = "Example plugin: locates usb-tablet state, judges nothing",
    .device_types = types,
    .section_names = sections,
    .inspect = inspect,
    .analyse = analyse,
};

G_MODULE_EXPORT const SmProbe *sm_probe_module_get(void);

G_MODULE_EXPORT const SmProbe *sm_probe_module_get(void)
{
    return &example_probe;
}
