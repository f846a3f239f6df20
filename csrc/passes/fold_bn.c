/* fold_bn: batch norms folded into the conv, transposed conv or dense
 * before them.
 *
 * The frontends lower an inference BatchNorm to a per-channel mul by
 * gamma/sqrt(var+eps) and an add of beta-mean*scale. A chain of such
 * per-channel muls and adds after a conv2d or dense (the chain's values
 * each read by the next node alone, none a graph output, the conv/dense
 * without a fused activation) is folded into the weight and bias:
 *
 *     scale[c] = prod of the muls, shift[c] = the adds (each scaled by the
 *     muls after it), all in double
 *     w'[c,...] = f32(w[c,...] * scale[c])
 *     b'[c]     = f32(b[c] * scale[c] + shift[c])      (b = 0 when absent)
 *
 * which also folds a lone per-channel scale or bias add. "Per-channel": the
 * other operand is a float constant (PARAM or CONST) that broadcasts along
 * the output-channel axis only (or is a scalar), and the result has the
 * conv's output size. The folded weight keeps the original's name and kind
 * (PARAM or CONST) unless another node reads the original too; a bias the
 * folding creates is a PARAM "<node>.bias". Both own their data (the new
 * graph's arena).
 *
 * Only float graphs are folded: a graph with any quantized value or any
 * quantize/dequantize/requantize node comes out unchanged. The quantizer's
 * prepare step is this pass (quant/quantize.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

typedef struct {
    const mera_graph *g;
    int *uses, *user; /* per value: number of readers (graph outputs count), the last reading node */
    char *is_out;
} uses_t;

static int uses_build(uses_t *u, const mera_graph *g, mera_error *err)
{
    int nv = mera_graph_num_values(g);
    size_t n = (size_t)(nv > 0 ? nv : 1);
    u->g = g;
    u->uses = calloc(n, sizeof *u->uses);
    u->user = malloc(n * sizeof *u->user);
    u->is_out = calloc(n, 1);
    if (!u->uses || !u->user || !u->is_out) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    for (int v = 0; v < nv; v++)
        u->user[v] = -1;
    for (int k = 0; k < mera_graph_num_nodes(g); k++) {
        const mera_node *node = mera_graph_node(g, k);
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0) {
                u->uses[node->inputs[i]]++;
                u->user[node->inputs[i]] = k;
            }
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++) {
        u->uses[mera_graph_output(g, i)]++;
        u->is_out[mera_graph_output(g, i)] = 1;
    }
    return 0;
}

static void uses_free(uses_t *u)
{
    free(u->uses);
    free(u->user);
    free(u->is_out);
}

/* The one node that reads v, or -1 (several readers, or a graph output). */
static int sole_user(const uses_t *u, int v)
{
    return u->uses[v] == 1 && !u->is_out[v] ? u->user[v] : -1;
}

static int is_quantized_graph(const mera_graph *g)
{
    for (int v = 0; v < mera_graph_num_values(g); v++)
        if (mera_graph_value(g, v)->type.q.kind != MERA_QUANT_NONE)
            return 1;
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        int op = mera_graph_node(g, n)->op;
        if (op == MERA_OP_QUANTIZE || op == MERA_OP_DEQUANTIZE || op == MERA_OP_REQUANTIZE)
            return 1;
    }
    return 0;
}

/* Float constant data of value v (a PARAM or CONST of a bound graph), or NULL. */
static const float *float_data(const mera_graph *g, int v)
{
    if (v < 0)
        return NULL;
    const mera_value *val = mera_graph_value(g, v);
    if ((val->kind != MERA_VALUE_PARAM && val->kind != MERA_VALUE_CONST) || val->type.dtype != MERA_DTYPE_FLOAT32)
        return NULL;
    return val->data;
}

