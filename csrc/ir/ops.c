/* The op table: inputs, attributes, and the verifier + type inference of
 * every op listed in ops.def. Messages say what is wrong; graph.c prefixes
 * them with the node name and op. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir/ir.h"

/* ---- helpers shared by the infer functions ----------------------------- */

#define FAIL(ctx, code, ...) mera_fail((ctx)->err, (code), __VA_ARGS__)

static const char *input_role(const mera_infer_ctx *ctx, int i)
{
    const mera_op_info *info = &mera_op_table[ctx->op];
    int n = info->max_inputs <= 10 ? info->max_inputs : 1; /* variadic ops (concat) have one name */
    if (i < n)
        return info->input_names[i];
    return info->input_names[0];
}

/* "input 1 (weight) 'conv1.weight'" */
static const char *in_desc(const mera_infer_ctx *ctx, int i, char *buf, size_t n)
{
    snprintf(buf, n, "input %d (%s) '%s'", i, input_role(ctx, i), ctx->in_names[i]);
    return buf;
}

static int64_t attr_i(const mera_infer_ctx *ctx, const char *key)
{
    const mera_attr *a = mera_attr_find(ctx->attrs, ctx->n_attrs, key);
    MERA_ASSERT(a && a->kind == MERA_ATTR_INT);
    return a->i;
}

static double attr_f(const mera_infer_ctx *ctx, const char *key)
{
    const mera_attr *a = mera_attr_find(ctx->attrs, ctx->n_attrs, key);
    MERA_ASSERT(a && a->kind == MERA_ATTR_FLOAT);
    return a->f;
}

static const int64_t *attr_is(const mera_infer_ctx *ctx, const char *key, int *count)
{
    const mera_attr *a = mera_attr_find(ctx->attrs, ctx->n_attrs, key);
    MERA_ASSERT(a && a->kind == MERA_ATTR_INTS);
    *count = a->count;
    return a->ints;
}

static const char *attr_s(const mera_infer_ctx *ctx, const char *key)
{
    const mera_attr *a = mera_attr_find(ctx->attrs, ctx->n_attrs, key);
    return a ? a->s : NULL;
}

static int is_float(const mera_type *t)
{
    return t->dtype == MERA_DTYPE_FLOAT32;
}

static mera_status require_rank(mera_infer_ctx *ctx, int i, int rank)
{
    char d[160], s[128];
    if (ctx->in[i]->rank != rank) {
        mera_shape_format(ctx->in[i]->shape, ctx->in[i]->rank, s, sizeof s);
        return FAIL(ctx, MERA_ERR_SHAPE, "%s must have rank %d, got shape %s",
                    in_desc(ctx, i, d, sizeof d), rank, s);
    }
    return MERA_OK;
}

static mera_status require_float(mera_infer_ctx *ctx, int i)
{
    char d[160];
    if (!is_float(ctx->in[i]))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be float32 like input 0, got %s",
                    in_desc(ctx, i, d, sizeof d), mera_dtype_name(ctx->in[i]->dtype));
    return MERA_OK;
}

/* Input i must be a per-tensor quantized int8/uint8 tensor. */
static mera_status require_per_tensor_q(mera_infer_ctx *ctx, int i)
{
    char d[160];
    const mera_type *t = ctx->in[i];
    if (!mera_dtype_is_quantized_int(t->dtype) || t->q.kind != MERA_QUANT_PER_TENSOR)
        return FAIL(ctx, MERA_ERR_DTYPE,
                    "%s must be a per-tensor quantized int8/uint8 tensor, got %s%s",
                    in_desc(ctx, i, d, sizeof d), mera_dtype_name(t->dtype),
                    t->q.kind == MERA_QUANT_PER_AXIS ? " with per-axis quantization"
                    : mera_dtype_is_quantized_int(t->dtype) ? " without quantization parameters"
                                                          : "");
    return MERA_OK;
}

/* The first input decides whether the op is float or quantized. Anything
 * else (int32, bf16, unquantized int8) is not an activation type. */
static mera_status check_activation(mera_infer_ctx *ctx, int i)
{
    const mera_type *t = ctx->in[i];
    char d[160];
    if (is_float(t))
        return MERA_OK;
    if (mera_dtype_is_quantized_int(t->dtype) && t->q.kind == MERA_QUANT_PER_TENSOR)
        return MERA_OK;
    return FAIL(ctx, MERA_ERR_DTYPE,
                "%s must be float32 or a per-tensor quantized int8/uint8 tensor, got %s%s",
                in_desc(ctx, i, d, sizeof d), mera_dtype_name(t->dtype),
                t->q.kind == MERA_QUANT_PER_AXIS ? " with per-axis quantization"
                : mera_dtype_is_quantized_int(t->dtype) ? " without quantization parameters"
                                                      : "");
}

/* Every activation input must have the same kind (float vs quantized) and
 * dtype as input 0. */
static mera_status check_same_activation_dtype(mera_infer_ctx *ctx, int first, int last)
{
    char d[160];
    for (int i = first; i <= last; i++) {
        if (!ctx->in[i])
            continue;
        mera_status st = check_activation(ctx, i);
        if (st)
            return st;
        if (ctx->in[i]->dtype != ctx->in[0]->dtype)
            return FAIL(ctx, MERA_ERR_DTYPE, "%s has dtype %s but input 0 has %s",
                        in_desc(ctx, i, d, sizeof d), mera_dtype_name(ctx->in[i]->dtype),
                        mera_dtype_name(ctx->in[0]->dtype));
    }
    return MERA_OK;
}

static mera_status check_zero_point(mera_infer_ctx *ctx, mera_dtype dt, int64_t zp, const char *what)
{
    int64_t lo = dt == MERA_DTYPE_UINT8 ? 0 : -128, hi = dt == MERA_DTYPE_UINT8 ? 255 : 127;
    if (zp < lo || zp > hi)
        return FAIL(ctx, MERA_ERR_ATTR, "%s %lld is out of range [%lld, %lld] for %s", what,
                    (long long)zp, (long long)lo, (long long)hi, mera_dtype_name(dt));
    return MERA_OK;
}

static mera_status check_scale(mera_infer_ctx *ctx, double s, const char *what)
{
    if (!(s > 0) || !isfinite(s))
        return FAIL(ctx, MERA_ERR_ATTR, "%s must be a positive finite number, got %g", what, s);
    return MERA_OK;
}

/* Output quantization for MERA_OPF_QOUT ops and requantize: out_dtype,
 * out_scale and out_zero_point when given, else those of input 0. Float
 * inputs must not carry out_* attributes. */
static mera_status set_output_quant(mera_infer_ctx *ctx, mera_type *out)
{
    const mera_attr *s = mera_attr_find(ctx->attrs, ctx->n_attrs, "out_scale");
    const mera_attr *z = mera_attr_find(ctx->attrs, ctx->n_attrs, "out_zero_point");
    const char *dts = attr_s(ctx, "out_dtype");
    const mera_type *x = ctx->in[0];
    if (is_float(x)) {
        if (s || z || dts)
            return FAIL(ctx, MERA_ERR_ATTR,
                        "out_scale/out_zero_point/out_dtype apply to quantized inputs, but input 0 '%s' is float32",
                        ctx->in_names[0]);
        out->dtype = MERA_DTYPE_FLOAT32;
        out->q.kind = MERA_QUANT_NONE;
        return MERA_OK;
    }
    if (!s != !z)
        return FAIL(ctx, MERA_ERR_ATTR, "out_scale and out_zero_point must be given together");
    out->dtype = x->dtype;
    if (dts)
        mera_dtype_parse(dts, &out->dtype); /* choices already validated */
    out->q.kind = MERA_QUANT_PER_TENSOR;
    out->q.count = 1;
    if (s) {
        mera_status st = check_scale(ctx, s->f, "out_scale");
        if (st)
            return st;
        st = check_zero_point(ctx, out->dtype, z->i, "out_zero_point");
        if (st)
            return st;
        out->q.scale = s->f;
        out->q.zero_point = (int32_t)z->i;
    } else {
        if (out->dtype != x->dtype)
            return FAIL(ctx, MERA_ERR_ATTR, "out_dtype %s differs from the input's %s, so out_scale and out_zero_point are required",
                        mera_dtype_name(out->dtype), mera_dtype_name(x->dtype));
        out->q.scale = x->q.scale;
        out->q.zero_point = x->q.zero_point;
    }
    return MERA_OK;
}

/* Output keeps input 0's dtype and quantization (relu, max pool, reshape...). */
static void keep_input_quant(mera_infer_ctx *ctx, mera_type *out)
{
    out->dtype = ctx->in[0]->dtype;
    out->q = ctx->in[0]->q;
}

static mera_layout data_layout(mera_infer_ctx *ctx)
{
    mera_layout l = MERA_LAYOUT_NCHW;
    mera_layout_parse(attr_s(ctx, "layout"), &l);
    return l;
}

/* Spatial ops: rank-4 input whose layout tag (if any) agrees with the
 * attribute. Fills N, C, H, W. */
static mera_status spatial_input(mera_infer_ctx *ctx, int64_t nchw[4])
{
    mera_status st = require_rank(ctx, 0, 4);
    if (st)
        return st;
    mera_layout l = data_layout(ctx);
    const mera_type *x = ctx->in[0];
    char d[160];
    if (x->layout != MERA_LAYOUT_ANY && x->layout != l)
        return FAIL(ctx, MERA_ERR_SHAPE, "%s has layout %s but the op's layout attribute is %s",
                    in_desc(ctx, 0, d, sizeof d), mera_layout_name(x->layout), mera_layout_name(l));
    if (l == MERA_LAYOUT_NCHW) {
        for (int i = 0; i < 4; i++)
            nchw[i] = x->shape[i];
    } else {
        nchw[0] = x->shape[0];
        nchw[1] = x->shape[3];
        nchw[2] = x->shape[1];
        nchw[3] = x->shape[2];
    }
    return MERA_OK;
}

static void spatial_output(mera_infer_ctx *ctx, mera_type *out, int64_t n, int64_t c, int64_t h, int64_t w)
{
    mera_layout l = data_layout(ctx);
    out->rank = 4;
    out->layout = l;
    if (l == MERA_LAYOUT_NCHW) {
        out->shape[0] = n; out->shape[1] = c; out->shape[2] = h; out->shape[3] = w;
    } else {
        out->shape[0] = n; out->shape[1] = h; out->shape[2] = w; out->shape[3] = c;
    }
}

static mera_status check_positive(mera_infer_ctx *ctx, const char *key, const int64_t *v, int n)
{
    for (int i = 0; i < n; i++)
        if (v[i] < 1)
            return FAIL(ctx, MERA_ERR_ATTR, "%s[%d] must be >= 1, got %lld", key, i, (long long)v[i]);
    return MERA_OK;
}

static mera_status check_nonnegative(mera_infer_ctx *ctx, const char *key, const int64_t *v, int n)
{
    for (int i = 0; i < n; i++)
        if (v[i] < 0)
            return FAIL(ctx, MERA_ERR_ATTR, "%s[%d] must be >= 0, got %lld", key, i, (long long)v[i]);
    return MERA_OK;
}

static int normalize_axis(int64_t axis, int rank, int64_t *out)
{
    if (axis < -rank || axis >= rank)
        return 0;
    *out = axis < 0 ? axis + rank : axis;
    return 1;
}

/* ---- attribute lists shared by several ops ----------------------------- */

/* PyTorch computes several quantized ops (elementwise, concat, average
 * pooling, mean, upsampling) with different formulas or vector splits for
 * channels-last and contiguous tensors. A model
 * imported as NCHW may hold channels-last tensors in PyTorch (every quantized
 * conv output is channels-last), so the formula is an attribute of its own.
 * auto: channels-last exactly when the data is NHWC (the layout attribute,
 * or the input's layout tag for ops without one). */
#define TORCH_MEMORY_FORMAT_ATTR                                                               \
    {"torch_memory_format", MERA_ATTR_STRING, 0, 0, "auto|channels_last|contiguous", "auto", \
     "which of PyTorch's quantized formulas to follow (see docs/numerics.md)"}

#define QOUT_ATTRS                                                                           \
    {"out_scale", MERA_ATTR_FLOAT, 0, 0, NULL, NULL, "output scale (quantized form only)"}, \
    {"out_zero_point", MERA_ATTR_INT, 0, 0, NULL, NULL, "output zero point (quantized form only)"}, \
    {"out_dtype", MERA_ATTR_STRING, 0, 0, "uint8|int8", NULL, "output dtype (quantized form only; default: the input's)"}

#define LAYOUT_ATTR \
    {"layout", MERA_ATTR_STRING, 0, 0, "NCHW|NHWC", "NCHW", "data layout of input and output"}

#define ACTIVATION_ATTR \
    {"activation", MERA_ATTR_STRING, 0, 0, "none|relu", "none", "fused activation applied before quantizing the output"}

#define END_ATTRS {NULL, 0, 0, 0, NULL, NULL, NULL}

/* ---- conv2d ------------------------------------------------------------ */

static const char *const inputs_conv2d[] = {"data", "weight", "bias"};
static const mera_attr_spec attrs_conv2d[] = {
    {"strides", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "stride (h, w)"},
    {"padding", MERA_ATTR_INTS, 0, 4, NULL, "[0,0,0,0]", "padding (top, left, bottom, right)"},
    {"dilation", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "dilation (h, w)"},
    {"groups", MERA_ATTR_INT, 0, 0, NULL, "1", "number of groups; groups == channels is depthwise"},
    LAYOUT_ATTR,
    {"kernel_layout", MERA_ATTR_STRING, 0, 0, "OIHW|OHWI|HWIO", "OIHW", "weight layout"},
    {"depthwise_saturate", MERA_ATTR_STRING, 0, 0, "auto|yes|no", "auto",
     "quantized form: whether depthwise pair sums saturate to int16 as fbgemm's depthwise fast path does; "
     "\"auto\" decides from the layer's geometry as PyTorch does; the DNA scheduler sets yes/no on tiles of a "
     "layer, whose own padding-free geometry cannot tell"},
    ACTIVATION_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};

static int weight_out_axis(mera_layout kl)
{
    return kl == MERA_LAYOUT_HWIO ? 3 : 0;
}

/* Weight and bias checks shared by conv2d and dense. */
static mera_status check_weight_bias(mera_infer_ctx *ctx, int out_axis, int64_t out_features)
{
    const mera_type *x = ctx->in[0], *w = ctx->in[1], *b = ctx->in[2];
    char d[160];
    if (is_float(x)) {
        mera_status st = require_float(ctx, 1);
        if (st)
            return st;
    } else {
        if (w->dtype != MERA_DTYPE_INT8 || w->q.kind == MERA_QUANT_NONE)
            return FAIL(ctx, MERA_ERR_DTYPE,
                        "%s must be a quantized int8 tensor because input 0 is quantized, got %s%s",
                        in_desc(ctx, 1, d, sizeof d), mera_dtype_name(w->dtype),
                        w->q.kind == MERA_QUANT_NONE && w->dtype == MERA_DTYPE_INT8
                            ? " without quantization parameters" : "");
        if (w->q.kind == MERA_QUANT_PER_AXIS && w->q.axis != out_axis)
            return FAIL(ctx, MERA_ERR_DTYPE,
                        "%s is quantized per axis %d, but per-channel weights must be quantized along the output-channel axis %d",
                        in_desc(ctx, 1, d, sizeof d), w->q.axis, out_axis);
    }
    if (b) {
        if (!is_float(b))
            return FAIL(ctx, MERA_ERR_DTYPE, "%s must be float32 (the bias stays float, as in PyTorch), got %s",
                        in_desc(ctx, 2, d, sizeof d), mera_dtype_name(b->dtype));
        if (b->rank != 1 || b->shape[0] != out_features) {
            char s[128];
            mera_shape_format(b->shape, b->rank, s, sizeof s);
            return FAIL(ctx, MERA_ERR_SHAPE, "%s must have shape [%lld], got %s",
                        in_desc(ctx, 2, d, sizeof d), (long long)out_features, s);
        }
    }
    return MERA_OK;
}

