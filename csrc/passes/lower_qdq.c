/* lower_qdq: the QDQ form (float ops between dequantize and quantize nodes,
 * as ONNX QDQ models and torch.export PT2E programs write them) lowered to
 * the quantized ops of the IR, which compute the integer contract of
 * docs/numerics.md. The frontends translate QuantizeLinear /
 * DequantizeLinear (quantize_per_tensor / dequantize_per_*) one to one and
 * leave the rewriting to this pass.
 *
 * Terms. A *quantized view* of a float value v is a per-tensor quantized
 * run-time value q with dequantize(q) == v exactly: the input of a
 * dequantize node, and the quantized result of a byte op moved before its
 * dequantize (rule 2). A *quantized constant* is an int8/uint8 PARAM or
 * CONST behind a dequantize node.
 *
 * 1. A chain   op -> [relu | clip] -> quantize, in which the op's output
 *    and the relu/clip's are read by the next node alone, becomes the op's
 *    quantized form with the quantize node's output parameters, when every
 *    run-time input of the op has a quantized view and:
 *      conv2d, dense, conv_transpose2d
 *                      the weight is a quantized int8 constant, per tensor
 *                      or per axis along the output channels (axis 1 of
 *                      conv_transpose2d's, with groups == 1); the bias is
 *                      absent or a float constant;
 *      add, mul        each operand has a quantized view or is a per-tensor
 *                      quantized constant, all of one dtype;
 *      concat, avg_pool2d, adaptive_avg_pool2d, leaky_relu, sigmoid,
 *      hardswish, hardsigmoid, upsample, softmax, mean: every input has a
 *                      quantized view (out_scale/out_zero_point/out_dtype
 *                      are the quantize node's);
 *      max_pool2d, relu, clip, reshape, flatten, transpose, slice, pad:
 *                      one input with a quantized view; these keep their
 *                      input's parameters, and a requantize follows when
 *                      the quantize node's differ (pad: only a fill value
 *                      on the input's quantization grid).
 *    A relu in the chain becomes activation="relu" on conv2d, dense, add
 *    and mul (the clamp at the output zero point is Q(relu(y)) exactly)
 *    and a quantized relu after the other ops; a clip becomes a quantized
 *    clip after the op (after the requantize, if any).
 * 2. max_pool2d, relu, reshape, flatten, transpose, slice and pad (fill on
 *    the grid) of a value with a quantized view, outside such a chain, move
 *    before the dequantize: dequantize commutes with them exactly, so the
 *    op runs on the quantized value and its result gets a dequantize.
 * 3. quantize of a value with a quantized view q is q itself when the
 *    parameters are q's, else a requantize (dequantize then quantize
 *    through float32, which is what the requantize kernel computes).
 * 4. A dequantize of a constant that a float op still reads becomes the
 *    float constant it computes (the dequantize kernel's bytes), named as
 *    the dequantize node, a PARAM when the integer data was one.
 * Everything else is copied; dequantize nodes nothing reads any more are
 * left for dce. A graph without dequantize nodes comes out unchanged.
 *
 * Attributes of a lowered op are the float op's, plus the output
 * parameters: a frontend that wants a particular quantized formula
 * (torch_memory_format, depthwise_saturate) writes it on the float op. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

typedef struct {
    mera_rewriter rw;
    int *uses, *user; /* per src value: readers (graph outputs count), the last reading node */
    char *is_out;
    int *qv;          /* src value -> dst id of its quantized view, or -1 */
    int *qconst;      /* src dequantize output -> src id of the quantized constant behind it, or -1 */
    char *done;       /* per src node: consumed by a lowered chain */
} lower_ctx;

enum { A_NONE, A_RELU, A_CLIP };

static int is_constant(const mera_graph *g, int v)
{
    int k = mera_graph_value(g, v)->kind;
    return k == MERA_VALUE_PARAM || k == MERA_VALUE_CONST;
}

static int sole_user(const lower_ctx *c, int v)
{
    return c->uses[v] == 1 && !c->is_out[v] ? c->user[v] : -1;
}

/* ---- attributes ------------------------------------------------------------ */

typedef struct {
    mera_attr a[48];
    int n;
} attr_list;

static void attrs_copy(attr_list *l, const mera_node *node)
{
    MERA_ASSERT(node->n_attrs <= (int)(sizeof l->a / sizeof l->a[0]) - 4);
    l->n = 0;
    for (int i = 0; i < node->n_attrs; i++)
        l->a[l->n++] = node->attrs[i];
}

