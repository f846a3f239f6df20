/* C tests of the passes. passes/layout.c (mera_pass_layout_nhwc): random
 * small quantized NCHW graphs (convs with groups, depthwise, strides,
 * padding; pools; adds with per-channel broadcast constants; concat on
 * channels; mean over H, W; upsample; softmax, slice and pad; heads through
 * flatten -> dense)
 * run on InterpreterHw give the same bytes before and after the pass, with
 * transposes only at the graph's edges (and before a flatten whose
 * element order differs); graphs with nothing NCHW come out identical.
 * Built and run by tests/test_c_core.py; prints "N passed, M failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/interp.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "testutil.h"

static double runit(void)
{
    return (rnd() % 1000000) / 1000000.0;
}

/* ---- a small graph builder ------------------------------------------------ */

typedef struct {
    mera_graph *g;
    int names;
    int ok;
    mera_layout layout; /* of the spatial ops */
} builder;

static const char *fresh(builder *b, const char *base)
{
    static char buf[64][32];
    char *s = buf[b->names % 64];
    snprintf(s, 32, "%s%d", base, b->names++);
    return s;
}

static int node(builder *b, int op, const char *base, const int *ins, int n, const mera_attr *attrs, int na)
{
    mera_error err;
    int out[MERA_MAX_NODE_OUTPUTS];
    char src[48];
    snprintf(src, sizeof src, "model.py:%d", b->names + 1);
    if (mera_graph_add_node(b->g, op, fresh(b, base), ins, n, attrs, na, src, out, MERA_MAX_NODE_OUTPUTS, &err) < 0) {
        fprintf(stderr, "building %s: %s\n", base, err.msg);
        b->ok = 0;
        return -1;
    }
    return out[0];
}

static const mera_type *type_of(builder *b, int v)
{
    return &mera_graph_value(b->g, v)->type;
}

/* N, C, H, W of a 4-D activation in the builder's layout */
static void dims(builder *b, int v, int64_t d[4])
{
    const int64_t *s = type_of(b, v)->shape;
    if (b->layout == MERA_LAYOUT_NHWC) {
        d[0] = s[0]; d[1] = s[3]; d[2] = s[1]; d[3] = s[2];
    } else {
        for (int i = 0; i < 4; i++)
            d[i] = s[i];
    }
}

static int caxis(builder *b)
{
    return b->layout == MERA_LAYOUT_NHWC ? 3 : 1;
}

static mera_attr layout_attr(builder *b)
{
    return str("layout", b->layout == MERA_LAYOUT_NHWC ? "NHWC" : "NCHW");
}

static mera_attr memfmt(void)
{
    static const char *const f[] = {"auto", "contiguous", "channels_last"};
    return str("torch_memory_format", f[rnd() % 3]);
}

static double qscale(const mera_type *t)
{
    return t->q.scale;
}

/* same: padding that keeps H and W (stride 1) */
static int conv_p(builder *b, int x, int64_t o, int64_t k, int64_t stride, int64_t groups, int relu, int same)
{
    int64_t d[4];
    dims(b, x, d);
    if (d[2] < k || d[3] < k)
        k = 1;
    int64_t cin = d[1] / groups;
    int64_t wshape[4] = {o, cin, k, k};
    int per_axis = rnd() % 2;
    double *scales = malloc((size_t)o * sizeof *scales);
    int32_t *zps = calloc((size_t)o, sizeof *zps);
    for (int64_t i = 0; i < o; i++)
        scales[i] = 0.002 + 0.01 * runit();
    mera_type wt = per_axis ? qtensor_axis(MERA_DTYPE_INT8, 4, wshape, 0, o, scales, zps)
                            : qtensor(MERA_DTYPE_INT8, 4, wshape, MERA_LAYOUT_ANY, scales[0], 0);
    int64_t nw = o * cin * k * k;
    int8_t *w = malloc((size_t)nw);
    for (int64_t i = 0; i < nw; i++)
        w[i] = (int8_t)rint_in(-60, 60);
    int64_t bshape[1] = {o};
    mera_type bt = tensor(MERA_DTYPE_FLOAT32, 1, bshape);
    float *bias = malloc((size_t)o * sizeof *bias);
    for (int64_t i = 0; i < o; i++)
        bias[i] = (float)((runit() - 0.5) * 0.5);
    mera_error err;
    int wv = mera_graph_add_param_data(b->g, fresh(b, "w"), &wt, w, &err);
    int bv = mera_graph_add_param_data(b->g, fresh(b, "b"), &bt, bias, &err);
    double os = qscale(type_of(b, x)) * scales[0] * 40.0 * sqrt((double)(cin * k * k)) / 30.0;
    free(w);
    free(bias);
    free(scales);
    free(zps);
    if (wv < 0 || bv < 0) {
        b->ok = 0;
        return -1;
    }
    int64_t p = same ? k / 2 : rint_in(0, k / 2), pb = same ? k / 2 : rint_in(0, k / 2);
    if (same)
        stride = 1;
    int64_t pad[4] = {p, pb, pb, p}, st[2] = {stride, stride};
    mera_attr a[] = {ints("padding", 4, pad), ints("strides", 2, st), integer("groups", groups), layout_attr(b),
                     str("activation", relu ? "relu" : "none"), flt("out_scale", os),
                     integer("out_zero_point", relu ? rint_in(0, 20) : rint_in(100, 150))};
    int ins[3] = {x, wv, bv};
    return node(b, MERA_OP_CONV2D, "conv", ins, 3, a, 7);
}

