/* Calibration observers (observer.h).
 *
 * Every update() makes two passes over the values: one for min, max and
 * finiteness (so that a bad value leaves the observer untouched), one to
 * bin them. Work proportional to the bin count happens only when the range
 * grows (re-binning) and in range().
 *
 * Two histograms live here:
 *   - HISTOGRAM keeps PyTorch's float32 histogram over [min, max] and
 *     reproduces HistogramObserver's arithmetic operation by operation
 *     (section "PyTorch's HistogramObserver" below);
 *   - PERCENTILE, ENTROPY and MSE keep exact integer counts on a grid of
 *     bins [k w, (k+1) w) with w a power of two: when the range grows, pairs
 *     of bins merge exactly, so the histogram is always the exact histogram
 *     of every value seen at the current bin width, with no smoothing from
 *     re-binning. The grid has GRID_OVERSAMPLE * bins bins, so its bins are
 *     at most (max - min) / (2 bins) wide.
 *     Exact zeros (relu, padding) are counted apart, as a point mass. */
#include "quant/observer.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {
    [MERA_OBSERVER_MINMAX] = "minmax",
    [MERA_OBSERVER_PERCENTILE] = "percentile",
    [MERA_OBSERVER_HISTOGRAM] = "histogram",
    [MERA_OBSERVER_ENTROPY] = "entropy",
    [MERA_OBSERVER_MSE] = "mse",
};
_Static_assert(MERA_ARRAY_LEN(kind_names) == MERA_OBSERVER_COUNT, "every observer kind needs a name");

#define MAX_BINS (1 << 20)
/* the exact grid has this many bins per configured bin: its occupied span
 * then has between 2 and 4 times `bins` bins */
#define GRID_OVERSAMPLE 4
#define MAX_LEVELS 65536

const char *mera_observer_kind_name(mera_observer_kind k)
{
    return (unsigned)k < MERA_OBSERVER_COUNT ? kind_names[k] : "?";
}

int mera_observer_kind_parse(const char *s, mera_observer_kind *out)
{
    for (int k = 0; s && k < MERA_OBSERVER_COUNT; k++)
        if (!strcmp(s, kind_names[k])) {
            *out = (mera_observer_kind)k;
            return 0;
        }
    return -1;
}

mera_observer_config mera_observer_config_default(void)
{
    mera_observer_config c = {MERA_OBSERVER_HISTOGRAM, 2048, 99.99, 0, 255};
    return c;
}

mera_status mera_observer_config_validate(const mera_observer_config *c, mera_error *err)
{
    if ((unsigned)c->kind >= MERA_OBSERVER_COUNT)
        return mera_fail(err, MERA_ERR_CONFIG, "observer kind: unknown kind %d", (int)c->kind);
    if (c->bins < 16 || c->bins > MAX_BINS)
        return mera_fail(err, MERA_ERR_CONFIG, "observer bins: must be in [16, %d], got %d", MAX_BINS, c->bins);
    if (!(c->percentile > 50.0 && c->percentile <= 100.0))
        return mera_fail(err, MERA_ERR_CONFIG, "observer percentile: must be in (50, 100], got %g", c->percentile);
    if (c->qmin >= c->qmax)
        return mera_fail(err, MERA_ERR_CONFIG, "observer qmin, qmax: qmin must be below qmax, got [%d, %d]", c->qmin,
                         c->qmax);
    if ((int64_t)c->qmax - c->qmin >= MAX_LEVELS)
        return mera_fail(err, MERA_ERR_CONFIG, "observer qmin, qmax: at most %d levels, got [%d, %d]", MAX_LEVELS,
                         c->qmin, c->qmax);
    return MERA_OK;
}

struct mera_observer {
    mera_observer_config c;
    int64_t count;
    float min, max; /* of every value seen; meaningful when count > 0 */

    /* HISTOGRAM: PyTorch's float32 histogram over [min, max] (c.bins) */
    float *thist;

    /* PERCENTILE, ENTROPY, MSE: bin j (of gbins) counts the values in
     * [(k0 + j) 2^e, (k0 + j + 1) 2^e); zeros are counted apart */
    int64_t *grid;
    int gbins;
    int64_t k0;
    int e;
    int64_t zeros;

    /* one batch's counts (bins or gbins, + 1: the last slot takes exact zeros) */
    int64_t *batch;
};

/* ---- creation ------------------------------------------------------------ */

static int uses_grid(mera_observer_kind k)
{
    return k == MERA_OBSERVER_PERCENTILE || k == MERA_OBSERVER_ENTROPY || k == MERA_OBSERVER_MSE;
}

mera_observer *mera_observer_new(const mera_observer_config *c, mera_error *err)
{
    if (mera_observer_config_validate(c, err))
        return NULL;
    mera_observer *o = calloc(1, sizeof *o);
    if (!o) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    o->c = *c;
    size_t nb = (size_t)c->bins;
    int ok = 1;
    if (c->kind == MERA_OBSERVER_HISTOGRAM) {
        o->thist = calloc(nb, sizeof *o->thist);
        o->batch = calloc(nb + 1, sizeof *o->batch);
        ok = o->thist && o->batch;
    } else if (uses_grid(c->kind)) {
        o->gbins = GRID_OVERSAMPLE * c->bins;
        o->grid = calloc(nb * GRID_OVERSAMPLE, sizeof *o->grid);
        o->batch = calloc(nb * GRID_OVERSAMPLE + 1, sizeof *o->batch);
        ok = o->grid && o->batch;
    }
    if (!ok) {
        mera_observer_free(o);
        mera_fail(err, MERA_ERR_NOMEM, "out of memory for a %d-bin observer", c->bins);
        return NULL;
    }
    return o;
}

