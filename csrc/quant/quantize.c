/* The post-training quantizer: prepare (batch-norm folding: passes/fold_bn.c), calibration and
 * the rewrite into the int8 contract. See quant.h for the rules. */
#include "quant/quant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/interp.h"
#include "passes/passes.h"

struct mera_quantizer {
    mera_quant_config cfg;
    mera_graph *g;           /* the prepared float graph */
    mera_interp *interp;     /* g on the float Interpreter */
    const void **decl_data;  /* per declared value of g: its data (NULL for inputs) */
    mera_observer **obs;     /* per value of g; NULL where not observed */
    mera_observer **pct;     /* cfg.percentile_too: a PERCENTILE observer per observed value; else NULL */
    int64_t batches;
};

mera_quant_config mera_quant_config_default(void)
{
    mera_quant_config c;
    c.activations = mera_observer_config_default();
    c.weight_per_channel = 1;
    c.fold_batch_norm = 1;
    c.fuse_relu = 1;
    c.percentile_too = 0;
    return c;
}

/* ---- small helpers ------------------------------------------------------ */

static int is_float(const mera_value *v)
{
    return v->type.dtype == MERA_DTYPE_FLOAT32;
}

/* uses[v]: how many node inputs and graph outputs read v; user[v]: the last
 * node reading it (meaningful when uses[v] == 1 and !is_out[v]). */
typedef struct {
    int *uses, *user;
    char *is_out;
} use_info;

static mera_status use_info_build(const mera_graph *g, use_info *u, mera_error *err)
{
    int nv = mera_graph_num_values(g);
    u->uses = calloc((size_t)nv, sizeof *u->uses);
    u->user = malloc((size_t)nv * sizeof *u->user);
    u->is_out = calloc((size_t)nv, 1);
    if (!u->uses || !u->user || !u->is_out)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    for (int v = 0; v < nv; v++)
        u->user[v] = -1;
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *node = mera_graph_node(g, n);
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0) {
                u->uses[node->inputs[i]]++;
                u->user[node->inputs[i]] = n;
            }
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++) {
        u->uses[mera_graph_output(g, i)]++;
        u->is_out[mera_graph_output(g, i)] = 1;
    }
    return MERA_OK;
}

static void use_info_free(use_info *u)
{
    free(u->uses);
    free(u->user);
    free(u->is_out);
}

/* The one node that reads v, or -1 (several readers, or a graph output). */
static int sole_user(const use_info *u, int v)
{
    return u->uses[v] == 1 && !u->is_out[v] ? u->user[v] : -1;
}

/* Attributes: a node's list copied, then entries set or added. */
typedef struct {
    mera_attr a[40];
    int n;
} attr_list;

static void attrs_copy(attr_list *l, const mera_node *node)
{
    l->n = 0;
    for (int i = 0; i < node->n_attrs && l->n < (int)(sizeof l->a / sizeof l->a[0]); i++)
        l->a[l->n++] = node->attrs[i];
}

static mera_attr *attrs_slot(attr_list *l, const char *key)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->a[i].key, key))
            return &l->a[i];
    mera_attr *a = &l->a[l->n++];
    memset(a, 0, sizeof *a);
    a->key = key;
    return a;
}

static void attrs_set_float(attr_list *l, const char *key, double f)
{
    mera_attr *a = attrs_slot(l, key);
    a->kind = MERA_ATTR_FLOAT;
    a->f = f;
}

static void attrs_set_int(attr_list *l, const char *key, int64_t i)
{
    mera_attr *a = attrs_slot(l, key);
    a->kind = MERA_ATTR_INT;
    a->i = i;
}

static void attrs_set_string(attr_list *l, const char *key, const char *s)
{
    mera_attr *a = attrs_slot(l, key);
    a->kind = MERA_ATTR_STRING;
    a->s = s;
}

/* The axis of a conv/dense weight that indexes output channels. */
static int weight_out_axis(const mera_node *node)
{
    if (node->op == MERA_OP_CONV2D && !strcmp(mera_attr_string(node, "kernel_layout"), "HWIO"))
        return 3;
    if (node->op == MERA_OP_CONV_TRANSPOSE2D) /* [C_in, C_out/groups, KH, KW] */
        return 1;
    return 0;
}

/* Ops whose input 1 is a weight and input 2 a float bias: the CONV layers
 * (ops.def WEIGHTS) and conv_transpose2d, a host layer with the same inputs. */
static int has_weights(const mera_node *node)
{
    return (mera_op_table[node->op].flags & MERA_OPF_WEIGHTS) || node->op == MERA_OP_CONV_TRANSPOSE2D;
}

