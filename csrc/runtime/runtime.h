/* The deploy runtime's internal entry and the constants of the deploy.params
 * layout shared by the writer (deploy_format.c) and the loader (runtime.c).
 * docs/deploy.md gives the layout byte by byte. */
#ifndef MERA_RUNTIME_RUNTIME_H
#define MERA_RUNTIME_RUNTIME_H

#include <stddef.h>

#include "runtime/mera_deploy.h"

#define MERA_PARAMS_MAGIC "MERAPRM\n"
#define MERA_PARAMS_MAGIC_LEN 8
#define MERA_PARAMS_ALIGN 64
#define MERA_PARAMS_HEADER_LEN 16     /* magic, u32 version, u32 section count */
#define MERA_PARAMS_SECTION_ENTRY 20  /* u32 kind, u64 offset, u64 length */
#define MERA_PARAMS_MAX_SECTIONS 16
#define MERA_PARAMS_CHECKSUM_LEN 8
#define MERA_PARAMS_MAX_NAME 4096     /* bytes of one PARAM name in the index */

enum {
    MERA_SECTION_GRAPH = 1,   /* mera_graph_serialize bytes */
    MERA_SECTION_PARAMS = 2,  /* index + PARAM data, 64-byte aligned */
    MERA_SECTION_PROGRAM = 3, /* dna_program_serialize bytes (Simulator, IP) */
};

const char *mera_section_name(int kind);

/* Loads deploy_dir (deploy.json, deploy.params). expected_model_id: the
 * 16 hex digits deploy.so was built with, or NULL not to check. NULL on
 * failure with a message in err. deploy.so's generated entry file defines
 * mera_deploy_create() as a call of this with its embedded id. */
mera_deploy *mera_rt_create(const char *deploy_dir, const char *expected_model_id, char *err, size_t err_len);

#endif