static mera_status infer_conv2d(mera_infer_ctx *ctx)
{
    mera_status st;
    int64_t x[4];
    if ((st = check_activation(ctx, 0)) || (st = spatial_input(ctx, x)) || (st = require_rank(ctx, 1, 4)))
        return st;
    int n = 0;
    const int64_t *strides = attr_is(ctx, "strides", &n);
    const int64_t *pad = attr_is(ctx, "padding", &n);
    const int64_t *dil = attr_is(ctx, "dilation", &n);
    int64_t groups = attr_i(ctx, "groups");
    if ((st = check_positive(ctx, "strides", strides, 2)) || (st = check_positive(ctx, "dilation", dil, 2)) ||
        (st = check_nonnegative(ctx, "padding", pad, 4)))
        return st;
    mera_layout kl = MERA_LAYOUT_OIHW;
    mera_layout_parse(attr_s(ctx, "kernel_layout"), &kl);
    const mera_type *w = ctx->in[1];
    char d[160], s[128];
    if (w->layout != MERA_LAYOUT_ANY && w->layout != kl)
        return FAIL(ctx, MERA_ERR_SHAPE, "%s has layout %s but kernel_layout is %s",
                    in_desc(ctx, 1, d, sizeof d), mera_layout_name(w->layout), mera_layout_name(kl));
    int64_t O, I, KH, KW;
    if (kl == MERA_LAYOUT_OIHW) {
        O = w->shape[0]; I = w->shape[1]; KH = w->shape[2]; KW = w->shape[3];
    } else if (kl == MERA_LAYOUT_OHWI) {
        O = w->shape[0]; KH = w->shape[1]; KW = w->shape[2]; I = w->shape[3];
    } else {
        KH = w->shape[0]; KW = w->shape[1]; I = w->shape[2]; O = w->shape[3];
    }
    if (groups < 1 || x[1] % groups != 0 || O % groups != 0)
        return FAIL(ctx, MERA_ERR_ATTR,
                    "groups=%lld must be >= 1 and divide both the %lld input channels and the %lld output channels",
                    (long long)groups, (long long)x[1], (long long)O);
    if (I * groups != x[1]) {
        mera_shape_format(w->shape, 4, s, sizeof s);
        return FAIL(ctx, MERA_ERR_SHAPE,
                    "%s has shape %s (%s): %lld input channels per group, but the data has %lld channels and groups=%lld",
                    in_desc(ctx, 1, d, sizeof d), s, mera_layout_name(kl), (long long)I,
                    (long long)x[1], (long long)groups);
    }
    if ((st = check_weight_bias(ctx, weight_out_axis(kl), O)))
        return st;
    int64_t eh = dil[0] * (KH - 1) + 1, ew = dil[1] * (KW - 1) + 1;
    int64_t hp = x[2] + pad[0] + pad[2], wp = x[3] + pad[1] + pad[3];
    if (KH < 1 || KW < 1 || eh > hp || ew > wp)
        return FAIL(ctx, MERA_ERR_SHAPE,
                    "the %lldx%lld kernel (dilated %lldx%lld) does not fit the %lldx%lld input padded to %lldx%lld",
                    (long long)KH, (long long)KW, (long long)eh, (long long)ew, (long long)x[2],
                    (long long)x[3], (long long)hp, (long long)wp);
    mera_type *out = &ctx->out[0];
    spatial_output(ctx, out, x[0], O, (hp - eh) / strides[0] + 1, (wp - ew) / strides[1] + 1);
    return set_output_quant(ctx, out);
}

/* ---- dense ------------------------------------------------------------- */

static const char *const inputs_dense[] = {"data", "weight", "bias"};
static const mera_attr_spec attrs_dense[] = {
    ACTIVATION_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};

static mera_status infer_dense(mera_infer_ctx *ctx)
{
    mera_status st;
    if ((st = check_activation(ctx, 0)) || (st = require_rank(ctx, 1, 2)))
        return st;
    const mera_type *x = ctx->in[0], *w = ctx->in[1];
    char d[160], s[128], s2[128];
    if (x->rank < 1 || x->shape[x->rank - 1] != w->shape[1]) {
        mera_shape_format(x->shape, x->rank, s, sizeof s);
        mera_shape_format(w->shape, w->rank, s2, sizeof s2);
        return FAIL(ctx, MERA_ERR_SHAPE,
                    "%s has shape %s [out_features, in_features], which does not match the %s features of data shape %s",
                    in_desc(ctx, 1, d, sizeof d), s2, x->rank ? "last-axis" : "(no)", s);
    }
    if ((st = check_weight_bias(ctx, 0, w->shape[0])))
        return st;
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->shape[x->rank - 1] = w->shape[0];
    out->layout = MERA_LAYOUT_ANY;
    return set_output_quant(ctx, out);
}

/* ---- add, mul ---------------------------------------------------------- */

static mera_status broadcast(mera_infer_ctx *ctx, mera_type *out)
{
    const mera_type *a = ctx->in[0], *b = ctx->in[1];
    int rank = a->rank > b->rank ? a->rank : b->rank;
    *out = a->rank >= b->rank ? *a : *b;
    out->rank = rank;
    for (int i = 0; i < rank; i++) {
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char s[128], s2[128];
            mera_shape_format(a->shape, a->rank, s, sizeof s);
            mera_shape_format(b->shape, b->rank, s2, sizeof s2);
            return FAIL(ctx, MERA_ERR_SHAPE, "shapes %s ('%s') and %s ('%s') do not broadcast (axis %d: %lld vs %lld)",
                        s, ctx->in_names[0], s2, ctx->in_names[1], i, (long long)da, (long long)db);
        }
        out->shape[i] = da == 1 ? db : da;
    }
    if (a->layout != b->layout && a->rank == b->rank)
        out->layout = MERA_LAYOUT_ANY;
    return MERA_OK;
}

static const char *const inputs_add[] = {"lhs", "rhs"};
static const mera_attr_spec attrs_add[] = {ACTIVATION_ATTR, TORCH_MEMORY_FORMAT_ATTR, QOUT_ATTRS, END_ATTRS};

static mera_status infer_binary(mera_infer_ctx *ctx)
{
    mera_status st;
    if ((st = check_same_activation_dtype(ctx, 0, 1)) || (st = broadcast(ctx, &ctx->out[0])))
        return st;
    return set_output_quant(ctx, &ctx->out[0]);
}

static mera_status infer_add(mera_infer_ctx *ctx) { return infer_binary(ctx); }

static const char *const inputs_mul[] = {"lhs", "rhs"};
static const mera_attr_spec attrs_mul[] = {ACTIVATION_ATTR, TORCH_MEMORY_FORMAT_ATTR, QOUT_ATTRS, END_ATTRS};
static mera_status infer_mul(mera_infer_ctx *ctx) { return infer_binary(ctx); }

/* ---- concat ------------------------------------------------------------ */

static const char *const inputs_concat[] = {"inputs"};
static const mera_attr_spec attrs_concat[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "1", "axis to join along; negative counts from the end"},
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};

