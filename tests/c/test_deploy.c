/* C unit tests of the deploy runtime (csrc/runtime): the deploy files of
 * every target (compile driver + codegen/deploy_write.c), loading the files back with mera_rt_create and running
 * them (InterpreterHw's bytes for InterpreterHw, Simulator and IP), and
 * refusing every corrupted copy with a message, never crashing. Built and
 * run by tests/test_c_core.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/platform.h"
#include "backends/interp.h"
#include "driver/driver.h"
#include "ir/ir.h"
#include "runtime/deploy_format.h"
#include "runtime/json.h"
#include "runtime/mera_deploy.h"
#include "runtime/runtime.h"
#include "util/bytes.h"
#include "testutil.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define VERSION_TEXT STR(MERA_DEPLOY_FORMAT_VERSION)

/* ---- the graph: quantize (host) -> conv 3x3 + relu (DNA) -> add (DNA) ->
 * dequantize (host); outputs the float result and the add's bytes ---- */

enum { H = 7, W = 6, C = 5, O = 8 };

#define ABI_TEXT_(x) #x
#define ABI_TEXT(x) ABI_TEXT_(x) /* "3": deploy.json's abi_version as written */

static int8_t w_data[O * C * 3 * 3];
static float b_data[O];
static float x_data[H * W * C];
static uint8_t y_data[H * W * O];

static mera_graph *make_graph(void)
{
    mera_graph *g = mera_graph_new("deploynet");
    mera_error err;
    int64_t xs[] = {1, H, W, C}, ys[] = {1, H, W, O}, ws[] = {O, C, 3, 3}, bs[] = {O};
    mera_type x = tensor(MERA_DTYPE_FLOAT32, 4, xs);
    x.layout = MERA_LAYOUT_NHWC;
    mera_type y = qtensor(MERA_DTYPE_UINT8, 4, ys, MERA_LAYOUT_NHWC, 0.03, 100);
    static double scales[O] = {0.011, 0.007, 0.02, 0.013, 0.009, 0.017, 0.012, 0.008};
    static int32_t zps[O] = {0};
    mera_type w = tensor(MERA_DTYPE_INT8, 4, ws);
    w.q.kind = MERA_QUANT_PER_AXIS;
    w.q.axis = 0;
    w.q.count = O;
    w.q.scales = scales;
    w.q.zero_points = zps;
    mera_type b = tensor(MERA_DTYPE_FLOAT32, 1, bs);
    int vx = mera_graph_add_input(g, "x", &x, &err);
    int vw = mera_graph_add_param(g, "w", &w, &err);
    int vb = mera_graph_add_param(g, "b", &b, &err);
    int vy = mera_graph_add_input(g, "y", &y, &err);
    CHECK(vx >= 0 && vw >= 0 && vb >= 0 && vy >= 0);
    int out[4], outs[2];
    mera_attr qa[] = {flt("scale", 0.05), integer("zero_point", 17), str("dtype", "uint8")};
    int q_in[] = {vx};
    CHECK(mera_graph_add_node(g, MERA_OP_QUANTIZE, "q", q_in, 1, qa, 3, NULL, out, 4, &err) >= 0);
    int64_t pad[] = {1, 1, 1, 1};
    mera_attr a[] = {ints("padding", 4, pad), str("layout", "NHWC"), str("activation", "relu"),
                     flt("out_scale", 0.04), integer("out_zero_point", 3)};
    int ins[] = {out[0], vw, vb};
    CHECK(mera_graph_add_node(g, MERA_OP_CONV2D, "conv", ins, 3, a, 5, NULL, out, 4, &err) >= 0);
    int add_in[] = {out[0], vy};
    mera_attr aa[] = {flt("out_scale", 0.06), integer("out_zero_point", 50)};
    CHECK(mera_graph_add_node(g, MERA_OP_ADD, "add", add_in, 2, aa, 2, NULL, out, 4, &err) >= 0);
    outs[1] = out[0];
    int d_in[] = {out[0]};
    CHECK(mera_graph_add_node(g, MERA_OP_DEQUANTIZE, "dq", d_in, 1, NULL, 0, NULL, out, 4, &err) >= 0);
    outs[0] = out[0];
    CHECK(mera_graph_set_outputs(g, outs, 2, &err) == MERA_OK);
    return g;
}

static void fill_data(void)
{
    unsigned s = 12345;
    for (size_t i = 0; i < sizeof w_data; i++) {
        s = s * 1103515245u + 12345u;
        w_data[i] = (int8_t)((s >> 16) % 255 - 127);
    }
    for (int i = 0; i < O; i++)
        b_data[i] = (float)(i * 0.37 - 1.1);
    for (size_t i = 0; i < sizeof x_data / sizeof x_data[0]; i++) {
        s = s * 1103515245u + 12345u;
        x_data[i] = (float)((s >> 16) % 1000) / 100.0f - 5.0f;
    }
    for (size_t i = 0; i < sizeof y_data; i++) {
        s = s * 1103515245u + 12345u;
        y_data[i] = (uint8_t)(s >> 16);
    }
}

/* ---- files ---------------------------------------------------------------- */

static char root_dir[256];

static int write_file(const char *dir, const char *name, const void *data, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}

static void write_dir(const char *dir, const uint8_t *params, size_t len, const char *json)
{
    CHECK(write_file(dir, "deploy.params", params, len) == 0);
    CHECK(write_file(dir, "deploy.json", json, strlen(json)) == 0);
}

static void remove_dir(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/deploy.params", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/deploy.json", dir);
    unlink(path);
    rmdir(dir);
}

/* A copy of json with the first occurrence of from replaced by to. */
static char *replace(const char *json, const char *from, const char *to)
{
    const char *at = strstr(json, from);
    if (!at)
        return NULL;
    size_t n = strlen(json) - strlen(from) + strlen(to) + 1;
    char *r = malloc(n);
    size_t pre = (size_t)(at - json);
    memcpy(r, json, pre);
    strcpy(r + pre, to);
    strcat(r, at + strlen(from));
    return r;
}

/* ---- helpers -------------------------------------------------------------- */

static const void *const *params_of(const mera_graph *g)
{
    static const void *p[8];
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        const char *name = mera_graph_value(g, mera_graph_input(g, k))->name;
        p[k] = strcmp(name, "w") == 0 ? (const void *)w_data : strcmp(name, "b") == 0 ? (const void *)b_data : NULL;
    }
    return p;
}

/* The deploy files of g for target, through the compile driver as mera.build does. */
static mera_status prepare(const mera_graph *g, const char *target, mera_deploy_files *f, mera_error *err)
{
    mera_compile_options o;
    memset(&o, 0, sizeof o);
    if (!(o.backend = mera_backend_find(target)))
        return mera_fail(err, MERA_ERR_CONFIG, "unknown target '%s'", target);
    o.platform = mera_platform_find("DNAF100L0003");
    mera_compiled *c = mera_compile(g, params_of(g), &o, err);
    if (!c)
        return err->code;
#if defined(__aarch64__) || defined(__arm__)
    mera_status st = mera_compiled_deploy_files(c, "arm", f, err);
#else
    mera_status st = mera_compiled_deploy_files(c, "x86", f, err);
#endif
    mera_compiled_free(c);
    return st;
}

/* Loading dir must fail with a message (containing needle, if given) and
 * the status want (the class the caller reports: Python's MeraError
 * subclass); the status is returned. */
static int expect_refused(const char *dir, const char *id, const char *needle, int want, const char *what)
{
    char msg[1024];
    msg[0] = 0;
    int status = -1;
    mera_deploy *d = mera_rt_create(dir, id, &status, msg, sizeof msg);
    if (status != want) {
        failed++;
        fprintf(stderr, "%s: status %d, expected %d (%s)\n", what, status, want, msg);
    }
    if (d) {
        failed++;
        fprintf(stderr, "%s: loaded, expected a refusal\n", what);
        mera_deploy_destroy(d);
        return status;
    }
    if (!msg[0] || (needle && !strstr(msg, needle))) {
        failed++;
        fprintf(stderr, "%s: message \"%s\" lacks \"%s\"\n", what, msg, needle ? needle : "(any)");
        return status;
    }
    passed++;
    return status;
}

/* ---- tests ---------------------------------------------------------------- */

static uint8_t ref_add[H * W * O];
static float ref_float[H * W * O], ref_float_interp[H * W * O];

