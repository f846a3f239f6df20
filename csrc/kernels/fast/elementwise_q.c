/* Fast quantized add, mul, leaky_relu / hardswish / hardsigmoid / sigmoid,
 * quantize, dequantize and requantize: byte for byte the reference kernels
 * (ref/elementwise.c, ref/quant.c), without their index arithmetic per
 * element, with SIMD bodies (ew.h) and split across the worker pool.
 *
 * The common cases run here: operands of the output's shape, per-channel
 * operands broadcast over the output's innermost axis, scalars, and (for
 * the ops that tell ATen's vector and scalar bodies apart) a walk in
 * PyTorch's memory order that is ours. Everything else goes to the
 * reference kernel. As in the reference, an element takes ATen's vector
 * body when its place in TensorIterator's row (ref_ti_row_len) is before
 * the row's last n % 64 elements, the scalar body otherwise. */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/ew.h"
#include "kernels/fast/fast.h"
#include "kernels/ref/qmath.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "util/threadpool.h"

/* Elements per range of the worker pool: below this, a split costs more
 * than it saves. */
#define EW_MIN_CHUNK 32768

/* ---- the walk --------------------------------------------------------- */

typedef enum { OPND_FULL, OPND_INNER, OPND_SCALAR } operand_kind;

typedef struct {
    int64_t n;       /* output elements */
    int64_t row;     /* TensorIterator's row length */
    int64_t vec_len; /* elements of each row on the vector body */
    int64_t inner;   /* the output's innermost size: the period of OPND_INNER operands */
    int n_opnd;
    operand_kind kind[2];
    /* PyTorch walks another memory order than our data's (a channels-last
     * tensor imported NCHW): every element first takes the vector body,
     * then the elements at the tails of PyTorch's rows are redone with the
     * scalar body (walk_parallel). Operands are then FULL or SCALAR only. */
    int permuted;
    int perm[MERA_MAX_RANK];         /* our axis that is k-th in PyTorch's memory order */
    int64_t pshape[MERA_MAX_RANK];   /* the output's shape in that order */
    int64_t ostride[MERA_MAX_RANK];  /* our output's strides */
    int64_t trow, tvec;              /* PyTorch's row length and its vector part */
} ew_walk;

/* What operand t is, seen through the output ot; -1 when none of the kinds. */
static int operand_kind_of(const mera_type *t, const mera_type *ot, const int64_t *st)
{
    int r = ot->rank, full = 1, inner = r > 0, scalar = 1;
    int64_t cs = 1;
    for (int k = r - 1; k >= 0; k--) {
        if (ot->shape[k] != 1) {
            full &= st[k] == cs;
            scalar &= st[k] == 0;
            inner &= k == r - 1 ? st[k] == 1 : st[k] == 0;
        }
        cs *= ot->shape[k];
    }
    (void)t;
    return full ? OPND_FULL : scalar ? OPND_SCALAR : inner ? OPND_INNER : -1;
}

