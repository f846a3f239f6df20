/* The arithmetic primitives of the int8 contract (docs/numerics.md), shared
 * by the reference kernels. Each one is the scalar image of one PyTorch or
 * fbgemm routine and says which; a kernel is then a loop that calls them in
 * the order the library does.
 *
 * Everything here is float32 unless it says otherwise: scales are stored as
 * double (as PyTorch stores them) and converted to float exactly where the
 * library converts them.
 */
#ifndef MERA_KERNELS_REF_QMATH_H
#define MERA_KERNELS_REF_QMATH_H

/* No contraction of a*b+c into an FMA: fbgemm and ATen issue separate
 * multiply and add instructions, and a fused one rounds differently. Where
 * the library does use an FMA we call fmaf() explicitly. GCC ignores the
 * STDC pragma, so it gets its own spelling. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdint.h>

#include "ir/ir.h"

static inline int32_t q_lo(mera_dtype t) { return t == MERA_DTYPE_UINT8 ? 0 : -128; }
static inline int32_t q_hi(mera_dtype t) { return t == MERA_DTYPE_UINT8 ? 255 : 127; }

static inline int32_t clamp_i64(int64_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : v > hi ? hi : (int32_t)v;
}

/* Read element i of an int8 or uint8 buffer as an integer. */
static inline int32_t q_load(const void *p, mera_dtype t, int64_t i)
{
    return t == MERA_DTYPE_UINT8 ? ((const uint8_t *)p)[i] : ((const int8_t *)p)[i];
}

static inline void q_store(void *p, mera_dtype t, int64_t i, int32_t v)
{
    if (t == MERA_DTYPE_UINT8)
        ((uint8_t *)p)[i] = (uint8_t)v;
    else
        ((int8_t *)p)[i] = (int8_t)v;
}

/* x86 cvtps2dq (_mm256_cvtps_epi32): round half to even; NaN and values
 * outside the int32 range give INT32_MIN, the "integer indefinite". */
static inline int32_t cvt_rne_i32(float x)
{
    if (!(x >= -2147483648.0f && x < 2147483648.0f))
        return INT32_MIN;
    return (int32_t)nearbyintf(x);
}

/* x86-64 cvtss2si with a 64-bit destination (lrintf): round half to even;
 * NaN and out-of-range values give INT64_MIN. */
static inline int64_t cvt_rne_i64(float x)
{
    if (!(x >= -9223372036854775808.0f && x < 9223372036854775808.0f))
        return INT64_MIN;
    return (int64_t)nearbyintf(x);
}

