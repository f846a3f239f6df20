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

#define BUF_ALIGN 64

/* ---- small helpers ------------------------------------------------------- */

static int is_quantized(const mera_type *t)
{
    return t->q.kind != MERA_QUANT_NONE;
}

static const mera_node *layer_node(const dna_machine *m, int layer)
{
    return mera_graph_node(m->g, m->prog->layers[layer].node);
}

/* Fails with "insn 12 (CONV, node 'conv1'): <message>". */
static mera_status insn_fail(const dna_machine *m, mera_error *err, mera_status code, int i, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

static mera_status insn_fail(const dna_machine *m, mera_error *err, mera_status code, int i, const char *fmt, ...)
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
        return insn_fail(m, err, MERA_ERR_FORMAT, i, "fields oc0/oc_n: [%d, %d) exceeds the layer's %lld output channels",
                         c->oc0, c->oc0 + c->oc_n, (long long)geo->o);
    if (geo->dense) {
        if (c->in_h != 1 || c->out_h != 1 || c->in_w != c->out_w || c->in_c != geo->c)
            return insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "fields in_h/in_w/in_c/out_h/out_w: a dense tile is in [1][rows][%lld] -> out "
                             "[1][rows][oc_n], got in [%d][%d][%d] out [%d][%d]",
                             (long long)geo->c, c->in_h, c->in_w, c->in_c, c->out_h, c->out_w);
    } else {
        /* The tile holds whole groups, or lies inside one group. */
        int64_t g0 = c->oc0 / geo->og, g1 = ((int64_t)c->oc0 + c->oc_n - 1) / geo->og, ng = g1 - g0 + 1;
        if (ng > 1 && (c->oc0 % geo->og || c->oc_n % geo->og))
            return insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "fields oc0/oc_n: [%d, %d) cuts groups of %lld output channels; a block holds whole "
                             "groups or lies inside one",
                             c->oc0, c->oc0 + c->oc_n, (long long)geo->og);
        if (c->in_c != ng * geo->cg)
            return insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "field in_c = %d, but output channels [%d, %d) read %lld input channels", c->in_c, c->oc0,
                             c->oc0 + c->oc_n, (long long)(ng * geo->cg));
        int64_t eh = geo->dh * (geo->kh - 1) + 1, ew = geo->dw * (geo->kw - 1) + 1;
        if (c->in_h < eh || c->in_w < ew || (c->in_h - eh) / geo->sh + 1 != c->out_h ||
            (c->in_w - ew) / geo->sw + 1 != c->out_w)
            return insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "fields in_h/in_w/out_h/out_w: a %dx%d input window does not give a %dx%d output with "
                             "the layer's %lldx%lld kernel, strides %lldx%lld, dilation %lldx%lld",
                             c->in_h, c->in_w, c->out_h, c->out_w, (long long)geo->kh, (long long)geo->kw,
                             (long long)geo->sh, (long long)geo->sw, (long long)geo->dh, (long long)geo->dw);
    }
    double blk = (double)c->oc_n * geo->kh * geo->kw * geo->cg + (geo->has_bias ? 4.0 * c->oc_n : 0);
    if (!fits(c->wgt_addr, blk, 0, prog->wgt_bytes))
        return insn_fail(m, err, MERA_ERR_FORMAT, i, "field wgt_addr: weight block [%u, %.0f) exceeds WGT (%u bytes)",
                         c->wgt_addr, c->wgt_addr + blk, prog->wgt_bytes);
    if (!fits((double)c->wgt_dram, blk, 0, (double)prog->params_bytes))
        return insn_fail(m, err, MERA_ERR_FORMAT, i,
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
        return insn_fail(m, err, MERA_ERR_FORMAT, i, "field layer: a VEC cannot run a %s layer",
                         mera_op_table[node->op].name);
    if (v->n_src != node->n_inputs)
        return insn_fail(m, err, MERA_ERR_FORMAT, i, "field n_src = %d, but node has %d inputs (max %d)", v->n_src,
                         node->n_inputs, DNA_MAX_SRC);
    if (node->n_outputs != 1)
        return insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "a VEC layer must have one output");
    for (int s = 0; s <= v->n_src; s++) {
        const dna_tile *t = s < v->n_src ? &v->src[s] : &v->dst;
        int vid = s < v->n_src ? node->inputs[s] : node->outputs[0];
        if (vid < 0)
            return insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "omitted optional inputs are not supported on the DNA");
        const mera_type *ty = &mera_graph_value(m->g, vid)->type;
        if (mera_dtype_size(ty->dtype) != 1 || ty->rank > 4)
            return insn_fail(m, err, MERA_ERR_FORMAT, i,
                             "%s %d: the DNA holds one-byte tensors of rank <= 4, this one is %s rank %d",
                             s < v->n_src ? "src" : "dst", s, mera_dtype_name(ty->dtype), ty->rank);
        for (int d = 0; d < 4; d++) {
            int64_t lim = d < ty->rank ? ty->shape[d] : 1;
            if (t->ext[d] > lim)
                return insn_fail(m, err, MERA_ERR_FORMAT, i, "field %s[%d].ext[%d] = %d outside [1, %lld]",
                                 s < v->n_src ? "src" : "dst", s < v->n_src ? s : 0, d, t->ext[d], (long long)lim);
        }
    }
    /* A source exactly on the destination (the only overlap the ISA
     * allows) is for elementwise ops, which read each element before
     * writing it. */
    for (int s = 0; s < v->n_src; s++)
        if (v->src[s].addr == v->dst.addr && !(mera_op_table[node->op].flags & MERA_OPF_ELEMWISE))
            return insn_fail(m, err, MERA_ERR_FORMAT, i,
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
                return insn_fail(m, err, MERA_ERR_FORMAT, i, "field layer: a CONV needs a conv2d or dense layer, not %s",
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

static void conv_args(const conv_prep *c, mera_kernel_args *a);
static void vec_args(const vec_prep *v, mera_kernel_args *a);

static const int64_t zero_pad[4] = {0, 0, 0, 0};

static int same_conv_key(const conv_prep *c, int layer, const dna_conv *k)
{
    return c->layer == layer && c->key.oc0 == k->oc0 && c->key.oc_n == k->oc_n && c->key.in_h == k->in_h &&
           c->key.in_w == k->in_w && c->key.in_c == k->in_c && c->key.out_h == k->out_h &&
           c->key.out_w == k->out_w && c->key.wgt_dram == k->wgt_dram &&
           c->key.depthwise_saturate == k->depthwise_saturate && c->key.rounding == k->rounding;
}

static void conv_prep_free(conv_prep *c)
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

static mera_status make_conv_prep(dna_machine *m, int i, conv_prep **out, mera_error *err)
{
    const dna_program *prog = m->prog;
    const dna_insn *in = &prog->insns[i];
    const dna_conv *k = &in->u.conv;
    const dna_conv_geom *geo = &m->geos[in->layer];
    const mera_node *orig = layer_node(m, in->layer);
    conv_prep *c = calloc(1, sizeof *c);
    if (!c)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    c->layer = in->layer;
    c->key = *k;
    c->has_bias = geo->has_bias;
    int64_t kk = geo->dense ? geo->c : geo->kh * geo->kw * geo->cg; /* weights per output channel */
    c->w_bytes = (int64_t)k->oc_n * kk;
    /* The synthetic node: the layer's attributes, with the tile's
     * padding (none: the LOAD materialised it), groups, weight layout and
     * depthwise decision. Attributes stay sorted by key. */
    c->attrs = calloc((size_t)orig->n_attrs + 1, sizeof *c->attrs);
    if (!c->attrs) {
        conv_prep_free(c);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    }
    int na = 0, have_dws = 0;
    for (int a = 0; a < orig->n_attrs; a++) {
        mera_attr at = orig->attrs[a];
        if (!geo->dense) {
            if (strcmp(at.key, "padding") == 0) {
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
    if (c->has_bias && !m->opt.pack_at_run) {
        /* An aligned copy of the block's bias for prepare (the image is
         * byte-packed; the bias may sit at any offset). pack_at_run
         * prepares nothing and reads no byte of the image here. */
        c->bias = malloc((size_t)k->oc_n * sizeof(float));
        if (!c->bias) {
            conv_prep_free(c);
            return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        }
        memcpy(c->bias, prog->params_image + k->wgt_dram + c->w_bytes, (size_t)k->oc_n * sizeof(float));
    }
    c->k = mera_kernel_select(orig->op, MERA_NUMERICS_QUANT, (mera_rounding)k->rounding);
    if (!c->k.run) {
        conv_prep_free(c);
        return insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "no quantized %s kernel for rounding %d",
                         mera_op_table[orig->op].name, (int)k->rounding);
    }
    if (c->k.prepare && !m->opt.pack_at_run) {
        mera_kernel_args a;
        conv_args(c, &a);
        a.in[1] = prog->params_image + k->wgt_dram; /* the weights as codegen laid them out */
        a.in[2] = c->has_bias ? c->bias : NULL;
        a.out[0] = NULL;
        const conv_prep *like = same_weights_prep(m, c);
        mera_status st = like ? c->k.prepare_like(&a, like->state, &c->state, err) : c->k.prepare(&a, &c->state, err);
        if (st) {
            conv_prep_free(c);
            mera_error_prefix(err, "insn %d (CONV, node '%s'): ", i, orig->name);
            return st;
        }
    }
    *out = c;
    return MERA_OK;
}

static void conv_args(const conv_prep *c, mera_kernel_args *a)
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

static void vec_prep_free(vec_prep *v)
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

static void vec_args(const vec_prep *v, mera_kernel_args *a)
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

static mera_status make_vec_prep(dna_machine *m, int i, vec_prep **out, mera_error *err)
{
    const dna_insn *in = &m->prog->insns[i];
    const dna_vec *k = &in->u.vec;
    const mera_node *node = layer_node(m, in->layer);
    vec_prep *v = calloc(1, sizeof *v);
    if (!v)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    v->layer = in->layer;
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
        vec_prep_free(v);
        return insn_fail(m, err, MERA_ERR_UNSUPPORTED, i, "no quantized %s kernel for rounding %d",
                         mera_op_table[node->op].name, (int)k->rounding);
    }
    if (v->k.prepare) {
        mera_kernel_args a;
        vec_args(v, &a);
        mera_status st = v->k.prepare(&a, &v->state, err);
        if (st) {
            vec_prep_free(v);
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
        conv_prep_free(m->convs[k]);
    for (int k = 0; k < m->n_vecs; k++)
        vec_prep_free(m->vecs[k]);
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
    dna_timing_release(&m->timing);
    dna_insn_times_release(&m->times);
    free(m);
}

/* release_const_pages: release the pages wholly inside bytes [lo, hi) of
 * the constant image (they fault back from the file when read again). */
static void release_image(const dna_machine *m, int64_t lo, int64_t hi)
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

/* Room for one more entry in an array of n pointers of capacity *cap. */
#define GROW(arr, cap, n)                                                       \
    ((n) < (cap) ? 0                                                            \
                 : ((tmp_grow = realloc((arr), (size_t)((cap) ? (cap) * 2 : 16) * sizeof *(arr))) \
                        ? ((arr) = tmp_grow, (cap) = (cap) ? (cap) * 2 : 16, 0)  \
                        : 1))

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
                if ((st = make_conv_prep(m, i, &c, err)))
                    break;
                if (m->opt.release_const_pages && !m->opt.pack_at_run) /* packed: the block's pages can go */
                    release_image(m, in->u.conv.wgt_dram, in->u.conv.wgt_dram + c->w_bytes);
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
                if ((st = make_vec_prep(m, i, &v, err)))
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

/* ---- what a run writes --------------------------------------------------- */

enum { BUF_ACT, BUF_WGT, BUF_DRAM };

static void hull_add(dna_machine *m, int buf, int64_t lo, int64_t hi)
{
    int64_t *w = m->written[buf];
    if (hi <= lo)
        return;
    if (w[0] >= w[1]) {
        w[0] = lo;
        w[1] = hi;
        return;
    }
    w[0] = lo < w[0] ? lo : w[0];
    w[1] = hi > w[1] ? hi : w[1];
}

/* [lo, hi) spanned by a box's rows x cols runs at base with these strides
 * (the extreme corners: strides may be negative on the DRAM side). */
static void box_span(const dna_dma *d, int64_t base, int64_t row_stride, int64_t col_stride, int64_t *lo, int64_t *hi)
{
    *lo = INT64_MAX;
    *hi = INT64_MIN;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            int64_t x = base + (a ? (int64_t)(d->rows - 1) * row_stride : 0) + (b ? (int64_t)(d->cols - 1) * col_stride : 0);
            *lo = x < *lo ? x : *lo;
            *hi = x + d->run_bytes > *hi ? x + d->run_bytes : *hi;
        }
}

/* A box that is one block of bytes on both sides (no padding; one run, or
 * runs and rows that follow each other on both sides): its byte count,
 * else 0. */
static int64_t dma_block_bytes(const dna_dma *d)
{
    const int64_t rb = d->run_bytes, row = (int64_t)d->cols * rb;
    if (d->pad_top || d->pad_bottom || d->pad_left || d->pad_right)
        return 0;
    int cols_follow = d->cols == 1 || (d->sram_col_stride == (uint32_t)rb && d->dram_col_stride == rb);
    int rows_follow = d->rows == 1 || ((int64_t)d->sram_row_stride == row && d->dram_row_stride == row);
    return cols_follow && rows_follow ? row * d->rows : 0;
}

/* The hulls of what a run writes in ACT, WGT and the activation DRAM
 * (dna_machine.written), clamped to the buffers: a reused run zeroes just
 * these bytes, so every run starts from the zeroed buffers of a new one
 * without touching pages no run uses. */
static void plan_written(dna_machine *m)
{
    const dna_program *prog = m->prog;
    const int64_t base = dna_act_base(prog);
    for (int b = 0; b < 3; b++)
        m->written[b][0] = m->written[b][1] = 0;
    for (int i = 0; i < prog->n_insns; i++) {
        const dna_insn *in = &prog->insns[i];
        int64_t lo, hi;
        switch (in->opcode) {
        case DNA_LOAD:
            box_span(&in->u.dma, in->u.dma.sram, in->u.dma.sram_row_stride, in->u.dma.sram_col_stride, &lo, &hi);
            hull_add(m, in->u.dma.mem == DNA_MEM_WGT ? BUF_WGT : BUF_ACT, lo, hi);
            break;
        case DNA_STORE:
            box_span(&in->u.dma, in->u.dma.dram, in->u.dma.dram_row_stride, in->u.dma.dram_col_stride, &lo, &hi);
            hull_add(m, BUF_DRAM, lo - base, hi - base);
            break;
        case DNA_CONV: {
            const conv_prep *c = m->insn_prep[i];
            hull_add(m, BUF_ACT, in->u.conv.out_addr, in->u.conv.out_addr + (int64_t)mera_type_nbytes(&c->out_t));
            break;
        }
        case DNA_VEC: {
            const vec_prep *v = m->insn_prep[i];
            hull_add(m, BUF_ACT, in->u.vec.dst.addr, in->u.vec.dst.addr + (int64_t)mera_type_nbytes(&v->out_t));
            break;
        }
        }
    }
    for (int v = 0; v < m->n_values; v++) /* graph inputs and host nodes' outputs */
        if (prog->value_dram[v] >= prog->params_bytes)
            hull_add(m, BUF_DRAM, prog->value_dram[v] - base,
                     prog->value_dram[v] - base + (int64_t)mera_type_nbytes(&mera_graph_value(m->g, v)->type));
    const int64_t size[3] = {prog->act_bytes, prog->wgt_bytes, prog->dram_bytes - base};
    for (int b = 0; b < 3; b++) {
        int64_t *w = m->written[b];
        w[0] = w[0] < 0 ? 0 : w[0];
        w[1] = w[1] > size[b] ? size[b] : w[1];
    }
}

/* The scratch a run gives its tiles' kernels (a padded copy of a tile's
 * input, as InterpreterHw plans it in its arena): the largest any prepared
 * kernel asks for, so no tile allocates. */
static void plan_scratch(dna_machine *m)
{
    size_t most = 0;
    mera_kernel_args a;
    for (int k = 0; k < m->n_convs; k++) {
        const conv_prep *c = m->convs[k];
        if (!c->state || !c->k.scratch)
            continue;
        conv_args(c, &a);
        size_t s = c->k.scratch(&a);
        most = s > most ? s : most;
    }
    for (int k = 0; k < m->n_vecs; k++) {
        const vec_prep *v = m->vecs[k];
        if (!v->state || !v->k.scratch)
            continue;
        vec_args(v, &a);
        size_t s = v->k.scratch(&a);
        most = s > most ? s : most;
    }
    m->scratch_bytes = most;
    m->scratch_stride = (most + BUF_ALIGN - 1) & ~(size_t)(BUF_ALIGN - 1);
}

/* The thread count of each prepared tile's kernel: num_threads, fewer
 * when a thread would get less than SIM_MIN_THREAD_MACS multiply-adds (a
 * CONV) or SIM_MIN_THREAD_BYTES output bytes (a VEC). A tile is a fraction
 * of its layer, and a pool job per small tile costs more in handing work
 * over than it gains (the thread count never changes a byte). Measured
 * on a quiet 2-core Zen 4 (benchmarks/emulator_speed.py, 2 threads): the
 * bounds 2^18 MACs / 32 KiB, with idle workers put to rest between pooled
 * instructions, took ResNet-50's Simulator from 14.1 to 20.5 ms; these
 * small bounds, with workers that keep spinning, keep 14-16 ms. */
#define SIM_MIN_THREAD_MACS 16384
#define SIM_MIN_THREAD_BYTES 4096

static int prep_threads(int threads, double work, double per_thread)
{
    double most = work / per_thread;
    return most >= threads ? threads : most >= 2 ? (int)most : 1;
}

static void plan_threads(dna_machine *m)
{
    const int t = m->opt.threads;
    for (int k = 0; k < m->n_convs; k++) {
        conv_prep *c = m->convs[k];
        const dna_conv_geom *geo = &m->geos[c->layer];
        double per_px = geo->dense ? (double)c->key.in_c : (double)geo->kh * geo->kw * geo->cg;
        c->threads = prep_threads(t, (double)c->key.out_h * c->key.out_w * c->key.oc_n * per_px, SIM_MIN_THREAD_MACS);
    }
    for (int k = 0; k < m->n_vecs; k++) {
        vec_prep *v = m->vecs[k];
        v->threads = prep_threads(t, (double)mera_type_nbytes(&v->out_t), SIM_MIN_THREAD_BYTES);
    }
}


/* ---- waves ------------------------------------------------------------------
 *
 * With more than one thread, a DNA segment runs as waves (run_waves): the
 * instructions are grouped by level, an instruction's level being one more
 * than the highest level of the earlier instructions (in execution order)
 * it conflicts with, two instructions conflicting when one writes a byte
 * (or WGT tag) the other reads or writes. The instructions of a level are
 * independent of each other and come after everything they depend on, so
 * they may run in any order or at once: the bytes are those of the
 * execution order, whatever the threads do. A wave runs either on the
 * lanes (each instruction single-threaded, the lanes taking the next one
 * as they finish: independent tiles of a layer, a LOAD and a STORE beside
 * a CONV) or one instruction after another, each split across the
 * threads as before (one large tile), whichever the cost estimate below
 * says is faster. */

typedef struct {
    int64_t lo, hi;
    int space; /* SP_ACT, SP_WGT (its bytes and its tags), SP_DRAM */
    int write;
} mem_use;

enum { SP_ACT, SP_WGT, SP_DRAM };
#define MAX_USES (DNA_MAX_SRC + 3)

/* The byte ranges instruction i reads and writes (hulls: a box's extreme
 * corners, padding included). */
static int insn_uses(const dna_machine *m, int i, mem_use *u)
{
    const dna_insn *in = &m->prog->insns[i];
    int n = 0;
    int64_t lo, hi;
    switch (in->opcode) {
    case DNA_LOAD:
    case DNA_STORE: {
        const dna_dma *d = &in->u.dma;
        int load = in->opcode == DNA_LOAD;
        if (m->fwd_dead && m->fwd_dead[i])
            return 0; /* forwarded: moves no bytes (a dead LOAD is into ACT: no tags) */
        box_span(d, d->sram, d->sram_row_stride, d->sram_col_stride, &lo, &hi);
        u[n++] = (mem_use){lo, hi, load && d->mem == DNA_MEM_WGT ? SP_WGT : SP_ACT, load};
        box_span(d, d->dram, d->dram_row_stride, d->dram_col_stride, &lo, &hi);
        u[n++] = (mem_use){lo, hi, SP_DRAM, !load};
        break;
    }
    case DNA_CONV: {
        const dna_conv *k = &in->u.conv;
        const conv_prep *c = m->insn_prep[i];
        int64_t blk = c->w_bytes + (c->has_bias ? 4 * (int64_t)k->oc_n : 0);
        int64_t src = m->fwd_src ? m->fwd_src[(size_t)i * DNA_MAX_SRC] : -1, dst = m->fwd_dst ? m->fwd_dst[i] : -1;
        int64_t in_n = (int64_t)mera_type_nbytes(&c->in_t), out_n = (int64_t)mera_type_nbytes(&c->out_t);
        u[n++] = src >= 0 ? (mem_use){src, src + in_n, SP_DRAM, 0} : (mem_use){k->in_addr, k->in_addr + in_n, SP_ACT, 0};
        u[n++] = (mem_use){k->wgt_addr, k->wgt_addr + blk, SP_WGT, 0};
        u[n++] = dst >= 0 ? (mem_use){dst, dst + out_n, SP_DRAM, 1} : (mem_use){k->out_addr, k->out_addr + out_n, SP_ACT, 1};
        break;
    }
    case DNA_VEC: {
        const dna_vec *k = &in->u.vec;
        const vec_prep *v = m->insn_prep[i];
        for (int q = 0; q < k->n_src; q++) {
            int64_t src = m->fwd_src ? m->fwd_src[(size_t)i * DNA_MAX_SRC + q] : -1;
            int64_t nb = (int64_t)mera_type_nbytes(&v->in_t[q]);
            u[n++] = src >= 0 ? (mem_use){src, src + nb, SP_DRAM, 0} : (mem_use){k->src[q].addr, k->src[q].addr + nb, SP_ACT, 0};
        }
        int64_t dst = m->fwd_dst ? m->fwd_dst[i] : -1, out_n = (int64_t)mera_type_nbytes(&v->out_t);
        u[n++] = dst >= 0 ? (mem_use){dst, dst + out_n, SP_DRAM, 1} : (mem_use){k->dst.addr, k->dst.addr + out_n, SP_ACT, 1};
        break;
    }
    }
    return n;
}

static int uses_conflict(const mem_use *a, int na, const mem_use *b, int nb)
{
    for (int x = 0; x < na; x++)
        for (int y = 0; y < nb; y++)
            if (a[x].space == b[y].space && (a[x].write || b[y].write) && a[x].lo < b[y].hi && b[y].lo < a[x].hi)
                return 1;
    return 0;
}

/* ---- forwarding ---------------------------------------------------------------
 *
 * Most of a layer's bytes go LOAD (DRAM -> ACT, one dense block), CONV (ACT
 * -> ACT), STORE (ACT -> DRAM, one dense block): two copies the kernels
 * could do without. plan_forward decides once, at load, from the
 * instructions' memory effects in the order a run executes them (the
 * segments in order, each DNA segment's instructions in execution order):
 *
 * - input forwarding: a CONV's input window or a VEC source lying within
 *   the ACT bytes one dense-block LOAD wrote, neither those ACT bytes nor
 *   the LOAD's DRAM source written by anything in between, reads the DRAM
 *   bytes instead (they are the same bytes);
 * - dead LOADs: a LOAD none of whose bytes is read from ACT (every reader
 *   forwarded) before an instruction overwrites all of them, or the
 *   program ends, moves no bytes;
 * - output forwarding: a CONV/VEC tile read from ACT by exactly one later
 *   instruction, a STORE of exactly its bytes as one dense block, and by
 *   nothing else before an instruction overwrites all of them or the
 *   program ends, with no instruction between the two reading or writing
 *   the STORE's DRAM range: the kernel writes that DRAM range itself and
 *   the STORE moves no bytes (not when its forwarded inputs overlap it).
 *
 * Every segment boundary ends what forwarding knows (a run driven segment
 * by segment, the IP's emulated device, has the host write DRAM between
 * segments). Each decision keeps every byte any later instruction reads;
 * the decisions together too: moving a STORE's DRAM write up to its CONV
 * could only matter to an instruction between the two touching that range,
 * and then the pair, or the other pair whose STORE lies between them, was
 * refused. Everything that plans from memory effects (insn_uses: the wave
 * plan, plan_zeroed) sees the forwarded ones; the timing model does not
 * look: the modelled device still moves every byte. */

#define SIM_FWD_SCAN 1024 /* instructions an output-forwarding candidate looks ahead */

typedef struct {
    int insn;       /* the LOAD */
    int64_t lo, hi; /* the ACT bytes it writes */
    int64_t dram;   /* the DRAM address of lo */
    int clobbered;  /* its ACT bytes or DRAM source written since: no more forwarding */
    int alive;      /* an instruction reads some of its bytes from ACT */
} fwd_rec;

static int spans_meet(int64_t a0, int64_t a1, int64_t b0, int64_t b1)
{
    return a0 < b1 && b0 < a1;
}

static void fwd_finish(dna_machine *m, const fwd_rec *r)
{
    if (!r->alive) {
        m->fwd_dead[r->insn] = 1;
        m->fwd_stats.dead_loads++;
    }
}

static mera_status plan_forward(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    const char *env = getenv("MERA_SIM_FORWARD");
    if (env && strcmp(env, "0") == 0)
        return MERA_OK;
    size_t ni = (size_t)(prog->n_insns > 0 ? prog->n_insns : 1);
    m->fwd_src = malloc(ni * DNA_MAX_SRC * sizeof *m->fwd_src);
    m->fwd_dst = malloc(ni * sizeof *m->fwd_dst);
    m->fwd_dead = calloc(ni, 1);
    int n_seq = 0;
    int *seq = malloc((ni + (size_t)prog->n_segments + 1) * sizeof *seq);
    mem_use *uses = malloc(ni * MAX_USES * sizeof *uses);
    int *nuse = malloc(ni * sizeof *nuse);
    fwd_rec *recs = NULL;
    int n_rec = 0, cap_rec = 0;
    mera_status st = MERA_OK;
    if (!m->fwd_src || !m->fwd_dst || !m->fwd_dead || !seq || !uses || !nuse) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < ni * DNA_MAX_SRC; k++)
        m->fwd_src[k] = -1;
    for (size_t k = 0; k < ni; k++)
        m->fwd_dst[k] = -1;
    /* the run's order; -1: a segment boundary */
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        seq[n_seq++] = -1;
        for (int k = 0; seg->kind == DNA_SEG_DNA && k < seg->count; k++)
            seq[n_seq++] = m->order[seg->first + k];
    }
    /* pass 1: input forwarding and dead LOADs */
    for (int p = 0; p < n_seq; p++) {
        int x = seq[p];
        if (x < 0) {
            for (int r = 0; r < n_rec; r++)
                recs[r].clobbered = 1;
            continue;
        }
        const dna_insn *in = &prog->insns[x];
        mem_use u[MAX_USES];
        int n = insn_uses(m, x, u);
        for (int q = 0; q < n; q++) {
            if (u[q].write || u[q].space != SP_ACT)
                continue;
            int can = (in->opcode == DNA_CONV && q == 0) || in->opcode == DNA_VEC, done = 0;
            for (int r = 0; can && r < n_rec && !done; r++)
                if (!recs[r].clobbered && u[q].lo >= recs[r].lo && u[q].hi <= recs[r].hi) {
                    m->fwd_src[(size_t)x * DNA_MAX_SRC + q] = recs[r].dram + (u[q].lo - recs[r].lo);
                    m->fwd_stats.fwd_inputs++;
                    done = 1;
                }
            for (int r = 0; !done && r < n_rec; r++)
                if (spans_meet(u[q].lo, u[q].hi, recs[r].lo, recs[r].hi))
                    recs[r].alive = 1;
        }
        for (int q = 0; q < n; q++)
            if (u[q].write && u[q].space == SP_DRAM)
                for (int r = 0; r < n_rec; r++)
                    if (spans_meet(u[q].lo, u[q].hi, recs[r].dram, recs[r].dram + (recs[r].hi - recs[r].lo)))
                        recs[r].clobbered = 1;
        for (int q = 0; q < n; q++) {
            if (!u[q].write || u[q].space != SP_ACT)
                continue;
            for (int r = 0; r < n_rec;) {
                if (!spans_meet(u[q].lo, u[q].hi, recs[r].lo, recs[r].hi)) {
                    r++;
                } else if (u[q].lo <= recs[r].lo && u[q].hi >= recs[r].hi) { /* all overwritten */
                    fwd_finish(m, &recs[r]);
                    recs[r] = recs[--n_rec];
                } else {
                    recs[r++].clobbered = 1;
                }
            }
        }
        if (in->opcode == DNA_LOAD && in->u.dma.mem == DNA_MEM_ACT) {
            const dna_dma *d = &in->u.dma;
            int64_t b = dma_block_bytes(d);
            if (b > 0 && d->dram >= prog->params_bytes) {
                void *tmp_grow;
                if (GROW(recs, cap_rec, n_rec)) {
                    st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
                    goto done;
                }
                recs[n_rec++] = (fwd_rec){x, d->sram, (int64_t)d->sram + b, d->dram, 0, 0};
            }
        }
    }
    for (int r = 0; r < n_rec; r++)
        fwd_finish(m, &recs[r]);
    /* pass 2: output forwarding, on pass 1's effects */
    for (int p = 0; p < n_seq; p++)
        if (seq[p] >= 0)
            nuse[seq[p]] = insn_uses(m, seq[p], uses + (size_t)seq[p] * MAX_USES);
    for (int pc = 0; pc < n_seq; pc++) {
        int x = seq[pc];
        if (x < 0 || (prog->insns[x].opcode != DNA_CONV && prog->insns[x].opcode != DNA_VEC))
            continue;
        const mem_use *ux = uses + (size_t)x * MAX_USES;
        const mem_use *out = &ux[nuse[x] - 1]; /* the tile: insn_uses puts it last */
        if (!out->write || out->space != SP_ACT)
            continue;
        const int64_t lo = out->lo, hi = out->hi;
        int s = -1, ps = -1, ok = 0, p;
        for (p = pc + 1; p < n_seq && p <= pc + SIM_FWD_SCAN; p++) {
            int y = seq[p], bad = y < 0, stop = 0;
            for (int q = 0; !bad && q < nuse[y]; q++) {
                const mem_use *u = uses + (size_t)y * MAX_USES + q;
                if (u->space != SP_ACT || !spans_meet(u->lo, u->hi, lo, hi))
                    continue;
                if (!u->write && s < 0 && prog->insns[y].opcode == DNA_STORE && u->lo == lo && u->hi == hi &&
                    dma_block_bytes(&prog->insns[y].u.dma) == hi - lo) {
                    s = y;
                    ps = p;
                } else if (u->write && s >= 0 && u->lo <= lo && u->hi >= hi && y != s) {
                    stop = 1;
                } else {
                    bad = 1;
                }
            }
            if (bad)
                break;
            if (stop) {
                ok = 1;
                break;
            }
        }
        if (p == n_seq && s >= 0)
            ok = 1; /* the program ends */
        if (!ok)
            continue;
        const int64_t dram = prog->insns[s].u.dma.dram, dram_hi = dram + (hi - lo);
        if (dram < prog->params_bytes)
            continue;
        for (int q = 0; q < nuse[x] && ok; q++) /* its own inputs */
            if (ux[q].space == SP_DRAM && spans_meet(ux[q].lo, ux[q].hi, dram, dram_hi))
                ok = 0;
        for (int b = pc + 1; b < ps && ok; b++) /* nothing between touches the STORE's range */
            for (int q = 0; q < nuse[seq[b]] && ok; q++) {
                const mem_use *u = uses + (size_t)seq[b] * MAX_USES + q;
                if (u->space == SP_DRAM && spans_meet(u->lo, u->hi, dram, dram_hi))
                    ok = 0;
            }
        if (!ok)
            continue;
        m->fwd_dst[x] = dram;
        m->fwd_dead[s] = 1;
        m->fwd_stats.fwd_outputs++;
        m->fwd_stats.dead_stores++;
    }
done:
    free(seq);
    free(uses);
    free(nuse);
    free(recs);
    return st;
}

dna_forward_stats dna_machine_forward_stats(const dna_machine *m)
{
    return m->fwd_stats;
}

/* Rough host time of instruction i's byte part on one thread, in ns, and
 * the threads it splits across when run alone (*own). Measured on a 2-core
 * Sapphire Rapids: a pointwise conv tile runs 150-350 multiply-adds per
 * ns, a depthwise or 3-channel one 25-100, a LOAD or STORE copies about 25
 * bytes per ns. Only the choice of lanes or not depends on it. */
static double insn_cost_ns(const dna_machine *m, int i, int *own)
{
    const dna_insn *in = &m->prog->insns[i];
    *own = 1;
    switch (in->opcode) {
    case DNA_LOAD:
    case DNA_STORE: {
        const dna_dma *d = &in->u.dma;
        if ((in->opcode == DNA_LOAD && d->mem == DNA_MEM_WGT && m->wgt_unread) || (m->fwd_dead && m->fwd_dead[i]))
            return 50; /* tags only, or forwarded */
        double bytes = (double)d->rows * d->cols * d->run_bytes;
        *own = bytes >= 32768 ? m->opt.threads : 1;
        return 200 + bytes / 25;
    }
    case DNA_CONV: {
        const conv_prep *c = m->insn_prep[i];
        const dna_conv_geom *geo = &m->geos[c->layer];
        double per_px = geo->dense ? (double)c->key.in_c : (double)geo->kh * geo->kw * geo->cg;
        double macs = (double)c->key.out_h * c->key.out_w * c->key.oc_n * per_px;
        *own = c->threads;
        return 300 + macs / (per_px < 64 ? 40 : 200);
    }
    case DNA_VEC: {
        const vec_prep *v = m->insn_prep[i];
        *own = v->threads;
        return 300 + (double)mera_type_nbytes(&v->out_t) / 2;
    }
    }
    return 0;
}

/* Handing a job to the pool and waiting for it, both sides, in ns. */
#define SIM_POOL_JOB_NS 2000.0
/* Earlier instructions an instruction is compared with; it also comes
 * after every instruction before them (a conservative bound on the load
 * time, quadratic in it otherwise). */
#define SIM_WAVE_WINDOW 256

static mera_status plan_waves(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    const char *env = getenv("MERA_SIM_WAVES");
    m->lanes = 1;
    m->use_waves = m->opt.threads > 1 && !(env && strcmp(env, "0") == 0);
#ifdef MERA_SERIAL_THREADS
    m->use_waves = 0; /* deploy.so: every job runs on the calling thread */
#endif
    if (!m->use_waves)
        return MERA_OK;
    size_t ni = (size_t)(prog->n_insns > 0 ? prog->n_insns : 1);
    m->wave_items = malloc(ni * sizeof *m->wave_items);
    m->wave_start = malloc((ni + 1) * sizeof *m->wave_start);
    m->wave_lanes = calloc(ni, 1);
    m->insn_threads = calloc(ni, 1);
    const double pool_ns = SIM_POOL_JOB_NS;
    m->seg_wave = calloc((size_t)prog->n_segments + 1, sizeof *m->seg_wave);
    int *level = malloc(ni * sizeof *level), *nuse = malloc(ni * sizeof *nuse), *first = malloc((ni + 1) * sizeof *first);
    mem_use *uses = malloc(ni * MAX_USES * sizeof *uses);
    double *cost = malloc(ni * sizeof *cost);
    int *own = malloc(ni * sizeof *own);
    mera_status st = MERA_OK;
    if (!m->wave_items || !m->wave_start || !m->wave_lanes || !m->insn_threads || !m->seg_wave || !level || !nuse || !first || !uses ||
        !cost || !own) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto done;
    }
    int n_waves = 0, any_lanes = 0, placed = 0;
    const double T = m->opt.threads;
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        m->seg_wave[s] = n_waves;
        if (seg->kind != DNA_SEG_DNA)
            continue;
        const int *ord = m->order + seg->first;
        int top = -1, old_top = -1; /* the highest level so far, and of the instructions before the window */
        for (int k = 0; k < seg->count; k++) {
            nuse[k] = insn_uses(m, ord[k], uses + (size_t)k * MAX_USES);
            if (k > SIM_WAVE_WINDOW && level[k - SIM_WAVE_WINDOW - 1] > old_top)
                old_top = level[k - SIM_WAVE_WINDOW - 1];
            int lv = old_top + 1;
            for (int j = k > SIM_WAVE_WINDOW ? k - SIM_WAVE_WINDOW : 0; j < k; j++)
                if (level[j] >= lv && uses_conflict(uses + (size_t)j * MAX_USES, nuse[j], uses + (size_t)k * MAX_USES, nuse[k]))
                    lv = level[j] + 1;
            level[k] = lv;
            top = lv > top ? lv : top;
        }
        /* counting sort by level, execution order within one */
        int nl = top + 1;
        for (int l = 0; l <= nl; l++)
            first[l] = 0;
        for (int k = 0; k < seg->count; k++)
            first[level[k] + 1]++;
        for (int l = 0; l < nl; l++)
            first[l + 1] += first[l];
        for (int k = 0; k < seg->count; k++)
            m->wave_items[placed + first[level[k]]++] = ord[k];
        /* first[l] is now the end of level l */
        for (int l = 0; l < nl; l++) {
            int b = l ? first[l - 1] : 0, e = first[l];
            int *it = m->wave_items + placed + b;
            double sum = 0, most = 0, serial = 0;
            for (int q = 0; q < e - b; q++) {
                int t;
                cost[q] = insn_cost_ns(m, it[q], &t);
                own[q] = t;
                sum += cost[q];
                most = cost[q] > most ? cost[q] : most;
                /* alone, an instruction splits only when that pays for the pool job */
                if (t > 1 && cost[q] / t + pool_ns >= cost[q])
                    t = 1;
                m->insn_threads[it[q]] = (unsigned char)t;
                serial += t > 1 ? cost[q] / t + pool_ns : cost[q];
            }
            double spread = (most > sum / T ? most : sum / T) + pool_ns;
            m->wave_start[n_waves] = placed + b;
            if (e - b >= 2 && spread < serial) {
                m->wave_lanes[n_waves] = 1;
                any_lanes = 1;
                /* the costliest first, so that the lanes finish together */
                for (int q = 1; q < e - b; q++)
                    for (int p = q; p > 0 && cost[p] > cost[p - 1]; p--) {
                        double tc = cost[p];
                        cost[p] = cost[p - 1];
                        cost[p - 1] = tc;
                        int ti = it[p];
                        it[p] = it[p - 1];
                        it[p - 1] = ti;
                    }
            }
            n_waves++;
        }
        placed += seg->count;
    }
    m->seg_wave[prog->n_segments] = n_waves;
    m->wave_start[n_waves] = placed;
    m->lanes = any_lanes ? m->opt.threads : 1;
    if (m->profile) {
        int on_lanes = 0, lane_insns = 0;
        for (int w = 0; w < n_waves; w++)
            if (m->wave_lanes[w]) {
                on_lanes++;
                lane_insns += m->wave_start[w + 1] - m->wave_start[w];
            }
        fprintf(stderr, "mera sim waves: %d instructions in %d waves, %d waves (%d instructions) on the lanes\n",
                placed, n_waves, on_lanes, lane_insns);
    }
done:
    free(level);
    free(nuse);
    free(first);
    free(uses);
    free(cost);
    free(own);
    return st;
}

