/* Kernel dispatch: the table of reference kernels, one per (op, numerics),
 * and the seam where faster kernels are chosen from the CPU's features.
 *
 * The numerics of a node follow its first input: float32 -> FLOAT,
 * int8/uint8 with quantization parameters -> QUANT. quantize therefore only
 * has a FLOAT kernel and dequantize/requantize only QUANT ones. */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/fast.h"
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
    [MERA_OP_SUB]                 = BOTH(ref_sub_f32, NULL),
    [MERA_OP_DIV]                 = BOTH(ref_div_f32, NULL),
    [MERA_OP_POW]                 = BOTH(ref_pow_f32, NULL),
    [MERA_OP_MAXIMUM]             = BOTH(ref_maximum_f32, NULL),
    [MERA_OP_MINIMUM]             = BOTH(ref_minimum_f32, NULL),
    [MERA_OP_SQRT]                = BOTH(ref_sqrt_f32, NULL),
    [MERA_OP_EXP]                 = BOTH(ref_exp_f32, NULL),
    [MERA_OP_LOG]                 = BOTH(ref_log_f32, NULL),
    [MERA_OP_TANH]                = BOTH(ref_tanh_f32, NULL),
    [MERA_OP_ERF]                 = BOTH(ref_erf_f32, NULL),
    [MERA_OP_ABS]                 = BOTH(ref_abs_f32, NULL),
    [MERA_OP_MATMUL]              = BOTH(ref_matmul_f32, NULL),
    [MERA_OP_CONV_TRANSPOSE2D]    = BOTH(ref_conv_transpose2d_f32, ref_conv_transpose2d_q),
    [MERA_OP_LSTM]                = BOTH(ref_lstm_f32, NULL),
    [MERA_OP_DYNAMIC_QUANTIZE_LINEAR] = BOTH(ref_dynamic_quantize_linear, NULL),
    [MERA_OP_MATMUL_INTEGER]      = BOTH(ref_matmul_integer, NULL),
    [MERA_OP_CONV_INTEGER]        = BOTH(ref_conv_integer, NULL),
    [MERA_OP_CAST]                = BOTH(ref_cast, NULL),
    [MERA_OP_FLOOR]               = BOTH(ref_floor_f32, NULL),
    [MERA_OP_CEIL]                = BOTH(ref_ceil_f32, NULL),
    [MERA_OP_ROUND]               = BOTH(ref_round_f32, NULL),
    [MERA_OP_INT_ARITH]           = BOTH(ref_int_arith, NULL),
    [MERA_OP_GRU]                 = BOTH(ref_gru_f32, NULL),
    [MERA_OP_DYNAMIC_QUANTIZE_LSTM] = BOTH(ref_dynamic_quantize_lstm, NULL),
    [MERA_OP_TOPK]                = BOTH(ref_topk, NULL),
    [MERA_OP_REDUCE]              = BOTH(ref_reduce_f32, NULL),
    [MERA_OP_NON_MAX_SUPPRESSION] = BOTH(ref_non_max_suppression, NULL),
    [MERA_OP_GATHER]              = BOTH(ref_gather, ref_gather),
    [MERA_OP_ARGMAX]              = BOTH(ref_argmax, ref_argmax),
    [MERA_OP_ARGMIN]              = BOTH(ref_argmax, ref_argmax),
    [MERA_OP_ROWS_VALID]          = BOTH(ref_rows_valid, ref_rows_valid),
    [MERA_OP_COMPARE]             = BOTH(ref_compare, NULL),
    [MERA_OP_NONZERO]             = BOTH(ref_nonzero, NULL),
    [MERA_OP_GATHER_ND]           = BOTH(ref_gather_nd, ref_gather_nd),
    [MERA_OP_SCATTER_ND]          = BOTH(ref_scatter_nd, NULL),
    [MERA_OP_BATCH_NORM]          = BOTH(ref_batch_norm_f32, ref_batch_norm_q),
    [MERA_OP_PRELU]               = BOTH(ref_prelu_f32, ref_prelu_q),
    [MERA_OP_ELU]                 = BOTH(ref_elu_f32, ref_elu_q),
    [MERA_OP_GELU]                = BOTH(ref_gelu_f32, ref_gelu_q),
    [MERA_OP_ADD_SCALAR]          = BOTH(ref_add_scalar_f32, ref_add_scalar_q),
    [MERA_OP_MUL_SCALAR]          = BOTH(ref_mul_scalar_f32, ref_mul_scalar_q),
    [MERA_OP_QTANH]               = BOTH(ref_qtanh_f32, ref_qtanh_q),
    [MERA_OP_LINEAR_DYNAMIC]      = BOTH(ref_linear_dynamic, NULL),
    [MERA_OP_LAYER_NORM_Q]        = BOTH(NULL, ref_layer_norm_q),
    [MERA_OP_GROUP_NORM_Q]        = BOTH(NULL, ref_group_norm_q),
    [MERA_OP_SIN]                 = BOTH(ref_sin_f32, NULL),
    [MERA_OP_COS]                 = BOTH(ref_cos_f32, NULL),
    [MERA_OP_TAN]                 = BOTH(ref_tan_f32, NULL),
    [MERA_OP_ASIN]                = BOTH(ref_asin_f32, NULL),
    [MERA_OP_ACOS]                = BOTH(ref_acos_f32, NULL),
    [MERA_OP_ATAN]                = BOTH(ref_atan_f32, NULL),
    [MERA_OP_SINH]                = BOTH(ref_sinh_f32, NULL),
    [MERA_OP_COSH]                = BOTH(ref_cosh_f32, NULL),
    [MERA_OP_ASINH]               = BOTH(ref_asinh_f32, NULL),
    [MERA_OP_ACOSH]               = BOTH(ref_acosh_f32, NULL),
    [MERA_OP_ATANH]               = BOTH(ref_atanh_f32, NULL),
    [MERA_OP_SIGN]                = BOTH(ref_sign_f32, NULL),
    [MERA_OP_ATAN2]               = BOTH(ref_atan2_f32, NULL),
    [MERA_OP_WHERE]               = BOTH(ref_where, NULL),
    [MERA_OP_CUMSUM]              = BOTH(ref_cumsum, NULL),
    [MERA_OP_GATHER_ELEMENTS]     = BOTH(ref_gather_elements, NULL),
};

