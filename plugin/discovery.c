/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Discovery: the devices a probe judges, found in the QOM tree, each with the name QEMU gives
 * its state sections (its dev_path) and, for USB devices, the port; then the probes' inspect()
 * gathers their facts. Read-only queries, made while the guest runs. */
#define G_LOG_DOMAIN "sm-discovery"

#include "probe-private.h"

#include "qmp-commands.h"

#include <string.h>

static char *qom_get_string(QmpClient *qmp, const char *path, const char *prop, GError **error)
{
    g_autoptr(json_object) v =
        sm_qmp_call(qmp, "qom-get", json_type_string, "path", path, "property", prop, error);
    if (!v) {
        return NULL;
    }
    return g_strdup(json_object_get_string(v));
}

/* A command error (no such property) is "no answer" (FALSE, no error); a transport error
 * is an error. */
static gboolean qom_get_int(QmpClient *qmp, const char *path, const char *prop, gint64 *out,
                            gboolean *found, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autoptr(json_object) v =
        sm_qmp_call(qmp, "qom-get", json_type_int, "path", path, "property", prop, &e);
    *found = FALSE;
    if (!v) {
        if (sm_is_command_error(e)) {
            return TRUE;
        }
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    *out = json_object_get_int64(v);
    *found = TRUE;
    return TRUE;
}

/* pcibus_get_dev_path(): "0000:00" + ":SS.F" for every PCI device from the root bus down.
 * Host bridges have no "addr" property, which ends the walk. Returns NULL (no error) when
 * the device is not a PCI device on an i440fx/q35-style root bus. */
static char *pci_dev_path(QmpClient *qmp, const char *path, int depth, GError **error)
{
    gint64 devfn;
    gboolean found;
    if (depth > 8 || !qom_get_int(qmp, path, "addr", &devfn, &found, error) || !found ||
        devfn < 0 || devfn > 255) {
        return NULL;
    }
    g_autoptr(GError) e = NULL;
    g_autofree char *bus = qom_get_string(qmp, path, "parent_bus", &e);
    if (!bus) {
        if (!sm_is_command_error(e)) {
            g_propagate_error(error, g_steal_pointer(&e));
        }
        return NULL;
    }
    g_autofree char *parent = g_path_get_dirname(bus);
    gint64 pdevfn;
    if (!qom_get_int(qmp, parent, "addr", &pdevfn, &found, error)) {
        return NULL;
    }
    g_autofree char *prefix =
        found ? pci_dev_path(qmp, parent, depth + 1, error) : g_strdup("0000:00");
    if (!prefix) {
        return NULL;
    }
    return g_strdup_printf("%s:%02x.%x", prefix, (int)(devfn >> 3), (int)(devfn & 7));
}

/* "info usb" lines: "  Device 0.2, Port 1, Speed 12 Mb/s, Product QEMU USB MSD, ID: usbcd". */
static GHashTable *usb_ports_by_id(QmpClient *qmp)
{
    GHashTable *map = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GError) e = NULL;
    g_autoptr(json_object) out = sm_qmp_call(qmp, "human-monitor-command", json_type_string,
                                             "command-line", "info usb", NULL, NULL, &e);
    if (!out) {
        return map;
    }
    g_auto(GStrv) lines = g_strsplit(json_object_get_string(out), "\n", -1);
    for (char **l = lines; *l; l++) {
        const char *port = strstr(*l, ", Port ");
        const char *id = strstr(*l, ", ID: ");
        if (!port || !id) {
            continue;
        }
        port += strlen(", Port ");
        const char *pend = strchr(port, ',');
        if (!pend) {
            continue;
        }
        g_autofree char *idv = g_strstrip(g_strdup(id + strlen(", ID: ")));
        g_hash_table_replace(map, g_steal_pointer(&idv), g_strndup(port, pend - port));
    }
    return map;
}

/* usb_get_dev_path() is "<controller dev path>/<port path>" (a hub's ports are "2.3"; every
 * USB device sits on its controller's bus, hubs included). The port comes from the "port"
 * property, else from "info usb" by id; devices with neither are resolved by elimination once
 * the stream is known. A device whose section name cannot be derived at all is marked
 * unsupported (the gate refuses it up front). */
