/* Where a quantized layer may be cut into tiles without changing a byte
 * (split.h), and whether a conv2d takes fbgemm's saturating depthwise
 * path. */
#include <string.h>

#include "kernels/ref/refutil.h"
#include "kernels/split.h"

/* ---- conv2d: fbgemm's depthwise fast path ------------------------------ */

/* fbgemm's depthwise fast path (takeDepthWiseFastPath in FbgemmConv.cc):
 * every input channel its own group, one or two outputs per group,
 * groups % 8 == 0, a square 3x3/5x5/7x7 kernel, strides 1 or 2, no
 * dilation, "same" padding (k-1)/2 on every side. PyTorch sends such convs
 * to it for uint8 activations only (fbgemm's qconv takes no int8
 * activations). There, pairs of taps saturate to int16 (ref/conv.c,
 * depthwise_acc).
 *
 * A tile of such a layer, run as its own conv with its padding
 * materialised (pad 0), fails the padding test; and a tile of an output
 * channel block may have fewer than 8 groups. So the scheduler decides on
 * the whole layer and passes the answer down as depthwise_saturate = yes
 * or no. "yes" is honoured wherever the depthwise accumulation exists:
 * one input channel per group and uint8 activations (int8 activations
 * never reach fbgemm's kernel, and the pair arithmetic works on the raw
 * uint8 bytes). */
int mera_conv_depthwise_saturates(const mera_node *node, const mera_type *x, const mera_type *w)
{
    const char *mode = mera_attr_string(node, "depthwise_saturate");
    int64_t groups = mera_attr_int(node, "groups");
    int nhwc = ref_nhwc(node);
    int64_t xc = nhwc ? x->shape[3] : x->shape[1];
    if (groups <= 0 || xc % groups != 0)
        return 0;
    int64_t cg = xc / groups;
    if (x->dtype != MERA_DTYPE_UINT8 || cg != 1)
        return 0;
    if (mode && strcmp(mode, "yes") == 0)
        return 1;
    if (mode && strcmp(mode, "no") == 0)
        return 0;
    /* auto: PyTorch's decision on this node's own geometry */
    const int64_t *s = w->shape;
    int64_t kh, kw, o;
    if (ref_is(node, "kernel_layout", "OHWI")) {        /* [O, KH, KW, I] */
        kh = s[1]; kw = s[2]; o = s[0];
    } else if (ref_is(node, "kernel_layout", "HWIO")) { /* [KH, KW, I, O] */
        kh = s[0]; kw = s[1]; o = s[3];
    } else {                                            /* [O, I, KH, KW] */
        kh = s[2]; kw = s[3]; o = s[0];
    }
    int64_t og = o / groups;
    const int64_t *st = ref_ints(node, "strides"), *pad = ref_ints(node, "padding"),
                  *dil = ref_ints(node, "dilation");
    return (og == 1 || og == 2) && groups % 8 == 0 && kh == kw && (kh == 3 || kh == 5 || kh == 7) &&
           (st[0] == 1 || st[0] == 2) && (st[1] == 1 || st[1] == 2) && dil[0] == 1 && dil[1] == 1 &&
           pad[0] == (kh - 1) / 2 && pad[1] == (kw - 1) / 2 && pad[2] == pad[0] && pad[3] == pad[1];
}

/* ---- vector layers: where tiles reproduce the whole tensor -------------- */

static mera_split_rule rule(mera_split_axis axis, int64_t granule)
{
    mera_split_rule r = {axis, granule > 0 ? granule : 1};
    return r;
}

static const mera_split_rule NO_SPLIT = {MERA_SPLIT_NONE, 1};

static int is_q8(const mera_type *t)
{
    return t && (t->dtype == MERA_DTYPE_UINT8 || t->dtype == MERA_DTYPE_INT8) &&
           t->q.kind != MERA_QUANT_PER_AXIS && t->rank <= 4;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* A channel granule for kernels whose formula does not depend on the
 * channel, except that PyTorch treats a contiguous tensor of one channel
 * as channels-last (ref_torch_channels_last) and then takes the other
 * formula: no tile may have exactly one channel unless the whole has. The
 * smallest g >= 2 with C % g != 1 keeps every tile, the last included,
 * at 0 or >= 2 channels modulo g. */
static int64_t granule_no_single_channel(int64_t c)
{
    for (int64_t g = 2; g < c; g++)
        if (c % g != 1)
            return g;
    return c;
}

/* TensorIterator's row length for the (not permuted) walk of ref/
 * elementwise.c: the output's dimensions coalesced innermost first while
 * every operand stays contiguous across them (ref_ti_row_len, shared with
 * those kernels so that the two cannot disagree). */
static int64_t ti_row(const mera_type *out, const mera_type *const *in, int n_in)
{
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK];
    ref_bcast_strides(in[0], out, sa);
    if (n_in > 1)
        ref_bcast_strides(in[1], out, sb);
    return ref_ti_row_len(out, sa, n_in > 1 ? sb : NULL);
}

