/* A run reads no environment: the kernels resolve what the environment
 * says (MERA_REFERENCE_KERNELS, MERA_CPU_FEATURES_MASK through
 * mera_cpu_features_get) when they are selected or prepared, not per run.
 * This file defines getenv itself, which the C core linked into this
 * executable then calls, and counts the calls a run makes: none, for a
 * graph of the fast kernels that probed the CPU per run before (the table
 * activations, concat, upsample) and some others, on one thread (a thread
 * count of 0 would ask MERA_NUM_THREADS per parallel loop, by design: the
 * tests change it between runs). The bytes match the reference kernels'.
 * Built and run by tests/test_c_core.py; prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/interp.h"
#include "ir/ir.h"
#include "testutil.h"

extern char **environ;

static int getenv_calls;

char *getenv(const char *name)
{
    __atomic_add_fetch(&getenv_calls, 1, __ATOMIC_RELAXED);
    size_t n = strlen(name);
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

#define H 9
#define W 7
#define C 20

static int node(mera_graph *g, int op, const char *name, const int *in, int n_in, const mera_attr *a, int na)
{
    mera_error err = {0};
    int out[MERA_MAX_NODE_OUTPUTS];
    if (mera_graph_add_node(g, op, name, in, n_in, a, na, NULL, out, MERA_MAX_NODE_OUTPUTS, &err) < 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return -1;
    }
    return out[0];
}

/* x (NHWC uint8) -> sigmoid, hardswish, concat(x, sigmoid), bilinear and
 * nearest upsample of the concat, add(x, hardswish); every one an output. */
static mera_graph *build(void)
{
    mera_error err = {0};
    mera_graph *g = mera_graph_new("env");
    const int64_t shape[4] = {1, H, W, C};
    mera_type xt = qtensor(MERA_DTYPE_UINT8, 4, shape, MERA_LAYOUT_NHWC, 0.05, 120);
    int x = mera_graph_add_input(g, "x", &xt, &err);
    mera_attr q[] = {flt("out_scale", 1.0 / 256), integer("out_zero_point", 0)};
    int s = node(g, MERA_OP_SIGMOID, "s", &x, 1, q, 2);
    mera_attr qh[] = {flt("out_scale", 0.03), integer("out_zero_point", 20)};
    int hs = node(g, MERA_OP_HARDSWISH, "hs", &x, 1, qh, 2);
    int cin[2] = {x, s};
    mera_attr ca[] = {integer("axis", 3), flt("out_scale", 0.04), integer("out_zero_point", 100)};
    int c = node(g, MERA_OP_CONCAT, "c", cin, 2, ca, 3);
    const double sc[2] = {2.0, 1.5};
    mera_attr bl[] = {str("method", "bilinear"), floats("scales", 2, sc), str("layout", "NHWC"),
                      flt("out_scale", 0.05), integer("out_zero_point", 90)};
    int ub = node(g, MERA_OP_UPSAMPLE, "ub", &c, 1, bl, 5);
    mera_attr nn[] = {str("method", "nearest"), floats("scales", 2, sc), str("layout", "NHWC")};
    int un = node(g, MERA_OP_UPSAMPLE, "un", &c, 1, nn, 3);
    int ain[2] = {x, hs};
    mera_attr aa[] = {flt("out_scale", 0.07), integer("out_zero_point", 60)};
    int ad = node(g, MERA_OP_ADD, "ad", ain, 2, aa, 2);
    int outs[6] = {s, hs, c, ub, un, ad};
    for (int i = 0; i < 6; i++)
        if (outs[i] < 0) {
            mera_graph_free(g);
            return NULL;
        }
    if (mera_graph_set_outputs(g, outs, 6, &err)) {
        fprintf(stderr, "outputs: %s\n", err.msg);
        mera_graph_free(g);
        return NULL;
    }
    return g;
}

#define N_OUT 6

typedef struct {
    uint8_t *out[N_OUT];
    size_t bytes[N_OUT];
} outputs;

static int outputs_new(const mera_graph *g, outputs *o)
{
    for (int i = 0; i < N_OUT; i++) {
        o->bytes[i] = (size_t)mera_type_numel(&mera_graph_value(g, mera_graph_output(g, i))->type);
        if (!(o->out[i] = calloc(o->bytes[i], 1)))
            return 0;
    }
    return 1;
}

static void outputs_free(outputs *o)
{
    for (int i = 0; i < N_OUT; i++)
        free(o->out[i]);
}

/* Compiles g with the environment as it is; runs it `runs` times on x into
 * o, counting the getenv calls of the runs into *during. */
static int compile_and_run(const mera_graph *g, const uint8_t *x, int runs, outputs *o, int *during)
{
    mera_error err = {0};
    const void *params[1] = {NULL};
    mera_interp *it = mera_interp_compile(g, MERA_INTERP_HW, params, &err);
    if (!it) {
        fprintf(stderr, "compile: %s\n", err.msg);
        return 0;
    }
    mera_interp_set_threads(it, 1);
    const void *in[1] = {x};
    int ok = 1;
    int before = __atomic_load_n(&getenv_calls, __ATOMIC_RELAXED);
    for (int r = 0; r < runs && ok; r++)
        ok = mera_interp_run(it, in, (void *const *)o->out, &err) == MERA_OK;
    *during = __atomic_load_n(&getenv_calls, __ATOMIC_RELAXED) - before;
    if (!ok)
        fprintf(stderr, "run: %s\n", err.msg);
    mera_interp_free(it);
    return ok;
}

int main(void)
{
    mera_graph *g = build();
    CHECK(g != NULL);
    if (!g)
        return test_summary();
    static uint8_t x[H * W * C];
    for (size_t i = 0; i < sizeof x; i++)
        x[i] = (uint8_t)rnd();

    outputs ref, fast, masked;
    CHECK(outputs_new(g, &ref) && outputs_new(g, &fast) && outputs_new(g, &masked));
    int during = -1;

    setenv("MERA_REFERENCE_KERNELS", "1", 1);
    CHECK(compile_and_run(g, x, 1, &ref, &during));
    unsetenv("MERA_REFERENCE_KERNELS");

    /* the fast kernels this CPU has: the compile probes, the runs do not */
    int at_compile = getenv_calls;
    CHECK(compile_and_run(g, x, 3, &fast, &during));
    CHECK(getenv_calls > at_compile);
    CHECK(during == 0);
    if (during)
        fprintf(stderr, "three runs called getenv %d times\n", during);

    /* the mask set before compiling still chooses the portable kernels */
    setenv("MERA_CPU_FEATURES_MASK", "all", 1);
    CHECK(compile_and_run(g, x, 2, &masked, &during));
    CHECK(during == 0);
    unsetenv("MERA_CPU_FEATURES_MASK");

    for (int i = 0; i < N_OUT; i++) {
        CHECK(memcmp(ref.out[i], fast.out[i], ref.bytes[i]) == 0);
        CHECK(memcmp(ref.out[i], masked.out[i], ref.bytes[i]) == 0);
    }
    outputs_free(&ref);
    outputs_free(&fast);
    outputs_free(&masked);
    mera_graph_free(g);
    return test_summary();
}
