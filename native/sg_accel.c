/* sockguard._accel: the optional C accelerator of the audit-hook floor (issue 16).
 *
 * The one CPython extension of the package (the rest of native/ is the LD_PRELOAD library, which has no
 * libpython). Two jobs, both with a pure-Python equivalent that behaves identically (sockguard/_hook.py's
 * ``_audit`` and sockguard/floor.py's ``_check_socket``):
 *
 *  1. The floor itself, added with PySys_AddAuditHook: every audited event of the process (open, import,
 *     exec, compile, ...) reaches this C function, and only the events sockguard watches (the names given
 *     to install()) look up a handler in sockguard._hook.handlers and call it. The others return without
 *     entering Python. A hook added this way cannot be removed, and nothing here can switch it off: it is
 *     installed once, it keeps the handler table it was given, and there is no setting to change later.
 *     Emptying that table (what the guard does to turn itself off) is the only "off", as with the Python hook.
 *
 *  2. The fast path of ``socket.connect`` / ``socket.sendto``: an address that is a plain tuple of an exact
 *     str host and an exact int port (what the socket wrappers hand C, sockguard.canonical), on an AF_INET or
 *     AF_INET6 socket, whose decision in the State in force is cached as *allowed* (and, for a connect with
 *     the breaker on, is one of the breaker's healthy destinations), while no sink wants allow events, returns
 *     here. It reads the live Python objects every time (sockguard.active.in_force, its caches, the breaker's
 *     set, the sinks' memo), exactly as floor._check_socket does, so there is nothing to keep in sync and
 *     nothing to go stale when a State is swapped. Anything it cannot answer (another shape, an object of an
 *     unexpected type, a miss, an error) goes to the Python handler, which decides in full: the fast path can
 *     only ever skip work the handler would have found nothing to do for.
 *
 * Caller objects never key anything here: a tuple subclass, a str subclass, a bytes host or an int subclass
 * (whose __hash__/__eq__/__index__ could be forged) fails the exact-type tests and goes to Python. No Python
 * code runs on the fast path (exact str/int/tuple hashing and comparison only), so under the GIL it is atomic.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#define MAX_EVENTS 32
#define AF_PACKET_FAMILY 17 /* Linux's AF_PACKET, as sockguard.rawsockets names it */
#define SOCK_PACKET_TYPE 10 /* Linux's SOCK_PACKET */

enum { KIND_OTHER = 0, KIND_CONNECT, KIND_SENDTO, KIND_NEW };

/* Set once by install(); never changed afterwards. */
static PyInterpreterState *hook_interp;
static PyObject *handlers;                 /* sockguard._hook.handlers (a dict, updated in place by Python) */
static int n_events;
static char *event_names[MAX_EVENTS];      /* owned copies */
static size_t event_lengths[MAX_EVENTS];
static PyObject *event_keys[MAX_EVENTS];   /* interned str, the handler table's keys */
static int event_kind[MAX_EVENTS];
static unsigned char first_two[65536 / 8]; /* bitmap of (c0, c1) of the watched names: most events stop here */

/* Set once by fast_path(); until then every watched event goes to its Python handler. */
static int fast_ready;
static PyObject *active_dict;    /* sockguard.active.__dict__ */
static PyTypeObject *state_type; /* sockguard.active.State */
static PyTypeObject *decision_type;
static PyObject *on_connect;     /* floor._on_connect: the fast path answers only for the real handlers */
static PyObject *on_sendto;
static PyObject *on_new;         /* floor._on_new: acts only on raw and packet sockets */
static PyTypeObject *socket_type; /* _socket.socket */
static PyObject *family_getter;   /* _socket.socket.__dict__["family"]: the C getter, no enum */
static PyObject *allowed_level;   /* events.ALLOWED_LEVEL */
static PyObject *sys_dict;        /* sys.__dict__: ``sys.modules`` is read from it, as Python code reads it */
/* Where State's slots are (State has __slots__ and the fast path takes only an exact State). */
static Py_ssize_t off_breaker, off_addrs, off_sinks;
static PyObject *s_level;
static long allowed_value;
static PyObject *s_in_force, *s_breaker, *s_healthy, *s_addrs, *s_sinks, *s_file, *s_levels, *s_logger,
    *s_disabled, *s_logging, *s_modules;

/* Counters for the differential tests (how often the fast path answered); not an input to any decision. */
static unsigned long long fast_answers;

static inline int
pair_bit(unsigned char c0, unsigned char c1)
{
    unsigned int i = ((unsigned int)c0 << 8) | c1;
    return (first_two[i >> 3] >> (i & 7)) & 1;
}

/* --- the fast path -------------------------------------------------------------------------------------- */

/* An attribute read, as PyObject_GetAttr reads it, that takes a slot straight from the object when the type's
 * attribute of that name is a slot (a member descriptor: a data descriptor, so it wins over everything else
 * GenericGetAttr would look at). Remembered per call site for one type at one version tag: any change to the
 * type (or its bases) gives it a new tag, and the next read looks again. Returns a new reference, or NULL with
 * an exception set. */
typedef struct {
    PyTypeObject *type; /* compared, never dereferenced while stale: a tag is never reused */
    unsigned int version;
    Py_ssize_t offset; /* 0: the type has no such slot, read with PyObject_GetAttr */
} AttrCache;

