/* C tests of passes/moves.c (mera_pass_collapse_moves): ShuffleNetV2's NHWC
 * channel shuffle (transpose -> reshape -> transpose -> reshape) becomes a
 * reshape, one transpose and a reshape; random chains of transposes and
 * reshapes give the same bytes on InterpreterHw before and after the pass,
 * never with more nodes or transposes; what the pass must leave alone is
 * left (a reshape that cuts a dimension at a size that does not divide it,
 * a chain whose end is a graph output, a link read twice).
 * Built and run by tests/test_c_core.py; prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/interp.h"
#include "ir/ir.h"
#include "passes/passes.h"
#include "testutil.h"

static int names;

static int add(mera_graph *g, int op, int x, const char *key, int n, const int64_t *v)
{
    mera_error err = {0};
    char name[32];
    snprintf(name, sizeof name, "m%d", names++);
    mera_attr a = ints(key, n, v);
    int out[MERA_MAX_NODE_OUTPUTS];
    if (mera_graph_add_node(g, op, name, &x, 1, &a, 1, NULL, out, MERA_MAX_NODE_OUTPUTS, &err) < 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return -1;
    }
    return out[0];
}

static int transpose(mera_graph *g, int x, int n, const int64_t *axes)
{
    return add(g, MERA_OP_TRANSPOSE, x, "axes", n, axes);
}

static int reshape(mera_graph *g, int x, int n, const int64_t *shape)
{
    return add(g, MERA_OP_RESHAPE, x, "shape", n, shape);
}

/* a relu after v, so that the chain's end is not the graph output */
static int relu(mera_graph *g, int v)
{
    mera_error err = {0};
    char name[32];
    snprintf(name, sizeof name, "r%d", names++);
    int out[MERA_MAX_NODE_OUTPUTS];
    if (mera_graph_add_node(g, MERA_OP_RELU, name, &v, 1, NULL, 0, NULL, out, MERA_MAX_NODE_OUTPUTS, &err) < 0)
        return -1;
    return out[0];
}

static int count(const mera_graph *g, int op)
{
    int c = 0;
    for (int n = 0; n < mera_graph_num_nodes(g); n++)
        c += mera_graph_node(g, n)->op == op;
    return c;
}

static size_t out_bytes(const mera_graph *g)
{
    size_t s = 0;
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        s += (size_t)mera_type_numel(&mera_graph_value(g, mera_graph_output(g, i))->type);
    return s;
}

/* Runs g (one uint8 input, any outputs) on InterpreterHw into out (the
 * outputs one after the other). */
static int run(const mera_graph *g, const uint8_t *x, uint8_t *out)
{
    mera_error err = {0};
    const void **pd = mera_bound_param_data(g);
    mera_interp *it = pd ? mera_interp_compile(g, MERA_INTERP_HW, pd, &err) : NULL;
    void *outs[8];
    size_t at = 0;
    for (int i = 0; i < mera_graph_num_outputs(g) && i < 8; i++) {
        outs[i] = out + at;
        at += (size_t)mera_type_numel(&mera_graph_value(g, mera_graph_output(g, i))->type);
    }
    const void *in[1] = {x};
    int ok = it && mera_interp_run(it, in, outs, &err) == MERA_OK;
    if (!ok)
        fprintf(stderr, "run: %s\n", err.msg);
    mera_interp_free(it);
    free(pd);
    return ok;
}

/* The pass on g: the same bytes, never more nodes or transposes. Returns
 * the new graph (the caller frees it) or NULL. */
static mera_graph *check_pass(mera_graph *g, const char *what)
{
    mera_error err = {0};
    mera_graph *h = mera_pass_collapse_moves(g, &err);
    CHECK(h != NULL);
    if (!h) {
        fprintf(stderr, "%s: %s\n", what, err.msg);
        return NULL;
    }
    const mera_type *xt = &mera_graph_value(g, mera_graph_input(g, 0))->type;
    size_t nx = (size_t)mera_type_numel(xt), ny = out_bytes(g);
    uint8_t *x = malloc(nx), *a = calloc(ny, 1), *b = calloc(ny, 1);
    for (size_t i = 0; i < nx; i++)
        x[i] = (uint8_t)rnd();
    CHECK(out_bytes(h) == ny);
    CHECK(run(g, x, a) && run(h, x, b));
    int same = memcmp(a, b, ny) == 0;
    CHECK(same);
    if (!same)
        fprintf(stderr, "%s: bytes differ after the pass\n", what);
    CHECK(mera_graph_num_nodes(h) <= mera_graph_num_nodes(g));
    CHECK(count(h, MERA_OP_TRANSPOSE) <= count(g, MERA_OP_TRANSPOSE));
    for (int i = 0; i < mera_graph_num_outputs(g); i++) {
        const mera_type *ta = &mera_graph_value(g, mera_graph_output(g, i))->type;
        const mera_type *tb = &mera_graph_value(h, mera_graph_output(h, i))->type;
        CHECK(ta->rank == tb->rank && ta->layout == tb->layout &&
              !memcmp(ta->shape, tb->shape, sizeof(int64_t) * (size_t)ta->rank));
    }
    free(x), free(a), free(b);
    return h;
}

