/* mera._core.Compiled: a graph compiled for a target by the compile driver
 * (driver/driver.h) and, unless load=False, loaded to run in process.
 * Every in-process target and mera.build go through it. Runs release the
 * GIL; a loaded instance whose backend says thread_safe_run may be run by
 * several threads at once (each run gets its own memory). */
#include "python/pymera.h"
#include "python/runtime_common.h"

#include <stdlib.h>
#include <string.h>

#include "arch/platform.h"
#include "driver/driver.h"
#include "isa/isa.h"
#include "sim/sim.h"

typedef struct {
    PyObject_HEAD
    mera_compiled *c;
    const mera_backend *b;
    void *inst;               /* mera_compiled_instance(c) or NULL */
    mera_platform *plat;      /* the platform copy with overrides; c borrows it */
    PyMeraGraph *graph;       /* kept alive: the compiled graph borrows its data */
    PyObject *params;         /* list of arrays the compiled graph borrows */
    const void **param_data;  /* of graph, PyMem */
    int n_inputs;             /* INPUT values of the compiled graph */
    int *input_ids;
    PyThread_type_lock lock;  /* backends without thread_safe_run: one run at a time */
} PyMeraCompiled;

static void compiled_dealloc(PyMeraCompiled *self)
{
    mera_compiled_free(self->c);
    if (self->lock)
        PyThread_free_lock(self->lock);
    PyMem_Free(self->plat);
    PyMem_Free(self->param_data);
    PyMem_Free(self->input_ids);
    Py_XDECREF(self->graph);
    Py_XDECREF(self->params);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int opt_str(PyObject *o, const char *what, const char **out)
{
    *out = NULL;
    if (o == Py_None)
        return 0;
    if (!PyUnicode_Check(o) || !(*out = PyUnicode_AsUTF8(o))) {
        PyErr_Clear();
        pymera_raise_code(MERA_ERR_CONFIG, "%s must be a str or None", what);
        return -1;
    }
    return 0;
}

/* The Slow scheduler's progress, from its worker threads (the GIL is released
 * while mera_compile runs): progress(done, total) on the Python callable. */
static void sched_progress(void *user, int done, int total)
{
    PyGILState_STATE st = PyGILState_Ensure();
    PyObject *r = PyObject_CallFunction((PyObject *)user, "ii", done, total);
    if (r)
        Py_DECREF(r);
    else
        PyErr_WriteUnraisable((PyObject *)user);
    PyGILState_Release(st);
}

static PyObject *compiled_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"graph", "target", "params", "platform", "arch_overrides", "sched",
                             "dump_dir", "dump_stages", "load", "progress", "num_threads", NULL};
    PyObject *graph, *params, *platform_obj = Py_None, *overrides = Py_None, *sched = Py_None;
    PyObject *dump_dir_obj = Py_None, *dump_stages_obj = Py_None, *progress = Py_None;
    const char *target;
    int load = 1, num_threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!sO|OOOOOpOi", kwlist, &PyMeraGraph_Type, &graph, &target, &params,
                                     &platform_obj, &overrides, &sched, &dump_dir_obj, &dump_stages_obj, &load,
                                     &progress, &num_threads))
        return NULL;
    if (progress != Py_None && !PyCallable_Check(progress))
        return pymera_raise_code(MERA_ERR_CONFIG, "progress must be callable or None");
    if (num_threads < 0)
        return pymera_raise_code(MERA_ERR_CONFIG, "num_threads must be positive (0: the default), got %d",
                                 num_threads);
    mera_compile_options o;
    memset(&o, 0, sizeof o);
    if (!(o.backend = mera_backend_find(target))) {
        char names[128];
        mera_backend_names(names, sizeof names);
        return pymera_raise_code(MERA_ERR_CONFIG, "unknown target '%s'; targets: %s", target, names);
    }
    const char *platform_name, *dump_dir = NULL, *dump_stages = NULL;
    PyObject *dump_dir_bytes = NULL;
    if (opt_str(platform_obj, "platform", &platform_name) || opt_str(dump_stages_obj, "dump_stages", &dump_stages))
        return NULL;
    if (dump_dir_obj != Py_None) {
        if (!PyUnicode_FSConverter(dump_dir_obj, &dump_dir_bytes))
            return NULL;
        dump_dir = PyBytes_AS_STRING(dump_dir_bytes);
    }
    mera_platform *plat = NULL;
    if (o.backend->runs_program) {
        if (!platform_name) {
            Py_XDECREF(dump_dir_bytes);
            return pymera_raise_code(MERA_ERR_CONFIG, "target %s needs a platform", o.backend->name);
        }
        const mera_platform *base = mera_platform_find(platform_name);
        if (!base) {
            Py_XDECREF(dump_dir_bytes);
            return pymera_raise_code(MERA_ERR_CONFIG, "unknown platform '%s'", platform_name);
        }
        if (!(plat = PyMem_Malloc(sizeof *plat))) {
            Py_XDECREF(dump_dir_bytes);
            return PyErr_NoMemory();
        }
        *plat = *base; /* name, alias and note point into the static table */
        if (pymera_parse_sched(&o.sched, sched) || pymera_apply_arch_overrides(plat, overrides)) {
            PyMem_Free(plat);
            Py_XDECREF(dump_dir_bytes);
            return NULL;
        }
        if (progress != Py_None) { /* borrowed: the caller holds it until mera_compile returns */
            o.sched.progress = sched_progress;
            o.sched.progress_user = progress;
        }
    }
    o.platform = plat;
    o.load = load;
    o.dump_dir = dump_dir;
    o.dump_stages = dump_stages;
    o.num_threads = num_threads;

    const mera_graph *g = ((PyMeraGraph *)graph)->g;
    PyObject *plist;
    const void **data;
    int *input_ids, n_inputs;
    if (pymera_bind_params(g, params, &plist, &data, &input_ids, &n_inputs)) {
        PyMem_Free(plat);
        Py_XDECREF(dump_dir_bytes);
        return NULL;
    }
    PyMeraCompiled *self = (PyMeraCompiled *)type->tp_alloc(type, 0);
    if (!self) {
        PyMem_Free(plat);
        Py_XDECREF(dump_dir_bytes);
        Py_DECREF(plist);
        PyMem_Free(data);
        PyMem_Free(input_ids);
        return NULL;
    }
    self->b = o.backend;
    self->plat = plat;
    self->params = plist;
    self->param_data = data;
    Py_INCREF(graph);
    self->graph = (PyMeraGraph *)graph;
    PyMem_Free(input_ids); /* the compiled graph's own are taken below */

    mera_error err;
    mera_compiled *c;
    Py_BEGIN_ALLOW_THREADS
    c = mera_compile(g, data, &o, &err);
    Py_END_ALLOW_THREADS
    Py_XDECREF(dump_dir_bytes);
    if (!c) {
        Py_DECREF(self);
        return pymera_raise(&err);
    }
    self->c = c;
    self->inst = mera_compiled_instance(c);
    if (self->inst && !self->b->thread_safe_run && !(self->lock = PyThread_allocate_lock())) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    const mera_graph *cg = mera_compiled_graph(c);
    n_inputs = 0;
    for (int i = 0; i < mera_graph_num_inputs(cg); i++)
        n_inputs += mera_graph_value(cg, mera_graph_input(cg, i))->kind == MERA_VALUE_INPUT;
    if (!(self->input_ids = PyMem_Malloc((size_t)(n_inputs + 1) * sizeof(int)))) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->n_inputs = 0;
    for (int i = 0; i < mera_graph_num_inputs(cg); i++) {
        int v = mera_graph_input(cg, i);
        if (mera_graph_value(cg, v)->kind == MERA_VALUE_INPUT)
            self->input_ids[self->n_inputs++] = v;
    }
    return (PyObject *)self;
}

