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

TARGET static void add_avx2(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y,
                            int64_t n)
{
    const __m256 s1 = _mm256_set1_ps(p->s1), p1 = _mm256_set1_ps(p->p1), s2 = _mm256_set1_ps(p->s2),
                 p2 = _mm256_set1_ps(p->p2), inv = _mm256_set1_ps(p->inv), maxf = _mm256_set1_ps(MAXF),
                 zero = _mm256_setzero_ps();
    const __m256i zo = _mm256_set1_epi32(p->zo);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x1 = _mm256_cvtepi32_ps(load8(a + i * sa, sa, p->x1_int8));
        __m256 x2 = _mm256_cvtepi32_ps(load8(b + i * sb, sb, p->x2_int8));
        __m256 c = _mm256_add_ps(_mm256_fmadd_ps(s1, x1, p1), _mm256_fmadd_ps(s2, x2, p2));
        if (p->relu)
            c = _mm256_max_ps(zero, c);
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

TARGET static void max_bytes_avx2(uint8_t *y, const uint8_t *x, int64_t n, int is_int8)
{
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(y + i)), b = _mm256_loadu_si256((const __m256i *)(x + i));
        _mm256_storeu_si256((__m256i *)(y + i), is_int8 ? _mm256_max_epi8(a, b) : _mm256_max_epu8(a, b));
    }
    /* the rest by 16 and 8 bytes: channel tiles of a few channels (the DNA's
     * max pool tiles are cut by channels) stay out of the byte loop */
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(y + i)), b = _mm_loadu_si128((const __m128i *)(x + i));
        _mm_storeu_si128((__m128i *)(y + i), is_int8 ? _mm_max_epi8(a, b) : _mm_max_epu8(a, b));
    }
    for (; i + 8 <= n; i += 8) {
        __m128i a = _mm_loadl_epi64((const __m128i *)(y + i)), b = _mm_loadl_epi64((const __m128i *)(x + i));
        _mm_storel_epi64((__m128i *)(y + i), is_int8 ? _mm_max_epi8(a, b) : _mm_max_epu8(a, b));
    }
    for (; i < n; i++) {
        if (is_int8)
            y[i] = (int8_t)x[i] > (int8_t)y[i] ? x[i] : y[i];
        else
            y[i] = x[i] > y[i] ? x[i] : y[i];
    }
}

const ew_isa ew_isa_avx2 = {"avx2", add_avx2, mul_avx2, quantize_avx2, dequantize_avx2, requantize_avx2,
                            max_bytes_avx2};

#endif
