/* Fast quantized mean over the spatial axes of a rank-4 tensor (the global
 * average of ShuffleNet's x.mean([2, 3])): byte for byte ref_mean_q
 * (ref/reduce.c, docs/numerics.md §7), in plain C for every CPU, without
 * the reference's float copy of the input, its permuted copy, or any
 * allocation. Two of the reference's paths:
 *
 * - PyTorch's qmean_inner_dim fast path (a tensor contiguous in PyTorch,
 *   NCHW data, same parameters): integer sums of each plane, then
 *   rne(f32(sum) / N).
 * - PyTorch's channels-last tensors (NHWC data, or NCHW data PyTorch held
 *   channels-last, e.g. every conv output of a model imported NCHW):
 *   dequantize, at::mean's float sum in cascade_sum's order, divide,
 *   quantize_per_tensor. In PyTorch's memory order the input is, per
 *   image, H*W rows of C columns; cascade_sum gives the columns of whole
 *   blocks (32 when C >= 8, else 4) a multi_row_sum each and the others a
 *   4-way interleaved row_sum, and every column is summed on its own, so
 *   the sums are formed here column block by column block, in the same
 *   order per column, reading our buffer in place through its strides.
 *
 * Everything else (other axes, other ranks, H*W == 1, C == 1, a contiguous
 * PyTorch tensor held NHWC or changing parameters) runs the reference.
 * Column blocks (and planes) are split across the worker pool: each output
 * is computed by one range from the same inputs, so the thread count never
 * changes a byte. */
#include <math.h>
#include <string.h>

#include "kernels/fast/fast.h"
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "util/threadpool.h"

#define SUM_LEVELS 4 /* multi_row_sum's num_levels (ref/reduce.c) */
#define BLOCK 32     /* the widest column block: 4 * Vectorized<float>::size() */

typedef struct {
    const uint8_t *x;
    void *y;
    mera_dtype xdt, ydt;
    int64_t n, rows, cols;   /* images, H*W, C */
    int64_t sn, rs, cs;      /* strides (bytes) of an image, a row (pixel), a column (channel) */
    int64_t block;           /* columns per multi_row_sum (32 or 4) */
    int64_t full;            /* columns in whole blocks; the rest take row_sum */
    int64_t items_per_image; /* whole blocks + the rest, one each */
    float table[256];        /* dequant_val of every byte */
    float count, inv;
    int32_t zy, lo, hi;
    mera_rounding rounding;
} mean_job;

static int64_t ceil_log2(int64_t x) /* c10::utils::CeilLog2 */
{
    if (x <= 2)
        return 1;
    int64_t r = 0;
    for (uint64_t v = (uint64_t)x - 1; v; v >>= 1)
        r++;
    return r;
}

/* multi_row_sum of ref/reduce.c over ncols (<= BLOCK) columns: element (i, k)
 * is the dequantized byte at p[i * rs + k * cs]. */
static void multi_row_sum_q(const mean_job *j, const uint8_t *p, int64_t rs, int64_t cs, int ncols, int64_t size,
                            float *out)
{
    int64_t level_power = ceil_log2(size) / SUM_LEVELS;
    level_power = level_power > 4 ? level_power : 4;
    int64_t level_step = (int64_t)1 << level_power, level_mask = level_step - 1;
    float acc[SUM_LEVELS][BLOCK];
    memset(acc, 0, sizeof acc);
    int64_t i = 0;
    while (i + level_step <= size) {
        for (int64_t s = 0; s < level_step; s++, i++) {
            const uint8_t *r = p + i * rs;
            for (int k = 0; k < ncols; k++)
                acc[0][k] += j->table[r[k * cs]];
        }
        for (int l = 1; l < SUM_LEVELS; l++) {
            for (int k = 0; k < ncols; k++) {
                acc[l][k] += acc[l - 1][k];
                acc[l - 1][k] = 0.0f;
            }
            if ((i & (level_mask << (l * level_power))) != 0)
                break;
        }
    }
    for (; i < size; i++) {
        const uint8_t *r = p + i * rs;
        for (int k = 0; k < ncols; k++)
            acc[0][k] += j->table[r[k * cs]];
    }
    for (int l = 1; l < SUM_LEVELS; l++)
        for (int k = 0; k < ncols; k++)
            acc[0][k] += acc[l][k];
    memcpy(out, acc[0], (size_t)ncols * sizeof *out);
}

/* row_sum of ref/reduce.c: one column of size rows (stride rs), interleaved 4 ways. */
static float row_sum_q(const mean_job *j, const uint8_t *p, int64_t rs, int64_t size)
{
    int64_t n4 = size / 4;
    float s[4];
    multi_row_sum_q(j, p, 4 * rs, rs, 4, n4, s);
    for (int64_t i = n4 * 4; i < size; i++)
        s[0] += j->table[p[i * rs]];
    return s[0] + s[1] + s[2] + s[3];
}

