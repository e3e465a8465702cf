"""TOML: every string (basic, literal, multi-line) with its table and key path. The file is validated with
:mod:`tomllib` first, so the tokeniser only ever sees valid TOML; the tokeniser keeps the exact positions
that tomllib's values do not have."""

from __future__ import annotations

import re
from collections.abc import Iterator

from sockguard.audit.scanners.base import Lines, Scalar, ScanError, unescape

_TOML_TOKEN = re.compile(
    r'(?P<mlb>"""(?:\\[\s\S]|[^\\])*?"""(?!"))'
    r"|(?P<mll>'''[\s\S]*?'''(?!'))"
    r'|(?P<basic>"(?:\\.|[^"\\\n])*")'
    r"|(?P<lit>'[^'\n]*')"
    r"|(?P<comment>\#[^\n]*)"
    r"|(?P<nl>\n)"
    r"|(?P<punct>[=\[\]{},])"
    r"|(?P<ws>[ \t\r]+)"
    r"|(?P<bare>[^\s=\[\]{},\#\"']+)"
)


def scan_toml(text: str) -> Iterator[Scalar]:
    import tomllib

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScanError(f"not valid TOML: {exc}") from None
    where = Lines(text)
    table: tuple[str, ...] = ()
    nest: list[tuple[str, tuple[str, ...]]] = []  # open '[' / '{' in values, with their key path
    keyparts: list[str] = []
    current: tuple[str, ...] = ()
    expect_key = True  # at the start of a statement or of an inline-table entry
    header: list[str] | None = None
    for m in _TOML_TOKEN.finditer(text):
        kind, tok = m.lastgroup, m.group()
        if kind in ("ws", "comment"):
            continue
        if header is not None:  # inside [table] or [[array.of.tables]]
            if tok == "]":
                table, header = tuple(header), None
            elif kind in ("basic", "lit"):
                header.append(_toml_string(kind, tok))
            elif kind == "bare":
                header.extend(p for p in tok.split(".") if p)
            continue
        if kind == "nl":
            if not nest:
                expect_key, keyparts = True, []
            continue
        if expect_key:
            if tok == "[" and not nest and not keyparts:
                header = []
            elif kind in ("basic", "lit"):
                keyparts.append(_toml_string(kind, tok))
            elif kind == "bare":
                keyparts.extend(p for p in tok.split(".") if p)
            elif tok == "=":
                base = nest[-1][1] if nest else table
                current, keyparts, expect_key = (*base, *keyparts), [], False
            elif tok == "}" and nest:
                nest.pop()
                expect_key = bool(nest) and nest[-1][0] == "{"
            continue
        if tok in ("[", "{"):
            nest.append((tok, current))
            expect_key = tok == "{"
        elif tok in ("]", "}"):
            if nest:
                current = nest.pop()[1]
        elif tok == ",":
            expect_key = bool(nest) and nest[-1][0] == "{"
        elif kind in ("basic", "lit", "mlb", "mll"):
            yield _toml_scalar(kind, tok, m.start(), current, where)


def _toml_string(kind: str, tok: str) -> str:
    body = tok[1:-1]
    return unescape(body) if kind == "basic" and "\\" in body else body


def _toml_scalar(kind: str, tok: str, start: int, keys: tuple[str, ...], where: Lines) -> Scalar:
    quote = 3 if kind in ("mlb", "mll") else 1
    body, start = tok[quote:-quote], start + quote
    if quote == 3 and body.startswith(("\n", "\r\n")):  # a newline right after the opening quotes is trimmed
        skip = 1 if body[0] == "\n" else 2
        body, start = body[skip:], start + skip
    exact = True
    if kind in ("basic", "mlb") and "\\" in body:
        body, exact = unescape(body), False
    line, column = where.at(start)
    return Scalar(keys, body, line, column, exact, line + tok.count("\n"))
