/* upsample: nearest and bilinear resizing of NCHW/NHWC tensors, with
 * PyTorch's index arithmetic (aten/src/ATen/native/UpSample.h). */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* compute_scales_value<float>: with a scale factor, its reciprocal taken
 * in double and rounded to float; with an output size, in/out in float. */
static float scales_value(const mera_attr *scales, int i, int64_t in, int64_t out)
{
    if (scales && scales->floats[i] > 0)
        return (float)(1.0 / scales->floats[i]);
    return (float)in / (float)out;
}

/* nearest_neighbor_compute_source_index: min(floorf(dst * scale), in - 1)
 * in float, which the quantized kernels call directly. */
static int64_t nearest_source(int64_t dst, int64_t in, float scale)
{
    int64_t s = (int64_t)floorf((float)dst * scale);
    return s < in - 1 ? s : in - 1;
}

/* nearest_idx of the float kernel: exact shortcuts for equal and doubled
 * sizes first (which disagree with the formula when a scale factor such as
 * 1.3 leaves a size unchanged). */
static int64_t nearest_index(int64_t dst, int64_t in, int64_t out, float scale)
{
    if (out == in)
        return dst;
    if (out == 2 * in)
        return dst >> 1;
    return nearest_source(dst, in, scale);
}

/* area_pixel_compute_scale<float> for linear modes. */
static float linear_scale(const mera_attr *scales, int i, int64_t in, int64_t out, int align_corners)
{
    if (align_corners)
        return out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    return scales_value(scales, i, in, out);
}

/* area_pixel_compute_source_index<float> (cubic = false), then the split
 * into an index, a step to the next pixel and two weights as the quantized
 * kernels do it: i = (int64)src, step = i < in-1, l1 = src - i, l0 = 1 - l1.
 * fused: scale * (dst + 0.5) - 0.5 as one FMA, which is how the AVX2 build
 * of QuantizedOpKernels.cpp (GCC contracts under -mfma) computes it. */
typedef struct {
    int64_t i, step;
    float l0, l1;
} lin_tap;

static lin_tap linear_tap(float scale, int64_t dst, int64_t in, int align_corners, int fused)
{
    float src;
    if (align_corners) {
        src = scale * (float)dst;
    } else {
        float d = (float)dst + 0.5f;
        src = fused ? fmaf(scale, d, -0.5f) : scale * d - 0.5f;
        src = src < 0.0f ? 0.0f : src;
    }
    lin_tap t;
    t.i = (int64_t)src;
    if (t.i > in - 1)
        t.i = in - 1; /* guard_index_and_lambda; unreachable for valid scales */
    t.step = t.i < in - 1 ? 1 : 0;
    t.l1 = src - (float)t.i;
    t.l0 = 1.0f - t.l1;
    return t;
}

static lin_tap identity_tap(int64_t dst)
{
    lin_tap t = {dst, 0, 1.0f, 0.0f};
    return t;
}

typedef struct {
    int nhwc, bilinear, align_corners;
    ref_dims4 x, y;
    const mera_attr *scales;
} up_geom;

static up_geom up_geometry(const mera_kernel_args *a)
{
    up_geom g;
    g.nhwc = ref_nhwc(a->node);
    g.bilinear = ref_is(a->node, "method", "bilinear");
    g.align_corners = mera_attr_int(a->node, "align_corners") != 0;
    g.x = ref_dims(a->in_types[0], g.nhwc);
    g.y = ref_dims(a->out_types[0], g.nhwc);
    g.scales = mera_node_attr(a->node, "scales");
    return g;
}

