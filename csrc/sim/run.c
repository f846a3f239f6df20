/* The DNA machine's runs (the code moved here from machine.c): a run's
 * buffers and DRAM, LOAD and STORE rows across the worker pool, CONV and
 * VEC tiles on their prepared kernels, host nodes, and a DNA segment
 * executed in order or wave by wave as plan.c decided at load.
 * docs/architecture.md, "The Simulator". */
#define _DEFAULT_SOURCE /* madvise, for dna_machine_options.release_const_pages */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "sim/machine_internal.h"
#include "util/threadpool.h"

/* ---- run ----------------------------------------------------------------- */

typedef struct {
    int64_t lo, hi, dram; /* WGT [lo, hi) holds DRAM [dram, dram + hi - lo) */
} wgt_tag;

/* MERA_SIM_PROFILE: host time of a run by kind of work (wall time, or with
 * MERA_SIM_PROFILE=cpu the calling thread's CPU time), printed to stderr
 * after each dna_machine_run, and for a run driven segment by segment (the
 * IP's emulated device) the totals of all its segments when it is freed.
 * The clock reads cost about 1 us per instruction. */
enum { PROF_LOAD, PROF_STORE, PROF_LOAD_FWD, PROF_STORE_FWD, PROF_CONV, PROF_VEC, PROF_LAYER, PROF_HOST, PROF_SETUP,
       PROF_N };
static const char *const prof_names[PROF_N] = {"LOAD", "STORE", "LOAD forwarded", "STORE forwarded", "CONV", "VEC",
                                               "whole layers", "host nodes", "setup/io"};

