/* AVX-512 VNNI inner loops of the fast quantized conv2d/dense (qconv.h).
 *
 * vpdpbusd multiplies 4 unsigned activation bytes with 4 signed weight
 * bytes and adds the four products to an int32 lane, without saturation
 * (unlike vpmaddubsw): the sums are exact modulo 2^32, as qconv.h needs.
 * The requantization is qmath.h's requant_acc on 16 lanes: cvtdq2ps and
 * cvtps2dq round half to even under the default MXCSR as the scalar
 * conversions do, cvtps2dq gives INT32_MIN for NaN and out-of-range values
 * as cvt_rne_i32 does, vfmadd is fmaf, and clamp(r + zy, lo, hi) is
 * computed as clamp(r, lo - zy, hi - zy) + zy, which cannot overflow.
 *
 * Only AVX512F and AVX512-VNNI instructions are used; the functions carry
 * their own target attribute, so the file builds without -m flags and its
 * code runs only after dispatch.c has checked the CPU. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "kernels/fast/qconv.h"

#define TARGET __attribute__((target("avx512f,avx512vnni")))
#define INLINE static inline __attribute__((always_inline)) TARGET

static inline int32_t load_i32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Adds the dot products of npx pixels by nv vectors of 16 output channels
 * to the accumulators c[m][v] (a macro so that c stays in registers).
 * Packed weights: [nseg][nk / 4][nv * 16][4]. */
