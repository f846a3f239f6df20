/* The DNA machine: loads (validates, prepares) and executes a DNA program
 * bit-exactly.
 *
 * The arithmetic is the kernels': a CONV instruction runs the layer's
 * quantized conv2d/dense kernel on a synthetic node describing just the
 * tile (padding materialised by the LOAD, so pad 0; the block's output
 * channels; the layer's depthwise-saturation decision), and a VEC runs the
 * layer's contract kernel on tile-shaped types. The tiles live in per-run
 * ACT/WGT buffers and DRAM, moved by LOAD/STORE exactly as dna_dma says.
 * Instructions of a DNA segment execute in the order the timing model
 * starts them, so a program whose tokens let a reader overtake its writer
 * computes wrong bytes (and trips the hazard check) instead of silently
 * right ones. */
#define _DEFAULT_SOURCE /* madvise, for dna_machine_options.release_const_pages */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "sim/machine_internal.h"
#include "util/threadpool.h"

/* ---- small helpers ------------------------------------------------------- */

static int is_quantized(const mera_type *t)
{
    return t->q.kind != MERA_QUANT_NONE;
}

static const mera_node *layer_node(const dna_machine *m, int layer)
{
    return mera_graph_node(m->g, m->prog->layers[layer].node);
}

mera_status sim_insn_fail(const dna_machine *m, mera_error *err, mera_status code, int i, const char *fmt, ...)
{
    char msg[MERA_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const dna_insn *in = &m->prog->insns[i];
    const char *node = in->layer >= 0 && in->layer < m->prog->n_layers ? layer_node(m, in->layer)->name : "?";
    return mera_fail(err, code, "insn %d (%s, node '%s'): %s", i, dna_opcode_name(in->opcode), node, msg);
}

/* Does [addr, addr + bytes) fit in [lo, hi)? In double: the operands come
 * from files and their int64 products may overflow; caps are far below
 * 2^53, so a true answer means the exact integer sums fit too. */
static int fits(double addr, double bytes, double lo, double hi)
{
    return addr >= lo && bytes >= 0 && addr + bytes <= hi;
}

/* ---- validation ---------------------------------------------------------- */

/* dna_program_validate_graph (isa/validate.c) checks every rule of a
 * well-formed program; what follows needs the graph or the platform: a
 * tile against its layer's geometry and tensors, the weight block against
 * the layer's weights, the addresses of the values a run reads or writes,
 * the buffers against the platform. */

static mera_status check_conv(const dna_machine *m, int i, const dna_conv_geom *geo, mera_error *err)
{
    const dna_program *prog = m->prog;
    const dna_conv *c = &prog->insns[i].u.conv;
    if ((int64_t)c->oc0 + c->oc_n > geo->o)
        return sim_insn_fail(m, err, MERA_ERR_FORMAT, i, "fields oc0/oc_n: [%d, %d) exceeds the layer's %lld output channels",
                         c->oc0, c->oc0 + c->oc_n, (long long)geo->o);
    if (geo->dense) {
        if (c->in_h != 1 || c->out_h != 1 || c->in_w != c->out_w || c->in_c != geo->c)
            return sim_insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "fields in_h/in_w/in_c/out_h/out_w: a dense tile is in [1][rows][%lld] -> out "
                             "[1][rows][oc_n], got in [%d][%d][%d] out [%d][%d]",
                             (long long)geo->c, c->in_h, c->in_w, c->in_c, c->out_h, c->out_w);
    } else {
        /* The tile holds whole groups, or lies inside one group. */
        int64_t g0 = c->oc0 / geo->og, g1 = ((int64_t)c->oc0 + c->oc_n - 1) / geo->og, ng = g1 - g0 + 1;
        if (ng > 1 && (c->oc0 % geo->og || c->oc_n % geo->og))
            return sim_insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "fields oc0/oc_n: [%d, %d) cuts groups of %lld output channels; a block holds whole "
                             "groups or lies inside one",
                             c->oc0, c->oc0 + c->oc_n, (long long)geo->og);
        if (c->in_c != ng * geo->cg)
            return sim_insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "field in_c = %d, but output channels [%d, %d) read %lld input channels", c->in_c, c->oc0,
                             c->oc0 + c->oc_n, (long long)(ng * geo->cg));
        int64_t eh = geo->dh * (geo->kh - 1) + 1, ew = geo->dw * (geo->kw - 1) + 1;
        if (c->in_h < eh || c->in_w < ew || (c->in_h - eh) / geo->sh + 1 != c->out_h ||
            (c->in_w - ew) / geo->sw + 1 != c->out_w)
            return sim_insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "fields in_h/in_w/out_h/out_w: a %dx%d input window does not give a %dx%d output with "
                             "the layer's %lldx%lld kernel, strides %lldx%lld, dilation %lldx%lld",
                             c->in_h, c->in_w, c->out_h, c->out_w, (long long)geo->kh, (long long)geo->kw,
                             (long long)geo->sh, (long long)geo->sw, (long long)geo->dh, (long long)geo->dw);
    }
    double blk = (double)c->oc_n * geo->kh * geo->kw * geo->cg + (geo->has_bias ? 4.0 * c->oc_n : 0);
    if (!fits(c->wgt_addr, blk, 0, prog->wgt_bytes))
        return sim_insn_fail(m, err, MERA_ERR_FORMAT, i, "field wgt_addr: weight block [%u, %.0f) exceeds WGT (%u bytes)",
                         c->wgt_addr, c->wgt_addr + blk, prog->wgt_bytes);
    if (!fits((double)c->wgt_dram, blk, 0, (double)prog->params_bytes))
        return sim_insn_fail(m, err, MERA_ERR_FORMAT, i,
                         "field wgt_dram: block [%lld, %.0f) is not inside the constant image [0, %lld)",
                         (long long)c->wgt_dram, (double)c->wgt_dram + blk, (long long)prog->params_bytes);
    return MERA_OK;
}

