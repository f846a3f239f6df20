/* The DNA machine's plans, made once at load from the program alone (the
 * code moved here from machine.c): what a run writes (sim_plan_written) and
 * its kernels' scratch and threads, forwarding (sim_plan_forward), the wave
 * plan for more than one thread (sim_plan_waves) and what a reused run zeroes
 * (sim_plan_zeroed). machine.c loads and calls them; run.c executes what they
 * decided. docs/architecture.md, "The Simulator". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "sim/machine_internal.h"
#include "util/threadpool.h"

/* ---- what a run writes --------------------------------------------------- */

enum { BUF_ACT, BUF_WGT, BUF_DRAM };

static void hull_add(dna_machine *m, int buf, int64_t lo, int64_t hi)
{
    int64_t *w = m->written[buf];
    if (hi <= lo)
        return;
    if (w[0] >= w[1]) {
        w[0] = lo;
        w[1] = hi;
        return;
    }
    w[0] = lo < w[0] ? lo : w[0];
    w[1] = hi > w[1] ? hi : w[1];
}

/* [lo, hi) spanned by a box's rows x cols runs at base with these strides
 * (the extreme corners: strides may be negative on the DRAM side). */
static void box_span(const dna_dma *d, int64_t base, int64_t row_stride, int64_t col_stride, int64_t *lo, int64_t *hi)
{
    *lo = INT64_MAX;
    *hi = INT64_MIN;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            int64_t x = base + (a ? (int64_t)(d->rows - 1) * row_stride : 0) + (b ? (int64_t)(d->cols - 1) * col_stride : 0);
            *lo = x < *lo ? x : *lo;
            *hi = x + d->run_bytes > *hi ? x + d->run_bytes : *hi;
        }
}

/* A box that is one block of bytes on both sides (no padding; one run, or
 * runs and rows that follow each other on both sides): its byte count,
 * else 0. */
int64_t sim_dma_block_bytes(const dna_dma *d)
{
    const int64_t rb = d->run_bytes, row = (int64_t)d->cols * rb;
    if (d->pad_top || d->pad_bottom || d->pad_left || d->pad_right)
        return 0;
    int cols_follow = d->cols == 1 || (d->sram_col_stride == (uint32_t)rb && d->dram_col_stride == rb);
    int rows_follow = d->rows == 1 || ((int64_t)d->sram_row_stride == row && d->dram_row_stride == row);
    return cols_follow && rows_follow ? row * d->rows : 0;
}

/* The hulls of what a run writes in ACT, WGT and the activation DRAM
 * (dna_machine.written), clamped to the buffers: a reused run zeroes just
 * these bytes, so every run starts from the zeroed buffers of a new one
 * without touching pages no run uses. */
void sim_plan_written(dna_machine *m)
{
    const dna_program *prog = m->prog;
    const int64_t base = dna_act_base(prog);
    for (int b = 0; b < 3; b++)
        m->written[b][0] = m->written[b][1] = 0;
    for (int i = 0; i < prog->n_insns; i++) {
        const dna_insn *in = &prog->insns[i];
        int64_t lo, hi;
        switch (in->opcode) {
        case DNA_LOAD:
            box_span(&in->u.dma, in->u.dma.sram, in->u.dma.sram_row_stride, in->u.dma.sram_col_stride, &lo, &hi);
            hull_add(m, in->u.dma.mem == DNA_MEM_WGT ? BUF_WGT : BUF_ACT, lo, hi);
            break;
        case DNA_STORE:
            box_span(&in->u.dma, in->u.dma.dram, in->u.dma.dram_row_stride, in->u.dma.dram_col_stride, &lo, &hi);
            hull_add(m, BUF_DRAM, lo - base, hi - base);
            break;
        case DNA_CONV: {
            const conv_prep *c = m->insn_prep[i];
            hull_add(m, BUF_ACT, in->u.conv.out_addr, in->u.conv.out_addr + (int64_t)mera_type_nbytes(&c->out_t));
            break;
        }
        case DNA_VEC: {
            const vec_prep *v = m->insn_prep[i];
            hull_add(m, BUF_ACT, in->u.vec.dst.addr, in->u.vec.dst.addr + (int64_t)mera_type_nbytes(&v->out_t));
            break;
        }
        }
    }
    for (int v = 0; v < m->n_values; v++) /* graph inputs and host nodes' outputs */
        if (prog->value_dram[v] >= prog->params_bytes)
            hull_add(m, BUF_DRAM, prog->value_dram[v] - base,
                     prog->value_dram[v] - base + (int64_t)mera_type_nbytes(&mera_graph_value(m->g, v)->type));
    const int64_t size[3] = {prog->act_bytes, prog->wgt_bytes, prog->dram_bytes - base};
    for (int b = 0; b < 3; b++) {
        int64_t *w = m->written[b];
        w[0] = w[0] < 0 ? 0 : w[0];
        w[1] = w[1] > size[b] ? size[b] : w[1];
    }
}

