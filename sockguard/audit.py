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
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sockguard import audit_scan as scan
from sockguard.audit_find import KINDS, RANK, SEVERITIES, Finding, Target, findings_for
from sockguard.audit_scan import Ref, Scalar, ScanError

EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
BASELINE_VERSION = 1
MAX_FILE_BYTES = 10 * 1024 * 1024
ENVIRONMENT = "<environment>"


class AuditError(Exception):
    """A usage or input problem: exit status 2, message names the problem."""


@dataclass
class Stats:
    files: int = 0
    bytes: int = 0
    by_scanner: Counter = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was not scanned)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def to_json(self) -> dict:
        rate = self.files / self.seconds if self.seconds else None
        return {
            "files": self.files,
            "bytes": self.bytes,
            "by_scanner": dict(sorted(self.by_scanner.items())),
            "seconds": round(self.seconds, 3),
            "files_per_second": None if rate is None else round(rate, 1),
            "problems": [{"path": p, "error": e} for p, e in self.problems],
        }


class Progress:
    """One status line on stderr: redrawn in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, enabled: bool, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = enabled
        self.last = 0.0
        self.shown = False

    def update(self, stats: Stats, findings: int, path: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        elapsed = max(now - stats.started, 1e-6)
        line = f"sockguard audit: {stats.files} files, {findings} findings, {stats.files / elapsed:.0f} files/s  {path}"
        if self.tty:
            self.stream.write("\r" + line[:119] + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.enabled and self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def display_path(path: str, cwd: str) -> str:
    absolute = os.path.abspath(path)
    rel = os.path.relpath(absolute, cwd)
    shown = absolute if rel.startswith(os.pardir) else rel
    return shown.replace(os.sep, "/")


def _position(lines: list[str]):
    def position(scalar: Scalar, target: Target) -> tuple[int, int]:
        if scalar.line == 0:
            return 0, 0
        if scalar.exact:
            before = scalar.value[: target.offset]
            newlines = before.count("\n")
            if not newlines:
                return scalar.line, scalar.column + target.offset
            return scalar.line + newlines, len(before) - before.rfind("\n")
        last = max(scalar.end_line, scalar.line)
        for number in range(scalar.line, min(last, len(lines)) + 1):
            text = lines[number - 1]
            found = text.find(target.text, scalar.column - 1 if number == scalar.line else 0)
            if found >= 0:
                return number, found + 1
        return scalar.line, scalar.column

    return position


class Auditor:
    """Walks paths lazily and yields findings file by file."""

    def __init__(
        self,
        policy,
        *,
        include_tests: bool = False,
        exclude: Iterable[str] = (),
        cwd: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.policy = policy
        self.include_tests = include_tests
        self.exclude = tuple(exclude)
        self.cwd = cwd or os.getcwd()
        self.stats = Stats()
        self.progress = progress or Progress(False)
        self.seen: set[str] = set()
        self.count = 0

    def scan_environment(self, environ) -> Iterator[Finding]:
        position = _position([])
        for scalar in scan.scan_environment(environ):
            yield from self._count(findings_for(self.policy, scalar, ENVIRONMENT, "env", position))

    def scan_paths(self, paths: Iterable[str]) -> Iterator[Finding]:
        for path in paths:
            if os.path.isdir(path):
                files: Iterable[tuple[str, str | None]] = scan.walk(path, self.include_tests, self.exclude)
            elif os.path.isfile(path):
                files = [(path, scan.file_kind(os.path.basename(path)))]
            else:
                raise AuditError(f"{path}: no such file or directory")
            for file, kind in files:
                if kind is None:
                    self.stats.problems.append(
                        (display_path(file, self.cwd), "not a file type audit reads (.env, .py, .toml, .yaml, ...)")
                    )
                    continue
                yield from self.scan_file(file, kind)
        self.stats.seconds = time.monotonic() - self.stats.started

    def _count(self, findings: Iterable[Finding]) -> Iterator[Finding]:
        for f in findings:
            self.count += 1
            yield f

    def scan_file(self, path: str, kind: str) -> Iterator[Finding]:
        real = os.path.realpath(path)
        if real in self.seen:
            return
        self.seen.add(real)
        shown = display_path(path, self.cwd)
        if os.path.basename(path) == "sockguard.toml":
            return  # the policy itself
        try:
            size = os.path.getsize(path)
            if size > MAX_FILE_BYTES:
                self.stats.problems.append((shown, f"skipped: larger than {MAX_FILE_BYTES // 1024 // 1024} MiB"))
                return
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            self.stats.problems.append((shown, f"cannot read: {exc.strerror or exc}"))
            return
        if b"\x00" in data[:8192]:
            self.stats.problems.append((shown, "skipped: binary content"))
            return
        if kind == "json" and b'"tool": "sockguard audit"' in data[:200]:
            return  # a baseline or JSON report of ours: its values are findings already
        self.stats.files += 1
        self.stats.bytes += len(data)
        refs: list[Ref] = []
        try:
            if kind == "python":
                text = scan.decode_python(data)
                items: Iterable[Scalar | Ref] = scan.scan_python(data, text)
            else:
                text = data.decode("utf-8-sig", errors="replace")
                if kind in ("yaml", "compose") and "apiVersion:" in text and "kind:" in text:
                    kind = "k8s"
                parse = {
                    "dotenv": scan.scan_dotenv,
                    "ini": scan.scan_ini,
                    "toml": scan.scan_toml,
                    "json": scan.scan_json,
                }.get(kind, scan.scan_yaml)
                items = parse(text)
            self.stats.by_scanner[kind] += 1
            position = _position(scan.source_lines(text))
            found: list[Finding] = []
            for item in items:
                if isinstance(item, Ref):
                    refs.append(item)
                    continue
                found.extend(findings_for(self.policy, item, shown, kind, position))
        except ScanError as exc:
            self.stats.problems.append((shown, str(exc)))
            return
        except RecursionError:
            self.stats.problems.append((shown, "too deeply nested to scan"))
            return
        except Exception as exc:  # a bug here must not cost the rest of the report; it is listed, not hidden
            self.stats.problems.append((shown, f"internal error, file not scanned: {type(exc).__name__}: {exc}"))
            return
        yield from self._count(found)
        self.progress.update(self.stats, self.count, shown)
        for ref in refs:  # docker-compose env_file, relative to the compose file
            target = os.path.join(os.path.dirname(path), ref.path)
            if os.path.isfile(target):
                yield from self.scan_file(target, "dotenv")
            else:
                self.stats.problems.append((shown, f"line {ref.line}: env_file {ref.path} not found"))


# --- policy and baseline ---------------------------------------------------


def load_policy(args: argparse.Namespace):
    """(Policy, description) from the config in force plus --config/--allow/--deny."""
    from sockguard.config import load_settings, with_flags
    from sockguard.rules import RuleError

    if args.config and not os.path.isfile(args.config):
        raise AuditError(f"--config {args.config}: no such file")
    settings = load_settings(with_flags(os.environ, config=args.config))
    settings.allow = [*settings.allow, *args.allow]  # validated with a message of audit's own below
    settings.deny = [*settings.deny, *args.deny]
    try:
        policy = settings.build_policy()
    except RuleError as exc:
        raise AuditError(f"bad rule: {exc}") from None
    return policy, settings


def load_baseline(path: str) -> Counter:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise AuditError(f"baseline {path} does not exist (create it with --write-baseline {path})") from None
    except OSError as exc:
        raise AuditError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AuditError(f"baseline {path} is not valid JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("version") != BASELINE_VERSION
        or not isinstance(data.get("findings"), list)
    ):
        raise AuditError(f"baseline {path}: expected {{'version': {BASELINE_VERSION}, 'findings': [...]}}")
    counts: Counter = Counter()
    for i, entry in enumerate(data["findings"]):
        fp = entry.get("fingerprint") if isinstance(entry, dict) else None
        count = entry.get("count", 1) if isinstance(entry, dict) else None
        if not isinstance(fp, str) or not isinstance(count, int) or count < 1:
            raise AuditError(f"baseline {path}: entry {i} needs a 'fingerprint' string and a positive 'count'")
        counts[fp] += count
    return counts


def baseline_document(findings: list[Finding]) -> dict:
    grouped: dict[str, dict] = {}
    for f in findings:
        entry = grouped.get(f.fingerprint)
        if entry is None:
            grouped[f.fingerprint] = {
                "fingerprint": f.fingerprint,
                "classification": f.kind,
                "path": f.path,
                "key": f.key,
                "value": f.value,
                "count": 1,
            }
        else:
            entry["count"] += 1
    return {"version": BASELINE_VERSION, "tool": "sockguard audit", "findings": list(grouped.values())}


def apply_baseline(findings: list[Finding], counts: Counter) -> tuple[list[Finding], int]:
    """Drop as many occurrences of each fingerprint as the baseline accepted."""
    remaining = Counter(counts)
    kept, suppressed = [], 0
    for f in findings:
        if remaining[f.fingerprint] > 0:
            remaining[f.fingerprint] -= 1
            suppressed += 1
        else:
            kept.append(f)
    return kept, suppressed


# --- output ----------------------------------------------------------------

_MARK = {"error": "✗", "warning": "!", "note": "✓"}
_ASCII_MARK = {"error": "X", "warning": "!", "note": "+"}


def render_text(findings: list[Finding], stats: Stats, settings, suppressed: int, encoding: str | None) -> str:
    marks = _MARK
    try:
        "".join(_MARK.values()).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        marks = _ASCII_MARK
    bar = "=" * 70
    rules = f"{len(settings.allow)} allow / {len(settings.deny)} deny rules from {settings.source}"
    loopback = "loopback allowed" if settings.allow_loopback else "loopback blocked"
    out = [bar, "SOCKGUARD AUDIT: destinations in configuration and code", bar, f"policy: {rules}; {loopback}", ""]
    for f in findings:
        where = f"{f.path}:{f.key}" if f.line == 0 else f"{f.path}:{f.line}:{f.column}"
        key = f"{f.key}=" if f.key else ""
        out.append(f"{marks[f.severity]} {where}: {f.severity}[{f.kind}] {key}{f.value}")
        out.append(f"    {f.message}")
    if findings:
        out.append("")
    counts = Counter(f.severity for f in findings)
    rate = f", {stats.files / stats.seconds:.0f} files/s" if stats.seconds > 0 and stats.files else ""
    scanners = ", ".join(f"{n} {k}" for k, n in sorted(stats.by_scanner.items()))
    out += [bar, "SUMMARY", bar]
    out.append(f"scanned {stats.files} files ({scanners or 'none'}) in {stats.seconds:.2f} s{rate}")
    for path, error in stats.problems[:20]:
        out.append(f"  not scanned: {path}: {error}")
    if len(stats.problems) > 20:
        out.append(f"  ... and {len(stats.problems) - 20} more not scanned (see --format json)")
    total = ", ".join(f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in reversed(SEVERITIES))
    tail = f" ({suppressed} suppressed by the baseline)" if suppressed else ""
    if findings:
        out.append(f"{marks['error'] if counts['error'] else marks['warning']} findings: {total}{tail}")
    else:
        out.append(f"{marks['note']} no findings{tail}")
    return "\n".join(out) + "\n"


def render_json(findings: list[Finding], stats: Stats, settings, suppressed: int) -> str:
    counts = Counter(f.severity for f in findings)
    doc = {
        "version": 1,
        "tool": "sockguard audit",
        "policy": {
            "source": settings.source,
            "allow": settings.allow,
            "deny": settings.deny,
            "allow_loopback": settings.allow_loopback,
        },
        "summary": {s: counts[s] for s in reversed(SEVERITIES)} | {"suppressed": suppressed},
        "stats": stats.to_json(),
        "findings": [f.to_json() for f in findings],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# --- command ---------------------------------------------------------------


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
    parser.add_argument("--progress", action="store_true", help="show progress on stderr even when it is not a TTY")


def main(args: argparse.Namespace) -> int:
    from sockguard import __version__
    from sockguard.errors import ConfigError

    try:
        policy, settings = load_policy(args)
        baseline = load_baseline(args.baseline) if args.baseline else None
        paths = args.paths or ["."]
        for path in paths:
            if not os.path.exists(path):
                raise AuditError(f"{path}: no such file or directory")
        progress = Progress(args.progress or sys.stderr.isatty())
        auditor = Auditor(policy, include_tests=args.include_tests, exclude=args.exclude, progress=progress)
        for own in (args.baseline, args.write_baseline, args.output):
            if own:
                auditor.seen.add(os.path.realpath(own))  # never audit our own output
        findings: list[Finding] = []
        try:
            if args.env:
                findings.extend(auditor.scan_environment(os.environ))
            findings.extend(auditor.scan_paths(paths))
        finally:
            progress.done()
    except (AuditError, ConfigError) as exc:
        print(f"sockguard audit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    floor = RANK[args.min_severity]
    findings = [f for f in findings if RANK[f.severity] >= floor]
    if args.write_baseline:
        try:
            with open(args.write_baseline, "w", encoding="utf-8") as fh:
                json.dump(baseline_document(findings), fh, indent=2, ensure_ascii=False)
                fh.write("\n")
        except OSError as exc:
            print(f"sockguard audit: cannot write baseline {args.write_baseline}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        print(f"sockguard audit: wrote {len(findings)} findings to {args.write_baseline}", file=sys.stderr)
        return EXIT_CLEAN
    suppressed = 0
    if baseline is not None:
        findings, suppressed = apply_baseline(findings, baseline)
    if args.format == "json":
        report = render_json(findings, auditor.stats, settings, suppressed)
    elif args.format == "sarif":
        from sockguard.audit_sarif import to_sarif

        doc = to_sarif(findings, version=__version__, root=os.getcwd(), problems=auditor.stats.problems)
        report = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    else:
        encoding = None if args.output else getattr(sys.stdout, "encoding", None)
        report = render_text(findings, auditor.stats, settings, suppressed, encoding or "utf-8")
    try:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(report)
        else:
            sys.stdout.write(report)
    except OSError as exc:
        print(f"sockguard audit: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    if args.fail_on == "never":
        return EXIT_CLEAN
    threshold = RANK[args.fail_on]
    return EXIT_FINDINGS if any(RANK[f.severity] >= threshold for f in findings) else EXIT_CLEAN


__all__ = ["KINDS", "AuditError", "Auditor", "Finding", "add_arguments", "main"]
