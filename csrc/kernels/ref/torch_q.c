/* PyTorch's quantized kernels that are ops of their own: batch_norm, prelu,
 * add_scalar, mul_scalar, layer_norm_q, group_norm_q (docs/numerics.md
 * section 5a). Each formula is the one ATen's CPU kernel computes; the
 * comments name the routine. Only prelu's quantized 1.0 and the norms'
 * quantize_val elements depend on the graph's rounding: the rest round with
 * cvtps2dq / lrintf and add the zero point after rounding under both modes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* Elements per channel step (the product of the axes after `axis`) and the
 * channel count, for a per-channel parameter on `axis`. */
static void channel_walk(const mera_kernel_args *a, int64_t *inner, int64_t *channels)
{
    const mera_type *t = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis");
    if (axis < 0)
        axis += t->rank;
    *inner = 1;
    for (int d = (int)axis + 1; d < t->rank; d++)
        *inner *= t->shape[d];
    *channels = t->shape[axis];
}

/* ---- batch_norm --------------------------------------------------------- */

REF_KERNEL(ref_batch_norm_f32)
{
    (void)err;
    const float *sc = a->in[1], *sh = a->in[2];
    int64_t inner, C, n = mera_type_numel(a->out_types[0]);
    channel_walk(a, &inner, &C);
    int relu = ref_relu(a->node);
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        int64_t c = (i / inner) % C;
        float v = x[i] * sc[c] + sh[c];
        y[i] = relu && v < 0.0f ? 0.0f : v;
    }
    return MERA_OK;
}

/* qbatch_norm.cpp compute_fused_params, then q_batch_norm_kernel
 * (QuantizedOpKernels.cpp):
 *   alpha = f32(scale[c] * (s_x / s_y))       (float times a double ratio)
 *   beta  = f32(shift[c] / s_y)
 *   y     = fma(alpha, f32(q - z_x), beta)     (the vector body's fmadd; the scalar
 *                                               tail's a*x+b, contracted in the AVX2 build)
 *   q_y   = quantize_lane(y, 1.0f, z_y)        (Vec::quantize with scale 1)
 * relu: max(q_y, z_y). scale[c] = f32(inv_sigma * weight), shift[c] =
 * f32(bias - mean * inv_sigma * weight) come from the frontend. */
REF_KERNEL(ref_batch_norm_q)
{
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    const float *sc = a->in[1], *sh = a->in[2];
    int64_t inner, C, n = mera_type_numel(ot);
    channel_walk(a, &inner, &C);
    float *alpha = ref_alloc(2 * C, sizeof(float));
    if (!alpha)
        return ref_nomem(err, a->node);
    float *beta = alpha + C;
    double ratio = it->q.scale / ot->q.scale;
    for (int64_t c = 0; c < C; c++) {
        alpha[c] = (float)((double)sc[c] * ratio);
        beta[c] = (float)((double)sh[c] / ot->q.scale);
    }
    int32_t zx = ref_zp(it), zy = ref_zp(ot);
    int32_t lo = ref_relu(a->node) ? zy : q_lo(ot->dtype), hi = q_hi(ot->dtype);
    if (lo < q_lo(ot->dtype))
        lo = q_lo(ot->dtype);
    for (int64_t i = 0; i < n; i++) {
        int64_t c = (i / inner) % C;
        float y = fmaf(alpha[c], (float)(q_load(a->in[0], it->dtype, i) - zx), beta[c]);
        int32_t q = quantize_lane(y, 1.0f, zy, q_lo(ot->dtype), hi);
        q_store(a->out[0], ot->dtype, i, q < lo ? lo : q);
    }
    free(alpha);
    return MERA_OK;
}

/* ---- prelu -------------------------------------------------------------- */

/* Slope index of element i: its channel, or 0 for a single slope. */
static int64_t slope_of(int64_t i, int64_t inner, int64_t C, int64_t n_slopes)
{
    return n_slopes == 1 ? 0 : (i / inner) % C;
}

