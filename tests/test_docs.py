"""The documentation names only what exists, and everything a user can set is documented.

README.md, CONTRIBUTING.md and docs/*.md are read as text and held against the code: the ``SOCKGUARD_*``
variables the code reads, the configuration keys the loader accepts (every TOML example must load), the
``sockguard`` command line (every documented command must parse, every option must be documented), and the
files and tests the prose points to. A renamed option or a moved file then fails here instead of misleading a
reader.
"""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockguard import breaker_settings, cli, config, resolver_settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
PRODUCT = [*(ROOT / "sockguard").rglob("*.py"), *(ROOT / "sitecustomize").glob("*.py"), ROOT / "setup.py"]
PRODUCT += [*(ROOT / "native").glob("*.[ch]")]
TOOLS = [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").iterdir(), *(ROOT / "tests").glob("*.py")]

#: Variables that are the product's own business, never a user's: set by the product for itself.
INTERNAL_VARIABLES = {"SOCKGUARD_DEMO_INSIDE"}  # the demo marks the child it re-executes inside its namespace
#: Options of other programs that the docs show next to sockguard's (unshare, iptables, ruff, chromium, pytest,
#: valgrind, ...).
OTHER_PROGRAMS_OPTIONS = {"--add-host", "--check", "--comment", "--dport", "--dports", "--dump-dom", "--group-id",
                          "--ignore-environment", "--ip-permissions", "--mount", "--net", "--noflush", "--proxy",
                          "--test", "--pdb", "--collect-only", "--toggle-collect"}  # fmt: skip
#: Tests of urllib3's and httpx's own suites that README's "Real client test suites" section names.
OTHER_PROJECTS_TESTS = {
    "test_debug_log",
    "test_http2_probe_blocked_per_thread",
    "test_invalid_tunnel_host",
    "test_logging_redirect_chain",
    "test_logging_request",
    "test_removes_duplicate_host_header",
    "test_wrong_sni_hint",
}
#: Slash-separated names that are not files of the checkout: a SARIF fingerprint key, a Kubernetes annotation, what
#: the install builds (the native library, or the note a failed build leaves), a user's test file in an example.
NOT_FILES = {"sockguard/v1", "sockguard/warnings", "sockguard/native/libsockguard.so",
             "sockguard/native/libsockguard.so.unavailable", "tests/test_x.py"}  # fmt: skip

VARIABLE = re.compile(r"SOCKGUARD_[A-Z0-9_]*[A-Z0-9]")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")


def none_of(found: object, hint: str = "") -> None:
    """Assert that nothing was found, listing all of it (pytest would cut a long diff)."""
    items = sorted(found)  # type: ignore[call-overload]
    assert not items, "\n".join([hint, *items]).strip()


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(doc: str) -> str:
    """The document without its fenced blocks (examples there show a user's files and tests, not ours)."""
    return FENCE.sub("", doc)


def fenced(language: str | None = None) -> Iterator[tuple[str, str]]:
    """("file:line", body) of every fenced block, of one language if given."""
    for path in DOCS:
        doc = text(path)
        for match in FENCE.finditer(doc):
            if language is None or match.group(1) == language:
                yield f"{path.name}:{doc.count(chr(10), 0, match.start()) + 1}", match.group(2)


# -- environment variables -----------------------------------------------------------------------------------


def families() -> dict[str, list[str]]:
    """Variables the code builds from a prefix and a table's keys: prefix -> the whole names."""
    breaker = [f"{breaker_settings.ENV_PREFIX}_{key.upper()}" for key in breaker_settings.DEFAULTS if key != "enabled"]
    resolver = [resolver_settings.ENV_PREFIX + key.upper() for key in resolver_settings.DEFAULTS]
    return {breaker_settings.ENV_PREFIX + "_": breaker, resolver_settings.ENV_PREFIX: resolver}


def documented_variable(name: str, docs: str) -> bool:
    """Named whole, or as the family's ``PREFIX_<KEY>`` / ``_KEY`` shorthand beside the family's prefix."""
    if re.search(rf"\b{name}\b", docs):
        return True
    for prefix, members in families().items():
        if name in members:
            suffix = name.removeprefix(prefix)
            return f"{prefix}<KEY>" in docs or (prefix in docs and f"`_{suffix}`" in docs)
    return False


def test_every_variable_the_code_reads_is_documented() -> None:
    docs = "\n".join(text(path) for path in DOCS)
    read = {name for path in PRODUCT for name in VARIABLE.findall(text(path))}
    read |= {name for members in families().values() for name in members}
    missing = sorted(name for name in read - INTERNAL_VARIABLES if not documented_variable(name, docs))
    none_of(missing, "document these variables (README's table, or the docs page of their feature):")


def test_every_documented_variable_is_read_by_the_code() -> None:
    read = {name for path in PRODUCT + TOOLS for name in VARIABLE.findall(text(path))}
    read |= {name for members in families().values() for name in members}
    unknown = {(path.name, name) for path in DOCS for name in VARIABLE.findall(text(path)) if name not in read}
    none_of(unknown)


# -- configuration keys --------------------------------------------------------------------------------------


def toml_examples() -> list[tuple[str, dict]]:
    return [(path, tomllib.loads(block)) for path, block in fenced("toml")]


@pytest.mark.parametrize("where", [where for where, _block in fenced("toml")])
def test_every_toml_example_loads(where: str, tmp_path: Path) -> None:
    (tmp_path / "sockguard.toml").write_text(dict(fenced("toml"))[where])
    settings = config.load_settings({"SOCKGUARD_CONFIG": str(tmp_path / "sockguard.toml")}, str(tmp_path))
    settings.build_policy()


def test_every_configuration_key_is_in_an_example() -> None:
    top: set[str] = set()
    tables: dict[str, set[str]] = {}
    for _path, data in toml_examples():
        top |= set(data)
        for key, value in data.items():
            if isinstance(value, dict):
                tables.setdefault(key, set()).update(value)
    pytest_table = {"pytest"}  # the plugin's own table: docs/pytest-plugin.md, test_every_ini_and_table_key
    none_of(config.KNOWN_KEYS - top - pytest_table)
    none_of(set(breaker_settings.DEFAULTS) - tables["breaker"])
    none_of({"servers", *resolver_settings.DEFAULTS} - tables["resolver"])


# -- the command line ----------------------------------------------------------------------------------------


def parsers() -> dict[str, argparse.ArgumentParser]:
    """``"sockguard"``, ``"sockguard run"``, ``"sockguard native compile"``, ... -> its parser."""
    found = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{name} {sub}")

    walk(cli.build_parser(), "sockguard")
    return found


def documented_commands() -> Iterator[tuple[str, str]]:
    """(where, command line) of every whole ``sockguard ...`` command in a shell, console or Dockerfile block."""
    for where, block in [*fenced("sh"), *fenced("console"), *fenced("dockerfile")]:
        for line in block.splitlines():
            line = re.sub(r"^(\$ |RUN )", "", line.strip())
            if line.startswith(("sockguard ", "python -m sockguard ")):
                words = shlex.split(line, comments=True)
                for i, word in enumerate(words):  # the command ends at a pipe, a redirection or &&
                    if word in ("|", "&&") or word.startswith((">", "2>")):
                        words = words[:i]
                        break
                yield f"{where}: {line}", " ".join(words).removeprefix("python -m ")


def test_every_documented_command_parses() -> None:
    parser = cli.build_parser()
    failures = []
    for where, command in documented_commands():
        argv = shlex.split(command)[1:]
        if argv[0] == "run":
            argv, _program = cli._split_run(argv)
        try:
            parser.parse_args(argv)
        except SystemExit:
            failures.append(where)
    none_of(failures)


def test_every_option_named_with_its_command_exists() -> None:
    """Inline mentions such as `sockguard report --suggest` name a real option of that command."""
    known = {name: {o for a in p._actions for o in a.option_strings} for name, p in parsers().items()}
    wrong = []
    for path in DOCS:
        for span in INLINE.findall(text(path)):
            words = span.split()
            if words[:1] != ["sockguard"]:
                continue
            command = "sockguard"
            for word in words[1:]:
                if f"{command} {word}" in known:
                    command = f"{command} {word}"
                elif word.startswith("-") and word.split("=")[0] not in known[command] | {"--"}:
                    wrong.append(f"{path.name}: `{span}`")
    none_of(wrong)


def test_every_option_is_documented() -> None:
    docs = "\n".join(text(path) for path in DOCS)
    undocumented = set()
    for name, parser in parsers().items():
        if name.count(" ") == 1 or name == "sockguard":
            assert re.search(rf"\b{name}\b", docs), f"{name} is not documented"
        for action in parser._actions:
            names = [o for o in action.option_strings if o not in ("-h", "--help")]
            if names and not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", docs) for o in names):
                undocumented.add(f"{name} {'/'.join(names)}")
    none_of(undocumented)


def test_every_documented_option_exists_somewhere() -> None:
    """A ``--option`` in the docs is one of sockguard's, the pytest plugin's, a tool's in this repo, or another
    program's (OTHER_PROGRAMS_OPTIONS)."""
    defined = {m for path in PRODUCT + TOOLS for m in re.findall(r"\"(--[a-z][a-z0-9-]*)", text(path))}
    wrong = set()
    for path in DOCS:
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text(path)):
            if option not in defined | OTHER_PROGRAMS_OPTIONS:
                wrong.add(f"{path.name}: {option}")
    none_of(wrong)


