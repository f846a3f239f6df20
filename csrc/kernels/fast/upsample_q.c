/* Fast quantized upsample (nearest and bilinear): byte for byte
 * ref_upsample_q, with the source index and weights of each output column
 * computed once when the graph is compiled instead of per element
 * (prepare; ref/upsample.h holds the formulas both use), so a run allocates
 * nothing, whole pixels of channels copied where nearest keeps
 * the parameters, a 256-byte table where it changes them, and output rows
 * split across the worker pool. NHWC and NCHW data, both of PyTorch's
 * kernels (channels-last or contiguous), both rounding modes. */
#include <stdlib.h>
#include <string.h>

#include "kernels/fast/fast.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/refutil.h"
#include "kernels/ref/upsample.h"
#include "util/threadpool.h"

typedef struct {
    const uint8_t *x;
    uint8_t *y;
    ref_dims4 xd, yd;
    int nhwc_data;  /* our buffer's layout */
    int torch_cl;   /* PyTorch's channels-last kernel (fused source index, vector block) */
    int nearest;    /* the byte-copy path of ref_upsample_q */
    int copy;       /* equal sizes: output index = input index */
    int identity;   /* the table is the identity (same parameters) */
    int align_corners, x_int8;
    int avx512;     /* bilinear NHWC rows through bilinear_run_avx512 */
    float sh, rs;
    int32_t zx, zy, lo, hi;
    int64_t cvec;
    mera_rounding rounding;
    const int64_t *iw; /* nearest: the source column of each output column */
    const lin_tap *tw; /* bilinear: the taps of each output column */
    uint8_t table[256];
} up_job;

static inline float load_f(const up_job *j, const uint8_t *p)
{
    return j->x_int8 ? (float)(int8_t)*p : (float)*p;
}

/* One output of the bilinear path: channel c from the four source pixels p*. */
static inline uint8_t bilinear_one(const up_job *j, const lin_tap *th, const lin_tap *tw, int64_t c,
                                   const uint8_t *p00, const uint8_t *p01, const uint8_t *p10, const uint8_t *p11)
{
    int form = !j->torch_cl ? 0 : c < j->cvec ? 1 : 2;
    float r = bilinear_q(form, th, tw, load_f(j, p00), load_f(j, p01), load_f(j, p10), load_f(j, p11)) - (float)j->zx;
    float inv = 1.0f / j->rs;
    return (uint8_t)(form == 1 ? quantize_fbgemm(r, inv, j->zy, j->lo, j->hi, j->rounding)
                               : quantize_val(r, j->rs, j->zy, j->lo, j->hi, j->rounding));
}

#if defined(__x86_64__)
#include <immintrin.h>

#define UP_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

/* n <= 16 bytes at p as floats (int8 or uint8). */
UP_TARGET static inline __m512 up_load16(const uint8_t *p, __mmask16 m, int x_int8)
{
    __m128i b = _mm_maskz_loadu_epi8(m, p);
    return _mm512_cvtepi32_ps(x_int8 ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b));
}

/* bilinear_one over n consecutive channels c0.. of one NHWC output pixel, all of one form,
 * 16 lanes at a time: the same float operations in the same order as bilinear_q and
 * quantize_fbgemm / quantize_val, lane by lane, so the same bytes. */
