/* The Interpreter and InterpreterHw backends: run a graph node by node with
 * the kernels of csrc/kernels.
 *
 *   Interpreter    float32 reference: float nodes in float; a quantized node
 *                  is emulated in float (dequantize its inputs, run the float
 *                  kernel, quantize the result to its output parameters).
 *   InterpreterHw  the integer contract of docs/numerics.md for quantized
 *                  nodes, float kernels for float nodes. Bit-exact with
 *                  PyTorch's fbgemm kernels.
 *
 * Compiling chooses a kernel per node (kernels.h: mera_kernel_select) and
 * lets it prepare once, e.g. pack constant weights. A compiled interpreter
 * is immutable; runs allocate their own activation arena, so several
 * threads may run one compiled graph at once. */
#ifndef MERA_BACKENDS_INTERP_H
#define MERA_BACKENDS_INTERP_H

#include "ir/ir.h"

typedef enum {
    MERA_INTERP_FLOAT, /* Interpreter */
    MERA_INTERP_HW,    /* InterpreterHw */
} mera_interp_mode;

typedef struct mera_interp mera_interp;

/* param_data[i] is the data of the graph's i-th declared input/param (in
 * mera_graph_input order); entries for INPUT values are ignored. The graph
 * and the param data must outlive the compiled interpreter. */
mera_interp *mera_interp_compile(const mera_graph *g, mera_interp_mode mode, const void *const *param_data,
                                 mera_error *err);
void mera_interp_free(mera_interp *it);

/* Bytes of the planned activation arena (liveness-based reuse). */
size_t mera_interp_arena_bytes(const mera_interp *it);

/* inputs[i]: the data of the i-th INPUT value (in declaration order, params
 * skipped); outputs[i]: a buffer of the i-th graph output's size. */
mera_status mera_interp_run(const mera_interp *it, const void *const *inputs, void *const *outputs, mera_error *err);

/* Called after node `node` ran, with the data of its outputs (valid only
 * during the call). A non-OK status stops the run and is returned. */
typedef mera_status (*mera_interp_observer)(void *user, int node, const void *const *outputs, mera_error *err);

/* mera_interp_run that calls observe after every node (the quantizer's
 * calibration and the per-layer quality report read intermediate values
 * through it). outputs may be NULL when the graph outputs are not wanted. */
mera_status mera_interp_run_observed(const mera_interp *it, const void *const *inputs, void *const *outputs,
                                     mera_interp_observer observe, void *user, mera_error *err);

#endif
