/* The fast float32 conv2d (and, through the same driver, dense): the
 * padded NHWC input copy, the loops over pixel blocks, groups,
 * output-channel tiles and pixel tiles, NCHW in and out through NHWC
 * copies, and the kernel ABI entry points of each instruction set.
 * fconv.h says how the output is formed and how close it is to
 * ref_conv2d_f32 (tests/test_kernels_fast.py checks it). */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/fast.h"
#include "kernels/fast/fconv.h"
#include "kernels/ref/refutil.h"

/* Pixels per block: the windows of a block are read once per tile of
 * output channels, so a block's share of the input should stay in L2. */
#define BLOCK_BYTES (192 * 1024)
/* NCHW output: a block's NHWC results, before they are transposed. */
#define SCRATCH_BYTES (256 * 1024)

/* Copies input row ih of image n into row, a row of the padded input:
 * input column iw goes to column c0 + iw for c0 + iw < c1. */
static void copy_row(const fconv_plan *p, const float *x, int64_t n, int64_t ih, int64_t c0, int64_t c1, float *row)
{
    const int64_t c = p->g.c, cp = p->cp, cols = c1 - c0;
    if (p->g.x_nhwc) {
        const float *src = x + (n * p->g.h + ih) * p->g.w * c;
        if (cp == c) {
            memcpy(row + c0 * cp, src, (size_t)(cols * c) * sizeof(float));
            return;
        }
        for (int64_t col = 0; col < cols; col++) /* depthwise channel copies */
            for (int64_t o = 0; o < cp; o++)
                row[(c0 + col) * cp + o] = src[col * c + o / p->g.og];
        return;
    }
    const float *src = x + n * c * p->g.h * p->g.w + ih * p->g.w; /* channel ch at src + ch * h * w */
    if (cp == c) {
        p->isa->transpose(row + c0 * cp, cp, src, p->g.h * p->g.w, c, cols);
        return;
    }
    for (int64_t col = 0; col < cols; col++)
        for (int64_t o = 0; o < cp; o++)
            row[(c0 + col) * cp + o] = src[(o / p->g.og) * p->g.h * p->g.w + col];
}

/* The padded input: [n][hp][wp][cp] floats, zero where the padding is. */
static float *padded_input(const fconv_plan *p, const float *x)
{
    const int64_t cp = p->cp, row_len = p->wp * cp;
    float *buf = malloc((size_t)(p->g.n * p->hp * row_len) * sizeof(float));
    if (!buf)
        return NULL;
    /* columns [c0, c1) of a row inside the input hold input pixels */
    int64_t c0 = p->g.pl < p->wp ? p->g.pl : p->wp, c1 = p->g.pl + p->g.w < p->wp ? p->g.pl + p->g.w : p->wp;
    for (int64_t n = 0; n < p->g.n; n++)
        for (int64_t r = 0; r < p->hp; r++) {
            float *row = buf + (n * p->hp + r) * row_len;
            int64_t ih = r - p->g.pt;
            if (ih < 0 || ih >= p->g.h || c0 >= c1) {
                memset(row, 0, (size_t)row_len * sizeof(float));
                continue;
            }
            memset(row, 0, (size_t)(c0 * cp) * sizeof(float));
            memset(row + c1 * cp, 0, (size_t)((p->wp - c1) * cp) * sizeof(float));
            copy_row(p, x, n, ih, c0, c1, row);
        }
    return buf;
}

/* The offset of every output pixel's window (group 0) in the padded input. */
static int64_t *window_offsets(const fconv_plan *p)
{
    int64_t *off = malloc((size_t)(p->g.n * p->g.oh * p->g.ow) * sizeof *off + 1), *at = off;
    if (!off)
        return NULL;
    for (int64_t n = 0; n < p->g.n; n++)
        for (int64_t oy = 0; oy < p->g.oh; oy++)
            for (int64_t ox = 0; ox < p->g.ow; ox++)
                *at++ = ((n * p->hp + oy * p->g.sh) * p->wp + ox * p->g.sw) * p->cp;
    return off;
}

/* Stores the NHWC results of pixels [b0, b1), rows of o floats at src,
 * into the NCHW output y. */
static void store_nchw(const fconv_plan *p, const float *src, int64_t b0, int64_t b1, float *y)
{
    const int64_t hw = p->g.oh * p->g.ow;
    while (b0 < b1) {
        int64_t n = b0 / hw, end = (n + 1) * hw < b1 ? (n + 1) * hw : b1; /* within one image */
        p->isa->transpose(y + n * p->g.o * hw + (b0 - n * hw), hw, src, p->g.o, end - b0, p->g.o);
        src += (end - b0) * p->g.o;
        b0 = end;
    }
}

