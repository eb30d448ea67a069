/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Walker for QEMU's device-state stream (QEVM v3): finds section boundaries by their footers,
 * with backtracking, and a bounds-checked reader for decoding section bodies. */
#define G_LOG_DOMAIN "sm-stream"

#include "stream.h"

#include <string.h>

struct SmStream {
    GBytes *bytes;
    const guint8 *data;
    gsize len;
    GArray *sections; /* SmSection */
    char *idstrs;     /* every section's idstr, NUL-separated: one allocation for them all */
    char *error;
};

static guint32 rd_be32(const guint8 *p)
{
    return ((guint32)p[0] << 24) | ((guint32)p[1] << 16) | ((guint32)p[2] << 8) | p[3];
}

/* Plausibility limits for header fields: real QEMU uses small numbers, and a tight check
 * makes a false footer followed by a "header" made of data bytes much less likely. */
#define MAX_PLAUSIBLE_ID 0xffffu

typedef enum { REC_BAD, REC_EOF, REC_COMMAND, REC_SECTION } RecKind;

/* Parses the record at pos without trusting anything: returns its kind, the header and where
 * the body (section) or the next record (command) starts. */
static RecKind parse_record(const guint8 *d, gsize len, gsize pos, SmSection *sec, gsize *next)
{
    if (pos >= len) {
        return REC_BAD;
    }
    guint8 t = d[pos];
    if (t == SM_VM_EOF) {
        if (pos + 1 == len) {
            return REC_EOF;
        }
        /* A full migration stream may end with EOF + a JSON vmdesc record. */
        if (pos + 6 <= len && d[pos + 1] == SM_VM_VMDESCRIPTION &&
            pos + 6 + (gsize)rd_be32(d + pos + 2) == len) {
            return REC_EOF;
        }
        return REC_BAD;
    }
    if (t == SM_VM_COMMAND) {
        if (len - pos < 5) {
            return REC_BAD;
        }
        gsize clen = ((gsize)d[pos + 3] << 8) | d[pos + 4];
        if (len - pos - 5 < clen) {
            return REC_BAD;
        }
        *next = pos + 5 + clen;
        return REC_COMMAND;
    }
    if (t == SM_VM_SECTION_PART || t == SM_VM_SECTION_END) {
        if (len - pos < 5) {
            return REC_BAD;
        }
        memset(sec, 0, sizeof(*sec));
        sec->type = t;
        sec->section_id = rd_be32(d + pos + 1);
        sec->header_offset = pos;
        sec->body_offset = pos + 5;
        return REC_SECTION;
    }
    if (t != SM_VM_SECTION_FULL && t != SM_VM_SECTION_START) {
        return REC_BAD;
    }
    if (len - pos < 6) {
        return REC_BAD;
    }
    gsize idlen = d[pos + 5];
    if (idlen == 0 || len - pos - 6 < idlen + 8) {
        return REC_BAD;
    }
    for (gsize i = 0; i < idlen; i++) {
        guint8 c = d[pos + 6 + i];
        if (c < 0x20 || c > 0x7e) {
            return REC_BAD;
        }
    }
    guint32 instance = rd_be32(d + pos + 6 + idlen);
    guint32 version = rd_be32(d + pos + 10 + idlen);
    if (instance > MAX_PLAUSIBLE_ID || version > MAX_PLAUSIBLE_ID) {
        return REC_BAD;
    }
    memset(sec, 0, sizeof(*sec));
    sec->type = t;
    sec->section_id = rd_be32(d + pos + 1);
    sec->instance_id = instance;
    sec->version_id = version;
    sec->header_offset = pos;
    sec->body_offset = pos + 14 + idlen;
    return REC_SECTION;
}

/* The record after a footer candidate, parsed once: the walk goes on from exactly there
 * when the candidate is taken. */
typedef struct {
    gsize pos; /* where it starts; 0 = nothing cached (no record starts at 0) */
    RecKind kind;
    SmSection sec;
    gsize next;
} Lookahead;

