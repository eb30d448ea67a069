/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Shared by the hook, the filter and the CLI: where a domain's runtime files are, and the
 * policy of a libvirt domain. */
#include "sm-libvirt.h"

#include <errno.h>
#include <string.h>

char *sm_lv_domain_dir(const char *lib_dir, int id, GError **error)
{
    g_autoptr(GDir) dir = g_dir_open(lib_dir, 0, error);
    if (!dir)
        return NULL;
    g_autofree char *prefix = g_strdup_printf("domain-%d-", id);
    const char *entry;
    while ((entry = g_dir_read_name(dir)))
        if (g_str_has_prefix(entry, prefix))
            return g_build_filename(lib_dir, entry, NULL);
    g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT, "no %s* in %s", prefix, lib_dir);
    return NULL;
}

gboolean sm_lv_load_policy(SmPolicy *policy, const char *config_dir, const char *name,
                           GError **error)
{
    g_autofree char *vm_file = g_strdup_printf("%s/vms.d/%s.conf", config_dir, name);
    gboolean has_vm = !strchr(name, '/') && g_file_test(vm_file, G_FILE_TEST_EXISTS);
    if (!sm_policy_load(policy, config_dir, has_vm ? name : NULL, error))
        return FALSE;
    if (policy->on_unquiesceable != SM_FALLBACK_ABORT) {
        g_autofree char *defaults = g_build_filename(config_dir, "defaults.conf", NULL);
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "%s: [gate] on-unquiesceable=%s is not supported under libvirt (the filter "
                    "cannot read the destination's fix state); use abort",
                    has_vm ? vm_file : defaults, sm_fallback_to_string(policy->on_unquiesceable));
        return FALSE;
    }
    return TRUE;
}
