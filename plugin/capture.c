/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Talking to QEMU: captures the device state over QMP (add-fd + xen-save-devices-state),
 * finds devices in the QOM tree and maps them to their state sections, builds reports. */
#define G_LOG_DOMAIN "sm-capture"

#include "capture.h"

#include "qmp-commands.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FACT_USB_CONTROLLER "usb.controller_dev_path"

/* A command with one or two string arguments (k2 may be NULL) whose reply must have type
 * `expect` (libqmp's typed layer checks it: another type is a QMP_ERROR_PROTOCOL error). */
static json_object *qmp_call(QmpClient *qmp, const char *cmd, json_type expect, const char *k1,
                             const char *v1, const char *k2, const char *v2, GError **error)
{
    g_autoptr(json_object) args = json_object_new_object();
    json_object_object_add(args, k1, json_object_new_string(v1));
    if (k2) {
        json_object_object_add(args, k2, json_object_new_string(v2));
    }
    return qmp_command_execute(qmp, cmd, args, NULL, 0, 0, expect, error);
}

/* A QEMU-side refusal (error reply), or a reply of a type we do not understand, is an answer;
 * anything else means the VM is gone. */
static gboolean is_command_error(const GError *e)
{
    return g_error_matches(e, QMP_ERROR, QMP_ERROR_COMMAND) ||
           g_error_matches(e, QMP_ERROR, QMP_ERROR_PROTOCOL);
}

static void to_unreachable(GError **error, GError *e)
{
    g_set_error(error, SM_PROBE_ERROR,
                is_command_error(e) ? SM_PROBE_ERROR_CAPTURE : SM_PROBE_ERROR_UNREACHABLE, "%s",
                e->message);
    g_error_free(e);
}

#define PROBE_FD_OPAQUE "safe-migrate probe"

/* QEMU 7.2 closes a removed fd only while the VM runs (monitor_fdset_cleanup checks
 * runstate_is_running), so a capture of a stopped VM leaves its fd in the set even after
 * remove-fd; 10.0 closes it at once. Removing our sets again once the VM runs closes them. */
void sm_release_probe_fds(QmpClient *qmp)
{
    g_autoptr(json_object) sets = qmp_client_execute(qmp, "query-fdsets", NULL, NULL);
    for (size_t i = 0;
         json_object_is_type(sets, json_type_array) && i < json_object_array_length(sets); i++) {
        json_object *set = json_object_array_get_idx(sets, i), *id, *fds;
        if (!json_object_object_get_ex(set, "fdset-id", &id) ||
            !json_object_is_type(id, json_type_int) ||
            !json_object_object_get_ex(set, "fds", &fds) ||
            !json_object_is_type(fds, json_type_array)) {
            continue;
        }
        gboolean ours = json_object_array_length(fds) > 0;
        for (size_t k = 0; k < json_object_array_length(fds); k++) {
            json_object *o = json_object_object_get(json_object_array_get_idx(fds, k), "opaque");
            ours = ours && json_object_is_type(o, json_type_string) &&
                   g_str_equal(json_object_get_string(o), PROBE_FD_OPAQUE);
        }
        if (ours) {
            g_autoptr(json_object) args = json_object_new_object();
            json_object_object_add(args, "fdset-id", json_object_get(id));
            json_object_put(qmp_client_execute(qmp, "remove-fd", args, NULL));
        }
    }
}

