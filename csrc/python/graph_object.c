/* mera._core.Graph: the C IR graph as a Python object. mera/ir.py builds the
 * friendly API on top; this file only converts arguments and errors. */
#include "python/pymera.h"

#include <string.h>

#include "passes/passes.h"
#include "python/runtime_common.h"

static PyObject *graph_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", NULL};
    const char *name = "main";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|s", kwlist, &name))
        return NULL;
    PyMeraGraph *self = (PyMeraGraph *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->keepalive = PyList_New(0);
    self->g = mera_graph_new(name);
    if (!self->g || !self->keepalive) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void graph_dealloc(PyMeraGraph *self)
{
    mera_graph_free(self->g);
    Py_XDECREF(self->keepalive);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---- argument conversion ----------------------------------------------- */

typedef struct {
    PyArrayObject *scales, *zps; /* held while the type is in use */
} qparam_hold;

static void qparam_release(qparam_hold *h)
{
    Py_XDECREF(h->scales);
    Py_XDECREF(h->zps);
    h->scales = h->zps = NULL;
}

static int parse_shape(PyObject *obj, mera_type *t, const char *what)
{
    PyObject *seq = PySequence_Fast(obj, "shape must be a sequence of ints");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MERA_MAX_RANK) {
        Py_DECREF(seq);
        pymera_raise_code(MERA_ERR_SHAPE, "%s: rank %zd exceeds the maximum of %d", what, n, MERA_MAX_RANK);
        return -1;
    }
    t->rank = (int)n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *idx = PyNumber_Index(PySequence_Fast_GET_ITEM(seq, i));
        if (!idx) {
            Py_DECREF(seq);
            PyErr_Clear();
            pymera_raise_code(MERA_ERR_SHAPE, "%s: shape entry %zd is not an integer", what, i);
            return -1;
        }
        t->shape[i] = PyLong_AsLongLong(idx);
        Py_DECREF(idx);
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* qparams: None | (scale, zero_point) | (scales, zero_points, axis) */
static int parse_qparams(PyObject *obj, mera_type *t, qparam_hold *hold, const char *what)
{
    memset(&t->q, 0, sizeof t->q);
    if (!obj || obj == Py_None)
        return 0;
    if (!PyTuple_Check(obj) || (PyTuple_GET_SIZE(obj) != 2 && PyTuple_GET_SIZE(obj) != 3)) {
        pymera_raise_code(MERA_ERR_DTYPE, "%s: qparams must be (scale, zero_point) or (scales, zero_points, axis)", what);
        return -1;
    }
    if (PyTuple_GET_SIZE(obj) == 2) {
        double s = PyFloat_AsDouble(PyTuple_GET_ITEM(obj, 0));
        long long z = PyLong_AsLongLong(PyTuple_GET_ITEM(obj, 1));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            pymera_raise_code(MERA_ERR_DTYPE, "%s: qparams (scale, zero_point) must be a float and an int", what);
            return -1;
        }
        if (z < INT32_MIN || z > INT32_MAX) {
            pymera_raise_code(MERA_ERR_DTYPE, "%s: zero point %lld is out of range", what, z);
            return -1;
        }
        t->q.kind = MERA_QUANT_PER_TENSOR;
        t->q.count = 1;
        t->q.scale = s;
        t->q.zero_point = (int32_t)z;
        return 0;
    }
    hold->scales = (PyArrayObject *)PyArray_FROMANY(PyTuple_GET_ITEM(obj, 0), NPY_FLOAT64, 1, 1,
                                                    NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
    if (!hold->scales)
        goto bad;
    hold->zps = (PyArrayObject *)PyArray_FROMANY(PyTuple_GET_ITEM(obj, 1), NPY_INT32, 1, 1,
                                                 NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
    if (!hold->zps)
        goto bad;
    long axis = PyLong_AsLong(PyTuple_GET_ITEM(obj, 2));
    if (PyErr_Occurred())
        goto bad;
    if (PyArray_DIM(hold->scales, 0) != PyArray_DIM(hold->zps, 0)) {
        pymera_raise_code(MERA_ERR_DTYPE, "%s: %zd scales but %zd zero points", what,
                          (Py_ssize_t)PyArray_DIM(hold->scales, 0), (Py_ssize_t)PyArray_DIM(hold->zps, 0));
        qparam_release(hold);
        return -1;
    }
    if (PyArray_DIM(hold->scales, 0) < 1) {
        pymera_raise_code(MERA_ERR_DTYPE, "%s: per-axis qparams need at least one scale", what);
        qparam_release(hold);
        return -1;
    }
    t->q.kind = MERA_QUANT_PER_AXIS;
    t->q.axis = (int)axis;
    t->q.count = PyArray_DIM(hold->scales, 0);
    t->q.scales = PyArray_DATA(hold->scales);
    t->q.zero_points = PyArray_DATA(hold->zps);
    return 0;
bad:
    PyErr_Clear();
    qparam_release(hold);
    pymera_raise_code(MERA_ERR_DTYPE, "%s: per-axis qparams must be (1-D scales, 1-D zero points, int axis)", what);
    return -1;
}

static int parse_dtype_layout(const char *dtype, const char *layout, mera_type *t, const char *what)
{
    if (mera_dtype_parse(dtype, &t->dtype)) {
        pymera_raise_code(MERA_ERR_DTYPE, "%s: unknown dtype '%s' (use float32, int8, uint8, int32)", what, dtype);
        return -1;
    }
    t->layout = MERA_LAYOUT_ANY;
    if (layout && mera_layout_parse(layout, &t->layout)) {
        pymera_raise_code(MERA_ERR_SHAPE, "%s: unknown layout '%s' (use NCHW, NHWC, OIHW, OHWI, HWIO or any)", what,
                          layout);
        return -1;
    }
    return 0;
}

/* ---- declarations ------------------------------------------------------ */

static PyObject *graph_add_decl(PyMeraGraph *self, PyObject *args, PyObject *kwds, int is_param)
{
    static char *kwlist[] = {"name", "shape", "dtype", "layout", "qparams", NULL};
    const char *name, *dtype, *layout = NULL;
    PyObject *shape, *qp = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sOs|zO", kwlist, &name, &shape, &dtype, &layout, &qp))
        return NULL;
    char what[480];
    snprintf(what, sizeof what, "%s '%.400s'", is_param ? "param" : "input", name);
    mera_type t;
    memset(&t, 0, sizeof t);
    qparam_hold hold = {0};
    if (parse_shape(shape, &t, what) || parse_dtype_layout(dtype, layout, &t, what) || parse_qparams(qp, &t, &hold, what))
        return NULL;
    mera_error err;
    int id = is_param ? mera_graph_add_param(self->g, name, &t, &err) : mera_graph_add_input(self->g, name, &t, &err);
    qparam_release(&hold);
    if (id < 0)
        return pymera_raise(&err);
    return PyLong_FromLong(id);
}

static PyObject *graph_add_input(PyMeraGraph *self, PyObject *args, PyObject *kwds)
{
    return graph_add_decl(self, args, kwds, 0);
}

static PyObject *graph_add_param(PyMeraGraph *self, PyObject *args, PyObject *kwds)
{
    return graph_add_decl(self, args, kwds, 1);
}

static PyObject *graph_add_const(PyMeraGraph *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "array", "layout", "qparams", NULL};
    const char *name, *layout = NULL;
    PyObject *obj, *qp = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sO|zO", kwlist, &name, &obj, &layout, &qp))
        return NULL;
    char what[480];
    snprintf(what, sizeof what, "const '%.400s'", name);
    /* Borrow the array's memory when it is already C-contiguous and aligned;
     * NumPy copies only when it must. */
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OF(obj, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
    if (!arr) {
        PyErr_Clear();
        return pymera_raise_code(MERA_ERR_DTYPE, "%s: value is not convertible to an array", what);
    }
    mera_type t;
    memset(&t, 0, sizeof t);
    if (pymera_npy_to_dtype(PyArray_TYPE(arr), &t.dtype)) {
        PyObject *r = pymera_raise_code(MERA_ERR_DTYPE, "%s: arrays of dtype %s are not supported (use float32, int8, uint8, int32)",
                                        what, PyArray_DESCR(arr)->typeobj->tp_name);
        Py_DECREF(arr);
        return r;
    }
    if (PyArray_NDIM(arr) > MERA_MAX_RANK) {
        Py_DECREF(arr);
        return pymera_raise_code(MERA_ERR_SHAPE, "%s: rank %d exceeds the maximum of %d", what, PyArray_NDIM(arr), MERA_MAX_RANK);
    }
    t.rank = PyArray_NDIM(arr);
    for (int i = 0; i < t.rank; i++)
        t.shape[i] = PyArray_DIM(arr, i);
    t.layout = MERA_LAYOUT_ANY;
    if (layout && mera_layout_parse(layout, &t.layout)) {
        Py_DECREF(arr);
        return pymera_raise_code(MERA_ERR_SHAPE, "%s: unknown layout '%s'", what, layout);
    }
    qparam_hold hold = {0};
    if (parse_qparams(qp, &t, &hold, what)) {
        Py_DECREF(arr);
        return NULL;
    }
    mera_error err;
    int id = mera_graph_add_const(self->g, name, &t, PyArray_DATA(arr), 0, &err);
    qparam_release(&hold);
    if (id < 0) {
        Py_DECREF(arr);
        return pymera_raise(&err);
    }
    if (PyList_Append(self->keepalive, (PyObject *)arr)) {
        Py_DECREF(arr);
        return NULL;
    }
    Py_DECREF(arr);
    return PyLong_FromLong(id);
}

/* ---- nodes ------------------------------------------------------------- */

/* Convert one Python attribute value. Arrays are allocated with PyMem and
 * freed by the caller. */
static int parse_attr(const char *key, PyObject *v, mera_attr *a, const char *op, const char *node)
{
    memset(a, 0, sizeof *a);
    a->key = key;
    if (PyBool_Check(v) || PyLong_Check(v) || (PyIndex_Check(v) && !PyFloat_Check(v) && !PyUnicode_Check(v) &&
                                               !PySequence_Check(v))) {
        a->kind = MERA_ATTR_INT;
        a->i = PyLong_AsLongLong(v);
        if (PyErr_Occurred())
            return -1;
        return 0;
    }
    if (PyFloat_Check(v) || (PyNumber_Check(v) && !PySequence_Check(v) && !PyUnicode_Check(v))) {
        a->kind = MERA_ATTR_FLOAT;
        a->f = PyFloat_AsDouble(v);
        return PyErr_Occurred() ? -1 : 0;
    }
    if (PyUnicode_Check(v)) {
        a->kind = MERA_ATTR_STRING;
        a->s = PyUnicode_AsUTF8(v);
        return a->s ? 0 : -1;
    }
    PyObject *seq = PySequence_Fast(v, "");
    if (!seq) {
        PyErr_Clear();
        pymera_raise_code(MERA_ERR_ATTR, "node '%s' (%s): attribute '%s' has unsupported type %s", node, op, key,
                          Py_TYPE(v)->tp_name);
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 64) {
        Py_DECREF(seq);
        pymera_raise_code(MERA_ERR_ATTR, "node '%s' (%s): attribute '%s' has %zd values; at most 64 are allowed", node,
                          op, key, n);
        return -1;
    }
    int any_float = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
        if (PyFloat_Check(it))
            any_float = 1;
        else if (!PyIndex_Check(it)) {
            Py_DECREF(seq);
            pymera_raise_code(MERA_ERR_ATTR, "node '%s' (%s): attribute '%s' entry %zd is %s, not a number", node, op,
                              key, i, Py_TYPE(it)->tp_name);
            return -1;
        }
    }
    a->count = (int)n;
    if (any_float) {
        double *f = PyMem_Malloc((size_t)(n + 1) * sizeof *f);
        if (!f) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            f[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        a->kind = MERA_ATTR_FLOATS;
        a->floats = f;
    } else {
        int64_t *iv = PyMem_Malloc((size_t)(n + 1) * sizeof *iv);
        if (!iv) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *idx = PyNumber_Index(PySequence_Fast_GET_ITEM(seq, i));
            iv[i] = idx ? PyLong_AsLongLong(idx) : 0;
            Py_XDECREF(idx);
        }
        a->kind = MERA_ATTR_INTS;
        a->ints = iv;
    }
    Py_DECREF(seq);
    return PyErr_Occurred() ? -1 : 0;
}

static void free_attrs(mera_attr *attrs, int n)
{
    for (int i = 0; i < n; i++) {
        PyMem_Free((void *)attrs[i].ints);
        PyMem_Free((void *)attrs[i].floats);
    }
}

static PyObject *unknown_op_error(const char *op)
{
    char list[2048];
    size_t at = 0;
    for (int i = 0; i < MERA_OP_COUNT && at < sizeof list - 64; i++)
        at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", i ? ", " : "", mera_op_table[i].name);
    return pymera_raise_code(MERA_ERR_UNKNOWN_OP, "unknown op '%s'; known ops: %s", op, list);
}

static PyObject *graph_add_node(PyMeraGraph *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"op", "name", "inputs", "attrs", "source", NULL};
    const char *opname, *name, *source = NULL;
    PyObject *inputs, *attrs = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ssO|Oz", kwlist, &opname, &name, &inputs, &attrs, &source))
        return NULL;
    int op = mera_op_lookup(opname);
    if (op < 0)
        return unknown_op_error(opname);
    PyObject *seq = PySequence_Fast(inputs, "inputs must be a sequence of value ids");
    if (!seq)
        return NULL;
    Py_ssize_t n_in = PySequence_Fast_GET_SIZE(seq);
    if (n_in > MERA_MAX_NODE_INPUTS) {
        Py_DECREF(seq);
        return pymera_raise_code(MERA_ERR_INVALID, "node '%s' (%s): %zd inputs; at most %d are allowed", name, opname,
                                 n_in, MERA_MAX_NODE_INPUTS);
    }
    int ins[MERA_MAX_NODE_INPUTS];
    for (Py_ssize_t i = 0; i < n_in; i++) {
        PyObject *it = PySequence_Fast_GET_ITEM(seq, i);
        ins[i] = it == Py_None ? -1 : (int)PyLong_AsLong(it);
        if (PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);

    mera_attr at[64];
    int n_attrs = 0;
    if (attrs != Py_None) {
        if (!PyDict_Check(attrs))
            return pymera_raise_code(MERA_ERR_ATTR, "node '%s' (%s): attrs must be a dict", name, opname);
        if (PyDict_Size(attrs) > 64)
            return pymera_raise_code(MERA_ERR_ATTR, "node '%s' (%s): too many attributes", name, opname);
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(attrs, &pos, &k, &v)) {
            const char *key = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
            if (!key) {
                PyErr_Clear();
                free_attrs(at, n_attrs);
                return pymera_raise_code(MERA_ERR_ATTR, "node '%s' (%s): attribute names must be strings", name, opname);
            }
            if (parse_attr(key, v, &at[n_attrs], opname, name)) {
                free_attrs(at, n_attrs + 1);
                return pymera_reraise_as(MERA_ERR_ATTR, "node '%s' (%s): attribute '%s'", name, opname, key);
            }
            n_attrs++;
        }
    }
    int outs[MERA_MAX_NODE_OUTPUTS];
    mera_error err;
    int idx = mera_graph_add_node(self->g, op, name, ins, (int)n_in, at, n_attrs, source, outs,
                                  MERA_MAX_NODE_OUTPUTS, &err);
    free_attrs(at, n_attrs);
    if (idx < 0)
        return pymera_raise(&err);
    const mera_node *node = mera_graph_node(self->g, idx);
    PyObject *res = PyTuple_New(node->n_outputs);
    if (!res)
        return NULL;
    for (int i = 0; i < node->n_outputs; i++)
        PyTuple_SET_ITEM(res, i, PyLong_FromLong(node->outputs[i]));
    return res;
}

static PyObject *graph_set_outputs(PyMeraGraph *self, PyObject *arg)
{
    PyObject *seq = PySequence_Fast(arg, "outputs must be a sequence of value ids");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *ids = PyMem_Malloc((size_t)(n + 1) * sizeof *ids);
    if (!ids) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++)
        ids[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        PyMem_Free(ids);
        return NULL;
    }
    mera_error err;
    mera_status st = mera_graph_set_outputs(self->g, ids, (int)n, &err);
    PyMem_Free(ids);
    if (st)
        return pymera_raise(&err);
    Py_RETURN_NONE;
}

