/* Per-VM migration policy: a defaults file plus vms.d/NAME.conf (GKeyFile), validated key by
 * key so that every mistake is reported with its file, line and key. */
#include "sidecar.h"

#include <errno.h>
#include <string.h>

GQuark sm_policy_error_quark(void)
{
    return g_quark_from_static_string("sm-policy-error-quark");
}

typedef enum {
    KEY_STRING,
    KEY_COUNT,
    KEY_DURATION,
    KEY_BYTES,
    KEY_BOOL,
    KEY_FALLBACK,
    KEY_DISCONNECT
} KeyKind;

typedef struct {
    const char *group;
    const char *key;
    KeyKind kind;
    gsize offset;
} KeySpec;

#define FIELD(f) G_STRUCT_OFFSET(SmPolicy, f)
static const KeySpec keys[] = {
    {"vm", "source-qmp", KEY_STRING, FIELD(source_qmp)},
    {"vm", "dest-qmp", KEY_STRING, FIELD(dest_qmp)},
    {"vm", "uri", KEY_STRING, FIELD(uri)},
    {"vm", "dest-prepare", KEY_STRING, FIELD(dest_prepare)},
    {"vm", "dest-prepare-timeout", KEY_DURATION, FIELD(dest_prepare_timeout_ms)},
    {"gate", "max-attempts", KEY_COUNT, FIELD(max_attempts)},
    {"gate", "max-hold", KEY_DURATION, FIELD(max_hold_ms)},
    {"gate", "backoff", KEY_DURATION, FIELD(backoff_ms)},
    {"gate", "on-unquiesceable", KEY_FALLBACK, FIELD(on_unquiesceable)},
    {"gate", "probe-timeout", KEY_DURATION, FIELD(probe_timeout_ms)},
    {"gate", "plugin-dir", KEY_STRING, FIELD(plugin_dir)},
    {"gate", "on-client-disconnect", KEY_DISCONNECT, FIELD(on_client_disconnect)},
    {"migration", "downtime-limit", KEY_DURATION, FIELD(downtime_limit_ms)},
    {"migration", "max-bandwidth", KEY_BYTES, FIELD(max_bandwidth)},
    {"migration", "multifd", KEY_BOOL, FIELD(multifd)},
    {"migration", "auto-converge", KEY_BOOL, FIELD(auto_converge)},
    {"migration", "timeout", KEY_DURATION, FIELD(migration_timeout_ms)},
};

void sm_policy_init(SmPolicy *policy)
{
    memset(policy, 0, sizeof *policy);
    policy->max_attempts = 10;
    policy->dest_prepare_timeout_ms = 120000;
    policy->max_hold_ms = 60000;
    policy->backoff_ms = 200;
    policy->on_unquiesceable = SM_FALLBACK_ABORT;
    policy->probe_timeout_ms = 5000;
    policy->downtime_limit_ms = -1;
    policy->max_bandwidth = -1;
    policy->migration_timeout_ms = 0;
}

void sm_policy_clear(SmPolicy *policy)
{
    g_free(policy->name);
    g_free(policy->source_qmp);
    g_free(policy->dest_qmp);
    g_free(policy->uri);
    g_free(policy->dest_prepare);
    g_free(policy->file);
    g_free(policy->plugin_dir);
    sm_policy_init(policy);
}

const char *sm_fallback_to_string(SmFallback fallback)
{
    switch (fallback) {
    case SM_FALLBACK_USE_FIX:
        return "use-fix";
    case SM_FALLBACK_USE_FIX_IF_BENIGN:
        return "use-fix-if-benign";
    case SM_FALLBACK_ABORT:
    default:
        return "abort";
    }
}

gboolean sm_parse_fallback(const char *text, SmFallback *out)
{
    static const SmFallback all[] = {SM_FALLBACK_ABORT, SM_FALLBACK_USE_FIX,
                                     SM_FALLBACK_USE_FIX_IF_BENIGN};
    for (guint i = 0; i < G_N_ELEMENTS(all); i++) {
        if (g_strcmp0(text, sm_fallback_to_string(all[i])) == 0) {
            *out = all[i];
            return TRUE;
        }
    }
    return FALSE;
}

typedef struct {
    const char *suffix;
    guint64 scale;
} Unit;

/* A decimal count with one of `units` as suffix; the count must fit gint64 once scaled. */
static gboolean parse_scaled(const char *text, const Unit *units, guint n_units, gint64 *out)
{
    if (!text || !g_ascii_isdigit(text[0]))
        return FALSE;
    char *end = NULL;
    errno = 0;
    guint64 value = g_ascii_strtoull(text, &end, 10);
    if (errno)
        return FALSE;
    for (guint i = 0; i < n_units; i++) {
        if (g_str_equal(end, units[i].suffix)) {
            if (value > (guint64)G_MAXINT64 / units[i].scale)
                return FALSE;
            *out = (gint64)(value * units[i].scale);
            return TRUE;
        }
    }
    return FALSE;
}