GBytes *sm_capture_device_state(QmpClient *qmp, GError **error)
{
    g_autoptr(GError) e = NULL;
    int mfd = memfd_create("sm-device-state", MFD_CLOEXEC);
    if (mfd < 0) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE, "memfd_create: %s",
                    g_strerror(errno));
        return NULL;
    }
    /* QEMU picks an fd from the set whose access mode matches its open flags (write-only);
     * reopening gives a write-only description of the same memory file. */
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", mfd);
    int wfd = open(proc, O_WRONLY | O_CLOEXEC);
    if (wfd < 0) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE, "reopen memfd: %s",
                    g_strerror(errno));
        close(mfd);
        return NULL;
    }
    g_autoptr(json_object) add_args = json_object_new_object();
    json_object_object_add(add_args, "opaque", json_object_new_string(PROBE_FD_OPAQUE));
    g_autoptr(json_object) added = qmp_client_execute_full(qmp, "add-fd", add_args, &wfd, 1, 0, &e);
    close(wfd);
    if (!added) {
        close(mfd);
        to_unreachable(error, g_steal_pointer(&e));
        return NULL;
    }
    gint64 fdset = json_object_get_int64(json_object_object_get(added, "fdset-id"));
    g_autofree char *fname = g_strdup_printf("/dev/fdset/%" G_GINT64_FORMAT, fdset);

    g_autoptr(json_object) save_args = json_object_new_object();
    json_object_object_add(save_args, "filename", json_object_new_string(fname));
    json_object_object_add(save_args, "live", json_object_new_boolean(FALSE));
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(json_object) saved = qmp_client_execute(qmp, "xen-save-devices-state", save_args, &e);
    gint64 t1 = g_get_monotonic_time();

    /* Always give the fd back, even when the save failed. */
    g_autoptr(GError) e2 = NULL;
    g_autoptr(json_object) rm_args = json_object_new_object();
    json_object_object_add(rm_args, "fdset-id", json_object_new_int64(fdset));
    g_autoptr(json_object) removed = qmp_client_execute(qmp, "remove-fd", rm_args, &e2);
    if (!saved) {
        close(mfd);
        to_unreachable(error, g_steal_pointer(&e));
        return NULL;
    }
    if (!removed) {
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE",
                         "remove-fd %" G_GINT64_FORMAT ": %s", fdset, e2->message);
    }
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, "MESSAGE",
                     "xen-save-devices-state took %" G_GINT64_FORMAT " us", t1 - t0);

    off_t size = lseek(mfd, 0, SEEK_END);
    if (size < 0 || size > 1024 * 1024 * 1024) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE, "bad state size");
        close(mfd);
        return NULL;
    }
    guint8 *buf = g_malloc((gsize)size + 1);
    gsize got = 0;
    while (got < (gsize)size) {
        ssize_t n = pread(mfd, buf + got, (gsize)size - got, (off_t)got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE, "read state: %s",
                        n < 0 ? g_strerror(errno) : "short read");
            g_free(buf);
            close(mfd);
            return NULL;
        }
        got += (gsize)n;
    }
    close(mfd);
    return g_bytes_new_take(buf, got);
}

/* ---- Discovery -------------------------------------------------------------------------- */