static int conv(builder *b, int x, int64_t o, int64_t k, int64_t stride, int64_t groups, int relu)
{
    return conv_p(b, x, o, k, stride, groups, relu, 0);
}

static int pool(builder *b, int x)
{
    int64_t d[4];
    dims(b, x, d);
    int64_t k = d[2] >= 3 && d[3] >= 3 ? rint_in(2, 3) : 1, s = rint_in(1, 2);
    int64_t kk[2] = {k, k}, ss[2] = {s, s}, pad[4] = {rint_in(0, k / 2), rint_in(0, k / 2), rint_in(0, k / 2), 0};
    if (rnd() % 2) {
        mera_attr a[] = {ints("kernel", 2, kk), ints("strides", 2, ss), ints("padding", 4, pad), layout_attr(b),
                         integer("ceil_mode", rnd() % 2)};
        return node(b, MERA_OP_MAX_POOL2D, "maxpool", &x, 1, a, 5);
    }
    mera_attr a[] = {ints("kernel", 2, kk), ints("strides", 2, ss), ints("padding", 4, pad), layout_attr(b),
                     integer("ceil_mode", rnd() % 2), integer("count_include_pad", rnd() % 2), memfmt()};
    return node(b, MERA_OP_AVG_POOL2D, "avgpool", &x, 1, a, 7);
}

/* x + a per-channel constant: [1,C,1,1] (tagged NCHW or untagged) or
 * [C,1,1], in the builder's layout's form. */
static int add_channel_const(builder *b, int x)
{
    const mera_type *xt = type_of(b, x);
    int64_t d[4];
    dims(b, x, d);
    int form = (int)(rnd() % 3);
    int rank = form == 2 ? 3 : 4;
    int64_t shape[4] = {1, 1, 1, 1};
    /* the channel's position among the constant's axes */
    shape[b->layout == MERA_LAYOUT_NHWC ? rank - 1 : rank - 3] = d[1];
    mera_layout tag = form == 0 ? b->layout : MERA_LAYOUT_ANY;
    mera_type ct = qtensor(xt->dtype, rank, shape, rank == 4 ? tag : MERA_LAYOUT_ANY, xt->q.scale * (0.5 + runit()),
                           (int32_t)rint_in(100, 150));
    uint8_t *data = malloc((size_t)d[1]);
    for (int64_t i = 0; i < d[1]; i++)
        data[i] = (uint8_t)rnd();
    mera_error err;
    int c = mera_graph_add_const(b->g, fresh(b, "chan"), &ct, data, 1, &err);
    free(data);
    if (c < 0) {
        b->ok = 0;
        return -1;
    }
    int ins[2] = {x, c};
    if (rnd() % 2) {
        ins[0] = c;
        ins[1] = x;
    }
    mera_attr a[] = {flt("out_scale", xt->q.scale * 1.5), integer("out_zero_point", rint_in(110, 140)), memfmt(),
                     str("activation", rnd() % 2 ? "relu" : "none")};
    return node(b, MERA_OP_ADD, "addc", ins, 2, a, 4);
}

static int add2(builder *b, int x, int y)
{
    mera_attr a[] = {flt("out_scale", qscale(type_of(b, x)) * 2), integer("out_zero_point", rint_in(110, 140)),
                     memfmt()};
    int ins[2] = {x, y};
    return node(b, MERA_OP_ADD, "add", ins, 2, a, 3);
}

static int concat2(builder *b, int x, int y)
{
    int ins[2] = {x, y};
    int64_t ax = rnd() % 2 ? caxis(b) : caxis(b) - 4;
    mera_attr a[] = {integer("axis", ax), flt("out_scale", qscale(type_of(b, x)) * 1.3),
                     integer("out_zero_point", rint_in(110, 140)), memfmt()};
    return node(b, MERA_OP_CONCAT, "cat", ins, 2, a, 4);
}

static int upsample(builder *b, int x)
{
    if (rnd() % 2) {
        double sc[2] = {2.0, 2.0};
        mera_attr a[] = {floats("scales", 2, sc), str("method", "nearest"), layout_attr(b), memfmt()};
        return node(b, MERA_OP_UPSAMPLE, "up", &x, 1, a, 4);
    }
    int64_t d[4];
    dims(b, x, d);
    int64_t size[2] = {d[2] + 3, d[3] * 2};
    mera_attr a[] = {ints("size", 2, size), str("method", "bilinear"), integer("align_corners", rnd() % 2),
                     layout_attr(b), memfmt(), flt("out_scale", qscale(type_of(b, x))),
                     integer("out_zero_point", rint_in(110, 140))};
    return node(b, MERA_OP_UPSAMPLE, "up", &x, 1, a, 7);
}