void mera_observer_free(mera_observer *o)
{
    if (!o)
        return;
    free(o->thist);
    free(o->grid);
    free(o->batch);
    free(o);
}

int64_t mera_observer_count(const mera_observer *o)
{
    return o->count;
}

void mera_observer_minmax(const mera_observer *o, float *min, float *max)
{
    *min = o->count ? o->min : 0.0f;
    *max = o->count ? o->max : 0.0f;
}

/* ---- the first pass: min, max, finiteness -------------------------------- */

static int is_nonfinite(float v)
{
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return (b & 0x7f800000u) == 0x7f800000u;
}

/* 0 and the min and max of x, or -1 if some value is NaN or infinite. Eight
 * independent lanes keep the loop free of a serial dependency. */
static int scan_minmax(const float *x, int64_t n, float *min, float *max)
{
    enum { L = 8 };
    float mn[L], mx[L];
    uint32_t bad = 0;
    for (int l = 0; l < L; l++)
        mn[l] = mx[l] = x[0];
    int64_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; l++) {
            float v = x[i + l];
            uint32_t b;
            memcpy(&b, &v, sizeof b);
            bad |= (b & 0x7f800000u) == 0x7f800000u;
            mn[l] = v < mn[l] ? v : mn[l];
            mx[l] = v > mx[l] ? v : mx[l];
        }
    for (; i < n; i++) {
        float v = x[i];
        bad |= (uint32_t)is_nonfinite(v);
        mn[0] = v < mn[0] ? v : mn[0];
        mx[0] = v > mx[0] ? v : mx[0];
    }
    if (bad || is_nonfinite(x[0]))
        return -1;
    for (int l = 1; l < L; l++) {
        mn[0] = mn[l] < mn[0] ? mn[l] : mn[0];
        mx[0] = mx[l] > mx[0] ? mx[l] : mx[0];
    }
    *min = mn[0];
    *max = mx[0];
    return 0;
}

/* ---- PyTorch arithmetic ---------------------------------------------------
 *
 * torch does this work in float32 tensors; each helper below is one torch
 * operation, with the operation's own rounding. The file is built with
 * -ffp-contract=off, so every float expression rounds where torch rounds;
 * fmaf() appears where torch's compiled kernel contracts. */

/* torch.sum of a contiguous float32 vector: cascade_sum of
 * ATen/native/cpu/SumKernel.cpp with 8-lane vectors, the order torch 2.13
 * sums in under ATEN_CPU_CAPABILITY default, avx2 and avx512 alike
 * (checked). Applies to n >= 8; our histograms have at least 16 bins. */
#define TORCH_SUM_LANES 8

static int64_t ceil_log2(int64_t x)
{
    if (x <= 2)
        return 1;
    int64_t r = 0;
    for (uint64_t v = (uint64_t)(x - 1); v; v >>= 1)
        r++;
    return r;
}

static float torch_sum_f32(const float *x, int64_t n)
{
    enum { W = TORCH_SUM_LANES, LEVELS = 4, ILP = 4 };
    float acc[LEVELS][ILP][W];
    memset(acc, 0, sizeof acc);
    int64_t nvec = n / W, rows = nvec / ILP;
    int64_t power = ceil_log2(rows) / LEVELS;
    if (power < 4)
        power = 4;
    int64_t step = (int64_t)1 << power, mask = step - 1;
    int64_t i = 0;
    while (i + step <= rows) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int k = 0; k < ILP; k++)
                for (int l = 0; l < W; l++)
                    acc[0][k][l] += x[(i * ILP + k) * W + l];
        for (int j = 1; j < LEVELS; j++) {
            for (int k = 0; k < ILP; k++)
                for (int l = 0; l < W; l++) {
                    acc[j][k][l] += acc[j - 1][k][l];
                    acc[j - 1][k][l] = 0.0f;
                }
            if (i & (mask << (j * power)))
                break;
        }
    }
    for (; i < rows; i++)
        for (int k = 0; k < ILP; k++)
            for (int l = 0; l < W; l++)
                acc[0][k][l] += x[(i * ILP + k) * W + l];
    for (int j = 1; j < LEVELS; j++)
        for (int k = 0; k < ILP; k++)
            for (int l = 0; l < W; l++)
                acc[0][k][l] += acc[j][k][l];
    for (int64_t v = rows * ILP; v < nvec; v++)
        for (int l = 0; l < W; l++)
            acc[0][0][l] += x[v * W + l];
    for (int k = 1; k < ILP; k++)
        for (int l = 0; l < W; l++)
            acc[0][0][l] += acc[0][k][l];
    float sum = 0.0f;
    for (int64_t t = nvec * W; t < n; t++)
        sum += x[t];
    for (int l = 0; l < W; l++)
        sum += acc[0][0][l];
    return sum;
}

