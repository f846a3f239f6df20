/* dtypes, layouts and tensor types: names, sizes, validation, formatting. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir/ir.h"

static const struct {
    const char *name, *short_name;
    size_t size;
} dtype_info[MERA_DTYPE_COUNT] = {
    [MERA_DTYPE_FLOAT32] = {"float32", "f32", 4},
    [MERA_DTYPE_INT8] = {"int8", "i8", 1},
    [MERA_DTYPE_UINT8] = {"uint8", "u8", 1},
    [MERA_DTYPE_INT32] = {"int32", "i32", 4},
    [MERA_DTYPE_BFLOAT16] = {"bfloat16", "bf16", 2},
    [MERA_DTYPE_INT64] = {"int64", "i64", 8},
};

const char *mera_dtype_name(mera_dtype t)
{
    return (unsigned)t < MERA_DTYPE_COUNT ? dtype_info[t].name : "?";
}

const char *mera_dtype_short(mera_dtype t)
{
    return (unsigned)t < MERA_DTYPE_COUNT ? dtype_info[t].short_name : "?";
}

size_t mera_dtype_size(mera_dtype t)
{
    return (unsigned)t < MERA_DTYPE_COUNT ? dtype_info[t].size : 0;
}

int mera_dtype_parse(const char *s, mera_dtype *out)
{
    if (!s)
        return -1;
    for (int i = 0; i < MERA_DTYPE_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0 || strcmp(s, dtype_info[i].short_name) == 0) {
            *out = (mera_dtype)i;
            return 0;
        }
    return -1;
}

int mera_dtype_is_quantized_int(mera_dtype t)
{
    return t == MERA_DTYPE_INT8 || t == MERA_DTYPE_UINT8;
}

static const char *const layout_names[MERA_LAYOUT_COUNT] = {
#define X(e, s) [MERA_LAYOUT_##e] = s,
    MERA_LAYOUTS(X)
#undef X
};

const char *mera_layout_name(mera_layout l)
{
    return (unsigned)l < MERA_LAYOUT_COUNT ? layout_names[l] : "?";
}

int mera_layout_parse(const char *s, mera_layout *out)
{
    if (!s)
        return -1;
    for (int i = 0; i < MERA_LAYOUT_COUNT; i++)
        if (strcmp(s, layout_names[i]) == 0) {
            *out = (mera_layout)i;
            return 0;
        }
    return -1;
}

static const char *const rounding_names[MERA_ROUNDING_COUNT] = {
#define X(e, s) [MERA_ROUNDING_##e] = s,
    MERA_ROUNDINGS(X)
#undef X
};

const char *mera_rounding_name(mera_rounding r)
{
    return (unsigned)r < MERA_ROUNDING_COUNT ? rounding_names[r] : NULL;
}

int mera_rounding_parse(const char *s, mera_rounding *out)
{
    for (int i = 0; s && i < MERA_ROUNDING_COUNT; i++)
        if (strcmp(s, rounding_names[i]) == 0) {
            *out = (mera_rounding)i;
            return 0;
        }
    return -1;
}

int64_t mera_type_numel(const mera_type *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->shape[i];
    return n;
}

size_t mera_type_nbytes(const mera_type *t)
{
    return (size_t)mera_type_numel(t) * mera_dtype_size(t->dtype);
}

int mera_type_equal(const mera_type *a, const mera_type *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank || a->layout != b->layout || a->q.kind != b->q.kind)
        return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    if (a->q.kind == MERA_QUANT_PER_TENSOR)
        return a->q.scale == b->q.scale && a->q.zero_point == b->q.zero_point;
    if (a->q.kind == MERA_QUANT_PER_AXIS) {
        if (a->q.axis != b->q.axis || a->q.count != b->q.count)
            return 0;
        return memcmp(a->q.scales, b->q.scales, (size_t)a->q.count * sizeof(double)) == 0 &&
               memcmp(a->q.zero_points, b->q.zero_points, (size_t)a->q.count * sizeof(int32_t)) == 0;
    }
    return 1;
}

/* Tensors larger than this are refused: it keeps every byte count inside
 * int64 and size_t with room to spare. */
#define MAX_NUMEL ((int64_t)1 << 40)

static mera_status check_zp(mera_dtype dt, int64_t zp, mera_error *err, const char *what)
{
    int64_t lo = dt == MERA_DTYPE_UINT8 ? 0 : -128, hi = dt == MERA_DTYPE_UINT8 ? 255 : 127;
    if (zp < lo || zp > hi)
        return mera_fail(err, MERA_ERR_DTYPE, "%s %lld is out of range [%lld, %lld] for %s", what,
                         (long long)zp, (long long)lo, (long long)hi, mera_dtype_name(dt));
    return MERA_OK;
}