static void reference(const mera_graph *g)
{
    mera_error err;
    for (int mode = 0; mode < 2; mode++) {
        mera_interp *it = mera_interp_compile(g, mode ? MERA_INTERP_HW : MERA_INTERP_FLOAT, params_of(g), &err);
        CHECK(it != NULL);
        if (!it)
            return;
        const void *in[] = {x_data, y_data};
        uint8_t add_out[H * W * O];
        void *out[] = {mode ? ref_float : ref_float_interp, add_out};
        CHECK(mera_interp_run(it, in, out, &err) == MERA_OK);
        if (mode)
            memcpy(ref_add, add_out, sizeof ref_add);
        mera_interp_free(it);
    }
}

/* deploy.json against the build's copy (as deploy.so embeds it), special
 * files in place of a data file, and deploy.params rewritten in place under
 * a loaded handle. The directory is restored before returning. */
static void test_build_json_and_files(const char *dir, const mera_deploy_files *f, const char *target)
{
    char msg[1024] = "";
    int status = -1;
    size_t n = strlen(f->json);
    mera_deploy *d = mera_rt_create_for_build(dir, f->model_id, f->json, n, &status, msg, sizeof msg);
    CHECK(d != NULL && status == MERA_DEPLOY_OK);
    mera_deploy_destroy(d);
    /* the build's copy says another arena: the disk's field is named with both values */
    const char *at = strstr(f->json, "\"arena_bytes\": ");
    CHECK(at != NULL);
    if (at) {
        char *alt = malloc(n + 32);
        long long arena = strtoll(at + 15, NULL, 10);
        const char *rest = at + 15;
        while (*rest >= '0' && *rest <= '9')
            rest++;
        snprintf(alt, n + 32, "%.*s%lld%s", (int)(at + 15 - f->json), f->json, arena + 64, rest);
        d = mera_rt_create_for_build(dir, f->model_id, alt, strlen(alt), &status, msg, sizeof msg);
        CHECK(d == NULL && status == MERA_DEPLOY_ERR_FORMAT && strstr(msg, "field 'arena_bytes'") &&
              strstr(msg, "this deploy.so was built with"));
        if (d)
            mera_deploy_destroy(d);
        free(alt);
    }
    /* a FIFO and a directory in place of each data file: refused without blocking */
    const char *names[2] = {"deploy.json", "deploy.params"};
    for (int k = 0; k < 2; k++) {
        char path[600], what[96];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        unlink(path);
        CHECK(mkfifo(path, 0600) == 0);
        snprintf(what, sizeof what, "%s: FIFO as %s", target, names[k]);
        expect_refused(dir, NULL, "is not a regular file (a FIFO)", MERA_DEPLOY_ERR_IO, what);
        unlink(path);
        CHECK(mkdir(path, 0700) == 0);
        snprintf(what, sizeof what, "%s: directory as %s", target, names[k]);
        expect_refused(dir, NULL, "is not a regular file (a directory)", MERA_DEPLOY_ERR_IO, what);
        rmdir(path);
        write_dir(dir, f->params, f->params_len, f->json);
    }
    /* deploy.params rewritten in place (shorter) after loading: the next run is refused, no SIGBUS */
    d = mera_rt_create(dir, f->model_id, NULL, msg, sizeof msg);
    CHECK(d != NULL);
    if (d) {
        CHECK(write_file(dir, "deploy.params", f->params, f->params_len / 2) == 0);
        for (int i = 0; i < mera_deploy_num_inputs(d); i++) {
            mera_deploy_tensor_info info;
            CHECK(mera_deploy_input_info(d, i, &info, msg, sizeof msg) == 0);
            void *z = calloc(1, info.nbytes);
            CHECK(mera_deploy_set_input(d, i, z, info.nbytes, msg, sizeof msg) == 0);
            free(z);
        }
        CHECK(mera_deploy_run(d, msg, sizeof msg) == MERA_DEPLOY_ERR_RUNTIME &&
              strstr(msg, "deploy.params changed after it was loaded"));
        mera_deploy_destroy(d);
    }
    write_dir(dir, f->params, f->params_len, f->json);
}

