/* Small helpers shared by the reference kernels: reading attributes, the
 * geometry of NCHW/NHWC tensors, and the float view of quantization
 * parameters. Nothing numeric lives here; see qmath.h for that. */
#ifndef MERA_KERNELS_REF_REFUTIL_H
#define MERA_KERNELS_REF_REFUTIL_H

#include <stdlib.h>
#include <string.h>

#include "ir/ir.h"
#include "kernels/kernels.h"

/* The ints of an INTS attribute (the op table guarantees presence and
 * length for attributes with a default). */
static inline const int64_t *ref_ints(const mera_node *n, const char *key)
{
    const mera_attr *at = mera_node_attr(n, key);
    MERA_ASSERT(at && at->kind == MERA_ATTR_INTS);
    return at->ints;
}

static inline int ref_is(const mera_node *n, const char *key, const char *value)
{
    const char *s = mera_attr_string(n, key);
    return s && strcmp(s, value) == 0;
}

static inline int ref_relu(const mera_node *n)
{
    return ref_is(n, "activation", "relu");
}

/* A rank-4 activation seen through the op's layout attribute: logical
 * sizes N, C, H, W and the element strides of each logical axis. */
typedef struct {
    int64_t n, c, h, w;
    int64_t sn, sc, sh, sw;
} ref_dims4;

static inline ref_dims4 ref_dims(const mera_type *t, int nhwc)
{
    ref_dims4 d;
    const int64_t *s = t->shape;
    if (nhwc) {
        d.n = s[0]; d.h = s[1]; d.w = s[2]; d.c = s[3];
        d.sc = 1; d.sw = d.c; d.sh = d.w * d.c; d.sn = d.h * d.w * d.c;
    } else {
        d.n = s[0]; d.c = s[1]; d.h = s[2]; d.w = s[3];
        d.sw = 1; d.sh = d.w; d.sc = d.h * d.w; d.sn = d.c * d.h * d.w;
    }
    return d;
}

static inline int ref_nhwc(const mera_node *n)
{
    return ref_is(n, "layout", "NHWC");
}

/* Is the tensor channels-last in PyTorch? A model imported as NCHW holds
 * channels-last tensors there (every quantized conv output is), and several
 * quantized kernels compute differently for the two memory formats. The
 * node's torch_memory_format attribute says which, when the op has one and
 * it is not "auto"; otherwise the data layout decides (NHWC data is a
 * channels-last tensor in PyTorch). */
static inline int ref_torch_cl(const mera_node *n, int nhwc_data)
{
    const char *s = mera_attr_string(n, "torch_memory_format");
    if (s && strcmp(s, "channels_last") == 0)
        return 1;
    if (s && strcmp(s, "contiguous") == 0)
        return 0;
    return nhwc_data;
}

/* PyTorch's quantized kernels take their channels-last path whenever the
 * input is_contiguous(ChannelsLast), which a contiguous NCHW tensor also is
 * when C == 1 or H == W == 1. (For H == W == 1 and a larger output it then
 * writes NHWC order into an NCHW output, a PyTorch bug not reproduced here.) */
static inline int ref_torch_channels_last(const ref_dims4 *d, int torch_cl)
{
    return torch_cl || d->c == 1 || (d->h == 1 && d->w == 1);
}

/* The order in which PyTorch's memory holds a rank-4 tensor whose data is
 * laid out here as nhwc_data says: perm[k] is the axis of ours that is k-th
 * from the outside. Identity when the two agree (or the rank is not 4).
 * Returns 1 when it is not the identity. */
static inline int ref_torch_order(int rank, int nhwc_data, int torch_cl, int perm[MERA_MAX_RANK])
{
    for (int k = 0; k < rank; k++)
        perm[k] = k;
    if (rank != 4 || nhwc_data == torch_cl)
        return 0;
    /* our NCHW data, PyTorch NHWC memory: N, H, W, C = our 0, 2, 3, 1;
     * our NHWC data, PyTorch NCHW memory: N, C, H, W = our 0, 3, 1, 2 */
    static const int to_nhwc[4] = {0, 2, 3, 1}, to_nchw[4] = {0, 3, 1, 2};
    for (int k = 0; k < 4; k++)
        perm[k] = torch_cl ? to_nhwc[k] : to_nchw[k];
    return 1;
}

