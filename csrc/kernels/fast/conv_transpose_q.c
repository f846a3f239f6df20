/* The fast quantized conv_transpose2d: ref_conv_transpose2d_q's bytes
 * (tests/test_conv_transpose_q.py checks it), computed by output phases.
 *
 * Output pixel (oh, ow) receives tap (kh, kw) iff oh + pt - kh*dh and
 * ow + pl - kw*dw are multiples of the strides, from input pixel
 * ih = (oh + pt - kh*dh) / sh, iw = (ow + pl - kw*dw) / sw when that lies
 * inside the input. So every output pixel of one phase, (oh + pt) % sh = r
 * and (ow + pl) % sw = c, has the same list of taps, and along an output
 * row the pixels of one column phase (ow, ow + sw, ...) read consecutive
 * input pixels for each tap.
 *
 * Per output channel o the accumulator is the exact expansion
 *   sum over taps, channels of (x - zx)(w - zw)
 *     = sum x*w - zx*sum(w) - zw*(sum(x) - zx*cg)      (per tap, mod 2^32)
 * in wrapping int32, which has the bits of the reference's int64 sum
 * wrapped to int32. A tap whose input pixel lies outside the input reads a
 * pixel that holds zx in every real channel instead; its term is then
 * exactly zero, so a run of output pixels of one phase takes every tap of
 * the phase uniformly, and the zx*sum(w) and zw*zx*cg parts become one
 * constant per (phase, output channel). Only sum(x) (when some zw != 0)
 * stays per pixel.
 *
 * Activations are copied once per run into a scratch image
 * [n][H][Wp][cp] of bytes: NHWC, each group's channels padded to a
 * multiple of 4 with 0, int8 values with the sign bit flipped (x ^ 0x80
 * and zx + 128 leave x - zx unchanged and make the bytes unsigned, as
 * vpdpbusd wants), padL and padR columns of zx pixels on the sides, and
 * one more row of zx pixels for taps above or below the input. Weights are
 * packed once per node (per run for run-time weights) as
 * [group][tap][block of 16 output channels][cgp / 4][16][4] int8 (C and
 * AVX2 order each block of 4 channels differently, see ct_plan), zero at
 * padding channels. The requantization is requant_acc lane for lane.
 *
 * Output rows (n, oh) are split across the worker pool; every row writes
 * its own bytes with the same arithmetic, so no byte depends on the thread
 * count. */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/fast.h"
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "util/threadpool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define CT_LANES 16 /* output channels per packed weight block */

typedef enum { CT_ISA_C, CT_ISA_AVX2, CT_ISA_AVX512 } ct_isa;

typedef struct {
    ct_isa isa;
    int x_nhwc, y_nhwc, x_int8;
    int64_t n, c, h, w, o, oh, ow;
    int64_t groups, cg, og, cgp, cp, k4, nob; /* cgp: cg rounded up to 4; cp = groups * cgp; k4 = cgp / 4 */
    int64_t kh, kw, sh, sw, pt, pl, dh, dw;
    int64_t padl, wp;  /* zx columns left of the input in the scratch image; its width */
    int32_t zx;        /* input zero point as the scratch image holds it (int8: + 128) */
    int32_t zy, lo, hi;
    /* row phase r: nrt[r] taps kh = rtap[r * kh + i]; column phase c: nct[c] taps kw = ctap[c * kw + i],
     * the first output column ow0[c] and count ncol[c] of the phase, and per tap the scratch column
     * col0[c * kw + i] that the first output column reads */
    int64_t *nrt, *rtap, *nct, *ctap, *ow0, *ncol, *col0;
    /* [groups][kh*kw][nob][k4] blocks of wblock bytes: AVX-512 int8 [16][4] (lane l's 4 channels
     * together, as vpdpbusd takes them); C int8 [4][16] (one channel's 16 lanes together, for the
     * auto-vectorizer); AVX2 int16 [2][16][2], channel pairs (0, 2) then (1, 3) of each lane, as
     * vpmaddwd takes them from the bytes of a broadcast dword */
    int8_t *wpack;
    int64_t wblock;
    /* per padded output channel (groups * nob * 16) */
    int32_t *off;      /* [sh * sw][...]: -zx * sum of wsum over the phase's taps + zw * zx * cg * taps */
    int32_t *zw;       /* NULL when every weight zero point is 0 */
    float *mult, *fbias, *frcp; /* requant_acc's bias step as fma(fbias, frcp, y) */
    requant_ch *rq;    /* per real output channel (the portable path) */
    size_t img_bytes, scratch_bytes; /* the image (64-byte rounded); with the pixel sums */
} ct_plan;

