/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The libvirt test rig seen from a test: virsh against host A or B of tests/libvirt/rig.sh,
 * domains of the qtest guest made from the XML templates, and their QEMU processes. */
#include "lv.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>

#include <glib/gstdio.h>
#include <json-c/json.h>

static gboolean process_gone(GPid pid);

const char *lv_rig_dir(char **why)
{
    const char *dir = g_getenv("SM_LV_RIG");
    if (!dir || !*dir) {
        *why = g_strdup("SM_LV_RIG is not set (run through tests/libvirt/run.sh)");
        return NULL;
    }
    for (LvHost h = LV_A; h <= LV_B; h++) {
        g_autofree char *sock = g_strdup_printf("%s/%s/run/libvirt-sock", dir, lv_host_name(h));
        if (!g_file_test(sock, G_FILE_TEST_EXISTS)) {
            *why = g_strdup_printf("libvirt host %s is not up (%s)", lv_host_name(h), sock);
            return NULL;
        }
    }
    return dir;
}

static const char *rig_dir(void)
{
    g_autofree char *why = NULL;
    const char *dir = lv_rig_dir(&why);
    if (!dir)
        g_error("%s", why);
    return dir;
}

const char *lv_host_name(LvHost host)
{
    return host == LV_A ? "A" : "B";
}

char *lv_uri(LvHost host)
{
    return g_strdup_printf("qemu:///system?socket=%s/%s/run/libvirt-sock", rig_dir(),
                           lv_host_name(host));
}

static int run_virsh(LvHost host, char **out, char **err, GPtrArray *args)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    /* A libvirt call that hangs (say, on a monitor that never greets) fails the test in
     * bounded time instead of holding it until meson's timeout. */
    const char *bounded[] = {"timeout", "--kill-after=5", "240", "virsh"};
    for (guint i = 0; i < G_N_ELEMENTS(bounded); i++)
        g_ptr_array_add(argv, g_strdup(bounded[i]));
    g_ptr_array_add(argv, g_strdup("-c"));
    g_ptr_array_add(argv, lv_uri(host));
    for (guint i = 0; i < args->len; i++)
        g_ptr_array_add(argv, g_strdup(args->pdata[i]));
    g_ptr_array_add(argv, NULL);
    g_autoptr(GError) error = NULL;
    int status = 0;
    g_autofree char *o = NULL, *e = NULL;
    if (!g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &o, &e,
                      &status, &error)) {
        g_test_message("virsh: %s", error->message);
        return -1;
    }
    if (out)
        *out = g_steal_pointer(&o);
    if (err)
        *err = g_steal_pointer(&e);
    g_autoptr(GError) exit_error = NULL;
    if (g_spawn_check_wait_status(status, &exit_error))
        return 0;
    return exit_error->domain == G_SPAWN_EXIT_ERROR ? exit_error->code : -1;
}

int lv_virsh(LvHost host, char **out, char **err, const char *arg, ...)
{
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a; a = va_arg(ap, const char *))
        g_ptr_array_add(args, (gpointer)a);
    va_end(ap);
    return run_virsh(host, out, err, args);
}

/* 64 KiB of HLT, as the rig's own VMs boot: the CPU halts at the reset vector and the qtest
 * side is the only guest software touching the hardware. */
static const char *hlt_bios(void)
{
    static char *path;
    if (!path) {
        g_autofree char *bytes = g_malloc(65536);
        memset(bytes, 0xf4, 65536);
        path = g_build_filename(rig_tmpdir(), "lv-hlt.bin", NULL);
        g_autoptr(GError) error = NULL;
        g_assert_true(g_file_set_contents(path, bytes, 65536, &error));
    }
    return path;
}

/* QEMU 10 as <emulator>: libvirt runs the binary with a clean environment, so the data
 * directory goes on the command line through a wrapper script. QEMU 10 also loads modules from
 * the system's module directory (QEMU 7.2's) when its own lacks one, and aborts on them as soon
 * as libvirt's capability probe lists the QOM types: the wrapper shows it only its own modules,
 * in a mount namespace of its own. */