/* ---- what a reused run zeroes ------------------------------------------------
 *
 * A reused run must read what a new one reads: 0 in every byte it reads
 * before writing it. The program is data-independent, so which bytes those
 * are is known at load: plan_zeroed follows a run (graph inputs, then the
 * segments, instructions in execution order, then the outputs) with one
 * bit per byte of ACT, WGT and the activation DRAM for "written by now",
 * and takes the hull of every read of a byte not yet written. Writes are
 * exact (a box's runs, a tile's bytes; a box of more than 2^16 scattered
 * runs is not counted: its bytes stay unwritten, which only zeroes more),
 * reads exact or their hull. A well-formed program reads only what it
 * wrote, and a reused run zeroes nothing or little instead of every byte
 * a run may write. */

typedef struct {
    uint64_t *w;
    int64_t n;
} byte_bits;

static void bits_set(byte_bits *b, int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > b->n ? b->n : hi;
    for (int64_t x = lo; x < hi;) {
        if ((x & 63) == 0 && hi - x >= 64) {
            b->w[x >> 6] = ~(uint64_t)0;
            x += 64;
        } else {
            b->w[x >> 6] |= (uint64_t)1 << (x & 63);
            x++;
        }
    }
}

static int bits_all(const byte_bits *b, int64_t lo, int64_t hi)
{
    if (lo < 0 || hi > b->n)
        return 0;
    for (int64_t x = lo; x < hi;) {
        if ((x & 63) == 0 && hi - x >= 64) {
            if (b->w[x >> 6] != ~(uint64_t)0)
                return 0;
            x += 64;
        } else {
            if (!(b->w[x >> 6] >> (x & 63) & 1))
                return 0;
            x++;
        }
    }
    return 1;
}