/* The scratch a run gives its tiles' kernels (a padded copy of a tile's
 * input, as InterpreterHw plans it in its arena): the largest any prepared
 * kernel asks for, so no tile allocates. */
/* The scratch a prepared kernel asks for (0: none, or not packed). */
static size_t conv_scratch(const conv_prep *c)
{
    mera_kernel_args a;
    if (!c || !c->state || !c->k.scratch)
        return 0;
    sim_conv_args(c, &a);
    return c->k.scratch(&a);
}

static size_t vec_scratch(const vec_prep *v)
{
    mera_kernel_args a;
    if (!v || !v->state || !v->k.scratch)
        return 0;
    sim_vec_args(v, &a);
    return v->k.scratch(&a);
}

void sim_plan_scratch(dna_machine *m)
{
    size_t most = 0, s;
    for (int k = 0; k < m->n_convs; k++)
        most = (s = conv_scratch(m->convs[k])) > most ? s : most;
    for (int k = 0; k < m->n_lruns; k++)
        most = (s = conv_scratch(m->lruns[k].prep) + vec_scratch(m->lruns[k].vprep)) > most ? s : most;
    for (int k = 0; k < m->n_vecs; k++)
        most = (s = vec_scratch(m->vecs[k])) > most ? s : most;
    m->scratch_bytes = most;
    m->scratch_stride = (most + BUF_ALIGN - 1) & ~(size_t)(BUF_ALIGN - 1);
}

/* The thread count of each prepared tile's kernel: num_threads, fewer
 * when a thread would get less than SIM_MIN_THREAD_MACS multiply-adds (a
 * CONV) or SIM_MIN_THREAD_BYTES output bytes (a VEC). A tile is a fraction
 * of its layer, and a pool job per small tile costs more in handing work
 * over than it gains (the thread count never changes a byte). Measured
 * on a quiet 2-core Zen 4 (benchmarks/emulator_speed.py, 2 threads): the
 * bounds 2^18 MACs / 32 KiB, with idle workers put to rest between pooled
 * instructions, took ResNet-50's Simulator from 14.1 to 20.5 ms; these
 * small bounds, with workers that keep spinning, keep 14-16 ms. */
#define SIM_MIN_THREAD_MACS 16384
#define SIM_MIN_THREAD_BYTES 4096

static int prep_threads(int threads, double work, double per_thread)
{
    double most = work / per_thread;
    return most >= threads ? threads : most >= 2 ? (int)most : 1;
}

void sim_plan_threads(dna_machine *m)
{
    const int t = m->opt.threads;
    for (int k = 0; k < m->n_convs; k++) {
        conv_prep *c = m->convs[k];
        const dna_conv_geom *geo = &m->geos[c->layer];
        double per_px = geo->dense ? (double)c->key.in_c : (double)geo->kh * geo->kw * geo->cg;
        c->threads = prep_threads(t, (double)c->key.out_h * c->key.out_w * c->key.oc_n * per_px, SIM_MIN_THREAD_MACS);
    }
    for (int k = 0; k < m->n_lruns; k++) {
        layer_run *l = &m->lruns[k];
        if (l->prep)
            l->prep->threads = prep_threads(t, l->macs, SIM_MIN_THREAD_MACS);
        else
            l->vprep->threads = prep_threads(t, (double)l->y_bytes, SIM_MIN_THREAD_BYTES);
    }
    for (int k = 0; k < m->n_vecs; k++) {
        vec_prep *v = m->vecs[k];
        v->threads = prep_threads(t, (double)mera_type_nbytes(&v->out_t), SIM_MIN_THREAD_BYTES);
    }
}

/* ---- waves ------------------------------------------------------------------
 *
 * With more than one thread, a DNA segment runs as waves (run_waves): the
 * instructions are grouped by level, an instruction's level being one more
 * than the highest level of the earlier instructions (in execution order)
 * it conflicts with, two instructions conflicting when one writes a byte
 * (or WGT tag) the other reads or writes. The instructions of a level are
 * independent of each other and come after everything they depend on, so
 * they may run in any order or at once: the bytes are those of the
 * execution order, whatever the threads do. A wave runs either on the
 * lanes (each instruction single-threaded, the lanes taking the next one
 * as they finish: independent tiles of a layer, a LOAD and a STORE beside
 * a CONV) or one instruction after another, each split across the
 * threads as before (one large tile), whichever the cost estimate below
 * says is faster. */

/* The byte ranges instruction i reads and writes (hulls: a box's extreme
 * corners, padding included), as a run executes it (raw: as the
 * instruction says). An instruction of a layer run whole moves no bytes,
 * but the one it runs at reads its inputs and writes its output in DRAM. */
