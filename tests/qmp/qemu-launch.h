/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Starts a real, paused QEMU (7.2 or 10.0, from the test environment) with a QMP unix socket,
 * for the libqmp integration tests. A missing QEMU is a test failure, never a skip. */
#pragma once

#include <glib.h>

typedef struct {
    const char *label;       /* test path component, e.g. "qemu72" */
    const char *binary_env;  /* SM_QEMU72 / SM_QEMU10 */
    const char *datadir_env; /* SM_QEMU10_DATADIR or NULL */
    const char *fallback;    /* used when the variable is unset (running outside meson) */
    int major, minor;
} QemuVariant;

extern const QemuVariant qemu_variants[2];

typedef struct {
    GPid pid;
    char *dir;
    char *socket_path;
    char *address; /* "unix:..." */
} Qemu;

/* NULL (and the current test marked failed) if QEMU is missing or does not start. */
Qemu *qemu_start(const QemuVariant *variant);
void qemu_stop(Qemu *qemu); /* SIGKILL, reap, remove files */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Qemu, qemu_stop)
