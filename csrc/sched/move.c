/* Data-movement layers on the DNA: reshape, flatten, transpose and slice.
 *
 * Each is a strided view of its input. Output byte i (the output is
 * C-contiguous in its shape) is the input byte at
 *     src_off + sum over output dims k of idx_k(i) * s_k
 * (reshape, flatten: one dimension, s = 1; transpose: the input's strides
 * permuted; slice: the input's strides, the sliced one times the step, from
 * the first kept index). The
 * elements are one byte (int8/uint8), and their qparams do not change, so
 * the bytes are only moved. Dimensions of extent 1 are dropped and
 * neighbours that stay neighbours in both tensors are merged: a transpose
 * of [1,g,C/g,H,W] by [0,2,1,3,4] is the move [C/g][g][H*W] with runs of
 * H*W bytes, whatever the IR rank, and batch or rank > 4 do not matter.
 *
 * A layer moves tiles through ACT. A tile is a box of the view: in the
 * *staging order* (the output's dimension order or the input's),
 * dimensions outside the cut have extent 1, the cut dimension a chunk,
 * those inside it are whole. The tile lies in ACT in staging order, dense
 * but for one optional padded stride, and two DMA passes move it:
 *   - the side (LOAD: input, STORE: output) whose DRAM order is the
 *     staging order copies a dense box;
 *   - the other side permutes. Either it walks the box in its own DRAM
 *     order (long DRAM runs) with strides on the SRAM side, or it walks
 *     the box in staging order (dense in SRAM) with strides on the DRAM
 *     side, which makes short DRAM runs.
 * A DMA instruction is two loops over runs (isa.h). A box with more
 * dimensions than that left after merging takes one instruction per
 * position of its outer dimensions.
 *
 * The timing model charges both sides (timing.c, dna_dma_cycles): every
 * DRAM run at least a 64-byte burst, and a strided SRAM side one beat per
 * group of runs that fall in distinct byte banks. So the planner may pad
 * the SRAM stride of the permuting side's innermost loop to a number
 * coprime with the bank count, which lets a beat take one byte per bank
 * (as a padded shared-memory tile does for a transpose on a GPU).
 *
 * The planner tries both staging orders, with and without that padding,
 * both walks of the permuting side, and two chunk sizes (the largest that
 * fits double-buffered, and a quarter of the cut dimension so that loads
 * and stores overlap), times each with the timing model's DMA formula and
 * keeps the fastest (ties: the first tried). */
#include <stdio.h>
#include <string.h>

#include "sched/plan.h"
#include "sim/timing.h"

/* A layer needing more DMA instructions than this stays on the host: the
 * program would grow by ~76 bytes per instruction, and every instruction
 * pays dma_setup_cycles. */
#define MOVE_MAX_INSNS 65536

typedef struct {
    int n;
    int64_t ext[MERA_MAX_RANK];
    int64_t s[MERA_MAX_RANK], d[MERA_MAX_RANK]; /* input and output strides in bytes, output order */
    int64_t src_off;
} mview;

typedef struct {
    int stage_src;  /* staging order: the input's, else the output's */
    int pad;        /* pad the permuting side's innermost SRAM stride */
    int walk_stage; /* the permuting side walks staging order (strides on its DRAM side) */
    int cut;        /* staging-order position of the cut dimension */
    int64_t chunk;  /* its extent per tile */
} mchoice;

typedef struct {
    int order[MERA_MAX_RANK];  /* staging order, outermost first */
    int lorder[MERA_MAX_RANK]; /* the LOAD's walk */
    int sorder[MERA_MAX_RANK]; /* the STORE's walk */
    int64_t te[MERA_MAX_RANK]; /* a full tile's extents */
    int64_t tau[MERA_MAX_RANK];/* SRAM strides */
    int64_t slot;              /* bytes of one ACT slot */
    int64_t pitch;             /* the padded SRAM stride, or 0 */
    int64_t per_cut, tiles;
} mgeom;

