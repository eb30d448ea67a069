/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The device-state probe layer: reads QEMU's own serialization of device state, finds the
 * devices in the QOM tree and lets probes (built-in or GModule plugins) judge each device. */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include "qmp.h"

G_BEGIN_DECLS

#define SM_PROBE_ERROR (sm_probe_error_quark())
GQuark sm_probe_error_quark(void);

typedef enum {
    SM_PROBE_ERROR_FORMAT,      /* the stream is not a device-state stream we can walk */
    SM_PROBE_ERROR_UNREACHABLE, /* the VM (QMP) cannot be reached */
    SM_PROBE_ERROR_CAPTURE,     /* QEMU refused or failed to write its device state */
    SM_PROBE_ERROR_PLUGIN,      /* a plugin module could not be loaded */
    SM_PROBE_ERROR_MIGRATING,   /* a migration owns the VM's device state now */
} SmProbeErrorCode;

/* ---- The device-state stream (xen-save-devices-state / migration format) ---------------- */

/* Record types of migration/savevm.c. */
enum {
    SM_VM_EOF = 0x00,
    SM_VM_SECTION_START = 0x01,
    SM_VM_SECTION_PART = 0x02,
    SM_VM_SECTION_END = 0x03,
    SM_VM_SECTION_FULL = 0x04,
    SM_VM_SUBSECTION = 0x05,
    SM_VM_VMDESCRIPTION = 0x06,
    SM_VM_CONFIGURATION = 0x07,
    SM_VM_COMMAND = 0x08,
    SM_VM_SECTION_FOOTER = 0x7e,
};
#define SM_VM_FILE_MAGIC 0x5145564du /* "QEVM" */
#define SM_VM_FILE_VERSION 3u

typedef struct {
    guint8 type;         /* SM_VM_SECTION_FULL / START / PART / END */
    guint32 section_id;  /* as in the header and the footer */
    char *idstr;         /* e.g. "0000:00:02.0/1/usb-storage"; NULL for PART / END */
    guint32 instance_id; /* 0 for PART / END */
    guint32 version_id;  /* 0 for PART / END */
    gsize header_offset; /* the section type byte */
    gsize body_offset;   /* first byte after the header */
    gsize footer_offset; /* the 0x7e footer byte: the body is [body_offset, footer_offset) */
} SmSection;

/* A walked stream. The stream carries no section lengths: the walker delimits every section
 * by its footer (0x7e + be32 section id) followed by a well-formed next header or by EOF,
 * backtracking over false footers, and accepts only a walk that ends exactly at EOF. A probe
 * then decodes the sections it knows field by field and must land exactly on the footer. */
typedef struct SmStream SmStream;

/* Never returns NULL: a stream that cannot be walked to its end is "incomplete": it has no
 * sections and says why. The bytes are referenced, not copied. */
SmStream *sm_stream_parse(GBytes *bytes);
void sm_stream_free(SmStream *stream);

gboolean sm_stream_is_complete(const SmStream *stream);
const char *sm_stream_get_error(const SmStream *stream); /* NULL when complete */
guint sm_stream_get_n_sections(const SmStream *stream);
const SmSection *sm_stream_get_section(const SmStream *stream, guint index);
/* The FULL/START section with this idstr and instance id, or NULL. */
const SmSection *sm_stream_find_section(const SmStream *stream, const char *idstr,
                                        guint32 instance_id);
const guint8 *sm_stream_get_data(const SmStream *stream, gsize *len);

/* Bounds-checked big-endian reader over one section body. Every read fails (returns FALSE,
 * sets error once) rather than run past the body. */
typedef struct {
    const guint8 *data;
    gsize end; /* the footer offset: nothing at or past it is readable */
    gsize pos;
    guint32 section_id;
    const char *error; /* first failure, static string */
} SmReader;

void sm_reader_init(SmReader *reader, const SmStream *stream, const SmSection *section);
gboolean sm_reader_u8(SmReader *reader, guint8 *out);
gboolean sm_reader_be32(SmReader *reader, guint32 *out);
gboolean sm_reader_be64(SmReader *reader, guint64 *out);
gboolean sm_reader_bool(SmReader *reader, gboolean *out); /* byte 0 or 1, anything else fails */
gboolean sm_reader_bytes(SmReader *reader, gsize n, const guint8 **out);
gboolean sm_reader_skip(SmReader *reader, gsize n);
/* If the next bytes are a subsection of `vmsd_name` (0x05, len, "vmsd_name/...", be32
 * version), consumes the header and returns TRUE with its name and version; otherwise
 * consumes nothing and returns FALSE (as QEMU's loader decides). */