static int unary(builder *b, int x)
{
    switch (rnd() % 4) {
    case 0:
        return node(b, MERA_OP_RELU, "relu", &x, 1, NULL, 0);
    case 1: {
        mera_attr a[] = {flt("a_min", 0.0), flt("a_max", 6.0 * qscale(type_of(b, x)) * 10)};
        return node(b, MERA_OP_CLIP, "clip", &x, 1, a, 2);
    }
    case 2: {
        mera_attr a[] = {memfmt(), flt("out_scale", qscale(type_of(b, x))), integer("out_zero_point", 60)};
        return node(b, MERA_OP_HARDSWISH, "hswish", &x, 1, a, 3);
    }
    default: { /* over any axis but N, counted from either end */
        int64_t axis = rint_in(1, 3) - (rnd() % 2 ? 4 : 0);
        mera_attr a[] = {integer("axis", axis), flt("out_scale", 1.0 / 256.0), integer("out_zero_point", 0)};
        return node(b, MERA_OP_SOFTMAX, "softmax", &x, 1, a, 3);
    }
    }
}

static int slice_pad(builder *b, int x)
{
    int64_t d[4];
    dims(b, x, d);
    if (rnd() % 2 && d[1] > 2) {
        mera_attr a[] = {integer("axis", caxis(b)), integer("begin", 1), integer("end", d[1])};
        return node(b, MERA_OP_SLICE, "slice", &x, 1, a, 3);
    }
    int64_t pads[8] = {0};
    int h = b->layout == MERA_LAYOUT_NHWC ? 1 : 2;
    pads[h] = 1;
    pads[4 + h + 1] = 2;
    mera_attr a[] = {ints("pads", 8, pads), flt("value", 0.25)};
    return node(b, MERA_OP_PAD, "pad", &x, 1, a, 2);
}

static int mean_hw(builder *b, int x, int keepdims)
{
    int64_t axes[2];
    if (b->layout == MERA_LAYOUT_NHWC) {
        axes[0] = 1; axes[1] = 2;
    } else {
        axes[0] = -2; axes[1] = 3;
    }
    mera_attr a[] = {ints("axes", 2, axes), integer("keepdims", keepdims), memfmt(),
                     flt("out_scale", qscale(type_of(b, x)) * 0.7), integer("out_zero_point", rint_in(110, 140))};
    return node(b, MERA_OP_MEAN, "mean", &x, 1, a, 5);
}

static int dense(builder *b, int x, int64_t out)
{
    const mera_type *xt = type_of(b, x);
    int64_t in = xt->shape[xt->rank - 1];
    int64_t ws[2] = {out, in}, bs[1] = {out};
    mera_type wt = qtensor(MERA_DTYPE_INT8, 2, ws, MERA_LAYOUT_ANY, 0.005, 0);
    mera_type bt = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    int8_t *w = malloc((size_t)(out * in));
    for (int64_t i = 0; i < out * in; i++)
        w[i] = (int8_t)rint_in(-50, 50);
    float *bias = calloc((size_t)out, sizeof *bias);
    mera_error err;
    int wv = mera_graph_add_param_data(b->g, fresh(b, "fc.w"), &wt, w, &err);
    int bv = mera_graph_add_param_data(b->g, fresh(b, "fc.b"), &bt, bias, &err);
    free(w);
    free(bias);
    if (wv < 0 || bv < 0) {
        b->ok = 0;
        return -1;
    }
    int ins[3] = {x, wv, bv};
    mera_attr a[] = {flt("out_scale", xt->q.scale * 0.005 * 60 * sqrt((double)in) / 30), integer("out_zero_point", 128)};
    return node(b, MERA_OP_DENSE, "fc", ins, 3, a, 2);
}

static int flatten(builder *b, int x)
{
    mera_attr a[] = {integer("start_axis", 1), integer("end_axis", -1)};
    return node(b, MERA_OP_FLATTEN, "flatten", &x, 1, a, 2);
}

/* ---- random graphs ------------------------------------------------------- */

typedef struct {
    mera_graph *g;
    int want_transposes; /* after the pass, for NCHW graphs */
    int float_input;
    int nhwc_input;      /* an NHWC input transposed to NCHW by the graph */
} made;