UP_TARGET static void bilinear_run_avx512(const up_job *j, const lin_tap *th, const lin_tap *tw, int form,
                                          const uint8_t *p00, const uint8_t *p01, const uint8_t *p10,
                                          const uint8_t *p11, uint8_t *y, int64_t n)
{
    const __m512 l0w = _mm512_set1_ps(tw->l0), l1w = _mm512_set1_ps(tw->l1);
    const __m512 l0h = _mm512_set1_ps(th->l0), l1h = _mm512_set1_ps(th->l1);
    const __m512 zx = _mm512_set1_ps((float)j->zx), fzy = _mm512_set1_ps((float)j->zy);
    const __m512 inv = _mm512_set1_ps(1.0f / j->rs), fmax = _mm512_set1_ps(QMATH_INT32_FLOAT_MAX);
    const __m512 flo = _mm512_set1_ps((float)j->lo), fhi = _mm512_set1_ps((float)j->hi);
    const __m512i zy = _mm512_set1_epi32(j->zy), lo = _mm512_set1_epi32(j->lo), hi = _mm512_set1_epi32(j->hi);
    const int fbgemm = form == 1, before = j->rounding == MERA_ROUNDING_ZP_BEFORE_ROUNDING;
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = n - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - c)) - 1);
        __m512 a = up_load16(p00 + c, m, j->x_int8), b = up_load16(p01 + c, m, j->x_int8);
        __m512 d = up_load16(p10 + c, m, j->x_int8), e = up_load16(p11 + c, m, j->x_int8);
        __m512 r;
        if (form == 0) {
            __m512 top = _mm512_add_ps(_mm512_mul_ps(l0w, a), _mm512_mul_ps(l1w, b));
            __m512 bot = _mm512_add_ps(_mm512_mul_ps(l0w, d), _mm512_mul_ps(l1w, e));
            r = _mm512_add_ps(_mm512_mul_ps(l0h, top), _mm512_mul_ps(l1h, bot));
        } else if (form == 1) {
            __m512 top = _mm512_fmadd_ps(b, l1w, _mm512_mul_ps(a, l0w));
            __m512 bot = _mm512_fmadd_ps(e, l1w, _mm512_mul_ps(d, l0w));
            r = _mm512_fmadd_ps(bot, l1h, _mm512_mul_ps(l0h, top));
        } else {
            __m512 top = _mm512_fmadd_ps(a, l0w, _mm512_mul_ps(b, l1w));
            __m512 bot = _mm512_fmadd_ps(d, l0w, _mm512_mul_ps(e, l1w));
            r = _mm512_fmadd_ps(top, l0h, _mm512_mul_ps(l1h, bot));
        }
        r = _mm512_sub_ps(r, zx);
        __m512i q;
        if (fbgemm) { /* quantize_fbgemm */
            if (before) {
                __m512 t = _mm512_min_ps(_mm512_fmadd_ps(r, inv, fzy), fmax); /* NaN: the bound */
                q = _mm512_cvtps_epi32(t);
            } else {
                q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(r, inv), fmax)), zy);
            }
            q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        } else { /* quantize_val: rounded in float, NaN to 0, clamped in float */
            __m512 t = _mm512_mul_ps(r, inv);
#define UP_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
            t = before ? _mm512_roundscale_ps(_mm512_add_ps(t, fzy), UP_RNE)
                       : _mm512_add_ps(fzy, _mm512_roundscale_ps(t, UP_RNE));
            __mmask16 nan = _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q);
            t = _mm512_min_ps(_mm512_max_ps(t, flo), fhi);
            q = _mm512_maskz_cvtps_epi32((__mmask16)~nan, t);
        }
        _mm_mask_storeu_epi8(y + c, m, _mm512_cvtepi32_epi8(q));
    }
}
#endif

/* Whether up_rows_nhwc may take bilinear_run_avx512. */
static int up_avx512(void)
{
#if defined(__x86_64__)
    const mera_cpu_features *f = mera_cpu_features_get();
    return f->avx512f && f->avx512bw && f->fma;
#else
    return 0;
#endif
}

static int64_t source_row(const up_job *j, int64_t oh)
{
    return j->copy ? oh : nearest_source(oh, j->xd.h, j->sh);
}

/* NHWC data: rows (n, oh), a pixel of C channels at a time. */
static void up_rows_nhwc(void *ctx, int64_t r0, int64_t r1)
{
    const up_job *j = ctx;
    const int64_t C = j->xd.c;
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / j->yd.h, oh = r % j->yd.h;
        const uint8_t *xn = j->x + n * j->xd.h * j->xd.w * C;
        uint8_t *y = j->y + r * j->yd.w * C;
        if (j->nearest) {
            const uint8_t *xr = xn + source_row(j, oh) * j->xd.w * C;
            for (int64_t ow = 0; ow < j->yd.w; ow++, y += C) {
                const uint8_t *x = xr + j->iw[ow] * C;
                if (j->identity)
                    memcpy(y, x, (size_t)C);
                else
                    for (int64_t c = 0; c < C; c++)
                        y[c] = j->table[x[c]];
            }
            continue;
        }
        lin_tap th = linear_tap(j->sh, oh, j->xd.h, j->align_corners, j->torch_cl);
        const uint8_t *x0 = xn + th.i * j->xd.w * C, *x1 = xn + (th.i + th.step) * j->xd.w * C;
        for (int64_t ow = 0; ow < j->yd.w; ow++, y += C) {
            const lin_tap *tw = &j->tw[ow];
            int64_t a = tw->i * C, b = (tw->i + tw->step) * C;
#if defined(__x86_64__)
            if (j->avx512) {
                /* torch's channels-last kernel: form 1 below cvec, form 2 above; else form 0 */
                int64_t split = j->torch_cl ? j->cvec : C;
                if (split > 0)
                    bilinear_run_avx512(j, &th, tw, j->torch_cl ? 1 : 0, x0 + a, x0 + b, x1 + a, x1 + b, y, split);
                if (split < C)
                    bilinear_run_avx512(j, &th, tw, 2, x0 + a + split, x0 + b + split, x1 + a + split,
                                        x1 + b + split, y + split, C - split);
                continue;
            }
#endif
            for (int64_t c = 0; c < C; c++)
                y[c] = bilinear_one(j, &th, tw, c, x0 + a + c, x0 + b + c, x1 + a + c, x1 + b + c);
        }
    }
}