int sim_insn_uses(const dna_machine *m, int i, int raw, mem_use *u)
{
    const dna_insn *in = &m->prog->insns[i];
    int n = 0;
    int64_t lo, hi;
    if (!raw && m->insn_lrun && m->insn_lrun[i] >= 0) {
        const layer_run *l = &m->lruns[m->insn_lrun[i]];
        if (l->at != i)
            return 0;
        for (int q = 0; q < l->n_x; q++)
            u[n++] = (mem_use){l->x[q], l->x[q] + l->x_bytes[q], SP_DRAM, 0};
        u[n++] = (mem_use){l->y, l->y + l->y_bytes, SP_DRAM, 1};
        return n;
    }
    switch (in->opcode) {
    case DNA_LOAD:
    case DNA_STORE: {
        const dna_dma *d = &in->u.dma;
        int load = in->opcode == DNA_LOAD;
        if (!raw && m->fwd_dead && m->fwd_dead[i])
            return 0; /* forwarded: moves no bytes (a dead LOAD is into ACT: no tags) */
        box_span(d, d->sram, d->sram_row_stride, d->sram_col_stride, &lo, &hi);
        u[n++] = (mem_use){lo, hi, load && d->mem == DNA_MEM_WGT ? SP_WGT : SP_ACT, load};
        box_span(d, d->dram, d->dram_row_stride, d->dram_col_stride, &lo, &hi);
        u[n++] = (mem_use){lo, hi, SP_DRAM, !load};
        break;
    }
    case DNA_CONV: {
        const dna_conv *k = &in->u.conv;
        const conv_prep *c = m->insn_prep[i];
        int64_t blk = c->w_bytes + (c->has_bias ? 4 * (int64_t)k->oc_n : 0);
        int64_t src = m->fwd_src && !raw ? m->fwd_src[(size_t)i * DNA_MAX_SRC] : -1;
        int64_t dst = m->fwd_dst && !raw ? m->fwd_dst[i] : -1;
        int64_t in_n = (int64_t)mera_type_nbytes(&c->in_t), out_n = (int64_t)mera_type_nbytes(&c->out_t);
        u[n++] = src >= 0 ? (mem_use){src, src + in_n, SP_DRAM, 0} : (mem_use){k->in_addr, k->in_addr + in_n, SP_ACT, 0};
        u[n++] = (mem_use){k->wgt_addr, k->wgt_addr + blk, SP_WGT, 0};
        u[n++] = dst >= 0 ? (mem_use){dst, dst + out_n, SP_DRAM, 1} : (mem_use){k->out_addr, k->out_addr + out_n, SP_ACT, 1};
        break;
    }
    case DNA_VEC: {
        const dna_vec *k = &in->u.vec;
        const vec_prep *v = m->insn_prep[i];
        for (int q = 0; q < k->n_src; q++) {
            int64_t src = m->fwd_src && !raw ? m->fwd_src[(size_t)i * DNA_MAX_SRC + q] : -1;
            int64_t nb = (int64_t)mera_type_nbytes(&v->in_t[q]);
            u[n++] = src >= 0 ? (mem_use){src, src + nb, SP_DRAM, 0} : (mem_use){k->src[q].addr, k->src[q].addr + nb, SP_ACT, 0};
        }
        int64_t dst = m->fwd_dst && !raw ? m->fwd_dst[i] : -1, out_n = (int64_t)mera_type_nbytes(&v->out_t);
        u[n++] = dst >= 0 ? (mem_use){dst, dst + out_n, SP_DRAM, 1} : (mem_use){k->dst.addr, k->dst.addr + out_n, SP_ACT, 1};
        break;
    }
    }
    return n;
}

static int uses_conflict(const mem_use *a, int na, const mem_use *b, int nb)
{
    for (int x = 0; x < na; x++)
        for (int y = 0; y < nb; y++)
            if (a[x].space == b[y].space && (a[x].write || b[y].write) && a[x].lo < b[y].hi && b[y].lo < a[x].hi)
                return 1;
    return 0;
}

/* ---- forwarding ---------------------------------------------------------------
 *
 * Most of a layer's bytes go LOAD (DRAM -> ACT, one dense block), CONV (ACT
 * -> ACT), STORE (ACT -> DRAM, one dense block): two copies the kernels
 * could do without. plan_forward decides once, at load, from the
 * instructions' memory effects in the order a run executes them (the
 * segments in order, each DNA segment's instructions in execution order):
 *
 * - input forwarding: a CONV's input window or a VEC source lying within
 *   the ACT bytes one dense-block LOAD wrote, neither those ACT bytes nor
 *   the LOAD's DRAM source written by anything in between, reads the DRAM
 *   bytes instead (they are the same bytes);
 * - dead LOADs: a LOAD none of whose bytes is read from ACT (every reader
 *   forwarded) before an instruction overwrites all of them, or the
 *   program ends, moves no bytes;
 * - output forwarding: a CONV/VEC tile read from ACT by exactly one later
 *   instruction, a STORE of exactly its bytes as one dense block, and by
 *   nothing else before an instruction overwrites all of them or the
 *   program ends, with no instruction between the two reading or writing
 *   the STORE's DRAM range: the kernel writes that DRAM range itself and
 *   the STORE moves no bytes (not when its forwarded inputs overlap it).
 *
 * Every segment boundary ends what forwarding knows (a run driven segment
 * by segment, the IP's emulated device, has the host write DRAM between
 * segments). Each decision keeps every byte any later instruction reads;
 * the decisions together too: moving a STORE's DRAM write up to its CONV
 * could only matter to an instruction between the two touching that range,
 * and then the pair, or the other pair whose STORE lies between them, was
 * refused. Everything that plans from memory effects (insn_uses: the wave
 * plan, plan_zeroed) sees the forwarded ones; the timing model does not
 * look: the modelled device still moves every byte. */

