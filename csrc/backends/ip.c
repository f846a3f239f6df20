/* The IP backend: a DNA program run on a device through the HAL
 * (runtime/hal.h; the built-in device "emulated" runs it with the DNA
 * machine in software). Segment by segment: DNA segments on the device,
 * host segments on the host with the InterpreterHw kernels, on data read
 * from and written back to device memory. The device is chosen by
 * mera_backend_load_args.device, else the environment's MERA_IP_DEVICE,
 * else "emulated". One instance drives one device: runs are serialized by
 * the caller (thread_safe_run = 0). */
#define _DEFAULT_SOURCE /* madvise */
#include "backends/ip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime/hal.h"
#include "sim/sim.h"

struct ip_inst {
    const mera_graph *g;
    const void *const *param_data;
    const dna_program *prog;
    uint8_t *program_bytes; /* owned when the caller gave none */
    dna_machine *m;         /* host side: host nodes and the timing model; keeps no packed weights */
    const mera_hal_driver *hal;
    mera_hal_device *dev;
    mera_hal_addr const_addr, act_addr;
    int have_const, have_act;
    int64_t last_cycles;
};

/* Releases the pages wholly inside [p, p + n) of a read-only file mapping
 * (they fault back from the file when read again). */
static void release_mapped(const uint8_t *p, size_t n)
{
#ifdef MADV_DONTNEED
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    if (!n || !page || (page & (page - 1)))
        return;
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1), end = ((uintptr_t)p + n) & ~(page - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
#else
    (void)p;
    (void)n;
#endif
}

void mera_ip_free(void *inst)
{
    ip_inst *ip = inst;
    if (!ip)
        return;
    if (ip->dev) {
        if (ip->have_act)
            ip->hal->mem_free(ip->dev, ip->act_addr);
        if (ip->have_const)
            ip->hal->mem_free(ip->dev, ip->const_addr);
        ip->hal->close(ip->dev);
    }
    dna_machine_free(ip->m);
    free(ip->program_bytes);
    free(ip);
}

void *mera_ip_load(const mera_backend_load_args *a, mera_error *err)
{
    if (!a->prog || !a->platform) {
        mera_fail(err, MERA_ERR_INVALID, "IP: needs a scheduled program and its platform");
        return NULL;
    }
    const char *name = a->device;
    if (!name || !*name)
        name = getenv("MERA_IP_DEVICE");
    if (!name || !*name)
        name = "emulated";
    const mera_hal_driver *hal = mera_hal_find(name);
    if (!hal) {
        char known[256];
        mera_hal_names(known, sizeof known);
        mera_fail(err, MERA_ERR_UNSUPPORTED, "unknown device '%s' (environment MERA_IP_DEVICE); known devices: %s",
                  name, known);
        return NULL;
    }
    ip_inst *ip = calloc(1, sizeof *ip);
    if (!ip) {
        mera_fail(err, MERA_ERR_NOMEM, "out of memory");
        return NULL;
    }
    ip->g = a->g;
    ip->param_data = a->param_data;
    ip->prog = a->prog;
    ip->hal = hal;
    const dna_program *prog = a->prog;
    dna_machine_options mo;
    memset(&mo, 0, sizeof mo);
    mo.pack_at_run = 1; /* the host side runs host nodes only: keep no packed weights */
    mo.threads = a->num_threads;
    if (!(ip->m = dna_machine_new_opts(a->g, prog, a->platform, a->param_data, &mo, err))) {
        mera_error_prefix(err, "loading the DNA program: ");
        goto fail;
    }
    mera_hal_program hp;
    memset(&hp, 0, sizeof hp);
    hp.program = a->program_bytes;
    hp.program_len = a->program_len;
    if (!hp.program) {
        size_t len = 0;
        if (dna_program_serialize(prog, &ip->program_bytes, &len, err))
            goto fail;
        hp.program = ip->program_bytes;
        hp.program_len = len;
    }
    mera_status st;
    if ((st = hal->open(name, &ip->dev, err)))
        goto fail_dev;
    /* the constant image: imported without a copy when the device can */
    uint64_t cb = (uint64_t)(prog->params_bytes > 0 ? prog->params_bytes : 1);
    if (hal->mem_import && a->params_mapped) {
        if ((st = hal->mem_import(ip->dev, prog->params_image, cb, &ip->const_addr, err)))
            goto fail_dev;
        ip->have_const = 1;
    } else {
        if ((st = hal->mem_alloc(ip->dev, cb, &ip->const_addr, err)))
            goto fail_dev;
        ip->have_const = 1;
        /* in chunks, releasing what was copied: the image is never resident twice */
        for (int64_t at = 0; at < prog->params_bytes; at += 4 << 20) {
            int64_t n = prog->params_bytes - at < (4 << 20) ? prog->params_bytes - at : (4 << 20);
            if ((st = hal->write(ip->dev, ip->const_addr + (uint64_t)at, prog->params_image + at, (uint64_t)n, err)))
                goto fail_dev;
            if (a->params_mapped)
                release_mapped(prog->params_image + at, (size_t)n);
        }
    }
    uint64_t ab = (uint64_t)(prog->dram_bytes - dna_act_base(prog));
    if ((st = hal->mem_alloc(ip->dev, ab ? ab : 1, &ip->act_addr, err)))
        goto fail_dev;
    ip->have_act = 1;
    hp.prog = prog;
    hp.g = a->g;
    hp.platform = a->platform;
    hp.const_addr = ip->const_addr;
    hp.act_addr = ip->act_addr;
    if ((st = hal->load_program(ip->dev, &hp, err)))
        goto fail_dev;
    return ip;
fail_dev:
    mera_error_prefix(err, "device '%s': ", name);
fail:
    mera_ip_free(ip);
    return NULL;
}

