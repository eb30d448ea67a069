/* Subcommands of the safe-migrate CLI: each takes the argv after the subcommand name
 * (argv[0] is "safe-migrate SUBCOMMAND") and returns the process exit code. */
#pragma once

#include "sidecar.h" /* exit codes */

#define SM_DEFAULT_CONFIG_DIR "/etc/safe-migrate"

int sm_cmd_status(int argc, char **argv);
int sm_cmd_migrate(int argc, char **argv);
int sm_cmd_recover(int argc, char **argv);
