/* Layers run whole (docs/architecture.md, "Layers run whole").
 *
 * A conv2d layer's tiles each go LOAD (a window of the input into ACT,
 * padded with the input zero point) -> CONV (output rows x columns x
 * channels of the layer, ACT -> ACT) -> STORE (the tile into the output in
 * DRAM). When the instructions prove that the tiles together compute the
 * layer's output from its input in DRAM, each output byte once, and that
 * nothing else sees what they leave in ACT, a run executes the layer as one
 * kernel call on its input and output in DRAM (InterpreterHw's call, split
 * across the threads the same way) instead of its tiles: no copies, no
 * per-tile calls. The bytes are the same: a conv's output byte depends only
 * on its input window, its channel's weights and the requantization, and
 * the tile kernels are the layer's kernel on a window padded as the layer
 * pads. The timing model does not look: the modelled device still runs
 * every instruction.
 *
 * plan_layers decides once, at load, from the instructions in execution
 * order (the DNA segments' orders one after the other). A layer runs whole
 * when all of these hold, else its tiles run as before:
 *
 * - it is a conv2d of batch 1 in NHWC, its input and output dense in the
 *   activation DRAM and disjoint, and all its instructions lie in one DNA
 *   segment: LOADs, CONVs, STOREs and NOPs only;
 * - every CONV reads exactly the ACT box a LOAD of the layer wrote, nothing
 *   having written those bytes since, and that LOAD reads exactly the
 *   input window the CONV's output tile needs (rows, columns, the channels
 *   of its groups), with the padding the layer's padding gives at that
 *   place, filled with the input zero point;
 * - every CONV's output tile is stored once, whole, by a STORE of the
 *   layer, to its place in the output, nothing having written it since;
 *   the tiles cover the output, each byte once, all with one rounding and
 *   depthwise decision, and where two tiles share output channels their
 *   weight blocks hold the same bytes;
 * - between the layer's first and last instructions no other instruction
 *   reads an ACT byte the layer wrote, writes its input or touches its
 *   output in DRAM; after its last, every ACT byte it wrote is overwritten
 *   before anything reads it (or the program ends).
 *
 * An elementwise VEC layer (add, mul, relu, clip, requantize, leaky_relu,
 * hardswish, hardsigmoid, sigmoid, gelu: each output element the op of
 * the inputs' elements at its index) runs whole on the same terms, its
 * tiles going LOAD per source (a box of that input into ACT) -> VEC ->
 * STORE. It runs whole when all of these hold, else its tiles run:
 *
 * - its output and every input are dense one-byte tensors of rank <= 4 in
 *   the activation DRAM (no constant input), each input disjoint from the
 *   output, each input dimension (right-aligned) the output's or 1
 *   (broadcast), and all its instructions lie in one DNA segment: LOADs
 *   into ACT, VECs, STOREs and NOPs only;
 * - every VEC's tile (its origin and destination extent) lies in the
 *   output and is a cut the layer's split rule allows (kernels/split.h:
 *   along its one dimension, starting at a multiple of its granule; with
 *   no rule, the whole output): there the kernel on the tile gives the
 *   whole's bytes, which is what makes running it whole the same;
 * - every VEC reads, for each source, exactly the ACT box a LOAD of the
 *   layer wrote, nothing having written it since, and that LOAD moved
 *   exactly the tile's box of that input (the tile's place, all of a
 *   broadcast dimension; unpadded, dense in ACT), the source's extents
 *   being that box's;
 * - every VEC's destination is stored once, whole, by a STORE of the
 *   layer to the tile's place in the output; the tiles cover the output
 *   once, all with one rounding;
 * - the same rules as a conv2d's on what else happens among and after its
 *   instructions, for every input.
 *
 * The run then executes the layer at the last of its instructions where
 * it may (dram_event): it reads its inputs then instead of at its LOADs
 * (nothing wrote them in between) and writes its output then instead of
 * at its STOREs (nothing read or wrote it in between), and its ACT bytes, which it no longer writes, nobody
 * reads. Each check reads the instructions as they are (sim_insn_uses,
 * raw), other layers' decisions aside: a layer run whole only moves its
 * own reads and writes later, to a point its own checks cleared. The
 * tiles' kernels of a layer run whole are not packed (the layer's kernel
 * holds the weights), so the weights are held once. MERA_SIM_LAYERS=0 in
 * the environment at load turns it off. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/split.h"
#include "sim/machine_internal.h"

/* Instructions after a layer's last searched for a read of what it left
 * in ACT; still undecided there: the layer runs as tiles. */
#define SIM_LAYER_SCAN 4096
/* Tiles a layer may have and still run whole (the cover check is quadratic). */
#define SIM_LAYER_TILES 2048

typedef struct {
    int64_t lo, hi;
    int insn;      /* the LOAD, CONV or VEC of the layer that wrote [lo, hi) */
    int out;       /* a CONV's or VEC's output (else a LOAD's box) */
    int load;      /* a CONV's output: the LOAD it read, else -1 */
    int stored;    /* an output: a STORE read it */
    int clobbered; /* part of it overwritten since */
} act_box;

/* A tile's place in the output, as a box of the output padded to rank 4
 * (a conv2d's: [0, 1) x rows x columns x channels). */
typedef struct {
    int insn;              /* its CONV or VEC */
    int64_t org[4], ext[4];
} tile_rec;

typedef struct {
    const dna_machine *m;
    int layer;
    int vec;                /* an elementwise VEC layer (else a conv2d) */
    const dna_conv_geom *geo;
    int64_t h, w, c, oh, ow, o, pt, pl;
    int n_x;                /* inputs: 1 for a conv2d */
    int64_t x[DNA_MAX_SRC], x_bytes[DNA_MAX_SRC], y, y_bytes;
    int64_t x_word[DNA_MAX_SRC]; /* input q's bits start at this word of x_written and x_loaded */
    int64_t out_dim[4];     /* the output's shape padded to rank 4 with leading 1s */
    int64_t in_dim[DNA_MAX_SRC][4]; /* a VEC layer's inputs' shapes, the same way */
    int in_rank[DNA_MAX_SRC], out_rank;
    int cut;                /* a VEC layer: the padded dimension its split rule lets tiles cut, -1 none */
    int cat;                /* a concat: its padded axis, where every tile and source is whole; else -1 */
    int64_t granule;        /* and the multiple each tile starts at along it */
    int zero_point;
    int dws, rounding, n_convs;
    act_box *box;
    int n_box, cap_box;
    tile_rec *tile;
    int n_tile, cap_tile;
    uint64_t *x_written;    /* per input byte (each input's at x_word), a bit: another layer wrote it among the
                             * layer's instructions */
    uint64_t *x_loaded;     /* per input byte: a LOAD of the layer read it */
    uint64_t *y_stored;     /* per output byte: a STORE of the layer wrote it */
    int64_t cap_x, cap_y;   /* words of the bits */
    int last_x_write;       /* the position of the latest such write, else -1 */
    int p_lo, p_hi;         /* the positions the layer may run at */
    int at;                 /* the instruction it runs at */
    const char *why;        /* why the layer runs as tiles (MERA_SIM_PROFILE prints it) */
    int why_insn;
} layer_check;

