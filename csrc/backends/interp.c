#include "backends/interp.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "util/firstfit.h"

#define ARENA_ALIGN 64

struct mera_interp {
    const mera_graph *g;
    mera_interp_mode mode;
    int n_values, n_nodes;
    const void **value_data;   /* CONST and PARAM data, else NULL */
    int64_t *value_offset;     /* offset of NODE values in the arena, else -1 */
    mera_kernel *kernels;      /* per node */
    void **states;             /* per node: what the kernel's prepare made, or NULL */
    unsigned char *emulate;    /* per node: run a quantized node in float */
    int *input_slot;           /* per value: index among INPUT values, else -1 */
    size_t arena_bytes;        /* activations, then the scratch */
    size_t scratch_offset;     /* where the kernels' scratch starts in the arena */
    size_t scratch_bytes;      /* the largest scratch of any node (nodes run one at a time) */
    int threads;               /* per run, for the kernels: 0 the pool's default */
    /* Arenas of finished runs, for the next ones: a run allocates only when
     * more threads run at once than ever before (one is made at compile). */
    pthread_mutex_t arenas_lock;
    void **free_arenas;
    int n_free, cap_free;
};

/* ---- memory planning ----------------------------------------------------- */

static mera_status plan_memory(mera_interp *it, mera_error *err)
{
    const mera_graph *g = it->g;
    int *last_use = malloc((size_t)it->n_values * sizeof *last_use);
    mera_firstfit ff;
    if (mera_firstfit_init(&ff, it->n_values + 1) || !last_use) {
        free(last_use);
        mera_firstfit_free(&ff);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory planning graph '%s'", mera_graph_name(g));
    }
    mera_graph_last_uses(g, last_use); /* graph outputs live to the end */
    for (int v = 0; v < it->n_values; v++)
        it->value_offset[v] = -1;
    for (int n = 0; n < it->n_nodes; n++) {
        const mera_node *node = mera_graph_node(g, n);
        for (int o = 0; o < node->n_outputs; o++) {
            int v = node->outputs[o];
            int64_t size = (int64_t)((mera_type_nbytes(&mera_graph_value(g, v)->type) + ARENA_ALIGN - 1) &
                                     ~(size_t)(ARENA_ALIGN - 1));
            it->value_offset[v] = mera_firstfit_place(&ff, size);
        }
        /* Values whose last reader is this node (and outputs nobody reads)
         * are free once the node has run. */
        for (int i = 0; i < node->n_inputs; i++) {
            int v = node->inputs[i];
            if (v >= 0 && last_use[v] == n && it->value_offset[v] >= 0) {
                int dup = 0;
                for (int k = 0; k < i; k++)
                    dup |= node->inputs[k] == v;
                if (!dup)
                    mera_firstfit_release(&ff, it->value_offset[v]);
            }
        }
        for (int o = 0; o < node->n_outputs; o++) {
            int v = node->outputs[o];
            if (last_use[v] < 0)
                mera_firstfit_release(&ff, it->value_offset[v]);
        }
    }
    it->scratch_offset = (size_t)ff.peak;
    it->arena_bytes = it->scratch_offset + it->scratch_bytes;
    free(last_use);
    mera_firstfit_free(&ff);
    return MERA_OK;
}

/* ---- compile ------------------------------------------------------------- */

static int is_quantized(const mera_type *t)
{
    return t->q.kind != MERA_QUANT_NONE;
}

void mera_interp_free(mera_interp *it)
{
    if (!it)
        return;
    for (int i = 0; i < it->n_free; i++)
        free(it->free_arenas[i]);
    free(it->free_arenas);
    pthread_mutex_destroy(&it->arenas_lock);
    if (it->states)
        for (int n = 0; n < it->n_nodes; n++)
            if (it->states[n])
                it->kernels[n].release(it->states[n]);
    free(it->states);
    free(it->value_data);
    free(it->value_offset);
    free(it->kernels);
    free(it->emulate);
    free(it->input_slot);
    free(it);
}