static RecKind parse_cached(const guint8 *d, gsize len, gsize pos, Lookahead *la)
{
    if (la->pos != pos) {
        la->pos = pos;
        la->kind = parse_record(d, len, pos, &la->sec, &la->next);
    }
    return la->kind;
}

/* Next footer candidate for `sid` at or after `from`: 0x7e + be32 sid, followed by a
 * well-formed record. *budget bounds the total work on hostile input. */
static gboolean find_footer(const guint8 *d, gsize len, gsize from, guint32 sid, gsize *out,
                            gsize *budget, Lookahead *la)
{
    gsize p = from;
    while (p + 5 <= len) {
        const guint8 *hit = memchr(d + p, SM_VM_SECTION_FOOTER, len - p);
        if (!hit) {
            return FALSE;
        }
        gsize q = (gsize)(hit - d);
        gsize scanned = q - p + 1;
        if (*budget < scanned) {
            *budget = 0;
            return FALSE;
        }
        *budget -= scanned;
        if (q + 5 <= len && rd_be32(d + q + 1) == sid &&
            parse_cached(d, len, q + 5, la) != REC_BAD) {
            *out = q;
            return TRUE;
        }
        p = q + 1;
    }
    return FALSE;
}

/* The configuration record (full migration streams only): be32 name length, name, and the
 * subsections QEMU knows. Returns the offset after it, or 0. */
static gsize skip_configuration(const guint8 *d, gsize len, gsize pos)
{
    SmReader r = {.data = d, .end = len, .pos = pos + 1};
    guint32 n;
    if (!sm_reader_be32(&r, &n) || !sm_reader_skip(&r, n)) {
        return 0;
    }
    g_autofree char *name = NULL;
    guint32 version;
    while (sm_reader_subsection(&r, "configuration", &name, &version)) {
        if (g_str_equal(name, "configuration/capabilities") && version == 1) {
            guint32 count;
            if (!sm_reader_be32(&r, &count)) {
                return 0;
            }
            for (guint32 i = 0; i < count; i++) {
                guint8 l;
                if (!sm_reader_u8(&r, &l) || !sm_reader_skip(&r, l)) {
                    return 0;
                }
            }
        } else if (g_str_equal(name, "configuration/uuid") && version == 1) {
            if (!sm_reader_skip(&r, 16)) {
                return 0;
            }
        } else {
            return 0; /* an unknown subsection cannot be skipped */
        }
        g_clear_pointer(&name, g_free);
    }
    return r.pos;
}

/* The walk's stack is the section array itself: one SmSection per record, footer_offset the
 * current footer candidate; command records (type SM_VM_COMMAND, no alternatives) are
 * dropped once the walk is done. No per-record allocation. */
static gboolean is_section(const SmSection *sec)
{
    return sec->type != SM_VM_COMMAND;
}

/* Drops the command records and gives FULL/START sections their idstr, all copied into one
 * NUL-separated buffer (the stream's bytes have no terminators). */
static void finish_sections(SmStream *s)
{
    GArray *a = s->sections;
    gsize n = 0, bytes = 0;
    for (guint i = 0; i < a->len; i++) {
        SmSection *sec = &g_array_index(a, SmSection, i);
        if (!is_section(sec)) {
            continue;
        }
        if (sec->type == SM_VM_SECTION_FULL || sec->type == SM_VM_SECTION_START) {
            bytes += (gsize)s->data[sec->header_offset + 5] + 1;
        }
        g_array_index(a, SmSection, n++) = *sec;
    }
    g_array_set_size(a, (guint)n);
    char *out = s->idstrs = g_malloc(MAX(bytes, 1));
    for (guint i = 0; i < a->len; i++) {
        SmSection *sec = &g_array_index(a, SmSection, i);
        if (sec->type != SM_VM_SECTION_FULL && sec->type != SM_VM_SECTION_START) {
            continue;
        }
        gsize idlen = s->data[sec->header_offset + 5];
        memcpy(out, s->data + sec->header_offset + 6, idlen);
        out[idlen] = '\0';
        sec->idstr = out;
        out += idlen + 1;
    }
}