static void view_of(const mera_graph *g, const mera_node *node, mview *v)
{
    const mera_type *xt = &mera_graph_value(g, node->inputs[0])->type;
    const mera_type *yt = &mera_graph_value(g, node->outputs[0])->type;
    int64_t xs[MERA_MAX_RANK], ext[MERA_MAX_RANK], s[MERA_MAX_RANK], acc = 1;
    for (int i = xt->rank - 1; i >= 0; i--) {
        xs[i] = acc;
        acc *= xt->shape[i];
    }
    int r = 0;
    v->src_off = 0;
    if (node->op == MERA_OP_TRANSPOSE) {
        const int64_t *axes = mera_node_attr(node, "axes")->ints;
        r = yt->rank;
        for (int k = 0; k < r; k++) {
            ext[k] = yt->shape[k];
            s[k] = xs[axes[k] < 0 ? axes[k] + xt->rank : axes[k]];
        }
    } else if (node->op == MERA_OP_SLICE) {
        int64_t axis = mera_attr_int(node, "axis");
        if (axis < 0)
            axis += xt->rank;
        r = yt->rank;
        for (int k = 0; k < r; k++) {
            ext[k] = yt->shape[k];
            s[k] = xs[k];
        }
        s[axis] *= mera_attr_int(node, "step"); /* every step-th index: a longer stride on that axis */
        v->src_off = mera_attr_int(node, "begin") * xs[axis];
    } else { /* reshape, flatten */
        r = 1;
        ext[0] = mera_type_numel(yt);
        s[0] = 1;
    }
    v->n = 0;
    for (int k = 0; k < r; k++) {
        if (ext[k] == 1)
            continue;
        if (v->n > 0 && v->s[v->n - 1] == s[k] * ext[k]) { /* the previous dim is this one's outer part */
            v->ext[v->n - 1] *= ext[k];
            v->s[v->n - 1] = s[k];
            continue;
        }
        v->ext[v->n] = ext[k];
        v->s[v->n] = s[k];
        v->n++;
    }
    if (v->n == 0) {
        v->n = 1;
        v->ext[0] = v->s[0] = 1;
    }
    acc = 1;
    for (int k = v->n - 1; k >= 0; k--) {
        v->d[k] = acc;
        acc *= v->ext[k];
    }
}

