/* C unit tests of data movement on the DNA (csrc/sched/move.c): reshape,
 * flatten, transpose and slice as strided DMA, and concat, on random
 * shapes and platforms whose activation buffer is smaller than the
 * tensors (so tiles, edge tiles and outer loops are exercised). Every
 * graph is scheduled, loaded by the DNA machine (which runs the timing
 * model and its hazard check, and refuses a program that fails it) and
 * run; its outputs must be InterpreterHw's bytes. Also: the timing
 * model's strided-DMA formula, and the partition report's reasons where a
 * move stays on the host. Built and run by tests/test_c_core.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/platform.h"
#include "backends/interp.h"
#include "ir/ir.h"
#include "isa/isa.h"
#include "sched/sched.h"
#include "sim/sim.h"
#include "sim/timing.h"
#include "testutil.h"

/* ---- random numbers (xorshift, deterministic) ----------------------------- */

/* testutil.h's xorshift64 (default seed); the full 64-bit state, as this file always drew */
static int64_t rnd_in(int64_t lo, int64_t hi) /* [lo, hi] */
{
    return lo + (int64_t)(test_rng_next() % (uint64_t)(hi - lo + 1));
}

/* ---- one graph through the Simulator and InterpreterHw ------------------- */

static mera_platform small_platform(int act_kib)
{
    mera_platform p = *mera_platform_find("DNAF100L0003");
    p.act_buffer_kib = act_kib;
    return p;
}

static int checked_graphs, moves_on_dna, concats_on_dna;

/* Schedules g for pf, runs it on the DNA machine and on InterpreterHw
 * with random inputs, compares every output byte. Moves (reshape,
 * flatten, transpose, slice) must all be on the DNA. */
static void check_graph(const mera_graph *g, const mera_platform *pf, const char *what)
{
    mera_error err;
    int n_in = mera_graph_num_inputs(g), n_out = mera_graph_num_outputs(g);
    void *in[8], *ref[8], *got[8];
    CHECK(n_in <= 8 && n_out <= 8);
    for (int i = 0; i < n_in; i++) {
        size_t nb = mera_type_nbytes(&mera_graph_value(g, mera_graph_input(g, i))->type);
        uint8_t *b = malloc(nb);
        for (size_t k = 0; k < nb; k++)
            b[k] = (uint8_t)test_rng_next();
        in[i] = b;
    }
    for (int o = 0; o < n_out; o++) {
        size_t nb = mera_type_nbytes(&mera_graph_value(g, mera_graph_output(g, o))->type);
        ref[o] = calloc(nb, 1);
        got[o] = malloc(nb);
        memset(got[o], 0xA5, nb);
    }
    mera_interp *it = mera_interp_compile(g, MERA_INTERP_HW, NULL, &err);
    CHECK(it != NULL);
    if (it) {
        CHECK(mera_interp_run(it, (const void *const *)in, ref, &err) == MERA_OK);
        mera_interp_free(it);
    }
    mera_partition_report *rep = NULL;
    dna_program *prog = mera_schedule(g, NULL, pf, NULL, &rep, &err);
    CHECK(prog != NULL);
    if (!prog) {
        fprintf(stderr, "%s: schedule failed: %s\n", what, err.msg);
        goto out;
    }
    int any_dna = 0;
    for (int n = 0; n < rep->n; n++) {
        const mera_node *node = mera_graph_node(g, rep->entries[n].node);
        any_dna |= rep->entries[n].on_dna;
        int move = node->op == MERA_OP_RESHAPE || node->op == MERA_OP_FLATTEN || node->op == MERA_OP_TRANSPOSE ||
                   node->op == MERA_OP_SLICE;
        if (move) {
            CHECK(rep->entries[n].on_dna);
            if (!rep->entries[n].on_dna)
                fprintf(stderr, "%s: %s on the host: %s\n", what, node->name, rep->entries[n].reason);
            moves_on_dna += rep->entries[n].on_dna;
        }
        if (node->op == MERA_OP_CONCAT)
            concats_on_dna += rep->entries[n].on_dna;
    }
    dna_machine *m = dna_machine_new(g, prog, pf, NULL, &err); /* timing model + hazard check */
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "%s: load failed: %s\n", what, err.msg);
    } else {
        CHECK(dna_machine_run(m, (const void *const *)in, got, &err) == MERA_OK);
        for (int o = 0; o < n_out; o++) {
            size_t nb = mera_type_nbytes(&mera_graph_value(g, mera_graph_output(g, o))->type);
            int same = memcmp(ref[o], got[o], nb) == 0;
            CHECK(same);
            if (!same)
                fprintf(stderr, "%s: output %d differs from InterpreterHw\n", what, o);
        }
        CHECK((dna_machine_timing(m)->device_cycles > 0) == any_dna);
        dna_machine_free(m);
    }
    /* The serialized program reads back (strided boxes are ordinary v1 DMA). */
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK(dna_program_serialize(prog, &bytes, &len, &err) == MERA_OK);
    dna_program *back = dna_program_deserialize(bytes, len, mera_graph_num_nodes(g), mera_graph_num_values(g), &err);
    CHECK(back != NULL && back->n_insns == prog->n_insns);
    dna_program_free(back);
    free(bytes);
    dna_program_free(prog);
    checked_graphs++;
