/* Kernels: one function per (op, numerics) pair, looked up in a dispatch
 * table. The reference kernels in ref/ are the semantic truth of every op;
 * faster kernels (SIMD, threads) may replace them per op, selected at run
 * time from the CPU's features, and are tested to give identical bytes
 * (float ones: identical up to the order of float additions).
 *
 * A kernel reads its node's attributes through the node, its input and
 * output types through the args, and C-contiguous buffers laid out as the
 * types say (the layout attribute of spatial ops says NCHW or NHWC). */
#ifndef MERA_KERNELS_KERNELS_H
#define MERA_KERNELS_KERNELS_H

#include "ir/ir.h"

typedef struct {
    const mera_node *node;
    int n_inputs;
    const mera_type *in_types[MERA_MAX_NODE_INPUTS]; /* NULL for omitted optional inputs */
    const void *in[MERA_MAX_NODE_INPUTS];
    int n_outputs;
    const mera_type *out_types[MERA_MAX_NODE_OUTPUTS];
    void *out[MERA_MAX_NODE_OUTPUTS];
    /* What the kernel's prepare function made for this node, or NULL (no
     * prepare function, or it declined). Read-only while running: threads
     * may run one compiled graph at once. */
    const void *state;
    /* Threads the kernel may split its work across (util/threadpool.h):
     * 0 the default (MERA_NUM_THREADS or every CPU), 1 serial. The split
     * never changes a byte. */
    int threads;
    /* Scratch memory for this node alone, planned when the graph was
     * compiled (mera_kernel.scratch), or NULL: the kernel allocates. */
    void *scratch;
    size_t scratch_bytes;
    /* The graph's rounding (ir.h); a DNA instruction's own field on the
     * DNA. A kernel is only run with a rounding it implements (dispatch.c). */
    mera_rounding rounding;
} mera_kernel_args;

typedef mera_status (*mera_kernel_fn)(const mera_kernel_args *a, mera_error *err);

/* Optional per-node preparation, run once when a graph is compiled, e.g.
 * to pack constant weights. a->in[i] holds the data of constant inputs
 * (graph constants and params) and NULL for run-time ones; a->out[] are
 * NULL. *state (NULL allowed: the kernel then does that work per run)
 * reaches every run as a->state and is freed by release. */
typedef mera_status (*mera_kernel_prepare_fn)(const mera_kernel_args *a, void **state, mera_error *err);
typedef void (*mera_kernel_release_fn)(void *state);
/* Optional: prepare as prepare does, for args whose constant inputs hold
 * the same bytes as those that `like` (a state of this kernel's prepare)
 * was prepared from, and whose other shapes may differ; the new state
 * shares like's packed constants instead of packing them again (the DNA
 * machine's tiles of one weight block). like must outlive every run with
 * the new state; either may be released first. */
typedef mera_status (*mera_kernel_prepare_like_fn)(const mera_kernel_args *a, const void *like, void **state,
                                                   mera_error *err);

/* Optional: the scratch bytes a run of the node needs (a->state set, a->in
 * of constants only), so the caller can plan them with the activations
 * instead of the kernel allocating per run. */
typedef size_t (*mera_kernel_scratch_fn)(const mera_kernel_args *a);

/* Which arithmetic a kernel implements. */
typedef enum {
    MERA_NUMERICS_FLOAT, /* float32 inputs and outputs */
    MERA_NUMERICS_QUANT, /* int8/uint8 tensors with qparams: the contract of docs/numerics.md */
    MERA_NUMERICS_COUNT
} mera_numerics;

typedef struct {
    int avx2, avx512f, avx512vnni, fma;
    int avx512bw; /* AVX512BW and AVX512VL: the byte and word forms the AVX-512 kernels use where present */
    int avx512vbmi; /* AVX512_VBMI (vpermi2b): the 256-byte table lookups of the activations */
    int amx_int8; /* AMX-TILE and AMX-INT8, enabled by the OS (XCR0) and granted to the process (Linux
                   * arch_prctl ARCH_REQ_XCOMP_PERM, asked once per process); x86_64 Linux only */
} mera_cpu_features;

