/* AVX-512F inner loops of the fast elementwise kernels (ew.h), 16 lanes.
 * Only AVX512F (plus AVX2 for byte maxima, which every AVX-512 CPU has);
 * the functions carry their own target attribute, as in isa_avx512.c. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "kernels/fast/ew.h"

#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define MAXF 2147483520.0f /* QMATH_INT32_FLOAT_MAX */

INLINE __m512i load16(const uint8_t *p, int step, int is_int8)
{
    __m128i v = step ? _mm_loadu_si128((const __m128i *)p) : _mm_set1_epi8((char)*p);
    return is_int8 ? _mm512_cvtepi8_epi32(v) : _mm512_cvtepu8_epi32(v);
}

/* r (already within [lo, hi]) to 16 bytes: truncation keeps the value */
INLINE void store16(uint8_t *y, __m512i r)
{
    _mm_storeu_si128((__m128i *)y, _mm512_cvtepi32_epi8(r));
}

INLINE __m512i clamp16(__m512i r, int32_t lo, int32_t hi)
{
    return _mm512_min_epi32(_mm512_max_epi32(r, _mm512_set1_epi32(lo)), _mm512_set1_epi32(hi));
}

/* The sum of one vector of 16 pairs, relu'd: fmaf(s, q, s * -z) per input */
INLINE __m512 add_sum16(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, __m512 s1,
                        __m512 p1, __m512 s2, __m512 p2, int relu)
{
    __m512 x1 = _mm512_cvtepi32_ps(load16(a, sa, p->x1_int8));
    __m512 x2 = _mm512_cvtepi32_ps(load16(b, sb, p->x2_int8));
    __m512 c = _mm512_add_ps(_mm512_fmadd_ps(s1, x1, p1), _mm512_fmadd_ps(s2, x2, p2));
    return relu ? _mm512_max_ps(_mm512_setzero_ps(), c) : c;
}

/* The common case (ew_add_finite, ew_add_full_range): no min with MAX, and the clamp is
 * vpmovsdb's signed saturation, or vpmovusdb's unsigned one on r >= 0 (after relu r >= zo >= 0
 * already); 32 elements a step. */
INLINE void add_avx512_sat(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y,
                           int64_t n, int relu, int64_t *done)
{
    const __m512 s1 = _mm512_set1_ps(p->s1), p1 = _mm512_set1_ps(p->p1), s2 = _mm512_set1_ps(p->s2),
                 p2 = _mm512_set1_ps(p->p2), inv = _mm512_set1_ps(p->inv);
    const __m512i zo = _mm512_set1_epi32(p->zo), zero = _mm512_setzero_si512();
    const int y_int8 = p->y_int8;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 c0 = add_sum16(p, a + i * sa, sa, b + i * sb, sb, s1, p1, s2, p2, relu);
        __m512 c1 = add_sum16(p, a + (i + 16) * sa, sa, b + (i + 16) * sb, sb, s1, p1, s2, p2, relu);
        __m512i r0 = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(c0, inv)), zo);
        __m512i r1 = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(c1, inv)), zo);
        if (y_int8) {
            _mm_storeu_si128((__m128i *)(y + i), _mm512_cvtsepi32_epi8(r0));
            _mm_storeu_si128((__m128i *)(y + i + 16), _mm512_cvtsepi32_epi8(r1));
        } else {
            if (!relu) {
                r0 = _mm512_max_epi32(r0, zero);
                r1 = _mm512_max_epi32(r1, zero);
            }
            _mm_storeu_si128((__m128i *)(y + i), _mm512_cvtusepi32_epi8(r0));
            _mm_storeu_si128((__m128i *)(y + i + 16), _mm512_cvtusepi32_epi8(r1));
        }
    }
    *done = i;
}

