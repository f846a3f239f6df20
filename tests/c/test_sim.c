/* C unit tests of the DNA machine (csrc/sim): hand-written programs on a
 * small quantized graph must give InterpreterHw's bytes; malformed programs
 * (missing tokens, bad addresses) must be clean errors; the timing model
 * must follow its formulas. Built and run by tests/test_c_core.py. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/platform.h"
#include "backends/interp.h"
#include "ir/ir.h"
#include "isa/isa.h"
#include "sim/sim.h"
#include "sim/timing.h"
#include "testutil.h"
#include "util/bytes.h"

/* ---- the graph: conv 3x3 pad 1 + relu (per-channel weights), then add ---- */

enum { H = 6, W = 5, C = 4, O = 6 };

static int8_t w_data[O * C * 3 * 3]; /* OIHW */
static float b_data[O];
static uint8_t x_data[H * W * C], y_data[H * W * O];

static mera_graph *make_graph(int *node_conv, int *node_add)
{
    mera_graph *g = mera_graph_new("simnet");
    mera_error err;
    int64_t xs[] = {1, H, W, C}, ys[] = {1, H, W, O}, ws[] = {O, C, 3, 3}, bs[] = {O};
    mera_type x = qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_NHWC, 0.05, 17);
    mera_type y = x;
    for (int i = 0; i < 4; i++)
        y.shape[i] = ys[i];
    y.q.scale = 0.03;
    y.q.zero_point = 100;
    double scales[O] = {0.011, 0.007, 0.02, 0.013, 0.009, 0.017};
    int32_t zps[O] = {0};
    mera_type w = qtensor_axis(MERA_DTYPE_INT8, 4, ws, 0, O, scales, zps);
    mera_type b = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    int vx = mera_graph_add_input(g, "x", &x, &err);
    int vw = mera_graph_add_param(g, "w", &w, &err);
    int vb = mera_graph_add_param(g, "b", &b, &err);
    int vy = mera_graph_add_input(g, "y", &y, &err);
    int64_t pad[] = {1, 1, 1, 1};
    mera_attr a[] = {ints("padding", 4, pad), str("layout", "NHWC"), str("activation", "relu"),
                     flt("out_scale", 0.04), integer("out_zero_point", 3)};
    int ins[] = {vx, vw, vb}, out[4];
    *node_conv = mera_graph_add_node(g, MERA_OP_CONV2D, "conv", ins, 3, a, 5, NULL, out, 4, &err);
    CHECK(*node_conv >= 0);
    int add_in[] = {out[0], vy};
    mera_attr aa[] = {flt("out_scale", 0.06), integer("out_zero_point", 50)};
    *node_add = mera_graph_add_node(g, MERA_OP_ADD, "add", add_in, 2, aa, 2, NULL, out, 4, &err);
    CHECK(*node_add >= 0);
    CHECK(mera_graph_set_outputs(g, out, 1, &err) == MERA_OK);
    return g;
}

static void fill_data(void)
{
    unsigned s = 12345;
    for (size_t i = 0; i < sizeof w_data; i++) {
        s = s * 1103515245u + 12345u;
        w_data[i] = (int8_t)((s >> 16) % 255 - 127);
    }
    for (int i = 0; i < O; i++)
        b_data[i] = (float)(i * 0.37 - 1.0);
    for (size_t i = 0; i < sizeof x_data; i++) {
        s = s * 1103515245u + 12345u;
        x_data[i] = (uint8_t)(s >> 17);
    }
    for (size_t i = 0; i < sizeof y_data; i++) {
        s = s * 1103515245u + 12345u;
        y_data[i] = (uint8_t)(s >> 19);
    }
}

/* ---- the program ---------------------------------------------------------- */

/* DRAM: the constant image (two weight blocks of 3 output channels), then
 * x, y, the conv output and the add output. */
enum {
    BLK = 3 * 3 * 3 * C + 3 * 4, /* int8 [3][3][3][4] + float32 [3] */
    P = 2 * BLK,
    X_AT = P,
    Y_AT = X_AT + H * W * C,
    CONV_AT = Y_AT + H * W * O,
    ADD_AT = CONV_AT + H * W * O,
    DRAM = ADD_AT + H * W * O,
};

typedef struct {
    dna_program p;
    dna_layer layers[2];
    dna_insn insns[32];
    dna_segment segs[3];
    int64_t value_dram[8];
    uint8_t image[P];
} test_prog;

static dna_insn load(int layer, int deps, int mem, uint32_t sram, int64_t dram, int rows, int cols, int run,
                     int64_t drs, int64_t dcs, uint32_t srs, uint32_t scs)
{
    dna_insn in;
    memset(&in, 0, sizeof in);
    in.opcode = DNA_LOAD;
    in.deps = (uint8_t)deps;
    in.layer = layer;
    in.u.dma.mem = (uint8_t)mem;
    in.u.dma.sram = sram;
    in.u.dma.dram = dram;
    in.u.dma.rows = rows;
    in.u.dma.cols = cols;
    in.u.dma.run_bytes = run;
    in.u.dma.dram_row_stride = drs;
    in.u.dma.dram_col_stride = dcs;
    in.u.dma.sram_row_stride = srs;
    in.u.dma.sram_col_stride = scs;
    return in;
}

static dna_insn conv(int deps, uint32_t in_addr, uint32_t wgt_addr, uint32_t out_addr, int t, int b)
{
    dna_insn in;
    memset(&in, 0, sizeof in);
    in.opcode = DNA_CONV;
    in.deps = (uint8_t)deps;
    in.layer = 0;
    dna_conv *c = &in.u.conv;
    c->in_addr = in_addr;
    c->wgt_addr = wgt_addr;
    c->out_addr = out_addr;
    c->in_h = 5;
    c->in_w = W + 2;
    c->in_c = C;
    c->out_h = 3;
    c->out_w = W;
    c->oc0 = 3 * b;
    c->oc_n = 3;
    c->wgt_dram = (int64_t)b * BLK;
    (void)t;
    return in;
}

/* The conv output tile (t, b) [3][5][3] into the NHWC conv output. */
static dna_insn store_conv(int deps, uint32_t sram, int t, int b)
{
    dna_insn in = load(0, deps, DNA_MEM_ACT, sram, CONV_AT + (int64_t)t * 3 * W * O + 3 * b, 3, W, 3, W * O, O,
                       W * 3, 3);
    in.opcode = DNA_STORE;
    return in;
}

enum { PUSH_NEXT = DNA_DEP_PUSH_NEXT, PUSH_PREV = DNA_DEP_PUSH_PREV, POP_PREV = DNA_DEP_POP_PREV,
       POP_NEXT = DNA_DEP_POP_NEXT };

