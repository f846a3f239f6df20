/* mera._core.Sim: a graph compiled for the Simulator target. Construction
 * schedules the graph for a platform (sched/sched.h) and loads the program
 * into a DNA machine (sim/sim.h); runs execute it bit-exactly with the GIL
 * released. A loaded machine is immutable and every run gets its own
 * memory, so threads may share one Sim. */
#include "python/pymera.h"
#include "python/runtime_common.h"

#include <stdlib.h>
#include <string.h>

#include "arch/platform.h"
#include "isa/isa.h"
#include "sched/sched.h"
#include "sim/sim.h"

typedef struct {
    PyObject_HEAD
    dna_machine *m;
    dna_program *prog;
    mera_partition_report *report;
    mera_platform *plat;      /* the platform copy with overrides; the machine borrows it */
    PyMeraGraph *graph;       /* kept alive: scheduler and machine read it */
    PyObject *params;         /* list of arrays the machine borrows */
    const void **param_data;  /* borrowed by the machine: freed after it */
    int n_inputs;             /* INPUT values (params excluded) */
    int *input_ids;
    mera_sched_options opt;
} PyMeraSim;

static void sim_dealloc(PyMeraSim *self)
{
    dna_machine_free(self->m);
    if (self->prog)
        dna_program_free(self->prog);
    if (self->report)
        mera_partition_report_free(self->report);
    PyMem_Free(self->plat);
    PyMem_Free(self->param_data);
    PyMem_Free(self->input_ids);
    Py_XDECREF(self->graph);
    Py_XDECREF(self->params);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *sim_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"graph", "platform", "arch_overrides", "sched", "params", NULL};
    PyObject *graph, *overrides, *sched, *params;
    const char *platform;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!sOOO", kwlist, &PyMeraGraph_Type, &graph, &platform, &overrides,
                                     &sched, &params))
        return NULL;
    const mera_platform *base = mera_platform_find(platform);
    if (!base)
        return pymera_raise_code(MERA_ERR_INVALID, "unknown platform '%s'", platform);
    mera_sched_options opt;
    if (pymera_parse_sched(&opt, sched))
        return NULL;
    mera_platform *plat = PyMem_Malloc(sizeof *plat);
    if (!plat)
        return PyErr_NoMemory();
    *plat = *base; /* name, alias and note point into the static table */
    if (pymera_apply_arch_overrides(plat, overrides)) {
        PyMem_Free(plat);
        return NULL;
    }
    const mera_graph *g = ((PyMeraGraph *)graph)->g;
    PyObject *plist;
    const void **data;
    int *input_ids, n_inputs;
    if (pymera_bind_params(g, params, &plist, &data, &input_ids, &n_inputs)) {
        PyMem_Free(plat);
        return NULL;
    }
    PyMeraSim *self = (PyMeraSim *)type->tp_alloc(type, 0);
    if (!self) {
        PyMem_Free(plat);
        Py_DECREF(plist);
        PyMem_Free(data);
        PyMem_Free(input_ids);
        return NULL;
    }
    self->plat = plat;
    self->params = plist;
    self->param_data = data;
    self->input_ids = input_ids;
    self->n_inputs = n_inputs;
    self->opt = opt;
    Py_INCREF(graph);
    self->graph = (PyMeraGraph *)graph;

    mera_error err;
    dna_program *prog;
    dna_machine *m = NULL;
    mera_partition_report *report = NULL;
    Py_BEGIN_ALLOW_THREADS
    prog = mera_schedule(g, data, plat, &opt, &report, &err);
    if (prog)
        m = dna_machine_new(g, prog, plat, data, &err);
    Py_END_ALLOW_THREADS
    self->prog = prog;
    self->report = report;
    self->m = m;
    if (!m) {
        Py_DECREF(self);
        return pymera_raise(&err);
    }
    return (PyObject *)self;
}

static mera_status run_machine(const void *m, const void *const *inputs, void *const *outputs, mera_error *err)
{
    return dna_machine_run(m, inputs, outputs, err);
}

