/* The deploy runtime: the C ABI of deploy.so (mera_deploy.h).
 *
 * Loading reads deploy.json (bounded, strict), maps deploy.params read-only
 * and validates both against each other before anything is interpreted:
 * magic, format version, the section table, the checksum, then each
 * section with its own validating reader (IR deserializer, the PARAMS
 * index, the DNA program deserializer). Weights are never copied: the
 * PARAM data and the program's constant image point into the mapping.
 *
 * The target named in deploy.json is looked up once in the backend table
 * (backends/backend.h), which loads and runs it: the interpreters, the
 * Simulator's DNA machine, or the IP's device through the HAL. */
#define _DEFAULT_SOURCE /* madvise */
#include "runtime/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h> /* malloc_trim */
#endif

#include "arch/platform.h"
#include "backends/backend.h"
#include "ir/ir.h"
#include "isa/isa.h"
#include "runtime/deploy_format.h"
#include "runtime/json.h"
#include "sim/sim.h"
#include "util/bytes.h"


/* The ABI functions stay exported when deploy.so is built with
 * -fvisibility=hidden (everything else in it is internal). */
#if defined(__GNUC__)
#define MERA_RT_EXPORT __attribute__((visibility("default")))
#else
#define MERA_RT_EXPORT
#endif

struct mera_deploy {
    const mera_backend *backend;
    void *inst;              /* the backend's instance */
    char target[16];
    char platform_name[64];
    char device[64];
    /* deploy.params: mapped (or read) */
    uint8_t *file;
    size_t file_len;
    int mapped;
    int params_fd;           /* kept open: the checksum reads it, each run checks it is unchanged */
    struct stat params_st;   /* at load: device, inode, size, mtime */
    mera_graph *g;
    const void **param_data; /* per mera_graph_input index */
    dna_program *prog;       /* constant image borrowed from file */
    mera_platform plat;
    /* tensors */
    int n_in, n_out;
    int *in_vals, *out_vals;
    mera_deploy_tensor_info *in_info, *out_info;
    void **in_buf, **out_buf;
    int *in_set;
    int have_outputs;
    mera_deploy_metrics metrics;
};

/* ---- messages ---------------------------------------------------------- */

static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* The code of this thread's last fail(): what mera_rt_create reports as its
 * status, whichever reader deep inside the load failed. */
static _Thread_local int last_fail_code;

static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
    last_fail_code = code;
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int status_code(mera_status s)
{
    switch (s) {
    case MERA_OK: return MERA_DEPLOY_OK;
    case MERA_ERR_FORMAT: return MERA_DEPLOY_ERR_FORMAT;
    case MERA_ERR_IO: return MERA_DEPLOY_ERR_IO;
    case MERA_ERR_NOMEM: return MERA_DEPLOY_ERR_NOMEM;
    case MERA_ERR_UNSUPPORTED: return MERA_DEPLOY_ERR_UNSUPPORTED;
    case MERA_ERR_RUNTIME: return MERA_DEPLOY_ERR_RUNTIME;
    case MERA_ERR_INVALID: return MERA_DEPLOY_ERR_INVALID;
    default: return MERA_DEPLOY_ERR_FORMAT;
    }
}

MERA_RT_EXPORT int mera_deploy_abi_version(void)
{
    return MERA_DEPLOY_ABI_VERSION;
}

static const char *host_arch(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return "x86";
#elif defined(__aarch64__) || defined(__arm__)
    return "arm";
#else
    return NULL;
#endif
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ---- files ------------------------------------------------------------- */

static int path_join(char *out, size_t n, const char *dir, const char *file, char *err, size_t err_len)
{
    int k = snprintf(out, n, "%s/%s", dir, file);
    if (k < 0 || (size_t)k >= n)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "deploy directory path too long: '%.100s...'", dir);
    return 0;
}

static int read_all(int fd, uint8_t *buf, size_t n, off_t at)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, at + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

/* Opens path for reading without blocking (a FIFO in place of a deploy file
 * would block open() forever) and accepts only a regular file of at most
 * max_bytes: a directory, a device (/dev/zero) or a FIFO is refused before
 * a byte is read. */
static int open_regular(const char *path, const char *what, uint64_t max_bytes, int *fd_out, struct stat *st,
                        char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fail(err, err_len, MERA_DEPLOY_ERR_IO, "%s: cannot open %s: %s", what, path, strerror(errno));
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return fail(err, err_len, MERA_DEPLOY_ERR_IO, "%s: cannot stat %s: %s", what, path, strerror(e));
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return fail(err, err_len, MERA_DEPLOY_ERR_IO, "%s: %s is not a regular file (%s)", what, path,
                    S_ISDIR(st->st_mode)    ? "a directory"
                    : S_ISFIFO(st->st_mode) ? "a FIFO"
                    : S_ISCHR(st->st_mode)  ? "a character device"
                    : S_ISBLK(st->st_mode)  ? "a block device"
                    : S_ISSOCK(st->st_mode) ? "a socket"
                                            : "not a file");
    }
    if (st->st_size < 0 || (uint64_t)st->st_size > max_bytes) {
        close(fd);
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "%s: %s has %lld bytes, more than the limit of %llu", what,
                    path, (long long)st->st_size, (unsigned long long)max_bytes);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *fd_out = fd;
    return 0;
}

/* deploy.json, at most MJ_MAX_BYTES, NUL-terminated. */
static int read_json_file(const char *path, char **out, size_t *out_len, char *err, size_t err_len)
{
    int fd;
    struct stat st;
    int rc = open_regular(path, "deploy.json", MJ_MAX_BYTES, &fd, &st, err, err_len);
    if (rc)
        return rc;
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return fail(err, err_len, MERA_DEPLOY_ERR_NOMEM, "deploy.json: out of memory");
    }
    if (read_all(fd, (uint8_t *)buf, n, 0) != 0) {
        close(fd);
        free(buf);
        return fail(err, err_len, MERA_DEPLOY_ERR_IO, "deploy.json: cannot read %s (%zu bytes)", path, n);
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return 0;
}

/* ---- deploy.json fields -------------------------------------------------- */

typedef struct {
    char *err;
    size_t err_len;
    int code;
} jctx;

