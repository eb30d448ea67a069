/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Devices, verdicts and their JSON form: the setters probes build verdicts with, and the
 * getters the sidecar reads them with. */
#include "verdict.h"

#include <stdarg.h>
#include <stddef.h>

const char *sm_state_to_string(SmState state)
{
    switch (state) {
    case SM_STATE_IDLE:
        return "idle";
    case SM_STATE_BUSY:
        return "busy";
    default:
        return "unknown";
    }
}

const char *sm_fix_to_string(SmFix fix)
{
    switch (fix) {
    case SM_FIX_ABSENT:
        return "absent";
    case SM_FIX_DISABLED:
        return "disabled";
    case SM_FIX_ENABLED:
        return "enabled";
    default:
        return "unknown";
    }
}

/* ---- Devices ---------------------------------------------------------------------------- */

SmDevice *sm_device_new(const char *qom_path, const char *id, const char *type,
                        const char *dev_path)
{
    SmDevice *d = g_new0(SmDevice, 1);
    d->qom_path = g_strdup(qom_path);
    d->id = g_strdup(id);
    d->type = g_strdup(type);
    d->dev_path = g_strdup(dev_path);
    d->facts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    return d;
}

void sm_device_free(SmDevice *device)
{
    if (!device) {
        return;
    }
    g_free(device->qom_path);
    g_free(device->id);
    g_free(device->type);
    g_free(device->dev_path);
    g_free(device->usb_port);
    g_hash_table_unref(device->facts);
    g_free(device);
}

const char *sm_device_get_qom_path(const SmDevice *device)
{
    return device->qom_path;
}

const char *sm_device_get_id(const SmDevice *device)
{
    return device->id;
}

const char *sm_device_get_type(const SmDevice *device)
{
    return device->type;
}

const char *sm_device_get_dev_path(const SmDevice *device)
{
    return device->dev_path;
}

const char *sm_device_get_usb_port(const SmDevice *device)
{
    return device->usb_port;
}

void sm_device_set_dev_path(SmDevice *device, const char *dev_path)
{
    g_free(device->dev_path);
    device->dev_path = g_strdup(dev_path);
}

void sm_device_set_usb_port(SmDevice *device, const char *port)
{
    g_free(device->usb_port);
    device->usb_port = g_strdup(port);
}

void sm_device_set_fact(SmDevice *device, const char *key, const char *value)
{
    if (value) {
        g_hash_table_replace(device->facts, g_strdup(key), g_strdup(value));
    } else {
        g_hash_table_remove(device->facts, key);
    }
}

const char *sm_device_get_fact(const SmDevice *device, const char *key)
{
    return g_hash_table_lookup(device->facts, key);
}

SmFix sm_device_get_fix(const SmDevice *device)
{
    const char *fix = sm_device_get_fact(device, SM_FACT_FIX);
    if (g_strcmp0(fix, "absent") == 0)
        return SM_FIX_ABSENT;
    if (g_strcmp0(fix, "disabled") == 0)
        return SM_FIX_DISABLED;
    if (g_strcmp0(fix, "enabled") == 0)
        return SM_FIX_ENABLED;
    return SM_FIX_UNKNOWN;
}

/* ---- Verdicts: built by probes ---------------------------------------------------------- */

SmDeviceVerdict *sm_verdict_new(const SmDevice *device, const char *probe)
{
    SmDeviceVerdict *v = g_new0(SmDeviceVerdict, 1);
    v->qom_path = g_strdup(device->qom_path);
    v->id = g_strdup(device->id);
    v->type = g_strdup(device->type);
    v->probe = g_strdup(probe);
    v->state = SM_STATE_UNKNOWN;
    v->bytes_pending = -1;
    v->fix = SM_FIX_UNKNOWN;
    return v;
}

static void clear_op(gpointer p)
{
    g_free(((SmPendingOp *)p)->name);
}

void sm_verdict_free(SmDeviceVerdict *verdict)
{
    if (!verdict) {
        return;
    }
    g_free(verdict->qom_path);
    g_free(verdict->id);
    g_free(verdict->type);
    g_free(verdict->probe);
    g_free(verdict->section);
    g_free(verdict->reason);
    g_free(verdict->mode);
    if (verdict->pending) {
        g_array_unref(verdict->pending);
    }
    if (verdict->detail && verdict->detail_type->free) {
        verdict->detail_type->free(verdict->detail);
    }
    g_free(verdict);
}

static SmDeviceVerdict *set_state(SmDeviceVerdict *v, SmState state, gboolean safe, const char *fmt,
                                  va_list ap)
{
    g_free(v->reason);
    v->reason = g_strdup_vprintf(fmt, ap);
    v->state = state;
    v->safe = state != SM_STATE_UNKNOWN && safe;
    return v;
}

SmDeviceVerdict *sm_verdict_set_idle(SmDeviceVerdict *verdict, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_state(verdict, SM_STATE_IDLE, TRUE, fmt, ap);
    va_end(ap);
    return verdict;
}

SmDeviceVerdict *sm_verdict_set_busy(SmDeviceVerdict *verdict, gboolean safe, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_state(verdict, SM_STATE_BUSY, safe, fmt, ap);
    va_end(ap);
    return verdict;
}

SmDeviceVerdict *sm_verdict_set_unknown(SmDeviceVerdict *verdict, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_state(verdict, SM_STATE_UNKNOWN, FALSE, fmt, ap);
    va_end(ap);
    return verdict;
}

