/* The graph passes fold_bn, fold_const and lower_qdq in C alone: what each
 * rewrites, the exact data it writes, what it must leave alone, and that
 * its input graph is never modified. */
#include <math.h>
#include <stdlib.h>

#include "backends/interp.h"
#include "passes/passes.h"
#include "testutil.h"

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void fill(float *p, int64_t n, unsigned seed)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = frand(&seed);
}

/* Lines of a graph's text form: value declarations sorted (a pass may
 * declare constants where they are first used), then nodes and outputs in
 * order. */
static char *canonical_text(const mera_graph *g)
{
    char *t = mera_graph_to_text(g);
    if (!t)
        return NULL;
    size_t n = strlen(t);
    char **lines = malloc((n + 1) * sizeof *lines), *out = malloc(n + 2);
    int nl = 0, nd = 0;
    for (char *p = strtok(t, "\n"); p; p = strtok(NULL, "\n"))
        lines[nl++] = p;
    /* declarations first, sorted (insertion sort: small graphs) */
    char **decl = malloc((size_t)(nl + 1) * sizeof *decl);
    for (int i = 0; i < nl; i++)
        if (!strncmp(lines[i], "  input ", 8) || !strncmp(lines[i], "  param ", 8) || !strncmp(lines[i], "  const ", 8)) {
            int j = nd++;
            while (j > 0 && strcmp(decl[j - 1], lines[i]) > 0) {
                decl[j] = decl[j - 1];
                j--;
            }
            decl[j] = lines[i];
        }
    out[0] = 0;
    for (int i = 0; i < nd; i++)
        strcat(strcat(out, decl[i]), "\n");
    for (int i = 0; i < nl; i++)
        if (strncmp(lines[i], "  input ", 8) && strncmp(lines[i], "  param ", 8) && strncmp(lines[i], "  const ", 8))
            strcat(strcat(out, lines[i]), "\n");
    free(decl);
    free(lines);
    free(t);
    return out;
}

/* The same graph: the same declarations (inputs and params in the same
 * order), nodes (names, attributes, inputs, types, sources) and outputs. */
static int same_structure(const mera_graph *a, const mera_graph *b)
{
    char *ta = canonical_text(a), *tb = canonical_text(b);
    int same = ta && tb && !strcmp(ta, tb) && mera_graph_num_inputs(a) == mera_graph_num_inputs(b);
    for (int i = 0; same && i < mera_graph_num_inputs(a); i++)
        same = !strcmp(mera_graph_value(a, mera_graph_input(a, i))->name, mera_graph_value(b, mera_graph_input(b, i))->name);
    if (!same && ta && tb)
        fprintf(stderr, "--- expected\n%s--- got\n%s", ta, tb);
    free(ta);
    free(tb);
    return same;
}

static int count_op(const mera_graph *g, int op)
{
    int k = 0;
    for (int n = 0; n < mera_graph_num_nodes(g); n++)
        k += mera_graph_node(g, n)->op == op;
    return k;
}

static const float *value_data(const mera_graph *g, const char *name)
{
    int v = mera_graph_find_value(g, name);
    return v >= 0 ? mera_graph_value(g, v)->data : NULL;
}

/* Run bound graph g (one input, one output) on an interpreter. */
static int run1(const mera_graph *g, mera_interp_mode mode, const void *in, void *out)
{
    mera_error err;
    const void **pd = mera_bound_param_data(g);
    mera_interp *it = pd ? mera_interp_compile(g, mode, pd, &err) : NULL;
    int ok = it && mera_interp_run(it, &in, &out, &err) == MERA_OK;
    if (!ok)
        fprintf(stderr, "run: %s\n", err.msg);
    mera_interp_free(it);
    free(pd);
    return ok;
}

/* max |a - b| relative to max |a| */
static float max_rel_diff(const float *a, const float *b, int64_t n)
{
    float m = 0, big = 0;
    for (int64_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        m = d > m ? d : m;
        big = fabsf(a[i]) > big ? fabsf(a[i]) : big;
    }
    return m / (big > 0 ? big : 1);
}

/* ---- fold_bn ----------------------------------------------------------- */

enum { C_OUT = 4, C_IN = 3 };

typedef struct {
    float w[C_OUT * C_IN * 3 * 3], b[C_OUT], scale[C_OUT], shift[C_OUT];
} bn_data;