static PyObject *
read_attr(PyObject *object, PyObject *name, AttrCache *cache)
{
    PyTypeObject *type = Py_TYPE(object);
    if (cache->type == type && cache->version == type->tp_version_tag &&
        (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        if (cache->offset > 0) {
            PyObject *value = *(PyObject **)((char *)object + cache->offset);
            if (value != NULL)
                return Py_NewRef(value);
        }
        return PyObject_GetAttr(object, name);
    }
    cache->type = NULL;
    if (type->tp_getattro == PyObject_GenericGetAttr) {
        PyObject *descr = _PyType_Lookup(type, name); /* borrowed; gives the type a version tag */
        if (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) {
            Py_ssize_t offset = 0;
            if (descr != NULL && Py_TYPE(descr) == &PyMemberDescr_Type) {
                PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
                if (member->type == T_OBJECT_EX && member->offset > 0 &&
                    PyType_IsSubtype(type, PyDescr_TYPE(descr)))
                    offset = member->offset;
            }
            cache->version = type->tp_version_tag;
            cache->offset = offset;
            cache->type = type;
        }
    }
    return PyObject_GetAttr(object, name);
}

static AttrCache cache_healthy, cache_file, cache_levels, cache_logger, cache_disabled, cache_level;

/* A slot of an exact State (borrowed; NULL while unset). */
static inline PyObject *
slot(PyObject *object, Py_ssize_t offset)
{
    return *(PyObject **)((char *)object + offset);
}

static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descr == NULL || Py_TYPE(descr) != &PyMemberDescr_Type) {
        PyErr_Format(PyExc_TypeError, "fast_path(): %s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || member->offset <= 0 || (size_t)member->offset >= (size_t)type->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "fast_path(): %s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *offset = member->offset;
    return 0;
}

/* 1: no sink wants an allow event (sinks.Sinks.wants_allow() is False, read from the same memo);
 * 0: it may, or this cannot tell: the Python handler decides. */
static int
no_allow_events(PyObject *sinks)
{
    int result = 0;
    PyObject *file = NULL, *levels = NULL, *logger = NULL, *disabled = NULL;
    file = read_attr(sinks, s_file, &cache_file);
    if (file == NULL || file != Py_None)
        goto done;
    levels = read_attr(sinks, s_levels, &cache_levels);
    if (levels == NULL)
        goto done;
    if (PyDict_CheckExact(levels)) {
        PyObject *enabled = PyDict_GetItemWithError(levels, allowed_level); /* borrowed; int key: no Python */
        if (enabled == NULL) {
            if (PyErr_Occurred())
                goto done;
        }
        else {
            if (enabled != Py_False)
                goto done; /* True (or anything else): the handler logs it */
            logger = read_attr(sinks, s_logger, &cache_logger);
            if (logger == NULL || logger == Py_None)
                goto done;
            disabled = read_attr(logger, s_disabled, &cache_disabled);
            if (disabled == Py_False)
                result = 1;
            goto done; /* a disabled logger: the handler asks logging itself */
        }
    }
    else if (levels != Py_None) {
        goto done;
    }
    {
        /* No memo yet: nothing can be configured to show DEBUG while logging is not imported. */
        PyObject *modules = PyDict_GetItemWithError(sys_dict, s_modules); /* borrowed */
        if (modules == NULL || !PyDict_CheckExact(modules))
            goto done;
        PyObject *found = PyDict_GetItemWithError(modules, s_logging);
        if (found == NULL) {
            if (!PyErr_Occurred())
                result = 1;
            goto done;
        }
        /* Sinks._logger_wants(DEBUG): allowed traffic reaches the logger only when the ``sockguard`` logger's
         * own level is set, at DEBUG or below. */
        logger = read_attr(sinks, s_logger, &cache_logger);
        if (logger == NULL || logger == Py_None)
            goto done; /* Sinks.logger() would create it: the handler does */
        PyObject *own = read_attr(logger, s_level, &cache_level);
        if (own != NULL && PyLong_CheckExact(own)) {
            long value = PyLong_AsLong(own);
            if (!(value == -1 && PyErr_Occurred()) && !(0 < value && value <= allowed_value))
                result = 1;
        }
        Py_XDECREF(own);
    }
done:
    Py_XDECREF(file);
    Py_XDECREF(levels);
    Py_XDECREF(logger);
    Py_XDECREF(disabled);
    if (PyErr_Occurred())
        PyErr_Clear();
    return result;
}

static int
inet_socket(PyObject *sock)
{
    if (!PyObject_TypeCheck(sock, socket_type))
        return 0;
    descrgetfunc get = Py_TYPE(family_getter)->tp_descr_get;
    if (get == NULL)
        return 0;
    PyObject *family = get(family_getter, sock, (PyObject *)Py_TYPE(sock));
    if (family == NULL) {
        PyErr_Clear();
        return 0;
    }
    int inet = 0;
    if (PyLong_CheckExact(family)) {
        long value = PyLong_AsLong(family);
        if (value == -1 && PyErr_Occurred())
            PyErr_Clear();
        else
            inet = value == AF_INET || value == AF_INET6;
    }
    Py_DECREF(family);
    return inet;
}

/* 1: the event is allowed and nothing else would happen in the Python handler; 0: ask the handler.
 * Never sets an exception. */
static int
answer_fast(PyObject *args, int connect)
{
    if (!PyTuple_CheckExact(args) || PyTuple_GET_SIZE(args) != 2)
        return 0;
    PyObject *sock = PyTuple_GET_ITEM(args, 0);
    PyObject *address = PyTuple_GET_ITEM(args, 1);
    if (!PyTuple_CheckExact(address))
        return 0;
    Py_ssize_t size = PyTuple_GET_SIZE(address);
    if (size < 2 || size > 4)
        return 0;
    PyObject *host = PyTuple_GET_ITEM(address, 0);
    PyObject *port = PyTuple_GET_ITEM(address, 1);
    if (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(port))
        return 0;

    int result = 0;
    PyObject *state = NULL, *breaker = NULL, *healthy = NULL, *addrs = NULL, *sinks = NULL, *key = NULL;
    state = PyDict_GetItemWithError(active_dict, s_in_force); /* borrowed */
    if (state == NULL || Py_TYPE(state) != state_type)
        goto done;
    Py_INCREF(state);
    if (!inet_socket(sock))
        goto done;
    breaker = slot(state, off_breaker);
    if (breaker == NULL)
        goto done;
    Py_INCREF(breaker);
    if (connect && breaker != Py_None) {
        healthy = read_attr(breaker, s_healthy, &cache_healthy);
        if (healthy == NULL || !PySet_CheckExact(healthy))
            goto done;
    }
    if (!(healthy != NULL && size == 2)) {
        /* floor._check_socket's State.address cache hit: state.addrs[host][port] */
        addrs = slot(state, off_addrs);
        if (addrs == NULL || !PyDict_CheckExact(addrs))
            goto done;
        Py_INCREF(addrs);
        PyObject *ports = PyDict_GetItemWithError(addrs, host);
        if (ports == NULL || !PyDict_CheckExact(ports))
            goto done;
        PyObject *decision = PyDict_GetItemWithError(ports, port);
        if (decision == NULL || Py_TYPE(decision) != decision_type || PyTuple_GET_SIZE(decision) < 1 ||
            PyTuple_GET_ITEM(decision, 0) != Py_True)
            goto done;
    }
    if (healthy != NULL) {
        /* With the breaker on, a connect is left alone only for a healthy destination (Breaker.healthy). */
        if (size == 2) {
            key = address;
            Py_INCREF(key);
        }
        else {
            key = PyTuple_Pack(2, host, port);
            if (key == NULL)
                goto done;
        }
        if (PySet_Contains(healthy, key) != 1)
            goto done;
    }
    sinks = slot(state, off_sinks);
    if (sinks == NULL)
        goto done;
    Py_INCREF(sinks);
    result = no_allow_events(sinks);
done:
    Py_XDECREF(state);
    Py_XDECREF(breaker);
    Py_XDECREF(healthy);
    Py_XDECREF(addrs);
    Py_XDECREF(sinks);
    Py_XDECREF(key);
    if (PyErr_Occurred())
        PyErr_Clear();
    return result;
}

/* --- blocked refusals: a cached *blocked* decision refused in C (issue 16) --------------------------------------
 *
 * The Python handler refuses a connect/sendto whose decision is cached as blocked through floor._check_socket and
 * refusal.refuse: it finds the caller (caller.find_caller), takes the message's two halves from the State's message
 * cache (``state.blocks``), logs nothing when no sink wants a WARNING, and raises ``EgressBlocked``. This section
 * does exactly that in C for the case where refuse() has nothing else to do, and hands everything else to Python:
 *
 *   - the same address shape as the allowed fast path (a plain ``(str, int)`` pair on an AF_INET/AF_INET6 socket),
 *     a host in ``canonical.numeric_hosts`` that ``addrmap`` knows no name for (the message names the address);
 *   - the State in force (exact State) enforces (mode ``enforce``), has no breaker, no pinned resolver and no
 *     ``translate``; its cached decision for ``(host, port)`` is an exact Decision whose ``allowed`` is False and
 *     whose reason is not ``breaker-open``;
 *   - no sink wants the WARNING (Sinks.wants(30) is False, read from the same memo: no log file, no observer,
 *     logging imported and the ``sockguard`` logger's own isEnabledFor memo says False while it is not disabled);
 *   - the message's halves are in ``state.blocks`` already (the first refusal, made in Python, put them there);
 *   - the caller search (caller.find_caller) meets only modules whose kind ``caller._kinds`` knows: plumbing
 *     (skipped) and application code, named as find_caller names it (see caller_walk).
 *     A boundary, an unknown module, a non-str name or line: Python decides.
 *
 * The exception is built as ``EgressBlocked(message, host=..., ...)`` builds it: ``OSError.__init__(errno,
 * message)`` and the same attributes, in the same order. Nothing here runs Python code (exact str/int/tuple keys
 * and hashes only), so it is atomic under the GIL. Any failure (out of memory) clears the error and lets the
 * Python handler decide in full. The only difference a caller can see: the traceback has no floor._check_socket
 * entry (the C wrapper already leaves no wrapper entry). */

static int blocked_ready;
static PyObject *blocked_kinds;   /* caller._kinds (a dict, cleared in place, never replaced) */
static PyObject *blocked_names;   /* addrmap._names (likewise) */
static PyObject *blocked_numeric; /* canonical.numeric_hosts (a set, likewise) */
static PyObject *blocked_class;   /* errors.EgressBlocked */
static PyObject *blocked_errno;   /* EgressBlocked.default_errno */
static Py_ssize_t off_mode, off_resolver, off_translate, off_blocks;
static PyObject *s_connect_op, *s_send_op, *s_enforce, *s_breaker_open, *s_unknown,
    *s_observer, *s_a_host, *s_a_port, *s_a_address, *s_a_reason, *s_a_rule, *s_a_operation, *s_a_caller,
    *s_a_suggestion, *s_warning_level;
static AttrCache rcache_file, rcache_observer, rcache_levels, rcache_logger, rcache_disabled;
static unsigned long long fast_refusals;

/* 1: Sinks.wants(30) is False (read from its memo); 0: it may be True, or this cannot tell. Never raises. */
static int
no_warning_wanted(PyObject *sinks)
{
    int result = 0;
    PyObject *file = NULL, *observer = NULL, *levels = NULL, *logger = NULL, *disabled = NULL;
    file = read_attr(sinks, s_file, &rcache_file);
    if (file != Py_None)
        goto done;
    observer = read_attr(sinks, s_observer, &rcache_observer);
    if (observer != Py_None)
        goto done;
    PyObject *modules = PyDict_GetItemWithError(sys_dict, s_modules); /* borrowed */
    if (modules == NULL || !PyDict_CheckExact(modules))
        goto done;
    if (PyDict_GetItemWithError(modules, s_logging) == NULL)
        goto done; /* logging never imported: a WARNING goes to the console */
    levels = read_attr(sinks, s_levels, &rcache_levels);
    if (levels == NULL || !PyDict_CheckExact(levels))
        goto done;
    if (PyDict_GetItemWithError(levels, s_warning_level) != Py_False)
        goto done;
    logger = read_attr(sinks, s_logger, &rcache_logger);
    if (logger == NULL || logger == Py_None)
        goto done;
    disabled = read_attr(logger, s_disabled, &rcache_disabled);
    result = disabled == Py_False;
done:
    Py_XDECREF(file);
    Py_XDECREF(observer);
    Py_XDECREF(levels);
    Py_XDECREF(logger);
    Py_XDECREF(disabled);
    if (PyErr_Occurred())
        PyErr_Clear();
    return result;
}

/* === the caller search (caller.find_caller), shared by the C refusal and request events ===================
 *
 * The frames are walked here (PyFrame_GetBack: no audit event, no interpreter loop per frame) as long as each is
 * plainly plumbing: globals an exact dict whose exact-str ``__name__`` has kind 1 in ``kinds`` (caller._kinds, the
 * live dict, filled by Python). At the first frame that is not, either it is plainly application code (kind 0, an
 * exact-str name -- a ``__main__`` with a ``__spec__`` named, as caller._display_name names it, by the spec's
 * exact-str ``name`` when reading it runs no code --, an exact-str co_name, a line number) and
 * ``name:function:line`` is made here, or the walk stops at that very frame and Python decides from there (a module
 * judged for the first time, where the work began, odd globals or specs): the same Python code with and without the
 * accelerator. */

#define CALLER_CACHE 64

static PyObject *caller_kinds;  /* sockguard.caller._kinds: module name -> 0 application, 1 plumbing, 2 boundary */
static PyObject *caller_search; /* sockguard.caller._search(frame): the Python walk from a frame */
static PyObject *s_caller_name, *s_caller_spec, *s_caller_spec_name;

/* name:function:line texts already made, by (module name, code object, instruction offset): the line is a
 * function of the code and the offset, so a repeat costs no line-table scan. Strong references, so a pointer in
 * an entry can never be another object's. */
static struct {
    PyObject *name;
    PyObject *code;
    int lasti;
    PyObject *text;
} caller_texts[CALLER_CACHE];

/* ``name:function:line`` of an application frame; NULL without an error when Python must decide, NULL with an
 * error set on a failure. */
static PyObject *
caller_text(PyFrameObject *frame, PyObject *name)
{
    PyCodeObject *code = PyFrame_GetCode(frame); /* new reference */
    PyObject *function = code->co_name;
    if (!PyUnicode_CheckExact(function)) { /* a co_name f-strings might not copy */
        Py_DECREF(code);
        return NULL;
    }
    int lasti = PyFrame_GetLasti(frame);
    size_t slot = (((uintptr_t)code >> 4) ^ ((uintptr_t)name >> 4) ^ ((size_t)(unsigned)lasti * 2654435761u)) %
                  CALLER_CACHE;
    if (lasti >= 0 && caller_texts[slot].code == (PyObject *)code && caller_texts[slot].name == name &&
        caller_texts[slot].lasti == lasti) {
        Py_DECREF(code);
        return Py_NewRef(caller_texts[slot].text);
    }
    int line = PyFrame_GetLineNumber(frame);
    if (line < 0) { /* f_lineno None: Python says so its own way */
        Py_DECREF(code);
        return NULL;
    }
    PyObject *text = PyUnicode_FromFormat("%U:%U:%d", name, function, line);
    if (text == NULL || lasti < 0) {
        Py_DECREF(code);
        return text;
    }
    PyObject *old_name = caller_texts[slot].name, *old_code = caller_texts[slot].code,
             *old_text = caller_texts[slot].text;
    caller_texts[slot].name = Py_NewRef(name);
    caller_texts[slot].code = (PyObject *)code; /* the reference taken above */
    caller_texts[slot].lasti = lasti;
    caller_texts[slot].text = Py_NewRef(text);
    Py_XDECREF(old_name); /* only once the entry is whole: a deallocation may run code */
    Py_XDECREF(old_code);
    Py_XDECREF(old_text);
    return text;
}

/* ``spec.name`` of a ``__main__`` run with -m, when reading it runs no code of a class and gives an exact str: a
 * new reference; NULL, no error, when Python must decide. */
static PyObject *
spec_name(PyObject *spec)
{
    PyTypeObject *type = Py_TYPE(spec);
    if (type->tp_getattro != PyObject_GenericGetAttr || _PyType_Lookup(type, s_caller_spec_name) != NULL)
        return NULL; /* a __getattr__, or a class attribute or descriptor called "name" */
    PyObject *name = PyObject_GetAttr(spec, s_caller_spec_name); /* the instance dict's entry */
    if (name == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyUnicode_CheckExact(name))
        Py_CLEAR(name);
    return name;
}

/* The caller search from ``frame`` on (its reference is taken over). 1: *caller is the answer (a new str, or None
 * when only plumbing was found to the start of the stack); 0: Python must decide from *stop (a new reference);
 * -1: an error is set. */
static int
caller_walk(PyObject *kinds, PyFrameObject *frame, PyObject **caller, PyFrameObject **stop)
{
    while (frame != NULL) {
        PyObject *globals = PyFrame_GetGlobals(frame); /* new reference */
        PyObject *name = NULL, *kind = NULL;
        if (PyDict_CheckExact(globals)) {
            name = PyDict_GetItemWithError(globals, s_caller_name); /* borrowed; no code runs for a str key */
            if (name != NULL && PyUnicode_CheckExact(name))
                kind = PyDict_GetItemWithError(kinds, name); /* exact str: no code runs */
        }
        if (PyErr_Occurred()) {
            Py_DECREF(globals);
            Py_DECREF(frame);
            return -1;
        }
        long value = kind != NULL && PyLong_CheckExact(kind) ? PyLong_AsLong(kind) : -1;
        if (value == 1) {
            Py_DECREF(globals);
            PyFrameObject *back = PyFrame_GetBack(frame);
            Py_DECREF(frame);
            frame = back;
            continue;
        }
        int plain = value == 0;
        PyObject *shown = NULL; /* owned: the name the text begins with (caller._display_name) */
        if (plain) {
            /* Owned from here: looking up __spec__ may run code (a key of the same hash with an __eq__) that takes
             * __name__ out of the globals, and so may a deallocation while the text is made. */
            shown = Py_NewRef(name);
            if (PyUnicode_GET_LENGTH(name) == 8 && PyUnicode_CompareWithASCIIString(name, "__main__") == 0) {
                PyObject *spec = PyDict_GetItemWithError(globals, s_caller_spec); /* borrowed */
                if (spec == NULL)
                    plain = !PyErr_Occurred();
                else if (spec != Py_None) { /* python -m app: named by its spec's name */
                    Py_INCREF(spec);
                    Py_SETREF(shown, spec_name(spec));
                    Py_DECREF(spec);
                    plain = shown != NULL;
                }
            }
        }
        Py_DECREF(globals);
        if (plain) {
            PyObject *text = caller_text(frame, shown);
            Py_DECREF(shown);
            if (text != NULL || PyErr_Occurred()) {
                Py_DECREF(frame);
                *caller = text;
                return text != NULL ? 1 : -1;
            }
        }
        else {
            Py_XDECREF(shown);
            if (PyErr_Occurred()) {
                Py_DECREF(frame);
                return -1;
            }
        }
        *stop = frame;
        return 0;
    }
    if (PyErr_Occurred())
        return -1;
    *caller = Py_NewRef(Py_None); /* only plumbing, to the start of the stack: "unknown code" */
    return 1;
}

/* find_caller(depth) as seen from the frame that called the C function: a new reference, or NULL with an error. */
static PyObject *
caller_at(long depth)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed: the frame that called the C function (depth 1) */
    Py_XINCREF(frame);
    while (depth > 1 && frame != NULL) {
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
        depth--;
    }
    PyObject *caller = NULL;
    PyFrameObject *stop = NULL;
    int found = caller_walk(caller_kinds, frame, &caller, &stop);
    if (found != 0)
        return found > 0 ? caller : NULL;
    PyObject *result = PyObject_CallOneArg(caller_search, (PyObject *)stop);
    Py_DECREF(stop);
    return result;
}