/* add_on_host: the add runs as a HOST segment instead of on the DNA. */
static void build(test_prog *tp, const mera_graph *g, int node_conv, int node_add, int add_on_host)
{
    memset(tp, 0, sizeof *tp);
    dna_program *p = &tp->p;
    p->version = DNA_ISA_VERSION;
    strcpy(p->platform, "DNAF100L0003");
    tp->layers[0].node = node_conv;
    tp->layers[0].macs = (int64_t)H * W * O * C * 9;
    tp->layers[1].node = node_add;
    p->n_layers = add_on_host ? 1 : 2;
    p->layers = tp->layers;
    /* The constant image: per block, int8 OHWI weights then the bias. */
    for (int b = 0; b < 2; b++) {
        uint8_t *blk = tp->image + b * BLK;
        for (int o = 0; o < 3; o++)
            for (int kh = 0; kh < 3; kh++)
                for (int kw = 0; kw < 3; kw++)
                    for (int c = 0; c < C; c++)
                        blk[((o * 3 + kh) * 3 + kw) * C + c] =
                            (uint8_t)w_data[(((3 * b + o) * C + c) * 3 + kh) * 3 + kw];
        memcpy(blk + 3 * 3 * 3 * C, b_data + 3 * b, 3 * sizeof(float));
    }
    p->params_image = tp->image;
    p->params_bytes = P;
    p->dram_bytes = DRAM;
    p->act_bytes = 1024;
    p->wgt_bytes = 256;
    p->acc_bytes = 1024;
    /* ACT: input tiles ping 0 / pong 140 ([5][7][4]), output tiles ping
     * 280 / pong 325 ([3][5][3]). WGT: block 0 at 0, block 1 at 120. */
    int n = 0;
    dna_insn *in = tp->insns;
    in[n++] = load(0, 0, DNA_MEM_WGT, 0, 0, 1, 1, BLK, 0, 0, 0, 0);
    in[n++] = load(0, 0, DNA_MEM_WGT, 120, BLK, 1, 1, BLK, 0, 0, 0, 0);
    for (int t = 0; t < 2; t++) {
        /* input rows 3t-1 .. 3t+3, columns -1 .. W, padded with x's zero point */
        dna_insn l = load(0, PUSH_NEXT, DNA_MEM_ACT, t ? 140 : 0, X_AT + ((int64_t)(3 * t - 1) * W - 1) * C, 5,
                          W + 2, C, W * C, C, (W + 2) * C, C);
        l.u.dma.pad_top = t == 0;
        l.u.dma.pad_bottom = t == 1;
        l.u.dma.pad_left = l.u.dma.pad_right = 1;
        l.u.dma.pad_value = 17;
        in[n++] = l;
    }
    in[n++] = conv(POP_PREV | PUSH_NEXT, 0, 0, 280, 0, 0);               /* 4 */
    in[n++] = store_conv(POP_PREV | PUSH_PREV, 280, 0, 0);               /* 5 */
    in[n++] = conv(PUSH_NEXT, 0, 120, 325, 0, 1);                        /* 6 */
    in[n++] = store_conv(POP_PREV | PUSH_PREV, 325, 0, 1);               /* 7 */
    in[n++] = conv(POP_PREV | POP_NEXT | PUSH_NEXT, 140, 0, 280, 1, 0);  /* 8 */
    in[n++] = store_conv(POP_PREV, 280, 1, 0);                           /* 9 */
    in[n++] = conv(POP_NEXT | PUSH_NEXT, 140, 120, 325, 1, 1);           /* 10 */
    in[n++] = store_conv(POP_PREV, 325, 1, 1);                           /* 11 */
    int conv_count = n;
    if (!add_on_host) {
        in[n++] = load(1, 0, DNA_MEM_ACT, 0, CONV_AT, 1, 1, H * W * O, 0, 0, 0, 0);
        in[n++] = load(1, PUSH_NEXT, DNA_MEM_ACT, 180, Y_AT, 1, 1, H * W * O, 0, 0, 0, 0);
        dna_insn v;
        memset(&v, 0, sizeof v);
        v.opcode = DNA_VEC;
        v.deps = POP_PREV | PUSH_NEXT;
        v.layer = 1;
        v.u.vec.n_src = 2;
        int32_t ext[4] = {1, H, W, O};
        v.u.vec.src[0].addr = 0;
        v.u.vec.src[1].addr = 180;
        v.u.vec.dst.addr = 360;
        memcpy(v.u.vec.src[0].ext, ext, sizeof ext);
        memcpy(v.u.vec.src[1].ext, ext, sizeof ext);
        memcpy(v.u.vec.dst.ext, ext, sizeof ext);
        in[n++] = v;
        dna_insn s = load(1, POP_PREV, DNA_MEM_ACT, 360, ADD_AT, 1, 1, H * W * O, 0, 0, 0, 0);
        s.opcode = DNA_STORE;
        in[n++] = s;
    }
    p->insns = tp->insns;
    p->n_insns = n;
    tp->segs[0] = (dna_segment){DNA_SEG_DNA, 0, 0, conv_count, H * W * C, 0};
    if (add_on_host) {
        tp->segs[1] = (dna_segment){DNA_SEG_HOST, node_add, 0, 0, 0, 0};
    } else {
        tp->segs[1] = (dna_segment){DNA_SEG_DNA, 0, conv_count, n - conv_count, H * W * O, H * W * O};
    }
    p->segments = tp->segs;
    p->n_segments = 2;
    /* values: x, w, b, y, conv, add */
    int nv = mera_graph_num_values(g);
    CHECK(nv == 6);
    p->n_values = nv;
    p->value_dram = tp->value_dram;
    int64_t at[] = {X_AT, -1, -1, Y_AT, CONV_AT, ADD_AT};
    for (int v = 0; v < nv; v++)
        tp->value_dram[v] = at[v];
}

/* ---- tests ---------------------------------------------------------------- */

static void reference(const mera_graph *g, const void *const *params, uint8_t *out)
{
    mera_error err;
    mera_interp *it = mera_interp_compile(g, MERA_INTERP_HW, params, &err);
    CHECK(it != NULL);
    const void *inputs[] = {x_data, y_data};
    void *outputs[] = {out};
    CHECK(mera_interp_run(it, inputs, outputs, &err) == MERA_OK);
    mera_interp_free(it);
}

typedef struct {
    const dna_machine *m;
    const uint8_t *want;
    int ok;
} thread_job;

/* Several threads run one machine at once: every run has its own DRAM
 * and buffers. */
static void *run_thread(void *arg)
{
    thread_job *j = arg;
    uint8_t got[H * W * O];
    const void *inputs[] = {x_data, y_data};
    void *outputs[] = {got};
    mera_error err;
    j->ok = 1;
    for (int k = 0; k < 20; k++)
        if (dna_machine_run(j->m, inputs, outputs, &err) != MERA_OK || memcmp(got, j->want, sizeof got) != 0)
            j->ok = 0;
    return NULL;
}

static void test_bit_exact(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    const void *params[] = {NULL, w_data, b_data, NULL};
    const mera_platform *p = mera_platform_find("DNAF100L0003");
    CHECK(p != NULL);
    uint8_t want[H * W * O], got[H * W * O];
    reference(g, params, want);
    for (int host = 0; host < 2; host++) {
        test_prog tp;
        build(&tp, g, nc, na, host);
        mera_error err;
        err.msg[0] = 0;
        dna_machine *m = dna_machine_new(g, &tp.p, p, params, &err);
        CHECK(m != NULL);
        if (!m) {
            fprintf(stderr, "load: %s\n", err.msg);
            continue;
        }
        const void *inputs[] = {x_data, y_data};
        void *outputs[] = {got};
        memset(got, 0xAA, sizeof got);
        mera_status st = dna_machine_run(m, inputs, outputs, &err);
        CHECK(st == MERA_OK);
        if (st)
            fprintf(stderr, "run: %s\n", err.msg);
        CHECK(memcmp(got, want, sizeof got) == 0);
        /* twice: runs share nothing */
        memset(got, 0, sizeof got);
        CHECK(dna_machine_run(m, inputs, outputs, &err) == MERA_OK && memcmp(got, want, sizeof got) == 0);
        pthread_t th[4];
        thread_job jobs[4];
        for (int k = 0; k < 4; k++) {
            jobs[k] = (thread_job){m, want, 0};
            CHECK(pthread_create(&th[k], NULL, run_thread, &jobs[k]) == 0);
        }
        for (int k = 0; k < 4; k++) {
            pthread_join(th[k], NULL);
            CHECK(jobs[k].ok);
        }
        const dna_timing *t = dna_machine_timing(m);
        /* a thread count changes no byte and no cycle */
        for (int threads = 1; threads <= 7; threads += 3) {
            dna_machine_options mo = {.threads = threads};
            dna_machine *mt = dna_machine_new_opts(g, &tp.p, p, params, &mo, &err);
            CHECK(mt != NULL);
            if (!mt)
                continue;
            memset(got, 0, sizeof got);
            CHECK(dna_machine_run(mt, inputs, outputs, &err) == MERA_OK && memcmp(got, want, sizeof got) == 0);
            const dna_timing *tt = dna_machine_timing(mt);
            CHECK(tt->device_cycles == t->device_cycles && tt->total_us == t->total_us);
            dna_machine_free(mt);
        }
        CHECK(t->n_layers == 2 && t->device_cycles > 0);
        CHECK(t->layers[nc].on_dna && t->layers[nc].macs == (int64_t)H * W * O * C * 9);
        CHECK(t->layers[na].on_dna == !host);
        CHECK(host ? t->layers[na].host_us > 0 : t->layers[na].vec_cycles > 0);
        CHECK(t->total_us > t->device_us && t->host_us >= 2 * p->host_call_us * (host ? 0.5 : 1.0));
        CHECK(t->layers[nc].load_bytes == 2 * BLK + 2 * 4 * W * C);
        CHECK(dna_machine_write_trace(m, "/tmp/mera_test_sim_trace.json", &err) == MERA_OK);
        FILE *f = fopen("/tmp/mera_test_sim_trace.json", "r");
        CHECK(f != NULL);
        if (f) {
            char buf[256] = {0};
            CHECK(fread(buf, 1, sizeof buf - 1, f) > 0 && strstr(buf, "traceEvents"));
            fclose(f);
            if (!getenv("MERA_KEEP_TRACE"))
                remove("/tmp/mera_test_sim_trace.json");
        }
        dna_machine_free(m);
    }
    mera_graph_free(g);
}

