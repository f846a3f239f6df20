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

/* ---- helpers for graphs with quantized values -------------------------- */

/* Add a one-output node; returns its output id (failures counted). */
static int nd(mera_graph *g, int op, const char *name, const int *ins, int n_ins, const mera_attr *a, int n_a)
{
    mera_error err;
    int out = -1;
    int k = mera_graph_add_node(g, op, name, ins, n_ins, a, n_a, NULL, &out, 1, &err);
    CHECK(k >= 0);
    if (k < 0)
        fprintf(stderr, "add %s: %s\n", name, err.msg);
    return out;
}

static int quantize_node(mera_graph *g, const char *name, int x, double scale, int zp, const char *dtype)
{
    mera_attr a[3] = {flt("scale", scale), integer("zero_point", zp), str("dtype", dtype)};
    return nd(g, MERA_OP_QUANTIZE, name, &x, 1, a, 3);
}

static int dequantize_node(mera_graph *g, const char *name, int x)
{
    return nd(g, MERA_OP_DEQUANTIZE, name, &x, 1, NULL, 0);
}

/* The ops of g's nodes, in order, as "quantize conv2d dequantize". */
static void ops_of(const mera_graph *g, char *buf, size_t n)
{
    buf[0] = 0;
    for (int k = 0; k < mera_graph_num_nodes(g); k++) {
        const char *name = mera_op_table[mera_graph_node(g, k)->op].name;
        if (strlen(buf) + strlen(name) + 2 < n)
            strcat(strcat(buf, k ? " " : ""), name);
    }
}

static int ops_are(const mera_graph *g, const char *want)
{
    char got[512];
    ops_of(g, got, sizeof got);
    if (strcmp(got, want))
        fprintf(stderr, "ops: got \"%s\", want \"%s\"\n", got, want);
    return !strcmp(got, want);
}

/* The first graphs of pass_dce's chains, which their results may borrow
 * from: freed at the end. */
static mera_graph *kept[64];
static int n_kept;

/* pass then dce (what a frontend runs); NULL on error (message printed) */
static mera_graph *pass_dce(mera_pass_fn pass, const mera_graph *g)
{
    mera_error err;
    mera_graph *a = pass(g, &err);
    if (!a) {
        fprintf(stderr, "pass: %s\n", err.msg);
        return NULL;
    }
    mera_graph *b = mera_pass_dce(a, &err);
    /* b may borrow a's constants: a lives until the end */
    if (!b)
        fprintf(stderr, "dce: %s\n", err.msg);
    MERA_ASSERT(n_kept < 64);
    kept[n_kept++] = a;
    return b;
}

static int same_run(const mera_graph *a, const mera_graph *b, mera_interp_mode mode, const void *in, size_t out_bytes)
{
    unsigned char *ya = malloc(out_bytes), *yb = malloc(out_bytes);
    int ok = run1(a, mode, in, ya) && run1(b, mode, in, yb) && !memcmp(ya, yb, out_bytes);
    free(ya);
    free(yb);
    return ok;
}

/* ---- fold_const -------------------------------------------------------- */

static void test_fold_const_float(void)
{
    mera_error err;
    float cd[6] = {1.5f, -2.25f, 3.0f, 0.125f, -7.0f, 2.5f}, x[6] = {1, 2, 3, 4, 5, 6};
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s16[2] = {1, 6}, perm[2] = {1, 0}, shape[2] = {1, 6};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 2, s16), ct = tensor(MERA_DTYPE_FLOAT32, 2, s23);
    (void)s32;
    mera_graph *g = mera_graph_new("fc");
    int xv = mera_graph_add_input(g, "x", &xt, &err);
    int c = mera_graph_add_const(g, "c", &ct, cd, 0, &err);
    mera_attr ta = ints("axes", 2, perm), ra = ints("shape", 2, shape);
    int t = nd(g, MERA_OP_TRANSPOSE, "t", &c, 1, &ta, 1);
    int r = nd(g, MERA_OP_RESHAPE, "r", &t, 1, &ra, 1);
    int sg = nd(g, MERA_OP_SIGMOID, "sg", &r, 1, NULL, 0);
    int ai[2] = {xv, sg};
    int y = nd(g, MERA_OP_ADD, "y", ai, 2, NULL, 0);
    CHECK(mera_graph_set_outputs(g, &y, 1, &err) == MERA_OK);
    char *before = mera_graph_to_text(g);
    mera_graph *f = mera_pass_fold_const(g, &err);
    CHECK(f && ops_are(f, "add"));
    if (f) {
        int v = mera_graph_find_value(f, "sg");
        CHECK(v >= 0 && mera_graph_value(f, v)->kind == MERA_VALUE_CONST);
        /* transpose, reshape and the sigmoid kernel's bytes */
        CHECK(same_run(g, f, MERA_INTERP_FLOAT, x, sizeof x));
        char *after = mera_graph_to_text(g);
        CHECK(!strcmp(before, after));
        free(after);
    }
    free(before);
    mera_graph_free(f);
    mera_graph_free(g);
}

