/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The gate's one header (sidecar/gate/): migration policy and the gate engine, shared by the
 * safe-migrate CLI, the safe-migrated daemon and the libvirt filter. */
#pragma once

#include <glib.h>
#include <json-c/json.h>

G_BEGIN_DECLS

#define SM_POLICY_ERROR (sm_policy_error_quark())
GQuark sm_policy_error_quark(void);
typedef enum {
    SM_POLICY_ERROR_FILE,        /* cannot read the file */
    SM_POLICY_ERROR_SYNTAX,      /* not a key file */
    SM_POLICY_ERROR_UNKNOWN_KEY, /* unknown group or key */
    SM_POLICY_ERROR_VALUE,       /* a value that does not parse */
    SM_POLICY_ERROR_MISSING,     /* a required key is missing */
} SmPolicyError;

/* What to do when a device stays busy past the hold budget. */
typedef enum {
    SM_FALLBACK_ABORT,             /* give up; the VM keeps running on the source */
    SM_FALLBACK_USE_FIX,           /* continue if the in-tree fix is on at both ends */
    SM_FALLBACK_USE_FIX_IF_BENIGN, /* as use-fix, only for commands whose loss is harmless */
} SmFallback;

/* What the daemon does with a migration whose requesting client went away. */
typedef enum {
    SM_DISCONNECT_CONTINUE, /* let it run to its end (it never leaves the VM paused) */
    SM_DISCONNECT_CANCEL,   /* call it off: the VM keeps running on the source */
} SmClientDisconnect;

typedef struct {
    char *name; /* VM name (--vm), or NULL */
    char *file; /* the vms.d file it came from, or NULL */
    char *source_qmp, *dest_qmp, *uri, *dest_prepare;
    gint64 dest_prepare_timeout_ms; /* dest-prepare is killed and the migration fails after it */
    guint max_attempts;
    gint64 max_hold_ms;
    gint64 backoff_ms;     /* the first hold's wait; doubles per hold */
    gint64 max_backoff_ms; /* ... up to this */
    SmFallback on_unquiesceable;
    gint64 probe_timeout_ms;
    gint64 downtime_limit_ms; /* -1: leave QEMU's */
    gint64 max_bandwidth;     /* bytes/s; -1: leave QEMU's */
    gboolean multifd, auto_converge;
    guint multifd_channels;                  /* 0: QEMU's default */
    gint64 migration_timeout_ms;             /* 0: none */
    char *plugin_dir;                        /* extra probe modules, or NULL */
    SmClientDisconnect on_client_disconnect; /* safe-migrated only */
    gboolean require_gate; /* libvirt hook: refuse to start a domain the filter cannot gate */
} SmPolicy;

void sm_policy_init(SmPolicy *policy);
void sm_policy_clear(SmPolicy *policy);
/* A deep copy of `src` into `dst` (uninitialised or cleared; sm_policy_clear it after). */
void sm_policy_copy(SmPolicy *dst, const SmPolicy *src);
/* The wait after hold number `holds` (from 1), `held_ms` into the hold budget: `backoff`
 * doubling per hold up to `max-backoff`, drawn from the upper half of that (jitter), and never
 * far past the budget's end. */
gint64 sm_policy_hold_wait(const SmPolicy *policy, guint holds, gint64 held_ms);
/* Loads CONFIG_DIR/defaults.conf (if present) then CONFIG_DIR/vms.d/VM_NAME.conf (required
 * when vm_name is not NULL) on top of what `policy` holds. Errors name file, line and key. */
gboolean sm_policy_load(SmPolicy *policy, const char *config_dir, const char *vm_name,
                        GError **error);
gboolean sm_policy_load_file(SmPolicy *policy, const char *path, GError **error);
/* Sets one key (as named in the files, e.g. "max-hold") from a command-line value. */
gboolean sm_policy_apply(SmPolicy *policy, const char *key, const char *value, GError **error);
/* Source, destination and URI must be known before a migration starts. */
gboolean sm_policy_check_complete(const SmPolicy *policy, GError **error);