/* caller.find_caller() from the frame that made the call: 1 with *caller set (a new str, or None when only
 * plumbing is found); 0 when Python must decide. Never raises. */
static int
find_caller_fast(PyObject **caller)
{
    if (s_caller_spec == NULL) /* caller_setup() not called: Python decides */
        return 0;
    PyFrameObject *stop = NULL;
    int found = caller_walk(blocked_kinds, PyThreadState_GetFrame(PyThreadState_Get()), caller, &stop);
    if (found == 0)
        Py_DECREF(stop);
    else if (found < 0)
        PyErr_Clear();
    return found == 1;
}

/* EgressBlocked(message, code=None, host=None, port=port, address=host, reason=..., rule=..., operation=...,
 * caller=..., suggestion=...): a new reference, or NULL with an exception set. */
static PyObject *
blocked_error(PyObject *message, PyObject *port, PyObject *host, PyObject *decision, PyObject *operation,
              PyObject *caller, PyObject *hint)
{
    PyTypeObject *type = (PyTypeObject *)blocked_class;
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        return NULL;
    PyObject *error = type->tp_new(type, empty, NULL);
    Py_DECREF(empty);
    if (error == NULL)
        return NULL;
    PyObject *init = PyTuple_Pack(2, blocked_errno, message);
    if (init == NULL || ((PyTypeObject *)PyExc_OSError)->tp_init(error, init, NULL) < 0) {
        Py_XDECREF(init);
        Py_DECREF(error);
        return NULL;
    }
    Py_DECREF(init);
    PyObject *attrs = PyObject_GenericGetDict(error, NULL);
    if (attrs == NULL || !PyDict_CheckExact(attrs) || PyDict_SetItem(attrs, s_a_host, Py_None) < 0 ||
        PyDict_SetItem(attrs, s_a_port, port) < 0 || PyDict_SetItem(attrs, s_a_address, host) < 0 ||
        PyDict_SetItem(attrs, s_a_reason, PyTuple_GET_ITEM(decision, 1)) < 0 ||
        PyDict_SetItem(attrs, s_a_rule, PyTuple_GET_ITEM(decision, 2)) < 0 ||
        PyDict_SetItem(attrs, s_a_operation, operation) < 0 || PyDict_SetItem(attrs, s_a_caller, caller) < 0 ||
        PyDict_SetItem(attrs, s_a_suggestion, hint) < 0) {
        if (attrs != NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "EgressBlocked.__dict__ is not a dict");
        Py_XDECREF(attrs);
        Py_DECREF(error);
        return NULL;
    }
    Py_DECREF(attrs);
    return error;
}

/* 1: refused here, the EgressBlocked set as the current exception; 0: the Python handler decides. */
static int
refuse_fast(PyObject *args, int connect)
{
    if (!blocked_ready || !PyTuple_CheckExact(args) || PyTuple_GET_SIZE(args) != 2)
        return 0;
    PyObject *sock = PyTuple_GET_ITEM(args, 0);
    PyObject *address = PyTuple_GET_ITEM(args, 1);
    if (!PyTuple_CheckExact(address) || PyTuple_GET_SIZE(address) != 2)
        return 0;
    PyObject *host = PyTuple_GET_ITEM(address, 0);
    PyObject *port = PyTuple_GET_ITEM(address, 1);
    if (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(port))
        return 0;
    int overflow = 0;
    long number = PyLong_AsLongAndOverflow(port, &overflow);
    if (overflow || number <= 0 || number > 65535) { /* refuse()'s port_number(): None for 0 */
        PyErr_Clear();
        return 0;
    }

    int result = 0;
    PyObject *state = NULL, *addrs = NULL, *blocks = NULL, *sinks = NULL, *decision = NULL, *key = NULL;
    PyObject *parts = NULL, *caller = NULL, *message = NULL, *error = NULL;
    PyObject *operation = connect ? s_connect_op : s_send_op;
    state = PyDict_GetItemWithError(active_dict, s_in_force); /* borrowed */
    if (state == NULL || Py_TYPE(state) != state_type)
        goto done;
    Py_INCREF(state);
    PyObject *mode = slot(state, off_mode);
    if (slot(state, off_breaker) != Py_None || slot(state, off_resolver) != Py_None ||
        slot(state, off_translate) != Py_None || mode == NULL || !PyUnicode_CheckExact(mode) ||
        PyUnicode_Compare(mode, s_enforce) != 0)
        goto done;
    if (!inet_socket(sock))
        goto done;
    addrs = Py_XNewRef(slot(state, off_addrs));
    if (addrs == NULL || !PyDict_CheckExact(addrs))
        goto done;
    PyObject *ports = PyDict_GetItemWithError(addrs, host); /* borrowed */
    if (ports == NULL || !PyDict_CheckExact(ports))
        goto done;
    decision = Py_XNewRef(PyDict_GetItemWithError(ports, port));
    if (decision == NULL || Py_TYPE(decision) != decision_type || PyTuple_GET_SIZE(decision) != 4 ||
        PyTuple_GET_ITEM(decision, 0) != Py_False || !PyUnicode_CheckExact(PyTuple_GET_ITEM(decision, 1)) ||
        PyUnicode_Compare(PyTuple_GET_ITEM(decision, 1), s_breaker_open) == 0)
        goto done;
    /* floor._check_socket: a numeric host addrmap knows no name for is named as the address */
    if (PySet_Contains(blocked_numeric, host) != 1 || PyDict_GetItemWithError(blocked_names, host) != NULL ||
        PyErr_Occurred())
        goto done;
    sinks = Py_XNewRef(slot(state, off_sinks));
    if (sinks == NULL || !no_warning_wanted(sinks))
        goto done;
    blocks = Py_XNewRef(slot(state, off_blocks));
    if (blocks == NULL || !PyDict_CheckExact(blocks))
        goto done;
    key = PyTuple_Pack(5, operation, decision, Py_None, port, host); /* refusal._cached_parts's key */
    if (key == NULL)
        goto done;
    parts = Py_XNewRef(PyDict_GetItemWithError(blocks, key));
    if (parts == NULL || !PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 3 ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(parts, 1)) || !PyUnicode_CheckExact(PyTuple_GET_ITEM(parts, 2)))
        goto done;
    if (!find_caller_fast(&caller))
        goto done;
    message = PyUnicode_FromFormat("%U%U%U", PyTuple_GET_ITEM(parts, 1), caller == Py_None ? s_unknown : caller,
                                   PyTuple_GET_ITEM(parts, 2));
    if (message == NULL)
        goto done;
    error = blocked_error(message, port, host, decision, operation, caller, PyTuple_GET_ITEM(parts, 0));
    if (error == NULL)
        goto done;
    PyErr_SetObject(blocked_class, error);
    fast_refusals++;
    result = 1;
done:
    if (!result && PyErr_Occurred())
        PyErr_Clear();
    Py_XDECREF(state);
    Py_XDECREF(addrs);
    Py_XDECREF(blocks);
    Py_XDECREF(sinks);
    Py_XDECREF(decision);
    Py_XDECREF(key);
    Py_XDECREF(parts);
    Py_XDECREF(caller);
    Py_XDECREF(message);
    Py_XDECREF(error);
    return result;
}

/* --- end of blocked refusals ------------------------------------------------------------------------------- */

/* --- the hook ------------------------------------------------------------------------------------------- */

/* ``socket.__new__`` (sock, family, type, proto): 1 when floor._on_new has nothing to do, that is when
 * rawsockets.is_raw(family, type, proto) is false: not AF_PACKET, and either not AF_INET/AF_INET6, or a type that
 * is neither SOCK_RAW nor SOCK_PACKET, not an ICMP/ICMPv6 datagram (ping) socket and not SCTP. Anything else, or another
 * shape, goes to the handler. */