out:
    mera_partition_report_free(rep);
    for (int i = 0; i < n_in; i++)
        free(in[i]);
    for (int o = 0; o < n_out; o++) {
        free(ref[o]);
        free(got[o]);
    }
}

static mera_type qt(int rank, const int64_t *shape, int int8)
{
    return qtensor(int8 ? MERA_DTYPE_INT8 : MERA_DTYPE_UINT8, rank, shape, MERA_LAYOUT_ANY, 0.05, int8 ? -3 : 17);
}

static int add1(mera_graph *g, int op, const char *name, int in, const mera_attr *a, int na)
{
    mera_error err;
    int out[4];
    int n = mera_graph_add_node(g, op, name, &in, 1, a, na, NULL, out, 4, &err);
    CHECK(n >= 0);
    if (n < 0) {
        fprintf(stderr, "add %s: %s\n", name, err.msg);
        return -1;
    }
    return out[0];
}

static int add_transpose(mera_graph *g, const char *name, int in, int rank, const int64_t *perm)
{
    mera_attr a[] = {ints("axes", rank, perm)};
    return add1(g, MERA_OP_TRANSPOSE, name, in, a, 1);
}

static int add_slice(mera_graph *g, const char *name, int in, int64_t axis, int64_t b, int64_t e)
{
    mera_attr a[] = {integer("axis", axis), integer("begin", b), integer("end", e)};
    return add1(g, MERA_OP_SLICE, name, in, a, 3);
}

static int add_reshape(mera_graph *g, const char *name, int in, int rank, const int64_t *shape)
{
    mera_attr a[] = {ints("shape", rank, shape)};
    return add1(g, MERA_OP_RESHAPE, name, in, a, 1);
}

static void finish(mera_graph *g, const int *outs, int n)
{
    mera_error err;
    CHECK(mera_graph_set_outputs(g, outs, n, &err) == MERA_OK);
}

/* ---- transposes: every permutation of rank 3, 4 and 5, leading 1s ------- */

static int next_perm(int64_t *p, int n) /* lexicographic; 0 after the last */
{
    int i = n - 2;
    while (i >= 0 && p[i] >= p[i + 1])
        i--;
    if (i < 0)
        return 0;
    int j = n - 1;
    while (p[j] <= p[i])
        j--;
    int64_t t = p[i];
    p[i] = p[j];
    p[j] = t;
    for (int a = i + 1, b = n - 1; a < b; a++, b--) {
        t = p[a];
        p[a] = p[b];
        p[b] = t;
    }
    return 1;
}

