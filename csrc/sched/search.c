/* Slow mode: search tile shapes of every conv2d/dense layer with the
 * timing model (sim/timing.h), on worker threads.
 *
 * Candidates per conv layer: the four largest output-channel blocks that
 * fit, for each the largest band of rows that fits divided by 1, 2, 3, 4,
 * 6, 8, 12 and 16 (whole rows), in both tile orders. Per vector layer: the
 * largest tile that fits divided by 1, 2, 4, 8 and 16. Each candidate is emitted as a
 * one-layer program, given its tokens (deps.c) and timed; the fastest
 * wins, ties going to the earlier (Fast-like) candidate, so Slow is never
 * slower than Fast by the model. Tiles never change the arithmetic, so
 * both modes give identical outputs. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sched/plan.h"
#include "sim/timing.h"

/* Cycles of one layer alone under plan pl; -1 if it could not be timed. */
static int64_t time_layer(const sched_ctx *c0, sched_plan *pl)
{
    const mera_graph *g = c0->g;
    int nv = mera_graph_num_values(g);
    const mera_node *node = mera_graph_node(g, pl->node);
    sched_ctx c = *c0;
    int64_t *vd = calloc((size_t)nv, sizeof *vd);
    int64_t *blocks = malloc((size_t)pl->n_blocks * sizeof *blocks);
    int64_t result = -1;
    sched_list seq = {0}, out = {0};
    if (!vd || !blocks)
        goto done;
    /* addresses only need to keep the input, output and weights apart */
    for (int v = 0; v < nv; v++)
        vd[v] = -1;
    int64_t at = 0;
    for (int64_t b = 0; b < pl->n_blocks; b++, at += pl->wblock)
        blocks[b] = at;
    for (int i = 0; i < node->n_inputs; i++)
        if (node->inputs[i] >= 0) {
            vd[node->inputs[i]] = at;
            at += sched_align((int64_t)mera_type_nbytes(&mera_graph_value(g, node->inputs[i])->type));
        }
    vd[node->outputs[0]] = at;
    at += sched_align((int64_t)mera_type_nbytes(&mera_graph_value(g, node->outputs[0])->type));
    c.value_dram = vd;
    sched_plan p = *pl;
    p.block_off = blocks;
    sched_emit_layer(&c, &p, 0, &seq);
    mera_error err;
    if (seq.failed || sched_solve_deps(&seq, &out, &err) != MERA_OK || out.failed)
        goto done;
    dna_insn *insns = malloc((size_t)(out.n ? out.n : 1) * sizeof *insns);
    if (!insns)
        goto done;
    for (int i = 0; i < out.n; i++)
        insns[i] = out.v[i].insn;
    dna_layer layer = {.node = pl->node, .macs = pl->macs};
    dna_segment seg = {.kind = DNA_SEG_DNA, .node = -1, .first = 0, .count = out.n};
    dna_program prog = {0};
    prog.version = DNA_ISA_VERSION;
    prog.n_layers = 1, prog.layers = &layer;
    prog.n_insns = out.n, prog.insns = insns;
    prog.n_segments = 1, prog.segments = &seg;
    prog.n_values = nv, prog.value_dram = vd;
    prog.params_bytes = pl->n_blocks * pl->wblock;
    prog.dram_bytes = at + 64;
    prog.act_bytes = (uint32_t)c.act_bytes, prog.wgt_bytes = (uint32_t)c.wgt_bytes, prog.acc_bytes = (uint32_t)c.acc_bytes;
    dna_timing t;
    memset(&t, 0, sizeof t);
    if (dna_timing_model(g, &prog, c.pf, &t, NULL, &err) == MERA_OK)
        result = t.device_cycles;
    dna_timing_release(&t);
    free(insns);
done:
    sched_list_free(&seq);
    sched_list_free(&out);
    free(vd);
    free(blocks);
    return result;
}