/* "250ms", "2s", "1m"; a bare 0 is allowed (it means "none" wherever it is accepted). A unit is
 * required otherwise: "500" could mean either and a migration policy must not guess. */
gboolean sm_parse_duration(const char *text, gint64 *out_ms)
{
    static const Unit units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}};
    if (g_strcmp0(text, "0") == 0) {
        *out_ms = 0;
        return TRUE;
    }
    return parse_scaled(text, units, G_N_ELEMENTS(units), out_ms);
}

/* Bytes per second, with optional K/M/G (binary) suffix. */
gboolean sm_parse_bytes(const char *text, gint64 *out)
{
    static const Unit units[] = {
        {"", 1}, {"K", 1024}, {"k", 1024}, {"M", 1024 * 1024}, {"G", 1024 * 1024 * 1024}};
    return parse_scaled(text, units, G_N_ELEMENTS(units), out);
}

/* GKeyFile keeps no line numbers, so find them in the text: the first "key =" line inside
 * "[group]", or the "[group]" line when key is NULL. Returns 0 when not found (a key can
 * only be missing, then). */
static guint line_of(const char *text, const char *group, const char *key)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    gboolean in_group = FALSE;
    for (guint i = 0; lines[i]; i++) {
        const char *l = lines[i];
        while (*l == ' ' || *l == '\t')
            l++;
        if (*l == '[') {
            const char *close = strchr(l, ']');
            in_group = close && group && (gsize)(close - l - 1) == strlen(group) &&
                       strncmp(l + 1, group, strlen(group)) == 0;
            if (in_group && !key)
                return i + 1; /* the group header itself */
            continue;
        }
        if (in_group && key && g_str_has_prefix(l, key)) {
            const char *rest = l + strlen(key);
            while (*rest == ' ' || *rest == '\t')
                rest++;
            if (*rest == '=')
                return i + 1;
        }
    }
    return 0;
}

/* GKeyFile's syntax errors carry no line number: find the first line that is neither blank,
 * a comment, a [group] nor a key=value inside a group. */
static guint first_bad_line(const char *text)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    gboolean in_group = FALSE;
    for (guint i = 0; lines[i]; i++) {
        g_autofree char *l = g_strstrip(g_strdup(lines[i]));
        if (!*l || *l == '#')
            continue;
        if (*l == '[' && l[strlen(l) - 1] == ']')
            in_group = TRUE;
        else if (!in_group || !strchr(l, '='))
            return i + 1;
    }
    return 0;
}

static gboolean fail(GError **error, SmPolicyError code, const char *file, guint line,
                     const char *group, const char *key, const char *fmt, ...) G_GNUC_PRINTF(7, 8);
static gboolean fail(GError **error, SmPolicyError code, const char *file, guint line,
                     const char *group, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autofree char *where = line ? g_strdup_printf("%s:%u", file, line) : g_strdup(file);
    if (g_str_has_prefix(file, "--")) /* a command-line flag: it names the key itself */
        g_set_error(error, SM_POLICY_ERROR, code, "%s: %s", file, what);
    else if (key)
        g_set_error(error, SM_POLICY_ERROR, code, "%s: [%s] %s: %s", where, group, key, what);
    else
        g_set_error(error, SM_POLICY_ERROR, code, "%s: %s", where, what);
    return FALSE;
}

static const KeySpec *find_key(const char *group, const char *key)
{
    for (guint i = 0; i < G_N_ELEMENTS(keys); i++)
        if (g_str_equal(keys[i].group, group) && g_str_equal(keys[i].key, key))
            return &keys[i];
    return NULL;
}

static gboolean apply_value(SmPolicy *policy, const KeySpec *spec, const char *value,
                            const char *file, guint line, GError **error)
{
    gpointer field = G_STRUCT_MEMBER_P(policy, spec->offset);
    gint64 number = 0;
    switch (spec->kind) {
    case KEY_STRING:
        if (!*value)
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "empty value");
        g_free(*(char **)field);
        *(char **)field = g_strdup(value);
        return TRUE;
    case KEY_COUNT: {
        char *end = NULL;
        guint64 n = g_ascii_strtoull(value, &end, 10);
        if (end == value || *end || n == 0 || n > 1000000 || value[0] == '-')
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "'%s' is not a count from 1 to 1000000", value);
        *(guint *)field = (guint)n;
        return TRUE;
    }
    case KEY_DURATION:
        if (!sm_parse_duration(value, &number))
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "'%s' is not a duration (e.g. 500ms, 2s, 1m)", value);
        if (number == 0 && spec->offset == FIELD(probe_timeout_ms))
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "0 would let a capture that never answers stop the guest for good; "
                        "give a time limit (e.g. 5s)");
        *(gint64 *)field = number;
        return TRUE;
    case KEY_BYTES:
        if (!sm_parse_bytes(value, &number))
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "'%s' is not a byte count (e.g. 104857600, 100M)", value);
        *(gint64 *)field = number;
        return TRUE;
    case KEY_BOOL:
        if (g_str_equal(value, "true") || g_str_equal(value, "yes"))
            *(gboolean *)field = TRUE;
        else if (g_str_equal(value, "false") || g_str_equal(value, "no"))
            *(gboolean *)field = FALSE;
        else
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "'%s' is not true or false", value);
        return TRUE;
    case KEY_FALLBACK:
        if (!sm_parse_fallback(value, (SmFallback *)field))
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "'%s' is not one of abort, use-fix, use-fix-if-benign", value);
        return TRUE;
    case KEY_DISCONNECT:
        if (g_str_equal(value, "continue") || g_str_equal(value, "cancel"))
            *(SmClientDisconnect *)field =
                g_str_equal(value, "cancel") ? SM_DISCONNECT_CANCEL : SM_DISCONNECT_CONTINUE;
        else
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "'%s' is not continue or cancel", value);
        return TRUE;
    }
    return FALSE;
}