/* torch.div(a, b, rounding_mode="floor") on float32 (div_floor_floating). */
static float torch_floor_div(float a, float b)
{
    float mod = fmodf(a, b);
    float div = (a - mod) / b;
    if (mod != 0.0f && ((b < 0.0f) != (mod < 0.0f)))
        div -= 1.0f;
    float fl = floorf(div);
    if (div - fl > 0.5f)
        fl += 1.0f;
    if (div == 0.0f)
        fl = copysignf(0.0f, a / b);
    return fl;
}

static float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* torch.linspace(start, end, steps) element i in float32: the CPU kernel
 * computes start + step * i below the half and end - step * (steps-1-i)
 * above it, which torch's AVX2 and AVX512 kernels contract to one fused
 * multiply-add (checked against torch 2.13). */
static float torch_linspace_at(float start, float end, int64_t steps, int64_t i)
{
    float step = (end - start) / (float)(steps - 1);
    if (i < steps / 2)
        return fmaf(step, (float)i, start);
    return fmaf(-step, (float)(steps - 1 - i), end);
}

/* torch.histc's outer edges for [lo, hi] (histc_select_outer_bin_edges). */
static void histc_edges(float lo, float hi, float *left, float *right)
{
    if (lo == hi) {
        *left = (float)((double)lo - 1.0);
        *right = (float)((double)hi + 1.0);
    } else {
        *left = lo;
        *right = hi;
    }
}

/* Counts of torch.histc(x, bins, min=lo, max=hi) added to cnt: bin
 * trunc((x - left) * bins / (right - left)) in float32, the last bin closed.
 * Ranges so wide that torch's float32 arithmetic overflows (undefined
 * behaviour in torch) are binned in double. */
static void histc_count(const float *x, int64_t n, float lo, float hi, int bins, int64_t *cnt)
{
    float left, right;
    histc_edges(lo, hi, &left, &right);
    int64_t last = bins - 1;
    if ((double)right - (double)left <= (double)FLT_MAX / bins) {
        const float nb = (float)bins, width = right - left;
        for (int64_t i = 0; i < n; i++) {
            int64_t p = (int64_t)((x[i] - left) * nb / width);
            cnt[p < 0 ? 0 : p < last ? p : last]++;
        }
    } else {
        const double nb = bins, width = (double)right - (double)left;
        for (int64_t i = 0; i < n; i++) {
            int64_t p = (int64_t)(((double)x[i] - left) * nb / width);
            cnt[p < 0 ? 0 : p < last ? p : last]++;
        }
    }
}

/* The bin torch.histc puts a single value v in. */
static int histc_bin(float v, float lo, float hi, int bins)
{
    float left, right;
    histc_edges(lo, hi, &left, &right);
    int64_t p;
    if ((double)right - (double)left <= (double)FLT_MAX / bins)
        p = (int64_t)((v - left) * (float)bins / (right - left));
    else
        p = (int64_t)(((double)v - left) * bins / ((double)right - left));
    return (int)(p < 0 ? 0 : p > bins - 1 ? bins - 1 : p);
}

/* ---- PyTorch's HistogramObserver -----------------------------------------
 *
 * forward(): the first batch sets [min, max] and histc's it; later batches
 * histc over the grown range and, if the range grew, add the old histogram
 * re-binned by _combine_histograms (upsampled 16 times, each sub-bin's
 * mid-point bucketized into the new bins). calculate_qparams(): the
 * non-linear search (_non_linear_param_search) with the L2 error of
 * _compute_quantization_error, then _calculate_qparams.
 *
 * The running histogram is float32 as torch's, and every value computed
 * here was checked bit for bit against torch 2.13 (histogram after each
 * batch, every norm of the search, the range), except:
 *   - torch counts each batch in float32 per thread, so a bin that gets
 *     more than 2^24 values of one batch stops counting; we count in int64
 *     and round each batch's counts to float32 once;
 *   - torch's linspace fuses multiply-add in its AVX2/AVX512 kernels only;
 *     we fuse, so against a torch run with ATEN_CPU_CAPABILITY=default an
 *     upsampled histogram can differ by a sub-bin share after a range grows
 *     (no change of qparams seen in our tests);
 *   - ranges wider than FLT_MAX / bins overflow torch's float32 binning
 *     (undefined behaviour, NaN qparams); we bin those in double instead,
 *     but keep torch's float32 search, whose norms overflow for values
 *     beyond about 1e12 just as torch's do.
 * dst_nbins is qmax - qmin + 1 (torch: 2^bits of the dtype, the same 256
 * for quint8 [0, 255]). */

/* _upscale_histogram: the old histogram (over [omin, omax]) in the bins of
 * [nmin, nmax], added to out. */
