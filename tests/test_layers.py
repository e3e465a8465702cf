"""The import graph keeps the layers: pure core < configuration < enforcement < front ends.

A module may import its own layer and the layers below it, never one above (front ends import the core,
never the reverse), and the graph has no circle except through the one deliberate lazy edge named in
CONTRIBUTING.md (``sockguard.active`` -> ``sockguard.guard``: the State in force loads the configuration on
first use). Every import counts, including the ones inside functions. Read from the source with ``ast``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sockguard"

CORE = {"errors", "addresses", "rules", "policy", "values"}
CONFIGURATION = {"config", "breaker_settings", "resolver_settings", "paths", "source", "toml_subset"}
ENFORCEMENT = {
    "_hook",
    "accelerator",  # whether this process uses the C accelerator (sockguard._accel, native/sg_accel.c)
    "active",
    "addrmap",
    "admission",
    "alerts",
    "breaker",
    "caller",
    "canonical",
    "children",
    "console",
    "events",
    "floor",
    "guard",
    "host_addresses",
    "http",  # sockguard/http/: request events, Host/SNI/proxy-target decisions
    "integrations",
    "logfile",
    "lowlevel",
    "native",  # the preload library's Python side: guard.install hands it the policy in force (native/bridge.py)
    "rawsockets",
    "refusal",
    "resolvconf",
    "resolver",
    "reverse",
    "sinks",
    "testing",
    "wrappers",
}
LAYERS = [("core", CORE), ("configuration", CONFIGURATION), ("enforcement", ENFORCEMENT)]
#: The one circle allowed, and why (CONTRIBUTING.md): the State in force loads the configuration on first use.
DELIBERATE_LAZY_EDGE = ("active", "guard")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for index, (_name, members) in enumerate(LAYERS):
        if top in members:
            return index
    return len(LAYERS)  # a front end (api, cli, runner, tools, pytest plugin, ...)


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports anywhere in its body."""
    found = set()
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text(), str(path))
    type_only = {  # ``if TYPE_CHECKING:`` blocks are annotations, never executed
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(["sockguard", *package_parts[: len(package_parts) - node.level + 1]]).rstrip(".")
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            if not name.startswith("sockguard."):
                continue
            name = name.removeprefix("sockguard.")
            while name and name not in known:  # "from sockguard.x import Y": Y is not a module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


@functools.cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {module: _imports(module, path, known) for module, path in modules.items() if module}


def test_every_enforcement_module_is_classified() -> None:
    """A module named in the layer table exists (a rename updates the table)."""
    modules = _modules()
    for _name, members in LAYERS:
        for member in members:
            assert member in modules, f"{member} is in the layer table but not in the package"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m and _layer(m) < len(LAYERS)))
def test_no_import_of_a_higher_layer(module: str) -> None:
    graph = _graph()
    upward = sorted(target for target in graph[module] if _layer(target) > _layer(module))
    assert not upward, f"{module} ({LAYERS[_layer(module)][0]}) imports a higher layer: {upward}"


def test_no_import_circle_but_the_deliberate_lazy_edge() -> None:
    graph = {module: set(targets) for module, targets in _graph().items()}
    graph[DELIBERATE_LAZY_EDGE[0]].discard(DELIBERATE_LAZY_EDGE[1])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_the_deliberate_lazy_edge_is_still_lazy() -> None:
    """active imports guard only inside a function: importing the State module never loads the loader."""
    tree = ast.parse((PACKAGE / "active.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    imported = {a.name for n in top_level for a in n.names} | {getattr(n, "module", None) for n in top_level}
    assert not imported & {"guard", "sockguard.guard"}
