/* mera._core.Quantizer: the C quantizer (csrc/quant/quant.h) for
 * mera.Quantizer. Calibration runs release the GIL. */
#include "python/pymera.h"
#include "python/runtime_common.h"

#include <string.h>

#include "quant/quant.h"

typedef struct {
    PyObject_HEAD
    mera_quantizer *q;
    int busy;     /* a calibration batch is running (with the GIL released) */
    int n_inputs; /* INPUT values of the prepared graph, in order */
    int *input_ids;
} PyMeraQuantizer;

static void quantizer_dealloc(PyMeraQuantizer *self)
{
    mera_quantizer_free(self->q);
    PyMem_Free(self->input_ids);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* config: {"observer": str, "bins": int, "percentile": float,
 * "weight": "per_channel" | "per_tensor", "fold_batch_norm": bool,
 * "fuse_relu": bool}; every key optional, no others. */
static int parse_config(PyObject *cfg, mera_quant_config *c)
{
    *c = mera_quant_config_default();
    if (cfg == Py_None)
        return 0;
    if (!PyDict_Check(cfg)) {
        pymera_raise_code(MERA_ERR_CONFIG, "quantizer config must be a dict, got %s", Py_TYPE(cfg)->tp_name);
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(cfg, &pos, &key, &value)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k) {
            PyErr_Clear();
            pymera_raise_code(MERA_ERR_CONFIG, "quantizer config: keys must be strings");
            return -1;
        }
        if (!strcmp(k, "observer") || !strcmp(k, "weight")) {
            const char *s = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
            if (!s) {
                PyErr_Clear();
                pymera_raise_code(MERA_ERR_CONFIG, "quantizer config '%s' must be a string", k);
                return -1;
            }
            /* "auto": HISTOGRAM observers plus a PERCENTILE one per activation, so that the
             * histogram, min/max and percentile ranges can all be tried (mera.Quantizer) */
            if (!strcmp(k, "observer") && !strcmp(s, "auto")) {
                c->activations.kind = MERA_OBSERVER_HISTOGRAM;
                c->percentile_too = 1;
            } else if (!strcmp(k, "observer") && mera_observer_kind_parse(s, &c->activations.kind)) {
                pymera_raise_code(MERA_ERR_CONFIG,
                                  "quantizer config 'observer': unknown observer '%s' (auto, minmax, "
                                  "percentile, histogram, entropy, mse)", s);
                return -1;
            }
            if (!strcmp(k, "weight")) {
                if (!strcmp(s, "per_channel") || !strcmp(s, "per_tensor"))
                    c->weight_per_channel = !strcmp(s, "per_channel");
                else {
                    pymera_raise_code(MERA_ERR_CONFIG,
                                      "quantizer config 'weight': '%s' is not per_channel or per_tensor", s);
                    return -1;
                }
            }
        } else if (!strcmp(k, "bins")) {
            long v = PyLong_Check(value) && !PyBool_Check(value) ? PyLong_AsLong(value) : -1;
            if (PyErr_Occurred() || v < 0 || v > (1L << 24)) {
                PyErr_Clear();
                pymera_raise_code(MERA_ERR_CONFIG, "quantizer config 'bins' must be a positive int");
                return -1;
            }
            c->activations.bins = (int)v;
        } else if (!strcmp(k, "percentile")) {
            double v = PyFloat_Check(value) || (PyLong_Check(value) && !PyBool_Check(value)) ? PyFloat_AsDouble(value)
                                                                                          : -1.0;
            if (PyErr_Occurred() || v < 0) {
                PyErr_Clear();
                pymera_raise_code(MERA_ERR_CONFIG, "quantizer config 'percentile' must be a number");
                return -1;
            }
            c->activations.percentile = v;
        } else if (!strcmp(k, "fold_batch_norm") || !strcmp(k, "fuse_relu")) {
            if (!PyBool_Check(value)) {
                pymera_raise_code(MERA_ERR_CONFIG, "quantizer config '%s' must be True or False", k);
                return -1;
            }
            *(!strcmp(k, "fuse_relu") ? &c->fuse_relu : &c->fold_batch_norm) = value == Py_True;
        } else {
            pymera_raise_code(MERA_ERR_CONFIG,
                              "quantizer config: unknown key '%s' (observer, bins, percentile, weight, "
                              "fold_batch_norm, fuse_relu)", k);
            return -1;
        }
    }
    return 0;
}

