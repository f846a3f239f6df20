/* The DNA program as text (dna_program_disasm, isa.h; docs/isa.md,
 * "Disassembly"): a header, the layer and value tables, then each segment
 * with one line per instruction. Every line is a function of the program
 * (and the graph's names) alone, in a fixed field order, so two dumps of
 * the same program are byte-identical and two schedules diff line by line.
 *
 * It prints any program, valid or not: indices into the graph are printed
 * as numbers and only looked up when they are in range, so a malformed
 * program can be disassembled to see what is wrong with it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "isa/isa.h"
#include "util/bytes.h"

static void put(mera_writer *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void put(mera_writer *w, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        w->oom = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        mera_put_bytes(w, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        w->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    mera_put_bytes(w, big, (size_t)n);
    free(big);
}

/* A graph name in single quotes, one line whatever it holds: quote,
 * backslash and bytes outside printable ASCII as \xNN. */
static void put_name(mera_writer *w, const char *s)
{
    mera_put_bytes(w, "'", 1);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch > 0x7e || ch == '\'' || ch == '\\')
            put(w, "\\x%02x", ch);
        else
            mera_put_bytes(w, s, 1);
    }
    mera_put_bytes(w, "'", 1);
}

static const mera_node *node_of(const mera_graph *g, int64_t n)
{
    return g && n >= 0 && n < mera_graph_num_nodes(g) ? mera_graph_node(g, (int)n) : NULL;
}

/* " 'conv1' conv2d" with a graph, else nothing */
static void put_node(mera_writer *w, const mera_graph *g, int64_t n)
{
    const mera_node *node = node_of(g, n);
    if (!node)
        return;
    mera_put_bytes(w, " ", 1);
    put_name(w, node->name);
    put(w, " %s", node->op >= 0 && node->op < MERA_OP_COUNT ? mera_op_table[node->op].name : "?");
}

static const char *const queue_names[DNA_NUM_QUEUES] = {"load", "compute", "store"};

/* The queues a token flag pair points at: "load", "load,store" or "-". */
static void put_token_queues(mera_writer *w, int queue, int prev, int next)
{
    int any = 0;
    if (prev && queue > 0) {
        put(w, "%s", queue_names[queue - 1]);
        any = 1;
    }
    if (next && queue >= 0 && queue + 1 < DNA_NUM_QUEUES) {
        put(w, "%s%s", any ? "," : "", queue_names[queue + 1]);
        any = 1;
    }
    if (!any)
        put(w, "-");
}

/* The requantization unit's rounding: its name, or the raw number. */
static void put_rounding(mera_writer *w, int32_t rounding)
{
    const char *name = mera_rounding_name((mera_rounding)rounding);
    if (name)
        put(w, " round=%s", name);
    else
        put(w, " round=%d", (int)rounding);
}

static void put_tile(mera_writer *w, const char *name, const dna_tile *t)
{
    put(w, " %s=%u:%dx%dx%dx%d", name, (unsigned)t->addr, (int)t->ext[0], (int)t->ext[1], (int)t->ext[2],
        (int)t->ext[3]);
}

