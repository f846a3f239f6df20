/* AVX2 + FMA inner loops of the fast elementwise kernels (ew.h), 8 lanes.
 * The functions carry their own target attribute, as in isa_avx2.c. */
#if defined(__x86_64__)

#include <immintrin.h>

#include "kernels/fast/ew.h"

#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define MAXF 2147483520.0f /* QMATH_INT32_FLOAT_MAX */

INLINE __m256i load8(const uint8_t *p, int step, int is_int8)
{
    __m128i v = step ? _mm_loadl_epi64((const __m128i *)p) : _mm_set1_epi8((char)*p);
    return is_int8 ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v);
}

/* r (already within [lo, hi]) to 8 bytes: the packs saturate nothing */
INLINE void store8(uint8_t *y, __m256i r, int is_int8)
{
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    __m128i b = is_int8 ? _mm_packs_epi16(w, w) : _mm_packus_epi16(w, w);
    _mm_storel_epi64((__m128i *)y, b);
}

INLINE __m256i clamp8(__m256i r, int32_t lo, int32_t hi)
{
    return _mm256_min_epi32(_mm256_max_epi32(r, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}

/* The sum of one vector of 8 pairs, relu'd: fmaf(s, q, s * -z) per input */
INLINE __m256 add_sum8(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, __m256 s1, __m256 p1,
                       __m256 s2, __m256 p2, int relu)
{
    __m256 x1 = _mm256_cvtepi32_ps(load8(a, sa, p->x1_int8));
    __m256 x2 = _mm256_cvtepi32_ps(load8(b, sb, p->x2_int8));
    __m256 c = _mm256_add_ps(_mm256_fmadd_ps(s1, x1, p1), _mm256_fmadd_ps(s2, x2, p2));
    return relu ? _mm256_max_ps(_mm256_setzero_ps(), c) : c;
}

/* The common case (ew_add_finite, ew_add_full_range): no min with MAX, no clamp (the packs'
 * saturations to int16, then to the output type, are the clamp); 32 elements a step, packed
 * to bytes together and put back in order. */
INLINE void add_avx2_sat(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y,
                         int64_t n, int relu, int64_t *done)
{
    const __m256 s1 = _mm256_set1_ps(p->s1), p1 = _mm256_set1_ps(p->p1), s2 = _mm256_set1_ps(p->s2),
                 p2 = _mm256_set1_ps(p->p2), inv = _mm256_set1_ps(p->inv);
    const __m256i zo = _mm256_set1_epi32(p->zo), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i r[4];
        for (int k = 0; k < 4; k++) {
            __m256 c = add_sum8(p, a + (i + 8 * k) * sa, sa, b + (i + 8 * k) * sb, sb, s1, p1, s2, p2, relu);
            r[k] = _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(c, inv)), zo);
        }
        __m256i w01 = _mm256_packs_epi32(r[0], r[1]), w23 = _mm256_packs_epi32(r[2], r[3]);
        __m256i q = p->y_int8 ? _mm256_packs_epi16(w01, w23) : _mm256_packus_epi16(w01, w23);
        _mm256_storeu_si256((__m256i *)(y + i), _mm256_permutevar8x32_epi32(q, order));
    }
    *done = i;
}

TARGET static void add_avx2(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y,
                            int64_t n)
{
    const __m256 s1 = _mm256_set1_ps(p->s1), p1 = _mm256_set1_ps(p->p1), s2 = _mm256_set1_ps(p->s2),
                 p2 = _mm256_set1_ps(p->p2), inv = _mm256_set1_ps(p->inv), maxf = _mm256_set1_ps(MAXF);
    const __m256i zo = _mm256_set1_epi32(p->zo);
    int64_t i = 0;
    if (n >= 32 && ew_add_full_range(p) && ew_add_finite(p)) {
        if (p->relu) /* relu made a constant: one copy of the loop each */
            add_avx2_sat(p, a, sa, b, sb, y, n, 1, &i);
        else
            add_avx2_sat(p, a, sa, b, sb, y, n, 0, &i);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 c = add_sum8(p, a + i * sa, sa, b + i * sb, sb, s1, p1, s2, p2, p->relu);
        __m256 t = _mm256_min_ps(_mm256_mul_ps(c, inv), maxf);
        __m256i r = _mm256_add_epi32(_mm256_cvtps_epi32(t), zo);
        store8(y + i, clamp8(r, p->lo, p->hi), p->y_int8);
    }
    for (; i < n; i++)
        y[i] = ew_add_one(p, a[i * sa], b[i * sb]);
}

TARGET static void mul_avx2(const ew_mul_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y,
                            int64_t n)
{
    const __m256 mult = _mm256_set1_ps(p->mult);
    const __m256i za = _mm256_set1_epi32(p->za), zb = _mm256_set1_epi32(p->zb), zo = _mm256_set1_epi32(p->zo);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x1 = _mm256_sub_epi32(load8(a + i * sa, sa, p->x1_int8), za);
        __m256i x2 = _mm256_sub_epi32(load8(b + i * sb, sb, p->x2_int8), zb);
        __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(x1, x2)), mult);
        __m256i r = _mm256_add_epi32(_mm256_cvtps_epi32(t), zo);
        store8(y + i, clamp8(r, p->lo, p->hi), p->y_int8);
    }
    for (; i < n; i++)
        y[i] = ew_mul_one(p, a[i * sa], b[i * sb]);
}