static mera_status check_vec(const dna_machine *m, int i, mera_error *err)
{
    const dna_program *prog = m->prog;
    const dna_vec *v = &prog->insns[i].u.vec;
    const mera_node *node = layer_node(m, prog->insns[i].layer);
    if (mera_op_table[node->op].dna == MERA_DNA_CONV)
        return sim_insn_fail(m, err, MERA_ERR_FORMAT, i, "field layer: a VEC cannot run a %s layer",
                         mera_op_table[node->op].name);
    if (v->n_src != node->n_inputs)
        return sim_insn_fail(m, err, MERA_ERR_FORMAT, i, "field n_src = %d, but node has %d inputs (max %d)", v->n_src,
                         node->n_inputs, DNA_MAX_SRC);
    if (node->n_outputs != 1)
        return sim_insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "a VEC layer must have one output");
    for (int s = 0; s <= v->n_src; s++) {
        const dna_tile *t = s < v->n_src ? &v->src[s] : &v->dst;
        int vid = s < v->n_src ? node->inputs[s] : node->outputs[0];
        if (vid < 0)
            return sim_insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "omitted optional inputs are not supported on the DNA");
        const mera_type *ty = &mera_graph_value(m->g, vid)->type;
        if (mera_dtype_size(ty->dtype) != 1 || ty->rank > 4)
            return sim_insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "%s %d: the DNA holds one-byte tensors of rank <= 4, this one is %s rank %d",
                             s < v->n_src ? "src" : "dst", s, mera_dtype_name(ty->dtype), ty->rank);
        for (int d = 0; d < 4; d++) {
            int64_t lim = d < ty->rank ? ty->shape[d] : 1;
            if (t->ext[d] > lim)
                return sim_insn_fail(m, err, MERA_ERR_FORMAT, i, "field %s[%d].ext[%d] = %d outside [1, %lld]",
                                 s < v->n_src ? "src" : "dst", s < v->n_src ? s : 0, d, t->ext[d], (long long)lim);
        }
    }
    /* A source exactly on the destination (the only overlap the ISA
     * allows) is for elementwise ops, which read each element before
     * writing it. */
    for (int s = 0; s < v->n_src; s++)
        if (v->src[s].addr == v->dst.addr && !(mera_op_table[node->op].flags & MERA_OPF_ELEMWISE))
            return sim_insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "field src[%d].addr: the source is the destination, in place, but %s is not elementwise",
                             s, mera_op_table[node->op].name);
    return MERA_OK;
}

/* Values a run reads or writes in DRAM must have an address there; the
 * written ones must lie above the constant image. */
static mera_status check_value(const dna_machine *m, int v, int written, const char *what, mera_error *err)
{
    const dna_program *prog = m->prog;
    const mera_value *val = mera_graph_value(m->g, v);
    int64_t at = prog->value_dram[v];
    double bytes = (double)mera_type_nbytes(&val->type);
    if (at < 0) {
        if (!written && (val->kind == MERA_VALUE_CONST || val->kind == MERA_VALUE_PARAM))
            return MERA_OK; /* read from the graph's data */
        return mera_fail(err, MERA_ERR_FORMAT, "value_dram[%d] ('%s', %s) is -1 but the value must be in DRAM", v,
                         val->name, what);
    }
    if (!fits((double)at, bytes, written ? (double)prog->params_bytes : 0, (double)prog->dram_bytes))
        return mera_fail(err, MERA_ERR_FORMAT, "value_dram[%d] ('%s', %s): [%lld, %.0f) is outside %s [%lld, %lld)", v,
                         val->name, what, (long long)at, (double)at + bytes,
                         written ? "the activation DRAM" : "DRAM",
                         (long long)(written ? prog->params_bytes : 0), (long long)prog->dram_bytes);
    size_t align = mera_dtype_size(val->type.dtype);
    if (align > 1 && at % (int64_t)align != 0)
        return mera_fail(err, MERA_ERR_FORMAT, "value_dram[%d] ('%s', %s) = %lld is not a multiple of its %zu-byte elements",
                         v, val->name, what, (long long)at, align);
    return MERA_OK;
}

