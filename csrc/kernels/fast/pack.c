/* Plans of the fast quantized conv2d and dense kernels: geometry, weights
 * packed for one instruction set, and the per-channel constants of the
 * exact accumulator and of the requantization (qconv.h). Built once per
 * node when its weights are constants, else once per run. */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/qconv.h"
#include "kernels/ref/qmath.h"
#include "kernels/ref/refutil.h"
#include "kernels/split.h"

static int64_t round_up(int64_t v, int64_t m)
{
    return (v + m - 1) / m * m;
}

/* Zeroed, 64-byte aligned memory of count elements of size bytes plus
 * slack; NULL on overflow or failure. */
static void *alloc_zero(int64_t count, size_t size)
{
    if (count < 0 || (uint64_t)count > (SIZE_MAX - 2 * QCONV_SLACK) / size)
        return NULL;
    size_t bytes = ((size_t)count * size + QCONV_SLACK + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void qconv_plan_free(qconv_plan *p)
{
    if (!p)
        return;
    free(p->seg_off);
    if (!p->shared) {
        free(p->wpack);
        free(p->off);
        free(p->zw);
        free(p->mult);
        free(p->bias);
        free(p->rcp);
        free(p->fma_bias);
        free(p->fma_rcp);
        free(p->dw_wide);
        free(p->dw_off);
        free(p->dw_rq);
    }
    free(p);
}

/* Geometry; returns the weight strides (output ch, input ch, kh, kw). */
static void geometry(qconv_plan *p, const mera_kernel_args *a, int dense, int64_t ws[4])
{
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1];
    p->x_int8 = xt->dtype == MERA_DTYPE_INT8;
    p->y_int8 = a->out_types[0]->dtype == MERA_DTYPE_INT8;
    fast_conv_geometry(a, dense, &p->g, ws);
    if (dense)
        return;
    /* fbgemm's depthwise fast path, decided as ref_conv2d_q decides it;
     * there pairs of taps saturate to int16. A forced "yes" on a conv of
     * one group (a one-channel tile of a depthwise layer) takes the
     * depthwise loop too, which is the only one that pairs taps. */
    p->dw_sat = mera_conv_depthwise_saturates(a->node, xt, wt);
    p->depthwise = p->g.cg == 1 && (p->g.groups > 1 || p->dw_sat);
}

/* Where the window of an output pixel lies in the padded input. */
static mera_status layout_input(qconv_plan *p)
{
    const qconv_isa *isa = p->isa;
    int64_t rows = (p->g.oh - 1) * p->g.sh + (p->g.kh - 1) * p->g.dh + 1;
    int64_t cols = (p->g.ow - 1) * p->g.sw + (p->g.kw - 1) * p->g.dw + 1;
    p->hp = rows;
    p->wp = cols;
    p->xbytes = p->depthwise ? 1 : isa->xbytes;
    if (p->depthwise) {
        p->cp = round_up(p->g.o, 16);
        p->cgp = 1;
        p->nseg = p->g.kh * p->g.kw;
        p->seg_len = p->nk = 1;
    } else if (p->g.groups == 1 && (p->g.dw == 1 || p->g.kw == 1)) {
        /* one segment per kernel row: KW pixels of C channels lie side by side */
        p->merged = 1;
        p->cp = p->cgp = p->g.c;
        p->nseg = p->g.kh;
        p->seg_len = p->g.kw * p->g.c;
    } else {
        p->cgp = round_up(p->g.cg, isa->kstep);
        p->cp = p->g.groups * p->cgp;
        p->nseg = p->g.kh * p->g.kw;
        p->seg_len = p->g.cg;
    }
    if (!p->depthwise)
        p->nk = round_up(p->seg_len, isa->kstep);
    p->kpad = round_up(p->nseg * p->nk, isa->kchunk > 0 ? isa->kchunk : 1);
    p->kreal = p->g.kh * p->g.kw * p->g.cg;
    /* The input itself serves when it is laid out as the padded copy would
     * be and no segment reads past its end; a depthwise plan's loops read
     * up to QCONV_SLACK bytes past a window, so its last output rows still
     * run on a copy of the input's last rows (conv_q.c, dw_tail). */
    p->direct = p->g.x_nhwc && !p->x_int8 && p->xbytes == 1 && p->g.pt == 0 && p->g.pl == 0 && rows <= p->g.h &&
                cols <= p->g.w && p->cp == p->g.c &&
                (p->depthwise ? p->g.og == 1 : p->nk == p->seg_len);
    if (p->direct) {
        p->hp = p->g.h;
        p->wp = p->g.w;
    }
    p->seg_off = fast_conv_segment_offsets(&p->g, p->merged, p->nseg, p->wp, p->cp);
    return p->seg_off ? MERA_OK : MERA_ERR_NOMEM;
}

/* The weight of output channel o, input channel ci (within the group), tap
 * (i, j), and the weight at element e of segment s (0 past the segment). */
static int32_t weight_at(const int8_t *w, const int64_t ws[4], int64_t o, int64_t ci, int64_t i, int64_t j)
{
    return w[o * ws[0] + ci * ws[1] + i * ws[2] + j * ws[3]];
}

static mera_status pack_weights(qconv_plan *p, const int8_t *w, const int64_t ws[4])
{
    const qconv_isa *isa = p->isa;
    if (p->depthwise) {
        int64_t taps = p->g.kh * p->g.kw;
        p->dw_pairs = (taps + 1) / 2;
        uint32_t *d = alloc_zero(p->dw_pairs * p->cp, sizeof *d);
        if (!(p->wpack = d))
            return MERA_ERR_NOMEM;
        for (int64_t o = 0; o < p->g.o; o++)
            for (int64_t t = 0; t < taps; t++) {
                uint32_t v = (uint16_t)(int16_t)weight_at(w, ws, o, 0, t / p->g.kw, t % p->g.kw);
                d[(t / 2) * p->cp + o] |= t % 2 ? v << 16 : v;
            }
        return MERA_OK;
    }
    int64_t T = (int64_t)isa->lanes * isa->nv_max, ks = isa->kstep;
    int lg = ks == 4 ? 2 : ks == 2 ? 1 : 0;
    MERA_ASSERT(ks == 1 << lg);
    p->ogp = round_up(p->g.og, isa->lanes);
    int64_t per_oc = p->kpad;
    void *d = alloc_zero(p->g.groups * p->ogp * per_oc, (size_t)isa->xbytes);
    if (!(p->wpack = d))
        return MERA_ERR_NOMEM;
    for (int64_t g = 0; g < p->g.groups; g++)
        for (int64_t t0 = 0; t0 < p->ogp; t0 += T) {
            int64_t width = p->ogp - t0 < T ? p->ogp - t0 : T;
            int64_t base = (g * p->ogp + t0) * per_oc; /* [kpad / ks][width][ks] */
            for (int64_t j = 0; j < width && t0 + j < p->g.og; j++) {
                int64_t o = g * p->g.og + t0 + j;
                for (int64_t s = 0; s < p->nseg; s++) {
                    /* element e of segment s: merged, tap (s, e / cg) channel e % cg;
                     * else tap (s / kw, s % kw) channel e */
                    int64_t taps = p->merged ? p->g.kw : 1, i = p->merged ? s : s / p->g.kw, e = 0;
                    int64_t at0 = base + s * (p->nk / ks) * width * ks + j * ks;
                    for (int64_t tj = 0; tj < taps; tj++) {
                        const int8_t *src = w + o * ws[0] + i * ws[2] + (p->merged ? tj : s % p->g.kw) * ws[3];
                        for (int64_t ci = 0; ci < p->g.cg; ci++, e++) {
                            int64_t at = at0 + (e >> lg) * width * ks + (e & (ks - 1));
                            if (isa->xbytes == 2)
                                ((int16_t *)d)[at] = src[ci * ws[1]];
                            else
                                ((int8_t *)d)[at] = src[ci * ws[1]];
                        }
                    }
                }
            }
        }
    return MERA_OK;
}

/* The byte-pair depthwise weights (qconv.h), when the instruction set has
 * that loop and the plan takes fbgemm's saturating path without weight
 * zero points. */
static mera_status pack_dw_wide(qconv_plan *p, const int8_t *w, const int64_t ws[4])
{
    if (!p->depthwise || !p->dw_sat || p->zw || !p->bw)
        return MERA_OK;
    const int64_t B = QCONV_DW_WIDE_BLOCK, taps = p->g.kh * p->g.kw, blocks = round_up(p->g.o, B) / B;
    p->dw_wide_pairs = round_up((taps + 1) / 2, 2);
    int8_t *d = alloc_zero(blocks * p->dw_wide_pairs * 2 * B, 1);
    if (!(p->dw_wide = d))
        return MERA_ERR_NOMEM;
    for (int64_t o = 0; o < p->g.o; o++) {
        /* channel o's byte in a half: lane L = (o % 64) / 16, half h = (o % 16) / 8, k = o % 8 */
        int64_t b = o / B, r = o % B, lane = r / 16, h = r % 16 / 8, k = r % 8;
        for (int64_t t = 0; t < taps; t++) {
            int64_t pi = t / 2;
            int8_t *half = d + ((b * p->dw_wide_pairs + pi) * 2 + h) * B;
            half[lane * 16 + 2 * k + t % 2] = (int8_t)weight_at(w, ws, o, 0, t / p->g.kw, t % p->g.kw);
        }
    }
    /* the requantization constants in the accumulators' channel order */
    p->dw_off = alloc_zero(blocks * B, sizeof *p->dw_off);
    p->dw_rq = alloc_zero(blocks * 3 * B, sizeof *p->dw_rq);
    if (!p->dw_off || !p->dw_rq)
        return MERA_ERR_NOMEM;
    for (int64_t b = 0; b < blocks; b++)
        for (int64_t i = 0; i < B; i++) {
            int64_t o = b * B + i % 16 / 4 * 16 + i / 16 * 4 + i % 4; /* entry i = 16j + 4L + e */
            float *rq = p->dw_rq + b * 3 * B;
            p->dw_off[b * B + i] = o < p->g.o ? p->off[o] : 0;
            rq[i] = o < p->g.o ? p->fma_bias[o] : 0.0f;
            rq[B + i] = o < p->g.o ? p->fma_rcp[o] : 1.0f;
            rq[2 * B + i] = o < p->g.o ? p->mult[o] : 0.0f;
        }
    return MERA_OK;
}

/* off[o] = zx * (zw * K - sum(w)) and the requantization constants of
 * ref_requant_params, as arrays. */
static mera_status channel_constants(qconv_plan *p, const mera_kernel_args *a, const int8_t *w, const int64_t ws[4])
{
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *yt = a->out_types[0];
    const float *bias = a->n_inputs > 2 ? a->in[2] : NULL;
    int64_t nch = round_up(p->g.o > p->cp ? p->g.o : p->cp, 64) + 64;
    p->off = alloc_zero(nch, sizeof *p->off);
    p->mult = alloc_zero(nch, sizeof *p->mult);
    p->bias = alloc_zero(nch, sizeof *p->bias);
    p->rcp = alloc_zero(nch, sizeof *p->rcp);
    p->fma_bias = alloc_zero(nch, sizeof *p->fma_bias);
    p->fma_rcp = alloc_zero(nch, sizeof *p->fma_rcp);
    requant_ch *rq = malloc((size_t)p->g.o * sizeof *rq + 1);
    if (!p->off || !p->mult || !p->bias || !p->rcp || !p->fma_bias || !p->fma_rcp || !rq) {
        free(rq);
        return MERA_ERR_NOMEM;
    }
    ref_requant_params(xt, wt, yt, bias, p->g.o, rq);
    int per_axis = wt->q.kind == MERA_QUANT_PER_AXIS, any_zw = 0;
    uint32_t zx = (uint32_t)(xt->q.zero_point + (p->x_int8 ? 128 : 0));
    for (int64_t o = 0; o < p->g.o; o++) {
        int32_t zw = mera_q_zero_point(&wt->q, per_axis ? o : 0);
        any_zw |= zw != 0;
        uint32_t wsum = 0;
        for (int64_t i = 0; i < p->g.kh; i++)
            for (int64_t j = 0; j < p->g.kw; j++)
                for (int64_t ci = 0; ci < p->g.cg; ci++)
                    wsum += (uint32_t)weight_at(w, ws, o, ci, i, j);
        p->off[o] = (int32_t)(zx * ((uint32_t)zw * (uint32_t)p->kreal - wsum));
        p->mult[o] = rq[o].multiplier;
        p->bias[o] = rq[o].bias;
        p->rcp[o] = rq[o].rcp;
        p->fma_bias[o] = bias ? rq[o].bias : 0.0f;
        p->fma_rcp[o] = bias && !per_axis ? rq[o].rcp : 1.0f;
    }
    for (int64_t o = p->g.o; o < nch; o++)
        p->fma_rcp[o] = 1.0f;
    p->has_bias = bias != NULL;
    p->per_tensor = !per_axis;
    free(rq);
    if (any_zw) {
        if (!(p->zw = alloc_zero(nch, sizeof *p->zw)))
            return MERA_ERR_NOMEM;
        for (int64_t o = 0; o < p->g.o; o++)
            p->zw[o] = mera_q_zero_point(&wt->q, per_axis ? o : 0);
    }
    p->zx_raw = xt->q.zero_point;
    p->zy = yt->q.zero_point;
    p->lo = ref_relu(a->node) ? p->zy : q_lo(yt->dtype);
    p->hi = q_hi(yt->dtype);
    return MERA_OK;
}

mera_status qconv_plan_new(const mera_kernel_args *a, const qconv_isa *isa, int dense, qconv_plan **out,
                           mera_error *err)
{
    *out = NULL;
    qconv_plan *p = calloc(1, sizeof *p);
    if (!p)
        return ref_nomem(err, a->node);
    int64_t ws[4];
    geometry(p, a, dense, ws);
    if (isa->narrow && !p->depthwise && QCONV_ROWS_SMALL(p->g))
        isa = isa->narrow;
    p->isa = isa;
    p->bw = isa->bw_supported && isa->bw_supported();
    if (layout_input(p) || pack_weights(p, a->in[1], ws) || channel_constants(p, a, a->in[1], ws) ||
        pack_dw_wide(p, a->in[1], ws)) {
        qconv_plan_free(p);
        return ref_nomem(err, a->node);
    }
    *out = p;
    return MERA_OK;
}

/* Would p lay its weights and per-channel arrays out as like does? The
 * packing reads the geometry's channel counts, kernel size, segments and
 * the padded channel count, none of which depends on the input's size. */
static int same_packing(const qconv_plan *p, const qconv_plan *like)
{
    return p->isa == like->isa && p->bw == like->bw && p->depthwise == like->depthwise && p->dw_sat == like->dw_sat &&
           p->merged == like->merged && p->nseg == like->nseg && p->nk == like->nk && p->kpad == like->kpad &&
           p->cp == like->cp &&
           p->cgp == like->cgp && p->g.o == like->g.o && p->g.og == like->g.og && p->g.cg == like->g.cg &&
           p->g.groups == like->g.groups && p->g.kh == like->g.kh && p->g.kw == like->g.kw &&
           p->kreal == like->kreal && p->x_int8 == like->x_int8 && p->y_int8 == like->y_int8;
}

mera_status qconv_plan_new_like(const mera_kernel_args *a, const qconv_plan *like, int dense, qconv_plan **out,
                                mera_error *err)
{
    *out = NULL;
    qconv_plan *p = calloc(1, sizeof *p);
    if (!p)
        return ref_nomem(err, a->node);
    p->isa = like->isa;
    p->bw = like->bw;
    int64_t ws[4];
    geometry(p, a, dense, ws);
    if (layout_input(p)) {
        qconv_plan_free(p);
        return ref_nomem(err, a->node);
    }
    if (!same_packing(p, like)) {
        qconv_plan_free(p);
        return qconv_plan_new(a, like->isa, dense, out, err);
    }
    p->shared = 1;
    p->dw_pairs = like->dw_pairs;
    p->dw_wide = like->dw_wide;
    p->dw_wide_pairs = like->dw_wide_pairs;
    p->dw_off = like->dw_off;
    p->dw_rq = like->dw_rq;
    p->ogp = like->ogp;
    p->wpack = like->wpack;
    p->off = like->off;
    p->zw = like->zw;
    p->mult = like->mult;
    p->bias = like->bias;
    p->rcp = like->rcp;
    p->fma_bias = like->fma_bias;
    p->fma_rcp = like->fma_rcp;
    p->has_bias = like->has_bias;
    p->per_tensor = like->per_tensor;
    p->zx_raw = like->zx_raw;
    p->zy = like->zy;
    p->lo = like->lo;
    p->hi = like->hi;
    *out = p;
    return MERA_OK;
}
