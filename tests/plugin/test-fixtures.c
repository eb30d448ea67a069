/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests on real device-state dumps of QEMU 7.2 and 10.0 (fixtures/): the stream walker,
 * the usb-storage verdicts per BOT state, and what differs between versions and machines. */
#include "fixture.h"
#include "usb-storage.h"

#include <string.h>

/* Fixture name prefixes: QEMU version + machine, and what the fix property reads there. */
static const struct {
    const char *tag;
    const char *fix;
} configs[] = {{"q72-pc", "absent"}, {"q10-pc", "enabled"}, {"q10-pc90", "disabled"}};

static void test_walk_all(void)
{
    g_autoptr(GPtrArray) names = fixture_list();
    g_assert_cmpuint(names->len, >=, 15);
    for (guint i = 0; i < names->len; i++) {
        g_autoptr(Fixture) f = fixture_load(names->pdata[i]);
        g_autoptr(SmStream) s = sm_stream_parse(f->state);
        g_assert_true(sm_stream_is_complete(s));
        g_assert_null(sm_stream_get_error(s));
        guint n = sm_stream_get_n_sections(s);
        g_assert_cmpuint(n, >, 20);
        /* QEVM v3 then straight into sections: no configuration record on this path. */
        const SmSection *first = sm_stream_get_section(s, 0);
        g_assert_cmpuint(first->header_offset, ==, 8);
        g_assert_cmpstr(first->idstr, ==, "timer");
        g_assert_cmpstr(sm_stream_get_section(s, n - 1)->idstr, ==, "globalstate");
        gsize len;
        const guint8 *d = sm_stream_get_data(s, &len);
        g_assert_cmpuint(d[len - 1], ==, SM_VM_EOF);
        for (guint k = 0; k < n; k++) {
            const SmSection *sec = sm_stream_get_section(s, k);
            g_assert_cmpuint(sec->type, ==, SM_VM_SECTION_FULL);
            g_assert_cmpuint(d[sec->footer_offset], ==, SM_VM_SECTION_FOOTER);
            g_assert_cmpuint(sec->body_offset, <=, sec->footer_offset);
            if (k + 1 < n) {
                g_assert_cmpuint(sm_stream_get_section(s, k + 1)->header_offset, ==,
                                 sec->footer_offset + 5);
            }
        }
        if (f->devices->len == 0 ||
            g_strcmp0(((SmDevice *)f->devices->pdata[0])->dev_path, "0000:00:02.0/1") != 0) {
            continue; /* hub, EHCI, xHCI and uas shapes: their own tests */
        }
        g_assert_nonnull(sm_stream_find_section(s, "0000:00:02.0/1/usb-storage", 0));
        g_assert_nonnull(sm_stream_find_section(s, "0000:00:02.0/1/0:0:0/scsi-disk", 0));
        g_assert_null(sm_stream_find_section(s, "0000:00:02.0/1/usb-storage", 1));
    }
}

static void test_bad_headers(void)
{
    static const guint8 wrong_magic[] = {'Q', 'E', 'V', 'X', 0, 0, 0, 3, 0};
    static const guint8 wrong_version[] = {'Q', 'E', 'V', 'M', 0, 0, 0, 2, 0};
    static const guint8 empty[] = {'Q', 'E', 'V', 'M', 0, 0, 0, 3, 0};
    g_autoptr(GBytes) b1 = g_bytes_new_static(wrong_magic, sizeof(wrong_magic));
    g_autoptr(GBytes) b2 = g_bytes_new_static(wrong_version, sizeof(wrong_version));
    g_autoptr(GBytes) b3 = g_bytes_new_static(empty, sizeof(empty));
    g_autoptr(GBytes) b4 = g_bytes_new_static(empty, 0);
    g_autoptr(SmStream) s1 = sm_stream_parse(b1);
    g_autoptr(SmStream) s2 = sm_stream_parse(b2);
    g_autoptr(SmStream) s3 = sm_stream_parse(b3);
    g_autoptr(SmStream) s4 = sm_stream_parse(b4);
    g_assert_false(sm_stream_is_complete(s1));
    g_assert_false(sm_stream_is_complete(s2));
    g_assert_true(sm_stream_is_complete(s3));
    g_assert_cmpuint(sm_stream_get_n_sections(s3), ==, 0);
    g_assert_false(sm_stream_is_complete(s4));
}