/* The walk of a unary (b NULL) or binary op; 0 when it is not a common case. */
static int walk_setup(const mera_kernel_args *a, const mera_type *b, ew_walk *w)
{
    const mera_type *ot = a->out_types[0];
    int data_nhwc = ot->rank == 4 && ot->layout == MERA_LAYOUT_NHWC;
    w->permuted = ref_torch_order(ot->rank, data_nhwc, ref_torch_cl(a->node, data_nhwc), w->perm);
    int64_t st[2][MERA_MAX_RANK];
    const mera_type *in[2] = {a->in_types[0], b};
    w->n_opnd = b ? 2 : 1;
    for (int k = 0; k < w->n_opnd; k++) {
        ref_bcast_strides(in[k], ot, st[k]);
        int kind = operand_kind_of(in[k], ot, st[k]);
        if (kind < 0 || (w->permuted && kind == OPND_INNER))
            return 0; /* the reference walks it */
        w->kind[k] = (operand_kind)kind;
    }
    w->n = mera_type_numel(ot);
    if (w->permuted) {
        /* PyTorch's view: the output (and every FULL operand) contiguous in its
         * order, SCALAR operands broadcast, as the reference's ti_setup */
        mera_type po = *ot, ps[2];
        int64_t sp[2][MERA_MAX_RANK], s = 1;
        for (int k = 0; k < ot->rank; k++)
            po.shape[k] = w->pshape[k] = ot->shape[w->perm[k]];
        for (int k = 0; k < w->n_opnd; k++) {
            ps[k] = po;
            if (w->kind[k] == OPND_SCALAR)
                for (int d = 0; d < po.rank; d++)
                    ps[k].shape[d] = 1;
            ref_bcast_strides(&ps[k], &po, sp[k]);
        }
        w->trow = ref_ti_row_len(&po, sp[0], w->n_opnd > 1 ? sp[1] : NULL);
        if (w->trow < 1)
            return 0;
        w->tvec = w->trow - w->trow % REF_TI_QVEC_STEP;
        for (int d = ot->rank - 1; d >= 0; d--) {
            w->ostride[d] = s;
            s *= ot->shape[d];
        }
        w->row = w->vec_len = w->n; /* the first pass: the vector body everywhere */
        w->inner = ot->rank ? ot->shape[ot->rank - 1] : 1;
        return w->inner >= 1;
    }
    w->row = ref_ti_row_len(ot, st[0], b ? st[1] : NULL);
    w->vec_len = w->row - w->row % REF_TI_QVEC_STEP;
    w->inner = ot->rank ? ot->shape[ot->rank - 1] : 1;
    if (w->inner < 1 || w->row < 1)
        return 0;
    return 1;
}

/* Calls span(ctx, i, len, vector, operand offsets) for the pieces of
 * [i0, i1) within which every operand advances contiguously (or not at
 * all) and one body applies. */
typedef void (*span_fn)(const void *ctx, int64_t i, int64_t len, int vector, const int64_t *off);

static void walk_range(const ew_walk *w, int64_t i0, int64_t i1, span_fn span, const void *ctx)
{
    int any_inner = 0;
    for (int k = 0; k < w->n_opnd; k++)
        any_inner |= w->kind[k] == OPND_INNER;
    int64_t i = i0;
    while (i < i1) {
        int64_t r0 = i / w->row * w->row, vend = r0 + w->vec_len, rend = r0 + w->row;
        int vector = i < vend;
        int64_t end = vector ? vend : rend;
        end = end < i1 ? end : i1;
        while (i < end) {
            int64_t c = i % w->inner, len = end - i, off[2];
            if (any_inner && len > w->inner - c)
                len = w->inner - c;
            for (int k = 0; k < w->n_opnd; k++)
                off[k] = w->kind[k] == OPND_FULL ? i : w->kind[k] == OPND_INNER ? c : 0;
            span(ctx, i, len, vector, off);
            i += len;
        }
    }
}

typedef struct {
    const ew_walk *w;
    span_fn span;
    const void *ctx;
} walk_job;

static void walk_job_run(void *ctx, int64_t b, int64_t e)
{
    const walk_job *j = ctx;
    walk_range(j->w, b, e, j->span, j->ctx);
}

static void walk_parallel(const mera_kernel_args *a, const ew_walk *w, span_fn span, const void *ctx)
{
    walk_job j = {w, span, ctx};
    mera_parallel_for(a->threads, w->n, EW_MIN_CHUNK, walk_job_run, &j);
    if (!w->permuted)
        return;
    /* the tail of each of PyTorch's rows takes the scalar body: at most 63
     * elements a row, found in its order and redone at our index */
    for (int64_t r0 = 0; r0 < w->n; r0 += w->trow)
        for (int64_t p = r0 + w->tvec; p < r0 + w->trow && p < w->n; p++) {
            int64_t rem = p, i = 0, off[2];
            for (int k = a->out_types[0]->rank - 1; k >= 0; k--) {
                i += rem % w->pshape[k] * w->ostride[w->perm[k]];
                rem /= w->pshape[k];
            }
            for (int k = 0; k < w->n_opnd; k++)
                off[k] = w->kind[k] == OPND_FULL ? i : 0;
            span(ctx, i, 1, 0, off);
        }
}

/* ---- add ---------------------------------------------------------------- */

