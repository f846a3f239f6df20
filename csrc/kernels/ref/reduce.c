/* Reductions: mean over axes, softmax over one axis. */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* ---- mean -------------------------------------------------------------- */

typedef struct {
    int rank;
    int64_t shape[MERA_MAX_RANK];
    int reduce[MERA_MAX_RANK];
    int64_t count;           /* elements averaged into each output */
    int tdim[MERA_MAX_RANK]; /* our axes in PyTorch's logical order (NCHW for a 4-D NHWC tensor) */
    int perm[MERA_MAX_RANK]; /* our axes in PyTorch's memory order, outermost first */
    int permuted;            /* that memory order is not our buffer's */
    int inner_fast;          /* PyTorch's qmean_inner_dim fast path applies */
} mean_geom;

/* mean has no layout attribute: a 4-D input tagged NHWC is NHWC data, and
 * the torch_memory_format attribute says how PyTorch held the tensor. */
static mean_geom mean_geometry(const mera_kernel_args *a)
{
    const mera_type *t = a->in_types[0];
    const mera_attr *axes = mera_node_attr(a->node, "axes");
    mean_geom g;
    g.rank = t->rank;
    g.count = 1;
    for (int i = 0; i < t->rank; i++) {
        g.shape[i] = t->shape[i];
        g.reduce[i] = 0;
    }
    for (int i = 0; i < axes->count; i++) {
        int64_t ax = axes->ints[i] < 0 ? axes->ints[i] + t->rank : axes->ints[i];
        g.reduce[ax] = 1;
    }
    for (int i = 0; i < t->rank; i++)
        if (g.reduce[i])
            g.count *= g.shape[i];
    int data_nhwc = t->rank == 4 && t->layout == MERA_LAYOUT_NHWC;
    int torch_cl = t->rank == 4 && ref_torch_cl(a->node, data_nhwc);
    for (int k = 0; k < t->rank; k++)
        g.tdim[k] = data_nhwc ? (int[]){0, 3, 1, 2}[k] : k;
    g.permuted = ref_torch_order(t->rank, data_nhwc, torch_cl, g.perm);
    /* mean_out_quantized_cpu's fast path: self.is_contiguous() (a
     * channels-last tensor is, when C == 1 or H == W == 1) and the reduced
     * dims are the last ones in logical order (is_innnermost_dim). */
    int contiguous = !torch_cl || g.shape[g.tdim[1]] == 1 || (g.shape[g.tdim[2]] == 1 && g.shape[g.tdim[3]] == 1);
    int nred = axes->count, innermost = 1;
    for (int k = t->rank - nred; k < t->rank; k++)
        innermost = innermost && k >= 0 && g.reduce[g.tdim[k]];
    g.inner_fast = contiguous && innermost;
    return g;
}

/* Output slot of input element i: the row-major index of its kept axes. */
static int64_t mean_slot(const mean_geom *g, int64_t i)
{
    int64_t slot = 0, mul = 1;
    for (int k = g->rank - 1; k >= 0; k--) {
        int64_t idx = i % g->shape[k];
        i /= g->shape[k];
        if (!g->reduce[k]) {
            slot += idx * mul;
            mul *= g->shape[k];
        }
    }
    return slot;
}

/* ---- torch's float sum, order and all ----------------------------------
 *
 * The quantized mean of channels-last data goes through at::mean on float,
 * and ties of the final rounding make the last bit of that float matter, so
 * the sum is formed in exactly the order PyTorch's cascade_sum
 * (aten/src/ATen/native/cpu/SumKernel.cpp, AVX2 build: 8 float lanes) forms
 * it for a single thread:
 *   1. TensorIterator orders the dimensions: reduced ones first, then by
 *      ascending stride (reorder_dimensions), and coalesces adjacent ones
 *      (coalesce_dimensions);
 *   2. each (size0, size1) slab goes to one of four loops, chosen by which
 *      dimension is reduced and contiguous;
 *   3. those loops add in a cascade of 4 levels of 16+ elements
 *      (multi_row_sum), optionally with 4-way interleaving (row_sum).
 * Lanes of a Vectorized<float> are independent columns here. Strides are in
 * elements; sizeof(float) in the original becomes 1. */

#define SUM_VEC 8    /* Vectorized<float>::size() in the AVX2 build */
#define SUM_LEVELS 4 /* multi_row_sum's num_levels */
#define SUM_MAX_COLS 32