static void ct_plan_free(ct_plan *p)
{
    if (!p)
        return;
    free(p->nrt);
    free(p->wpack);
    free(p->off);
    free(p->zw);
    free(p->mult);
    free(p->rq);
    free(p);
}

static int64_t mod_pos(int64_t a, int64_t m)
{
    int64_t r = a % m;
    return r < 0 ? r + m : r;
}

static int constants_present(const mera_kernel_args *a)
{
    return a->in[1] && (a->n_inputs < 3 || !a->in_types[2] || a->in[2]);
}

static mera_status ct_plan_new(const mera_kernel_args *a, ct_isa isa, ct_plan **out, mera_error *err)
{
    *out = NULL;
    const mera_node *node = a->node;
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *yt = a->out_types[0];
    int nhwc = ref_nhwc(node);
    ref_dims4 xd = ref_dims(xt, nhwc), yd = ref_dims(yt, nhwc);
    const int64_t *st = ref_ints(node, "strides"), *pad = ref_ints(node, "padding"), *dil = ref_ints(node, "dilation");
    ct_plan *p = calloc(1, sizeof *p);
    if (!p)
        return ref_nomem(err, node);
    p->isa = isa;
    p->x_nhwc = p->y_nhwc = nhwc;
    p->x_int8 = xt->dtype == MERA_DTYPE_INT8;
    p->n = xd.n, p->c = xd.c, p->h = xd.h, p->w = xd.w, p->o = yd.c, p->oh = yd.h, p->ow = yd.w;
    p->groups = mera_attr_int(node, "groups");
    p->cg = p->c / p->groups, p->og = wt->shape[1];
    p->cgp = (p->cg + 3) / 4 * 4, p->cp = p->groups * p->cgp, p->k4 = p->cgp / 4;
    p->nob = (p->og + CT_LANES - 1) / CT_LANES;
    p->kh = wt->shape[2], p->kw = wt->shape[3];
    p->sh = st[0], p->sw = st[1], p->pt = pad[0], p->pl = pad[1], p->dh = dil[0], p->dw = dil[1];
    p->zx = ref_zp(xt) + (p->x_int8 ? 128 : 0);
    p->zy = ref_zp(yt), p->lo = q_lo(yt->dtype), p->hi = q_hi(yt->dtype);

    /* the phases' taps */
    const int64_t KH = p->kh, KW = p->kw, T = KH * KW;
    int64_t *ints = malloc(sizeof(int64_t) * (size_t)(p->sh * (1 + KH) + p->sw * (3 + 2 * KW)));
    if (!ints)
        goto nomem;
    p->nrt = ints, p->rtap = p->nrt + p->sh, p->nct = p->rtap + p->sh * KH, p->ctap = p->nct + p->sw;
    p->ow0 = p->ctap + p->sw * KW, p->ncol = p->ow0 + p->sw, p->col0 = p->ncol + p->sw;
    for (int64_t r = 0; r < p->sh; r++) {
        p->nrt[r] = 0;
        for (int64_t k = 0; k < KH; k++)
            if (mod_pos(r - k * p->dh, p->sh) == 0)
                p->rtap[r * KH + p->nrt[r]++] = k;
    }
    int64_t lo_iw = 0, hi_iw = p->w - 1;
    for (int64_t c = 0; c < p->sw; c++) {
        p->nct[c] = 0;
        p->ow0[c] = mod_pos(c - p->pl, p->sw);
        p->ncol[c] = p->ow0[c] < p->ow ? (p->ow - 1 - p->ow0[c]) / p->sw + 1 : 0;
        for (int64_t k = 0; k < KW; k++)
            if (mod_pos(c - k * p->dw, p->sw) == 0) {
                int64_t iw0 = (p->ow0[c] + p->pl - k * p->dw) / p->sw; /* exact */
                p->ctap[c * KW + p->nct[c]] = k;
                p->col0[c * KW + p->nct[c]++] = iw0;
                if (p->ncol[c]) {
                    lo_iw = iw0 < lo_iw ? iw0 : lo_iw;
                    hi_iw = iw0 + p->ncol[c] - 1 > hi_iw ? iw0 + p->ncol[c] - 1 : hi_iw;
                }
            }
    }
    p->padl = -lo_iw;
    p->wp = hi_iw - lo_iw + 1;
    for (int64_t i = 0; i < p->sw * KW; i++)
        p->col0[i] += p->padl;
    size_t rows = (size_t)(p->n * p->h + 1);
    p->img_bytes = (rows * (size_t)p->wp * (size_t)p->cp + 63) & ~(size_t)63;
    p->scratch_bytes = p->img_bytes + rows * (size_t)p->wp * (size_t)p->groups * sizeof(int32_t) + 64;

    /* weights, sums, zero points */
    const int64_t OP = p->groups * p->nob * CT_LANES, K4 = p->k4;
    const int8_t *w = a->in[1];
    int per_axis = wt->q.kind == MERA_QUANT_PER_AXIS;
    p->wblock = isa == CT_ISA_AVX2 ? 128 : 64;
    p->wpack = calloc((size_t)(p->groups * T * p->nob * K4 * p->wblock), 1);
    int32_t *wsum = calloc((size_t)(T * OP), sizeof *wsum);
    p->off = calloc((size_t)(p->sh * p->sw * OP), sizeof *p->off);
    int32_t *zw = calloc((size_t)OP, sizeof *zw);
    p->mult = calloc((size_t)(3 * OP), sizeof *p->mult);
    p->rq = calloc((size_t)p->o, sizeof *p->rq);
    if (!p->wpack || !wsum || !p->off || !zw || !p->mult || !p->rq) {
        free(wsum);
        free(zw);
        goto nomem;
    }
    p->fbias = p->mult + OP, p->frcp = p->fbias + OP;
    int any_zw = 0;
    for (int64_t g = 0; g < p->groups; g++)
        for (int64_t co = 0; co < p->og; co++) {
            int64_t op = (g * p->nob) * CT_LANES + co; /* padded channel index */
            zw[op] = mera_q_zero_point(&wt->q, per_axis ? co : 0);
            any_zw |= zw[op] != 0;
            for (int64_t t = 0; t < T; t++) {
                uint32_t s = 0;
                int8_t *dst = p->wpack + ((g * T + t) * p->nob + co / CT_LANES) * K4 * p->wblock;
                int64_t l = co % CT_LANES;
                for (int64_t ci = 0; ci < p->cg; ci++) {
                    int8_t v = w[((g * p->cg + ci) * p->og + co) * T + t];
                    int64_t q = ci / 4, e = ci % 4;
                    if (isa == CT_ISA_AVX2)
                        ((int16_t *)(dst + q * 128))[(e % 2) * 32 + l * 2 + e / 2] = v;
                    else if (isa == CT_ISA_C)
                        dst[q * 64 + e * 16 + l] = v;
                    else
                        dst[q * 64 + l * 4 + e] = v;
                    s += (uint32_t)(int32_t)v;
                }
                wsum[t * OP + op] = (int32_t)s;
            }
        }
    const float *b = a->n_inputs > 2 ? a->in[2] : NULL;
    ref_requant_params(xt, wt, yt, b, p->o, p->rq);
    for (int64_t g = 0; g < p->groups; g++)
        for (int64_t co = 0; co < p->og; co++) {
            int64_t op = (g * p->nob) * CT_LANES + co;
            const requant_ch *k = &p->rq[g * p->og + co];
            p->mult[op] = k->multiplier;
            p->fbias[op] = k->has_bias ? k->bias : 0.0f;
            p->frcp[op] = k->has_bias && k->per_tensor ? k->rcp : 1.0f;
        }
    for (int64_t r = 0; r < p->sh; r++)
        for (int64_t c = 0; c < p->sw; c++) {
            int32_t *off = p->off + (r * p->sw + c) * OP;
            uint32_t ntaps = (uint32_t)(p->nrt[r] * p->nct[c]);
            for (int64_t op = 0; op < OP; op++) {
                uint32_t s = 0;
                for (int64_t i = 0; i < p->nrt[r]; i++)
                    for (int64_t j = 0; j < p->nct[c]; j++)
                        s += (uint32_t)wsum[(p->rtap[r * KH + i] * KW + p->ctap[c * KW + j]) * OP + op];
                off[op] = (int32_t)((uint32_t)zw[op] * (uint32_t)p->zx * (uint32_t)p->cg * ntaps -
                                    (uint32_t)p->zx * s);
            }
        }
    free(wsum);
    if (any_zw)
        p->zw = zw;
    else
        free(zw);
    *out = p;
    return MERA_OK;
nomem:
    ct_plan_free(p);
    return ref_nomem(err, node);
}