#define TILE_ACCUMULATE(npx, nv, px, seg_off, nseg, nk, w0, c)                                     \
    do {                                                                                          \
        const int8_t *w_ = (w0);                                                                  \
        const int64_t nq_ = (nk) / 4;                                                             \
        for (int s_ = 0; s_ < (nseg); s_++) {                                                     \
            const uint8_t *p_[QCONV_MAX_PX];                                                      \
            _Pragma("GCC unroll 12") for (int m = 0; m < (npx); m++) p_[m] =                      \
                (const uint8_t *)(px)[m] + (seg_off)[s_];                                         \
            for (int64_t q = 0; q < nq_; q++, w_ += (nv) * 64) {                                  \
                __m512i wv[QCONV_MAX_NV];                                                         \
                _Pragma("GCC unroll 4") for (int v = 0; v < (nv); v++) wv[v] =                    \
                    _mm512_loadu_si512(w_ + v * 64);                                              \
                _Pragma("GCC unroll 12") for (int m = 0; m < (npx); m++)                          \
                {                                                                                 \
                    __m512i xb = _mm512_set1_epi32(load_i32(p_[m] + 4 * q));                      \
                    _Pragma("GCC unroll 4") for (int v = 0; v < (nv); v++) c[m][v] =              \
                        _mm512_dpbusd_epi32(c[m][v], xb, wv[v]);                                  \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    } while (0)

/* The raw dot products into acc. */
INLINE void tile(const int npx, const int nv, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                 const int8_t *w, int32_t *acc)
{
    __m512i c[QCONV_MAX_PX][QCONV_MAX_NV];
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            c[m][v] = _mm512_setzero_si512();
    TILE_ACCUMULATE(npx, nv, px, seg_off, nseg, nk, w, c);
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            _mm512_storeu_si512(acc + m * QCONV_ACC_STRIDE + v * 16, c[m][v]);
}

/* The tile with the accumulators started at off[o] (for a plan without
 * weight zero points, requant16's whole offset) and requantized in
 * registers: requant16's steps with the bias as one fmadd (qconv.h:
 * fma_bias, fma_rcp). */
INLINE void tile_rq(const int npx, const int nv, const qconv_plan *p, const void *const *px, const int8_t *w,
                    int64_t o0, int64_t nvalid, uint8_t *dst, int64_t ds)
{
    __m512i c[QCONV_MAX_PX][QCONV_MAX_NV];
    const int32_t *off = p->off + o0;
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            c[m][v] = _mm512_loadu_si512(off + v * 16);
    TILE_ACCUMULATE(npx, nv, px, p->seg_off, (int)p->nseg, p->nk, w, c);
    /* through an L1 buffer: requantizing straight from c makes GCC keep
     * the accumulators in memory during the loop */
    int32_t acc[QCONV_MAX_PX * QCONV_MAX_NV * 16] __attribute__((aligned(64)));
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            _mm512_store_si512(acc + (m * QCONV_MAX_NV + v) * 16, c[m][v]);
    const __m512i lo = _mm512_set1_epi32(p->lo - p->zy), hi = _mm512_set1_epi32(p->hi - p->zy);
    const __m512i zy = _mm512_set1_epi32(p->zy);
    for (int v = 0; v < nv; v++) {
        const int64_t o = o0 + 16 * v, left = nvalid - 16 * v;
        const __mmask16 mask = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        const __m512 b = _mm512_loadu_ps(p->fma_bias + o), r = _mm512_loadu_ps(p->fma_rcp + o);
        const __m512 mult = _mm512_loadu_ps(p->mult + o);
        for (int m = 0; m < npx; m++) {
            __m512 y = _mm512_cvtepi32_ps(_mm512_load_si512(acc + (m * QCONV_MAX_NV + v) * 16));
            y = _mm512_mul_ps(_mm512_fmadd_ps(b, r, y), mult);
            __m512i q = _mm512_cvtps_epi32(y);
            q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), zy);
            _mm512_mask_cvtepi32_storeu_epi8(dst + m * ds + v * 16, mask, q);
        }
    }
}

/* tile_rq with AVX512BW stores (plan->bw): per pixel, the nv <= 4 vectors
 * of rounded int32 are packed with signed saturation to int16
 * (vpackssdw), the output zero point added with saturation, then packed
 * with saturation to the output type (vpackuswb, vpacksswb), clamped to
 * [lo, hi] bytewise and put back in channel order by one vpermd: 64 bytes
 * and one store for four vectors. The bytes are requant16's: its clamp is
 * clamp(r + zy, lo, hi) for lo, hi within the output type, and a value
 * that saturates in int16 lies beyond the type's range on the same side. */
#define TARGET_BW_VL __attribute__((target("avx512f,avx512vnni,avx512bw,avx512vl")))

static inline __attribute__((always_inline)) TARGET_BW_VL void tile_rq_bw(const int npx, const int nv, const qconv_plan *p, const void *const *px,
                                    const int8_t *w, int64_t o0, int64_t nvalid, uint8_t *dst, int64_t ds)
{
    __m512i c[QCONV_MAX_PX][QCONV_MAX_NV];
    const int32_t *off = p->off + o0;
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            c[m][v] = _mm512_loadu_si512(off + v * 16);
    TILE_ACCUMULATE(npx, nv, px, p->seg_off, (int)p->nseg, p->nk, w, c);
    int32_t acc[QCONV_MAX_PX * QCONV_MAX_NV * 16] __attribute__((aligned(64)));
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            _mm512_store_si512(acc + (m * QCONV_MAX_NV + v) * 16, c[m][v]);
    __m512 b[QCONV_MAX_NV], r[QCONV_MAX_NV], mult[QCONV_MAX_NV];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) {
        b[v] = _mm512_loadu_ps(p->fma_bias + o0 + 16 * v);
        r[v] = _mm512_loadu_ps(p->fma_rcp + o0 + 16 * v);
        mult[v] = _mm512_loadu_ps(p->mult + o0 + 16 * v);
    }
    const __m512i zy = _mm512_set1_epi16((int16_t)p->zy);
    const __m512i lo = _mm512_set1_epi8((char)p->lo), hi = _mm512_set1_epi8((char)p->hi);
    /* dword k of the packed vector holds vector k % 4's channels 4 * (k / 4)..; dword k of
     * the output wants vector k / 4's channels 4 * (k % 4).. */
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __mmask64 mask = nvalid >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << nvalid) - 1);
    for (int m = 0; m < npx; m++) {
        __m512i q[4];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __m512 y = _mm512_cvtepi32_ps(_mm512_load_si512(acc + (m * QCONV_MAX_NV + v) * 16));
            q[v] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_fmadd_ps(b[v], r[v], y), mult[v]));
        }
        __m512i s01 = _mm512_adds_epi16(_mm512_packs_epi32(q[0], nv > 1 ? q[1] : q[0]), zy);
        __m512i s23 = nv > 2 ? _mm512_adds_epi16(_mm512_packs_epi32(q[2], nv > 3 ? q[3] : q[2]), zy) : s01;
        __m512i bytes;
        if (p->y_int8)
            bytes = _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(s01, s23), lo), hi);
        else
            bytes = _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(s01, s23), lo), hi);
        _mm512_mask_storeu_epi8(dst + m * ds, mask, _mm512_permutexvar_epi32(order, bytes));
    }
}

