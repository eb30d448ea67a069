/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A plugin module for the ABI tests: built once per ABI_VERSION it claims (and with the
 * SmProbe size it claims), so the registry's refusal of other versions is tested on real
 * modules. It judges nothing. */
#include "probe-abi.h"

#include <gmodule.h>

#ifndef ABI_VERSION
#define ABI_VERSION SM_PROBE_ABI_VERSION
#endif
#ifndef ABI_STRUCT_SIZE
#define ABI_STRUCT_SIZE sizeof(SmProbe)
#endif

static SmDeviceVerdict *analyse(const SmProbe *probe, const SmStream *stream,
                                const SmDevice *device)
{
    (void)stream;
    return sm_verdict_set_unknown(sm_verdict_new(device, probe->name), "abi test probe");
}

static const char *const types[] = {"abi-test-device", NULL};

#ifndef V1_LAYOUT
static const SmProbe probe = {
    .abi_version = ABI_VERSION,
    .struct_size = ABI_STRUCT_SIZE,
    .name = "abi-test",
    .description = "ABI test probe",
    .device_types = types,
    .analyse = analyse,
};
#endif

#ifdef V1_LAYOUT
/* The SmProbe of ABI 1 exactly as it was: no struct_size, name at offset 8. */
static const struct {
    guint abi_version;
    const char *name;
    const char *description;
    const char *const *device_types;
    const char *const *section_names;
    gpointer inspect, analyse;
} v1_probe = {1, "abi-test-v1", "an ABI 1 plugin", types, NULL, NULL, (gpointer)analyse};
#endif

G_MODULE_EXPORT const SmProbe *sm_probe_module_get(void);

G_MODULE_EXPORT const SmProbe *sm_probe_module_get(void)
{
#ifdef V1_LAYOUT
    return (const SmProbe *)&v1_probe;
#else
    return &probe;
#endif
}