static const mj_node *jfield(jctx *c, const mj_node *obj, const char *where, const char *key, mj_kind kind)
{
    if (c->code)
        return NULL;
    const mj_node *v = mj_get(obj, key);
    if (!v) {
        c->code = fail(c->err, c->err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.json: %s%s'%s' is missing", where,
                       *where ? ": field " : "field ", key);
        return NULL;
    }
    int ok = v->kind == kind || (kind == MJ_TRUE && v->kind == MJ_FALSE);
    if (!ok) {
        c->code = fail(c->err, c->err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.json: %s%s'%s' (byte %zu) must be %s, not %s",
                       where, *where ? ": field " : "field ", key, v->offset, mj_kind_name(kind), mj_kind_name(v->kind));
        return NULL;
    }
    return v;
}

static const char *jstr(jctx *c, const mj_node *obj, const char *where, const char *key)
{
    const mj_node *v = jfield(c, obj, where, key, MJ_STRING);
    return v ? v->str : NULL;
}

static int jint(jctx *c, const mj_node *obj, const char *where, const char *key, int64_t *out)
{
    const mj_node *v = jfield(c, obj, where, key, MJ_NUMBER);
    if (!v)
        return -1;
    if (!v->is_int) {
        c->code = fail(c->err, c->err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.json: %s%s'%s' (byte %zu) must be an integer",
                       where, *where ? ": field " : "field ", key, v->offset);
        return -1;
    }
    *out = v->i;
    return 0;
}