/* ---- 1. prepare: passes/fold_bn.c on a copy that owns its data ---------- */

/* A copy of the bound graph g whose PARAM and CONST values own their data
 * (the quantizer outlives the caller's graph and arrays). Values are
 * declared on first use, as the passes declare them. */
static mera_graph *own_copy(const mera_graph *g, mera_error *err)
{
    mera_rewriter rw;
    if (mera_rewriter_init(&rw, g, err))
        return NULL;
    int n_out = mera_graph_num_outputs(g);
    for (int n = 0; n <= mera_graph_num_nodes(g); n++) {
        const mera_node *node = n < mera_graph_num_nodes(g) ? mera_graph_node(g, n) : NULL;
        int k = node ? node->n_inputs : n_out;
        for (int i = 0; i < k; i++) {
            int v = node ? node->inputs[i] : mera_graph_output(g, i);
            if (v < 0 || rw.map[v] >= 0)
                continue;
            const mera_value *sv = mera_graph_value(g, v);
            if (sv->kind == MERA_VALUE_PARAM)
                rw.map[v] = mera_graph_add_param_data(rw.dst, sv->name, &sv->type, sv->data, err);
            else if (sv->kind == MERA_VALUE_CONST)
                rw.map[v] = mera_graph_add_const(rw.dst, sv->name, &sv->type, sv->data, 1, err);
            else
                continue;
            if (rw.map[v] < 0) {
                mera_rewriter_abort(&rw);
                return NULL;
            }
        }
        if (node && mera_rewriter_copy_node(&rw, n) < 0) {
            mera_rewriter_abort(&rw);
            return NULL;
        }
    }
    return mera_rewriter_finish(&rw);
}

static mera_graph *prepare(const mera_graph *g, const void *const *param_data, const mera_quant_config *cfg,
                           mera_error *err)
{
    if (mera_graph_num_outputs(g) > 256) {
        mera_fail(err, MERA_ERR_UNSUPPORTED, "the quantizer takes at most 256 graph outputs (this graph has %d)",
                  mera_graph_num_outputs(g));
        return NULL;
    }
    mera_graph *bound = mera_pass_bind(g, param_data, err);
    if (!bound)
        return NULL;
    mera_graph *folded = cfg->fold_batch_norm ? mera_pass_fold_bn(bound, err) : NULL;
    mera_graph *out = cfg->fold_batch_norm && !folded ? NULL : own_copy(folded ? folded : bound, err);
    mera_graph_free(folded);
    mera_graph_free(bound);
    return out;
}

/* ---- the quantizer object and calibration ------------------------------- */

static mera_status check_float_graph(const mera_graph *g, mera_error *err)
{
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *node = mera_graph_node(g, n);
        if (node->op == MERA_OP_QUANTIZE || node->op == MERA_OP_DEQUANTIZE || node->op == MERA_OP_REQUANTIZE)
            return mera_fail(err, MERA_ERR_UNSUPPORTED,
                             "node '%s' (%s): the graph is already quantized; the quantizer takes float models",
                             node->name, mera_op_table[node->op].name);
    }
    for (int v = 0; v < mera_graph_num_values(g); v++) {
        const mera_value *val = mera_graph_value(g, v);
        if (val->type.q.kind != MERA_QUANT_NONE)
            return mera_fail(err, MERA_ERR_UNSUPPORTED,
                             "value '%s' is quantized (%s); the quantizer takes float models", val->name,
                             mera_dtype_name(val->type.dtype));
        /* integer inputs (token, byte or index ids) feed host ops and stay as they are */
        if (val->kind == MERA_VALUE_INPUT && !is_float(val) && val->type.dtype != MERA_DTYPE_INT64 &&
            val->type.dtype != MERA_DTYPE_INT32)
            return mera_fail(err, MERA_ERR_UNSUPPORTED,
                             "input '%s' is %s; the quantizer takes float32 inputs and int32/int64 index inputs",
                             val->name, mera_dtype_name(val->type.dtype));
    }
    return MERA_OK;
}

