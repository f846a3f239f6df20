/* Data-dependent indexing on the host (docs/frontends.md, "NonZero, GatherND, ScatterND"): compare (ONNX Greater,
 * Less, Equal, GreaterOrEqual, LessOrEqual as uint8 0/1), nonzero (its indices with a static maximum count and the
 * count of valid ones), gather_nd and scatter_nd by run-time int64 indices; where, cumsum and gather_elements. */
#include <stdio.h>
#include <string.h>

#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* element i of a plain numeric tensor, as a double (int64 beyond 2^53 is compared below without this) */
static double num_at(mera_dtype dt, const void *p, int64_t i)
{
    switch (dt) {
    case MERA_DTYPE_FLOAT32: return ((const float *)p)[i];
    case MERA_DTYPE_INT8: return ((const int8_t *)p)[i];
    case MERA_DTYPE_UINT8: return ((const uint8_t *)p)[i];
    case MERA_DTYPE_INT32: return ((const int32_t *)p)[i];
    default: return (double)((const int64_t *)p)[i];
    }
}

/* ---- compare -------------------------------------------------------------- */

enum { CMP_GT, CMP_LT, CMP_EQ, CMP_GE, CMP_LE };

static int cmp_kind(const char *k)
{
    return strcmp(k, "greater") == 0 ? CMP_GT : strcmp(k, "less") == 0 ? CMP_LT : strcmp(k, "equal") == 0 ? CMP_EQ
           : strcmp(k, "greater_or_equal") == 0 ? CMP_GE : strcmp(k, "less_or_equal") == 0 ? CMP_LE : -1;
}

REF_KERNEL(ref_compare)
{
    const mera_type *ot = a->out_types[0];
    int k = cmp_kind(mera_attr_string(a->node, "kind"));
    if (k < 0)
        return mera_fail(err, MERA_ERR_ATTR, "compare '%s': kind '%s'", a->node->name,
                         mera_attr_string(a->node, "kind"));
    mera_dtype dt = a->in_types[0]->dtype;
    int r = ot->rank;
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK], idx[MERA_MAX_RANK] = {0}, n = mera_type_numel(ot), oa = 0, ob = 0;
    ref_bcast_strides(a->in_types[0], ot, sa);
    ref_bcast_strides(a->in_types[1], ot, sb);
    uint8_t *y = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        int lt, gt;
        if (dt == MERA_DTYPE_INT64) { /* exact: int64 beyond 2^53 is not a double */
            int64_t x = ((const int64_t *)a->in[0])[oa], v = ((const int64_t *)a->in[1])[ob];
            lt = x < v;
            gt = x > v;
        } else {
            double x = num_at(dt, a->in[0], oa), v = num_at(dt, a->in[1], ob);
            lt = x < v;
            gt = x > v;
            if (x != x || v != v) { /* NaN: only != holds */
                y[i] = 0;
                goto next;
            }
        }
        switch (k) {
        case CMP_GT: y[i] = (uint8_t)gt; break;
        case CMP_LT: y[i] = (uint8_t)lt; break;
        case CMP_EQ: y[i] = (uint8_t)(!lt && !gt); break;
        case CMP_GE: y[i] = (uint8_t)!lt; break;
        default: y[i] = (uint8_t)!gt; break;
        }
    next:
        ref_next_index2(r, ot->shape, idx, sa, &oa, sb, &ob);
    }
    return MERA_OK;
}

/* ---- nonzero ---------------------------------------------------------------
 * Output int64 [rank + 1, numel]: column j of the first rank rows is the index of the j-th nonzero element in
 * row-major order (ONNX NonZero), columns past the count are 0; the last row is [count, 0, ...]. */
