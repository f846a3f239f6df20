/* Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d.
 *
 * PyTorch's quantized average pools compute differently for channels-last
 * (NHWC) and contiguous (NCHW) input; the op's layout attribute says which
 * memory format the user's graph had, and the kernel follows that path. */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* ---- max_pool2d -------------------------------------------------------- */

typedef struct {
    ref_dims4 x, y;
    int64_t kh, kw, sh, sw, pt, pl, pb, pr, dh, dw;
} pool_geom;

static pool_geom pool_geometry(const mera_kernel_args *a, int has_dilation)
{
    const mera_node *n = a->node;
    const int64_t *k = ref_ints(n, "kernel"), *s = ref_ints(n, "strides"), *p = ref_ints(n, "padding");
    pool_geom g;
    int nhwc = ref_nhwc(n);
    g.x = ref_dims(a->in_types[0], nhwc);
    g.y = ref_dims(a->out_types[0], nhwc);
    g.kh = k[0]; g.kw = k[1];
    g.sh = s[0]; g.sw = s[1];
    g.pt = p[0]; g.pl = p[1]; g.pb = p[2]; g.pr = p[3];
    g.dh = g.dw = 1;
    if (has_dilation) {
        const int64_t *d = ref_ints(n, "dilation");
        g.dh = d[0]; g.dw = d[1];
    }
    return g;
}

/* The window of output row oh: PyTorch's max pooling loops start at
 * oh*s - pad, skip forward by the dilation until inside the input, and end
 * at min(start + (k-1)*d + 1, in). Padded positions are skipped, not read
 * as zero (quantized: not as the zero point). */
static void max_window(int64_t o, int64_t s, int64_t p, int64_t k, int64_t d, int64_t in,
                       int64_t *start, int64_t *end)
{
    int64_t b = o * s - p;
    int64_t e = b + (k - 1) * d + 1;
    *end = e < in ? e : in;
    while (b < 0)
        b += d;
    *start = b;
}

REF_KERNEL(ref_max_pool2d_f32)
{
    (void)err;
    pool_geom g = pool_geometry(a, 1);
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t c = 0; c < g.y.c; c++)
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    int64_t h0, h1, w0, w1;
                    max_window(oh, g.sh, g.pt, g.kh, g.dh, g.x.h, &h0, &h1);
                    max_window(ow, g.sw, g.pl, g.kw, g.dw, g.x.w, &w0, &w1);
                    float m = -INFINITY;
                    for (int64_t ih = h0; ih < h1; ih += g.dh)
                        for (int64_t iw = w0; iw < w1; iw += g.dw) {
                            float v = x[ref_at(&g.x, n, c, ih, iw)];
                            if (v > m || isnan(v)) /* NaN wins, as in torch */
                                m = v;
                        }
                    y[ref_at(&g.y, n, c, oh, ow)] = m;
                }
    return MERA_OK;
}

/* Integer max over the window (_qmaxpool_2d_nhwc_kernel and the NCHW
 * qmaxpool); the output keeps the input's parameters. */
REF_KERNEL(ref_max_pool2d_q)
{
    (void)err;
    pool_geom g = pool_geometry(a, 1);
    const mera_type *t = a->in_types[0];
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t c = 0; c < g.y.c; c++)
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    int64_t h0, h1, w0, w1;
                    max_window(oh, g.sh, g.pt, g.kh, g.dh, g.x.h, &h0, &h1);
                    max_window(ow, g.sw, g.pl, g.kw, g.dw, g.x.w, &w0, &w1);
                    int32_t m = q_lo(t->dtype);
                    for (int64_t ih = h0; ih < h1; ih += g.dh)
                        for (int64_t iw = w0; iw < w1; iw += g.dw) {
                            int32_t v = q_load(a->in[0], t->dtype, ref_at(&g.x, n, c, ih, iw));
                            m = v > m ? v : m;
                        }
                    q_store(a->out[0], t->dtype, ref_at(&g.y, n, c, oh, ow), m);
                }
    return MERA_OK;
}

/* ---- avg_pool2d -------------------------------------------------------- */

/* The window of an average pool (cpu_avg_pool, avg_pool2d_out_frame,
 * _qavg_pool_nhwc_kernel all agree): [b, e) clipped to the padded input
 * gives the pool size counted with padding, then clipped to the input. An
 * asymmetric pad uses its own end side. */
typedef struct {
    int64_t h0, h1, w0, w1;
    int64_t size;      /* positions inside the input */
    int64_t divisor;   /* what the sum is divided by */
} avg_window;

