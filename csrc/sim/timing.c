/* The DNA timing model: per-instruction costs, the three queues with their
 * dependency tokens as an event simulation, the SRAM hazard check, and the
 * segment/host costs. docs/hardware.md ("Timing model") is the prose form.
 *
 * Everything here is a function of the program and the platform, never of
 * the data, which is why a loaded machine computes it once. */
#include "sim/timing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* DNA_HOST_GBPS (timing.h) = 5 GB/s: host nodes are the ops the DNA cannot
 * run (softmax, odd reshapes, float tails), executed by one modest host
 * core with the InterpreterHw kernels. Those kernels are memory-streaming
 * loops; 5 GB/s is a single core's realistic streaming rate through
 * L2/DRAM for byte-sized tensors including the kernel's arithmetic, not
 * the core's peak copy bandwidth. The model charges a host node its input
 * plus output bytes at that rate. */

/* A token FIFO per direction: l2c (LOAD pushes next, COMPUTE pops prev),
 * c2l (COMPUTE pushes prev, LOAD pops next), c2s, s2c. */
enum { F_L2C, F_C2L, F_C2S, F_S2C, N_FIFOS };
static const char *const fifo_names[N_FIFOS] = {"load->compute", "compute->load", "compute->store",
                                                "store->compute"};

/* ---- layer geometry ------------------------------------------------------ */

mera_status dna_conv_geometry(const mera_graph *g, int node_index, dna_conv_geom *geo, mera_error *err)
{
    const mera_node *n = mera_graph_node(g, node_index);
    memset(geo, 0, sizeof *geo);
    const mera_type *x = &mera_graph_value(g, n->inputs[0])->type;
    const mera_type *w = &mera_graph_value(g, n->inputs[1])->type;
    geo->has_bias = n->n_inputs > 2 && n->inputs[2] >= 0;
    geo->sh = geo->sw = geo->dh = geo->dw = 1;
    geo->kh = geo->kw = 1;
    geo->groups = 1;
    if (n->op == MERA_OP_DENSE) {
        geo->dense = 1;
        geo->c = geo->cg = x->shape[x->rank - 1];
        geo->o = geo->og = w->shape[0];
        return MERA_OK;
    }
    if (n->op != MERA_OP_CONV2D)
        return mera_fail(err, MERA_ERR_INVALID, "node '%s' (%s) is not a conv2d or dense layer", n->name,
                         mera_op_table[n->op].name);
    const char *layout = mera_attr_string(n, "layout");
    if (!layout || strcmp(layout, "NHWC") != 0)
        return mera_fail(err, MERA_ERR_UNSUPPORTED, "conv2d node '%s' has layout %s; the DNA runs NHWC convolutions",
                         n->name, layout ? layout : "?");
    const char *kl = mera_attr_string(n, "kernel_layout");
    const int64_t *s = w->shape;
    if (kl && strcmp(kl, "OHWI") == 0) {
        geo->o = s[0]; geo->kh = s[1]; geo->kw = s[2];
    } else if (kl && strcmp(kl, "HWIO") == 0) {
        geo->kh = s[0]; geo->kw = s[1]; geo->o = s[3];
    } else {
        geo->o = s[0]; geo->kh = s[2]; geo->kw = s[3];
    }
    const int64_t *st = mera_node_attr(n, "strides")->ints, *dil = mera_node_attr(n, "dilation")->ints;
    geo->sh = st[0]; geo->sw = st[1];
    geo->dh = dil[0]; geo->dw = dil[1];
    geo->groups = mera_attr_int(n, "groups");
    geo->c = x->shape[3];
    geo->cg = geo->c / geo->groups;
    geo->og = geo->o / geo->groups;
    return MERA_OK;
}

int64_t dna_conv_block_bytes(const dna_conv_geom *geo, int64_t oc_n)
{
    return oc_n * geo->kh * geo->kw * geo->cg + (geo->has_bias ? 4 * oc_n : 0);
}

/* ---- instruction costs --------------------------------------------------- */

static int64_t ceil_div(int64_t a, int64_t b)
{
    return b <= 0 ? a : (a + b - 1) / b;
}