static mera_graph *new_graph(int rank, const int64_t *shape, mera_layout layout, int *x)
{
    mera_error err = {0};
    mera_graph *g = mera_graph_new("moves");
    mera_type t = qtensor(MERA_DTYPE_UINT8, rank, shape, layout, 0.1, 3);
    *x = mera_graph_add_input(g, "x", &t, &err);
    return g;
}

static void finish(mera_graph *g, int v)
{
    mera_error err = {0};
    CHECK(v >= 0 && mera_graph_set_outputs(g, &v, 1, &err) == MERA_OK);
}

/* ShuffleNetV2's channel shuffle in NHWC, g groups, then a relu. */
static void test_shuffle(int64_t H, int64_t W, int64_t C, int64_t g_)
{
    const int64_t shape[4] = {1, H, W, C}, nchw[4] = {0, 3, 1, 2}, r5[5] = {1, g_, C / g_, H, W},
                  t5[5] = {0, 2, 1, 3, 4}, r4[4] = {1, -1, H, W};
    int x;
    mera_graph *g = new_graph(4, shape, MERA_LAYOUT_NHWC, &x);
    int v = transpose(g, x, 4, nchw);
    v = reshape(g, v, 5, r5);
    v = transpose(g, v, 5, t5);
    v = reshape(g, v, 4, r4);
    finish(g, relu(g, v));
    mera_graph *h = check_pass(g, "shuffle");
    if (h) {
        CHECK(mera_graph_num_nodes(h) == 4); /* reshape, transpose, reshape, relu */
        CHECK(count(h, MERA_OP_TRANSPOSE) == 1);
        const mera_attr *ax = mera_node_attr(mera_graph_node(h, 1), "axes");
        /* atoms (H*W, g, C/g) -> (C/g, g, H*W) */
        CHECK(ax && ax->count == 3 && ax->ints[0] == 2 && ax->ints[1] == 1 && ax->ints[2] == 0);
        const mera_type *rt = &mera_graph_value(h, mera_graph_node(h, 0)->outputs[0])->type;
        CHECK(rt->rank == 3 && rt->shape[0] == H * W && rt->shape[1] == g_ && rt->shape[2] == C / g_);
        mera_graph_free(h);
    }
    mera_graph_free(g);
}

/* transpose -> transpose is one transpose (or none); a reshape back to the
 * input's shape after a reshape is nothing */
static void test_simple(void)
{
    const int64_t shape[4] = {2, 3, 4, 5}, a1[4] = {0, 2, 3, 1}, a2[4] = {0, 3, 1, 2}, a3[4] = {3, 1, 0, 2};
    int x;
    mera_graph *g = new_graph(4, shape, MERA_LAYOUT_ANY, &x);
    finish(g, relu(g, transpose(g, transpose(g, x, 4, a1), 4, a3)));
    mera_graph *h = check_pass(g, "two transposes");
    if (h) {
        CHECK(mera_graph_num_nodes(h) == 2 && count(h, MERA_OP_TRANSPOSE) == 1);
        mera_graph_free(h);
    }
    mera_graph_free(g);

    g = new_graph(4, shape, MERA_LAYOUT_ANY, &x);
    finish(g, relu(g, transpose(g, transpose(g, x, 4, a1), 4, a2)));
    h = check_pass(g, "inverse transposes");
    if (h) {
        CHECK(mera_graph_num_nodes(h) == 1);
        mera_graph_free(h);
    }
    mera_graph_free(g);

    const int64_t r1[2] = {6, 20};
    g = new_graph(4, shape, MERA_LAYOUT_ANY, &x);
    finish(g, relu(g, reshape(g, reshape(g, x, 2, r1), 4, shape)));
    h = check_pass(g, "reshape back");
    if (h) {
        CHECK(mera_graph_num_nodes(h) == 1);
        mera_graph_free(h);
    }
    mera_graph_free(g);
}

