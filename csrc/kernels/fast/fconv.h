/* The shared machinery of the fast float32 conv2d and dense kernels: a
 * plan (geometry, packed weights, bias) built once per node, and one table
 * of inner loops per instruction set.
 *
 * Both ops are one computation. Dense is a 1x1 convolution over an image of
 * one row whose pixels are the rows of x. The output is a GEMM
 *
 *   y[pixel][o] = bias[o] + sum over k of window[pixel][k] * w[k][o]
 *
 * with no im2col: the window of an output pixel is read in place from an
 * NHWC copy of the input that holds the padding (or from the input itself,
 * when it is NHWC and unpadded) as a list of segments, one per tap (kh, kw)
 * of cg contiguous channels or, for ungrouped convs with dilation 1 along
 * W, one per kernel row holding KW*C contiguous floats. A register tile of
 * up to px_max pixels by nv vectors of output channels accumulates with
 * one broadcast activation and nv weight vectors per step; the weights are
 * packed per tile of output channels as [K][width], zero past og.
 *
 * Depthwise convs (one input channel per group) have their own loop over
 * channel vectors, taps and pixels, which reads an NHWC input in place and
 * leaves out the taps that fall into the padding; with a channel
 * multiplier (og > 1) or NCHW input it reads a padded NHWC copy holding
 * input channel o / og at position o.
 *
 * NCHW inputs are transposed into the padded copy; NCHW outputs are
 * computed in blocks of NHWC pixels and transposed out.
 *
 * This is float arithmetic, not the int8 contract: results differ from
 * ref_conv2d_f32 / ref_dense_f32 by the order of the additions (and FMA
 * rounding on the SIMD paths); tests/test_kernels_fast.py bounds the
 * difference by 1e-5 of each output's sum of |products|. A path gives the
 * same bits for the same node on every run, whichever thread runs it.
 * Everything here is internal to csrc/kernels/fast/. */
#ifndef MERA_KERNELS_FAST_FCONV_H
#define MERA_KERNELS_FAST_FCONV_H

#include <stdint.h>

#include "kernels/fast/conv_geom.h"
#include "kernels/kernels.h"

#define FCONV_MAX_NV 4 /* vectors of output channels per tile */
#define FCONV_MAX_PX 12 /* output pixels per tile */

typedef struct fconv_plan fconv_plan;

/* The inner loops of one instruction set. */
typedef struct {
    const char *name;
    int lanes;  /* output channels per vector */
    int nv_max; /* vectors per tile: a tile covers up to lanes * nv_max output channels */
    int px_max[FCONV_MAX_NV + 1]; /* pixels per tile for nv vectors */
    /* npx pixels by nv vectors: dst[m * ldd + j] for j < nvalid (at most
     * nv * lanes, more than (nv - 1) * lanes) gets bias[j] plus the dot
     * product of pixel m's window with column j of the packed weights w
     * ([nseg * seg_len][nv * lanes]), then max(0, .) when relu. px[m]
     * points at the first segment of pixel m; segment s starts seg_off[s]
     * floats later and holds seg_len floats. */
    void (*gemm_tile)(int npx, int nv, const float *const *px, const int64_t *seg_off, int nseg, int64_t seg_len,
                      const float *w, const float *bias, float *dst, int64_t ldd, int nvalid, int relu);
    /* Depthwise: npx output pixels, all p->g.o channels, into dst
     * ([npx][o]): bias plus, for each listed tap t, src[origin + m * step
     * + tap_off[t] + o] times p->wpack[tap_w[t] + o]; then max(0, .) when
     * p->relu. src's pixels hold p->cp floats. The caller lists only taps
     * that land inside src (origin may be negative: a window that starts
     * in the padding). */
    void (*dw_pixels)(const fconv_plan *p, const float *src, int64_t origin, int64_t step, int64_t npx,
                      const int64_t *tap_off, const int64_t *tap_w, int ntaps, float *dst);
    /* dst[j * dld + i] = src[i * sld + j] for i < rows, j < cols: NCHW
     * inputs and outputs to and from NHWC. */
    void (*transpose)(float *dst, int64_t dld, const float *src, int64_t sld, int64_t rows, int64_t cols);
} fconv_isa;

extern const fconv_isa fconv_isa_c;
/* The portable transpose, which the SIMD ones use for their edges. */
void fconv_transpose_c(float *dst, int64_t dld, const float *src, int64_t sld, int64_t rows, int64_t cols);
#if defined(__x86_64__)
extern const fconv_isa fconv_isa_avx2;
extern const fconv_isa fconv_isa_avx512;
#endif

struct fconv_plan {
    const fconv_isa *isa;
    fast_conv_geom g;          /* geometry */
    int relu;
    int depthwise;          /* cg == 1, groups > 1: the direct loop */
    /* the padded input: [n][hp][wp][cp] floats, or the input itself */
    int64_t hp, wp, cp;
    int direct;             /* the input serves as the padded input (depthwise: its padding implied) */
    int merged;             /* one segment per kernel row (else one per tap) */
    int64_t nseg, seg_len;  /* segments per window and floats per segment (depthwise: taps, 1) */
    int64_t *seg_off;       /* nseg offsets in floats (not for depthwise) */
    int64_t ogp;            /* og rounded up to isa->lanes */
    /* packed weights: per group ogp * K floats (K = nseg * seg_len) in
     * tiles of lanes * nv_max output channels, each [K][width];
     * depthwise: [nseg][cp], tap t of output channel o at t * cp + o */
    float *wpack;
    float *bias;            /* per output channel, zero without bias, padded to a whole tile */
};

/* Build the plan of a conv2d (dense = 0) or dense (dense = 1) node whose
 * weight (and bias, if any) data a->in[1], a->in[2] are present, as
 * float32 or, in the Interpreter's emulation of quantized nodes, as
 * quantized tensors that the plan dequantizes as the emulation does. */
mera_status fconv_plan_new(const mera_kernel_args *a, const fconv_isa *isa, int dense, fconv_plan **out,
                           mera_error *err);
void fconv_plan_free(fconv_plan *p);

/* prepare/run of the kernel ABI for one instruction set (conv_f32.c). */
mera_status fconv_prepare(const mera_kernel_args *a, const fconv_isa *isa, int dense, void **state,
                          mera_error *err);
mera_status fconv_kernel(const mera_kernel_args *a, const fconv_isa *isa, int dense, mera_error *err);

#endif
