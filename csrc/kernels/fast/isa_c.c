/* The portable inner loops of the fast quantized conv2d/dense (qconv.h):
 * plain C with fixed-size int32 accumulator blocks that GCC vectorizes at
 * -O2 on any target (products of a uint8 and an int8 fit in int16, which
 * the vectorizer proves, so on SSE2 they become pmullw/pmulhw pairs).
 * The requantization is qmath.h's requant_acc, element by element. */
#include <string.h>

#include "kernels/fast/qconv.h"
#include "kernels/ref/qmath.h"

#define C_LANES 16

/* npx pixels by 16 output channels; nk elements per segment, kstep 1. */
static inline void c_tile(const int npx, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                          const int8_t *w, int32_t *acc)
{
    uint32_t c[4][C_LANES]; /* sums wrap modulo 2^32, as qconv.h wants */
    memset(c, 0, sizeof c);
    for (int s = 0; s < nseg; s++) {
        const uint8_t *p0 = (const uint8_t *)px[0] + seg_off[s];
        const uint8_t *p1 = npx > 1 ? (const uint8_t *)px[1] + seg_off[s] : p0;
        const uint8_t *p2 = npx > 2 ? (const uint8_t *)px[2] + seg_off[s] : p0;
        const uint8_t *p3 = npx > 3 ? (const uint8_t *)px[3] + seg_off[s] : p0;
        for (int64_t k = 0; k < nk; k++, w += C_LANES) {
            int32_t x0 = p0[k], x1 = p1[k], x2 = p2[k], x3 = p3[k];
            for (int j = 0; j < C_LANES; j++) {
                c[0][j] += (uint32_t)(x0 * w[j]);
                if (npx > 1)
                    c[1][j] += (uint32_t)(x1 * w[j]);
                if (npx > 2)
                    c[2][j] += (uint32_t)(x2 * w[j]);
                if (npx > 3)
                    c[3][j] += (uint32_t)(x3 * w[j]);
            }
        }
    }
    for (int m = 0; m < npx; m++)
        memcpy(acc + m * QCONV_ACC_STRIDE, c[m], sizeof c[m]);
}

static void c_tile_1(const void *const *px, const int64_t *so, int ns, int64_t nk, const int8_t *w, int32_t *acc)
{
    c_tile(1, px, so, ns, nk, w, acc);
}
static void c_tile_2(const void *const *px, const int64_t *so, int ns, int64_t nk, const int8_t *w, int32_t *acc)
{
    c_tile(2, px, so, ns, nk, w, acc);
}
static void c_tile_3(const void *const *px, const int64_t *so, int ns, int64_t nk, const int8_t *w, int32_t *acc)
{
    c_tile(3, px, so, ns, nk, w, acc);
}
static void c_tile_4(const void *const *px, const int64_t *so, int ns, int64_t nk, const int8_t *w, int32_t *acc)
{
    c_tile(4, px, so, ns, nk, w, acc);
}

static void c_gemm_tile(int npx, int nv, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                        const void *w, int32_t *acc)
{
    MERA_ASSERT(nv == 1);
    switch (npx) {
    case 1: c_tile_1(px, seg_off, nseg, nk, w, acc); break;
    case 2: c_tile_2(px, seg_off, nseg, nk, w, acc); break;
    case 3: c_tile_3(px, seg_off, nseg, nk, w, acc); break;
    case 4: c_tile_4(px, seg_off, nseg, nk, w, acc); break;
    default: MERA_BUG("pixel tile too large");
    }
}

static void c_requant(const qconv_plan *p, int64_t o0, int64_t n, const int32_t *acc, int32_t xsum, uint8_t *dst)
{
    for (int64_t j = 0; j < n; j++) {
        int64_t o = o0 + j;
        requant_ch k = {p->has_bias, p->per_tensor, p->mult[o], p->bias[o], p->rcp[o]};
        uint32_t a = (uint32_t)acc[j] + (uint32_t)p->off[o];
        if (p->zw)
            a -= (uint32_t)p->zw[o] * (uint32_t)xsum;
        dst[j] = (uint8_t)requant_acc((int32_t)a, &k, p->zy, p->lo, p->hi);
    }
}

static inline int32_t sat16(int32_t v)
{
    return v < -32768 ? -32768 : v > 32767 ? 32767 : v;
}

/* Depthwise: a[j] += x0[j]*w0[j] + x1[j]*w1[j] for 16 channels, the pair
 * of fbgemm's depthwise kernel (ref/conv.c, depthwise_acc), saturated to
 * int16 when sat. w holds both taps' weights as int16 halves. */
static inline void c_dw_pair(uint32_t *a, const uint8_t *x0, const uint8_t *x1, const uint32_t *w, const int sat)
{
    for (int j = 0; j < C_LANES; j++) {
        int32_t pair = x0[j] * (int32_t)(int16_t)(w[j] & 0xffff) + x1[j] * ((int32_t)w[j] >> 16);
        a[j] += (uint32_t)(sat ? sat16(pair) : pair);
    }
}

static inline void c_dw_row_as(const qconv_plan *p, const uint8_t *in, uint8_t *dst, const int sat)
{
    const uint32_t *wp = p->wpack;
    const int64_t cp = p->cp, taps = p->nseg, step = p->g.sw * cp, *so = p->seg_off;
    for (int64_t c0 = 0; c0 < p->g.o; c0 += C_LANES)
        for (int64_t ox = 0; ox < p->g.ow; ox++) {
            const uint8_t *x = in + ox * step + c0;
            uint32_t a[C_LANES] = {0};
            int64_t t = 0;
            for (; t + 1 < taps; t += 2)
                c_dw_pair(a, x + so[t], x + so[t + 1], wp + t / 2 * cp + c0, sat);
            if (t < taps) /* a last single tap; its second weight is 0 */
                c_dw_pair(a, x + so[t], x + so[t], wp + t / 2 * cp + c0, 0);
            if (p->zw) {
                uint32_t xs[C_LANES] = {0};
                for (t = 0; t < taps; t++)
                    for (int j = 0; j < C_LANES; j++)
                        xs[j] += x[so[t] + j];
                for (int j = 0; j < C_LANES; j++)
                    a[j] -= (uint32_t)p->zw[c0 + j] * xs[j];
            }
            int64_t n = p->g.o - c0 < C_LANES ? p->g.o - c0 : C_LANES;
            c_requant(p, c0, n, (const int32_t *)a, 0, dst + ox * p->g.o + c0);
        }
}

static void c_dw_row(const qconv_plan *p, const uint8_t *in, uint8_t *dst)
{
    if (p->dw_sat)
        c_dw_row_as(p, in, dst, 1);
    else
        c_dw_row_as(p, in, dst, 0);
}

const qconv_isa qconv_isa_c = {
    .name = "c",
    .kstep = 1,
    .lanes = C_LANES,
    .nv_max = 1,
    .xbytes = 1,
    .px_max = {0, 4},
    .gemm_tile = c_gemm_tile,
    .requant = c_requant,
    .dw_row = c_dw_row,
};
