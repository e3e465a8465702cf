"""Which application code asked for a connection: the first frame that is not plumbing.

Plumbing is sockguard itself, the standard library, the client libraries and the test runners listed below:
a decision is attributed to the code that called requests, not to urllib3, and to the test, not to pytest.
The walk stops where the work began: at the start of a thread, of an event-loop callback or task step, or of a
trio task. What lies beyond (the ``asyncio.run`` call site, ``threading``'s bootstrap) did not ask for this
connection, so when only plumbing is found the caller is ``None`` ("caller": null), never a guess. Walked only
when a sink wants the event.
"""

from __future__ import annotations

import os
import sys

from sockguard.accelerator import accelerator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Frames from these top-level packages are plumbing, not "the application".
_PLUMBING = frozenset(
    [
        "sockguard",
        "urllib3",
        "requests",
        "httpx",
        "httpcore",
        "h11",
        "h2",
        "hpack",
        "aiohttp",
        "aiohappyeyeballs",
        "outcome",
        "aiodns",
        "anyio",
        "sniffio",
        "trio",
        "asyncio",
        "gevent",
        "eventlet",
        "websockets",
        "dns",
        "socks",
        "certifi",
        "idna",
        "concurrent",
        "threading",
        "selectors",
        "socket",
        "ssl",
        "http",
        "urllib",
        "smtplib",
        "ftplib",
        "poplib",
        "imaplib",
        "nntplib",
        "xmlrpc",
        "multiprocessing",
        "wsgiref",
        "pytest",  # test runners: the test is the application, not the runner
        "_pytest",
        "pluggy",
        "xdist",
        "execnet",
        "unittest",
        "nose2",
        "click",  # a CLI framework calls the command; when the command is a library's (httpx's CLI), the caller
        # is whoever invoked it (a test through click.testing.CliRunner), not click.core:invoke
        "uvloop",
        "botocore",
        "boto3",
        "s3transfer",
        "grpc",
        "psycopg",
        "redis",
    ]
)
#: Where the work of a thread, task or callback begins: frames beyond one of these ran the loop or started the
#: thread; they did not ask for the connection (the walk stops, and finds no caller if none came before).
_BOUNDARIES = frozenset(
    [
        "threading",  # Thread._bootstrap_inner / run
        "concurrent.futures.thread",  # the executor's _worker
        "asyncio.events",  # Handle._run: every callback and task step
        "trio._core._run",  # trio's scheduler
        "gevent.greenlet",
    ]
)
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep
_STDLIB_NAMES = frozenset(sys.stdlib_module_names)


_PLUMBING_PREFIXES = ("pytest_",)  # pytest plugins (pytest_asyncio runs async tests, ...)


def _module_is_plumbing(name: str, module_globals: dict[str, Any]) -> bool:
    if name == "__main__":
        spec = module_globals.get("__spec__")
        spec_name = getattr(spec, "name", None)
        if isinstance(spec_name, str):  # python -m pytest: judged as the module it is (pytest.__main__)
            name = spec_name
        elif _is_console_script(module_globals.get("__file__")):
            return True  # the wrapper pip writes for an entry point (bin/pytest): a launcher, not the application
    top = name.partition(".")[0]
    if top in _PLUMBING or top.startswith(_PLUMBING_PREFIXES):
        return True
    filename = module_globals.get("__file__")
    if isinstance(filename, str):
        return filename.startswith(_STDLIB_DIR) and "-packages" not in filename
    return top in _STDLIB_NAMES or top.startswith("_frozen")  # frozen and built-in modules


def _is_console_script(filename: Any) -> bool:
    """Whether a ``__main__`` script lives where installers put entry-point wrappers (the interpreter's
    ``bin`` directory, and ``/usr/local/bin`` for a system Python, where Debian's pip puts them)."""
    if not isinstance(filename, str):
        return False
    directories = {os.path.dirname(sys.executable)}
    for prefix in (sys.prefix, sys.exec_prefix, sys.base_prefix):
        directories.add(os.path.join(prefix, "bin"))
    if sys.prefix == "/usr":
        directories.add("/usr/local/bin")
    return os.path.dirname(os.path.abspath(filename)) in directories


