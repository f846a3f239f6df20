/* The versioned binary form of a graph.
 *
 *   header   magic "MERAIR\r\n" | u32 format version | u32 flags (0)
 *            | u64 payload length | u64 FNV-1a of the payload
 *   payload  str graph name | str rounding (mera_rounding_name; not in version 1)
 *            | u32 item count | items | u32 n outputs | i32 output ids
 *   item     u8 tag: 1 input, 2 param, 3 const, 4 node
 *            decl:  str name | type | const only: u64 nbytes | bytes
 *            node:  str name | str op name | u32 n inputs | i32 ids
 *                   | u32 n attrs | attrs | u8 has source | [str source]
 *   type     u8 dtype | u8 rank | u8 layout | i64 shape[rank] | u8 quant kind
 *            | per-tensor: f64 scale, i32 zp | per-axis: i32 axis, i64 count, f64[count], i32[count]
 *   attr     str key | u8 kind | int: i64 | float: f64 | ints: u32 n, i64[n]
 *            | floats: u32 n, f64[n] | string: str
 *   str      u32 length | bytes (no terminator)
 *
 * Little-endian throughout. Items come in value-id order, so a graph read
 * back has the same ids, names and text form. Node output types are not
 * stored: they are inferred again, which also re-verifies every node. Ops
 * are stored by name, so renumbering the op enum does not break old files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "util/bytes.h"

enum { ITEM_INPUT = 1, ITEM_PARAM = 2, ITEM_CONST = 3, ITEM_NODE = 4 };

#define HEADER_SIZE (8 + 4 + 4 + 8 + 8)

/* The payload checksum: FNV-1a, 64 bits, but from this offset basis (the
 * standard one, 14695981039346656037, with its last digit lost). It is part
 * of the format: files written so far carry it. */
#define IR_CHECKSUM_BASIS 1469598103934665603ull

static uint64_t checksum(const uint8_t *p, size_t n)
{
    return mera_fnv1a64_from(IR_CHECKSUM_BASIS, p, n);
}

/* ---- writer ------------------------------------------------------------ */

static void put_str(mera_writer *w, const char *s)
{
    size_t n = strlen(s);
    mera_put_u32(w, (uint32_t)n);
    mera_put_bytes(w, s, n);
}

static void put_type(mera_writer *w, const mera_type *t)
{
    mera_put_u8(w, (uint8_t)t->dtype);
    mera_put_u8(w, (uint8_t)t->rank);
    mera_put_u8(w, (uint8_t)t->layout);
    for (int i = 0; i < t->rank; i++)
        mera_put_i64(w, t->shape[i]);
    mera_put_u8(w, (uint8_t)t->q.kind);
    if (t->q.kind == MERA_QUANT_PER_TENSOR) {
        mera_put_f64(w, t->q.scale);
        mera_put_i32(w, t->q.zero_point);
    } else if (t->q.kind == MERA_QUANT_PER_AXIS) {
        mera_put_i32(w, t->q.axis);
        mera_put_i64(w, t->q.count);
        mera_put_bytes(w, t->q.scales, (size_t)t->q.count * sizeof(double));
        mera_put_bytes(w, t->q.zero_points, (size_t)t->q.count * sizeof(int32_t));
    }
}