static mera_status torch_upscale(const float *hist, int bins, float omin, float omax, float nmin, float nmax,
                                 float *out, mera_error *err)
{
    enum { UP = 16 };
    int64_t nup = (int64_t)bins * UP;
    float *edges = malloc((size_t)(bins + 1) * sizeof *edges);
    if (!edges)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i <= bins; i++)
        edges[i] = torch_linspace_at(nmin, nmax, bins + 1, i);
    float half = 0.5f * ((omax - omin) / (float)nup);
    for (int64_t i = 0; i < nup; i++) {
        float mid = torch_linspace_at(omin, omax, nup + 1, i) + half;
        /* bucketize(right=True) - 1: the number of edges <= mid, minus 1 */
        int64_t a = 0, b = bins + 1;
        while (a < b) {
            int64_t m = (a + b) / 2;
            if (edges[m] <= mid)
                a = m + 1;
            else
                b = m;
        }
        int64_t bin = a - 1;
        bin = bin < 0 ? 0 : bin >= bins ? bins - 1 : bin;
        out[bin] += hist[i / UP] / (float)UP;
    }
    free(edges);
    return MERA_OK;
}

static mera_status torch_hist_update(mera_observer *o, const float *x, int64_t n, float xmin, float xmax,
                                     mera_error *err)
{
    int bins = o->c.bins;
    int64_t *cnt = o->batch;
    memset(cnt, 0, (size_t)bins * sizeof *cnt);
    if (o->count == 0) {
        histc_count(x, n, xmin, xmax, bins, cnt);
        for (int i = 0; i < bins; i++)
            o->thist[i] = (float)cnt[i];
        return MERA_OK;
    }
    float omin = o->min, omax = o->max;
    float nmin = xmin < omin ? xmin : omin, nmax = xmax > omax ? xmax : omax;
    histc_count(x, n, nmin, nmax, bins, cnt);
    if (nmin == omin && nmax == omax) {
        for (int i = 0; i < bins; i++)
            o->thist[i] = o->thist[i] + (float)cnt[i];
        return MERA_OK;
    }
    float *moved = calloc((size_t)bins, sizeof *moved);
    if (!moved)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    if (omin == omax) {
        /* a one-value histogram: all of it goes to the bin of that value */
        moved[histc_bin(omin, nmin, nmax, bins)] = torch_sum_f32(o->thist, bins);
    } else if (torch_upscale(o->thist, bins, omin, omax, nmin, nmax, moved, err)) {
        free(moved);
        return MERA_ERR_NOMEM;
    }
    for (int i = 0; i < bins; i++)
        o->thist[i] = (float)cnt[i] + moved[i];
    free(moved);
    return MERA_OK;
}

/* _compute_quantization_error(start, end): the L2 error, with values
 * uniform within each bin, of quantizing to dst bins over bins
 * [start, end]. Operation by operation as torch's float32 tensors. */
static double torch_quant_error(const mera_observer *o, float *norm, int start, int end, int dst)
{
    int bins = o->c.bins;
    double bw_d = ((double)o->max - (double)o->min) / bins;
    double dbw_d = bw_d * (end - start + 1) / dst;
    if (dbw_d == 0.0)
        return 0.0;
    const float bw = (float)bw_d, dbw = (float)dbw_d;
    const float half = (float)(dbw_d / 2), nhalf = (float)(-dbw_d / 2), top = (float)(dst - 1);
    const float full = ((half * half) * half - (nhalf * nhalf) * nhalf) / 3.0f;
    for (int i = 0; i < bins; i++) {
        float src_begin = (float)(i - start) * bw;
        float src_end = src_begin + bw;
        float dst_begin = clampf(torch_floor_div(src_begin, dbw), 0.0f, top);
        float dst_begin_center = (dst_begin + 0.5f) * dbw;
        float dst_end = clampf(torch_floor_div(src_end, dbw), 0.0f, top);
        float density = o->thist[i] / bw;
        float delta_begin = src_begin - dst_begin_center;
        float v = 0.0f;
        v += density * (((half * half) * half - (delta_begin * delta_begin) * delta_begin) / 3.0f);
        v += ((dst_end - dst_begin) - 1.0f) * (density * full);
        float dst_end_center = dst_end * dbw + half;
        float delta_end = src_end - dst_end_center;
        v += density * (((delta_end * delta_end) * delta_end - (nhalf * nhalf) * nhalf) / 3.0f);
        norm[i] = v;
    }
    return (double)torch_sum_f32(norm, bins);
}

/* _non_linear_param_search, then the range it returns. */
static mera_status torch_hist_range(const mera_observer *o, float *lo, float *hi, mera_error *err)
{
    int bins = o->c.bins;
    int dst = o->c.qmax - o->c.qmin + 1; /* torch: 2^8 for quint8 */
    float *csum = malloc((size_t)bins * 2 * sizeof *csum);
    if (!csum)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    float *norm = csum + bins;
    double run = 0.0; /* torch.cumsum accumulates float32 in double */
    for (int i = 0; i < bins; i++) {
        run += o->thist[i];
        csum[i] = (float)run;
    }
    const double total = (double)torch_sum_f32(o->thist, bins);
    const double stepsize = 1e-5;
    double alpha = 0.0, beta = 1.0, norm_min = INFINITY;
    int start = 0, end = bins - 1;
    while (alpha < beta) {
        double next_alpha = alpha + stepsize, next_beta = beta - stepsize;
        /* a float32 tensor compared with a Python float: the float is
         * rounded to float32 first */
        float below = (float)(next_alpha * total), above = (float)(next_beta * total);
        int l = start, r = end;
        while (l < end && csum[l] < below)
            l++;
        while (r > start && csum[r] > above)
            r--;
        int next_start = start, next_end = end;
        if (l - start > end - r) {
            next_start = l;
            alpha = next_alpha;
        } else {
            next_end = r;
            beta = next_beta;
        }
        if (next_start == start && next_end == end)
            continue;
        double e = torch_quant_error(o, norm, next_start, next_end, dst);
        if (e > norm_min)
            break;
        norm_min = e;
        start = next_start;
        end = next_end;
    }
    free(csum);
    float bw = (o->max - o->min) / (float)bins;
    if (!isfinite(bw)) /* max - min overflows float32 (torch: NaN): the width in double */
        bw = (float)(((double)o->max - (double)o->min) / bins);
    *lo = o->min + bw * (float)start;
    *hi = o->min + bw * (float)(end + 1);
    return MERA_OK;
}

