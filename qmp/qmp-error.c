/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libqmp errors: the QMP_ERROR domain, an extended GError domain so that QEMU's error class
 * travels with the error itself (it survives g_error_copy() and g_prefix_error()). */
#include "qmp-private.h"

typedef struct {
    const char *klass; /* interned */
} QmpErrorPrivate;

static void qmp_error_private_init(QmpErrorPrivate *priv)
{
    priv->klass = NULL;
}

static void qmp_error_private_copy(const QmpErrorPrivate *src, QmpErrorPrivate *dest)
{
    dest->klass = src->klass;
}

static void qmp_error_private_clear(QmpErrorPrivate *priv)
{
    priv->klass = NULL;
}

#ifndef G_DEFINE_EXTENDED_ERROR
/* Only for static analysers that do not read GLib's headers (cppcheck). */
#define G_DEFINE_EXTENDED_ERROR(ErrorType, error_type)                                             \
    static ErrorType##Private *error_type##_get_private(const GError *error);
#endif

G_DEFINE_EXTENDED_ERROR(QmpError, qmp_error)

GError *qmp_error_new_command(const char *klass, const char *desc)
{
    GError *error = g_error_new_literal(QMP_ERROR, QMP_ERROR_COMMAND, desc);

    qmp_error_get_private(error)->klass = g_intern_string(klass);
    return error;
}

const char *qmp_error_get_class(const GError *error)
{
    if (!error || error->domain != QMP_ERROR || error->code != QMP_ERROR_COMMAND)
        return NULL;
    return qmp_error_get_private(error)->klass;
}