static void test_errors(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    const void *params[] = {NULL, w_data, b_data, NULL};
    const mera_platform *p = mera_platform_find("DNAF100L0003");
    test_prog tp;
    mera_error err;

    /* Missing token pair: the first CONV no longer waits for its input. */
    build(&tp, g, nc, na, 0);
    tp.insns[3 - 1].deps = 0; /* LOAD in0: no push */
    tp.insns[4].deps &= (uint8_t)~POP_PREV;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    printf("hazard message: %s\n", err.msg);
    CHECK_MSG(err, "hazard: insn");
    CHECK_MSG(err, "node conv");

    /* An unbalanced token: somebody waits forever. */
    build(&tp, g, nc, na, 0);
    tp.insns[2].deps = 0;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    printf("deadlock message: %s\n", err.msg);
    CHECK_MSG(err, "malformed program");

    /* A program scheduled for another rounding than the graph's: refused
     * at load, never run with the other arithmetic. */
    build(&tp, g, nc, na, 0);
    tp.insns[6].u.conv.rounding = MERA_ROUNDING_ZP_BEFORE_ROUNDING;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "insn 6 (CONV, node 'conv'): field rounding = zero_point_before_rounding, but the graph's "
                   "rounding is zero_point_after_rounding");

    /* SRAM out of range. */
    build(&tp, g, nc, na, 0);
    tp.insns[6].u.conv.out_addr = 1000;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK(err.code == MERA_ERR_FORMAT);
    CHECK_MSG(err, "insn 6 (CONV, node 'conv'): field out_addr");

    /* A box that copies more bytes than its buffer holds (strides of 0
     * would let it repeat the same bytes billions of times). */
    build(&tp, g, nc, na, 0);
    tp.insns[1].u.dma.rows = 1 << 30;
    tp.insns[1].u.dma.sram_row_stride = 0;
    tp.insns[1].u.dma.dram_row_stride = 0;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "insn 1 (LOAD, node 'conv'): field rows x cols x run_bytes");

    /* A store into the constant image. */
    build(&tp, g, nc, na, 0);
    tp.insns[5].u.dma.dram = 0;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "read-only");

    /* DRAM read beyond the program's DRAM. */
    build(&tp, g, nc, na, 0);
    tp.insns[1].u.dma.dram = DRAM;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "insn 1 (LOAD, node 'conv'): field dram");

    /* Bad layer, bad opcode, segments not covering. */
    build(&tp, g, nc, na, 0);
    tp.insns[7].layer = 9;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "field layer");
    build(&tp, g, nc, na, 0);
    tp.insns[7].opcode = 77;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "opcode");
    build(&tp, g, nc, na, 0);
    tp.segs[1].count--;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "segments cover");

    /* Inconsistent tile geometry. */
    build(&tp, g, nc, na, 0);
    tp.insns[4].u.conv.in_h = 6;
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "in_h/in_w/out_h/out_w");

    /* Weight block not where the CONV says: a run-time program bug, the
     * same error in execution order (1 thread) and in waves (2, 7). */
    char first_msg[MERA_ERROR_MSG_LEN] = "";
    for (int threads = 1; threads <= 7; threads += threads == 1 ? 1 : 5) {
        build(&tp, g, nc, na, 0);
        tp.insns[6].u.conv.wgt_addr = 0; /* block 0 sits there, the CONV claims block 1 */
        dna_machine_options mo = {.threads = threads};
        dna_machine *m = dna_machine_new_opts(g, &tp.p, p, params, &mo, &err);
        CHECK(m != NULL);
        if (m) {
            uint8_t out[H * W * O];
            const void *inputs[] = {x_data, y_data};
            void *outputs[] = {out};
            for (int run = 0; run < 2; run++) {
                CHECK(dna_machine_run(m, inputs, outputs, &err) != MERA_OK);
                CHECK_MSG(err, "insn 6 (CONV, node 'conv'): WGT [0, ");
                CHECK_MSG(err, "does not hold the weight block");
                if (!first_msg[0])
                    snprintf(first_msg, sizeof first_msg, "%s", err.msg);
                CHECK(strcmp(first_msg, err.msg) == 0);
            }
            dna_machine_free(m);
        }
    }
    mera_graph_free(g);
}


/* A program that reads ACT bytes before any instruction of the run wrote
 * them reads 0 there in every run, although a later segment writes them
 * (a reused run zeroes what a run may read unwritten: plan_zeroed). */
static void test_unwritten_reads_zero_every_run(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    const void *params[] = {NULL, w_data, b_data, NULL};
    const mera_platform *p = mera_platform_find("DNAF100L0003");
    /* with forwarding the late LOAD, never read, moves no bytes; without,
     * a reused run must zero what it wrote */
    for (int k = 0; k < 6; k++) {
        int threads = k % 3 == 0 ? 1 : k % 3 == 1 ? 2 : 7;
        setenv("MERA_SIM_FORWARD", k < 3 ? "0" : "1", 1);
        test_prog tp;
        build(&tp, g, nc, na, 0);
        int n = tp.p.n_insns;
        CHECK(tp.insns[n - 2].opcode == DNA_VEC);
        tp.insns[n - 2].u.vec.src[1].addr = 600; /* y's tile is at 180; ACT 600 is unwritten here */
        tp.insns[n] = load(1, 0, DNA_MEM_ACT, 600, Y_AT, 1, 1, H * W * O, 0, 0, 0, 0); /* ... and written after */
        tp.p.n_insns = n + 1;
        tp.segs[2] = (dna_segment){DNA_SEG_DNA, 0, n, 1, 0, 0};
        tp.p.n_segments = 3;
        mera_error err;
        err.msg[0] = 0;
        dna_machine_options mo = {.threads = threads};
        dna_machine *m = dna_machine_new_opts(g, &tp.p, p, params, &mo, &err);
        unsetenv("MERA_SIM_FORWARD");
        CHECK(m != NULL);
        if (!m) {
            fprintf(stderr, "load: %s\n", err.msg);
            continue;
        }
        CHECK(dna_machine_forward_stats(m).dead_loads == (k < 3 ? 0 : 3));
        uint8_t first[H * W * O], got[H * W * O], with_y[H * W * O];
        const void *inputs[] = {x_data, y_data};
        void *outputs[] = {first};
        CHECK(dna_machine_run(m, inputs, outputs, &err) == MERA_OK);
        outputs[0] = got;
        for (int run = 0; run < 3; run++) {
            memset(got, 0xAA, sizeof got);
            CHECK(dna_machine_run(m, inputs, outputs, &err) == MERA_OK && memcmp(got, first, sizeof got) == 0);
        }
        reference(g, params, with_y);
        CHECK(memcmp(first, with_y, sizeof first) != 0); /* the test reads zeros, not y */
        dna_machine_free(m);
    }
    mera_graph_free(g);
}

