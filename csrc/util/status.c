#include "util/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mera_status mera_fail(mera_error *err, mera_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void mera_error_prefix(mera_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[MERA_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char joined[2 * MERA_ERROR_MSG_LEN];
    snprintf(joined, sizeof joined, "%s%s", prefix, err->msg);
    memcpy(err->msg, joined, sizeof err->msg - 1);
    err->msg[sizeof err->msg - 1] = 0;
}

static const char *const status_names[MERA_STATUS_COUNT] = {
    [MERA_OK] = "ok",
    [MERA_ERR_INVALID] = "invalid argument",
    [MERA_ERR_SHAPE] = "shape error",
    [MERA_ERR_DTYPE] = "dtype error",
    [MERA_ERR_ATTR] = "attribute error",
    [MERA_ERR_UNKNOWN_OP] = "unknown op",
    [MERA_ERR_FORMAT] = "format error",
    [MERA_ERR_UNSUPPORTED] = "unsupported",
    [MERA_ERR_NOMEM] = "out of memory",
    [MERA_ERR_IO] = "i/o error",
    [MERA_ERR_RUNTIME] = "runtime error",
    [MERA_ERR_CONFIG] = "invalid configuration",
};

const char *mera_status_name(mera_status s)
{
    if ((unsigned)s >= MERA_STATUS_COUNT)
        return "unknown status";
    return status_names[s];
}

void mera_bug(const char *file, int line, const char *what)
{
    fprintf(stderr, "mera: internal error at %s:%d: %s\n", file, line, what);
    abort();
}
