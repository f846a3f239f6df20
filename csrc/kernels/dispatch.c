/* Kernel dispatch: the table of reference kernels, one per (op, numerics),
 * and the seam where faster kernels are chosen from the CPU's features.
 *
 * The numerics of a node follow its first input: float32 -> FLOAT,
 * int8/uint8 with quantization parameters -> QUANT. quantize therefore only
 * has a FLOAT kernel and dequantize/requantize only QUANT ones. */
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"

#define BOTH(f32, q) {[MERA_NUMERICS_FLOAT] = (f32), [MERA_NUMERICS_QUANT] = (q)}

static const mera_kernel_fn ref_table[MERA_OP_COUNT][MERA_NUMERICS_COUNT] = {
    [MERA_OP_CONV2D]              = BOTH(ref_conv2d_f32, ref_conv2d_q),
    [MERA_OP_DENSE]               = BOTH(ref_dense_f32, ref_dense_q),
    [MERA_OP_ADD]                 = BOTH(ref_add_f32, ref_add_q),
    [MERA_OP_MUL]                 = BOTH(ref_mul_f32, ref_mul_q),
    [MERA_OP_CONCAT]              = BOTH(ref_concat_f32, ref_concat_q),
    [MERA_OP_RELU]                = BOTH(ref_relu_f32, ref_relu_q),
    [MERA_OP_CLIP]                = BOTH(ref_clip_f32, ref_clip_q),
    [MERA_OP_LEAKY_RELU]          = BOTH(ref_leaky_relu_f32, ref_leaky_relu_q),
    [MERA_OP_HARDSWISH]           = BOTH(ref_hardswish_f32, ref_hardswish_q),
    [MERA_OP_HARDSIGMOID]         = BOTH(ref_hardsigmoid_f32, ref_hardsigmoid_q),
    [MERA_OP_SIGMOID]             = BOTH(ref_sigmoid_f32, ref_sigmoid_q),
    [MERA_OP_MAX_POOL2D]          = BOTH(ref_max_pool2d_f32, ref_max_pool2d_q),
    [MERA_OP_AVG_POOL2D]          = BOTH(ref_avg_pool2d_f32, ref_avg_pool2d_q),
    [MERA_OP_ADAPTIVE_AVG_POOL2D] = BOTH(ref_adaptive_avg_pool2d_f32, ref_adaptive_avg_pool2d_q),
    [MERA_OP_MEAN]                = BOTH(ref_mean_f32, ref_mean_q),
    [MERA_OP_FLATTEN]             = BOTH(ref_flatten, ref_flatten),
    [MERA_OP_RESHAPE]             = BOTH(ref_reshape, ref_reshape),
    [MERA_OP_TRANSPOSE]           = BOTH(ref_transpose, ref_transpose),
    [MERA_OP_SLICE]               = BOTH(ref_slice, ref_slice),
    [MERA_OP_PAD]                 = BOTH(ref_pad_f32, ref_pad_q),
    [MERA_OP_UPSAMPLE]            = BOTH(ref_upsample_f32, ref_upsample_q),
    [MERA_OP_SOFTMAX]             = BOTH(ref_softmax_f32, ref_softmax_q),
    [MERA_OP_QUANTIZE]            = BOTH(ref_quantize, NULL),
    [MERA_OP_DEQUANTIZE]          = BOTH(NULL, ref_dequantize),
    [MERA_OP_REQUANTIZE]          = BOTH(NULL, ref_requantize),
};

mera_kernel_fn mera_kernel_ref(int op, mera_numerics num)
{
    if (op < 0 || op >= MERA_OP_COUNT || (int)num < 0 || num >= MERA_NUMERICS_COUNT)
        return NULL;
    return ref_table[op][num];
}

/* A faster kernel is slotted in here per (op, numerics) together with the
 * CPU features it needs; it must give the reference's bytes. None exist
 * yet, so every entry is empty and selection falls back to ref. */
typedef struct {
    mera_kernel_fn fn;
    const char *name;                          /* "avx2", ... */
    int (*usable)(const mera_cpu_features *f); /* may it run on this CPU? */
} fast_kernel;

static const fast_kernel fast_table[MERA_OP_COUNT][MERA_NUMERICS_COUNT];

static const fast_kernel *select_fast(int op, mera_numerics num)
{
    if (!mera_kernel_ref(op, num))
        return NULL;
    const fast_kernel *k = &fast_table[op][num];
    if (k->fn && k->usable && k->usable(mera_cpu_features_get()))
        return k;
    return NULL;
}

mera_kernel_fn mera_kernel_select(int op, mera_numerics num)
{
    const fast_kernel *k = select_fast(op, num);
    return k ? k->fn : mera_kernel_ref(op, num);
}

const char *mera_kernel_select_name(int op, mera_numerics num)
{
    const fast_kernel *k = select_fast(op, num);
    if (k)
        return k->name;
    return mera_kernel_ref(op, num) ? "ref" : "none";
}

/* Detected on every call: it is a handful of loads from data that libgcc
 * filled in at startup, and a per-thread result needs no locking. */
const mera_cpu_features *mera_cpu_features_get(void)
{
    static _Thread_local mera_cpu_features f;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    f.avx2 = __builtin_cpu_supports("avx2") != 0;
    f.fma = __builtin_cpu_supports("fma") != 0;
    f.avx512f = __builtin_cpu_supports("avx512f") != 0;
    f.avx512vnni = __builtin_cpu_supports("avx512vnni") != 0;
#else
    f.avx2 = f.fma = f.avx512f = f.avx512vnni = 0;
#endif
    return &f;
}
