/* DNA programs: freeing, the opcode tables, and the serialized form.
 *
 * The serialized form is written field by field, little-endian, never as
 * raw structs: the bytes do not depend on the compiler's padding or the
 * host's byte order (docs/isa.md gives the layout byte by byte). The
 * reader trusts nothing: every count is bounded by the bytes that remain
 * before anything is allocated, the checksum is verified before any field
 * is interpreted, and every field is range-checked (dna_program_validate,
 * validate.c), so a corrupt or hostile buffer gives a MERA_ERR_FORMAT
 * naming the field, never a crash or a huge allocation. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "isa/isa.h"
#include "util/bytes.h"

#define DNA_MAGIC "MERADNA\n"
#define DNA_MAGIC_LEN 8
#define DNA_CHECKSUM_LEN 8

/* Serialized sizes of the fixed parts (docs/isa.md). */
#define SZ_HEADER (DNA_MAGIC_LEN + 4 + 32) /* magic, version, platform */
#define SZ_LAYER 16
#define SZ_INSN_HEAD 8
#define SZ_DMA 68
#define SZ_CONV 52
#define SZ_TILE 20
#define SZ_VEC_FIXED (4 + SZ_TILE + 16) /* n_src, dst, origin; then n_src tiles */
#define SZ_SEGMENT 32

void dna_program_free(dna_program *p)
{
    if (!p)
        return;
    free(p->layers);
    free(p->insns);
    free(p->segments);
    free(p->value_dram);
    free(p->params_image);
    free(p);
}

int dna_opcode_queue(int opcode)
{
    switch (opcode) {
    case DNA_LOAD:
        return DNA_Q_LOAD;
    case DNA_CONV:
    case DNA_VEC:
    case DNA_NOP:
        return DNA_Q_COMPUTE;
    case DNA_STORE:
        return DNA_Q_STORE;
    default:
        return -1;
    }
}

const char *dna_opcode_name(int opcode)
{
    switch (opcode) {
    case DNA_LOAD:
        return "LOAD";
    case DNA_STORE:
        return "STORE";
    case DNA_CONV:
        return "CONV";
    case DNA_VEC:
        return "VEC";
    case DNA_NOP:
        return "NOP";
    default:
        return "?";
    }
}

/* ---- writing ----------------------------------------------------------- */

static void put_tile(mera_writer *w, const dna_tile *t)
{
    mera_put_u32(w, t->addr);
    for (int k = 0; k < 4; k++)
        mera_put_i32(w, t->ext[k]);
}

static mera_status bad_arg(mera_error *err, const char *what)
{
    return mera_fail(err, MERA_ERR_INVALID, "DNA program: cannot serialize: %s", what);
}

