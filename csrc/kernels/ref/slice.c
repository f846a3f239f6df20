/* slice: copy the indices begin, begin+step, ... < end of one axis. Bytes
 * move unchanged, so one kernel serves float and quantized tensors (qparams
 * are kept). */
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

REF_KERNEL(ref_slice)
{
    (void)err;
    const mera_type *x = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis");
    if (axis < 0)
        axis += x->rank;
    int64_t begin = mera_attr_int(a->node, "begin"), step = mera_attr_int(a->node, "step");
    int64_t kept = a->out_types[0]->shape[axis];
    size_t elem = mera_dtype_size(x->dtype);
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < axis; i++)
        outer *= x->shape[i];
    for (int i = (int)axis + 1; i < x->rank; i++)
        inner *= x->shape[i];
    size_t row_in = (size_t)(x->shape[axis] * inner) * elem, run = (size_t)inner * elem;
    const unsigned char *src = (const unsigned char *)a->in[0] + (size_t)(begin * inner) * elem;
    unsigned char *dst = a->out[0];
    if (step == 1) { /* one contiguous run per outer index */
        for (int64_t o = 0; o < outer; o++)
            memcpy(dst + (size_t)o * kept * run, src + (size_t)o * row_in, (size_t)kept * run);
        return MERA_OK;
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < kept; j++)
            memcpy(dst + ((size_t)o * kept + j) * run, src + (size_t)o * row_in + (size_t)(j * step) * run, run);
    return MERA_OK;
}