typedef void (*tile_fn)(const void *const *px, const int64_t *seg_off, int nseg, int64_t nk, const int8_t *w,
                        int32_t *acc);

typedef void (*tile_rq_fn)(const qconv_plan *p, const void *const *px, const int8_t *w, int64_t o0,
                           int64_t nvalid, uint8_t *dst, int64_t ds);

#define TILE(M, NV)                                                                                          \
    TARGET static void tile_##M##_##NV(const void *const *px, const int64_t *seg_off, int nseg, int64_t nk, \
                                       const int8_t *w, int32_t *acc)                                        \
    {                                                                                                        \
        tile(M, NV, px, seg_off, nseg, nk, w, acc);                                                          \
    }                                                                                                        \
    TARGET static void tile_rq_##M##_##NV(const qconv_plan *p, const void *const *px, const int8_t *w,       \
                                          int64_t o0, int64_t nvalid, uint8_t *dst, int64_t ds)              \
    {                                                                                                        \
        tile_rq(M, NV, p, px, w, o0, nvalid, dst, ds);                                                       \
    }                                                                                                        \
    TARGET_BW_VL static void tile_rq_bw_##M##_##NV(const qconv_plan *p, const void *const *px, const int8_t *w, \
                                                   int64_t o0, int64_t nvalid, uint8_t *dst, int64_t ds)     \
    {                                                                                                        \
        tile_rq_bw(M, NV, p, px, w, o0, nvalid, dst, ds);                                                    \
    }
#define TILES_UP_TO_6(NV) TILE(1, NV) TILE(2, NV) TILE(3, NV) TILE(4, NV) TILE(5, NV) TILE(6, NV)
#define TILES_7_TO_8(NV) TILE(7, NV) TILE(8, NV)
#define TILES_9_TO_12(NV) TILE(9, NV) TILE(10, NV) TILE(11, NV) TILE(12, NV)

TILES_UP_TO_6(1) TILES_7_TO_8(1) TILES_9_TO_12(1)
TILES_UP_TO_6(2) TILES_7_TO_8(2) TILES_9_TO_12(2)
TILES_UP_TO_6(3) TILES_7_TO_8(3)
TILES_UP_TO_6(4)

#define ROW6(NV) tile_1_##NV, tile_2_##NV, tile_3_##NV, tile_4_##NV, tile_5_##NV, tile_6_##NV
/* tiles[nv - 1][npx - 1]; px_max below keeps npx within each row */
static const tile_fn tiles[QCONV_MAX_NV][QCONV_MAX_PX] = {
    {ROW6(1), tile_7_1, tile_8_1, tile_9_1, tile_10_1, tile_11_1, tile_12_1},
    {ROW6(2), tile_7_2, tile_8_2, tile_9_2, tile_10_2, tile_11_2, tile_12_2},
    {ROW6(3), tile_7_3, tile_8_3},
    {ROW6(4)},
};

#define ROW6_RQ(NV) tile_rq_1_##NV, tile_rq_2_##NV, tile_rq_3_##NV, tile_rq_4_##NV, tile_rq_5_##NV, tile_rq_6_##NV
static const tile_rq_fn tiles_rq[QCONV_MAX_NV][QCONV_MAX_PX] = {
    {ROW6_RQ(1), tile_rq_7_1, tile_rq_8_1, tile_rq_9_1, tile_rq_10_1, tile_rq_11_1, tile_rq_12_1},
    {ROW6_RQ(2), tile_rq_7_2, tile_rq_8_2, tile_rq_9_2, tile_rq_10_2, tile_rq_11_2, tile_rq_12_2},
    {ROW6_RQ(3), tile_rq_7_3, tile_rq_8_3},
    {ROW6_RQ(4)},
};

#define ROW6_RQ_BW(NV)                                                                                       \
    tile_rq_bw_1_##NV, tile_rq_bw_2_##NV, tile_rq_bw_3_##NV, tile_rq_bw_4_##NV, tile_rq_bw_5_##NV, tile_rq_bw_6_##NV
static const tile_rq_fn tiles_rq_bw[QCONV_MAX_NV][QCONV_MAX_PX] = {
    {ROW6_RQ_BW(1), tile_rq_bw_7_1, tile_rq_bw_8_1, tile_rq_bw_9_1, tile_rq_bw_10_1, tile_rq_bw_11_1, tile_rq_bw_12_1},
    {ROW6_RQ_BW(2), tile_rq_bw_7_2, tile_rq_bw_8_2, tile_rq_bw_9_2, tile_rq_bw_10_2, tile_rq_bw_11_2, tile_rq_bw_12_2},
    {ROW6_RQ_BW(3), tile_rq_bw_7_3, tile_rq_bw_8_3},
    {ROW6_RQ_BW(4)},
};

