/* mera._core.Interp: a graph compiled for the Interpreter or InterpreterHw
 * target. Runs release the GIL; a compiled graph is immutable and runs
 * allocate their own memory, so threads may share one. */
#include "python/pymera.h"

#include <string.h>

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

static int shape_matches(PyArrayObject *a, const mera_type *t)
{
    if (PyArray_NDIM(a) != t->rank)
        return 0;
    for (int i = 0; i < t->rank; i++)
        if (PyArray_DIM(a, i) != t->shape[i])
            return 0;
    return 1;
}

static void describe_array(PyArrayObject *a, char *buf, size_t n)
{
    size_t at = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < PyArray_NDIM(a) && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)PyArray_DIM(a, i));
    PyObject *dt = PyObject_Str((PyObject *)PyArray_DESCR(a));
    const char *dts = dt ? PyUnicode_AsUTF8(dt) : NULL;
    if (!dts)
        PyErr_Clear();
    if (at < n)
        snprintf(buf + at, n - at, "%s) %s", PyArray_NDIM(a) == 1 ? "," : "", dts ? dts : "?");
    Py_XDECREF(dt);
}

static void describe_type(const mera_type *t, char *buf, size_t n)
{
    size_t at = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < t->rank && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (at < n)
        snprintf(buf + at, n - at, "%s) %s", t->rank == 1 ? "," : "", mera_dtype_name(t->dtype));
}

/* Check that obj is an ndarray of exactly the declared type, C-contiguous
 * and aligned. Returns a borrowed reference or NULL with a mera error. */
