/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Built-in probe for USB mass storage over Bulk-Only Transport (usb-storage, and usb-bot with
 * 1..16 LUNs) with scsi-disk (scsi-cd/scsi-hd): decodes the sections field by field and judges
 * whether a transaction is in flight and whether its state travels with the migration.
 * Layouts are those of QEMU 7.2 and 10.0. usb-uas is refused (QEMU cannot migrate it). */
#define G_LOG_DOMAIN "sm-usb-storage"

#include "probe.h"
#include "qmp-commands.h"

#include <string.h>

/* Facts gathered by inspect() (and set by hand for offline analysis): how many SCSI devices
 * sit on the device's bus, and for each (in LUN order) "usb-storage.lun<i>.qom_path", ".type"
 * ("scsi-cd"), ".addr" ("channel:id:lun", as QEMU names its section) and ".id". */
#define FACT_LUNS "usb-storage.luns"
#define FACT_LUN_PREFIX "usb-storage.lun"
#define FACT_FIX SM_FACT_FIX
#define MAX_LUNS 16 /* usb-storage's SCSI bus: max_target 0, max_lun 15 */

/* enum USBMSDMode of hw/usb/dev-storage.c (later QEMUs call CBW "NONE"; same values). */
static const char *const bot_modes[] = {"CBW", "DATAOUT", "DATAIN", "CSW"};
enum { BOT_CBW, BOT_DATAOUT, BOT_DATAIN, BOT_CSW };

typedef struct {
    guint8 addr;
    guint32 usb_state, setup_state, setup_len, setup_index;
    guint32 mode, scsi_len, scsi_off, data_len;
    guint32 csw_sig, csw_tag, csw_residue;
    guint8 csw_status;
} Msd;

/* vmstate_usb_msd "usb-storage" v1: VMSTATE_USB_DEVICE (vmstate_usb_device "USBDevice" v1:
 * u8 addr, i32 state, remote_wakeup, setup_state, setup_len, setup_index, u8[8] setup_buf),
 * then u32 mode, scsi_len, scsi_off, data_len, csw.sig, csw.tag, csw.residue, u8 csw.status.
 * Neither has subsections in 7.2 / 10.0, so any subsection means an unknown layout. */
static gboolean decode_msd(SmReader *r, Msd *m)
{
    guint32 wakeup;
    g_autofree char *sub = NULL;
    guint32 subv;

    if (!sm_reader_u8(r, &m->addr) || !sm_reader_be32(r, &m->usb_state) ||
        !sm_reader_be32(r, &wakeup) || !sm_reader_be32(r, &m->setup_state) ||
        !sm_reader_be32(r, &m->setup_len) || !sm_reader_be32(r, &m->setup_index) ||
        !sm_reader_skip(r, 8)) {
        return FALSE;
    }
    if (sm_reader_subsection(r, "USBDevice", &sub, &subv)) {
        r->error = "unknown USBDevice subsection";
        return FALSE;
    }
    if (!sm_reader_be32(r, &m->mode) || !sm_reader_be32(r, &m->scsi_len) ||
        !sm_reader_be32(r, &m->scsi_off) || !sm_reader_be32(r, &m->data_len) ||
        !sm_reader_be32(r, &m->csw_sig) || !sm_reader_be32(r, &m->csw_tag) ||
        !sm_reader_be32(r, &m->csw_residue) || !sm_reader_u8(r, &m->csw_status)) {
        return FALSE;
    }
    if (sm_reader_subsection(r, "usb-storage", &sub, &subv)) {
        r->error = "unknown usb-storage subsection";
        return FALSE;
    }
    /* Values QEMU can never hold mean a layout we do not know (or corruption). */
    if (m->mode > BOT_CSW) {
        r->error = "BOT mode out of range";
        return FALSE;
    }
    if (m->csw_status > 1) {
        r->error = "CSW status out of range";
        return FALSE;
    }
    if ((gint32)m->setup_len < 0 || (gint32)m->setup_index < 0 || m->setup_len >= 4096 ||
        m->setup_index >= 4096) {
        r->error = "USB setup state out of range (QEMU's post_load would reject it)";
        return FALSE;
    }
    if (!sm_reader_at_footer(r)) {
        if (!r->error) {
            r->error = "data left before the section footer";
        }
        return FALSE;
    }
    return TRUE;
}

typedef enum { OPS_EMULATE, OPS_DMA, OPS_TARGET } Ops;

/* Which SCSIReqOps QEMU picked (hw/scsi/scsi-bus.c scsi_req_new, hw/scsi/scsi-disk.c
 * scsi_disk_reqops_dispatch): REPORT LUNS and requests for another LUN go to the bus's
 * target emulation; REQUEST SENSE goes there too when the device held sense data at the
 * time, which the stream does not record (the caller tries both). READ/WRITE go to the DMA
 * path; everything else is emulated by scsi-disk. */
