"""The C policy core (native/sg_policy.c) decides exactly as sockguard/policy.py: a differential test on a
generated corpus of rules x hosts x addresses x ports, through the production library (ctypes) and through
an ASan + UBSan build; the C unit tests and the parser fuzzer under the sanitizers; the policy file refused
whole when it is damaged."""

from __future__ import annotations

import ctypes
import random
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockguard.native.blob import compile_policy
from sockguard.policy import INTERNAL, METADATA, RAW_IP, Policy
from tests.native_support import SANITIZER_ENV, build_sanitized, require_library
from tests.test_policy import ADDRESSES, BASES, NAMES, PORTS, destinations, rule_lists

DETAILED = (RAW_IP, INTERNAL, METADATA)  # reasons whose detail is data (a category, a name), not prose
PORT_SUFFIXES = ["", "", ":443", ":80", ":8000-8100", ":1-1024"]
EXTRA_HOSTS = [
    b"API.EXAMPLE.TEST.", b"api.example.test..", b"127.1", b"0x7f.1", b"2130706433", b"0177.0.0.1", b"127.0.0.1.",
    b"::1", b"::FFFF:127.0.0.1", b"fe80::1%eth0", b"fe80::1%", b"a b.test", b"caf\xc3\xa9.test", b"-x.test",
    b"x_y.example.test", b"a" * 64 + b".test", b"." , b"", b"metadata", b"METADATA.GOOGLE.INTERNAL", b"localhost.",
    b"1.2.3.4.5", b"x.203.0.113.7", b"10.0.0.1:80", b"[::1]", b"0x100000000", b"4294967296", b"1.2.3.256",
]  # fmt: skip


def random_rule(rng: random.Random) -> str:
    """A rule as tests/test_policy.py's cidr_rules / name_rules strategies draw them."""
    if rng.random() < 0.5:
        text = rng.choice(ADDRESSES)
        version = 6 if ":" in text else 4
        value = Policy([text]).allow[0].network if "/" not in text else 0
        bits = 32 if version == 4 else 128
        prefix = rng.choice([0, 8, 16, 24, 30, 32] if version == 4 else [0, 16, 32, 48, 64, 96, 104, 120, 127, 128])
        network = value & ~((1 << (bits - prefix)) - 1)
        from sockguard.addresses import format_address

        body = format_address((version, network)) + ("" if prefix == bits else f"/{prefix}")
        ports = rng.choice(PORT_SUFFIXES)
        return (f"[{body}]{ports}" if ports else body) if version == 6 else body + ports
    name = rng.choice(NAMES)
    if rng.random() < 0.5:
        name = "*." + rng.choice(BASES + NAMES)
    return name + rng.choice(PORT_SUFFIXES)


def random_query(rng: random.Random) -> tuple[str, bytes | str, int | None, str | None]:
    port = rng.choice([*PORTS, 1, 8050, 65535])
    kind = rng.random()
    if kind < 0.3:
        return "N", rng.choice(NAMES).encode(), port, None
    if kind < 0.4:
        return "N", rng.choice(EXTRA_HOSTS), port, None
    if kind < 0.55:
        return "N", rng.choice(ADDRESSES).encode(), port, None
    name = rng.choice([*NAMES, "API.Example.Test.", "bad name"]) if rng.random() < 0.6 else None
    return "A", rng.choice(ADDRESSES), port, name