/* The deserializer and the machine apply one rule set (isa/validate.c):
 * each edit below makes a program that one of them used to accept and the
 * other to refuse; now both refuse it with the same message (but for the
 * instruction's location: the machine names its node, the deserializer,
 * which has no graph, its layer). serialized:
 * the program's bytes, when the edit is made on them (with the checksum
 * rewritten), else NULL and the edit is on tp. */
static void refused_by_both(const mera_graph *g, test_prog *tp, const uint8_t *serialized, size_t len,
                            const char *needle, int line)
{
    const mera_platform *p = mera_platform_find("DNAF100L0003");
    const void *params[] = {NULL, w_data, b_data, NULL};
    mera_error e1, e2;
    memset(&e1, 0, sizeof e1);
    memset(&e2, 0, sizeof e2);
    uint8_t *buf = NULL;
    size_t n = len;
    dna_program *q = NULL;
    if (serialized) {
        q = dna_program_deserialize(serialized, len, mera_graph_num_nodes(g), mera_graph_num_values(g), &e2);
    } else {
        CHECK(dna_program_serialize(&tp->p, &buf, &n, &e2) == MERA_OK);
        if (buf)
            q = dna_program_deserialize(buf, n, mera_graph_num_nodes(g), mera_graph_num_values(g), &e2);
    }
    dna_machine *m = serialized ? NULL : dna_machine_new(g, &tp->p, p, params, &e1);
    int ok = q == NULL && e2.code == MERA_ERR_FORMAT && strstr(e2.msg, needle) &&
             (serialized || (m == NULL && e1.code == MERA_ERR_FORMAT && strstr(e1.msg, needle)));
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "line %d: wanted \"%s\"\n  deserializer: %s\n  machine: %s\n", line, needle,
                q ? "accepted" : e2.msg, serialized ? "-" : m ? "accepted" : e1.msg);
    dna_machine_free(m);
    dna_program_free(q);
    free(buf);
}

static void test_one_rule_set(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    const mera_platform *p = mera_platform_find("DNAF100L0003");
    const void *params[] = {NULL, w_data, b_data, NULL};
    test_prog tp;
    mera_error err;
    /* the program as built: both accept */
    build(&tp, g, nc, na, 0);
    dna_machine *m = dna_machine_new(g, &tp.p, p, params, &err);
    CHECK(m != NULL);
    dna_machine_free(m);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(dna_program_serialize(&tp.p, &buf, &len, &err) == MERA_OK);
    dna_program *q = dna_program_deserialize(buf, len, mera_graph_num_nodes(g), mera_graph_num_values(g), &err);
    CHECK(q != NULL);
    dna_program_free(q);

#define REFUSED(edit, needle)                                      \
    do {                                                           \
        build(&tp, g, nc, na, 0);                                  \
        edit;                                                      \
        refused_by_both(g, &tp, NULL, 0, (needle), __LINE__);      \
    } while (0)
    /* the deserializer used to accept these */
    REFUSED(tp.insns[0].u.dma.rows = 0, "field rows/cols/run_bytes must be >= 1");
    REFUSED(tp.insns[12].u.dma.cols = 0, "field rows/cols/run_bytes must be >= 1");
    REFUSED(tp.insns[2].deps |= POP_PREV, "field deps = 0x09: the LOAD queue has no previous");
    REFUSED(tp.insns[5].deps |= PUSH_NEXT, "field deps = 0x0d: the STORE queue has no next");
    REFUSED(tp.insns[5].u.dma.dram = 0, "field dram: writes DRAM [0, 87), outside the "
                                        "activations [240, 900) (the constant image is read-only)");
    REFUSED(tp.insns[12].u.dma.dram = P - 10, "field dram: reads DRAM [230, 410), outside "
                                              "both the constant image");
    REFUSED((tp.insns[1].u.dma.rows = 1 << 30, tp.insns[1].u.dma.sram_row_stride = 0),
            "field rows x cols x run_bytes");
    REFUSED(tp.insns[4].u.conv.out_addr = 100, "fields in_addr/out_addr: input [0, +140) "
                                               "and output [100, +45) tiles overlap");
    REFUSED(tp.insns[14].u.vec.dst.addr = 100, "field src[0].addr: the source [0, 180) "
                                               "overlaps the destination [100, 280)");
    REFUSED(tp.insns[14].u.vec.src[1].ext[0] = 0, "field src[1].ext[0] = 0 is below 1");
    REFUSED(tp.insns[14].u.vec.n_src = 0, "field n_src = 0 not in [1, 8]");
    REFUSED((tp.segs[1].first++, tp.segs[1].count--), "segments[1] (DNA): instructions [13, +3) do not continue at insn 12");
    /* the machine used to accept these */
    REFUSED(tp.layers[1].reserved = 7, "layers[1]: field reserved = 7, not 0");
    REFUSED(tp.layers[0].macs = -1, "layers[0]: field macs = -1 is negative");
    REFUSED(tp.insns[4].reserved = 1, "field reserved = 1, not 0");
    REFUSED(tp.insns[12].u.dma.reserved = 2, "field reserved = 2, not 0");
    REFUSED(tp.insns[5].u.dma.pad_value = 9, "field pad_*: a STORE has no padding, got "
                                             "(0,0,0,0) and pad_value 9");
    REFUSED(tp.insns[14].u.vec.origin[2] = -1, "field origin[2] = -1 is negative");
    REFUSED(tp.value_dram[1] = DRAM + 5, "value_dram[1] = 905 is neither -1 nor inside DRAM (900 bytes)");
#undef REFUSED
    /* a platform name without its NUL: the writer always ends it, so edit
     * the bytes; the machine sees it in memory */
    uint8_t *b2 = malloc(len);
    memcpy(b2, buf, len);
    memset(b2 + 12, 'x', 32);
    uint64_t h = mera_fnv1a64(b2, len - 8);
    for (int i = 0; i < 8; i++)
        b2[len - 8 + i] = (uint8_t)(h >> (8 * i));
    refused_by_both(g, &tp, b2, len, "field platform: the name is not NUL-terminated", __LINE__);
    build(&tp, g, nc, na, 0);
    memset(tp.p.platform, 'x', sizeof tp.p.platform);
    CHECK(dna_machine_new(g, &tp.p, p, params, &err) == NULL);
    CHECK_MSG(err, "field platform: the name is not NUL-terminated");
    free(b2);
    free(buf);
    mera_graph_free(g);
}