static int
not_raw(PyObject *args)
{
    if (!PyTuple_CheckExact(args) || PyTuple_GET_SIZE(args) != 4)
        return 0;
    PyObject *family = PyTuple_GET_ITEM(args, 1), *type = PyTuple_GET_ITEM(args, 2), *proto = PyTuple_GET_ITEM(args, 3);
    if (!PyLong_CheckExact(family) || !PyLong_CheckExact(type) || !PyLong_CheckExact(proto))
        return 0;
    long f = PyLong_AsLong(family), t = PyLong_AsLong(type), p = PyLong_AsLong(proto);
    if ((f == -1 || t == -1 || p == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (f == AF_PACKET_FAMILY)
        return 0;
    if (f != AF_INET && f != AF_INET6)
        return 1;
    long kind = t & 0xF;
    if (kind == SOCK_RAW || kind == SOCK_PACKET_TYPE)
        return 0;
    if (kind == SOCK_DGRAM && (p == 1 || p == 58)) /* IPPROTO_ICMP, IPPROTO_ICMPV6 */
        return 0;
    if (p == 132) /* IPPROTO_SCTP: multi-homed associations */
        return 0;
    return 1;
}

static int
audit_hook(const char *event, PyObject *args, void *userdata)
{
    (void)userdata;
    if (event[0] == '\0' || !pair_bit((unsigned char)event[0], (unsigned char)event[1]))
        return 0;
    int index = -1;
    size_t length = strlen(event);
    for (int i = 0; i < n_events; i++) {
        if (event_lengths[i] == length && memcmp(event, event_names[i], length) == 0) {
            index = i;
            break;
        }
    }
    if (index < 0)
        return 0;
    if (PyInterpreterState_Get() != hook_interp)
        return 0; /* another interpreter: its own hooks, as with a Python hook (sys.addaudithook is per interpreter) */
    PyObject *handler = PyDict_GetItemWithError(handlers, event_keys[index]); /* borrowed */
    if (handler == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(handler);
    if (fast_ready) {
        int kind = event_kind[index];
        if (kind == KIND_NEW && handler == on_new && not_raw(args)) {
            Py_DECREF(handler);
            return 0;
        }
        if ((kind == KIND_CONNECT && handler == on_connect) || (kind == KIND_SENDTO && handler == on_sendto)) {
            if (answer_fast(args, kind == KIND_CONNECT)) {
                fast_answers++;
                Py_DECREF(handler);
                return 0;
            }
            if (refuse_fast(args, kind == KIND_CONNECT)) { /* a cached blocked decision: refused in C */
                Py_DECREF(handler);
                return -1;
            }
        }
    }
    PyObject *result = PyObject_CallOneArg(handler, args);
    Py_DECREF(handler);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* --- the socket wrappers' fast path ------------------------------------------------------------------------
 *
 * sockguard.wrappers' ``connect`` and ``sendto`` (the Python functions, kept as the slow path) first make the
 * address what C will get (sockguard.canonical) unless it already is: a plain ``(str, int)`` pair whose host is
 * a known canonical IP literal (``canonical.numeric_hosts``). A Wrapper does that test in C and calls the
 * original method itself; anything else is handed, unchanged, to the Python wrapper. After a connect it tells
 * the breaker what happened exactly as the Python wrapper does (``_connect_outcome`` on an OSError that is not
 * EgressBlocked; ``after_connect`` on success when the breaker watches destinations). It is a method descriptor,
 * so ``sock.connect(address)`` calls it with ``sock`` first, without a bound method. */

enum { WRAP_CONNECT = 1, WRAP_SENDTO = 2 };

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
    int kind;
    PyObject *original;   /* _socket.socket.connect / .sendto */
    PyObject *slow;       /* the Python wrapper */
    PyObject *numeric;    /* canonical.numeric_hosts (a set, emptied in place, never replaced) */
    PyObject *active;     /* sockguard.active.__dict__ (connect) */
    PyObject *outcome;    /* wrappers._connect_outcome (connect) */
    PyObject *blocked;    /* errors.EgressBlocked (connect) */
} Wrapper;

static PyObject *s_watched, *s_after_connect;
static AttrCache cache_state_breaker, cache_watched;

static int
canonical_pair(Wrapper *self, PyObject *address)
{
    if (!PyTuple_CheckExact(address) || PyTuple_GET_SIZE(address) != 2)
        return 0;
    PyObject *host = PyTuple_GET_ITEM(address, 0);
    if (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(PyTuple_GET_ITEM(address, 1)))
        return 0;
    int found = PySet_Contains(self->numeric, host); /* exact str: no Python code runs */
    if (found < 0)
        PyErr_Clear();
    return found == 1;
}

/* The Python wrapper's ``except OSError as exc: _connect_outcome(self, address, exc); raise`` (EgressBlocked
 * re-raised first), and on success ``breaker.after_connect(self, address, 0)`` when ``breaker.watched``. */
static PyObject *
connect_done(Wrapper *self, PyObject *sock, PyObject *address, PyObject *result)
{
    if (result == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (type == NULL || PyErr_GivenExceptionMatches(type, self->blocked) ||
            !PyErr_GivenExceptionMatches(type, PyExc_OSError)) {
            PyErr_Restore(type, value, traceback);
            return NULL;
        }
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL)
            PyException_SetTraceback(value, traceback);
        PyObject *args[3] = {sock, address, value};
        PyObject *done = PyObject_Vectorcall(self->outcome, args, 3, NULL);
        if (done == NULL) {
            /* As in Python: the outcome's exception propagates, with the connect's as its context. */
            PyObject *type2, *value2, *traceback2;
            PyErr_Fetch(&type2, &value2, &traceback2);
            PyErr_NormalizeException(&type2, &value2, &traceback2);
            PyException_SetContext(value2, value); /* steals value */
            value = NULL;
            PyErr_Restore(type2, value2, traceback2);
            Py_XDECREF(type);
            Py_XDECREF(traceback);
            return NULL;
        }
        Py_DECREF(done);
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    PyObject *state = PyDict_GetItemWithError(self->active, s_in_force); /* borrowed */
    if (state == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(result);
            return NULL;
        }
        return result;
    }
    if (state == Py_None)
        return result;
    Py_INCREF(state);
    PyObject *breaker = read_attr(state, s_breaker, &cache_state_breaker);
    Py_DECREF(state);
    if (breaker == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    if (breaker == Py_None) {
        Py_DECREF(breaker);
        return result;
    }
    PyObject *watched = read_attr(breaker, s_watched, &cache_watched);
    int busy = watched == NULL ? -1 : PyObject_IsTrue(watched);
    Py_XDECREF(watched);
    if (busy == 1) {
        PyObject *zero = PyLong_FromLong(0);
        PyObject *done = zero == NULL ? NULL : PyObject_CallMethodObjArgs(breaker, s_after_connect, sock, address, zero, NULL);
        Py_XDECREF(zero);
        Py_XDECREF(done);
        busy = done == NULL ? -1 : 0;
    }
    Py_DECREF(breaker);
    if (busy < 0) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

static PyObject *
wrapper_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Wrapper *self = (Wrapper *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) {
        if (self->kind == WRAP_CONNECT && nargs == 2 && canonical_pair(self, args[1])) {
            PyObject *sock = args[0], *address = args[1];
            Py_INCREF(sock);
            Py_INCREF(address);
            PyObject *result = connect_done(self, sock, address, PyObject_Vectorcall(self->original, args, 2, NULL));
            Py_DECREF(sock);
            Py_DECREF(address);
            return result;
        }
        if (self->kind == WRAP_SENDTO && (nargs == 3 || nargs == 4) && canonical_pair(self, args[nargs - 1]))
            return PyObject_Vectorcall(self->original, args, nargs, NULL);
    }
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static PyObject *
wrapper_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static int
wrapper_traverse(Wrapper *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->original);
    Py_VISIT(self->slow);
    Py_VISIT(self->numeric);
    Py_VISIT(self->active);
    Py_VISIT(self->outcome);
    Py_VISIT(self->blocked);
    return 0;
}

static int
wrapper_clear(Wrapper *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->original);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->numeric);
    Py_CLEAR(self->active);
    Py_CLEAR(self->outcome);
    Py_CLEAR(self->blocked);
    return 0;
}

static void
wrapper_dealloc(Wrapper *self)
{
    PyObject_GC_UnTrack(self);
    wrapper_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
wrapper_repr(Wrapper *self)
{
    return PyUnicode_FromFormat("<sockguard accelerated wrapper of %R>", self->slow);
}

static PyMemberDef wrapper_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(Wrapper, dict), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Wrapper, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef wrapper_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WrapperType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sockguard._accel.Wrapper",
    .tp_basicsize = sizeof(Wrapper),
    .tp_dealloc = (destructor)wrapper_dealloc,
    .tp_vectorcall_offset = offsetof(Wrapper, vectorcall),
    .tp_repr = (reprfunc)wrapper_repr,
    .tp_call = PyVectorcall_Call,
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "A socket method's wrapper whose canonical-address fast path runs in C (native/sg_accel.c).",
    .tp_traverse = (traverseproc)wrapper_traverse,
    .tp_clear = (inquiry)wrapper_clear,
    .tp_members = wrapper_members,
    .tp_getset = wrapper_getset,
    .tp_descr_get = wrapper_get,
    .tp_dictoffset = offsetof(Wrapper, dict),
};

/* --- module functions ----------------------------------------------------------------------------------- */

PyDoc_STRVAR(install_doc,
             "install(handlers, events)\n--\n\n"
             "Add the C audit hook, once per process: ``events`` (str) are dispatched to ``handlers[event]``\n"
             "(looked up at each event; a missing key is a no-op). A second call raises RuntimeError.");

static PyObject *
accel_install(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "install(handlers, events) takes 2 arguments");
        return NULL;
    }
    if (handlers != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the sockguard audit hook is installed already");
        return NULL;
    }
    if (!PyDict_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "handlers must be a dict");
        return NULL;
    }
    PyObject *events = PySequence_Fast(args[1], "events must be a sequence of str");
    if (events == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(events);
    if (count > MAX_EVENTS) {
        Py_DECREF(events);
        PyErr_SetString(PyExc_ValueError, "too many events");
        return NULL;
    }
    char *names[MAX_EVENTS] = {0};
    PyObject *keys[MAX_EVENTS] = {0};
    int kinds[MAX_EVENTS] = {0};
    Py_ssize_t i;
    for (i = 0; i < count; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(events, i);
        if (!PyUnicode_CheckExact(name)) {
            PyErr_SetString(PyExc_TypeError, "event names must be str");
            goto fail;
        }
        Py_ssize_t length;
        const char *text = PyUnicode_AsUTF8AndSize(name, &length);
        if (text == NULL)
            goto fail;
        if (length < 2 || (Py_ssize_t)strlen(text) != length) {
            PyErr_SetString(PyExc_ValueError, "event names must be at least 2 characters, no NUL");
            goto fail;
        }
        names[i] = strdup(text);
        if (names[i] == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        keys[i] = PyUnicode_FromStringAndSize(text, length);
        if (keys[i] == NULL)
            goto fail;
        PyUnicode_InternInPlace(&keys[i]);
        kinds[i] = strcmp(text, "socket.connect") == 0   ? KIND_CONNECT
                   : strcmp(text, "socket.sendto") == 0  ? KIND_SENDTO
                   : strcmp(text, "socket.__new__") == 0 ? KIND_NEW
                                                         : KIND_OTHER;
    }
    /* Everything the hook reads is in place before it is added (it may run at once: sys.addaudithook event). */
    for (i = 0; i < count; i++) {
        event_names[i] = names[i];
        event_lengths[i] = strlen(names[i]);
        event_keys[i] = keys[i];
        event_kind[i] = kinds[i];
        unsigned int bit = ((unsigned int)(unsigned char)names[i][0] << 8) | (unsigned char)names[i][1];
        first_two[bit >> 3] |= (unsigned char)(1u << (bit & 7));
    }
    n_events = (int)count;
    Py_DECREF(events);
    Py_INCREF(args[0]);
    handlers = args[0];
    hook_interp = PyInterpreterState_Get();
    if (PySys_AddAuditHook(audit_hook, NULL) < 0) {
        /* Refused by an existing hook (it raised on sys.addaudithook): not installed, the caller says so. */
        n_events = 0;
        Py_CLEAR(handlers);
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    for (Py_ssize_t j = 0; j < count; j++) {
        free(names[j]);
        Py_XDECREF(keys[j]);
    }
    Py_DECREF(events);
    return NULL;
}

PyDoc_STRVAR(fast_path_doc,
             "fast_path(active, State, Decision, on_connect, on_sendto, socket_type, allowed_level, on_new)\n--\n\n"
             "Let the hook answer an allowed, cached connect/sendto itself (see the module's source). Once per\n"
             "process; a second call raises RuntimeError.");

static PyObject *
accel_fast_path(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "fast_path() takes 8 arguments");
        return NULL;
    }
    if (fast_ready) {
        PyErr_SetString(PyExc_RuntimeError, "the fast path is set up already");
        return NULL;
    }
    PyObject *active = args[0];
    if (!PyModule_Check(active) || !PyType_Check(args[1]) || !PyType_Check(args[2]) || !PyType_Check(args[5]) ||
        !PyLong_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError, "fast_path(): arguments of the wrong type");
        return NULL;
    }
    PyObject *descr = PyDict_GetItemString(((PyTypeObject *)args[5])->tp_dict, "family"); /* borrowed */
    if (descr == NULL || Py_TYPE(descr)->tp_descr_get == NULL) {
        PyErr_SetString(PyExc_TypeError, "fast_path(): the socket type has no family getter");
        return NULL;
    }
    static const char *names[] = {"in_force", "breaker", "healthy", "addrs",    "sinks",  "_file",
                                  "_levels",  "_logger", "disabled", "logging", "modules"};
    PyObject **slots[] = {&s_in_force, &s_breaker, &s_healthy, &s_addrs,   &s_sinks,  &s_file,
                          &s_levels,   &s_logger,  &s_disabled, &s_logging, &s_modules};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*slots[i] == NULL) {
            *slots[i] = PyUnicode_InternFromString(names[i]);
            if (*slots[i] == NULL)
                return NULL;
        }
    }
    PyTypeObject *state = (PyTypeObject *)args[1];
    if (slot_offset(state, "breaker", &off_breaker) < 0 || slot_offset(state, "addrs", &off_addrs) < 0 ||
        slot_offset(state, "sinks", &off_sinks) < 0)
        return NULL;
    PyObject *sys = PyImport_ImportModule("sys");
    if (sys == NULL)
        return NULL;
    sys_dict = Py_NewRef(PyModule_GetDict(sys));
    Py_DECREF(sys);
    active_dict = PyModule_GetDict(active);
    Py_INCREF(active_dict);
    state_type = (PyTypeObject *)Py_NewRef(args[1]);
    decision_type = (PyTypeObject *)Py_NewRef(args[2]);
    on_connect = Py_NewRef(args[3]);
    on_sendto = Py_NewRef(args[4]);
    socket_type = (PyTypeObject *)Py_NewRef(args[5]);
    family_getter = Py_NewRef(descr);
    allowed_level = Py_NewRef(args[6]);
    on_new = Py_NewRef(args[7]);
    allowed_value = PyLong_AsLong(allowed_level);
    if (allowed_value == -1 && PyErr_Occurred())
        return NULL;
    if (s_level == NULL && (s_level = PyUnicode_InternFromString("level")) == NULL)
        return NULL;
    fast_ready = 1;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(wrap_doc,
             "wrap(kind, original, slow, numeric_hosts, active, outcome, EgressBlocked)\n--\n\n"
             "A method wrapping ``original`` (kind 'connect' or 'sendto') whose canonical-address fast path runs in\n"
             "C; every other call goes to ``slow``, the Python wrapper. ``__name__`` is ``slow``'s.");

