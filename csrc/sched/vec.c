/* Vector layers (elementwise, activations, pooling, mean, concat, upsample)
 * on the DNA (the copy layers are move.c's).
 *
 * A vector layer is cut along the one output dimension its split rule
 * allows (kernels/split.h: rows or channels, in granules), into tiles
 * that fit two activation slots: per tile, every source's box is loaded,
 * one VEC instruction runs the layer's kernel on the tiles, the
 * destination box is stored. A source broadcast along the cut dimension
 * is loaded whole with every tile. */
#include <stdio.h>
#include <string.h>

#include "sched/plan.h"

typedef struct {
    int rank;
    int64_t dim[4]; /* padded to rank 4 with leading 1s */
    int cut;        /* padded index of the dimension cut with the output, or -1 (whole) */
} operand;

static operand operand_of(const mera_type *t, int out_rank, int out_cut, const mera_type *out)
{
    operand o;
    o.rank = t->rank;
    for (int d = 0; d < 4; d++)
        o.dim[d] = d < 4 - t->rank ? 1 : t->shape[d - (4 - t->rank)];
    o.cut = -1;
    if (out_cut >= 0) {
        int sd = out_cut - (out_rank - t->rank); /* numpy-style right alignment */
        if (sd >= 0 && t->shape[sd] == out->shape[out_cut] && out->shape[out_cut] > 1)
            o.cut = sd + (4 - t->rank);
        else if (sd >= 0 && t->shape[sd] != 1 && t->shape[sd] != out->shape[out_cut])
            o.cut = -2; /* cannot follow the cut */
    }
    return o;
}

static int64_t tile_bytes(const operand *o, int64_t u0, int64_t u)
{
    (void)u0;
    int64_t b = 1;
    for (int d = 0; d < 4; d++)
        b *= d == o->cut ? u : o->dim[d];
    return sched_align(b);
}

typedef struct {
    int n;
    operand src[DNA_MAX_SRC];
    operand dst;
    int64_t total; /* extent of the cut dimension, or 1 */
} vec_geom;

static int vec_geometry(const sched_ctx *c, const sched_plan *pl, vec_geom *vg)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    const mera_type *out = &mera_graph_value(c->g, node->outputs[0])->type;
    vg->n = node->n_inputs;
    vg->dst = operand_of(out, out->rank, pl->cut_dim, out);
    for (int i = 0; i < node->n_inputs; i++) {
        vg->src[i] = operand_of(&mera_graph_value(c->g, node->inputs[i])->type, out->rank, pl->cut_dim, out);
        if (vg->src[i].cut == -2)
            return 0;
    }
    vg->total = pl->cut_dim >= 0 ? out->shape[pl->cut_dim] : 1;
    if (vg->dst.cut < 0) /* extent 1: nothing to cut */
        vg->total = 1;
    return 1;
}

static int64_t footprint(const vec_geom *vg, int64_t u)
{
    int64_t f = tile_bytes(&vg->dst, 0, u);
    for (int i = 0; i < vg->n; i++)
        f += tile_bytes(&vg->src[i], 0, u);
    return f;
}

