/* layout: NCHW spatial ops converted to NHWC, the layout the DNA computes
 * on, with transposes only where the NCHW element order is needed.
 *
 * One forward sweep in topological order. A value of the input graph is
 * held in the output graph in its own form (rw.map: same type, same
 * bytes), in NHWC form (nhwc[]: the same tensor transposed by [0,2,3,1],
 * tagged NHWC, or a permuted copy of a constant), or both; each form is
 * made once, when a consumer first needs it.
 *
 * - A spatial op (conv2d, pools, upsample) with layout NCHW becomes the
 *   same op with layout NHWC on the NHWC form of its data; weights are
 *   untouched (kernel_layout is separate). Its output exists in NHWC form
 *   only ("converted").
 * - An op that does not care about the layout follows its data: when one
 *   of its inputs is converted, it runs on NHWC forms with its axes
 *   remapped (elementwise ops with their broadcast constants permuted,
 *   concat, mean, softmax, slice, pad, quantize/dequantize/requantize),
 *   and so does its output. flatten/reshape of a [N,C,H,W] tensor with C == 1 or
 *   H*W == 1, whose element order is the same in both layouts, and
 *   transpose (its permutation composed) read the NHWC form directly.
 * - A transpose [0,3,1,2] of NHWC data (an NHWC input brought to an NCHW
 *   model) is converted too: its input is its NHWC form, and the node is
 *   copied only if its NCHW output is needed.
 * - Everything else reads the input graph's form, made by a transpose back
 *   where the value is converted; so do the graph's outputs. Every value
 *   keeps its type there (a reshape after the transpose back restores an
 *   "any" tag), so copied nodes infer what they did.
 * - A graph with no NCHW spatial op is copied as it is.
 *
 * torch_memory_format "auto" means "the data layout decides" (see ops.c),
 * so a converted op gets the value auto had before, "contiguous"; explicit
 * values are kept: they describe PyTorch's math, not our layout. With that
 * the converted ops compute, element for element, what the NCHW ones did:
 * int8 graphs give identical bytes. (Softmax too: its kernel brings NHWC
 * data to NCHW order and decides "last axis" there, as PyTorch does.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

/* NCHW axis -> its position in NHWC data */
static const int nhwc_pos[4] = {0, 3, 1, 2};
static const int64_t to_nhwc[4] = {0, 2, 3, 1}, to_nchw[4] = {0, 3, 1, 2};

typedef struct {
    mera_rewriter rw; /* rw.map: the input graph's form of each value */
    const mera_graph *g;
    int *conv;        /* 1: a node output held in NHWC form only */
    int *nhwc;        /* dst id of the NHWC form, or -1 */
    int *deferred;    /* a converted value's node, copied when its own form is needed (or -1) */
} layout_ctx;

static int is_act(const mera_value *v)
{
    return v->kind == MERA_VALUE_INPUT || v->kind == MERA_VALUE_NODE;
}

/* t of an NCHW tensor, as its NHWC form is typed. */
static mera_type nhwc_type(const mera_type *t)
{
    mera_type o = *t;
    for (int i = 0; i < 4; i++)
        o.shape[nhwc_pos[i]] = t->shape[i];
    o.layout = MERA_LAYOUT_NHWC;
    if (t->q.kind == MERA_QUANT_PER_AXIS)
        o.q.axis = nhwc_pos[t->q.axis];
    return o;
}

static int add_transpose(layout_ctx *L, int dst_in, const int64_t *perm, const char *base, const char *source)
{
    mera_attr a = {.key = "axes", .kind = MERA_ATTR_INTS, .count = 4, .ints = perm};
    return mera_rewriter_add(&L->rw, MERA_OP_TRANSPOSE, base, &dst_in, 1, &a, 1, source);
}

/* "<name><suffix>", or "<name><suffix>_<k>": a name neither graph has, so
 * that copying a later node of the input graph cannot collide with it
 * (arena-owned by the output graph; NULL when out of memory, reported). */
static const char *fresh_name(layout_ctx *L, const char *name, const char *suffix)
{
    char s[512];
    snprintf(s, sizeof s, "%.400s%s", name, suffix);
    for (int k = 1; mera_graph_find_value(L->g, s) >= 0 || mera_graph_find_value(L->rw.dst, s) >= 0; k++)
        snprintf(s, sizeof s, "%.400s%s_%d", name, suffix, k);
    const char *nm = mera_graph_unique_name(L->rw.dst, s);
    if (!nm)
        mera_fail(L->rw.err, MERA_ERR_NOMEM, "out of memory");
    return nm;
}

