"""Scanners for ``sockguard audit``: each turns one file format into string scalars with their
key context and source position. Stdlib only, no network, no imports of the scanned code.

YAML is read line by line (PyYAML is not a runtime dependency, and a real parser loses line
numbers); TOML, JSON, INI and .env files are tokenised directly for the same reason. TOML is
validated with :mod:`tomllib` first, so the tokeniser only ever sees valid TOML.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import json
import os
import re
import tokenize
import warnings
from bisect import bisect_right
from collections.abc import Callable, Iterator
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


# --- file discovery --------------------------------------------------------

SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".tox", ".nox", ".venv", "venv", ".eggs"}
    | {".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"}
)
TEST_DIRS = frozenset({"test", "tests", "testing", "__tests__", "fixtures", "testdata", "test_data", "test-data"})
LOCK_FILES = frozenset({"package-lock.json", "npm-shrinkwrap.json", "composer.lock", "pipfile.lock"})
COMPOSE_NAME = re.compile(r"^(docker-)?compose([.-][\w.-]*)?\.ya?ml$")


def file_kind(name: str) -> str | None:
    """The scanner for a file name, or None when audit does not read such files."""
    low = name.lower()
    if low in LOCK_FILES:
        return None
    if low in (".env", ".envrc") or low.startswith(".env.") or low.endswith(".env"):
        return "dotenv"
    ext = low.rpartition(".")[2] if "." in low else ""
    if ext == "py":
        return "python"
    if ext in ("yaml", "yml"):
        return "compose" if COMPOSE_NAME.match(low) else "yaml"
    if ext == "toml":
        return "toml"
    if ext == "json":
        return "json"
    if ext in ("ini", "cfg", "conf"):
        return "ini"
    return None


def is_test_file(name: str) -> bool:
    return name == "conftest.py" or (name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")))


def _excluded(path: str, root: str, name: str, exclude: tuple[str, ...]) -> bool:
    if not exclude:
        return False
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    return any(fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(name, pattern) for pattern in exclude)


def walk(root: str, include_tests: bool, exclude: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(path, kind) of every scannable file under root, depth first in name order, lazily.
    ``exclude``: glob patterns matched against the path relative to root and against the name."""
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if name in SKIP_DIRS or name.endswith((".egg-info", ".dist-info")):
                        continue
                    if not include_tests and name in TEST_DIRS:
                        continue
                    if os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                        continue  # a virtualenv: third-party code
                    if not _excluded(entry.path, root, name, exclude):
                        subdirs.append(entry.path)
                elif entry.is_file():
                    kind = file_kind(name)
                    if kind is None or (not include_tests and is_test_file(name)):
                        continue
                    if not _excluded(entry.path, root, name, exclude):
                        yield entry.path, kind
            except OSError:
                continue
        stack.extend(reversed(subdirs))


# --- shared helpers --------------------------------------------------------


_NEWLINE = re.compile(r"\r\n|\r|\n")


def source_lines(text: str) -> list[str]:
    """Lines as the parsers count them: str.splitlines() also breaks at form feeds and U+2028."""
    return _NEWLINE.split(text)


