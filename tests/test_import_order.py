"""The asyncio integration holds whatever the import order (issue 18, item 7).

asyncio resolves in its default executor, where the only frames are the thread pool's; the integration decides
the name on the loop thread first, so a blocked lookup names the application's coroutine, not
``threading:_bootstrap``. Each order runs in a fresh interpreter: asyncio imported before the guard is
installed, after it, while another thread is half-way through importing it (paused deterministically inside
``asyncio/base_events.py``), and reloaded (a new ``BaseEventLoop`` class).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sockguard.paths import sitecustomize_dir

PY = sys.executable

SCRIPT = textwrap.dedent(
    """
    import json, sys, threading

    order, activation = sys.argv[1], sys.argv[2]

    def install():
        import sockguard
        sockguard.install(allow_loopback=False, from_environment=False)

    def first_socket_use():  # with sitecustomize: the configuration loads here (and the hooks are set again)
        import socket
        try:
            socket.getaddrinfo("127.0.0.1", 80)
        except OSError:
            pass

    activate = install if activation == "api" else first_socket_use

    if order == "before":
        import asyncio
        activate()
    elif order == "after":
        activate()
        import asyncio
    elif order == "during":
        # Another thread imports asyncio and is stopped inside asyncio/base_events.py, before BaseEventLoop
        # exists, while this thread activates the guard; then it finishes the import.
        paused, resume = threading.Event(), threading.Event()

        def tracer(frame, event, arg):
            code = frame.f_code
            if event == "call" and code.co_name == "<module>" and code.co_filename.endswith("base_events.py"):
                return local
            return None

        def local(frame, event, arg):
            if event == "line" and "class BaseEventLoop" in _line(frame):
                sys.settrace(None)
                paused.set()
                resume.wait(30)
                return None
            return local

        def _line(frame):
            import linecache
            return linecache.getline(frame.f_code.co_filename, frame.f_lineno)

        def importer():
            sys.settrace(tracer)
            import asyncio  # noqa: F401

        thread = threading.Thread(target=importer)
        thread.start()
        assert paused.wait(30), "the importing thread never reached BaseEventLoop"
        activate()
        resume.set()
        thread.join(30)
        import asyncio
    elif order == "reload":
        import asyncio
        activate()
        import importlib
        importlib.reload(asyncio.base_events)

    import asyncio
    import time

    deadline = time.monotonic() + 5  # a module still being imported elsewhere is patched by a helper thread
    while not getattr(asyncio.base_events.BaseEventLoop.getaddrinfo, "__sockguard__", False):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)

    async def main():
        loop = asyncio.get_running_loop()
        try:
            await loop.getaddrinfo("blocked.test", 80)
            return {"outcome": "resolved"}
        except OSError as exc:
            import sockguard
            blocked = isinstance(exc, sockguard.EgressBlocked)  # (a lookup raises its subclass LookupBlocked)
            return {"outcome": "blocked" if blocked else repr(exc), "caller": getattr(exc, "caller", None)}

    result = asyncio.run(main())
    result["patched"] = bool(getattr(asyncio.base_events.BaseEventLoop.getaddrinfo, "__sockguard__", False))
    print(json.dumps(result), flush=True)
    """
)


@pytest.mark.netlab  # a name: if the guard were broken, the DNS query must stay in the lab
@pytest.mark.parametrize("activation", ["api", "sitecustomize"])
@pytest.mark.parametrize("order", ["before", "after", "during", "reload"])
def test_asyncio_lookups_are_decided_on_the_loop_thread_in_every_import_order(tmp_path, order, activation):
    path = tmp_path / "app.py"
    path.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
    if activation == "sitecustomize":
        env.update(PYTHONPATH=sitecustomize_dir(), SOCKGUARD_ALLOW_LOOPBACK="0")
    result = subprocess.run([PY, str(path), order, activation], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert "could not guard" not in result.stderr, result.stderr
    assert outcome["patched"] is True
    assert outcome["outcome"] == "blocked"
    assert outcome["caller"].startswith("__main__:main:"), outcome  # not threading:_bootstrap
