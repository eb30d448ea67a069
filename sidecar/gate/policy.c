/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Per-VM migration policy: a defaults file plus vms.d/NAME.conf (GKeyFile), validated key by
 * key so that every mistake is reported with its file, line and key. */
#include "gate.h"
#include "qmp.h"

#include <gio/gunixsocketaddress.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <locale.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

/* A policy file is a few dozen lines; anything this big is a mistake (or hostile). */
#define POLICY_MAX_BYTES (64 * 1024)

void sm_setlocale(void)
{
    setlocale(LC_ALL, "");
    setlocale(LC_NUMERIC, "C");
}

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
    KEY_DISCONNECT,
    KEY_MULTIFD
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
    {"gate", "max-backoff", KEY_DURATION, FIELD(max_backoff_ms)},
    {"gate", "on-unquiesceable", KEY_FALLBACK, FIELD(on_unquiesceable)},
    {"gate", "probe-timeout", KEY_DURATION, FIELD(probe_timeout_ms)},
    {"gate", "plugin-dir", KEY_STRING, FIELD(plugin_dir)},
    {"gate", "on-client-disconnect", KEY_DISCONNECT, FIELD(on_client_disconnect)},
    {"gate", "require-gate", KEY_BOOL, FIELD(require_gate)},
    {"migration", "downtime-limit", KEY_DURATION, FIELD(downtime_limit_ms)},
    {"migration", "max-bandwidth", KEY_BYTES, FIELD(max_bandwidth)},
    {"migration", "multifd", KEY_MULTIFD, FIELD(multifd)},
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
    policy->max_backoff_ms = 10000;
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

void sm_policy_copy(SmPolicy *dst, const SmPolicy *src)
{
    *dst = *src;
    dst->name = g_strdup(src->name);
    dst->file = g_strdup(src->file);
    dst->source_qmp = g_strdup(src->source_qmp);
    dst->dest_qmp = g_strdup(src->dest_qmp);
    dst->uri = g_strdup(src->uri);
    dst->dest_prepare = g_strdup(src->dest_prepare);
    dst->plugin_dir = g_strdup(src->plugin_dir);
}

/* Why capped, and why jittered: a device is busy for milliseconds (a command between its CBW
 * and its data), so an attempt's odds do not improve with a longer wait, while the attempts
 * left do shrink: doubling without a cap spent a 300 s budget in 12 attempts. Each attempt
 * copies the guest's RAM again, so the wait still grows, to a bound. The jitter keeps the
 * attempts out of step with a guest's periodic I/O (media polling every 2 s). */
