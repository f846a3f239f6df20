/* C tests of the DNA disassembler (isa/disasm.c): a scheduled small graph
 * (conv, add, and a host softmax) disassembles to text that holds every
 * instruction, layer and segment with its fields, the same text every
 * time and after a serialize/deserialize round trip; a malformed program
 * still disassembles, every instruction once. Built and run by
 * tests/test_c_core.py; prints "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/platform.h"
#include "isa/isa.h"
#include "sched/sched.h"
#include "testutil.h"

enum { H = 8, W = 6, C = 4, O = 8 };

static int8_t w_data[O * C * 3 * 3];
static float b_data[O];

static mera_graph *make_graph(void)
{
    mera_graph *g = mera_graph_new("disasm");
    mera_error err;
    int64_t xs[] = {1, H, W, C}, ys[] = {1, H, W, O}, ws[] = {O, C, 3, 3}, bs[] = {O};
    mera_type x = qtensor(MERA_DTYPE_UINT8, 4, xs, MERA_LAYOUT_NHWC, 0.05, 17);
    mera_type y = qtensor(MERA_DTYPE_UINT8, 4, ys, MERA_LAYOUT_NHWC, 0.03, 100);
    double scales[O];
    int32_t zps[O] = {0};
    for (int o = 0; o < O; o++)
        scales[o] = 0.01 + 0.001 * o;
    mera_type w = qtensor_axis(MERA_DTYPE_INT8, 4, ws, 0, O, scales, zps);
    mera_type b = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    for (size_t i = 0; i < sizeof w_data; i++)
        w_data[i] = (int8_t)((int)(i * 37 % 255) - 127);
    for (int o = 0; o < O; o++)
        b_data[o] = (float)o * 0.25f - 1.0f;
    int vx = mera_graph_add_input(g, "x", &x, &err);
    int vw = mera_graph_add_param(g, "w", &w, &err);
    int vb = mera_graph_add_param(g, "b", &b, &err);
    int vy = mera_graph_add_input(g, "y", &y, &err);
    int64_t pad[] = {1, 1, 1, 1};
    mera_attr a[] = {ints("padding", 4, pad), str("layout", "NHWC"), str("activation", "relu"),
                     flt("out_scale", 0.04), integer("out_zero_point", 3)};
    int ins[] = {vx, vw, vb}, out[4];
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "conv", ins, 3, a, 5, NULL, out, 4, &err) >= 0);
    int add_in[] = {out[0], vy};
    mera_attr aa[] = {flt("out_scale", 0.06), integer("out_zero_point", 50)};
    CHECK(mera_graph_add_node(g, MERA_OP_ADD, "add", add_in, 2, aa, 2, NULL, out, 4, &err) >= 0);
    mera_attr sa[] = {flt("out_scale", 1.0 / 256), integer("out_zero_point", 0)};
    CHECK(mera_graph_add_node(g, MERA_OP_SOFTMAX, "soft'max", out, 1, sa, 2, NULL, out, 4, &err) >= 0);
    CHECK(mera_graph_set_outputs(g, out, 1, &err) == MERA_OK);
    return g;
}

/* The line of instruction i: it starts with the index, right-aligned. */
static const char *insn_line(const char *text, int i, char *line, size_t n)
{
    char head[32];
    snprintf(head, sizeof head, "\n  %5d ", i);
    const char *at = strstr(text, head);
    if (!at || strstr(at + 1, head)) /* exactly one line per instruction */
        return NULL;
    at += 1;
    size_t len = strcspn(at, "\n");
    if (len >= n)
        len = n - 1;
    memcpy(line, at, len);
    line[len] = 0;
    return line;
}

