/* Writing and reading the data files of a deploy directory.
 *
 *   deploy.params  binary: the graph (IR serializer), the data of every
 *                  PARAM (64-byte aligned, in mera_graph_input order), and
 *                  for Simulator and IP the DNA program (isa/program.c);
 *                  magic "MERAPRM\n", format version, a section table,
 *                  an FNV-1a 64 checksum. docs/deploy.md gives the layout.
 *   deploy.json    text: format version, target, host_arch, platform and
 *                  its parameters, scheduler options, inputs and outputs
 *                  (name, dtype, shape, layout, qparams), the size and
 *                  checksum of deploy.params, the ABI version deploy.so
 *                  must implement. Humans read it; the loader checks it
 *                  against deploy.params.
 *
 * mera.build (Python) gets both files' bytes from mera_deploy_prepare,
 * compiles deploy.so with the model id embedded, then writes deploy.so,
 * deploy.params and deploy.json in that order, each to a temporary name in
 * the same directory renamed into place: an interrupted build never leaves
 * a half-written file, and deploy.json (written last) always describes a
 * complete deploy.params. Other files in the directory are not touched. */
#ifndef MERA_RUNTIME_DEPLOY_FORMAT_H
#define MERA_RUNTIME_DEPLOY_FORMAT_H

#include "arch/platform.h"
#include "ir/ir.h"
#include "sched/sched.h"

#define MERA_DEPLOY_FORMAT_VERSION 1

typedef struct {
    const char *target;                /* "Interpreter", "InterpreterHw", "Simulator", "IP" */
    const char *host_arch;             /* "x86" or "arm" */
    const mera_graph *g;
    const void *const *param_data;     /* as for mera_interp_compile */
    const mera_platform *platform;     /* Simulator/IP: the platform (overrides applied); else NULL */
    const mera_sched_options *sched;   /* Simulator/IP; else NULL (defaults) */
} mera_deploy_spec;

typedef struct {
    uint8_t *params;    /* deploy.params */
    size_t params_len;
    char *json;         /* deploy.json, NUL-terminated */
    char model_id[17];  /* hex FNV-1a 64 of deploy.params: deploy.so embeds it and
                         * refuses a deploy.params from another build */
} mera_deploy_files;

/* Build both files in memory; schedules the graph for Simulator and IP. */
mera_status mera_deploy_prepare(const mera_deploy_spec *spec, mera_deploy_files *out, mera_error *err);
void mera_deploy_files_free(mera_deploy_files *f);

#endif
