/* Plans of the fast float32 conv2d and dense kernels: geometry, where the
 * windows lie in the padded input, and weights packed for one instruction
 * set (fconv.h). Built once per node when its weights are constants, else
 * once per run. */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/fconv.h"
#include "kernels/ref/refutil.h"

#define FCONV_ALIGN 64

static int64_t round_up(int64_t v, int64_t m)
{
    return (v + m - 1) / m * m;
}

/* Zeroed, 64-byte aligned memory of count floats; NULL on overflow or
 * failure. */
static float *alloc_floats(int64_t count)
{
    if (count < 0 || (uint64_t)count > (SIZE_MAX - FCONV_ALIGN) / sizeof(float))
        return NULL;
    size_t bytes = ((size_t)count * sizeof(float) + FCONV_ALIGN) & ~(size_t)(FCONV_ALIGN - 1);
    float *p = aligned_alloc(FCONV_ALIGN, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void fconv_plan_free(fconv_plan *p)
{
    if (!p)
        return;
    free(p->seg_off);
    free(p->wpack);
    free(p->bias);
    free(p);
}

/* Geometry; returns the weight strides (output ch, input ch, kh, kw). */
static void geometry(fconv_plan *p, const mera_kernel_args *a, int dense, int64_t ws[4])
{
    p->relu = ref_relu(a->node);
    fast_conv_geometry(a, dense, &p->g, ws);
    p->depthwise = p->g.cg == 1 && p->g.groups > 1;
}

/* Where the window of an output pixel lies in the padded input, which
 * holds only the rows and columns some window reads. */
static mera_status layout_input(fconv_plan *p)
{
    int64_t rows = (p->g.oh - 1) * p->g.sh + (p->g.kh - 1) * p->g.dh + 1;
    int64_t cols = (p->g.ow - 1) * p->g.sw + (p->g.kw - 1) * p->g.dw + 1;
    p->hp = rows;
    p->wp = cols;
    if (p->depthwise) {
        p->cp = p->g.o; /* input channel o / og at position o */
        p->nseg = p->g.kh * p->g.kw;
        p->seg_len = 1;
    } else if (p->g.groups == 1 && (p->g.dw == 1 || p->g.kw == 1)) {
        /* one segment per kernel row: KW pixels of C channels lie side by side */
        p->merged = 1;
        p->cp = p->g.c;
        p->nseg = p->g.kh;
        p->seg_len = p->g.kw * p->g.c;
    } else {
        p->cp = p->g.c;
        p->nseg = p->g.kh * p->g.kw;
        p->seg_len = p->g.cg;
    }
    /* The input itself serves when it is laid out as the padded copy would
     * be: NHWC, no padding read; depthwise: NHWC without channel copies
     * (its loop leaves out taps in the padding). */
    if (p->depthwise)
        p->direct = p->g.x_nhwc && p->cp == p->g.c;
    else
        p->direct = p->g.x_nhwc && p->g.pt == 0 && p->g.pl == 0 && rows <= p->g.h && cols <= p->g.w && p->cp == p->g.c;
    if (p->direct) {
        p->hp = p->g.h;
        p->wp = p->g.w;
    }
    if (p->depthwise)
        return MERA_OK; /* its loop lists the taps of each window itself */
    p->seg_off = fast_conv_segment_offsets(&p->g, p->merged, p->nseg, p->wp, p->cp);
    return p->seg_off ? MERA_OK : MERA_ERR_NOMEM;
}

static float weight_at(const float *w, const int64_t ws[4], int64_t o, int64_t ci, int64_t i, int64_t j)
{
    return w[o * ws[0] + ci * ws[1] + i * ws[2] + j * ws[3]];
}

static mera_status pack_weights(fconv_plan *p, const float *w, const int64_t ws[4])
{
    const fconv_isa *isa = p->isa;
    if (p->depthwise) {
        int64_t taps = p->nseg;
        if (!(p->wpack = alloc_floats(taps * p->cp)))
            return MERA_ERR_NOMEM;
        for (int64_t o = 0; o < p->g.o; o++)
            for (int64_t t = 0; t < taps; t++)
                p->wpack[t * p->cp + o] = weight_at(w, ws, o, 0, t / p->g.kw, t % p->g.kw);
        return MERA_OK;
    }
    const int64_t T = (int64_t)isa->lanes * isa->nv_max, K = p->nseg * p->seg_len;
    p->ogp = round_up(p->g.og, isa->lanes);
    float *d = p->wpack = alloc_floats(p->g.groups * p->ogp * K);
    if (!d)
        return MERA_ERR_NOMEM;
    for (int64_t g = 0; g < p->g.groups; g++)
        for (int64_t t0 = 0; t0 < p->ogp; t0 += T) {
            int64_t width = p->ogp - t0 < T ? p->ogp - t0 : T;
            float *tile = d + (g * p->ogp + t0) * K; /* [K][width] */
            for (int64_t j = 0; j < width && t0 + j < p->g.og; j++) {
                int64_t o = g * p->g.og + t0 + j;
                for (int64_t s = 0; s < p->nseg; s++)
                    for (int64_t e = 0; e < p->seg_len; e++) {
                        /* merged: tap (s, e / cg), channel e % cg; else tap (s / kw, s % kw), channel e */
                        int64_t i = p->merged ? s : s / p->g.kw, jj = p->merged ? e / p->g.cg : s % p->g.kw;
                        int64_t ci = p->merged ? e % p->g.cg : e;
                        tile[(s * p->seg_len + e) * width + j] = weight_at(w, ws, o, ci, i, jj);
                    }
            }
        }
    return MERA_OK;
}

/* The bias, zero past the last channel for a whole tile's reads. */
static mera_status copy_bias(fconv_plan *p, const float *bias)
{
    int64_t T = (int64_t)p->isa->lanes * p->isa->nv_max;
    if (!(p->bias = alloc_floats(p->g.o + T)))
        return MERA_ERR_NOMEM;
    if (bias)
        memcpy(p->bias, bias, (size_t)p->g.o * sizeof(float));
    return MERA_OK;
}

/* Constant input i as float32: its data, or, for a quantized tensor (the
 * Interpreter's emulation of quantized nodes), a copy dequantized by the
 * kernel the emulation dequantizes it with, so the plan packs the very
 * floats the node would run on. *own is what to free. */
static mera_status float_input(const mera_kernel_args *a, int i, const float **out, float **own, mera_error *err)
{
    const mera_type *t = a->in_types[i];
    *own = NULL;
    *out = a->in[i];
    if (t->q.kind == MERA_QUANT_NONE) {
        MERA_ASSERT(t->dtype == MERA_DTYPE_FLOAT32);
        return MERA_OK;
    }
    mera_type ft = *t;
    ft.dtype = MERA_DTYPE_FLOAT32;
    memset(&ft.q, 0, sizeof ft.q);
    float *buf = alloc_floats(mera_type_numel(t));
    if (!buf)
        return ref_nomem(err, a->node);
    mera_kernel_args c;
    memset(&c, 0, sizeof c);
    c.node = a->node;
    c.n_inputs = c.n_outputs = 1;
    c.in_types[0] = t;
    c.in[0] = a->in[i];
    c.out_types[0] = &ft;
    c.out[0] = buf;
    mera_status st = mera_kernel_ref(MERA_OP_DEQUANTIZE, MERA_NUMERICS_QUANT)(&c, err);
    if (st) {
        free(buf);
        return st;
    }
    *out = *own = buf;
    return MERA_OK;
}

mera_status fconv_plan_new(const mera_kernel_args *a, const fconv_isa *isa, int dense, fconv_plan **out,
                           mera_error *err)
{
    *out = NULL;
    fconv_plan *p = calloc(1, sizeof *p);
    if (!p)
        return ref_nomem(err, a->node);
    p->isa = isa;
    int64_t ws[4];
    geometry(p, a, dense, ws);
    const int has_bias = a->n_inputs > 2 && a->in_types[2];
    const float *w = NULL, *b = NULL;
    float *own_w = NULL, *own_b = NULL;
    mera_status st = float_input(a, 1, &w, &own_w, err);
    if (!st && has_bias)
        st = float_input(a, 2, &b, &own_b, err);
    if (!st && (layout_input(p) || pack_weights(p, w, ws) || copy_bias(p, b)))
        st = ref_nomem(err, a->node);
    free(own_w);
    free(own_b);
    if (st) {
        fconv_plan_free(p);
        return st;
    }
    *out = p;
    return MERA_OK;
}
