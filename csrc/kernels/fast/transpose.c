/* Fast transpose: the element moves of ref_transpose (kernels/ref/shape.c),
 * for elements of any size, without its per-element division walk.
 *
 * The permutation is first reduced to the fewest axes that say the same
 * thing: axes of extent 1 are dropped, and output axes that are adjacent and
 * in order in the input as well are merged (an NHWC <-> NCHW transpose of one
 * image is a 2-D transpose [H*W][C] -> [C][H*W]; ShuffleNet's channel
 * shuffle [1, 2, C/2, H, W] -> [1, C/2, 2, H, W] is [2][C/2][H*W] ->
 * [C/2][2][H*W]). Then:
 *   - the innermost output axis contiguous in the input: whole runs copied
 *     with memcpy;
 *   - otherwise the two innermost output axes are a strided 2-D block,
 *     copied in tiles of TILE x TILE elements so reads and writes both stay
 *     in cache, with a loop per element size (1, 2, 4, 8 bytes);
 * the remaining outer axes are walked with an odometer. Blocks are split
 * across the worker pool; every output element is written once by one
 * thread, so the bytes never depend on the thread count. */
#include <string.h>

#include "kernels/fast/fast.h"
#include "kernels/ref/refutil.h"
#include "util/threadpool.h"

#define TILE 32

typedef struct {
    int rank;                     /* reduced rank, >= 1 */
    int64_t ext[MERA_MAX_RANK];   /* output extents, outermost first */
    int64_t xst[MERA_MAX_RANK];   /* input stride of each output axis, in elements */
    size_t es;                    /* element size, bytes */
    const unsigned char *x;
    unsigned char *y;
    int64_t inner;                /* elements per block: ext of the block's axes (1 or 2 of them) */
    int block_axes;               /* 1: a contiguous run; 2: a strided 2-D block */
} tr_job;

/* Reduce perm over the input shape to tr_job's axes. */
static void reduce_axes(const mera_type *xt, const int64_t *perm, tr_job *j)
{
    int64_t xs[MERA_MAX_RANK], s = 1;
    for (int i = xt->rank - 1; i >= 0; i--) {
        xs[i] = s;
        s *= xt->shape[i];
    }
    j->rank = 0;
    for (int k = 0; k < xt->rank; k++) {
        int p = (int)(perm[k] < 0 ? perm[k] + xt->rank : perm[k]);
        int64_t e = xt->shape[p];
        if (e == 1)
            continue;
        /* merge with the previous kept axis when it sits right outside this one in the input */
        if (j->rank > 0 && j->xst[j->rank - 1] == xs[p] * e) {
            j->ext[j->rank - 1] *= e;
            j->xst[j->rank - 1] = xs[p];
            continue;
        }
        j->ext[j->rank] = e;
        j->xst[j->rank] = xs[p];
        j->rank++;
    }
    if (j->rank == 0) { /* a single element */
        j->ext[0] = 1;
        j->xst[0] = 1;
        j->rank = 1;
    }
}

/* Copies the [n0][n1] block whose rows start s0 elements apart and whose
 * elements s1 apart in x, into y row-major, in tiles. */
#define TILE_COPY(T)                                                                         \
    static void block_##T(const T *x, T *y, int64_t n0, int64_t n1, int64_t s0, int64_t s1) \
    {                                                                                        \
        for (int64_t i0 = 0; i0 < n0; i0 += TILE) {                                          \
            int64_t i1 = i0 + TILE < n0 ? i0 + TILE : n0;                                   \
            for (int64_t j0 = 0; j0 < n1; j0 += TILE) {                                      \
                int64_t j1 = j0 + TILE < n1 ? j0 + TILE : n1;                               \
                for (int64_t i = i0; i < i1; i++) {                                          \
                    const T *xr = x + i * s0;                                                \
                    T *yr = y + i * n1;                                                      \
                    for (int64_t k = j0; k < j1; k++)                                        \
                        yr[k] = xr[k * s1];                                                  \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
TILE_COPY(uint8_t)
TILE_COPY(uint16_t)
TILE_COPY(uint32_t)
TILE_COPY(uint64_t)

static void block_any(const unsigned char *x, unsigned char *y, int64_t n0, int64_t n1, int64_t s0, int64_t s1,
                      size_t es)
{
    for (int64_t i = 0; i < n0; i++)
        for (int64_t k = 0; k < n1; k++)
            memcpy(y + (size_t)(i * n1 + k) * es, x + (size_t)(i * s0 + k * s1) * es, es);
}

/* Blocks [b0, b1) in output order: block b's outer index is b. */
static void run_blocks(void *ctx, int64_t b0, int64_t b1)
{
    const tr_job *j = ctx;
    const int outer = j->rank - j->block_axes;
    int64_t idx[MERA_MAX_RANK], off = 0, rem = b0;
    for (int k = outer - 1; k >= 0; k--) {
        idx[k] = rem % j->ext[k];
        rem /= j->ext[k];
        off += idx[k] * j->xst[k];
    }
    const size_t es = j->es;
    for (int64_t b = b0; b < b1; b++) {
        const unsigned char *x = j->x + (size_t)off * es;
        unsigned char *y = j->y + (size_t)(b * j->inner) * es;
        if (j->block_axes == 1) {
            memcpy(y, x, (size_t)j->inner * es);
        } else {
            int64_t n0 = j->ext[j->rank - 2], n1 = j->ext[j->rank - 1];
            int64_t s0 = j->xst[j->rank - 2], s1 = j->xst[j->rank - 1];
            switch (es) {
            case 1: block_uint8_t(x, y, n0, n1, s0, s1); break;
            case 2: block_uint16_t((const uint16_t *)x, (uint16_t *)y, n0, n1, s0, s1); break;
            case 4: block_uint32_t((const uint32_t *)x, (uint32_t *)y, n0, n1, s0, s1); break;
            case 8: block_uint64_t((const uint64_t *)x, (uint64_t *)y, n0, n1, s0, s1); break;
            default: block_any(x, y, n0, n1, s0, s1, es); break;
            }
        }
        /* the odometer: next outer index */
        for (int k = outer - 1; k >= 0; k--) {
            off += j->xst[k];
            if (++idx[k] < j->ext[k])
                break;
            off -= idx[k] * j->xst[k];
            idx[k] = 0;
        }
    }
}

mera_status fast_transpose(const mera_kernel_args *a, mera_error *err)
{
    (void)err;
    const mera_type *xt = a->in_types[0];
    tr_job j;
    memset(&j, 0, sizeof j);
    reduce_axes(xt, ref_ints(a->node, "axes"), &j);
    j.es = mera_dtype_size(xt->dtype);
    j.x = a->in[0];
    j.y = a->out[0];
    j.block_axes = j.xst[j.rank - 1] == 1 || j.rank == 1 ? 1 : 2;
    j.inner = j.ext[j.rank - 1] * (j.block_axes == 2 ? j.ext[j.rank - 2] : 1);
    int64_t blocks = 1;
    for (int k = 0; k < j.rank - j.block_axes; k++)
        blocks *= j.ext[k];
    /* about 64 KiB of output per work item */
    int64_t bytes = j.inner * (int64_t)j.es, grain = 1 + 65536 / (bytes + 1);
    mera_parallel_for(a->threads, blocks, grain, run_blocks, &j);
    return MERA_OK;
}