/* Called with the GIL released. */
static mera_status run_compiled(const void *obj, const void *const *inputs, void *const *outputs, mera_error *err)
{
    const PyMeraCompiled *self = obj;
    if (self->lock)
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
    mera_status st = mera_compiled_run(self->c, inputs, outputs, err);
    if (self->lock)
        PyThread_release_lock(self->lock);
    return st;
}

static PyObject *compiled_run(PyMeraCompiled *self, PyObject *arg)
{
    if (!self->inst)
        return pymera_raise_code(MERA_ERR_INVALID, "compiled with load=False: nothing to run");
    return pymera_run(mera_compiled_graph(self->c), self->input_ids, self->n_inputs, arg, run_compiled, self);
}

/* Per-node wall times of a node-by-node target (the interpreters), whose
 * instance is a mera_interp; benchmarks/interp.py --per-layer reads them. */
static PyObject *compiled_node_times(PyMeraCompiled *self, PyObject *args)
{
    PyObject *inputs;
    int repeat = 1;
    if (!PyArg_ParseTuple(args, "O|i", &inputs, &repeat))
        return NULL;
    if (!self->inst || !self->b->node_by_node)
        return pymera_raise_code(MERA_ERR_INVALID, "node_times: target %s %s", self->b->name,
                                 self->inst ? "does not run the graph node by node" : "was compiled with load=False");
    return pymera_node_times(self->inst, mera_compiled_graph(self->c), self->input_ids, self->n_inputs, inputs,
                             repeat);
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

static PyObject *compiled_timing(PyMeraCompiled *self, PyObject *Py_UNUSED(unused))
{
    const mera_graph *g = mera_compiled_graph(self->c);
    const dna_timing *t = self->c && self->b->timing && self->inst ? self->b->timing(self->inst) : NULL;
    if (!t)
        return pymera_raise_code(MERA_ERR_INVALID, "target %s: no timing (it runs no DNA program, or was not loaded)",
                                 self->b->name);
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
                         mera_compiled_platform(self->c)->clock_mhz, "layers", layers);
}