static double now_ns(int cpu)
{
    struct timespec ts;
    clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct dna_run {
    const dna_machine *m;
    uint8_t *act_dram; /* DRAM [dna_act_base, dram_bytes) */
    int own_dram;      /* act_dram allocated by dna_run_new */
    uint8_t *act, *wgt;
    float *bias;       /* aligned scratch for a CONV's bias, one per lane (bias_stride floats apart) */
    size_t bias_stride;
    void *scratch;     /* the kernels' scratch (dna_machine.scratch_bytes), one per lane
                        * (dna_machine.scratch_stride apart), or NULL */
    mera_error *lane_err; /* per lane: the error of its failed instruction */
    wgt_tag *tags;
    int n_tags, cap_tags;
    double prof_ns[PROF_N]; /* MERA_SIM_PROFILE */
    int64_t prof_count[PROF_N];
    int prof_by_caller;     /* dna_machine_run prints the profile itself (after the free) */
};

typedef struct dna_run run_ctx;

static const uint8_t *dram_r(const run_ctx *r, int64_t addr)
{
    const dna_program *prog = r->m->prog;
    return addr < prog->params_bytes ? prog->params_image + addr : r->act_dram + (addr - dna_act_base(prog));
}

static uint8_t *dram_w(const run_ctx *r, int64_t addr)
{
    return r->act_dram + (addr - dna_act_base(r->m->prog));
}

static mera_status tags_reserve(run_ctx *r, int extra, mera_error *err)
{
    if (r->n_tags + extra <= r->cap_tags)
        return MERA_OK;
    int nc = r->cap_tags ? r->cap_tags * 2 : 64;
    while (nc < r->n_tags + extra)
        nc *= 2;
    wgt_tag *t = realloc(r->tags, (size_t)nc * sizeof *t);
    if (!t)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    r->tags = t;
    r->cap_tags = nc;
    return MERA_OK;
}

/* WGT [lo, hi) is being overwritten: drop what the tags said about it.
 * Tags never overlap (every LOAD first invalidates its whole range), so
 * at most one tag straddles both ends and splits in two. */
static mera_status tags_invalidate(run_ctx *r, int64_t lo, int64_t hi, mera_error *err)
{
    mera_status st = tags_reserve(r, 1, err);
    if (st)
        return st;
    int k = 0, n = r->n_tags, have_extra = 0;
    wgt_tag extra = {0, 0, 0};
    for (int j = 0; j < n; j++) {
        wgt_tag t = r->tags[j];
        if (t.hi <= lo || t.lo >= hi) {
            r->tags[k++] = t;
            continue;
        }
        if (t.lo < lo)
            r->tags[k++] = (wgt_tag){t.lo, lo, t.dram};
        if (t.hi > hi) {
            extra = (wgt_tag){hi, t.hi, t.dram + (hi - t.lo)};
            have_extra = 1;
        }
    }
    if (have_extra)
        r->tags[k++] = extra;
    r->n_tags = k;
    return MERA_OK;
}

static mera_status tags_add(run_ctx *r, int64_t lo, int64_t hi, int64_t dram, mera_error *err)
{
    mera_status st = tags_reserve(r, 1, err);
    if (st)
        return st;
    r->tags[r->n_tags++] = (wgt_tag){lo, hi, dram};
    return MERA_OK;
}

/* Is WGT [addr, addr + size) the bytes of DRAM [dram, dram + size)? */
static int tags_cover(const run_ctx *r, int64_t addr, int64_t size, int64_t dram)
{
    int64_t cur = addr, end = addr + size;
    while (cur < end) {
        int hit = 0;
        for (int j = 0; j < r->n_tags && !hit; j++) {
            const wgt_tag *t = &r->tags[j];
            if (t->lo <= cur && cur < t->hi && t->dram - t->lo == dram - addr) {
                cur = t->hi;
                hit = 1;
            }
        }
        if (!hit)
            return 0;
    }
    return 1;
}

/* A LOAD read the constant image: release the pages wholly inside the
 * DRAM range it read (dna_machine_options.release_const_pages; the image
 * is a read-only file mapping, the pages fault back from the file). The
 * range is the box's extreme corners, as check_dma computes them. */
static void release_const(const dna_machine *m, const dna_dma *d)
{
#ifdef MADV_DONTNEED
    int64_t nr = d->rows - d->pad_top - d->pad_bottom, nc = d->cols - d->pad_left - d->pad_right;
    if (nr <= 0 || nc <= 0)
        return;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            int64_t row = a ? d->rows - d->pad_bottom - 1 : d->pad_top, col = b ? d->cols - d->pad_right - 1 : d->pad_left;
            int64_t x = d->dram + row * d->dram_row_stride + col * d->dram_col_stride;
            lo = x < lo ? x : lo;
            hi = x + d->run_bytes > hi ? x + d->run_bytes : hi;
        }
    /* Only boxes wholly inside the constant image: a padded activation box
     * has a virtual origin that can lie below params_bytes (isa.h). */
    if (lo < 0 || hi > m->prog->params_bytes)
        return;
    uintptr_t page = (uintptr_t)m->page_size;
    uintptr_t start = ((uintptr_t)(m->prog->params_image + lo) + page - 1) & ~(page - 1);
    uintptr_t end = (uintptr_t)(m->prog->params_image + hi) & ~(page - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
#else
    (void)m;
    (void)d;
#endif
}

/* ---- LOAD and STORE rows across the worker pool ----------------------------
 *
 * A box's rows go to the workers only when they write disjoint bytes: the
 * row stride on the written side is at least one row's extent (so the
 * serial order of the writes cannot matter), and the box is large enough
 * to pay for the split. Reads are of the other memory (DRAM or SRAM), which
 * no row writes. */

#define DMA_MIN_CHUNK 16384 /* bytes per range of the worker pool */

typedef struct {
    const run_ctx *r;
    const dna_dma *d;
    uint8_t *buf; /* LOAD: the destination buffer */
    int padded;
} dma_job;

/* Do the box's rows write disjoint bytes on the side with these strides? */
static int dma_rows_disjoint(const dna_dma *d, int64_t row_stride, int64_t col_stride)
{
    int64_t extent = (int64_t)(d->cols - 1) * col_stride + d->run_bytes;
    return d->rows > 1 && d->cols >= 1 && col_stride >= 0 && row_stride >= extent;
}

/* DRAM [addr, addr + n) as one pointer, or NULL when the range straddles
 * the constant image's end (then the bytes are read one run at a time). */
static const uint8_t *dram_span(const run_ctx *r, int64_t addr, int64_t n)
{
    int64_t pb = r->m->prog->params_bytes;
    return (addr < pb) == (addr + n - 1 < pb) ? dram_r(r, addr) : NULL;
}

typedef struct {
    uint8_t *dst;
    const uint8_t *src;
} copy_job;

static void copy_range(void *ctx, int64_t b0, int64_t b1)
{
    const copy_job *j = ctx;
    memcpy(j->dst + b0 * DMA_MIN_CHUNK, j->src + b0 * DMA_MIN_CHUNK, (size_t)((b1 - b0) * DMA_MIN_CHUNK));
}

/* memcpy of n bytes, its DMA_MIN_CHUNK pieces across the worker pool.
 * Returns whether it posted a pool job. */
static int dma_copy(int threads, uint8_t *dst, const uint8_t *src, int64_t n)
{
    int64_t pieces = n / DMA_MIN_CHUNK, done = pieces * DMA_MIN_CHUNK;
    int posted = pieces >= 2 && threads > 1;
    if (pieces >= 2) {
        copy_job j = {dst, src};
        mera_parallel_for(threads, pieces, 1, copy_range, &j);
    } else {
        done = 0;
    }
    memcpy(dst + done, src + done, (size_t)(n - done));
    return posted;
}

/* Runs a LOAD's or STORE's rows on up to threads threads; returns whether
 * it posted a pool job. */
static int dma_split(const run_ctx *r, int threads, const dna_dma *d, int disjoint, mera_parallel_fn fn, dma_job *j)
{
    int64_t block = sim_dma_block_bytes(d);
    if (block > 0) { /* one memcpy, or its pieces on the workers */
        const uint8_t *src = j->buf ? dram_span(r, d->dram, block) : r->act + d->sram;
        uint8_t *dst = j->buf ? j->buf + d->sram : dram_w(r, d->dram);
        if (src)
            return dma_copy(threads, dst, src, block);
    }
    int64_t row_bytes = (int64_t)d->cols * d->run_bytes;
    if (disjoint && row_bytes * d->rows >= 2 * DMA_MIN_CHUNK) {
        mera_parallel_for(threads, d->rows, 1 + DMA_MIN_CHUNK / (row_bytes + 1), fn, j);
        return threads > 1;
    }
    fn(j, 0, d->rows);
    return 0;
}

static void load_rows(void *ctx, int64_t row0, int64_t row1)
{
    const dma_job *j = ctx;
    const run_ctx *r = j->r;
    const dna_dma *d = j->d;
    uint8_t *buf = j->buf;
    const int64_t rb = d->run_bytes;
    /* runs that follow each other on both sides: a row's columns are one block */
    const int sram_dense = d->sram_col_stride == (uint32_t)rb, both_dense = sram_dense && d->dram_col_stride == rb;
    for (int64_t row = row0; row < row1 && rb == 1 && !j->padded && !both_dense; row++) {
        /* a transposing scatter: bytes, no memcpy per byte */
        uint8_t *dst = buf + d->sram + row * d->sram_row_stride;
        int64_t src = d->dram + row * d->dram_row_stride;
        for (int64_t col = 0; col < d->cols; col++)
            dst[col * d->sram_col_stride] = *dram_r(r, src + col * d->dram_col_stride);
    }
    for (int64_t row = row0; row < row1 && (rb != 1 || j->padded || both_dense); row++) {
        uint8_t *dst_row = buf + d->sram + row * d->sram_row_stride;
        int pad_row = row < d->pad_top || row >= d->rows - d->pad_bottom;
        int64_t c0 = pad_row ? d->cols : d->pad_left, c1 = pad_row ? d->cols : d->cols - d->pad_right;
        const uint8_t *src = both_dense && c1 > c0
                                 ? dram_span(r, d->dram + row * d->dram_row_stride + c0 * rb, (c1 - c0) * rb)
                                 : NULL;
        if (sram_dense) { /* the padding columns as two blocks */
            memset(dst_row, d->pad_value, (size_t)(c0 * rb));
            memset(dst_row + c1 * rb, d->pad_value, (size_t)((d->cols - c1) * rb));
        }
        if (src)
            memcpy(dst_row + c0 * rb, src, (size_t)((c1 - c0) * rb));
        for (int64_t col = 0; col < d->cols; col++) {
            int inside = col >= c0 && col < c1;
            if ((inside && src) || (!inside && sram_dense))
                continue; /* copied or padded above */
            uint8_t *dst = dst_row + col * d->sram_col_stride;
            if (!inside)
                memset(dst, d->pad_value, (size_t)rb);
            else
                memcpy(dst, dram_r(r, d->dram + row * d->dram_row_stride + col * d->dram_col_stride), (size_t)rb);
        }
    }
}

static void store_rows(void *ctx, int64_t row0, int64_t row1)
{
    const dma_job *j = ctx;
    const run_ctx *r = j->r;
    const dna_dma *d = j->d;
    const int64_t rb = d->run_bytes;
    if (d->sram_col_stride == (uint32_t)rb && d->dram_col_stride == rb) { /* a row is one block */
        for (int64_t row = row0; row < row1; row++)
            memcpy(dram_w(r, d->dram + row * d->dram_row_stride), r->act + d->sram + row * d->sram_row_stride,
                   (size_t)(d->cols * rb));
        return;
    }
    if (rb == 1) { /* a transposing gather: bytes, no memcpy per byte */
        for (int64_t row = row0; row < row1; row++) {
            uint8_t *dst = dram_w(r, d->dram + row * d->dram_row_stride);
            const uint8_t *src = r->act + d->sram + row * d->sram_row_stride;
            for (int64_t col = 0; col < d->cols; col++)
                dst[col * d->dram_col_stride] = src[col * d->sram_col_stride];
        }
        return;
    }
    for (int64_t row = row0; row < row1; row++)
        for (int64_t col = 0; col < d->cols; col++)
            memcpy(dram_w(r, d->dram + row * d->dram_row_stride + col * d->dram_col_stride),
                   r->act + d->sram + row * d->sram_row_stride + col * d->sram_col_stride, (size_t)rb);
}

/* The bytes a LOAD moves, on up to threads threads. */
static void load_bytes(run_ctx *r, int i, int threads)
{
    const dna_dma *d = &r->m->prog->insns[i].u.dma;
    uint8_t *buf = d->mem == DNA_MEM_WGT ? r->wgt : r->act;
    int padded = d->pad_top || d->pad_bottom || d->pad_left || d->pad_right;
    /* the prepared kernels hold the weights: only the tags (load_tags) matter */
    if (d->mem == DNA_MEM_WGT && r->m->wgt_unread)
        return;
    dma_job j = {r, d, buf, padded};
    dma_split(r, threads, d, dma_rows_disjoint(d, d->sram_row_stride, d->sram_col_stride), load_rows, &j);
    if (r->m->opt.release_const_pages)
        release_const(r->m, d);
}

/* What a LOAD into WGT leaves there: the tags the CONVs check. */
static mera_status load_tags(run_ctx *r, int i, mera_error *err)
{
    const dna_dma *d = &r->m->prog->insns[i].u.dma;
    if (d->mem != DNA_MEM_WGT)
        return MERA_OK;
    /* Tag what now sits in WGT: per row, when a row is one contiguous run
     * on both sides and unpadded. */
    int64_t hi = (int64_t)d->sram + (int64_t)(d->rows - 1) * d->sram_row_stride +
                 (int64_t)(d->cols - 1) * d->sram_col_stride + d->run_bytes;
    mera_status st = tags_invalidate(r, d->sram, hi, err);
    if (st)
        return st;
    int row_linear = (d->cols == 1 || (d->sram_col_stride == (uint32_t)d->run_bytes &&
                                       d->dram_col_stride == d->run_bytes)) &&
                     d->pad_left == 0 && d->pad_right == 0;
    int64_t len = (int64_t)d->cols * d->run_bytes;
    /* rows that overlap in WGT (a stride shorter than a row: only a
     * malformed program) are not tagged; the tags stay disjoint and at
     * most one per row that fits in WGT */
    if (!row_linear || (d->rows > 1 && (int64_t)d->sram_row_stride < len))
        return MERA_OK;
    for (int64_t row = d->pad_top; row < d->rows - d->pad_bottom; row++) {
        int64_t lo = (int64_t)d->sram + row * d->sram_row_stride;
        if ((st = tags_add(r, lo, lo + len, d->dram + row * d->dram_row_stride, err)))
            return st;
    }
    return MERA_OK;
}

static void exec_store(run_ctx *r, int i, int threads)
{
    const dna_dma *d = &r->m->prog->insns[i].u.dma;
    dma_job j = {r, d, NULL, 0};
    dma_split(r, threads, d, dma_rows_disjoint(d, d->dram_row_stride, d->dram_col_stride), store_rows, &j);
}

/* A CONV's check that WGT holds its weight block (the tags). */
static mera_status conv_tags(run_ctx *r, int i, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_conv *k = &m->prog->insns[i].u.conv;
    const conv_prep *c = m->insn_prep[i];
    int64_t blk = c->w_bytes + (c->has_bias ? 4 * (int64_t)k->oc_n : 0);
    if (!tags_cover(r, k->wgt_addr, blk, k->wgt_dram))
        return sim_insn_fail(m, err, MERA_ERR_INVALID, i,
                         "WGT [%u, %lld) does not hold the weight block loaded from DRAM %lld (program bug: missing "
                         "or overwritten weight LOAD)",
                         k->wgt_addr, (long long)(k->wgt_addr + blk), (long long)k->wgt_dram);
    return MERA_OK;
}

/* The lane's own scratch and bias buffer (lane < dna_machine.lanes). */
static void *lane_scratch(const run_ctx *r, int lane)
{
    return r->scratch ? (uint8_t *)r->scratch + (size_t)lane * r->m->scratch_stride : NULL;
}

/* threads: the kernel's thread count, 0 the tile's own (conv_prep.threads). */
static mera_status exec_conv(run_ctx *r, int i, int lane, int threads, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_conv *k = &m->prog->insns[i].u.conv;
    const conv_prep *c = m->insn_prep[i];
    mera_kernel_args a;
    sim_conv_args(c, &a);
    a.threads = threads > 0 ? threads : c->threads;
    int64_t src = m->fwd_src ? m->fwd_src[(size_t)i * DNA_MAX_SRC] : -1, dst = m->fwd_dst ? m->fwd_dst[i] : -1;
    a.in[0] = src >= 0 ? dram_r(r, src) : r->act + k->in_addr; /* forwarded: the LOAD's DRAM source */
    a.in[1] = r->wgt ? r->wgt + k->wgt_addr : NULL; /* NULL: prepared, the kernel holds the weights */
    if (c->has_bias && !c->state) { /* a prepared kernel holds its bias */
        float *bias = r->bias + (size_t)lane * r->bias_stride;
        memcpy(bias, r->wgt + k->wgt_addr + c->w_bytes, (size_t)k->oc_n * sizeof(float));
        a.in[2] = bias;
    }
    a.out[0] = dst >= 0 ? dram_w(r, dst) : r->act + k->out_addr; /* forwarded: the STORE's DRAM range */
    a.scratch = lane_scratch(r, lane);
    a.scratch_bytes = r->scratch ? m->scratch_bytes : 0;
    mera_status st = c->k.run(&a, err);
    if (st)
        mera_error_prefix(err, "insn %d (CONV, node '%s'): ", i, c->node.name);
    return st;
}

/* A layer run whole (plan_layers): its kernel on its inputs and output in
 * DRAM, at instruction i (lruns[].at). */
static mera_status exec_layer(run_ctx *r, const layer_run *l, int i, int lane, int threads, mera_error *err)
{
    mera_kernel_args a;
    const mera_kernel *k;
    const char *name;
    if (l->prep) {
        sim_conv_args(l->prep, &a);
        a.threads = threads > 0 ? threads : l->prep->threads;
        k = &l->prep->k;
        name = l->prep->node.name;
    } else {
        sim_vec_args(l->vprep, &a);
        a.threads = threads > 0 ? threads : l->vprep->threads;
        k = &l->vprep->k;
        name = l->vprep->node->name;
    }
    for (int q = 0; q < l->n_x; q++) /* a conv2d: its input (its weights and bias are packed) */
        a.in[q] = dram_r(r, l->x[q]);
    a.out[0] = dram_w(r, l->y);
    a.scratch = lane_scratch(r, lane);
    a.scratch_bytes = r->scratch ? r->m->scratch_bytes : 0;
    mera_status st = k->run(&a, err);
    if (st)
        mera_error_prefix(err, "insn %d (layer '%s' run whole): ", i, name);
    return st;
}

static mera_status exec_vec(run_ctx *r, int i, int lane, int threads, mera_error *err)
{
    const dna_vec *k = &r->m->prog->insns[i].u.vec;
    const vec_prep *v = r->m->insn_prep[i];
    mera_kernel_args a;
    sim_vec_args(v, &a);
    a.threads = threads > 0 ? threads : v->threads;
    const dna_machine *m = r->m;
    for (int s = 0; s < k->n_src; s++) {
        int64_t src = m->fwd_src ? m->fwd_src[(size_t)i * DNA_MAX_SRC + s] : -1;
        a.in[s] = src >= 0 ? dram_r(r, src) : r->act + k->src[s].addr;
    }
    int64_t dst = m->fwd_dst ? m->fwd_dst[i] : -1;
    a.out[0] = dst >= 0 ? dram_w(r, dst) : r->act + k->dst.addr;
    a.scratch = lane_scratch(r, lane);
    a.scratch_bytes = r->scratch ? r->m->scratch_bytes : 0;
    mera_status st = v->k.run(&a, err);
    if (st)
        mera_error_prefix(err, "insn %d (VEC, node '%s'): ", i, v->node->name);
    return st;
}

static const void *value_read(const run_ctx *r, int v)
{
    int64_t at = r->m->prog->value_dram[v];
    return at >= 0 ? (const void *)dram_r(r, at) : r->m->value_data[v];
}

mera_status dna_machine_run_host_node(const dna_machine *m, int n, const void *const *in, void *const *out,
                                      mera_error *err)
{
    if (n < 0 || n >= m->n_nodes || !m->host_ready[n])
        return mera_fail(err, MERA_ERR_INVALID, "node %d is not a host node this machine prepared", n);
    const mera_node *node = mera_graph_node(m->g, n);
    mera_kernel_args a;
    mera_kernel_node_args(m->g, n, m->value_data, &a);
    for (int i = 0; i < node->n_inputs; i++)
        if (node->inputs[i] >= 0 && in[i])
            a.in[i] = in[i];
    for (int o = 0; o < node->n_outputs; o++)
        a.out[o] = out[o];
    a.state = m->host_state[n];
    a.threads = m->opt.threads;
    mera_status st = m->host_k[n].run(&a, err);
    if (st)
        mera_error_prefix(err, "node '%s' (%s): ", node->name, mera_op_table[node->op].name);
    return st;
}

/* A host node on the run's DRAM. */
static mera_status exec_host(run_ctx *r, int n, mera_error *err)
{
    const dna_machine *m = r->m;
    const mera_node *node = mera_graph_node(m->g, n);
    const void *in[MERA_MAX_NODE_INPUTS];
    void *out[MERA_MAX_NODE_OUTPUTS];
    for (int i = 0; i < node->n_inputs; i++)
        in[i] = node->inputs[i] >= 0 ? value_read(r, node->inputs[i]) : NULL;
    for (int o = 0; o < node->n_outputs; o++)
        out[o] = dram_w(r, m->prog->value_dram[node->outputs[o]]);
    return dna_machine_run_host_node(m, n, in, out, err);
}

/* Zeroed, BUF_ALIGN-aligned, freed with free_buf. calloc, not memset:
 * large blocks come zeroed from the system and only the pages a program
 * touches become resident (the IP target's memory budget). Deterministic:
 * a program reading unwritten bytes gets zeros every run. */
static void *alloc_buf(int64_t bytes)
{
    size_t n = (size_t)(bytes > 0 ? bytes : 1);
    uint8_t *raw = calloc(1, n + BUF_ALIGN + sizeof(void *));
    if (!raw)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + sizeof(void *) + BUF_ALIGN - 1) & ~(uintptr_t)(BUF_ALIGN - 1);
    ((void **)p)[-1] = raw;
    return (void *)p;
}