/* Durations as systemd.time(7) writes them: "500ms", "1.5s", "1min 30s", "2h", "0". A number
 * without a unit is refused, except by sm_parse_duration_full with bare_unit_ms > 0 (where
 * the unit is documented, e.g. --downtime-limit's milliseconds). Anything above
 * SM_DURATION_MAX_MS is refused rather than wrapped: a huge value must not mean "none". */
#define SM_DURATION_MAX_MS (7 * 24 * 3600 * G_GINT64_CONSTANT(1000))
gboolean sm_parse_duration(const char *text, gint64 *out_ms);
gboolean sm_parse_duration_full(const char *text, gint64 bare_unit_ms, gint64 *out_ms,
                                GError **error);
gboolean sm_parse_bytes(const char *text, gint64 *out);
gboolean sm_parse_fallback(const char *text, SmFallback *out);
const char *sm_fallback_to_string(SmFallback fallback);
/* Sets one key from a command-line flag: errors name `flag` (e.g. "--source") rather than
 * the key ("source-qmp"), the name the user typed. */
gboolean sm_policy_apply_flag(SmPolicy *policy, const char *key, const char *flag,
                              const char *value, GError **error);

/* The process locale from the environment (GLib's messages and quotes), with numbers kept
 * in the C locale: JSON and logs must not print "0,5". */
void sm_setlocale(void);

/* ---- The gate engine -------------------------------------------------------------------- */

/* Exit codes of `safe-migrate migrate`, a contract orchestrators rely on. */
enum {
    SM_EXIT_OK = 0,          /* migrated */
    SM_EXIT_FAILURE = 1,     /* a query subcommand (status) ran but failed */
    SM_EXIT_USAGE = 2,       /* usage or policy error */
    SM_EXIT_UNREACHABLE = 3, /* could not connect, or preflight refused: nothing started */
    SM_EXIT_HELD_OUT = 4,    /* a device never became idle and policy forbade the fix */
    SM_EXIT_FAILED = 5,      /* migration failed otherwise; VM running on the source */
    SM_EXIT_UNCERTAIN = 6,   /* VM state uncertain: the operator must check */
    /* Interrupted by a signal (the migration called off, VM on the source): 128 + its
     * number, e.g. 129 SIGHUP, 130 SIGINT, 131 SIGQUIT, 143 SIGTERM. */
    SM_EXIT_SIGHUP = 129,
    SM_EXIT_SIGINT = 130,
    SM_EXIT_SIGQUIT = 131,
    SM_EXIT_SIGTERM = 143,
};

#define SM_ENGINE_ERROR (sm_engine_error_quark())
GQuark sm_engine_error_quark(void);
typedef enum {
    SM_ENGINE_ERROR_PREFLIGHT,
    SM_ENGINE_ERROR_FAILED,
    SM_ENGINE_ERROR_HELD_OUT,
    SM_ENGINE_ERROR_DEST_PREPARE,
    SM_ENGINE_ERROR_UNCERTAIN,
    SM_ENGINE_ERROR_COMPLETED_ANYWAY,
} SmEngineError;

/* ---- Events: one schema for the CLI's --json, the daemon's wire and its metrics ---------- */

/* Every step is reported as an event object {"event": NAME, "t_ms": N, ...}, the last one
 * "result". The names and members are defined once, in events.c's table (doc/events.md is
 * generated from it); consumers use these constants rather than their own copies. */
