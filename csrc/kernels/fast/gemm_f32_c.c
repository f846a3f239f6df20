/* The portable inner loops of the fast float32 conv2d/dense (fconv.h): 8
 * output channels as two 4-float vectors, 6 pixels per tile, so the 12
 * accumulators stay in registers on SSE2 (16) and NEON (32). With GCC or
 * clang the vectors are the compilers' generic vector extension, which
 * becomes SSE2 / NEON code on any target; elsewhere they are structs of
 * four floats. Multiplies and adds stay separate (-ffp-contract=off). */
#include <string.h>

#include "kernels/fast/fconv.h"

#define C_LANES 8
#define C_PX 6

/* The tile's loops over pixels must unroll for its accumulators to live in
 * registers: the tile is inlined into one function per pixel count. */
#if defined(__GNUC__)
#define TILE_INLINE static inline __attribute__((always_inline))
#define PRAGMA(x) _Pragma(#x)
#define UNROLL_PX PRAGMA(GCC unroll 6)
#else
#define TILE_INLINE static inline
#define UNROLL_PX
#endif

#if defined(__GNUC__)
typedef float f32x4 __attribute__((vector_size(16)));

static inline f32x4 load4(const float *p)
{
    f32x4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store4(float *p, f32x4 v)
{
    memcpy(p, &v, sizeof v);
}

static inline f32x4 madd4(f32x4 c, float x, f32x4 w)
{
    return c + x * w;
}

static inline f32x4 vmadd4(f32x4 c, f32x4 x, f32x4 w)
{
    return c + x * w;
}

static inline f32x4 relu4(f32x4 c)
{
    for (int j = 0; j < 4; j++)
        c[j] = c[j] < 0.0f ? 0.0f : c[j]; /* NaN passes, as in the reference */
    return c;
}
#else
typedef struct {
    float v[4];
} f32x4;

static inline f32x4 load4(const float *p)
{
    f32x4 r;
    memcpy(r.v, p, sizeof r.v);
    return r;
}

static inline void store4(float *p, f32x4 v)
{
    memcpy(p, v.v, sizeof v.v);
}

static inline f32x4 madd4(f32x4 c, float x, f32x4 w)
{
    for (int j = 0; j < 4; j++)
        c.v[j] += x * w.v[j];
    return c;
}

static inline f32x4 vmadd4(f32x4 c, f32x4 x, f32x4 w)
{
    for (int j = 0; j < 4; j++)
        c.v[j] += x.v[j] * w.v[j];
    return c;
}

static inline f32x4 relu4(f32x4 c)
{
    for (int j = 0; j < 4; j++)
        c.v[j] = c.v[j] < 0.0f ? 0.0f : c.v[j];
    return c;
}
#endif

/* npx pixels by 8 output channels; packed weights [nseg * seg_len][8]. */
TILE_INLINE void c_tile(const int npx, const float *const *px, const int64_t *seg_off, int nseg, int64_t seg_len,
                          const float *w, const float *bias, float *dst, int64_t ldd, int nvalid, int relu)
{
    f32x4 c[C_PX][2];
    const f32x4 b0 = load4(bias), b1 = load4(bias + 4);
    UNROLL_PX
    for (int m = 0; m < npx; m++) {
        c[m][0] = b0;
        c[m][1] = b1;
    }
    for (int s = 0; s < nseg; s++) {
        const float *p[C_PX];
        UNROLL_PX
        for (int m = 0; m < npx; m++)
            p[m] = px[m] + seg_off[s];
        for (int64_t k = 0; k < seg_len; k++, w += C_LANES) {
            const f32x4 w0 = load4(w), w1 = load4(w + 4);
            UNROLL_PX
            for (int m = 0; m < npx; m++) {
                float x = p[m][k];
                c[m][0] = madd4(c[m][0], x, w0);
                c[m][1] = madd4(c[m][1], x, w1);
            }
        }
    }
    for (int m = 0; m < npx; m++) {
        float out[C_LANES];
        store4(out, relu ? relu4(c[m][0]) : c[m][0]);
        store4(out + 4, relu ? relu4(c[m][1]) : c[m][1]);
        memcpy(dst + m * ldd, out, (size_t)nvalid * sizeof(float));
    }
}

#define C_TILE(M)                                                                                            \
    static void c_tile_##M(const float *const *px, const int64_t *so, int ns, int64_t len, const float *w,    \
                           const float *b, float *dst, int64_t ldd, int nvalid, int relu)                    \
    {                                                                                                        \
        c_tile(M, px, so, ns, len, w, b, dst, ldd, nvalid, relu);                                            \
    }
C_TILE(1) C_TILE(2) C_TILE(3) C_TILE(4) C_TILE(5) C_TILE(6)

