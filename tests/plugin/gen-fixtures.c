/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Regenerates tests/plugin/fixtures/: device-state dumps of real QEMU 7.2 and 10.0 with the
 * USB storage shapes of the test rig (usb-storage CD-ROM and stick, usb-bot with two LUNs,
 * hubs, EHCI, xHCI, usb-uas) in each BOT state, plus the QOM facts of each dump.
 * Usage: gen-fixtures OUTDIR   (needs the SM_QEMU* environment of the test suite) */
#include "probe.h"
#include "rig.h"

#include <stdio.h>
#include <string.h>

typedef enum {
    ST_IDLE,
    ST_GESN,
    ST_READ10,
    ST_CSW,
    ST_MULTI,
    /* The shapes of issue 14: usb-bot with a CD-ROM (LUN 0) and a disk (LUN 1). */
    ST_BOT_IDLE,
    ST_BOT_LUN0,  /* GESN pending on the CD-ROM */
    ST_BOT_LUN1,  /* READ CAPACITY pending on the disk */
    ST_BOT_READ1, /* DMA READ(10) pending on the disk */
    ST_BOT_CSW,   /* CSW of a disk command pending */
    /* A USB stick (usb-storage + scsi-hd). */
    ST_STICK_WRITE,   /* WRITE(10) CBW sent, no DATA-OUT yet */
    ST_STICK_PARTIAL, /* WRITE(10) with half its DATA-OUT sent */
    ST_STICK_MODE,    /* MODE SENSE(6) pending */
    /* Topologies (no guest driver: the devices sit idle, unconfigured). */
    ST_HUB,  /* usb-storage behind a usb-hub on UHCI port 2 */
    ST_EHCI, /* usb-storage and usb-bot on usb-ehci; a CD on ich9 EHCI with companions */
    ST_XHCI, /* usb-storage and usb-bot on qemu-xhci */
    ST_UAS,  /* usb-uas on qemu-xhci: QEMU cannot migrate it */
    ST_COUNT
} State;
static const char *const state_names[] = {"idle",
                                          "gesn-pending",
                                          "read10-pending",
                                          "csw-pending",
                                          "multi",
                                          "bot-idle",
                                          "bot-lun0-pending",
                                          "bot-lun1-pending",
                                          "bot-read10-pending",
                                          "bot-csw-pending",
                                          "stick-write-pending",
                                          "stick-write-partial",
                                          "stick-mode-sense-pending",
                                          "hub-idle",
                                          "ehci-idle",
                                          "xhci-idle",
                                          "uas"};
G_STATIC_ASSERT(G_N_ELEMENTS(state_names) == ST_COUNT);

static json_object *devices_to_json(GPtrArray *devices)
{
    json_object *arr = json_object_new_array();
    for (guint i = 0; i < devices->len; i++) {
        SmDevice *d = devices->pdata[i];
        json_object *o = json_object_new_object();
        json_object_object_add(o, "qom_path", json_object_new_string(d->qom_path));
        json_object_object_add(o, "id", d->id ? json_object_new_string(d->id) : NULL);
        json_object_object_add(o, "type", json_object_new_string(d->type));
        json_object_object_add(o, "dev_path",
                               d->dev_path ? json_object_new_string(d->dev_path) : NULL);
        json_object *facts = json_object_new_object();
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, d->facts);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            json_object_object_add(facts, k, json_object_new_string(v));
        }
        json_object_object_add(o, "facts", facts);
        json_object_array_add(arr, o);
    }
    return arr;
}

/* As a guest driver starts: TEST UNIT READY takes the power-on unit attention (GESN is exempt
 * from it, READ is not), then two GESN polls (on a CD-ROM). */
static gboolean settle(RigGuest *g, guint disk, guint8 lun, gboolean cd, GError **error)
{
    RigCommand gesn = rig_cmd_lun(rig_cmd_gesn(), lun);
    RigCommand tur = rig_cmd_lun(rig_cmd_test_unit_ready(), lun);
    guint8 buf[2048];
    gsize len;
    guint8 status;
    for (int i = 0; i < 2; i++) {
        if (!rig_guest_transact(g, disk, &tur, buf, &len, &status, error)) {
            return FALSE;
        }
    }
    for (int i = 0; cd && i < 2; i++) {
        if (!rig_guest_transact(g, disk, &gesn, buf, &len, &status, error)) {
            return FALSE;
        }
    }
    return TRUE;
}

