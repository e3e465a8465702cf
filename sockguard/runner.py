"""``sockguard run``: start a program with the guard active in it and in every
Python process it starts (PYTHONPATH + the pinned configuration, then exec).

The whole resolved configuration (file, environment and flags, merged here once) is written to a file and named in
``SOCKGUARD_PINNED``: every guarded process of the tree enforces exactly that, whatever its working directory or the
``SOCKGUARD_*`` variables it inherits (sockguard/source.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from sockguard.breadth import warn_broad
from sockguard.children import isolation_warning
from sockguard.config import Settings, config_path, load_settings, settings_from_source, with_flags
from sockguard.display import printable
from sockguard.errors import ConfigError
from sockguard.paths import run_directory, sitecustomize_dir, write_by_content
from sockguard.source import PINNED, take


def guarded_environment(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, str]:
    """The child environment; raises ConfigError if the result is not valid."""
    settings, env = resolved_settings(args, environ)
    if not env.get(PINNED):  # (a nested run keeps its tree's file)
        env.update(pinned_environment(settings))
    site_dir = sitecustomize_dir()
    existing = env.get("PYTHONPATH", "")
    parts = [p for p in existing.split(os.pathsep) if p and p != site_dir]
    env["PYTHONPATH"] = os.pathsep.join([site_dir, *parts])
    if getattr(args, "native", True):
        env.update(native_variables(settings, env))
    return env


def resolved_settings(args: argparse.Namespace, environ: dict[str, str]) -> tuple[Settings, dict[str, str]]:
    """The Settings the program will enforce (config file, environment and flags merged), and the environment with
    the flags applied. Inside a tree that is pinned already (a nested ``sockguard run``), the pinned configuration
    stays: a child can never widen or switch off its parent's policy."""
    if environ.get(PINNED):
        if args.config or args.allow or args.deny or args.mode or args.log or getattr(args, "log_special", False):
            print(
                "sockguard: warning: this process tree's configuration is pinned (SOCKGUARD_PINNED); "
                "--config/--allow/--deny/--mode/--log are ignored",
                file=sys.stderr,
            )
        env = dict(environ)
    else:
        env = with_flags(environ, config=args.config, allow=args.allow or (), deny=args.deny or ())
        if args.mode:
            env["SOCKGUARD_MODE"] = args.mode
        if args.log:
            env["SOCKGUARD_LOG"] = os.path.abspath(args.log)
        if getattr(args, "log_special", False):
            env["SOCKGUARD_LOG_SPECIAL"] = "1"
    settings = settings_from_source(take(env, os.getcwd()))
    settings.build_policy()
    if settings.log:
        settings.log = os.path.abspath(settings.log)
    return settings, env


def pinned_environment(settings: Settings) -> dict[str, str]:
    """``SOCKGUARD_PINNED`` naming a file with the whole configuration ``settings``, written once per content, read
    only, in the directory only this user can write where the tree's native policy lives too
    (sockguard.paths.run_directory). Raises ConfigError when it cannot be written."""
    data = json.dumps(settings.to_pinned(config_path(settings.source)), indent=1, sort_keys=True).encode() + b"\n"
    try:
        return {PINNED: write_by_content(run_directory(), "pinned-", ".json", data)}
    except OSError as exc:
        raise ConfigError(f"sockguard: cannot write the pinned configuration: {exc}") from None


def native_variables(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """LD_PRELOAD and the compiled policy for the native layer (docs/native.md), or {} (mode off, or the
    library is not built: said once on stderr). Isolated so the pinned-configuration work can call it."""
    from sockguard.native.activation import NativeUnavailable, native_environment

    try:
        return native_environment(settings, env)
    except NativeUnavailable as exc:
        first = str(exc).splitlines()[0]
        print(f"sockguard: native layer unavailable ({first}); non-Python programs run unguarded", file=sys.stderr)
        return {}


def native_preflight(argv: list[str]) -> str | None:
    """Why the program about to start cannot be guarded by the native layer (static, set-id, capabilities)."""
    from sockguard.native.elf import resolve_program, unguardable

    path = resolve_program(argv[0])
    why = unguardable(path) if path else None
    return f"{argv[0]} is {why}" if why else None


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


def _log_problem(env: dict[str, str]) -> str | None:
    """What would stop the decision log from being written (a FIFO not allowed, a missing directory), if any."""
    if not env.get("SOCKGUARD_LOG"):
        return None
    from sockguard.logfile import problem
    from sockguard.values import parse_bool

    try:
        special = parse_bool(env.get("SOCKGUARD_LOG_SPECIAL") or "0", "environment", "SOCKGUARD_LOG_SPECIAL")
    except ValueError:
        special = False
    return problem(env["SOCKGUARD_LOG"], special)


def run(args: argparse.Namespace) -> int:
    try:
        argv = command_line(list(args.program))
    except ValueError as exc:
        print(f"sockguard: {printable(exc)}", file=sys.stderr)
        return 2
    try:
        env = guarded_environment(args, dict(os.environ))
    except (ConfigError, ValueError) as exc:
        print(printable(exc), file=sys.stderr)  # a path or value from the environment: escaped
        print("sockguard: not starting the program (fix the configuration above)", file=sys.stderr)
        return 2
    if warn_broad(load_settings(env, os.getcwd()).allow, getattr(args, "strict", False), "sockguard"):
        print("sockguard: not starting the program", file=sys.stderr)
        return 2
    warning = isolation_warning(argv)
    if warning:
        print(warning, file=sys.stderr)
    log_problem = _log_problem(env)
    if log_problem:
        print(f"sockguard: warning: {log_problem}; decisions will be enforced but not written to it", file=sys.stderr)
    if getattr(args, "native", True) and env.get("SOCKGUARD_MODE") != "off":
        unreachable = native_preflight(argv)
        if unreachable and getattr(args, "strict", False):
            print(f"sockguard: refusing to start it (--strict): {unreachable}", file=sys.stderr)
            return 2
        if unreachable:
            print(f"sockguard: warning: {unreachable}; it will NOT be guarded", file=sys.stderr)
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
