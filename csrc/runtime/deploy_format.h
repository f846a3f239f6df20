/* The deploy directory's format: what its writer (codegen/deploy_write.c,
 * in the compiler) and its loader (runtime.c, in deploy.so) share.
 *
 *   deploy.params  binary: the graph (IR serializer), the data of every
 *                  PARAM the host reads (64-byte aligned, in
 *                  mera_graph_input order; DNA layers read their weights
 *                  from the program's constant image only), and
 *                  for targets that run a DNA program the program
 *                  (isa/program.c); magic "MERAPRM\n", format version, a
 *                  section table, an FNV-1a 64 checksum.
 *   deploy.json    text: format version, target, host_arch, platform and
 *                  its parameters, scheduler options, inputs and outputs,
 *                  the size and checksum of deploy.params, the ABI version
 *                  deploy.so must implement.
 *
 * docs/deploy.md gives both byte by byte. */
#ifndef MERA_RUNTIME_DEPLOY_FORMAT_H
#define MERA_RUNTIME_DEPLOY_FORMAT_H

/* 2: the PARAMS section of a DNA program's target (Simulator, IP) holds
 * only the params the host reads; weights_bytes counts the constant image.
 * 1 stored every weight twice (PARAMS and the constant image). */
#define MERA_DEPLOY_FORMAT_VERSION 2

#define MERA_PARAMS_MAGIC "MERAPRM\n"
#define MERA_PARAMS_MAGIC_LEN 8
#define MERA_PARAMS_ALIGN 64
#define MERA_PARAMS_HEADER_LEN 16     /* magic, u32 version, u32 section count */
#define MERA_PARAMS_SECTION_ENTRY 20  /* u32 kind, u64 offset, u64 length */
#define MERA_PARAMS_MAX_SECTIONS 16
#define MERA_PARAMS_CHECKSUM_LEN 8
#define MERA_PARAMS_MAX_NAME 4096     /* bytes of one PARAM name in the index */
#define MERA_PARAMS_MAX_BYTES (1ull << 38) /* 256 GiB: the largest deploy.params a loader accepts */

enum {
    MERA_SECTION_GRAPH = 1,   /* mera_graph_serialize bytes */
    MERA_SECTION_PARAMS = 2,  /* index + PARAM data, 64-byte aligned */
    MERA_SECTION_PROGRAM = 3, /* dna_program_serialize bytes (Simulator, IP) */
};

const char *mera_section_name(int kind);

#endif
