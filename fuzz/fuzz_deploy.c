/* libFuzzer targets: the deploy runtime's loader and runner (csrc/runtime),
 * from the deploy directory's two data files.
 *
 * Built twice (fuzz/build.sh):
 *   FUZZ_DEPLOY_JSON    the input is deploy.json; deploy.params is the seed
 *                       of the target the text names (fuzz/seeds/<T>.params)
 *   FUZZ_DEPLOY_PARAMS  the input is a selector byte (0 Interpreter,
 *                       1 InterpreterHw, 2 Simulator, 3 IP) and deploy.params;
 *                       its trailing checksum is recomputed, and the size and
 *                       checksum in that target's seed deploy.json
 *                       (fuzz/seeds/<T>.json) are rewritten to match, so that
 *                       mutations reach the section, graph, PARAMS and
 *                       program readers and the backends.
 * Both files go to a private directory (under /dev/shm when it exists), the
 * runtime loads it (mera_rt_create, no model id: every field check runs) and,
 * when it loads, runs one inference on zero inputs. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/runtime.h"
#include "util/bytes.h"

#ifndef MERA_FUZZ_SEEDS
#error "build with -DMERA_FUZZ_SEEDS=\"<repo>/fuzz/seeds\" (fuzz/build.sh does)"
#endif

/* A request for more than 1 GiB returns NULL, as on a host that has less:
 * the runtime must report NOMEM, and libFuzzer's malloc limit is never hit
 * by a deploy file that asks for much memory (a size the build's deploy.json
 * would have to agree with, when deploy.so loads it). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=1024";
}

static const char *const targets[4] = {"Interpreter", "InterpreterHw", "Simulator", "IP"};
static char dir[256];
static char json_path[300], params_path[300];
static uint8_t *seed_params[4];
static size_t seed_params_len[4];
static char *seed_json[4];

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_deploy: cannot open seed %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
        exit(2);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void put(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n)
        exit(2);
    fclose(f);
}

/* The directory exists only during one input (libFuzzer ends with _Exit,
 * which runs no atexit handler). */
static void remove_dir(void)
{
    unlink(json_path);
    unlink(params_path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "%s/mera-fuzz-%d", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    snprintf(json_path, sizeof json_path, "%s/deploy.json", dir);
    snprintf(params_path, sizeof params_path, "%s/deploy.params", dir);
    for (int t = 0; t < 4; t++) {
        char p[512];
        size_t n;
        snprintf(p, sizeof p, "%s/%s.params", MERA_FUZZ_SEEDS, targets[t]);
        seed_params[t] = slurp(p, &seed_params_len[t]);
        snprintf(p, sizeof p, "%s/%s.json", MERA_FUZZ_SEEDS, targets[t]);
        seed_json[t] = (char *)slurp(p, &n);
    }
    return 0;
}

/* json with the numbers after "bytes": and the hex after "fnv1a64": replaced. */
static char *patch_json(const char *json, size_t bytes, uint64_t sum)
{
    const char *b = strstr(json, "\"bytes\": ");
    const char *f = strstr(json, "\"fnv1a64\": \"");
    if (!b || !f || f < b)
        return strdup(json);
    b += 9;
    const char *b_end = b;
    while (*b_end >= '0' && *b_end <= '9')
        b_end++;
    f += 12;
    size_t n = strlen(json) + 64;
    char *out = malloc(n);
    if (!out)
        return NULL;
    snprintf(out, n, "%.*s%zu%.*s%016llx%s", (int)(b - json), json, bytes, (int)(f - b_end), b_end,
             (unsigned long long)sum, strlen(f) >= 16 ? f + 16 : "");
    return out;
}

static void load_and_run(void)
{
    char err[512];
    int status;
    mera_deploy *d = mera_rt_create(dir, NULL, &status, err, sizeof err);
    if (!d)
        return;
    for (int i = 0; i < mera_deploy_num_inputs(d); i++) {
        mera_deploy_tensor_info info;
        if (mera_deploy_input_info(d, i, &info, err, sizeof err))
            abort();
        void *z = calloc(1, info.nbytes ? info.nbytes : 1);
        if (!z || mera_deploy_set_input(d, i, z, info.nbytes, err, sizeof err))
            abort(); /* the ABI's own sizes must be accepted */
        free(z);
    }
    if (mera_deploy_run(d, err, sizeof err) == 0) {
        for (int i = 0; i < mera_deploy_num_outputs(d); i++) {
            mera_deploy_tensor_info info;
            if (mera_deploy_output_info(d, i, &info, err, sizeof err))
                abort();
            void *o = malloc(info.nbytes ? info.nbytes : 1);
            if (!o || mera_deploy_get_output(d, i, o, info.nbytes, err, sizeof err))
                abort();
            free(o);
        }
    }
    mera_deploy_destroy(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (mkdir(dir, 0700) != 0 && access(dir, W_OK) != 0)
        abort();
#if defined(FUZZ_DEPLOY_JSON)
    int t = 3;
    for (int k = 0; k < 4; k++) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\"", targets[k]);
        if (memmem(data, size, key, strlen(key)))
            t = k; /* the last match: "InterpreterHw" after "Interpreter" */
    }
    put(params_path, seed_params[t], seed_params_len[t]);
    put(json_path, data, size);
#elif defined(FUZZ_DEPLOY_PARAMS)
    if (size < 1) {
        remove_dir();
        return 0;
    }
    int t = data[0] % 4;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        remove_dir();
        return 0;
    }
    memcpy(buf, p, n);
    uint64_t sum = 0;
    if (n >= 8) {
        sum = mera_fnv1a64(buf, n - 8);
        for (int i = 0; i < 8; i++)
            buf[n - 8 + i] = (uint8_t)(sum >> (8 * i));
    }
    char *js = patch_json(seed_json[t], n, sum);
    if (!js) {
        free(buf);
        remove_dir();
        return 0;
    }
    put(params_path, buf, n);
    put(json_path, js, strlen(js));
    free(js);
    free(buf);
#else
#error "define FUZZ_DEPLOY_JSON or FUZZ_DEPLOY_PARAMS"
#endif
    load_and_run();
    remove_dir();
    return 0;
}
