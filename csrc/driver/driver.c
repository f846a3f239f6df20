/* The compile driver (driver.h): the whole pipeline in one function,
 * mera_compile, read top to bottom. */
#include "driver/driver.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/deploy_write.h"
#include "passes/passes.h"

struct mera_compiled {
    const mera_backend *backend;
    const mera_platform *platform;
    mera_sched_options sched;
    /* every graph the passes made, in order: each may borrow data from the one before */
    mera_graph *graphs[MERA_STAGE_COUNT];
    int n_graphs;
    const mera_graph *g;        /* the last: what runs */
    const void **param_data;    /* of g */
    dna_program *prog;
    mera_partition_report *report;
    void *inst;
};

static const char *const stage_names[] = {
#define X(e, name, doc) #name,
    MERA_STAGES(X)
#undef X
};

const char *mera_stage_name(mera_stage s)
{
    return s >= 0 && s < MERA_STAGE_COUNT ? stage_names[s] : "?";
}

/* ---- dump_ir: what each chosen stage made, into a folder ------------------- */

typedef struct {
    const char *dir;
    char want[MERA_STAGE_COUNT];
} dumper;

static mera_status dumper_init(dumper *d, const mera_compile_options *o, mera_error *err)
{
    memset(d, 0, sizeof *d);
    d->dir = o->dump_dir;
    if (!d->dir)
        return MERA_OK;
    const char *s = o->dump_stages && o->dump_stages[0] ? o->dump_stages : "all";
    while (*s) {
        size_t n = strcspn(s, ",");
        int found = 0;
        if (n == 3 && strncmp(s, "all", 3) == 0) {
            memset(d->want, 1, sizeof d->want);
            found = 1;
        }
        for (int k = 0; k < MERA_STAGE_COUNT && !found; k++)
            if (strlen(stage_names[k]) == n && strncmp(s, stage_names[k], n) == 0)
                d->want[k] = found = 1;
        if (!found && n) {
            char names[256];
            size_t at = 0;
            for (int k = 0; k < MERA_STAGE_COUNT; k++)
                at += (size_t)snprintf(names + at, sizeof names - at, "%s, ", stage_names[k]);
            return mera_fail(err, MERA_ERR_CONFIG, "dump_ir: unknown stage '%.*s'; stages are %sall", (int)n, s,
                             names);
        }
        s += n;
        if (*s == ',')
            s++;
    }
    return MERA_OK;
}

static mera_status dump_text(const dumper *d, mera_stage st, const char *ext, const char *text, mera_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%02d-%s.%s", d->dir, (int)st, stage_names[st], ext);
    FILE *f = fopen(path, "w");
    if (!f)
        return mera_fail(err, MERA_ERR_IO, "dump_ir: cannot write '%s': %s", path, strerror(errno));
    size_t n = strlen(text);
    int bad = fwrite(text, 1, n, f) != n;
    bad |= fclose(f) != 0;
    if (bad)
        return mera_fail(err, MERA_ERR_IO, "dump_ir: writing '%s' failed", path);
    return MERA_OK;
}

static mera_status dump_graph(const dumper *d, mera_stage st, const mera_graph *g, mera_error *err)
{
    if (!d->dir || !d->want[st])
        return MERA_OK;
    char *text = mera_graph_to_text(g);
    if (!text)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    mera_status s = dump_text(d, st, "ir", text, err);
    free(text);
    return s;
}

