/* C tests of kernels/split.c: for every quantized vector op the DNA runs,
 * the reference kernel run on tiles cut where mera_kernel_split_rule
 * allows gives exactly the bytes of the kernel run on the whole tensor;
 * and a depthwise conv cut into row tiles, told depthwise_saturate=yes,
 * gives the whole layer's bytes (ref and fast kernels). Built and run by
 * tests/test_c_core.py; prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "kernels/kernels.h"
#include "kernels/split.h"
#include "testutil.h"

/* ---- small helpers ----------------------------------------------------- */

static double rscale(void)
{
    return 0.002 + (rnd() % 100000) / 100000.0 * 0.2;
}

static mera_type qtype(mera_dtype dt, int rank, const int64_t *shape, double scale, int32_t zp)
{
    return qtensor(dt, rank, shape, rank == 4 ? MERA_LAYOUT_NHWC : MERA_LAYOUT_ANY, scale, zp);
}

static mera_type rqtype(mera_dtype dt, int rank, const int64_t *shape)
{
    int32_t zp = dt == MERA_DTYPE_UINT8 ? (int32_t)rint_in(0, 255) : (int32_t)rint_in(-128, 127);
    return qtype(dt, rank, shape, rscale(), zp);
}

static uint8_t *rand_bytes(int64_t n)
{
    uint8_t *p = malloc((size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
    return p;
}

/* One node over inputs of the given types with random data. */
typedef struct {
    mera_graph *g;
    const mera_node *node;
    int n_in;
    const mera_type *in_t[MERA_MAX_NODE_INPUTS];
    uint8_t *in_d[MERA_MAX_NODE_INPUTS];
    const mera_type *out_t;
} op_case;

static int case_build(op_case *c, int op, const mera_type *ins, int n_in, const mera_attr *attrs, int n_attrs)
{
    mera_error err;
    memset(c, 0, sizeof *c);
    c->g = mera_graph_new("split");
    int ids[MERA_MAX_NODE_INPUTS], out[4];
    for (int i = 0; i < n_in; i++) {
        char name[16];
        snprintf(name, sizeof name, "in%d", i);
        ids[i] = mera_graph_add_input(c->g, name, &ins[i], &err);
        if (ids[i] < 0) {
            fprintf(stderr, "input: %s\n", err.msg);
            return 0;
        }
    }
    int k = mera_graph_add_node(c->g, op, "op", ids, n_in, attrs, n_attrs, NULL, out, 4, &err);
    if (k < 0) {
        fprintf(stderr, "node: %s\n", err.msg);
        return 0;
    }
    c->node = mera_graph_node(c->g, k);
    c->n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        c->in_t[i] = &mera_graph_value(c->g, ids[i])->type;
        c->in_d[i] = rand_bytes(mera_type_numel(c->in_t[i]));
    }
    c->out_t = &mera_graph_value(c->g, out[0])->type;
    return 1;
}

static void case_free(op_case *c)
{
    for (int i = 0; i < c->n_in; i++)
        free(c->in_d[i]);
    mera_graph_free(c->g);
}

static mera_status run_ref(const mera_node *node, int n_in, const mera_type *const *in_t, const void *const *in,
                           const mera_type *out_t, void *out)
{
    mera_kernel_args a;
    memset(&a, 0, sizeof a);
    a.node = node;
    a.n_inputs = n_in;
    for (int i = 0; i < n_in; i++) {
        a.in_types[i] = in_t[i];
        a.in[i] = in[i];
    }
    a.n_outputs = 1;
    a.out_types[0] = out_t;
    a.out[0] = out;
    mera_error err;
    mera_status st = mera_kernel_ref(node->op, MERA_NUMERICS_QUANT)(&a, &err);
    if (st)
        fprintf(stderr, "kernel: %s\n", err.msg);
    return st;
}

/* The sub-box [lo, hi) along dim of a C-contiguous tensor, C-contiguous. */
static void extract(const uint8_t *src, const int64_t *shape, int rank, int dim, int64_t lo, int64_t hi,
                    uint8_t *dst)
{
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; i++)
        outer *= shape[i];
    for (int i = dim + 1; i < rank; i++)
        inner *= shape[i];
    for (int64_t o = 0; o < outer; o++)
        memcpy(dst + o * (hi - lo) * inner, src + (o * shape[dim] + lo) * inner, (size_t)((hi - lo) * inner));
}

