/* trim_taps: kernel taps of a quantized conv2d that read only padding
 * removed (DNA targets only, after subpixel.c), with the same bytes.
 *
 * Along one axis (input size H, kernel K, dilation d, stride s, padding
 * pt before), output o reads input row o*s - pt + k*d through tap k. A tap
 * whose every row, over all OH outputs, lies outside [0, H) reads only
 * padding, which holds the input zero point: its terms (x - zx)*(w - zw) of
 * the exact accumulator (numerics.md §3) are all zero. Keeping the taps
 * k0..k1 from the first to the last one that reads data, the conv is the
 * one with the kernel cut to those taps and the padding and input rows of
 * the same reads: rows lo = k0*d - pt to hi = (OH-1)*s - pt + k1*d, i.e.
 * max(0, -lo) padding before, max(0, hi - H + 1) after, and the input sliced
 * to [max(0, lo), min(H, hi + 1)) where the conv would otherwise not read
 * the same rows. Each output's accumulator is the same integer sum without
 * zero terms, the weights keep their quantization and the bias, so the
 * requantization gives the same bytes. A single remaining tap gets
 * dilation 1.
 *
 * That is what DeepLabV3's ASPP needs: its 3x3 convs with dilation 12, 24
 * and 36 on a feature map smaller than the dilation are their centre tap, a
 * 1x1 conv the DNA runs, where the dilated window would not fit ACT.
 *
 * Left as they are: float convs (their sums would be added in another
 * order), convs on fbgemm's saturating depthwise path (its int16 pair sums
 * depend on which taps pair up; the rewritten conv says
 * depthwise_saturate="no", which is what every other conv computes), convs
 * whose weights are not constant, and convs where no tap reads data (the
 * output is the requantized bias; rare enough to leave to the kernel). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/split.h"
#include "passes/passes.h"

typedef struct {
    int64_t k0, k1;         /* taps kept */
    int64_t pad_lo, pad_hi; /* the new conv's padding */
    int64_t begin, end;     /* input rows the new conv reads from */
} axis_trim;

/* 1 when some tap of this axis reads only padding (t filled), else 0. */
static int trim_axis(int64_t H, int64_t K, int64_t d, int64_t s, int64_t pt, int64_t OH, axis_trim *t)
{
    t->k0 = t->k1 = -1;
    for (int64_t k = 0; k < K; k++) {
        int64_t first = k * d - pt;                         /* row of output 0 */
        int64_t m = first >= 0 ? 0 : (-first + s - 1) / s;  /* first output at a row >= 0 */
        if (m < OH && first + m * s < H) {
            if (t->k0 < 0)
                t->k0 = k;
            t->k1 = k;
        }
    }
    if (t->k0 < 0 || (t->k0 == 0 && t->k1 == K - 1))
        return 0;
    int64_t lo = t->k0 * d - pt, hi = (OH - 1) * s - pt + t->k1 * d, ext = (t->k1 - t->k0) * d + 1;
    t->pad_lo = lo < 0 ? -lo : 0;
    t->pad_hi = hi > H - 1 ? hi - (H - 1) : 0;
    t->begin = lo > 0 ? lo : 0;
    /* reading on to row H - 1 is fine where it adds no output */
    t->end = (H - t->begin + t->pad_lo + t->pad_hi - ext) / s + 1 == OH ? H : hi + 1;
    return 1;
}

typedef struct {
    int64_t o, i, h, w; /* strides of the weight's O, I, KH, KW axes */
    int64_t O, I, KH, KW;
} kernel_geom;