static const char *qemu10_wrapper(void)
{
    static char *path;
    if (!path) {
        const char *bin = g_getenv("SM_QEMU10"), *data = g_getenv("SM_QEMU10_DATADIR");
        g_assert_nonnull(bin);
        g_assert_nonnull(data);
        g_autofree char *prefix = g_path_get_dirname(data); /* PREFIX/usr/share */
        g_autofree char *rel = g_build_filename(prefix, "..", "lib/x86_64-linux-gnu/qemu", NULL);
        g_autofree char *modules = g_canonicalize_filename(rel, NULL);
        g_autofree char *script =
            g_strdup_printf("#!/bin/sh\nexec unshare --mount --propagation private sh -c "
                            "'mount --bind \"$0\" /usr/lib/x86_64-linux-gnu/qemu && exec \"$@\"' "
                            "'%s' '%s' -L '%s' \"$@\"\n",
                            modules, bin, data);
        path = g_build_filename(rig_tmpdir(), "lv-qemu10", NULL);
        g_autoptr(GError) error = NULL;
        g_assert_true(g_file_set_contents(path, script, -1, &error));
        g_assert_cmpint(g_chmod(path, 0755), ==, 0);
    }
    return path;
}

/* QEMU 7.2 under TCG for the real guest: 8 KiB more RAM than the domain's, as the rig gives
 * its own VMs (tests/rig/rig-vm.c, memory_arg). 7.2 loses guest stores in migration when a RAM
 * block is a multiple of 256 KiB (its fast dirty sync leaves TCG's TLB stale; fixed in 9.0),
 * and libvirt rounds <memory> to whole MiB, so the wrapper rewrites the size libvirt passes,
 * in -m and in the main RAM's memory backend alike. Both hosts run it, so the sizes agree. */
static char *qemu72_tcg_wrapper(guint mb)
{
    guint64 bytes = (guint64)mb << 20;
    g_autofree char *script = g_strdup_printf(
        "#!/bin/sh\n"
        "n=$# prev=\n"
        "while [ \"$n\" -gt 0 ]; do\n"
        "  a=$1; shift; n=$((n - 1))\n"
        "  case $prev:$a in\n"
        "    -m:%u | -m:size=%uk) a=%uk ;;\n"
        "    *'\"pc.ram\"'*) a=$(printf '%%s' \"$a\" | sed 's/\"size\":%" G_GUINT64_FORMAT
        "\\b/\"size\":%" G_GUINT64_FORMAT "/') ;;\n"
        "  esac\n"
        "  set -- \"$@\" \"$a\"; prev=$a\n"
        "done\n"
        "exec '%s' \"$@\"\n",
        mb, mb * 1024, mb * 1024 + 8, bytes, bytes + 8192, g_getenv("SM_QEMU72"));
    /* Rewritten whole per domain (atomically: a QEMU being started keeps the old file). */
    char *path = g_strdup_printf("%s/lv-qemu72-tcg-%u", rig_tmpdir(), mb);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(path, script, -1, &error));
    g_assert_cmpint(g_chmod(path, 0755), ==, 0);
    return path;
}

char *lv_domain_xml(const LvDomainConfig *c)
{
    g_autoptr(GError) error = NULL;
    const char *templates[] = {"domain-usb-cdrom.xml", "domain-usb-bot.xml", "domain-linux.xml"};
    g_autofree char *path =
        g_build_filename(g_getenv("SM_SOURCE_ROOT"), "tests", "libvirt", templates[c->form], NULL);
    g_autofree char *text = NULL;
    g_assert_true(g_file_get_contents(path, &text, NULL, &error));
    g_assert_no_error(error);
    const char *iso = c->iso ? c->iso : rig_default_iso(&error);
    g_assert_no_error(error);
    guint mb = c->memory_mb ? c->memory_mb : 32;
    g_autofree char *tcg_wrapper = NULL;
    const char *emulator = c->qemu == RIG_QEMU_10 ? qemu10_wrapper()
                           : c->form != LV_FORM_LINUX || g_strcmp0(c->type, "kvm") == 0
                               ? g_getenv("SM_QEMU72")
                               : (tcg_wrapper = qemu72_tcg_wrapper(mb));
    g_autofree char *memory = g_strdup_printf("%u", mb);
    const char *linux_only = "";
    const char *subst[][2] = {
        {"@NAME@", c->name},
        {"@MEMORY@", memory},
        {"@EMULATOR@", emulator},
        {"@ISO@", iso},
        {"@BIOS@", c->form == LV_FORM_LINUX ? linux_only : hlt_bios()},
        {"@TYPE@", c->type ? c->type : "qemu"},
        {"@KERNEL@", c->kernel ? c->kernel : linux_only},
        {"@INITRD@", c->initrd ? c->initrd : linux_only},
        {"@CMDLINE@", c->cmdline ? c->cmdline : linux_only},
        {"@CONSOLE@", c->console ? c->console : "/dev/null"},
    };
    GString *xml = g_string_new(text);
    for (guint i = 0; i < G_N_ELEMENTS(subst); i++)
        g_string_replace(xml, subst[i][0], subst[i][1], 0);
    return g_string_free(xml, FALSE);
}