/* The axis of a conv/dense output that holds its channels. */
static int out_channel_axis(const mera_graph *g, const mera_node *node)
{
    if (node->op == MERA_OP_CONV2D || node->op == MERA_OP_CONV_TRANSPOSE2D)
        return strcmp(mera_attr_string(node, "layout"), "NHWC") ? 1 : 3;
    return mera_graph_value(g, node->outputs[0])->type.rank - 1;
}

/* The axis of a conv/dense weight that indexes output channels. */
static int weight_out_axis(const mera_node *node)
{
    if (node->op == MERA_OP_CONV2D && !strcmp(mera_attr_string(node, "kernel_layout"), "HWIO"))
        return 3;
    return 0;
}

/* The output channel weight element i (flat index) belongs to. conv2d and
 * dense: the weight's output axis; conv_transpose2d's weight is [C_in,
 * C_out/groups, KH, KW], so group (ci / (C_in/groups)), column j. */
static int64_t weight_channel(const mera_node *node, const mera_type *wt, int64_t i, int64_t c)
{
    if (node->op == MERA_OP_CONV_TRANSPOSE2D) {
        int64_t groups = mera_attr_int(node, "groups"), cout_g = wt->shape[1];
        int64_t khw = wt->shape[2] * wt->shape[3];
        int64_t ci = i / (cout_g * khw), j = (i / khw) % cout_g;
        return (ci / (wt->shape[0] / groups)) * cout_g + j;
    }
    int64_t inner = 1;
    for (int k = weight_out_axis(node) + 1; k < wt->rank; k++)
        inner *= wt->shape[k];
    return (i / inner) % c;
}

/* If the constant (type ct, data d) broadcasts against out_t varying only
 * along axis, write its per-channel values to vec (out_t->shape[axis]
 * entries) and return 1. */
static int per_channel_values(const mera_type *out_t, int axis, const mera_type *ct, const float *d, double *vec)
{
    if (ct->rank > out_t->rank || !d)
        return 0;
    int64_t c = out_t->shape[axis];
    int varies = 0;
    for (int i = 0; i < ct->rank; i++) {
        int j = out_t->rank - ct->rank + i;
        if (ct->shape[i] == 1)
            continue;
        if (j != axis || ct->shape[i] != c)
            return 0;
        varies = 1;
    }
    for (int64_t k = 0; k < c; k++)
        vec[k] = d[varies ? k : 0];
    return 1;
}

/* What folding does to one conv/dense: the chain's last value and the new
 * weight and bias data. */
typedef struct {
    int last;    /* -1: nothing folds */
    float *w, *b;
} fold_plan;

/* Plan the fold of the chain of per-channel mul/add after conv/dense node
 * n (marking the chain's nodes in skip). 0 or -1 (out of memory). */