/* ---- the exact power-of-two grid (PERCENTILE, ENTROPY, MSE) -------------- */

static int64_t floor_to_int(double v)
{
    int64_t t = (int64_t)v;
    return t - ((double)t > v);
}

/* floor(k / 2^m) */
static int64_t floor_shift(int64_t k, int m)
{
    if (m >= 63)
        return k < 0 ? -1 : 0;
    return k >= 0 ? k >> m : -(((-(k + 1)) >> m) + 1);
}

/* Bins of width 2^e that [lo, hi] touches (as a double: it may be huge). */
static double grid_span(float lo, float hi, int e)
{
    return floor(ldexp(hi, -e)) - floor(ldexp(lo, -e)) + 1.0;
}

/* The finest exponent, not below e_min, at which [lo, hi] fits in bins. */
static int grid_fit(float lo, float hi, int bins, int e_min)
{
    int e = e_min;
    if (lo < hi) {
        int guess = ilogb((double)hi - (double)lo) - ilogb((double)bins) - 1;
        if (guess > e)
            e = guess;
    }
    while (grid_span(lo, hi, e) > bins)
        e++;
    return e;
}

static void grid_update(mera_observer *o, const float *x, int64_t n, float xmin, float xmax)
{
    int bins = o->gbins;
    float lo = xmin, hi = xmax;
    if (o->count == 0) {
        /* a single value starts 2^10..2^11 bins from 0 (any width would do) */
        int e0 = xmin != 0.0f ? ilogb(xmin) - 10 : -160;
        if (xmax != 0.0f && ilogb(xmax) - 10 < e0)
            e0 = ilogb(xmax) - 10;
        o->e = grid_fit(lo, hi, bins, xmin < xmax ? -400 : e0);
        o->k0 = floor_to_int(ldexp(lo, -o->e));
        memset(o->grid, 0, (size_t)bins * sizeof *o->grid);
    } else {
        lo = o->min < lo ? o->min : lo;
        hi = o->max > hi ? o->max : hi;
        int e = grid_fit(lo, hi, bins, o->e);
        int64_t k0 = floor_to_int(ldexp(lo, -e));
        if (e != o->e || k0 != o->k0) {
            /* merge 2^(e - o->e) old bins into each new one, shift the window */
            int64_t *moved = o->batch;
            memset(moved, 0, (size_t)bins * sizeof *moved);
            for (int j = 0; j < bins; j++)
                if (o->grid[j]) {
                    int64_t to = floor_shift(o->k0 + j, e - o->e) - k0;
                    moved[to < 0 ? 0 : to >= bins ? bins - 1 : to] += o->grid[j];
                }
            memcpy(o->grid, moved, (size_t)bins * sizeof *moved);
            o->e = e;
            o->k0 = k0;
        }
    }
    /* Bin every value: j = floor(x / w) - k0, as trunc(x / w - k0) since
     * x / w >= k0. x / w is exact in double; subtracting k0 is exact too
     * except for negative values within 2^-39 bin widths of 0, which may
     * land in [0, w) rather than [-w, 0). Exact zeros go to the extra slot,
     * selected without a branch (relu data are half zeros, at random). */
    int64_t *cnt = o->batch;
    memset(cnt, 0, (size_t)(bins + 1) * sizeof *cnt);
    const double inv_w = ldexp(1.0, -o->e), k0 = (double)o->k0;
    const int64_t last = bins - 1;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        int64_t j = (int64_t)((double)v * inv_w - k0);
        j = j < 0 ? 0 : j > last ? last : j;
        int64_t zero = -(int64_t)(v == 0.0f);
        j ^= (j ^ bins) & zero;
        cnt[j]++;
    }
    for (int j = 0; j < bins; j++)
        o->grid[j] += cnt[j];
    o->zeros += cnt[bins];
}

mera_status mera_observer_update(mera_observer *o, const float *x, int64_t n, mera_error *err)
{
    if (n < 0)
        return mera_fail(err, MERA_ERR_INVALID, "observer update: negative count %lld", (long long)n);
    if (n == 0)
        return MERA_OK;
    if (!x)
        return mera_fail(err, MERA_ERR_INVALID, "observer update: no data for %lld values", (long long)n);
    float xmin, xmax;
    if (scan_minmax(x, n, &xmin, &xmax)) {
        int64_t i = 0;
        while (i < n && !is_nonfinite(x[i]))
            i++;
        return mera_fail(err, MERA_ERR_INVALID, "observer update: non-finite value %g at index %lld", (double)x[i],
                         (long long)i);
    }
    if (o->c.kind == MERA_OBSERVER_HISTOGRAM) {
        mera_status st = torch_hist_update(o, x, n, xmin, xmax, err);
        if (st)
            return st;
    } else if (uses_grid(o->c.kind)) {
        grid_update(o, x, n, xmin, xmax);
    }
    if (o->count == 0 || xmin < o->min)
        o->min = xmin;
    if (o->count == 0 || xmax > o->max)
        o->max = xmax;
    o->count += n;
    return MERA_OK;
}