/* ---- the scratch image --------------------------------------------------- */

/* Fills the image (and, with zw, the per-pixel per-group sums) from x. */
static void fill_image(const ct_plan *p, const uint8_t *x, unsigned char *img, int32_t *xs)
{
    const int64_t cp = p->cp, cg = p->cg, cgp = p->cgp, wp = p->wp;
    const uint8_t flip = p->x_int8 ? 0x80 : 0, zx = (uint8_t)p->zx;
    const int64_t rows = p->n * p->h;
    /* the zx row: zx at real channels, 0 at padding channels */
    unsigned char *zrow = img + rows * wp * cp;
    for (int64_t j = 0; j < cp; j++)
        zrow[j] = j % cgp < cg ? zx : 0;
    for (int64_t col = 1; col < wp; col++)
        memcpy(zrow + col * cp, zrow, (size_t)cp);
    for (int64_t row = 0; row < rows; row++) {
        unsigned char *d = img + row * wp * cp;
        int64_t n = row / p->h, ih = row % p->h;
        memcpy(d, zrow, (size_t)(p->padl * cp));
        memcpy(d + (p->padl + p->w) * cp, zrow, (size_t)((wp - p->padl - p->w) * cp));
        d += p->padl * cp;
        if (p->x_nhwc) {
            const uint8_t *s = x + (n * p->h + ih) * p->w * p->c;
            if (cgp == cg) {
                for (int64_t i = 0; i < p->w * p->c; i++)
                    d[i] = s[i] ^ flip;
            } else {
                for (int64_t iw = 0; iw < p->w; iw++, d += cp, s += p->c) {
                    memset(d, 0, (size_t)cp);
                    for (int64_t g = 0; g < p->groups; g++)
                        for (int64_t ci = 0; ci < cg; ci++)
                            d[g * cgp + ci] = s[g * cg + ci] ^ flip;
                }
            }
        } else {
            if (cgp != cg)
                memset(d, 0, (size_t)(p->w * cp));
            for (int64_t ch = 0; ch < p->c; ch++) {
                const uint8_t *s = x + ((n * p->c + ch) * p->h + ih) * p->w;
                unsigned char *dc = d + ch / cg * cgp + ch % cg;
                for (int64_t iw = 0; iw < p->w; iw++)
                    dc[iw * cp] = s[iw] ^ flip;
            }
        }
    }
    if (!xs)
        return;
    for (int64_t pix = 0; pix < (rows + 1) * wp; pix++) {
        const unsigned char *s = img + pix * cp;
        for (int64_t g = 0; g < p->groups; g++) {
            uint32_t sum = 0;
            for (int64_t ci = 0; ci < cg; ci++)
                sum += s[g * cgp + ci];
            xs[pix * p->groups + g] = (int32_t)sum;
        }
    }
}