/* int32 addition that wraps like _mm256_add_epi32. */
static inline int32_t add_wrap_i32(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* ---- quantize ----------------------------------------------------------
 *
 * PyTorch quantizes in three slightly different ways, and which one a
 * kernel uses decides how exact ties (x/scale = k + 0.5) round:
 *
 *   quantize_fbgemm  fbgemm::Quantize over an array. Used by
 *                    quantize_per_tensor and at::native::quantize_vec.
 *   quantize_val     at::native::quantize_val, the scalar path
 *                    (fbgemm::Quantize on one value).
 *   quantize_lane    ATen's own QuantizeAvx2/QuantizeAvx512 behind
 *                    Vectorized<quint8>::quantize: rounds first, then adds
 *                    the zero point, in every PyTorch.
 *
 * The first two follow the graph's rounding (ir.h):
 *   ZP_BEFORE_ROUNDING  fbgemm's Quantize<T, LEGACY=true>, the default up to
 *                       PyTorch 2.13: the zero point is added before
 *                       rounding, fused into one FMA in the array form
 *                       (quantize_per_tensor calls Quantize<unsigned char,
 *                       true>, seen in libtorch_cpu.so of torch 2.13), and
 *                       mulss, addss, nearbyintf in the scalar form;
 *   ZP_AFTER_ROUNDING   fbgemm after "Remove legacy quantize path" (FBGEMM
 *                       #5624, April 2026; torch 2.14 links only
 *                       Quantize<unsigned char>): rne(f32(x * inv)) + z in
 *                       both forms, i.e. quantize_lane. */

#define QMATH_INT32_FLOAT_MAX 2147483520.0f /* largest float below 2^31 */

static inline int32_t quantize_lane(float x, float inv_scale, int32_t zp, int32_t lo, int32_t hi);

/* fbgemm QuantizeAvx2 (its remainder is masked, so every element takes
 * it), one lane. ZP_BEFORE_ROUNDING: t = fma(x, inv_scale, zp), clipped
 * with min_ps (a NaN yields the bound), rounded half to even by cvtps2dq,
 * clamped. ZP_AFTER_ROUNDING: quantize_lane. */
static inline int32_t quantize_fbgemm(float x, float inv_scale, int32_t zp, int32_t lo, int32_t hi,
                                      mera_rounding rounding)
{
    switch (rounding) {
    case MERA_ROUNDING_ZP_BEFORE_ROUNDING: {
        float t = fmaf(x, inv_scale, (float)zp);
        t = t < QMATH_INT32_FLOAT_MAX ? t : QMATH_INT32_FLOAT_MAX;
        return clamp_i64(cvt_rne_i32(t), lo, hi);
    }
    case MERA_ROUNDING_ZP_AFTER_ROUNDING:
        return quantize_lane(x, inv_scale, zp, lo, hi);
    case MERA_ROUNDING_COUNT:
        break;
    }
    MERA_BUG("quantize_fbgemm: rounding outside mera_rounding (dispatch lets no kernel run with it)");
    return 0;
}

/* at::native::quantize_val(scale, zp, x): inv = 1.0f / (float)scale,
 * t = x * inv in float; ZP_BEFORE_ROUNDING: nearbyint(t + zp) (in float);
 * ZP_AFTER_ROUNDING: zp + nearbyint(t). Then a clamp; x86 turns a NaN into
 * the integer indefinite, whose low byte is 0. */
static inline int32_t quantize_val(float x, float scale, int32_t zp, int32_t lo, int32_t hi,
                                   mera_rounding rounding)
{
    float inv = 1.0f / scale;
    float t = x * inv;
    switch (rounding) {
    case MERA_ROUNDING_ZP_BEFORE_ROUNDING:
        t = t + (float)zp;
        t = nearbyintf(t);
        break;
    case MERA_ROUNDING_ZP_AFTER_ROUNDING:
        t = (float)zp + nearbyintf(t);
        break;
    case MERA_ROUNDING_COUNT:
        MERA_BUG("quantize_val: rounding outside mera_rounding (dispatch lets no kernel run with it)");
    }
    if (isnan(t))
        return 0;
    return t < (float)lo ? lo : t > (float)hi ? hi : (int32_t)t;
}

/* ATen QuantizeAvx2 / QuantizeAvx512 (vec256_qint.h, vec512_qint.h), one
 * lane of Vectorized<T>::quantize:
 * t = x * inv_scale clipped with min_ps, cvtps2dq, then the zero point added
 * with int32 wrap-around, clamped. */
static inline int32_t quantize_lane(float x, float inv_scale, int32_t zp, int32_t lo, int32_t hi)
{
    float t = x * inv_scale;
    t = t < QMATH_INT32_FLOAT_MAX ? t : QMATH_INT32_FLOAT_MAX;
    int32_t r = add_wrap_i32(cvt_rne_i32(t), zp);
    return clamp_i64(r, lo, hi);
}

/* ---- dequantize -------------------------------------------------------- */

/* fbgemm::Dequantize and at::native::dequantize_val: scale * (q - zp) with
 * the difference formed exactly in int32. */
static inline float dequant_val(int32_t q, float scale, int32_t zp)
{
    return scale * (float)(q - zp);
}

/* Vectorized<quint8>::dequantize(scale, zp, scale_neg_zp_premul):
 * fmadd(scale, float(q), scale * -zp), the premultiplied product rounded to
 * float first. Its last bit can differ from dequant_val. */
static inline float dequant_fma(int32_t q, float scale, float scale_neg_zp)
{
    return fmaf(scale, (float)q, scale_neg_zp);
}

static inline float neg_zp_premul(float scale, int32_t zp)
{
    return scale * -(float)zp;
}

/* ---- exp ------------------------------------------------------------------ */

/* Sleef_expf16_u10 / Sleef_expf8_u10avx2 (sleefsimdsp.c xexpf with FMA),
 * which Vectorized<float>::exp() calls (quantized sigmoid, softmax). Matching
 * it bit for bit keeps those exact where libm's expf rounds differently. */
static inline float pow2i(int32_t q)
{
    union { uint32_t u; float f; } v = {(uint32_t)(q + 0x7f) << 23};
    return v.f;
}

static inline float sleef_expf_u10(float d)
{
    const float r_ln2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;
    const float l2u = 0.693145751953125f, l2l = 1.428606765330187045e-06f;
    int32_t q = cvt_rne_i32(d * r_ln2);
    float s = fmaf((float)q, -l2u, d);
    s = fmaf((float)q, -l2l, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = 1.0f + fmaf(s * s, u, s);
    int32_t h = (int32_t)(((int64_t)q - ((int64_t)q & 1)) / 2); /* q >> 1, arithmetic */
    u = u * pow2i(h) * pow2i(q - h);
    if (d < -104.0f)
        u = 0.0f;
    if (100.0f < d)
        u = INFINITY;
    return u;
}

/* ---- tanh ----------------------------------------------------------------- */

/* Sleef_tanhf16_u10 / Sleef_tanhf8_u10 (sleefsimdsp.c xtanhf with FMA), which
 * Vectorized<float>::tanh() calls (quantized tanh): exp(|x|) as a
 * double-float (expk2f), then (e - 1/e) / (e + 1/e) in double-float
 * arithmetic (df.h, its FMA forms). Written from the algorithm; every
 * operation rounds to float as in the vector code. */
typedef struct {
    float x, y;
} sleef_f2;

static inline sleef_f2 sf2(float x, float y)
{
    sleef_f2 r = {x, y};
    return r;
}

static inline sleef_f2 sf2_add2_f(sleef_f2 x, float y) /* dfadd2_vf2_vf2_vf */
{
    float s = x.x + y, v = s - x.x;
    float t = (x.x - (s - v)) + (y - v);
    return sf2(s, t + x.y);
}

static inline sleef_f2 sf2_add2_f2(sleef_f2 x, sleef_f2 y) /* dfadd2_vf2_vf2_vf2 */
{
    float s = x.x + y.x, v = s - x.x;
    float t = (x.x - (s - v)) + (y.x - v);
    return sf2(s, t + (x.y + y.y));
}

static inline sleef_f2 sf2_add_f_f2(float x, sleef_f2 y) /* dfadd_vf2_vf_vf2 */
{
    float s = x + y.x;
    return sf2(s, ((x - s) + y.x) + y.y);
}

static inline sleef_f2 sf2_add_f2(sleef_f2 x, sleef_f2 y) /* dfadd_vf2_vf2_vf2, |x| >= |y| */
{
    float s = x.x + y.x;
    return sf2(s, (((x.x - s) + y.x) + x.y) + y.y);
}

static inline sleef_f2 sf2_mul_f(sleef_f2 x, float y) /* dfmul_vf2_vf2_vf */
{
    float s = x.x * y;
    return sf2(s, fmaf(x.y, y, fmaf(x.x, y, -s)));
}

static inline sleef_f2 sf2_mul_f2(sleef_f2 x, sleef_f2 y) /* dfmul_vf2_vf2_vf2 */
{
    float s = x.x * y.x;
    return sf2(s, fmaf(x.x, y.y, fmaf(x.y, y.x, fmaf(x.x, y.x, -s))));
}

static inline sleef_f2 sf2_squ(sleef_f2 x) /* dfsqu_vf2_vf2 */
{
    float s = x.x * x.x;
    return sf2(s, fmaf(x.x + x.x, x.y, fmaf(x.x, x.x, -s)));
}

static inline sleef_f2 sf2_rec(sleef_f2 d) /* dfrec_vf2_vf2 */
{
    float s = 1.0f / d.x;
    return sf2(s, s * fmaf(-d.y, s, fmaf(-d.x, s, 1.0f)));
}

static inline sleef_f2 sf2_div(sleef_f2 n, sleef_f2 d) /* dfdiv_vf2_vf2_vf2 */
{
    float t = 1.0f / d.x;
    float s = n.x * t;
    float u = fmaf(t, n.x, -s);
    float v = fmaf(-d.y, t, fmaf(-d.x, t, 1.0f));
    return sf2(s, fmaf(s, v, fmaf(n.y, t, u)));
}

static inline float sleef_ldexp2f(float d, int32_t e) /* vldexp2_vf_vf_vi2 */
{
    int32_t h = (int32_t)(((int64_t)e - ((int64_t)e & 1)) / 2); /* e >> 1, arithmetic */
    return d * pow2i(h) * pow2i(e - h);
}

static inline sleef_f2 sleef_expk2f(sleef_f2 d)
{
    const float r_ln2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;
    const float l2u = 0.693145751953125f, l2l = 1.428606765330187045e-06f;
    float u = (d.x + d.y) * r_ln2;
    int32_t q = cvt_rne_i32(u);
    sleef_f2 s = sf2_add2_f(d, (float)q * -l2u);
    s = sf2_add2_f(s, (float)q * -l2l);
    u = 0.1980960224e-3f;
    u = fmaf(u, s.x, 0.1394256484e-2f);
    u = fmaf(u, s.x, 0.8333456703e-2f);
    u = fmaf(u, s.x, 0.4166637361e-1f);
    sleef_f2 t = sf2_add2_f(sf2_mul_f(s, u), 0.166666659414234244790680580464e+0f);
    t = sf2_add2_f(sf2_mul_f2(s, t), 0.5f);
    t = sf2_add2_f2(s, sf2_mul_f2(sf2_squ(s), t));
    t = sf2_add_f_f2(1.0f, t);
    t.x = sleef_ldexp2f(t.x, q);
    t.y = sleef_ldexp2f(t.y, q);
    if (d.x < -104.0f)
        t.x = t.y = 0.0f;
    return t;
}

static inline float sleef_tanhf_u10(float x)
{
    float y = fabsf(x);
    sleef_f2 d = sleef_expk2f(sf2(y, 0.0f));
    sleef_f2 e = sf2_rec(d);
    d = sf2_div(sf2_add_f2(d, sf2(-e.x, -e.y)), sf2_add_f2(d, e));
    y = d.x + d.y;
    if (fabsf(x) > 8.664339742f || isnan(y))
        y = 1.0f;
    y = copysignf(y, x); /* vmulsign: y >= 0 here */
    return isnan(x) ? x : y;
}

/* ---- requantize an int32 accumulator (conv2d, dense) ------------------- */

/* The constants of one output channel (see ref_requant_params in conv.c). */
typedef struct {
    int has_bias, per_tensor;
    float multiplier; /* act_times_w_scale / out_scale */
    float bias;       /* per-channel: bias / act_times_w_scale; per-tensor: the bias */
    float rcp;        /* per-tensor: 1 / act_times_w_scale */
} requant_ch;

/* fbgemm requantizeOutputProcessingAvx2 (and its depthwise and groupwise
 * twins), one lane, as libtorch_cpu.so executes it:
 *   per-channel weights: y = ((float)acc + bias / ats) * multiplier
 *   per-tensor weights:  y = fma(bias, 1 / ats, (float)acc) * multiplier
 * (the source multiplies and adds, but GCC built fbgemm with -mfma and
 * contracted the pair into one vfmadd231ps; the division of the
 * per-channel form cannot be fused), rounded by cvtps2dq, then
 * packs_epi32 + adds_epi16(zp) + packus_epi16 + max/min, which for every
 * int32 r equals clamp(r + zp) taken in wide integers. */
static inline int32_t requant_acc(int32_t acc, const requant_ch *k, int32_t zp, int32_t lo, int32_t hi)
{
    float y = (float)acc;
    if (k->has_bias)
        y = k->per_tensor ? fmaf(k->bias, k->rcp, y) : y + k->bias;
    y = y * k->multiplier;
    return clamp_i64((int64_t)cvt_rne_i32(y) + zp, lo, hi);
}

/* Fill the per-output-channel constants of a quantized conv2d or dense
 * (conv.c). bias may be NULL. */
void ref_requant_params(const mera_type *x, const mera_type *w, const mera_type *out, const float *bias,
                        int64_t channels, requant_ch *ch);

#endif
