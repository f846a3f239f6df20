/* conv2d: float32, and the quantized convolution of PyTorch's
 * quantized::conv2d / conv2d_relu on the fbgemm engine. */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "kernels/split.h"

/* Geometry shared by both numerics. */
typedef struct {
    ref_dims4 x, y;
    int64_t kh, kw;          /* kernel size */
    int64_t wso, wsi, wsh, wsw; /* weight strides: output ch, input ch, kh, kw */
    int64_t cg, og;          /* input and output channels per group */
    int64_t sh, sw, dh, dw;  /* strides and dilation */
    int64_t pt, pl, pb, pr;  /* padding: top, left, bottom, right */
} conv_geom;

static conv_geom conv_geometry(const mera_kernel_args *a)
{
    const mera_node *n = a->node;
    const mera_type *w = a->in_types[1];
    const int64_t *st = ref_ints(n, "strides"), *pad = ref_ints(n, "padding"), *dil = ref_ints(n, "dilation");
    int nhwc = ref_nhwc(n);
    conv_geom g;
    g.x = ref_dims(a->in_types[0], nhwc);
    g.y = ref_dims(a->out_types[0], nhwc);
    const int64_t *s = w->shape;
    if (ref_is(n, "kernel_layout", "OHWI")) {        /* [O, KH, KW, I] */
        g.kh = s[1]; g.kw = s[2];
        g.wsi = 1; g.wsw = s[3]; g.wsh = s[2] * s[3]; g.wso = s[1] * s[2] * s[3];
    } else if (ref_is(n, "kernel_layout", "HWIO")) { /* [KH, KW, I, O] */
        g.kh = s[0]; g.kw = s[1];
        g.wso = 1; g.wsi = s[3]; g.wsw = s[2] * s[3]; g.wsh = s[1] * s[2] * s[3];
    } else {                                         /* [O, I, KH, KW] */
        g.kh = s[2]; g.kw = s[3];
        g.wsw = 1; g.wsh = s[3]; g.wsi = s[2] * s[3]; g.wso = s[1] * s[2] * s[3];
    }
    int64_t groups = mera_attr_int(n, "groups");
    g.cg = g.x.c / groups;
    g.og = g.y.c / groups;
    g.sh = st[0]; g.sw = st[1];
    g.dh = dil[0]; g.dw = dil[1];
    g.pt = pad[0]; g.pl = pad[1]; g.pb = pad[2]; g.pr = pad[3];
    return g;
}

REF_KERNEL(ref_conv2d_f32)
{
    (void)err;
    conv_geom g = conv_geometry(a);
    const float *x = a->in[0], *w = a->in[1], *b = a->n_inputs > 2 ? a->in[2] : NULL;
    float *y = a->out[0];
    int relu = ref_relu(a->node);
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t o = 0; o < g.y.c; o++) {
            int64_t c0 = o / g.og * g.cg; /* first input channel of o's group */
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    float acc = 0.0f;
                    for (int64_t ci = 0; ci < g.cg; ci++)
                        for (int64_t kh = 0; kh < g.kh; kh++) {
                            int64_t ih = oh * g.sh - g.pt + kh * g.dh;
                            if (ih < 0 || ih >= g.x.h)
                                continue;
                            for (int64_t kw = 0; kw < g.kw; kw++) {
                                int64_t iw = ow * g.sw - g.pl + kw * g.dw;
                                if (iw < 0 || iw >= g.x.w)
                                    continue;
                                acc += x[ref_at(&g.x, n, c0 + ci, ih, iw)] *
                                       w[o * g.wso + ci * g.wsi + kh * g.wsh + kw * g.wsw];
                            }
                        }
                    if (b)
                        acc += b[o];
                    if (relu && acc < 0.0f) /* NaN passes through, as in torch.relu */
                        acc = 0.0f;
                    y[ref_at(&g.y, n, o, oh, ow)] = acc;
                }
        }
    return MERA_OK;
}

/* Per-output-channel requantization constants, computed exactly as
 * PackedConvWeight::GetQuantizationParams and fbgemm compute them:
 *   act_times_w_scale = (float)in_scale * (float)w_scale[o]
 *   multiplier        = act_times_w_scale / (float)out_scale
 *   bias term, per-channel weights: bias[o] / act_times_w_scale   (_mm256_div_ps)
 *   bias term, per-tensor weights:  bias[o] * (float)(1.0 / act_times_w_scale),
 *     fbgemm's act_times_w_rcp_v (a double reciprocal rounded to float,
 *     which equals the float reciprocal), fused with the add (qmath.h).
 * Linear uses the same ReQuantizeOutput (dense.c). */
void ref_requant_params(const mera_type *x, const mera_type *w, const mera_type *out, const float *bias,
                        int64_t channels, requant_ch *ch)
{
    float in_s = (float)x->q.scale, out_s = (float)out->q.scale;
    int per_tensor = w->q.kind != MERA_QUANT_PER_AXIS;
    for (int64_t o = 0; o < channels; o++) {
        float ws = (float)mera_q_scale(&w->q, per_tensor ? 0 : o);
        float ats = in_s * ws;
        requant_ch *k = &ch[o];
        k->has_bias = bias != NULL;
        k->per_tensor = per_tensor;
        k->multiplier = ats / out_s;
        k->rcp = (float)(1.0 / (double)ats);
        k->bias = !bias ? 0.0f : per_tensor ? bias[o] : bias[o] / ats;
    }
}