static void put_insn(mera_writer *w, const dna_program *p, const mera_graph *g, int i)
{
    const dna_insn *in = &p->insns[i];
    int q = dna_opcode_queue(in->opcode);
    put(w, "  %5d %-5s %-7s L%d", i, dna_opcode_name(in->opcode), q >= 0 ? queue_names[q] : "?", (int)in->layer);
    if (in->layer >= 0 && in->layer < p->n_layers && node_of(g, p->layers[in->layer].node)) {
        mera_put_bytes(w, " ", 1);
        put_name(w, node_of(g, p->layers[in->layer].node)->name);
    }
    put(w, " pop=");
    put_token_queues(w, q, in->deps & DNA_DEP_POP_PREV, in->deps & DNA_DEP_POP_NEXT);
    put(w, " push=");
    put_token_queues(w, q, in->deps & DNA_DEP_PUSH_PREV, in->deps & DNA_DEP_PUSH_NEXT);
    if (in->deps & ~0xFu)
        put(w, " deps=0x%02x", (unsigned)in->deps);
    if (in->reserved)
        put(w, " reserved=%u", (unsigned)in->reserved);
    switch (in->opcode) {
    case DNA_LOAD:
    case DNA_STORE: {
        const dna_dma *d = &in->u.dma;
        const char *mem = d->mem == DNA_MEM_ACT ? "ACT" : d->mem == DNA_MEM_WGT ? "WGT" : "mem?";
        char dram[96], sram[96];
        snprintf(dram, sizeof dram, "dram=%lld stride=%lld,%lld", (long long)d->dram, (long long)d->dram_row_stride,
                 (long long)d->dram_col_stride);
        snprintf(sram, sizeof sram, "%s=%u stride=%u,%u", mem, (unsigned)d->sram, (unsigned)d->sram_row_stride,
                 (unsigned)d->sram_col_stride);
        put(w, " box=%dx%dx%d %s <- %s", (int)d->rows, (int)d->cols, (int)d->run_bytes,
            in->opcode == DNA_LOAD ? sram : dram, in->opcode == DNA_LOAD ? dram : sram);
        if (in->opcode == DNA_LOAD || d->pad_top || d->pad_bottom || d->pad_left || d->pad_right || d->pad_value)
            put(w, " pad=%d,%d,%d,%d fill=%u", (int)d->pad_top, (int)d->pad_bottom, (int)d->pad_left,
                (int)d->pad_right, (unsigned)d->pad_value);
        if (d->reserved)
            put(w, " dma_reserved=%u", (unsigned)d->reserved);
        break;
    }
    case DNA_CONV: {
        const dna_conv *c = &in->u.conv;
        put(w, " out=%u:%dx%dx%d <- in=%u:%dx%dx%d wgt=%u oc=%d+%d dws=%d wgt_dram=%lld", (unsigned)c->out_addr,
            (int)c->out_h, (int)c->out_w, (int)c->oc_n, (unsigned)c->in_addr, (int)c->in_h, (int)c->in_w,
            (int)c->in_c, (unsigned)c->wgt_addr, (int)c->oc0, (int)c->oc_n, (int)c->depthwise_saturate,
            (long long)c->wgt_dram);
        put_rounding(w, c->rounding);
        break;
    }
    case DNA_VEC: {
        const dna_vec *v = &in->u.vec;
        put_tile(w, "dst", &v->dst);
        put(w, " <-");
        int n = v->n_src < 0 ? 0 : v->n_src > DNA_MAX_SRC ? DNA_MAX_SRC : v->n_src;
        if (n != v->n_src)
            put(w, " n_src=%d", (int)v->n_src);
        for (int s = 0; s < n; s++) {
            char name[16];
            snprintf(name, sizeof name, "src%d", s);
            put_tile(w, name, &v->src[s]);
        }
        put(w, " origin=%d,%d,%d,%d", (int)v->origin[0], (int)v->origin[1], (int)v->origin[2], (int)v->origin[3]);
        put_rounding(w, v->rounding);
        break;
    }
    default: /* NOP: tokens only; an unknown opcode has no body */
        break;
    }
    mera_put_bytes(w, "\n", 1);
}

static const char *value_kind_name(mera_value_kind k)
{
    switch (k) {
    case MERA_VALUE_INPUT: return "input";
    case MERA_VALUE_PARAM: return "param";
    case MERA_VALUE_CONST: return "const";
    case MERA_VALUE_NODE: return "node";
    }
    return "?";
}

