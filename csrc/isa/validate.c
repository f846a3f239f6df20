/* The one rule set of a well-formed DNA program (isa.h, docs/isa.md),
 * checked by the deserializer (program.c) after reading and by the DNA
 * machine (sim/machine.c) before loading. It needs neither the graph nor
 * the platform: the graph's node and value counts when known, and the
 * graph itself only to name nodes in messages. The machine's further
 * checks (a CONV tile against its layer's geometry, a VEC tile against its
 * tensors, the buffer sizes against the platform) are in machine.c.
 *
 * Every count, address and extent comes from a file, so all arithmetic
 * is bounded before it is done: no check can overflow, and a program that
 * passes bounds the work of each of its instructions by its buffers. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "isa/isa.h"

typedef struct {
    const dna_program *p;
    const mera_graph *g; /* may be NULL: names nodes in messages */
    int n_nodes, n_values; /* -1: unknown */
    mera_error *err;
} vctx;

static mera_status bad(vctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static mera_status bad(vctx *c, const char *fmt, ...)
{
    char msg[MERA_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mera_fail(c->err, MERA_ERR_FORMAT, "DNA program: %s", msg);
}

/* "insn 12 (CONV, node 'conv1')", or "(CONV, layer 3)" without a graph,
 * or "(CONV)" when the layer itself is out of range. */
static const char *insn_where(const vctx *c, int i, char *buf, size_t n)
{
    const dna_insn *in = &c->p->insns[i];
    const char *op = dna_opcode_name(in->opcode);
    if (in->layer < 0 || in->layer >= c->p->n_layers)
        snprintf(buf, n, "insn %d (%s)", i, op);
    else if (c->g)
        snprintf(buf, n, "insn %d (%s, node '%s')", i, op,
                 mera_graph_node(c->g, c->p->layers[in->layer].node)->name);
    else
        snprintf(buf, n, "insn %d (%s, layer %d)", i, op, (int)in->layer);
    return buf;
}

#define INSN_BAD(c, i, fmt, ...)                                                           \
    do {                                                                                   \
        char where_[MERA_ERROR_MSG_LEN / 2];                                               \
        return bad((c), "%s: " fmt, insn_where((c), (i), where_, sizeof where_), __VA_ARGS__); \
    } while (0)

/* a * b for a, b >= 0, or -1 when the product exceeds 2^62 */
static int64_t mul_bounded(int64_t a, int64_t b)
{
    const int64_t lim = (int64_t)1 << 62;
    if (a < 0 || b < 0)
        return -1;
    if (a != 0 && b > lim / a)
        return -1;
    return a * b;
}

/* [addr, addr + bytes) inside [0, cap); bytes < 0 means "overflowed" */
static int fits(int64_t addr, int64_t bytes, int64_t cap)
{
    return addr >= 0 && bytes >= 0 && addr <= cap && bytes <= cap - addr;
}

/* ---- instructions ------------------------------------------------------ */

static mera_status check_deps(vctx *c, int i)
{
    const dna_insn *in = &c->p->insns[i];
    int q = dna_opcode_queue(in->opcode);
    if (in->deps & ~0xFu)
        INSN_BAD(c, i, "field deps = 0x%02x has bits beyond the four token flags", (unsigned)in->deps);
    if (q == DNA_Q_LOAD && (in->deps & (DNA_DEP_POP_PREV | DNA_DEP_PUSH_PREV)))
        INSN_BAD(c, i, "field deps = 0x%02x: the LOAD queue has no previous queue", (unsigned)in->deps);
    if (q == DNA_Q_STORE && (in->deps & (DNA_DEP_POP_NEXT | DNA_DEP_PUSH_NEXT)))
        INSN_BAD(c, i, "field deps = 0x%02x: the STORE queue has no next queue", (unsigned)in->deps);
    return MERA_OK;
}

static mera_status check_dma(vctx *c, int i)
{
    const dna_program *p = c->p;
    const dna_dma *d = &p->insns[i].u.dma;
    int load = p->insns[i].opcode == DNA_LOAD;
    if (load ? d->mem > DNA_MEM_WGT : d->mem != DNA_MEM_ACT)
        INSN_BAD(c, i, "field mem = %u is not %s", (unsigned)d->mem, load ? "ACT (0) or WGT (1)" : "ACT (0)");
    if (d->reserved)
        INSN_BAD(c, i, "field reserved = %u, not 0", (unsigned)d->reserved);
    if (d->rows < 1 || d->cols < 1 || d->run_bytes < 1)
        INSN_BAD(c, i, "field rows/cols/run_bytes must be >= 1, got %d/%d/%d", (int)d->rows, (int)d->cols,
                 (int)d->run_bytes);
    if (d->pad_top < 0 || d->pad_bottom < 0 || d->pad_left < 0 || d->pad_right < 0 ||
        (int64_t)d->pad_top + d->pad_bottom > d->rows || (int64_t)d->pad_left + d->pad_right > d->cols)
        INSN_BAD(c, i, "field pad_* (%d,%d,%d,%d) out of range for a %dx%d box", (int)d->pad_top,
                 (int)d->pad_bottom, (int)d->pad_left, (int)d->pad_right, (int)d->rows, (int)d->cols);
    if (!load && (d->pad_top || d->pad_bottom || d->pad_left || d->pad_right || d->pad_value))
        INSN_BAD(c, i, "field pad_*: a STORE has no padding, got (%d,%d,%d,%d) and pad_value %u", (int)d->pad_top,
                 (int)d->pad_bottom, (int)d->pad_left, (int)d->pad_right, (unsigned)d->pad_value);
    const char *buf = d->mem == DNA_MEM_WGT ? "WGT" : "ACT";
    int64_t cap = d->mem == DNA_MEM_WGT ? p->wgt_bytes : p->act_bytes;
    /* A box never holds more bytes than its buffer: this bounds the work of
     * one instruction (strides of 0 would otherwise let a small program
     * copy the same bytes billions of times). */
    int64_t bytes = mul_bounded(mul_bounded(d->rows, d->cols), d->run_bytes);
    if (bytes < 0 || bytes > cap)
        INSN_BAD(c, i, "field rows x cols x run_bytes: %d x %d x %d bytes exceed the %s buffer of %lld bytes",
                 (int)d->rows, (int)d->cols, (int)d->run_bytes, buf, (long long)cap);
    /* on-chip side: the whole box (its strides are unsigned) */
    int64_t r_span = mul_bounded(d->rows - 1, d->sram_row_stride), c_span = mul_bounded(d->cols - 1, d->sram_col_stride);
    if (r_span < 0 || c_span < 0 || r_span > cap || c_span > cap || !fits(d->sram, r_span + c_span + d->run_bytes, cap))
        INSN_BAD(c, i, "field sram: the box at %u (strides %u, %u) exceeds the %s buffer of %lld bytes",
                 (unsigned)d->sram, (unsigned)d->sram_row_stride, (unsigned)d->sram_col_stride, buf, (long long)cap);
    /* DRAM side: only the rows and columns that are not padding. The
     * addresses are affine in (r, c), so the extremes are corners. */
    if (d->rows - d->pad_top - d->pad_bottom == 0 || d->cols - d->pad_left - d->pad_right == 0)
        return MERA_OK; /* reads nothing */
    const int64_t lim = (int64_t)1 << 61;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            int64_t r = a ? d->rows - d->pad_bottom - 1 : d->pad_top, col = b ? d->cols - d->pad_right - 1 : d->pad_left;
            int64_t rs = d->dram_row_stride, cs = d->dram_col_stride;
            int64_t ro = rs == INT64_MIN ? -1 : mul_bounded(r, rs < 0 ? -rs : rs);
            int64_t co = cs == INT64_MIN ? -1 : mul_bounded(col, cs < 0 ? -cs : cs);
            if (ro < 0 || co < 0 || ro > lim || co > lim || d->dram > lim || d->dram < -lim)
                INSN_BAD(c, i, "field dram: address %lld with strides %lld, %lld is out of range", (long long)d->dram,
                         (long long)rs, (long long)cs);
            int64_t x = d->dram + (rs < 0 ? -ro : ro) + (cs < 0 ? -co : co);
            lo = x < lo ? x : lo;
            hi = x + d->run_bytes > hi ? x + d->run_bytes : hi;
        }
    int64_t params = p->params_bytes, total = p->dram_bytes;
    int in_params = lo >= 0 && hi <= params, in_acts = lo >= params && hi <= total;
    if (load && !in_params && !in_acts)
        INSN_BAD(c, i,
                 "field dram: reads DRAM [%lld, %lld), outside both the constant image [0, %lld) and the "
                 "activations [%lld, %lld)",
                 (long long)lo, (long long)hi, (long long)params, (long long)params, (long long)total);
    if (!load && !in_acts)
        INSN_BAD(c, i, "field dram: writes DRAM [%lld, %lld), outside the activations [%lld, %lld)%s", (long long)lo,
                 (long long)hi, (long long)params, (long long)total,
                 lo < params ? " (the constant image is read-only)" : "");
    return MERA_OK;
}

/* The requantization unit's rounding of a CONV or VEC: a mode of
 * mera_rounding, and the graph's when the graph is known (a program
 * scheduled for one rounding must not run a graph of another). */
static mera_status check_rounding(vctx *c, int i, int32_t rounding)
{
    const char *name = mera_rounding_name((mera_rounding)rounding);
    if (!name)
        INSN_BAD(c, i, "field rounding = %d is not a rounding mode (0 to %d)", (int)rounding, MERA_ROUNDING_COUNT - 1);
    if (c->g && (mera_rounding)rounding != mera_graph_rounding(c->g))
        INSN_BAD(c, i, "field rounding = %s, but the graph's rounding is %s", name,
                 mera_rounding_name(mera_graph_rounding(c->g)));
    return MERA_OK;
}

static mera_status check_conv(vctx *c, int i)
{
    const dna_program *p = c->p;
    mera_status st;
    const dna_conv *k = &p->insns[i].u.conv;
    if (k->in_h < 1 || k->in_w < 1 || k->in_c < 1 || k->out_h < 1 || k->out_w < 1 || k->oc_n < 1 || k->oc0 < 0)
        INSN_BAD(c, i, "fields in_h/in_w/in_c/out_h/out_w/oc_n must be >= 1 and oc0 >= 0, got %d/%d/%d/%d/%d/%d, %d",
                 (int)k->in_h, (int)k->in_w, (int)k->in_c, (int)k->out_h, (int)k->out_w, (int)k->oc_n, (int)k->oc0);
    if (k->depthwise_saturate != 0 && k->depthwise_saturate != 1)
        INSN_BAD(c, i, "field depthwise_saturate must be 0 or 1, got %d", (int)k->depthwise_saturate);
    if ((st = check_rounding(c, i, k->rounding)))
        return st;
    int64_t in_b = mul_bounded(mul_bounded(k->in_h, k->in_w), k->in_c);
    int64_t out_b = mul_bounded(mul_bounded(k->out_h, k->out_w), k->oc_n);
    if (!fits(k->in_addr, in_b, p->act_bytes))
        INSN_BAD(c, i, "field in_addr: the %dx%dx%d input tile at %u exceeds ACT (%u bytes)", (int)k->in_h,
                 (int)k->in_w, (int)k->in_c, (unsigned)k->in_addr, (unsigned)p->act_bytes);
    if (!fits(k->out_addr, out_b, p->act_bytes))
        INSN_BAD(c, i, "field out_addr: the %dx%dx%d output tile at %u exceeds ACT (%u bytes)", (int)k->out_h,
                 (int)k->out_w, (int)k->oc_n, (unsigned)k->out_addr, (unsigned)p->act_bytes);
    if (out_b * 4 > (int64_t)p->acc_bytes)
        INSN_BAD(c, i, "fields out_h/out_w/oc_n: %lld int32 accumulators exceed ACC (%u bytes)", (long long)out_b,
                 (unsigned)p->acc_bytes);
    if (k->in_addr < k->out_addr + out_b && k->out_addr < k->in_addr + in_b)
        INSN_BAD(c, i, "fields in_addr/out_addr: input [%u, +%lld) and output [%u, +%lld) tiles overlap in ACT",
                 (unsigned)k->in_addr, (long long)in_b, (unsigned)k->out_addr, (long long)out_b);
    if (k->wgt_addr >= p->wgt_bytes)
        INSN_BAD(c, i, "field wgt_addr = %u outside WGT (%u bytes)", (unsigned)k->wgt_addr, (unsigned)p->wgt_bytes);
    if (k->wgt_dram < 0 || k->wgt_dram >= p->params_bytes)
        INSN_BAD(c, i, "field wgt_dram = %lld outside the constant image [0, %lld)", (long long)k->wgt_dram,
                 (long long)p->params_bytes);
    return MERA_OK;
}

/* bytes of a tile, or -1 for an extent below 1 */
static int64_t tile_bytes(const dna_tile *t)
{
    int64_t b = 1;
    for (int d = 0; d < 4; d++)
        b = t->ext[d] < 1 ? -1 : mul_bounded(b, t->ext[d]);
    return b;
}

static mera_status check_vec(vctx *c, int i)
{
    const dna_program *p = c->p;
    const dna_vec *v = &p->insns[i].u.vec;
    mera_status st;
    if (v->n_src < 1 || v->n_src > DNA_MAX_SRC)
        INSN_BAD(c, i, "field n_src = %d not in [1, %d]", (int)v->n_src, DNA_MAX_SRC);
    if ((st = check_rounding(c, i, v->rounding)))
        return st;
    for (int s = 0; s <= v->n_src; s++) {
        const dna_tile *t = s < v->n_src ? &v->src[s] : &v->dst;
        char name[24];
        if (s < v->n_src)
            snprintf(name, sizeof name, "src[%d]", s);
        else
            snprintf(name, sizeof name, "dst");
        for (int d = 0; d < 4; d++)
            if (t->ext[d] < 1)
                INSN_BAD(c, i, "field %s.ext[%d] = %d is below 1", name, d, (int)t->ext[d]);
        int64_t b = tile_bytes(t);
        if (!fits(t->addr, b, p->act_bytes))
            INSN_BAD(c, i, "field %s.addr: the tile [%u, +%lld) exceeds ACT (%u bytes)", name, (unsigned)t->addr,
                     (long long)b, (unsigned)p->act_bytes);
    }
    for (int d = 0; d < 4; d++)
        if (v->origin[d] < 0)
            INSN_BAD(c, i, "field origin[%d] = %d is negative", d, (int)v->origin[d]);
    /* A source may not overlap the destination, except exactly (in place;
     * the machine allows that for elementwise layers only). */
    int64_t dlo = v->dst.addr, dhi = dlo + tile_bytes(&v->dst);
    for (int s = 0; s < v->n_src; s++) {
        int64_t lo = v->src[s].addr, hi = lo + tile_bytes(&v->src[s]);
        if (lo < dhi && dlo < hi && !(lo == dlo && hi == dhi))
            INSN_BAD(c, i, "field src[%d].addr: the source [%lld, %lld) overlaps the destination [%lld, %lld)", s,
                     (long long)lo, (long long)hi, (long long)dlo, (long long)dhi);
    }
    return MERA_OK;
}

static mera_status check_insn(vctx *c, int i)
{
    const dna_program *p = c->p;
    const dna_insn *in = &p->insns[i];
    mera_status st;
    if (dna_opcode_queue(in->opcode) < 0)
        INSN_BAD(c, i, "field opcode = %u is unknown", (unsigned)in->opcode);
    if (in->layer < 0 || in->layer >= p->n_layers)
        INSN_BAD(c, i, "field layer = %d outside [0, %d)", (int)in->layer, (int)p->n_layers);
    if (in->reserved)
        INSN_BAD(c, i, "field reserved = %u, not 0", (unsigned)in->reserved);
    if ((st = check_deps(c, i)))
        return st;
    switch (in->opcode) {
    case DNA_LOAD:
    case DNA_STORE:
        return check_dma(c, i);
    case DNA_CONV:
        return check_conv(c, i);
    case DNA_VEC:
        return check_vec(c, i);
    case DNA_NOP:
        return MERA_OK; /* its dependency tokens only */
    default:
        MERA_BUG("opcode with a queue but no check");
    }
    return MERA_OK;
}

/* ---- the program ------------------------------------------------------- */

static mera_status validate(vctx *c)
{
    const dna_program *p = c->p;
    mera_status st;
    if (!p)
        return bad(c, "no program");
    if (p->version != DNA_ISA_VERSION)
        return bad(c, "ISA version %u, but this build reads version %u only; re-run the scheduler",
                   (unsigned)p->version, (unsigned)DNA_ISA_VERSION);
    if (p->n_layers < 0 || p->n_insns < 0 || p->n_segments < 0 || p->n_values < 0 || (p->n_layers && !p->layers) ||
        (p->n_insns && !p->insns) || (p->n_segments && !p->segments) || (p->n_values && !p->value_dram))
        return bad(c, "tables are inconsistent (negative counts or missing tables)");
    if (memchr(p->platform, 0, sizeof p->platform) == NULL)
        return bad(c, "field platform: the name is not NUL-terminated");
    if (p->params_bytes < 0 || p->dram_bytes < p->params_bytes || (p->params_bytes && !p->params_image))
        return bad(c, "fields params_bytes/dram_bytes = %lld/%lld: need 0 <= params_bytes <= dram_bytes and the image",
                   (long long)p->params_bytes, (long long)p->dram_bytes);
    if (c->n_values >= 0 && p->n_values != c->n_values)
        return bad(c, "value table has %d entries, the graph %d values", (int)p->n_values, c->n_values);
    for (int l = 0; l < p->n_layers; l++) {
        const dna_layer *ly = &p->layers[l];
        if (ly->node < 0 || (c->n_nodes >= 0 && ly->node >= c->n_nodes))
            return bad(c, "layers[%d]: field node = %d out of range (%d nodes)", l, (int)ly->node, c->n_nodes);
        if (ly->reserved)
            return bad(c, "layers[%d]: field reserved = %d, not 0", l, (int)ly->reserved);
        if (ly->macs < 0)
            return bad(c, "layers[%d]: field macs = %lld is negative", l, (long long)ly->macs);
    }
    for (int i = 0; i < p->n_insns; i++)
        if ((st = check_insn(c, i)))
            return st;
    /* DNA segments cover the instructions in order, each exactly once. */
    int next = 0;
    for (int s = 0; s < p->n_segments; s++) {
        const dna_segment *seg = &p->segments[s];
        if (seg->kind == DNA_SEG_DNA) {
            if (seg->first < 0 || seg->count < 0 || seg->first > p->n_insns || seg->count > p->n_insns - seg->first)
                return bad(c, "segments[%d] (DNA): instructions [%d, +%d) outside the %d instructions", s,
                           (int)seg->first, (int)seg->count, (int)p->n_insns);
            if (seg->first != next)
                return bad(c,
                           "segments[%d] (DNA): instructions [%d, +%d) do not continue at insn %d (segments must "
                           "cover the instructions in order)",
                           s, (int)seg->first, (int)seg->count, next);
            if (seg->host_in_bytes < 0 || seg->host_out_bytes < 0)
                return bad(c, "segments[%d] (DNA): negative host_in_bytes/host_out_bytes", s);
            next += seg->count;
        } else if (seg->kind == DNA_SEG_HOST) {
            if (seg->node < 0 || (c->n_nodes >= 0 && seg->node >= c->n_nodes))
                return bad(c, "segments[%d] (HOST): field node = %d out of range (%d nodes)", s, (int)seg->node,
                           c->n_nodes);
        } else {
            return bad(c, "segments[%d]: field kind = %d is neither DNA (1) nor HOST (2)", s, (int)seg->kind);
        }
    }
    if (next != p->n_insns)
        return bad(c, "segments cover instructions [0, %d) of %d", next, (int)p->n_insns);
    for (int v = 0; v < p->n_values; v++) {
        int64_t at = p->value_dram[v];
        if (at != -1 && (at < 0 || at >= p->dram_bytes))
            return bad(c, "value_dram[%d] = %lld is neither -1 nor inside DRAM (%lld bytes)", v, (long long)at,
                       (long long)p->dram_bytes);
    }
    return MERA_OK;
}

mera_status dna_program_validate(const dna_program *p, int n_nodes, int n_values, mera_error *err)
{
    vctx c = {p, NULL, n_nodes, n_values, err};
    return validate(&c);
}

mera_status dna_program_validate_graph(const dna_program *p, const mera_graph *g, mera_error *err)
{
    vctx c = {p, g, mera_graph_num_nodes(g), mera_graph_num_values(g), err};
    return validate(&c);
}

int dna_program_reads_graph_data(const dna_program *p, const mera_graph *g, int v)
{
    if (v < 0 || v >= p->n_values || p->value_dram[v] >= 0)
        return 0;
    for (int s = 0; s < p->n_segments; s++)
        if (p->segments[s].kind == DNA_SEG_HOST) {
            const mera_node *node = mera_graph_node(g, p->segments[s].node);
            for (int q = 0; q < node->n_inputs; q++)
                if (node->inputs[q] == v)
                    return 1;
        }
    for (int o = 0; o < mera_graph_num_outputs(g); o++)
        if (mera_graph_output(g, o) == v)
            return 1;
    return 0;
}
