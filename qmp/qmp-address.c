/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp addresses: "unix:PATH", "tcp:HOST:PORT" (HOST may be "[v6]") or a bare PATH. */
#include "qmp-private.h"

#include <gio/gunixsocketaddress.h>
#include <string.h>
#include <sys/un.h>

static gboolean has_unknown_scheme(const char *address)
{
    const char *p = address;

    if (!g_ascii_isalpha(*p))
        return FALSE;
    while (g_ascii_isalnum(*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    return *p == ':';
}

static GSocketConnectable *parse_unix(const char *path, GError **error)
{
    struct sockaddr_un sun;

    if (*path == '\0') {
        g_set_error_literal(error, QMP_ERROR, QMP_ERROR_ADDRESS, "Empty unix socket path");
        return NULL;
    }
    if (strlen(path) >= sizeof sun.sun_path) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS, "Unix socket path too long: %s", path);
        return NULL;
    }
    return G_SOCKET_CONNECTABLE(g_unix_socket_address_new(path));
}

static GSocketConnectable *parse_tcp(const char *hostport, GError **error)
{
    g_autofree char *host = NULL;
    const char *port_str;
    guint64 port;

    if (hostport[0] == '[') {
        const char *end = strchr(hostport, ']');

        if (!end || end[1] != ':') {
            g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS,
                        "Bad tcp address \"%s\": expected [IPV6]:PORT", hostport);
            return NULL;
        }
        host = g_strndup(hostport + 1, (gsize)(end - hostport - 1));
        port_str = end + 2;
        if (!g_hostname_is_ip_address(host) || !strchr(host, ':')) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS,
                        "Bad tcp address \"%s\": not an IPv6 address", hostport);
            return NULL;
        }
    } else {
        const char *colon = strrchr(hostport, ':');

        if (!colon) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS,
                        "Bad tcp address \"%s\": expected HOST:PORT", hostport);
            return NULL;
        }
        host = g_strndup(hostport, (gsize)(colon - hostport));
        port_str = colon + 1;
        if (strchr(host, ':')) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS,
                        "Bad tcp address \"%s\": IPv6 hosts go in brackets", hostport);
            return NULL;
        }
    }
    if (*host == '\0') {
        g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS, "Bad tcp address \"%s\": empty host",
                    hostport);
        return NULL;
    }
    if (!g_ascii_string_to_unsigned(port_str, 10, 1, 65535, &port, NULL)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS,
                    "Bad tcp address \"%s\": port must be 1-65535", hostport);
        return NULL;
    }
    if (g_hostname_is_ip_address(host))
        return G_SOCKET_CONNECTABLE(g_inet_socket_address_new_from_string(host, (guint)port));
    return g_network_address_new(host, (guint16)port);
}

GSocketConnectable *qmp_address_parse_connectable(const char *address, GError **error)
{
    if (!address || *address == '\0') {
        g_set_error_literal(error, QMP_ERROR, QMP_ERROR_ADDRESS, "Empty address");
        return NULL;
    }
    if (g_str_has_prefix(address, "unix:"))
        return parse_unix(address + strlen("unix:"), error);
    if (g_str_has_prefix(address, "tcp:"))
        return parse_tcp(address + strlen("tcp:"), error);
    /* "vsock:..." or a typo like "tpc:..." must not silently become a file name. */
    if (has_unknown_scheme(address)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS,
                    "Unknown address type in \"%s\" (use unix:PATH or tcp:HOST:PORT)", address);
        return NULL;
    }
    return parse_unix(address, error);
}

gboolean qmp_address_parse(const char *address, GSocketAddress **out, GError **error)
{
    g_autoptr(GSocketConnectable) connectable = qmp_address_parse_connectable(address, error);
    g_autoptr(GSocketAddressEnumerator) enumerator = NULL;
    g_autoptr(GError) local_error = NULL;
    GSocketAddress *addr;

    if (!connectable)
        return FALSE;
    if (G_IS_SOCKET_ADDRESS(connectable)) {
        if (out)
            *out = G_SOCKET_ADDRESS(g_steal_pointer(&connectable));
        return TRUE;
    }
    /* A host name: resolve it (blocking) to honour the GSocketAddress contract. */
    enumerator = g_socket_connectable_enumerate(connectable);
    addr = g_socket_address_enumerator_next(enumerator, NULL, &local_error);
    if (!addr) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_ADDRESS, "Cannot resolve \"%s\": %s", address,
                    local_error ? local_error->message : "no address");
        return FALSE;
    }
    if (out)
        *out = addr;
    else
        g_object_unref(addr);
    return TRUE;
}
