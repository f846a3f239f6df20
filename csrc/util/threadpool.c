/* The worker pool (threadpool.h): pthreads, one mutex, two condition
 * variables. A job is fn, ctx and its ranges; workers take ranges under
 * the mutex (there are only as many ranges as threads), so a worker that
 * wakes late can never run a range of the next job with this one's fn. */
#define _GNU_SOURCE
#include "util/threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#ifndef MERA_SERIAL_THREADS
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;    /* a job was posted */
    pthread_cond_t done;    /* the last range of a job finished */
    pthread_mutex_t submit; /* held by the one caller whose job runs */
    int n_workers;
    unsigned seq;           /* jobs posted; read without the lock by spinning threads */
    int resting;            /* mera_parallel_rest since the last job was posted: idle workers do not spin */
    /* the job; valid while busy */
    int busy;
    mera_parallel_fn fn;
    void *ctx;
    int64_t n;
    int ranges, next, remaining;
} pool_state;

static pool_state pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .submit = PTHREAD_MUTEX_INITIALIZER,
};
#endif

int mera_threads_default(void)
{
    const char *s = getenv("MERA_NUM_THREADS");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == 0 && v > 0)
            return v > MERA_MAX_THREADS ? MERA_MAX_THREADS : (int)v;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        return 1;
    return cpus > MERA_MAX_THREADS ? MERA_MAX_THREADS : (int)cpus;
}

int mera_threads_resolve(int requested)
{
    if (requested > 0)
        return requested > MERA_MAX_THREADS ? MERA_MAX_THREADS : requested;
    return mera_threads_default();
}

#ifndef MERA_SERIAL_THREADS
static void range_of(int64_t n, int ranges, int k, int64_t *b, int64_t *e)
{
    *b = n * k / ranges;
    *e = n * (k + 1) / ranges;
}

/* Take and run ranges of the current job until none is left; called with
 * the lock held, returns with it held. */
static void run_ranges(void)
{
    while (pool.busy && pool.next < pool.ranges) {
        int k = pool.next++;
        mera_parallel_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int64_t b, e;
        range_of(pool.n, pool.ranges, k, &b, &e);
        pthread_mutex_unlock(&pool.lock);
        fn(ctx, b, e);
        pthread_mutex_lock(&pool.lock);
        __atomic_store_n(&pool.remaining, pool.remaining - 1, __ATOMIC_RELEASE);
        if (pool.remaining == 0)
            pthread_cond_broadcast(&pool.done);
    }
}

/* A layer's job follows the last one within microseconds, while waking a
 * thread blocked on a condition variable takes tens of them: a worker
 * without work, and a caller waiting for its workers, first watch the
 * pool's counters for a while without the lock (MERA_SPIN_US), then block
 * as before. Only waiting changes; which thread runs which range does not. */
#define MERA_SPIN_US 50

static double spin_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static inline void spin_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    __asm__ volatile("" ::: "memory");
#endif
}

/* Spins (lock released) until a job is posted after the one numbered seen
 * (want_done 0), or until the current job's ranges are all done
 * (want_done 1), or the time is up; called and returns with the lock held. */
static void spin_wait(unsigned seen, int want_done)
{
    pthread_mutex_unlock(&pool.lock);
    double end = spin_clock_us() + MERA_SPIN_US;
    for (int i = 0;; i++) {
        if (want_done ? __atomic_load_n(&pool.remaining, __ATOMIC_ACQUIRE) == 0
                      : __atomic_load_n(&pool.seq, __ATOMIC_ACQUIRE) != seen ||
                            __atomic_load_n(&pool.resting, __ATOMIC_RELAXED))
            break;
        if ((i & 63) == 63 && spin_clock_us() > end)
            break;
        spin_pause();
    }
    pthread_mutex_lock(&pool.lock);
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        if (!(pool.busy && pool.next < pool.ranges))
            spin_wait(pool.seq, 0);
        while (!(pool.busy && pool.next < pool.ranges))
            pthread_cond_wait(&pool.wake, &pool.lock);
        run_ranges();
    }
    return NULL;
}

/* A child of fork() has none of the parent's workers (and may have copied
 * a lock a parent thread held): it starts from an empty pool. */
static void pool_after_fork_in_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_mutex_init(&pool.submit, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.n_workers = 0;
    pool.busy = 0;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork_in_child);
}

/* Start workers until there are want of them (or creation fails); called
 * with the lock held. Returns the count there is. */
static int grow_workers(int want)
{
    if (pool.n_workers < want)
        pthread_once(&atfork_once, register_atfork);
    while (pool.n_workers < want) {
        pthread_t t;
        pthread_attr_t attr;
        if (pthread_attr_init(&attr))
            break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc)
            break;
        pool.n_workers++;
    }
    return pool.n_workers;
}

#endif

#ifdef MERA_SERIAL_THREADS
/* deploy.so (mera/_runtime_archive.py): a library the loaders dlclose must
 * leave no worker thread or fork handler behind, so every job runs on the
 * calling thread, in one range (the split never changes a byte). */
void mera_parallel_for(int threads, int64_t n, int64_t min_chunk, mera_parallel_fn fn, void *ctx)
{
    (void)threads;
    (void)min_chunk;
    if (n > 0)
        fn(ctx, 0, n);
}

void mera_parallel_rest(void)
{
}
#else
void mera_parallel_for(int threads, int64_t n, int64_t min_chunk, mera_parallel_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (min_chunk < 1)
        min_chunk = 1;
    int64_t t = mera_threads_resolve(threads);
    if (t > n / min_chunk)
        t = n / min_chunk;
    if (t <= 1 || pthread_mutex_trylock(&pool.submit) != 0) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&pool.lock);
    int workers = grow_workers((int)t - 1);
    if (workers + 1 < t)
        t = workers + 1;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.ranges = (int)t;
    pool.next = 0;
    pool.remaining = (int)t;
    pool.busy = 1;
    __atomic_store_n(&pool.resting, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.seq, pool.seq + 1, __ATOMIC_RELEASE);
    if (t > 1)
        pthread_cond_broadcast(&pool.wake);
    run_ranges(); /* the caller works too */
    if (pool.remaining > 0)
        spin_wait(0, 1);
    while (pool.remaining > 0)
        pthread_cond_wait(&pool.done, &pool.lock);
    pool.busy = 0;
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool.submit);
}

void mera_parallel_rest(void)
{
    /* without the lock: a worker that misses it spins one more period */
    __atomic_store_n(&pool.resting, 1, __ATOMIC_RELAXED);
}
#endif
