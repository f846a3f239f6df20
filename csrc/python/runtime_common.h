/* Helpers shared by the compiled-graph objects of mera._core (Interp, Sim):
 * binding params and checking run-time inputs, so every target validates
 * arrays the same way and with the same messages. */
#ifndef MERA_PYTHON_RUNTIME_COMMON_H
#define MERA_PYTHON_RUNTIME_COMMON_H

#include "python/pymera.h"

#include "arch/platform.h"
#include "backends/interp.h"
#include "sched/sched.h"

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

/* The backend call of one run: compiled is an Interp's mera_interp or a
 * Sim's dna_machine. Called with the GIL released. */
typedef mera_status (*pymera_run_fn)(const void *compiled, const void *const *inputs, void *const *outputs,
                                     mera_error *err);

/* One run of a compiled graph: checks arg (a sequence of n_inputs arrays,
 * in input_ids order), allocates the output arrays and calls run with the
 * GIL released. Returns the list of outputs, or NULL with an exception. */
PyObject *pymera_run(const mera_graph *g, const int *input_ids, int n_inputs, PyObject *arg, pymera_run_fn run,
                     const void *compiled);

/* node_times of Interp and of Compiled (node-by-node targets): runs the
 * interpreter it repeat times on the inputs and returns a list of the
 * seconds of every node of g (graph order), the best of the runs, timed
 * from the end of the node before. */
PyObject *pymera_node_times(const mera_interp *it, const mera_graph *g, const int *input_ids, int n_inputs,
                            PyObject *inputs, int repeat);

/* A new list of the ints v[0], ..., v[n-1] (input_ids() of Interp and Sim). */
PyObject *pymera_int_list(const int *v, int n);

/* Apply an {name: value} dict of MERA_ARCH_PARAMS overrides (None: none)
 * to the platform copy p. -1 with a mera error naming the key on failure. */
int pymera_apply_arch_overrides(mera_platform *p, PyObject *overrides);

/* Parse the sched dict of config.simulator_options (None: the defaults):
 * mode ("Fast" | "Slow"), max_tile_height, max_tile_width, compiler_workers. */
int pymera_parse_sched(mera_sched_options *opt, PyObject *sched);

#endif
