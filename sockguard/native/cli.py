"""``sockguard native``: the preload library for non-Python programs and C extensions (docs/native.md).

sockguard native path                        the library, for ENV LD_PRELOAD=... (exit 1 if not built)
sockguard native compile [--config F] -o OUT compile the policy in force (as ``status`` shows it)
sockguard native status                      whether the library is built, and why not
"""

from __future__ import annotations

import argparse
import os
import sys

from sockguard.native import POLICY_VARIABLE, library_path, unavailable_reason


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="native_command", metavar="ACTION")
    sub.required = True
    sub.add_parser("path", help="print the preload library's path (exit 1 if it is not built)")
    sub.add_parser("status", help="whether the preload library is built, and why not")
    compile_ = sub.add_parser("compile", help="compile the policy in force into the file the library maps")
    compile_.add_argument("--config", metavar="FILE", help="TOML config (default: as `sockguard status` finds it)")
    compile_.add_argument("--allow", action="append", default=[], metavar="RULE")
    compile_.add_argument("--deny", action="append", default=[], metavar="RULE")
    compile_.add_argument("--mode", choices=("enforce", "monitor", "off"))
    compile_.add_argument("--log", metavar="FILE", help="JSON-lines decision log the library appends to")
    compile_.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write the policy")


def main(args: argparse.Namespace) -> int:
    if args.native_command == "path":
        path = library_path()
        if path is None:
            print(f"sockguard: native layer unavailable: {unavailable_reason()}", file=sys.stderr)
            return 1
        print(path)
        return 0
    if args.native_command == "status":
        path = library_path()
        print(f"native layer available: {path}" if path else f"native layer unavailable: {unavailable_reason()}")
        return 0 if path else 1
    return _compile(args)


def _compile(args: argparse.Namespace) -> int:
    from sockguard.config import load_settings, with_flags
    from sockguard.errors import ConfigError
    from sockguard.native.blob import compile_settings
    from sockguard.paths import write_atomically
    from sockguard.rules import RuleError

    env = with_flags(os.environ, config=args.config, allow=args.allow, deny=args.deny)
    if args.mode:
        env["SOCKGUARD_MODE"] = args.mode
    if args.log:
        env["SOCKGUARD_LOG"] = args.log
    try:
        settings = load_settings(env, os.getcwd())
        if settings.log:
            settings.log = os.path.abspath(settings.log)
        data = compile_settings(settings)
    except (ConfigError, RuleError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    output = os.path.abspath(args.output)
    write_atomically(output, data, permissions=0o444)
    print(f"sockguard: wrote {output} ({len(data)} bytes, mode {settings.mode}); set {POLICY_VARIABLE}={output}")
    return 0
