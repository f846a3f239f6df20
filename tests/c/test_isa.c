/* C tests of the DNA program's serialized form (isa/program.c): a round
 * trip of a small hand-made program gives identical bytes; every
 * truncation and every single-byte change is a clean MERA_ERR_FORMAT;
 * fields out of range (with a valid checksum) are refused with a message
 * naming them. Built and run by tests/test_c_core.py; prints
 * "N passed, M failed". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "isa/isa.h"
#include "util/bytes.h"
#include "testutil.h"

#define N_NODES 5
#define N_VALUES 7

static uint8_t params[96];
static dna_layer layers[2];
static dna_insn insns[7];
static dna_segment segments[3];
static int64_t value_dram[N_VALUES];

/* A conv layer (LOAD input with padding, LOAD weights, CONV, STORE) and a
 * vector layer (an add of two tiles), then a host node. */
static dna_program sample(void)
{
    dna_program p;
    memset(&p, 0, sizeof p);
    memset(layers, 0, sizeof layers);
    memset(insns, 0, sizeof insns);
    memset(segments, 0, sizeof segments);
    for (size_t i = 0; i < sizeof params; i++)
        params[i] = (uint8_t)(i * 37 + 5);
    p.version = DNA_ISA_VERSION;
    strcpy(p.platform, "dna-test");
    layers[0].node = 1;
    layers[0].macs = 123456789012345ll;
    layers[1].node = 3;
    p.n_layers = 2;
    p.layers = layers;

    dna_dma *d = &insns[0].u.dma; /* input window, one pad row on top and a pad column each side */
    insns[0].opcode = DNA_LOAD;
    insns[0].deps = DNA_DEP_PUSH_NEXT;
    insns[0].layer = 0;
    d->mem = DNA_MEM_ACT;
    d->pad_value = 12;
    d->rows = 5;
    d->cols = 10;
    d->run_bytes = 8;
    d->pad_top = 1;
    d->pad_left = 1;
    d->pad_right = 1;
    d->dram = 200 - 8 * 8 - 8; /* (0, 0) of the box lies before the tensor */
    d->dram_row_stride = 8 * 8;
    d->dram_col_stride = 8;
    d->sram = 0;
    d->sram_row_stride = 80;
    d->sram_col_stride = 8;

    d = &insns[1].u.dma; /* weights */
    insns[1].opcode = DNA_LOAD;
    insns[1].layer = 0;
    d->mem = DNA_MEM_WGT;
    d->rows = 1;
    d->cols = 1;
    d->run_bytes = 80;
    d->dram = 16;
    d->sram = 0;

    dna_conv *c = &insns[2].u.conv;
    insns[2].opcode = DNA_CONV;
    insns[2].deps = DNA_DEP_POP_PREV | DNA_DEP_PUSH_NEXT;
    insns[2].layer = 0;
    c->in_addr = 0;
    c->wgt_addr = 0;
    c->out_addr = 512;
    c->in_h = 5;
    c->in_w = 10;
    c->in_c = 8;
    c->out_h = 3;
    c->out_w = 8;
    c->oc0 = 0;
    c->oc_n = 8;
    c->depthwise_saturate = 1;
    c->rounding = MERA_ROUNDING_ZP_BEFORE_ROUNDING;
    c->wgt_dram = 16;

    d = &insns[3].u.dma;
    insns[3].opcode = DNA_STORE;
    insns[3].deps = DNA_DEP_POP_PREV;
    insns[3].layer = 0;
    d->mem = DNA_MEM_ACT;
    d->rows = 3;
    d->cols = 1;
    d->run_bytes = 64;
    d->dram = 1000;
    d->dram_row_stride = 64;
    d->sram = 512;
    d->sram_row_stride = 64;

    dna_vec *v = &insns[4].u.vec;
    insns[4].opcode = DNA_VEC;
    insns[4].layer = 1;
    v->n_src = 2;
    for (int s = 0; s < 3; s++) {
        dna_tile *t = s < 2 ? &v->src[s] : &v->dst;
        t->addr = (uint32_t)(1024 + 256 * s);
        t->ext[0] = 1;
        t->ext[1] = 3;
        t->ext[2] = 8;
        t->ext[3] = 8;
    }
    v->origin[1] = 2;

    insns[5].opcode = DNA_VEC; /* in place: a source may be exactly the destination */
    insns[5].layer = 1;
    insns[5].u.vec.n_src = 1;
    insns[5].u.vec.dst.addr = insns[5].u.vec.src[0].addr = 4000;
    for (int k = 0; k < 4; k++)
        insns[5].u.vec.dst.ext[k] = insns[5].u.vec.src[0].ext[k] = 1;
    insns[6].opcode = DNA_NOP; /* tokens only */
    insns[6].deps = DNA_DEP_POP_NEXT | DNA_DEP_PUSH_PREV;
    insns[6].layer = 1;
    p.n_insns = 7;
    p.insns = insns;

    segments[0].kind = DNA_SEG_DNA;
    segments[0].first = 0;
    segments[0].count = 7;
    segments[0].host_in_bytes = 400;
    segments[0].host_out_bytes = 192;
    segments[1].kind = DNA_SEG_HOST;
    segments[1].node = 4;
    segments[2].kind = DNA_SEG_DNA;
    segments[2].first = 7;
    segments[2].count = 0;
    p.n_segments = 3;
    p.segments = segments;

    for (int i = 0; i < N_VALUES; i++)
        value_dram[i] = i < 2 ? -1 : 100 + 300 * i;
    p.n_values = N_VALUES;
    p.value_dram = value_dram;
    p.params_bytes = sizeof params;
    p.params_image = params;
    p.dram_bytes = 4096;
    p.act_bytes = 8192;
    p.wgt_bytes = 1024;
    p.acc_bytes = 4096;
    return p;
}