/* The input graph's form of v. */
static int form_src(layout_ctx *L, int v, const char *source)
{
    if (v < 0 || !L->conv[v])
        return mera_rewriter_value(&L->rw, v);
    if (L->rw.map[v] >= 0)
        return L->rw.map[v];
    if (L->deferred[v] >= 0)
        return mera_rewriter_copy_node(&L->rw, L->deferred[v]) < 0 ? -1 : L->rw.map[v];
    const mera_value *sv = mera_graph_value(L->g, v);
    const char *nm = fresh_name(L, sv->name, ".nchw");
    int id = nm ? add_transpose(L, L->nhwc[v], to_nchw, nm, source) : -1;
    const mera_type *t = id >= 0 ? &mera_graph_value(L->rw.dst, id)->type : NULL;
    if (t && t->layout != sv->type.layout) {
        /* the transpose tags its output NCHW; a reshape (a copy) keeps the
         * input graph's tag, which the layout-agnostic kernels read */
        mera_attr a = {.key = "shape", .kind = MERA_ATTR_INTS, .count = sv->type.rank, .ints = sv->type.shape};
        nm = fresh_name(L, sv->name, ".nchw");
        id = nm ? mera_rewriter_add(&L->rw, MERA_OP_RESHAPE, nm, &id, 1, &a, 1, source) : -1;
    }
    if (id < 0)
        return -1;
    MERA_ASSERT(mera_type_equal(&mera_graph_value(L->rw.dst, id)->type, &sv->type));
    return L->rw.map[v] = id;
}

/* A constant's (or param's) data permuted to NHWC, its shape first padded
 * to rank 4 with leading ones (as broadcasting aligns it), tagged NHWC; a
 * new value of the same kind that owns its data. */