/* One fixture, one device: the verdict's main fields. */
static const SmDeviceVerdict *only(const SmReport *r)
{
    g_assert_cmpuint(r->devices->len, ==, 1);
    return r->devices->pdata[0];
}

/* The first SCSI request of a usb-storage verdict: its first pending operation. */
static const SmScsiRequest *request0(const SmDeviceVerdict *v)
{
    const SmUsbStorageDetail *d = sm_usb_storage_detail(v);
    g_assert_nonnull(d);
    g_assert_cmpuint(d->n_requests, ==, sm_verdict_get_n_pending(v));
    g_assert_cmpuint(d->n_requests, >, 0);
    g_assert_cmpstr(sm_verdict_get_pending(v, 0)->name, ==,
                    sm_scsi_opcode_name(d->requests[0].cdb[0]));
    return &d->requests[0];
}

static void test_idle(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
        g_autofree char *name = g_strdup_printf("%s-idle", configs[c].tag);
        g_autoptr(Fixture) f = fixture_load(name);
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        const SmDeviceVerdict *v = only(r);
        g_assert_cmpint(v->state, ==, SM_STATE_IDLE);
        g_assert_true(v->safe);
        g_assert_cmpstr(v->mode, ==, "CBW");
        g_assert_cmpuint(sm_verdict_get_n_pending(v), ==, 0);
        g_assert_cmpstr(sm_fix_to_string(v->fix), ==, configs[c].fix);
        g_assert_cmpstr(v->section, ==, "0000:00:02.0/1/usb-storage");
        g_assert_cmpstr(v->id, ==, "usbcd0");
    }
}

static void test_gesn_pending(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
        g_autofree char *name = g_strdup_printf("%s-gesn-pending", configs[c].tag);
        g_autoptr(Fixture) f = fixture_load(name);
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        const SmDeviceVerdict *v = only(r);
        g_assert_cmpint(v->state, ==, SM_STATE_BUSY);
        g_assert_cmpstr(v->mode, ==, "DATAIN");
        g_assert_cmpint(v->bytes_pending, ==, 8);
        g_assert_cmpuint(sm_verdict_get_n_pending(v), ==, 1);
        const SmScsiRequest *p = request0(v);
        g_assert_cmpuint(p->cdb[0], ==, 0x4a);
        g_assert_true(p->emulated);
        g_assert_cmpint(p->bytes, ==, 8);
        g_assert_cmpuint(p->tag, !=, 0);
        /* Unsafe everywhere: 7.2 and 10.0/pc-i440fx-9.0 save no buffer (destination
         * crashes); 10.0/pc saves one, but empty (emulate_read_data zeroed iov_len). */
        g_assert_false(v->safe);
        g_assert_false(p->migrates);
        g_assert_true(sm_usb_storage_detail(v)->has_saved_bytes);
        g_assert_cmpint(sm_usb_storage_detail(v)->saved_bytes, ==,
                        g_str_equal(configs[c].fix, "enabled") ? 0 : -1);
    }
}

static void test_read10_pending(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
        g_autofree char *name = g_strdup_printf("%s-read10-pending", configs[c].tag);
        g_autoptr(Fixture) f = fixture_load(name);
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        const SmDeviceVerdict *v = only(r);
        g_assert_cmpint(v->state, ==, SM_STATE_BUSY);
        g_assert_cmpstr(v->mode, ==, "DATAIN");
        g_assert_cmpuint(sm_verdict_get_n_pending(v), ==, 1);
        const SmScsiRequest *p = request0(v);
        g_assert_cmpuint(p->cdb[0], ==, 0x28);
        g_assert_false(p->emulated);
        g_assert_true(p->migrates);
        g_assert_cmpint(p->bytes, ==, 2048);
        g_assert_true(v->safe);
        g_assert_true(sm_usb_storage_detail(v)->has_saved_bytes);
        g_assert_cmpint(sm_usb_storage_detail(v)->saved_bytes, ==, 2048);
    }
}

static void test_csw_pending(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
        g_autofree char *name = g_strdup_printf("%s-csw-pending", configs[c].tag);
        g_autoptr(Fixture) f = fixture_load(name);
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        const SmDeviceVerdict *v = only(r);
        g_assert_cmpint(v->state, ==, SM_STATE_BUSY);
        g_assert_cmpstr(v->mode, ==, "CSW");
        g_assert_cmpuint(sm_verdict_get_n_pending(v), ==, 0);
        /* Held: the controller's half of the status phase is not in the stream. */
        g_assert_false(v->safe);
    }
}