static int jerr(jctx *c, const mj_node *at, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int jerr(jctx *c, const mj_node *at, const char *fmt, ...)
{
    if (c->code)
        return c->code;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->code = fail(c->err, c->err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.json: %s%s", msg,
                   at ? "" : "");
    if (at && c->err && c->err_len) {
        size_t l = strlen(c->err);
        snprintf(c->err + l, c->err_len - l, " (byte %zu)", at->offset);
    }
    return c->code;
}

/* inputs[i] / outputs[i] of deploy.json against graph value v. */
static int check_tensor(jctx *c, const mj_node *t, const char *list, int i, const mera_value *v)
{
    char where[64];
    snprintf(where, sizeof where, "%s[%d]", list, i);
    if (!t || t->kind != MJ_OBJECT)
        return jerr(c, t, "%s must be an object", where);
    const char *name = jstr(c, t, where, "name");
    const char *dtype = jstr(c, t, where, "dtype");
    const mj_node *shape = jfield(c, t, where, "shape", MJ_ARRAY);
    const char *layout = jstr(c, t, where, "layout");
    const mj_node *scale = mj_get(t, "scale"), *zp = mj_get(t, "zero_point");
    if (c->code)
        return c->code;
    if (strcmp(name, v->name) != 0)
        return jerr(c, t, "%s: name '%s' but the graph's is '%s'", where, name, v->name);
    if (strcmp(dtype, mera_dtype_name(v->type.dtype)) != 0)
        return jerr(c, t, "%s ('%s'): dtype '%s' but the graph's is %s", where, name, dtype,
                    mera_dtype_name(v->type.dtype));
    int bad = shape->count != v->type.rank;
    for (int d = 0; d < v->type.rank && !bad; d++) {
        const mj_node *e = mj_at(shape, d);
        bad = !e || e->kind != MJ_NUMBER || !e->is_int || e->i != v->type.shape[d];
    }
    if (bad) {
        char gs[128];
        mera_shape_format(v->type.shape, v->type.rank, gs, sizeof gs);
        return jerr(c, shape, "%s ('%s'): shape does not match the graph's %s", where, name, gs);
    }
    if (strcmp(layout, mera_layout_name(v->type.layout)) != 0)
        return jerr(c, t, "%s ('%s'): layout '%s' but the graph's is %s", where, name, layout,
                    mera_layout_name(v->type.layout));
    int per_tensor = v->type.q.kind == MERA_QUANT_PER_TENSOR;
    if (!scale || !zp)
        return jerr(c, t, "%s ('%s'): field '%s' is missing", where, name, !scale ? "scale" : "zero_point");
    if (per_tensor ? (scale->kind != MJ_NUMBER || scale->num != v->type.q.scale) : scale->kind != MJ_NULL)
        return jerr(c, scale, "%s ('%s'): scale does not match the graph's", where, name);
    if (per_tensor ? (zp->kind != MJ_NUMBER || !zp->is_int || zp->i != v->type.q.zero_point) : zp->kind != MJ_NULL)
        return jerr(c, zp, "%s ('%s'): zero_point does not match the graph's", where, name);
    return 0;
}

static int check_tensors(jctx *c, const mj_node *root, mera_deploy *d)
{
    const mj_node *ins = jfield(c, root, "", "inputs", MJ_ARRAY);
    const mj_node *outs = jfield(c, root, "", "outputs", MJ_ARRAY);
    if (c->code)
        return c->code;
    if (ins->count != d->n_in)
        return jerr(c, ins, "field 'inputs' lists %d inputs, the graph has %d", ins->count, d->n_in);
    if (outs->count != d->n_out)
        return jerr(c, outs, "field 'outputs' lists %d outputs, the graph has %d", outs->count, d->n_out);
    for (int i = 0; i < d->n_in; i++)
        if (check_tensor(c, mj_at(ins, i), "inputs", i, mera_graph_value(d->g, d->in_vals[i])))
            return c->code;
    for (int i = 0; i < d->n_out; i++)
        if (check_tensor(c, mj_at(outs, i), "outputs", i, mera_graph_value(d->g, d->out_vals[i])))
            return c->code;
    return 0;
}

/* The platform: the named one with every field of platform_params. */
static int read_platform(jctx *c, const mj_node *root, mera_deploy *d)
{
    const char *name = jstr(c, root, "", "platform");
    const mj_node *pp = jfield(c, root, "", "platform_params", MJ_OBJECT);
    if (c->code)
        return c->code;
    const mera_platform *base = mera_platform_find(name);
    if (!base)
        return jerr(c, mj_get(root, "platform"), "field 'platform': unknown platform '%s'", name);
    d->plat = *base;
    snprintf(d->platform_name, sizeof d->platform_name, "%s", base->name);
    const mj_node *v;
    char why[160];
#define X(field, type, unit, lo, hi, doc)                                                             \
    v = jfield(c, pp, "platform_params", #field, MJ_NUMBER);                                                 \
    if (!v)                                                                                                   \
        return c->code;                                                                                       \
    if (mera_platform_param_check(#field, v->num, why, sizeof why))                                          \
        return jerr(c, v, "platform_params: field %s", why);                                                  \
    d->plat.field = (type)v->num;
    MERA_ARCH_PARAMS(X)
#undef X
    return 0;
}

/* An integer field inside [lo, hi]. */
static int jrange(jctx *c, const mj_node *obj, const char *where, const char *key, int64_t lo, int64_t hi,
                  int64_t *out)
{
    if (jint(c, obj, where, key, out))
        return -1;
    if (*out < lo || *out > hi) {
        jerr(c, mj_get(obj, key), "%s%sfield '%s' = %lld is outside [%lld, %lld]", where, *where ? ": " : "", key,
             (long long)*out, (long long)lo, (long long)hi);
        return -1;
    }
    return 0;
}

/* A field that must be JSON null (the interpreters have no platform). */
static int jnull(jctx *c, const mj_node *root, const char *key)
{
    return jfield(c, root, "", key, MJ_NULL) ? 0 : -1;
}

/* What deploy.json records about the build without the runtime using it to
 * run (the scheduler's options, the modelled latency) is range-checked
 * too: tools read it. */
static int check_build_record(jctx *c, const mj_node *root, int dna)
{
    if (!dna)
        return jnull(c, root, "platform") || jnull(c, root, "platform_params") || jnull(c, root, "scheduler") ||
                       jnull(c, root, "latency_us")
                   ? c->code
                   : 0;
    const mj_node *sc = jfield(c, root, "", "scheduler", MJ_OBJECT);
    const char *mode = jstr(c, sc, "scheduler", "mode");
    if (c->code)
        return c->code;
    if (strcmp(mode, "Fast") != 0 && strcmp(mode, "Slow") != 0)
        return jerr(c, mj_get(sc, "mode"), "scheduler: field 'mode' = '%s' is not Fast or Slow", mode);
    int64_t v;
    if (jrange(c, sc, "scheduler", "max_tile_height", 0, INT32_MAX, &v) ||
        jrange(c, sc, "scheduler", "max_tile_width", 0, INT32_MAX, &v) ||
        jrange(c, sc, "scheduler", "compiler_workers", 0, 1024, &v))
        return c->code;
    const mj_node *lat = jfield(c, root, "", "latency_us", MJ_NUMBER);
    if (!lat)
        return c->code;
    if (!(lat->num >= 0 && lat->num <= 1e12))
        return jerr(c, lat, "field 'latency_us' = %.17g is outside [0, 1e12]", lat->num);
    return 0;
}

/* The first place where deploy.json (a) differs from the deploy.json this
 * deploy.so was built with (b), as a dotted path in *path, with the
 * differing nodes; NULL nodes where a field is missing on one side. Object
 * members are matched by key (order and layout do not matter). 1 if they
 * differ. */
static int json_diff(const mj_node *a, const mj_node *b, char *path, size_t n, const mj_node **da,
                     const mj_node **db)
{
    *da = a;
    *db = b;
    if (a->kind != b->kind)
        return 1;
    size_t at = strlen(path);
    switch (a->kind) {
    case MJ_NUMBER:
        return a->num != b->num || a->is_int != b->is_int || (a->is_int && a->i != b->i);
    case MJ_STRING:
        return a->len != b->len || memcmp(a->str, b->str, a->len) != 0;
    case MJ_ARRAY: {
        if (a->count != b->count)
            return 1;
        const mj_node *x = a->first, *y = b->first;
        for (int i = 0; x && y; i++, x = x->next, y = y->next) {
            snprintf(path + at, n - at, "[%d]", i);
            if (json_diff(x, y, path, n, da, db))
                return 1;
            path[at] = 0;
        }
        return 0;
    }
    case MJ_OBJECT:
        for (int pass = 0; pass < 2; pass++) {
            const mj_node *from = pass ? b : a, *other = pass ? a : b;
            for (const mj_node *m = from->first; m; m = m->next) {
                snprintf(path + at, n - at, "%s%s", at ? "." : "", m->key);
                const mj_node *o = mj_get(other, m->key);
                if (!o) {
                    *da = pass ? NULL : m;
                    *db = pass ? m : NULL;
                    return 1;
                }
                if (!pass && json_diff(m, o, path, n, da, db))
                    return 1;
                path[at] = 0;
            }
        }
        return 0;
    default:
        return 0;
    }
}

static void describe_node(const mj_node *v, char *buf, size_t n)
{
    if (!v)
        snprintf(buf, n, "(missing)");
    else if (v->kind == MJ_NUMBER)
        snprintf(buf, n, "%.17g", v->num);
    else if (v->kind == MJ_STRING)
        snprintf(buf, n, "'%.60s'", v->str);
    else
        snprintf(buf, n, "%s", mj_kind_name(v->kind));
}

/* deploy.json against the one deploy.so embeds: every field must be the
 * build's (deploy.so covers deploy.json, whose params_file covers
 * deploy.params). */
static int check_against_build(jctx *c, const mj_node *root, const char *build_json, size_t build_len)
{
    mj_doc bd;
    char msg[300];
    if (mj_parse(build_json, build_len, &bd, msg, sizeof msg)) {
        mj_doc_free(&bd);
        return jerr(c, NULL, "the copy embedded in deploy.so does not parse: %s", msg);
    }
    char path[256] = "";
    const mj_node *da, *db;
    if (json_diff(root, bd.root, path, sizeof path, &da, &db)) {
        char va[96], vb[96];
        describe_node(da, va, sizeof va);
        describe_node(db, vb, sizeof vb);
        jerr(c, da ? da : root,
             "field '%s' = %s, but this deploy.so was built with %s: deploy.json was changed after the build, or "
             "belongs to another build",
             *path ? path : "(top level)", va, vb);
    }
    mj_doc_free(&bd);
    return c->code;
}

/* ---- deploy.params ------------------------------------------------------- */

typedef struct {
    int kind;
    uint64_t off, len;
} section;

/* Maps deploy.params read-only after checking that it is a regular file of
 * exactly the size deploy.json records (compared before any byte is read,
 * so a huge sparse file is refused at once). The descriptor stays open. */
static int map_params(mera_deploy *d, const char *path, uint64_t expected_bytes, char *err, size_t err_len)
{
    int fd;
    int rc = open_regular(path, "deploy.params", MERA_PARAMS_MAX_BYTES, &fd, &d->params_st, err, err_len);
    if (rc)
        return rc;
    d->params_fd = fd;
    if ((uint64_t)d->params_st.st_size != expected_bytes)
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                    "deploy.params: %lld bytes, but deploy.json's params_file.bytes says %llu",
                    (long long)d->params_st.st_size, (unsigned long long)expected_bytes);
    d->file_len = (size_t)d->params_st.st_size;
    void *p = mmap(NULL, d->file_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
        d->file = p;
        d->mapped = 1;
    } else {
        size_t n = (d->file_len + MERA_PARAMS_ALIGN - 1) / MERA_PARAMS_ALIGN * MERA_PARAMS_ALIGN;
        d->file = aligned_alloc(MERA_PARAMS_ALIGN, n);
        if (!d->file)
            return fail(err, err_len, MERA_DEPLOY_ERR_NOMEM, "deploy.params: out of memory reading %zu bytes",
                        d->file_len);
        if (read_all(fd, d->file, d->file_len, 0) != 0)
            return fail(err, err_len, MERA_DEPLOY_ERR_IO, "deploy.params: cannot read %s", path);
    }
    return 0;
}

/* 0 when deploy.params is still the file that was loaded. The mapping
 * reads the file's pages on demand, so a file rewritten in place (cp new
 * deploy.params) would feed other bytes to the model, or SIGBUS if it
 * shrank: each run checks device, inode, size and mtime first. (mera.build
 * never rewrites in place: it writes new files and renames them.) */
static int params_unchanged(const mera_deploy *d, char *err, size_t err_len)
{
    if (!d->mapped)
        return 0; /* a private copy in memory */
    struct stat st;
    const struct stat *o = &d->params_st;
    if (fstat(d->params_fd, &st) != 0 || st.st_dev != o->st_dev || st.st_ino != o->st_ino ||
        st.st_size != o->st_size || st.st_mtim.tv_sec != o->st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != o->st_mtim.tv_nsec)
        return fail(err, err_len, MERA_DEPLOY_ERR_RUNTIME,
                    "deploy.params changed after it was loaded (%lld -> %lld bytes, or a new modification time): "
                    "it was rewritten in place; load the deploy directory again",
                    (long long)o->st_size, (long long)st.st_size);
    return 0;
}

/* The checksum of file[0, n), read through a small buffer with pread when
 * the file is mapped so that checking does not fault every page of the
 * mapping into the process (it would count against the memory budget). */
static int file_checksum(mera_deploy *d, size_t n, uint64_t *out)
{
    if (!d->mapped) {
        *out = mera_fnv1a64(d->file, n);
        return 0;
    }
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf)
        return -1;
    uint64_t h = MERA_FNV1A64_BASIS;
    size_t done = 0;
    int rc = 0;
    while (done < n) {
        size_t k = n - done < CHUNK ? n - done : CHUNK;
        if (read_all(d->params_fd, buf, k, (off_t)done) != 0) {
            rc = -1;
            break;
        }
        h = mera_fnv1a64_from(h, buf, k);
        done += k;
    }
    free(buf);
    *out = h;
    return rc;
}

static int read_sections(mera_deploy *d, const char *path, section *sec, int *n_sec, uint64_t *sum, char *err,
                         size_t err_len)
{
    const uint8_t *f = d->file;
    size_t len = d->file_len;
    if (len < MERA_PARAMS_MAGIC_LEN || memcmp(f, MERA_PARAMS_MAGIC, MERA_PARAMS_MAGIC_LEN) != 0)
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                    "deploy.params: bad magic (expected \"MERAPRM\\n\"): not a deploy.params file");
    if (len < MERA_PARAMS_HEADER_LEN + MERA_PARAMS_CHECKSUM_LEN)
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: truncated: %zu bytes, no header", len);
    uint32_t version = (uint32_t)mera_load_le(f + 8, 4);
    if (version != MERA_DEPLOY_FORMAT_VERSION)
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                    "deploy.params: field version = %u, this runtime reads format version %d; rebuild the deploy "
                    "directory",
                    version, MERA_DEPLOY_FORMAT_VERSION);
    uint32_t count = (uint32_t)mera_load_le(f + 12, 4);
    if (count < 1 || count > MERA_PARAMS_MAX_SECTIONS)
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: field section count = %u not in [1, %d]",
                    count, MERA_PARAMS_MAX_SECTIONS);
    uint64_t table_end = MERA_PARAMS_HEADER_LEN + (uint64_t)count * MERA_PARAMS_SECTION_ENTRY;
    uint64_t body = len - MERA_PARAMS_CHECKSUM_LEN;
    if (table_end > body)
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                    "deploy.params: section table of %u entries ends at byte %llu, beyond the file (%zu bytes)", count,
                    (unsigned long long)table_end, len);
    int seen[4] = {0, 0, 0, 0};
    for (uint32_t s = 0; s < count; s++) {
        const uint8_t *e = f + MERA_PARAMS_HEADER_LEN + s * MERA_PARAMS_SECTION_ENTRY;
        sec[s].kind = (int)(uint32_t)mera_load_le(e, 4);
        sec[s].off = mera_load_le(e + 4, 8);
        sec[s].len = mera_load_le(e + 12, 8);
        if (sec[s].kind < MERA_SECTION_GRAPH || sec[s].kind > MERA_SECTION_PROGRAM)
            return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: section %u: field kind = %u is unknown",
                        s, (unsigned)sec[s].kind);
        const char *nm = mera_section_name(sec[s].kind);
        if (seen[sec[s].kind]++)
            return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: section %u (%s): a second %s section",
                        s, nm, nm);
        if (sec[s].off % MERA_PARAMS_ALIGN)
            return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                        "deploy.params: section %u (%s): offset %llu is not %d-byte aligned", s, nm,
                        (unsigned long long)sec[s].off, MERA_PARAMS_ALIGN);
        if (sec[s].off < table_end)
            return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                        "deploy.params: section %u (%s): offset %llu lies inside the header (%llu bytes)", s, nm,
                        (unsigned long long)sec[s].off, (unsigned long long)table_end);
        if (sec[s].off > body || sec[s].len > body - sec[s].off)
            return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                        "deploy.params: section %u (%s): offset %llu + length %llu beyond the file (%zu bytes)", s, nm,
                        (unsigned long long)sec[s].off, (unsigned long long)sec[s].len, len);
        for (uint32_t t = 0; t < s; t++)
            if (sec[s].off < sec[t].off + sec[t].len && sec[t].off < sec[s].off + sec[s].len)
                return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                            "deploy.params: section %u (%s) [%llu, +%llu) overlaps section %u (%s)", s, nm,
                            (unsigned long long)sec[s].off, (unsigned long long)sec[s].len, t,
                            mera_section_name(sec[t].kind));
    }
    uint64_t stored = mera_load_le(f + body, 8), h;
    if (file_checksum(d, (size_t)body, &h) != 0)
        return fail(err, err_len, MERA_DEPLOY_ERR_IO, "deploy.params: cannot read %s", path);
    if (h != stored)
        return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                    "deploy.params: checksum mismatch (stored %016llx, computed %016llx over %llu bytes): the file is "
                    "corrupt or truncated",
                    (unsigned long long)stored, (unsigned long long)h, (unsigned long long)body);
    *n_sec = (int)count;
    *sum = h;
    return 0;
}

