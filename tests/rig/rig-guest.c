/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The rig's guest: plays a guest's UHCI driver, USB enumeration and Bulk-Only Transport over
 * QEMU's qtest protocol, so a test decides exactly when each USB transfer happens. */
#include "rig.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Guest-physical layout. Everything the controller reads lives in guest RAM, so it travels
 * with the migration; the host side keeps only toggles and tags. */
enum {
    UHCI_PCI_CONFIG = 0x80001000, /* bus 0, device 2, function 0 */
    UHCI_IO_BASE = 0xc000,
    FRAME_LIST = 0x10000,
    QH_ADDR = 0x11000,
    TD_BASE = 0x11100,
    TD_MAX = 240,
    DATA_BUF = 0x20000,
    DATA_MAX = TD_MAX * 64,
};

/* UHCI registers and bits (UHCI design guide, section 2). */
enum {
    REG_USBCMD = 0x00,
    REG_USBSTS = 0x02,
    REG_FRNUM = 0x06,
    REG_FLBASEADD = 0x08,
    REG_PORTSC1 = 0x10,
    CMD_RS = 0x0001,
    CMD_HCRESET = 0x0002,
    CMD_CF = 0x0040,
    CMD_MAXP = 0x0080,
    PORT_CCS = 0x0001,
    PORT_EN = 0x0004,
    PORT_RESET = 0x0200,
    LINK_TERMINATE = 0x1,
    LINK_QH = 0x2,
    LINK_DEPTH_FIRST = 0x4,
    TD_ACTIVE = 1u << 23,
    TD_STALLED = 1u << 22,
    TD_DBUFERR = 1u << 21,
    TD_BABBLE = 1u << 20,
    TD_CRCTIMEOUT = 1u << 18,
    TD_ERRMASK = TD_STALLED | TD_DBUFERR | TD_BABBLE | TD_CRCTIMEOUT,
    TD_SPD = 1u << 29,
    TD_CERR3 = 3u << 27,
    PID_SETUP = 0x2d,
    PID_IN = 0x69,
    PID_OUT = 0xe1,
};

enum { MAX_DISKS = 2, PACKET = 64, CBW_LEN = 31, CSW_LEN = 13 };

typedef struct {
    guint8 address;
    guint8 ep_in, ep_out;
    gboolean toggle_in, toggle_out;
    guint32 last_tag;
} RigDisk;

struct RigGuest {
    int qtest_fd;
    GString *rx;
    char *vm_name;
    guint n_disks;
    RigDisk disks[MAX_DISKS];
    guint32 next_tag;
};

/* ---- qtest ------------------------------------------------------------------------------ */

static gboolean qtest_connect(RigGuest *g, const char *path, const char *name, GError **error)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    g_strlcpy(sun.sun_path, path, sizeof sun.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "qtest connect %s: %s", path,
                    g_strerror(errno));
        if (fd >= 0)
            close(fd);
        return FALSE;
    }
    if (g->qtest_fd >= 0)
        close(g->qtest_fd);
    g->qtest_fd = fd;
    g_string_truncate(g->rx, 0);
    g_free(g->vm_name);
    g->vm_name = g_strdup(name);
    return TRUE;
}

/* Sends one qtest command and returns the text after "OK" (never NULL on success). */
static char *qtest(RigGuest *g, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static char *qtest(RigGuest *g, GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autofree char *line = g_strconcat(cmd, "\n", NULL);
    gsize off = 0, len = strlen(line);
    while (off < len) {
        ssize_t n = send(g->qtest_fd, line + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_set_error(error, RIG_ERROR, RIG_ERROR_VM_DIED, "qtest to %s: %s", g->vm_name,
                        g_strerror(errno));
            return NULL;
        }
        off += (gsize)n;
    }
    for (;;) {
        char *nl = memchr(g->rx->str, '\n', g->rx->len);
        if (nl) {
            g_autofree char *reply = g_strndup(g->rx->str, (gsize)(nl - g->rx->str));
            g_string_erase(g->rx, 0, nl - g->rx->str + 1);
            if (g_str_has_prefix(reply, "IRQ"))
                continue; /* interrupt notices are not replies */
            if (!g_str_has_prefix(reply, "OK")) {
                g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "qtest '%s' on %s: %s", cmd,
                            g->vm_name, reply);
                return NULL;
            }
            return g_strdup(g_strchug(reply + 2));
        }
        struct pollfd pfd = {.fd = g->qtest_fd, .events = POLLIN};
        int r = poll(&pfd, 1, 10000);
        if (r == 0) {
            g_set_error(error, RIG_ERROR, RIG_ERROR_TIMEOUT, "qtest '%s' on %s: no reply", cmd,
                        g->vm_name);
            return NULL;
        }
        char buf[65536];
        ssize_t n = r > 0 ? recv(g->qtest_fd, buf, sizeof buf, 0) : -1;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            g_set_error(error, RIG_ERROR, RIG_ERROR_VM_DIED, "qtest '%s': %s closed the connection",
                        cmd, g->vm_name);
            return NULL;
        }
        g_string_append_len(g->rx, buf, n);
    }
}

