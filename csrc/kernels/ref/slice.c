/* slice: copy the range [begin, end) of one axis. Bytes move unchanged, so
 * one kernel serves float and quantized tensors (qparams are kept). */
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"

REF_KERNEL(ref_slice)
{
    (void)err;
    const mera_type *x = a->in_types[0];
    int64_t axis = mera_attr_int(a->node, "axis");
    if (axis < 0)
        axis += x->rank;
    int64_t begin = mera_attr_int(a->node, "begin"), end = mera_attr_int(a->node, "end");
    size_t elem = mera_dtype_size(x->dtype);
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < axis; i++)
        outer *= x->shape[i];
    for (int i = (int)axis + 1; i < x->rank; i++)
        inner *= x->shape[i];
    size_t row_in = (size_t)(x->shape[axis] * inner) * elem, row_out = (size_t)((end - begin) * inner) * elem;
    const unsigned char *src = (const unsigned char *)a->in[0] + (size_t)(begin * inner) * elem;
    unsigned char *dst = a->out[0];
    for (int64_t o = 0; o < outer; o++)
        memcpy(dst + (size_t)o * row_out, src + (size_t)o * row_in, row_out);
    return MERA_OK;
}
