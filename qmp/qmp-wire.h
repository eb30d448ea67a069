/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp wire messages, for code that stands between a QMP client and QEMU (a relay such as
 * the libvirt filter) rather than being a client: one message classified and its members
 * read with their types checked, and replies and commands encoded as one line each. A
 * member of the wrong type reads as absent, so hostile input never reaches a json-c assert. */
#pragma once

#include "qmp.h"

G_BEGIN_DECLS

typedef enum {
    QMP_MESSAGE_INVALID,  /* not a JSON object, or an object of no known shape */
    QMP_MESSAGE_GREETING, /* {"QMP": {...}} */
    QMP_MESSAGE_EVENT,    /* {"event": "NAME", ...} */
    QMP_MESSAGE_REPLY,    /* {"return": ...} or {"error": {...}}, with or without "id" */
    QMP_MESSAGE_COMMAND,  /* {"execute": "NAME", ...} or "exec-oob" */
} QmpMessageKind;

/* Parses one line of `len` bytes (it need not be NUL-terminated; a trailing CR LF is fine).
 * Returns a new reference to the object and its kind in *kind, or NULL (kind INVALID) for
 * anything that is not one JSON object. */
json_object *qmp_message_parse(const char *line, gsize len, QmpMessageKind *kind);
/* The object's kind (QMP_MESSAGE_INVALID for NULL or a non-object). */
QmpMessageKind qmp_message_kind(json_object *msg);
/* The command's name ("execute" or "exec-oob"), the event's name, or the id when it is a
 * string: borrowed from msg, NULL when absent or not a string. */
const char *qmp_message_command(json_object *msg);
const char *qmp_message_event(json_object *msg);
const char *qmp_message_string_id(json_object *msg);
/* The string `member` of msg's object member `outer` ("data" of an event, "return" of a
 * reply): borrowed, NULL when either is absent or of another type. */
const char *qmp_message_inner_string(json_object *msg, const char *outer, const char *member);
/* The id, whatever its JSON type (borrowed), NULL when absent. */
json_object *qmp_message_id(json_object *msg);
/* Replaces (or, with id NULL, removes) the message's id; `id` is not consumed. */
void qmp_message_set_id(json_object *msg, json_object *id);

/* A relay's cheap look at a raw line, before (or instead of) parsing it: FALSE proves that
 * no JSON string of the line (key or value, whatever the parser: json-c also takes single
 * quotes) contains any of `words` (NULL-terminated), so a relay that acts only on such
 * strings may forward the line untouched. A string's decoded bytes are its raw bytes except
 * for escapes, which all start with a backslash: any backslash, or any word among the raw
 * bytes (NULs included), gives TRUE, and the caller parses. */
gboolean qmp_line_may_hold(const char *line, gsize len, const char *const *words);

/* One line each ("...\r\n", as QEMU writes), id (not consumed) copied when not NULL. */
char *qmp_message_encode(json_object *msg);
char *qmp_reply_return_line(json_object *id, json_object *value);
char *qmp_reply_error_line(json_object *id, const char *klass, const char *desc);
char *qmp_command_line(const char *command, json_object *args, const char *id);

G_END_DECLS
