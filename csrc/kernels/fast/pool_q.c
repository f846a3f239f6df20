/* Fast quantized max_pool2d: NHWC data, the integer maximum over the
 * window taken a whole pixel of channels at a time (ew.h's max_window),
 * output rows split across the worker pool. The window is the
 * reference's (ref/pool.c: max_window); NCHW data goes to the reference
 * kernel. The maximum of integers has no rounding, so PyTorch's memory
 * format does not matter.
 *
 * Average pools (avg_pool2d, NHWC adaptive_avg_pool2d): the window's integer
 * sums without the reference's index arithmetic, then exactly the
 * reference's quantize formula per channel (ref/pool.c), which depends on
 * PyTorch's memory format and the graph's rounding. */
#include <string.h>

#include "kernels/fast/ew.h"
#include "kernels/fast/fast.h"
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "util/threadpool.h"

typedef struct {
    const ew_isa *isa;
    const uint8_t *x;
    uint8_t *y;
    int64_t h, w, c, oh, ow;
    int64_t kh, kw, sh, sw, pt, pl, dh, dw;
    int is_int8;
} maxpool_job;

/* as ref/pool.c's max_window */
static void window(int64_t o, int64_t s, int64_t p, int64_t k, int64_t d, int64_t in, int64_t *start, int64_t *end)
{
    int64_t b = o * s - p;
    int64_t e = b + (k - 1) * d + 1;
    *end = e < in ? e : in;
    while (b < 0)
        b += d;
    *start = b;
}

static void maxpool_rows(void *ctx, int64_t r0, int64_t r1)
{
    const maxpool_job *j = ctx;
    const uint8_t lowest = j->is_int8 ? 0x80 : 0; /* q_lo as a byte */
    const int64_t rs = j->dh * j->w * j->c, cs = j->dw * j->c;
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / j->oh, oh = r % j->oh, h0, h1;
        window(oh, j->sh, j->pt, j->kh, j->dh, j->h, &h0, &h1);
        int64_t nh = h1 > h0 ? (h1 - h0 + j->dh - 1) / j->dh : 0;
        for (int64_t ow = 0; ow < j->ow; ow++) {
            int64_t w0, w1;
            window(ow, j->sw, j->pl, j->kw, j->dw, j->w, &w0, &w1);
            int64_t nw = w1 > w0 ? (w1 - w0 + j->dw - 1) / j->dw : 0;
            uint8_t *y = j->y + (r * j->ow + ow) * j->c;
            if (nh == 0 || nw == 0) /* an empty window: the reference's initial value */
                memset(y, lowest, (size_t)j->c);
            else /* the window's maximum a whole pixel of channels at a time */
                j->isa->max_window(y, j->x + ((n * j->h + h0) * j->w + w0) * j->c, rs, cs, nh, nw, j->c, j->is_int8);
        }
    }
}

static mera_status max_pool2d_q(const mera_kernel_args *a, const ew_isa *isa, mera_error *err)
{
    const mera_node *node = a->node;
    if (!ref_nhwc(node))
        return ref_max_pool2d_q(a, err);
    const int64_t *k = ref_ints(node, "kernel"), *s = ref_ints(node, "strides"), *p = ref_ints(node, "padding");
    const int64_t *d = ref_ints(node, "dilation");
    const int64_t *xs = a->in_types[0]->shape, *ys = a->out_types[0]->shape;
    maxpool_job j = {isa, a->in[0], a->out[0], xs[1], xs[2], xs[3], ys[1], ys[2],
                     k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], a->in_types[0]->dtype == MERA_DTYPE_INT8};
    mera_parallel_for(a->threads, ys[0] * ys[1], 1 + 16384 / (ys[2] * ys[3] + 1), maxpool_rows, &j);
    return MERA_OK;
}

/* ---- adaptive_avg_pool2d: NHWC data on PyTorch's channels-last path ---- */

#define ADA_CHUNK 256 /* channels summed at a time */

typedef struct {
    const ew_isa *isa; /* sum_bytes, and quantize for the vector block */
    const uint8_t *x;
    uint8_t *y;
    int64_t n, h, w, c, oh, ow;
    int32_t zx, zy, lo, hi;
    float ratio; /* (float)in_s / (float)out_s */
    int x_int8;
    mera_rounding rounding;
} ada_job;