static int64_t ceil_log2(int64_t x) /* c10::utils::CeilLog2 */
{
    if (x <= 2)
        return 1;
    int64_t r = 0;
    for (uint64_t v = (uint64_t)x - 1; v; v >>= 1)
        r++;
    return r;
}

/* multi_row_sum: ncols independent sums of size rows; element (i, k) is
 * x[i * row_stride + col[k]]. */
static void multi_row_sum(const float *x, int64_t row_stride, const int64_t *col, int ncols, int64_t size,
                          float *out)
{
    int64_t level_power = ceil_log2(size) / SUM_LEVELS;
    level_power = level_power > 4 ? level_power : 4;
    int64_t level_step = (int64_t)1 << level_power, level_mask = level_step - 1;
    float acc[SUM_LEVELS][SUM_MAX_COLS] = {{0}};
    int64_t i = 0;
    while (i + level_step <= size) {
        for (int64_t j = 0; j < level_step; j++, i++)
            for (int k = 0; k < ncols; k++)
                acc[0][k] += x[i * row_stride + col[k]];
        for (int j = 1; j < SUM_LEVELS; j++) {
            for (int k = 0; k < ncols; k++) {
                acc[j][k] += acc[j - 1][k];
                acc[j - 1][k] = 0.0f;
            }
            if ((i & (level_mask << (j * level_power))) != 0)
                break;
        }
    }
    for (; i < size; i++)
        for (int k = 0; k < ncols; k++)
            acc[0][k] += x[i * row_stride + col[k]];
    for (int j = 1; j < SUM_LEVELS; j++)
        for (int k = 0; k < ncols; k++)
            acc[0][k] += acc[j][k];
    for (int k = 0; k < ncols; k++)
        out[k] = acc[0][k];
}

/* row_sum: one sum of size elements x[i * stride], interleaved 4 ways. */
static float row_sum(const float *x, int64_t stride, int64_t size)
{
    int64_t col[4] = {0, stride, 2 * stride, 3 * stride}, n4 = size / 4;
    float p[4];
    multi_row_sum(x, 4 * stride, col, 4, n4, p);
    for (int64_t i = n4 * 4; i < size; i++)
        p[0] += x[i * stride];
    return p[0] + p[1] + p[2] + p[3];
}

/* One loop2d call of cascade_sum. sin/sout: input and output strides of
 * dims 0 and 1; results are added into y (CastStoreAccumulate). */
static void cascade_slab(const float *x, float *y, int64_t size0, int64_t size1, int64_t sin0, int64_t sin1,
                         int64_t sout0, int64_t sout1)
{
    if (sout0 != 0 && sout1 == 0) { /* move the reduction to dim 0 */
        int64_t t;
        t = sin0; sin0 = sin1; sin1 = t;
        t = sout0; sout0 = sout1; sout1 = t;
        t = size0; size0 = size1; size1 = t;
    }
    if (sout0 != 0) { /* nothing reduced here: y += x elementwise */
        for (int64_t j = 0; j < size1; j++)
            for (int64_t i = 0; i < size0; i++)
                y[j * sout1 + i * sout0] += x[j * sin1 + i * sin0];
        return;
    }
    int64_t col[SUM_MAX_COLS];
    float sums[SUM_MAX_COLS];
    if (sin0 == 1 && size0 >= SUM_VEC) { /* vectorized_inner_sum */
        int64_t nvec = size0 / SUM_VEC;
        for (int64_t j = 0; j < size1; j++) {
            const float *r = x + j * sin1;
            float acc = 0.0f;
            for (int64_t k = nvec * SUM_VEC; k < size0; k++)
                acc += r[k];
            for (int l = 0; l < SUM_VEC; l++)
                acc += row_sum(r + l, SUM_VEC, nvec);
            y[j * sout1] += acc;
        }
    } else if (sin1 == 1 && size1 >= SUM_VEC) { /* vectorized_outer_sum */
        int64_t j = 0;
        for (; j + 4 * SUM_VEC <= size1; j += 4 * SUM_VEC) {
            for (int k = 0; k < 4 * SUM_VEC; k++)
                col[k] = j + k;
            multi_row_sum(x, sin0, col, 4 * SUM_VEC, size0, sums);
            for (int k = 0; k < 4 * SUM_VEC; k++)
                y[(j + k) * sout1] += sums[k];
        }
        for (; j < size1; j++) /* 8-wide row_sum, then scalar row_sum: the same per lane */
            y[j * sout1] += row_sum(x + j, sin0, size0);
    } else if (sin0 < sin1) { /* scalar_inner_sum */
        for (int64_t j = 0; j < size1; j++)
            y[j * sout1] += row_sum(x + j * sin1, sin0, size0);
    } else { /* scalar_outer_sum */
        int64_t j = 0;
        for (; j + 3 < size1; j += 4) {
            for (int k = 0; k < 4; k++)
                col[k] = (j + k) * sin1;
            multi_row_sum(x, sin0, col, 4, size0, sums);
            for (int k = 0; k < 4; k++)
                y[(j + k) * sout1] += sums[k];
        }
        for (; j < size1; j++)
            y[j * sout1] += row_sum(x + j * sin1, sin0, size0);
    }
}