gboolean sm_reader_subsection(SmReader *reader, const char *vmsd_name, char **name,
                              guint32 *version);
/* TRUE when the decode ended exactly at the section footer. */
gboolean sm_reader_at_footer(const SmReader *reader);

/* ---- Devices and verdicts --------------------------------------------------------------- */

typedef enum { SM_STATE_IDLE, SM_STATE_BUSY, SM_STATE_UNKNOWN } SmState;
const char *sm_state_to_string(SmState state);

/* Whether QEMU >= 9.1's scsi-disk property migrate-emulated-scsi-request exists / is on. */
typedef enum { SM_FIX_UNKNOWN, SM_FIX_ABSENT, SM_FIX_DISABLED, SM_FIX_ENABLED } SmFix;
const char *sm_fix_to_string(SmFix fix);

/* A device found in the QOM tree, with the facts probes need. Probes may add facts. */
typedef struct {
    char *qom_path; /* "/machine/peripheral/usbcd" */
    char *id;       /* qdev id, NULL when it has none */
    char *type;     /* QOM type, "usb-storage" */
    /* qdev_get_dev_path() of the device as QEMU names sections by it ("0000:00:02.0/1"),
     * NULL when it could not be determined. */
    char *dev_path;
    GHashTable *facts; /* string -> string, e.g. "scsi.qom_path", "scsi.fix" */
} SmDevice;

SmDevice *sm_device_new(const char *qom_path, const char *id, const char *type,
                        const char *dev_path);
void sm_device_free(SmDevice *device);
void sm_device_set_fact(SmDevice *device, const char *key, const char *value);
const char *sm_device_get_fact(const SmDevice *device, const char *key);
/* The fact every probe's inspect() sets when the device has a migration fix of its own:
 * "absent" / "disabled" / "enabled". The sidecar compares it across both ends. */
#define SM_FACT_FIX "fix"
SmFix sm_device_get_fix(const SmDevice *device); /* SM_FIX_UNKNOWN when not set */
/* The fact discovery or a probe's inspect() sets when the device's state can never be judged,
 * whatever the guest does (QEMU cannot migrate it, or its layout or topology is one the probe
 * does not decode); its value says why, in one line. Holding cannot change such a device's
 * verdict (always unknown, with this reason), so the gate refuses it at preflight, from
 * discovery alone. */
#define SM_FACT_UNSUPPORTED "unsupported"
/* Set by discovery for USB devices: the QOM type of the controller whose bus they sit on. */
#define SM_FACT_USB_CONTROLLER_TYPE "usb.controller_type"

/* A SCSI request the device holds in its state. */
typedef struct {
    guint8 cdb[16];
    guint32 tag;
    guint32 lun;
    gboolean retry;    /* to be re-issued on the destination */
    gboolean emulated; /* served from a QEMU-emulated buffer (not the DMA data path) */
    /* The stream carries what the destination needs to finish it: DMA requests (data saved,
     * or re-issued when retry), never emulated ones in 7.2 or with the fix off, and with the
     * fix on only when the saved buffer covers what the guest has yet to fetch (QEMU 10.0
     * saves it empty once the transfer started). */
    gboolean migrates;
    gint64 bytes; /* bytes buffered for the guest, -1 if not known */
} SmPendingRequest;

typedef struct {
    char *qom_path;
    char *id;
    char *type;
    char *probe;   /* name of the probe that judged */
    char *section; /* idstr of the device's main section, NULL if not found */
    /* IDLE: no transaction in flight. BUSY: a transaction is in flight. UNKNOWN: the state
     * could not be read with certainty (never reported as idle). */
    SmState state;
    /* Switching over now keeps the in-flight transaction intact (idle, or busy with all
     * state inside the stream). Always FALSE when UNKNOWN. */
    gboolean safe;
    char *reason;         /* one line: why this verdict */
    char *mode;           /* transport phase, e.g. BOT "CBW" / "DATAIN"; NULL if none */
    gint64 bytes_pending; /* bytes the guest has yet to transfer, -1 if not known */
    GPtrArray *pending;   /* SmPendingRequest* */
    SmFix fix;
    json_object *details; /* probe-specific facts (object), owned */
    /* UNKNOWN that no wait can change ("layout not understood"): refused, never held. Set
     * by sm_verdict_set_unsupported(); FALSE for a transient unknown. */
    gboolean final;
} SmDeviceVerdict;

