/* The backend table (backend.h) and the entries that run in the host
 * process: the interpreters (interp.c) and the Simulator (sim/machine.c);
 * IP's entry points are in ip.c. */
#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/interp.h"
#include "backends/ip.h"
#include "sim/sim.h"

/* ---- Interpreter, InterpreterHw ------------------------------------------ */

static void *interp_load(const mera_backend_load_args *a, mera_interp_mode mode, mera_error *err)
{
    mera_interp *it = mera_interp_compile(a->g, mode, a->param_data, err);
    if (!it)
        mera_error_prefix(err, "compiling the graph: ");
    else
        mera_interp_set_threads(it, a->num_threads);
    return it;
}

static void *interp_float_load(const mera_backend_load_args *a, mera_error *err)
{
    return interp_load(a, MERA_INTERP_FLOAT, err);
}

static void *interp_hw_load(const mera_backend_load_args *a, mera_error *err)
{
    return interp_load(a, MERA_INTERP_HW, err);
}

static mera_status interp_run(void *inst, const void *const *inputs, void *const *outputs, mera_error *err)
{
    return mera_interp_run(inst, inputs, outputs, err);
}

static void interp_metrics(const void *inst, mera_backend_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->arena_bytes = mera_interp_arena_bytes(inst);
}

static void interp_free(void *inst)
{
    mera_interp_free(inst);
}

static const mera_backend interpreter = {
    .name = "Interpreter",
    .doc = "float32 reference, node by node (quantized nodes emulated in float)",
    .thread_safe_run = 1,
    .node_by_node = 1,
    .interp_mode = MERA_INTERP_FLOAT,
    .load = interp_float_load,
    .run = interp_run,
    .metrics = interp_metrics,
    .free = interp_free,
};

static const mera_backend interpreter_hw = {
    .name = "InterpreterHw",
    .doc = "the int8 numerics contract, node by node (bit-exact with PyTorch's fbgemm)",
    .thread_safe_run = 1,
    .node_by_node = 1,
    .interp_mode = MERA_INTERP_HW,
    .load = interp_hw_load,
    .run = interp_run,
    .metrics = interp_metrics,
    .free = interp_free,
};

/* ---- Simulator ------------------------------------------------------------ */

typedef struct {
    dna_machine *m;
    int64_t arena_bytes; /* the program's activation DRAM */
} sim_inst;

static void *sim_load(const mera_backend_load_args *a, mera_error *err)
{
    if (!a->prog || !a->platform) {
        mera_fail(err, MERA_ERR_INVALID, "Simulator: needs a scheduled program and its platform");
        return NULL;
    }
    sim_inst *s = calloc(1, sizeof *s);
    if (!s) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->arena_bytes = a->prog->dram_bytes - a->prog->params_bytes;
    /* A mapped deploy.params (the deploy runtime): the weights are packed at
     * load and the image's pages released, so they are resident once. */
    dna_machine_options mo = {.release_const_pages = a->params_mapped, .threads = a->num_threads};
    if (!(s->m = dna_machine_new_opts(a->g, a->prog, a->platform, a->param_data, &mo, err))) {
        mera_error_prefix(err, "loading the DNA program: ");
        free(s);
        return NULL;
    }
    return s;
}

static mera_status sim_run(void *inst, const void *const *inputs, void *const *outputs, mera_error *err)
{
    return dna_machine_run(((sim_inst *)inst)->m, inputs, outputs, err);
}

static void sim_metrics(const void *inst, mera_backend_metrics *m)
{
    const sim_inst *s = inst;
    memset(m, 0, sizeof *m);
    const dna_timing *t = dna_machine_timing(s->m);
    m->arena_bytes = (size_t)s->arena_bytes;
    m->device_us = t->device_us;
    m->device_cycles = t->device_cycles;
    m->clock_mhz = t->clock_mhz;
    m->host_us = t->host_us;
}

static void sim_free(void *inst)
{
    sim_inst *s = inst;
    if (s)
        dna_machine_free(s->m);
    free(s);
}

static const dna_timing *sim_timing(const void *inst)
{
    return dna_machine_timing(((const sim_inst *)inst)->m);
}

static mera_status sim_write_trace(const void *inst, const char *path, mera_error *err)
{
    return dna_machine_write_trace(((const sim_inst *)inst)->m, path, err);
}

static const mera_backend simulator = {
    .name = "Simulator",
    .doc = "the DNA program run bit-exactly on the host, with the timing model",
    .runs_program = 1,
    .layout_nhwc = 1,
    .thread_safe_run = 1,
    .mera_time_key = "sim_time_us",
    .load = sim_load,
    .run = sim_run,
    .metrics = sim_metrics,
    .free = sim_free,
    .timing = sim_timing,
    .write_trace = sim_write_trace,
};

/* ---- IP (ip.c) ------------------------------------------------------------ */

static const mera_backend ip = {
    .name = "IP",
    .doc = "the DNA program on a device through the HAL (built in: the emulated device)",
    .runs_program = 1,
    .layout_nhwc = 1,
    .thread_safe_run = 0,
    .runs_through_deploy = 1,
    .mera_time_key = "elapsed_latency",
    .load = mera_ip_load,
    .run = mera_ip_run,
    .metrics = mera_ip_metrics,
    .free = mera_ip_free,
    .timing = mera_ip_timing,
    .write_trace = mera_ip_write_trace,
};

/* ---- the table ------------------------------------------------------------ */

const mera_backend *const mera_backends[] = {&interpreter, &interpreter_hw, &simulator, &ip, NULL};

const mera_backend *mera_backend_find(const char *name)
{
    if (!name)
        return NULL;
    for (int i = 0; mera_backends[i]; i++)
        if (strcmp(mera_backends[i]->name, name) == 0)
            return mera_backends[i];
    return NULL;
}

void mera_backend_names(char *buf, size_t n)
{
    size_t at = 0;
    if (n)
        buf[0] = 0;
    for (int i = 0; mera_backends[i] && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%s", i ? ", " : "", mera_backends[i]->name);
}
