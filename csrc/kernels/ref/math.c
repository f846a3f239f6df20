/* Float math on the host: sub, div, pow, maximum, minimum, atan2 (broadcasting),
 * sqrt, exp, log, tanh, erf, abs, sin, cos, tan, asin, acos, atan, sinh,
 * cosh, asinh, acosh, atanh, sign, and matmul of two run-time tensors.
 *
 * These ops have no quantized form (ops.def: FLOAT_IN). Each element is one
 * C library call or one IEEE operation in float32, so sub, div, maximum,
 * minimum, sqrt, abs and sign give every float implementation's bytes; pow,
 * exp, log, tanh, erf, atan2 and the trigonometric and hyperbolic ones give the C library's correctly rounded or near (1 ulp)
 * results, where PyTorch and onnxruntime use their own vector
 * approximations (docs/numerics.md gives the bounds). matmul sums in
 * float32 in ascending k, one rounding per product and per addition. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

typedef enum { BIN_SUB, BIN_DIV, BIN_POW, BIN_MAX, BIN_MIN, BIN_ATAN2 } bin_kind;

static float bin_apply(bin_kind k, float x, float y)
{
    switch (k) {
    case BIN_SUB: return x - y;
    case BIN_DIV: return x / y;
    case BIN_POW: return powf(x, y);
    case BIN_MAX: return x != x || y != y ? x + y : (x > y ? x : y); /* NaN propagates (torch.maximum) */
    case BIN_MIN: return x != x || y != y ? x + y : (x < y ? x : y);
    case BIN_ATAN2: return atan2f(x, y);
    }
    return 0.0f;
}

/* out[i] = f(x[bcast], y[bcast]) over the output's shape, numpy broadcasting */
static mera_status float_binary(const mera_kernel_args *a, bin_kind k)
{
    const mera_type *ot = a->out_types[0];
    int r = ot->rank;
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK], idx[MERA_MAX_RANK] = {0}, n = mera_type_numel(ot), oa = 0, ob = 0;
    ref_bcast_strides(a->in_types[0], ot, sa);
    ref_bcast_strides(a->in_types[1], ot, sb);
    const float *x = a->in[0], *y = a->in[1];
    float *z = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        z[i] = bin_apply(k, x[oa], y[ob]);
        ref_next_index2(r, ot->shape, idx, sa, &oa, sb, &ob);
    }
    return MERA_OK;
}