static void gemm_tile(int npx, int nv, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                      const void *w, int32_t *acc)
{
    MERA_ASSERT(nv >= 1 && nv <= QCONV_MAX_NV && npx >= 1 && npx <= QCONV_MAX_PX && tiles[nv - 1][npx - 1]);
    tiles[nv - 1][npx - 1](px, seg_off, nseg, nk, w, acc);
}

static void gemm_tile_rq(const qconv_plan *p, int npx, int nv, const void *const *px, const void *w, int64_t o0,
                         int64_t nvalid, uint8_t *dst, int64_t dst_stride)
{
    MERA_ASSERT(nv >= 1 && nv <= QCONV_MAX_NV && npx >= 1 && npx <= QCONV_MAX_PX && tiles_rq[nv - 1][npx - 1]);
    (p->bw && nv > 1 ? tiles_rq_bw : tiles_rq)[nv - 1][npx - 1](p, px, w, o0, nvalid, dst, dst_stride);
}

/* requant_acc (qmath.h) on 16 channels from o, after adding off[o] and,
 * with_zw, subtracting zw[o] * xsum. */
INLINE __m512i requant16(const qconv_plan *p, int64_t o, __m512i a, __m512i xsum, const int with_zw)
{
    a = _mm512_add_epi32(a, _mm512_loadu_si512(p->off + o));
    if (with_zw)
        a = _mm512_sub_epi32(a, _mm512_mullo_epi32(_mm512_loadu_si512(p->zw + o), xsum));
    __m512 y = _mm512_cvtepi32_ps(a);
    if (p->has_bias)
        y = p->per_tensor ? _mm512_fmadd_ps(_mm512_loadu_ps(p->bias + o), _mm512_loadu_ps(p->rcp + o), y)
                          : _mm512_add_ps(y, _mm512_loadu_ps(p->bias + o));
    y = _mm512_mul_ps(y, _mm512_loadu_ps(p->mult + o));
    __m512i r = _mm512_cvtps_epi32(y);
    r = _mm512_max_epi32(r, _mm512_set1_epi32(p->lo - p->zy));
    r = _mm512_min_epi32(r, _mm512_set1_epi32(p->hi - p->zy));
    return _mm512_add_epi32(r, _mm512_set1_epi32(p->zy));
}

/* Stores the low bytes of the n <= 16 lanes of r. */
INLINE void store_bytes(uint8_t *dst, __m512i r, int64_t n)
{
    __m128i b = _mm512_cvtepi32_epi8(r);
    if (n >= 16) {
        _mm_storeu_si128((__m128i *)dst, b);
    } else {
        uint8_t t[16];
        _mm_storeu_si128((__m128i *)t, b);
        memcpy(dst, t, (size_t)n);
    }
}

TARGET static void requant(const qconv_plan *p, int64_t o0, int64_t n, const int32_t *acc, int32_t xsum, uint8_t *dst)
{
    const __m512i xs = _mm512_set1_epi32(xsum);
    for (int64_t j = 0; j < n; j += 16) {
        __m512i a = _mm512_loadu_si512(acc + j);
        store_bytes(dst + j, p->zw ? requant16(p, o0 + j, a, xs, 1) : requant16(p, o0 + j, a, xs, 0), n - j);
    }
}

/* Depthwise: the accumulator of 16 channels from c0 at one output pixel
 * whose window starts at x (channel c0), minus zw * sum(x) when zw.
 * The dword of a channel holds the activations of two taps as int16
 * (x0 | x1 << 16) and the packed weights hold the same taps' weights, so
 * vpdpwssd (the AVX512-VNNI form of vpmaddwd, which would need AVX512BW)
 * adds x0*w0 + x1*w1, the pair of fbgemm's depthwise kernel, exactly; with
 * sat the pair is formed alone and saturated to int16 first, as
 * vpmaddubsw does there. */
