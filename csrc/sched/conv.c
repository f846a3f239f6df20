/* conv2d and dense on the MAC array: tiling, weight blocks, emission.
 *
 * A tile is (output rows rb) x (output columns cb) x (output channels ob)
 * of one layer, with the whole reduction (kh * kw * input channels of its
 * groups) in one CONV instruction, so no partial sums leave the array.
 * Per tile: the weight block (when it changes), the input window (when it
 * changes; the LOAD materialises the padding with the input zero point),
 * the CONV, the STORE of the output tile. Inputs, weights and outputs each
 * have two slots (ping-pong), so the loads of tile i+1 and the store of
 * tile i-1 overlap the CONV of tile i; deps.c derives the tokens.
 *
 * Fast mode: the largest output-channel block a weight slot holds, then
 * the most rows (and columns) that fit the activation slots and the
 * accumulators, bands equalised. Order: whichever of "blocks outer"
 * (input re-read per block) and "bands outer" (weights re-read per band)
 * moves fewer bytes. Slow mode: search.c tries other shapes with the
 * timing model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/plan.h"

int sched_conv_geometry(const sched_ctx *c, const mera_node *node, sched_conv_geom *g)
{
    const mera_graph *gr = c->g;
    const mera_type *x = &mera_graph_value(gr, node->inputs[0])->type;
    const mera_type *w = &mera_graph_value(gr, node->inputs[1])->type;
    const mera_type *y = &mera_graph_value(gr, node->outputs[0])->type;
    memset(g, 0, sizeof *g);
    g->has_bias = node->n_inputs > 2 && node->inputs[2] >= 0;
    if (node->op == MERA_OP_DENSE) {
        if (x->rank != 2)
            return 0;
        g->dense = 1;
        g->h = 1, g->w = x->shape[0], g->c = x->shape[1];
        g->oh = 1, g->ow = y->shape[0], g->oc = y->shape[1];
        g->kh = g->kw = g->sh = g->sw = g->dh = g->dw = 1;
        g->groups = 1, g->cg = g->c, g->og = g->oc;
    } else {
        if (x->rank != 4)
            return 0;
        const int64_t *st = mera_node_attr(node, "strides")->ints, *pad = mera_node_attr(node, "padding")->ints,
                      *dil = mera_node_attr(node, "dilation")->ints;
        const char *kl = mera_attr_string(node, "kernel_layout");
        g->h = x->shape[1], g->w = x->shape[2], g->c = x->shape[3];
        g->oh = y->shape[1], g->ow = y->shape[2], g->oc = y->shape[3];
        if (!strcmp(kl, "OHWI"))
            g->kh = w->shape[1], g->kw = w->shape[2];
        else if (!strcmp(kl, "HWIO"))
            g->kh = w->shape[0], g->kw = w->shape[1];
        else
            g->kh = w->shape[2], g->kw = w->shape[3];
        g->sh = st[0], g->sw = st[1], g->dh = dil[0], g->dw = dil[1], g->pt = pad[0], g->pl = pad[1];
        g->groups = mera_attr_int(node, "groups");
        g->cg = g->c / g->groups;
        g->og = g->oc / g->groups;
        g->depthwise = g->cg == 1 && g->groups > 1;
        g->saturate = mera_conv_depthwise_saturates(node, x, w);
    }
    g->k = g->kh * g->kw * g->cg;
    return 1;
}

/* Input channels a block of ob output channels reads. */
static int64_t in_c_of(const sched_conv_geom *g, int64_t ob)
{
    return g->groups == 1 ? g->c : ob / g->og * g->cg;
}

static int64_t in_rows(const sched_conv_geom *g, int64_t rb)
{
    return (rb - 1) * g->sh + (g->kh - 1) * g->dh + 1;
}

static int64_t in_cols(const sched_conv_geom *g, int64_t cb)
{
    return (cb - 1) * g->sw + (g->kw - 1) * g->dw + 1;
}

static int64_t wblock_bytes(const sched_conv_geom *g, int64_t ob)
{
    return sched_align(ob * g->k + (g->has_bias ? 4 * ob : 0));
}

typedef struct {
    int64_t in, out, acc, w;
} footprint;