# -- files and tests the prose points to ---------------------------------------------------------------------


def test_every_file_the_docs_point_to_exists() -> None:
    where = r"(?<![\w/.-])((?:tests|docs|sockguard|benchmarks|scripts|native|sitecustomize|\.ci)/[\w./*{,}-]*[\w*}])"
    missing = set()
    for path in DOCS:
        for ref in re.findall(where, prose(text(path))):
            head, _, rest = ref.partition("{")  # benchmarks/results.{md,json}
            choices, _, tail = rest.partition("}")
            for one in [head + choice + tail for choice in choices.split(",")] if rest else [ref]:
                if not any(ROOT.glob(one)) and one not in NOT_FILES:
                    missing.add(f"{path.name}: {one}")
    none_of(missing)


def test_every_test_the_docs_name_exists() -> None:
    defined = {m for p in ROOT.glob("tests/*.py") for m in re.findall(r"def (test_\w+)", text(p))}
    defined |= {m for p in (ROOT / "benchmarks").rglob("*.py") for m in re.findall(r"def (test_\w+)", text(p))}
    missing = set()
    for path in DOCS:
        for span in INLINE.findall(prose(text(path))):
            for name in re.findall(r"(?<![\w.])(test_\w+)(?![\w.*])", span):
                if name not in defined | OTHER_PROJECTS_TESTS:
                    missing.add(f"{path.name}: {name}")
    none_of(missing)