/* ---- inspection -------------------------------------------------------- */

static PyObject *qparams_to_py(const mera_qparams *q)
{
    if (q->kind == MERA_QUANT_NONE)
        Py_RETURN_NONE;
    if (q->kind == MERA_QUANT_PER_TENSOR)
        return Py_BuildValue("(di)", q->scale, (int)q->zero_point);
    npy_intp n = (npy_intp)q->count;
    PyObject *s = PyArray_SimpleNew(1, &n, NPY_FLOAT64);
    PyObject *z = PyArray_SimpleNew(1, &n, NPY_INT32);
    if (!s || !z) {
        Py_XDECREF(s);
        Py_XDECREF(z);
        return NULL;
    }
    memcpy(PyArray_DATA((PyArrayObject *)s), q->scales, (size_t)n * sizeof(double));
    memcpy(PyArray_DATA((PyArrayObject *)z), q->zero_points, (size_t)n * sizeof(int32_t));
    return Py_BuildValue("(NNi)", s, z, q->axis);
}

static PyObject *shape_to_py(const mera_type *t)
{
    PyObject *shape = PyTuple_New(t->rank);
    if (!shape)
        return NULL;
    for (int i = 0; i < t->rank; i++)
        PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(t->shape[i]));
    return shape;
}

static PyObject *graph_value(PyMeraGraph *self, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (id < 0 || id >= mera_graph_num_values(self->g))
        return pymera_raise_code(MERA_ERR_INVALID, "value id %ld is not in the graph", id);
    static const char *const kinds[] = {"input", "param", "const", "node"};
    const mera_value *v = mera_graph_value(self->g, (int)id);
    return Py_BuildValue("{s:s,s:s,s:N,s:s,s:s,s:N,s:i,s:i}", "name", v->name, "kind", kinds[v->kind], "shape",
                         shape_to_py(&v->type), "dtype", mera_dtype_name(v->type.dtype), "layout",
                         mera_layout_name(v->type.layout), "qparams", qparams_to_py(&v->type.q), "producer",
                         v->producer, "output_index", v->output_index);
}