def corpus(seed: int, policies: int, queries: int) -> list[tuple[list[str], list[str], bool, list[tuple]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(policies):
        allow = [random_rule(rng) for _ in range(rng.randint(0, 8))]
        deny = [random_rule(rng) for _ in range(rng.randint(0, 4))]
        out.append((allow, deny, rng.random() < 0.5, [random_query(rng) for _ in range(queries)]))
    return out


def python_decision(policy: Policy, query: tuple) -> str:
    kind, target, port, name = query
    d = policy.check_name(target, port) if kind == "N" else policy.check_address(target, port, name)
    detail = (d.detail or "") if d.reason in DETAILED else ""
    return f"{int(d.allowed)}|{d.reason}|{d.rule or ''}|{detail}"


def c_line(line: str) -> str:
    allowed, reason, rule, detail = line.split("|", 3)
    return f"{allowed}|{reason}|{rule}|{detail if reason in DETAILED else ''}"


class CPolicy:
    """The production library's test entry points."""

    def __init__(self, library: ctypes.CDLL, data: bytes) -> None:
        self.lib = library
        err = ctypes.create_string_buffer(200)
        self.handle = library.sockguard_test_load(data, len(data), err, len(err))
        self.error = err.value.decode()

    def decide(self, query: tuple) -> str:
        kind, target, port, name = query
        out = ctypes.create_string_buffer(600)
        target_bytes = target if isinstance(target, bytes) else target.encode()
        result = self.lib.sockguard_test_decide(
            self.handle, 0 if kind == "N" else 1, target_bytes, -1 if port is None else port,
            None if name is None else name.encode(), out, len(out),
        )  # fmt: skip
        assert result == 0
        return c_line(out.value.decode())

    def close(self) -> None:
        self.lib.sockguard_test_free(self.handle)


@pytest.fixture(scope="module")
def clib() -> ctypes.CDLL:
    lib = ctypes.CDLL(require_library())
    lib.sockguard_test_load.restype = ctypes.c_void_p
    lib.sockguard_test_load.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    text = ctypes.c_char_p
    lib.sockguard_test_decide.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        text,
        ctypes.c_long,
        text,
        text,
        ctypes.c_size_t,
    ]
    lib.sockguard_test_free.argtypes = [ctypes.c_void_p]
    return lib


def _usable(query: tuple) -> bool:
    """C strings end at NUL: such a host cannot reach the C side at all."""
    return b"\0" not in (query[1] if isinstance(query[1], bytes) else query[1].encode())


def test_c_matcher_agrees_with_python_on_a_generated_corpus(clib: ctypes.CDLL) -> None:
    disagreements = []
    checked = 0
    for allow, deny, loopback, queries in corpus(seed=14, policies=400, queries=150):
        policy = Policy(allow, deny, allow_loopback=loopback)
        native = CPolicy(clib, compile_policy(policy))
        assert native.handle, native.error
        try:
            for query in filter(_usable, queries):
                expected, got = python_decision(policy, query), native.decide(query)
                checked += 1
                if expected != got:
                    disagreements.append((allow, deny, loopback, query, expected, got))
        finally:
            native.close()
    assert checked > 50_000
    assert not disagreements, disagreements[:5]


@settings(deadline=None, max_examples=300)
@given(rule_lists, rule_lists, st.booleans(), st.lists(destinations(), min_size=1, max_size=20))
def test_c_matcher_agrees_with_python_on_the_property_generators(
    clib: ctypes.CDLL, allow: list[str], deny: list[str], loopback: bool, dests: list[tuple]
) -> None:
    policy = Policy(allow, deny, allow_loopback=loopback)
    native = CPolicy(clib, compile_policy(policy))
    try:
        for kind, target, port, name in dests:
            query = ("N", target.encode(), port, None) if kind == "name" else ("A", target, port, name)
            assert native.decide(query) == python_decision(policy, query), (allow, deny, loopback, query)
    finally:
        native.close()


def test_differential_corpus_under_asan_and_ubsan(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same comparison through sg_decide built with AddressSanitizer and UndefinedBehaviorSanitizer."""
    driver = build_sanitized("sg_decide", tmp_path_factory.getbasetemp())
    lines, expected = [], []
    for i, (allow, deny, loopback, queries) in enumerate(corpus(seed=1414, policies=120, queries=120)):
        policy = Policy(allow, deny, allow_loopback=loopback)
        path = tmp_path / f"p{i}.bin"
        path.write_bytes(compile_policy(policy))
        lines.append(f"P\t{path}\t-\t-")
        for query in filter(_usable, queries):
            kind, target, port, name = query
            raw = target if isinstance(target, bytes) else target.encode()
            escaped = "".join(chr(b) if 0x20 < b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)
            lines.append(f"{kind}\t{escaped}\t{'-' if port is None else port}\t{name or '-'}")
            expected.append(python_decision(policy, query))
    first = tmp_path / "empty.bin"
    first.write_bytes(compile_policy(Policy()))
    result = subprocess.run(
        [driver, first], input="\n".join(lines) + "\n", capture_output=True, text=True, env=SANITIZER_ENV, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = [c_line(line) for line in result.stdout.splitlines()]
    mismatches = [(e, g) for e, g in zip(expected, got, strict=True) if e != g]
    assert len(got) == len(expected) > 10_000
    assert not mismatches, mismatches[:5]


def test_c_unit_tests_under_asan_and_ubsan(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The address map (bounded, newest names, 6 threads and 20 forks at once), reverse names, host parsing."""
    program = build_sanitized("sg_unit", tmp_path_factory.getbasetemp())
    result = subprocess.run([program], capture_output=True, text=True, env=SANITIZER_ENV, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_parsers_fuzzed_under_asan_and_ubsan(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """DNS messages (truncated, compression-pointer loops, oversize labels, wrong counts) and damaged policy
    files (re-checksummed so the validator is reached): no crash, no read outside the buffer. A longer run:
    ``SOCKGUARD_FUZZ_ITERATIONS=50000000 pytest tests/test_native_policy.py -k fuzz``."""
    import os

    program = build_sanitized("sg_fuzz", tmp_path_factory.getbasetemp())
    policy = tmp_path / "policy.bin"
    rules = ["api.allowed.test:443", "*.example.test", "10.0.0.0/8", "[2001:db8::/32]:443"]
    policy.write_bytes(compile_policy(Policy(rules, ["bad.example.test"])))
    iterations = os.environ.get("SOCKGUARD_FUZZ_ITERATIONS", "200000")
    result = subprocess.run(
        [program, policy, iterations, "14"], capture_output=True, text=True, env=SANITIZER_ENV, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok:")


# -- the policy file is input: damaged or foreign files are refused whole -------------------------------------


def _recrc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, 20, zlib.crc32(bytes(data[64:])))
    return bytes(data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:40], "too short"),
        (lambda d: b"XGPOLICY" + d[8:], "bad magic"),
        (lambda d: d[:8] + struct.pack("<I", 99) + d[12:], "version"),
        (lambda d: d[:-1], "file size"),
        (lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:], "checksum"),
        (lambda d: _recrc(bytearray(d[:24]) + bytes([7]) + bytearray(d[25:])), "bad mode"),
    ],
)  # fmt: skip
def test_damaged_policy_files_are_refused(clib: ctypes.CDLL, damage, message: str) -> None:
    data = compile_policy(Policy(["api.allowed.test"]))
    native = CPolicy(clib, damage(data))
    assert not native.handle
    assert message in native.error


def test_a_forged_hash_table_is_refused(clib: ctypes.CDLL) -> None:
    """Checksummed but inconsistent: a name moved out of its hash slot would silently never match (a deny
    rule that never fires): the loader checks every row is where its hash says."""
    data = bytearray(compile_policy(Policy(["api.allowed.test"], ["bad.allowed.test"])))
    count, table = struct.unpack_from("<HI", data, 26)
    for i in range(count):
        section, offset, rows, _ = struct.unpack_from("<IIII", data, table + 16 * i)
        if section == 22:  # deny-exact slots
            slots = list(struct.unpack_from(f"<{rows}I", data, offset))
            used = next(k for k, v in enumerate(slots) if v)
            slots[used], slots[(used + 1) % rows] = 0, slots[used]
            struct.pack_into(f"<{rows}I", data, offset, *slots)
    native = CPolicy(clib, _recrc(data))
    assert not native.handle
    assert "hash" in native.error
