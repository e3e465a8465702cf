/* Callgrind client requests for Python (benchmarks/callgrind.py): start instrumenting (a run started with
 * --instr-atstart=no runs its start-up and imports several times faster, uncounted), zero the counters before a
 * measured part and dump them after it, so one counted run yields the instructions of each part alone, without
 * the interpreter's start-up, the imports and the set-up. Outside valgrind each request is a few no-op
 * instructions. Built by the
 * benchmark itself (a C compiler and valgrind's headers are needed; the rows are skipped without them), never
 * installed with the package. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <valgrind/callgrind.h>

static PyObject *
start(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    CALLGRIND_START_INSTRUMENTATION;
    Py_RETURN_NONE;
}

static PyObject *
zero(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    CALLGRIND_ZERO_STATS;
    Py_RETURN_NONE;
}

static PyObject *
dump(PyObject *module, PyObject *label)
{
    (void)module;
    const char *text = PyUnicode_AsUTF8(label);
    if (text == NULL)
        return NULL;
    CALLGRIND_DUMP_STATS_AT(text);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"start", start, METH_NOARGS, "Start instrumenting (a run started with --instr-atstart=no)."},
    {"zero", zero, METH_NOARGS, "Zero callgrind's counters."},
    {"dump", dump, METH_O, "Dump callgrind's counters (since the last zero or dump) under a label."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "callgrind_marks", NULL, -1, methods};

PyMODINIT_FUNC
PyInit_callgrind_marks(void)
{
    return PyModule_Create(&module);
}