REF_KERNEL(ref_prelu_f32)
{
    (void)err;
    int64_t inner, C, n = mera_type_numel(a->out_types[0]), nw = mera_type_numel(a->in_types[1]);
    channel_walk(a, &inner, &C);
    const float *x = a->in[0], *w = a->in[1];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : w[slope_of(i, inner, C, nw)] * x[i];
    return MERA_OK;
}

/* qprelu_out_kernel (QuantizedOpKernels.cpp), in integers then one
 * requantize_from_int:
 *   one = quantize_val(1.0f) with the slope's parameters (the graph's rounding)
 *   acc = max(q - z_x, 0) * (one - z_w) + min(q - z_x, 0) * (w[c] - z_w)
 *   q_y = clamp(z_y + rne(f32(acc) * m)),  m = f32(s_x) * f32(s_w) * (1.0f / f32(s_y)) */
REF_KERNEL(ref_prelu_q)
{
    (void)err;
    const mera_type *it = a->in_types[0], *wt = a->in_types[1], *ot = a->out_types[0];
    int64_t inner, C, n = mera_type_numel(ot), nw = mera_type_numel(wt);
    channel_walk(a, &inner, &C);
    int32_t zx = ref_zp(it), zw = ref_zp(wt), zy = ref_zp(ot), lo = q_lo(ot->dtype), hi = q_hi(ot->dtype);
    int32_t one = quantize_val(1.0f, ref_scale_f(wt), zw, q_lo(wt->dtype), q_hi(wt->dtype), a->rounding) - zw;
    float m = ref_scale_f(it) * ref_scale_f(wt) * (1.0f / ref_scale_f(ot));
    for (int64_t i = 0; i < n; i++) {
        int32_t d = q_load(a->in[0], it->dtype, i) - zx;
        int32_t acc = d > 0 ? d * one : d * (q_load(a->in[1], wt->dtype, slope_of(i, inner, C, nw)) - zw);
        q_store(a->out[0], ot->dtype, i, clamp_i64(cvt_rne_i64((float)acc * m) + zy, lo, hi));
    }
    return MERA_OK;
}

/* ---- add_scalar / mul_scalar ------------------------------------------- */

REF_KERNEL(ref_add_scalar_f32)
{
    (void)err;
    int64_t n = mera_type_numel(a->out_types[0]);
    float v = (float)mera_attr_float(a->node, "value");
    int relu = (int)mera_attr_int(a->node, "relu");
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        float r = x[i] + v;
        y[i] = relu && r < 0.0f ? 0.0f : r;
    }
    return MERA_OK;
}

REF_KERNEL(ref_mul_scalar_f32)
{
    (void)err;
    int64_t n = mera_type_numel(a->out_types[0]);
    float v = (float)mera_attr_float(a->node, "value");
    int relu = (int)mera_attr_int(a->node, "relu");
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        float r = x[i] * v;
        y[i] = relu && r < 0.0f ? 0.0f : r;
    }
    return MERA_OK;
}

/* qadd_scalar_kernel: c_q = nearbyint(value / s_x) and the output's
 * parameters from _add_scalar_out (ops.c, mera_scalar_op_qparams); then
 * requantize_from_int of q - z_x + c_q with m = f32(s_x) * (1 / f32(s_y)):
 * clamp(z_y + rne(f32(q - z_x + c_q) * m)), relu max(., z_y). Where PyTorch
 * only copies the bytes (z_x - c_q in range), s_y = s_x, m is within an ulp
 * of 1, and the formula gives the input bytes back. */
REF_KERNEL(ref_add_scalar_q)
{
    (void)err;
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    double s;
    int32_t z;
    int64_t c_q;
    if (!mera_scalar_op_qparams(MERA_OP_ADD_SCALAR, mera_attr_float(a->node, "value"), it, &s, &z, &c_q))
        MERA_BUG("add_scalar: infer accepted parameters the kernel cannot derive");
    float m = ref_scale_f(it) * (1.0f / ref_scale_f(ot));
    int32_t zx = ref_zp(it), zy = ref_zp(ot);
    int32_t lo = mera_attr_int(a->node, "relu") ? zy : q_lo(ot->dtype), hi = q_hi(ot->dtype);
    int64_t n = mera_type_numel(ot);
    for (int64_t i = 0; i < n; i++) {
        int64_t c = (int64_t)q_load(a->in[0], it->dtype, i) - zx + c_q;
        int64_t r = cvt_rne_i64((float)c * m);
        q_store(a->out[0], ot->dtype, i, r == INT64_MIN ? (c < 0 ? lo : hi) : clamp_i64(r + zy, lo, hi));
    }
    return MERA_OK;
}