static mera_status infer_concat(mera_infer_ctx *ctx)
{
    mera_status st;
    int indices = ctx->in[0]->dtype == MERA_DTYPE_INT64; /* plain int64 (indices, NonMaxSuppression's rows) */
    for (int i = 1; indices && i < ctx->n_inputs; i++)
        if (ctx->in[i]->dtype != MERA_DTYPE_INT64) {
            char d[160];
            return FAIL(ctx, MERA_ERR_DTYPE, "%s is %s but input 0 is int64", in_desc(ctx, i, d, sizeof d),
                        mera_dtype_name(ctx->in[i]->dtype));
        }
    if (!indices && (st = check_same_activation_dtype(ctx, 0, ctx->n_inputs - 1)))
        return st;
    const mera_type *a = ctx->in[0];
    int64_t axis;
    if (!normalize_axis(attr_i(ctx, "axis"), a->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d",
                    (long long)attr_i(ctx, "axis"), a->rank);
    mera_type *out = &ctx->out[0];
    *out = *a;
    for (int i = 1; i < ctx->n_inputs; i++) {
        const mera_type *b = ctx->in[i];
        int ok = b->rank == a->rank;
        for (int k = 0; ok && k < a->rank; k++)
            ok = k == axis || b->shape[k] == a->shape[k];
        if (!ok) {
            char s[128], s2[128], d[160];
            mera_shape_format(a->shape, a->rank, s, sizeof s);
            mera_shape_format(b->shape, b->rank, s2, sizeof s2);
            return FAIL(ctx, MERA_ERR_SHAPE, "%s has shape %s, which does not match input 0's %s except on axis %lld",
                        in_desc(ctx, i, d, sizeof d), s2, s, (long long)axis);
        }
        out->shape[axis] += b->shape[axis];
        if (b->layout != a->layout)
            out->layout = MERA_LAYOUT_ANY;
    }
    if (indices) {
        if (mera_attr_find(ctx->attrs, ctx->n_attrs, "out_scale") || attr_s(ctx, "out_dtype"))
            return FAIL(ctx, MERA_ERR_ATTR, "out_scale/out_zero_point/out_dtype apply to quantized inputs, but "
                        "input 0 '%s' is int64", ctx->in_names[0]);
        return MERA_OK;
    }
    return set_output_quant(ctx, out);
}

/* ---- unary elementwise ------------------------------------------------- */

static mera_status infer_unary_keep(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    ctx->out[0] = *ctx->in[0];
    return MERA_OK;
}

static mera_status infer_unary_qout(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    ctx->out[0] = *ctx->in[0];
    return set_output_quant(ctx, &ctx->out[0]);
}

static const char *const inputs_relu[] = {"data"};
static const mera_attr_spec attrs_relu[] = {END_ATTRS};
static mera_status infer_relu(mera_infer_ctx *ctx) { return infer_unary_keep(ctx); }

static const char *const inputs_clip[] = {"data"};
static const mera_attr_spec attrs_clip[] = {
    {"a_min", MERA_ATTR_FLOAT, 1, 0, NULL, NULL, "lower bound (real value)"},
    {"a_max", MERA_ATTR_FLOAT, 1, 0, NULL, NULL, "upper bound (real value)"},
    END_ATTRS,
};
static mera_status infer_clip(mera_infer_ctx *ctx)
{
    double lo = attr_f(ctx, "a_min"), hi = attr_f(ctx, "a_max");
    if (!(lo <= hi))
        return FAIL(ctx, MERA_ERR_ATTR, "a_min %g must not exceed a_max %g", lo, hi);
    return infer_unary_keep(ctx);
}

static const char *const inputs_leaky_relu[] = {"data"};
static const mera_attr_spec attrs_leaky_relu[] = {
    {"alpha", MERA_ATTR_FLOAT, 0, 0, NULL, "0.01", "slope for negative inputs"},
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_leaky_relu(mera_infer_ctx *ctx) { return infer_unary_qout(ctx); }

static const char *const inputs_hardswish[] = {"data"};
static const mera_attr_spec attrs_hardswish[] = {TORCH_MEMORY_FORMAT_ATTR, QOUT_ATTRS, END_ATTRS};
static mera_status infer_hardswish(mera_infer_ctx *ctx) { return infer_unary_qout(ctx); }

static const char *const inputs_hardsigmoid[] = {"data"};
static const mera_attr_spec attrs_hardsigmoid[] = {TORCH_MEMORY_FORMAT_ATTR, QOUT_ATTRS, END_ATTRS};
static mera_status infer_hardsigmoid(mera_infer_ctx *ctx) { return infer_unary_qout(ctx); }

static const char *const inputs_sigmoid[] = {"data"};
static const mera_attr_spec attrs_sigmoid[] = {
    TORCH_MEMORY_FORMAT_ATTR,
    {"float_form", MERA_ATTR_STRING, 0, 0, "torch|onnxruntime", "torch",
     "the float32 kernel: PyTorch's (Sleef exp) or onnxruntime's (MLAS's rational approximation, FMA); "
     "the quantized kernel is fbgemm's either way"},
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_sigmoid(mera_infer_ctx *ctx) { return infer_unary_qout(ctx); }

/* ---- pooling ----------------------------------------------------------- */

/* PyTorch's pooling_output_shape (aten/src/ATen/native/Pool.h). */
static int64_t pool_out_size(int64_t in, int64_t k, int64_t pad_lo, int64_t pad_hi, int64_t stride,
                             int64_t dil, int ceil_mode)
{
    int64_t span = in + pad_lo + pad_hi - dil * (k - 1) - 1;
    int64_t out = (span + (ceil_mode ? stride - 1 : 0)) / stride + 1;
    if (ceil_mode && (out - 1) * stride >= in + pad_lo)
        out--;
    return out;
}

static mera_status infer_pool(mera_infer_ctx *ctx, int has_dilation)
{
    mera_status st;
    int64_t x[4];
    if ((st = check_activation(ctx, 0)) || (st = spatial_input(ctx, x)))
        return st;
    int n = 0;
    const int64_t *k = attr_is(ctx, "kernel", &n);
    const int64_t *s = attr_is(ctx, "strides", &n);
    const int64_t *p = attr_is(ctx, "padding", &n);
    int64_t one[2] = {1, 1};
    const int64_t *dil = has_dilation ? attr_is(ctx, "dilation", &n) : one;
    if ((st = check_positive(ctx, "kernel", k, 2)) || (st = check_positive(ctx, "strides", s, 2)) ||
        (st = check_positive(ctx, "dilation", dil, 2)) || (st = check_nonnegative(ctx, "padding", p, 4)))
        return st;
    for (int i = 0; i < 2; i++)
        if (p[i] > k[i] / 2 || p[i + 2] > k[i] / 2)
            return FAIL(ctx, MERA_ERR_ATTR, "padding must be at most half the kernel size (kernel %lld, padding %lld/%lld)",
                        (long long)k[i], (long long)p[i], (long long)p[i + 2]);
    int ceil_mode = attr_i(ctx, "ceil_mode") != 0;
    int64_t oh = pool_out_size(x[2], k[0], p[0], p[2], s[0], dil[0], ceil_mode);
    int64_t ow = pool_out_size(x[3], k[1], p[1], p[3], s[1], dil[1], ceil_mode);
    if (oh < 1 || ow < 1)
        return FAIL(ctx, MERA_ERR_SHAPE, "the %lldx%lld window does not fit the %lldx%lld input",
                    (long long)k[0], (long long)k[1], (long long)x[2], (long long)x[3]);
    spatial_output(ctx, &ctx->out[0], x[0], x[1], oh, ow);
    return MERA_OK;
}

#define POOL_ATTRS                                                                         \
    {"kernel", MERA_ATTR_INTS, 1, 2, NULL, NULL, "window (h, w)"},                         \
    {"strides", MERA_ATTR_INTS, 1, 2, NULL, NULL, "stride (h, w)"},                        \
    {"padding", MERA_ATTR_INTS, 0, 4, NULL, "[0,0,0,0]", "padding (top, left, bottom, right)"}, \
    {"ceil_mode", MERA_ATTR_INT, 0, 0, NULL, "0", "round the output size up"},             \
    LAYOUT_ATTR

static const char *const inputs_max_pool2d[] = {"data"};
static const mera_attr_spec attrs_max_pool2d[] = {
    POOL_ATTRS,
    {"dilation", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "dilation (h, w)"},
    END_ATTRS,
};
static mera_status infer_max_pool2d(mera_infer_ctx *ctx)
{
    mera_status st = infer_pool(ctx, 1);
    if (!st)
        keep_input_quant(ctx, &ctx->out[0]);
    return st;
}

static const char *const inputs_avg_pool2d[] = {"data"};
static const mera_attr_spec attrs_avg_pool2d[] = {
    POOL_ATTRS,
    {"count_include_pad", MERA_ATTR_INT, 0, 0, NULL, "1", "count padded positions in the divisor"},
    {"divisor_override", MERA_ATTR_INT, 0, 0, NULL, "0", "divide by this instead (0: off)"},
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_avg_pool2d(mera_infer_ctx *ctx)
{
    mera_status st = infer_pool(ctx, 0);
    if (st)
        return st;
    if (attr_i(ctx, "divisor_override") < 0)
        return FAIL(ctx, MERA_ERR_ATTR, "divisor_override must be >= 0");
    return set_output_quant(ctx, &ctx->out[0]);
}

static const char *const inputs_adaptive_avg_pool2d[] = {"data"};
static const mera_attr_spec attrs_adaptive_avg_pool2d[] = {
    {"output_size", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "output (h, w); [1,1] is global average pooling"},
    LAYOUT_ATTR,
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_adaptive_avg_pool2d(mera_infer_ctx *ctx)
{
    mera_status st;
    int64_t x[4];
    if ((st = check_activation(ctx, 0)) || (st = spatial_input(ctx, x)))
        return st;
    int n = 0;
    const int64_t *os = attr_is(ctx, "output_size", &n);
    if ((st = check_positive(ctx, "output_size", os, 2)))
        return st;
    spatial_output(ctx, &ctx->out[0], x[0], x[1], os[0], os[1]);
    return set_output_quant(ctx, &ctx->out[0]);
}

/* ---- mean -------------------------------------------------------------- */

static const char *const inputs_mean[] = {"data"};
static const mera_attr_spec attrs_mean[] = {
    {"axes", MERA_ATTR_INTS, 1, 0, NULL, NULL, "axes to average over"},
    {"keepdims", MERA_ATTR_INT, 0, 0, NULL, "0", "keep reduced axes with size 1"},
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
/* The output of a reduction of input 0 over attribute `axes` (each once, in range), with `keepdims`:
 * out[0] is the input's type with those axes removed or of size 1. mean and reduce share it. */
static mera_status infer_reduced_axes(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    int n = 0;
    const int64_t *axes = attr_is(ctx, "axes", &n);
    int reduce[MERA_MAX_RANK] = {0};
    if (n < 1)
        return FAIL(ctx, MERA_ERR_ATTR, "axes must name at least one axis");
    for (int i = 0; i < n; i++) {
        int64_t a;
        if (!normalize_axis(axes[i], x->rank, &a))
            return FAIL(ctx, MERA_ERR_ATTR, "axes[%d] = %lld is out of range for rank %d", i,
                        (long long)axes[i], x->rank);
        if (reduce[a])
            return FAIL(ctx, MERA_ERR_ATTR, "axes names axis %lld twice", (long long)a);
        reduce[a] = 1;
    }
    int keep = attr_i(ctx, "keepdims") != 0;
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->rank = 0;
    for (int i = 0; i < x->rank; i++) {
        if (!reduce[i])
            out->shape[out->rank++] = x->shape[i];
        else if (keep)
            out->shape[out->rank++] = 1;
    }
    if (!keep)
        out->layout = MERA_LAYOUT_ANY;
    return MERA_OK;
}

static mera_status infer_mean(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st || (st = infer_reduced_axes(ctx)))
        return st;
    return set_output_quant(ctx, &ctx->out[0]);
}

/* ---- shape ops ---------------------------------------------------------- */

static const char *const inputs_flatten[] = {"data"};
static const mera_attr_spec attrs_flatten[] = {
    {"start_axis", MERA_ATTR_INT, 0, 0, NULL, "1", "first axis to merge"},
    {"end_axis", MERA_ATTR_INT, 0, 0, NULL, "-1", "last axis to merge"},
    END_ATTRS,
};
static mera_status infer_flatten(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    int rank = x->rank ? x->rank : 1;
    int64_t s, e;
    if (!normalize_axis(attr_i(ctx, "start_axis"), rank, &s) || !normalize_axis(attr_i(ctx, "end_axis"), rank, &e) || s > e)
        return FAIL(ctx, MERA_ERR_ATTR, "start_axis %lld and end_axis %lld do not name a range of axes of a rank-%d tensor",
                    (long long)attr_i(ctx, "start_axis"), (long long)attr_i(ctx, "end_axis"), x->rank);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->rank = 0;
    int64_t merged = 1;
    for (int i = 0; i < x->rank; i++) {
        if (i < s || i > e)
            out->shape[out->rank++] = x->shape[i];
        else {
            merged *= x->shape[i];
            if (i == e)
                out->shape[out->rank++] = merged;
        }
    }
    if (x->rank == 0)
        out->shape[out->rank++] = 1;
    out->layout = MERA_LAYOUT_ANY;
    return MERA_OK;
}

static const char *const inputs_reshape[] = {"data"};
static const mera_attr_spec attrs_reshape[] = {
    {"shape", MERA_ATTR_INTS, 1, 0, NULL, NULL, "new shape; one entry may be -1"},
    END_ATTRS,
};
static mera_status infer_reshape(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    int n = 0;
    const int64_t *shape = attr_is(ctx, "shape", &n);
    if (n > MERA_MAX_RANK)
        return FAIL(ctx, MERA_ERR_ATTR, "shape has %d axes; at most %d are supported", n, MERA_MAX_RANK);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->rank = n;
    out->layout = MERA_LAYOUT_ANY;
    int infer_at = -1;
    int64_t known = 1, total = mera_type_numel(x);
    for (int i = 0; i < n; i++) {
        if (shape[i] == -1) {
            if (infer_at >= 0)
                return FAIL(ctx, MERA_ERR_ATTR, "shape has more than one -1");
            infer_at = i;
        } else if (shape[i] < 0) {
            return FAIL(ctx, MERA_ERR_ATTR, "shape[%d] = %lld is negative", i, (long long)shape[i]);
        } else {
            if (shape[i] > 0 && known > INT64_MAX / shape[i])
                return FAIL(ctx, MERA_ERR_SHAPE, "shape[%d] = %lld: the shape's element count overflows int64", i,
                            (long long)shape[i]);
            known *= shape[i];
        }
        out->shape[i] = shape[i];
    }
    if (infer_at >= 0 && known > 0 && total % known == 0)
        out->shape[infer_at] = total / known;
    if (mera_type_numel(out) != total || (infer_at >= 0 && known == 0)) {
        char s[128], s2[128];
        mera_shape_format(x->shape, x->rank, s, sizeof s);
        mera_shape_format(shape, n, s2, sizeof s2);
        return FAIL(ctx, MERA_ERR_SHAPE, "cannot reshape %s (%lld elements) to %s", s, (long long)total, s2);
    }
    return MERA_OK;
}

static const char *const inputs_transpose[] = {"data"};
static const mera_attr_spec attrs_transpose[] = {
    {"axes", MERA_ATTR_INTS, 1, 0, NULL, NULL, "permutation: output axis i is input axis axes[i]"},
    END_ATTRS,
};
static mera_status infer_transpose(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    int n = 0;
    const int64_t *axes = attr_is(ctx, "axes", &n);
    int seen[MERA_MAX_RANK] = {0};
    if (n != x->rank)
        return FAIL(ctx, MERA_ERR_ATTR, "axes has %d entries but the input has rank %d", n, x->rank);
    mera_type *out = &ctx->out[0];
    *out = *x;
    for (int i = 0; i < n; i++) {
        int64_t a;
        if (!normalize_axis(axes[i], x->rank, &a) || seen[a]++)
            return FAIL(ctx, MERA_ERR_ATTR, "axes is not a permutation of 0..%d", x->rank - 1);
        out->shape[i] = x->shape[a];
    }
    out->layout = MERA_LAYOUT_ANY;
    if (x->rank == 4 && axes[0] == 0) {
        if (x->layout == MERA_LAYOUT_NCHW && axes[1] == 2 && axes[2] == 3 && axes[3] == 1)
            out->layout = MERA_LAYOUT_NHWC;
        if (x->layout == MERA_LAYOUT_NHWC && axes[1] == 3 && axes[2] == 1 && axes[3] == 2)
            out->layout = MERA_LAYOUT_NCHW;
    }
    if (x->q.kind == MERA_QUANT_PER_AXIS) {
        for (int i = 0; i < n; i++)
            if (axes[i] == x->q.axis)
                out->q.axis = i;
    }
    return MERA_OK;
}

static const char *const inputs_slice[] = {"data"};
static const mera_attr_spec attrs_slice[] = {
    {"axis", MERA_ATTR_INT, 1, 0, NULL, NULL, "axis to slice; negative counts from the end"},
    {"begin", MERA_ATTR_INT, 1, 0, NULL, NULL, "first index kept"},
    {"end", MERA_ATTR_INT, 1, 0, NULL, NULL, "one past the last index kept"},
    {"step", MERA_ATTR_INT, 0, 0, NULL, "1", "distance between kept indices (>= 1): begin, begin+step, ... < end"},
    END_ATTRS,
};
static mera_status infer_slice(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    int64_t axis, b = attr_i(ctx, "begin"), e = attr_i(ctx, "end"), step = attr_i(ctx, "step");
    if (step < 1)
        return FAIL(ctx, MERA_ERR_ATTR, "step = %lld; mera's slice takes steps >= 1", (long long)step);
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    if (b < 0 || e > x->shape[axis] || b >= e)
        return FAIL(ctx, MERA_ERR_ATTR, "[begin, end) = [%lld, %lld) is not a non-empty range of axis %lld (size %lld)",
                    (long long)b, (long long)e, (long long)axis, (long long)x->shape[axis]);
    if (x->q.kind == MERA_QUANT_PER_AXIS && x->q.axis == axis)
        return FAIL(ctx, MERA_ERR_UNSUPPORTED, "slicing along the per-axis quantization axis is not supported");
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->shape[axis] = (e - b + step - 1) / step;
    return MERA_OK;
}

static const char *const inputs_pad[] = {"data"};
static const mera_attr_spec attrs_pad[] = {
    {"pads", MERA_ATTR_INTS, 1, 0, NULL, NULL, "[begin_0, ..., begin_n-1, end_0, ..., end_n-1] (ONNX order)"},
    {"value", MERA_ATTR_FLOAT, 0, 0, NULL, "0", "fill value (real value; quantized with the input's parameters)"},
    END_ATTRS,
};
static mera_status infer_pad(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    const mera_type *x = ctx->in[0];
    int n = 0;
    const int64_t *pads = attr_is(ctx, "pads", &n);
    if (n != 2 * x->rank)
        return FAIL(ctx, MERA_ERR_ATTR, "pads has %d entries; a rank-%d input needs %d", n, x->rank, 2 * x->rank);
    if ((st = check_nonnegative(ctx, "pads", pads, n)))
        return st;
    mera_type *out = &ctx->out[0];
    *out = *x;
    for (int i = 0; i < x->rank; i++)
        out->shape[i] = x->shape[i] + pads[i] + pads[i + x->rank];
    return MERA_OK;
}

/* ---- upsample ---------------------------------------------------------- */

static const char *const inputs_upsample[] = {"data"};
static const mera_attr_spec attrs_upsample[] = {
    {"method", MERA_ATTR_STRING, 0, 0, "nearest|bilinear|cubic", "nearest", "interpolation (cubic: ONNX coordinate modes only)"},
    {"cubic_coeff_a", MERA_ATTR_FLOAT, 0, 0, NULL, "-0.75", "cubic: Keys' coefficient A"},
    {"exclude_outside", MERA_ATTR_INT, 0, 0, NULL, "0", "cubic: drop taps outside the input, renormalize"},
    {"size", MERA_ATTR_INTS, 0, 2, NULL, NULL, "output (h, w); give size or scales"},
    {"scales", MERA_ATTR_FLOATS, 0, 2, NULL, NULL, "scale factors (h, w); give size or scales"},
    {"align_corners", MERA_ATTR_INT, 0, 0, NULL, "0", "bilinear: align corner pixels (coordinate_mode torch)"},
    {"coordinate_mode", MERA_ATTR_STRING, 0, 0,
     "torch|half_pixel|pytorch_half_pixel|align_corners|asymmetric|half_pixel_symmetric|tf_half_pixel_for_nn|"
     "tf_crop_and_resize", "torch",
     "source coordinates: PyTorch's arithmetic, or an ONNX Resize coordinate_transformation_mode (onnxruntime's)"},
    {"nearest_mode", MERA_ATTR_STRING, 0, 0, "floor|ceil|round_prefer_floor|round_prefer_ceil", "floor",
     "nearest, ONNX modes: how a source coordinate becomes a pixel"},
    {"roi", MERA_ATTR_FLOATS, 0, 4, NULL, NULL, "tf_crop_and_resize: (h_start, w_start, h_end, w_end), normalized"},
    {"extrapolation_value", MERA_ATTR_FLOAT, 0, 0, NULL, "0", "tf_crop_and_resize: value outside the input"},
    LAYOUT_ATTR,
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_upsample(mera_infer_ctx *ctx)
{
    mera_status st;
    int64_t x[4];
    if ((st = check_activation(ctx, 0)) || (st = spatial_input(ctx, x)))
        return st;
    const mera_attr *size = mera_attr_find(ctx->attrs, ctx->n_attrs, "size");
    const mera_attr *scales = mera_attr_find(ctx->attrs, ctx->n_attrs, "scales");
    int64_t oh, ow;
    if (!size == !scales)
        return FAIL(ctx, MERA_ERR_ATTR, "give exactly one of size and scales");
    if (size) {
        if ((st = check_positive(ctx, "size", size->ints, 2)))
            return st;
        oh = size->ints[0];
        ow = size->ints[1];
    } else {
        if (!(scales->floats[0] > 0) || !(scales->floats[1] > 0))
            return FAIL(ctx, MERA_ERR_ATTR, "scales must be positive, got [%g,%g]", scales->floats[0], scales->floats[1]);
        oh = (int64_t)floor((double)x[2] * scales->floats[0]);
        ow = (int64_t)floor((double)x[3] * scales->floats[1]);
        if (oh < 1 || ow < 1)
            return FAIL(ctx, MERA_ERR_ATTR, "scales [%g,%g] shrink the %lldx%lld input to nothing",
                        scales->floats[0], scales->floats[1], (long long)x[2], (long long)x[3]);
    }
    const char *cm = attr_s(ctx, "coordinate_mode");
    const char *method = attr_s(ctx, "method");
    if (method && strcmp(method, "cubic") == 0 && (!cm || strcmp(cm, "torch") == 0))
        return FAIL(ctx, MERA_ERR_ATTR, "method cubic needs an ONNX coordinate_mode (PyTorch's bicubic is not implemented)");
    if (cm && strcmp(cm, "tf_crop_and_resize") == 0 && !mera_attr_find(ctx->attrs, ctx->n_attrs, "roi"))
        return FAIL(ctx, MERA_ERR_ATTR, "coordinate_mode tf_crop_and_resize needs roi");
    spatial_output(ctx, &ctx->out[0], x[0], x[1], oh, ow);
    return set_output_quant(ctx, &ctx->out[0]);
}

/* ---- softmax ----------------------------------------------------------- */

static const char *const inputs_softmax[] = {"data"};
static const mera_attr_spec attrs_softmax[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "-1", "axis to normalize over"},
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_softmax(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    int64_t a;
    if (!normalize_axis(attr_i(ctx, "axis"), ctx->in[0]->rank, &a))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d",
                    (long long)attr_i(ctx, "axis"), ctx->in[0]->rank);
    ctx->out[0] = *ctx->in[0];
    return set_output_quant(ctx, &ctx->out[0]);
}

/* ---- quantize, dequantize, requantize ---------------------------------- */

static const char *const inputs_quantize[] = {"data"};
static const mera_attr_spec attrs_quantize[] = {
    {"scale", MERA_ATTR_FLOAT, 1, 0, NULL, NULL, "quantization scale"},
    {"zero_point", MERA_ATTR_INT, 0, 0, NULL, "0", "quantization zero point"},
    {"dtype", MERA_ATTR_STRING, 0, 0, "uint8|int8", "uint8", "quantized dtype"},
    END_ATTRS,
};
static mera_status infer_quantize(mera_infer_ctx *ctx)
{
    mera_status st;
    char d[160];
    if (!is_float(ctx->in[0]))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be float32, got %s", in_desc(ctx, 0, d, sizeof d),
                    mera_dtype_name(ctx->in[0]->dtype));
    mera_type *out = &ctx->out[0];
    *out = *ctx->in[0];
    mera_dtype_parse(attr_s(ctx, "dtype"), &out->dtype);
    if ((st = check_scale(ctx, attr_f(ctx, "scale"), "scale")) ||
        (st = check_zero_point(ctx, out->dtype, attr_i(ctx, "zero_point"), "zero_point")))
        return st;
    out->q.kind = MERA_QUANT_PER_TENSOR;
    out->q.count = 1;
    out->q.scale = attr_f(ctx, "scale");
    out->q.zero_point = (int32_t)attr_i(ctx, "zero_point");
    return MERA_OK;
}

static const char *const inputs_dequantize[] = {"data"};
static const mera_attr_spec attrs_dequantize[] = {END_ATTRS};
static mera_status infer_dequantize(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    char d[160];
    if (!mera_dtype_is_quantized_int(x->dtype) || x->q.kind == MERA_QUANT_NONE)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a quantized int8/uint8 tensor, got %s%s",
                    in_desc(ctx, 0, d, sizeof d), mera_dtype_name(x->dtype),
                    mera_dtype_is_quantized_int(x->dtype) ? " without quantization parameters" : "");
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->dtype = MERA_DTYPE_FLOAT32;
    memset(&out->q, 0, sizeof out->q);
    return MERA_OK;
}

static const char *const inputs_requantize[] = {"data"};
static const mera_attr_spec attrs_requantize[] = {
    {"out_scale", MERA_ATTR_FLOAT, 1, 0, NULL, NULL, "output scale"},
    {"out_zero_point", MERA_ATTR_INT, 1, 0, NULL, NULL, "output zero point"},
    {"out_dtype", MERA_ATTR_STRING, 0, 0, "uint8|int8", NULL, "output dtype (default: the input's)"},
    END_ATTRS,
};
static mera_status infer_requantize(mera_infer_ctx *ctx)
{
    mera_status st = require_per_tensor_q(ctx, 0);
    if (st)
        return st;
    ctx->out[0] = *ctx->in[0];
    return set_output_quant(ctx, &ctx->out[0]);
}

/* ---- float math on the host ----------------------------------------------- */

static mera_status infer_float_binary(mera_infer_ctx *ctx)
{
    mera_status st;
    if ((st = require_float(ctx, 0)) || (st = require_float(ctx, 1)))
        return st;
    return broadcast(ctx, &ctx->out[0]);
}

static mera_status infer_float_unary(mera_infer_ctx *ctx)
{
    mera_status st = require_float(ctx, 0);
    if (st)
        return st;
    ctx->out[0] = *ctx->in[0];
    return MERA_OK;
}

#define FLOAT_BINARY_OP(name)                                                   \
    static const char *const inputs_##name[] = {"lhs", "rhs"};                  \
    static const mera_attr_spec attrs_##name[] = {END_ATTRS};                   \
    static mera_status infer_##name(mera_infer_ctx *ctx) { return infer_float_binary(ctx); }
#define FLOAT_UNARY_OP(name)                                                    \
    static const char *const inputs_##name[] = {"data"};                        \
    static const mera_attr_spec attrs_##name[] = {END_ATTRS};                   \
    static mera_status infer_##name(mera_infer_ctx *ctx) { return infer_float_unary(ctx); }
FLOAT_BINARY_OP(sub)
FLOAT_BINARY_OP(div)
FLOAT_BINARY_OP(pow)
FLOAT_BINARY_OP(maximum)
FLOAT_BINARY_OP(minimum)
FLOAT_UNARY_OP(sqrt)
FLOAT_UNARY_OP(exp)
FLOAT_UNARY_OP(log)
FLOAT_UNARY_OP(tanh)
FLOAT_UNARY_OP(erf)
FLOAT_UNARY_OP(abs)
#undef FLOAT_BINARY_OP
#undef FLOAT_UNARY_OP

/* numpy matmul for rank >= 2: [..., M, K] @ [..., K, N] -> [..., M, N], the batch axes broadcast */
static const char *const inputs_matmul[] = {"lhs", "rhs"};
static const mera_attr_spec attrs_matmul[] = {END_ATTRS};
static mera_status infer_matmul(mera_infer_ctx *ctx)
{
    mera_status st;
    if ((st = require_float(ctx, 0)) || (st = require_float(ctx, 1)))
        return st;
    const mera_type *a = ctx->in[0], *b = ctx->in[1];
    char s[128], s2[128];
    mera_shape_format(a->shape, a->rank, s, sizeof s);
    mera_shape_format(b->shape, b->rank, s2, sizeof s2);
    if (a->rank < 2 || b->rank < 2)
        return FAIL(ctx, MERA_ERR_SHAPE, "matmul needs two operands of rank >= 2, got %s and %s", s, s2);
    if (a->shape[a->rank - 1] != b->shape[b->rank - 2])
        return FAIL(ctx, MERA_ERR_SHAPE, "matmul of %s by %s: %lld columns against %lld rows", s, s2,
                    (long long)a->shape[a->rank - 1], (long long)b->shape[b->rank - 2]);
    mera_type *out = &ctx->out[0];
    int rank = a->rank > b->rank ? a->rank : b->rank;
    *out = *a;
    out->rank = rank;
    out->layout = MERA_LAYOUT_ANY;
    for (int i = 0; i < rank - 2; i++) {
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return FAIL(ctx, MERA_ERR_SHAPE, "matmul of %s by %s: batch axes do not broadcast (axis %d: %lld vs %lld)",
                        s, s2, i, (long long)da, (long long)db);
        out->shape[i] = da == 1 ? db : da;
    }
    out->shape[rank - 2] = a->shape[a->rank - 2];
    out->shape[rank - 1] = b->shape[b->rank - 1];
    return MERA_OK;
}

/* conv_transpose2d: the gradient of conv2d with respect to its input. Weight [C_in, C_out/groups, KH, KW] (the
 * layout PyTorch and ONNX both use), output (H-1)*stride - pad_top - pad_bottom + dilation*(KH-1) +
 * output_padding + 1 (likewise W). Float, or quantized as PyTorch's quantized::conv_transpose2d: a per-tensor
 * activation, an int8 kernel quantized per tensor or (groups == 1) per output channel, i.e. along axis 1, a
 * float bias, and out_scale/out_zero_point/out_dtype. Its input 1 is named "kernel", not "weight": the op is a
 * host layer, not a CONV layer (ops.def). */
static const char *const inputs_conv_transpose2d[] = {"data", "kernel", "bias"};
static const mera_attr_spec attrs_conv_transpose2d[] = {
    {"strides", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "stride (h, w)"},
    {"padding", MERA_ATTR_INTS, 0, 4, NULL, "[0,0,0,0]", "padding removed from the output (top, left, bottom, right)"},
    {"output_padding", MERA_ATTR_INTS, 0, 2, NULL, "[0,0]", "extra rows/columns at the bottom/right (h, w)"},
    {"dilation", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "dilation (h, w)"},
    {"groups", MERA_ATTR_INT, 0, 0, NULL, "1", "number of groups"},
    LAYOUT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_conv_transpose2d(mera_infer_ctx *ctx)
{
    mera_status st;
    int64_t x[4];
    char s[128], d[160];
    if ((st = check_activation(ctx, 0)) || (st = spatial_input(ctx, x)) || (st = require_rank(ctx, 1, 4)))
        return st;
    const mera_type *w = ctx->in[1];
    int quantized = !is_float(ctx->in[0]);
    if (!quantized && (st = require_float(ctx, 1)))
        return st;
    if (quantized && (w->dtype != MERA_DTYPE_INT8 || w->q.kind == MERA_QUANT_NONE))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a quantized int8 tensor because input 0 is quantized, got %s%s",
                    in_desc(ctx, 1, d, sizeof d), mera_dtype_name(w->dtype),
                    w->dtype == MERA_DTYPE_INT8 ? " without quantization parameters" : "");
    if (quantized && w->q.kind == MERA_QUANT_PER_AXIS && (w->q.axis != 1 || attr_i(ctx, "groups") != 1))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s is quantized per axis %d with groups=%lld: per-channel kernels of "
                    "conv_transpose2d must be quantized along the output-channel axis 1 and need groups=1",
                    in_desc(ctx, 1, d, sizeof d), w->q.axis, (long long)attr_i(ctx, "groups"));
    if (ctx->n_inputs > 2 && ctx->in[2] && ((st = require_rank(ctx, 2, 1))))
        return st;
    if (ctx->n_inputs > 2 && ctx->in[2] && !is_float(ctx->in[2]))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be float32 (the bias stays float, as in PyTorch), got %s",
                    in_desc(ctx, 2, d, sizeof d), mera_dtype_name(ctx->in[2]->dtype));
    int n = 0;
    const int64_t *strides = attr_is(ctx, "strides", &n), *pad = attr_is(ctx, "padding", &n);
    const int64_t *opad = attr_is(ctx, "output_padding", &n), *dil = attr_is(ctx, "dilation", &n);
    int64_t groups = attr_i(ctx, "groups");
    mera_shape_format(w->shape, 4, s, sizeof s);
    for (int i = 0; i < 2; i++)
        if (strides[i] < 1 || dil[i] < 1 || opad[i] < 0 || (opad[i] >= strides[i] && opad[i] >= dil[i]))
            return FAIL(ctx, MERA_ERR_ATTR, "strides %lld, dilation %lld and output_padding %lld (axis %d): strides and "
                        "dilation must be >= 1, and output_padding smaller than one of them",
                        (long long)strides[i], (long long)dil[i], (long long)opad[i], i);
    for (int i = 0; i < 4; i++)
        if (pad[i] < 0)
            return FAIL(ctx, MERA_ERR_ATTR, "padding[%d] = %lld is negative", i, (long long)pad[i]);
    if (groups < 1 || x[1] % groups || w->shape[0] != x[1])
        return FAIL(ctx, MERA_ERR_SHAPE, "kernel %s [C_in, C_out/groups, KH, KW] does not fit %lld input channels "
                    "in %lld groups", s, (long long)x[1], (long long)groups);
    int64_t co = w->shape[1] * groups;
    if (ctx->n_inputs > 2 && ctx->in[2] && ctx->in[2]->shape[0] != co)
        return FAIL(ctx, MERA_ERR_SHAPE, "bias has %lld entries for %lld output channels",
                    (long long)ctx->in[2]->shape[0], (long long)co);
    int64_t oh = (x[2] - 1) * strides[0] - pad[0] - pad[2] + dil[0] * (w->shape[2] - 1) + opad[0] + 1;
    int64_t ow = (x[3] - 1) * strides[1] - pad[1] - pad[3] + dil[1] * (w->shape[3] - 1) + opad[1] + 1;
    if (oh < 1 || ow < 1)
        return FAIL(ctx, MERA_ERR_SHAPE, "the output would be %lldx%lld", (long long)oh, (long long)ow);
    ctx->out[0] = *ctx->in[0];
    spatial_output(ctx, &ctx->out[0], x[0], co, oh, ow);
    return set_output_quant(ctx, &ctx->out[0]);
}

/* lstm: ONNX's LSTM with its default activations, no peepholes, all sequences full length.
 * data [seq, batch, input], w [dirs, 4H, input], r [dirs, 4H, H], b [dirs, 8H] (Wb then Rb),
 * initial_h and initial_c [dirs, batch, H]; output Y [seq, dirs, batch, H]. */
static const char *const inputs_lstm[] = {"data", "w", "r", "b", "initial_h", "initial_c"};
static const mera_attr_spec attrs_lstm[] = {
    {"hidden_size", MERA_ATTR_INT, 1, 0, NULL, NULL, "H"},
    {"direction", MERA_ATTR_STRING, 0, 0, "forward|reverse|bidirectional", "forward", "direction"},
    END_ATTRS,
};
static mera_status infer_lstm(mera_infer_ctx *ctx)
{
    mera_status st;
    for (int i = 0; i < ctx->n_inputs; i++)
        if (ctx->in[i] && (st = require_float(ctx, i)))
            return st;
    if ((st = require_rank(ctx, 0, 3)) || (st = require_rank(ctx, 1, 3)) || (st = require_rank(ctx, 2, 3)))
        return st;
    int64_t H = attr_i(ctx, "hidden_size"), dirs = strcmp(attr_s(ctx, "direction"), "bidirectional") ? 1 : 2;
    const mera_type *x = ctx->in[0], *w = ctx->in[1], *r = ctx->in[2];
    int64_t S = x->shape[0], B = x->shape[1], I = x->shape[2];
    if (H < 1)
        return FAIL(ctx, MERA_ERR_ATTR, "hidden_size = %lld must be >= 1", (long long)H);
    if (w->shape[0] != dirs || w->shape[1] != 4 * H || w->shape[2] != I || r->shape[0] != dirs ||
        r->shape[1] != 4 * H || r->shape[2] != H)
        return FAIL(ctx, MERA_ERR_SHAPE, "w must be [%lld, %lld, %lld] and r [%lld, %lld, %lld] for %s, hidden_size %lld "
                    "and %lld input features", (long long)dirs, (long long)(4 * H), (long long)I, (long long)dirs,
                    (long long)(4 * H), (long long)H, attr_s(ctx, "direction"), (long long)H, (long long)I);
    if (ctx->n_inputs > 3 && ctx->in[3] && (ctx->in[3]->rank != 2 || ctx->in[3]->shape[0] != dirs ||
                                            ctx->in[3]->shape[1] != 8 * H))
        return FAIL(ctx, MERA_ERR_SHAPE, "b must be [%lld, %lld]", (long long)dirs, (long long)(8 * H));
    for (int i = 4; i < ctx->n_inputs; i++)
        if (ctx->in[i] && (ctx->in[i]->rank != 3 || ctx->in[i]->shape[0] != dirs || ctx->in[i]->shape[1] != B ||
                           ctx->in[i]->shape[2] != H))
            return FAIL(ctx, MERA_ERR_SHAPE, "%s must be [%lld, %lld, %lld]", ctx->in_names[i], (long long)dirs,
                        (long long)B, (long long)H);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->rank = 4;
    out->layout = MERA_LAYOUT_ANY;
    out->shape[0] = S;
    out->shape[1] = dirs;
    out->shape[2] = B;
    out->shape[3] = H;
    return MERA_OK;
}

/* ---- onnxruntime's dynamic quantization, gru ------------------------------ */

/* Input i must be a plain (unquantized) int8 or uint8 tensor. */
static mera_status require_plain_int8(mera_infer_ctx *ctx, int i)
{
    char d[160];
    const mera_type *t = ctx->in[i];
    if (!mera_dtype_is_quantized_int(t->dtype) || t->q.kind != MERA_QUANT_NONE)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain int8/uint8 tensor (no quantization parameters), got %s%s",
                    in_desc(ctx, i, d, sizeof d), mera_dtype_name(t->dtype),
                    t->q.kind != MERA_QUANT_NONE ? " with quantization parameters" : "");
    return MERA_OK;
}