static const section *find_section(const section *sec, int n, int kind)
{
    for (int s = 0; s < n; s++)
        if (sec[s].kind == kind)
            return &sec[s];
    return NULL;
}

/* The PARAMS section's index: bind every PARAM value's data. */
static int bind_params(mera_deploy *d, const section *s, int64_t *weights, char *err, size_t err_len)
{
    const uint8_t *base = d->file + s->off;
    uint64_t len = s->len, pos = 0;
    const mera_graph *g = d->g;
    int n_in = mera_graph_num_inputs(g);
    d->param_data = calloc((size_t)n_in + 1, sizeof *d->param_data);
    if (!d->param_data)
        return fail(err, err_len, MERA_DEPLOY_ERR_NOMEM, "out of memory");
#define PFAIL(...) fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: section PARAMS: " __VA_ARGS__)
    if (len < 4)
        return PFAIL("truncated: %llu bytes, no entry count", (unsigned long long)len);
    uint32_t count = (uint32_t)mera_load_le(base, 4);
    pos = 4;
    if (count > (len - 4) / 20)
        return PFAIL("field count = %u does not fit in %llu bytes", count, (unsigned long long)len);
    int n_params = 0;
    for (int k = 0; k < n_in; k++)
        n_params += mera_graph_value(g, mera_graph_input(g, k))->kind == MERA_VALUE_PARAM;
    /* A DNA program's target stores only the params the host reads (the
     * constant image holds the rest); check_params_on_host checks those. */
    int all_stored = !d->backend->runs_program;
    if (all_stored ? (int64_t)count != n_params : (int64_t)count > n_params)
        return PFAIL("field count = %u, but the graph has %d params", count, n_params);
    int64_t total = 0;
    for (uint32_t e = 0; e < count; e++) {
        if (len - pos < 4)
            return PFAIL("entry %u: truncated index", e);
        uint32_t nl = (uint32_t)mera_load_le(base + pos, 4);
        pos += 4;
        if (nl == 0 || nl > MERA_PARAMS_MAX_NAME || len - pos < (uint64_t)nl + 16)
            return PFAIL("entry %u: field name length = %u out of range", e, nl);
        char name[MERA_PARAMS_MAX_NAME + 1];
        memcpy(name, base + pos, nl);
        name[nl] = 0;
        pos += nl;
        uint64_t off = mera_load_le(base + pos, 8), bytes = mera_load_le(base + pos + 8, 8);
        pos += 16;
        if (strlen(name) != nl)
            return PFAIL("entry %u: name contains a NUL byte", e);
        int v = mera_graph_find_value(g, name);
        if (v < 0 || mera_graph_value(g, v)->kind != MERA_VALUE_PARAM)
            return PFAIL("entry %u: '%s' is not a param of the graph", e, name);
        const mera_value *val = mera_graph_value(g, v);
        if (bytes != mera_type_nbytes(&val->type))
            return PFAIL("param '%s': field length = %llu, but its type needs %zu bytes", name,
                         (unsigned long long)bytes, mera_type_nbytes(&val->type));
        if (off % MERA_PARAMS_ALIGN || off > len || bytes > len - off)
            return PFAIL("param '%s': offset %llu + length %llu beyond the section (%llu bytes) or unaligned", name,
                         (unsigned long long)off, (unsigned long long)bytes, (unsigned long long)len);
        int k = 0;
        while (k < n_in && mera_graph_input(g, k) != v)
            k++;
        if (d->param_data[k])
            return PFAIL("param '%s' appears twice in the index", name);
        d->param_data[k] = base + off;
        total += (int64_t)bytes;
    }
    for (int k = 0; k < n_in && all_stored; k++) {
        const mera_value *val = mera_graph_value(g, mera_graph_input(g, k));
        if (val->kind == MERA_VALUE_PARAM && !d->param_data[k])
            return PFAIL("param '%s' is missing", val->name);
    }
#undef PFAIL
    *weights = total;
    return 0;
}