/* NCHW data: rows (n, c, oh) of one plane. */
static void up_rows_nchw(void *ctx, int64_t r0, int64_t r1)
{
    const up_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        int64_t plane = r / j->yd.h, oh = r % j->yd.h, c = plane % j->xd.c;
        const uint8_t *xp = j->x + plane * j->xd.h * j->xd.w;
        uint8_t *y = j->y + r * j->yd.w;
        if (j->nearest) {
            const uint8_t *xr = xp + source_row(j, oh) * j->xd.w;
            for (int64_t ow = 0; ow < j->yd.w; ow++)
                y[ow] = j->table[xr[j->iw[ow]]];
            continue;
        }
        lin_tap th = linear_tap(j->sh, oh, j->xd.h, j->align_corners, j->torch_cl);
        const uint8_t *x0 = xp + th.i * j->xd.w, *x1 = xp + (th.i + th.step) * j->xd.w;
        for (int64_t ow = 0; ow < j->yd.w; ow++) {
            const lin_tap *tw = &j->tw[ow];
            int64_t a = tw->i, b = tw->i + tw->step;
            y[ow] = bilinear_one(j, &th, tw, c, x0 + a, x0 + b, x1 + a, x1 + b);
        }
    }
}

/* The source columns of every output column: nearest's indices or
 * bilinear's taps, for one geometry. Made by prepare, so a run allocates
 * nothing; a run whose state is missing or was made for another geometry
 * (a kernel called without prepare) makes its own. */
typedef struct {
    int64_t xw, yw;
    int nearest, copy, align_corners, torch_cl;
    int avx512; /* up_avx512() when made: the CPU probe (it reads the environment) is not made per run */
    float sw;
    void *cols; /* int64_t[yw] (nearest) or lin_tap[yw] */
} up_cols;

/* Fills j (all but its columns) from the node and the types, and *sw with
 * the horizontal scale; 0 when not torch's coordinate mode (the reference
 * runs those). */
