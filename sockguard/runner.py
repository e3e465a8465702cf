"""``sockguard run``: start a program with the guard active in it and in every
Python process it starts (PYTHONPATH + SOCKGUARD_* environment, then exec)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from sockguard.config import config_path, load_settings
from sockguard.errors import ConfigError
from sockguard.paths import sitecustomize_dir

_ISOLATING_FLAGS = {"I": "-I (isolated mode)", "E": "-E (ignore PYTHON* variables)", "S": "-S (no site import)"}


def guarded_environment(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, str]:
    """The child environment; raises ConfigError if the result is not valid."""
    env = dict(environ)
    if args.config:
        env["SOCKGUARD_CONFIG"] = os.path.abspath(args.config)
    for flag, var in (("allow", "SOCKGUARD_ALLOW"), ("deny", "SOCKGUARD_DENY")):
        values = getattr(args, flag) or []
        if values:
            env[var] = ",".join(filter(None, [env.get(var, ""), *values]))
    if args.mode:
        env["SOCKGUARD_MODE"] = args.mode
    if args.log:
        env["SOCKGUARD_LOG"] = os.path.abspath(args.log)
    settings = load_settings(env, os.getcwd())
    settings.build_policy()
    # Pin the file found from this directory, so children in other working
    # directories are guarded by the same policy.
    found = config_path(settings.source)
    if found and "SOCKGUARD_CONFIG" not in env:
        env["SOCKGUARD_CONFIG"] = os.path.abspath(found)
    if env.get("SOCKGUARD_LOG"):
        env["SOCKGUARD_LOG"] = os.path.abspath(env["SOCKGUARD_LOG"])
    site_dir = sitecustomize_dir()
    existing = env.get("PYTHONPATH", "")
    parts = [p for p in existing.split(os.pathsep) if p and p != site_dir]
    env["PYTHONPATH"] = os.pathsep.join([site_dir, *parts])
    return env


def command_line(program: list[str]) -> list[str]:
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        raise ValueError("no PROGRAM given (sockguard run [OPTIONS] [--] PROGRAM [ARGS...])")
    first = program[0]
    if first == "-m" or first == "-c":
        return [sys.executable, *program]
    if first.endswith(".py") or (os.path.isfile(first) and not os.access(first, os.X_OK)):
        return [sys.executable, *program]
    return program


def isolation_warning(argv: list[str]) -> str | None:
    """Warn when the program is a Python started with flags that skip
    PYTHONPATH or site (the guard cannot reach it)."""
    exe = os.path.basename(argv[0])
    interpreter_args: list[str] = []
    if exe.startswith("python") or exe.startswith("pypy"):
        interpreter_args = argv[1:]
    else:
        path = shutil.which(argv[0])
        if path:
            try:
                with open(path, "rb") as fh:
                    first_line = fh.readline(256).decode("utf-8", "replace")
            except OSError:
                first_line = ""
            if first_line.startswith("#!") and "python" in first_line:
                interpreter_args = first_line[2:].split()[1:]
    for arg in interpreter_args:
        if arg == "-m" or arg == "-c" or not arg.startswith("-") or arg.startswith("--"):
            break
        for letter, meaning in _ISOLATING_FLAGS.items():
            if letter in arg[1:]:
                return (
                    f"sockguard: warning: {argv[0]} runs Python with {meaning}; that process "
                    "ignores PYTHONPATH/site and will NOT be guarded"
                )
    return None


def run(args: argparse.Namespace) -> int:
    try:
        argv = command_line(list(args.program))
    except ValueError as exc:
        print(f"sockguard: {exc}", file=sys.stderr)
        return 2
    try:
        env = guarded_environment(args, dict(os.environ))
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        print("sockguard: not starting the program (fix the configuration above)", file=sys.stderr)
        return 2
    warning = isolation_warning(argv)
    if warning:
        print(warning, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        print(f"sockguard: program not found: {argv[0]}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"sockguard: program not executable: {argv[0]}", file=sys.stderr)
        return 126
    return 0  # not reached