/* x -> quantize -> add(., add(c1, c2)) quantized -> dequantize: the inner
 * add of two uint8 constants folds to InterpreterHw's bytes */
static void test_fold_const_quantized(void)
{
    mera_error err;
    uint8_t c1[8] = {0, 17, 100, 128, 200, 255, 3, 90}, c2[8] = {255, 1, 30, 128, 7, 0, 240, 91};
    float x[8] = {-1, -0.5f, 0, 0.25f, 0.5f, 1, 2, 3};
    int64_t s8[2] = {1, 8};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 2, s8);
    mera_type t1 = qtensor(MERA_DTYPE_UINT8, 2, s8, MERA_LAYOUT_ANY, 0.02, 128);
    mera_type t2 = qtensor(MERA_DTYPE_UINT8, 2, s8, MERA_LAYOUT_ANY, 0.03, 100);
    mera_graph *g = mera_graph_new("fq");
    int xv = mera_graph_add_input(g, "x", &xt, &err);
    int a = mera_graph_add_const(g, "c1", &t1, c1, 0, &err), b = mera_graph_add_const(g, "c2", &t2, c2, 0, &err);
    int xq = quantize_node(g, "xq", xv, 0.02, 128, "uint8");
    mera_attr qo[3] = {flt("out_scale", 0.05), integer("out_zero_point", 120), str("out_dtype", "uint8")};
    int ab[2] = {a, b};
    int inner = nd(g, MERA_OP_ADD, "inner", ab, 2, qo, 3);
    int xi[2] = {xq, inner};
    int sum = nd(g, MERA_OP_ADD, "sum", xi, 2, qo, 3);
    int y = dequantize_node(g, "y", sum);
    CHECK(mera_graph_set_outputs(g, &y, 1, &err) == MERA_OK);
    mera_graph *f = mera_pass_fold_const(g, &err);
    CHECK(f && ops_are(f, "quantize add dequantize"));
    if (f) {
        const mera_value *v = mera_graph_value(f, mera_graph_find_value(f, "inner"));
        CHECK(v->kind == MERA_VALUE_CONST && v->type.dtype == MERA_DTYPE_UINT8 && v->type.q.scale == 0.05 &&
              v->type.q.zero_point == 120);
        CHECK(same_run(g, f, MERA_INTERP_HW, x, sizeof x));
    }
    mera_graph_free(f);
    mera_graph_free(g);
}