static void test_timing_formulas(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    /* The formulas, not the table: fix the parameters they read (the table
     * may be recalibrated, docs/hardware.md). */
    mera_platform fixed = *mera_platform_find("DNAF100L0003");
    fixed.dram_gbps = 23.0;
    const mera_platform *p = &fixed;
    CHECK(p->clock_mhz == 300 && p->dram_gbps == 23.0 && p->dma_setup_cycles == 64 && p->mac_ic == 64 &&
          p->mac_oc == 64 && p->mac_px == 1 && p->vector_lanes == 64);
    test_prog tp;
    build(&tp, g, nc, na, 0);
    int64_t bytes, macs;
    /* 76.67 bytes per cycle. A contiguous 120-byte weight block: 64 + 2. */
    CHECK(dna_insn_cycles(g, &tp.p, p, &tp.insns[0], &bytes, &macs) == 66 && bytes == BLK && macs == 0);
    /* An input tile: 4 real rows of 5 pixels of 4 channels, contiguous in
     * DRAM (rows merge): one 80-byte burst, 64 + 2. */
    CHECK(dna_insn_cycles(g, &tp.p, p, &tp.insns[2], &bytes, NULL) == 66 && bytes == 80);
    /* A conv output tile stored into a wider tensor: 15 runs of 3 bytes,
     * each a 64-byte burst: 960 bytes, 64 + 13. */
    CHECK(dna_insn_cycles(g, &tp.p, p, &tp.insns[5], &bytes, NULL) == 77 && bytes == 45);
    /* CONV: 15 pixels, K = 36, 3 channels: mac 15 x 1 x 1, requant 1, plus
     * 64 + 64 fill/drain. */
    CHECK(dna_insn_cycles(g, &tp.p, p, &tp.insns[4], NULL, &macs) == 143 && macs == 15 * 3 * 36);
    /* VEC add: 360 source elements over 64 lanes, plus 16. */
    CHECK(dna_insn_cycles(g, &tp.p, p, &tp.insns[14], NULL, NULL) == 22);
    /* A one-instruction program: its time is that instruction plus the
     * host call. */
    tp.p.n_insns = 1;
    tp.p.n_segments = 1;
    tp.segs[0].count = 1;
    tp.segs[0].host_in_bytes = 0;
    mera_error err;
    const void *params[] = {NULL, w_data, b_data, NULL};
    dna_machine *m = dna_machine_new(g, &tp.p, p, params, &err);
    CHECK(m != NULL);
    if (m) {
        const dna_timing *t = dna_machine_timing(m);
        CHECK(t->device_cycles == 66);
        CHECK(t->device_us > 0.2199 && t->device_us < 0.2201);
        CHECK(t->host_us == p->host_call_us && t->total_us == t->device_us + t->host_us);
        CHECK(t->layers[nc].load_bytes == BLK && t->layers[nc].load_cycles == 66 && t->layers[nc].memory_bound);
        CHECK(t->layers[nc].start_cycle == 0 && t->layers[nc].end_cycle == 66);
        dna_machine_free(m);
    }
    /* The full program: the loads of tile 1 overlap compute of tile 0. */
    build(&tp, g, nc, na, 0);
    m = dna_machine_new(g, &tp.p, p, params, &err);
    CHECK(m != NULL);
    if (m) {
        const dna_timing *t = dna_machine_timing(m);
        const dna_layer_stats *ls = &t->layers[nc];
        CHECK(ls->mac_cycles == 4 * 143 && ls->store_cycles == 4 * 77 && ls->load_cycles == 4 * 66);
        CHECK(ls->macs == 4 * 1620 && !ls->memory_bound);
        CHECK(ls->mac_utilization > 0 && ls->mac_utilization < 0.01);
        dna_machine_free(m);
    }
    mera_graph_free(g);
}

/* ---- forwarding (plan_forward) ---------------------------------------------
 *
 * The add segment of build(.., 0) is the chain forwarding is for: two
 * dense LOADs (conv output, y), the VEC, one dense STORE. Each variant
 * below edits that segment; the machine with forwarding must give the
 * bytes of the machine without (MERA_SIM_FORWARD=0), at 1, 2 and 7
 * threads, and forward exactly what is safe. */

enum { ADD_SEG = 12 }; /* the add segment's first instruction in build(.., 0) */

static dna_insn nop(int deps)
{
    dna_insn in;
    memset(&in, 0, sizeof in);
    in.opcode = DNA_NOP;
    in.deps = (uint8_t)deps;
    in.layer = 1;
    return in;
}

static dna_insn add_vec(int deps, uint32_t a, uint32_t b, uint32_t dst)
{
    dna_insn v;
    memset(&v, 0, sizeof v);
    v.opcode = DNA_VEC;
    v.deps = (uint8_t)deps;
    v.layer = 1;
    v.u.vec.n_src = 2;
    int32_t ext[4] = {1, H, W, O};
    v.u.vec.src[0].addr = a;
    v.u.vec.src[1].addr = b;
    v.u.vec.dst.addr = dst;
    memcpy(v.u.vec.src[0].ext, ext, sizeof ext);
    memcpy(v.u.vec.src[1].ext, ext, sizeof ext);
    memcpy(v.u.vec.dst.ext, ext, sizeof ext);
    return v;
}

static dna_insn dense(int opcode, int deps, uint32_t sram, int64_t dram)
{
    dna_insn in = load(1, deps, DNA_MEM_ACT, sram, dram, 1, 1, H * W * O, 0, 0, 0, 0);
    in.opcode = (uint8_t)opcode;
    return in;
}

/* The add segment replaced by insns[0, n). */
static void with_add_segment(test_prog *tp, const dna_insn *insns, int n)
{
    for (int k = 0; k < n; k++)
        tp->insns[ADD_SEG + k] = insns[k];
    tp->p.n_insns = ADD_SEG + n;
    tp->segs[1].count = n;
}

/* Loads tp with the environment variable env (MERA_SIM_FORWARD or
 * MERA_SIM_LAYERS) set to on on `threads` threads, runs it twice (the second
 * run reuses the first's buffers), gives the output, the forwarding counts
 * and the layers run whole. */
static int run_with(const mera_graph *g, test_prog *tp, const char *env, int on, int threads, uint8_t *out,
                    dna_forward_stats *fs, int *whole)
{
    const mera_platform *p = mera_platform_find("DNAF100L0003");
    const void *params[] = {NULL, w_data, b_data, NULL};
    setenv(env, on ? "1" : "0", 1);
    mera_error err;
    err.msg[0] = 0;
    dna_machine_options mo = {.threads = threads};
    dna_machine *m = dna_machine_new_opts(g, &tp->p, p, params, &mo, &err);
    unsetenv(env);
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 0;
    }
    *fs = dna_machine_forward_stats(m);
    *whole = dna_machine_layers_run_whole(m);
    const void *inputs[] = {x_data, y_data};
    uint8_t again[H * W * O];
    void *outputs[] = {out};
    int ok = dna_machine_run(m, inputs, outputs, &err) == MERA_OK;
    outputs[0] = again;
    ok &= dna_machine_run(m, inputs, outputs, &err) == MERA_OK;
    if (!ok)
        fprintf(stderr, "run: %s\n", err.msg);
    CHECK(ok && memcmp(out, again, sizeof again) == 0);
    dna_machine_free(m);
    return ok;
}

static int run_forward(const mera_graph *g, test_prog *tp, int forward, int threads, uint8_t *out,
                       dna_forward_stats *fs)
{
    int whole;
    setenv("MERA_SIM_LAYERS", "0", 1); /* the add would run whole: forwarding is tested on tiles */
    int ok = run_with(g, tp, "MERA_SIM_FORWARD", forward, threads, out, fs, &whole);
    unsetenv("MERA_SIM_LAYERS");
    return ok;
}

/* Forwarding on and off give the same bytes at 1, 2 and 7 threads; the
 * counts with forwarding on (the same at every thread count) must be
 * `want`, each field -1 for "any". Returns the output. */
