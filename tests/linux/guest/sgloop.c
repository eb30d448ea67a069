/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Guest-side workload of the real-Linux suite: issues SG_IO INQUIRY, READ CAPACITY(10) and
 * MODE SENSE(10) (the CD capabilities page of a CD-ROM, every page of a disk) to a device in a
 * loop and checks every answer against the first one. Built
 * static by tests/linux/setup-guest.sh; prints mismatches on stdout (the serial console). */
#include <errno.h>
#include <fcntl.h>
#include <scsi/sg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

typedef struct {
    const char *name;
    unsigned char cdb[10];
    unsigned char cdb_len;
    unsigned char alloc;
    unsigned char first[255];
    int first_len; /* -1 until a good answer was seen */
} Command;

static Command commands[] = {
    {"inquiry", {0x12, 0, 0, 0, 36, 0}, 6, 36, {0}, -1},
    {"read-capacity", {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 10, 8, {0}, -1},
    /* The CD capabilities page (0x2a): fixed for an emulated drive. */
    {"mode-sense", {0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 255, 0}, 10, 255, {0}, -1},
};

static void hex(char *out, const unsigned char *buf, int len)
{
    for (int i = 0; i < len && i < 40; i++)
        sprintf(out + 2 * i, "%02x", buf[i]);
}

/* Returns the byte count transferred, or -1 with `why` filled when the command failed. */
static int issue(int fd, const Command *c, unsigned char *buf, char *why, size_t why_len)
{
    unsigned char sense[32] = {0};
    sg_io_hdr_t io;
    memset(&io, 0, sizeof(io));
    io.interface_id = 'S';
    io.cmdp = (unsigned char *)c->cdb;
    io.cmd_len = c->cdb_len;
    io.dxfer_direction = SG_DXFER_FROM_DEV;
    io.dxferp = buf;
    io.dxfer_len = c->alloc;
    io.sbp = sense;
    io.mx_sb_len = sizeof(sense);
    io.timeout = 30000;
    memset(buf, 0xa5, c->alloc); /* so a short or skipped copy cannot pass for zeros */
    if (ioctl(fd, SG_IO, &io) < 0) {
        snprintf(why, why_len, "ioctl errno=%d (%s)", errno, strerror(errno));
        return -1;
    }
    if (io.status || io.host_status || io.driver_status) {
        snprintf(why, why_len, "status=0x%x host=0x%x driver=0x%x sense=%02x/%02x/%02x", io.status,
                 io.host_status, io.driver_status, sense[2] & 0xf, sense[12], sense[13]);
        return -1;
    }
    return c->alloc - io.resid;
}

static void write_counts(const char *path, unsigned long ok, unsigned long bad)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%lu/%lu\n", ok, bad);
        fclose(f);
    }
}

int main(int argc, char **argv)
{
    const char *dev = argc > 1 ? argv[1] : "/dev/sr0";
    const char *counts = argc > 2 ? argv[2] : "/tmp/sg.count";
    useconds_t pause_us = argc > 3 ? (useconds_t)strtoul(argv[3], NULL, 10) : 0;
    if (strncmp(dev, "/dev/sd", 7) == 0) {
        /* A disk has no CD capabilities page: every page it answers instead (0x3f). */
        commands[2].name = "mode-sense-all";
        commands[2].cdb[2] = 0x3f;
    }
    int fd = open(dev, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        printf("MISMATCH sg open %s: %s\n", dev, strerror(errno));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    unsigned long ok = 0, bad = 0;
    unsigned char buf[255];
    char why[160];
    /* References: the first good answer of each; a unit attention left from power-on may
     * fail the first tries, which are not counted. */
    for (int tries = 0; tries < 50; tries++) {
        int missing = 0;
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
            Command *c = &commands[i];
            if (c->first_len >= 0)
                continue;
            int n = issue(fd, c, buf, why, sizeof(why));
            if (n >= 0) {
                memcpy(c->first, buf, (size_t)n);
                c->first_len = n;
            } else {
                missing++;
            }
        }
        if (!missing)
            break;
        usleep(100000);
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (commands[i].first_len < 0) {
            printf("MISMATCH sg %s never answered\n", commands[i].name);
            return 1;
        }
        char h[81] = "";
        hex(h, commands[i].first, commands[i].first_len);
        printf("SG %s len=%d %s\n", commands[i].name, commands[i].first_len, h);
    }
    for (unsigned long iter = 1;; iter++) {
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
            Command *c = &commands[i];
            int n = issue(fd, c, buf, why, sizeof(why));
            if (n == c->first_len && memcmp(buf, c->first, (size_t)n) == 0) {
                ok++;
                continue;
            }
            bad++;
            if (n >= 0) {
                char h[81] = "";
                hex(h, buf, n);
                snprintf(why, sizeof(why), "len=%d got=%s", n, h);
            }
            /* Every mismatch is reported (they are rare events; a flood is itself a finding,
             * so only cap it). */
            if (bad <= 50)
                printf("MISMATCH sg %s iter=%lu %s\n", c->name, iter, why);
        }
        write_counts(counts, ok, bad);
        if (pause_us)
            usleep(pause_us);
    }
}
