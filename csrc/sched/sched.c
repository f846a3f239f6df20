/* The scheduler: partition, tile, lay out, allocate, emit (sched.h).
 *
 * The pipeline reads top to bottom in mera_schedule():
 *   1. partition   each node: DNA or host, and why (partition.c rules here)
 *   2. plan        each DNA layer: tile shape and order (Fast heuristic, or
 *                  Slow search with the timing model)
 *   3. image       the constant image: each conv/dense layer's weight
 *                  blocks in the DNA weight format, constants of vector ops
 *   4. allocate    DRAM for every graph input and node output, by liveness
 *   5. emit        per DNA segment, tiles in sequential order, then
 *                  dependency tokens (deps.c)
 */
#include "sched/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/split.h"
#include "sched/emit.h"
#include "sched/plan.h"
#include "util/firstfit.h"

#define ALIGN 64

static int64_t align_up(int64_t v)
{
    return (v + ALIGN - 1) / ALIGN * ALIGN;
}

void mera_partition_report_free(mera_partition_report *r)
{
    if (!r)
        return;
    free(r->entries);
    free(r);
}

/* ---- graph helpers ------------------------------------------------------ */

const void *sched_value_data(const sched_ctx *c, int v)
{
    return c->value_data[v];
}

static mera_status bind_data(sched_ctx *c, const void *const *param_data, mera_error *err)
{
    const mera_graph *g = c->g;
    for (int v = 0; v < mera_graph_num_values(g); v++) {
        const mera_value *val = mera_graph_value(g, v);
        c->value_data[v] = val->kind == MERA_VALUE_CONST ? val->data : NULL;
    }
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i);
        const mera_value *val = mera_graph_value(g, v);
        if (val->kind != MERA_VALUE_PARAM)
            continue;
        const void *d = param_data ? param_data[i] : NULL;
        if (!d)
            d = val->data;
        if (!d)
            return mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data: pass it in params", val->name);
        c->value_data[v] = d;
    }
    return MERA_OK;
}

/* ---- DRAM allocation by liveness --------------------------------------- */

/* Every graph input and node output gets DRAM above base. Outputs of a node
 * are placed before its inputs are released, so a layer never writes over
 * what it reads. */
static mera_status allocate_dram(sched_ctx *c, int64_t base, int64_t *end, mera_error *err)
{
    const mera_graph *g = c->g;
    int nv = mera_graph_num_values(g), nn = mera_graph_num_nodes(g);
    int *last = malloc((size_t)nv * sizeof *last);
    mera_firstfit ff;
    if (mera_firstfit_init(&ff, nv + 1) || !last) {
        free(last);
        mera_firstfit_free(&ff);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory allocating DRAM");
    }
    mera_graph_last_uses(g, last);
    for (int v = 0; v < nv; v++)
        c->value_dram[v] = -1;
    for (int i = 0; i < mera_graph_num_inputs(g); i++) {
        int v = mera_graph_input(g, i);
        if (mera_graph_value(g, v)->kind == MERA_VALUE_INPUT)
            c->value_dram[v] =
                mera_firstfit_place(&ff, align_up((int64_t)mera_type_nbytes(&mera_graph_value(g, v)->type)));
    }
    for (int n = 0; n < nn; n++) {
        const mera_node *node = mera_graph_node(g, n);
        for (int o = 0; o < node->n_outputs; o++) {
            int v = node->outputs[o];
            c->value_dram[v] =
                mera_firstfit_place(&ff, align_up((int64_t)mera_type_nbytes(&mera_graph_value(g, v)->type)));
            if (last[v] < 0) /* unused output */
                last[v] = n;
        }
        for (int i = 0; i < node->n_inputs; i++) {
            int v = node->inputs[i];
            if (v < 0 || last[v] != n || c->value_dram[v] < 0)
                continue;
            int dup = 0; /* the same value twice among the inputs */
            for (int j = 0; j < i; j++)
                dup |= node->inputs[j] == v;
            if (!dup)
                mera_firstfit_release(&ff, c->value_dram[v]);
        }
        for (int o = 0; o < node->n_outputs; o++) {
            int v = node->outputs[o];
            if (last[v] == n)
                mera_firstfit_release(&ff, c->value_dram[v]);
        }
    }
    for (int v = 0; v < nv; v++)
        if (c->value_dram[v] >= 0)
            c->value_dram[v] += base;
    *end = base + ff.peak;
    free(last);
    mera_firstfit_free(&ff);
    return MERA_OK;
}

/* ---- segments ------------------------------------------------------------ */

