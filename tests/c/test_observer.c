/* C tests of quant/observer.c: names and config checks, the qparams
 * formula on hand-worked ranges, bad values leaving an observer untouched,
 * degenerate data, and the exact grid's independence of batching. The
 * comparisons with PyTorch and numpy are in tests/test_quant_observers.py.
 * Built and run by tests/test_c_core.py; prints "N passed, M failed". */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/observer.h"
#include "testutil.h"

static double uniform(void)
{
    return ((double)(test_rng_next() >> 11) + 0.5) / 9007199254740992.0;
}

static float gaussian(void)
{
    return (float)(sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
}

static mera_observer *make(mera_observer_kind kind)
{
    mera_observer_config c = mera_observer_config_default();
    c.kind = kind;
    mera_error err;
    mera_observer *o = mera_observer_new(&c, &err);
    if (!o)
        fprintf(stderr, "mera_observer_new: %s\n", err.msg);
    return o;
}

static void test_names(void)
{
    for (int k = 0; k < MERA_OBSERVER_COUNT; k++) {
        mera_observer_kind back;
        CHECK(mera_observer_kind_parse(mera_observer_kind_name((mera_observer_kind)k), &back) == 0 && (int)back == k);
    }
    mera_observer_kind back;
    CHECK(mera_observer_kind_parse("kl", &back) == -1);
    CHECK(mera_observer_kind_parse(NULL, &back) == -1);
}

static void test_config(void)
{
    mera_error err;
    mera_observer_config c = mera_observer_config_default();
    CHECK(c.kind == MERA_OBSERVER_HISTOGRAM && c.bins == 2048 && c.qmin == 0 && c.qmax == 255);
    CHECK(mera_observer_config_validate(&c, &err) == MERA_OK);
    c.bins = 15;
    CHECK(mera_observer_config_validate(&c, &err) == MERA_ERR_CONFIG);
    CHECK_MSG(err, "bins");
    CHECK(mera_observer_new(&c, &err) == NULL);
    c = mera_observer_config_default();
    c.percentile = 50.0;
    CHECK(mera_observer_config_validate(&c, &err) == MERA_ERR_CONFIG);
    CHECK_MSG(err, "percentile");
    c.percentile = NAN;
    CHECK(mera_observer_config_validate(&c, &err) == MERA_ERR_CONFIG);
    c = mera_observer_config_default();
    c.qmin = 3;
    c.qmax = 3;
    CHECK(mera_observer_config_validate(&c, &err) == MERA_ERR_CONFIG);
    CHECK_MSG(err, "qmin");
    c = mera_observer_config_default();
    c.kind = MERA_OBSERVER_COUNT;
    CHECK(mera_observer_config_validate(&c, &err) == MERA_ERR_CONFIG);
    CHECK_MSG(err, "kind");
}

static void test_qparams(void)
{
    double s;
    int32_t zp;
    /* [-1, 1]: scale 2/255 in float32, and -1/scale = -127.49999 in float32 */
    mera_qparams_from_range(-1.0f, 1.0f, 0, 255, MERA_TORCH_MIN_SCALE, &s, &zp);
    CHECK(s == (double)(2.0f / 255.0f) && zp == 127);
    /* -0.5/1 = -0.5 rounds to even: 0, not -1 */
    mera_qparams_from_range(-0.5f, 254.5f, 0, 255, MERA_TORCH_MIN_SCALE, &s, &zp);
    CHECK(s == 1.0 && zp == 0);
    /* one-sided ranges are widened to 0 */
    mera_qparams_from_range(2.0f, 6.0f, 0, 255, MERA_TORCH_MIN_SCALE, &s, &zp);
    CHECK(s == (double)(6.0f / 255.0f) && zp == 0);
    mera_qparams_from_range(-6.0f, -2.0f, 0, 255, MERA_TORCH_MIN_SCALE, &s, &zp);
    CHECK(s == (double)(6.0f / 255.0f) && zp == 255);
    /* an empty range: scale is float32 eps */
    mera_qparams_from_range(0.0f, 0.0f, 0, 255, MERA_TORCH_MIN_SCALE, &s, &zp);
    CHECK(s == (double)FLT_EPSILON && zp == 0);
    /* signed int8 */
    mera_qparams_from_range(-1.0f, 3.0f, -128, 127, MERA_TORCH_MIN_SCALE, &s, &zp);
    CHECK(s == (double)(4.0f / 255.0f) && zp == -128 + 64);
    /* under 255 eps: torch's floor keeps eps, the quantizer's keeps the range */
    mera_qparams_from_range(0.0f, 2.55e-10f, 0, 255, MERA_TORCH_MIN_SCALE, &s, &zp);
    CHECK(s == (double)FLT_EPSILON && zp == 0);
    mera_qparams_from_range(0.0f, 2.55e-10f, 0, 255, MERA_QUANT_MIN_SCALE, &s, &zp);
    CHECK(s == (double)(2.55e-10f / 255.0f) && zp == 0);
    mera_qparams_from_range(0.0f, 0.0f, 0, 255, MERA_QUANT_MIN_SCALE, &s, &zp);
    CHECK(s == (double)FLT_EPSILON && zp == 0);
    mera_qparams_from_range(-1e-30f, 1e-30f, 0, 255, MERA_QUANT_MIN_SCALE, &s, &zp);
    CHECK(s == (double)MERA_QUANT_MIN_SCALE);
}

static void test_bad_values(void)
{
    for (int k = 0; k < MERA_OBSERVER_COUNT; k++) {
        mera_observer *o = make((mera_observer_kind)k);
        mera_error err;
        float lo, hi;
        CHECK(mera_observer_range(o, &lo, &hi, &err) == MERA_ERR_INVALID);
        CHECK_MSG(err, "no values observed");
        CHECK(mera_observer_update(o, NULL, 0, &err) == MERA_OK);
        CHECK(mera_observer_count(o) == 0);
        float x[100];
        for (int i = 0; i < 100; i++)
            x[i] = gaussian();
        CHECK(mera_observer_update(o, x, 100, &err) == MERA_OK);
        float lo0, hi0, mn0, mx0;
        CHECK(mera_observer_range(o, &lo0, &hi0, &err) == MERA_OK);
        mera_observer_minmax(o, &mn0, &mx0);
        for (int i = 0; i < 100; i++)
            x[i] = 50.0f * gaussian(); /* would widen the range */
        x[37] = NAN;
        CHECK(mera_observer_update(o, x, 100, &err) == MERA_ERR_INVALID);
        CHECK_MSG(err, "index 37");
        x[37] = 0.0f;
        x[99] = -INFINITY;
        CHECK(mera_observer_update(o, x, 100, &err) == MERA_ERR_INVALID);
        CHECK_MSG(err, "index 99");
        float mn, mx;
        mera_observer_minmax(o, &mn, &mx);
        CHECK(mera_observer_count(o) == 100 && mn == mn0 && mx == mx0);
        CHECK(mera_observer_range(o, &lo, &hi, &err) == MERA_OK && lo == lo0 && hi == hi0);
        mera_observer_free(o);
    }
}

static void test_constant_data(void)
{
    const float values[] = {0.0f, 2.5f, -1e-30f};
    for (int k = 0; k < MERA_OBSERVER_COUNT; k++)
        for (size_t v = 0; v < MERA_ARRAY_LEN(values); v++) {
            mera_observer *o = make((mera_observer_kind)k);
            float x[64];
            for (int i = 0; i < 64; i++)
                x[i] = values[v];
            mera_error err;
            float lo, hi;
            CHECK(mera_observer_update(o, x, 64, &err) == MERA_OK);
            CHECK(mera_observer_range(o, &lo, &hi, &err) == MERA_OK);
            CHECK(lo <= 0.0f && hi >= 0.0f && lo <= values[v] && values[v] <= hi);
            double s;
            int32_t zp;
            mera_qparams_from_range(lo, hi, 0, 255, MERA_TORCH_MIN_SCALE, &s, &zp);
            CHECK(s >= FLT_EPSILON && zp >= 0 && zp <= 255);
            mera_observer_free(o);
        }
}

/* Growing the exact grid merges bins exactly: any batching of the same
 * values gives the same range. */
static void test_grid_batching(void)
{
    enum { N = 20000 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++)
        x[i] = (float)(i % 7 == 0 ? 0.0 : gaussian() * (1.0 + i / 2000.0)); /* the range grows along x */
    const mera_observer_kind kinds[] = {MERA_OBSERVER_PERCENTILE, MERA_OBSERVER_ENTROPY, MERA_OBSERVER_MSE};
    for (size_t k = 0; k < MERA_ARRAY_LEN(kinds); k++) {
        mera_observer *whole = make(kinds[k]), *parts = make(kinds[k]);
        mera_error err;
        CHECK(mera_observer_update(whole, x, N, &err) == MERA_OK);
        for (int at = 0, step = 1; at < N; at += step, step = step * 2 + 1)
            CHECK(mera_observer_update(parts, x + at, at + step <= N ? step : N - at, &err) == MERA_OK);
        float lo1, hi1, lo2, hi2;
        CHECK(mera_observer_range(whole, &lo1, &hi1, &err) == MERA_OK);
        CHECK(mera_observer_range(parts, &lo2, &hi2, &err) == MERA_OK);
        CHECK(lo1 == lo2 && hi1 == hi2);
        CHECK(lo1 < 0.0f && hi1 > 0.0f);
        CHECK(mera_observer_count(parts) == N);
        mera_observer_free(whole);
        mera_observer_free(parts);
    }
    free(x);
}

/* Far outliers: the percentile range ignores them, minmax does not. */
static void test_percentile_outliers(void)
{
    enum { N = 100000 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++)
        x[i] = gaussian();
    x[5] = 1000.0f;
    x[6] = -900.0f;
    mera_observer *p = make(MERA_OBSERVER_PERCENTILE), *m = make(MERA_OBSERVER_MINMAX);
    mera_error err;
    CHECK(mera_observer_update(p, x, N, &err) == MERA_OK);
    CHECK(mera_observer_update(m, x, N, &err) == MERA_OK);
    float lo, hi;
    CHECK(mera_observer_range(p, &lo, &hi, &err) == MERA_OK);
    CHECK(lo > -6.0f && lo < -3.0f && hi > 3.0f && hi < 6.0f);
    CHECK(mera_observer_range(m, &lo, &hi, &err) == MERA_OK);
    CHECK(lo == -900.0f && hi == 1000.0f);
    mera_observer_free(p);
    mera_observer_free(m);
    free(x);
}

int main(void)
{
    test_rng_state = 0x2545f4914f6cdd1dull;
    test_names();
    test_config();
    test_qparams();
    test_bad_values();
    test_constant_data();
    test_grid_batching();
    test_percentile_outliers();
    return test_summary();
}