static int up_setup(const mera_kernel_args *a, up_job *j, float *sw)
{
    const mera_node *node = a->node;
    const mera_type *xt = a->in_types[0], *yt = a->out_types[0];
    if (!ref_is(node, "coordinate_mode", "torch")) /* ONNX Resize's coordinate modes: the reference */
        return 0;
    memset(j, 0, sizeof *j);
    j->x = a->in[0];
    j->y = a->out[0];
    j->nhwc_data = ref_nhwc(node);
    j->xd = ref_dims(xt, j->nhwc_data);
    j->yd = ref_dims(yt, j->nhwc_data);
    int bilinear = ref_is(node, "method", "bilinear");
    j->align_corners = mera_attr_int(node, "align_corners") != 0;
    const mera_attr *scales = mera_node_attr(node, "scales");
    int same_q = xt->q.scale == yt->q.scale && ref_zp(xt) == ref_zp(yt) && xt->dtype == yt->dtype;
    j->copy = j->xd.h == j->yd.h && j->xd.w == j->yd.w;
    j->torch_cl = ref_torch_channels_last(&j->xd, ref_torch_cl(node, j->nhwc_data));
    j->nearest = !bilinear || (j->copy && same_q && !j->torch_cl); /* as ref_upsample_q */
    j->x_int8 = xt->dtype == MERA_DTYPE_INT8;
    j->zx = ref_zp(xt);
    j->zy = ref_zp(yt);
    j->lo = q_lo(yt->dtype);
    j->hi = q_hi(yt->dtype);
    j->rs = (float)(yt->q.scale / xt->q.scale);
    j->cvec = j->torch_cl ? j->yd.c / UP_QVEC_CH * UP_QVEC_CH : 0;
    j->rounding = a->rounding;
    j->sh = bilinear ? linear_scale(scales, 0, j->xd.h, j->yd.h, j->align_corners)
                     : scales_value(scales, 0, j->xd.h, j->yd.h);
    *sw = bilinear ? linear_scale(scales, 1, j->xd.w, j->yd.w, j->align_corners)
                   : scales_value(scales, 1, j->xd.w, j->yd.w);
    /* as ref_upsample_q: the byte itself, or requantized like quantize_val when the
     * parameters change (not reachable from PyTorch) */
    j->identity = same_q;
    if (j->nearest)
        for (int b = 0; b < 256; b++) {
            int32_t q = j->x_int8 ? (int8_t)b : b;
            j->table[b] = (uint8_t)(same_q ? q
                                           : quantize_val(dequant_val(q, ref_scale_f(xt), j->zx), ref_scale_f(yt),
                                                          j->zy, j->lo, j->hi, a->rounding));
        }
    return 1;
}

static int up_cols_fit(const up_cols *c, const up_job *j, float sw)
{
    return c && c->xw == j->xd.w && c->yw == j->yd.w && c->nearest == j->nearest && c->copy == j->copy &&
           c->align_corners == j->align_corners && c->torch_cl == j->torch_cl && c->sw == sw;
}

/* NULL when out of memory */
static up_cols *up_cols_new(const up_job *j, float sw)
{
    up_cols *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    c->xw = j->xd.w;
    c->yw = j->yd.w;
    c->nearest = j->nearest;
    c->copy = j->copy;
    c->align_corners = j->align_corners;
    c->torch_cl = j->torch_cl;
    c->sw = sw;
    c->avx512 = up_avx512();
    c->cols = malloc((size_t)(c->yw > 0 ? c->yw : 1) * (j->nearest ? sizeof(int64_t) : sizeof(lin_tap)));
    if (!c->cols) {
        free(c);
        return NULL;
    }
    if (j->nearest) {
        int64_t *iw = c->cols;
        for (int64_t ow = 0; ow < c->yw; ow++)
            iw[ow] = j->copy ? ow : nearest_source(ow, c->xw, sw);
    } else {
        lin_tap *tw = c->cols;
        for (int64_t ow = 0; ow < c->yw; ow++)
            tw[ow] = linear_tap(sw, ow, c->xw, j->align_corners, j->torch_cl);
    }
    return c;
}

void fast_upsample_q_release(void *state)
{
    up_cols *c = state;
    if (c)
        free(c->cols);
    free(c);
}

mera_status fast_upsample_q_prepare(const mera_kernel_args *a, void **state, mera_error *err)
{
    up_job j;
    float sw;
    *state = NULL;
    if (!up_setup(a, &j, &sw))
        return MERA_OK;
    if (!(*state = up_cols_new(&j, sw)))
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    return MERA_OK;
}

mera_status fast_upsample_q(const mera_kernel_args *a, mera_error *err)
{
    up_job j;
    float sw;
    if (!up_setup(a, &j, &sw))
        return ref_upsample_q(a, err);
    const up_cols *c = a->state, *own = NULL;
    if (!up_cols_fit(c, &j, sw)) {
        if (!(c = own = up_cols_new(&j, sw)))
            return ref_upsample_q(a, err);
    }
    j.avx512 = c->avx512;
    if (j.nearest)
        j.iw = c->cols;
    else
        j.tw = c->cols;
    int64_t per_row = j.yd.w * (j.nhwc_data ? j.yd.c : 1);
    if (j.nhwc_data)
        mera_parallel_for(a->threads, j.yd.n * j.yd.h, 1 + 32768 / (per_row + 1), up_rows_nhwc, &j);
    else
        mera_parallel_for(a->threads, j.yd.n * j.yd.c * j.yd.h, 1 + 32768 / (per_row + 1), up_rows_nchw, &j);
    fast_upsample_q_release((void *)own);
    return MERA_OK;
}
