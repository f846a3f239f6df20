/* The reference kernels: one plain C function per (op, numerics), the
 * semantic truth that every faster kernel is tested against.
 *
 *   ref_<op>_f32  float32 in, float32 out
 *   ref_<op>_q    int8/uint8 with quantization parameters, bit-identical to
 *                 PyTorch's fbgemm CPU kernels (docs/numerics.md)
 *
 * quantize takes float32 in, so its kernel is the FLOAT entry; dequantize
 * and requantize take quantized input, so theirs are QUANT entries. The
 * dispatch table in ../dispatch.c lists them all.
 */
#ifndef MERA_KERNELS_REF_REF_H
#define MERA_KERNELS_REF_REF_H

#include "kernels/kernels.h"

#define REF_KERNEL(name) mera_status name(const mera_kernel_args *a, mera_error *err)

/* conv.c */
REF_KERNEL(ref_conv2d_f32);
REF_KERNEL(ref_conv2d_q);

/* dense.c */
REF_KERNEL(ref_dense_f32);
REF_KERNEL(ref_dense_q);

/* math.c: float-only host ops */
REF_KERNEL(ref_sub_f32);
REF_KERNEL(ref_div_f32);
REF_KERNEL(ref_pow_f32);
REF_KERNEL(ref_maximum_f32);
REF_KERNEL(ref_minimum_f32);
REF_KERNEL(ref_sqrt_f32);
REF_KERNEL(ref_exp_f32);
REF_KERNEL(ref_log_f32);
REF_KERNEL(ref_tanh_f32);
REF_KERNEL(ref_erf_f32);
REF_KERNEL(ref_abs_f32);
REF_KERNEL(ref_sin_f32);
REF_KERNEL(ref_cos_f32);
REF_KERNEL(ref_tan_f32);
REF_KERNEL(ref_asin_f32);
REF_KERNEL(ref_acos_f32);
REF_KERNEL(ref_atan_f32);
REF_KERNEL(ref_sinh_f32);
REF_KERNEL(ref_cosh_f32);
REF_KERNEL(ref_asinh_f32);
REF_KERNEL(ref_acosh_f32);
REF_KERNEL(ref_atanh_f32);
REF_KERNEL(ref_sign_f32);
REF_KERNEL(ref_atan2_f32);
REF_KERNEL(ref_matmul_f32);
REF_KERNEL(ref_conv_transpose2d_f32);
REF_KERNEL(ref_conv_transpose2d_q);
REF_KERNEL(ref_lstm_f32);
REF_KERNEL(ref_dynamic_quantize_linear);
REF_KERNEL(ref_matmul_integer);
REF_KERNEL(ref_conv_integer);
REF_KERNEL(ref_cast);
REF_KERNEL(ref_floor_f32);
REF_KERNEL(ref_ceil_f32);
REF_KERNEL(ref_round_f32);
REF_KERNEL(ref_int_arith);
REF_KERNEL(ref_gru_f32);
REF_KERNEL(ref_dynamic_quantize_lstm);
REF_KERNEL(ref_topk);
REF_KERNEL(ref_reduce_f32); /* reduce.c */

/* detect.c: detection post-processing on the host */
REF_KERNEL(ref_non_max_suppression);
REF_KERNEL(ref_gather);
REF_KERNEL(ref_argmax); /* argmax and argmin */
REF_KERNEL(ref_rows_valid);
/* ndindex.c */
REF_KERNEL(ref_compare);
REF_KERNEL(ref_nonzero);
REF_KERNEL(ref_gather_nd);
REF_KERNEL(ref_scatter_nd);
REF_KERNEL(ref_where);
REF_KERNEL(ref_cumsum);
REF_KERNEL(ref_gather_elements);

/* elementwise.c */
REF_KERNEL(ref_add_f32);
REF_KERNEL(ref_add_q);
REF_KERNEL(ref_mul_f32);
REF_KERNEL(ref_mul_q);
REF_KERNEL(ref_relu_f32);
REF_KERNEL(ref_relu_q);
REF_KERNEL(ref_clip_f32);
REF_KERNEL(ref_clip_q);
REF_KERNEL(ref_leaky_relu_f32);
REF_KERNEL(ref_leaky_relu_q);
REF_KERNEL(ref_hardswish_f32);
REF_KERNEL(ref_hardswish_q);
REF_KERNEL(ref_hardsigmoid_f32);
REF_KERNEL(ref_hardsigmoid_q);
REF_KERNEL(ref_sigmoid_f32);
REF_KERNEL(ref_sigmoid_q);

/* torch_q.c: PyTorch's quantized kernels with formulas of their own */
REF_KERNEL(ref_batch_norm_f32);
REF_KERNEL(ref_batch_norm_q);
REF_KERNEL(ref_prelu_f32);
REF_KERNEL(ref_prelu_q);
REF_KERNEL(ref_elu_f32); /* elementwise.c */
REF_KERNEL(ref_elu_q);
REF_KERNEL(ref_gelu_f32);
REF_KERNEL(ref_gelu_q);
REF_KERNEL(ref_add_scalar_f32);
REF_KERNEL(ref_add_scalar_q);
REF_KERNEL(ref_mul_scalar_f32);
REF_KERNEL(ref_mul_scalar_q);
REF_KERNEL(ref_qtanh_f32); /* elementwise.c */
REF_KERNEL(ref_qtanh_q);
REF_KERNEL(ref_linear_dynamic); /* torch_dynamic.c */
REF_KERNEL(ref_layer_norm_q); /* torch_q.c */
REF_KERNEL(ref_group_norm_q); /* torch_q.c */

/* pool.c */
REF_KERNEL(ref_max_pool2d_f32);
REF_KERNEL(ref_max_pool2d_q);
REF_KERNEL(ref_avg_pool2d_f32);
REF_KERNEL(ref_avg_pool2d_q);
REF_KERNEL(ref_adaptive_avg_pool2d_f32);
REF_KERNEL(ref_adaptive_avg_pool2d_q);

/* reduce.c */
REF_KERNEL(ref_mean_f32);
REF_KERNEL(ref_mean_q);
REF_KERNEL(ref_softmax_f32);
REF_KERNEL(ref_softmax_q);

/* shape.c */
REF_KERNEL(ref_concat_f32);
REF_KERNEL(ref_concat_q);
REF_KERNEL(ref_flatten);     /* both numerics: a byte copy */
REF_KERNEL(ref_reshape);     /* both numerics: a byte copy */
REF_KERNEL(ref_transpose);   /* both numerics: moves elements of any size */
REF_KERNEL(ref_pad_f32);
REF_KERNEL(ref_pad_q);

/* slice.c */
REF_KERNEL(ref_slice);       /* both numerics: copies a range of one axis */

/* upsample.c */
REF_KERNEL(ref_upsample_f32);
REF_KERNEL(ref_upsample_q);

/* quant.c */
REF_KERNEL(ref_quantize);    /* FLOAT entry: float32 -> int8/uint8 */
REF_KERNEL(ref_dequantize);  /* QUANT entry: int8/uint8 -> float32 */
REF_KERNEL(ref_requantize);  /* QUANT entry */

#endif
