/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp wire messages (qmp-wire.h): the relay's view of QMP, where the typed command layer
 * is the client's. Every member is read with its type checked, here and nowhere else. */
#include "qmp-wire.h"
#include "qmp-commands.h" /* qmp_json_string */

#include <string.h>

static json_object *member_of(json_object *msg, const char *key, json_type type)
{
    json_object *v = NULL;
    if (!json_object_is_type(msg, json_type_object) || !json_object_object_get_ex(msg, key, &v) ||
        !json_object_is_type(v, type))
        return NULL;
    return v;
}

QmpMessageKind qmp_message_kind(json_object *msg)
{
    if (!json_object_is_type(msg, json_type_object))
        return QMP_MESSAGE_INVALID;
    if (member_of(msg, "QMP", json_type_object))
        return QMP_MESSAGE_GREETING;
    if (qmp_json_string(msg, "event"))
        return QMP_MESSAGE_EVENT;
    if (qmp_message_command(msg))
        return QMP_MESSAGE_COMMAND;
    /* A reply carries exactly one of "return" (any value) and "error" (an object). */
    gboolean ret = json_object_object_get_ex(msg, "return", NULL);
    gboolean err = json_object_object_get_ex(msg, "error", NULL);
    if (ret ? !err : member_of(msg, "error", json_type_object) != NULL)
        return QMP_MESSAGE_REPLY;
    return QMP_MESSAGE_INVALID;
}

json_object *qmp_message_parse(const char *line, gsize len, QmpMessageKind *kind)
{
    json_tokener *tok = json_tokener_new();
    json_object *msg = len <= G_MAXINT ? json_tokener_parse_ex(tok, line, (int)len) : NULL;
    /* Whatever follows the object must be blank: one line, one message. */
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (msg && end < len && line[end] && strchr(" \t\r\n", line[end]))
        end++;
    if (msg && (end < len || !json_object_is_type(msg, json_type_object)))
        g_clear_pointer(&msg, json_object_put);
    if (kind)
        *kind = qmp_message_kind(msg);
    return msg;
}

gboolean qmp_line_may_hold(const char *line, gsize len, const char *const *words)
{
    if (memchr(line, '\\', len))
        return TRUE;
    for (guint i = 0; words && words[i]; i++)
        if (memmem(line, len, words[i], strlen(words[i])))
            return TRUE;
    return FALSE;
}

const char *qmp_message_command(json_object *msg)
{
    const char *exec = qmp_json_string(msg, "execute");
    return exec ? exec : qmp_json_string(msg, "exec-oob");
}

const char *qmp_message_event(json_object *msg)
{
    return qmp_json_string(msg, "event");
}

const char *qmp_message_string_id(json_object *msg)
{
    return qmp_json_string(msg, "id");
}

const char *qmp_message_inner_string(json_object *msg, const char *outer, const char *member)
{
    return qmp_json_string(member_of(msg, outer, json_type_object), member);
}

json_object *qmp_message_id(json_object *msg)
{
    json_object *v = NULL;
    if (!json_object_is_type(msg, json_type_object) || !json_object_object_get_ex(msg, "id", &v))
        return NULL;
    return v;
}

void qmp_message_set_id(json_object *msg, json_object *id)
{
    g_return_if_fail(json_object_is_type(msg, json_type_object));
    /* Take the new id's reference first: it may be the very value being replaced. */
    json_object *copy = json_object_get(id);
    json_object_object_del(msg, "id");
    if (copy)
        json_object_object_add(msg, "id", copy);
}

char *qmp_message_encode(json_object *msg)
{
    /* json-c escapes control characters in strings: the line cannot be split. */
    return g_strdup_printf("%s\r\n", json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN));
}

static char *reply_line(json_object *id, const char *key, json_object *value)
{
    g_autoptr(json_object) reply = json_object_new_object();
    json_object_object_add(reply, key, value);
    if (id)
        qmp_message_set_id(reply, id);
    return qmp_message_encode(reply);
}

char *qmp_reply_return_line(json_object *id, json_object *value)
{
    return reply_line(id, "return", value ? json_object_get(value) : json_object_new_object());
}

char *qmp_reply_error_line(json_object *id, const char *klass, const char *desc)
{
    json_object *err = json_object_new_object();
    json_object_object_add(err, "class", json_object_new_string(klass ? klass : "GenericError"));
    json_object_object_add(err, "desc", json_object_new_string(desc ? desc : ""));
    return reply_line(id, "error", err);
}

char *qmp_command_line(const char *command, json_object *args, const char *id)
{
    g_autoptr(json_object) cmd = json_object_new_object();
    json_object_object_add(cmd, "execute", json_object_new_string(command));
    if (args)
        json_object_object_add(cmd, "arguments", json_object_get(args));
    if (id)
        json_object_object_add(cmd, "id", json_object_new_string(id));
    return qmp_message_encode(cmd);
}
