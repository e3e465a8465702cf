"""Summarise a sockguard decision log (JSON lines): what did this process talk to?

Lists every destination (host, port, addresses, counts, first/last seen, calling
code), the blocked and would-block attempts, and patterns worth a look. --suggest
prints the narrowest allowlist (TOML) that covers what the log saw (learn from
monitor mode, then enforce); --html writes one self-contained page with a timeline.
The log is read as a stream in bounded memory, so million-line logs are fine.

Exit codes: 0 ok; 1 with --fail-on-block when the log holds any block or
would-block decision; 2 usage error, unreadable input or output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from sockguard.paths import write_atomically, write_output
from sockguard.report.fields import MAX_DESTINATIONS, safe
from sockguard.report.suggest import render_toml, suggest
from sockguard.report.summary import Summary
from sockguard.report.text import _size, render_text

EXIT_OK, EXIT_BLOCKS, EXIT_USAGE = 0, 1, 2


class Progress:
    """Progress on stderr: redrawn in place on a terminal, a line every few
    seconds otherwise (--progress); silent for inputs that finish quickly."""

    def __init__(self, stream: IO[str], tty: bool, total: int | None) -> None:
        self.stream = stream
        self.tty = tty
        self.total = total  # bytes over all files, if known
        self.before = 0  # bytes in files already read
        self.start = time.monotonic()
        self.next = self.start + (0.5 if tty else 2.0)
        self.shown = False

    def update(self, name: str, done: int, lines: int) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + (0.25 if self.tty else 2.0)
        at = self.before + done
        share = f" ({100 * at / self.total:.0f}%)" if self.total else ""
        text = f"sockguard report: {safe(name)}: {lines:,} lines, {_size(at)}{share}, {now - self.start:.1f} s"
        self._write(text)

    def file_done(self, size: int) -> None:
        self.before += size

    def _write(self, text: str, end: str = "") -> None:
        self.shown = True
        try:
            self.stream.write(f"\r{text}\x1b[K{end}" if self.tty else text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self, lines: int) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            if self.shown:
                self._write(f"sockguard report: {lines:,} lines in {elapsed:.1f} s", "\n")
        else:
            self._write(f"sockguard report: done, {lines:,} lines in {elapsed:.1f} s")


# -- command line ----------------------------------------------------------------------


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", metavar="LOG.jsonl", help="decision log(s) to read; - for stdin")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument(
        "--suggest", action="store_true", help="print the narrowest allowlist (TOML) covering what the log saw"
    )
    parser.add_argument(
        "--port-limit",
        type=_non_negative,
        default=3,
        metavar="N",
        help="--suggest: port-scope a host's rule when it used at most N ports (default 3; 0 = never)",
    )
    parser.add_argument(
        "--wildcard-threshold",
        type=_non_negative,
        default=0,
        metavar="N",
        help="--suggest: use *.parent when MORE than N sibling names were seen (default 0 = never)",
    )
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page to FILE")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the text/JSON/TOML output to FILE, not stdout")
    parser.add_argument(
        "--fail-on-block", action="store_true", help="exit 1 if the log holds any block or would-block decision"
    )
    parser.add_argument(
        "--top", type=_non_negative, default=30, metavar="N", help="text: destinations listed (default 30; 0 = all)"
    )
    parser.add_argument(
        "--max-destinations",
        type=_positive,
        default=MAX_DESTINATIONS,
        metavar="N",
        help=f"itemise at most N destinations, count the rest (default {MAX_DESTINATIONS}; bounds memory)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="progress on stderr (default: if a TTY)"
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress output"
    )


def _error(message: str) -> int:
    print(f"sockguard report: {safe(message)}", file=sys.stderr)
    return EXIT_USAGE


def _open_inputs(paths: list[str]) -> list[tuple[str, IO[bytes], int | None]]:
    opened: list[tuple[str, IO[bytes], int | None]] = []
    try:
        for path in paths:
            if path == "-":
                opened.append(("<stdin>", sys.stdin.buffer, None))
                continue
            if os.path.isdir(path):
                raise OSError(f"{path} is a directory, not a decision log")
            stream = open(path, "rb")  # noqa: SIM115 - closed by the caller
            size = os.fstat(stream.fileno()).st_size
            opened.append((path, stream, size if size else None))
    except OSError:
        for _, done, _ in opened:
            if done is not sys.stdin.buffer:
                done.close()
        raise
    return opened


def build(args: argparse.Namespace) -> Summary:
    """Read the logs named on the command line into a finished Summary. Raises OSError."""
    inputs = _open_inputs(args.logs)
    summary = Summary(args.max_destinations)
    tty = sys.stderr.isatty()
    show = args.progress if args.progress is not None else tty
    sizes = [size for _, _, size in inputs]
    progress = Progress(sys.stderr, tty, sum(s for s in sizes if s) if all(sizes) else None) if show else None
    try:
        for name, stream, _ in inputs:
            summary.read(name, stream, progress)
            if progress is not None:
                progress.file_done(summary.files[-1]["bytes"])
    finally:
        for _, stream, _ in inputs:
            if stream is not sys.stdin.buffer:
                stream.close()
    if progress is not None:
        progress.close(summary.lines)
    return summary.finish()


def main(args: argparse.Namespace) -> int:
    try:
        summary = build(args)
    except OSError as exc:
        return _error(f"cannot read {_describe(exc)}")
    if summary.malformed and not summary.events and not summary.other and not summary.requests.requests:
        first = summary.malformed_samples[0] if summary.malformed_samples else None
        detail = f" ({first.where}: {first.problem})" if first else ""
        return _error(f"{', '.join(args.logs)} holds no sockguard events{detail}; is it a decision log?")
    sources = [f["path"] for f in summary.files]
    if args.suggest:
        suggestion = suggest(summary, args.port_limit, args.wildcard_threshold)
        if suggestion.incomplete_events:
            print(
                f"sockguard report: warning: the suggestion is INCOMPLETE, {suggestion.incomplete_events:,} events "
                f"went to destinations past --max-destinations {summary.max_destinations:,}",
                file=sys.stderr,
            )
        if args.format == "json":
            text: Iterable[str] = _json_chunks(suggestion.to_json())
        else:
            text = [render_toml(suggestion, summary, sources)]
    elif args.format == "json":
        text = summary.json_chunks()
    else:
        text = [render_text(summary, args.top)]
    if args.html:
        from sockguard.report.html import render_html

        try:
            write_atomically(args.html, render_html(summary))
        except OSError as exc:
            return _error(f"cannot write HTML to {_describe(exc)}")
    try:
        write_output(args.output, text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        return _error(f"cannot write output to {_describe(exc)}")
    if args.fail_on_block and (summary.counts[1] or summary.counts[2]):
        return EXIT_BLOCKS
    return EXIT_OK


def _describe(exc: OSError) -> str:
    if exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _json_chunks(data: Any) -> Iterable[str]:
    """JSON written piecewise: a large report is never one big string in memory."""
    yield from json.JSONEncoder(indent=1).iterencode(data)
    yield "\n"
