/* mera._core.Interp: the interpreter on its own, for the quantizer (its
 * calibration observers and the per-layer quality report read every node's
 * output); models compile through mera._core.Compiled (the driver). Runs
 * release the GIL; a compiled graph is immutable and runs allocate their
 * own memory, so threads may share one. */
#include "python/pymera.h"
#include "python/runtime_common.h"

#include <stdio.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/interp.h"

typedef struct {
    PyObject_HEAD
    mera_interp *it;
    PyMeraGraph *graph; /* kept alive: the interpreter reads it */
    PyObject *params;   /* list of arrays the interpreter borrows */
    int n_inputs;       /* INPUT values (params excluded) */
    int *input_ids;
} PyMeraInterp;

static void interp_dealloc(PyMeraInterp *self)
{
    mera_interp_free(self->it);
    PyMem_Free(self->input_ids);
    Py_XDECREF(self->graph);
    Py_XDECREF(self->params);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *interp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"graph", "target", "params", NULL};
    PyObject *graph, *params;
    const char *target;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!sO", kwlist, &PyMeraGraph_Type, &graph, &target, &params))
        return NULL;
    /* the mode is the backend table's: Interpreter float, InterpreterHw the int8 contract */
    const mera_backend *b = mera_backend_find(target);
    if (!b || !b->node_by_node) {
        char names[128];
        size_t at = 0;
        names[0] = 0;
        for (int i = 0; mera_backends[i] && at < sizeof names; i++)
            if (mera_backends[i]->node_by_node)
                at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", at ? ", " : "", mera_backends[i]->name);
        return pymera_raise_code(MERA_ERR_CONFIG, "Interp: target '%s' %s; the targets that run node by node: %s",
                                 target, b ? "does not run the graph node by node" : "is unknown", names);
    }
    mera_interp_mode mode = b->interp_mode;
    const mera_graph *g = ((PyMeraGraph *)graph)->g;
    PyObject *plist;
    const void **data;
    int *input_ids, n_inputs;
    if (pymera_bind_params(g, params, &plist, &data, &input_ids, &n_inputs))
        return NULL;
    PyMeraInterp *self = (PyMeraInterp *)type->tp_alloc(type, 0);
    if (!self) {
        Py_DECREF(plist);
        PyMem_Free(data);
        PyMem_Free(input_ids);
        return NULL;
    }
    self->params = plist;
    Py_INCREF(graph);
    self->graph = (PyMeraGraph *)graph;
    self->input_ids = input_ids;
    self->n_inputs = n_inputs;
    mera_error err;
    mera_interp *it;
    Py_BEGIN_ALLOW_THREADS
    it = mera_interp_compile(g, mode, data, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(data);
    if (!it) {
        Py_DECREF(self);
        return pymera_raise(&err);
    }
    self->it = it;
    return (PyObject *)self;
}

static mera_status run_interp(const void *it, const void *const *inputs, void *const *outputs, mera_error *err)
{
    return mera_interp_run(it, inputs, outputs, err);
}

static PyObject *interp_run(PyMeraInterp *self, PyObject *arg)
{
    return pymera_run(self->graph->g, self->input_ids, self->n_inputs, arg, run_interp, self->it);
}

/* run_values: the values wanted, copied out after the node that makes them. */
typedef struct {
    const mera_interp *it;
    const mera_graph *g;
    int n;
    const int *ids;  /* value ids */
    void **bufs;     /* one buffer per id */
} values_run;

static mera_status copy_wanted(void *user, int node, const void *const *outputs, mera_error *err)
{
    (void)err;
    const values_run *r = user;
    const mera_node *nd = mera_graph_node(r->g, node);
    for (int o = 0; o < nd->n_outputs; o++)
        for (int i = 0; i < r->n; i++)
            if (r->ids[i] == nd->outputs[o])
                memcpy(r->bufs[i], outputs[o], mera_type_nbytes(&mera_graph_value(r->g, r->ids[i])->type));
    return MERA_OK;
}

