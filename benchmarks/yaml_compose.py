"""YAML read with PyYAML's ``compose`` (its nodes keep line and column): the reference the hand-written scanner
(:mod:`sockguard.audit.scanners.yaml`) was measured against (benchmarks/yaml_scanners.py; the result and why the
hand-written scanner stays: docs/audit.md). Needs PyYAML (a test dependency, not a runtime one).

The same scalars, with the same key context, as the line scanner yields: compose ``environment`` lists
(``- KEY=VALUE``) under their key, Kubernetes ``env`` entries under their ``name``, ``env_file`` entries as
:class:`~sockguard.audit.scanners.base.Ref`. An alias is reported once, where its anchor is written.
Raises :class:`~sockguard.audit.scanners.base.ScanError` for a file that is not YAML (a Helm template).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sockguard.audit.scanners.base import Ref, Scalar, ScanError


def scan_yaml_compose(text: str) -> Iterator[Scalar | Ref]:
    try:
        import yaml
    except ImportError:
        raise ScanError("PyYAML is not installed") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        documents = list(yaml.compose_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        raise ScanError(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    seen: set[int] = set()
    for node in documents:
        if node is not None:
            yield from _walk(node, (), seen, yaml)


def _walk(node: Any, keys: tuple[str, ...], seen: set[int], yaml: Any) -> Iterator[Scalar | Ref]:
    if id(node) in seen:
        return  # an alias: reported where the anchor is
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if node.value:  # every scalar as written: a number or a date is text here too
            yield _scalar(node, keys)
        return
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if keys and keys[-1] == "env" and isinstance(item, yaml.MappingNode):
                named = _env_entry(item, keys, seen, yaml)
                if named is not None:
                    yield from named
                    continue
            if keys and keys[-1] == "environment" and isinstance(item, yaml.ScalarNode) and "=" in item.value:
                seen.add(id(item))
                name, _, value = item.value.partition("=")
                scalar = _scalar(item, (*keys, name.strip()))
                offset = len(name) + 1
                scalar.value = value
                scalar.column += offset if scalar.exact else 0
                yield scalar
                continue
            yield from _walk(item, keys, seen, yaml)
        return
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            inner = (*keys, key) if key is not None else keys
            if key is not None and "env_file" in inner[-2:] and inner[-1] in ("env_file", "path"):
                yield from _refs(value_node, yaml)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                yield from _walk(key_node, keys, seen, yaml)
            yield from _walk(value_node, inner, seen, yaml)


def _env_entry(item: Any, keys: tuple[str, ...], seen: set[int], yaml: Any) -> list[Scalar | Ref] | None:
    """``- name: KEY`` / ``value: ...``: the value reported under KEY, as the line scanner does."""
    pairs = {k.value: v for k, v in item.value if isinstance(k, yaml.ScalarNode)}
    name = pairs.get("name")
    if not isinstance(name, yaml.ScalarNode):
        return None
    out: list[Scalar | Ref] = []
    seen.add(id(item))
    for key_node, value_node in item.value:
        key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
        if key == "value":
            out += list(_walk(value_node, (*keys, str(name.value)), seen, yaml))
        elif key is not None:
            out += list(_walk(value_node, (*keys, key), seen, yaml))
    return out


def _refs(node: Any, yaml: Any) -> Iterator[Ref]:
    if isinstance(node, yaml.ScalarNode):
        yield Ref(str(node.value), node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _refs(item, yaml)
    elif isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "path":
                yield from _refs(value_node, yaml)


def _scalar(node: Any, keys: tuple[str, ...]) -> Scalar:
    start, end = node.start_mark, node.end_mark
    quoted = node.style in ("'", '"')
    single_line = start.line == end.line
    if node.style is None:
        exact = single_line
    elif node.style == "'":
        exact = single_line and "'" not in node.value
    elif node.style == '"':
        exact = single_line and end.index - start.index == len(node.value) + 2
    else:  # | and >: the text starts on the next line
        exact = False
    column = start.column + 1 + (1 if quoted else 0)
    return Scalar(keys, str(node.value), start.line + 1, column, exact, end.line + 1)