#define SIM_FWD_SCAN 1024 /* instructions an output-forwarding candidate looks ahead */

typedef struct {
    int insn;       /* the LOAD */
    int64_t lo, hi; /* the ACT bytes it writes */
    int64_t dram;   /* the DRAM address of lo */
    int clobbered;  /* its ACT bytes or DRAM source written since: no more forwarding */
    int alive;      /* an instruction reads some of its bytes from ACT */
} fwd_rec;

static int spans_meet(int64_t a0, int64_t a1, int64_t b0, int64_t b1)
{
    return a0 < b1 && b0 < a1;
}

static void fwd_finish(dna_machine *m, const fwd_rec *r)
{
    if (!r->alive) {
        m->fwd_dead[r->insn] = 1;
        m->fwd_stats.dead_loads++;
    }
}

mera_status sim_plan_forward(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    const char *env = getenv("MERA_SIM_FORWARD");
    if (env && strcmp(env, "0") == 0)
        return MERA_OK;
    size_t ni = (size_t)(prog->n_insns > 0 ? prog->n_insns : 1);
    m->fwd_src = malloc(ni * DNA_MAX_SRC * sizeof *m->fwd_src);
    m->fwd_dst = malloc(ni * sizeof *m->fwd_dst);
    m->fwd_dead = calloc(ni, 1);
    int n_seq = 0;
    int *seq = malloc((ni + (size_t)prog->n_segments + 1) * sizeof *seq);
    mem_use *uses = malloc(ni * MAX_USES * sizeof *uses);
    int *nuse = malloc(ni * sizeof *nuse);
    fwd_rec *recs = NULL;
    int n_rec = 0, cap_rec = 0;
    mera_status st = MERA_OK;
    if (!m->fwd_src || !m->fwd_dst || !m->fwd_dead || !seq || !uses || !nuse) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < ni * DNA_MAX_SRC; k++)
        m->fwd_src[k] = -1;
    for (size_t k = 0; k < ni; k++)
        m->fwd_dst[k] = -1;
    /* the run's order; -1: a segment boundary */
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        seq[n_seq++] = -1;
        for (int k = 0; seg->kind == DNA_SEG_DNA && k < seg->count; k++)
            seq[n_seq++] = m->order[seg->first + k];
    }
    /* pass 1: input forwarding and dead LOADs */
    for (int p = 0; p < n_seq; p++) {
        int x = seq[p];
        if (x < 0) {
            for (int r = 0; r < n_rec; r++)
                recs[r].clobbered = 1;
            continue;
        }
        const dna_insn *in = &prog->insns[x];
        mem_use u[MAX_USES];
        int n = sim_insn_uses(m, x, 0, u);
        for (int q = 0; q < n; q++) {
            if (u[q].write || u[q].space != SP_ACT)
                continue;
            int can = (in->opcode == DNA_CONV && q == 0) || in->opcode == DNA_VEC, done = 0;
            for (int r = 0; can && r < n_rec && !done; r++)
                if (!recs[r].clobbered && u[q].lo >= recs[r].lo && u[q].hi <= recs[r].hi) {
                    m->fwd_src[(size_t)x * DNA_MAX_SRC + q] = recs[r].dram + (u[q].lo - recs[r].lo);
                    m->fwd_stats.fwd_inputs++;
                    done = 1;
                }
            for (int r = 0; !done && r < n_rec; r++)
                if (spans_meet(u[q].lo, u[q].hi, recs[r].lo, recs[r].hi))
                    recs[r].alive = 1;
        }
        for (int q = 0; q < n; q++)
            if (u[q].write && u[q].space == SP_DRAM)
                for (int r = 0; r < n_rec; r++)
                    if (spans_meet(u[q].lo, u[q].hi, recs[r].dram, recs[r].dram + (recs[r].hi - recs[r].lo)))
                        recs[r].clobbered = 1;
        for (int q = 0; q < n; q++) {
            if (!u[q].write || u[q].space != SP_ACT)
                continue;
            for (int r = 0; r < n_rec;) {
                if (!spans_meet(u[q].lo, u[q].hi, recs[r].lo, recs[r].hi)) {
                    r++;
                } else if (u[q].lo <= recs[r].lo && u[q].hi >= recs[r].hi) { /* all overwritten */
                    fwd_finish(m, &recs[r]);
                    recs[r] = recs[--n_rec];
                } else {
                    recs[r++].clobbered = 1;
                }
            }
        }
        if (in->opcode == DNA_LOAD && in->u.dma.mem == DNA_MEM_ACT && !(m->insn_lrun && m->insn_lrun[x] >= 0)) {
            const dna_dma *d = &in->u.dma;
            int64_t b = sim_dma_block_bytes(d);
            if (b > 0 && d->dram >= prog->params_bytes) {
                void *tmp_grow;
                if (GROW(recs, cap_rec, n_rec)) {
                    st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
                    goto done;
                }
                recs[n_rec++] = (fwd_rec){x, d->sram, (int64_t)d->sram + b, d->dram, 0, 0};
            }
        }
    }
    for (int r = 0; r < n_rec; r++)
        fwd_finish(m, &recs[r]);
    /* pass 2: output forwarding, on pass 1's effects */
    for (int p = 0; p < n_seq; p++)
        if (seq[p] >= 0)
            nuse[seq[p]] = sim_insn_uses(m, seq[p], 0, uses + (size_t)seq[p] * MAX_USES);
    for (int pc = 0; pc < n_seq; pc++) {
        int x = seq[pc];
        if (x < 0 || (prog->insns[x].opcode != DNA_CONV && prog->insns[x].opcode != DNA_VEC))
            continue;
        const mem_use *ux = uses + (size_t)x * MAX_USES;
        if (nuse[x] == 0)
            continue; /* in a layer run whole */
        const mem_use *out = &ux[nuse[x] - 1]; /* the tile: insn_uses puts it last */
        if (!out->write || out->space != SP_ACT)
            continue;
        const int64_t lo = out->lo, hi = out->hi;
        int s = -1, ps = -1, ok = 0, p;
        for (p = pc + 1; p < n_seq && p <= pc + SIM_FWD_SCAN; p++) {
            int y = seq[p], bad = y < 0, stop = 0;
            for (int q = 0; !bad && q < nuse[y]; q++) {
                const mem_use *u = uses + (size_t)y * MAX_USES + q;
                if (u->space != SP_ACT || !spans_meet(u->lo, u->hi, lo, hi))
                    continue;
                if (!u->write && s < 0 && prog->insns[y].opcode == DNA_STORE && u->lo == lo && u->hi == hi &&
                    sim_dma_block_bytes(&prog->insns[y].u.dma) == hi - lo) {
                    s = y;
                    ps = p;
                } else if (u->write && s >= 0 && u->lo <= lo && u->hi >= hi && y != s) {
                    stop = 1;
                } else {
                    bad = 1;
                }
            }
            if (bad)
                break;
            if (stop) {
                ok = 1;
                break;
            }
        }
        if (p == n_seq && s >= 0)
            ok = 1; /* the program ends */
        if (!ok)
            continue;
        const int64_t dram = prog->insns[s].u.dma.dram, dram_hi = dram + (hi - lo);
        if (dram < prog->params_bytes)
            continue;
        for (int q = 0; q < nuse[x] && ok; q++) /* its own inputs */
            if (ux[q].space == SP_DRAM && spans_meet(ux[q].lo, ux[q].hi, dram, dram_hi))
                ok = 0;
        for (int b = pc + 1; b < ps && ok; b++) /* nothing between touches the STORE's range */
            for (int q = 0; q < nuse[seq[b]] && ok; q++) {
                const mem_use *u = uses + (size_t)seq[b] * MAX_USES + q;
                if (u->space == SP_DRAM && spans_meet(u->lo, u->hi, dram, dram_hi))
                    ok = 0;
            }
        if (!ok)
            continue;
        m->fwd_dst[x] = dram;
        m->fwd_dead[s] = 1;
        m->fwd_stats.fwd_outputs++;
        m->fwd_stats.dead_stores++;
    }
