/* Param binding and run-time input checks shared by Interp and Sim. */
#include "python/runtime_common.h"

#include <string.h>

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

PyArrayObject *pymera_check_array(PyObject *obj, const mera_type *t, const char *kind, const char *name)
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

int pymera_bind_params(const mera_graph *g, PyObject *params, PyObject **plist_out, const void ***data_out,
                       int **input_ids_out, int *n_inputs_out)
{
    int n_decl = mera_graph_num_inputs(g);
    PyObject *plist = PySequence_List(params);
    if (!plist)
        return -1;
    if (PyList_GET_SIZE(plist) != n_decl) {
        pymera_raise_code(MERA_ERR_INVALID, "params: expected %d entries (one per declared input), got %zd", n_decl,
                          PyList_GET_SIZE(plist));
        Py_DECREF(plist);
        return -1;
    }
    const void **data = PyMem_Calloc((size_t)n_decl + 1, sizeof *data);
    int *ids = PyMem_Calloc((size_t)n_decl + 1, sizeof *ids);
    int n_inputs = 0;
    if (!data || !ids) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int i = 0; i < n_decl; i++) {
        int v = mera_graph_input(g, i);
        const mera_value *val = mera_graph_value(g, v);
        if (val->kind == MERA_VALUE_INPUT) {
            ids[n_inputs++] = v;
            continue;
        }
        PyObject *p = PyList_GET_ITEM(plist, i);
        if (p == Py_None) {
            pymera_raise_code(MERA_ERR_INVALID, "param '%s' is missing from params", val->name);
            goto fail;
        }
        PyArrayObject *a = pymera_check_array(p, &val->type, "param", val->name);
        if (!a)
            goto fail;
        data[i] = PyArray_DATA(a);
    }
    *plist_out = plist;
    *data_out = data;
    *input_ids_out = ids;
    *n_inputs_out = n_inputs;
    return 0;
fail:
    PyMem_Free(data);
    PyMem_Free(ids);
    Py_DECREF(plist);
    return -1;
}

int pymera_run_io_begin(pymera_run_io *io, const mera_graph *g, const int *input_ids, int n_inputs, PyObject *arg)
{
    memset(io, 0, sizeof *io);
    io->seq = PySequence_Fast(arg, "inputs must be a sequence of arrays");
    if (!io->seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(io->seq);
    if (n != n_inputs) {
        pymera_raise_code(MERA_ERR_RUNTIME, "graph '%s' takes %d input%s, got %zd", mera_graph_name(g), n_inputs,
                          n_inputs == 1 ? "" : "s", n);
        return -1;
    }
    int n_out = mera_graph_num_outputs(g);
    io->ins = PyMem_Calloc((size_t)n + 1, sizeof *io->ins);
    io->outs = PyMem_Calloc((size_t)n_out + 1, sizeof *io->outs);
    io->result = PyList_New(n_out);
    if (!io->ins || !io->outs || !io->result) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const mera_value *val = mera_graph_value(g, input_ids[i]);
        PyArrayObject *a = pymera_check_array(PySequence_Fast_GET_ITEM(io->seq, i), &val->type, "input", val->name);
        if (!a)
            return -1;
        io->ins[i] = PyArray_DATA(a);
    }
    for (int o = 0; o < n_out; o++) {
        const mera_type *t = &mera_graph_value(g, mera_graph_output(g, o))->type;
        npy_intp dims[MERA_MAX_RANK];
        for (int k = 0; k < t->rank; k++)
            dims[k] = (npy_intp)t->shape[k];
        PyObject *arr = PyArray_SimpleNew(t->rank, dims, pymera_dtype_to_npy(t->dtype));
        if (!arr)
            return -1;
        PyList_SET_ITEM(io->result, o, arr);
        io->outs[o] = PyArray_DATA((PyArrayObject *)arr);
    }
    return 0;
}

PyObject *pymera_run_io_end(pymera_run_io *io, int ok)
{
    PyObject *result = io->result;
    PyMem_Free(io->ins);
    PyMem_Free(io->outs);
    Py_XDECREF(io->seq);
    if (!ok) {
        Py_XDECREF(result);
        result = NULL;
    }
    memset(io, 0, sizeof *io);
    return result;
}