static PyObject *attr_to_py(const mera_attr *a)
{
    switch (a->kind) {
    case MERA_ATTR_INT: return PyLong_FromLongLong(a->i);
    case MERA_ATTR_FLOAT: return PyFloat_FromDouble(a->f);
    case MERA_ATTR_STRING: return PyUnicode_FromString(a->s);
    case MERA_ATTR_INTS: {
        PyObject *l = PyList_New(a->count);
        for (int i = 0; l && i < a->count; i++)
            PyList_SET_ITEM(l, i, PyLong_FromLongLong(a->ints[i]));
        return l;
    }
    case MERA_ATTR_FLOATS: {
        PyObject *l = PyList_New(a->count);
        for (int i = 0; l && i < a->count; i++)
            PyList_SET_ITEM(l, i, PyFloat_FromDouble(a->floats[i]));
        return l;
    }
    }
    Py_RETURN_NONE;
}

static PyObject *graph_node(PyMeraGraph *self, PyObject *arg)
{
    long idx = PyLong_AsLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (idx < 0 || idx >= mera_graph_num_nodes(self->g))
        return pymera_raise_code(MERA_ERR_INVALID, "node index %ld is not in the graph", idx);
    const mera_node *n = mera_graph_node(self->g, (int)idx);
    PyObject *ins = PyList_New(n->n_inputs), *outs = PyList_New(n->n_outputs), *attrs = PyDict_New();
    if (!ins || !outs || !attrs)
        goto fail;
    for (int i = 0; i < n->n_inputs; i++) {
        if (n->inputs[i] < 0) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(ins, i, Py_None);
        } else {
            PyList_SET_ITEM(ins, i, PyLong_FromLong(n->inputs[i]));
        }
    }
    for (int i = 0; i < n->n_outputs; i++)
        PyList_SET_ITEM(outs, i, PyLong_FromLong(n->outputs[i]));
    for (int i = 0; i < n->n_attrs; i++) {
        PyObject *v = attr_to_py(&n->attrs[i]);
        if (!v || PyDict_SetItemString(attrs, n->attrs[i].key, v)) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
    }
    return Py_BuildValue("{s:s,s:s,s:N,s:N,s:N,s:z}", "op", mera_op_table[n->op].name, "name", n->name, "inputs", ins,
                         "outputs", outs, "attrs", attrs, "source", n->source);
