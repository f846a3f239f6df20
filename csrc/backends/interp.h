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
 * lets it prepare once, e.g. pack constant weights, and plans one arena
 * per run: the activations (liveness-based reuse) and the kernels' scratch
 * (mera_kernel.scratch, the largest of any node). A compiled interpreter is
 * immutable but for a locked list of arenas of finished runs: one is made
 * at compile, and a run allocates only when more threads run one compiled
 * graph at once than ever before, so a run on one thread never allocates
 * memory (but for kernels with run-time weights, and the Interpreter's
 * float emulation of quantized nodes). */
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

/* Threads each run may split a node's work across (util/threadpool.h):
 * 0 (the default) MERA_NUM_THREADS or every CPU. Set before the first run;
 * the count never changes a byte. */
void mera_interp_set_threads(mera_interp *it, int threads);

/* Bytes of the planned arena of a run: activations and scratch. */
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
