"""Find risky destinations in configuration and code: raw IPs, internal and cloud-metadata
addresses, hosts missing from the allowlist, and proxy settings that route around name checks.

Scans .env files, docker-compose and Kubernetes YAML, TOML/YAML/JSON/INI configs and Python
source (string constants, f-strings, module constants), plus the current environment with
--env. Pure static analysis: nothing is resolved or contacted. Each finding is classified with
the sockguard policy in force (config file and SOCKGUARD_* variables, plus --allow/--deny).
Exit status: 0 clean, 1 findings at or above --fail-on, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator

from sockguard.audit.auditor import AuditError, Auditor, Progress
from sockguard.audit.baseline import BaselineWriter, Suppressor, load_baseline
from sockguard.audit.findings import RANK, SEVERITIES, Finding
from sockguard.audit.output import Tally, json_chunks, text_chunks
from sockguard.breadth import warn_broad
from sockguard.display import printable
from sockguard.errors import ConfigError, RuleError
from sockguard.paths import write_atomically, write_output

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


def load_policy(args: argparse.Namespace):
    """(Policy, Settings) from the config in force plus --config/--allow/--deny."""
    from sockguard.config import load_settings, with_flags

    if args.config and not os.path.isfile(args.config):
        raise AuditError(f"--config {args.config}: no such file")
    settings = load_settings(with_flags(os.environ, config=args.config))
    try:
        settings.extend(args.allow, args.deny, "--")
    except RuleError as exc:
        raise AuditError(f"bad rule: {exc}") from None
    return settings.build_policy(), settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or directories to scan (default: .)")
    parser.add_argument("--env", action="store_true", help="also scan the current process environment")
    parser.add_argument("--format", choices=("text", "json", "sarif"), default="text")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")
    parser.add_argument(
        "--fail-on",
        choices=(*reversed(SEVERITIES), "never"),
        default="error",
        help="exit 1 when a finding has this severity or higher (default: error)",
    )
    parser.add_argument(
        "--min-severity",
        choices=SEVERITIES,
        default="note",
        help="drop findings below this severity entirely (default: note, i.e. keep all)",
    )
    parser.add_argument("--allow", action="append", default=[], metavar="RULE", help="extra allow rule (repeatable)")
    parser.add_argument("--deny", action="append", default=[], metavar="RULE", help="extra deny rule (repeatable)")
    parser.add_argument("--config", metavar="FILE", help="sockguard TOML config (default: the one in force here)")
    parser.add_argument("--baseline", metavar="FILE", help="accept the findings recorded in FILE")
    parser.add_argument("--write-baseline", metavar="FILE", help="record the current findings in FILE and exit 0")
    parser.add_argument("--include-tests", action="store_true", help="also scan test directories and test_*.py")
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files and directories matching GLOB (relative path or name; repeatable), e.g. 'build'",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a file or value could not be scanned (in full), or a rule allows a public suffix",
    )
    parser.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a TTY")


def _findings(auditor: Auditor, args: argparse.Namespace, paths: list[str]) -> Iterator[Finding]:
    if args.env:
        yield from auditor.scan_environment(os.environ)
    yield from auditor.scan_paths(paths)


def main(args: argparse.Namespace) -> int:
    from sockguard import __version__

    try:
        policy, settings = load_policy(args)
        baseline = load_baseline(args.baseline) if args.baseline else None
        paths = args.paths or ["."]
        for path in paths:
            if not os.path.lexists(path):
                raise AuditError(f"{path}: no such file or directory")
    except (AuditError, ConfigError) as exc:
        print(f"sockguard audit: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    too_broad = warn_broad(settings.allow, args.strict, "sockguard audit")
    progress = Progress(args.progress or sys.stderr.isatty())
    auditor = Auditor(policy, include_tests=args.include_tests, exclude=args.exclude, progress=progress)
    for own in (args.baseline, args.write_baseline, args.output):
        if own:
            auditor.seen.add(os.path.realpath(own))  # never audit our own output
    floor = RANK[args.min_severity]
    findings: Iterable[Finding] = (f for f in _findings(auditor, args, paths) if RANK[f.severity] >= floor)
    try:
        if args.write_baseline:
            writer = BaselineWriter()
            for finding in findings:
                writer.add(finding)
            progress.done()
            try:
                write_atomically(args.write_baseline, writer.chunks())
            except OSError as exc:
                print(f"sockguard audit: cannot write baseline {args.write_baseline}: {exc.strerror}", file=sys.stderr)
                return EXIT_USAGE
            print(f"sockguard audit: wrote {writer.total} findings to {args.write_baseline}", file=sys.stderr)
            return EXIT_CLEAN
        suppressor = Suppressor(baseline if baseline is not None else Counter())
        tally = Tally()
        counted = tally.count(suppressor.filter(findings))
        held = lambda: suppressor.suppressed  # noqa: E731 - read once the stream is done
        if args.format == "json":
            chunks = json_chunks(counted, auditor.stats, settings, tally, held)
        elif args.format == "sarif":
            from sockguard.audit.sarif import sarif_chunks

            chunks = sarif_chunks(counted, version=__version__, root=os.getcwd(), stats=auditor.stats)
        else:
            encoding = None if args.output else getattr(sys.stdout, "encoding", None)
            chunks = text_chunks(counted, auditor.stats, settings, tally, held, encoding or "utf-8")
        try:
            write_output(args.output, chunks)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            print(f"sockguard audit: cannot write {args.output or 'stdout'}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    except AuditError as exc:  # a path vanished during the scan
        print(f"sockguard audit: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        progress.done()
    if too_broad:
        return EXIT_FINDINGS
    if args.strict and auditor.stats.problem_count:
        print(
            f"sockguard audit: {auditor.stats.problem_count} file(s) or value(s) not scanned and --strict: exit 1",
            file=sys.stderr,
        )
        return EXIT_FINDINGS
    if args.fail_on == "never":
        return EXIT_CLEAN
    return EXIT_FINDINGS if tally.highest >= RANK[args.fail_on] else EXIT_CLEAN


__all__ = ["SEVERITIES", "add_arguments", "main"]
