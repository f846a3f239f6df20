/* The rewriter every pass builds its output graph with (passes.h). */
#include <stdio.h>
#include <stdlib.h>

#include "passes/passes.h"

mera_status mera_rewriter_init(mera_rewriter *rw, const mera_graph *src, mera_error *err)
{
    rw->src = src;
    rw->err = err;
    rw->dst = mera_graph_new(mera_graph_name(src));
    if (rw->dst)
        mera_graph_set_rounding(rw->dst, mera_graph_rounding(src));
    int nv = mera_graph_num_values(src);
    rw->map = malloc((size_t)(nv > 0 ? nv : 1) * sizeof *rw->map);
    if (!rw->dst || !rw->map) {
        mera_rewriter_abort(rw);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    }
    for (int v = 0; v < nv; v++)
        rw->map[v] = -1;
    for (int i = 0; i < mera_graph_num_inputs(src); i++) {
        int v = mera_graph_input(src, i);
        const mera_value *sv = mera_graph_value(src, v);
        if (sv->kind != MERA_VALUE_INPUT)
            continue;
        if ((rw->map[v] = mera_graph_add_input(rw->dst, sv->name, &sv->type, err)) < 0) {
            mera_rewriter_abort(rw);
            return err ? err->code : MERA_ERR_INVALID;
        }
    }
    return MERA_OK;
}

mera_status mera_rewriter_declare_params(mera_rewriter *rw)
{
    for (int i = 0; i < mera_graph_num_inputs(rw->src); i++) {
        int v = mera_graph_input(rw->src, i);
        if (mera_graph_value(rw->src, v)->kind == MERA_VALUE_PARAM && rw->map[v] < 0 &&
            mera_rewriter_value(rw, v) < 0)
            return rw->err ? rw->err->code : MERA_ERR_INVALID;
    }
    return MERA_OK;
}

int mera_rewriter_value(mera_rewriter *rw, int v)
{
    if (v < 0)
        return -1;
    if (rw->map[v] >= 0)
        return rw->map[v];
    const mera_value *sv = mera_graph_value(rw->src, v);
    int id = -1;
    switch (sv->kind) {
    case MERA_VALUE_PARAM:
        if (!sv->data) {
            mera_fail(rw->err, MERA_ERR_INVALID, "param '%s' has no data (the graph is not bound)", sv->name);
            return -1;
        }
        id = mera_graph_add_param_ref(rw->dst, sv->name, &sv->type, sv->data, rw->err);
        break;
    case MERA_VALUE_CONST:
        id = mera_graph_add_const(rw->dst, sv->name, &sv->type, sv->data, 0, rw->err);
        break;
    default:
        MERA_BUG("rewriter: a node output or input used before it was mapped");
    }
    if (id >= 0)
        rw->map[v] = id;
    return id;
}

int mera_rewriter_copy_node(mera_rewriter *rw, int n)
{
    const mera_node *node = mera_graph_node(rw->src, n);
    int ins[MERA_MAX_NODE_INPUTS], outs[MERA_MAX_NODE_OUTPUTS];
    for (int i = 0; i < node->n_inputs; i++)
        if ((ins[i] = mera_rewriter_value(rw, node->inputs[i])) < 0 && node->inputs[i] >= 0)
            return -1;
    int k = mera_graph_add_node(rw->dst, node->op, node->name, ins, node->n_inputs, node->attrs, node->n_attrs,
                                node->source, outs, MERA_MAX_NODE_OUTPUTS, rw->err);
    if (k < 0)
        return -1;
    for (int o = 0; o < node->n_outputs; o++)
        rw->map[node->outputs[o]] = outs[o];
    return k;
}

const char *mera_rewriter_fresh_name(mera_rewriter *rw, const char *base)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%.480s", base);
    for (int i = 1; mera_graph_find_value(rw->src, buf) >= 0 || mera_graph_find_value(rw->dst, buf) >= 0; i++)
        snprintf(buf, sizeof buf, "%.480s_%d", base, i);
    const char *s = mera_graph_unique_name(rw->dst, buf);
    if (!s)
        mera_fail(rw->err, MERA_ERR_NOMEM, "out of memory");
    return s;
}

int mera_rewriter_add(mera_rewriter *rw, int op, const char *name, const int *inputs, int n_inputs,
                      const mera_attr *attrs, int n_attrs, const char *source)
{
    const char *nm = mera_rewriter_fresh_name(rw, name);
    if (!nm)
        return -1;
    int outs[MERA_MAX_NODE_OUTPUTS];
    if (mera_graph_add_node(rw->dst, op, nm, inputs, n_inputs, attrs, n_attrs, source, outs, MERA_MAX_NODE_OUTPUTS,
                            rw->err) < 0)
        return -1;
    return outs[0];
}

mera_graph *mera_rewriter_finish(mera_rewriter *rw)
{
    int n = mera_graph_num_outputs(rw->src);
    int *outs = malloc((size_t)(n > 0 ? n : 1) * sizeof *outs);
    if (!outs) {
        mera_fail(rw->err, MERA_ERR_NOMEM, "out of memory");
        mera_rewriter_abort(rw);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if ((outs[i] = mera_rewriter_value(rw, mera_graph_output(rw->src, i))) < 0) {
            free(outs);
            mera_rewriter_abort(rw);
            return NULL;
        }
    mera_status st = mera_graph_set_outputs(rw->dst, outs, n, rw->err);
    free(outs);
    if (st) {
        mera_rewriter_abort(rw);
        return NULL;
    }
    mera_graph *g = rw->dst;
    free(rw->map);
    rw->map = NULL;
    rw->dst = NULL;
    return g;
}

void mera_rewriter_abort(mera_rewriter *rw)
{
    mera_graph_free(rw->dst);
    free(rw->map);
    rw->dst = NULL;
    rw->map = NULL;
}

const void **mera_bound_param_data(const mera_graph *g)
{
    int n = mera_graph_num_inputs(g);
    const void **d = calloc((size_t)(n > 0 ? n : 1), sizeof *d);
    if (!d)
        return NULL;
    for (int i = 0; i < n; i++) {
        const mera_value *v = mera_graph_value(g, mera_graph_input(g, i));
        d[i] = v->kind == MERA_VALUE_PARAM ? v->data : NULL;
    }
    return d;
}
