"""The accelerator's request-event helpers (native/sg_accel.c, issue 15) against the Python code they stand in for.

* ``_accel.find_caller`` and ``caller.find_caller_python`` name the same caller for stacks of generated frames:
  application modules, plumbing (client libraries, the standard library, sockguard), where the work began
  (``threading``), ``__main__`` with and without a spec, modules judged for the first time, and odd globals (a
  ``__name__`` that is missing, not a str, a str subclass, unhashable), at every depth.
* ``_accel.request_line`` writes byte for byte the line the Python f-string writes, for ts and durations in and
  out of its range and for cached text with escapes and non-ASCII (the JSON encoder's ``\\u`` escapes).
* Both built with AddressSanitizer and UndefinedBehaviorSanitizer, in a child.
"""

from __future__ import annotations

import json
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockguard import caller, sinks
from tests.accel_support import assert_clean_under_sanitizers

try:
    from sockguard import _accel
except ImportError:  # not built here
    _accel = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(_accel is None, reason="the accelerator is not built")


@pytest.fixture(autouse=True)
def _set_up() -> None:
    _accel.caller_setup(caller._kinds, caller._search)  # (done at import when the accelerator is on)


class Text(str):
    pass


class Unhashable(str):
    __hash__ = None  # type: ignore[assignment]


class PropertySpec:
    @property
    def name(self) -> str:
        return "myapp.property_spec"


class GetattrSpec:
    def __getattr__(self, attribute: str) -> str:
        return "myapp.getattr_spec"


# What a frame's module can be. "__main__" entries carry a spec name or a file; None: no __name__ at all.
MODULES: list[Any] = [
    "app.orders",
    "app.services.prices",
    "urllib3.connectionpool",
    "http.client",
    "sockguard.http.stdlib",
    "threading",
    "asyncio.events",
    "pytest_asyncio.plugin",
    ("__main__", "myapp.__main__"),
    ("__main__", None),
    ("__main__", Text("myapp.text_spec")),  # a str subclass as the spec's name
    ("__main__", "spec with a name property"),
    ("__main__", "spec with __getattr__"),
    Text("app.text_name"),
    Unhashable("app.unhashable"),
    42,
    None,
]


