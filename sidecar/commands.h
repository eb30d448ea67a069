/* Subcommands of the safe-migrate CLI: each takes the argv after the subcommand name
 * (argv[0] is "safe-migrate SUBCOMMAND") and returns the process exit code. */
#pragma once

/* Exit codes shared by all subcommands. */
enum {
    SM_EXIT_OK = 0,
    SM_EXIT_FAILURE = 1,     /* the command ran but failed */
    SM_EXIT_USAGE = 2,       /* bad command line */
    SM_EXIT_UNREACHABLE = 3, /* the VM (its QMP socket) cannot be reached */
};

int sm_cmd_status(int argc, char **argv);
