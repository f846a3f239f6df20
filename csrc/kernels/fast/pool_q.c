/* Fast quantized max_pool2d: NHWC data, the integer maximum over the
 * window taken a whole pixel of channels at a time (ew.h's max_bytes),
 * output rows split across the worker pool. The window is the
 * reference's (ref/pool.c: max_window); NCHW data goes to the reference
 * kernel. The maximum of integers has no rounding, so PyTorch's memory
 * format does not matter. */
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
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / j->oh, oh = r % j->oh, h0, h1;
        window(oh, j->sh, j->pt, j->kh, j->dh, j->h, &h0, &h1);
        for (int64_t ow = 0; ow < j->ow; ow++) {
            int64_t w0, w1;
            window(ow, j->sw, j->pl, j->kw, j->dw, j->w, &w0, &w1);
            uint8_t *y = j->y + (r * j->ow + ow) * j->c;
            memset(y, lowest, (size_t)j->c);
            for (int64_t ih = h0; ih < h1; ih += j->dh)
                for (int64_t iw = w0; iw < w1; iw += j->dw)
                    j->isa->max_bytes(y, j->x + ((n * j->h + ih) * j->w + iw) * j->c, j->c, j->is_int8);
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
    const uint8_t *x;
    uint8_t *y;
    int64_t n, h, w, c, oh, ow;
    int32_t zx, zy, lo, hi;
    float ratio; /* (float)in_s / (float)out_s */
    int x_int8;
} ada_job;

/* PyTorch's adaptive windows, as ref/pool.c's ada_start and ada_end */
static int64_t ada_start(int64_t o, int64_t out, int64_t in) { return o * in / out; }
static int64_t ada_end(int64_t o, int64_t out, int64_t in) { return ((o + 1) * in + out - 1) / out; }

static void ada_rows(void *ctx, int64_t r0, int64_t r1)
{
    const ada_job *j = ctx;
    int32_t acc[ADA_CHUNK];
    const int64_t cvec = j->c / 8 * 8; /* ref: ADA_QVEC_CH channels per vector block */
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / j->oh, oh = r % j->oh;
        int64_t h0 = ada_start(oh, j->oh, j->h), h1 = ada_end(oh, j->oh, j->h);
        for (int64_t ow = 0; ow < j->ow; ow++) {
            int64_t w0 = ada_start(ow, j->ow, j->w), w1 = ada_end(ow, j->ow, j->w);
            int32_t size = (int32_t)((h1 - h0) * (w1 - w0));
            float m = j->ratio / (float)size;
            float inv_vec = 1.0f / (1.0f / m), inv_rest = 1.0f / m;
            uint8_t *y = j->y + (r * j->ow + ow) * j->c;
            for (int64_t c0 = 0; c0 < j->c; c0 += ADA_CHUNK) {
                int64_t nc = j->c - c0 < ADA_CHUNK ? j->c - c0 : ADA_CHUNK;
                for (int64_t k = 0; k < nc; k++)
                    acc[k] = -j->zx * size;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++) {
                        const uint8_t *x = j->x + ((n * j->h + ih) * j->w + iw) * j->c + c0;
                        if (j->x_int8)
                            for (int64_t k = 0; k < nc; k++)
                                acc[k] += (int8_t)x[k];
                        else
                            for (int64_t k = 0; k < nc; k++)
                                acc[k] += x[k];
                    }
                for (int64_t k = 0; k < nc; k++) /* as ref_adaptive_avg_pool2d_q's NHWC formula */
                    y[c0 + k] = (uint8_t)(c0 + k < cvec ? quantize_fbgemm((float)acc[k], inv_vec, j->zy, j->lo, j->hi, FAST_EW_ROUNDING)
                                                        : quantize_val((float)acc[k], inv_rest, j->zy, j->lo, j->hi, FAST_EW_ROUNDING));
            }
        }
    }
}

mera_status fast_adaptive_avg_pool2d_q(const mera_kernel_args *a, mera_error *err)
{
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    if (!ref_nhwc(a->node))
        return ref_adaptive_avg_pool2d_q(a, err);
    ref_dims4 xd = ref_dims(xt, 1);
    int same_q = xt->q.scale == yt->q.scale && ref_zp(xt) == ref_zp(yt) && xt->dtype == yt->dtype;
    if (same_q && !ref_torch_channels_last(&xd, ref_torch_cl(a->node, 1)))
        return ref_adaptive_avg_pool2d_q(a, err); /* PyTorch's contiguous path: the reference */
    ada_job j = {a->in[0], a->out[0], xt->shape[0], xt->shape[1], xt->shape[2], xt->shape[3], yt->shape[1],
                 yt->shape[2], ref_zp(xt), ref_zp(yt), q_lo(yt->dtype), q_hi(yt->dtype),
                 ref_scale_f(xt) / ref_scale_f(yt), xt->dtype == MERA_DTYPE_INT8};
    mera_parallel_for(a->threads, j.n * j.oh, 1, ada_rows, &j);
    return MERA_OK;
}

#define POOL_ENTRIES(suffix, isa)                                                                   \
    mera_status fast_max_pool2d_q_##suffix(const mera_kernel_args *a, mera_error *err)              \
    {                                                                                               \
        return max_pool2d_q(a, &(isa), err);                                                        \
    }

POOL_ENTRIES(c, ew_isa_c)
#if defined(__x86_64__)
POOL_ENTRIES(avx2, ew_isa_avx2)
POOL_ENTRIES(avx512, ew_isa_avx512)
#endif