static mera_status validate(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    const mera_graph *g = m->g;
    const mera_platform *p = m->p;
    mera_status st;
    if ((st = dna_program_validate_graph(prog, g, err)))
        return st;
    if ((double)prog->act_bytes > p->act_buffer_kib * 1024.0 || (double)prog->wgt_bytes > p->weight_buffer_kib * 1024.0 ||
        (double)prog->acc_bytes > p->acc_buffer_kib * 1024.0)
        return mera_fail(err, MERA_ERR_INVALID,
                         "program assumes buffers ACT %u, WGT %u, ACC %u bytes; platform %s has %lld, %lld, %lld KiB",
                         prog->act_bytes, prog->wgt_bytes, prog->acc_bytes, p->name, (long long)p->act_buffer_kib,
                         (long long)p->weight_buffer_kib, (long long)p->acc_buffer_kib);
    m->geos = calloc((size_t)(prog->n_layers > 0 ? prog->n_layers : 1), sizeof *m->geos);
    if (!m->geos)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    for (int l = 0; l < prog->n_layers; l++) {
        const mera_node *node = mera_graph_node(g, prog->layers[l].node);
        if (mera_op_table[node->op].dna == MERA_DNA_CONV) {
            if ((st = dna_conv_geometry(g, prog->layers[l].node, &m->geos[l], err)))
                return st;
            if (!is_quantized(&mera_graph_value(g, node->inputs[0])->type))
                return mera_fail(err, MERA_ERR_UNSUPPORTED, "layer %d (node '%s'): the DNA runs quantized %s only", l,
                                 node->name, mera_op_table[node->op].name);
        }
    }
    for (int i = 0; i < prog->n_insns; i++) {
        const dna_insn *in = &prog->insns[i];
        switch (in->opcode) {
        case DNA_CONV: {
            const mera_node *node = layer_node(m, in->layer);
            if (mera_op_table[node->op].dna != MERA_DNA_CONV)
                return sim_insn_fail(m, err, MERA_ERR_FORMAT, i, "field layer: a CONV needs a conv2d or dense layer, not %s",
                                 mera_op_table[node->op].name);
            st = check_conv(m, i, &m->geos[in->layer], err);
            break;
        }
        case DNA_VEC:
            st = check_vec(m, i, err);
            break;
        }
        if (st)
            return st;
    }
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        if (seg->kind != DNA_SEG_HOST)
            continue;
        const mera_node *node = mera_graph_node(g, seg->node);
        for (int k = 0; k < node->n_inputs; k++)
            if (node->inputs[k] >= 0 && (st = check_value(m, node->inputs[k], 0, "a host node's input", err)))
                return st;
        for (int o = 0; o < node->n_outputs; o++)
            if ((st = check_value(m, node->outputs[o], 1, "a host node's output", err)))
                return st;
    }
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        int v = mera_graph_input(g, k);
        if (mera_graph_value(g, v)->kind == MERA_VALUE_INPUT && (st = check_value(m, v, 1, "a graph input", err)))
            return st;
    }
    for (int k = 0; k < mera_graph_num_outputs(g); k++)
        if ((st = check_value(m, mera_graph_output(g, k), 0, "a graph output", err)))
            return st;
    return MERA_OK;
}

/* ---- CONV preparation ---------------------------------------------------- */


static const int64_t zero_pad[4] = {0, 0, 0, 0};

static int same_conv_key(const conv_prep *c, int layer, const dna_conv *k)
{
    return c->layer == layer && c->key.oc0 == k->oc0 && c->key.oc_n == k->oc_n && c->key.in_h == k->in_h &&
           c->key.in_w == k->in_w && c->key.in_c == k->in_c && c->key.out_h == k->out_h &&
           c->key.out_w == k->out_w && c->key.wgt_dram == k->wgt_dram &&
           c->key.depthwise_saturate == k->depthwise_saturate && c->key.rounding == k->rounding;
}

void sim_conv_prep_free(conv_prep *c)
{
    if (!c)
        return;
    if (c->state && c->k.release)
        c->k.release(c->state);
    free(c->attrs);
    free(c->bias);
    free(c);
}