/* at::sum over the reduced axes of g; x is row-major. tdim lists our axes
 * in PyTorch's logical order (NCHW for an NHWC tensor, which PyTorch holds
 * as a channels-last NCHW tensor): PyTorch allocates the result contiguous
 * in that order, and the result's strides steer the summation order. y is
 * written in that order too; the caller permutes it back. */
static void torch_sum(const mean_geom *g, const int *tdim, const float *x, float *y, int64_t nout)
{
    int rank = g->rank, perm[MERA_MAX_RANK];
    int64_t sin[MERA_MAX_RANK], sout[MERA_MAX_RANK], s = 1, so = 1;
    for (int d = rank - 1; d >= 0; d--) {
        sin[d] = s;
        s *= g->shape[d];
    }
    for (int k = rank - 1; k >= 0; k--) {
        int d = tdim[k];
        sout[d] = g->reduce[d] ? 0 : so;
        so *= g->reduce[d] ? 1 : g->shape[d];
    }
    /* reorder_dimensions: start from the logical order reversed, insertion
     * sort with should_swap over (output, input) */
    for (int k = 0; k < rank; k++)
        perm[k] = tdim[rank - 1 - k];
    for (int i = 1; i < rank; i++) {
        int d1 = i;
        for (int d0 = i - 1; d0 >= 0; d0--) {
            int a = perm[d0], b = perm[d1], cmp = 0;
            if ((sout[a] == 0) != (sout[b] == 0)) {
                cmp = sout[b] == 0 ? 1 : -1; /* reduced dims to the front */
            } else {
                const int64_t *st[2] = {sout, sin};
                for (int o = 0; o < 2 && !cmp; o++) {
                    if (st[o][a] == 0 || st[o][b] == 0)
                        continue;
                    if (st[o][a] != st[o][b])
                        cmp = st[o][a] < st[o][b] ? -1 : 1;
                    else if (g->shape[a] > g->shape[b])
                        cmp = 1;
                }
            }
            if (cmp > 0) {
                perm[d0] = b;
                perm[d1] = a;
                d1 = d0;
            } else if (cmp < 0) {
                break;
            }
        }
    }
    int64_t shape[MERA_MAX_RANK], ci[MERA_MAX_RANK], co[MERA_MAX_RANK];
    for (int k = 0; k < rank; k++) {
        shape[k] = g->shape[perm[k]];
        ci[k] = sin[perm[k]];
        co[k] = sout[perm[k]];
    }
    int nd = rank > 0 ? 1 : 0; /* coalesce_dimensions */
    for (int d = 1; d < rank; d++) {
        int p = nd - 1;
        if (shape[p] == 1 || shape[d] == 1 ||
            (shape[p] * ci[p] == ci[d] && shape[p] * co[p] == co[d])) {
            if (shape[p] == 1) {
                ci[p] = ci[d];
                co[p] = co[d];
            }
            shape[p] *= shape[d];
        } else {
            shape[nd] = shape[d];
            ci[nd] = ci[d];
            co[nd] = co[d];
            nd++;
        }
    }
    for (int64_t j = 0; j < nout; j++)
        y[j] = 0.0f;
    if (nd <= 1) {
        cascade_slab(x, y, nd ? shape[0] : 1, 1, nd ? ci[0] : 0, 0, nd ? co[0] : 0, 0);
        return;
    }
    /* serial_for_each: one slab per index of dims 2.., dim 2 fastest */
    int64_t idx[MERA_MAX_RANK] = {0};
    for (;;) {
        int64_t oi = 0, oo = 0;
        for (int k = 2; k < nd; k++) {
            oi += idx[k] * ci[k];
            oo += idx[k] * co[k];
        }
        cascade_slab(x + oi, y + oo, shape[0], shape[1], ci[0], ci[1], co[0], co[1]);
        int k = 2;
        while (k < nd && ++idx[k] == shape[k])
            idx[k++] = 0;
        if (k >= nd)
            break;
    }
}

