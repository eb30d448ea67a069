/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Test helpers: load a device-state fixture and its QOM facts. */
#include "fixture.h"

char *fixture_dir(void)
{
    const char *root = g_getenv("SM_SOURCE_ROOT");
    g_assert_nonnull(root);
    return g_build_filename(root, "tests", "plugin", "fixtures", NULL);
}

static gint cmp(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(char *const *)a, *(char *const *)b);
}

GPtrArray *fixture_list(void)
{
    g_autofree char *dir = fixture_dir();
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *n;
    while ((n = g_dir_read_name(d))) {
        if (g_str_has_suffix(n, ".bin")) {
            g_ptr_array_add(names, g_strndup(n, strlen(n) - 4));
        }
    }
    g_ptr_array_sort(names, cmp);
    return names;
}

Fixture *fixture_load(const char *name)
{
    g_autofree char *dir = fixture_dir();
    g_autofree char *bin = g_strdup_printf("%s/%s.bin", dir, name);
    g_autofree char *meta = g_strdup_printf("%s/%s.json", dir, name);
    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(bin, &data, &len, NULL));
    Fixture *f = g_new0(Fixture, 1);
    f->name = g_strdup(name);
    f->state = g_bytes_new_take(data, len);
    f->devices = g_ptr_array_new_with_free_func((GDestroyNotify)sm_device_free);
    json_object *m = json_object_from_file(meta);
    g_assert_nonnull(m);
    f->qemu = g_strdup(json_object_get_string(json_object_object_get(m, "qemu")));
    f->machine = g_strdup(json_object_get_string(json_object_object_get(m, "machine")));
    json_object *devs = json_object_object_get(m, "devices");
    for (size_t i = 0; i < json_object_array_length(devs); i++) {
        json_object *o = json_object_array_get_idx(devs, i);
        SmDevice *d = sm_device_new(json_object_get_string(json_object_object_get(o, "qom_path")),
                                    json_object_get_string(json_object_object_get(o, "id")),
                                    json_object_get_string(json_object_object_get(o, "type")),
                                    json_object_get_string(json_object_object_get(o, "dev_path")));
        json_object_object_foreach(json_object_object_get(o, "facts"), k, v)
        {
            sm_device_set_fact(d, k, json_object_get_string(v));
        }
        g_ptr_array_add(f->devices, d);
    }
    json_object_put(m);
    return f;
}

void fixture_free(Fixture *f)
{
    if (!f) {
        return;
    }
    g_free(f->name);
    g_bytes_unref(f->state);
    g_ptr_array_unref(f->devices);
    g_free(f->qemu);
    g_free(f->machine);
    g_free(f);
}

GPtrArray *fixture_devices(const Fixture *f)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)sm_device_free);
    for (guint i = 0; i < f->devices->len; i++) {
        const SmDevice *d = f->devices->pdata[i];
        SmDevice *c = sm_device_new(d->qom_path, d->id, d->type, d->dev_path);
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, d->facts);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            sm_device_set_fact(c, k, v);
        }
        g_ptr_array_add(out, c);
    }
    return out;
}

SmReport *fixture_report(const Fixture *f, GBytes *state)
{
    g_autoptr(SmRegistry) reg = sm_registry_new();
    g_autoptr(GPtrArray) devs = fixture_devices(f);
    return sm_report_from_stream(state ? state : f->state, devs, reg, f->qemu);
}

const SmDeviceVerdict *report_device(const SmReport *r, const char *id)
{
    for (guint i = 0; i < r->devices->len; i++) {
        const SmDeviceVerdict *v = r->devices->pdata[i];
        if (g_strcmp0(v->id, id) == 0) {
            return v;
        }
    }
    return NULL;
}