INLINE __m512i dw_acc(const qconv_plan *p, const uint8_t *x, int64_t c0, const int sat, const int zw)
{
    const uint32_t *w = (const uint32_t *)p->wpack + c0;
    const int64_t cp = p->cp, taps = p->nseg, *so = p->seg_off;
    const __m512i lo16 = _mm512_set1_epi32(-32768), hi16 = _mm512_set1_epi32(32767);
    __m512i a = _mm512_setzero_si512(), xs = _mm512_setzero_si512();
    int64_t t = 0;
    for (; t + 1 < taps; t += 2, w += cp) {
        __m512i x0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x + so[t])));
        __m512i x1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x + so[t + 1])));
        __m512i xp = _mm512_or_si512(x0, _mm512_slli_epi32(x1, 16));
        if (sat) {
            __m512i pr = _mm512_dpwssd_epi32(_mm512_setzero_si512(), xp, _mm512_loadu_si512(w));
            a = _mm512_add_epi32(a, _mm512_max_epi32(_mm512_min_epi32(pr, hi16), lo16));
        } else {
            a = _mm512_dpwssd_epi32(a, xp, _mm512_loadu_si512(w));
        }
        if (zw)
            xs = _mm512_add_epi32(xs, _mm512_add_epi32(x0, x1));
    }
    if (t < taps) { /* a last single tap: x*w fits in int16, no saturation */
        __m512i x0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x + so[t])));
        a = _mm512_dpwssd_epi32(a, x0, _mm512_loadu_si512(w));
        if (zw)
            xs = _mm512_add_epi32(xs, x0);
    }
    if (zw)
        a = _mm512_sub_epi32(a, _mm512_mullo_epi32(_mm512_loadu_si512(p->zw + c0), xs));
    return a;
}

INLINE void dw_row_as(const qconv_plan *p, const uint8_t *in, uint8_t *dst, const int sat, const int zw)
{
    const int64_t step = p->g.sw * p->cp;
    const __m512i none = _mm512_setzero_si512();
    for (int64_t c0 = 0; c0 < p->g.o; c0 += 16)
        for (int64_t ox = 0; ox < p->g.ow; ox++) {
            __m512i a = dw_acc(p, in + ox * step + c0, c0, sat, zw);
            store_bytes(dst + ox * p->g.o + c0, requant16(p, c0, a, none, 0), p->g.o - c0);
        }
}

/* The byte-pair depthwise loop (qconv.h, dw_wide) for fbgemm's saturating
 * path without weight zero points, 64 channels at a time: vpunpck{l,h}bw
 * of two taps' input bytes and vpmaddubsw with the pair's weights give
 * fbgemm's int16-saturated pair sums, exactly as its depthwise kernel forms
 * them; vpunpck{l,h}wd of two pairs' sums and vpdpwssd with ones add both
 * to the int32 accumulators. The accumulators then hold the channels in
 * the unpacks' order (vector j, lane L: channels 16L + 4j .. 16L + 4j + 3),
 * and are requantized in that order (dw_round below). A last group of taps
 * with one real pair (9 taps: pairs 0-1, 2-3, 4-5, 6-7, then 8 alone) adds
 * that pair's sums with zeros, without a dummy pair's loads. Needs
 * AVX512BW. */
#define TARGET_BW __attribute__((target("avx512f,avx512vnni,avx512bw")))

/* 64 bytes of byte-pair weights, or with dup their first 32 twice (two
 * pixels of 32 channels in one vector: lanes 2, 3 are the next pixel's
 * lanes 0, 1). */
static inline __attribute__((always_inline)) TARGET_BW __m512i wload(const int8_t *w, const int dup)
{
    return dup ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w)) : _mm512_loadu_si512(w);
}

