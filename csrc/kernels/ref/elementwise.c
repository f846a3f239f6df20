/* Elementwise ops: add and mul (broadcasting), relu, clip, leaky_relu,
 * hardswish, hardsigmoid, sigmoid, elu.
 *
 * Quantized add and the quantized unary activations go through float the
 * way ATen's kernels do: dequantize, compute in float32, quantize with the
 * reciprocal output scale. Quantized mul, relu and clip stay in integers.
 * A unary op of an 8-bit input has only 256 possible inputs, so each
 * kernel evaluates PyTorch's formula once per input value into a table.
 *
 * Those ATen kernels have two bodies, a vector one and a scalar one for the
 * tail of each row (cpu_kernel_vec -> vectorized_loop), and the two round
 * differently in rare cases: the vector body dequantizes with an FMA (all
 * but sigmoid) and quantizes by rounding before adding the zero point, the
 * scalar body uses dequantize_val and quantize_val. To be bit-exact the
 * kernels below work out, for each element, which body PyTorch runs it
 * through (ref_ti_row_len). */
#include <string.h>

#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* ---- broadcasting ------------------------------------------------------ */

/* Element strides of input t seen through the output's shape (numpy
 * broadcasting: align trailing axes, size-1 axes get stride 0). */
void ref_bcast_strides(const mera_type *t, const mera_type *out, int64_t *st)
{
    int64_t s = 1;
    for (int i = out->rank - 1; i >= 0; i--) {
        int j = i - (out->rank - t->rank);
        if (j < 0) {
            st[i] = 0;
            continue;
        }
        st[i] = t->shape[j] == 1 ? 0 : s;
        s *= t->shape[j];
    }
}

/* Offsets into a and b of output element i. */
static void bcast_offsets(const mera_type *out, const int64_t *sa, const int64_t *sb, int64_t i,
                          int64_t *oa, int64_t *ob)
{
    *oa = *ob = 0;
    for (int k = out->rank - 1; k >= 0; k--) {
        int64_t idx = i % out->shape[k];
        i /= out->shape[k];
        *oa += idx * sa[k];
        *ob += idx * sb[k];
    }
}

/* TensorIterator's row: it coalesces the output's dimensions wherever every
 * operand is contiguous across them (innermost first), and cpu_kernel_vec
 * runs vectorized_loop over each row of the innermost coalesced dimension.
 * Within a row of length n, the first n - n % REF_TI_QVEC_STEP elements go
 * through the vector body, two Vectorized<quint8> at a time, the rest
 * through the scalar body. ATen compiles its quantized kernels
 * (QuantizedOpKernels.cpp) for the DEFAULT and AVX2 capabilities only, so
 * AVX512 machines run the AVX2 build too: 2 x 32 bytes per step. One thread
 * assumed: with several, PyTorch splits tensors above 32768 elements into
 * per-thread ranges and moves the tails (torch.set_num_threads(1) gives the
 * reference behaviour).
 *
 * sa and sb are the inputs' broadcast strides (sb may be NULL). Also used
 * by kernels/split.c, which must agree with it on where rows fall. */
int64_t ref_ti_row_len(const mera_type *out, const int64_t *sa, const int64_t *sb)
{
    int rank = out->rank;
    if (rank == 0)
        return 1;
    int64_t shape[MERA_MAX_RANK], st[3][MERA_MAX_RANK], s = 1;
    for (int k = 0; k < rank; k++) { /* iterator order: innermost first */
        int d = rank - 1 - k;
        shape[k] = out->shape[d];
        st[0][k] = s;
        st[1][k] = sa[d];
        st[2][k] = sb ? sb[d] : 0;
        s *= out->shape[d];
    }
    int prev = 0;
    for (int d = 1; d < rank; d++) { /* TensorIteratorBase::coalesce_dimensions */
        int ok = shape[prev] == 1 || shape[d] == 1;
        if (!ok)
            ok = shape[prev] * st[0][prev] == st[0][d] && shape[prev] * st[1][prev] == st[1][d] &&
                 shape[prev] * st[2][prev] == st[2][d];
        if (ok) {
            if (shape[prev] == 1)
                for (int o = 0; o < 3; o++)
                    st[o][prev] = st[o][d];
            shape[prev] *= shape[d];
        } else {
            prev++;
            for (int o = 0; o < 3; o++)
                st[o][prev] = st[o][d];
            shape[prev] = shape[d];
        }
    }
    return shape[0];
}