static footprint tile_footprint(const sched_conv_geom *g, int64_t rb, int64_t cb, int64_t ob)
{
    footprint f;
    f.in = sched_align(in_rows(g, rb) * in_cols(g, cb) * in_c_of(g, ob));
    f.out = sched_align(rb * cb * ob);
    f.acc = rb * cb * ob * 4;
    f.w = wblock_bytes(g, ob);
    return f;
}

int sched_conv_fits(const sched_ctx *c, const sched_conv_geom *g, int64_t rb, int64_t cb, int64_t ob)
{
    footprint f = tile_footprint(g, rb, cb, ob);
    return 2 * (f.in + f.out) <= c->act_bytes && f.acc <= c->acc_bytes && 2 * f.w <= c->wgt_bytes &&
           f.in < 0x7fffffff && ob * g->k < 0x7fffffff;
}

/* The largest rows (then columns) for block ob within the user's limits;
 * 0 if not even one output pixel fits. */
static int shape_for_block(const sched_ctx *c, const sched_conv_geom *g, int64_t ob, int64_t *rb, int64_t *cb)
{
    int64_t max_h = c->opt->max_tile_height > 0 && c->opt->max_tile_height < g->oh ? c->opt->max_tile_height : g->oh;
    int64_t max_w = c->opt->max_tile_width > 0 && c->opt->max_tile_width < g->ow ? c->opt->max_tile_width : g->ow;
    int64_t w = max_w;
    while (w >= 1 && !sched_conv_fits(c, g, 1, w, ob))
        w = w > 1 ? (w + 1) / 2 - (w == 2) : 0;
    if (w < 1)
        return 0;
    int64_t h = 1;
    if (w == max_w) { /* whole rows: grow the band */
        int64_t lo = 1, hi = max_h;
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if (sched_conv_fits(c, g, mid, w, ob))
                lo = mid;
            else
                hi = mid - 1;
        }
        h = lo;
    } else { /* grow the columns as far as they go */
        int64_t lo = w, hi = max_w;
        while (lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if (sched_conv_fits(c, g, 1, mid, ob))
                lo = mid;
            else
                hi = mid - 1;
        }
        w = lo;
    }
    /* At least SCHED_MIN_TILES tiles where the rows allow: with fewer, the
     * layer's first load and last store cannot overlap any compute. */
    int64_t nblk = (g->oc + ob - 1) / ob, nc0 = (g->ow + w - 1) / w;
    if (nblk * nc0 * ((g->oh + h - 1) / h) < SCHED_MIN_TILES && h > 1) {
        int64_t want = (SCHED_MIN_TILES + nblk * nc0 - 1) / (nblk * nc0);
        h = (g->oh + want - 1) / want;
    }
    /* equalise: the same number of tiles, the last one not a sliver */
    int64_t nb = (g->oh + h - 1) / h, nc = (g->ow + w - 1) / w;
    *rb = (g->oh + nb - 1) / nb;
    *cb = (g->ow + nc - 1) / nc;
    return 1;
}

/* DMA bytes of one tile order, for choosing between them. */
static int64_t traffic(const sched_conv_geom *g, int64_t rb, int64_t cb, int64_t ob, int bands_outer)
{
    int64_t nb = (g->oh + rb - 1) / rb, nc = (g->ow + cb - 1) / cb, nblk = (g->oc + ob - 1) / ob;
    int64_t in_all = nb * nc * in_rows(g, rb) * in_cols(g, cb) * in_c_of(g, ob) * (g->groups == 1 ? 1 : nblk);
    int64_t w_all = g->oc * g->k;
    if (g->groups != 1 || nblk == 1)
        return in_all + w_all;
    return bands_outer ? in_all + nb * nc * w_all : nblk * in_all + w_all;
}

void sched_conv_set_shape(const sched_ctx *c, sched_plan *pl, int64_t rb, int64_t cb, int64_t ob, int bands_outer)
{
    (void)c;
    const sched_conv_geom *g = &pl->cg;
    pl->rb = rb, pl->cb = cb, pl->ob = ob;
    pl->bands_outer = bands_outer;
    pl->n_blocks = (g->oc + ob - 1) / ob;
    pl->wblock = wblock_bytes(g, ob);
    pl->tiles = pl->n_blocks * ((g->oh + rb - 1) / rb) * ((g->ow + cb - 1) / cb);
}

