/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Built-in probe for USB mass storage over Bulk-Only Transport (usb-storage, and usb-bot with
 * 1..16 LUNs) with scsi-disk (scsi-cd/scsi-hd): decodes the sections field by field and judges
 * whether a transaction is in flight and whether its state travels with the migration.
 * Layouts are those of QEMU 7.2 and 10.0. usb-uas is refused (QEMU cannot migrate it). */
#define G_LOG_DOMAIN "sm-usb-storage"

#include "usb-storage.h"

#include "qmp-commands.h"

#include <string.h>

/* Facts gathered by inspect() (and set by hand for offline analysis): how many SCSI devices
 * sit on the device's bus, and for each (in LUN order) "usb-storage.lun<i>.qom_path", ".type"
 * ("scsi-cd"), ".addr" ("channel:id:lun", as QEMU names its section) and ".id". */
#define FACT_LUNS "usb-storage.luns"
#define FACT_LUN_PREFIX "usb-storage.lun"
#define FACT_FIX SM_FACT_FIX
#define MAX_LUNS SM_USB_STORAGE_MAX_LUNS

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
        return sm_reader_fail(r, "unknown USBDevice subsection");
    }
    if (!sm_reader_be32(r, &m->mode) || !sm_reader_be32(r, &m->scsi_len) ||
        !sm_reader_be32(r, &m->scsi_off) || !sm_reader_be32(r, &m->data_len) ||
        !sm_reader_be32(r, &m->csw_sig) || !sm_reader_be32(r, &m->csw_tag) ||
        !sm_reader_be32(r, &m->csw_residue) || !sm_reader_u8(r, &m->csw_status)) {
        return FALSE;
    }
    if (sm_reader_subsection(r, "usb-storage", &sub, &subv)) {
        return sm_reader_fail(r, "unknown usb-storage subsection");
    }
    /* Values QEMU can never hold mean a layout we do not know (or corruption). */
    if (m->mode > BOT_CSW) {
        return sm_reader_fail(r, "BOT mode out of range");
    }
    if (m->csw_status > 1) {
        return sm_reader_fail(r, "CSW status out of range");
    }
    if ((gint32)m->setup_len < 0 || (gint32)m->setup_index < 0 || m->setup_len >= 4096 ||
        m->setup_index >= 4096) {
        return sm_reader_fail(r, "USB setup state out of range (QEMU's post_load would reject it)");
    }
    return sm_reader_at_footer(r) || sm_reader_fail(r, "data left before the section footer");
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
static gboolean decode_disk_request(SmReader *r, SmScsiRequest *req)
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
            return sm_reader_fail(r, "cannot size an emulated data-out buffer");
        }
        /* scsi_init_iovec(): iov_len = MIN(sector_count * 512, buflen). */
        guint64 n = MIN((guint64)count * 512, (guint64)buflen);
        return sm_reader_skip(r, n);
    }
    if (req->emulated && !emulated_not_to_dev(req->cdb[0])) {
        return sm_reader_fail(r, "cannot size the buffer of this emulated command");
    }
    if (req->retry) {
        return TRUE;
    }
    if (!sm_reader_be32(r, &len)) {
        return FALSE;
    }
    if (len > buflen) { /* QEMU asserts iov_len <= buflen on load */
        return sm_reader_fail(r, "saved buffer longer than the request buffer");
    }
    req->bytes = len;
    return sm_reader_skip(r, len);
}

typedef struct {
    guint8 ua_key, ua_asc, ua_ascq;
    gboolean sense_is_ua;
    guint32 sense_len;
    gboolean media_changed, media_event, eject_request, tray_open, tray_locked;
    guint n_reqs;
    SmScsiRequest reqs[SM_USB_STORAGE_MAX_REQUESTS];
} Disk;

/* One entry of put_scsi_requests (after its marker): the CDB, tag and LUN, then the ops'
 * save_request data when that request's ops have any. */
static gboolean decode_disk_entry(SmReader *r, SmFix fix, guint32 dev_lun, gboolean rs_target,
                                  SmScsiRequest *req)
{
    const guint8 *cdb;
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
        return decode_disk_request(r, req);
    case OPS_EMULATE:
        if (fix == SM_FIX_UNKNOWN) {
            return sm_reader_fail(
                r, "emulated request pending and migrate-emulated-scsi-request unknown");
        }
        req->migrates = fix == SM_FIX_ENABLED;
        return !req->migrates || decode_disk_request(r, req);
    case OPS_TARGET:
    default:
        /* reqops_target_command has no save_request in any version: never migrates. */
        req->migrates = FALSE;
        return TRUE;
    }
}