done:
    free(seq);
    free(uses);
    free(nuse);
    free(recs);
    return st;
}

dna_forward_stats dna_machine_forward_stats(const dna_machine *m)
{
    return m->fwd_stats;
}

/* Rough host time of instruction i's byte part on one thread, in ns, and
 * the threads it splits across when run alone (*own). Measured on a 2-core
 * Sapphire Rapids: a pointwise conv tile runs 150-350 multiply-adds per
 * ns, a depthwise or 3-channel one 25-100, a LOAD or STORE copies about 25
 * bytes per ns. Only the choice of lanes or not depends on it. */
static double insn_cost_ns(const dna_machine *m, int i, int *own)
{
    const dna_insn *in = &m->prog->insns[i];
    *own = 1;
    if (m->insn_lrun && m->insn_lrun[i] >= 0) {
        const layer_run *l = &m->lruns[m->insn_lrun[i]];
        if (l->at != i)
            return 0; /* moves no bytes */
        if (l->vprep) { /* as a VEC tile of the whole output */
            *own = l->vprep->threads;
            return 300 + (double)l->y_bytes / 2;
        }
        const dna_conv_geom *geo = &m->geos[l->layer];
        *own = l->prep->threads;
        return 300 + l->macs / ((double)geo->kh * geo->kw * geo->cg < 64 ? 40 : 200);
    }
    switch (in->opcode) {
    case DNA_LOAD:
    case DNA_STORE: {
        const dna_dma *d = &in->u.dma;
        if ((in->opcode == DNA_LOAD && d->mem == DNA_MEM_WGT && m->wgt_unread) || (m->fwd_dead && m->fwd_dead[i]))
            return 50; /* tags only, or forwarded */
        double bytes = (double)d->rows * d->cols * d->run_bytes;
        *own = bytes >= 32768 ? m->opt.threads : 1;
        return 200 + bytes / 25;
    }
    case DNA_CONV: {
        const conv_prep *c = m->insn_prep[i];
        const dna_conv_geom *geo = &m->geos[c->layer];
        double per_px = geo->dense ? (double)c->key.in_c : (double)geo->kh * geo->kw * geo->cg;
        double macs = (double)c->key.out_h * c->key.out_w * c->key.oc_n * per_px;
        *own = c->threads;
        return 300 + macs / (per_px < 64 ? 40 : 200);
    }
    case DNA_VEC: {
        const vec_prep *v = m->insn_prep[i];
        *own = v->threads;
        return 300 + (double)mera_type_nbytes(&v->out_t) / 2;
    }
    }
    return 0;
}

