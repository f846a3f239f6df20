/* The geometry of a conv2d or dense node as both fast conv paths (int8:
 * qconv.h, float: fconv.h) read it off the node and its types. */
#ifndef MERA_KERNELS_FAST_CONV_GEOM_H
#define MERA_KERNELS_FAST_CONV_GEOM_H

#include <stdint.h>

#include "kernels/kernels.h"

/* dense: n = h = 1, w = rows, c = k, a 1x1 kernel */
typedef struct {
    int64_t n, h, w, c;     /* input */
    int64_t oh, ow, o;      /* output */
    int64_t groups, cg, og; /* groups, input and output channels per group */
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
    int x_nhwc, y_nhwc;     /* data layouts (dense: NHWC) */
} fast_conv_geom;

/* Fill g for the node of a (dense: a dense node, else conv2d); ws receives
 * the weight's element strides (output ch, input ch, kh, kw). */
void fast_conv_geometry(const mera_kernel_args *a, int dense, fast_conv_geom *g, int64_t ws[4]);

/* The offsets, in elements, of the nseg segments of an output pixel's
 * window in a padded input of row width wp and cp elements per pixel: one
 * segment per kernel row when merged, else one per tap. A malloc'd array,
 * or NULL when out of memory. */
int64_t *fast_conv_segment_offsets(const fast_conv_geom *g, int merged, int64_t nseg, int64_t wp, int64_t cp);

#endif