/* Every instruction's line holds its opcode, queue, layer and fields. */
static int check_insns(const dna_program *p, const char *text)
{
    int ok = 1;
    for (int i = 0; i < p->n_insns; i++) {
        const dna_insn *in = &p->insns[i];
        char line[1024], want[256];
        if (!insn_line(text, i, line, sizeof line)) {
            fprintf(stderr, "insn %d: no line (or more than one)\n", i);
            ok = 0;
            continue;
        }
        const char *queue = dna_opcode_queue(in->opcode) == DNA_Q_LOAD      ? "load"
                            : dna_opcode_queue(in->opcode) == DNA_Q_COMPUTE ? "compute"
                                                                            : "store";
        snprintf(want, sizeof want, "%s", dna_opcode_name(in->opcode));
        int good = strstr(line, want) && strstr(line, queue);
        snprintf(want, sizeof want, " L%d ", (int)in->layer);
        good &= strstr(line, want) != NULL;
        switch (in->opcode) {
        case DNA_LOAD:
        case DNA_STORE: {
            const dna_dma *d = &in->u.dma;
            snprintf(want, sizeof want, "box=%dx%dx%d", (int)d->rows, (int)d->cols, (int)d->run_bytes);
            good &= strstr(line, want) != NULL;
            snprintf(want, sizeof want, "dram=%lld stride=%lld,%lld", (long long)d->dram,
                     (long long)d->dram_row_stride, (long long)d->dram_col_stride);
            good &= strstr(line, want) != NULL;
            snprintf(want, sizeof want, "%s=%u stride=%u,%u", d->mem == DNA_MEM_WGT ? "WGT" : "ACT",
                     (unsigned)d->sram, (unsigned)d->sram_row_stride, (unsigned)d->sram_col_stride);
            good &= strstr(line, want) != NULL;
            if (in->opcode == DNA_LOAD) {
                snprintf(want, sizeof want, "pad=%d,%d,%d,%d fill=%u", (int)d->pad_top, (int)d->pad_bottom,
                         (int)d->pad_left, (int)d->pad_right, (unsigned)d->pad_value);
                good &= strstr(line, want) != NULL;
            }
            break;
        }
        case DNA_CONV: {
            const dna_conv *c = &in->u.conv;
            snprintf(want, sizeof want, "out=%u:%dx%dx%d <- in=%u:%dx%dx%d wgt=%u oc=%d+%d dws=%d wgt_dram=%lld",
                     (unsigned)c->out_addr, (int)c->out_h, (int)c->out_w, (int)c->oc_n, (unsigned)c->in_addr,
                     (int)c->in_h, (int)c->in_w, (int)c->in_c, (unsigned)c->wgt_addr, (int)c->oc0, (int)c->oc_n,
                     (int)c->depthwise_saturate, (long long)c->wgt_dram);
            good &= strstr(line, want) != NULL;
            snprintf(want, sizeof want, " round=%s", mera_rounding_name((mera_rounding)c->rounding));
            good &= strstr(line, want) != NULL;
            break;
        }
        case DNA_VEC: {
            const dna_vec *v = &in->u.vec;
            for (int s = -1; s < v->n_src; s++) {
                const dna_tile *t = s < 0 ? &v->dst : &v->src[s];
                char name[24];
                snprintf(name, sizeof name, s < 0 ? "dst" : "src%d", s);
                snprintf(want, sizeof want, "%s=%u:%dx%dx%dx%d", name, (unsigned)t->addr, (int)t->ext[0],
                         (int)t->ext[1], (int)t->ext[2], (int)t->ext[3]);
                good &= strstr(line, want) != NULL;
            }
            snprintf(want, sizeof want, " round=%s", mera_rounding_name((mera_rounding)v->rounding));
            good &= strstr(line, want) != NULL;
            break;
        }
        default:
            break;
        }
        /* the tokens, by the queues they go to */
        int q = dna_opcode_queue(in->opcode);
        static const char *const qn[] = {"load", "compute", "store"};
        if (in->deps & DNA_DEP_POP_PREV) {
            snprintf(want, sizeof want, "pop=%s", qn[q - 1]);
            good &= strstr(line, want) != NULL;
        }
        if (in->deps & DNA_DEP_PUSH_NEXT) {
            snprintf(want, sizeof want, "push=%s%s", in->deps & DNA_DEP_PUSH_PREV ? qn[q - 1] : "",
                     in->deps & DNA_DEP_PUSH_PREV ? "," : "");
            good &= strstr(line, want) != NULL && strstr(line, qn[q + 1]) != NULL;
        }
        if (!(in->deps & (DNA_DEP_POP_PREV | DNA_DEP_POP_NEXT)))
            good &= strstr(line, "pop=- ") != NULL;
        if (!good) {
            fprintf(stderr, "insn %d: line lacks a field: %s\n", i, line);
            ok = 0;
        }
    }
    return ok;
}