#define REFUSE(lc, i, reason) return ((lc)->why = (reason), (lc)->why_insn = (i), 0)

static int meet(int64_t a0, int64_t a1, int64_t b0, int64_t b1)
{
    return a0 < b1 && b0 < a1;
}

/* ACT [lo, hi) written: the boxes lose those bytes (what is left of a box
 * is clobbered: no instruction reads it whole any more). -1: out of memory. */
static int act_write(layer_check *lc, int64_t lo, int64_t hi)
{
    void *tmp_grow;
    for (int b = 0; b < lc->n_box;) {
        act_box *x = &lc->box[b];
        if (!meet(lo, hi, x->lo, x->hi)) {
            b++;
        } else if (lo <= x->lo && hi >= x->hi) {
            *x = lc->box[--lc->n_box];
        } else if (lo > x->lo && hi < x->hi) { /* a hole: two pieces */
            if (GROW(lc->box, lc->cap_box, lc->n_box))
                return -1;
            x = &lc->box[b];
            act_box tail = *x;
            tail.lo = hi;
            tail.clobbered = 1;
            x->hi = lo;
            x->clobbered = 1;
            lc->box[lc->n_box++] = tail;
            b++;
        } else {
            if (lo <= x->lo)
                x->lo = hi;
            else
                x->hi = lo;
            x->clobbered = 1;
            b++;
        }
    }
    return 0;
}

/* ACT [lo, hi) written by instruction insn of the layer: a LOAD's box (out
 * 0) or a CONV's or VEC's output (out 1; load: the CONV's LOAD, else -1).
 * -1: out of memory. */
static int act_add(layer_check *lc, int64_t lo, int64_t hi, int insn, int out, int load)
{
    void *tmp_grow;
    if (act_write(lc, lo, hi) || GROW(lc->box, lc->cap_box, lc->n_box))
        return -1;
    lc->box[lc->n_box++] = (act_box){lo, hi, insn, out, load, 0, 0};
    return 0;
}

static int act_meets(const layer_check *lc, int64_t lo, int64_t hi)
{
    for (int b = 0; b < lc->n_box; b++)
        if (meet(lo, hi, lc->box[b].lo, lc->box[b].hi))
            return 1;
    return 0;
}

/* The box exactly [lo, hi), unclobbered, written by a LOAD (out 0) or a
 * CONV or VEC (out 1) of the layer; NULL when there is none. */
static act_box *act_find(layer_check *lc, int64_t lo, int64_t hi, int out)
{
    for (int b = 0; b < lc->n_box; b++) {
        act_box *x = &lc->box[b];
        if (x->lo == lo && x->hi == hi && !x->clobbered && x->out == out)
            return x;
    }
    return NULL;
}

/* Is the tile of CONV k, read from the ACT box LOAD d wrote and stored by
 * STORE s, the layer's output tile at its place? Fills t; NULL when it is,
 * else what is not. */
