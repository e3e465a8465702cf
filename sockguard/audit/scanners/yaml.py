"""YAML, line based (docker-compose, Kubernetes manifests, Helm-templated files that are not valid YAML yet).

Block mappings and sequences, flow collections on one line, quoted and block scalars; key context from an
indentation stack. Why this and not a YAML library: docs/audit.md ("Why the YAML scanner is hand-written").
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from sockguard.audit.scanners.base import INLINE_COMMENT, Ref, Scalar, iter_lines, unescape

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
    for n, raw in enumerate(iter_lines(text), 1):
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
        return unescape(body), False
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
    cut = INLINE_COMMENT.search(text)
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