static made random_graph(int seed, mera_layout layout)
{
    builder b = {.g = mera_graph_new("layout_test"), .ok = 1, .layout = layout};
    made m = {0};
    int64_t c = rint_in(1, 6), h = rint_in(5, 11), w = rint_in(5, 11);
    int64_t shape[4] = {1, c, h, w};
    m.nhwc_input = layout == MERA_LAYOUT_NCHW && seed % 5 == 4;
    mera_layout in_layout = m.nhwc_input ? MERA_LAYOUT_NHWC : layout;
    if (in_layout == MERA_LAYOUT_NHWC) {
        shape[1] = h; shape[2] = w; shape[3] = c;
    }
    mera_error err;
    int x;
    m.float_input = seed % 3 == 0;
    if (m.float_input) {
        mera_type t = tensor(MERA_DTYPE_FLOAT32, 4, shape);
        t.layout = in_layout;
        x = mera_graph_add_input(b.g, "input0", &t, &err);
    } else {
        mera_type t = qtensor(MERA_DTYPE_UINT8, 4, shape, in_layout, 0.02, 120);
        x = mera_graph_add_input(b.g, "input0", &t, &err);
    }
    if (m.nhwc_input) {
        static const int64_t to_nchw[4] = {0, 3, 1, 2};
        mera_attr a[] = {ints("axes", 4, to_nchw)};
        x = node(&b, MERA_OP_TRANSPOSE, "to_nchw", &x, 1, a, 1);
    }
    if (m.float_input) {
        mera_attr a[] = {flt("scale", 0.02), integer("zero_point", 120), str("dtype", "uint8")};
        x = node(&b, MERA_OP_QUANTIZE, "quant", &x, 1, a, 3);
    }
    int outs[3], n_out = 0;
    /* the input's, before the first conv; none for an NHWC input, whose
     * transpose to NCHW the pass undoes */
    m.want_transposes = !m.nhwc_input;
    x = conv(&b, x, rint_in(2, 8), 3, rint_in(1, 2), 1, rnd() % 2);
    int steps = (int)rint_in(3, 7);
    for (int s = 0; s < steps && b.ok; s++) {
        int64_t d[4];
        dims(&b, x, d);
        switch (rnd() % 9) {
        case 0: { /* grouped or depthwise conv */
            int64_t g = d[1] % 2 == 0 && rnd() % 2 ? 2 : d[1];
            x = conv(&b, x, g == d[1] ? d[1] : 2 * d[1], rint_in(1, 3) | 1, rint_in(1, 2), g, rnd() % 2);
            break;
        }
        case 1:
            x = pool(&b, x);
            break;
        case 2:
            x = add_channel_const(&b, x);
            break;
        case 3: /* a residual branch */
            x = add2(&b, x, conv_p(&b, x, d[1], 3 - 2 * (rnd() % 2), 1, 1, 1, 1));
            break;
        case 4:
            x = concat2(&b, x, conv_p(&b, x, rint_in(1, 5), 1, 1, 1, 0, 1));
            break;
        case 5:
            if (d[2] * d[3] <= 64)
                x = upsample(&b, x);
            break;
        case 6:
            x = unary(&b, x);
            break;
        case 7:
            x = slice_pad(&b, x);
            break;
        default:
            if (n_out == 0) { /* a 4-D output besides the head */
                outs[n_out++] = x;
                m.want_transposes++;
            }
            x = conv(&b, x, rint_in(2, 8), 1, 1, 1, 1);
            break;
        }
    }
    if (!b.ok) {
        mera_graph_free(b.g);
        m.g = NULL;
        return m;
    }
    int64_t d[4];
    dims(&b, x, d);
    switch (seed % 4) {
    case 0: { /* global pool, flatten (same order in both layouts), dense */
        int64_t one[2] = {1, 1};
        mera_attr a[] = {ints("output_size", 2, one), layout_attr(&b), memfmt()};
        x = node(&b, MERA_OP_ADAPTIVE_AVG_POOL2D, "gap", &x, 1, a, 3);
        x = dense(&b, flatten(&b, x), 5);
        break;
    }
    case 1: /* mean over H, W, dense */
        x = dense(&b, mean_hw(&b, x, 0), 7);
        break;
    case 2: /* flatten of H*W > 1: the NCHW order is needed there */
        x = dense(&b, flatten(&b, x), 4);
        if (d[2] * d[3] > 1 && d[1] > 1)
            m.want_transposes++;
        break;
    default: /* mean keeping dims, a 4-D output */
        x = mean_hw(&b, x, 1);
        m.want_transposes++;
        break;
    }
    outs[n_out++] = x;
    if (!b.ok || mera_graph_set_outputs(b.g, outs, n_out, &err)) {
        mera_graph_free(b.g);
        m.g = NULL;
        return m;
    }
    m.g = b.g;
    return m;
}

static int count_op(const mera_graph *g, int op)
{
    int k = 0;
    for (int n = 0; n < mera_graph_num_nodes(g); n++)
        k += mera_graph_node(g, n)->op == op;
    return k;
}

/* Runs g on the interpreter; outputs malloc'd into out[]. */
static int run_interp(const mera_graph *g, mera_interp_mode mode, const void *input, void **out)
{
    mera_error err;
    const void **params = mera_bound_param_data(g);
    mera_interp *it = mera_interp_compile(g, mode, params, &err);
    if (!it) {
        fprintf(stderr, "interp: %s\n", err.msg);
        free(params);
        return 0;
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        out[i] = malloc(mera_type_nbytes(&mera_graph_value(g, mera_graph_output(g, i))->type));
    const void *ins[1] = {input};
    mera_status st = mera_interp_run(it, ins, out, &err);
    if (st)
        fprintf(stderr, "run: %s\n", err.msg);
    mera_interp_free(it);
    free(params);
    return st == MERA_OK;
}

static int run_hw(const mera_graph *g, const void *input, void **out)
{
    return run_interp(g, MERA_INTERP_HW, input, out);
}

/* The interface and the copied nodes are kept: inputs, output types,
 * every node of g by name, op and source (but transposes, which the pass
 * may compose away). */
static void check_interface(const mera_graph *g, const mera_graph *h)
{
    CHECK(mera_graph_num_outputs(g) == mera_graph_num_outputs(h));
    for (int i = 0; i < mera_graph_num_outputs(g) && i < mera_graph_num_outputs(h); i++)
        CHECK(mera_type_equal(&mera_graph_value(g, mera_graph_output(g, i))->type,
                              &mera_graph_value(h, mera_graph_output(h, i))->type));
    const mera_value *a = mera_graph_value(g, mera_graph_input(g, 0)), *b = mera_graph_value(h, mera_graph_input(h, 0));
    CHECK(strcmp(a->name, b->name) == 0 && mera_type_equal(&a->type, &b->type) && b->kind == MERA_VALUE_INPUT);
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *x = mera_graph_node(g, n);
        int found = 0;
        for (int k = 0; k < mera_graph_num_nodes(h); k++) {
            const mera_node *y = mera_graph_node(h, k);
            if (strcmp(x->name, y->name) == 0)
                found = y->op == x->op && strcmp(x->source, y->source) == 0;
        }
        CHECK(found || x->op == MERA_OP_TRANSPOSE);
    }
}