/* ---- tiles --------------------------------------------------------------- */

#define CT_MAX_PX 12 /* output pixels per tile */

/* One tile: npx output pixels of one column phase along a row (consecutive
 * input pixels per tap) times nb blocks of 16 output channels. */
typedef struct {
    const ct_plan *p;
    int64_t ntaps;
    const unsigned char *const *tx; /* per tap: the input pixel of the tile's first output pixel, group applied */
    const int8_t *const *tw;        /* per tap: the packed weights of the tile's first block */
    const int32_t *off;             /* the phase's offsets at the tile's first channel */
    const int32_t *xs;              /* per pixel: sum of x over the taps (zw only) */
    int64_t op0;                    /* padded channel of the first block */
    int64_t o0, nvalid;             /* real output channel of the first block; real channels in the tile */
    uint8_t *y;                     /* the output of the tile's first pixel, channel o0 (NHWC) */
    int64_t y_pix;                  /* elements between the tile's output pixels */
    int64_t y_ch;                   /* elements between output channels */
} ct_tile;

static void tile_c(const ct_tile *t, int npx, int nb)
{
    const ct_plan *p = t->p;
    const int64_t cp = p->cp, K4 = p->k4, bstride = K4 * p->wblock;
    uint32_t acc[CT_MAX_PX][2 * CT_LANES];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < t->ntaps; k++) {
        for (int b = 0; b < nb; b++) {
            const int8_t *w = t->tw[k] + b * bstride;
            for (int m = 0; m < npx; m++) {
                const unsigned char *x = t->tx[k] + m * cp;
                uint32_t *ac = acc[m] + b * CT_LANES;
                for (int64_t q = 0; q < 4 * K4; q++) {
                    const int8_t *wq = w + q * CT_LANES;
                    const int32_t xv = x[q];
                    for (int l = 0; l < CT_LANES; l++)
                        ac[l] += (uint32_t)(xv * wq[l]);
                }
            }
        }
    }
    for (int m = 0; m < npx; m++)
        for (int64_t j = 0; j < t->nvalid; j++) {
            uint32_t v = acc[m][j] + (uint32_t)t->off[j];
            if (p->zw)
                v -= (uint32_t)p->zw[t->op0 + j] * (uint32_t)t->xs[m];
            int32_t r = requant_acc((int32_t)v, &p->rq[t->o0 + j], p->zy, p->lo, p->hi);
            t->y[m * t->y_pix + j * t->y_ch] = (uint8_t)r;
        }
}