typedef struct {
    byte_bits bits[3];
    int64_t need[3][2];
    int64_t base;
} zero_plan;

static void zp_read(zero_plan *z, int buf, int64_t lo, int64_t hi)
{
    if (buf == BUF_DRAM) {
        lo -= z->base;
        hi -= z->base;
        lo = lo < 0 ? 0 : lo; /* the constant image is never written */
    }
    if (hi <= lo || bits_all(&z->bits[buf], lo, hi))
        return;
    int64_t *w = z->need[buf];
    if (w[0] >= w[1]) {
        w[0] = lo;
        w[1] = hi;
    } else {
        w[0] = lo < w[0] ? lo : w[0];
        w[1] = hi > w[1] ? hi : w[1];
    }
}

static void zp_write(zero_plan *z, int buf, int64_t lo, int64_t hi)
{
    if (buf == BUF_DRAM) {
        lo -= z->base;
        hi -= z->base;
    }
    bits_set(&z->bits[buf], lo, hi);
}

/* The runs of a box (rows x cols runs of run_bytes at base + row *
 * row_stride + col * col_stride), rows [r0, r1) and cols [c0, c1) of it,
 * read or written; a read of too many runs is its hull, a write of too
 * many is dropped. */
static void zp_box(zero_plan *z, int buf, int write, const dna_dma *d, int64_t base, int64_t row_stride,
                   int64_t col_stride, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    if (r1 <= r0 || c1 <= c0)
        return;
    int contiguous = col_stride == d->run_bytes;
    double runs = (double)(r1 - r0) * (contiguous ? 1 : (double)(c1 - c0));
    if (runs > 65536) {
        if (!write) {
            int64_t lo, hi;
            box_span(d, base, row_stride, col_stride, &lo, &hi);
            zp_read(z, buf, lo, hi);
        }
        return;
    }
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = c0; c < (contiguous ? c0 + 1 : c1); c++) {
            int64_t lo = base + r * row_stride + c * col_stride;
            int64_t hi = lo + (contiguous ? (c1 - c0) * (int64_t)d->run_bytes : d->run_bytes);
            (write ? zp_write : zp_read)(z, buf, lo, hi);
        }
}