static avg_window avg_window_at(const pool_geom *g, int64_t oh, int64_t ow, int count_include_pad,
                                int64_t divisor_override)
{
    avg_window v;
    int64_t h0 = oh * g->sh - g->pt, w0 = ow * g->sw - g->pl;
    int64_t h1 = h0 + g->kh < g->x.h + g->pb ? h0 + g->kh : g->x.h + g->pb;
    int64_t w1 = w0 + g->kw < g->x.w + g->pr ? w0 + g->kw : g->x.w + g->pr;
    int64_t pool_size = (h1 - h0) * (w1 - w0);
    v.h0 = h0 > 0 ? h0 : 0;
    v.w0 = w0 > 0 ? w0 : 0;
    v.h1 = h1 < g->x.h ? h1 : g->x.h;
    v.w1 = w1 < g->x.w ? w1 : g->x.w;
    v.size = (v.h1 - v.h0) * (v.w1 - v.w0);
    if (v.h0 >= v.h1 || v.w0 >= v.w1)
        v.size = 0;
    v.divisor = divisor_override ? divisor_override : count_include_pad ? pool_size : v.size;
    return v;
}

REF_KERNEL(ref_avg_pool2d_f32)
{
    (void)err;
    pool_geom g = pool_geometry(a, 0);
    int cip = mera_attr_int(a->node, "count_include_pad") != 0;
    int64_t dov = mera_attr_int(a->node, "divisor_override");
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t c = 0; c < g.y.c; c++)
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    avg_window v = avg_window_at(&g, oh, ow, cip, dov);
                    float sum = 0.0f;
                    for (int64_t ih = v.h0; ih < v.h1; ih++)
                        for (int64_t iw = v.w0; iw < v.w1; iw++)
                            sum += x[ref_at(&g.x, n, c, ih, iw)];
                    /* an empty window gives 0, as cpu_avg_pool does */
                    y[ref_at(&g.y, n, c, oh, ow)] = v.size ? sum / (float)v.divisor : 0.0f;
                }
    return MERA_OK;
}

/* Below, "NHWC" means PyTorch's channels-last kernels, which run for NHWC
 * data and for NCHW data whose torch_memory_format is channels_last (see
 * ref_torch_cl); the formulas depend on the channel index only, not on how
 * our buffer is laid out.
 *
 * The NHWC kernels of QuantizedOpKernels.cpp run the channels of each pixel
 * in vector blocks and the last few through scalar code, and the two
 * quantize differently. The block is 8 channels for adaptive_avg_pool2d,
 * whose kernel runs its AVX2 build on every x86 CPU, and 16 for avg_pool2d,
 * whose kernel is also registered for AVX512 (ALSO_REGISTER_AVX512_DISPATCH)
 * and runs that build on AVX512 CPUs; an AVX2-only CPU would use 8 there. */
#define ADA_QVEC_CH 8
#define AVG_QVEC_CH 16

/* Quantized avg_pool2d.
 *
 * NHWC (_qavg_pool_nhwc_kernel): acc = sum(q) - zx*size in int32 and
 *   multiplier = (float)in_s / (float)out_s / divisor   (float), then
 *   channels c < C/16*16 (the vector code, QuantizeAvx512 with the
 *     multiplier as inverse scale): zy + rne(acc * multiplier)
 *   the other channels: quantize_val(1.0f / multiplier, zy, acc, a->rounding), i.e.
 *     rne(acc * (1 / (1 / multiplier)) + zy), reciprocals in float.
 * NCHW (avg_pool2d_out_frame): the same acc, but
 *   multiplier = (float)((in_s / out_s) / divisor)  (double, then float),
 *   q = clamp(rne(acc * multiplier + zy))           (float arithmetic). */
REF_KERNEL(ref_avg_pool2d_q)
{
    (void)err;
    pool_geom g = pool_geometry(a, 0);
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    int cip = mera_attr_int(a->node, "count_include_pad") != 0;
    int64_t dov = mera_attr_int(a->node, "divisor_override");
    int nhwc = ref_torch_channels_last(&g.x, ref_torch_cl(a->node, ref_nhwc(a->node)));
    int64_t cvec = g.y.c / AVG_QVEC_CH * AVG_QVEC_CH;
    int32_t zx = ref_zp(xt), zy = ref_zp(yt), lo = q_lo(yt->dtype), hi = q_hi(yt->dtype);
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t c = 0; c < g.y.c; c++)
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    avg_window v = avg_window_at(&g, oh, ow, cip, dov);
                    int32_t acc = -zx * (int32_t)v.size;
                    for (int64_t ih = v.h0; ih < v.h1; ih++)
                        for (int64_t iw = v.w0; iw < v.w1; iw++)
                            acc += q_load(a->in[0], xt->dtype, ref_at(&g.x, n, c, ih, iw));
                    int32_t q;
                    if (v.divisor == 0) { /* an empty window (not reachable from PyTorch) */
                        q = zy;
                    } else if (nhwc) {
                        float m = ref_scale_f(xt) / ref_scale_f(yt) / (float)v.divisor;
                        if (c < cvec)
                            q = quantize_lane((float)acc, m, zy, lo, hi);
                        else
                            q = quantize_val((float)acc, 1.0f / m, zy, lo, hi, a->rounding);
                    } else {
                        float m = (float)(xt->q.scale / yt->q.scale / (double)v.divisor);
                        float t = nearbyintf((float)acc * m + (float)zy);
                        q = t < (float)lo ? lo : t > (float)hi ? hi : (int32_t)t;
                    }
                    q_store(a->out[0], yt->dtype, ref_at(&g.y, n, c, oh, ow), q);
                }
    return MERA_OK;
}