static Ops scsi_disk_ops(guint8 op, guint32 req_lun, guint32 dev_lun, gboolean rs_target)
{
    if (req_lun != dev_lun || op == 0xa0 || (op == 0x03 && rs_target)) {
        return OPS_TARGET;
    }
    switch (op) {
    case 0x08:
    case 0x28:
    case 0xa8:
    case 0x88: /* READ 6/10/12/16 */
    case 0x0a:
    case 0x2a:
    case 0xaa:
    case 0x8a: /* WRITE 6/10/12/16 */
    case 0x2e:
    case 0xae:
    case 0x8e: /* WRITE AND VERIFY 10/12/16 */
        return OPS_DMA;
    default:
        return OPS_EMULATE;
    }
}

static gboolean is_dma_write(guint8 op)
{
    return op == 0x0a || op == 0x2a || op == 0xaa || op == 0x8a || op == 0x2e || op == 0xae ||
           op == 0x8e;
}

/* Transfer length field of a DMA WRITE CDB is non-zero (else QEMU's mode is NONE). */
static gboolean dma_write_has_data(const guint8 *cdb)
{
    switch (cdb[0]) {
    case 0x0a:
        return TRUE; /* 0 means 256 blocks */
    case 0x2a:
    case 0x2e:
        return (cdb[7] | cdb[8]) != 0;
    case 0xaa:
    case 0xae:
        return (cdb[6] | cdb[7] | cdb[8] | cdb[9]) != 0;
    default:
        return (cdb[10] | cdb[11] | cdb[12] | cdb[13]) != 0;
    }
}

/* Emulated commands whose direction is device-to-host or none: their saved buffer is
 * length-prefixed. Any other emulated command with a buffer cannot be sized from the stream. */
static gboolean emulated_not_to_dev(guint8 op)
{
    static const guint8 ok[] = {0x00, 0x03, 0x12, 0x1a, 0x1b, 0x1e, 0x25, 0x2b, 0x35,
                                0x43, 0x46, 0x4a, 0x51, 0x5a, 0x91, 0x9e, 0xad, 0xbd};
    return memchr(ok, op, sizeof(ok)) != NULL;
}

/* scsi_disk_save_request(): be64 sector, be32 sector_count, be32 buflen; if buflen: data-out
 * commands write iov_len raw bytes, others (unless being retried) be32 len + len bytes. */
static gboolean decode_disk_request(SmReader *r, SmPendingRequest *req)
{
    guint64 sector;
    guint32 count, buflen, len;
    if (!sm_reader_be64(r, &sector) || !sm_reader_be32(r, &count) || !sm_reader_be32(r, &buflen)) {
        return FALSE;
    }
    if (buflen == 0) {
        return TRUE;
    }
    if (is_dma_write(req->cdb[0]) && dma_write_has_data(req->cdb)) {
        if (req->emulated) {
            r->error = "cannot size an emulated data-out buffer";
            return FALSE;
        }
        /* scsi_init_iovec(): iov_len = MIN(sector_count * 512, buflen). */
        guint64 n = MIN((guint64)count * 512, (guint64)buflen);
        return sm_reader_skip(r, n);
    }
    if (req->emulated && !emulated_not_to_dev(req->cdb[0])) {
        r->error = "cannot size the buffer of this emulated command";
        return FALSE;
    }
    if (req->retry) {
        return TRUE;
    }
    if (!sm_reader_be32(r, &len)) {
        return FALSE;
    }
    if (len > buflen) { /* QEMU asserts iov_len <= buflen on load */
        r->error = "saved buffer longer than the request buffer";
        return FALSE;
    }
    req->bytes = len;
    return sm_reader_skip(r, len);
}

typedef struct {
    guint8 ua_key, ua_asc, ua_ascq;
    gboolean sense_is_ua;
    guint32 sense_len;
    gboolean media_changed, media_event, eject_request, tray_open, tray_locked;
} Disk;

/* vmstate_scsi_disk_state "scsi-disk" v1: VMSTATE_SCSI_DEVICE (vmstate_scsi_device
 * "SCSIDevice" v1: u8 ua.key, ua.asc, ua.ascq, bool sense_is_ua, u8[96] sense, u32 sense_len,
 * "requests" (put_scsi_requests: per request i8 1=retry/2, u8[16] cdb, be32 tag, be32 lun,
 * then the HBA's save_request (usb-storage has none) and the ops' save_request; i8 0 ends),
 * subsection "SCSIDevice/sense" u8[156]), then bool media_changed, media_event,
 * eject_request, tray_open, tray_locked. Emulated requests carry scsi_disk_save_request()
 * data only when migrate-emulated-scsi-request is on (QEMU >= 9.1); the stream does not say
 * so itself, which is why the fix state is an input here. */
