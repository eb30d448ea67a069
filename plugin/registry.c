/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Probe registry: the built-in probes plus probes loaded from GModule plugins. */
#define G_LOG_DOMAIN "sm-registry"

#include "registry.h"

#include <gmodule.h>
#include <stddef.h>

#include "usb-storage.h"

struct SmRegistry {
    GPtrArray *probes;  /* const SmProbe*, in order of addition */
    GPtrArray *modules; /* GModule*, kept open while the registry lives */
};

static void close_module(gpointer module)
{
    g_module_close(module);
}

GQuark sm_probe_error_quark(void)
{
    return g_quark_from_static_string("sm-probe-error-quark");
}

SmRegistry *sm_registry_new(void)
{
    SmRegistry *r = g_new0(SmRegistry, 1);
    r->probes = g_ptr_array_new();
    r->modules = g_ptr_array_new_with_free_func(close_module);
    g_ptr_array_add(r->probes, (gpointer)sm_usb_storage_probe());
    return r;
}

void sm_registry_free(SmRegistry *registry)
{
    if (!registry) {
        return;
    }
    g_ptr_array_unref(registry->probes);
    g_ptr_array_unref(registry->modules);
    g_free(registry);
}

/* Whether a probe speaks this library's ABI: the same major version, a minor version this
 * library knows, and an SmProbe at least as large as that version's. Says why not. Nothing
 * but abi_version (at offset 0 in every version) is read before the version is known good:
 * another version's structure has other fields at those offsets. */
static gboolean abi_compatible(const SmProbe *probe, GError **error)
{
    guint major = probe->abi_version >> 16, minor = probe->abi_version & 0xffff;
    if (major != SM_PROBE_ABI_MAJOR || minor > SM_PROBE_ABI_MINOR) {
        /* Before 2.0 the version was a plain number (1: plugins wrote verdict fields). */
        g_autofree char *theirs = major ? g_strdup_printf("%u.%u", major, minor)
                                        : g_strdup_printf("%u", probe->abi_version);
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN,
                    "built for probe ABI %s, this safe-migrate speaks %u.%u "
                    "(rebuild it against this version's probe-abi.h)",
                    theirs, SM_PROBE_ABI_MAJOR, SM_PROBE_ABI_MINOR);
        return FALSE;
    }
    if (probe->struct_size < offsetof(SmProbe, analyse) + sizeof(probe->analyse)) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN,
                    "its SmProbe is %" G_GSIZE_FORMAT " bytes, too small for ABI %u.%u",
                    probe->struct_size, major, minor);
        return FALSE;
    }
    return TRUE;
}

gboolean sm_registry_add(SmRegistry *registry, const SmProbe *probe, GError **error)
{
    if (!probe) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN, "no probe");
        return FALSE;
    }
    if (!abi_compatible(probe, error)) {
        return FALSE;
    }
    if (!probe->name || !probe->analyse || !probe->device_types) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN,
                    "probe %s: incomplete (a name, device types and analyse are required)",
                    probe->name ? probe->name : "?");
        return FALSE;
    }
    g_ptr_array_add(registry->probes, (gpointer)probe);
    return TRUE;
}

gboolean sm_registry_load_module(SmRegistry *registry, const char *path, GError **error)
{
    GModule *module = g_module_open(path, G_MODULE_BIND_LOCAL);
    if (!module) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN, "%s", g_module_error());
        return FALSE;
    }
    gpointer sym = NULL;
    if (!g_module_symbol(module, SM_PROBE_MODULE_SYMBOL, &sym) || !sym) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN, "%s: no symbol %s", path,
                    SM_PROBE_MODULE_SYMBOL);
        g_module_close(module);
        return FALSE;
    }
    const SmProbe *probe = ((SmProbeModuleGetFunc)sym)();
    if (!sm_registry_add(registry, probe, error)) {
        g_prefix_error(error, "%s: ", path);
        g_module_close(module);
        return FALSE;
    }
    /* The probe lives in the module's memory: keep it loaded. */
    g_ptr_array_add(registry->modules, module);
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_INFO, "MESSAGE", "loaded probe %s from %s",
                     probe->name, path);
    return TRUE;
}

static gint compare_names(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(char *const *)a, *(char *const *)b);
}

gboolean sm_registry_load_dir(SmRegistry *registry, const char *dir, GError **error)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, error);
    if (!d) {
        return FALSE;
    }
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(d))) {
        if (g_str_has_suffix(name, "." G_MODULE_SUFFIX)) {
            g_ptr_array_add(names, g_strdup(name));
        }
    }
    g_ptr_array_sort(names, compare_names); /* deterministic order: later wins per type */
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *path = g_build_filename(dir, names->pdata[i], NULL);
        if (!sm_registry_load_module(registry, path, error)) {
            return FALSE;
        }
    }
    return TRUE;
}

guint sm_registry_get_n_probes(const SmRegistry *registry)
{
    return registry->probes->len;
}

const SmProbe *sm_registry_get_probe(const SmRegistry *registry, guint index)
{
    g_return_val_if_fail(index < registry->probes->len, NULL);
    return registry->probes->pdata[index];
}

const SmProbe *sm_registry_find_for_type(const SmRegistry *registry, const char *qom_type)
{
    for (guint i = registry->probes->len; i-- > 0;) {
        const SmProbe *p = registry->probes->pdata[i];
        for (const char *const *t = p->device_types; *t; t++) {
            if (g_str_equal(*t, qom_type)) {
                return p;
            }
        }
    }
    return NULL;
}
