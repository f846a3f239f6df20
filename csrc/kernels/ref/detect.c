/* Detection post-processing on the host: non_max_suppression as onnxruntime's CPU kernel computes it, the gather of
 * rows by run-time int64 indices that follows it, argmax/argmin, and rows_valid (docs/frontends.md). */
#include <stdio.h>
#include <string.h>

#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* ---- non_max_suppression -------------------------------------------------
 *
 * As onnxruntime's CPU kernel (core/providers/cpu/object_detection/non_max_suppression.cc): per batch and class,
 * the candidates (score above score_threshold when it is given) go into a max-heap and come out best first; a
 * candidate is kept unless its IoU with one already kept is above iou_threshold, until max_output_boxes_per_class
 * are kept. Equal scores come out lowest box index first, as onnxruntime 1.32 gives them (measured on tied scores:
 * tests/test_onnx_nms.py). The heap moves are libstdc++'s push_heap / pop_heap. */
typedef struct {
    float score;
    int64_t index;
} nms_item;

/* does a come out after b? */
static int nms_after(nms_item a, nms_item b)
{
    return a.score < b.score || (a.score == b.score && a.index > b.index);
}

static void heap_sift_up(nms_item *h, int64_t hole, int64_t top, nms_item v)
{
    int64_t parent = (hole - 1) / 2;
    while (hole > top && nms_after(h[parent], v)) {
        h[hole] = h[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    h[hole] = v;
}

static void heap_push(nms_item *h, int64_t *len, nms_item v)
{
    heap_sift_up(h, (*len)++, 0, v);
}

/* the best item out: libstdc++'s __pop_heap + __adjust_heap (the hole goes down to a leaf, then the last item
 * sifts up from there) */
static nms_item heap_pop(nms_item *h, int64_t *len)
{
    nms_item best = h[0];
    int64_t n = --*len;
    nms_item v = h[n];
    int64_t hole = 0, child = 0;
    while (child < (n - 1) / 2) {
        child = 2 * (child + 1);
        if (nms_after(h[child], h[child - 1]))
            child--;
        h[hole] = h[child];
        hole = child;
    }
    if ((n & 1) == 0 && child == (n - 2) / 2 && n > 0) {
        child = 2 * (child + 1);
        h[hole] = h[child - 1];
        hole = child - 1;
    }
    if (n > 0)
        heap_sift_up(h, hole, 0, v);
    return best;
}

static void nms_min_max(float a, float b, float *lo, float *hi)
{
    if (a >= b) {
        *lo = b;
        *hi = a;
    } else {
        *lo = a;
        *hi = b;
    }
}

static float fmax_std(float a, float b) /* std::max */
{
    return a < b ? b : a;
}

static float fmin_std(float a, float b) /* std::min */
{
    return b < a ? b : a;
}

/* onnxruntime's SuppressByIOU, operation for operation in float */
static int nms_suppress(const float *b1, const float *b2, int center, float iou_threshold)
{
    float x1lo, x1hi, y1lo, y1hi, x2lo, x2hi, y2lo, y2hi, ixlo, ixhi, iylo, iyhi;
    if (!center) {
        nms_min_max(b1[1], b1[3], &x1lo, &x1hi);
        nms_min_max(b2[1], b2[3], &x2lo, &x2hi);
        ixlo = fmax_std(x1lo, x2lo);
        ixhi = fmin_std(x1hi, x2hi);
        if (ixhi <= ixlo)
            return 0;
        nms_min_max(b1[0], b1[2], &y1lo, &y1hi);
        nms_min_max(b2[0], b2[2], &y2lo, &y2hi);
        iylo = fmax_std(y1lo, y2lo);
        iyhi = fmin_std(y1hi, y2hi);
        if (iyhi <= iylo)
            return 0;
    } else {
        float w1 = b1[2] / 2, h1 = b1[3] / 2, w2 = b2[2] / 2, h2 = b2[3] / 2;
        x1lo = b1[0] - w1;
        x1hi = b1[0] + w1;
        x2lo = b2[0] - w2;
        x2hi = b2[0] + w2;
        ixlo = fmax_std(x1lo, x2lo);
        ixhi = fmin_std(x1hi, x2hi);
        if (ixhi <= ixlo)
            return 0;
        y1lo = b1[1] - h1;
        y1hi = b1[1] + h1;
        y2lo = b2[1] - h2;
        y2hi = b2[1] + h2;
        iylo = fmax_std(y1lo, y2lo);
        iyhi = fmin_std(y1hi, y2hi);
        if (iyhi <= iylo)
            return 0;
    }
    volatile float inter = (ixhi - ixlo) * (iyhi - iylo); /* volatile: no fused multiply-add */
    if (inter <= 0.0f)
        return 0;
    volatile float area1 = (x1hi - x1lo) * (y1hi - y1lo);
    volatile float area2 = (x2hi - x2lo) * (y2hi - y2lo);
    volatile float uni = area1 + area2;
    uni = uni - inter;
    if (area1 <= 0.0f || area2 <= 0.0f || uni <= 0.0f)
        return 0;
    return inter / uni > iou_threshold;
}

REF_KERNEL(ref_non_max_suppression)
{
    const mera_node *n = a->node;
    const float *boxes = a->in[0], *scores = a->in[1];
    int64_t B = a->in_types[0]->shape[0], N = a->in_types[0]->shape[1], C = a->in_types[1]->shape[1];
    int64_t mpc = mera_attr_int(n, "max_output_boxes_per_class");
    int center = mera_attr_int(n, "center_point_box") != 0, use_thr = mera_attr_int(n, "use_score_threshold") != 0;
    float iou = (float)mera_attr_float(n, "iou_threshold"), thr = (float)mera_attr_float(n, "score_threshold");
    int want_count = ref_is(n, "output", "count"), packed = ref_is(n, "output", "packed");
    int64_t *out = a->out[0];
    /* packed: the rows, then one row [count, 0, 0] (both outputs from one run) */
    int64_t rows = want_count ? 0 : a->out_types[0]->shape[0] - packed, count = 0;
    if (!want_count)
        memset(out, 0, (size_t)(rows + packed) * 3 * sizeof *out);
    if (mpc == 0) { /* onnxruntime: no output at all */
        if (want_count)
            out[0] = 0;
        return MERA_OK;
    }
    int64_t nv = N; /* candidates: boxes 0..nv-1 */
    if (a->n_inputs > 2 && a->in[2]) { /* only the first `count` boxes are candidates (a NonZero filter's rows) */
        int64_t valid = *(const int64_t *)a->in[2];
        if (valid < 0 || valid > N)
            return mera_fail(err, MERA_ERR_RUNTIME, "the count of valid boxes %lld is outside 0..%lld",
                             (long long)valid, (long long)N);
        nv = valid;
    }
    nms_item *heap = ref_alloc(N > 0 ? N : 1, sizeof *heap);
    int64_t *kept = ref_alloc(N > 0 ? N : 1, sizeof *kept);
    if (!heap || !kept) {
        free(heap);
        free(kept);
        return ref_nomem(err, n);
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++) {
            const float *sc = scores + (b * C + c) * N, *bx = boxes + b * N * 4;
            int64_t len = 0, n_kept = 0;
            for (int64_t i = 0; i < nv; i++)
                if (!use_thr || sc[i] > thr)
                    heap_push(heap, &len, (nms_item){sc[i], i});
            while (len > 0) {
                nms_item top = heap_pop(heap, &len);
                int selected = 1;
                for (int64_t k = 0; k < n_kept && selected; k++)
                    selected = !nms_suppress(bx + 4 * kept[k], bx + 4 * top.index, center, iou);
                if (!selected)
                    continue;
                if (n_kept >= mpc)
                    break;
                kept[n_kept++] = top.index;
                if (!want_count) {
                    if (count >= rows) { /* cannot happen: rows = B * C * min(mpc, N) */
                        free(heap);
                        free(kept);
                        return mera_fail(err, MERA_ERR_INVALID, "internal: more rows selected than the %lld of the "
                                         "output", (long long)rows);
                    }
                    out[3 * count] = b;
                    out[3 * count + 1] = c;
                    out[3 * count + 2] = top.index;
                }
                count++;
            }
        }
    free(heap);
    free(kept);
    if (want_count)
        out[0] = count;
    else if (packed)
        out[3 * rows] = count;
    return MERA_OK;
}

/* ---- gather by run-time indices ----------------------------------------- */

REF_KERNEL(ref_gather)
{
    const mera_type *x = a->in_types[0], *it = a->in_types[1];
    int64_t axis = mera_attr_int(a->node, "axis");
    if (axis < 0)
        axis += x->rank;
    size_t elem = mera_dtype_size(x->dtype);
    int64_t outer = 1, inner = 1, n = x->shape[axis], ni = mera_type_numel(it);
    for (int64_t d = 0; d < axis; d++)
        outer *= x->shape[d];
    for (int d = (int)axis + 1; d < x->rank; d++)
        inner *= x->shape[d];
    const int64_t *idx = a->in[1];
    for (int64_t j = 0; j < ni; j++)
        if (idx[j] < -n || idx[j] >= n)
            return mera_fail(err, MERA_ERR_RUNTIME, "index %lld (element %lld of the indices) is out of range for "
                             "axis %lld of size %lld (valid: %lld..%lld)", (long long)idx[j], (long long)j,
                             (long long)axis, (long long)n, (long long)-n, (long long)(n - 1));
    const unsigned char *src = a->in[0];
    unsigned char *dst = a->out[0];
    size_t run = (size_t)inner * elem;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t k = idx[j] < 0 ? idx[j] + n : idx[j];
            memcpy(dst + ((size_t)o * (size_t)ni + (size_t)j) * run, src + ((size_t)o * (size_t)n + (size_t)k) * run,
                   run);
        }
    return MERA_OK;
}

/* ---- argmax / argmin ----------------------------------------------------- */

/* float data, or the integers of quantized data (a positive scale keeps their order) */
static double arg_value(const mera_type *t, const void *p, int64_t i)
{
    switch (t->dtype) {
    case MERA_DTYPE_FLOAT32: return ((const float *)p)[i];
    case MERA_DTYPE_UINT8: return ((const uint8_t *)p)[i];
    case MERA_DTYPE_INT8: return ((const int8_t *)p)[i];
    default: return 0.0;
    }
}

REF_KERNEL(ref_argmax)
{
    (void)err;
    const mera_type *x = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis");
    if (axis < 0)
        axis += x->rank;
    int last = mera_attr_int(a->node, "select_last_index") != 0, is_min = a->node->op == MERA_OP_ARGMIN;
    int64_t outer = 1, inner = 1, n = x->shape[axis];
    for (int64_t d = 0; d < axis; d++)
        outer *= x->shape[d];
    for (int d = (int)axis + 1; d < x->rank; d++)
        inner *= x->shape[d];
    int64_t *out = a->out[0];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            int64_t best = 0;
            double bv = arg_value(x, a->in[0], o * n * inner + in);
            for (int64_t j = 1; j < n; j++) {
                double v = arg_value(x, a->in[0], (o * n + j) * inner + in);
                int better = is_min ? (last ? v <= bv : v < bv) : (last ? v >= bv : v > bv);
                if (better) {
                    best = j;
                    bv = v;
                }
            }
            out[o * inner + in] = best;
        }
    return MERA_OK;
}

/* ---- rows_valid ---------------------------------------------------------- */

REF_KERNEL(ref_rows_valid)
{
    const mera_type *x = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis"), count = *(const int64_t *)a->in[1];
    if (axis < 0)
        axis += x->rank;
    if (count < 0 || count > x->shape[axis])
        return mera_fail(err, MERA_ERR_RUNTIME, "the count %lld is outside 0..%lld", (long long)count,
                         (long long)x->shape[axis]);
    memcpy(a->out[0], a->in[0], mera_type_nbytes(x));
    return MERA_OK;
}