mera_status mera_type_validate(const mera_type *t, mera_error *err)
{
    if ((unsigned)t->dtype >= MERA_DTYPE_COUNT)
        return mera_fail(err, MERA_ERR_DTYPE, "unknown dtype code %d", (int)t->dtype);
    if (t->rank < 0 || t->rank > MERA_MAX_RANK)
        return mera_fail(err, MERA_ERR_SHAPE, "rank %d is outside 0..%d", t->rank, MERA_MAX_RANK);
    if ((unsigned)t->layout >= MERA_LAYOUT_COUNT)
        return mera_fail(err, MERA_ERR_SHAPE, "unknown layout code %d", (int)t->layout);
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++) {
        if (t->shape[i] < 1)
            return mera_fail(err, MERA_ERR_SHAPE, "axis %d has size %lld; sizes must be >= 1", i,
                             (long long)t->shape[i]);
        if (t->shape[i] > MAX_NUMEL || n > MAX_NUMEL / t->shape[i])
            return mera_fail(err, MERA_ERR_SHAPE, "tensor is too large (more than 2^40 elements)");
        n *= t->shape[i];
    }
    if (t->layout != MERA_LAYOUT_ANY && t->rank != 4)
        return mera_fail(err, MERA_ERR_SHAPE, "layout %s needs rank 4, got rank %d",
                         mera_layout_name(t->layout), t->rank);
    switch (t->q.kind) {
    case MERA_QUANT_NONE:
        return MERA_OK;
    case MERA_QUANT_PER_TENSOR:
        if (!mera_dtype_is_quantized_int(t->dtype))
            return mera_fail(err, MERA_ERR_DTYPE, "quantization parameters need int8 or uint8, not %s",
                             mera_dtype_name(t->dtype));
        if (!(t->q.scale > 0) || !isfinite(t->q.scale))
            return mera_fail(err, MERA_ERR_DTYPE, "scale must be a positive finite number, got %g", t->q.scale);
        return check_zp(t->dtype, t->q.zero_point, err, "zero point");
    case MERA_QUANT_PER_AXIS:
        if (!mera_dtype_is_quantized_int(t->dtype))
            return mera_fail(err, MERA_ERR_DTYPE, "quantization parameters need int8 or uint8, not %s",
                             mera_dtype_name(t->dtype));
        if (t->q.axis < 0 || t->q.axis >= t->rank)
            return mera_fail(err, MERA_ERR_DTYPE, "quantization axis %d is out of range for rank %d",
                             t->q.axis, t->rank);
        if (t->q.count != t->shape[t->q.axis])
            return mera_fail(err, MERA_ERR_DTYPE, "%lld scales given for axis %d of size %lld",
                             (long long)t->q.count, t->q.axis, (long long)t->shape[t->q.axis]);
        if (!t->q.scales || !t->q.zero_points)
            MERA_BUG("per-axis qparams without arrays");
        for (int64_t i = 0; i < t->q.count; i++) {
            if (!(t->q.scales[i] > 0) || !isfinite(t->q.scales[i]))
                return mera_fail(err, MERA_ERR_DTYPE, "scale[%lld] must be a positive finite number, got %g",
                                 (long long)i, t->q.scales[i]);
            mera_status st = check_zp(t->dtype, t->q.zero_points[i], err, "zero point");
            if (st)
                return st;
        }
        return MERA_OK;
    }
    return mera_fail(err, MERA_ERR_DTYPE, "unknown quantization kind %d", (int)t->q.kind);
}

int mera_shape_format(const int64_t *shape, int rank, char *buf, size_t n)
{
    size_t len = 0;
    len += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank; i++)
        len += (size_t)snprintf(buf + (len < n ? len : n), len < n ? n - len : 0, "%s%lld", i ? "," : "",
                                (long long)shape[i]);
    len += (size_t)snprintf(buf + (len < n ? len : n), len < n ? n - len : 0, "]");
    return (int)len;
}

/* 64-bit FNV-1a, used to summarize long per-axis arrays in the text form. */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

int mera_type_format(const mera_type *t, char *buf, size_t n)
{
    char shape[160];
    mera_shape_format(t->shape, t->rank, shape, sizeof shape);
    int len = snprintf(buf, n, "%s%s", mera_dtype_short(t->dtype), shape);
    size_t at = (size_t)len < n ? (size_t)len : n;
    if (t->layout != MERA_LAYOUT_ANY)
        len += snprintf(buf + at, n - at, " %s", mera_layout_name(t->layout));
    at = (size_t)len < n ? (size_t)len : n;
    if (t->q.kind == MERA_QUANT_PER_TENSOR) {
        len += snprintf(buf + at, n - at, " q(%.17g, %d)", t->q.scale, (int)t->q.zero_point);
    } else if (t->q.kind == MERA_QUANT_PER_AXIS) {
        double lo = t->q.scales[0], hi = t->q.scales[0];
        int zero_zps = 1;
        for (int64_t i = 0; i < t->q.count; i++) {
            lo = t->q.scales[i] < lo ? t->q.scales[i] : lo;
            hi = t->q.scales[i] > hi ? t->q.scales[i] : hi;
            zero_zps &= t->q.zero_points[i] == 0;
        }
        uint64_t h = fnv1a(1469598103934665603ull, t->q.scales, (size_t)t->q.count * sizeof(double));
        h = fnv1a(h, t->q.zero_points, (size_t)t->q.count * sizeof(int32_t));
        len += snprintf(buf + at, n - at, " q(axis=%d, scales=%.9g..%.9g, zero_points=%s, fnv=%016llx)",
                        t->q.axis, lo, hi, zero_zps ? "0" : "mixed", (unsigned long long)h);
    }
    return len;
}
