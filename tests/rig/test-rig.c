/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests of the rig itself: the qtest guest enumerates the usb-storage CD-ROM and its Bulk-Only
 * transactions return exactly what the device and the ISO hold, on both QEMU versions; a
 * migration of the rig's VMs carries every store their CPU made (QEMU 7.2 under TCG loses
 * some unless the rig sizes its RAM, memory_arg() in rig-vm.c); and no QEMU a test started outlives
 * it, however the test ends. */
#include "rig.h"

#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_enumerate_and_read(gconstpointer data)
{
    RigQemu qemu = GPOINTER_TO_INT(data);
    g_autoptr(GError) error = NULL;
    g_autoptr(RigVm) vm = rig_vm_start(&(RigVmConfig){.qemu = qemu, .n_disks = 2}, &error);
    g_assert_no_error(error);
    g_autoptr(RigGuest) guest = rig_guest_new(vm, &error);
    g_assert_no_error(error);

    for (guint disk = 0; disk < 2; disk++) {
        guint8 buf[8192];
        gsize len = 0;
        guint8 status = 0xff;

        /* As a guest does: the power-on UNIT ATTENTION answers the first TEST UNIT READY. */
        RigCommand tur = rig_cmd_test_unit_ready();
        g_assert_true(rig_guest_transact(guest, disk, &tur, NULL, NULL, &status, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(status, ==, 1);
        g_assert_true(rig_guest_transact(guest, disk, &tur, NULL, NULL, &status, &error));
        g_assert_cmpuint(status, ==, 0);

        RigCommand inquiry = rig_cmd_inquiry();
        g_assert_true(rig_guest_transact(guest, disk, &inquiry, buf, &len, &status, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(status, ==, 0);
        g_assert_cmpuint(len, ==, 36);
        g_assert_cmphex(buf[0] & 0x1f, ==, 0x05); /* peripheral type: CD/DVD */
        g_assert_cmphex(buf[1] & 0x80, ==, 0x80); /* removable */
        g_assert_cmpmem(buf + 8, 8, "QEMU    ", 8);

        RigCommand capacity = rig_cmd_read_capacity();
        g_assert_true(rig_guest_transact(guest, disk, &capacity, buf, &len, &status, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(len, ==, 8);
        g_assert_cmpuint(status, ==, 0);
        guint8 expected_capacity[8];
        rig_expected_read_capacity(expected_capacity);
        g_assert_cmpmem(buf, 8, expected_capacity, 8);

        /* Sectors 16.. hold the ISO 9660 volume descriptors and past them the data file. */
        for (guint32 lba = 16; lba < 40; lba += 3) {
            RigCommand read = rig_cmd_read10(lba, 3);
            g_assert_true(rig_guest_transact(guest, disk, &read, buf, &len, &status, &error));
            g_assert_no_error(error);
            g_assert_cmpuint(status, ==, 0);
            g_assert_cmpuint(len, ==, 3 * 2048);
            for (guint i = 0; i < 3; i++) {
                guint8 expected[2048];
                g_assert_true(rig_iso_sector(lba + i, expected));
                g_assert_cmpmem(buf + i * 2048, 2048, expected, 2048);
            }
        }
    }
}

static void test_iso_has_volume_descriptor(void)
{
    guint8 sector[2048];
    g_assert_true(rig_iso_sector(16, sector));
    g_assert_cmpmem(sector + 1, 5, "CD001", 5);
}

/* TEST UNIT READY has no data phase: CBW then CSW directly. */
static void test_no_data_command(gconstpointer data)
{
    RigQemu qemu = GPOINTER_TO_INT(data);
    g_autoptr(GError) error = NULL;
    g_autoptr(RigVm) vm = rig_vm_start(&(RigVmConfig){.qemu = qemu}, &error);
    g_assert_no_error(error);
    g_autoptr(RigGuest) guest = rig_guest_new(vm, &error);
    g_assert_no_error(error);
    RigCommand tur = rig_cmd_test_unit_ready();
    guint8 status = 0xff;
    /* The first TUR after power-on may report UNIT ATTENTION (status 1); the second is GOOD. */
    g_assert_true(rig_guest_transact(guest, 0, &tur, NULL, NULL, &status, &error));
    g_assert_no_error(error);
    g_assert_true(rig_guest_transact(guest, 0, &tur, NULL, NULL, &status, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(status, ==, 0);
}

/* ---- No strays ---------------------------------------------------------------------------
 * Each case counts only processes naming its own fresh directory: other tests' QEMUs on the
 * machine are neither counted nor touched. */

static guint count_naming(const char *dir)
{
    g_autoptr(GArray) pids = rig_processes_naming(dir);
    return pids->len;
}

/* A VM whose prepare script ran (a daemonized QEMU replaced it, as dest-prepare does) and
 * that the test never reloaded: the new QEMU is nobody's child and its pid unknown. */
static RigVm *vm_relaunched_behind_the_rig(void)
{
    g_autoptr(GError) error = NULL;
    RigVm *vm = rig_vm_start(&(RigVmConfig){.qemu = RIG_QEMU_72, .name = "stray"}, &error);
    g_assert_no_error(error);
    g_autofree char *script = rig_vm_prepare_script(vm, TRUE, &error);
    g_assert_no_error(error);
    const char *argv[] = {script, NULL};
    int status = -1;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, NULL, NULL,
                               &status, &error));
    g_assert_no_error(error);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    return vm;
}

/* rig_vm_free() ends the relaunched QEMU too. */
static void test_strays_teardown(void)
{
    RigVm *vm = vm_relaunched_behind_the_rig();
    g_autofree char *dir = g_path_get_dirname(rig_vm_qmp_path(vm));
    g_assert_cmpuint(count_naming(dir), ==, 1);
    rig_vm_free(vm);
    g_assert_cmpuint(count_naming(dir), ==, 0);
}

/* The child of the two cases below (this program, run with --strays-child=exit|abort): leaves
 * a rig QEMU and a relaunched one running, and then returns without teardown or aborts. */
static int strays_child(const char *how)
{
    static RigVm *kept[2]; /* still reachable at exit: no leak report under ASan */
    g_autoptr(GError) error = NULL;
    kept[0] = vm_relaunched_behind_the_rig();
    kept[1] = rig_vm_start(&(RigVmConfig){.qemu = RIG_QEMU_72, .name = "kept"}, &error);
    g_assert_no_error(error);
    g_assert_true(rig_vm_alive(kept[1]));
    g_assert_cmpuint(count_naming(rig_tmpdir()), ==, 2);
    if (g_str_equal(how, "abort"))
        g_assert_not_reached(); /* what a failed assertion does: abort() */
    return 0;
}

/* Runs the child with a TMPDIR of its own, where its rig directory is made; returns that
 * TMPDIR, and the child's wait status in *status. */
static char *run_strays_child(const char *how, int *status)
{
    char *parent = g_dir_make_tmp("smstray-XXXXXX", NULL);
    g_assert_nonnull(parent);
    g_autofree char *flag = g_strdup_printf("--strays-child=%s", how);
    const char *argv[] = {"/proc/self/exe", flag, NULL};
    g_auto(GStrv) envp = g_environ_setenv(g_get_environ(), "TMPDIR", parent, TRUE);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, envp, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                               NULL, NULL, status, &error));
    g_assert_no_error(error);
    return parent;
}

/* Nothing names the child's TMPDIR and nothing is left in it (its rig directory is gone). */
static gboolean child_left_nothing(const char *parent)
{
    g_autoptr(GDir) dir = g_dir_open(parent, 0, NULL);
    return count_naming(parent) == 0 && dir && !g_dir_read_name(dir);
}

/* A test process that returns leaving its VMs running: none is left by the time it exited. */
static void test_strays_exit(void)
{
    int status = -1;
    g_autofree char *parent = run_strays_child("exit", &status);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_true(child_left_nothing(parent));
    g_assert_cmpint(g_rmdir(parent), ==, 0);
}

/* A test process that aborts: no exit handler runs, its watchdog ends them. Waited for (a
 * bounded wait, not a timing): the watchdog starts when the process is gone. */
static void test_strays_abort(void)
{
    int status = -1;
    g_autofree char *parent = run_strays_child("abort", &status);
    g_assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    for (int i = 0; i < 1000 && !child_left_nothing(parent); i++)
        g_usleep(10000);
    g_assert_true(child_left_nothing(parent));
    g_assert_cmpint(g_rmdir(parent), ==, 0);
}

/* A forked child of the test that ends with exit() (its exit handlers run) leaves the
 * test's VMs and files alone: only the process that made the directory sweeps it. */
static void test_strays_forked_exit(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(RigVm) vm = rig_vm_start(&(RigVmConfig){.qemu = RIG_QEMU_72}, &error);
    g_assert_no_error(error);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0)
        exit(0);
    int status = -1;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(rig_vm_alive(vm));
    g_assert_true(g_file_test(rig_vm_qmp_path(vm), G_FILE_TEST_EXISTS));
}

/* ---- Does a migration carry every store of a TCG guest? --------------------------------- */

/* A 64 KiB BIOS whose CPU writes a pass counter into the first word of each 4 KiB page of
 * 0x10000..0x9ffff, pass after pass, with interrupts off (16-bit real mode, hand-assembled):
 *   cli; xor ax,ax
 *   outer: inc ax; mov bx,0x1000
 *   inner: mov es,bx; mov [es:0],ax; add bx,0x100; cmp bx,0xa000; jb inner; jmp outer
 * and at the reset vector F000:FFF0, jmp F000:0000. */
#define STORES_BASE 0x10000
#define STORES_SIZE 0x90000
static const char *stores_bios(void)
{
    static char *path;
    if (path)
        return path;
    static const guint8 loop[] = {0xfa, 0x31, 0xc0, 0x40, 0xbb, 0x00, 0x10, 0x8e, 0xc3,
                                  0x26, 0xa3, 0x00, 0x00, 0x81, 0xc3, 0x00, 0x01, 0x81,
                                  0xfb, 0x00, 0xa0, 0x72, 0xf0, 0xeb, 0xea};
    static const guint8 reset[] = {0xea, 0x00, 0x00, 0x00, 0xf0};
    g_autofree guint8 *image = g_malloc(65536);
    memset(image, 0xf4, 65536);
    memcpy(image, loop, sizeof(loop));
    memcpy(image + 0xfff0, reset, sizeof(reset));
    g_autofree char *p = g_build_filename(rig_tmpdir(), "stores.bin", NULL);
    g_autoptr(GError) error = NULL;
    g_assert_true(g_file_set_contents(p, (const char *)image, 65536, &error));
    path = g_steal_pointer(&p);
    return path;
}

/* A command with JSON arguments through the test's monitor, which must succeed. */
static void qmp_must(RigVm *vm, const char *command, const char *args)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) r = qmp_client_execute_json(rig_vm_qmp(vm), command, args, &error);
    g_assert_no_error(error);
    g_assert_nonnull(r);
}

static GBytes *save_stores(RigVm *vm, const char *name)
{
    g_autofree char *file = g_build_filename(rig_tmpdir(), name, NULL);
    g_autofree char *args = g_strdup_printf("{\"val\":%d,\"size\":%d,\"filename\":\"%s\"}",
                                            STORES_BASE, STORES_SIZE, file);
    qmp_must(vm, "pmemsave", args);
    g_autoptr(GError) error = NULL;
    gchar *bytes = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(file, &bytes, &len, &error));
    g_assert_cmpuint(len, ==, STORES_SIZE);
    return g_bytes_new_take(bytes, len);
}

