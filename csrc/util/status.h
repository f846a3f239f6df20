/* Status codes and error messages shared by every layer of the C core.
 *
 * Two kinds of failure (QBE's err/die split):
 *   - bad input from the user returns a mera_status and fills a mera_error;
 *   - our own bugs call MERA_BUG(), which aborts with file and line.
 */
#ifndef MERA_UTIL_STATUS_H
#define MERA_UTIL_STATUS_H

#include <stddef.h>

typedef enum {
    MERA_OK = 0,
    MERA_ERR_INVALID,     /* generic bad argument */
    MERA_ERR_SHAPE,       /* shapes do not agree */
    MERA_ERR_DTYPE,       /* dtypes or quantization parameters do not agree */
    MERA_ERR_ATTR,        /* unknown, missing or ill-typed attribute */
    MERA_ERR_UNKNOWN_OP,  /* no such op in the op table */
    MERA_ERR_FORMAT,      /* a serialized graph or file is corrupt or of another version */
    MERA_ERR_UNSUPPORTED, /* valid input that this version cannot handle */
    MERA_ERR_NOMEM,       /* allocation failed */
    MERA_ERR_IO,          /* a file could not be read or written */
    MERA_ERR_RUNTIME,     /* bad input at run time (inputs to a compiled graph) */
    MERA_ERR_CONFIG,      /* a configuration value is invalid (build, quantizer) */
    MERA_STATUS_COUNT
} mera_status;

#define MERA_ERROR_MSG_LEN 1024

typedef struct {
    mera_status code;
    char msg[MERA_ERROR_MSG_LEN];
} mera_error;

/* Fill *err (may be NULL) with a formatted message and return code. */
mera_status mera_fail(mera_error *err, mera_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Prepend context ("node 'conv1' (conv2d): ") to an existing message. */
void mera_error_prefix(mera_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

const char *mera_status_name(mera_status s);

void mera_bug(const char *file, int line, const char *what);
#define MERA_BUG(what) mera_bug(__FILE__, __LINE__, (what))
#define MERA_ASSERT(cond) \
    do { if (!(cond)) mera_bug(__FILE__, __LINE__, "assertion failed: " #cond); } while (0)

#define MERA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
