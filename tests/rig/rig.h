/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The two-QEMU test rig: real QEMU processes with a usb-storage CD-ROM, and a guest-side
 * driver that plays the guest's UHCI + USB + Bulk-Only Transport stack over qtest. */
#pragma once

#include <glib.h>
#include "qmp.h"

G_BEGIN_DECLS

#define RIG_ERROR (rig_error_quark())
GQuark rig_error_quark(void);
typedef enum {
    RIG_ERROR_SETUP,    /* the rig itself could not be set up */
    RIG_ERROR_VM_DIED,  /* the QEMU process went away */
    RIG_ERROR_TIMEOUT,  /* the guest-side transfer never completed */
    RIG_ERROR_USB,      /* a TD ended with an error (stall, babble, CRC/timeout) */
    RIG_ERROR_PROTOCOL, /* the device answered something BOT does not allow */
} RigErrorCode;

typedef enum { RIG_QEMU_72, RIG_QEMU_10 } RigQemu;

/* How each USB storage device is presented (the shapes users run). */
typedef enum {
    RIG_FORM_STORAGE_CD,   /* usb-storage, media=cdrom (scsi-cd): the default */
    RIG_FORM_STORAGE_DISK, /* usb-storage with a disk (scsi-hd): a USB stick */
    RIG_FORM_BOT_CD,       /* usb-bot + scsi-cd on LUN 0 (how Incus presents a CD-ROM) */
    RIG_FORM_BOT_CD_DISK,  /* usb-bot with scsi-cd on LUN 0 and scsi-hd on LUN 1 */
    RIG_FORM_NONE,         /* no storage device from the rig (extra_args bring their own) */
} RigForm;

/* The controller the storage devices sit on. The qtest guest drives UHCI only; the real
 * Linux guest any of them. */
typedef enum {
    RIG_CTRL_UHCI,      /* piix3-usb-uhci at 00:02.0, bus "uhci.0" (ports 1, 2) */
    RIG_CTRL_EHCI,      /* usb-ehci at 00:04.0, bus "ehci.0" */
    RIG_CTRL_ICH9_EHCI, /* ich9-usb-ehci1 at 00:1d.7 with ich9-usb-uhci1..3 companions */
    RIG_CTRL_XHCI,      /* qemu-xhci at 00:05.0, bus "xhci.0" */
} RigController;

/* The guest-visible hardware: UHCI at PCI 00:02.0 always (so sections are named
 * "0000:00:02.0/N/usb-storage"), and one storage device of `form` per entry of `n_disks` on
 * `controller` (ports 1.. on UHCI and EHCI). Disks are copies of the rig's disk image. */
typedef struct {
    RigQemu qemu;
    const char *machine; /* NULL = "pc" */
    gboolean incoming;   /* start with -incoming defer */
    const char *iso;     /* NULL = the rig's default ISO (rig_default_iso()) */
    guint n_disks;       /* 0 = 1 */
    const char *name;    /* used in file names and logs; NULL = "vm" */
    /* More QEMU arguments (further controllers, devices, drives); "%s" in one stands for the
     * ISO's path. NULL-terminated, or NULL. */
    const char *const *extra_args;
    RigForm form;
    RigController controller;
    const char *disk; /* NULL = a fresh copy of rig_default_disk() per VM chain */
    /* A real Linux guest (tests/linux) instead of the HLT BIOS + qtest: boots `kernel` with
     * `initrd` and `append`, `memory_mb` of RAM (0 = 256), `accel` (NULL = "tcg"), serial
     * console appended to the file `console` (one file can serve every VM of a migration
     * chain: only the side that runs writes), and exits instead of rebooting.
     * `memory_mb` sizes the HLT BIOS + qtest VM too (0 = 16). */
    const char *kernel, *initrd, *append, *console, *accel;
    guint memory_mb;
    /* Without a kernel: this BIOS image instead of the HLT one. */
    const char *bios;
    /* QEMU 7.2 under TCG loses guest stores across a migration when its RAM is a multiple of
     * 256 KiB (rig-vm.c, memory_arg()); the rig adds 8 KiB to avoid it. TRUE: exactly memory_mb,
     * for the tests that show why. */
    gboolean exact_memory;
} RigVmConfig;

typedef struct RigVm RigVm;

/* Directory for sockets, ISO and logs of this test process (removed at exit unless
 * SM_KEEP_TMP is set). Every process that names a path in it (a QEMU of the rig, one a
 * prepare script relaunched, a script, a gate) is killed when the test process ends, however
 * it ends (exit, abort, signal): at exit, or else by a watchdog process made with it. */