static void test_transposes(void)
{
    for (int rank = 3; rank <= 5; rank++) {
        int64_t perm[6];
        for (int k = 0; k < rank; k++)
            perm[k] = k;
        int count = 0;
        do {
            int64_t shape[6];
            int lead = (int)rnd_in(1, rank - 2); /* leading 1s */
            for (int k = 0; k < rank; k++)
                shape[k] = k < lead ? 1 : rnd_in(2, rank == 5 ? 9 : 24);
            int act_kib = (int)rnd_in(1, 3);
            mera_platform pf = small_platform(act_kib);
            mera_graph *g = mera_graph_new("transpose");
            mera_error err;
            mera_type t = qt(rank, shape, (int)(test_rng_next() & 1));
            int x = mera_graph_add_input(g, "x", &t, &err);
            int y = add_transpose(g, "t", x, rank, perm);
            finish(g, &y, 1);
            char what[96];
            snprintf(what, sizeof what, "transpose rank %d perm #%d, ACT %d KiB", rank, count, act_kib);
            check_graph(g, &pf, what);
            mera_graph_free(g);
            count++;
        } while (next_perm(perm, rank));
        CHECK(count == (rank == 3 ? 6 : rank == 4 ? 24 : 120));
    }
}

/* A rank-6 transpose with batch > 1 and no two dimensions that stay
 * neighbours: more dimensions than a DMA box has loops. */
static void test_transpose_rank6(void)
{
    int64_t shape[6] = {2, 3, 4, 5, 3, 2}, perm[6] = {5, 3, 1, 4, 0, 2};
    mera_platform pf = small_platform(1);
    mera_graph *g = mera_graph_new("transpose6");
    mera_error err;
    mera_type t = qt(6, shape, 0);
    int x = mera_graph_add_input(g, "x", &t, &err);
    int y = add_transpose(g, "t", x, 6, perm);
    finish(g, &y, 1);
    check_graph(g, &pf, "rank-6 transpose");
    mera_graph_free(g);
}

/* ---- slices: any axis, random ranges, rank 1..6, any batch --------------- */

static void test_slices(void)
{
    for (int i = 0; i < 120; i++) {
        int rank = (int)rnd_in(1, 6);
        int64_t shape[6], numel = 1;
        for (int k = 0; k < rank; k++) {
            shape[k] = rnd_in(1, rank <= 2 ? 3000 : rank <= 4 ? 20 : 7);
            numel *= shape[k];
        }
        int64_t axis = rnd_in(0, rank - 1);
        int64_t b = rnd_in(0, shape[axis] - 1), e = rnd_in(b + 1, shape[axis]);
        mera_platform pf = small_platform((int)rnd_in(1, 4));
        mera_graph *g = mera_graph_new("slice");
        mera_error err;
        mera_type t = qt(rank, shape, (int)(test_rng_next() & 1));
        int x = mera_graph_add_input(g, "x", &t, &err);
        /* a negative axis half the time */
        int y = add_slice(g, "s", x, test_rng_next() & 1 ? axis : axis - rank, b, e);
        finish(g, &y, 1);
        char what[96];
        snprintf(what, sizeof what, "slice #%d (rank %d, %lld bytes, axis %lld [%lld,%lld))", i, rank,
                 (long long)numel, (long long)axis, (long long)b, (long long)e);
        check_graph(g, &pf, what);
        mera_graph_free(g);
    }
}

/* ---- reshapes and flattens, chained with transposes and slices ----------- */

/* A random factorization of n into rank factors. */
static int factorize(int64_t n, int64_t *shape, int max_rank)
{
    int r = 0;
    while (n > 1 && r < max_rank - 1) {
        int64_t f = 0;
        for (int64_t d = rnd_in(2, 9); d >= 2; d--)
            if (n % d == 0) {
                f = d;
                break;
            }
        if (!f)
            break;
        shape[r++] = f;
        n /= f;
    }
    shape[r++] = n;
    return r;
}

