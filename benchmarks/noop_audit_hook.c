/* A C audit hook that does nothing: the floor any audit-hook guard pays per audited event (benchmarks/audit_tax.py).
 *
 * CPython builds an event's argument tuple for any installed hook, C or Python, before calling it; this hook
 * returns at once, so what it costs over an unhooked interpreter is that floor and nothing else. Built by the
 * benchmark itself (a C compiler is needed; the row is skipped without one), never installed with the package. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int
hook(const char *event, PyObject *args, void *userdata)
{
    (void)event;
    (void)args;
    (void)userdata;
    return 0;
}

static PyObject *
install(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (PySys_AddAuditHook(hook, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"install", install, METH_NOARGS, "Add the no-op C audit hook."}, {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "noop_audit_hook", NULL, -1, methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit_noop_audit_hook(void)
{
    return PyModule_Create(&module_def);
}