/* Random tile boundaries of extent n: every tile but the last a multiple
 * of granule. Returns the number of tiles; b[0] = 0, b[count] = n. */
static int random_cuts(int64_t n, int64_t granule, int64_t *b)
{
    int k = 0;
    b[0] = 0;
    int64_t at = 0;
    while (at < n) {
        int64_t units = (n - at + granule - 1) / granule;
        int64_t take = rint_in(1, units < 4 ? units : (rnd() % 3 ? 1 : units)) * granule;
        at = at + take < n ? at + take : n;
        b[++k] = at;
    }
    return k;
}

static int cases_split, cases_none, tiles_run;

/* Run c whole and in tiles per its split rule; compare every tile. */
static void check_tiles(op_case *c, const char *what)
{
    const mera_type *ot = c->out_t;
    mera_split_rule r = mera_kernel_split_rule(c->node, c->in_t, c->n_in, ot);
    CHECK(r.granule >= 1);
    if (r.axis == MERA_SPLIT_NONE) {
        cases_none++;
        return;
    }
    cases_split++;
    int64_t n_out = mera_type_numel(ot);
    uint8_t *whole = malloc((size_t)n_out);
    if (run_ref(c->node, c->n_in, c->in_t, (const void *const *)c->in_d, ot, whole)) {
        CHECK(0);
        free(whole);
        return;
    }
    int odim = r.axis == MERA_SPLIT_ROWS ? 1 : ot->rank - 1;
    int64_t ext = ot->shape[odim];
    int64_t b[1100];
    int nt = random_cuts(ext, r.granule, b);
    for (int t = 0; t < nt; t++) {
        int64_t lo = b[t], hi = b[t + 1];
        mera_type tin[MERA_MAX_NODE_INPUTS], tout = *ot;
        const mera_type *tin_p[MERA_MAX_NODE_INPUTS];
        void *tin_d[MERA_MAX_NODE_INPUTS];
        tout.shape[odim] = hi - lo;
        for (int i = 0; i < c->n_in; i++) {
            const mera_type *it = c->in_t[i];
            tin[i] = *it;
            int sdim = r.axis == MERA_SPLIT_ROWS ? 1 - (ot->rank - it->rank) : it->rank - 1;
            int64_t ni = mera_type_numel(it);
            tin_d[i] = malloc((size_t)(ni > 0 ? ni : 1));
            if (sdim >= 0 && it->shape[sdim] == ext && ext != 1) {
                tin[i].shape[sdim] = hi - lo;
                extract(c->in_d[i], it->shape, it->rank, sdim, lo, hi, tin_d[i]);
            } else {
                memcpy(tin_d[i], c->in_d[i], (size_t)ni);
            }
            tin_p[i] = &tin[i];
        }
        int64_t nt_out = mera_type_numel(&tout);
        uint8_t *got = malloc((size_t)nt_out), *want = malloc((size_t)nt_out);
        extract(whole, ot->shape, ot->rank, odim, lo, hi, want);
        int ok = run_ref(c->node, c->n_in, tin_p, (const void *const *)tin_d, &tout, got) == MERA_OK &&
                 memcmp(got, want, (size_t)nt_out) == 0;
        tiles_run++;
        if (!ok) {
            char s[128];
            mera_shape_format(ot->shape, ot->rank, s, sizeof s);
            fprintf(stderr, "%s: out %s, %s granule %lld: tile [%lld, %lld) differs\n", what, s,
                    r.axis == MERA_SPLIT_ROWS ? "ROWS" : "CHANNELS", (long long)r.granule, (long long)lo,
                    (long long)hi);
        }
        CHECK(ok);
        free(got);
        free(want);
        for (int i = 0; i < c->n_in; i++)
            free(tin_d[i]);
    }
    free(whole);
}