/* Blocks of pixels, each through every group and tile of output channels. */
static mera_status run_gemm(const fconv_plan *p, const float *xb, float *y)
{
    const fconv_isa *isa = p->isa;
    const int64_t P = p->g.n * p->g.oh * p->g.ow, T = (int64_t)isa->lanes * isa->nv_max, K = p->nseg * p->seg_len;
    /* a window spans K floats; a block of pixels shares most of them with
     * its neighbours, but K per pixel bounds what a block reads */
    int64_t block = BLOCK_BYTES / (int64_t)sizeof(float) / (K > 0 ? K : 1);
    block = block < 4 * FCONV_MAX_PX ? 4 * FCONV_MAX_PX : block;
    if (!p->g.y_nhwc) {
        int64_t fit = SCRATCH_BYTES / (int64_t)sizeof(float) / p->g.o;
        block = block < fit ? block : fit < FCONV_MAX_PX ? FCONV_MAX_PX : fit;
    }
    block = block < P ? block : P;
    int64_t *off = window_offsets(p);
    float *scratch = p->g.y_nhwc ? NULL : malloc((size_t)(block * p->g.o) * sizeof(float));
    if (!off || (!p->g.y_nhwc && !scratch)) {
        free(off);
        free(scratch);
        return MERA_ERR_NOMEM;
    }
    const float *px[FCONV_MAX_PX];
    for (int64_t b0 = 0; b0 < P; b0 += block) {
        int64_t b1 = P - b0 < block ? P : b0 + block;
        float *yb = p->g.y_nhwc ? y + b0 * p->g.o : scratch; /* pixel b0's output row */
        for (int64_t g = 0; g < p->g.groups; g++) {
            const float *xg = xb + g * p->g.cg;
            for (int64_t t0 = 0; t0 < p->ogp; t0 += T) {
                int64_t width = p->ogp - t0 < T ? p->ogp - t0 : T;
                int nvalid = (int)(p->g.og - t0 < width ? p->g.og - t0 : width);
                int nv = (int)(width / isa->lanes), mpx = isa->px_max[nv];
                const float *w = p->wpack + (g * p->ogp + t0) * K;
                int64_t o0 = g * p->g.og + t0;
                for (int64_t pix0 = b0; pix0 < b1; pix0 += mpx) {
                    int npx = b1 - pix0 < mpx ? (int)(b1 - pix0) : mpx;
                    for (int m = 0; m < npx; m++)
                        px[m] = xg + off[pix0 + m];
                    isa->gemm_tile(npx, nv, px, p->seg_off, (int)p->nseg, p->seg_len, w, p->bias + o0,
                                   yb + (pix0 - b0) * p->g.o + o0, p->g.o, nvalid, p->relu);
                }
            }
        }
        if (!p->g.y_nhwc)
            store_nchw(p, scratch, b0, b1, y);
    }
    free(off);
    free(scratch);
    return MERA_OK;
}

/* Lists the taps (i, j) of a window whose rows ih0 + i * dh and columns
 * iw0 + j * dw lie inside an H x W source of pixel stride C: their offsets
 * from the window's origin and their weight rows. Returns how many. */
static int list_taps(const fconv_plan *p, int64_t ih0, int64_t iw0, int64_t H, int64_t W, int64_t C,
                     int64_t *tap_off, int64_t *tap_w)
{
    int nt = 0;
    for (int64_t i = 0; i < p->g.kh; i++) {
        int64_t ih = ih0 + i * p->g.dh;
        if (ih < 0 || ih >= H)
            continue;
        for (int64_t j = 0; j < p->g.kw; j++) {
            int64_t iw = iw0 + j * p->g.dw;
            if (iw < 0 || iw >= W)
                continue;
            tap_off[nt] = (i * p->g.dh * W + j * p->g.dw) * C;
            tap_w[nt++] = (i * p->g.kw + j) * p->cp;
        }
    }
    return nt;
}

/* One output row at a time: the columns whose windows lie inside the
 * source along W in one call, each other column alone with its own taps.
 * NCHW output goes through a row of NHWC. */