/* What fold_const leaves alone. */
static void test_fold_const_leaves_alone(void)
{
    mera_error err;
    /* float conv2d of constants (its kernel choice changes the bits), a
     * dequantize of an int8 weight, a node whose result is a graph output,
     * and a product of broadcast constants 180x larger than its inputs */
    static float big_a[300], big_b[300], cin[1 * 1 * 3 * 3], w[9];
    static int8_t wq[9];
    double ws = 0.1;
    for (int i = 0; i < 300; i++)
        big_a[i] = (float)i, big_b[i] = 1.0f / (float)(i + 1);
    fill(cin, 9, 3), fill(w, 9, 4);
    int64_t s300[2] = {300, 300}, sa[2] = {300, 1}, sb[2] = {1, 300}, s4[4] = {1, 1, 3, 3}, s1[1] = {1};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 2, s300), at = tensor(MERA_DTYPE_FLOAT32, 2, sa),
              bt = tensor(MERA_DTYPE_FLOAT32, 2, sb), ct = tensor(MERA_DTYPE_FLOAT32, 4, s4),
              wqt = qtensor(MERA_DTYPE_INT8, 4, s4, MERA_LAYOUT_ANY, ws, 0), ot = tensor(MERA_DTYPE_FLOAT32, 1, s1);
    (void)ot;
    mera_graph *g = mera_graph_new("keep");
    int xv = mera_graph_add_input(g, "x", &xt, &err);
    int av = mera_graph_add_const(g, "a", &at, big_a, 0, &err), bv = mera_graph_add_const(g, "b", &bt, big_b, 0, &err);
    int cv = mera_graph_add_const(g, "cin", &ct, cin, 0, &err), wv = mera_graph_add_param_ref(g, "w", &ct, w, &err);
    int wqv = mera_graph_add_param_ref(g, "wq", &wqt, wq, &err);
    int ab[2] = {av, bv};
    int prod = nd(g, MERA_OP_MUL, "prod", ab, 2, NULL, 0);
    int xp[2] = {xv, prod};
    int y = nd(g, MERA_OP_ADD, "y", xp, 2, NULL, 0);
    int cw[2] = {cv, wv};
    int conv = nd(g, MERA_OP_CONV2D, "conv", cw, 2, NULL, 0);
    int dq = dequantize_node(g, "wdq", wqv);
    int cw2[2] = {cv, dq};
    int conv2 = nd(g, MERA_OP_CONV2D, "conv2", cw2, 2, NULL, 0);
    int relu = nd(g, MERA_OP_RELU, "out_relu", &cv, 1, NULL, 0);
    int outs[4] = {y, conv, conv2, relu};
    CHECK(mera_graph_set_outputs(g, outs, 4, &err) == MERA_OK);
    mera_graph *f = mera_pass_fold_const(g, &err);
    CHECK(f && same_structure(g, f));
    mera_graph_free(f);
    mera_graph_free(g);
    /* a float graph with nothing constant to fold comes out the same */
    bn_data d;
    g = conv_bn(&d, 1, 0, 1, 0, 0);
    f = mera_pass_fold_const(g, &err);
    CHECK(f && same_structure(g, f));
    mera_graph_free(f);
    mera_graph_free(g);
}

/* ---- lower_qdq --------------------------------------------------------- */

enum { QC = 8, QO = 4 };

typedef struct {
    float x[QC * 36];
    int8_t w[QO * QC * 9];
    double ws[QO];
    int32_t wz[QO];
    float b[QO];
} qdq_data;

static void qdq_fill(qdq_data *d)
{
    unsigned s = 5;
    fill(d->x, QC * 36, 31);
    for (int i = 0; i < QO * QC * 9; i++)
        d->w[i] = (int8_t)((int)(frand(&s) * 127.0f));
    for (int k = 0; k < QO; k++) {
        d->ws[k] = 0.002 + 0.001 * k;
        d->wz[k] = 0;
    }
    fill(d->b, QO, 32);
}

/* x[1,8,6,6] -> quantize -> dequantize -> conv2d(float, dequantize(W int8
 * per channel), bias) [-> tail] -> quantize -> dequantize. tail: 0 none,
 * 1 relu, 2 clip [0, 2]. With ref set, the graph as the lowered form should
 * be: quantize -> conv2d (quantized) [-> clip] -> dequantize. */
static mera_graph *conv_qdq(qdq_data *d, int tail, int ref)
{
    mera_error err;
    int64_t xs[4] = {1, QC, 6, 6}, ws[4] = {QO, QC, 3, 3}, bs[1] = {QO}, pad[4] = {1, 1, 1, 1};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 4, xs), bt = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    xt.layout = MERA_LAYOUT_NCHW;
    mera_type wt = qtensor_axis(MERA_DTYPE_INT8, 4, ws, 0, QO, d->ws, d->wz);
    mera_graph *g = mera_graph_new("qdq");
    int x = mera_graph_add_input(g, "x", &xt, &err);
    int w = mera_graph_add_param_ref(g, "w", &wt, d->w, &err);
    int b = mera_graph_add_param_ref(g, "b", &bt, d->b, &err);
    int xq = quantize_node(g, "xq", x, 0.04, 120, "uint8");
    double os = 0.05;
    int oz = tail == 1 ? 0 : 10;
    mera_attr ca[6] = {ints("padding", 4, pad), str("activation", ref && tail == 1 ? "relu" : "none"),
                       flt("out_scale", os), integer("out_zero_point", oz), str("out_dtype", "uint8")};
    mera_attr cl[2] = {flt("a_min", 0.0), flt("a_max", 2.0)};
    int y;
    if (ref) {
        int ins[3] = {xq, w, b};
        int c = nd(g, MERA_OP_CONV2D, "conv", ins, 3, ca, 5);
        if (tail == 2)
            c = nd(g, MERA_OP_CLIP, "clip", &c, 1, cl, 2);
        y = dequantize_node(g, "y", c);
    } else {
        int xd = dequantize_node(g, "xd", xq), wd = dequantize_node(g, "wd", w);
        int ins[3] = {xd, wd, b};
        int c = nd(g, MERA_OP_CONV2D, "conv", ins, 3, ca, 2);
        if (tail == 1)
            c = nd(g, MERA_OP_RELU, "relu", &c, 1, NULL, 0);
        if (tail == 2)
            c = nd(g, MERA_OP_CLIP, "clip", &c, 1, cl, 2);
        int yq = quantize_node(g, "yq", c, os, oz, "uint8");
        y = dequantize_node(g, "y", yq);
    }
    CHECK(mera_graph_set_outputs(g, &y, 1, &err) == MERA_OK);
    return g;
}