static PyObject *
accel_wrap(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "wrap() takes 7 arguments");
        return NULL;
    }
    int kind;
    if (PyUnicode_Check(args[0]) && PyUnicode_CompareWithASCIIString(args[0], "connect") == 0)
        kind = WRAP_CONNECT;
    else if (PyUnicode_Check(args[0]) && PyUnicode_CompareWithASCIIString(args[0], "sendto") == 0)
        kind = WRAP_SENDTO;
    else {
        PyErr_SetString(PyExc_ValueError, "wrap(): kind must be 'connect' or 'sendto'");
        return NULL;
    }
    if (!PyAnySet_CheckExact(args[3]) || !PyModule_Check(args[4]) || !PyExceptionClass_Check(args[6]) ||
        !PyCallable_Check(args[1]) || !PyCallable_Check(args[2]) || !PyCallable_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "wrap(): arguments of the wrong type");
        return NULL;
    }
    if (s_watched == NULL) {
        s_watched = PyUnicode_InternFromString("watched");
        s_after_connect = PyUnicode_InternFromString("after_connect");
        if (s_in_force == NULL)
            s_in_force = PyUnicode_InternFromString("in_force");
        if (s_breaker == NULL)
            s_breaker = PyUnicode_InternFromString("breaker");
        if (s_watched == NULL || s_after_connect == NULL || s_in_force == NULL || s_breaker == NULL)
            return NULL;
    }
    Wrapper *self = PyObject_GC_New(Wrapper, &WrapperType);
    if (self == NULL)
        return NULL;
    self->vectorcall = wrapper_vectorcall;
    self->dict = NULL;
    self->kind = kind;
    self->original = Py_NewRef(args[1]);
    self->slow = Py_NewRef(args[2]);
    self->numeric = Py_NewRef(args[3]);
    self->active = Py_NewRef(PyModule_GetDict(args[4]));
    self->outcome = Py_NewRef(args[5]);
    self->blocked = Py_NewRef(args[6]);
    PyObject_GC_Track(self);
    PyObject *name = PyObject_GetAttrString(args[2], "__name__");
    if (name == NULL || PyObject_SetAttrString((PyObject *)self, "__name__", name) < 0) {
        Py_XDECREF(name);
        Py_DECREF(self);
        return NULL;
    }
    Py_DECREF(name);
    return (PyObject *)self;
}

/* --- blocked refusals: set-up (see "blocked refusals" above) ------------------------------------------------- */

PyDoc_STRVAR(blocked_path_doc,
             "blocked_path(kinds, names, numeric_hosts, EgressBlocked)\n--\n\n"
             "Let the hook refuse a connect/sendto whose cached decision is blocked itself, when refusal.refuse()\n"
             "would do nothing but raise (see the module's source). After fast_path(); once per process.");

static PyObject *
accel_blocked_path(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "blocked_path() takes 4 arguments");
        return NULL;
    }
    if (blocked_ready || !fast_ready) {
        PyErr_SetString(PyExc_RuntimeError, blocked_ready ? "the blocked path is set up already"
                                                          : "blocked_path() needs fast_path() first");
        return NULL;
    }
    if (!PyDict_CheckExact(args[0]) || !PyDict_CheckExact(args[1]) || !PyAnySet_CheckExact(args[2]) ||
        !PyType_Check(args[3]) || !PyType_IsSubtype((PyTypeObject *)args[3], (PyTypeObject *)PyExc_OSError)) {
        PyErr_SetString(PyExc_TypeError, "blocked_path(): arguments of the wrong type");
        return NULL;
    }
    static const char *names[] = {"connect", "send",    "enforce",   "breaker-open",
                                  "unknown code", "observer", "host", "port", "address", "reason",
                                  "rule",    "operation", "caller", "suggestion"};
    PyObject **slots[] = {&s_connect_op, &s_send_op,   &s_enforce,   &s_breaker_open,
                          &s_unknown,    &s_observer,  &s_a_host,    &s_a_port,       &s_a_address,   &s_a_reason,
                          &s_a_rule,     &s_a_operation, &s_a_caller, &s_a_suggestion};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*slots[i] == NULL && (*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    }
    if (s_warning_level == NULL && (s_warning_level = PyLong_FromLong(30)) == NULL)
        return NULL;
    if (slot_offset(state_type, "mode", &off_mode) < 0 || slot_offset(state_type, "resolver", &off_resolver) < 0 ||
        slot_offset(state_type, "translate", &off_translate) < 0 || slot_offset(state_type, "blocks", &off_blocks) < 0)
        return NULL;
    PyObject *code = PyObject_GetAttrString(args[3], "default_errno");
    if (code == NULL)
        return NULL;
    if (!PyLong_CheckExact(code)) {
        Py_DECREF(code);
        PyErr_SetString(PyExc_TypeError, "blocked_path(): EgressBlocked.default_errno is not an int");
        return NULL;
    }
    blocked_errno = code;
    blocked_kinds = Py_NewRef(args[0]);
    blocked_names = Py_NewRef(args[1]);
    blocked_numeric = Py_NewRef(args[2]);
    blocked_class = Py_NewRef(args[3]);
    blocked_ready = 1;
    Py_RETURN_NONE;
}

/* --- end of blocked refusals: set-up ----------------------------------------------------------------------- */

PyDoc_STRVAR(answers_doc,
             "answers(args, connect) -> bool\n--\n\n"
             "Whether the hook would answer this socket.connect (``connect`` true) or socket.sendto event itself,\n"
             "without the Python handler (the differential tests compare it with the handler). Changes nothing.");

static PyObject *
accel_answers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "answers(args, connect) takes 2 arguments");
        return NULL;
    }
    int connect = PyObject_IsTrue(args[1]);
    if (connect < 0)
        return NULL;
    if (!fast_ready)
        Py_RETURN_FALSE;
    return PyBool_FromLong(answer_fast(args[0], connect));
}

PyDoc_STRVAR(status_doc, "status() -> dict\n--\n\nWhether the hook is installed, the fast path ready, and how "
                         "many events it answered (tests).");

static PyObject *
accel_status(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return Py_BuildValue("{s:O,s:O,s:K,s:O,s:K}", "hook", handlers != NULL ? Py_True : Py_False, "fast_path",
                         fast_ready ? Py_True : Py_False, "fast_answers", fast_answers, "blocked_path",
                         blocked_ready ? Py_True : Py_False, "fast_refusals", fast_refusals);
}