/* DRAM bytes a box really moves (*real) and the bytes the DRAM is busy for
 * (*effective): every maximal contiguous DRAM run costs at least a 64-byte
 * burst. Columns of a row merge into one run when the DRAM column stride
 * equals run_bytes, and rows merge too when the row stride then equals the
 * row's run: a whole-width tile is one long burst, a channel slice is many
 * short ones. Padded rows and columns read nothing. */
static void dma_bytes(const dna_dma *d, int64_t *real, int64_t *effective)
{
    int64_t nr = d->rows - d->pad_top - d->pad_bottom, nc = d->cols - d->pad_left - d->pad_right;
    if (nr <= 0 || nc <= 0) {
        *real = *effective = 0;
        return;
    }
    int64_t run = d->run_bytes;
    *real = nr * nc * run;
    int64_t n_runs, len;
    if (d->dram_col_stride == run || nc == 1) {
        len = nc * run;
        if (d->dram_row_stride == len || nr == 1) {
            len *= nr;
            n_runs = 1;
        } else {
            n_runs = nr;
        }
    } else {
        len = run;
        n_runs = nr * nc;
    }
    *effective = n_runs * (len > 64 ? len : 64);
}

/* Runs of `run` bytes, `stride` bytes apart, that one SRAM beat takes:
 * the SRAM is `banks` byte-wide banks (bank = address mod banks), and a
 * beat touches each bank at most once. Runs k and k + d collide when
 * d * stride lands within run bytes of 0 modulo banks, so a beat takes
 * runs up to the first such d (the same for every starting run: the
 * pattern only shifts). At most banks / run runs fit, so the loop is
 * short. */
static int64_t runs_per_beat(int64_t stride, int64_t run, int64_t banks)
{
    if (run >= banks)
        return 1;
    int64_t step = stride % banks;
    for (int64_t d = 1;; d++) {
        int64_t x = d * step % banks;
        if (x < run || x > banks - run)
            return d;
    }
}

/* SRAM beats of a box whose bytes are not one dense block in SRAM (the
 * strided SRAM side of a transposing DMA). A dense block streams at the
 * bank width, which is at least the DRAM's bytes per cycle on every
 * platform, so it never limits a DMA and costs nothing here; pad bytes are
 * written while the DRAM side is busy. When each row is one contiguous
 * SRAM run, the rows are the runs (at the row stride); otherwise the runs
 * of a row (at the column stride), and a beat never takes runs of two
 * rows. */
static int64_t sram_beats(const dna_dma *d, int64_t banks)
{
    int64_t run = d->run_bytes, rows = d->rows, cols = d->cols;
    int row_dense = cols == 1 || d->sram_col_stride == (uint32_t)run;
    if (row_dense && (rows == 1 || d->sram_row_stride == (uint64_t)(cols * run)))
        return 0;
    if (row_dense) {
        int64_t len = cols * run;
        return ceil_div(rows, runs_per_beat(d->sram_row_stride, len, banks)) * ceil_div(len, banks);
    }
    return rows * ceil_div(cols, runs_per_beat(d->sram_col_stride, run, banks)) * ceil_div(run, banks);
}

int64_t dna_dma_cycles(const mera_platform *p, const dna_dma *d, int64_t *bytes)
{
    int64_t real, eff;
    dma_bytes(d, &real, &eff);
    double bpc = p->dram_gbps * 1e3 / p->clock_mhz; /* bytes per cycle */
    int64_t dram = (int64_t)ceil((double)eff / bpc);
    int64_t sram = sram_beats(d, p->vector_lanes > 0 ? p->vector_lanes : 1);
    if (bytes)
        *bytes = real;
    return p->dma_setup_cycles + (dram > sram ? dram : sram);
}

static int64_t tile_elems(const dna_tile *t)
{
    return (int64_t)t->ext[0] * t->ext[1] * t->ext[2] * t->ext[3];
}

