/* Shared declarations of the mera._core extension module. */
#ifndef MERA_PYTHON_PYMERA_H
#define MERA_PYTHON_PYMERA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL mera_ARRAY_API
#ifndef MERA_PY_MAIN_FILE
#define NO_IMPORT_ARRAY
#endif
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include "ir/ir.h"

/* Raise the mera.errors class that matches err->code; returns NULL. */
PyObject *pymera_raise(const mera_error *err);
/* Raise a mera.errors class by status with a formatted message; returns NULL. */
PyObject *pymera_raise_code(mera_status code, const char *fmt, ...);

/* If the pending exception is not one of mera's (nor MemoryError), replace
 * it by the mera.errors class for code, with "<context>: <old message>". */
PyObject *pymera_reraise_as(mera_status code, const char *fmt, ...);

/* PyType_Ready(type), then add it to module as name; -1 with an exception
 * on failure. */
int pymera_add_type(PyObject *module, PyTypeObject *type, const char *name);

int pymera_dtype_to_npy(mera_dtype t);
int pymera_npy_to_dtype(int npy, mera_dtype *out);

/* The Graph type (graph_object.c). */
typedef struct {
    PyObject_HEAD
    mera_graph *g;
    PyObject *keepalive; /* list of arrays whose memory the graph borrows */
} PyMeraGraph;

extern PyTypeObject PyMeraGraph_Type;
int pymera_graph_init_type(PyObject *module);
/* A new Graph object owning g (freed on failure too). */
PyObject *pymera_graph_wrap(mera_graph *g);

/* Calibration observers (observer_object.c). */
int pymera_observer_init_type(PyObject *module);

/* The quantizer (quant_binding.c). */
int pymera_quant_init_type(PyObject *module);

/* The interpreter on its own, for the quantizer's runs (interp_object.c). */
int pymera_interp_init_type(PyObject *module);

/* Graphs through the compile driver, every target (compiled_object.c). */
int pymera_compiled_init_type(PyObject *module);

#endif