static void put_attr(mera_writer *w, const mera_attr *a)
{
    put_str(w, a->key);
    mera_put_u8(w, (uint8_t)a->kind);
    switch (a->kind) {
    case MERA_ATTR_INT: mera_put_i64(w, a->i); break;
    case MERA_ATTR_FLOAT: mera_put_f64(w, a->f); break;
    case MERA_ATTR_STRING: put_str(w, a->s); break;
    case MERA_ATTR_INTS:
        mera_put_u32(w, (uint32_t)a->count);
        mera_put_bytes(w, a->ints, (size_t)a->count * sizeof(int64_t));
        break;
    case MERA_ATTR_FLOATS:
        mera_put_u32(w, (uint32_t)a->count);
        mera_put_bytes(w, a->floats, (size_t)a->count * sizeof(double));
        break;
    }
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

mera_status mera_graph_serialize(const mera_graph *g, uint8_t **out, size_t *out_len, mera_error *err)
{
    if (!host_is_little_endian())
        return mera_fail(err, MERA_ERR_UNSUPPORTED, "the binary IR format is only implemented on little-endian hosts");
    mera_writer w = {0};
    /* header placeholder, filled in at the end */
    uint8_t zero[HEADER_SIZE] = {0};
    mera_put_bytes(&w, zero, sizeof zero);
    put_str(&w, mera_graph_name(g));
    put_str(&w, mera_rounding_name(mera_graph_rounding(g)));
    uint32_t items = 0;
    for (int id = 0; id < mera_graph_num_values(g); id++) {
        const mera_value *v = mera_graph_value(g, id);
        items += v->kind != MERA_VALUE_NODE || v->output_index == 0;
    }
    mera_put_u32(&w, items);
    for (int id = 0; id < mera_graph_num_values(g); id++) {
        const mera_value *v = mera_graph_value(g, id);
        if (v->kind == MERA_VALUE_NODE) {
            if (v->output_index != 0)
                continue;
            const mera_node *n = mera_graph_node(g, v->producer);
            mera_put_u8(&w, ITEM_NODE);
            put_str(&w, n->name);
            put_str(&w, mera_op_table[n->op].name);
            mera_put_u32(&w, (uint32_t)n->n_inputs);
            for (int i = 0; i < n->n_inputs; i++)
                mera_put_i32(&w, n->inputs[i]);
            mera_put_u32(&w, (uint32_t)n->n_attrs);
            for (int i = 0; i < n->n_attrs; i++)
                put_attr(&w, &n->attrs[i]);
            mera_put_u8(&w, n->source != NULL);
            if (n->source)
                put_str(&w, n->source);
            continue;
        }
        mera_put_u8(&w, v->kind == MERA_VALUE_INPUT ? ITEM_INPUT : v->kind == MERA_VALUE_PARAM ? ITEM_PARAM : ITEM_CONST);
        put_str(&w, v->name);
        put_type(&w, &v->type);
        if (v->kind == MERA_VALUE_CONST) {
            size_t nbytes = mera_type_nbytes(&v->type);
            mera_put_u64(&w, nbytes);
            mera_put_bytes(&w, v->data, nbytes);
        }
    }
    mera_put_u32(&w, (uint32_t)mera_graph_num_outputs(g));
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        mera_put_i32(&w, mera_graph_output(g, i));
    if (w.oom) {
        free(w.buf);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory serializing graph '%s'", mera_graph_name(g));
    }
    uint64_t payload_len = w.len - HEADER_SIZE;
    uint64_t sum = checksum(w.buf + HEADER_SIZE, payload_len);
    uint32_t version = MERA_IR_FORMAT_VERSION, flags = 0;
    memcpy(w.buf, MERA_IR_MAGIC, 8);
    memcpy(w.buf + 8, &version, 4);
    memcpy(w.buf + 12, &flags, 4);
    memcpy(w.buf + 16, &payload_len, 8);
    memcpy(w.buf + 24, &sum, 8);
    *out = w.buf;
    *out_len = w.len;
    return MERA_OK;
}

/* ---- reader ------------------------------------------------------------ */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    mera_arena *arena;
    mera_error *err;
    int failed;
} reader;

static int take(reader *r, void *dst, size_t n, const char *field)
{
    if (r->failed)
        return -1;
    if (n > r->len - r->pos) {
        mera_fail(r->err, MERA_ERR_FORMAT, "truncated: %s needs %zu bytes at offset %zu, but only %zu remain",
                  field, n, r->pos, r->len - r->pos);
        r->failed = 1;
        return -1;
    }
    memcpy(dst, r->buf + r->pos, n);
    r->pos += n;
    return 0;
}

static int bad(reader *r, const char *fmt, const char *field, long long v)
{
    if (!r->failed) {
        char what[256];
        snprintf(what, sizeof what, fmt, v);
        mera_fail(r->err, MERA_ERR_FORMAT, "invalid %s at offset %zu: %s", field, r->pos, what);
        r->failed = 1;
    }
    return -1;
}

/* nbytes little-endian bytes of the field f; 0 once reading has failed */
static uint64_t get_le(reader *r, int nbytes, const char *f)
{
    uint8_t b[8] = {0};
    take(r, b, (size_t)nbytes, f);
    return mera_load_le(b, nbytes);
}

