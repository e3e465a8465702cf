"""Which application code asked for a connection: the first frame that is not plumbing.

Plumbing is sockguard itself, the standard library and the client libraries listed below: a decision is
attributed to the code that called requests, not to urllib3. Walked only when a sink wants the event.
"""

from __future__ import annotations

import os
import sys

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
        "pytest",
        "_pytest",
        "pluggy",
        "uvloop",
        "botocore",
        "boto3",
        "s3transfer",
        "grpc",
        "psycopg",
        "redis",
    ]
)
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep
_STDLIB_NAMES = frozenset(sys.stdlib_module_names)
_plumbing_modules: dict[str, bool] = {}


def _module_is_plumbing(name: str, module_globals: dict[str, Any]) -> bool:
    top = name.partition(".")[0]
    if top in _PLUMBING:
        return True
    filename = module_globals.get("__file__")
    if isinstance(filename, str):
        return filename.startswith(_STDLIB_DIR) and "-packages" not in filename
    return top in _STDLIB_NAMES or top.startswith("_frozen")  # frozen and built-in modules


def find_caller(depth: int = 2) -> str | None:
    """``module:function:line`` of the first frame outside sockguard, the
    standard library and known client libraries."""
    # Reading frame.f_code raises an audit event (object.__getattr__) through every hook in the
    # process, so frames are judged by their module (f_globals raises none); only the caller's
    # own frame reads f_code, for the function name.
    try:
        frame: Any = sys._getframe(depth)
    except ValueError:
        return None
    cache = _plumbing_modules
    last = None
    while frame is not None:
        module_globals = frame.f_globals
        name = module_globals.get("__name__")
        if name.__class__ is not str:
            name = ""
        plumbing = cache.get(name)
        if plumbing is None:
            plumbing = _module_is_plumbing(name, module_globals)
            if len(cache) < 4096:
                cache[name] = plumbing
        if not plumbing:
            return f"{module_globals.get('__name__', '?')}:{frame.f_code.co_name}:{frame.f_lineno}"
        last = frame
        frame = frame.f_back
    if last is not None:  # only plumbing on the stack (e.g. a resolver thread)
        return f"{last.f_globals.get('__name__', '?')}:{last.f_code.co_name}:{last.f_lineno}"
    return None