/* Whether the layer takes fbgemm's depthwise fast path, where pair sums
 * saturate (takeDepthWiseFastPath in FbgemmConv.cc, for uint8 activations):
 * decided in kernels/split.c, mera_conv_depthwise_saturates, from the
 * geometry or from the node's depthwise_saturate attribute, which the DNA
 * scheduler sets on tiles of a layer. */

static int32_t sat16(int32_t v)
{
    return v < -32768 ? -32768 : v > 32767 ? 32767 : v;
}

/* The accumulator of one output of the depthwise kernel. Its JIT code
 * (GenerateI8Depthwise.cc) multiplies the raw uint8 activations (padded taps
 * hold the zero point) with vpmaddubsw, which adds the products of taps
 * (0,1), (2,3), ... in the kernel's row-major tap order and saturates each
 * pair sum to int16, even on VNNI CPUs. Then come the zero-point
 * corrections of the exact expansion of sum((x - zx) * (w - zw)):
 * - zx * (sum(w) - zw * taps) (PyTorch's col_offsets) - zw * sum(x) (the
 * row offsets the kernel sums for asymmetric weights). */
static int32_t depthwise_acc(const conv_geom *g, const void *x, const int8_t *w, int64_t n, int64_t o,
                             int64_t oh, int64_t ow, int32_t zx, int32_t zw)
{
    int64_t c = o / g->og, taps = g->kh * g->kw;
    int32_t acc = 0, wsum = 0, xsum = 0, pair = 0;
    for (int64_t t = 0; t < taps; t++) {
        int64_t kh = t / g->kw, kw = t % g->kw;
        /* fbgemm's path has no dilation; a forced depthwise_saturate=yes
         * on a dilated conv still reads the right taps */
        int64_t ih = oh * g->sh - g->pt + kh * g->dh, iw = ow * g->sw - g->pl + kw * g->dw;
        int32_t xv = ih < 0 || ih >= g->x.h || iw < 0 || iw >= g->x.w
                         ? zx
                         : ((const uint8_t *)x)[ref_at(&g->x, n, c, ih, iw)];
        int32_t wv = w[o * g->wso + kh * g->wsh + kw * g->wsw];
        wsum += wv;
        xsum += xv;
        pair += xv * wv;
        if (t % 2 == 1 || t == taps - 1) {
            acc += sat16(pair);
            pair = 0;
        }
    }
    return acc - zx * (wsum - zw * (int32_t)taps) - zw * xsum;
}

/* The int32 accumulator is exact everywhere else: sum over the window of
 * (x - zx)*(w - zw), which is what fbgemm's raw product minus zx*col_offsets
 * minus zw*row_offsets comes to. Padded positions are filled with zx by
 * fbgemm's im2col, i.e. they contribute nothing. On CPUs with AVX512-VNNI
 * the GEMM kernels multiply with vpdpbusd, which does not saturate (without
 * VNNI, fbgemm's vpmaddubsw GEMM saturates pairs of products when
 * activations exceed 127; that is what reduce_range guards against, and it
 * is not modelled). fbgemm works in int32 with wrap-around; the sum is
 * formed in int64 and wrapped at the end, which gives the same bits.
 *
 * Every fbgemm conv path (im2col+GEMM, pointwise, groupwise, depthwise)
 * requantizes with the same vector arithmetic. The depthwise kernel's scalar
 * tail requantize_i8dw_ref_ divides where its vector lanes multiply by the
 * reciprocal, but that tail only covers OC % 8 channels and the depthwise
 * path requires groups % 8 == 0 and OC in {G, 2G}, so it never runs. */
REF_KERNEL(ref_conv2d_q)
{
    conv_geom g = conv_geometry(a);
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *yt = a->out_types[0];
    const float *b = a->n_inputs > 2 ? a->in[2] : NULL;
    requant_ch *rq = ref_alloc(g.y.c, sizeof *rq);
    if (!rq)
        return ref_nomem(err, a->node);
    ref_requant_params(xt, wt, yt, b, g.y.c, rq);
    const int8_t *w = a->in[1];
    int32_t zx = ref_zp(xt), zy = ref_zp(yt);
    int32_t lo = ref_relu(a->node) ? zy : q_lo(yt->dtype), hi = q_hi(yt->dtype);
    int depthwise = mera_conv_depthwise_saturates(a->node, xt, wt);
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t o = 0; o < g.y.c; o++) {
            int64_t c0 = o / g.og * g.cg;
            int32_t zw = mera_q_zero_point(&wt->q, wt->q.kind == MERA_QUANT_PER_AXIS ? o : 0);
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    int32_t acc32;
                    if (depthwise) {
                        acc32 = depthwise_acc(&g, a->in[0], w, n, o, oh, ow, zx, zw);
                    } else {
                        int64_t acc = 0;
                        for (int64_t ci = 0; ci < g.cg; ci++)
                            for (int64_t kh = 0; kh < g.kh; kh++) {
                                int64_t ih = oh * g.sh - g.pt + kh * g.dh;
                                if (ih < 0 || ih >= g.x.h)
                                    continue;
                                for (int64_t kw = 0; kw < g.kw; kw++) {
                                    int64_t iw = ow * g.sw - g.pl + kw * g.dw;
                                    if (iw < 0 || iw >= g.x.w)
                                        continue;
                                    int32_t xv = q_load(a->in[0], xt->dtype, ref_at(&g.x, n, c0 + ci, ih, iw));
                                    int32_t wv = w[o * g.wso + ci * g.wsi + kh * g.wsh + kw * g.wsw];
                                    acc += (int64_t)(xv - zx) * (wv - zw);
                                }
                            }
                        acc32 = (int32_t)(uint32_t)(uint64_t)acc;
                    }
                    q_store(a->out[0], yt->dtype, ref_at(&g.y, n, o, oh, ow),
                            requant_acc(acc32, &rq[o], zy, lo, hi));
                }
        }
    free(rq);
    return MERA_OK;
}