/* A DNA program's target: every param without data in the PARAMS section
 * must be one the host never reads (DNA layers read the constant image). */
static int check_params_on_host(const mera_deploy *d, char *err, size_t err_len)
{
    const mera_graph *g = d->g;
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        int v = mera_graph_input(g, k);
        const mera_value *val = mera_graph_value(g, v);
        if (val->kind == MERA_VALUE_PARAM && !d->param_data[k] && dna_program_reads_graph_data(d->prog, g, v))
            return fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                        "deploy.params: section PARAMS: param '%s' is missing (the host reads it: it is an input "
                        "of a host node or a graph output)",
                        val->name);
    }
    return 0;
}

/* ---- create / destroy ---------------------------------------------------- */

static int fill_info(mera_deploy *d)
{
    const mera_graph *g = d->g;
    d->n_in = 0;
    for (int k = 0; k < mera_graph_num_inputs(g); k++)
        d->n_in += mera_graph_value(g, mera_graph_input(g, k))->kind == MERA_VALUE_INPUT;
    d->n_out = mera_graph_num_outputs(g);
    size_t ni = (size_t)d->n_in + 1, no = (size_t)d->n_out + 1;
    d->in_vals = calloc(ni, sizeof *d->in_vals);
    d->out_vals = calloc(no, sizeof *d->out_vals);
    d->in_info = calloc(ni, sizeof *d->in_info);
    d->out_info = calloc(no, sizeof *d->out_info);
    d->in_buf = calloc(ni, sizeof *d->in_buf);
    d->out_buf = calloc(no, sizeof *d->out_buf);
    d->in_set = calloc(ni, sizeof *d->in_set);
    if (!d->in_vals || !d->out_vals || !d->in_info || !d->out_info || !d->in_buf || !d->out_buf || !d->in_set)
        return -1;
    int i = 0;
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        int v = mera_graph_input(g, k);
        if (mera_graph_value(g, v)->kind == MERA_VALUE_INPUT)
            d->in_vals[i++] = v;
    }
    for (int o = 0; o < d->n_out; o++)
        d->out_vals[o] = mera_graph_output(g, o);
    for (int pass = 0; pass < 2; pass++) {
        int n = pass ? d->n_out : d->n_in;
        for (int t = 0; t < n; t++) {
            const mera_value *v = mera_graph_value(g, pass ? d->out_vals[t] : d->in_vals[t]);
            mera_deploy_tensor_info *info = pass ? &d->out_info[t] : &d->in_info[t];
            info->name = v->name;
            info->dtype = v->type.dtype == MERA_DTYPE_FLOAT32 ? MERA_DEPLOY_FLOAT32
                          : v->type.dtype == MERA_DTYPE_INT8  ? MERA_DEPLOY_INT8
                          : v->type.dtype == MERA_DTYPE_UINT8 ? MERA_DEPLOY_UINT8
                          : v->type.dtype == MERA_DTYPE_INT64 ? MERA_DEPLOY_INT64
                                                              : MERA_DEPLOY_INT32;
            info->rank = v->type.rank;
            for (int r = 0; r < v->type.rank && r < MERA_DEPLOY_MAX_RANK; r++)
                info->shape[r] = v->type.shape[r];
            info->nbytes = mera_type_nbytes(&v->type);
            size_t alloc = (info->nbytes + 63) / 64 * 64 + 64;
            void *b = aligned_alloc(64, alloc);
            if (!b)
                return -1;
            memset(b, 0, alloc);
            if (pass)
                d->out_buf[t] = b;
            else
                d->in_buf[t] = b;
        }
    }
    return 0;
}