SmDeviceVerdict *sm_verdict_new(const SmDevice *device, const char *probe);
/* Marks the verdict unknown (not safe) with a reason. Returns the verdict. */
__attribute__((format(printf, 2, 3))) SmDeviceVerdict *
sm_verdict_set_unknown(SmDeviceVerdict *verdict, const char *fmt, ...);
/* As sm_verdict_set_unknown, and final: the probe does not understand this layout. */
__attribute__((format(printf, 2, 3))) SmDeviceVerdict *
sm_verdict_set_unsupported(SmDeviceVerdict *verdict, const char *fmt, ...);
void sm_verdict_free(SmDeviceVerdict *verdict);
json_object *sm_verdict_to_json(const SmDeviceVerdict *verdict);
/* What the device is busy with, for messages: the first pending SCSI command's name, else the
 * transfer mode, else "a transfer". */
const char *sm_verdict_pending_name(const SmDeviceVerdict *verdict);

/* SCSI opcode names ("GET EVENT STATUS NOTIFICATION"); "UNKNOWN" for others. */
const char *sm_scsi_opcode_name(guint8 opcode);

/* ---- Probes ----------------------------------------------------------------------------- */

#define SM_PROBE_ABI_VERSION 1u

typedef struct SmProbe SmProbe;
struct SmProbe {
    guint abi_version; /* SM_PROBE_ABI_VERSION */
    const char *name;
    const char *description;
    const char *const *device_types;  /* QOM types it judges, NULL-terminated */
    const char *const *section_names; /* vmsd names it decodes, NULL-terminated */
    /* Optional: gathers facts over QMP (read-only queries such as qom-get) into
     * device->facts before the state is captured. */
    gboolean (*inspect)(const SmProbe *probe, QmpClient *qmp, SmDevice *device, GError **error);
    /* Judges one device from the stream and its facts. Must not fail: returns UNKNOWN with a
     * reason when unsure. The stream may be incomplete. */
    SmDeviceVerdict *(*analyse)(const SmProbe *probe, const SmStream *stream,
                                const SmDevice *device);
};

/* A plugin module (.so in the plugin directory) exports this function. */
#define SM_PROBE_MODULE_SYMBOL "sm_probe_module_get"
typedef const SmProbe *(*SmProbeModuleGetFunc)(void);

/* The built-in usb-storage (BOT) + scsi-disk probe. */
const SmProbe *sm_usb_storage_probe(void);

typedef struct SmRegistry SmRegistry;
SmRegistry *sm_registry_new(void); /* holds the built-in probes */
void sm_registry_free(SmRegistry *registry);
/* Adds a probe (not copied; must outlive the registry). Later additions win for a type. */
gboolean sm_registry_add(SmRegistry *registry, const SmProbe *probe, GError **error);
gboolean sm_registry_load_module(SmRegistry *registry, const char *path, GError **error);
/* Loads every *.so of dir; a module that fails is an error (nothing silently skipped). */
gboolean sm_registry_load_dir(SmRegistry *registry, const char *dir, GError **error);
guint sm_registry_get_n_probes(const SmRegistry *registry);
const SmProbe *sm_registry_get_probe(const SmRegistry *registry, guint index);
const SmProbe *sm_registry_find_for_type(const SmRegistry *registry, const char *qom_type);

/* ---- Talking to QEMU -------------------------------------------------------------------- */

/* QEMU's serialization of all device state (no RAM), via add-fd + xen-save-devices-state
 * live=false + remove-fd: QEMU never opens a path. It stores the migration global run state
 * as "running". On a running VM the command stops it as SAVE_VM, which device models react
 * to (EHCI cancels in-flight packets): call it only on a stopped VM (sm_probe_vm does). */