mera_kernel_fn mera_kernel_ref(int op, mera_numerics num)
{
    if (op < 0 || op >= MERA_OP_COUNT || (int)num < 0 || num >= MERA_NUMERICS_COUNT)
        return NULL;
    return ref_table[op][num];
}

/* Faster kernels, slotted in per (op, numerics) in order of preference,
 * each with the CPU features it needs. The quantized ones give the
 * reference's bytes; the float ones differ from it only by the order of
 * float additions (tests/test_kernels_fast.py checks both). */
typedef enum {
    FAST_CONV,        /* conv2d, dense (qconv.h, fconv.h) */
    FAST_ELEMENTWISE, /* add, mul, the tabulated activations (elementwise_q.c), concat, upsample */
    FAST_CONVERT,     /* quantize, dequantize, requantize (elementwise_q.c) */
    FAST_POOL,        /* max_pool2d, avg_pool2d, adaptive_avg_pool2d (pool_q.c), mean (mean_q.c) */
    FAST_SHAPE,       /* transpose (transpose.c): moves elements, both numerics */
} fast_family;

typedef struct {
    mera_kernel k;
    int (*usable)(const mera_cpu_features *f); /* may it run on this CPU? */
    fast_family family;
    unsigned roundings; /* bit r set: gives the reference's bytes under mera_rounding r */
} fast_kernel;

/* May fast kernel k run a node whose graph has this rounding? The one place
 * that decides it: a fast kernel lists the roundings it implements, and a
 * mode it does not list (a new one included) falls back to the reference. */
static int fast_kernel_implements_rounding(const fast_kernel *k, mera_rounding rounding)
{
    return (unsigned)rounding < MERA_ROUNDING_COUNT && (k->roundings >> rounding) & 1u;
}

/* The roundings of today's contract (docs/numerics.md). conv2d and dense
 * requantize an accumulator as rne(y) + z under both: fbgemm's
 * requantizeOutputProcessing adds the zero point after rounding whatever
 * its Quantize does. */
#define ROUNDINGS_ZP (1u << MERA_ROUNDING_ZP_BEFORE_ROUNDING | 1u << MERA_ROUNDING_ZP_AFTER_ROUNDING)

#define FAST_MAX 4 /* candidates per (op, numerics) */

static int any_cpu(const mera_cpu_features *f)
{
    (void)f;
    return 1;
}

#if defined(__x86_64__)
static int has_avx2(const mera_cpu_features *f)
{
    return f->avx2 && f->fma;
}