static void zp_value(zero_plan *z, const dna_machine *m, int v, int write)
{
    int64_t at = m->prog->value_dram[v];
    if (at < m->prog->params_bytes)
        return; /* -1 (graph data) or the constant image */
    int64_t hi = at + (int64_t)mera_type_nbytes(&mera_graph_value(m->g, v)->type);
    (write ? zp_write : zp_read)(z, BUF_DRAM, at, hi);
}

static void plan_zeroed(dna_machine *m)
{
    const dna_program *prog = m->prog;
    memcpy(m->zeroed, m->written, sizeof m->zeroed); /* without the plan: all a run may write */
    zero_plan z;
    memset(&z, 0, sizeof z);
    z.base = dna_act_base(prog);
    const int64_t size[3] = {prog->act_bytes, prog->wgt_bytes, prog->dram_bytes - z.base};
    int ok = 1;
    for (int b = 0; b < 3; b++) {
        z.bits[b].n = size[b] > 0 ? size[b] : 0;
        z.bits[b].w = calloc((size_t)(z.bits[b].n / 64 + 1), sizeof(uint64_t));
        ok &= z.bits[b].w != NULL;
    }
    if (!ok)
        goto done;
    for (int k = 0; k < mera_graph_num_inputs(m->g); k++) {
        int v = mera_graph_input(m->g, k);
        if (m->input_slot[v] >= 0)
            zp_value(&z, m, v, 1);
    }
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        if (seg->kind == DNA_SEG_HOST) {
            const mera_node *node = mera_graph_node(m->g, seg->node);
            for (int k = 0; k < node->n_inputs; k++)
                if (node->inputs[k] >= 0)
                    zp_value(&z, m, node->inputs[k], 0);
            for (int o = 0; o < node->n_outputs; o++)
                zp_value(&z, m, node->outputs[o], 1);
            continue;
        }
        for (int k = 0; k < seg->count; k++) {
            int i = m->order[seg->first + k];
            const dna_insn *in = &prog->insns[i];
            if (in->opcode == DNA_LOAD || in->opcode == DNA_STORE) {
                const dna_dma *d = &in->u.dma;
                if (m->fwd_dead && m->fwd_dead[i])
                    continue; /* forwarded: moves no bytes */
                if (in->opcode == DNA_LOAD) { /* reads DRAM but the padding, writes every run of the box */
                    zp_box(&z, BUF_DRAM, 0, d, d->dram, d->dram_row_stride, d->dram_col_stride, d->pad_top,
                           d->rows - d->pad_bottom, d->pad_left, d->cols - d->pad_right);
                    zp_box(&z, d->mem == DNA_MEM_WGT ? BUF_WGT : BUF_ACT, 1, d, d->sram, d->sram_row_stride,
                           d->sram_col_stride, 0, d->rows, 0, d->cols);
                } else {
                    zp_box(&z, BUF_ACT, 0, d, d->sram, d->sram_row_stride, d->sram_col_stride, 0, d->rows, 0, d->cols);
                    zp_box(&z, BUF_DRAM, 1, d, d->dram, d->dram_row_stride, d->dram_col_stride, 0, d->rows, 0, d->cols);
                }
                continue;
            }
            mem_use u[MAX_USES];
            int n = insn_uses(m, i, u);
            static const int buf_of[3] = {BUF_ACT, BUF_WGT, BUF_DRAM}; /* by SP_* */
            for (int q = 0; q < n; q++)
                if (!u[q].write)
                    zp_read(&z, buf_of[u[q].space], u[q].lo, u[q].hi);
            for (int q = 0; q < n; q++)
                if (u[q].write)
                    zp_write(&z, buf_of[u[q].space], u[q].lo, u[q].hi);
        }
    }
    for (int k = 0; k < mera_graph_num_outputs(m->g); k++)
        zp_value(&z, m, mera_graph_output(m->g, k), 0);
    for (int b = 0; b < 3; b++) {
        const int64_t *w = m->written[b], *need = z.need[b];
        int64_t lo = need[0] > w[0] ? need[0] : w[0], hi = need[1] < w[1] ? need[1] : w[1];
        m->zeroed[b][0] = need[0] < need[1] && lo < hi ? lo : 0;
        m->zeroed[b][1] = need[0] < need[1] && lo < hi ? hi : 0;
    }