/* _mul_scalar_out (qmul.cpp) moves bytes: value > 0 keeps them (relu:
 * max(q, z_x)), 0 writes zeros, value < 0 reflects them, q_max + q_min - q
 * (relu: max(., z_y)); only the parameters change. */
REF_KERNEL(ref_mul_scalar_q)
{
    (void)err;
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    double v = mera_attr_float(a->node, "value");
    int relu = (int)mera_attr_int(a->node, "relu");
    int32_t lo = q_lo(it->dtype), hi = q_hi(it->dtype), zx = ref_zp(it), zy = ref_zp(ot);
    int64_t n = mera_type_numel(ot);
    for (int64_t i = 0; i < n; i++) {
        int32_t q = q_load(a->in[0], it->dtype, i);
        if (v > 0.0)
            q = relu && q < zx ? zx : q;
        else if (v == 0.0)
            q = 0;
        else {
            q = hi + lo - q;
            q = relu && q < zy ? zy : q;
        }
        q_store(a->out[0], ot->dtype, i, q);
    }
    return MERA_OK;
}

/* ---- layer_norm (quantized) --------------------------------------------- */

/* quantized_normalize_kernel (QuantizedOpKernels.cpp), the LayerNorm form
 * (elementwise weight and bias), per group of the N elements of the last
 * axes:
 *   s1 = sum q, s2 = sum q^2                  exact integers (hsum, hsum_sq)
 *   m' = f32(s1) / N, m = m' - z_x            in float
 *   v  = max(fma(-m', m', f32(s2) / N), 0)    (a - b*b contracted in the build)
 *   r  = f32(s_x / sqrt(f64(v * s_x * s_x) + eps))
 *   y  = fma((f32(q - z_x) - m) * r, w[i], b[i])
 * the first N - N % 64 elements of a group quantized by Vectorized::quantize
 * (quantize_lane), the rest by quantize_val. */
REF_KERNEL(ref_layer_norm_q)
{
    (void)err;
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    const float *w = a->n_inputs > 1 ? a->in[1] : NULL, *b = a->n_inputs > 2 ? a->in[2] : NULL;
    int64_t k = mera_attr_int(a->node, "num_axes"), N = 1;
    for (int d = it->rank - (int)k; d < it->rank; d++)
        N *= it->shape[d];
    int64_t total = mera_type_numel(it), M = N ? total / N : 0;
    double eps = mera_attr_float(a->node, "eps");
    float sx = ref_scale_f(it), sy = ref_scale_f(ot), inv = 1.0f / sy;
    int32_t zx = ref_zp(it), zy = ref_zp(ot), lo = q_lo(ot->dtype), hi = q_hi(ot->dtype);
    int64_t nvec = N - N % REF_TI_QVEC_STEP;
    for (int64_t g = 0; g < M; g++) {
        int64_t s1 = 0, s2 = 0;
        for (int64_t i = 0; i < N; i++) {
            int64_t q = q_load(a->in[0], it->dtype, g * N + i);
            s1 += q;
            s2 += q * q;
        }
        float ms = (float)s1 / (float)N;
        float m = ms - (float)zx;
        float v = fmaf(-ms, ms, (float)s2 / (float)N);
        v = v > 0.0f ? v : 0.0f;
        float r = (float)(sx / sqrt((double)(v * sx * sx) + eps));
        for (int64_t i = 0; i < N; i++) {
            int64_t at = g * N + i;
            float d = (float)(q_load(a->in[0], it->dtype, at) - zx);
            float y = fmaf((d - m) * r, w ? w[i] : 1.0f, b ? b[i] : 0.0f);
            int32_t q = i < nvec ? quantize_lane(y, inv, zy, lo, hi) : quantize_val(y, sy, zy, lo, hi, a->rounding);
            q_store(a->out[0], ot->dtype, at, q);
        }
    }
    return MERA_OK;
}

