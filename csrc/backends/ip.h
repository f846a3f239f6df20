/* The IP backend's entry points (ip.c), for the table in backend.c. */
#ifndef MERA_BACKENDS_IP_H
#define MERA_BACKENDS_IP_H

#include "backends/backend.h"

typedef struct ip_inst ip_inst;

void *mera_ip_load(const mera_backend_load_args *a, mera_error *err);
mera_status mera_ip_run(void *inst, const void *const *inputs, void *const *outputs, mera_error *err);
void mera_ip_metrics(const void *inst, mera_backend_metrics *m);
void mera_ip_free(void *inst);
const dna_timing *mera_ip_timing(const void *inst);
mera_status mera_ip_write_trace(const void *inst, const char *path, mera_error *err);

#endif