/* at::mean on CPU float: sum_out(...).div_(N), the division in float. The
 * sum runs over a copy in PyTorch's memory order (when that is not ours),
 * and its result comes out in PyTorch's logical order; both are mapped
 * back to our axes. */
static mera_status mean_float(const mera_kernel_args *a, const mean_geom *g, const float *x, float *y,
                              mera_error *err)
{
    int64_t nout = mera_type_numel(a->out_types[0]), nin = mera_type_numel(a->in_types[0]);
    int rank = g->rank;
    mean_geom p = *g; /* the geometry in PyTorch's memory order */
    int tdim[MERA_MAX_RANK];
    for (int k = 0; k < rank; k++) {
        p.shape[k] = g->shape[g->perm[k]];
        p.reduce[k] = g->reduce[g->perm[k]];
    }
    for (int j = 0; j < rank; j++) /* logical order, as positions in memory order */
        for (int k = 0; k < rank; k++)
            if (g->perm[k] == g->tdim[j])
                tdim[j] = k;
    float *xp = g->permuted ? ref_alloc(nin, sizeof *xp) : (float *)x;
    float *tmp = ref_alloc(nout, sizeof *tmp);
    if (!xp || !tmp) {
        if (g->permuted)
            free(xp);
        free(tmp);
        return ref_nomem(err, a->node);
    }
    if (g->permuted) {
        int64_t ps[MERA_MAX_RANK], st = 1;
        for (int k = rank - 1; k >= 0; k--) {
            ps[k] = st;
            st *= p.shape[k];
        }
        for (int64_t i = 0; i < nin; i++) {
            int64_t rem = i, off = 0, coord[MERA_MAX_RANK];
            for (int d = rank - 1; d >= 0; d--) {
                coord[d] = rem % g->shape[d];
                rem /= g->shape[d];
            }
            for (int k = 0; k < rank; k++)
                off += coord[g->perm[k]] * ps[k];
            xp[off] = x[i];
        }
    }
    torch_sum(&p, tdim, xp, tmp, nout);
    /* tmp holds the kept axes row-major in logical order; y in ours */
    int64_t lst[MERA_MAX_RANK], st = 1;
    for (int j = rank - 1; j >= 0; j--) {
        int d = g->tdim[j];
        lst[d] = g->reduce[d] ? 0 : st;
        st *= g->reduce[d] ? 1 : g->shape[d];
    }
    for (int64_t j = 0; j < nout; j++) {
        int64_t rem = j, off = 0;
        for (int d = rank - 1; d >= 0; d--) {
            if (g->reduce[d])
                continue;
            off += rem % g->shape[d] * lst[d];
            rem /= g->shape[d];
        }
        y[j] = tmp[off] / (float)g->count;
    }
    if (g->permuted)
        free(xp);
    free(tmp);
    return MERA_OK;
}

REF_KERNEL(ref_mean_f32)
{
    mean_geom g = mean_geometry(a);
    return mean_float(a, &g, a->in[0], a->out[0], err);
}

/* Quantized torch.mean (ReduceOps.cpp mean_out_quantized_cpu):
 * - when the tensor is contiguous in PyTorch and the reduced axes are the
 *   innermost ones (NCHW data, axes [2,3]), qmean_inner_dim_kernel averages
 *   the raw bytes: q = rne((float)sum(q) / N), output parameters = input's;
 * - otherwise (e.g. a channels-last tensor, which NHWC data always is) it
 *   dequantizes, takes the float mean and quantizes with
 *   quantize_per_tensor.
 * A node that changes the parameters takes the second path, which is the
 * one that can rescale. */