void lv_domain_create(LvHost host, const LvDomainConfig *config)
{
    g_autofree char *xml = lv_domain_xml(config);
    g_autofree char *file = g_strdup_printf("%s/lv-%s.xml", rig_tmpdir(), config->name);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(file, xml, -1, &error));
    g_autofree char *err = NULL;
    int rc = lv_virsh(host, NULL, &err, "create", file, NULL);
    if (rc != 0)
        g_error("virsh create %s on %s: %s", config->name, lv_host_name(host), err);
}

void lv_domain_destroy(LvHost host, const char *name)
{
    if (lv_domain_running(host, name))
        lv_virsh(host, NULL, NULL, "destroy", name, NULL);
}

/* Logs any answer but "running" and "no such domain", so that a failed assertion on it
 * shows whether the domain was paused, crashed or virsh itself failed. */
gboolean lv_domain_running(LvHost host, const char *name)
{
    g_autofree char *out = NULL, *err = NULL;
    int rc = lv_virsh(host, &out, &err, "domstate", "--reason", name, NULL);
    gboolean running = rc == 0 && g_str_has_prefix(g_strstrip(out), "running");
    if (!running && !(err && strstr(err, "failed to get domain")))
        g_test_message("domstate %s on %s: exit %d, %s %s", name, lv_host_name(host), rc,
                       out ? out : "", err ? g_strstrip(err) : "");
    return running;
}

char *lv_domain_dir(LvHost host, const char *name)
{
    g_autofree char *lib = g_strdup_printf("%s/%s/lib/qemu", rig_dir(), lv_host_name(host));
    g_autofree char *suffix = g_strdup_printf("-%s", name);
    g_autoptr(GDir) dir = g_dir_open(lib, 0, NULL);
    const char *entry;
    while (dir && (entry = g_dir_read_name(dir)))
        if (g_str_has_prefix(entry, "domain-") && g_str_has_suffix(entry, suffix))
            return g_build_filename(lib, entry, NULL);
    return NULL;
}

gboolean lv_process_stopped(GPid pid)
{
    return rig_process_state(pid) == 'T';
}

char *lv_qtest_path(LvHost host, const char *name)
{
    return g_strdup_printf("%s/%s/lib/qtest/%s.sock", rig_dir(), lv_host_name(host), name);
}

GPid lv_qemu_pid(LvHost host, const char *name)
{
    g_autofree char *path =
        g_strdup_printf("%s/%s/run/qemu/%s.pid", rig_dir(), lv_host_name(host), name);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return 0;
    gint64 pid = g_ascii_strtoll(text, NULL, 10);
    if (pid <= 0 || process_gone((GPid)pid))
        return 0;
    return (GPid)pid;
}

static gboolean process_gone(GPid pid)
{
    char state = rig_process_state(pid);
    return state == 0 || state == 'Z';
}

gboolean lv_wait_gone(GPid pid, guint timeout_ms)
{
    for (guint waited = 0; waited < timeout_ms; waited += 20) {
        if (process_gone(pid))
            return TRUE;
        g_usleep(20000);
    }
    return FALSE;
}

/* Whether the NUL-separated argument list has an argument containing "safe-migrate" and one
 * equal to `name`. */
static gboolean filter_args(const char *args, gsize len, const char *name)
{
    gboolean tool = FALSE, domain = FALSE;
    for (gsize off = 0; off < len; off += strlen(args + off) + 1) {
        tool = tool || strstr(args + off, "safe-migrate") != NULL;
        domain = domain || g_str_equal(args + off, name);
    }
    return tool && domain;
}