fail:
    Py_XDECREF(ins);
    Py_XDECREF(outs);
    Py_XDECREF(attrs);
    return NULL;
}

static PyObject *graph_const_data(PyMeraGraph *self, PyObject *arg)
{
    long id = PyLong_AsLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (id < 0 || id >= mera_graph_num_values(self->g) || !mera_graph_value(self->g, (int)id)->data)
        return pymera_raise_code(MERA_ERR_INVALID, "value id %ld is not a const (or a param with data) of the graph",
                                 id);
    const mera_value *v = mera_graph_value(self->g, (int)id);
    npy_intp dims[MERA_MAX_RANK];
    for (int i = 0; i < v->type.rank; i++)
        dims[i] = (npy_intp)v->type.shape[i];
    /* a read-only view that keeps the graph alive */
    PyObject *arr = PyArray_New(&PyArray_Type, v->type.rank, dims, pymera_dtype_to_npy(v->type.dtype), NULL,
                                (void *)v->data, 0, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED, NULL);
    if (!arr)
        return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)self)) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *id_list(int n, int (*get)(const mera_graph *, int), const mera_graph *g)
{
    PyObject *l = PyList_New(n);
    for (int i = 0; l && i < n; i++)
        PyList_SET_ITEM(l, i, PyLong_FromLong(get(g, i)));
    return l;
}