/* The type of a per-axis-quantized weight restricted to output channels
 * [oc0, oc0 + oc_n): the scale and zero-point arrays are graph-owned and
 * shared, only offset. */
static void restrict_weight_q(mera_qparams *q, int64_t oc0, int64_t oc_n)
{
    if (q->kind != MERA_QUANT_PER_AXIS)
        return;
    q->scales += oc0;
    q->zero_points += oc0;
    q->count = oc_n;
    q->axis = 0;
}

/* A prepared tile of the same weight block as c (another input size), whose
 * packed weights c's kernel can share: the weights are held once however
 * many tile shapes read them. */
static const conv_prep *same_weights_prep(const dna_machine *m, const conv_prep *c)
{
    if (!c->k.prepare_like)
        return NULL;
    for (int j = 0; j < m->n_convs; j++) {
        const conv_prep *o = m->convs[j];
        if (o->state && o->layer == c->layer && o->key.wgt_dram == c->key.wgt_dram && o->key.oc0 == c->key.oc0 &&
            o->key.oc_n == c->key.oc_n && o->key.in_c == c->key.in_c &&
            o->key.depthwise_saturate == c->key.depthwise_saturate && o->k.run == c->k.run &&
            o->k.prepare_like == c->k.prepare_like)
            return o;
    }
    return NULL;
}

/* The prepared-kernel record of a CONV of geometry k in layer `layer`
 * (types, synthetic node, kernel; nothing packed yet: sim_conv_prep_pack).
 * A tile's node has padding 0 (its LOAD materialised the padding); with
 * `whole` the node keeps the layer's padding: k is then the whole layer
 * (plan_layers). */
mera_status sim_conv_prep_new(dna_machine *m, int i, int layer, const dna_conv *k, int whole, conv_prep **out,
                              mera_error *err)
{
    const dna_conv_geom *geo = &m->geos[layer];
    const mera_node *orig = layer_node(m, layer);
    conv_prep *c = calloc(1, sizeof *c);
    if (!c)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    c->layer = layer;
    c->key = *k;
    c->has_bias = geo->has_bias;
    int64_t kk = geo->dense ? geo->c : geo->kh * geo->kw * geo->cg; /* weights per output channel */
    c->w_bytes = (int64_t)k->oc_n * kk;
    /* The synthetic node: the layer's attributes, with the tile's
     * padding (none: the LOAD materialised it), groups, weight layout and
     * depthwise decision. Attributes stay sorted by key. */
    c->attrs = calloc((size_t)orig->n_attrs + 1, sizeof *c->attrs);
    if (!c->attrs) {
        sim_conv_prep_free(c);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    }
    int na = 0, have_dws = 0;
    for (int a = 0; a < orig->n_attrs; a++) {
        mera_attr at = orig->attrs[a];
        if (!geo->dense) {
            if (strcmp(at.key, "padding") == 0 && !whole) {
                at.ints = zero_pad;
                at.count = 4;
            } else if (strcmp(at.key, "groups") == 0) {
                at.i = k->in_c / geo->cg;
            } else if (strcmp(at.key, "kernel_layout") == 0) {
                at.s = "OHWI";
            } else if (strcmp(at.key, "depthwise_saturate") == 0) {
                at.s = k->depthwise_saturate ? "yes" : "no";
                have_dws = 1;
            } else if (!have_dws && strcmp(at.key, "depthwise_saturate") > 0) {
                /* insert before the first key that sorts after it */
                mera_attr d = {0};
                d.key = "depthwise_saturate";
                d.kind = MERA_ATTR_STRING;
                d.s = k->depthwise_saturate ? "yes" : "no";
                c->attrs[na++] = d;
                have_dws = 1;
            }
        }
        c->attrs[na++] = at;
    }
    if (!geo->dense && !have_dws) {
        mera_attr d = {0};
        d.key = "depthwise_saturate";
        d.kind = MERA_ATTR_STRING;
        d.s = k->depthwise_saturate ? "yes" : "no";
        c->attrs[na++] = d;
    }
    c->node = *orig;
    c->node.attrs = c->attrs;
    c->node.n_attrs = na;
    /* Tile types. */
    const mera_type *xt = &mera_graph_value(m->g, orig->inputs[0])->type;
    const mera_type *wt = &mera_graph_value(m->g, orig->inputs[1])->type;
    const mera_type *yt = &mera_graph_value(m->g, orig->outputs[0])->type;
    c->in_t = *xt;
    c->w_t = *wt;
    c->out_t = *yt;
    restrict_weight_q(&c->w_t.q, k->oc0, k->oc_n);
    if (geo->dense) {
        c->in_t.rank = 2;
        c->in_t.shape[0] = k->in_w;
        c->in_t.shape[1] = k->in_c;
        c->w_t.rank = 2;
        c->w_t.shape[0] = k->oc_n;
        c->w_t.shape[1] = k->in_c;
        c->out_t.rank = 2;
        c->out_t.shape[0] = k->out_w;
        c->out_t.shape[1] = k->oc_n;
        c->in_t.layout = c->w_t.layout = c->out_t.layout = MERA_LAYOUT_ANY;
    } else {
        c->in_t.rank = 4;
        c->in_t.shape[0] = 1;
        c->in_t.shape[1] = k->in_h;
        c->in_t.shape[2] = k->in_w;
        c->in_t.shape[3] = k->in_c;
        c->in_t.layout = MERA_LAYOUT_NHWC;
        c->w_t.rank = 4;
        c->w_t.shape[0] = k->oc_n;
        c->w_t.shape[1] = geo->kh;
        c->w_t.shape[2] = geo->kw;
        c->w_t.shape[3] = geo->cg;
        c->w_t.layout = MERA_LAYOUT_OHWI;
        c->out_t.rank = 4;
        c->out_t.shape[0] = 1;
        c->out_t.shape[1] = k->out_h;
        c->out_t.shape[2] = k->out_w;
        c->out_t.shape[3] = k->oc_n;
        c->out_t.layout = MERA_LAYOUT_NHWC;
    }
    if (c->has_bias) {
        c->b_t = mera_graph_value(m->g, orig->inputs[2])->type;
        c->b_t.shape[0] = k->oc_n;
    }
    c->k = mera_kernel_select(orig->op, MERA_NUMERICS_QUANT, (mera_rounding)k->rounding);
    if (!c->k.run) {
        sim_conv_prep_free(c);
        return sim_insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "no quantized %s kernel for rounding %d",
                         mera_op_table[orig->op].name, (int)k->rounding);
    }
    *out = c;
    return MERA_OK;
}

