/* Where a quantized layer may be cut into tiles without changing a byte.
 *
 * Several contract kernels pick their formula per element from where the
 * element sits in the whole tensor (PyTorch's vector body versus its
 * scalar tail, see ref/elementwise.c, ref/pool.c, ref/shape.c,
 * ref/upsample.c). Running the kernel on a tile gives the whole tensor's
 * bytes only when the cut keeps every element on the same path. This file
 * owns that knowledge; the scheduler (sched/) cuts only where it allows,
 * and tests/c check that tiles reproduce the whole tensor.
 *
 * Tensors here are the DNA's: quantized, rank <= 4, NHWC when spatial. */
#ifndef MERA_KERNELS_SPLIT_H
#define MERA_KERNELS_SPLIT_H

#include "kernels/kernels.h"

typedef enum {
    MERA_SPLIT_NONE = 0, /* the layer must run as one tile */
    MERA_SPLIT_ROWS,     /* cut the output's dim 1 (H of NHWC) into bands;
                          * a source with the output's dim 1 is cut the same
                          * way, one broadcast along it (extent 1) is whole */
    MERA_SPLIT_CHANNELS, /* cut the output's last dim; every source's last
                          * dim is cut the same way (sources broadcast along
                          * it, extent 1, are whole) */
} mera_split_axis;

typedef struct {
    mera_split_axis axis;
    /* Every tile but the last must span a multiple of granule rows
     * (ROWS) or channels (CHANNELS); the last takes the rest. */
    int64_t granule;
} mera_split_rule;

/* The rule for a node of the given input and output types (as in
 * mera_kernel_args). conv2d and dense are not vector layers: the scheduler
 * tiles them by output rows and output-channel blocks (any cut is exact,
 * given mera_conv_depthwise_saturates below). */
mera_split_rule mera_kernel_split_rule(const mera_node *node, const mera_type *const *in_types, int n_inputs,
                                       const mera_type *out_type);

/* Checks that exactly the ops with MERA_OPF_CUT_ROWS or MERA_OPF_CUT_CHANNELS
 * (ops.def) have a split rule here; mera_kernel_split_rule asserts that
 * every cut it returns is one of the op's. MERA_ERR_INVALID naming the
 * op on a mismatch (run by the C unit tests). */
mera_status mera_kernel_split_table_check(mera_error *err);

/* Whether a quantized conv2d's depthwise pair sums saturate to int16 (the
 * layer takes fbgemm's depthwise fast path, ref/conv.c). A tile of the
 * layer run as its own conv (padding materialised, pad 0) must be told,
 * through the conv2d attribute depthwise_saturate ("auto", "yes", "no"). */
int mera_conv_depthwise_saturates(const mera_node *node, const mera_type *x, const mera_type *w);

#endif
