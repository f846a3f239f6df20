/* onnxruntime's dynamic quantization on the host: dynamic_quantize_linear,
 * matmul_integer, conv_integer, cast and dynamic_quantize_lstm; gru and topk;
 * the run-time integer and rounding ops floor, ceil, round and int_arith.
 *
 * The integer ops are exact: products of (value - zero point) summed in
 * int32, as onnxruntime's MLAS computes them. dynamic_quantize_linear is
 * onnxruntime's formula (GetQuantizationParameter and MlasQuantizeLinear)
 * step by step in float32; docs/numerics.md gives it. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* The value at flat index i of a plain int8/uint8 tensor. */
static inline int32_t int8_at(const mera_type *t, const void *p, int64_t i)
{
    return t->dtype == MERA_DTYPE_UINT8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

/* A zero point input: its value for column/channel j (one value: the same for every j), 0 when omitted. */
static inline int32_t zero_point_at(const mera_kernel_args *a, int i, int64_t j)
{
    if (i >= a->n_inputs || !a->in[i])
        return 0;
    return int8_at(a->in_types[i], a->in[i], mera_type_numel(a->in_types[i]) == 1 ? 0 : j);
}

/* onnxruntime's GetQuantizationParameter<uint8_t>: the range widened to hold 0,
 * scale = (max - min) / 255 (1 when max == min), zero point = rne(clamp(0 - min / scale, 0, 255)). */
static void dql_params(const float *x, int64_t n, float *scale, uint8_t *zp)
{
    float mn = 0.0f, mx = 0.0f;
    if (n > 0) {
        mn = mx = x[0];
        for (int64_t i = 1; i < n; i++) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        mn = mn < 0.0f ? mn : 0.0f;
        mx = mx > 0.0f ? mx : 0.0f;
    }
    float s = mx == mn ? 1.0f : (mx - mn) / 255.0f;
    float z = 0.0f - mn / s;
    z = z < 0.0f ? 0.0f : z > 255.0f ? 255.0f : z;
    *scale = s;
    *zp = (uint8_t)nearbyintf(z);
}

/* y = clamp(rne(x / scale) + zp, 0, 255): MlasQuantizeLinear's division, rounding and clamp */
REF_KERNEL(ref_dynamic_quantize_linear)
{
    (void)err;
    const float *x = a->in[0];
    int64_t n = mera_type_numel(a->in_types[0]);
    float scale;
    uint8_t zp;
    dql_params(x, n, &scale, &zp);
    const char *which = mera_attr_string(a->node, "output");
    if (strcmp(which, "scale") == 0) {
        *(float *)a->out[0] = scale;
        return MERA_OK;
    }
    if (strcmp(which, "zero_point") == 0) {
        *(uint8_t *)a->out[0] = zp;
        return MERA_OK;
    }
    uint8_t *y = a->out[0];
    float lo = 0.0f - (float)zp, hi = 255.0f - (float)zp;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i] / scale;
        v = v < lo ? lo : v > hi ? hi : v;
        if (v != v) /* NaN: no defined result in ONNX; kept in range here */
            v = hi;
        y[i] = (uint8_t)((int32_t)nearbyintf(v) + zp);
    }
    return MERA_OK;
}