static gboolean decode_disk(SmReader *r, SmFix fix, guint32 dev_lun, gboolean rs_target, Disk *k,
                            GPtrArray *reqs)
{
    g_autofree char *sub = NULL;
    guint32 subv;

    if (!sm_reader_u8(r, &k->ua_key) || !sm_reader_u8(r, &k->ua_asc) ||
        !sm_reader_u8(r, &k->ua_ascq) || !sm_reader_bool(r, &k->sense_is_ua) ||
        !sm_reader_skip(r, 96) || !sm_reader_be32(r, &k->sense_len)) {
        return FALSE;
    }
    for (guint n = 0;; n++) {
        guint8 marker;
        if (!sm_reader_u8(r, &marker)) {
            return FALSE;
        }
        if (marker == 0) {
            break;
        }
        if (marker > 2 || n >= 64) {
            r->error = "bad SCSI request marker";
            return FALSE;
        }
        SmPendingRequest *req = g_new0(SmPendingRequest, 1);
        g_ptr_array_add(reqs, req);
        const guint8 *cdb;
        req->retry = marker == 1;
        req->bytes = -1;
        if (!sm_reader_bytes(r, 16, &cdb) || !sm_reader_be32(r, &req->tag) ||
            !sm_reader_be32(r, &req->lun)) {
            return FALSE;
        }
        memcpy(req->cdb, cdb, 16);
        Ops ops = scsi_disk_ops(req->cdb[0], req->lun, dev_lun, rs_target);
        req->emulated = ops != OPS_DMA;
        switch (ops) {
        case OPS_DMA:
            req->migrates = TRUE;
            if (!decode_disk_request(r, req)) {
                return FALSE;
            }
            break;
        case OPS_EMULATE:
            if (fix == SM_FIX_UNKNOWN) {
                r->error = "emulated request pending and migrate-emulated-scsi-request unknown";
                return FALSE;
            }
            req->migrates = fix == SM_FIX_ENABLED;
            if (req->migrates && !decode_disk_request(r, req)) {
                return FALSE;
            }
            break;
        case OPS_TARGET:
            /* reqops_target_command has no save_request in any version: never migrates. */
            req->migrates = FALSE;
            break;
        }
    }
    while (sm_reader_subsection(r, "SCSIDevice", &sub, &subv)) {
        if (!g_str_equal(sub, "SCSIDevice/sense") || subv != 1) {
            r->error = "unknown SCSIDevice subsection";
            return FALSE;
        }
        if (k->sense_len <= 96) { /* only sent when needed */
            r->error = "sense subsection without long sense";
            return FALSE;
        }
        if (!sm_reader_skip(r, 252 - 96)) {
            return FALSE;
        }
        g_clear_pointer(&sub, g_free);
    }
    if (!sm_reader_bool(r, &k->media_changed) || !sm_reader_bool(r, &k->media_event) ||
        !sm_reader_bool(r, &k->eject_request) || !sm_reader_bool(r, &k->tray_open) ||
        !sm_reader_bool(r, &k->tray_locked)) {
        return FALSE;
    }
    if (sm_reader_subsection(r, "scsi-disk", &sub, &subv)) {
        r->error = "unknown scsi-disk subsection";
        return FALSE;
    }
    if (!sm_reader_at_footer(r)) {
        if (!r->error) {
            r->error = "data left before the section footer";
        }
        return FALSE;
    }
    return TRUE;
}

static gboolean same_requests(GPtrArray *a, GPtrArray *b)
{
    if (a->len != b->len) {
        return FALSE;
    }
    for (guint i = 0; i < a->len; i++) {
        const SmPendingRequest *x = a->pdata[i], *y = b->pdata[i];
        if (x->emulated != y->emulated || x->migrates != y->migrates || x->bytes != y->bytes) {
            return FALSE;
        }
    }
    return TRUE;
}

static void add_int(json_object *o, const char *k, gint64 v)
{
    json_object_object_add(o, k, json_object_new_int64(v));
}

/* QEMU's own answer on usb-uas (hw/usb/dev-uas.c: vmstate_usb_uas is .unmigratable in 7.2
 * and 10.0): `migrate` is refused with "non-migratable device" while one is plugged in. */
#define UAS_REASON                                                                                 \
    "usb-uas is not migratable: QEMU marks its state unmigratable and refuses to migrate the "     \
    "VM while it is plugged in (unplug it, or attach the disk as usb-storage or usb-bot)"

/* EHCI does not migrate its queues: the destination rebuilds them from guest memory, and QEMU
 * flushes the source's (catching unlinks the guest made) only for savevm, not for a live
 * migration (hw/usb/hcd-ehci.c, usb_ehci_vm_state_change). Through the gate, with no capture
 * of the running VM, the real Linux guest's kernel memory was corrupted after 3 of 52 EHCI
 * migrations (a jump to 0x1 from the timer path; list corruption freeing an SG_IO page), each
 * after a switchover judged idle; the stream carries nothing that tells when it is safe. */
#define EHCI_REASON                                                                                \
    "on an EHCI controller: QEMU does not migrate EHCI's transfer queues and a migrated guest "    \
    "can have its memory corrupted (attach the device to qemu-xhci or UHCI)"

/* One SCSI device on the storage device's bus, from the facts. */
typedef struct {
    guint index;
    const char *type;
    const char *addr; /* "channel:id:lun" */
    guint32 lun;
} Lun;

static const char *lun_fact(const SmDevice *device, guint i, const char *what)
{
    char key[64];
    g_snprintf(key, sizeof(key), "%s%u.%s", FACT_LUN_PREFIX, i, what);
    return sm_device_get_fact(device, key);
}

static void set_lun_fact(SmDevice *device, guint i, const char *what, const char *value)
{
    char key[64];
    g_snprintf(key, sizeof(key), "%s%u.%s", FACT_LUN_PREFIX, i, what);
    sm_device_set_fact(device, key, value);
}