done:
    for (int b = 0; b < 3; b++)
        free(z.bits[b].w);
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
    m->wgt_unread = !m->opt.pack_at_run;
    for (int k = 0; k < m->n_convs; k++)
        m->wgt_unread &= m->convs[k]->state != NULL;
    plan_scratch(m);
    plan_threads(m);
    plan_written(m);
    if (m->opt.release_const_pages && !m->opt.pack_at_run)
        release_image(m, 0, m->prog->params_bytes); /* the rest: runs read only what VEC layers load */
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
    if (plan_forward(m, err) || plan_waves(m, err))
        goto fail;
    plan_zeroed(m);
    return m;
fail:
    dna_machine_free(m);
    return NULL;
}

const dna_timing *dna_machine_timing(const dna_machine *m)
{
    return &m->timing;
}

/* ---- run ----------------------------------------------------------------- */

typedef struct {
    int64_t lo, hi, dram; /* WGT [lo, hi) holds DRAM [dram, dram + hi - lo) */
} wgt_tag;

/* MERA_SIM_PROFILE: host time of a run by kind of work (wall time, or with
 * MERA_SIM_PROFILE=cpu the calling thread's CPU time), printed to stderr
 * after each dna_machine_run, and for a run driven segment by segment (the
 * IP's emulated device) the totals of all its segments when it is freed.
 * The clock reads cost about 1 us per instruction. */
enum { PROF_LOAD, PROF_STORE, PROF_LOAD_FWD, PROF_STORE_FWD, PROF_CONV, PROF_VEC, PROF_HOST, PROF_SETUP, PROF_N };
static const char *const prof_names[PROF_N] = {"LOAD", "STORE", "LOAD forwarded", "STORE forwarded", "CONV", "VEC",
                                               "host nodes", "setup/io"};