static mera_status run_depthwise(const fconv_plan *p, const float *src, float *y)
{
    /* the source: the input with its padding implied, or the padded copy */
    const int64_t H = p->direct ? p->g.h : p->hp, W = p->direct ? p->g.w : p->wp, C = p->cp;
    const int64_t pt = p->direct ? p->g.pt : 0, pl = p->direct ? p->g.pl : 0;
    const int64_t hw = p->g.oh * p->g.ow, step = p->g.sw * C, span = (p->g.kw - 1) * p->g.dw;
    /* columns [in0, in1) read no padding: ox * sw >= pl, ox * sw - pl + span < W */
    int64_t in0 = (pl + p->g.sw - 1) / p->g.sw, in1 = W - span + pl > 0 ? (W - span + pl - 1) / p->g.sw + 1 : 0;
    in0 = in0 < p->g.ow ? in0 : p->g.ow;
    in1 = in1 < in0 ? in0 : in1 < p->g.ow ? in1 : p->g.ow;
    int64_t *tap_off = malloc((size_t)(2 * p->g.kh * p->g.kw) * sizeof *tap_off);
    float *row = p->g.y_nhwc ? NULL : malloc((size_t)(p->g.ow * p->g.o) * sizeof(float));
    if (!tap_off || (!p->g.y_nhwc && !row)) {
        free(tap_off);
        free(row);
        return MERA_ERR_NOMEM;
    }
    int64_t *tap_w = tap_off + p->g.kh * p->g.kw;
    for (int64_t n = 0; n < p->g.n; n++) {
        const float *img = src + n * H * W * C;
        for (int64_t oy = 0; oy < p->g.oh; oy++) {
            float *dst = p->g.y_nhwc ? y + (n * hw + oy * p->g.ow) * p->g.o : row;
            const int64_t ih0 = oy * p->g.sh - pt, base = ih0 * W * C;
            for (int64_t ox = 0; ox < p->g.ow; ox++) {
                if (ox == in0 && in1 > in0) { /* the inner columns at once */
                    int nt = list_taps(p, ih0, 0, H, W, C, tap_off, tap_w);
                    p->isa->dw_pixels(p, img, base + (in0 * p->g.sw - pl) * C, step, in1 - in0, tap_off, tap_w, nt,
                                      dst + in0 * p->g.o);
                    ox = in1 - 1;
                    continue;
                }
                const int64_t iw0 = ox * p->g.sw - pl;
                int nt = list_taps(p, ih0, iw0, H, W, C, tap_off, tap_w);
                p->isa->dw_pixels(p, img, base + iw0 * C, step, 1, tap_off, tap_w, nt, dst + ox * p->g.o);
            }
            if (!p->g.y_nhwc)
                p->isa->transpose(y + n * p->g.o * hw + oy * p->g.ow, hw, row, p->g.o, p->g.ow, p->g.o);
        }
    }
    free(tap_off);
    free(row);
    return MERA_OK;
}

static mera_status fconv_run(const fconv_plan *p, const mera_kernel_args *a, mera_error *err)
{
    if (p->g.n * p->g.oh * p->g.ow == 0 || p->g.o == 0)
        return MERA_OK;
    const float *xb = a->in[0];
    float *buf = NULL;
    mera_status st = MERA_OK;
    if (!p->direct && !(xb = buf = padded_input(p, a->in[0])))
        st = MERA_ERR_NOMEM;
    else
        st = p->depthwise ? run_depthwise(p, xb, a->out[0]) : run_gemm(p, xb, a->out[0]);
    free(buf);
    return st ? ref_nomem(err, a->node) : MERA_OK;
}

/* ---- the kernel ABI ------------------------------------------------------ */

/* Prepare needs the weight, and the bias when there is one. */
static int constants_present(const mera_kernel_args *a)
{
    return a->in[1] && (a->n_inputs < 3 || !a->in_types[2] || a->in[2]);
}

mera_status fconv_prepare(const mera_kernel_args *a, const fconv_isa *isa, int dense, void **state, mera_error *err)
{
    *state = NULL;
    if (!constants_present(a))
        return MERA_OK; /* run-time weights: planned per run */
    fconv_plan *p;
    mera_status st = fconv_plan_new(a, isa, dense, &p, err);
    *state = p;
    return st;
}

mera_status fconv_kernel(const mera_kernel_args *a, const fconv_isa *isa, int dense, mera_error *err)
{
    const fconv_plan *p = a->state;
    fconv_plan *own = NULL;
    if (!p) {
        mera_status st = fconv_plan_new(a, isa, dense, &own, err);
        if (st)
            return st;
        p = own;
    }
    MERA_ASSERT(p->isa == isa);
    mera_status st = fconv_run(p, a, err);
    fconv_plan_free(own);
    return st;
}

void fast_fconv_release(void *state)
{
    fconv_plan_free(state);
}

#define CONV_ENTRIES(suffix, isa)                                                                     \
    mera_status fast_conv2d_f32_prepare_##suffix(const mera_kernel_args *a, void **state, mera_error *err) \
    {                                                                                                 \
        return fconv_prepare(a, &(isa), 0, state, err);                                               \
    }                                                                                                 \
    mera_status fast_conv2d_f32_##suffix(const mera_kernel_args *a, mera_error *err)                 \
    {                                                                                                 \
        return fconv_kernel(a, &(isa), 0, err);                                                       \
    }

CONV_ENTRIES(c, fconv_isa_c)
#if defined(__x86_64__)
CONV_ENTRIES(avx2, fconv_isa_avx2)
CONV_ENTRIES(avx512, fconv_isa_avx512)
#endif
