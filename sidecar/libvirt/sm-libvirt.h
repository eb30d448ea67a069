/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrate under libvirt: the conventions the qemu hook, the per-domain holder and filter
 * and the CLI share (runtime files in the domain's own libvirt directory), and their helpers. */
#pragma once

#include <glib.h>

#include "gate.h"

G_BEGIN_DECLS

/* Runtime files, all in the domain's directory (LIB_DIR/domain-ID-SHORTNAME), which libvirt
 * creates before `start begin` and deletes when the domain stops. */
#define SM_LV_MONITOR "monitor.sock"               /* libvirt's monitor path: ours once gated */
#define SM_LV_QEMU_SOCK "safe-migrate-qemu.sock"   /* QEMU's listening socket, renamed aside */
#define SM_LV_PROBE_SOCK "safe-migrate-probe.sock" /* the filter's own QMP client comes in here */
#define SM_LV_CONTROL_SOCK "safe-migrate.ctl"      /* `safe-migrate status` asks here */
#define SM_LV_STATE "safe-migrate.state"       /* a libvirt command held across a filter restart */
#define SM_LV_STOPPED "safe-migrate.stopped"   /* the probe's stop is not yet undone by cont */
#define SM_LV_GREETING "safe-migrate.greeting" /* QEMU's greeting, for a restarted filter */
#define SM_LV_ARGS "safe-migrate.args"         /* the filter's argv, NUL-separated */
/* migrate-continue went to QEMU and the filter has not yet seen QEMU's outcome. */
#define SM_LV_SWITCHING "safe-migrate.switching"
#define SM_LV_LOG "safe-migrate.log" /* LOG_DIR/NAME.safe-migrate.log, next to libvirt's */
/* Tests only: a phase name written here makes the filter stop itself (SIGSTOP) once there,
 * so a test can kill it at that exact point. Only root can write the domain's directory. */
#define SM_LV_FAULT "safe-migrate.fault"
#define SM_LV_DEFAULT_LIB_DIR "/var/lib/libvirt/qemu"

/* fds the holder hands the filter. */
#define SM_LV_FD_LIBVIRT 3
#define SM_LV_FD_QEMU 4

/* Exit codes of the filter that the holder reads. */
enum {
    SM_LV_FILTER_EXIT_CLOSED = 0, /* a side closed: the connection is over */
    SM_LV_FILTER_EXIT_USAGE = 2,  /* cannot run at all: the holder relays alone */
};

/* The domain's directory "LIB_DIR/domain-ID-*" (libvirt shortens the name), or NULL. */
char *sm_lv_domain_dir(const char *lib_dir, int id, GError **error);
/* defaults.conf, then vms.d/NAME.conf when it exists; use-fix* fallbacks are refused (the
 * filter cannot see the destination's fix state: libvirt owns that domain). */
gboolean sm_lv_load_policy(SmPolicy *policy, const char *config_dir, const char *name,
                           GError **error);
/* Connects to a unix socket; -1 with errno on failure. */
int sm_lv_connect_unix(const char *path);

G_END_DECLS