static void test_lower_conv_chains(void)
{
    static qdq_data d;
    qdq_fill(&d);
    for (int tail = 0; tail < 3; tail++) {
        mera_graph *g = conv_qdq(&d, tail, 0), *ref = conv_qdq(&d, tail, 1);
        char *before = mera_graph_to_text(g);
        mera_graph *f = pass_dce(mera_pass_lower_qdq, g);
        CHECK(f && ops_are(f, tail == 2 ? "quantize conv2d clip dequantize" : "quantize conv2d dequantize"));
        if (f) {
            const mera_node *conv = mera_graph_node(f, 1);
            CHECK(!strcmp(conv->name, "conv"));
            CHECK(!strcmp(mera_attr_string(conv, "activation"), tail == 1 ? "relu" : "none"));
            CHECK(mera_graph_value(f, conv->inputs[1])->data == d.w); /* the int8 weight as it was */
            CHECK(same_run(ref, f, MERA_INTERP_HW, d.x, QO * 36 * sizeof(float)));
            char *after = mera_graph_to_text(g);
            CHECK(!strcmp(before, after));
            free(after);
        }
        free(before);
        mera_graph_free(f);
        mera_graph_free(ref);
        mera_graph_free(g);
    }
}

/* A conv whose output is not quantized stays float; its weight becomes the
 * float the dequantize kernel computes (rule 4). */
static void test_lower_leaves_float_conv(void)
{
    mera_error err;
    static qdq_data d;
    qdq_fill(&d);
    mera_graph *g = conv_qdq(&d, 0, 0);
    /* the output: the conv itself, not its quantize */
    int c = mera_graph_find_value(g, "conv"), y = mera_graph_find_value(g, "y");
    int outs[2] = {c, y};
    CHECK(mera_graph_set_outputs(g, outs, 2, &err) == MERA_OK);
    mera_graph *f = pass_dce(mera_pass_lower_qdq, g);
    CHECK(f && ops_are(f, "quantize dequantize conv2d quantize dequantize"));
    if (f) {
        const mera_value *w = mera_graph_value(f, mera_graph_node(f, 2)->inputs[1]);
        CHECK(w->kind == MERA_VALUE_PARAM && !strcmp(w->name, "wd") && w->type.dtype == MERA_DTYPE_FLOAT32);
        const float *wf = w->data;
        int exact = 1;
        for (int i = 0; i < QO * QC * 9; i++)
            exact &= wf[i] == (float)((double)d.w[i] * d.ws[i / (QC * 9)]);
        CHECK(exact);
    }
    mera_graph_free(f);
    mera_graph_free(g);
}

/* xq -> dequantize -> op -> [quantize(os, oz) -> dequantize] */
static mera_graph *unary_qdq(int op, const mera_attr *a, int n_a, double os, int oz, int quantize_after)
{
    mera_error err;
    int64_t xs[4] = {1, QC, 6, 6};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 4, xs);
    xt.layout = MERA_LAYOUT_NCHW;
    mera_graph *g = mera_graph_new("u");
    int x = mera_graph_add_input(g, "x", &xt, &err);
    int xq = quantize_node(g, "xq", x, 0.04, 120, "uint8");
    int y = nd(g, op, "op", (int[]){dequantize_node(g, "xd", xq)}, 1, a, n_a);
    if (quantize_after)
        y = dequantize_node(g, "y", quantize_node(g, "yq", y, os, oz, "uint8"));
    CHECK(mera_graph_set_outputs(g, &y, 1, &err) == MERA_OK);
    return g;
}