static const char *tile_mismatch(const layer_check *lc, const dna_conv *k, const dna_dma *d, const dna_dma *s, tile_rec *t)
{
    const dna_conv_geom *g = lc->geo;
    /* the STORE: the whole tile, dense in ACT, to its place in the dense output */
    if (s->rows != k->out_h || s->cols != k->out_w || s->run_bytes != k->oc_n || s->pad_top || s->pad_bottom ||
        s->pad_left || s->pad_right || s->sram != k->out_addr || s->sram_col_stride != (uint32_t)k->oc_n ||
        s->sram_row_stride != (uint32_t)k->out_w * (uint32_t)k->oc_n || s->dram_col_stride != lc->o ||
        s->dram_row_stride != lc->ow * lc->o || s->dram < lc->y)
        return "a STORE is not its CONV's whole tile into the dense output";
    int64_t off = s->dram - lc->y, oh0 = off / (lc->ow * lc->o), ow0 = off % (lc->ow * lc->o) / lc->o;
    if (off % lc->o != k->oc0 || k->oc0 < 0 || k->oc_n < 1 || k->oc0 + k->oc_n > lc->o || k->out_h < 1 ||
        k->out_w < 1 || oh0 + k->out_h > lc->oh || ow0 + k->out_w > lc->ow)
        return "a STORE's place is not within the output";
    /* the input channels of the block's groups */
    int64_t ic0 = 0, icn = lc->c;
    if (g->groups > 1) {
        if (k->oc0 % g->og || k->oc_n % g->og)
            return "a CONV's channel block splits a group";
        ic0 = k->oc0 / g->og * g->cg;
        icn = k->oc_n / g->og * g->cg;
    }
    /* the window the tile needs, and the LOAD that gave it */
    int64_t ra = oh0 * g->sh - lc->pt, ca = ow0 * g->sw - lc->pl;
    int64_t rows = (k->out_h - 1) * g->sh + (g->kh - 1) * g->dh + 1, cols = (k->out_w - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    if (k->in_h != rows || k->in_w != cols || k->in_c != icn)
        return "a CONV's input is not the window its output tile needs";
    int64_t pt = ra < 0 ? -ra : 0, pb = ra + rows > lc->h ? ra + rows - lc->h : 0;
    int64_t pl = ca < 0 ? -ca : 0, pr = ca + cols > lc->w ? ca + cols - lc->w : 0;
    if (d->mem != DNA_MEM_ACT || d->rows != rows || d->cols != cols || d->run_bytes != icn || d->sram != k->in_addr ||
        d->sram_col_stride != (uint32_t)icn || d->sram_row_stride != (uint32_t)(cols * icn) || d->pad_top != pt ||
        d->pad_bottom != pb || d->pad_left != pl || d->pad_right != pr || d->dram_row_stride != lc->w * lc->c ||
        d->dram_col_stride != lc->c || d->dram != lc->x[0] + ra * lc->w * lc->c + ca * lc->c + ic0)
        return "a CONV's LOAD is not its window of the input";
    if ((pt || pb || pl || pr) && d->pad_value != (uint8_t)lc->zero_point)
        return "a LOAD pads with another value than the input zero point";
    *t = (tile_rec){0, {0, oh0, ow0, k->oc0}, {1, k->out_h, k->out_w, k->oc_n}};
    return NULL;
}

/* The tiles cover the output, each byte once: they lie in it (checked as
 * they are recorded), no two meet, and their sizes add up to it. */
static int tiles_cover(const layer_check *lc)
{
    int64_t sum = 0;
    for (int a = 0; a < lc->n_tile; a++) {
        const tile_rec *p = &lc->tile[a];
        sum += p->ext[0] * p->ext[1] * p->ext[2] * p->ext[3];
        for (int b = 0; b < a; b++) {
            const tile_rec *q = &lc->tile[b];
            int all = 1;
            for (int d = 0; d < 4; d++)
                all &= meet(p->org[d], p->org[d] + p->ext[d], q->org[d], q->org[d] + q->ext[d]);
            if (all)
                return 0;
        }
    }
    return sum == lc->y_bytes;
}

/* A conv2d's facts; 0 when it is not one that can run whole. */
static int conv_facts(layer_check *lc, const mera_node *node)
{
    const dna_machine *m = lc->m;
    const dna_program *prog = m->prog;
    lc->geo = &m->geos[lc->layer];
    if (lc->geo->dense || node->n_inputs < 2 || node->n_outputs != 1)
        REFUSE(lc, -1, "not a conv2d");
    const mera_type *xt = &mera_graph_value(m->g, node->inputs[0])->type;
    const mera_type *yt = &mera_graph_value(m->g, node->outputs[0])->type;
    const mera_attr *pad = mera_node_attr(node, "padding");
    /* NHWC data (the node's layout; dna_conv_geometry checked it), whatever layout tag the values carry */
    if (xt->rank != 4 || yt->rank != 4 || xt->shape[0] != 1 || yt->shape[0] != 1 ||
        xt->q.kind != MERA_QUANT_PER_TENSOR || !pad || pad->count < 2)
        REFUSE(lc, -1, "not batch 1 with a per-tensor input");
    lc->h = xt->shape[1], lc->w = xt->shape[2], lc->c = xt->shape[3];
    lc->oh = yt->shape[1], lc->ow = yt->shape[2], lc->o = yt->shape[3];
    lc->pt = pad->ints[0], lc->pl = pad->ints[1];
    lc->zero_point = xt->q.zero_point;
    lc->n_x = 1;
    lc->x[0] = prog->value_dram[node->inputs[0]];
    lc->y = prog->value_dram[node->outputs[0]];
    lc->x_bytes[0] = (int64_t)mera_type_nbytes(xt);
    lc->y_bytes = (int64_t)mera_type_nbytes(yt);
    if (!(lc->c == lc->geo->c && lc->o == lc->geo->o && lc->x_bytes[0] == lc->h * lc->w * lc->c &&
          lc->y_bytes == lc->oh * lc->ow * lc->o && lc->x[0] >= prog->params_bytes && lc->y >= prog->params_bytes &&
          lc->x[0] + lc->x_bytes[0] <= prog->dram_bytes && lc->y + lc->y_bytes <= prog->dram_bytes &&
          !meet(lc->x[0], lc->x[0] + lc->x_bytes[0], lc->y, lc->y + lc->y_bytes)))
        REFUSE(lc, -1, "its input and output are not disjoint dense tensors in the activation DRAM");
    return 1;
}

/* The VEC ops that run whole: each output element is the op of the
 * inputs' elements at its index (broadcast), nothing else, so the kernel
 * on the whole tensors computes what the kernels on tiles cut where the
 * split rule allows do (kernels/split.h: the rule keeps every element on
 * the formula the whole tensor gives it; cuts elsewhere are refused).
 * A concat is one too along every dimension but its axis, where each
 * input is whole (its split rule never cuts the axis). Pools, upsample,
 * mean read other positions than their output's and run as tiles. */
static int vec_elementwise(mera_op op)
{
    switch (op) {
    case MERA_OP_CONCAT:
    case MERA_OP_ADD:
    case MERA_OP_MUL:
    case MERA_OP_RELU:
    case MERA_OP_CLIP:
    case MERA_OP_REQUANTIZE:
    case MERA_OP_LEAKY_RELU:
    case MERA_OP_HARDSWISH:
    case MERA_OP_HARDSIGMOID:
    case MERA_OP_SIGMOID:
    case MERA_OP_GELU: return 1;
    default: return 0;
    }
}

static void pad_dims(const mera_type *t, int64_t *dim)
{
    for (int d = 0; d < 4; d++)
        dim[d] = d < 4 - t->rank ? 1 : t->shape[d - (4 - t->rank)];
}

/* An elementwise VEC layer's facts; 0 when it is not one that can run
 * whole: one-byte tensors of rank 1..4 in the activation DRAM, each input
 * dense and disjoint from the dense output, each input's dimension
 * (right-aligned, numpy-style) the output's or 1 (broadcast). */
static int vec_facts(layer_check *lc, const mera_node *node)
{
    const dna_machine *m = lc->m;
    const dna_program *prog = m->prog;
    if (node->n_outputs != 1 || node->n_inputs < 1 || node->n_inputs > DNA_MAX_SRC || node->outputs[0] < 0)
        REFUSE(lc, -1, "not a VEC layer of one output");
    const mera_type *yt = &mera_graph_value(m->g, node->outputs[0])->type;
    if (yt->rank < 1 || yt->rank > 4 || mera_dtype_size(yt->dtype) != 1)
        REFUSE(lc, -1, "its output is not a one-byte tensor of rank 1 to 4");
    lc->out_rank = yt->rank;
    pad_dims(yt, lc->out_dim);
    lc->y = prog->value_dram[node->outputs[0]];
    lc->y_bytes = (int64_t)mera_type_nbytes(yt);
    for (int d = 0; d < 4; d++)
        if (lc->out_dim[d] < 1 || lc->out_dim[d] > INT32_MAX)
            REFUSE(lc, -1, "its output has an empty or too long dimension");
    if (lc->y_bytes != lc->out_dim[0] * lc->out_dim[1] * lc->out_dim[2] * lc->out_dim[3] ||
        lc->y < prog->params_bytes || lc->y + lc->y_bytes > prog->dram_bytes)
        REFUSE(lc, -1, "its output is not a dense tensor in the activation DRAM");
    lc->cat = -1;
    if (node->op == MERA_OP_CONCAT) {
        int64_t axis = mera_attr_int(node, "axis");
        axis += axis < 0 ? yt->rank : 0;
        if (axis < 0 || axis >= yt->rank)
            REFUSE(lc, -1, "a concat axis outside its output");
        lc->cat = 4 - yt->rank + (int)axis;
    }
    int64_t cat_sum = 0;
    const mera_type *in_types[DNA_MAX_SRC];
    lc->n_x = node->n_inputs;
    for (int q = 0; q < lc->n_x; q++) {
        if (node->inputs[q] < 0)
            REFUSE(lc, -1, "an input is omitted");
        const mera_type *xt = &mera_graph_value(m->g, node->inputs[q])->type;
        in_types[q] = xt;
        if (xt->rank < 1 || xt->rank > yt->rank || mera_dtype_size(xt->dtype) != 1)
            REFUSE(lc, -1, "an input is not a one-byte tensor of at most the output's rank");
        lc->in_rank[q] = xt->rank;
        pad_dims(xt, lc->in_dim[q]);
        for (int d = 0; d < 4; d++)
            if (lc->in_dim[q][d] != lc->out_dim[d] && d != lc->cat && (lc->in_dim[q][d] != 1 || lc->cat >= 0))
                REFUSE(lc, -1, "an input's shape does not broadcast to the output's (a concat's: is not the output's "
                               "off its axis)");
        if (lc->cat >= 0 && xt->rank != yt->rank)
            REFUSE(lc, -1, "a concat input of another rank than its output");
        cat_sum += lc->cat >= 0 ? lc->in_dim[q][lc->cat] : 0;
        lc->x[q] = prog->value_dram[node->inputs[q]];
        lc->x_bytes[q] = (int64_t)mera_type_nbytes(xt);
        if (lc->x[q] < prog->params_bytes) /* -1 (graph data) or the constant image: its LOADs read the image */
            REFUSE(lc, -1, "an input is a constant, not an activation in DRAM");
        if (lc->x_bytes[q] != lc->in_dim[q][0] * lc->in_dim[q][1] * lc->in_dim[q][2] * lc->in_dim[q][3] ||
            lc->x[q] + lc->x_bytes[q] > prog->dram_bytes || meet(lc->x[q], lc->x[q] + lc->x_bytes[q], lc->y, lc->y + lc->y_bytes))
            REFUSE(lc, -1, "an input is not a dense tensor in the activation DRAM disjoint from the output");
    }
    if (lc->cat >= 0 && cat_sum != lc->out_dim[lc->cat])
        REFUSE(lc, -1, "a concat's inputs do not add up to its output along its axis");
    /* where tiles may cut it (sched/vec.c cuts the same way) */
    mera_split_rule rule = mera_kernel_split_rule(node, in_types, lc->n_x, yt);
    lc->cut = rule.axis == MERA_SPLIT_ROWS ? (yt->rank >= 2 ? 4 - yt->rank + 1 : -1) : rule.axis == MERA_SPLIT_CHANNELS ? 3 : -1;
    lc->granule = rule.granule > 0 ? rule.granule : 1;
    return 1;
}

/* The layer's facts; 0 when it is not a layer that can run whole. */
static int layer_facts(layer_check *lc)
{
    const mera_node *node = mera_graph_node(lc->m->g, lc->m->prog->layers[lc->layer].node);
    lc->vec = vec_elementwise(node->op);
    if (node->op == MERA_OP_CONV2D)
        return conv_facts(lc, node);
    if (lc->vec)
        return vec_facts(lc, node);
    REFUSE(lc, -1, "not a conv2d or an elementwise VEC layer");
}

/* A LOAD into WGT. A layer run whole leaves its weight LOADs to run as
 * they are: WGT holds only weight blocks, which the layer's kernel does
 * not read, but the tags (and, when some tile kernel packs nothing, the
 * bytes) of WGT are the machine's for every CONV that checks or reads
 * them later, whatever its layer. */
static int wgt_load(const dna_insn *in)
{
    return in->opcode == DNA_LOAD && in->u.dma.mem == DNA_MEM_WGT;
}

/* ---- a VEC tile's boxes -------------------------------------------------- */

/* A walk over bytes as nested (extent, stride) loops, outermost first,
 * made canonical: extent-1 loops dropped, a loop merged into the one
 * outside it when they step on as one (outer stride = inner extent x
 * inner stride). Two walks from the same start with the same canonical
 * loops visit the same addresses in the same order. Returns the loops. */
static int walk_canon(int n, int64_t *ext, int64_t *stride)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (ext[i] == 1)
            continue;
        if (k > 0 && stride[k - 1] == ext[i] * stride[i]) {
            ext[k - 1] *= ext[i];
            stride[k - 1] = stride[i];
        } else {
            ext[k] = ext[i];
            stride[k] = stride[i];
            k++;
        }
    }
    return k;
}

