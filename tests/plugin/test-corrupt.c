/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Robustness on hostile input: every prefix of every fixture and seeded random byte flips
 * must neither crash nor read out of bounds, and a busy dump must never turn "idle". */
#include "fixture.h"

#include <string.h>

/* Whether a fixture has a device that is busy in the intact dump. */
static void busy_ids(const Fixture *f, GPtrArray *out)
{
    g_autoptr(SmReport) r = fixture_report(f, NULL);
    for (guint i = 0; i < r->devices->len; i++) {
        const SmDeviceVerdict *v = r->devices->pdata[i];
        /* Unknown in the intact dump only when QEMU cannot migrate it at all (usb-uas). */
        g_assert_true(v->state != SM_STATE_UNKNOWN ||
                      sm_device_get_fact(f->devices->pdata[i], SM_FACT_UNSUPPORTED));
        if (v->state == SM_STATE_BUSY) {
            g_ptr_array_add(out, g_strdup(v->id));
        }
    }
}

static void check_report(const SmReport *r, GPtrArray *busy, gboolean truncated)
{
    for (guint i = 0; i < r->devices->len; i++) {
        const SmDeviceVerdict *v = r->devices->pdata[i];
        g_assert_cmpint(v->state, >=, SM_STATE_IDLE);
        g_assert_cmpint(v->state, <=, SM_STATE_UNKNOWN);
        if (v->state == SM_STATE_UNKNOWN) {
            g_assert_false(v->safe);
            g_assert_nonnull(v->reason);
        }
        if (truncated) {
            g_assert_cmpint(v->state, ==, SM_STATE_UNKNOWN);
        }
        for (guint b = 0; busy && b < busy->len; b++) {
            if (g_strcmp0(busy->pdata[b], v->id) == 0) {
                g_assert_cmpint(v->state, !=, SM_STATE_IDLE);
            }
        }
    }
}

/* Each prefix is copied into an exact-size buffer so ASan sees any read past its end. */
static void test_prefixes(gconstpointer data)
{
    g_autoptr(Fixture) f = fixture_load(data);
    g_autoptr(GPtrArray) busy = g_ptr_array_new_with_free_func(g_free);
    busy_ids(f, busy);
    gsize len;
    const guint8 *d = g_bytes_get_data(f->state, &len);
    for (gsize n = 0; n < len; n++) {
        g_autoptr(GBytes) b = g_bytes_new(d, n);
        g_autoptr(SmReport) r = fixture_report(f, b);
        /* Section data can hold a false footer followed by a zero byte (the timer's tick
         * offset of q72-pc-hub-idle does, at byte 34): a prefix ending there is a complete
         * stream of the sections before it. Either way no device may be judged on it. */
        g_autoptr(SmStream) walked = sm_stream_parse(b);
        g_assert_true(r->stream_error || sm_stream_get_n_sections(walked) < 20);
        check_report(r, busy, TRUE);
    }
}

static void test_flips(gconstpointer data)
{
    g_autoptr(Fixture) f = fixture_load(data);
    g_autoptr(GPtrArray) busy = g_ptr_array_new_with_free_func(g_free);
    busy_ids(f, busy);
    gsize len;
    const guint8 *d = g_bytes_get_data(f->state, &len);
    g_autoptr(GRand) rand = g_rand_new_with_seed(0x5afe);
    g_autoptr(SmStream) intact = sm_stream_parse(f->state);
    /* Half the flips land in the usb-storage / scsi-disk sections, where they matter. */
    const SmSection *first = NULL;
    for (guint k = 0; k < sm_stream_get_n_sections(intact) && !first; k++) {
        const SmSection *s = sm_stream_get_section(intact, k);
        if (g_str_has_suffix(s->idstr, "/scsi-disk") || g_str_has_suffix(s->idstr, "/usb-storage"))
            first = s;
    }
    g_assert_nonnull(first);
    gsize lo = first->header_offset, hi = len;
    for (int i = 0; i < 3000; i++) {
        guint8 *copy = g_memdup2(d, len);
        int flips = 1 + g_rand_int_range(rand, 0, 3);
        for (int k = 0; k < flips; k++) {
            gsize at = (i & 1) ? (gsize)g_rand_int_range(rand, (gint32)lo, (gint32)hi)
                               : (gsize)g_rand_int_range(rand, 0, (gint32)len);
            copy[at] ^= (guint8)g_rand_int_range(rand, 1, 256);
        }
        g_autoptr(GBytes) b = g_bytes_new_take(copy, len);
        g_autoptr(SmReport) r = fixture_report(f, b);
        check_report(r, flips == 1 ? busy : NULL, FALSE);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autoptr(GPtrArray) names = fixture_list();
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *p1 = g_strdup_printf("/corrupt/prefixes/%s", (char *)names->pdata[i]);
        g_autofree char *p2 = g_strdup_printf("/corrupt/flips/%s", (char *)names->pdata[i]);
        g_test_add_data_func(p1, names->pdata[i], test_prefixes);
        g_test_add_data_func(p2, names->pdata[i], test_flips);
    }
    return g_test_run();
}