static void free_buf(void *p)
{
    if (p)
        free(((void **)p)[-1]);
}

dna_run *dna_run_new(const dna_machine *m, uint8_t *act_dram, mera_error *err)
{
    const dna_program *prog = m->prog;
    dna_run *r = calloc(1, sizeof *r);
    if (!r) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    r->m = m;
    int max_oc = 1;
    for (int k = 0; k < m->n_convs; k++)
        if (m->convs[k]->key.oc_n > max_oc)
            max_oc = m->convs[k]->key.oc_n;
    if (act_dram) {
        r->act_dram = act_dram;
    } else {
        r->act_dram = alloc_buf(prog->dram_bytes - dna_act_base(prog));
        r->own_dram = 1;
    }
    r->act = alloc_buf(prog->act_bytes);
    /* WGT's bytes are never read or written when every CONV kernel holds
     * its packed weights (wgt_unread): no buffer, only the tags */
    r->wgt = m->wgt_unread ? NULL : alloc_buf(prog->wgt_bytes);
    r->bias_stride = ((size_t)max_oc + 15) & ~(size_t)15;
    r->bias = alloc_buf((int64_t)(r->bias_stride * 4 * (size_t)m->lanes));
    r->scratch = m->scratch_bytes ? alloc_buf((int64_t)(m->scratch_stride * (size_t)m->lanes)) : NULL;
    r->lane_err = m->lanes > 1 ? calloc((size_t)m->lanes, sizeof *r->lane_err) : NULL;
    if (!r->act_dram || !r->act || (!m->wgt_unread && !r->wgt) || !r->bias || (m->scratch_bytes && !r->scratch) ||
        (m->lanes > 1 && !r->lane_err)) {
        dna_run_free(r);
        mera_fail(err, MERA_ERR_NOMEM, "out of memory allocating the DNA machine's DRAM and buffers");
        return NULL;
    }
    return r;
}