def _display_name(module_globals: dict[str, Any]) -> str:
    name = module_globals.get("__name__", "?")
    if name == "__main__":  # python -m app: name the module (app.__main__); a script stays __main__
        spec_name = getattr(module_globals.get("__spec__"), "name", None)
        if isinstance(spec_name, str):
            return spec_name
    return str(name)


def _frames() -> Any:
    """A generator that yields the frame that resumed it: while it runs, its own frame's ``f_back`` is its caller.
    ``sys._getframe`` raises an audit event (``sys._getframe``) through every hook in the process on each call;
    reading ``f_back`` raises none, and the generator's own frame is read once, here at import."""
    own = yield None
    while True:
        yield own.f_back


def _start_frames() -> Any:
    """A new frame generator's ``__next__`` (at import, and again if an exception a signal handler raised inside
    the generator ended it)."""
    source = _frames()
    next(source)
    source.send(source.gi_frame)
    return source.__next__


_resume = _start_frames()


def _restart() -> None:
    global _resume
    _resume = _start_frames()


#: module name -> 0 (application code), 1 (plumbing), 2 (plumbing where the work began: see _BOUNDARIES)
_kinds: dict[str, int] = {}


def _kind(name: str, module_globals: dict[str, Any]) -> int:
    kind = (2 if name in _BOUNDARIES else 1) if _module_is_plumbing(name, module_globals) else 0
    if len(_kinds) < 4096:
        _kinds[name] = kind
    return kind


def _walk_slowly(frame: Any) -> str | None:
    while frame is not None:
        module_globals = frame.f_globals
        name = module_globals.get("__name__")
        kind = _kind(name if name.__class__ is str else "", module_globals)
        if not kind:
            return f"{_display_name(module_globals)}:{frame.f_code.co_name}:{frame.f_lineno}"
        if kind == 2:
            return _spawner(name)
        frame = frame.f_back
    return None


def find_caller(depth: int = 2) -> str | None:
    """``module:function:line`` of the first frame outside sockguard, the standard library, known client
    libraries and test runners, searched up to where this thread, task or callback began; None if there is
    none (only plumbing: a resolver thread, an event-loop callback). ``depth`` counts as ``sys._getframe``'s.
    With the C accelerator this name is ``_accel.find_caller``, which walks the plain plumbing frames itself
    and hands any other frame to :func:`_search`: the same answers (tests/test_accel_requests.py)."""
    try:
        frame: Any = _resume().f_back  # (_resume gives this function's own frame): depth 1
    except ValueError:  # "generator already executing": another thread or a signal handler is inside it
        frame = sys._getframe(1)
    except StopIteration:  # ended by an exception raised inside it (a signal handler's): a new one next time
        _restart()
        frame = sys._getframe(1)
    while depth > 1 and frame is not None:
        frame = frame.f_back
        depth -= 1
    return _search(frame)


def _search(frame: Any) -> str | None:
    """The caller search from ``frame`` on (see :func:`find_caller`)."""
    # Reading frame.f_code raises an audit event (object.__getattr__) through every hook in the
    # process, so frames are judged by their module (f_globals raises none); only the caller's
    # own frame reads f_code, for the function name.
    kinds = _kinds
    try:
        while frame is not None:
            module_globals = frame.f_globals
            kind = kinds.get(module_globals.get("__name__"))
            if kind == 1:
                frame = frame.f_back
                continue
            if kind is None:
                name = module_globals.get("__name__")
                kind = _kind(name if name.__class__ is str else "", module_globals)
                if kind == 1:
                    frame = frame.f_back
                    continue
            if kind == 2:
                # The work began here: what lies beyond did not ask for this connection. A task that a task group
                # started (anyio's connect_tcp races its attempts in child tasks) was asked for by its parent.
                return _spawner(module_globals.get("__name__"))
            name = module_globals.get("__name__")
            if name == "__main__" or name.__class__ is not str:
                name = _display_name(module_globals)
            return f"{name}:{frame.f_code.co_name}:{frame.f_lineno}"
    except TypeError:  # an unhashable __name__ (a module that set one): judged as ""
        return _walk_slowly(frame)
    return None


