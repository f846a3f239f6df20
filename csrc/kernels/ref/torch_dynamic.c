/* PyTorch's dynamic quantization (torch.ao.nn.quantized.dynamic), fbgemm
 * engine: quantized::linear_dynamic and linear_relu_dynamic
 * (qlinear_dynamic.cpp PackedLinearWeight::apply_dynamic_impl). The input's
 * parameters are chosen at run time from its range, it is quantized to
 * uint8, multiplied by the int8 weight in exact int32 and the sums are
 * turned back into float with the bias added. Every step is integer or a
 * single float rounding, so the result is PyTorch's to the bit
 * (tests/test_torch_quantized_ops2.py). */
#include <math.h>
#include <stdlib.h>

#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* quant_utils::ChooseQuantizationParams(min, max, 0, 255,
 * preserve_sparsity=false, force_scale_power_of_two=false, reduce_range)
 * (QuantUtils.h): the range widened to hold 0, the scale in double, the
 * small-scale cut at 6.1e-5, the zero point from the end with the smaller
 * error, nudged into [qmin, qmax]. */
void ref_torch_choose_qparams(float min, float max, int reduce_range, double *scale_out, int32_t *zp_out)
{
    const float small = 6.1e-5f;
    int32_t qmin = 0, qmax = reduce_range ? 127 : 255;
    min = min < 0.0f ? min : 0.0f;
    max = max > 0.0f ? max : 0.0f;
    double scale = ((double)max - min) / (qmax - qmin);
    if ((float)scale == 0.0f || isinf(1.0f / (float)scale))
        scale = 0.1;
    if (scale < small) {
        float org_scale = (float)scale;
        scale = small;
        if (min == 0.0f) {
            max = small * (float)(qmax - qmin);
        } else if (max == 0.0f) {
            min = -small * (float)(qmax - qmin);
        } else {
            float amplifier = small / org_scale;
            min *= amplifier;
            max *= amplifier;
        }
    }
    double zp_from_min = qmin - min / scale, zp_from_max = qmax - max / scale;
    double err_min = fabs((double)qmin) - fabs(min / scale), err_max = fabs((double)qmax) - fabs(max / scale);
    double zp = err_min < err_max ? zp_from_min : zp_from_max;
    *zp_out = zp < qmin ? qmin : zp > qmax ? qmax : (int32_t)nearbyint(zp);
    *scale_out = scale;
}

/* apply_dynamic_impl:
 *   fbgemm::FindMinMax over the whole input, ChooseQuantizationParams;
 *   PackAWithQuantRowOffset quantizes each row with QuantizeAvx2 (the
 *   graph's rounding, quantize_fbgemm) with 1.f / f32(scale);
 *   the GEMM sums q_x * q_w in int32 (VNNI, or maddubs whose int16 pair sums
 *   cannot saturate under reduce_range), corrected by the row and column
 *   offsets into sum (q_x - z_x)(q_w - z_w[n]);
 *   ReQuantizeForFloat (requantizeForFloatAvx2): y = f32(acc) * f32(s_x * s_w[n])
 *   + bias[n], the multiply and add contracted into one FMA in the build,
 *   then max(y, 0) for the relu form. */
REF_KERNEL(ref_linear_dynamic)
{
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1];
    const float *x = a->in[0], *bias = a->n_inputs > 2 ? a->in[2] : NULL;
    const int8_t *w = a->in[1];
    float *y = a->out[0];
    int64_t K = xt->shape[xt->rank - 1], N = wt->shape[0], M = K ? mera_type_numel(xt) / K : 0;
    int64_t nx = mera_type_numel(xt);
    int relu = (int)mera_attr_int(a->node, "relu");
    float lo = nx ? x[0] : 0.0f, hi = nx ? x[0] : 0.0f;
    for (int64_t i = 1; i < nx; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    double s;
    int32_t zx;
    ref_torch_choose_qparams(lo, hi, (int)mera_attr_int(a->node, "reduce_range"), &s, &zx);
    float sx = (float)s, inv = 1.0f / sx;
    uint8_t *qx = ref_alloc(K ? K : 1, 1);
    float *mult = ref_alloc(N ? N : 1, sizeof(float));
    if (!qx || !mult) {
        free(qx);
        free(mult);
        return ref_nomem(err, a->node);
    }
    for (int64_t n = 0; n < N; n++)
        mult[n] = sx * (float)mera_q_scale(&wt->q, wt->q.kind == MERA_QUANT_PER_AXIS ? n : 0);
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * K;
        for (int64_t k = 0; k < K; k++)
            qx[k] = (uint8_t)quantize_fbgemm(xr[k], inv, zx, 0, 255, a->rounding);
        for (int64_t n = 0; n < N; n++) {
            int32_t zw = wt->q.kind == MERA_QUANT_PER_AXIS ? wt->q.zero_points[n] : wt->q.zero_point;
            const int8_t *wr = w + n * K;
            int64_t acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (int64_t)((int32_t)qx[k] - zx) * ((int32_t)wr[k] - zw);
            float f = (float)(int32_t)(uint32_t)acc; /* int32 wrap-around, as fbgemm's accumulator */
            float v = bias ? fmaf(f, mult[n], bias[n]) : f * mult[n];
            y[m * N + n] = relu && !(v >= 0.0f) ? (isnan(v) ? v : 0.0f) : v;
        }
    }
    free(qx);
    free(mult);
    return MERA_OK;
}
