/* fold_const: a node whose inputs are all constant (PARAM or CONST values,
 * or nodes folded before it) is evaluated once and replaced by a CONST
 * holding its result, named as the node, owned by the new graph.
 *
 * Exactness: the constant is the bytes the node gives at run time. A node
 * is evaluated alone, on a one-node graph of the same op, attributes and
 * input/output types, with the interpreter that defines its numerics:
 * InterpreterHw for a quantized node (its first input has quantization
 * parameters: the integer contract of docs/numerics.md, which every
 * target computes), the float Interpreter for a float node. Every float
 * kernel but conv2d's and dense's is the reference kernel (the only float
 * kernels with faster variants, whose sums run in another order, so their
 * bytes depend on the CPU); float conv2d and dense are therefore never
 * folded, and every folded node's bytes are the same whichever kernel an
 * interpreter picks.
 *
 * Not folded:
 *   - dequantize: it is how a quantized weight reaches a float op, which
 *     lower_qdq turns into the quantized op (and it would make an int8
 *     weight a 4x larger float one);
 *   - a node whose result is a graph output (outputs stay computed);
 *   - a node whose result is larger than 64 KiB and more than twice the
 *     bytes of the inputs it reads (a broadcast or upsample of a small
 *     constant is cheaper to compute than to store).
 * Params the folded nodes read stay declared, in order (dce drops the
 * unused ones). */
#include <stdio.h>
#include <stdlib.h>

#include "backends/interp.h"
#include "passes/passes.h"

#define FOLD_MAX_GROWTH_BYTES (64 * 1024)

/* Is value v of the source constant: a PARAM or CONST with data, or the
 * output of a node folded already (its dst value is then a CONST)? */
static int is_constant(const mera_rewriter *rw, int v)
{
    const mera_value *sv = mera_graph_value(rw->src, v);
    if (sv->kind == MERA_VALUE_PARAM || sv->kind == MERA_VALUE_CONST)
        return sv->data != NULL;
    return sv->kind == MERA_VALUE_NODE && rw->map[v] >= 0 &&
           mera_graph_value(rw->dst, rw->map[v])->kind == MERA_VALUE_CONST;
}

/* The data of constant source value v (its dst copy's for a folded node). */
static const void *constant_data(const mera_rewriter *rw, int v)
{
    const mera_value *sv = mera_graph_value(rw->src, v);
    if (sv->kind == MERA_VALUE_NODE)
        return mera_graph_value(rw->dst, rw->map[v])->data;
    return sv->data;
}

static int foldable(const mera_rewriter *rw, const mera_node *node, const char *is_out)
{
    if (node->op == MERA_OP_DEQUANTIZE || node->n_outputs != 1 || is_out[node->outputs[0]])
        return 0;
    const mera_type *t0 = &mera_graph_value(rw->src, node->inputs[0])->type;
    if (t0->q.kind == MERA_QUANT_NONE && (node->op == MERA_OP_CONV2D || node->op == MERA_OP_DENSE))
        return 0;
    size_t in_bytes = 0;
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        if (v < 0)
            continue;
        if (!is_constant(rw, v))
            return 0;
        in_bytes += mera_type_nbytes(&mera_graph_value(rw->src, v)->type);
    }
    size_t out_bytes = mera_type_nbytes(&mera_graph_value(rw->src, node->outputs[0])->type);
    return out_bytes <= FOLD_MAX_GROWTH_BYTES || out_bytes <= 2 * in_bytes;
}

static mera_status failed(const mera_error *err)
{
    return err && err->code ? err->code : MERA_ERR_INVALID;
}

mera_status mera_pass_eval_node(const mera_graph *g, int n, const void *const *in_data, void *out, mera_error *err)
{
    const mera_node *node = mera_graph_node(g, n);
    mera_graph *t = mera_graph_new("fold_const");
    mera_interp *it = NULL;
    mera_status st = MERA_OK;
    if (!t)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    mera_graph_set_rounding(t, mera_graph_rounding(g));
    int ins[MERA_MAX_NODE_INPUTS], out_id;
    for (int i = 0; i < node->n_inputs; i++) {
        int v = node->inputs[i];
        ins[i] = -1;
        if (v < 0)
            continue;
        char name[32];
        snprintf(name, sizeof name, "in%d", i);
        if ((ins[i] = mera_graph_add_const(t, name, &mera_graph_value(g, v)->type, in_data[i], 0, err)) < 0) {
            st = failed(err);
            goto out;
        }
    }
    if (mera_graph_add_node(t, node->op, node->name, ins, node->n_inputs, node->attrs, node->n_attrs, node->source,
                            &out_id, 1, err) < 0 ||
        mera_graph_set_outputs(t, &out_id, 1, err)) {
        st = failed(err);
        goto out;
    }
    mera_interp_mode mode = mera_graph_value(t, ins[0])->type.q.kind != MERA_QUANT_NONE ? MERA_INTERP_HW
                                                                                         : MERA_INTERP_FLOAT;
    if (!(it = mera_interp_compile(t, mode, NULL, err)))
        st = failed(err);
    else
        st = mera_interp_run(it, NULL, &out, err);
out:
    mera_interp_free(it);
    mera_graph_free(t);
    return st;
}

mera_graph *mera_pass_fold_const(const mera_graph *g, mera_error *err)
{
    int nv = mera_graph_num_values(g);
    char *is_out = calloc((size_t)(nv > 0 ? nv : 1), 1);
    mera_rewriter rw;
    if (!is_out) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        is_out[mera_graph_output(g, i)] = 1;
    if (mera_rewriter_init(&rw, g, err) || mera_rewriter_declare_params(&rw)) {
        if (rw.dst)
            mera_rewriter_abort(&rw);
        free(is_out);
        return NULL;
    }
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *node = mera_graph_node(g, n);
        if (!foldable(&rw, node, is_out)) {
            if (mera_rewriter_copy_node(&rw, n) < 0)
                goto fail;
            continue;
        }
        const mera_type *ot = &mera_graph_value(g, node->outputs[0])->type;
        size_t nbytes = mera_type_nbytes(ot);
        void *buf = malloc(nbytes ? nbytes : 1);
        if (!buf) {
            mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            goto fail;
        }
        const void *in_data[MERA_MAX_NODE_INPUTS];
        for (int i = 0; i < node->n_inputs; i++)
            in_data[i] = node->inputs[i] >= 0 ? constant_data(&rw, node->inputs[i]) : NULL;
        if (mera_pass_eval_node(g, n, in_data, buf, err)) {
            free(buf);
            mera_error_prefix(err, "folding node '%s' (%s), whose inputs are all constant: ", node->name,
                              mera_op_table[node->op].name);
            goto fail;
        }
        int id = mera_graph_add_const(rw.dst, node->name, ot, buf, 1, err);
        free(buf);
        if (id < 0)
            goto fail;
        rw.map[node->outputs[0]] = id;
    }
    free(is_out);
    return mera_rewriter_finish(&rw);
fail:
    free(is_out);
    mera_rewriter_abort(&rw);
    return NULL;
}