static void test_reshape_chains(void)
{
    for (int i = 0; i < 60; i++) {
        int64_t shape[6];
        int rank = (int)rnd_in(2, 5);
        for (int k = 0; k < rank; k++)
            shape[k] = rnd_in(1, 12);
        int64_t numel = 1;
        for (int k = 0; k < rank; k++)
            numel *= shape[k];
        mera_platform pf = small_platform((int)rnd_in(1, 2));
        mera_graph *g = mera_graph_new("chain");
        mera_error err;
        mera_type t = qt(rank, shape, (int)(test_rng_next() & 1));
        int v = mera_graph_add_input(g, "x", &t, &err);
        int outs[4], n_outs = 0;
        char name[32];
        for (int step = 0; step < 4 && v >= 0; step++) {
            const mera_type *ct = &mera_graph_value(g, v)->type;
            snprintf(name, sizeof name, "n%d", step);
            switch (test_rng_next() % 4) {
            case 0: { /* reshape to a new factorization */
                int64_t ns[6];
                int nr = factorize(mera_type_numel(ct), ns, 6);
                v = add_reshape(g, name, v, nr, ns);
                break;
            }
            case 1: { /* flatten a random range */
                int64_t s0 = rnd_in(0, ct->rank - 1), e0 = rnd_in(s0, ct->rank - 1);
                mera_attr a[] = {integer("start_axis", s0), integer("end_axis", e0)};
                v = add1(g, MERA_OP_FLATTEN, name, v, a, 2);
                break;
            }
            case 2: { /* a random permutation */
                int64_t perm[6];
                for (int k = 0; k < ct->rank; k++)
                    perm[k] = k;
                for (int k = ct->rank - 1; k > 0; k--) {
                    int j = (int)rnd_in(0, k);
                    int64_t tmp = perm[k];
                    perm[k] = perm[j];
                    perm[j] = tmp;
                }
                v = add_transpose(g, name, v, ct->rank, perm);
                break;
            }
            default: { /* a slice; the rest of the tensor is an output too */
                int64_t axis = rnd_in(0, ct->rank - 1);
                if (ct->shape[axis] < 2) {
                    int64_t ns[6];
                    int nr = factorize(mera_type_numel(ct), ns, 6);
                    v = add_reshape(g, name, v, nr, ns);
                    break;
                }
                int64_t cut = rnd_in(1, ct->shape[axis] - 1);
                char other[40];
                snprintf(other, sizeof other, "%s_rest", name);
                int rest = add_slice(g, other, v, axis, cut, ct->shape[axis]);
                if (rest >= 0 && n_outs < 3)
                    outs[n_outs++] = rest;
                v = add_slice(g, name, v, axis, 0, cut);
                break;
            }
            }
        }
        if (v < 0) {
            mera_graph_free(g);
            continue;
        }
        outs[n_outs++] = v;
        finish(g, outs, n_outs);
        char what[64];
        snprintf(what, sizeof what, "chain #%d (%lld bytes)", i, (long long)numel);
        check_graph(g, &pf, what);
        mera_graph_free(g);
    }
}

/* ---- concat: random NHWC inputs and axes, tensors larger than ACT -------- */

static void test_concats(void)
{
    for (int i = 0; i < 40; i++) {
        int64_t shape[4] = {1, rnd_in(1, 24), rnd_in(1, 24), rnd_in(1, 40)};
        int axis = (int)rnd_in(1, 3), n = (int)rnd_in(2, 4), int8 = (int)(test_rng_next() & 1);
        mera_platform pf = small_platform((int)rnd_in(2, 8));
        mera_graph *g = mera_graph_new("concat");
        mera_error err;
        int ins[4];
        for (int k = 0; k < n; k++) {
            int64_t s[4] = {shape[0], shape[1], shape[2], shape[3]};
            s[axis] = rnd_in(1, axis == 3 ? 40 : 24);
            mera_type t = qtensor(int8 ? MERA_DTYPE_INT8 : MERA_DTYPE_UINT8, 4, s, MERA_LAYOUT_NHWC,
                                  0.02 + 0.01 * (double)k, int8 ? (int32_t)k - 2 : 100 + 7 * k);
            char name[16];
            snprintf(name, sizeof name, "x%d", k);
            ins[k] = mera_graph_add_input(g, name, &t, &err);
        }
        mera_attr a[] = {integer("axis", axis), str("torch_memory_format", test_rng_next() & 1 ? "channels_last" : "contiguous"),
                         flt("out_scale", 0.03), integer("out_zero_point", int8 ? 1 : 110)};
        int out[4];
        int node = mera_graph_add_node(g, MERA_OP_CONCAT, "cat", ins, n, a, 4, NULL, out, 4, &err);
        CHECK(node >= 0);
        if (node >= 0) {
            finish(g, out, 1);
            char what[64];
            snprintf(what, sizeof what, "concat #%d (axis %d, %d inputs)", i, axis, n);
            check_graph(g, &pf, what);
        }
        mera_graph_free(g);
    }
}