/* The DMA's SRAM side is one dense block from d->sram (byte j of the box
 * at sram + j). */
static int dma_sram_dense(const dna_dma *d)
{
    int64_t e[3] = {d->rows, d->cols, d->run_bytes}, st[3] = {d->sram_row_stride, d->sram_col_stride, 1};
    int k = walk_canon(3, e, st);
    return d->rows >= 1 && d->cols >= 1 && d->run_bytes >= 1 && (k == 0 || (k == 1 && st[0] == 1));
}

/* Does the unpadded DMA move, in SRAM order, exactly the bytes of box
 * [org, org + ext) of the C-contiguous tensor of padded shape dim at base
 * in DRAM, in C order (dense on the SRAM side: byte j of the box at
 * sram + j)? */
static int dma_is_box(const dna_dma *d, int64_t base, const int64_t *dim, const int64_t *org, const int64_t *ext)
{
    if (d->pad_top || d->pad_bottom || d->pad_left || d->pad_right || !dma_sram_dense(d))
        return 0;
    int64_t st[4] = {dim[1] * dim[2] * dim[3], dim[2] * dim[3], dim[3], 1}, be[4], bs[4], at = base;
    for (int k = 0; k < 4; k++) {
        at += org[k] * st[k];
        be[k] = ext[k];
        bs[k] = st[k];
    }
    int64_t de[3] = {d->rows, d->cols, d->run_bytes}, ds[3] = {d->dram_row_stride, d->dram_col_stride, 1};
    int nb = walk_canon(4, be, bs), nd = walk_canon(3, de, ds);
    if (d->dram != at || nb != nd)
        return 0;
    for (int k = 0; k < nb; k++)
        if (be[k] != de[k] || bs[k] != ds[k])
            return 0;
    return 1;
}