/* ---- ranges from the grid ------------------------------------------------ */

/* The grid as pieces in increasing order: bin j's values, uniform over its
 * interval clipped to [min, max], and the zeros, a point at 0 placed before
 * the bin [0, w). Pieces with no values are left out. */
typedef struct {
    double u, v; /* u == v: a point mass */
    double c;
} piece;

static piece *grid_pieces(const mera_observer *o, int *n_out, mera_error *err)
{
    int bins = o->gbins;
    piece *p = malloc((size_t)(bins + 1) * sizeof *p);
    if (!p) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    const double w = ldexp(1.0, o->e), mn = o->min, mx = o->max;
    int n = 0, zeros_done = o->zeros == 0;
    for (int j = 0; j < bins; j++) {
        int64_t k = o->k0 + j;
        if (!zeros_done && k >= 0) {
            p[n++] = (piece){0.0, 0.0, (double)o->zeros};
            zeros_done = 1;
        }
        if (!o->grid[j])
            continue;
        double u = (double)k * w, v = (double)(k + 1) * w;
        u = u < mn ? mn : u > mx ? mx : u;
        v = v > mx ? mx : v < u ? u : v;
        p[n++] = (piece){u, v, (double)o->grid[j]};
    }
    if (!zeros_done)
        p[n++] = (piece){0.0, 0.0, (double)o->zeros};
    *n_out = n;
    return p;
}

/* Where the m-th smallest value (0-based) lies: the values of a piece are
 * spread evenly over it, each at the middle of its share; the first and
 * the last are the exact min and max. */
static double order_stat(const mera_observer *o, const piece *p, int n, double m)
{
    if (m <= 0.0)
        return o->min;
    if (m >= (double)(o->count - 1))
        return o->max;
    double before = 0.0;
    for (int i = 0; i < n; i++) {
        if (m < before + p[i].c)
            return p[i].u + (m - before + 0.5) / p[i].c * (p[i].v - p[i].u);
        before += p[i].c;
    }
    return o->max;
}

/* The value of fractional rank r as numpy.percentile's "linear" method:
 * between the order statistics floor(r) and floor(r) + 1. */
static double rank_value(const mera_observer *o, const piece *p, int n, double r)
{
    double f = floor(r), a = order_stat(o, p, n, f);
    if (r == f)
        return a;
    return a + (r - f) * (order_stat(o, p, n, f + 1.0) - a);
}

/* PERCENTILE: the [100 - p, p] percentiles, read off the exact grid (error
 * under one bin width); p = 100 is the exact min and max. */
static mera_status percentile_range(const mera_observer *o, float *lo, float *hi, mera_error *err)
{
    double q = o->c.percentile / 100.0, last = (double)(o->count - 1);
    if (q >= 1.0) {
        *lo = o->min;
        *hi = o->max;
        return MERA_OK;
    }
    int n;
    piece *p = grid_pieces(o, &n, err);
    if (!p)
        return MERA_ERR_NOMEM;
    double a = rank_value(o, p, n, last * (1.0 - q)), b = rank_value(o, p, n, last * q);
    free(p);
    *lo = (float)(a < o->min ? o->min : a);
    *hi = (float)(b > o->max ? o->max : b);
    return MERA_OK;
}

/* ENTROPY: TensorRT's KL-divergence calibration, as NVIDIA's
 * pytorch-quantization computes it (_compute_amax_entropy), on a histogram
 * A of |x| with N bins of width w starting at 0. For every candidate
 * threshold of i = L..N bins: the reference P is A[0..i) with the outliers
 * A[i..N) added to its last bin; the candidate Q quantizes A[0..i) (without
 * the outliers) to L levels, bin k going to level floor(k L / i), and
 * spreads each level's count evenly over the level's non-empty bins of A.
 * The divergence is KL(P || Q) of the normalized distributions; it is
 * infinite where Q has no mass for P's (the threshold ends in an empty
 * bin), and that candidate is out. The smallest divergence wins, the
 * largest threshold on ties; the threshold is i w.
 * Prefix sums of A, of A log A and of the non-empty bins make a candidate
 * cost O(L) rather than O(i). Returns the number of bins to keep (N when
 * N <= L: too coarse a histogram to clip anything). */
