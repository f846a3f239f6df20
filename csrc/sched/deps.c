/* Dependency tokens from a sequential instruction order.
 *
 * The scheduler writes a segment as one sequential list: tile after tile,
 * each tile's loads, compute and store in that order. The hardware runs
 * three queues concurrently, so every ordering the list relies on between
 * two queues must become a token (isa.h). For each instruction X, in list
 * order, and each other queue Q, the latest earlier instruction Y of Q that
 * touches memory X also touches, with at least one of them writing, must
 * finish before X starts:
 *
 *   Q adjacent to X's queue  X pops a token that Y pushes
 *   LOAD <-> STORE           a NOP on the compute queue pops Y's token and
 *                            pushes one that X pops
 *
 * A vector clock per instruction (the latest instruction of each queue
 * known to have finished before it starts) skips orderings that queue
 * order and earlier tokens already imply, so the tokens are few and every
 * direction's pops and pushes pair up in FIFO order: a pop always names a
 * later producer than the previous pop of its direction did. Every wait
 * points backwards in the list, so the program cannot deadlock. */
#include <stdlib.h>
#include <string.h>

#include "sched/emit.h"

void sched_list_free(sched_list *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

sched_item *sched_push(sched_list *l, int opcode, int layer)
{
    if (l->failed)
        return NULL;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        sched_item *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) {
            l->failed = 1;
            return NULL;
        }
        l->v = v;
        l->cap = cap;
    }
    sched_item *it = &l->v[l->n++];
    memset(it, 0, sizeof *it);
    it->insn.opcode = (uint8_t)opcode;
    it->insn.layer = layer;
    return it;
}

void sched_range_add(sched_item *it, int space, int write, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return;
    MERA_ASSERT(it->n_rng < SCHED_MAX_RANGES);
    sched_range *r = &it->rng[it->n_rng++];
    r->space = (uint8_t)space;
    r->write = (uint8_t)write;
    r->lo = lo;
    r->hi = hi;
}

void sched_dma_ranges(sched_item *it)
{
    const dna_dma *d = &it->insn.u.dma;
    int load = it->insn.opcode == DNA_LOAD;
    if (d->rows <= 0 || d->cols <= 0 || d->run_bytes <= 0)
        return;
    int64_t s_hi = d->sram + (int64_t)(d->rows - 1) * d->sram_row_stride + (int64_t)(d->cols - 1) * d->sram_col_stride +
                   d->run_bytes;
    int space = load && d->mem == DNA_MEM_WGT ? SPACE_WGT : SPACE_ACT;
    sched_range_add(it, space, load, d->sram, s_hi);
    int r0 = d->pad_top, r1 = d->rows - d->pad_bottom, c0 = d->pad_left, c1 = d->cols - d->pad_right;
    if (r1 > r0 && c1 > c0) {
        int64_t lo = d->dram + r0 * d->dram_row_stride + c0 * d->dram_col_stride;
        int64_t hi = d->dram + (int64_t)(r1 - 1) * d->dram_row_stride + (int64_t)(c1 - 1) * d->dram_col_stride +
                     d->run_bytes;
        sched_range_add(it, SPACE_DRAM, !load, lo, hi);
    }
}

static int queue_of(const sched_item *it)
{
    return dna_opcode_queue(it->insn.opcode);
}

static int conflicts(const sched_item *a, const sched_item *b)
{
    for (int i = 0; i < a->n_rng; i++)
        for (int j = 0; j < b->n_rng; j++) {
            const sched_range *x = &a->rng[i], *y = &b->rng[j];
            if (x->space == y->space && (x->write || y->write) && x->lo < y->hi && y->lo < x->hi)
                return 1;
        }
    return 0;
}

typedef struct {
    int64_t c[DNA_NUM_QUEUES]; /* per queue: latest output index known finished, or -1 */
} vclock;

static void vmerge(vclock *a, const vclock *b)
{
    for (int q = 0; q < DNA_NUM_QUEUES; q++)
        if (b->c[q] > a->c[q])
            a->c[q] = b->c[q];
}

typedef struct {
    sched_list *out;
    vclock *clk;          /* per output item: what is finished when it starts */
    int cap;
    int64_t last_in_queue[DNA_NUM_QUEUES];
} solver;

static int grow_clocks(solver *s)
{
    if (s->out->n <= s->cap)
        return 1;
    int cap = s->out->cap;
    vclock *c = realloc(s->clk, (size_t)cap * sizeof *c);
    if (!c)
        return 0;
    s->clk = c;
    s->cap = cap;
    return 1;
}

