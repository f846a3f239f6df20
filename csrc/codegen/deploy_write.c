/* Writing the data files of a deploy directory (deploy_write.h):
 * deploy.params (graph, PARAM data, DNA program; docs/deploy.md gives the
 * layout) and deploy.json (its description). */
#include "codegen/deploy_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/deploy_format.h"
#include "runtime/json.h"
#include "runtime/mera_deploy.h"
#include "sim/timing.h"
#include "util/bytes.h"

static void pad_to(mera_writer *w, size_t align)
{
    static const uint8_t zeros[MERA_PARAMS_ALIGN];
    size_t r = w->len % align;
    if (r)
        mera_put_bytes(w, zeros, align - r);
}

/* Is the data of graph input k stored in the PARAMS section? Every PARAM
 * for the interpreters; for a DNA program (prog) only those a host node or
 * a graph output reads: DNA layers read their copy in the constant image,
 * so each weight is stored once. */
static int param_stored(const mera_graph *g, const dna_program *prog, int k)
{
    int v = mera_graph_input(g, k);
    if (mera_graph_value(g, v)->kind != MERA_VALUE_PARAM)
        return 0;
    return !prog || dna_program_reads_graph_data(prog, g, v);
}

/* The PARAMS section: u32 count; per stored PARAM u32 name length, the
 * name, u64 offset and u64 length of its data (from the section's start);
 * zero padding to 64; the data, each blob 64-byte aligned. */
static mera_status write_params_section(const mera_graph *g, const dna_program *prog, const void *const *param_data,
                                        mera_writer *w, int64_t *weights_bytes, mera_error *err)
{
    int n_in = mera_graph_num_inputs(g), count = 0;
    for (int k = 0; k < n_in; k++) {
        const mera_value *v = mera_graph_value(g, mera_graph_input(g, k));
        if (!param_stored(g, prog, k))
            continue;
        if (!param_data || !param_data[k])
            return mera_fail(err, MERA_ERR_INVALID, "param '%s' has no data: pass it in params", v->name);
        if (strlen(v->name) > MERA_PARAMS_MAX_NAME)
            return mera_fail(err, MERA_ERR_INVALID, "param name '%.40s...' longer than %d bytes", v->name,
                             MERA_PARAMS_MAX_NAME);
        count++;
    }
    /* the index's size first, to know where the data starts */
    size_t index = 4;
    for (int k = 0; k < n_in; k++) {
        const mera_value *v = mera_graph_value(g, mera_graph_input(g, k));
        if (param_stored(g, prog, k))
            index += 4 + strlen(v->name) + 16;
    }
    size_t off = (index + MERA_PARAMS_ALIGN - 1) / MERA_PARAMS_ALIGN * MERA_PARAMS_ALIGN;
    int64_t total = 0;
    size_t base = w->len;
    mera_put_u32(w, (uint32_t)count);
    for (int k = 0; k < n_in; k++) {
        const mera_value *v = mera_graph_value(g, mera_graph_input(g, k));
        if (!param_stored(g, prog, k))
            continue;
        size_t nb = mera_type_nbytes(&v->type), nl = strlen(v->name);
        mera_put_u32(w, (uint32_t)nl);
        mera_put_bytes(w, v->name, nl);
        mera_put_u64(w, off);
        mera_put_u64(w, nb);
        off += (nb + MERA_PARAMS_ALIGN - 1) / MERA_PARAMS_ALIGN * MERA_PARAMS_ALIGN;
        total += (int64_t)nb;
    }
    pad_to(w, MERA_PARAMS_ALIGN);
    for (int k = 0; k < n_in; k++) {
        const mera_value *v = mera_graph_value(g, mera_graph_input(g, k));
        if (!param_stored(g, prog, k))
            continue;
        mera_put_bytes(w, param_data[k], mera_type_nbytes(&v->type));
        pad_to(w, MERA_PARAMS_ALIGN);
    }
    MERA_ASSERT(w->oom || w->len - base == off);
    *weights_bytes = total;
    return MERA_OK;
}

/* The graph output whose value is v, or -1. */
static int output_index_of(const mera_graph *g, int v)
{
    for (int k = 0; k < mera_graph_num_outputs(g); k++)
        if (mera_graph_output(g, k) == v)
            return k;
    return -1;
}

