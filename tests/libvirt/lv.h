/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The libvirt test rig seen from a test: the two hosts of tests/libvirt/rig.sh (started by
 * tests/libvirt/run.sh, which hands their directory over in SM_LV_RIG), virsh against either,
 * domains of the qtest guest made from the XML templates, and their QEMU processes. */
#pragma once

#include <gio/gio.h>
#include <glib.h>
#include "rig.h"

G_BEGIN_DECLS

typedef enum { LV_A, LV_B } LvHost;

/* How the USB CD-ROM reaches QEMU. */
typedef enum {
    LV_FORM_LIBVIRT, /* <disk device='cdrom'><target bus='usb'/>: usb-storage + scsi-hd */
    LV_FORM_BOT_CD,  /* usb-bot + scsi-cd through <qemu:commandline> */
    LV_FORM_LINUX,   /* the real Linux guest (tests/linux) with usb-bot + scsi-cd */
} LvForm;

/* NULL and a reason in *why when the rig is not there (SM_LV_RIG unset or a host down). */
const char *lv_rig_dir(char **why);
const char *lv_host_name(LvHost host);
/* "qemu:///system?socket=..." of a host (virConnectOpen; as a --p2p destination it must be
 * spelled qemu+unix:///system?socket=..., or the source libvirtd takes it for itself). */
char *lv_uri(LvHost host);

/* Runs virsh against `host` with the NULL-terminated arguments; returns its exit status
 * (-1 if it could not run) and its output in *out / *err if not NULL. */
int lv_virsh(LvHost host, char **out, char **err, const char *arg, ...) G_GNUC_NULL_TERMINATED;

typedef struct {
    const char *name;
    LvForm form;
    RigQemu qemu;
    const char *iso; /* NULL: the rig's default ISO */
    /* LV_FORM_LINUX: domain type ("kvm" or "qemu"), RAM, kernel, initrd, command line, and
     * the file the serial console is appended to. */
    const char *type;
    guint memory_mb;
    const char *kernel, *initrd, *cmdline, *console;
} LvDomainConfig;

/* The domain XML of the template for `config` (ISO and BIOS made in the rig's tmpdir). */
char *lv_domain_xml(const LvDomainConfig *config);
/* `virsh create` on host A; the domain is transient. Asserts success. */
void lv_domain_create(LvHost host, const LvDomainConfig *config);
/* `virsh destroy` if it runs on `host` (no assertion: for cleanup). */
void lv_domain_destroy(LvHost host, const char *name);
/* Whether the domain is listed as running on `host`. */
gboolean lv_domain_running(LvHost host, const char *name);

/* The domain's libvirt directory on `host` (DIR/H/lib/qemu/domain-ID-NAME), NULL if none. */
char *lv_domain_dir(LvHost host, const char *name);
/* Whether process `pid` is stopped (SIGSTOP: state T in /proc/PID/stat). */
gboolean lv_process_stopped(GPid pid);
/* The domain's qtest socket on `host` (in that host's private /var/lib/libvirt). */
char *lv_qtest_path(LvHost host, const char *name);
/* The QEMU process of the domain on `host` from libvirt's pidfile, 0 if none runs. */
GPid lv_qemu_pid(LvHost host, const char *name);
/* The gate's filter of the domain on `host`: the process in that host's namespace whose
 * arguments carry "safe-migrate" and the domain name; 0 if none runs. */
GPid lv_filter_pid(LvHost host, const char *name);
/* Waits up to timeout_ms for a filter of the domain on `host` other than `other` (0: any). */
GPid lv_wait_filter(LvHost host, const char *name, GPid other, guint timeout_ms);
/* Runs `virsh qemu-monitor-command NAME '{"execute":"query-status"}'` and returns the
 * status string ("running", "paused"...), NULL if libvirt could not reach QEMU. */
char *lv_query_status(LvHost host, const char *name);
/* Waits up to timeout_ms for process `pid` to be gone (a zombie counts as gone). */
gboolean lv_wait_gone(GPid pid, guint timeout_ms);
/* The host's QEMU log of the domain (command line, QEMU's stderr, libvirt's notes). */
char *lv_qemu_log(LvHost host, const char *name);
/* The filter's log of the domain on that host (LOG_DIR/NAME.safe-migrate.log). */
char *lv_filter_log(LvHost host, const char *name);
/* TRUE (the test skipped) without the rig, or without the build tree's hook linked in it. */
gboolean lv_skip_without_gate(void);
/* The plain JSON of what a query command returns on `host` (through virsh, so through the
 * filter when there is one). */
char *lv_qmp_return(LvHost host, const char *name, const char *command);
/* QEMU's migration settings on `host`, one text to compare: parameters, capabilities and
 * (with_fdsets) fd sets (what libvirt and the gate may set for a migration and must leave as
 * they were). */
char *lv_migration_settings(LvHost host, const char *name, gboolean with_fdsets);
/* How many fds QEMU holds in fd sets tagged as the gate's captures. */
guint lv_probe_fds(LvHost host, const char *name);
/* Waits until libvirt's migration job of the domain on A has sent RAM ("Memory processed"
 * above 0 in domjobinfo); FALSE after 30 s, or as soon as `migration` (if not NULL) ended. */
gboolean lv_wait_job_transferring(const char *name, GSubprocess *migration);

/* `virsh migrate --live NAME DEST` from `from` to the other host over loopback TCP;
 * `extra` (NULL-terminated or NULL) goes before the domain name, e.g. "--p2p". Returns
 * virsh's exit status, its stderr in *err. */
int lv_migrate(LvHost from, const char *name, const char *const *extra, char **err);
/* The same, in the background; lv_migrate_finish() waits and returns the exit status. */
GSubprocess *lv_migrate_start(LvHost from, const char *name, const char *const *extra);
int lv_migrate_finish(GSubprocess *migration, char **err);

/* The guest on a fresh domain: enumerated on `host`, power-on unit attention cleared. */
RigGuest *lv_guest_new(LvHost host, const char *name);
/* One DATA-IN transaction that must end GOOD with exactly `len` bytes. */
void lv_guest_answer(RigGuest *guest, RigCommand cmd, guint8 *out, gsize len);
/* The steady answer to `cmd` (asked until two answers agree: a CD-ROM reports a one-off media
 * event after power-on). */
void lv_guest_settle(RigGuest *guest, RigCommand cmd, guint8 *out, gsize len);

G_END_DECLS
