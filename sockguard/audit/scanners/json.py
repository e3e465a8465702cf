"""JSON: every string value with its key path and exact position. Tolerant: a broken file yields what can
be read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from sockguard.audit.scanners.base import Lines, Scalar

_JSON_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def scan_json(text: str) -> Iterator[Scalar]:
    """String values with their key path. Tolerant: a broken file yields what can be read."""
    where = Lines(text)
    stack: list[list] = []  # [kind, key, expecting_key]
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in ("{", "["):
            stack.append([tok, None, tok == "{"])
        elif tok in ("}", "]"):
            if stack:
                stack.pop()
        elif tok == ",":
            if stack and stack[-1][0] == "{":
                stack[-1][2] = True
        elif tok == ":":
            continue
        elif tok[0] == '"':
            body = tok[1:-1]
            exact = "\\" not in body
            if not exact:
                try:
                    body = json.loads(tok)
                except ValueError:
                    pass
            if stack and stack[-1][0] == "{" and stack[-1][2]:
                stack[-1][1], stack[-1][2] = body, False
                continue
            keys = tuple(frame[1] for frame in stack if frame[1] is not None)
            line, column = where.at(m.start() + 1)
            yield Scalar(keys, body, line, column, exact, line)