static void walk(SmStream *s)
{
    const guint8 *d = s->data;
    gsize len = s->len;

    if (len < 8 || rd_be32(d) != SM_VM_FILE_MAGIC) {
        s->error = g_strdup("not a QEMU device-state stream (no QEVM magic)");
        return;
    }
    if (rd_be32(d + 4) != SM_VM_FILE_VERSION) {
        s->error = g_strdup_printf("unsupported stream version %u", rd_be32(d + 4));
        return;
    }
    gsize pos = 8;
    if (pos < len && d[pos] == SM_VM_CONFIGURATION) {
        pos = skip_configuration(d, len, pos);
        if (pos == 0) {
            s->error = g_strdup("cannot decode the configuration record");
            return;
        }
    }

    /* Depth-first search over footer candidates; the first walk reaching EOF exactly at the
     * end of the data wins. Real streams have a single candidate per section. */
    GArray *stack = s->sections;
    gsize budget = 64 * (gsize)len + (1u << 20);
    gsize furthest = pos;
    Lookahead la = {0};
    for (;;) {
        RecKind k = parse_cached(d, len, pos, &la);
        SmSection sec = la.sec;
        gsize next = la.next;
        furthest = MAX(furthest, pos);
        if (k == REC_EOF) {
            break;
        }
        if (k == REC_COMMAND) {
            SmSection f = {.type = SM_VM_COMMAND, .header_offset = pos, .footer_offset = next};
            g_array_append_val(stack, f);
            pos = next;
            continue;
        }
        if (k == REC_SECTION && find_footer(d, len, sec.body_offset, sec.section_id,
                                            &sec.footer_offset, &budget, &la)) {
            g_array_append_val(stack, sec);
            pos = sec.footer_offset + 5;
            continue;
        }
        /* Dead end: try the next footer candidate of the innermost section that has one. */
        gboolean resumed = FALSE;
        while (stack->len > 0 && budget > 0) {
            SmSection *top = &g_array_index(stack, SmSection, stack->len - 1);
            if (is_section(top) && find_footer(d, len, top->footer_offset + 1, top->section_id,
                                               &top->footer_offset, &budget, &la)) {
                pos = top->footer_offset + 5;
                resumed = TRUE;
                break;
            }
            g_array_set_size(stack, stack->len - 1);
        }
        if (!resumed) {
            g_array_set_size(stack, 0);
            s->error = budget == 0 ? g_strdup("stream too ambiguous to delimit sections")
                                   : g_strdup_printf("cannot delimit the section at offset "
                                                     "%" G_GSIZE_FORMAT,
                                                     furthest);
            return;
        }
    }
    finish_sections(s);
}

SmStream *sm_stream_parse(GBytes *bytes)
{
    SmStream *s = g_new0(SmStream, 1);
    s->bytes = g_bytes_ref(bytes);
    s->data = g_bytes_get_data(bytes, &s->len);
    /* Room for the sections of a usual VM (a few dozen) without growing. */
    s->sections = g_array_sized_new(FALSE, FALSE, sizeof(SmSection), 128);
    walk(s);
    if (s->error) {
        g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_DEBUG, "MESSAGE", "stream incomplete: %s",
                         s->error);
    }
    return s;
}

void sm_stream_free(SmStream *stream)
{
    if (!stream) {
        return;
    }
    g_array_unref(stream->sections);
    g_free(stream->idstrs);
    g_bytes_unref(stream->bytes);
    g_free(stream->error);
    g_free(stream);
}

gboolean sm_stream_is_complete(const SmStream *stream)
{
    return stream->error == NULL;
}

const char *sm_stream_get_error(const SmStream *stream)
{
    return stream->error;
}

guint sm_stream_get_n_sections(const SmStream *stream)
{
    return stream->sections->len;
}

const SmSection *sm_stream_get_section(const SmStream *stream, guint index)
{
    g_return_val_if_fail(index < stream->sections->len, NULL);
    return &g_array_index(stream->sections, SmSection, index);
}