INLINE __m256i quantize8(const ew_convert_params *p, __m256 x)
{
    if (p->rounding == MERA_ROUNDING_ZP_AFTER_ROUNDING) { /* quantize_lane */
        __m256 t = _mm256_min_ps(_mm256_mul_ps(x, _mm256_set1_ps(p->inv)), _mm256_set1_ps(MAXF));
        return clamp8(_mm256_add_epi32(_mm256_cvtps_epi32(t), _mm256_set1_epi32(p->zo)), p->lo, p->hi);
    }
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(p->inv), _mm256_set1_ps((float)p->zo));
    t = _mm256_min_ps(t, _mm256_set1_ps(MAXF));
    return clamp8(_mm256_cvtps_epi32(t), p->lo, p->hi);
}

INLINE __m256 dequantize8(const ew_convert_params *p, const uint8_t *x)
{
    __m256i q = _mm256_sub_epi32(load8(x, 1, p->x_int8), _mm256_set1_epi32(p->zi));
    return _mm256_mul_ps(_mm256_set1_ps(p->scale), _mm256_cvtepi32_ps(q));
}

TARGET static void quantize_avx2(const ew_convert_params *p, const float *x, uint8_t *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        store8(y + i, quantize8(p, _mm256_loadu_ps(x + i)), p->y_int8);
    for (; i < n; i++)
        y[i] = ew_quantize_one(p, x[i]);
}

TARGET static void dequantize_avx2(const ew_convert_params *p, const uint8_t *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, dequantize8(p, x + i));
    for (; i < n; i++)
        y[i] = ew_dequantize_one(p, x[i]);
}

TARGET static void requantize_avx2(const ew_convert_params *p, const uint8_t *x, uint8_t *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        store8(y + i, quantize8(p, dequantize8(p, x + i)), p->y_int8);
    for (; i < n; i++)
        y[i] = ew_requantize_one(p, x[i]);
}

/* The window's maximum by 64, 32, 16 and 8 bytes (the channels of a pixel),
 * then byte by byte. */
#define MAX_WINDOW_BLOCK(W, T, load, store, smax, umax)                                            \
    for (; i + W <= n; i += W) {                                                                   \
        T m = load((const T *)(x + i));                                                             \
        for (int64_t a = 0; a < nh; a++)                                                            \
            for (int64_t b = 0; b < nw; b++) {                                                      \
                T v = load((const T *)(x + a * rs + b * cs + i));                                   \
                m = is_int8 ? smax(m, v) : umax(m, v);                                              \
            }                                                                                       \
        store((T *)(y + i), m);                                                                     \
    }

/* 64 bytes, two vectors of 32 in flight; signedness a constant after inlining */
INLINE void max_window64(uint8_t *y, const uint8_t *x, int64_t rs, int64_t cs, int64_t nh, int64_t nw, int is_int8)
{
    __m256i m0 = _mm256_loadu_si256((const __m256i *)x), m1 = _mm256_loadu_si256((const __m256i *)(x + 32));
    for (int64_t a = 0; a < nh; a++)
        for (int64_t b = 0; b < nw; b++) {
            const uint8_t *s = x + a * rs + b * cs;
            __m256i v0 = _mm256_loadu_si256((const __m256i *)s), v1 = _mm256_loadu_si256((const __m256i *)(s + 32));
            m0 = is_int8 ? _mm256_max_epi8(m0, v0) : _mm256_max_epu8(m0, v0);
            m1 = is_int8 ? _mm256_max_epi8(m1, v1) : _mm256_max_epu8(m1, v1);
        }
    _mm256_storeu_si256((__m256i *)y, m0);
    _mm256_storeu_si256((__m256i *)(y + 32), m1);
}

TARGET static void max_window_avx2(uint8_t *y, const uint8_t *x, int64_t rs, int64_t cs, int64_t nh, int64_t nw,
                              int64_t n, int is_int8)
{
    int64_t i = 0;
    if (is_int8)
        for (; i + 64 <= n; i += 64)
            max_window64(y + i, x + i, rs, cs, nh, nw, 1);
    else
        for (; i + 64 <= n; i += 64)
            max_window64(y + i, x + i, rs, cs, nh, nw, 0);
    MAX_WINDOW_BLOCK(32, __m256i, _mm256_loadu_si256, _mm256_storeu_si256, _mm256_max_epi8, _mm256_max_epu8)
    MAX_WINDOW_BLOCK(16, __m128i, _mm_loadu_si128, _mm_storeu_si128, _mm_max_epi8, _mm_max_epu8)
    MAX_WINDOW_BLOCK(8, __m128i, _mm_loadl_epi64, _mm_storel_epi64, _mm_max_epi8, _mm_max_epu8)
    for (; i < n; i++) {
        int32_t m = is_int8 ? (int8_t)x[i] : x[i];
        for (int64_t a = 0; a < nh; a++)
            for (int64_t b = 0; b < nw; b++) {
                uint8_t u = x[a * rs + b * cs + i];
                int32_t v = is_int8 ? (int8_t)u : u;
                m = v > m ? v : m;
            }
        y[i] = (uint8_t)m;
    }
}
#undef MAX_WINDOW_BLOCK

TARGET static void sum_bytes_avx2(int32_t *acc, const uint8_t *x, int64_t n, int is_int8)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadl_epi64((const __m128i *)(x + i));
        __m256i w = is_int8 ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v);
        _mm256_storeu_si256((__m256i *)(acc + i), _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(acc + i)), w));
    }
    for (; i < n; i++)
        acc[i] += is_int8 ? (int8_t)x[i] : x[i];
}

const ew_isa ew_isa_avx2 = {"avx2", add_avx2, mul_avx2, quantize_avx2, dequantize_avx2, requantize_avx2,
                            max_window_avx2, sum_bytes_avx2};

#endif