/* Zero point input zp of operand op: its dtype, and one value or `per` values (0: one only). */
static mera_status check_zero_point_input(mera_infer_ctx *ctx, int zp, int op, int64_t per)
{
    char d[160], s[128];
    if (zp >= ctx->n_inputs || !ctx->in[zp])
        return MERA_OK;
    const mera_type *t = ctx->in[zp];
    mera_status st = require_plain_int8(ctx, zp);
    if (st)
        return st;
    if (t->dtype != ctx->in[op]->dtype)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s is %s but the operand it belongs to is %s", in_desc(ctx, zp, d, sizeof d),
                    mera_dtype_name(t->dtype), mera_dtype_name(ctx->in[op]->dtype));
    int64_t n = mera_type_numel(t);
    if (n == 1 && t->rank <= 1)
        return MERA_OK;
    if (per > 1 && t->rank == 1 && n == per)
        return MERA_OK;
    mera_shape_format(t->shape, t->rank, s, sizeof s);
    if (per > 1)
        return FAIL(ctx, MERA_ERR_SHAPE, "%s has shape %s: one value or %lld (one per output column/channel)",
                    in_desc(ctx, zp, d, sizeof d), s, (long long)per);
    return FAIL(ctx, MERA_ERR_SHAPE, "%s has shape %s: one value (a scalar or [1])", in_desc(ctx, zp, d, sizeof d), s);
}

/* dynamic_quantize_linear: onnxruntime's formula (docs/numerics.md); output y [same shape] uint8, scale [] float32
 * or zero_point [] uint8. */
static const char *const inputs_dynamic_quantize_linear[] = {"data"};
static const mera_attr_spec attrs_dynamic_quantize_linear[] = {
    {"output", MERA_ATTR_STRING, 0, 0, "y|scale|zero_point", "y", "which of DynamicQuantizeLinear's outputs"},
    END_ATTRS,
};
static mera_status infer_dynamic_quantize_linear(mera_infer_ctx *ctx)
{
    mera_status st = require_float(ctx, 0);
    if (st)
        return st;
    const char *which = attr_s(ctx, "output");
    mera_type *out = &ctx->out[0];
    *out = *ctx->in[0];
    out->q.kind = MERA_QUANT_NONE;
    if (strcmp(which, "y") == 0) {
        out->dtype = MERA_DTYPE_UINT8;
        return MERA_OK;
    }
    out->rank = 0;
    out->layout = MERA_LAYOUT_ANY;
    out->dtype = strcmp(which, "scale") == 0 ? MERA_DTYPE_FLOAT32 : MERA_DTYPE_UINT8;
    return MERA_OK;
}