static void test_multi(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(configs); c++) {
        g_autofree char *name = g_strdup_printf("%s-multi", configs[c].tag);
        g_autoptr(Fixture) f = fixture_load(name);
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        g_assert_cmpuint(r->devices->len, ==, 2);
        const SmDeviceVerdict *a = report_device(r, "usbcd0");
        const SmDeviceVerdict *b = report_device(r, "usbcd1");
        g_assert_nonnull(a);
        g_assert_nonnull(b);
        g_assert_cmpint(a->state, ==, SM_STATE_IDLE);
        g_assert_cmpstr(a->section, ==, "0000:00:02.0/1/usb-storage");
        g_assert_cmpint(b->state, ==, SM_STATE_BUSY);
        g_assert_cmpstr(b->section, ==, "0000:00:02.0/2/usb-storage");
        g_assert_false(b->safe);
    }
}

/* The same pending GESN is 25 bytes of request in 7.2 and 10.0/pc-i440fx-9.0, and 45 in
 * 10.0/pc (scsi_disk_save_request's sector, count, buflen and length follow). */
static void test_version_difference(void)
{
    static const struct {
        const char *name;
        gsize body;
    } cases[] = {{"q72-pc-gesn-pending", 135},
                 {"q10-pc90-gesn-pending", 135},
                 {"q10-pc-gesn-pending", 155},
                 {"q72-pc-idle", 110},
                 {"q10-pc-idle", 110}};
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Fixture) f = fixture_load(cases[i].name);
        g_autoptr(SmStream) s = sm_stream_parse(f->state);
        const SmSection *sec = sm_stream_find_section(s, "0000:00:02.0/1/0:0:0/scsi-disk", 0);
        g_assert_nonnull(sec);
        g_assert_cmpuint(sec->footer_offset - sec->body_offset, ==, cases[i].body);
        const SmSection *msd = sm_stream_find_section(s, "0000:00:02.0/1/usb-storage", 0);
        g_assert_cmpuint(msd->footer_offset - msd->body_offset, ==, 58);
        g_assert_cmpuint(msd->version_id, ==, 1);
        g_assert_cmpuint(sec->version_id, ==, 1);
    }
}

/* A wrong belief about the fix property makes the layout undecodable: unknown, never idle. */
static void test_wrong_fix_is_unknown(void)
{
    static const struct {
        const char *name;
        const char *fix;
    } cases[] = {{"q10-pc-gesn-pending", "absent"},
                 {"q10-pc-gesn-pending", NULL},
                 {"q72-pc-gesn-pending", "enabled"},
                 {"q10-pc90-gesn-pending", "enabled"}};
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Fixture) f = fixture_load(cases[i].name);
        SmDevice *d = f->devices->pdata[0];
        sm_device_set_fact(d, SM_FACT_FIX, cases[i].fix);
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        const SmDeviceVerdict *v = only(r);
        g_assert_cmpint(v->state, ==, SM_STATE_UNKNOWN);
        g_assert_false(v->safe);
        g_assert_nonnull(v->reason);
    }
    /* Idle dumps hold no request, so the fix state does not matter for them. */
    g_autoptr(Fixture) f = fixture_load("q10-pc-idle");
    sm_device_set_fact(f->devices->pdata[0], SM_FACT_FIX, NULL);
    g_autoptr(SmReport) r = fixture_report(f, NULL);
    g_assert_cmpint(only(r)->state, ==, SM_STATE_IDLE);
}

static void test_unmapped_device(void)
{
    g_autoptr(Fixture) f = fixture_load("q72-pc-idle");
    SmDevice *d = f->devices->pdata[0];
    /* A dev path QEMU never used, and none at all (one device: found by elimination only
     * when the controller is known). */
    g_free(d->dev_path);
    d->dev_path = g_strdup("0000:00:09.0/1");
    g_autoptr(SmReport) r = fixture_report(f, NULL);
    g_assert_cmpint(only(r)->state, ==, SM_STATE_UNKNOWN);

    g_clear_pointer(&d->dev_path, g_free);
    sm_device_set_fact(d, "usb.controller_dev_path", "0000:00:02.0");
    g_autoptr(SmReport) r2 = fixture_report(f, NULL);
    g_assert_cmpint(only(r2)->state, ==, SM_STATE_IDLE);
    g_assert_cmpstr(only(r2)->section, ==, "0000:00:02.0/1/usb-storage");
}

