/* AVX-512F inner loops of the fast float32 conv2d/dense (fconv.h): 16
 * output channels per zmm vector, one vfmadd231ps with a broadcast
 * activation per pixel and vector, up to 24 accumulators in registers;
 * masked loads and stores for channel tails; 8x8 ymm transposes for NCHW.
 *
 * Only AVX512F instructions (and the AVX ones it implies) are used; the
 * functions carry their own target attribute, so the file builds without
 * -m flags and its code runs only after dispatch.c has checked the CPU. */
#if defined(__x86_64__)

#include <immintrin.h>

#include "kernels/fast/fconv.h"

#define TARGET __attribute__((target("avx512f,fma")))
#define INLINE static inline __attribute__((always_inline)) TARGET
#define LANES 16

/* The lanes of the last of nv vectors that hold one of nvalid channels. */
static inline __mmask16 tail_mask(int nv, int nvalid)
{
    return (__mmask16)((1u << (nvalid - (nv - 1) * LANES)) - 1);
}

/* npx pixels by nv vectors of 16 output channels. Packed weights:
 * [nseg * seg_len][nv * 16]. */
INLINE void tile(const int npx, const int nv, const float *const *px, const int64_t *seg_off, int nseg,
                 int64_t seg_len, const float *w, const float *bias, float *dst, int64_t ldd, int nvalid, int relu)
{
    __m512 c[FCONV_MAX_PX][FCONV_MAX_NV];
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) {
        __m512 b = _mm512_loadu_ps(bias + v * LANES);
#pragma GCC unroll 12
        for (int m = 0; m < npx; m++)
            c[m][v] = b;
    }
    for (int s = 0; s < nseg; s++) {
        const float *p[FCONV_MAX_PX];
#pragma GCC unroll 12
        for (int m = 0; m < npx; m++)
            p[m] = px[m] + seg_off[s];
        for (int64_t k = 0; k < seg_len; k++, w += nv * LANES) {
            __m512 wv[FCONV_MAX_NV];
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                wv[v] = _mm512_load_ps(w + v * LANES);
#pragma GCC unroll 12
            for (int m = 0; m < npx; m++) {
                __m512 xb = _mm512_set1_ps(p[m][k]);
#pragma GCC unroll 4
                for (int v = 0; v < nv; v++)
                    c[m][v] = _mm512_fmadd_ps(xb, wv[v], c[m][v]);
            }
        }
    }
    const __m512 zero = _mm512_setzero_ps();
    const __mmask16 last = tail_mask(nv, nvalid);
#pragma GCC unroll 12
    for (int m = 0; m < npx; m++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            /* max(0, c) keeps a NaN, as the reference's relu does */
            __m512 r = relu ? _mm512_max_ps(zero, c[m][v]) : c[m][v];
            if (v < nv - 1)
                _mm512_storeu_ps(dst + m * ldd + v * LANES, r);
            else
                _mm512_mask_storeu_ps(dst + m * ldd + v * LANES, last, r);
        }
}

typedef void (*tile_fn)(const float *const *px, const int64_t *seg_off, int nseg, int64_t seg_len, const float *w,
                        const float *bias, float *dst, int64_t ldd, int nvalid, int relu);

