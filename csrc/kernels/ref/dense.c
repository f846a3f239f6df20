/* dense: y = x @ W^T + b over the last axis of x (PyTorch Linear), float32
 * and the quantized::linear / linear_relu of the fbgemm engine. */
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

REF_KERNEL(ref_dense_f32)
{
    (void)err;
    const mera_type *wt = a->in_types[1];
    int64_t nout = wt->shape[0], k = wt->shape[1];
    int64_t rows = mera_type_numel(a->in_types[0]) / k;
    const float *x = a->in[0], *w = a->in[1], *b = a->n_inputs > 2 ? a->in[2] : NULL;
    float *y = a->out[0];
    int relu = ref_relu(a->node);
    for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < nout; j++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < k; i++)
                acc += x[m * k + i] * w[j * k + i];
            if (b)
                acc += b[j];
            if (relu && acc < 0.0f)
                acc = 0.0f;
            y[m * nout + j] = acc;
        }
    return MERA_OK;
}

/* PackedLinearWeight::apply_impl: the same fbgemm ReQuantizeOutput as
 * conv2d (TENSOR or OUT_CHANNEL granularity, float bias), on an exact int32
 * accumulator: fbgemm subtracts zx * column sums of W and, for asymmetric
 * weights, zw * the row sums PackAWithRowOffset computed. */
REF_KERNEL(ref_dense_q)
{
    const mera_type *xt = a->in_types[0], *wt = a->in_types[1], *yt = a->out_types[0];
    int64_t nout = wt->shape[0], k = wt->shape[1];
    int64_t rows = mera_type_numel(xt) / k;
    const float *b = a->n_inputs > 2 ? a->in[2] : NULL;
    requant_ch *rq = ref_alloc(nout, sizeof *rq);
    if (!rq)
        return ref_nomem(err, a->node);
    ref_requant_params(xt, wt, yt, b, nout, rq);
    const int8_t *w = a->in[1];
    int32_t zx = ref_zp(xt), zy = ref_zp(yt);
    int32_t lo = ref_relu(a->node) ? zy : q_lo(yt->dtype), hi = q_hi(yt->dtype);
    for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < nout; j++) {
            int32_t zw = mera_q_zero_point(&wt->q, wt->q.kind == MERA_QUANT_PER_AXIS ? j : 0);
            int64_t acc = 0;
            for (int64_t i = 0; i < k; i++)
                acc += (int64_t)(q_load(a->in[0], xt->dtype, m * k + i) - zx) * (w[j * k + i] - zw);
            int32_t acc32 = (int32_t)(uint32_t)(uint64_t)acc;
            q_store(a->out[0], yt->dtype, m * nout + j,
                    requant_acc(acc32, &rq[j], zy, lo, hi));
        }
    free(rq);
    return MERA_OK;
}