int sched_vec_plan(const sched_ctx *c, sched_plan *pl, char *reason, size_t reason_len)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    const mera_type *in_types[DNA_MAX_SRC];
    for (int i = 0; i < node->n_inputs; i++)
        in_types[i] = &mera_graph_value(c->g, node->inputs[i])->type;
    const mera_type *out = &mera_graph_value(c->g, node->outputs[0])->type;
    pl->rule = mera_kernel_split_rule(node, in_types, node->n_inputs, out);
    pl->cut_dim = pl->rule.axis == MERA_SPLIT_ROWS       ? (out->rank >= 2 ? 1 : -1)
                  : pl->rule.axis == MERA_SPLIT_CHANNELS ? out->rank - 1
                                                         : -1;
    vec_geom vg;
    if (pl->cut_dim >= 0 && !vec_geometry(c, pl, &vg))
        pl->cut_dim = -1;
    if (pl->cut_dim < 0 || !vec_geometry(c, pl, &vg)) {
        pl->cut_dim = -1;
        vec_geometry(c, pl, &vg);
    }
    int64_t gran = pl->rule.granule > 0 ? pl->rule.granule : 1;
    int64_t limit = vg.total;
    if (pl->rule.axis == MERA_SPLIT_ROWS && c->opt->max_tile_height > 0 && c->opt->max_tile_height < limit)
        limit = c->opt->max_tile_height > gran ? c->opt->max_tile_height / gran * gran : gran;
    int64_t u = 0;
    if (vg.total > 1) {
        int64_t want = (vg.total + SCHED_MIN_TILES - 1) / SCHED_MIN_TILES; /* overlap, as conv.c does */
        want = (want + gran - 1) / gran * gran;
        if (want < limit)
            limit = want;
        for (int64_t k = limit / gran; k >= 1; k--)
            if (2 * footprint(&vg, k * gran) <= c->act_bytes) {
                u = k * gran;
                break;
            }
    }
    if (u == 0) { /* one tile, one slot */
        pl->cut_dim = -1;
        vec_geometry(c, pl, &vg);
        int64_t f = footprint(&vg, 1);
        if (f > c->act_bytes) {
            snprintf(reason, reason_len,
                     "does not fit: the %s layer needs %lld B of activation buffer and %s; the buffer has %lld B",
                     mera_op_table[node->op].name, (long long)f,
                     pl->rule.axis == MERA_SPLIT_NONE ? "its kernel cannot be cut into tiles"
                                                      : "its smallest legal tile does not fit either",
                     (long long)c->act_bytes);
            return 0;
        }
        u = 1;
        vg.total = 1;
    }
    pl->units = u;
    pl->tiles = (vg.total + u - 1) / u;
    pl->macs = 0;
    sched_vec_describe(pl, reason, reason_len);
    return 1;
}

void sched_vec_describe(const sched_plan *pl, char *buf, size_t n)
{
    if (pl->cut_dim < 0)
        snprintf(buf, n, "1 tile (whole tensors)");
    else
        snprintf(buf, n, "%lld tiles of %lld %s", (long long)pl->tiles, (long long)pl->units,
                 pl->rule.axis == MERA_SPLIT_ROWS ? "rows" : "channels");
}

int sched_vec_fits(const sched_ctx *c, const sched_plan *pl, int64_t units)
{
    vec_geom vg;
    if (pl->cut_dim < 0 || !vec_geometry(c, pl, &vg))
        return 0;
    return 2 * footprint(&vg, units) <= c->act_bytes;
}

void sched_vec_set_units(const sched_ctx *c, sched_plan *pl, int64_t units)
{
    vec_geom vg;
    MERA_ASSERT(pl->cut_dim >= 0 && vec_geometry(c, pl, &vg));
    pl->units = units;
    pl->tiles = (vg.total + units - 1) / units;
}

int64_t sched_vec_total(const sched_ctx *c, const sched_plan *pl)
{
    vec_geom vg;
    if (pl->cut_dim < 0 || !vec_geometry(c, pl, &vg))
        return 1;
    return vg.total;
}

int64_t sched_vec_layout_image(const sched_ctx *c, sched_plan *pl, int64_t at)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    for (int i = 0; i < node->n_inputs; i++) {
        const mera_value *v = mera_graph_value(c->g, node->inputs[i]);
        if (v->kind == MERA_VALUE_PARAM || v->kind == MERA_VALUE_CONST) {
            pl->const_off[i] = at;
            at += sched_align((int64_t)mera_type_nbytes(&v->type));
        }
    }
    return at;
}

void sched_vec_fill_image(const sched_ctx *c, const sched_plan *pl, uint8_t *image)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    for (int i = 0; i < node->n_inputs; i++)
        if (pl->const_off[i] >= 0) {
            const mera_value *v = mera_graph_value(c->g, node->inputs[i]);
            memcpy(image + pl->const_off[i], sched_value_data(c, node->inputs[i]), mera_type_nbytes(&v->type));
        }
}