/* The LUNs inspect() found, or NULL when the device was not (completely) inspected. */
static GArray *luns_from_facts(const SmDevice *device)
{
    const char *n = sm_device_get_fact(device, FACT_LUNS);
    guint64 count;
    if (!n || !g_ascii_string_to_unsigned(n, 10, 0, MAX_LUNS, &count, NULL)) {
        return NULL;
    }
    g_autoptr(GArray) luns = g_array_new(FALSE, TRUE, sizeof(Lun));
    for (guint i = 0; i < count; i++) {
        Lun l = {
            .index = i, .type = lun_fact(device, i, "type"), .addr = lun_fact(device, i, "addr")};
        const char *last = l.addr ? strrchr(l.addr, ':') : NULL;
        guint64 lun;
        if (!l.type || !last || !g_ascii_string_to_unsigned(last + 1, 10, 0, 255, &lun, NULL)) {
            return NULL;
        }
        l.lun = (guint32)lun;
        g_array_append_val(luns, l);
    }
    return g_steal_pointer(&luns);
}

/* Decodes the usb-storage section of the device (BOT transport state). */
static const char *decode_msd_section(const SmStream *stream, const char *msd_id, Msd *m)
{
    const SmSection *ms = sm_stream_find_section(stream, msd_id, 0);
    if (!ms) {
        return "no such section in the device state";
    }
    if (ms->type != SM_VM_SECTION_FULL || ms->version_id != 1) {
        return "section version not known";
    }
    SmReader r;
    sm_reader_init(&r, stream, ms);
    return decode_msd(&r, m) ? NULL : r.error;
}

/* Decodes one LUN's scsi-disk section. REQUEST SENSE may have gone either way (see
 * scsi_disk_ops): both readings are decoded and only an unambiguous result is accepted.
 * Returns the requests, or NULL with *err set. */
static GPtrArray *decode_lun(const SmStream *stream, const SmSection *ds, SmFix fix, guint32 lun,
                             Disk *disk, const char **err)
{
    g_autoptr(GPtrArray) reqs = NULL;
    *err = NULL;
    for (int rs_target = 0; rs_target <= 1; rs_target++) {
        g_autoptr(GPtrArray) try = g_ptr_array_new_with_free_func(g_free);
        Disk k = {0};
        SmReader r;
        sm_reader_init(&r, stream, ds);
        if (!decode_disk(&r, fix, lun, rs_target, &k, try)) {
            *err = *err ? *err : r.error;
            continue;
        }
        if (reqs && !same_requests(reqs, try)) {
            *err = "requests decode two ways";
            return NULL;
        }
        if (!reqs) {
            reqs = g_steal_pointer(&try);
            *disk = k;
        }
    }
    if (!reqs && !*err) {
        *err = "undecodable";
    }
    return g_steal_pointer(&reqs);
}

/* Every scsi-disk section under this device must belong to a LUN inspect() found: one it
 * did not (hot-plugged since, or missed) would go unjudged. Returns the stray idstr. */
static const char *stray_scsi_section(const SmStream *stream, const char *dev_path, GArray *luns)
{
    g_autofree char *prefix = g_strdup_printf("%s/", dev_path);
    for (guint s = 0; s < sm_stream_get_n_sections(stream); s++) {
        const char *id = sm_stream_get_section(stream, s)->idstr;
        if (!id || !g_str_has_prefix(id, prefix) || !g_str_has_suffix(id, "/scsi-disk")) {
            continue;
        }
        gboolean known = FALSE;
        for (guint i = 0; i < luns->len && !known; i++) {
            g_autofree char *want =
                g_strdup_printf("%s%s/scsi-disk", prefix, g_array_index(luns, Lun, i).addr);
            known = g_str_equal(id, want);
        }
        if (!known) {
            return id;
        }
    }
    return NULL;
}

static void msd_details(SmDeviceVerdict *v, const Msd *m)
{
    add_int(v->details, "usb_addr", m->addr);
    add_int(v->details, "usb_state", m->usb_state);
    json_object_object_add(v->details, "bot_mode", json_object_new_string(v->mode));
    add_int(v->details, "data_len", m->data_len);
    add_int(v->details, "scsi_len", m->scsi_len);
    add_int(v->details, "scsi_off", m->scsi_off);
    add_int(v->details, "csw_tag", m->csw_tag);
    add_int(v->details, "csw_residue", m->csw_residue);
    add_int(v->details, "csw_status", m->csw_status);
}

/* Decodes every LUN's section into v->pending (each request keeps its LUN) and the per-LUN
 * details; *busy_lun is the index of the one LUN holding requests, -1 if none. FALSE (with
 * v unknown) when a LUN cannot be decoded or several hold requests. */