static PyArrayObject *check_array(PyObject *obj, const mera_type *t, const char *kind, const char *name)
{
    char want[256], got[256];
    describe_type(t, want, sizeof want);
    if (!PyArray_Check(obj)) {
        pymera_raise_code(MERA_ERR_RUNTIME, "%s '%s': expected a NumPy array %s, got %s", kind, name, want,
                          Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    mera_dtype dt;
    if (pymera_npy_to_dtype(PyArray_TYPE(a), &dt) || dt != t->dtype || !shape_matches(a, t)) {
        describe_array(a, got, sizeof got);
        pymera_raise_code(MERA_ERR_RUNTIME, "%s '%s': expected %s, got %s", kind, name, want, got);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        pymera_raise_code(MERA_ERR_RUNTIME,
                          "%s '%s': the array is not C-contiguous and aligned; pass numpy.ascontiguousarray(x)",
                          kind, name);
        return NULL;
    }
    if (!PyArray_ISNOTSWAPPED(a)) {
        pymera_raise_code(MERA_ERR_RUNTIME, "%s '%s': the array is not in native byte order", kind, name);
        return NULL;
    }
    return a;
}

static PyObject *interp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"graph", "target", "params", NULL};
    PyObject *graph, *params;
    const char *target;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!sO", kwlist, &PyMeraGraph_Type, &graph, &target, &params))
        return NULL;
    mera_interp_mode mode;
    if (strcmp(target, "Interpreter") == 0)
        mode = MERA_INTERP_FLOAT;
    else if (strcmp(target, "InterpreterHw") == 0)
        mode = MERA_INTERP_HW;
    else
        return pymera_raise_code(MERA_ERR_INVALID, "the interpreter runs targets Interpreter and InterpreterHw, not '%s'",
                                 target);
    const mera_graph *g = ((PyMeraGraph *)graph)->g;
    int n_decl = mera_graph_num_inputs(g);
    PyObject *plist = PySequence_List(params);
    if (!plist)
        return NULL;
    if (PyList_GET_SIZE(plist) != n_decl) {
        Py_DECREF(plist);
        return pymera_raise_code(MERA_ERR_INVALID, "params: expected %d entries (one per declared input), got %zd",
                                 n_decl, PyList_GET_SIZE(plist));
    }
    PyMeraInterp *self = (PyMeraInterp *)type->tp_alloc(type, 0);
    if (!self) {
        Py_DECREF(plist);
        return NULL;
    }
    self->params = plist;
    Py_INCREF(graph);
    self->graph = (PyMeraGraph *)graph;
    const void **data = PyMem_Calloc((size_t)n_decl + 1, sizeof *data);
    self->input_ids = PyMem_Calloc((size_t)n_decl + 1, sizeof *self->input_ids);
    if (!data || !self->input_ids) {
        PyMem_Free(data);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < n_decl; i++) {
        int v = mera_graph_input(g, i);
        const mera_value *val = mera_graph_value(g, v);
        if (val->kind == MERA_VALUE_INPUT) {
            self->input_ids[self->n_inputs++] = v;
            continue;
        }
        PyObject *p = PyList_GET_ITEM(plist, i);
        if (p == Py_None) {
            PyMem_Free(data);
            Py_DECREF(self);
            return pymera_raise_code(MERA_ERR_INVALID, "param '%s' is missing from params", val->name);
        }
        PyArrayObject *a = check_array(p, &val->type, "param", val->name);
        if (!a) {
            PyMem_Free(data);
            Py_DECREF(self);
            return NULL;
        }
        data[i] = PyArray_DATA(a);
    }
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

static PyObject *interp_run(PyMeraInterp *self, PyObject *arg)
{
    const mera_graph *g = self->graph->g;
    PyObject *seq = PySequence_Fast(arg, "inputs must be a sequence of arrays");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != self->n_inputs) {
        Py_DECREF(seq);
        return pymera_raise_code(MERA_ERR_RUNTIME, "graph '%s' takes %d input%s, got %zd", mera_graph_name(g),
                                 self->n_inputs, self->n_inputs == 1 ? "" : "s", n);
    }
    const void **ins = PyMem_Calloc((size_t)n + 1, sizeof *ins);
    int n_out = mera_graph_num_outputs(g);
    void **outs = PyMem_Calloc((size_t)n_out + 1, sizeof *outs);
    PyObject *result = PyList_New(n_out);
    if (!ins || !outs || !result)
        goto nomem;
    for (Py_ssize_t i = 0; i < n; i++) {
        const mera_value *val = mera_graph_value(g, self->input_ids[i]);
        PyArrayObject *a = check_array(PySequence_Fast_GET_ITEM(seq, i), &val->type, "input", val->name);
        if (!a)
            goto fail;
        ins[i] = PyArray_DATA(a);
    }
    for (int o = 0; o < n_out; o++) {
        const mera_type *t = &mera_graph_value(g, mera_graph_output(g, o))->type;
        npy_intp dims[MERA_MAX_RANK];
        for (int k = 0; k < t->rank; k++)
            dims[k] = (npy_intp)t->shape[k];
        PyObject *arr = PyArray_SimpleNew(t->rank, dims, pymera_dtype_to_npy(t->dtype));
        if (!arr)
            goto fail;
        PyList_SET_ITEM(result, o, arr);
        outs[o] = PyArray_DATA((PyArrayObject *)arr);
    }
    mera_error err;
    mera_status st;
    /* seq holds the input arrays alive while the GIL is released */
    Py_BEGIN_ALLOW_THREADS
    st = mera_interp_run(self->it, ins, outs, &err);
    Py_END_ALLOW_THREADS
    if (st) {
        pymera_raise(&err);
        goto fail;
    }
    PyMem_Free(ins);
    PyMem_Free(outs);
    Py_DECREF(seq);
    return result;
nomem:
    PyErr_NoMemory();
fail:
    PyMem_Free(ins);
    PyMem_Free(outs);
    Py_XDECREF(result);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *interp_arena_bytes(PyMeraInterp *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromSize_t(mera_interp_arena_bytes(self->it));
}

static PyObject *interp_input_ids(PyMeraInterp *self, PyObject *Py_UNUSED(unused))
{
    PyObject *l = PyList_New(self->n_inputs);
    for (int i = 0; l && i < self->n_inputs; i++)
        PyList_SET_ITEM(l, i, PyLong_FromLong(self->input_ids[i]));
    return l;
}

static PyMethodDef interp_methods[] = {
    {"run", (PyCFunction)interp_run, METH_O, "run(list of input arrays) -> list of output arrays (GIL released)"},
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
    .tp_doc = "Interp(graph, target, params): a graph compiled for Interpreter or InterpreterHw.",
    .tp_methods = interp_methods,
    .tp_new = interp_new,
};

int pymera_runtime_init_type(PyObject *module)
{
    if (PyType_Ready(&PyMeraInterp_Type) < 0)
        return -1;
    Py_INCREF(&PyMeraInterp_Type);
    if (PyModule_AddObject(module, "Interp", (PyObject *)&PyMeraInterp_Type) < 0) {
        Py_DECREF(&PyMeraInterp_Type);
        return -1;
    }
    return 0;
}