static gboolean resolve_usb_path(QmpClient *qmp, SmDevice *dev, const char *bus, GHashTable **ports,
                                 GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autofree char *ctrl = g_path_get_dirname(bus);
    g_autofree char *ctrl_path = pci_dev_path(qmp, ctrl, 0, &e);
    if (!ctrl_path) {
        if (e) {
            g_propagate_error(error, g_steal_pointer(&e));
            return FALSE;
        }
        sm_device_set_fact(dev, SM_FACT_UNSUPPORTED,
                           "its USB controller is not a PCI device on the root bus, so its state "
                           "section's name is not known");
        return TRUE;
    }
    sm_device_set_fact(dev, FACT_USB_CONTROLLER, ctrl_path);
    /* Its QOM type ("usb-ehci", "qemu-xhci"...): probes judge what the controller keeps. */
    g_autofree char *ctrl_type = qom_get_string(qmp, ctrl, "type", &e);
    if (!ctrl_type && !sm_is_command_error(e)) {
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    g_clear_error(&e);
    sm_device_set_fact(dev, SM_FACT_USB_CONTROLLER_TYPE, ctrl_type);
    g_autofree char *port = qom_get_string(qmp, dev->qom_path, "port", &e);
    if (!port && !sm_is_command_error(e)) {
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    if ((!port || !*port) && dev->id) {
        if (!*ports) {
            *ports = usb_ports_by_id(qmp);
        }
        g_free(port);
        port = g_strdup(g_hash_table_lookup(*ports, dev->id));
    }
    if (port && *port) {
        dev->usb_port = g_strdup(port);
        dev->dev_path = g_strdup_printf("%s/%s", ctrl_path, port);
    }
    return TRUE;
}

/* Fills device->dev_path, the name QEMU gives the device's state sections, from the bus it
 * sits on: a USB device's is its controller's path and its port (and it gets a usb_port), a
 * PCI device's its PCI path (qdev_get_dev_path); on other buses it stays NULL and the probe
 * decides. A bus that cannot be read leaves the device unsupported (never judged). */
static gboolean resolve_dev_path(QmpClient *qmp, SmDevice *dev, GHashTable **ports, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autofree char *bus = qom_get_string(qmp, dev->qom_path, "parent_bus", &e);
    g_autofree char *bus_type = bus ? qom_get_string(qmp, bus, "type", &e) : NULL;
    if (!bus_type) {
        if (!sm_is_command_error(e)) {
            g_propagate_error(error, g_steal_pointer(&e));
            return FALSE;
        }
        sm_device_set_fact(dev, SM_FACT_UNSUPPORTED,
                           "its bus cannot be read, so neither can its state section's name");
        return TRUE;
    }
    if (g_str_equal(bus_type, "usb-bus")) {
        return resolve_usb_path(qmp, dev, bus, ports, error);
    }
    dev->dev_path = pci_dev_path(qmp, dev->qom_path, 0, &e);
    if (e) {
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    return TRUE;
}

static const char *const containers[] = {"/machine/peripheral", "/machine/peripheral-anon",
                                         "/machine/unattached"};

/* One container's devices of types a probe judges. A container QEMU does not have (no
 * anonymous device was ever added) is empty; any other refusal or an answer of the wrong
 * shape fails discovery: a device there would get no verdict and no gate (fail closed). */
static gboolean discover_in(QmpClient *qmp, const SmRegistry *registry, const char *container,
                            GPtrArray *devices, GHashTable **ports, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autoptr(json_object) list =
        sm_qmp_call(qmp, "qom-list", json_type_array, "path", container, NULL, NULL, &e);
    if (!list) {
        if (g_strcmp0(qmp_error_get_class(e), "DeviceNotFound") == 0) {
            return TRUE;
        }
        g_prefix_error(&e, "qom-list %s: ", container);
        sm_to_probe_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *p = json_object_array_get_idx(list, i), *n, *t;
        if (!json_object_is_type(p, json_type_object) ||
            !json_object_object_get_ex(p, "name", &n) ||
            !json_object_object_get_ex(p, "type", &t) ||
            !json_object_is_type(n, json_type_string) ||
            !json_object_is_type(t, json_type_string)) {
            g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE,
                        "qom-list %s: an entry is not a name and a type", container);
            return FALSE;
        }
        const char *name = json_object_get_string(n), *ty = json_object_get_string(t);
        if (!g_str_has_prefix(ty, "child<") || !g_str_has_suffix(ty, ">") || strlen(ty) < 8) {
            continue;
        }
        g_autofree char *type = g_strndup(ty + 6, strlen(ty) - 7);
        if (!sm_registry_find_for_type(registry, type)) {
            continue;
        }
        g_autofree char *path = g_strdup_printf("%s/%s", container, name);
        gboolean named = g_str_equal(container, "/machine/peripheral");
        SmDevice *dev = sm_device_new(path, named ? name : NULL, type, NULL);
        g_ptr_array_add(devices, dev);
        if (!resolve_dev_path(qmp, dev, ports, &e)) {
            sm_to_probe_error(error, g_steal_pointer(&e));
            return FALSE;
        }
    }
    return TRUE;
}

GPtrArray *sm_discover_devices(QmpClient *qmp, const SmRegistry *registry, GError **error)
{
    g_autoptr(GPtrArray) devices = g_ptr_array_new_with_free_func((GDestroyNotify)sm_device_free);
    g_autoptr(GHashTable) ports = NULL;
    for (guint c = 0; c < G_N_ELEMENTS(containers); c++) {
        if (!discover_in(qmp, registry, containers[c], devices, &ports, error)) {
            return NULL;
        }
    }
    return g_steal_pointer(&devices);
}

/* Devices whose USB port could not be read: when exactly one such device sits on a
 * controller and exactly one section of its probe's main vmsd on that controller is not
 * claimed by a device with a known port, that section is its. Otherwise it stays unmapped
 * (and is reported unknown). */
void sm_resolve_by_elimination(GPtrArray *devices, const SmStream *stream,
                               const SmRegistry *registry)
{
    for (guint i = 0; i < devices->len; i++) {
        SmDevice *d = devices->pdata[i];
        const char *ctrl = sm_device_get_fact(d, FACT_USB_CONTROLLER);
        const SmProbe *probe = sm_registry_find_for_type(registry, d->type);
        if (d->dev_path || !ctrl || !probe || !probe->section_names || !probe->section_names[0]) {
            continue;
        }
        guint unresolved = 0;
        for (guint j = 0; j < devices->len; j++) {
            SmDevice *o = devices->pdata[j];
            if (!o->dev_path && g_strcmp0(sm_device_get_fact(o, FACT_USB_CONTROLLER), ctrl) == 0) {
                unresolved++;
            }
        }
        if (unresolved != 1) {
            continue;
        }
        g_autofree char *prefix = g_strdup_printf("%s/", ctrl);
        g_autofree char *suffix = g_strdup_printf("/%s", probe->section_names[0]);
        char *found = NULL;
        guint candidates = 0;
        for (guint s = 0; s < sm_stream_get_n_sections(stream); s++) {
            const char *id = sm_stream_get_section(stream, s)->idstr;
            if (!id || !g_str_has_prefix(id, prefix) || !g_str_has_suffix(id, suffix)) {
                continue;
            }
            gsize plen = strlen(id) - strlen(suffix);
            if (plen <= strlen(prefix) || memchr(id + strlen(prefix), '/', plen - strlen(prefix))) {
                continue;
            }
            g_autofree char *path = g_strndup(id, plen);
            gboolean claimed = FALSE;
            for (guint j = 0; j < devices->len; j++) {
                SmDevice *o = devices->pdata[j];
                claimed = claimed || g_strcmp0(o->dev_path, path) == 0;
            }
            if (!claimed) {
                candidates++;
                g_free(found);
                found = g_steal_pointer(&path);
            }
        }
        if (candidates == 1) {
            d->usb_port = g_strdup(found + strlen(prefix));
            d->dev_path = found;
            sm_device_set_fact(d, "usb.port_by_elimination", "true");
        } else {
            g_free(found);
        }
    }
}

GPtrArray *sm_inspect_devices(QmpClient *qmp, const SmRegistry *registry, GError **error)
{
    g_autoptr(GPtrArray) devices = sm_discover_devices(qmp, registry, error);
    if (!devices) {
        return NULL;
    }
    for (guint i = 0; i < devices->len; i++) {
        SmDevice *d = devices->pdata[i];
        const SmProbe *probe = sm_registry_find_for_type(registry, d->type);
        g_autoptr(GError) e = NULL;
        if (probe && probe->inspect && !probe->inspect(probe, qmp, d, &e)) {
            /* QEMU refusing one query (a device unplugged meanwhile) leaves that device's
             * facts unset, hence its verdict unknown; a lost connection fails it all. */
            if (!sm_is_command_error(e)) {
                sm_to_probe_error(error, g_steal_pointer(&e));
                return NULL;
            }
            g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE", "inspect %s: %s",
                             d->qom_path, e->message);
        }
    }
    return g_steal_pointer(&devices);
}

gboolean sm_check_layouts(GPtrArray *devices, GError **error)
{
    for (guint i = 0; i < devices->len; i++) {
        const SmDevice *d = g_ptr_array_index(devices, i);
        const char *why = sm_device_get_fact(d, SM_FACT_UNSUPPORTED);
        if (!why && !d->dev_path) {
            why = "its device path (and so its state section) cannot be determined; "
                  "QEMU names sections by it (full-path=off on the USB bus?)";
        }
        if (why) {
            g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_LAYOUT,
                        "%s (%s): unknown: layout not understood: %s; the gate cannot judge it, "
                        "so it will not migrate this VM: detach the device (or change its "
                        "layout) before migrating",
                        d->id ? d->id : d->qom_path, d->type, why);
            return FALSE;
        }
    }
    return TRUE;
}