static kernel_geom geom_of(const mera_node *node, const int64_t *s)
{
    kernel_geom g;
    const char *kl = mera_attr_string(node, "kernel_layout");
    if (!strcmp(kl, "OHWI")) {
        g.O = s[0]; g.KH = s[1]; g.KW = s[2]; g.I = s[3];
        g.i = 1; g.w = g.I; g.h = g.KW * g.w; g.o = g.KH * g.h;
    } else if (!strcmp(kl, "HWIO")) {
        g.KH = s[0]; g.KW = s[1]; g.I = s[2]; g.O = s[3];
        g.o = 1; g.i = g.O; g.w = g.I * g.i; g.h = g.KW * g.w;
    } else {
        g.O = s[0]; g.I = s[1]; g.KH = s[2]; g.KW = s[3];
        g.w = 1; g.h = g.KW; g.i = g.KH * g.h; g.o = g.I * g.i;
    }
    return g;
}

/* Fills th, tw when the pass rewrites node. */
static int applies(const mera_graph *g, const mera_node *node, axis_trim *th, axis_trim *tw)
{
    if (node->op != MERA_OP_CONV2D)
        return 0;
    const mera_value *xv = mera_graph_value(g, node->inputs[0]), *wv = mera_graph_value(g, node->inputs[1]);
    const mera_type *x = &xv->type, *w = &wv->type, *y = &mera_graph_value(g, node->outputs[0])->type;
    if (!mera_dtype_is_quantized_int(x->dtype) || !wv->data || x->rank != 4 || w->rank != 4)
        return 0;
    if (node->n_inputs > 2 && node->inputs[2] >= 0 && !mera_graph_value(g, node->inputs[2])->data)
        return 0;
    if (mera_conv_depthwise_saturates(node, x, w))
        return 0;
    int nhwc = !strcmp(mera_attr_string(node, "layout"), "NHWC");
    int64_t H = x->shape[nhwc ? 1 : 2], W = x->shape[nhwc ? 2 : 3];
    int64_t OH = y->shape[nhwc ? 1 : 2], OW = y->shape[nhwc ? 2 : 3];
    kernel_geom kg = geom_of(node, w->shape);
    const int64_t *st = mera_node_attr(node, "strides")->ints, *pad = mera_node_attr(node, "padding")->ints,
                  *dil = mera_node_attr(node, "dilation")->ints;
    int a = trim_axis(H, kg.KH, dil[0], st[0], pad[0], OH, th);
    int b = trim_axis(W, kg.KW, dil[1], st[1], pad[1], OW, tw);
    if (th->k0 < 0 || tw->k0 < 0 || (!a && !b))
        return 0; /* no tap reads data, or every tap does */
    if (!a)
        *th = (axis_trim){0, kg.KH - 1, pad[0], pad[2], 0, H};
    if (!b)
        *tw = (axis_trim){0, kg.KW - 1, pad[1], pad[3], 0, W};
    return 1;
}

static int slice(mera_rewriter *rw, const mera_node *node, int v, int axis, int64_t begin, int64_t end,
                 int64_t size, const char *what)
{
    if (begin == 0 && end == size)
        return v;
    mera_attr at[3];
    memset(at, 0, sizeof at);
    const char *keys[3] = {"axis", "begin", "end"};
    int64_t vals[3] = {axis, begin, end};
    for (int i = 0; i < 3; i++) {
        at[i].key = keys[i];
        at[i].kind = MERA_ATTR_INT;
        at[i].i = vals[i];
    }
    char base[512];
    snprintf(base, sizeof base, "%.400s.%s", node->name, what);
    return mera_rewriter_add(rw, MERA_OP_SLICE, base, &v, 1, at, 3, node->source);
}