static int has_avx512vnni(const mera_cpu_features *f)
{
    return f->avx512f && f->avx512vnni;
}

#if defined(__linux__)
/* AMX runs the AVX-512 kernel's depthwise loop, small gemms and
 * requantization (isa_amx.c), with its byte/word forms. */
static int has_amx(const mera_cpu_features *f)
{
    return f->amx_int8 && f->avx512f && f->avx512vnni && f->avx512bw;
}
#endif

static int has_avx512f(const mera_cpu_features *f)
{
    return f->avx512f && f->fma;
}
#endif

/* The quantized kernels of fast/ for op, best first; the portable one runs
 * on any CPU. */
#define FAST_Q(op, isa, name, usable) \
    {{fast_##op##_q_##isa, fast_##op##_q_prepare_##isa, fast_qconv_release, name, fast_qconv_scratch, \
      fast_qconv_prepare_like}, usable, FAST_CONV, ROUNDINGS_ZP}
#if defined(__x86_64__) && defined(__linux__)
#define FAST_QCONV(op)                                                                             \
    {FAST_Q(op, amx, "amx", has_amx), FAST_Q(op, avx512, "avx512vnni", has_avx512vnni),           \
     FAST_Q(op, avx2, "avx2", has_avx2), FAST_Q(op, c, "c", any_cpu)}
#elif defined(__x86_64__)
#define FAST_QCONV(op)                                                                        \
    {FAST_Q(op, avx512, "avx512vnni", has_avx512vnni), FAST_Q(op, avx2, "avx2", has_avx2), \
     FAST_Q(op, c, "c", any_cpu)}
#else
#define FAST_QCONV(op) {FAST_Q(op, c, "c", any_cpu)}
#endif

/* conv_transpose2d (conv_transpose_q.c), best first. */
#define FAST_QT(isa, name, usable)                                                                         \
    {{fast_conv_transpose2d_q_##isa, fast_conv_transpose2d_q_prepare_##isa, fast_conv_transpose2d_q_release, \
      name, fast_conv_transpose2d_q_scratch, NULL},                                                       \
     usable, FAST_CONV, ROUNDINGS_ZP}
#if defined(__x86_64__)
#define FAST_QCONVT \
    {FAST_QT(avx512, "avx512vnni", has_avx512vnni), FAST_QT(avx2, "avx2", has_avx2), FAST_QT(c, "c", any_cpu)}
#else
#define FAST_QCONVT {FAST_QT(c, "c", any_cpu)}
#endif

