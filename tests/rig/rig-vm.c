/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The rig's QEMU processes: launch a source or destination QEMU with a usb-storage CD-ROM,
 * a QMP socket and a qtest socket, and drive plain QMP migrations between them. */
#include "rig.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>

GQuark rig_error_quark(void)
{
    return g_quark_from_static_string("rig-error-quark");
}

struct RigVm {
    char *name;
    char *dir;
    char *qmp_path;
    char *sidecar_qmp_path;
    char *qtest_path;
    char *log_path;
    char *pid_path;
    GStrv argv;       /* how it was started, for rig_vm_prepare_script() */
    gboolean adopted; /* a daemonized process started by the prepare script: not our child */
    GPid pid;
    gboolean reaped;
    int wait_status;
    QmpClient *qmp;
};

static char *tmpdir;
static char *default_iso;
static guint vm_counter;

static void remove_tree(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *entry;
    while (dir && (entry = g_dir_read_name(dir))) {
        g_autofree char *child = g_build_filename(path, entry, NULL);
        if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
            remove_tree(child);
        else
            unlink(child);
    }
    rmdir(path);
}

/* ---- Strays: every process a test starts ends with it ---------------------------------
 * A QEMU that a prepare script relaunches daemonizes: it is nobody's child, PR_SET_PDEATHSIG
 * does not follow it, and the rig learns its pid only if the test reloads the VM. A test
 * that fails an assertion aborts and runs no teardown at all. So the rig finds its processes
 * by what they name: every QEMU, script and gate of a test process names a path under its
 * rig_tmpdir(), a fresh directory that no other process on the machine names. */

/* Whether a command line (NUL-separated arguments) names `path` or a path under it. */
static gboolean names_path(const char *cmdline, gsize len, const char *path)
{
    gsize n = strlen(path);
    for (const char *at = cmdline, *end = cmdline + len;
         (at = memmem(at, (gsize)(end - at), path, n)); at++)
        if (at + n < end && (at[n] == '/' || at[n] == '\0'))
            return TRUE;
    return FALSE;
}

GArray *rig_processes_naming(const char *path)
{
    GArray *pids = g_array_new(FALSE, FALSE, sizeof(GPid));
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *entry;
    while (proc && (entry = g_dir_read_name(proc))) {
        char *end;
        GPid pid = (GPid)g_ascii_strtoll(entry, &end, 10);
        if (*end || pid <= 0 || pid == getpid())
            continue;
        g_autofree char *file = g_strdup_printf("/proc/%s/cmdline", entry);
        g_autofree char *cmdline = NULL;
        gsize len = 0;
        /* A zombie's command line is empty: only live processes match. */
        if (g_file_get_contents(file, &cmdline, &len, NULL) && names_path(cmdline, len, path))
            g_array_append_val(pids, pid);
    }
    return pids;
}

char rig_process_state(GPid pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *stat = NULL;
    if (pid <= 0 || !g_file_get_contents(path, &stat, NULL, NULL))
        return 0;
    const char *end = strrchr(stat, ')'); /* "PID (COMM) STATE ...": COMM may hold anything */
    return end && end[1] == ' ' ? end[2] : 0;
}

static gboolean process_gone(GPid pid)
{
    char state = rig_process_state(pid);
    return state == 0 || state == 'Z';
}

/* Kills every process naming `dir` and waits until each is gone (its sockets and files
 * free), until none is left: a prepare script may be forking its QEMU meanwhile. */
static void sweep(const char *dir)
{
    for (int pass = 0; pass < 20; pass++) {
        g_autoptr(GArray) pids = rig_processes_naming(dir);
        g_autoptr(GArray) killed = g_array_new(FALSE, FALSE, sizeof(GPid));
        for (guint i = 0; i < pids->len; i++)
            if (kill(g_array_index(pids, GPid, i), SIGKILL) == 0) /* not one we may not kill */
                g_array_append_val(killed, g_array_index(pids, GPid, i));
        if (killed->len == 0)
            return;
        for (guint i = 0; i < killed->len; i++)
            for (int t = 0; t < 500 && !process_gone(g_array_index(killed, GPid, i)); t++)
                g_usleep(2000);
    }
}

static pid_t tmpdir_owner;