static void test_random_nchw_graphs(void)
{
    int converted = 0;
    for (int seed = 0; seed < 60; seed++) {
        made m = random_graph(seed, MERA_LAYOUT_NCHW);
        CHECK(m.g != NULL);
        if (!m.g)
            continue;
        mera_error err;
        mera_graph *bound = mera_pass_bind(m.g, NULL, &err);
        CHECK(bound != NULL);
        mera_graph *h = bound ? mera_pass_layout_nhwc(bound, &err) : NULL;
        CHECK(h != NULL);
        if (!h) {
            fprintf(stderr, "seed %d: %s\n", seed, err.msg);
            mera_graph_free(bound);
            mera_graph_free(m.g);
            continue;
        }
        check_interface(bound, h);
        /* every spatial op runs NHWC now */
        int nchw = 0;
        for (int n = 0; n < mera_graph_num_nodes(h); n++) {
            const char *l = mera_attr_string(mera_graph_node(h, n), "layout");
            nchw += l && strcmp(l, "NCHW") == 0;
        }
        CHECK(nchw == 0);
        int nt = count_op(h, MERA_OP_TRANSPOSE);
        CHECK(count_op(bound, MERA_OP_TRANSPOSE) == m.nhwc_input);
        if (nt != m.want_transposes)
            fprintf(stderr, "seed %d: %d transposes, expected %d\n", seed, nt, m.want_transposes);
        CHECK(nt == m.want_transposes);
        /* the input's transpose comes after the quantize: on uint8 */
        for (int n = 0; n < mera_graph_num_nodes(h); n++) {
            const mera_node *t = mera_graph_node(h, n);
            if (t->op == MERA_OP_TRANSPOSE && mera_graph_value(h, t->inputs[0])->kind == MERA_VALUE_INPUT)
                CHECK(!m.float_input);
            if (t->op == MERA_OP_TRANSPOSE)
                CHECK(mera_graph_value(h, t->inputs[0])->type.dtype == MERA_DTYPE_UINT8);
        }
        const mera_type *it = &mera_graph_value(bound, mera_graph_input(bound, 0))->type;
        int64_t n = mera_type_numel(it);
        size_t bytes = mera_type_nbytes(it);
        void *input = malloc(bytes);
        for (int64_t i = 0; i < n; i++) {
            if (it->dtype == MERA_DTYPE_FLOAT32)
                ((float *)input)[i] = (float)((runit() - 0.5) * 5.0);
            else
                ((uint8_t *)input)[i] = (uint8_t)rnd();
        }
        void *ra[4] = {0}, *rb[4] = {0};
        int ok = run_hw(bound, input, ra) && run_hw(h, input, rb);
        CHECK(ok);
        for (int i = 0; ok && i < mera_graph_num_outputs(bound); i++) {
            size_t nb = mera_type_nbytes(&mera_graph_value(bound, mera_graph_output(bound, i))->type);
            int same = memcmp(ra[i], rb[i], nb) == 0;
            if (!same)
                fprintf(stderr, "seed %d: output %d differs after the layout pass\n", seed, i);
            CHECK(same);
            /* and the graph is not trivial: not every byte is one value */
            if (i == mera_graph_num_outputs(bound) - 1) {
                int varied = 0;
                for (size_t k = 1; k < nb; k++)
                    varied |= ((uint8_t *)ra[i])[k] != ((uint8_t *)ra[i])[0];
                converted += varied;
            }
        }
        for (int i = 0; i < 4; i++) {
            free(ra[i]);
            free(rb[i]);
        }
        free(input);
        mera_graph_free(h);
        mera_graph_free(bound);
        mera_graph_free(m.g);
    }
    /* most heads give varied bytes (a comparison of constants would prove little) */
    CHECK(converted >= 40);
}