/* add, mul, leaky_relu, hardswish, hardsigmoid, sigmoid (ref/elementwise.c):
 * each element takes ATen's vector or scalar body by its position p in
 * TensorIterator's walk: vector iff p % row < row - row % 64, row being
 * the coalesced innermost extent (ti_row above).
 *   - PyTorch's memory order differs from ours (torch_memory_format
 *     against the data layout): positions are permuted; NONE.
 *   - dim 0 > 1: a one-row tile can coalesce across dim 0 where the whole
 *     did not (a [2,1,W,C] tile of [2,H,W,C] + [2,1,W,C]); NONE.
 *   - row within one band (row <= R, R = product of dims 2..): the tile
 *     coalesces its inner dims exactly as the whole does (same shapes and
 *     strides), so row and p % row are unchanged: any cut, granule 1.
 *   - row spans dim 1 (the whole tensor is one row; dim 0 is 1): the
 *     scalar tail is the tensor's last numel % 64 elements. With every
 *     tile but the last a multiple of 64 elements, a tile's own tail is
 *     exactly the whole's: granule 64 / gcd(R, 64) rows. */
static mera_split_rule rule_ti(const mera_node *node, const mera_type *const *in, int n_in, const mera_type *out)
{
    if (out->rank < 2)
        return NO_SPLIT;
    int data_nhwc = out->rank == 4 && out->layout == MERA_LAYOUT_NHWC;
    int perm[MERA_MAX_RANK];
    if (ref_torch_order(out->rank, data_nhwc, ref_torch_cl(node, data_nhwc), perm))
        return NO_SPLIT;
    if (out->shape[0] != 1)
        return NO_SPLIT;
    int64_t R = 1;
    for (int k = 2; k < out->rank; k++)
        R *= out->shape[k];
    if (R <= 0 || out->shape[1] <= 0)
        return NO_SPLIT;
    int64_t row = ti_row(out, in, n_in);
    if (row <= R)
        return rule(MERA_SPLIT_ROWS, 1);
    return rule(MERA_SPLIT_ROWS, REF_TI_QVEC_STEP / gcd64(R, REF_TI_QVEC_STEP));
}

/* relu, clip (qrelu_kernel, qclamp_kernel: integer clamps) and requantize
 * (the dequantize-quantize pair of fbgemm's Quantize, whose remainder
 * behaves as its main loop): the same formula for every element, so any
 * cut is exact. */
static mera_split_rule rule_same_formula(const mera_node *node, const mera_type *const *in, int n_in,
                                         const mera_type *out, int spatial)
{
    (void)node, (void)in, (void)n_in, (void)spatial;
    return out->rank >= 2 ? rule(MERA_SPLIT_ROWS, 1) : NO_SPLIT;
}

/* add, mul: TensorIterator's walk over both operands (rule_ti). */
static mera_split_rule rule_binary(const mera_node *node, const mera_type *const *in, int n_in,
                                   const mera_type *out, int spatial)
{
    (void)spatial;
    return n_in == 2 ? rule_ti(node, in, 2, out) : NO_SPLIT;
}

/* leaky_relu, hardswish, hardsigmoid, sigmoid, gelu: TensorIterator's walk over
 * the one operand (rule_ti). */
static mera_split_rule rule_unary(const mera_node *node, const mera_type *const *in, int n_in,
                                  const mera_type *out, int spatial)
{
    (void)n_in, (void)spatial;
    return rule_ti(node, in, 1, out);
}

/* max_pool2d (ref/pool.c): an integer max over the window, the same for
 * every channel; windows run along H and W, so only channels are cut (a
 * row band would need halo rows). */
static mera_split_rule rule_max_pool(const mera_node *node, const mera_type *const *in, int n_in,
                                     const mera_type *out, int spatial)
{
    (void)node, (void)in, (void)n_in, (void)out;
    return spatial ? rule(MERA_SPLIT_CHANNELS, 1) : NO_SPLIT;
}

/* concat (ref/shape.c): every element is requantized from its own input's
 * parameters; the formula depends on the element's index along the
 * concat axis within its input (the first floor(C_i/8)*8 channels take
 * qcat_nhwc_kernel's vector code) on the channels-last path, and on
 * nothing else. So cut any dimension other than the axis: ROWS when the
 * axis is not dim 1, else CHANNELS when it is not the last. The path
 * itself is decided per input from C, H and W when torch_memory_format
 * says contiguous (C == 1 or H == W == 1 count as channels-last), which a
 * cut could change: NONE there. */