/* A spatial NHWC shape, sizes around vector widths now and then. */
static int64_t rdim(int64_t lo, int64_t hi)
{
    static const int64_t around[] = {7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65};
    if (rnd() % 3 == 0) {
        int64_t v = around[rnd() % (sizeof around / sizeof *around)];
        if (v >= lo && v <= hi)
            return v;
    }
    return rint_in(lo, hi);
}

static mera_dtype rdtype(void)
{
    return rnd() % 2 ? MERA_DTYPE_UINT8 : MERA_DTYPE_INT8;
}

static const char *rmemfmt(void)
{
    static const char *const f[] = {"auto", "auto", "auto", "channels_last", "contiguous"};
    return f[rnd() % 5];
}

/* ---- per-op cases ------------------------------------------------------ */

static void test_elementwise(void)
{
    static const int ops[] = {MERA_OP_ADD, MERA_OP_MUL, MERA_OP_RELU, MERA_OP_CLIP, MERA_OP_REQUANTIZE,
                              MERA_OP_LEAKY_RELU, MERA_OP_HARDSWISH, MERA_OP_HARDSIGMOID, MERA_OP_SIGMOID};
    const char *names[] = {"add", "mul", "relu", "clip", "requantize", "leaky_relu", "hardswish", "hardsigmoid",
                           "sigmoid"};
    for (int iter = 0; iter < 600; iter++) {
        int k = iter % 9, op = ops[k];
        mera_dtype dt = rdtype();
        int rank = rnd() % 4 ? 4 : (int)rint_in(2, 3);
        int64_t s[4] = {1, rdim(1, 40), rdim(1, 24), rdim(1, 70)};
        if (rank < 4)
            s[1] = rdim(1, 80), s[2] = rdim(1, 70);
        if (rnd() % 10 == 0)
            s[0] = 2;
        mera_type in[2];
        in[0] = rqtype(dt, rank, s);
        int n_in = 1;
        if (op == MERA_OP_ADD || op == MERA_OP_MUL) {
            int64_t bs[4];
            int brank = rank;
            memcpy(bs, s, sizeof bs);
            switch (rnd() % 5) {
            case 0: break;                                  /* same shape */
            case 1: for (int i = 0; i < rank - 1; i++) bs[i] = 1; break; /* [1,1,1,C] */
            case 2: bs[rank - 1] = 1; bs[0] = 1; break;      /* [1,H,W,1] */
            case 3: brank = 1; bs[0] = s[rank - 1]; break;   /* [C] */
            case 4: bs[1] = 1; break;                        /* broadcast along dim 1 */
            }
            in[1] = rqtype(dt, brank, bs);
            if (rnd() % 2) { /* either side may be the broadcast one */
                mera_type t = in[0];
                in[0] = in[1];
                in[1] = t;
            }
            n_in = 2;
        }
        mera_attr at[8];
        int na = 0;
        const char *mf = rmemfmt();
        if (op != MERA_OP_RELU && op != MERA_OP_CLIP && op != MERA_OP_REQUANTIZE) {
            at[na++] = str("torch_memory_format", mf);
            at[na++] = flt("out_scale", rscale());
            at[na++] = integer("out_zero_point", dt == MERA_DTYPE_UINT8 ? rint_in(0, 255) : rint_in(-128, 127));
        }
        if (op == MERA_OP_REQUANTIZE) {
            mera_dtype od = rdtype();
            at[na++] = flt("out_scale", rscale());
            at[na++] = integer("out_zero_point", od == MERA_DTYPE_UINT8 ? rint_in(0, 255) : rint_in(-128, 127));
            at[na++] = str("out_dtype", od == MERA_DTYPE_UINT8 ? "uint8" : "int8");
        }
        if ((op == MERA_OP_ADD || op == MERA_OP_MUL) && rnd() % 2)
            at[na++] = str("activation", "relu");
        if (op == MERA_OP_CLIP) {
            double lo = -(double)(rnd() % 100) / 20, hi = lo + (double)(rnd() % 100) / 10;
            at[na++] = flt("a_min", lo);
            at[na++] = flt("a_max", hi);
        }
        if (op == MERA_OP_LEAKY_RELU)
            at[na++] = flt("alpha", (double)(rnd() % 100) / 100);
        op_case c;
        if (!case_build(&c, op, in, n_in, at, na)) {
            CHECK(0);
            continue;
        }
        check_tiles(&c, names[k]);
        case_free(&c);
    }
}

