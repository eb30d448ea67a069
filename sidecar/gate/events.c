/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The gate's event schema, written once: every event the engine emits (and the CLI's libvirt
 * form, which reports the same steps), with its members' types and meanings. The engine
 * checks each event it emits against it, the tests check every event they read from the
 * CLI's --json output and the daemon's wire, and doc/events.md is generated from it. */
#include "gate.h"

#include <gio/gio.h>

#define STR SM_EVENT_STRING
#define INT SM_EVENT_INT
#define NUM (SM_EVENT_INT | SM_EVENT_DOUBLE)
#define BOOL SM_EVENT_BOOL
#define ARR SM_EVENT_ARRAY
#define OBJ SM_EVENT_OBJECT
#define OR_NULL SM_EVENT_NULL
#define OPT TRUE
#define END                                                                                        \
    {                                                                                              \
        NULL, 0, FALSE, NULL                                                                       \
    }

static const SmEventMember common[] = {
    {SM_EVENT_KEY_EVENT, STR, 0, "the event's name"},
    {"t_ms", INT, 0, "milliseconds since the run started"},
    {"time", STR, OPT,
     "wall-clock time, RFC 3339 in UTC with milliseconds (the engine always sets it; the "
     "CLI's libvirt form does not)"},
    END,
};

static const SmEventMember start[] = {
    {"vm", STR | OR_NULL, 0, "the VM's name, null without one"},
    {"source", STR | OR_NULL, 0, "the source's QMP address (libvirt form: its connection URI)"},
    {"dest", STR, 0, "the destination's QMP address (libvirt form: its URI)"},
    {"uri", STR | OR_NULL, 0, "the migration URI (libvirt form: null unless given)"},
    {SM_EVENT_KEY_MAX_ATTEMPTS, INT, 0, "policy: attempts at most"},
    {"max_hold_ms", INT, 0, "policy: the hold budget"},
    {"on_unquiesceable", STR, 0, "policy: abort, use-fix or use-fix-if-benign"},
    END,
};

static const SmEventMember preflight[] = {
    {"source_qemu", STR | OR_NULL, 0, "the source QEMU's version"},
    {"dest_qemu", STR | OR_NULL, 0, "the destination QEMU's version"},
    {"machine", STR, 0, "the machine type both sides share"},
    {"source_state", STR, 0, "the source's run state: running or paused"},
    {"devices", ARR, 0,
     "a paused source's verdicts (probe objects), else the devices found {id, qom_path, type, "
     "fix}"},
    {"dest_fix", OBJ, 0, "device -> state of QEMU's fix on the destination"},
    {"warnings", ARR, OPT,
     "what may go wrong that the gate cannot prevent (strings): QEMU before 9.0 under TCG "
     "loses guest memory writes in a migration of RAM sized in 256 KiB multiples"},
    END,
};

static const SmEventMember attempt[] = {
    {SM_EVENT_KEY_ATTEMPT, INT, 0, "this attempt's number, from 1"},
    {SM_EVENT_KEY_MAX_ATTEMPTS, INT, 0, "policy: attempts at most"},
    END,
};

static const SmEventMember progress[] = {
    {"status", STR, 0, "QEMU's migration status"},
    {SM_EVENT_KEY_ATTEMPT, INT, 0, "the attempt's number"},
    {SM_EVENT_KEY_MAX_ATTEMPTS, INT, 0, "policy: attempts at most"},
    {"ram_total", INT, OPT, "bytes of guest RAM"},
    {"ram_transferred", INT, OPT, "bytes sent so far"},
    {"ram_remaining", INT, OPT, "bytes left to send"},
    {"mbps", NUM, OPT, "throughput in Mbit/s"},
    END,
};

static const SmEventMember pre_switchover[] = {
    {SM_EVENT_KEY_ATTEMPT, INT, 0, "the attempt's number"},
    {"devices", ARR, 0, "one verdict (probe object) per device"},
    {SM_EVENT_KEY_PROBE_US, INT, 0, "microseconds the capture took (the guest is stopped)"},
    {"wait_us", INT, 0, "microseconds from QEMU's pause to the capture"},
    {"event_us", INT, 0, "QEMU's event timestamp to its arrival, or -1"},
    {"reused", BOOL, 0, "a paused source's preflight verdict was reused (no RESUME since)"},
    {"verdict_us", INT, OPT,
     "a go verdict's event is written after migrate-continue (never while the guest is "
     "stopped): microseconds from the capture's end to the continue, or -1 (a reused verdict)"},
    {"continue_us", INT, OPT, "with verdict_us: microseconds migrate-continue took"},
    END,
};

static const SmEventMember hold[] = {
    {"device", STR, 0, "the busy device (id or QOM path)"},
    {"state", STR, 0, "its state: busy, unknown, ..."},
    {"pending", STR, 0, "what it has pending: a SCSI command's name or a transfer mode"},
    {"waiting_for", STR, 0, "a sentence for humans"},
    {"held_ms", INT, 0, "milliseconds held so far"},
    {"retry_in_ms", INT, 0,
     "milliseconds until the next attempt starts: backoff doubling per hold up to max-backoff, "
     "drawn from the upper half of that"},
    END,
};

static const SmEventMember dest_prepare[] = {
    {"command", STR, 0, "the dest-prepare command run"},
    END,
};

static const SmEventMember retry[] = {
    {SM_EVENT_KEY_ATTEMPT, INT, 0, "the next attempt's number"},
    END,
};

