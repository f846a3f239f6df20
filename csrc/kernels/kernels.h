/* Kernels: one function per (op, numerics) pair, looked up in a dispatch
 * table. The reference kernels in ref/ are the semantic truth of every op;
 * faster kernels (SIMD, threads) may replace them per op, selected at run
 * time from the CPU's features, and are tested to give identical bytes.
 *
 * A kernel reads its node's attributes through the node, its input and
 * output types through the args, and C-contiguous buffers laid out as the
 * types say (the layout attribute of spatial ops says NCHW or NHWC). */
#ifndef MERA_KERNELS_KERNELS_H
#define MERA_KERNELS_KERNELS_H

#include "ir/ir.h"

typedef struct {
    const mera_node *node;
    int n_inputs;
    const mera_type *in_types[MERA_MAX_NODE_INPUTS]; /* NULL for omitted optional inputs */
    const void *in[MERA_MAX_NODE_INPUTS];
    int n_outputs;
    const mera_type *out_types[MERA_MAX_NODE_OUTPUTS];
    void *out[MERA_MAX_NODE_OUTPUTS];
} mera_kernel_args;

typedef mera_status (*mera_kernel_fn)(const mera_kernel_args *a, mera_error *err);

/* Which arithmetic a kernel implements. */
typedef enum {
    MERA_NUMERICS_FLOAT, /* float32 inputs and outputs */
    MERA_NUMERICS_QUANT, /* int8/uint8 tensors with qparams: the contract of docs/numerics.md */
    MERA_NUMERICS_COUNT
} mera_numerics;

typedef struct {
    int avx2, avx512f, avx512vnni, fma;
} mera_cpu_features;

const mera_cpu_features *mera_cpu_features_get(void);

/* The reference kernel for (op, numerics), or NULL where none exists
 * (e.g. quantize has no QUANT form). */
mera_kernel_fn mera_kernel_ref(int op, mera_numerics num);
/* The fastest kernel available on this CPU; the reference where no faster
 * one exists. */
mera_kernel_fn mera_kernel_select(int op, mera_numerics num);
/* A short name of the selected kernel for reports ("ref", "avx2", ...). */
const char *mera_kernel_select_name(int op, mera_numerics num);

#endif