static void test_concat(void)
{
    for (int iter = 0; iter < 150; iter++) {
        mera_dtype dt = rdtype();
        int rank = rnd() % 4 ? 4 : 3;
        int64_t axis = rank == 4 ? (rnd() % 3 ? 3 : (int64_t)rint_in(1, 2)) : (int64_t)rint_in(1, 2);
        int n_in = (int)rint_in(1, 4);
        int64_t s[4] = {1, rdim(1, 20), rdim(1, 20), rdim(1, 40)};
        mera_type in[4];
        for (int i = 0; i < n_in; i++) {
            int64_t si[4];
            memcpy(si, s, sizeof si);
            si[axis] = rdim(1, 40);
            in[i] = rqtype(dt, rank, si);
        }
        mera_attr at[4];
        int na = 0;
        at[na++] = integer("axis", rnd() % 2 ? axis : axis - rank);
        at[na++] = str("torch_memory_format", rmemfmt());
        at[na++] = flt("out_scale", rscale());
        at[na++] = integer("out_zero_point", dt == MERA_DTYPE_UINT8 ? rint_in(0, 255) : rint_in(-128, 127));
        op_case c;
        if (!case_build(&c, MERA_OP_CONCAT, in, n_in, at, na)) {
            CHECK(0);
            continue;
        }
        check_tiles(&c, "concat");
        case_free(&c);
    }
}

static void test_pools(void)
{
    for (int iter = 0; iter < 300; iter++) {
        int kind = iter % 3; /* max, avg, adaptive */
        mera_dtype dt = rdtype();
        int64_t s[4] = {1, rdim(1, 14), rdim(1, 14), rdim(1, 70)};
        if (rnd() % 8 == 0)
            s[1] = s[2] = 1;
        mera_type in = rqtype(dt, 4, s);
        mera_attr at[10];
        int na = 0;
        int64_t k[2], st[2], pad[4], os[2];
        at[na++] = str("layout", "NHWC");
        if (kind < 2) {
            k[0] = rint_in(1, s[1] < 3 ? s[1] : 3);
            k[1] = rint_in(1, s[2] < 3 ? s[2] : 3);
            st[0] = rint_in(1, 2);
            st[1] = rint_in(1, 2);
            pad[0] = rint_in(0, k[0] / 2), pad[2] = rint_in(0, k[0] / 2);
            pad[1] = rint_in(0, k[1] / 2), pad[3] = rint_in(0, k[1] / 2);
            at[na++] = ints("kernel", 2, k);
            at[na++] = ints("strides", 2, st);
            at[na++] = ints("padding", 4, pad);
            at[na++] = integer("ceil_mode", rnd() % 2);
        }
        if (kind == 1) {
            at[na++] = integer("count_include_pad", rnd() % 2);
            if (rnd() % 4 == 0)
                at[na++] = integer("divisor_override", rint_in(1, 9));
        }
        if (kind == 2) {
            os[0] = rint_in(1, s[1]);
            os[1] = rint_in(1, s[2]);
            at[na++] = ints("output_size", 2, os);
        }
        if (kind > 0) {
            at[na++] = str("torch_memory_format", rmemfmt());
            if (rnd() % 3) {
                at[na++] = flt("out_scale", rscale());
                at[na++] = integer("out_zero_point", dt == MERA_DTYPE_UINT8 ? rint_in(0, 255) : rint_in(-128, 127));
            }
        }
        op_case c;
        int op = kind == 0 ? MERA_OP_MAX_POOL2D : kind == 1 ? MERA_OP_AVG_POOL2D : MERA_OP_ADAPTIVE_AVG_POOL2D;
        if (!case_build(&c, op, &in, 1, at, na)) {
            CHECK(0);
            continue;
        }
        check_tiles(&c, kind == 0 ? "max_pool2d" : kind == 1 ? "avg_pool2d" : "adaptive_avg_pool2d");
        case_free(&c);
    }
}

