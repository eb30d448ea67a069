/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrate: the sidecar CLI. A subcommand dispatcher; each subcommand parses its own
 * options (GOptionContext) in its own file. */
#include <glib.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "sm-config.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Subcommand;

static const Subcommand subcommands[] = {
    {"migrate", sm_cmd_migrate, "Migrate a VM, holding the switchover while a device is busy"},
    {"recover", sm_cmd_recover, "Release a VM left mid-migration by a gate that died"},
    {"status", sm_cmd_status, "Show the migration-relevant state of the VM's USB storage"},
    {"list", sm_cmd_list, "With --daemon: the daemon's VMs, their USB storage and fix state"},
    {"cancel", sm_cmd_cancel, "With --daemon: call a migration off (the VM stays on the source)"},
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: safe-migrate [--daemon SOCKET] SUBCOMMAND [OPTION...]\n\n"
                 "--daemon SOCKET: ask safe-migrated on its control socket instead of\n"
                 "running in-process (migrate --vm NAME, status --vm NAME, recover --vm NAME).\n\n"
                 "Subcommands:\n");
    for (gsize i = 0; i < G_N_ELEMENTS(subcommands); i++) {
        fprintf(out, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
    }
    fprintf(out, "\nRun 'safe-migrate SUBCOMMAND --help' for its options and exit codes\n"
                 "(2 is a usage error everywhere). --version: print the version.\n");
}

int main(int argc, char **argv)
{
    sm_setlocale();
    g_set_prgname("safe-migrate");
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("safe-migrate %s\n", SM_VERSION);
        return SM_EXIT_OK;
    }
    /* The one global option: --daemon SOCKET / --daemon=SOCKET before the subcommand. */
    if (argc >= 2 && g_str_has_prefix(argv[1], "--daemon")) {
        int used = 0;
        if (g_str_has_prefix(argv[1], "--daemon=") && argv[1][9])
            sm_daemon_socket = argv[1] + 9, used = 1;
        else if (g_str_equal(argv[1], "--daemon") && argc >= 3)
            sm_daemon_socket = argv[2], used = 2;
        if (!used) {
            fprintf(stderr, "safe-migrate: --daemon needs a SOCKET\n");
            return SM_EXIT_USAGE;
        }
        argv[used] = argv[0];
        argv += used;
        argc -= used;
    }
    if (argc < 2) {
        usage(stderr);
        return SM_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return SM_EXIT_OK;
    }
    for (gsize i = 0; i < G_N_ELEMENTS(subcommands); i++) {
        if (strcmp(argv[1], subcommands[i].name) == 0) {
            /* The subcommand sees "safe-migrate status" as its program name, whatever path
             * the binary was run by: one message prefix everywhere. */
            g_autofree char *prog = g_strdup_printf("safe-migrate %s", argv[1]);
            g_set_prgname(prog); /* GOption's "Usage: safe-migrate status [OPTION...]" */
            argv[1] = prog;
            return subcommands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "safe-migrate: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return SM_EXIT_USAGE;
}
