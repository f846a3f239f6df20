/* The DNA timing model (docs/hardware.md, "Timing model"): what an
 * instruction costs, when each instruction of a program starts and ends
 * on the three queues, and the hazard check that proves the dependency
 * tokens order every conflicting pair of SRAM accesses.
 *
 * The model does not depend on the data, so the Simulator runs it once
 * per loaded program, and the scheduler's Slow mode runs it on candidate
 * programs to compare tilings. */
#ifndef MERA_SIM_TIMING_H
#define MERA_SIM_TIMING_H

#include "sim/sim.h"

/* The geometry of a conv2d or dense layer as the DNA sees it. */
typedef struct {
    int dense;
    int64_t kh, kw;          /* kernel (dense: 1 x 1) */
    int64_t sh, sw, dh, dw;  /* strides, dilation (dense: 1) */
    int64_t groups;
    int64_t c, o;            /* input and output channels of the whole layer */
    int64_t cg, og;          /* input and output channels per group */
    int has_bias;
} dna_conv_geom;

/* Fills *geo from graph node `node` (conv2d or dense). Fails when the node
 * is neither or its layout is not the DNA's (NHWC for conv2d). */
mera_status dna_conv_geometry(const mera_graph *g, int node, dna_conv_geom *geo, mera_error *err);

/* Bytes of a CONV instruction's weight block in WGT: int8 [oc_n][kh][kw][cg],
 * then float32 [oc_n] when the layer has a bias. */
int64_t dna_conv_block_bytes(const dna_conv_geom *geo, int64_t oc_n);

/* The cost of one instruction. The instruction must be well-formed (its
 * layer index valid; dna_machine_new checks that). *bytes gets the DRAM
 * bytes a LOAD/STORE really moves, *macs the useful multiply-accumulates
 * of a CONV (either may be NULL). */
int64_t dna_insn_cycles(const mera_graph *g, const dna_program *prog, const mera_platform *p, const dna_insn *in,
                        int64_t *bytes, int64_t *macs);

/* The cycles of one LOAD or STORE: dma_setup_cycles plus the longer of
 * its two sides. DRAM: every maximal contiguous DRAM run costs at least a
 * 64-byte burst, at dram_gbps. SRAM: a box that is not one dense block in
 * SRAM (a transposing DMA) pays a beat per group of runs that fall in
 * distinct banks of the vector_lanes byte-wide banks. *bytes (may be NULL)
 * gets the DRAM bytes really moved. docs/hardware.md, "Timing model". */
int64_t dna_dma_cycles(const mera_platform *p, const dna_dma *d, int64_t *bytes);

/* Where the model put every instruction and segment. */
typedef struct {
    int64_t *start, *end;   /* per instruction: cycles from the start of its segment */
    double *seg_start_us;   /* per segment: start on the inference's timeline */
    double *seg_us;         /* per segment: its duration (DNA: host call + PCIe + makespan) */
    double *seg_dev_start_us; /* per segment: where its instructions' cycle 0 sits on the
                               * timeline (DNA: after the host call and PCIe input) */
} dna_insn_times;

/* Runs the model over the whole program: queues, tokens, hazard check,
 * segment and host costs, per-layer statistics. The program's instruction
 * fields must be in range (dna_machine_new validates them first); the
 * tokens and the SRAM accesses are what this checks. t receives malloc'd
 * arrays (free with dna_timing_release); times (may be NULL) likewise
 * (free with dna_insn_times_release). */
mera_status dna_timing_model(const mera_graph *g, const dna_program *prog, const mera_platform *p, dna_timing *t,
                             dna_insn_times *times, mera_error *err);
void dna_timing_release(dna_timing *t);
void dna_insn_times_release(dna_insn_times *times);

/* Sorts instruction indices by start[index], ties by index (stable,
 * reentrant): the order the machine executes a DNA segment in. */
void dna_sort_by_start(int *idx, int count, const int64_t *start);

/* The modelled host: bytes per second a host core streams through a node
 * (timing.c documents the choice). */
#define DNA_HOST_GBPS 5.0


#endif