static void check_forward(const mera_graph *g, test_prog *tp, dna_forward_stats want, uint8_t *out, int line)
{
    uint8_t off[H * W * O], on[H * W * O];
    for (int threads = 1; threads <= 7; threads += threads == 1 ? 1 : 5) {
        dna_forward_stats s0, s1;
        if (!run_forward(g, tp, 0, threads, off, &s0) || !run_forward(g, tp, 1, threads, on, &s1))
            continue;
        int same = memcmp(off, on, sizeof on) == 0;
        int counts = s0.dead_loads == 0 && s0.dead_stores == 0 && s0.fwd_inputs == 0 && s0.fwd_outputs == 0 &&
                     (want.dead_loads < 0 || s1.dead_loads == want.dead_loads) &&
                     (want.dead_stores < 0 || s1.dead_stores == want.dead_stores) &&
                     (want.fwd_inputs < 0 || s1.fwd_inputs == want.fwd_inputs) &&
                     (want.fwd_outputs < 0 || s1.fwd_outputs == want.fwd_outputs);
        if (!same || !counts)
            fprintf(stderr, "check_forward (line %d, %d threads): same bytes %d; forwarded: %lld dead LOADs, %lld dead "
                            "STOREs, %lld inputs, %lld outputs\n",
                    line, threads, same, (long long)s1.dead_loads, (long long)s1.dead_stores,
                    (long long)s1.fwd_inputs, (long long)s1.fwd_outputs);
        CHECK(same && counts);
        memcpy(out, on, sizeof on);
    }
}

static void test_forwarding(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    const void *params[] = {NULL, w_data, b_data, NULL};
    uint8_t want[H * W * O], got[H * W * O];
    reference(g, params, want);
    test_prog tp;
    enum { L1 = ADD_SEG, L2, V, S };

    /* The plain chain: both LOADs and the STORE move no bytes. */
    build(&tp, g, nc, na, 0);
    CHECK(tp.insns[V].opcode == DNA_VEC && tp.insns[S].opcode == DNA_STORE && tp.p.n_insns == S + 1);
    check_forward(g, &tp, (dna_forward_stats){2, 1, 2, 1}, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0);

    /* A STORE writes y's DRAM source between its LOAD and the VEC (zeros
     * from unwritten ACT): y's tile must be read from ACT. */
    build(&tp, g, nc, na, 0);
    {
        dna_insn seg[] = {tp.insns[L1], tp.insns[L2], nop(POP_PREV | PUSH_NEXT),
                          dense(DNA_STORE, POP_PREV | PUSH_PREV, 600, Y_AT),
                          add_vec(POP_NEXT | PUSH_NEXT, 0, 180, 360), tp.insns[S]};
        with_add_segment(&tp, seg, 6);
    }
    check_forward(g, &tp, (dna_forward_stats){1, 1, 1, 1}, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0); /* y was in ACT before the STORE zeroed its DRAM */

    /* A second LOAD rewrites half of the first's ACT bytes: the first
     * LOAD's tile cannot be forwarded (the VEC reads bytes of both) and
     * both LOADs must move their bytes. */
    build(&tp, g, nc, na, 0);
    tp.insns[L2].u.dma.sram = 90;
    tp.insns[V].u.vec.src[1].addr = 90;
    check_forward(g, &tp, (dna_forward_stats){0, 1, 1, 1}, got, __LINE__);

    /* A padded LOAD fills the VEC's first source (its first row is the
     * pad value): not a dense block, never forwarded. */
    build(&tp, g, nc, na, 0);
    tp.insns[L1] = load(1, 0, DNA_MEM_ACT, 0, CONV_AT, H, 1, W * O, W * O, 0, W * O, 0);
    tp.insns[L1].u.dma.pad_top = 1;
    tp.insns[L1].u.dma.pad_value = 77;
    check_forward(g, &tp, (dna_forward_stats){1, 1, 1, 1}, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) != 0);

    /* Another VEC reads the add's ACT output besides the STORE: the add
     * must write ACT (the second VEC's output is never stored). */
    build(&tp, g, nc, na, 0);
    {
        dna_insn seg[] = {tp.insns[L1], tp.insns[L2], tp.insns[V], add_vec(0, 360, 180, 600), tp.insns[S]};
        with_add_segment(&tp, seg, 5);
    }
    check_forward(g, &tp, (dna_forward_stats){2, 0, 3, 0}, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0);

    /* A LOAD reads the STORE's DRAM range between the add and its STORE,
     * for a second VEC (which reads it from DRAM, forwarded: the LOAD
     * moves no bytes): the add must not write that range early. */
    build(&tp, g, nc, na, 0);
    {
        dna_insn seg[] = {tp.insns[L1], tp.insns[L2], add_vec(POP_PREV | PUSH_PREV, 0, 180, 360),
                          dense(DNA_LOAD, POP_NEXT | PUSH_NEXT, 600, ADD_AT), add_vec(POP_PREV | PUSH_NEXT, 600, 180, 780),
                          tp.insns[S]};
        with_add_segment(&tp, seg, 6);
    }
    check_forward(g, &tp, (dna_forward_stats){3, 0, 4, 0}, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0);

    /* The add's STORE in its own segment (a run driven segment by segment
     * has the host between them): nothing crosses the boundary. */
    build(&tp, g, nc, na, 0);
    tp.segs[1].count = 3;
    tp.segs[2] = (dna_segment){DNA_SEG_DNA, 0, S, 1, 0, 0};
    tp.p.n_segments = 3;
    tp.insns[V].deps = POP_PREV;
    tp.insns[S].deps = 0;
    check_forward(g, &tp, (dna_forward_stats){2, 0, 2, 0}, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0);
    mera_graph_free(g);
}

/* ---- layers run whole (plan_layers) ------------------------------------------
 *
 * The conv segment of build() is a layer that can run whole: two row bands
 * x two channel blocks cover its output once, each LOAD the window its
 * tiles need, padded with x's zero point. Each variant below must give the
 * bytes of the machine without (MERA_SIM_LAYERS=0) at 1, 2 and 7 threads,
 * and run the layer whole exactly when that is safe. The add segment of
 * build(.., 0) is an elementwise VEC layer that can run whole too (one
 * tile, dense LOADs and STORE): the counts below include it. */

static int run_layers(const mera_graph *g, test_prog *tp, int layers, int threads, uint8_t *out, int *whole)
{
    dna_forward_stats fs;
    return run_with(g, tp, "MERA_SIM_LAYERS", layers, threads, out, &fs, whole);
}

/* want_whole: the layers run whole with it on (-1: 0 or 1, the order the
 * timing model gives decides). Returns the output. */
static void check_layers(const mera_graph *g, test_prog *tp, int want_whole, uint8_t *out, int line)
{
    uint8_t off[H * W * O], on[H * W * O];
    for (int threads = 1; threads <= 7; threads += threads == 1 ? 1 : 5) {
        int w0, w1;
        if (!run_layers(g, tp, 0, threads, off, &w0) || !run_layers(g, tp, 1, threads, on, &w1))
            continue;
        int same = memcmp(off, on, sizeof on) == 0, counts = w0 == 0 && (want_whole < 0 || w1 == want_whole);
        if (!same || !counts)
            fprintf(stderr, "check_layers (line %d, %d threads): same bytes %d; run whole: %d (want %d)\n", line,
                    threads, same, w1, want_whole);
        CHECK(same && counts);
        memcpy(out, on, sizeof on);
    }
}

/* insn inserted into the conv segment of build(.., 0) before instruction at. */
static void insert_insn(test_prog *tp, int at, dna_insn insn)
{
    memmove(&tp->insns[at + 1], &tp->insns[at], (size_t)(tp->p.n_insns - at) * sizeof tp->insns[0]);
    tp->insns[at] = insn;
    tp->p.n_insns++;
    tp->segs[0].count++;
    tp->segs[1].first++;
}