/* QEMU versions with the new shapes' fixtures (pc-i440fx-9.0 covers the fix property). */
static const char *const new_tags[] = {"q72-pc", "q10-pc"};

static const SmDeviceVerdict *load_only(const char *tag, const char *state, SmReport **out)
{
    g_autofree char *name = g_strdup_printf("%s-%s", tag, state);
    g_autoptr(Fixture) f = fixture_load(name);
    *out = fixture_report(f, NULL);
    return only(*out);
}

static const SmUsbStorageDetail *detail(const SmDeviceVerdict *v)
{
    const SmUsbStorageDetail *d = sm_usb_storage_detail(v);
    g_assert_nonnull(d);
    return d;
}

/* usb-bot with a CD-ROM on LUN 0 and a disk on LUN 1: both sections found through QOM (the
 * SCSI devices are not children of the USB device) and decoded. */
static void test_bot_idle(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(new_tags); c++) {
        g_autoptr(SmReport) r = NULL;
        const SmDeviceVerdict *v = load_only(new_tags[c], "bot-idle", &r);
        g_assert_cmpstr(v->type, ==, "usb-bot");
        g_assert_cmpint(v->state, ==, SM_STATE_IDLE);
        g_assert_true(v->safe);
        g_assert_cmpstr(v->section, ==, "0000:00:02.0/1/usb-storage");
        g_assert_true(detail(v)->has_luns);
        g_assert_cmpuint(detail(v)->n_luns, ==, 2);
        const SmUsbStorageLun *l1 = &detail(v)->luns[1];
        g_assert_cmpstr(l1->section, ==, "0000:00:02.0/1/0:0:1/scsi-disk");
        g_assert_cmpstr(l1->type, ==, "scsi-hd");
    }
}

/* A pending request on either LUN is busy, and the verdict names the LUN. */
static void test_bot_pending(void)
{
    static const struct {
        const char *state;
        guint8 opcode;
        guint lun;
        gboolean safe;
    } cases[] = {{"bot-lun0-pending", 0x4a, 0, FALSE},
                 {"bot-lun1-pending", 0x25, 1, FALSE},
                 {"bot-read10-pending", 0x28, 1, TRUE}};
    for (gsize c = 0; c < G_N_ELEMENTS(new_tags); c++) {
        for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
            g_autoptr(SmReport) r = NULL;
            const SmDeviceVerdict *v = load_only(new_tags[c], cases[i].state, &r);
            g_assert_cmpint(v->state, ==, SM_STATE_BUSY);
            g_assert_cmpint(v->safe, ==, cases[i].safe);
            g_assert_cmpstr(v->mode, ==, "DATAIN");
            g_assert_cmpuint(sm_verdict_get_n_pending(v), ==, 1);
            const SmScsiRequest *p = request0(v);
            g_assert_cmpuint(p->cdb[0], ==, cases[i].opcode);
            g_assert_cmpuint(p->lun, ==, cases[i].lun);
            g_autofree char *prefix = g_strdup_printf("LUN %u (", cases[i].lun);
            g_assert_true(g_str_has_prefix(v->reason, prefix));
            g_assert_true(detail(v)->has_busy_lun);
            g_assert_cmpint(detail(v)->busy_lun, ==, cases[i].lun);
        }
        g_autoptr(SmReport) r = NULL;
        const SmDeviceVerdict *v = load_only(new_tags[c], "bot-csw-pending", &r);
        g_assert_cmpint(v->state, ==, SM_STATE_BUSY);
        g_assert_cmpstr(v->mode, ==, "CSW");
        g_assert_false(v->safe);
    }
}

/* A LUN's section missing, a section no discovered LUN claims, or LUN facts never gathered:
 * unknown, never idle. */
static void test_bot_facts_checked(void)
{
    static const struct {
        const char *key, *value;
    } cases[] = {{"usb-storage.luns", "1"},          /* LUN 1's section is a stray */
                 {"usb-storage.luns", NULL},         /* not inspected */
                 {"usb-storage.luns", "17"},         /* more than usb-storage's bus has */
                 {"usb-storage.lun1.addr", "0:0:5"}, /* no such section */
                 {"usb-storage.lun0.type", NULL}};
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(Fixture) f = fixture_load("q72-pc-bot-idle");
        sm_device_set_fact(f->devices->pdata[0], cases[i].key, cases[i].value);
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        g_assert_cmpint(only(r)->state, ==, SM_STATE_UNKNOWN);
        g_assert_false(only(r)->safe);
    }
}

