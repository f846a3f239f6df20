/* The DNA machine: executes a DNA program (isa/isa.h) bit-exactly and
 * estimates its time with the timing model (docs/isa.md, "Timing").
 *
 * Used by the Simulator target (and, in the deploy runtime, by the IP
 * target's emulated device). Loading a program checks it against the graph
 * and the platform's buffers, prepares each CONV block's kernel once (the
 * host-side translation of the DNA weight format), and runs the timing
 * model, which does not depend on the data. A loaded machine is immutable
 * but for one spare run (dna_machine_run keeps its last run's DRAM and
 * buffers for the next, taken and given back atomically): every run has
 * its own activation DRAM and on-chip buffers, so threads may run one
 * machine at once. */
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
    double clock_mhz;        /* that clock */
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


/* ---- options and segment-level execution ---------------------------------- */

typedef struct {
    /* 1: keep no packed copy of the weights; each CONV instruction packs
     * its weight block from WGT when it runs (what the IP's MAC array does:
     * slower on the host, but the weights exist once, in the constant
     * image). 0 (default): pack every distinct tile once at load time. */
    int pack_at_run;
    /* 1: only DNA segments will run (dna_run_segment): host nodes are not
     * prepared and need no param data (the emulated IP device). */
    int dna_only;
    /* 1: the program's constant image is a read-only file mapping
     * (MAP_PRIVATE, never written): after a LOAD reads from it, the pages
     * wholly inside the range read are released (madvise MADV_DONTNEED)
     * and fault back from the file when read again. The image is then
     * never resident at once, as on a device whose weights sit in device
     * DRAM. Never set it for anonymous memory: released pages would read
     * back as zeros. */
    int release_const_pages;
    /* Worker threads (util/threadpool.h) a run splits its work across: the
     * kernel of each CONV and VEC tile, and the rows of a LOAD or STORE
     * whose rows are disjoint. 0: the default (MERA_NUM_THREADS or every
     * CPU, read when the machine is loaded), 1 serial. Changes no byte and no cycle: the timing model does
     * not depend on the host's threads. */
    int threads;
} dna_machine_options;

/* dna_machine_new with options (NULL: the defaults, all 0). */
dna_machine *dna_machine_new_opts(const mera_graph *g, const dna_program *prog, const mera_platform *p,
                                  const void *const *param_data, const dna_machine_options *opt, mera_error *err);

/* Where the activation DRAM starts: params_bytes rounded down to 64, so
 * that a host buffer holding program addresses [dna_act_base, dram_bytes)
 * at a 64-byte aligned address keeps every value as aligned as its
 * program address (the constant image's size need not be a multiple of
 * 64; activations start at the next multiple). */
static inline int64_t dna_act_base(const dna_program *p)
{
    return p->params_bytes & ~(int64_t)63;
}

/* One inference's state: the activation DRAM and the on-chip buffers.
 * act_dram: dram_bytes - dna_act_base bytes, 64-byte aligned, the caller
 * owns (program address a >= params_bytes is act_dram[a - dna_act_base]),
 * or NULL to allocate (zeroed) with the run. The machine must outlive the
 * run. */
typedef struct dna_run dna_run;
dna_run *dna_run_new(const dna_machine *m, uint8_t *act_dram, mera_error *err);
void dna_run_free(dna_run *r);
/* The activation DRAM (see dna_run_new). */
uint8_t *dna_run_dram(dna_run *r);
/* Runs segment seg: a DNA segment's instructions in the order the timing
 * model starts them, or a HOST segment's node on the run's DRAM.
 * *cycles (may be NULL) gets the DNA segment's makespan in device cycles
 * (0 for a host segment). dna_machine_run is dna_run_new, the inputs
 * written, every segment in order, the outputs read. */
mera_status dna_run_segment(dna_run *r, int seg, int64_t *cycles, mera_error *err);

/* Runs host node `node` (one of the program's HOST segments) with the
 * InterpreterHw kernel the machine prepared, on caller buffers: in[k] is
 * the data of the node's k-th input, or NULL for a PARAM or CONST input
 * (the graph's data); out[o] receives output o. */
mera_status dna_machine_run_host_node(const dna_machine *m, int node, const void *const *in, void *const *out,
                                      mera_error *err);

/* Forwarding (docs/architecture.md, "Forwarding"): what the machine
 * decided at load. MERA_SIM_FORWARD=0 in the environment at load turns it
 * off (all 0). */
typedef struct {
    int64_t dead_loads;     /* LOADs into ACT that move no bytes: every reader reads their DRAM source */
    int64_t dead_stores;    /* STOREs that move no bytes: the CONV/VEC wrote their DRAM range itself */
    int64_t fwd_inputs;     /* CONV inputs and VEC sources read from DRAM instead of ACT */
    int64_t fwd_outputs;    /* CONV/VEC tiles written to DRAM instead of ACT (= dead_stores) */
} dna_forward_stats;
dna_forward_stats dna_machine_forward_stats(const dna_machine *m);

/* The conv2d layers the machine runs whole, one kernel call each, instead
 * of as tiles (docs/architecture.md, "Layers run whole"; decided at load;
 * MERA_SIM_LAYERS=0 in the environment at load turns it off: 0). */
int dna_machine_layers_run_whole(const dna_machine *m);

#endif