typedef struct {
    const ew_isa *isa;
    ew_add_params p;
    float so;
    int32_t z1, z2;
    mera_rounding rounding; /* the scalar body's quantize_val */
    const uint8_t *a, *b;
    uint8_t *y;
    int step[2];
} add_job;

static void add_span(const void *ctx, int64_t i, int64_t len, int vector, const int64_t *off)
{
    const add_job *j = ctx;
    const uint8_t *x1 = j->a + off[0], *x2 = j->b + off[1];
    if (vector) {
        j->isa->add(&j->p, x1, j->step[0], x2, j->step[1], j->y + i, len);
        return;
    }
    for (int64_t k = 0; k < len; k++) { /* ATen's scalar body, as ref_add_q */
        int32_t q1 = j->p.x1_int8 ? (int8_t)x1[k * j->step[0]] : x1[k * j->step[0]];
        int32_t q2 = j->p.x2_int8 ? (int8_t)x2[k * j->step[1]] : x2[k * j->step[1]];
        float c = dequant_val(q1, j->p.s1, j->z1) + dequant_val(q2, j->p.s2, j->z2);
        if (j->p.relu && c < 0.0f)
            c = 0.0f;
        j->y[i + k] = (uint8_t)quantize_val(c, j->so, j->p.zo, j->p.lo, j->p.hi, j->rounding);
    }
}

static int is_int8(const mera_type *t)
{
    return t->dtype == MERA_DTYPE_INT8;
}

static mera_status add_q(const mera_kernel_args *a, const ew_isa *isa, mera_error *err)
{
    const mera_type *at = a->in_types[0], *bt = a->in_types[1], *ot = a->out_types[0];
    ew_walk w;
    if (!walk_setup(a, bt, &w))
        return ref_add_q(a, err);
    add_job j = {.isa = isa, .so = ref_scale_f(ot), .z1 = ref_zp(at), .z2 = ref_zp(bt), .rounding = a->rounding, .a = a->in[0],
                 .b = a->in[1], .y = a->out[0], .step = {w.kind[0] != OPND_SCALAR, w.kind[1] != OPND_SCALAR}};
    j.p.s1 = ref_scale_f(at);
    j.p.s2 = ref_scale_f(bt);
    j.p.p1 = neg_zp_premul(j.p.s1, ref_zp(at));
    j.p.p2 = neg_zp_premul(j.p.s2, ref_zp(bt));
    j.p.inv = 1.0f / j.so;
    j.p.zo = ref_zp(ot);
    j.p.lo = q_lo(ot->dtype);
    j.p.hi = q_hi(ot->dtype);
    j.p.relu = ref_relu(a->node);
    j.p.x1_int8 = is_int8(at);
    j.p.x2_int8 = is_int8(bt);
    j.p.y_int8 = is_int8(ot);
    walk_parallel(a, &w, add_span, &j);
    return MERA_OK;
}

/* ---- mul ---------------------------------------------------------------- */

typedef struct {
    const ew_isa *isa;
    ew_mul_params p;
    const uint8_t *a, *b;
    uint8_t *y;
    int step[2];
    int tail512; /* the scalar body through ew_mul_tail_avx512 */
} mul_job;

static void mul_span(const void *ctx, int64_t i, int64_t len, int vector, const int64_t *off)
{
    const mul_job *j = ctx;
    const uint8_t *x1 = j->a + off[0], *x2 = j->b + off[1];
    if (vector) {
        j->isa->mul(&j->p, x1, j->step[0], x2, j->step[1], j->y + i, len);
        return;
    }
#if defined(__x86_64__)
    if (j->tail512) {
        ew_mul_tail_avx512(&j->p, x1, j->step[0], x2, j->step[1], j->y + i, len);
        return;
    }
#endif
    for (int64_t k = 0; k < len; k++) { /* requantize_from_int, as ref_mul_q */
        int32_t q1 = j->p.x1_int8 ? (int8_t)x1[k * j->step[0]] : x1[k * j->step[0]];
        int32_t q2 = j->p.x2_int8 ? (int8_t)x2[k * j->step[1]] : x2[k * j->step[1]];
        int32_t c = (q1 - j->p.za) * (q2 - j->p.zb);
        int64_t r = cvt_rne_i64((float)((double)c * (double)j->p.mult)) + j->p.zo;
        j->y[i + k] = (uint8_t)clamp_i64(r, j->p.lo, j->p.hi);
    }
}