/* A growing text buffer for the partition and schedule dumps. */
typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} textbuf;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void tb_printf(textbuf *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if (t->buf && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap <= t->len + (size_t)n)
            cap *= 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->oom = 1;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

static const char *node_label(const mera_graph *g, int n, char *buf, size_t len)
{
    const mera_node *node = mera_graph_node(g, n);
    snprintf(buf, len, "%s (%s)", node->name, mera_op_table[node->op].name);
    return buf;
}

static mera_status dump_partition(const dumper *d, const mera_compiled *c, mera_error *err)
{
    if (!d->dir || !d->want[MERA_STAGE_PARTITION])
        return MERA_OK;
    textbuf t = {0};
    int on = 0;
    for (int i = 0; i < c->report->n; i++)
        on += c->report->entries[i].on_dna;
    tb_printf(&t, "# partition of '%s' for %s on %s: %d of %d nodes on the DNA\n", mera_graph_name(c->g),
              c->backend->name, c->platform->name, on, c->report->n);
    for (int i = 0; i < c->report->n; i++) {
        const mera_partition_entry *e = &c->report->entries[i];
        char lab[256];
        tb_printf(&t, "%-4s %-48s %s\n", e->on_dna ? "DNA" : "host", node_label(c->g, e->node, lab, sizeof lab),
                  e->reason);
    }
    mera_status s = t.oom ? mera_fail(err, MERA_ERR_NOMEM, "out of memory")
                          : dump_text(d, MERA_STAGE_PARTITION, "txt", t.buf, err);
    free(t.buf);
    return s;
}

static mera_status dump_schedule(const dumper *d, const mera_compiled *c, mera_error *err)
{
    if (!d->dir || !d->want[MERA_STAGE_SCHEDULE])
        return MERA_OK;
    const dna_program *p = c->prog;
    textbuf t = {0};
    tb_printf(&t, "# schedule of '%s' on %s: %d segments, %d layers, %d instructions\n", mera_graph_name(c->g),
              p->platform, p->n_segments, p->n_layers, p->n_insns);
    tb_printf(&t, "# DRAM %lld bytes (constant image %lld), on-chip ACT %u, WGT %u, ACC %u bytes\n",
              (long long)p->dram_bytes, (long long)p->params_bytes, p->act_bytes, p->wgt_bytes, p->acc_bytes);
    int *per_layer = calloc((size_t)(p->n_layers > 0 ? p->n_layers : 1), sizeof *per_layer);
    if (!per_layer)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    for (int i = 0; i < p->n_insns; i++)
        if (p->insns[i].layer >= 0 && p->insns[i].layer < p->n_layers)
            per_layer[p->insns[i].layer]++;
    for (int s = 0; s < p->n_segments; s++) {
        const dna_segment *seg = &p->segments[s];
        char lab[256];
        if (seg->kind == DNA_SEG_HOST) {
            tb_printf(&t, "segment %d HOST %s\n", s, node_label(c->g, seg->node, lab, sizeof lab));
            continue;
        }
        tb_printf(&t, "segment %d DNA instructions [%d, %d), host in %lld B, out %lld B\n", s, seg->first,
                  seg->first + seg->count, (long long)seg->host_in_bytes, (long long)seg->host_out_bytes);
        int last = -1;
        for (int i = seg->first; i < seg->first + seg->count; i++) {
            int l = p->insns[i].layer;
            if (l == last || l < 0 || l >= p->n_layers)
                continue;
            last = l;
            tb_printf(&t, "  layer %-4d %-48s %5d instructions, %lld MACs\n", l,
                      node_label(c->g, p->layers[l].node, lab, sizeof lab), per_layer[l],
                      (long long)p->layers[l].macs);
        }
    }
    tb_printf(&t, "# value DRAM offsets\n");
    for (int v = 0; v < p->n_values && v < mera_graph_num_values(c->g); v++)
        if (p->value_dram[v] >= 0) {
            const mera_value *val = mera_graph_value(c->g, v);
            tb_printf(&t, "  %-48s @ %lld, %zu B\n", val->name, (long long)p->value_dram[v],
                      mera_type_nbytes(&val->type));
        }
    free(per_layer);
    mera_status st = t.oom ? mera_fail(err, MERA_ERR_NOMEM, "out of memory")
                           : dump_text(d, MERA_STAGE_SCHEDULE, "txt", t.buf, err);
    free(t.buf);
    return st;
}

/* The whole program, one line per instruction (isa/disasm.c). */
static mera_status dump_program(const dumper *d, const mera_compiled *c, mera_error *err)
{
    if (!d->dir || !d->want[MERA_STAGE_PROGRAM])
        return MERA_OK;
    char *text;
    mera_status st = dna_program_disasm(c->prog, c->g, &text, err);
    if (st)
        return st;
    st = dump_text(d, MERA_STAGE_PROGRAM, "txt", text, err);
    free(text);
    return st;
}

/* ---- the pipeline ---------------------------------------------------------- */

/* Keep g as the newest graph of the chain; dump it after stage st. */
static mera_status push_graph(mera_compiled *c, mera_graph *g, const dumper *d, mera_stage st, mera_error *err)
{
    if (!g)
        return err ? err->code : MERA_ERR_INVALID;
    MERA_ASSERT(c->n_graphs < MERA_STAGE_COUNT);
    c->graphs[c->n_graphs++] = g;
    c->g = g;
    return dump_graph(d, st, g, err);
}

typedef struct {
    mera_stage stage;
    mera_pass_fn run;
    int dna_only;  /* only for layout_nhwc backends */
    int host_only; /* only for the others (the interpreters) */
} pass_step;

/* The passes, in the order they run. */
static const pass_step passes[] = {
    {MERA_STAGE_FOLD_BN, mera_pass_fold_bn, 0, 0},
    {MERA_STAGE_FOLD_CONST, mera_pass_fold_const, 0, 0},
    {MERA_STAGE_LAYOUT, mera_pass_layout_nhwc, 1, 0},
    {MERA_STAGE_SUBPIXEL, mera_pass_subpixel, 1, 0},
    {MERA_STAGE_TRIM_TAPS, mera_pass_trim_taps, 1, 0},
    /* host only: on the DNA the collapsed shuffle is a 3-D DMA permute, slower than the two moves it replaces */
    {MERA_STAGE_MOVES, mera_pass_collapse_moves, 0, 1},
    {MERA_STAGE_DCE, mera_pass_dce, 0, 0},
};

mera_compiled *mera_compile(const mera_graph *g, const void *const *param_data, const mera_compile_options *o,
                            mera_error *err)
{
    if (!g || !o || !o->backend) {
        mera_fail(err, MERA_ERR_INVALID, "mera_compile: a graph and options with a backend are required");
        return NULL;
    }
    const mera_backend *b = o->backend;
    if (b->runs_program && !o->platform) {
        mera_fail(err, MERA_ERR_CONFIG, "target %s needs a platform", b->name);
        return NULL;
    }
    dumper d;
    if (dumper_init(&d, o, err))
        return NULL;
    mera_compiled *c = calloc(1, sizeof *c);
    if (!c) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    c->backend = b;
    c->platform = b->runs_program ? o->platform : NULL;
    c->sched = o->sched;

    /* verify: every param has data, the graph has outputs */
    if (mera_graph_num_outputs(g) == 0) {
        mera_fail(err, MERA_ERR_INVALID, "graph '%s' has no outputs", mera_graph_name(g));
        goto fail;
    }
    if (push_graph(c, mera_pass_bind(g, param_data, err), &d, MERA_STAGE_INPUT, err))
        goto fail;

    /* passes */
    for (size_t k = 0; k < MERA_ARRAY_LEN(passes); k++) {
        if ((passes[k].dna_only && !b->layout_nhwc) || (passes[k].host_only && b->layout_nhwc))
            continue;
        if (push_graph(c, passes[k].run(c->g, err), &d, passes[k].stage, err)) {
            mera_error_prefix(err, "pass %s: ", stage_names[passes[k].stage]);
            goto fail;
        }
    }
    if (!(c->param_data = mera_bound_param_data(c->g))) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        goto fail;
    }

    /* [quantize] is mera's quantizer (quant/quant.h): it needs calibration
     * data, so the user runs it before compiling (mera.Quantizer), and its
     * int8 graph comes in here like any other. */

    /* partition -> schedule (DNA targets) */
    if (b->runs_program) {
        if (!(c->prog = mera_schedule(c->g, c->param_data, c->platform, &c->sched, &c->report, err)))
            goto fail;
        if (dump_partition(&d, c, err) || dump_schedule(&d, c, err) || dump_program(&d, c, err))
            goto fail;
    }

    /* emit: the backend instance (deploy files: mera_compiled_deploy_files) */
    if (o->load) {
        mera_backend_load_args a = {
            .g = c->g,
            .param_data = c->param_data,
            .prog = c->prog,
            .platform = c->platform,
            .num_threads = o->num_threads,
        };
        if (!(c->inst = b->load(&a, err)))
            goto fail;
    }
    return c;
fail:
    mera_compiled_free(c);
    return NULL;
}