/* [..., M, K] @ [..., K, N] of (a - a_zp) and (b - b_zp[n]), summed in int32 */
REF_KERNEL(ref_matmul_integer)
{
    (void)err;
    const mera_type *at = a->in_types[0], *bt = a->in_types[1], *ot = a->out_types[0];
    int r = ot->rank;
    int64_t M = ot->shape[r - 2], N = ot->shape[r - 1], K = at->shape[at->rank - 1];
    int64_t batches = mera_type_numel(ot) / (M * N > 0 ? M * N : 1);
    int64_t sa[MERA_MAX_RANK] = {0}, sb[MERA_MAX_RANK] = {0}, idx[MERA_MAX_RANK] = {0};
    int64_t stride_a = 1, stride_b = 1;
    for (int d = r - 3; d >= 0; d--) {
        int da = d - (r - at->rank), db = d - (r - bt->rank);
        sa[d] = da >= 0 && at->shape[da] != 1 ? stride_a : 0;
        sb[d] = db >= 0 && bt->shape[db] != 1 ? stride_b : 0;
        stride_a *= da >= 0 ? at->shape[da] : 1;
        stride_b *= db >= 0 ? bt->shape[db] : 1;
    }
    int32_t azp = zero_point_at(a, 2, 0);
    int32_t *z = a->out[0];
    int64_t ma = 0, mb = 0;
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t oa = ma * M * K, ob = mb * K * N;
        int32_t *zo = z + bi * M * N;
        for (int64_t m = 0; m < M; m++)
            for (int64_t nn = 0; nn < N; nn++) {
                int32_t bzp = zero_point_at(a, 3, nn);
                uint32_t s = 0; /* int32 arithmetic that wraps (as MLAS's) instead of overflowing */
                for (int64_t k = 0; k < K; k++)
                    s += (uint32_t)((int8_at(at, a->in[0], oa + m * K + k) - azp) *
                                    (int8_at(bt, a->in[1], ob + k * N + nn) - bzp));
                zo[m * N + nn] = (int32_t)s;
            }
        ref_next_index2(r - 2, ot->shape, idx, sa, &ma, sb, &mb);
    }
    return MERA_OK;
}

/* NCHW: y[n, m, oh, ow] = sum over the group's c, kh, kw of (x - x_zp) (w[m] - w_zp[m]); taps in the padding add 0 */
REF_KERNEL(ref_conv_integer)
{
    (void)err;
    const mera_node *node = a->node;
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *yt = a->out_types[0];
    const int64_t *st = ref_ints(node, "strides"), *pad = ref_ints(node, "padding"), *dil = ref_ints(node, "dilation");
    int64_t groups = mera_attr_int(node, "groups");
    int64_t N = xt->shape[0], C = xt->shape[1], H = xt->shape[2], W = xt->shape[3];
    int64_t M = wt->shape[0], CG = wt->shape[1], KH = wt->shape[2], KW = wt->shape[3];
    int64_t OH = yt->shape[2], OW = yt->shape[3], MG = M / groups;
    int32_t xzp = zero_point_at(a, 2, 0);
    int32_t *y = a->out[0];
    for (int64_t n = 0; n < N; n++)
        for (int64_t m = 0; m < M; m++) {
            int64_t g = m / MG;
            int32_t wzp = zero_point_at(a, 3, m);
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    uint32_t s = 0; /* int32 arithmetic that wraps (as MLAS's) instead of overflowing */
                    for (int64_t ci = 0; ci < CG; ci++) {
                        int64_t c = g * CG + ci;
                        for (int64_t kh = 0; kh < KH; kh++) {
                            int64_t ih = oh * st[0] - pad[0] + kh * dil[0];
                            if (ih < 0 || ih >= H)
                                continue;
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t iw = ow * st[1] - pad[1] + kw * dil[1];
                                if (iw < 0 || iw >= W)
                                    continue;
                                int32_t xv = int8_at(xt, a->in[0], ((n * C + c) * H + ih) * W + iw) - xzp;
                                int32_t wv = int8_at(wt, a->in[1], ((m * CG + ci) * KH + kh) * KW + kw) - wzp;
                                s += (uint32_t)(xv * wv);
                            }
                        }
                    }
                    y[((n * M + m) * OH + oh) * OW + ow] = (int32_t)s;
                }
        }
    return MERA_OK;
}

/* Element i of a plain tensor as int64 (integer dtypes) or double (float32). */
static int64_t int_at(mera_dtype dt, const void *p, int64_t i)
{
    switch (dt) {
    case MERA_DTYPE_INT8: return ((const int8_t *)p)[i];
    case MERA_DTYPE_UINT8: return ((const uint8_t *)p)[i];
    case MERA_DTYPE_INT32: return ((const int32_t *)p)[i];
    default: return ((const int64_t *)p)[i];
    }
}