mera_status dna_program_serialize(const dna_program *p, uint8_t **out, size_t *out_len, mera_error *err)
{
    *out = NULL;
    *out_len = 0;
    /* the counts and pointers the writer walks must be sane */
    if (!p)
        return bad_arg(err, "no program");
    if (p->n_layers < 0 || (p->n_layers && !p->layers))
        return bad_arg(err, "bad layer table");
    if (p->n_insns < 0 || (p->n_insns && !p->insns))
        return bad_arg(err, "bad instruction table");
    if (p->n_segments < 0 || (p->n_segments && !p->segments))
        return bad_arg(err, "bad segment table");
    if (p->n_values < 0 || (p->n_values && !p->value_dram))
        return bad_arg(err, "bad value table");
    if (p->params_bytes < 0 || (p->params_bytes && !p->params_image))
        return bad_arg(err, "bad constant image");
    mera_writer w = {0};
    mera_put_bytes(&w, DNA_MAGIC, DNA_MAGIC_LEN);
    mera_put_u32(&w, DNA_ISA_VERSION);
    char platform[32] = {0};
    /* at most 31 characters: the stored name is always NUL-terminated */
    for (size_t i = 0; i < sizeof platform - 1 && p->platform[i]; i++)
        platform[i] = p->platform[i];
    mera_put_bytes(&w, platform, sizeof platform);
    mera_put_i32(&w, p->n_layers);
    for (int i = 0; i < p->n_layers; i++) {
        mera_put_i32(&w, p->layers[i].node);
        mera_put_i32(&w, p->layers[i].reserved);
        mera_put_i64(&w, p->layers[i].macs);
    }
    mera_put_i32(&w, p->n_insns);
    for (int i = 0; i < p->n_insns; i++) {
        const dna_insn *in = &p->insns[i];
        mera_put_u8(&w, in->opcode);
        mera_put_u8(&w, in->deps);
        mera_put_u16(&w, in->reserved);
        mera_put_i32(&w, in->layer);
        switch (in->opcode) {
        case DNA_LOAD:
        case DNA_STORE: {
            const dna_dma *d = &in->u.dma;
            mera_put_u8(&w, d->mem);
            mera_put_u8(&w, d->pad_value);
            mera_put_u16(&w, d->reserved);
            mera_put_i32(&w, d->rows);
            mera_put_i32(&w, d->cols);
            mera_put_i32(&w, d->run_bytes);
            mera_put_i32(&w, d->pad_top);
            mera_put_i32(&w, d->pad_bottom);
            mera_put_i32(&w, d->pad_left);
            mera_put_i32(&w, d->pad_right);
            mera_put_i64(&w, d->dram);
            mera_put_i64(&w, d->dram_row_stride);
            mera_put_i64(&w, d->dram_col_stride);
            mera_put_u32(&w, d->sram);
            mera_put_u32(&w, d->sram_row_stride);
            mera_put_u32(&w, d->sram_col_stride);
            break;
        }
        case DNA_CONV: {
            const dna_conv *c = &in->u.conv;
            mera_put_u32(&w, c->in_addr);
            mera_put_u32(&w, c->wgt_addr);
            mera_put_u32(&w, c->out_addr);
            mera_put_i32(&w, c->in_h);
            mera_put_i32(&w, c->in_w);
            mera_put_i32(&w, c->in_c);
            mera_put_i32(&w, c->out_h);
            mera_put_i32(&w, c->out_w);
            mera_put_i32(&w, c->oc0);
            mera_put_i32(&w, c->oc_n);
            mera_put_i32(&w, c->depthwise_saturate);
            mera_put_i32(&w, c->rounding);
            mera_put_i64(&w, c->wgt_dram);
            break;
        }
        case DNA_VEC: {
            const dna_vec *v = &in->u.vec;
            if (v->n_src < 0 || v->n_src > DNA_MAX_SRC) {
                free(w.buf);
                return mera_fail(err, MERA_ERR_INVALID,
                                 "DNA program: cannot serialize: instruction %d (VEC): n_src %d not in [0, %d]", i,
                                 (int)v->n_src, DNA_MAX_SRC);
            }
            mera_put_i32(&w, v->n_src);
            mera_put_i32(&w, v->rounding);
            put_tile(&w, &v->dst);
            for (int k = 0; k < 4; k++)
                mera_put_i32(&w, v->origin[k]);
            for (int s = 0; s < v->n_src; s++)
                put_tile(&w, &v->src[s]);
            break;
        }
        case DNA_NOP: /* the head only: a NOP is its dependency tokens */
            break;
        default:
            free(w.buf);
            return mera_fail(err, MERA_ERR_INVALID, "DNA program: cannot serialize: instruction %d: unknown opcode %d",
                             i, (int)in->opcode);
        }
    }
    mera_put_i32(&w, p->n_segments);
    for (int i = 0; i < p->n_segments; i++) {
        const dna_segment *s = &p->segments[i];
        mera_put_i32(&w, s->kind);
        mera_put_i32(&w, s->node);
        mera_put_i32(&w, s->first);
        mera_put_i32(&w, s->count);
        mera_put_i64(&w, s->host_in_bytes);
        mera_put_i64(&w, s->host_out_bytes);
    }
    mera_put_i32(&w, p->n_values);
    for (int i = 0; i < p->n_values; i++)
        mera_put_i64(&w, p->value_dram[i]);
    mera_put_i64(&w, p->params_bytes);
    if (p->params_bytes)
        mera_put_bytes(&w, p->params_image, (size_t)p->params_bytes);
    mera_put_i64(&w, p->dram_bytes);
    mera_put_u32(&w, p->act_bytes);
    mera_put_u32(&w, p->wgt_bytes);
    mera_put_u32(&w, p->acc_bytes);
    if (!w.oom)
        mera_put_u64(&w, mera_fnv1a64(w.buf, w.len));
    if (w.oom) {
        free(w.buf);
        return mera_fail(err, MERA_ERR_NOMEM, "DNA program: out of memory serializing");
    }
    *out = w.buf;
    *out_len = w.len;
    return MERA_OK;
}