GBytes *sm_capture_device_state(QmpClient *qmp, GError **error);
/* QEMU 7.2 keeps the fd of a capture taken while the VM was stopped (its remove-fd acts only
 * on a running VM): call this once the VM runs again to close every fd set of our captures.
 * Best effort, errors ignored. sm_probe_vm does it after resuming. */
void sm_release_probe_fds(QmpClient *qmp);

/* The capture split in two for the gate, whose guest is stopped from pre-switchover until
 * migrate-continue: everything but the save itself happens before (prepare: the memfd is
 * emptied and handed to QEMU with add-fd while the VM runs) or after (release: remove-fd),
 * so that at switchover the only command is xen-save-devices-state into that fd. One memfd
 * serves every attempt; the stream is mapped, never copied. */
typedef struct SmCapture SmCapture;
SmCapture *sm_capture_new(GError **error);
void sm_capture_free(SmCapture *capture);
/* Empties the memfd and adds it to QEMU (a new fd set, tagged as ours). */
gboolean sm_capture_prepare(SmCapture *capture, QmpClient *qmp, GError **error);
/* The one command at switchover (the VM must be stopped). The bytes map the memfd: drop them
 * before the next prepare. */
GBytes *sm_capture_take(SmCapture *capture, QmpClient *qmp, GError **error);
/* Gives the fd set back (best effort; 7.2 closes it only once the VM runs, see above). */
void sm_capture_release(SmCapture *capture, QmpClient *qmp);

/* For a probe on behalf of anyone but the migration's own gate (status, list --probe): FALSE
 * with SM_PROBE_ERROR_MIGRATING when a migration waits at pre-switchover or is in its device
 * phase. That migration has stored the run state the destination resumes with, and a capture
 * would overwrite it with "running" (a paused source would come up running there). */
gboolean sm_probe_switchover_free(QmpClient *qmp, GError **error);

/* Devices of types any registered probe understands, from /machine/peripheral,
 * /machine/peripheral-anon and /machine/unattached, with dev_path resolved when possible and,
 * for USB devices, the controller's type (SM_FACT_USB_CONTROLLER_TYPE). A device whose section
 * name cannot be derived is marked SM_FACT_UNSUPPORTED. Fails (closed) when a container QEMU
 * has cannot be listed or lists entries of a shape not understood. */
GPtrArray *sm_discover_devices(QmpClient *qmp, const SmRegistry *registry, GError **error);
/* sm_discover_devices, then every device's probe gathers its facts (fix state...) with
 * read-only queries; the device state is not captured. */
GPtrArray *sm_inspect_devices(QmpClient *qmp, const SmRegistry *registry, GError **error);

typedef struct {
    char *qemu_version; /* "7.2.22" */
    GPtrArray *devices; /* SmDeviceVerdict* */
    char *stream_error; /* NULL when the stream was walked completely */
    gsize stream_bytes;
    gint64 capture_us; /* wall time of the capture command */
} SmReport;

/* Offline: judge devices against a captured stream. */
SmReport *sm_report_from_stream(GBytes *state, GPtrArray *devices, const SmRegistry *registry,
                                const char *qemu_version);
/* The whole thing, as the sidecar calls it: discovery and inspection, then the capture. The
 * guest never sees a capture of its running self: a running VM is stopped with an ordinary
 * `stop`, captured and resumed (only if that stop is what stopped it, on every outcome), and
 * refused while a migration is in progress; a stopped VM is captured as it is. Errors only
 * when the VM cannot be reached or refuses the capture; per-device doubt is an UNKNOWN
 * verdict instead. */
SmReport *sm_probe_vm(QmpClient *qmp, const SmRegistry *registry, GError **error);
void sm_report_free(SmReport *report);
json_object *sm_report_to_json(const SmReport *report);
/* The first device that is not safe to switch over, or NULL when all are. */
const SmDeviceVerdict *sm_report_first_unsafe(const SmReport *report);
char *sm_report_to_table(const SmReport *report);

/* Autoptr support (the trailing semicolons let cppcheck, which does not expand GLib's
 * macro, parse the header). */
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmStream, sm_stream_free);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmDevice, sm_device_free);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmDeviceVerdict, sm_verdict_free);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmRegistry, sm_registry_free);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmReport, sm_report_free);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmCapture, sm_capture_free);

G_END_DECLS
