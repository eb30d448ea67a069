/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrate-libvirt-hook: libvirt's qemu hook (linked as /etc/libvirt/hooks/qemu.d/
 * safe-migrate). At `start begin` of a domain with a USB disk or CD-ROM, libvirt listens on
 * the domain's monitor.sock, QEMU holds that listening fd, and libvirt has not connected yet:
 * the hook renames the socket aside (QEMU's fd is unaffected), listens at the original path
 * and starts the holder, which puts the filter between libvirt and QEMU. Every other domain
 * and operation returns at once.
 *   safe-migrate-libvirt-hook [--config-dir DIR] [--libvirt-dir DIR] NAME OP SUBOP EXTRA */
#define G_LOG_DOMAIN "safe-migrate"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sm-config.h" /* SM_CONFIG_DIR */
#include "sm-libvirt.h"
#include "sm-config.h" /* SM_CONFIG_DIR, from meson's sysconfdir */

#define MAX_XML (16 * 1024 * 1024)
#define READY_TIMEOUT_MS 5000

typedef struct {
    int id;
    gboolean in_name, in_disk, usb_disk;
    GString *name;
    GSList *stack; /* element names, innermost first */
} DomainInfo;

static void on_start(GMarkupParseContext *ctx, const char *element, const char **names,
                     const char **values, gpointer data, GError **error)
{
    DomainInfo *d = data;
    (void)ctx, (void)error;
    const char *parent = d->stack ? d->stack->data : NULL;
    if (g_str_equal(element, "domain") && !parent) {
        for (guint i = 0; names[i]; i++)
            if (g_str_equal(names[i], "id"))
                d->id = atoi(values[i]);
    }
    d->in_name = g_str_equal(element, "name") && g_strcmp0(parent, "domain") == 0;
    if (g_str_equal(element, "disk") && g_strcmp0(parent, "devices") == 0)
        d->in_disk = TRUE;
    if (d->in_disk && g_str_equal(element, "target")) {
        for (guint i = 0; names[i]; i++)
            if (g_str_equal(names[i], "bus") && g_str_equal(values[i], "usb"))
                d->usb_disk = TRUE;
    }
    /* USB storage added past libvirt's model (<qemu:commandline> -device usb-bot...). */
    if (g_str_equal(element, "qemu:arg")) {
        for (guint i = 0; names[i]; i++)
            if (g_str_equal(names[i], "value") &&
                (strstr(values[i], "usb-storage") || strstr(values[i], "usb-bot") ||
                 strstr(values[i], "usb-uas")))
                d->usb_disk = TRUE;
    }
    d->stack = g_slist_prepend(d->stack, g_strdup(element));
}

static void on_end(GMarkupParseContext *ctx, const char *element, gpointer data, GError **error)
{
    DomainInfo *d = data;
    (void)ctx, (void)error;
    if (g_str_equal(element, "disk"))
        d->in_disk = FALSE;
    d->in_name = FALSE;
    g_free(d->stack->data);
    d->stack = g_slist_delete_link(d->stack, d->stack);
}

static void on_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer data,
                    GError **error)
{
    DomainInfo *d = data;
    (void)ctx, (void)error;
    if (d->in_name)
        g_string_append_len(d->name, text, (gssize)len);
}

static gboolean read_domain(DomainInfo *d, GError **error)
{
    g_autoptr(GString) xml = g_string_new(NULL);
    char buf[65536];
    ssize_t n;
    while ((n = read(STDIN_FILENO, buf, sizeof buf)) > 0 && xml->len < MAX_XML)
        g_string_append_len(xml, buf, n);
    static const GMarkupParser parser = {on_start, on_end, on_text, NULL, NULL};
    g_autoptr(GMarkupParseContext) ctx = g_markup_parse_context_new(&parser, 0, d, NULL);
    return g_markup_parse_context_parse(ctx, xml->str, (gssize)xml->len, error) &&
           g_markup_parse_context_end_parse(ctx, error);
}