static int const_nhwc(layout_ctx *L, int v)
{
    const mera_value *sv = mera_graph_value(L->g, v);
    const mera_type *t = &sv->type;
    mera_type t4 = *t;
    int pad = 4 - t->rank;
    t4.rank = 4;
    for (int i = 0; i < 4; i++)
        t4.shape[i] = i < pad ? 1 : t->shape[i - pad];
    if (t->q.kind == MERA_QUANT_PER_AXIS)
        t4.q.axis = t->q.axis + pad;
    mera_type o = nhwc_type(&t4);
    size_t es = mera_dtype_size(t->dtype);
    int64_t n = mera_type_numel(t);
    const char *srcd = sv->data;
    MERA_ASSERT(srcd);
    char *d = malloc((size_t)(n > 0 ? n : 1) * es);
    const char *nm = fresh_name(L, sv->name, ".nhwc");
    if (!d || !nm) {
        free(d);
        if (nm)
            mera_fail(L->rw.err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    const int64_t *s = t4.shape; /* N, C, H, W */
    int64_t i = 0;
    for (int64_t a = 0; a < s[0]; a++)
        for (int64_t c = 0; c < s[1]; c++)
            for (int64_t h = 0; h < s[2]; h++)
                for (int64_t w = 0; w < s[3]; w++, i++)
                    memcpy(d + (size_t)(((a * s[2] + h) * s[3] + w) * s[1] + c) * es, srcd + (size_t)i * es, es);
    int id = sv->kind == MERA_VALUE_PARAM ? mera_graph_add_param_data(L->rw.dst, nm, &o, d, L->rw.err)
                                          : mera_graph_add_const(L->rw.dst, nm, &o, d, 1, L->rw.err);
    free(d);
    return id;
}

/* The NHWC form of v (a rank-4 tensor). */
static int form_nhwc(layout_ctx *L, int v, const char *source)
{
    if (L->nhwc[v] >= 0)
        return L->nhwc[v];
    const mera_value *sv = mera_graph_value(L->g, v);
    int id;
    if (!is_act(sv)) {
        id = const_nhwc(L, v);
    } else {
        int s = form_src(L, v, source);
        const char *nm = s < 0 ? NULL : fresh_name(L, sv->name, ".nhwc");
        id = nm ? add_transpose(L, s, to_nhwc, nm, source) : -1;
    }
    return id < 0 ? -1 : (L->nhwc[v] = id);
}

/* Can v's NHWC form feed a layout-agnostic op (be tagged NHWC, as the
 * kernels of those ops read the tag)? */
static int agnostic_input_ok(const layout_ctx *L, int v)
{
    const mera_value *sv = mera_graph_value(L->g, v);
    const mera_type *t = &sv->type;
    if (t->layout == MERA_LAYOUT_NHWC)
        return 0;
    if (is_act(sv))
        return t->rank == 4 && (L->conv[v] || t->layout == MERA_LAYOUT_NCHW);
    return t->rank <= 4 && sv->data != NULL;
}

static int64_t norm_axis(int64_t a, int rank)
{
    return a < 0 ? a + rank : a;
}

/* The attributes of node with layout -> NHWC, torch_memory_format auto ->
 * contiguous, and axis attributes remapped (ints: storage for them). */
static int nhwc_attrs(const mera_node *node, mera_attr *out, int64_t ints[][16])
{
    int k = 0;
    for (int i = 0; i < node->n_attrs; i++) {
        mera_attr a = node->attrs[i];
        if (strcmp(a.key, "layout") == 0 && a.kind == MERA_ATTR_STRING) {
            a.s = "NHWC";
        } else if (strcmp(a.key, "torch_memory_format") == 0 && strcmp(a.s, "auto") == 0) {
            a.s = "contiguous";
        } else if (strcmp(a.key, "axis") == 0) {
            a.i = nhwc_pos[norm_axis(a.i, 4)];
        } else if (strcmp(a.key, "axes") == 0 && node->op == MERA_OP_MEAN) {
            for (int j = 0; j < a.count; j++)
                ints[k][j] = nhwc_pos[norm_axis(a.ints[j], 4)];
            a.ints = ints[k];
        } else if (strcmp(a.key, "pads") == 0) {
            for (int j = 0; j < 4; j++) {
                ints[k][nhwc_pos[j]] = a.ints[j];
                ints[k][4 + nhwc_pos[j]] = a.ints[4 + j];
            }
            a.ints = ints[k];
        }
        out[k++] = a;
    }
    return k;
}

/* Add node n on the given dst inputs with NHWC attributes; its output is
 * converted (or, keep_src, in the input graph's form). -1 on error. */
static int add_converted(layout_ctx *L, int n, const int *ins, int keep_src)
{
    const mera_node *node = mera_graph_node(L->g, n);
    mera_attr attrs[32];
    int64_t ints[32][16];
    MERA_ASSERT(node->n_attrs <= 32);
    int na = nhwc_attrs(node, attrs, ints);
    int outs[MERA_MAX_NODE_OUTPUTS];
    if (mera_graph_add_node(L->rw.dst, node->op, node->name, ins, node->n_inputs, attrs, na, node->source, outs,
                            MERA_MAX_NODE_OUTPUTS, L->rw.err) < 0)
        return -1;
    int v = node->outputs[0];
    const mera_type *st = &mera_graph_value(L->g, v)->type, *dt = &mera_graph_value(L->rw.dst, outs[0])->type;
    if (keep_src) {
        MERA_ASSERT(mera_type_equal(dt, st));
        L->rw.map[v] = outs[0];
    } else {
        mera_type want = nhwc_type(st);
        MERA_ASSERT(mera_type_equal(dt, &want));
        L->conv[v] = 1;
        L->nhwc[v] = outs[0];
    }
    return 0;
}

/* 1: converted, 0: not convertible here (the caller copies it), -1: error. */
static int convert_agnostic(layout_ctx *L, int n)
{
    const mera_node *node = mera_graph_node(L->g, n);
    const mera_graph *g = L->g;
    if (node->n_outputs != 1)
        return 0;
    const mera_type *ot = &mera_graph_value(g, node->outputs[0])->type;
    int x = node->inputs[0];
    const mera_type *xt = &mera_graph_value(g, x)->type;
    int ins[MERA_MAX_NODE_INPUTS];
    switch (node->op) {
    case MERA_OP_FLATTEN:
    case MERA_OP_RESHAPE: {
        /* [N,C,H,W] and [N,H,W,C] hold their elements in one order when
         * C == 1 or H*W == 1; flatten must merge C, H and W to give one shape */
        if (!L->conv[x] || !(xt->shape[1] == 1 || xt->shape[2] * xt->shape[3] == 1))
            return 0;
        if (node->op == MERA_OP_FLATTEN &&
            (norm_axis(mera_attr_int(node, "start_axis"), 4) > 1 || norm_axis(mera_attr_int(node, "end_axis"), 4) != 3))
            return 0;
        ins[0] = L->nhwc[x];
        return add_converted(L, n, ins, 1) < 0 ? -1 : 1;
    }
    case MERA_OP_TRANSPOSE: {
        if (!L->conv[x])
            return 0;
        const mera_attr *ax = mera_node_attr(node, "axes");
        int64_t p[4];
        int ident = 1;
        for (int i = 0; i < 4; i++) {
            p[i] = nhwc_pos[norm_axis(ax->ints[i], 4)];
            ident &= p[i] == i;
        }
        const mera_type *nt = &mera_graph_value(L->rw.dst, L->nhwc[x])->type;
        if (ident && mera_type_equal(nt, ot)) {
            L->rw.map[node->outputs[0]] = L->nhwc[x];
            return 1;
        }
        /* what the transpose of the NHWC form is tagged (ops.c) */
        mera_layout tag = nt->layout == MERA_LAYOUT_NHWC && p[1] == 3 && p[2] == 1 && p[3] == 2 ? MERA_LAYOUT_NCHW
                                                                                                 : MERA_LAYOUT_ANY;
        if (tag != ot->layout)
            return 0;
        mera_attr a = {.key = "axes", .kind = MERA_ATTR_INTS, .count = 4, .ints = p};
        int outs[MERA_MAX_NODE_OUTPUTS];
        if (mera_graph_add_node(L->rw.dst, node->op, node->name, &L->nhwc[x], 1, &a, 1, node->source, outs,
                                MERA_MAX_NODE_OUTPUTS, L->rw.err) < 0)
            return -1;
        MERA_ASSERT(mera_type_equal(&mera_graph_value(L->rw.dst, outs[0])->type, ot));
        L->rw.map[node->outputs[0]] = outs[0];
        return 1;
    }
    case MERA_OP_ADD:
    case MERA_OP_MUL:
    case MERA_OP_RELU:
    case MERA_OP_CLIP:
    case MERA_OP_LEAKY_RELU:
    case MERA_OP_HARDSWISH:
    case MERA_OP_HARDSIGMOID:
    case MERA_OP_SIGMOID:
    case MERA_OP_GELU:
    case MERA_OP_CONCAT:
    case MERA_OP_MEAN:
    case MERA_OP_SOFTMAX:
    case MERA_OP_SLICE:
    case MERA_OP_PAD:
    case MERA_OP_QUANTIZE:
    case MERA_OP_DEQUANTIZE:
    case MERA_OP_REQUANTIZE:
        break;
    default:
        return 0;
    }
    int keep_src = 0;
    if (node->op == MERA_OP_MEAN && !mera_attr_int(node, "keepdims")) {
        /* the kept axes come out in one order unless C is kept beside H or W */
        int red[4] = {0};
        const mera_attr *ax = mera_node_attr(node, "axes");
        for (int i = 0; i < ax->count; i++)
            red[norm_axis(ax->ints[i], 4)] = 1;
        if (!red[1] && !(red[2] && red[3]))
            return 0;
        keep_src = 1;
    } else if (ot->rank != 4 || ot->layout == MERA_LAYOUT_NHWC) {
        return 0;
    }
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        if (v < 0 || !agnostic_input_ok(L, v))
            return 0;
        const mera_value *sv = mera_graph_value(g, v);
        if (!is_act(sv) && node->op != MERA_OP_ADD && node->op != MERA_OP_MUL && node->op != MERA_OP_CONCAT)
            return 0;
        if (!is_act(sv) && node->op == MERA_OP_CONCAT && sv->type.rank != 4)
            return 0;
    }
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        const mera_value *sv = mera_graph_value(g, v);
        /* a one-element constant of lower rank broadcasts alike in both layouts */
        if (!is_act(sv) && sv->type.rank < 4 && mera_type_numel(&sv->type) == 1)
            ins[i] = mera_rewriter_value(&L->rw, v);
        else
            ins[i] = form_nhwc(L, v, node->source);
        if (ins[i] < 0)
            return -1;
    }
    return add_converted(L, n, ins, keep_src) < 0 ? -1 : 1;
}