const SmSection *sm_stream_find_section(const SmStream *stream, const char *idstr,
                                        guint32 instance_id)
{
    for (guint i = 0; i < stream->sections->len; i++) {
        const SmSection *s = &g_array_index(stream->sections, SmSection, i);
        if (s->idstr && s->instance_id == instance_id && g_str_equal(s->idstr, idstr)) {
            return s;
        }
    }
    return NULL;
}

const guint8 *sm_stream_get_data(const SmStream *stream, gsize *len)
{
    if (len) {
        *len = stream->len;
    }
    return stream->data;
}

/* ---- Reader ----------------------------------------------------------------------------- */

void sm_reader_init(SmReader *reader, const SmStream *stream, const SmSection *section)
{
    reader->data = stream->data;
    reader->pos = section->body_offset;
    reader->end = MIN(section->footer_offset, stream->len);
    reader->section_id = section->section_id;
    reader->error = NULL;
}

static gboolean need(SmReader *r, gsize n)
{
    if (r->error) {
        return FALSE;
    }
    if (r->pos > r->end || r->end - r->pos < n) {
        r->error = "read past the end of the section";
        return FALSE;
    }
    return TRUE;
}

gboolean sm_reader_u8(SmReader *reader, guint8 *out)
{
    if (!need(reader, 1)) {
        return FALSE;
    }
    *out = reader->data[reader->pos++];
    return TRUE;
}

gboolean sm_reader_be32(SmReader *reader, guint32 *out)
{
    if (!need(reader, 4)) {
        return FALSE;
    }
    *out = rd_be32(reader->data + reader->pos);
    reader->pos += 4;
    return TRUE;
}

gboolean sm_reader_be64(SmReader *reader, guint64 *out)
{
    if (!need(reader, 8)) {
        return FALSE;
    }
    *out = ((guint64)rd_be32(reader->data + reader->pos) << 32) |
           rd_be32(reader->data + reader->pos + 4);
    reader->pos += 8;
    return TRUE;
}

gboolean sm_reader_bool(SmReader *reader, gboolean *out)
{
    guint8 b;
    if (!sm_reader_u8(reader, &b)) {
        return FALSE;
    }
    if (b > 1) {
        reader->error = "boolean field is neither 0 nor 1";
        return FALSE;
    }
    *out = b;
    return TRUE;
}

gboolean sm_reader_bytes(SmReader *reader, gsize n, const guint8 **out)
{
    if (!need(reader, n)) {
        return FALSE;
    }
    *out = reader->data + reader->pos;
    reader->pos += n;
    return TRUE;
}

gboolean sm_reader_fail(SmReader *reader, const char *why)
{
    if (!reader->error) {
        reader->error = why;
    }
    return FALSE;
}

gboolean sm_reader_skip(SmReader *reader, gsize n)
{
    const guint8 *unused;
    return sm_reader_bytes(reader, n, &unused);
}

gboolean sm_reader_subsection(SmReader *reader, const char *vmsd_name, char **name,
                              guint32 *version)
{
    gsize plen = strlen(vmsd_name);
    gsize p = reader->pos;
    const guint8 *d = reader->data;
    if (reader->error || p > reader->end || reader->end - p < 2 || d[p] != SM_VM_SUBSECTION) {
        return FALSE;
    }
    gsize nlen = d[p + 1];
    /* As QEMU's loader: a name shorter than "parent/x" or not starting with the parent's
     * name means this is not a subsection at all. */
    if (nlen < plen + 1 || reader->end - p - 2 < nlen + 4 ||
        memcmp(d + p + 2, vmsd_name, plen) != 0) {
        return FALSE;
    }
    *name = g_strndup((const char *)d + p + 2, nlen);
    *version = rd_be32(d + p + 2 + nlen);
    reader->pos = p + 2 + nlen + 4;
    return TRUE;
}

gboolean sm_reader_at_footer(const SmReader *reader)
{
    return reader->error == NULL && reader->pos == reader->end;
}
