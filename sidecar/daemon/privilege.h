/* SPDX-License-Identifier: GPL-2.0-or-later */
/* safe-migrated: the privilege model in one place (privilege.c): who may use the control
 * socket and what a request may change of a VM's policy. No daemon state. */
#pragma once

#include "gate.h"

#include <sys/types.h>

/* Applies a migrate request's "options" to `p` (a copy of the VM's policy `base`). owner:
 * root or the daemon's user. A refusal is G_IO_ERROR_PERMISSION_DENIED (the same text for
 * every key a member may not set); a bad value an SM_POLICY_ERROR. */
gboolean privilege_apply_options(gboolean owner, const SmPolicy *base, SmPolicy *p,
                                 json_object *options, GError **error);
/* Whether the peer of the unix socket `fd` is in group `gid` (its primary group, or a
 * supplementary group as recorded at connect time). */
gboolean privilege_peer_in_group(int fd, pid_t pid, gid_t primary, gid_t gid);