/* === request events (issue 15): the caller search and the request line ====================================
 *
 * Two helpers of the logged path (sockguard/caller.py, sockguard/sinks.py), each with the Python code it stands in
 * for kept as the fallback and as the definition (differential tests: tests/test_accel_requests.py):
 *
 *  - find_caller(depth=2): caller.find_caller, walked by caller_walk above; a frame it cannot name is handed to
 *    caller._search (the Python walk), which decides from that very frame.
 *  - request_line(us, head, duration_us, tail): the bytes of a plain request event's JSON line,
 *    ``{"event":"request","ts":`` + ts + head + duration_ms + tail, with ts = repr(us / 1e6) and duration_ms =
 *    repr(duration_us / 1000) written from the integers (None when a value is outside the range where that
 *    shortcut is exact: the Python formatter writes it). head and tail are the cached, ASCII-only JSON text. */

PyDoc_STRVAR(caller_setup_doc,
             "caller_setup(kinds, search)\n--\n\n"
             "Give find_caller the module-kind dict and the Python walk it hands every unusual frame to.");

static PyObject *
accel_caller_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyDict_CheckExact(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "caller_setup(kinds, search): a dict and a callable");
        return NULL;
    }
    if (s_caller_name == NULL && (s_caller_name = PyUnicode_InternFromString("__name__")) == NULL)
        return NULL;
    if (s_caller_spec == NULL && (s_caller_spec = PyUnicode_InternFromString("__spec__")) == NULL)
        return NULL;
    if (s_caller_spec_name == NULL && (s_caller_spec_name = PyUnicode_InternFromString("name")) == NULL)
        return NULL;
    Py_XSETREF(caller_kinds, Py_NewRef(args[0]));
    Py_XSETREF(caller_search, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

PyDoc_STRVAR(find_caller_doc, "find_caller(depth=2)\n--\n\nsockguard.caller.find_caller, walked in C.");

static PyObject *
accel_find_caller(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    long depth = 2;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "find_caller(depth=2) takes at most 1 argument");
        return NULL;
    }
    if (nargs == 1) {
        depth = PyLong_AsLong(args[0]);
        if (depth == -1 && PyErr_Occurred())
            return NULL;
    }
    if (caller_kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "find_caller() before caller_setup()");
        return NULL;
    }
    return caller_at(depth);
}

/* repr(value / 10**scale) for 0 <= value, written from the integer: the digits before the point, a point, and the
 * scale digits after it without trailing zeros (at least one). ``out`` has room for 32 bytes. */
static size_t
decimal_text(char *out, unsigned long long value, int scale, unsigned long long unit)
{
    char digits[24];
    size_t n = 0, length = 0;
    unsigned long long whole = value / unit, fraction = value % unit;
    do {
        digits[n++] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole != 0);
    while (n > 0)
        out[length++] = digits[--n];
    out[length++] = '.';
    char frac[8];
    for (int i = scale - 1; i >= 0; i--) {
        frac[i] = (char)('0' + fraction % 10);
        fraction /= 10;
    }
    int keep = scale;
    while (keep > 1 && frac[keep - 1] == '0')
        keep--;
    memcpy(out + length, frac, (size_t)keep);
    return length + (size_t)keep;
}

PyDoc_STRVAR(request_line_doc,
             "request_line(us, head, duration_us, tail) -> bytes or None\n--\n\n"
             "A plain request event's JSON line (sinks.Sinks.write_request_ok), or None when a value is outside the\n"
             "range where the integer formatting equals repr of the float.");

/* The bytes of a plain request line (see request_line below): a new reference, Py_None (new) when a value is outside
 * the exact range, or NULL with an error. */
static PyObject *
request_line_bytes(long long us, PyObject *head, long long duration, PyObject *tail)
{
    /* ts: between 2001 and 2223 (sinks._ts_text's range); duration: below 10**12 ms, where the float's shortest
     * repr is its three decimals (and never an exponent). */
    if (us < 1000000000000000LL || us >= 8000000000000000LL || duration < 0 || duration >= 1000000000000000LL ||
        !PyUnicode_IS_ASCII(head) || !PyUnicode_IS_ASCII(tail))
        Py_RETURN_NONE;
    static const char start[] = "{\"event\":\"request\",\"ts\":";
    Py_ssize_t head_length = PyUnicode_GET_LENGTH(head), tail_length = PyUnicode_GET_LENGTH(tail);
    char ts[32], ms[32];
    size_t ts_length = decimal_text(ts, (unsigned long long)us, 6, 1000000ULL);
    size_t ms_length = decimal_text(ms, (unsigned long long)duration, 3, 1000ULL);
    Py_ssize_t total = (Py_ssize_t)(sizeof(start) - 1 + ts_length + ms_length) + head_length + tail_length;
    PyObject *line = PyBytes_FromStringAndSize(NULL, total);
    if (line == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(line);
    memcpy(out, start, sizeof(start) - 1);
    out += sizeof(start) - 1;
    memcpy(out, ts, ts_length);
    out += ts_length;
    memcpy(out, PyUnicode_DATA(head), (size_t)head_length);
    out += head_length;
    memcpy(out, ms, ms_length);
    out += ms_length;
    memcpy(out, PyUnicode_DATA(tail), (size_t)tail_length);
    return line;
}

static PyObject *
accel_request_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyLong_CheckExact(args[0]) || !PyUnicode_CheckExact(args[1]) || !PyLong_CheckExact(args[2]) ||
        !PyUnicode_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "request_line(us: int, head: str, duration_us: int, tail: str)");
        return NULL;
    }
    int overflow = 0;
    long long us = PyLong_AsLongLongAndOverflow(args[0], &overflow);
    if (overflow == 0 && us == -1 && PyErr_Occurred())
        return NULL;
    long long duration = overflow ? -1 : PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (overflow == 0 && duration == -1 && PyErr_Occurred())
        return NULL;
    if (overflow)
        Py_RETURN_NONE;
    return request_line_bytes(us, args[1], duration, args[3]);
}

/* === end of request events (issue 15) ====================================================================== */

/* --- request events: the record and the plain end ----------------------------------------------------------
 *
 * Two more stand-ins for Python of the logged path (sockguard/http/events.py), with the Python they replace kept as
 * the definition and as the fallback (differential tests: tests/test_accel_requests.py):
 *
 *  - request_new(state, level, fixed, depth): events.new_request -- a Request (the Python class, its slots filled
 *    here at the offsets its member descriptors give) with the caller found as find_caller(depth) would, then the
 *    wall clock, the monotonic clock and the correlation id, in that order, as Request.__init__ reads them.
 *  - request_end(record, status): the common case of events.end -- a response without redirect, hop 0, no sink but
 *    the JSON-lines file, the connection's rule and the line's text already cached by Python (events._last_rule,
 *    Sinks._last_request), the file's periodic check not due and its ``_write`` still os.write; the Sinks and the
 *    LogFile exactly those classes with the methods Python would call as defined (no subclass, no monkeypatch),
 *    the logger's ``level`` readable without running code, events' clocks time's own. Then the line is
 *    written here as LogFile.write would (the GIL released around write(2), EINTR retried with the signal
 *    handlers run, a failure or a short write handed to LogFile._failed / _torn) and True is returned. Anything
 *    else returns False having done nothing, and Python does all of it. No code of the application runs before the
 *    write but in file_alone (a colliding key's __eq__ in sys.modules), and from there on only references owned
 *    here are used. */

static int request_ready;
static PyTypeObject *request_type;   /* sockguard.http.events.Request */
static PyTypeObject *request_state;  /* sockguard.active.State */
static PyObject *request_cid;        /* sockguard.events.correlation_id (a ContextVar) */
static PyObject *request_last_rule;  /* events._last_rule: a list of one (State, address, port, rule) */
static PyObject *request_pid;        /* sockguard.events.pid: a list of one int, updated after a fork */
static PyObject *request_writer;     /* sockguard.logfile.__dict__: its ``_write`` must still be os.write */
static PyObject *request_os_write;   /* os.write */
static PyObject *request_sys;        /* sys.__dict__: sys.modules is read from it, as Python reads it */
static PyTypeObject *request_sinks;  /* sockguard.sinks.Sinks: a subclass may write its own way */
static PyTypeObject *request_logfile; /* sockguard.logfile.LogFile: likewise */
/* The methods Python would call that request_end stands in for, as the classes define them: a subclass or a
 * monkeypatched method (a test's, an application's) is Python's to run. Checked once per version tag. */
#define SINKS_METHODS 3
static PyObject *sinks_names[SINKS_METHODS], *sinks_methods[SINKS_METHODS], *logfile_name, *logfile_method;
static unsigned int sinks_tag, logfile_tag;
static PyTypeObject *level_type; /* a logger class whose ``level`` is read with no code run (compared only) */
static unsigned int level_tag;
/* The clocks Request.__init__ and events.end call are the events module's ``_time_ns`` and ``_perf_counter_ns``: read
 * here with clock_gettime only while they are still time.time_ns and time.perf_counter_ns (a test's frozen clock --
 * freezegun replaces module attributes -- is Python's to call: request_new hands the call to events._new_request,
 * request_end declines). */
static PyObject *request_events;           /* sockguard.http.events.__dict__ */
static PyObject *request_python_new;       /* events._new_request */
static PyObject *clock_wall, *clock_mono;  /* time.time_ns, time.perf_counter_ns (as events had them at set-up) */
static PyObject *s_q_time_ns, *s_q_perf_counter_ns;
static int clocks_real;                    /* both are the time module's own builtins */
/* Whether events' clocks were those two at the last look and its globals have not changed since (told by the
 * dict's version tag before 3.12, by a dict watcher from 3.12 on): the hot path's check is this flag. */
static int clocks_ok;
#if PY_VERSION_HEX >= 0x030C0000
static int
events_changed(PyDict_WatchEvent event, PyObject *dict, PyObject *key, PyObject *new_value)
{
    (void)event, (void)dict, (void)key, (void)new_value;
    clocks_ok = 0; /* (called before the change: the next request looks again) */
    return 0;
}
#else
static uint64_t events_version;
#endif

/* events' _time_ns and _perf_counter_ns looked up again: 1 if they are still the time module's builtins. */
static int
clocks_recheck(void)
{
    if (!clocks_real)
        return 0;
    PyObject *wall = PyDict_GetItemWithError(request_events, s_q_time_ns);
    PyObject *mono = PyDict_GetItemWithError(request_events, s_q_perf_counter_ns);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    events_version = ((PyDictObject *)request_events)->ma_version_tag;
#endif
    clocks_ok = wall == clock_wall && mono == clock_mono;
    return clocks_ok;
}

static inline int
clocks_unpatched(void)
{
#if PY_VERSION_HEX < 0x030C0000
    if (clocks_ok && ((PyDictObject *)request_events)->ma_version_tag == events_version)
        return 1;
#else
    if (clocks_ok)
        return 1;
#endif
    return clocks_recheck();
}
static Py_ssize_t off_q_us, off_q_start, off_q_state, off_q_level, off_q_fixed, off_q_caller, off_q_cid, off_q_hop,
    off_q_previous, off_q_outer, off_q_peer, off_q_sinks;
static PyObject *s_q_observer, *s_q_logger, *s_q_level, *s_q_file, *s_q_last_request, *s_q_checked, *s_q_due,
    *s_q_fd, *s_q_write, *s_q_failed, *s_q_torn, *s_q_logging, *s_q_modules;