static void test_target(const mera_graph *g, const char *target)
{
    mera_error err;
    mera_deploy_files f;
    CHECK(prepare(g, target, &f, &err) == MERA_OK);
    if (!f.params) {
        fprintf(stderr, "%s: prepare: %s\n", target, err.msg);
        return;
    }
    CHECK(strlen(f.model_id) == 16);
    CHECK(strstr(f.json, "\"format\": \"mera-deploy\"") != NULL);
    CHECK(strstr(f.json, f.model_id) != NULL);
    /* the json we write reads back */
    mj_doc doc;
    char jmsg[256];
    CHECK(mj_parse(f.json, strlen(f.json), &doc, jmsg, sizeof jmsg) == 0);
    const mj_node *tg = mj_get(doc.root, "target");
    CHECK(tg && tg->kind == MJ_STRING && strcmp(tg->str, target) == 0);
    mj_doc_free(&doc);

    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", root_dir, target);
    CHECK(mkdir(dir, 0700) == 0);
    write_dir(dir, f.params, f.params_len, f.json);
    char msg[1024] = "";
    mera_deploy *d = mera_rt_create(dir, f.model_id, NULL, msg, sizeof msg);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "%s: create: %s\n", target, msg);
        mera_deploy_files_free(&f);
        remove_dir(dir);
        return;
    }
    CHECK(mera_deploy_num_inputs(d) == 2 && mera_deploy_num_outputs(d) == 2);
    mera_deploy_tensor_info info;
    CHECK(mera_deploy_input_info(d, 0, &info, msg, sizeof msg) == 0);
    CHECK(strcmp(info.name, "x") == 0 && info.dtype == MERA_DEPLOY_FLOAT32 && info.rank == 4 && info.shape[1] == H &&
          info.nbytes == sizeof x_data);
    CHECK(mera_deploy_output_info(d, 1, &info, msg, sizeof msg) == 0);
    CHECK(strcmp(info.name, "add") == 0 && info.dtype == MERA_DEPLOY_UINT8 && info.nbytes == sizeof ref_add);
    CHECK(mera_deploy_input_info(d, 2, &info, msg, sizeof msg) == MERA_DEPLOY_ERR_INVALID);
    CHECK(strstr(msg, "out of range") != NULL);
    /* run before every input is set */
    CHECK(mera_deploy_set_input(d, 0, x_data, sizeof x_data, msg, sizeof msg) == 0);
    CHECK(mera_deploy_run(d, msg, sizeof msg) == MERA_DEPLOY_ERR_INVALID);
    CHECK(strstr(msg, "('y') was not set") != NULL);
    CHECK(mera_deploy_set_input(d, 1, y_data, 3, msg, sizeof msg) == MERA_DEPLOY_ERR_INVALID);
    CHECK(mera_deploy_set_input(d, 1, y_data, sizeof y_data, msg, sizeof msg) == 0);
    uint8_t add_out[H * W * O];
    float fl[H * W * O];
    CHECK(mera_deploy_get_output(d, 1, add_out, sizeof add_out, msg, sizeof msg) == MERA_DEPLOY_ERR_INVALID);
    for (int rep = 0; rep < 2; rep++) {
        int rc = mera_deploy_run(d, msg, sizeof msg);
        CHECK(rc == 0);
        if (rc)
            fprintf(stderr, "%s: run: %s\n", target, msg);
        CHECK(mera_deploy_get_output(d, 0, fl, sizeof fl, msg, sizeof msg) == 0);
        CHECK(mera_deploy_get_output(d, 1, add_out, sizeof add_out, msg, sizeof msg) == 0);
        if (strcmp(target, "Interpreter") == 0) {
            CHECK(memcmp(fl, ref_float_interp, sizeof fl) == 0);
            double worst = 0;
            for (int i = 0; i < H * W * O; i++)
                worst = fmax(worst, fabs((double)fl[i] - ref_float[i]));
            CHECK(worst <= 0.06 * 2 + 1e-6); /* within two steps of the output scale */
        } else {
            CHECK(memcmp(add_out, ref_add, sizeof add_out) == 0);
            CHECK(memcmp(fl, ref_float, sizeof fl) == 0);
        }
    }
    mera_deploy_metrics m;
    CHECK(mera_deploy_get_metrics(d, &m) == 0);
    CHECK(strcmp(m.target, target) == 0);
    if (strcmp(target, "Simulator") == 0 || strcmp(target, "IP") == 0) /* the constant image: weights and bias */
        CHECK(m.weights_bytes >= sizeof w_data + sizeof b_data);
    else
        CHECK(m.weights_bytes == sizeof w_data + sizeof b_data);
    CHECK(m.last_run_us > 0);
    CHECK(m.arena_bytes > 0);
    if (strcmp(target, "Simulator") == 0 || strcmp(target, "IP") == 0) {
        CHECK(m.device_us > 0 && m.device_cycles > 0);
        /* the device alone (cycles at the clock); the modelled host time apart */
        CHECK(m.clock_mhz == 300 && fabs(m.device_us - (double)m.device_cycles / m.clock_mhz) <= 1e-9 * m.device_us);
        CHECK(m.host_us > 0);
        CHECK(strcmp(m.platform, "DNAF100L0003") == 0);
        CHECK(strcmp(m.device, strcmp(target, "IP") == 0 ? "emulated" : "") == 0);
    } else {
        CHECK(m.device_us == 0 && m.device_cycles == 0 && m.host_us == 0 && strcmp(m.platform, "") == 0);
    }
    mera_deploy_destroy(d);
    /* no check of the model id */
    int status = -1;
    d = mera_rt_create(dir, NULL, &status, msg, sizeof msg);
    CHECK(d != NULL && status == MERA_DEPLOY_OK);
    mera_deploy_destroy(d);
    expect_refused(dir, "0123456789abcdef", "built for model 0123456789abcdef", MERA_DEPLOY_ERR_FORMAT,
                   "wrong model id");
    test_build_json_and_files(dir, &f, target);
    expect_refused(NULL, NULL, "deploy_dir is NULL", MERA_DEPLOY_ERR_INVALID, "NULL directory");
    {
        char missing[600];
        snprintf(missing, sizeof missing, "%s/no-such-dir", dir);
        expect_refused(missing, NULL, "no-such-dir", MERA_DEPLOY_ERR_IO, "missing directory");
    }
    if (strcmp(target, "IP") == 0) {
        /* the device without zero-copy import: the image is copied to it */
        setenv("MERA_IP_DEVICE", "emulated-copy", 1);
        d = mera_rt_create(dir, f.model_id, NULL, msg, sizeof msg);
        CHECK(d != NULL);
        if (d) {
            CHECK(mera_deploy_set_input(d, 0, x_data, sizeof x_data, msg, sizeof msg) == 0);
            CHECK(mera_deploy_set_input(d, 1, y_data, sizeof y_data, msg, sizeof msg) == 0);
            CHECK(mera_deploy_run(d, msg, sizeof msg) == 0);
            CHECK(mera_deploy_get_output(d, 1, add_out, sizeof add_out, msg, sizeof msg) == 0);
            CHECK(memcmp(add_out, ref_add, sizeof add_out) == 0);
            CHECK(mera_deploy_get_metrics(d, &m) == 0 && strcmp(m.device, "emulated-copy") == 0);
            mera_deploy_destroy(d);
        }
        setenv("MERA_IP_DEVICE", "pcie-fpga9", 1);
        expect_refused(dir, f.model_id, "unknown device 'pcie-fpga9'", MERA_DEPLOY_ERR_UNSUPPORTED, "unknown device");
        expect_refused(dir, f.model_id, "known devices: emulated, emulated-copy", MERA_DEPLOY_ERR_UNSUPPORTED,
                       "unknown device lists");
        unsetenv("MERA_IP_DEVICE");
    }
    remove_dir(dir);
    mera_deploy_files_free(&f);
}