static inline __attribute__((always_inline)) TARGET_BW void dw_wide_block(const qconv_plan *p, const uint8_t *x,
                                                                         const int8_t *w, __m512i acc[4], const int dup)
{
    const int64_t *so = p->seg_off, taps = p->nseg, npairs = p->dw_wide_pairs;
    const __m512i ones = _mm512_set1_epi16(1);
    for (int k = 0; k < 4; k++)
        acc[k] = _mm512_setzero_si512();
    /* groups of two pairs; with an odd count of real pairs the last group has one */
    const int64_t full = (taps + 1) / 2 % 2 ? npairs - 2 : npairs;
    for (int64_t i = 0; i < full; i += 2, w += 4 * 64) {
        /* taps 2i .. 2i + 3; missing ones read tap 0 and have zero weights */
        int64_t t0 = 2 * i, t1 = t0 + 1 < taps ? t0 + 1 : 0, t2 = t0 + 2 < taps ? t0 + 2 : 0,
                t3 = t0 + 3 < taps ? t0 + 3 : 0;
        __m512i x0 = _mm512_loadu_si512(x + so[t0]), x1 = _mm512_loadu_si512(x + so[t1]);
        __m512i x2 = _mm512_loadu_si512(x + so[t2]), x3 = _mm512_loadu_si512(x + so[t3]);
        __m512i alo = _mm512_maddubs_epi16(_mm512_unpacklo_epi8(x0, x1), wload(w, dup));
        __m512i ahi = _mm512_maddubs_epi16(_mm512_unpackhi_epi8(x0, x1), wload(w + 64, dup));
        __m512i blo = _mm512_maddubs_epi16(_mm512_unpacklo_epi8(x2, x3), wload(w + 128, dup));
        __m512i bhi = _mm512_maddubs_epi16(_mm512_unpackhi_epi8(x2, x3), wload(w + 192, dup));
        acc[0] = _mm512_dpwssd_epi32(acc[0], _mm512_unpacklo_epi16(alo, blo), ones);
        acc[1] = _mm512_dpwssd_epi32(acc[1], _mm512_unpackhi_epi16(alo, blo), ones);
        acc[2] = _mm512_dpwssd_epi32(acc[2], _mm512_unpacklo_epi16(ahi, bhi), ones);
        acc[3] = _mm512_dpwssd_epi32(acc[3], _mm512_unpackhi_epi16(ahi, bhi), ones);
    }
    if (full < npairs) {
        int64_t t0 = 2 * full, t1 = t0 + 1 < taps ? t0 + 1 : 0;
        __m512i x0 = _mm512_loadu_si512(x + so[t0]), x1 = _mm512_loadu_si512(x + so[t1]);
        __m512i alo = _mm512_maddubs_epi16(_mm512_unpacklo_epi8(x0, x1), wload(w, dup));
        __m512i ahi = _mm512_maddubs_epi16(_mm512_unpackhi_epi8(x0, x1), wload(w + 64, dup));
        const __m512i z = _mm512_setzero_si512();
        acc[0] = _mm512_dpwssd_epi32(acc[0], _mm512_unpacklo_epi16(alo, z), ones);
        acc[1] = _mm512_dpwssd_epi32(acc[1], _mm512_unpackhi_epi16(alo, z), ones);
        acc[2] = _mm512_dpwssd_epi32(acc[2], _mm512_unpacklo_epi16(ahi, z), ones);
        acc[3] = _mm512_dpwssd_epi32(acc[3], _mm512_unpackhi_epi16(ahi, z), ones);
    }
}

/* dw_wide_block on the first 32 channels of a block (a last block of 32 or
 * fewer): 256-bit vectors, whose lanes 0 and 1 are the 512-bit ones'. */
static inline __attribute__((always_inline)) TARGET_BW_VL void dw_wide_half(const qconv_plan *p, const uint8_t *x,
                                                                           const int8_t *w, __m256i acc[4])
{
    const int64_t *so = p->seg_off, taps = p->nseg, npairs = p->dw_wide_pairs;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < npairs; i += 2, w += 4 * 64) {
        int64_t t0 = 2 * i, t1 = t0 + 1 < taps ? t0 + 1 : 0, t2 = t0 + 2 < taps ? t0 + 2 : 0,
                t3 = t0 + 3 < taps ? t0 + 3 : 0;
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(x + so[t0]));
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(x + so[t1]));
        __m256i x2 = _mm256_loadu_si256((const __m256i *)(x + so[t2]));
        __m256i x3 = _mm256_loadu_si256((const __m256i *)(x + so[t3]));
        __m256i alo = _mm256_maddubs_epi16(_mm256_unpacklo_epi8(x0, x1), _mm256_loadu_si256((const __m256i *)w));
        __m256i ahi =
            _mm256_maddubs_epi16(_mm256_unpackhi_epi8(x0, x1), _mm256_loadu_si256((const __m256i *)(w + 64)));
        __m256i blo =
            _mm256_maddubs_epi16(_mm256_unpacklo_epi8(x2, x3), _mm256_loadu_si256((const __m256i *)(w + 128)));
        __m256i bhi =
            _mm256_maddubs_epi16(_mm256_unpackhi_epi8(x2, x3), _mm256_loadu_si256((const __m256i *)(w + 192)));
        a0 = _mm256_dpwssd_epi32(a0, _mm256_unpacklo_epi16(alo, blo), ones);
        a1 = _mm256_dpwssd_epi32(a1, _mm256_unpackhi_epi16(alo, blo), ones);
        a2 = _mm256_dpwssd_epi32(a2, _mm256_unpacklo_epi16(ahi, bhi), ones);
        a3 = _mm256_dpwssd_epi32(a3, _mm256_unpackhi_epi16(ahi, bhi), ones);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* The requantization of the byte-pair loop, on the accumulators as they
 * come (vector j, 128-bit lane L: channels 16L + 4j .. 16L + 4j + 3) with
 * the constants in that order (qconv.h: dw_off, dw_rq): requant16's steps
 * without weight zero points, the bias as one fmadd, then tile_rq_bw's
 * saturating packs, which give its bytes (see there). Packing vectors 0, 1
 * and 2, 3 to int16 and those two to bytes puts each lane's 16 channels in
 * order, so the 64 bytes go out in one store, with no transpose. (The
 * earlier form, a 4x4 transpose of 128-bit lanes and four masked vpmovdb
 * stores, took 1.29x this time over MobileNetV2's depthwise layers other
 * than the 32-channel one; docs/architecture.md.) */