/* Quantized conv_transpose2d, PyTorch's quantized::conv_transpose2d on the
 * fbgemm engine (PackedConvWeight::apply_impl with transpose set, then
 * fbgemmConv with conv_param_t.transposed): an int32 accumulator, the exact
 * sum of (x - zx)*(w - zw) over the input pixels and taps that reach an
 * output pixel,
 *   y[n, g*og + co, oh, ow] = sum over ci, kh, kw with oh = ih*sh - pt + kh*dh
 *   and ow = iw*sw - pl + kw*dw of x[n, g*cg + ci, ih, iw] * w[g*cg + ci, co, kh, kw],
 * formed in int64 and wrapped to int32 like fbgemm's, then requantized with
 * the same ReQuantizeOutput constants and arithmetic as conv2d
 * (ref_requant_params, requant_acc: the zero point is added after rounding
 * under both roundings). PyTorch refuses per-channel weights for transposed
 * convs ("Per Channel Quantization is currently disabled for transposed
 * conv"); ours (axis 1, groups == 1, from mera.Quantizer or an ONNX QDQ
 * import) take conv2d's per-channel formula. Output pixels that no input
 * reaches (output_padding, strides larger than the dilated kernel) hold the
 * requantized bias. */
REF_KERNEL(ref_conv_transpose2d_q)
{
    const mera_node *node = a->node;
    int nhwc = ref_nhwc(node);
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *yt = a->out_types[0];
    ref_dims4 xd = ref_dims(xt, nhwc), yd = ref_dims(yt, nhwc);
    const int64_t *st = ref_ints(node, "strides"), *pad = ref_ints(node, "padding"), *dil = ref_ints(node, "dilation");
    int64_t groups = mera_attr_int(node, "groups"), cg = xd.c / groups, og = wt->shape[1];
    int64_t KH = wt->shape[2], KW = wt->shape[3];
    const float *b = a->n_inputs > 2 ? a->in[2] : NULL;
    requant_ch *rq = ref_alloc(yd.c, sizeof *rq);
    if (!rq)
        return ref_nomem(err, node);
    ref_requant_params(xt, wt, yt, b, yd.c, rq);
    const int8_t *w = a->in[1];
    int32_t zx = ref_zp(xt), zy = ref_zp(yt), lo = q_lo(yt->dtype), hi = q_hi(yt->dtype);
    int per_axis = wt->q.kind == MERA_QUANT_PER_AXIS;
    for (int64_t n = 0; n < yd.n; n++)
        for (int64_t o = 0; o < yd.c; o++) {
            int64_t g = o / og, co = o % og;
            int32_t zw = mera_q_zero_point(&wt->q, per_axis ? co : 0);
            for (int64_t oh = 0; oh < yd.h; oh++)
                for (int64_t ow = 0; ow < yd.w; ow++) {
                    int64_t acc = 0;
                    for (int64_t kh = 0; kh < KH; kh++) {
                        int64_t th = oh + pad[0] - kh * dil[0], ih = th / st[0];
                        if (th < 0 || th % st[0] || ih >= xd.h)
                            continue;
                        for (int64_t kw = 0; kw < KW; kw++) {
                            int64_t tw = ow + pad[1] - kw * dil[1], iw = tw / st[1];
                            if (tw < 0 || tw % st[1] || iw >= xd.w)
                                continue;
                            for (int64_t ci = 0; ci < cg; ci++) {
                                int64_t c = g * cg + ci;
                                int32_t xv = q_load(a->in[0], xt->dtype, ref_at(&xd, n, c, ih, iw));
                                int32_t wv = w[((c * og + co) * KH + kh) * KW + kw];
                                acc += (int64_t)(xv - zx) * (wv - zw);
                            }
                        }
                    }
                    q_store(a->out[0], yt->dtype, ref_at(&yd, n, o, oh, ow),
                            requant_acc((int32_t)(uint32_t)(uint64_t)acc, &rq[o], zy, lo, hi));
                }
        }
    free(rq);
    return MERA_OK;
}