/* Candidate output-channel blocks, largest first: multiples of the group
 * size, preferring multiples of the MAC array's output lanes. */
int sched_conv_blocks(const sched_ctx *c, const sched_conv_geom *g, int64_t *out, int max)
{
    int64_t step = g->groups == 1 ? 1 : g->og;
    int64_t lanes = c->pf->mac_oc;
    int n = 0;
    int64_t cand = g->oc;
    while (cand >= step && n < max) {
        int64_t b = cand;
        if (b > lanes && b % lanes) /* round down to whole lanes where that keeps groups whole */
            for (int64_t r = b / lanes * lanes; r >= lanes; r -= lanes)
                if (r % step == 0) {
                    b = r;
                    break;
                }
        b = b / step * step;
        if (b < step)
            break;
        if (n == 0 || b < out[n - 1])
            out[n++] = b;
        if (b == step)
            break;
        cand = b / 2;
    }
    return n;
}

void sched_conv_describe(const sched_plan *pl, char *buf, size_t n)
{
    snprintf(buf, n, "%lld tiles: %lld rows x %lld cols x %lld channels, %s", (long long)pl->tiles,
             (long long)pl->rb, (long long)pl->cb, (long long)pl->ob,
             pl->bands_outer ? "row bands outer" : "channel blocks outer");
}

int sched_conv_plan(const sched_ctx *c, sched_plan *pl, char *reason, size_t reason_len)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    sched_conv_geom *g = &pl->cg;
    if (!sched_conv_geometry(c, node, g)) {
        snprintf(reason, reason_len, "%s input rank is not supported on the DNA", mera_op_table[node->op].name);
        return 0;
    }
    const mera_type *w = &mera_graph_value(c->g, node->inputs[1])->type;
    if (w->dtype != MERA_DTYPE_INT8 || !sched_value_data(c, node->inputs[1])) {
        snprintf(reason, reason_len, "weights must be constant int8");
        return 0;
    }
    if (g->has_bias && (mera_graph_value(c->g, node->inputs[2])->type.dtype != MERA_DTYPE_FLOAT32 ||
                        !sched_value_data(c, node->inputs[2]))) {
        snprintf(reason, reason_len, "bias must be constant float32");
        return 0;
    }
    pl->macs = g->oh * g->ow * g->oc * g->k;
    int64_t blocks[32];
    int nbk = sched_conv_blocks(c, g, blocks, 32);
    for (int i = 0; i < nbk; i++) {
        int64_t rb, cb;
        if (!shape_for_block(c, g, blocks[i], &rb, &cb))
            continue;
        int bo = traffic(g, rb, cb, blocks[i], 1) < traffic(g, rb, cb, blocks[i], 0);
        sched_conv_set_shape(c, pl, rb, cb, blocks[i], bo);
        sched_conv_describe(pl, reason, reason_len);
        return 1;
    }
    footprint f = tile_footprint(g, 1, 1, nbk ? blocks[nbk - 1] : g->oc);
    if ((g->dh > 1 || g->dw > 1) && 2 * (f.in + f.out) > c->act_bytes) {
        /* taps that read only padding are gone already (passes/trim_taps.c) */
        snprintf(reason, reason_len,
                 "does not fit: dilation %lldx%lld spreads one output pixel's window over %lldx%lld input pixels, "
                 "%lld B (x2) with its output; ACT holds %lld B",
                 (long long)g->dh, (long long)g->dw, (long long)in_rows(g, 1), (long long)in_cols(g, 1),
                 (long long)(f.in + f.out), (long long)c->act_bytes);
        return 0;
    }
    snprintf(reason, reason_len,
             "does not fit: one output pixel needs %lld B of activations (x2), %lld B of accumulators, %lld B of "
             "weights (x2); buffers are %lld / %lld / %lld B",
             (long long)(f.in + f.out), (long long)f.acc, (long long)f.w, (long long)c->act_bytes,
             (long long)c->acc_bytes, (long long)c->wgt_bytes);
    return 0;
}

