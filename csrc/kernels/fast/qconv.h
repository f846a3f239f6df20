/* The shared machinery of the fast quantized conv2d and dense kernels: a
 * plan (geometry, packed weights, requantization constants) built once per
 * node, and one table of inner loops per instruction set.
 *
 * Both ops are one computation. Dense is a 1x1 convolution over an image of
 * one row whose pixels are the rows of x. For every output pixel and output
 * channel o the accumulator is
 *
 *   acc = sum x*w  -  zx*sum(w)  +  zx*zw*K  -  zw*sum(x)      (mod 2^32)
 *
 * over the K window positions of a padded copy of the input whose padding
 * holds zx. That is the exact expansion of sum((x - zx) * (w - zw)) in which
 * padded taps count as zero, which is what the reference computes; all terms
 * are taken in wrapping int32 arithmetic, which gives the reference's
 * int64-sum-then-wrap bits. int8 activations are stored with the sign bit
 * flipped (x + 128, zx + 128): the differences x - zx do not change, and
 * the dot product can use unsigned x bytes as vpdpbusd wants.
 *
 * The window of one output pixel is read as a list of segments: one per tap
 * (kh, kw), cg contiguous channels each, or, for ungrouped convs with
 * dilation 1 along W, one per kernel row (kh) holding KW*C contiguous
 * elements. Each segment is padded up to a multiple of the instruction
 * set's k-step; the weights of padded positions are zero.
 *
 * Depthwise convs (one input channel per group) have their own loop, over
 * channels: taps are paired in row-major order as fbgemm's depthwise kernel
 * pairs them, and where the reference takes fbgemm's depthwise fast path
 * (kernels/split.c: mera_conv_depthwise_saturates, which also honours the
 * node's depthwise_saturate attribute) each pair sum is saturated to int16
 * as it does there; elsewhere every sum is exact.
 *
 * Everything here is internal to csrc/kernels/fast/. */
#ifndef MERA_KERNELS_FAST_QCONV_H
#define MERA_KERNELS_FAST_QCONV_H

#include <stdint.h>

#include "kernels/fast/conv_geom.h"
#include "kernels/kernels.h"

#define QCONV_MAX_NV 4       /* vectors of output channels per tile */
#define QCONV_MAX_PX 12      /* output pixels per tile */
#define QCONV_ACC_STRIDE 64  /* int32 accumulators per tile pixel */
#define QCONV_SLACK 64       /* bytes readable past the end of a padded input */

typedef struct qconv_plan qconv_plan;

