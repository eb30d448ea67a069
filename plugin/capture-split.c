/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The capture split around the switchover (SmCapture, probe.h): the gate prepares the fd
 * before the guest stops, takes the device state with one command while it is stopped, and
 * gives the fd back once it runs again, so the guest-visible downtime carries the save alone. */
#include "probe.h"
#include "qmp-commands.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

/* The tag sm_release_probe_fds recognises as ours. */
#define PROBE_FD_OPAQUE "safe-migrate probe"
#define MAX_STATE_BYTES (1024 * 1024 * 1024)

struct SmCapture {
    int memfd;     /* reused by every attempt */
    gint64 fdset;  /* QEMU's fd set holding it, or -1 */
    char *fdname;  /* "/dev/fdset/N" */
    gboolean live; /* bytes of the last take are still mapped */
};

static gboolean fail(GError **error, int code, const char *what, GError *e)
{
    g_set_error(error, SM_PROBE_ERROR, code, "%s: %s", what, e ? e->message : g_strerror(errno));
    if (e)
        g_error_free(e);
    return FALSE;
}

SmCapture *sm_capture_new(GError **error)
{
    int fd = memfd_create("sm-device-state", MFD_CLOEXEC);
    if (fd < 0) {
        fail(error, SM_PROBE_ERROR_CAPTURE, "memfd_create", NULL);
        return NULL;
    }
    SmCapture *c = g_new0(SmCapture, 1);
    c->memfd = fd;
    c->fdset = -1;
    return c;
}

void sm_capture_free(SmCapture *capture)
{
    if (!capture)
        return;
    close(capture->memfd);
    g_free(capture->fdname);
    g_free(capture);
}

gboolean sm_capture_prepare(SmCapture *c, QmpClient *qmp, GError **error)
{
    if (ftruncate(c->memfd, 0) < 0)
        return fail(error, SM_PROBE_ERROR_CAPTURE, "truncate the state memfd", NULL);
    /* QEMU picks an fd of the set whose access mode matches its open (write-only): a fresh
     * write-only description of the same memory, at offset 0. */
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", c->memfd);
    int wfd = open(proc, O_WRONLY | O_CLOEXEC);
    if (wfd < 0)
        return fail(error, SM_PROBE_ERROR_CAPTURE, "reopen the state memfd", NULL);
    GError *e = NULL;
    gboolean added = qmp_add_fd(qmp, wfd, -1, PROBE_FD_OPAQUE, &c->fdset, NULL, &e);
    close(wfd);
    if (!added) {
        c->fdset = -1;
        return fail(error,
                    g_error_matches(e, QMP_ERROR, QMP_ERROR_PROTOCOL) ? SM_PROBE_ERROR_CAPTURE
                                                                      : SM_PROBE_ERROR_UNREACHABLE,
                    "add-fd", e);
    }
    g_free(c->fdname);
    c->fdname = g_strdup_printf("/dev/fdset/%" G_GINT64_FORMAT, c->fdset);
    return TRUE;
}

typedef struct {
    SmCapture *capture;
    void *map;
    size_t size;
} Mapping;

static void unmap(gpointer data)
{
    Mapping *m = data;
    munmap(m->map, m->size);
    m->capture->live = FALSE;
    g_free(m);
}

GBytes *sm_capture_take(SmCapture *c, QmpClient *qmp, GError **error)
{
    g_return_val_if_fail(c->fdset >= 0 && !c->live, NULL);
    GError *e = NULL;
    if (!qmp_xen_save_devices_state(qmp, c->fdname, FALSE, &e)) {
        fail(error,
             e && qmp_error_get_class(e) ? SM_PROBE_ERROR_CAPTURE : SM_PROBE_ERROR_UNREACHABLE,
             "xen-save-devices-state", e);
        return NULL;
    }
    off_t size = lseek(c->memfd, 0, SEEK_END);
    if (size <= 0 || size > MAX_STATE_BYTES) {
        g_set_error(error, SM_PROBE_ERROR, SM_PROBE_ERROR_CAPTURE, "device state of %lld bytes",
                    (long long)size);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, c->memfd, 0);
    if (map == MAP_FAILED) {
        fail(error, SM_PROBE_ERROR_CAPTURE, "map the device state", NULL);
        return NULL;
    }
    c->live = TRUE;
    /* The mapping goes with the last reference; the next prepare truncates the file. */
    Mapping *m = g_new(Mapping, 1);
    *m = (Mapping){c, map, (size_t)size};
    return g_bytes_new_with_free_func(map, (gsize)size, unmap, m);
}

void sm_capture_release(SmCapture *c, QmpClient *qmp)
{
    if (c->fdset < 0 || !qmp)
        return;
    qmp_remove_fd(qmp, c->fdset, NULL);
    c->fdset = -1;
}