static void c_gemm_tile(int npx, int nv, const float *const *px, const int64_t *seg_off, int nseg, int64_t seg_len,
                        const float *w, const float *bias, float *dst, int64_t ldd, int nvalid, int relu)
{
    MERA_ASSERT(nv == 1 && nvalid >= 1 && nvalid <= C_LANES);
    switch (npx) {
    case 1: c_tile_1(px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu); break;
    case 2: c_tile_2(px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu); break;
    case 3: c_tile_3(px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu); break;
    case 4: c_tile_4(px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu); break;
    case 5: c_tile_5(px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu); break;
    case 6: c_tile_6(px, seg_off, nseg, seg_len, w, bias, dst, ldd, nvalid, relu); break;
    default: MERA_BUG("pixel tile too large");
    }
}

/* Depthwise: 4 output pixels at a time, 8 channels from c0 (n of them
 * exist; a partial vector goes through a zero-padded copy of its lanes). */
#define DW_PX 4

static inline f32x4 load_part(const float *p, int64_t n)
{
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(t, p, (size_t)(n < 4 ? (n > 0 ? n : 0) : 4) * sizeof(float));
    return load4(t);
}

TILE_INLINE void dw_block(const fconv_plan *p, const float *src, int64_t origin, int64_t step, const int npx,
                            const int64_t *tap_off, const int64_t *tap_w, int ntaps, float *dst, int64_t c0,
                            int64_t n)
{
    f32x4 acc[DW_PX][2];
    const int full = n == C_LANES;
    const f32x4 b0 = load_part(p->bias + c0, n), b1 = load_part(p->bias + c0 + 4, n - 4);
    UNROLL_PX
    for (int m = 0; m < npx; m++) {
        acc[m][0] = b0;
        acc[m][1] = b1;
    }
    for (int t = 0; t < ntaps; t++) {
        const float *w = p->wpack + tap_w[t] + c0, *x = src + (origin + tap_off[t] + c0);
        const f32x4 w0 = full ? load4(w) : load_part(w, n), w1 = full ? load4(w + 4) : load_part(w + 4, n - 4);
        UNROLL_PX
        for (int m = 0; m < npx; m++) {
            const float *xm = x + m * step;
            f32x4 x0 = full ? load4(xm) : load_part(xm, n), x1 = full ? load4(xm + 4) : load_part(xm + 4, n - 4);
            acc[m][0] = vmadd4(acc[m][0], x0, w0);
            acc[m][1] = vmadd4(acc[m][1], x1, w1);
        }
    }
    for (int m = 0; m < npx; m++) {
        float out[C_LANES];
        store4(out, p->relu ? relu4(acc[m][0]) : acc[m][0]);
        store4(out + 4, p->relu ? relu4(acc[m][1]) : acc[m][1]);
        memcpy(dst + m * p->g.o + c0, out, (size_t)n * sizeof(float));
    }
}

static void c_dw_pixels(const fconv_plan *p, const float *src, int64_t origin, int64_t step, int64_t npx,
                        const int64_t *tap_off, const int64_t *tap_w, int ntaps, float *dst)
{
    for (int64_t m0 = 0; m0 < npx;) {
        int full = npx - m0 >= DW_PX;
        for (int64_t c0 = 0; c0 < p->g.o; c0 += C_LANES) {
            int64_t n = p->g.o - c0 < C_LANES ? p->g.o - c0 : C_LANES;
            if (full)
                dw_block(p, src, origin + m0 * step, step, DW_PX, tap_off, tap_w, ntaps, dst + m0 * p->g.o, c0, n);
            else
                dw_block(p, src, origin + m0 * step, step, 1, tap_off, tap_w, ntaps, dst + m0 * p->g.o, c0, n);
        }
        m0 += full ? DW_PX : 1;
    }
}

/* In squares that keep both sides' lines in L1. */
void fconv_transpose_c(float *dst, int64_t dld, const float *src, int64_t sld, int64_t rows, int64_t cols)
{
    enum { B = 16 };
    for (int64_t i0 = 0; i0 < rows; i0 += B)
        for (int64_t j0 = 0; j0 < cols; j0 += B) {
            int64_t i1 = i0 + B < rows ? i0 + B : rows, j1 = j0 + B < cols ? j0 + B : cols;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++)
                    dst[j * dld + i] = src[i * sld + j];
        }
}

const fconv_isa fconv_isa_c = {
    .name = "c",
    .lanes = C_LANES,
    .nv_max = 1,
    .px_max = {0, C_PX},
    .gemm_tile = c_gemm_tile,
    .dw_pixels = c_dw_pixels,
    .transpose = fconv_transpose_c,
};
