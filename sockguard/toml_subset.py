"""Config files read without ``tomllib``: the plain subset of TOML a sockguard.toml is written in.

Every guarded process with a config file parses it at its first socket use, and importing ``tomllib`` costs more
than the whole guard (it loads ``re``, ``datetime`` and compiles its patterns: ~5 ms on a quiet machine, 13 ms on a
busy one). So :func:`loads` reads the subset that config files use, and returns ``None`` for anything else; the
caller then hands the text to ``tomllib``, which gives the answer (or the error message) as before. Nothing here
ever decides what a file means differently from tomllib: it accepts a document only if it is sure of the value
tomllib would produce (``tests/test_toml_subset.py`` compares the two on generated documents), and declines
everything it is unsure of, errors included.

The subset, line by line (LF or CRLF): blank lines; ``# comments`` (printable text); table headers ``[a.b]`` of
bare keys (no ``[[arrays of tables]]``, each table once); ``key = value`` with a bare key (no dotted or quoted keys),
each key once, then an optional comment. Values: ``true``/``false``; decimal integers (``0``, ``-12``, no
underscores); decimal floats with a fraction (``1.5``, no exponent); one-line basic strings without escapes
(``"x"``) and literal strings (``'x'``), printable characters only; arrays of those, over several lines if need
be, with comments and a trailing comma (no nested arrays). Not: inline tables, dates, multi-line strings, escapes.

Imports nothing: it runs at the first socket use of every guarded process with a config file.
"""

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGITS = frozenset("0123456789")
_TOKEN_END = frozenset(" \t\r\n,]#")


#: Raised for a document outside the subset (or not TOML at all): tomllib decides. A built-in class, not one of
#: our own: a class costs about as much to make as this module's other code (this loads at the first socket use
#: of every process with a config file), and nothing else in the reader raises ValueError (its int() and float()
#: see validated digits only).
_Decline = ValueError


def loads(text: str) -> "dict[str, object] | None":
    """The document as ``tomllib.loads`` would return it, or None when it is outside the subset."""
    try:
        return _Reader(text).document()
    except (_Decline, IndexError):  # (IndexError: a line cut short at the end of the text)
        return None


class _Reader:
    __slots__ = ("n", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0

    def document(self) -> "dict[str, object]":
        root: dict[str, object] = {}
        table = root
        headers: set[tuple[str, ...]] = set()
        text, n = self.text, self.n
        while True:
            self._blank()
            if self.pos >= n:
                return root
            char = text[self.pos]
            if char == "[":
                table = self._header(root, headers)
            else:
                key = self._key()
                self._spaces()
                if text[self.pos] != "=":
                    raise _Decline
                self.pos += 1
                self._spaces()
                if key in table:
                    raise _Decline  # a duplicate key: tomllib's error
                table[key] = self._value()
            self._end_of_line()

    # -- lines ---------------------------------------------------------------------------------------------

    def _spaces(self) -> None:
        text, pos, n = self.text, self.pos, self.n
        while pos < n and (text[pos] == " " or text[pos] == "\t"):
            pos += 1
        self.pos = pos

    def _comment(self) -> None:
        """At ``#``: past the comment, to its line's end (not past it)."""
        text = self.text
        end = text.find("\n", self.pos)
        if end == -1:
            end = self.n
        if end < self.n and text[end - 1] == "\r":
            end -= 1  # CRLF: the line break is read by _newline
        body = text[self.pos + 1 : end]
        if body and not body.isprintable():
            raise _Decline  # control characters (tomllib refuses them) or a tab
        self.pos = end

    def _newline(self) -> bool:
        """Past one line break, if there is one here."""
        text, pos = self.text, self.pos
        if text[pos] == "\n":
            self.pos = pos + 1
            return True
        if text[pos] == "\r":
            if text[pos + 1] != "\n":
                raise _Decline
            self.pos = pos + 2
            return True
        return False

    def _at_end(self) -> bool:
        """Past spaces and a comment: whether that is the end of the text."""
        self._spaces()
        if self.pos < self.n and self.text[self.pos] == "#":
            self._comment()
        return self.pos >= self.n

    def _blank(self) -> None:
        """Past blank and comment lines."""
        while not self._at_end() and self._newline():
            pass

    def _end_of_line(self) -> None:
        if not self._at_end() and not self._newline():
            raise _Decline

    # -- keys and tables -----------------------------------------------------------------------------------

    def _key(self) -> str:
        text, start, n = self.text, self.pos, self.n
        pos = start
        while pos < n and text[pos] in _BARE:
            pos += 1
        if pos == start:
            raise _Decline  # a quoted key, or not a key at all
        self.pos = pos
        return text[start:pos]

    def _header(self, root: "dict[str, object]", headers: "set[tuple[str, ...]]") -> "dict[str, object]":
        self.pos += 1
        if self.text[self.pos] == "[":
            raise _Decline  # an array of tables
        path = []
        while True:
            self._spaces()
            path.append(self._key())
            self._spaces()
            char = self.text[self.pos]
            self.pos += 1
            if char == "]":
                break
            if char != ".":
                raise _Decline
        key = tuple(path)
        if key in headers:
            raise _Decline  # a table defined twice
        headers.add(key)
        table = root
        for part in path:
            found = table.setdefault(part, {})
            if found.__class__ is not dict:
                raise _Decline  # a key that holds a value, not a table
            table = found  # type: ignore[assignment]
        return table

    # -- values --------------------------------------------------------------------------------------------

    def _value(self) -> object:
        char = self.text[self.pos]
        if char == "[":
            return self._array()
        if char == '"' or char == "'":
            return self._string(char)
        return self._scalar()

    def _string(self, quote: str) -> str:
        text, start = self.text, self.pos + 1
        if text.startswith(quote, start):
            if text.startswith(quote, start + 1):
                raise _Decline  # a multi-line string
            self.pos = start + 1
            return ""
        end = text.find(quote, start)
        if end == -1:
            raise _Decline
        body = text[start:end]
        if not body.isprintable() or (quote == '"' and "\\" in body):
            raise _Decline  # a line break, a control character, a tab, or an escape
        self.pos = end + 1
        return body

    def _scalar(self) -> object:
        text, start, n = self.text, self.pos, self.n
        pos = start
        while pos < n and text[pos] not in _TOKEN_END:
            pos += 1
        token = text[start:pos]
        self.pos = pos
        if token == "true":
            return True
        if token == "false":
            return False
        digits = token[1:] if token[:1] in ("+", "-") else token
        whole, dot, fraction = digits.partition(".")
        if not whole or not _DIGITS.issuperset(whole) or (whole[0] == "0" and len(whole) > 1) or len(whole) > 18:
            raise _Decline
        if not dot:
            return int(token)
        if not fraction or not _DIGITS.issuperset(fraction):
            raise _Decline
        return float(token)

    def _array(self) -> "list[object]":
        self.pos += 1
        items: list[object] = []
        text = self.text
        while True:
            self._blank()
            char = text[self.pos]
            if char == "]":
                self.pos += 1
                return items
            if char == "[" or char == "{":
                raise _Decline  # nested arrays and inline tables are not in the subset
            items.append(self._value())
            self._blank()
            char = text[self.pos]
            self.pos += 1
            if char == "]":
                return items
            if char != ",":
                raise _Decline