#define BINARY_KERNEL(name, kind)  \
    REF_KERNEL(ref_##name##_f32)   \
    {                              \
        (void)err;                 \
        return float_binary(a, kind); \
    }
BINARY_KERNEL(sub, BIN_SUB)
BINARY_KERNEL(div, BIN_DIV)
BINARY_KERNEL(pow, BIN_POW)
BINARY_KERNEL(maximum, BIN_MAX)
BINARY_KERNEL(minimum, BIN_MIN)
BINARY_KERNEL(atan2, BIN_ATAN2)

#define UNARY_KERNEL(name, expr)                                \
    REF_KERNEL(ref_##name##_f32)                                \
    {                                                           \
        (void)err;                                              \
        int64_t n = mera_type_numel(a->out_types[0]);           \
        const float *x = a->in[0];                              \
        float *y = a->out[0];                                   \
        for (int64_t i = 0; i < n; i++) {                       \
            float v = x[i];                                     \
            y[i] = (expr);                                      \
        }                                                       \
        return MERA_OK;                                         \
    }
UNARY_KERNEL(sqrt, sqrtf(v))
UNARY_KERNEL(exp, expf(v))
UNARY_KERNEL(log, logf(v))
UNARY_KERNEL(tanh, tanhf(v))
UNARY_KERNEL(erf, erff(v))
UNARY_KERNEL(abs, fabsf(v))
UNARY_KERNEL(sin, sinf(v))
UNARY_KERNEL(cos, cosf(v))
UNARY_KERNEL(tan, tanf(v))
UNARY_KERNEL(asin, asinf(v))
UNARY_KERNEL(acos, acosf(v))
UNARY_KERNEL(atan, atanf(v))
UNARY_KERNEL(sinh, sinhf(v))
UNARY_KERNEL(cosh, coshf(v))
UNARY_KERNEL(asinh, asinhf(v))
UNARY_KERNEL(acosh, acoshf(v))
UNARY_KERNEL(atanh, atanhf(v))
UNARY_KERNEL(sign, v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : v == v ? 0.0f : v) /* NaN stays NaN */

/* onnxruntime's logistic: x clamped to [-18, 18] (vmaxps/vminps: a NaN passes through),
 * p = x (a1 + x2 (a3 + x2 (a5 + x2 (a7 + x2 a9)))), q = b0 + x2 (b2 + ... + x2 b10), each step one FMA;
 * max(0, p / q + 0.5) (vmaxps(0, r): NaN stays NaN). Constants: MLAS's MlasLogisticConstants. */
float ref_mlas_logistic(float x)
{
    float v = x < -18.0f ? -18.0f : x;
    v = v > 18.0f ? 18.0f : v;
    float x2 = v * v;
    float p = fmaf(x2, 4.37031012579801e-11f, 1.15627324459942e-07f);
    p = fmaf(x2, p, 6.08574864600143e-05f);
    p = fmaf(x2, p, 8.51377133304701e-03f);
    p = fmaf(x2, p, 2.48287947061529e-01f);
    float q = fmaf(x2, 6.10247389755681e-13f, 5.76102136993427e-09f);
    q = fmaf(x2, q, 6.29106785017040e-06f);
    q = fmaf(x2, q, 1.70198817374094e-03f);
    q = fmaf(x2, q, 1.16817656904453e-01f);
    q = fmaf(x2, q, 9.93151921023180e-01f);
    float r = (v * p) / q + 0.5f;
    return 0.0f > r ? 0.0f : r;
}

/* onnxruntime's tanh: x clamped to [-9, 9], p = x (a1 + x2 (a3 + ... + x2 a13)), q = b0 + x2 (b2 + x2 (b4 +
 * x2 b6)), each step one FMA; p / q. Constants: MLAS's MlasTanhConstants (onnxruntime 1.32). */
float ref_mlas_tanh(float x)
{
    float v = x < -9.0f ? -9.0f : x;
    v = v > 9.0f ? 9.0f : v;
    float x2 = v * v;
    float p = fmaf(x2, -2.76076847742355e-16f, 2.00018790482477e-13f);
    p = fmaf(x2, p, -8.60467152213735e-11f);
    p = fmaf(x2, p, 5.12229709037114e-08f);
    p = fmaf(x2, p, 1.48572235717979e-05f);
    p = fmaf(x2, p, 6.37261928875436e-04f);
    p = fmaf(x2, p, 4.89352455891786e-03f);
    float q = fmaf(x2, 1.19825839466702e-06f, 1.18534705686654e-04f);
    q = fmaf(x2, q, 2.26843463243900e-03f);
    q = fmaf(x2, q, 4.89352518554385e-03f);
    return (v * p) / q;
}

/* [..., M, K] @ [..., K, N]: batch offsets by broadcast strides over the output's batch axes */
REF_KERNEL(ref_matmul_f32)
{
    (void)err;
    const mera_type *at = a->in_types[0], *bt = a->in_types[1], *ot = a->out_types[0];
    int r = ot->rank;
    int64_t M = ot->shape[r - 2], N = ot->shape[r - 1], K = at->shape[at->rank - 1];
    int64_t batches = mera_type_numel(ot) / (M * N > 0 ? M * N : 1);
    /* batch strides of a and b in matrices, numpy-aligned on the trailing batch axes */
    int64_t sa[MERA_MAX_RANK] = {0}, sb[MERA_MAX_RANK] = {0}, idx[MERA_MAX_RANK] = {0};
    int64_t stride_a = 1, stride_b = 1;
    for (int d = r - 3; d >= 0; d--) {
        int da = d - (r - at->rank), db = d - (r - bt->rank);
        sa[d] = da >= 0 && at->shape[da] != 1 ? stride_a : 0;
        sb[d] = db >= 0 && bt->shape[db] != 1 ? stride_b : 0;
        stride_a *= da >= 0 ? at->shape[da] : 1;
        stride_b *= db >= 0 ? bt->shape[db] : 1;
    }
    const float *x = a->in[0], *y = a->in[1];
    float *z = a->out[0];
    int64_t ma = 0, mb = 0;
    for (int64_t bi = 0; bi < batches; bi++) {
        const float *xa = x + ma * M * K, *yb = y + mb * K * N;
        float *zo = z + bi * M * N;
        for (int64_t m = 0; m < M; m++)
            for (int64_t nn = 0; nn < N; nn++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++)
                    s += xa[m * K + k] * yb[k * N + nn];
                zo[m * N + nn] = s;
            }
        ref_next_index2(r - 2, ot->shape, idx, sa, &ma, sb, &mb);
    }
    return MERA_OK;
}

/* conv_transpose2d: every input pixel scatters its kernel window into the output,
 * y[n, g*og + co, ih*sh - pt + kh*dh, iw*sw - pl + kw*dw] += x[n, g*cg + ci, ih, iw] * w[g*cg + ci, co, kh, kw],
 * in that loop order (n, output channel, input channel, input pixel, tap), after the bias. */
REF_KERNEL(ref_conv_transpose2d_f32)
{
    (void)err;
    const mera_node *node = a->node;
    int nhwc = ref_nhwc(node);
    ref_dims4 xd = ref_dims(a->in_types[0], nhwc), yd = ref_dims(a->out_types[0], nhwc);
    const int64_t *st = ref_ints(node, "strides"), *pad = ref_ints(node, "padding"), *dil = ref_ints(node, "dilation");
    const mera_type *wt = a->in_types[1];
    int64_t groups = mera_attr_int(node, "groups"), cg = xd.c / groups, og = wt->shape[1];
    int64_t KH = wt->shape[2], KW = wt->shape[3];
    const float *x = a->in[0], *w = a->in[1], *b = a->n_inputs > 2 ? a->in[2] : NULL;
    float *y = a->out[0];
    for (int64_t n = 0; n < yd.n; n++)
        for (int64_t o = 0; o < yd.c; o++) {
            int64_t g = o / og, co = o % og;
            for (int64_t oh = 0; oh < yd.h; oh++)
                for (int64_t ow = 0; ow < yd.w; ow++)
                    y[ref_at(&yd, n, o, oh, ow)] = b ? b[o] : 0.0f;
            for (int64_t ci = 0; ci < cg; ci++) {
                int64_t c = g * cg + ci;
                const float *wk = w + (c * og + co) * KH * KW;
                for (int64_t ih = 0; ih < xd.h; ih++)
                    for (int64_t iw = 0; iw < xd.w; iw++) {
                        float xv = x[ref_at(&xd, n, c, ih, iw)];
                        for (int64_t kh = 0; kh < KH; kh++) {
                            int64_t oh = ih * st[0] - pad[0] + kh * dil[0];
                            if (oh < 0 || oh >= yd.h)
                                continue;
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t ow = iw * st[1] - pad[1] + kw * dil[1];
                                if (ow >= 0 && ow < yd.w)
                                    y[ref_at(&yd, n, o, oh, ow)] += xv * wk[kh * KW + kw];
                            }
                        }
                    }
            }
        }
    return MERA_OK;
}