static gboolean outw(RigGuest *g, guint16 port, guint16 value, GError **error)
{
    g_autofree char *r = qtest(g, error, "outw 0x%x 0x%x", port, value);
    return r != NULL;
}

static gboolean outl(RigGuest *g, guint16 port, guint32 value, GError **error)
{
    g_autofree char *r = qtest(g, error, "outl 0x%x 0x%x", port, value);
    return r != NULL;
}

static gboolean inw(RigGuest *g, guint16 port, guint16 *value, GError **error)
{
    g_autofree char *r = qtest(g, error, "inw 0x%x", port);
    if (!r)
        return FALSE;
    *value = (guint16)g_ascii_strtoull(r, NULL, 0);
    return TRUE;
}

static gboolean mem_write(RigGuest *g, guint64 addr, const void *data, gsize len, GError **error)
{
    g_autofree char *b64 = g_base64_encode(data, len);
    g_autofree char *r = qtest(
        g, error, "b64write 0x%" G_GINT64_MODIFIER "x %" G_GSIZE_FORMAT " %s", addr, len, b64);
    return r != NULL;
}

static gboolean mem_read(RigGuest *g, guint64 addr, void *data, gsize len, GError **error)
{
    g_autofree char *r =
        qtest(g, error, "b64read 0x%" G_GINT64_MODIFIER "x %" G_GSIZE_FORMAT, addr, len);
    if (!r)
        return FALSE;
    gsize out_len = 0;
    g_autofree guchar *bytes = g_base64_decode(r, &out_len);
    if (out_len != len) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL,
                    "b64read returned %" G_GSIZE_FORMAT " bytes, wanted %" G_GSIZE_FORMAT, out_len,
                    len);
        return FALSE;
    }
    memcpy(data, bytes, len);
    return TRUE;
}

static gboolean mem_write32(RigGuest *g, guint64 addr, guint32 value, GError **error)
{
    guint32 le = GUINT32_TO_LE(value);
    return mem_write(g, addr, &le, 4, error);
}

/* ---- UHCI ------------------------------------------------------------------------------- */

typedef struct {
    guint32 link, ctrl, token, buffer;
} Td;

/* Runs one transfer of `len` bytes as a chain of 64-byte TDs hung off the QH, and waits for
 * it. IN transfers stop at a short packet (SPD), as a real driver does, so the next phase's
 * bytes are never read by this one. Returns the bytes moved or -1. */
