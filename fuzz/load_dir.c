/* Load a deploy directory with the runtime and run it once on zero inputs:
 * the driver of fuzz/ubsan_sweep.py, built with ASan and UBSan by
 * fuzz/build.sh (any undefined behaviour aborts).
 *
 *   load_dir <deploy_dir> [<build deploy.json>]
 *
 * With a second argument, the loader also compares deploy.json with that
 * text, as deploy.so does with the copy it embeds. Prints "refused: <msg>"
 * (exit 1) or "ran" (exit 0) and the outputs' FNV-1a 64. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runtime.h"
#include "util/bytes.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: load_dir <deploy_dir> [<build deploy.json>]\n");
        return 2;
    }
    char *build = NULL;
    size_t build_len = 0;
    if (argc > 2) {
        FILE *f = fopen(argv[2], "rb");
        if (!f)
            return 2;
        fseek(f, 0, SEEK_END);
        build_len = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        build = malloc(build_len + 1);
        if (!build || fread(build, 1, build_len, f) != build_len)
            return 2;
        build[build_len] = 0;
        fclose(f);
    }
    char err[1024];
    int status;
    mera_deploy *d = mera_rt_create_for_build(argv[1], NULL, build, build_len, &status, err, sizeof err);
    free(build);
    if (!d) {
        printf("refused: %s\n", err);
        return 1;
    }
    for (int i = 0; i < mera_deploy_num_inputs(d); i++) {
        mera_deploy_tensor_info info;
        mera_deploy_input_info(d, i, &info, err, sizeof err);
        void *z = calloc(1, info.nbytes ? info.nbytes : 1);
        mera_deploy_set_input(d, i, z, info.nbytes, err, sizeof err);
        free(z);
    }
    if (mera_deploy_run(d, err, sizeof err)) {
        printf("refused: %s\n", err);
        mera_deploy_destroy(d);
        return 1;
    }
    uint64_t h = MERA_FNV1A64_BASIS;
    for (int i = 0; i < mera_deploy_num_outputs(d); i++) {
        mera_deploy_tensor_info info;
        mera_deploy_output_info(d, i, &info, err, sizeof err);
        uint8_t *o = malloc(info.nbytes ? info.nbytes : 1);
        mera_deploy_get_output(d, i, o, info.nbytes, err, sizeof err);
        h = mera_fnv1a64_from(h, o, info.nbytes);
        free(o);
    }
    printf("ran %016llx\n", (unsigned long long)h);
    mera_deploy_destroy(d);
    return 0;
}
