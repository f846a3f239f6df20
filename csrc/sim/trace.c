/* The Chrome/Perfetto trace of one modelled inference: a "traceEvents"
 * JSON array of complete ("X") events, microseconds on the inference's
 * timeline (dna_insn_times: host segments, each DNA segment's host call
 * and PCIe input, then its instructions at the platform clock). Threads:
 * 0 load, 1 compute, 2 store, 3 host. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim/machine_internal.h"

enum { TID_HOST = 3 };

static void put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void event(FILE *f, int *first, const char *name, int tid, double ts, double dur)
{
    fputs(*first ? "\n  {" : ",\n  {", f);
    *first = 0;
    fputs("\"name\": ", f);
    put_json_string(f, name);
    fprintf(f, ", \"ph\": \"X\", \"pid\": 0, \"tid\": %d, \"ts\": %.4f, \"dur\": %.4f", tid, ts, dur);
}

static void write_events(const dna_machine *m, FILE *f)
{
    static const char *const tid_names[4] = {"load", "compute", "store", "host"};
    const dna_program *prog = m->prog;
    const dna_insn_times *t = &m->times;
    double mhz = m->p->clock_mhz;
    int first = 1;
    fputs("{\"traceEvents\": [", f);
    for (int tid = 0; tid < 4; tid++) {
        fputs(first ? "\n  {" : ",\n  {", f);
        first = 0;
        fprintf(f, "\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": %d, \"args\": {\"name\": \"%s\"}}",
                tid, tid_names[tid]);
    }
    for (int s = 0; s < prog->n_segments; s++) {
        const dna_segment *seg = &prog->segments[s];
        if (seg->kind == DNA_SEG_HOST) {
            const mera_node *node = mera_graph_node(m->g, seg->node);
            event(f, &first, node->name, TID_HOST, t->seg_start_us[s], t->seg_us[s]);
            fprintf(f, ", \"args\": {\"op\": \"%s\", \"segment\": %d}}", mera_op_table[node->op].name, s);
            continue;
        }
        double pre = t->seg_dev_start_us[s] - t->seg_start_us[s];
        if (pre > 0) {
            event(f, &first, "host call + PCIe in", TID_HOST, t->seg_start_us[s], pre);
            fprintf(f, ", \"args\": {\"segment\": %d, \"bytes\": %lld}}", s, (long long)seg->host_in_bytes);
        }
        int64_t makespan = 0;
        for (int k = 0; k < seg->count; k++) {
            int i = seg->first + k;
            const dna_insn *in = &prog->insns[i];
            const mera_node *node = mera_graph_node(m->g, prog->layers[in->layer].node);
            int64_t bytes = 0, macs = 0;
            dna_insn_cycles(m->g, prog, m->p, in, &bytes, &macs);
            if (t->end[i] > makespan)
                makespan = t->end[i];
            event(f, &first, node->name, dna_opcode_queue(in->opcode), t->seg_dev_start_us[s] + t->start[i] / mhz,
                  (double)(t->end[i] - t->start[i]) / mhz);
            fprintf(f,
                    ", \"args\": {\"insn\": %d, \"opcode\": \"%s\", \"layer_op\": \"%s\", \"bytes\": %lld, "
                    "\"macs\": %lld, \"start_cycle\": %lld, \"cycles\": %lld}}",
                    i, dna_opcode_name(in->opcode), mera_op_table[node->op].name, (long long)bytes,
                    (long long)macs, (long long)t->start[i], (long long)(t->end[i] - t->start[i]));
        }
        double post = t->seg_start_us[s] + t->seg_us[s] - (t->seg_dev_start_us[s] + makespan / mhz);
        if (seg->host_out_bytes > 0 && post > 0) {
            event(f, &first, "PCIe out", TID_HOST, t->seg_dev_start_us[s] + makespan / mhz, post);
            fprintf(f, ", \"args\": {\"segment\": %d, \"bytes\": %lld}}", s, (long long)seg->host_out_bytes);
        }
    }
    const dna_timing *tm = &m->timing;
    fprintf(f,
            "\n],\n\"displayTimeUnit\": \"ns\",\n\"otherData\": {\"platform\": \"%s\", \"clock_mhz\": %g, "
            "\"device_us\": %.4f, \"host_us\": %.4f, \"total_us\": %.4f}}\n",
            m->p->name, mhz, tm->device_us, tm->host_us, tm->total_us);
}

mera_status dna_machine_write_trace(const dna_machine *m, const char *path, mera_error *err)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return mera_fail(err, MERA_ERR_NOMEM, "out of memory");
    /* Write a temporary sibling, then rename: readers never see half a file. */
    snprintf(tmp, n, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        mera_status st = mera_fail(err, MERA_ERR_IO, "cannot write trace '%s': %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    write_events(m, f);
    int bad = ferror(f);
    if (fclose(f) != 0)
        bad = 1;
    if (bad || rename(tmp, path) != 0) {
        mera_status st = mera_fail(err, MERA_ERR_IO, "cannot write trace '%s': %s", path, strerror(errno));
        remove(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return MERA_OK;
}
