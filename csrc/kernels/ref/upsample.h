/* upsample's index arithmetic and interpolation formulas (PyTorch's
 * aten/src/ATen/native/UpSample.h and the quantized kernels), shared by the
 * reference kernels (upsample.c) and the fast one (fast/upsample_q.c) so
 * that both compute each output from the same expressions. */
#ifndef MERA_KERNELS_REF_UPSAMPLE_H
#define MERA_KERNELS_REF_UPSAMPLE_H

#include "kernels/ref/qmath.h"

/* compute_scales_value<float>: with a scale factor, its reciprocal taken
 * in double and rounded to float; with an output size, in/out in float. */
static inline float scales_value(const mera_attr *scales, int i, int64_t in, int64_t out)
{
    if (scales && scales->floats[i] > 0)
        return (float)(1.0 / scales->floats[i]);
    return (float)in / (float)out;
}

/* nearest_neighbor_compute_source_index: min(floorf(dst * scale), in - 1)
 * in float, which the quantized kernels call directly. */
static inline int64_t nearest_source(int64_t dst, int64_t in, float scale)
{
    int64_t s = (int64_t)floorf((float)dst * scale);
    return s < in - 1 ? s : in - 1;
}

/* nearest_idx of the float kernel: exact shortcuts for equal and doubled
 * sizes first (which disagree with the formula when a scale factor such as
 * 1.3 leaves a size unchanged). */
static inline int64_t nearest_index(int64_t dst, int64_t in, int64_t out, float scale)
{
    if (out == in)
        return dst;
    if (out == 2 * in)
        return dst >> 1;
    return nearest_source(dst, in, scale);
}

/* area_pixel_compute_scale<float> for linear modes. */
static inline float linear_scale(const mera_attr *scales, int i, int64_t in, int64_t out, int align_corners)
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

static inline lin_tap linear_tap(float scale, int64_t dst, int64_t in, int align_corners, int fused)
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

static inline lin_tap identity_tap(int64_t dst)
{
    lin_tap t = {dst, 0, 1.0f, 0.0f};
    return t;
}

/* The NHWC kernel's vector block (UpSampleBilinear2d's quantized form, see
 * ref_upsample_q) and its three bilinear formulas: form 0 the NCHW kernel,
 * 1 the NHWC vector lanes, 2 the NHWC scalar tail. */
#define UP_QVEC_CH 8

static inline float bilinear_q(int form, const lin_tap *th, const lin_tap *tw, float p00, float p01, float p10,
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

#endif