/* ---- group_norm / instance_norm (quantized) ----------------------------- */

/* Whether PyTorch takes its channels-last kernel (quantized_group_norm_impl:
 * qx.is_contiguous(ChannelsLast)): a channels-last rank-4 tensor, or a
 * contiguous one that is also channels-last contiguous (C == 1 or H == W == 1). */
static int group_norm_channels_last(const mera_kernel_args *a)
{
    const mera_type *t = a->in_types[0];
    if (t->rank != 4)
        return 0;
    return strcmp(mera_attr_string(a->node, "torch_memory_format"), "channels_last") == 0 || t->shape[1] == 1 ||
           t->shape[2] * t->shape[3] == 1;
}

/* The normalization of group g of batch n: PyTorch's m = mean/s_x (m' = m + z_x)
 * and r = s_x / std, from the sums s1 = sum q and s2 = sum q^2 (floats here; exact
 * integers but for the channels-last kernel's large maps). */
static void group_stats(float s1, float s2, float n, float sx, float zx, double eps, float *m, float *r)
{
    float ms = s1 / n;
    float v = fmaf(-ms, ms, s2 / n); /* a - b*b, contracted in PyTorch's build */
    v = v > 0.0f ? v : 0.0f;
    *m = ms - zx;
    *r = (float)(sx / sqrt((double)(v * sx * sx) + eps));
}

/* Exact integer sums of group g of batch n ([N, C, HW] data). */
static void group_int_sums(const mera_kernel_args *a, int64_t n, int64_t g, int64_t C, int64_t cpg, int64_t HW,
                           int64_t *s1, int64_t *s2)
{
    const mera_type *it = a->in_types[0];
    *s1 = *s2 = 0;
    for (int64_t i = (n * C + g * cpg) * HW, e = i + cpg * HW; i < e; i++) {
        int64_t q = q_load(a->in[0], it->dtype, i);
        *s1 += q;
        *s2 += q * q;
    }
}

/* The channels-last kernel's sums for maps of HW >= 512 (impl-2 of
 * quantized_groupnorm_nhwc_kernel): at::parallel_for over the B*HW pixels
 * gives thread t the pixels [t*chunk, (t+1)*chunk), chunk = ceil(B*HW / T);
 * each thread adds q and q*q of its pixels, in order, into float sums per
 * (batch, channel); a group's sums then add those floats thread by thread,
 * channel by channel. sums: [B, G, 2]. */
static int group_float_sums(const mera_kernel_args *a, int64_t B, int64_t C, int64_t G, int64_t HW, float *sums)
{
    const mera_type *it = a->in_types[0];
    int64_t T = mera_attr_int(a->node, "torch_threads"), R = B * HW, cpg = C / G;
    int64_t used = T < R ? T : R, chunk = (R + used - 1) / used;
    if (T == 1 || R <= 1)
        used = 1, chunk = R;
    float *part = ref_alloc(2 * B * C, sizeof(float));
    if (!part)
        return 0;
    for (int64_t i = 0; i < B * G * 2; i++)
        sums[i] = 0.0f;
    for (int64_t t = 0; t < used; t++) {
        for (int64_t i = 0; i < 2 * B * C; i++)
            part[i] = 0.0f;
        int64_t lo = t * chunk, hi = lo + chunk < R ? lo + chunk : R;
        for (int64_t p = lo; p < hi; p++) {
            int64_t n = p / HW, hw = p % HW;
            for (int64_t c = 0; c < C; c++) {
                int32_t q = q_load(a->in[0], it->dtype, (n * C + c) * HW + hw);
                part[n * 2 * C + c] += (float)q;
                part[n * 2 * C + C + c] += (float)(q * q);
            }
        }
        for (int64_t n = 0; n < B; n++)
            for (int64_t g = 0; g < G; g++)
                for (int64_t d = 0; d < cpg; d++) {
                    sums[(n * G + g) * 2] += part[n * 2 * C + g * cpg + d];
                    sums[(n * G + g) * 2 + 1] += part[n * 2 * C + C + g * cpg + d];
                }
    }
    free(part);
    return 1;
}