/* PyTorch's adaptive windows, as ref/pool.c's ada_start and ada_end */
static int64_t ada_start(int64_t o, int64_t out, int64_t in) { return o * in / out; }
static int64_t ada_end(int64_t o, int64_t out, int64_t in) { return ((o + 1) * in + out - 1) / out; }

static void ada_rows(void *ctx, int64_t r0, int64_t r1)
{
    const ada_job *j = ctx;
    int32_t acc[ADA_CHUNK];
    float accf[ADA_CHUNK];
    const int64_t cvec = j->c / 8 * 8; /* ref: ADA_QVEC_CH channels per vector block */
    ew_convert_params qp = {.zo = j->zy, .lo = j->lo, .hi = j->hi, .y_int8 = j->lo < 0, .rounding = j->rounding};
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / j->oh, oh = r % j->oh;
        int64_t h0 = ada_start(oh, j->oh, j->h), h1 = ada_end(oh, j->oh, j->h);
        for (int64_t ow = 0; ow < j->ow; ow++) {
            int64_t w0 = ada_start(ow, j->ow, j->w), w1 = ada_end(ow, j->ow, j->w);
            int32_t size = (int32_t)((h1 - h0) * (w1 - w0));
            float m = j->ratio / (float)size;
            float inv_rest = 1.0f / m;
            qp.inv = 1.0f / (1.0f / m); /* the vector block's quantize_fbgemm */
            uint8_t *y = j->y + (r * j->ow + ow) * j->c;
            for (int64_t c0 = 0; c0 < j->c; c0 += ADA_CHUNK) {
                int64_t nc = j->c - c0 < ADA_CHUNK ? j->c - c0 : ADA_CHUNK;
                for (int64_t k = 0; k < nc; k++)
                    acc[k] = -j->zx * size;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++)
                        j->isa->sum_bytes(acc, j->x + ((n * j->h + ih) * j->w + iw) * j->c + c0, nc, j->x_int8);
                /* as ref_adaptive_avg_pool2d_q's NHWC formula: quantize_fbgemm on the
                 * vector block (in SIMD, ew.h), quantize_val on the rest */
                int64_t nv = c0 < cvec ? (cvec - c0 < nc ? cvec - c0 : nc) : 0;
                for (int64_t k = 0; k < nv; k++)
                    accf[k] = (float)acc[k];
                j->isa->quantize(&qp, accf, y + c0, nv);
                for (int64_t k = nv; k < nc; k++)
                    y[c0 + k] = (uint8_t)quantize_val((float)acc[k], inv_rest, j->zy, j->lo, j->hi, j->rounding);
            }
        }
    }
}

static mera_status adaptive_avg_pool2d_q(const mera_kernel_args *a, const ew_isa *isa, mera_error *err)
{
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    if (!ref_nhwc(a->node))
        return ref_adaptive_avg_pool2d_q(a, err);
    ref_dims4 xd = ref_dims(xt, 1);
    int same_q = xt->q.scale == yt->q.scale && ref_zp(xt) == ref_zp(yt) && xt->dtype == yt->dtype;
    if (same_q && !ref_torch_channels_last(&xd, ref_torch_cl(a->node, 1)))
        return ref_adaptive_avg_pool2d_q(a, err); /* PyTorch's contiguous path: the reference */
    ada_job j = {isa, a->in[0], a->out[0], xt->shape[0], xt->shape[1], xt->shape[2], xt->shape[3], yt->shape[1],
                 yt->shape[2], ref_zp(xt), ref_zp(yt), q_lo(yt->dtype), q_hi(yt->dtype),
                 ref_scale_f(xt) / ref_scale_f(yt), xt->dtype == MERA_DTYPE_INT8, a->rounding};
    /* rows (n, oh): a global pool of one image is one row, one thread */
    mera_parallel_for(a->threads, j.n * j.oh, 1, ada_rows, &j);
    return MERA_OK;
}

/* ---- avg_pool2d: NHWC or NCHW data, either PyTorch path ---------------- */

#define AVG_CHUNK 256  /* channels summed at a time (NHWC data) */
#define AVG_QVEC_CH 16 /* ref/pool.c: the vector block of the channels-last kernel */

