/* A small strict JSON reader and a pretty writer, for deploy.json.
 *
 * Reader: RFC 8259 JSON, strictly: no comments, no trailing commas, no
 * duplicate keys, no control characters in strings, no bytes after the
 * value but whitespace. Bounded: at most MJ_MAX_BYTES of text, nesting
 * depth MJ_MAX_DEPTH (the recursion is bounded by it), MJ_MAX_NODES
 * values. Strings are byte strings that must be well-formed UTF-8; \uXXXX
 * escapes are decoded to UTF-8 (surrogate pairs combined, lone surrogates
 * refused); a string holding a NUL byte is refused (names are C strings).
 * Numbers are kept as double and, when written without fraction or
 * exponent and in range, exactly as int64. Every error names the byte
 * offset where it was found.
 *
 * Writer: pretty-printed (two-space indent), keys in the order written,
 * doubles in the shortest form that reads back to the same value. */
#ifndef MERA_RUNTIME_JSON_H
#define MERA_RUNTIME_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "util/arena.h"

#define MJ_MAX_BYTES (1u << 20)
#define MJ_MAX_DEPTH 32
#define MJ_MAX_NODES 100000

typedef enum { MJ_NULL, MJ_FALSE, MJ_TRUE, MJ_NUMBER, MJ_STRING, MJ_ARRAY, MJ_OBJECT } mj_kind;

typedef struct mj_node mj_node;
struct mj_node {
    mj_kind kind;
    size_t offset;       /* byte offset of the value in the text */
    double num;          /* NUMBER */
    int is_int;          /* NUMBER: an integer literal that fits int64 */
    int64_t i;           /* NUMBER with is_int */
    const char *str;     /* STRING: NUL-terminated UTF-8 */
    size_t len;          /* STRING: bytes */
    const char *key;     /* member of an OBJECT: its key */
    int count;           /* ARRAY/OBJECT: number of elements */
    mj_node *first;      /* ARRAY/OBJECT: first element */
    mj_node *next;       /* next sibling */
};

typedef struct {
    mera_arena arena;
    mj_node *root;
    int n_nodes;
} mj_doc;

/* Parses text[0, len). 0 on success; else -1 and a message with the byte
 * offset in err. doc is always initialised (mj_doc_free it). */
int mj_parse(const char *text, size_t len, mj_doc *doc, char *err, size_t err_len);
void mj_doc_free(mj_doc *doc);

/* Member of an object by key, or NULL (also when obj is not an object). */
const mj_node *mj_get(const mj_node *obj, const char *key);
/* Element i of an array, or NULL. */
const mj_node *mj_at(const mj_node *arr, int i);
const char *mj_kind_name(mj_kind k);

/* ---- writer ------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
    int depth;
    int count[MJ_MAX_DEPTH + 1];  /* elements written at each level */
    int inline_[MJ_MAX_DEPTH + 1]; /* 1: this array is written on one line */
    int after_key;
} mj_writer;

void mjw_begin_object(mj_writer *w);
void mjw_end_object(mj_writer *w);
/* one_line: elements separated by ", " on one line (for shapes). */
void mjw_begin_array(mj_writer *w, int one_line);
void mjw_end_array(mj_writer *w);
void mjw_key(mj_writer *w, const char *key);
void mjw_string(mj_writer *w, const char *s);
void mjw_int(mj_writer *w, int64_t v);
void mjw_double(mj_writer *w, double v); /* non-finite: null */
void mjw_null(mj_writer *w);
void mjw_bool(mj_writer *w, int v);
/* The finished text (NUL-terminated, ends with a newline); NULL when out of
 * memory. The caller frees it. */
char *mjw_finish(mj_writer *w);

#endif