static PyObject *compiled_partition(PyMeraCompiled *self, PyObject *Py_UNUSED(unused))
{
    const mera_graph *g = mera_compiled_graph(self->c);
    const mera_partition_report *report = mera_compiled_partition(self->c);
    PyObject *l = PyList_New(0);
    if (!l || !report)
        return l;
    for (int i = 0; i < report->n; i++) {
        const mera_partition_entry *e = &report->entries[i];
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

static PyObject *compiled_write_trace(PyMeraCompiled *self, PyObject *arg)
{
    if (!self->b->write_trace || !self->inst)
        return pymera_raise_code(MERA_ERR_INVALID, "target %s: no trace (it runs no DNA program, or was not loaded)",
                                 self->b->name);
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path))
        return NULL;
    mera_error err;
    mera_status st;
    const char *p = PyBytes_AS_STRING(path);
    Py_BEGIN_ALLOW_THREADS
    st = self->b->write_trace(self->inst, p, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (st)
        return pymera_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *compiled_program_bytes(PyMeraCompiled *self, PyObject *Py_UNUSED(unused))
{
    const dna_program *prog = mera_compiled_program(self->c);
    if (!prog)
        return pymera_raise_code(MERA_ERR_INVALID, "target %s runs no DNA program", self->b->name);
    uint8_t *buf = NULL;
    size_t len = 0;
    mera_error err;
    mera_status st;
    Py_BEGIN_ALLOW_THREADS
    st = dna_program_serialize(prog, &buf, &len, &err);
    Py_END_ALLOW_THREADS
    if (st)
        return pymera_raise(&err);
    PyObject *r = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len);
    free(buf);
    return r;
}

static PyObject *compiled_program_info(PyMeraCompiled *self, PyObject *Py_UNUSED(unused))
{
    const dna_program *p = mera_compiled_program(self->c);
    if (!p)
        return pymera_raise_code(MERA_ERR_INVALID, "target %s runs no DNA program", self->b->name);
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

static PyObject *compiled_platform(PyMeraCompiled *self, PyObject *Py_UNUSED(unused))
{
    const mera_platform *p = mera_compiled_platform(self->c);
    if (!p)
        Py_RETURN_NONE;
    PyObject *d = Py_BuildValue("{s:s,s:L}", "name", p->name, "mac_count", (long long)mera_platform_macs(p));
    int bad = !d;
#define X(field, type, unit, lo, hi, doc)                                                                               \
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

static PyObject *compiled_input_ids(PyMeraCompiled *self, PyObject *Py_UNUSED(unused))
{
    return pymera_int_list(self->input_ids, self->n_inputs);
}


static PyObject *compiled_deploy_files(PyMeraCompiled *self, PyObject *arg)
{
    const char *host_arch = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!host_arch) {
        PyErr_Clear();
        return pymera_raise_code(MERA_ERR_CONFIG, "deploy_files: host_arch must be a str");
    }
    mera_deploy_files files;
    memset(&files, 0, sizeof files);
    mera_error err;
    mera_status st;
    Py_BEGIN_ALLOW_THREADS
    st = mera_compiled_deploy_files(self->c, host_arch, &files, &err);
    Py_END_ALLOW_THREADS
    if (st)
        return pymera_raise(&err);
    PyObject *r = Py_BuildValue("(y#ss)", (const char *)files.params, (Py_ssize_t)files.params_len, files.json,
                                files.model_id);
    mera_deploy_files_free(&files);
    return r;
}

static PyObject *compiled_graph_text(PyMeraCompiled *self, PyObject *Py_UNUSED(unused))
{
    char *text = mera_graph_to_text(mera_compiled_graph(self->c));
    if (!text)
        return PyErr_NoMemory();
    PyObject *r = PyUnicode_FromString(text);
    free(text);
    return r;
}

static PyObject *compiled_get_target(PyMeraCompiled *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->b->name);
}

static PyObject *compiled_get_runs_program(PyMeraCompiled *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->b->runs_program);
}