static PyObject *graph_outputs(PyMeraGraph *self, PyObject *Py_UNUSED(unused))
{
    return id_list(mera_graph_num_outputs(self->g), mera_graph_output, self->g);
}

static PyObject *graph_inputs(PyMeraGraph *self, PyObject *Py_UNUSED(unused))
{
    return id_list(mera_graph_num_inputs(self->g), mera_graph_input, self->g);
}

static PyObject *graph_num_values(PyMeraGraph *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromLong(mera_graph_num_values(self->g));
}

static PyObject *graph_num_nodes(PyMeraGraph *self, PyObject *Py_UNUSED(unused))
{
    return PyLong_FromLong(mera_graph_num_nodes(self->g));
}

static PyObject *graph_find(PyMeraGraph *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    return PyLong_FromLong(mera_graph_find_value(self->g, name));
}

static PyObject *graph_text(PyMeraGraph *self, PyObject *Py_UNUSED(unused))
{
    char *s = mera_graph_to_text(self->g);
    if (!s)
        return PyErr_NoMemory();
    PyObject *r = PyUnicode_FromString(s);
    free(s);
    return r;
}

static PyObject *graph_serialize(PyMeraGraph *self, PyObject *Py_UNUSED(unused))
{
    uint8_t *buf;
    size_t len;
    mera_error err;
    if (mera_graph_serialize(self->g, &buf, &len, &err))
        return pymera_raise(&err);
    PyObject *r = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)len);
    free(buf);
    return r;
}