typedef struct {
    __m512i off[4];
    __m512 b[4], r[4], m[4];
} dw_consts;

static inline __attribute__((always_inline)) TARGET_BW void dw_consts_load(const qconv_plan *p, int64_t c0,
                                                                          dw_consts *k)
{
    const int64_t B = QCONV_DW_WIDE_BLOCK;
    const int32_t *off = p->dw_off + c0;
    const float *rq = p->dw_rq + c0 / B * 3 * B;
    for (int j = 0; j < 4; j++) {
        k->off[j] = _mm512_loadu_si512(off + 16 * j);
        k->b[j] = _mm512_loadu_ps(rq + 16 * j);
        k->r[j] = _mm512_loadu_ps(rq + B + 16 * j);
        k->m[j] = _mm512_loadu_ps(rq + 2 * B + 16 * j);
    }
}

/* dw_consts_load for two pixels of a 32-channel block (wload's dup). */
static inline __attribute__((always_inline)) TARGET_BW void dw_consts_load_dup(const qconv_plan *p, dw_consts *k)
{
    const int64_t B = QCONV_DW_WIDE_BLOCK;
    for (int j = 0; j < 4; j++) {
        k->off[j] = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p->dw_off + 16 * j)));
        k->b[j] = _mm512_castsi512_ps(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p->dw_rq + 16 * j))));
        k->r[j] = _mm512_castsi512_ps(
            _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p->dw_rq + B + 16 * j))));
        k->m[j] = _mm512_castsi512_ps(
            _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p->dw_rq + 2 * B + 16 * j))));
    }
}

static inline __attribute__((always_inline)) TARGET_BW __m512i dw_round(const dw_consts *k, int j, __m512i a)
{
    __m512 y = _mm512_cvtepi32_ps(_mm512_add_epi32(a, k->off[j]));
    return _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_fmadd_ps(k->b[j], k->r[j], y), k->m[j]));
}

static inline __attribute__((always_inline)) TARGET_BW_VL __m256i dw_round_half(const qconv_plan *p, int64_t c0,
                                                                               int j, __m256i a)
{
    const int64_t B = QCONV_DW_WIDE_BLOCK;
    const float *rq = p->dw_rq + c0 / B * 3 * B + 16 * j;
    __m256 y = _mm256_cvtepi32_ps(_mm256_add_epi32(a, _mm256_loadu_si256((const __m256i *)(p->dw_off + c0 + 16 * j))));
    y = _mm256_mask_fmadd_ps(_mm256_loadu_ps(rq), 0xFF, _mm256_loadu_ps(rq + B), y); /* the AVX512VL form of fmadd */
    return _mm256_cvtps_epi32(_mm256_mul_ps(y, _mm256_loadu_ps(rq + 2 * B)));
}