static void remove_tmpdir(void)
{
    /* Only in the process that made it: a forked child that calls exit() must not take its
     * parent's VMs and files with it. */
    if (!tmpdir || getpid() != tmpdir_owner)
        return;
    sweep(tmpdir);
    if (!g_getenv("SM_KEEP_TMP"))
        remove_tree(tmpdir);
}

static void watchdog_setup(gpointer data)
{
    (void)data;
    setsid(); /* out of the test's process group, which a test runner may kill as a whole */
}

/* The sweep for a test process that ends without exit handlers (an assertion's abort, a
 * signal, a runner's SIGKILL): a shell that reads a pipe whose only writer is this process
 * and, at its end of file, does what remove_tmpdir() does. Its own command line names no
 * path of ours; grep reads the pattern from its stdin for the same reason. */
static void start_watchdog(void)
{
    static const char script[] =
        "cat >/dev/null\n"
        "for pass in 1 2 3 4 5; do\n"
        "  pids=$(printf '%s/\\n' \"$SMRIG_DIR\" | grep -laF -f - /proc/[0-9]*/cmdline 2>/dev/null"
        " | cut -d/ -f3)\n"
        "  [ -n \"$pids\" ] || break\n"
        "  kill -9 $pids 2>/dev/null; sleep 0.2\n"
        "done\n"
        "[ -n \"$SM_KEEP_TMP\" ] || rm -rf -- \"$SMRIG_DIR\"\n";
    int fds[2];
    g_autoptr(GError) error = NULL;
    if (!g_unix_open_pipe(fds, FD_CLOEXEC, &error))
        g_error("rig watchdog: %s", error->message);
    const char *argv[] = {"/bin/sh", "-c", script, "smrig-watchdog", NULL};
    g_auto(GStrv) envp = g_environ_setenv(g_get_environ(), "SMRIG_DIR", tmpdir, TRUE);
    /* Not reaped by us: GLib double-forks it, so it outlives this process as nobody's zombie. */
    if (!g_spawn_async_with_pipes_and_fds(NULL, argv, (const char *const *)envp,
                                          G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                                          watchdog_setup, NULL, fds[0], -1, -1, NULL, NULL, 0, NULL,
                                          NULL, NULL, NULL, &error))
        g_error("rig watchdog: %s", error->message);
    close(fds[0]); /* fds[1] stays open, unwritten, until this process ends */
}

const char *rig_tmpdir(void)
{
    if (!tmpdir) {
        /* Short paths: unix socket names are limited to 108 bytes. */
        tmpdir = g_dir_make_tmp("smrig-XXXXXX", NULL);
        g_assert(tmpdir);
        tmpdir_owner = getpid();
        start_watchdog();
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

/* A pattern that differs in every sector (xorshift from `seed`), so a READ(10) of the wrong
 * sector or a zero-filled buffer can never pass for the right one; the ISO's data file and
 * the disk have different seeds, so a sector of the one never passes for one of the other. */
enum { ISO_SEED = 0x9e3779b9u, DISK_SEED = 0x2545f491u };

static void fill_pattern(guint8 *buf, gsize len, guint32 seed)
{
    guint32 x = seed;
    for (gsize i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (guint8)(x >> 24);
    }
}

const char *rig_default_iso(GError **error)
{
    if (default_iso)
        return default_iso;
    g_autofree char *content = g_build_filename(rig_tmpdir(), "iso-root", NULL);
    g_autofree char *iso = g_build_filename(rig_tmpdir(), "cd.iso", NULL);
    g_mkdir_with_parents(content, 0700);
    gsize len = 256 * 1024;
    g_autofree guint8 *data = g_malloc(len);
    fill_pattern(data, len, ISO_SEED);
    g_autofree char *data_path = g_build_filename(content, "DATA.BIN", NULL);
    g_autofree char *hello_path = g_build_filename(content, "HELLO.TXT", NULL);
    if (!g_file_set_contents(data_path, (const char *)data, (gssize)len, error) ||
        !g_file_set_contents(hello_path, "hello from the safe-migrate rig\n", -1, error))
        return NULL;
    const char *argv[] = {"genisoimage", "-quiet", "-V", "SMRIG", "-R",
                          "-J",          "-o",     iso,  content, NULL};
    int status = 0;
    g_autofree char *err_out = NULL;
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                      NULL, NULL, NULL, &err_out, &status, error))
        return NULL;
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "genisoimage failed: %s", err_out);
        return NULL;
    }
    default_iso = g_steal_pointer(&iso);
    return default_iso;
}

