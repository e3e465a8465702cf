"""Where a process's configuration comes from, fixed at activation: the ``SOCKGUARD_*`` variables and the file.

What a process enforces must not depend on what happens after the guard activates: a program that sets
``os.environ["SOCKGUARD_MODE"] = "off"`` before its first socket use, or ``chdir``s into a checked-out repository
whose ``pyproject.toml`` says ``mode = "off"``, must not switch its own guard off. So the sitecustomize (and
``sockguard run``) takes a :class:`Source` at activation: the variables, the working directory, the config file's
path and its *bytes*. The policy is still compiled lazily, at the first socket event (sockguard.config parses the
snapshot; TOML and the rule parser stay off the start-up path), but from this snapshot only.

A process tree keeps one configuration too. ``sockguard run`` writes the whole resolved configuration to a file and
names it in ``SOCKGUARD_PINNED`` (sockguard.runner): every guarded process below it enforces that file and nothing
else. Without ``run``, the activation exports the file it chose (``SOCKGUARD_CONFIG``, ``none`` when there was
none), so a child started in another directory never picks up that directory's file. A process that finds a
*different* config file in its working directory ignores it and says so once on stderr (sockguard.config).

It also keeps the one piece of environment the C library reads later on its own: the resolver variables
(``LOCALDOMAIN``, ``RES_OPTIONS``, ``HOSTALIASES``) as the ``os.putenv`` audit events change them
(sockguard.resolvconf).

Imports only ``os`` (not ``__future__``: annotations naming checker-only types are strings): this runs in every
Python process at start-up.
"""

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

PINNED = "SOCKGUARD_PINNED"  # the file `sockguard run` wrote: the whole configuration of its process tree
CONFIG = "SOCKGUARD_CONFIG"
NO_FILE = "none"  # SOCKGUARD_CONFIG=none: no config file, not even one in the working directory


class Source:
    """The configuration's source as it was at activation (or when :func:`take` was called)."""

    __slots__ = ("cwd", "data", "environ", "error", "local", "path", "pinned")

    def __init__(
        self,
        environ: dict[str, str],
        cwd: str,
        path: str | None = None,
        data: bytes | None = None,
        error: str | None = None,
        pinned: bool = False,
        local: str | None = None,
    ) -> None:
        self.environ = environ  # the SOCKGUARD_* variables
        self.cwd = cwd
        self.path = path  # the config file in force (a TOML file, or the pinned file), absolute
        self.data = data  # its bytes, read at activation
        self.error = error  # why it could not be read (the loader reports it, or reads again: a transient failure)
        self.pinned = pinned  # path is a `sockguard run` pinned file
        self.local = local  # a config file in the working directory that is *not* the one in force

    @property
    def mode_off(self) -> bool:
        """The variables switch the guard off (and nothing pins it)."""
        return not self.pinned and self.environ.get("SOCKGUARD_MODE", "").strip().lower() == "off"


def take(environ: "Mapping[str, str]", cwd: str) -> Source:
    """The source a process with ``environ`` in ``cwd`` would use: cheap (a few ``stat``, one small read)."""
    # (Keys first: reading a value of os.environ decodes it, and only a few are ours.)
    variables = {key: environ[key] for key in environ if key.startswith("SOCKGUARD_")}
    pinned = variables.get(PINNED)
    if pinned:
        return read(Source(variables, cwd, os.path.abspath(pinned), pinned=True, local=local_file(cwd)))
    explicit = variables.get(CONFIG)
    local = local_file(cwd)
    if explicit and explicit.strip().lower() == NO_FILE:
        return Source(variables, cwd, local=local)
    if explicit:
        path = os.path.abspath(os.path.join(cwd, explicit))
        return read(Source(variables, cwd, path, local=local if local and not same_file(local, path) else None))
    if local is None:
        return Source(variables, cwd)
    return read(Source(variables, cwd, local))


def initial_environment() -> dict[str, str]:
    """The ``SOCKGUARD_*`` variables this process was started with (``/proc/self/environ``: what ``exec`` gave it,
    whatever ``os.environ`` says since), for a process the sitecustomize did not activate (a Python started ``-I``
    under the native layer). Empty when that cannot be read: the defaults, which allow nothing extra."""
    try:
        with open("/proc/self/environ", "rb") as fh:
            data = fh.read()
    except OSError:
        return {}
    found = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"SOCKGUARD_"):
            found[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return found


def local_file(cwd: str) -> str | None:
    """``./sockguard.toml``, else a ``./pyproject.toml`` that mentions sockguard, else None."""
    path = os.path.join(cwd, "sockguard.toml")
    if os.path.exists(path):
        return path
    path = os.path.join(cwd, "pyproject.toml")
    try:
        with open(path, "rb") as fh:
            return path if b"sockguard" in fh.read() else None  # skip unrelated projects without parsing
    except OSError:
        return None


def read(source: Source) -> Source:
    """Read (again) the file ``source`` names; the error is kept for the loader to report."""
    assert source.path is not None
    try:
        with open(source.path, "rb") as fh:
            source.data = fh.read()
            source.error = None
    except FileNotFoundError:
        source.error = f"config file {source.path} does not exist"
    except OSError as exc:
        source.error = f"cannot read config file {source.path}: {exc}"
    return source


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def export_for_children(source: Source, environ: dict[str, str] | os._Environ[str]) -> None:
    """Make children use this process's config file whatever their working directory: ``SOCKGUARD_CONFIG`` set to
    the file chosen here (or ``none``). Nothing to do when the file was named already or a run pins the tree."""
    if source.pinned or source.environ.get(CONFIG):
        return
    environ[CONFIG] = source.path if source.path is not None else NO_FILE


#: Changes of the variables glibc's resolver reads, as the ``os.putenv``/``os.unsetenv`` audit events report them
#: (``os.environ`` changes go through those calls; sockguard.resolvconf reads this). name -> value or None.
resolver_variables: dict[str, str | None] = {}
RESOLVER_VARIABLES = frozenset(("LOCALDOMAIN", "RES_OPTIONS", "HOSTALIASES"))


def note_environment(args: tuple[object, ...]) -> None:
    """``os.putenv``/``os.unsetenv`` handler: remember a change of a resolver variable (cheap; no import)."""
    global resolver_variables
    key = args[0]
    if isinstance(key, bytes):
        name = bytes.decode(key, "latin-1")
    elif isinstance(key, str):
        name = str.__str__(key)
    else:
        return
    if name in RESOLVER_VARIABLES:
        value = args[1] if len(args) > 1 else None
        if isinstance(value, bytes):
            value = bytes.decode(value, "latin-1")
        # A new dict each time: a reader holding the old one sees a consistent set (sockguard.resolvconf).
        resolver_variables = {**resolver_variables, name: str.__str__(value) if isinstance(value, str) else None}
