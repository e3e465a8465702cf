"""Which child processes will not be guarded, and why (docs/children.md).

A Python started with -I/-E/-S, through ``env -i``, or with an environment that lacks the activation entry
ignores sockguard's sitecustomize. ``sockguard run`` warns before starting one; a guarded process warns when
it starts one (sockguard.floor, on the subprocess/exec/spawn audit events). Best effort: a shell command
line or a wrapper binary is not looked into.
"""

from __future__ import annotations

import os
import shutil

from sockguard.paths import sitecustomize_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_ISOLATING_FLAGS = {"I": "-I (isolated mode)", "E": "-E (ignore PYTHON* variables)", "S": "-S (no site import)"}


def isolation_warning(argv: list[str]) -> str | None:
    """Warn when the program is a Python that will not load sockguard: started with -I/-E/-S (directly, in its
    #! line, or through ``env``), or through ``env -i`` / ``env -u PYTHONPATH`` / ``env PYTHONPATH=...``."""
    python, why = python_invocation(argv)
    if python and why:
        shown = " ".join(argv[:4]) + (" ..." if len(argv) > 4 else "")
        return f"sockguard: warning: {shown}: {why}; that Python process will NOT be guarded"
    return None


def child_warning(argv: Any, env: Any = None, executable: Any = None) -> str | None:
    """For a guarded process starting a child (audit events subprocess.Popen, os.exec, os.posix_spawn,
    os.system): why the child, if it is a Python, will not be guarded; None if it will be (or is not Python)."""
    words = _words(argv)
    if executable is not None and words:
        words[0] = os.fsdecode(executable)
    if not words:
        return None
    python, why = python_invocation(words)
    if not python:
        return None
    if why is None and env is None:  # the child inherits os.environ: its PYTHONPATH may have been changed too
        entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if sitecustomize_dir() in entries:
            why = shadowed(entries[: entries.index(sitecustomize_dir())])
    elif why is None:
        variables = {os.fsdecode(k): os.fsdecode(v) for k, v in dict(env).items()}
        if variables.get("SOCKGUARD_MODE", "").strip().lower() == "off":
            return None  # an explicit opt-out
        entries = variables.get("PYTHONPATH", "").split(os.pathsep)
        ours = sitecustomize_dir()
        if ours not in entries:
            why = "its environment has no PYTHONPATH entry for sockguard (env= was passed without it)"
        else:
            why = shadowed(entries[: entries.index(ours)])
    if why is None:
        return None
    shown = " ".join(words[:4]) + (" ..." if len(words) > 4 else "")
    return f"sockguard: warning: starting {shown}: {why}; that Python process will NOT be guarded"


def shadowed(entries: list[str]) -> str | None:
    """Why a ``sitecustomize`` in one of ``entries`` (the ``PYTHONPATH`` entries before sockguard's) would be imported
    instead of sockguard's, or None. Python imports the first one on ``sys.path``: sockguard's then never runs."""
    for entry in entries:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name == "sitecustomize" or (name.startswith("sitecustomize.") and not name.endswith((".pyi", ".txt"))):
                return (
                    f"an earlier PYTHONPATH entry ({entry or '.'}) has a sitecustomize of its own, which Python "
                    "imports instead of sockguard's"
                )
    return None


_PYTHON_VALUE_OPTIONS = "WX"  # -W arg, -X opt: the value is the rest of the word or the next word
_ENV_VALUE_OPTIONS = {"-u", "--unset", "-C", "--chdir", "-S", "--split-string", "-P", "--argv0"}


def python_invocation(argv: list[str], depth: int = 0) -> tuple[bool, str | None]:
    """(is the program a Python?, why it will not load sockguard's sitecustomize, or None), following
    ``env`` and ``#!`` lines. Best effort: a shell command line or a wrapper binary is not looked into."""
    if not argv or depth > 4:
        return False, None
    program = os.path.basename(argv[0])
    if program == "env":
        return _through_env(argv[1:], depth)
    if program.startswith(("python", "pypy")):
        return True, _python_flags(argv[1:])
    if program in ("sh", "bash", "dash", "zsh") and len(argv) > 2 and argv[1] == "-c":
        return python_invocation(_words(argv[2]), depth + 1)
    line = _shebang(argv[0])
    if line:
        return python_invocation([*line, *argv[1:]], depth + 1)
    return False, None


def _python_flags(args: list[str]) -> str | None:
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if arg == "-" or not arg.startswith("-") or arg.startswith("--"):
            return None  # the script, stdin, or a long option (--version, --help): options end
        for i, letter in enumerate(arg[1:], 1):
            if letter in "cm":
                return None  # -c CMD / -m MOD: what follows belongs to the program
            if letter in _PYTHON_VALUE_OPTIONS:
                skip_next = i == len(arg) - 1
                break
            if letter in _ISOLATING_FLAGS:
                return f"runs Python with {_ISOLATING_FLAGS[letter]}, which skips PYTHONPATH/site"
    return None


def _through_env(args: list[str], depth: int) -> tuple[bool, str | None]:
    why = None
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, _, value = arg.partition("=")
        if arg in ("-i", "--ignore-environment", "-"):
            why = why or "env -i starts it with an empty environment (no PYTHONPATH, no SOCKGUARD_*)"
        elif arg in _ENV_VALUE_OPTIONS or (arg.startswith("--") and "=" in arg and name in _ENV_VALUE_OPTIONS):
            if "=" not in arg:
                value = rest.pop(0) if rest else ""
            if name in ("-S", "--split-string"):
                rest = [*value.split(), *rest]
            elif name in ("-u", "--unset") and (value == "PYTHONPATH" or value.startswith("SOCKGUARD_")):
                why = why or f"env -u {value} removes what activates sockguard"
        elif arg.startswith(("-u", "-S", "-C", "-P")) and len(arg) > 2 and not arg.startswith("--"):
            rest = [arg[:2], arg[2:], *rest]
        elif arg == "--":
            continue
        elif arg.startswith("-"):
            continue  # -0, -v, --debug, --null ...
        elif "=" in arg and name and not name.startswith("/"):
            if name == "PYTHONPATH" and sitecustomize_dir() not in value.split(os.pathsep):
                why = why or "env PYTHONPATH=... replaces the entry that activates sockguard"
        else:
            python, inner = python_invocation([arg, *rest], depth + 1)
            return python, why or inner
    return False, None


def _shebang(program: str) -> list[str] | None:
    path = program if os.sep in program else shutil.which(program)
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            first_line = fh.readline(256).decode("utf-8", "replace")
    except OSError:
        return None
    if not first_line.startswith("#!"):
        return None
    return first_line[2:].split() or None


def _words(command: Any) -> list[str]:
    if isinstance(command, (str, bytes)) or hasattr(command, "__fspath__"):
        text = os.fsdecode(command)
        try:
            import shlex

            return shlex.split(text)
        except ValueError:
            return text.split()
    try:
        return [os.fsdecode(word) for word in command]
    except TypeError:
        return []