static int64_t insn_cost(const mera_graph *g, const dna_program *prog, const mera_platform *p, const dna_insn *in,
                         const dna_conv_geom *geo, int64_t *bytes, int64_t *macs)
{
    int64_t b = 0, m = 0, cycles = 1;
    switch (in->opcode) {
    case DNA_LOAD:
    case DNA_STORE:
        cycles = dna_dma_cycles(p, &in->u.dma, &b);
        break;
    case DNA_CONV: {
        const dna_conv *c = &in->u.conv;
        int64_t taps = geo->kh * geo->kw;
        int64_t k = geo->dense ? c->in_c : taps * geo->cg;
        int64_t px = geo->dense ? c->in_w : (int64_t)c->out_h * c->out_w;
        int64_t mac;
        if (!geo->dense && geo->cg == 1 && geo->groups > 1) /* depthwise: taps take the input lanes' place */
            mac = ceil_div(px, p->mac_px) * taps * ceil_div(c->oc_n, p->mac_oc);
        else
            mac = ceil_div(px, p->mac_px) * ceil_div(k, p->mac_ic) * ceil_div(c->oc_n, p->mac_oc);
        int64_t requant = ceil_div(px * c->oc_n, p->vector_lanes);
        cycles = (mac > requant ? mac : requant) + p->mac_ic + p->mac_oc;
        m = px * c->oc_n * k;
        break;
    }
    case DNA_VEC: {
        const dna_vec *v = &in->u.vec;
        const mera_node *n = mera_graph_node(g, prog->layers[in->layer].node);
        int64_t work = 0;
        if (mera_op_table[n->op].flags & MERA_OPF_WINDOW) {
            const mera_attr *k = mera_node_attr(n, "kernel");
            work = tile_elems(&v->dst) * (k && k->count >= 2 ? k->ints[0] * k->ints[1] : 1);
        } else {
            for (int s = 0; s < v->n_src && s < DNA_MAX_SRC; s++)
                work += tile_elems(&v->src[s]);
        }
        cycles = 16 + ceil_div(work, p->vector_lanes);
        break;
    }
    default:
        break;
    }
    if (bytes)
        *bytes = b;
    if (macs)
        *macs = m;
    return cycles;
}

int64_t dna_insn_cycles(const mera_graph *g, const dna_program *prog, const mera_platform *p, const dna_insn *in,
                        int64_t *bytes, int64_t *macs)
{
    dna_conv_geom geo;
    memset(&geo, 0, sizeof geo);
    if (in->opcode == DNA_CONV) {
        mera_error e;
        if (dna_conv_geometry(g, prog->layers[in->layer].node, &geo, &e))
            return 1;
    }
    return insn_cost(g, prog, p, in, &geo, bytes, macs);
}

/* ---- SRAM accesses for the hazard check ---------------------------------- */

typedef struct {
    int mem, write;
    int64_t lo, hi;
} sram_range;

/* The bytes a box touches in SRAM, as one conservative interval. */
static sram_range box_range(const dna_dma *d, int mem, int write)
{
    sram_range r = {mem, write, d->sram, 0};
    r.hi = (int64_t)d->sram + (int64_t)(d->rows - 1) * d->sram_row_stride +
           (int64_t)(d->cols - 1) * d->sram_col_stride + d->run_bytes;
    return r;
}

static sram_range tile_range(const dna_tile *t, int write)
{
    sram_range r = {DNA_MEM_ACT, write, t->addr, (int64_t)t->addr + tile_elems(t)};
    return r;
}