static double now_ns(int cpu)
{
    struct timespec ts;
    clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct dna_run {
    const dna_machine *m;
    uint8_t *act_dram; /* DRAM [dna_act_base, dram_bytes) */
    int own_dram;      /* act_dram allocated by dna_run_new */
    uint8_t *act, *wgt;
    float *bias;       /* aligned scratch for a CONV's bias, one per lane (bias_stride floats apart) */
    size_t bias_stride;
    void *scratch;     /* the kernels' scratch (dna_machine.scratch_bytes), one per lane
                        * (dna_machine.scratch_stride apart), or NULL */
    mera_error *lane_err; /* per lane: the error of its failed instruction */
    wgt_tag *tags;
    int n_tags, cap_tags;
    double prof_ns[PROF_N]; /* MERA_SIM_PROFILE */
    int64_t prof_count[PROF_N];
    int prof_by_caller;     /* dna_machine_run prints the profile itself (after the free) */
};

typedef struct dna_run run_ctx;

static const uint8_t *dram_r(const run_ctx *r, int64_t addr)
{
    const dna_program *prog = r->m->prog;
    return addr < prog->params_bytes ? prog->params_image + addr : r->act_dram + (addr - dna_act_base(prog));
}

static uint8_t *dram_w(const run_ctx *r, int64_t addr)
{
    return r->act_dram + (addr - dna_act_base(r->m->prog));
}

static mera_status tags_reserve(run_ctx *r, int extra, mera_error *err)
{
    if (r->n_tags + extra <= r->cap_tags)
        return MERA_OK;
    int nc = r->cap_tags ? r->cap_tags * 2 : 64;
    while (nc < r->n_tags + extra)
        nc *= 2;
    wgt_tag *t = realloc(r->tags, (size_t)nc * sizeof *t);
    if (!t)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    r->tags = t;
    r->cap_tags = nc;
    return MERA_OK;
}

/* WGT [lo, hi) is being overwritten: drop what the tags said about it.
 * Tags never overlap (every LOAD first invalidates its whole range), so
 * at most one tag straddles both ends and splits in two. */
static mera_status tags_invalidate(run_ctx *r, int64_t lo, int64_t hi, mera_error *err)
{
    mera_status st = tags_reserve(r, 1, err);
    if (st)
        return st;
    int k = 0, n = r->n_tags, have_extra = 0;
    wgt_tag extra = {0, 0, 0};
    for (int j = 0; j < n; j++) {
        wgt_tag t = r->tags[j];
        if (t.hi <= lo || t.lo >= hi) {
            r->tags[k++] = t;
            continue;
        }
        if (t.lo < lo)
            r->tags[k++] = (wgt_tag){t.lo, lo, t.dram};
        if (t.hi > hi) {
            extra = (wgt_tag){hi, t.hi, t.dram + (hi - t.lo)};
            have_extra = 1;
        }
    }
    if (have_extra)
        r->tags[k++] = extra;
    r->n_tags = k;
    return MERA_OK;
}

static mera_status tags_add(run_ctx *r, int64_t lo, int64_t hi, int64_t dram, mera_error *err)
{
    mera_status st = tags_reserve(r, 1, err);
    if (st)
        return st;
    r->tags[r->n_tags++] = (wgt_tag){lo, hi, dram};
    return MERA_OK;
}

/* Is WGT [addr, addr + size) the bytes of DRAM [dram, dram + size)? */
static int tags_cover(const run_ctx *r, int64_t addr, int64_t size, int64_t dram)
{
    int64_t cur = addr, end = addr + size;
    while (cur < end) {
        int hit = 0;
        for (int j = 0; j < r->n_tags && !hit; j++) {
            const wgt_tag *t = &r->tags[j];
            if (t->lo <= cur && cur < t->hi && t->dram - t->lo == dram - addr) {
                cur = t->hi;
                hit = 1;
            }
        }
        if (!hit)
            return 0;
    }
    return 1;
}

/* A LOAD read the constant image: release the pages wholly inside the
 * DRAM range it read (dna_machine_options.release_const_pages; the image
 * is a read-only file mapping, the pages fault back from the file). The
 * range is the box's extreme corners, as check_dma computes them. */
static void release_const(const dna_machine *m, const dna_dma *d)
{
#ifdef MADV_DONTNEED
    int64_t nr = d->rows - d->pad_top - d->pad_bottom, nc = d->cols - d->pad_left - d->pad_right;
    if (nr <= 0 || nc <= 0)
        return;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            int64_t row = a ? d->rows - d->pad_bottom - 1 : d->pad_top, col = b ? d->cols - d->pad_right - 1 : d->pad_left;
            int64_t x = d->dram + row * d->dram_row_stride + col * d->dram_col_stride;
            lo = x < lo ? x : lo;
            hi = x + d->run_bytes > hi ? x + d->run_bytes : hi;
        }
    /* Only boxes wholly inside the constant image: a padded activation box
     * has a virtual origin that can lie below params_bytes (isa.h). */
    if (lo < 0 || hi > m->prog->params_bytes)
        return;
    uintptr_t page = (uintptr_t)m->page_size;
    uintptr_t start = ((uintptr_t)(m->prog->params_image + lo) + page - 1) & ~(page - 1);
    uintptr_t end = (uintptr_t)(m->prog->params_image + hi) & ~(page - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
#else
    (void)m;
    (void)d;
#endif
}

/* ---- LOAD and STORE rows across the worker pool ----------------------------
 *
 * A box's rows go to the workers only when they write disjoint bytes: the
 * row stride on the written side is at least one row's extent (so the
 * serial order of the writes cannot matter), and the box is large enough
 * to pay for the split. Reads are of the other memory (DRAM or SRAM), which
 * no row writes. */

#define DMA_MIN_CHUNK 16384 /* bytes per range of the worker pool */

typedef struct {
    const run_ctx *r;
    const dna_dma *d;
    uint8_t *buf; /* LOAD: the destination buffer */
    int padded;
} dma_job;

/* Do the box's rows write disjoint bytes on the side with these strides? */
static int dma_rows_disjoint(const dna_dma *d, int64_t row_stride, int64_t col_stride)
{
    int64_t extent = (int64_t)(d->cols - 1) * col_stride + d->run_bytes;
    return d->rows > 1 && d->cols >= 1 && col_stride >= 0 && row_stride >= extent;
}

/* DRAM [addr, addr + n) as one pointer, or NULL when the range straddles
 * the constant image's end (then the bytes are read one run at a time). */
static const uint8_t *dram_span(const run_ctx *r, int64_t addr, int64_t n)
{
    int64_t pb = r->m->prog->params_bytes;
    return (addr < pb) == (addr + n - 1 < pb) ? dram_r(r, addr) : NULL;
}

typedef struct {
    uint8_t *dst;
    const uint8_t *src;
} copy_job;

static void copy_range(void *ctx, int64_t b0, int64_t b1)
{
    const copy_job *j = ctx;
    memcpy(j->dst + b0 * DMA_MIN_CHUNK, j->src + b0 * DMA_MIN_CHUNK, (size_t)((b1 - b0) * DMA_MIN_CHUNK));
}

/* memcpy of n bytes, its DMA_MIN_CHUNK pieces across the worker pool.
 * Returns whether it posted a pool job. */
static int dma_copy(int threads, uint8_t *dst, const uint8_t *src, int64_t n)
{
    int64_t pieces = n / DMA_MIN_CHUNK, done = pieces * DMA_MIN_CHUNK;
    int posted = pieces >= 2 && threads > 1;
    if (pieces >= 2) {
        copy_job j = {dst, src};
        mera_parallel_for(threads, pieces, 1, copy_range, &j);
    } else {
        done = 0;
    }
    memcpy(dst + done, src + done, (size_t)(n - done));
    return posted;
}

/* Runs a LOAD's or STORE's rows on up to threads threads; returns whether
 * it posted a pool job. */
static int dma_split(const run_ctx *r, int threads, const dna_dma *d, int disjoint, mera_parallel_fn fn, dma_job *j)
{
    int64_t block = dma_block_bytes(d);
    if (block > 0) { /* one memcpy, or its pieces on the workers */
        const uint8_t *src = j->buf ? dram_span(r, d->dram, block) : r->act + d->sram;
        uint8_t *dst = j->buf ? j->buf + d->sram : dram_w(r, d->dram);
        if (src)
            return dma_copy(threads, dst, src, block);
    }
    int64_t row_bytes = (int64_t)d->cols * d->run_bytes;
    if (disjoint && row_bytes * d->rows >= 2 * DMA_MIN_CHUNK) {
        mera_parallel_for(threads, d->rows, 1 + DMA_MIN_CHUNK / (row_bytes + 1), fn, j);
        return threads > 1;
    }
    fn(j, 0, d->rows);
    return 0;
}

static void load_rows(void *ctx, int64_t row0, int64_t row1)
{
    const dma_job *j = ctx;
    const run_ctx *r = j->r;
    const dna_dma *d = j->d;
    uint8_t *buf = j->buf;
    const int64_t rb = d->run_bytes;
    /* runs that follow each other on both sides: a row's columns are one block */
    const int sram_dense = d->sram_col_stride == (uint32_t)rb, both_dense = sram_dense && d->dram_col_stride == rb;
    for (int64_t row = row0; row < row1 && rb == 1 && !j->padded && !both_dense; row++) {
        /* a transposing scatter: bytes, no memcpy per byte */
        uint8_t *dst = buf + d->sram + row * d->sram_row_stride;
        int64_t src = d->dram + row * d->dram_row_stride;
        for (int64_t col = 0; col < d->cols; col++)
            dst[col * d->sram_col_stride] = *dram_r(r, src + col * d->dram_col_stride);
    }
    for (int64_t row = row0; row < row1 && (rb != 1 || j->padded || both_dense); row++) {
        uint8_t *dst_row = buf + d->sram + row * d->sram_row_stride;
        int pad_row = row < d->pad_top || row >= d->rows - d->pad_bottom;
        int64_t c0 = pad_row ? d->cols : d->pad_left, c1 = pad_row ? d->cols : d->cols - d->pad_right;
        const uint8_t *src = both_dense && c1 > c0
                                 ? dram_span(r, d->dram + row * d->dram_row_stride + c0 * rb, (c1 - c0) * rb)
                                 : NULL;
        if (sram_dense) { /* the padding columns as two blocks */
            memset(dst_row, d->pad_value, (size_t)(c0 * rb));
            memset(dst_row + c1 * rb, d->pad_value, (size_t)((d->cols - c1) * rb));
        }
        if (src)
            memcpy(dst_row + c0 * rb, src, (size_t)((c1 - c0) * rb));
        for (int64_t col = 0; col < d->cols; col++) {
            int inside = col >= c0 && col < c1;
            if ((inside && src) || (!inside && sram_dense))
                continue; /* copied or padded above */
            uint8_t *dst = dst_row + col * d->sram_col_stride;
            if (!inside)
                memset(dst, d->pad_value, (size_t)rb);
            else
                memcpy(dst, dram_r(r, d->dram + row * d->dram_row_stride + col * d->dram_col_stride), (size_t)rb);
        }
    }
}

static void store_rows(void *ctx, int64_t row0, int64_t row1)
{
    const dma_job *j = ctx;
    const run_ctx *r = j->r;
    const dna_dma *d = j->d;
    const int64_t rb = d->run_bytes;
    if (d->sram_col_stride == (uint32_t)rb && d->dram_col_stride == rb) { /* a row is one block */
        for (int64_t row = row0; row < row1; row++)
            memcpy(dram_w(r, d->dram + row * d->dram_row_stride), r->act + d->sram + row * d->sram_row_stride,
                   (size_t)(d->cols * rb));
        return;
    }
    if (rb == 1) { /* a transposing gather: bytes, no memcpy per byte */
        for (int64_t row = row0; row < row1; row++) {
            uint8_t *dst = dram_w(r, d->dram + row * d->dram_row_stride);
            const uint8_t *src = r->act + d->sram + row * d->sram_row_stride;
            for (int64_t col = 0; col < d->cols; col++)
                dst[col * d->dram_col_stride] = src[col * d->sram_col_stride];
        }
        return;
    }
    for (int64_t row = row0; row < row1; row++)
        for (int64_t col = 0; col < d->cols; col++)
            memcpy(dram_w(r, d->dram + row * d->dram_row_stride + col * d->dram_col_stride),
                   r->act + d->sram + row * d->sram_row_stride + col * d->sram_col_stride, (size_t)rb);
}

/* The bytes a LOAD moves, on up to threads threads. */
static void load_bytes(run_ctx *r, int i, int threads)
{
    const dna_dma *d = &r->m->prog->insns[i].u.dma;
    uint8_t *buf = d->mem == DNA_MEM_WGT ? r->wgt : r->act;
    int padded = d->pad_top || d->pad_bottom || d->pad_left || d->pad_right;
    /* the prepared kernels hold the weights: only the tags (load_tags) matter */
    if (d->mem == DNA_MEM_WGT && r->m->wgt_unread)
        return;
    dma_job j = {r, d, buf, padded};
    dma_split(r, threads, d, dma_rows_disjoint(d, d->sram_row_stride, d->sram_col_stride), load_rows, &j);
    if (r->m->opt.release_const_pages)
        release_const(r->m, d);
}

/* What a LOAD into WGT leaves there: the tags the CONVs check. */
static mera_status load_tags(run_ctx *r, int i, mera_error *err)
{
    const dna_dma *d = &r->m->prog->insns[i].u.dma;
    if (d->mem != DNA_MEM_WGT)
        return MERA_OK;
    /* Tag what now sits in WGT: per row, when a row is one contiguous run
     * on both sides and unpadded. */
    int64_t hi = (int64_t)d->sram + (int64_t)(d->rows - 1) * d->sram_row_stride +
                 (int64_t)(d->cols - 1) * d->sram_col_stride + d->run_bytes;
    mera_status st = tags_invalidate(r, d->sram, hi, err);
    if (st)
        return st;
    int row_linear = (d->cols == 1 || (d->sram_col_stride == (uint32_t)d->run_bytes &&
                                       d->dram_col_stride == d->run_bytes)) &&
                     d->pad_left == 0 && d->pad_right == 0;
    int64_t len = (int64_t)d->cols * d->run_bytes;
    /* rows that overlap in WGT (a stride shorter than a row: only a
     * malformed program) are not tagged; the tags stay disjoint and at
     * most one per row that fits in WGT */
    if (!row_linear || (d->rows > 1 && (int64_t)d->sram_row_stride < len))
        return MERA_OK;
    for (int64_t row = d->pad_top; row < d->rows - d->pad_bottom; row++) {
        int64_t lo = (int64_t)d->sram + row * d->sram_row_stride;
        if ((st = tags_add(r, lo, lo + len, d->dram + row * d->dram_row_stride, err)))
            return st;
    }
    return MERA_OK;
}

static void exec_store(run_ctx *r, int i, int threads)
{
    const dna_dma *d = &r->m->prog->insns[i].u.dma;
    dma_job j = {r, d, NULL, 0};
    dma_split(r, threads, d, dma_rows_disjoint(d, d->dram_row_stride, d->dram_col_stride), store_rows, &j);
}

/* A CONV's check that WGT holds its weight block (the tags). */
static mera_status conv_tags(run_ctx *r, int i, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_conv *k = &m->prog->insns[i].u.conv;
    const conv_prep *c = m->insn_prep[i];
    int64_t blk = c->w_bytes + (c->has_bias ? 4 * (int64_t)k->oc_n : 0);
    if (!tags_cover(r, k->wgt_addr, blk, k->wgt_dram))
        return insn_fail(m, err, MERA_ERR_INVALID, i,
                         "WGT [%u, %lld) does not hold the weight block loaded from DRAM %lld (program bug: missing "
                         "or overwritten weight LOAD)",
                         k->wgt_addr, (long long)(k->wgt_addr + blk), (long long)k->wgt_dram);
    return MERA_OK;
}

/* The lane's own scratch and bias buffer (lane < dna_machine.lanes). */
static void *lane_scratch(const run_ctx *r, int lane)
{
    return r->scratch ? (uint8_t *)r->scratch + (size_t)lane * r->m->scratch_stride : NULL;
}

/* threads: the kernel's thread count, 0 the tile's own (conv_prep.threads). */
static mera_status exec_conv(run_ctx *r, int i, int lane, int threads, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_conv *k = &m->prog->insns[i].u.conv;
    const conv_prep *c = m->insn_prep[i];
    mera_kernel_args a;
    conv_args(c, &a);
    a.threads = threads > 0 ? threads : c->threads;
    int64_t src = m->fwd_src ? m->fwd_src[(size_t)i * DNA_MAX_SRC] : -1, dst = m->fwd_dst ? m->fwd_dst[i] : -1;
    a.in[0] = src >= 0 ? dram_r(r, src) : r->act + k->in_addr; /* forwarded: the LOAD's DRAM source */
    a.in[1] = r->wgt ? r->wgt + k->wgt_addr : NULL; /* NULL: prepared, the kernel holds the weights */
    if (c->has_bias && !c->state) { /* a prepared kernel holds its bias */
        float *bias = r->bias + (size_t)lane * r->bias_stride;
        memcpy(bias, r->wgt + k->wgt_addr + c->w_bytes, (size_t)k->oc_n * sizeof(float));
        a.in[2] = bias;
    }
    a.out[0] = dst >= 0 ? dram_w(r, dst) : r->act + k->out_addr; /* forwarded: the STORE's DRAM range */
    a.scratch = lane_scratch(r, lane);
    a.scratch_bytes = r->scratch ? m->scratch_bytes : 0;
    mera_status st = c->k.run(&a, err);
    if (st)
        mera_error_prefix(err, "insn %d (CONV, node '%s'): ", i, c->node.name);
    return st;
}

static mera_status exec_vec(run_ctx *r, int i, int lane, int threads, mera_error *err)
{
    const dna_vec *k = &r->m->prog->insns[i].u.vec;
    const vec_prep *v = r->m->insn_prep[i];
    mera_kernel_args a;
    vec_args(v, &a);
    a.threads = threads > 0 ? threads : v->threads;
    const dna_machine *m = r->m;
    for (int s = 0; s < k->n_src; s++) {
        int64_t src = m->fwd_src ? m->fwd_src[(size_t)i * DNA_MAX_SRC + s] : -1;
        a.in[s] = src >= 0 ? dram_r(r, src) : r->act + k->src[s].addr;
    }
    int64_t dst = m->fwd_dst ? m->fwd_dst[i] : -1;
    a.out[0] = dst >= 0 ? dram_w(r, dst) : r->act + k->dst.addr;
    a.scratch = lane_scratch(r, lane);
    a.scratch_bytes = r->scratch ? r->m->scratch_bytes : 0;
    mera_status st = v->k.run(&a, err);
    if (st)
        mera_error_prefix(err, "insn %d (VEC, node '%s'): ", i, v->node->name);
    return st;
}

static const void *value_read(const run_ctx *r, int v)
{
    int64_t at = r->m->prog->value_dram[v];
    return at >= 0 ? (const void *)dram_r(r, at) : r->m->value_data[v];
}

mera_status dna_machine_run_host_node(const dna_machine *m, int n, const void *const *in, void *const *out,
                                      mera_error *err)
{
    if (n < 0 || n >= m->n_nodes || !m->host_ready[n])
        return mera_fail(err, MERA_ERR_INVALID, "node %d is not a host node this machine prepared", n);
    const mera_node *node = mera_graph_node(m->g, n);
    mera_kernel_args a;
    mera_kernel_node_args(m->g, n, m->value_data, &a);
    for (int i = 0; i < node->n_inputs; i++)
        if (node->inputs[i] >= 0 && in[i])
            a.in[i] = in[i];
    for (int o = 0; o < node->n_outputs; o++)
        a.out[o] = out[o];
    a.state = m->host_state[n];
    a.threads = m->opt.threads;
    mera_status st = m->host_k[n].run(&a, err);
    if (st)
        mera_error_prefix(err, "node '%s' (%s): ", node->name, mera_op_table[node->op].name);
    return st;
}

/* A host node on the run's DRAM. */
static mera_status exec_host(run_ctx *r, int n, mera_error *err)
{
    const dna_machine *m = r->m;
    const mera_node *node = mera_graph_node(m->g, n);
    const void *in[MERA_MAX_NODE_INPUTS];
    void *out[MERA_MAX_NODE_OUTPUTS];
    for (int i = 0; i < node->n_inputs; i++)
        in[i] = node->inputs[i] >= 0 ? value_read(r, node->inputs[i]) : NULL;
    for (int o = 0; o < node->n_outputs; o++)
        out[o] = dram_w(r, m->prog->value_dram[node->outputs[o]]);
    return dna_machine_run_host_node(m, n, in, out, err);
}

/* Zeroed, BUF_ALIGN-aligned, freed with free_buf. calloc, not memset:
 * large blocks come zeroed from the system and only the pages a program
 * touches become resident (the IP target's memory budget). Deterministic:
 * a program reading unwritten bytes gets zeros every run. */
static void *alloc_buf(int64_t bytes)
{
    size_t n = (size_t)(bytes > 0 ? bytes : 1);
    uint8_t *raw = calloc(1, n + BUF_ALIGN + sizeof(void *));
    if (!raw)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + BUF_ALIGN - 1) & ~(uintptr_t)(BUF_ALIGN - 1);
    ((void **)p)[-1] = raw;
    return (void *)p;
}