typedef struct {
    const ew_isa *isa; /* sum_bytes, and the channels-last vector block's quantize (quantize_lane) */
    const uint8_t *x;
    uint8_t *y;
    ref_dims4 xd, yd;
    int64_t kh, kw, sh, sw, pt, pl, pb, pr, cvec, dov;
    int32_t zx, zy, lo, hi;
    float ratio;   /* channels-last path: (float)in_s / (float)out_s */
    double dratio; /* contiguous path: in_s / out_s in double */
    int cip, torch_cl, x_int8;
    mera_rounding rounding;
} avg_job;

typedef struct {
    int64_t h0, h1, w0, w1, size, divisor;
} avg_win;

/* as ref/pool.c's avg_window_at */
static avg_win avg_window(const avg_job *j, int64_t oh, int64_t ow)
{
    avg_win v;
    int64_t h0 = oh * j->sh - j->pt, w0 = ow * j->sw - j->pl;
    int64_t h1 = h0 + j->kh < j->xd.h + j->pb ? h0 + j->kh : j->xd.h + j->pb;
    int64_t w1 = w0 + j->kw < j->xd.w + j->pr ? w0 + j->kw : j->xd.w + j->pr;
    int64_t pool_size = (h1 - h0) * (w1 - w0);
    v.h0 = h0 > 0 ? h0 : 0;
    v.w0 = w0 > 0 ? w0 : 0;
    v.h1 = h1 < j->xd.h ? h1 : j->xd.h;
    v.w1 = w1 < j->xd.w ? w1 : j->xd.w;
    v.size = (v.h1 - v.h0) * (v.w1 - v.w0);
    if (v.h0 >= v.h1 || v.w0 >= v.w1)
        v.size = 0;
    v.divisor = j->dov ? j->dov : j->cip ? pool_size : v.size;
    return v;
}

/* The quantized mean of channel c from its accumulator, as ref_avg_pool2d_q: the channels-last
 * kernel's vector block or scalar tail, or the contiguous kernel's formula. */
static inline int32_t avg_quantize(const avg_job *j, int64_t c, int32_t acc, int64_t divisor)
{
    if (divisor == 0)
        return j->zy;
    if (j->torch_cl) {
        float m = j->ratio / (float)divisor;
        return c < j->cvec ? quantize_lane((float)acc, m, j->zy, j->lo, j->hi)
                           : quantize_val((float)acc, 1.0f / m, j->zy, j->lo, j->hi, j->rounding);
    }
    float m = (float)(j->dratio / (double)divisor);
    float t = nearbyintf((float)acc * m + (float)j->zy);
    return t < (float)j->lo ? j->lo : t > (float)j->hi ? j->hi : (int32_t)t;
}

/* NHWC data: rows (n, oh); a window's pixels summed a chunk of channels at a time. */
static void avg_rows_nhwc(void *ctx, int64_t r0, int64_t r1)
{
    const avg_job *j = ctx;
    int32_t acc[AVG_CHUNK];
    float accf[AVG_CHUNK];
    const int64_t C = j->xd.c;
    ew_convert_params qp = {.zo = j->zy, .lo = j->lo, .hi = j->hi, .y_int8 = j->lo < 0,
                            .rounding = MERA_ROUNDING_ZP_AFTER_ROUNDING}; /* quantize_lane in either mode */
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / j->yd.h, oh = r % j->yd.h;
        for (int64_t ow = 0; ow < j->yd.w; ow++) {
            avg_win v = avg_window(j, oh, ow);
            uint8_t *y = j->y + (r * j->yd.w + ow) * C;
            for (int64_t c0 = 0; c0 < C; c0 += AVG_CHUNK) {
                int64_t nc = C - c0 < AVG_CHUNK ? C - c0 : AVG_CHUNK;
                for (int64_t k = 0; k < nc; k++)
                    acc[k] = -j->zx * (int32_t)v.size;
                for (int64_t ih = v.h0; ih < v.h1 && v.size; ih++)
                    for (int64_t iw = v.w0; iw < v.w1; iw++)
                        j->isa->sum_bytes(acc, j->x + ((n * j->xd.h + ih) * j->xd.w + iw) * C + c0, nc, j->x_int8);
                /* the vector block of the channels-last kernel: quantize_lane with the
                 * multiplier as inverse scale, in SIMD (ew.h) */
                int64_t nv = 0;
                if (j->torch_cl && v.divisor != 0 && c0 < j->cvec) {
                    nv = j->cvec - c0 < nc ? j->cvec - c0 : nc;
                    qp.inv = j->ratio / (float)v.divisor;
                    for (int64_t k = 0; k < nv; k++)
                        accf[k] = (float)acc[k];
                    j->isa->quantize(&qp, accf, y + c0, nv);
                }
                for (int64_t k = nv; k < nc; k++)
                    y[c0 + k] = (uint8_t)avg_quantize(j, c0 + k, acc[k], v.divisor);
            }
        }
    }
}