static void test_lower_keep_and_alone(void)
{
    static qdq_data d;
    qdq_fill(&d);
    int64_t k[2] = {2, 2}, perm[4] = {0, 2, 3, 1}, pads[8] = {0, 0, 1, 1, 0, 0, 0, 1};
    mera_attr pa[2] = {ints("kernel", 2, k), ints("strides", 2, k)};
    /* max pool keeps its input's parameters: a requantize only when the
     * quantize's differ */
    mera_graph *g = unary_qdq(MERA_OP_MAX_POOL2D, pa, 2, 0.04, 120, 1);
    mera_graph *f = pass_dce(mera_pass_lower_qdq, g);
    CHECK(f && ops_are(f, "quantize max_pool2d dequantize"));
    CHECK(f && same_run(g, f, MERA_INTERP_HW, d.x, QC * 9 * sizeof(float)));
    mera_graph_free(f);
    mera_graph_free(g);
    g = unary_qdq(MERA_OP_MAX_POOL2D, pa, 2, 0.05, 100, 1);
    f = pass_dce(mera_pass_lower_qdq, g);
    CHECK(f && ops_are(f, "quantize max_pool2d requantize dequantize"));
    CHECK(f && same_run(g, f, MERA_INTERP_HW, d.x, QC * 9 * sizeof(float)));
    mera_graph_free(f);
    mera_graph_free(g);
    /* rule 2: a transpose with no quantize after moves before the dequantize */
    mera_attr ta = ints("axes", 4, perm);
    g = unary_qdq(MERA_OP_TRANSPOSE, &ta, 1, 0, 0, 0);
    f = pass_dce(mera_pass_lower_qdq, g);
    CHECK(f && ops_are(f, "quantize transpose dequantize"));
    CHECK(f && mera_graph_value(f, mera_graph_node(f, 1)->outputs[0])->type.q.kind == MERA_QUANT_PER_TENSOR);
    CHECK(f && same_run(g, f, MERA_INTERP_HW, d.x, QC * 36 * sizeof(float)));
    mera_graph_free(f);
    mera_graph_free(g);
    /* a pad whose fill is on the quantization grid moves too; one off the
     * grid stays float */
    for (int on = 0; on < 2; on++) {
        mera_attr pd[2] = {ints("pads", 8, pads), flt("value", on ? 0.04 * 3 : 0.013)};
        g = unary_qdq(MERA_OP_PAD, pd, 2, 0, 0, 0);
        f = pass_dce(mera_pass_lower_qdq, g);
        CHECK(f && ops_are(f, on ? "quantize pad dequantize" : "quantize dequantize pad"));
        CHECK(f && same_run(g, f, MERA_INTERP_HW, d.x, QC * 56 * sizeof(float)));
        mera_graph_free(f);
        mera_graph_free(g);
    }
}

/* xq -> dequantize -> transpose -> sigmoid -> quantize: the transpose moves
 * (rule 2), then the sigmoid reads a quantized view and is lowered */
static void test_lower_through_moved_op(void)
{
    mera_error err;
    static qdq_data d;
    qdq_fill(&d);
    int64_t xs[4] = {1, QC, 6, 6}, perm[4] = {0, 2, 3, 1};
    mera_type xt = tensor(MERA_DTYPE_FLOAT32, 4, xs);
    mera_graph *g = mera_graph_new("m");
    int x = mera_graph_add_input(g, "x", &xt, &err);
    mera_attr ta = ints("axes", 4, perm);
    int t = nd(g, MERA_OP_TRANSPOSE, "t", (int[]){dequantize_node(g, "xd", quantize_node(g, "xq", x, 0.04, 120,
                                                                                               "uint8"))},
               1, &ta, 1);
    int s = nd(g, MERA_OP_SIGMOID, "s", &t, 1, NULL, 0);
    int y = dequantize_node(g, "y", quantize_node(g, "sq", s, 1.0 / 256, 0, "uint8"));
    CHECK(mera_graph_set_outputs(g, &y, 1, &err) == MERA_OK);
    mera_graph *f = pass_dce(mera_pass_lower_qdq, g);
    CHECK(f && ops_are(f, "quantize transpose sigmoid dequantize"));
    if (f) {
        const mera_node *sn = mera_graph_node(f, 2);
        CHECK(mera_attr_float(sn, "out_scale") == 1.0 / 256 && mera_attr_int(sn, "out_zero_point") == 0);
    }
    mera_graph_free(f);
    mera_graph_free(g);
}

