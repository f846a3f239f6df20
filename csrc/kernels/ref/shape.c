/* Shape ops: concat, flatten, reshape, transpose, pad. On quantized data
 * they move bytes, except concat, which requantizes each input to the
 * output's parameters as quantized::cat does. */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* ---- concat ------------------------------------------------------------ */

/* Every input seen as [outer, axis_i, inner]; the output interleaves them. */
static void concat_shape(const mera_kernel_args *a, int64_t *axis, int64_t *outer, int64_t *inner)
{
    const mera_type *t = a->out_types[0];
    int64_t ax = mera_attr_int(a->node, "axis");
    if (ax < 0)
        ax += t->rank;
    *axis = ax;
    *outer = *inner = 1;
    for (int i = 0; i < t->rank; i++) {
        if (i < ax)
            *outer *= t->shape[i];
        else if (i > ax)
            *inner *= t->shape[i];
    }
}

REF_KERNEL(ref_concat_f32)
{
    (void)err;
    int64_t axis, outer, inner;
    concat_shape(a, &axis, &outer, &inner);
    int64_t out_len = a->out_types[0]->shape[axis];
    size_t elem = mera_dtype_size(a->out_types[0]->dtype); /* float32, or int64 indices */
    unsigned char *y = a->out[0];
    int64_t at = 0; /* offset of input i along the axis */
    for (int i = 0; i < a->n_inputs; i++) {
        int64_t len = a->in_types[i]->shape[axis];
        const unsigned char *x = a->in[i];
        for (int64_t o = 0; o < outer; o++)
            memcpy(y + (size_t)((o * out_len + at) * inner) * elem, x + (size_t)(o * len * inner) * elem,
                   (size_t)(len * inner) * elem);
        at += len;
    }
    return MERA_OK;
}

/* quantized::cat (qconcat.cpp) dequantizes and requantizes every input,
 * even one whose parameters equal the output's (that round trip is exact).
 * Two paths:
 * - channels-last 4-D inputs joined on channels (NHWC data on axis 3, NCHW
 *   data on axis 1 whose torch_memory_format is channels_last, or NCHW
 *   inputs that are channels-last contiguous anyway: C == 1 or H == W == 1):
 *   qcat_nhwc_kernel, per pixel and input, runs the first
 *   floor(C_i / 8) * 8 channels through the vector code (FMA dequantize,
 *   quantize with (float)(1.0 / scale), 8 float lanes of the AVX2 build,
 *   which AVX512 CPUs run too) and the rest through dequantize_val /
 *   quantize_val (1.0f / (float)scale).
 * - anything else: dequantize, at::cat, quantize_per_tensor. */
#define QCAT_VLEN 8

/* Does every input take the channels-last path (the first case above)? */
static int concat_nhwc(const mera_kernel_args *a, int64_t axis)
{
    const mera_type *yt = a->out_types[0];
    int data_nhwc = yt->rank == 4 && yt->layout == MERA_LAYOUT_NHWC;
    int nhwc = yt->rank == 4 && axis == (data_nhwc ? 3 : 1);
    for (int i = 0; nhwc && i < a->n_inputs; i++) {
        const mera_type *t = a->in_types[i];
        int64_t c = t->shape[data_nhwc ? 3 : 1], h = t->shape[data_nhwc ? 1 : 2], w = t->shape[data_nhwc ? 2 : 3];
        nhwc = ref_torch_cl(a->node, data_nhwc) || c == 1 || (h == 1 && w == 1);
    }
    return nhwc;
}

void ref_concat_q_tables(const mera_kernel_args *a, int i, uint8_t vec[256], uint8_t rest[256], int64_t *nvec)
{
    const mera_type *yt = a->out_types[0], *xt = a->in_types[i];
    int64_t axis, outer, inner;
    concat_shape(a, &axis, &outer, &inner);
    int nhwc = concat_nhwc(a, axis);
    float so = ref_scale_f(yt);
    float inv_vec = (float)(1.0 / yt->q.scale), inv = 1.0f / so;
    int32_t zy = ref_zp(yt), lo = q_lo(yt->dtype), hi = q_hi(yt->dtype);
    float s = ref_scale_f(xt), p = neg_zp_premul(s, ref_zp(xt));
    int32_t zx = ref_zp(xt);
    *nvec = nhwc ? xt->shape[axis] / QCAT_VLEN * QCAT_VLEN : 0; /* channels on the vector path */
    for (int b = 0; b < 256; b++) {
        int32_t q = q_load(&(uint8_t){(uint8_t)b}, xt->dtype, 0);
        vec[b] = (uint8_t)quantize_lane(dequant_fma(q, s, p), inv_vec, zy, lo, hi);
        rest[b] = (uint8_t)(nhwc ? quantize_val(dequant_val(q, s, zx), so, zy, lo, hi, a->rounding)
                                 : quantize_fbgemm(dequant_val(q, s, zx), inv, zy, lo, hi, a->rounding));
    }
}

