/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The device-state stream walker: delimits the sections of QEMU's serialization of device
 * state (xen-save-devices-state / migration format) and reads section bodies with bounds
 * checks. Part of the plugin ABI (plugins decode their sections with it). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Record types of migration/savevm.c. */
enum {
    SM_VM_EOF = 0x00,
    SM_VM_SECTION_START = 0x01,
    SM_VM_SECTION_PART = 0x02,
    SM_VM_SECTION_END = 0x03,
    SM_VM_SECTION_FULL = 0x04,
    SM_VM_SUBSECTION = 0x05,
    SM_VM_VMDESCRIPTION = 0x06,
    SM_VM_CONFIGURATION = 0x07,
    SM_VM_COMMAND = 0x08,
    SM_VM_SECTION_FOOTER = 0x7e,
};
#define SM_VM_FILE_MAGIC 0x5145564du /* "QEVM" */
#define SM_VM_FILE_VERSION 3u

/* Library-allocated, read-only for plugins; fields are only ever appended. */
typedef struct {
    guint8 type;         /* SM_VM_SECTION_FULL / START / PART / END */
    guint32 section_id;  /* as in the header and the footer */
    char *idstr;         /* e.g. "0000:00:02.0/1/usb-storage"; NULL for PART / END */
    guint32 instance_id; /* 0 for PART / END */
    guint32 version_id;  /* 0 for PART / END */
    gsize header_offset; /* the section type byte */
    gsize body_offset;   /* first byte after the header */
    gsize footer_offset; /* the 0x7e footer byte: the body is [body_offset, footer_offset) */
} SmSection;

/* A walked stream. The stream carries no section lengths: the walker delimits every section
 * by its footer (0x7e + be32 section id) followed by a well-formed next header or by EOF,
 * backtracking over false footers, and accepts only a walk that ends exactly at EOF. A probe
 * then decodes the sections it knows field by field and must land exactly on the footer. */
typedef struct SmStream SmStream;

/* Never returns NULL: a stream that cannot be walked to its end is "incomplete": it has no
 * sections and says why. The bytes are referenced, not copied. */
SmStream *sm_stream_parse(GBytes *bytes);
void sm_stream_free(SmStream *stream);

gboolean sm_stream_is_complete(const SmStream *stream);
const char *sm_stream_get_error(const SmStream *stream); /* NULL when complete */
guint sm_stream_get_n_sections(const SmStream *stream);
const SmSection *sm_stream_get_section(const SmStream *stream, guint index);
/* The FULL/START section with this idstr and instance id, or NULL. */
const SmSection *sm_stream_find_section(const SmStream *stream, const char *idstr,
                                        guint32 instance_id);
const guint8 *sm_stream_get_data(const SmStream *stream, gsize *len);

/* Bounds-checked big-endian reader over one section body. Every read fails (returns FALSE,
 * sets error once) rather than run past the body. Lives on the caller's stack, so its size is
 * part of the ABI (reserved room for growth); the fields are read-only for callers. */
typedef struct {
    const guint8 *data;
    gsize end; /* the footer offset: nothing at or past it is readable */
    gsize pos;
    guint32 section_id;
    const char *error; /* first failure, static string */
    gpointer reserved[2];
} SmReader;

void sm_reader_init(SmReader *reader, const SmStream *stream, const SmSection *section);
gboolean sm_reader_u8(SmReader *reader, guint8 *out);
gboolean sm_reader_be32(SmReader *reader, guint32 *out);
gboolean sm_reader_be64(SmReader *reader, guint64 *out);
gboolean sm_reader_bool(SmReader *reader, gboolean *out); /* byte 0 or 1, anything else fails */
gboolean sm_reader_bytes(SmReader *reader, gsize n, const guint8 **out);
gboolean sm_reader_skip(SmReader *reader, gsize n);
/* Records a decode failure of the caller's own (a value out of range...): the first one
 * wins. `why` must be a static string. Always returns FALSE. */
gboolean sm_reader_fail(SmReader *reader, const char *why);
/* If the next bytes are a subsection of `vmsd_name` (0x05, len, "vmsd_name/...", be32
 * version), consumes the header and returns TRUE with its name and version; otherwise
 * consumes nothing and returns FALSE (as QEMU's loader decides). */
gboolean sm_reader_subsection(SmReader *reader, const char *vmsd_name, char **name,
                              guint32 *version);
/* TRUE when the decode ended exactly at the section footer. */
gboolean sm_reader_at_footer(const SmReader *reader);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(SmStream, sm_stream_free);

G_END_DECLS