/* ---- reading ----------------------------------------------------------- */

typedef struct {
    const uint8_t *buf;
    size_t len; /* bytes before the checksum */
    size_t pos;
    mera_error *err;
    int failed;
} reader;

#define FMT_FAIL(r, ...) (r->failed = 1, mera_fail((r)->err, MERA_ERR_FORMAT, "DNA program: " __VA_ARGS__))

static size_t remaining(const reader *r)
{
    return r->len - r->pos;
}

/* Read n bytes of the field what; a short buffer is a truncation error. */
static const uint8_t *take(reader *r, size_t n, const char *what)
{
    if (r->failed)
        return NULL;
    if (remaining(r) < n) {
        FMT_FAIL(r, "truncated: %s at offset %zu needs %zu bytes, %zu left", what, r->pos, n, remaining(r));
        return NULL;
    }
    const uint8_t *p = r->buf + r->pos;
    r->pos += n;
    return p;
}

static uint64_t get_le(reader *r, int nbytes, const char *what)
{
    const uint8_t *p = take(r, (size_t)nbytes, what);
    return p ? mera_load_le(p, nbytes) : 0;
}

static uint8_t get_u8(reader *r, const char *what) { return (uint8_t)get_le(r, 1, what); }
static uint16_t get_u16(reader *r, const char *what) { return (uint16_t)get_le(r, 2, what); }
static uint32_t get_u32(reader *r, const char *what) { return (uint32_t)get_le(r, 4, what); }
static int32_t get_i32(reader *r, const char *what) { return (int32_t)(uint32_t)get_le(r, 4, what); }
static int64_t get_i64(reader *r, const char *what) { return (int64_t)get_le(r, 8, what); }

/* A table count: non-negative and no larger than the remaining bytes
 * allow at min_size bytes per entry, so no corrupt count can make us
 * allocate more than the buffer's size. */
static int get_count(reader *r, const char *what, size_t min_size)
{
    int32_t n = get_i32(r, what);
    if (r->failed)
        return -1;
    if (n < 0) {
        FMT_FAIL(r, "%s %d is negative", what, (int)n);
        return -1;
    }
    if ((size_t)n > remaining(r) / min_size) {
        FMT_FAIL(r, "%s %d needs at least %zu bytes, %zu left", what, (int)n, (size_t)n * min_size, remaining(r));
        return -1;
    }
    return n;
}

static void get_tile(reader *r, dna_tile *t)
{
    t->addr = get_u32(r, "tile address");
    for (int k = 0; k < 4; k++)
        t->ext[k] = get_i32(r, "tile extent");
}