/* Packs c's kernel (insn i's, for errors) from int8 weights [oc_n][kh][kw][cg]
 * and, with a bias, float32 bias[oc_n] at any alignment (NULL weights: the
 * instruction's block in the constant image). pack_at_run packs nothing. */
mera_status sim_conv_prep_pack(dna_machine *m, conv_prep *c, int i, const int8_t *weights, const void *bias,
                               mera_error *err)
{
    const dna_conv *k = &c->key;
    if (m->opt.pack_at_run || c->state)
        return MERA_OK;
    if (!weights) {
        weights = (const int8_t *)m->prog->params_image + k->wgt_dram; /* the weights as codegen laid them out */
        bias = m->prog->params_image + k->wgt_dram + c->w_bytes;
    }
    if (c->has_bias && !c->bias) {
        /* An aligned copy of the block's bias for prepare (the image is
         * byte-packed; the bias may sit at any offset). pack_at_run
         * prepares nothing and reads no byte of the image here. */
        c->bias = malloc((size_t)k->oc_n * sizeof(float));
        if (!c->bias)
            return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        memcpy(c->bias, bias, (size_t)k->oc_n * sizeof(float));
    }
    if (!c->k.prepare)
        return MERA_OK;
    mera_kernel_args a;
    sim_conv_args(c, &a);
    a.in[1] = weights;
    a.in[2] = c->has_bias ? c->bias : NULL;
    a.out[0] = NULL;
    const conv_prep *like = k->wgt_dram >= 0 ? same_weights_prep(m, c) : NULL;
    mera_status st = like ? c->k.prepare_like(&a, like->state, &c->state, err) : c->k.prepare(&a, &c->state, err);
    if (st)
        mera_error_prefix(err, "insn %d (CONV, node '%s'): ", i, c->node.name);
    return st;
}

void sim_conv_args(const conv_prep *c, mera_kernel_args *a)
{
    memset(a, 0, sizeof *a);
    a->node = &c->node;
    a->n_inputs = c->node.n_inputs;
    a->in_types[0] = &c->in_t;
    a->in_types[1] = &c->w_t;
    if (c->has_bias)
        a->in_types[2] = &c->b_t;
    a->n_outputs = 1;
    a->out_types[0] = &c->out_t;
    a->state = c->state;
    a->rounding = (mera_rounding)c->key.rounding;
}

/* ---- VEC preparation ----------------------------------------------------- */

static int same_vec_key(const vec_prep *v, int layer, const dna_vec *k)
{
    if (v->layer != layer || v->n_src != k->n_src || (int32_t)v->rounding != k->rounding)
        return 0;
    for (int s = 0; s <= k->n_src; s++) {
        const int32_t *e = s < k->n_src ? k->src[s].ext : k->dst.ext;
        if (memcmp(v->ext[s], e, sizeof v->ext[s]) != 0)
            return 0;
    }
    return 1;
}