static PyObject *quantizer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"graph", "params", "config", NULL};
    PyObject *graph, *params, *cfg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O|O", kwlist, &PyMeraGraph_Type, &graph, &params, &cfg))
        return NULL;
    mera_quant_config c;
    if (parse_config(cfg, &c))
        return NULL;
    const mera_graph *g = ((PyMeraGraph *)graph)->g;
    PyObject *plist;
    const void **data;
    int *input_ids, n_inputs;
    if (pymera_bind_params(g, params, &plist, &data, &input_ids, &n_inputs))
        return NULL;
    PyMem_Free(input_ids);
    mera_error err;
    mera_quantizer *q;
    Py_BEGIN_ALLOW_THREADS
    q = mera_quantizer_new(g, data, &c, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(data);
    Py_DECREF(plist); /* the quantizer copied what it needs */
    if (!q)
        return pymera_raise(&err);
    PyMeraQuantizer *self = (PyMeraQuantizer *)type->tp_alloc(type, 0);
    if (!self) {
        mera_quantizer_free(q);
        return NULL;
    }
    self->q = q;
    const mera_graph *pg = mera_quantizer_float_graph(q);
    self->input_ids = PyMem_Malloc(((size_t)mera_graph_num_inputs(pg) + 1) * sizeof(int));
    if (!self->input_ids) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (int i = 0; i < mera_graph_num_inputs(pg); i++) {
        int v = mera_graph_input(pg, i);
        if (mera_graph_value(pg, v)->kind == MERA_VALUE_INPUT)
            self->input_ids[self->n_inputs++] = v;
    }
    return (PyObject *)self;
}

static mera_status run_calibrate(const void *q, const void *const *inputs, void *const *outputs, mera_error *err)
{
    (void)outputs;
    return mera_quantizer_calibrate((mera_quantizer *)q, inputs, err);
}

static PyObject *quantizer_calibrate(PyMeraQuantizer *self, PyObject *arg)
{
    /* pymera_run checks the inputs against the prepared graph and releases
     * the GIL; its output arrays (the graph outputs) are not written */
    if (self->busy)
        return pymera_raise_code(MERA_ERR_INVALID, "calibrate: another thread is calibrating this quantizer");
    self->busy = 1;
    PyObject *outs = pymera_run(mera_quantizer_float_graph(self->q), self->input_ids, self->n_inputs, arg,
                                run_calibrate, self->q);
    self->busy = 0;
    if (!outs)
        return NULL;
    Py_DECREF(outs);
    Py_RETURN_NONE;
}

static PyObject *quantizer_num_batches(PyMeraQuantizer *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromLongLong((long long)mera_quantizer_num_batches(self->q));
}

static PyObject *quantizer_quantize(PyMeraQuantizer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"minmax", "ranges", NULL};
    int minmax = 0;
    const char *rs = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pz:quantize", kwlist, &minmax, &rs))
        return NULL;
    mera_quant_ranges ranges = minmax ? MERA_QUANT_RANGES_MINMAX : MERA_QUANT_RANGES_OBSERVER;
    if (rs && !strcmp(rs, "minmax"))
        ranges = MERA_QUANT_RANGES_MINMAX;
    else if (rs && !strcmp(rs, "percentile"))
        ranges = MERA_QUANT_RANGES_PERCENTILE;
    else if (rs && strcmp(rs, "observer"))
        return pymera_raise_code(MERA_ERR_CONFIG, "quantize: ranges must be 'observer', 'minmax' or 'percentile', "
                                                  "got '%s'", rs);
    if (self->busy)
        return pymera_raise_code(MERA_ERR_INVALID, "quantize: another thread is calibrating this quantizer");
    mera_error err;
    int *float_of = NULL;
    mera_graph *g;
    Py_BEGIN_ALLOW_THREADS
    g = mera_quantizer_quantize_ranges(self->q, ranges, &float_of, &err);
    Py_END_ALLOW_THREADS
    if (!g)
        return pymera_raise(&err);
    int n = mera_graph_num_values(g);
    PyObject *map = pymera_int_list(float_of, n);
    free(float_of);
    PyObject *graph = pymera_graph_wrap(g);
    if (!map || !graph) {
        Py_XDECREF(map);
        Py_XDECREF(graph);
        return NULL;
    }
    return Py_BuildValue("(NN)", graph, map);
}

