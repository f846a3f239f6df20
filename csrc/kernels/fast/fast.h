/* Fast kernels: the entries that dispatch.c slots into its fast table.
 * The quantized ones give the reference kernel's bytes; the float ones
 * agree with it up to the order of float additions (fconv.h). One
 * function per (op, numerics, instruction set):
 *
 *   fast_<op>_q_amx      Intel AMX (tdpbusd; x86_64 Linux), else as avx512
 *   fast_<op>_q_avx512   AVX-512 with VNNI (vpdpbusd)
 *   fast_<op>_q_avx2     AVX2 + FMA (vpmaddwd, exact int32 sums)
 *   fast_<op>_q_c        portable C, written for GCC's auto-vectorizer
 *   fast_<op>_f32_avx512 AVX-512F FMA, 16 channels per vector
 *   fast_<op>_f32_avx2   AVX2 + FMA, 8 channels per vector
 *   fast_<op>_f32_c      portable C (GCC vector extensions where available)
 *
 * Each has a prepare function that packs constant weights once per node
 * (kernels.h); without a prepared state the kernel packs them per run.
 * The ISA-specific code is compiled with per-function target attributes,
 * so the build needs no -m flags and runs on any x86-64. */
#ifndef MERA_KERNELS_FAST_FAST_H
#define MERA_KERNELS_FAST_FAST_H

#include "kernels/kernels.h"

#define FAST_KERNEL_DECL(op, suffix)                                                               \
    mera_status fast_##op##_q_##suffix(const mera_kernel_args *a, mera_error *err);               \
    mera_status fast_##op##_q_prepare_##suffix(const mera_kernel_args *a, void **state, mera_error *err);

/* conv_q.c */
FAST_KERNEL_DECL(conv2d, c)
FAST_KERNEL_DECL(conv2d, avx2)
FAST_KERNEL_DECL(conv2d, avx512)
FAST_KERNEL_DECL(conv2d, amx)
/* dense_q.c */
FAST_KERNEL_DECL(dense, c)
FAST_KERNEL_DECL(dense, avx2)
FAST_KERNEL_DECL(dense, avx512)
FAST_KERNEL_DECL(dense, amx)

/* Releases the state of any of the prepare functions above. */
void fast_qconv_release(void *state);
mera_status fast_qconv_prepare_like(const mera_kernel_args *a, const void *like, void **state, mera_error *err);
/* The scratch a run of any of them needs (the padded input). */
size_t fast_qconv_scratch(const mera_kernel_args *a);

#define FAST_F32_KERNEL_DECL(op, suffix)                                                           \
    mera_status fast_##op##_f32_##suffix(const mera_kernel_args *a, mera_error *err);             \
    mera_status fast_##op##_f32_prepare_##suffix(const mera_kernel_args *a, void **state, mera_error *err);

/* conv_f32.c */
FAST_F32_KERNEL_DECL(conv2d, c)
FAST_F32_KERNEL_DECL(conv2d, avx2)
FAST_F32_KERNEL_DECL(conv2d, avx512)
/* dense_f32.c */
FAST_F32_KERNEL_DECL(dense, c)
FAST_F32_KERNEL_DECL(dense, avx2)
FAST_F32_KERNEL_DECL(dense, avx512)

/* Releases the state of any of the float prepare functions above. */
void fast_fconv_release(void *state);

/* The elementwise, conversion and pooling kernels (ew.h): no prepare
 * except the activations' tables. */
#define FAST_EW_DECL(suffix)                                                                        \
    mera_status fast_add_q_##suffix(const mera_kernel_args *a, mera_error *err);                   \
    mera_status fast_mul_q_##suffix(const mera_kernel_args *a, mera_error *err);                   \
    mera_status fast_quantize_##suffix(const mera_kernel_args *a, mera_error *err);                \
    mera_status fast_dequantize_##suffix(const mera_kernel_args *a, mera_error *err);              \
    mera_status fast_requantize_##suffix(const mera_kernel_args *a, mera_error *err);              \
    mera_status fast_max_pool2d_q_##suffix(const mera_kernel_args *a, mera_error *err);            \
    mera_status fast_avg_pool2d_q_##suffix(const mera_kernel_args *a, mera_error *err);            \
    mera_status fast_adaptive_avg_pool2d_q_##suffix(const mera_kernel_args *a, mera_error *err);
/* elementwise_q.c, pool_q.c */
FAST_EW_DECL(c)
FAST_EW_DECL(avx2)
FAST_EW_DECL(avx512)

/* elementwise_q.c: table lookups, one kernel for every CPU; their prepare
 * makes the tables, released by fast_ew_release. */
mera_status fast_leaky_relu_q(const mera_kernel_args *a, mera_error *err);
mera_status fast_hardswish_q(const mera_kernel_args *a, mera_error *err);
mera_status fast_hardsigmoid_q(const mera_kernel_args *a, mera_error *err);
mera_status fast_sigmoid_q(const mera_kernel_args *a, mera_error *err);
mera_status fast_gelu_q(const mera_kernel_args *a, mera_error *err);
mera_status fast_act_q_prepare(const mera_kernel_args *a, void **state, mera_error *err);
/* upsample_q.c: nearest and bilinear upsample of NHWC or NCHW data, every CPU (bilinear NHWC rows in
 * AVX-512 where present); prepare computes the source columns once (no allocation per run). */
mera_status fast_upsample_q(const mera_kernel_args *a, mera_error *err);
mera_status fast_upsample_q_prepare(const mera_kernel_args *a, void **state, mera_error *err);
void fast_upsample_q_release(void *state);
/* mean_q.c: the global spatial mean of NHWC or NCHW data in plain C, every CPU. */
mera_status fast_mean_q(const mera_kernel_args *a, mera_error *err);
/* conv_transpose_q.c: quantized conv_transpose2d by output phases, AVX-512 VNNI, AVX2 and portable C;
 * prepare packs constant weights, and the scratch holds the padded input copy. */
FAST_KERNEL_DECL(conv_transpose2d, c)
FAST_KERNEL_DECL(conv_transpose2d, avx2)
FAST_KERNEL_DECL(conv_transpose2d, avx512)
void fast_conv_transpose2d_q_release(void *state);
size_t fast_conv_transpose2d_q_scratch(const mera_kernel_args *a);
/* concat_q.c: table lookups and copies, every CPU. */
mera_status fast_concat_q(const mera_kernel_args *a, mera_error *err);
mera_status fast_concat_q_prepare(const mera_kernel_args *a, void **state, mera_error *err); /* fast_ew_release */
void fast_ew_release(void *state);
/* transpose.c: transpose of elements of any size (both numerics), every CPU. */
mera_status fast_transpose(const mera_kernel_args *a, mera_error *err);

#endif