static void write_tensor(mj_writer *j, const mera_graph *g, const mera_value *v)
{
    mjw_begin_object(j);
    mjw_key(j, "name");
    mjw_string(j, v->name);
    mjw_key(j, "dtype");
    mjw_string(j, mera_dtype_name(v->type.dtype));
    mjw_key(j, "shape");
    mjw_begin_array(j, 1);
    for (int d = 0; d < v->type.rank; d++)
        mjw_int(j, v->type.shape[d]);
    mjw_end_array(j);
    mjw_key(j, "layout");
    mjw_string(j, mera_layout_name(v->type.layout));
    mjw_key(j, "scale");
    if (v->type.q.kind == MERA_QUANT_PER_TENSOR)
        mjw_double(j, v->type.q.scale);
    else
        mjw_null(j);
    mjw_key(j, "zero_point");
    if (v->type.q.kind == MERA_QUANT_PER_TENSOR)
        mjw_int(j, v->type.q.zero_point);
    else
        mjw_null(j);
    /* an output made by rows_valid whose count is a graph output too: only the first count entries of its axis
     * are valid (docs/frontends.md, "NonMaxSuppression"); the Python runtime trims it */
    const mera_node *n = v->kind == MERA_VALUE_NODE ? mera_graph_node(g, v->producer) : NULL;
    if (n && n->op == MERA_OP_DEQUANTIZE) { /* the quantizer's float output of a quantized rows_valid */
        const mera_value *in = mera_graph_value(g, n->inputs[0]);
        n = in && in->kind == MERA_VALUE_NODE ? mera_graph_node(g, in->producer) : NULL;
    }
    int count_out = n && n->op == MERA_OP_ROWS_VALID ? output_index_of(g, n->inputs[1]) : -1;
    if (count_out >= 0) {
        mjw_key(j, "valid_rows");
        mjw_begin_object(j);
        mjw_key(j, "count_output");
        mjw_int(j, count_out);
        mjw_key(j, "axis");
        mjw_int(j, mera_attr_int(n, "axis"));
        mjw_end_object(j);
    }
    mjw_end_object(j);
}

