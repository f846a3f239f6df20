/* The scalar quantize/dequantize formulas of the numerics contract
 * (docs/numerics.md), inline so every kernel uses the same arithmetic. */
#ifndef MERA_KERNELS_QUANT_SCALAR_H
#define MERA_KERNELS_QUANT_SCALAR_H

#include <math.h>
#include <stdint.h>

/* PyTorch dequantize (fbgemm::Dequantize): scale * (q - zero_point) in float. */
static inline float mera_dequantize_val(float scale, int32_t zp, int32_t q)
{
    return scale * (float)(q - zp);
}

/* PyTorch quantize (fbgemm::Quantize): multiply by the reciprocal scale,
 * round half to even (nearbyintf in the default rounding mode), add the zero
 * point, clamp. NaN maps to the low end of the range. */
static inline int32_t mera_quantize_val(float x, float inv_scale, int32_t zp, int32_t lo, int32_t hi)
{
    float r = nearbyintf(x * inv_scale);
    if (!(r == r))
        return lo;
    float v = (float)zp + r;
    if (v < (float)lo)
        return lo;
    if (v > (float)hi)
        return hi;
    return (int32_t)v;
}

#endif
