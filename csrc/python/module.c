/* mera._core: the CPython entry point of the C core. Errors raised here are
 * the classes of mera/errors.py, chosen by the C status code. */
#define MERA_PY_MAIN_FILE
#include "python/pymera.h"

#include <stdarg.h>

#include "arch/platform.h"
#include "backends/backend.h"
#include "driver/driver.h"
#include "kernels/kernels.h"
#include "runtime/deploy_format.h"
#include "runtime/mera_deploy.h"

/* mera.errors classes by status code, filled once at import. */
static PyObject *error_classes[MERA_STATUS_COUNT];
static PyObject *mera_error_base;

static const char *const error_class_names[MERA_STATUS_COUNT] = {
    [MERA_OK] = "MeraError",
    [MERA_ERR_INVALID] = "GraphError",
    [MERA_ERR_SHAPE] = "ShapeError",
    [MERA_ERR_DTYPE] = "DtypeError",
    [MERA_ERR_ATTR] = "AttrError",
    [MERA_ERR_UNKNOWN_OP] = "UnknownOpError",
    [MERA_ERR_FORMAT] = "FormatError",
    [MERA_ERR_UNSUPPORTED] = "UnsupportedError",
    [MERA_ERR_NOMEM] = "MeraError",
    [MERA_ERR_IO] = "MeraIOError",
    [MERA_ERR_RUNTIME] = "RuntimeInputError",
    [MERA_ERR_CONFIG] = "ConfigError",
};

PyObject *pymera_raise(const mera_error *err)
{
    if (err->code == MERA_ERR_NOMEM)
        return PyErr_NoMemory();
    PyObject *cls = (unsigned)err->code < MERA_STATUS_COUNT ? error_classes[err->code] : mera_error_base;
    PyErr_SetString(cls ? cls : PyExc_RuntimeError, err->msg);
    return NULL;
}

PyObject *pymera_raise_code(mera_status code, const char *fmt, ...)
{
    mera_error err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof err.msg, fmt, ap);
    va_end(ap);
    err.code = code;
    return pymera_raise(&err);
}