/* chains the pass leaves as they are */
static void test_left_alone(void)
{
    /* [2,3] -> transpose -> [3,2] -> reshape [2,3] cuts the atom 3 at 2 */
    const int64_t s2[2] = {2, 3}, t2[2] = {1, 0}, s6[4] = {1, 2, 3, 4};
    int x;
    mera_graph *g = new_graph(2, s2, MERA_LAYOUT_ANY, &x);
    finish(g, relu(g, reshape(g, transpose(g, x, 2, t2), 2, s2)));
    mera_graph *h = check_pass(g, "indivisible");
    if (h) {
        CHECK(mera_graph_num_nodes(h) == 3);
        mera_graph_free(h);
    }
    mera_graph_free(g);

    /* the chain's end is the graph output */
    const int64_t a1[4] = {0, 2, 3, 1}, a2[4] = {0, 3, 1, 2}, a3[4] = {3, 1, 0, 2};
    g = new_graph(4, s6, MERA_LAYOUT_ANY, &x);
    finish(g, transpose(g, transpose(g, x, 4, a1), 4, a3));
    h = check_pass(g, "graph output");
    if (h) {
        CHECK(mera_graph_num_nodes(h) == 2);
        mera_graph_free(h);
    }
    mera_graph_free(g);

    /* a link read twice: each part is a chain of one */
    mera_error err = {0};
    g = new_graph(4, s6, MERA_LAYOUT_ANY, &x);
    int t = transpose(g, x, 4, a1);
    int outs[2] = {relu(g, transpose(g, t, 4, a3)), relu(g, t)};
    CHECK(mera_graph_set_outputs(g, outs, 2, &err) == MERA_OK);
    h = check_pass(g, "shared link");
    if (h) {
        CHECK(mera_graph_num_nodes(h) == 4);
        mera_graph_free(h);
    }
    mera_graph_free(g);

    /* a chain that is no move at all vanishes, but not where its end would take the input's layout tag */
    const int64_t s4[4] = {1, 8, 3, 5}, flat[2] = {15, 8}, nhwc[4] = {1, 3, 5, 8};
    for (int tagged = 0; tagged < 2; tagged++) {
        g = new_graph(4, s4, tagged ? MERA_LAYOUT_NCHW : MERA_LAYOUT_ANY, &x);
        int v = reshape(g, reshape(g, transpose(g, x, 4, a1), 2, flat), 4, nhwc);
        finish(g, relu(g, transpose(g, v, 4, a2)));
        h = check_pass(g, "layout tag");
        if (h) {
            CHECK(mera_graph_num_nodes(h) == (tagged ? 5 : 1));
            mera_graph_free(h);
        }
        mera_graph_free(g);
    }
}

/* random chains: transposes and reshapes that split or merge neighbours */
static void test_random(void)
{
    for (int iter = 0; iter < 300; iter++) {
        int rank = (int)rint_in(1, 5);
        int64_t shape[MERA_MAX_RANK];
        static const int64_t sizes[] = {1, 2, 3, 4, 6, 5};
        for (int i = 0; i < rank; i++)
            shape[i] = sizes[rint_in(0, 5)];
        int x;
        mera_graph *g = new_graph(rank, shape, MERA_LAYOUT_ANY, &x);
        int v = x, r = rank;
        int64_t cur[MERA_MAX_RANK];
        memcpy(cur, shape, sizeof cur);
        int links = (int)rint_in(2, 6);
        for (int l = 0; l < links && v >= 0; l++) {
            if (rnd() % 2) {
                int64_t axes[MERA_MAX_RANK], nc[MERA_MAX_RANK];
                for (int i = 0; i < r; i++)
                    axes[i] = i;
                for (int i = r - 1; i > 0; i--) {
                    int j = (int)rint_in(0, i);
                    int64_t t = axes[i];
                    axes[i] = axes[j];
                    axes[j] = t;
                }
                for (int i = 0; i < r; i++)
                    nc[i] = cur[axes[i]];
                memcpy(cur, nc, sizeof nc);
                v = transpose(g, v, r, axes);
            } else {
                /* split a dim into two factors, merge two neighbours, or both; sometimes a 1 */
                int64_t nc[MERA_MAX_RANK];
                int nr = 0;
                for (int i = 0; i < r; i++) {
                    int64_t d = cur[i];
                    int64_t f = d % 2 == 0 && d > 2 ? 2 : d % 3 == 0 && d > 3 ? 3 : 0;
                    if (f && nr + 2 <= MERA_MAX_RANK && rnd() % 2) {
                        nc[nr++] = f;
                        nc[nr++] = d / f;
                    } else if (i + 1 < r && rnd() % 3 == 0) {
                        nc[nr++] = d * cur[i + 1];
                        i++;
                    } else if (nr < MERA_MAX_RANK) {
                        nc[nr++] = d;
                    } else {
                        nc[nr - 1] *= d;
                    }
                }
                if (nr < MERA_MAX_RANK && rnd() % 4 == 0) {
                    memmove(&nc[1], nc, sizeof(int64_t) * (size_t)nr);
                    nc[0] = 1;
                    nr++;
                }
                memcpy(cur, nc, sizeof nc);
                r = nr;
                v = reshape(g, v, r, cur);
            }
        }
        finish(g, relu(g, v));
        char what[32];
        snprintf(what, sizeof what, "random chain %d", iter);
        mera_graph *h = check_pass(g, what);
        mera_graph_free(h);
        mera_graph_free(g);
    }
}

int main(void)
{
    test_shuffle(5, 3, 8, 2);
    test_shuffle(4, 4, 12, 3);
    test_shuffle(2, 3, 116, 2);
    test_simple();
    test_left_alone();
    test_random();
    return test_summary();
}