REF_KERNEL(ref_upsample_f32)
{
    (void)err;
    up_geom g = up_geometry(a);
    const float *x = a->in[0];
    float *y = a->out[0];
    float sh = g.bilinear ? linear_scale(g.scales, 0, g.x.h, g.y.h, g.align_corners)
                          : scales_value(g.scales, 0, g.x.h, g.y.h);
    float sw = g.bilinear ? linear_scale(g.scales, 1, g.x.w, g.y.w, g.align_corners)
                          : scales_value(g.scales, 1, g.x.w, g.y.w);
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t c = 0; c < g.y.c; c++)
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    float v;
                    if (!g.bilinear) {
                        v = x[ref_at(&g.x, n, c, nearest_index(oh, g.x.h, g.y.h, sh),
                                     nearest_index(ow, g.x.w, g.y.w, sw))];
                    } else {
                        /* the float kernel leaves an axis whose size does not
                         * change alone, even with a scale factor like 1.3 */
                        lin_tap th = g.x.h == g.y.h ? identity_tap(oh) : linear_tap(sh, oh, g.x.h, g.align_corners, 0);
                        lin_tap tw = g.x.w == g.y.w ? identity_tap(ow) : linear_tap(sw, ow, g.x.w, g.align_corners, 0);
                        float p00 = x[ref_at(&g.x, n, c, th.i, tw.i)];
                        float p01 = x[ref_at(&g.x, n, c, th.i, tw.i + tw.step)];
                        float p10 = x[ref_at(&g.x, n, c, th.i + th.step, tw.i)];
                        float p11 = x[ref_at(&g.x, n, c, th.i + th.step, tw.i + tw.step)];
                        v = th.l0 * (tw.l0 * p00 + tw.l1 * p01) + th.l1 * (tw.l0 * p10 + tw.l1 * p11);
                    }
                    y[ref_at(&g.y, n, c, oh, ow)] = v;
                }
    return MERA_OK;
}

/* Quantized upsample (UpSampleNearest2d.cpp, UpSampleBilinear2d.cpp).
 * nearest copies bytes with nearest_neighbor_compute_source_index. bilinear
 * interpolates the raw bytes in float, subtracts zx and requantizes with
 * scale = (float)(out_s / in_s), a double quotient (1 in PyTorch, which
 * keeps the input's parameters). It has two implementations:
 *
 * NCHW (upsample_bilinear2d_out_frame, built without FMA):
 *   r = l0h*(l0w*p00 + l1w*p01) + l1h*(l0w*p10 + l1w*p11) - zx
 *   q = quantize_val(scale, zy, r, a->rounding)
 * NHWC (qupsample_bilinear2d_nhwc_kernel, AVX2 build, which GCC compiled
 * with FMA contraction; read off libtorch_cpu.so), source index fused too:
 *   channels c < C/8*8 (do_quantized_bilinear_on_AVX_n, 8 lanes):
 *     r = fma(fma(p11, l1w, p10*l0w), l1h, l0h * fma(p01, l1w, p00*l0w)) - zx
 *     q = quantize_vec(scale, zy, r): rne(fma(r, 1/scale, zy))
 *   the other channels:
 *     r = fma(fma(p00, l0w, p01*l1w), l0h, l1h * fma(p10, l0w, p11*l1w)) - zx
 *     q = quantize_val(scale, zy, r, a->rounding)
 * PyTorch takes the NHWC kernel for channels-last tensors (NHWC data, or
 * torch_memory_format channels_last), and for NCHW tensors with C == 1 or
 * H == W == 1, which are channels-last contiguous too. */
#define UP_QVEC_CH 8

static float bilinear_q(int form, const lin_tap *th, const lin_tap *tw, float p00, float p01, float p10,
                        float p11)
{
    float r;
    if (form == 0) {        /* NCHW, no FMA */
        r = th->l0 * (tw->l0 * p00 + tw->l1 * p01) + th->l1 * (tw->l0 * p10 + tw->l1 * p11);
    } else if (form == 1) { /* NHWC vector lanes */
        float top = fmaf(p01, tw->l1, p00 * tw->l0), bot = fmaf(p11, tw->l1, p10 * tw->l0);
        r = fmaf(bot, th->l1, th->l0 * top);
    } else {                /* NHWC scalar tail */
        float top = fmaf(p00, tw->l0, p01 * tw->l1), bot = fmaf(p10, tw->l0, p11 * tw->l1);
        r = fmaf(top, th->l0, th->l1 * bot);
    }
    return r;
}