/* vmstate_scsi_disk_state "scsi-disk" v1: VMSTATE_SCSI_DEVICE (vmstate_scsi_device
 * "SCSIDevice" v1: u8 ua.key, ua.asc, ua.ascq, bool sense_is_ua, u8[96] sense, u32 sense_len,
 * "requests" (put_scsi_requests: per request i8 1=retry/2, u8[16] cdb, be32 tag, be32 lun,
 * then the HBA's save_request (usb-storage has none) and the ops' save_request; i8 0 ends),
 * subsection "SCSIDevice/sense" u8[156]), then bool media_changed, media_event,
 * eject_request, tray_open, tray_locked. Emulated requests carry scsi_disk_save_request()
 * data only when migrate-emulated-scsi-request is on (QEMU >= 9.1); the stream does not say
 * so itself, which is why the fix state is an input here. */
static gboolean decode_disk(SmReader *r, SmFix fix, guint32 dev_lun, gboolean rs_target, Disk *k)
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
        if (marker > 2 || n >= SM_USB_STORAGE_MAX_REQUESTS) {
            return sm_reader_fail(r, "bad SCSI request marker");
        }
        SmScsiRequest *req = &k->reqs[k->n_reqs++];
        *req = (SmScsiRequest){.retry = marker == 1, .bytes = -1};
        if (!decode_disk_entry(r, fix, dev_lun, rs_target, req)) {
            return FALSE;
        }
    }
    while (sm_reader_subsection(r, "SCSIDevice", &sub, &subv)) {
        if (!g_str_equal(sub, "SCSIDevice/sense") || subv != 1) {
            return sm_reader_fail(r, "unknown SCSIDevice subsection");
        }
        if (k->sense_len <= 96) { /* only sent when needed */
            return sm_reader_fail(r, "sense subsection without long sense");
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
        return sm_reader_fail(r, "unknown scsi-disk subsection");
    }
    return sm_reader_at_footer(r) || sm_reader_fail(r, "data left before the section footer");
}

static gboolean same_requests(const Disk *a, const Disk *b)
{
    if (a->n_reqs != b->n_reqs) {
        return FALSE;
    }
    for (guint i = 0; i < a->n_reqs; i++) {
        const SmScsiRequest *x = &a->reqs[i], *y = &b->reqs[i];
        if (x->emulated != y->emulated || x->migrates != y->migrates || x->bytes != y->bytes) {
            return FALSE;
        }
    }
    return TRUE;
}

/* QEMU's own answer on usb-uas (hw/usb/dev-uas.c: vmstate_usb_uas is .unmigratable in 7.2
 * and 10.0): `migrate` is refused with "non-migratable device" while one is plugged in. */
#define UAS_REASON                                                                                 \
    "usb-uas is not migratable: QEMU marks its state unmigratable and refuses to migrate the "     \
    "VM while it is plugged in (unplug it, or attach the disk as usb-storage or usb-bot)"

/* One SCSI device on the storage device's bus, from the facts. */
typedef struct {
    guint index;
    const char *type;
    const char *addr; /* "channel:id:lun" */
    guint32 lun;
} Lun;

/* "usb-storage.lun<i>.<what>" into key (at least 64 bytes), without printf: the verdict is
 * computed while the guest is stopped. */
static const char *lun_key(char *key, guint i, const char *what)
{
    gsize n = strlen(FACT_LUN_PREFIX), w = strlen(what);
    memcpy(key, FACT_LUN_PREFIX, n);
    if (i >= 10) {
        key[n++] = (char)('0' + i / 10);
    }
    key[n++] = (char)('0' + i % 10);
    key[n++] = '.';
    memcpy(key + n, what, MIN(w, 63 - n));
    key[MIN(n + w, 63)] = '\0';
    return key;
}

static const char *lun_fact(const SmDevice *device, guint i, const char *what)
{
    char key[64];
    return sm_device_get_fact(device, lun_key(key, i, what));
}

static void set_lun_fact(SmDevice *device, guint i, const char *what, const char *value)
{
    char key[64];
    sm_device_set_fact(device, lun_key(key, i, what), value);
}