MERA_RT_EXPORT void mera_deploy_destroy(mera_deploy *d)
{
    if (!d)
        return;
    if (d->inst)
        d->backend->free(d->inst);
    if (d->prog) {
        d->prog->params_image = NULL; /* borrowed from the file */
        dna_program_free(d->prog);
    }
    for (int i = 0; d->in_buf && i < d->n_in; i++)
        free(d->in_buf[i]);
    for (int i = 0; d->out_buf && i < d->n_out; i++)
        free(d->out_buf[i]);
    free(d->in_buf);
    free(d->out_buf);
    free(d->in_set);
    free(d->in_vals);
    free(d->out_vals);
    free(d->in_info);
    free(d->out_info);
    free(d->param_data);
    mera_graph_free(d->g);
    if (d->file) {
        if (d->mapped)
            munmap(d->file, d->file_len);
        else
            free(d->file);
    }
    if (d->params_fd >= 0)
        close(d->params_fd);
    free(d);
}

static int is_hex16(const char *s)
{
    if (!s || strlen(s) != 16)
        return 0;
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Loading frees its temporaries (deploy.json's text and tree, the
 * checksum buffer, the backends' scratch) between blocks that stay, the
 * packed weights made after them, so their pages stay in the process:
 * glibc returns only the top of the heap by itself. Give every free page
 * back to the system once the model is loaded, so that they do not count
 * in its memory while it runs (docs/deploy.md, "Memory budget"). Other C
 * libraries: nothing. */
static void release_free_heap(void)
{
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

static mera_deploy *create(const char *dir, const char *expected_model_id, const char *build_json, size_t build_len,
                           char *err, size_t err_len);

mera_deploy *mera_rt_create(const char *dir, const char *expected_model_id, int *status, char *err, size_t err_len)
{
    return mera_rt_create_for_build(dir, expected_model_id, NULL, 0, status, err, err_len);
}

mera_deploy *mera_rt_create_for_build(const char *dir, const char *expected_model_id, const char *build_json,
                                      size_t build_json_len, int *status, char *err, size_t err_len)
{
    last_fail_code = 0;
    mera_deploy *d = create(dir, expected_model_id, build_json, build_json_len, err, err_len);
    if (status)
        *status = d ? MERA_DEPLOY_OK : last_fail_code ? last_fail_code : MERA_DEPLOY_ERR_FORMAT;
    return d;
}

static mera_deploy *create(const char *dir, const char *expected_model_id, const char *build_json, size_t build_len,
                           char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = 0;
    if (!dir) {
        fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "mera_deploy_create: deploy_dir is NULL");
        return NULL;
    }
    char path[4096];
    char *text = NULL;
    size_t text_len = 0;
    mj_doc doc;
    memset(&doc, 0, sizeof doc);
    mera_deploy *d = calloc(1, sizeof *d);
    if (!d) {
        fail(err, err_len, MERA_DEPLOY_ERR_NOMEM, "out of memory");
        return NULL;
    }
    d->params_fd = -1;
    jctx c = {err, err_len, 0};
    mera_error e;
    memset(&e, 0, sizeof e);

    /* deploy.json */
    if (path_join(path, sizeof path, dir, "deploy.json", err, err_len) ||
        read_json_file(path, &text, &text_len, err, err_len))
        goto fail;
    {
        char jmsg[300];
        if (mj_parse(text, text_len, &doc, jmsg, sizeof jmsg)) {
            fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.json: not valid JSON: %s", jmsg);
            goto fail;
        }
    }
    const mj_node *root = doc.root;
    if (root->kind != MJ_OBJECT) {
        jerr(&c, root, "the top level must be an object");
        goto fail;
    }
    const char *format = jstr(&c, root, "", "format");
    int64_t version = 0, abi = 0, pbytes = 0, jweights = 0, jarena = 0;
    jint(&c, root, "", "version", &version);
    jint(&c, root, "", "abi_version", &abi);
    const char *target = jstr(&c, root, "", "target");
    const char *arch = jstr(&c, root, "", "host_arch");
    const mj_node *pf = jfield(&c, root, "", "params_file", MJ_OBJECT);
    const char *pname = jstr(&c, pf, "params_file", "name");
    const char *pfnv = jstr(&c, pf, "params_file", "fnv1a64");
    if (c.code || jrange(&c, pf, "params_file", "bytes", MERA_PARAMS_HEADER_LEN + MERA_PARAMS_CHECKSUM_LEN,
                         (int64_t)MERA_PARAMS_MAX_BYTES, &pbytes) ||
        jrange(&c, root, "", "weights_bytes", 0, (int64_t)MERA_PARAMS_MAX_BYTES, &jweights) ||
        jrange(&c, root, "", "arena_bytes", 0, INT64_C(1) << 50, &jarena))
        goto fail;
    if (strcmp(format, "mera-deploy") != 0) {
        jerr(&c, mj_get(root, "format"), "field 'format' = '%s', expected 'mera-deploy'", format);
        goto fail;
    }
    if (version != MERA_DEPLOY_FORMAT_VERSION) {
        jerr(&c, mj_get(root, "version"),
             "field 'version' = %lld, this runtime reads format version %d; rebuild the deploy directory",
             (long long)version, MERA_DEPLOY_FORMAT_VERSION);
        goto fail;
    }
    if (abi != MERA_DEPLOY_ABI_VERSION) {
        jerr(&c, mj_get(root, "abi_version"), "field 'abi_version' = %lld, this deploy.so implements ABI %d",
             (long long)abi, MERA_DEPLOY_ABI_VERSION);
        goto fail;
    }
    if (!(d->backend = mera_backend_find(target))) {
        char names[128];
        mera_backend_names(names, sizeof names);
        jerr(&c, mj_get(root, "target"), "field 'target' = '%s' is not one of %s", target, names);
        goto fail;
    }
    snprintf(d->target, sizeof d->target, "%s", target);
    if (host_arch() && strcmp(arch, host_arch()) != 0) {
        jerr(&c, mj_get(root, "host_arch"), "field 'host_arch' = '%s', but this host is %s", arch, host_arch());
        goto fail;
    }
    if (strcmp(pname, "deploy.params") != 0) {
        jerr(&c, mj_get(pf, "name"), "params_file: field 'name' = '%s', expected 'deploy.params'", pname);
        goto fail;
    }
    if (!is_hex16(pfnv)) {
        jerr(&c, mj_get(pf, "fnv1a64"), "params_file: field 'fnv1a64' = '%s' is not 16 lowercase hex digits", pfnv);
        goto fail;
    }
    if (expected_model_id && strcmp(expected_model_id, pfnv) != 0) {
        jerr(&c, mj_get(pf, "fnv1a64"),
             "params_file: field 'fnv1a64' = %s, but this deploy.so was built for model %s (deploy.json and "
             "deploy.params belong to another build)",
             pfnv, expected_model_id);
        goto fail;
    }
    if (check_build_record(&c, root, d->backend->runs_program) ||
        (d->backend->runs_program && read_platform(&c, root, d)))
        goto fail;
    if (build_json && check_against_build(&c, root, build_json, build_len))
        goto fail;

    /* deploy.params */
    section sec[MERA_PARAMS_MAX_SECTIONS];
    int n_sec = 0;
    uint64_t sum = 0;
    if (path_join(path, sizeof path, dir, "deploy.params", err, err_len) ||
        map_params(d, path, (uint64_t)pbytes, err, err_len) || read_sections(d, path, sec, &n_sec, &sum, err, err_len))
        goto fail;
    char id[17];
    snprintf(id, sizeof id, "%016llx", (unsigned long long)sum);
    if (strcmp(id, pfnv) != 0) {
        fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
             "deploy.params: checksum %s, but deploy.json's params_file.fnv1a64 says %s (files of different builds)",
             id, pfnv);
        goto fail;
    }
    const section *sg = find_section(sec, n_sec, MERA_SECTION_GRAPH);
    const section *sp = find_section(sec, n_sec, MERA_SECTION_PARAMS);
    const section *sq = find_section(sec, n_sec, MERA_SECTION_PROGRAM);
    if (!sg || !sp || (d->backend->runs_program != (sq != NULL))) {
        fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: %s%s", !sg ? "no GRAPH section" : !sp ? "no PARAMS section"
                                                                        : sq ? "a PROGRAM section, but the target runs no DNA program: "
                                                                             : "no PROGRAM section, which target needs: ",
             sg && sp ? d->target : "");
        goto fail;
    }
    if (!(d->g = mera_graph_deserialize(d->file + sg->off, (size_t)sg->len, &e))) {
        fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: section GRAPH: %s", e.msg);
        goto fail;
    }
    int64_t weights = 0;
    if (bind_params(d, sp, &weights, err, err_len))
        goto fail;
    if (fill_info(d)) {
        fail(err, err_len, MERA_DEPLOY_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < d->n_in + d->n_out; i++) {
        const mera_value *v = mera_graph_value(d->g, i < d->n_in ? d->in_vals[i] : d->out_vals[i - d->n_in]);
        if (v->type.rank > MERA_DEPLOY_MAX_RANK || v->type.dtype == MERA_DTYPE_BFLOAT16) {
            fail(err, err_len, MERA_DEPLOY_ERR_UNSUPPORTED, "graph %s '%s': %s of rank %d is not supported by the ABI",
                 i < d->n_in ? "input" : "output", v->name, mera_dtype_name(v->type.dtype), v->type.rank);
            goto fail;
        }
    }
    if (check_tensors(&c, root, d))
        goto fail;

    /* the target: load the graph (and the program) into the backend */
    mera_backend_load_args la;
    memset(&la, 0, sizeof la);
    la.g = d->g;
    la.param_data = (const void *const *)d->param_data;
    if (d->backend->runs_program) {
        d->prog = dna_program_deserialize_borrowed(d->file + sq->off, (size_t)sq->len, mera_graph_num_nodes(d->g),
                                                   mera_graph_num_values(d->g), &e);
        if (!d->prog) {
            fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy.params: section PROGRAM: %s", e.msg);
            goto fail;
        }
        if (strncmp(d->prog->platform, d->plat.name, sizeof d->prog->platform) != 0) {
            fail(err, err_len, MERA_DEPLOY_ERR_FORMAT,
                 "deploy.params: section PROGRAM: scheduled for platform '%.32s', deploy.json says '%s'",
                 d->prog->platform, d->plat.name);
            goto fail;
        }
        /* the activation memory the device will reserve, against deploy.json before it is allocated */
        if (d->prog->dram_bytes - d->prog->params_bytes != jarena) {
            jerr(&c, mj_get(root, "arena_bytes"), "field 'arena_bytes' = %lld, but the program plans %lld",
                 (long long)jarena, (long long)(d->prog->dram_bytes - d->prog->params_bytes));
            goto fail;
        }
        if (check_params_on_host(d, err, err_len))
            goto fail;
        weights += d->prog->params_bytes; /* the constant image */
        la.prog = d->prog;
        la.program_bytes = d->file + sq->off;
        la.program_len = (size_t)sq->len;
        la.platform = &d->plat;
        la.params_mapped = d->mapped;
    }
    if (jweights != weights) {
        jerr(&c, mj_get(root, "weights_bytes"), "field 'weights_bytes' = %lld, but deploy.params holds %lld",
             (long long)jweights, (long long)weights);
        goto fail;
    }
    d->metrics.weights_bytes = (size_t)weights;
    if (!(d->inst = d->backend->load(&la, &e))) {
        fail(err, err_len, status_code(e.code), "%s: %s", d->target, e.msg);
        goto fail;
    }
    mera_backend_metrics bm;
    d->backend->metrics(d->inst, &bm);
    d->metrics.arena_bytes = bm.arena_bytes;
    d->metrics.device_us = bm.device_us;
    d->metrics.device_cycles = bm.device_cycles;
    d->metrics.host_us = bm.host_us;
    d->metrics.clock_mhz = bm.clock_mhz;
    snprintf(d->device, sizeof d->device, "%s", bm.device ? bm.device : "");
    if ((int64_t)d->metrics.arena_bytes != jarena) {
        jerr(&c, mj_get(root, "arena_bytes"), "field 'arena_bytes' = %lld, but the loaded model plans %zu",
             (long long)jarena, d->metrics.arena_bytes);
        goto fail;
    }
    d->metrics.target = d->target;
    d->metrics.platform = d->platform_name;
    d->metrics.device = d->device;
    mj_doc_free(&doc);
    free(text);
    release_free_heap();
    return d;
fail:
    if (err && err_len && !err[0])
        fail(err, err_len, MERA_DEPLOY_ERR_FORMAT, "deploy: loading failed");
    mj_doc_free(&doc);
    free(text);
    mera_deploy_destroy(d);
    return NULL;
}

/* ---- the ABI ------------------------------------------------------------- */

MERA_RT_EXPORT int mera_deploy_num_inputs(const mera_deploy *d)
{
    return d ? d->n_in : -1;
}

MERA_RT_EXPORT int mera_deploy_num_outputs(const mera_deploy *d)
{
    return d ? d->n_out : -1;
}

MERA_RT_EXPORT int mera_deploy_input_info(const mera_deploy *d, int i, mera_deploy_tensor_info *info, char *err, size_t err_len)
{
    if (!d || !info)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "mera_deploy_input_info: NULL argument");
    if (i < 0 || i >= d->n_in)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "input index %d out of range [0, %d)", i, d->n_in);
    *info = d->in_info[i];
    return 0;
}