static int convert_spatial(layout_ctx *L, int n)
{
    const mera_node *node = mera_graph_node(L->g, n);
    int ins[MERA_MAX_NODE_INPUTS];
    for (int i = 0; i < node->n_inputs; i++)
        if ((ins[i] = i == 0 ? form_nhwc(L, node->inputs[0], node->source)
                             : form_src(L, node->inputs[i], node->source)) < 0 &&
            node->inputs[i] >= 0)
            return -1;
    return add_converted(L, n, ins, 0);
}

static int is_nchw_spatial(const mera_graph *g, const mera_node *node)
{
    if (!(mera_op_table[node->op].flags & MERA_OPF_SPATIAL) || node->n_outputs != 1)
        return 0;
    const char *l = mera_attr_string(node, "layout");
    return l && strcmp(l, "NCHW") == 0 && mera_graph_value(g, node->inputs[0])->type.rank == 4;
}

/* A transpose of NHWC data to NCHW (an NHWC input brought to an NCHW
 * model): its input is the NHWC form of its output. */
static int is_to_nchw(const mera_graph *g, const mera_node *node)
{
    if (node->op != MERA_OP_TRANSPOSE || mera_graph_value(g, node->inputs[0])->type.layout != MERA_LAYOUT_NHWC)
        return 0;
    const mera_attr *ax = mera_node_attr(node, "axes");
    for (int i = 0; i < 4; i++)
        if (ax->count != 4 || norm_axis(ax->ints[i], 4) != to_nchw[i])
            return 0;
    return 1;
}