static void test_mean(void)
{
    for (int iter = 0; iter < 150; iter++) {
        mera_dtype dt = rdtype();
        int64_t s[4] = {rnd() % 6 ? 1 : 2, rdim(1, 12), rdim(1, 12), rdim(1, 100)};
        if (rnd() % 8 == 0)
            s[1] = s[2] = 1;
        mera_type in = rqtype(dt, 4, s);
        int64_t axes[2] = {1, 2};
        if (rnd() % 5 == 0)
            axes[0] = -3, axes[1] = -2;
        mera_attr at[6];
        int na = 0;
        at[na++] = ints("axes", rnd() % 8 ? 2 : 1, axes);
        at[na++] = integer("keepdims", rnd() % 2);
        at[na++] = str("torch_memory_format", rmemfmt());
        if (rnd() % 3) {
            at[na++] = flt("out_scale", rscale());
            at[na++] = integer("out_zero_point", dt == MERA_DTYPE_UINT8 ? rint_in(0, 255) : rint_in(-128, 127));
        }
        op_case c;
        if (!case_build(&c, MERA_OP_MEAN, &in, 1, at, na)) {
            CHECK(0);
            continue;
        }
        check_tiles(&c, "mean");
        case_free(&c);
    }
}

static void test_upsample(void)
{
    for (int iter = 0; iter < 150; iter++) {
        mera_dtype dt = rdtype();
        int64_t s[4] = {1, rdim(1, 9), rdim(1, 9), rdim(1, 70)};
        if (rnd() % 8 == 0)
            s[1] = s[2] = 1;
        mera_type in = rqtype(dt, 4, s);
        mera_attr at[8];
        int na = 0;
        int64_t size[2] = {rint_in(1, 20), rint_in(1, 20)};
        double sc[2] = {(double)rint_in(5, 30) / 10, (double)rint_in(5, 30) / 10};
        int bil = rnd() % 3 != 0;
        at[na++] = str("layout", "NHWC");
        at[na++] = str("method", bil ? "bilinear" : "nearest");
        if (rnd() % 2 && s[1] * sc[0] >= 1 && s[2] * sc[1] >= 1)
            at[na++] = floats("scales", 2, sc);
        else
            at[na++] = ints("size", 2, size);
        if (bil)
            at[na++] = integer("align_corners", rnd() % 2);
        at[na++] = str("torch_memory_format", rmemfmt());
        if (rnd() % 4 == 0) { /* parameters kept, as PyTorch does, most of the time */
            at[na++] = flt("out_scale", rscale());
            at[na++] = integer("out_zero_point", dt == MERA_DTYPE_UINT8 ? rint_in(0, 255) : rint_in(-128, 127));
        }
        op_case c;
        if (!case_build(&c, MERA_OP_UPSAMPLE, &in, 1, at, na)) {
            CHECK(0);
            continue;
        }
        check_tiles(&c, "upsample");
        case_free(&c);
    }
}

/* ---- depthwise saturation ---------------------------------------------- */

/* A uint8 depthwise 3x3 conv, stride 1, pad 1, groups = C (a multiple of
 * 8): fbgemm's depthwise fast path, where pairs of taps saturate. Inputs
 * near 255 and weights near +-127 of one sign make the pairs overflow
 * int16. Cut into row tiles with the padding materialised (pad value =
 * input zero point) and depthwise_saturate=yes, the tiles give the whole
 * layer's bytes; left at auto (which a padding-free tile reads as no),
 * they do not. The fast kernel agrees with ref under yes and no. */
typedef struct {
    mera_graph *g;
    const mera_node *node;
    const mera_type *xt, *wt, *bt, *yt;
} conv_case;