static void prof_print(const double *ns, const int64_t *count)
{
    double total = 0;
    for (int k = 0; k < PROF_N; k++)
        total += ns[k];
    fprintf(stderr, "mera sim profile: %.3f ms", total / 1e6);
    for (int k = 0; k < PROF_N; k++)
        if (count[k])
            fprintf(stderr, ", %s %.3f ms (%lld)", prof_names[k], ns[k] / 1e6, (long long)count[k]);
    fputc('\n', stderr);
}

void dna_run_free(dna_run *r)
{
    if (!r)
        return;
    if (r->m->profile && !r->prof_by_caller)
        prof_print(r->prof_ns, r->prof_count);
    if (r->own_dram)
        free_buf(r->act_dram);
    free_buf(r->act);
    free_buf(r->wgt);
    free_buf(r->bias);
    free_buf(r->scratch);
    free(r->lane_err);
    free(r->tags);
    free(r);
}

uint8_t *dna_run_dram(dna_run *r)
{
    return r->act_dram;
}

/* ---- executing a DNA segment ----------------------------------------------
 *
 * An instruction has a tag part (a LOAD into WGT records what WGT now
 * holds, a CONV checks that WGT holds its weight block) and a byte part
 * (what it reads and writes in ACT, WGT and DRAM). In execution order the
 * two run one instruction after the other. With waves (plan_waves), the
 * tag parts of the whole segment run first, in execution order (they read
 * and write only the tags, which no byte part reads), then the byte parts
 * wave by wave: the instructions of a wave touch no byte another of them
 * writes, and every instruction they depend on ran in an earlier wave, so
 * any order of a wave's instructions, or all of them at once, writes the
 * bytes the execution order writes. */