static void test_nothing_nchw_passes_through_unchanged(void)
{
    for (int seed = 0; seed < 20; seed++) {
        made m = random_graph(seed, MERA_LAYOUT_NHWC);
        CHECK(m.g != NULL);
        if (!m.g)
            continue;
        mera_error err;
        mera_graph *bound = mera_pass_bind(m.g, NULL, &err);
        mera_graph *h = bound ? mera_pass_layout_nhwc(bound, &err) : NULL;
        CHECK(h != NULL);
        if (h) {
            char *a = mera_graph_to_text(bound), *b = mera_graph_to_text(h);
            CHECK(a && b && strcmp(a, b) == 0);
            free(a);
            free(b);
        }
        mera_graph_free(h);
        mera_graph_free(bound);
        mera_graph_free(m.g);
    }
    /* an NCHW graph without spatial ops: nothing to convert either */
    mera_graph *g = mera_graph_new("no_spatial");
    int64_t s[4] = {1, 3, 4, 5};
    mera_type t = qtensor(MERA_DTYPE_UINT8, 4, s, MERA_LAYOUT_NCHW, 0.1, 3);
    mera_error err;
    int x = mera_graph_add_input(g, "x", &t, &err), out[1];
    mera_graph_add_node(g, MERA_OP_RELU, "r", &x, 1, NULL, 0, NULL, out, 1, &err);
    mera_attr fa[] = {integer("start_axis", 1), integer("end_axis", -1)};
    mera_graph_add_node(g, MERA_OP_FLATTEN, "f", out, 1, fa, 2, NULL, out, 1, &err);
    CHECK(mera_graph_set_outputs(g, out, 1, &err) == MERA_OK);
    mera_graph *bound = mera_pass_bind(g, NULL, &err);
    mera_graph *h = mera_pass_layout_nhwc(bound, &err);
    char *a = mera_graph_to_text(bound), *b = h ? mera_graph_to_text(h) : NULL;
    CHECK(a && b && strcmp(a, b) == 0);
    free(a);
    free(b);
    mera_graph_free(h);
    mera_graph_free(bound);
    mera_graph_free(g);
}

/* ---- small hand-made graphs ------------------------------------------------ */

static int op_node(mera_graph *g, int op, const char *name, const int *ins, int n, const mera_attr *a, int na)
{
    mera_error err;
    int out[MERA_MAX_NODE_OUTPUTS];
    if (mera_graph_add_node(g, op, name, ins, n, a, na, "test.py:1", out, MERA_MAX_NODE_OUTPUTS, &err) < 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return -1;
    }
    return out[0];
}

/* input "x" [1,3,6,6] NCHW (u8, or f32), then conv "c": 4 channels, 3x3,
 * padding 1, NCHW. Returns c's value. */
static int small_conv(mera_graph *g, int quantized)
{
    mera_error err;
    int64_t xs[4] = {1, 3, 6, 6}, ws[4] = {4, 3, 3, 3}, bs[1] = {4};
    mera_type xt = quantized ? qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_NCHW, 0.02, 100)
                             : tensor(MERA_DTYPE_FLOAT32, 4, xs);
    xt.layout = MERA_LAYOUT_NCHW;
    mera_type wt = quantized ? qtensor(MERA_DTYPE_INT8, 4, ws, MERA_LAYOUT_ANY, 0.01, 0)
                             : tensor(MERA_DTYPE_FLOAT32, 4, ws);
    mera_type bt = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    int8_t wq[108];
    float wf[108], bias[4];
    for (int i = 0; i < 108; i++) {
        wq[i] = (int8_t)rint_in(-50, 50);
        wf[i] = (float)(runit() - 0.5);
    }
    for (int i = 0; i < 4; i++)
        bias[i] = (float)(runit() - 0.5);
    int x = mera_graph_add_input(g, "x", &xt, &err);
    int w = mera_graph_add_param_data(g, "c.weight", &wt, quantized ? (const void *)wq : (const void *)wf, &err);
    int b = mera_graph_add_param_data(g, "c.bias", &bt, bias, &err);
    int64_t pad[4] = {1, 1, 1, 1};
    mera_attr a[] = {ints("padding", 4, pad), str("layout", "NCHW"), flt("out_scale", 0.05),
                     integer("out_zero_point", 120)};
    int ins[3] = {x, w, b};
    return op_node(g, MERA_OP_CONV2D, "c", ins, 3, a, quantized ? 4 : 2);
}

/* bind g (outputs set), run the layout pass; NULL on failure (reported) */
static mera_graph *bind_and_convert(mera_graph *g, mera_graph **bound)
{
    mera_error err;
    *bound = mera_pass_bind(g, NULL, &err);
    mera_graph *h = *bound ? mera_pass_layout_nhwc(*bound, &err) : NULL;
    if (!h)
        fprintf(stderr, "layout pass: %s\n", err.msg);
    return h;
}

/* The largest difference between g's and h's outputs on the interpreter
 * (mode) for one random input, as a fraction of 1 + |reference|; for
 * quantized outputs any differing byte counts 1. -1 when a run fails. */