static void store(const mean_job *j, int64_t at, float sum)
{
    float y = (0.0f + sum) / j->count; /* sum_out into zeros, then div_ */
    q_store(j->y, j->ydt, at, quantize_fbgemm(y, j->inv, j->zy, j->lo, j->hi, j->rounding));
}

/* items: (image, whole block) then (image, the rest) */
static void mean_items(void *ctx, int64_t i0, int64_t i1)
{
    const mean_job *j = ctx;
    float sums[BLOCK];
    for (int64_t it = i0; it < i1; it++) {
        int64_t n = it / j->items_per_image, b = it % j->items_per_image, c0 = b * j->block;
        const uint8_t *img = j->x + n * j->sn;
        if (c0 < j->full) {
            multi_row_sum_q(j, img + c0 * j->cs, j->rs, j->cs, (int)j->block, j->rows, sums);
            for (int64_t k = 0; k < j->block; k++)
                store(j, n * j->cols + c0 + k, sums[k]);
        } else {
            for (int64_t c = j->full; c < j->cols; c++)
                store(j, n * j->cols + c, row_sum_q(j, img + c * j->cs, j->rs, j->rows));
        }
    }
}

typedef struct {
    const uint8_t *x;
    void *y;
    mera_dtype xdt, ydt;
    int64_t plane;
    float count;
} plane_job;

static void mean_planes(void *ctx, int64_t p0, int64_t p1)
{
    const plane_job *j = ctx;
    for (int64_t p = p0; p < p1; p++) {
        const uint8_t *x = j->x + p * j->plane;
        int64_t sum = 0;
        if (j->xdt == MERA_DTYPE_UINT8)
            for (int64_t i = 0; i < j->plane; i++)
                sum += x[i];
        else
            for (int64_t i = 0; i < j->plane; i++)
                sum += (int8_t)x[i];
        q_store(j->y, j->ydt, p, (int32_t)nearbyintf((float)sum / j->count));
    }
}

mera_status fast_mean_q(const mera_kernel_args *a, mera_error *err)
{
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    if (xt->rank != 4)
        return ref_mean_q(a, err);
    int nhwc = xt->layout == MERA_LAYOUT_NHWC; /* as ref/reduce.c's mean_geometry */
    int reduce[4] = {0, 0, 0, 0};
    const mera_attr *axes = mera_node_attr(a->node, "axes");
    if (axes->count != 2)
        return ref_mean_q(a, err);
    for (int i = 0; i < axes->count; i++)
        reduce[axes->ints[i] < 0 ? axes->ints[i] + 4 : axes->ints[i]] = 1;
    int hax = nhwc ? 1 : 2, cax = nhwc ? 3 : 1;
    if (reduce[0] || reduce[cax] || !reduce[hax] || !reduce[hax + 1])
        return ref_mean_q(a, err);
    int64_t N = xt->shape[0], C = xt->shape[cax], H = xt->shape[hax], W = xt->shape[hax + 1];
    int torch_cl = ref_torch_cl(a->node, nhwc);
    int contiguous = !torch_cl || C == 1 || (H == 1 && W == 1);
    int same_q = xt->q.scale == yt->q.scale && xt->q.zero_point == yt->q.zero_point && xt->dtype == yt->dtype;
    if (contiguous && same_q) { /* qmean_inner_dim: planes of NCHW data */
        if (nhwc)
            return ref_mean_q(a, err);
        plane_job p = {a->in[0], a->out[0], xt->dtype, yt->dtype, H * W, (float)(H * W)};
        mera_parallel_for(a->threads, N * C, 1 + 65536 / (H * W), mean_planes, &p);
        return MERA_OK;
    }
    if (!torch_cl || C < 2 || H * W < 2)
        return ref_mean_q(a, err);
    mean_job j;
    memset(&j, 0, sizeof j);
    j.x = a->in[0];
    j.y = a->out[0];
    j.xdt = xt->dtype;
    j.ydt = yt->dtype;
    j.n = N;
    j.rows = H * W;
    j.cols = C;
    j.sn = H * W * C;
    j.rs = nhwc ? C : 1;
    j.cs = nhwc ? 1 : H * W;
    j.block = C >= 8 ? BLOCK : 4; /* vectorized_outer_sum, else scalar_outer_sum */
    j.full = C / j.block * j.block;
    j.items_per_image = j.full / j.block + (j.full < C);
    float s = ref_scale_f(xt);
    int32_t zx = ref_zp(xt);
    for (int b = 0; b < 256; b++)
        j.table[b] = dequant_val(xt->dtype == MERA_DTYPE_INT8 ? (int8_t)b : b, s, zx);
    j.count = (float)(H * W);
    j.inv = 1.0f / ref_scale_f(yt);
    j.zy = ref_zp(yt);
    j.lo = q_lo(yt->dtype);
    j.hi = q_hi(yt->dtype);
    j.rounding = a->rounding;
    mera_parallel_for(a->threads, N * j.items_per_image, 1 + 16384 / (H * W * j.block), mean_items, &j);
    return MERA_OK;
}