GPid lv_filter_pid(LvHost host, const char *name)
{
    g_autofree char *ns_file = g_strdup_printf("%s/%s/mntns", rig_dir(), lv_host_name(host));
    g_autofree char *ns = NULL;
    if (!g_file_get_contents(ns_file, &ns, NULL, NULL))
        return 0;
    g_strstrip(ns);
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *entry;
    while (proc && (entry = g_dir_read_name(proc))) {
        if (!g_ascii_isdigit(entry[0]))
            continue;
        g_autofree char *ns_link = g_strdup_printf("/proc/%s/ns/mnt", entry);
        g_autofree char *their_ns = g_file_read_link(ns_link, NULL);
        if (!their_ns || !g_str_equal(their_ns, ns))
            continue;
        g_autofree char *cmdline_path = g_strdup_printf("/proc/%s/cmdline", entry);
        g_autofree char *args = NULL;
        gsize len = 0;
        if (g_file_get_contents(cmdline_path, &args, &len, NULL) && filter_args(args, len, name))
            return (GPid)g_ascii_strtoll(entry, NULL, 10);
    }
    return 0;
}

GPid lv_wait_filter(LvHost host, const char *name, GPid other, guint timeout_ms)
{
    for (guint waited = 0;; waited += 20) {
        GPid pid = lv_filter_pid(host, name);
        if ((pid && pid != other) || waited >= timeout_ms)
            return pid != other ? pid : 0;
        g_usleep(20000);
    }
}

char *lv_query_status(LvHost host, const char *name)
{
    g_autofree char *out = NULL, *err = NULL;
    int rc = lv_virsh(host, &out, &err, "qemu-monitor-command", name,
                      "{\"execute\":\"query-status\"}", NULL);
    if (rc != 0) {
        g_test_message("query-status of %s on %s: %s", name, lv_host_name(host), err);
        return NULL;
    }
    g_autoptr(GMatchInfo) match = NULL;
    g_autoptr(GRegex) re = g_regex_new("\"status\": *\"([a-z-]+)\"", 0, 0, NULL);
    return g_regex_match(re, out, 0, &match) ? g_match_info_fetch(match, 1) : NULL;
}

/* A log of the domain in the host's /var/log/libvirt/qemu (NAME.SUFFIX), or "". */
static char *domain_log(LvHost host, const char *name, const char *suffix)
{
    g_autofree char *path =
        g_strdup_printf("%s/%s/log/qemu/%s.%s", rig_dir(), lv_host_name(host), name, suffix);
    char *text = NULL;
    return g_file_get_contents(path, &text, NULL, NULL) ? text : g_strdup("");
}

char *lv_qemu_log(LvHost host, const char *name)
{
    return domain_log(host, name, "log");
}

char *lv_filter_log(LvHost host, const char *name)
{
    return domain_log(host, name, "safe-migrate.log");
}

static GPtrArray *migrate_argv(LvHost from, const char *name, const char *const *extra)
{
    GPtrArray *args = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(args, g_strdup("migrate"));
    g_ptr_array_add(args, g_strdup("--live"));
    for (guint i = 0; extra && extra[i]; i++)
        g_ptr_array_add(args, g_strdup(extra[i]));
    /* Loopback on the command line: qemu.conf refuses 127.0.0.1 as migration_address. The
     * port comes from the destination's migration port range. */
    const char *tail[] = {"--migrateuri", "tcp://127.0.0.1", "--listen-address", "127.0.0.1", name};
    for (guint i = 0; i < G_N_ELEMENTS(tail); i++)
        g_ptr_array_add(args, g_strdup(tail[i]));
    /* qemu+unix: what --p2p needs to pass libvirt's same-host check; virsh takes it too. */
    g_autofree char *dest = lv_uri(from == LV_A ? LV_B : LV_A);
    g_ptr_array_add(args, g_strconcat("qemu+unix", dest + strlen("qemu"), NULL));
    return args;
}

int lv_migrate(LvHost from, const char *name, const char *const *extra, char **err)
{
    g_autoptr(GPtrArray) args = migrate_argv(from, name, extra);
    return run_virsh(from, NULL, err, args);
}

GSubprocess *lv_migrate_start(LvHost from, const char *name, const char *const *extra)
{
    g_autoptr(GPtrArray) args = migrate_argv(from, name, extra);
    g_ptr_array_insert(args, 0, lv_uri(from));
    g_ptr_array_insert(args, 0, g_strdup("-c"));
    const char *bounded[] = {"timeout", "--kill-after=5", "240", "virsh"};
    for (guint i = G_N_ELEMENTS(bounded); i > 0; i--)
        g_ptr_array_insert(args, 0, g_strdup(bounded[i - 1]));
    g_ptr_array_add(args, NULL);
    g_autoptr(GError) error = NULL;
    GSubprocess *p = g_subprocess_newv(
        (const char *const *)args->pdata,
        G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
    g_assert_no_error(error);
    return p;
}

int lv_migrate_finish(GSubprocess *p, char **err)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *e = NULL;
    g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, NULL, &e, &error));
    g_assert_no_error(error);
    if (err)
        *err = g_steal_pointer(&e);
    return g_subprocess_get_if_exited(p) ? g_subprocess_get_exit_status(p) : -1;
}