mera_interp *mera_interp_compile(const mera_graph *g, mera_interp_mode mode, const void *const *param_data,
                                 mera_error *err)
{
    if (mera_graph_num_outputs(g) < 1) {
        mera_fail(err, MERA_ERR_INVALID, "graph '%s' has no outputs", mera_graph_name(g));
        return NULL;
    }
    mera_interp *it = calloc(1, sizeof *it);
    if (!it) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&it->arenas_lock, NULL);
    it->g = g;
    it->mode = mode;
    it->n_values = mera_graph_num_values(g);
    it->n_nodes = mera_graph_num_nodes(g);
    it->value_data = calloc((size_t)it->n_values + 1, sizeof *it->value_data);
    it->value_offset = calloc((size_t)it->n_values + 1, sizeof *it->value_offset);
    it->input_slot = calloc((size_t)it->n_values + 1, sizeof *it->input_slot);
    it->kernels = calloc((size_t)it->n_nodes + 1, sizeof *it->kernels);
    it->states = calloc((size_t)it->n_nodes + 1, sizeof *it->states);
    it->emulate = calloc((size_t)it->n_nodes + 1, 1);
    if (!it->value_data || !it->value_offset || !it->input_slot || !it->kernels || !it->states || !it->emulate) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int v = 0; v < it->n_values; v++) {
        const mera_value *val = mera_graph_value(g, v);
        it->input_slot[v] = -1;
        if (val->kind == MERA_VALUE_CONST)
            it->value_data[v] = val->data;
    }
    int slot = 0;
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i);
        const mera_value *val = mera_graph_value(g, v);
        if (val->kind == MERA_VALUE_INPUT) {
            it->input_slot[v] = slot++;
        } else {
            const void *d = param_data ? param_data[i] : NULL;
            if (!d) {
                mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data: pass it in params", val->name);
                goto fail;
            }
            it->value_data[v] = d;
        }
    }
    for (int n = 0; n < it->n_nodes; n++) {
        const mera_node *node = mera_graph_node(g, n);
        mera_numerics num = mera_kernel_node_numerics(g, node);
        if (mode == MERA_INTERP_FLOAT && num == MERA_NUMERICS_QUANT && node->op != MERA_OP_DEQUANTIZE &&
            node->op != MERA_OP_REQUANTIZE) {
            it->emulate[n] = 1;
            num = MERA_NUMERICS_FLOAT;
        }
        if (mera_kernel_select_node(node, num, mera_graph_rounding(g), &it->kernels[n], err) ||
            mera_kernel_prepare_node(&it->kernels[n], g, n, it->value_data, &it->states[n], err))
            goto fail;
        if (it->kernels[n].scratch && !it->emulate[n]) {
            mera_kernel_args a;
            mera_kernel_node_args(g, n, it->value_data, &a);
            a.state = it->states[n];
            size_t s = (it->kernels[n].scratch(&a) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
            it->scratch_bytes = s > it->scratch_bytes ? s : it->scratch_bytes;
        }
    }
    if (plan_memory(it, err))
        goto fail;
    /* the first run's arena, so a run on one thread never allocates */
    it->cap_free = 4;
    if (!(it->free_arenas = malloc((size_t)it->cap_free * sizeof *it->free_arenas)) ||
        (it->arena_bytes && !(it->free_arenas[it->n_free++] = aligned_alloc(ARENA_ALIGN, it->arena_bytes)))) {
        it->n_free = 0;
        mera_fail(err, MERA_ERR_NOMEM, "out of memory allocating the %zu-byte activation arena", it->arena_bytes);
        goto fail;
    }
    return it;
fail:
    mera_interp_free(it);
    return NULL;
}

void mera_interp_set_threads(mera_interp *it, int threads)
{
    it->threads = threads;
}

size_t mera_interp_arena_bytes(const mera_interp *it)
{
    return it->arena_bytes;
}

/* ---- run ----------------------------------------------------------------- */

/* An arena of a finished run, or a new one (NULL: out of memory). */
static unsigned char *arena_take(mera_interp *it)
{
    void *a = NULL;
    pthread_mutex_lock(&it->arenas_lock);
    if (it->n_free > 0)
        a = it->free_arenas[--it->n_free];
    pthread_mutex_unlock(&it->arenas_lock);
    return a ? a : aligned_alloc(ARENA_ALIGN, it->arena_bytes);
}

static void arena_give_back(mera_interp *it, unsigned char *a)
{
    pthread_mutex_lock(&it->arenas_lock);
    if (it->n_free == it->cap_free) {
        void **grown = realloc(it->free_arenas, (size_t)(2 * it->cap_free) * sizeof *grown);
        if (grown) {
            it->free_arenas = grown;
            it->cap_free *= 2;
        }
    }
    if (it->n_free < it->cap_free) {
        it->free_arenas[it->n_free++] = a;
        a = NULL;
    }
    pthread_mutex_unlock(&it->arenas_lock);
    free(a);
}

static const void *value_ptr(const mera_interp *it, const void *const *inputs, unsigned char *arena, int v)
{
    if (it->value_offset[v] >= 0)
        return arena + it->value_offset[v];
    if (it->input_slot[v] >= 0)
        return inputs[it->input_slot[v]];
    return it->value_data[v];
}

static mera_type float_type(const mera_type *t)
{
    mera_type f = *t;
    f.dtype = MERA_DTYPE_FLOAT32;
    memset(&f.q, 0, sizeof f.q);
    return f;
}

/* Convert one tensor with the quantize or dequantize kernel, so the
 * emulation uses the contract's arithmetic. Those kernels read only the
 * types, never the node's attributes. */
static mera_status convert_tensor(int op, mera_numerics num, const mera_node *node, mera_rounding rounding,
                                  const mera_type *in_t, const void *in, const mera_type *out_t, void *out,
                                  mera_error *err)
{
    mera_kernel_args c;
    memset(&c, 0, sizeof c);
    c.node = node;
    c.rounding = rounding;
    c.n_inputs = 1;
    c.in_types[0] = in_t;
    c.in[0] = in;
    c.n_outputs = 1;
    c.out_types[0] = out_t;
    c.out[0] = out;
    return mera_kernel_ref(op, num)(&c, err);
}