static gssize uhci_transfer(RigGuest *g, guint8 pid, guint8 address, guint8 ep, gboolean *toggle,
                            guint8 *data, gsize len, guint timeout_ms, GError **error)
{
    guint n_tds = len ? (guint)((len + PACKET - 1) / PACKET) : 1;
    if (n_tds > TD_MAX) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "transfer of %" G_GSIZE_FORMAT " too big",
                    len);
        return -1;
    }
    if (pid != PID_IN && len && !mem_write(g, DATA_BUF, data, len, error))
        return -1;
    Td tds[TD_MAX];
    gboolean t = *toggle;
    for (guint i = 0; i < n_tds; i++) {
        gsize chunk = MIN((gsize)PACKET, len - (gsize)i * PACKET);
        guint32 maxlen = chunk ? (guint32)chunk - 1 : 0x7ff;
        guint32 next = TD_BASE + (i + 1) * 16;
        tds[i].link = GUINT32_TO_LE(i + 1 < n_tds ? next | LINK_DEPTH_FIRST : LINK_TERMINATE);
        tds[i].ctrl = GUINT32_TO_LE(TD_ACTIVE | TD_CERR3 | (pid == PID_IN ? TD_SPD : 0) | 0x7ff);
        tds[i].token = GUINT32_TO_LE(maxlen << 21 | (t ? 1u << 19 : 0) | (guint32)ep << 15 |
                                     (guint32)address << 8 | pid);
        tds[i].buffer = GUINT32_TO_LE(DATA_BUF + i * PACKET);
        t = !t;
    }
    if (!mem_write(g, TD_BASE, tds, n_tds * sizeof(Td), error) ||
        !mem_write32(g, QH_ADDR + 4, TD_BASE, error))
        return -1;

    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    gsize moved = 0;
    for (;;) {
        if (!mem_read(g, TD_BASE, tds, n_tds * sizeof(Td), error))
            return -1;
        moved = 0;
        gboolean done = TRUE, failed = FALSE, short_packet = FALSE;
        guint completed = 0;
        for (guint i = 0; i < n_tds; i++) {
            guint32 ctrl = GUINT32_FROM_LE(tds[i].ctrl);
            if (ctrl & TD_ACTIVE) {
                done = FALSE;
                break;
            }
            completed++;
            if (ctrl & TD_ERRMASK) {
                failed = TRUE;
                break;
            }
            guint32 actual = ((ctrl & 0x7ff) + 1) & 0x7ff;
            guint32 maxlen = ((GUINT32_FROM_LE(tds[i].token) >> 21) + 1) & 0x7ff;
            moved += actual;
            if (actual < maxlen) {
                short_packet = TRUE;
                break;
            }
        }
        if (failed) {
            mem_write32(g, QH_ADDR + 4, LINK_TERMINATE, NULL);
            g_set_error(error, RIG_ERROR, RIG_ERROR_USB, "TD %u failed: status 0x%06x", completed,
                        GUINT32_FROM_LE(tds[completed - 1].ctrl) & 0xff0000);
            return -1;
        }
        if (done || short_packet) {
            if (short_packet && !mem_write32(g, QH_ADDR + 4, LINK_TERMINATE, error))
                return -1;
            /* Each packet that went through flips the toggle. */
            for (guint i = 0; i < completed; i++)
                *toggle = !*toggle;
            break;
        }
        if (g_get_monotonic_time() > deadline) {
            g_set_error(error, RIG_ERROR, RIG_ERROR_TIMEOUT,
                        "USB transfer (pid 0x%02x ep %u) on %s not done after %u ms", pid, ep,
                        g->vm_name, timeout_ms);
            return -1;
        }
        g_usleep(300);
    }
    if (pid == PID_IN && moved && !mem_read(g, DATA_BUF, data, moved, error))
        return -1;
    return (gssize)moved;
}

/* A control transfer on endpoint 0: SETUP, optional IN data stage, status stage. */
static gssize control(RigGuest *g, guint8 address, guint8 request_type, guint8 request,
                      guint16 value, guint16 index, guint8 *data, guint16 length, GError **error)
{
    guint8 setup[8] = {request_type, request,    value & 0xff,  value >> 8,
                       index & 0xff, index >> 8, length & 0xff, length >> 8};
    gboolean toggle = FALSE;
    if (uhci_transfer(g, PID_SETUP, address, 0, &toggle, setup, 8, 2000, error) < 0)
        return -1;
    gssize got = 0;
    toggle = TRUE;
    if (length) {
        got = uhci_transfer(g, PID_IN, address, 0, &toggle, data, length, 2000, error);
        if (got < 0)
            return -1;
    }
    toggle = TRUE;
    guint8 none = 0;
    if (uhci_transfer(g, length ? PID_OUT : PID_IN, address, 0, &toggle, &none, 0, 2000, error) < 0)
        return -1;
    return got;
}