static mera_split_rule rule_concat(const mera_node *node, const mera_type *const *in, int n_in,
                                   const mera_type *out, int spatial)
{
    (void)spatial;
    int rank = out->rank;
    if (rank < 2)
        return NO_SPLIT;
    int64_t axis = mera_attr_int(node, "axis");
    if (axis < 0)
        axis += rank;
    int data_nhwc = rank == 4 && out->layout == MERA_LAYOUT_NHWC;
    int channel_axis = rank == 4 && axis == (data_nhwc ? 3 : 1);
    if (channel_axis && !ref_torch_cl(node, data_nhwc))
        return NO_SPLIT;
    for (int i = 0; i < n_in; i++)
        if (!in[i] || in[i]->rank != rank)
            return NO_SPLIT;
    if (axis != 1)
        return rule(MERA_SPLIT_ROWS, 1);
    if (axis != rank - 1)
        return rule(MERA_SPLIT_CHANNELS, 1);
    return NO_SPLIT;
}

/* avg_pool2d (ref/pool.c). On PyTorch's channels-last path
 * (_qavg_pool_nhwc_kernel) channels c < C/16*16 quantize in the vector
 * code and the rest through quantize_val: channel blocks of 16 keep every
 * channel on its path. On the contiguous path (torch_memory_format
 * contiguous, C > 1 and H*W > 1) the formula is the same for every
 * channel, but a one-channel tile would count as channels-last. */
static mera_split_rule rule_avg_pool(const mera_node *node, const mera_type *const *in, int n_in,
                                     const mera_type *out, int spatial)
{
    (void)n_in;
    if (!spatial)
        return NO_SPLIT;
    const mera_type *x = in[0];
    int64_t c = out->shape[3], h = x->shape[1], w = x->shape[2];
    if (ref_torch_cl(node, 1) || (h == 1 && w == 1))
        return rule(MERA_SPLIT_CHANNELS, 16);
    return rule(MERA_SPLIT_CHANNELS, granule_no_single_channel(c));
}

/* adaptive_avg_pool2d (ref/pool.c): the NHWC formula (channels-last path,
 * or any node that changes the quantization parameters) splits channels
 * at C/8*8 (do_avg_pool_on_AVX2 versus quantize_val): blocks of 8. The
 * NCHW formula (contiguous path with unchanged parameters) is the same for
 * every channel, but a one-channel tile would count as channels-last. */
static mera_split_rule rule_adaptive_pool(const mera_node *node, const mera_type *const *in, int n_in,
                                          const mera_type *out, int spatial)
{
    (void)n_in;
    if (!spatial)
        return NO_SPLIT;
    const mera_type *x = in[0];
    int64_t c = out->shape[3], h = x->shape[1], w = x->shape[2];
    int same_q = x->q.scale == out->q.scale && x->q.zero_point == out->q.zero_point && x->dtype == out->dtype;
    if (ref_torch_cl(node, 1) || (h == 1 && w == 1) || !same_q)
        return rule(MERA_SPLIT_CHANNELS, 8);
    return rule(MERA_SPLIT_CHANNELS, granule_no_single_channel(c));
}

/* upsample (ref/upsample.c): nearest copies (or requantizes) bytes with no
 * channel dependence: any cut. bilinear on the channels-last path
 * (qupsample_bilinear2d_nhwc_kernel) uses one FMA order for channels
 * c < C/8*8 and another for the rest: blocks of 8. On the contiguous path
 * every channel computes alike, but a one-channel tile would count as
 * channels-last. */
static mera_split_rule rule_upsample(const mera_node *node, const mera_type *const *in, int n_in,
                                     const mera_type *out, int spatial)
{
    (void)n_in;
    if (!spatial)
        return NO_SPLIT;
    const mera_type *x = in[0];
    /* nearest, and the ONNX coordinate modes: every channel alike */
    if (!ref_is(node, "method", "bilinear") || !ref_is(node, "coordinate_mode", "torch"))
        return rule(MERA_SPLIT_CHANNELS, 1);
    int64_t c = out->shape[3], h = x->shape[1], w = x->shape[2];
    if (ref_torch_cl(node, 1) || (h == 1 && w == 1))
        return rule(MERA_SPLIT_CHANNELS, 8);
    return rule(MERA_SPLIT_CHANNELS, granule_no_single_channel(c));
}

/* mean (ref/reduce.c). Only the DNA's case is split: NHWC data held
 * channels-last in PyTorch (not permuted), averaged over H and W. Then the
 * quantized mean goes through at::mean on float, whose cascade_sum sees
 * the coalesced [H*W, C] slab (reduced dim strided by C, channels
 * contiguous) and runs vectorized_outer_sum when C >= 8: columns in blocks
 * of 32 through multi_row_sum, the remaining columns through row_sum, a
 * different addition order; for C < 8 scalar_outer_sum does the same with
 * blocks of 4, and a one-channel tensor is contiguous and may take the
 * integer fast path. Channel blocks of 32 keep every column on its loop
 * provided the last tile is not a 1- or 4..7-channel one (which would
 * switch loops): NONE for C % 32 in {1, 4, 5, 6, 7}. Any other axes or
 * memory order: NONE. */