static mera_status build_segments(sched_ctx *c, dna_program *p, mera_error *err)
{
    const mera_graph *g = c->g;
    int nn = mera_graph_num_nodes(g), nv = mera_graph_num_values(g);
    p->segments = calloc((size_t)nn + 1, sizeof *p->segments);
    unsigned char *seen = calloc((size_t)nv, 1);
    int *consumer_last = malloc((size_t)nv * sizeof *consumer_last);
    if (!p->segments || !seen || !consumer_last) {
        free(seen);
        free(consumer_last);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory building segments");
    }
    for (int v = 0; v < nv; v++)
        consumer_last[v] = -1;
    for (int n = 0; n < nn; n++) {
        const mera_node *node = mera_graph_node(g, n);
        for (int i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= 0)
                consumer_last[node->inputs[i]] = n;
    }
    for (int i = 0; i < mera_graph_num_outputs(g); i++)
        consumer_last[mera_graph_output(g, i)] = nn;
    int ns = 0;
    for (int n = 0; n < nn;) {
        dna_segment *s = &p->segments[ns++];
        if (!c->layer_of[n]) {
            s->kind = DNA_SEG_HOST;
            s->node = n;
            n++;
            continue;
        }
        s->kind = DNA_SEG_DNA;
        s->node = -1;
        int a = n;
        while (n < nn && c->layer_of[n])
            n++;
        int b = n; /* [a, b) */
        memset(seen, 0, (size_t)nv);
        for (int k = a; k < b; k++) {
            const mera_node *node = mera_graph_node(g, k);
            for (int i = 0; i < node->n_inputs; i++) {
                int v = node->inputs[i];
                if (v < 0 || seen[v] || c->value_dram[v] < 0)
                    continue;
                const mera_value *val = mera_graph_value(g, v);
                if (val->kind == MERA_VALUE_INPUT || (val->kind == MERA_VALUE_NODE && val->producer < a)) {
                    seen[v] = 1;
                    s->host_in_bytes += (int64_t)mera_type_nbytes(&val->type);
                }
            }
            for (int o = 0; o < node->n_outputs; o++) {
                int v = node->outputs[o];
                if (consumer_last[v] >= b)
                    s->host_out_bytes += (int64_t)mera_type_nbytes(&mera_graph_value(g, v)->type);
            }
        }
        s->first = a; /* node range for now; emit() turns it into instructions */
        s->count = b - a;
    }
    p->n_segments = ns;
    free(seen);
    free(consumer_last);
    return MERA_OK;
}

/* ---- the pipeline --------------------------------------------------------- */

static void ctx_free(sched_ctx *c)
{
    if (c->plans)
        for (int i = 0; i < c->n_plans; i++)
            free(c->plans[i].block_off);
    free(c->plans);
    free(c->layer_of);
    free(c->value_data);
    free(c->value_dram);
}