/* The data of a PARAM or CONST value. */
static const void *graph_data(const ip_inst *ip, int v)
{
    const mera_value *val = mera_graph_value(ip->g, v);
    if (val->kind == MERA_VALUE_PARAM)
        for (int k = 0; k < mera_graph_num_inputs(ip->g); k++)
            if (mera_graph_input(ip->g, k) == v)
                return ip->param_data[k];
    return val->data;
}

static mera_hal_addr dev_addr(const ip_inst *ip, int v)
{
    return ip->act_addr + (mera_hal_addr)(ip->prog->value_dram[v] - dna_act_base(ip->prog));
}

/* A host node on device memory: in place when the device maps it (hal.h,
 * map), else on host copies read from and written back to the device. */
static mera_status run_host_segment(ip_inst *ip, int node_index, mera_error *err)
{
    const mera_graph *g = ip->g;
    const mera_node *node = mera_graph_node(g, node_index);
    const void *in[MERA_MAX_NODE_INPUTS];
    void *out[MERA_MAX_NODE_OUTPUTS];
    int copied[MERA_MAX_NODE_OUTPUTS];
    void *bufs[MERA_MAX_NODE_INPUTS + MERA_MAX_NODE_OUTPUTS];
    int nb = 0;
    mera_status st = MERA_OK;
    memset(in, 0, sizeof in);
    for (int k = 0; k < node->n_inputs && !st; k++) {
        int v = node->inputs[k];
        if (v < 0 || ip->prog->value_dram[v] < 0)
            continue; /* PARAM/CONST: the graph's data */
        size_t n = mera_type_nbytes(&mera_graph_value(g, v)->type);
        if (ip->hal->map && (in[k] = ip->hal->map(ip->dev, dev_addr(ip, v), n)))
            continue;
        void *b = aligned_alloc(64, (n + 63) / 64 * 64 + 64);
        if (!b) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            break;
        }
        bufs[nb++] = b;
        in[k] = b;
        st = ip->hal->read(ip->dev, dev_addr(ip, v), b, n, err);
    }
    for (int o = 0; o < node->n_outputs && !st; o++) {
        size_t n = mera_type_nbytes(&mera_graph_value(g, node->outputs[o])->type);
        copied[o] = 0;
        if (ip->hal->map && (out[o] = ip->hal->map(ip->dev, dev_addr(ip, node->outputs[o]), n)))
            continue;
        void *b = aligned_alloc(64, (n + 63) / 64 * 64 + 64);
        if (!b) {
            st = mera_fail(err, MERA_ERR_NOMEM, "out of memory");
            break;
        }
        bufs[nb++] = b;
        out[o] = b;
        copied[o] = 1;
    }
    if (!st)
        st = dna_machine_run_host_node(ip->m, node_index, in, out, err);
    for (int o = 0; o < node->n_outputs && !st; o++)
        if (copied[o])
            st = ip->hal->write(ip->dev, dev_addr(ip, node->outputs[o]), out[o],
                                mera_type_nbytes(&mera_graph_value(g, node->outputs[o])->type), err);
    for (int k = 0; k < nb; k++)
        free(bufs[k]);
    return st;
}