def _globals(module: Any, index: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__builtins__": __builtins__}
    if isinstance(module, tuple):
        namespace["__name__"] = "__main__"
        namespace["__file__"] = f"/srv/app/script{index}.py"
        if module[1] == "spec with a name property":
            namespace["__spec__"] = PropertySpec()
        elif module[1] == "spec with __getattr__":
            namespace["__spec__"] = GetattrSpec()
        elif module[1] is not None:
            namespace["__spec__"] = types.SimpleNamespace(name=module[1])
    elif module is not None:
        namespace["__name__"] = module
        if isinstance(module, str):
            namespace["__file__"] = f"/srv/site-packages/{module.replace('.', '/')}.py"
    return namespace


def _stack(modules: list[Any], probe: Callable[[], Any]) -> Any:
    """Call ``probe`` from the innermost of nested functions, one per module (outermost first), each defined on
    its own line of its own code in that module's globals; returns what probe returned."""
    call: Callable[[], Any] = probe
    for index, module in enumerate(reversed(modules)):
        source = "\n" * (index % 7) + f"def frame_{index}():\n    x = 1\n    return inner()\n"
        namespace = _globals(module, index)
        namespace["inner"] = call
        exec(compile(source, f"<frame {index}>", "exec"), namespace)
        call = namespace[f"frame_{index}"]
    return call()


@settings(max_examples=300, deadline=None)
@given(modules=st.lists(st.sampled_from(range(len(MODULES))), min_size=0, max_size=8), depth=st.integers(-1, 12))
def test_find_caller_names_the_same_caller_in_c_and_python(modules: list[int], depth: int) -> None:
    stack = [MODULES[i] for i in modules]

    def probe() -> tuple[Any, Any]:
        return _accel.find_caller(depth), caller.find_caller_python(depth)

    in_c, in_python = _stack(stack, probe)
    assert in_c == in_python


def test_find_caller_is_the_accelerated_one_when_the_accelerator_is_on() -> None:
    from sockguard.accelerator import accelerator

    expected = _accel.find_caller if accelerator() is not None else caller.find_caller_python
    assert caller.find_caller is expected


def test_find_caller_default_depth_and_threads() -> None:
    """The default depth, and many threads at once (the frame walk keeps no state but the texts it made)."""

    def app() -> tuple[Any, Any]:
        return helper()

    def helper() -> tuple[Any, Any]:
        return _accel.find_caller(), caller.find_caller_python()

    found = app()
    assert found[0] == found[1] == f"{__name__}:app:{app.__code__.co_firstlineno + 1}"
    results: list[tuple[Any, Any]] = []

    def work() -> None:
        for _ in range(200):
            results.append(_stack(["app.orders", "urllib3.connectionpool", "http.client"], helper))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 800 and all(c == p for c, p in results)
    assert results[0][0] is not None and results[0][0].startswith("app.orders:frame_")


def test_find_caller_arguments() -> None:
    with pytest.raises(TypeError):
        _accel.find_caller(1, 2)
    with pytest.raises(TypeError):
        _accel.find_caller("1")


def _python_line(us: int, head: str, duration_us: int, tail: str) -> bytes:
    """What Sinks.write_request_ok writes without the accelerator."""
    return f'{{"event":"request","ts":{sinks._ts_text(us)}{head}{duration_us / 1000!r}{tail}'.encode()


def _parts(path: str, caller_text: str | None, status: int | None) -> tuple[str, str]:
    box = sinks.Sinks(None)
    box._open_encoder()
    fixed = ("http.client", "GET", "https", "api.test", 443, path, None)
    parts = box._request_parts_for(None, fixed, "203.0.113.7", "api.test", status, caller_text, "req-é")
    assert parts is not None
    return parts


@settings(max_examples=500, deadline=None)
@given(
    us=st.one_of(
        st.integers(1_000_000_000_000_000, 8_000_000_000_000_000 - 1),
        st.integers(0, 2**70),
        st.sampled_from([999_999_999_999_999, 1_000_000_000_000_000, 7_999_999_999_999_999, 8_000_000_000_000_000]),
    ),
    duration_us=st.one_of(
        st.integers(0, 10**7),
        st.integers(0, 10**16),
        st.sampled_from([0, 1, 10, 100, 1000, 10**15 - 1, 10**15]),
    ),
    path=st.text(max_size=30),
    caller_text=st.one_of(st.none(), st.text(max_size=20)),
    status=st.one_of(st.none(), st.integers(100, 599)),
)
def test_request_line_is_the_python_line(
    us: int, duration_us: int, path: str, caller_text: str | None, status: int | None
) -> None:
    head, tail = _parts(path, caller_text, status)
    line = _accel.request_line(us, head, duration_us, tail)
    python = _python_line(us, head, duration_us, tail)
    if line is None:  # outside the range where the integers' text is the floats' repr: Python writes it
        assert not (10**15 <= us < 8 * 10**15 and 0 <= duration_us < 10**15)
    else:
        assert line == python
        event = json.loads(line)
        assert event["ts"] == us / 1e6 and event["duration_ms"] == duration_us / 1000 and event["path"] == path


def test_request_line_declines_what_it_cannot_write() -> None:
    head, tail = _parts("/v1", "app:main:1", 200)
    assert _accel.request_line(1_763_748_153_482_211, head, -1, tail) is None
    assert _accel.request_line(-(2**80), head, 5, tail) is None
    assert _accel.request_line(1_763_748_153_482_211, "é" + head, 5, tail) is None  # (cached text is ASCII)
    for bad in ((1.5, head, 5, tail), (1, b"x", 5, tail), (1, head, 5), (True.__class__, head, 5, tail)):
        with pytest.raises(TypeError):
            _accel.request_line(*bad)


SANITIZED_CHILD = r"""
import importlib.util, sys, types
spec = importlib.util.spec_from_file_location("sockguard._accel", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["sockguard._accel"] = module
from sockguard import caller, sinks
assert caller.find_caller is module.find_caller
def nest(names, probe):
    call = probe
    for i, name in enumerate(names):
        ns = {"__name__": name, "__builtins__": __builtins__}
        ns["inner"] = call
        exec(compile("def f():\n    return inner()\n", "<f%d>" % i, "exec"), ns)
        call = ns["f"]
    return call()
for i in range(3000):
    names = ["app.m%d" % (i % 100), "urllib3.x", "http.client", "__main__", 7][: 1 + i % 5]
    for depth in range(-1, 8):
        got = nest(names, lambda: (module.find_caller(depth), caller.find_caller_python(depth)))
        assert got[0] == got[1], got
box = sinks.Sinks(None)
box._open_encoder()
fixed = ("c", "GET", "http", "h\u00e9", 80, "/p\n", None)
head, tail = box._request_parts_for(None, fixed, "a", "r", 200, "x:y:1", None)
for us in (0, 10**15, 1_763_748_153_482_211, 8 * 10**15, 2**64):
    for d in (0, 1, 999, 123456, 10**15, -1):
        line = module.request_line(us, head, d, tail)
        assert line is None or line == f'{{"event":"request","ts":{sinks._ts_text(us)}{head}{d / 1000!r}{tail}'.encode()
# A __main__ frame whose globals hold a key that collides with "__spec__" and whose __eq__ drops __name__ while
# the search looks __spec__ up: the name must still be alive when its text is made (it was borrowed).
class Collides:
    def __init__(self, namespace):
        self.namespace = namespace
    def __hash__(self):
        return hash("__spec__")
    def __eq__(self, other):
        self.namespace.pop("__name__", None)
        return False
plumbing = {"__name__": "urllib3.probe", "m": module}
exec("def probe():\n    return m.find_caller(1)\n", plumbing)
caller._kinds["urllib3.probe"] = 1
caller._kinds["__main__"] = 0
for _ in range(50):
    ns = {"__builtins__": __builtins__, "__name__": "".join(["__ma", "in__"]), "probe": plumbing["probe"]}
    ns[Collides(ns)] = 1
    exec(compile("def f():\n    return probe()\n", "<collides>", "exec"), ns)
    ns["__name__"] = "".join(["__ma", "in__"])  # (f.__module__ holds the first one: this one only the globals)
    assert ns["f"]() == "__main__:f:2"
print("OK")
"""


def test_the_request_helpers_under_address_and_undefined_behaviour_sanitizers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONMALLOC", "malloc")  # (objects from malloc: ASan sees a use after free of one)
    assert_clean_under_sanitizers(SANITIZED_CHILD, tmp_path)