static uint8_t get_u8(reader *r, const char *f) { return (uint8_t)get_le(r, 1, f); }
static uint32_t get_u32(reader *r, const char *f) { return (uint32_t)get_le(r, 4, f); }
static int32_t get_i32(reader *r, const char *f) { return (int32_t)(uint32_t)get_le(r, 4, f); }
static int64_t get_i64(reader *r, const char *f) { return (int64_t)get_le(r, 8, f); }
static uint64_t get_u64(reader *r, const char *f) { return get_le(r, 8, f); }
static double get_f64(reader *r, const char *f) { return mera_f64_from_bits(get_le(r, 8, f)); }

/* A NUL-terminated arena copy of a length-prefixed string. */
static char *get_str(reader *r, const char *field)
{
    uint32_t n = get_u32(r, field);
    if (r->failed)
        return NULL;
    if (n > r->len - r->pos) {
        bad(r, "string length %lld runs past the end", field, (long long)n);
        return NULL;
    }
    char *s = mera_arena_alloc(r->arena, (size_t)n + 1);
    if (!s) {
        mera_fail(r->err, MERA_ERR_NOMEM, "out of memory");
        r->failed = 1;
        return NULL;
    }
    take(r, s, n, field);
    if (memchr(s, 0, n)) {
        bad(r, "string contains a NUL byte%.0lld", field, 0);
        return NULL;
    }
    return s;
}

/* Bulk array of n elements of size elem, bounds-checked before allocating. */
static void *get_array(reader *r, uint64_t n, size_t elem, const char *field)
{
    if (r->failed)
        return NULL;
    if (n > (r->len - r->pos) / elem) {
        bad(r, "%lld elements run past the end", field, (long long)n);
        return NULL;
    }
    void *p = mera_arena_alloc(r->arena, (size_t)n * elem);
    if (!p) {
        mera_fail(r->err, MERA_ERR_NOMEM, "out of memory");
        r->failed = 1;
        return NULL;
    }
    take(r, p, (size_t)n * elem, field);
    return p;
}

static int get_type(reader *r, mera_type *t)
{
    memset(t, 0, sizeof *t);
    t->dtype = (mera_dtype)get_u8(r, "dtype");
    t->rank = get_u8(r, "rank");
    t->layout = (mera_layout)get_u8(r, "layout");
    if (r->failed)
        return -1;
    if ((unsigned)t->dtype >= MERA_DTYPE_COUNT)
        return bad(r, "dtype code %lld", "dtype", (long long)t->dtype);
    if (t->rank > MERA_MAX_RANK)
        return bad(r, "rank %lld exceeds the maximum", "rank", (long long)t->rank);
    if ((unsigned)t->layout >= MERA_LAYOUT_COUNT)
        return bad(r, "layout code %lld", "layout", (long long)t->layout);
    for (int i = 0; i < t->rank; i++)
        t->shape[i] = get_i64(r, "shape");
    uint8_t qk = get_u8(r, "quantization kind");
    if (r->failed)
        return -1;
    t->q.kind = (mera_quant_kind)qk;
    if (qk == MERA_QUANT_PER_TENSOR) {
        t->q.count = 1;
        t->q.scale = get_f64(r, "scale");
        t->q.zero_point = get_i32(r, "zero point");
    } else if (qk == MERA_QUANT_PER_AXIS) {
        t->q.axis = get_i32(r, "quantization axis");
        int64_t count = get_i64(r, "scale count");
        if (r->failed)
            return -1;
        if (count < 1 || count > ((int64_t)1 << 32))
            return bad(r, "scale count %lld", "scale count", (long long)count);
        t->q.count = count;
        t->q.scales = get_array(r, (uint64_t)count, sizeof(double), "scales");
        t->q.zero_points = get_array(r, (uint64_t)count, sizeof(int32_t), "zero points");
    } else if (qk != MERA_QUANT_NONE) {
        return bad(r, "quantization kind %lld", "quantization kind", (long long)qk);
    }
    if (r->failed)
        return -1;
    mera_error e;
    if (mera_type_validate(t, &e)) {
        mera_fail(r->err, MERA_ERR_FORMAT, "invalid type at offset %zu: %s", r->pos, e.msg);
        r->failed = 1;
        return -1;
    }
    return 0;
}

