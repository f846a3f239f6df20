/* upsample: nearest and bilinear resizing of NCHW/NHWC tensors, with
 * PyTorch's index arithmetic (aten/src/ATen/native/UpSample.h) when
 * coordinate_mode is "torch", else with ONNX Resize's coordinate modes as
 * onnxruntime computes them (see the end of this file). */
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

static mera_status onnx_upsample(const mera_kernel_args *a, int quantized);

REF_KERNEL(ref_upsample_f32)
{
    (void)err;
    if (!ref_is(a->node, "coordinate_mode", "torch"))
        return onnx_upsample(a, 0);
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
    if (!ref_is(a->node, "coordinate_mode", "torch"))
        return onnx_upsample(a, 1);
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

/* ---- ONNX Resize coordinate modes --------------------------------------
 *
 * onnxruntime's CPU Resize (core/providers/cpu/tensor/upsample*.{h,cc}), in
 * float: the scale of an axis is the scales attribute as given (float), or
 * out / in in float for a size; a destination index x maps to a source
 * coordinate by the mode:
 *   half_pixel            (x + 0.5) / s - 0.5
 *   pytorch_half_pixel    the same, 0 when out == 1
 *   half_pixel_symmetric  in/2 * (1 - out / (s * in)) + (x + 0.5) / s - 0.5
 *   asymmetric            x / s
 *   tf_half_pixel_for_nn  (x + 0.5) / s
 *   align_corners         x * (in - 1) / (out - 1), 0 when out == 1
 *   tf_crop_and_resize    roi_start * (in - 1) + x * (roi_end - roi_start) * (in - 1) / (out - 1),
 *                         0.5 * (roi_start + roi_end) * (in - 1) when out == 1; a
 *                         coordinate outside [0, in - 1] gives extrapolation_value
 * nearest: the coordinate rounds by nearest_mode (round_prefer_floor rounds
 * halves down, round_prefer_ceil is floor(c + 0.5f)) and is clamped to
 * [0, in - 1].
 * An axis with s == 1 keeps x (no roi either). linear: the coordinate is clamped to
 * [0, in - 1], i1 = (int)c, i2 = min(i1 + 1, in - 1), weights |c - i2| and
 * |c - i1| (0.5 each when i1 == i2), and
 *   y = w2x*w2y*X(i1y,i1x) + w1x*w2y*X(i1y,i2x) + w2x*w1y*X(i2y,i1x) + w1x*w1y*X(i2y,i2x).
 * A tensor whose height and width both stay is copied, whatever the mode.
 * The quantized form dequantizes the taps (dequant_val), interpolates as
 * above and quantizes with quantize_val: "dequantize, float Resize,
 * quantize", as onnxruntime runs a QDQ Resize without graph optimizations.
 * nearest copies bytes (requantized only if the parameters differ). */

typedef struct {
    int64_t i1, i2;
    float w1, w2;  /* weights of i1 and i2 */
    int outside;   /* tf_crop_and_resize: extrapolate */
} onnx_tap;

static float onnx_scale(const mera_attr *scales, int i, int64_t in, int64_t out)
{
    if (scales)
        return (float)scales->floats[i];
    return (float)out / (float)in;
}

static float onnx_coord(const char *m, float x, float s, int64_t in_, int64_t out_, float r0, float r1)
{
    float in = (float)in_, out = (float)out_;
    if (!strcmp(m, "half_pixel"))
        return (x + 0.5f) / s - 0.5f;
    if (!strcmp(m, "pytorch_half_pixel"))
        return out > 1 ? (x + 0.5f) / s - 0.5f : 0.0f;
    if (!strcmp(m, "half_pixel_symmetric")) { /* the offset in float, the rest in double, as onnxruntime */
        float output_width = s * in, adjustment = out / output_width, center = in / 2;
        float offset = center * (1 - adjustment);
        return (float)(offset + ((double)x + 0.5) / s - 0.5);
    }
    if (!strcmp(m, "asymmetric"))
        return x / s;
    if (!strcmp(m, "tf_half_pixel_for_nn"))
        return (x + 0.5f) / s;
    if (!strcmp(m, "align_corners"))
        return out_ == 1 ? 0.0f : x * (in - 1) / (out - 1);
    /* tf_crop_and_resize */
    return out_ > 1 ? r0 * (in - 1) + (x * (r1 - r0) * (in - 1)) / (out - 1)
                    : (float)(0.5 * (r0 + r1) * (in - 1));
}

static int64_t onnx_nearest_pixel(const char *nm, float c)
{
    if (!strcmp(nm, "round_prefer_floor"))
        return c == (float)(int64_t)c + 0.5f ? (int64_t)floorf(c) : (int64_t)roundf(c);
    if (!strcmp(nm, "round_prefer_ceil")) /* c + 0.5 rounded to float first: 3.4999998 gives 4, as onnxruntime */
        return (int64_t)floorf(c + 0.5f);
    if (!strcmp(nm, "floor"))
        return (int64_t)floorf(c);
    return (int64_t)ceilf(c); /* ceil */
}

/* The taps of destination index x along one axis (axis 0: h, 1: w). */
static onnx_tap onnx_axis_tap(const mera_node *node, int axis, int64_t x, int64_t in, int64_t out, int linear)
{
    const char *m = mera_attr_string(node, "coordinate_mode");
    const mera_attr *scales = mera_node_attr(node, "scales"), *roi = mera_node_attr(node, "roi");
    int tf = !strcmp(m, "tf_crop_and_resize");
    float s = onnx_scale(scales, axis, in, out);
    float r0 = roi ? (float)roi->floats[axis] : 0.0f, r1 = roi ? (float)roi->floats[axis + 2] : 1.0f;
    onnx_tap t = {0, 0, 1.0f, 0.0f, 0};
    float c = s == 1.0f ? (float)x : onnx_coord(m, (float)x, s, in, out, r0, r1);
    t.outside = tf && (c < 0 || c > (float)(in - 1));
    if (!linear) {
        int64_t p = onnx_nearest_pixel(mera_attr_string(node, "nearest_mode"), c);
        t.i1 = t.i2 = p < 0 ? 0 : p > in - 1 ? in - 1 : p;
        return t;
    }
    c = c < 0 ? 0.0f : c > (float)(in - 1) ? (float)(in - 1) : c;
    t.i1 = (int64_t)c < in - 1 ? (int64_t)c : in - 1;
    t.i2 = t.i1 + 1 < in - 1 ? t.i1 + 1 : in - 1;
    t.w2 = fabsf(c - (float)t.i1); /* weight of i2 */
    t.w1 = fabsf(c - (float)t.i2); /* weight of i1 */
    if (t.i1 == t.i2)
        t.w1 = t.w2 = 0.5f;
    return t;
}

static float onnx_load(const mera_kernel_args *a, int quantized, int64_t i)
{
    if (!quantized)
        return ((const float *)a->in[0])[i];
    const mera_type *xt = a->in_types[0];
    return dequant_val(q_load(a->in[0], xt->dtype, i), ref_scale_f(xt), ref_zp(xt));
}

/* cubic (onnxruntime's ResizeBiCubic): taps floor(c) - 1 .. floor(c) + 2,
 * clamped to the input, weighted by Keys' kernel with coefficient A at the
 * distances 1 + r, r, 1 - r, 2 - r (r = c - floor(c)); with exclude_outside
 * the taps outside the input get 0 and the weights are renormalized. */
typedef struct {
    int64_t i[4];
    float w[4];
    int outside;
} cubic_tap;

static cubic_tap onnx_cubic_tap(const mera_node *node, int axis, int64_t x, int64_t in, int64_t out)
{
    const char *m = mera_attr_string(node, "coordinate_mode");
    const mera_attr *scales = mera_node_attr(node, "scales"), *roi = mera_node_attr(node, "roi");
    float s = onnx_scale(scales, axis, in, out), A = (float)mera_attr_float(node, "cubic_coeff_a");
    float r0 = roi ? (float)roi->floats[axis] : 0.0f, r1 = roi ? (float)roi->floats[axis + 2] : 1.0f;
    float c = s == 1.0f ? (float)x : onnx_coord(m, (float)x, s, in, out, r0, r1);
    cubic_tap t;
    t.outside = !strcmp(m, "tf_crop_and_resize") && (c < 0 || c > (float)(in - 1));
    float f = floorf(c), r = c - f;
    t.w[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
    t.w[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
    t.w[2] = ((A + 2) * (1 - r) - (A + 3)) * (1 - r) * (1 - r) + 1;
    t.w[3] = ((A * (2 - r) - 5 * A) * (2 - r) + 8 * A) * (2 - r) - 4 * A;
    int exclude = mera_attr_int(node, "exclude_outside") != 0;
    float sum = 0.0f;
    for (int k = 0; k < 4; k++) {
        int64_t i = (int64_t)f - 1 + k;
        if (exclude && (i < 0 || i > in - 1))
            t.w[k] = 0.0f;
        sum += t.w[k];
        t.i[k] = i < 0 ? 0 : i > in - 1 ? in - 1 : i;
    }
    if (exclude)
        for (int k = 0; k < 4; k++)
            t.w[k] /= sum;
    return t;
}

static mera_status onnx_upsample_cubic(const mera_kernel_args *a, int quantized)
{
    up_geom g = up_geometry(a);
    float extrapolation = (float)mera_attr_float(a->node, "extrapolation_value");
    const mera_type *yt = a->out_types[0];
    int copy = g.x.h == g.y.h && g.x.w == g.y.w;
    for (int64_t oh = 0; oh < g.y.h; oh++) {
        cubic_tap th = onnx_cubic_tap(a->node, 0, oh, g.x.h, g.y.h);
        for (int64_t ow = 0; ow < g.y.w; ow++) {
            cubic_tap tw = onnx_cubic_tap(a->node, 1, ow, g.x.w, g.y.w);
            for (int64_t n = 0; n < g.y.n; n++)
                for (int64_t c = 0; c < g.y.c; c++) {
                    int64_t o = ref_at(&g.y, n, c, oh, ow);
                    float v = 0.0f;
                    if (copy) {
                        v = onnx_load(a, quantized, ref_at(&g.x, n, c, oh, ow));
                    } else if (th.outside || tw.outside) {
                        v = extrapolation;
                    } else {
                        for (int ky = 0; ky < 4; ky++) {
                            float row = 0.0f;
                            for (int kx = 0; kx < 4; kx++)
                                row += tw.w[kx] * onnx_load(a, quantized, ref_at(&g.x, n, c, th.i[ky], tw.i[kx]));
                            v += th.w[ky] * row;
                        }
                    }
                    if (!quantized)
                        ((float *)a->out[0])[o] = v;
                    else
                        q_store(a->out[0], yt->dtype, o,
                                quantize_val(v, ref_scale_f(yt), ref_zp(yt), q_lo(yt->dtype), q_hi(yt->dtype),
                                             a->rounding));
                }
        }
    }
    return MERA_OK;
}

static mera_status onnx_upsample(const mera_kernel_args *a, int quantized)
{
    if (ref_is(a->node, "method", "cubic"))
        return onnx_upsample_cubic(a, quantized);
    up_geom g = up_geometry(a);
    const mera_node *node = a->node;
    int linear = g.bilinear;
    float extrapolation = (float)mera_attr_float(node, "extrapolation_value");
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    int same_q = quantized && xt->q.scale == yt->q.scale && ref_zp(xt) == ref_zp(yt) && xt->dtype == yt->dtype;
    int copy = g.x.h == g.y.h && g.x.w == g.y.w; /* onnxruntime copies a tensor whose shape stays */
    for (int64_t oh = 0; oh < g.y.h; oh++) {
        onnx_tap th = copy ? (onnx_tap){oh, oh, 1.0f, 0.0f, 0} : onnx_axis_tap(node, 0, oh, g.x.h, g.y.h, linear);
        for (int64_t ow = 0; ow < g.y.w; ow++) {
            onnx_tap tw = copy ? (onnx_tap){ow, ow, 1.0f, 0.0f, 0} : onnx_axis_tap(node, 1, ow, g.x.w, g.y.w, linear);
            for (int64_t n = 0; n < g.y.n; n++)
                for (int64_t c = 0; c < g.y.c; c++) {
                    int64_t o = ref_at(&g.y, n, c, oh, ow);
                    if (!linear && same_q && !th.outside && !tw.outside) {
                        q_store(a->out[0], yt->dtype, o, q_load(a->in[0], xt->dtype, ref_at(&g.x, n, c, th.i1, tw.i1)));
                        continue;
                    }
                    float v;
                    if (th.outside || tw.outside) {
                        v = extrapolation;
                    } else if (!linear) {
                        v = onnx_load(a, quantized, ref_at(&g.x, n, c, th.i1, tw.i1));
                    } else {
                        float x11 = onnx_load(a, quantized, ref_at(&g.x, n, c, th.i1, tw.i1));
                        float x21 = onnx_load(a, quantized, ref_at(&g.x, n, c, th.i1, tw.i2));
                        float x12 = onnx_load(a, quantized, ref_at(&g.x, n, c, th.i2, tw.i1));
                        float x22 = onnx_load(a, quantized, ref_at(&g.x, n, c, th.i2, tw.i2));
                        v = tw.w1 * th.w1 * x11 + tw.w2 * th.w1 * x21 + tw.w1 * th.w2 * x12 + tw.w2 * th.w2 * x22;
                    }
                    if (!quantized)
                        ((float *)a->out[0])[o] = v;
                    else
                        q_store(a->out[0], yt->dtype, o,
                                quantize_val(v, ref_scale_f(yt), ref_zp(yt), q_lo(yt->dtype), q_hi(yt->dtype),
                                             a->rounding));
                }
        }
    }
    return MERA_OK;
}
