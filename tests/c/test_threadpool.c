/* The worker pool (util/threadpool.h): every item of [0, n) runs exactly
 * once for 1, 2 and 7 threads, with and without mera_parallel_rest between
 * jobs (idle workers then block instead of spinning; the next job wakes
 * them), and for jobs posted from several threads at once (a caller that
 * finds the pool busy runs its ranges itself). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"
#include "util/threadpool.h"

#define N_ITEMS 5003

typedef struct {
    int hits[N_ITEMS];
} job;

static void mark(void *ctx, int64_t b, int64_t e)
{
    job *j = ctx;
    for (int64_t i = b; i < e; i++)
        __atomic_add_fetch(&j->hits[i], 1, __ATOMIC_RELAXED);
}

static int all_once(const job *j, int64_t n)
{
    for (int64_t i = 0; i < N_ITEMS; i++)
        if (j->hits[i] != (i < n))
            return 0;
    return 1;
}

/* a generator per call: posting threads run this at once */
static uint32_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

static void run_jobs(int threads, int rest_every, int *ok)
{
    static _Thread_local job j;
    uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(threads * 131 + rest_every);
    for (int k = 0; k < 200; k++) {
        int64_t n = 1 + (int64_t)(lcg(&seed) % N_ITEMS);
        memset(&j, 0, sizeof j);
        mera_parallel_for(threads, n, 1 + (int64_t)(lcg(&seed) % 64), mark, &j);
        *ok &= all_once(&j, n);
        if (rest_every && k % rest_every == 0)
            mera_parallel_rest();
    }
}

typedef struct {
    int threads, ok;
} worker_arg;

static void *poster(void *p)
{
    worker_arg *a = p;
    a->ok = 1;
    run_jobs(a->threads, 3, &a->ok);
    return NULL;
}

int main(void)
{
    const int counts[] = {1, 2, 7};
    for (int c = 0; c < 3; c++)
        for (int rest_every = 0; rest_every <= 2; rest_every++) {
            int ok = 1;
            run_jobs(counts[c], rest_every, &ok);
            CHECK(ok);
        }
    /* rest called with no job ever posted, and twice in a row */
    mera_parallel_rest();
    mera_parallel_rest();
    int ok = 1;
    run_jobs(2, 1, &ok);
    CHECK(ok);
    /* several posting threads share the one pool */
    pthread_t t[3];
    worker_arg args[3] = {{2, 0}, {7, 0}, {2, 0}};
    for (int k = 0; k < 3; k++)
        CHECK(pthread_create(&t[k], NULL, poster, &args[k]) == 0);
    for (int k = 0; k < 3; k++) {
        pthread_join(t[k], NULL);
        CHECK(args[k].ok);
    }
    return test_summary();
}