mera_status mera_deploy_write(const mera_deploy_spec *spec, mera_deploy_files *out, mera_error *err)
{
    if (!spec || !out || !spec->g || !spec->backend || !spec->host_arch)
        return mera_fail(err, MERA_ERR_INVALID, "mera_deploy_write: spec with backend, host_arch and graph required");
    memset(out, 0, sizeof *out);
    const char *target = spec->backend->name;
    int dna = spec->backend->runs_program;
    if (strcmp(spec->host_arch, "x86") != 0 && strcmp(spec->host_arch, "arm") != 0)
        return mera_fail(err, MERA_ERR_INVALID, "host_arch '%s' is neither x86 nor arm", spec->host_arch);
    if (dna && (!spec->platform || !spec->prog))
        return mera_fail(err, MERA_ERR_INVALID, "target %s needs a platform and a scheduled program", target);
    const mera_graph *g = spec->g;
    mera_sched_options sched = {.mode = MERA_SCHED_FAST, .workers = 1};
    if (spec->sched)
        sched = *spec->sched;

    mera_status st = MERA_OK;
    uint8_t *graph_bytes = NULL, *prog_bytes = NULL;
    size_t graph_len = 0, prog_len = 0;
    const dna_program *prog = spec->prog;
    void *inst = NULL;
    mera_writer params = {0}, w = {0};
    mj_writer j;
    memset(&j, 0, sizeof j);
    int64_t arena = 0, weights = 0;
    double latency = -1;

    if ((st = mera_graph_serialize(g, &graph_bytes, &graph_len, err)))
        goto done;
    if ((st = write_params_section(g, dna ? prog : NULL, spec->param_data, &params, &weights, err)))
        goto done;
    if (dna) {
        weights += prog->params_bytes; /* the constant image: the DNA layers' weights */
        if ((st = dna_program_serialize(prog, &prog_bytes, &prog_len, err)))
            goto done;
        dna_timing t;
        if ((st = dna_timing_model(g, prog, spec->platform, &t, NULL, err)))
            goto done;
        latency = t.total_us;
        dna_timing_release(&t);
        arena = prog->dram_bytes - prog->params_bytes;
    } else {
        /* the arena the loader will plan: load the graph as the runtime will */
        mera_backend_load_args a = {.g = g, .param_data = spec->param_data};
        if (!(inst = spec->backend->load(&a, err))) {
            st = err ? err->code : MERA_ERR_INVALID;
            goto done;
        }
        mera_backend_metrics m;
        spec->backend->metrics(inst, &m);
        arena = (int64_t)m.arena_bytes;
    }

    /* deploy.params */
    {
        int n_sec = dna ? 3 : 2;
        int kinds[3] = {MERA_SECTION_GRAPH, MERA_SECTION_PARAMS, MERA_SECTION_PROGRAM};
        const uint8_t *data[3] = {graph_bytes, params.buf, prog_bytes};
        size_t lens[3] = {graph_len, params.len, prog_len};
        if (params.oom) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory writing deploy.params");
            goto done;
        }
        uint64_t offs[3];
        uint64_t at = MERA_PARAMS_HEADER_LEN + (uint64_t)n_sec * MERA_PARAMS_SECTION_ENTRY;
        for (int s = 0; s < n_sec; s++) {
            at = (at + MERA_PARAMS_ALIGN - 1) / MERA_PARAMS_ALIGN * MERA_PARAMS_ALIGN;
            offs[s] = at;
            at += lens[s];
        }
        mera_put_bytes(&w, MERA_PARAMS_MAGIC, MERA_PARAMS_MAGIC_LEN);
        mera_put_u32(&w, MERA_DEPLOY_FORMAT_VERSION);
        mera_put_u32(&w, (uint32_t)n_sec);
        for (int s = 0; s < n_sec; s++) {
            mera_put_u32(&w, (uint32_t)kinds[s]);
            mera_put_u64(&w, offs[s]);
            mera_put_u64(&w, lens[s]);
        }
        for (int s = 0; s < n_sec; s++) {
            pad_to(&w, MERA_PARAMS_ALIGN);
            mera_put_bytes(&w, data[s], lens[s]);
        }
        if (w.oom) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory writing deploy.params");
            goto done;
        }
        uint64_t sum = mera_fnv1a64(w.buf, w.len);
        mera_put_u64(&w, sum);
        if (w.oom) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory writing deploy.params");
            goto done;
        }
        snprintf(out->model_id, sizeof out->model_id, "%016llx", (unsigned long long)sum);
    }

    /* deploy.json */
    mjw_begin_object(&j);
    mjw_key(&j, "format");
    mjw_string(&j, "mera-deploy");
    mjw_key(&j, "version");
    mjw_int(&j, MERA_DEPLOY_FORMAT_VERSION);
    mjw_key(&j, "abi_version");
    mjw_int(&j, MERA_DEPLOY_ABI_VERSION);
    mjw_key(&j, "target");
    mjw_string(&j, target);
    mjw_key(&j, "host_arch");
    mjw_string(&j, spec->host_arch);
    mjw_key(&j, "rounding"); /* the graph's (in deploy.params too, so the model id covers it) */
    mjw_string(&j, mera_rounding_name(mera_graph_rounding(g)));
    mjw_key(&j, "platform");
    if (dna)
        mjw_string(&j, spec->platform->name);
    else
        mjw_null(&j);
    mjw_key(&j, "platform_params");
    if (dna) {
        mjw_begin_object(&j);
#define X_INT(field) mjw_int(&j, (int64_t)spec->platform->field)
#define X_DBL(field) mjw_double(&j, (double)spec->platform->field)
#define X(field, type, unit, lo, hi, doc)                           \
    mjw_key(&j, #field);                                    \
    if ((type)0.5 == 0) X_INT(field); else X_DBL(field);
        MERA_ARCH_PARAMS(X)
#undef X
#undef X_INT
#undef X_DBL
        mjw_end_object(&j);
    } else {
        mjw_null(&j);
    }
    mjw_key(&j, "scheduler");
    if (dna) {
        mjw_begin_object(&j);
        mjw_key(&j, "mode");
        mjw_string(&j, sched.mode == MERA_SCHED_SLOW ? "Slow" : "Fast");
        mjw_key(&j, "max_tile_height");
        mjw_int(&j, sched.max_tile_height);
        mjw_key(&j, "max_tile_width");
        mjw_int(&j, sched.max_tile_width);
        mjw_key(&j, "compiler_workers");
        mjw_int(&j, sched.workers);
        mjw_end_object(&j);
    } else {
        mjw_null(&j);
    }
    mjw_key(&j, "inputs");
    mjw_begin_array(&j, 0);
    for (int k = 0; k < mera_graph_num_inputs(g); k++) {
        const mera_value *v = mera_graph_value(g, mera_graph_input(g, k));
        if (v->kind == MERA_VALUE_INPUT)
            write_tensor(&j, g, v);
    }
    mjw_end_array(&j);
    mjw_key(&j, "outputs");
    mjw_begin_array(&j, 0);
    for (int k = 0; k < mera_graph_num_outputs(g); k++)
        write_tensor(&j, g, mera_graph_value(g, mera_graph_output(g, k)));
    mjw_end_array(&j);
    mjw_key(&j, "params_file");
    mjw_begin_object(&j);
    mjw_key(&j, "name");
    mjw_string(&j, "deploy.params");
    mjw_key(&j, "bytes");
    mjw_int(&j, (int64_t)w.len);
    mjw_key(&j, "fnv1a64");
    mjw_string(&j, out->model_id);
    mjw_end_object(&j);
    mjw_key(&j, "weights_bytes");
    mjw_int(&j, weights);
    mjw_key(&j, "arena_bytes");
    mjw_int(&j, arena);
    mjw_key(&j, "latency_us");
    if (latency >= 0)
        mjw_double(&j, latency);
    else
        mjw_null(&j);
    mjw_end_object(&j);
    if (!(out->json = mjw_finish(&j))) {
        st = mera_fail(err, MERA_ERR_NOMEM, "out of memory writing deploy.json");
        goto done;
    }
    out->params = w.buf;
    out->params_len = w.len;
    w.buf = NULL;

done:
    free(graph_bytes);
    free(prog_bytes);
    free(params.buf);
    free(w.buf);
    free(j.buf);
    if (inst)
        spec->backend->free(inst);
    if (st)
        mera_deploy_files_free(out);
    return st;
}

void mera_deploy_files_free(mera_deploy_files *f)
{
    if (!f)
        return;
    free(f->params);
    free(f->json);
    f->params = NULL;
    f->json = NULL;
    f->params_len = 0;
    f->model_id[0] = 0;
}