static const SmEventMember fix_fallback[] = {
    {"device", STR, 0, "the busy device"},
    {"pending", STR, 0, "what it has pending"},
    {"policy", STR, 0, "the on-unquiesceable policy that allowed it"},
    END,
};

static const SmEventMember completed[] = {
    {SM_EVENT_KEY_PATH, STR, 0, "idle, held or fix: how the migration went through"},
    {SM_EVENT_KEY_DOWNTIME_MS, INT, 0, "QEMU's downtime, or -1"},
    END,
};

static const SmEventMember aborted[] = {
    {"reason", STR, 0, "why the attempt was called off"},
    END,
};

static const SmEventMember restored[] = {
    {"source", STR, OPT, "\"restored\", or why the source keeps the gate's settings"},
    {"dest", STR, OPT, "\"restored\", or why the destination keeps them"},
    END,
};

static const SmEventMember result[] = {
    {SM_EVENT_KEY_RESULT, STR, 0, "migrated, refused, aborted, failed, interrupted or uncertain"},
    {SM_EVENT_KEY_EXIT_CODE, INT, 0, "the exit code (see safe-migrate(1))"},
    {SM_EVENT_KEY_ATTEMPTS, INT, 0, "attempts started"},
    {SM_EVENT_KEY_HOLDS, INT, 0, "holds"},
    {"total_ms", INT, 0, "milliseconds from start to result"},
    {SM_EVENT_KEY_PATH, STR | OR_NULL, OPT, "idle, held or fix, once a migration ran"},
    {SM_EVENT_KEY_DOWNTIME_MS, INT, OPT, "QEMU's downtime when migrated (libvirt form: -1)"},
    {"error", STR | OR_NULL, OPT, "what went wrong"},
    END,
};

static const SmEventSpec specs[] = {
    {SM_EVENT_START, "first, before anything is connected", start},
    {SM_EVENT_PREFLIGHT, "both sides checked, before anything starts", preflight},
    {SM_EVENT_ATTEMPT, "an attempt's migration started", attempt},
    {SM_EVENT_PROGRESS, "every second while the stream flows", progress},
    {SM_EVENT_PRE_SWITCHOVER, "QEMU paused before switchover and the devices were judged",
     pre_switchover},
    {SM_EVENT_HOLD, "a device is busy: the attempt is called off to retry", hold},
    {SM_EVENT_DEST_PREPARE, "dest-prepare runs for a fresh destination", dest_prepare},
    {SM_EVENT_RETRY, "a fresh destination is ready: the next attempt follows", retry},
    {SM_EVENT_FIX_FALLBACK, "a busy device goes through on QEMU's fix (policy allowed)",
     fix_fallback},
    {SM_EVENT_COMPLETED, "both sides confirm the VM runs on the destination", completed},
    {SM_EVENT_ABORTED, "the migration was called off; the VM runs on the source", aborted},
    {SM_EVENT_RESTORED, "the settings the gate changed were put back (before result)", restored},
    {SM_EVENT_RESULT, "last, exactly once", result},
};

const SmEventMember *sm_event_common_members(void)
{
    return common;
}

const SmEventSpec *sm_event_specs(guint *n_events)
{
    *n_events = G_N_ELEMENTS(specs);
    return specs;
}

static guint type_of(json_object *value)
{
    switch (json_object_get_type(value)) {
    case json_type_null:
        return SM_EVENT_NULL;
    case json_type_boolean:
        return SM_EVENT_BOOL;
    case json_type_double:
        return SM_EVENT_DOUBLE;
    case json_type_int:
        return SM_EVENT_INT;
    case json_type_object:
        return SM_EVENT_OBJECT;
    case json_type_array:
        return SM_EVENT_ARRAY;
    case json_type_string:
        return SM_EVENT_STRING;
    }
    return 0;
}

static const SmEventMember *find_member(const SmEventMember *list, const char *name)
{
    for (; list->name; list++)
        if (g_str_equal(list->name, name))
            return list;
    return NULL;
}

static gboolean check_required(const char *event, const SmEventMember *list, json_object *obj,
                               GError **error)
{
    for (; list->name; list++) {
        if (!list->optional && !json_object_object_get_ex(obj, list->name, NULL)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "event %s: member \"%s\" is missing", event, list->name);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean sm_event_validate(json_object *event, GError **error)
{
    json_object *name = NULL;
    if (!json_object_is_type(event, json_type_object) ||
        !json_object_object_get_ex(event, SM_EVENT_KEY_EVENT, &name) ||
        !json_object_is_type(name, json_type_string)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "not an event object with a string \"event\": %.80s",
                    json_object_to_json_string(event));
        return FALSE;
    }
    const char *ev = json_object_get_string(name);
    const SmEventSpec *spec = NULL;
    for (guint i = 0; !spec && i < G_N_ELEMENTS(specs); i++)
        spec = g_str_equal(specs[i].name, ev) ? &specs[i] : NULL;
    if (!spec) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "unknown event \"%s\"", ev);
        return FALSE;
    }
    json_object_object_foreach(event, key, value)
    {
        const SmEventMember *m = find_member(common, key);
        if (!m)
            m = find_member(spec->members, key);
        if (!m) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "event %s: unknown member \"%s\"", ev, key);
            return FALSE;
        }
        if (!(type_of(value) & m->types)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "event %s: member \"%s\" has the wrong type: %.80s", ev, key,
                        json_object_to_json_string(value));
            return FALSE;
        }
    }
    return check_required(ev, common, event, error) &&
           check_required(ev, spec->members, event, error);
}
