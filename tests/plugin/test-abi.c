/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The plugin ABI's versioning on real modules: a plugin built against the current ABI loads
 * (the example plugins and the test module), one claiming another major version (also one with
 * ABI 1's real structure), a newer minor one or a too small SmProbe is refused with an error
 * that says which version it has, naming the module. */
#include "probe.h"

#include <string.h>

static char *module_path(const char *rel)
{
    const char *b = g_getenv("SM_BUILD_ROOT");
    g_assert_nonnull(b);
    return g_build_filename(b, rel, NULL);
}

static void test_current_loads(void)
{
    static const char *const ok[] = {"tests/plugin/abi-current.so",
                                     "plugin/examples/sm-probe-example.so",
                                     "plugin/examples/sm-probe-example-virtio-scsi.so"};
    for (gsize i = 0; i < G_N_ELEMENTS(ok); i++) {
        g_autofree char *path = module_path(ok[i]);
        g_autoptr(SmRegistry) reg = sm_registry_new();
        g_autoptr(GError) error = NULL;
        g_assert_true(sm_registry_load_module(reg, path, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(sm_registry_get_n_probes(reg), ==, 2);
    }
}

static void test_other_version_refused(void)
{
    static const struct {
        const char *module, *says;
    } bad[] = {{"tests/plugin/abi-v1.so", "built for probe ABI 1,"},
               {"tests/plugin/abi-v1-layout.so", "built for probe ABI 1,"},
               {"tests/plugin/abi-next-major.so", "built for probe ABI 3.0"},
               {"tests/plugin/abi-next-minor.so", "built for probe ABI 2.1"},
               {"tests/plugin/abi-small.so", "too small"}};
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *path = module_path(bad[i].module);
        g_autoptr(SmRegistry) reg = sm_registry_new();
        g_autoptr(GError) error = NULL;
        g_assert_false(sm_registry_load_module(reg, path, &error));
        g_assert_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_PLUGIN);
        g_test_message("%s: %s", bad[i].module, error->message);
        g_assert_nonnull(strstr(error->message, path));
        g_assert_nonnull(strstr(error->message, bad[i].says));
        /* Nothing read from a structure of another layout (its name is elsewhere). */
        g_assert_null(strstr(error->message, "an ABI 1 plugin"));
        g_assert_cmpuint(sm_registry_get_n_probes(reg), ==, 1); /* the built-in one only */
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/plugin-abi/current-loads", test_current_loads);
    g_test_add_func("/plugin-abi/other-version-refused", test_other_version_refused);
    return g_test_run();
}
