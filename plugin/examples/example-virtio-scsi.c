/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Example plugin for a device that is not on USB: a virtio-scsi-pci controller, whose state
 * section QEMU names by the PCI path discovery gives it ("0000:00:06.0/virtio-scsi"). Like the
 * usb-tablet example it locates the section and decodes nothing (unknown, final). */
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
    /* virtio_bus_get_dev_path(): the virtio device is named by its PCI proxy's path. */
    g_autofree char *idstr = g_strdup_printf("%s/virtio-scsi", dev_path);
    const SmSection *s = sm_stream_find_section(stream, idstr, 0);
    if (!s) {
        return sm_verdict_set_unsupported(v, "example: no section %s", idstr);
    }
    sm_verdict_set_section(v, idstr);
    return sm_verdict_set_unsupported(v, "example: section %s has %" G_GSIZE_FORMAT " bytes", idstr,
                                      s->footer_offset - s->body_offset);
}

static gboolean inspect(const SmProbe *probe, QmpClient *qmp, SmDevice *device, GError **error)
{
    (void)probe, (void)qmp, (void)error;
    sm_device_set_fact(device, SM_FACT_UNSUPPORTED,
                       "the example probe locates virtio-scsi state but decodes none of it");
    return TRUE;
}

static const char *const types[] = {"virtio-scsi-pci", NULL};
static const char *const sections[] = {"virtio-scsi", NULL};

static const SmProbe example_probe = {
    SM_PROBE_HEADER,
    .name = "example-virtio-scsi",
    .description = "Example plugin: locates virtio-scsi-pci state (a non-USB device)",
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
