/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Discovery and inspection against a QMP peer that answers any one query with a value of the
 * wrong JSON type (a string for a list, a number for a path, ...): no json-c assert, no crash,
 * and never a device judged on an answer it did not understand. Fails before the typed
 * replies (json_object_array_length() of a string aborts). */
#include "fake-server.h"
#include "probe.h"

#include <string.h>

/* A QEMU 7.2 look-alike with one usb-storage CD-ROM on UHCI port 1 at 00:02.0. */
static const struct {
    const char *cmd, *path, *prop;
    const char *reply; /* a "return" value, or NULL for a GenericError */
    const char *wrong; /* the same answer with the wrong type */
} tree[] = {
    {"qom-list", "/machine/peripheral", NULL, "[{\"name\":\"cd\",\"type\":\"child<usb-storage>\"}]",
     "\"cd\""},
    {"qom-list", "/machine/peripheral-anon", NULL, "[]", "{}"},
    {"qom-list", "/machine/unattached", NULL, "[]", "7"},
    {"qom-get", "/machine/peripheral/cd", "parent_bus", "\"/machine/peripheral/uhci/uhci.0\"",
     "[]"},
    {"qom-get", "/machine/peripheral/uhci/uhci.0", "type", "\"usb-bus\"", "5"},
    {"qom-get", "/machine/peripheral/uhci", "addr", "16", "\"16\""},
    {"qom-get", "/machine/peripheral/uhci", "parent_bus", "\"/machine/i440fx/pci.0\"", "false"},
    {"qom-get", "/machine/i440fx", "addr", NULL, "\"x\""},
    {"qom-get", "/machine/peripheral/cd", "port", "\"1\"", "1"},
    {"qom-list", "/machine/peripheral/cd", NULL, "[{\"name\":\"cd.0\",\"type\":\"child<SCSI>\"}]",
     "[1,2]"},
    {"qom-list", "/machine/peripheral/cd/cd.0", NULL,
     "[{\"name\":\"legacy[0]\",\"type\":\"child<scsi-cd>\"}]", "[{\"name\":3,\"type\":[]}]"},
    {"qom-get", "/machine/peripheral/cd/cd.0/legacy[0]", "channel", "0", "null"},
    {"qom-get", "/machine/peripheral/cd/cd.0/legacy[0]", "scsi-id", "0", "\"0\""},
    {"qom-get", "/machine/peripheral/cd/cd.0/legacy[0]", "lun", "0", "{\"lun\":0}"},
    {"qom-get", "/machine/peripheral/cd/cd.0/legacy[0]", "migrate-emulated-scsi-request", NULL,
     "\"on\""},
};

static const char *arg(json_object *msg, const char *key)
{
    json_object *args, *v;
    if (!json_object_object_get_ex(msg, "arguments", &args) ||
        !json_object_object_get_ex(args, key, &v))
        return NULL;
    return json_object_get_string(v);
}

/* Answers from the tree; entry `*(gint *)data` (-1: none) with its wrong-typed value. */
static void script(FakeServer *fs, gpointer data)
{
    gint wrong = *(gint *)data;
    fs_handshake(fs);
    for (;;) {
        g_autoptr(FakeMsg) msg = fs_recv(fs);
        if (!msg->obj)
            return;
        gssize hit = -1;
        for (gsize i = 0; i < G_N_ELEMENTS(tree) && hit < 0; i++) {
            if (g_strcmp0(msg->execute, tree[i].cmd) == 0 &&
                g_strcmp0(arg(msg->obj, "path"), tree[i].path) == 0 &&
                g_strcmp0(arg(msg->obj, "property"), tree[i].prop) == 0)
                hit = (gssize)i;
        }
        const char *reply = hit < 0 ? NULL : hit == wrong ? tree[hit].wrong : tree[hit].reply;
        if (reply)
            fs_reply(fs, msg->id, reply);
        else
            fs_sendf(
                fs,
                "{\"error\":{\"class\":\"GenericError\",\"desc\":\"no\"},\"id\":%" G_GINT64_FORMAT
                "}\n",
                msg->id);
    }
}

static GPtrArray *inspect_with(gint wrong, GError **error)
{
    FakeServer *fs = fake_server_new(FALSE, script, &wrong);
    QmpClient *qmp = qmp_client_connect(fake_server_address(fs), 5000, error);
    g_assert_nonnull(qmp);
    g_autoptr(SmRegistry) reg = sm_registry_new();
    GPtrArray *devices = sm_inspect_devices(qmp, reg, error);
    qmp_client_close(qmp);
    qmp_client_unref(qmp);
    fake_server_free(fs);
    return devices;
}

static void test_baseline(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) devices = inspect_with(-1, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(devices->len, ==, 1);
    const SmDevice *d = devices->pdata[0];
    g_assert_cmpstr(d->dev_path, ==, "0000:00:02.0/1");
    g_assert_cmpstr(sm_device_get_usb_port(d), ==, "1");
    g_assert_cmpstr(sm_device_get_fact(d, "usb-storage.luns"), ==, "1");
    g_assert_cmpstr(sm_device_get_fact(d, "usb-storage.lun0.addr"), ==, "0:0:0");
    g_assert_cmpint(sm_device_get_fix(d), ==, SM_FIX_ABSENT);
    g_assert_null(sm_device_get_fact(d, SM_FACT_UNSUPPORTED));
}

/* Each answer in turn of the wrong type: discovery fails, or the device comes out unsupported,
 * without its section's name or without its LUNs (so never judged idle), or, where the answer
 * was optional (the fix property), with the fix unknown. */
static void test_wrong_type(gconstpointer data)
{
    gint wrong = GPOINTER_TO_INT(data);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) devices = inspect_with(wrong, &error);
    if (!devices) {
        g_assert_nonnull(error);
        return;
    }
    if (devices->len == 0)
        return;
    const SmDevice *d = devices->pdata[0];
    gboolean understood = d->dev_path && sm_device_get_fact(d, "usb-storage.luns") &&
                          !sm_device_get_fact(d, SM_FACT_UNSUPPORTED);
    if (understood && tree[wrong].reply) {
        /* Only the fix may be missing, and then it is unknown, not a guess. (A query QEMU
         * refuses anyway, the host bridge's addr, reads the same either way.) */
        g_assert_cmpstr(tree[wrong].prop, ==, "migrate-emulated-scsi-request");
        g_assert_cmpint(sm_device_get_fix(d), ==, SM_FIX_UNKNOWN);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/hostile/baseline", test_baseline);
    for (gsize i = 0; i < G_N_ELEMENTS(tree); i++) {
        g_autofree char *path = g_strdup_printf("/hostile/wrong-type/%s/%s/%s", tree[i].cmd,
                                                tree[i].path, tree[i].prop ? tree[i].prop : "-");
        g_test_add_data_func(path, GINT_TO_POINTER((gint)i), test_wrong_type);
    }
    return g_test_run();
}
