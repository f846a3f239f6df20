/* bind: the driver's first step. A copy of the user's graph in which every
 * PARAM carries its data, so later passes and stages need no separate
 * param array. PARAMs are declared in the user's order (not on first use)
 * so that deploy.params keeps the order the params dict was declared in;
 * dce.c drops the ones nothing reads. */
#include "passes/passes.h"

mera_graph *mera_pass_bind(const mera_graph *g, const void *const *param_data, mera_error *err)
{
    mera_rewriter rw;
    if (mera_rewriter_init(&rw, g, err))
        return NULL;
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i);
        const mera_value *sv = mera_graph_value(g, v);
        if (sv->kind != MERA_VALUE_PARAM)
            continue;
        const void *data = param_data && param_data[i] ? param_data[i] : sv->data;
        if (!data) {
            mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data", sv->name);
            mera_rewriter_abort(&rw);
            return NULL;
        }
        if ((rw.map[v] = mera_graph_add_param_ref(rw.dst, sv->name, &sv->type, data, err)) < 0) {
            mera_rewriter_abort(&rw);
            return NULL;
        }
    }
    for (int n = 0; n < mera_graph_num_nodes(g); n++)
        if (mera_rewriter_copy_node(&rw, n) < 0) {
            mera_rewriter_abort(&rw);
            return NULL;
        }
    return mera_rewriter_finish(&rw);
}