mera_status mera_ip_run(void *inst, const void *const *inputs, void *const *outputs, mera_error *err)
{
    ip_inst *ip = inst;
    const dna_program *prog = ip->prog;
    const mera_graph *g = ip->g;
    mera_status st = MERA_OK;
    int64_t cycles = 0;
    const char *what = "writing the inputs";
    for (int k = 0, i = 0; k < mera_graph_num_inputs(g) && !st; k++) {
        int v = mera_graph_input(g, k);
        const mera_value *val = mera_graph_value(g, v);
        if (val->kind != MERA_VALUE_INPUT)
            continue;
        st = ip->hal->write(ip->dev, dev_addr(ip, v), inputs[i++], mera_type_nbytes(&val->type), err);
    }
    for (int s = 0; s < prog->n_segments && !st; s++) {
        const dna_segment *seg = &prog->segments[s];
        if (seg->kind == DNA_SEG_DNA) {
            int64_t c = 0;
            what = "running a DNA segment";
            st = ip->hal->run_segment(ip->dev, s, &c, err);
            cycles += c;
            if (st)
                mera_error_prefix(err, "segment %d: ", s);
            continue;
        }
        what = "running a host segment";
        st = run_host_segment(ip, seg->node, err);
    }
    if (!st)
        what = "reading the outputs";
    for (int i = 0; i < mera_graph_num_outputs(g) && !st; i++) {
        int v = mera_graph_output(g, i);
        size_t n = mera_type_nbytes(&mera_graph_value(g, v)->type);
        if (prog->value_dram[v] >= 0)
            st = ip->hal->read(ip->dev, dev_addr(ip, v), outputs[i], n, err);
        else /* an output that is a PARAM or CONST: the graph's data */
            memcpy(outputs[i], graph_data(ip, v), n);
    }
    if (st) {
        mera_error_prefix(err, "device '%s': %s: ", ip->hal->name, what);
        return st == MERA_ERR_FORMAT ? MERA_ERR_RUNTIME : st;
    }
    ip->last_cycles = cycles;
    return MERA_OK;
}

void mera_ip_metrics(const void *inst, mera_backend_metrics *m)
{
    const ip_inst *ip = inst;
    memset(m, 0, sizeof *m);
    const dna_timing *t = dna_machine_timing(ip->m);
    m->device_cycles = ip->last_cycles ? ip->last_cycles : t->device_cycles; /* the device's count once it ran */
    m->device_us = (double)m->device_cycles / t->clock_mhz; /* the device alone; host time apart */
    m->clock_mhz = t->clock_mhz;
    m->host_us = t->host_us;
    m->device = ip->hal->name;
    m->arena_bytes = (size_t)(ip->prog->dram_bytes - ip->prog->params_bytes);
}

const dna_timing *mera_ip_timing(const void *inst)
{
    return dna_machine_timing(((const ip_inst *)inst)->m);
}

mera_status mera_ip_write_trace(const void *inst, const char *path, mera_error *err)
{
    return dna_machine_write_trace(((const ip_inst *)inst)->m, path, err);
}