dna_program *mera_schedule(const mera_graph *g, const void *const *param_data, const mera_platform *pf,
                           const mera_sched_options *opt, mera_partition_report **report, mera_error *err)
{
    mera_sched_options defaults = {.mode = MERA_SCHED_FAST, .workers = 1};
    sched_ctx c = {0};
    c.g = g;
    c.pf = pf;
    c.opt = opt ? opt : &defaults;
    int nn = mera_graph_num_nodes(g), nv = mera_graph_num_values(g);
    c.act_bytes = pf->act_buffer_kib * 1024;
    c.wgt_bytes = pf->weight_buffer_kib * 1024;
    c.acc_bytes = pf->acc_buffer_kib * 1024;
    dna_program *p = calloc(1, sizeof *p);
    mera_partition_report *rep = calloc(1, sizeof *rep);
    c.value_data = calloc((size_t)nv + 1, sizeof *c.value_data);
    c.value_dram = calloc((size_t)nv + 1, sizeof *c.value_dram);
    c.layer_of = calloc((size_t)nn + 1, sizeof *c.layer_of);
    c.plans = calloc((size_t)nn + 1, sizeof *c.plans);
    if (rep)
        rep->entries = calloc((size_t)nn + 1, sizeof *rep->entries);
    if (!p || !rep || !rep->entries || !c.value_data || !c.value_dram || !c.layer_of || !c.plans) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory scheduling graph '%s'", mera_graph_name(g));
        goto fail;
    }
    rep->n = nn;
    if (c.act_bytes <= 0 || c.wgt_bytes <= 0 || c.acc_bytes <= 0 || c.act_bytes > 0x40000000 ||
        c.wgt_bytes > 0x40000000 || c.acc_bytes > 0x40000000) {
        mera_fail(err, MERA_ERR_INVALID, "platform %s: on-chip buffers must be between 1 KiB and 1 GiB", pf->name);
        goto fail;
    }
    if (bind_data(&c, param_data, err) != MERA_OK)
        goto fail;

    /* 1 + 2: partition and plan */
    for (int n = 0; n < nn; n++) {
        mera_partition_entry *e = &rep->entries[n];
        e->node = n;
        sched_plan *pl = &c.plans[c.n_plans];
        memset(pl, 0, sizeof *pl);
        pl->node = n;
        if (sched_plan_layer(&c, n, pl, e->reason, sizeof e->reason, err) != MERA_OK)
            goto fail;
        if (pl->on_host) {
            e->on_dna = 0;
            continue;
        }
        e->on_dna = 1;
        e->tiles = (int)pl->tiles;
        c.layer_of[n] = ++c.n_plans;
    }

    if (c.opt->mode == MERA_SCHED_SLOW) {
        sched_search(&c);
        for (int i = 0; i < c.n_plans; i++)
            if (c.plans[i].kind == LAYER_CONV || c.plans[i].kind == LAYER_VEC) {
                mera_partition_entry *e = &rep->entries[c.plans[i].node];
                e->tiles = (int)c.plans[i].tiles;
                if (c.plans[i].kind == LAYER_CONV)
                    sched_conv_describe(&c.plans[i], e->reason, sizeof e->reason);
                else
                    sched_vec_describe(&c.plans[i], e->reason, sizeof e->reason);
            }
    }

    /* 3: the constant image */
    int64_t image = 0;
    for (int i = 0; i < c.n_plans; i++)
        image = sched_layout_image(&c, &c.plans[i], image);
    p->params_bytes = image;
    p->params_image = calloc((size_t)(image ? image : 1), 1);
    if (!p->params_image) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory for a %lld-byte constant image", (long long)image);
        goto fail;
    }
    for (int i = 0; i < c.n_plans; i++)
        sched_fill_image(&c, &c.plans[i], p->params_image);

    /* 4: DRAM for activations */
    int64_t dram_end = 0;
    if (allocate_dram(&c, align_up(image), &dram_end, err) != MERA_OK)
        goto fail;
    p->dram_bytes = dram_end > 0 ? dram_end : ALIGN;

    /* 5: segments and instructions */
    if (build_segments(&c, p, err) != MERA_OK)
        goto fail;
    sched_list all = {0};
    for (int s = 0; s < p->n_segments; s++) {
        dna_segment *seg = &p->segments[s];
        if (seg->kind != DNA_SEG_DNA)
            continue;
        sched_list seq = {0};
        for (int n = seg->first; n < seg->first + seg->count; n++)
            sched_emit_layer(&c, &c.plans[c.layer_of[n] - 1], c.layer_of[n] - 1, &seq);
        if (seq.failed) {
            sched_list_free(&seq);
            sched_list_free(&all);
            mera_fail(err, MERA_ERR_NOMEM, "out of memory emitting DNA instructions");
            goto fail;
        }
        int first = all.n;
        mera_status st = sched_solve_deps(&seq, &all, err);
        sched_list_free(&seq);
        if (st != MERA_OK || all.failed) {
            sched_list_free(&all);
            if (st == MERA_OK)
                mera_fail(err, MERA_ERR_NOMEM, "out of memory emitting DNA instructions");
            goto fail;
        }
        seg->first = first;
        seg->count = all.n - first;
    }
    p->n_insns = all.n;
    p->insns = malloc((size_t)(all.n ? all.n : 1) * sizeof *p->insns);
    if (!p->insns) {
        sched_list_free(&all);
        mera_fail(err, MERA_ERR_NOMEM, "out of memory emitting DNA instructions");
        goto fail;
    }
    for (int i = 0; i < all.n; i++)
        p->insns[i] = all.v[i].insn;
    sched_list_free(&all);

    p->version = DNA_ISA_VERSION;
    snprintf(p->platform, sizeof p->platform, "%s", pf->name);
    p->n_layers = c.n_plans;
    p->layers = calloc((size_t)(c.n_plans ? c.n_plans : 1), sizeof *p->layers);
    p->n_values = nv;
    p->value_dram = malloc((size_t)(nv ? nv : 1) * sizeof *p->value_dram);
    if (!p->layers || !p->value_dram) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory building the DNA program");
        goto fail;
    }
    for (int i = 0; i < c.n_plans; i++) {
        p->layers[i].node = c.plans[i].node;
        p->layers[i].macs = c.plans[i].macs;
    }
    memcpy(p->value_dram, c.value_dram, (size_t)nv * sizeof *p->value_dram);
    p->act_bytes = (uint32_t)c.act_bytes;
    p->wgt_bytes = (uint32_t)c.wgt_bytes;
    p->acc_bytes = (uint32_t)c.acc_bytes;
    ctx_free(&c);
    if (report)
        *report = rep;
    else
        mera_partition_report_free(rep);
    return p;
fail:
    ctx_free(&c);
    mera_partition_report_free(rep);
    dna_program_free(p);
    return NULL;
}