int64_t sched_conv_layout_image(sched_plan *pl, int64_t at)
{
    pl->block_off = malloc((size_t)pl->n_blocks * sizeof *pl->block_off);
    MERA_ASSERT(pl->block_off); /* small; see sched.c for the big allocations */
    for (int64_t b = 0; b < pl->n_blocks; b++) {
        pl->block_off[b] = at;
        at += pl->wblock;
    }
    return at;
}

/* The DNA weight block: int8 [n][kh][kw][cg], then float32 bias [n]. */
void sched_conv_fill_image(const sched_ctx *c, const sched_plan *pl, uint8_t *image)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    const sched_conv_geom *g = &pl->cg;
    const int8_t *w = sched_value_data(c, node->inputs[1]);
    const float *bias = g->has_bias ? sched_value_data(c, node->inputs[2]) : NULL;
    const mera_type *wt = &mera_graph_value(c->g, node->inputs[1])->type;
    const int64_t *s = wt->shape;
    int64_t so, si, sh, sw; /* strides of the node's weight layout */
    const char *kl = g->dense ? "OIHW" : mera_attr_string(node, "kernel_layout");
    if (g->dense) {
        so = s[1], si = 1, sh = sw = 0;
    } else if (!strcmp(kl, "OHWI")) {
        si = 1, sw = s[3], sh = s[2] * s[3], so = s[1] * s[2] * s[3];
    } else if (!strcmp(kl, "HWIO")) {
        so = 1, si = s[3], sw = s[2] * s[3], sh = s[1] * s[2] * s[3];
    } else {
        sw = 1, sh = s[3], si = s[2] * s[3], so = s[1] * s[2] * s[3];
    }
    for (int64_t b = 0; b < pl->n_blocks; b++) {
        int64_t o0 = b * pl->ob, n = g->oc - o0 < pl->ob ? g->oc - o0 : pl->ob;
        int8_t *dst = (int8_t *)image + pl->block_off[b];
        for (int64_t o = 0; o < n; o++)
            for (int64_t kh = 0; kh < g->kh; kh++)
                for (int64_t kw = 0; kw < g->kw; kw++)
                    for (int64_t ci = 0; ci < g->cg; ci++)
                        *dst++ = w[(o0 + o) * so + ci * si + kh * sh + kw * sw];
        if (bias)
            memcpy(dst, bias + o0, (size_t)n * sizeof *bias);
    }
}