static PyObject *sim_run(PyMeraSim *self, PyObject *arg)
{
    return pymera_run(self->graph->g, self->input_ids, self->n_inputs, arg, run_machine, self->m);
}

static const char *node_name(const mera_graph *g, int node)
{
    if (node < 0 || node >= mera_graph_num_nodes(g))
        return "?";
    const char *n = mera_graph_node(g, node)->name;
    return n ? n : "?";
}

static const char *node_op(const mera_graph *g, int node)
{
    if (node < 0 || node >= mera_graph_num_nodes(g))
        return "?";
    int op = mera_graph_node(g, node)->op;
    return op >= 0 && op < MERA_OP_COUNT ? mera_op_table[op].name : "?";
}

static int set_item(PyObject *d, const char *key, PyObject *v)
{
    if (!v)
        return -1;
    int r = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return r;
}

static PyObject *sim_timing(PyMeraSim *self, PyObject *Py_UNUSED(unused))
{
    const mera_graph *g = self->graph->g;
    const dna_timing *t = dna_machine_timing(self->m);
    if (!t)
        return pymera_raise_code(MERA_ERR_INVALID, "the machine has no timing");
    PyObject *layers = PyList_New(0);
    if (!layers)
        return NULL;
    for (int i = 0; i < t->n_layers; i++) {
        const dna_layer_stats *s = &t->layers[i];
        PyObject *d = PyDict_New();
        if (!d || set_item(d, "node", PyUnicode_FromString(node_name(g, s->node))) ||
            set_item(d, "index", PyLong_FromLong(s->node)) ||
            set_item(d, "op", PyUnicode_FromString(node_op(g, s->node))) ||
            set_item(d, "on_dna", PyBool_FromLong(s->on_dna)) ||
            set_item(d, "macs", PyLong_FromLongLong(s->macs)) ||
            set_item(d, "mac_cycles", PyLong_FromLongLong(s->mac_cycles)) ||
            set_item(d, "vec_cycles", PyLong_FromLongLong(s->vec_cycles)) ||
            set_item(d, "load_bytes", PyLong_FromLongLong(s->load_bytes)) ||
            set_item(d, "store_bytes", PyLong_FromLongLong(s->store_bytes)) ||
            set_item(d, "load_cycles", PyLong_FromLongLong(s->load_cycles)) ||
            set_item(d, "store_cycles", PyLong_FromLongLong(s->store_cycles)) ||
            set_item(d, "start_cycle", PyLong_FromLongLong(s->start_cycle)) ||
            set_item(d, "end_cycle", PyLong_FromLongLong(s->end_cycle)) ||
            set_item(d, "mac_utilization", PyFloat_FromDouble(s->mac_utilization)) ||
            set_item(d, "memory_bound", PyBool_FromLong(s->memory_bound)) ||
            set_item(d, "host_us", PyFloat_FromDouble(s->host_us)) || PyList_Append(layers, d)) {
            Py_XDECREF(d);
            Py_DECREF(layers);
            return NULL;
        }
        Py_DECREF(d);
    }
    return Py_BuildValue("{s:L,s:d,s:d,s:d,s:d,s:N}", "device_cycles", (long long)t->device_cycles, "device_us",
                         t->device_us, "host_us", t->host_us, "total_us", t->total_us, "clock_mhz",
                         self->plat->clock_mhz, "layers", layers);
}

static PyObject *sim_partition(PyMeraSim *self, PyObject *Py_UNUSED(unused))
{
    const mera_graph *g = self->graph->g;
    PyObject *l = PyList_New(0);
    if (!l || !self->report)
        return l;
    for (int i = 0; i < self->report->n; i++) {
        const mera_partition_entry *e = &self->report->entries[i];
        PyObject *d = Py_BuildValue("{s:s,s:i,s:s,s:O,s:i,s:s}", "node", node_name(g, e->node), "index", e->node, "op",
                                    node_op(g, e->node), "on_dna", e->on_dna ? Py_True : Py_False, "tiles", e->tiles,
                                    "reason", e->reason);
        if (!d || PyList_Append(l, d)) {
            Py_XDECREF(d);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(d);
    }
    return l;
}

static PyObject *sim_write_trace(PyMeraSim *self, PyObject *arg)
{
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path))
        return NULL;
    mera_error err;
    mera_status st;
    const char *p = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    st = dna_machine_write_trace(self->m, p, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (st)
        return pymera_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *sim_program_bytes(PyMeraSim *self, PyObject *Py_UNUSED(unused))
{
    uint8_t *buf = NULL;
    size_t len = 0;
    mera_error err;
    mera_status st;
    Py_BEGIN_ALLOW_THREADS
    st = dna_program_serialize(self->prog, &buf, &len, &err);
    Py_END_ALLOW_THREADS
    if (st)
        return pymera_raise(&err);
    PyObject *r = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len);
    free(buf);
    return r;
}