/* Where TensorIterator meets each output element. PyTorch walks tensors in
 * its memory order, which for a model imported as NCHW is often
 * channels-last (every quantized conv output is), while our buffer is NCHW:
 * the element at our index i then sits at another position p of PyTorch's
 * walk, and p decides between the vector and the scalar body. */
typedef struct {
    int permuted;             /* PyTorch's memory order is not ours */
    int perm[MERA_MAX_RANK];  /* our axis that is k-th from the outside in PyTorch's memory */
    int64_t pstride[MERA_MAX_RANK]; /* PyTorch's strides of the output, per position k */
    int64_t row;              /* TensorIterator's row length */
} ti_walk;

static void permute_type(const mera_type *t, int out_rank, const int *perm, mera_type *pt)
{
    int64_t padded[MERA_MAX_RANK];
    for (int k = 0; k < out_rank; k++) /* broadcasting aligns trailing axes */
        padded[k] = k < out_rank - t->rank ? 1 : t->shape[k - (out_rank - t->rank)];
    *pt = *t;
    pt->rank = out_rank;
    for (int k = 0; k < out_rank; k++)
        pt->shape[k] = padded[perm[k]];
}

/* b may be NULL (unary ops). Inputs of lower rank than a permuted 4-D output
 * are taken as channels-last like it. */
static ti_walk ti_setup(const mera_kernel_args *a, const mera_type *b)
{
    const mera_type *ot = a->out_types[0], *at = a->in_types[0];
    int data_nhwc = ot->rank == 4 && ot->layout == MERA_LAYOUT_NHWC;
    ti_walk w;
    w.permuted = ref_torch_order(ot->rank, data_nhwc, ref_torch_cl(a->node, data_nhwc), w.perm);
    mera_type pa, pb, po;
    permute_type(ot, ot->rank, w.perm, &po);
    permute_type(at, ot->rank, w.perm, &pa);
    if (b)
        permute_type(b, ot->rank, w.perm, &pb);
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK], s = 1;
    ref_bcast_strides(&pa, &po, sa);
    if (b)
        ref_bcast_strides(&pb, &po, sb);
    w.row = ref_ti_row_len(&po, sa, b ? sb : NULL);
    for (int k = ot->rank - 1; k >= 0; k--) {
        w.pstride[k] = s;
        s *= po.shape[k];
    }
    return w;
}

/* Does output element i (our order) take the vector body? */
static int ti_is_vector(const ti_walk *w, const mera_type *out, int64_t i)
{
    int64_t p = i;
    if (w->permuted) {
        int64_t coord[MERA_MAX_RANK], rem = i;
        for (int d = out->rank - 1; d >= 0; d--) {
            coord[d] = rem % out->shape[d];
            rem /= out->shape[d];
        }
        p = 0;
        for (int k = 0; k < out->rank; k++)
            p += coord[w->perm[k]] * w->pstride[k];
    }
    return p % w->row < w->row - w->row % REF_TI_QVEC_STEP;
}

/* ---- add --------------------------------------------------------------- */

/* Float add and mul walk the output row by row (its innermost axis), each
 * input's stride along the row being 0 (broadcast) or 1, with an odometer
 * over the outer axes: per element the same single rounding as any walk,
 * without the division per element of bcast_offsets. Batch norm, as the
 * frontends lower it (a per-channel mul and add), runs through here. */
