/* The backend table: one entry per target, looked up once by name.
 *
 *   target          instance            runs
 *   Interpreter     mera_interp (float) the graph node by node in float32
 *   InterpreterHw   mera_interp (hw)    the graph node by node, int8 contract
 *   Simulator       dna_machine         the DNA program bit-exactly + timing
 *   IP              HAL device          the DNA program on a device (HAL)
 *
 * mera_backend_find is the one place a target's name is compared. The
 * compile driver (driver/driver.c) and the deploy runtime (runtime/) both
 * run a model through this table. The table depends on the kernels, the
 * machine and the HAL, never on the compiler: a DNA target's program comes
 * in already scheduled, and what the driver must do for a backend is said
 * by data (runs_program, layout_nhwc), not by code here. What the Python
 * package does differently per target is said by data too (node_by_node,
 * interp_mode, runs_through_deploy, mera_time_key): nothing else compares a
 * target's name. */
#ifndef MERA_BACKENDS_BACKEND_H
#define MERA_BACKENDS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "arch/platform.h"
#include "backends/interp.h"
#include "ir/ir.h"
#include "isa/isa.h"
#include "sim/sim.h"

typedef struct {
    const mera_graph *g;              /* the graph to run (as compiled) */
    const void *const *param_data;    /* per mera_graph_input index; INPUT entries ignored */
    const dna_program *prog;          /* runs_program backends: the scheduled program; else NULL */
    const uint8_t *program_bytes;     /* the same, serialized (the HAL takes these); may be NULL */
    size_t program_len;
    const mera_platform *platform;    /* runs_program backends: the platform; else NULL */
    const char *device;               /* IP: the HAL driver name; NULL: the default */
    int params_mapped;                /* 1: param_data and the program's constant image are a
                                       * read-only file mapping (MAP_PRIVATE) */
    int num_threads;                  /* the interpreters and the Simulator: worker threads per run; 0 the default
                                       * (MERA_NUM_THREADS or every CPU) */
} mera_backend_load_args;

typedef struct {
    size_t arena_bytes;     /* activation memory a run uses */
    double device_us;       /* runs_program: device_cycles at clock_mhz, the device alone; else 0 */
    int64_t device_cycles;  /* runs_program: device cycles; else 0 */
    double clock_mhz;       /* runs_program: the device clock; else 0 */
    double host_us;         /* runs_program: the timing model's host time (host nodes, PCIe, call); else 0 */
    const char *device;     /* IP: the HAL driver's name; else NULL */
} mera_backend_metrics;

typedef struct mera_backend {
    const char *name;       /* "Interpreter", "InterpreterHw", "Simulator", "IP" */
    const char *doc;        /* one line */
    int runs_program;       /* 1: runs a DNA program: the driver partitions and schedules for it */
    int layout_nhwc;        /* 1: the driver converts NCHW spatial ops to NHWC (the DNA's layout) */
    int thread_safe_run;    /* 1: one instance may run on several threads at once */
    int node_by_node;       /* 1: the interpreter (mera_interp in interp_mode), whose every node's
                             * output can be read: mera._core.Interp, the quantizer's calibration
                             * and per-layer quality report */
    mera_interp_mode interp_mode; /* node_by_node backends: float or the int8 contract */
    int runs_through_deploy; /* 1: in process too, mera.compile and test_util.run_mera_backend run it
                              * as MERA did, through a deploy directory (mera.build, then
                              * load_runtime_module): the device is reached through deploy.so */
    const char *mera_time_key; /* the key MERA's get_runtime_metrics() gave the modelled device
                                * time under ("sim_time_us", "elapsed_latency"), or NULL */
    /* Prepare an instance. Everything in a must outlive it. NULL on error. */
    void *(*load)(const mera_backend_load_args *a, mera_error *err);
    /* inputs[i]: the i-th INPUT value's data (params skipped); outputs[i]:
     * a buffer of the i-th graph output's size. */
    mera_status (*run)(void *inst, const void *const *inputs, void *const *outputs, mera_error *err);
    void (*metrics)(const void *inst, mera_backend_metrics *m);
    void (*free)(void *inst);
    /* runs_program backends (NULL for the others): the timing model's
     * result for the loaded program, and a Chrome/Perfetto trace of one
     * inference written atomically to path. */
    const dna_timing *(*timing)(const void *inst);
    mera_status (*write_trace)(const void *inst, const char *path, mera_error *err);
} mera_backend;

/* The backend named name, or NULL. */
const mera_backend *mera_backend_find(const char *name);
/* "Interpreter, InterpreterHw, Simulator, IP" into buf: for error messages. */
void mera_backend_names(char *buf, size_t n);
/* All backends, NULL-terminated. */
extern const mera_backend *const mera_backends[];

#endif