/* The CPU's features, less those named in the environment variable
 * MERA_CPU_FEATURES_MASK (comma-separated: avx2, fma, avx512f, avx512vnni,
 * avx512bw, avx512vbmi, amx_int8, or all), which tests use to run the AVX2 and
 * portable kernels (and the AVX-512 ones without AMX or their byte/word
 * forms) on a CPU that has AVX-512 and AMX. Reads the environment: kernels
 * call it when selected or prepared, never per run (tests/c/test_kernel_env.c). */
const mera_cpu_features *mera_cpu_features_get(void);

/* The reference kernel for (op, numerics), or NULL where none exists
 * (e.g. quantize has no QUANT form). */
mera_kernel_fn mera_kernel_ref(int op, mera_numerics num);

/* Checks the kernel tables against the op table: every op has a reference
 * FLOAT kernel unless it is MERA_OPF_QUANT_IN and a QUANT kernel unless it
 * is MERA_OPF_FLOAT_IN, and none it cannot take; fast kernels only where a
 * reference exists. MERA_ERR_INVALID naming the op on a mismatch (a bug in
 * dispatch.c or ops.def; run by the C unit tests). */
mera_status mera_kernel_table_check(mera_error *err);

/* A selected kernel: run, and the optional prepare/release pair. */
typedef struct {
    mera_kernel_fn run;             /* NULL: no kernel for (op, numerics) */
    mera_kernel_prepare_fn prepare; /* NULL: nothing to prepare */
    mera_kernel_release_fn release; /* frees a non-NULL state of prepare */
    const char *name;               /* for reports: "ref", "amx", "avx512vnni", "avx512f", "avx2", "c", "table", "none" */
    mera_kernel_scratch_fn scratch; /* NULL: needs no scratch */
    mera_kernel_prepare_like_fn prepare_like; /* NULL: prepare packs every time */
} mera_kernel;

/* The roundings (ir.h) the reference kernels implement: every one. Fast
 * kernels list theirs in dispatch.c's table. */
#define MERA_ROUNDINGS_ALL ((1u << MERA_ROUNDING_COUNT) - 1u)

/* The fastest kernel for (op, numerics) that this CPU can run and that
 * implements rounding; the reference where no faster one exists. Reads the
 * environment, so call it when compiling a graph, not per run:
 *   MERA_REFERENCE_KERNELS=1  always the reference kernels (testing, debugging)
 *   MERA_CPU_FEATURES_MASK    see mera_cpu_features_get
 * A rounding outside mera_rounding gets no kernel (run == NULL). */
mera_kernel mera_kernel_select(int op, mera_numerics num, mera_rounding rounding);

/* ---- running graph nodes (the Interpreter backends and the DNA machine's
 * host nodes) ---- */

/* The numerics InterpreterHw runs node in: QUANT where its first input has
 * quantization parameters, else FLOAT. */
mera_numerics mera_kernel_node_numerics(const mera_graph *g, const mera_node *node);

/* mera_kernel_select for node; where there is no kernel for (node's op,
 * num, rounding), fails with MERA_ERR_UNSUPPORTED naming the node. */
mera_status mera_kernel_select_node(const mera_node *node, mera_numerics num, mera_rounding rounding,
                                    mera_kernel *k, mera_error *err);

/* The kernel args of graph node n: the node, its input and output types,
 * in[i] = value_data[v] for each present input v (NULL where value_data is
 * NULL) and the graph's rounding; out[] and state are NULL. */
void mera_kernel_node_args(const mera_graph *g, int n, const void *const *value_data, mera_kernel_args *a);

/* Runs k's prepare (if any) for graph node n, with the args of
 * mera_kernel_node_args; an error is prefixed with the node's name and op. */
mera_status mera_kernel_prepare_node(const mera_kernel *k, const mera_graph *g, int n,
                                     const void *const *value_data, void **state, mera_error *err);

#endif