gboolean rig_iso_sector(guint32 lba, guint8 out[2048])
{
    if (!rig_default_iso(NULL))
        return FALSE;
    int fd = open(default_iso, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FALSE;
    ssize_t n = pread(fd, out, 2048, (off_t)lba * 2048);
    close(fd);
    return n == 2048;
}

void rig_expected_read_capacity(guint8 out[8])
{
    GStatBuf st;
    const char *iso = rig_default_iso(NULL);
    if (!iso || g_stat(iso, &st) != 0)
        g_error("the rig's ISO is missing");
    guint32 last_lba = GUINT32_TO_BE((guint32)(st.st_size / 2048) - 1);
    guint32 block = GUINT32_TO_BE(2048);
    memcpy(out, &last_lba, 4);
    memcpy(out + 4, &block, 4);
}

static char *default_disk;

enum { DISK_BYTES = 1024 * 1024 };

const char *rig_default_disk(GError **error)
{
    if (default_disk)
        return default_disk;
    g_autofree char *path = g_build_filename(rig_tmpdir(), "disk.img", NULL);
    g_autofree guint8 *data = g_malloc(DISK_BYTES);
    fill_pattern(data, DISK_BYTES, DISK_SEED);
    if (!g_file_set_contents(path, (const char *)data, DISK_BYTES, error))
        return NULL;
    default_disk = g_steal_pointer(&path);
    return default_disk;
}

gboolean rig_disk_sector(guint32 lba, guint8 out[512])
{
    if ((guint64)lba * 512 + 512 > DISK_BYTES)
        return FALSE;
    g_autofree guint8 *data = g_malloc(DISK_BYTES);
    fill_pattern(data, DISK_BYTES, DISK_SEED);
    memcpy(out, data + (gsize)lba * 512, 512);
    return TRUE;
}

char *rig_disk_copy(const char *name, GError **error)
{
    const char *src = rig_default_disk(error);
    g_autofree char *data = NULL;
    gsize len;
    if (!src || !g_file_get_contents(src, &data, &len, error))
        return NULL;
    g_autofree char *file = g_strdup_printf("%s.img", name);
    char *path = g_build_filename(rig_tmpdir(), file, NULL);
    if (!g_file_set_contents(path, data, (gssize)len, error)) {
        g_free(path);
        return NULL;
    }
    return path;
}

const char *rig_form_usb_type(RigForm form)
{
    return form == RIG_FORM_BOT_CD || form == RIG_FORM_BOT_CD_DISK ? "usb-bot" : "usb-storage";
}

static void add2(GPtrArray *argv, const char *opt, char *value)
{
    g_ptr_array_add(argv, g_strdup(opt));
    g_ptr_array_add(argv, value);
}

/* The controller's -device arguments and the bus its devices go on. */
static const char *add_controller(GPtrArray *argv, RigController c)
{
    switch (c) {
    case RIG_CTRL_EHCI:
        add2(argv, "-device", g_strdup("usb-ehci,id=ehci,addr=0x4"));
        return "ehci.0";
    case RIG_CTRL_ICH9_EHCI:
        add2(argv, "-device", g_strdup("ich9-usb-ehci1,id=ehci,addr=1d.7,multifunction=on"));
        for (int i = 0; i < 3; i++)
            add2(argv, "-device",
                 g_strdup_printf("ich9-usb-uhci%d,masterbus=ehci.0,firstport=%d,addr=1d.%d,"
                                 "multifunction=on",
                                 i + 1, 2 * i, i));
        return "ehci.0";
    case RIG_CTRL_XHCI:
        add2(argv, "-device", g_strdup("qemu-xhci,id=xhci,addr=0x5"));
        return "xhci.0";
    default:
        return "uhci.0";
    }
}

/* Storage device i of the configuration: its drives and its -device arguments. xHCI picks
 * the port itself (its first ports are USB 3, which a given port number may not be). */
static void add_storage(GPtrArray *argv, const RigVmConfig *c, const char *bus, guint i,
                        const char *iso, const char *disk)
{
    g_autofree char *port =
        c->controller == RIG_CTRL_XHCI ? g_strdup("") : g_strdup_printf(",port=%u", i + 1);
    g_autofree char *cd = g_strdup_printf("if=none,id=cd%u,media=cdrom,readonly=on,format=raw,"
                                          "file=%s",
                                          i, iso);
    g_autofree char *hd =
        g_strdup_printf("if=none,id=hd%u,format=raw,file=%s,cache=writethrough", i, disk);
    switch (c->form) {
    case RIG_FORM_STORAGE_CD:
        add2(argv, "-drive", g_steal_pointer(&cd));
        add2(argv, "-device",
             g_strdup_printf("usb-storage,bus=%s%s,drive=cd%u,id=usbcd%u", bus, port, i, i));
        break;
    case RIG_FORM_STORAGE_DISK:
        add2(argv, "-drive", g_steal_pointer(&hd));
        add2(argv, "-device",
             g_strdup_printf("usb-storage,bus=%s%s,drive=hd%u,id=usbcd%u", bus, port, i, i));
        break;
    case RIG_FORM_BOT_CD:
    case RIG_FORM_BOT_CD_DISK:
        add2(argv, "-device", g_strdup_printf("usb-bot,bus=%s%s,id=usbcd%u", bus, port, i));
        add2(argv, "-drive", g_steal_pointer(&cd));
        add2(argv, "-device",
             g_strdup_printf("scsi-cd,bus=usbcd%u.0,lun=0,drive=cd%u,id=lun0cd%u", i, i, i));
        if (c->form == RIG_FORM_BOT_CD_DISK) {
            add2(argv, "-drive", g_steal_pointer(&hd));
            add2(argv, "-device",
                 g_strdup_printf("scsi-hd,bus=usbcd%u.0,lun=1,drive=hd%u,id=lun1hd%u", i, i, i));
        }
        break;
    default:
        break;
    }
}

/* 64 KiB of HLT: the CPU starts at the reset vector, halts with interrupts off and stays
 * there, so the qtest side is the only "guest software" touching the hardware. */
static const char *hlt_bios(GError **error)
{
    static char *path;
    if (path)
        return path;
    g_autofree char *p = g_build_filename(rig_tmpdir(), "hlt.bin", NULL);
    g_autofree char *bytes = g_malloc(65536);
    memset(bytes, 0xf4, 65536);
    if (!g_file_set_contents(p, bytes, 65536, error))
        return NULL;
    path = g_steal_pointer(&p);
    return path;
}

/* The -m argument for `mb` MiB with `accel` (NULL = tcg). QEMU before 9.0 under TCG
 * loses guest stores during a migration: its dirty-bitmap sync for a RAM block whose size is a
 * multiple of 256 KiB clears dirty bits 64 pages at a time without invalidating the TCG TLB,
 * so later stores through cached entries mark nothing dirty and those pages are never sent
 * again (upstream "physmem: Fix migration dirty bitmap coherency with TCG memory access",
 * QEMU 9.0; not in Debian's 7.2.22). Guests came up corrupted on the destination (bench/README).
 * Under TCG this is 8 KiB more than `mb` MiB, which makes 7.2 take its page-by-page sync,
 * which invalidates the TLB (10.0 alike, so that a 7.2 VM can still migrate to it); `exact`
 * gives `mb` MiB as asked. KVM tracks dirty pages itself and is unaffected. */
static char *memory_arg(const char *accel, guint mb, gboolean exact)
{
    gboolean tcg = !accel || g_str_equal(accel, "tcg");
    if (exact || !tcg)
        return g_strdup_printf("%u", mb);
    return g_strdup_printf("%uK", mb * 1024 + 8);
}

const char *rig_qemu_name(RigQemu qemu)
{
    return qemu == RIG_QEMU_72 ? "7.2" : "10.0";
}

static gboolean qemu_command(RigQemu qemu, GPtrArray *argv, GError **error)
{
    const char *bin = g_getenv(qemu == RIG_QEMU_72 ? "SM_QEMU72" : "SM_QEMU10");
    if (!bin || !g_file_test(bin, G_FILE_TEST_IS_EXECUTABLE)) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP,
                    "QEMU %s not found (set %s; run tests/setup-qemu.sh)", rig_qemu_name(qemu),
                    qemu == RIG_QEMU_72 ? "SM_QEMU72" : "SM_QEMU10");
        return FALSE;
    }
    g_ptr_array_add(argv, g_strdup(bin));
    if (qemu == RIG_QEMU_10) {
        const char *datadir = g_getenv("SM_QEMU10_DATADIR");
        if (datadir) {
            g_ptr_array_add(argv, g_strdup("-L"));
            g_ptr_array_add(argv, g_strdup(datadir));
        }
    }
    return TRUE;
}