/* A VEC tile's place in the output (padded to rank 4), from its origin
 * and destination extent; NULL when it lies in the output, in a cut the
 * split rule allows, with each source's extent the place's (broadcast:
 * 1), else what is not. */
static const char *vec_tile_place(const layer_check *lc, const dna_vec *v, int64_t *org, int64_t *ext)
{
    const int lead = 4 - lc->out_rank;
    for (int d = 0; d < 4; d++) {
        org[d] = d < lead ? 0 : v->origin[d - lead];
        ext[d] = d < lead ? 1 : v->dst.ext[d - lead];
        if (org[d] < 0 || ext[d] < 1 || org[d] + ext[d] > lc->out_dim[d])
            return "a VEC's tile does not lie in the output";
        if (d == lc->cut ? org[d] % lc->granule != 0 : org[d] != 0 || ext[d] != lc->out_dim[d])
            return "a VEC's tile is not a cut its split rule allows";
    }
    if (v->n_src != lc->n_x)
        return "a VEC's sources are not the layer's inputs";
    for (int q = 0; q < lc->n_x; q++) {
        const int ql = 4 - lc->in_rank[q];
        for (int d = ql; d < 4; d++)
            if (v->src[q].ext[d - ql] != (lc->in_dim[q][d] == 1 || d == lc->cat ? lc->in_dim[q][d] : ext[d]))
                return "a VEC's source extent is not its tile's";
    }
    return NULL;
}

/* Source q's box of the tile at org/ext: the tile's place where the input
 * has the output's dimension, all of a broadcast one. */
static void vec_source_box(const layer_check *lc, int q, const int64_t *org, const int64_t *ext, int64_t *so,
                           int64_t *se)
{
    for (int d = 0; d < 4; d++) {
        int whole = lc->in_dim[q][d] != lc->out_dim[d] || d == lc->cat; /* broadcast, or the concat axis */
        so[d] = whole ? 0 : org[d];
        se[d] = whole ? lc->in_dim[q][d] : ext[d];
    }
}

/* Where the layer may run: at a position of its own in [p_lo, p_hi].
 * Another instruction between its first and last that writes its input
 * or reads its output pins that down, byte by byte (dram_event): a byte of
 * the input written at q and loaded by the layer before q must be read
 * before q (p < q), loaded after q after it (p > q: after the latest such
 * write so far, which is safe: nothing the layer loaded before that write
 * overlaps it, or p < it already); a byte of the output read at r that the
 * layer stored before r must be written before r (p < r), one it stores
 * later after r (p > r). One bit per byte of input and output. */
enum { EV_LOAD_X, EV_WRITE_X, EV_STORE_Y, EV_READ_Y };

static int bit_get(const uint64_t *w, int64_t b)
{
    return (int)(w[b >> 6] >> (b & 63)) & 1;
}

static void bit_set(uint64_t *w, int64_t b)
{
    w[b >> 6] |= (uint64_t)1 << (b & 63);
}

/* The event on the bytes of input q (q >= 0; x_side events) or of the
 * output (q -1). */
static void dram_event_on(layer_check *lc, const dna_dma *d, int ev, int pos, int q)
{
    const int64_t base = q >= 0 ? lc->x[q] : lc->y, n = q >= 0 ? lc->x_bytes[q] : lc->y_bytes;
    uint64_t *x_written = q >= 0 ? lc->x_written + lc->x_word[q] : NULL;
    uint64_t *x_loaded = q >= 0 ? lc->x_loaded + lc->x_word[q] : NULL;
    for (int64_t row = d->pad_top; row < d->rows - d->pad_bottom; row++)
        for (int64_t col = d->pad_left; col < d->cols - d->pad_right; col++) {
            int64_t b0 = d->dram + row * d->dram_row_stride + col * d->dram_col_stride - base, b1 = b0 + d->run_bytes;
            b0 = b0 < 0 ? 0 : b0;
            b1 = b1 > n ? n : b1;
            for (int64_t b = b0; b < b1; b++)
                switch (ev) {
                case EV_LOAD_X:
                    if (bit_get(x_written, b) && lc->last_x_write >= lc->p_lo)
                        lc->p_lo = lc->last_x_write + 1;
                    bit_set(x_loaded, b);
                    break;
                case EV_WRITE_X:
                    if (bit_get(x_loaded, b) && pos - 1 < lc->p_hi)
                        lc->p_hi = pos - 1;
                    bit_set(x_written, b);
                    lc->last_x_write = pos;
                    break;
                case EV_STORE_Y: bit_set(lc->y_stored, b); break;
                default:
                    if (bit_get(lc->y_stored, b) && pos - 1 < lc->p_hi)
                        lc->p_hi = pos - 1;
                    else if (!bit_get(lc->y_stored, b) && pos + 1 > lc->p_lo)
                        lc->p_lo = pos + 1;
                }
        }
}

/* An input event on every input whose bytes the DMA's DRAM side meets (a
 * LOAD of one input marks the others it meets as loaded too, when two
 * inputs are one tensor: that only narrows where the layer may run), an
 * output event on the output. */
static void dram_event(layer_check *lc, const dna_dma *d, int ev, int pos)
{
    if (ev != EV_LOAD_X && ev != EV_WRITE_X) {
        dram_event_on(lc, d, ev, pos, -1);
        return;
    }
    for (int q = 0; q < lc->n_x; q++)
        dram_event_on(lc, d, ev, pos, q);
}

/* Positions [first, last] of seq hold the layer's instructions (and
 * others'); n_seq the whole sequence. 1: the layer can run whole, at
 * lc->at; -1: out of memory. */