/* x[1,C_IN,6,6] (or NHWC) -> conv 3x3 (C_OUT) [+bias] -> mul scale -> add shift
 * [-> relu]. kernel_layout OIHW, or HWIO when hwio. scalar: the mul is a
 * scalar constant. The constants broadcast as the frontends write them
 * ([C,1,1] for NCHW, [C] for NHWC). Bound graph. */
static mera_graph *conv_bn(bn_data *d, int nhwc, int hwio, int with_bias, int scalar, int relu_conv)
{
    mera_error err;
    mera_graph *g = mera_graph_new("bn");
    int64_t xs_nchw[4] = {1, C_IN, 6, 6}, xs_nhwc[4] = {1, 6, 6, C_IN};
    int64_t ws_oihw[4] = {C_OUT, C_IN, 3, 3}, ws_hwio[4] = {3, 3, C_IN, C_OUT};
    int64_t cs_nchw[3] = {C_OUT, 1, 1}, cs_nhwc[1] = {C_OUT}, bs[1] = {C_OUT}, one[1] = {1};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 4, nhwc ? xs_nhwc : xs_nchw);
    xt.layout = nhwc ? MERA_LAYOUT_NHWC : MERA_LAYOUT_NCHW;
    mera_type wt = tensor(MERA_DTYPE_FLOAT32, 4, hwio ? ws_hwio : ws_oihw);
    mera_type ct = nhwc ? tensor(MERA_DTYPE_FLOAT32, 1, cs_nhwc) : tensor(MERA_DTYPE_FLOAT32, 3, cs_nchw);
    mera_type st = scalar ? tensor(MERA_DTYPE_FLOAT32, 1, one) : ct;
    mera_type bt = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    fill(d->w, C_OUT * C_IN * 9, 11);
    fill(d->b, C_OUT, 12);
    fill(d->scale, C_OUT, 13);
    fill(d->shift, C_OUT, 14);
    int x = mera_graph_add_input(g, "x", &xt, &err);
    int w = mera_graph_add_param_ref(g, "conv.weight", &wt, d->w, &err);
    int b = with_bias ? mera_graph_add_param_ref(g, "conv.bias", &bt, d->b, &err) : -1;
    int s = mera_graph_add_const(g, "bn.scale", &st, d->scale, 0, &err);
    int h = mera_graph_add_const(g, "bn.shift", &ct, d->shift, 0, &err);
    mera_attr ca[4] = {str("layout", nhwc ? "NHWC" : "NCHW"), str("kernel_layout", hwio ? "HWIO" : "OIHW"),
                       str("activation", relu_conv ? "relu" : "none")};
    int ins[3] = {x, w, b}, c, m, a;
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "conv", ins, with_bias ? 3 : 2, ca, 3, "model.py:3", &c, 1,
                              &err) >= 0);
    int mi[2] = {c, s};
    CHECK(mera_graph_add_node(g, MERA_OP_MUL, "bn.mul", mi, 2, NULL, 0, NULL, &m, 1, &err) >= 0);
    int ai[2] = {h, m}; /* the constant first: either operand order folds */
    CHECK(mera_graph_add_node(g, MERA_OP_ADD, "bn.add", ai, 2, NULL, 0, NULL, &a, 1, &err) >= 0);
    CHECK(mera_graph_set_outputs(g, &a, 1, &err) == MERA_OK);
    return g;
}