static gboolean uhci_init(RigGuest *g, GError **error)
{
    /* PCI: I/O BAR 4 at a fixed port, I/O decoding and bus mastering on. */
    if (!outl(g, 0xcf8, UHCI_PCI_CONFIG | 0x20, error) ||
        !outl(g, 0xcfc, UHCI_IO_BASE | 1, error) ||
        !outl(g, 0xcf8, UHCI_PCI_CONFIG | 0x04, error) || !outw(g, 0xcfc, 0x0005, error))
        return FALSE;
    if (!outw(g, UHCI_IO_BASE + REG_USBCMD, CMD_HCRESET, error))
        return FALSE;
    /* Every frame points at the one QH; the QH's element pointer carries the transfer. */
    guint32 frames[1024];
    for (guint i = 0; i < 1024; i++)
        frames[i] = GUINT32_TO_LE(QH_ADDR | LINK_QH);
    guint32 qh[2] = {GUINT32_TO_LE(LINK_TERMINATE), GUINT32_TO_LE(LINK_TERMINATE)};
    if (!mem_write(g, FRAME_LIST, frames, sizeof frames, error) ||
        !mem_write(g, QH_ADDR, qh, sizeof qh, error) ||
        !outl(g, UHCI_IO_BASE + REG_FLBASEADD, FRAME_LIST, error) ||
        !outw(g, UHCI_IO_BASE + REG_FRNUM, 0, error) ||
        !outw(g, UHCI_IO_BASE + REG_USBCMD, CMD_RS | CMD_CF | CMD_MAXP, error))
        return FALSE;
    return TRUE;
}

static gboolean port_reset_enable(RigGuest *g, guint port, GError **error)
{
    guint16 reg = UHCI_IO_BASE + REG_PORTSC1 + 2 * port, status = 0;
    if (!inw(g, reg, &status, error))
        return FALSE;
    if (!(status & PORT_CCS)) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "no device on UHCI port %u", port + 1);
        return FALSE;
    }
    return outw(g, reg, PORT_RESET, error) && outw(g, reg, 0, error) &&
           outw(g, reg, PORT_EN, error);
}

/* Enumerates the device on `port` (at address 0 after its reset) as address port+1 and
 * finds its bulk endpoints in the configuration descriptor. */
static gboolean enumerate(RigGuest *g, guint port, GError **error)
{
    RigDisk *d = &g->disks[port];
    guint8 desc[64];
    d->address = (guint8)(port + 1);
    if (!port_reset_enable(g, port, error) ||
        control(g, 0, 0x00, 5 /* SET_ADDRESS */, d->address, 0, NULL, 0, error) < 0)
        return FALSE;
    gssize n =
        control(g, d->address, 0x80, 6 /* GET_DESCRIPTOR */, 0x0200, 0, desc, sizeof desc, error);
    if (n < 0)
        return FALSE;
    for (gssize off = 0; off + 1 < n && desc[off] >= 2; off += desc[off]) {
        if (desc[off + 1] == 5 && off + 3 < n && (desc[off + 3] & 3) == 2) {
            if (desc[off + 2] & 0x80)
                d->ep_in = desc[off + 2] & 0x0f;
            else
                d->ep_out = desc[off + 2] & 0x0f;
        }
    }
    if (!d->ep_in || !d->ep_out) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "port %u: no bulk endpoints", port + 1);
        return FALSE;
    }
    return control(g, d->address, 0x00, 9 /* SET_CONFIGURATION */, 1, 0, NULL, 0, error) >= 0;
}

RigGuest *rig_guest_new(RigVm *vm, GError **error)
{
    return rig_guest_new_at(rig_vm_qtest_path(vm), rig_vm_name(vm), error);
}

RigGuest *rig_guest_new_at(const char *qtest_path, const char *name, GError **error)
{
    g_autoptr(RigGuest) g = g_new0(RigGuest, 1);
    g->qtest_fd = -1;
    g->rx = g_string_new(NULL);
    g->next_tag = 0x5a000001;
    if (!qtest_connect(g, qtest_path, name, error) || !uhci_init(g, error))
        return NULL;
    for (guint port = 0; port < MAX_DISKS; port++) {
        guint16 status = 0;
        if (!inw(g, UHCI_IO_BASE + REG_PORTSC1 + 2 * port, &status, error))
            return NULL;
        if (!(status & PORT_CCS))
            break;
        if (!enumerate(g, port, error))
            return NULL;
        g->n_disks++;
    }
    if (!g->n_disks) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "no usb-storage device found");
        return NULL;
    }
    return g_steal_pointer(&g);
}

