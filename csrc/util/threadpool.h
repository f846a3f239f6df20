/* The worker pool: persistent threads that split one layer's work.
 *
 * mera_parallel_for cuts [0, n) into contiguous ranges, runs the first on
 * the calling thread and the others on pool workers, and returns when all
 * are done. Kernels cut where every output byte is computed by exactly one
 * range from the same inputs, so the thread count never changes a byte.
 *
 * The pool is process-wide (the one piece of global mutable state in the
 * core besides the op table): workers are started on first use, up to the
 * largest count asked for, and live until exit. One job runs at a time; a
 * caller that finds the pool busy (another thread's run, or a call from
 * inside a worker) runs its ranges itself, serially. */
#ifndef MERA_UTIL_THREADPOOL_H
#define MERA_UTIL_THREADPOOL_H

#include <stdint.h>

#define MERA_MAX_THREADS 64

/* Runs [begin, end) of a job. */
typedef void (*mera_parallel_fn)(void *ctx, int64_t begin, int64_t end);

/* The default thread count: MERA_NUM_THREADS if set to a positive integer
 * (at most MERA_MAX_THREADS), else the CPUs online. Read on every call. */
int mera_threads_default(void);

/* The thread count a run uses for a requested one: requested > 0 is taken
 * as it is (capped at MERA_MAX_THREADS), anything else means the default. */
int mera_threads_resolve(int requested);

/* fn over [0, n) in at most mera_threads_resolve(threads) ranges of at
 * least min_chunk items each (min_chunk < 1: 1). */
void mera_parallel_for(int threads, int64_t n, int64_t min_chunk, mera_parallel_fn fn, void *ctx);

/* The caller has serial work ahead (no job for a while): workers that
 * spin waiting for the next job (MERA_SPIN_US) block now instead of
 * taking CPU time from it, until the next job is posted. Only waiting
 * changes; a job posted later wakes them as usual. */
void mera_parallel_rest(void);

#endif