/* Leaves the guest's transaction on device `disk` in the wanted state. */
static gboolean drive(RigGuest *g, guint disk, State st, GError **error)
{
    guint8 buf[2048];
    gboolean bot = st >= ST_BOT_IDLE && st <= ST_BOT_CSW;
    gboolean stick = st >= ST_STICK_WRITE && st <= ST_STICK_MODE;
    if (!settle(g, disk, 0, !stick, error) || (bot && !settle(g, disk, 1, FALSE, error))) {
        return FALSE;
    }
    RigCommand gesn = rig_cmd_gesn();
    RigCommand cap1 = rig_cmd_lun(rig_cmd_read_capacity(), 1);
    RigCommand rd1 = rig_cmd_lun(rig_cmd_disk_read10(8, 1), 1);
    RigCommand wr = rig_cmd_disk_write10(8, 2);
    RigCommand ms = rig_cmd_mode_sense6(0x3f, 192);
    switch (st) {
    case ST_GESN:
    case ST_BOT_LUN0:
        return rig_guest_send_cbw(g, disk, &gesn, NULL, error);
    case ST_READ10: {
        RigCommand rd = rig_cmd_read10(16, 1);
        return rig_guest_send_cbw(g, disk, &rd, NULL, error);
    }
    case ST_CSW:
        return rig_guest_send_cbw(g, disk, &gesn, NULL, error) &&
               rig_guest_data_in(g, disk, buf, 8, error) == 8;
    case ST_BOT_LUN1:
        return rig_guest_send_cbw(g, disk, &cap1, NULL, error);
    case ST_BOT_READ1:
        return rig_guest_send_cbw(g, disk, &rd1, NULL, error);
    case ST_BOT_CSW:
        return rig_guest_send_cbw(g, disk, &cap1, NULL, error) &&
               rig_guest_data_in(g, disk, buf, 8, error) == 8;
    case ST_STICK_WRITE:
        return rig_guest_send_cbw(g, disk, &wr, NULL, error);
    case ST_STICK_PARTIAL:
        memset(buf, 0x5a, 512);
        return rig_guest_send_cbw(g, disk, &wr, NULL, error) &&
               rig_guest_data_out(g, disk, buf, 512, error) == 512;
    case ST_STICK_MODE:
        return rig_guest_send_cbw(g, disk, &ms, NULL, error);
    default:
        return TRUE;
    }
}

/* The VM for a state: its storage form, and for the topologies the devices by hand. */
static void vm_for(State st, RigVmConfig *cfg)
{
    static const char *const hub[] = {
        "-device", "usb-hub,bus=uhci.0,port=2,id=hub",
        "-drive",  "if=none,id=hcd,media=cdrom,readonly=on,format=raw,file=%s",
        "-device", "usb-storage,bus=uhci.0,port=2.3,drive=hcd,id=hubcd",
        NULL};
    static const char *const ehci[] = {
        "-device", "usb-ehci,id=ehci,addr=0x4",
        "-drive",  "if=none,id=ecd,media=cdrom,readonly=on,format=raw,file=%s",
        "-device", "usb-storage,bus=ehci.0,port=1,drive=ecd,id=ehcicd",
        "-device", "usb-bot,bus=ehci.0,port=2,id=ehcibot",
        "-drive",  "if=none,id=ebcd,media=cdrom,readonly=on,format=raw,file=%s",
        "-device", "scsi-cd,bus=ehcibot.0,lun=3,drive=ebcd,id=ehcibotcd",
        "-device", "ich9-usb-ehci1,id=ich9ehci,addr=1d.7,multifunction=on",
        "-device", "ich9-usb-uhci1,masterbus=ich9ehci.0,firstport=0,addr=1d.0,multifunction=on",
        "-device", "ich9-usb-uhci2,masterbus=ich9ehci.0,firstport=2,addr=1d.1,multifunction=on",
        "-drive",  "if=none,id=icd,media=cdrom,readonly=on,format=raw,file=%s",
        "-device", "usb-storage,bus=ich9ehci.0,port=3,drive=icd,id=ich9cd",
        NULL};
    static const char *const xhci[] = {
        "-device", "qemu-xhci,id=xhci,addr=0x5",
        "-drive",  "if=none,id=xcd,media=cdrom,readonly=on,format=raw,file=%s",
        "-device", "usb-storage,bus=xhci.0,drive=xcd,id=xhcicd",
        "-device", "usb-bot,bus=xhci.0,id=xhcibot",
        "-drive",  "if=none,id=xbcd,media=cdrom,readonly=on,format=raw,file=%s",
        "-device", "scsi-cd,bus=xhcibot.0,lun=0,drive=xbcd,id=xhcibotcd",
        NULL};
    static const char *const uas[] = {
        "-device", "qemu-xhci,id=xhci,addr=0x5",
        "-device", "usb-uas,bus=xhci.0,id=uas",
        "-drive",  "if=none,id=ucd,media=cdrom,readonly=on,format=raw,file=%s",
        "-device", "scsi-cd,bus=uas.0,drive=ucd,id=uascd",
        NULL};
    cfg->n_disks = st == ST_MULTI ? 2 : 1;
    if (st >= ST_BOT_IDLE && st <= ST_BOT_CSW) {
        cfg->form = RIG_FORM_BOT_CD_DISK;
    } else if (st >= ST_STICK_WRITE && st <= ST_STICK_MODE) {
        cfg->form = RIG_FORM_STORAGE_DISK;
    } else if (st >= ST_HUB) {
        cfg->form = RIG_FORM_NONE;
        cfg->extra_args = st == ST_HUB ? hub : st == ST_EHCI ? ehci : st == ST_XHCI ? xhci : uas;
    }
}

