/* quantize, dequantize, requantize: the conversions between float32 and
 * int8/uint8 tensors, as torch.quantize_per_tensor, Tensor.dequantize() and
 * their composition compute them. */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

/* torch.quantize_per_tensor runs fbgemm::Quantize<T, LEGACY=true>, whose
 * AVX2 body handles the remainder with masked loads "so that the main loop
 * and remainder loop have the same behavior": every element takes
 * round(fma(x, 1.f / (float)scale, zp)). */
REF_KERNEL(ref_quantize)
{
    (void)err;
    const mera_type *ot = a->out_types[0];
    const float *x = a->in[0];
    float inv = 1.0f / (float)ot->q.scale;
    int32_t zp = ot->q.zero_point, lo = q_lo(ot->dtype), hi = q_hi(ot->dtype);
    int64_t n = mera_type_numel(ot);
    for (int64_t i = 0; i < n; i++)
        q_store(a->out[0], ot->dtype, i, quantize_fbgemm(x[i], inv, zp, lo, hi, a->rounding));
    return MERA_OK;
}

/* Per-tensor: fbgemm::Dequantize, scale * (q - zp) in float. Per-axis:
 * ATen's dequantize_per_channel_affine_kernel reads the scales as double and
 * computes (q - zp) * scale in double, rounding to float once at the end. */
REF_KERNEL(ref_dequantize)
{
    (void)err;
    const mera_type *it = a->in_types[0];
    float *y = a->out[0];
    int64_t n = mera_type_numel(it);
    if (it->q.kind != MERA_QUANT_PER_AXIS) {
        float s = (float)it->q.scale;
        int32_t zp = it->q.zero_point;
        for (int64_t i = 0; i < n; i++)
            y[i] = dequant_val(q_load(a->in[0], it->dtype, i), s, zp);
        return MERA_OK;
    }
    int64_t inner = 1, ch = it->shape[it->q.axis];
    for (int k = it->q.axis + 1; k < it->rank; k++)
        inner *= it->shape[k];
    for (int64_t i = 0; i < n; i++) {
        int64_t c = (i / inner) % ch;
        double v = (double)(q_load(a->in[0], it->dtype, i) - it->q.zero_points[c]);
        y[i] = (float)(v * it->q.scales[c]);
    }
    return MERA_OK;
}

/* torch.quantize_per_tensor(x.dequantize(), ...): the two kernels above in
 * sequence, through a float32 intermediate. */
REF_KERNEL(ref_requantize)
{
    (void)err;
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    float s = (float)it->q.scale, inv = 1.0f / (float)ot->q.scale;
    int32_t zp = it->q.zero_point, ozp = ot->q.zero_point;
    int32_t lo = q_lo(ot->dtype), hi = q_hi(ot->dtype);
    int64_t n = mera_type_numel(it);
    for (int64_t i = 0; i < n; i++) {
        float v = dequant_val(q_load(a->in[0], it->dtype, i), s, zp);
        q_store(a->out[0], ot->dtype, i, quantize_fbgemm(v, inv, ozp, lo, hi, a->rounding));
    }
    return MERA_OK;
}