void rig_guest_free(RigGuest *g)
{
    if (!g)
        return;
    if (g->qtest_fd >= 0)
        close(g->qtest_fd);
    g_string_free(g->rx, TRUE);
    g_free(g->vm_name);
    g_free(g);
}

gboolean rig_guest_attach(RigGuest *g, RigVm *vm, GError **error)
{
    return rig_guest_attach_at(g, rig_vm_qtest_path(vm), rig_vm_name(vm), error);
}

gboolean rig_guest_attach_at(RigGuest *g, const char *qtest_path, const char *name, GError **error)
{
    if (!qtest_connect(g, qtest_path, name, error))
        return FALSE;
    /* Fail now rather than at the first transfer if the controller did not come across. */
    guint16 cmd = 0;
    if (!inw(g, UHCI_IO_BASE + REG_USBCMD, &cmd, error))
        return FALSE;
    if (!(cmd & CMD_RS)) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "UHCI on %s is not running (cmd 0x%x)", name,
                    cmd);
        return FALSE;
    }
    return TRUE;
}

gboolean rig_guest_fill_ram(RigGuest *g, guint64 addr, gsize size, guint8 value, GError **error)
{
    g_autofree char *r = qtest(
        g, error, "memset 0x%" G_GINT64_MODIFIER "x %" G_GSIZE_FORMAT " 0x%02x", addr, size, value);
    return r != NULL;
}

/* ---- Bulk-Only Transport ------------------------------------------------------------------ */

static RigDisk *disk_get(RigGuest *g, guint disk, GError **error)
{
    if (disk >= g->n_disks) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "no disk %u", disk);
        return NULL;
    }
    return &g->disks[disk];
}

gboolean rig_guest_send_cbw(RigGuest *g, guint disk, const RigCommand *cmd, guint32 *tag,
                            GError **error)
{
    RigDisk *d = disk_get(g, disk, error);
    if (!d)
        return FALSE;
    guint8 cbw[CBW_LEN] = {'U', 'S', 'B', 'C'};
    d->last_tag = g->next_tag++;
    guint32 tag_le = GUINT32_TO_LE(d->last_tag), len_le = GUINT32_TO_LE(cmd->data_len);
    memcpy(cbw + 4, &tag_le, 4);
    memcpy(cbw + 8, &len_le, 4);
    cbw[12] = cmd->data_in ? 0x80 : 0x00;
    cbw[13] = cmd->lun & 0x0f;
    cbw[14] = cmd->cdb_len;
    memcpy(cbw + 15, cmd->cdb, MIN(cmd->cdb_len, 16));
    if (tag)
        *tag = d->last_tag;
    return uhci_transfer(g, PID_OUT, d->address, d->ep_out, &d->toggle_out, cbw, CBW_LEN, 5000,
                         error) == CBW_LEN;
}

gssize rig_guest_data_in(RigGuest *g, guint disk, guint8 *buf, gsize len, GError **error)
{
    RigDisk *d = disk_get(g, disk, error);
    if (!d)
        return -1;
    return uhci_transfer(g, PID_IN, d->address, d->ep_in, &d->toggle_in, buf, len, 5000, error);
}

gssize rig_guest_data_out(RigGuest *g, guint disk, const guint8 *buf, gsize len, GError **error)
{
    RigDisk *d = disk_get(g, disk, error);
    if (!d)
        return -1;
    return uhci_transfer(g, PID_OUT, d->address, d->ep_out, &d->toggle_out, (guint8 *)buf, len,
                         5000, error);
}