static gboolean decode_luns(SmDeviceVerdict *v, const SmStream *stream, const SmDevice *device,
                            GArray *luns, SmFix fix, gint *busy_lun)
{
    json_object *list = json_object_new_array();
    json_object_object_add(v->details, "luns", list);
    *busy_lun = -1;
    for (guint i = 0; i < luns->len; i++) {
        const Lun *l = &g_array_index(luns, Lun, i);
        g_autofree char *id = g_strdup_printf("%s/%s/scsi-disk", device->dev_path, l->addr);
        const SmSection *ds = sm_stream_find_section(stream, id, 0);
        if (!ds) {
            sm_verdict_set_unknown(v, "no section %s (SCSI device type %s)", id, l->type);
            return FALSE;
        }
        if (i == 0) {
            json_object_object_add(v->details, "scsi_section", json_object_new_string(id));
        }
        if (ds->type != SM_VM_SECTION_FULL || ds->version_id != 1) {
            sm_verdict_set_unknown(v, "scsi-disk section %s version %u not known", id,
                                   ds->version_id);
            return FALSE;
        }
        Disk disk = {0};
        const char *err;
        g_autoptr(GPtrArray) reqs = decode_lun(stream, ds, fix, l->lun, &disk, &err);
        if (!reqs) {
            sm_verdict_set_unknown(v, "scsi-disk section %s: %s", id, err);
            return FALSE;
        }
        json_object *o = json_object_new_object();
        add_int(o, "lun", l->lun);
        json_object_object_add(o, "type", json_object_new_string(l->type));
        json_object_object_add(o, "section", json_object_new_string(id));
        add_int(o, "requests", reqs->len);
        json_object_object_add(o, "tray_open", json_object_new_boolean(disk.tray_open));
        add_int(o, "sense_len", disk.sense_len);
        add_int(o, "unit_attention_key", disk.ua_key);
        json_object_array_add(list, o);
        if (reqs->len == 0) {
            continue;
        }
        if (*busy_lun >= 0) {
            /* BOT carries one command at a time: two LUNs with requests is no state QEMU's
             * usb-storage can be in. */
            sm_verdict_set_unknown(v, "requests pending on LUN %u and LUN %u",
                                   g_array_index(luns, Lun, *busy_lun).lun, l->lun);
            return FALSE;
        }
        *busy_lun = (gint)i;
        for (guint k = 0; k < reqs->len; k++) {
            g_ptr_array_add(v->pending, g_memdup2(reqs->pdata[k], sizeof(SmPendingRequest)));
        }
    }
    return TRUE;
}

/* usb-storage serves DATA-IN from the request's buffer at scsi_off; a saved buffer shorter
 * than that does not carry the data. This is what QEMU 10.0 does for emulated requests even
 * with migrate-emulated-scsi-request on: emulate_read_data() has set iov_len to 0 before the
 * save, so the destination gets a fresh, uninitialised buffer instead of the result (no
 * crash, wrong bytes). Returns why the request does not migrate after all, or NULL. */
static const char *check_datain_buffer(SmDeviceVerdict *v, const Msd *m)
{
    if (v->pending->len == 0 || m->mode != BOT_DATAIN) {
        return NULL;
    }
    SmPendingRequest *first = v->pending->pdata[0];
    const char *why = NULL;
    guint64 needed = (guint64)m->scsi_off + m->scsi_len;
    if (first->migrates && !first->retry && m->scsi_len > 0 &&
        (first->bytes < 0 || (guint64)first->bytes < needed)) {
        first->migrates = FALSE;
        why = "its saved buffer is shorter than the data the guest has to fetch";
    }
    json_object_object_add(v->details, "saved_bytes", json_object_new_int64(first->bytes));
    first->bytes = m->scsi_len; /* what the device holds for the guest right now */
    return why;
}

/* The verdict from the transport state and the decoded requests. `lun` names the LUN in
 * the reason when the device has several ("" otherwise). */
static SmDeviceVerdict *judge(SmDeviceVerdict *v, const Msd *m, const char *lun,
                              const char *short_buffer)
{
    gboolean all_migrate = TRUE;
    for (guint i = 0; i < v->pending->len; i++) {
        all_migrate = all_migrate && ((SmPendingRequest *)v->pending->pdata[i])->migrates;
    }
    v->bytes_pending = (m->mode == BOT_DATAIN || m->mode == BOT_DATAOUT) ? m->data_len : 0;
    if (m->mode == BOT_CBW && v->pending->len == 0) {
        v->state = SM_STATE_IDLE;
        v->safe = TRUE;
        v->reason = g_strdup("no transaction in flight");
        return v;
    }
    v->state = SM_STATE_BUSY;
    if (v->pending->len == 0) {
        if (m->mode != BOT_CSW && m->scsi_len != 0) {
            return sm_verdict_set_unknown(v, "%s with %u buffered bytes but no SCSI request",
                                          v->mode, m->scsi_len);
        }
        /* A pending CSW (mode CSW, the SCSI request completed and released), or a data
         * phase with only residue left. The device's side is all in the usb-storage section
         * (csw.sig/tag/residue/status; usb_msd_handle_data answers the next bulk-in from it),
         * but the host controller's side is not: a transfer it has completed and not yet
         * written back to the guest's descriptor is not migrated, and the destination
         * replays that descriptor against a device that has moved on. A real Linux guest
         * showed exactly that after switching over in this state: a USB reset and a failed
         * READ(10) in 4 of 18 such switchovers, none in 102 others (tests/linux). The window
         * is a few microseconds of guest time, so holding costs one retry: hold. */
        v->safe = FALSE;
        v->reason = g_strdup_printf("BOT %s pending: the controller may hold a completed "
                                    "transfer the guest has not seen yet",
                                    v->mode);
        return v;
    }
    const SmPendingRequest *p = v->pending->pdata[0];
    v->safe = all_migrate;
    v->reason = g_strdup_printf("%s%s (0x%02x) pending in BOT %s: %s", lun,
                                sm_scsi_opcode_name(p->cdb[0]), p->cdb[0], v->mode,
                                all_migrate    ? (p->emulated ? "emulated, its buffer migrates"
                                                              : "DMA request, its data migrates")
                                : short_buffer ? short_buffer
                                : p->emulated  ? "emulated request whose buffer does not migrate"
                                               : "request whose data does not migrate");
    return v;
}

