"""sockguard.toml_subset never reads a document differently from tomllib: it returns exactly tomllib's value, or
None (and tomllib reads the file). Compared on the documented configurations and on generated documents, valid and
broken; and the config loader uses it, so a process with a config file never imports tomllib."""

from __future__ import annotations

import random
import re
import tomllib
from pathlib import Path

import pytest

from sockguard.toml_subset import loads

ROOT = Path(__file__).resolve().parent.parent


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (True is not 1, 1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


def check(text: str) -> object:
    """Our reading of ``text``; fails if it is not None and tomllib says anything else."""
    ours = loads(text)
    if ours is None:
        return None
    try:
        reference = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"accepted a document tomllib refuses ({exc}): {text!r} -> {ours!r}")
    assert same(ours, reference), f"{text!r}: {ours!r} != tomllib's {reference!r}"
    return ours


def documented() -> list[str]:
    """The TOML blocks of README.md and docs/*.md."""
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks += re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)
    return blocks


def test_documented_configurations_read_as_tomllib_reads_them():
    blocks = documented()
    assert len(blocks) >= 3
    read = [text for text in blocks if check(text) is not None]
    # The subset is the shape config files have: most documented examples are read without tomllib.
    assert len(read) >= len(blocks) * 0.7, [text for text in blocks if text not in read]


@pytest.mark.parametrize(
    "text",
    [
        'mode = "enforce"\nallow = [\n  "api.partner.test:443",  # the partner\n  \'10.0.0.0/8\',\n]\n',
        "[breaker]\nthreshold = 4\nwindow = 1.5\nenabled = false\n",
        "[tool.sockguard]\r\nallow = []\r\n",
        "[ a . b ]\nc = -0.5\n[a]\nd = +3\n",
        "a = 1 # trailing\n\n\n# last",
        "a = \"\"\nb = ''\nc = \"it's\"\nd = 'say \"x\"'\ne = 'C:\\path'\n",
        "x = [ ]\ny = [1, 2.5, true, 'z',]\n",
    ],
)
def test_subset_documents_are_read(text):
    assert check(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        'a = """x"""\n',  # multi-line strings
        "a = '''x'''\n",
        'a = "\\u0041"\n',  # escapes
        "a = 1979-05-27\n",  # dates
        "a = 1_000\n",
        "a = 0x10\n",
        "a = 1e3\n",
        "a = inf\n",
        "a = { b = 1 }\n",  # inline tables
        "a.b = 1\n",  # dotted keys
        '"a" = 1\n',  # quoted keys
        "[[a]]\n",  # arrays of tables
        "a = [[1]]\n",
        "a = 'tab\there'\n",
        "a = 99999999999999999999\n",
        # not TOML at all: tomllib's error message is the one users see
        "a = 1\na = 2\n",
        "[a]\n[a]\n",
        "a = 1\n[a]\n",
        "a = 01\n",
        "a = 1 b = 2\n",
        "a = 'x\n",
        "# cr\r",
        "a = [1, 2\n",
        "a =\n",
        "[a] b = 1\n",
        "\ufeffa = 1\n",
    ],
)
def test_everything_else_is_left_to_tomllib(text):
    assert loads(text) is None


_FRAGMENTS = [
    "a", "b", "allow", "mode", "x-y", "k_1", "1", "tool", "sockguard", ".", " ", "\t", "=", " = ", "[", "]", "[[",
    "]]", ",", "#", "# note", "\n", "\r\n", "\r", '"', "'", '"a.b"', "'c:80'", '""', "''", '"""', "\\", "true",
    "false", "tru", "0", "-1", "+2", "01", "1.5", "-0.0", "1.", ".5", "1e2", "1_0", "inf", "nan", "{", "}", "ü",
    "\x00", "\x7f", "\u2028", "é.test", "1979-05-27", "07:00:00",
]  # fmt: skip


def _document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(0, 8)):
        shape = rng.random()
        if shape < 0.35:
            value = rng.choice(['"x"', "'y'", "1", "-2.5", "true", "[\"a\", 'b',]", "[\n  1, # c\n  2\n]", "[]"])
            lines.append(f"{rng.choice(['a', 'b', 'allow', 'mode'])} = {value}")
        elif shape < 0.5:
            lines.append(f"[{rng.choice(['a', 'b', 'a.b', 'tool.sockguard', 'breaker'])}]")
        else:
            lines.append("".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 7))))
    text = rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n"])
    for _ in range(rng.randint(0, 2)):  # a mutation: one fragment inserted, or one character dropped
        at = rng.randint(0, len(text))
        text = text[:at] + rng.choice(_FRAGMENTS) + text[at:] if rng.random() < 0.6 else text[:at] + text[at + 1 :]
    return text


def test_generated_documents_agree_with_tomllib():
    rng = random.Random(16)
    read = 0
    for _ in range(20_000):
        if check(_document(rng)) is not None:
            read += 1
    assert read > 2_000  # the comparison covered accepted documents, not only declined ones


def test_a_config_file_is_read_without_tomllib(tmp_path):
    """The loader's fast path: a sockguard.toml in the subset never imports tomllib (tests/test_activation.py checks
    the whole first socket use in a fresh process)."""
    import subprocess
    import sys

    (tmp_path / "sockguard.toml").write_text('allow = ["api.partner.test:443"]\n[breaker]\nthreshold = 4\n')
    code = (
        "import sys; from sockguard.config import load_settings; s = load_settings(); "
        "print([r.text for r in s.allow], s.breaker, 'tomllib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['api.partner.test:443']", "{'threshold':", "4}", "False"], out.stdout


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": [1, 2.5, "x", null, true], "b": {"c": -0.0}}',
        b'  {"a":1}  \n',
        b'{"a":1} x',
        b"",
        b"\xef\xbb\xbf{}",
        b'{"a": NaN, "b": -Infinity}',
        b"[1e400]",
        '{"a":"\u00fc"}'.encode("utf-16"),
        b'{"a":"\\ud800\\n"}',
        b'{"a":1,"a":2}',
        b'{"a":1,}',
        b"\xff",
        b"[" * 100_000,
    ],
)
def test_pinned_files_read_as_json_loads_reads_them(data):
    """The pinned file of a `sockguard run` tree is read with json's C scanner, without importing json: the same
    value as json.loads, or json.loads's own error."""
    import json

    from sockguard.config import _json_value

    def outcome(read):
        try:
            return "value", repr(read(data))
        except (ValueError, RecursionError) as exc:
            return "error", type(exc).__name__, str(exc)

    assert outcome(_json_value) == outcome(json.loads)