/* Handing a job to the pool and waiting for it, both sides, in ns. */
#define SIM_POOL_JOB_NS 2000.0
/* Earlier instructions an instruction is compared with; it also comes
 * after every instruction before them (a conservative bound on the load
 * time, quadratic in it otherwise). */
#define SIM_WAVE_WINDOW 256

mera_status sim_plan_waves(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    const char *env = getenv("MERA_SIM_WAVES");
    m->lanes = 1;
    m->use_waves = m->opt.threads > 1 && !(env && strcmp(env, "0") == 0);
#ifdef MERA_SERIAL_THREADS
    m->use_waves = 0; /* deploy.so: every job runs on the calling thread */
#endif
    if (!m->use_waves)
        return MERA_OK;
    size_t ni = (size_t)(prog->n_insns > 0 ? prog->n_insns : 1);
    m->wave_items = malloc(ni * sizeof *m->wave_items);
    m->wave_start = malloc((ni + 1) * sizeof *m->wave_start);
    m->wave_lanes = calloc(ni, 1);
    m->insn_threads = calloc(ni, 1);
    const double pool_ns = SIM_POOL_JOB_NS;
    m->seg_wave = calloc((size_t)prog->n_segments + 1, sizeof *m->seg_wave);
    int *level = malloc(ni * sizeof *level), *nuse = malloc(ni * sizeof *nuse), *first = malloc((ni + 1) * sizeof *first);
    mem_use *uses = malloc(ni * MAX_USES * sizeof *uses);
    double *cost = malloc(ni * sizeof *cost);
    int *own = malloc(ni * sizeof *own);
    mera_status st = MERA_OK;
    if (!m->wave_items || !m->wave_start || !m->wave_lanes || !m->insn_threads || !m->seg_wave || !level || !nuse || !first || !uses ||
        !cost || !own) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto done;
    }
    int n_waves = 0, any_lanes = 0, placed = 0;
    const double T = m->opt.threads;
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        m->seg_wave[s] = n_waves;
        if (seg->kind != DNA_SEG_DNA)
            continue;
        const int *ord = m->order + seg->first;
        int top = -1, old_top = -1; /* the highest level so far, and of the instructions before the window */
        for (int k = 0; k < seg->count; k++) {
            nuse[k] = sim_insn_uses(m, ord[k], 0, uses + (size_t)k * MAX_USES);
            if (k > SIM_WAVE_WINDOW && level[k - SIM_WAVE_WINDOW - 1] > old_top)
                old_top = level[k - SIM_WAVE_WINDOW - 1];
            int lv = old_top + 1;
            for (int j = k > SIM_WAVE_WINDOW ? k - SIM_WAVE_WINDOW : 0; j < k; j++)
                if (level[j] >= lv && uses_conflict(uses + (size_t)j * MAX_USES, nuse[j], uses + (size_t)k * MAX_USES, nuse[k]))
                    lv = level[j] + 1;
            level[k] = lv;
            top = lv > top ? lv : top;
        }
        /* counting sort by level, execution order within one */
        int nl = top + 1;
        for (int l = 0; l <= nl; l++)
            first[l] = 0;
        for (int k = 0; k < seg->count; k++)
            first[level[k] + 1]++;
        for (int l = 0; l < nl; l++)
            first[l + 1] += first[l];
        for (int k = 0; k < seg->count; k++)
            m->wave_items[placed + first[level[k]]++] = ord[k];
        /* first[l] is now the end of level l */
        for (int l = 0; l < nl; l++) {
            int b = l ? first[l - 1] : 0, e = first[l];
            int *it = m->wave_items + placed + b;
            double sum = 0, most = 0, serial = 0;
            for (int q = 0; q < e - b; q++) {
                int t;
                cost[q] = insn_cost_ns(m, it[q], &t);
                own[q] = t;
                sum += cost[q];
                most = cost[q] > most ? cost[q] : most;
                /* alone, an instruction splits only when that pays for the pool job */
                if (t > 1 && cost[q] / t + pool_ns >= cost[q])
                    t = 1;
                m->insn_threads[it[q]] = (unsigned char)t;
                serial += t > 1 ? cost[q] / t + pool_ns : cost[q];
            }
            double spread = (most > sum / T ? most : sum / T) + pool_ns;
            m->wave_start[n_waves] = placed + b;
            if (e - b >= 2 && spread < serial) {
                m->wave_lanes[n_waves] = 1;
                any_lanes = 1;
                /* the costliest first, so that the lanes finish together */
                for (int q = 1; q < e - b; q++)
                    for (int p = q; p > 0 && cost[p] > cost[p - 1]; p--) {
                        double tc = cost[p];
                        cost[p] = cost[p - 1];
                        cost[p - 1] = tc;
                        int ti = it[p];
                        it[p] = it[p - 1];
                        it[p - 1] = ti;
                    }
            }
            n_waves++;
        }
        placed += seg->count;
    }
    m->seg_wave[prog->n_segments] = n_waves;
    m->wave_start[n_waves] = placed;
    m->lanes = any_lanes ? m->opt.threads : 1;
    if (m->profile) {
        int on_lanes = 0, lane_insns = 0;
        for (int w = 0; w < n_waves; w++)
            if (m->wave_lanes[w]) {
                on_lanes++;
                lane_insns += m->wave_start[w + 1] - m->wave_start[w];
            }
        fprintf(stderr, "mera sim waves: %d instructions in %d waves, %d waves (%d instructions) on the lanes\n",
                placed, n_waves, on_lanes, lane_insns);
    }
