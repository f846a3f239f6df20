/* Partitioning: which nodes the DNA runs, and the reason for every node
 * that stays on the host. The DNA (isa.h) computes on int8/uint8 tensors
 * of rank <= 4 whose leading dimension is 1 (one image), NHWC when
 * spatial, and moves int8/uint8 tensors of any rank (reshape, flatten,
 * transpose, slice: move.c); the host runs the rest with the InterpreterHw
 * kernels. */
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "sched/plan.h"

static void say(char *buf, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
}

static int is_act_value(const mera_value *v)
{
    return v->kind == MERA_VALUE_INPUT || v->kind == MERA_VALUE_NODE;
}

/* Leading dimensions (all but the last three) must be 1. */
static int one_image(const mera_type *t)
{
    for (int d = 0; d + 3 < t->rank; d++)
        if (t->shape[d] != 1)
            return 0;
    return 1;
}

/* Checks every DNA layer shares; 0 with a reason if the node cannot run on
 * the DNA. */
static int tensors_ok(const sched_ctx *c, const mera_node *node, int weights_from, char *why, size_t n)
{
    const mera_graph *g = c->g;
    for (int i = 0; i < node->n_inputs + node->n_outputs; i++) {
        int v = i < node->n_inputs ? node->inputs[i] : node->outputs[i - node->n_inputs];
        if (v < 0)
            continue;
        const mera_value *val = mera_graph_value(g, v);
        const mera_type *t = &val->type;
        if (i >= weights_from && i < node->n_inputs)
            continue; /* weights and bias: checked by the conv planner */
        char ts[128];
        mera_type_format(t, ts, sizeof ts);
        if (!mera_dtype_is_quantized_int(t->dtype)) {
            say(why, n, "%s '%s' is %s: the DNA computes on int8/uint8 tensors", i < node->n_inputs ? "input" : "output",
                val->name, ts);
            return 0;
        }
        if (t->rank > 4 || t->rank < 1) {
            say(why, n, "'%s' has rank %d: the DNA takes rank 1 to 4", val->name, t->rank);
            return 0;
        }
        if (!one_image(t)) {
            say(why, n, "'%s' is %s: DNA layers take one image (batch 1) at a time", val->name, ts);
            return 0;
        }
        if (i < node->n_inputs && !is_act_value(val) && !sched_value_data(c, v)) {
            say(why, n, "constant '%s' has no data", val->name);
            return 0;
        }
    }
    const mera_attr *lay = mera_node_attr(node, "layout");
    if (lay && lay->kind == MERA_ATTR_STRING && strcmp(lay->s, "NHWC") != 0) {
        say(why, n, "layout %s: DNA layers are NHWC (build the model with layout=\"NHWC\")", lay->s);
        return 0;
    }
    return 1;
}

/* Data movement (move.c) needs one-byte elements and an input in DRAM;
 * rank, batch and layout do not matter, the bytes only move. */
static int move_tensors_ok(const sched_ctx *c, const mera_node *node, char *why, size_t n)
{
    const char *op = mera_op_table[node->op].name;
    for (int i = 0; i < 2; i++) {
        const mera_value *val = mera_graph_value(c->g, i ? node->outputs[0] : node->inputs[0]);
        if (!mera_dtype_is_quantized_int(val->type.dtype)) {
            char ts[128];
            mera_type_format(&val->type, ts, sizeof ts);
            say(why, n, "%s '%s' is %s: the DNA moves int8/uint8 tensors", i ? "output" : "input", val->name, ts);
            return 0;
        }
    }
    if (!is_act_value(mera_graph_value(c->g, node->inputs[0]))) {
        say(why, n, "%s of a constant: runs once on the host", op);
        return 0;
    }
    return 1;
}

mera_status sched_plan_layer(sched_ctx *c, int n, sched_plan *pl, char *reason, size_t reason_len,
                             mera_error *err)
{
    (void)err;
    const mera_node *node = mera_graph_node(c->g, n);
    const char *op = mera_op_table[node->op].name;
    pl->node = n;
    pl->on_host = 1;
    pl->cut_dim = -1;
    for (int i = 0; i < DNA_MAX_SRC; i++)
        pl->const_off[i] = -1;
    char why[180];
    why[0] = 0;
    int ok = 0;
    switch (mera_op_table[node->op].dna) { /* every class, no default: ir.h */
    case MERA_DNA_CONV:
        pl->kind = LAYER_CONV;
        ok = tensors_ok(c, node, 1, why, sizeof why) && sched_conv_plan(c, pl, why, sizeof why);
        break;
    case MERA_DNA_VEC:
        pl->kind = LAYER_VEC;
        if (node->n_inputs > DNA_MAX_SRC)
            say(why, sizeof why, "%d inputs: a vector instruction takes at most %d", node->n_inputs, DNA_MAX_SRC);
        else
            ok = tensors_ok(c, node, node->n_inputs, why, sizeof why) && sched_vec_plan(c, pl, why, sizeof why);
        break;
    case MERA_DNA_COPY:
        pl->kind = LAYER_COPY;
        ok = move_tensors_ok(c, node, why, sizeof why) && sched_move_plan(c, pl, why, sizeof why);
        break;
    case MERA_DNA_HOST_FLOAT:
        say(why, sizeof why, "float32 tensors: %s runs on the host", op);
        break;
    case MERA_DNA_HOST:
        if (node->op == MERA_OP_CONV_TRANSPOSE2D)
            say(why, sizeof why, "conv_transpose2d: the DNA runs it as sub-pixel conv2d layers (passes/subpixel.c), "
                "which take int8/uint8 NHWC layers with kernels of at most 64 dilated taps per axis and at most "
                "64 phases; this one is not");
        else
            say(why, sizeof why, "%s: not in the DNA's op set (docs/isa.md)", op);
        break;
    }
    if (ok) {
        pl->on_host = 0;
        snprintf(reason, reason_len, "%s", why);
    } else {
        free(pl->block_off);
        pl->block_off = NULL;
        snprintf(reason, reason_len, "%s", why[0] ? why : "not supported on the DNA");
    }
    return MERA_OK;
}

int64_t sched_layout_image(sched_ctx *c, sched_plan *pl, int64_t at)
{
    if (pl->kind == LAYER_CONV)
        return sched_conv_layout_image(pl, at);
    if (pl->kind == LAYER_VEC)
        return sched_vec_layout_image(c, pl, at);
    return at;
}

void sched_fill_image(const sched_ctx *c, const sched_plan *pl, uint8_t *image)
{
    if (pl->kind == LAYER_CONV)
        sched_conv_fill_image(c, pl, image);
    else if (pl->kind == LAYER_VEC)
        sched_vec_fill_image(c, pl, image);
}

void sched_emit_layer(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq)
{
    if (pl->kind == LAYER_CONV)
        sched_conv_emit(c, pl, layer, seq);
    else if (pl->kind == LAYER_VEC)
        sched_vec_emit(c, pl, layer, seq);
    else
        sched_move_emit(c, pl, layer, seq);
}