static double output_difference(const mera_graph *g, const mera_graph *h, mera_interp_mode mode)
{
    const mera_type *it = &mera_graph_value(g, mera_graph_input(g, 0))->type;
    int64_t n = mera_type_numel(it);
    void *input = malloc(mera_type_nbytes(it));
    for (int64_t i = 0; i < n; i++) {
        if (it->dtype == MERA_DTYPE_FLOAT32)
            ((float *)input)[i] = (float)((runit() - 0.5) * 4.0);
        else
            ((uint8_t *)input)[i] = (uint8_t)rnd();
    }
    void *ra[4] = {0}, *rb[4] = {0};
    double worst = -1;
    if (run_interp(g, mode, input, ra) && run_interp(h, mode, input, rb)) {
        worst = 0;
        for (int o = 0; o < mera_graph_num_outputs(g); o++) {
            const mera_type *t = &mera_graph_value(g, mera_graph_output(g, o))->type;
            if (t->dtype == MERA_DTYPE_FLOAT32) {
                for (int64_t i = 0; i < mera_type_numel(t); i++) {
                    float a = ((float *)ra[o])[i], b = ((float *)rb[o])[i];
                    double d = fabs((double)a - (double)b) / (1.0 + fabs((double)a));
                    worst = d > worst ? d : worst;
                }
            } else if (memcmp(ra[o], rb[o], mera_type_nbytes(t)) != 0) {
                worst = 1;
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        free(ra[i]);
        free(rb[i]);
    }
    free(input);
    return worst;
}

static const mera_node *find_node(const mera_graph *g, const char *name)
{
    for (int n = 0; n < mera_graph_num_nodes(g); n++)
        if (strcmp(mera_graph_node(g, n)->name, name) == 0)
            return mera_graph_node(g, n);
    return NULL;
}

/* The pass names what it inserts after the value ("x.nhwc", "c.nchw"); a
 * node of the input graph that already has such a name keeps it. */
static void test_inserted_names_do_not_collide(void)
{
    mera_graph *g = mera_graph_new("names");
    int c = small_conv(g, 1);
    int r = op_node(g, MERA_OP_RELU, "x.nhwc", &c, 1, NULL, 0);
    mera_attr fa[] = {integer("start_axis", 1), integer("end_axis", -1)};
    int f = op_node(g, MERA_OP_FLATTEN, "x.nhwc.nchw", &r, 1, fa, 2);
    mera_error err;
    CHECK(f >= 0 && mera_graph_set_outputs(g, &f, 1, &err) == MERA_OK);
    mera_graph *bound, *h = bind_and_convert(g, &bound);
    CHECK(h != NULL);
    if (h) {
        CHECK(count_op(h, MERA_OP_TRANSPOSE) == 2); /* the input's; the flatten's (H*W = 36) */
        const mera_node *rn = find_node(h, "x.nhwc"), *fn = find_node(h, "x.nhwc.nchw");
        CHECK(rn && rn->op == MERA_OP_RELU && fn && fn->op == MERA_OP_FLATTEN);
        CHECK(rn && mera_graph_value(h, rn->outputs[0])->type.layout == MERA_LAYOUT_NHWC);
        CHECK(output_difference(bound, h, MERA_INTERP_HW) == 0);
    }
    mera_graph_free(h);
    mera_graph_free(bound);
    mera_graph_free(g);
}

/* A transpose of a converted value is composed with the conversion: to
 * NHWC it disappears, any other permutation stays one transpose. */
static void test_transpose_is_composed(void)
{
    static const int64_t perms[2][4] = {{0, 2, 3, 1}, {0, 1, 3, 2}};
    static const int64_t composed[4] = {0, 3, 2, 1}; /* N, C, W, H out of NHWC data */
    for (int k = 0; k < 2; k++) {
        mera_graph *g = mera_graph_new("compose");
        int c = small_conv(g, 1);
        mera_attr a[] = {ints("axes", 4, perms[k])};
        int t = op_node(g, MERA_OP_TRANSPOSE, "t", &c, 1, a, 1);
        mera_error err;
        CHECK(t >= 0 && mera_graph_set_outputs(g, &t, 1, &err) == MERA_OK);
        mera_graph *bound, *h = bind_and_convert(g, &bound);
        CHECK(h != NULL);
        if (h) {
            CHECK(count_op(h, MERA_OP_TRANSPOSE) == 1 + k);
            const mera_value *out = mera_graph_value(h, mera_graph_output(h, 0));
            CHECK(mera_type_equal(&out->type, &mera_graph_value(bound, mera_graph_output(bound, 0))->type));
            const mera_node *tn = find_node(h, "t");
            if (k == 0) {
                CHECK(tn == NULL && strcmp(out->name, "c") == 0); /* conv c writes NHWC itself */
            } else {
                const mera_attr *ax = tn ? mera_node_attr(tn, "axes") : NULL;
                CHECK(ax && memcmp(ax->ints, composed, sizeof composed) == 0);
                CHECK(tn && mera_graph_value(h, tn->inputs[0])->producer >= 0 &&
                      strcmp(mera_graph_node(h, mera_graph_value(h, tn->inputs[0])->producer)->name, "c") == 0);
            }
            CHECK(output_difference(bound, h, MERA_INTERP_HW) == 0);
        }
        mera_graph_free(h);
        mera_graph_free(bound);
        mera_graph_free(g);
    }
}

/* conv -> add of an untagged [1,C,1,1] param: the add's output is tagged
 * "any" (its operands' tags differ). As a graph output it keeps that type:
 * the transpose back is followed by a reshape that resets the tag. The
 * param is permuted into a new param [1,1,1,C] tagged NHWC. */
static void test_untagged_output_keeps_its_type(void)
{
    mera_graph *g = mera_graph_new("untagged");
    int c = small_conv(g, 1);
    int64_t ps[4] = {1, 4, 1, 1};
    mera_type pt = qtensor(MERA_DTYPE_UINT8, 4, ps, MERA_LAYOUT_ANY, 0.03, 10);
    uint8_t pd[4] = {3, 70, 140, 250};
    mera_error err;
    int p = mera_graph_add_param_data(g, "shift", &pt, pd, &err);
    mera_attr a[] = {flt("out_scale", 0.08), integer("out_zero_point", 128), str("torch_memory_format", "channels_last")};
    int ins[2] = {c, p};
    int s = op_node(g, MERA_OP_ADD, "a", ins, 2, a, 3);
    CHECK(s >= 0 && mera_graph_value(g, s)->type.layout == MERA_LAYOUT_ANY);
    CHECK(s >= 0 && mera_graph_set_outputs(g, &s, 1, &err) == MERA_OK);
    mera_graph *bound, *h = bind_and_convert(g, &bound);
    CHECK(h != NULL);
    if (h) {
        check_interface(bound, h);
        CHECK(count_op(h, MERA_OP_TRANSPOSE) == 2 && count_op(h, MERA_OP_RESHAPE) == 1);
        const mera_node *an = find_node(h, "a");
        const mera_value *pv = an ? mera_graph_value(h, an->inputs[1]) : NULL;
        CHECK(pv && pv->kind == MERA_VALUE_PARAM && pv->type.layout == MERA_LAYOUT_NHWC && pv->type.shape[3] == 4 &&
              memcmp(pv->data, pd, 4) == 0);
        CHECK(an && strcmp(mera_attr_string(an, "torch_memory_format"), "channels_last") == 0);
        CHECK(output_difference(bound, h, MERA_INTERP_HW) == 0);
    }
    mera_graph_free(h);
    mera_graph_free(bound);
    mera_graph_free(g);
}

/* A float graph (batch norm as the frontends lower it: mul and add of
 * [C,1,1] constants; softmax over channels) converts too; its float convs
 * may sum in another order, so the outputs agree to rounding. */
static void test_float_graph(void)
{
    mera_graph *g = mera_graph_new("float");
    int c = small_conv(g, 0);
    int64_t cs[3] = {4, 1, 1};
    mera_type ct = tensor(MERA_DTYPE_FLOAT32, 3, cs);
    float scale[4] = {0.5f, 1.5f, -1.0f, 2.0f}, shift[4] = {0.1f, -0.2f, 0.3f, 0.0f};
    mera_error err;
    int sc = mera_graph_add_const(g, "bn.scale", &ct, scale, 1, &err);
    int sh = mera_graph_add_const(g, "bn.shift", &ct, shift, 1, &err);
    int m_in[2] = {c, sc};
    int m = op_node(g, MERA_OP_MUL, "bn.mul", m_in, 2, NULL, 0);
    int a_in[2] = {m, sh};
    int a = op_node(g, MERA_OP_ADD, "bn.add", a_in, 2, NULL, 0);
    int r = op_node(g, MERA_OP_RELU, "relu", &a, 1, NULL, 0);
    int64_t k[2] = {2, 2};
    mera_attr pa[] = {ints("kernel", 2, k), ints("strides", 2, k), str("layout", "NCHW")};
    int p = op_node(g, MERA_OP_MAX_POOL2D, "pool", &r, 1, pa, 3);
    mera_attr sa[] = {integer("axis", 1)};
    int sm = op_node(g, MERA_OP_SOFTMAX, "softmax", &p, 1, sa, 1);
    int64_t one[2] = {1, 1};
    mera_attr ga[] = {ints("output_size", 2, one), str("layout", "NCHW")};
    int gp = op_node(g, MERA_OP_ADAPTIVE_AVG_POOL2D, "gap", &p, 1, ga, 2);
    mera_attr fa[] = {integer("start_axis", 1), integer("end_axis", -1)};
    int f = op_node(g, MERA_OP_FLATTEN, "flatten", &gp, 1, fa, 2);
    int outs[2] = {sm, f};
    CHECK(f >= 0 && mera_graph_set_outputs(g, outs, 2, &err) == MERA_OK);
    mera_graph *bound, *h = bind_and_convert(g, &bound);
    CHECK(h != NULL);
    if (h) {
        check_interface(bound, h);
        /* the input's and the 4-D output's; none before the flatten of [1,4,1,1] */
        CHECK(count_op(h, MERA_OP_TRANSPOSE) == 2);
        for (int n = 0; n < mera_graph_num_nodes(h); n++) {
            const char *l = mera_attr_string(mera_graph_node(h, n), "layout");
            CHECK(!l || strcmp(l, "NHWC") == 0);
        }
        double d = output_difference(bound, h, MERA_INTERP_FLOAT);
        CHECK(d >= 0 && d < 1e-5);
    }
    mera_graph_free(h);
    mera_graph_free(bound);
    mera_graph_free(g);
}

int main(void)
{
    test_rng_state = 0x2545f4914f6cdd1dull;
    test_random_nchw_graphs();
    test_nothing_nchw_passes_through_unchanged();
    test_inserted_names_do_not_collide();
    test_transpose_is_composed();
    test_untagged_output_keeps_its_type();
    test_float_graph();
    return test_summary();
}