/* Returns the number of ranges written to r (capacity DNA_MAX_SRC + 3). */
static int insn_ranges(const dna_insn *in, const dna_conv_geom *geo, sram_range *r)
{
    switch (in->opcode) {
    case DNA_LOAD:
        r[0] = box_range(&in->u.dma, in->u.dma.mem, 1);
        return 1;
    case DNA_STORE:
        r[0] = box_range(&in->u.dma, DNA_MEM_ACT, 0);
        return 1;
    case DNA_CONV: {
        const dna_conv *c = &in->u.conv;
        r[0] = (sram_range){DNA_MEM_ACT, 0, c->in_addr, (int64_t)c->in_addr + (int64_t)c->in_h * c->in_w * c->in_c};
        r[1] = (sram_range){DNA_MEM_WGT, 0, c->wgt_addr, (int64_t)c->wgt_addr + dna_conv_block_bytes(geo, c->oc_n)};
        r[2] = (sram_range){DNA_MEM_ACT, 1, c->out_addr,
                            (int64_t)c->out_addr + (int64_t)c->out_h * c->out_w * c->oc_n};
        return 3;
    }
    case DNA_VEC: {
        const dna_vec *v = &in->u.vec;
        int n = 0;
        for (int s = 0; s < v->n_src && s < DNA_MAX_SRC; s++)
            r[n++] = tile_range(&v->src[s], 0);
        r[n++] = tile_range(&v->dst, 1);
        return n;
    }
    default:
        return 0;
    }
}

static const char *node_name(const mera_graph *g, const dna_program *prog, int layer)
{
    return mera_graph_node(g, prog->layers[layer].node)->name;
}

static mera_status check_pair(const mera_graph *g, const dna_program *prog, const dna_conv_geom *geos, int i, int j,
                              mera_error *err)
{
    const dna_insn *a = &prog->insns[i], *b = &prog->insns[j];
    sram_range ra[DNA_MAX_SRC + 3], rb[DNA_MAX_SRC + 3];
    int na = insn_ranges(a, &geos[a->layer], ra), nb = insn_ranges(b, &geos[b->layer], rb);
    static const char *const mem_names[2] = {"ACT", "WGT"};
    for (int x = 0; x < na; x++)
        for (int y = 0; y < nb; y++) {
            if (ra[x].mem != rb[y].mem || !(ra[x].write || rb[y].write))
                continue;
            if (ra[x].lo < rb[y].hi && rb[y].lo < ra[x].hi)
                return mera_fail(err, MERA_ERR_INVALID,
                                 "hazard: insn %d (%s, node %s) %s %s [%lld,%lld) while insn %d (%s, node %s) %s "
                                 "[%lld,%lld): the dependency tokens do not order them",
                                 i, dna_opcode_name(a->opcode), node_name(g, prog, a->layer),
                                 ra[x].write ? "writes" : "reads", mem_names[ra[x].mem & 1], (long long)ra[x].lo,
                                 (long long)ra[x].hi, j, dna_opcode_name(b->opcode),
                                 node_name(g, prog, b->layer), rb[y].write ? "writes" : "reads",
                                 (long long)rb[y].lo, (long long)rb[y].hi);
        }
    return MERA_OK;
}

/* Sorts instruction indices by start cycle, ties by program index. */
void dna_sort_by_start(int *idx, int count, const int64_t *start)
{
    /* Merge sort: stable, reentrant (no static key), O(n log n). */
    int *tmp = malloc((size_t)(count > 0 ? count : 1) * sizeof *tmp);
    if (!tmp) { /* fall back to insertion sort */
        for (int i = 1; i < count; i++) {
            int v = idx[i], j = i - 1;
            while (j >= 0 && (start[idx[j]] > start[v] || (start[idx[j]] == start[v] && idx[j] > v))) {
                idx[j + 1] = idx[j];
                j--;
            }
            idx[j + 1] = v;
        }
        return;
    }
    for (int w = 1; w < count; w *= 2)
        for (int lo = 0; lo < count; lo += 2 * w) {
            int mid = lo + w < count ? lo + w : count, hi = lo + 2 * w < count ? lo + 2 * w : count;
            int a = lo, b = mid, k = lo;
            while (a < mid && b < hi) {
                int x = idx[a], y = idx[b];
                int take_b = start[y] < start[x] || (start[y] == start[x] && y < x);
                tmp[k++] = take_b ? idx[b++] : idx[a++];
            }
            while (a < mid)
                tmp[k++] = idx[a++];
            while (b < hi)
                tmp[k++] = idx[b++];
            memcpy(idx + lo, tmp + lo, (size_t)(hi - lo) * sizeof *idx);
        }
    free(tmp);
}

/* ---- the queues ---------------------------------------------------------- */

typedef struct {
    int64_t *ts;
    int head, tail;
} fifo;