REF_KERNEL(ref_mean_q)
{
    mean_geom g = mean_geometry(a);
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    int64_t nout = mera_type_numel(yt), nin = mera_type_numel(xt);
    int same_q = xt->q.scale == yt->q.scale && xt->q.zero_point == yt->q.zero_point && xt->dtype == yt->dtype;
    if (g.inner_fast && same_q) { /* integer sums: their order does not matter */
        int64_t *sum = ref_alloc(nout, sizeof *sum);
        if (!sum)
            return ref_nomem(err, a->node);
        for (int64_t i = 0; i < nin; i++)
            sum[mean_slot(&g, i)] += q_load(a->in[0], xt->dtype, i);
        for (int64_t j = 0; j < nout; j++)
            q_store(a->out[0], yt->dtype, j, (int32_t)nearbyintf((float)sum[j] / (float)g.count));
        free(sum);
        return MERA_OK;
    }
    float *x = ref_alloc(nin, sizeof *x), *y = ref_alloc(nout, sizeof *y);
    if (!x || !y) {
        free(x);
        free(y);
        return ref_nomem(err, a->node);
    }
    float s = ref_scale_f(xt);
    int32_t zx = ref_zp(xt);
    for (int64_t i = 0; i < nin; i++)
        x[i] = dequant_val(q_load(a->in[0], xt->dtype, i), s, zx);
    mera_status st = mean_float(a, &g, x, y, err);
    if (!st) {
        float inv = 1.0f / ref_scale_f(yt);
        int32_t zy = ref_zp(yt), lo = q_lo(yt->dtype), hi = q_hi(yt->dtype);
        for (int64_t j = 0; j < nout; j++)
            q_store(a->out[0], yt->dtype, j, quantize_fbgemm(y[j], inv, zy, lo, hi, a->rounding));
    }
    free(x);
    free(y);
    return st;
}

/* ---- softmax -----------------------------------------------------------
 *
 * PyTorch's float softmax, bit for bit (SoftMaxKernel.cpp; its kernels are
 * registered for AVX512, so AVX512 CPUs run 16 float lanes), single thread:
 * - last axis (_vec_softmax_lastdim), per row:
 *     m = reduce_all(maximum), e = exp(x - m), s = reduce_all(+, e),
 *     y = e * (1 / s)
 * - any other axis (_vec_softmax), even with only size-1 axes after it,
 *   per [outer, axis, inner] column: the first
 *   inner/16*16 columns of each outer row in vector lanes
 *     m = running maximum, e = exp(x - m), s = running sum, y = e / s
 *   and the rest in scalar code, the same formulas with libm's expf.
 * exp is Sleef's expf_u10 (qmath.h). softmax() makes its input contiguous
 * first, so NHWC data is brought to NCHW order for the computation. */

#define SMX_VEC 16

static float vec_max(float a, float b) /* vec::maximum: NaN propagates */
{
    return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
}

/* vec::reduce_all over n floats with 16 lanes: a running vector over the
 * full blocks, the remainder folded into the low lanes, then a lane tree
 * (i ^ 8, i ^ 4, i ^ 2, i ^ 1). Under 16 elements: a running scalar. */
static float reduce_all16(const float *x, int64_t n, int is_max)
{
    float acc = x[0];
    if (n < SMX_VEC) {
        for (int64_t i = 1; i < n; i++)
            acc = is_max ? vec_max(acc, x[i]) : acc + x[i];
        return acc;
    }
    float v[SMX_VEC];
    for (int l = 0; l < SMX_VEC; l++)
        v[l] = x[l];
    int64_t d = SMX_VEC;
    for (; d + SMX_VEC <= n; d += SMX_VEC)
        for (int l = 0; l < SMX_VEC; l++)
            v[l] = is_max ? vec_max(v[l], x[d + l]) : v[l] + x[d + l];
    for (int l = 0; d + l < n; l++)
        v[l] = is_max ? vec_max(v[l], x[d + l]) : v[l] + x[d + l];
    for (int step = SMX_VEC / 2; step >= 1; step /= 2) {
        float t[SMX_VEC];
        for (int l = 0; l < SMX_VEC; l++)
            t[l] = is_max ? vec_max(v[l], v[l ^ step]) : v[l] + v[l ^ step];
        memcpy(v, t, sizeof v);
    }
    return v[0];
}