static mera_status mul_q(const mera_kernel_args *a, const ew_isa *isa, mera_error *err)
{
    const mera_type *at = a->in_types[0], *bt = a->in_types[1], *ot = a->out_types[0];
    ew_walk w;
    if (!walk_setup(a, bt, &w))
        return ref_mul_q(a, err);
    mul_job j = {.isa = isa, .a = a->in[0], .b = a->in[1], .y = a->out[0],
                 .step = {w.kind[0] != OPND_SCALAR, w.kind[1] != OPND_SCALAR}};
    float inv = 1.0f / ref_scale_f(ot);
    j.p.mult = ref_scale_f(at) * ref_scale_f(bt) * inv;
    j.p.za = ref_zp(at);
    j.p.zb = ref_zp(bt);
    j.p.zo = ref_zp(ot);
    j.p.lo = ref_relu(a->node) ? j.p.zo : q_lo(ot->dtype);
    j.p.hi = q_hi(ot->dtype);
    j.p.x1_int8 = is_int8(at);
    j.p.x2_int8 = is_int8(bt);
    j.p.y_int8 = is_int8(ot);
#if defined(__x86_64__)
    j.tail512 = isa == &ew_isa_avx512;
#endif
    walk_parallel(a, &w, mul_span, &j);
    return MERA_OK;
}

/* ---- activations through a table of 256 bytes per body ------------------ */

typedef struct {
    uint8_t vec[256], scalar[256];
    int vbmi; /* ew_lookup_avx512vbmi: the CPU's features when the tables were made */
} act_tables;

typedef struct {
    const act_tables *t;
    const uint8_t *x;
    uint8_t *y;
    int vbmi; /* ew_lookup_avx512vbmi */
} act_job;

static void act_span(const void *ctx, int64_t i, int64_t len, int vector, const int64_t *off)
{
    const act_job *j = ctx;
    const uint8_t *tab = vector ? j->t->vec : j->t->scalar, *x = j->x + off[0];
    uint8_t *y = j->y + i;
#if defined(__x86_64__)
    if (j->vbmi) {
        ew_lookup_avx512vbmi(tab, x, y, len);
        return;
    }
#endif
    for (int64_t k = 0; k < len; k++)
        y[k] = tab[x[k]];
}

static void act_tables_make(const mera_kernel_args *a, act_tables *t)
{
    ref_act_q_tables(a, t->vec, t->scalar);
    t->vbmi = mera_cpu_features_get()->avx512vbmi;
}

/* The tables depend on the types only: made once per node, with the CPU
 * feature probe (which reads the environment), so a run reads neither. */
static mera_status act_prepare(const mera_kernel_args *a, void **state, mera_error *err)
{
    act_tables *t = malloc(sizeof *t);
    if (!t)
        return ref_nomem(err, a->node);
    act_tables_make(a, t);
    *state = t;
    return MERA_OK;
}

static mera_status act_q(const mera_kernel_args *a, mera_kernel_fn ref, mera_error *err)
{
    ew_walk w;
    if (!walk_setup(a, NULL, &w) || w.kind[0] != OPND_FULL)
        return ref(a, err);
    act_tables local;
    const act_tables *t = a->state;
    if (!t) { /* not prepared (a caller without prepare): made here */
        act_tables_make(a, &local);
        t = &local;
    }
    act_job j = {t, a->in[0], a->out[0], t->vbmi};
    walk_parallel(a, &w, act_span, &j);
    return MERA_OK;
}

/* ---- quantize, dequantize, requantize ----------------------------------- */

typedef struct {
    const ew_isa *isa;
    ew_convert_params p;
    int op;
    const void *x;
    void *y;
} convert_job;