static void child_setup(gpointer data)
{
    (void)data;
    /* No core files from the crashes the tests provoke on purpose, and no QEMU left behind
     * if the test process dies. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static gboolean wait_for_socket(RigVm *vm, const char *path, GError **error)
{
    for (int i = 0; i < 2000; i++) {
        if (g_file_test(path, G_FILE_TEST_EXISTS))
            return TRUE;
        if (!rig_vm_alive(vm)) {
            g_autofree char *err = rig_vm_stderr(vm);
            g_set_error(error, RIG_ERROR, RIG_ERROR_VM_DIED, "QEMU %s exited at start: %s",
                        vm->name, err);
            return FALSE;
        }
        g_usleep(5000);
    }
    g_set_error(error, RIG_ERROR, RIG_ERROR_TIMEOUT, "QEMU %s did not create %s", vm->name, path);
    return FALSE;
}

RigVm *rig_vm_start(const RigVmConfig *config, GError **error)
{
    const char *iso = config->iso ? config->iso : rig_default_iso(error);
    const char *bios = config->kernel ? "" : config->bios ? config->bios : hlt_bios(error);
    const char *disk = config->disk ? config->disk : rig_default_disk(error);
    if (!iso || !bios || !disk)
        return NULL;
    guint n_disks = config->n_disks ? config->n_disks : 1;

    g_autoptr(RigVm) vm = g_new0(RigVm, 1);
    vm->name = g_strdup_printf("%s%u", config->name ? config->name : "vm", ++vm_counter);
    vm->dir = g_build_filename(rig_tmpdir(), vm->name, NULL);
    g_mkdir_with_parents(vm->dir, 0700);
    vm->qmp_path = g_build_filename(vm->dir, "qmp", NULL);
    vm->sidecar_qmp_path = g_build_filename(vm->dir, "qmp-sidecar", NULL);
    vm->qtest_path = g_build_filename(vm->dir, "qtest", NULL);
    vm->log_path = g_build_filename(vm->dir, "log", NULL);
    vm->pid_path = g_build_filename(vm->dir, "pid", NULL);

    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    if (!qemu_command(config->qemu, argv, error))
        return NULL;
    const char *fixed[] = {"-nodefaults",
                           "-display",
                           "none",
                           "-monitor",
                           "none",
                           "-device",
                           "piix3-usb-uhci,id=uhci,addr=0x2"};
    for (guint i = 0; i < G_N_ELEMENTS(fixed); i++)
        g_ptr_array_add(argv, g_strdup(fixed[i]));
    g_ptr_array_add(argv, g_strdup("-machine"));
    g_ptr_array_add(argv, g_strdup(config->machine ? config->machine : "pc"));
    g_ptr_array_add(argv, g_strdup("-accel"));
    g_ptr_array_add(argv, g_strdup(config->accel ? config->accel : "tcg"));
    g_ptr_array_add(argv, g_strdup("-m"));
    if (config->kernel) {
        g_ptr_array_add(argv, memory_arg(config->accel, config->memory_mb ? config->memory_mb : 256,
                                         config->exact_memory));
        const char *linux_args[] = {"-kernel", config->kernel, "-initrd",   config->initrd,
                                    "-append", config->append, "-no-reboot"};
        for (guint i = 0; i < G_N_ELEMENTS(linux_args); i++)
            g_ptr_array_add(argv, g_strdup(linux_args[i] ? linux_args[i] : ""));
        g_ptr_array_add(argv, g_strdup("-chardev"));
        g_ptr_array_add(argv, g_strdup_printf("file,id=console,path=%s,append=on",
                                              config->console ? config->console : "/dev/null"));
        g_ptr_array_add(argv, g_strdup("-serial"));
        g_ptr_array_add(argv, g_strdup("chardev:console"));
    } else {
        g_ptr_array_add(argv, memory_arg(config->accel, config->memory_mb ? config->memory_mb : 16,
                                         config->exact_memory));
        const char *qtest_args[] = {"-serial", "none", "-bios", bios};
        for (guint i = 0; i < G_N_ELEMENTS(qtest_args); i++)
            g_ptr_array_add(argv, g_strdup(qtest_args[i]));
    }
    g_ptr_array_add(argv, g_strdup("-qmp"));
    g_ptr_array_add(argv, g_strdup_printf("unix:%s,server=on,wait=off", vm->qmp_path));
    /* A second monitor for the sidecar, as a management stack gives it one of its own. */
    g_ptr_array_add(argv, g_strdup("-chardev"));
    g_ptr_array_add(argv, g_strdup_printf("socket,id=sidecar,path=%s,server=on,wait=off",
                                          vm->sidecar_qmp_path));
    g_ptr_array_add(argv, g_strdup("-mon"));
    g_ptr_array_add(argv, g_strdup("chardev=sidecar,mode=control"));
    g_ptr_array_add(argv, g_strdup("-pidfile"));
    g_ptr_array_add(argv, g_strdup(vm->pid_path));
    if (!config->kernel) {
        g_ptr_array_add(argv, g_strdup("-qtest"));
        g_ptr_array_add(argv, g_strdup_printf("unix:%s,server=on,wait=off", vm->qtest_path));
    }
    const char *bus = add_controller(argv, config->controller);
    for (guint i = 0; i < n_disks; i++)
        add_storage(argv, config, bus, i, iso, disk);
    for (guint i = 0; config->extra_args && config->extra_args[i]; i++) {
        const char *arg = config->extra_args[i];
        const char *at = strstr(arg, "%s");
        g_ptr_array_add(argv, at ? g_strdup_printf("%.*s%s%s", (int)(at - arg), arg, iso, at + 2)
                                 : g_strdup(arg));
    }
    if (config->incoming) {
        g_ptr_array_add(argv, g_strdup("-incoming"));
        g_ptr_array_add(argv, g_strdup("defer"));
    }
    g_ptr_array_add(argv, NULL);
    vm->argv = g_strdupv((char **)argv->pdata);

    int log_fd = open(vm->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_SETUP, "%s: %s", vm->log_path, g_strerror(errno));
        return NULL;
    }
    gboolean spawned = g_spawn_async_with_pipes_and_fds(
        NULL, (const char *const *)argv->pdata, NULL, G_SPAWN_DO_NOT_REAP_CHILD, child_setup, NULL,
        -1, log_fd, log_fd, NULL, NULL, 0, &vm->pid, NULL, NULL, NULL, error);
    close(log_fd);
    if (!spawned)
        return NULL;
    if (!wait_for_socket(vm, vm->qmp_path, error) ||
        (!config->kernel && !wait_for_socket(vm, vm->qtest_path, error)) ||
        !wait_for_socket(vm, vm->sidecar_qmp_path, error))
        return NULL;
    vm->qmp = qmp_client_connect(vm->qmp_path, 10000, error);
    if (!vm->qmp)
        return NULL;
    return g_steal_pointer(&vm);
}

