/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Subcommands of the safe-migrate CLI: each takes the argv after the subcommand name
 * (argv[0] is "safe-migrate SUBCOMMAND") and returns the process exit code. */
#pragma once

#include "gate.h"      /* exit codes */
#include "sm-config.h" /* SM_CONFIG_DIR, from meson's sysconfdir */

#define SM_DEFAULT_CONFIG_DIR SM_CONFIG_DIR

int sm_cmd_status(int argc, char **argv);
int sm_cmd_migrate(int argc, char **argv);
int sm_cmd_recover(int argc, char **argv);

/* `--daemon SOCKET` (daemon-client.c): the subcommands talk to safe-migrated instead of
 * running the engine in-process. NULL when not given. */
extern const char *sm_daemon_socket;
int sm_cmd_list(int argc, char **argv);
int sm_cmd_cancel(int argc, char **argv);
int sm_daemon_cmd_status(int argc, char **argv);
int sm_daemon_cmd_recover(int argc, char **argv);
/* Asks the daemon to migrate VM with `options` (CLI flag or policy key names -> strings;
 * consumed) and feeds every event to func; returns the migration's exit code. */
int sm_daemon_migrate(const char *vm, json_object *options, SmEventFunc func, gpointer data);

/* The gate's flags, the same in both migrate forms (gate-flags.c): strings, so that "not
 * given" is visible and the policy file's value stays. */
typedef struct {
    char *policy, *config_dir;
    char *max_attempts, *max_hold, *backoff, *max_backoff, *on_unquiesceable;
    gboolean json, quiet;
} SmGateFlags;
extern SmGateFlags sm_gate_flags;
#define SM_GATE_ENTRIES 9
/* The option rows for sm_gate_flags (NULL-terminated); only --on-unquiesceable's help differs
 * between the forms. */
void sm_gate_entries(GOptionEntry entries[SM_GATE_ENTRIES + 1], const char *on_unquiesceable_help);

/* The migrate subcommand's output (cmd-migrate.c), shared by its libvirt form: the progress
 * line on stderr or JSON lines on stdout, one per engine event. */
typedef struct {
    gboolean json, quiet, tty;
    gboolean line_open; /* a progress line without its newline is on screen */
} SmCliOutput;
void sm_cli_print_event(json_object *event, gpointer output); /* an SmEventFunc */
void sm_cli_end_line(SmCliOutput *output);

/* `safe-migrate migrate DOMAIN DESTURI` and `safe-migrate status -c URI DOMAIN`: libvirt
 * domains (cmd-migrate-libvirt.c), selected by positional arguments or -c/--connect. */
gboolean sm_migrate_is_libvirt_form(int argc, char **argv);
const GOptionEntry *sm_migrate_qmp_entries(void); /* the QMP form's own options */
int sm_cmd_migrate_libvirt(int argc, char **argv);
gboolean sm_status_is_libvirt_form(int argc, char **argv);
int sm_cmd_status_libvirt(int argc, char **argv);