SmDeviceVerdict *sm_verdict_set_unsupported(SmDeviceVerdict *verdict, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_state(verdict, SM_STATE_UNKNOWN, FALSE, fmt, ap);
    va_end(ap);
    verdict->final = TRUE;
    return verdict;
}

void sm_verdict_set_section(SmDeviceVerdict *verdict, const char *idstr)
{
    g_free(verdict->section);
    verdict->section = g_strdup(idstr);
}

void sm_verdict_set_mode(SmDeviceVerdict *verdict, const char *mode)
{
    g_free(verdict->mode);
    verdict->mode = g_strdup(mode);
}

void sm_verdict_set_bytes_pending(SmDeviceVerdict *verdict, gint64 bytes)
{
    verdict->bytes_pending = bytes;
}

void sm_verdict_set_fix(SmDeviceVerdict *verdict, SmFix fix)
{
    verdict->fix = fix;
}

void sm_verdict_add_pending(SmDeviceVerdict *verdict, const char *name, gboolean migrates,
                            gboolean harmless, gint64 bytes)
{
    if (!verdict->pending) {
        verdict->pending = g_array_sized_new(FALSE, FALSE, sizeof(SmPendingOp), 2);
        g_array_set_clear_func(verdict->pending, clear_op);
    }
    SmPendingOp op = {g_strdup(name ? name : "UNKNOWN"), migrates, harmless, bytes};
    g_array_append_val(verdict->pending, op);
}

/* The fields of a probe's SmDetailType that its struct_size says it has. */
#define DETAIL_HAS(t, field)                                                                       \
    ((t)->struct_size >= offsetof(SmDetailType, field) + sizeof((t)->field))

void sm_verdict_set_detail(SmDeviceVerdict *verdict, const SmDetailType *type, gpointer detail)
{
    if (verdict->detail && verdict->detail_type->free) {
        verdict->detail_type->free(verdict->detail);
    }
    verdict->detail_type = type;
    verdict->detail = detail;
}

gpointer sm_verdict_get_detail(const SmDeviceVerdict *verdict, const SmDetailType *type)
{
    return verdict->detail_type == type ? verdict->detail : NULL;
}

/* ---- Verdicts: read by the sidecar ------------------------------------------------------ */

guint sm_verdict_get_n_pending(const SmDeviceVerdict *verdict)
{
    return verdict->pending ? verdict->pending->len : 0;
}

const SmPendingOp *sm_verdict_get_pending(const SmDeviceVerdict *verdict, guint index)
{
    g_return_val_if_fail(index < sm_verdict_get_n_pending(verdict), NULL);
    return &g_array_index(verdict->pending, SmPendingOp, index);
}

const char *sm_verdict_pending_name(const SmDeviceVerdict *v)
{
    if (sm_verdict_get_n_pending(v) > 0) {
        return sm_verdict_get_pending(v, 0)->name;
    }
    return v->mode ? v->mode : "a transfer";
}

char *sm_verdict_pending_summary(const SmDeviceVerdict *v, guint index)
{
    const SmDetailType *t = v->detail_type;
    if (t && DETAIL_HAS(t, pending_summary) && t->pending_summary) {
        return t->pending_summary(v->detail, index);
    }
    return g_strdup(sm_verdict_get_pending(v, index)->name);
}

static json_object *str_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

static json_object *pending_to_json(const SmDeviceVerdict *v, guint i)
{
    const SmDetailType *t = v->detail_type;
    if (t && DETAIL_HAS(t, pending_to_json) && t->pending_to_json) {
        return t->pending_to_json(v->detail, i);
    }
    const SmPendingOp *op = sm_verdict_get_pending(v, i);
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(op->name));
    json_object_object_add(o, "bytes", op->bytes >= 0 ? json_object_new_int64(op->bytes) : NULL);
    json_object_object_add(o, "migrates", json_object_new_boolean(op->migrates));
    return o;
}

json_object *sm_verdict_to_json(const SmDeviceVerdict *v)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", str_or_null(v->id));
    json_object_object_add(o, "qom_path", str_or_null(v->qom_path));
    json_object_object_add(o, "type", str_or_null(v->type));
    json_object_object_add(o, "section", str_or_null(v->section));
    json_object_object_add(o, "state", json_object_new_string(sm_state_to_string(v->state)));
    json_object_object_add(o, "safe", json_object_new_boolean(v->safe));
    if (v->final)
        json_object_object_add(o, "final", json_object_new_boolean(TRUE));
    json_object_object_add(o, "mode", str_or_null(v->mode));
    json_object_object_add(o, "bytes_pending",
                           v->bytes_pending >= 0 ? json_object_new_int64(v->bytes_pending) : NULL);
    /* The first operation is the one the transport is working on; all are listed too. */
    guint n = sm_verdict_get_n_pending(v);
    json_object_object_add(o, "pending", n ? pending_to_json(v, 0) : NULL);
    json_object *all = json_object_new_array();
    for (guint i = 0; i < n; i++) {
        json_object_array_add(all, pending_to_json(v, i));
    }
    json_object_object_add(o, "requests", all);
    json_object_object_add(o, "fix", json_object_new_string(sm_fix_to_string(v->fix)));
    json_object_object_add(o, "reason", str_or_null(v->reason));
    json_object_object_add(o, "probe", str_or_null(v->probe));
    json_object *details = json_object_new_object();
    const SmDetailType *t = v->detail_type;
    if (t && DETAIL_HAS(t, to_json) && t->to_json) {
        t->to_json(v->detail, details);
    }
    json_object_object_add(o, "details", details);
    return o;
}
