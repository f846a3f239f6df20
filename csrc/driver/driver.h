/* The compile driver: the one pipeline every entry point goes through
 * (mera.compile, mera.build, the Simulator, the IP path, run_mera_backend).
 *
 *     verify -> passes -> [quantize] -> partition -> schedule -> emit
 *
 * mera_compile in driver.c is that list, top to bottom; docs/architecture.md
 * walks through it. The backend (backends/backend.h) says by data what it
 * needs: runs_program backends get a partition and a scheduled DNA program,
 * layout_nhwc ones the layout pass. dump_dir writes what each chosen stage
 * made (the IR text, the partition, the schedule, the DNA program
 * disassembled) into a folder, as `qbe -d` does. */
#ifndef MERA_DRIVER_DRIVER_H
#define MERA_DRIVER_DRIVER_H

#include "arch/platform.h"
#include "backends/backend.h"
#include "codegen/deploy_write.h"
#include "ir/ir.h"
#include "isa/isa.h"
#include "sched/sched.h"

typedef struct {
    const mera_backend *backend;    /* required */
    const mera_platform *platform;  /* runs_program backends: required; must outlive the result */
    mera_sched_options sched;       /* runs_program backends */
    int load;                       /* 1: prepare the backend instance (to run in process) */
    const char *dump_dir;           /* NULL: no dumps; else an existing folder */
    const char *dump_stages;        /* comma-separated stage names, or "all"; NULL: "all" */
    int num_threads;                /* worker threads per run (the interpreters); 0: the default */
} mera_compile_options;

/* The stages, in order; dump files are named "<NN>-<stage>.<ext>". */
#define MERA_STAGES(X)                                                          \
    X(INPUT, input, "the graph as the frontend gave it")                        \
    X(FOLD_BN, fold_bn, "batch norms folded into conv/dense weights")           \
    X(FOLD_CONST, fold_const, "constant subgraphs evaluated")                   \
    X(LAYOUT, layout, "NCHW converted to NHWC (DNA targets)")                   \
    X(SUBPIXEL, subpixel, "transposed convs as sub-pixel convs (DNA targets)")  \
    X(TRIM_TAPS, trim_taps, "conv taps that read only padding removed (DNA targets)") \
    X(MOVES, moves, "transpose/reshape chains collapsed to the fewest moves (interpreters)") \
    X(DCE, dce, "dead nodes removed")                                           \
    X(PARTITION, partition, "which nodes run on the DNA, which on the host")    \
    X(SCHEDULE, schedule, "the DNA program: segments, layers, DRAM plan")        \
    X(PROGRAM, program, "the DNA program disassembled, one line per instruction")

typedef enum {
#define X(e, name, doc) MERA_STAGE_##e,
    MERA_STAGES(X)
#undef X
    MERA_STAGE_COUNT
} mera_stage;

const char *mera_stage_name(mera_stage s);

typedef struct mera_compiled mera_compiled;

/* g and param_data (mera_graph_input order, INPUT entries ignored) must
 * outlive the result: the compiled graph borrows the data. */
mera_compiled *mera_compile(const mera_graph *g, const void *const *param_data, const mera_compile_options *opt,
                            mera_error *err);
void mera_compiled_free(mera_compiled *c);

const mera_backend *mera_compiled_backend(const mera_compiled *c);
/* The graph after the passes: what runs, what deploy.params stores. */
const mera_graph *mera_compiled_graph(const mera_compiled *c);
const void *const *mera_compiled_param_data(const mera_compiled *c);
/* runs_program backends; else NULL. */
const dna_program *mera_compiled_program(const mera_compiled *c);
const mera_partition_report *mera_compiled_partition(const mera_compiled *c);
const mera_platform *mera_compiled_platform(const mera_compiled *c);
/* The backend instance (opt->load), or NULL: what the backend's
 * functions (run, metrics, timing, write_trace) take. */
void *mera_compiled_instance(const mera_compiled *c);

/* Run the loaded instance; inputs/outputs as for mera_backend.run. */
mera_status mera_compiled_run(const mera_compiled *c, const void *const *inputs, void *const *outputs,
                              mera_error *err);

/* emit, for mera.build: deploy.params and deploy.json of the compiled
 * model (codegen/deploy_write.h); host_arch "x86" or "arm". */
mera_status mera_compiled_deploy_files(const mera_compiled *c, const char *host_arch, mera_deploy_files *out,
                                       mera_error *err);

#endif