/* (a copy of the prepared float graph, {param name: array copy}) */
static PyObject *quantizer_float_graph(PyMeraQuantizer *self, PyObject *Py_UNUSED(unused))
{
    const mera_graph *pg = mera_quantizer_float_graph(self->q);
    mera_error err;
    uint8_t *buf;
    size_t len;
    if (mera_graph_serialize(pg, &buf, &len, &err))
        return pymera_raise(&err);
    mera_graph *copy = mera_graph_deserialize(buf, len, &err);
    free(buf);
    if (!copy)
        return pymera_raise(&err);
    PyObject *graph = pymera_graph_wrap(copy), *params = PyDict_New();
    if (!graph || !params)
        goto fail;
    for (int i = 0; i < mera_graph_num_inputs(pg); i++) {
        const mera_value *v = mera_graph_value(pg, mera_graph_input(pg, i));
        if (v->kind != MERA_VALUE_PARAM)
            continue;
        npy_intp dims[MERA_MAX_RANK];
        for (int d = 0; d < v->type.rank; d++)
            dims[d] = (npy_intp)v->type.shape[d];
        PyObject *a = PyArray_SimpleNew(v->type.rank, dims, pymera_dtype_to_npy(v->type.dtype));
        if (!a)
            goto fail;
        memcpy(PyArray_DATA((PyArrayObject *)a), v->data, mera_type_nbytes(&v->type));
        int rc = PyDict_SetItemString(params, v->name, a);
        Py_DECREF(a);
        if (rc)
            goto fail;
    }
    return Py_BuildValue("(NN)", graph, params);
fail:
    Py_XDECREF(graph);
    Py_XDECREF(params);
    return NULL;
}

/* {"count", "min", "max", "lo", "hi"} of the observer of a prepared-graph
 * value, or None where the value is not observed. */
static PyObject *quantizer_observer_stats(PyMeraQuantizer *self, PyObject *args)
{
    long v;
    int pct = 0;
    if (!PyArg_ParseTuple(args, "l|p:observer_stats", &v, &pct))
        return NULL;
    const mera_observer *o = pct ? mera_quantizer_percentile_observer(self->q, (int)v)
                                 : mera_quantizer_observer(self->q, (int)v);
    if (!o)
        Py_RETURN_NONE;
    float mn, mx, lo = 0, hi = 0;
    mera_observer_minmax(o, &mn, &mx);
    mera_error err;
    if (mera_observer_count(o) && mera_observer_range(o, &lo, &hi, &err))
        return pymera_raise(&err);
    return Py_BuildValue("{s:L,s:d,s:d,s:d,s:d}", "count", (long long)mera_observer_count(o), "min", (double)mn,
                         "max", (double)mx, "lo", (double)lo, "hi", (double)hi);
}

static PyMethodDef quantizer_methods[] = {
    {"calibrate", (PyCFunction)quantizer_calibrate, METH_O,
     "calibrate(list of input arrays): one batch through the observers (GIL released)"},
    {"num_batches", (PyCFunction)quantizer_num_batches, METH_NOARGS, "calibration batches seen"},
    {"quantize", (PyCFunction)(void (*)(void))quantizer_quantize, METH_VARARGS | METH_KEYWORDS,
     "quantize(minmax=False, ranges='observer') -> (Graph, float_of): the quantized graph (activation ranges from "
     "the observers, their plain [min, max] (minmax=True or ranges='minmax'), or the percentile observers of an "
     "'auto' config (ranges='percentile')) and, per value, the prepared-graph value it stands for"},
    {"float_graph", (PyCFunction)quantizer_float_graph, METH_NOARGS,
     "float_graph() -> (Graph, params): a copy of the prepared float graph (batch norms folded)"},
    {"observer_stats", (PyCFunction)quantizer_observer_stats, METH_VARARGS,
     "observer_stats(value id of the prepared graph, percentile=False) -> dict or None (percentile: the "
     "percentile observer of an 'auto' config)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PyMeraQuantizer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mera._core.Quantizer",
    .tp_basicsize = sizeof(PyMeraQuantizer),
    .tp_dealloc = (destructor)quantizer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Quantizer(graph, params, config=None): calibrate a float graph and quantize it",
    .tp_methods = quantizer_methods,
    .tp_new = quantizer_new,
};

int pymera_quant_init_type(PyObject *module)
{
    return pymera_add_type(module, &PyMeraQuantizer_Type, "Quantizer");
}
