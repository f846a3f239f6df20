/* Param binding and run-time input checks shared by Interp and Sim. */
#include "python/runtime_common.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "backends/interp.h"

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

/* One run's inputs and outputs: run_io_begin checks arg and allocates the
 * output arrays; io->ins / io->outs are the pointers to pass to the backend
 * (io->seq keeps the input arrays alive). run_io_end(io, ok) returns the
 * list of outputs when ok, else NULL (the caller has set the exception),
 * and frees the rest. */
typedef struct {
    PyObject *seq;
    PyObject *result;
    const void **ins;
    void **outs;
} pymera_run_io;

static int run_io_begin(pymera_run_io *io, const mera_graph *g, const int *input_ids, int n_inputs, PyObject *arg)
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

static PyObject *run_io_end(pymera_run_io *io, int ok)
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

PyObject *pymera_run(const mera_graph *g, const int *input_ids, int n_inputs, PyObject *arg, pymera_run_fn run,
                     const void *compiled)
{
    pymera_run_io io;
    if (run_io_begin(&io, g, input_ids, n_inputs, arg))
        return run_io_end(&io, 0);
    mera_error err;
    mera_status st;
    /* io.seq holds the input arrays alive while the GIL is released */
    Py_BEGIN_ALLOW_THREADS
    st = run(compiled, io.ins, io.outs, &err);
    Py_END_ALLOW_THREADS
    if (st)
        pymera_raise(&err);
    return run_io_end(&io, !st);
}

PyObject *pymera_int_list(const int *v, int n)
{
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++)
        PyList_SET_ITEM(l, i, PyLong_FromLong(v[i]));
    return l;
}

/* ---- platform overrides and scheduler options (Sim and deploy) ---- */

/* Apply {field: value} overrides of MERA_ARCH_PARAMS to p. */
int pymera_apply_arch_overrides(mera_platform *p, PyObject *overrides)
{
    if (overrides == Py_None)
        return 0;
    if (!PyDict_Check(overrides)) {
        pymera_raise_code(MERA_ERR_INVALID, "arch overrides must be a dict, got %s", Py_TYPE(overrides)->tp_name);
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(overrides, &pos, &key, &value)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k) {
            PyErr_Clear();
            pymera_raise_code(MERA_ERR_INVALID, "arch overrides: keys must be strings");
            return -1;
        }
        int found = 0;
#define X(field, type, unit, lo, hi, doc)                                                                           \
        if (!found && strcmp(k, #field) == 0) {                                                             \
            found = 1;                                                                                      \
            if (PyBool_Check(value) || !(PyLong_Check(value) || (_Generic((type)0, double: 1, default: 0) && \
                                                                  PyFloat_Check(value)))) {                 \
                pymera_raise_code(MERA_ERR_INVALID, "arch override '%s' (%s) must be %s", #field, unit,     \
                                  _Generic((type)0, double: "a number", default: "an int"));                \
                return -1;                                                                                  \
            }                                                                                               \
            double dv = PyFloat_AsDouble(value); /* exact for the integers a range admits */               \
            if (dv == -1.0 && PyErr_Occurred()) {                                                           \
                PyErr_Clear();                                                                              \
                dv = NAN; /* an int too large for a double: out of range below */                           \
            }                                                                                               \
            char why[160];                                                                                  \
            if (mera_platform_param_check(#field, dv, why, sizeof why)) {                                   \
                pymera_raise_code(MERA_ERR_INVALID, "arch override %s", why);                               \
                return -1;                                                                                  \
            }                                                                                               \
            p->field = (type)dv;                                                                            \
        }
        MERA_ARCH_PARAMS(X)
#undef X
        if (!found) {
            pymera_raise_code(MERA_ERR_INVALID, "arch overrides: unknown hardware parameter '%s'", k);
            return -1;
        }
    }
    return 0;
}

/* sched dict: mode ("Fast" | "Slow"), max_tile_height, max_tile_width, compiler_workers. */
int pymera_parse_sched(mera_sched_options *opt, PyObject *sched)
{
    memset(opt, 0, sizeof *opt);
    opt->mode = MERA_SCHED_FAST;
    opt->workers = 1;
    if (sched == Py_None)
        return 0;
    if (!PyDict_Check(sched)) {
        pymera_raise_code(MERA_ERR_INVALID, "sched options must be a dict, got %s", Py_TYPE(sched)->tp_name);
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(sched, &pos, &key, &value)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k) {
            PyErr_Clear();
            pymera_raise_code(MERA_ERR_INVALID, "sched options: keys must be strings");
            return -1;
        }
        if (strcmp(k, "mode") == 0) {
            const char *m = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
            if (m && strcmp(m, "Fast") == 0)
                opt->mode = MERA_SCHED_FAST;
            else if (m && strcmp(m, "Slow") == 0)
                opt->mode = MERA_SCHED_SLOW;
            else {
                PyErr_Clear();
                pymera_raise_code(MERA_ERR_INVALID, "sched option 'mode' must be \"Fast\" or \"Slow\"");
                return -1;
            }
            continue;
        }
        int which = strcmp(k, "max_tile_height") == 0 ? 0 : strcmp(k, "max_tile_width") == 0 ? 1
                  : strcmp(k, "compiler_workers") == 0 ? 2 : -1;
        if (which < 0) {
            pymera_raise_code(MERA_ERR_INVALID,
                              "sched options: unknown key '%s' (mode, max_tile_height, max_tile_width, "
                              "compiler_workers)", k);
            return -1;
        }
        if (value == Py_None)
            continue;
        long long v = (PyLong_Check(value) && !PyBool_Check(value)) ? PyLong_AsLongLong(value) : -1;
        if (v == -1 && PyErr_Occurred())
            PyErr_Clear();
        if (v < 0 || (which == 2 && v > 1024)) {
            pymera_raise_code(MERA_ERR_INVALID, "sched option '%s' must be an int >= 0%s", k,
                              which == 2 ? " and <= 1024" : "");
            return -1;
        }
        if (which == 0)
            opt->max_tile_height = v;
        else if (which == 1)
            opt->max_tile_width = v;
        else
            opt->workers = (int)v;
    }
    return 0;
}