PyObject *pymera_reraise_as(mera_status code, const char *fmt, ...)
{
    if (!PyErr_Occurred())
        return pymera_raise_code(code, "%s", "unknown error");
    if (PyErr_ExceptionMatches(mera_error_base) || PyErr_ExceptionMatches(PyExc_MemoryError))
        return NULL;
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyObject *msg = v ? PyObject_Str(v) : NULL;
    const char *m = msg ? PyUnicode_AsUTF8(msg) : NULL;
    char ctx[MERA_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    pymera_raise_code(code, "%s: %s", ctx, m ? m : "invalid value");
    Py_XDECREF(msg);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    return NULL;
}

int pymera_add_type(PyObject *module, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(module, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

int pymera_dtype_to_npy(mera_dtype t)
{
    switch (t) {
    case MERA_DTYPE_FLOAT32: return NPY_FLOAT32;
    case MERA_DTYPE_INT8: return NPY_INT8;
    case MERA_DTYPE_UINT8: return NPY_UINT8;
    case MERA_DTYPE_INT32: return NPY_INT32;
    case MERA_DTYPE_BFLOAT16: return NPY_UINT16; /* raw bits */
    case MERA_DTYPE_INT64: return NPY_INT64;
    default: break;
    }
    MERA_BUG("dtype without a NumPy counterpart");
    return -1;
}

int pymera_npy_to_dtype(int npy, mera_dtype *out)
{
    switch (npy) {
    case NPY_FLOAT32: *out = MERA_DTYPE_FLOAT32; return 0;
    case NPY_INT8: *out = MERA_DTYPE_INT8; return 0;
    case NPY_UINT8: *out = MERA_DTYPE_UINT8; return 0;
    case NPY_INT32: *out = MERA_DTYPE_INT32; return 0;
    case NPY_INT64: *out = MERA_DTYPE_INT64; return 0;
    default: return -1;
    }
}

/* ---- op table and platform table -------------------------------------- */

static PyObject *py_op_names(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    PyObject *l = PyList_New(MERA_OP_COUNT);
    for (int i = 0; l && i < MERA_OP_COUNT; i++)
        PyList_SET_ITEM(l, i, PyUnicode_FromString(mera_op_table[i].name));
    return l;
}

static PyObject *py_op_info(PyObject *Py_UNUSED(m), PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return NULL;
    int op = mera_op_lookup(name);
    if (op < 0)
        return pymera_raise_code(MERA_ERR_UNKNOWN_OP, "unknown op '%s'", name);
    const mera_op_info *info = &mera_op_table[op];
    int n_names = info->max_inputs <= 3 ? info->max_inputs : 1;
    PyObject *inputs = PyList_New(n_names), *attrs = PyList_New(0);
    if (!inputs || !attrs)
        goto fail;
    for (int i = 0; i < n_names; i++)
        PyList_SET_ITEM(inputs, i, PyUnicode_FromString(info->input_names[i]));
    for (const mera_attr_spec *sp = info->attrs; sp->key; sp++) {
        PyObject *d = Py_BuildValue("{s:s,s:s,s:O,s:i,s:z,s:z,s:s}", "name", sp->key, "kind",
                                    mera_attr_kind_name(sp->kind), "required", sp->required ? Py_True : Py_False,
                                    "count", sp->count, "choices", sp->choices, "default", sp->deflt, "doc", sp->doc);
        if (!d || PyList_Append(attrs, d)) {
            Py_XDECREF(d);
            goto fail;
        }
        Py_DECREF(d);
    }
    return Py_BuildValue("{s:s,s:i,s:i,s:N,s:N,s:s,s:O,s:O,s:O}", "name", info->name, "min_inputs", info->min_inputs,
                         "max_inputs", info->max_inputs, "inputs", inputs, "attrs", attrs, "doc", info->doc,
                         "elementwise", (info->flags & MERA_OPF_ELEMWISE) ? Py_True : Py_False, "quantized_output",
                         (info->flags & MERA_OPF_QOUT) ? Py_True : Py_False, "spatial",
                         (info->flags & MERA_OPF_SPATIAL) ? Py_True : Py_False);
fail:
    Py_XDECREF(inputs);
    Py_XDECREF(attrs);
    return NULL;
}

static PyObject *py_platforms(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    PyObject *l = PyList_New(0);
    if (!l)
        return NULL;
    for (int i = 0; i < mera_platform_count(); i++) {
        const mera_platform *p = mera_platform_at(i);
        PyObject *d = Py_BuildValue("{s:s,s:z,s:i,s:s,s:d,s:O,s:L,s:s}", "name", p->name, "alias", p->alias, "arch",
                                    p->arch, "kind", p->kind == MERA_DEVICE_FPGA ? "FPGA" : "ASIC", "tops", p->tops,
                                    "tops_published", p->tops_published ? Py_True : Py_False, "mac_count",
                                    (long long)mera_platform_macs(p), "note", p->note);
        int bad = !d;
#define X(field, type, unit, lo, hi, doc)                                                                   \
        if (!bad) {                                                                                 \
            PyObject *v = _Generic(p->field, double: PyFloat_FromDouble, default: PyLong_FromLongLong)(p->field); \
            bad = !v || PyDict_SetItemString(d, #field, v);                                        \
            Py_XDECREF(v);                                                                          \
        }
        MERA_ARCH_PARAMS(X)
#undef X
        if (bad || PyList_Append(l, d)) {
            Py_XDECREF(d);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(d);
    }
    return l;
}

static PyObject *py_arch_params(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    PyObject *l = PyList_New(0);
    int bad = !l;
#define X(field, type, unit, lo, hi, doc)                                                                         \
    if (!bad) {                                                                                           \
        PyObject *t = Py_BuildValue("(ssss)", #field, _Generic((type)0, double: "float", default: "int"), unit, doc); \
        bad = !t || PyList_Append(l, t);                                                                  \
        Py_XDECREF(t);                                                                                    \
    }
    MERA_ARCH_PARAMS(X)
#undef X
    if (bad) {
        Py_XDECREF(l);
        return NULL;
    }
    return l;
}

static PyObject *py_cpu_features(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(a))
{
    const mera_cpu_features *f = mera_cpu_features_get();
    return Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "avx2", f->avx2 ? Py_True : Py_False, "fma",
                         f->fma ? Py_True : Py_False, "avx512f", f->avx512f ? Py_True : Py_False, "avx512vnni",
                         f->avx512vnni ? Py_True : Py_False, "avx512bw", f->avx512bw ? Py_True : Py_False,
                         "avx512vbmi", f->avx512vbmi ? Py_True : Py_False, "amx_int8", f->amx_int8 ? Py_True : Py_False);
}

/* kernel_name(op, quantized, rounding=default): the kernel a graph with
 * that rounding compiled now would run for op, after MERA_REFERENCE_KERNELS
 * and MERA_CPU_FEATURES_MASK. */
static PyObject *py_kernel_name(PyObject *Py_UNUSED(m), PyObject *args)
{
    const char *name, *rname = NULL;
    int quantized;
    if (!PyArg_ParseTuple(args, "sp|s", &name, &quantized, &rname))
        return NULL;
    int op = mera_op_lookup(name);
    if (op < 0)
        return pymera_raise_code(MERA_ERR_UNKNOWN_OP, "unknown op '%s'", name);
    mera_rounding r = MERA_ROUNDING_DEFAULT;
    if (rname && mera_rounding_parse(rname, &r))
        return pymera_raise_code(MERA_ERR_INVALID, "unknown rounding '%s'", rname);
    return PyUnicode_FromString(
        mera_kernel_select(op, quantized ? MERA_NUMERICS_QUANT : MERA_NUMERICS_FLOAT, r).name);
}

static PyObject *py_stage_names(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(unused))
{
    PyObject *l = PyList_New(MERA_STAGE_COUNT);
    for (int s = 0; l && s < MERA_STAGE_COUNT; s++) {
        PyObject *n = PyUnicode_FromString(mera_stage_name((mera_stage)s));
        if (!n) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, s, n);
    }
    return l;
}

static PyObject *backend_dict(const mera_backend *b)
{
    PyObject *mode = !b->node_by_node ? Py_None
                     : PyUnicode_FromString(b->interp_mode == MERA_INTERP_HW ? "hw" : "float");
    PyObject *key = b->mera_time_key ? PyUnicode_FromString(b->mera_time_key) : Py_None;
    if (mode == Py_None)
        Py_INCREF(mode);
    if (key == Py_None)
        Py_INCREF(key);
    PyObject *d = NULL;
    if (mode && key)
        d = Py_BuildValue("{s:s,s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:O}", "name", b->name, "doc", b->doc, "runs_program",
                          b->runs_program ? Py_True : Py_False, "layout_nhwc", b->layout_nhwc ? Py_True : Py_False,
                          "thread_safe_run", b->thread_safe_run ? Py_True : Py_False, "node_by_node",
                          b->node_by_node ? Py_True : Py_False, "interp_mode", mode, "runs_through_deploy",
                          b->runs_through_deploy ? Py_True : Py_False, "mera_time_key", key);
    Py_XDECREF(mode);
    Py_XDECREF(key);
    return d;
}

static PyObject *py_backend_info(PyObject *Py_UNUSED(m), PyObject *arg)
{
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!name) {
        PyErr_Clear();
        return pymera_raise_code(MERA_ERR_CONFIG, "backend_info: the target must be a str");
    }
    const mera_backend *b = mera_backend_find(name);
    if (!b) {
        char names[128];
        mera_backend_names(names, sizeof names);
        return pymera_raise_code(MERA_ERR_CONFIG, "unknown target '%s'; targets: %s", name, names);
    }
    return backend_dict(b);
}

static PyObject *py_backends(PyObject *Py_UNUSED(m), PyObject *Py_UNUSED(unused))
{
    PyObject *l = PyList_New(0);
    for (int i = 0; l && mera_backends[i]; i++) {
        PyObject *d = backend_dict(mera_backends[i]);
        if (!d || PyList_Append(l, d)) {
            Py_XDECREF(d);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(d);
    }
    return l;
}

static PyMethodDef module_methods[] = {
    {"stage_names", py_stage_names, METH_NOARGS, "the compile driver's stages, in order (dump_ir_stages)"},
    {"backend_info", py_backend_info, METH_O, "backend_info(target) -> the backend table's entry (see backends())"},
    {"backends", py_backends, METH_NOARGS, "the backend table: name, doc, runs_program, layout_nhwc, thread_safe_run, node_by_node, interp_mode, "
     "runs_through_deploy, mera_time_key"},
    {"op_names", py_op_names, METH_NOARGS, "names of every op in the op table"},
    {"op_info", py_op_info, METH_O, "op_info(name) -> dict describing inputs and attributes"},
    {"platforms", py_platforms, METH_NOARGS, "the DNA platform table"},
    {"arch_params", py_arch_params, METH_NOARGS, "the overridable hardware parameters: (name, kind, unit, doc)"},
    {"cpu_features", py_cpu_features, METH_NOARGS, "CPU features detected at run time"},
    {"kernel_name", py_kernel_name, METH_VARARGS,
     "kernel_name(op, quantized) -> the kernel ('ref', 'amx', 'avx512vnni', 'avx2', 'c') a graph compiled now would run"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "mera._core", "The mera C core: IR, kernels, backends.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();
    PyObject *errors = PyImport_ImportModule("mera.errors");
    if (!errors)
        return NULL;
    mera_error_base = PyObject_GetAttrString(errors, "MeraError");
    for (int i = 0; i < MERA_STATUS_COUNT; i++) {
        error_classes[i] = PyObject_GetAttrString(errors, error_class_names[i]);
        if (!error_classes[i]) {
            Py_DECREF(errors);
            return NULL;
        }
    }
    Py_DECREF(errors);
    if (!mera_error_base)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (pymera_graph_init_type(m) || pymera_interp_init_type(m) || pymera_compiled_init_type(m) ||
        pymera_observer_init_type(m) || pymera_quant_init_type(m) ||
        PyModule_AddIntConstant(m, "DEPLOY_ABI_VERSION", MERA_DEPLOY_ABI_VERSION) ||
        PyModule_AddIntConstant(m, "DEPLOY_FORMAT_VERSION", MERA_DEPLOY_FORMAT_VERSION) ||
        PyModule_AddIntConstant(m, "IR_FORMAT_VERSION", MERA_IR_FORMAT_VERSION) ||
        PyModule_AddIntConstant(m, "MAX_RANK", MERA_MAX_RANK)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
