"""Python source, read with :mod:`ast` (never imported or run): string and bytes constants, f-strings and
``+`` concatenations folded through module-level constants, ``os.getenv("NAME", "default")`` defaults
(reported under NAME), ``(host, port)`` tuples. Docstrings, comments and the arguments of messages for
people (print, logging, warnings, exceptions, ``help=``) are skipped."""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from collections.abc import Callable, Iterator

from sockguard.audit.scanners.base import HOLE, Scalar, ScanError, source_lines

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