static int get_attr(reader *r, mera_attr *a)
{
    memset(a, 0, sizeof *a);
    a->key = get_str(r, "attribute key");
    uint8_t kind = get_u8(r, "attribute kind");
    if (r->failed)
        return -1;
    a->kind = (mera_attr_kind)kind;
    switch (kind) {
    case MERA_ATTR_INT: a->i = get_i64(r, "int attribute"); break;
    case MERA_ATTR_FLOAT: a->f = get_f64(r, "float attribute"); break;
    case MERA_ATTR_STRING: a->s = get_str(r, "string attribute"); break;
    case MERA_ATTR_INTS:
    case MERA_ATTR_FLOATS: {
        uint32_t n = get_u32(r, "attribute length");
        if (n > 64)
            return bad(r, "%lld values (at most 64)", "attribute length", (long long)n);
        a->count = (int)n;
        if (kind == MERA_ATTR_INTS)
            a->ints = get_array(r, n, sizeof(int64_t), "ints attribute");
        else
            a->floats = get_array(r, n, sizeof(double), "floats attribute");
        break;
    }
    default:
        return bad(r, "attribute kind %lld", "attribute kind", (long long)kind);
    }
    return r->failed ? -1 : 0;
}

mera_graph *mera_graph_deserialize(const uint8_t *buf, size_t len, mera_error *err)
{
    if (!host_is_little_endian()) {
        mera_fail(err, MERA_ERR_UNSUPPORTED, "the binary IR format is only implemented on little-endian hosts");
        return NULL;
    }
    if (len < HEADER_SIZE) {
        mera_fail(err, MERA_ERR_FORMAT, "truncated: %zu bytes is shorter than the %d-byte header", len, HEADER_SIZE);
        return NULL;
    }
    if (memcmp(buf, MERA_IR_MAGIC, 8) != 0) {
        mera_fail(err, MERA_ERR_FORMAT, "not a mera IR file (bad magic)");
        return NULL;
    }
    uint32_t version, flags;
    uint64_t payload_len, sum;
    memcpy(&version, buf + 8, 4);
    memcpy(&flags, buf + 12, 4);
    memcpy(&payload_len, buf + 16, 8);
    memcpy(&sum, buf + 24, 8);
    if (version != MERA_IR_FORMAT_VERSION && version != 1) {
        mera_fail(err, MERA_ERR_FORMAT, "format version %u is not supported (this build reads versions 1 to %u)",
                  version, MERA_IR_FORMAT_VERSION);
        return NULL;
    }
    if (flags != 0) {
        mera_fail(err, MERA_ERR_FORMAT, "unknown header flags 0x%x", flags);
        return NULL;
    }
    if (payload_len != len - HEADER_SIZE) {
        mera_fail(err, MERA_ERR_FORMAT, "%s: the header announces %llu payload bytes but %zu are present",
                  payload_len > len - HEADER_SIZE ? "truncated" : "trailing data",
                  (unsigned long long)payload_len, len - HEADER_SIZE);
        return NULL;
    }
    if (checksum(buf + HEADER_SIZE, payload_len) != sum) {
        mera_fail(err, MERA_ERR_FORMAT, "checksum mismatch: the data is corrupted");
        return NULL;
    }

    /* Strings and arrays are read into a scratch arena, then copied into the
     * graph by the ordinary construction calls. */
    mera_arena scratch;
    mera_arena_init(&scratch);
    reader r = {buf, len, HEADER_SIZE, &scratch, err, 0};
    mera_graph *g = NULL;
    char *name = get_str(&r, "graph name");
    mera_rounding rounding = MERA_ROUNDING_ZP_BEFORE_ROUNDING; /* version 1 */
    if (version >= 2) {
        size_t at = r.pos;
        char *rname = get_str(&r, "rounding");
        if (!r.failed && mera_rounding_parse(rname, &rounding)) {
            mera_fail(err, MERA_ERR_FORMAT, "graph rounding at offset %zu: unknown mode '%s'", at, rname);
            goto fail;
        }
    }
    uint32_t items = get_u32(&r, "item count");
    if (r.failed)
        goto fail;
    g = mera_graph_new(name);
    if (!g) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    mera_graph_set_rounding(g, rounding);
    for (uint32_t it = 0; it < items; it++) {
        size_t at = r.pos;
        uint8_t tag = get_u8(&r, "item tag");
        if (r.failed)
            goto fail;
        if (tag == ITEM_INPUT || tag == ITEM_PARAM || tag == ITEM_CONST) {
            char *vname = get_str(&r, "value name");
            mera_type t;
            if (get_type(&r, &t))
                goto fail;
            int id;
            if (tag == ITEM_CONST) {
                uint64_t nbytes = get_u64(&r, "const size");
                if (r.failed)
                    goto fail;
                if (nbytes != mera_type_nbytes(&t)) {
                    bad(&r, "const holds %lld bytes but its type needs a different size", "const size",
                        (long long)nbytes);
                    goto fail;
                }
                if (nbytes > r.len - r.pos) {
                    bad(&r, "const data of %lld bytes runs past the end", "const data", (long long)nbytes);
                    goto fail;
                }
                id = mera_graph_add_const(g, vname, &t, r.buf + r.pos, 1, err);
                r.pos += nbytes;
            } else if (tag == ITEM_INPUT) {
                id = mera_graph_add_input(g, vname, &t, err);
            } else {
                id = mera_graph_add_param(g, vname, &t, err);
            }
            if (id < 0) {
                mera_error_prefix(err, "invalid value at offset %zu: ", at);
                if (err)
                    err->code = MERA_ERR_FORMAT;
                goto fail;
            }
        } else if (tag == ITEM_NODE) {
            char *nname = get_str(&r, "node name");
            char *opname = get_str(&r, "op name");
            uint32_t n_in = get_u32(&r, "input count");
            if (r.failed)
                goto fail;
            int op = mera_op_lookup(opname);
            if (op < 0) {
                mera_fail(err, MERA_ERR_FORMAT, "node '%s' at offset %zu has unknown op '%s'", nname, at, opname);
                goto fail;
            }
            if (n_in > MERA_MAX_NODE_INPUTS) {
                bad(&r, "%lld inputs", "input count", (long long)n_in);
                goto fail;
            }
            int ins[MERA_MAX_NODE_INPUTS];
            for (uint32_t i = 0; i < n_in; i++)
                ins[i] = get_i32(&r, "input id");
            uint32_t n_attrs = get_u32(&r, "attribute count");
            if (r.failed)
                goto fail;
            if (n_attrs > 64) {
                bad(&r, "%lld attributes", "attribute count", (long long)n_attrs);
                goto fail;
            }
            mera_attr attrs[64];
            for (uint32_t i = 0; i < n_attrs; i++)
                if (get_attr(&r, &attrs[i]))
                    goto fail;
            uint8_t has_src = get_u8(&r, "source flag");
            char *src = has_src ? get_str(&r, "source") : NULL;
            if (r.failed)
                goto fail;
            int outs[MERA_MAX_NODE_OUTPUTS];
            if (mera_graph_add_node(g, op, nname, ins, (int)n_in, attrs, (int)n_attrs, src, outs,
                                    MERA_MAX_NODE_OUTPUTS, err) < 0) {
                mera_error_prefix(err, "invalid node at offset %zu: ", at);
                if (err)
                    err->code = MERA_ERR_FORMAT;
                goto fail;
            }
        } else {
            bad(&r, "item tag %lld", "item tag", (long long)tag);
            goto fail;
        }
    }
    uint32_t n_out = get_u32(&r, "output count");
    if (r.failed)
        goto fail;
    if (n_out > (uint32_t)mera_graph_num_values(g) + 1) {
        bad(&r, "%lld outputs", "output count", (long long)n_out);
        goto fail;
    }
    int *outs = get_array(&r, n_out, sizeof(int32_t), "output ids");
    if (r.failed)
        goto fail;
    if (mera_graph_set_outputs(g, outs, (int)n_out, err)) {
        if (err)
            err->code = MERA_ERR_FORMAT;
        goto fail;
    }
    if (r.pos != r.len) {
        bad(&r, "%lld unread bytes after the graph", "payload end", (long long)(r.len - r.pos));
        goto fail;
    }
    mera_arena_free(&scratch);
    return g;

fail:
    mera_arena_free(&scratch);
    mera_graph_free(g);
    return NULL;
}
