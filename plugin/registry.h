/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The probe registry: the built-in probes plus probes loaded from GModule plugins, each
 * checked against the plugin ABI it was built for; and the probe layer's error domain. */
#pragma once

#include "probe-abi.h"

G_BEGIN_DECLS

#define SM_PROBE_ERROR (sm_probe_error_quark())
GQuark sm_probe_error_quark(void);

typedef enum {
    SM_PROBE_ERROR_FORMAT,      /* the stream is not a device-state stream we can walk */
    SM_PROBE_ERROR_UNREACHABLE, /* the VM (QMP) cannot be reached */
    SM_PROBE_ERROR_CAPTURE,     /* QEMU refused or failed to write its device state */
    SM_PROBE_ERROR_PLUGIN,      /* a plugin module could not be loaded */
    SM_PROBE_ERROR_MIGRATING,   /* a migration owns the VM's device state now */
    SM_PROBE_ERROR_LAYOUT,      /* a device's layout is not understood: it cannot be judged */
} SmProbeErrorCode;

typedef struct SmRegistry SmRegistry;
SmRegistry *sm_registry_new(void); /* holds the built-in probes */
void sm_registry_free(SmRegistry *registry);
/* Adds a probe (not copied; must outlive the registry). Later additions win for a type. A
 * probe built for another major ABI version, or a newer minor one, is refused (error
 * SM_PROBE_ERROR_PLUGIN saying which version it has and which this library speaks). */
gboolean sm_registry_add(SmRegistry *registry, const SmProbe *probe, GError **error);
gboolean sm_registry_load_module(SmRegistry *registry, const char *path, GError **error);
/* Loads every *.so of dir; a module that fails is an error (nothing silently skipped). */
gboolean sm_registry_load_dir(SmRegistry *registry, const char *dir, GError **error);
guint sm_registry_get_n_probes(const SmRegistry *registry);
const SmProbe *sm_registry_get_probe(const SmRegistry *registry, guint index);
const SmProbe *sm_registry_find_for_type(const SmRegistry *registry, const char *qom_type);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmRegistry, sm_registry_free);

G_END_DECLS