#define TILE(M, NV)                                                                                         \
    TARGET static void tile_##M##_##NV(const float *const *px, const int64_t *seg_off, int nseg,           \
                                       int64_t seg_len, const float *w, const float *bias, float *dst,     \
                                       int64_t ldd, int nvalid, int relu)                                  \
    {                                                                                                       \
        tile(M, NV, px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu);                          \
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
static const tile_fn tiles[FCONV_MAX_NV][FCONV_MAX_PX] = {
    {ROW6(1), tile_7_1, tile_8_1, tile_9_1, tile_10_1, tile_11_1, tile_12_1},
    {ROW6(2), tile_7_2, tile_8_2, tile_9_2, tile_10_2, tile_11_2, tile_12_2},
    {ROW6(3), tile_7_3, tile_8_3},
    {ROW6(4)},
};

static void gemm_tile(int npx, int nv, const float *const *px, const int64_t *seg_off, int nseg, int64_t seg_len,
                      const float *w, const float *bias, float *dst, int64_t ldd, int nvalid, int relu)
{
    MERA_ASSERT(nv >= 1 && nv <= FCONV_MAX_NV && npx >= 1 && npx <= FCONV_MAX_PX && tiles[nv - 1][npx - 1]);
    MERA_ASSERT(nvalid > (nv - 1) * LANES && nvalid <= nv * LANES);
    tiles[nv - 1][npx - 1](px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu);
}

/* Depthwise: DW_PX output pixels at a time, every channel vector for
 * them, so a pixel's channels are read in order. */
#define DW_PX 8

/* npx pixels (fconv.h, dw_pixels), the 16 channels from c0; with
 * !full only those of mask exist, and the loads are masked too: the padded
 * input has exactly o channels per pixel, and the input itself may end at
 * the last one. */
INLINE void dw_block(const fconv_plan *p, const float *src, int64_t origin, int64_t step, const int npx,
                     const int64_t *tap_off, const int64_t *tap_w, int ntaps, float *dst, int64_t c0,
                     const int full, __mmask16 mask)
{
    __m512 acc[DW_PX];
    const __m512 b = full ? _mm512_loadu_ps(p->bias + c0) : _mm512_maskz_loadu_ps(mask, p->bias + c0);
#pragma GCC unroll 8
    for (int m = 0; m < npx; m++)
        acc[m] = b;
    for (int t = 0; t < ntaps; t++) {
        const float *w = p->wpack + tap_w[t] + c0, *x = src + (origin + tap_off[t] + c0);
        const __m512 wv = full ? _mm512_loadu_ps(w) : _mm512_maskz_loadu_ps(mask, w);
#pragma GCC unroll 8
        for (int m = 0; m < npx; m++) {
            __m512 xv = full ? _mm512_loadu_ps(x + m * step) : _mm512_maskz_loadu_ps(mask, x + m * step);
            acc[m] = _mm512_fmadd_ps(xv, wv, acc[m]);
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < npx; m++) {
        __m512 r = p->relu ? _mm512_max_ps(_mm512_setzero_ps(), acc[m]) : acc[m];
        if (full)
            _mm512_storeu_ps(dst + m * p->g.o + c0, r);
        else
            _mm512_mask_storeu_ps(dst + m * p->g.o + c0, mask, r);
    }
}

/* All channel vectors of npx pixels. */
INLINE void dw_channels(const fconv_plan *p, const float *src, int64_t origin, int64_t step, const int npx,
                        const int64_t *tap_off, const int64_t *tap_w, int ntaps, float *dst)
{
    int64_t c0 = 0;
    for (; c0 + LANES <= p->g.o; c0 += LANES)
        dw_block(p, src, origin, step, npx, tap_off, tap_w, ntaps, dst, c0, 1, 0);
    if (c0 < p->g.o)
        dw_block(p, src, origin, step, npx, tap_off, tap_w, ntaps, dst, c0, 0,
                 (__mmask16)((1u << (p->g.o - c0)) - 1));
}

TARGET static void dw_pixels(const fconv_plan *p, const float *src, int64_t origin, int64_t step, int64_t npx,
                             const int64_t *tap_off, const int64_t *tap_w, int ntaps, float *dst)
{
    int64_t m0 = 0;
    for (; m0 + DW_PX <= npx; m0 += DW_PX)
        dw_channels(p, src, origin + m0 * step, step, DW_PX, tap_off, tap_w, ntaps, dst + m0 * p->g.o);
    for (; m0 < npx; m0++)
        dw_channels(p, src, origin + m0 * step, step, 1, tap_off, tap_w, ntaps, dst + m0 * p->g.o);
}

/* An 8x8 square of the transpose: rows of src to columns of dst. */
INLINE void transpose8(float *dst, int64_t dld, const float *src, int64_t sld)
{
    __m256 r[8], t[8], u[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * sld);
#pragma GCC unroll 4
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + i * dld, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * dld, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
    }
}

/* dst[j * dld + i] = src[i * sld + j]: 8x8 squares, 16 rows of src at a
 * time so each dst row gets a whole cache line; the edges in C. */
TARGET static void transpose(float *dst, int64_t dld, const float *src, int64_t sld, int64_t rows, int64_t cols)
{
    const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
    for (int64_t i0 = 0; i0 < r8; i0 += 16) {
        int two = i0 + 16 <= r8;
        for (int64_t j0 = 0; j0 < c8; j0 += 8) {
            transpose8(dst + j0 * dld + i0, dld, src + i0 * sld + j0, sld);
            if (two)
                transpose8(dst + j0 * dld + i0 + 8, dld, src + (i0 + 8) * sld + j0, sld);
        }
    }
    if (c8 < cols)
        fconv_transpose_c(dst + c8 * dld, dld, src + c8, sld, r8, cols - c8);
    if (r8 < rows)
        fconv_transpose_c(dst + r8, dld, src + r8 * sld, sld, rows - r8, cols);
}

const fconv_isa fconv_isa_avx512 = {
    .name = "avx512f",
    .lanes = LANES,
    .nv_max = 4,
    .px_max = {0, 12, 12, 8, 6},
    .gemm_tile = gemm_tile,
    .dw_pixels = dw_pixels,
    .transpose = transpose,
};

#endif
