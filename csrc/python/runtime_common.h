/* Helpers shared by the compiled-graph objects of mera._core (Interp, Sim):
 * binding params and checking run-time inputs, so every target validates
 * arrays the same way and with the same messages. */
#ifndef MERA_PYTHON_RUNTIME_COMMON_H
#define MERA_PYTHON_RUNTIME_COMMON_H

#include "python/pymera.h"

/* Check that obj is an ndarray of exactly the declared type, C-contiguous,
 * aligned and in native byte order. Returns a borrowed reference or NULL
 * with a mera.RuntimeInputError naming kind ("input", "param") and name. */
PyArrayObject *pymera_check_array(PyObject *obj, const mera_type *t, const char *kind, const char *name);

/* The params of a compile: params is a sequence with one entry per declared
 * graph input (mera_graph_input order), an array for each PARAM value and
 * anything (None) for INPUT values. On success returns 0 and fills
 *   *plist      a new list of the entries (the caller keeps it alive: the
 *               data pointers borrow its arrays),
 *   *data       PyMem array of n_decl + 1 data pointers (NULL for inputs),
 *   *input_ids  PyMem array of the INPUT value ids, in order,
 *   *n_inputs   their count.
 * On failure returns -1 with an exception set and nothing to free. */
int pymera_bind_params(const mera_graph *g, PyObject *params, PyObject **plist, const void ***data,
                       int **input_ids, int *n_inputs);

/* One run's inputs and outputs: pymera_run_io_begin checks arg (a sequence
 * of n_inputs arrays, in input_ids order) and allocates the output arrays;
 * while the GIL is released, io->ins / io->outs are the pointers to pass
 * to the backend (io->seq keeps the input arrays alive). End with
 * pymera_run_io_end(io, ok): returns the list of outputs when ok, else
 * NULL (the caller has set the exception), and frees the rest. */
typedef struct {
    PyObject *seq;
    PyObject *result;
    const void **ins;
    void **outs;
} pymera_run_io;

int pymera_run_io_begin(pymera_run_io *io, const mera_graph *g, const int *input_ids, int n_inputs, PyObject *arg);
PyObject *pymera_run_io_end(pymera_run_io *io, int ok);

#endif