/* matmul_integer: numpy matmul of int8/uint8 [..., M, K] by [..., K, N] minus their zero points, int32 out.
 * a_zero_point one value; b_zero_point one value or N (per column, B of rank 2). */
static const char *const inputs_matmul_integer[] = {"a", "b", "a_zero_point", "b_zero_point"};
static const mera_attr_spec attrs_matmul_integer[] = {END_ATTRS};
static mera_status infer_matmul_integer(mera_infer_ctx *ctx)
{
    mera_status st;
    if ((st = require_plain_int8(ctx, 0)) || (st = require_plain_int8(ctx, 1)))
        return st;
    const mera_type *a = ctx->in[0], *b = ctx->in[1];
    char s[128], s2[128];
    mera_shape_format(a->shape, a->rank, s, sizeof s);
    mera_shape_format(b->shape, b->rank, s2, sizeof s2);
    if (a->rank < 2 || b->rank < 2)
        return FAIL(ctx, MERA_ERR_SHAPE, "matmul_integer needs two operands of rank >= 2, got %s and %s", s, s2);
    if (a->shape[a->rank - 1] != b->shape[b->rank - 2])
        return FAIL(ctx, MERA_ERR_SHAPE, "matmul_integer of %s by %s: %lld columns against %lld rows", s, s2,
                    (long long)a->shape[a->rank - 1], (long long)b->shape[b->rank - 2]);
    if ((st = check_zero_point_input(ctx, 2, 0, 0)) ||
        (st = check_zero_point_input(ctx, 3, 1, b->rank == 2 ? b->shape[1] : 0)))
        return st;
    mera_type *out = &ctx->out[0];
    int rank = a->rank > b->rank ? a->rank : b->rank;
    *out = *a;
    out->dtype = MERA_DTYPE_INT32;
    out->rank = rank;
    out->layout = MERA_LAYOUT_ANY;
    for (int i = 0; i < rank - 2; i++) {
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return FAIL(ctx, MERA_ERR_SHAPE, "matmul_integer of %s by %s: batch axes do not broadcast (axis %d: %lld "
                        "vs %lld)", s, s2, i, (long long)da, (long long)db);
        out->shape[i] = da == 1 ? db : da;
    }
    out->shape[rank - 2] = a->shape[a->rank - 2];
    out->shape[rank - 1] = b->shape[b->rank - 1];
    return MERA_OK;
}

/* conv_integer: x [N, C, H, W] by w [M, C/groups, KH, KW] (NCHW; int8/uint8), the padding filled with x_zero_point
 * (so it adds nothing), int32 out. x_zero_point one value, w_zero_point one value or M. */
static const char *const inputs_conv_integer[] = {"data", "kernel", "x_zero_point", "w_zero_point"};
static const mera_attr_spec attrs_conv_integer[] = {
    {"strides", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "stride (h, w)"},
    {"padding", MERA_ATTR_INTS, 0, 4, NULL, "[0,0,0,0]", "padding (top, left, bottom, right)"},
    {"dilation", MERA_ATTR_INTS, 0, 2, NULL, "[1,1]", "dilation (h, w)"},
    {"groups", MERA_ATTR_INT, 0, 0, NULL, "1", "number of groups"},
    END_ATTRS,
};
static mera_status infer_conv_integer(mera_infer_ctx *ctx)
{
    mera_status st;
    char s[128], s2[128];
    if ((st = require_plain_int8(ctx, 0)) || (st = require_plain_int8(ctx, 1)) || (st = require_rank(ctx, 0, 4)) ||
        (st = require_rank(ctx, 1, 4)))
        return st;
    const mera_type *x = ctx->in[0], *w = ctx->in[1];
    if (x->layout == MERA_LAYOUT_NHWC)
        return FAIL(ctx, MERA_ERR_SHAPE, "conv_integer takes NCHW data, input 0 '%s' is NHWC", ctx->in_names[0]);
    int n = 0;
    const int64_t *strides = attr_is(ctx, "strides", &n), *pad = attr_is(ctx, "padding", &n);
    const int64_t *dil = attr_is(ctx, "dilation", &n);
    int64_t groups = attr_i(ctx, "groups");
    for (int i = 0; i < 2; i++)
        if (strides[i] < 1 || dil[i] < 1)
            return FAIL(ctx, MERA_ERR_ATTR, "strides %lld and dilation %lld (axis %d) must be >= 1",
                        (long long)strides[i], (long long)dil[i], i);
    for (int i = 0; i < 4; i++)
        if (pad[i] < 0)
            return FAIL(ctx, MERA_ERR_ATTR, "padding[%d] = %lld is negative", i, (long long)pad[i]);
    mera_shape_format(x->shape, 4, s, sizeof s);
    mera_shape_format(w->shape, 4, s2, sizeof s2);
    if (groups < 1 || x->shape[1] % groups || w->shape[0] % groups || w->shape[1] * groups != x->shape[1])
        return FAIL(ctx, MERA_ERR_SHAPE, "kernel %s [M, C/groups, KH, KW] does not fit data %s in %lld groups", s2, s,
                    (long long)groups);
    if ((st = check_zero_point_input(ctx, 2, 0, 0)) || (st = check_zero_point_input(ctx, 3, 1, w->shape[0])))
        return st;
    int64_t oh = (x->shape[2] + pad[0] + pad[2] - dil[0] * (w->shape[2] - 1) - 1) / strides[0] + 1;
    int64_t ow = (x->shape[3] + pad[1] + pad[3] - dil[1] * (w->shape[3] - 1) - 1) / strides[1] + 1;
    if (x->shape[2] + pad[0] + pad[2] < dil[0] * (w->shape[2] - 1) + 1 ||
        x->shape[3] + pad[1] + pad[3] < dil[1] * (w->shape[3] - 1) + 1)
        return FAIL(ctx, MERA_ERR_SHAPE, "kernel %s is larger than the padded data %s", s2, s);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->dtype = MERA_DTYPE_INT32;
    out->layout = x->layout;
    out->shape[1] = w->shape[0];
    out->shape[2] = oh;
    out->shape[3] = ow;
    return MERA_OK;
}

/* cast (ONNX Cast): a plain float32/int8/uint8/int32/int64 tensor to another of these types. Float to integer
 * truncates toward zero and saturates (NaN -> 0; ONNX leaves out-of-range values undefined), integer to integer
 * wraps (two's complement, as onnxruntime's static_cast), integer to float32 rounds to nearest. */
static const char *const inputs_cast[] = {"data"};
static const mera_attr_spec attrs_cast[] = {
    {"to", MERA_ATTR_STRING, 0, 0, "float32|int32|int64|uint8|int8", "float32", "the output dtype"},
    END_ATTRS,
};
static int plain_numeric(const mera_type *t)
{
    return t->q.kind == MERA_QUANT_NONE && t->dtype != MERA_DTYPE_BFLOAT16;
}
static mera_status infer_cast(mera_infer_ctx *ctx)
{
    char d[160];
    const mera_type *t = ctx->in[0];
    if (!plain_numeric(t))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain float32, int8, uint8, int32 or int64 tensor, got %s%s",
                    in_desc(ctx, 0, d, sizeof d), mera_dtype_name(t->dtype),
                    t->q.kind != MERA_QUANT_NONE ? " with quantization parameters (dequantize it)" : "");
    mera_dtype to;
    if (mera_dtype_parse(attr_s(ctx, "to"), &to) != 0)
        return FAIL(ctx, MERA_ERR_ATTR, "cast to '%s': not a dtype", attr_s(ctx, "to"));
    ctx->out[0] = *t;
    ctx->out[0].dtype = to;
    return MERA_OK;
}

/* floor, ceil, round: float32 elementwise (round: halves to even) */
static const char *const inputs_floor[] = {"data"};
static const mera_attr_spec attrs_floor[] = {END_ATTRS};
static mera_status infer_floor(mera_infer_ctx *ctx) { return infer_float_unary(ctx); }
static const char *const inputs_ceil[] = {"data"};
static const mera_attr_spec attrs_ceil[] = {END_ATTRS};
static mera_status infer_ceil(mera_infer_ctx *ctx) { return infer_float_unary(ctx); }
static const char *const inputs_round[] = {"data"};
static const mera_attr_spec attrs_round[] = {END_ATTRS};
static mera_status infer_round(mera_infer_ctx *ctx) { return infer_float_unary(ctx); }

/* int_arith: lhs (+|-|*) rhs of two plain int32 tensors, or two int64 ones, numpy broadcasting; the result wraps */
static const char *const inputs_int_arith[] = {"lhs", "rhs"};
static const mera_attr_spec attrs_int_arith[] = {
    {"kind", MERA_ATTR_STRING, 1, 0, "add|sub|mul", NULL, "the operation"},
    END_ATTRS,
};
static mera_status infer_int_arith(mera_infer_ctx *ctx)
{
    char d[160];
    for (int i = 0; i < 2; i++) {
        const mera_type *t = ctx->in[i];
        if (!plain_numeric(t) || (t->dtype != MERA_DTYPE_INT32 && t->dtype != MERA_DTYPE_INT64))
            return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain int32 or int64 tensor, got %s%s",
                        in_desc(ctx, i, d, sizeof d), mera_dtype_name(t->dtype),
                        t->q.kind != MERA_QUANT_NONE ? " with quantization parameters" : "");
    }
    if (ctx->in[0]->dtype != ctx->in[1]->dtype)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s is %s but input 0 is %s", in_desc(ctx, 1, d, sizeof d),
                    mera_dtype_name(ctx->in[1]->dtype), mera_dtype_name(ctx->in[0]->dtype));
    return broadcast(ctx, &ctx->out[0]);
}

/* gru: ONNX's GRU with its default activations, all sequences full length.
 * data [seq, batch, input], w [dirs, 3H, input], r [dirs, 3H, H] (gates z, r, h), b [dirs, 6H] (Wb then Rb),
 * initial_h [dirs, batch, H]; output Y [seq, dirs, batch, H]. */
static const char *const inputs_gru[] = {"data", "w", "r", "b", "initial_h"};
static const mera_attr_spec attrs_gru[] = {
    {"hidden_size", MERA_ATTR_INT, 1, 0, NULL, NULL, "H"},
    {"direction", MERA_ATTR_STRING, 0, 0, "forward|reverse|bidirectional", "forward", "direction"},
    {"linear_before_reset", MERA_ATTR_INT, 0, 0, NULL, "0", "1: r scales (R h + Rb_h) rather than h"},
    END_ATTRS,
};
static mera_status infer_gru(mera_infer_ctx *ctx)
{
    mera_status st;
    for (int i = 0; i < ctx->n_inputs; i++)
        if (ctx->in[i] && (st = require_float(ctx, i)))
            return st;
    if ((st = require_rank(ctx, 0, 3)) || (st = require_rank(ctx, 1, 3)) || (st = require_rank(ctx, 2, 3)))
        return st;
    int64_t H = attr_i(ctx, "hidden_size"), dirs = strcmp(attr_s(ctx, "direction"), "bidirectional") ? 1 : 2;
    int64_t lbr = attr_i(ctx, "linear_before_reset");
    const mera_type *x = ctx->in[0], *w = ctx->in[1], *r = ctx->in[2];
    int64_t S = x->shape[0], B = x->shape[1], I = x->shape[2];
    if (H < 1)
        return FAIL(ctx, MERA_ERR_ATTR, "hidden_size = %lld must be >= 1", (long long)H);
    if (lbr != 0 && lbr != 1)
        return FAIL(ctx, MERA_ERR_ATTR, "linear_before_reset = %lld must be 0 or 1", (long long)lbr);
    if (w->shape[0] != dirs || w->shape[1] != 3 * H || w->shape[2] != I || r->shape[0] != dirs ||
        r->shape[1] != 3 * H || r->shape[2] != H)
        return FAIL(ctx, MERA_ERR_SHAPE, "w must be [%lld, %lld, %lld] and r [%lld, %lld, %lld] for %s, hidden_size %lld "
                    "and %lld input features", (long long)dirs, (long long)(3 * H), (long long)I, (long long)dirs,
                    (long long)(3 * H), (long long)H, attr_s(ctx, "direction"), (long long)H, (long long)I);
    if (ctx->n_inputs > 3 && ctx->in[3] && (ctx->in[3]->rank != 2 || ctx->in[3]->shape[0] != dirs ||
                                            ctx->in[3]->shape[1] != 6 * H))
        return FAIL(ctx, MERA_ERR_SHAPE, "b must be [%lld, %lld]", (long long)dirs, (long long)(6 * H));
    if (ctx->n_inputs > 4 && ctx->in[4] && (ctx->in[4]->rank != 3 || ctx->in[4]->shape[0] != dirs ||
                                            ctx->in[4]->shape[1] != B || ctx->in[4]->shape[2] != H))
        return FAIL(ctx, MERA_ERR_SHAPE, "initial_h must be [%lld, %lld, %lld]", (long long)dirs, (long long)B,
                    (long long)H);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->rank = 4;
    out->layout = MERA_LAYOUT_ANY;
    out->shape[0] = S;
    out->shape[1] = dirs;
    out->shape[2] = B;
    out->shape[3] = H;
    return MERA_OK;
}

/* dynamic_quantize_lstm: onnxruntime's DynamicQuantizeLSTM. data [seq, batch, input] float32; w [dirs, input, 4H]
 * and r [dirs, H, 4H] plain int8/uint8 (gates i, o, f, c; transposed against lstm's); b [dirs, 8H], initial_h and
 * initial_c [dirs, batch, H] float32 or omitted; w_scale/r_scale float32 [dirs] or [dirs, 4H]; w_zero_point and
 * r_zero_point of the weights' dtype, one value per direction ([dirs], or [dirs, 4H] all equal: onnxruntime reads
 * the first). Output Y [seq, dirs, batch, H]. */
static const char *const inputs_dynamic_quantize_lstm[] = {"data", "w", "r", "b", "initial_h", "initial_c",
                                                           "w_scale", "w_zero_point", "r_scale", "r_zero_point"};
static const mera_attr_spec attrs_dynamic_quantize_lstm[] = {
    {"hidden_size", MERA_ATTR_INT, 1, 0, NULL, NULL, "H"},
    {"direction", MERA_ATTR_STRING, 0, 0, "forward|reverse|bidirectional", "forward", "direction"},
    END_ATTRS,
};
static mera_status infer_dynamic_quantize_lstm(mera_infer_ctx *ctx)
{
    mera_status st;
    char d[160];
    if ((st = require_float(ctx, 0)) || (st = require_plain_int8(ctx, 1)) || (st = require_plain_int8(ctx, 2)) ||
        (st = require_rank(ctx, 0, 3)) || (st = require_rank(ctx, 1, 3)) || (st = require_rank(ctx, 2, 3)))
        return st;
    for (int i = 3; i < 10; i++) {
        if (!ctx->in[i]) {
            if (i >= 6)
                return FAIL(ctx, MERA_ERR_INVALID, "input %d (%s) is required", i, inputs_dynamic_quantize_lstm[i]);
            continue;
        }
        if (i == 7 || i == 9) {
            if ((st = require_plain_int8(ctx, i)))
                return st;
            const mera_type *wgt = ctx->in[i == 7 ? 1 : 2];
            if (ctx->in[i]->dtype != wgt->dtype)
                return FAIL(ctx, MERA_ERR_DTYPE, "%s is %s but its weight is %s", in_desc(ctx, i, d, sizeof d),
                            mera_dtype_name(ctx->in[i]->dtype), mera_dtype_name(wgt->dtype));
        } else if ((st = require_float(ctx, i))) {
            return st;
        }
    }
    int64_t H = attr_i(ctx, "hidden_size"), dirs = strcmp(attr_s(ctx, "direction"), "bidirectional") ? 1 : 2;
    const mera_type *x = ctx->in[0], *w = ctx->in[1], *r = ctx->in[2];
    int64_t S = x->shape[0], B = x->shape[1], I = x->shape[2];
    if (H < 1)
        return FAIL(ctx, MERA_ERR_ATTR, "hidden_size = %lld must be >= 1", (long long)H);
    if (w->shape[0] != dirs || w->shape[1] != I || w->shape[2] != 4 * H || r->shape[0] != dirs ||
        r->shape[1] != H || r->shape[2] != 4 * H)
        return FAIL(ctx, MERA_ERR_SHAPE, "w must be [%lld, %lld, %lld] and r [%lld, %lld, %lld] for %s, hidden_size %lld "
                    "and %lld input features", (long long)dirs, (long long)I, (long long)(4 * H), (long long)dirs,
                    (long long)H, (long long)(4 * H), attr_s(ctx, "direction"), (long long)H, (long long)I);
    if (ctx->in[3] && (ctx->in[3]->rank != 2 || ctx->in[3]->shape[0] != dirs || ctx->in[3]->shape[1] != 8 * H))
        return FAIL(ctx, MERA_ERR_SHAPE, "b must be [%lld, %lld]", (long long)dirs, (long long)(8 * H));
    for (int i = 4; i < 6; i++)
        if (ctx->in[i] && (ctx->in[i]->rank != 3 || ctx->in[i]->shape[0] != dirs || ctx->in[i]->shape[1] != B ||
                           ctx->in[i]->shape[2] != H))
            return FAIL(ctx, MERA_ERR_SHAPE, "%s must be [%lld, %lld, %lld]", in_desc(ctx, i, d, sizeof d),
                        (long long)dirs, (long long)B, (long long)H);
    for (int i = 6; i < 10; i++) {
        const mera_type *t = ctx->in[i];
        int ok = (t->rank == 1 && t->shape[0] == dirs) || (t->rank == 2 && t->shape[0] == dirs && t->shape[1] == 4 * H);
        if (!ok)
            return FAIL(ctx, MERA_ERR_SHAPE, "%s must be [%lld] or [%lld, %lld]", in_desc(ctx, i, d, sizeof d),
                        (long long)dirs, (long long)dirs, (long long)(4 * H));
    }
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->rank = 4;
    out->layout = MERA_LAYOUT_ANY;
    out->shape[0] = S;
    out->shape[1] = dirs;
    out->shape[2] = B;
    out->shape[3] = H;
    return MERA_OK;
}

/* topk: the k largest (smallest) of each slice along `axis`, in order (ties: the lower index first); output
 * `values` (float32) or `indices` (int64), the input's shape with k on the axis. */
static const char *const inputs_topk[] = {"data"};
static const mera_attr_spec attrs_topk[] = {
    {"k", MERA_ATTR_INT, 1, 0, NULL, NULL, "how many"},
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "-1", "the axis (negative: from the end)"},
    {"largest", MERA_ATTR_INT, 0, 0, NULL, "1", "1: the largest, 0: the smallest"},
    {"output", MERA_ATTR_STRING, 0, 0, "values|indices", "values", "which of TopK's outputs"},
    END_ATTRS,
};
static mera_status infer_topk(mera_infer_ctx *ctx)
{
    mera_status st = require_float(ctx, 0);
    if (st)
        return st;
    const mera_type *x = ctx->in[0];
    int64_t k = attr_i(ctx, "k"), axis = attr_i(ctx, "axis"), largest = attr_i(ctx, "largest");
    if (axis < -x->rank || axis >= x->rank || x->rank == 0)
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)axis, x->rank);
    if (axis < 0)
        axis += x->rank;
    if (k < 1 || k > x->shape[axis])
        return FAIL(ctx, MERA_ERR_ATTR, "k = %lld must be in 1..%lld (the size of axis %lld)", (long long)k,
                    (long long)x->shape[axis], (long long)axis);
    if (largest != 0 && largest != 1)
        return FAIL(ctx, MERA_ERR_ATTR, "largest = %lld must be 0 or 1", (long long)largest);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->layout = MERA_LAYOUT_ANY;
    out->shape[axis] = k;
    if (strcmp(attr_s(ctx, "output"), "indices") == 0)
        out->dtype = MERA_DTYPE_INT64;
    return MERA_OK;
}

/* reduce: ONNX's Reduce* ops in float, over a set of axes. */
static const char *const inputs_reduce[] = {"data"};
static const mera_attr_spec attrs_reduce[] = {
    {"kind", MERA_ATTR_STRING, 1, 0, "sum|max|min|prod|l1|l2|log_sum|log_sum_exp|sum_square|mean", NULL, "the reduction"},
    {"axes", MERA_ATTR_INTS, 1, 0, NULL, NULL, "axes to reduce"},
    {"keepdims", MERA_ATTR_INT, 0, 0, NULL, "1", "keep reduced axes with size 1"},
    END_ATTRS,
};
static mera_status infer_reduce(mera_infer_ctx *ctx)
{
    mera_status st = require_float(ctx, 0);
    return st ? st : infer_reduced_axes(ctx);
}

/* ---- detection post-processing (host) ----------------------------------- */

/* non_max_suppression: boxes [batches, boxes, 4] and scores [batches, classes, boxes], float32. Output `selected`:
 * int64 [rows, 3] with rows = batches * classes * min(max_output_boxes_per_class, boxes) (at least 1), the selected
 * [batch, class, box] triples first and 0 after them; output `count`: int64 [1], how many rows are selected;
 * output `packed`: both from one run, int64 [rows + 1, 3], the rows of `selected` then [count, 0, 0]. The optional
 * input `count` (int64 [1]) says how many boxes (from the first) are candidates: the valid rows of a NonZero filter. */
static const char *const inputs_non_max_suppression[] = {"boxes", "scores", "count"};
static const mera_attr_spec attrs_non_max_suppression[] = {
    {"max_output_boxes_per_class", MERA_ATTR_INT, 1, 0, NULL, NULL, "at most this many boxes per batch and class (>= 0)"},
    {"iou_threshold", MERA_ATTR_FLOAT, 0, 0, NULL, "0", "a box whose IoU with a selected one is above it is dropped, in [0, 1]"},
    {"score_threshold", MERA_ATTR_FLOAT, 0, 0, NULL, "0", "with use_score_threshold: boxes scoring at most this are dropped"},
    {"use_score_threshold", MERA_ATTR_INT, 0, 0, NULL, "0", "1: apply score_threshold (ONNX: the input is given)"},
    {"center_point_box", MERA_ATTR_INT, 0, 0, NULL, "0", "0: [y1, x1, y2, x2] corners, 1: [x_center, y_center, width, height]"},
    {"output", MERA_ATTR_STRING, 0, 0, "selected|count|packed", "selected", "the selected rows, their count, or both (the rows then a row [count, 0, 0])"},
    END_ATTRS,
};
static mera_status infer_non_max_suppression(mera_infer_ctx *ctx)
{
    mera_status st;
    if ((st = require_float(ctx, 0)) || (st = require_float(ctx, 1)) || (st = require_rank(ctx, 0, 3)) ||
        (st = require_rank(ctx, 1, 3)))
        return st;
    const mera_type *b = ctx->in[0], *s = ctx->in[1];
    if (b->shape[2] != 4 || s->shape[0] != b->shape[0] || s->shape[2] != b->shape[1]) {
        char bs[128], ss[128];
        mera_shape_format(b->shape, b->rank, bs, sizeof bs);
        mera_shape_format(s->shape, s->rank, ss, sizeof ss);
        return FAIL(ctx, MERA_ERR_SHAPE, "boxes %s and scores %s must be [batches, boxes, 4] and "
                    "[batches, classes, boxes]", bs, ss);
    }
    if (ctx->n_inputs > 2 && ctx->in[2]) {
        const mera_type *c = ctx->in[2];
        if (c->dtype != MERA_DTYPE_INT64 || c->q.kind != MERA_QUANT_NONE || mera_type_numel(c) != 1)
            return FAIL(ctx, MERA_ERR_DTYPE, "the count of valid boxes must be a plain int64 [1], got %s",
                        mera_dtype_name(c->dtype));
    }
    int64_t mpc = attr_i(ctx, "max_output_boxes_per_class"), cpb = attr_i(ctx, "center_point_box");
    double iou = attr_f(ctx, "iou_threshold");
    if (mpc < 0)
        return FAIL(ctx, MERA_ERR_ATTR, "max_output_boxes_per_class = %lld must be >= 0", (long long)mpc);
    if (!(iou >= 0.0 && iou <= 1.0))
        return FAIL(ctx, MERA_ERR_ATTR, "iou_threshold = %g must be in [0, 1]", iou);
    if (cpb != 0 && cpb != 1)
        return FAIL(ctx, MERA_ERR_ATTR, "center_point_box = %lld must be 0 or 1", (long long)cpb);
    int64_t use = attr_i(ctx, "use_score_threshold");
    if (use != 0 && use != 1)
        return FAIL(ctx, MERA_ERR_ATTR, "use_score_threshold = %lld must be 0 or 1", (long long)use);
    mera_type *out = &ctx->out[0];
    memset(out, 0, sizeof *out);
    out->dtype = MERA_DTYPE_INT64;
    out->layout = MERA_LAYOUT_ANY;
    if (strcmp(attr_s(ctx, "output"), "count") == 0) {
        out->rank = 1;
        out->shape[0] = 1;
        return MERA_OK;
    }
    int64_t rows = b->shape[0] * s->shape[1] * (mpc < b->shape[1] ? mpc : b->shape[1]);
    out->rank = 2;
    out->shape[0] = (rows > 0 ? rows : 1) + (strcmp(attr_s(ctx, "output"), "packed") == 0);
    out->shape[1] = 3;
    return MERA_OK;
}

/* gather: data (any dtype, quantization parameters kept) and int64 indices of any shape; the output is
 * data.shape[:axis] + indices.shape + data.shape[axis + 1:]. */
static const char *const inputs_gather[] = {"data", "indices"};
static const mera_attr_spec attrs_gather[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "0", "the axis indexed (negative: from the end)"},
    END_ATTRS,
};
static mera_status infer_gather(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0], *ix = ctx->in[1];
    char d[160];
    if (ix->dtype != MERA_DTYPE_INT64)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be int64, got %s", in_desc(ctx, 1, d, sizeof d),
                    mera_dtype_name(ix->dtype));
    if (x->q.kind == MERA_QUANT_PER_AXIS)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s is quantized per axis: gather takes per-tensor parameters",
                    in_desc(ctx, 0, d, sizeof d));
    int64_t axis;
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    if (x->rank - 1 + ix->rank > MERA_MAX_RANK)
        return FAIL(ctx, MERA_ERR_SHAPE, "the output would have rank %d (at most %d)", x->rank - 1 + ix->rank,
                    MERA_MAX_RANK);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->layout = MERA_LAYOUT_ANY;
    out->rank = 0;
    for (int i = 0; i < x->rank; i++) {
        if (i != axis) {
            out->shape[out->rank++] = x->shape[i];
            continue;
        }
        for (int k = 0; k < ix->rank; k++)
            out->shape[out->rank++] = ix->shape[k];
    }
    if (out->rank == 0) { /* a 0-d index into a 1-d tensor: mera tensors have at least one axis */
        out->rank = 1;
        out->shape[0] = 1;
    }
    return MERA_OK;
}

/* argmax / argmin: int64 indices along `axis` of float32 or per-tensor quantized data. */
static const char *const inputs_argmax[] = {"data"};
static const mera_attr_spec attrs_argmax[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "0", "the axis (negative: from the end)"},
    {"keepdims", MERA_ATTR_INT, 0, 0, NULL, "1", "keep the axis with size 1"},
    {"select_last_index", MERA_ATTR_INT, 0, 0, NULL, "0", "1: the last of equal values, 0: the first"},
    END_ATTRS,
};
#define inputs_argmin inputs_argmax
#define attrs_argmin attrs_argmax
static mera_status infer_argmax(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    const mera_type *x = ctx->in[0];
    int64_t axis, keep = attr_i(ctx, "keepdims"), last = attr_i(ctx, "select_last_index");
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    if ((keep != 0 && keep != 1) || (last != 0 && last != 1))
        return FAIL(ctx, MERA_ERR_ATTR, "keepdims = %lld and select_last_index = %lld must be 0 or 1",
                    (long long)keep, (long long)last);
    if (!keep && x->rank == 1)
        return FAIL(ctx, MERA_ERR_SHAPE, "keepdims = 0 of a 1-D tensor gives a 0-d tensor; mera tensors have at "
                    "least one axis");
    mera_type *out = &ctx->out[0];
    memset(out, 0, sizeof *out);
    out->dtype = MERA_DTYPE_INT64;
    out->layout = MERA_LAYOUT_ANY;
    for (int i = 0; i < x->rank; i++)
        if (i != axis || keep)
            out->shape[out->rank++] = i == axis ? 1 : x->shape[i];
    return MERA_OK;
}
#define infer_argmin infer_argmax

/* rows_valid: data unchanged; count (int64 [1]) says how many entries of `axis` are valid. */
static const char *const inputs_rows_valid[] = {"data", "count"};
static const mera_attr_spec attrs_rows_valid[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "0", "the axis whose first `count` entries are valid"},
    END_ATTRS,
};
static mera_status infer_rows_valid(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0], *c = ctx->in[1];
    char d[160];
    if (c->dtype != MERA_DTYPE_INT64 || c->rank != 1 || c->shape[0] != 1)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be an int64 tensor of shape [1]", in_desc(ctx, 1, d, sizeof d));
    int64_t axis;
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    ctx->out[0] = *x;
    return MERA_OK;
}

/* ---- PyTorch's own quantized kernels: batch_norm, add_scalar, mul_scalar ---- */

/* batch_norm: y = x * scale[c] + shift[c], c the index on `axis`. scale and
 * shift are float32 [C] tensors (the frontend computes them as PyTorch's
 * compute_fused_params does); the quantized kernel derives PyTorch's
 * multiplier and offset from them and the scales (docs/numerics.md 5a). */
static const char *const inputs_batch_norm[] = {"data", "scale", "shift"};
static const mera_attr_spec attrs_batch_norm[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "1", "the channel axis"},
    ACTIVATION_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_batch_norm(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    const mera_type *x = ctx->in[0];
    int64_t axis;
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    for (int i = 1; i <= 2; i++) {
        char d[160], sh[128];
        const mera_type *p = ctx->in[i];
        if (p->dtype != MERA_DTYPE_FLOAT32)
            return FAIL(ctx, MERA_ERR_DTYPE, "%s must be float32, got %s", in_desc(ctx, i, d, sizeof d),
                        mera_dtype_name(p->dtype));
        if (p->rank != 1 || p->shape[0] != x->shape[axis]) {
            mera_shape_format(p->shape, p->rank, sh, sizeof sh);
            return FAIL(ctx, MERA_ERR_SHAPE, "%s must have shape [%lld] (the channels on axis %lld), got %s",
                        in_desc(ctx, i, d, sizeof d), (long long)x->shape[axis], (long long)axis, sh);
        }
    }
    ctx->out[0] = *x;
    return set_output_quant(ctx, &ctx->out[0]);
}

/* prelu: slope[c] on `axis`, or one slope for every element. A quantized
 * input takes a per-tensor quantized slope (PyTorch's quint8 weight). */
static const char *const inputs_prelu[] = {"data", "slope"};
static const mera_attr_spec attrs_prelu[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "1", "the channel axis the slopes run along"},
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_prelu(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    const mera_type *x = ctx->in[0], *w = ctx->in[1];
    char d[160], sh[128];
    int64_t axis;
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    if (is_float(x) ? !is_float(w)
                    : !(mera_dtype_is_quantized_int(w->dtype) && w->q.kind == MERA_QUANT_PER_TENSOR))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be %s like input 0, got %s%s", in_desc(ctx, 1, d, sizeof d),
                    is_float(x) ? "float32" : "a per-tensor quantized int8/uint8 tensor", mera_dtype_name(w->dtype),
                    w->q.kind == MERA_QUANT_PER_AXIS ? " with per-axis quantization" : "");
    int64_t nw = mera_type_numel(w);
    if (w->rank != 1 || (nw != 1 && nw != x->shape[axis])) {
        mera_shape_format(w->shape, w->rank, sh, sizeof sh);
        return FAIL(ctx, MERA_ERR_SHAPE, "%s must have shape [1] or [%lld] (the channels on axis %lld), got %s",
                    in_desc(ctx, 1, d, sizeof d), (long long)x->shape[axis], (long long)axis, sh);
    }
    ctx->out[0] = *x;
    return set_output_quant(ctx, &ctx->out[0]);
}

/* elu: tabulated like the activations above (kernels/ref/elementwise.c). */
static const char *const inputs_elu[] = {"data"};
static const mera_attr_spec attrs_elu[] = {
    {"alpha", MERA_ATTR_FLOAT, 0, 0, NULL, "1", "scale of the negative part"},
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_elu(mera_infer_ctx *ctx)
{
    if (!isfinite(attr_f(ctx, "alpha")))
        return FAIL(ctx, MERA_ERR_ATTR, "alpha %g is not finite", attr_f(ctx, "alpha"));
    return infer_unary_qout(ctx);
}

/* gelu (exact or tanh form): tabulated like elu; PyTorch's quantized gelu
 * keeps the input's parameters, which is the default here too (an ONNX QDQ
 * import or mera.Quantizer give the output its own). */
static const char *const inputs_gelu[] = {"data"};
static const mera_attr_spec attrs_gelu[] = {
    {"approximate", MERA_ATTR_STRING, 0, 0, "none|tanh", "none", "none: the erf form; tanh: PyTorch's tanh approximation"},
    TORCH_MEMORY_FORMAT_ATTR,
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_gelu(mera_infer_ctx *ctx) { return infer_unary_qout(ctx); }

/* add_scalar / mul_scalar: a quantized input's output parameters follow
 * from its own and the value, by PyTorch's rules (qadd.cpp _add_scalar_out,
 * qmul.cpp _mul_scalar_out); mera_scalar_op_qparams is shared with the
 * kernels. */
static const mera_attr_spec attrs_scalar_op[] = {
    {"value", MERA_ATTR_FLOAT, 1, 0, NULL, NULL, "the scalar operand"},
    {"relu", MERA_ATTR_INT, 0, 0, NULL, "0", "1: max(y, 0) after the op (PyTorch's add_scalar_relu/mul_scalar_relu)"},
    END_ATTRS,
};
static const char *const inputs_add_scalar[] = {"data"};
#define attrs_add_scalar attrs_scalar_op
static const char *const inputs_mul_scalar[] = {"data"};
#define attrs_mul_scalar attrs_scalar_op

int mera_scalar_op_qparams(mera_op op, double value, const mera_type *x, double *scale, int32_t *zp, int64_t *c_q)
{
    double s = x->q.scale;
    int64_t z = x->q.zero_point, lo = x->dtype == MERA_DTYPE_UINT8 ? 0 : -128, hi = lo + 255;
    *c_q = 0;
    if (op == MERA_OP_MUL_SCALAR) {
        if (value > 0.0) {
            *scale = value * s, *zp = (int32_t)z;
        } else if (value == 0.0) {
            *scale = 1.0, *zp = 0;
        } else {
            *scale = fabs(value) * s, *zp = (int32_t)(hi - (z - lo));
        }
        return isfinite(*scale) && *scale > 0.0;
    }
    double cq = nearbyint(value / s);
    if (!(fabs(cq) < 1e15))
        return 0;
    *c_q = (int64_t)cq;
    int64_t shifted = z - *c_q;
    if (lo > shifted)
        *scale = ((double)hi - (double)shifted) / ((double)hi - (double)lo) * s, *zp = (int32_t)lo;
    else if (hi < shifted)
        *scale = ((double)shifted - (double)lo) / ((double)hi - (double)lo) * s, *zp = (int32_t)hi;
    else
        *scale = s, *zp = (int32_t)shifted;
    return isfinite(*scale) && *scale > 0.0;
}

static mera_status infer_scalar_op(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    double v = attr_f(ctx, "value");
    int64_t relu = attr_i(ctx, "relu");
    if (!isfinite(v))
        return FAIL(ctx, MERA_ERR_ATTR, "value %g is not finite", v);
    if (relu != 0 && relu != 1)
        return FAIL(ctx, MERA_ERR_ATTR, "relu = %lld must be 0 or 1", (long long)relu);
    ctx->out[0] = *ctx->in[0];
    if (is_float(ctx->in[0]))
        return MERA_OK;
    double s;
    int32_t z;
    int64_t c_q;
    if (!mera_scalar_op_qparams(ctx->op, v, ctx->in[0], &s, &z, &c_q))
        return FAIL(ctx, MERA_ERR_ATTR, "value %g with the input's scale %g gives no valid output scale", v,
                    ctx->in[0]->q.scale);
    ctx->out[0].q.scale = s;
    ctx->out[0].q.zero_point = z;
    return MERA_OK;
}
static mera_status infer_add_scalar(mera_infer_ctx *ctx) { return infer_scalar_op(ctx); }
static mera_status infer_mul_scalar(mera_infer_ctx *ctx) { return infer_scalar_op(ctx); }

/* qtanh: qtanh_kernel (QuantizedOpKernels.cpp) writes fixed output
 * parameters, scale 2/256 with zero point 128 (quint8) or 0 (qint8). */
static const char *const inputs_qtanh[] = {"data"};
static const mera_attr_spec attrs_qtanh[] = {TORCH_MEMORY_FORMAT_ATTR, END_ATTRS};
static mera_status infer_qtanh(mera_infer_ctx *ctx)
{
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    ctx->out[0] = *ctx->in[0];
    if (!is_float(ctx->in[0])) {
        ctx->out[0].q.scale = 0.0078125;
        ctx->out[0].q.zero_point = ctx->in[0]->dtype == MERA_DTYPE_UINT8 ? 128 : 0;
    }
    return MERA_OK;
}

/* linear_dynamic: float data [..., K], an int8 weight [N, K] quantized per
 * tensor or per output channel (axis 0), an optional float bias [N]; float
 * out [..., N]. */
static const char *const inputs_linear_dynamic[] = {"data", "int8_weight", "bias"};
static const mera_attr_spec attrs_linear_dynamic[] = {
    {"reduce_range", MERA_ATTR_INT, 0, 0, NULL, "0", "1: the input's parameters span [0, 127] (fbgemm's reduce_range)"},
    {"relu", MERA_ATTR_INT, 0, 0, NULL, "0", "1: max(y, 0) (quantized::linear_relu_dynamic)"},
    END_ATTRS,
};
static mera_status infer_linear_dynamic(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0], *w = ctx->in[1], *b = ctx->in[2];
    char d[160], s[128], s2[128];
    if (x->dtype != MERA_DTYPE_FLOAT32 || x->rank < 1)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a float32 tensor of rank >= 1, got %s of rank %d",
                    in_desc(ctx, 0, d, sizeof d), mera_dtype_name(x->dtype), x->rank);
    if (w->dtype != MERA_DTYPE_INT8 || w->rank != 2 || w->q.kind == MERA_QUANT_NONE ||
        (w->q.kind == MERA_QUANT_PER_AXIS && w->q.axis != 0))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be an int8 [N, K] tensor quantized per tensor or per axis 0",
                    in_desc(ctx, 1, d, sizeof d));
    mera_shape_format(x->shape, x->rank, s, sizeof s);
    mera_shape_format(w->shape, w->rank, s2, sizeof s2);
    if (x->shape[x->rank - 1] != w->shape[1])
        return FAIL(ctx, MERA_ERR_SHAPE, "data %s has %lld features, the weight %s takes %lld", s,
                    (long long)x->shape[x->rank - 1], s2, (long long)w->shape[1]);
    if (b && (b->dtype != MERA_DTYPE_FLOAT32 || b->rank != 1 || b->shape[0] != w->shape[0]))
        return FAIL(ctx, MERA_ERR_SHAPE, "%s must be float32 [%lld]", in_desc(ctx, 2, d, sizeof d),
                    (long long)w->shape[0]);
    for (const char *name = "reduce_range"; name; name = strcmp(name, "relu") ? "relu" : NULL)
        if (attr_i(ctx, name) != 0 && attr_i(ctx, name) != 1)
            return FAIL(ctx, MERA_ERR_ATTR, "%s = %lld must be 0 or 1", name, (long long)attr_i(ctx, name));
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->shape[x->rank - 1] = w->shape[0];
    out->layout = MERA_LAYOUT_ANY;
    return MERA_OK;
}

/* layer_norm_q: quantized data, normalized over its last num_axes axes;
 * weight and bias (optional) float with one value per normalized element. */
static const char *const inputs_layer_norm_q[] = {"data", "gamma", "beta"};
static const mera_attr_spec attrs_layer_norm_q[] = {
    {"num_axes", MERA_ATTR_INT, 1, 0, NULL, NULL, "how many trailing axes form one normalized group"},
    {"eps", MERA_ATTR_FLOAT, 0, 0, NULL, "1e-5", "added to the variance"},
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_layer_norm_q(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    char d[160];
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    if (is_float(x))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a quantized int8/uint8 tensor", in_desc(ctx, 0, d, sizeof d));
    int64_t k = attr_i(ctx, "num_axes"), n = 1;
    if (k < 1 || k > x->rank)
        return FAIL(ctx, MERA_ERR_ATTR, "num_axes = %lld must be in [1, %d]", (long long)k, x->rank);
    for (int i = x->rank - (int)k; i < x->rank; i++)
        n *= x->shape[i];
    if (!(attr_f(ctx, "eps") >= 0.0) || !isfinite(attr_f(ctx, "eps")))
        return FAIL(ctx, MERA_ERR_ATTR, "eps %g must be finite and >= 0", attr_f(ctx, "eps"));
    for (int i = 1; i <= 2; i++)
        if (ctx->in[i] && (ctx->in[i]->dtype != MERA_DTYPE_FLOAT32 || mera_type_numel(ctx->in[i]) != n))
            return FAIL(ctx, MERA_ERR_SHAPE, "%s must be float32 with %lld values (the normalized shape)",
                        in_desc(ctx, i, d, sizeof d), (long long)n);
    ctx->out[0] = *x;
    return set_output_quant(ctx, &ctx->out[0]);
}

/* group_norm_q: quantized data [N, C, ...] (rank >= 3, channels on axis 1), normalized per group of
 * C / num_groups channels; weight and bias (optional) float with one value per channel. Which of
 * PyTorch's two kernels it follows is an attribute (docs/numerics.md section 5a). */
static const char *const inputs_group_norm_q[] = {"data", "gamma", "beta"};
static const mera_attr_spec attrs_group_norm_q[] = {
    {"num_groups", MERA_ATTR_INT, 1, 0, NULL, NULL, "channel groups (the channel count for instance norm)"},
    {"eps", MERA_ATTR_FLOAT, 0, 0, NULL, "1e-5", "added to the variance"},
    TORCH_MEMORY_FORMAT_ATTR,
    {"torch_threads", MERA_ATTR_INT, 0, 0, NULL, "1",
     "at::get_num_threads() at import: the channels-last kernel's float sums follow its thread split"},
    QOUT_ATTRS,
    END_ATTRS,
};
static mera_status infer_group_norm_q(mera_infer_ctx *ctx)
{
    const mera_type *x = ctx->in[0];
    char d[160], s[128];
    mera_status st = check_activation(ctx, 0);
    if (st)
        return st;
    if (is_float(x))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a quantized int8/uint8 tensor", in_desc(ctx, 0, d, sizeof d));
    mera_shape_format(x->shape, x->rank, s, sizeof s);
    if (x->rank < 3)
        return FAIL(ctx, MERA_ERR_SHAPE, "data %s must have rank >= 3 ([N, C, spatial...])", s);
    int64_t g = attr_i(ctx, "num_groups"), c = x->shape[1];
    if (g < 1 || c % g != 0)
        return FAIL(ctx, MERA_ERR_ATTR, "num_groups = %lld must be >= 1 and divide the %lld channels of data %s",
                    (long long)g, (long long)c, s);
    if (!(attr_f(ctx, "eps") >= 0.0) || !isfinite(attr_f(ctx, "eps")))
        return FAIL(ctx, MERA_ERR_ATTR, "eps %g must be finite and >= 0", attr_f(ctx, "eps"));
    if (attr_i(ctx, "torch_threads") < 1 || attr_i(ctx, "torch_threads") > 4096)
        return FAIL(ctx, MERA_ERR_ATTR, "torch_threads = %lld must be in [1, 4096]",
                    (long long)attr_i(ctx, "torch_threads"));
    for (int i = 1; i <= 2; i++)
        if (ctx->in[i] && (ctx->in[i]->dtype != MERA_DTYPE_FLOAT32 || mera_type_numel(ctx->in[i]) != c))
            return FAIL(ctx, MERA_ERR_SHAPE, "%s must be float32 with %lld values (one per channel)",
                        in_desc(ctx, i, d, sizeof d), (long long)c);
    ctx->out[0] = *x;
    return set_output_quant(ctx, &ctx->out[0]);
}

/* ---- data-dependent indexing (host): compare, nonzero, gather_nd, scatter_nd ---------------------------- */

/* compare: lhs (> < == >= <=) rhs of two plain tensors of one dtype, numpy broadcasting; uint8 0/1 (ONNX bool) */
static const char *const inputs_compare[] = {"lhs", "rhs"};
static const mera_attr_spec attrs_compare[] = {
    {"kind", MERA_ATTR_STRING, 1, 0, "greater|less|equal|greater_or_equal|less_or_equal", NULL, "the comparison"},
    END_ATTRS,
};
static mera_status infer_compare(mera_infer_ctx *ctx)
{
    char d[160];
    for (int i = 0; i < 2; i++) {
        const mera_type *t = ctx->in[i];
        if (!plain_numeric(t))
            return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain float32, int8, uint8, int32 or int64 tensor, got "
                        "%s%s", in_desc(ctx, i, d, sizeof d), mera_dtype_name(t->dtype),
                        t->q.kind != MERA_QUANT_NONE ? " with quantization parameters (dequantize it)" : "");
    }
    if (ctx->in[0]->dtype != ctx->in[1]->dtype)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s is %s but input 0 is %s", in_desc(ctx, 1, d, sizeof d),
                    mera_dtype_name(ctx->in[1]->dtype), mera_dtype_name(ctx->in[0]->dtype));
    mera_status st = broadcast(ctx, &ctx->out[0]);
    if (st)
        return st;
    ctx->out[0].dtype = MERA_DTYPE_UINT8;
    return MERA_OK;
}

/* nonzero: of a plain tensor of rank r with n elements, int64 [r + 1, n]: the indices of its nonzero elements in
 * row-major order (ONNX NonZero) in the first count columns of the first r rows, 0 after them; the last row is
 * [count, 0, ...]. The importer slices the indices and the count apart (docs/frontends.md). */
static const char *const inputs_nonzero[] = {"data"};
static const mera_attr_spec attrs_nonzero[] = {END_ATTRS};
static mera_status infer_nonzero(mera_infer_ctx *ctx)
{
    char d[160];
    const mera_type *t = ctx->in[0];
    if (!plain_numeric(t))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain float32, int8, uint8, int32 or int64 tensor, got %s%s",
                    in_desc(ctx, 0, d, sizeof d), mera_dtype_name(t->dtype),
                    t->q.kind != MERA_QUANT_NONE ? " with quantization parameters (dequantize it)" : "");
    mera_type *out = &ctx->out[0];
    memset(out, 0, sizeof *out);
    out->dtype = MERA_DTYPE_INT64;
    out->layout = MERA_LAYOUT_ANY;
    out->rank = 2;
    out->shape[0] = t->rank + 1;
    out->shape[1] = mera_type_numel(t);
    return MERA_OK;
}

/* The indices' last axis k, checked: int64, rank >= 1, 1 <= k <= data rank - b, the first b axes equal. */
static mera_status nd_indices(mera_infer_ctx *ctx, int b, int *k)
{
    char d[160], s[128], s2[128];
    const mera_type *x = ctx->in[0], *ix = ctx->in[1];
    if (ix->dtype != MERA_DTYPE_INT64 || ix->q.kind != MERA_QUANT_NONE)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be plain int64, got %s", in_desc(ctx, 1, d, sizeof d),
                    mera_dtype_name(ix->dtype));
    if (b < 0 || b >= x->rank || b >= ix->rank)
        return FAIL(ctx, MERA_ERR_ATTR, "batch_dims %d must be in 0..%d (below both ranks)", b,
                    (x->rank < ix->rank ? x->rank : ix->rank) - 1);
    *k = (int)ix->shape[ix->rank - 1];
    mera_shape_format(x->shape, x->rank, s, sizeof s);
    mera_shape_format(ix->shape, ix->rank, s2, sizeof s2);
    if (*k < 1 || *k > x->rank - b)
        return FAIL(ctx, MERA_ERR_SHAPE, "indices %s index %d axes of data %s (1..%d with batch_dims %d)", s2, *k, s,
                    x->rank - b, b);
    for (int i = 0; i < b; i++)
        if (x->shape[i] != ix->shape[i])
            return FAIL(ctx, MERA_ERR_SHAPE, "data %s and indices %s differ on batch axis %d", s, s2, i);
    return MERA_OK;
}

