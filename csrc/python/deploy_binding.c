/* mera._core.prepare_deploy: the bytes of deploy.params and deploy.json
 * (runtime/deploy_format.h), for mera.build. The platform copy and the
 * scheduler options are built exactly as for mera._core.Sim (the shared
 * helpers of runtime_common.c); the preparation (scheduling, for Simulator
 * and IP) runs with the GIL released. */
#include "python/pymera.h"
#include "python/runtime_common.h"

#include <string.h>

#include "runtime/deploy_format.h"
#include "runtime/mera_deploy.h"

/* prepare_deploy(graph, params, target, host_arch, platform, arch_overrides, sched)
 *   -> (params_bytes, json_str, model_id)
 * platform is a platform name for Simulator and IP, None for the
 * interpreters (arch_overrides and sched are then ignored). */
static PyObject *py_prepare_deploy(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *graph, *params, *platform_obj, *overrides, *sched;
    const char *target, *host_arch;
    if (!PyArg_ParseTuple(args, "O!OssOOO", &PyMeraGraph_Type, &graph, &params, &target, &host_arch, &platform_obj,
                          &overrides, &sched))
        return NULL;
    mera_platform plat;
    mera_sched_options opt;
    int scheduled = platform_obj != Py_None;
    if (scheduled) {
        const char *name = PyUnicode_Check(platform_obj) ? PyUnicode_AsUTF8(platform_obj) : NULL;
        if (!name) {
            PyErr_Clear();
            return pymera_raise_code(MERA_ERR_INVALID, "prepare_deploy: platform must be a str or None");
        }
        const mera_platform *base = mera_platform_find(name);
        if (!base)
            return pymera_raise_code(MERA_ERR_INVALID, "unknown platform '%s'", name);
        plat = *base; /* name, alias and note point into the static table */
        if (pymera_parse_sched(&opt, sched) || pymera_apply_arch_overrides(&plat, overrides))
            return NULL;
    }
    const mera_graph *g = ((PyMeraGraph *)graph)->g;
    PyObject *plist;
    const void **data;
    int *input_ids, n_inputs;
    if (pymera_bind_params(g, params, &plist, &data, &input_ids, &n_inputs))
        return NULL;
    mera_deploy_spec spec = {
        .target = target,
        .host_arch = host_arch,
        .g = g,
        .param_data = data,
        .platform = scheduled ? &plat : NULL,
        .sched = scheduled ? &opt : NULL,
    };
    mera_deploy_files files;
    memset(&files, 0, sizeof files);
    mera_error err;
    mera_status st;
    /* plist keeps the param arrays alive and graph is held by the caller's
     * reference while the GIL is released */
    Py_BEGIN_ALLOW_THREADS
    st = mera_deploy_prepare(&spec, &files, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(data);
    PyMem_Free(input_ids);
    Py_DECREF(plist);
    if (st)
        return pymera_raise(&err);
    PyObject *r = Py_BuildValue("(y#ss)", (const char *)files.params, (Py_ssize_t)files.params_len, files.json,
                                files.model_id);
    mera_deploy_files_free(&files);
    return r;
}

static PyMethodDef deploy_methods[] = {
    {"prepare_deploy", py_prepare_deploy, METH_VARARGS,
     "prepare_deploy(graph, params, target, host_arch, platform, arch_overrides, sched) -> "
     "(deploy.params bytes, deploy.json str, model id): the data files of a deploy directory, built in memory"},
    {NULL, NULL, 0, NULL},
};

int pymera_deploy_init(PyObject *module)
{
    if (PyModule_AddFunctions(module, deploy_methods) ||
        PyModule_AddIntConstant(module, "DEPLOY_ABI_VERSION", MERA_DEPLOY_ABI_VERSION) ||
        PyModule_AddIntConstant(module, "DEPLOY_FORMAT_VERSION", MERA_DEPLOY_FORMAT_VERSION))
        return -1;
    return 0;
}
