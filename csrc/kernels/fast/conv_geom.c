/* The geometry of a conv2d or dense node (conv_geom.h). */
#include "kernels/fast/conv_geom.h"

#include <stdlib.h>

#include "kernels/ref/refutil.h"

void fast_conv_geometry(const mera_kernel_args *a, int dense, fast_conv_geom *p, int64_t ws[4])
{
    const mera_node *nd = a->node;
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *yt = a->out_types[0];
    if (dense) { /* x [rows, k] as an NHWC image of one row, w [nout, k] as OHWI 1x1 */
        int64_t k = wt->shape[1];
        p->n = p->h = p->oh = 1;
        p->w = p->ow = mera_type_numel(xt) / k;
        p->c = k;
        p->o = wt->shape[0];
        p->groups = 1;
        p->cg = p->c;
        p->og = p->o;
        p->kh = p->kw = p->sh = p->sw = p->dh = p->dw = 1;
        p->pt = p->pl = 0;
        p->x_nhwc = p->y_nhwc = 1;
        ws[0] = k; ws[1] = 1; ws[2] = ws[3] = 0;
        return;
    }
    int nhwc = ref_nhwc(nd);
    ref_dims4 x = ref_dims(xt, nhwc), y = ref_dims(yt, nhwc);
    const int64_t *st = ref_ints(nd, "strides"), *pad = ref_ints(nd, "padding"), *dil = ref_ints(nd, "dilation");
    const int64_t *s = wt->shape;
    if (ref_is(nd, "kernel_layout", "OHWI")) {        /* [O, KH, KW, I] */
        p->kh = s[1]; p->kw = s[2];
        ws[1] = 1; ws[3] = s[3]; ws[2] = s[2] * s[3]; ws[0] = s[1] * s[2] * s[3];
    } else if (ref_is(nd, "kernel_layout", "HWIO")) { /* [KH, KW, I, O] */
        p->kh = s[0]; p->kw = s[1];
        ws[0] = 1; ws[1] = s[3]; ws[3] = s[2] * s[3]; ws[2] = s[1] * s[2] * s[3];
    } else {                                          /* [O, I, KH, KW] */
        p->kh = s[2]; p->kw = s[3];
        ws[3] = 1; ws[2] = s[3]; ws[1] = s[2] * s[3]; ws[0] = s[1] * s[2] * s[3];
    }
    p->n = x.n; p->h = x.h; p->w = x.w; p->c = x.c;
    p->oh = y.h; p->ow = y.w; p->o = y.c;
    p->groups = mera_attr_int(nd, "groups");
    p->sh = st[0]; p->sw = st[1];
    p->dh = dil[0]; p->dw = dil[1];
    p->pt = pad[0]; p->pl = pad[1];
    p->x_nhwc = p->y_nhwc = nhwc;
    p->cg = p->c / p->groups;
    p->og = p->o / p->groups;
}

int64_t *fast_conv_segment_offsets(const fast_conv_geom *g, int merged, int64_t nseg, int64_t wp, int64_t cp)
{
    int64_t *off = malloc((size_t)(nseg > 0 ? nseg : 1) * sizeof *off);
    for (int64_t s = 0; off && s < nseg; s++) {
        int64_t i = merged ? s : s / g->kw, j = merged ? 0 : s % g->kw;
        off[s] = (i * g->dh * wp + j * g->dw) * cp;
    }
    return off;
}