MERA_RT_EXPORT int mera_deploy_output_info(const mera_deploy *d, int i, mera_deploy_tensor_info *info, char *err, size_t err_len)
{
    if (!d || !info)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "mera_deploy_output_info: NULL argument");
    if (i < 0 || i >= d->n_out)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "output index %d out of range [0, %d)", i, d->n_out);
    *info = d->out_info[i];
    return 0;
}

MERA_RT_EXPORT int mera_deploy_set_input(mera_deploy *d, int i, const void *data, size_t nbytes, char *err, size_t err_len)
{
    if (!d || (!data && nbytes))
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "mera_deploy_set_input: NULL argument");
    if (i < 0 || i >= d->n_in)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "input index %d out of range [0, %d)", i, d->n_in);
    if (nbytes != d->in_info[i].nbytes)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "input %d ('%s'): %zu bytes given, it takes %zu", i,
                    d->in_info[i].name, nbytes, d->in_info[i].nbytes);
    if (nbytes)
        memcpy(d->in_buf[i], data, nbytes);
    d->in_set[i] = 1;
    return 0;
}

MERA_RT_EXPORT int mera_deploy_run(mera_deploy *d, char *err, size_t err_len)
{
    if (!d)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "mera_deploy_run: NULL handle");
    for (int i = 0; i < d->n_in; i++)
        if (!d->in_set[i])
            return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "input %d ('%s') was not set", i, d->in_info[i].name);
    d->have_outputs = 0;
    int rc = params_unchanged(d, err, err_len);
    if (rc)
        return rc;
    double t0 = now_us();
    mera_error e;
    memset(&e, 0, sizeof e);
    mera_status st = d->backend->run(d->inst, (const void *const *)d->in_buf, d->out_buf, &e);
    if (!st && d->backend->runs_program) {
        mera_backend_metrics bm;
        d->backend->metrics(d->inst, &bm);
        d->metrics.device_cycles = bm.device_cycles;
        d->metrics.device_us = bm.device_us;
    }
    if (st)
        return fail(err, err_len, status_code(st) == MERA_DEPLOY_ERR_FORMAT ? MERA_DEPLOY_ERR_RUNTIME : status_code(st),
                    "%s: run failed: %s", d->target, e.msg);
    d->metrics.last_run_us = now_us() - t0;
    d->have_outputs = 1;
    return 0;
}

MERA_RT_EXPORT int mera_deploy_get_output(const mera_deploy *d, int i, void *data, size_t nbytes, char *err, size_t err_len)
{
    if (!d || (!data && nbytes))
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "mera_deploy_get_output: NULL argument");
    if (i < 0 || i >= d->n_out)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "output index %d out of range [0, %d)", i, d->n_out);
    if (nbytes != d->out_info[i].nbytes)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "output %d ('%s'): %zu bytes given, it has %zu", i,
                    d->out_info[i].name, nbytes, d->out_info[i].nbytes);
    if (!d->have_outputs)
        return fail(err, err_len, MERA_DEPLOY_ERR_INVALID, "output %d ('%s'): no successful run yet", i,
                    d->out_info[i].name);
    if (nbytes)
        memcpy(data, d->out_buf[i], nbytes);
    return 0;
}

MERA_RT_EXPORT int mera_deploy_get_metrics(const mera_deploy *d, mera_deploy_metrics *m)
{
    if (!d || !m)
        return MERA_DEPLOY_ERR_INVALID;
    *m = d->metrics;
    return 0;
}