gboolean sm_policy_apply(SmPolicy *policy, const char *key, const char *value, GError **error)
{
    for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
        if (g_str_equal(keys[i].key, key)) {
            g_autofree char *origin = g_strdup_printf("--%s", key);
            g_autofree char *v = g_strstrip(g_strdup(value));
            return apply_value(policy, &keys[i], v, origin, 0, error);
        }
    }
    g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_UNKNOWN_KEY, "unknown setting '%s'", key);
    return FALSE;
}

gboolean sm_policy_load_file(SmPolicy *policy, const char *path, GError **error)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) local = NULL;
    if (!g_file_get_contents(path, &text, NULL, &local))
        return fail(error, SM_POLICY_ERROR_FILE, path, 0, NULL, NULL, "%s", local->message);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    if (!g_key_file_load_from_data(kf, text, (gsize)-1, G_KEY_FILE_NONE, &local))
        return fail(error, SM_POLICY_ERROR_SYNTAX, path, first_bad_line(text), NULL, NULL, "%s",
                    local->message);

    g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
    for (guint g = 0; groups[g]; g++) {
        g_auto(GStrv) names = g_key_file_get_keys(kf, groups[g], NULL, NULL);
        if (!g_str_equal(groups[g], "vm") && !g_str_equal(groups[g], "gate") &&
            !g_str_equal(groups[g], "migration")) {
            guint line = line_of(text, groups[g], NULL);
            return fail(error, SM_POLICY_ERROR_UNKNOWN_KEY, path, line, NULL, NULL,
                        "unknown group [%s] (known: [vm], [gate], [migration])", groups[g]);
        }
        for (guint k = 0; names && names[k]; k++) {
            guint line = line_of(text, groups[g], names[k]);
            const KeySpec *spec = find_key(groups[g], names[k]);
            if (!spec)
                return fail(error, SM_POLICY_ERROR_UNKNOWN_KEY, path, line, groups[g], names[k],
                            "unknown key");
            g_autofree char *value = g_key_file_get_string(kf, groups[g], names[k], &local);
            if (!value)
                return fail(error, SM_POLICY_ERROR_VALUE, path, line, groups[g], names[k], "%s",
                            local->message);
            g_strstrip(value);
            if (!apply_value(policy, spec, value, path, line, error))
                return FALSE;
        }
    }
    return TRUE;
}

gboolean sm_policy_load(SmPolicy *policy, const char *config_dir, const char *vm_name,
                        GError **error)
{
    g_autofree char *defaults = g_build_filename(config_dir, "defaults.conf", NULL);
    if (g_file_test(defaults, G_FILE_TEST_EXISTS) && !sm_policy_load_file(policy, defaults, error))
        return FALSE;
    if (!vm_name)
        return TRUE;
    if (!*vm_name || strchr(vm_name, '/') || vm_name[0] == '.') {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE, "bad VM name '%s'", vm_name);
        return FALSE;
    }
    g_autofree char *base = g_strconcat(vm_name, ".conf", NULL);
    g_autofree char *path = g_build_filename(config_dir, "vms.d", base, NULL);
    if (!sm_policy_load_file(policy, path, error))
        return FALSE;
    g_free(policy->name);
    policy->name = g_strdup(vm_name);
    g_free(policy->file);
    policy->file = g_steal_pointer(&path);
    return TRUE;
}

gboolean sm_policy_check_complete(const SmPolicy *policy, GError **error)
{
    static const struct {
        const char *key;
        gsize offset;
    } required[] = {
        {"source-qmp", FIELD(source_qmp)}, {"dest-qmp", FIELD(dest_qmp)}, {"uri", FIELD(uri)}};
    for (guint i = 0; i < G_N_ELEMENTS(required); i++) {
        if (!G_STRUCT_MEMBER(char *, policy, required[i].offset)) {
            if (policy->file)
                return fail(error, SM_POLICY_ERROR_MISSING, policy->file, 0, "vm", required[i].key,
                            "missing (required; or give --%s)", required[i].key);
            g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_MISSING,
                        "missing --%s (or give --vm NAME with a policy file)",
                        g_str_equal(required[i].key, "source-qmp") ? "source"
                        : g_str_equal(required[i].key, "dest-qmp") ? "dest"
                                                                   : "uri");
            return FALSE;
        }
    }
    return TRUE;
}
