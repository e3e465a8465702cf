"""A regular install carries every module of the source tree.

An editable install finds sub-packages from the checkout whether or not the build lists them, so a package left
out of ``pyproject.toml`` only shows in a regular install: ``sockguard report`` failing with ModuleNotFoundError
in a container. Both checks below fail on such an omission: one against the list, one against a built wheel.
"""

from __future__ import annotations

import tomllib
import zipfile
from pathlib import Path

from tests.test_native_build import build_wheel

ROOT = Path(__file__).resolve().parents[1]


def source_packages() -> set[str]:
    found = {"sockguard._site"}  # sitecustomize/ is installed under this name (package-dir)
    for init in (ROOT / "sockguard").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_every_source_package_is_listed_for_the_build() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert source_packages() - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - source_packages() == set(), "listed in pyproject.toml but not in the source tree"


def test_the_wheel_holds_every_module_of_the_source_tree(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.endswith(".py")}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "sockguard").rglob("*.py")}
    expected.add("sockguard/_site/sitecustomize.py")
    assert sorted(expected - shipped) == []