# -- the code layout -----------------------------------------------------------------------------------------


def modules() -> list[str]:
    """Every module and sub-package directly under sockguard/: ``name.py`` or ``name/``."""
    found = [p.name for p in (ROOT / "sockguard").glob("*.py") if not p.name.startswith("__")]
    found += [f"{p.name}/" for p in (ROOT / "sockguard").iterdir() if (p / "__init__.py").exists()]
    return sorted(found)


def test_every_module_is_in_the_readme_layout_and_a_contributing_layer() -> None:
    layout = next(block for _where, block in fenced("") if block.startswith("sockguard/\n"))
    layers = text(ROOT / "CONTRIBUTING.md").split("## Layers", 1)[1].split("\n## ", 1)[0]
    missing = []
    for module in modules():
        if not re.search(rf"(?<![\w/]){re.escape(module)}", layout):
            missing.append(f"README.md code layout: {module}")
        spellings = {module, module.removesuffix(".py"), f"sockguard/{module}"}
        if not spellings & set(INLINE.findall(layers)):
            missing.append(f"CONTRIBUTING.md layers: {module}")
    none_of(missing, "name each module in README's code layout and in CONTRIBUTING's layer table:")


def test_contributing_layer_table_matches_the_layers_test_layers_enforces() -> None:
    from tests import test_layers

    rows = {}
    for line in text(ROOT / "CONTRIBUTING.md").splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) == 3 and cells[0] in ("pure core", "configuration", "enforcement", "native layer"):
            spans = INLINE.findall(cells[1])
            rows[cells[0]] = {m[1] for s in spans if (m := re.fullmatch(r"(?:sockguard/)?(\w+)(?:\.py|/)", s))}
    assert rows["pure core"] == test_layers.CORE
    assert rows["configuration"] == test_layers.CONFIGURATION
    assert "native" in rows["native layer"]  # sockguard/native/: enforcement's, in a row of its own with the C
    assert rows["enforcement"] | {"native"} == test_layers.ENFORCEMENT