void sim_vec_prep_free(vec_prep *v)
{
    if (!v)
        return;
    if (v->state && v->k.release)
        v->k.release(v->state);
    free(v);
}

static mera_type tile_type(const mera_type *t, const int32_t *ext)
{
    mera_type r = *t;
    for (int d = 0; d < t->rank && d < 4; d++)
        r.shape[d] = ext[d];
    return r;
}

void sim_vec_args(const vec_prep *v, mera_kernel_args *a)
{
    memset(a, 0, sizeof *a);
    a->node = v->node;
    a->n_inputs = v->n_src;
    for (int s = 0; s < v->n_src; s++)
        a->in_types[s] = &v->in_t[s];
    a->n_outputs = 1;
    a->out_types[0] = &v->out_t;
    a->state = v->state;
    a->rounding = v->rounding;
}

mera_status sim_vec_prep_new(dna_machine *m, int i, int layer, const dna_vec *k, vec_prep **out, mera_error *err)
{
    const mera_node *node = layer_node(m, layer);
    vec_prep *v = calloc(1, sizeof *v);
    if (!v)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    v->layer = layer;
    v->node = node;
    v->n_src = k->n_src;
    v->rounding = (mera_rounding)k->rounding;
    for (int s = 0; s < k->n_src; s++) {
        memcpy(v->ext[s], k->src[s].ext, sizeof v->ext[s]);
        v->in_t[s] = tile_type(&mera_graph_value(m->g, node->inputs[s])->type, k->src[s].ext);
    }
    memcpy(v->ext[k->n_src], k->dst.ext, sizeof v->ext[0]);
    v->out_t = tile_type(&mera_graph_value(m->g, node->outputs[0])->type, k->dst.ext);
    v->k = mera_kernel_select(node->op, MERA_NUMERICS_QUANT, v->rounding);
    if (!v->k.run) {
        sim_vec_prep_free(v);
        return sim_insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "no quantized %s kernel for rounding %d",
                         mera_op_table[node->op].name, (int)k->rounding);
    }
    if (v->k.prepare) {
        mera_kernel_args a;
        sim_vec_args(v, &a);
        mera_status st = v->k.prepare(&a, &v->state, err);
        if (st) {
            sim_vec_prep_free(v);
            mera_error_prefix(err, "insn %d (VEC, node '%s'): ", i, node->name);
            return st;
        }
    }
    *out = v;
    return MERA_OK;
}

/* ---- host nodes ---------------------------------------------------------- */

/* The kernel InterpreterHw runs for node n, prepared the same way. */
static mera_status prepare_host_node(dna_machine *m, int n, mera_error *err)
{
    if (m->host_ready[n])
        return MERA_OK;
    const mera_node *node = mera_graph_node(m->g, n);
    mera_status st = mera_kernel_select_node(node, mera_kernel_node_numerics(m->g, node), mera_graph_rounding(m->g),
                                             &m->host_k[n], err);
    if (st)
        return st;
    m->host_ready[n] = 1;
    return mera_kernel_prepare_node(&m->host_k[n], m->g, n, m->value_data, &m->host_state[n], err);
}

/* ---- load ---------------------------------------------------------------- */

void dna_machine_free(dna_machine *m)
{
    if (!m)
        return;
    for (int k = 0; k < m->n_convs; k++)
        sim_conv_prep_free(m->convs[k]);
    for (int k = 0; k < m->n_vecs; k++)
        sim_vec_prep_free(m->vecs[k]);
    dna_run_free(m->spare);
    free(m->convs);
    free(m->vecs);
    if (m->host_state)
        for (int n = 0; n < m->n_nodes; n++)
            if (m->host_state[n] && m->host_k[n].release)
                m->host_k[n].release(m->host_state[n]);
    free(m->host_state);
    free(m->host_k);
    free(m->host_ready);
    free(m->value_data);
    free(m->input_slot);
    free(m->insn_prep);
    free(m->order);
    free(m->geos);
    free(m->layer_convs);
    free(m->wave_items);
    free(m->wave_start);
    free(m->wave_lanes);
    free(m->insn_threads);
    free(m->seg_wave);
    free(m->fwd_src);
    free(m->fwd_dst);
    free(m->fwd_dead);
    for (int k = 0; k < m->n_lruns; k++) {
        sim_conv_prep_free(m->lruns[k].prep);
        sim_vec_prep_free(m->lruns[k].vprep);
    }
    free(m->lruns);
    free(m->insn_lrun);
    dna_timing_release(&m->timing);
    dna_insn_times_release(&m->times);
    free(m);
}