#if defined(__x86_64__)
#define CT_AVX2 __attribute__((target("avx2,fma")))
#define CT_AVX2_PX 4

/* 16 output channels (two vectors of 8) of P pixels: per 4 input channels, the pixel's bytes
 * broadcast as dwords, split into the int16 pairs (x0, x2) and (x1, x3), vpmaddwd with the weights
 * (exact int32 pair sums: |x * w| <= 255 * 128). */
static inline __attribute__((always_inline)) CT_AVX2 void tile_avx2_n(const ct_tile *t, const int P)
{
    const ct_plan *p = t->p;
    const int64_t cp = p->cp, K4 = p->k4;
    __m256i acc[2 * CT_AVX2_PX];
#pragma GCC unroll 8
    for (int i = 0; i < 2 * P; i++)
        acc[i] = _mm256_setzero_si256();
    const __m256i lowb = _mm256_set1_epi32(0x00ff00ff);
    for (int64_t k = 0; k < t->ntaps; k++) {
        const int8_t *w = t->tw[k];
        const unsigned char *x = t->tx[k];
        for (int64_t q = 0; q < K4; q++, w += 128, x += 4) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)w), w1 = _mm256_loadu_si256((const __m256i *)(w + 32));
            const __m256i w2 = _mm256_loadu_si256((const __m256i *)(w + 64)), w3 = _mm256_loadu_si256((const __m256i *)(w + 96));
#pragma GCC unroll 4
            for (int m = 0; m < P; m++) {
                int32_t v;
                memcpy(&v, x + m * cp, 4);
                __m256i b = _mm256_set1_epi32(v);
                __m256i xa = _mm256_and_si256(b, lowb), xb = _mm256_srli_epi16(b, 8);
                acc[2 * m] = _mm256_add_epi32(acc[2 * m], _mm256_madd_epi16(xa, w0));
                acc[2 * m + 1] = _mm256_add_epi32(acc[2 * m + 1], _mm256_madd_epi16(xa, w1));
                acc[2 * m] = _mm256_add_epi32(acc[2 * m], _mm256_madd_epi16(xb, w2));
                acc[2 * m + 1] = _mm256_add_epi32(acc[2 * m + 1], _mm256_madd_epi16(xb, w3));
            }
        }
    }
    const __m256i lo = _mm256_set1_epi32(p->lo - p->zy), hi = _mm256_set1_epi32(p->hi - p->zy);
    const __m256i zy = _mm256_set1_epi32(p->zy);
    const int64_t n = t->nvalid;
    for (int h = 0; h < 2 && 8 * h < n; h++) {
        const int64_t op = t->op0 + 8 * h;
        const __m256i off = _mm256_loadu_si256((const __m256i *)(t->off + 8 * h));
        const __m256i zwv = p->zw ? _mm256_loadu_si256((const __m256i *)(p->zw + op)) : _mm256_setzero_si256();
        const __m256 fb = _mm256_loadu_ps(p->fbias + op), fr = _mm256_loadu_ps(p->frcp + op);
        const __m256 mu = _mm256_loadu_ps(p->mult + op);
        const int64_t nh = n - 8 * h < 8 ? n - 8 * h : 8;
#pragma GCC unroll 4
        for (int m = 0; m < P; m++) {
            __m256i v = _mm256_add_epi32(acc[2 * m + h], off);
            if (p->zw)
                v = _mm256_sub_epi32(v, _mm256_mullo_epi32(zwv, _mm256_set1_epi32(t->xs[m])));
            __m256 f = _mm256_fmadd_ps(fb, fr, _mm256_cvtepi32_ps(v));
            f = _mm256_mul_ps(f, mu);
            __m256i r = _mm256_cvtps_epi32(f);
            r = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(r, lo), hi), zy);
            int32_t tmp[8];
            _mm256_storeu_si256((__m256i *)tmp, r);
            uint8_t *d = t->y + m * t->y_pix + 8 * h * t->y_ch;
            for (int64_t j = 0; j < nh; j++)
                d[j * t->y_ch] = (uint8_t)tmp[j];
        }
    }
}

