/* The fast quantized elementwise, conversion and pooling kernels: the
 * inner loops of one instruction set, over a span of contiguous elements.
 *
 * Each loop computes exactly the formula of one body of the reference
 * kernel (ref/elementwise.c, ref/quant.c, ref/pool.c) with the qmath.h
 * primitives' semantics lane by lane: cvtps2dq rounds half to even and
 * gives INT32_MIN for NaN and out-of-range values as cvt_rne_i32 does,
 * min_ps(t, MAX) yields MAX for a NaN t as `t < MAX ? t : MAX` does,
 * max_ps(0, c) keeps a NaN or -0.0 c as `c < 0 ? 0 : c` does, vfmadd is
 * fmaf. A span's last elements (fewer than a vector) take the scalar
 * image of the same formula. The drivers (elementwise_q.c, pool_q.c) decide
 * which body (ATen's vector or scalar one) each element takes.
 *
 * Internal to csrc/kernels/fast/. */
#ifndef MERA_KERNELS_FAST_EW_H
#define MERA_KERNELS_FAST_EW_H

#include <stdint.h>

#include "ir/ir.h"

/* Quantized add, vector body: fmaf(s, q, s * -z) per input, summed, relu,
 * quantize_lane. */
typedef struct {
    float s1, p1, s2, p2, inv;
    int32_t zo, lo, hi;
    int relu;
    int x1_int8, x2_int8, y_int8;
} ew_add_params;

/* Quantized mul, vector body: (qa - za) * (qb - zb) in int32, times mult
 * in float, cvtps2dq, + zo wrapping, clamped to [lo, hi]. */
typedef struct {
    float mult;
    int32_t za, zb, zo, lo, hi;
    int x1_int8, x2_int8, y_int8;
} ew_mul_params;

/* quantize (quantize_fbgemm), dequantize (dequant_val) and requantize
 * (the two in sequence). The quantize step follows the graph's rounding
 * (ir.h, qmath.h): ZP_BEFORE_ROUNDING fma(x, inv, zo), min, cvtps2dq;
 * ZP_AFTER_ROUNDING x * inv, min, cvtps2dq, + zo wrapping (quantize_lane). */
typedef struct {
    float scale, inv;   /* input scale (dequantize), reciprocal output scale (quantize) */
    int32_t zi, zo, lo, hi;
    int x_int8, y_int8;
    mera_rounding rounding;
} ew_convert_params;

typedef struct {
    const char *name;
    /* n outputs; operand k advances by step_k (1, or 0 for a broadcast
     * scalar) per element. */
    void (*add)(const ew_add_params *p, const uint8_t *a, int step_a, const uint8_t *b, int step_b, uint8_t *y,
                int64_t n);
    void (*mul)(const ew_mul_params *p, const uint8_t *a, int step_a, const uint8_t *b, int step_b, uint8_t *y,
                int64_t n);
    void (*quantize)(const ew_convert_params *p, const float *x, uint8_t *y, int64_t n);
    void (*dequantize)(const ew_convert_params *p, const uint8_t *x, float *y, int64_t n);
    void (*requantize)(const ew_convert_params *p, const uint8_t *x, uint8_t *y, int64_t n);
    /* max pool window: y[i] = max over a < nh, b < nw of x[a * rs + b * cs + i],
     * i < n, signed or unsigned; nh, nw >= 1 */
    void (*max_window)(uint8_t *y, const uint8_t *x, int64_t rs, int64_t cs, int64_t nh, int64_t nw, int64_t n,
                       int is_int8);
    /* acc[i] += x[i] over n bytes, signed or unsigned */
    void (*sum_bytes)(int32_t *acc, const uint8_t *x, int64_t n, int is_int8);
} ew_isa;

extern const ew_isa ew_isa_c;
#if defined(__x86_64__)
extern const ew_isa ew_isa_avx2;
extern const ew_isa ew_isa_avx512;
#endif

/* The scalar images of the bodies, one element (ew_c.c); the SIMD loops
 * finish their spans with these. */
uint8_t ew_add_one(const ew_add_params *p, uint8_t a, uint8_t b);
uint8_t ew_mul_one(const ew_mul_params *p, uint8_t a, uint8_t b);
/* The mul's scalar body (the tails of PyTorch's rows: requantize_from_int, the product times mult in
 * double, rounded to float, then to int64), 16 lanes at a time in AVX-512F (ew_avx512.c). */
void ew_mul_tail_avx512(const ew_mul_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y,
                        int64_t n);
/* y[k] = tab[x[k]] for k < n with AVX512_VBMI's vpermi2b, 64 bytes at a time (ew_avx512.c); callers
 * probe mera_cpu_features_get()->avx512vbmi once, at prepare. */
void ew_lookup_avx512vbmi(const uint8_t *tab, const uint8_t *x, uint8_t *y, int64_t n);

uint8_t ew_quantize_one(const ew_convert_params *p, float x);
float ew_dequantize_one(const ew_convert_params *p, uint8_t x);
uint8_t ew_requantize_one(const ew_convert_params *p, uint8_t x);

/* The add's SIMD loops may leave out steps that change no byte (ew_c.c):
 * ew_add_finite: every sum c, and c * inv, is finite and below 2^30 in
 * magnitude for every pair of input bytes, so min(t, MAX) passes t and
 * cvtps2dq never overflows; ew_add_full_range: [lo, hi] is the output
 * type's whole range, so a saturating narrowing is the clamp. */
int ew_add_finite(const ew_add_params *p);
int ew_add_full_range(const ew_add_params *p);

#endif