/* Rewrites the trailing checksum and deploy.json's size and checksum so
 * that a modified deploy.params passes the outer checks. */
static char *reseal(uint8_t *p, size_t len, const char *json, const char *old_id, size_t old_len)
{
    if (len >= 8) {
        uint64_t h = mera_fnv1a64(p, len - 8);
        for (int k = 0; k < 8; k++)
            p[len - 8 + k] = (uint8_t)(h >> (8 * k));
    }
    char id[17], from[64], to[64];
    snprintf(id, sizeof id, "%016llx", (unsigned long long)(len >= 8 ? mera_load_le(p + len - 8, 8) : 0));
    char *a = replace(json, old_id, id);
    snprintf(from, sizeof from, "\"bytes\": %zu", old_len);
    snprintf(to, sizeof to, "\"bytes\": %zu", len);
    char *b = a ? replace(a, from, to) : NULL;
    free(a);
    return b;
}

static void test_corruption(const mera_graph *g, const char *target)
{
    mera_error err;
    mera_deploy_files f;
    CHECK(prepare(g, target, &f, &err) == MERA_OK);
    if (!f.params)
        return;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/corrupt-%s", root_dir, target);
    CHECK(mkdir(dir, 0700) == 0);
    size_t len = f.params_len;
    uint8_t *p = malloc(len);
    char what[128];

    /* truncations */
    size_t step = len / 150 ? len / 150 : 1;
    for (size_t n = 0; n < len; n += (n + 16 >= len ? 1 : step)) {
        write_dir(dir, f.params, n, f.json);
        snprintf(what, sizeof what, "%s: truncated to %zu", target, n);
        expect_refused(dir, NULL, "deploy.params", MERA_DEPLOY_ERR_FORMAT, what);
    }
    /* single-byte flips */
    for (size_t off = 0; off < len; off += step / 2 + 1) {
        memcpy(p, f.params, len);
        p[off] ^= 0x5a;
        write_dir(dir, p, len, f.json);
        snprintf(what, sizeof what, "%s: byte %zu flipped", target, off);
        expect_refused(dir, NULL, "deploy.params", MERA_DEPLOY_ERR_FORMAT, what);
    }
    /* flips behind a valid checksum reach the inner readers: a refusal or
     * (weights, padding) a load; never a crash */
    int refused = 0, loaded = 0;
    for (size_t off = 0; off + 8 < len; off += step / 3 + 1) {
        memcpy(p, f.params, len);
        p[off] ^= 0xff;
        char *j = reseal(p, len, f.json, f.model_id, len);
        CHECK(j != NULL);
        if (!j)
            break;
        write_dir(dir, p, len, j);
        char msg[1024] = "";
        mera_deploy *d = mera_rt_create(dir, NULL, NULL, msg, sizeof msg);
        if (d) {
            loaded++;
            mera_deploy_set_input(d, 0, x_data, sizeof x_data, msg, sizeof msg);
            mera_deploy_set_input(d, 1, y_data, sizeof y_data, msg, sizeof msg);
            mera_deploy_run(d, msg, sizeof msg);
            mera_deploy_destroy(d);
        } else {
            refused++;
            CHECK(msg[0] != 0);
        }
        free(j);
    }
    CHECK(refused > 0);
    /* resealed truncations reach the section table checks */
    for (size_t n = 16; n + 8 < len; n += step) {
        memcpy(p, f.params, n);
        char *j = reseal(p, n + 8, f.json, f.model_id, len);
        if (!j)
            break;
        write_dir(dir, p, n + 8, j);
        snprintf(what, sizeof what, "%s: resealed truncation to %zu", target, n + 8);
        expect_refused(dir, NULL, NULL, MERA_DEPLOY_ERR_FORMAT, what);
        free(j);
    }
    /* header fields */
    memcpy(p, f.params, len);
    p[0] = 'X';
    write_dir(dir, p, len, f.json);
    expect_refused(dir, NULL, "bad magic", MERA_DEPLOY_ERR_FORMAT, "wrong magic");
    memcpy(p, f.params, len);
    p[8] = 7;
    write_dir(dir, p, len, f.json);
    expect_refused(dir, NULL, "version = 7", MERA_DEPLOY_ERR_FORMAT, "wrong version");
    memcpy(p, f.params, len);
    p[16 + 4] = 3; /* section 0's offset: misaligned, resealed */
    {
        char *j = reseal(p, len, f.json, f.model_id, len);
        write_dir(dir, p, len, j);
        expect_refused(dir, NULL, "section 0 (GRAPH): offset", MERA_DEPLOY_ERR_FORMAT, "misaligned section");
        free(j);
    }
    memcpy(p, f.params, len);
    p[16 + 12 + 2] = 0x10; /* section 0's length: beyond the file, resealed */
    {
        char *j = reseal(p, len, f.json, f.model_id, len);
        write_dir(dir, p, len, j);
        expect_refused(dir, NULL, "beyond the file", MERA_DEPLOY_ERR_FORMAT, "section beyond the file");
        free(j);
    }

    /* deploy.json */
    struct {
        const char *from, *to, *needle;
    } edits[] = {
        {"\"fnv1a64\": \"", "\"fnv1a64\": \"0", "fnv1a64"},
        {"\"version\": " VERSION_TEXT, "\"version\": 99", "field 'version' = 99"},
        {"\"abi_version\": " ABI_TEXT(MERA_DEPLOY_ABI_VERSION), "\"abi_version\": 9", "abi_version"},
        {"\"format\": \"mera-deploy\"", "\"format\": \"mera-deploy2\"", "field 'format'"},
        {"\"weights_bytes\"", "\"weights_byte\"", "field 'weights_bytes' is missing"},
        {"\"name\": \"x\"", "\"name\": \"z\"", "inputs[0]: name 'z'"},
        {"\"shape\": [1, 7, 6, 5]", "\"shape\": [1, 7, 6, 4]", "inputs[0] ('x'): shape"},
        {"\"shape\": [1, 7, 6, 5]", "\"shape\": [1, 7, 6]", "shape does not match"},
        {"\"dtype\": \"uint8\"", "\"dtype\": \"int8\"", "dtype 'int8'"},
        {"\"target\": \"", "\"target\": \"X", "field 'target'"},
        {"\"name\": \"deploy.params\"", "\"name\": \"../deploy.params\"", "params_file"},
        {"\"bytes\": ", "\"bytes\": 1", "params_file.bytes"},
        {"\"arena_bytes\": ", "\"arena_bytes\": 9", "arena_bytes"},
        {"{", "{,", "not valid JSON: byte 1"},
        {"\"inputs\": [", "\"inputs\": [,", "not valid JSON"},
        {"\"weights_bytes\"", "\"weights_bytes\": 1, \"weights_bytes\"", "duplicate key"},
    };
    for (size_t k = 0; k < sizeof edits / sizeof edits[0]; k++) {
        char *j = replace(f.json, edits[k].from, edits[k].to);
        CHECK(j != NULL);
        if (!j)
            continue;
        write_dir(dir, f.params, len, j);
        snprintf(what, sizeof what, "%s: json edit %zu", target, k);
        expect_refused(dir, NULL, edits[k].needle, MERA_DEPLOY_ERR_FORMAT, what);
        free(j);
    }
    if (strcmp(target, "Simulator") == 0) {
        char *j = replace(f.json, "\"clock_mhz\": ", "\"clock_mhz\": -");
        write_dir(dir, f.params, len, j);
        expect_refused(dir, NULL, "clock_mhz", MERA_DEPLOY_ERR_FORMAT, "negative clock");
        free(j);
        j = replace(f.json, "\"platform\": \"DNAF100L0003\"", "\"platform\": \"NOPE\"");
        write_dir(dir, f.params, len, j);
        expect_refused(dir, NULL, "unknown platform 'NOPE'", MERA_DEPLOY_ERR_FORMAT, "unknown platform");
        free(j);
    }
    {
        size_t n = strlen(f.json);
        char *j = malloc(n + 8);
        memcpy(j, f.json, n);
        strcpy(j + n, " xyz");
        write_dir(dir, f.params, len, j);
        expect_refused(dir, NULL, "unexpected data after the JSON value", MERA_DEPLOY_ERR_FORMAT,
                       "trailing garbage");
        /* every truncation of the json */
        for (size_t t = 0; t < n - 1; t += 7) {
            j[t] = 0;
            memcpy(j, f.json, t);
            j[t] = 0;
            write_dir(dir, f.params, len, j);
            snprintf(what, sizeof what, "%s: json truncated to %zu", target, t);
            expect_refused(dir, NULL, "deploy.json", MERA_DEPLOY_ERR_FORMAT, what);
        }
        free(j);
    }
    /* missing files */
    char path[600];
    snprintf(path, sizeof path, "%s/deploy.params", dir);
    write_dir(dir, f.params, len, f.json);
    unlink(path);
    expect_refused(dir, NULL, "deploy.params: cannot open", MERA_DEPLOY_ERR_IO, "missing deploy.params");
    expect_refused("/nonexistent-dir-mera", NULL, "deploy.json: cannot open", MERA_DEPLOY_ERR_IO,
                   "missing directory");
    free(p);
    remove_dir(dir);
    mera_deploy_files_free(&f);
}