static PyObject *sim_program_info(PyMeraSim *self, PyObject *Py_UNUSED(unused))
{
    const dna_program *p = self->prog;
    int n_dna = 0, n_host = 0;
    for (int i = 0; i < p->n_segments; i++) {
        if (p->segments[i].kind == DNA_SEG_DNA)
            n_dna++;
        else
            n_host++;
    }
    return Py_BuildValue("{s:I,s:s,s:i,s:i,s:i,s:i,s:L,s:L,s:I,s:I,s:I}", "version", p->version, "platform",
                         p->platform, "layers", p->n_layers, "instructions", p->n_insns, "dna_segments", n_dna,
                         "host_segments", n_host, "params_bytes", (long long)p->params_bytes, "dram_bytes",
                         (long long)p->dram_bytes, "act_bytes", p->act_bytes, "wgt_bytes", p->wgt_bytes, "acc_bytes",
                         p->acc_bytes);
}

static PyObject *sim_platform(PyMeraSim *self, PyObject *Py_UNUSED(unused))
{
    const mera_platform *p = self->plat;
    PyObject *d = Py_BuildValue("{s:s,s:L}", "name", p->name, "mac_count", (long long)mera_platform_macs(p));
    int bad = !d;
#define X(field, type, unit, doc)                                                                               \
    if (!bad)                                                                                                   \
        bad = set_item(d, #field, _Generic(p->field, double: PyFloat_FromDouble, default: PyLong_FromLongLong)(p->field));
    MERA_ARCH_PARAMS(X)
#undef X
    if (bad) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *sim_input_ids(PyMeraSim *self, PyObject *Py_UNUSED(unused))
{
    return pymera_int_list(self->input_ids, self->n_inputs);
}

static PyMethodDef sim_methods[] = {
    {"run", (PyCFunction)sim_run, METH_O, "run(list of input arrays) -> list of output arrays (GIL released)"},
    {"timing", (PyCFunction)sim_timing, METH_NOARGS,
     "timing() -> dict: device_cycles, device_us, host_us, total_us, clock_mhz, layers (one dict per graph node)"},
    {"partition", (PyCFunction)sim_partition, METH_NOARGS,
     "partition() -> list of {node, index, op, on_dna, tiles, reason}, one per graph node"},
    {"write_trace", (PyCFunction)sim_write_trace, METH_O, "write_trace(path): Chrome/Perfetto JSON trace of one inference"},
    {"program_bytes", (PyCFunction)sim_program_bytes, METH_NOARGS, "the serialized DNA program"},
    {"program_info", (PyCFunction)sim_program_info, METH_NOARGS, "sizes and counts of the DNA program"},
    {"platform", (PyCFunction)sim_platform, METH_NOARGS, "the platform the program was scheduled for (overrides applied)"},
    {"input_ids", (PyCFunction)sim_input_ids, METH_NOARGS, "value ids of the run-time inputs, in order"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PyMeraSim_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mera._core.Sim",
    .tp_basicsize = sizeof(PyMeraSim),
    .tp_dealloc = (destructor)sim_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sim(graph, platform, arch_overrides, sched, params): a graph scheduled for a DNA platform and "
              "loaded into the simulator.",
    .tp_methods = sim_methods,
    .tp_new = sim_new,
};

int pymera_sim_init_type(PyObject *module)
{
    return pymera_add_type(module, &PyMeraSim_Type, "Sim");
}
