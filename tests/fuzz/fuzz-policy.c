/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target for the policy loader: any file must load or fail with an error that
 * names the file, never crash; and a key=value from the command line likewise. */
#include "gate.h"

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The loader reads a path: an in-memory file behind /proc/self/fd keeps it off disk. */
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-policy.conf", MFD_CLOEXEC);
        if (fd < 0)
            __builtin_trap();
        g_snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        __builtin_trap();

    SmPolicy policy;
    sm_policy_init(&policy);
    GError *error = NULL;
    gboolean ok = sm_policy_load_file(&policy, path, &error);
    if (ok == (error != NULL))
        __builtin_trap();
    if (error) {
        /* Every message says which file it is about. */
        if (!strstr(error->message, path))
            __builtin_trap();
        g_clear_error(&error);
    } else {
        (void)sm_policy_check_complete(&policy, &error);
        g_clear_error(&error);
        (void)sm_fallback_to_string(policy.on_unquiesceable);
    }
    sm_policy_clear(&policy);

    /* The same bytes as a command-line setting: KEY=VALUE. */
    const uint8_t *eq = memchr(data, '=', size);
    if (eq) {
        g_autofree char *key = g_strndup((const char *)data, (gsize)(eq - data));
        g_autofree char *value = g_strndup((const char *)eq + 1, size - (gsize)(eq - data) - 1);
        sm_policy_init(&policy);
        ok = sm_policy_apply(&policy, key, value, &error);
        if (ok == (error != NULL))
            __builtin_trap();
        g_clear_error(&error);
        sm_policy_clear(&policy);
    }
    return 0;
}
