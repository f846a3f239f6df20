/* Intel AMX inner loops of the fast quantized conv2d/dense (qconv.h).
 *
 * tdpbusd multiplies, for each of 16 rows of an A tile (16 pixels, 64
 * unsigned activation bytes each) and 16 columns of a B tile (16 output
 * channels), 64 pairs of u8 * s8 and adds the products, in groups of four,
 * to the int32 accumulator of a C tile without saturation: the sums are
 * exact modulo 2^32 as with vpdpbusd, so the raw dot products are the AVX-512
 * kernel's bit for bit and the requantization is that kernel's (qconv.h).
 *
 * The plan is the AVX-512 one (16 channels per vector, tiles of 64
 * channels, packed weights [kpad / 4][width][4]), with each channel's K
 * padded with zero weights to a multiple of 64 (kchunk): rows 16c .. 16c+15
 * of a weight tile, 16 channels from 16v, are exactly a B tile (16 rows of
 * 4 k by 16 channels, 64 bytes per row) read at a stride of width * 4
 * bytes. The driver (conv_q.c, run_rows_items) hands gemm_rows the windows
 * of up to 32 pixels as rows of kpad bytes, or the input itself where the
 * windows lie at one stride; gemm_rows keeps 2 A tiles (32 pixels), 2 B
 * tiles (32 channels) and 4 C tiles (32 x 32 accumulators), walks K and
 * stores the C tiles into the accumulator array. Depthwise convs, the
 * small-pixel-count gemm and the requantization are the AVX-512 kernel's.
 *
 * The tile configuration (palette 1, all 8 tiles 16 rows of 64 bytes) is
 * per thread: rows_begin loads it and rows_end releases the tiles (the
 * driver brackets each worker's items with them). dispatch.c selects this
 * instruction set only where the CPU has AMX-TILE and AMX-INT8 and Linux
 * granted the process the tile state (mera_cpu_features_get). */
#if defined(__x86_64__) && defined(__linux__)

#include <immintrin.h>
#include <string.h>

#include "kernels/fast/qconv.h"

#define TARGET_AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512vnni,avx512bw,avx512vl")))

/* Chunks of K ahead whose weights are prefetched. */
#define QCONV_AMX_PREFETCH 8

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* A constant in memory: GCC 12 does not see ldtilecfg read its operand and
 * dropped the stores of a configuration built on the stack. */