static int conv_build(conv_case *c, const mera_type *x, const mera_type *w, const mera_type *b, const float *bias,
                      const int8_t *wdata, int64_t pad, const char *sat)
{
    mera_error err;
    memset(c, 0, sizeof *c);
    c->g = mera_graph_new("dw");
    int vx = mera_graph_add_input(c->g, "x", x, &err);
    int vw = mera_graph_add_const(c->g, "w", w, wdata, 1, &err);
    int vb = mera_graph_add_const(c->g, "b", b, bias, 1, &err);
    int64_t pads[4] = {pad, pad, pad, pad};
    int64_t groups = x->shape[3];
    mera_attr at[7] = {ints("padding", 4, pads), integer("groups", groups), str("layout", "NHWC"),
                       flt("out_scale", 0.5), integer("out_zero_point", 7), str("depthwise_saturate", sat),
                       str("kernel_layout", "OHWI")};
    int ins[3] = {vx, vw, vb}, out[4];
    int k = mera_graph_add_node(c->g, MERA_OP_CONV2D, "dw", ins, 3, at, 7, NULL, out, 4, &err);
    if (k < 0) {
        fprintf(stderr, "conv: %s\n", err.msg);
        return 0;
    }
    c->node = mera_graph_node(c->g, k);
    c->xt = &mera_graph_value(c->g, vx)->type;
    c->wt = &mera_graph_value(c->g, vw)->type;
    c->bt = &mera_graph_value(c->g, vb)->type;
    c->yt = &mera_graph_value(c->g, out[0])->type;
    return 1;
}

static int conv_run(const conv_case *c, const uint8_t *x, const int8_t *w, const float *b, uint8_t *y, int fast)
{
    mera_kernel_args a;
    memset(&a, 0, sizeof a);
    a.node = c->node;
    a.n_inputs = 3;
    a.in_types[0] = c->xt;
    a.in_types[1] = c->wt;
    a.in_types[2] = c->bt;
    a.in[0] = x;
    a.in[1] = w;
    a.in[2] = b;
    a.n_outputs = 1;
    a.out_types[0] = c->yt;
    a.out[0] = y;
    mera_error err;
    mera_status st;
    if (fast) {
        mera_kernel k = mera_kernel_select(MERA_OP_CONV2D, MERA_NUMERICS_QUANT, MERA_ROUNDING_DEFAULT);
        void *state = NULL;
        st = k.prepare ? k.prepare(&a, &state, &err) : MERA_OK;
        a.state = state;
        if (!st)
            st = k.run(&a, &err);
        if (state && k.release)
            k.release(state);
    } else {
        st = mera_kernel_ref(MERA_OP_CONV2D, MERA_NUMERICS_QUANT)(&a, &err);
    }
    if (st)
        fprintf(stderr, "conv run: %s\n", err.msg);
    return st == MERA_OK;
}