TARGET static void add_avx512(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb,
                              uint8_t *y, int64_t n)
{
    const __m512 s1 = _mm512_set1_ps(p->s1), p1 = _mm512_set1_ps(p->p1), s2 = _mm512_set1_ps(p->s2),
                 p2 = _mm512_set1_ps(p->p2), inv = _mm512_set1_ps(p->inv), maxf = _mm512_set1_ps(MAXF);
    const __m512i zo = _mm512_set1_epi32(p->zo);
    int64_t i = 0;
    if (n >= 32 && ew_add_full_range(p) && ew_add_finite(p)) {
        if (p->relu) /* relu made a constant: one copy of the loop each */
            add_avx512_sat(p, a, sa, b, sb, y, n, 1, &i);
        else
            add_avx512_sat(p, a, sa, b, sb, y, n, 0, &i);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 c = add_sum16(p, a + i * sa, sa, b + i * sb, sb, s1, p1, s2, p2, p->relu);
        __m512 t = _mm512_min_ps(_mm512_mul_ps(c, inv), maxf);
        __m512i r = _mm512_add_epi32(_mm512_cvtps_epi32(t), zo);
        store16(y + i, clamp16(r, p->lo, p->hi));
    }
    for (; i < n; i++)
        y[i] = ew_add_one(p, a[i * sa], b[i * sb]);
}

TARGET static void mul_avx512(const ew_mul_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb,
                              uint8_t *y, int64_t n)
{
    const __m512 mult = _mm512_set1_ps(p->mult);
    const __m512i za = _mm512_set1_epi32(p->za), zb = _mm512_set1_epi32(p->zb), zo = _mm512_set1_epi32(p->zo);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i x1 = _mm512_sub_epi32(load16(a + i * sa, sa, p->x1_int8), za);
        __m512i x2 = _mm512_sub_epi32(load16(b + i * sb, sb, p->x2_int8), zb);
        __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_mullo_epi32(x1, x2)), mult);
        __m512i r = _mm512_add_epi32(_mm512_cvtps_epi32(t), zo);
        store16(y + i, clamp16(r, p->lo, p->hi));
    }
    for (; i < n; i++)
        y[i] = ew_mul_one(p, a[i * sa], b[i * sb]);
}

INLINE __m512i quantize16(const ew_convert_params *p, __m512 x)
{
    if (p->rounding == MERA_ROUNDING_ZP_AFTER_ROUNDING) { /* quantize_lane */
        __m512 t = _mm512_min_ps(_mm512_mul_ps(x, _mm512_set1_ps(p->inv)), _mm512_set1_ps(MAXF));
        return clamp16(_mm512_add_epi32(_mm512_cvtps_epi32(t), _mm512_set1_epi32(p->zo)), p->lo, p->hi);
    }
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(p->inv), _mm512_set1_ps((float)p->zo));
    t = _mm512_min_ps(t, _mm512_set1_ps(MAXF));
    return clamp16(_mm512_cvtps_epi32(t), p->lo, p->hi);
}

INLINE __m512 dequantize16(const ew_convert_params *p, const uint8_t *x)
{
    __m512i q = _mm512_sub_epi32(load16(x, 1, p->x_int8), _mm512_set1_epi32(p->zi));
    return _mm512_mul_ps(_mm512_set1_ps(p->scale), _mm512_cvtepi32_ps(q));
}

TARGET static void quantize_avx512(const ew_convert_params *p, const float *x, uint8_t *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        store16(y + i, quantize16(p, _mm512_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] = ew_quantize_one(p, x[i]);
}

TARGET static void dequantize_avx512(const ew_convert_params *p, const uint8_t *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, dequantize16(p, x + i));
    for (; i < n; i++)
        y[i] = ew_dequantize_one(p, x[i]);
}

TARGET static void requantize_avx512(const ew_convert_params *p, const uint8_t *x, uint8_t *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        store16(y + i, quantize16(p, dequantize16(p, x + i)));
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

TARGET static void max_window_avx512(uint8_t *y, const uint8_t *x, int64_t rs, int64_t cs, int64_t nh, int64_t nw,
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

TARGET static void sum_bytes_avx512(int32_t *acc, const uint8_t *x, int64_t n, int is_int8)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(x + i));
        __m512i w = is_int8 ? _mm512_cvtepi8_epi32(v) : _mm512_cvtepu8_epi32(v);
        _mm512_storeu_si512(acc + i, _mm512_add_epi32(_mm512_loadu_si512(acc + i), w));
    }
    for (; i < n; i++)
        acc[i] += is_int8 ? (int8_t)x[i] : x[i];
}

