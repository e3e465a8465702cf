"""What every scanner produces (:class:`Scalar`, :class:`Ref`, :class:`ScanError`) and the helpers they share.

A scanner turns one file format into string scalars with their key context and source position. Scanners are
stdlib only, never touch the network and never import the scanned code.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

#: Stands for a run-time value (an f-string field, a variable) inside a folded Python string.
HOLE = "\x00"


@dataclass(slots=True)
class Scalar:
    """One string value and where it came from."""

    keys: tuple[str, ...]  # key context, outermost first: ("services", "web", "environment", "VPN_GATE_URL")
    value: str
    line: int  # 1-based; 0 = no file position (the process environment)
    column: int  # 1-based column of value[0] (of the literal's start when not exact)
    exact: bool = True  # value maps character for character onto the source from (line, column)
    end_line: int = 0  # last line of the literal, bounds the search when not exact
    lang: str = "config"  # "python" applies the stricter code heuristics
    pair: bool = False  # a (host, port) tuple rendered as host:port


@dataclass(slots=True)
class Ref:
    """A file another file points at (docker-compose ``env_file``)."""

    path: str
    line: int


class ScanError(Exception):
    """A file that could not be parsed; the message says why."""


#: A comment after a value (dotenv, YAML): whitespace, then "#".
INLINE_COMMENT = re.compile(r"[ \t]#")
_NEWLINE = re.compile(r"\r\n|\r|\n")


def iter_lines(text: str) -> Iterator[str]:
    """``text.split("\\n")`` one line at a time: a 10 MB file is not held twice as a list of lines."""
    start = 0
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1


def source_lines(text: str) -> list[str]:
    """Lines as the parsers count them: str.splitlines() also breaks at form feeds and U+2028."""
    return _NEWLINE.split(text)


class Lines:
    """Offset -> (line, column) for one text, both 1-based."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def at(self, offset: int) -> tuple[int, int]:
        i = bisect_right(self.starts, offset) - 1
        return i + 1, offset - self.starts[i] + 1


_ESCAPES = {
    "a": "\x07",
    "v": "\x0b",
    "0": "\x00",
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    '"': '"',
    "\\": "\\",
    "/": "/",
}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[ \t]*\n\s*|.)")


def unescape(text: str) -> str:
    """Backslash escapes as TOML, JSON, YAML and .env double-quoted strings use them."""

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[0] in "uUx" and len(code) > 1:
            try:
                return chr(int(code[1:], 16))
            except ValueError:
                return code
        if code[0] in " \t\n" and code.strip(" \t") != code.strip(" \t\n"):
            return ""  # line-ending backslash
        return _ESCAPES.get(code, code)

    return _ESCAPE.sub(one, text)