static mera_status run_values_fn(const void *compiled, const void *const *inputs, void *const *outputs,
                                 mera_error *err)
{
    const values_run *r = compiled;
    return mera_interp_run_observed(r->it, inputs, outputs, copy_wanted, (void *)r, err);
}

static PyObject *interp_run_values(PyMeraInterp *self, PyObject *args)
{
    PyObject *inputs, *ids_obj;
    if (!PyArg_ParseTuple(args, "OO", &inputs, &ids_obj))
        return NULL;
    const mera_graph *g = self->graph->g;
    PyObject *seq = PySequence_Fast(ids_obj, "run_values: value ids must be a sequence");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *ids = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *ids);
    void **bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof *bufs);
    PyObject *arrays = PyList_New(n), *result = NULL;
    if (!ids || !bufs || !arrays) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (id == -1 && PyErr_Occurred())
            goto out;
        if (id < 0 || id >= mera_graph_num_values(g) || mera_graph_value(g, (int)id)->kind != MERA_VALUE_NODE) {
            pymera_raise_code(MERA_ERR_INVALID, "run_values: value id %ld is not a node output of the graph", id);
            goto out;
        }
        const mera_type *t = &mera_graph_value(g, (int)id)->type;
        npy_intp dims[MERA_MAX_RANK];
        for (int d = 0; d < t->rank; d++)
            dims[d] = (npy_intp)t->shape[d];
        PyObject *a = PyArray_SimpleNew(t->rank, dims, pymera_dtype_to_npy(t->dtype));
        if (!a)
            goto out;
        PyList_SET_ITEM(arrays, i, a);
        ids[i] = (int)id;
        bufs[i] = PyArray_DATA((PyArrayObject *)a);
    }
    values_run r = {self->it, g, (int)n, ids, bufs};
    PyObject *outs = pymera_run(g, self->input_ids, self->n_inputs, inputs, run_values_fn, &r);
    if (outs) {
        Py_DECREF(outs);
        result = arrays;
        arrays = NULL;
    }
out:
    Py_DECREF(seq);
    Py_XDECREF(arrays);
    PyMem_Free(ids);
    PyMem_Free(bufs);
    return result;
}

static PyObject *interp_node_times(PyMeraInterp *self, PyObject *args)
{
    PyObject *inputs;
    int repeat = 1;
    if (!PyArg_ParseTuple(args, "O|i", &inputs, &repeat))
        return NULL;
    return pymera_node_times(self->it, self->graph->g, self->input_ids, self->n_inputs, inputs, repeat);
}

static PyObject *interp_arena_bytes(PyMeraInterp *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromSize_t(mera_interp_arena_bytes(self->it));
}

static PyObject *interp_input_ids(PyMeraInterp *self, PyObject *Py_UNUSED(unused))
{
    return pymera_int_list(self->input_ids, self->n_inputs);
}

static PyMethodDef interp_methods[] = {
    {"run", (PyCFunction)interp_run, METH_O, "run(list of input arrays) -> list of output arrays (GIL released)"},
    {"run_values", (PyCFunction)interp_run_values, METH_VARARGS,
     "run_values(list of input arrays, value ids) -> copies of those node outputs after one run"},
    {"node_times", (PyCFunction)interp_node_times, METH_VARARGS,
     "node_times(list of input arrays, repeat=1) -> seconds per node (graph order), best of repeat runs"},
    {"arena_bytes", (PyCFunction)interp_arena_bytes, METH_NOARGS, "bytes of the planned activation arena"},
    {"input_ids", (PyCFunction)interp_input_ids, METH_NOARGS, "value ids of the run-time inputs, in order"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PyMeraInterp_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mera._core.Interp",
    .tp_basicsize = sizeof(PyMeraInterp),
    .tp_dealloc = (destructor)interp_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Interp(graph, target, params): the interpreter on its own (the quantizer's calibration and "
              "quality runs) for a node_by_node target of the backend table (Interpreter: float, InterpreterHw: "
              "the int8 contract). Models compile through Compiled (the driver).",
    .tp_methods = interp_methods,
    .tp_new = interp_new,
};

int pymera_interp_init_type(PyObject *module)
{
    return pymera_add_type(module, &PyMeraInterp_Type, "Interp");
}