/* The inner loops of one instruction set. */
typedef struct qconv_isa_s {
    const char *name;
    int kstep;   /* elements of K consumed per multiply step: 4 (vpdpbusd), 2 (vpmaddwd), 1 */
    int lanes;   /* output channels per vector */
    int nv_max;  /* vectors per tile: a tile covers up to lanes * nv_max output channels */
    int xbytes;  /* element size of the padded input: 1 (uint8) or 2 (int16) */
    int px_max[QCONV_MAX_NV + 1]; /* pixels per tile for nv vectors */
    /* The raw dot products of npx pixels with nv vectors of packed weights:
     * acc[m * QCONV_ACC_STRIDE + j] for j < nv * lanes. px[m] points at the
     * first segment of pixel m; segment s starts seg_off[s] elements later
     * and holds nk elements (a multiple of kstep). */
    void (*gemm_tile)(int npx, int nv, const void *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                      const void *w, int32_t *acc);
    /* Optional (NULL: gemm_tile then requant): the same tile with the
     * accumulators started at off[o] and requantized in registers, for a
     * plan without weight zero points; pixel m's nvalid bytes of output
     * channels o0.. go to dst + m * dst_stride. */
    void (*gemm_tile_rq)(const qconv_plan *p, int npx, int nv, const void *const *px, const void *w, int64_t o0,
                         int64_t nvalid, uint8_t *dst, int64_t dst_stride);
    /* Add the channel offsets (off[o] - zw[o] * xsum) to n accumulators of
     * output channels o0.., requantize them and store n bytes at dst. */
    void (*requant)(const qconv_plan *p, int64_t o0, int64_t n, const int32_t *acc, int32_t xsum, uint8_t *dst);
    /* Depthwise: one output row, all channels, requantized into dst
     * ([ow][o] bytes). in points at the row's first window in the padded
     * input, whose pixels hold p->cp channels; tap t of output column ox
     * is at in + ox * sw * cp + seg_off[t]. */
    void (*dw_row)(const qconv_plan *p, const uint8_t *in, uint8_t *dst);
    /* Optional (NULL: never): whether this CPU (after
     * MERA_CPU_FEATURES_MASK) can run the instruction set's AVX512BW forms:
     * the byte-pair depthwise loop that dw_row takes for plans with dw_wide
     * weights, and gemm_tile_rq's packed stores for plans with bw set. */
    int (*bw_supported)(void);
    /* Optional (kchunk 0, NULL: never), a tile-matrix unit (AMX): K is cut
     * into chunks of kchunk bytes, and each output channel's packed weights
     * are padded with zeros to a whole number of chunks (plan kpad). The
     * driver copies the windows of up to QCONV_ROWS_PX pixels into rows of
     * kpad bytes (the segments one after the other, then zeros), or, where
     * the pixels' windows already lie at one stride in the padded input
     * with every chunk inside one segment, passes the input itself (nseg
     * segments at seg_off, astride bytes from a pixel to the next).
     * gemm_rows gives the raw dot products of npx pixels with nv vectors of
     * packed weights, acc[m * QCONV_ACC_STRIDE + j] for j < nv * lanes.
     * rows_begin sets the unit up on the calling thread and rows_end
     * releases it; the driver brackets every run of gemm_rows on a worker
     * with the pair, so no other code ever meets a configured unit. */
    int kchunk;
    /* The instruction set whose plan a conv too small for the tiles takes
     * (QCONV_ROWS_SMALL), or NULL. */
    const struct qconv_isa_s *narrow;
    void (*rows_begin)(void);
    void (*rows_end)(void);
    void (*gemm_rows)(int npx, int nv, const uint8_t *a, int64_t astride, const int64_t *seg_off, int nseg,
                      int64_t nk, int64_t kpad, const void *w, int32_t *acc);
    /* Copies the windows of npx pixels (px[m]) into rows of kpad bytes:
     * segment s of pixel m to rows + m * kpad + s * nk; the bytes past
     * nseg * nk of a row are left as they are. */
    void (*rows_gather)(int npx, const unsigned char *const *px, const int64_t *seg_off, int nseg, int64_t nk,
                        int64_t kpad, uint8_t *rows);
    /* Requantizes gemm_rows' accumulators of npx pixels and nv vectors of
     * output channels o0.. (minus zw[o] * xsum[m] where the plan has weight
     * zero points): pixel m's nvalid bytes go to dst + m * dst_stride. */
    void (*rows_requant)(const qconv_plan *p, int npx, int nv, const int32_t *acc, const int32_t *xsum, int64_t o0,
                         int64_t nvalid, uint8_t *dst, int64_t dst_stride);
} qconv_isa;

/* Pixels per gemm_rows call, at most, and the fewest pixels of a conv for
 * which the driver takes gemm_rows (fewer run on gemm_tile). A partly
 * filled A tile costs about what a full one does, while the AVX-512 loop's
 * time grows with the pixels: on a Xeon with AMX, 7 to 15 pixels (the
 * Simulator's tiles of a 7x7 layer) run 1.3-1.8x faster on AMX, 6 about
 * as fast (faster for 1x1 convs of many output channels), while 4 run
 * 10-30% faster on the AVX-512 loop, and 5 faster there where K is large
 * (3x3 over 256 channels and more: the layers where it matters most). */
#define QCONV_ROWS_PX 32
#define QCONV_ROWS_MIN_PX 6

/* Whether the groups of a conv (geometry g) are too small for the tiles at
 * any pixel count: K of at most 16 for up to 64 output channels, or of at
 * most 32 for up to 16 (MobileNetV2's 1x1 convs over 16 to 32 channels,
 * and the Simulator's tiles of 16 to 64 of their output channels), where a
 * tile's row of 64 bytes is mostly zeros and a block's fixed costs (the
 * tile stores, the requantization from memory) dominate. The AVX-512
 * kernel's plan (K not padded to 64, tiles of 64 channels) ran these
 * 10-30% faster; K = 32 for 32 channels or more, and K = 64, ran slower.
 * The plan of such a conv is then the narrow instruction set's. */
#define QCONV_ROWS_SMALL(g) (((g).kh * (g).kw * (g).cg <= 16 && (g).og <= 64) || \
                             ((g).kh * (g).kw * (g).cg <= 32 && (g).og <= 16))

/* The byte-pair depthwise layout (dw_wide): for fbgemm's saturating path
 * without weight zero points, weights as int8 pairs of taps in blocks of
 * 64 channels, [blocks][dw_wide_pairs][2][32][2]: pair i holds taps 2i
 * and 2i+1 (zero past the last tap; dw_wide_pairs is even), and its two
 * halves the 32 channels of vpunpcklbw and of vpunpckhbw of two 64-byte
 * input vectors (in 128-bit lane L, channels 16L..16L+7 and 16L+8..16L+15). */