static PyGetSetDef compiled_getset[] = {
    {"target", (getter)compiled_get_target, NULL, "the backend's name", NULL},
    {"runs_program", (getter)compiled_get_runs_program, NULL, "the target runs a scheduled DNA program", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef compiled_methods[] = {
    {"run", (PyCFunction)compiled_run, METH_O, "run(list of input arrays) -> list of output arrays (GIL released)"},
    {"node_times", (PyCFunction)compiled_node_times, METH_VARARGS,
     "node_times(list of input arrays, repeat=1) -> seconds per node of the compiled graph, best of repeat runs "
     "(node-by-node targets)"},
    {"timing", (PyCFunction)compiled_timing, METH_NOARGS,
     "timing() -> dict: device_cycles, device_us, host_us, total_us, clock_mhz, layers (one dict per graph node)"},
    {"partition", (PyCFunction)compiled_partition, METH_NOARGS,
     "partition() -> list of {node, index, op, on_dna, tiles, reason}, one per graph node ([] without a program)"},
    {"write_trace", (PyCFunction)compiled_write_trace, METH_O,
     "write_trace(path): Chrome/Perfetto JSON trace of one inference"},
    {"program_bytes", (PyCFunction)compiled_program_bytes, METH_NOARGS, "the serialized DNA program"},
    {"program_info", (PyCFunction)compiled_program_info, METH_NOARGS, "sizes and counts of the DNA program"},
    {"platform", (PyCFunction)compiled_platform, METH_NOARGS,
     "the platform the program was scheduled for (overrides applied), or None"},
    {"input_ids", (PyCFunction)compiled_input_ids, METH_NOARGS, "value ids of the run-time inputs, in order"},
    {"deploy_files", (PyCFunction)compiled_deploy_files, METH_O,
     "deploy_files(host_arch) -> (deploy.params bytes, deploy.json text, model id)"},
    {"graph_text", (PyCFunction)compiled_graph_text, METH_NOARGS, "the IR text of the compiled graph (after the passes)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PyMeraCompiled_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mera._core.Compiled",
    .tp_basicsize = sizeof(PyMeraCompiled),
    .tp_dealloc = (destructor)compiled_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Compiled(graph, target, params, platform=None, arch_overrides=None, sched=None, dump_dir=None, "
              "dump_stages=None, load=True, progress=None): a graph through the compile driver (mera_compile); "
              "progress(done, total) is called as the Slow scheduler searches each layer.",
    .tp_methods = compiled_methods,
    .tp_getset = compiled_getset,
    .tp_new = compiled_new,
};

int pymera_compiled_init_type(PyObject *module)
{
    return pymera_add_type(module, &PyMeraCompiled_Type, "Compiled");
}