/* The float kernels of fast/ for op, best first. */
#define FAST_F(op, isa, name, usable) \
    {{fast_##op##_f32_##isa, fast_##op##_f32_prepare_##isa, fast_fconv_release, name}, usable, FAST_CONV, MERA_ROUNDINGS_ALL}
#if defined(__x86_64__)
#define FAST_FCONV(op)                                                                       \
    {FAST_F(op, avx512, "avx512f", has_avx512f), FAST_F(op, avx2, "avx2", has_avx2), \
     FAST_F(op, c, "c", any_cpu)}
#else
#define FAST_FCONV(op) {FAST_F(op, c, "c", any_cpu)}
#endif

/* The elementwise kernels of fast/ (ew.h), best first: kernel is the
 * entry's name without the instruction set's suffix. */
#define FAST_EW1(kernel, isa, name, usable, family, roundings) {{kernel##_##isa, NULL, NULL, name}, usable, family, roundings}
#if defined(__x86_64__)
#define FAST_EW(kernel, family, roundings)                                                      \
    {FAST_EW1(kernel, avx512, "avx512f", has_avx512f, family, roundings),                       \
     FAST_EW1(kernel, avx2, "avx2", has_avx2, family, roundings), FAST_EW1(kernel, c, "c", any_cpu, family, roundings)}
#else
#define FAST_EW(kernel, family, roundings) {FAST_EW1(kernel, c, "c", any_cpu, family, roundings)}
#endif
/* A 256-byte table per body, the same code on every CPU. */
#define FAST_ACT(kernel, roundings) \
    {{{kernel, fast_act_q_prepare, fast_ew_release, "table"}, any_cpu, FAST_ELEMENTWISE, roundings}}

/* The elementwise, convert and pool kernels follow a->rounding wherever their quantize step
 * depends on it (ew.h; the table kernels build their tables with the reference's own
 * rounding-aware primitives), so each implements every mode. */
#define ROUNDINGS_EW MERA_ROUNDINGS_ALL

static const fast_kernel fast_table[MERA_OP_COUNT][MERA_NUMERICS_COUNT][FAST_MAX] = {
    [MERA_OP_CONV2D][MERA_NUMERICS_QUANT] = FAST_QCONV(conv2d),
    [MERA_OP_DENSE][MERA_NUMERICS_QUANT]  = FAST_QCONV(dense),
    [MERA_OP_CONV2D][MERA_NUMERICS_FLOAT] = FAST_FCONV(conv2d),
    [MERA_OP_DENSE][MERA_NUMERICS_FLOAT]  = FAST_FCONV(dense),
    [MERA_OP_ADD][MERA_NUMERICS_QUANT]         = FAST_EW(fast_add_q, FAST_ELEMENTWISE, ROUNDINGS_EW),
    [MERA_OP_MUL][MERA_NUMERICS_QUANT]         = FAST_EW(fast_mul_q, FAST_ELEMENTWISE, MERA_ROUNDINGS_ALL),
    [MERA_OP_LEAKY_RELU][MERA_NUMERICS_QUANT]  = FAST_ACT(fast_leaky_relu_q, ROUNDINGS_EW),
    [MERA_OP_HARDSWISH][MERA_NUMERICS_QUANT]   = FAST_ACT(fast_hardswish_q, ROUNDINGS_EW),
    [MERA_OP_HARDSIGMOID][MERA_NUMERICS_QUANT] = FAST_ACT(fast_hardsigmoid_q, ROUNDINGS_EW),
    [MERA_OP_SIGMOID][MERA_NUMERICS_QUANT]     = FAST_ACT(fast_sigmoid_q, ROUNDINGS_EW),
    [MERA_OP_GELU][MERA_NUMERICS_QUANT]        = FAST_ACT(fast_gelu_q, ROUNDINGS_EW),
    [MERA_OP_QUANTIZE][MERA_NUMERICS_FLOAT]    = FAST_EW(fast_quantize, FAST_CONVERT, ROUNDINGS_EW),
    [MERA_OP_DEQUANTIZE][MERA_NUMERICS_QUANT]  = FAST_EW(fast_dequantize, FAST_CONVERT, MERA_ROUNDINGS_ALL),
    [MERA_OP_REQUANTIZE][MERA_NUMERICS_QUANT]  = FAST_EW(fast_requantize, FAST_CONVERT, ROUNDINGS_EW),
    [MERA_OP_MAX_POOL2D][MERA_NUMERICS_QUANT]  = FAST_EW(fast_max_pool2d_q, FAST_POOL, MERA_ROUNDINGS_ALL),
    [MERA_OP_AVG_POOL2D][MERA_NUMERICS_QUANT]  = FAST_EW(fast_avg_pool2d_q, FAST_POOL, ROUNDINGS_EW),
    [MERA_OP_ADAPTIVE_AVG_POOL2D][MERA_NUMERICS_QUANT] = FAST_EW(fast_adaptive_avg_pool2d_q, FAST_POOL, ROUNDINGS_EW),
    [MERA_OP_MEAN][MERA_NUMERICS_QUANT] = {{{fast_mean_q, NULL, NULL, "c", NULL}, any_cpu, FAST_POOL, ROUNDINGS_EW}},
    [MERA_OP_UPSAMPLE][MERA_NUMERICS_QUANT] =
        {{{fast_upsample_q, fast_upsample_q_prepare, fast_upsample_q_release, "c", NULL}, any_cpu, FAST_ELEMENTWISE,
          ROUNDINGS_EW}},
    [MERA_OP_CONV_TRANSPOSE2D][MERA_NUMERICS_QUANT] = FAST_QCONVT,
    [MERA_OP_CONCAT][MERA_NUMERICS_QUANT]      = {{{fast_concat_q, fast_concat_q_prepare, fast_ew_release, "table", NULL},
                                                   any_cpu, FAST_ELEMENTWISE, ROUNDINGS_EW}},
    [MERA_OP_TRANSPOSE][MERA_NUMERICS_QUANT] = {{{fast_transpose, NULL, NULL, "c", NULL}, any_cpu, FAST_SHAPE,
                                                 MERA_ROUNDINGS_ALL}},
    [MERA_OP_TRANSPOSE][MERA_NUMERICS_FLOAT] = {{{fast_transpose, NULL, NULL, "c", NULL}, any_cpu, FAST_SHAPE,
                                                 MERA_ROUNDINGS_ALL}},
};

/* May a kernel of family replace the reference of (op, num)? One predicate
 * per family, the one place to say which numerics a family's kernels
 * implement: today every family implements the one contract of
 * docs/numerics.md, so each answers yes. */
static int fast_family_applies(fast_family family, int op, mera_numerics num)
{
    (void)op;
    (void)num;
    switch (family) {
    case FAST_CONV:
        return 1;
    case FAST_ELEMENTWISE:
        return 1;
    case FAST_CONVERT:
        return 1;
    case FAST_POOL:
        return 1;
    case FAST_SHAPE:
        return 1;
    }
    return 0;
}

mera_status mera_kernel_table_check(mera_error *err)
{
    static const char *const numerics_name[MERA_NUMERICS_COUNT] = {[MERA_NUMERICS_FLOAT] = "float",
                                                                  [MERA_NUMERICS_QUANT] = "quantized"};
    for (int op = 0; op < MERA_OP_COUNT; op++) {
        unsigned f = mera_op_table[op].flags;
        for (int num = 0; num < MERA_NUMERICS_COUNT; num++) {
            int takes = num == MERA_NUMERICS_FLOAT ? !(f & MERA_OPF_QUANT_IN) : !(f & MERA_OPF_FLOAT_IN);
            if (!ref_table[op][num] != !takes)
                return mera_fail(err, MERA_ERR_INVALID, "kernel table: %s %s a %s reference kernel (ops.def: %s)",
                                 mera_op_table[op].name, takes ? "lacks" : "has", numerics_name[num],
                                 takes ? "it takes that numerics" : "its input 0 never has that numerics");
            for (int i = 0; i < FAST_MAX; i++) {
                const fast_kernel *k = &fast_table[op][num][i];
                if (k->k.run && (!ref_table[op][num] || !k->usable || !k->k.name || !k->roundings))
                    return mera_fail(err, MERA_ERR_INVALID,
                                     "kernel table: %s fast %s kernel %d has no reference, usable test, name or rounding",
                                     mera_op_table[op].name, numerics_name[num], i);
            }
        }
    }
    return MERA_OK;
}

/* MERA_REFERENCE_KERNELS set to anything but "" or "0". */
static int reference_forced(void)
{
    const char *s = getenv("MERA_REFERENCE_KERNELS");
    return s && *s && strcmp(s, "0") != 0;
}

mera_kernel mera_kernel_select(int op, mera_numerics num, mera_rounding rounding)
{
    mera_kernel ref = {.run = mera_kernel_ref(op, num), .name = "ref"};
    if (!ref.run || (unsigned)rounding >= MERA_ROUNDING_COUNT) {
        ref.run = NULL;
        ref.name = "none";
        return ref;
    }
    if (reference_forced())
        return ref;
    const mera_cpu_features *f = mera_cpu_features_get();
    for (int i = 0; i < FAST_MAX; i++) {
        const fast_kernel *k = &fast_table[op][num][i];
        if (k->k.run && k->usable(f) && fast_family_applies(k->family, op, num) &&
            fast_kernel_implements_rounding(k, rounding))
            return k->k;
    }
    return ref;
}

mera_numerics mera_kernel_node_numerics(const mera_graph *g, const mera_node *node)
{
    const mera_type *t0 = &mera_graph_value(g, node->inputs[0])->type;
    return t0->q.kind != MERA_QUANT_NONE ? MERA_NUMERICS_QUANT : MERA_NUMERICS_FLOAT;
}

mera_status mera_kernel_select_node(const mera_node *node, mera_numerics num, mera_rounding rounding,
                                    mera_kernel *k, mera_error *err)
{
    *k = mera_kernel_select(node->op, num, rounding);
    if (k->run)
        return MERA_OK;
    if ((unsigned)rounding >= MERA_ROUNDING_COUNT)
        return mera_fail(err, MERA_ERR_UNSUPPORTED, "node '%s' (%s): no kernel implements rounding mode %d",
                         node->name, mera_op_table[node->op].name, (int)rounding);
    return mera_fail(err, MERA_ERR_UNSUPPORTED, "node '%s' (%s): no %s kernel for this op", node->name,
                     mera_op_table[node->op].name, num == MERA_NUMERICS_QUANT ? "quantized" : "float");
}

void mera_kernel_node_args(const mera_graph *g, int n, const void *const *value_data, mera_kernel_args *a)
{
    const mera_node *node = mera_graph_node(g, n);
    memset(a, 0, sizeof *a);
    a->node = node;
    a->n_inputs = node->n_inputs;
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        if (v < 0)
            continue;
        a->in_types[i] = &mera_graph_value(g, v)->type;
        a->in[i] = value_data ? value_data[v] : NULL;
    }
    a->n_outputs = node->n_outputs;
    for (int o = 0; o < node->n_outputs; o++)
        a->out_types[o] = &mera_graph_value(g, node->outputs[o])->type;
    a->rounding = mera_graph_rounding(g);
}

mera_status mera_kernel_prepare_node(const mera_kernel *k, const mera_graph *g, int n,
                                     const void *const *value_data, void **state, mera_error *err)
{
    if (!k->prepare)
        return MERA_OK;
    mera_kernel_args a;
    mera_kernel_node_args(g, n, value_data, &a);
    mera_status st = k->prepare(&a, state, err);
    if (st)
        mera_error_prefix(err, "node '%s' (%s): ", a.node->name, mera_op_table[a.node->op].name);
    return st;
}

/* Does the comma-separated list s name feature (or "all")? */
static int masked(const char *s, const char *feature)
{
    size_t n = strlen(feature);
    while (s && *s) {
        size_t len = strcspn(s, ",");
        if ((len == n && strncmp(s, feature, n) == 0) || (len == 3 && strncmp(s, "all", 3) == 0))
            return 1;
        s += len + (s[len] == ',');
    }
    return 0;
}

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>

/* AMX with int8: CPUID.(7,0):EDX bit 24 (AMX-TILE) and bit 25 (AMX-INT8),
 * the OS saving the tile state (XCR0 bits 17, 18: XTILECFG, XTILEDATA) and
 * Linux granting it to this process: arch_prctl(ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA), which must come before the first tile instruction
 * of any thread (else SIGILL) and holds for all threads of the process.
 * The request can fail, e.g. when a thread's sigaltstack is too small for
 * the larger signal frame; then AMX is not used. Asked once per process
 * (a race asks twice, which is harmless); the syscall is made directly so
 * that no feature-test macro is needed for syscall(2). */
static int amx_detect(void)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((d >> 24) & 1) || !((d >> 25) & 1))
        return 0;
    __cpuid(1, a, b, c, d);
    if (!((c >> 27) & 1)) /* OSXSAVE: xgetbv available */
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if (((lo >> 17) & 3) != 3)
        return 0;
    long ret;
    const long sys_arch_prctl = 158, arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(sys_arch_prctl), "D"(arch_req_xcomp_perm), "S"(xfeature_xtiledata)
                     : "rcx", "r11", "memory");
    return ret == 0;
}