static int plan_chain(const mera_graph *g, const uses_t *u, int n, char *skip, fold_plan *p, mera_error *err)
{
    const mera_node *node = mera_graph_node(g, n);
    int wv = node->inputs[1], bv = node->n_inputs > 2 ? node->inputs[2] : -1;
    const float *ow = float_data(g, wv), *ob = float_data(g, bv);
    p->last = -1;
    if (!ow || (bv >= 0 && !ob) || mera_graph_value(g, node->inputs[0])->type.dtype != MERA_DTYPE_FLOAT32 ||
        (node->op != MERA_OP_CONV_TRANSPOSE2D && strcmp(mera_attr_string(node, "activation"), "none")))
        return 0;
    const mera_type *out_t = &mera_graph_value(g, node->outputs[0])->type;
    int caxis = out_channel_axis(g, node);
    int64_t c = out_t->shape[caxis];
    double *scale = malloc((size_t)c * sizeof *scale), *shift = calloc((size_t)c, sizeof *shift),
           *vec = malloc((size_t)c * sizeof *vec);
    int rc = -1, cur = node->outputs[0];
    if (!scale || !shift || !vec)
        goto nomem;
    for (int64_t k = 0; k < c; k++)
        scale[k] = 1.0;
    for (;;) {
        int m = sole_user(u, cur);
        if (m < 0)
            break;
        const mera_node *mn = mera_graph_node(g, m);
        if ((mn->op != MERA_OP_MUL && mn->op != MERA_OP_ADD) || strcmp(mera_attr_string(mn, "activation"), "none"))
            break;
        int other = mn->inputs[0] == cur ? mn->inputs[1] : mn->inputs[0];
        if (other == cur || !float_data(g, other) ||
            !per_channel_values(out_t, caxis, &mera_graph_value(g, other)->type, float_data(g, other), vec) ||
            mera_type_numel(&mera_graph_value(g, mn->outputs[0])->type) != mera_type_numel(out_t))
            break;
        for (int64_t k = 0; k < c; k++) {
            if (mn->op == MERA_OP_MUL)
                scale[k] *= vec[k], shift[k] *= vec[k];
            else
                shift[k] += vec[k];
        }
        skip[m] = 1;
        cur = mn->outputs[0];
    }
    rc = 0;
    if (cur == node->outputs[0])
        goto out;
    const mera_type *wt = &mera_graph_value(g, wv)->type;
    int64_t wn = mera_type_numel(wt);
    p->w = malloc((size_t)(wn > 0 ? wn : 1) * sizeof *p->w);
    p->b = malloc((size_t)c * sizeof *p->b);
    if (!p->w || !p->b)
        goto nomem;
    for (int64_t i = 0; i < wn; i++)
        p->w[i] = (float)((double)ow[i] * scale[weight_channel(node, wt, i, c)]);
    for (int64_t k = 0; k < c; k++)
        p->b[k] = (float)((ob ? (double)ob[k] : 0.0) * scale[k] + shift[k]);
    p->last = cur;
    goto out;
nomem:
    mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    rc = -1;
out:
    free(scale), free(shift), free(vec);
    return rc;
}

/* Declare folded data for the conv's weight or bias orig (-1: a bias the
 * folding creates, named fresh). Folded in place (same name and kind, in
 * the original's declaration slot) when the conv alone reads the original;
 * else a new value with a fresh name. Data copied into dst. */
static int add_folded(mera_rewriter *rw, const uses_t *u, int orig, const char *fresh, const mera_type *t,
                      const void *d)
{
    char base[512];
    const char *name;
    if (orig >= 0) {
        const mera_value *sv = mera_graph_value(rw->src, orig);
        if (u->uses[orig] == 1 && !u->is_out[orig]) {
            if (sv->kind == MERA_VALUE_PARAM)
                return mera_graph_add_param_data(rw->dst, sv->name, t, d, rw->err);
            return mera_graph_add_const(rw->dst, sv->name, t, d, 1, rw->err);
        }
        snprintf(base, sizeof base, "%.400s.bn_folded", sv->name);
        if (!(name = mera_rewriter_fresh_name(rw, base)))
            return -1;
        if (sv->kind == MERA_VALUE_PARAM)
            return mera_graph_add_param_data(rw->dst, name, t, d, rw->err);
        return mera_graph_add_const(rw->dst, name, t, d, 1, rw->err);
    }
    if (!(name = mera_rewriter_fresh_name(rw, fresh)))
        return -1;
    return mera_graph_add_param_data(rw->dst, name, t, d, rw->err);
}

static int folded_in_place(const mera_graph *g, const uses_t *u, int v)
{
    return v >= 0 && u->uses[v] == 1 && !u->is_out[v] && mera_graph_value(g, v)->kind == MERA_VALUE_PARAM;
}

