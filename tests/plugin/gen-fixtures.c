/* Regenerates tests/plugin/fixtures/: device-state dumps of real QEMU 7.2 and 10.0 with the
 * usb-storage CD-ROM(s) of the test rig in each BOT state, plus the QOM facts of each dump.
 * Usage: gen-fixtures OUTDIR   (needs the SM_QEMU* environment of the test suite) */
#include "probe.h"
#include "rig.h"

#include <stdio.h>

typedef enum { ST_IDLE, ST_GESN, ST_READ10, ST_CSW, ST_MULTI } State;
static const char *const state_names[] = {"idle", "gesn-pending", "read10-pending", "csw-pending",
                                          "multi"};

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

/* Leaves the guest's transaction in the wanted state on `disk`. */
static gboolean drive(RigGuest *g, guint disk, State st, GError **error)
{
    RigCommand gesn = rig_cmd_gesn();
    RigCommand tur = rig_cmd_test_unit_ready();
    guint8 buf[2048];
    gsize len;
    guint8 status;
    /* As a guest driver starts: TEST UNIT READY takes the power-on unit attention (GESN is
     * exempt from it, READ is not), then two GESN polls. */
    for (int i = 0; i < 2; i++) {
        if (!rig_guest_transact(g, disk, &tur, buf, &len, &status, error)) {
            return FALSE;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (!rig_guest_transact(g, disk, &gesn, buf, &len, &status, error)) {
            return FALSE;
        }
    }
    switch (st) {
    case ST_IDLE:
        return TRUE;
    case ST_GESN:
        return rig_guest_send_cbw(g, disk, &gesn, NULL, error);
    case ST_READ10: {
        RigCommand rd = rig_cmd_read10(16, 1);
        return rig_guest_send_cbw(g, disk, &rd, NULL, error);
    }
    case ST_CSW:
        return rig_guest_send_cbw(g, disk, &gesn, NULL, error) &&
               rig_guest_data_in(g, disk, buf, 8, error) == 8;
    default:
        return FALSE;
    }
}

static gboolean generate(const char *outdir, RigQemu q, const char *machine, const char *tag,
                         State st, GError **error)
{
    RigVmConfig cfg = {
        .qemu = q, .machine = machine, .n_disks = st == ST_MULTI ? 2 : 1, .name = "fixture"};
    g_autoptr(RigVm) vm = rig_vm_start(&cfg, error);
    if (!vm) {
        return FALSE;
    }
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
    QmpClient *qmp = rig_vm_qmp(vm);
    g_autoptr(SmRegistry) reg = sm_registry_new();
    g_autoptr(GPtrArray) devices = sm_discover_devices(qmp, reg, error);
    if (!devices) {
        return FALSE;
    }
    for (guint i = 0; i < devices->len; i++) {
        SmDevice *d = devices->pdata[i];
        const SmProbe *p = sm_registry_find_for_type(reg, d->type);
        if (p->inspect && !p->inspect(p, qmp, d, error)) {
            return FALSE;
        }
    }
    g_autoptr(GBytes) state = sm_capture_device_state(qmp, error);
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
        for (State st = ST_IDLE; st <= ST_MULTI; st++) {
            g_autoptr(GError) error = NULL;
            if (!generate(argv[1], configs[c].q, configs[c].machine, configs[c].tag, st, &error)) {
                fprintf(stderr, "%s %s: %s\n", configs[c].tag, state_names[st], error->message);
                return 1;
            }
        }
    }
    return 0;
}
