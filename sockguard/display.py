"""Untrusted text made safe to show: on a terminal, in a comment of a generated file, as a file name.

The tools print values that came from outside: hosts and callers from a decision log, keys and values from
scanned files, file names from a directory walk, a configuration path from the command line. Each of these
can carry control characters (ESC sequences move the cursor or rewrite a terminal line; a newline ends a
comment and starts a new firewall rule), bidirectional overrides (text that reads differently than it is),
or bytes that are not UTF-8 (a file name). Every function here is total: any input gives a printable result,
and distinct inputs stay distinguishable (escapes, not deletions).
"""

from __future__ import annotations

import os

_ASCII_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object) -> str:
    """For a terminal or a comment that may hold Unicode: every character ``str.isprintable()`` refuses
    (C0/C1 controls, DEL, line and paragraph separators, format characters such as bidi overrides,
    surrogates from undecodable bytes) becomes a ``\\xNN`` / ``\\uNNNN`` escape; a backslash stays as it is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def ascii_printable(text: object, *, backslash: bool = True) -> str:
    """For places that take printable ASCII only (firewall comments, labels other tools parse): everything
    else is escaped, so the result is one line of ASCII; so is the backslash itself unless ``backslash`` is
    False (text that went through :func:`portable` already, whose escapes should stay readable)."""
    text = str(text)
    return "".join(c if c in _ASCII_PRINTABLE and (c != "\\" or not backslash) else _escape(c) for c in text)


def portable(text: object) -> str:
    """:func:`printable`, and characters beyond the Basic Multilingual Plane escaped too: the text survives
    JSON that YAML parsers must read the same way (JSON writes U+1F600 as a surrogate pair ``\\ud83d\\ude00``,
    which YAML 1.1 parsers read as two lone surrogates) and a terminal alike. For free text in generated
    files and messages: configuration paths, DNS error messages, warnings."""
    text = printable(text)
    if all(ord(c) < 0x10000 for c in text):
        return text
    return "".join(c if ord(c) < 0x10000 else _escape(c) for c in text)


def unicode_text(text: str) -> str:
    """Text that can be written as UTF-8: lone surrogates (from undecodable bytes, or a ``"\\ud800"`` escape in
    a scanned JSON or Python string) become ``\\udcxx`` escapes; everything else is kept."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def path_text(path: str | bytes) -> str:
    """A file name as valid Unicode: bytes that are not UTF-8 (kept by the OS as surrogate escapes) become
    ``\\xNN``, so the name can be written to UTF-8 JSON/SARIF and still be told apart from others."""
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    try:
        raw = os.fsencode(path)  # undecodable bytes come back as they were on disk
    except UnicodeEncodeError:  # a lone surrogate that is no surrogate escape: not a name read from disk
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