class _Lines:
    """Offset -> (line, column) for one text, both 1-based."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def at(self, offset: int) -> tuple[int, int]:
        i = bisect_right(self.starts, offset) - 1
        return i + 1, offset - self.starts[i] + 1


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", "e": "\x1b", '"': '"', "\\": "\\", "/": "/"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[ \t]*\n\s*|.)")


def _unescape(text: str) -> str:
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


# --- .env ------------------------------------------------------------------

_DOTENV_KEY = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*")
_INLINE_COMMENT = re.compile(r"[ \t]#")


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
                value = _unescape(value)
            yield Scalar((key,), value, i + 1, start + 2, exact, last + 1)
            i = last + 1
            continue
        cut = _INLINE_COMMENT.search(rest)
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


# --- INI / cfg / conf ------------------------------------------------------

_INI_KEY = re.compile(r"([^=:\s][^=:]*?)[ \t]*[=:][ \t]*")


def scan_ini(text: str) -> Iterator[Scalar]:
    """configparser's syntax, line by line; lines that are not ``key = value`` (an nginx or
    systemd file also ends in .conf) are scanned as plain text."""
    section: str | None = None
    key: str | None = None
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0 and stripped.startswith("[") and "]" in stripped:
            section, key = stripped[1 : stripped.index("]")].strip(), None
            continue
        keys = (section,) if section else ()
        if indent and key is not None:  # continuation of a multi-line value
            yield Scalar((*keys, key), stripped, n, indent + 1)
            continue
        m = _INI_KEY.match(line, indent)
        if m is None:
            key = None
            yield Scalar(keys, stripped, n, indent + 1)
            continue
        key = m.group(1).strip()
        value = line[m.end() :].rstrip()
        if value:
            yield Scalar((*keys, key), value, n, m.end() + 1)


# --- TOML ------------------------------------------------------------------

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
    where = _Lines(text)
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
    return _unescape(body) if kind == "basic" and "\\" in body else body


def _toml_scalar(kind: str, tok: str, start: int, keys: tuple[str, ...], where: _Lines) -> Scalar:
    quote = 3 if kind in ("mlb", "mll") else 1
    body, start = tok[quote:-quote], start + quote
    if quote == 3 and body.startswith(("\n", "\r\n")):  # a newline right after the opening quotes is trimmed
        skip = 1 if body[0] == "\n" else 2
        body, start = body[skip:], start + skip
    exact = True
    if kind in ("basic", "mlb") and "\\" in body:
        body, exact = _unescape(body), False
    line, column = where.at(start)
    return Scalar(keys, body, line, column, exact, line + tok.count("\n"))


# --- JSON ------------------------------------------------------------------

_JSON_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def scan_json(text: str) -> Iterator[Scalar]:
    """String values with their key path. Tolerant: a broken file yields what can be read."""
    where = _Lines(text)
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


# --- YAML (line based) -----------------------------------------------------

_YAML_KEY = re.compile(r"([^\s\"'\[\]{}#,&*!|>%@`-][^#]*?|-[^\s#][^#]*?)[ \t]*:(?=[ \t]|$)")


def scan_yaml(text: str) -> Iterator[Scalar | Ref]:
    """Block mappings and sequences, flow collections on one line, quoted and block scalars.

    Key context comes from an indentation stack. Two container idioms get their own key:
    docker-compose ``environment`` lists (``- KEY=VALUE``) and Kubernetes ``env`` lists
    (``- name: KEY`` followed by ``value: ...``). ``env_file`` entries become :class:`Ref`.
    """
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mapping keys
    items: set[int] = set()  # content indents of the open list items
    names: dict[int, str] = {}  # content indent of a list item -> its `name:` value
    block: tuple[int, tuple[str, ...]] | None = None  # inside a | or > scalar: (parent indent, keys)
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        if block is not None:
            if not body.strip():
                continue
            if indent > block[0]:
                yield Scalar(block[1], body.rstrip(), n, indent + 1)
                continue
            block = None
        if not body or body[0] == "#":
            continue
        marker = body.startswith(("---", "...")) and body[3:4] in ("", " ", "\t")
        if indent == 0 and (marker or body[0] == "%"):
            stack.clear()
            items.clear()
            names.clear()
            continue
        _close_items(items, names, indent)
        parent = indent  # indentation a block scalar's text must exceed
        item = False
        while body == "-" or body.startswith(("- ", "-\t")):
            while stack and stack[-1][0] > indent:
                stack.pop()
            _close_items(items, names, indent)
            parent, item = indent, True
            rest = body[1:]
            body = rest.lstrip(" \t")
            indent += 1 + len(rest) - len(body)
            items.add(indent)
        if not body or body[0] == "#":
            continue
        key, vstart = _yaml_key(body)
        if key is not None:
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key))
            parent = indent
        elif not item:
            while stack and stack[-1][0] >= indent:
                stack.pop()
        keys = tuple(k for _, k in stack)
        if key == "value" and indent in names:
            keys = (*keys[:-1], names[indent])
        for value, column, exact, subkey in _yaml_values(body[vstart:], indent + vstart + 1):
            if subkey is not None:  # {key: value} flow mapping
                yield Scalar((*keys, subkey), value, n, column, exact)
                continue
            if value is _BLOCK:
                block = (parent, keys)
                continue
            if key == "name" and indent in items:
                names[indent] = value
            if "env_file" in keys[-2:] and (keys[-1] == "env_file" or keys[-1] == "path"):
                yield Ref(value, n)
                continue
            scalar_keys = keys
            if key is None and keys and keys[-1] == "environment" and "=" in value:
                name, _, value = value.partition("=")  # compose `- KEY=VALUE`
                scalar_keys = (*keys, name.strip())
                column += len(name) + 1
            yield Scalar(scalar_keys, value, n, column, exact)


_BLOCK = "\x01block"


def _close_items(items: set[int], names: dict[int, str], indent: int) -> None:
    """A line at `indent` ends every list item whose content sits deeper."""
    for k in [k for k in items if k > indent]:
        items.discard(k)
        names.pop(k, None)


def _yaml_key(body: str) -> tuple[str | None, int]:
    """(key, offset of the value) when the line is ``key: value``."""
    if body[0] in "\"'":
        end = _quoted_end(body)
        if end > 0:
            rest = body[end:]
            stripped = rest.lstrip(" \t")
            if stripped.startswith(":") and stripped[1:2] in ("", " ", "\t"):
                value_at = end + (len(rest) - len(stripped)) + 1
                value_at += len(body[value_at:]) - len(body[value_at:].lstrip(" \t"))
                return _yaml_unquote(body[:end])[0], value_at
        return None, 0
    m = _YAML_KEY.match(body)
    if m is None:
        return None, 0
    value_at = m.end()
    value_at += len(body[value_at:]) - len(body[value_at:].lstrip(" \t"))
    return m.group(1), value_at


def _quoted_end(body: str) -> int:
    """Index after the closing quote of the quoted scalar body starts with, or -1."""
    quote, i = body[0], 1
    while i < len(body):
        c = body[i]
        if quote == '"' and c == "\\":
            i += 2
            continue
        if c == quote:
            if quote == "'" and body[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    return -1


def _yaml_unquote(token: str) -> tuple[str, bool]:
    body = token[1:-1]
    if token[0] == "'":
        return body.replace("''", "'"), "''" not in body
    if "\\" in body:
        return _unescape(body), False
    return body, True


def _yaml_values(text: str, column: int) -> Iterator[tuple[str, int, bool, str | None]]:
    """(value, column, exact, flow-mapping key) of the scalars in a value: one, several for a
    flow collection, or _BLOCK."""
    while text[:1] in ("&", "!"):  # anchor or tag before the value
        head, _, rest = text.partition(" ")
        stripped = rest.lstrip(" \t")
        column += len(head) + 1 + len(rest) - len(stripped)
        text = stripped if rest else ""
    if not text or text[0] in "#*":
        return
    if text[0] in "|>":
        yield _BLOCK, column, True, None
        return
    if text[0] in "[{":
        yield from _yaml_flow(text, column)
        return
    if text[0] in "\"'":
        end = _quoted_end(text)
        if end < 0:
            yield text[1:], column + 1, True, None  # continues on the next line
            return
        value, exact = _yaml_unquote(text[:end])
        yield value, column + 1, exact, None
        return
    cut = _INLINE_COMMENT.search(text)
    value = (text[: cut.start()] if cut else text).rstrip()
    if value:
        yield value, column, True, None


def _yaml_flow(text: str, column: int) -> Iterator[tuple[str, int, bool, str | None]]:
    """Items of ``[a, "b", c]`` or values of ``{k: v}`` on this line (with k)."""
    i, n = 1, len(text)
    key: str | None = None
    while i < n:
        while i < n and text[i] in " \t,[{":
            if text[i] == ",":
                key = None
            i += 1
        if i >= n or text[i] in "]}#":
            if i < n and text[i] in "]}":
                i += 1
                continue
            return
        if text[i] in "\"'":
            end = _quoted_end(text[i:])
            if end < 0:
                return
            value, exact = _yaml_unquote(text[i : i + end])
            after = text[i + end :].lstrip(" \t")
            i += end
            if after.startswith(":"):  # a key in a flow mapping
                key = value
                i = n - len(after) + 1
                continue
            yield value, column + i - end + 1, exact, key
            continue
        j = i
        while j < n and text[j] not in ",]}" and not (text[j] == ":" and text[j + 1 : j + 2] in (" ", "")):
            j += 1
        if j < n and text[j] == ":":  # `key: value` inside {...}
            key = text[i:j].strip()
            i = j + 1
            continue
        value = text[i:j].rstrip()
        if value:
            yield value, column + i, True, key
        i = j


# --- Python ----------------------------------------------------------------

_MESSAGE_CALLS = frozenset({"print", "warn", "echo", "secho", "fail", "skip", "xfail", "abort", "deprecated", "write"})
_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "log"})
_MESSAGE_KEYWORDS = frozenset({"help", "description", "epilog", "usage", "msg", "message", "doc", "hint"})
_ENV_GETTERS = ("getenv", "environ.get", "environ.setdefault", "environ.pop", "getenvb")


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    elif isinstance(node, ast.Call):
        parts.append(_dotted(node.func) + "()")
    return ".".join(reversed(parts))


def _target_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    if isinstance(node, (ast.Tuple, ast.List)) and node.elts:
        return _target_name(node.elts[-1])
    return None


def _is_message_call(name: str) -> bool:
    """print(), warnings.warn(), logger.info(), SomeError(...): their strings are prose for people."""
    last = name.rsplit(".", 1)[-1]
    if last in _MESSAGE_CALLS or last.endswith(("Error", "Exception", "Warning")):
        return True
    return last in _LOG_METHODS and "log" in name.lower()


def _docstring_skip(body: list[ast.stmt]) -> list[ast.stmt]:
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return body[1:]
    return body


#: Nodes that can hold no string: not descended into.
_LEAVES = (
    ast.Name, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.alias, ast.Import,
    ast.ImportFrom, ast.Pass, ast.Break, ast.Continue, ast.Global, ast.Nonlocal,
)  # fmt: skip


def _noop(node: ast.AST) -> None:
    return None


class _PyVisitor(ast.NodeVisitor):
    """Collects string values with their nearest names (assignment target, keyword, dict key,
    call, environment variable). Docstrings, bare string statements and the arguments of
    message calls (print, logging, warnings, exceptions, ``help=``) are skipped."""

    def __init__(self, consts: dict[str, str]) -> None:
        self.consts = consts
        self.ctx: list[str] = []
        self.out: list[tuple[ast.expr, str, tuple[str, ...], bool]] = []
        self.dispatch: dict[type, Callable[[ast.AST], None]] = {}

    def visit(self, node: ast.AST) -> None:
        """NodeVisitor.visit with the method lookup cached per node type (a third of the scan time)."""
        method = self.dispatch.get(type(node))
        if method is None:
            if isinstance(node, _LEAVES):
                method = _noop
            else:
                method = getattr(self, "visit_" + type(node).__name__, self.generic_visit)
            self.dispatch[type(node)] = method
        method(node)

    def generic_visit(self, node: ast.AST) -> None:
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.visit(node.value)

    def emit(self, node: ast.expr, value: str, pair: bool = False) -> None:
        self.out.append((node, value, tuple(self.ctx), pair))

    def visit_in(self, key: str | None, node: ast.AST | None) -> None:
        if node is None:
            return
        if key is None:
            self.visit(node)
            return
        self.ctx.append(key)
        self.visit(node)
        self.ctx.pop()

    def body(self, stmts: list[ast.stmt]) -> None:
        for stmt in _docstring_skip(stmts):
            self.visit(stmt)

    def visit_Module(self, node: ast.Module) -> None:
        self.body(node.body)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(expr)
        self.body(node.body)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in node.decorator_list:
            self.visit(expr)
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        for arg, default in zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True):
            self.visit_in(arg.arg, default)
        for kwarg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            self.visit_in(kwarg.arg, kw_default)
        self.body(node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, (ast.Constant, ast.JoinedStr)):
            return  # a bare string statement documents, it does not configure
        self.visit(node.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit_in(_target_name(node.targets[-1]), node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit_in(_target_name(node.target), node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit_in(_target_name(node.target), node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit_in(node.target.id, node.value)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg not in _MESSAGE_KEYWORDS:
            self.visit_in(node.arg, node.value)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                self.visit(value)
                continue
            self.visit(key)
            name = key.value if isinstance(key, ast.Constant) else _target_name(key)
            self.visit_in(None if name is None else str(name), value)

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        if _is_message_call(name):
            return
        self.visit(node.func)
        args = node.args
        if (
            name.endswith(_ENV_GETTERS)
            and args
            and isinstance(args[0], ast.Constant)
            and isinstance(args[0].value, str)
        ):
            self.ctx.append(args[0].value)  # os.getenv("VPN_GATE_URL", "http://...")
            args = args[1:]
        else:
            self.ctx.append(name + "()")
        for arg in args:
            self.visit(arg)
        for kw in node.keywords:
            self.visit(kw)
        self.ctx.pop()

    def visit_Raise(self, node: ast.Raise) -> None:
        return  # exception messages

    def visit_Assert(self, node: ast.Assert) -> None:
        self.visit(node.test)

    def visit_Compare(self, node: ast.Compare) -> None:
        self.visit(node.left)
        for comparator in node.comparators:
            self.visit_in(_target_name(node.left), comparator)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.emit(node, node.value)
        elif isinstance(node.value, bytes) and len(node.value) <= 4096:
            self.emit(node, node.value.decode("latin-1"))  # b"169.254.169.254" in low-level code

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self.emit(node, self.fold(node))
        self.visit_holes(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Add):
            text = self.fold(node)
            if text.strip(HOLE):
                self.emit(node, text)
                self.visit_holes(node)
                return
        self.generic_visit(node)

    def visit_Tuple(self, node: ast.Tuple) -> None:
        elts = node.elts
        if (
            len(elts) == 2
            and isinstance(elts[0], ast.Constant)
            and isinstance(elts[0].value, str)
            and isinstance(elts[1], ast.Constant)
            and type(elts[1].value) is int
        ):
            host, port = elts[0].value, elts[1].value
            self.emit(node, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", pair=True)
            return
        self.generic_visit(node)

    def fold(self, node: ast.AST) -> str:
        """The string an expression builds, with HOLE for what only run time knows."""
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else HOLE
        if isinstance(node, ast.Name):
            return self.consts.get(node.id, HOLE)
        if isinstance(node, ast.JoinedStr):
            return "".join(self.fold(v) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            return self.fold(node.value) if node.conversion in (-1, 115) and node.format_spec is None else HOLE
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.fold(node.left) + self.fold(node.right)
        return HOLE

    def visit_holes(self, node: ast.AST) -> None:
        """Visit the run-time parts of a folded string (calls in f-string fields...)."""
        if isinstance(node, (ast.Constant, ast.Name)):
            return
        if isinstance(node, ast.JoinedStr):
            for v in node.values:
                self.visit_holes(v)
        elif isinstance(node, ast.FormattedValue):
            self.visit_holes(node.value)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            self.visit_holes(node.left)
            self.visit_holes(node.right)
        else:
            self.visit(node)


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level names bound to a string known statically (``os.getenv`` defaults count)."""
    consts: dict[str, str] = {}
    folder = _PyVisitor(consts)
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name, value = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            name, value = stmt.target.id, stmt.value
        else:
            continue
        if (
            isinstance(value, ast.Call)
            and _dotted(value.func).endswith(_ENV_GETTERS)
            and len(value.args) == 2
            and isinstance(value.args[1], ast.Constant)
        ):
            value = value.args[1]
        text = folder.fold(value)
        if HOLE not in text:
            consts[name] = text
        else:
            consts.pop(name, None)
    return consts