/* The LUNs inspect() found into luns[MAX_LUNS]; their count, or -1 when the device was not
 * (completely) inspected. */
static gint luns_from_facts(const SmDevice *device, Lun *luns)
{
    const char *n = sm_device_get_fact(device, FACT_LUNS);
    guint64 count;
    if (!n || !g_ascii_string_to_unsigned(n, 10, 0, MAX_LUNS, &count, NULL)) {
        return -1;
    }
    for (guint i = 0; i < count; i++) {
        Lun l = {
            .index = i, .type = lun_fact(device, i, "type"), .addr = lun_fact(device, i, "addr")};
        const char *last = l.addr ? strrchr(l.addr, ':') : NULL;
        guint64 lun;
        if (!l.type || !last || !g_ascii_string_to_unsigned(last + 1, 10, 0, 255, &lun, NULL)) {
            return -1;
        }
        l.lun = (guint32)lun;
        luns[i] = l;
    }
    return (gint)count;
}

/* "<a>/<b>/<c>" into out (size bytes); FALSE when it does not fit (no such idstr exists: QEMU
 * bounds them to 255 bytes). */
static gboolean join3(char *out, gsize size, const char *a, const char *b, const char *c)
{
    gsize la = strlen(a), lb = b ? strlen(b) : 0, lc = strlen(c);
    gsize total = la + 1 + (b ? lb + 1 : 0) + lc;
    if (total >= size) {
        return FALSE;
    }
    char *p = out;
    memcpy(p, a, la);
    p += la;
    *p++ = '/';
    if (b) {
        memcpy(p, b, lb);
        p += lb;
        *p++ = '/';
    }
    memcpy(p, c, lc);
    p[lc] = '\0';
    return TRUE;
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

/* Decodes one LUN's scsi-disk section into *disk. REQUEST SENSE may have gone either way (see
 * scsi_disk_ops): both readings are decoded and only an unambiguous result is accepted.
 * Returns NULL, or why it could not. */
static const char *decode_lun(const SmStream *stream, const SmSection *ds, SmFix fix, guint32 lun,
                              Disk *disk)
{
    const char *err = NULL;
    gboolean found = FALSE;
    for (int rs_target = 0; rs_target <= 1; rs_target++) {
        Disk *k = found ? &disk[1] : &disk[0];
        memset(k, 0, G_STRUCT_OFFSET(Disk, reqs));
        SmReader r;
        sm_reader_init(&r, stream, ds);
        if (!decode_disk(&r, fix, lun, rs_target, k)) {
            err = err ? err : r.error;
            continue;
        }
        if (found && !same_requests(&disk[0], &disk[1])) {
            return "requests decode two ways";
        }
        found = TRUE;
    }
    return found ? NULL : err ? err : "undecodable";
}

/* Whether idstr is "<dev_path>/<addr>/scsi-disk" for one of the LUNs. */
static gboolean lun_section(const char *id, gsize plen, const Lun *luns, guint n_luns)
{
    gsize mid = strlen(id) - plen - strlen("/scsi-disk");
    for (guint i = 0; i < n_luns; i++) {
        if (strlen(luns[i].addr) == mid && memcmp(id + plen, luns[i].addr, mid) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

/* Every scsi-disk section under this device must belong to a LUN inspect() found: one it
 * did not (hot-plugged since, or missed) would go unjudged. Returns the stray idstr. */
static const char *stray_scsi_section(const SmStream *stream, const char *dev_path, const Lun *luns,
                                      guint n_luns)
{
    gsize dlen = strlen(dev_path);
    for (guint s = 0; s < sm_stream_get_n_sections(stream); s++) {
        const char *id = sm_stream_get_section(stream, s)->idstr;
        if (!id || strncmp(id, dev_path, dlen) != 0 || id[dlen] != '/' ||
            !g_str_has_suffix(id + dlen + 1, "/scsi-disk")) {
            continue;
        }
        if (!lun_section(id, dlen + 1, luns, n_luns)) {
            return id;
        }
    }
    return NULL;
}

static void msd_detail(SmUsbStorageDetail *d, const Msd *m)
{
    d->has_transport = TRUE;
    d->usb_addr = m->addr;
    d->usb_state = m->usb_state;
    d->bot_mode = bot_modes[m->mode];
    d->data_len = m->data_len;
    d->scsi_len = m->scsi_len;
    d->scsi_off = m->scsi_off;
    d->csw_tag = m->csw_tag;
    d->csw_residue = m->csw_residue;
    d->csw_status = m->csw_status;
}

/* The LUN's entry of the detail, from its decoded section. */
static void lun_detail(SmUsbStorageDetail *d, const Lun *l, const char *id, const Disk *disk)
{
    SmUsbStorageLun *e = &d->luns[d->n_luns++];
    e->lun = l->lun;
    g_strlcpy(e->type, l->type, sizeof(e->type));
    g_strlcpy(e->section, id, sizeof(e->section));
    e->requests = disk->n_reqs;
    e->tray_open = disk->tray_open;
    e->sense_len = disk->sense_len;
    e->unit_attention_key = disk->ua_key;
}

/* Losing these costs the guest nothing: a GESN poll is repeated within seconds and carries no
 * state the guest keeps; TEST UNIT READY has no data at all. */
static gboolean harmless_opcode(guint8 opcode)
{
    return opcode == 0x4a || opcode == 0x00;
}

/* The decoded requests become the verdict's pending operations, in the same order. */
static void publish_requests(SmDeviceVerdict *v, const SmUsbStorageDetail *d)
{
    for (guint i = 0; i < d->n_requests; i++) {
        const SmScsiRequest *r = &d->requests[i];
        sm_verdict_add_pending(v, sm_scsi_opcode_name(r->cdb[0]), r->migrates,
                               harmless_opcode(r->cdb[0]), r->bytes);
    }
}

/* Decodes every LUN's section into the detail (the requests, each keeping its LUN, and the
 * per-LUN entries); *busy_lun is the index of the one LUN holding requests, -1 if none. FALSE
 * (with v unknown) when a LUN cannot be decoded or several hold requests. */
static gboolean decode_luns(SmDeviceVerdict *v, SmUsbStorageDetail *d, const SmStream *stream,
                            const char *dev_path, const Lun *luns, guint n_luns, SmFix fix,
                            gint *busy_lun)
{
    Disk disk[2];
    d->has_luns = TRUE;
    *busy_lun = -1;
    for (guint i = 0; i < n_luns; i++) {
        const Lun *l = &luns[i];
        char id[256];
        const SmSection *ds = join3(id, sizeof(id), dev_path, l->addr, "scsi-disk")
                                  ? sm_stream_find_section(stream, id, 0)
                                  : NULL;
        if (!ds) {
            sm_verdict_set_unknown(v, "no section %s/%s/scsi-disk (SCSI device type %s)", dev_path,
                                   l->addr, l->type);
            return FALSE;
        }
        if (i == 0) {
            d->has_scsi_section = TRUE;
            g_strlcpy(d->scsi_section, id, sizeof(d->scsi_section));
        }
        if (ds->type != SM_VM_SECTION_FULL || ds->version_id != 1) {
            sm_verdict_set_unknown(v, "scsi-disk section %s version %u not known", id,
                                   ds->version_id);
            return FALSE;
        }
        const char *err = decode_lun(stream, ds, fix, l->lun, disk);
        if (err) {
            sm_verdict_set_unknown(v, "scsi-disk section %s: %s", id, err);
            return FALSE;
        }
        lun_detail(d, l, id, &disk[0]);
        if (disk[0].n_reqs == 0) {
            continue;
        }
        if (*busy_lun >= 0) {
            /* BOT carries one command at a time: two LUNs with requests is no state QEMU's
             * usb-storage can be in. */
            publish_requests(v, d);
            sm_verdict_set_unknown(v, "requests pending on LUN %u and LUN %u", luns[*busy_lun].lun,
                                   l->lun);
            return FALSE;
        }
        *busy_lun = (gint)i;
        d->n_requests = disk[0].n_reqs;
        memcpy(d->requests, disk[0].reqs, disk[0].n_reqs * sizeof(SmScsiRequest));
    }
    return TRUE;
}

/* usb-storage serves DATA-IN from the request's buffer at scsi_off; a saved buffer shorter
 * than that does not carry the data. This is what QEMU 10.0 does for emulated requests even
 * with migrate-emulated-scsi-request on: emulate_read_data() has set iov_len to 0 before the
 * save, so the destination gets a fresh, uninitialised buffer instead of the result (no
 * crash, wrong bytes). Returns why the request does not migrate after all, or NULL. */
static const char *check_datain_buffer(SmUsbStorageDetail *d, const Msd *m)
{
    if (d->n_requests == 0 || m->mode != BOT_DATAIN) {
        return NULL;
    }
    SmScsiRequest *first = &d->requests[0];
    const char *why = NULL;
    guint64 needed = (guint64)m->scsi_off + m->scsi_len;
    if (first->migrates && !first->retry && m->scsi_len > 0 &&
        (first->bytes < 0 || (guint64)first->bytes < needed)) {
        first->migrates = FALSE;
        why = "its saved buffer is shorter than the data the guest has to fetch";
    }
    d->has_saved_bytes = TRUE;
    d->saved_bytes = first->bytes;
    first->bytes = m->scsi_len; /* what the device holds for the guest right now */
    return why;
}

/* The verdict from the transport state and the decoded requests. `lun` names the LUN in the
 * reason when the device has several ("" otherwise). */
static SmDeviceVerdict *judge(SmDeviceVerdict *v, const SmUsbStorageDetail *d, const Msd *m,
                              const char *lun, const char *short_buffer)
{
    gboolean all_migrate = TRUE;
    for (guint i = 0; i < d->n_requests; i++) {
        all_migrate = all_migrate && d->requests[i].migrates;
    }
    const char *mode = bot_modes[m->mode];
    sm_verdict_set_bytes_pending(v, (m->mode == BOT_DATAIN || m->mode == BOT_DATAOUT) ? m->data_len
                                                                                      : 0);
    if (m->mode == BOT_CBW && d->n_requests == 0) {
        return sm_verdict_set_idle(v, "no transaction in flight");
    }
    if (d->n_requests == 0) {
        if (m->mode != BOT_CSW && m->scsi_len != 0) {
            return sm_verdict_set_unknown(v, "%s with %u buffered bytes but no SCSI request", mode,
                                          m->scsi_len);
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
        return sm_verdict_set_busy(v, FALSE,
                                   "BOT %s pending: the controller may hold a completed "
                                   "transfer the guest has not seen yet",
                                   mode);
    }
    const SmScsiRequest *p = &d->requests[0];
    return sm_verdict_set_busy(v, all_migrate, "%s%s (0x%02x) pending in BOT %s: %s", lun,
                               sm_scsi_opcode_name(p->cdb[0]), p->cdb[0], mode,
                               all_migrate    ? (p->emulated ? "emulated, its buffer migrates"
                                                             : "DMA request, its data migrates")
                               : short_buffer ? short_buffer
                               : p->emulated  ? "emulated request whose buffer does not migrate"
                                              : "request whose data does not migrate");
}

/* ---- The typed detail ------------------------------------------------------------------- */

static void add_int(json_object *o, const char *k, gint64 v)
{
    json_object_object_add(o, k, json_object_new_int64(v));
}

static json_object *lun_to_json(const SmUsbStorageLun *l)
{
    json_object *o = json_object_new_object();
    add_int(o, "lun", l->lun);
    json_object_object_add(o, "type", json_object_new_string(l->type));
    json_object_object_add(o, "section", json_object_new_string(l->section));
    add_int(o, "requests", l->requests);
    json_object_object_add(o, "tray_open", json_object_new_boolean(l->tray_open));
    add_int(o, "sense_len", l->sense_len);
    add_int(o, "unit_attention_key", l->unit_attention_key);
    return o;
}

static void detail_to_json(gconstpointer detail, json_object *o)
{
    const SmUsbStorageDetail *d = detail;
    if (d->unsupported) {
        json_object_object_add(o, "unsupported", json_object_new_boolean(TRUE));
    }
    if (d->has_transport) {
        add_int(o, "usb_addr", d->usb_addr);
        add_int(o, "usb_state", d->usb_state);
        json_object_object_add(o, "bot_mode", json_object_new_string(d->bot_mode));
        add_int(o, "data_len", d->data_len);
        add_int(o, "scsi_len", d->scsi_len);
        add_int(o, "scsi_off", d->scsi_off);
        add_int(o, "csw_tag", d->csw_tag);
        add_int(o, "csw_residue", d->csw_residue);
        add_int(o, "csw_status", d->csw_status);
    }
    if (d->has_luns) {
        json_object *list = json_object_new_array();
        for (guint i = 0; i < d->n_luns; i++) {
            json_object_array_add(list, lun_to_json(&d->luns[i]));
        }
        json_object_object_add(o, "luns", list);
    }
    if (d->has_scsi_section) {
        json_object_object_add(o, "scsi_section", json_object_new_string(d->scsi_section));
    }
    if (d->has_busy_lun) {
        add_int(o, "busy_lun", d->busy_lun);
    }
    if (d->has_saved_bytes) {
        add_int(o, "saved_bytes", d->saved_bytes);
    }
}

static json_object *request_to_json(gconstpointer detail, guint index)
{
    const SmUsbStorageDetail *d = detail;
    g_return_val_if_fail(index < d->n_requests, NULL);
    const SmScsiRequest *r = &d->requests[index];
    json_object *o = json_object_new_object();
    char op[8];
    g_snprintf(op, sizeof(op), "0x%02x", r->cdb[0]);
    json_object_object_add(o, "opcode", json_object_new_string(op));
    json_object_object_add(o, "name", json_object_new_string(sm_scsi_opcode_name(r->cdb[0])));
    add_int(o, "tag", r->tag);
    add_int(o, "lun", r->lun);
    json_object_object_add(o, "bytes", r->bytes >= 0 ? json_object_new_int64(r->bytes) : NULL);
    json_object_object_add(o, "emulated", json_object_new_boolean(r->emulated));
    json_object_object_add(o, "migrates", json_object_new_boolean(r->migrates));
    json_object_object_add(o, "retry", json_object_new_boolean(r->retry));
    return o;
}

static char *request_summary(gconstpointer detail, guint index)
{
    const SmUsbStorageDetail *d = detail;
    g_return_val_if_fail(index < d->n_requests, NULL);
    const SmScsiRequest *r = &d->requests[index];
    return g_strdup_printf("0x%02x %s%s", r->cdb[0], sm_scsi_opcode_name(r->cdb[0]),
                           r->emulated ? "" : " (DMA)");
}

static const SmDetailType detail_type = {
    .struct_size = sizeof(SmDetailType),
    .name = "usb-storage",
    .free = g_free,
    .to_json = detail_to_json,
    .pending_to_json = request_to_json,
    .pending_summary = request_summary,
};

const SmUsbStorageDetail *sm_usb_storage_detail(const SmDeviceVerdict *verdict)
{
    return sm_verdict_get_detail(verdict, &detail_type);
}

/* ---- analyse() -------------------------------------------------------------------------- */

/* What no wait can change, known before decoding anything; NULL if nothing. */
static const char *refused_up_front(const SmDevice *device)
{
    return g_str_equal(sm_device_get_type(device), "usb-uas")
               ? UAS_REASON
               : sm_device_get_fact(device, SM_FACT_UNSUPPORTED);
}

static SmDeviceVerdict *analyse(const SmProbe *probe, const SmStream *stream,
                                const SmDevice *device)
{
    SmDeviceVerdict *v = sm_verdict_new(device, probe->name);
    SmFix fix = sm_device_get_fix(device);
    /* Only the counts and flags are zeroed: the arrays (8 KiB) are read up to their counts. */
    SmUsbStorageDetail *d = g_malloc(sizeof(*d));
    memset(d, 0, G_STRUCT_OFFSET(SmUsbStorageDetail, luns));
    sm_verdict_set_fix(v, fix);
    sm_verdict_set_detail(v, &detail_type, d);
    const char *unsupported = refused_up_front(device);
    if (unsupported) {
        d->unsupported = TRUE;
        return sm_verdict_set_unsupported(v, "%s", unsupported);
    }
    if (!sm_stream_is_complete(stream)) {
        return sm_verdict_set_unknown(v, "device state stream: %s", sm_stream_get_error(stream));
    }
    /* What no wait can change is final: the gate refuses it rather than holds. */
    const char *dev_path = sm_device_get_dev_path(device);
    if (!dev_path) {
        return sm_verdict_set_unsupported(v, "cannot tell which state section is this device's");
    }
    Lun luns[MAX_LUNS];
    gint n_luns = luns_from_facts(device, luns);
    if (n_luns < 0) {
        return sm_verdict_set_unsupported(v, "the SCSI devices on its bus are not known");
    }
    char msd_id[256];
    Msd m = {0};
    const char *err = join3(msd_id, sizeof(msd_id), dev_path, NULL, "usb-storage")
                          ? decode_msd_section(stream, msd_id, &m)
                          : "no such section in the device state";
    if (err) {
        return sm_verdict_set_unknown(v, "usb-storage section %s/usb-storage: %s", dev_path, err);
    }
    sm_verdict_set_section(v, msd_id);
    sm_verdict_set_mode(v, bot_modes[m.mode]);
    msd_detail(d, &m);
    const char *stray = stray_scsi_section(stream, dev_path, luns, (guint)n_luns);
    if (stray) {
        return sm_verdict_set_unknown(v, "section %s belongs to no SCSI device found on its bus",
                                      stray);
    }
    gint busy = -1;
    if (!decode_luns(v, d, stream, dev_path, luns, (guint)n_luns, fix, &busy)) {
        return v;
    }
    g_autofree char *lun = NULL;
    if (busy >= 0 && n_luns > 1) {
        const Lun *l = &luns[busy];
        const char *id = lun_fact(device, l->index, "id");
        lun = g_strdup_printf("LUN %u (%s%s%s): ", l->lun, l->type, id ? " " : "", id ? id : "");
        d->has_busy_lun = TRUE;
        d->busy_lun = l->lun;
    }
    const char *short_buffer = check_datain_buffer(d, &m);
    publish_requests(v, d);
    return judge(v, d, &m, lun ? lun : "", short_buffer);
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
    QomResult r =
        qom(qmp, sm_device_get_qom_path(device), NULL, json_type_array, &props, NULL, error);
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
        *bus = g_strdup_printf("%s/%s", sm_device_get_qom_path(device), name);
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
    if (g_str_equal(sm_device_get_type(device), "usb-uas")) {
        sm_device_set_fact(device, SM_FACT_UNSUPPORTED, UAS_REASON);
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
    if (g_str_equal(sm_device_get_type(device), "usb-storage") && paths->len != 1) {
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
    SM_PROBE_HEADER,
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

const char *sm_scsi_opcode_name(guint8 opcode)
{
    switch (opcode) {
    case 0x00:
        return "TEST UNIT READY";
    case 0x03:
        return "REQUEST SENSE";
    case 0x04:
        return "FORMAT UNIT";
    case 0x08:
        return "READ(6)";
    case 0x0a:
        return "WRITE(6)";
    case 0x12:
        return "INQUIRY";
    case 0x15:
        return "MODE SELECT(6)";
    case 0x1a:
        return "MODE SENSE(6)";
    case 0x1b:
        return "START STOP UNIT";
    case 0x1e:
        return "PREVENT ALLOW MEDIUM REMOVAL";
    case 0x23:
        return "READ FORMAT CAPACITIES";
    case 0x25:
        return "READ CAPACITY(10)";
    case 0x28:
        return "READ(10)";
    case 0x2a:
        return "WRITE(10)";
    case 0x2b:
        return "SEEK(10)";
    case 0x2e:
        return "WRITE AND VERIFY(10)";
    case 0x2f:
        return "VERIFY(10)";
    case 0x35:
        return "SYNCHRONIZE CACHE(10)";
    case 0x41:
        return "WRITE SAME(10)";
    case 0x42:
        return "UNMAP";
    case 0x43:
        return "READ TOC/PMA/ATIP";
    case 0x46:
        return "GET CONFIGURATION";
    case 0x4a:
        return "GET EVENT STATUS NOTIFICATION";
    case 0x51:
        return "READ DISC INFORMATION";
    case 0x55:
        return "MODE SELECT(10)";
    case 0x5a:
        return "MODE SENSE(10)";
    case 0x88:
        return "READ(16)";
    case 0x8a:
        return "WRITE(16)";
    case 0x8e:
        return "WRITE AND VERIFY(16)";
    case 0x8f:
        return "VERIFY(16)";
    case 0x91:
        return "SYNCHRONIZE CACHE(16)";
    case 0x93:
        return "WRITE SAME(16)";
    case 0x9e:
        return "SERVICE ACTION IN(16)";
    case 0xa0:
        return "REPORT LUNS";
    case 0xa8:
        return "READ(12)";
    case 0xaa:
        return "WRITE(12)";
    case 0xad:
        return "READ DVD STRUCTURE";
    case 0xae:
        return "WRITE AND VERIFY(12)";
    case 0xaf:
        return "VERIFY(12)";
    case 0xbd:
        return "MECHANISM STATUS";
    default:
        return "UNKNOWN";
    }
}