REF_KERNEL(ref_nonzero)
{
    (void)err;
    const mera_type *x = a->in_types[0];
    int r = x->rank;
    int64_t n = mera_type_numel(x), idx[MERA_MAX_RANK] = {0}, count = 0;
    int64_t *out = a->out[0];
    memset(out, 0, (size_t)(r + 1) * (size_t)n * sizeof *out);
    for (int64_t i = 0; i < n; i++) {
        int nz = x->dtype == MERA_DTYPE_INT64 ? ((const int64_t *)a->in[0])[i] != 0 : num_at(x->dtype, a->in[0], i) != 0.0;
        if (nz) {
            for (int d = 0; d < r; d++)
                out[d * n + count] = idx[d];
            count++;
        }
        for (int d = r - 1; d >= 0; d--) {
            if (++idx[d] < x->shape[d])
                break;
            idx[d] = 0;
        }
    }
    out[r * n] = count;
    return MERA_OK;
}

/* ---- gather_nd / scatter_nd ---------------------------------------------- */

/* The element offset (in units of the slice after the k indexed axes) of index tuple `ix` into axes b..b+k-1 of
 * `t`; a negative index counts from the end. -1 and a message when out of range. */
static int64_t nd_offset(const mera_type *t, int b, int k, const int64_t *ix, int64_t tuple, mera_error *err,
                         const char *what)
{
    int64_t off = 0;
    for (int d = 0; d < k; d++) {
        int64_t s = t->shape[b + d], v = ix[d];
        if (v < -s || v >= s) {
            mera_fail(err, MERA_ERR_RUNTIME, "%s index %lld (tuple %lld, position %d) is out of range for axis %d of "
                      "size %lld (valid: %lld..%lld)", what, (long long)v, (long long)tuple, d, b + d, (long long)s,
                      (long long)-s, (long long)(s - 1));
            return -1;
        }
        off = off * s + (v < 0 ? v + s : v);
    }
    return off;
}

REF_KERNEL(ref_gather_nd)
{
    const mera_type *x = a->in_types[0], *it = a->in_types[1];
    int b = (int)mera_attr_int(a->node, "batch_dims"), k = (int)it->shape[it->rank - 1];
    size_t elem = mera_dtype_size(x->dtype);
    int64_t batches = 1, per_batch = 1, tuples = 1, inner = 1;
    for (int d = 0; d < b; d++)
        batches *= x->shape[d];
    for (int d = b; d < x->rank; d++)
        per_batch *= x->shape[d];
    for (int d = b; d < it->rank - 1; d++)
        tuples *= it->shape[d];
    for (int d = b + k; d < x->rank; d++)
        inner *= x->shape[d];
    const int64_t *ix = a->in[1];
    const unsigned char *src = a->in[0];
    unsigned char *dst = a->out[0];
    size_t run = (size_t)inner * elem;
    for (int64_t bi = 0; bi < batches; bi++)
        for (int64_t j = 0; j < tuples; j++) {
            int64_t t = bi * tuples + j, off = nd_offset(x, b, k, ix + t * k, t, err, "gather_nd");
            if (off < 0)
                return MERA_ERR_RUNTIME;
            memcpy(dst + (size_t)t * run, src + ((size_t)(bi * per_batch) + (size_t)(off * inner)) * elem, run);
        }
    return MERA_OK;
}

#define SCATTER_APPLY(T, U)                                                                                        \
    do {                                                                                                          \
        T *o = (T *)out + off * inner;                                                                            \
        const T *u = (const T *)upd + j * inner;                                                                  \
        for (int64_t e = 0; e < inner; e++)                                                                       \
            switch (red) {                                                                                        \
            case 1: o[e] = (T)((U)o[e] + (U)u[e]); break; /* integers wrap */                                      \
            case 2: o[e] = (T)((U)o[e] * (U)u[e]); break;                                                         \
            case 3: o[e] = u[e] > o[e] ? u[e] : o[e]; break;                                                      \
            default: o[e] = u[e] < o[e] ? u[e] : o[e]; break;                                                     \
            }                                                                                                     \
    } while (0)

