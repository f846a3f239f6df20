/* dce: remove the nodes no graph output depends on, and (through the
 * rewriter) the PARAM and CONST values only they read. INPUT values stay,
 * used or not: they are the graph's interface. */
#include <stdlib.h>

#include "passes/passes.h"

mera_graph *mera_pass_dce(const mera_graph *g, mera_error *err)
{
    int nv = mera_graph_num_values(g), nn = mera_graph_num_nodes(g);
    char *live = calloc((size_t)(nv > 0 ? nv : 1), 1);
    if (!live) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        live[mera_graph_output(g, i)] = 1;
    /* nodes are in topological order: one backward sweep finds every live value */
    for (int n = nn - 1; n >= 0; n--) {
        const mera_node *node = mera_graph_node(g, n);
        int used = 0;
        for (int o = 0; o < node->n_outputs; o++)
            used |= live[node->outputs[o]];
        if (!used)
            continue;
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                live[node->inputs[i]] = 1;
    }
    mera_rewriter rw;
    if (mera_rewriter_init(&rw, g, err)) {
        free(live);
        return NULL;
    }
    /* keep the PARAM declaration order of g for the live ones */
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i);
        if (mera_graph_value(g, v)->kind == MERA_VALUE_PARAM && live[v] && mera_rewriter_value(&rw, v) < 0)
            goto fail;
    }
    for (int n = 0; n < nn; n++) {
        const mera_node *node = mera_graph_node(g, n);
        int used = 0;
        for (int o = 0; o < node->n_outputs; o++)
            used |= live[node->outputs[o]];
        if (used && mera_rewriter_copy_node(&rw, n) < 0)
            goto fail;
    }
    free(live);
    return mera_rewriter_finish(&rw);
fail:
    free(live);
    mera_rewriter_abort(&rw);
    return NULL;
}
