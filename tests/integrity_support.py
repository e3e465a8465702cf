"""The integrity scene (issue 10, docs/threat-model in README): one allowed service and the places an attacker would
aim at instead, each counting what reaches it.

Policy: ``*.allowed.test:443`` and ``10.0.0.0/8:5432``, loopback not allowed. ``api.allowed.test`` answers
198.51.100.10 (where :443 is the allowed service and :80/:22 are not allowed), ``rebind.allowed.test`` answers the
internal 10.0.0.5, ``blocked.test`` a public address no rule allows. ``api.allowed.test.evil.test`` exists, so a
search-list expansion that leaked would be answered (and counted).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from tests.netlab import Lab, TcpServer, UdpServer

ALLOW = ["*.allowed.test:443", "10.0.0.0/8:5432"]
ALLOWED_NAME = "api.allowed.test"
ALLOWED_V4 = "198.51.100.10"
FAR_NAME = "far.allowed.test"  # an allowed name whose address is not on this host (reverse lookups)
FAR_V4 = "198.51.100.99"
REBIND_NAME = "rebind.allowed.test"
INTERNAL_V4 = "10.0.0.5"
BLOCKED_NAME = "blocked.test"
BLOCKED_V4 = "203.0.113.10"
BLOCKED_V6 = "2001:db8::11"
METADATA_V4 = "169.254.169.254"
METADATA_V6 = "fd00:ec2::254"
EVIL_SUFFIX = "evil.test"
UDP_PORT = 5353
#: addresses nobody in the lab owns, for reverse lookups (PTR queries would reach the lab DNS server)
STRANGER_V4 = "203.0.113.7"
STRANGER_V6 = "2001:db8::dead"


@dataclasses.dataclass
class Scene:
    lab: Lab
    allowed: TcpServer  # 198.51.100.10:443, the one allowed service
    targets: dict[str, TcpServer]  # every TCP server no rule allows
    datagrams: dict[str, UdpServer]  # every UDP server no rule allows

    def far_side(self) -> dict[str, int]:
        """What reached anything the policy does not allow: TCP accepts, datagrams, DNS queries for names the
        policy does not allow (``*.allowed.test``), PTR queries."""
        queries = self.lab.dns.log()
        return {
            "tcp": sum(server.accepted for server in self.targets.values()),
            "udp": sum(server.datagrams for server in self.datagrams.values()),
            "dns": sum(1 for name, kind, _, _ in queries if kind != "PTR" and not name.endswith(".allowed.test")),
            "ptr": sum(1 for _, kind, _, _ in queries if kind == "PTR"),
        }

    def untouched(self) -> dict[str, int]:
        return {"tcp": 0, "udp": 0, "dns": 0, "ptr": 0}


def build_scene(lab: Lab) -> Scene:
    lab.dns.set(ALLOWED_NAME, A=[ALLOWED_V4])
    lab.dns.set(FAR_NAME, A=[FAR_V4])
    lab.dns.set(REBIND_NAME, A=[INTERNAL_V4])
    lab.dns.set(BLOCKED_NAME, A=[BLOCKED_V4], AAAA=[BLOCKED_V6])
    lab.dns.set(f"{ALLOWED_NAME}.{EVIL_SUFFIX}", A=[BLOCKED_V4])
    lab.dns.set(f"missing.allowed.test.{EVIL_SUFFIX}", A=[BLOCKED_V4])
    targets = {
        "allowed-host:80": lab.tcp(ALLOWED_V4, 80),
        "allowed-host:22": lab.tcp(ALLOWED_V4, 22),
        "internal:80": lab.tcp(INTERNAL_V4, 80),
        "metadata:80": lab.tcp(METADATA_V4, 80),
        "metadata-v6:80": lab.tcp(METADATA_V6, 80),
        "blocked:80": lab.tcp(BLOCKED_V4, 80),
        "blocked:443": lab.tcp(BLOCKED_V4, 443),
        "blocked-v6:80": lab.tcp(BLOCKED_V6, 80),
    }
    datagrams = {
        "blocked": lab.udp(BLOCKED_V4, UDP_PORT),
        "blocked-v6": lab.udp(BLOCKED_V6, UDP_PORT),
        "metadata": lab.udp(METADATA_V4, UDP_PORT),
        "internal": lab.udp(INTERNAL_V4, UDP_PORT),
        "allowed-host": lab.udp(ALLOWED_V4, UDP_PORT),
    }
    return Scene(lab, lab.tcp(ALLOWED_V4, 443), targets, datagrams)


def snapshot(scene: Scene) -> dict[str, Any]:
    return {**scene.far_side(), "allowed": scene.allowed.accepted}


def activated(activation: str, program: list[str], env: dict[str, str]) -> list[str]:
    """``program``'s command line guarded by ``activation`` with the scene's policy: ``sockguard run`` flags, or
    ``SOCKGUARD_ALLOW`` with the sitecustomize on ``PYTHONPATH`` (added to ``env``)."""
    from tests.coverage_support import SITE_DIR

    if activation == "pythonpath":
        env.update(PYTHONPATH=SITE_DIR, SOCKGUARD_ALLOW=",".join(ALLOW))
        return program
    flags = [arg for rule in ALLOW for arg in ("--allow", rule)]
    return [sys.executable, "-m", "sockguard", "run", *flags, "--", *program]


def per_step(steps: dict[str, dict[str, int]], baseline: dict[str, int] | None = None) -> dict[str, dict[str, int]]:
    """A stepped child's snapshots (run_stepped_child) as each step's own counts: the difference to the step
    before (to ``baseline`` for the first)."""
    counts: dict[str, dict[str, int]] = {}
    previous = baseline or {}
    for name, snap in steps.items():
        counts[name] = {key: value - previous.get(key, 0) for key, value in snap.items()}
        previous = snap
    return counts