/* Rewrite the trailing checksum after editing bytes by hand. */
static void rechecksum(uint8_t *b, size_t len)
{
    uint64_t h = mera_fnv1a64(b, len - 8);
    for (int i = 0; i < 8; i++)
        b[len - 8 + i] = (uint8_t)(h >> (8 * i));
}

static void test_round_trip(void)
{
    dna_program p = sample();
    mera_error err;
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    CHECK(dna_program_serialize(&p, &buf, &len, &err) == MERA_OK);
    CHECK(len > 16 && memcmp(buf, "MERADNA\n", 8) == 0);
    CHECK(buf[8] == DNA_ISA_VERSION && buf[9] == 0 && buf[10] == 0 && buf[11] == 0);
    dna_program *q = dna_program_deserialize(buf, len, N_NODES, N_VALUES, &err);
    if (!q)
        fprintf(stderr, "deserialize: %s\n", err.msg);
    CHECK(q != NULL);
    if (!q) {
        free(buf);
        return;
    }
    CHECK(q->version == DNA_ISA_VERSION && strcmp(q->platform, "dna-test") == 0);
    CHECK(q->n_layers == 2 && q->layers[0].macs == 123456789012345ll && q->layers[1].node == 3);
    CHECK(q->n_insns == 7 && q->insns[6].opcode == DNA_NOP && q->insns[6].deps == (DNA_DEP_POP_NEXT | DNA_DEP_PUSH_PREV));
    CHECK(q->insns[0].opcode == DNA_LOAD && q->insns[0].u.dma.pad_value == 12);
    CHECK(q->insns[0].u.dma.dram == p.insns[0].u.dma.dram && q->insns[2].u.conv.depthwise_saturate == 1);
    CHECK(q->insns[2].u.conv.rounding == MERA_ROUNDING_ZP_BEFORE_ROUNDING);
    CHECK(q->insns[2].deps == (DNA_DEP_POP_PREV | DNA_DEP_PUSH_NEXT));
    CHECK(q->insns[4].u.vec.n_src == 2 && q->insns[4].u.vec.src[1].addr == 1280 && q->insns[4].u.vec.origin[1] == 2);
    CHECK(q->n_segments == 3 && q->segments[1].node == 4 && q->segments[0].host_out_bytes == 192);
    CHECK(q->n_values == N_VALUES && q->value_dram[0] == -1 && q->value_dram[6] == 1900);
    CHECK(q->params_bytes == (int64_t)sizeof params && memcmp(q->params_image, params, sizeof params) == 0);
    CHECK(q->dram_bytes == 4096 && q->act_bytes == 8192 && q->wgt_bytes == 1024 && q->acc_bytes == 4096);
    CHECK(dna_program_serialize(q, &buf2, &len2, &err) == MERA_OK);
    CHECK(len2 == len && memcmp(buf, buf2, len) == 0);
    /* graph counts unknown (-1): not checked */
    dna_program *q2 = dna_program_deserialize(buf, len, -1, -1, &err);
    CHECK(q2 != NULL);
    dna_program_free(q2);
    /* the graph's counts are checked when given */
    CHECK(dna_program_deserialize(buf, len, N_NODES, N_VALUES + 1, &err) == NULL);
    CHECK_MSG(err, "value table has 7 entries, the graph 8 values");
    CHECK(dna_program_deserialize(buf, len, 4, N_VALUES, &err) == NULL);
    CHECK_MSG(err, "segments[1] (HOST): field node = 4 out of range (4 nodes)");
    dna_program_free(q);
    free(buf2);

    /* every truncation, and every single-byte change, is a clean error */
    int trunc_ok = 1, flip_ok = 1;
    for (size_t n = 0; n < len; n++) {
        err.code = MERA_OK;
        dna_program *t = dna_program_deserialize(buf, n, N_NODES, N_VALUES, &err);
        trunc_ok &= t == NULL && err.code == MERA_ERR_FORMAT;
        dna_program_free(t);
    }
    CHECK(trunc_ok);
    uint8_t *m = malloc(len);
    static const uint8_t xors[] = {0x01, 0x80, 0xff, 0x5a};
    for (size_t i = 0; i < len; i++)
        for (size_t x = 0; x < sizeof xors; x++) {
            memcpy(m, buf, len);
            m[i] ^= xors[x];
            err.code = MERA_OK;
            dna_program *t = dna_program_deserialize(m, len, N_NODES, N_VALUES, &err);
            flip_ok &= t == NULL && err.code == MERA_ERR_FORMAT;
            dna_program_free(t);
        }
    CHECK(flip_ok);
    /* an extra byte */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    CHECK(dna_program_deserialize(longer, len + 1, N_NODES, N_VALUES, &err) == NULL && err.code == MERA_ERR_FORMAT);
    free(longer);

    /* another version says both */
    memcpy(m, buf, len);
    m[8] = 3;
    rechecksum(m, len);
    CHECK(dna_program_deserialize(m, len, N_NODES, N_VALUES, &err) == NULL);
    CHECK(err.code == MERA_ERR_FORMAT);
    CHECK_MSG(err, "ISA version 3");
    CHECK_MSG(err, "reads version 2");
    memcpy(m, buf, len);
    m[0] = 'X';
    CHECK(dna_program_deserialize(m, len, N_NODES, N_VALUES, &err) == NULL);
    CHECK_MSG(err, "bad magic");
    memcpy(m, buf, len);
    m[len / 2] ^= 1;
    CHECK(dna_program_deserialize(m, len, N_NODES, N_VALUES, &err) == NULL);
    CHECK_MSG(err, "checksum");

    /* a huge count with a valid checksum: refused before any allocation */
    memcpy(m, buf, len);
    size_t at_layers = 8 + 4 + 32;
    m[at_layers] = 0xff;
    m[at_layers + 1] = 0xff;
    m[at_layers + 2] = 0xff;
    m[at_layers + 3] = 0x7f;
    rechecksum(m, len);
    CHECK(dna_program_deserialize(m, len, N_NODES, N_VALUES, &err) == NULL);
    CHECK_MSG(err, "layer count 2147483647 needs at least");
    /* a negative count */
    m[at_layers + 3] = 0xff;
    rechecksum(m, len);
    CHECK(dna_program_deserialize(m, len, N_NODES, N_VALUES, &err) == NULL);
    CHECK_MSG(err, "layer count -1 is negative");
    /* an unknown opcode, and a VEC with too many sources (the writer refuses both) */
    size_t at_insns = at_layers + 4 + 2 * 16 + 4;
    memcpy(m, buf, len);
    m[at_insns] = 9;
    rechecksum(m, len);
    CHECK(dna_program_deserialize(m, len, N_NODES, N_VALUES, &err) == NULL);
    CHECK_MSG(err, "insn 0: field opcode = 9 is unknown");
    size_t at_vec = at_insns + 3 * (8 + 68) + (8 + 56) + 8;
    memcpy(m, buf, len);
    CHECK(m[at_vec] == 2); /* n_src of instruction 4 */
    m[at_vec] = DNA_MAX_SRC + 1;
    rechecksum(m, len);
    CHECK(dna_program_deserialize(m, len, N_NODES, N_VALUES, &err) == NULL);
    CHECK_MSG(err, "insn 4 (VEC): field n_src = 9 not in [1, 8]");
    free(m);
    free(buf);
}