void lv_guest_answer(RigGuest *guest, RigCommand cmd, guint8 *out, gsize len)
{
    g_autoptr(GError) error = NULL;
    gsize got = 0;
    guint8 status = 0xff;
    g_assert_true(rig_guest_transact(guest, 0, &cmd, out, &got, &status, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(status, ==, 0);
    g_assert_cmpuint(got, ==, len);
}

void lv_guest_settle(RigGuest *guest, RigCommand cmd, guint8 *out, gsize len)
{
    g_autofree guint8 *prev = g_malloc(len);
    lv_guest_answer(guest, cmd, prev, len);
    for (int i = 0; i < 5; i++) {
        lv_guest_answer(guest, cmd, out, len);
        if (memcmp(prev, out, len) == 0)
            return;
        memcpy(prev, out, len);
    }
    g_error("no steady answer to opcode 0x%02x", cmd.cdb[0]);
}

RigGuest *lv_guest_new(LvHost host, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = lv_qtest_path(host, name);
    RigGuest *guest = rig_guest_new_at(path, name, &error);
    g_assert_no_error(error);
    /* As a guest does after power-on: TEST UNIT READY until the unit attention is gone. */
    RigCommand tur = rig_cmd_test_unit_ready();
    for (int i = 0; i < 2; i++)
        g_assert_true(rig_guest_transact(guest, 0, &tur, NULL, NULL, NULL, &error));
    g_assert_no_error(error);
    return guest;
}

gboolean lv_skip_without_gate(void)
{
    g_autofree char *why = NULL;
    if (!lv_rig_dir(&why)) {
        g_test_skip(why);
        return TRUE;
    }
    if (!g_getenv("SM_LV_HOOKS")) {
        g_test_skip("no safe-migrate hook in the rig (SM_LV_HOOKS unset)");
        return TRUE;
    }
    return FALSE;
}

char *lv_qmp_return(LvHost host, const char *name, const char *command)
{
    g_autofree char *cmd = g_strdup_printf("{\"execute\":\"%s\"}", command);
    g_autofree char *out = NULL;
    g_assert_cmpint(lv_virsh(host, &out, NULL, "qemu-monitor-command", name, cmd, NULL), ==, 0);
    json_object *reply = json_tokener_parse(out);
    json_object *ret;
    g_assert_true(json_object_object_get_ex(reply, "return", &ret));
    char *text = g_strdup(json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN));
    json_object_put(reply);
    return text;
}

char *lv_migration_settings(LvHost host, const char *name, gboolean with_fdsets)
{
    static const char *const queries[] = {"query-migrate-parameters", "query-migrate-capabilities",
                                          "query-fdsets"};
    g_autoptr(GString) all = g_string_new(NULL);
    for (guint i = 0; i < G_N_ELEMENTS(queries) - !with_fdsets; i++) {
        g_autofree char *ret = lv_qmp_return(host, name, queries[i]);
        g_string_append_printf(all, "%s %s\n", queries[i], ret);
    }
    return g_string_free(g_steal_pointer(&all), FALSE);
}

guint lv_probe_fds(LvHost host, const char *name)
{
    g_autofree char *sets = lv_qmp_return(host, name, "query-fdsets");
    guint n = 0;
    for (const char *p = sets; (p = strstr(p, "\"safe-migrate probe\"")); p++)
        n++;
    return n;
}

gboolean lv_wait_job_transferring(const char *name, GSubprocess *migration)
{
    static const char key[] = "Memory processed:";
    for (int i = 0; i < 600 && (!migration || g_subprocess_get_identifier(migration)); i++) {
        g_autofree char *out = NULL;
        const char *line =
            lv_virsh(LV_A, &out, NULL, "domjobinfo", name, NULL) == 0 ? strstr(out, key) : NULL;
        if (line && g_ascii_strtod(line + strlen(key), NULL) > 0)
            return TRUE;
        g_usleep(50000);
    }
    return FALSE;
}
