/* The scheduler's instruction list: instructions in a sequential order
 * (running them one after another in this order gives the right bytes),
 * each with the memory ranges it reads and writes. deps.c turns that
 * order into the three queues' dependency tokens. Internal to csrc/sched. */
#ifndef MERA_SCHED_EMIT_H
#define MERA_SCHED_EMIT_H

#include "isa/isa.h"
#include "util/status.h"

typedef enum { SPACE_ACT = 0, SPACE_WGT = 1, SPACE_DRAM = 2 } sched_space;

typedef struct {
    uint8_t space, write;
    int64_t lo, hi; /* [lo, hi) */
} sched_range;

#define SCHED_MAX_RANGES (DNA_MAX_SRC + 3)

typedef struct {
    dna_insn insn;
    int n_rng;
    sched_range rng[SCHED_MAX_RANGES];
} sched_item;

typedef struct {
    sched_item *v;
    int n, cap;
    int failed; /* an allocation failed; the list is unusable */
} sched_list;

void sched_list_free(sched_list *l);
/* Append; returns the new item (zeroed but for opcode and layer) or NULL on
 * allocation failure (l->failed is then set). */
sched_item *sched_push(sched_list *l, int opcode, int layer);

/* DMA helpers: fill a LOAD/STORE item's instruction and ranges. */
void sched_dma_ranges(sched_item *it);

/* Add range to an item. */
void sched_range_add(sched_item *it, int space, int write, int64_t lo, int64_t hi);

/* Give every instruction of in (a whole DNA segment, in sequential order)
 * the dependency tokens the queues need, inserting NOPs where a load and a
 * store must be ordered; the result is appended to out (which may hold
 * earlier segments: tokens never cross a segment). Tokens are minimal: an
 * ordering already implied by queue order and earlier tokens gets none. */
mera_status sched_solve_deps(const sched_list *in, sched_list *out, mera_error *err);

#endif