done:
    free(level);
    free(nuse);
    free(first);
    free(uses);
    free(cost);
    free(own);
    return st;
}

/* ---- what a reused run zeroes ------------------------------------------------
 *
 * A reused run must read what a new one reads: 0 in every byte it reads
 * before writing it. The program is data-independent, so which bytes those
 * are is known at load: plan_zeroed follows a run (graph inputs, then the
 * segments, instructions in execution order, then the outputs) with one
 * bit per byte of ACT, WGT and the activation DRAM for "written by now",
 * and takes the hull of every read of a byte not yet written. Writes are
 * exact (a box's runs, a tile's bytes; a box of more than 2^16 scattered
 * runs is not counted: its bytes stay unwritten, which only zeroes more),
 * reads exact or their hull. A well-formed program reads only what it
 * wrote, and a reused run zeroes nothing or little instead of every byte
 * a run may write. */

typedef struct {
    uint64_t *w;
    int64_t n;
} byte_bits;

static void bits_set(byte_bits *b, int64_t lo, int64_t hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > b->n ? b->n : hi;
    for (int64_t x = lo; x < hi;) {
        if ((x & 63) == 0 && hi - x >= 64) {
            b->w[x >> 6] = ~(uint64_t)0;
            x += 64;
        } else {
            b->w[x >> 6] |= (uint64_t)1 << (x & 63);
            x++;
        }
    }
}

static int bits_all(const byte_bits *b, int64_t lo, int64_t hi)
{
    if (lo < 0 || hi > b->n)
        return 0;
    for (int64_t x = lo; x < hi;) {
        if ((x & 63) == 0 && hi - x >= 64) {
            if (b->w[x >> 6] != ~(uint64_t)0)
                return 0;
            x += 64;
        } else {
            if (!(b->w[x >> 6] >> (x & 63) & 1))
                return 0;
            x++;
        }
    }
    return 1;
}

typedef struct {
    byte_bits bits[3];
    int64_t need[3][2];
    int64_t base;
} zero_plan;

static void zp_read(zero_plan *z, int buf, int64_t lo, int64_t hi)
{
    if (buf == BUF_DRAM) {
        lo -= z->base;
        hi -= z->base;
        lo = lo < 0 ? 0 : lo; /* the constant image is never written */
    }
    if (hi <= lo || bits_all(&z->bits[buf], lo, hi))
        return;
    int64_t *w = z->need[buf];
    if (w[0] >= w[1]) {
        w[0] = lo;
        w[1] = hi;
    } else {
        w[0] = lo < w[0] ? lo : w[0];
        w[1] = hi > w[1] ? hi : w[1];
    }
}

static void zp_write(zero_plan *z, int buf, int64_t lo, int64_t hi)
{
    if (buf == BUF_DRAM) {
        lo -= z->base;
        hi -= z->base;
    }
    bits_set(&z->bits[buf], lo, hi);
}

/* The runs of a box (rows x cols runs of run_bytes at base + row *
 * row_stride + col * col_stride), rows [r0, r1) and cols [c0, c1) of it,
 * read or written; a read of too many runs is its hull, a write of too
 * many is dropped. */