static void convert_range(void *ctx, int64_t b, int64_t e)
{
    const convert_job *j = ctx;
    switch (j->op) {
    case MERA_OP_QUANTIZE:
        j->isa->quantize(&j->p, (const float *)j->x + b, (uint8_t *)j->y + b, e - b);
        break;
    case MERA_OP_DEQUANTIZE:
        j->isa->dequantize(&j->p, (const uint8_t *)j->x + b, (float *)j->y + b, e - b);
        break;
    default:
        j->isa->requantize(&j->p, (const uint8_t *)j->x + b, (uint8_t *)j->y + b, e - b);
        break;
    }
}

static mera_status convert(const mera_kernel_args *a, const ew_isa *isa, int op, mera_error *err)
{
    const mera_type *it = a->in_types[0], *ot = a->out_types[0];
    if (op != MERA_OP_QUANTIZE && it->q.kind == MERA_QUANT_PER_AXIS)
        return op == MERA_OP_DEQUANTIZE ? ref_dequantize(a, err) : ref_requantize(a, err);
    convert_job j = {.isa = isa, .op = op, .x = a->in[0], .y = a->out[0], .p.rounding = a->rounding};
    if (op != MERA_OP_QUANTIZE) { /* as ref_dequantize and ref_requantize */
        j.p.scale = (float)it->q.scale;
        j.p.zi = it->q.zero_point;
        j.p.x_int8 = is_int8(it);
    }
    if (op != MERA_OP_DEQUANTIZE) { /* as ref_quantize and ref_requantize */
        j.p.inv = 1.0f / (float)ot->q.scale;
        j.p.zo = ot->q.zero_point;
        j.p.lo = q_lo(ot->dtype);
        j.p.hi = q_hi(ot->dtype);
        j.p.y_int8 = is_int8(ot);
    }
    mera_parallel_for(a->threads, mera_type_numel(ot), EW_MIN_CHUNK, convert_range, &j);
    return MERA_OK;
}

/* ---- the kernel ABI ----------------------------------------------------- */

void fast_ew_release(void *state)
{
    free(state);
}

mera_status fast_act_q_prepare(const mera_kernel_args *a, void **state, mera_error *err)
{
    return act_prepare(a, state, err);
}

#define EW_ENTRIES(suffix, isa)                                                                     \
    mera_status fast_add_q_##suffix(const mera_kernel_args *a, mera_error *err)                     \
    {                                                                                               \
        return add_q(a, &(isa), err);                                                               \
    }                                                                                               \
    mera_status fast_mul_q_##suffix(const mera_kernel_args *a, mera_error *err)                     \
    {                                                                                               \
        return mul_q(a, &(isa), err);                                                               \
    }                                                                                               \
    mera_status fast_quantize_##suffix(const mera_kernel_args *a, mera_error *err)                  \
    {                                                                                               \
        return convert(a, &(isa), MERA_OP_QUANTIZE, err);                                           \
    }                                                                                               \
    mera_status fast_dequantize_##suffix(const mera_kernel_args *a, mera_error *err)                \
    {                                                                                               \
        return convert(a, &(isa), MERA_OP_DEQUANTIZE, err);                                         \
    }                                                                                               \
    mera_status fast_requantize_##suffix(const mera_kernel_args *a, mera_error *err)                \
    {                                                                                               \
        return convert(a, &(isa), MERA_OP_REQUANTIZE, err);                                         \
    }

EW_ENTRIES(c, ew_isa_c)
#if defined(__x86_64__)
EW_ENTRIES(avx2, ew_isa_avx2)
EW_ENTRIES(avx512, ew_isa_avx512)
#endif

/* Table lookups need no SIMD: one entry per op. */
mera_status fast_leaky_relu_q(const mera_kernel_args *a, mera_error *err) { return act_q(a, ref_leaky_relu_q, err); }
mera_status fast_hardswish_q(const mera_kernel_args *a, mera_error *err) { return act_q(a, ref_hardswish_q, err); }
mera_status fast_hardsigmoid_q(const mera_kernel_args *a, mera_error *err) { return act_q(a, ref_hardsigmoid_q, err); }
mera_status fast_sigmoid_q(const mera_kernel_args *a, mera_error *err) { return act_q(a, ref_sigmoid_q, err); }
mera_status fast_gelu_q(const mera_kernel_args *a, mera_error *err) { return act_q(a, ref_gelu_q, err); }
