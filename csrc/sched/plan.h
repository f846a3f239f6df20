/* Per-layer planning and emission, shared by sched.c (the pipeline),
 * conv.c (conv2d and dense), vec.c (vector layers) and move.c (copy
 * layers: reshape, flatten, transpose, slice). Internal to csrc/sched. */
#ifndef MERA_SCHED_PLAN_H
#define MERA_SCHED_PLAN_H

#include "kernels/split.h"
#include "sched/emit.h"
#include "sched/sched.h"

/* Fast mode splits a layer into at least this many tiles where it can, so
 * that loads and stores overlap compute (double buffering needs a next
 * tile to load while this one computes). */
#define SCHED_MIN_TILES 4

typedef enum { LAYER_CONV = 1, LAYER_VEC = 2, LAYER_COPY = 3 } sched_layer_kind;

/* Convolution geometry in NHWC terms; dense is H = 1, W = rows, C = K. */
typedef struct {
    int64_t h, w, c, oh, ow, oc;
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
    int64_t groups, cg, og, k; /* k = kh * kw * cg */
    int dense, depthwise, has_bias, saturate;
    int64_t in_elem; /* 1: every tensor here is int8/uint8 */
} sched_conv_geom;

typedef struct {
    int node;
    int on_host;
    sched_layer_kind kind;
    int64_t tiles; /* compute instructions (or copy chunks) */
    int64_t macs;
    /* conv */
    sched_conv_geom cg;
    int64_t rb, cb, ob;      /* output rows, columns and channels per tile */
    int bands_outer;         /* tile order: row bands outer (weights reloaded per band) */
    int64_t n_blocks;
    int64_t wblock;          /* bytes of one full weight block (ob channels) */
    int64_t *block_off;      /* image offset of each weight block */
    /* vec */
    mera_split_rule rule;
    int cut_dim;             /* output dimension cut, or -1 */
    int64_t units;           /* rows or channels per tile */
    int64_t const_off[DNA_MAX_SRC]; /* image offset of constant sources, else -1 */
    /* copy: data movement (reshape, flatten, transpose, slice; move.c) */
    int64_t chunk;           /* extent of the cut dimension per tile */
    int mv_cut;              /* staging-order position of the cut dimension */
    int mv_stage_src;        /* tiles staged in the input's order, else the output's */
    int mv_pad;              /* the permuting DMA's innermost SRAM stride padded */
    int mv_walk_stage;       /* the permuting DMA walks staging order (strided DRAM side) */
} sched_plan;

typedef struct {
    const mera_graph *g;
    const mera_platform *pf;
    const mera_sched_options *opt;
    int64_t act_bytes, wgt_bytes, acc_bytes;
    const void **value_data; /* per value: CONST/PARAM data */
    int64_t *value_dram;     /* per value: DRAM offset or -1 */
    int *layer_of;           /* per node: 1 + plan index, or 0 on host */
    sched_plan *plans;
    int n_plans;
} sched_ctx;

const void *sched_value_data(const sched_ctx *c, int v);

/* Decide where node n runs and, on the DNA, its tiling. reason gets the
 * report text. Errors only for allocation failures. */
mera_status sched_plan_layer(sched_ctx *c, int n, sched_plan *pl, char *reason, size_t reason_len,
                             mera_error *err);
/* Reserve the layer's part of the constant image from offset at; returns
 * the new end. */
int64_t sched_layout_image(sched_ctx *c, sched_plan *pl, int64_t at);
void sched_fill_image(const sched_ctx *c, const sched_plan *pl, uint8_t *image);
/* Append the layer's instructions, in sequential order, to seq. */
void sched_emit_layer(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq);

/* conv.c */
int sched_conv_geometry(const sched_ctx *c, const mera_node *node, sched_conv_geom *g);
int sched_conv_plan(const sched_ctx *c, sched_plan *pl, char *reason, size_t reason_len);
int64_t sched_conv_layout_image(sched_plan *pl, int64_t at);
void sched_conv_fill_image(const sched_ctx *c, const sched_plan *pl, uint8_t *image);
void sched_conv_emit(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq);
/* Candidate output-channel blocks, largest first; returns how many. */
int sched_conv_blocks(const sched_ctx *c, const sched_conv_geom *g, int64_t *out, int max);
int sched_conv_fits(const sched_ctx *c, const sched_conv_geom *g, int64_t rb, int64_t cb, int64_t ob);
void sched_conv_describe(const sched_plan *pl, char *buf, size_t n);
void sched_conv_set_shape(const sched_ctx *c, sched_plan *pl, int64_t rb, int64_t cb, int64_t ob, int bands_outer);

/* search.c: Slow mode */
void sched_search(sched_ctx *c);

/* vec.c */
int sched_vec_plan(const sched_ctx *c, sched_plan *pl, char *reason, size_t reason_len);
int64_t sched_vec_layout_image(const sched_ctx *c, sched_plan *pl, int64_t at);
/* For the Slow search: the cut dimension's extent, whether tiles of units
 * fit (double-buffered), and setting them. */
int64_t sched_vec_total(const sched_ctx *c, const sched_plan *pl);
int sched_vec_fits(const sched_ctx *c, const sched_plan *pl, int64_t units);
void sched_vec_set_units(const sched_ctx *c, sched_plan *pl, int64_t units);
void sched_vec_describe(const sched_plan *pl, char *buf, size_t n);
void sched_vec_fill_image(const sched_ctx *c, const sched_plan *pl, uint8_t *image);
void sched_vec_emit(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq);

/* move.c: data-movement layers */
int sched_move_plan(const sched_ctx *c, sched_plan *pl, char *reason, size_t reason_len);
void sched_move_describe(const sched_ctx *c, const sched_plan *pl, char *buf, size_t n);
void sched_move_emit(const sched_ctx *c, const sched_plan *pl, int layer, sched_list *seq);

static inline int64_t sched_align(int64_t v)
{
    return (v + 63) / 64 * 64;
}

#endif