static SmDeviceVerdict *analyse(const SmProbe *probe, const SmStream *stream,
                                const SmDevice *device)
{
    SmDeviceVerdict *v = sm_verdict_new(device, probe->name);
    v->fix = sm_device_get_fix(device);
    const char *unsupported = g_str_equal(device->type, "usb-uas")
                                  ? UAS_REASON
                                  : sm_device_get_fact(device, SM_FACT_UNSUPPORTED);
    if (unsupported) {
        json_object_object_add(v->details, "unsupported", json_object_new_boolean(TRUE));
        return sm_verdict_set_unsupported(v, "%s", unsupported);
    }
    if (!sm_stream_is_complete(stream)) {
        return sm_verdict_set_unknown(v, "device state stream: %s", sm_stream_get_error(stream));
    }
    /* What no wait can change is final: the gate refuses it rather than holds. */
    if (!device->dev_path) {
        return sm_verdict_set_unsupported(v, "cannot tell which state section is this device's");
    }
    g_autoptr(GArray) luns = luns_from_facts(device);
    if (!luns) {
        return sm_verdict_set_unsupported(v, "the SCSI devices on its bus are not known");
    }
    g_autofree char *msd_id = g_strdup_printf("%s/usb-storage", device->dev_path);
    Msd m = {0};
    const char *err = decode_msd_section(stream, msd_id, &m);
    if (err) {
        return sm_verdict_set_unknown(v, "usb-storage section %s: %s", msd_id, err);
    }
    v->section = g_strdup(msd_id);
    v->mode = g_strdup(bot_modes[m.mode]);
    msd_details(v, &m);
    const char *stray = stray_scsi_section(stream, device->dev_path, luns);
    if (stray) {
        return sm_verdict_set_unknown(v, "section %s belongs to no SCSI device found on its bus",
                                      stray);
    }
    gint busy = -1;
    if (!decode_luns(v, stream, device, luns, v->fix, &busy)) {
        return v;
    }
    g_autofree char *lun = NULL;
    if (busy >= 0 && luns->len > 1) {
        const Lun *l = &g_array_index(luns, Lun, busy);
        const char *id = lun_fact(device, l->index, "id");
        lun = g_strdup_printf("LUN %u (%s%s%s): ", l->lun, l->type, id ? " " : "", id ? id : "");
        add_int(v->details, "busy_lun", l->lun);
    }
    const char *short_buffer = check_datain_buffer(v, &m);
    return judge(v, &m, lun ? lun : "", short_buffer);
}

/* ---- inspect(): the SCSI devices behind the USB device, over QMP ------------------------- */

typedef enum { QOM_OK, QOM_REFUSED, QOM_LOST } QomResult;

/* qom-list (prop NULL) or qom-get, type-checked by libqmp's typed layer: a reply of another
 * JSON type than `want` counts as refused (QEMU's answer is not one we understand), never as a
 * value. */
static QomResult qom(QmpClient *qmp, const char *path, const char *prop, json_type want,
                     json_object **out, char **klass, GError **error)
{
    g_autoptr(json_object) args = json_object_new_object();
    json_object_object_add(args, "path", json_object_new_string(path));
    if (prop) {
        json_object_object_add(args, "property", json_object_new_string(prop));
    }
    g_autoptr(GError) e = NULL;
    g_autoptr(json_object) v =
        qmp_command_execute(qmp, prop ? "qom-get" : "qom-list", args, NULL, 0, 0, want, &e);
    if (!v && !g_error_matches(e, QMP_ERROR, QMP_ERROR_COMMAND) &&
        !g_error_matches(e, QMP_ERROR, QMP_ERROR_PROTOCOL)) {
        g_propagate_error(error, g_steal_pointer(&e));
        return QOM_LOST;
    }
    if (!v) {
        if (klass) {
            *klass = g_strdup(qmp_error_get_class(e));
        }
        return QOM_REFUSED;
    }
    *out = g_steal_pointer(&v);
    return QOM_OK;
}

/* Name and type ("child<scsi-cd>") of a qom-list entry, NULL if it is not an object of two
 * strings. */
static gboolean entry(json_object *list, size_t i, const char **name, const char **type)
{
    json_object *e = json_object_array_get_idx(list, i), *n, *t;
    if (!json_object_is_type(e, json_type_object) || !json_object_object_get_ex(e, "name", &n) ||
        !json_object_object_get_ex(e, "type", &t) || !json_object_is_type(n, json_type_string) ||
        !json_object_is_type(t, json_type_string)) {
        return FALSE;
    }
    *name = json_object_get_string(n);
    *type = json_object_get_string(t);
    return TRUE;
}