static const tile_config config __attribute__((aligned(64))) = {
    .palette_id = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

TARGET_AMX static void rows_begin(void)
{
    _tile_loadconfig(&config);
}

TARGET_AMX static void rows_end(void)
{
    _tile_release();
}

/* One pass over K for pixels 0..15 (and 16..31 with two_a) by channels
 * 16v..16v+15 (and the next 16 with two_b): tiles 0, 1 are A, 2, 3 B and
 * 4..7 C. Chunk c of a pixel's window is at a + c * 64 (rows) or, with
 * seg_off, at a + seg_off[s] + e for byte c * 64 = s * nk + e. */
static inline __attribute__((always_inline)) TARGET_AMX void pass(const int two_a, const int two_b, const uint8_t *a,
                                                                  int64_t astride, const int64_t *seg_off,
                                                                  int64_t nk, int64_t kpad, const int8_t *w,
                                                                  int64_t wrow, int32_t *acc)
{
    _tile_zero(4);
    if (two_b)
        _tile_zero(5);
    if (two_a)
        _tile_zero(6);
    if (two_a && two_b)
        _tile_zero(7);
    const uint8_t *a1 = a + 16 * astride;
    int64_t s = 0, e = 0;
    for (int64_t k = 0; k < kpad; k += 64, w += 16 * wrow) {
        int64_t at = k;
        if (seg_off) {
            at = seg_off[s] + e;
            if ((e += 64) == nk) {
                e = 0;
                s++;
            }
        }
        /* the weights of a chunk a few ahead (tile loads are not prefetched
         * well, and the weights of a large layer come from beyond L2) */
        if (k + QCONV_AMX_PREFETCH * 64 < kpad) {
            const char *f = (const char *)w + QCONV_AMX_PREFETCH * 16 * wrow;
            for (int64_t i = 0; i < 16 * wrow; i += 64)
                _mm_prefetch(f + i, _MM_HINT_T0);
        }
        _tile_loadd(0, a + at, astride);
        _tile_loadd(2, w, wrow);
        if (two_b)
            _tile_loadd(3, w + 64, wrow);
        _tile_dpbusd(4, 0, 2);
        if (two_b)
            _tile_dpbusd(5, 0, 3);
        if (two_a) {
            _tile_loadd(1, a1 + at, astride);
            _tile_dpbusd(6, 1, 2);
            if (two_b)
                _tile_dpbusd(7, 1, 3);
        }
    }
    const int64_t cs = QCONV_ACC_STRIDE * 4;
    _tile_stored(4, acc, cs);
    if (two_b)
        _tile_stored(5, acc + 16, cs);
    if (two_a)
        _tile_stored(6, acc + 16 * QCONV_ACC_STRIDE, cs);
    if (two_a && two_b)
        _tile_stored(7, acc + 16 * QCONV_ACC_STRIDE + 16, cs);
}

TARGET_AMX static void gemm_rows(int npx, int nv, const uint8_t *a, int64_t astride, const int64_t *seg_off, int nseg,
                                 int64_t nk, int64_t kpad, const void *w, int32_t *acc)
{
    (void)nseg;
    MERA_ASSERT(npx >= 1 && npx <= QCONV_ROWS_PX && nv >= 1 && nv <= QCONV_MAX_NV && kpad % 64 == 0);
    MERA_ASSERT(!seg_off || nk % 64 == 0);
    const int8_t *wb = w;
    const int64_t wrow = (int64_t)nv * 64; /* bytes per row of 4 k: width * 4 */
    for (int v = 0; v < nv; v += 2) {
        const int8_t *wv = wb + v * 64;
        int32_t *av = acc + v * 16;
        if (npx > 16) {
            if (v + 1 < nv)
                pass(1, 1, a, astride, seg_off, nk, kpad, wv, wrow, av);
            else
                pass(1, 0, a, astride, seg_off, nk, kpad, wv, wrow, av);
        } else {
            if (v + 1 < nv)
                pass(0, 1, a, astride, seg_off, nk, kpad, wv, wrow, av);
            else
                pass(0, 0, a, astride, seg_off, nk, kpad, wv, wrow, av);
        }
    }
}

/* Whole 64-byte chunks, then a masked tail: nothing is read or written
 * past a segment (the input may be the caller's tensor, with no slack). */
TARGET_AMX static void rows_gather(int npx, const unsigned char *const *px, const int64_t *seg_off, int nseg,
                                   int64_t nk, int64_t kpad, uint8_t *rows)
{
    const int64_t full = nk & ~(int64_t)63;
    const __mmask64 tail = nk - full ? (((__mmask64)1 << (nk - full)) - 1) : 0;
    for (int m = 0; m < npx; m++)
        for (int s = 0; s < nseg; s++) {
            const unsigned char *src = px[m] + seg_off[s];
            uint8_t *dst = rows + m * kpad + s * nk;
            for (int64_t e = 0; e < full; e += 64)
                _mm512_storeu_si512(dst + e, _mm512_loadu_si512(src + e));
            if (tail)
                _mm512_mask_storeu_epi8(dst + full, tail, _mm512_maskz_loadu_epi8(tail, src + full));
        }
}

/* The requantization of isa_avx512.c's tile_rq_bw (whose bytes are
 * requant16's, see there) on accumulators that start at zero: off[o] (and
 * - zw[o] * xsum) is added first, as requant16 adds it. nv, zw and y8 are
 * constants in each instance, so the per-channel constants stay in
 * registers. */
static inline __attribute__((always_inline)) TARGET_AMX void
rq_rows(const qconv_plan *p, int npx, const int nv, const int with_zw, const int y8, const int32_t *acc,
        const int32_t *xsum, int64_t o0, int64_t nvalid, uint8_t *dst, int64_t ds)
{
    __m512 b[QCONV_MAX_NV], r[QCONV_MAX_NV], mult[QCONV_MAX_NV];
    __m512i off[QCONV_MAX_NV], zw[QCONV_MAX_NV];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) {
        b[v] = _mm512_loadu_ps(p->fma_bias + o0 + 16 * v);
        r[v] = _mm512_loadu_ps(p->fma_rcp + o0 + 16 * v);
        mult[v] = _mm512_loadu_ps(p->mult + o0 + 16 * v);
        off[v] = _mm512_loadu_si512(p->off + o0 + 16 * v);
        zw[v] = with_zw ? _mm512_loadu_si512(p->zw + o0 + 16 * v) : _mm512_setzero_si512();
    }
    const __m512i zy = _mm512_set1_epi16((int16_t)p->zy);
    const __m512i lo = _mm512_set1_epi8((char)p->lo), hi = _mm512_set1_epi8((char)p->hi);
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __mmask64 mask = nvalid >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << nvalid) - 1);
    for (int m = 0; m < npx; m++) {
        __m512i q[QCONV_MAX_NV];
        const __m512i xs = _mm512_set1_epi32(with_zw ? xsum[m] : 0);
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __m512i a = _mm512_add_epi32(_mm512_loadu_si512(acc + m * QCONV_ACC_STRIDE + 16 * v), off[v]);
            if (with_zw)
                a = _mm512_sub_epi32(a, _mm512_mullo_epi32(zw[v], xs));
            __m512 y = _mm512_cvtepi32_ps(a);
            q[v] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_fmadd_ps(b[v], r[v], y), mult[v]));
        }
        __m512i s01 = _mm512_adds_epi16(_mm512_packs_epi32(q[0], nv > 1 ? q[1] : q[0]), zy);
        __m512i s23 = nv > 2 ? _mm512_adds_epi16(_mm512_packs_epi32(q[2], nv > 3 ? q[3] : q[2]), zy) : s01;
        __m512i bytes;
        if (y8)
            bytes = _mm512_min_epi8(_mm512_max_epi8(_mm512_packs_epi16(s01, s23), lo), hi);
        else
            bytes = _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(s01, s23), lo), hi);
        _mm512_mask_storeu_epi8(dst + m * ds, mask, _mm512_permutexvar_epi32(order, bytes));
    }
}