static AttrCache qcache_observer, qcache_logger, qcache_level, qcache_file, qcache_last_request, qcache_checked,
    qcache_due, qcache_fd;

/* Whether ``function`` is the time module's own builtin ``name`` (what clock_gettime stands in for). */
static int
time_builtin(PyObject *function, const char *name)
{
    if (!PyCFunction_Check(function) || strcmp(((PyCFunctionObject *)function)->m_ml->ml_name, name) != 0)
        return 0;
    PyObject *self = PyCFunction_GET_SELF(function);
    if (self == NULL || !PyModule_Check(self))
        return 0;
    const char *module = PyModule_GetName(self);
    if (module == NULL) {
        PyErr_Clear();
        return 0;
    }
    return strcmp(module, "time") == 0;
}

PyDoc_STRVAR(request_setup_doc,
             "request_setup(Request, State, correlation_id, last_rule, pid, logfile_globals, os_write, Sinks,\n"
             "              LogFile, events_globals, new_request)\n--\n\n"
             "Give request_new and request_end the classes and live objects they read (once).");

static PyObject *
accel_request_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (request_ready) {
        PyErr_SetString(PyExc_RuntimeError, "request_setup(): set up already");
        return NULL;
    }
    if (nargs != 11 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyList_CheckExact(args[3]) ||
        !PyList_CheckExact(args[4]) || !PyDict_CheckExact(args[5]) || !PyCallable_Check(args[6]) ||
        !PyType_Check(args[7]) || !PyType_Check(args[8]) || !PyDict_CheckExact(args[9]) ||
        !PyCallable_Check(args[10])) {
        PyErr_SetString(PyExc_TypeError, "request_setup(): arguments of the wrong type");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0], *state = (PyTypeObject *)args[1];
    if (type->tp_alloc != PyType_GenericAlloc || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
        type->tp_dictoffset != 0 || slot_offset(type, "us", &off_q_us) < 0 ||
        slot_offset(type, "start", &off_q_start) < 0 || slot_offset(type, "state", &off_q_state) < 0 ||
        slot_offset(type, "level", &off_q_level) < 0 || slot_offset(type, "fixed", &off_q_fixed) < 0 ||
        slot_offset(type, "caller", &off_q_caller) < 0 || slot_offset(type, "cid", &off_q_cid) < 0 ||
        slot_offset(type, "hop", &off_q_hop) < 0 || slot_offset(type, "previous", &off_q_previous) < 0 ||
        slot_offset(type, "outer", &off_q_outer) < 0 || slot_offset(type, "peer", &off_q_peer) < 0 ||
        slot_offset(state, "sinks", &off_q_sinks) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "request_setup(): Request is not a plain class with __slots__");
        return NULL;
    }
    static const char *names[] = {"observer", "_logger", "level", "_file", "_last_request", "_checked", "_due",
                                  "_fd", "_write", "_failed", "_torn", "logging", "modules", "_time_ns",
                                  "_perf_counter_ns"};
    PyObject **slots[] = {&s_q_observer, &s_q_logger, &s_q_level, &s_q_file, &s_q_last_request, &s_q_checked,
                          &s_q_due,      &s_q_fd,     &s_q_write, &s_q_failed, &s_q_torn, &s_q_logging,
                          &s_q_modules,  &s_q_time_ns, &s_q_perf_counter_ns};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*slots[i] == NULL && (*slots[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    }
    static const char *methods[] = {"beyond_file", "_shown", "write_request_ok"};
    for (int i = 0; i < SINKS_METHODS; i++) {
        if (sinks_names[i] == NULL && (sinks_names[i] = PyUnicode_InternFromString(methods[i])) == NULL)
            return NULL;
        PyObject *method = PyDict_GetItemWithError(((PyTypeObject *)args[7])->tp_dict, sinks_names[i]);
        if (method == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "request_setup(): Sinks.%s is not defined", methods[i]);
            return NULL;
        }
        sinks_methods[i] = Py_NewRef(method);
    }
    if (logfile_name == NULL && (logfile_name = PyUnicode_InternFromString("write")) == NULL)
        return NULL;
    logfile_method = PyDict_GetItemWithError(((PyTypeObject *)args[8])->tp_dict, logfile_name);
    if (logfile_method == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "request_setup(): LogFile.write is not defined");
        return NULL;
    }
    Py_INCREF(logfile_method);
    PyObject *sys = PyImport_ImportModule("sys");
    if (sys == NULL)
        return NULL;
    request_sys = Py_NewRef(PyModule_GetDict(sys));
    clock_wall = PyDict_GetItemWithError(args[9], s_q_time_ns);
    clock_mono = PyDict_GetItemWithError(args[9], s_q_perf_counter_ns);
    if (clock_wall == NULL || clock_mono == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "request_setup(): events has no _time_ns or _perf_counter_ns");
        return NULL;
    }
    Py_INCREF(clock_wall);
    Py_INCREF(clock_mono);
    clocks_real = time_builtin(clock_wall, "time_ns") && time_builtin(clock_mono, "perf_counter_ns");
#if PY_VERSION_HEX >= 0x030C0000
    int watcher = PyDict_AddWatcher(events_changed);
    if (watcher < 0 || PyDict_Watch(watcher, args[9]) < 0)
        return NULL;
#endif
    request_events = Py_NewRef(args[9]);
    request_python_new = Py_NewRef(args[10]);
    request_sinks = (PyTypeObject *)Py_NewRef(args[7]);
    request_logfile = (PyTypeObject *)Py_NewRef(args[8]);
    Py_DECREF(sys);
    request_type = (PyTypeObject *)Py_NewRef(args[0]);
    request_state = (PyTypeObject *)Py_NewRef(args[1]);
    request_cid = Py_NewRef(args[2]);
    request_last_rule = Py_NewRef(args[3]);
    request_pid = Py_NewRef(args[4]);
    request_writer = Py_NewRef(args[5]);
    request_os_write = Py_NewRef(args[6]);
    request_ready = 1;
    Py_RETURN_NONE;
}

static long long
clock_ns(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static inline void
set_slot(PyObject *object, Py_ssize_t offset, PyObject *value) /* steals value */
{
    *(PyObject **)((char *)object + offset) = value;
}

PyDoc_STRVAR(request_new_doc, "request_new(state, level, fixed, depth)\n--\n\nsockguard.http.events.new_request.");

static PyObject *
accel_request_new(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (!request_ready || caller_kinds == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "request_new() before request_setup() and caller_setup()");
        return NULL;
    }
    if (nargs != 4 || !PyLong_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "request_new(state, level, fixed, depth: int)");
        return NULL;
    }
    if (!clocks_unpatched()) {
        /* (no frame in between: _new_request's caller search starts at the same frame) */
        return PyObject_Vectorcall(request_python_new, args, (size_t)nargs, NULL);
    }
    long depth = PyLong_AsLong(args[3]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    PyObject *caller = caller_at(depth);
    if (caller == NULL)
        return NULL;
    long long us = clock_ns(CLOCK_REALTIME) / 1000, start = clock_ns(CLOCK_MONOTONIC);
    PyObject *record = request_type->tp_alloc(request_type, 0);
    if (record == NULL) {
        Py_DECREF(caller);
        return NULL;
    }
    set_slot(record, off_q_caller, caller);
    PyObject *us_value = PyLong_FromLongLong(us), *start_value = PyLong_FromLongLong(start), *cid = NULL;
    if (us_value != NULL)
        set_slot(record, off_q_us, us_value);
    if (start_value != NULL)
        set_slot(record, off_q_start, start_value);
    if (us_value == NULL || start_value == NULL || PyContextVar_Get(request_cid, NULL, &cid) < 0) {
        Py_DECREF(record);
        return NULL;
    }
    if (cid == NULL) { /* (correlation_id has a default: not reached) */
        Py_DECREF(record);
        PyErr_SetString(PyExc_LookupError, "sockguard_correlation_id");
        return NULL;
    }
    set_slot(record, off_q_cid, cid);
    set_slot(record, off_q_state, Py_NewRef(args[0]));
    set_slot(record, off_q_level, Py_NewRef(args[1]));
    set_slot(record, off_q_fixed, Py_NewRef(args[2]));
    set_slot(record, off_q_hop, PyLong_FromLong(0)); /* a cached small int: cannot fail */
    set_slot(record, off_q_previous, Py_NewRef(Py_None));
    set_slot(record, off_q_outer, Py_NewRef(Py_False));
    set_slot(record, off_q_peer, Py_NewRef(Py_None));
    return record;
}

/* Whether ``type`` still has the methods ``names`` as they were at set-up (``originals``): 1 yes, 0 no. Answered
 * from ``*tag`` while the type's version tag is the one last checked (any change to the class, or to a base, sets
 * it to 0, "no valid tag", and the next one assigned is new): see methods_unchanged below. */
static int
methods_recheck(PyTypeObject *type, unsigned int *tag, PyObject **names, PyObject **originals, int count)
{
    for (int i = 0; i < count; i++) {
        if (_PyType_Lookup(type, names[i]) != originals[i]) /* borrowed; compared only */
            return 0;
    }
    if (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)
        *tag = type->tp_version_tag;
    return 1;
}

#define methods_unchanged(type, tag, names, originals, count)                                                       \
    (((type)->tp_version_tag == *(tag) && *(tag) != 0) || methods_recheck((type), (tag), (names), (originals), (count)))

/* Whether reading ``level`` from an object of this type runs no code (no class attribute of that name, no
 * __getattr__ / __getattribute__: the instance's dict answers): a logger class with a ``level`` property is
 * Python's to read, the number of times Python reads it. */