static mera_attr *attrs_slot(attr_list *l, const char *key)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->a[i].key, key))
            return &l->a[i];
    MERA_ASSERT(l->n < (int)(sizeof l->a / sizeof l->a[0]));
    mera_attr *a = &l->a[l->n++];
    memset(a, 0, sizeof *a);
    a->key = key;
    return a;
}

static void attrs_set_out(attr_list *l, const mera_node *q)
{
    mera_attr *a = attrs_slot(l, "out_scale");
    a->kind = MERA_ATTR_FLOAT;
    a->f = mera_attr_float(q, "scale");
    a = attrs_slot(l, "out_zero_point");
    a->kind = MERA_ATTR_INT;
    a->i = mera_attr_int(q, "zero_point");
    a = attrs_slot(l, "out_dtype");
    a->kind = MERA_ATTR_STRING;
    a->s = mera_attr_string(q, "dtype");
}

/* ---- values ---------------------------------------------------------------- */

/* The dst float value of src v, materializing a dequantized constant (rule
 * 4) on first use. -1 on error. */
static int float_value(lower_ctx *c, int v)
{
    mera_rewriter *rw = &c->rw;
    if (v < 0 || rw->map[v] >= 0 || c->qconst[v] < 0)
        return mera_rewriter_value(rw, v);
    const mera_graph *g = rw->src;
    const mera_value *sv = mera_graph_value(g, v);
    int k = c->qconst[v];
    size_t nbytes = mera_type_nbytes(&sv->type);
    void *buf = malloc(nbytes ? nbytes : 1);
    if (!buf) {
        mera_fail(rw->err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    const void *in = mera_graph_value(g, k)->data;
    int id = -1;
    if (!mera_pass_eval_node(g, sv->producer, &in, buf, rw->err))
        id = mera_graph_value(g, k)->kind == MERA_VALUE_PARAM
                 ? mera_graph_add_param_data(rw->dst, sv->name, &sv->type, buf, rw->err)
                 : mera_graph_add_const(rw->dst, sv->name, &sv->type, buf, 1, rw->err);
    free(buf);
    return rw->map[v] = id;
}

/* Copy src node n, its dequantized-constant inputs materialized. */
static int copy_node(lower_ctx *c, int n)
{
    const mera_node *node = mera_graph_node(c->rw.src, n);
    for (int i = 0; i < node->n_inputs; i++)
        if (node->inputs[i] >= 0 && float_value(c, node->inputs[i]) < 0)
            return -1;
    return mera_rewriter_copy_node(&c->rw, n) < 0 ? -1 : 0;
}

/* Per-tensor quantization parameters of dst value id. */
static const mera_type *dst_type(const lower_ctx *c, int id)
{
    return &mera_graph_value(c->rw.dst, id)->type;
}

static int same_qparams(const mera_type *t, const mera_node *q)
{
    mera_dtype d;
    mera_dtype_parse(mera_attr_string(q, "dtype"), &d);
    return t->q.kind == MERA_QUANT_PER_TENSOR && t->dtype == d && t->q.scale == mera_attr_float(q, "scale") &&
           t->q.zero_point == (int32_t)mera_attr_int(q, "zero_point");
}

/* A dst node named name (a source node's: it stands for that node); its
 * first output's id, or -1. */
static int add(lower_ctx *c, int op, const char *name, const int *ins, int n_ins, const attr_list *al,
               const char *source)
{
    int out;
    if (mera_graph_add_node(c->rw.dst, op, name, ins, n_ins, al ? al->a : NULL, al ? al->n : 0, source, &out, 1,
                            c->rw.err) < 0)
        return -1;
    return out;
}

/* A new dst node, named fresh from base. */
static int add_new(lower_ctx *c, int op, const char *base, const int *ins, int n_ins, const attr_list *al,
                   const char *source)
{
    return mera_rewriter_add(&c->rw, op, base, ins, n_ins, al ? al->a : NULL, al ? al->n : 0, source);
}

/* A requantize of dst value x to quantize node q's parameters, named name
 * (fresh: made unique from it). */
static int add_requantize(lower_ctx *c, int x, const mera_node *q, const char *name, int fresh, const char *source)
{
    attr_list al = {.n = 0};
    mera_attr *a = attrs_slot(&al, "out_scale");
    a->kind = MERA_ATTR_FLOAT;
    a->f = mera_attr_float(q, "scale");
    a = attrs_slot(&al, "out_zero_point");
    a->kind = MERA_ATTR_INT;
    a->i = mera_attr_int(q, "zero_point");
    a = attrs_slot(&al, "out_dtype");
    a->kind = MERA_ATTR_STRING;
    a->s = mera_attr_string(q, "dtype");
    return (fresh ? add_new : add)(c, MERA_OP_REQUANTIZE, name, &x, 1, &al, source);
}

/* ---- the rules ------------------------------------------------------------- */

typedef enum { K_NONE, K_OWN, K_QOUT, K_KEEP } op_kind;

static op_kind kind_of(int op)
{
    switch (op) {
    case MERA_OP_CONV2D:
    case MERA_OP_DENSE:
    case MERA_OP_ADD:
    case MERA_OP_MUL:
        return K_OWN;
    case MERA_OP_CONV_TRANSPOSE2D: /* no fused activation: a relu after it stays a quantized relu */
    case MERA_OP_CONCAT:
    case MERA_OP_AVG_POOL2D:
    case MERA_OP_ADAPTIVE_AVG_POOL2D:
    case MERA_OP_LEAKY_RELU:
    case MERA_OP_SIGMOID:
    case MERA_OP_HARDSWISH:
    case MERA_OP_HARDSIGMOID:
    case MERA_OP_GELU:
    case MERA_OP_UPSAMPLE:
    case MERA_OP_SOFTMAX:
    case MERA_OP_MEAN:
        return K_QOUT;
    case MERA_OP_MAX_POOL2D:
    case MERA_OP_RELU:
    case MERA_OP_CLIP:
    case MERA_OP_RESHAPE:
    case MERA_OP_FLATTEN:
    case MERA_OP_TRANSPOSE:
    case MERA_OP_SLICE:
    case MERA_OP_PAD:
        return K_KEEP;
    default:
        return K_NONE;
    }
}

/* Rule 2's ops: dequantize commutes with them exactly (pad: see pad_on_grid). */
static int exact_alone(int op)
{
    return op == MERA_OP_MAX_POOL2D || op == MERA_OP_RELU || op == MERA_OP_RESHAPE || op == MERA_OP_FLATTEN ||
           op == MERA_OP_TRANSPOSE || op == MERA_OP_SLICE || op == MERA_OP_PAD;
}

/* Is pad's fill value a value of the quantized input's grid: q =
 * round-half-even(fill / s) + z in range, and f32((q - z) * f32(s)) equal
 * to f32(fill)? (Then padding the quantized data pads with exactly fill.) */
static int pad_on_grid(const mera_node *pad, const mera_type *qt)
{
    double fill = mera_attr_float(pad, "value"), s = qt->q.scale;
    int32_t z = qt->q.zero_point;
    double q = nearbyint(fill / s) + z;
    double lo = qt->dtype == MERA_DTYPE_UINT8 ? 0 : -128, hi = qt->dtype == MERA_DTYPE_UINT8 ? 255 : 127;
    if (!(q >= lo && q <= hi))
        return 0;
    return (float)((q - z) * (double)(float)s) == (float)fill;
}

/* Ops whose input 1 is a weight and input 2 a float bias. */
static int weighted(int op)
{
    return op == MERA_OP_CONV2D || op == MERA_OP_DENSE || op == MERA_OP_CONV_TRANSPOSE2D;
}

/* The int8 weight of a conv2d/dense/conv_transpose2d node, usable by its
 * quantized form: the src id of the quantized constant, or -1. */
static int quant_weight(const lower_ctx *c, const mera_node *node)
{
    const mera_graph *g = c->rw.src;
    int w = node->inputs[1] >= 0 ? c->qconst[node->inputs[1]] : -1;
    if (w < 0)
        return -1;
    const mera_type *t = &mera_graph_value(g, w)->type;
    int axis = node->op == MERA_OP_CONV2D && !strcmp(mera_attr_string(node, "kernel_layout"), "HWIO") ? 3 : 0;
    if (node->op == MERA_OP_CONV_TRANSPOSE2D) {
        if (t->q.kind == MERA_QUANT_PER_AXIS && mera_attr_int(node, "groups") != 1)
            return -1;
        axis = 1;
    }
    if (t->dtype != MERA_DTYPE_INT8 || (t->q.kind == MERA_QUANT_PER_AXIS && t->q.axis != axis))
        return -1;
    return w;
}

/* Can node take its quantized form (rule 1's input conditions)? Looks
 * only, declares nothing. */
static int lowerable(const lower_ctx *c, const mera_node *node)
{
    const mera_graph *g = c->rw.src;
    int own = kind_of(node->op) == K_OWN, n_runtime = 0;
    mera_dtype dtype = MERA_DTYPE_COUNT;
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        if (v < 0)
            continue;
        if (weighted(node->op) && i >= 1) {
            if (i == 1 ? quant_weight(c, node) < 0
                       : !is_constant(g, v) || mera_graph_value(g, v)->type.dtype != MERA_DTYPE_FLOAT32)
                return 0;
            continue;
        }
        const mera_type *t;
        if (c->qv[v] >= 0) {
            t = &mera_graph_value(c->rw.dst, c->qv[v])->type;
            n_runtime++;
        } else if (own && c->qconst[v] >= 0 &&
                   mera_graph_value(g, c->qconst[v])->type.q.kind == MERA_QUANT_PER_TENSOR) {
            t = &mera_graph_value(g, c->qconst[v])->type;
        } else {
            return 0;
        }
        if (dtype != MERA_DTYPE_COUNT && t->dtype != dtype)
            return 0; /* one dtype: the IR's quantized ops take no mix */
        dtype = t->dtype;
    }
    if (!n_runtime)
        return 0;
    if (node->op == MERA_OP_PAD && !pad_on_grid(node, &mera_graph_value(c->rw.dst, c->qv[node->inputs[0]])->type))
        return 0;
    return 1;
}

/* The dst inputs of a lowerable node's quantized form; 0 or -1. */
static int quantized_inputs(lower_ctx *c, const mera_node *node, int *ins)
{
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        ins[i] = -1;
        if (v < 0)
            continue;
        if (weighted(node->op) && i == 1)
            ins[i] = mera_rewriter_value(&c->rw, quant_weight(c, node));
        else if (weighted(node->op) && i == 2)
            ins[i] = float_value(c, v);
        else
            ins[i] = c->qv[v] >= 0 ? c->qv[v] : mera_rewriter_value(&c->rw, c->qconst[v]);
        if (ins[i] < 0)
            return -1;
    }
    return 0;
}