gint64 sm_policy_hold_wait(const SmPolicy *policy, guint holds, gint64 held_ms)
{
    gint64 first = MAX(policy->backoff_ms, (gint64)0);
    gint64 cap = MAX(policy->max_backoff_ms, first);
    gint64 wait = first;
    for (guint i = 1; i < holds && wait < cap; i++)
        wait = wait > cap / 2 ? cap : wait * 2;
    wait -= (gint64)(g_random_double() * (double)(wait / 2));
    gint64 left = MAX(policy->max_hold_ms - MIN(held_ms, policy->max_hold_ms), (gint64)0);
    return left > G_MAXINT64 - first ? wait : MIN(wait, left + first);
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

/* systemd.time(7) units, as microseconds. Months and years are left out: nothing here should
 * wait that long, and their lengths are not exact. */
static const Unit time_units[] = {
    {"usec", 1},
    {"us", 1},
    {"\u00b5s", 1},
    {"msec", 1000},
    {"ms", 1000},
    {"seconds", 1000000},
    {"second", 1000000},
    {"sec", 1000000},
    {"s", 1000000},
    {"minutes", 60000000},
    {"minute", 60000000},
    {"min", 60000000},
    {"m", 60000000},
    {"hours", 3600000000},
    {"hour", 3600000000},
    {"hr", 3600000000},
    {"h", 3600000000},
    {"days", 86400000000},
    {"day", 86400000000},
    {"d", 86400000000},
    {"weeks", 604800000000},
    {"week", 604800000000},
    {"w", 604800000000},
};

static guint64 time_unit_us(const char *name, gsize len)
{
    for (guint i = 0; i < G_N_ELEMENTS(time_units); i++)
        if (strlen(time_units[i].suffix) == len && strncmp(time_units[i].suffix, name, len) == 0)
            return time_units[i].scale;
    return 0;
}

/* One "1.5s"-style component at *p (advanced past it); its value in microseconds, capped at
 * SM_DURATION_MAX_MS (anything above is reported as such, never wrapped). bare_us scales a
 * number without a unit; 0 refuses it. Returns FALSE on a syntax error. */
static gboolean duration_component(const char **p, guint64 bare_us, guint64 *out_us, gboolean *bare)
{
    const guint64 max_us = (guint64)SM_DURATION_MAX_MS * 1000;
    const char *s = *p;
    if (!g_ascii_isdigit(*s))
        return FALSE;
    guint64 whole = 0;
    for (; g_ascii_isdigit(*s); s++)
        whole = MIN(whole * 10 + (guint64)(*s - '0'), max_us + 1);
    const char *frac = NULL;
    if (*s == '.') {
        frac = ++s;
        if (!g_ascii_isdigit(*s))
            return FALSE;
        while (g_ascii_isdigit(*s))
            s++;
    }
    const char *frac_end = s;
    while (*s == ' ' || *s == '\t')
        s++;
    const char *unit = s;
    while (*s && !g_ascii_isdigit(*s) && *s != ' ' && *s != '\t' && *s != '.')
        s++;
    *bare = unit == s;
    guint64 scale = *bare ? bare_us : time_unit_us(unit, (gsize)(s - unit));
    if (scale == 0)
        return FALSE;
    guint64 us = whole > max_us / scale ? max_us + 1 : whole * scale;
    /* The fraction, digit by digit: 1.5s is 1500000us; what is below 1us is dropped. */
    guint64 place = scale;
    for (const char *f = frac; f && f < frac_end && place >= 10; f++) {
        place /= 10;
        us += (guint64)(*f - '0') * place;
    }
    /* Below 1us but not zero ("0.0001ms") is 1us: only a written zero may mean "none". */
    if (us == 0 && strspn(*p, "0.") < (gsize)(frac_end - *p))
        us = 1;
    *out_us = MIN(us, max_us + 1);
    *p = s;
    return TRUE;
}

gboolean sm_parse_duration_full(const char *text, gint64 bare_unit_ms, gint64 *out_ms,
                                GError **error)
{
    const guint64 max_us = (guint64)SM_DURATION_MAX_MS * 1000;
    const char *p = text ? text : "";
    while (*p == ' ' || *p == '\t')
        p++;
    guint64 total = 0;
    gboolean ok = *p != 0;
    if (g_strcmp0(p, "0") == 0) { /* a bare 0 is 0 in any unit: "none" where that is allowed */
        *out_ms = 0;
        return TRUE;
    }
    for (guint n = 0; ok && *p; n++) {
        guint64 us = 0;
        gboolean bare = FALSE;
        ok = duration_component(&p, (guint64)bare_unit_ms * 1000, &us, &bare);
        while (*p == ' ' || *p == '\t')
            p++;
        /* A bare number only alone: "1min 30" is a typo, not 90 of something. */
        if (ok && bare && (n > 0 || *p))
            ok = FALSE;
        total = MIN(total + us, max_us + 1);
    }
    if (!ok) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "'%s' is not a duration (e.g. 500ms, 1.5s, 1min 30s, 1h)%s", text ? text : "",
                    bare_unit_ms ? "" : "; a number needs a unit");
        return FALSE;
    }
    if (total > max_us) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "'%s' is more than the longest duration allowed, 7d", text);
        return FALSE;
    }
    /* Rounded up: a positive duration below 1ms must not become 0, "none". */
    *out_ms = (gint64)((total + 999) / 1000);
    return TRUE;
}

