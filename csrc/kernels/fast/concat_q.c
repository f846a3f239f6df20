/* Fast quantized concat: each input's bytes go through the two 256-byte
 * tables of ref_concat_q_tables (ATen's vector and remainder paths; with
 * AVX512_VBMI 64 bytes at a time), a plain copy where a table is the identity, rows of the outer axes split
 * across the worker pool. The reference walks the same tables element by
 * element with index arithmetic; the bytes are the same by construction. */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/ew.h"
#include "kernels/fast/fast.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "util/threadpool.h"

typedef struct {
    uint8_t vec[256], rest[256];
    int vec_id, rest_id; /* the table is the identity: copy */
    int64_t nvec, len;   /* channels on the vector path; length along the axis */
} concat_input;

/* Made once per node at prepare (the tables depend on the types only). */
typedef struct {
    int64_t axis, outer, inner, out_len;
    int n_in;
    int vbmi; /* tables through ew_lookup_avx512vbmi: probed at prepare, so a run reads no environment */
    concat_input in[];
} concat_plan;

typedef struct {
    const concat_plan *p;
    const void *const *x;
    uint8_t *y;
    int vbmi; /* tables through ew_lookup_avx512vbmi */
} concat_job;

static int is_identity(const uint8_t t[256])
{
    for (int b = 0; b < 256; b++)
        if (t[b] != b)
            return 0;
    return 1;
}

static void map_bytes(uint8_t *dst, const uint8_t *src, int64_t n, const uint8_t *tab, int identity, int vbmi)
{
    if (identity) {
        memcpy(dst, src, (size_t)n);
        return;
    }
#if defined(__x86_64__)
    if (vbmi) {
        ew_lookup_avx512vbmi(tab, src, dst, n);
        return;
    }
#else
    (void)vbmi;
#endif
    for (int64_t k = 0; k < n; k++)
        dst[k] = tab[src[k]];
}

/* Runs of at most this many bytes per outer row are mapped inline, input by input: a
 * function call per run costs more than the run (YOLOv5's space-to-depth concat: four
 * runs of 3 channels per pixel). */
#define CONCAT_SHORT_RUN 16

static void short_runs(const concat_job *j, int i, int64_t o0, int64_t o1, int64_t at)
{
    const concat_plan *p = j->p;
    const concat_input *c = &p->in[i];
    const int64_t nv = c->nvec * p->inner, n = c->len * p->inner, row = p->out_len * p->inner;
    const uint8_t *x = (const uint8_t *)j->x[i] + o0 * n;
    uint8_t *y = j->y + o0 * row + at;
    for (int64_t o = o0; o < o1; o++, x += n, y += row) {
        for (int64_t k = 0; k < nv; k++)
            y[k] = c->vec_id ? x[k] : c->vec[x[k]];
        for (int64_t k = nv; k < n; k++)
            y[k] = c->rest_id ? x[k] : c->rest[x[k]];
    }
}

static void concat_rows(void *ctx, int64_t o0, int64_t o1)
{
    const concat_job *j = ctx;
    const concat_plan *p = j->p;
    int64_t at = 0;
    int any_long = 0;
    for (int i = 0; i < p->n_in; i++) {
        int64_t n = p->in[i].len * p->inner;
        if (n <= CONCAT_SHORT_RUN)
            short_runs(j, i, o0, o1, at);
        else
            any_long = 1;
        at += n;
    }
    if (!any_long)
        return;
    for (int64_t o = o0; o < o1; o++) {
        uint8_t *y = j->y + o * p->out_len * p->inner;
        for (int i = 0; i < p->n_in; i++) {
            const concat_input *c = &p->in[i];
            const uint8_t *x = (const uint8_t *)j->x[i] + o * c->len * p->inner;
            int64_t nv = c->nvec * p->inner, n = c->len * p->inner;
            if (n > CONCAT_SHORT_RUN) {
                map_bytes(y, x, nv, c->vec, c->vec_id, j->vbmi);
                map_bytes(y + nv, x + nv, n - nv, c->rest, c->rest_id, j->vbmi);
            }
            y += n;
        }
    }
}

static concat_plan *plan_new(const mera_kernel_args *a)
{
    const mera_type *yt = a->out_types[0];
    concat_plan *p = malloc(sizeof *p + (size_t)a->n_inputs * sizeof p->in[0]);
    if (!p)
        return NULL;
    p->axis = mera_attr_int(a->node, "axis");
    if (p->axis < 0)
        p->axis += yt->rank;
    p->outer = p->inner = 1;
    for (int k = 0; k < yt->rank; k++) {
        if (k < p->axis)
            p->outer *= yt->shape[k];
        else if (k > p->axis)
            p->inner *= yt->shape[k];
    }
    p->out_len = yt->shape[p->axis];
    p->n_in = a->n_inputs;
    p->vbmi = mera_cpu_features_get()->avx512vbmi;
    for (int i = 0; i < a->n_inputs; i++) {
        concat_input *c = &p->in[i];
        ref_concat_q_tables(a, i, c->vec, c->rest, &c->nvec);
        c->vec_id = is_identity(c->vec);
        c->rest_id = is_identity(c->rest);
        c->len = a->in_types[i]->shape[p->axis];
    }
    return p;
}

mera_status fast_concat_q_prepare(const mera_kernel_args *a, void **state, mera_error *err)
{
    if (!(*state = plan_new(a)))
        return ref_nomem(err, a->node);
    return MERA_OK;
}

mera_status fast_concat_q(const mera_kernel_args *a, mera_error *err)
{
    if (!a->state) /* not prepared (a caller without prepare): the reference */
        return ref_concat_q(a, err);
    const concat_plan *p = a->state;
    concat_job j = {p, a->in, a->out[0], p->vbmi};
    mera_parallel_for(a->threads, p->outer, 1 + 32768 / (p->out_len * p->inner + 1), concat_rows, &j);
    return MERA_OK;
}
