/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the small helpers of util.h (JSON members, sd_notify, rate-limited logs). */
#include "util.h"

#include <errno.h>
#include <gio/gio.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define RATELIMIT_INTERVAL_US (10 * G_USEC_PER_SEC)

void json_unref(gpointer obj)
{
    json_object_put(obj);
}

json_object *json_strv(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

gboolean json_flag(json_object *obj, const char *key, gboolean fallback, gboolean *out,
                   GError **error)
{
    json_object *v;
    *out = fallback;
    if (!obj || !json_object_object_get_ex(obj, key, &v))
        return TRUE;
    if (!json_object_is_type(v, json_type_boolean)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"%s\" must be true or false",
                    key);
        return FALSE;
    }
    *out = json_object_get_boolean(v);
    return TRUE;
}

/* One datagram to $NOTIFY_SOCKET ("@..." is abstract). */
void sd_notify_send(const char *state)
{
    const char *path = g_getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof sa.sun_path)
        return;
    gsize len = strlen(path);
    memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE", "sd_notify: %s",
                         g_strerror(errno));
    close(fd);
}

void ratelimit_log(RateLimit *rl, GLogLevelFlags level, const char *fmt, ...)
{
    gint64 now = g_get_monotonic_time();
    if (rl->last_us && now - rl->last_us < RATELIMIT_INTERVAL_US) {
        rl->suppressed++;
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (rl->suppressed)
        g_log_structured(G_LOG_DOMAIN, level, "MESSAGE", "%s (%u similar messages suppressed)",
                         message, rl->suppressed);
    else
        g_log_structured(G_LOG_DOMAIN, level, "MESSAGE", "%s", message);
    rl->last_us = now;
    rl->suppressed = 0;
}
