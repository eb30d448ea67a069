/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Capturing the device state over QMP (add-fd + xen-save-devices-state) without the guest
 * noticing, and the whole probe of a VM: discovery, then the capture, then the report. */
#define G_LOG_DOMAIN "sm-capture"

#include "probe-private.h"

#include "qmp-commands.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

json_object *sm_qmp_call(QmpClient *qmp, const char *cmd, json_type expect, const char *k1,
                         const char *v1, const char *k2, const char *v2, GError **error)
{
    g_autoptr(json_object) args = json_object_new_object();
    json_object_object_add(args, k1, json_object_new_string(v1));
    if (k2) {
        json_object_object_add(args, k2, json_object_new_string(v2));
    }
    return qmp_command_execute(qmp, cmd, args, NULL, 0, 0, expect, error);
}

gboolean sm_is_command_error(const GError *e)
{
    return g_error_matches(e, QMP_ERROR, QMP_ERROR_COMMAND) ||
           g_error_matches(e, QMP_ERROR, QMP_ERROR_PROTOCOL);
}

void sm_to_probe_error(GError **error, GError *e)
{
    g_set_error(error, SM_PROBE_ERROR,
                sm_is_command_error(e) ? SM_PROBE_ERROR_CAPTURE : SM_PROBE_ERROR_UNREACHABLE, "%s",
                e->message);
    g_error_free(e);
}

#define PROBE_FD_OPAQUE "safe-migrate probe"

/* A set is ours when every fd in it carries our tag (an empty set belongs to nobody). */
static gboolean fdset_is_ours(const QmpFdset *set)
{
    gboolean ours = set->opaque->len > 0;
    for (guint k = 0; k < set->opaque->len; k++) {
        const char *o = set->opaque->pdata[k];
        ours = ours && o && g_str_equal(o, PROBE_FD_OPAQUE);
    }
    return ours;
}

/* QEMU 7.2 closes a removed fd only while the VM runs (monitor_fdset_cleanup checks
 * runstate_is_running), so a capture of a stopped VM leaves its fd in the set even after
 * remove-fd; 10.0 closes it at once. Removing our sets again once the VM runs closes them. */
void sm_release_probe_fds(QmpClient *qmp)
{
    g_autoptr(GPtrArray) sets = qmp_query_fdsets(qmp, NULL);
    for (guint i = 0; sets && i < sets->len; i++) {
        const QmpFdset *set = sets->pdata[i];
        if (fdset_is_ours(set)) {
            qmp_remove_fd(qmp, set->fdset_id, NULL);
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
    gint64 fdset = -1;
    gboolean added = qmp_add_fd(qmp, wfd, -1, PROBE_FD_OPAQUE, &fdset, NULL, &e);
    close(wfd);
    if (!added) {
        close(mfd);
        sm_to_probe_error(error, g_steal_pointer(&e));
        return NULL;
    }
    g_autofree char *fname = g_strdup_printf("/dev/fdset/%" G_GINT64_FORMAT, fdset);
    gint64 t0 = g_get_monotonic_time();
    gboolean saved = qmp_xen_save_devices_state(qmp, fname, FALSE, &e);
    gint64 t1 = g_get_monotonic_time();

    /* Always give the fd back, even when the save failed. */
    g_autoptr(GError) e2 = NULL;
    gboolean removed = qmp_remove_fd(qmp, fdset, &e2);
    if (!saved) {
        close(mfd);
        sm_to_probe_error(error, g_steal_pointer(&e));
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
        sm_to_probe_error(error, g_steal_pointer(&e));
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

static gboolean migration_in_progress(const char *status)
{
    static const char *const idle[] = {"", "none", "completed", "failed", "cancelled", NULL};
    return !g_strv_contains(idle, status);
}

/* FALSE with SM_PROBE_ERROR_MIGRATING when query-migrate reports a migration a probe must not
 * run under: any in progress (strict), or one at pre-switchover / in its device phase. */
static gboolean migration_allows_probe(QmpClient *qmp, gboolean strict, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autofree char *status = NULL;
    g_autoptr(json_object) info = qmp_query_migrate(qmp, &status, &e);
    if (!info) {
        sm_to_probe_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    if (strict && migration_in_progress(status)) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_MIGRATING,
                    "a migration is in progress (%s): not probing under it", status);
        return FALSE;
    }
    if (g_str_equal(status, "pre-switchover") || g_str_equal(status, "device")) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_MIGRATING,
                    "a migration is at %s: not probing under it (its gate does)", status);
        return FALSE;
    }
    return TRUE;
}

gboolean sm_probe_switchover_free(QmpClient *qmp, GError **error)
{
    return migration_allows_probe(qmp, FALSE, error);
}

gboolean sm_probe_migration_free(QmpClient *qmp, GError **error)
{
    return migration_allows_probe(qmp, TRUE, error);
}

static void count_event(QmpClient *client, const char *name, json_object *data, gint64 ts,
                        gpointer user_data)
{
    (void)client, (void)name, (void)data, (void)ts;
    (*(guint *)user_data)++;
}

/* stop or cont (typed), its error as a probe error. */
static gboolean run_state_command(QmpClient *qmp, gboolean (*command)(QmpClient *, GError **),
                                  GError **error)
{
    g_autoptr(GError) e = NULL;
    if (!command(qmp, &e)) {
        sm_to_probe_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    return TRUE;
}

/* How many fds of our earlier captures QEMU still holds (in sets carrying our tag alone). */
static gboolean count_probe_fds(QmpClient *qmp, guint *count, GError **error)
{
    g_autoptr(GError) e = NULL;
    g_autoptr(GPtrArray) sets = qmp_query_fdsets(qmp, &e);
    if (!sets) {
        sm_to_probe_error(error, g_steal_pointer(&e));
        return FALSE;
    }
    *count = 0;
    for (guint i = 0; i < sets->len; i++) {
        const QmpFdset *set = sets->pdata[i];
        *count += fdset_is_ours(set) ? set->opaque->len : 0;
    }
    return TRUE;
}

/* A stopped VM is captured as it is. QEMU 7.2 keeps each such capture's fd until the VM runs
 * (see sm_release_probe_fds), so anyone allowed to probe could grow its fd table without
 * bound while the VM stays paused: beyond SM_PROBE_STOPPED_FD_CAP lingering fds, refuse. */
static GBytes *capture_stopped(QmpClient *qmp, GError **error)
{
    guint lingering = 0;
    if (!count_probe_fds(qmp, &lingering, error)) {
        return NULL;
    }
    if (lingering >= SM_PROBE_STOPPED_FD_CAP) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE,
                    "QEMU keeps %u earlier probe fds of this stopped VM until it runs; not "
                    "adding another: resume the VM or wait",
                    lingering);
        return NULL;
    }
    return sm_capture_device_state(qmp, error);
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
        return capture_stopped(qmp, error);
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
    gboolean ok = run_state_command(qmp, qmp_stop, error);
    qmp_client_unsubscribe(qmp, sub);
    if (!ok) {
        return NULL;
    }
    g_autoptr(GError) e = NULL;
    GBytes *state = sm_capture_device_state(qmp, &e);
    if (stops > 0 && !run_state_command(qmp, qmp_cont, error)) {
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