static void float_binary_rows(const mera_kernel_args *a, int mul)
{
    const mera_type *ot = a->out_types[0];
    int r = ot->rank;
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK], idx[MERA_MAX_RANK] = {0}, n = mera_type_numel(ot);
    ref_bcast_strides(a->in_types[0], ot, sa);
    ref_bcast_strides(a->in_types[1], ot, sb);
    int64_t inner = r ? ot->shape[r - 1] : 1, ia = r ? sa[r - 1] : 0, ib = r ? sb[r - 1] : 0, oa = 0, ob = 0;
    const float *x = a->in[0], *y = a->in[1];
    float *z = a->out[0];
    int relu = ref_relu(a->node);
    for (int64_t row = 0; inner > 0 && row < n / inner; row++) {
        const float *xr = x + oa, *yr = y + ob;
        float *zr = z + row * inner;
        if (ia == 1 && ib == 1) {
            for (int64_t i = 0; i < inner; i++)
                zr[i] = mul ? xr[i] * yr[i] : xr[i] + yr[i];
        } else if (ia == 1 && ib == 0) {
            float c = yr[0];
            for (int64_t i = 0; i < inner; i++)
                zr[i] = mul ? xr[i] * c : xr[i] + c;
        } else if (ia == 0 && ib == 1) {
            float c = xr[0];
            for (int64_t i = 0; i < inner; i++)
                zr[i] = mul ? c * yr[i] : c + yr[i];
        } else {
            for (int64_t i = 0; i < inner; i++)
                zr[i] = mul ? xr[i * ia] * yr[i * ib] : xr[i * ia] + yr[i * ib];
        }
        if (relu)
            for (int64_t i = 0; i < inner; i++)
                zr[i] = zr[i] < 0.0f ? 0.0f : zr[i];
        for (int k = r - 2; k >= 0; k--) { /* next row */
            oa += sa[k];
            ob += sb[k];
            if (++idx[k] < ot->shape[k])
                break;
            oa -= sa[k] * ot->shape[k];
            ob -= sb[k] * ot->shape[k];
            idx[k] = 0;
        }
    }
}

REF_KERNEL(ref_add_f32)
{
    (void)err;
    float_binary_rows(a, 0);
    return MERA_OK;
}

/* qadd_kernel (QuantizedOpKernels.cpp), scales narrowed to float:
 *   vector body: da = fmadd(sa, qa, sa * -za), db likewise, c = da + db,
 *                relu: c = max(c, 0), q = QuantizeAvx512(c, 1.0f / so)
 *   scalar body: da = sa * (qa - za), db likewise, c = da + db,
 *                relu: c = max(c, 0), q = quantize_val(so, zo, c, a->rounding) */
REF_KERNEL(ref_add_q)
{
    (void)err;
    const mera_type *at = a->in_types[0], *bt = a->in_types[1], *ot = a->out_types[0];
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK], oa, ob, n = mera_type_numel(ot);
    ref_bcast_strides(at, ot, sa);
    ref_bcast_strides(bt, ot, sb);
    ti_walk walk = ti_setup(a, bt);
    float s1 = ref_scale_f(at), s2 = ref_scale_f(bt), so = ref_scale_f(ot);
    float p1 = neg_zp_premul(s1, ref_zp(at)), p2 = neg_zp_premul(s2, ref_zp(bt));
    float inv = 1.0f / so;
    int32_t z1 = ref_zp(at), z2 = ref_zp(bt), zo = ref_zp(ot), lo = q_lo(ot->dtype), hi = q_hi(ot->dtype);
    int relu = ref_relu(a->node);
    for (int64_t i = 0; i < n; i++) {
        bcast_offsets(ot, sa, sb, i, &oa, &ob);
        int32_t q1 = q_load(a->in[0], at->dtype, oa), q2 = q_load(a->in[1], bt->dtype, ob), r;
        if (ti_is_vector(&walk, ot, i)) {
            float c = dequant_fma(q1, s1, p1) + dequant_fma(q2, s2, p2);
            if (relu && c < 0.0f)
                c = 0.0f;
            r = quantize_lane(c, inv, zo, lo, hi);
        } else {
            float c = dequant_val(q1, s1, z1) + dequant_val(q2, s2, z2);
            if (relu && c < 0.0f)
                c = 0.0f;
            r = quantize_val(c, so, zo, lo, hi, a->rounding);
        }
        q_store(a->out[0], ot->dtype, i, r);
    }
    return MERA_OK;
}