find_caller_python = find_caller
_fast = accelerator()
if _fast is not None:
    _fast.caller_setup(_kinds, _search)
    find_caller = _fast.find_caller  # (the same function, walked in C)


def _spawner(boundary: str) -> str | None:
    """``module:function:line`` of the application coroutine of the task that started the current one (anyio's
    task groups on asyncio, trio's nurseries), up to a few generations; None for a task nobody is known to have
    started (plain ``asyncio.create_task`` keeps no parent), a loop callback or a thread."""
    if boundary == "asyncio.events":
        parent_of = _anyio_parent
        task = current_task()
    elif boundary == "trio._core._run":
        parent_of = _trio_parent
        task = _trio_task()
    else:
        return None
    for _ in range(8):  # nested task groups: the first ancestor with application code
        if task is None:
            return None
        task = parent_of(task)
        if task is None:
            return None
        coroutine = getattr(task, "coro", None) if boundary == "trio._core._run" else _asyncio_coroutine(task)
        found = coroutine_caller(coroutine)
        if found is not None:
            return found
    return None


def _anyio_parent(task: Any) -> Any:
    """The asyncio task whose anyio task group started ``task`` (anyio keeps its id), or None."""
    backend = sys.modules.get("anyio._backends._asyncio")
    states = getattr(backend, "_task_states", None)
    if states is None:
        return None
    try:
        parent_id = getattr(states.get(task), "parent_id", None)
        if parent_id is None:
            return None
        tasks = sys.modules["asyncio"].all_tasks()
    except (TypeError, RuntimeError, KeyError, AttributeError):  # not weak-referenceable, no running loop
        return None
    for candidate in tasks:
        if id(candidate) == parent_id:
            return candidate
    return None


def _trio_task() -> Any:
    lowlevel = sys.modules.get("trio.lowlevel")
    if lowlevel is None:
        return None
    try:
        return lowlevel.current_task()
    except (RuntimeError, AttributeError):  # not inside trio.run
        return None


def _trio_parent(task: Any) -> Any:
    """The trio task that opened the nursery ``task`` runs in, or None (the root task)."""
    return getattr(getattr(task, "parent_nursery", None), "parent_task", None)


def _asyncio_coroutine(task: Any) -> Any:
    try:
        return task.get_coro()
    except (AttributeError, TypeError, NotImplementedError):  # not a Task, or a foreign task implementation
        return None


def current_task() -> Any:
    """The asyncio task running in this thread, or None. Cheap (one C call, nothing walked), so it can be kept
    for work whose outcome arrives later in a loop callback, where :func:`task_caller` names its code."""
    tasks = sys.modules.get("asyncio.tasks")
    if tasks is None:
        return None
    try:
        return tasks.current_task()
    except RuntimeError:  # no running event loop in this thread
        return None


def task_caller(task: Any) -> str | None:
    """``module:function:line`` of the innermost application coroutine of a suspended asyncio task: the code
    that is awaiting the work (its frames are off the stack while it waits). None if only plumbing."""
    return coroutine_caller(_asyncio_coroutine(task))


def coroutine_caller(awaiting: Any) -> str | None:
    """``module:function:line`` of the innermost application coroutine in the await chain that starts at
    ``awaiting`` (a task's coroutine), or None if only plumbing."""
    found = None
    for _ in range(256):  # an await chain, outermost first (bounded: a cycle cannot hang an alert)
        if awaiting is None:
            break
        frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
        if frame is not None:
            module_globals = frame.f_globals
            name = module_globals.get("__name__")
            if not _module_is_plumbing(name if name.__class__ is str else "", module_globals):
                found = frame
        awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
    if found is None:
        return None
    return f"{_display_name(found.f_globals)}:{found.f_code.co_name}:{found.f_lineno}"