const char *rig_tmpdir(void);
/* The pids of the live processes whose command line names `path` or a path under it. */
GArray *rig_processes_naming(const char *path);
/* A process's state letter from /proc/PID/stat (R, S, T, Z...), 0 if there is none. */
char rig_process_state(GPid pid);
/* Path of a small ISO 9660 image made once per process; its content is predictable:
 * rig_iso_sector() gives the expected bytes of any 2048-byte sector. */
const char *rig_default_iso(GError **error);
gboolean rig_iso_sector(guint32 lba, guint8 out[2048]);
/* Path of a raw disk image (1 MiB of the same kind of pattern, made once per process) and
 * the expected bytes of its 512-byte sectors. rig_disk_copy() makes a private writable copy. */
const char *rig_default_disk(GError **error);
gboolean rig_disk_sector(guint32 lba, guint8 out[512]);
char *rig_disk_copy(const char *name, GError **error);
/* "usb-bot", "usb-storage": the QOM type of the USB device of a form. */
const char *rig_form_usb_type(RigForm form);
/* The READ CAPACITY(10) answer for the default ISO: last LBA and block size, big-endian. */
void rig_expected_read_capacity(guint8 out[8]);

/* The QEMU binary and its extra arguments for a version ("7.2" / "10.0" from SM_QEMU72 /
 * SM_QEMU10 + SM_QEMU10_DATADIR). */
const char *rig_qemu_name(RigQemu qemu);

RigVm *rig_vm_start(const RigVmConfig *config, GError **error);
/* Kills (SIGKILL) if still running, and every process that names its directory (a QEMU its
 * prepare script started), and removes its files. */
void rig_vm_free(RigVm *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RigVm, rig_vm_free)

QmpClient *rig_vm_qmp(RigVm *vm);
const char *rig_vm_qmp_path(RigVm *vm);
const char *rig_vm_qtest_path(RigVm *vm);
/* A second QMP monitor, for the sidecar under test (QEMU serves one client per monitor). */
const char *rig_vm_sidecar_qmp_path(RigVm *vm);
/* Writes a shell script that replaces this VM's process by a fresh QEMU with the same
 * configuration and socket paths (daemonized; with -incoming defer if `incoming`): what a
 * --dest-prepare command does. Returns its path. */
char *rig_vm_prepare_script(RigVm *vm, gboolean incoming, GError **error);
/* After the script ran: adopt the new process and reconnect QMP. */
gboolean rig_vm_reload(RigVm *vm, GError **error);
const char *rig_vm_name(RigVm *vm);
GPid rig_vm_pid(RigVm *vm);
/* Whether the process is still alive (reaps it if it died). */
gboolean rig_vm_alive(RigVm *vm);
/* Waits up to timeout_ms for the process to exit; returns TRUE if it exited, and how
 * (signal, or 0 and the exit status; both -1 for a relaunched process, which is not the
 * rig's child). */
gboolean rig_vm_wait_exit(RigVm *vm, guint timeout_ms, int *term_signal, int *exit_status);
/* QEMU's stderr so far (for diagnostics). */
char *rig_vm_stderr(RigVm *vm);

/* Plain migration with QMP: migrate-incoming on dest, migrate on source, wait for
 * "completed" (or failure) on the source. Capabilities in `caps` ("events", ...) are set on
 * both sides first. Returns the final source status string. */
char *rig_migrate(RigVm *src, RigVm *dst, const char *const *caps, GError **error);
/* A fresh unix migration URI in the rig's tmpdir. */
char *rig_migration_uri(void);
/* The VM's migration capabilities and parameters as QEMU reports them, one comparable string:
 * what a gate must leave as it found it. */
char *rig_vm_migration_settings(RigVm *vm);
/* Polls query-migrate on vm until status is one of `statuses` (NULL-terminated). */
char *rig_wait_migration_status(RigVm *vm, const char *const *statuses, guint timeout_ms,
                                GError **error);
/* query-migrate "status" of the VM through the test's monitor ("none" before any migration);
 * asserts the command succeeds. */
char *rig_vm_migration_status(RigVm *vm);
/* query-status "status" of the VM. */
char *rig_vm_runstate(RigVm *vm, GError **error);

/* ---- Guest-side driver ---------------------------------------------------------------- */

typedef struct RigGuest RigGuest;

/* Programs the UHCI of `vm` through qtest (PCI BAR, frame list, QH), resets and enables the
 * ports, enumerates every usb-storage device (SET_ADDRESS, SET_CONFIGURATION). Device N
 * (0-based) gets USB address N+1. */
RigGuest *rig_guest_new(RigVm *vm, GError **error);
void rig_guest_free(RigGuest *guest);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RigGuest, rig_guest_free)
/* After a migration: continue on whichever VM now holds the guest. Guest memory and the
 * controller state travelled with the migration; only the qtest connection changes. */
gboolean rig_guest_attach(RigGuest *guest, RigVm *vm, GError **error);
/* The same for a QEMU the rig did not start (a libvirt domain): by its qtest socket; `name`
 * is for messages. */