/* Migrates a VM whose CPU keeps storing, then compares the stopped source's RAM with the
 * destination's: the pages that differ are stores the migration lost. */
static guint lost_pages(RigQemu qemu, gboolean exact_memory)
{
    g_autoptr(GError) error = NULL;
    RigVmConfig config = {
        .qemu = qemu, .bios = stores_bios(), .exact_memory = exact_memory, .name = "stores"};
    g_autoptr(RigVm) src = rig_vm_start(&config, &error);
    g_assert_no_error(error);
    /* -S: the destination stays paused when the migration ends, its RAM as it arrived. */
    static const char *const paused[] = {"-S", NULL};
    config.incoming = TRUE;
    config.extra_args = paused;
    g_autoptr(RigVm) dst = rig_vm_start(&config, &error);
    g_assert_no_error(error);
    /* The loss needs dirty-bitmap syncs while the guest runs, after its TLB entries were
     * made writable: 1 MiB/s and 10 ms keep the 576 KiB the loop dirties per round from
     * converging for a second (several syncs), then 2 s of downtime lets it end. */
    g_autofree char *uri = rig_migration_uri();
    g_autofree char *uri_args = g_strdup_printf("{\"uri\":\"%s\"}", uri);
    qmp_must(src, "migrate-set-parameters", "{\"max-bandwidth\":1048576,\"downtime-limit\":10}");
    qmp_must(dst, "migrate-incoming", uri_args);
    qmp_must(src, "migrate", uri_args);
    g_usleep(G_USEC_PER_SEC);
    qmp_must(src, "migrate-set-parameters", "{\"downtime-limit\":2000}");
    static const char *const ends[] = {"completed", "failed", "cancelled", NULL};
    g_autofree char *status = rig_wait_migration_status(src, ends, 60000, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(status, ==, "completed");
    g_autoptr(json_object) info =
        qmp_client_execute(rig_vm_qmp(src), "query-migrate", NULL, &error);
    g_assert_no_error(error);
    json_object *ram = json_object_object_get(info, "ram");
    g_test_message("dirty-sync-count %s",
                   json_object_to_json_string(json_object_object_get(ram, "dirty-sync-count")));
    g_autoptr(GBytes) a = save_stores(src, "stores-src.bin");
    g_autoptr(GBytes) b = save_stores(dst, "stores-dst.bin");
    const guint8 *pa = g_bytes_get_data(a, NULL), *pb = g_bytes_get_data(b, NULL);
    guint lost = 0;
    guint16 first = 0;
    memcpy(&first, pa, 2);
    g_assert_cmpuint(first, >, 1); /* the loop ran */
    for (guint off = 0; off < STORES_SIZE; off += 4096)
        lost += memcmp(pa + off, pb + off, 4096) != 0;
    g_test_message("QEMU %s, -m %s: %u of %u pages differ after the migration", rig_qemu_name(qemu),
                   exact_memory ? "16" : "as the rig gives it", lost, STORES_SIZE / 4096);
    return lost;
}

/* The rig's VMs (and so every guest of the suites) migrate every store, on both QEMUs. */
static void test_tcg_stores(gconstpointer data)
{
    g_assert_cmpuint(lost_pages(GPOINTER_TO_INT(data), FALSE), ==, 0);
}

/* Why the rig sizes RAM 8 KiB off (memory_arg() in rig-vm.c): with 16 MiB exactly, QEMU 7.2 under
 * TCG loses stores. Should a Debian update fix it, this fails and the workaround can go. */
static void test_tcg_stores_lost_72(void)
{
    g_assert_cmpuint(lost_pages(RIG_QEMU_72, TRUE), >, 0);
}

/* And 10.0 (upstream's fix, 9.0) does not, whatever the RAM size. */
static void test_tcg_stores_kept_10(void)
{
    g_assert_cmpuint(lost_pages(RIG_QEMU_10, TRUE), ==, 0);
}

int main(int argc, char **argv)
{
    if (argc == 2 && g_str_has_prefix(argv[1], "--strays-child="))
        return strays_child(argv[1] + strlen("--strays-child="));
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rig/strays/teardown", test_strays_teardown);
    g_test_add_func("/rig/strays/exit", test_strays_exit);
    g_test_add_func("/rig/strays/abort", test_strays_abort);
    g_test_add_func("/rig/strays/forked-exit", test_strays_forked_exit);
    g_test_add_func("/rig/iso", test_iso_has_volume_descriptor);
    g_test_add_func("/rig/tcg-stores/7.2-exact-ram-loses", test_tcg_stores_lost_72);
    g_test_add_func("/rig/tcg-stores/10.0-exact-ram-keeps", test_tcg_stores_kept_10);
    for (int q = RIG_QEMU_72; q <= RIG_QEMU_10; q++) {
        g_autofree char *p1 = g_strdup_printf("/rig/%s/enumerate-and-read", rig_qemu_name(q));
        g_autofree char *p2 = g_strdup_printf("/rig/%s/no-data-command", rig_qemu_name(q));
        g_test_add_data_func(p1, GINT_TO_POINTER(q), test_enumerate_and_read);
        g_test_add_data_func(p2, GINT_TO_POINTER(q), test_no_data_command);
        g_autofree char *p3 = g_strdup_printf("/rig/%s/tcg-stores", rig_qemu_name(q));
        g_test_add_data_func(p3, GINT_TO_POINTER(q), test_tcg_stores);
    }
    return g_test_run();
}