static gboolean generate(const char *outdir, RigQemu q, const char *machine, const char *tag,
                         State st, GError **error)
{
    RigVmConfig cfg = {.qemu = q, .machine = machine, .name = "fixture"};
    vm_for(st, &cfg);
    g_autofree char *disk = rig_disk_copy("fixture-disk", error);
    cfg.disk = disk;
    g_autoptr(RigVm) vm = disk ? rig_vm_start(&cfg, error) : NULL;
    if (!vm) {
        return FALSE;
    }
    if (cfg.form != RIG_FORM_NONE) {
        g_autoptr(RigGuest) guest = rig_guest_new(vm, error);
        if (!guest) {
            return FALSE;
        }
        if (st == ST_MULTI) {
            if (!drive(guest, 0, ST_IDLE, error) || !drive(guest, 1, ST_GESN, error)) {
                return FALSE;
            }
        } else if (!drive(guest, 0, st, error)) {
            return FALSE;
        }
    }
    QmpClient *qmp = rig_vm_qmp(vm);
    g_autoptr(SmRegistry) reg = sm_registry_new();
    g_autoptr(GPtrArray) devices = sm_inspect_devices(qmp, reg, error);
    if (!devices) {
        return FALSE;
    }
    /* The VM is stopped first, as every probe does (sm_probe_vm); the qtest guest's
     * transaction stays where it was left. */
    g_autoptr(json_object) stopped = qmp_client_execute(qmp, "stop", NULL, error);
    g_autoptr(GBytes) state = stopped ? sm_capture_device_state(qmp, error) : NULL;
    if (!state) {
        return FALSE;
    }
    g_autofree char *base = g_strdup_printf("%s/%s-%s", outdir, tag, state_names[st]);
    g_autofree char *bin = g_strconcat(base, ".bin", NULL);
    g_autofree char *meta = g_strconcat(base, ".json", NULL);
    if (!g_file_set_contents(bin, g_bytes_get_data(state, NULL), g_bytes_get_size(state), error)) {
        return FALSE;
    }
    json_object *m = json_object_new_object();
    json_object_object_add(m, "qemu", json_object_new_string(qmp_client_get_version(qmp)));
    json_object_object_add(m, "machine", json_object_new_string(machine));
    json_object_object_add(m, "state", json_object_new_string(state_names[st]));
    json_object_object_add(m, "devices", devices_to_json(devices));
    const char *text =
        json_object_to_json_string_ext(m, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
    gboolean ok = g_file_set_contents(meta, text, -1, error);
    json_object_put(m);
    printf("%s (%" G_GSIZE_FORMAT " bytes)\n", bin, g_bytes_get_size(state));
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    static const struct {
        RigQemu q;
        const char *machine;
        const char *tag;
    } configs[] = {
        {RIG_QEMU_72, "pc", "q72-pc"},
        {RIG_QEMU_10, "pc", "q10-pc"},
        {RIG_QEMU_10, "pc-i440fx-9.0", "q10-pc90"},
    };
    for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
        for (State st = ST_IDLE; st < ST_COUNT; st++) {
            /* The new shapes on the two default machines; pc-i440fx-9.0 covers the fix. */
            if (st > ST_MULTI && configs[c].machine[2] == '-') {
                continue;
            }
            g_autoptr(GError) error = NULL;
            if (!generate(argv[1], configs[c].q, configs[c].machine, configs[c].tag, st, &error)) {
                fprintf(stderr, "%s %s: %s\n", configs[c].tag, state_names[st], error->message);
                return 1;
            }
        }
    }
    return 0;
}