static void test_layers_run_whole(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    const void *params[] = {NULL, w_data, b_data, NULL};
    uint8_t want[H * W * O], got[H * W * O];
    reference(g, params, want);
    test_prog tp;
    enum { LD0 = 2, LD1, C00, S00, C01, S01, C10, S10, C11, S11, V = 14 };

    /* As built, with the add on the DNA (both run whole) or on the host. */
    for (int host = 0; host < 2; host++) {
        build(&tp, g, nc, na, host);
        check_layers(g, &tp, 2 - host, got, __LINE__);
        CHECK(memcmp(got, want, sizeof got) == 0);
    }

    /* A LOAD pads with another value than x's zero point: tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[LD1].u.dma.pad_value = 18;
    check_layers(g, &tp, 1, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) != 0);

    /* A LOAD reads a window one column off: tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[LD1].u.dma.dram += C;
    check_layers(g, &tp, 1, got, __LINE__);

    /* A tile's last row is never stored: tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[S11].u.dma.rows = 2;
    check_layers(g, &tp, 1, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) != 0);

    /* A tile is stored to the wrong place (over another tile): tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[S11] = store_conv(POP_PREV, 325, 0, 1);
    check_layers(g, &tp, 1, got, __LINE__);

    /* The two channel blocks use the same weights for different channels:
     * the tiles' blocks agree wherever they share channels, so it runs
     * whole, with the tiles' bytes. */
    build(&tp, g, nc, na, 0);
    tp.insns[C01].u.conv.wgt_dram = 0;
    tp.insns[C11].u.conv.wgt_dram = 0;
    tp.insns[C01].u.conv.wgt_addr = 0;
    tp.insns[C11].u.conv.wgt_addr = 0;
    check_layers(g, &tp, 2, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) != 0);

    /* The add reads the conv's ACT tiles (what the LOADs of its segment
     * left of them) instead of its LOADed copy: both run as tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[V].u.vec.src[0].addr = 190;
    tp.insns[V].u.vec.dst.addr = 600;
    tp.insns[V + 1].u.dma.sram = 600;
    check_layers(g, &tp, 0, got, __LINE__);

    /* Another layer's STORE writes the conv's output between its tiles'
     * STOREs (the store queue keeps program order): tiles (the add, now
     * in two segments, too). */
    build(&tp, g, nc, na, 0);
    insert_insn(&tp, S11, dense(DNA_STORE, 0, 600, CONV_AT));
    check_layers(g, &tp, 0, got, __LINE__);

    /* Another layer's STORE writes x's rows among the tiles' (zeros from
     * unwritten ACT): where the layer can run depends on when the LOADs
     * read those rows; the bytes must not. */
    for (int row = 0; row < H; row += 2)
        for (int at = S00; at <= S01; at += S01 - S00) {
            build(&tp, g, nc, na, 0);
            dna_insn st = load(1, 0, DNA_MEM_ACT, 600, X_AT + (int64_t)row * W * C, 1, 1, W * C, 0, 0, 0, 0);
            st.opcode = DNA_STORE;
            insert_insn(&tp, at, st);
            check_layers(g, &tp, -1, got, __LINE__);
        }
    mera_graph_free(g);
}

/* Row band t (rows 3t .. 3t+2) of the add, its sources at a and b, its
 * destination at dst in ACT. */
static dna_insn add_band(int deps, uint32_t a, uint32_t b, uint32_t dst, int t)
{
    dna_insn v = add_vec(deps, a, b, dst);
    v.u.vec.src[0].ext[1] = v.u.vec.src[1].ext[1] = v.u.vec.dst.ext[1] = 3;
    v.u.vec.origin[1] = 3 * t;
    return v;
}

/* A dense DMA of the add layer moving row band t of the tensor at dram. */
static dna_insn band_dma(int opcode, int deps, uint32_t sram, int64_t dram, int t)
{
    dna_insn in = load(1, deps, DNA_MEM_ACT, sram, dram + (int64_t)t * 3 * W * O, 1, 1, 3 * W * O, 0, 0, 0, 0);
    in.opcode = (uint8_t)opcode;
    return in;
}

/* The add segment of build(.., 0) run whole, and refused, each variant
 * with the bytes of the machine without (check_layers); the conv layer
 * runs whole in every variant but where another layer's instruction is
 * put in the add's segment (then it spans two segments). */
static void test_vec_layers_run_whole(void)
{
    int nc, na;
    mera_graph *g = make_graph(&nc, &na);
    const void *params[] = {NULL, w_data, b_data, NULL};
    uint8_t want[H * W * O], got[H * W * O];
    reference(g, params, want);
    test_prog tp;
    enum { L1 = ADD_SEG, L2, V, S };

    /* Two row bands of 3 rows, each its own LOADs, VEC and STORE. The
     * split rule of this add wants bands of 32 rows (TensorIterator walks
     * the whole tensor as one row: its scalar tail is the last 180 % 64
     * elements), so the tiles' bytes are not the whole's: tiles. */
    build(&tp, g, nc, na, 0);
    {
        dna_insn seg[] = {band_dma(DNA_LOAD, 0, 0, CONV_AT, 0), band_dma(DNA_LOAD, PUSH_NEXT, 90, Y_AT, 0),
                          add_band(POP_PREV | PUSH_NEXT, 0, 90, 180, 0), band_dma(DNA_STORE, POP_PREV, 180, ADD_AT, 0),
                          band_dma(DNA_LOAD, 0, 270, CONV_AT, 1), band_dma(DNA_LOAD, PUSH_NEXT, 360, Y_AT, 1),
                          add_band(POP_PREV | PUSH_NEXT, 270, 360, 450, 1), band_dma(DNA_STORE, POP_PREV, 450, ADD_AT, 1)};
        with_add_segment(&tp, seg, 8);
        check_layers(g, &tp, 1, got, __LINE__);
        CHECK(memcmp(got, want, sizeof got) != 0);
    }

    /* y's LOAD reads the wrong region (one pixel on): tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[L2].u.dma.dram += O;
    check_layers(g, &tp, 1, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) != 0);

    /* The VEC reads its second source from the conv output's LOAD box
     * (add(conv, conv)): that LOAD is not y's: tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[V].u.vec.src[1].addr = 0;
    check_layers(g, &tp, 1, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) != 0);

    /* ... or from bytes that straddle both LOAD boxes: tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[V].u.vec.src[1].addr = 90;
    check_layers(g, &tp, 1, got, __LINE__);

    /* In place (the destination is the first source): runs whole. */
    build(&tp, g, nc, na, 0);
    tp.insns[V].u.vec.dst.addr = 0;
    tp.insns[S].u.dma.sram = 0;
    check_layers(g, &tp, 2, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0);

    /* The tile stored twice: tiles. */
    build(&tp, g, nc, na, 0);
    tp.insns[S + 1] = tp.insns[S];
    tp.insns[S + 1].deps = 0;
    tp.p.n_insns++;
    tp.segs[1].count++;
    check_layers(g, &tp, 1, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0);

    /* A later instruction (another layer's STORE) reads the add's ACT
     * output after its STORE: the add runs as tiles (and the conv, now in
     * two segments, too). */
    build(&tp, g, nc, na, 0);
    tp.insns[S + 1] = dense(DNA_STORE, 0, 360, CONV_AT);
    tp.insns[S + 1].layer = 0;
    tp.p.n_insns++;
    tp.segs[1].count++;
    check_layers(g, &tp, 0, got, __LINE__);
    CHECK(memcmp(got, want, sizeof got) == 0);

    /* Another layer's STORE zeroes y (from unwritten ACT) after y's LOAD,
     * before the VEC: the add may run whole only before that STORE (at
     * y's LOAD) and reads y as its LOAD did. Put before y's LOAD instead:
     * it reads the zeros, after the STORE. Either way the tiles' bytes. */
    for (int before = 0; before < 2; before++) {
        build(&tp, g, nc, na, 0);
        dna_insn zero = dense(DNA_STORE, POP_PREV | PUSH_PREV, 600, Y_AT);
        zero.layer = 0;
        if (!before) {
            dna_insn seg[] = {tp.insns[L1], tp.insns[L2], nop(POP_PREV | PUSH_NEXT), zero,
                              add_vec(POP_NEXT | PUSH_NEXT, 0, 180, 360), tp.insns[S]};
            with_add_segment(&tp, seg, 6);
        } else {
            dna_insn l1 = tp.insns[L1], l2 = tp.insns[L2];
            l1.deps = PUSH_NEXT;
            l2.deps = POP_NEXT | PUSH_NEXT;
            dna_insn seg[] = {l1, nop(POP_PREV | PUSH_NEXT), zero, nop(POP_NEXT | PUSH_PREV), l2,
                              add_vec(POP_PREV | PUSH_NEXT, 0, 180, 360), tp.insns[S]};
            with_add_segment(&tp, seg, 7);
        }
        check_layers(g, &tp, 1, got, __LINE__);
        CHECK((memcmp(got, want, sizeof got) == 0) == !before);
    }
    mera_graph_free(g);
}