/* Each element's result depends on its byte and its channel's path only:
 * both paths are tabulated per input (ref_concat_q_tables). */
REF_KERNEL(ref_concat_q)
{
    (void)err;
    const mera_type *yt = a->out_types[0];
    int64_t axis, outer, inner, out_len;
    concat_shape(a, &axis, &outer, &inner);
    out_len = yt->shape[axis];
    uint8_t *y = a->out[0];
    int64_t at = 0;
    for (int i = 0; i < a->n_inputs; i++) {
        int64_t len = a->in_types[i]->shape[axis], nvec;
        uint8_t vec[256], rest[256];
        ref_concat_q_tables(a, i, vec, rest, &nvec);
        const uint8_t *x = a->in[i];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t c = 0; c < len; c++)
                for (int64_t k = 0; k < inner; k++)
                    y[(o * out_len + at + c) * inner + k] = (c < nvec ? vec : rest)[x[(o * len + c) * inner + k]];
        at += len;
    }
    return MERA_OK;
}

/* ---- flatten, reshape: the bytes do not move --------------------------- */

REF_KERNEL(ref_flatten)
{
    (void)err;
    memcpy(a->out[0], a->in[0], mera_type_nbytes(a->in_types[0]));
    return MERA_OK;
}

REF_KERNEL(ref_reshape)
{
    (void)err;
    memcpy(a->out[0], a->in[0], mera_type_nbytes(a->in_types[0]));
    return MERA_OK;
}

/* ---- transpose --------------------------------------------------------- */

REF_KERNEL(ref_transpose)
{
    (void)err;
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    const int64_t *perm = ref_ints(a->node, "axes");
    size_t es = mera_dtype_size(xt->dtype);
    int64_t xs[MERA_MAX_RANK], s = 1;
    for (int i = xt->rank - 1; i >= 0; i--) {
        xs[i] = s;
        s *= xt->shape[i];
    }
    int64_t n = mera_type_numel(yt);
    const char *x = a->in[0];
    char *y = a->out[0];
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, off = 0;
        for (int k = yt->rank - 1; k >= 0; k--) {
            int64_t p = perm[k] < 0 ? perm[k] + xt->rank : perm[k];
            off += rem % yt->shape[k] * xs[p];
            rem /= yt->shape[k];
        }
        memcpy(y + i * (int64_t)es, x + off * (int64_t)es, es);
    }
    return MERA_OK;
}

/* ---- pad --------------------------------------------------------------- */

/* For each output element: the input element it copies, or -1 for fill. */
static int64_t pad_source(const mera_type *xt, const mera_type *yt, const int64_t *pads, int64_t i)
{
    int64_t off = 0, mul = 1;
    for (int k = yt->rank - 1; k >= 0; k--) {
        int64_t idx = i % yt->shape[k] - pads[k];
        i /= yt->shape[k];
        if (idx < 0 || idx >= xt->shape[k])
            return -1;
        off += idx * mul;
        mul *= xt->shape[k];
    }
    return off;
}

REF_KERNEL(ref_pad_f32)
{
    (void)err;
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    const int64_t *pads = ref_ints(a->node, "pads");
    float fill = (float)mera_attr_float(a->node, "value");
    const float *x = a->in[0];
    float *y = a->out[0];
    int64_t n = mera_type_numel(yt);
    for (int64_t i = 0; i < n; i++) {
        int64_t src = pad_source(xt, yt, pads, i);
        y[i] = src < 0 ? fill : x[src];
    }
    return MERA_OK;
}

/* constant_pad_nd on a quantized tensor fills the new output with
 * fill_(value), a float-to-quantized copy that quantizes like
 * quantize_per_tensor (fbgemm's legacy lane) with the input's parameters:
 * rne(fma(value, 1/scale, zp)). */
REF_KERNEL(ref_pad_q)
{
    (void)err;
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    const int64_t *pads = ref_ints(a->node, "pads");
    int32_t fill = quantize_fbgemm((float)mera_attr_float(a->node, "value"), 1.0f / ref_scale_f(xt),
                                   ref_zp(xt), q_lo(xt->dtype), q_hi(xt->dtype), a->rounding);
    int64_t n = mera_type_numel(yt);
    for (int64_t i = 0; i < n; i++) {
        int64_t src = pad_source(xt, yt, pads, i);
        q_store(a->out[0], yt->dtype, i, src < 0 ? fill : q_load(a->in[0], xt->dtype, src));
    }
    return MERA_OK;
}
