/* Graph passes: a graph in, a new graph out, computing the same function.
 *
 * One file per pass; driver/driver.c runs them in one straight list, and
 * every frontend's graphs go through them, so no frontend rewrites graphs
 * itself.
 *
 *   bind.c         the first step: a copy of the user's graph whose PARAM
 *                  values carry their data (borrowed from the caller)
 *   fold_bn.c      a per-channel mul/add after a conv or dense (how the
 *                  frontends lower BatchNorm) folded into its weights
 *   fold_const.c   nodes whose inputs are all constant evaluated once
 *   lower_qdq.c    dequantize -> float op -> quantize chains (ONNX QDQ,
 *                  torch.export) lowered to quantized ops
 *   layout.c       NCHW spatial ops converted to NHWC, with transposes
 *                  only at the graph's edges (what the DNA computes on)
 *   subpixel.c     quantized NHWC conv_transpose2d as stride*stride conv2d
 *                  phases and an interleave (DNA targets)
 *   trim_taps.c    conv taps that read only padding removed (DNA targets:
 *                  DeepLabV3's dilated ASPP convs become 1x1)
 *   moves.c        chains of transposes and reshapes collapsed to the
 *                  fewest moves (ShuffleNetV2's channel shuffle)
 *   dce.c          nodes and declarations no output depends on removed
 *
 * Conventions. Graphs between passes are *bound*: every PARAM value
 * carries its data (mera_value.data). A pass never modifies its input; its
 * output may borrow data (PARAM and CONST) from the input, so the caller
 * keeps each graph alive as long as the ones made from it (the driver keeps
 * the whole chain). INPUT values keep their names, types and order, and the
 * graph outputs their types and order: a pass changes what runs, never the
 * interface. Nodes a pass copies keep their names and source locations, so
 * errors and reports still name what the user wrote. */
#ifndef MERA_PASSES_PASSES_H
#define MERA_PASSES_PASSES_H

#include "ir/ir.h"

typedef mera_graph *(*mera_pass_fn)(const mera_graph *g, mera_error *err);

/* param_data[i]: the data of g's i-th declared value (mera_graph_input
 * order; INPUT entries ignored), borrowed: it must outlive the result.
 * A PARAM without data (here or in mera_value.data) is an error naming it. */
mera_graph *mera_pass_bind(const mera_graph *g, const void *const *param_data, mera_error *err);

mera_graph *mera_pass_fold_bn(const mera_graph *g, mera_error *err);
mera_graph *mera_pass_fold_const(const mera_graph *g, mera_error *err);
mera_graph *mera_pass_lower_qdq(const mera_graph *g, mera_error *err);
mera_graph *mera_pass_layout_nhwc(const mera_graph *g, mera_error *err);
mera_graph *mera_pass_subpixel(const mera_graph *g, mera_error *err);
mera_graph *mera_pass_trim_taps(const mera_graph *g, mera_error *err);
mera_graph *mera_pass_collapse_moves(const mera_graph *g, mera_error *err);
mera_graph *mera_pass_dce(const mera_graph *g, mera_error *err);

/* The param data array of a bound graph, as mera_interp_compile and the
 * scheduler take it (malloc'd, one entry per mera_graph_input; NULL for
 * INPUT values). NULL when out of memory. */
const void **mera_bound_param_data(const mera_graph *g);

/* Evaluate node n of g alone on constant inputs (in_data[i]: the data of
 * input i, NULL where omitted) into out (a buffer of its output's size):
 * the bytes it gives at run time, computed as fold_const.c says. */
mera_status mera_pass_eval_node(const mera_graph *g, int n, const void *const *in_data, void *out,
                                mera_error *err);

/* ---- the rewriter: what every pass builds its output with ---------------- */

typedef struct {
    const mera_graph *src;
    mera_graph *dst;
    int *map;        /* src value id -> dst value id; -1: not in dst (yet) */
    mera_error *err;
} mera_rewriter;

/* A new dst named as src, with src's INPUT values declared in order. PARAM
 * and CONST values are declared in dst when first used (borrowing their
 * data), so values nothing uses any more disappear. */
mera_status mera_rewriter_init(mera_rewriter *rw, const mera_graph *src, mera_error *err);
/* Declare src's PARAM values not mapped yet in dst, in src's declaration
 * order (borrowing their data): a pass that calls this first keeps the
 * order of the user's params dict, which deploy.params follows, even where
 * it rewrites the nodes reading them (dce.c drops the ones left unused). */
mera_status mera_rewriter_declare_params(mera_rewriter *rw);
/* dst id of src value v: a PARAM or CONST is copied on first use; a node
 * output must have been mapped (by mera_rewriter_copy_node or by the pass
 * setting rw->map). -1 for v < 0 (an omitted optional input) and on error. */
int mera_rewriter_value(mera_rewriter *rw, int v);
/* Copy src node n with its inputs mapped, same name, attributes and source;
 * maps its outputs. Returns the dst node index, or -1 on error. */
int mera_rewriter_copy_node(mera_rewriter *rw, int n);
/* A name used in neither src nor dst: base, base_1, ... (dst-owned), or
 * NULL when out of memory. */
const char *mera_rewriter_fresh_name(mera_rewriter *rw, const char *base);
/* Add a new node to dst (inputs are dst ids); name: a fresh name is made
 * from it (mera_rewriter_fresh_name). Returns the dst id of its first
 * output, or -1. */
int mera_rewriter_add(mera_rewriter *rw, int op, const char *name, const int *inputs, int n_inputs,
                      const mera_attr *attrs, int n_attrs, const char *source);
/* Set dst's outputs to src's outputs mapped, free the map; dst or NULL. */
mera_graph *mera_rewriter_finish(mera_rewriter *rw);
void mera_rewriter_abort(mera_rewriter *rw);

#endif