/* A USB stick's WRITE(10) waiting for its DATA-OUT, none or half of it sent: a DMA request
 * whose received bytes are saved (scsi_disk_save_request), so it migrates (test-live
 * finishes it on a destination and reads the bytes back). MODE SENSE is emulated: 7.2 saves
 * no buffer, 10.0 an empty one. */
static void test_stick(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(new_tags); c++) {
        static const char *const writes[] = {"stick-write-pending", "stick-write-partial"};
        for (gsize i = 0; i < G_N_ELEMENTS(writes); i++) {
            g_autoptr(SmReport) r = NULL;
            const SmDeviceVerdict *v = load_only(new_tags[c], writes[i], &r);
            g_assert_cmpint(v->state, ==, SM_STATE_BUSY);
            g_assert_cmpstr(v->mode, ==, "DATAOUT");
            g_assert_true(v->safe);
            const SmScsiRequest *p = request0(v);
            g_assert_cmpuint(p->cdb[0], ==, 0x2a);
            g_assert_false(p->emulated);
            g_assert_true(p->migrates);
            g_assert_cmpint(v->bytes_pending, ==, i == 0 ? 1024 : 512);
        }
        g_autoptr(SmReport) r = NULL;
        const SmDeviceVerdict *v = load_only(new_tags[c], "stick-mode-sense-pending", &r);
        g_assert_cmpint(v->state, ==, SM_STATE_BUSY);
        g_assert_false(v->safe);
        g_assert_cmpuint(request0(v)->cdb[0], ==, 0x1a);
    }
}

static const SmDeviceVerdict *by_id(const SmReport *r, const char *id)
{
    const SmDeviceVerdict *v = report_device(r, id);
    g_assert_nonnull(v);
    return v;
}

/* Section names behind a hub ("2.3"), on EHCI (and ich9 EHCI with UHCI companions)
 * and on xHCI (whose port is read from "info usb"), for usb-storage and usb-bot. */
static void test_topologies(void)
{
    static const struct {
        const char *state, *id, *section, *scsi;
    } cases[] = {
        {"hub-idle", "hubcd", "0000:00:02.0/2.3/usb-storage", "0000:00:02.0/2.3/0:0:0/scsi-disk"},
        {"ehci-idle", "ehcicd", "0000:00:04.0/1/usb-storage", "0000:00:04.0/1/0:0:0/scsi-disk"},
        {"ehci-idle", "ehcibot", "0000:00:04.0/2/usb-storage", "0000:00:04.0/2/0:0:3/scsi-disk"},
        {"ehci-idle", "ich9cd", "0000:00:1d.7/3/usb-storage", "0000:00:1d.7/3/0:0:0/scsi-disk"},
        {"xhci-idle", "xhcicd", "0000:00:05.0/1/usb-storage", "0000:00:05.0/1/0:0:0/scsi-disk"},
        {"xhci-idle", "xhcibot", "0000:00:05.0/2/usb-storage", "0000:00:05.0/2/0:0:0/scsi-disk"},
    };
    for (gsize c = 0; c < G_N_ELEMENTS(new_tags); c++) {
        for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
            g_autofree char *name = g_strdup_printf("%s-%s", new_tags[c], cases[i].state);
            g_autoptr(Fixture) f = fixture_load(name);
            g_autoptr(SmReport) r = fixture_report(f, NULL);
            const SmDeviceVerdict *v = by_id(r, cases[i].id);
            g_assert_cmpint(v->state, ==, SM_STATE_IDLE);
            g_assert_cmpstr(v->section, ==, cases[i].section);
            g_assert_true(detail(v)->has_scsi_section);
            g_assert_cmpstr(detail(v)->scsi_section, ==, cases[i].scsi);
        }
    }
}

/* usb-uas: QEMU refuses to migrate it; marked unsupported from discovery alone, so the gate
 * can refuse before migrating, and unknown with the same reason once captured. */