/* Add conv/dense node n of the plan p to dst. 0 or -1. */
static int emit_folded(mera_rewriter *rw, const uses_t *u, int n, const fold_plan *p)
{
    const mera_graph *g = rw->src;
    const mera_node *node = mera_graph_node(g, n);
    int wv = node->inputs[1], bv = node->n_inputs > 2 ? node->inputs[2] : -1;
    const mera_type *wt = &mera_graph_value(g, wv)->type;
    mera_type bt = {0};
    bt.dtype = MERA_DTYPE_FLOAT32;
    bt.rank = 1;
    bt.shape[0] = mera_graph_value(g, node->outputs[0])->type.shape[out_channel_axis(g, node)];
    bt.layout = MERA_LAYOUT_ANY;
    char fresh[512];
    snprintf(fresh, sizeof fresh, "%.400s.bias", node->name);
    /* the data input first, then the weight and bias: the order values are
     * declared in (params folded in place are declared already) */
    int ins[3] = {mera_rewriter_value(rw, node->inputs[0]), -1, -1}, out_id;
    if (ins[0] < 0)
        return -1;
    ins[1] = folded_in_place(g, u, wv) ? rw->map[wv] : add_folded(rw, u, wv, "weight", wt, p->w);
    if (ins[1] < 0)
        return -1;
    ins[2] = folded_in_place(g, u, bv) ? rw->map[bv] : add_folded(rw, u, bv, fresh, &bt, p->b);
    if (ins[2] < 0)
        return -1;
    if (mera_graph_add_node(rw->dst, node->op, node->name, ins, 3, node->attrs, node->n_attrs, node->source, &out_id,
                            1, rw->err) < 0)
        return -1;
    rw->map[p->last] = out_id;
    return 0;
}

mera_graph *mera_pass_fold_bn(const mera_graph *g, mera_error *err)
{
    int nn = mera_graph_num_nodes(g), nv = mera_graph_num_values(g), quantized = is_quantized_graph(g);
    uses_t u = {0};
    char *skip = calloc((size_t)nn + 1, 1);
    fold_plan *plan = calloc((size_t)nn + 1, sizeof *plan);
    int *folds = malloc((size_t)(nv > 0 ? nv : 1) * sizeof *folds); /* src PARAM -> node whose fold replaces it */
    mera_rewriter rw = {0};
    mera_graph *out = NULL;
    if (!skip || !plan || !folds) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (uses_build(&u, g, err))
        goto done;
    for (int v = 0; v < nv; v++)
        folds[v] = -1;
    for (int n = 0; n < nn; n++) {
        plan[n].last = -1;
        int op = mera_graph_node(g, n)->op;
        if (quantized || skip[n] || (op != MERA_OP_CONV2D && op != MERA_OP_DENSE && op != MERA_OP_CONV_TRANSPOSE2D))
            continue;
        if (plan_chain(g, &u, n, skip, &plan[n], err))
            goto done;
        const mera_node *node = mera_graph_node(g, n);
        if (plan[n].last >= 0)
            for (int i = 1; i < node->n_inputs; i++)
                if (folded_in_place(g, &u, node->inputs[i]))
                    folds[node->inputs[i]] = n;
    }
    if (mera_rewriter_init(&rw, g, err))
        goto done;
    /* params in the source's order, a param folded in place in its slot */
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i), n = folds[v];
        const mera_value *sv = mera_graph_value(g, v);
        if (sv->kind != MERA_VALUE_PARAM)
            continue;
        if (n < 0 ? mera_rewriter_value(&rw, v) < 0
                  : (rw.map[v] = mera_graph_add_param_data(rw.dst, sv->name, &sv->type,
                                                           v == mera_graph_node(g, n)->inputs[1] ? plan[n].w : plan[n].b,
                                                           err)) < 0)
            goto fail;
    }
    for (int n = 0; n < nn; n++) {
        if (skip[n])
            continue;
        if (plan[n].last >= 0 ? emit_folded(&rw, &u, n, &plan[n]) < 0 : mera_rewriter_copy_node(&rw, n) < 0)
            goto fail;
    }
    out = mera_rewriter_finish(&rw);
    goto done;
fail:
    mera_rewriter_abort(&rw);
done:
    for (int n = 0; plan && n < nn; n++)
        free(plan[n].w), free(plan[n].b);
    free(plan);
    free(folds);
    free(skip);
    uses_free(&u);
    return out;
}