static inline int64_t ref_at(const ref_dims4 *d, int64_t n, int64_t c, int64_t h, int64_t w)
{
    return n * d->sn + c * d->sc + h * d->sh + w * d->sw;
}

/* Per-tensor quantization parameters as the kernels use them: PyTorch reads
 * q_scale() as a double and narrows it to float at the top of each kernel. */
static inline float ref_scale_f(const mera_type *t) { return (float)t->q.scale; }
static inline int32_t ref_zp(const mera_type *t) { return t->q.zero_point; }

static inline mera_status ref_nomem(mera_error *err, const mera_node *n)
{
    return mera_fail(err, MERA_ERR_NOMEM, "out of memory in the reference kernel of '%s'",
                     n && n->name ? n->name : "?");
}

/* The next index of a row-major walk over the first r axes of shape (the
 * last fastest), moving two operands' element offsets along their (broadcast)
 * strides sa and sb. */
static inline void ref_next_index2(int r, const int64_t *shape, int64_t *idx, const int64_t *sa, int64_t *oa,
                                   const int64_t *sb, int64_t *ob)
{
    for (int d = r - 1; d >= 0; d--) {
        *oa += sa[d];
        *ob += sb[d];
        if (++idx[d] < shape[d])
            return;
        *oa -= sa[d] * shape[d];
        *ob -= sb[d] * shape[d];
        idx[d] = 0;
    }
}

/* Zeroed scratch of count elements of size bytes; NULL on overflow or
 * failure (the caller reports MERA_ERR_NOMEM). */
static inline void *ref_alloc(int64_t count, size_t size)
{
    if (count < 0 || (uint64_t)count > SIZE_MAX / size)
        return NULL;
    return calloc(count ? (size_t)count : 1, size);
}

/* ---- TensorIterator rows (elementwise.c; also kernels/split.c) ---- */

/* ATen's quantized vector body takes this many elements per step. */
#define REF_TI_QVEC_STEP 64

/* Element strides of input t seen through the output's shape (numpy
 * broadcasting: align trailing axes, size-1 axes get stride 0). */
void ref_bcast_strides(const mera_type *t, const mera_type *out, int64_t *st);

/* TensorIterator's row length for an output walked in our order, with
 * inputs of broadcast strides sa and sb (sb NULL for one input). */
int64_t ref_ti_row_len(const mera_type *out, const int64_t *sa, const int64_t *sb);

/* The quantized leaky_relu, hardswish, hardsigmoid and sigmoid of node
 * a->node over the 256 input bytes (index: the byte as stored): vec[] as
 * ATen's vector body computes them, scalar[] as its scalar body does
 * (elementwise.c; kernels/fast reuses them). */
void ref_act_q_tables(const mera_kernel_args *a, uint8_t vec[256], uint8_t scalar[256]);

/* Quantized concat (shape.c): input i's bytes requantized to the output as
 * ATen's vector code does (vec[], the first *nvec channels of each pixel)
 * and as the rest does (rest[]). */
void ref_concat_q_tables(const mera_kernel_args *a, int i, uint8_t vec[256], uint8_t rest[256], int64_t *nvec);

/* ---- onnxruntime's float activations (math.c) ---- */

/* MLAS's logistic and tanh as onnxruntime computes them on x86-64 (MlasLogisticKernelFma3,
 * MlasComputeTanh's FMA3 kernel: Eigen's rational approximations, one FMA per step), bit for bit:
 * ONNX Sigmoid with float_form=onnxruntime and the gates of com.microsoft DynamicQuantizeLSTM. */
float ref_mlas_logistic(float x);
float ref_mlas_tanh(float x);

#endif