REF_KERNEL(ref_scatter_nd)
{
    const mera_type *x = a->in_types[0], *it = a->in_types[1];
    const char *rs = mera_attr_string(a->node, "reduction");
    int red = strcmp(rs, "none") == 0 ? 0 : strcmp(rs, "add") == 0 ? 1 : strcmp(rs, "mul") == 0 ? 2
              : strcmp(rs, "max") == 0 ? 3 : strcmp(rs, "min") == 0 ? 4 : -1;
    if (red < 0)
        return mera_fail(err, MERA_ERR_ATTR, "scatter_nd '%s': reduction '%s'", a->node->name, rs);
    int k = (int)it->shape[it->rank - 1];
    size_t elem = mera_dtype_size(x->dtype);
    int64_t tuples = 1, inner = 1;
    for (int d = 0; d < it->rank - 1; d++)
        tuples *= it->shape[d];
    for (int d = k; d < x->rank; d++)
        inner *= x->shape[d];
    const int64_t *ix = a->in[1];
    const void *upd = a->in[2];
    void *out = a->out[0];
    memcpy(out, a->in[0], mera_type_nbytes(x));
    for (int64_t j = 0; j < tuples; j++) { /* in order: with reduction none a later tuple overwrites an earlier one */
        int64_t off = nd_offset(x, 0, k, ix + j * k, j, err, "scatter_nd");
        if (off < 0)
            return MERA_ERR_RUNTIME;
        if (red == 0) {
            memcpy((unsigned char *)out + (size_t)(off * inner) * elem, (const unsigned char *)upd + (size_t)(j * inner) * elem,
                   (size_t)inner * elem);
            continue;
        }
        switch (x->dtype) {
        case MERA_DTYPE_FLOAT32: SCATTER_APPLY(float, float); break;
        case MERA_DTYPE_INT32: SCATTER_APPLY(int32_t, uint32_t); break;
        case MERA_DTYPE_INT64: SCATTER_APPLY(int64_t, uint64_t); break;
        default:
            return mera_fail(err, MERA_ERR_DTYPE, "scatter_nd '%s': reduction '%s' of %s data", a->node->name, rs,
                             mera_dtype_name(x->dtype));
        }
    }
    return MERA_OK;
}
#undef SCATTER_APPLY

/* ---- where, cumsum, gather_elements (issue 13) ------------------------------ */

/* out[i] = cond[bcast] != 0 ? x[bcast] : y[bcast]; any plain dtype (bytes move) */
REF_KERNEL(ref_where)
{
    (void)err;
    const mera_type *ot = a->out_types[0], *ct = a->in_types[0];
    int r = ot->rank;
    int64_t sc[MERA_MAX_RANK], sx[MERA_MAX_RANK], sy[MERA_MAX_RANK], idx[MERA_MAX_RANK] = {0};
    int64_t n = mera_type_numel(ot), oc = 0, ox = 0, oy = 0, unused = 0;
    int64_t zero[MERA_MAX_RANK] = {0};
    ref_bcast_strides(ct, ot, sc);
    ref_bcast_strides(a->in_types[1], ot, sx);
    ref_bcast_strides(a->in_types[2], ot, sy);
    size_t elem = mera_dtype_size(ot->dtype);
    const unsigned char *x = a->in[1], *y = a->in[2];
    unsigned char *z = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        int t = ct->dtype == MERA_DTYPE_INT64 ? ((const int64_t *)a->in[0])[oc] != 0
                                               : num_at(ct->dtype, a->in[0], oc) != 0.0;
        memcpy(z + (size_t)i * elem, t ? x + (size_t)ox * elem : y + (size_t)oy * elem, elem);
        int64_t save[MERA_MAX_RANK];
        memcpy(save, idx, sizeof save);
        ref_next_index2(r, ot->shape, idx, sc, &oc, sx, &ox);
        ref_next_index2(r, ot->shape, save, sy, &oy, zero, &unused);
    }
    return MERA_OK;
}

/* Sizes around axis `axis` of t: outer (before), len (the axis), inner (after). */
static void axis_split(const mera_type *t, int axis, int64_t *outer, int64_t *len, int64_t *inner)
{
    *outer = *inner = 1;
    for (int d = 0; d < axis; d++)
        *outer *= t->shape[d];
    for (int d = axis + 1; d < t->rank; d++)
        *inner *= t->shape[d];
    *len = t->shape[axis];
}