void mera_compiled_free(mera_compiled *c)
{
    if (!c)
        return;
    if (c->inst)
        c->backend->free(c->inst);
    if (c->report)
        mera_partition_report_free(c->report);
    dna_program_free(c->prog);
    free(c->param_data);
    for (int i = c->n_graphs - 1; i >= 0; i--)
        mera_graph_free(c->graphs[i]);
    free(c);
}

const mera_backend *mera_compiled_backend(const mera_compiled *c) { return c->backend; }
const mera_graph *mera_compiled_graph(const mera_compiled *c) { return c->g; }
const void *const *mera_compiled_param_data(const mera_compiled *c) { return c->param_data; }
const dna_program *mera_compiled_program(const mera_compiled *c) { return c->prog; }
const mera_partition_report *mera_compiled_partition(const mera_compiled *c) { return c->report; }
const mera_platform *mera_compiled_platform(const mera_compiled *c) { return c->platform; }
void *mera_compiled_instance(const mera_compiled *c) { return c->inst; }

mera_status mera_compiled_run(const mera_compiled *c, const void *const *inputs, void *const *outputs,
                              mera_error *err)
{
    if (!c->inst)
        return mera_fail(err, MERA_ERR_INVALID, "the model was compiled without loading it");
    return c->backend->run(c->inst, inputs, outputs, err);
}

mera_status mera_compiled_deploy_files(const mera_compiled *c, const char *host_arch, mera_deploy_files *out,
                                       mera_error *err)
{
    mera_deploy_spec spec = {
        .backend = c->backend,
        .host_arch = host_arch,
        .g = c->g,
        .param_data = c->param_data,
        .platform = c->platform,
        .sched = c->backend->runs_program ? &c->sched : NULL,
        .prog = c->prog,
    };
    return mera_deploy_write(&spec, out, err);
}
