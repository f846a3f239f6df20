/* C tests of the op table's backend facts (ops.def): the property bits and
 * DNA layer classes agree with the attribute specs (ir/ops.c), the kernel
 * table (kernels/dispatch.c) and the split rules (kernels/split.c), so an
 * op added without its facts fails here instead of silently taking a
 * default. Built and run by tests/test_c_core.py; prints
 * "N passed, M failed". */
#include <stdio.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/split.h"
#include "testutil.h"

static void test_table_checks(void)
{
    mera_error err;
    memset(&err, 0, sizeof err);
    CHECK(mera_op_table_check(&err) == MERA_OK);
    if (err.code)
        fprintf(stderr, "%s\n", err.msg);
    memset(&err, 0, sizeof err);
    CHECK(mera_kernel_table_check(&err) == MERA_OK);
    if (err.code)
        fprintf(stderr, "%s\n", err.msg);
    memset(&err, 0, sizeof err);
    CHECK(mera_kernel_split_table_check(&err) == MERA_OK);
    if (err.code)
        fprintf(stderr, "%s\n", err.msg);
}

/* Facts every backend relies on, per class. */
static void test_classes(void)
{
    int n_class[MERA_DNA_COPY + 1] = {0};
    for (int op = 0; op < MERA_OP_COUNT; op++) {
        const mera_op_info *info = &mera_op_table[op];
        CHECK((int)info->dna >= MERA_DNA_HOST && (int)info->dna <= MERA_DNA_COPY);
        if ((int)info->dna < MERA_DNA_HOST || (int)info->dna > MERA_DNA_COPY)
            continue;
        n_class[info->dna]++;
        CHECK(strcmp(mera_dna_class_name(info->dna), "?") != 0);
        /* the DNA runs the quantized kernels: every layer class needs one */
        if (info->dna == MERA_DNA_CONV || info->dna == MERA_DNA_VEC)
            CHECK(mera_kernel_ref(op, MERA_NUMERICS_QUANT) != NULL);
        /* a CONV instruction reads a conv geometry (sim/timing.c) */
        if (info->dna == MERA_DNA_CONV)
            CHECK(info->flags & MERA_OPF_WEIGHTS);
    }
    for (int c = MERA_DNA_HOST; c <= MERA_DNA_COPY; c++)
        CHECK(n_class[c] > 0);
    /* spot checks of the facts the five switches used to hold */
    CHECK(mera_op_table[MERA_OP_CONV2D].dna == MERA_DNA_CONV && mera_op_table[MERA_OP_DENSE].dna == MERA_DNA_CONV);
    CHECK(mera_op_table[MERA_OP_RESHAPE].dna == MERA_DNA_COPY && mera_op_table[MERA_OP_FLATTEN].dna == MERA_DNA_COPY);
    CHECK(mera_op_table[MERA_OP_QUANTIZE].dna == MERA_DNA_HOST_FLOAT);
    CHECK(mera_op_table[MERA_OP_SOFTMAX].dna == MERA_DNA_HOST);
    CHECK(mera_op_table[MERA_OP_ADD].flags & MERA_OPF_ACTIVATION);
    CHECK(!(mera_op_table[MERA_OP_RELU].flags & MERA_OPF_ACTIVATION));
    CHECK(mera_op_table[MERA_OP_MAX_POOL2D].flags & MERA_OPF_WINDOW);
    CHECK(!(mera_op_table[MERA_OP_ADAPTIVE_AVG_POOL2D].flags & MERA_OPF_WINDOW));
    CHECK(strcmp(mera_dna_class_name(MERA_DNA_HOST_FLOAT), "host_float") == 0);
}

/* Every split rule returns a cut its op declares, for a plain NHWC tensor
 * of each vector op (the assertion in mera_kernel_split_rule would abort
 * otherwise), and the cut is the one the op's bits allow. */
static void test_rules_follow_bits(void)
{
    mera_error err;
    mera_graph *g = mera_graph_new("rules");
    int64_t xs[] = {1, 8, 8, 48}, k2[] = {2, 2}, ax[] = {1, 2};
    mera_type x = qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_NHWC, 0.05, 3);
    int vx = mera_graph_add_input(g, "x", &x, &err), out[4];
    struct {
        int op, n_in;
        mera_attr attrs[3];
        int n_attrs;
    } cases[] = {
        {MERA_OP_RELU, 1, {{0}}, 0},
        {MERA_OP_ADD, 2, {str("torch_memory_format", "channels_last")}, 1},
        {MERA_OP_SIGMOID, 1, {str("torch_memory_format", "channels_last")}, 1},
        {MERA_OP_CONCAT, 2, {integer("axis", 3)}, 1},
        {MERA_OP_CONCAT, 2, {integer("axis", 1)}, 1},
        {MERA_OP_MAX_POOL2D, 1, {ints("kernel", 2, k2), ints("strides", 2, k2), str("layout", "NHWC")}, 3},
        {MERA_OP_AVG_POOL2D, 1, {ints("kernel", 2, k2), ints("strides", 2, k2), str("layout", "NHWC")}, 3},
        {MERA_OP_MEAN, 1, {ints("axes", 2, ax), integer("keepdims", 1)}, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int ins[2] = {vx, vx};
        char name[32];
        snprintf(name, sizeof name, "n%zu", i);
        int n = mera_graph_add_node(g, cases[i].op, name, ins, cases[i].n_in, cases[i].attrs, cases[i].n_attrs, NULL,
                                    out, 4, &err);
        CHECK(n >= 0);
        if (n < 0) {
            fprintf(stderr, "%s\n", err.msg);
            continue;
        }
        const mera_node *node = mera_graph_node(g, n);
        const mera_type *in[2] = {&x, &x};
        mera_split_rule r = mera_kernel_split_rule(node, in, cases[i].n_in, &mera_graph_value(g, out[0])->type);
        unsigned f = mera_op_table[cases[i].op].flags;
        CHECK(r.axis != MERA_SPLIT_NONE);
        CHECK(r.axis != MERA_SPLIT_ROWS || (f & MERA_OPF_CUT_ROWS));
        CHECK(r.axis != MERA_SPLIT_CHANNELS || (f & MERA_OPF_CUT_CHANNELS));
    }
    mera_graph_free(g);
}

int main(void)
{
    test_table_checks();
    test_classes();
    test_rules_follow_bits();
    return test_summary();
}