/* ---- ShuffleNetV2's channel shuffle, as the PyTorch frontend imports it -- */

/* NHWC concat -> NCHW transpose -> reshape [1,g,C/g,H,W] -> transpose
 * [0,2,1,3,4] -> reshape [1,C,H,W] -> two channel slices -> each back to
 * NHWC -> concat (the next unit's channel split and join). Everything runs
 * on the DNA, in one segment. */
static void test_channel_shuffle(void)
{
    static const int64_t dims[][3] = {{28, 28, 58}, {14, 14, 116}, {7, 7, 232}, {5, 9, 12}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        int64_t h = dims[i][0], w = dims[i][1], c = dims[i][2];
        mera_platform pf = i == 3 ? small_platform(1) : *mera_platform_find("DNAF100L0003");
        mera_graph *g = mera_graph_new("shuffle");
        mera_error err;
        int64_t xs[4] = {1, h, w, c};
        mera_type t = qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_NHWC, 0.05, 0);
        int ins[2] = {mera_graph_add_input(g, "a", &t, &err), mera_graph_add_input(g, "b", &t, &err)};
        mera_attr ca[] = {integer("axis", 3), str("torch_memory_format", "channels_last"), flt("out_scale", 0.06),
                          integer("out_zero_point", 0)};
        int out[4];
        CHECK(mera_graph_add_node(g, MERA_OP_CONCAT, "cat", ins, 2, ca, 4, NULL, out, 4, &err) >= 0);
        int64_t to_nchw[4] = {0, 3, 1, 2}, to_nhwc[4] = {0, 2, 3, 1}, shuf[5] = {0, 2, 1, 3, 4};
        int64_t r5[5] = {1, 2, c, h, w}, r4[4] = {1, 2 * c, h, w};
        int v = add_transpose(g, "to_nchw", out[0], 4, to_nchw);
        v = add_reshape(g, "split_groups", v, 5, r5);
        v = add_transpose(g, "shuffle", v, 5, shuf);
        v = add_reshape(g, "join_groups", v, 4, r4);
        int lo = add_slice(g, "half0", v, 1, 0, c), hi = add_slice(g, "half1", v, 1, c, 2 * c);
        int l2 = add_transpose(g, "half0_nhwc", lo, 4, to_nhwc), h2 = add_transpose(g, "half1_nhwc", hi, 4, to_nhwc);
        int cat_in[2] = {l2, h2};
        mera_attr ca2[] = {integer("axis", 3), str("torch_memory_format", "contiguous"), flt("out_scale", 0.06),
                           integer("out_zero_point", 0)};
        CHECK(mera_graph_add_node(g, MERA_OP_CONCAT, "cat2", cat_in, 2, ca2, 4, NULL, out, 4, &err) >= 0);
        finish(g, out, 1);
        mera_partition_report *rep = NULL;
        dna_program *prog = mera_schedule(g, NULL, &pf, NULL, &rep, &err);
        CHECK(prog != NULL);
        if (prog) {
            int host = 0;
            for (int n = 0; n < rep->n; n++)
                host += !rep->entries[n].on_dna;
            CHECK(host == 0);
            CHECK(prog->n_segments == 1);
            dna_program_free(prog);
        }
        mera_partition_report_free(rep);
        char what[64];
        snprintf(what, sizeof what, "channel shuffle %lldx%lldx%lld", (long long)h, (long long)w, (long long)c);
        check_graph(g, &pf, what);
        mera_graph_free(g);
    }
}

/* ---- where a move stays on the host, and why ------------------------------ */