static CT_AVX2 void tile_avx2(const ct_tile *t, int npx)
{
    switch (npx) {
    case 1: tile_avx2_n(t, 1); return;
    case 2: tile_avx2_n(t, 2); return;
    case 3: tile_avx2_n(t, 3); return;
    case 4: tile_avx2_n(t, 4); return;
    }
    MERA_BUG("conv_transpose2d AVX2 tile: npx out of range");
}

#define CT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))

static inline __attribute__((always_inline)) CT_AVX512 void tile_avx512_n(const ct_tile *t, const int P, const int NB)
{
    const ct_plan *p = t->p;
    const int64_t cp = p->cp, K4 = p->k4, bstride = K4 * 64;
    __m512i acc[CT_MAX_PX * 2];
#pragma GCC unroll 24
    for (int i = 0; i < P * NB; i++)
        acc[i] = _mm512_setzero_si512();
    for (int64_t k = 0; k < t->ntaps; k++) {
        const int8_t *w = t->tw[k];
        const unsigned char *x = t->tx[k];
        for (int64_t q = 0; q < K4; q++, w += 64, x += 4) {
            __m512i wv0 = _mm512_loadu_si512(w), wv1 = wv0;
            if (NB == 2)
                wv1 = _mm512_loadu_si512(w + bstride);
#pragma GCC unroll 12
            for (int m = 0; m < P; m++) {
                int32_t v;
                memcpy(&v, x + m * cp, 4);
                __m512i xv = _mm512_set1_epi32(v);
                acc[m * NB] = _mm512_dpbusd_epi32(acc[m * NB], xv, wv0);
                if (NB == 2)
                    acc[m * NB + 1] = _mm512_dpbusd_epi32(acc[m * NB + 1], xv, wv1);
            }
        }
    }
    const __m512i lo = _mm512_set1_epi32(p->lo - p->zy), hi = _mm512_set1_epi32(p->hi - p->zy);
    const __m512i zy = _mm512_set1_epi32(p->zy);
#pragma GCC unroll 2
    for (int b = 0; b < NB; b++) {
        int64_t j0 = b * CT_LANES, n = t->nvalid - j0 < CT_LANES ? t->nvalid - j0 : CT_LANES;
        __mmask16 mask = (__mmask16)((1u << n) - 1u);
        const int64_t op = t->op0 + j0;
        const __m512i off = _mm512_loadu_si512(t->off + j0);
        const __m512i zwv = p->zw ? _mm512_loadu_si512(p->zw + op) : _mm512_setzero_si512();
        const __m512 fb = _mm512_loadu_ps(p->fbias + op), fr = _mm512_loadu_ps(p->frcp + op);
        const __m512 mu = _mm512_loadu_ps(p->mult + op);
#pragma GCC unroll 12
        for (int m = 0; m < P; m++) {
            __m512i v = _mm512_add_epi32(acc[m * NB + b], off);
            if (p->zw)
                v = _mm512_sub_epi32(v, _mm512_mullo_epi32(zwv, _mm512_set1_epi32(t->xs[m])));
            __m512 f = _mm512_fmadd_ps(fb, fr, _mm512_cvtepi32_ps(v));
            f = _mm512_mul_ps(f, mu);
            __m512i r = _mm512_cvtps_epi32(f);
            r = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(r, lo), hi), zy);
            if (t->y_ch == 1) {
                _mm512_mask_cvtepi32_storeu_epi8(t->y + m * t->y_pix + j0, mask, r);
            } else {
                uint8_t tmp[CT_LANES];
                _mm512_mask_cvtepi32_storeu_epi8(tmp, mask, r);
                uint8_t *d = t->y + m * t->y_pix + j0 * t->y_ch;
                for (int64_t j = 0; j < n; j++)
                    d[j * t->y_ch] = tmp[j];
            }
        }
    }
}

#define CT_T1(P) \
    case P: tile_avx512_n(t, P, 1); return;
#define CT_T2(P) \
    case P: tile_avx512_n(t, P, 2); return;

static CT_AVX512 void tile_avx512(const ct_tile *t, int npx, int nb)
{
    if (nb == 2) {
        switch (npx) {
            CT_T2(1) CT_T2(2) CT_T2(3) CT_T2(4) CT_T2(5) CT_T2(6) CT_T2(7) CT_T2(8)
        }
    } else {
        switch (npx) {
            CT_T1(1) CT_T1(2) CT_T1(3) CT_T1(4) CT_T1(5) CT_T1(6)
            CT_T1(7) CT_T1(8) CT_T1(9) CT_T1(10) CT_T1(11) CT_T1(12)
        }
    }
    MERA_BUG("conv_transpose2d tile: npx or nb out of range");
}
#endif

