/* subpixel: a quantized NHWC conv_transpose2d rewritten as ops the DNA runs
 * (DNA targets only, after layout.c), with the same bytes.
 *
 * With strides (sh, sw), the output pixels (oh, ow) with
 * (oh + pad_top) mod sh = r and (ow + pad_left) mod sw = c form phase
 * (r, c). Writing oh + pad_top = m*sh + r, they receive exactly the taps kh
 * with kh*dh = r (mod sh), from input row m - j(kh), j(kh) = (kh*dh - r)/sh
 * (likewise for columns). So phase (r, c) is an ordinary stride-1 conv2d
 * over the input, padded by J = max j on top (left), whose kernel holds tap
 * kh at row J - j(kh) and the weight zero point elsewhere (a zero term of
 * the exact sum); a phase no tap reaches is a 1x1 conv of zero-point taps,
 * i.e. the requantized bias. Each phase yields M x Q pixels, M =
 * max(H, ceil((OH + pad_top) / sh)) (Q likewise), padding the bottom
 * (right) as needed. The sh*sw phases are joined along the channels
 * (concat with the common output parameters: a byte copy), reshaped to
 * [N, M, Q, sh, sw, C], transposed to [N, M, sh, Q, sw, C], reshaped to
 * [N, M*sh, Q*sw, C], and the padding is sliced off.
 *
 * The accumulator of every output is the same exact integer sum as
 * numerics.md §3a's, the weights keep their quantization (per tensor, or per
 * output channel along axis 0 of the conv2d kernel) and the bias, so the
 * requantization gives the same bytes; depthwise_saturate="no" keeps
 * fbgemm's depthwise saturation away. Stride 1 is one phase: the conv2d of
 * the flipped kernel (a dilated one with zero-point taps between its taps).
 * Float and NCHW transposed convs, and kernels wider than 64 dilated taps,
 * are copied as they are (the host runs them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "passes/passes.h"

typedef struct {
    int taps;        /* kernel taps of this phase along the axis */
    int64_t pad;     /* J: padding before */
    int64_t k_of[64]; /* conv tap t -> transposed-conv tap, or -1 */
} phase_axis;

/* Phase r of one axis: stride s, dilation d, K taps. */
static void phase_of(int64_t r, int64_t s, int64_t d, int64_t K, phase_axis *p)
{
    int64_t J = -1;
    for (int64_t k = 0; k < K; k++)
        if (k * d >= r && (k * d - r) % s == 0 && (k * d - r) / s > J)
            J = (k * d - r) / s;
    if (J < 0) { /* no tap: one zero-point tap */
        p->taps = 1;
        p->pad = 0;
        p->k_of[0] = -1;
        return;
    }
    p->taps = (int)(J + 1);
    p->pad = J;
    for (int64_t t = 0; t <= J; t++)
        p->k_of[t] = -1;
    for (int64_t k = 0; k < K; k++)
        if (k * d >= r && (k * d - r) % s == 0)
            p->k_of[J - (k * d - r) / s] = k;
}

static mera_attr a_int(const char *key, int64_t v)
{
    mera_attr a;
    memset(&a, 0, sizeof a);
    a.key = key;
    a.kind = MERA_ATTR_INT;
    a.i = v;
    return a;
}

/* v is borrowed: it must live until the node is added */
static mera_attr a_ints(const char *key, const int64_t *v, int n)
{
    mera_attr a;
    memset(&a, 0, sizeof a);
    a.key = key;
    a.kind = MERA_ATTR_INTS;
    a.count = n;
    a.ints = v;
    return a;
}

static mera_attr a_str(const char *key, const char *v)
{
    mera_attr a;
    memset(&a, 0, sizeof a);
    a.key = key;
    a.kind = MERA_ATTR_STRING;
    a.s = v;
    return a;
}

static mera_attr a_float(const char *key, double v)
{
    mera_attr a;
    memset(&a, 0, sizeof a);
    a.key = key;
    a.kind = MERA_ATTR_FLOAT;
    a.f = v;
    return a;
}

static const int64_t *attr_ints(const mera_node *n, const char *key)
{
    const mera_attr *at = mera_node_attr(n, key);
    MERA_ASSERT(at && at->kind == MERA_ATTR_INTS);
    return at->ints;
}