static void zp_box(zero_plan *z, int buf, int write, const dna_dma *d, int64_t base, int64_t row_stride,
                   int64_t col_stride, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    if (r1 <= r0 || c1 <= c0)
        return;
    int contiguous = col_stride == d->run_bytes;
    double runs = (double)(r1 - r0) * (contiguous ? 1 : (double)(c1 - c0));
    if (runs > 65536) {
        if (!write) {
            int64_t lo, hi;
            box_span(d, base, row_stride, col_stride, &lo, &hi);
            zp_read(z, buf, lo, hi);
        }
        return;
    }
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = c0; c < (contiguous ? c0 + 1 : c1); c++) {
            int64_t lo = base + r * row_stride + c * col_stride;
            int64_t hi = lo + (contiguous ? (c1 - c0) * (int64_t)d->run_bytes : d->run_bytes);
            (write ? zp_write : zp_read)(z, buf, lo, hi);
        }
}

static void zp_value(zero_plan *z, const dna_machine *m, int v, int write)
{
    int64_t at = m->prog->value_dram[v];
    if (at < m->prog->params_bytes)
        return; /* -1 (graph data) or the constant image */
    int64_t hi = at + (int64_t)mera_type_nbytes(&mera_graph_value(m->g, v)->type);
    (write ? zp_write : zp_read)(z, BUF_DRAM, at, hi);
}

void sim_plan_zeroed(dna_machine *m)
{
    const dna_program *prog = m->prog;
    memcpy(m->zeroed, m->written, sizeof m->zeroed); /* without the plan: all a run may write */
    zero_plan z;
    memset(&z, 0, sizeof z);
    z.base = dna_act_base(prog);
    const int64_t size[3] = {prog->act_bytes, prog->wgt_bytes, prog->dram_bytes - z.base};
    int ok = 1;
    for (int b = 0; b < 3; b++) {
        z.bits[b].n = size[b] > 0 ? size[b] : 0;
        z.bits[b].w = calloc((size_t)(z.bits[b].n / 64 + 1), sizeof(uint64_t));
        ok &= z.bits[b].w != NULL;
    }
    if (!ok)
        goto done;
    for (int k = 0; k < mera_graph_num_inputs(m->g); k++) {
        int v = mera_graph_input(m->g, k);
        if (m->input_slot[v] >= 0)
            zp_value(&z, m, v, 1);
    }
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        if (seg->kind == DNA_SEG_HOST) {
            const mera_node *node = mera_graph_node(m->g, seg->node);
            for (int k = 0; k < node->n_inputs; k++)
                if (node->inputs[k] >= 0)
                    zp_value(&z, m, node->inputs[k], 0);
            for (int o = 0; o < node->n_outputs; o++)
                zp_value(&z, m, node->outputs[o], 1);
            continue;
        }
        for (int k = 0; k < seg->count; k++) {
            int i = m->order[seg->first + k];
            const dna_insn *in = &prog->insns[i];
            if ((in->opcode == DNA_LOAD || in->opcode == DNA_STORE) && !(m->insn_lrun && m->insn_lrun[i] >= 0)) {
                const dna_dma *d = &in->u.dma;
                if (m->fwd_dead && m->fwd_dead[i])
                    continue; /* forwarded: moves no bytes */
                if (in->opcode == DNA_LOAD) { /* reads DRAM but the padding, writes every run of the box */
                    zp_box(&z, BUF_DRAM, 0, d, d->dram, d->dram_row_stride, d->dram_col_stride, d->pad_top,
                           d->rows - d->pad_bottom, d->pad_left, d->cols - d->pad_right);
                    zp_box(&z, d->mem == DNA_MEM_WGT ? BUF_WGT : BUF_ACT, 1, d, d->sram, d->sram_row_stride,
                           d->sram_col_stride, 0, d->rows, 0, d->cols);
                } else {
                    zp_box(&z, BUF_ACT, 0, d, d->sram, d->sram_row_stride, d->sram_col_stride, 0, d->rows, 0, d->cols);
                    zp_box(&z, BUF_DRAM, 1, d, d->dram, d->dram_row_stride, d->dram_col_stride, 0, d->rows, 0, d->cols);
                }
                continue;
            }
            mem_use u[MAX_USES];
            int n = sim_insn_uses(m, i, 0, u);
            static const int buf_of[3] = {BUF_ACT, BUF_WGT, BUF_DRAM}; /* by SP_* */
            for (int q = 0; q < n; q++)
                if (!u[q].write)
                    zp_read(&z, buf_of[u[q].space], u[q].lo, u[q].hi);
            for (int q = 0; q < n; q++)
                if (u[q].write)
                    zp_write(&z, buf_of[u[q].space], u[q].lo, u[q].hi);
        }
    }
    for (int k = 0; k < mera_graph_num_outputs(m->g); k++)
        zp_value(&z, m, mera_graph_output(m->g, k), 0);
    for (int b = 0; b < 3; b++) {
        const int64_t *w = m->written[b], *need = z.need[b];
        int64_t lo = need[0] > w[0] ? need[0] : w[0], hi = need[1] < w[1] ? need[1] : w[1];
        m->zeroed[b][0] = need[0] < need[1] && lo < hi ? lo : 0;
        m->zeroed[b][1] = need[0] < need[1] && lo < hi ? hi : 0;
    }
done:
    for (int b = 0; b < 3; b++)
        free(z.bits[b].w);
}