/* The clock an item starts with: everything finished before the previous
 * item of its own queue started, plus that item itself. */
static vclock start_clock(const solver *s, int q)
{
    vclock v = {{-1, -1, -1}};
    int64_t prev = s->last_in_queue[q];
    if (prev >= 0) {
        v = s->clk[prev];
        v.c[q] = prev;
    }
    return v;
}

/* Make item x (output index xi, queue qx) wait for item y (index yi) of an
 * adjacent queue, unless its clock already says y is done. */
static void wait_adjacent(solver *s, int64_t xi, int64_t yi)
{
    sched_item *x = &s->out->v[xi], *y = &s->out->v[yi];
    int qx = queue_of(x), qy = queue_of(y);
    vclock *cx = &s->clk[xi];
    if (cx->c[qy] >= yi)
        return;
    if (qy == qx - 1) {
        x->insn.deps |= DNA_DEP_POP_PREV;
        y->insn.deps |= DNA_DEP_PUSH_NEXT;
    } else {
        MERA_ASSERT(qy == qx + 1);
        x->insn.deps |= DNA_DEP_POP_NEXT;
        y->insn.deps |= DNA_DEP_PUSH_PREV;
    }
    vclock cy = s->clk[yi];
    cy.c[qy] = yi;
    vmerge(cx, &cy);
}

mera_status sched_solve_deps(const sched_list *in, sched_list *out, mera_error *err)
{
    solver s = {.out = out};
    const int64_t base = out->n; /* out may hold earlier segments: never look at them */
    for (int q = 0; q < DNA_NUM_QUEUES; q++)
        s.last_in_queue[q] = -1;
    for (int i = 0; i < in->n; i++) {
        const sched_item *x = &in->v[i];
        int qx = queue_of(x);
        MERA_ASSERT(qx >= 0);
        /* The latest conflicting earlier item of each other queue, found
         * among the already emitted ones (NOPs touch nothing). */
        int64_t need[DNA_NUM_QUEUES] = {-1, -1, -1};
        int found = 0, wanted = 0;
        for (int q = 0; q < DNA_NUM_QUEUES; q++)
            if (q != qx && s.last_in_queue[q] >= 0)
                wanted++;
        for (int64_t j = (int64_t)out->n - 1; j >= base && found < wanted; j--) {
            const sched_item *y = &out->v[j];
            int qy = queue_of(y);
            if (qy == qx || need[qy] >= 0)
                continue;
            if (conflicts(x, y)) {
                need[qy] = j;
                found++;
            }
        }
        /* A load waiting for a store, or a store for a load: route through
         * a NOP first. */
        int far = qx == DNA_Q_LOAD ? DNA_Q_STORE : qx == DNA_Q_STORE ? DNA_Q_LOAD : -1;
        int64_t nop_at = -1;
        if (far >= 0 && need[far] >= 0) {
            vclock probe = start_clock(&s, qx);
            if (need[DNA_Q_COMPUTE] >= 0) { /* the adjacent wait may already imply it */
                vclock cy = s.clk[need[DNA_Q_COMPUTE]];
                cy.c[DNA_Q_COMPUTE] = need[DNA_Q_COMPUTE];
                vmerge(&probe, &cy);
            }
            if (probe.c[far] < need[far]) {
                sched_item *nop = sched_push(out, DNA_NOP, x->insn.layer);
                if (!nop || !grow_clocks(&s))
                    goto nomem;
                nop_at = out->n - 1;
                s.clk[nop_at] = start_clock(&s, DNA_Q_COMPUTE);
                s.last_in_queue[DNA_Q_COMPUTE] = nop_at;
                wait_adjacent(&s, nop_at, need[far]);
            }
        }
        sched_item *y = sched_push(out, x->insn.opcode, x->insn.layer);
        if (!y || !grow_clocks(&s))
            goto nomem;
        *y = *x;
        y->insn.deps = 0;
        int64_t xi = out->n - 1;
        s.clk[xi] = start_clock(&s, qx);
        s.last_in_queue[qx] = xi;
        if (nop_at >= 0)
            wait_adjacent(&s, xi, nop_at);
        for (int q = 0; q < DNA_NUM_QUEUES; q++)
            if (need[q] >= 0 && (q == qx - 1 || q == qx + 1))
                wait_adjacent(&s, xi, need[q]);
    }
    free(s.clk);
    return MERA_OK;
nomem:
    free(s.clk);
    return mera_fail(err, MERA_ERR_NOMEM, "out of memory solving DNA program dependencies");
}
