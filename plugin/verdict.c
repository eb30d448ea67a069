/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Devices, verdicts and their JSON form; SCSI opcode names for reports. */
#include "probe.h"

#include <stdarg.h>

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
    g_hash_table_unref(device->facts);
    g_free(device);
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

SmDeviceVerdict *sm_verdict_new(const SmDevice *device, const char *probe)
{
    SmDeviceVerdict *v = g_new0(SmDeviceVerdict, 1);
    v->qom_path = g_strdup(device->qom_path);
    v->id = g_strdup(device->id);
    v->type = g_strdup(device->type);
    v->probe = g_strdup(probe);
    v->state = SM_STATE_UNKNOWN;
    v->bytes_pending = -1;
    v->pending = g_ptr_array_new_with_free_func(g_free);
    v->fix = SM_FIX_UNKNOWN;
    v->details = json_object_new_object();
    return v;
}

SmDeviceVerdict *sm_verdict_set_unknown(SmDeviceVerdict *verdict, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_free(verdict->reason);
    verdict->reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    verdict->state = SM_STATE_UNKNOWN;
    verdict->safe = FALSE;
    return verdict;
}

SmDeviceVerdict *sm_verdict_set_unsupported(SmDeviceVerdict *verdict, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_free(verdict->reason);
    verdict->reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    verdict->state = SM_STATE_UNKNOWN;
    verdict->safe = FALSE;
    verdict->final = TRUE;
    return verdict;
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
    g_ptr_array_unref(verdict->pending);
    json_object_put(verdict->details);
    g_free(verdict);
}

static json_object *str_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

static json_object *request_to_json(const SmPendingRequest *r)
{
    json_object *o = json_object_new_object();
    char op[8];
    g_snprintf(op, sizeof(op), "0x%02x", r->cdb[0]);
    json_object_object_add(o, "opcode", json_object_new_string(op));
    json_object_object_add(o, "name", json_object_new_string(sm_scsi_opcode_name(r->cdb[0])));
    json_object_object_add(o, "tag", json_object_new_int64(r->tag));
    json_object_object_add(o, "lun", json_object_new_int64(r->lun));
    json_object_object_add(o, "bytes", r->bytes >= 0 ? json_object_new_int64(r->bytes) : NULL);
    json_object_object_add(o, "emulated", json_object_new_boolean(r->emulated));
    json_object_object_add(o, "migrates", json_object_new_boolean(r->migrates));
    json_object_object_add(o, "retry", json_object_new_boolean(r->retry));
    return o;
}

const char *sm_verdict_pending_name(const SmDeviceVerdict *v)
{
    if (v->pending && v->pending->len > 0) {
        const SmPendingRequest *r = g_ptr_array_index(v->pending, 0);
        return sm_scsi_opcode_name(r->cdb[0]);
    }
    return v->mode ? v->mode : "a transfer";
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
    /* The first request is the one the transport is working on; all are listed too. */
    json_object_object_add(o, "pending",
                           v->pending->len ? request_to_json(v->pending->pdata[0]) : NULL);
    json_object *all = json_object_new_array();
    for (guint i = 0; i < v->pending->len; i++) {
        json_object_array_add(all, request_to_json(v->pending->pdata[i]));
    }
    json_object_object_add(o, "requests", all);
    json_object_object_add(o, "fix", json_object_new_string(sm_fix_to_string(v->fix)));
    json_object_object_add(o, "reason", str_or_null(v->reason));
    json_object_object_add(o, "probe", str_or_null(v->probe));
    json_object_object_add(o, "details", json_object_get(v->details));
    return o;
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