static void free_buf(void *p)
{
    if (p)
        free(((void **)p)[-1]);
}

dna_run *dna_run_new(const dna_machine *m, uint8_t *act_dram, mera_error *err)
{
    const dna_program *prog = m->prog;
    dna_run *r = calloc(1, sizeof *r);
    if (!r) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    r->m = m;
    int max_oc = 1;
    for (int k = 0; k < m->n_convs; k++)
        if (m->convs[k]->key.oc_n > max_oc)
            max_oc = m->convs[k]->key.oc_n;
    if (act_dram) {
        r->act_dram = act_dram;
    } else {
        r->act_dram = alloc_buf(prog->dram_bytes - dna_act_base(prog));
        r->own_dram = 1;
    }
    r->act = alloc_buf(prog->act_bytes);
    /* WGT's bytes are never read or written when every CONV kernel holds
     * its packed weights (wgt_unread): no buffer, only the tags */
    r->wgt = m->wgt_unread ? NULL : alloc_buf(prog->wgt_bytes);
    r->bias_stride = ((size_t)max_oc + 15) & ~(size_t)15;
    r->bias = alloc_buf((int64_t)(r->bias_stride * 4 * (size_t)m->lanes));
    r->scratch = m->scratch_bytes ? alloc_buf((int64_t)(m->scratch_stride * (size_t)m->lanes)) : NULL;
    r->lane_err = m->lanes > 1 ? calloc((size_t)m->lanes, sizeof *r->lane_err) : NULL;
    if (!r->act_dram || !r->act || (!m->wgt_unread && !r->wgt) || !r->bias || (m->scratch_bytes && !r->scratch) ||
        (m->lanes > 1 && !r->lane_err)) {
        dna_run_free(r);
        mera_fail(err, MERA_ERR_NOMEM, "out of memory allocating the DNA machine's DRAM and buffers");
        return NULL;
    }
    return r;
}

static void prof_print(const double *ns, const int64_t *count)
{
    double total = 0;
    for (int k = 0; k < PROF_N; k++)
        total += ns[k];
    fprintf(stderr, "mera sim profile: %.3f ms", total / 1e6);
    for (int k = 0; k < PROF_N; k++)
        if (count[k])
            fprintf(stderr, ", %s %.3f ms (%lld)", prof_names[k], ns[k] / 1e6, (long long)count[k]);
    fputc('\n', stderr);
}

void dna_run_free(dna_run *r)
{
    if (!r)
        return;
    if (r->m->profile && !r->prof_by_caller)
        prof_print(r->prof_ns, r->prof_count);
    if (r->own_dram)
        free_buf(r->act_dram);
    free_buf(r->act);
    free_buf(r->wgt);
    free_buf(r->bias);
    free_buf(r->scratch);
    free(r->lane_err);
    free(r->tags);
    free(r);
}

uint8_t *dna_run_dram(dna_run *r)
{
    return r->act_dram;
}

/* ---- executing a DNA segment ----------------------------------------------
 *
 * An instruction has a tag part (a LOAD into WGT records what WGT now
 * holds, a CONV checks that WGT holds its weight block) and a byte part
 * (what it reads and writes in ACT, WGT and DRAM). In execution order the
 * two run one instruction after the other. With waves (plan_waves), the
 * tag parts of the whole segment run first, in execution order (they read
 * and write only the tags, which no byte part reads), then the byte parts
 * wave by wave: the instructions of a wave touch no byte another of them
 * writes, and every instruction they depend on ran in an earlier wave, so
 * any order of a wave's instructions, or all of them at once, writes the
 * bytes the execution order writes. */