mera_quantizer *mera_quantizer_new(const mera_graph *g, const void *const *param_data,
                                   const mera_quant_config *cfg, mera_error *err)
{
    if (check_float_graph(g, err) || mera_observer_config_validate(&cfg->activations, err))
        return NULL;
    mera_quantizer *q = calloc(1, sizeof *q);
    if (!q) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        const mera_value *val = mera_graph_value(g, mera_graph_input(g, i));
        if (val->kind == MERA_VALUE_PARAM && (!param_data || !param_data[i])) {
            mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data", val->name);
            goto fail;
        }
    }
    q->cfg = *cfg;
    if (!(q->g = prepare(g, param_data, cfg, err)))
        goto fail;
    int nd = mera_graph_num_inputs(q->g), pv = mera_graph_num_values(q->g);
    q->decl_data = calloc((size_t)nd + 1, sizeof *q->decl_data);
    q->obs = calloc((size_t)pv, sizeof *q->obs);
    q->pct = cfg->percentile_too ? calloc((size_t)pv, sizeof *q->pct) : NULL;
    if (!q->decl_data || !q->obs || (cfg->percentile_too && !q->pct)) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < nd; i++)
        q->decl_data[i] = mera_graph_value(q->g, mera_graph_input(q->g, i))->data;
    if (!(q->interp = mera_interp_compile(q->g, MERA_INTERP_FLOAT, q->decl_data, err)))
        goto fail;
    for (int v = 0; v < pv; v++) {
        const mera_value *val = mera_graph_value(q->g, v);
        if (is_float(val) && (val->kind == MERA_VALUE_INPUT || val->kind == MERA_VALUE_NODE) &&
            !(q->obs[v] = mera_observer_new(&cfg->activations, err)))
            goto fail;
        if (q->obs[v] && q->pct) {
            mera_observer_config pc = cfg->activations;
            pc.kind = MERA_OBSERVER_PERCENTILE;
            if (!(q->pct[v] = mera_observer_new(&pc, err)))
                goto fail;
        }
    }
    return q;
fail:
    mera_quantizer_free(q);
    return NULL;
}

void mera_quantizer_free(mera_quantizer *q)
{
    if (!q)
        return;
    if (q->obs)
        for (int v = 0; v < mera_graph_num_values(q->g); v++)
            mera_observer_free(q->obs[v]);
    if (q->pct)
        for (int v = 0; v < mera_graph_num_values(q->g); v++)
            mera_observer_free(q->pct[v]);
    free(q->obs);
    free(q->pct);
    mera_interp_free(q->interp);
    free(q->decl_data);
    mera_graph_free(q->g);
    free(q);
}

const mera_graph *mera_quantizer_float_graph(const mera_quantizer *q)
{
    return q->g;
}

int64_t mera_quantizer_num_batches(const mera_quantizer *q)
{
    return q->batches;
}

const mera_observer *mera_quantizer_observer(const mera_quantizer *q, int v)
{
    return v >= 0 && v < mera_graph_num_values(q->g) ? q->obs[v] : NULL;
}

const mera_observer *mera_quantizer_percentile_observer(const mera_quantizer *q, int v)
{
    return q->pct && v >= 0 && v < mera_graph_num_values(q->g) ? q->pct[v] : NULL;
}

static mera_status observe_value(const mera_quantizer *q, int v, const void *data, mera_error *err)
{
    if (!q->obs[v])
        return MERA_OK;
    const mera_value *val = mera_graph_value(q->g, v);
    mera_status st = mera_observer_update(q->obs[v], data, mera_type_numel(&val->type), err);
    if (!st && q->pct && q->pct[v])
        st = mera_observer_update(q->pct[v], data, mera_type_numel(&val->type), err);
    if (st)
        mera_error_prefix(err, "value '%s': ", val->name);
    return st;
}

static mera_status observe_node(void *user, int n, const void *const *outputs, mera_error *err)
{
    const mera_quantizer *q = user;
    const mera_node *node = mera_graph_node(q->g, n);
    for (int o = 0; o < node->n_outputs; o++) {
        mera_status st = observe_value(q, node->outputs[o], outputs[o], err);
        if (st)
            return st;
    }
    return MERA_OK;
}

static mera_status check_finite(const mera_value *val, const float *d, mera_error *err)
{
    if (!is_float(val))
        return MERA_OK; /* an integer index input */
    int64_t n = mera_type_numel(&val->type);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(d[i]))
            return mera_fail(err, MERA_ERR_RUNTIME, "input '%s' holds a non-finite value at index %lld", val->name,
                             (long long)i);
    return MERA_OK;
}

