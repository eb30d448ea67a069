/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target for the relay's view of QMP (qmp-wire.h), as the libvirt filter uses it:
 * each line of the input is scanned the way the filter's fast path scans it and parsed in
 * full; a line the scan lets through must be none of what the filter acts on (a greeting, an
 * event, a reply with our id, a command naming migrate), and a message that parses reads and
 * re-encodes to one line that parses back to the same kind. A trap marks a broken contract. */
#include "qmp-wire.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The words of sidecar/libvirt/filter.c. */
static const char *const qemu_words[] = {"QMP", "event", "sm-filter-", NULL};
static const char *const libvirt_words[] = {"migrate", NULL};

static void check_line(const char *line, gsize len)
{
    QmpMessageKind kind;
    json_object *msg = qmp_message_parse(line, len, &kind);
    const char *id = qmp_message_string_id(msg), *exec = qmp_message_command(msg);
    if (!qmp_line_may_hold(line, len, qemu_words) &&
        (kind == QMP_MESSAGE_GREETING || kind == QMP_MESSAGE_EVENT ||
         (id && g_str_has_prefix(id, "sm-filter-"))))
        __builtin_trap();
    if (!qmp_line_may_hold(line, len, libvirt_words) && exec && strstr(exec, "migrate"))
        __builtin_trap();
    if (msg) {
        (void)qmp_message_event(msg);
        char *text = qmp_message_encode(msg);
        gsize text_len = strlen(text);
        json_object *back = qmp_message_parse(text, text_len, NULL);
        /* One line, parsing back to the same kind (not compared member by member: json-c
         * takes NaN, which equals nothing). */
        if (memchr(text, '\n', text_len - 1) || qmp_message_kind(back) != kind)
            __builtin_trap();
        json_object_put(back);
        g_free(text);
        json_object_put(msg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    while (p < end) { /* as the filter cuts lines: at '\n', the newline included */
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *next = nl ? nl + 1 : end;
        check_line(p, (gsize)(next - p));
        p = next;
    }
    return 0;
}