static void kill_process(RigVm *vm)
{
    if (vm->pid <= 0 || vm->reaped)
        return;
    kill(vm->pid, SIGKILL);
    if (vm->adopted) {
        /* Not our child: wait until it is gone so its sockets can be reused. */
        for (int i = 0; i < 500 && kill(vm->pid, 0) == 0; i++)
            g_usleep(2000);
    } else {
        waitpid(vm->pid, NULL, 0);
    }
    vm->reaped = TRUE;
}

char *rig_vm_prepare_script(RigVm *vm, gboolean incoming, GError **error)
{
    GString *cmd = g_string_new(NULL);
    for (guint i = 0; vm->argv[i]; i++) {
        if (g_str_equal(vm->argv[i], "-incoming") || g_str_equal(vm->argv[i], "-pidfile")) {
            i++; /* the script decides these */
            continue;
        }
        g_autofree char *q = g_shell_quote(vm->argv[i]);
        g_string_append_printf(cmd, "%s ", q);
    }
    g_autofree char *q_pid = g_shell_quote(vm->pid_path);
    g_autofree char *q_log = g_shell_quote(vm->log_path);
    g_autofree char *q_dir = g_shell_quote(vm->dir);
    g_autofree char *script_path = g_build_filename(vm->dir, "prepare.sh", NULL);
    /* Kill whatever QEMU this directory held (it failed its incoming migration, or is the
     * old destination), then start a fresh one in the background: -daemonize returns once
     * the sockets exist. */
    g_autofree char *script = g_strdup_printf(
        "#!/bin/sh\n"
        "cd %s || exit 1\n"
        "old=$(cat pid 2>/dev/null)\n"
        "if [ -n \"$old\" ]; then\n"
        "  kill -9 \"$old\" 2>/dev/null\n"
        "  for i in $(seq 200); do\n" /* gone, or a zombie of the test's */
        "    grep -qs '^State:[[:space:]]*[^Z[:space:]]' /proc/$old/status || break; sleep 0.02\n"
        "  done\n"
        "fi\n"
        "rm -f qmp qmp-sidecar qtest pid\n"
        "exec %s%s -daemonize -pidfile %s 2>>%s\n",
        q_dir, cmd->str, incoming ? "-incoming defer" : "", q_pid, q_log);
    g_string_free(cmd, TRUE);
    if (!g_file_set_contents(script_path, script, -1, error) || g_chmod(script_path, 0700) < 0)
        return NULL;
    return g_steal_pointer(&script_path);
}