static void check_bn_fold(int nhwc, int hwio, int with_bias, int scalar)
{
    bn_data d;
    mera_graph *g = conv_bn(&d, nhwc, hwio, with_bias, scalar, 0);
    char *before = mera_graph_to_text(g);
    mera_error err;
    mera_graph *f = mera_pass_fold_bn(g, &err);
    CHECK(f != NULL);
    if (!f) {
        fprintf(stderr, "fold_bn: %s\n", err.msg);
        free(before);
        mera_graph_free(g);
        return;
    }
    char *after = mera_graph_to_text(g);
    CHECK(!strcmp(before, after)); /* the input is not modified */
    free(before);
    free(after);
    CHECK(mera_graph_num_nodes(f) == 1);
    const mera_node *conv = mera_graph_node(f, 0);
    CHECK(conv->op == MERA_OP_CONV2D && !strcmp(conv->name, "conv") && conv->n_inputs == 3);
    CHECK(conv->source && !strcmp(conv->source, "model.py:3"));
    CHECK(mera_graph_find_value(f, "bn.scale") < 0 && mera_graph_find_value(f, "bn.shift") < 0);
    /* the weight keeps its name; a bias the folding made is conv.bias */
    const float *nw = value_data(f, "conv.weight"), *nb = value_data(f, "conv.bias");
    CHECK(nw && nb && nw != d.w && nb != d.b);
    CHECK(mera_graph_value(f, mera_graph_find_value(f, "conv.bias"))->kind == MERA_VALUE_PARAM);
    int exact = nw && nb;
    for (int i = 0; nw && i < C_OUT * C_IN * 9; i++) {
        int oc = hwio ? i % C_OUT : i / (C_IN * 9);
        exact &= nw[i] == (float)((double)d.w[i] * (double)d.scale[scalar ? 0 : oc]);
    }
    for (int k = 0; nb && k < C_OUT; k++) {
        double s = d.scale[scalar ? 0 : k];
        exact &= nb[k] == (float)((with_bias ? (double)d.b[k] : 0.0) * s + (double)d.shift[k]);
    }
    CHECK(exact);
    /* and it computes what the unfolded graph computes */
    float x[C_IN * 36], y0[C_OUT * 16], y1[C_OUT * 16];
    fill(x, C_IN * 36, 21);
    CHECK(run1(g, MERA_INTERP_FLOAT, x, y0) && run1(f, MERA_INTERP_FLOAT, x, y1));
    CHECK(max_rel_diff(y0, y1, C_OUT * 16) < 1e-5f);
    mera_graph_free(f);
    mera_graph_free(g);
}

static void test_fold_bn_conv(void)
{
    for (int nhwc = 0; nhwc < 2; nhwc++)
        for (int bias = 0; bias < 2; bias++)
            check_bn_fold(nhwc, 0, bias, 0);
    check_bn_fold(1, 1, 1, 0); /* HWIO weight: channels on its last axis */
    check_bn_fold(0, 0, 1, 1); /* a scalar scale */
}

/* x[2,5] -> dense(W[3,5], b) -> mul [3] -> add [1,3] */
static void test_fold_bn_dense(void)
{
    mera_error err;
    float w[15], b[3], s[3], h[3];
    fill(w, 15, 1), fill(b, 3, 2), fill(s, 3, 3), fill(h, 3, 4);
    int64_t xs[2] = {2, 5}, ws[2] = {3, 5}, vs[1] = {3}, hs[2] = {1, 3};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 2, xs), wt = tensor(MERA_DTYPE_FLOAT32, 2, ws),
              vt = tensor(MERA_DTYPE_FLOAT32, 1, vs), ht = tensor(MERA_DTYPE_FLOAT32, 2, hs);
    mera_graph *g = mera_graph_new("dense");
    int x = mera_graph_add_input(g, "x", &xt, &err);
    int wv = mera_graph_add_const(g, "fc.w", &wt, w, 0, &err);
    int bv = mera_graph_add_param_ref(g, "fc.b", &vt, b, &err);
    int sv = mera_graph_add_param_ref(g, "bn.s", &vt, s, &err);
    int hv = mera_graph_add_const(g, "bn.h", &ht, h, 0, &err);
    int ins[3] = {x, wv, bv}, y, m, a;
    mera_graph_add_node(g, MERA_OP_DENSE, "fc", ins, 3, NULL, 0, NULL, &y, 1, &err);
    int mi[2] = {y, sv}, ai[2] = {0, hv};
    mera_graph_add_node(g, MERA_OP_MUL, "bn.mul", mi, 2, NULL, 0, NULL, &m, 1, &err);
    ai[0] = m;
    mera_graph_add_node(g, MERA_OP_ADD, "bn.add", ai, 2, NULL, 0, NULL, &a, 1, &err);
    CHECK(mera_graph_set_outputs(g, &a, 1, &err) == MERA_OK);
    mera_graph *f = mera_pass_fold_bn(g, &err);
    CHECK(f && mera_graph_num_nodes(f) == 1 && mera_graph_node(f, 0)->op == MERA_OP_DENSE);
    if (f) {
        /* a CONST weight stays a CONST, a PARAM bias a PARAM */
        CHECK(mera_graph_value(f, mera_graph_find_value(f, "fc.w"))->kind == MERA_VALUE_CONST);
        CHECK(mera_graph_value(f, mera_graph_find_value(f, "fc.b"))->kind == MERA_VALUE_PARAM);
        const float *nw = value_data(f, "fc.w"), *nb = value_data(f, "fc.b");
        int exact = 1;
        for (int i = 0; i < 15; i++)
            exact &= nw[i] == (float)((double)w[i] * (double)s[i / 5]);
        for (int k = 0; k < 3; k++)
            exact &= nb[k] == (float)((double)b[k] * (double)s[k] + (double)h[k]);
        CHECK(exact);
    }
    mera_graph_free(f);
    mera_graph_free(g);
}

