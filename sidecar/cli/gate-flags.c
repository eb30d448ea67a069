/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The gate's flags, the same in both forms of `safe-migrate migrate` (the QMP form in
 * cmd-migrate.c, the libvirt form in cmd-migrate-libvirt.c): written once here. */
#include "commands.h"

SmGateFlags sm_gate_flags;

static const GOptionEntry gate_entries[SM_GATE_ENTRIES + 1] = {
    {"policy", 0, 0, G_OPTION_ARG_FILENAME, &sm_gate_flags.policy, "Policy file", "FILE"},
    {"config-dir", 0, 0, G_OPTION_ARG_FILENAME, &sm_gate_flags.config_dir,
     "Configuration directory (default " SM_DEFAULT_CONFIG_DIR ")", "DIR"},
    {"max-attempts", 0, 0, G_OPTION_ARG_STRING, &sm_gate_flags.max_attempts, "Attempts in all",
     "N"},
    {"max-hold", 0, 0, G_OPTION_ARG_STRING, &sm_gate_flags.max_hold, "Hold budget (e.g. 30s)",
     "DURATION"},
    {"backoff", 0, 0, G_OPTION_ARG_STRING, &sm_gate_flags.backoff, "First wait between attempts",
     "DURATION"},
    {"max-backoff", 0, 0, G_OPTION_ARG_STRING, &sm_gate_flags.max_backoff,
     "Longest wait between attempts", "DURATION"},
    {"on-unquiesceable", 0, 0, G_OPTION_ARG_STRING, &sm_gate_flags.on_unquiesceable,
     NULL /* the form's */, "POLICY"},
    {"json", 0, 0, G_OPTION_ARG_NONE, &sm_gate_flags.json, "JSON lines on stdout, one per event",
     NULL},
    {"quiet", 'q', 0, G_OPTION_ARG_NONE, &sm_gate_flags.quiet, "Only errors", NULL},
    G_OPTION_ENTRY_NULL,
};

void sm_gate_entries(GOptionEntry entries[SM_GATE_ENTRIES + 1], const char *on_unquiesceable_help)
{
    for (guint i = 0; i <= SM_GATE_ENTRIES; i++) {
        entries[i] = gate_entries[i];
        if (g_strcmp0(entries[i].long_name, "on-unquiesceable") == 0)
            entries[i].description = on_unquiesceable_help;
    }
}