static mera_split_rule rule_mean(const mera_node *node, const mera_type *const *in, int n_in, const mera_type *out,
                                 int spatial)
{
    (void)n_in, (void)spatial;
    const mera_type *x = in[0];
    if (x->rank != 4 || x->layout != MERA_LAYOUT_NHWC || !ref_torch_cl(node, 1))
        return NO_SPLIT;
    const mera_attr *axes = mera_node_attr(node, "axes");
    if (!axes || axes->kind != MERA_ATTR_INTS)
        return NO_SPLIT;
    int red[4] = {0, 0, 0, 0};
    for (int i = 0; i < axes->count; i++) {
        int64_t ax = axes->ints[i] < 0 ? axes->ints[i] + 4 : axes->ints[i];
        if (ax < 0 || ax > 3)
            return NO_SPLIT;
        red[ax] = 1;
    }
    if (red[0] || !red[1] || !red[2] || red[3])
        return NO_SPLIT;
    int64_t c = x->shape[3], m = c % 32;
    if (out->shape[out->rank - 1] != c || m == 1 || (m >= 4 && m <= 7))
        return NO_SPLIT;
    return rule(MERA_SPLIT_CHANNELS, 32);
}

/* The rule of every op that has MERA_OPF_CUT_ROWS or MERA_OPF_CUT_CHANNELS
 * (mera_kernel_split_table_check), and of no other. */
typedef mera_split_rule (*split_rule_fn)(const mera_node *node, const mera_type *const *in, int n_in,
                                         const mera_type *out, int spatial);

static const split_rule_fn split_rules[MERA_OP_COUNT] = {
    [MERA_OP_RELU]                = rule_same_formula,
    [MERA_OP_CLIP]                = rule_same_formula,
    [MERA_OP_REQUANTIZE]          = rule_same_formula,
    [MERA_OP_ADD]                 = rule_binary,
    [MERA_OP_MUL]                 = rule_binary,
    [MERA_OP_LEAKY_RELU]          = rule_unary,
    [MERA_OP_HARDSWISH]           = rule_unary,
    [MERA_OP_HARDSIGMOID]         = rule_unary,
    [MERA_OP_SIGMOID]             = rule_unary,
    [MERA_OP_GELU]                = rule_unary,
    [MERA_OP_CONCAT]              = rule_concat,
    [MERA_OP_MAX_POOL2D]          = rule_max_pool,
    [MERA_OP_AVG_POOL2D]          = rule_avg_pool,
    [MERA_OP_ADAPTIVE_AVG_POOL2D] = rule_adaptive_pool,
    [MERA_OP_UPSAMPLE]            = rule_upsample,
    [MERA_OP_MEAN]                = rule_mean,
};

mera_status mera_kernel_split_table_check(mera_error *err)
{
    for (int op = 0; op < MERA_OP_COUNT; op++) {
        int cuts = (mera_op_table[op].flags & (MERA_OPF_CUT_ROWS | MERA_OPF_CUT_CHANNELS)) != 0;
        if (cuts != (split_rules[op] != NULL))
            return mera_fail(err, MERA_ERR_INVALID, "split table: %s %s a split rule but ops.def gives it %s",
                             mera_op_table[op].name, cuts ? "lacks" : "has", cuts ? "cut bits" : "no cut bit");
    }
    return MERA_OK;
}

mera_split_rule mera_kernel_split_rule(const mera_node *node, const mera_type *const *in_types, int n_inputs,
                                       const mera_type *out_type)
{
    if (!node || !out_type || n_inputs < 1 || !is_q8(out_type))
        return NO_SPLIT;
    for (int i = 0; i < n_inputs; i++)
        if (!is_q8(in_types[i]))
            return NO_SPLIT;
    if (mera_type_numel(out_type) <= 0)
        return NO_SPLIT;
    split_rule_fn f = node->op >= 0 && node->op < MERA_OP_COUNT ? split_rules[node->op] : NULL;
    if (!f)
        return NO_SPLIT;
    const mera_type *x = in_types[0];
    int spatial = x->rank == 4 && out_type->rank == 4 && ref_nhwc(node);
    mera_split_rule r = f(node, in_types, n_inputs, out_type, spatial);
    unsigned flags = mera_op_table[node->op].flags;
    MERA_ASSERT(r.axis != MERA_SPLIT_ROWS || (flags & MERA_OPF_CUT_ROWS));
    MERA_ASSERT(r.axis != MERA_SPLIT_CHANNELS || (flags & MERA_OPF_CUT_CHANNELS));
    return r;
}
