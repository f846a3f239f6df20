/* The fast float32 dense (Linear): the conv2d driver of conv_f32.c on a 1x1
 * kernel over an image of one row whose pixels are the rows of x
 * (fconv.h). */
#include "kernels/fast/fast.h"
#include "kernels/fast/fconv.h"

#define DENSE_ENTRIES(suffix, isa)                                                                    \
    mera_status fast_dense_f32_prepare_##suffix(const mera_kernel_args *a, void **state, mera_error *err) \
    {                                                                                                 \
        return fconv_prepare(a, &(isa), 1, state, err);                                               \
    }                                                                                                 \
    mera_status fast_dense_f32_##suffix(const mera_kernel_args *a, mera_error *err)                  \
    {                                                                                                 \
        return fconv_kernel(a, &(isa), 1, err);                                                       \
    }

DENSE_ENTRIES(c, fconv_isa_c)
#if defined(__x86_64__)
DENSE_ENTRIES(avx2, fconv_isa_avx2)
DENSE_ENTRIES(avx512, fconv_isa_avx512)
#endif