/* ---- mul --------------------------------------------------------------- */

REF_KERNEL(ref_mul_f32)
{
    (void)err;
    float_binary_rows(a, 1);
    return MERA_OK;
}

/* qmul_kernel: an integer product requantized by one float multiplier,
 *   multiplier = sa * sb * (1.0f / so)      (float, left to right)
 *   c = (qa - za) * (qb - zb)               (int32)
 *   vector body (RequantizeAvx512): zo + cvtps((float)c * multiplier), wrapping
 *   scalar body (requantize_from_int): zo + lrintf((float)((double)c * multiplier))
 * then a clamp; mul_relu takes max(q, zo). The bodies differ only when the
 * product leaves the int32 range. */
REF_KERNEL(ref_mul_q)
{
    (void)err;
    const mera_type *at = a->in_types[0], *bt = a->in_types[1], *ot = a->out_types[0];
    int64_t sa[MERA_MAX_RANK], sb[MERA_MAX_RANK], oa, ob, n = mera_type_numel(ot);
    ref_bcast_strides(at, ot, sa);
    ref_bcast_strides(bt, ot, sb);
    ti_walk walk = ti_setup(a, bt);
    float inv = 1.0f / ref_scale_f(ot);
    float mult = ref_scale_f(at) * ref_scale_f(bt) * inv;
    int32_t za = ref_zp(at), zb = ref_zp(bt), zo = ref_zp(ot);
    int32_t lo = ref_relu(a->node) ? zo : q_lo(ot->dtype), hi = q_hi(ot->dtype);
    for (int64_t i = 0; i < n; i++) {
        bcast_offsets(ot, sa, sb, i, &oa, &ob);
        int32_t c = (q_load(a->in[0], at->dtype, oa) - za) * (q_load(a->in[1], bt->dtype, ob) - zb);
        int64_t r;
        if (ti_is_vector(&walk, ot, i))
            r = add_wrap_i32(cvt_rne_i32((float)c * mult), zo);
        else
            r = cvt_rne_i64((float)((double)c * (double)mult)) + zo;
        q_store(a->out[0], ot->dtype, i, clamp_i64(r, lo, hi));
    }
    return MERA_OK;
}

/* ---- relu, clip: integer clamps on quantized data ---------------------- */

REF_KERNEL(ref_relu_f32)
{
    (void)err;
    int64_t n = mera_type_numel(a->out_types[0]);
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN passes through */
    return MERA_OK;
}

/* qrelu_kernel: max(q, zp), output keeps the input's parameters. */
REF_KERNEL(ref_relu_q)
{
    (void)err;
    const mera_type *t = a->in_types[0];
    int64_t n = mera_type_numel(t);
    int32_t zp = ref_zp(t);
    for (int64_t i = 0; i < n; i++) {
        int32_t v = q_load(a->in[0], t->dtype, i);
        q_store(a->out[0], t->dtype, i, v < zp ? zp : v);
    }
    return MERA_OK;
}

/* torch.clamp: bounds narrowed to float, NaN propagates. */
REF_KERNEL(ref_clip_f32)
{
    (void)err;
    int64_t n = mera_type_numel(a->out_types[0]);
    float lo = (float)mera_attr_float(a->node, "a_min"), hi = (float)mera_attr_float(a->node, "a_max");
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (v == v)
            v = v < lo ? lo : v > hi ? hi : v;
        y[i] = v;
    }
    return MERA_OK;
}

/* qclamp_kernel (torch.clamp, hardtanh) and qrelu6_kernel: quantize the
 * bounds with the input's parameters through the scalar quantize_val, then
 * clamp the integers. relu6 is clip(0, 6): quantize_val(0, a->rounding) is zp, so both
 * kernels agree. */