/* gather_nd: ONNX GatherND; output indices.shape[:-1] + data.shape[batch_dims + k:]; any dtype (bytes move). */
static const char *const inputs_gather_nd[] = {"data", "indices"};
static const mera_attr_spec attrs_gather_nd[] = {
    {"batch_dims", MERA_ATTR_INT, 0, 0, NULL, "0", "leading axes data and indices share"},
    END_ATTRS,
};
static mera_status infer_gather_nd(mera_infer_ctx *ctx)
{
    char d[160];
    const mera_type *x = ctx->in[0], *ix = ctx->in[1];
    int k, b = (int)attr_i(ctx, "batch_dims");
    mera_status st = nd_indices(ctx, b, &k);
    if (st)
        return st;
    if (x->q.kind == MERA_QUANT_PER_AXIS)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s is quantized per axis: gather_nd takes per-tensor parameters",
                    in_desc(ctx, 0, d, sizeof d));
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->layout = MERA_LAYOUT_ANY;
    out->rank = 0;
    for (int i = 0; i < ix->rank - 1; i++)
        out->shape[out->rank++] = ix->shape[i];
    for (int i = b + k; i < x->rank; i++)
        out->shape[out->rank++] = x->shape[i];
    if (out->rank == 0) {
        out->rank = 1;
        out->shape[0] = 1;
    }
    return MERA_OK;
}

/* scatter_nd: ONNX ScatterND; data copied, then updates (shape indices.shape[:-1] + data.shape[k:]) written at each
 * index tuple in order (reduction none: the last wins) or combined with add/mul/max/min. Plain data. */
static const char *const inputs_scatter_nd[] = {"data", "indices", "updates"};
static const mera_attr_spec attrs_scatter_nd[] = {
    {"reduction", MERA_ATTR_STRING, 0, 0, "none|add|mul|max|min", "none", "how an update combines with the data"},
    END_ATTRS,
};
static mera_status infer_scatter_nd(mera_infer_ctx *ctx)
{
    char d[160], s[128], s2[128];
    const mera_type *x = ctx->in[0], *ix = ctx->in[1], *u = ctx->in[2];
    int k;
    mera_status st = nd_indices(ctx, 0, &k);
    if (st)
        return st;
    if (!plain_numeric(x) || (strcmp(attr_s(ctx, "reduction"), "none") != 0 && x->dtype != MERA_DTYPE_FLOAT32 &&
                              x->dtype != MERA_DTYPE_INT32 && x->dtype != MERA_DTYPE_INT64))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be plain float32, int32 or int64 (any plain dtype for reduction "
                    "none), got %s%s", in_desc(ctx, 0, d, sizeof d), mera_dtype_name(x->dtype),
                    x->q.kind != MERA_QUANT_NONE ? " with quantization parameters" : "");
    if (u->dtype != x->dtype || u->q.kind != MERA_QUANT_NONE)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be plain %s like the data, got %s", in_desc(ctx, 2, d, sizeof d),
                    mera_dtype_name(x->dtype), mera_dtype_name(u->dtype));
    int want = ix->rank - 1 + x->rank - k, ok = u->rank == want || (want == 0 && u->rank == 1 && u->shape[0] == 1);
    for (int i = 0; ok && i < want; i++)
        ok = u->shape[i] == (i < ix->rank - 1 ? ix->shape[i] : x->shape[k + i - (ix->rank - 1)]);
    if (!ok) {
        mera_shape_format(u->shape, u->rank, s, sizeof s);
        mera_shape_format(ix->shape, ix->rank, s2, sizeof s2);
        return FAIL(ctx, MERA_ERR_SHAPE, "updates %s must be indices.shape[:-1] + data.shape[%d:] (indices %s)", s, k,
                    s2);
    }
    ctx->out[0] = *x;
    return MERA_OK;
}

/* ---- more float math, where, cumsum, gather_elements (host, issue 13) -------------------------------------- */

#define MATH_UNARY_OP(name)                                                     \
    static const char *const inputs_##name[] = {"data"};                        \
    static const mera_attr_spec attrs_##name[] = {END_ATTRS};                   \
    static mera_status infer_##name(mera_infer_ctx *ctx) { return infer_float_unary(ctx); }
MATH_UNARY_OP(sin)
MATH_UNARY_OP(cos)
MATH_UNARY_OP(tan)
MATH_UNARY_OP(asin)
MATH_UNARY_OP(acos)
MATH_UNARY_OP(atan)
MATH_UNARY_OP(sinh)
MATH_UNARY_OP(cosh)
MATH_UNARY_OP(asinh)
MATH_UNARY_OP(acosh)
MATH_UNARY_OP(atanh)
MATH_UNARY_OP(sign)
#undef MATH_UNARY_OP
static const char *const inputs_atan2[] = {"lhs", "rhs"};
static const mera_attr_spec attrs_atan2[] = {END_ATTRS};
static mera_status infer_atan2(mera_infer_ctx *ctx) { return infer_float_binary(ctx); }

/* where: cond ? x : y, numpy broadcasting of all three; cond a plain integer tensor (ONNX bool is uint8), x and y
 * plain tensors of one dtype. */
static const char *const inputs_where[] = {"cond", "x", "y"};
static const mera_attr_spec attrs_where[] = {END_ATTRS};
static mera_status infer_where(mera_infer_ctx *ctx)
{
    char d[160];
    const mera_type *c = ctx->in[0], *x = ctx->in[1], *y = ctx->in[2];
    if (!plain_numeric(c) || c->dtype == MERA_DTYPE_FLOAT32)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain uint8 (bool), int8, int32 or int64 tensor, got %s%s",
                    in_desc(ctx, 0, d, sizeof d), mera_dtype_name(c->dtype),
                    c->q.kind != MERA_QUANT_NONE ? " with quantization parameters" : "");
    for (int i = 1; i < 3; i++)
        if (!plain_numeric(ctx->in[i]))
            return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain float32, int8, uint8, int32 or int64 tensor, got "
                        "%s%s", in_desc(ctx, i, d, sizeof d), mera_dtype_name(ctx->in[i]->dtype),
                        ctx->in[i]->q.kind != MERA_QUANT_NONE ? " with quantization parameters (dequantize it)" : "");
    if (x->dtype != y->dtype)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s is %s but input 1 is %s", in_desc(ctx, 2, d, sizeof d),
                    mera_dtype_name(y->dtype), mera_dtype_name(x->dtype));
    mera_type *out = &ctx->out[0];
    int rank = 0;
    for (int i = 0; i < 3; i++)
        if (ctx->in[i]->rank > rank)
            rank = ctx->in[i]->rank;
    *out = *x;
    out->rank = rank;
    out->layout = MERA_LAYOUT_ANY;
    for (int k = 0; k < rank; k++) {
        int64_t dim = 1;
        for (int i = 0; i < 3; i++) {
            const mera_type *t = ctx->in[i];
            int j = k - (rank - t->rank);
            int64_t v = j >= 0 ? t->shape[j] : 1;
            if (v != 1 && dim != 1 && v != dim) {
                char s[3][128];
                for (int m = 0; m < 3; m++)
                    mera_shape_format(ctx->in[m]->shape, ctx->in[m]->rank, s[m], sizeof s[m]);
                return FAIL(ctx, MERA_ERR_SHAPE, "shapes %s, %s and %s do not broadcast (axis %d)", s[0], s[1], s[2],
                            k);
            }
            if (v != 1)
                dim = v;
        }
        out->shape[k] = dim;
    }
    return MERA_OK;
}

/* cumsum: running sums along `axis` of a plain float32, int32 or int64 tensor (ONNX CumSum, its axis constant). */
static const char *const inputs_cumsum[] = {"data"};
static const mera_attr_spec attrs_cumsum[] = {
    {"axis", MERA_ATTR_INT, 1, 0, NULL, NULL, "the axis (negative: from the end)"},
    {"exclusive", MERA_ATTR_INT, 0, 0, NULL, "0", "1: each sum leaves out its own element"},
    {"reverse", MERA_ATTR_INT, 0, 0, NULL, "0", "1: sum from the end of the axis"},
    END_ATTRS,
};
static mera_status infer_cumsum(mera_infer_ctx *ctx)
{
    char d[160];
    const mera_type *x = ctx->in[0];
    if (x->q.kind != MERA_QUANT_NONE || (x->dtype != MERA_DTYPE_FLOAT32 && x->dtype != MERA_DTYPE_INT32 &&
                                         x->dtype != MERA_DTYPE_INT64))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain float32, int32 or int64 tensor, got %s%s",
                    in_desc(ctx, 0, d, sizeof d), mera_dtype_name(x->dtype),
                    x->q.kind != MERA_QUANT_NONE ? " with quantization parameters (dequantize it)" : "");
    int64_t axis;
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    for (int i = 0; i < 2; i++) {
        const char *k = i ? "reverse" : "exclusive";
        if (attr_i(ctx, k) != 0 && attr_i(ctx, k) != 1)
            return FAIL(ctx, MERA_ERR_ATTR, "%s = %lld must be 0 or 1", k, (long long)attr_i(ctx, k));
    }
    ctx->out[0] = *x;
    ctx->out[0].layout = MERA_LAYOUT_ANY;
    return MERA_OK;
}

/* gather_elements: ONNX GatherElements; int64 indices of the data's rank, each axis but `axis` at most the data's;
 * the output has the indices' shape and the data's dtype (plain). */
static const char *const inputs_gather_elements[] = {"data", "indices"};
static const mera_attr_spec attrs_gather_elements[] = {
    {"axis", MERA_ATTR_INT, 0, 0, NULL, "0", "the axis indexed (negative: from the end)"},
    END_ATTRS,
};
static mera_status infer_gather_elements(mera_infer_ctx *ctx)
{
    char d[160], s[128], s2[128];
    const mera_type *x = ctx->in[0], *ix = ctx->in[1];
    if (!plain_numeric(x))
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be a plain float32, int8, uint8, int32 or int64 tensor, got %s%s",
                    in_desc(ctx, 0, d, sizeof d), mera_dtype_name(x->dtype),
                    x->q.kind != MERA_QUANT_NONE ? " with quantization parameters (dequantize it)" : "");
    if (ix->dtype != MERA_DTYPE_INT64 || ix->q.kind != MERA_QUANT_NONE)
        return FAIL(ctx, MERA_ERR_DTYPE, "%s must be plain int64, got %s", in_desc(ctx, 1, d, sizeof d),
                    mera_dtype_name(ix->dtype));
    int64_t axis;
    if (!normalize_axis(attr_i(ctx, "axis"), x->rank, &axis))
        return FAIL(ctx, MERA_ERR_ATTR, "axis %lld is out of range for rank %d", (long long)attr_i(ctx, "axis"),
                    x->rank);
    mera_shape_format(x->shape, x->rank, s, sizeof s);
    mera_shape_format(ix->shape, ix->rank, s2, sizeof s2);
    if (ix->rank != x->rank)
        return FAIL(ctx, MERA_ERR_SHAPE, "indices %s must have the rank of data %s", s2, s);
    for (int i = 0; i < x->rank; i++)
        if (i != axis && ix->shape[i] > x->shape[i])
            return FAIL(ctx, MERA_ERR_SHAPE, "indices %s exceed data %s on axis %d", s2, s, i);
    mera_type *out = &ctx->out[0];
    *out = *x;
    out->layout = MERA_LAYOUT_ANY;
    memcpy(out->shape, ix->shape, sizeof out->shape);
    return MERA_OK;
}

/* ---- the table ---------------------------------------------------------- */

const mera_op_info mera_op_table[MERA_OP_COUNT] = {
#define MERA_OP(e, name, min_in, max_in, dna, flags, doc) \
    [MERA_OP_##e] = {#name, min_in, max_in, MERA_DNA_##dna, flags, inputs_##name, attrs_##name, infer_##name, doc},
#include "ir/ops.def"
#undef MERA_OP
};

/* The facts of each ops.def line that C can check while compiling. */
#define ONLY_IF(flags, bit, cond) (!((flags) & (bit)) || (cond))
#define MERA_OP(e, name, min_in, max_in, dna, flags, doc)                                                        \
    _Static_assert(1 <= (min_in) && (min_in) <= (max_in) && (max_in) <= MERA_MAX_NODE_INPUTS,                   \
                   #name ": input counts");                                                                     \
    _Static_assert(ONLY_IF(flags, MERA_OPF_ACTIVATION, (flags) & MERA_OPF_QOUT),                                \
                   #name ": a fused activation is applied before the output is quantized (needs QOUT)");       \
    _Static_assert(ONLY_IF(flags, MERA_OPF_WEIGHTS, (min_in) >= 2 && (max_in) <= 3),                            \
                   #name ": WEIGHTS means inputs data, weight and an optional bias");                          \
    _Static_assert(((flags) & (MERA_OPF_FLOAT_IN | MERA_OPF_QUANT_IN)) != (MERA_OPF_FLOAT_IN | MERA_OPF_QUANT_IN), \
                   #name ": input 0 cannot be always float and always quantized");                              \
    _Static_assert(ONLY_IF(flags, MERA_OPF_FLOAT_IN, MERA_DNA_##dna == MERA_DNA_HOST_FLOAT),                    \
                   #name ": the DNA computes on int8/uint8 tensors only");                                     \
    _Static_assert((MERA_DNA_##dna == MERA_DNA_CONV) == !!((flags) & MERA_OPF_WEIGHTS),                         \
                   #name ": CONV layers are exactly the ops with weights");                                    \
    _Static_assert(ONLY_IF(flags, MERA_OPF_CUT_ROWS | MERA_OPF_CUT_CHANNELS, MERA_DNA_##dna == MERA_DNA_VEC),   \
                   #name ": only vector layers take a split rule (CONV layers are tiled by sched/conv.c)");    \
    _Static_assert(ONLY_IF(flags, MERA_OPF_WINDOW, MERA_DNA_##dna == MERA_DNA_VEC),                             \
                   #name ": WINDOW is a vector-unit cost");
#include "ir/ops.def"
#undef MERA_OP
#undef ONLY_IF

const char *mera_dna_class_name(mera_dna_class c)
{
    switch (c) {
    case MERA_DNA_HOST: return "host";
    case MERA_DNA_HOST_FLOAT: return "host_float";
    case MERA_DNA_CONV: return "conv";
    case MERA_DNA_VEC: return "vec";
    case MERA_DNA_COPY: return "copy";
    }
    return "?";
}

static const mera_attr_spec *spec_of(const mera_op_info *info, const char *key)
{
    for (const mera_attr_spec *sp = info->attrs; sp->key; sp++)
        if (strcmp(sp->key, key) == 0)
            return sp;
    return NULL;
}

mera_status mera_op_table_check(mera_error *err)
{
    for (int op = 0; op < MERA_OP_COUNT; op++) {
        const mera_op_info *info = &mera_op_table[op];
        unsigned f = info->flags;
        const mera_attr_spec *kernel = spec_of(info, "kernel");
        const char *bad = NULL;
        if (!!(f & MERA_OPF_ACTIVATION) != !!spec_of(info, "activation"))
            bad = "ACTIVATION must be set exactly when the op has an `activation` attribute";
        else if (!!(f & MERA_OPF_SPATIAL) != !!spec_of(info, "layout"))
            bad = "SPATIAL must be set exactly when the op has a `layout` attribute";
        else if (!!(f & MERA_OPF_WEIGHTS) != (info->max_inputs >= 2 && info->max_inputs <= 3 &&
                                               strcmp(info->input_names[1], "weight") == 0))
            bad = "WEIGHTS must be set exactly when input 1 is named \"weight\"";
        else if ((f & MERA_OPF_WINDOW) && !(kernel && kernel->kind == MERA_ATTR_INTS && kernel->count == 2))
            bad = "WINDOW needs a `kernel` attribute of two ints";
        else if ((f & MERA_OPF_QOUT) && !spec_of(info, "out_scale"))
            bad = "QOUT needs an `out_scale` attribute";
        if (bad)
            return mera_fail(err, MERA_ERR_INVALID, "op table: %s (%s): %s", info->name,
                             mera_dna_class_name(info->dna), bad);
    }
    return MERA_OK;
}

int mera_op_lookup(const char *name)
{
    for (int i = 0; i < MERA_OP_COUNT; i++)
        if (strcmp(mera_op_table[i].name, name) == 0)
            return i;
    return -1;
}