static int layer_check_run(layer_check *lc, const int *seq, int n_seq, int first, int last)
{
    const dna_machine *m = lc->m;
    const dna_program *prog = m->prog;
    void *tmp_grow;
    lc->dws = lc->rounding = -1;
    lc->p_lo = first;
    lc->p_hi = last;
    lc->last_x_write = -1;
    size_t xw = 0;
    for (int q = 0; q < lc->n_x; q++) {
        lc->x_word[q] = (int64_t)xw;
        xw += (size_t)(lc->x_bytes[q] / 64 + 1);
    }
    const size_t yw = (size_t)(lc->y_bytes / 64 + 1);
    if (lc->cap_x < (int64_t)xw) {
        free(lc->x_written);
        free(lc->x_loaded);
        lc->x_written = malloc(xw * sizeof *lc->x_written);
        lc->x_loaded = malloc(xw * sizeof *lc->x_loaded);
        lc->cap_x = lc->x_written && lc->x_loaded ? (int64_t)xw : 0;
        if (!lc->cap_x)
            return -1;
    }
    if (lc->cap_y < (int64_t)yw) {
        free(lc->y_stored);
        lc->y_stored = malloc(yw * sizeof *lc->y_stored);
        lc->cap_y = lc->y_stored ? (int64_t)yw : 0;
        if (!lc->cap_y)
            return -1;
    }
    memset(lc->x_written, 0, xw * sizeof *lc->x_written);
    memset(lc->x_loaded, 0, xw * sizeof *lc->x_loaded);
    memset(lc->y_stored, 0, yw * sizeof *lc->y_stored);
    for (int p = first; p <= last; p++) {
        const int i = seq[p];
        const dna_insn *in = &prog->insns[i];
        if (in->layer != lc->layer) { /* another layer's: keep off this one's bytes */
            mem_use u[MAX_USES];
            int n = sim_insn_uses(m, i, 1, u);
            for (int q = 0; q < n; q++) {
                if (u[q].space == SP_ACT && !u[q].write && act_meets(lc, u[q].lo, u[q].hi))
                    REFUSE(lc, i, "another instruction among its own reads ACT bytes it wrote");
                if (u[q].space != SP_DRAM)
                    continue;
                int on_x = 0;
                for (int x = 0; x < lc->n_x; x++)
                    on_x |= meet(u[q].lo, u[q].hi, lc->x[x], lc->x[x] + lc->x_bytes[x]);
                int on_y = meet(u[q].lo, u[q].hi, lc->y, lc->y + lc->y_bytes);
                if (on_y && u[q].write)
                    REFUSE(lc, i, "another instruction among its own writes its output");
                if ((on_x && u[q].write) || on_y) {
                    if (in->opcode != DNA_LOAD && in->opcode != DNA_STORE)
                        REFUSE(lc, i, "another instruction among its own writes its input or reads its output");
                    dram_event(lc, &in->u.dma, on_y ? EV_READ_Y : EV_WRITE_X, p);
                }
            }
            for (int q = 0; q < n; q++)
                if (u[q].space == SP_ACT && u[q].write && act_write(lc, u[q].lo, u[q].hi))
                    return -1;
            continue;
        }
        switch (in->opcode) {
        case DNA_NOP: break;
        case DNA_LOAD: {
            const dna_dma *d = &in->u.dma;
            if (d->mem == DNA_MEM_WGT && lc->vec)
                REFUSE(lc, i, "a VEC layer's LOAD into WGT");
            if (d->mem == DNA_MEM_WGT)
                break; /* runs as it is (wgt_load): the layer's kernel holds the weights */
            int64_t n = (int64_t)d->rows * d->cols * d->run_bytes;
            if (!dma_sram_dense(d))
                REFUSE(lc, i, "a LOAD's box is not dense in ACT");
            if (act_add(lc, d->sram, d->sram + n, i, 0, -1))
                return -1;
            dram_event(lc, d, EV_LOAD_X, p);
            break;
        }
        case DNA_CONV: {
            const dna_conv *k = &in->u.conv;
            if (lc->vec)
                REFUSE(lc, i, "a VEC layer has a CONV");
            act_box *src = act_find(lc, k->in_addr, k->in_addr + (int64_t)k->in_h * k->in_w * k->in_c, 0);
            if (!src)
                REFUSE(lc, i, "a CONV does not read exactly one LOAD's box");
            if (lc->dws >= 0 && (lc->dws != k->depthwise_saturate || lc->rounding != k->rounding))
                REFUSE(lc, i, "its CONVs differ in rounding or depthwise saturation");
            int load = src->insn;
            lc->dws = k->depthwise_saturate;
            lc->rounding = k->rounding;
            int64_t lo = k->out_addr, hi = lo + (int64_t)k->out_h * k->out_w * k->oc_n;
            if (act_add(lc, lo, hi, i, 1, load))
                return -1;
            lc->n_convs++;
            break;
        }
        case DNA_VEC: {
            /* each source exactly one LOAD's box, that LOAD its tile's box
             * of the input */
            const dna_vec *v = &in->u.vec;
            int64_t org[4], ext[4], so[4], se[4];
            if (!lc->vec)
                REFUSE(lc, i, "a conv2d layer has a VEC");
            const char *why = vec_tile_place(lc, v, org, ext);
            if (why)
                REFUSE(lc, i, why);
            if (lc->rounding >= 0 && lc->rounding != v->rounding)
                REFUSE(lc, i, "its VECs differ in rounding");
            lc->rounding = v->rounding;
            for (int q = 0; q < lc->n_x; q++) {
                vec_source_box(lc, q, org, ext, so, se);
                const int64_t nb = se[0] * se[1] * se[2] * se[3];
                act_box *src = act_find(lc, v->src[q].addr, v->src[q].addr + nb, 0);
                if (!src)
                    REFUSE(lc, i, "a VEC source is not exactly one LOAD's box");
                if (!dma_is_box(&prog->insns[src->insn].u.dma, lc->x[q], lc->in_dim[q], so, se))
                    REFUSE(lc, src->insn, "a VEC source's LOAD is not its tile's box of the input");
            }
            int64_t lo = v->dst.addr, hi = lo + ext[0] * ext[1] * ext[2] * ext[3];
            if (act_add(lc, lo, hi, i, 1, -1))
                return -1;
            lc->n_convs++;
            break;
        }
        case DNA_STORE: {
            const dna_dma *s = &in->u.dma;
            act_box *src = act_find(lc, s->sram, s->sram + (int64_t)s->rows * s->cols * s->run_bytes, 1);
            if (!src || src->stored)
                REFUSE(lc, i, "a STORE does not store exactly one CONV's or VEC's tile, once");
            if (lc->n_tile >= SIM_LAYER_TILES)
                REFUSE(lc, i, "too many tiles");
            tile_rec t;
            if (lc->vec) { /* the tile to its place (vec_tile_place, checked at the VEC) in the output */
                const char *why = vec_tile_place(lc, &prog->insns[src->insn].u.vec, t.org, t.ext);
                if (why)
                    MERA_BUG("plan_layers: a VEC tile's place was checked at the VEC");
                if (!dma_is_box(s, lc->y, lc->out_dim, t.org, t.ext))
                    REFUSE(lc, i, "a STORE is not its VEC's tile into its place in the output");
            } else {
                const dna_conv *k = &prog->insns[src->insn].u.conv;
                const char *why = tile_mismatch(lc, k, &prog->insns[src->load].u.dma, s, &t);
                if (why)
                    REFUSE(lc, src->insn, why);
            }
            t.insn = src->insn;
            src->stored = 1;
            if (GROW(lc->tile, lc->cap_tile, lc->n_tile))
                return -1;
            lc->tile[lc->n_tile++] = t;
            dram_event(lc, s, EV_STORE_Y, p);
            break;
        }
        default: REFUSE(lc, i, "it has instructions other than LOAD, CONV or VEC, STORE and NOP");
        }
    }
    if (lc->n_convs == 0 || lc->n_tile != lc->n_convs)
        REFUSE(lc, -1, "a CONV's or VEC's tile is not stored");
    if (!tiles_cover(lc))
        REFUSE(lc, -1, "its tiles do not cover the output once");
    /* the latest of its own positions where it may run */
    lc->at = -1;
    for (int p = lc->p_hi; p >= lc->p_lo && lc->at < 0; p--)
        if (prog->insns[seq[p]].layer == lc->layer && !wgt_load(&prog->insns[seq[p]]))
            lc->at = seq[p];
    if (lc->at < 0)
        REFUSE(lc, -1, "other layers' instructions among its own leave no point to run it whole");
    /* after the layer: what it left in ACT is overwritten before it is read */
    for (int p = last + 1; p < n_seq && lc->n_box > 0; p++) {
        if (p - last > SIM_LAYER_SCAN)
            REFUSE(lc, -1, "what it leaves in ACT is still unread and not overwritten far after it");
        mem_use u[MAX_USES];
        int n = sim_insn_uses(m, seq[p], 1, u);
        for (int q = 0; q < n; q++)
            if (u[q].space == SP_ACT && !u[q].write && act_meets(lc, u[q].lo, u[q].hi))
                REFUSE(lc, seq[p], "a later instruction reads ACT bytes it wrote");
        for (int q = 0; q < n; q++)
            if (u[q].space == SP_ACT && u[q].write && act_write(lc, u[q].lo, u[q].hi))
                return -1;
    }
    return 1;
}