static int64_t kl_threshold(const double *A, int64_t N, int64_t L, mera_error *err, int *nomem)
{
    *nomem = 0;
    if (N <= L)
        return N;
    double *S = malloc((size_t)(N + 1) * 3 * sizeof *S);
    if (!S) {
        *nomem = 1;
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return N;
    }
    double *H = S + N + 1, *Z = H + N + 1;
    S[0] = H[0] = Z[0] = 0.0;
    for (int64_t k = 0; k < N; k++) {
        S[k + 1] = S[k] + A[k];
        H[k + 1] = H[k] + (A[k] > 0 ? A[k] * log(A[k]) : 0.0);
        Z[k + 1] = Z[k] + (A[k] > 0);
    }
    const double Pt = S[N];
    double best = INFINITY;
    int64_t best_i = N;
    for (int64_t i = L; i <= N; i++) {
        double Qt = S[i];
        if (A[i - 1] <= 0.0 || Qt <= 0.0)
            continue; /* Q is 0 on P's last bin, which holds the outliers */
        double outl = Pt - S[i], last = A[i - 1] + outl;
        double plogp = H[i - 1] + last * log(last), plogq = 0.0;
        for (int64_t j = 0; j < L; j++) {
            /* level j: bins k with floor(k L / i) == j */
            int64_t a = (j * i + L - 1) / L, b = ((j + 1) * i + L - 1) / L;
            double nz = Z[b] - Z[a];
            if (nz == 0)
                continue;
            double pc = S[b] - S[a] + (b == i ? outl : 0.0);
            plogq += pc * log((S[b] - S[a]) / nz);
        }
        double kl = plogp / Pt - log(Pt) - plogq / Pt + log(Qt);
        if (kl <= best) {
            best = kl;
            best_i = i;
        }
    }
    free(S);
    return best_i;
}

/* The histogram of |x| from the grid: bin [k w, (k+1) w) folds to |x| bin
 * k if k >= 0 and -k-1 if k < 0 (0 is a grid edge, so folding is exact);
 * bins merge in powers of two until at most `bins` remain. Exact zeros are
 * left out: 0 is exact in every candidate range, and their spike (relu)
 * would otherwise decide the divergence (pytorch-quantization flattens it
 * with bins[0] = bins[1] for the same reason).
 * Data of both signs are searched on |x| with L = (qmax - qmin + 1) / 2
 * levels and clipped to [max(min, -T), min(max, T)]; one-sided data
 * (min >= 0, or max <= 0) use all qmax - qmin + 1 levels for their side. */
static mera_status entropy_range(const mera_observer *o, float *lo, float *hi, mera_error *err)
{
    int gbins = o->gbins;
    int64_t levels = (int64_t)o->c.qmax - o->c.qmin + 1;
    int two_sided = o->min < 0.0f && o->max > 0.0f;
    int64_t L = two_sided ? levels / 2 : levels;
    int64_t top = -1; /* the largest folded index in use */
    for (int j = 0; j < gbins; j++)
        if (o->grid[j]) {
            int64_t k = o->k0 + j, f = k >= 0 ? k : -k - 1;
            top = f > top ? f : top;
        }
    if (top < 0) { /* only zeros besides nothing: cannot happen with min < max */
        *lo = o->min;
        *hi = o->max;
        return MERA_OK;
    }
    int m = 0;
    while (floor_shift(top, m) + 1 > o->c.bins)
        m++;
    int64_t N = floor_shift(top, m) + 1;
    double *A = calloc((size_t)N, sizeof *A);
    if (!A)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    for (int j = 0; j < gbins; j++)
        if (o->grid[j]) {
            int64_t k = o->k0 + j, f = k >= 0 ? k : -k - 1;
            A[floor_shift(f, m)] += (double)o->grid[j];
        }
    int nomem;
    int64_t keep = kl_threshold(A, N, L, err, &nomem);
    free(A);
    if (nomem)
        return MERA_ERR_NOMEM;
    double t = ldexp((double)keep, o->e + m);
    *lo = (float)(-t > o->min ? -t : o->min);
    *hi = (float)(t < o->max ? t : o->max);
    return MERA_OK;
}

/* MSE: the integral from a to x of the squared distance to the nearest of
 * the levels a + j s, j = 0..steps, for a <= x <= a + steps s. */
static double qerr_primitive(double x, double a, double s, double steps)
{
    double t = (x - a) / s;
    double full = floor(t);
    if (full > steps)
        full = steps;
    double r = (t - full) * s;
    double part = r <= s / 2 ? r * r * r / 3.0 : s * s * s / 12.0 - (s - r) * (s - r) * (s - r) / 3.0;
    return full * s * s * s / 12.0 + part;
}

/* The squared error of a piece's values quantized to the levels a + j s in
 * [a, b] (clamped to the ends outside), values uniform over the piece. */
static double piece_sq_error(const piece *p, double a, double b, double s, double steps)
{
    if (p->u == p->v) {
        double x = p->u, q;
        if (x <= a)
            q = a;
        else if (x >= b)
            q = b;
        else
            q = a + nearbyint((x - a) / s) * s;
        return p->c * (x - q) * (x - q);
    }
    double u = p->u, v = p->v, sum = 0.0;
    if (u < a) { /* clipped below: distance to a */
        double e = v < a ? v : a;
        sum += ((a - u) * (a - u) * (a - u) - (a - e) * (a - e) * (a - e)) / 3.0;
    }
    if (v > b) { /* clipped above: distance to b */
        double e = u > b ? u : b;
        sum += ((v - b) * (v - b) * (v - b) - (e - b) * (e - b) * (e - b)) / 3.0;
    }
    double mu = u > a ? u : a, mv = v < b ? v : b;
    if (mv > mu)
        sum += qerr_primitive(mv, a, s, steps) - qerr_primitive(mu, a, s, steps);
    return p->c * sum / (v - u);
}