/* add of a dequantized activation and a dequantized per-tensor constant */
static void test_lower_add_const(void)
{
    mera_error err;
    static qdq_data d;
    qdq_fill(&d);
    static uint8_t cu[QC * 36];
    static int8_t ci[QC * 36];
    for (int i = 0; i < QC * 36; i++)
        cu[i] = (uint8_t)(i * 7), ci[i] = (int8_t)(i * 5);
    for (int same_dtype = 0; same_dtype < 2; same_dtype++) {
        int64_t xs[4] = {1, QC, 6, 6};
        mera_type xt = tensor(MERA_DTYPE_FLOAT32, 4, xs);
        mera_type ct = same_dtype ? qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_ANY, 0.03, 128)
                                  : qtensor(MERA_DTYPE_INT8, 4, xs, MERA_LAYOUT_ANY, 0.03, 0);
        mera_graph *g = mera_graph_new("a");
        int x = mera_graph_add_input(g, "x", &xt, &err);
        int c = mera_graph_add_const(g, "c", &ct, same_dtype ? (const void *)cu : (const void *)ci, 0, &err);
        int xd = dequantize_node(g, "xd", quantize_node(g, "xq", x, 0.04, 120, "uint8"));
        int ins[2] = {xd, dequantize_node(g, "cd", c)};
        int a = nd(g, MERA_OP_ADD, "add", ins, 2, NULL, 0);
        int y = dequantize_node(g, "y", quantize_node(g, "aq", a, 0.06, 110, "uint8"));
        CHECK(mera_graph_set_outputs(g, &y, 1, &err) == MERA_OK);
        mera_graph *f = pass_dce(mera_pass_lower_qdq, g);
        /* an int8 constant with a uint8 tensor: no quantized add takes the mix */
        CHECK(f && ops_are(f, same_dtype ? "quantize add dequantize" : "quantize dequantize add quantize dequantize"));
        if (f && same_dtype)
            CHECK(mera_graph_value(f, mera_graph_node(f, 1)->inputs[1])->data == cu);
        if (f && !same_dtype)
            CHECK(same_run(g, f, MERA_INTERP_HW, d.x, QC * 36 * sizeof(float)));
        mera_graph_free(f);
        mera_graph_free(g);
    }
}

/* quantize of a dequantized value: itself, or a requantize (rule 3) */
static void test_lower_requantize(void)
{
    mera_error err;
    static qdq_data d;
    qdq_fill(&d);
    for (int same = 0; same < 2; same++) {
        int64_t xs[2] = {4, 9};
        mera_type xt = tensor(MERA_DTYPE_FLOAT32, 2, xs);
        mera_graph *g = mera_graph_new("r");
        int x = mera_graph_add_input(g, "x", &xt, &err);
        int xd = dequantize_node(g, "xd", quantize_node(g, "xq", x, 0.04, 120, "uint8"));
        int y = dequantize_node(g, "y", quantize_node(g, "q2", xd, same ? 0.04 : 0.1, same ? 120 : 7,
                                                         same ? "uint8" : "int8"));
        CHECK(mera_graph_set_outputs(g, &y, 1, &err) == MERA_OK);
        mera_graph *f = pass_dce(mera_pass_lower_qdq, g);
        CHECK(f && ops_are(f, same ? "quantize dequantize" : "quantize requantize dequantize"));
        CHECK(f && same_run(g, f, MERA_INTERP_HW, d.x, 36 * sizeof(float)));
        mera_graph_free(f);
        mera_graph_free(g);
    }
}

/* graphs without anything to lower come out the same */
static void test_lower_nothing_to_do(void)
{
    mera_error err;
    bn_data d;
    mera_graph *g = conv_bn(&d, 0, 0, 1, 0, 0);
    mera_graph *f = mera_pass_lower_qdq(g, &err);
    CHECK(f && same_structure(g, f));
    mera_graph_free(f);
    mera_graph_free(g);
    /* a quantized graph already lowered: nothing to do either */
    static qdq_data q;
    qdq_fill(&q);
    g = conv_qdq(&q, 2, 1);
    f = mera_pass_lower_qdq(g, &err);
    CHECK(f && same_structure(g, f));
    mera_graph_free(f);
    mera_graph_free(g);
}

int main(void)
{
    test_fold_bn_conv();
    test_fold_bn_dense();
    test_fold_bn_leaves_alone();
    test_fold_const_float();
    test_fold_const_quantized();
    test_fold_const_leaves_alone();
    test_lower_conv_chains();
    test_lower_leaves_float_conv();
    test_lower_keep_and_alone();
    test_lower_through_moved_op();
    test_lower_add_const();
    test_lower_requantize();
    test_lower_nothing_to_do();
    for (int i = 0; i < n_kept; i++)
        mera_graph_free(kept[i]);
    return test_summary();
}