/* release_const_pages: release the pages wholly inside bytes [lo, hi) of
 * the constant image (they fault back from the file when read again). */
void sim_release_image(const dna_machine *m, int64_t lo, int64_t hi)
{
#ifdef MADV_DONTNEED
    uintptr_t page = (uintptr_t)m->page_size;
    uintptr_t start = ((uintptr_t)(m->prog->params_image + lo) + page - 1) & ~(page - 1);
    uintptr_t end = (uintptr_t)(m->prog->params_image + hi) & ~(page - 1);
    if (m->prog->params_image && end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
#else
    (void)m;
    (void)lo;
    (void)hi;
#endif
}

/* One prepared kernel per distinct tile geometry. The lookup walks the
 * entries of the instruction's layer (a layer has a handful of distinct
 * tiles: interior, edges, output-channel blocks). */
static mera_status prepare_insns(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    /* per layer: list of prep indices (convs and vecs share the chain) */
    m->layer_convs = malloc((size_t)(prog->n_layers > 0 ? prog->n_layers : 1) * sizeof *m->layer_convs);
    int *next = malloc((size_t)(prog->n_insns > 0 ? prog->n_insns : 1) * sizeof *next);
    if (!m->layer_convs || !next) {
        free(next);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    }
    for (int l = 0; l < prog->n_layers; l++)
        m->layer_convs[l] = -1;
    int cap_c = 0, cap_v = 0;
    mera_status st = MERA_OK;
    /* chain entries: id = index among all preps; convs and vecs numbered in
     * their own arrays, encoded as (index << 1) | is_vec */
    int n_entries = 0;
    int *entry_code = malloc((size_t)(prog->n_insns > 0 ? prog->n_insns : 1) * sizeof *entry_code);
    if (!entry_code) {
        free(next);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < prog->n_insns; i++) {
        const dna_insn *in = &prog->insns[i];
        if (in->opcode != DNA_CONV && in->opcode != DNA_VEC)
            continue;
        void *found = NULL;
        for (int e = m->layer_convs[in->layer]; e >= 0 && !found; e = next[e]) {
            int code = entry_code[e];
            if (in->opcode == DNA_CONV && !(code & 1) && same_conv_key(m->convs[code >> 1], in->layer, &in->u.conv))
                found = m->convs[code >> 1];
            if (in->opcode == DNA_VEC && (code & 1) && same_vec_key(m->vecs[code >> 1], in->layer, &in->u.vec))
                found = m->vecs[code >> 1];
        }
        if (!found) {
            if (in->opcode == DNA_CONV) {
                conv_prep *c;
                void *tmp_grow;
                if (GROW(m->convs, cap_c, m->n_convs)) {
                    st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
                    break;
                }
                if ((st = sim_conv_prep_new(m, i, in->layer, &in->u.conv, 0, &c, err)))
                    break;
                entry_code[n_entries] = m->n_convs << 1;
                m->convs[m->n_convs++] = c;
                found = c;
            } else {
                vec_prep *v;
                void *tmp_grow;
                if (GROW(m->vecs, cap_v, m->n_vecs)) {
                    st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
                    break;
                }
                if ((st = sim_vec_prep_new(m, i, in->layer, &in->u.vec, &v, err)))
                    break;
                entry_code[n_entries] = (m->n_vecs << 1) | 1;
                m->vecs[m->n_vecs++] = v;
                found = v;
            }
            next[n_entries] = m->layer_convs[in->layer];
            m->layer_convs[in->layer] = n_entries++;
        }
        m->insn_prep[i] = found;
    }
    free(next);
    free(entry_code);
    return st;
}

/* Packs the kernel of every CONV tile a run executes (not those of the
 * layers that run whole: plan_layers). */
static mera_status pack_convs(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    for (int i = 0; i < prog->n_insns; i++) {
        const dna_insn *in = &prog->insns[i];
        conv_prep *c = in->opcode == DNA_CONV ? m->insn_prep[i] : NULL;
        if (!c || (m->insn_lrun && m->insn_lrun[i] >= 0))
            continue;
        c->run_as_tile = 1;
        if (c->state)
            continue;
        mera_status st = sim_conv_prep_pack(m, c, i, NULL, NULL, err);
        if (st)
            return st;
        if (m->opt.release_const_pages && !m->opt.pack_at_run) /* packed: the block's pages can go */
            sim_release_image(m, in->u.conv.wgt_dram, in->u.conv.wgt_dram + c->w_bytes);
    }
    return MERA_OK;
}

dna_machine *dna_machine_new(const mera_graph *g, const dna_program *prog, const mera_platform *p,
                             const void *const *param_data, mera_error *err)
{
    return dna_machine_new_opts(g, prog, p, param_data, NULL, err);
}

dna_machine *dna_machine_new_opts(const mera_graph *g, const dna_program *prog, const mera_platform *p,
                                  const void *const *param_data, const dna_machine_options *opt, mera_error *err)
{
    if (!g || !prog || !p) {
        mera_fail(err, MERA_ERR_INVALID, "dna_machine_new: graph, program and platform are required");
        return NULL;
    }
    dna_machine *m = calloc(1, sizeof *m);
    if (!m) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    m->g = g;
    m->prog = prog;
    m->p = p;
    if (opt)
        m->opt = *opt;
    /* The default thread count once, here: resolving it per tile costs a
     * sysconf (a read of /sys) per kernel call, about 1 ms per MobileNetV2
     * run of the IP. */
    m->opt.threads = mera_threads_resolve(m->opt.threads);
    long page = sysconf(_SC_PAGESIZE);
    m->page_size = page > 0 && (page & (page - 1)) == 0 ? page : 4096;
    const char *prof = getenv("MERA_SIM_PROFILE");
    m->profile = !prof || !*prof || strcmp(prof, "0") == 0 ? 0 : strcmp(prof, "cpu") == 0 ? 2 : 1;
    m->n_nodes = mera_graph_num_nodes(g);
    m->n_values = mera_graph_num_values(g);
    size_t nv = (size_t)m->n_values + 1, nn = (size_t)m->n_nodes + 1, ni = (size_t)(prog->n_insns > 0 ? prog->n_insns : 1);
    m->value_data = calloc(nv, sizeof *m->value_data);
    m->input_slot = calloc(nv, sizeof *m->input_slot);
    m->host_k = calloc(nn, sizeof *m->host_k);
    m->host_state = calloc(nn, sizeof *m->host_state);
    m->host_ready = calloc(nn, 1);
    if (!m->value_data || !m->input_slot || !m->host_k || !m->host_state || !m->host_ready) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (validate(m, err))
        goto fail;
    m->insn_prep = calloc(ni, sizeof *m->insn_prep);
    m->order = malloc(ni * sizeof *m->order);
    if (!m->insn_prep || !m->order) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Graph data for host nodes and outputs, as mera_interp_compile. */
    for (int v = 0; v < m->n_values; v++) {
        const mera_value *val = mera_graph_value(g, v);
        m->input_slot[v] = -1;
        if (val->kind == MERA_VALUE_CONST)
            m->value_data[v] = val->data;
    }
    int slot = 0;
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        int v = mera_graph_input(g, k);
        const mera_value *val = mera_graph_value(g, v);
        if (val->kind == MERA_VALUE_INPUT) {
            m->input_slot[v] = slot++;
        } else {
            const void *d = param_data ? param_data[k] : NULL;
            if (!d && !m->opt.dna_only && dna_program_reads_graph_data(prog, g, v)) {
                mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data: pass it in params", val->name);
                goto fail;
            }
            m->value_data[v] = d;
        }
    }
    m->n_graph_inputs = slot;
    for (int s = 0; s < prog->n_segments && !m->opt.dna_only; s++)
        if (prog->segments[s].kind == DNA_SEG_HOST && prepare_host_node(m, prog->segments[s].node, err))
            goto fail;
    if (prepare_insns(m, err))
        goto fail;
    if (dna_timing_model(g, prog, p, &m->timing, &m->times, err))
        goto fail;
    /* Execution order of each DNA segment: by start cycle, ties by index. */
    for (int i = 0; i < prog->n_insns; i++)
        m->order[i] = i;
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        if (seg->kind == DNA_SEG_DNA)
            dna_sort_by_start(m->order + seg->first, seg->count, m->times.start);
    }
    if (sim_plan_layers(m, err) || pack_convs(m, err))
        goto fail;
    m->wgt_unread = !m->opt.pack_at_run;
    for (int k = 0; k < m->n_convs; k++)
        m->wgt_unread &= m->convs[k]->state != NULL || !m->convs[k]->run_as_tile;
    sim_plan_scratch(m);
    if (m->profile)
        fprintf(stderr, "mera sim layers: %d of %d run whole; kernel scratch %zu bytes per lane\n", m->n_lruns,
                prog->n_layers, m->scratch_bytes);
    sim_plan_threads(m);
    sim_plan_written(m);
    if (m->opt.release_const_pages && !m->opt.pack_at_run)
        sim_release_image(m, 0, m->prog->params_bytes); /* the rest: runs read only what VEC layers load */
    if (sim_plan_forward(m, err) || sim_plan_waves(m, err))
        goto fail;
    sim_plan_zeroed(m);
    return m;
fail:
    dna_machine_free(m);
    return NULL;
}

const dna_timing *dna_machine_timing(const dna_machine *m)
{
    return &m->timing;
}