/* The chain after node: the quantize node (src index) and the relu/clip
 * between (A_NONE, A_RELU, A_CLIP; *act_node its index), or -1. */
static int find_chain(const lower_ctx *c, const mera_node *node, int *act, int *act_node)
{
    const mera_graph *g = c->rw.src;
    *act = A_NONE;
    *act_node = -1;
    int u = sole_user(c, node->outputs[0]);
    if (u < 0)
        return -1;
    const mera_node *un = mera_graph_node(g, u);
    if ((un->op == MERA_OP_RELU || un->op == MERA_OP_CLIP) &&
        mera_graph_value(g, un->inputs[0])->type.dtype == MERA_DTYPE_FLOAT32) {
        *act = un->op == MERA_OP_RELU ? A_RELU : A_CLIP;
        *act_node = u;
        if ((u = sole_user(c, un->outputs[0])) < 0)
            return -1;
        un = mera_graph_node(g, u);
    }
    return un->op == MERA_OP_QUANTIZE ? u : -1;
}

/* Try rules 1 and 2 on float node n: 1 lowered, 0 not, -1 error. */
static int try_lower(lower_ctx *c, int n)
{
    const mera_graph *g = c->rw.src;
    const mera_node *node = mera_graph_node(g, n);
    op_kind k = kind_of(node->op);
    if (k == K_NONE || node->n_outputs != 1 ||
        mera_graph_value(g, node->inputs[0])->type.dtype != MERA_DTYPE_FLOAT32)
        return 0;
    if (!lowerable(c, node))
        return 0;
    int act, act_node, qn = find_chain(c, node, &act, &act_node);
    if (qn < 0 && !exact_alone(node->op))
        return 0;
    int ins[MERA_MAX_NODE_INPUTS];
    if (quantized_inputs(c, node, ins))
        return -1;
    attr_list al;
    attrs_copy(&al, node);
    char base[512];
    if (qn < 0) {
        /* rule 2: the op on the quantized value, then its dequantize */
        int r = add(c, node->op, node->name, ins, node->n_inputs, &al, node->source);
        if (r < 0)
            return -1;
        snprintf(base, sizeof base, "%.400s.dequantize", node->name);
        int d = add_new(c, MERA_OP_DEQUANTIZE, base, &r, 1, NULL, node->source);
        if (d < 0)
            return -1;
        c->rw.map[node->outputs[0]] = d;
        c->qv[node->outputs[0]] = r;
        return 1;
    }
    /* rule 1 */
    const mera_node *q = mera_graph_node(g, qn), *an = act_node >= 0 ? mera_graph_node(g, act_node) : NULL;
    int fused = 0;
    if (k != K_KEEP)
        attrs_set_out(&al, q);
    if (act == A_RELU && k == K_OWN && !strcmp(mera_attr_string(node, "activation"), "none")) {
        mera_attr *a = attrs_slot(&al, "activation");
        a->kind = MERA_ATTR_STRING;
        a->s = "relu";
        fused = 1;
    }
    int r = add(c, node->op, node->name, ins, node->n_inputs, &al, node->source);
    if (r < 0)
        return -1;
    if (k == K_KEEP && !same_qparams(dst_type(c, r), q)) {
        snprintf(base, sizeof base, "%.400s.requantize", node->name);
        if ((r = add_requantize(c, r, q, base, 1, node->source)) < 0)
            return -1;
    }
    if (an && !fused) {
        /* a relu (max(q, zero point)) or clip on the quantized output */
        attr_list aa;
        attrs_copy(&aa, an);
        if ((r = add(c, an->op, an->name, &r, 1, &aa, an->source)) < 0)
            return -1;
    }
    c->done[qn] = 1;
    if (act_node >= 0)
        c->done[act_node] = 1;
    c->rw.map[q->outputs[0]] = r;
    return 1;
}