static mera_status insn_tags(run_ctx *r, int i, mera_error *err)
{
    switch (r->m->prog->insns[i].opcode) {
    case DNA_LOAD: return load_tags(r, i, err);
    case DNA_CONV: return conv_tags(r, i, err);
    default: return MERA_OK;
    }
}

/* The byte part of instruction i on lane `lane` (its scratch), its kernel
 * or rows on threads threads (0: the instruction's own count); its time
 * goes to ns and count (MERA_SIM_PROFILE). */
static mera_status insn_bytes(run_ctx *r, int i, int lane, int threads, double *ns, int64_t *count, mera_error *err)
{
    const dna_machine *m = r->m;
    double t0 = m->profile ? now_ns(m->profile == 2) : 0;
    mera_status st = MERA_OK;
    int kind = -1;
    const layer_run *l = m->insn_lrun && m->insn_lrun[i] >= 0 ? &m->lruns[m->insn_lrun[i]] : NULL;
    if (l) { /* a layer run whole: its bytes at its last instruction, none at the others */
        if (l->at != i)
            return MERA_OK;
        st = exec_layer(r, l, i, lane, threads, err);
        kind = PROF_LAYER;
    } else switch (m->prog->insns[i].opcode) {
    case DNA_LOAD:
    case DNA_STORE:
        if (m->fwd_dead && m->fwd_dead[i]) { /* forwarded: no bytes move */
            kind = m->prog->insns[i].opcode == DNA_LOAD ? PROF_LOAD_FWD : PROF_STORE_FWD;
        } else if (m->prog->insns[i].opcode == DNA_LOAD) {
            load_bytes(r, i, threads > 0 ? threads : m->opt.threads);
            kind = PROF_LOAD;
        } else {
            exec_store(r, i, threads > 0 ? threads : m->opt.threads);
            kind = PROF_STORE;
        }
        break;
    case DNA_CONV: st = exec_conv(r, i, lane, threads, err); kind = PROF_CONV; break;
    case DNA_VEC: st = exec_vec(r, i, lane, threads, err); kind = PROF_VEC; break;
    case DNA_NOP: break;
    default: MERA_BUG("unvalidated opcode");
    }
    if (m->profile && kind >= 0) {
        ns[kind] += now_ns(m->profile == 2) - t0;
        count[kind]++;
    }
    return st;
}