/* node_times: the wall time of every node, from the observer's calls
 * (one after each node), best of repeat runs. */
typedef struct {
    const mera_interp *it;
    int repeat;
    double *best;   /* per node, seconds */
    double last;    /* clock at the previous node's end */
} timed_run;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static mera_status time_node(void *user, int node, const void *const *outputs, mera_error *err)
{
    (void)outputs;
    (void)err;
    timed_run *r = user;
    double t = now_seconds();
    if (t - r->last < r->best[node])
        r->best[node] = t - r->last;
    r->last = now_seconds();
    return MERA_OK;
}

static mera_status run_timed_fn(const void *compiled, const void *const *inputs, void *const *outputs,
                                mera_error *err)
{
    timed_run *r = (timed_run *)compiled;
    for (int i = 0; i < r->repeat; i++) {
        r->last = now_seconds();
        mera_status st = mera_interp_run_observed(r->it, inputs, outputs, time_node, r, err);
        if (st)
            return st;
    }
    return MERA_OK;
}

PyObject *pymera_node_times(const mera_interp *it, const mera_graph *g, const int *input_ids, int n_inputs,
                            PyObject *inputs, int repeat)
{
    if (repeat < 1)
        return pymera_raise_code(MERA_ERR_INVALID, "node_times: repeat must be at least 1, got %d", repeat);
    int n_nodes = mera_graph_num_nodes(g);
    double *best = PyMem_Malloc((size_t)(n_nodes ? n_nodes : 1) * sizeof *best);
    if (!best)
        return PyErr_NoMemory();
    for (int n = 0; n < n_nodes; n++)
        best[n] = 1e30;
    timed_run r = {it, repeat, best, 0.0};
    PyObject *outs = pymera_run(g, input_ids, n_inputs, inputs, run_timed_fn, &r);
    PyObject *result = NULL;
    if (outs) {
        Py_DECREF(outs);
        result = PyList_New(n_nodes);
        for (int n = 0; result && n < n_nodes; n++)
            PyList_SET_ITEM(result, n, PyFloat_FromDouble(best[n]));
    }
    PyMem_Free(best);
    return result;
}