gboolean sm_parse_duration(const char *text, gint64 *out_ms)
{
    return sm_parse_duration_full(text, 0, out_ms, NULL);
}

/* Bytes per second, with optional B/K/M/G (binary) suffix. */
gboolean sm_parse_bytes(const char *text, gint64 *out)
{
    static const Unit units[] = {{"", 1},     {"B", 1},           {"K", 1024},
                                 {"k", 1024}, {"M", 1024 * 1024}, {"G", 1024 * 1024 * 1024}};
    return parse_scaled(text, units, G_N_ELEMENTS(units), out);
}

/* GKeyFile keeps no line numbers, so find them in the text: the last "key =" line inside
 * "[group]" (GKeyFile keeps the last of duplicates, so that is the value in force), or the
 * first "[group]" line when key is NULL. Returns 0 when not found (a key can only be
 * missing, then). */
static guint line_of(const char *text, const char *group, const char *key)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    gboolean in_group = FALSE;
    guint found = 0;
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
                found = i + 1;
        }
    }
    return found;
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

/* GKeyFile takes "key[de]=..." as a translation of "key" and hides it from get_keys; a
 * policy has no translations, so such a line is a mistake to report, not to skip. */
static gboolean check_no_locale_keys(const char *path, const char *text, GError **error)
{
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (guint i = 0; lines[i]; i++) {
        g_autofree char *l = g_strstrip(g_strdup(lines[i]));
        const char *eq = strchr(l, '=');
        const char *bracket = strchr(l, '[');
        if (*l == '#' || *l == '[' || !eq || !bracket || bracket > eq)
            continue;
        g_autofree char *key = g_strstrip(g_strndup(l, (gsize)(eq - l)));
        return fail(error, SM_POLICY_ERROR_UNKNOWN_KEY, path, i + 1, NULL, NULL,
                    "%s: locale-suffixed keys are not supported", key);
    }
    return TRUE;
}

/* Reads at most POLICY_MAX_BYTES, so that a huge (or endless) file is refused, not loaded. */
static char *read_capped(const char *path, GError **error)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it hung the daemon); only a
     * regular file is read (a device such as /dev/zero never ends). */
    int fd = g_open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        fail(error, SM_POLICY_ERROR_FILE, path, 0, NULL, NULL, "%s", g_strerror(err));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        fail(error, SM_POLICY_ERROR_FILE, path, 0, NULL, NULL, "not a regular file");
        return NULL;
    }
    g_autofree char *buf = g_malloc(POLICY_MAX_BYTES + 2);
    gsize len = 0;
    while (len <= POLICY_MAX_BYTES) {
        ssize_t n = read(fd, buf + len, POLICY_MAX_BYTES + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            close(fd);
            fail(error, SM_POLICY_ERROR_FILE, path, 0, NULL, NULL, "%s", g_strerror(err));
            return NULL;
        }
        if (n == 0)
            break;
        len += (gsize)n;
    }
    close(fd);
    if (len > POLICY_MAX_BYTES) {
        fail(error, SM_POLICY_ERROR_FILE, path, 0, NULL, NULL,
             "larger than %d KiB: not a policy file", POLICY_MAX_BYTES / 1024);
        return NULL;
    }
    buf[len] = 0;
    return g_steal_pointer(&buf);
}
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