static int amx_available(void)
{
    static int state; /* 0: not asked yet, 1: no, 2: yes */
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (!s) {
        s = amx_detect() ? 2 : 1;
        __atomic_store_n(&state, s, __ATOMIC_RELEASE);
    }
    return s == 2;
}
#else
static int amx_available(void)
{
    return 0;
}
#endif

/* Detected on every call: it is a handful of loads from data that libgcc
 * filled in at startup (AMX: once per process), and a per-thread result
 * needs no locking. */
const mera_cpu_features *mera_cpu_features_get(void)
{
    static _Thread_local mera_cpu_features f;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    f.avx2 = __builtin_cpu_supports("avx2") != 0;
    f.fma = __builtin_cpu_supports("fma") != 0;
    f.avx512f = __builtin_cpu_supports("avx512f") != 0;
    f.avx512vnni = __builtin_cpu_supports("avx512vnni") != 0;
    f.avx512bw = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    f.avx512vbmi = __builtin_cpu_supports("avx512vbmi") != 0;
#else
    f.avx2 = f.fma = f.avx512f = f.avx512vnni = f.avx512bw = f.avx512vbmi = 0;
#endif
    f.amx_int8 = amx_available();
    const char *mask = getenv("MERA_CPU_FEATURES_MASK");
    if (mask) {
        f.avx2 &= !masked(mask, "avx2");
        f.fma &= !masked(mask, "fma");
        f.avx512f &= !masked(mask, "avx512f");
        f.avx512vnni &= !masked(mask, "avx512vnni");
        f.avx512bw &= !masked(mask, "avx512bw");
        f.avx512vbmi &= !masked(mask, "avx512vbmi");
        f.amx_int8 &= !masked(mask, "amx_int8");
    }
    f.avx512bw &= f.avx512f;
    f.avx512vbmi &= f.avx512bw;
    return &f;
}
