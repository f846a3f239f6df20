#include "kernels/tensor_quant.h"

#include <math.h>

#include "kernels/quant_scalar.h"

void mera_dequantize_tensor(const mera_type *t, const void *src, float *dst)
{
    int64_t n = mera_type_numel(t);
    int64_t inner = 1, count = 1;
    if (t->q.kind == MERA_QUANT_PER_AXIS) {
        for (int i = t->q.axis + 1; i < t->rank; i++)
            inner *= t->shape[i];
        count = t->q.count;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t c = count > 1 ? (i / inner) % count : 0;
        float scale = (float)mera_q_scale(&t->q, c);
        int32_t zp = mera_q_zero_point(&t->q, c);
        int32_t q = t->dtype == MERA_DTYPE_UINT8 ? ((const uint8_t *)src)[i] : ((const int8_t *)src)[i];
        dst[i] = mera_dequantize_val(scale, zp, q);
    }
}

void mera_quantize_tensor(const mera_type *t, const float *src, void *dst)
{
    int64_t n = mera_type_numel(t);
    float inv_scale = 1.0f / (float)t->q.scale;
    int32_t zp = t->q.zero_point;
    if (t->dtype == MERA_DTYPE_UINT8) {
        uint8_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = (uint8_t)mera_quantize_val(src[i], inv_scale, zp, 0, 255);
    } else {
        int8_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = (int8_t)mera_quantize_val(src[i], inv_scale, zp, -128, 127);
    }
}
