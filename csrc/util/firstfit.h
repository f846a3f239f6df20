/* First-fit placement of blocks in a linear address space, for allocating
 * by liveness: place a value's block when it is produced, release it after
 * its last reader. Used for the interpreters' activation arena
 * (backends/interp.c) and the DNA's DRAM (sched/sched.c). */
#ifndef MERA_UTIL_FIRSTFIT_H
#define MERA_UTIL_FIRSTFIT_H

#include <stdint.h>

typedef struct {
    int64_t off, size;
} mera_ff_block;

typedef struct {
    mera_ff_block *live; /* the live blocks, sorted by offset */
    int n_live, cap;
    int64_t peak; /* the highest end of any block placed so far */
} mera_firstfit;

/* Room for up to max_live live blocks at once; -1 when out of memory (the
 * allocator may still be passed to mera_firstfit_free). */
int mera_firstfit_init(mera_firstfit *ff, int max_live);
void mera_firstfit_free(mera_firstfit *ff);

/* The lowest offset where size bytes fit between the live blocks. */
int64_t mera_firstfit_place(mera_firstfit *ff, int64_t size);

/* Frees the live block at off; a bug if there is none. */
void mera_firstfit_release(mera_firstfit *ff, int64_t off);

#endif
