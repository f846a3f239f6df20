/* The host side of codegen: the data files of a deploy directory, from a
 * compiled graph (driver/driver.h) and, for targets that run a DNA
 * program, its scheduled program. deploy_format.h (shared with the loader
 * in deploy.so) gives the format.
 *
 * mera.build (Python) gets both files' bytes from here, compiles deploy.so
 * with the model id embedded, then writes deploy.so, deploy.params and
 * deploy.json in that order, each to a temporary name in the same directory
 * renamed into place: an interrupted build never leaves a half-written
 * file, and deploy.json (written last) always describes a complete
 * deploy.params. Other files in the directory are not touched. */
#ifndef MERA_CODEGEN_DEPLOY_WRITE_H
#define MERA_CODEGEN_DEPLOY_WRITE_H

#include "arch/platform.h"
#include "backends/backend.h"
#include "ir/ir.h"
#include "isa/isa.h"
#include "sched/sched.h"

typedef struct {
    const mera_backend *backend;       /* the target */
    const char *host_arch;             /* "x86" or "arm" */
    const mera_graph *g;               /* the compiled graph */
    const void *const *param_data;     /* as for mera_interp_compile */
    const mera_platform *platform;     /* runs_program backends: the platform (overrides applied); else NULL */
    const mera_sched_options *sched;   /* runs_program backends: recorded in deploy.json; NULL: defaults */
    const dna_program *prog;           /* runs_program backends: the scheduled program; else NULL */
} mera_deploy_spec;

typedef struct {
    uint8_t *params;    /* deploy.params */
    size_t params_len;
    char *json;         /* deploy.json, NUL-terminated */
    char model_id[17];  /* hex FNV-1a 64 of deploy.params: deploy.so embeds it and
                         * refuses a deploy.params from another build */
} mera_deploy_files;

/* Build both files in memory. */
mera_status mera_deploy_write(const mera_deploy_spec *spec, mera_deploy_files *out, mera_error *err);
void mera_deploy_files_free(mera_deploy_files *f);

#endif
