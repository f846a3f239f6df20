/* AVX2 inner loops of the fast quantized conv2d/dense (qconv.h).
 *
 * AVX2 has no vpdpbusd, and vpmaddubsw saturates the sum of two
 * uint8*int8 products to int16 (255*127*2 > 32767), which the contract
 * forbids. So activations are widened to int16 in the padded input, weights
 * are packed as int16, and vpmaddwd forms x0*w0 + x1*w1 exactly in int32
 * (it only overflows for two products of -32768*-32768, which uint8 and
 * int8 values cannot make). The requantization is requant_acc (qmath.h)
 * on 8 lanes, with the same argument as isa_avx512.c. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "kernels/fast/qconv.h"

#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline)) TARGET

static inline int32_t load_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* npx pixels by nv vectors of 8 output channels. Padded input: int16.
 * Packed weights: int16 [nseg][nk / 2][nv * 8][2]. */
INLINE void tile(const int npx, const int nv, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                 const int16_t *w, int32_t *acc)
{
    __m256i c[QCONV_MAX_PX][QCONV_MAX_NV];
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            c[m][v] = _mm256_setzero_si256();
    const int64_t nq = nk / 2;
    for (int s = 0; s < nseg; s++) {
        const int16_t *p[QCONV_MAX_PX];
#pragma GCC unroll 12
        for (int m = 0; m < npx; m++)
            p[m] = (const int16_t *)px[m] + seg_off[s];
        for (int64_t q = 0; q < nq; q++, w += nv * 16) {
            __m256i wv[QCONV_MAX_NV];
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                wv[v] = _mm256_loadu_si256((const __m256i *)(w + v * 16));
#pragma GCC unroll 12
            for (int m = 0; m < npx; m++) {
                __m256i xb = _mm256_set1_epi32(load_i32(p[m] + 2 * q));
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    c[m][v] = _mm256_add_epi32(c[m][v], _mm256_madd_epi16(xb, wv[v]));
            }
        }
    }
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            _mm256_storeu_si256((__m256i *)(acc + m * QCONV_ACC_STRIDE + v * 8), c[m][v]);
}

typedef void (*tile_fn)(const void *const *px, const int64_t *seg_off, int nseg, int64_t nk, const int16_t *w,
                        int32_t *acc);

#define TILE(M, NV)                                                                                          \
    TARGET static void tile_##M##_##NV(const void *const *px, const int64_t *seg_off, int nseg, int64_t nk, \
                                       const int16_t *w, int32_t *acc)                                       \
    {                                                                                                        \
        tile(M, NV, px, seg_off, nseg, nk, w, acc);                                                          \
    }

TILE(1, 1) TILE(2, 1) TILE(3, 1) TILE(4, 1) TILE(5, 1) TILE(6, 1) TILE(7, 1) TILE(8, 1)
TILE(1, 2) TILE(2, 2) TILE(3, 2) TILE(4, 2) TILE(5, 2) TILE(6, 2)
TILE(1, 3) TILE(2, 3) TILE(3, 3) TILE(4, 3)
TILE(1, 4) TILE(2, 4) TILE(3, 4)

/* tiles[nv - 1][npx - 1]; px_max below keeps npx within each row */
static const tile_fn tiles[QCONV_MAX_NV][QCONV_MAX_PX] = {
    {tile_1_1, tile_2_1, tile_3_1, tile_4_1, tile_5_1, tile_6_1, tile_7_1, tile_8_1},
    {tile_1_2, tile_2_2, tile_3_2, tile_4_2, tile_5_2, tile_6_2},
    {tile_1_3, tile_2_3, tile_3_3, tile_4_3},
    {tile_1_4, tile_2_4, tile_3_4},
};

static void gemm_tile(int npx, int nv, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                      const void *w, int32_t *acc)
{
    MERA_ASSERT(nv >= 1 && nv <= QCONV_MAX_NV && npx >= 1 && npx <= QCONV_MAX_PX && tiles[nv - 1][npx - 1]);
    tiles[nv - 1][npx - 1](px, seg_off, nseg, nk, w, acc);
}

/* requant_acc (qmath.h) on 8 channels from o, after adding off[o] and,
 * with_zw, subtracting zw[o] * xsum. */