/* ---- Putting the filter on the monitor ------------------------------------------------- */

static int listen_unix(const char *path, mode_t mode)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 8) < 0 ||
        chmod(path, mode) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Double fork: the holder belongs to no one libvirt waits for, keeps none of the hook's
 * pipes open, and runs in the domain's directory. */
static void spawn_holder(const char *dir, const char *log_path, const char *holder,
                         const char *filter, int listen_fd, int ready_fd)
{
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid > 0) {
        waitpid(pid, NULL, 0);
        return;
    }
    setsid();
    if (fork() != 0)
        _exit(0);
    int null = open("/dev/null", O_RDONLY);
    if (chdir(dir) < 0 || null < 0)
        _exit(1);
    int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    /* Out of the way first (either may already be 3 or 4), then into place: dup2 clears
     * close-on-exec on the copies. */
    listen_fd = fcntl(listen_fd, F_DUPFD, 100);
    ready_fd = fcntl(ready_fd, F_DUPFD, 100);
    dup2(null, 0);
    dup2(log >= 0 ? log : null, 1);
    dup2(log >= 0 ? log : null, 2);
    dup2(listen_fd, 3);
    dup2(ready_fd, 4);
    for (int fd = 5; fd < 1024; fd++)
        close(fd);
    execl(holder, "safe-migrate-holder", filter, (char *)NULL);
    _exit(127);
}

static gboolean wait_ready(int fd)
{
    char buf[4] = {0};
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, READY_TIMEOUT_MS) > 0 && read(fd, buf, 3) == 3 && strncmp(buf, "ok", 2) == 0;
}

static gboolean write_args(const char *dir, const char *name, const char *config_dir,
                           GError **error)
{
    g_autoptr(GString) args = g_string_new(NULL);
    const char *argv[] = {"safe-migrate-filter", "--domain", name, "--config-dir", config_dir};
    for (guint i = 0; i < G_N_ELEMENTS(argv); i++)
        g_string_append_len(args, argv[i], (gssize)strlen(argv[i]) + 1);
    g_autofree char *path = g_build_filename(dir, SM_LV_ARGS, NULL);
    return g_file_set_contents(path, args->str, (gssize)args->len, error);
}

/* Renames QEMU's socket aside, listens in its place and starts the holder; undoes all of it
 * when the holder does not come up. */
static gboolean gate_domain(const char *dir, const char *name, const char *config_dir,
                            const char *log_path, GError **error)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", error);
    if (!self)
        return FALSE;
    g_autofree char *bindir = g_path_get_dirname(self);
    g_autofree char *holder = g_build_filename(bindir, "safe-migrate-holder", NULL);
    g_autofree char *filter = g_build_filename(bindir, "safe-migrate-filter", NULL);
    g_autofree char *monitor = g_build_filename(dir, SM_LV_MONITOR, NULL);
    g_autofree char *aside = g_build_filename(dir, SM_LV_QEMU_SOCK, NULL);
    struct stat st;
    if (access(holder, X_OK) != 0 || access(filter, X_OK) != 0) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT, "%s or %s missing", holder, filter);
        return FALSE;
    }
    if (stat(monitor, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT, "no monitor socket %s", monitor);
        return FALSE;
    }
    if (!write_args(dir, name, config_dir, error))
        return FALSE;
    if (rename(monitor, aside) != 0) {
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "rename %s: %s", monitor,
                    g_strerror(errno));
        return FALSE;
    }
    int ready[2] = {-1, -1};
    int lfd = listen_unix(monitor, st.st_mode & 07777);
    gboolean ok = lfd >= 0 && pipe2(ready, O_CLOEXEC) == 0;
    if (ok) {
        spawn_holder(dir, log_path, holder, filter, lfd, ready[1]);
        close(ready[1]);
        ok = wait_ready(ready[0]);
        close(ready[0]);
    }
    if (lfd >= 0)
        close(lfd);
    if (!ok) {
        int saved = errno;
        unlink(monitor);
        if (rename(aside, monitor) != 0)
            g_warning("cannot put %s back: %s", monitor, g_strerror(errno));
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved),
                    "the holder did not start (see %s)", log_path);
    }
    return ok;
}