/* Simulates one DNA segment: fills start/end of its instructions and
 * returns the makespan in *makespan. */
static mera_status run_segment(const mera_graph *g, const dna_program *prog, const mera_platform *p,
                               const dna_conv_geom *geos, const dna_segment *seg, int64_t *start, int64_t *end,
                               int64_t *makespan, mera_error *err)
{
    int n = seg->count;
    mera_status st = MERA_OK;
    int *q_list = malloc((size_t)(n > 0 ? n : 1) * 3 * sizeof *q_list);
    int64_t *ts = malloc((size_t)(n > 0 ? n : 1) * N_FIFOS * sizeof *ts);
    if (!q_list || !ts) {
        free(q_list);
        free(ts);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory in the timing model");
    }
    int q_n[3] = {0, 0, 0}, q_head[3] = {0, 0, 0};
    int64_t q_free[3] = {0, 0, 0};
    for (int k = 0; k < n; k++) {
        int i = seg->first + k, q = dna_opcode_queue(prog->insns[i].opcode);
        q_list[q * n + q_n[q]++] = i;
    }
    fifo f[N_FIFOS];
    for (int k = 0; k < N_FIFOS; k++)
        f[k] = (fifo){ts + (size_t)k * (size_t)(n > 0 ? n : 1), 0, 0};
    /* pop/push FIFOs of each queue; -1: that queue has no such neighbour */
    static const int pop_prev[3] = {-1, F_L2C, F_C2S}, pop_next[3] = {F_C2L, F_S2C, -1};
    static const int push_prev[3] = {-1, F_C2L, F_S2C}, push_next[3] = {F_L2C, F_C2S, -1};
    int done = 0;
    *makespan = 0;
    while (done < n) {
        int progress = 0;
        for (int q = 0; q < 3; q++)
            while (q_head[q] < q_n[q]) {
                int i = q_list[q * n + q_head[q]];
                const dna_insn *in = &prog->insns[i];
                int pp = in->deps & DNA_DEP_POP_PREV ? pop_prev[q] : -1;
                int pn = in->deps & DNA_DEP_POP_NEXT ? pop_next[q] : -1;
                if ((pp >= 0 && f[pp].head == f[pp].tail) || (pn >= 0 && f[pn].head == f[pn].tail))
                    break; /* waits for a token */
                int64_t s = q_free[q];
                if (pp >= 0 && f[pp].ts[f[pp].head] > s)
                    s = f[pp].ts[f[pp].head];
                if (pn >= 0 && f[pn].ts[f[pn].head] > s)
                    s = f[pn].ts[f[pn].head];
                if (pp >= 0)
                    f[pp].head++;
                if (pn >= 0)
                    f[pn].head++;
                int64_t e = s + insn_cost(g, prog, p, in, &geos[in->layer], NULL, NULL);
                start[i] = s;
                end[i] = e;
                q_free[q] = e;
                if (e > *makespan)
                    *makespan = e;
                if ((in->deps & DNA_DEP_PUSH_PREV) && push_prev[q] >= 0)
                    f[push_prev[q]].ts[f[push_prev[q]].tail++] = e;
                if ((in->deps & DNA_DEP_PUSH_NEXT) && push_next[q] >= 0)
                    f[push_next[q]].ts[f[push_next[q]].tail++] = e;
                q_head[q]++;
                done++;
                progress = 1;
            }
        if (!progress) {
            /* Deadlock: name the first stuck head. */
            for (int q = 0; q < 3; q++)
                if (q_head[q] < q_n[q]) {
                    int i = q_list[q * n + q_head[q]];
                    const dna_insn *in = &prog->insns[i];
                    int pp = in->deps & DNA_DEP_POP_PREV ? pop_prev[q] : -1;
                    int fi = pp >= 0 && f[pp].head == f[pp].tail ? pp : pop_next[q];
                    st = mera_fail(err, MERA_ERR_INVALID,
                                   "malformed program: insn %d (%s, node %s) waits for a %s token that is never "
                                   "pushed (deadlock)",
                                   i, dna_opcode_name(in->opcode), node_name(g, prog, in->layer),
                                   fi >= 0 ? fifo_names[fi] : "?");
                    goto out;
                }
        }
    }
    for (int k = 0; k < N_FIFOS; k++)
        if (f[k].head != f[k].tail) {
            st = mera_fail(err, MERA_ERR_INVALID,
                           "malformed program: the DNA segment of insns [%d,%d) leaves %d %s token(s) unconsumed "
                           "(tokens must balance)",
                           seg->first, seg->first + seg->count, f[k].tail - f[k].head, fifo_names[k]);
            goto out;
        }
    /* Hazard check: sweep the instructions in start order keeping those
     * still running; at most one per queue can be, so the set is tiny. */
    int *order = q_list; /* reuse: n entries needed */
    for (int k = 0; k < n; k++)
        order[k] = seg->first + k;
    dna_sort_by_start(order, n, start);
    int active[3], n_active = 0;
    for (int k = 0; k < n; k++) {
        int i = order[k];
        int keep = 0;
        for (int a = 0; a < n_active; a++)
            if (end[active[a]] > start[i])
                active[keep++] = active[a];
        n_active = keep;
        int qi = dna_opcode_queue(prog->insns[i].opcode);
        for (int a = 0; a < n_active; a++) {
            int j = active[a];
            if (dna_opcode_queue(prog->insns[j].opcode) == qi)
                continue;
            if ((st = check_pair(g, prog, geos, i, j, err)))
                goto out;
        }
        /* replace this queue's previous entry (it ended by start[i]) */
        int a = 0;
        while (a < n_active && dna_opcode_queue(prog->insns[active[a]].opcode) != qi)
            a++;
        if (a == n_active)
            n_active++;
        active[a] = i;
    }
out:
    free(q_list);
    free(ts);
    return st;
}

