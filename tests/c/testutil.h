/* Shared helpers of the C unit tests (tests/c/test_*.c): the pass/fail
 * counters, CHECK and CHECK_MSG, the summary line tests/test_c_core.py
 * looks for ("N passed, M failed"), and builders of IR types and
 * attributes. Header-only: everything is static, and the functions are
 * static inline so that a test that does not use one still builds with
 * -Wall -Wextra -Werror. */
#ifndef MERA_TESTS_TESTUTIL_H
#define MERA_TESTS_TESTUTIL_H

#include <stdio.h>
#include <string.h>

#include "ir/ir.h"

static int passed __attribute__((unused)), failed __attribute__((unused));

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond)                                                                    \
            passed++;                                                                \
        else {                                                                       \
            failed++;                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

/* err.msg (of a mera_error) must contain needle. */
#define CHECK_MSG(err, needle)                                                         \
    do {                                                                               \
        if (strstr((err).msg, (needle)))                                               \
            passed++;                                                                  \
        else {                                                                         \
            failed++;                                                                  \
            fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, \
                    (err).msg, (needle));                                              \
        }                                                                              \
    } while (0)

/* Prints the summary line; returns the exit status of main. */
static inline int test_summary(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}

/* Deterministic random numbers for the randomized tests: xorshift64. Each
 * test file starts from test_rng_state's default or sets its own seed
 * before the first draw. */
static uint64_t test_rng_state __attribute__((unused)) = 0x9e3779b97f4a7c15ull;

static inline uint64_t test_rng_next(void)
{
    test_rng_state ^= test_rng_state << 13;
    test_rng_state ^= test_rng_state >> 7;
    test_rng_state ^= test_rng_state << 17;
    return test_rng_state;
}

/* 32 random bits (the high bits of the state). */
static inline uint32_t rnd(void)
{
    return (uint32_t)(test_rng_next() >> 11);
}

/* uniform in [lo, hi] */
static inline int64_t rint_in(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd() % (uint32_t)(hi - lo + 1));
}

/* A tensor type with no layout and no quantization. */
static inline mera_type tensor(mera_dtype dt, int rank, const int64_t *shape)
{
    mera_type t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.rank = rank;
    for (int i = 0; i < rank; i++)
        t.shape[i] = shape[i];
    return t;
}

/* A per-tensor quantized tensor type. */
static inline mera_type qtensor(mera_dtype dt, int rank, const int64_t *shape, mera_layout layout, double scale,
                                int32_t zero_point)
{
    mera_type t = tensor(dt, rank, shape);
    t.layout = layout;
    t.q.kind = MERA_QUANT_PER_TENSOR;
    t.q.count = 1;
    t.q.scale = scale;
    t.q.zero_point = zero_point;
    return t;
}

/* A per-axis quantized tensor type; scales and zero_points (count entries)
 * are borrowed, as mera_type does. */
static inline mera_type qtensor_axis(mera_dtype dt, int rank, const int64_t *shape, int axis, int64_t count,
                                     const double *scales, const int32_t *zero_points)
{
    mera_type t = tensor(dt, rank, shape);
    t.q.kind = MERA_QUANT_PER_AXIS;
    t.q.axis = axis;
    t.q.count = count;
    t.q.scales = scales;
    t.q.zero_points = zero_points;
    return t;
}

static inline mera_attr ints(const char *key, int n, const int64_t *v)
{
    mera_attr a = {0};
    a.key = key;
    a.kind = MERA_ATTR_INTS;
    a.count = n;
    a.ints = v;
    return a;
}

static inline mera_attr floats(const char *key, int n, const double *v)
{
    mera_attr a = {0};
    a.key = key;
    a.kind = MERA_ATTR_FLOATS;
    a.count = n;
    a.floats = v;
    return a;
}

static inline mera_attr str(const char *key, const char *s)
{
    mera_attr a = {0};
    a.key = key;
    a.kind = MERA_ATTR_STRING;
    a.s = s;
    return a;
}

static inline mera_attr flt(const char *key, double f)
{
    mera_attr a = {0};
    a.key = key;
    a.kind = MERA_ATTR_FLOAT;
    a.f = f;
    return a;
}

static inline mera_attr integer(const char *key, int64_t i)
{
    mera_attr a = {0};
    a.key = key;
    a.kind = MERA_ATTR_INT;
    a.i = i;
    return a;
}

#endif