gboolean rig_vm_reload(RigVm *vm, GError **error)
{
    /* The previous process, if it was ours, is gone or about to be. */
    if (!vm->adopted && !vm->reaped) {
        kill(vm->pid, SIGKILL);
        waitpid(vm->pid, &vm->wait_status, 0);
    }
    g_autofree char *text = NULL;
    if (!g_file_get_contents(vm->pid_path, &text, NULL, error))
        return FALSE;
    vm->pid = (GPid)g_ascii_strtoll(text, NULL, 10);
    vm->adopted = TRUE;
    vm->reaped = FALSE;
    if (vm->qmp) {
        qmp_client_close(vm->qmp);
        g_clear_pointer(&vm->qmp, qmp_client_unref);
    }
    vm->qmp = qmp_client_connect(vm->qmp_path, 10000, error);
    return vm->qmp != NULL;
}

void rig_vm_free(RigVm *vm)
{
    if (!vm)
        return;
    if (vm->qmp) {
        qmp_client_close(vm->qmp);
        qmp_client_unref(vm->qmp);
    }
    kill_process(vm);
    /* And whatever else runs from its directory: a QEMU a prepare script started that the
     * test never adopted, the script itself. */
    if (vm->dir)
        sweep(vm->dir);
    if (!g_getenv("SM_KEEP_TMP") && vm->dir)
        remove_tree(vm->dir);
    g_free(vm->name);
    g_free(vm->dir);
    g_free(vm->qmp_path);
    g_free(vm->qtest_path);
    g_free(vm->sidecar_qmp_path);
    g_free(vm->log_path);
    g_free(vm->pid_path);
    g_strfreev(vm->argv);
    g_free(vm);
}