def decode_python(data: bytes) -> str:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    return data.decode(encoding, errors="replace")


#: Every form extract() reports leaves one of these in the source; files without any skip the parse.
_PY_CANDIDATE = re.compile(
    rb"://|\d\.\d{1,3}\.\d{1,3}\.\d|[0-9a-fA-F]::|::[0-9a-fA-F]|[0-9a-fA-F]:[0-9a-fA-F]{1,4}:[0-9a-fA-F]{1,4}:"
    rb"|[A-Za-z0-9]:\d{1,5}[\"']|[\"']\s*,\s*\d{1,5}\s*[),]"
    rb"|(?i:host|server|endpoint|addr|domain|fqdn|upstream|broker|peer|proxy|metadata|instance-data)"
)


def scan_python(data: bytes, text: str) -> Iterator[Scalar]:
    if _PY_CANDIDATE.search(data) is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning for invalid escapes in third-party code
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError) as exc:
            raise ScanError(f"not valid Python: {exc}") from None
    visitor = _PyVisitor(_module_constants(tree))
    visitor.visit(tree)
    lines = source_lines(text)
    for node, value, keys, pair in visitor.out:
        line = node.lineno
        col = node.col_offset
        src = lines[line - 1] if line <= len(lines) else ""
        if not src.isascii():
            col = len(src.encode()[:col].decode("utf-8", errors="ignore"))
        yield Scalar(keys, value, line, col + 1, False, node.end_lineno or line, "python", pair)


def scan_environment(environ: dict[str, str] | os._Environ[str]) -> Iterator[Scalar]:
    for name in sorted(environ):
        if not name.startswith("SOCKGUARD_"):
            yield Scalar((name,), environ[name], 0, 0)