/* Ungated starts are said where an administrator looks: libvirt's log of the domain. */
static void report(const char *name, const char *log_dir, const char *text)
{
    fprintf(stderr, "safe-migrate: %s\n", text);
    g_autofree char *path = g_strdup_printf("%s/%s.log", log_dir, name);
    FILE *log = strchr(name, '/') ? NULL : fopen(path, "a");
    if (log) {
        g_autoptr(GDateTime) now = g_date_time_new_now_utc();
        g_autofree char *stamp = g_date_time_format(now, "%F %T");
        fprintf(log, "%s: safe-migrate: %s\n", stamp, text);
        fclose(log);
    }
}

int main(int argc, char **argv)
{
    g_autofree char *config_dir = NULL, *lib_dir = NULL, *log_dir = NULL;
    GOptionEntry entries[] = {
        {"config-dir", 0, 0, G_OPTION_ARG_FILENAME, &config_dir, "default " SM_CONFIG_DIR, "DIR"},
        {"libvirt-dir", 0, 0, G_OPTION_ARG_FILENAME, &lib_dir, "default " SM_LV_DEFAULT_LIB_DIR,
         "DIR"},
        {"log-dir", 0, 0, G_OPTION_ARG_FILENAME, &log_dir, "default /var/log/libvirt/qemu", "DIR"},
        G_OPTION_ENTRY_NULL,
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("NAME OP SUBOP EXTRA - libvirt qemu hook");
    g_option_context_add_main_entries(ctx, entries, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_option_context_parse(ctx, &argc, &argv, &error) || argc < 4) {
        fprintf(stderr, "safe-migrate hook: %s\n", error ? error->message : "needs NAME OP SUBOP");
        return 1;
    }
    if (!g_str_equal(argv[2], "start") || !g_str_equal(argv[3], "begin")) {
        char buf[65536]; /* take libvirt's XML off the pipe and say nothing */
        while (read(STDIN_FILENO, buf, sizeof buf) > 0)
            ;
        return 0;
    }
    DomainInfo d = {.id = -1, .name = g_string_new(NULL)};
    if (!read_domain(&d, &error) || !d.usb_disk || d.id < 0) {
        g_string_free(d.name, TRUE);
        g_slist_free_full(d.stack, g_free);
        return 0; /* not ours: pass untouched */
    }
    const char *name = d.name->len ? d.name->str : argv[1];
    SmPolicy policy;
    sm_policy_init(&policy);
    const char *cdir = config_dir ? config_dir : SM_CONFIG_DIR;
    g_autofree char *dir = NULL;
    /* The filter's log outlives the domain's directory (libvirt deletes it at stop). */
    const char *ldir = log_dir ? log_dir : "/var/log/libvirt/qemu";
    g_autofree char *log_path = g_strdup_printf("%s/%s." SM_LV_LOG, ldir, name);
    gboolean ok =
        sm_lv_load_policy(&policy, cdir, name, &error) &&
        (dir = sm_lv_domain_dir(lib_dir ? lib_dir : SM_LV_DEFAULT_LIB_DIR, d.id, &error)) &&
        gate_domain(dir, name, cdir, log_path, &error);
    int code = 0;
    if (!ok) {
        g_autofree char *text = g_strdup_printf(
            "%s: %s; %s", name, error->message,
            policy.require_gate ? "refusing to start it ungated (require-gate=true)"
                                : "the domain starts UNGATED: its migrations are not protected");
        report(name, ldir, text);
        code = policy.require_gate ? 1 : 0;
    }
    sm_policy_clear(&policy);
    g_string_free(d.name, TRUE);
    return code;
}