#define RQ_ROWS(NV, ZW, Y8)                                                                                    \
    TARGET_AMX static void rq_rows_##NV##_##ZW##_##Y8(const qconv_plan *p, int npx, const int32_t *acc,         \
                                                      const int32_t *xsum, int64_t o0, int64_t nvalid,          \
                                                      uint8_t *dst, int64_t ds)                                 \
    {                                                                                                          \
        rq_rows(p, npx, NV, ZW, Y8, acc, xsum, o0, nvalid, dst, ds);                                           \
    }
#define RQ_ROWS_NV(NV) RQ_ROWS(NV, 0, 0) RQ_ROWS(NV, 0, 1) RQ_ROWS(NV, 1, 0) RQ_ROWS(NV, 1, 1)
RQ_ROWS_NV(1)
RQ_ROWS_NV(2)
RQ_ROWS_NV(3)
RQ_ROWS_NV(4)

typedef void (*rq_rows_fn)(const qconv_plan *p, int npx, const int32_t *acc, const int32_t *xsum, int64_t o0,
                           int64_t nvalid, uint8_t *dst, int64_t ds);
#define RQ_ROW(NV) {rq_rows_##NV##_0_0, rq_rows_##NV##_0_1, rq_rows_##NV##_1_0, rq_rows_##NV##_1_1}
static const rq_rows_fn rq_rows_table[QCONV_MAX_NV][4] = {RQ_ROW(1), RQ_ROW(2), RQ_ROW(3), RQ_ROW(4)};

static void rows_requant(const qconv_plan *p, int npx, int nv, const int32_t *acc, const int32_t *xsum, int64_t o0,
                         int64_t nvalid, uint8_t *dst, int64_t ds)
{
    MERA_ASSERT(nv >= 1 && nv <= QCONV_MAX_NV && p->bw);
    rq_rows_table[nv - 1][(p->zw ? 2 : 0) + (p->y_int8 ? 1 : 0)](p, npx, acc, xsum, o0, nvalid, dst, ds);
}

/* The rest is the AVX-512 kernel's (the same plan layout). */
static void gemm_tile(int npx, int nv, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                      const void *w, int32_t *acc)
{
    qconv_isa_avx512.gemm_tile(npx, nv, px, seg_off, nseg, nk, w, acc);
}

static void gemm_tile_rq(const qconv_plan *p, int npx, int nv, const void *const *px, const void *w, int64_t o0,
                         int64_t nvalid, uint8_t *dst, int64_t dst_stride)
{
    qconv_isa_avx512.gemm_tile_rq(p, npx, nv, px, w, o0, nvalid, dst, dst_stride);
}

static void requant(const qconv_plan *p, int64_t o0, int64_t n, const int32_t *acc, int32_t xsum, uint8_t *dst)
{
    qconv_isa_avx512.requant(p, o0, n, acc, xsum, dst);
}

static void dw_row(const qconv_plan *p, const uint8_t *in, uint8_t *dst)
{
    qconv_isa_avx512.dw_row(p, in, dst);
}

static int bw_supported(void)
{
    return qconv_isa_avx512.bw_supported();
}

const qconv_isa qconv_isa_amx = {
    .name = "amx",
    .kstep = 4,
    .lanes = 16,
    .nv_max = 2,
    .xbytes = 1,
    .px_max = {0, 12, 12},
    .gemm_tile = gemm_tile,
    .gemm_tile_rq = gemm_tile_rq,
    .requant = requant,
    .dw_row = dw_row,
    .bw_supported = bw_supported,
    .kchunk = 64,
    .narrow = &qconv_isa_avx512,
    .rows_begin = rows_begin,
    .rows_end = rows_end,
    .gemm_rows = gemm_rows,
    .rows_gather = rows_gather,
    .rows_requant = rows_requant,
};

#endif