/* 16 outputs of the mul's scalar body: c = (qa - za) * (qb - zb) exactly in int32; (float)(c * (double)mult);
 * cvt_rne_i64 of it + zo, clamped. Every float whose int64 conversion is defined and whose clamp is
 * decided gives the same byte as the int32 conversion of it clipped to +-2^24; the rest (NaN, and
 * magnitudes of 2^63 and more, which convert to INT64_MIN) give INT64_MIN + zo clamped. */
INLINE __m512i mul_tail16(const ew_mul_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb)
{
    __m512i c = _mm512_mullo_epi32(_mm512_sub_epi32(load16(a, sa, p->x1_int8), _mm512_set1_epi32(p->za)),
                                   _mm512_sub_epi32(load16(b, sb, p->x2_int8), _mm512_set1_epi32(p->zb)));
    const __m512d m = _mm512_set1_pd((double)p->mult);
    __m256 f0 = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(c)), m));
    __m256 f1 = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(c, 1)), m));
    __m512 f = _mm512_insertf32x4(_mm512_insertf32x4(_mm512_castps256_ps512(f0), _mm256_extractf128_ps(f1, 0), 2),
                                  _mm256_extractf128_ps(f1, 1), 3);
    const __m512 lim = _mm512_set1_ps(9223372036854775808.0f), clip = _mm512_set1_ps(16777216.0f);
    __mmask16 ok = _mm512_cmp_ps_mask(f, lim, _CMP_LT_OQ) &
                   _mm512_cmp_ps_mask(f, _mm512_sub_ps(_mm512_setzero_ps(), lim), _CMP_GE_OQ);
    __m512 fc = _mm512_min_ps(_mm512_max_ps(f, _mm512_sub_ps(_mm512_setzero_ps(), clip)), clip);
    __m512i r = clamp16(_mm512_add_epi32(_mm512_cvtps_epi32(fc), _mm512_set1_epi32(p->zo)), p->lo, p->hi);
    /* INT64_MIN + zo wraps, as the int64 addition does in the scalar body: hi for zo < 0 */
    return _mm512_mask_blend_epi32(ok, _mm512_set1_epi32(p->zo < 0 ? p->hi : p->lo), r);
}

TARGET void ew_mul_tail_avx512(const ew_mul_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y,
                               int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        store16(y + i, mul_tail16(p, a + i * sa, sa, b + i * sb, sb));
    if (i < n) { /* the last few through a 16-byte copy */
        uint8_t ba[16] = {0}, bb[16] = {0}, by[16];
        int64_t k = n - i;
        memcpy(ba, a + i * sa, (size_t)(sa ? k : 1));
        memcpy(bb, b + i * sb, (size_t)(sb ? k : 1));
        store16(by, mul_tail16(p, ba, sa, bb, sb));
        memcpy(y + i, by, (size_t)k);
    }
}

#define TARGET_VBMI __attribute__((target("avx512f,avx512bw,avx512vbmi")))

/* The two 128-byte halves of the table, each through one vpermi2b (7 index
 * bits), the byte's top bit choosing between them. */
TARGET_VBMI void ew_lookup_avx512vbmi(const uint8_t *tab, const uint8_t *x, uint8_t *y, int64_t n)
{
    const __m512i t0 = _mm512_loadu_si512(tab), t1 = _mm512_loadu_si512(tab + 64);
    const __m512i t2 = _mm512_loadu_si512(tab + 128), t3 = _mm512_loadu_si512(tab + 192);
    for (int64_t i = 0; i < n; i += 64) {
        __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        __m512i v = _mm512_maskz_loadu_epi8(m, x + i);
        __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
    }
}

const ew_isa ew_isa_avx512 = {"avx512f",        add_avx512,        mul_avx512,      quantize_avx512,
                              dequantize_avx512, requantize_avx512, max_window_avx512, sum_bytes_avx512};

#endif