/* The first n instructions of a DNA segment in execution order, each
 * whole (a LOAD moves its bytes, then tags; a CONV checks, then runs). */
static mera_status run_in_order(run_ctx *r, const dna_segment *seg, int n, int64_t *span, mera_error *err)
{
    const dna_machine *m = r->m;
    mera_status st = MERA_OK;
    for (int k = 0; k < n && !st; k++) {
        int i = m->order[seg->first + k];
        if (m->prog->insns[i].opcode == DNA_LOAD) {
            st = insn_bytes(r, i, 0, 0, r->prof_ns, r->prof_count, err);
            st = st ? st : insn_tags(r, i, err);
        } else {
            st = insn_tags(r, i, err);
            st = st ? st : insn_bytes(r, i, 0, 0, r->prof_ns, r->prof_count, err);
        }
        if (m->times.end[i] > *span)
            *span = m->times.end[i];
    }
    return st;
}

/* The byte parts alone of the first n instructions in execution order
 * (their tag parts ran). */
static mera_status run_in_order_bytes(run_ctx *r, const dna_segment *seg, int n, int64_t *span, mera_error *err)
{
    const dna_machine *m = r->m;
    mera_status st = MERA_OK;
    for (int k = 0; k < n && !st; k++) {
        int i = m->order[seg->first + k];
        st = insn_bytes(r, i, 0, 0, r->prof_ns, r->prof_count, err);
        if (m->times.end[i] > *span)
            *span = m->times.end[i];
    }
    return st;
}

