/* Whole-tensor quantize and dequantize, shared by the quantize/dequantize
 * kernels and by the Interpreter's float emulation of quantized nodes. */
#ifndef MERA_KERNELS_TENSOR_QUANT_H
#define MERA_KERNELS_TENSOR_QUANT_H

#include "ir/ir.h"

/* dst[i] = scale * (src[i] - zero_point), per tensor or per axis of t. */
void mera_dequantize_tensor(const mera_type *t, const void *src, float *dst);
/* dst = quantize(src) with the qparams and dtype of t (per tensor). */
void mera_quantize_tensor(const mera_type *t, const float *src, void *dst);

#endif