REF_KERNEL(ref_clip_q)
{
    (void)err;
    const mera_type *t = a->in_types[0];
    int64_t n = mera_type_numel(t);
    float s = ref_scale_f(t);
    int32_t zp = ref_zp(t), lo = q_lo(t->dtype), hi = q_hi(t->dtype);
    int32_t qmin = quantize_val((float)mera_attr_float(a->node, "a_min"), s, zp, lo, hi, a->rounding);
    int32_t qmax = quantize_val((float)mera_attr_float(a->node, "a_max"), s, zp, lo, hi, a->rounding);
    for (int64_t i = 0; i < n; i++) {
        int32_t v = q_load(a->in[0], t->dtype, i);
        v = v < qmin ? qmin : v;
        q_store(a->out[0], t->dtype, i, v > qmax ? qmax : v);
    }
    return MERA_OK;
}

/* ---- activations computed in float ------------------------------------ */

typedef enum {
    ACT_LEAKY_RELU,
    ACT_HARDSWISH,
    ACT_HARDSIGMOID,
    ACT_SIGMOID,
    ACT_ELU,
    ACT_GELU,
    ACT_GELU_TANH,
    ACT_TANH
} act_kind;

#define GELU_SQRT1_2 0.70710678118654752440 /* M_SQRT1_2 */
/* qgelu_kernel's tanh form: kBeta = M_SQRT2 * M_2_SQRTPI * 0.5 = sqrt(2/pi), kKappa = 0.044715 */
#define GELU_BETA (1.41421356237309504880 * 1.12837916709551257390 * 0.5)
#define GELU_KAPPA 0.044715

/* Vectorized<float>::erf (vec256_float.h): Abramowitz-Stegun 7.1.26 with
 * FMAs and Sleef's expf_u10, sign restored at the end. */
static float erf_vec(float x)
{
    float a = fabsf(x);
    float t = 1.0f / fmaf(0.3275911f, a, 1.0f);
    float r = fmaf(fmaf(fmaf(fmaf(1.061405429f, t, -1.453152027f), t, 1.421413741f), t, -0.284496736f), t,
                   0.254829592f);
    float e = -sleef_expf_u10(-(x * x));
    float y = fmaf(e * t, r, 1.0f);
    return copysignf(1.0f, x) * y;
}

static float relu6_plus3(float x) /* min(max(x + 3, 0), 6) */
{
    float t = x + 3.0f;
    t = t > 0.0f ? t : 0.0f;
    return t < 6.0f ? t : 6.0f;
}

/* The float function as the vector bodies of the ATen kernels evaluate it. */
static float act_vec(act_kind k, float x, float alpha)
{
    switch (k) {
    case ACT_LEAKY_RELU: /* dx * blendv(alpha, 1, dx > 0) */
        return x * (x > 0.0f ? 1.0f : alpha);
    case ACT_HARDSWISH: /* x * min(max(x + 3, 0), 6) / 6 */
        return x * relu6_plus3(x) / 6.0f;
    case ACT_HARDSIGMOID:
        return relu6_plus3(x) / 6.0f;
    case ACT_SIGMOID: /* (1 + exp(-x)).reciprocal() */
        return 1.0f / (1.0f + sleef_expf_u10(-x));
    case ACT_ELU: /* qelu_kernel (scale = input_scale = 1): blendv((exp(x) - 1) * alpha, x, x > 0) */
        return x > 0.0f ? x : (sleef_expf_u10(x) - 1.0f) * alpha;
    case ACT_GELU: /* qgelu_kernel: x * 0.5 * (1 + (x * f32(M_SQRT1_2)).erf()) */
        return x * 0.5f * (1.0f + erf_vec(x * (float)GELU_SQRT1_2));
    case ACT_GELU_TANH: { /* 0.5 * x * (1 + (kBeta * (x + kKappa * x^3)).tanh()), float lanes */
        float cube = x * x * x;
        float inner = (float)GELU_BETA * (x + (float)GELU_KAPPA * cube);
        return 0.5f * x * (1.0f + sleef_tanhf_u10(inner));
    }
    case ACT_TANH: /* qtanh_kernel: Vectorized<float>::tanh, Sleef's tanhf_u10 */
        return sleef_tanhf_u10(x);
    }
    return x;
}