/* The DMA of box [o, o + e) of a C-contiguous rank-4 tensor at dram. */
static void box_dma(dna_dma *d, const operand *o, const int64_t *org, const int64_t *ext, int64_t dram, int64_t sram)
{
    int64_t s1 = o->dim[2] * o->dim[3], s2 = o->dim[3];
    int64_t rows = ext[1], cols = ext[2], run = ext[3];
    if (ext[3] == o->dim[3]) {
        run *= cols;
        cols = 1;
        if (ext[2] == o->dim[2]) {
            run *= rows;
            rows = 1;
        }
    }
    d->rows = (int32_t)rows, d->cols = (int32_t)cols, d->run_bytes = (int32_t)run;
    d->dram = dram + org[0] * o->dim[1] * s1 + org[1] * s1 + org[2] * s2 + org[3];
    d->dram_row_stride = s1, d->dram_col_stride = s2;
    d->sram = (uint32_t)sram;
    d->sram_row_stride = (uint32_t)(cols * run), d->sram_col_stride = (uint32_t)run;
    if (cols == 1)
        d->sram_row_stride = (uint32_t)run;
}

static void tile_of(const operand *o, int64_t u0, int64_t u, int64_t org[4], int64_t ext[4])
{
    for (int d = 0; d < 4; d++) {
        org[d] = d == o->cut ? u0 : 0;
        ext[d] = d == o->cut ? u : o->dim[d];
    }
}

static void set_tile(dna_tile *t, const operand *o, const int64_t ext[4], int64_t addr)
{
    t->addr = (uint32_t)addr;
    for (int d = 0; d < 4; d++)
        t->ext[d] = d < o->rank ? (int32_t)ext[d + (4 - o->rank)] : 1;
}

void sched_vec_emit(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    vec_geom vg;
    MERA_ASSERT(vec_geometry(c, pl, &vg));
    if (pl->cut_dim < 0)
        vg.total = 1;
    int64_t slot_bytes = footprint(&vg, pl->units);
    for (int64_t t = 0; t < pl->tiles; t++) {
        int64_t u0 = t * pl->units, u = vg.total - u0 < pl->units ? vg.total - u0 : pl->units;
        int64_t base = (t & 1) * slot_bytes, at = base;
        int64_t addr[DNA_MAX_SRC + 1], org[4], ext[4];
        for (int i = 0; i < vg.n; i++) {
            const operand *o = &vg.src[i];
            tile_of(o, u0, u, org, ext);
            sched_item *it = sched_push(seq, DNA_LOAD, layer);
            if (!it)
                return;
            int64_t dram = pl->const_off[i] >= 0 ? pl->const_off[i] : c->value_dram[node->inputs[i]];
            it->insn.u.dma.mem = DNA_MEM_ACT;
            box_dma(&it->insn.u.dma, o, org, ext, dram, at);
            sched_dma_ranges(it);
            addr[i] = at;
            at += tile_bytes(o, u0, u);
        }
        addr[vg.n] = at;
        sched_item *it = sched_push(seq, DNA_VEC, layer);
        if (!it)
            return;
        dna_vec *v = &it->insn.u.vec;
        v->n_src = vg.n;
        v->rounding = (int32_t)mera_graph_rounding(c->g);
        for (int i = 0; i < vg.n; i++) {
            tile_of(&vg.src[i], u0, u, org, ext);
            set_tile(&v->src[i], &vg.src[i], ext, addr[i]);
            sched_range_add(it, SPACE_ACT, 0, addr[i], addr[i] + tile_bytes(&vg.src[i], u0, u));
        }
        tile_of(&vg.dst, u0, u, org, ext);
        set_tile(&v->dst, &vg.dst, ext, addr[vg.n]);
        for (int d = 0; d < 4; d++)
            v->origin[d] = d < vg.dst.rank ? (int32_t)org[d + (4 - vg.dst.rank)] : 0;
        int64_t dst_bytes = tile_bytes(&vg.dst, u0, u);
        sched_range_add(it, SPACE_ACT, 1, addr[vg.n], addr[vg.n] + dst_bytes);

        it = sched_push(seq, DNA_STORE, layer);
        if (!it)
            return;
        it->insn.u.dma.mem = DNA_MEM_ACT;
        box_dma(&it->insn.u.dma, &vg.dst, org, ext, c->value_dram[node->outputs[0]], addr[vg.n]);
        sched_dma_ranges(it);
    }
}
