/* SPDX-License-Identifier: GPL-2.0-or-later */
/* A scripted, misbehaving QMP peer for libqmp tests: a thread accepting one connection on a
 * unix (or tcp) socket and running a test-supplied script with blocking I/O. */
#pragma once

#include <glib.h>
#include <json-c/json.h>

typedef struct FakeServer FakeServer;

/* One line received from the client. */
typedef struct {
    json_object *obj; /* NULL at EOF */
    gint64 id;        /* -1 if none */
    const char *execute;
    GArray *fds;           /* ints received with SCM_RIGHTS while reading this line */
    gboolean fds_at_start; /* every fd arrived together with the line's first byte */
} FakeMsg;

typedef void (*FakeScript)(FakeServer *fs, gpointer data);

FakeServer *fake_server_new(gboolean tcp, FakeScript script, gpointer data);
const char *fake_server_address(FakeServer *fs);
/* Waits for the script to finish and frees everything. */
void fake_server_free(FakeServer *fs);
/* Main thread -> script synchronisation. */
void fake_server_signal(FakeServer *fs);

/* For scripts (server thread). */
void fs_wait_signal(FakeServer *fs);
gboolean fs_send(FakeServer *fs, const char *text);
gboolean fs_sendf(FakeServer *fs, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
FakeMsg *fs_recv(FakeServer *fs); /* never NULL; msg->obj NULL at EOF */
void fake_msg_free(FakeMsg *msg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(FakeMsg, fake_msg_free)
/* Greeting (QEMU 7.2.22 look-alike) and the qmp_capabilities exchange. */
void fs_handshake(FakeServer *fs);
/* Receives one command and asserts its name; returns its id. */
gint64 fs_expect(FakeServer *fs, const char *execute);
void fs_reply(FakeServer *fs, gint64 id, const char *return_json);
void fs_close(FakeServer *fs);
/* Asserts that the client hung up. */
void fs_expect_eof(FakeServer *fs);
