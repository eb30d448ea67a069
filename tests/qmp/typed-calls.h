/* SPDX-License-Identifier: GPL-2.0-or-later */
/* One call per typed QMP command the project sends (qmp-commands.h), for the tests that feed
 * the typed layer every reply: test-qmp-commands (a scripted peer) and the fuzz target's typed
 * mode (tests/fuzz/fuzz-qmp.c). Each call returns whether it succeeded and checks what it
 * decoded (a failed check aborts: a test failure, a fuzzer crash). A new command gets its
 * row here, and both tests exercise it. */
#pragma once

#include "qmp-commands.h"

typedef struct {
    const char *execute; /* what goes on the wire */
    json_type type;      /* the reply type the command accepts; json_type_null: any non-null */
    const char *good;    /* a well-formed reply */
    /* fd: a descriptor the call may pass (add-fd, getfd). */
    gboolean (*run)(QmpClient *client, int fd, GError **error);
} QmpTypedCall;

/* In the order of tests/fuzz/gen-corpus.py's typed seeds (append new commands at the end). */
extern const QmpTypedCall qmp_typed_calls[];
extern const guint qmp_n_typed_calls;