#define QCONV_DW_WIDE_BLOCK 64

extern const qconv_isa qconv_isa_c;
#if defined(__x86_64__)
extern const qconv_isa qconv_isa_avx2;
extern const qconv_isa qconv_isa_avx512;
#if defined(__linux__)
extern const qconv_isa qconv_isa_amx;
#endif
#endif

struct qconv_plan {
    const qconv_isa *isa;
    fast_conv_geom g;          /* geometry */
    int x_int8, y_int8;        /* activation dtypes; int8 input is stored flipped */
    /* depthwise (cg == 1, groups > 1): one channel per output channel */
    int depthwise;
    int dw_sat;                /* fbgemm's depthwise fast path: int16 pair saturation */
    int64_t dw_pairs;          /* (taps + 1) / 2 */
    int8_t *dw_wide;           /* the byte-pair weights (above), or NULL */
    int64_t dw_wide_pairs;
    /* with dw_wide: off, and fma_bias, fma_rcp, mult, per 64-channel block
     * in the order the byte-pair loop's accumulators hold the channels
     * (entry 16j + 4L + e: channel 16L + 4j + e), [blocks][64] and
     * [blocks][3][64] */
    int32_t *dw_off;
    float *dw_rq;
    /* the padded input: [n][hp][wp][cp] elements of xbytes */
    int64_t hp, wp, cp, cgp;   /* rows, columns, channels per pixel, channels per group */
    int xbytes;                /* isa->xbytes; 1 (uint8) for depthwise */
    int merged;                /* one segment per kernel row (else one per tap) */
    int direct;                /* the input itself can serve as the padded input */
    int64_t nseg, seg_len, nk; /* segments per window, real and padded elements per segment */
    int64_t kpad;              /* packed elements per output channel: nseg * nk rounded up to isa->kchunk */
    int64_t *seg_off;          /* nseg offsets in elements */
    int64_t kreal;             /* K: window positions, real channels only */
    int64_t ogp;               /* og rounded up to isa->lanes */
    /* packed weights: per group ogp * kpad elements, tiles of
     * lanes * nv_max output channels, each [kpad / kstep][width][kstep]
     * (segment s from row s * nk / kstep, zeros past the last);
     * depthwise: int32 [dw_pairs][cp], two int16 taps per channel */
    void *wpack;
    /* per output channel (arrays padded to a whole tile) */
    int32_t *off;              /* zx * (zw * K - sum(w)) */
    int32_t *zw;               /* weight zero points; NULL when all are zero */
    float *mult, *bias, *rcp;  /* requant_ch of qmath.h, as arrays */
    /* The bias step of requant_acc as one fmadd(fma_bias, fma_rcp, y):
     * (bias, rcp) per tensor, (bias, 1) per channel, (0, 1) without bias;
     * fma(b, 1, y) rounds as y + b does and fma(0, 1, y) is y (or +0 for
     * -0, which converts to the same integer). */
    float *fma_bias, *fma_rcp;
    int has_bias, per_tensor;
    int32_t zx_raw;            /* input zero point as the type has it */
    int32_t zy, lo, hi;        /* output zero point and clamp bounds (relu: lo = zy) */
    int shared;                /* wpack and the per-channel arrays belong to another plan */
    int bw;                    /* isa->bw_supported() when the plan was made */
};

/* Build the plan of a conv2d (dense = 0) or dense (dense = 1) node whose
 * weight (and bias, if any) data a->in[1], a->in[2] are present. */
mera_status qconv_plan_new(const mera_kernel_args *a, const qconv_isa *isa, int dense, qconv_plan **out,
                           mera_error *err);
/* The same, sharing the packed weights and per-channel constants of
 * `like`, a plan of the same weights (and types) for another input shape;
 * falls back to packing when the two would lay the weights out differently. */
mera_status qconv_plan_new_like(const mera_kernel_args *a, const qconv_plan *like, int dense, qconv_plan **out,
                                mera_error *err);
void qconv_plan_free(qconv_plan *p);

/* Run a plan on a->in[0] into a->out[0]. */
mera_status qconv_run(const qconv_plan *p, const mera_kernel_args *a, mera_error *err);

/* prepare/run/release of the kernel ABI for one instruction set. */
mera_status qconv_prepare(const mera_kernel_args *a, const qconv_isa *isa, int dense, void **state,
                          mera_error *err);
mera_status qconv_kernel(const mera_kernel_args *a, const qconv_isa *isa, int dense, mera_error *err);

#endif