void sched_conv_emit(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq)
{
    const mera_node *node = mera_graph_node(c->g, pl->node);
    const sched_conv_geom *g = &pl->cg;
    const mera_type *xt = &mera_graph_value(c->g, node->inputs[0])->type;
    int64_t x_dram = c->value_dram[node->inputs[0]], y_dram = c->value_dram[node->outputs[0]];
    footprint f = tile_footprint(g, pl->rb, pl->cb, pl->ob);
    /* ACT: in0 in1 out0 out1; WGT: w0 w1 */
    int64_t in_slot[2] = {0, f.in}, out_slot[2] = {2 * f.in, 2 * f.in + f.out}, w_slot[2] = {0, f.w};
    int64_t nb = (g->oh + pl->rb - 1) / pl->rb, nc = (g->ow + pl->cb - 1) / pl->cb;
    int64_t n_sp = nb * nc;
    int64_t prev_blk = -1, prev_in = -1;
    int ws = 1, is = 1;
    for (int64_t t = 0; t < pl->tiles; t++) {
        int64_t blk, sp;
        if (pl->bands_outer)
            sp = t / pl->n_blocks, blk = t % pl->n_blocks;
        else
            blk = t / n_sp, sp = t % n_sp;
        int64_t oy0 = sp / nc * pl->rb, ox0 = sp % nc * pl->cb, oc0 = blk * pl->ob;
        int64_t rb = g->oh - oy0 < pl->rb ? g->oh - oy0 : pl->rb;
        int64_t cb = g->ow - ox0 < pl->cb ? g->ow - ox0 : pl->cb;
        int64_t ob = g->oc - oc0 < pl->ob ? g->oc - oc0 : pl->ob;
        int64_t cin = in_c_of(g, ob), c0 = g->groups == 1 ? 0 : oc0 / g->og * g->cg;
        int64_t ir = in_rows(g, rb), ic = in_cols(g, cb);
        if (blk != prev_blk) {
            ws ^= 1;
            sched_item *it = sched_push(seq, DNA_LOAD, layer);
            if (!it)
                return;
            dna_dma *d = &it->insn.u.dma;
            d->mem = DNA_MEM_WGT;
            d->rows = d->cols = 1;
            d->run_bytes = (int32_t)(ob * g->k + (g->has_bias ? 4 * ob : 0));
            d->dram = pl->block_off[blk];
            d->sram = (uint32_t)w_slot[ws];
            sched_dma_ranges(it);
            prev_blk = blk;
        }
        int64_t in_key = (sp * (pl->n_blocks + 1) + (g->groups == 1 ? 0 : blk));
        if (in_key != prev_in) {
            is ^= 1;
            sched_item *it = sched_push(seq, DNA_LOAD, layer);
            if (!it)
                return;
            dna_dma *d = &it->insn.u.dma;
            int64_t iy0 = oy0 * g->sh - g->pt, ix0 = ox0 * g->sw - g->pl;
            int64_t top = iy0 < 0 ? -iy0 : 0, left = ix0 < 0 ? -ix0 : 0;
            int64_t bottom = iy0 + ir > g->h ? iy0 + ir - g->h : 0, right = ix0 + ic > g->w ? ix0 + ic - g->w : 0;
            if (top > ir)
                top = ir;
            if (left > ic)
                left = ic;
            if (bottom > ir - top)
                bottom = ir - top;
            if (right > ic - left)
                right = ic - left;
            d->mem = DNA_MEM_ACT;
            d->pad_value = (uint8_t)xt->q.zero_point;
            d->rows = (int32_t)ir, d->cols = (int32_t)ic, d->run_bytes = (int32_t)cin;
            d->pad_top = (int32_t)top, d->pad_bottom = (int32_t)bottom;
            d->pad_left = (int32_t)left, d->pad_right = (int32_t)right;
            d->dram_row_stride = g->w * g->c, d->dram_col_stride = g->c;
            d->dram = x_dram + iy0 * d->dram_row_stride + ix0 * d->dram_col_stride + c0;
            d->sram = (uint32_t)in_slot[is];
            d->sram_row_stride = (uint32_t)(ic * cin), d->sram_col_stride = (uint32_t)cin;
            sched_dma_ranges(it);
            prev_in = in_key;
        }
        int os = (int)(t & 1);
        sched_item *it = sched_push(seq, DNA_CONV, layer);
        if (!it)
            return;
        dna_conv *cv = &it->insn.u.conv;
        cv->in_addr = (uint32_t)in_slot[is], cv->wgt_addr = (uint32_t)w_slot[ws], cv->out_addr = (uint32_t)out_slot[os];
        cv->in_h = (int32_t)ir, cv->in_w = (int32_t)ic, cv->in_c = (int32_t)cin;
        cv->out_h = (int32_t)rb, cv->out_w = (int32_t)cb;
        cv->oc0 = (int32_t)oc0, cv->oc_n = (int32_t)ob;
        cv->depthwise_saturate = g->saturate;
        cv->rounding = (int32_t)mera_graph_rounding(c->g);
        cv->wgt_dram = pl->block_off[blk];
        sched_range_add(it, SPACE_ACT, 0, in_slot[is], in_slot[is] + ir * ic * cin);
        sched_range_add(it, SPACE_WGT, 0, w_slot[ws], w_slot[ws] + ob * g->k + (g->has_bias ? 4 * ob : 0));
        sched_range_add(it, SPACE_ACT, 1, out_slot[os], out_slot[os] + rb * cb * ob);

        it = sched_push(seq, DNA_STORE, layer);
        if (!it)
            return;
        dna_dma *d = &it->insn.u.dma;
        d->mem = DNA_MEM_ACT;
        d->rows = (int32_t)rb, d->cols = (int32_t)cb, d->run_bytes = (int32_t)ob;
        d->dram_row_stride = g->ow * g->oc, d->dram_col_stride = g->oc;
        d->dram = y_dram + oy0 * d->dram_row_stride + ox0 * d->dram_col_stride + oc0;
        d->sram = (uint32_t)out_slot[os];
        d->sram_row_stride = (uint32_t)(cb * ob), d->sram_col_stride = (uint32_t)ob;
        sched_dma_ranges(it);
    }
}