static void softmax_torch(const float *x, float *y, int64_t outer, int64_t len, int64_t inner, int last)
{
    if (last) {
        for (int64_t o = 0; o < outer; o++) {
            const float *xr = x + o * len;
            float *yr = y + o * len;
            float m = reduce_all16(xr, len, 1);
            for (int64_t i = 0; i < len; i++)
                yr[i] = sleef_expf_u10(xr[i] - m);
            float r = 1.0f / reduce_all16(yr, len, 0);
            for (int64_t i = 0; i < len; i++)
                yr[i] = yr[i] * r;
        }
        return;
    }
    int64_t nvec = inner / SMX_VEC * SMX_VEC;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            const float *xc = x + o * len * inner + in;
            float *yc = y + o * len * inner + in;
            int vec = in < nvec;
            float m = xc[0], s = 0.0f;
            for (int64_t d = 1; d < len; d++)
                m = vec ? vec_max(m, xc[d * inner]) : (m < xc[d * inner] ? xc[d * inner] : m);
            for (int64_t d = 0; d < len; d++) {
                float e = vec ? sleef_expf_u10(xc[d * inner] - m) : expf(xc[d * inner] - m);
                yc[d * inner] = e;
                s = s + e;
            }
            for (int64_t d = 0; d < len; d++)
                yc[d * inner] = yc[d * inner] / s;
        }
}

/* NHWC <-> NCHW copies for the contiguous() PyTorch applies. */
static void nhwc_to_nchw(const float *x, float *y, const int64_t *s, int back)
{
    int64_t n = s[0], h = s[1], w = s[2], c = s[3];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < h; j++)
            for (int64_t k = 0; k < w; k++)
                for (int64_t l = 0; l < c; l++) {
                    int64_t a = ((i * h + j) * w + k) * c + l, b = ((i * c + l) * h + j) * w + k;
                    if (back)
                        y[a] = x[b];
                    else
                        y[b] = x[a];
                }
}

/* softmax of x (laid out as t says) into y, both float. */
static mera_status softmax_float(const mera_kernel_args *a, const float *x, float *y, mera_error *err)
{
    const mera_type *t = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis");
    if (axis < 0)
        axis += t->rank;
    int nhwc = t->rank == 4 && t->layout == MERA_LAYOUT_NHWC;
    int64_t shape[MERA_MAX_RANK] = {0}, n = mera_type_numel(t), outer = 1, inner = 1;
    for (int i = 0; i < t->rank; i++)
        shape[i] = t->shape[i];
    float *xt = NULL, *yt = NULL;
    if (nhwc) {
        int64_t tshape[4] = {t->shape[0], t->shape[3], t->shape[1], t->shape[2]};
        memcpy(shape, tshape, sizeof tshape);
        axis = (int64_t[]){0, 2, 3, 1}[axis];
        xt = ref_alloc(n, sizeof *xt);
        yt = ref_alloc(n, sizeof *yt);
        if (!xt || !yt) {
            free(xt);
            free(yt);
            return ref_nomem(err, a->node);
        }
        nhwc_to_nchw(x, xt, t->shape, 0);
    }
    for (int i = 0; i < t->rank; i++) {
        if (i < axis)
            outer *= shape[i];
        else if (i > axis)
            inner *= shape[i];
    }
    /* the last-axis kernel is chosen by position, not by inner == 1 */
    softmax_torch(nhwc ? xt : x, nhwc ? yt : y, outer, shape[axis], inner, axis == t->rank - 1);
    if (nhwc) {
        nhwc_to_nchw(yt, y, t->shape, 1);
        free(xt);
        free(yt);
    }
    return MERA_OK;
}

REF_KERNEL(ref_softmax_f32)
{
    return softmax_float(a, a->in[0], a->out[0], err);
}

/* quantized::softmax on the fbgemm engine (qsoftmax) has no integer kernel:
 * it dequantizes, runs the float softmax above and quantizes with
 * quantize_per_tensor (fbgemm's legacy lane). */
REF_KERNEL(ref_softmax_q)
{
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    int64_t n = mera_type_numel(xt);
    float *x = ref_alloc(n, sizeof *x), *y = ref_alloc(n, sizeof *y);
    if (!x || !y) {
        free(x);
        free(y);
        return ref_nomem(err, a->node);
    }
    float s = ref_scale_f(xt), inv = 1.0f / ref_scale_f(yt);
    int32_t zx = ref_zp(xt), zy = ref_zp(yt), lo = q_lo(yt->dtype), hi = q_hi(yt->dtype);
    for (int64_t i = 0; i < n; i++)
        x[i] = dequant_val(q_load(a->in[0], xt->dtype, i), s, zx);
    mera_status st = softmax_float(a, x, y, err);
    for (int64_t i = 0; !st && i < n; i++)
        q_store(a->out[0], yt->dtype, i, quantize_fbgemm(y[i], inv, zy, lo, hi, a->rounding));
    free(x);
    free(y);
    return st;
}

