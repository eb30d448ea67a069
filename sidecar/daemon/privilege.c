/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the privilege model, in one place. Who may use the control socket (the
 * owner: root or the daemon's user; members of the socket's group, checked with
 * SO_PEERGROUPS), and what a request may change of a VM's policy:
 *  - the owner may override any key but never pass an `exec:` URI (those come only from a
 *    policy file: a request is data an orchestrator relays, and an exec: URI makes QEMU run
 *    a shell command);
 *  - a member may only make a migration more conservative: durations and attempts no longer
 *    than the policy's, a fallback no looser. Never an address, URI, command or path, and
 *    every refused key gets the same answer, so that refusals reveal nothing. */
#include "privilege.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/socket.h>

/* Keys a member may set, each bounded by the VM's policy (checked in within_policy). */
static const char *const member_keys[] = {
    "max-hold",    "max-attempts",         "backoff",
    "max-backoff", "probe-timeout",        "downtime-limit",
    "timeout",     "dest-prepare-timeout", "on-unquiesceable",
    NULL,
};

/* QEMU's own downtime-limit default, the bound when the policy leaves QEMU's. */
#define QEMU_DEFAULT_DOWNTIME_MS 300

static int fallback_rank(SmFallback f)
{
    return f == SM_FALLBACK_ABORT ? 0 : f == SM_FALLBACK_USE_FIX_IF_BENIGN ? 1 : 2;
}

static gboolean denied(GError **error)
{
    g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                        "members of the socket's group may only shorten or tighten a "
                        "migration (max-hold, max-attempts, backoff, max-backoff, probe-timeout, "
                        "downtime-limit, timeout, dest-prepare-timeout, on-unquiesceable); "
                        "anything else needs root or the daemon's user, or the VM's policy file");
    return FALSE;
}

static gboolean too_high(GError **error, const char *key, const char *bound)
{
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                "option \"%s\": a member of the socket's group may not go beyond the VM's "
                "policy (%s)",
                key, bound);
    return FALSE;
}

/* A member's result `p` against the VM's policy `base`: nothing looser or longer. */
static gboolean within_policy(const SmPolicy *base, const SmPolicy *p, GError **error)
{
    gint64 downtime =
        base->downtime_limit_ms >= 0 ? base->downtime_limit_ms : QEMU_DEFAULT_DOWNTIME_MS;
    if (p->max_hold_ms > base->max_hold_ms)
        return too_high(error, "max-hold", "a shorter hold only");
    if (p->max_attempts > base->max_attempts)
        return too_high(error, "max-attempts", "fewer attempts only");
    if (p->backoff_ms > base->backoff_ms)
        return too_high(error, "backoff", "a shorter backoff only");
    if (p->max_backoff_ms > base->max_backoff_ms)
        return too_high(error, "max-backoff", "a shorter backoff only");
    if (p->probe_timeout_ms > base->probe_timeout_ms)
        return too_high(error, "probe-timeout", "a shorter timeout only");
    if (p->dest_prepare_timeout_ms > base->dest_prepare_timeout_ms)
        return too_high(error, "dest-prepare-timeout", "a shorter timeout only");
    if (p->downtime_limit_ms != base->downtime_limit_ms &&
        (p->downtime_limit_ms < 0 || p->downtime_limit_ms > downtime))
        return too_high(error, "downtime-limit", "a lower limit only");
    if (base->migration_timeout_ms > 0 &&
        (p->migration_timeout_ms == 0 || p->migration_timeout_ms > base->migration_timeout_ms))
        return too_high(error, "timeout", "a shorter timeout only");
    if (fallback_rank(p->on_unquiesceable) > fallback_rank(base->on_unquiesceable))
        return too_high(error, "on-unquiesceable", "a stricter fallback only");
    return TRUE;
}

static gboolean is_exec_uri(const char *uri)
{
    while (g_ascii_isspace(*uri))
        uri++;
    return g_ascii_strncasecmp(uri, "exec:", 5) == 0;
}