/* Interpreter mode: dequantize the inputs, run the float kernel, quantize
 * the result with the node's output parameters. */
static mera_status run_emulated(const mera_node *node, mera_kernel_fn float_kernel, mera_kernel_args *a,
                                mera_error *err)
{
    mera_type in_f[MERA_MAX_NODE_INPUTS], out_f[MERA_MAX_NODE_OUTPUTS];
    float *tmp[MERA_MAX_NODE_INPUTS + MERA_MAX_NODE_OUTPUTS] = {0};
    int n_tmp = 0;
    mera_status st = MERA_OK;
    for (int i = 0; i < a->n_inputs; i++) {
        if (!a->in_types[i] || !is_quantized(a->in_types[i]))
            continue;
        float *buf = malloc((size_t)mera_type_numel(a->in_types[i]) * sizeof(float));
        if (!buf) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            goto done;
        }
        tmp[n_tmp++] = buf;
        in_f[i] = float_type(a->in_types[i]);
        if ((st = convert_tensor(MERA_OP_DEQUANTIZE, MERA_NUMERICS_QUANT, node, a->rounding, a->in_types[i], a->in[i], &in_f[i],
                                 buf, err)))
            goto done;
        a->in_types[i] = &in_f[i];
        a->in[i] = buf;
    }
    void *real_out[MERA_MAX_NODE_OUTPUTS];
    const mera_type *real_type[MERA_MAX_NODE_OUTPUTS];
    for (int o = 0; o < a->n_outputs; o++) {
        real_out[o] = a->out[o];
        real_type[o] = a->out_types[o];
        if (!is_quantized(a->out_types[o]))
            continue;
        float *buf = malloc((size_t)mera_type_numel(a->out_types[o]) * sizeof(float));
        if (!buf) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            goto done;
        }
        tmp[n_tmp++] = buf;
        out_f[o] = float_type(a->out_types[o]);
        a->out_types[o] = &out_f[o];
        a->out[o] = buf;
    }
    if ((st = float_kernel(a, err)))
        goto done;
    for (int o = 0; o < a->n_outputs; o++)
        if (is_quantized(real_type[o]) &&
            (st = convert_tensor(MERA_OP_QUANTIZE, MERA_NUMERICS_FLOAT, node, a->rounding, a->out_types[o], a->out[o],
                                 real_type[o], real_out[o], err)))
            goto done;
done:
    for (int i = 0; i < n_tmp; i++)
        free(tmp[i]);
    return st;
}

mera_status mera_interp_run(const mera_interp *it, const void *const *inputs, void *const *outputs, mera_error *err)
{
    return mera_interp_run_observed(it, inputs, outputs, NULL, NULL, err);
}

mera_status mera_interp_run_observed(const mera_interp *it, const void *const *inputs, void *const *outputs,
                                     mera_interp_observer observe, void *user, mera_error *err)
{
    const mera_graph *g = it->g;
    unsigned char *arena = NULL;
    if (it->arena_bytes) {
        /* the free list is the one mutable part of a compiled interpreter */
        arena = arena_take((mera_interp *)it);
        if (!arena)
            return mera_fail(err, MERA_ERR_NOMEM, "out of memory allocating the %zu-byte activation arena",
                             it->arena_bytes);
    }
    mera_status st = MERA_OK;
    for (int n = 0; n < it->n_nodes; n++) {
        const mera_node *node = mera_graph_node(g, n);
        mera_kernel_args a;
        mera_kernel_node_args(g, n, NULL, &a);
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                a.in[i] = value_ptr(it, inputs, arena, node->inputs[i]);
        for (int o = 0; o < node->n_outputs; o++)
            a.out[o] = arena + it->value_offset[node->outputs[o]];
        a.state = it->states[n];
        a.threads = it->threads;
        if (it->scratch_bytes) {
            a.scratch = arena + it->scratch_offset;
            a.scratch_bytes = it->scratch_bytes;
        }
        st = it->emulate[n] ? run_emulated(node, it->kernels[n].run, &a, err) : it->kernels[n].run(&a, err);
        if (st) {
            mera_error_prefix(err, "node '%s' (%s): ", node->name, mera_op_table[node->op].name);
            goto done;
        }
        if (observe) {
            /* the outputs' arena places (run_emulated points a.out at scratch) */
            const void *outs[MERA_MAX_NODE_OUTPUTS];
            for (int o = 0; o < node->n_outputs; o++)
                outs[o] = arena + it->value_offset[node->outputs[o]];
            if ((st = observe(user, n, outs, err)))
                goto done;
        }
    }
    for (int i = 0; outputs && i < mera_graph_num_outputs(g); i++) {
        int v = mera_graph_output(g, i);
        memcpy(outputs[i], value_ptr(it, inputs, arena, v), mera_type_nbytes(&mera_graph_value(g, v)->type));
    }
done:
    if (arena)
        arena_give_back((mera_interp *)it, arena);
    return st;
}
