/* upsample: nearest and bilinear resizing of NCHW/NHWC tensors, with
 * PyTorch's index arithmetic (aten/src/ATen/native/UpSample.h). */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "kernels/ref/upsample.h"

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