/* Rule 3: quantize node n of a value with a quantized view. 1 done, 0 not, -1 error. */
static int lower_quantize(lower_ctx *c, int n)
{
    const mera_node *node = mera_graph_node(c->rw.src, n);
    int x = c->qv[node->inputs[0]];
    if (x < 0)
        return 0;
    if (same_qparams(dst_type(c, x), node)) {
        c->rw.map[node->outputs[0]] = x;
        return 1;
    }
    int r = add_requantize(c, x, node, node->name, 0, node->source);
    if (r < 0)
        return -1;
    c->rw.map[node->outputs[0]] = r;
    return 1;
}

static void ctx_free(lower_ctx *c)
{
    free(c->uses), free(c->user), free(c->is_out), free(c->qv), free(c->qconst), free(c->done);
}

mera_graph *mera_pass_lower_qdq(const mera_graph *g, mera_error *err)
{
    int nv = mera_graph_num_values(g), nn = mera_graph_num_nodes(g);
    size_t sv = (size_t)(nv > 0 ? nv : 1), sn = (size_t)(nn > 0 ? nn : 1);
    lower_ctx c;
    memset(&c, 0, sizeof c);
    c.uses = calloc(sv, sizeof *c.uses);
    c.user = malloc(sv * sizeof *c.user);
    c.is_out = calloc(sv, 1);
    c.qv = malloc(sv * sizeof *c.qv);
    c.qconst = malloc(sv * sizeof *c.qconst);
    c.done = calloc(sn, 1);
    if (!c.uses || !c.user || !c.is_out || !c.qv || !c.qconst || !c.done) {
        ctx_free(&c);
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int v = 0; v < nv; v++)
        c.user[v] = c.qv[v] = c.qconst[v] = -1;
    for (int n = 0; n < nn; n++) {
        const mera_node *node = mera_graph_node(g, n);
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0) {
                c.uses[node->inputs[i]]++;
                c.user[node->inputs[i]] = n;
            }
        if (node->op == MERA_OP_DEQUANTIZE && is_constant(g, node->inputs[0]) &&
            mera_graph_value(g, node->inputs[0])->data)
            c.qconst[node->outputs[0]] = node->inputs[0];
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++) {
        c.uses[mera_graph_output(g, i)]++;
        c.is_out[mera_graph_output(g, i)] = 1;
    }
    if (mera_rewriter_init(&c.rw, g, err)) {
        ctx_free(&c);
        return NULL;
    }
    if (mera_rewriter_declare_params(&c.rw))
        goto fail;
    for (int n = 0; n < nn; n++) {
        if (c.done[n])
            continue;
        const mera_node *node = mera_graph_node(g, n);
        int x = node->inputs[0], r = 0;
        if (node->op == MERA_OP_DEQUANTIZE) {
            if (c.qconst[node->outputs[0]] >= 0)
                continue; /* rule 4, on first use */
            if (copy_node(&c, n))
                goto fail;
            if (!is_constant(g, x) && mera_graph_value(g, x)->type.q.kind == MERA_QUANT_PER_TENSOR)
                c.qv[node->outputs[0]] = c.rw.map[x];
            continue;
        }
        if (node->op == MERA_OP_QUANTIZE)
            r = lower_quantize(&c, n);
        else
            r = try_lower(&c, n);
        if (r < 0 || (r == 0 && copy_node(&c, n)))
            goto fail;
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        if (float_value(&c, mera_graph_output(g, i)) < 0)
            goto fail;
    ctx_free(&c);
    return mera_rewriter_finish(&c.rw);
fail:
    mera_rewriter_abort(&c.rw);
    ctx_free(&c);
    return NULL;
}