/* Does the pass rewrite node? */
static int applies(const mera_graph *g, const mera_node *node)
{
    if (node->op != MERA_OP_CONV_TRANSPOSE2D || strcmp(mera_attr_string(node, "layout"), "NHWC"))
        return 0;
    const mera_type *x = &mera_graph_value(g, node->inputs[0])->type, *w = &mera_graph_value(g, node->inputs[1])->type;
    const mera_value *wv = mera_graph_value(g, node->inputs[1]);
    if (!mera_dtype_is_quantized_int(x->dtype) || !wv->data || w->rank != 4)
        return 0;
    if (node->n_inputs > 2 && node->inputs[2] >= 0 && !mera_graph_value(g, node->inputs[2])->data)
        return 0;
    const int64_t *st = attr_ints(node, "strides"), *dil = attr_ints(node, "dilation");
    /* phase kernels of at most 64 taps per axis, at most 64 phases */
    return (w->shape[2] - 1) * dil[0] + 1 <= 64 && (w->shape[3] - 1) * dil[1] + 1 <= 64 && st[0] * st[1] <= 64;
}

static int lower_one(mera_rewriter *rw, int n)
{
    const mera_graph *g = rw->src;
    const mera_node *node = mera_graph_node(g, n);
    const mera_type *xt = &mera_graph_value(g, node->inputs[0])->type;
    const mera_value *wv = mera_graph_value(g, node->inputs[1]);
    const mera_type *wt = &wv->type, *yt = &mera_graph_value(g, node->outputs[0])->type;
    const int64_t *st = attr_ints(node, "strides"), *pad = attr_ints(node, "padding");
    const int64_t *dil = attr_ints(node, "dilation");
    int64_t groups = mera_attr_int(node, "groups");
    int64_t N = xt->shape[0], H = xt->shape[1], W = xt->shape[2], C = xt->shape[3];
    int64_t OH = yt->shape[1], OW = yt->shape[2], O = yt->shape[3];
    int64_t cg = C / groups, og = wt->shape[1], KH = wt->shape[2], KW = wt->shape[3];
    int64_t M = (OH + pad[0] + st[0] - 1) / st[0], Q = (OW + pad[1] + st[1] - 1) / st[1];
    M = M > H ? M : H;
    Q = Q > W ? Q : W;
    int per_axis = wt->q.kind == MERA_QUANT_PER_AXIS;
    const int8_t *w = wv->data;
    int x = mera_rewriter_value(rw, node->inputs[0]);
    int b = node->n_inputs > 2 && node->inputs[2] >= 0 ? mera_rewriter_value(rw, node->inputs[2]) : -1;
    if (x < 0 || (node->n_inputs > 2 && node->inputs[2] >= 0 && b < 0))
        return -1;
    int phases[64], n_ph = 0;
    char base[512];
    for (int64_t r = 0; r < st[0]; r++)
        for (int64_t c = 0; c < st[1]; c++) {
            phase_axis ph, pw;
            phase_of(r, st[0], dil[0], KH, &ph);
            phase_of(c, st[1], dil[1], KW, &pw);
            /* the conv2d kernel [O, cg, TH, TW] (OIHW), per output channel along axis 0 */
            int64_t TH = ph.taps, TW = pw.taps, n_w = O * cg * TH * TW;
            int8_t *k = malloc((size_t)n_w);
            if (!k) {
                mera_fail(rw->err, MERA_ERR_NOMEM, "out of memory");
                return -1;
            }
            for (int64_t o = 0; o < O; o++) {
                int64_t gi = o / og, co = o % og;
                int8_t zw = (int8_t)mera_q_zero_point(&wt->q, per_axis ? co : 0);
                for (int64_t ci = 0; ci < cg; ci++)
                    for (int64_t th = 0; th < TH; th++)
                        for (int64_t tw = 0; tw < TW; tw++) {
                            int64_t kh = ph.k_of[th], kw = pw.k_of[tw];
                            k[((o * cg + ci) * TH + th) * TW + tw] =
                                kh < 0 || kw < 0 ? zw : w[(((gi * cg + ci) * og + co) * KH + kh) * KW + kw];
                        }
            }
            mera_type kt = *wt;
            kt.rank = 4;
            kt.layout = MERA_LAYOUT_OIHW;
            kt.shape[0] = O;
            kt.shape[1] = cg;
            kt.shape[2] = TH;
            kt.shape[3] = TW;
            if (per_axis)
                kt.q.axis = 0;
            snprintf(base, sizeof base, "%.400s.phase%lld_%lld.weight", node->name, (long long)r, (long long)c);
            const char *kn = mera_rewriter_fresh_name(rw, base);
            int kid = kn ? mera_graph_add_const(rw->dst, kn, &kt, k, 1, rw->err) : -1;
            free(k);
            if (kid < 0)
                return -1;
            int64_t padding[4] = {ph.pad, pw.pad, M - H, Q - W}, ones[2] = {1, 1};
            mera_attr at[] = {
                a_ints("strides", ones, 2), a_ints("padding", padding, 4), a_ints("dilation", ones, 2),
                a_int("groups", groups), a_str("layout", "NHWC"), a_str("kernel_layout", "OIHW"),
                a_str("depthwise_saturate", "no"), a_float("out_scale", yt->q.scale),
                a_int("out_zero_point", yt->q.zero_point), a_str("out_dtype", mera_dtype_name(yt->dtype)),
            };
            int ins[3] = {x, kid, b};
            snprintf(base, sizeof base, "%.400s.phase%lld_%lld", node->name, (long long)r, (long long)c);
            if ((phases[n_ph++] = mera_rewriter_add(rw, MERA_OP_CONV2D, base, ins, b >= 0 ? 3 : 2, at,
                                                    (int)MERA_ARRAY_LEN(at), node->source)) < 0)
                return -1;
        }
    int v = phases[0];
    if (n_ph > 1) {
        mera_attr at[] = {a_int("axis", 3), a_float("out_scale", yt->q.scale), a_int("out_zero_point", yt->q.zero_point),
                          a_str("out_dtype", mera_dtype_name(yt->dtype))};
        snprintf(base, sizeof base, "%.400s.phases", node->name);
        if ((v = mera_rewriter_add(rw, MERA_OP_CONCAT, base, phases, n_ph, at, (int)MERA_ARRAY_LEN(at),
                                   node->source)) < 0)
            return -1;
    }
    int64_t s6[6] = {N, M, Q, st[0], st[1], O}, perm[6] = {0, 1, 3, 2, 4, 5}, s4[4] = {N, M * st[0], Q * st[1], O};
    mera_attr r6 = a_ints("shape", s6, 6), tp = a_ints("axes", perm, 6), r4 = a_ints("shape", s4, 4);
    snprintf(base, sizeof base, "%.400s.interleave", node->name);
    if ((v = mera_rewriter_add(rw, MERA_OP_RESHAPE, base, &v, 1, &r6, 1, node->source)) < 0 ||
        (v = mera_rewriter_add(rw, MERA_OP_TRANSPOSE, base, &v, 1, &tp, 1, node->source)) < 0 ||
        (v = mera_rewriter_add(rw, MERA_OP_RESHAPE, base, &v, 1, &r4, 1, node->source)) < 0)
        return -1;
    int64_t crop[2][3] = {{1, pad[0], pad[0] + OH}, {2, pad[1], pad[1] + OW}};
    for (int i = 0; i < 2; i++) {
        if (crop[i][1] == 0 && crop[i][2] == s4[1 + i])
            continue;
        mera_attr at[] = {a_int("axis", crop[i][0]), a_int("begin", crop[i][1]), a_int("end", crop[i][2])};
        snprintf(base, sizeof base, "%.400s.crop", node->name);
        if ((v = mera_rewriter_add(rw, MERA_OP_SLICE, base, &v, 1, at, (int)MERA_ARRAY_LEN(at), node->source)) < 0)
            return -1;
    }
    rw->map[node->outputs[0]] = v;
    return 0;
}

mera_graph *mera_pass_subpixel(const mera_graph *g, mera_error *err)
{
    mera_rewriter rw;
    if (mera_rewriter_init(&rw, g, err) || mera_rewriter_declare_params(&rw))
        return NULL;
    for (int n = 0; n < mera_graph_num_nodes(g); n++) {
        const mera_node *node = mera_graph_node(g, n);
        if (applies(g, node) ? lower_one(&rw, n) : mera_rewriter_copy_node(&rw, n) < 0) {
            if (!err->code)
                mera_fail(err, MERA_ERR_INVALID, "subpixel: node '%s' could not be rewritten", node->name);
            mera_rewriter_abort(&rw);
            return NULL;
        }
    }
    return mera_rewriter_finish(&rw);
}