/* malloc that never returns NULL for zero entries */
static void *alloc_n(size_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

static dna_program *deserialize(const uint8_t *buf, size_t len, int n_nodes, int n_values, int borrow,
                                mera_error *err)
{
    if (!buf || len < DNA_MAGIC_LEN || memcmp(buf, DNA_MAGIC, DNA_MAGIC_LEN) != 0) {
        mera_fail(err, MERA_ERR_FORMAT, "DNA program: not a DNA program (bad magic; expected \"MERADNA\\n\")");
        return NULL;
    }
    if (len < DNA_MAGIC_LEN + 4) {
        mera_fail(err, MERA_ERR_FORMAT, "DNA program: truncated: %zu bytes, no version", len);
        return NULL;
    }
    uint32_t version = (uint32_t)mera_load_le(buf + DNA_MAGIC_LEN, 4);
    if (version != DNA_ISA_VERSION) {
        mera_fail(err, MERA_ERR_FORMAT,
                  "DNA program: ISA version %u, but this build reads version %u only; re-run the scheduler", version,
                  (unsigned)DNA_ISA_VERSION);
        return NULL;
    }
    if (len < SZ_HEADER + DNA_CHECKSUM_LEN) {
        mera_fail(err, MERA_ERR_FORMAT, "DNA program: truncated: %zu bytes, a program has at least %d", len,
                  SZ_HEADER + DNA_CHECKSUM_LEN);
        return NULL;
    }
    size_t body = len - DNA_CHECKSUM_LEN;
    /* borrowed: the caller verified a checksum covering buf; not reading
     * the constant image here keeps its pages out of memory */
    if (!borrow && mera_fnv1a64(buf, body) != mera_load_le(buf + body, DNA_CHECKSUM_LEN)) {
        mera_fail(err, MERA_ERR_FORMAT, "DNA program: checksum mismatch (corrupt or truncated, %zu bytes)", len);
        return NULL;
    }
    reader rd = {buf, body, SZ_HEADER - 32, err, 0}, *r = &rd;
    dna_program *p = calloc(1, sizeof *p);
    if (!p) {
        mera_fail(err, MERA_ERR_NOMEM, "DNA program: out of memory");
        return NULL;
    }
    p->version = version;
    memcpy(p->platform, take(r, 32, "platform"), 32);

    int n = get_count(r, "layer count", SZ_LAYER);
    if (n >= 0) {
        p->n_layers = n;
        if (!(p->layers = alloc_n((size_t)n, sizeof *p->layers)))
            goto nomem;
        for (int i = 0; i < n; i++) {
            p->layers[i].node = get_i32(r, "layer node");
            p->layers[i].reserved = get_i32(r, "layer reserved");
            p->layers[i].macs = get_i64(r, "layer macs");
        }
    }
    /* the smallest instruction is a NOP, its head alone */
    n = get_count(r, "instruction count", SZ_INSN_HEAD);
    if (n >= 0) {
        p->n_insns = n;
        if (!(p->insns = alloc_n((size_t)n, sizeof *p->insns)))
            goto nomem;
        for (int i = 0; i < n && !r->failed; i++) {
            dna_insn *in = &p->insns[i];
            in->opcode = get_u8(r, "opcode");
            in->deps = get_u8(r, "deps");
            in->reserved = get_u16(r, "reserved");
            in->layer = get_i32(r, "layer");
            if (r->failed)
                break;
            switch (in->opcode) {
            case DNA_LOAD:
            case DNA_STORE: {
                dna_dma *d = &in->u.dma;
                d->mem = get_u8(r, "DMA mem");
                d->pad_value = get_u8(r, "DMA pad_value");
                d->reserved = get_u16(r, "DMA reserved");
                d->rows = get_i32(r, "DMA rows");
                d->cols = get_i32(r, "DMA cols");
                d->run_bytes = get_i32(r, "DMA run_bytes");
                d->pad_top = get_i32(r, "DMA pad_top");
                d->pad_bottom = get_i32(r, "DMA pad_bottom");
                d->pad_left = get_i32(r, "DMA pad_left");
                d->pad_right = get_i32(r, "DMA pad_right");
                d->dram = get_i64(r, "DMA dram");
                d->dram_row_stride = get_i64(r, "DMA dram_row_stride");
                d->dram_col_stride = get_i64(r, "DMA dram_col_stride");
                d->sram = get_u32(r, "DMA sram");
                d->sram_row_stride = get_u32(r, "DMA sram_row_stride");
                d->sram_col_stride = get_u32(r, "DMA sram_col_stride");
                break;
            }
            case DNA_CONV: {
                dna_conv *c = &in->u.conv;
                c->in_addr = get_u32(r, "CONV in_addr");
                c->wgt_addr = get_u32(r, "CONV wgt_addr");
                c->out_addr = get_u32(r, "CONV out_addr");
                c->in_h = get_i32(r, "CONV in_h");
                c->in_w = get_i32(r, "CONV in_w");
                c->in_c = get_i32(r, "CONV in_c");
                c->out_h = get_i32(r, "CONV out_h");
                c->out_w = get_i32(r, "CONV out_w");
                c->oc0 = get_i32(r, "CONV oc0");
                c->oc_n = get_i32(r, "CONV oc_n");
                c->depthwise_saturate = get_i32(r, "CONV depthwise_saturate");
                c->rounding = get_i32(r, "CONV rounding");
                c->wgt_dram = get_i64(r, "CONV wgt_dram");
                break;
            }
            case DNA_VEC: {
                dna_vec *v = &in->u.vec;
                v->n_src = get_i32(r, "VEC n_src");
                if (!r->failed && (v->n_src < 1 || v->n_src > DNA_MAX_SRC)) {
                    FMT_FAIL(r, "insn %d (VEC): field n_src = %d not in [1, %d]", i, (int)v->n_src, DNA_MAX_SRC);
                    break;
                }
                v->rounding = get_i32(r, "VEC rounding");
                get_tile(r, &v->dst);
                for (int k = 0; k < 4; k++)
                    v->origin[k] = get_i32(r, "VEC origin");
                for (int s = 0; s < v->n_src; s++)
                    get_tile(r, &v->src[s]);
                break;
            }
            case DNA_NOP:
                break;
            default:
                FMT_FAIL(r, "insn %d: field opcode = %u is unknown", i, (unsigned)in->opcode);
                break;
            }
        }
    }
    n = get_count(r, "segment count", SZ_SEGMENT);
    if (n >= 0) {
        p->n_segments = n;
        if (!(p->segments = alloc_n((size_t)n, sizeof *p->segments)))
            goto nomem;
        for (int i = 0; i < n; i++) {
            dna_segment *s = &p->segments[i];
            s->kind = get_i32(r, "segment kind");
            s->node = get_i32(r, "segment node");
            s->first = get_i32(r, "segment first");
            s->count = get_i32(r, "segment count");
            s->host_in_bytes = get_i64(r, "segment host_in_bytes");
            s->host_out_bytes = get_i64(r, "segment host_out_bytes");
        }
    }
    n = get_count(r, "value count", 8);
    if (n >= 0) {
        p->n_values = n;
        if (!(p->value_dram = alloc_n((size_t)n, sizeof *p->value_dram)))
            goto nomem;
        for (int i = 0; i < n; i++)
            p->value_dram[i] = get_i64(r, "value_dram");
    }
    p->params_bytes = get_i64(r, "params_bytes");
    if (!r->failed) {
        if (p->params_bytes < 0 || (uint64_t)p->params_bytes > remaining(r)) {
            FMT_FAIL(r, "params_bytes %lld: %zu bytes left", (long long)p->params_bytes, remaining(r));
        } else {
            const uint8_t *image = take(r, (size_t)p->params_bytes, "constant image");
            if (borrow) {
                p->params_image = (uint8_t *)(uintptr_t)image; /* read-only: the caller's buffer */
            } else {
                if (!(p->params_image = alloc_n((size_t)p->params_bytes, 1)))
                    goto nomem;
                memcpy(p->params_image, image, (size_t)p->params_bytes);
            }
        }
    }
    p->dram_bytes = get_i64(r, "dram_bytes");
    p->act_bytes = get_u32(r, "act_bytes");
    p->wgt_bytes = get_u32(r, "wgt_bytes");
    p->acc_bytes = get_u32(r, "acc_bytes");
    if (!r->failed && remaining(r) != 0)
        FMT_FAIL(r, "%zu unexpected bytes after the tables at offset %zu", remaining(r), r->pos);
    if (!r->failed && dna_program_validate(p, n_nodes, n_values, err))
        r->failed = 1;
    if (r->failed) {
        if (borrow)
            p->params_image = NULL;
        dna_program_free(p);
        return NULL;
    }
    return p;
nomem:
    if (borrow)
        p->params_image = NULL;
    dna_program_free(p);
    mera_fail(err, MERA_ERR_NOMEM, "DNA program: out of memory");
    return NULL;
}

dna_program *dna_program_deserialize(const uint8_t *buf, size_t len, int n_nodes, int n_values, mera_error *err)
{
    return deserialize(buf, len, n_nodes, n_values, 0, err);
}

dna_program *dna_program_deserialize_borrowed(const uint8_t *buf, size_t len, int n_nodes, int n_values,
                                              mera_error *err)
{
    return deserialize(buf, len, n_nodes, n_values, 1, err);
}