QmpClient *rig_vm_qmp(RigVm *vm)
{
    return vm->qmp;
}
const char *rig_vm_qmp_path(RigVm *vm)
{
    return vm->qmp_path;
}
const char *rig_vm_sidecar_qmp_path(RigVm *vm)
{
    return vm->sidecar_qmp_path;
}
const char *rig_vm_qtest_path(RigVm *vm)
{
    return vm->qtest_path;
}
const char *rig_vm_name(RigVm *vm)
{
    return vm->name;
}
GPid rig_vm_pid(RigVm *vm)
{
    return vm->pid;
}

gboolean rig_vm_alive(RigVm *vm)
{
    if (vm->reaped)
        return FALSE;
    if (vm->adopted)
        return kill(vm->pid, 0) == 0;
    pid_t r = waitpid(vm->pid, &vm->wait_status, WNOHANG);
    if (r == vm->pid) {
        vm->reaped = TRUE;
        return FALSE;
    }
    return TRUE;
}

gboolean rig_vm_wait_exit(RigVm *vm, guint timeout_ms, int *term_signal, int *exit_status)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    while (rig_vm_alive(vm)) {
        if (g_get_monotonic_time() > deadline)
            return FALSE;
        g_usleep(2000);
    }
    /* A relaunched (daemonized) QEMU is not our child: how it ended is not ours to know, and
     * the status on record belongs to the process it replaced. */
    gboolean known = !vm->adopted;
    if (term_signal)
        *term_signal = !known ? -1 : WIFSIGNALED(vm->wait_status) ? WTERMSIG(vm->wait_status) : 0;
    if (exit_status)
        *exit_status = known && WIFEXITED(vm->wait_status) ? WEXITSTATUS(vm->wait_status) : -1;
    return TRUE;
}