/* The expected squared error of quantizing the pieces with the qparams of
 * [lo, hi] (the real grid: zero point rounded, levels qmin..qmax). */
static double expected_sq_error(const piece *p, int n, float lo, float hi, int qmin, int qmax)
{
    double scale;
    int32_t zp;
    mera_qparams_from_range(lo, hi, qmin, qmax, MERA_QUANT_MIN_SCALE, &scale, &zp);
    double a = (double)(qmin - zp) * scale, b = (double)(qmax - zp) * scale, steps = qmax - qmin;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += piece_sq_error(&p[i], a, b, scale, steps);
    return sum;
}

/* MSE: three searches over factors f in (0, 1], each a grid of MSE_STEPS
 * factors then a grid of MSE_STEPS around the best (resolution
 * 1/MSE_STEPS^2 of the range): [f lo0, f hi0] (lo0, hi0 the min and max
 * widened to 0), then [lo, f hi0] and [f lo0, hi] with the other end at the
 * best so far, for data whose two tails differ. The cost is the expected
 * squared error (clipping plus rounding) of the grid pieces: values uniform
 * within a bin, zeros exact. */
#define MSE_STEPS 100

typedef struct {
    const piece *p;
    int n, qmin, qmax;
    float lo0, hi0;
    float best_lo, best_hi;
    double best;
} mse_search;

static void mse_try(mse_search *m, int side, double f)
{
    float l = side == 2 ? m->best_lo : (float)(m->lo0 * f);
    float h = side == 1 ? m->best_hi : (float)(m->hi0 * f);
    double e = expected_sq_error(m->p, m->n, l, h, m->qmin, m->qmax);
    if (e < m->best) {
        m->best = e;
        m->best_lo = l;
        m->best_hi = h;
    }
}

/* side 0: both ends scale; 1: lo scales; 2: hi scales */
static void mse_search_side(mse_search *m, int side)
{
    double best_f = 1.0;
    for (int k = MSE_STEPS; k >= 1; k--) {
        double before = m->best;
        mse_try(m, side, (double)k / MSE_STEPS);
        if (m->best < before)
            best_f = (double)k / MSE_STEPS;
    }
    for (int k = -MSE_STEPS; k <= MSE_STEPS; k++) {
        double f = best_f + (double)k / (MSE_STEPS * MSE_STEPS);
        if (f > 0.0 && f <= 1.0)
            mse_try(m, side, f);
    }
}

static mera_status mse_range(const mera_observer *o, float *lo, float *hi, mera_error *err)
{
    int n;
    piece *p = grid_pieces(o, &n, err);
    if (!p)
        return MERA_ERR_NOMEM;
    mse_search m = {p, n, o->c.qmin, o->c.qmax, o->min < 0.0f ? o->min : 0.0f, o->max > 0.0f ? o->max : 0.0f,
                    0.0f, 0.0f, INFINITY};
    for (int side = 0; side < 3; side++)
        mse_search_side(&m, side);
    free(p);
    *lo = m.best_lo;
    *hi = m.best_hi;
    return MERA_OK;
}

/* ---- range and qparams --------------------------------------------------- */

mera_status mera_observer_range(const mera_observer *o, float *lo, float *hi, mera_error *err)
{
    if (o->count == 0)
        return mera_fail(err, MERA_ERR_INVALID, "observer %s: no values observed", kind_names[o->c.kind]);
    float l = o->min, h = o->max;
    mera_status st = MERA_OK;
    if (o->min < o->max) {
        switch (o->c.kind) {
        case MERA_OBSERVER_MINMAX: break;
        case MERA_OBSERVER_HISTOGRAM: st = torch_hist_range(o, &l, &h, err); break;
        case MERA_OBSERVER_PERCENTILE: st = percentile_range(o, &l, &h, err); break;
        case MERA_OBSERVER_ENTROPY: st = entropy_range(o, &l, &h, err); break;
        case MERA_OBSERVER_MSE: st = mse_range(o, &l, &h, err); break;
        default: MERA_BUG("observer kind without a range");
        }
    } else if (o->c.kind == MERA_OBSERVER_HISTOGRAM) {
        st = torch_hist_range(o, &l, &h, err); /* torch's search keeps a one-value range */
    }
    if (st)
        return st;
    *lo = l < 0.0f ? l : 0.0f;
    *hi = h > 0.0f ? h : 0.0f;
    return MERA_OK;
}

void mera_qparams_from_range(float lo, float hi, int qmin, int qmax, float min_scale, double *scale,
                             int32_t *zero_point)
{
    float min_neg = lo < 0.0f ? lo : 0.0f, max_pos = hi > 0.0f ? hi : 0.0f;
    float s = (max_pos - min_neg) / (float)(qmax - qmin);
    if (s == 0.0f)
        s = MERA_TORCH_MIN_SCALE;
    else if (s < min_scale) /* torch.max(scale, eps) */
        s = min_scale;
    int64_t zp = (int64_t)qmin - (int64_t)rintf(min_neg / s); /* torch.round: half to even */
    *zero_point = (int32_t)(zp < qmin ? qmin : zp > qmax ? qmax : zp);
    *scale = s;
}