#define SM_EVENT_START "start"
#define SM_EVENT_PREFLIGHT "preflight"
#define SM_EVENT_ATTEMPT "attempt"
#define SM_EVENT_PROGRESS "progress"
#define SM_EVENT_PRE_SWITCHOVER "pre-switchover"
#define SM_EVENT_HOLD "hold"
#define SM_EVENT_DEST_PREPARE "dest-prepare"
#define SM_EVENT_RETRY "retry"
#define SM_EVENT_FIX_FALLBACK "fix-fallback"
#define SM_EVENT_COMPLETED "completed"
#define SM_EVENT_ABORTED "aborted"
#define SM_EVENT_RESTORED "restored"
#define SM_EVENT_RESULT "result"
/* Members the CLI, the daemon and the metrics read. */
#define SM_EVENT_KEY_EVENT "event"
#define SM_EVENT_KEY_RESULT "result"
#define SM_EVENT_KEY_EXIT_CODE "exit_code"
#define SM_EVENT_KEY_PATH "path"
#define SM_EVENT_KEY_ATTEMPT "attempt"
#define SM_EVENT_KEY_MAX_ATTEMPTS "max_attempts"
#define SM_EVENT_KEY_ATTEMPTS "attempts"
#define SM_EVENT_KEY_HOLDS "holds"
#define SM_EVENT_KEY_DOWNTIME_MS "downtime_ms"
#define SM_EVENT_KEY_PROBE_US "probe_us"
/* The values of "result" in the result event. */
#define SM_RESULT_MIGRATED "migrated"

/* JSON types a member may have (a set of them). */
typedef enum {
    SM_EVENT_STRING = 1 << 0,
    SM_EVENT_INT = 1 << 1,
    SM_EVENT_DOUBLE = 1 << 2,
    SM_EVENT_BOOL = 1 << 3,
    SM_EVENT_ARRAY = 1 << 4,
    SM_EVENT_OBJECT = 1 << 5,
    SM_EVENT_NULL = 1 << 6, /* "not known", e.g. a VM without a name */
} SmEventType;

typedef struct {
    const char *name;
    guint types; /* SmEventType bits */
    gboolean optional;
    const char *meaning;
} SmEventMember;

typedef struct {
    const char *name;
    const char *when;
    const SmEventMember *members; /* up to one with name NULL */
} SmEventSpec;

/* The schema: the members every event has, then each event (n_events of them). */
const SmEventMember *sm_event_common_members(void);
const SmEventSpec *sm_event_specs(guint *n_events);
/* Whether `event` is one the schema describes: a known name, every member known and of
 * its type, every required one present. G_IO_ERROR_INVALID_DATA says which is wrong. */
gboolean sm_event_validate(json_object *event, GError **error);

/* Called with each event; the object is only valid during the call. */
typedef void (*SmEventFunc)(json_object *event, gpointer user_data);

typedef struct SmMigration SmMigration;
SmMigration *sm_migration_new(const SmPolicy *policy, SmEventFunc func, gpointer user_data);
void sm_migration_free(SmMigration *migration);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmMigration, sm_migration_free);
/* Runs the whole migration on the thread-default main context; returns the exit code. */
int sm_migration_run(SmMigration *migration);
/* Thread-safe, async-signal-unsafe: asks the run to call the migration off (the VM stays on
 * the source). signum picks the exit code (128 + signum); 0 for a plain cancel (130). A QMP
 * query or capture in flight is abandoned (the connection closed and reopened) so that the
 * request acts at once. After migrate-continue nothing is called off: the run waits for
 * QEMU's outcome; a second request then leaves it, reporting both sides' states (exit 6). */
void sm_migration_request_cancel(SmMigration *migration, int signum);

typedef struct QmpClient QmpClient;
/* Why a migration of this VM may corrupt its guest whatever the gate decides, or NULL: QEMU
 * before 9.0 under TCG with RAM in 256 KiB multiples loses guest stores in migration (its
 * fast dirty sync leaves TCG's TLB stale; fixed upstream in 9.0). KVM is unaffected. */
char *sm_tcg_warning(QmpClient *qmp);

/* Brings a VM left behind by a dead gate back to a clean state: cancels a migration that is
 * in progress or paused at pre-switchover, turns pause-before-switchover off, and checks
 * where the VM runs from both sides' run states (dest_qmp may be NULL: the summary then
 * says the destination was not checked; a completed migration is then uncertain). Returns
 * an exit code and a one-line account in *summary. */
int sm_recover(const char *source_qmp, const char *dest_qmp, char **summary, GError **error);

G_END_DECLS
