/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The least any relay in the filter's place can cost: poll fds 3 (libvirt's end) and 4
 * (QEMU's), read, write, no parsing, no main loop. `libvirt-relay --filter` this, with
 * `--compare` the real filter, and the difference between the two is what the filter's
 * own work adds; what the floor itself adds is the two extra socket hops and wakeups.
 * Not a filter: it ignores its arguments and passes no fds. */
#include <poll.h>
#include <unistd.h>

int main(void)
{
    static char buf[65536];
    struct pollfd p[2] = {{.fd = 3, .events = POLLIN}, {.fd = 4, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0)
            return 1;
        for (int i = 0; i < 2; i++) {
            if (!p[i].revents)
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n <= 0)
                return 0; /* one side closed: so does the filter */
            for (ssize_t done = 0; done < n;) {
                ssize_t w = write(p[1 - i].fd, buf + done, (size_t)(n - done));
                if (w <= 0)
                    return 1;
                done += w;
            }
        }
    }
}