/* ... and as their scalar bodies do. */
static float act_scalar(act_kind k, float x, float alpha)
{
    switch (k) {
    case ACT_LEAKY_RELU:
        return x > 0.0f ? x : x * alpha;
    case ACT_HARDSWISH:
        return x * relu6_plus3(x) / 6.0f;
    case ACT_HARDSIGMOID:
        return relu6_plus3(x) / 6.0f;
    case ACT_SIGMOID: /* 1.0f / (1.0 + std::exp(-x)): libm expf, the rest in double */
        return (float)(1.0 / (1.0 + (double)expf(-x)));
    case ACT_ELU: /* x >= 0 ? x : (std::exp(x) - 1) * alpha, libm expf */
        return x >= 0.0f ? x : (expf(x) - 1.0f) * alpha;
    case ACT_GELU: /* x * 0.5 * (1 + std::erf(x * M_SQRT1_2)) in double */
        return (float)((double)x * 0.5 * (1.0 + erf((double)x * GELU_SQRT1_2)));
    case ACT_GELU_TANH: { /* x^3 in float, the rest in double with std::tanh(double) */
        float cube = x * x * x;
        double inner = GELU_BETA * ((double)x + GELU_KAPPA * (double)cube);
        return (float)(0.5 * (double)x * (1.0 + tanh(inner)));
    }
    case ACT_TANH: /* std::tanh(float): libm tanhf */
        return tanhf(x);
    }
    return x;
}

/* The reciprocal output scale of each vector body: qhardswish_kernel,
 * qsigmoid_kernel and qhardsigmoid_kernel compute it in double
 * (float inv = 1.0 / o_scale), leaky_qrelu_out_kernel in float. */
static float act_inv_scale(act_kind k, double out_scale)
{
    if (k == ACT_LEAKY_RELU)
        return 1.0f / (float)out_scale;
    if (k == ACT_ELU || k == ACT_GELU || k == ACT_GELU_TANH) /* qelu_kernel, qgelu_kernel: (float)(1.0 / o_scale) of the float o_scale */
        return (float)(1.0 / (double)(float)out_scale);
    return (float)(1.0 / out_scale);
}

/* Both bodies tabulated over the 256 input bytes (index: the byte as
 * stored); each element then reads the table of the body PyTorch runs it
 * through. The scalar bodies dequantize with dequantize_val and quantize
 * with quantize_val. */
static void act_q_tables(const mera_kernel_args *a, act_kind k, float alpha, uint8_t vec[256], uint8_t scalar[256])
{
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    float s = ref_scale_f(it), p = neg_zp_premul(s, ref_zp(it)), so = ref_scale_f(ot);
    float inv = act_inv_scale(k, ot->q.scale);
    int32_t zi = ref_zp(it), zo = ref_zp(ot), lo = q_lo(ot->dtype), hi = q_hi(ot->dtype);
    for (int b = 0; b < 256; b++) {
        int32_t v = q_load(&(uint8_t){(uint8_t)b}, it->dtype, 0);
        /* qsigmoid_kernel's vector body dequantizes with the two-argument
         * Vectorized::dequantize, (q - zp) * scale without the FMA (seen in
         * libtorch_cpu.so); the others use the premultiplied FMA form. */
        float xv = k == ACT_SIGMOID ? dequant_val(v, s, zi) : dequant_fma(v, s, p);
        vec[b] = (uint8_t)quantize_lane(act_vec(k, xv, alpha), inv, zo, lo, hi);
        scalar[b] = (uint8_t)quantize_val(act_scalar(k, dequant_val(v, s, zi), alpha), so, zo, lo, hi, a->rounding);
    }
}

static float leaky_alpha(const mera_kernel_args *a)
{
    return (float)mera_attr_float(a->node, "alpha");
}

static act_kind gelu_kind(const mera_kernel_args *a)
{
    return strcmp(mera_attr_string(a->node, "approximate"), "tanh") == 0 ? ACT_GELU_TANH : ACT_GELU;
}