/* ---- reduce (ONNX Reduce*) ---------------------------------------------
 *
 * Float, one output per combination of the kept axes; each accumulates its
 * inputs in row-major order of the input, in float:
 *   sum, mean (sum / count), log_sum (logf of the sum), sum_square (x*x), l1 (|x|), l2 (sqrtf of the sum
 *   of squares), prod, max, min (NaN propagates), log_sum_exp (the
 *   max-shifted form: m + logf(sum expf(x - m)); m is the max, or 0 when it
 *   is not finite). */
REF_KERNEL(ref_reduce_f32)
{
    const mera_type *t = a->in_types[0];
    const mera_attr *axes = mera_node_attr(a->node, "axes");
    const char *kind = mera_attr_string(a->node, "kind");
    mean_geom g;
    g.rank = t->rank;
    g.count = 1;
    for (int i = 0; i < t->rank; i++) {
        g.shape[i] = t->shape[i];
        g.reduce[i] = 0;
    }
    for (int i = 0; i < axes->count; i++)
        g.reduce[axes->ints[i] < 0 ? axes->ints[i] + t->rank : axes->ints[i]] = 1;
    for (int i = 0; i < t->rank; i++)
        if (g.reduce[i])
            g.count *= g.shape[i];
    int64_t n_in = mera_type_numel(t), n_out = mera_type_numel(a->out_types[0]);
    const float *x = a->in[0];
    float *y = a->out[0];
    enum { SUM, MEAN, LOGSUM, SUMSQ, L1, L2, PROD, MAX, MIN, LSE } k =
        !strcmp(kind, "sum") ? SUM : !strcmp(kind, "log_sum") ? LOGSUM : !strcmp(kind, "mean") ? MEAN : !strcmp(kind, "sum_square") ? SUMSQ
        : !strcmp(kind, "l1") ? L1 : !strcmp(kind, "l2") ? L2 : !strcmp(kind, "prod") ? PROD
        : !strcmp(kind, "max") ? MAX : !strcmp(kind, "min") ? MIN : LSE;
    float init = k == PROD ? 1.0f : k == MAX || k == LSE ? -INFINITY : k == MIN ? INFINITY : 0.0f;
    for (int64_t o = 0; o < n_out; o++)
        y[o] = init;
    for (int64_t i = 0; i < n_in; i++) {
        float v = x[i], *acc = &y[mean_slot(&g, i)];
        switch (k) {
        case SUM: case MEAN: case LOGSUM: *acc += v; break;
        case SUMSQ: case L2: *acc += v * v; break;
        case L1: *acc += fabsf(v); break;
        case PROD: *acc *= v; break;
        case MAX: case LSE: if (!isnan(*acc) && (isnan(v) || v > *acc)) *acc = v; break;
        case MIN: if (!isnan(*acc) && (isnan(v) || v < *acc)) *acc = v; break;
        }
    }
    if (k == MEAN)
        for (int64_t o = 0; o < n_out; o++)
            y[o] /= (float)g.count;
    else if (k == L2)
        for (int64_t o = 0; o < n_out; o++)
            y[o] = sqrtf(y[o]);
    else if (k == LOGSUM)
        for (int64_t o = 0; o < n_out; o++)
            y[o] = logf(y[o]);
    else if (k == LSE) {
        float *s = ref_alloc(n_out, sizeof(float));
        if (!s)
            return ref_nomem(err, a->node);
        for (int64_t i = 0; i < n_in; i++) {
            int64_t o = mean_slot(&g, i);
            float m = isfinite(y[o]) ? y[o] : 0.0f;
            s[o] += expf(x[i] - m);
        }
        for (int64_t o = 0; o < n_out; o++) {
            float m = isfinite(y[o]) ? y[o] : 0.0f;
            y[o] = m + logf(s[o]);
        }
        free(s);
    }
    return MERA_OK;
}