static const char *reason_of(const mera_graph *g, const mera_platform *pf, const char *node_name)
{
    static char buf[256];
    mera_error err;
    mera_partition_report *rep = NULL;
    dna_program *prog = mera_schedule(g, NULL, pf, NULL, &rep, &err);
    buf[0] = 0;
    if (prog && rep)
        for (int n = 0; n < rep->n; n++)
            if (strcmp(mera_graph_node(g, rep->entries[n].node)->name, node_name) == 0)
                snprintf(buf, sizeof buf, "%s%s", rep->entries[n].on_dna ? "DNA: " : "", rep->entries[n].reason);
    dna_program_free(prog);
    mera_partition_report_free(rep);
    return buf;
}

static void test_host_reasons(void)
{
    const mera_platform *pf = mera_platform_find("DNAF100L0003");
    mera_error err;
    /* float32: not moved by the DNA */
    {
        int64_t s[3] = {1, 4, 6}, perm[3] = {0, 2, 1};
        mera_graph *g = mera_graph_new("f32");
        mera_type t = tensor(MERA_DTYPE_FLOAT32, 3, s);
        int x = mera_graph_add_input(g, "x", &t, &err);
        int y = add_transpose(g, "t", x, 3, perm);
        finish(g, &y, 1);
        const char *r = reason_of(g, pf, "t");
        CHECK(strstr(r, "input 'x' is f32[1,4,6]") && strstr(r, "the DNA moves int8/uint8 tensors"));
        mera_graph_free(g);
    }
    /* a constant: runs once on the host */
    {
        int64_t s[2] = {3, 5}, perm[2] = {1, 0};
        static uint8_t data[15];
        mera_graph *g = mera_graph_new("const");
        mera_type t = qt(2, s, 0);
        int x = mera_graph_add_const(g, "k", &t, data, 0, &err);
        int y = add_transpose(g, "t", x, 2, perm);
        finish(g, &y, 1);
        CHECK(strstr(reason_of(g, pf, "t"), "transpose of a constant: runs once on the host") != NULL);
        mera_graph_free(g);
    }
    /* a rank-6 reversal of 16s: no dims merge on either side, so every
     * DMA box covers two of the six and the rest are 16^4 instructions */
    {
        int64_t s[6] = {16, 16, 16, 16, 16, 16}, perm[6] = {5, 4, 3, 2, 1, 0};
        mera_graph *g = mera_graph_new("huge");
        mera_type t = qt(6, s, 0);
        int x = mera_graph_add_input(g, "x", &t, &err);
        int y = add_transpose(g, "t", x, 6, perm);
        finish(g, &y, 1);
        const char *r = reason_of(g, pf, "t");
        CHECK(strstr(r, "transpose of u8[16,16,16,16,16,16]") && strstr(r, "needs more than 65536 DMA instructions"));
        mera_graph_free(g);
    }
    /* NHWC -> NCHW of a ShuffleNet activation: a 2-D transpose whose runs
     * are single bytes, done with long DRAM runs and a strided SRAM side
     * whose pitch is padded against bank conflicts */
    {
        int64_t s[4] = {1, 28, 28, 116}, perm[4] = {0, 3, 1, 2};
        mera_graph *g = mera_graph_new("nchw");
        mera_type t = qt(4, s, 0);
        int x = mera_graph_add_input(g, "x", &t, &err);
        int y = add_transpose(g, "t", x, 4, perm);
        finish(g, &y, 1);
        const char *r = reason_of(g, pf, "t");
        CHECK(strstr(r, "DNA: DMA move [116x784 from strides 1,116]") && strstr(r, "strided SRAM, padded pitch"));
        mera_graph_free(g);
    }
    /* the ShuffleNet shuffle's rank-5 transpose itself is on the DNA, with
     * runs of H*W bytes */
    {
        int64_t s[5] = {1, 2, 58, 28, 28}, perm[5] = {0, 2, 1, 3, 4};
        mera_graph *g = mera_graph_new("shuffle5");
        mera_type t = qt(5, s, 0);
        int x = mera_graph_add_input(g, "x", &t, &err);
        int y = add_transpose(g, "t", x, 5, perm);
        finish(g, &y, 1);
        const char *r = reason_of(g, pf, "t");
        CHECK(strstr(r, "DNA: DMA move [58x2x784 from strides 784,45472,1]") != NULL);
        const char *runs = strstr(r, "DRAM runs >= ");
        CHECK(runs && atoll(runs + strlen("DRAM runs >= ")) >= 784);
        mera_graph_free(g);
    }
}