void ref_act_q_tables(const mera_kernel_args *a, uint8_t vec[256], uint8_t scalar[256])
{
    switch (a->node->op) {
    case MERA_OP_LEAKY_RELU: act_q_tables(a, ACT_LEAKY_RELU, leaky_alpha(a), vec, scalar); return;
    case MERA_OP_HARDSWISH: act_q_tables(a, ACT_HARDSWISH, 0.0f, vec, scalar); return;
    case MERA_OP_HARDSIGMOID: act_q_tables(a, ACT_HARDSIGMOID, 0.0f, vec, scalar); return;
    case MERA_OP_SIGMOID: act_q_tables(a, ACT_SIGMOID, 0.0f, vec, scalar); return;
    case MERA_OP_ELU: act_q_tables(a, ACT_ELU, (float)mera_attr_float(a->node, "alpha"), vec, scalar); return;
    case MERA_OP_GELU: act_q_tables(a, gelu_kind(a), 0.0f, vec, scalar); return;
    case MERA_OP_QTANH: act_q_tables(a, ACT_TANH, 0.0f, vec, scalar); return;
    default: MERA_BUG("ref_act_q_tables: not a tabulated activation");
    }
}

static mera_status act_q(const mera_kernel_args *a)
{
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    uint8_t vec[256], scalar[256];
    ref_act_q_tables(a, vec, scalar);
    int64_t n = mera_type_numel(it);
    const uint8_t *x = a->in[0];
    uint8_t *y = a->out[0];
    ti_walk walk = ti_setup(a, NULL);
    for (int64_t i = 0; i < n; i++)
        y[i] = ti_is_vector(&walk, ot, i) ? vec[x[i]] : scalar[x[i]];
    return MERA_OK;
}

/* Float32: the vector bodies' formulas (the torch float kernels agree to
 * within rounding). */
static mera_status act_f32(const mera_kernel_args *a, act_kind k, float alpha)
{
    int64_t n = mera_type_numel(a->out_types[0]);
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = act_vec(k, x[i], alpha);
    return MERA_OK;
}

REF_KERNEL(ref_leaky_relu_f32) { (void)err; return act_f32(a, ACT_LEAKY_RELU, leaky_alpha(a)); }
REF_KERNEL(ref_leaky_relu_q) { (void)err; return act_q(a); }
REF_KERNEL(ref_hardswish_f32) { (void)err; return act_f32(a, ACT_HARDSWISH, 0.0f); }
REF_KERNEL(ref_hardswish_q) { (void)err; return act_q(a); }
REF_KERNEL(ref_hardsigmoid_f32) { (void)err; return act_f32(a, ACT_HARDSIGMOID, 0.0f); }
REF_KERNEL(ref_hardsigmoid_q) { (void)err; return act_q(a); }
REF_KERNEL(ref_sigmoid_f32)
{
    (void)err;
    if (strcmp(mera_attr_string(a->node, "float_form"), "onnxruntime") != 0)
        return act_f32(a, ACT_SIGMOID, 0.0f);
    int64_t n = mera_type_numel(a->out_types[0]);
    const float *x = a->in[0];
    float *y = a->out[0];
    for (int64_t i = 0; i < n; i++)
        y[i] = ref_mlas_logistic(x[i]);
    return MERA_OK;
}
REF_KERNEL(ref_sigmoid_q) { (void)err; return act_q(a); }
REF_KERNEL(ref_elu_f32) { (void)err; return act_f32(a, ACT_ELU, (float)mera_attr_float(a->node, "alpha")); }
REF_KERNEL(ref_elu_q) { (void)err; return act_q(a); }
REF_KERNEL(ref_gelu_f32) { (void)err; return act_f32(a, gelu_kind(a), 0.0f); }
REF_KERNEL(ref_gelu_q) { (void)err; return act_q(a); }
REF_KERNEL(ref_qtanh_f32) { (void)err; return act_f32(a, ACT_TANH, 0.0f); }
REF_KERNEL(ref_qtanh_q) { (void)err; return act_q(a); }