static PyObject *graph_deserialize(PyObject *cls, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE))
        return NULL;
    mera_error err;
    mera_graph *g;
    Py_BEGIN_ALLOW_THREADS
    g = mera_graph_deserialize(view.buf, (size_t)view.len, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (!g)
        return pymera_raise(&err);
    PyMeraGraph *self = (PyMeraGraph *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    if (!self) {
        mera_graph_free(g);
        return NULL;
    }
    self->g = g;
    self->keepalive = PyList_New(0);
    if (!self->keepalive) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

PyObject *pymera_graph_wrap(mera_graph *g)
{
    PyMeraGraph *self = (PyMeraGraph *)PyMeraGraph_Type.tp_alloc(&PyMeraGraph_Type, 0);
    if (!self) {
        mera_graph_free(g);
        return NULL;
    }
    self->g = g;
    self->keepalive = PyList_New(0);
    if (!self->keepalive) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* The graph passes by name (passes/passes.h), for the frontends. */
static const struct {
    const char *name;
    mera_pass_fn run;
} pass_table[] = {
    {"fold_bn", mera_pass_fold_bn},
    {"fold_const", mera_pass_fold_const},
    {"lower_qdq", mera_pass_lower_qdq},
    {"collapse_moves", mera_pass_collapse_moves},
    {"dce", mera_pass_dce},
};

/* run_pass(name, params=None) -> Graph: the graph bound to params (one
 * entry per declared input, as Compiled takes them; None: the params carry
 * their data already) and run through the pass. The new graph's params
 * carry their data (Graph.const_data reads them); it keeps this graph and
 * the param arrays alive, since it may borrow their memory. */
static PyObject *graph_run_pass(PyMeraGraph *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "params", NULL};
    const char *name;
    PyObject *params = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|O", kwlist, &name, &params))
        return NULL;
    mera_pass_fn run = NULL;
    for (size_t i = 0; i < sizeof pass_table / sizeof pass_table[0]; i++)
        if (!strcmp(pass_table[i].name, name))
            run = pass_table[i].run;
    if (!run)
        return pymera_raise_code(MERA_ERR_INVALID, "unknown pass '%s' (fold_bn, fold_const, lower_qdq, dce)", name);
    PyObject *plist = NULL;
    const void **data = NULL;
    int *ids = NULL, n_inputs = 0;
    if (params != Py_None && pymera_bind_params(self->g, params, &plist, &data, &ids, &n_inputs))
        return NULL;
    PyMem_Free(ids);
    mera_error err;
    mera_graph *out = NULL;
    Py_BEGIN_ALLOW_THREADS
    mera_graph *bound = mera_pass_bind(self->g, data, &err);
    /* the pass's result borrows what bound borrows (the arrays, this
     * graph's constants), never bound's own memory */
    if (bound)
        out = run(bound, &err);
    mera_graph_free(bound);
    Py_END_ALLOW_THREADS
    PyMem_Free(data);
    if (!out) {
        Py_XDECREF(plist);
        mera_error_prefix(&err, "pass %s: ", name);
        return pymera_raise(&err);
    }
    PyMeraGraph *r = (PyMeraGraph *)pymera_graph_wrap(out);
    if (!r) {
        Py_XDECREF(plist);
        return NULL;
    }
    if (PyList_Append(r->keepalive, (PyObject *)self) || (plist && PyList_Append(r->keepalive, plist))) {
        Py_XDECREF(plist);
        Py_DECREF(r);
        return NULL;
    }
    Py_XDECREF(plist);
    return (PyObject *)r;
}

static PyObject *graph_get_name(PyMeraGraph *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(mera_graph_name(self->g));
}

/* rounding: the graph's rounding mode by name (ir.h, mera_rounding). */
static PyObject *graph_get_rounding(PyMeraGraph *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(mera_rounding_name(mera_graph_rounding(self->g)));
}

static int graph_set_rounding(PyMeraGraph *self, PyObject *value, void *Py_UNUSED(closure))
{
    mera_rounding r;
    const char *s = value && PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
    if (!s || mera_rounding_parse(s, &r)) {
        if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            pymera_raise_code(MERA_ERR_INVALID, "graph '%s': rounding must be one of %s or %s", mera_graph_name(self->g),
                              mera_rounding_name(MERA_ROUNDING_ZP_AFTER_ROUNDING),
                              mera_rounding_name(MERA_ROUNDING_ZP_BEFORE_ROUNDING));
        }
        return -1;
    }
    mera_graph_set_rounding(self->g, r);
    return 0;
}

static PyMethodDef graph_methods[] = {
    {"add_input", (PyCFunction)(void (*)(void))graph_add_input, METH_VARARGS | METH_KEYWORDS,
     "add_input(name, shape, dtype, layout=None, qparams=None) -> value id"},
    {"add_param", (PyCFunction)(void (*)(void))graph_add_param, METH_VARARGS | METH_KEYWORDS,
     "add_param(name, shape, dtype, layout=None, qparams=None) -> value id"},
    {"add_const", (PyCFunction)(void (*)(void))graph_add_const, METH_VARARGS | METH_KEYWORDS,
     "add_const(name, array, layout=None, qparams=None) -> value id (borrows the array's memory when it can)"},
    {"add_node", (PyCFunction)(void (*)(void))graph_add_node, METH_VARARGS | METH_KEYWORDS,
     "add_node(op, name, inputs, attrs=None, source=None) -> tuple of output value ids"},
    {"set_outputs", (PyCFunction)graph_set_outputs, METH_O, "set_outputs(ids)"},
    {"value", (PyCFunction)graph_value, METH_O, "value(id) -> dict"},
    {"node", (PyCFunction)graph_node, METH_O, "node(index) -> dict"},
    {"const_data", (PyCFunction)graph_const_data, METH_O, "const_data(id) -> read-only ndarray"},
    {"outputs", (PyCFunction)graph_outputs, METH_NOARGS, "output value ids"},
    {"inputs", (PyCFunction)graph_inputs, METH_NOARGS, "input and param value ids in declaration order"},
    {"num_values", (PyCFunction)graph_num_values, METH_NOARGS, "number of values"},
    {"num_nodes", (PyCFunction)graph_num_nodes, METH_NOARGS, "number of nodes"},
    {"find", (PyCFunction)graph_find, METH_O, "find(name) -> value id or -1"},
    {"text", (PyCFunction)graph_text, METH_NOARGS, "the IR text form"},
    {"serialize", (PyCFunction)graph_serialize, METH_NOARGS, "the versioned binary form"},
    {"deserialize", (PyCFunction)graph_deserialize, METH_O | METH_CLASS, "deserialize(bytes) -> Graph"},
    {"run_pass", (PyCFunction)(void (*)(void))graph_run_pass, METH_VARARGS | METH_KEYWORDS,
     "run_pass(name, params=None) -> Graph: the graph bound to params and rewritten by a pass (passes/passes.h)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef graph_getset[] = {
    {"name", (getter)graph_get_name, NULL, "graph name", NULL},
    {"rounding", (getter)graph_get_rounding, (setter)graph_set_rounding,
     "the rounding mode of the numerics contract (docs/numerics.md)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject PyMeraGraph_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mera._core.Graph",
    .tp_basicsize = sizeof(PyMeraGraph),
    .tp_dealloc = (destructor)graph_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A mera IR graph (C). Use mera.ir.Builder and mera.ir.Module rather than this directly.",
    .tp_methods = graph_methods,
    .tp_getset = graph_getset,
    .tp_new = graph_new,
};

int pymera_graph_init_type(PyObject *module)
{
    return pymera_add_type(module, &PyMeraGraph_Type, "Graph");
}