/* qnormalization.cpp quantized_group_norm_impl: M = B*G groups of N = C/G*HW
 * elements.
 * Contiguous (quantized_normalize_kernel, per-channel affine): exact integer
 * sums, m and r as layer_norm_q; per channel gp = f32(r * w[c]) and
 *   y = fma(f32(q - z_x) - m, gp, b[c])
 * every element quantized by Vectorized::quantize (the tail of a channel too,
 * through a partial vector load).
 * Channels-last (quantized_groupnorm_nhwc_kernel): per channel
 * sc = f32(r * w[c]), bi = fma(-sc, m, b[c]), y = fma(f32(q - z_x), sc, bi);
 * with HW < 512 the sums are exact integers and, within each pixel, the first
 * C/G - (C/G) % 64 channels of a group are quantized by the vector path, the
 * rest by quantize_val; with HW >= 512 the sums are floats in PyTorch's thread
 * order (group_float_sums) and the first C - C % 64 channels of a pixel take
 * the vector path. */
REF_KERNEL(ref_group_norm_q)
{
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    const float *w = a->n_inputs > 1 ? a->in[1] : NULL, *b = a->n_inputs > 2 ? a->in[2] : NULL;
    int64_t B = it->shape[0], C = it->shape[1], HW = 1, G = mera_attr_int(a->node, "num_groups");
    for (int d = 2; d < it->rank; d++)
        HW *= it->shape[d];
    int64_t cpg = C / G, N = cpg * HW;
    double eps = mera_attr_float(a->node, "eps");
    float sx = ref_scale_f(it), sy = ref_scale_f(ot), inv = 1.0f / sy;
    int32_t zx = ref_zp(it), zy = ref_zp(ot), lo = q_lo(ot->dtype), hi = q_hi(ot->dtype);
    int cl = group_norm_channels_last(a), float_sums = cl && HW >= 512;
    float *sums = ref_alloc(2 * B * G + 2 * C, sizeof(float));
    if (!sums || (float_sums && !group_float_sums(a, B, C, G, HW, sums))) {
        free(sums);
        return ref_nomem(err, a->node);
    }
    float *sc = sums + 2 * B * G, *bi = sc + C;
    for (int64_t n = 0; n < B; n++) {
        for (int64_t g = 0; g < G; g++) {
            float m, r;
            if (float_sums) {
                group_stats(sums[(n * G + g) * 2], sums[(n * G + g) * 2 + 1], (float)N, sx, (float)zx, eps, &m, &r);
            } else {
                int64_t s1, s2;
                group_int_sums(a, n, g, C, cpg, HW, &s1, &s2);
                group_stats((float)s1, (float)s2, (float)N, sx, (float)zx, eps, &m, &r);
            }
            for (int64_t c = g * cpg; c < (g + 1) * cpg; c++) {
                sc[c] = r * (w ? w[c] : 1.0f);
                bi[c] = cl ? fmaf(-sc[c], m, b ? b[c] : 0.0f) : m; /* contiguous: bi holds m */
            }
        }
        for (int64_t c = 0; c < C; c++) {
            int vec = !cl || (float_sums ? c < C - C % REF_TI_QVEC_STEP
                                         : c % cpg < cpg - cpg % REF_TI_QVEC_STEP);
            for (int64_t hw = 0; hw < HW; hw++) {
                int64_t at = (n * C + c) * HW + hw;
                float d = (float)(q_load(a->in[0], it->dtype, at) - zx);
                float y = cl ? fmaf(d, sc[c], bi[c]) : fmaf(d - bi[c], sc[c], b ? b[c] : 0.0f);
                int32_t q = vec ? quantize_lane(y, inv, zy, lo, hi) : quantize_val(y, sy, zy, lo, hi, a->rounding);
                q_store(a->out[0], ot->dtype, at, q);
            }
        }
    }
    free(sums);
    return MERA_OK;
}