static int
level_is_plain(PyTypeObject *type)
{
    if (type == level_type && (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && type->tp_version_tag == level_tag)
        return 1;
    if (type->tp_getattro != PyObject_GenericGetAttr || _PyType_Lookup(type, s_q_level) != NULL ||
        !(type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return 0;
    level_type = type;
    level_tag = type->tp_version_tag;
    return 1;
}

/* Whether an event at ``level`` (an exact int) reaches nothing but the JSON-lines file: Sinks.beyond_file is
 * False, read from the same objects. 1 yes, 0 it may reach more or this cannot tell. Never raises. */
static int
file_alone(PyObject *sinks, long level)
{
    int result = 0;
    PyObject *observer = NULL, *logger = NULL, *logger_level = NULL;
    observer = read_attr(sinks, s_q_observer, &qcache_observer);
    if (observer != Py_None)
        goto done;
    PyObject *modules = PyDict_GetItemWithError(request_sys, s_q_modules); /* borrowed: sys.modules */
    if (modules == NULL || !PyDict_CheckExact(modules))
        goto done;
    if (PyDict_GetItemWithError(modules, s_q_logging) == NULL) {
        result = !PyErr_Occurred() && level < 30; /* logging never imported: the console writer, WARNING up */
        goto done;
    }
    if (level >= 20)
        goto done; /* Sinks._logger_wants decides */
    logger = read_attr(sinks, s_q_logger, &qcache_logger);
    if (logger == NULL || logger == Py_None || !level_is_plain(Py_TYPE(logger)))
        goto done;
    logger_level = read_attr(logger, s_q_level, &qcache_level);
    if (logger_level == NULL || !PyLong_CheckExact(logger_level))
        goto done;
    long value = PyLong_AsLong(logger_level);
    result = !(0 < value && value <= level) && !PyErr_Occurred();
done:
    Py_XDECREF(observer);
    Py_XDECREF(logger);
    Py_XDECREF(logger_level);
    if (PyErr_Occurred())
        PyErr_Clear();
    return result;
}

/* An exact int's value as a long long; 0 (and *ok = 0) for anything else. Never raises. */
static long long
exact_ll(PyObject *value, int *ok)
{
    if (value == NULL || !PyLong_CheckExact(value)) {
        *ok = 0;
        return 0;
    }
    int overflow = 0;
    long long result = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (result == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    return result;
}

/* LogFile.write's write(2) and what follows it, for a line it was about to write: 0, or -1 with an exception
 * (one a signal handler raised, or one from LogFile._failed / _torn). */
static int
write_line(PyObject *file, PyObject *fd_value, int fd, PyObject *line, long long now)
{
    const char *data = PyBytes_AS_STRING(line);
    Py_ssize_t length = PyBytes_GET_SIZE(line);
    ssize_t written;
    int error;
    for (;;) { /* os.write: retried on EINTR after the signal handlers ran */
        Py_BEGIN_ALLOW_THREADS
        written = write(fd, data, (size_t)length);
        error = errno;
        Py_END_ALLOW_THREADS
        if (written >= 0 || error != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) {
            if (!PyErr_ExceptionMatches(PyExc_OSError))
                return -1; /* the application's exception (KeyboardInterrupt, ...): it propagates */
            break;         /* an OSError from a handler: LogFile.write takes it as the write's failure */
        }
    }
    PyObject *result;
    if (written < 0) {
        if (!PyErr_Occurred()) {
            errno = error;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL)
            PyException_SetTraceback(value, traceback);
        Py_XDECREF(type);
        Py_XDECREF(traceback);
        if (value == NULL)
            return -1;
        PyObject *when = PyLong_FromLongLong(now);
        result = when == NULL ? NULL : PyObject_CallMethodObjArgs(file, s_q_failed, value, when, NULL);
        Py_XDECREF(when);
        Py_DECREF(value);
    }
    else if (written != length) {
        PyObject *count = PyLong_FromSsize_t(written), *when = PyLong_FromLongLong(now);
        result = count == NULL || when == NULL
                     ? NULL
                     : PyObject_CallMethodObjArgs(file, s_q_torn, fd_value, line, count, when, NULL);
        Py_XDECREF(count);
        Py_XDECREF(when);
    }
    else
        return 0;
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

PyDoc_STRVAR(request_end_doc,
             "request_end(record, status) -> bool\n--\n\n"
             "The common case of sockguard.http.events.end: True when it was done here, False when nothing was\n"
             "done and Python must do all of it.");

static PyObject *
accel_request_end(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "request_end(record, status) takes 2 arguments");
        return NULL;
    }
    PyObject *record = args[0], *status = args[1];
    if (!request_ready || Py_TYPE(record) != request_type || !PyLong_CheckExact(status) || !clocks_unpatched())
        Py_RETURN_FALSE; /* (a replaced clock: Python calls it) */
    long long now_ns = clock_ns(CLOCK_MONOTONIC);
    int ok = 1;
    long long started = exact_ll(slot(record, off_q_start), &ok), us = exact_ll(slot(record, off_q_us), &ok);
    long long code = exact_ll(status, &ok), hop = exact_ll(slot(record, off_q_hop), &ok);
    long long level = exact_ll(slot(record, off_q_level), &ok);
    /* (ts and duration where request_line_bytes writes them, and a start no monotonic clock gives: neither now -
     * start nor LogFile.write's ``now`` below can overflow) */
    if (!ok || hop != 0 || code == 301 || code == 302 || code == 303 || code == 307 || code == 308 ||
        level < 0 || level > 1000 || started < 0 || now_ns < started || us < 1000000000000000LL ||
        us >= 8000000000000000LL || (now_ns - started) / 1000 >= 1000000000000000LL)
        Py_RETURN_FALSE; /* (a redirect: Python keeps where it points) */
    long long duration = (now_ns - started) / 1000;
    PyObject *state = slot(record, off_q_state), *peer = slot(record, off_q_peer);
    if (state == NULL || Py_TYPE(state) != request_state || peer == NULL)
        Py_RETURN_FALSE;
    PyObject *sinks = slot(state, off_q_sinks);
    if (sinks == NULL || Py_TYPE(sinks) != request_sinks ||
        !methods_unchanged(request_sinks, &sinks_tag, sinks_names, sinks_methods, SINKS_METHODS))
        Py_RETURN_FALSE; /* (a Sinks subclass or a replaced method: Python calls it) */
    /* Everything is read and compared before file_alone, where code can run (a key of sys.modules that collides
     * with "logging" runs its __eq__): from there on only references owned here are used. Until then no code runs:
     * exact ints compared, slots of exact classes read, identities compared. */
    PyObject *address = Py_None, *rule = Py_None;
    if (peer != Py_None) {
        if (!PyTuple_CheckExact(peer) || PyTuple_GET_SIZE(peer) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(peer, 1)))
            Py_RETURN_FALSE;
        address = PyTuple_GET_ITEM(peer, 0);
        PyObject *last = PyList_GET_SIZE(request_last_rule) == 1 ? PyList_GET_ITEM(request_last_rule, 0) : NULL;
        if (last == NULL || !PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 4 ||
            PyTuple_GET_ITEM(last, 0) != state || PyTuple_GET_ITEM(last, 1) != address ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(last, 2)) ||
            PyObject_RichCompareBool(PyTuple_GET_ITEM(last, 2), PyTuple_GET_ITEM(peer, 1), Py_EQ) != 1) {
            PyErr_Clear();
            Py_RETURN_FALSE; /* Python looks the rule up (and keeps it for the next request) */
        }
        rule = PyTuple_GET_ITEM(last, 3);
    }
    PyObject *file = NULL, *last = NULL, *line = NULL, *checked = NULL, *due = NULL, *fd_value = NULL;
    PyObject *result = Py_False;
    long long now = 0;
    int fd = -1;
    file = read_attr(sinks, s_q_file, &qcache_file);
    if (file == NULL)
        goto done;
    if (file != Py_None) {
        if (Py_TYPE(file) != request_logfile ||
            !methods_unchanged(request_logfile, &logfile_tag, &logfile_name, &logfile_method, 1))
            goto done; /* (a LogFile subclass, a stand-in, or a replaced write: Python calls its write) */
        last = read_attr(sinks, s_q_last_request, &qcache_last_request);
        PyObject *pid = PyList_GET_SIZE(request_pid) == 1 ? PyList_GET_ITEM(request_pid, 0) : NULL;
        if (last == NULL || !PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 8 || pid == NULL ||
            PyTuple_GET_ITEM(last, 0) != slot(record, off_q_fixed) || PyTuple_GET_ITEM(last, 1) != address ||
            PyTuple_GET_ITEM(last, 2) != rule || PyTuple_GET_ITEM(last, 3) != status ||
            PyTuple_GET_ITEM(last, 4) != slot(record, off_q_caller) ||
            PyTuple_GET_ITEM(last, 5) != slot(record, off_q_cid) || PyTuple_GET_ITEM(last, 6) != pid)
            goto done;
        PyObject *parts = PyTuple_GET_ITEM(last, 7);
        if (!PyTuple_CheckExact(parts) || PyTuple_GET_SIZE(parts) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(parts, 0)) || !PyUnicode_CheckExact(PyTuple_GET_ITEM(parts, 1)))
            goto done;
        now = (us + duration) * 1000; /* LogFile.write's now, as write_request_ok gives it */
        checked = read_attr(file, s_q_checked, &qcache_checked);
        due = read_attr(file, s_q_due, &qcache_due);
        fd_value = read_attr(file, s_q_fd, &qcache_fd);
        ok = 1;
        long long checked_at = exact_ll(checked, &ok), due_at = exact_ll(due, &ok), number = exact_ll(fd_value, &ok);
        if (!ok || !(checked_at <= now && now < due_at) || number < 0 || number > INT_MAX)
            goto done; /* the periodic check is due, or the file is not open: Python */
        fd = (int)number;
        line = request_line_bytes(us, PyTuple_GET_ITEM(parts, 0), duration, PyTuple_GET_ITEM(parts, 1));
        if (line == NULL || line == Py_None)
            goto done;
    }
    /* Code may run from here on (see above). */
    Py_INCREF(sinks); /* (its State may lose it: file_alone reads it after sys.modules) */
    int alone = file_alone(sinks, (long)level);
    Py_DECREF(sinks);
    if (!alone)
        goto done;
    if (file == Py_None) {
        result = Py_True; /* Sinks.write_request_ok: no file, nothing to write */
        goto done;
    }
    if (PyDict_GetItemWithError(request_writer, s_q_write) != request_os_write)
        goto done; /* a test replaced logfile._write: Python */
    result = write_line(file, fd_value, fd, line, now) < 0 ? NULL : Py_True;
done:
    if (result == Py_False && PyErr_Occurred())
        PyErr_Clear();
    Py_XDECREF(line);
    Py_XDECREF(checked);
    Py_XDECREF(due);
    Py_XDECREF(fd_value);
    Py_XDECREF(last);
    Py_XDECREF(file);
    return Py_XNewRef(result);
}

static PyMethodDef methods[] = {
    {"install", (PyCFunction)(void (*)(void))accel_install, METH_FASTCALL, install_doc},
    {"fast_path", (PyCFunction)(void (*)(void))accel_fast_path, METH_FASTCALL, fast_path_doc},
    {"status", accel_status, METH_NOARGS, status_doc},
    {"answers", (PyCFunction)(void (*)(void))accel_answers, METH_FASTCALL, answers_doc},
    {"wrap", (PyCFunction)(void (*)(void))accel_wrap, METH_FASTCALL, wrap_doc},
    {"blocked_path", (PyCFunction)(void (*)(void))accel_blocked_path, METH_FASTCALL, blocked_path_doc},
    /* request events (issue 15) */
    {"caller_setup", (PyCFunction)(void (*)(void))accel_caller_setup, METH_FASTCALL, caller_setup_doc},
    {"find_caller", (PyCFunction)(void (*)(void))accel_find_caller, METH_FASTCALL, find_caller_doc},
    {"request_line", (PyCFunction)(void (*)(void))accel_request_line, METH_FASTCALL, request_line_doc},
    {"request_setup", (PyCFunction)(void (*)(void))accel_request_setup, METH_FASTCALL, request_setup_doc},
    {"request_new", (PyCFunction)(void (*)(void))accel_request_new, METH_FASTCALL, request_new_doc},
    {"request_end", (PyCFunction)(void (*)(void))accel_request_end, METH_FASTCALL, request_end_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "sockguard._accel",
    "The C accelerator of sockguard's audit-hook floor (native/sg_accel.c).",
    -1, /* one per process: the hook it adds is process-wide */
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__accel(void)
{
    if (PyType_Ready(&WrapperType) < 0)
        return NULL;
    return PyModule_Create(&module_def);
}
