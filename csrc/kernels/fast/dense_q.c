/* The fast quantized dense (quantized::linear): the conv2d driver of
 * conv_q.c on a 1x1 kernel over an image of one row whose pixels are the
 * rows of x (qconv.h). */
#include "kernels/fast/fast.h"
#include "kernels/fast/qconv.h"

#define DENSE_ENTRIES(suffix, isa)                                                                  \
    mera_status fast_dense_q_prepare_##suffix(const mera_kernel_args *a, void **state, mera_error *err) \
    {                                                                                               \
        return qconv_prepare(a, &(isa), 1, state, err);                                             \
    }                                                                                               \
    mera_status fast_dense_q_##suffix(const mera_kernel_args *a, mera_error *err)                  \
    {                                                                                               \
        return qconv_kernel(a, &(isa), 1, err);                                                     \
    }

DENSE_ENTRIES(c, qconv_isa_c)
#if defined(__x86_64__)
DENSE_ENTRIES(avx2, qconv_isa_avx2)
DENSE_ENTRIES(avx512, qconv_isa_avx512)
#if defined(__linux__)
DENSE_ENTRIES(amx, qconv_isa_amx)
#endif
#endif
