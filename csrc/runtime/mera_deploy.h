/* The C ABI of deploy.so: load a deploy directory, run it, read results.
 *
 * deploy.so is a self-contained shared library (libc, libm and pthreads
 * only) that mera.build writes next to deploy.json and deploy.params. An
 * application (apps/inference, or mera.load_runtime_module through ctypes)
 * dlopens it and calls these functions; nothing else is exported.
 *
 * Every function that can fail returns MERA_DEPLOY_OK (0) or a non-zero
 * mera_deploy_status and, when err is non-NULL, writes a NUL-terminated
 * message of at most err_len bytes naming what and where (file, field,
 * input). A failed create returns NULL and its status through a pointer. Loading validates everything it
 * reads (magic, format version, sizes, checksums, shapes against the
 * graph): a truncated or corrupted deploy directory is an error, never a
 * crash.
 *
 * Loading native code means trusting its author, as with any shared
 * library: deploy.so is code, deploy.json and deploy.params are data that
 * the code validates.
 *
 * Threads: one mera_deploy handle is used by one thread at a time; create
 * one handle per thread to run in parallel. */
#ifndef MERA_DEPLOY_H
#define MERA_DEPLOY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MERA_DEPLOY_ABI_VERSION 3 /* 2: mera_deploy_create reports a status; 3: metrics' host_us, clock_mhz */

typedef enum {
    MERA_DEPLOY_OK = 0,
    MERA_DEPLOY_ERR_INVALID = 1, /* bad argument (index, size, NULL) */
    MERA_DEPLOY_ERR_FORMAT = 2,  /* a deploy file is corrupt, truncated, of another version or mismatched */
    MERA_DEPLOY_ERR_IO = 3,      /* a deploy file could not be read */
    MERA_DEPLOY_ERR_NOMEM = 4,
    MERA_DEPLOY_ERR_RUNTIME = 5, /* running failed (e.g. the device) */
    MERA_DEPLOY_ERR_UNSUPPORTED = 6,
} mera_deploy_status;

/* Element types, as in deploy.json ("float32", "int8", "uint8", "int32", "int64"). */
typedef enum {
    MERA_DEPLOY_FLOAT32 = 0,
    MERA_DEPLOY_INT8 = 1,
    MERA_DEPLOY_UINT8 = 2,
    MERA_DEPLOY_INT32 = 3,
    MERA_DEPLOY_INT64 = 4,
} mera_deploy_dtype;

#define MERA_DEPLOY_MAX_RANK 6

typedef struct {
    const char *name; /* owned by the handle */
    int dtype;        /* mera_deploy_dtype */
    int rank;
    int64_t shape[MERA_DEPLOY_MAX_RANK];
    size_t nbytes;
} mera_deploy_tensor_info;

typedef struct {
    const char *target;      /* "Interpreter", "InterpreterHw", "Simulator", "IP" */
    const char *platform;    /* "DNAF100L0003", ... ("" for the interpreters) */
    const char *device;      /* IP: the HAL device's name ("emulated", ...); else "" */
    double last_run_us;      /* wall time of the last mera_deploy_run on the host */
    double device_us;        /* Simulator and IP: the device's latency of one inference, device_cycles
                              * at clock_mhz (no host time); 0 for the interpreters */
    int64_t device_cycles;   /* Simulator and IP: device cycles of one inference */
    size_t weights_bytes;    /* bytes of deploy.params' weight data: PARAM data and the DNA constant image */
    size_t arena_bytes;      /* bytes of the planned activation memory */
    double host_us;          /* Simulator and IP: the timing model's host time of one inference (host
                              * nodes, PCIe transfers, the call); device_us + host_us is the end-to-end
                              * estimate (deploy.json's latency_us) */
    double clock_mhz;        /* Simulator and IP: the device clock */
} mera_deploy_metrics;

typedef struct mera_deploy mera_deploy;

/* deploy.so is compiled with -fvisibility=hidden and linked with a version
 * script exporting mera_deploy_*: these functions alone are visible. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* The ABI version this deploy.so implements (MERA_DEPLOY_ABI_VERSION). */
int mera_deploy_abi_version(void);

/* Load deploy_dir/deploy.json and deploy_dir/deploy.params. On failure
 * returns NULL, and *status (if status is non-NULL) gets the
 * mera_deploy_status saying why (MERA_DEPLOY_ERR_IO: a file could not be
 * read; MERA_DEPLOY_ERR_FORMAT: corrupt, mismatched or of another version;
 * ...); on success *status is MERA_DEPLOY_OK. */
mera_deploy *mera_deploy_create(const char *deploy_dir, int *status, char *err, size_t err_len);
void mera_deploy_destroy(mera_deploy *d);

int mera_deploy_num_inputs(const mera_deploy *d);
int mera_deploy_num_outputs(const mera_deploy *d);
int mera_deploy_input_info(const mera_deploy *d, int i, mera_deploy_tensor_info *info, char *err, size_t err_len);
int mera_deploy_output_info(const mera_deploy *d, int i, mera_deploy_tensor_info *info, char *err, size_t err_len);

/* Copies nbytes (must equal the input's nbytes) of C-contiguous data. */
int mera_deploy_set_input(mera_deploy *d, int i, const void *data, size_t nbytes, char *err, size_t err_len);
/* Runs one inference on the inputs set last (every input must be set). */
int mera_deploy_run(mera_deploy *d, char *err, size_t err_len);
/* Copies output i of the last run into data (nbytes must equal its nbytes). */
int mera_deploy_get_output(const mera_deploy *d, int i, void *data, size_t nbytes, char *err, size_t err_len);

int mera_deploy_get_metrics(const mera_deploy *d, mera_deploy_metrics *m);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif
