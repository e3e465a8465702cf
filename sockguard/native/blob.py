"""Compile a :class:`~sockguard.policy.Policy` into the binary file the preload library maps read-only.

The C side (``native/sg_policy.c``) must decide exactly as ``policy.py`` does, so it is given the tables
``policy.py`` itself builds — name indexes, CIDR interval tables with their covering rules in Python's order,
the internal-range table and the metadata addresses and names of ``addresses.py`` — rather than the rule texts
to parse again. The file is input to C: a versioned header, a section table and a CRC-32 of everything after
the header; the loader checks every offset, count, order and hash slot and refuses the file whole on any
problem (fail closed).

Layout (little-endian)::

    header (64 bytes): magic "SGPOLICY", u32 version, u32 header size, u32 total size, u32 crc32(body),
                       u8 mode, u8 flags, u16 section count, u32 section table offset, zero padding
    section table:     per section u32 id, u32 offset, u32 count, u32 byte size
    sections:          see the SECTION_* constants and the row formats below
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence

from sockguard import addresses
from sockguard.policy import Policy, _NameIndex, _NetIndex
from sockguard.rules import Rule

MAGIC = b"SGPOLICY"
VERSION = 2  # 2: rule rows carry the CIDR prefix length
HEADER = struct.Struct("<8sIIIIBBHI32x")
SECTION = struct.Struct("<IIII")
MODES = {"off": 0, "monitor": 1, "enforce": 2}
FLAG_LOOPBACK, FLAG_UNIX, FLAG_RAW = 1, 2, 4

SECTION_STRINGS = 1
SECTION_RULES = 2  # u32 text offset, u32 text length, u16 port low, u16 port high, u8 any port, u8 prefix, 2 pad
SECTION_LISTS = 3  # u32 rule index; every table row names a (start, count) run of these
SECTION_NAMES = 10  # + table: u32 name offset, u32 name length, u32 list start, u32 list count
SECTION_SLOTS = 20  # + table: u32 (row index + 1, 0 = empty); a power of two, linear probing, FNV-1a 32
NAME_TABLES = ("allow-exact", "allow-suffix", "deny-exact", "deny-suffix")
SECTION_NET4 = 30  # + 0 allow, + 1 deny: u32 start, u32 list start, u32 list count
SECTION_NET6 = 32  # + 0 allow, + 1 deny: u64 start high, u64 start low, u32 list start, u32 list count
SECTION_RANGES4 = 40  # u32 first, u32 last, u32 category offset, u32 category length
SECTION_RANGES6 = 41  # u64 first high, u64 first low, u64 last high, u64 last low, u32 category off, u32 len
SECTION_METADATA_ADDRESSES = 42  # u32 version, u32 pad, u64 high, u64 low
SECTION_METADATA_NAMES = 43  # u32 offset, u32 length
SECTION_NAMESERVERS = 44  # u32 version, u32 port, u64 high, u64 low: pinned resolvers a DNS socket may reach
SECTION_SOURCE = 45  # two rows of u32 offset, u32 length: where the configuration came from, the log path ("" none)

RULE_ROW = struct.Struct("<IIHHBB2x")
NAME_ROW = struct.Struct("<IIII")
NET4_ROW = struct.Struct("<III")
NET6_ROW = struct.Struct("<QQII")
RANGE4_ROW = struct.Struct("<IIII")
RANGE6_ROW = struct.Struct("<QQQQII")
ADDRESS_ROW = struct.Struct("<IIQQ")
STRING_ROW = struct.Struct("<II")
_MASK64 = (1 << 64) - 1


def fnv1a32(data: bytes) -> int:
    """The name tables' hash (the C side computes the same)."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


class _Builder:
    def __init__(self) -> None:
        self.strings = bytearray()
        self._string_at: dict[bytes, int] = {}
        self.rules: list[Rule] = []
        self._rule_at: dict[int, int] = {}
        self.lists: list[int] = []

    def string(self, text: str) -> tuple[int, int]:
        data = text.encode("utf-8", "surrogateescape")
        offset = self._string_at.get(data)
        if offset is None:
            offset = self._string_at[data] = len(self.strings)
            self.strings += data
        return offset, len(data)

    def rule_list(self, rules: Iterable[Rule]) -> tuple[int, int]:
        start = len(self.lists)
        for rule in rules:
            index = self._rule_at.get(id(rule))
            if index is None:
                index = self._rule_at[id(rule)] = len(self.rules)
                self.rules.append(rule)
            self.lists.append(index)
        return start, len(self.lists) - start

    def name_table(self, table: dict[str, list[Rule]]) -> tuple[bytes, bytes]:
        rows = []
        size = 8
        while size < 2 * len(table):
            size *= 2
        slots = [0] * size
        for index, (name, rules) in enumerate(table.items()):
            offset, length = self.string(name)
            rows.append(NAME_ROW.pack(offset, length, *self.rule_list(rules)))
            slot = fnv1a32(name.encode("ascii")) & (size - 1)
            while slots[slot]:
                slot = (slot + 1) & (size - 1)
            slots[slot] = index + 1
        return b"".join(rows), struct.pack(f"<{size}I", *slots)

    def net_table(self, table: tuple[list[int], Sequence[Iterable[Rule]]], version: int) -> bytes:
        rows = []
        for start, covers in zip(*table, strict=True):
            if start >> (32 if version == 4 else 128):
                continue  # the end point past the last address (2**32 / 2**128): no address reaches it
            list_start, count = self.rule_list(covers)
            if version == 4:
                rows.append(NET4_ROW.pack(start, list_start, count))
            else:
                rows.append(NET6_ROW.pack(start >> 64, start & _MASK64, list_start, count))
        return b"".join(rows)


def compile_policy(
    policy: Policy,
    mode: str = "enforce",
    *,
    allow_raw: bool | None = None,
    nameservers: Iterable[str] = (),
    source: str = "",
    log: str | None = None,
) -> bytes:
    """The policy as the preload library's binary file. ``nameservers``: pinned resolvers ("ADDR:PORT" or
    "[ADDR]:PORT"), which a DNS socket may reach whatever the rules say (its questions are still decided);
    ``log``: the JSON-lines decision log the C side appends to (absolute path); ``allow_raw``: the policy's own
    unless given (raw, packet, ICMP and SCTP sockets stay refused by default, as in the Python layer)."""
    if allow_raw is None:
        allow_raw = policy.allow_raw
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    builder = _Builder()
    sections: dict[int, tuple[int, bytes]] = {}
    indexes: list[_NameIndex] = [policy._allow_names, policy._deny_names]
    for i, (index, kind) in enumerate([(indexes[0], 0), (indexes[0], 1), (indexes[1], 0), (indexes[1], 1)]):
        rows, slots = builder.name_table(index.exact if kind == 0 else index.suffix)
        sections[SECTION_NAMES + i] = (len(rows) // NAME_ROW.size, rows)
        sections[SECTION_SLOTS + i] = (len(slots) // 4, slots)
    nets: list[_NetIndex] = [policy._allow_nets, policy._deny_nets]
    for i, net in enumerate(nets):
        v4 = builder.net_table(net.tables[4], 4)
        v6 = builder.net_table(net.tables[6], 6)
        sections[SECTION_NET4 + i] = (len(v4) // NET4_ROW.size, v4)
        sections[SECTION_NET6 + i] = (len(v6) // NET6_ROW.size, v6)
    ranges4 = [RANGE4_ROW.pack(a, b, *builder.string(c)) for a, b, c in zip(*addresses._V4_TABLE, strict=True)]
    ranges6 = [
        RANGE6_ROW.pack(a >> 64, a & _MASK64, b >> 64, b & _MASK64, *builder.string(c))
        for a, b, c in zip(*addresses._V6_TABLE, strict=True)
    ]
    sections[SECTION_RANGES4] = (len(ranges4), b"".join(ranges4))
    sections[SECTION_RANGES6] = (len(ranges6), b"".join(ranges6))
    metadata = sorted(addresses._METADATA)
    sections[SECTION_METADATA_ADDRESSES] = (
        len(metadata),
        b"".join(ADDRESS_ROW.pack(v, 0, value >> 64, value & _MASK64) for v, value in metadata),
    )
    names = sorted(addresses.METADATA_NAMES)
    sections[SECTION_METADATA_NAMES] = (len(names), b"".join(STRING_ROW.pack(*builder.string(n)) for n in names))
    servers = [_nameserver(text) for text in nameservers]
    sections[SECTION_NAMESERVERS] = (
        len(servers),
        b"".join(ADDRESS_ROW.pack(v, port, value >> 64, value & _MASK64) for v, value, port in servers),
    )
    sections[SECTION_SOURCE] = (
        2,
        STRING_ROW.pack(*builder.string(source)) + STRING_ROW.pack(*builder.string(log or "")),
    )
    rules = []
    for rule in builder.rules:
        low, high = rule.ports if rule.ports is not None else (0, 0)
        prefix = rule.prefix if rule.kind == "cidr" else 0
        rules.append(RULE_ROW.pack(*builder.string(rule.text), low, high, rule.ports is None, prefix))
    sections[SECTION_RULES] = (len(rules), b"".join(rules))
    sections[SECTION_LISTS] = (len(builder.lists), struct.pack(f"<{len(builder.lists)}I", *builder.lists))
    sections[SECTION_STRINGS] = (len(builder.strings), bytes(builder.strings))
    return _assemble(sections, mode, policy, allow_raw)


def _nameserver(text: str) -> tuple[int, int, int]:
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    else:
        host, _, port = text.rpartition(":")
    addr = addresses.parse_address(host)
    if addr is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"nameserver {text!r} must be ADDRESS:PORT")
    return addr[0], addr[1], int(port)


def _assemble(sections: dict[int, tuple[int, bytes]], mode: str, policy: Policy, allow_raw: bool) -> bytes:
    table_offset = HEADER.size
    offset = table_offset + SECTION.size * len(sections)
    table = []
    bodies = []
    for section_id in sorted(sections):
        count, data = sections[section_id]
        offset += -offset % 8  # every section 8-aligned: the C side reads rows in place
        table.append(SECTION.pack(section_id, offset, count, len(data)))
        bodies.append((offset, data))
        offset += len(data)
    body = bytearray(b"".join(table))
    for start, data in bodies:
        body += bytes(start - HEADER.size - len(body))
        body += data
    flags = (FLAG_LOOPBACK if policy.allow_loopback else 0) | (FLAG_UNIX if policy.allow_unix else 0)
    flags |= FLAG_RAW if allow_raw else 0
    total = HEADER.size + len(body)
    header = HEADER.pack(
        MAGIC, VERSION, HEADER.size, total, zlib.crc32(body), MODES[mode], flags, len(sections), table_offset
    )
    return header + bytes(body)


def compile_settings(settings: object) -> bytes:
    """The binary policy for :class:`~sockguard.config.Settings` (raises ConfigError/RuleError as build_policy
    does)."""
    policy = settings.build_policy()  # type: ignore[attr-defined]
    return compile_policy(
        policy,
        settings.mode,  # type: ignore[attr-defined]
        nameservers=getattr(settings, "resolver", None) or (),
        source=str(getattr(settings, "source", "")),
        log=getattr(settings, "log", None),
    )