static void test_depthwise_saturate(void)
{
    for (int iter = 0; iter < 12; iter++) {
        int64_t C = 8 * rint_in(1, 4), H = rint_in(3, 12), W = rint_in(2, 11);
        int32_t zx = (int32_t)rint_in(0, 40), zw = 0;
        int64_t xs[4] = {1, H, W, C}, ws[4] = {C, 3, 3, 1};
        mera_type xt = qtype(MERA_DTYPE_UINT8, 4, xs, 0.05, zx);
        mera_type wt = qtype(MERA_DTYPE_INT8, 4, ws, 0.01, zw);
        wt.layout = MERA_LAYOUT_ANY;
        mera_type bt;
        memset(&bt, 0, sizeof bt);
        bt.dtype = MERA_DTYPE_FLOAT32;
        bt.rank = 1;
        bt.shape[0] = C;
        uint8_t *x = malloc((size_t)(H * W * C));
        int8_t *w = malloc((size_t)(C * 9));
        float *b = malloc((size_t)C * sizeof *b);
        for (int64_t i = 0; i < H * W * C; i++)
            x[i] = (uint8_t)(rnd() % 4 ? 230 + rnd() % 26 : rnd());
        for (int64_t o = 0; o < C; o++) {
            int sign = rnd() % 2 ? 1 : -1;
            b[o] = (float)((int)(rnd() % 200) - 100);
            for (int t = 0; t < 9; t++)
                w[o * 9 + t] = (int8_t)(rnd() % 5 ? sign * (int)(100 + rnd() % 28) : (int)(rnd() % 256) - 128);
        }
        conv_case whole;
        if (!conv_build(&whole, &xt, &wt, &bt, b, w, 1, "auto")) {
            CHECK(0);
            continue;
        }
        CHECK(mera_conv_depthwise_saturates(whole.node, whole.xt, whole.wt) == 1);
        uint8_t *yw = malloc((size_t)(H * W * C)), *yno = malloc((size_t)(H * W * C));
        CHECK(conv_run(&whole, x, w, b, yw, 0));
        uint8_t *yf = malloc((size_t)(H * W * C));
        CHECK(conv_run(&whole, x, w, b, yf, 1));
        CHECK(memcmp(yf, yw, (size_t)(H * W * C)) == 0);
        /* the whole layer with "no": exact sums, which these values make differ */
        conv_case wno;
        CHECK(conv_build(&wno, &xt, &wt, &bt, b, w, 1, "no"));
        CHECK(mera_conv_depthwise_saturates(wno.node, wno.xt, wno.wt) == 0);
        CHECK(conv_run(&wno, x, w, b, yno, 0));
        CHECK(memcmp(yno, yw, (size_t)(H * W * C)) != 0);
        CHECK(conv_run(&wno, x, w, b, yf, 1));
        CHECK(memcmp(yf, yno, (size_t)(H * W * C)) == 0);
        /* row tiles, padding materialised */
        int64_t cuts[64];
        int nt = random_cuts(H, 1, cuts);
        int auto_differs = 0;
        for (int t = 0; t < nt; t++) {
            int64_t r0 = cuts[t], r1 = cuts[t + 1], th = r1 - r0 + 2, tw = W + 2;
            int64_t txs[4] = {1, th, tw, C};
            mera_type txt = qtype(MERA_DTYPE_UINT8, 4, txs, 0.05, zx);
            uint8_t *tx = malloc((size_t)(th * tw * C));
            for (int64_t i = 0; i < th; i++)
                for (int64_t j = 0; j < tw; j++)
                    for (int64_t ch = 0; ch < C; ch++) {
                        int64_t ih = r0 - 1 + i, iw = j - 1;
                        tx[(i * tw + j) * C + ch] =
                            ih < 0 || ih >= H || iw < 0 || iw >= W ? (uint8_t)zx : x[(ih * W + iw) * C + ch];
                    }
            int64_t n = (r1 - r0) * W * C;
            uint8_t *got = malloc((size_t)n), *gotf = malloc((size_t)n);
            const char *modes[3] = {"yes", "no", "auto"};
            for (int m = 0; m < 3; m++) {
                conv_case tc;
                if (!conv_build(&tc, &txt, &wt, &bt, b, w, 0, modes[m])) {
                    CHECK(0);
                    continue;
                }
                CHECK(tc.yt->shape[1] == r1 - r0 && tc.yt->shape[2] == W);
                CHECK(conv_run(&tc, tx, w, b, got, 0));
                CHECK(conv_run(&tc, tx, w, b, gotf, 1));
                CHECK(memcmp(got, gotf, (size_t)n) == 0); /* fast == ref under every mode */
                const uint8_t *want = (m == 1 ? yno : yw) + r0 * W * C;
                if (m < 2)
                    CHECK(memcmp(got, want, (size_t)n) == 0);
                else
                    auto_differs |= memcmp(got, want, (size_t)n) != 0;
                mera_graph_free(tc.g);
            }
            free(tx);
            free(got);
            free(gotf);
        }
        CHECK(auto_differs); /* the attribute is needed: a tile alone does not saturate */
        /* one channel of the layer as its own conv (groups 1): yes still pairs taps */
        {
            int64_t x1s[4] = {1, H, W, 1}, w1s[4] = {1, 3, 3, 1};
            mera_type x1 = qtype(MERA_DTYPE_UINT8, 4, x1s, 0.05, zx);
            mera_type w1 = qtype(MERA_DTYPE_INT8, 4, w1s, 0.01, zw);
            mera_type b1;
            memset(&b1, 0, sizeof b1);
            b1.dtype = MERA_DTYPE_FLOAT32;
            b1.rank = 1;
            b1.shape[0] = 1;
            w1.layout = MERA_LAYOUT_ANY;
            int64_t ch = rint_in(0, C - 1);
            uint8_t *x1d = malloc((size_t)(H * W)), *y1 = malloc((size_t)(H * W)), *y1f = malloc((size_t)(H * W));
            for (int64_t i = 0; i < H * W; i++)
                x1d[i] = x[i * C + ch];
            conv_case oc;
            if (conv_build(&oc, &x1, &w1, &b1, b + ch, w + ch * 9, 1, "yes")) {
                CHECK(conv_run(&oc, x1d, w + ch * 9, b + ch, y1, 0));
                CHECK(conv_run(&oc, x1d, w + ch * 9, b + ch, y1f, 1));
                CHECK(memcmp(y1, y1f, (size_t)(H * W)) == 0);
                int same = 1;
                for (int64_t i = 0; i < H * W; i++)
                    same &= y1[i] == yw[i * C + ch];
                CHECK(same);
                mera_graph_free(oc.g);
            } else {
                CHECK(0);
            }
            free(x1d);
            free(y1);
            free(y1f);
        }
        mera_graph_free(wno.g);
        mera_graph_free(whole.g);
        free(x);
        free(w);
        free(b);
        free(yw);
        free(yno);
        free(yf);
    }
}

