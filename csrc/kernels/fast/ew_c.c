/* Portable inner loops of the fast elementwise kernels (ew.h): the qmath.h
 * primitives element by element, without the reference kernels' index
 * arithmetic. */
#include "kernels/fast/ew.h"
#include <math.h>

#include "kernels/ref/qmath.h"

static inline int32_t load_q(uint8_t v, int is_int8)
{
    return is_int8 ? (int32_t)(int8_t)v : (int32_t)v;
}

uint8_t ew_add_one(const ew_add_params *p, uint8_t a, uint8_t b)
{
    float c = dequant_fma(load_q(a, p->x1_int8), p->s1, p->p1) + dequant_fma(load_q(b, p->x2_int8), p->s2, p->p2);
    if (p->relu && c < 0.0f)
        c = 0.0f;
    return (uint8_t)quantize_lane(c, p->inv, p->zo, p->lo, p->hi);
}

uint8_t ew_mul_one(const ew_mul_params *p, uint8_t a, uint8_t b)
{
    int32_t c = (load_q(a, p->x1_int8) - p->za) * (load_q(b, p->x2_int8) - p->zb);
    return (uint8_t)clamp_i64(add_wrap_i32(cvt_rne_i32((float)c * p->mult), p->zo), p->lo, p->hi);
}

uint8_t ew_quantize_one(const ew_convert_params *p, float x)
{
    return (uint8_t)quantize_fbgemm(x, p->inv, p->zo, p->lo, p->hi, p->rounding);
}

float ew_dequantize_one(const ew_convert_params *p, uint8_t x)
{
    return dequant_val(load_q(x, p->x_int8), p->scale, p->zi);
}

uint8_t ew_requantize_one(const ew_convert_params *p, uint8_t x)
{
    return ew_quantize_one(p, ew_dequantize_one(p, x));
}

int ew_add_finite(const ew_add_params *p)
{
    /* |fmaf(s, q, p)| <= |s| * 255 + |p| up to rounding, q in [-128, 255]; the margin covers
     * the float roundings of the sum and the product */
    double b = (fabs((double)p->s1) * 256.0 + fabs((double)p->p1)) + (fabs((double)p->s2) * 256.0 + fabs((double)p->p2));
    double t = b * fabs((double)p->inv) * 1.01;
    return isfinite(b) && isfinite(t) && t < 1073741824.0;
}

int ew_add_full_range(const ew_add_params *p)
{
    return p->y_int8 ? p->lo == -128 && p->hi == 127 : p->lo == 0 && p->hi == 255;
}

static void add_c(const ew_add_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = ew_add_one(p, a[i * sa], b[i * sb]);
}

static void mul_c(const ew_mul_params *p, const uint8_t *a, int sa, const uint8_t *b, int sb, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = ew_mul_one(p, a[i * sa], b[i * sb]);
}

static void quantize_c(const ew_convert_params *p, const float *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = ew_quantize_one(p, x[i]);
}

static void dequantize_c(const ew_convert_params *p, const uint8_t *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = ew_dequantize_one(p, x[i]);
}

static void requantize_c(const ew_convert_params *p, const uint8_t *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = ew_requantize_one(p, x[i]);
}

static void max_window_c(uint8_t *y, const uint8_t *x, int64_t rs, int64_t cs, int64_t nh, int64_t nw, int64_t n,
                         int is_int8)
{
    for (int64_t i = 0; i < n; i++) {
        int32_t m = load_q(x[i], is_int8);
        for (int64_t a = 0; a < nh; a++)
            for (int64_t b = 0; b < nw; b++) {
                int32_t v = load_q(x[a * rs + b * cs + i], is_int8);
                m = v > m ? v : m;
            }
        y[i] = (uint8_t)m;
    }
}

static void sum_bytes_c(int32_t *acc, const uint8_t *x, int64_t n, int is_int8)
{
    if (is_int8)
        for (int64_t i = 0; i < n; i++)
            acc[i] += (int8_t)x[i];
    else
        for (int64_t i = 0; i < n; i++)
            acc[i] += x[i];
}

const ew_isa ew_isa_c = {"c",          add_c,       mul_c,        quantize_c, dequantize_c,
                         requantize_c, max_window_c, sum_bytes_c};
