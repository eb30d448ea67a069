/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Reports: every discovered device judged by its probe against one captured stream, and the
 * report's JSON and table forms. */
#define G_LOG_DOMAIN "sm-report"

#include "probe-private.h"

#include <string.h>

/* Every device judged against the parsed stream. */
static SmReport *judge(GBytes *state, const SmStream *stream, GPtrArray *devices,
                       const SmRegistry *registry, const char *qemu_version)
{
    SmReport *rep = g_new0(SmReport, 1);
    rep->qemu_version = g_strdup(qemu_version);
    rep->devices = g_ptr_array_new_with_free_func((GDestroyNotify)sm_verdict_free);
    rep->stream_bytes = g_bytes_get_size(state);
    rep->stream_error = g_strdup(sm_stream_get_error(stream));
    sm_resolve_by_elimination(devices, stream, registry);
    for (guint i = 0; i < devices->len; i++) {
        const SmDevice *d = devices->pdata[i];
        const SmProbe *probe = sm_registry_find_for_type(registry, d->type);
        SmDeviceVerdict *v = probe ? probe->analyse(probe, stream, d) : NULL;
        if (!v) {
            v = sm_verdict_set_unknown(sm_verdict_new(d, probe ? probe->name : NULL),
                                       "no probe judged this device");
        }
        if (v->state == SM_STATE_UNKNOWN) {
            v->safe = FALSE; /* whatever a plugin said */
        }
        g_ptr_array_add(rep->devices, v);
    }
    return rep;
}

SmReport *sm_report_from_stream(GBytes *state, GPtrArray *devices, const SmRegistry *registry,
                                const char *qemu_version)
{
    g_autoptr(SmStream) stream = sm_stream_parse(state);
    return judge(state, stream, devices, registry, qemu_version);
}

/* A state section of a probed kind that no discovered device claims makes an unknown verdict
 * of its own (see sm_report_from_split_capture). */
static void claim_sections(SmReport *report, const SmStream *stream, const SmRegistry *registry)
{
    for (guint i = 0; i < sm_stream_get_n_sections(stream); i++) {
        const SmSection *sec = sm_stream_get_section(stream, i);
        const char *name = sec->idstr ? strrchr(sec->idstr, '/') : NULL;
        gboolean probed = FALSE, claimed = FALSE;
        for (guint p = 0; name && p < sm_registry_get_n_probes(registry); p++) {
            const SmProbe *probe = sm_registry_get_probe(registry, p);
            probed = probed || (probe->section_names && probe->section_names[0] &&
                                g_str_equal(name + 1, probe->section_names[0]));
        }
        for (guint d = 0; probed && d < report->devices->len; d++) {
            const SmDeviceVerdict *v = g_ptr_array_index(report->devices, d);
            claimed = claimed || g_strcmp0(v->section, sec->idstr) == 0;
        }
        if (probed && !claimed) {
            SmDevice *ghost = sm_device_new(sec->idstr, NULL, name + 1, NULL);
            g_ptr_array_add(report->devices,
                            sm_verdict_set_unknown(sm_verdict_new(ghost, NULL),
                                                   "state section %s belongs to no discovered "
                                                   "device",
                                                   sec->idstr));
            sm_device_free(ghost);
        }
    }
}

SmReport *sm_report_from_split_capture(GBytes *state, GPtrArray *devices,
                                       const SmRegistry *registry, const char *qemu_version)
{
    g_autoptr(SmStream) stream = sm_stream_parse(state); /* once: the guest is stopped */
    SmReport *report = judge(state, stream, devices, registry, qemu_version);
    claim_sections(report, stream, registry);
    return report;
}

void sm_report_free(SmReport *report)
{
    if (!report) {
        return;
    }
    g_free(report->qemu_version);
    g_ptr_array_unref(report->devices);
    g_free(report->stream_error);
    g_free(report);
}

const SmDeviceVerdict *sm_report_first_unsafe(const SmReport *report)
{
    for (guint i = 0; i < report->devices->len; i++) {
        const SmDeviceVerdict *v = g_ptr_array_index(report->devices, i);
        if (!v->safe)
            return v;
    }
    return NULL;
}

json_object *sm_report_to_json(const SmReport *report)
{
    json_object *o = json_object_new_object();
    json_object_object_add(
        o, "qemu", report->qemu_version ? json_object_new_string(report->qemu_version) : NULL);
    json_object *devs = json_object_new_array();
    for (guint i = 0; i < report->devices->len; i++) {
        json_object_array_add(devs, sm_verdict_to_json(report->devices->pdata[i]));
    }
    json_object_object_add(o, "devices", devs);
    json_object_object_add(o, "stream_bytes", json_object_new_int64((gint64)report->stream_bytes));
    json_object_object_add(o, "stream_error",
                           report->stream_error ? json_object_new_string(report->stream_error)
                                                : NULL);
    json_object_object_add(o, "capture_us", json_object_new_int64(report->capture_us));
    return o;
}

char *sm_report_to_table(const SmReport *report)
{
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "QEMU %s, device state %" G_GSIZE_FORMAT " bytes",
                           report->qemu_version ? report->qemu_version : "?", report->stream_bytes);
    if (report->capture_us) {
        g_string_append_printf(s, ", captured in %.1f ms", report->capture_us / 1000.0);
    }
    g_string_append_c(s, '\n');
    if (report->stream_error) {
        g_string_append_printf(s, "stream: %s\n", report->stream_error);
    }
    if (report->devices->len == 0) {
        g_string_append(s, "no probed devices\n");
        return g_string_free(s, FALSE);
    }
    g_string_append_printf(s, "%-28s %-8s %-5s %-8s %-38s %-9s %s\n", "DEVICE", "STATE", "SAFE",
                           "MODE", "PENDING", "FIX", "WHY");
    for (guint i = 0; i < report->devices->len; i++) {
        const SmDeviceVerdict *v = report->devices->pdata[i];
        g_autofree char *pending =
            sm_verdict_get_n_pending(v) ? sm_verdict_pending_summary(v, 0) : NULL;
        g_string_append_printf(
            s, "%-28s %-8s %-5s %-8s %-38s %-9s %s\n", v->id ? v->id : v->qom_path,
            sm_state_to_string(v->state), v->safe ? "yes" : "no", v->mode ? v->mode : "-",
            pending ? pending : "-", sm_fix_to_string(v->fix), v->reason ? v->reason : "");
    }
    return g_string_free(s, FALSE);
}