static float sigmoidf(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* lstm, ONNX's equations with gates in the order i, o, f, c:
 *   g = W x_t + Wb + R h + Rb; i = σ(g_i), o = σ(g_o), f = σ(g_f), c~ = tanh(g_c)
 *   c = f c + i c~; h = o tanh(c); Y[t, dir, b] = h
 * the reverse direction walks t from the end. */
REF_KERNEL(ref_lstm_f32)
{
    const mera_type *xt = a->in_types[0];
    int64_t S = xt->shape[0], B = xt->shape[1], I = xt->shape[2], H = mera_attr_int(a->node, "hidden_size");
    const char *dir = mera_attr_string(a->node, "direction");
    int dirs = strcmp(dir, "bidirectional") == 0 ? 2 : 1, reverse_only = strcmp(dir, "reverse") == 0;
    const float *x = a->in[0], *w = a->in[1], *r = a->in[2];
    const float *bias = a->n_inputs > 3 ? a->in[3] : NULL;
    const float *h0 = a->n_inputs > 4 ? a->in[4] : NULL, *c0 = a->n_inputs > 5 ? a->in[5] : NULL;
    float *y = a->out[0];
    float *scratch = ref_alloc(6 * H, sizeof(float));
    if (!scratch)
        return ref_nomem(err, a->node);
    float *g = scratch, *h = scratch + 4 * H, *c = scratch + 5 * H;
    for (int d = 0; d < dirs; d++) {
        int reverse = reverse_only || d == 1;
        const float *wd = w + d * 4 * H * I, *rd = r + d * 4 * H * H, *bd = bias ? bias + d * 8 * H : NULL;
        for (int64_t b = 0; b < B; b++) {
            for (int64_t k = 0; k < H; k++) {
                h[k] = h0 ? h0[(d * B + b) * H + k] : 0.0f;
                c[k] = c0 ? c0[(d * B + b) * H + k] : 0.0f;
            }
            for (int64_t step = 0; step < S; step++) {
                int64_t t = reverse ? S - 1 - step : step;
                const float *xv = x + (t * B + b) * I;
                for (int64_t j = 0; j < 4 * H; j++) {
                    float s = 0.0f, u = 0.0f;
                    for (int64_t i = 0; i < I; i++)
                        s += wd[j * I + i] * xv[i];
                    for (int64_t k = 0; k < H; k++)
                        u += rd[j * H + k] * h[k];
                    g[j] = s + u + (bd ? bd[j] + bd[4 * H + j] : 0.0f);
                }
                for (int64_t k = 0; k < H; k++) {
                    float ig = sigmoidf(g[k]), og = sigmoidf(g[H + k]), fg = sigmoidf(g[2 * H + k]);
                    float cc = tanhf(g[3 * H + k]);
                    c[k] = fg * c[k] + ig * cc;
                    h[k] = og * tanhf(c[k]);
                    y[((t * dirs + d) * B + b) * H + k] = h[k];
                }
            }
        }
    }
    free(scratch);
    return MERA_OK;
}