static gchar *strip_kind(const char *type, const char *kind)
{
    gsize k = strlen(kind);
    if (!g_str_has_prefix(type, kind) || !g_str_has_suffix(type, ">") || strlen(type) <= k + 1) {
        return NULL;
    }
    return g_strndup(type + k, strlen(type) - k - 1);
}

/* The device's SCSI bus ("<id>.0"): exactly one child<SCSI>. */
static QomResult find_bus(QmpClient *qmp, const SmDevice *device, char **bus, GError **error)
{
    g_autoptr(json_object) props = NULL;
    QomResult r = qom(qmp, device->qom_path, NULL, json_type_array, &props, NULL, error);
    if (r != QOM_OK) {
        return r;
    }
    for (size_t i = 0; i < json_object_array_length(props); i++) {
        const char *name, *type;
        if (!entry(props, i, &name, &type) || !g_str_equal(type, "child<SCSI>")) {
            continue;
        }
        if (*bus) {
            g_clear_pointer(bus, g_free); /* two buses: not a layout we know */
            return QOM_REFUSED;
        }
        *bus = g_strdup_printf("%s/%s", device->qom_path, name);
    }
    return *bus ? QOM_OK : QOM_REFUSED;
}

/* The SCSI devices on the bus: usb-storage creates its own (child "legacy[0]"), usb-bot's come
 * from -device ...,bus=<id>.0 and sit elsewhere in the tree; the bus links every one of them
 * ("child[N]" of type link<scsi-...>), whose value is the device's path. */
static QomResult bus_devices(QmpClient *qmp, const char *bus, GPtrArray *paths, GPtrArray *types,
                             GError **error)
{
    g_autoptr(json_object) kids = NULL;
    QomResult r = qom(qmp, bus, NULL, json_type_array, &kids, NULL, error);
    for (size_t j = 0; r == QOM_OK && j < json_object_array_length(kids); j++) {
        const char *name, *type;
        if (!entry(kids, j, &name, &type)) {
            continue;
        }
        g_autofree char *child = strip_kind(type, "child<");
        g_autofree char *link = strip_kind(type, "link<");
        g_autofree char *path = NULL;
        if (child && g_str_has_prefix(child, "scsi-")) {
            path = g_strdup_printf("%s/%s", bus, name);
        } else if (link && g_str_has_prefix(link, "scsi-")) {
            g_autoptr(json_object) target = NULL;
            r = qom(qmp, bus, name, json_type_string, &target, NULL, error);
            path = r == QOM_OK ? g_strdup(json_object_get_string(target)) : NULL;
        }
        if (!path || g_ptr_array_find_with_equal_func(paths, path, g_str_equal, NULL)) {
            continue;
        }
        if (paths->len >= MAX_LUNS) {
            return QOM_REFUSED;
        }
        g_ptr_array_add(types, g_strdup(child ? child : link));
        g_ptr_array_add(paths, g_steal_pointer(&path));
    }
    return r;
}

/* channel:scsi-id:lun of one SCSI device. */
static QomResult scsi_addr(QmpClient *qmp, const char *path, gint64 addr[3], GError **error)
{
    static const char *const props[] = {"channel", "scsi-id", "lun"};
    for (int i = 0; i < 3; i++) {
        g_autoptr(json_object) v = NULL;
        QomResult r = qom(qmp, path, props[i], json_type_int, &v, NULL, error);
        if (r != QOM_OK) {
            return r;
        }
        addr[i] = json_object_get_int64(v);
        if (addr[i] < 0 || addr[i] > 255) {
            return QOM_REFUSED;
        }
    }
    return QOM_OK;
}

/* migrate-emulated-scsi-request of one SCSI device: QEMU < 9.1 has no such property. */
static QomResult scsi_fix(QmpClient *qmp, const char *path, SmFix *fix, GError **error)
{
    g_autoptr(json_object) v = NULL;
    g_autofree char *klass = NULL;
    QomResult r =
        qom(qmp, path, "migrate-emulated-scsi-request", json_type_boolean, &v, &klass, error);
    if (r == QOM_OK) {
        *fix = json_object_get_boolean(v) ? SM_FIX_ENABLED : SM_FIX_DISABLED;
    } else if (r == QOM_REFUSED) {
        /* "Property 'scsi-cd.migrate-emulated-scsi-request' not found": QEMU < 9.1. */
        *fix = g_strcmp0(klass, "GenericError") == 0 ? SM_FIX_ABSENT : SM_FIX_UNKNOWN;
        return QOM_OK;
    }
    return r;
}