/* Pixels per tile for nb blocks (accumulators: npx * nb vectors). */
static int tile_px(const ct_plan *p, int nb)
{
#if defined(__x86_64__)
    if (p->isa == CT_ISA_AVX2)
        return CT_AVX2_PX;
#endif
    (void)p;
    return nb == 2 ? 8 : CT_MAX_PX;
}

/* ---- rows ---------------------------------------------------------------- */

typedef struct {
    const ct_plan *p;
    const unsigned char *img;
    const int32_t *xs; /* per scratch pixel and group, or NULL */
    uint8_t *y;
    int failed;
} ct_job;

static void run_rows(void *ctx, int64_t r0, int64_t r1)
{
    ct_job *j = ctx;
    const ct_plan *p = j->p;
    const int64_t KH = p->kh, KW = p->kw, T = KH * KW, cp = p->cp, wp = p->wp;
    const int64_t OP = p->groups * p->nob * CT_LANES, bstride = p->k4 * p->wblock;
    const int pairs = p->isa != CT_ISA_AVX2; /* two blocks per tile */
    /* per tap of a phase: scratch row index and column, and the tap's pointers */
    int64_t *tap_pix = malloc(sizeof(int64_t) * (size_t)(2 * T) + sizeof(void *) * (size_t)(2 * T));
    if (!tap_pix) {
        j->failed = 1;
        return;
    }
    int64_t *tap_t = tap_pix + T;
    const unsigned char **tx = (const unsigned char **)(tap_t + T);
    const int8_t **tw = (const int8_t **)(tx + T);
    int32_t xs[CT_MAX_PX];
    const int64_t zrow = p->n * p->h; /* the zx row */
    for (int64_t row = r0; row < r1; row++) {
        int64_t n = row / p->oh, oh = row % p->oh, r = (oh + p->pt) % p->sh;
        for (int64_t c = 0; c < p->sw; c++) {
            const int64_t ncol = p->ncol[c];
            if (!ncol)
                continue;
            int64_t nt = 0;
            for (int64_t i = 0; i < p->nrt[r]; i++) {
                int64_t kh = p->rtap[r * KH + i], th = oh + p->pt - kh * p->dh, ih = th / p->sh;
                int64_t srow = th >= 0 && ih < p->h ? n * p->h + ih : zrow;
                for (int64_t k = 0; k < p->nct[c]; k++) {
                    tap_pix[nt] = srow * wp + p->col0[c * KW + k];
                    tap_t[nt++] = kh * KW + p->ctap[c * KW + k];
                }
            }
            const int32_t *off = p->off + (r * p->sw + c) * OP;
            const int64_t ow0 = p->ow0[c];
            for (int64_t g = 0; g < p->groups; g++) {
                int nb;
                for (int64_t ob = 0; ob < p->nob; ob += nb) {
                    nb = pairs && p->nob - ob >= 2 ? 2 : 1;
                    int64_t o0 = g * p->og + ob * CT_LANES, nvalid = p->og - ob * CT_LANES;
                    nvalid = nvalid < nb * CT_LANES ? nvalid : nb * CT_LANES;
                    int64_t op0 = (g * p->nob + ob) * CT_LANES;
                    int mpx = tile_px(p, nb);
                    const int64_t ntiles = (ncol + mpx - 1) / mpx, small = ncol / ntiles, big = ncol % ntiles;
                    int64_t npx;
                    for (int64_t j0 = 0, k = 0; j0 < ncol; j0 += npx, k++) {
                        npx = small + (k < big);
                        for (int64_t i = 0; i < nt; i++) {
                            tx[i] = j->img + (tap_pix[i] + j0) * cp + g * p->cgp;
                            tw[i] = p->wpack + ((g * T + tap_t[i]) * p->nob + ob) * bstride;
                        }
                        if (j->xs)
                            for (int64_t m = 0; m < npx; m++) {
                                uint32_t s = 0;
                                for (int64_t i = 0; i < nt; i++)
                                    s += (uint32_t)j->xs[(tap_pix[i] + j0 + m) * p->groups + g];
                                xs[m] = (int32_t)s;
                            }
                        int64_t ow = ow0 + j0 * p->sw;
                        ct_tile t = {p, nt, tx, tw, off + op0, xs, op0, o0, nvalid, NULL, 0, 0};
                        if (p->y_nhwc) {
                            t.y = j->y + ((n * p->oh + oh) * p->ow + ow) * p->o + o0;
                            t.y_pix = p->sw * p->o;
                            t.y_ch = 1;
                        } else {
                            t.y = j->y + ((n * p->o + o0) * p->oh + oh) * p->ow + ow;
                            t.y_pix = p->sw;
                            t.y_ch = p->oh * p->ow;
                        }
#if defined(__x86_64__)
                        if (p->isa == CT_ISA_AVX512) {
                            tile_avx512(&t, (int)npx, nb);
                            continue;
                        }
                        if (p->isa == CT_ISA_AVX2) {
                            tile_avx2(&t, (int)npx);
                            continue;
                        }
#endif
                        tile_c(&t, (int)npx, nb);
                    }
                }
            }
        }
    }
    free(tap_pix);
}