static void test_uas(void)
{
    for (gsize c = 0; c < G_N_ELEMENTS(new_tags); c++) {
        g_autofree char *name = g_strdup_printf("%s-uas", new_tags[c]);
        g_autoptr(Fixture) f = fixture_load(name);
        const SmDevice *d = f->devices->pdata[0];
        g_assert_cmpstr(d->type, ==, "usb-uas");
        const char *why = sm_device_get_fact(d, SM_FACT_UNSUPPORTED);
        g_assert_nonnull(why);
        g_assert_nonnull(strstr(why, "not migratable"));
        g_autoptr(SmReport) r = fixture_report(f, NULL);
        g_assert_cmpint(only(r)->state, ==, SM_STATE_UNKNOWN);
        g_assert_cmpstr(only(r)->reason, ==, why);
        g_assert_true(only(r)->final);
        g_assert_true(detail(only(r))->unsupported);
    }
}

/* Whatever a device's stream says, an unsupported device is unknown with that reason. */
static void test_unsupported_fact(void)
{
    g_autoptr(Fixture) f = fixture_load("q72-pc-idle");
    sm_device_set_fact(f->devices->pdata[0], SM_FACT_UNSUPPORTED, "a reason");
    g_autoptr(SmReport) r = fixture_report(f, NULL);
    g_assert_cmpint(only(r)->state, ==, SM_STATE_UNKNOWN);
    g_assert_cmpstr(only(r)->reason, ==, "a reason");
    g_assert_true(only(r)->final);
}

static void test_json_shape(void)
{
    g_autoptr(Fixture) f = fixture_load("q72-pc-gesn-pending");
    g_autoptr(SmReport) r = fixture_report(f, NULL);
    json_object *o = sm_report_to_json(r);
    g_assert_cmpstr(json_object_get_string(json_object_object_get(o, "qemu")), ==, "7.2.22");
    json_object *dev = json_object_array_get_idx(json_object_object_get(o, "devices"), 0);
    g_assert_cmpstr(json_object_get_string(json_object_object_get(dev, "state")), ==, "busy");
    g_assert_cmpstr(json_object_get_string(json_object_object_get(dev, "fix")), ==, "absent");
    g_assert_cmpstr(json_object_get_string(json_object_object_get(dev, "id")), ==, "usbcd0");
    json_object *p = json_object_object_get(dev, "pending");
    g_assert_cmpstr(json_object_get_string(json_object_object_get(p, "opcode")), ==, "0x4a");
    g_assert_cmpstr(json_object_get_string(json_object_object_get(p, "name")), ==,
                    "GET EVENT STATUS NOTIFICATION");
    g_assert_cmpint(json_object_get_int(json_object_object_get(p, "bytes")), ==, 8);
    g_assert_true(json_object_get_boolean(json_object_object_get(p, "emulated")));
    g_assert_true(json_object_is_type(json_object_object_get(p, "tag"), json_type_int));
    json_object_put(o);
    g_autofree char *table = sm_report_to_table(r);
    g_assert_nonnull(strstr(table, "GET EVENT STATUS NOTIFICATION"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/stream/walk-all-fixtures", test_walk_all);
    g_test_add_func("/stream/bad-headers", test_bad_headers);
    g_test_add_func("/usb-storage/idle", test_idle);
    g_test_add_func("/usb-storage/gesn-pending", test_gesn_pending);
    g_test_add_func("/usb-storage/read10-pending", test_read10_pending);
    g_test_add_func("/usb-storage/csw-pending", test_csw_pending);
    g_test_add_func("/usb-storage/multi", test_multi);
    g_test_add_func("/usb-storage/version-difference", test_version_difference);
    g_test_add_func("/usb-storage/wrong-fix-is-unknown", test_wrong_fix_is_unknown);
    g_test_add_func("/usb-storage/unmapped-device", test_unmapped_device);
    g_test_add_func("/usb-bot/idle", test_bot_idle);
    g_test_add_func("/usb-bot/pending", test_bot_pending);
    g_test_add_func("/usb-bot/facts-checked", test_bot_facts_checked);
    g_test_add_func("/usb-storage/stick", test_stick);
    g_test_add_func("/usb-storage/topologies", test_topologies);
    g_test_add_func("/usb-uas/refused", test_uas);
    g_test_add_func("/usb-storage/unsupported-fact", test_unsupported_fact);
    g_test_add_func("/report/json-shape", test_json_shape);
    return g_test_run();
}