INLINE __m256i requant8(const qconv_plan *p, int64_t o, __m256i a, __m256i xsum, const int with_zw)
{
    a = _mm256_add_epi32(a, _mm256_loadu_si256((const __m256i *)(p->off + o)));
    if (with_zw)
        a = _mm256_sub_epi32(a, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(p->zw + o)), xsum));
    __m256 y = _mm256_cvtepi32_ps(a);
    if (p->has_bias)
        y = p->per_tensor ? _mm256_fmadd_ps(_mm256_loadu_ps(p->bias + o), _mm256_loadu_ps(p->rcp + o), y)
                          : _mm256_add_ps(y, _mm256_loadu_ps(p->bias + o));
    y = _mm256_mul_ps(y, _mm256_loadu_ps(p->mult + o));
    __m256i r = _mm256_cvtps_epi32(y);
    r = _mm256_max_epi32(r, _mm256_set1_epi32(p->lo - p->zy));
    r = _mm256_min_epi32(r, _mm256_set1_epi32(p->hi - p->zy));
    return _mm256_add_epi32(r, _mm256_set1_epi32(p->zy));
}

/* Stores the low bytes of the n <= 8 lanes of r. */
INLINE void store_bytes(uint8_t *dst, __m256i r, int64_t n)
{
    const __m256i bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                           -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    r = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(r, bytes), _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    if (n >= 8) {
        _mm_storel_epi64((__m128i *)dst, _mm256_castsi256_si128(r));
    } else {
        uint8_t t[8];
        _mm_storel_epi64((__m128i *)t, _mm256_castsi256_si128(r));
        memcpy(dst, t, (size_t)n);
    }
}

TARGET static void requant(const qconv_plan *p, int64_t o0, int64_t n, const int32_t *acc, int32_t xsum, uint8_t *dst)
{
    const __m256i xs = _mm256_set1_epi32(xsum);
    for (int64_t j = 0; j < n; j += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(acc + j));
        store_bytes(dst + j, p->zw ? requant8(p, o0 + j, a, xs, 1) : requant8(p, o0 + j, a, xs, 0), n - j);
    }
}

/* Depthwise, 8 channels per vector, as dw_acc in isa_avx512.c with
 * vpmaddwd for the pairs. */
INLINE __m256i dw_acc(const qconv_plan *p, const uint8_t *x, int64_t c0, const int sat, const int zw)
{
    const uint32_t *w = (const uint32_t *)p->wpack + c0;
    const int64_t cp = p->cp, taps = p->nseg, *so = p->seg_off;
    const __m256i lo16 = _mm256_set1_epi32(-32768), hi16 = _mm256_set1_epi32(32767);
    __m256i a = _mm256_setzero_si256(), xs = _mm256_setzero_si256();
    int64_t t = 0;
    for (; t + 1 < taps; t += 2, w += cp) {
        __m256i x0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(x + so[t])));
        __m256i x1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(x + so[t + 1])));
        __m256i pr = _mm256_madd_epi16(_mm256_or_si256(x0, _mm256_slli_epi32(x1, 16)),
                                       _mm256_loadu_si256((const __m256i *)w));
        if (sat)
            pr = _mm256_max_epi32(_mm256_min_epi32(pr, hi16), lo16);
        a = _mm256_add_epi32(a, pr);
        if (zw)
            xs = _mm256_add_epi32(xs, _mm256_add_epi32(x0, x1));
    }
    if (t < taps) {
        __m256i x0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(x + so[t])));
        a = _mm256_add_epi32(a, _mm256_madd_epi16(x0, _mm256_loadu_si256((const __m256i *)w)));
        if (zw)
            xs = _mm256_add_epi32(xs, x0);
    }
    if (zw)
        a = _mm256_sub_epi32(a, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(p->zw + c0)), xs));
    return a;
}

INLINE void dw_row_as(const qconv_plan *p, const uint8_t *in, uint8_t *dst, const int sat, const int zw)
{
    const int64_t step = p->g.sw * p->cp;
    const __m256i none = _mm256_setzero_si256();
    for (int64_t c0 = 0; c0 < p->g.o; c0 += 8)
        for (int64_t ox = 0; ox < p->g.ow; ox++) {
            __m256i a = dw_acc(p, in + ox * step + c0, c0, sat, zw);
            store_bytes(dst + ox * p->g.o + c0, requant8(p, c0, a, none, 0), p->g.o - c0);
        }
}

TARGET static void dw_row(const qconv_plan *p, const uint8_t *in, uint8_t *dst)
{
    if (p->zw)
        dw_row_as(p, in, dst, p->dw_sat, 1);
    else if (p->dw_sat)
        dw_row_as(p, in, dst, 1, 0);
    else
        dw_row_as(p, in, dst, 0, 0);
}

const qconv_isa qconv_isa_avx2 = {
    .name = "avx2",
    .kstep = 2,
    .lanes = 8,
    .nv_max = 4,
    .xbytes = 2,
    .px_max = {0, 8, 6, 4, 3},
    .gemm_tile = gemm_tile,
    .requant = requant,
    .dw_row = dw_row,
};

#endif