REF_KERNEL(ref_upsample_q)
{
    (void)err;
    up_geom g = up_geometry(a);
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    int same_q = xt->q.scale == yt->q.scale && ref_zp(xt) == ref_zp(yt) && xt->dtype == yt->dtype;
    int32_t zx = ref_zp(xt), zy = ref_zp(yt), lo = q_lo(yt->dtype), hi = q_hi(yt->dtype);
    float rs = (float)(yt->q.scale / xt->q.scale);
    int copy = g.x.h == g.y.h && g.x.w == g.y.w;
    int nhwc = ref_torch_channels_last(&g.x, ref_torch_cl(a->node, g.nhwc));
    int64_t cvec = nhwc ? g.y.c / UP_QVEC_CH * UP_QVEC_CH : 0;
    float sh = g.bilinear ? linear_scale(g.scales, 0, g.x.h, g.y.h, g.align_corners)
                          : scales_value(g.scales, 0, g.x.h, g.y.h);
    float sw = g.bilinear ? linear_scale(g.scales, 1, g.x.w, g.y.w, g.align_corners)
                          : scales_value(g.scales, 1, g.x.w, g.y.w);
    for (int64_t n = 0; n < g.y.n; n++)
        for (int64_t c = 0; c < g.y.c; c++)
            for (int64_t oh = 0; oh < g.y.h; oh++)
                for (int64_t ow = 0; ow < g.y.w; ow++) {
                    int32_t q;
                    /* nearest copies same-size tensors in both layouts; bilinear only
                     * in the NCHW kernel (the NHWC one interpolates, and with a scale
                     * factor such as 1.3 that leaves a size unchanged it moves) */
                    if (!g.bilinear || (copy && same_q && !nhwc)) {
                        int64_t ih = copy ? oh : nearest_source(oh, g.x.h, sh);
                        int64_t iw = copy ? ow : nearest_source(ow, g.x.w, sw);
                        q = q_load(a->in[0], xt->dtype, ref_at(&g.x, n, c, ih, iw));
                        if (!same_q) /* not reachable from PyTorch: requantize like quantize_val */
                            q = quantize_val(dequant_val(q, ref_scale_f(xt), zx), ref_scale_f(yt), zy, lo, hi, a->rounding);
                    } else {
                        lin_tap th = linear_tap(sh, oh, g.x.h, g.align_corners, nhwc);
                        lin_tap tw = linear_tap(sw, ow, g.x.w, g.align_corners, nhwc);
                        float p00 = (float)q_load(a->in[0], xt->dtype, ref_at(&g.x, n, c, th.i, tw.i));
                        float p01 = (float)q_load(a->in[0], xt->dtype, ref_at(&g.x, n, c, th.i, tw.i + tw.step));
                        float p10 = (float)q_load(a->in[0], xt->dtype, ref_at(&g.x, n, c, th.i + th.step, tw.i));
                        float p11 = (float)q_load(a->in[0], xt->dtype,
                                                  ref_at(&g.x, n, c, th.i + th.step, tw.i + tw.step));
                        int form = !nhwc ? 0 : c < cvec ? 1 : 2;
                        float r = bilinear_q(form, &th, &tw, p00, p01, p10, p11) - (float)zx;
                        q = form == 1 ? quantize_fbgemm(r, 1.0f / rs, zy, lo, hi, a->rounding) : quantize_val(r, rs, zy, lo, hi, a->rounding);
                    }
                    q_store(a->out[0], yt->dtype, ref_at(&g.y, n, c, oh, ow), q);
                }
    return MERA_OK;
}