TARGET_BW_VL static void dw_row_wide(const qconv_plan *p, const uint8_t *in, uint8_t *dst)
{
    const int64_t step = p->g.sw * p->cp, B = QCONV_DW_WIDE_BLOCK, o = p->g.o, ow = p->g.ow;
    const int y8 = p->y_int8;
    const __m512i zy = _mm512_set1_epi16((int16_t)p->zy);
    const __m512i lo = _mm512_set1_epi8((char)p->lo), hi = _mm512_set1_epi8((char)p->hi);
    int64_t ox0 = 0; /* the half loop's first pixel */
    if (o == 32 && step == 32) {
        /* 32 channels at stride 1: pixels ox and ox + 1 are one 64-byte
         * load, their outputs one 64-byte store */
        dw_consts k;
        dw_consts_load_dup(p, &k);
        for (; ox0 + 1 < ow; ox0 += 2) {
            __m512i acc[4];
            dw_wide_block(p, in + ox0 * step, p->dw_wide, acc, 1);
            __m512i s01 = _mm512_adds_epi16(_mm512_packs_epi32(dw_round(&k, 0, acc[0]), dw_round(&k, 1, acc[1])), zy);
            __m512i s23 = _mm512_adds_epi16(_mm512_packs_epi32(dw_round(&k, 2, acc[2]), dw_round(&k, 3, acc[3])), zy);
            __m512i bytes = y8 ? _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(s01, s23), lo), hi)
                               : _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(s01, s23), lo), hi);
            _mm512_storeu_si512(dst + ox0 * o, bytes);
        }
    }
    for (int64_t c0 = 0; c0 < o; c0 += B) {
        const int8_t *w = p->dw_wide + c0 / B * p->dw_wide_pairs * 2 * B;
        if (o - c0 <= 32) { /* a last block of 32 or fewer channels */
            const __mmask32 mask = o - c0 >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << (o - c0)) - 1);
            const __m256i zy8 = _mm512_castsi512_si256(zy), lo8 = _mm512_castsi512_si256(lo),
                          hi8 = _mm512_castsi512_si256(hi);
            for (int64_t ox = ox0; ox < ow; ox++) {
                __m256i acc[4];
                dw_wide_half(p, in + ox * step + c0, w, acc);
                __m256i q0 = dw_round_half(p, c0, 0, acc[0]), q1 = dw_round_half(p, c0, 1, acc[1]);
                __m256i q2 = dw_round_half(p, c0, 2, acc[2]), q3 = dw_round_half(p, c0, 3, acc[3]);
                __m256i s01 = _mm256_adds_epi16(_mm256_packs_epi32(q0, q1), zy8);
                __m256i s23 = _mm256_adds_epi16(_mm256_packs_epi32(q2, q3), zy8);
                __m256i bytes = y8 ? _mm256_min_epi8(_mm256_max_epi8(_mm256_packs_epi16(s01, s23), lo8), hi8)
                                   : _mm256_min_epu8(_mm256_max_epu8(_mm256_packus_epi16(s01, s23), lo8), hi8);
                _mm256_mask_storeu_epi8(dst + ox * o + c0, mask, bytes);
            }
            break;
        }
        const __mmask64 mask = o - c0 >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (o - c0)) - 1);
        dw_consts k;
        dw_consts_load(p, c0, &k);
        for (int64_t ox = 0; ox < ow; ox++) {
            __m512i acc[4];
            dw_wide_block(p, in + ox * step + c0, w, acc, 0);
            __m512i s01 = _mm512_adds_epi16(_mm512_packs_epi32(dw_round(&k, 0, acc[0]), dw_round(&k, 1, acc[1])), zy);
            __m512i s23 = _mm512_adds_epi16(_mm512_packs_epi32(dw_round(&k, 2, acc[2]), dw_round(&k, 3, acc[3])), zy);
            __m512i bytes = y8 ? _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(s01, s23), lo), hi)
                               : _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(s01, s23), lo), hi);
            _mm512_mask_storeu_epi8(dst + ox * o + c0, mask, bytes);
        }
    }
}


static int bw_supported(void)
{
    return mera_cpu_features_get()->avx512bw;
}

TARGET static void dw_row(const qconv_plan *p, const uint8_t *in, uint8_t *dst)
{
    if (p->dw_wide)
        dw_row_wide(p, in, dst);
    else if (p->zw)
        dw_row_as(p, in, dst, p->dw_sat, 1);
    else if (p->dw_sat)
        dw_row_as(p, in, dst, 1, 0);
    else
        dw_row_as(p, in, dst, 0, 0);
}

const qconv_isa qconv_isa_avx512 = {
    .name = "avx512vnni",
    .kstep = 4,
    .lanes = 16,
    .nv_max = 4,
    .xbytes = 1,
    .px_max = {0, 12, 12, 8, 6},
    .gemm_tile = gemm_tile,
    .gemm_tile_rq = gemm_tile_rq,
    .requant = requant,
    .dw_row = dw_row,
    .bw_supported = bw_supported,
};

#endif