/* yes on a non-depthwise conv, or on int8 activations, is ignored */
static void test_saturate_rule(void)
{
    mera_error err;
    mera_graph *g = mera_graph_new("r");
    int64_t xs[4] = {1, 6, 6, 16}, ws[4] = {16, 3, 3, 2}, w1[4] = {16, 3, 3, 1};
    mera_type x = qtype(MERA_DTYPE_UINT8, 4, xs, 0.1, 3), xi = qtype(MERA_DTYPE_INT8, 4, xs, 0.1, 3);
    mera_type w = qtype(MERA_DTYPE_INT8, 4, ws, 0.1, 0), wd = qtype(MERA_DTYPE_INT8, 4, w1, 0.1, 0);
    w.layout = wd.layout = MERA_LAYOUT_ANY;
    int vx = mera_graph_add_input(g, "x", &x, &err), vxi = mera_graph_add_input(g, "xi", &xi, &err);
    int vw = mera_graph_add_param(g, "w", &w, &err), vwd = mera_graph_add_param(g, "wd", &wd, &err);
    int64_t pad1[4] = {1, 1, 1, 1}, pad0[4] = {0, 0, 0, 0};
    struct {
        int x, w;
        int64_t groups;
        const int64_t *pad;
        const char *sat;
        int want;
    } cases[] = {
        {vx, vwd, 16, pad1, "auto", 1}, {vx, vwd, 16, pad0, "auto", 0}, {vx, vwd, 16, pad0, "yes", 1},
        {vx, vwd, 16, pad1, "no", 0},   {vx, vw, 8, pad1, "yes", 0},    {vxi, vwd, 16, pad1, "yes", 0},
        {vxi, vwd, 16, pad1, "auto", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mera_attr at[5] = {ints("padding", 4, cases[i].pad), integer("groups", cases[i].groups),
                           str("layout", "NHWC"), str("kernel_layout", "OHWI"),
                           str("depthwise_saturate", cases[i].sat)};
        int ins[2] = {cases[i].x, cases[i].w}, out[4];
        char name[16];
        snprintf(name, sizeof name, "c%zu", i);
        int k = mera_graph_add_node(g, MERA_OP_CONV2D, name, ins, 2, at, 5, NULL, out, 4, &err);
        CHECK(k >= 0);
        if (k < 0)
            continue;
        const mera_node *n = mera_graph_node(g, k);
        CHECK(mera_conv_depthwise_saturates(n, &mera_graph_value(g, ins[0])->type,
                                            &mera_graph_value(g, ins[1])->type) == cases[i].want);
    }
    /* an unknown choice is refused by the op table */
    mera_attr bad[2] = {integer("groups", 16), str("depthwise_saturate", "maybe")};
    int ins[2] = {vx, vwd}, out[4];
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "bad", ins, 2, bad, 2, NULL, out, 4, &err) < 0);
    mera_graph_free(g);
}

int main(void)
{
    test_elementwise();
    test_concat();
    test_pools();
    test_mean();
    test_upsample();
    test_depthwise_saturate();
    test_saturate_rule();
    printf("split: %d cases split (%d tiles), %d cases NONE\n", cases_split, tiles_run, cases_none);
    return test_summary();
}