mera_status mera_quantizer_calibrate(mera_quantizer *q, const void *const *inputs, mera_error *err)
{
    /* Inputs are checked before any observer sees them, so a bad batch is
     * refused whole. A non-finite value that appears inside the graph from
     * finite inputs (an overflow) stops the run at that layer; the
     * observers before it have then seen the batch, and the error says so. */
    mera_status st;
    int k = 0;
    for (int i = 0; i < mera_graph_num_inputs(q->g); i++) {
        const mera_value *val = mera_graph_value(q->g, mera_graph_input(q->g, i));
        if (val->kind == MERA_VALUE_INPUT && (st = check_finite(val, inputs[k++], err)))
            return st;
    }
    k = 0;
    for (int i = 0; i < mera_graph_num_inputs(q->g); i++) {
        int v = mera_graph_input(q->g, i);
        if (mera_graph_value(q->g, v)->kind == MERA_VALUE_INPUT && (st = observe_value(q, v, inputs[k++], err)))
            return st;
    }
    st = mera_interp_run_observed(q->interp, inputs, NULL, observe_node, q, err);
    if (st == MERA_ERR_INVALID) {
        err->code = MERA_ERR_RUNTIME;
        mera_error_prefix(err, "calibration batch %lld (the observers of earlier layers have seen it): ",
                          (long long)q->batches);
    }
    if (!st)
        q->batches++;
    return st;
}

/* ---- 3. quantize -------------------------------------------------------- */

typedef struct {
    const mera_quantizer *q;
    mera_graph *dst;
    int *qv;       /* prepared value -> quantized-graph value, -1 until made */
    int *float_of; /* quantized-graph value -> prepared value (grows) */
    int cap_float_of;
    mera_quant_ranges ranges;
    mera_error *err;
} quant_ctx;