/* ---- the whole program --------------------------------------------------- */

void dna_timing_release(dna_timing *t)
{
    if (!t)
        return;
    free(t->layers);
    t->layers = NULL;
}

void dna_insn_times_release(dna_insn_times *times)
{
    if (!times)
        return;
    free(times->start);
    free(times->end);
    free(times->seg_start_us);
    free(times->seg_us);
    free(times->seg_dev_start_us);
    memset(times, 0, sizeof *times);
}

static int64_t value_bytes(const mera_graph *g, int v)
{
    return v < 0 ? 0 : (int64_t)mera_type_nbytes(&mera_graph_value(g, v)->type);
}

mera_status dna_timing_model(const mera_graph *g, const dna_program *prog, const mera_platform *p, dna_timing *t,
                             dna_insn_times *times, mera_error *err)
{
    memset(t, 0, sizeof *t);
    int n_nodes = mera_graph_num_nodes(g), n = prog->n_insns, ns = prog->n_segments;
    dna_insn_times tm;
    memset(&tm, 0, sizeof tm);
    size_t ni = (size_t)(n > 0 ? n : 1), nsz = (size_t)(ns > 0 ? ns : 1);
    tm.start = calloc(ni, sizeof *tm.start);
    tm.end = calloc(ni, sizeof *tm.end);
    tm.seg_start_us = calloc(nsz, sizeof(double));
    tm.seg_us = calloc(nsz, sizeof(double));
    tm.seg_dev_start_us = calloc(nsz, sizeof(double));
    unsigned char *seen = calloc((size_t)(n_nodes > 0 ? n_nodes : 1), 1);
    dna_conv_geom *geos = calloc((size_t)(prog->n_layers > 0 ? prog->n_layers : 1), sizeof *geos);
    t->layers = calloc((size_t)(n_nodes > 0 ? n_nodes : 1), sizeof *t->layers);
    t->n_layers = n_nodes;
    mera_status st = MERA_OK;
    if (!tm.start || !tm.end || !tm.seg_start_us || !tm.seg_us || !tm.seg_dev_start_us || !geos || !seen || !t->layers) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory in the timing model");
        goto fail;
    }
    for (int l = 0; l < prog->n_layers; l++) {
        int node = prog->layers[l].node;
        int op = mera_graph_node(g, node)->op;
        if (mera_op_table[op].dna == MERA_DNA_CONV && (st = dna_conv_geometry(g, node, &geos[l], err)))
            goto fail;
        t->layers[node].on_dna = 1;
    }
    for (int k = 0; k < n_nodes; k++)
        t->layers[k].node = k;
    int64_t cyc = 0; /* device cycles before the current segment */
    double now = 0;  /* timeline, us */
    for (int s = 0; s < ns; s++) {
        const dna_segment *seg = &prog->segments[s];
        tm.seg_start_us[s] = now;
        if (seg->kind == DNA_SEG_HOST) {
            const mera_node *node = mera_graph_node(g, seg->node);
            int64_t bytes = 0;
            for (int i = 0; i < node->n_inputs; i++)
                bytes += value_bytes(g, node->inputs[i]);
            for (int o = 0; o < node->n_outputs; o++)
                bytes += value_bytes(g, node->outputs[o]);
            double us = (double)bytes / (DNA_HOST_GBPS * 1e3);
            t->layers[seg->node].host_us += us;
            t->host_us += us;
            tm.seg_us[s] = us;
            tm.seg_dev_start_us[s] = now;
            now += us;
            continue;
        }
        int64_t makespan = 0;
        if ((st = run_segment(g, prog, p, geos, seg, tm.start, tm.end, &makespan, err)))
            goto fail;
        double in_us = (double)seg->host_in_bytes / (p->pcie_gbps * 1e3);
        double out_us = (double)seg->host_out_bytes / (p->pcie_gbps * 1e3);
        double dev_us = (double)makespan / p->clock_mhz;
        t->host_us += p->host_call_us + in_us + out_us;
        tm.seg_dev_start_us[s] = now + p->host_call_us + in_us;
        tm.seg_us[s] = p->host_call_us + in_us + dev_us + out_us;
        now += tm.seg_us[s];
        for (int k = 0; k < seg->count; k++) {
            int i = seg->first + k;
            const dna_insn *in = &prog->insns[i];
            dna_layer_stats *ls = &t->layers[prog->layers[in->layer].node];
            int64_t bytes = 0, macs = 0, c = insn_cost(g, prog, p, in, &geos[in->layer], &bytes, &macs);
            int64_t s0 = cyc + tm.start[i], e0 = cyc + tm.end[i];
            if (!seen[prog->layers[in->layer].node] || s0 < ls->start_cycle)
                ls->start_cycle = s0;
            seen[prog->layers[in->layer].node] = 1;
            if (e0 > ls->end_cycle)
                ls->end_cycle = e0;
            switch (in->opcode) {
            case DNA_LOAD: ls->load_bytes += bytes; ls->load_cycles += c; break;
            case DNA_STORE: ls->store_bytes += bytes; ls->store_cycles += c; break;
            case DNA_CONV: ls->macs += macs; ls->mac_cycles += c; break;
            case DNA_VEC: ls->vec_cycles += c; break;
            default: break;
            }
        }
        cyc += makespan;
    }
    t->device_cycles = cyc;
    t->device_us = (double)cyc / p->clock_mhz;
    t->clock_mhz = p->clock_mhz;
    t->total_us = t->device_us + t->host_us;
    int64_t mpc = mera_platform_macs(p);
    for (int k = 0; k < n_nodes; k++) {
        dna_layer_stats *ls = &t->layers[k];
        int64_t span = ls->end_cycle - ls->start_cycle;
        ls->mac_utilization = span > 0 && mpc > 0 ? (double)ls->macs / ((double)span * (double)mpc) : 0.0;
        /* Both DMA queues share the one DRAM, so their busy cycles add. */
        ls->memory_bound = ls->load_cycles + ls->store_cycles > ls->mac_cycles + ls->vec_cycles;
    }
    free(geos);
    free(seen);
    if (times)
        *times = tm;
    else
        dna_insn_times_release(&tm);
    return MERA_OK;
fail:
    free(geos);
    free(seen);
    dna_insn_times_release(&tm);
    dna_timing_release(t);
    return st;
}