/* ---- adaptive_avg_pool2d ----------------------------------------------- */

/* PyTorch's adaptive windows: [floor(o*in/out), ceil((o+1)*in/out)). The
 * quantized kernels compute the bounds in float; they agree with the exact
 * integer formula for every size a float represents exactly. */
static int64_t ada_start(int64_t o, int64_t out, int64_t in) { return o * in / out; }
static int64_t ada_end(int64_t o, int64_t out, int64_t in) { return ((o + 1) * in + out - 1) / out; }

REF_KERNEL(ref_adaptive_avg_pool2d_f32)
{
    (void)err;
    int nhwc = ref_nhwc(a->node);
    ref_dims4 xd = ref_dims(a->in_types[0], nhwc), yd = ref_dims(a->out_types[0], nhwc);
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t n = 0; n < yd.n; n++)
        for (int64_t c = 0; c < yd.c; c++)
            for (int64_t oh = 0; oh < yd.h; oh++)
                for (int64_t ow = 0; ow < yd.w; ow++) {
                    int64_t h0 = ada_start(oh, yd.h, xd.h), h1 = ada_end(oh, yd.h, xd.h);
                    int64_t w0 = ada_start(ow, yd.w, xd.w), w1 = ada_end(ow, yd.w, xd.w);
                    float sum = 0.0f;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            sum += x[ref_at(&xd, n, c, ih, iw)];
                    y[ref_at(&yd, n, c, oh, ow)] = sum / (float)((h1 - h0) * (w1 - w0));
                }
    return MERA_OK;
}

/* Quantized adaptive_avg_pool2d (q_adaavgpool.cpp).
 *
 * NHWC (_qadaptive_avg_pool_kernel):
 *   acc = sum(q) - zx*size, multiplier = (float)in_s / (float)out_s / size,
 *   inv = 1.0f / (1.0f / multiplier) (both reciprocals in float), then
 *   channels c < C/8*8 (do_avg_pool_on_AVX2 -> quantize_vec, which is
 *     fbgemm::Quantize<T, LEGACY>): rne(fma(acc, inv, zy))
 *   the other channels (quantize_val): rne(acc * inv + zy)
 * NCHW (adaptive_avg_pool2d_single_out_frame), which PyTorch only runs with
 * the output parameters equal to the input's:
 *   kHWr = (float)(1.0 / kH) / kW, q = rne(sum(q) * kHWr), no zero point
 *   and no clamp (the mean of bytes stays in range).
 * An NCHW node that changes the parameters (PyTorch cannot express it)
 * takes the NHWC formula, which is the one that rescales. */
REF_KERNEL(ref_adaptive_avg_pool2d_q)
{
    (void)err;
    int nhwc = ref_nhwc(a->node);
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    ref_dims4 xd = ref_dims(xt, nhwc), yd = ref_dims(yt, nhwc);
    int32_t zx = ref_zp(xt), zy = ref_zp(yt), lo = q_lo(yt->dtype), hi = q_hi(yt->dtype);
    int same_q = xt->q.scale == yt->q.scale && zx == zy && xt->dtype == yt->dtype;
    nhwc = ref_torch_channels_last(&xd, ref_torch_cl(a->node, nhwc));
    for (int64_t n = 0; n < yd.n; n++)
        for (int64_t c = 0; c < yd.c; c++)
            for (int64_t oh = 0; oh < yd.h; oh++)
                for (int64_t ow = 0; ow < yd.w; ow++) {
                    int64_t h0 = ada_start(oh, yd.h, xd.h), h1 = ada_end(oh, yd.h, xd.h);
                    int64_t w0 = ada_start(ow, yd.w, xd.w), w1 = ada_end(ow, yd.w, xd.w);
                    int64_t kh = h1 - h0, kw = w1 - w0;
                    int64_t sum = 0;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            sum += q_load(a->in[0], xt->dtype, ref_at(&xd, n, c, ih, iw));
                    int32_t q;
                    if (!nhwc && same_q) {
                        float khr = (float)(1.0 / (double)kh);
                        float khwr = khr / (float)kw;
                        q = (int32_t)nearbyintf((float)sum * khwr);
                    } else {
                        int32_t size = (int32_t)(kh * kw);
                        int32_t acc = (int32_t)sum - zx * size;
                        float m = ref_scale_f(xt) / ref_scale_f(yt) / (float)size;
                        if (c < yd.c / ADA_QVEC_CH * ADA_QVEC_CH)
                            q = quantize_fbgemm((float)acc, 1.0f / (1.0f / m), zy, lo, hi, a->rounding);
                        else
                            q = quantize_val((float)acc, 1.0f / m, zy, lo, hi, a->rounding);
                    }
                    q_store(a->out[0], yt->dtype, ref_at(&yd, n, c, oh, ow), q);
                }
    return MERA_OK;
}