static mera_status insn_tags(run_ctx *r, int i, mera_error *err)
{
    switch (r->m->prog->insns[i].opcode) {
    case DNA_LOAD: return load_tags(r, i, err);
    case DNA_CONV: return conv_tags(r, i, err);
    default: return MERA_OK;
    }
}

/* The byte part of instruction i on lane `lane` (its scratch), its kernel
 * or rows on threads threads (0: the instruction's own count); its time
 * goes to ns and count (MERA_SIM_PROFILE). */
static mera_status insn_bytes(run_ctx *r, int i, int lane, int threads, double *ns, int64_t *count, mera_error *err)
{
    const dna_machine *m = r->m;
    double t0 = m->profile ? now_ns(m->profile == 2) : 0;
    mera_status st = MERA_OK;
    int kind = -1;
    switch (m->prog->insns[i].opcode) {
    case DNA_LOAD:
    case DNA_STORE:
        if (m->fwd_dead && m->fwd_dead[i]) { /* forwarded: no bytes move */
            kind = m->prog->insns[i].opcode == DNA_LOAD ? PROF_LOAD_FWD : PROF_STORE_FWD;
        } else if (m->prog->insns[i].opcode == DNA_LOAD) {
            load_bytes(r, i, threads > 0 ? threads : m->opt.threads);
            kind = PROF_LOAD;
        } else {
            exec_store(r, i, threads > 0 ? threads : m->opt.threads);
            kind = PROF_STORE;
        }
        break;
    case DNA_CONV: st = exec_conv(r, i, lane, threads, err); kind = PROF_CONV; break;
    case DNA_VEC: st = exec_vec(r, i, lane, threads, err); kind = PROF_VEC; break;
    case DNA_NOP: break;
    default: MERA_BUG("unvalidated opcode");
    }
    if (m->profile && kind >= 0) {
        ns[kind] += now_ns(m->profile == 2) - t0;
        count[kind]++;
    }
    return st;
}

/* The first n instructions of a DNA segment in execution order, each
 * whole (a LOAD moves its bytes, then tags; a CONV checks, then runs). */
static mera_status run_in_order(run_ctx *r, const dna_segment *seg, int n, int64_t *span, mera_error *err)
{
    const dna_machine *m = r->m;
    mera_status st = MERA_OK;
    for (int k = 0; k < n && !st; k++) {
        int i = m->order[seg->first + k];
        if (m->prog->insns[i].opcode == DNA_LOAD) {
            st = insn_bytes(r, i, 0, 0, r->prof_ns, r->prof_count, err);
            st = st ? st : insn_tags(r, i, err);
        } else {
            st = insn_tags(r, i, err);
            st = st ? st : insn_bytes(r, i, 0, 0, r->prof_ns, r->prof_count, err);
        }
        if (m->times.end[i] > *span)
            *span = m->times.end[i];
    }
    return st;
}

/* The byte parts alone of the first n instructions in execution order
 * (their tag parts ran). */
static mera_status run_in_order_bytes(run_ctx *r, const dna_segment *seg, int n, int64_t *span, mera_error *err)
{
    const dna_machine *m = r->m;
    mera_status st = MERA_OK;
    for (int k = 0; k < n && !st; k++) {
        int i = m->order[seg->first + k];
        st = insn_bytes(r, i, 0, 0, r->prof_ns, r->prof_count, err);
        if (m->times.end[i] > *span)
            *span = m->times.end[i];
    }
    return st;
}

/* A wave across the lanes: each lane takes the wave's next instruction
 * until none is left, and runs it on one thread with its own scratch. */
typedef struct {
    run_ctx *r;
    const int *items;
    int n, next;
    int failed_at[MERA_MAX_THREADS]; /* per lane: the position of its failed instruction, else n */
    mera_status st[MERA_MAX_THREADS];
    double ns[MERA_MAX_THREADS][PROF_N];
    int64_t count[MERA_MAX_THREADS][PROF_N];
} lanes_job;

static void run_lane(void *ctx, int64_t lane, int64_t lane_end)
{
    (void)lane_end; /* one lane per range; a pool busy elsewhere gives lane 0 all of them */
    lanes_job *j = ctx;
    for (;;) {
        int q = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (q >= j->n)
            return;
        mera_status st = insn_bytes(j->r, j->items[q], (int)lane, 1, j->ns[lane], j->count[lane], &j->r->lane_err[lane]);
        if (st) {
            j->failed_at[lane] = q;
            j->st[lane] = st;
            return;
        }
    }
}

static mera_status run_waves(run_ctx *r, int s, int64_t *span, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_segment *seg = &m->prog->segments[s];
    for (int k = 0; k < seg->count; k++) {
        int i = m->order[seg->first + k];
        if (m->times.end[i] > *span)
            *span = m->times.end[i];
    }
    /* the tag parts, in execution order */
    for (int k = 0; k < seg->count; k++) {
        int i = m->order[seg->first + k];
        mera_error tag_err;
        mera_status st = insn_tags(r, i, &tag_err);
        if (st) {
            /* as in execution order: what ran before it (a LOAD's bytes too), then its error */
            int64_t unused = 0;
            mera_status first = run_in_order_bytes(r, seg, k + (m->prog->insns[i].opcode == DNA_LOAD), &unused, err);
            if (first)
                return first;
            if (err)
                *err = tag_err;
            return st;
        }
    }
    for (int w = m->seg_wave[s]; w < m->seg_wave[s + 1]; w++) {
        const int *items = m->wave_items + m->wave_start[w];
        int n = m->wave_start[w + 1] - m->wave_start[w];
        if (!m->wave_lanes[w]) {
            for (int q = 0; q < n; q++) {
                mera_status st = insn_bytes(r, items[q], 0, m->insn_threads[items[q]], r->prof_ns, r->prof_count, err);
                if (st)
                    return st;
            }
            continue;
        }
        lanes_job j;
        j.r = r;
        j.items = items;
        j.n = n;
        j.next = 0;
        for (int l = 0; l < m->lanes; l++) {
            j.failed_at[l] = n;
            if (m->profile) {
                memset(j.ns[l], 0, sizeof j.ns[l]);
                memset(j.count[l], 0, sizeof j.count[l]);
            }
        }
        mera_parallel_for(m->lanes, m->lanes, 1, run_lane, &j);
        int bad = -1;
        for (int l = 0; l < m->lanes; l++) {
            if (j.failed_at[l] < n && (bad < 0 || j.failed_at[l] < j.failed_at[bad]))
                bad = l;
            for (int k = 0; m->profile && k < PROF_N; k++) {
                r->prof_ns[k] += j.ns[l][k];
                r->prof_count[k] += j.count[l][k];
            }
        }
        if (bad >= 0) {
            if (err)
                *err = r->lane_err[bad];
            return j.st[bad];
        }
    }
    return MERA_OK;
}

mera_status dna_run_segment(dna_run *r, int s, int64_t *cycles, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_program *prog = m->prog;
    if (cycles)
        *cycles = 0;
    if (s < 0 || s >= prog->n_segments)
        return mera_fail(err, MERA_ERR_INVALID, "segment %d outside the program's %d", s, prog->n_segments);
    const dna_segment *seg = &prog->segments[s];
    if (seg->kind == DNA_SEG_HOST) {
        if (m->opt.dna_only)
            return mera_fail(err, MERA_ERR_INVALID, "segment %d is a host segment; this machine runs DNA segments only",
                             s);
        double t0 = m->profile ? now_ns(m->profile == 2) : 0;
        mera_status hs = exec_host(r, seg->node, err);
        if (m->profile) {
            r->prof_ns[PROF_HOST] += now_ns(m->profile == 2) - t0;
            r->prof_count[PROF_HOST]++;
        }
        return hs;
    }
    int64_t span = 0;
    mera_status st = m->use_waves ? run_waves(r, s, &span, err) : run_in_order(r, seg, seg->count, &span, err);
    if (cycles)
        *cycles = span;
    return st;
}

/* A run of dna_machine_run: the machine's spare one, reset to the state
 * of a new run (the bytes earlier runs wrote zeroed again, no WGT tags), or
 * a new one when the spare is in use by another thread. Reusing the
 * buffers saves allocating, and faulting in, DRAM and buffers every run. */
static dna_run *take_run(const dna_machine *m, mera_error *err)
{
    dna_run *r = __atomic_exchange_n(&((dna_machine *)m)->spare, NULL, __ATOMIC_ACQ_REL);
    if (!r)
        return dna_run_new(m, NULL, err);
    uint8_t *buf[3] = {r->act, r->wgt, r->act_dram};
    for (int b = 0; b < 3; b++)
        if (buf[b] && m->zeroed[b][1] > m->zeroed[b][0])
            memset(buf[b] + m->zeroed[b][0], 0, (size_t)(m->zeroed[b][1] - m->zeroed[b][0]));
    r->n_tags = 0;
    memset(r->prof_ns, 0, sizeof r->prof_ns);
    memset(r->prof_count, 0, sizeof r->prof_count);
    return r;
}

static void give_back_run(const dna_machine *m, dna_run *r)
{
    dna_run *none = NULL;
    if (!__atomic_compare_exchange_n(&((dna_machine *)m)->spare, &none, r, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        dna_run_free(r);
}

mera_status dna_machine_run(const dna_machine *m, const void *const *inputs, void *const *outputs, mera_error *err)
{
    const dna_program *prog = m->prog;
    const mera_graph *g = m->g;
    double t0 = m->profile ? now_ns(m->profile == 2) : 0, setup = 0;
    dna_run *r = take_run(m, err);
    if (!r)
        return err ? err->code : MERA_ERR_NOMEM;
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        int v = mera_graph_input(g, k);
        if (m->input_slot[v] >= 0)
            memcpy(dram_w(r, prog->value_dram[v]), inputs[m->input_slot[v]],
                   mera_type_nbytes(&mera_graph_value(g, v)->type));
    }
    if (m->profile)
        setup = now_ns(m->profile == 2) - t0;
    mera_status st = MERA_OK;
    for (int s = 0; s < prog->n_segments && !st; s++)
        st = dna_run_segment(r, s, NULL, err);
    t0 = m->profile ? now_ns(m->profile == 2) : 0;
    for (int k = 0; k < mera_graph_num_outputs(g) && !st; k++) {
        int v = mera_graph_output(g, k);
        memcpy(outputs[k], value_read(r, v), mera_type_nbytes(&mera_graph_value(g, v)->type));
    }
    double ns[PROF_N];
    int64_t count[PROF_N];
    memcpy(ns, r->prof_ns, sizeof ns);
    memcpy(count, r->prof_count, sizeof count);
    r->prof_by_caller = 1;
    give_back_run(m, r);
    if (m->profile) {
        ns[PROF_SETUP] = setup + now_ns(m->profile == 2) - t0;
        count[PROF_SETUP] = 1;
        prof_print(ns, count);
    }
    return st;
}