/* multifd: true/false, or a channel count (1-255, QEMU's multifd-channels) that turns it on. */
static gboolean apply_multifd(SmPolicy *policy, const char *value, const char *file, guint line,
                              const KeySpec *spec, GError **error)
{
    char *end = NULL;
    guint64 n = g_ascii_strtoull(value, &end, 10);
    if (g_ascii_isdigit(value[0]) && end && !*end) {
        if (n == 0 || n > 255)
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "'%s' is not a channel count from 1 to 255", value);
        policy->multifd = TRUE;
        policy->multifd_channels = (guint)n;
    } else if (g_str_equal(value, "true") || g_str_equal(value, "yes")) {
        policy->multifd = TRUE;
    } else if (g_str_equal(value, "false") || g_str_equal(value, "no")) {
        policy->multifd = FALSE;
    } else {
        return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                    "'%s' is not true, false or a channel count", value);
    }
    return TRUE;
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
    case KEY_DURATION: {
        g_autoptr(GError) local = NULL;
        if (!sm_parse_duration_full(value, 0, &number, &local))
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key, "%s",
                        local->message);
        if (number == 0 && spec->offset == FIELD(probe_timeout_ms))
            return fail(error, SM_POLICY_ERROR_VALUE, file, line, spec->group, spec->key,
                        "0 would let a capture that never answers stop the guest for good; "
                        "give a time limit (e.g. 5s)");
        *(gint64 *)field = number;
        return TRUE;
    }
    case KEY_MULTIFD:
        return apply_multifd(policy, value, file, line, spec, error);
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
    g_autofree char *flag = g_strdup_printf("--%s", key);
    return sm_policy_apply_flag(policy, key, flag, value, error);
}

gboolean sm_policy_apply_flag(SmPolicy *policy, const char *key, const char *flag,
                              const char *value, GError **error)
{
    for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
        if (g_str_equal(keys[i].key, key)) {
            const char *origin = flag;
            g_autofree char *v = g_strstrip(g_strdup(value));
            return apply_value(policy, &keys[i], v, origin, 0, error);
        }
    }
    g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_UNKNOWN_KEY, "unknown setting '%s'", key);
    return FALSE;
}

gboolean sm_policy_load_file(SmPolicy *policy, const char *path, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autofree char *text = read_capped(path, error);
    if (!text || !check_no_locale_keys(path, text, error))
        return FALSE;
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
            if (g_strv_contains((const char *const *)names + k + 1, names[k]))
                continue; /* a duplicate: its last occurrence is the one in force */
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

/* The CLI flag for a required key: what the user can type. */
static const char *flag_of(const char *key)
{
    return g_str_equal(key, "source-qmp") ? "--source"
           : g_str_equal(key, "dest-qmp") ? "--dest"
                                          : "--uri";
}

/* Both addresses parse, and they are not one monitor: connecting twice to the same QEMU
 * would wait for a greeting that never comes (QEMU serves one client at a time). */
static gboolean check_addresses(const SmPolicy *policy, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GSocketConnectable) src = qmp_address_parse_connectable(policy->source_qmp, &local);
    g_autoptr(GSocketConnectable) dst =
        src ? qmp_address_parse_connectable(policy->dest_qmp, &local) : NULL;
    if (!src || !dst) {
        const char *bad = src ? policy->dest_qmp : policy->source_qmp;
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE, "%s QMP address '%s': %s",
                    src ? "destination" : "source", bad, local->message);
        return FALSE;
    }
    gboolean same = g_str_equal(policy->source_qmp, policy->dest_qmp);
    if (G_IS_UNIX_SOCKET_ADDRESS(src) && G_IS_UNIX_SOCKET_ADDRESS(dst))
        same = same || g_str_equal(g_unix_socket_address_get_path(G_UNIX_SOCKET_ADDRESS(src)),
                                   g_unix_socket_address_get_path(G_UNIX_SOCKET_ADDRESS(dst)));
    if (same) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                    "source and destination QMP are the same address (%s): the destination is "
                    "a second QEMU, started with -incoming defer",
                    policy->source_qmp);
        return FALSE;
    }
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
                            "missing (required; or give %s)", flag_of(required[i].key));
            g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_MISSING,
                        "missing %s (or give --vm NAME with a policy file)",
                        flag_of(required[i].key));
            return FALSE;
        }
    }
    return check_addresses(policy, error);
}