/* Rows that fit block ob with whole output rows; 0 if none. */
static int64_t max_rows(const sched_ctx *c, const sched_plan *pl, int64_t ob)
{
    int64_t best = 0;
    const sched_conv_geom *g = &pl->cg;
    int64_t limit = c->opt->max_tile_height > 0 && c->opt->max_tile_height < g->oh ? c->opt->max_tile_height : g->oh;
    if (c->opt->max_tile_width > 0 && c->opt->max_tile_width < g->ow)
        return 0; /* column tiles: keep the Fast shape */
    for (int64_t lo = 1, hi = limit; lo <= hi;) {
        int64_t mid = (lo + hi) / 2;
        if (sched_conv_fits(c, g, mid, g->ow, ob)) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return best;
}

static void search_layer(const sched_ctx *c, sched_plan *pl)
{
    int64_t best = time_layer(c, pl);
    if (best < 0)
        return;
    sched_plan keep = *pl;
    int64_t blocks[8];
    int nbk = sched_conv_blocks(c, &pl->cg, blocks, 8), tried = 0;
    for (int b = 0; b < nbk && tried < 4; b++) {
        int64_t rows = max_rows(c, pl, blocks[b]);
        if (rows < 1)
            continue;
        tried++;
        static const int64_t divs[] = {1, 2, 3, 4, 6, 8, 12, 16};
        for (size_t di = 0; di < sizeof divs / sizeof divs[0]; di++) {
            int64_t div = divs[di];
            if (div > rows)
                break;
            int64_t r = (rows + div - 1) / div;
            int64_t nb = (pl->cg.oh + r - 1) / r;
            r = (pl->cg.oh + nb - 1) / nb;
            for (int order = 0; order < 2; order++) {
                sched_plan p = *pl;
                sched_conv_set_shape(c, &p, r, pl->cg.ow, blocks[b], order);
                int64_t t = time_layer(c, &p);
                if (t >= 0 && t < best) {
                    best = t;
                    keep = p;
                }
            }
        }
    }
    *pl = keep;
}

/* Vector layers: tiles of the largest fitting size and its fractions. */
static void search_vec(const sched_ctx *c, sched_plan *pl)
{
    if (pl->cut_dim < 0)
        return;
    int64_t best = time_layer(c, pl);
    if (best < 0)
        return;
    sched_plan keep = *pl;
    int64_t total = sched_vec_total(c, pl), gran = pl->rule.granule > 0 ? pl->rule.granule : 1;
    int64_t max = 0;
    for (int64_t k = total / gran; k >= 1; k--)
        if (sched_vec_fits(c, pl, k * gran)) {
            max = k * gran;
            break;
        }
    if (c->opt->max_tile_height > 0 && pl->rule.axis == MERA_SPLIT_ROWS && max > c->opt->max_tile_height)
        max = c->opt->max_tile_height / gran * gran;
    for (int64_t div = 1; div <= 16 && max > 0; div *= 2) {
        int64_t u = (max / div + gran - 1) / gran * gran;
        if (u < gran || (div > 1 && u == max))
            continue;
        sched_plan p = *pl;
        sched_vec_set_units(c, &p, u);
        int64_t t = time_layer(c, &p);
        if (t >= 0 && t < best) {
            best = t;
            keep = p;
        }
    }
    *pl = keep;
}

typedef struct {
    const sched_ctx *c;
    pthread_mutex_t lock;
    int next;
    int searched, searchable; /* layers done and in all, for opt->progress */
} work;

static void *worker(void *arg)
{
    work *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        int i = w->next++;
        pthread_mutex_unlock(&w->lock);
        if (i >= w->c->n_plans)
            return NULL;
        sched_plan *pl = &w->c->plans[i];
        if (pl->kind == LAYER_CONV)
            search_layer(w->c, pl);
        else if (pl->kind == LAYER_VEC)
            search_vec(w->c, pl);
        else
            continue;
        if (w->c->opt->progress) {
            pthread_mutex_lock(&w->lock);
            w->c->opt->progress(w->c->opt->progress_user, ++w->searched, w->searchable);
            pthread_mutex_unlock(&w->lock);
        }
    }
}

void sched_search(sched_ctx *c)
{
    work w = {.c = c, .next = 0};
    for (int i = 0; i < c->n_plans; i++)
        w.searchable += c->plans[i].kind == LAYER_CONV || c->plans[i].kind == LAYER_VEC;
    pthread_mutex_init(&w.lock, NULL);
    int n = c->opt->workers > 1 ? c->opt->workers : 1;
    if (n > 64)
        n = 64;
    pthread_t th[64];
    int started = 0;
    for (int i = 1; i < n; i++)
        if (pthread_create(&th[started], NULL, worker, &w) == 0)
            started++;
    worker(&w); /* this thread works too; if no thread could start, it does it all */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&w.lock);
}
