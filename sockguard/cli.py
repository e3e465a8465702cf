"""The ``sockguard`` command. Exit codes: 0 ok / allowed, 1 blocked or findings,
2 usage or configuration error; ``run`` exits with the program's status."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence

from sockguard.breadth import warn_broad
from sockguard.display import printable

EXIT_OK, EXIT_BLOCKED, EXIT_CONFIG = 0, 1, 2

#: Subcommands that live in their own modules: name -> (module, help). Each module
#: defines ``add_arguments(parser)`` and ``main(args) -> int``.
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("sockguard.audit.cli", "find raw IPs, internal and unlisted destinations in config and code"),
    "report": ("sockguard.report.cli", "summarise a decision log (JSONL); --suggest an allowlist, --html a page"),
    "export": ("sockguard.export.cli", "export the policy to aws-sg, nftables, iptables, k8s or cilium"),
    "native": ("sockguard.native.cli", "the preload library for non-Python programs: path, compile, status"),
}


def _parse_target(target: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPV6]:PORT`` or a bare IPv6 address; ValueError names the problem."""
    from sockguard.rules import split_host_port

    host, port_text = split_host_port(target.strip())
    if not host:
        raise ValueError(f"{target!r}: no host")
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and 0 < int(port_text) <= 65535):
        raise ValueError(f"{target!r}: port must be 1-65535")
    return host, int(port_text)


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when every target is allowed, 1 when one is blocked, 2 for a broken configuration or a target
    no client can use (a malformed URL, a bad port)."""
    from sockguard.config import load_settings
    from sockguard.errors import ConfigError, RuleError
    from sockguard.urls import decide

    try:  # the policy in force here, extended by the flags; nothing is installed in this process
        settings = load_settings()
        settings.extend(args.allow or (), args.deny or (), "--")
        policy = settings.build_policy()
    except (ConfigError, RuleError) as exc:
        print(printable(f"sockguard: {exc}" if isinstance(exc, RuleError) else exc), file=sys.stderr)
        return EXIT_CONFIG
    if warn_broad(policy.allow, args.strict, "sockguard check"):
        return EXIT_CONFIG
    results = []
    broken = False
    for target in args.targets:
        clients: list[dict[str, object]] = []
        if "://" in target:
            verdict = decide(policy, target)
            decision = verdict.decision
            for attempt, result in verdict.results:
                clients.append({"client": attempt.client, "host": attempt.host, "port": attempt.port,
                                "allowed": None if result is None else result.allowed,
                                "reason": attempt.error if result is None else result.reason})  # fmt: skip
            if not verdict.usable:
                broken = True
                print(f"sockguard check: {printable(target)}: {printable(decision.detail)}", file=sys.stderr)
                continue
        else:
            try:
                host, port = _parse_target(target)
            except ValueError as exc:
                broken = True
                print(f"sockguard check: {printable(exc)}", file=sys.stderr)
                continue
            decision = policy.check_name(host, port)
        results.append(
            {
                "target": target,
                "allowed": decision.allowed,
                "reason": decision.reason,
                "rule": decision.rule,
                "detail": decision.detail,
                **({"clients": clients} if clients else {}),
            }
        )
        if args.format == "text":
            verdict_text = "allowed" if decision.allowed else "BLOCKED"
            rule = f" by rule {decision.rule!r}" if decision.rule else ""
            why = "" if decision.allowed else ": " + decision.explain()
            print(printable(f"{target}: {verdict_text} ({decision.reason}{rule}){why}"))
            if len({(c["host"], c["port"]) for c in clients}) > 1:  # the clients read the URL differently
                for c in clients:
                    where = f"{c['host']}:{c['port']}" if c["host"] is not None else f"refuses it ({c['reason']})"
                    state = (
                        "" if c["allowed"] is None else (" allowed" if c["allowed"] else f" BLOCKED ({c['reason']})")
                    )
                    print(printable(f"    {c['client']}: {where}{state}"))
    if args.format == "json":
        print(json.dumps(results, indent=2))
    if broken:
        return EXIT_CONFIG
    return EXIT_OK if all(r["allowed"] for r in results) else EXIT_BLOCKED


def cmd_pythonpath(args: argparse.Namespace) -> int:
    from sockguard.paths import sitecustomize_dir

    print(sitecustomize_dir())
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from sockguard.runner import run

    return run(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from sockguard.demo import main as demo_main

    return demo_main(args)


def _breaker_summary(settings) -> dict[str, object] | str:
    """The breaker settings in force (defaults filled in), or "off"."""
    if settings.mode == "off" or not settings.breaker.get("enabled", True):
        return "off"
    from sockguard.breaker import Breaker

    breaker = Breaker.from_settings(settings.breaker)
    keys = ("threshold", "window", "cooldown", "max_cooldown", "fanout_addresses", "fanout_ports", "fanout_window",
            "fanout_action", "rate")  # fmt: skip
    return {key: getattr(breaker, key) for key in keys}


def _native_summary() -> str:
    from sockguard.native import library_path, unavailable_reason

    path = library_path()
    return f"available ({path})" if path else f"native layer unavailable: {unavailable_reason()}"


def _accelerator_summary() -> str:
    """Whether a guarded Python process (with this environment) runs the C floor and fast path (issue 16)."""
    from sockguard.accelerator import status

    return status()


def cmd_status(args: argparse.Namespace) -> int:
    from sockguard.config import load_settings
    from sockguard.errors import ConfigError

    try:
        settings = load_settings()
        settings.build_policy()
    except (ConfigError, ValueError) as exc:
        print(printable(exc), file=sys.stderr)
        return EXIT_CONFIG
    if warn_broad(settings.allow, args.strict, "sockguard status"):
        return EXIT_CONFIG
    data = {
        "source": settings.source,
        "mode": settings.mode,
        "allow": [rule.text for rule in settings.allow],
        "deny": [rule.text for rule in settings.deny],
        "allow_loopback": settings.allow_loopback,
        "allow_unix": settings.allow_unix,
        "allow_raw": settings.allow_raw,
        "log": settings.log,
        "log_special": settings.log_special,
        "resolver": settings.resolver or "system",
        "resolver_options": settings.resolver_options,
        "breaker": _breaker_summary(settings),
        "http_events": {None: "when a sink takes them", True: "on", False: "off"}[settings.http_events],
        "http_log_level": "info" if settings.http_log_level >= 20 else "debug",
        "log_query": settings.log_query,
        "allow_runtime_changes": settings.allow_runtime_changes,
        "native": _native_summary(),
        "accelerator": _accelerator_summary(),
    }
    log_problem = None
    if settings.log:
        from sockguard.logfile import problem

        log_problem = problem(settings.log, settings.log_special)
    data["log_problem"] = log_problem
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        width = max(map(len, data))
        for key, value in data.items():
            print(f"{key:{width}s} {value}")
    if log_problem:
        print(f"sockguard: {log_problem}; decisions would be enforced but not written to the log", file=sys.stderr)
        return EXIT_BLOCKED
    return EXIT_OK


def _add_rule_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow", action="append", default=[], metavar="RULE", help="allow a destination (repeatable)")
    parser.add_argument("--deny", action="append", default=[], metavar="RULE", help="deny a destination (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sockguard",
        description="Process-wide egress guard: one allowlist under every Python network library.",
        epilog="Rules: host, *.domain, host:443, host:8000-8100, 203.0.113.7, 10.0.0.0/8, [2001:db8::/32]:443",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="run a program with the guard active in it and every Python child",
        description="Run PROGRAM (a script, -m module, or any executable) guarded.",
    )
    _add_rule_flags(run)
    run.add_argument("--mode", choices=("enforce", "monitor", "off"))
    run.add_argument("--config", metavar="FILE", help="TOML config (default: ./sockguard.toml or pyproject)")
    run.add_argument("--log", metavar="FILE", help="append JSON-lines decisions to FILE")
    run.add_argument(
        "--no-native", dest="native", action="store_false", help="do not preload the native layer (docs/native.md)"
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="refuse to start a program the native layer cannot guard (static, setuid), or with a rule broader "
        "than it looks (a public suffix, 0.0.0.0/0)",
    )
    run.add_argument(
        "--log-special",
        action="store_true",
        help="let --log be a FIFO or device such as /dev/stdout (written without blocking; lines that do not fit "
        "are dropped and counted)",
    )
    run.add_argument("program", nargs=argparse.REMAINDER, help="PROGRAM [ARGS...] (use -- before it if needed)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="print the decision for URLs or HOST[:PORT] (exit 1 if any is blocked)")
    _add_rule_flags(check)
    check.add_argument("targets", nargs="+", metavar="URL|HOST[:PORT]")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--strict", action="store_true", help="exit 2 if a rule allows a public suffix or 0.0.0.0/0")
    check.set_defaults(func=cmd_check)

    status = sub.add_parser(
        "status",
        help="show the configuration in force here (exit 2 if it is broken, 1 if the decision log cannot be written)",
    )
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.add_argument("--strict", action="store_true", help="exit 2 if a rule allows a public suffix or 0.0.0.0/0")
    status.set_defaults(func=cmd_status)

    pythonpath = sub.add_parser("pythonpath", help="print the directory to put on PYTHONPATH (Dockerfiles)")
    pythonpath.set_defaults(func=cmd_pythonpath)

    demo = sub.add_parser("demo", help="offline replay of the health-check incident")
    demo.add_argument("--fast", action="store_true", help="fewer retry rounds")
    demo.set_defaults(func=cmd_demo)

    for name, (module_name, help_text) in TOOL_COMMANDS.items():
        module = importlib.import_module(module_name)
        tool = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(tool)
        tool.set_defaults(func=module.main)
    return parser


_RUN_VALUE_OPTIONS = {"--allow", "--deny", "--mode", "--config", "--log"}
_RUN_FLAGS = {"--no-native", "--strict", "--log-special", "-h", "--help"}


def _split_run(argv: list[str]) -> tuple[list[str], list[str]]:
    """``run``'s own options, and the program command line (which may itself
    start with ``-m``/``-c`` or contain options argparse must not touch)."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], argv[i + 1 :]
        if arg in _RUN_VALUE_OPTIONS:
            i += 2
        elif arg.split("=", 1)[0] in _RUN_VALUE_OPTIONS or arg in _RUN_FLAGS:
            i += 1
        else:
            break
    return argv[:i], argv[i:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        options, program = _split_run(argv)
        args = parser.parse_args(options)
        args.program = program
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