static char *qom_get_string(QmpClient *qmp, const char *path, const char *prop, GError **error)
{
    g_autoptr(json_object) v =
        qmp_call(qmp, "qom-get", json_type_string, "path", path, "property", prop, error);
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
        qmp_call(qmp, "qom-get", json_type_int, "path", path, "property", prop, &e);
    *found = FALSE;
    if (!v) {
        if (is_command_error(e)) {
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
        if (!is_command_error(e)) {
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
    g_autoptr(json_object) out = qmp_call(qmp, "human-monitor-command", json_type_string,
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
    if (!ctrl_type && !is_command_error(e)) {
        g_propagate_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    g_clear_error(&e);
    sm_device_set_fact(dev, SM_FACT_USB_CONTROLLER_TYPE, ctrl_type);
    g_autofree char *port = qom_get_string(qmp, dev->qom_path, "port", &e);
    if (!port && !is_command_error(e)) {
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
        if (!is_command_error(e)) {
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
        qmp_call(qmp, "qom-list", json_type_array, "path", container, NULL, NULL, &e);
    if (!list) {
        if (g_strcmp0(qmp_error_get_class(e), "DeviceNotFound") == 0) {
            return TRUE;
        }
        g_prefix_error(&e, "qom-list %s: ", container);
        to_unreachable(error, g_steal_pointer(&e));
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
            to_unreachable(error, g_steal_pointer(&e));
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
static void resolve_by_elimination(GPtrArray *devices, const SmStream *stream,
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

/* ---- Reports ---------------------------------------------------------------------------- */

SmReport *sm_report_from_stream(GBytes *state, GPtrArray *devices, const SmRegistry *registry,
                                const char *qemu_version)
{
    SmReport *rep = g_new0(SmReport, 1);
    rep->qemu_version = g_strdup(qemu_version);
    rep->devices = g_ptr_array_new_with_free_func((GDestroyNotify)sm_verdict_free);
    rep->stream_bytes = g_bytes_get_size(state);
    g_autoptr(SmStream) stream = sm_stream_parse(state);
    rep->stream_error = g_strdup(sm_stream_get_error(stream));
    resolve_by_elimination(devices, stream, registry);
    for (guint i = 0; i < devices->len; i++) {
        const SmDevice *d = devices->pdata[i];
        const SmProbe *probe = sm_registry_find_for_type(registry, d->type);
        SmDeviceVerdict *v = probe ? probe->analyse(probe, stream, d) : NULL;
        if (!v) {
            v = sm_verdict_set_unknown(sm_verdict_new(d, probe ? probe->name : NULL),
                                       "no probe judged this device");
        }
        if (v->state == SM_STATE_UNKNOWN) {
            v->safe = FALSE; /* whatever a plugin said */
        }
        g_ptr_array_add(rep->devices, v);
    }
    return rep;
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
            if (!is_command_error(e)) {
                to_unreachable(error, g_steal_pointer(&e));
                return NULL;
            }
            g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "MESSAGE", "inspect %s: %s",
                             d->qom_path, e->message);
        }
    }
    return g_steal_pointer(&devices);
}

/* ---- A probe the guest does not see ---------------------------------------------------- */

/* A member string of a command's reply ("status" of query-status / query-migrate); "" when
 * the reply has none (query-migrate before any migration). */
static char *reply_member(QmpClient *qmp, const char *command, const char *member, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autoptr(json_object) r =
        qmp_command_execute(qmp, command, NULL, NULL, 0, 0, json_type_object, &e);
    json_object *v;
    if (!r) {
        to_unreachable(error, g_steal_pointer(&e));
        return NULL;
    }
    if (!json_object_object_get_ex(r, member, &v)) {
        return g_strdup("");
    }
    if (!json_object_is_type(v, json_type_string)) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE, "%s: %s is not a string",
                    command, member);
        return NULL;
    }
    return g_strdup(json_object_get_string(v));
}

gboolean sm_probe_switchover_free(QmpClient *qmp, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autofree char *status = NULL;
    g_autoptr(json_object) info = qmp_query_migrate(qmp, &status, &e);
    if (!info) {
        to_unreachable(error, g_steal_pointer(&e));
        return FALSE;
    }
    if (g_str_equal(status, "pre-switchover") || g_str_equal(status, "device")) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_MIGRATING,
                    "a migration is at %s: not probing under it (its gate does)", status);
        return FALSE;
    }
    return TRUE;
}

static gboolean migration_in_progress(const char *status)
{
    static const char *const idle[] = {"", "none", "completed", "failed", "cancelled", NULL};
    return !g_strv_contains(idle, status);
}

static void count_event(QmpClient *client, const char *name, json_object *data, gint64 ts,
                        gpointer user_data)
{
    (void)client, (void)name, (void)data, (void)ts;
    (*(guint *)user_data)++;
}

static gboolean simple_command(QmpClient *qmp, const char *command, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autoptr(json_object) r = qmp_client_execute(qmp, command, NULL, &e);
    if (!r) {
        to_unreachable(error, g_steal_pointer(&e));
        return FALSE;
    }
    return TRUE;
}

/* xen-save-devices-state on a running VM stops it as RUN_STATE_SAVE_VM, and device models act
 * on that state change under a guest that then resumes: EHCI advances its async schedule and
 * cancels the packets of queues it has not seen (hw/usb/hcd-ehci.c, usb_ehci_vm_state_change).
 * An ordinary stop (RUN_STATE_PAUSED) triggers nothing of the kind, and on a VM that is not
 * running the capture changes no run state (vm_stop acts on a running VM only). So a running
 * VM is stopped, captured and resumed, the way a management tool's suspend/resume does it;
 * the guest sees a pause of about a millisecond. It is resumed only if our stop is what
 * stopped it (its STOP event), on every outcome of the capture. A running VM under migration
 * is not touched: a stop then would change how QEMU finishes that migration. */
static GBytes *capture_quiesced(QmpClient *qmp, GError **error)
{
    g_autofree char *run = reply_member(qmp, "query-status", "status", error);
    if (!run) {
        return NULL;
    }
    if (!g_str_equal(run, "running")) {
        return sm_capture_device_state(qmp, error);
    }
    g_autofree char *mig = reply_member(qmp, "query-migrate", "status", error);
    if (!mig) {
        return NULL;
    }
    if (migration_in_progress(mig)) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE,
                    "a migration is in progress (%s): the running VM is not stopped to probe it",
                    mig);
        return NULL;
    }
    guint stops = 0;
    guint sub = qmp_client_subscribe(qmp, "STOP", count_event, &stops, NULL);
    gboolean ok = simple_command(qmp, "stop", error);
    qmp_client_unsubscribe(qmp, sub);
    if (!ok) {
        return NULL;
    }
    g_autoptr(GError) e = NULL;
    GBytes *state = sm_capture_device_state(qmp, &e);
    if (stops > 0 && !simple_command(qmp, "cont", error)) {
        g_prefix_error(error, "the VM stopped for the probe could not be resumed: ");
        g_clear_pointer(&state, g_bytes_unref);
        return NULL;
    }
    sm_release_probe_fds(qmp);
    if (!state) {
        g_propagate_error(error, g_steal_pointer(&e));
    }
    return state;
}

SmReport *sm_probe_vm(QmpClient *qmp, const SmRegistry *registry, GError **error)
{
    /* Discovery first, while the guest runs: the stop covers the capture alone. */
    g_autoptr(GPtrArray) devices = sm_inspect_devices(qmp, registry, error);
    if (!devices) {
        return NULL;
    }
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(GBytes) state = capture_quiesced(qmp, error);
    gint64 t1 = g_get_monotonic_time();
    if (!state) {
        return NULL;
    }
    SmReport *rep = sm_report_from_stream(state, devices, registry, qmp_client_get_version(qmp));
    rep->capture_us = t1 - t0;
    return rep;
}

void sm_report_free(SmReport *report)
{
    if (!report) {
        return;
    }
    g_free(report->qemu_version);
    g_ptr_array_unref(report->devices);
    g_free(report->stream_error);
    g_free(report);
}

const SmDeviceVerdict *sm_report_first_unsafe(const SmReport *report)
{
    for (guint i = 0; i < report->devices->len; i++) {
        const SmDeviceVerdict *v = g_ptr_array_index(report->devices, i);
        if (!v->safe)
            return v;
    }
    return NULL;
}

json_object *sm_report_to_json(const SmReport *report)
{
    json_object *o = json_object_new_object();
    json_object_object_add(
        o, "qemu", report->qemu_version ? json_object_new_string(report->qemu_version) : NULL);
    json_object *devs = json_object_new_array();
    for (guint i = 0; i < report->devices->len; i++) {
        json_object_array_add(devs, sm_verdict_to_json(report->devices->pdata[i]));
    }
    json_object_object_add(o, "devices", devs);
    json_object_object_add(o, "stream_bytes", json_object_new_int64((gint64)report->stream_bytes));
    json_object_object_add(o, "stream_error",
                           report->stream_error ? json_object_new_string(report->stream_error)
                                                : NULL);
    json_object_object_add(o, "capture_us", json_object_new_int64(report->capture_us));
    return o;
}

char *sm_report_to_table(const SmReport *report)
{
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "QEMU %s, device state %" G_GSIZE_FORMAT " bytes",
                           report->qemu_version ? report->qemu_version : "?", report->stream_bytes);
    if (report->capture_us) {
        g_string_append_printf(s, ", captured in %.1f ms", report->capture_us / 1000.0);
    }
    g_string_append_c(s, '\n');
    if (report->stream_error) {
        g_string_append_printf(s, "stream: %s\n", report->stream_error);
    }
    if (report->devices->len == 0) {
        g_string_append(s, "no probed devices\n");
        return g_string_free(s, FALSE);
    }
    g_string_append_printf(s, "%-28s %-8s %-5s %-8s %-38s %-9s %s\n", "DEVICE", "STATE", "SAFE",
                           "MODE", "PENDING", "FIX", "WHY");
    for (guint i = 0; i < report->devices->len; i++) {
        const SmDeviceVerdict *v = report->devices->pdata[i];
        g_autofree char *pending =
            sm_verdict_get_n_pending(v) ? sm_verdict_pending_summary(v, 0) : NULL;
        g_string_append_printf(
            s, "%-28s %-8s %-5s %-8s %-38s %-9s %s\n", v->id ? v->id : v->qom_path,
            sm_state_to_string(v->state), v->safe ? "yes" : "no", v->mode ? v->mode : "-",
            pending ? pending : "-", sm_fix_to_string(v->fix), v->reason ? v->reason : "");
    }
    return g_string_free(s, FALSE);
}