char *rig_vm_stderr(RigVm *vm)
{
    char *text = NULL;
    if (!g_file_get_contents(vm->log_path, &text, NULL, NULL))
        return g_strdup("");
    return text;
}

char *rig_vm_runstate(RigVm *vm, GError **error)
{
    g_autoptr(json_object) ret = qmp_client_execute(vm->qmp, "query-status", NULL, error);
    json_object *status;
    if (!ret)
        return NULL;
    if (!json_object_object_get_ex(ret, "status", &status)) {
        g_set_error(error, RIG_ERROR, RIG_ERROR_PROTOCOL, "query-status without status");
        return NULL;
    }
    return g_strdup(json_object_get_string(status));
}

char *rig_vm_migration_status(RigVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) r = qmp_client_execute(vm->qmp, "query-migrate", NULL, &error);
    g_assert_no_error(error);
    json_object *v;
    return g_strdup(json_object_object_get_ex(r, "status", &v) ? json_object_get_string(v)
                                                               : "none");
}

char *rig_migration_uri(void)
{
    static guint counter;
    return g_strdup_printf("unix:%s/mig%u.sock", rig_tmpdir(), ++counter);
}

char *rig_wait_migration_status(RigVm *vm, const char *const *statuses, guint timeout_ms,
                                GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        g_autoptr(json_object) ret = qmp_client_execute(vm->qmp, "query-migrate", NULL, error);
        if (!ret)
            return NULL;
        json_object *status;
        const char *s =
            json_object_object_get_ex(ret, "status", &status) ? json_object_get_string(status) : "";
        if (g_strv_contains(statuses, s))
            return g_strdup(s);
        if (g_get_monotonic_time() > deadline) {
            g_set_error(error, RIG_ERROR, RIG_ERROR_TIMEOUT,
                        "migration on %s still '%s' after %u ms", vm->name, s, timeout_ms);
            return NULL;
        }
        g_usleep(5000);
    }
}

static gboolean set_capabilities(RigVm *vm, const char *const *caps, GError **error)
{
    if (!caps || !caps[0])
        return TRUE;
    g_autoptr(json_object) args = json_object_new_object();
    json_object *list = json_object_new_array();
    for (guint i = 0; caps[i]; i++) {
        json_object *cap = json_object_new_object();
        json_object_object_add(cap, "capability", json_object_new_string(caps[i]));
        json_object_object_add(cap, "state", json_object_new_boolean(TRUE));
        json_object_array_add(list, cap);
    }
    json_object_object_add(args, "capabilities", list);
    g_autoptr(json_object) ret =
        qmp_client_execute(vm->qmp, "migrate-set-capabilities", args, error);
    return ret != NULL;
}

static gboolean execute_with_uri(RigVm *vm, const char *command, const char *uri, GError **error)
{
    g_autoptr(json_object) args = json_object_new_object();
    json_object_object_add(args, "uri", json_object_new_string(uri));
    g_autoptr(json_object) ret = qmp_client_execute(vm->qmp, command, args, error);
    return ret != NULL;
}

char *rig_migrate(RigVm *src, RigVm *dst, const char *const *caps, GError **error)
{
    g_autofree char *uri = rig_migration_uri();
    if (!set_capabilities(src, caps, error) || !set_capabilities(dst, caps, error) ||
        !execute_with_uri(dst, "migrate-incoming", uri, error) ||
        !execute_with_uri(src, "migrate", uri, error))
        return NULL;
    static const char *const final[] = {"completed", "failed", "cancelled", "pre-switchover", NULL};
    return rig_wait_migration_status(src, final, 60000, error);
}

char *rig_vm_migration_settings(RigVm *vm)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) caps =
        qmp_client_execute(vm->qmp, "query-migrate-capabilities", NULL, &error);
    g_assert_no_error(error);
    g_autoptr(json_object) params =
        qmp_client_execute(vm->qmp, "query-migrate-parameters", NULL, &error);
    g_assert_no_error(error);
    return g_strdup_printf("%s %s", json_object_to_json_string(caps),
                           json_object_to_json_string(params));
}