static int trim_one(mera_rewriter *rw, int n, const axis_trim *th, const axis_trim *tw)
{
    const mera_graph *g = rw->src;
    const mera_node *node = mera_graph_node(g, n);
    const mera_type *xt = &mera_graph_value(g, node->inputs[0])->type;
    const mera_value *wv = mera_graph_value(g, node->inputs[1]);
    kernel_geom kg = geom_of(node, wv->type.shape);
    int64_t KH = th->k1 - th->k0 + 1, KW = tw->k1 - tw->k0 + 1;

    /* the kernel's kept taps, in its own layout */
    mera_type kt = wv->type;
    const char *kl = mera_attr_string(node, "kernel_layout");
    int kh_axis = !strcmp(kl, "OHWI") ? 1 : !strcmp(kl, "HWIO") ? 0 : 2;
    kt.shape[kh_axis] = KH;
    kt.shape[kh_axis + 1] = KW;
    kernel_geom ng = geom_of(node, kt.shape);
    int8_t *k = malloc((size_t)(kg.O * kg.I * KH * KW));
    if (!k) {
        mera_fail(rw->err, MERA_ERR_NOMEM, "out of memory");
        return -1;
    }
    const int8_t *w = wv->data;
    for (int64_t o = 0; o < kg.O; o++)
        for (int64_t i = 0; i < kg.I; i++)
            for (int64_t h = 0; h < KH; h++)
                for (int64_t c = 0; c < KW; c++)
                    k[o * ng.o + i * ng.i + h * ng.h + c * ng.w] =
                        w[o * kg.o + i * kg.i + (h + th->k0) * kg.h + (c + tw->k0) * kg.w];
    char base[512];
    snprintf(base, sizeof base, "%.400s.trimmed", wv->name);
    const char *kn = mera_rewriter_fresh_name(rw, base);
    int kid = kn ? mera_graph_add_const(rw->dst, kn, &kt, k, 1, rw->err) : -1;
    free(k);
    if (kid < 0)
        return -1;

    int nhwc = !strcmp(mera_attr_string(node, "layout"), "NHWC");
    int x = mera_rewriter_value(rw, node->inputs[0]);
    int b = node->n_inputs > 2 ? mera_rewriter_value(rw, node->inputs[2]) : -1;
    if (x < 0 || (node->n_inputs > 2 && node->inputs[2] >= 0 && b < 0))
        return -1;
    int ah = nhwc ? 1 : 2;
    if ((x = slice(rw, node, x, ah, th->begin, th->end, xt->shape[ah], "rows")) < 0 ||
        (x = slice(rw, node, x, ah + 1, tw->begin, tw->end, xt->shape[ah + 1], "cols")) < 0)
        return -1;

    /* the node's attributes with the new padding, dilation, saturation */
    mera_attr at[32];
    MERA_ASSERT(node->n_attrs <= (int)MERA_ARRAY_LEN(at));
    const int64_t *dil = mera_node_attr(node, "dilation")->ints;
    int64_t padding[4] = {th->pad_lo, tw->pad_lo, th->pad_hi, tw->pad_hi};
    int64_t dilation[2] = {KH == 1 ? 1 : dil[0], KW == 1 ? 1 : dil[1]};
    for (int a = 0; a < node->n_attrs; a++) {
        at[a] = node->attrs[a];
        if (!strcmp(at[a].key, "padding"))
            at[a].ints = padding;
        else if (!strcmp(at[a].key, "dilation"))
            at[a].ints = dilation;
        else if (!strcmp(at[a].key, "depthwise_saturate"))
            at[a].s = "no";
    }
    int ins[3] = {x, kid, b}, outs[MERA_MAX_NODE_OUTPUTS];
    if (mera_graph_add_node(rw->dst, node->op, node->name, ins, node->n_inputs, at, node->n_attrs, node->source,
                            outs, MERA_MAX_NODE_OUTPUTS, rw->err) < 0)
        return -1;
    rw->map[node->outputs[0]] = outs[0];
    return 0;
}

mera_graph *mera_pass_trim_taps(const mera_graph *g, mera_error *err)
{
    mera_rewriter rw;
    if (mera_rewriter_init(&rw, g, err) || mera_rewriter_declare_params(&rw))
        return NULL;
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *node = mera_graph_node(g, n);
        axis_trim th, tw;
        if (applies(g, node, &th, &tw) ? trim_one(&rw, n, &th, &tw) : mera_rewriter_copy_node(&rw, n) < 0) {
            if (!err->code)
                mera_fail(err, MERA_ERR_INVALID, "trim_taps: node '%s' could not be rewritten", node->name);
            mera_rewriter_abort(&rw);
            return NULL;
        }
    }
    return mera_rewriter_finish(&rw);
}