/* The layer's kernel, packed from its tiles' weight blocks. *c NULL: two
 * blocks disagree on a channel (the layer runs as tiles). */
static mera_status layer_prep(dna_machine *m, const layer_check *lc, int at, conv_prep **out, mera_error *err)
{
    const dna_program *prog = m->prog;
    const dna_conv_geom *g = lc->geo;
    const int64_t kk = g->kh * g->kw * g->cg;
    *out = NULL;
    const dna_conv *k0 = &prog->insns[lc->tile[0].insn].u.conv;
    int one_block = 1; /* every tile reads one block of all the channels: pack from the image */
    for (int t = 0; t < lc->n_tile; t++) {
        const dna_conv *k = &prog->insns[lc->tile[t].insn].u.conv;
        one_block &= k->oc0 == 0 && k->oc_n == lc->o && k->wgt_dram == k0->wgt_dram;
    }
    int8_t *w = one_block ? NULL : malloc((size_t)(lc->o * kk));
    float *bias = g->has_bias && !one_block ? malloc((size_t)lc->o * sizeof *bias) : NULL;
    unsigned char *have = one_block ? NULL : calloc((size_t)lc->o, 1);
    mera_status st = MERA_OK;
    if (!one_block && (!w || !have || (g->has_bias && !bias))) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int t = 0; t < lc->n_tile && !one_block; t++) {
        const dna_conv *k = &prog->insns[lc->tile[t].insn].u.conv;
        const uint8_t *blk = prog->params_image + k->wgt_dram;
        int seen = 0; /* an earlier tile had the same block: the same bytes */
        for (int e = 0; e < t && !seen; e++) {
            const dna_conv *ke = &prog->insns[lc->tile[e].insn].u.conv;
            seen = ke->wgt_dram == k->wgt_dram && ke->oc0 == k->oc0 && ke->oc_n == k->oc_n;
        }
        for (int64_t oc = 0; oc < k->oc_n && !seen; oc++) {
            const uint8_t *wb = blk + oc * kk, *bb = blk + k->oc_n * kk + oc * 4;
            int64_t to = k->oc0 + oc;
            if (have[to] ? memcmp(w + to * kk, wb, (size_t)kk) || (bias && memcmp(bias + to, bb, 4)) : 0)
                goto done; /* blocks disagree */
            memcpy(w + to * kk, wb, (size_t)kk);
            if (bias)
                memcpy(bias + to, bb, 4);
            have[to] = 1;
        }
        if (!seen && m->opt.release_const_pages) /* copied: the block's pages can go now */
            sim_release_image(m, k->wgt_dram, k->wgt_dram + k->oc_n * kk + (g->has_bias ? 4 * k->oc_n : 0));
    }
    dna_conv key;
    memset(&key, 0, sizeof key);
    key.in_h = (int32_t)lc->h, key.in_w = (int32_t)lc->w, key.in_c = (int32_t)lc->c;
    key.out_h = (int32_t)lc->oh, key.out_w = (int32_t)lc->ow;
    key.oc0 = 0, key.oc_n = (int32_t)lc->o;
    key.depthwise_saturate = lc->dws;
    key.rounding = lc->rounding;
    key.wgt_dram = -1;
    conv_prep *c;
    if ((st = sim_conv_prep_new(m, at, lc->layer, &key, 1, &c, err)))
        goto done;
    const uint8_t *image_block = prog->params_image + k0->wgt_dram;
    if ((st = one_block ? sim_conv_prep_pack(m, c, at, (const int8_t *)image_block, image_block + lc->o * kk, err)
                        : sim_conv_prep_pack(m, c, at, w, bias, err)) ||
        !c->state) {
        sim_conv_prep_free(c); /* no state: a kernel that packs nothing runs as tiles */
        goto done;
    }
    *out = c;
done:
    free(w);
    free(bias);
    free(have);
    return st;
}

/* An elementwise VEC layer's kernel, prepared on the node's whole types
 * with the rounding of its VECs. */
