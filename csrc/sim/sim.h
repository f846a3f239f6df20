/* The DNA machine: executes a DNA program (isa/isa.h) bit-exactly and
 * estimates its time with the timing model (docs/isa.md, "Timing").
 *
 * Used by the Simulator target (and, in the deploy runtime, by the IP
 * target's emulated device). Loading a program checks it against the graph
 * and the platform's buffers, prepares each CONV block's kernel once (the
 * host-side translation of the DNA weight format), and runs the timing
 * model, which does not depend on the data. A loaded machine is immutable:
 * every run gets its own activation DRAM and on-chip buffers, so threads
 * may run one machine at once. */
#ifndef MERA_SIM_SIM_H
#define MERA_SIM_SIM_H

#include "arch/platform.h"
#include "ir/ir.h"
#include "isa/isa.h"

typedef struct dna_machine dna_machine;

/* Per graph node. */
typedef struct {
    int node;
    int on_dna;
    int64_t macs;           /* useful multiply-accumulates */
    int64_t mac_cycles;     /* cycles the MAC array was busy (edge-tile waste included) */
    int64_t vec_cycles;     /* cycles of the vector unit */
    int64_t load_bytes, store_bytes;
    int64_t load_cycles, store_cycles; /* DMA queue busy cycles */
    int64_t start_cycle, end_cycle;    /* first start and last end of its instructions */
    double mac_utilization; /* macs / (cycles of the layer * MACs per cycle) */
    int memory_bound;       /* DMA busy longer than compute */
    double host_us;         /* host nodes: modelled host time */
} dna_layer_stats;

typedef struct {
    int64_t device_cycles;   /* sum over DNA segments of their makespan */
    double device_us;        /* device_cycles at the platform clock */
    double host_us;          /* host nodes, host calls and PCIe transfers */
    double total_us;         /* device_us + host_us: the end-to-end estimate */
    int n_layers;            /* = number of graph nodes */
    dna_layer_stats *layers; /* per graph node, in graph order */
} dna_timing;

/* g, prog, param_data and p must outlive the machine. param_data as for
 * mera_interp_compile (host nodes read their params from it). */
dna_machine *dna_machine_new(const mera_graph *g, const dna_program *prog, const mera_platform *p,
                             const void *const *param_data, mera_error *err);
void dna_machine_free(dna_machine *m);

/* inputs/outputs as for mera_interp_run. */
mera_status dna_machine_run(const dna_machine *m, const void *const *inputs, void *const *outputs, mera_error *err);

const dna_timing *dna_machine_timing(const dna_machine *m);

/* A Chrome/Perfetto trace (JSON, "traceEvents") of one inference: one track
 * per queue plus host, one event per instruction (name = layer's node),
 * microseconds at the platform clock. Written atomically. */
mera_status dna_machine_write_trace(const dna_machine *m, const char *path, mera_error *err);

#endif