/* Edit one field of the sample, serialize (valid checksum), expect the
 * reader to refuse it with a message containing needle. */
#define EXPECT_BAD(edit, needle)                                                        \
    do {                                                                                \
        dna_program p = sample();                                                       \
        edit;                                                                           \
        uint8_t *b = NULL;                                                              \
        size_t n = 0;                                                                   \
        mera_error e;                                                                   \
        CHECK(dna_program_serialize(&p, &b, &n, &e) == MERA_OK);                        \
        dna_program *q = dna_program_deserialize(b, n, N_NODES, N_VALUES, &e);          \
        CHECK(q == NULL && e.code == MERA_ERR_FORMAT);                                  \
        CHECK_MSG(e, needle);                                                           \
        dna_program_free(q);                                                            \
        free(b);                                                                        \
    } while (0)

static void test_fields(void)
{
    EXPECT_BAD(p.insns[2].layer = 99, "DNA program: insn 2 (CONV): field layer = 99 outside [0, 2)");
    EXPECT_BAD(p.insns[3].layer = -1, "insn 3 (STORE): field layer = -1 outside [0, 2)");
    EXPECT_BAD(p.insns[1].deps = 0x10, "insn 1 (LOAD, layer 0): field deps = 0x10");
    EXPECT_BAD(p.insns[1].reserved = 3, "insn 1 (LOAD, layer 0): field reserved = 3");
    EXPECT_BAD(p.layers[1].node = N_NODES, "layers[1]: field node = 5 out of range (5 nodes)");
    EXPECT_BAD(p.layers[0].reserved = 1, "layers[0]: field reserved = 1");
    EXPECT_BAD(p.value_dram[3] = 4096, "value_dram[3] = 4096");
    EXPECT_BAD(p.value_dram[3] = -2, "value_dram[3] = -2");
    EXPECT_BAD(p.params_bytes = 64; p.dram_bytes = 32; for (int i = 0; i < N_VALUES; i++) p.value_dram[i] = -1,
               "params_bytes/dram_bytes = 64/32");
    EXPECT_BAD(p.segments[0].count = 8, "segments[0] (DNA): instructions [0, +8) outside the 7 instructions");
    EXPECT_BAD(p.segments[2].first = 8, "segments[2] (DNA)");
    EXPECT_BAD(p.insns[6].layer = 2, "insn 6 (NOP): field layer = 2 outside [0, 2)");
    EXPECT_BAD(p.segments[1].node = N_NODES, "segments[1] (HOST): field node = 5 out of range");
    EXPECT_BAD(p.segments[1].kind = 3, "segments[1]: field kind = 3");
    EXPECT_BAD(p.insns[0].u.dma.rows = -1, "insn 0 (LOAD, layer 0): field rows/cols/run_bytes must be >= 1, got -1/10/8");
    EXPECT_BAD(p.insns[0].u.dma.run_bytes = -8, "got 5/10/-8");
    EXPECT_BAD(p.insns[0].u.dma.pad_bottom = 5, "field pad_* (1,5,1,1) out of range for a 5x10 box");
    EXPECT_BAD(p.insns[0].u.dma.pad_left = 10, "field pad_* (1,0,10,1) out of range");
    EXPECT_BAD(p.insns[3].u.dma.pad_top = 1, "insn 3 (STORE, layer 0): field pad_*: a STORE has no padding");
    EXPECT_BAD(p.insns[3].u.dma.mem = DNA_MEM_WGT, "insn 3 (STORE, layer 0): field mem = 1");
    EXPECT_BAD(p.insns[1].u.dma.mem = 2, "insn 1 (LOAD, layer 0): field mem = 2");
    EXPECT_BAD(p.insns[1].u.dma.run_bytes = 2000, "1 x 1 x 2000 bytes exceed the WGT buffer of 1024 bytes");
    EXPECT_BAD(p.insns[1].u.dma.sram = 1000, "field sram: the box at 1000");
    EXPECT_BAD(p.insns[3].u.dma.dram = 4000, "field dram: writes DRAM [4000, 4192), outside the activations [96, 4096)");
    EXPECT_BAD(p.insns[0].u.dma.dram = -100, "field dram: reads DRAM [-28, 228)");
    EXPECT_BAD(p.insns[0].u.dma.dram_row_stride = INT64_MAX, "is out of range");
    EXPECT_BAD(p.insns[2].u.conv.oc_n = 0, "insn 2 (CONV, layer 0): fields in_h/in_w/in_c/out_h/out_w/oc_n must be >= 1");
    EXPECT_BAD(p.insns[2].u.conv.depthwise_saturate = 2, "depthwise_saturate must be 0 or 1, got 2");
    EXPECT_BAD(p.insns[2].u.conv.rounding = MERA_ROUNDING_COUNT, "field rounding = 2 is not a rounding mode (0 to 1)");
    EXPECT_BAD(p.insns[4].u.vec.rounding = -1, "insn 4 (VEC, layer 1): field rounding = -1 is not a rounding mode");
    EXPECT_BAD(p.insns[2].u.conv.out_addr = 8190, "output tile");
    EXPECT_BAD(p.acc_bytes = 100, "192 int32 accumulators exceed ACC (100 bytes)");
    EXPECT_BAD(p.insns[2].u.conv.wgt_dram = 96, "field wgt_dram = 96 outside the constant image");
    EXPECT_BAD(p.insns[4].u.vec.src[1].ext[2] = -1, "insn 4 (VEC, layer 1): field src[1].ext[2] = -1 is below 1");
    EXPECT_BAD(p.insns[4].u.vec.dst.addr = 8190, "insn 4 (VEC, layer 1): field dst.addr");
    EXPECT_BAD(p.insns[4].u.vec.origin[0] = -3, "field origin[0] = -3 is negative");
    EXPECT_BAD(p.dram_bytes = -1, "params_bytes/dram_bytes = 96/-1");

    /* the writer refuses what it cannot write */
    dna_program p = sample();
    uint8_t *b = NULL;
    size_t n = 0;
    mera_error e;
    p.insns[4].u.vec.n_src = DNA_MAX_SRC + 1;
    CHECK(dna_program_serialize(&p, &b, &n, &e) != MERA_OK && b == NULL);
    CHECK_MSG(e, "n_src 9");
    p = sample();
    p.insns[0].opcode = 7;
    CHECK(dna_program_serialize(&p, &b, &n, &e) != MERA_OK && b == NULL);
    CHECK_MSG(e, "unknown opcode 7");
    /* an empty program round-trips */
    dna_program z;
    memset(&z, 0, sizeof z);
    z.version = DNA_ISA_VERSION;
    CHECK(dna_program_serialize(&z, &b, &n, &e) == MERA_OK);
    dna_program *q = dna_program_deserialize(b, n, 0, 0, &e);
    CHECK(q && q->n_insns == 0 && q->n_layers == 0 && q->n_values == 0);
    dna_program_free(q);
    free(b);
}

static void test_tables(void)
{
    CHECK(dna_opcode_queue(DNA_LOAD) == DNA_Q_LOAD);
    CHECK(dna_opcode_queue(DNA_CONV) == DNA_Q_COMPUTE);
    CHECK(dna_opcode_queue(DNA_VEC) == DNA_Q_COMPUTE);
    CHECK(dna_opcode_queue(DNA_STORE) == DNA_Q_STORE);
    CHECK(dna_opcode_queue(DNA_NOP) == DNA_Q_COMPUTE);
    CHECK(dna_opcode_queue(0) == -1 && dna_opcode_queue(6) == -1);
    CHECK(strcmp(dna_opcode_name(DNA_CONV), "CONV") == 0 && strcmp(dna_opcode_name(DNA_VEC), "VEC") == 0);
    CHECK(strcmp(dna_opcode_name(DNA_LOAD), "LOAD") == 0 && strcmp(dna_opcode_name(DNA_STORE), "STORE") == 0);
    CHECK(strcmp(dna_opcode_name(DNA_NOP), "NOP") == 0 && strcmp(dna_opcode_name(42), "?") == 0);
    dna_program_free(NULL);
}

int main(void)
{
    test_round_trip();
    test_fields();
    test_tables();
    return test_summary();
}