/* ---- the timing model's strided DMA ---------------------------------------- */

static dna_dma box(int rows, int cols, int run, int64_t drs, int64_t dcs, uint32_t srs, uint32_t scs)
{
    dna_dma d;
    memset(&d, 0, sizeof d);
    d.rows = rows;
    d.cols = cols;
    d.run_bytes = run;
    d.dram_row_stride = drs;
    d.dram_col_stride = dcs;
    d.sram_row_stride = srs;
    d.sram_col_stride = scs;
    return d;
}

static void test_dma_timing(void)
{
    mera_platform p = *mera_platform_find("DNAF100L0003");
    p.dram_gbps = 23.0; /* 76.67 bytes per cycle; 64 banks; setup 64 */
    CHECK(p.vector_lanes == 64 && p.dma_setup_cycles == 64);
    int64_t bytes;
    /* A transposing LOAD of 100 pixels x 64 channels: DRAM one 6400-byte
     * burst (84 cycles); SRAM one byte per channel at stride 101, coprime
     * with 64: a beat per pixel (100). */
    dna_dma d = box(100, 64, 1, 64, 1, 1, 101);
    CHECK(dna_dma_cycles(&p, &d, &bytes) == 64 + 100 && bytes == 6400);
    /* stride 100 = 4 x 25: 16 distinct banks per beat, 4 beats per pixel */
    d.sram_col_stride = 100;
    CHECK(dna_dma_cycles(&p, &d, NULL) == 64 + 400);
    /* stride 128: every byte of a pixel in one bank, a beat per byte */
    d.sram_col_stride = 128;
    CHECK(dna_dma_cycles(&p, &d, NULL) == 64 + 6400);
    /* The same bytes gathered in DRAM instead (dense SRAM): 6400 runs of
     * one byte, each a 64-byte burst: 409600 / 76.67 = 5343 cycles. */
    d = box(64, 100, 1, 1, 64, 100, 1);
    CHECK(dna_dma_cycles(&p, &d, &bytes) == 64 + 5343 && bytes == 6400);
    /* Rows of 32 contiguous SRAM bytes at stride 48 collide (a beat per
     * row: 40); at stride 32 two rows share a beat (20), and then the
     * DRAM side (1280 contiguous bytes: 17) is not the limit either. */
    d = box(40, 1, 32, 32, 0, 48, 0);
    CHECK(dna_dma_cycles(&p, &d, NULL) == 64 + 40);
    d.sram_row_stride = 32; /* dense: SRAM costs nothing extra */
    CHECK(dna_dma_cycles(&p, &d, NULL) == 64 + 17);
    d.sram_row_stride = 96; /* 32-byte runs at 96: banks 0-31, 32-63, 0-31: two per beat */
    CHECK(dna_dma_cycles(&p, &d, NULL) == 64 + 20);
    /* Runs of 200 bytes at a scattered SRAM stride: 4 beats each. */
    d = box(1, 10, 200, 0, 200, 0, 300);
    CHECK(dna_dma_cycles(&p, &d, NULL) == 64 + 40);
}

int main(void)
{
    test_dma_timing();
    test_host_reasons();
    test_transposes();
    test_transpose_rank6();
    test_slices();
    test_reshape_chains();
    test_concats();
    test_channel_shuffle();
    printf("%d graphs simulated, %d moves and %d concats on the DNA\n", checked_graphs, moves_on_dna, concats_on_dna);
    CHECK(checked_graphs >= 150 + 1 + 120 + 60 + 40 + 4 - 5); /* a chain may end early on an unusable step */
    CHECK(concats_on_dna >= 20);
    return test_summary();
}
