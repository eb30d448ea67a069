/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Tests of the rig itself: the qtest guest enumerates the usb-storage CD-ROM and its Bulk-Only
 * transactions return exactly what the device and the ISO hold, on both QEMU versions. */
#include "rig.h"

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

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rig/iso", test_iso_has_volume_descriptor);
    for (int q = RIG_QEMU_72; q <= RIG_QEMU_10; q++) {
        g_autofree char *p1 = g_strdup_printf("/rig/%s/enumerate-and-read", rig_qemu_name(q));
        g_autofree char *p2 = g_strdup_printf("/rig/%s/no-data-command", rig_qemu_name(q));
        g_test_add_data_func(p1, GINT_TO_POINTER(q), test_enumerate_and_read);
        g_test_add_data_func(p2, GINT_TO_POINTER(q), test_no_data_command);
    }
    return g_test_run();
}