/* The NHWC form of a transpose to NCHW is its input: the node is copied
 * only if something needs its output in NCHW form (form_src). */
static int defer_to_nchw(layout_ctx *L, int n)
{
    const mera_node *node = mera_graph_node(L->g, n);
    int v = node->outputs[0], id = form_src(L, node->inputs[0], node->source);
    if (id < 0)
        return -1;
    mera_type want = nhwc_type(&mera_graph_value(L->g, v)->type);
    MERA_ASSERT(mera_type_equal(&mera_graph_value(L->rw.dst, id)->type, &want));
    L->conv[v] = 1;
    L->nhwc[v] = id;
    L->deferred[v] = n;
    return 0;
}

mera_graph *mera_pass_layout_nhwc(const mera_graph *g, mera_error *err)
{
    int nv = mera_graph_num_values(g);
    layout_ctx L = {.g = g};
    if (mera_rewriter_init(&L.rw, g, err))
        return NULL;
    L.conv = calloc((size_t)(nv > 0 ? nv : 1), sizeof *L.conv);
    L.nhwc = malloc((size_t)(nv > 0 ? nv : 1) * sizeof *L.nhwc);
    L.deferred = malloc((size_t)(nv > 0 ? nv : 1) * sizeof *L.deferred);
    if (!L.conv || !L.nhwc || !L.deferred) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int v = 0; v < nv; v++)
        L.nhwc[v] = L.deferred[v] = -1;
    /* with nothing NCHW to convert, every node is copied as it is */
    int any_nchw = 0;
    for (int n = 0; n < mera_graph_num_nodes(g); n++)
        any_nchw |= is_nchw_spatial(g, mera_graph_node(g, n));
    /* params keep their declaration order (dce.c drops the ones only a
     * permuted constant replaced) */
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i);
        if (mera_graph_value(g, v)->kind == MERA_VALUE_PARAM && mera_rewriter_value(&L.rw, v) < 0)
            goto fail;
    }
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *node = mera_graph_node(g, n);
        int r = 0;
        if (is_nchw_spatial(g, node)) {
            if (convert_spatial(&L, n) < 0)
                goto fail;
            continue;
        }
        if (any_nchw && is_to_nchw(g, node)) {
            if (defer_to_nchw(&L, n) < 0)
                goto fail;
            continue;
        }
        int any_conv = 0;
        for (int i = 0; i < node->n_inputs; i++)
            any_conv |= node->inputs[i] >= 0 && L.conv[node->inputs[i]];
        if (any_conv && (r = convert_agnostic(&L, n)) < 0)
            goto fail;
        if (r)
            continue;
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0 && form_src(&L, node->inputs[i], node->source) < 0)
                goto fail;
        if (mera_rewriter_copy_node(&L.rw, n) < 0)
            goto fail;
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++) {
        int v = mera_graph_output(g, i);
        const mera_value *sv = mera_graph_value(g, v);
        if (form_src(&L, v, sv->producer >= 0 ? mera_graph_node(g, sv->producer)->source : NULL) < 0)
            goto fail;
    }
    free(L.conv);
    free(L.nhwc);
    free(L.deferred);
    return mera_rewriter_finish(&L.rw);
fail:
    free(L.conv);
    free(L.nhwc);
    free(L.deferred);
    mera_rewriter_abort(&L.rw);
    return NULL;
}