/* A wave across the lanes: each lane takes the wave's next instruction
 * until none is left, and runs it on one thread with its own scratch. */
typedef struct {
    run_ctx *r;
    const int *items;
    int n, next;
    int failed_at[MERA_MAX_THREADS]; /* per lane: the position of its failed instruction, else n */
    mera_status st[MERA_MAX_THREADS];
    double ns[MERA_MAX_THREADS][PROF_N];
    int64_t count[MERA_MAX_THREADS][PROF_N];
} lanes_job;

static void run_lane(void *ctx, int64_t lane, int64_t lane_end)
{
    (void)lane_end; /* one lane per range; a pool busy elsewhere gives lane 0 all of them */
    lanes_job *j = ctx;
    for (;;) {
        int q = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (q >= j->n)
            return;
        mera_status st = insn_bytes(j->r, j->items[q], (int)lane, 1, j->ns[lane], j->count[lane], &j->r->lane_err[lane]);
        if (st) {
            j->failed_at[lane] = q;
            j->st[lane] = st;
            return;
        }
    }
}

static mera_status run_waves(run_ctx *r, int s, int64_t *span, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_segment *seg = &m->prog->segments[s];
    for (int k = 0; k < seg->count; k++) {
        int i = m->order[seg->first + k];
        if (m->times.end[i] > *span)
            *span = m->times.end[i];
    }
    /* the tag parts, in execution order */
    for (int k = 0; k < seg->count; k++) {
        int i = m->order[seg->first + k];
        mera_error tag_err;
        mera_status st = insn_tags(r, i, &tag_err);
        if (st) {
            /* as in execution order: what ran before it (a LOAD's bytes too), then its error */
            int64_t unused = 0;
            mera_status first = run_in_order_bytes(r, seg, k + (m->prog->insns[i].opcode == DNA_LOAD), &unused, err);
            if (first)
                return first;
            if (err)
                *err = tag_err;
            return st;
        }
    }
    for (int w = m->seg_wave[s]; w < m->seg_wave[s + 1]; w++) {
        const int *items = m->wave_items + m->wave_start[w];
        int n = m->wave_start[w + 1] - m->wave_start[w];
        if (!m->wave_lanes[w]) {
            for (int q = 0; q < n; q++) {
                mera_status st = insn_bytes(r, items[q], 0, m->insn_threads[items[q]], r->prof_ns, r->prof_count, err);
                if (st)
                    return st;
            }
            continue;
        }
        lanes_job j;
        j.r = r;
        j.items = items;
        j.n = n;
        j.next = 0;
        for (int l = 0; l < m->lanes; l++) {
            j.failed_at[l] = n;
            if (m->profile) {
                memset(j.ns[l], 0, sizeof j.ns[l]);
                memset(j.count[l], 0, sizeof j.count[l]);
            }
        }
        mera_parallel_for(m->lanes, m->lanes, 1, run_lane, &j);
        int bad = -1;
        for (int l = 0; l < m->lanes; l++) {
            if (j.failed_at[l] < n && (bad < 0 || j.failed_at[l] < j.failed_at[bad]))
                bad = l;
            for (int k = 0; m->profile && k < PROF_N; k++) {
                r->prof_ns[k] += j.ns[l][k];
                r->prof_count[k] += j.count[l][k];
            }
        }
        if (bad >= 0) {
            if (err)
                *err = r->lane_err[bad];
            return j.st[bad];
        }
    }
    return MERA_OK;
}