/* Multiply-adds below which another thread is not worth waking (conv_q.c's bound). */
#define CT_MIN_THREAD_MACS 262144

static mera_status ct_run(const ct_plan *p, const mera_kernel_args *a, mera_error *err)
{
    unsigned char *space = a->scratch, *buf = NULL;
    if (!space || a->scratch_bytes < p->scratch_bytes)
        space = buf = malloc(p->scratch_bytes);
    if (!space)
        return ref_nomem(err, a->node);
    int32_t *xs = p->zw ? (int32_t *)(space + p->img_bytes) : NULL;
    fill_image(p, a->in[0], space, xs);
    ct_job j = {p, space, xs, a->out[0], 0};
    /* the multiply-adds the taps that reach the output make, at least one per output byte */
    int64_t taps = p->kh * p->kw / (p->sh * p->sw);
    int64_t macs = p->n * p->oh * p->ow * p->o * p->cg * (taps > 1 ? taps : 1);
    int64_t most = macs / CT_MIN_THREAD_MACS;
    int t = mera_threads_resolve(a->threads);
    if (t > most)
        t = most > 1 ? (int)most : 1;
    mera_parallel_for(t, p->n * p->oh, 1, run_rows, &j);
    free(buf);
    return j.failed ? ref_nomem(err, a->node) : MERA_OK;
}

/* ---- the kernel ABI ------------------------------------------------------ */

static mera_status ct_prepare(const mera_kernel_args *a, ct_isa isa, void **state, mera_error *err)
{
    *state = NULL;
    if (!constants_present(a))
        return MERA_OK; /* run-time weights: planned per run */
    ct_plan *p;
    mera_status st = ct_plan_new(a, isa, &p, err);
    *state = p;
    return st;
}

static mera_status ct_kernel(const mera_kernel_args *a, ct_isa isa, mera_error *err)
{
    const ct_plan *p = a->state;
    ct_plan *own = NULL;
    if (!p) {
        mera_status st = ct_plan_new(a, isa, &own, err);
        if (st)
            return st;
        p = own;
    }
    MERA_ASSERT(p->isa == isa);
    mera_status st = ct_run(p, a, err);
    ct_plan_free(own);
    return st;
}

size_t fast_conv_transpose2d_q_scratch(const mera_kernel_args *a)
{
    const ct_plan *p = a->state;
    return p ? p->scratch_bytes : 0;
}

void fast_conv_transpose2d_q_release(void *state)
{
    ct_plan_free(state);
}

mera_status fast_conv_transpose2d_q_prepare_c(const mera_kernel_args *a, void **state, mera_error *err)
{
    return ct_prepare(a, CT_ISA_C, state, err);
}

mera_status fast_conv_transpose2d_q_c(const mera_kernel_args *a, mera_error *err)
{
    return ct_kernel(a, CT_ISA_C, err);
}

#if defined(__x86_64__)
mera_status fast_conv_transpose2d_q_prepare_avx2(const mera_kernel_args *a, void **state, mera_error *err)
{
    return ct_prepare(a, CT_ISA_AVX2, state, err);
}

mera_status fast_conv_transpose2d_q_avx2(const mera_kernel_args *a, mera_error *err)
{
    return ct_kernel(a, CT_ISA_AVX2, err);
}

mera_status fast_conv_transpose2d_q_prepare_avx512(const mera_kernel_args *a, void **state, mera_error *err)
{
    return ct_prepare(a, CT_ISA_AVX512, state, err);
}

mera_status fast_conv_transpose2d_q_avx512(const mera_kernel_args *a, mera_error *err)
{
    return ct_kernel(a, CT_ISA_AVX512, err);
}
#endif