/* The option's value as policy text; strict JSON types (no arrays, objects or null). */
static char *option_text(const char *key, json_object *value, GError **error)
{
    if (json_object_is_type(value, json_type_string))
        return g_strdup(json_object_get_string(value));
    if (json_object_is_type(value, json_type_int))
        return g_strdup_printf("%" G_GINT64_FORMAT, json_object_get_int64(value));
    if (json_object_is_type(value, json_type_boolean))
        return g_strdup(json_object_get_boolean(value) ? "true" : "false");
    g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE,
                "option \"%s\": a string, number or boolean is expected", key);
    return NULL;
}

gboolean privilege_apply_options(gboolean owner, const SmPolicy *base, SmPolicy *p,
                                 json_object *options, GError **error)
{
    if (!options)
        return TRUE;
    if (!json_object_is_type(options, json_type_object)) {
        g_set_error(error, SM_POLICY_ERROR, SM_POLICY_ERROR_VALUE, "\"options\" is not an object");
        return FALSE;
    }
    json_object_object_foreach(options, key, value)
    {
        /* The CLI's flag names, and the policy files' key names. */
        const char *k = g_str_equal(key, "source") ? "source-qmp"
                        : g_str_equal(key, "dest") ? "dest-qmp"
                                                   : key;
        /* Refused before anything looks at the value: no oracle about paths or keys. */
        if (!owner && !g_strv_contains(member_keys, k))
            return denied(error);
        g_autofree char *text = option_text(key, value, error);
        if (!text)
            return FALSE;
        if (g_str_equal(k, "uri") && is_exec_uri(text)) {
            g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                                "exec: migration URIs come only from the VM's policy file");
            return FALSE;
        }
        /* --downtime-limit takes plain milliseconds, as in the CLI. */
        if (g_str_equal(k, "downtime-limit") && *text && text[strspn(text, "0123456789")] == 0) {
            char *ms = g_strconcat(text, "ms", NULL);
            g_free(text);
            text = ms;
        }
        if (!sm_policy_apply(p, k, text, error))
            return FALSE;
    }
    return owner || within_policy(base, p, error);
}

/* ---- Peers ----------------------------------------------------------------------------- */

/* Supplementary groups of the peer as the kernel recorded them at connect() time
 * (SO_PEERGROUPS, Linux 4.13+). Reading /proc/PID/status instead is racy: the process may
 * have exited (or the pid been reused) since, and under fd pressure it fails outright. On a
 * kernel without SO_PEERGROUPS we still fall back to it, and say so in the log once. */
static gboolean peer_groups_contain(int fd, gid_t gid, gboolean *supported)
{
    gid_t stack[64];
    gid_t *groups = stack;
    socklen_t len = sizeof stack;
    g_autofree gid_t *heap = NULL;

    *supported = TRUE;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) {
        if (errno != ERANGE) {
            *supported = errno != ENOPROTOOPT;
            return FALSE;
        }
        groups = heap = g_malloc(len);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0)
            return FALSE;
    }
    for (gsize i = 0; i < len / sizeof(gid_t); i++)
        if (groups[i] == gid)
            return TRUE;
    return FALSE;
}

static gboolean proc_in_group(pid_t pid, gid_t gid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return FALSE;
    const char *groups = strstr(text, "\nGroups:");
    if (!groups)
        return FALSE;
    g_autofree char *line = g_strndup(groups + 8, strcspn(groups + 8, "\n"));
    g_auto(GStrv) parts = g_strsplit_set(line, " \t", -1);
    for (guint i = 0; parts[i]; i++)
        if (*parts[i] && g_ascii_strtoull(parts[i], NULL, 10) == gid)
            return TRUE;
    return FALSE;
}

gboolean privilege_peer_in_group(int fd, pid_t pid, gid_t primary, gid_t gid)
{
    static gsize warned;
    gboolean supported;

    if (primary == gid)
        return TRUE;
    if (peer_groups_contain(fd, gid, &supported))
        return TRUE;
    if (supported)
        return FALSE;
    if (g_once_init_enter(&warned)) {
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE",
                         "this kernel has no SO_PEERGROUPS: group membership is read from "
                         "/proc/PID/status (a member whose process already exited is refused)");
        g_once_init_leave(&warned, 1);
    }
    return proc_in_group(pid, gid);
}