static gint by_lun(gconstpointer a, gconstpointer b)
{
    const gint64 *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

/* Records the SCSI devices as facts, in LUN order, with one fix state for the device: the
 * LUNs' common one (an emulated request's layout depends on it), unset when they differ. */
static QomResult record_luns(QmpClient *qmp, SmDevice *device, GPtrArray *paths, GPtrArray *types,
                             GError **error)
{
    /* Sort keys: packed address, then the index into paths. */
    g_autoptr(GArray) order = g_array_new(FALSE, FALSE, sizeof(gint64) * 2);
    SmFix fix = SM_FIX_UNKNOWN;
    gboolean mixed = FALSE;
    g_autoptr(GPtrArray) addrs = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < paths->len; i++) {
        gint64 a[3], f_key[2];
        SmFix f;
        QomResult r = scsi_addr(qmp, paths->pdata[i], a, error);
        if (r == QOM_OK) {
            r = scsi_fix(qmp, paths->pdata[i], &f, error);
        }
        if (r != QOM_OK) {
            return r;
        }
        mixed = mixed || (i > 0 && f != fix);
        fix = f;
        g_ptr_array_add(addrs, g_strdup_printf("%" G_GINT64_FORMAT ":%" G_GINT64_FORMAT
                                               ":%" G_GINT64_FORMAT,
                                               a[0], a[1], a[2]));
        f_key[0] = (a[0] << 16) | (a[1] << 8) | a[2];
        f_key[1] = i;
        g_array_append_val(order, f_key);
    }
    g_array_sort(order, by_lun);
    for (guint k = 0; k < order->len; k++) {
        guint i = (guint)((gint64 *)order->data)[2 * k + 1];
        const char *path = paths->pdata[i];
        set_lun_fact(device, k, "qom_path", path);
        set_lun_fact(device, k, "type", types->pdata[i]);
        set_lun_fact(device, k, "addr", addrs->pdata[i]);
        if (g_str_has_prefix(path, "/machine/peripheral/") && !strchr(path + 20, '/')) {
            set_lun_fact(device, k, "id", path + 20);
        }
    }
    g_autofree char *n = g_strdup_printf("%u", paths->len);
    sm_device_set_fact(device, FACT_LUNS, n);
    if (!mixed && fix != SM_FIX_UNKNOWN) {
        sm_device_set_fact(device, FACT_FIX, sm_fix_to_string(fix));
    }
    return QOM_OK;
}

/* Only scsi-cd and scsi-hd have the "scsi-disk" layout decoded here. */
static const char *unsupported_lun(GPtrArray *types)
{
    for (guint i = 0; i < types->len; i++) {
        if (!g_str_equal(types->pdata[i], "scsi-cd") && !g_str_equal(types->pdata[i], "scsi-hd")) {
            return types->pdata[i];
        }
    }
    return NULL;
}

/* Finds the SCSI devices on the storage device's bus and reads their fix property. Read-only
 * QMP queries only. What QEMU refuses or answers in a shape we do not know leaves the LUN
 * facts unset (the verdict is unknown); a layout this probe cannot decode whatever the guest
 * does is marked unsupported, so the gate can refuse it before migrating. */
static gboolean inspect(const SmProbe *probe, QmpClient *qmp, SmDevice *device, GError **error)
{
    (void)probe;
    if (g_str_equal(device->type, "usb-uas")) {
        sm_device_set_fact(device, SM_FACT_UNSUPPORTED, UAS_REASON);
        return TRUE;
    }
    const char *ctrl = sm_device_get_fact(device, SM_FACT_USB_CONTROLLER_TYPE);
    if (ctrl && strstr(ctrl, "ehci")) {
        sm_device_set_fact(device, SM_FACT_UNSUPPORTED, EHCI_REASON);
        return TRUE;
    }
    g_autofree char *bus = NULL;
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) types = g_ptr_array_new_with_free_func(g_free);
    QomResult r = find_bus(qmp, device, &bus, error);
    if (r == QOM_OK) {
        r = bus_devices(qmp, bus, paths, types, error);
    }
    if (r == QOM_LOST) {
        return FALSE;
    }
    if (r == QOM_REFUSED) {
        sm_device_set_fact(device, SM_FACT_UNSUPPORTED,
                           "its SCSI bus could not be read as this probe knows it");
        return TRUE;
    }
    const char *odd = unsupported_lun(types);
    if (odd) {
        g_autofree char *why =
            g_strdup_printf("a %s on its SCSI bus: only scsi-cd and scsi-hd are decoded", odd);
        sm_device_set_fact(device, SM_FACT_UNSUPPORTED, why);
        return TRUE;
    }
    if (g_str_equal(device->type, "usb-storage") && paths->len != 1) {
        sm_device_set_fact(device, SM_FACT_UNSUPPORTED, "usb-storage without its one SCSI device");
        return TRUE;
    }
    r = record_luns(qmp, device, paths, types, error);
    if (r == QOM_REFUSED) {
        sm_device_set_fact(device, FACT_LUNS, NULL);
        sm_device_set_fact(device, SM_FACT_UNSUPPORTED,
                           "the addresses of the SCSI devices on its bus could not be read");
    }
    return r != QOM_LOST;
}

static const char *const device_types[] = {"usb-storage", "usb-bot", "usb-uas", NULL};
static const char *const section_names[] = {"usb-storage", "scsi-disk", NULL};

static const SmProbe usb_storage_probe = {
    .abi_version = SM_PROBE_ABI_VERSION,
    .name = "usb-storage",
    .description = "USB mass storage (Bulk-Only Transport: usb-storage, usb-bot) with scsi-disk",
    .device_types = device_types,
    .section_names = section_names,
    .inspect = inspect,
    .analyse = analyse,
};

const SmProbe *sm_usb_storage_probe(void)
{
    return &usb_storage_probe;
}