mera_status dna_run_segment(dna_run *r, int s, int64_t *cycles, mera_error *err)
{
    const dna_machine *m = r->m;
    const dna_program *prog = m->prog;
    if (cycles)
        *cycles = 0;
    if (s < 0 || s >= prog->n_segments)
        return mera_fail(err, MERA_ERR_INVALID, "segment %d outside the program's %d", s, prog->n_segments);
    const dna_segment *seg = &prog->segments[s];
    if (seg->kind == DNA_SEG_HOST) {
        if (m->opt.dna_only)
            return mera_fail(err, MERA_ERR_INVALID, "segment %d is a host segment; this machine runs DNA segments only",
                             s);
        double t0 = m->profile ? now_ns(m->profile == 2) : 0;
        mera_status hs = exec_host(r, seg->node, err);
        if (m->profile) {
            r->prof_ns[PROF_HOST] += now_ns(m->profile == 2) - t0;
            r->prof_count[PROF_HOST]++;
        }
        return hs;
    }
    int64_t span = 0;
    mera_status st = m->use_waves ? run_waves(r, s, &span, err) : run_in_order(r, seg, seg->count, &span, err);
    if (cycles)
        *cycles = span;
    return st;
}

/* A run of dna_machine_run: the machine's spare one, reset to the state
 * of a new run (the bytes earlier runs wrote zeroed again, no WGT tags), or
 * a new one when the spare is in use by another thread. Reusing the
 * buffers saves allocating, and faulting in, DRAM and buffers every run. */
static dna_run *take_run(const dna_machine *m, mera_error *err)
{
    dna_run *r = __atomic_exchange_n(&((dna_machine *)m)->spare, NULL, __ATOMIC_ACQ_REL);
    if (!r)
        return dna_run_new(m, NULL, err);
    uint8_t *buf[3] = {r->act, r->wgt, r->act_dram};
    for (int b = 0; b < 3; b++)
        if (buf[b] && m->zeroed[b][1] > m->zeroed[b][0])
            memset(buf[b] + m->zeroed[b][0], 0, (size_t)(m->zeroed[b][1] - m->zeroed[b][0]));
    r->n_tags = 0;
    memset(r->prof_ns, 0, sizeof r->prof_ns);
    memset(r->prof_count, 0, sizeof r->prof_count);
    return r;
}

static void give_back_run(const dna_machine *m, dna_run *r)
{
    dna_run *none = NULL;
    if (!__atomic_compare_exchange_n(&((dna_machine *)m)->spare, &none, r, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        dna_run_free(r);
}

mera_status dna_machine_run(const dna_machine *m, const void *const *inputs, void *const *outputs, mera_error *err)
{
    const dna_program *prog = m->prog;
    const mera_graph *g = m->g;
    double t0 = m->profile ? now_ns(m->profile == 2) : 0, setup = 0;
    dna_run *r = take_run(m, err);
    if (!r)
        return err ? err->code : MERA_ERR_NOMEM;
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        int v = mera_graph_input(g, k);
        if (m->input_slot[v] >= 0)
            memcpy(dram_w(r, prog->value_dram[v]), inputs[m->input_slot[v]],
                   mera_type_nbytes(&mera_graph_value(g, v)->type));
    }
    if (m->profile)
        setup = now_ns(m->profile == 2) - t0;
    mera_status st = MERA_OK;
    for (int s = 0; s < prog->n_segments && !st; s++)
        st = dna_run_segment(r, s, NULL, err);
    t0 = m->profile ? now_ns(m->profile == 2) : 0;
    for (int k = 0; k < mera_graph_num_outputs(g) && !st; k++) {
        int v = mera_graph_output(g, k);
        memcpy(outputs[k], value_read(r, v), mera_type_nbytes(&mera_graph_value(g, v)->type));
    }
    double ns[PROF_N];
    int64_t count[PROF_N];
    memcpy(ns, r->prof_ns, sizeof ns);
    memcpy(count, r->prof_count, sizeof count);
    r->prof_by_caller = 1;
    give_back_run(m, r);
    if (m->profile) {
        ns[PROF_SETUP] = setup + now_ns(m->profile == 2) - t0;
        count[PROF_SETUP] = 1;
        prof_print(ns, count);
    }
    return st;
}
