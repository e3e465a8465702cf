"""``.env`` files: ``KEY=value``, ``export KEY=value``, single and double quotes (escapes, several lines),
`` #`` comments."""

from __future__ import annotations

import re
from collections.abc import Iterator

from sockguard.audit.scanners.base import INLINE_COMMENT, Scalar, unescape

_DOTENV_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*")


def scan_dotenv(text: str) -> Iterator[Scalar]:
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        m = _DOTENV_KEY.match(line)
        if not m:
            i += 1
            continue
        key, start = m.group(1), m.end()
        rest = line[start:]
        if rest[:1] in ("'", '"'):
            quote, body, last = rest[0], rest[1:], i
            close = _close_quote(body, quote)
            while close < 0 and last + 1 < len(lines):  # a quoted value may span lines
                last += 1
                body += "\n" + lines[last].rstrip("\r")
                close = _close_quote(body, quote)
            value = body if close < 0 else body[:close]
            exact = quote == "'" or "\\" not in value
            if not exact:
                value = unescape(value)
            yield Scalar((key,), value, i + 1, start + 2, exact, last + 1)
            i = last + 1
            continue
        cut = INLINE_COMMENT.search(rest)
        value = (rest[: cut.start()] if cut else rest).rstrip()
        if value:
            yield Scalar((key,), value, i + 1, start + 1)
        i += 1


def _close_quote(body: str, quote: str) -> int:
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and quote == '"':
            i += 2
            continue
        if c == quote:
            return i
        i += 1
    return -1
