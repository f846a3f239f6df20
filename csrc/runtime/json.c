/* The strict JSON reader and the pretty writer (json.h). */
#include "runtime/json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reader ------------------------------------------------------------ */

typedef struct {
    const char *s;
    size_t len, pos;
    mj_doc *doc;
    char *err;
    size_t err_len;
    int failed;
} parser;

static int pfail(parser *p, size_t at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int pfail(parser *p, size_t at, const char *fmt, ...)
{
    if (p->failed)
        return -1;
    p->failed = 1;
    if (p->err && p->err_len) {
        char msg[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(p->err, p->err_len, "byte %zu: %s", at, msg);
    }
    return -1;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static mj_node *new_node(parser *p, mj_kind kind)
{
    if (p->doc->n_nodes >= MJ_MAX_NODES) {
        pfail(p, p->pos, "more than %d values", MJ_MAX_NODES);
        return NULL;
    }
    mj_node *n = mera_arena_alloc(&p->doc->arena, sizeof *n);
    if (!n) {
        pfail(p, p->pos, "out of memory");
        return NULL;
    }
    p->doc->n_nodes++;
    n->kind = kind;
    n->offset = p->pos;
    return n;
}

static int hex4(parser *p, size_t at, unsigned *out)
{
    if (p->len - at < 4)
        return pfail(p, at, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[at + k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return pfail(p, at + k, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

/* Length of the well-formed UTF-8 sequence at s[pos], or 0. */
static int utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    int len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000;
    else
        return 0;
    if ((size_t)len > n)
        return 0;
    unsigned cp = c & (0x3F >> (len - 1));
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* At the opening quote. The decoded string is never longer than the text. */
static int parse_string(parser *p, const char **out, size_t *out_len)
{
    size_t start = p->pos++;
    size_t end = p->pos;
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\')
            end++;
        end++;
    }
    if (end >= p->len)
        return pfail(p, start, "unterminated string");
    char *o = mera_arena_alloc(&p->doc->arena, end - p->pos + 1);
    if (!o)
        return pfail(p, start, "out of memory");
    size_t n = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20)
            return pfail(p, p->pos, "control character 0x%02x in a string", c);
        if (c == '\\') {
            char e = p->s[p->pos + 1];
            size_t at = p->pos;
            p->pos += 2;
            switch (e) {
            case '"': o[n++] = '"'; break;
            case '\\': o[n++] = '\\'; break;
            case '/': o[n++] = '/'; break;
            case 'b': o[n++] = '\b'; break;
            case 'f': o[n++] = '\f'; break;
            case 'n': o[n++] = '\n'; break;
            case 'r': o[n++] = '\r'; break;
            case 't': o[n++] = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (hex4(p, p->pos, &cp))
                    return -1;
                p->pos += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return pfail(p, at, "lone low surrogate in \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (p->pos + 6 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u' ||
                        hex4(p, p->pos + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return pfail(p, at, "high surrogate in \\u escape without its low surrogate");
                    p->pos += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp == 0)
                    return pfail(p, at, "\\u0000 (NUL) in a string");
                n += put_utf8(o + n, cp);
                break;
            }
            default:
                return pfail(p, at, "bad escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
            }
            continue;
        }
        int l = utf8_len((const unsigned char *)p->s + p->pos, end - p->pos);
        if (!l)
            return pfail(p, p->pos, "invalid UTF-8 in a string");
        memcpy(o + n, p->s + p->pos, (size_t)l);
        n += (size_t)l;
        p->pos += (size_t)l;
    }
    p->pos = end + 1;
    o[n] = 0;
    *out = o;
    *out_len = n;
    return 0;
}

static int parse_number(parser *p, mj_node *nd)
{
    size_t start = p->pos, i = p->pos;
    int neg = 0, integral = 1;
    if (i < p->len && p->s[i] == '-')
        neg = 1, i++;
    if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
        return pfail(p, start, "bad number");
    if (p->s[i] == '0') {
        i++;
        if (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            return pfail(p, start, "number with a leading zero");
    } else {
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
    }
    size_t int_end = i;
    if (i < p->len && p->s[i] == '.') {
        integral = 0;
        i++;
        if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
            return pfail(p, i, "bad number: digits must follow '.'");
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-'))
            i++;
        if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
            return pfail(p, i, "bad number: digits must follow the exponent");
        while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
            i++;
    }
    if (i - start > 400)
        return pfail(p, start, "number too long");
    char tmp[401];
    memcpy(tmp, p->s + start, i - start);
    tmp[i - start] = 0;
    errno = 0;
    nd->num = strtod(tmp, NULL);
    if (!isfinite(nd->num))
        return pfail(p, start, "number out of range");
    if (integral) {
        /* exact int64, digit by digit */
        uint64_t v = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        int ok = 1;
        for (size_t k = start + (size_t)neg; k < int_end && ok; k++) {
            unsigned d = (unsigned)(p->s[k] - '0');
            if (v > (lim - d) / 10)
                ok = 0;
            else
                v = v * 10 + d;
        }
        if (ok) {
            nd->is_int = 1;
            nd->i = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
        }
    }
    p->pos = i;
    return 0;
}

static int match_word(parser *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0)
        return pfail(p, p->pos, "unexpected character '%c'",
                     p->s[p->pos] >= 0x20 && p->s[p->pos] < 0x7f ? p->s[p->pos] : '?');
    p->pos += n;
    return 0;
}

static mj_node *parse_value(parser *p, int depth)
{
    skip_ws(p);
    if (p->pos >= p->len) {
        pfail(p, p->pos, "unexpected end of text, expected a value");
        return NULL;
    }
    char c = p->s[p->pos];
    mj_node *nd;
    switch (c) {
    case '{':
    case '[': {
        int obj = c == '{';
        if (depth >= MJ_MAX_DEPTH) {
            pfail(p, p->pos, "nesting deeper than %d", MJ_MAX_DEPTH);
            return NULL;
        }
        if (!(nd = new_node(p, obj ? MJ_OBJECT : MJ_ARRAY)))
            return NULL;
        p->pos++;
        skip_ws(p);
        char close = obj ? '}' : ']';
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return nd;
        }
        mj_node *last = NULL;
        for (;;) {
            const char *key = NULL;
            size_t key_len = 0;
            skip_ws(p);
            if (obj) {
                size_t kat = p->pos;
                if (p->pos >= p->len || p->s[p->pos] != '"') {
                    pfail(p, p->pos, "expected a string key");
                    return NULL;
                }
                if (parse_string(p, &key, &key_len))
                    return NULL;
                for (mj_node *q = nd->first; q; q = q->next)
                    if (strcmp(q->key, key) == 0) {
                        pfail(p, kat, "duplicate key \"%s\"", key);
                        return NULL;
                    }
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') {
                    pfail(p, p->pos, "expected ':' after a key");
                    return NULL;
                }
                p->pos++;
            }
            mj_node *child = parse_value(p, depth + 1);
            if (!child)
                return NULL;
            child->key = key;
            if (last)
                last->next = child;
            else
                nd->first = child;
            last = child;
            nd->count++;
            skip_ws(p);
            if (p->pos >= p->len) {
                pfail(p, p->pos, "unexpected end of text in %s", obj ? "an object" : "an array");
                return NULL;
            }
            if (p->s[p->pos] == ',') {
                p->pos++;
                skip_ws(p);
                if (p->pos < p->len && p->s[p->pos] == close) {
                    pfail(p, p->pos, "trailing comma");
                    return NULL;
                }
                continue;
            }
            if (p->s[p->pos] == close) {
                p->pos++;
                return nd;
            }
            pfail(p, p->pos, "expected ',' or '%c'", close);
            return NULL;
        }
    }
    case '"':
        if (!(nd = new_node(p, MJ_STRING)) || parse_string(p, &nd->str, &nd->len))
            return NULL;
        if (strlen(nd->str) != nd->len) {
            pfail(p, nd->offset, "NUL byte in a string");
            return NULL;
        }
        return nd;
    case 't':
        return (nd = new_node(p, MJ_TRUE)) && !match_word(p, "true") ? nd : NULL;
    case 'f':
        return (nd = new_node(p, MJ_FALSE)) && !match_word(p, "false") ? nd : NULL;
    case 'n':
        return (nd = new_node(p, MJ_NULL)) && !match_word(p, "null") ? nd : NULL;
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return (nd = new_node(p, MJ_NUMBER)) && !parse_number(p, nd) ? nd : NULL;
        pfail(p, p->pos, "unexpected character '%c'", c >= 0x20 && c < 0x7f ? c : '?');
        return NULL;
    }
}

int mj_parse(const char *text, size_t len, mj_doc *doc, char *err, size_t err_len)
{
    memset(doc, 0, sizeof *doc);
    mera_arena_init(&doc->arena);
    parser p = {text, len, 0, doc, err, err_len, 0};
    if (!text)
        return pfail(&p, 0, "no text");
    if (len > MJ_MAX_BYTES)
        return pfail(&p, 0, "text of %zu bytes exceeds the limit of %u", len, MJ_MAX_BYTES);
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF)
        return pfail(&p, 0, "byte order mark is not allowed");
    mj_node *root = parse_value(&p, 0);
    if (!root)
        return -1;
    skip_ws(&p);
    if (p.pos != len)
        return pfail(&p, p.pos, "unexpected data after the JSON value");
    doc->root = root;
    return 0;
}

void mj_doc_free(mj_doc *doc)
{
    if (!doc)
        return;
    mera_arena_free(&doc->arena);
    doc->root = NULL;
}

const mj_node *mj_get(const mj_node *obj, const char *key)
{
    if (!obj || obj->kind != MJ_OBJECT)
        return NULL;
    for (const mj_node *q = obj->first; q; q = q->next)
        if (strcmp(q->key, key) == 0)
            return q;
    return NULL;
}

const mj_node *mj_at(const mj_node *arr, int i)
{
    if (!arr || arr->kind != MJ_ARRAY || i < 0)
        return NULL;
    const mj_node *q = arr->first;
    for (; q && i > 0; i--)
        q = q->next;
    return q;
}

const char *mj_kind_name(mj_kind k)
{
    switch (k) {
    case MJ_NULL: return "null";
    case MJ_FALSE:
    case MJ_TRUE: return "a boolean";
    case MJ_NUMBER: return "a number";
    case MJ_STRING: return "a string";
    case MJ_ARRAY: return "an array";
    case MJ_OBJECT: return "an object";
    }
    return "?";
}

/* ---- writer ------------------------------------------------------------ */

static void w_raw(mj_writer *w, const char *s, size_t n)
{
    if (w->oom)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 1024;
        while (nc < w->len + n + 1)
            nc *= 2;
        char *b = realloc(w->buf, nc);
        if (!b) {
            w->oom = 1;
            return;
        }
        w->buf = b;
        w->cap = nc;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = 0;
}

static void w_str(mj_writer *w, const char *s)
{
    w_raw(w, s, strlen(s));
}

static void w_indent(mj_writer *w)
{
    w_raw(w, "\n", 1);
    for (int d = 0; d < w->depth; d++)
        w_raw(w, "  ", 2);
}

/* Before a value (or a key): the separator and the indentation. */
static void w_before(mj_writer *w)
{
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth == 0)
        return;
    if (w->count[w->depth]++)
        w_raw(w, ",", 1);
    if (w->inline_[w->depth])
        w_raw(w, w->count[w->depth] > 1 ? " " : "", w->count[w->depth] > 1 ? 1 : 0);
    else
        w_indent(w);
}

static void w_open(mj_writer *w, char c, int one_line)
{
    w_before(w);
    w_raw(w, &c, 1);
    if (w->depth >= MJ_MAX_DEPTH) {
        w->oom = 1;
        return;
    }
    w->depth++;
    w->count[w->depth] = 0;
    w->inline_[w->depth] = one_line;
}

static void w_close(mj_writer *w, char c)
{
    if (w->depth <= 0) {
        w->oom = 1;
        return;
    }
    int had = w->count[w->depth], inl = w->inline_[w->depth];
    w->depth--;
    if (had && !inl)
        w_indent(w);
    w_raw(w, &c, 1);
}

void mjw_begin_object(mj_writer *w) { w_open(w, '{', 0); }
void mjw_end_object(mj_writer *w) { w_close(w, '}'); }
void mjw_begin_array(mj_writer *w, int one_line) { w_open(w, '[', one_line); }
void mjw_end_array(mj_writer *w) { w_close(w, ']'); }

static void w_quoted(mj_writer *w, const char *s)
{
    w_raw(w, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            w_raw(w, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            w_raw(w, esc, 6);
        } else {
            w_raw(w, (const char *)c, 1);
        }
    }
    w_raw(w, "\"", 1);
}

void mjw_key(mj_writer *w, const char *key)
{
    w_before(w);
    w_quoted(w, key);
    w_raw(w, ": ", 2);
    w->after_key = 1;
}

void mjw_string(mj_writer *w, const char *s)
{
    w_before(w);
    w_quoted(w, s);
}

void mjw_int(mj_writer *w, int64_t v)
{
    char b[32];
    w_before(w);
    snprintf(b, sizeof b, "%lld", (long long)v);
    w_str(w, b);
}

void mjw_double(mj_writer *w, double v)
{
    if (!isfinite(v)) {
        mjw_null(w);
        return;
    }
    char b[40];
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(b, sizeof b, "%.1f", v); /* 300.0, not 3e+02 */
        w_before(w);
        w_str(w, b);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, v);
        if (strtod(b, NULL) == v)
            break;
    }
    /* keep it a JSON number that reads back as a double, e.g. "1.0" */
    if (!strpbrk(b, ".eEn"))
        strcat(b, ".0");
    w_before(w);
    w_str(w, b);
}

void mjw_null(mj_writer *w)
{
    w_before(w);
    w_str(w, "null");
}

void mjw_bool(mj_writer *w, int v)
{
    w_before(w);
    w_str(w, v ? "true" : "false");
}

char *mjw_finish(mj_writer *w)
{
    w_raw(w, "\n", 1);
    if (w->oom || w->depth != 0) {
        free(w->buf);
        w->buf = NULL;
        return NULL;
    }
    char *b = w->buf;
    w->buf = NULL;
    return b;
}
