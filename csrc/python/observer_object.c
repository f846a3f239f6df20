/* mera._core.Observer: a calibration observer (quant/observer.h) of one
 * float tensor. update() releases the GIL; a lock per observer keeps
 * threads that share one from racing. */
#include "python/pymera.h"

#include "quant/observer.h"

typedef struct {
    PyObject_HEAD
    mera_observer *o;
    mera_observer_config c;
    PyThread_type_lock lock;
} PyMeraObserver;

static void observer_dealloc(PyMeraObserver *self)
{
    mera_observer_free(self->o);
    if (self->lock)
        PyThread_free_lock(self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *observer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "bins", "percentile", "qmin", "qmax", NULL};
    mera_observer_config c = mera_observer_config_default();
    const char *kind = mera_observer_kind_name(c.kind);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|sidii", kwlist, &kind, &c.bins, &c.percentile, &c.qmin,
                                     &c.qmax))
        return NULL;
    if (mera_observer_kind_parse(kind, &c.kind)) {
        char msg[MERA_ERROR_MSG_LEN];
        int len = snprintf(msg, sizeof msg, "observer kind: unknown kind '%s'; valid:", kind);
        for (int k = 0; k < MERA_OBSERVER_COUNT && len > 0 && (size_t)len < sizeof msg; k++)
            len += snprintf(msg + len, sizeof msg - (size_t)len, "%s %s", k ? "," : "",
                            mera_observer_kind_name((mera_observer_kind)k));
        return pymera_raise_code(MERA_ERR_CONFIG, "%s", msg);
    }
    mera_error err;
    if (mera_observer_config_validate(&c, &err))
        return pymera_raise(&err);
    PyMeraObserver *self = (PyMeraObserver *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->c = c;
    self->lock = PyThread_allocate_lock();
    self->o = self->lock ? mera_observer_new(&c, &err) : NULL;
    if (!self->o) {
        int no_lock = !self->lock;
        Py_DECREF(self);
        return no_lock ? PyErr_NoMemory() : pymera_raise(&err);
    }
    return (PyObject *)self;
}

static void lock(PyMeraObserver *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

static PyObject *observer_update(PyMeraObserver *self, PyObject *arg)
{
    PyArrayObject *a = (PyArrayObject *)PyArray_FromAny(arg, NULL, 0, 0, 0, NULL);
    if (!a)
        return pymera_reraise_as(MERA_ERR_DTYPE, "Observer.update: expected a float32 array");
    if (PyArray_TYPE(a) != NPY_FLOAT32) {
        PyObject *name = PyObject_Str((PyObject *)PyArray_DESCR(a));
        const char *n = name ? PyUnicode_AsUTF8(name) : NULL;
        pymera_raise_code(MERA_ERR_DTYPE, "Observer.update: expected a float32 array, got %s", n ? n : "?");
        Py_XDECREF(name);
        Py_DECREF(a);
        return NULL;
    }
    /* native byte order, aligned, C-contiguous: a copy only if needed */
    PyArrayObject *c = (PyArrayObject *)PyArray_FromArray(a, PyArray_DescrFromType(NPY_FLOAT32), NPY_ARRAY_CARRAY_RO);
    Py_DECREF(a);
    if (!c)
        return NULL;
    const float *x = PyArray_DATA(c);
    int64_t n = PyArray_SIZE(c);
    mera_error err;
    mera_status st;
    lock(self);
    Py_BEGIN_ALLOW_THREADS
    st = mera_observer_update(self->o, x, n, &err);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    Py_DECREF(c);
    if (st)
        return pymera_raise(&err);
    Py_RETURN_NONE;
}

static PyObject *observer_minmax(PyMeraObserver *self, PyObject *Py_UNUSED(unused))
{
    float mn, mx;
    lock(self);
    mera_observer_minmax(self->o, &mn, &mx);
    PyThread_release_lock(self->lock);
    return Py_BuildValue("(dd)", (double)mn, (double)mx);
}

static int observer_get_range(PyMeraObserver *self, float *lo, float *hi)
{
    mera_error err;
    mera_status st;
    lock(self);
    Py_BEGIN_ALLOW_THREADS
    st = mera_observer_range(self->o, lo, hi, &err);
    Py_END_ALLOW_THREADS
    PyThread_release_lock(self->lock);
    if (st) {
        pymera_raise(&err);
        return -1;
    }
    return 0;
}

static PyObject *observer_range(PyMeraObserver *self, PyObject *Py_UNUSED(unused))
{
    float lo, hi;
    if (observer_get_range(self, &lo, &hi))
        return NULL;
    return Py_BuildValue("(dd)", (double)lo, (double)hi);
}

static PyObject *observer_qparams(PyMeraObserver *self, PyObject *Py_UNUSED(unused))
{
    float lo, hi;
    if (observer_get_range(self, &lo, &hi))
        return NULL;
    double scale;
    int32_t zp;
    mera_qparams_from_range(lo, hi, self->c.qmin, self->c.qmax, MERA_TORCH_MIN_SCALE, &scale, &zp);
    return Py_BuildValue("(di)", scale, (int)zp);
}

static PyObject *observer_get_count(PyMeraObserver *self, void *Py_UNUSED(closure))
{
    lock(self);
    int64_t n = mera_observer_count(self->o);
    PyThread_release_lock(self->lock);
    return PyLong_FromLongLong((long long)n);
}

static PyObject *observer_get_kind(PyMeraObserver *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(mera_observer_kind_name(self->c.kind));
}

static PyMethodDef observer_methods[] = {
    {"update", (PyCFunction)observer_update, METH_O,
     "update(array): add the values of a float32 array of any shape (the GIL is released)"},
    {"minmax", (PyCFunction)observer_minmax, METH_NOARGS, "minmax() -> (min, max) of the values seen; (0, 0) if none"},
    {"range", (PyCFunction)observer_range, METH_NOARGS,
     "range() -> (lo, hi): the clipping range the observer chose, lo <= 0 <= hi"},
    {"qparams", (PyCFunction)observer_qparams, METH_NOARGS,
     "qparams() -> (scale, zero_point) of range() on [qmin, qmax], by PyTorch's per-tensor affine formula "
     "(scale at least float32 eps, as torch; mera.Quantizer itself goes down to 1e-18)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef observer_getset[] = {
    {"count", (getter)observer_get_count, NULL, "number of values seen", NULL},
    {"kind", (getter)observer_get_kind, NULL, "the observer kind name", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PyMeraObserver_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mera._core.Observer",
    .tp_basicsize = sizeof(PyMeraObserver),
    .tp_dealloc = (destructor)observer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Observer(kind='histogram', bins=2048, percentile=99.99, qmin=0, qmax=255): calibration "
              "statistics of one float tensor. kind is one of 'minmax', 'percentile', 'histogram' (PyTorch's "
              "HistogramObserver), 'entropy' (KL divergence), 'mse'.",
    .tp_methods = observer_methods,
    .tp_getset = observer_getset,
    .tp_new = observer_new,
};

int pymera_observer_init_type(PyObject *module)
{
    return pymera_add_type(module, &PyMeraObserver_Type, "Observer");
}