/* A concat layer (x and y along channels, requantized) as two row bands,
 * each LOAD x band, LOAD y band, VEC, STORE: runs whole with the tiles'
 * bytes; with y's second LOAD a row off, its tiles run. */
enum { CAT_C = C + O, CAT_OUT = Y_AT + H * W * O, CAT_DRAM = CAT_OUT + H * W * CAT_C };

static int run_concat(const mera_graph *g, dna_program *p, int layers, int threads, uint8_t *out, int *whole)
{
    setenv("MERA_SIM_LAYERS", layers ? "1" : "0", 1);
    mera_error err;
    err.msg[0] = 0;
    dna_machine_options mo = {.threads = threads};
    dna_machine *m = dna_machine_new_opts(g, p, mera_platform_find("DNAF100L0003"), NULL, &mo, &err);
    unsetenv("MERA_SIM_LAYERS");
    CHECK(m != NULL);
    if (!m) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 0;
    }
    *whole = dna_machine_layers_run_whole(m);
    const void *inputs[] = {x_data, y_data};
    void *outputs[] = {out};
    int ok = dna_machine_run(m, inputs, outputs, &err) == MERA_OK;
    if (!ok)
        fprintf(stderr, "run: %s\n", err.msg);
    CHECK(ok);
    dna_machine_free(m);
    return ok;
}

static void test_concat_runs_whole(void)
{
    mera_graph *g = mera_graph_new("catnet");
    mera_error err;
    int64_t xs[] = {1, H, W, C}, ys[] = {1, H, W, O};
    mera_type x = qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_NHWC, 0.05, 17);
    mera_type y = qtensor(MERA_DTYPE_UINT8, 4, ys, MERA_LAYOUT_NHWC, 0.03, 100);
    int vx = mera_graph_add_input(g, "x", &x, &err), vy = mera_graph_add_input(g, "y", &y, &err);
    mera_attr a[] = {integer("axis", 3), flt("out_scale", 0.04), integer("out_zero_point", 60)};
    int ins[] = {vx, vy}, out[4];
    int node = mera_graph_add_node(g, MERA_OP_CONCAT, "cat", ins, 2, a, 3, NULL, out, 4, &err);
    CHECK(node >= 0 && mera_graph_set_outputs(g, out, 1, &err) == MERA_OK);
    uint8_t want[H * W * CAT_C], off[H * W * CAT_C], on[H * W * CAT_C];
    mera_interp *it = mera_interp_compile(g, MERA_INTERP_HW, NULL, &err);
    CHECK(it != NULL);
    const void *inputs[] = {x_data, y_data};
    void *outputs[] = {want};
    CHECK(it && mera_interp_run(it, inputs, outputs, &err) == MERA_OK);
    mera_interp_free(it);
    for (int variant = 0; variant < 2; variant++) {
        dna_layer layer = {node, 0, 0};
        dna_insn in[8];
        const int rows = H / 2;
        for (int t = 0; t < 2; t++) {
            uint32_t base = (uint32_t)t * 400; /* each band its own ACT: no reuse, no hazard */
            in[4 * t] = load(0, 0, DNA_MEM_ACT, base, X_AT + (int64_t)t * rows * W * C, rows, W, C, W * C, C, W * C, C);
            int64_t y_row = t * rows + (variant && t == 1 ? -1 : 0);
            in[4 * t + 1] = load(0, PUSH_NEXT, DNA_MEM_ACT, base + 100, Y_AT + y_row * W * O, rows, W, O, W * O, O,
                                 W * O, O);
            dna_insn v;
            memset(&v, 0, sizeof v);
            v.opcode = DNA_VEC;
            v.deps = POP_PREV | PUSH_NEXT;
            v.u.vec.n_src = 2;
            int32_t ex[4] = {1, rows, W, C}, ey[4] = {1, rows, W, O}, ed[4] = {1, rows, W, CAT_C};
            v.u.vec.src[0].addr = base;
            v.u.vec.src[1].addr = base + 100;
            v.u.vec.dst.addr = base + 200;
            memcpy(v.u.vec.src[0].ext, ex, sizeof ex);
            memcpy(v.u.vec.src[1].ext, ey, sizeof ey);
            memcpy(v.u.vec.dst.ext, ed, sizeof ed);
            v.u.vec.origin[1] = t * rows;
            in[4 * t + 2] = v;
            dna_insn st = load(0, POP_PREV, DNA_MEM_ACT, base + 200, CAT_OUT + (int64_t)t * rows * W * CAT_C, rows, W,
                               CAT_C, W * CAT_C, CAT_C, W * CAT_C, CAT_C);
            st.opcode = DNA_STORE;
            in[4 * t + 3] = st;
        }
        dna_segment seg = {DNA_SEG_DNA, 0, 0, 8, H * W * (C + O), H * W * CAT_C};
        int64_t value_dram[3] = {X_AT, Y_AT, CAT_OUT};
        dna_program p;
        memset(&p, 0, sizeof p);
        p.version = DNA_ISA_VERSION;
        strcpy(p.platform, "DNAF100L0003");
        p.n_layers = 1;
        p.layers = &layer;
        p.n_insns = 8;
        p.insns = in;
        p.n_segments = 1;
        p.segments = &seg;
        p.n_values = 3;
        p.value_dram = value_dram;
        p.params_bytes = X_AT; /* an empty constant image before x */
        p.params_image = calloc(X_AT, 1);
        p.dram_bytes = CAT_DRAM;
        p.act_bytes = 1024;
        p.wgt_bytes = 256;
        p.acc_bytes = 1024;
        for (int threads = 1; threads <= 7; threads += threads == 1 ? 1 : 5) {
            int w0 = -1, w1 = -1;
            if (!run_concat(g, &p, 0, threads, off, &w0) || !run_concat(g, &p, 1, threads, on, &w1))
                continue;
            int ok = w0 == 0 && w1 == !variant && memcmp(off, on, sizeof on) == 0 &&
                     (memcmp(on, want, sizeof on) == 0) == !variant;
            if (!ok)
                fprintf(stderr, "concat variant %d, %d threads: run whole %d / %d, same %d\n", variant, threads, w0, w1,
                        memcmp(off, on, sizeof on) == 0);
            CHECK(ok);
        }
        free(p.params_image);
    }
    mera_graph_free(g);
}

int main(void)
{
    fill_data();
    test_bit_exact();
    test_errors();
    test_unwritten_reads_zero_every_run();
    test_one_rule_set();
    test_timing_formulas();
    test_forwarding();
    test_layers_run_whole();
    test_concat_runs_whole();
    test_vec_layers_run_whole();
    return test_summary();
}