/* Running sums along the axis in order (from the end for reverse), each output the sum before (exclusive) or after
 * adding its element; float32 adds in float32 as onnxruntime's loop does, integers wrap. */
#define CUMSUM_LOOP(T, ACC, ADD)                                                                        \
    do {                                                                                                \
        const T *x = a->in[0];                                                                          \
        T *y = a->out[0];                                                                               \
        for (int64_t o = 0; o < outer; o++)                                                             \
            for (int64_t in = 0; in < inner; in++) {                                                    \
                ACC s = 0;                                                                              \
                for (int64_t j = 0; j < len; j++) {                                                     \
                    int64_t p = o * len * inner + (rev ? len - 1 - j : j) * inner + in;                 \
                    T v = x[p];                                                                         \
                    if (excl) {                                                                         \
                        y[p] = (T)s;                                                                    \
                        s = ADD(s, v);                                                                  \
                    } else {                                                                            \
                        s = ADD(s, v);                                                                  \
                        y[p] = (T)s;                                                                    \
                    }                                                                                   \
                }                                                                                       \
            }                                                                                           \
    } while (0)
#define ADD_F(s, v) ((s) + (v))
#define ADD_WRAP(s, v) ((s) + (uint64_t)(int64_t)(v))

REF_KERNEL(ref_cumsum)
{
    (void)err;
    const mera_type *t = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis"), outer, len, inner;
    if (axis < 0)
        axis += t->rank;
    int excl = mera_attr_int(a->node, "exclusive") != 0, rev = mera_attr_int(a->node, "reverse") != 0;
    axis_split(t, (int)axis, &outer, &len, &inner);
    if (t->dtype == MERA_DTYPE_FLOAT32)
        CUMSUM_LOOP(float, float, ADD_F);
    else if (t->dtype == MERA_DTYPE_INT32)
        CUMSUM_LOOP(int32_t, uint64_t, ADD_WRAP);
    else
        CUMSUM_LOOP(int64_t, uint64_t, ADD_WRAP);
    return MERA_OK;
}
#undef CUMSUM_LOOP
#undef ADD_F
#undef ADD_WRAP

/* out[i] = data[i with axis a replaced by indices[i]]; a negative index counts from the end, one out of range is a
 * run-time error naming it. Bytes move (any plain dtype). */
REF_KERNEL(ref_gather_elements)
{
    const mera_type *x = a->in_types[0], *it = a->in_types[1];
    int r = x->rank;
    int64_t axis = mera_attr_int(a->node, "axis");
    if (axis < 0)
        axis += r;
    int64_t xs[MERA_MAX_RANK], idx[MERA_MAX_RANK] = {0}, n = mera_type_numel(it), s = x->shape[axis];
    xs[r - 1] = 1;
    for (int d = r - 2; d >= 0; d--)
        xs[d] = xs[d + 1] * x->shape[d + 1];
    size_t elem = mera_dtype_size(x->dtype);
    const int64_t *ix = a->in[1];
    const unsigned char *src = a->in[0];
    unsigned char *dst = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        int64_t v = ix[i];
        if (v < -s || v >= s)
            return mera_fail(err, MERA_ERR_RUNTIME, "gather_elements '%s': index %lld (element %lld) is out of range "
                             "for axis %lld of size %lld (valid: %lld..%lld)", a->node->name, (long long)v,
                             (long long)i, (long long)axis, (long long)s, (long long)-s, (long long)(s - 1));
        int64_t off = 0;
        for (int d = 0; d < r; d++)
            off += (d == axis ? (v < 0 ? v + s : v) : idx[d]) * xs[d];
        memcpy(dst + (size_t)i * elem, src + (size_t)off * elem, elem);
        for (int d = r - 1; d >= 0; d--) {
            if (++idx[d] < it->shape[d])
                break;
            idx[d] = 0;
        }
    }
    return MERA_OK;
}
