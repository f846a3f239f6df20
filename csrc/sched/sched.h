/* Partitioning and scheduling: a quantized graph and a platform in, a DNA
 * program (isa/isa.h) out.
 *
 *   partition  which nodes run on the DNA and which on the host, with the
 *              reason for each (mera_partition_report)
 *   tiling     every DNA layer cut into tiles that fit the on-chip buffers
 *              (double-buffered), along the cuts kernels/split.h allows
 *   ordering   tiles in order, loads of tile i+1 overlapping compute of i
 *   allocation DRAM for activations by liveness, the constant image for
 *              weights (codegen's layout), ACT/WGT ping-pong regions
 *
 * Modes: MERA_SCHED_FAST picks tile shapes by a heuristic (the largest
 * tile that fits); MERA_SCHED_SLOW tries candidate tile shapes per layer
 * with the timing model (sim/timing.h) on worker threads and keeps the
 * fastest. Both produce programs whose results are identical: tiles never
 * change the arithmetic. */
#ifndef MERA_SCHED_SCHED_H
#define MERA_SCHED_SCHED_H

#include "arch/platform.h"
#include "ir/ir.h"
#include "isa/isa.h"

typedef enum { MERA_SCHED_FAST = 0, MERA_SCHED_SLOW = 1 } mera_sched_mode;

typedef struct {
    mera_sched_mode mode;
    int64_t max_tile_height; /* output rows per tile; 0: no limit */
    int64_t max_tile_width;  /* output columns per tile; 0: no limit */
    int workers;             /* Slow mode threads; <= 0: 1 */
    /* Slow mode: called after each layer's search with the layers searched so
     * far and their total, from the worker threads, one call at a time; NULL: none. */
    void (*progress)(void *user, int done, int total);
    void *progress_user;
} mera_sched_options;

typedef struct {
    int node;         /* graph node index */
    int on_dna;       /* 1: DNA, 0: host */
    int tiles;        /* DNA: number of compute instructions */
    char reason[200]; /* host: why; DNA: the tiling chosen */
} mera_partition_entry;

typedef struct {
    int n;
    mera_partition_entry *entries; /* one per graph node, in graph order */
} mera_partition_report;

void mera_partition_report_free(mera_partition_report *r);

/* Schedule g for platform p. param_data as for mera_interp_compile (the
 * data of the graph's PARAM values in mera_graph_input order; entries for
 * INPUT values ignored). On success *report (if report is non-NULL) gets
 * the partition report. */
dna_program *mera_schedule(const mera_graph *g, const void *const *param_data, const mera_platform *p,
                           const mera_sched_options *opt, mera_partition_report **report, mera_error *err);

#endif