static void test_scheduled(void)
{
    mera_graph *g = make_graph();
    const void *params[] = {NULL, w_data, b_data, NULL};
    const mera_platform *pf = mera_platform_find("DNAF100L0003");
    mera_sched_options opt;
    memset(&opt, 0, sizeof opt);
    opt.max_tile_height = 2; /* several tiles per layer */
    mera_error err;
    dna_program *p = mera_schedule(g, params, pf, &opt, NULL, &err);
    CHECK(p != NULL);
    if (!p) {
        fprintf(stderr, "schedule: %s\n", err.msg);
        mera_graph_free(g);
        return;
    }
    CHECK(p->n_insns > 10 && p->n_layers == 2 && p->n_segments >= 2);
    char *t1 = NULL, *t2 = NULL, *t3 = NULL, *bare = NULL;
    CHECK(dna_program_disasm(p, g, &t1, &err) == MERA_OK && t1);
    CHECK(dna_program_disasm(p, g, &t2, &err) == MERA_OK && t2);
    CHECK(t1 && t2 && strcmp(t1, t2) == 0); /* deterministic */
    if (getenv("MERA_SHOW_DISASM") && t1)
        fputs(t1, stdout);
    if (t1) {
        CHECK(check_insns(p, t1));
        CHECK(strstr(t1, "; DNA program, ISA version 2, platform 'DNAF100L0003'\n") != NULL);
        CHECK(strstr(t1, " 'conv' conv2d macs=") != NULL);
        CHECK(strstr(t1, " 'add' add macs=0") != NULL);
        CHECK(strstr(t1, " host node=2 'soft\\x27max' softmax\n") != NULL); /* names stay on one line */
        CHECK(strstr(t1, "  v0 'x' input bytes=192 dram=") != NULL);
        CHECK(strstr(t1, "  v1 'w' param bytes=288 dram=-\n") != NULL);
        for (int s = 0; s < p->n_segments; s++) {
            char want[64];
            snprintf(want, sizeof want, "\nsegment %d %s", s, p->segments[s].kind == DNA_SEG_DNA ? "dna" : "host");
            CHECK(strstr(t1, want) != NULL);
        }
        int lines = 0;
        for (const char *c = t1; *c; c++)
            lines += *c == '\n';
        /* header 4 + the tables + one line per instruction and segment */
        CHECK(lines == 4 + 2 + p->n_layers + 2 + p->n_values + 2 * p->n_segments + p->n_insns);
    }
    /* the same text after a round trip through the serialized form */
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(dna_program_serialize(p, &buf, &len, &err) == MERA_OK);
    dna_program *q = dna_program_deserialize(buf, len, mera_graph_num_nodes(g), mera_graph_num_values(g), &err);
    CHECK(q != NULL);
    if (q) {
        CHECK(dna_program_disasm(q, g, &t3, &err) == MERA_OK && t1 && t3 && strcmp(t1, t3) == 0);
        /* without a graph: no names, every instruction all the same */
        CHECK(dna_program_disasm(q, NULL, &bare, &err) == MERA_OK && bare);
        if (bare) {
            CHECK(check_insns(q, bare));
            CHECK(strstr(bare, "'conv'") == NULL && strstr(bare, "\n  L0 node=") != NULL);
        }
    }
    /* a malformed program: segments out of order, every instruction once */
    if (q && q->n_segments >= 2 && q->segments[0].kind == DNA_SEG_DNA && q->segments[0].count > 0) {
        q->segments[0].first = 1;
        q->segments[0].count -= 1;
        char *bad = NULL;
        CHECK(dna_program_disasm(q, g, &bad, &err) == MERA_OK && bad);
        if (bad) {
            CHECK(check_insns(q, bad));
            CHECK(strstr(bad, "\nnot in a segment:\n      0 ") != NULL);
        }
        free(bad);
    }
    free(t1);
    free(t2);
    free(t3);
    free(bare);
    free(buf);
    dna_program_free(q);
    dna_program_free(p);
    mera_graph_free(g);
}

int main(void)
{
    test_scheduled();
    return test_summary();
}