mera_status dna_program_disasm(const dna_program *p, const mera_graph *g, char **text, mera_error *err)
{
    *text = NULL;
    if (!p)
        return mera_fail(err, MERA_ERR_INVALID, "dna_program_disasm: no program");
    mera_writer w = {0};
    char platform[sizeof p->platform + 1];
    memcpy(platform, p->platform, sizeof p->platform);
    platform[sizeof p->platform] = 0;
    put(&w, "; DNA program, ISA version %u, platform ", (unsigned)p->version);
    put_name(&w, platform);
    put(&w, "\n; buffers ACT %u, WGT %u, ACC %u bytes\n", (unsigned)p->act_bytes, (unsigned)p->wgt_bytes,
        (unsigned)p->acc_bytes);
    put(&w, "; DRAM %lld bytes, constant image [0, %lld)", (long long)p->dram_bytes, (long long)p->params_bytes);
    if (p->params_image && p->params_bytes > 0)
        put(&w, " fnv1a64 %016llx",
            (unsigned long long)mera_fnv1a64(p->params_image, (size_t)p->params_bytes));
    put(&w, "\n; %d layers, %d instructions, %d segments, %d values\n", (int)p->n_layers, (int)p->n_insns,
        (int)p->n_segments, (int)p->n_values);

    put(&w, "\nlayers:\n");
    for (int l = 0; l < p->n_layers && p->layers; l++) {
        const dna_layer *ly = &p->layers[l];
        put(&w, "  L%d node=%d", l, (int)ly->node);
        put_node(&w, g, ly->node);
        put(&w, " macs=%lld", (long long)ly->macs);
        if (ly->reserved)
            put(&w, " reserved=%d", (int)ly->reserved);
        mera_put_bytes(&w, "\n", 1);
    }

    put(&w, "\nvalues:\n");
    for (int v = 0; v < p->n_values && p->value_dram; v++) {
        put(&w, "  v%d", v);
        if (g && v < mera_graph_num_values(g)) {
            const mera_value *val = mera_graph_value(g, v);
            mera_put_bytes(&w, " ", 1);
            put_name(&w, val->name);
            put(&w, " %s bytes=%zu", value_kind_name(val->kind), mera_type_nbytes(&val->type));
        }
        if (p->value_dram[v] < 0)
            put(&w, " dram=-\n");
        else
            put(&w, " dram=%lld\n", (long long)p->value_dram[v]);
    }

    /* Instructions by segment; any that no segment covers (a malformed
     * program) are listed after them, so that every instruction appears
     * exactly once. */
    unsigned char *shown = calloc((size_t)(p->n_insns > 0 ? p->n_insns : 1), 1);
    if (!shown)
        w.oom = 1;
    for (int s = 0; s < p->n_segments && p->segments && shown; s++) {
        const dna_segment *seg = &p->segments[s];
        if (seg->kind == DNA_SEG_HOST) {
            put(&w, "\nsegment %d host node=%d", s, (int)seg->node);
            put_node(&w, g, seg->node);
            mera_put_bytes(&w, "\n", 1);
            continue;
        }
        put(&w, "\nsegment %d %s insns=[%d, %lld) host_in=%lld host_out=%lld\n", s,
            seg->kind == DNA_SEG_DNA ? "dna" : "kind?", (int)seg->first, (long long)seg->first + seg->count,
            (long long)seg->host_in_bytes, (long long)seg->host_out_bytes);
        if (seg->kind != DNA_SEG_DNA || seg->first < 0 || seg->count < 0 || seg->first > p->n_insns ||
            seg->count > p->n_insns - seg->first || !p->insns)
            continue;
        for (int i = seg->first; i < seg->first + seg->count; i++)
            if (!shown[i]) {
                put_insn(&w, p, g, i);
                shown[i] = 1;
            }
    }
    for (int i = 0, header = 0; i < p->n_insns && p->insns && shown; i++)
        if (!shown[i]) {
            if (!header)
                put(&w, "\nnot in a segment:\n");
            header = 1;
            put_insn(&w, p, g, i);
        }
    free(shown);
    mera_put_bytes(&w, "", 1); /* the terminating NUL */
    if (w.oom) {
        free(w.buf);
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory disassembling the DNA program");
    }
    *text = (char *)w.buf;
    return MERA_OK;
}
