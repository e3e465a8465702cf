"""Block messages on stderr when the application configured no logging for sockguard: lock-free, rate-limited.

Without a handler for the ``sockguard`` logger, the standard library prints WARNING and above through
``logging.lastResort``. That handler takes its lock in Python code *before* its ``try:``; an exception raised by
a signal handler in between (a ``KeyboardInterrupt``, a ``SIGALRM`` timeout) leaves the lock held, and the next
block in any thread hangs forever (issue 18). It also prints every block, so a retry loop floods stderr.

:data:`CONSOLE` prints what lastResort would print, to the same stream (``sys.stderr`` at the time of the
call), with one ``write()`` and no lock: a key (the blocked destination) prints at most once per
:attr:`Console.interval` seconds, and its next line says how many like it were held back meanwhile. What is still
held back at exit is printed then, so nothing is lost silently. Deciding whether a key may print is a test and a
store with no call in between: CPython switches threads and runs signal handlers only at calls and backward
jumps, so two threads cannot both print a key in one interval and no exception can land half-way.
"""

from __future__ import annotations

import itertools
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Hashable

_MAX_KEYS = 1024


class _Key:
    """One destination's rate limit: when it may print again, how many times it was asked (a counter whose
    ``next()`` is atomic), which of those printed last, and the last text held back."""

    __slots__ = ("asked", "due", "last_printed", "printed_at", "text")

    def __init__(self) -> None:
        self.asked = itertools.count()
        self.due = 0.0
        self.last_printed = -1
        self.printed_at = 0.0
        self.text = ""


class Console:
    """The rate-limited, lock-free stderr writer (one per process: :data:`CONSOLE`)."""

    #: Seconds between two lines for one key.
    interval = 5.0

    def __init__(self) -> None:
        self._keys: dict[Hashable, _Key] = {}
        self._exit_registered = False

    def say(self, key: Hashable, text: str) -> None:
        """Print ``text`` unless ``key`` printed less than :attr:`interval` seconds ago (then count it)."""
        now = time.monotonic()
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= _MAX_KEYS:
                self._summarise_held()
            entry = self._keys.setdefault(key, _Key())
            if not self._exit_registered:
                self._exit_registered = True
                import atexit

                atexit.register(self._summarise_held)
        asked = next(entry.asked)
        if now < entry.due:
            entry.text = text
            return
        entry.due = now + self.interval  # the test above and this store have no call between them (module doc)
        held = asked - entry.last_printed - 1
        entry.last_printed = asked
        if held > 0:
            text += f" (repeated {held} more times in the last {now - entry.printed_at:.0f} s, not shown)"
        entry.printed_at = now
        write_line(text)

    def _summarise_held(self) -> None:
        """At exit (or when the table is full): one line per key with attempts that were held back."""
        keys, self._keys = self._keys, {}
        now = time.monotonic()
        for entry in keys.values():
            held = next(entry.asked) - entry.last_printed - 1
            if held > 0:
                write_line(
                    f"{entry.text} (repeated {held} more times in the last {now - entry.printed_at:.0f} s, not shown)"
                )

    def forget(self) -> None:
        """Start afresh (test suites: every test sees its first block printed)."""
        self._keys = {}


def write_line(text: str) -> None:
    """One line on ``sys.stderr`` as it is now, written whole, no lock of ours; a closed or missing stream
    is skipped (what else could report it?)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):  # closed, broken pipe, unencodable: nothing to report it to
        pass


CONSOLE = Console()