/* Store v (an integer, in range or wrapped by the caller's choice) as dtype dt: the low bits, two's complement. */
static void int_put(mera_dtype dt, void *p, int64_t i, int64_t v)
{
    switch (dt) {
    case MERA_DTYPE_INT8: ((int8_t *)p)[i] = (int8_t)(uint8_t)(uint64_t)v; break;
    case MERA_DTYPE_UINT8: ((uint8_t *)p)[i] = (uint8_t)(uint64_t)v; break;
    case MERA_DTYPE_INT32: ((int32_t *)p)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
    default: ((int64_t *)p)[i] = v; break;
    }
}

static void int_range(mera_dtype dt, double *lo, double *hi)
{
    switch (dt) {
    case MERA_DTYPE_INT8: *lo = -128.0, *hi = 127.0; break;
    case MERA_DTYPE_UINT8: *lo = 0.0, *hi = 255.0; break;
    case MERA_DTYPE_INT32: *lo = -2147483648.0, *hi = 2147483647.0; break;
    default: *lo = -9223372036854775808.0, *hi = 9223372036854775807.0; break;
    }
}

/* ONNX Cast between float32, int8, uint8, int32 and int64 (ops.c says how each pair converts) */
REF_KERNEL(ref_cast)
{
    const mera_type *t = a->in_types[0];
    mera_dtype to = a->out_types[0]->dtype, from = t->dtype;
    int64_t n = mera_type_numel(t);
    const void *x = a->in[0];
    void *y = a->out[0];
    if (from != MERA_DTYPE_FLOAT32 && from != MERA_DTYPE_INT8 && from != MERA_DTYPE_UINT8 &&
        from != MERA_DTYPE_INT32 && from != MERA_DTYPE_INT64)
        return mera_fail(err, MERA_ERR_DTYPE, "cast '%s': no conversion from %s", a->node->name,
                         mera_dtype_name(from));
    if (from == to) {
        memcpy(y, x, (size_t)n * mera_dtype_size(to));
    } else if (to == MERA_DTYPE_FLOAT32) {
        for (int64_t i = 0; i < n; i++)
            ((float *)y)[i] = (float)int_at(from, x, i); /* int64 -> float rounds to nearest */
    } else if (from == MERA_DTYPE_FLOAT32) {
        double lo, hi;
        int_range(to, &lo, &hi);
        for (int64_t i = 0; i < n; i++) {
            double v = ((const float *)x)[i];
            v = v != v ? 0.0 : trunc(v);
            /* hi of int64 is 2^63 as a double: saturate before converting */
            int64_t r = v <= lo ? (int64_t)lo : v >= hi ? (to == MERA_DTYPE_INT64 ? INT64_MAX : (int64_t)hi)
                                                        : (int64_t)v;
            int_put(to, y, i, r);
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            int_put(to, y, i, int_at(from, x, i));
    }
    return MERA_OK;
}

/* floor, ceil, round (halves to even: rintf in the default rounding mode, which mera never changes) */
#define ROUNDING_KERNEL(name, fn)                             \
    REF_KERNEL(ref_##name##_f32)                              \
    {                                                         \
        (void)err;                                            \
        int64_t n = mera_type_numel(a->out_types[0]);         \
        const float *x = a->in[0];                            \
        float *y = a->out[0];                                 \
        for (int64_t i = 0; i < n; i++)                       \
            y[i] = fn(x[i]);                                  \
        return MERA_OK;                                       \
    }
ROUNDING_KERNEL(floor, floorf)
ROUNDING_KERNEL(ceil, ceilf)
ROUNDING_KERNEL(round, rintf)
#undef ROUNDING_KERNEL

/* int_arith: lhs op rhs of int32 or int64 tensors, numpy broadcasting, in unsigned arithmetic (wraps) */
REF_KERNEL(ref_int_arith)
{
    const mera_type *ot = a->out_types[0];
    const char *kind = mera_attr_string(a->node, "kind");
    int k = strcmp(kind, "add") == 0 ? 0 : strcmp(kind, "sub") == 0 ? 1 : strcmp(kind, "mul") == 0 ? 2 : -1;
    if (k < 0)
        return mera_fail(err, MERA_ERR_ATTR, "int_arith '%s': kind '%s'", a->node->name, kind);
    int r = ot->rank;
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK], idx[MERA_MAX_RANK] = {0}, n = mera_type_numel(ot), oa = 0, ob = 0;
    ref_bcast_strides(a->in_types[0], ot, sa);
    ref_bcast_strides(a->in_types[1], ot, sb);
    mera_dtype dt = ot->dtype;
    for (int64_t i = 0; i < n; i++) {
        uint64_t x = (uint64_t)int_at(dt, a->in[0], oa), v = (uint64_t)int_at(dt, a->in[1], ob);
        uint64_t z = k == 0 ? x + v : k == 1 ? x - v : x * v;
        int_put(dt, a->out[0], i, (int64_t)z);
        ref_next_index2(r, ot->shape, idx, sa, &oa, sb, &ob);
    }
    return MERA_OK;
}

static float sigmoidf_(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* gru, ONNX's equations with gates in the order z, r, h:
 *   z = σ(W_z x + Wb_z + R_z h + Rb_z), r = σ(W_r x + Wb_r + R_r h + Rb_r)
 *   h~ = tanh(W_h x + Wb_h + R_h (r h) + Rb_h)      linear_before_reset = 0
 *   h~ = tanh(W_h x + Wb_h + r (R_h h + Rb_h))      linear_before_reset = 1
 *   h = (1 - z) h~ + z h; Y[t, dir, b] = h; the reverse direction walks t from the end. */
REF_KERNEL(ref_gru_f32)
{
    const mera_type *xt = a->in_types[0];
    int64_t S = xt->shape[0], B = xt->shape[1], I = xt->shape[2], H = mera_attr_int(a->node, "hidden_size");
    int lbr = (int)mera_attr_int(a->node, "linear_before_reset");
    const char *dir = mera_attr_string(a->node, "direction");
    int dirs = strcmp(dir, "bidirectional") == 0 ? 2 : 1, reverse_only = strcmp(dir, "reverse") == 0;
    const float *x = a->in[0], *w = a->in[1], *r = a->in[2];
    const float *bias = a->n_inputs > 3 ? a->in[3] : NULL, *h0 = a->n_inputs > 4 ? a->in[4] : NULL;
    float *y = a->out[0];
    float *scratch = ref_alloc(6 * H, sizeof(float));
    if (!scratch)
        return ref_nomem(err, a->node);
    float *gx = scratch, *h = scratch + 3 * H, *rh = scratch + 4 * H, *hc = scratch + 5 * H;
    for (int d = 0; d < dirs; d++) {
        int reverse = reverse_only || d == 1;
        const float *wd = w + d * 3 * H * I, *rd = r + d * 3 * H * H, *bd = bias ? bias + d * 6 * H : NULL;
        for (int64_t b = 0; b < B; b++) {
            for (int64_t k = 0; k < H; k++)
                h[k] = h0 ? h0[(d * B + b) * H + k] : 0.0f;
            for (int64_t step = 0; step < S; step++) {
                int64_t t = reverse ? S - 1 - step : step;
                const float *xv = x + (t * B + b) * I;
                for (int64_t j = 0; j < 3 * H; j++) { /* W x + Wb, every gate */
                    float s = 0.0f;
                    for (int64_t i = 0; i < I; i++)
                        s += wd[j * I + i] * xv[i];
                    gx[j] = s + (bd ? bd[j] : 0.0f);
                }
                for (int64_t j = 0; j < 2 * H; j++) { /* z and r */
                    float u = 0.0f;
                    for (int64_t k = 0; k < H; k++)
                        u += rd[j * H + k] * h[k];
                    gx[j] = sigmoidf_(gx[j] + u + (bd ? bd[3 * H + j] : 0.0f));
                }
                const float *zg = gx, *rg = gx + H;
                for (int64_t k = 0; k < H; k++)
                    rh[k] = lbr ? h[k] : rg[k] * h[k];
                for (int64_t j = 0; j < H; j++) {
                    float u = 0.0f;
                    for (int64_t k = 0; k < H; k++)
                        u += rd[(2 * H + j) * H + k] * rh[k];
                    float rb = bd ? bd[5 * H + j] : 0.0f;
                    hc[j] = tanhf(gx[2 * H + j] + (lbr ? rg[j] * (u + rb) : u + rb));
                }
                for (int64_t k = 0; k < H; k++) {
                    h[k] = (1.0f - zg[k]) * hc[k] + zg[k] * h[k];
                    y[((t * dirs + d) * B + b) * H + k] = h[k];
                }
            }
        }
    }
    free(scratch);
    return MERA_OK;
}

/* onnxruntime's quantized GEMM of the rows a [M, K] (float32) by the weight w [K, N] (plain int8/uint8, zero point
 * wzp): a is quantized as DynamicQuantizeLinear does (one scale and zero point for all M*K values), the products
 * summed in int32, and y[m, n] (+)= acc * (a_scale * w_scale[n]) (rnn_helpers.cc ComputeGemm). */
static void dq_gemm(const float *a, int64_t M, int64_t K, const mera_type *wt, const void *w, int64_t woff,
                    int32_t wzp, const float *wscale, int per_column, int64_t N, uint8_t *aq, int accumulate, float *y)
{
    float as;
    uint8_t az;
    dql_params(a, M * K, &as, &az);
    float lo = 0.0f - (float)az, hi = 255.0f - (float)az;
    for (int64_t i = 0; i < M * K; i++) {
        float v = a[i] / as;
        v = v < lo ? lo : v > hi ? hi : v;
        aq[i] = (uint8_t)((int32_t)nearbyintf(v == v ? v : hi) + az);
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            uint32_t sum = 0; /* int32 arithmetic that wraps instead of overflowing */
            for (int64_t k = 0; k < K; k++)
                sum += (uint32_t)(((int32_t)aq[m * K + k] - az) * (int8_at(wt, w, woff + k * N + n) - wzp));
            int32_t acc = (int32_t)sum;
            float s = as * wscale[per_column ? n : 0];
            y[m * N + n] = accumulate ? y[m * N + n] + (float)acc * s : (float)acc * s;
        }
}

/* dynamic_quantize_lstm: per direction, X W for every step at once (X quantized as a whole), then per step
 * + h R (h of every batch row quantized together), + (Wb + Rb), and lstm's gates i, o, f, c. */
REF_KERNEL(ref_dynamic_quantize_lstm)
{
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *rt = a->in_types[2];
    int64_t S = xt->shape[0], B = xt->shape[1], I = xt->shape[2], H = mera_attr_int(a->node, "hidden_size");
    const char *dir = mera_attr_string(a->node, "direction");
    int dirs = strcmp(dir, "bidirectional") == 0 ? 2 : 1, reverse_only = strcmp(dir, "reverse") == 0;
    const float *x = a->in[0], *bias = a->in[3], *h0 = a->in[4], *c0 = a->in[5];
    const float *wscale = a->in[6], *rscale = a->in[8];
    int w_cols = a->in_types[6]->rank == 2, r_cols = a->in_types[8]->rank == 2;
    int64_t wz_per = a->in_types[7]->rank == 2 ? 4 * H : 1, rz_per = a->in_types[9]->rank == 2 ? 4 * H : 1;
    float *y = a->out[0];
    int64_t G = 4 * H, rows = S * B;
    float *gx = ref_alloc(rows * G + 2 * B * H, sizeof(float));
    uint8_t *q = ref_alloc(rows * I > B * H ? rows * I : B * H, 1);
    if (!gx || !q) {
        free(gx);
        free(q);
        return ref_nomem(err, a->node);
    }
    float *h = gx + rows * G, *c = h + B * H;
    for (int d = 0; d < dirs; d++) {
        int reverse = reverse_only || d == 1;
        int32_t wzp = int8_at(a->in_types[7], a->in[7], d * wz_per), rzp = int8_at(a->in_types[9], a->in[9], d * rz_per);
        dq_gemm(x, rows, I, wt, a->in[1], d * I * G, wzp, wscale + d * (w_cols ? G : 1), w_cols, G, q, 0, gx);
        for (int64_t k = 0; k < B * H; k++) {
            h[k] = h0 ? h0[d * B * H + k] : 0.0f;
            c[k] = c0 ? c0[d * B * H + k] : 0.0f;
        }
        for (int64_t step = 0; step < S; step++) {
            int64_t t = reverse ? S - 1 - step : step;
            float *g = gx + t * B * G;
            dq_gemm(h, B, H, rt, a->in[2], d * H * G, rzp, rscale + d * (r_cols ? G : 1), r_cols, G, q, 1, g);
            for (int64_t b = 0; b < B; b++) {
                float *gb = g + b * G;
                if (bias)
                    for (int64_t j = 0; j < G; j++)
                        gb[j] += bias[d * 2 * G + j] + bias[d * 2 * G + G + j];
                for (int64_t k = 0; k < H; k++) { /* onnxruntime's activations: its own op, its numerics */
                    float ig = ref_mlas_logistic(gb[k]), og = ref_mlas_logistic(gb[H + k]);
                    float fg = ref_mlas_logistic(gb[2 * H + k]), cc = ref_mlas_tanh(gb[3 * H + k]);
                    c[b * H + k] = c[b * H + k] * fg + ig * cc;
                    h[b * H + k] = ref_mlas_tanh(c[b * H + k]) * og;
                    y[((t * dirs + d) * B + b) * H + k] = h[b * H + k];
                }
            }
        }
    }
    free(gx);
    free(q);
    return MERA_OK;
}

/* topk: each slice along the axis sorted by value (descending for largest, ascending otherwise), equal values by
 * index, as onnxruntime's comparators order them; the first k kept. NaN compares as neither larger nor smaller. */
typedef struct {
    float v;
    int64_t i;
} topk_item;

static int topk_desc(const void *pa, const void *pb)
{
    const topk_item *a = pa, *b = pb;
    if (a->v > b->v)
        return -1;
    if (a->v < b->v)
        return 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int topk_asc(const void *pa, const void *pb)
{
    const topk_item *a = pa, *b = pb;
    if (a->v < b->v)
        return -1;
    if (a->v > b->v)
        return 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

REF_KERNEL(ref_topk)
{
    const mera_type *xt = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis"), k = mera_attr_int(a->node, "k");
    if (axis < 0)
        axis += xt->rank;
    int largest = mera_attr_int(a->node, "largest") != 0, want_idx = ref_is(a->node, "output", "indices");
    int64_t outer = 1, inner = 1, n = xt->shape[axis];
    for (int d = 0; d < axis; d++)
        outer *= xt->shape[d];
    for (int d = (int)axis + 1; d < xt->rank; d++)
        inner *= xt->shape[d];
    topk_item *buf = ref_alloc(n, sizeof(topk_item));
    if (!buf)
        return ref_nomem(err, a->node);
    const float *x = a->in[0];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            for (int64_t j = 0; j < n; j++) {
                buf[j].v = x[(o * n + j) * inner + in];
                buf[j].i = j;
            }
            qsort(buf, (size_t)n, sizeof *buf, largest ? topk_desc : topk_asc);
            for (int64_t j = 0; j < k; j++) {
                int64_t at = (o * k + j) * inner + in;
                if (want_idx)
                    ((int64_t *)a->out[0])[at] = buf[j].i;
                else
                    ((float *)a->out[0])[at] = buf[j].v;
            }
        }
    free(buf);
    return MERA_OK;
}