gboolean rig_guest_read_csw(RigGuest *g, guint disk, guint8 *status, guint32 *residue,
                            GError **error)
{
    RigDisk *d = disk_get(g, disk, error);
    if (!d)
        return FALSE;
    guint8 csw[CSW_LEN];
    gssize n =
        uhci_transfer(g, PID_IN, d->address, d->ep_in, &d->toggle_in, csw, CSW_LEN, 5000, error);
    if (n < 0)
        return FALSE;
    guint32 tag, res;
    memcpy(&tag, csw + 4, 4);
    memcpy(&res, csw + 8, 4);
    if (n != CSW_LEN || memcmp(csw, "USBS", 4) != 0 || GUINT32_FROM_LE(tag) != d->last_tag) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL,
                    "bad CSW (%" G_GSSIZE_FORMAT " bytes, tag 0x%08x, want 0x%08x)", n,
                    GUINT32_FROM_LE(tag), d->last_tag);
        return FALSE;
    }
    if (status)
        *status = csw[12];
    if (residue)
        *residue = GUINT32_FROM_LE(res);
    return TRUE;
}

gboolean rig_guest_transact(RigGuest *g, guint disk, const RigCommand *cmd, guint8 *buf, gsize *len,
                            guint8 *status, GError **error)
{
    if (!rig_guest_send_cbw(g, disk, cmd, NULL, error))
        return FALSE;
    gssize got = 0;
    if (cmd->data_in && cmd->data_len) {
        got = rig_guest_data_in(g, disk, buf, cmd->data_len, error);
        if (got < 0)
            return FALSE;
    } else if (cmd->data_len) {
        /* DATA-OUT in chunks the TD chain can carry. */
        for (gsize off = 0; off < cmd->data_len;) {
            gsize n = MIN((gsize)cmd->data_len - off, (gsize)DATA_MAX);
            if (rig_guest_data_out(g, disk, buf + off, n, error) != (gssize)n)
                return FALSE;
            off += n;
        }
        got = cmd->data_len;
    }
    if (len)
        *len = (gsize)got;
    return rig_guest_read_csw(g, disk, status, NULL, error);
}

/* ---- Commands ------------------------------------------------------------------------------ */

RigCommand rig_cmd_gesn(void)
{
    /* Polled, notification class "media" (bit 4), allocation length 8: what Linux's sr driver
     * sends every couple of seconds. */
    return (RigCommand){.cdb = {0x4a, 0x01, 0, 0, 0x10, 0, 0, 0, 8, 0},
                        .cdb_len = 10,
                        .data_len = 8,
                        .data_in = TRUE};
}

RigCommand rig_cmd_read_capacity(void)
{
    return (RigCommand){.cdb = {0x25}, .cdb_len = 10, .data_len = 8, .data_in = TRUE};
}

RigCommand rig_cmd_inquiry(void)
{
    return (RigCommand){
        .cdb = {0x12, 0, 0, 0, 36, 0}, .cdb_len = 6, .data_len = 36, .data_in = TRUE};
}

RigCommand rig_cmd_test_unit_ready(void)
{
    return (RigCommand){.cdb = {0x00}, .cdb_len = 6, .data_len = 0, .data_in = FALSE};
}

RigCommand rig_cmd_read10(guint32 lba, guint16 blocks)
{
    return (RigCommand){.cdb = {0x28, 0, lba >> 24, (lba >> 16) & 0xff, (lba >> 8) & 0xff,
                                lba & 0xff, 0, blocks >> 8, blocks & 0xff, 0},
                        .cdb_len = 10,
                        .data_len = (guint32)blocks * 2048,
                        .data_in = TRUE};
}

RigCommand rig_cmd_disk_read10(guint32 lba, guint16 blocks)
{
    RigCommand c = rig_cmd_read10(lba, blocks);
    c.data_len = (guint32)blocks * 512;
    return c;
}

RigCommand rig_cmd_disk_write10(guint32 lba, guint16 blocks)
{
    RigCommand c = rig_cmd_disk_read10(lba, blocks);
    c.cdb[0] = 0x2a;
    c.data_in = FALSE;
    return c;
}

RigCommand rig_cmd_mode_sense6(guint8 page, guint8 alloc)
{
    return (RigCommand){
        .cdb = {0x1a, 0x08, page, 0, alloc, 0}, .cdb_len = 6, .data_len = alloc, .data_in = TRUE};
}

RigCommand rig_cmd_lun(RigCommand cmd, guint8 lun)
{
    cmd.lun = lun;
    return cmd;
}