/* NCHW data: rows (n, c, oh) of one plane; a window summed row by row. */
static void avg_rows_nchw(void *ctx, int64_t r0, int64_t r1)
{
    const avg_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        int64_t plane = r / j->yd.h, oh = r % j->yd.h, c = plane % j->xd.c;
        const uint8_t *xp = j->x + plane * j->xd.h * j->xd.w;
        uint8_t *y = j->y + r * j->yd.w;
        for (int64_t ow = 0; ow < j->yd.w; ow++) {
            avg_win v = avg_window(j, oh, ow);
            int32_t acc = -j->zx * (int32_t)v.size;
            for (int64_t ih = v.h0; ih < v.h1 && v.size; ih++) {
                const uint8_t *x = xp + ih * j->xd.w;
                if (j->x_int8)
                    for (int64_t iw = v.w0; iw < v.w1; iw++)
                        acc += (int8_t)x[iw];
                else
                    for (int64_t iw = v.w0; iw < v.w1; iw++)
                        acc += x[iw];
            }
            y[ow] = (uint8_t)avg_quantize(j, c, acc, v.divisor);
        }
    }
}

static mera_status avg_pool2d_q(const mera_kernel_args *a, const ew_isa *isa, mera_error *err)
{
    (void)err;
    const mera_node *node = a->node;
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    const int64_t *k = ref_ints(node, "kernel"), *s = ref_ints(node, "strides"), *p = ref_ints(node, "padding");
    int nhwc = ref_nhwc(node);
    avg_job j = {.isa = isa, .x = a->in[0], .y = a->out[0], .xd = ref_dims(xt, nhwc), .yd = ref_dims(yt, nhwc),
                 .kh = k[0], .kw = k[1], .sh = s[0], .sw = s[1], .pt = p[0], .pl = p[1], .pb = p[2], .pr = p[3],
                 .dov = mera_attr_int(node, "divisor_override"), .zx = ref_zp(xt), .zy = ref_zp(yt),
                 .lo = q_lo(yt->dtype), .hi = q_hi(yt->dtype), .ratio = ref_scale_f(xt) / ref_scale_f(yt),
                 .dratio = xt->q.scale / yt->q.scale, .cip = mera_attr_int(node, "count_include_pad") != 0,
                 .x_int8 = xt->dtype == MERA_DTYPE_INT8, .rounding = a->rounding};
    j.cvec = j.yd.c / AVG_QVEC_CH * AVG_QVEC_CH;
    j.torch_cl = ref_torch_channels_last(&j.xd, ref_torch_cl(node, nhwc));
    int64_t per_row = j.yd.w * (nhwc ? j.yd.c : 1) * j.kh * j.kw;
    if (nhwc)
        mera_parallel_for(a->threads, j.yd.n * j.yd.h, 1 + 65536 / (per_row + 1), avg_rows_nhwc, &j);
    else
        mera_parallel_for(a->threads, j.yd.n * j.yd.c * j.yd.h, 1 + 65536 / (per_row + 1), avg_rows_nchw, &j);
    return MERA_OK;
}

#define POOL_ENTRIES(suffix, isa)                                                                   \
    mera_status fast_max_pool2d_q_##suffix(const mera_kernel_args *a, mera_error *err)              \
    {                                                                                               \
        return max_pool2d_q(a, &(isa), err);                                                        \
    }                                                                                               \
    mera_status fast_avg_pool2d_q_##suffix(const mera_kernel_args *a, mera_error *err)              \
    {                                                                                               \
        return avg_pool2d_q(a, &(isa), err);                                                        \
    }                                                                                               \
    mera_status fast_adaptive_avg_pool2d_q_##suffix(const mera_kernel_args *a, mera_error *err)     \
    {                                                                                               \
        return adaptive_avg_pool2d_q(a, &(isa), err);                                               \
    }

POOL_ENTRIES(c, ew_isa_c)
#if defined(__x86_64__)
POOL_ENTRIES(avx2, ew_isa_avx2)
POOL_ENTRIES(avx512, ew_isa_avx512)
#endif