static mera_status vec_layer_prep(dna_machine *m, const layer_check *lc, int at, vec_prep **out, mera_error *err)
{
    dna_vec key;
    memset(&key, 0, sizeof key);
    key.n_src = lc->n_x;
    key.rounding = lc->rounding;
    for (int q = 0; q <= lc->n_x; q++) {
        int32_t *ext = q < lc->n_x ? key.src[q].ext : key.dst.ext;
        const int rank = q < lc->n_x ? lc->in_rank[q] : lc->out_rank;
        const int64_t *dim = q < lc->n_x ? lc->in_dim[q] : lc->out_dim;
        for (int d = 0; d < 4; d++)
            ext[d] = d < rank ? (int32_t)dim[d + 4 - rank] : 1;
    }
    return sim_vec_prep_new(m, at, lc->layer, &key, out, err);
}

/* A conv2d layer's int8 weights (0 for any other layer). */
static int64_t weight_bytes(const dna_conv_geom *g)
{
    return g->o * g->kh * g->kw * g->cg;
}

mera_status sim_plan_layers(dna_machine *m, mera_error *err)
{
    const dna_program *prog = m->prog;
    const char *env = getenv("MERA_SIM_LAYERS");
    if ((env && strcmp(env, "0") == 0) || m->opt.pack_at_run || prog->n_layers <= 0)
        return MERA_OK;
    size_t ni = (size_t)(prog->n_insns > 0 ? prog->n_insns : 1), nl = (size_t)prog->n_layers;
    int *seq = malloc(ni * sizeof *seq), *seg_of = malloc(ni * sizeof *seg_of);
    int *first = malloc(nl * sizeof *first), *last = malloc(nl * sizeof *last), *count = calloc(nl, sizeof *count);
    int *total = calloc(nl, sizeof *total), *lrun = malloc(ni * sizeof *lrun), *whole = malloc(nl * sizeof *whole);
    layer_check lc;
    memset(&lc, 0, sizeof lc);
    int cap_runs = 0;
    mera_status st = MERA_OK;
    if (!seq || !seg_of || !first || !last || !count || !total || !lrun || !whole) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ni; i++)
        lrun[i] = -1;
    for (int i = 0; i < prog->n_insns; i++)
        total[prog->insns[i].layer]++;
    int n_seq = 0;
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        for (int k = 0; seg->kind == DNA_SEG_DNA && k < seg->count; k++) {
            int i = m->order[seg->first + k], l = prog->insns[i].layer;
            if (count[l]++ == 0)
                first[l] = n_seq;
            else if (seg_of[first[l]] != s)
                total[l] = -1; /* in two segments: runs as tiles */
            last[l] = n_seq;
            seg_of[n_seq] = s;
            seq[n_seq++] = i;
        }
    }
    /* Pass 1 decides. Pass 2 packs the layers that run whole, those with
     * the most weights first: a layer of several weight blocks packs from
     * a copy of its weights, and that copy costs least early, while little
     * else is resident (the deploy runtime's peak RSS). */
    for (int l = 0; l < prog->n_layers; l++) {
        whole[l] = 0;
        if (count[l] == 0 || count[l] != total[l])
            continue;
        lc.m = m;
        lc.layer = l;
        lc.n_box = lc.n_tile = lc.n_convs = 0;
        lc.why = NULL;
        int ok = layer_facts(&lc) ? layer_check_run(&lc, seq, n_seq, first[l], last[l]) : 0;
        if (ok < 0) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (ok)
            whole[l] = 1;
        else if (m->profile && (mera_graph_node(m->g, prog->layers[l].node)->op == MERA_OP_CONV2D ||
                                vec_elementwise(mera_graph_node(m->g, prog->layers[l].node)->op)))
            fprintf(stderr, "mera sim layers: L%d '%s' runs as tiles: %s (insn %d)\n", l,
                    mera_graph_node(m->g, prog->layers[l].node)->name, lc.why, lc.why_insn);
    }
    for (;;) {
        int l = -1;
        for (int j = 0; j < prog->n_layers; j++) /* the most weights first */
            if (whole[j] && (l < 0 || weight_bytes(&m->geos[j]) > weight_bytes(&m->geos[l])))
                l = j;
        if (l < 0)
            break;
        whole[l] = 0;
        void *tmp_grow;
        lc.layer = l;
        lc.n_box = lc.n_tile = lc.n_convs = 0;
        int again = layer_facts(&lc) ? layer_check_run(&lc, seq, n_seq, first[l], last[l]) : 0;
        if (again < 0) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (again == 0)
            MERA_BUG("plan_layers: a layer's second check disagrees with its first");
        conv_prep *c = NULL;
        vec_prep *v = NULL;
        if ((st = lc.vec ? vec_layer_prep(m, &lc, lc.at, &v, err) : layer_prep(m, &lc, lc.at, &c, err)))
            goto done;
        if (!c && !v)
            continue;
        if (GROW(m->lruns, cap_runs, m->n_lruns)) {
            sim_conv_prep_free(c);
            sim_vec_prep_free(v);
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            goto done;
        }
        layer_run *run = &m->lruns[m->n_lruns];
        *run = (layer_run){l, lc.at, c, v, lc.n_x, {0}, {0}, lc.y, lc.y_bytes, (double)prog->layers[l].macs};
        memcpy(run->x, lc.x, sizeof run->x);
        memcpy(run->x_bytes, lc.x_bytes, sizeof run->x_bytes);
        for (int p = first[l]; p <= last[l]; p++) /* its weight LOADs stay as they are (wgt_load) */
            if (prog->insns[seq[p]].layer == l && !wgt_load(&prog->insns[seq[p]]))
                lrun[seq[p]] = m->n_lruns;
        m->n_lruns++;
        for (int t = 0; t < lc.n_tile && c && m->opt.release_const_pages; t++) { /* packed: the blocks' pages can go */
            const conv_prep *tile = m->insn_prep[lc.tile[t].insn];
            sim_release_image(m, tile->key.wgt_dram, tile->key.wgt_dram + tile->w_bytes);
        }
    }
    if (m->n_lruns > 0) {
        m->insn_lrun = lrun;
        lrun = NULL;
    }
done:
    free(seq);
    free(seg_of);
    free(first);
    free(last);
    free(count);
    free(total);
    free(whole);
    free(lrun);
    free(lc.box);
    free(lc.tile);
    free(lc.x_written);
    free(lc.x_loaded);
    free(lc.y_stored);
    return st;
}

int dna_machine_layers_run_whole(const dna_machine *m)
{
    return m->n_lruns;
}