/* What fold_bn must leave alone. */
static void test_fold_bn_leaves_alone(void)
{
    mera_error err;
    bn_data d;
    /* the conv has a fused relu: a mul after it does not commute */
    mera_graph *g = conv_bn(&d, 0, 0, 1, 0, 1);
    mera_graph *f = mera_pass_fold_bn(g, &err);
    CHECK(f && same_structure(g, f));
    mera_graph_free(f);
    mera_graph_free(g);

    /* the conv's output has another reader: nothing folds. The mul's
     * output has another reader: the mul folds, the add stays. */
    for (int where = 0; where < 2; where++) {
        g = conv_bn(&d, 1, 0, 1, 0, 0);
        int c = mera_graph_find_value(g, where == 0 ? "conv" : "bn.mul"), r;
        CHECK(mera_graph_add_node(g, MERA_OP_RELU, "other", &c, 1, NULL, 0, NULL, &r, 1, &err) >= 0);
        int outs[2] = {mera_graph_find_value(g, "bn.add"), r};
        CHECK(mera_graph_set_outputs(g, outs, 2, &err) == MERA_OK);
        f = mera_pass_fold_bn(g, &err);
        CHECK(f != NULL);
        if (where == 0) {
            CHECK(f && same_structure(g, f));
        } else {
            CHECK(f && mera_graph_num_nodes(f) == 3 && count_op(f, MERA_OP_MUL) == 0 && count_op(f, MERA_OP_ADD) == 1);
            CHECK(f && mera_graph_find_value(f, "bn.shift") >= 0 && mera_graph_find_value(f, "bn.scale") < 0);
            /* the folded conv now produces what "bn.mul" produced */
            CHECK(f && mera_graph_node(f, 1)->inputs[1] == mera_graph_node(f, 0)->outputs[0] &&
                  mera_graph_node(f, 2)->inputs[0] == mera_graph_node(f, 0)->outputs[0]);
        }
        mera_graph_free(f);
        mera_graph_free(g);
    }

    /* a weight read by two convs: the folded copy gets a fresh name, the
     * other conv keeps the original */
    g = conv_bn(&d, 1, 0, 0, 0, 0);
    {
        int x = mera_graph_find_value(g, "x"), w = mera_graph_find_value(g, "conv.weight"), c2;
        mera_attr ca[1] = {str("layout", "NHWC")};
        int ins[2] = {x, w};
        CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "conv2", ins, 2, ca, 1, NULL, &c2, 1, &err) >= 0);
        int outs[2] = {mera_graph_find_value(g, "bn.add"), c2};
        CHECK(mera_graph_set_outputs(g, outs, 2, &err) == MERA_OK);
        f = mera_pass_fold_bn(g, &err);
        CHECK(f && mera_graph_num_nodes(f) == 2);
        CHECK(f && value_data(f, "conv.weight") == d.w && value_data(f, "conv.weight.bn_folded") != NULL);
        mera_graph_free(f);
        mera_graph_free(g);
    }

    /* a quantized graph comes out unchanged, even with a foldable float conv */
    g = conv_bn(&d, 1, 0, 1, 0, 0);
    {
        int a = mera_graph_find_value(g, "bn.add"), q, dq;
        mera_attr qa[2] = {flt("scale", 0.05), integer("zero_point", 128)};
        CHECK(mera_graph_add_node(g, MERA_OP_QUANTIZE, "q", &a, 1, qa, 2, NULL, &q, 1, &err) >= 0);
        CHECK(mera_graph_add_node(g, MERA_OP_DEQUANTIZE, "dq", &q, 1, NULL, 0, NULL, &dq, 1, &err) >= 0);
        CHECK(mera_graph_set_outputs(g, &dq, 1, &err) == MERA_OK);
        f = mera_pass_fold_bn(g, &err);
        CHECK(f && same_structure(g, f));
        mera_graph_free(f);
        mera_graph_free(g);
    }
}

int main(void)
{
    test_fold_bn_conv();
    test_fold_bn_dense();
    test_fold_bn_leaves_alone();
    return test_summary();
}