RigGuest *rig_guest_new_at(const char *qtest_path, const char *name, GError **error);
gboolean rig_guest_attach_at(RigGuest *guest, const char *qtest_path, const char *name,
                             GError **error);

/* Fills guest RAM with a byte, so that a migration has real pages to carry (zero pages cost
 * nothing and would make every migration instant). */
gboolean rig_guest_fill_ram(RigGuest *guest, guint64 addr, gsize size, guint8 value,
                            GError **error);

/* Bulk-Only Transport, split in the three phases so a test can stop between them. */
typedef struct {
    guint8 cdb[16];
    guint8 cdb_len;
    guint32 data_len; /* expected transfer length */
    gboolean data_in; /* direction (device to host) */
    guint8 lun;       /* the CBW's LUN (usb-bot: 0..15) */
} RigCommand;

gboolean rig_guest_send_cbw(RigGuest *guest, guint disk, const RigCommand *cmd, guint32 *tag,
                            GError **error);
/* Reads up to `len` bytes of DATA-IN; returns the count read, -1 on error. A short
 * transfer ends the phase. */
gssize rig_guest_data_in(RigGuest *guest, guint disk, guint8 *buf, gsize len, GError **error);
/* Sends `len` bytes of DATA-OUT; returns the count sent, -1 on error. */
gssize rig_guest_data_out(RigGuest *guest, guint disk, const guint8 *buf, gsize len,
                          GError **error);
/* Reads the CSW and checks its signature and tag against the last CBW of that disk. */
gboolean rig_guest_read_csw(RigGuest *guest, guint disk, guint8 *status, guint32 *residue,
                            GError **error);
/* The three phases in one go; `buf` receives the DATA-IN bytes. */
gboolean rig_guest_transact(RigGuest *guest, guint disk, const RigCommand *cmd, guint8 *buf,
                            gsize *len, guint8 *status, GError **error);

/* Ready-made commands. */
RigCommand rig_cmd_gesn(void);          /* GET EVENT STATUS NOTIFICATION, media class, 8 bytes */
RigCommand rig_cmd_read_capacity(void); /* READ CAPACITY(10), 8 bytes */
RigCommand rig_cmd_inquiry(void);       /* INQUIRY, 36 bytes */
RigCommand rig_cmd_test_unit_ready(void);
RigCommand rig_cmd_read10(guint32 lba, guint16 blocks); /* 2048-byte blocks */
/* On a disk (512-byte blocks). */
RigCommand rig_cmd_disk_read10(guint32 lba, guint16 blocks);
RigCommand rig_cmd_disk_write10(guint32 lba, guint16 blocks);
RigCommand rig_cmd_mode_sense6(guint8 page, guint8 alloc);
/* The same command for another LUN. */
RigCommand rig_cmd_lun(RigCommand cmd, guint8 lun);

/* ---- Test fixture: a source with the guest on it and a destination waiting ---------------- */

/* Asserting helpers, for tests (they abort the test on failure). */

/* One 8-byte DATA-IN transaction that must end GOOD with 8 bytes (GESN, READ CAPACITY). */
void rig_guest_answer8(RigGuest *guest, RigCommand cmd, guint8 out[8]);

typedef struct {
    RigQemu src_qemu, dst_qemu;
    const char *machine;   /* NULL = "pc" */
    const char *name;      /* VM names are NAME and NAME-dst; NULL = "src" / "dst" */
    gboolean no_dest;      /* only the source */
    gboolean exact_memory; /* RigVmConfig's: no TCG RAM workaround */
} RigPairConfig;

typedef struct {
    RigVm *src, *dst;
    RigGuest *guest;
    guint8 gesn[8];            /* the steady GESN answer */
    guint8 rdcap[8];           /* READ CAPACITY */
    char *src_addr, *dst_addr; /* "unix:" + each VM's sidecar monitor */
    char *uri;                 /* a fresh migration URI */
    char *prepare;             /* a dest-prepare script relaunching dst (NULL without dst) */
} RigPair;

/* Starts the VMs, enumerates the guest's devices on the source, clears the power-on unit
 * attention and media event, and learns the steady answers. */
void rig_pair_start(RigPair *pair, const RigPairConfig *config);
void rig_pair_clear(RigPair *pair);
/* Fetches the DATA-IN and CSW of the transaction left pending by a CBW, on whichever VM the
 * guest is attached to now, and checks the guest gets exactly `expected` with GOOD. */
void rig_pair_finish_pending(RigPair *pair, const guint8 expected[8]);
/* GESN, READ CAPACITY and a READ(10) all byte-correct on the VM holding the guest now. */
void rig_pair_assert_healthy(RigPair *pair);

G_END_DECLS