static void test_json(void)
{
    mj_doc doc;
    char msg[256];
    const char *good = "{\"a\": [1, -2.5e3, \"\\u00e9\\ud83d\\ude00\", true, null], \"b\": {\"c\": -9223372036854775808}}";
    CHECK(mj_parse(good, strlen(good), &doc, msg, sizeof msg) == 0);
    const mj_node *a = mj_get(doc.root, "a");
    CHECK(a && a->count == 5 && mj_at(a, 0)->is_int && mj_at(a, 0)->i == 1 && mj_at(a, 1)->num == -2500.0);
    CHECK(strcmp(mj_at(a, 2)->str, "\xc3\xa9\xf0\x9f\x98\x80") == 0);
    const mj_node *c = mj_get(mj_get(doc.root, "b"), "c");
    CHECK(c && c->is_int && c->i == INT64_MIN);
    mj_doc_free(&doc);
    const char *bad[] = {"", "{", "[1,]", "{\"a\":1,}", "01", "1.", "\"\\x\"", "\"\\ud800\"", "[1] 2",
                         "{\"a\" 1}", "\"\x01\"", "\"\xff\"", "tru", "{\"a\":1,\"a\":2}", "\"\\u0000\"", "-",
                         "1e", "[\"unterminated]"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int rc = mj_parse(bad[k], strlen(bad[k]), &doc, msg, sizeof msg);
        CHECK(rc != 0 && strstr(msg, "byte ") == msg);
        mj_doc_free(&doc);
    }
    /* depth limit: no recursion blowup */
    char deep[1000];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    CHECK(mj_parse(deep, strlen(deep), &doc, msg, sizeof msg) != 0 && strstr(msg, "nesting deeper") != NULL);
    mj_doc_free(&doc);
    /* writer round trip */
    mj_writer w;
    memset(&w, 0, sizeof w);
    mjw_begin_object(&w);
    mjw_key(&w, "s");
    mjw_string(&w, "q\"\\\n");
    mjw_key(&w, "d");
    mjw_double(&w, 0.1);
    mjw_key(&w, "e");
    mjw_double(&w, 3.0);
    mjw_key(&w, "l");
    mjw_begin_array(&w, 1);
    mjw_int(&w, -5);
    mjw_int(&w, 7);
    mjw_end_array(&w);
    mjw_end_object(&w);
    char *txt = mjw_finish(&w);
    CHECK(txt && strstr(txt, "\"l\": [-5, 7]") != NULL);
    CHECK(txt && mj_parse(txt, strlen(txt), &doc, msg, sizeof msg) == 0);
    CHECK(mj_get(doc.root, "d") && mj_get(doc.root, "d")->num == 0.1);
    CHECK(mj_get(doc.root, "e") && !mj_get(doc.root, "e")->is_int);
    CHECK(mj_get(doc.root, "s") && strcmp(mj_get(doc.root, "s")->str, "q\"\\\n") == 0);
    mj_doc_free(&doc);
    free(txt);
}

int main(void)
{
    CHECK(mera_deploy_abi_version() == MERA_DEPLOY_ABI_VERSION);
    snprintf(root_dir, sizeof root_dir, "/tmp/mera_test_deploy_XXXXXX");
    if (!mkdtemp(root_dir)) {
        perror("mkdtemp");
        return 1;
    }
    fill_data();
    test_json();
    mera_graph *g = make_graph();
    reference(g);
    const char *targets[] = {"Interpreter", "InterpreterHw", "Simulator", "IP"};
    for (int t = 0; t < 4; t++)
        test_target(g, targets[t]);
    test_corruption(g, "InterpreterHw");
    test_corruption(g, "Simulator");
    /* bad specs */
    mera_error err;
    mera_deploy_files f;
    CHECK(prepare(g, "GPU", &f, &err) == MERA_ERR_CONFIG);
    CHECK_MSG(err, "target 'GPU'");
    mera_graph_free(g);
    rmdir(root_dir);
    return test_summary();
}