/* Grow float_of to at least n entries (new ones -1). */
static int float_of_reserve(quant_ctx *c, int n)
{
    if (n <= c->cap_float_of)
        return 0;
    int cap = c->cap_float_of ? c->cap_float_of * 2 : 256;
    while (cap < n)
        cap *= 2;
    int *p = realloc(c->float_of, (size_t)cap * sizeof *p);
    if (!p) {
        mera_fail(c->err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    for (int i = c->cap_float_of; i < cap; i++)
        p[i] = -1;
    c->float_of = p;
    c->cap_float_of = cap;
    return 0;
}

/* Record that quantized-graph value qid stands for prepared value fv;
 * passes qid through (and a failed qid < 0). */
static int note_float(quant_ctx *c, int qid, int fv)
{
    if (qid < 0 || float_of_reserve(c, qid + 1))
        return -1;
    c->float_of[qid] = fv;
    return qid;
}

/* The activation parameters of prepared value v from its observer. */
static mera_status act_qparams(const quant_ctx *c, int v, double *scale, int32_t *zp)
{
    const mera_observer *o = c->q->obs[v];
    float lo, hi;
    if (c->ranges == MERA_QUANT_RANGES_PERCENTILE)
        o = c->q->pct ? c->q->pct[v] : NULL;
    if (!o)
        return mera_fail(c->err, MERA_ERR_INVALID, "internal: value '%s' has no observer",
                         mera_graph_value(c->q->g, v)->name);
    mera_status st = mera_observer_range(o, &lo, &hi, c->err);
    if (st) {
        mera_error_prefix(c->err, "value '%s': ", mera_graph_value(c->q->g, v)->name);
        return st;
    }
    if (c->ranges == MERA_QUANT_RANGES_MINMAX) {
        mera_observer_minmax(o, &lo, &hi);
        lo = lo < 0.0f ? lo : 0.0f;
        hi = hi > 0.0f ? hi : 0.0f;
    }
    const mera_observer_config *oc = &c->q->cfg.activations;
    mera_qparams_from_range(lo, hi, oc->qmin, oc->qmax, MERA_QUANT_MIN_SCALE, scale, zp);
    return MERA_OK;
}

static uint8_t quantize_u8(double x, double scale, int32_t zp)
{
    double r = nearbyint(x / scale) + zp;
    return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

/* A float constant used as an activation (x * c, x + c): uint8 per tensor
 * on its exact range, same name and kind. */
static int quant_const_activation(quant_ctx *c, int v)
{
    const mera_value *sv = mera_graph_value(c->q->g, v);
    int64_t n = mera_type_numel(&sv->type);
    const float *d = sv->data;
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(d[i])) {
            mera_fail(c->err, MERA_ERR_INVALID, "constant '%s' holds a non-finite value at index %lld", sv->name,
                      (long long)i);
            return -1;
        }
        lo = d[i] < lo ? d[i] : lo;
        hi = d[i] > hi ? d[i] : hi;
    }
    mera_type t = sv->type;
    t.dtype = MERA_DTYPE_UINT8;
    t.q.kind = MERA_QUANT_PER_TENSOR;
    t.q.count = 1;
    mera_qparams_from_range(lo, hi, 0, 255, MERA_QUANT_MIN_SCALE, &t.q.scale, &t.q.zero_point);
    uint8_t *qd = malloc(n > 0 ? (size_t)n : 1);
    if (!qd) {
        mera_fail(c->err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        qd[i] = quantize_u8(d[i], t.q.scale, t.q.zero_point);
    int id = sv->kind == MERA_VALUE_PARAM ? mera_graph_add_param_data(c->dst, sv->name, &t, qd, c->err)
                                          : mera_graph_add_const(c->dst, sv->name, &t, qd, 1, c->err);
    free(qd);
    return note_float(c, id, v);
}

/* A conv/dense/conv_transpose2d weight: int8, symmetric, per output channel or per tensor. */
static int quant_weight(quant_ctx *c, const mera_node *node, int v)
{
    const mera_value *sv = mera_graph_value(c->q->g, v);
    const mera_type *wt = &sv->type;
    if (!is_float(sv) || !sv->data) {
        mera_fail(c->err, MERA_ERR_UNSUPPORTED, "node '%s' (%s): the weight '%s' must be a float constant or param",
                  node->name, mera_op_table[node->op].name, sv->name);
        return -1;
    }
    int ax = weight_out_axis(node), per_ch = c->q->cfg.weight_per_channel;
    /* a grouped transposed conv's axis 1 holds the channels of one group only: per tensor */
    if (node->op == MERA_OP_CONV_TRANSPOSE2D && mera_attr_int(node, "groups") != 1)
        per_ch = 0;
    int64_t n = mera_type_numel(wt), oc = wt->shape[ax], inner = 1;
    for (int i = ax + 1; i < wt->rank; i++)
        inner *= wt->shape[i];
    int64_t groups = per_ch ? oc : 1;
    double *scales = calloc((size_t)groups, sizeof *scales);
    int32_t *zps = calloc((size_t)groups, sizeof *zps);
    int8_t *qd = malloc(n > 0 ? (size_t)n : 1);
    int id = -1;
    if (!scales || !zps || !qd) {
        mera_fail(c->err, MERA_ERR_NOMEM, "out of memory");
        goto out;
    }
    const float *d = sv->data;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(d[i])) {
            mera_fail(c->err, MERA_ERR_INVALID, "node '%s': weight '%s' holds a non-finite value at index %lld",
                      node->name, sv->name, (long long)i);
            goto out;
        }
        int64_t g = per_ch ? (i / inner) % oc : 0;
        double a = fabs((double)d[i]);
        scales[g] = a > scales[g] ? a : scales[g];
    }
    /* scale = max|w| / 127 (a float32 value, as kernels read it); all-zero
     * channels get scale 1. The requantization (numerics.md) computes
     * ats = f32(s_x) * f32(s_w) and bias / ats in float32: a channel whose
     * weights are so small that ats is not a normal float32 number, or that
     * bias / ats overflows, would turn into inf/NaN (the output saturates at
     * qmin). Its weights contribute less than 1e-30 of one output step or of
     * its bias, so it is quantized as an all-zero channel (scale 1, q = 0). */
    const mera_value *xv = c->qv[node->inputs[0]] >= 0 ? mera_graph_value(c->dst, c->qv[node->inputs[0]]) : NULL;
    float s_x = xv && xv->type.q.kind == MERA_QUANT_PER_TENSOR ? (float)xv->type.q.scale : 1.0f;
    const mera_value *bv = node->n_inputs > 2 && node->inputs[2] >= 0 ? mera_graph_value(c->q->g, node->inputs[2])
                                                                       : NULL;
    const float *bias = bv && is_float(bv) && bv->data ? bv->data : NULL;
    int64_t nbias = bias ? mera_type_numel(&bv->type) : 0;
    char *dead = calloc((size_t)groups, 1);
    if (!dead) {
        mera_fail(c->err, MERA_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int64_t g = 0; g < groups; g++) {
        if (!(scales[g] > 0)) {
            scales[g] = 1.0;
            continue;
        }
        float s_w = (float)(scales[g] / 127.0), ats = s_x * s_w;
        double bmax = 0;
        for (int64_t o = per_ch ? g : 0; o < nbias && o < (per_ch ? g + 1 : nbias); o++)
            bmax = fabs((double)bias[o]) > bmax ? fabs((double)bias[o]) : bmax;
        if (!(ats >= FLT_MIN) || bmax / ats > FLT_MAX / 2) {
            dead[g] = 1;
            scales[g] = 1.0;
        } else {
            scales[g] = (double)s_w;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t g = per_ch ? (i / inner) % oc : 0;
        double r = dead[g] ? 0.0 : nearbyint((double)d[i] / scales[g]);
        qd[i] = (int8_t)(r < -127 ? -127 : r > 127 ? 127 : r);
    }
    free(dead);
    mera_type t = *wt;
    t.dtype = MERA_DTYPE_INT8;
    if (per_ch) {
        t.q.kind = MERA_QUANT_PER_AXIS;
        t.q.axis = ax;
        t.q.count = oc;
        t.q.scales = scales;
        t.q.zero_points = zps;
    } else {
        t.q.kind = MERA_QUANT_PER_TENSOR;
        t.q.count = 1;
        t.q.scale = scales[0];
        t.q.zero_point = 0;
    }
    id = note_float(c, mera_graph_add_param_data(c->dst, sv->name, &t, qd, c->err), v);
out:
    free(scales), free(zps), free(qd);
    return id;
}

/* The quantized-graph value for input slot i of node. */
static int quant_input(quant_ctx *c, const mera_node *node, int i)
{
    int v = node->inputs[i];
    if (v < 0)
        return -1;
    if (c->qv[v] >= 0)
        return c->qv[v];
    const mera_value *sv = mera_graph_value(c->q->g, v);
    int conv_like = has_weights(node);
    int id;
    if (conv_like && i == 1)
        id = quant_weight(c, node, v);
    else if ((conv_like && i == 2) || (node->op == MERA_OP_BATCH_NORM && i >= 1)) /* float bias; bn scale, shift */
        id = note_float(c, sv->kind == MERA_VALUE_PARAM
                               ? mera_graph_add_param_data(c->dst, sv->name, &sv->type, sv->data, c->err)
                               : mera_graph_add_const(c->dst, sv->name, &sv->type, sv->data, 1, c->err),
                        v);
    else if (sv->kind == MERA_VALUE_CONST || sv->kind == MERA_VALUE_PARAM)
        id = quant_const_activation(c, v);
    else {
        mera_fail(c->err, MERA_ERR_INVALID, "internal: value '%s' used before it is made", sv->name);
        id = -1;
    }
    /* cached per value: a constant used both as a conv weight and as an
     * activation gets the first form for both uses, and the op that cannot
     * take it (an int8 per-axis activation, a uint8 weight) refuses it with
     * its name when the node is added */
    c->qv[v] = id;
    return id;
}

/* An op with no quantized form (ops.def: FLOAT_IN) stays float: its activation inputs are
 * dequantized, its constants stay float, and its output is quantized with its observer's
 * parameters, so the ops after it see an activation like any other. An output of plain
 * integers (topk's indices, matmul_integer's sums) is not an activation: it stays as it is. */
static mera_status quant_float_node(quant_ctx *c, const mera_node *node)
{
    const mera_graph *g = c->q->g;
    int ins[MERA_MAX_NODE_INPUTS], fout, qout;
    char base[256];
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        if (v < 0) { /* an omitted optional input */
            ins[i] = -1;
            continue;
        }
        const mera_value *sv = mera_graph_value(g, v);
        if (sv->kind == MERA_VALUE_CONST || sv->kind == MERA_VALUE_PARAM) {
            ins[i] = note_float(c, sv->kind == MERA_VALUE_PARAM
                                       ? mera_graph_add_param_data(c->dst, sv->name, &sv->type, sv->data, c->err)
                                       : mera_graph_add_const(c->dst, sv->name, &sv->type, sv->data, 1, c->err),
                                v);
        } else if (c->qv[v] < 0) {
            return mera_fail(c->err, MERA_ERR_INVALID, "internal: value '%s' used before it is made", sv->name);
        } else if (mera_graph_value(c->dst, c->qv[v])->type.q.kind == MERA_QUANT_NONE) {
            ins[i] = c->qv[v];
        } else {
            snprintf(base, sizeof base, "%s.dequant", sv->name);
            if (mera_graph_add_node(c->dst, MERA_OP_DEQUANTIZE, mera_graph_unique_name(c->dst, base), &c->qv[v], 1,
                                    NULL, 0, node->source, &ins[i], 1, c->err) < 0)
                return c->err->code;
            ins[i] = note_float(c, ins[i], v);
        }
        if (ins[i] < 0)
            return c->err->code ? c->err->code : MERA_ERR_INVALID;
    }
    attr_list al;
    attrs_copy(&al, node);
    const char *name = mera_graph_find_value(c->dst, node->name) < 0 ? node->name
                                                                       : mera_graph_unique_name(c->dst, node->name);
    if (mera_graph_add_node(c->dst, node->op, name, ins, node->n_inputs, al.a, al.n, node->source, &fout, 1,
                            c->err) < 0 ||
        note_float(c, fout, node->outputs[0]) < 0)
        return c->err->code;
    if (mera_graph_value(c->dst, fout)->type.dtype != MERA_DTYPE_FLOAT32) {
        c->qv[node->outputs[0]] = fout; /* plain integers (topk's indices, matmul_integer's sums) stay as they are */
        return MERA_OK;
    }
    double scale;
    int32_t zp;
    mera_status st = act_qparams(c, node->outputs[0], &scale, &zp);
    if (st)
        return st;
    attr_list ql = {.n = 0};
    attrs_set_float(&ql, "scale", scale);
    attrs_set_int(&ql, "zero_point", zp);
    attrs_set_string(&ql, "dtype", "uint8");
    snprintf(base, sizeof base, "%s.quant", node->name);
    if (mera_graph_add_node(c->dst, MERA_OP_QUANTIZE, mera_graph_unique_name(c->dst, base), &fout, 1, ql.a, ql.n,
                            node->source, &qout, 1, c->err) < 0 ||
        note_float(c, qout, node->outputs[0]) < 0)
        return c->err->code;
    c->qv[node->outputs[0]] = qout;
    return MERA_OK;
}

static mera_status quant_node(quant_ctx *c, const use_info *u, int n, char *fused)
{
    const mera_graph *g = c->q->g;
    const mera_node *node = mera_graph_node(g, n);
    const mera_op_info *info = &mera_op_table[node->op];
    if (info->flags & MERA_OPF_FLOAT_IN)
        return quant_float_node(c, node);
    int ins[MERA_MAX_NODE_INPUTS], outs[MERA_MAX_NODE_OUTPUTS];
    for (int i = 0; i < node->n_inputs; i++)
        if ((ins[i] = quant_input(c, node, i)) < 0 && node->inputs[i] >= 0)
            return c->err->code ? c->err->code : MERA_ERR_INVALID;
    attr_list al;
    attrs_copy(&al, node);
    int out = node->outputs[0], stands_for = out, range_of = out;
    /* (a concat of int64 indices is no activation: it has no output parameters) */
    if ((info->flags & MERA_OPF_QOUT) && mera_graph_value(g, out)->type.dtype != MERA_DTYPE_INT64) {
        int m = sole_user(u, out);
        const mera_node *mn = m >= 0 ? mera_graph_node(g, m) : NULL;
        if (mn && c->q->cfg.fuse_relu && mn->op == MERA_OP_RELU && (info->flags & MERA_OPF_ACTIVATION) &&
            !strcmp(mera_attr_string(node, "activation"), "none")) {
            attrs_set_string(&al, "activation", "relu");
            fused[m] = 1;
            stands_for = range_of = mn->outputs[0];
        } else if (mn && (mn->op == MERA_OP_RELU || mn->op == MERA_OP_CLIP)) {
            range_of = mn->outputs[0]; /* the clamp that follows decides the useful range */
        }
        double scale;
        int32_t zp;
        mera_status st = act_qparams(c, range_of, &scale, &zp);
        if (st)
            return st;
        attrs_set_float(&al, "out_scale", scale);
        attrs_set_int(&al, "out_zero_point", zp);
        attrs_set_string(&al, "out_dtype", "uint8");
        if (node->op == MERA_OP_CONV2D)
            attrs_set_string(&al, "depthwise_saturate", "no");
        /* One formula whatever the import layout: PyTorch's channels-last one (the form every quantized
         * conv output takes in PyTorch). With "auto", an NCHW import would keep the contiguous formula
         * once the layout pass moves it to NHWC data, whose walk order the DNA's row tiles cannot follow
         * (kernels/split.c), so large elementwise layers would fall back to the host. */
        const char *mf = mera_attr_string(node, "torch_memory_format");
        if (mf && !strcmp(mf, "auto"))
            attrs_set_string(&al, "torch_memory_format", "channels_last");
    }
    const char *name = mera_graph_find_value(c->dst, node->name) < 0 ? node->name
                                                                       : mera_graph_unique_name(c->dst, node->name);
    if (mera_graph_add_node(c->dst, node->op, name, ins, node->n_inputs, al.a, al.n, node->source, outs,
                            MERA_MAX_NODE_OUTPUTS, c->err) < 0)
        return c->err->code;
    for (int o = 0; o < node->n_outputs; o++) {
        int fv = o == 0 ? stands_for : node->outputs[o];
        c->qv[node->outputs[o]] = outs[o];
        c->qv[fv] = outs[o];
        if (note_float(c, outs[o], fv) < 0)
            return c->err->code;
    }
    return MERA_OK;
}

mera_graph *mera_quantizer_quantize(const mera_quantizer *q, int **float_of, mera_error *err)
{
    return mera_quantizer_quantize_ranges(q, MERA_QUANT_RANGES_OBSERVER, float_of, err);
}

mera_graph *mera_quantizer_quantize_ranges(const mera_quantizer *q, mera_quant_ranges ranges, int **float_of,
                                           mera_error *err)
{
    if (float_of)
        *float_of = NULL;
    if (ranges == MERA_QUANT_RANGES_PERCENTILE && !q->pct) {
        mera_fail(err, MERA_ERR_INVALID, "percentile ranges: the quantizer keeps no percentile observers "
                                         "(config percentile_too)");
        return NULL;
    }
    if (!q->batches) {
        mera_fail(err, MERA_ERR_INVALID, "no calibration data: calibrate with at least one batch first");
        return NULL;
    }
    const mera_graph *g = q->g;
    int nv = mera_graph_num_values(g), nn = mera_graph_num_nodes(g);
    quant_ctx c = {q, mera_graph_new(mera_graph_name(g)), malloc((size_t)nv * sizeof(int)), NULL, 0, ranges, err};
    char *fused = calloc((size_t)nn + 1, 1);
    use_info u = {0};
    if (!c.dst || !c.qv || !fused) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    mera_graph_set_rounding(c.dst, mera_graph_rounding(g));
    if (use_info_build(g, &u, err))
        goto fail;
    for (int v = 0; v < nv; v++)
        c.qv[v] = -1;
    /* inputs: float at the boundary, quantized at once */
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i);
        const mera_value *sv = mera_graph_value(g, v);
        if (sv->kind != MERA_VALUE_INPUT)
            continue;
        int in = note_float(&c, mera_graph_add_input(c.dst, sv->name, &sv->type, err), v);
        if (in < 0)
            goto fail;
        if (!is_float(sv)) { /* an integer index input: it stays as it is */
            c.qv[v] = in;
            continue;
        }
        double scale;
        int32_t zp;
        if (act_qparams(&c, v, &scale, &zp))
            goto fail;
        attr_list al = {.n = 0};
        attrs_set_float(&al, "scale", scale);
        attrs_set_int(&al, "zero_point", zp);
        attrs_set_string(&al, "dtype", "uint8");
        char base[256];
        snprintf(base, sizeof base, "%s.quant", sv->name);
        int out;
        if (mera_graph_add_node(c.dst, MERA_OP_QUANTIZE, mera_graph_unique_name(c.dst, base), &in, 1, al.a, al.n,
                                NULL, &out, 1, err) < 0 ||
            note_float(&c, out, v) < 0)
            goto fail;
        c.qv[v] = out;
    }
    for (int n = 0; n < nn; n++)
        if (!fused[n] && quant_node(&c, &u, n, fused))
            goto fail;
    /* outputs: dequantized back to float (prepare refused more than 256) */
    int outs[256], n_out = mera_graph_num_outputs(g);
    for (int i = 0; i < n_out; i++) {
        int v = mera_graph_output(g, i), qv = c.qv[v];
        /* inputs and node outputs are made by now: what is left is a constant */
        if (qv < 0 && (qv = quant_const_activation(&c, v)) < 0)
            goto fail;
        const mera_value *val = mera_graph_value(c.dst, qv);
        if (val->type.q.kind == MERA_QUANT_NONE) {
            outs[i] = qv;
            continue;
        }
        char base[256];
        snprintf(base, sizeof base, "%s.dequant", mera_graph_value(g, v)->name);
        if (mera_graph_add_node(c.dst, MERA_OP_DEQUANTIZE, mera_graph_unique_name(c.dst, base), &qv, 1, NULL, 0,
                                NULL, &outs[i], 1, err) < 0 ||
            note_float(&c, outs[i], v) < 0)
            goto fail;
    }
    if (mera_graph_set_outputs(c.dst, outs, n_out, err))
        goto fail;
    if (float_of) {
        if (float_of_reserve(&c, mera_graph_num_values(c.dst)))
            goto fail;
        *float_of = c.float_of;
        c.float_of = NULL;
    }
    free(c.float_of);
    free(c.qv);
    free(fused);
    use_info_free(&u);
    return c.dst;
fail:
    free(c.float_of);
    free(c.qv);
    free(fused);
    use_info_free(&u);
    mera_graph_free(c.dst);
    return NULL;
}