/* order: dims by key, largest first (a stable insertion sort: n <= 6). */
static void sort_desc(const int64_t *key, int n, int *order)
{
    for (int i = 0; i < n; i++) {
        int j = i;
        while (j > 0 && key[order[j - 1]] < key[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static void geometry(const mview *v, const mchoice *ch, int64_t banks, mgeom *g)
{
    int n = v->n, src_order[MERA_MAX_RANK], dst_order[MERA_MAX_RANK];
    sort_desc(v->s, n, src_order);
    for (int k = 0; k < n; k++)
        dst_order[k] = k;
    memcpy(g->order, ch->stage_src ? src_order : dst_order, sizeof g->order);
    /* the permuting side: the STORE when staged in input order, else the LOAD */
    const int *perm_walk = ch->walk_stage ? g->order : ch->stage_src ? dst_order : src_order;
    memcpy(g->lorder, ch->stage_src ? g->order : perm_walk, sizeof g->lorder);
    memcpy(g->sorder, ch->stage_src ? perm_walk : g->order, sizeof g->sorder);
    int64_t outer = 1;
    for (int j = 0; j < n; j++) {
        int k = g->order[j];
        g->te[k] = j < ch->cut ? 1 : j == ch->cut ? ch->chunk : v->ext[k];
        if (j < ch->cut)
            outer *= v->ext[k];
    }
    int kc = g->order[ch->cut];
    g->per_cut = (v->ext[kc] + ch->chunk - 1) / ch->chunk;
    g->tiles = outer * g->per_cut;
    int padded = -1; /* the innermost dim of the permuting walk that the tile spans */
    for (int j = n - 1; ch->pad && j >= 0 && padded < 0; j--)
        if (g->te[perm_walk[j]] > 1)
            padded = perm_walk[j];
    int64_t acc = 1;
    g->pitch = 0;
    for (int j = n - 1; j >= 0; j--) {
        int k = g->order[j];
        if (k == padded && gcd64(acc, banks) != 1) {
            while (gcd64(acc, banks) != 1)
                acc++;
            g->pitch = acc;
        }
        g->tau[k] = acc;
        acc *= g->te[k];
    }
    g->slot = sched_align(acc);
}

/* Does a tile fit: one tile anywhere in ACT, several in two slots. */
static int fits(const sched_ctx *c, const mgeom *g)
{
    return g->tiles == 1 ? g->slot <= c->act_bytes : 2 * g->slot <= c->act_bytes;
}

typedef struct {
    int64_t ext, dram, sram;
} wdim;

typedef struct {
    const mera_platform *pf;
    sched_list *seq; /* NULL: only time and count */
    int layer;
    int64_t insns;
    int64_t min_run[2];  /* shortest DRAM run of the loads, of the stores */
    int sram_strided;    /* some DMA's SRAM side is not one dense block */
} emitter;

/* One DMA pass over a box given as dims, outermost first: merges what is
 * contiguous on both sides, takes the innermost dim as the run when it is
 * contiguous on both, the next two as columns and rows, and emits one
 * instruction per position of the rest. Returns the cycles. */
static int64_t walk(emitter *e, int opcode, int64_t dram, int64_t sram, const wdim *w0, int nw)
{
    wdim w[MERA_MAX_RANK];
    int n = 0;
    for (int i = 0; i < nw; i++) {
        if (w0[i].ext == 1)
            continue;
        if (n > 0 && w[n - 1].dram == w0[i].dram * w0[i].ext && w[n - 1].sram == w0[i].sram * w0[i].ext) {
            w[n - 1].ext *= w0[i].ext;
            w[n - 1].dram = w0[i].dram;
            w[n - 1].sram = w0[i].sram;
        } else {
            w[n++] = w0[i];
        }
    }
    int64_t run = 1;
    if (n > 0 && w[n - 1].dram == 1 && w[n - 1].sram == 1)
        run = w[--n].ext;
    wdim rows = {1, 0, 0}, cols = {1, 0, 0};
    if (n > 0)
        cols = w[--n];
    if (n > 0)
        rows = w[--n];
    int64_t idx[MERA_MAX_RANK] = {0}, cycles = 0;
    for (;;) {
        dna_dma d;
        memset(&d, 0, sizeof d);
        d.mem = DNA_MEM_ACT;
        d.rows = (int32_t)rows.ext;
        d.cols = (int32_t)cols.ext;
        d.run_bytes = (int32_t)run;
        d.dram = dram;
        d.sram = (uint32_t)sram;
        for (int i = 0; i < n; i++) {
            d.dram += idx[i] * w[i].dram;
            d.sram += (uint32_t)(idx[i] * w[i].sram);
        }
        d.dram_row_stride = rows.dram;
        d.dram_col_stride = cols.dram;
        d.sram_row_stride = (uint32_t)rows.sram;
        d.sram_col_stride = (uint32_t)cols.sram;
        cycles += dna_dma_cycles(e->pf, &d, NULL);
        e->insns++;
        int64_t dram_run = d.dram_col_stride == run || d.cols == 1 ? run * d.cols : run;
        int st = opcode == DNA_STORE;
        if (e->min_run[st] == 0 || dram_run < e->min_run[st])
            e->min_run[st] = dram_run;
        if (!((d.cols == 1 || d.sram_col_stride == (uint32_t)run) &&
              (d.rows == 1 || d.sram_row_stride == (uint32_t)(d.cols * run))))
            e->sram_strided = 1;
        if (e->seq) {
            sched_item *it = sched_push(e->seq, opcode, e->layer);
            if (!it)
                return cycles;
            it->insn.u.dma = d;
            sched_dma_ranges(it);
        } else if (e->insns > MOVE_MAX_INSNS) {
            return cycles; /* the choice is out anyway */
        }
        int i = n - 1;
        while (i >= 0 && ++idx[i] == w[i].ext)
            idx[i--] = 0;
        if (i < 0)
            return cycles;
    }
}

/* Runs the layer's tiles under a choice: emits them to e->seq, or only
 * counts the instructions. Returns an estimate of the layer's cycles
 * with loads and stores of successive tiles overlapped. */
static int64_t run_tiles(emitter *e, const mview *v, const mchoice *ch, const mgeom *g, int64_t src, int64_t dst)
{
    int n = v->n, kc = g->order[ch->cut];
    int64_t total = 0, prev_store = 0;
    for (int64_t t = 0; t < g->tiles; t++) {
        int64_t org[MERA_MAX_RANK], te[MERA_MAX_RANK], rem = t / g->per_cut;
        for (int j = n - 1; j >= 0; j--) {
            int k = g->order[j];
            te[k] = g->te[k];
            org[k] = 0;
            if (j < ch->cut) {
                org[k] = rem % v->ext[k];
                rem /= v->ext[k];
            }
        }
        org[kc] = t % g->per_cut * ch->chunk;
        te[kc] = v->ext[kc] - org[kc] < ch->chunk ? v->ext[kc] - org[kc] : ch->chunk;
        int64_t from = src + v->src_off, to = dst, sram = (t & 1) * g->slot;
        for (int k = 0; k < n; k++) {
            from += org[k] * v->s[k];
            to += org[k] * v->d[k];
        }
        wdim lw[MERA_MAX_RANK], sw[MERA_MAX_RANK];
        for (int j = 0; j < n; j++) {
            int a = g->lorder[j], b = g->sorder[j];
            lw[j] = (wdim){te[a], v->s[a], g->tau[a]};
            sw[j] = (wdim){te[b], v->d[b], g->tau[b]};
        }
        int64_t l = walk(e, DNA_LOAD, from, sram, lw, n);
        int64_t s = walk(e, DNA_STORE, to, sram, sw, n);
        total += t == 0 ? l : l > prev_store ? l : prev_store;
        prev_store = s;
        if (!e->seq && e->insns > MOVE_MAX_INSNS)
            break;
    }
    return total + prev_store;
}

static const mera_type *in_type(const sched_ctx *c, const sched_plan *pl)
{
    return &mera_graph_value(c->g, mera_graph_node(c->g, pl->node)->inputs[0])->type;
}

static void choice_of(const sched_plan *pl, mchoice *ch)
{
    ch->stage_src = pl->mv_stage_src;
    ch->pad = pl->mv_pad;
    ch->walk_stage = pl->mv_walk_stage;
    ch->cut = pl->mv_cut;
    ch->chunk = pl->chunk;
}

static int64_t banks_of(const sched_ctx *c)
{
    return c->pf->vector_lanes > 0 ? c->pf->vector_lanes : 1;
}

int sched_move_plan(const sched_ctx *c, sched_plan *pl, char *reason, size_t reason_len)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    mview v;
    view_of(c->g, node, &v);
    int64_t banks = banks_of(c), best = -1, fewest = -1;
    mchoice keep = {0, 0, 0, 0, 1};
    mgeom kg;
    memset(&kg, 0, sizeof kg);
    for (int stage_src = 0; stage_src < 2; stage_src++)
        for (int walk_stage = 0; walk_stage < 2; walk_stage++)
            for (int pad = 0; pad < 2 - walk_stage; pad++) {
                mchoice ch = {stage_src, pad, walk_stage, 0, 1};
                mgeom g;
                /* the outermost cut at which one unit of the cut dimension fits */
                for (ch.cut = 0; ch.cut < v.n; ch.cut++) {
                    geometry(&v, &ch, banks, &g);
                    if (fits(c, &g))
                        break;
                }
                MERA_ASSERT(ch.cut < v.n); /* one byte always fits */
                /* the largest chunk: the whole dimension as one tile, or
                 * the largest that fits two slots */
                int64_t ext = v.ext[g.order[ch.cut]], lo = 1, hi = ext, most = 1;
                ch.chunk = ext;
                geometry(&v, &ch, banks, &g);
                if (g.tiles == 1 && fits(c, &g))
                    lo = hi + 1, most = ext;
                while (lo <= hi) {
                    ch.chunk = (lo + hi) / 2;
                    geometry(&v, &ch, banks, &g);
                    if (2 * g.slot <= c->act_bytes) {
                        most = ch.chunk;
                        lo = ch.chunk + 1;
                    } else {
                        hi = ch.chunk - 1;
                    }
                }
                int64_t chunks[2] = {most, (ext + SCHED_MIN_TILES - 1) / SCHED_MIN_TILES};
                for (int k = 0; k < 2; k++) {
                    if (k == 1 && (ch.cut > 0 || chunks[1] >= most))
                        break;
                    ch.chunk = chunks[k];
                    geometry(&v, &ch, banks, &g);
                    if (!fits(c, &g))
                        continue;
                    emitter e;
                    memset(&e, 0, sizeof e);
                    e.pf = c->pf;
                    int64_t t = run_tiles(&e, &v, &ch, &g, 0, 0);
                    if (fewest < 0 || e.insns < fewest)
                        fewest = e.insns;
                    if (e.insns <= MOVE_MAX_INSNS && (best < 0 || t < best)) {
                        best = t;
                        keep = ch;
                        kg = g;
                    }
                }
            }
    const char *op = mera_op_table[node->op].name;
    if (best < 0) {
        char ts[96];
        mera_type_format(in_type(c, pl), ts, sizeof ts);
        snprintf(reason, reason_len,
                 "%s of %s: a DMA moves 2-D boxes of runs, and this permutation needs %s%lld DMA instructions "
                 "(a layer may have %d)",
                 op, ts, fewest > MOVE_MAX_INSNS ? "more than " : "", (long long)(fewest > MOVE_MAX_INSNS ? MOVE_MAX_INSNS : fewest),
                 MOVE_MAX_INSNS);
        return 0;
    }
    pl->mv_stage_src = keep.stage_src;
    pl->mv_pad = keep.pad;
    pl->mv_walk_stage = keep.walk_stage;
    pl->mv_cut = keep.cut;
    pl->chunk = keep.chunk;
    pl->tiles = kg.tiles;
    pl->macs = 0;
    sched_move_describe(c, pl, reason, reason_len);
    return 1;
}

void sched_move_describe(const sched_ctx *c, const sched_plan *pl, char *buf, size_t n)
{
    mview v;
    view_of(c->g, mera_graph_node(c->g, pl->node), &v);
    mchoice ch;
    choice_of(pl, &ch);
    mgeom g;
    geometry(&v, &ch, banks_of(c), &g);
    emitter e;
    memset(&e, 0, sizeof e);
    e.pf = c->pf;
    run_tiles(&e, &v, &ch, &g, 0, 0);
    char view[96];
    int at = 0;
    view[0] = 0;
    for (int k = 0; k < v.n && at < (int)sizeof view; k++)
        at += snprintf(view + at, sizeof view - (size_t)at, "%s%lld", k ? "x" : "", (long long)v.ext[k]);
    for (int k = 0; k < v.n && at < (int)sizeof view; k++)
        at += snprintf(view + at, sizeof view - (size_t)at, "%s%lld", k ? "," : " from strides ", (long long)v.s[k]);
    snprintf(buf, n, "DMA move [%s]: %lld tile%s, %lld DMAs, DRAM runs >= %lld B in / %lld B out%s%s", view,
             (long long)pl->tiles, pl->tiles == 1 ? "" : "s", (long long)e.insns, (long long)e.min_run[0],
             (long long)e.min_run[1], e.sram_strided ? ", strided SRAM" : "",
             g.pitch ? ", padded pitch" : "");
}

void sched_move_emit(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    mview v;
    view_of(c->g, node, &v);
    mchoice ch;
    choice_of(pl, &ch);
    mgeom g;
    geometry(&v, &ch, banks_of(c), &g);
    emitter e;
    memset(&e, 0, sizeof e);
    e.pf = c->pf;
    e.seq = seq;
    e.layer = layer;
    run_tiles(&e, &v, &ch, &g, c->value_dram[node->inputs[0]], c->value_dram[node->outputs[0]]);
}
