"""Issue 10's property: for an address of any (sub)type, the guard decides exactly as it does for the plain tuple
of built-in values, and the object C receives *is* a plain tuple of exact built-in types.

Run in a child process whose first audit hook (added before sockguard's) records every address object C receives
in ``socket.connect``, including the ones the guard then refuses. UDP ``connect()`` sends nothing, so every example
can be tried for real against the lab's addresses. The breaker is off: repeated refusals must not change a reason
between the two attempts of one example.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.accel_support import accelerator_env
from tests.netlab import Lab

CHILD = r"""
import collections, ctypes, enum, socket, sys

received = []


def record(event, args, data):
    if event == b"socket.connect":
        received.append(args[1])
    return 0


# A C-level hook (PySys_AddAuditHook), added before sockguard's: it runs before every other hook, so it sees what
# C got even when the guard refuses it, whether the guard's floor is the C accelerator's hook or a Python one.
HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.py_object, ctypes.c_void_p)
recorder = HOOK(record)
ctypes.pythonapi.PySys_AddAuditHook.argtypes = [HOOK, ctypes.c_void_p]
assert ctypes.pythonapi.PySys_AddAuditHook(recorder, None) == 0

import sockguard
from hypothesis import HealthCheck, given, settings, strategies as st

sockguard.install()  # SOCKGUARD_* from the environment

V4 = ["198.51.100.10", "10.0.0.5", "169.254.169.254", "203.0.113.10", "127.0.0.1", "127.1", "0x7f.0.0.1", "2130706433"]
V6 = ["2001:db8::10", "2001:db8::11", "fd00:ec2::254", "::1", "::ffff:198.51.100.10", "::ffff:169.254.169.254"]
PORTS = [22, 80, 443, 5432]


class Text(str):
    pass


class Forged(str):
    def __eq__(self, other):
        return True

    def __hash__(self):
        return hash("198.51.100.10")


class Raw(bytes):
    pass


class Number(int):
    def __index__(self):  # never consulted: C and the guard read an int's own value
        return 1


class Changing:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def __index__(self):
        self.calls += 1
        return self.value if self.calls == 1 else 443  # the first read is what counts


class Pair(tuple):
    pass


class Lying(tuple):
    def __getitem__(self, index):
        return ("198.51.100.10", 443, 0, 0)[index]

    def __iter__(self):
        return iter(("198.51.100.10", 443))


Endpoint = collections.namedtuple("Endpoint", "host port")
Endpoint6 = collections.namedtuple("Endpoint6", "host port flowinfo scope_id")
HOSTS = {
    "str": lambda h: h,
    "str subclass": Text,
    "forged str": Forged,
    "bytes": str.encode,
    "bytes subclass": lambda h: Raw(h.encode()),
    "bytearray": lambda h: bytearray(h.encode()),
}
PORT_TYPES = {
    "int": lambda p: p,
    "int subclass": Number,
    "IntEnum": lambda p: enum.IntEnum("Service", {"PORT": p}).PORT,
    "__index__": Changing,
    "bool-free int": int,
}
CONTAINERS = {
    "tuple": tuple,
    "tuple subclass": Pair,
    "lying tuple": Lying,
    "namedtuple": lambda items: (Endpoint if len(items) == 2 else Endpoint6)(*items),
}


def outcome(address, family):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            return ("connected", sock.getpeername()[:2])
        except sockguard.EgressBlocked as exc:
            return ("blocked", exc.reason)
        except OSError as exc:
            return ("error", type(exc).__name__, exc.errno)


@settings(max_examples=int(sys.argv[1]), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(
    v6=st.booleans(),
    index=st.integers(0, 100),
    port=st.sampled_from(PORTS),
    host_type=st.sampled_from(sorted(HOSTS)),
    port_type=st.sampled_from(sorted(PORT_TYPES)),
    container=st.sampled_from(sorted(CONTAINERS)),
    four=st.booleans(),
)
def decided_as_the_plain_tuple(v6, index, port, host_type, port_type, container, four):
    hosts = V6 if v6 else V4
    host = hosts[index % len(hosts)]
    family = socket.AF_INET6 if v6 else socket.AF_INET
    tail = (0, 0) if v6 and four else ()
    received.clear()
    shaped = CONTAINERS[container]((HOSTS[host_type](host), PORT_TYPES[port_type](port), *tail))
    got = outcome(shaped, family)
    handed = list(received)
    received.clear()
    expected = outcome((host, port, *tail), family)
    assert got == expected, (host, port, host_type, port_type, container, got, expected)
    assert handed, "C was never called"
    for address in handed:
        assert type(address) is tuple, type(address)
        assert [type(item) for item in address] == [str] + [int] * (len(address) - 1), address


decided_as_the_plain_tuple()
print("OK", flush=True)
import os
os._exit(0)  # the ctypes hook cannot outlive its thunk, which interpreter finalisation frees before the hooks
"""


def test_decisions_on_any_address_shape_equal_the_plain_tuples_and_c_gets_a_plain_tuple(netlab: Lab) -> None:
    netlab.dns.set("api.allowed.test", A=["198.51.100.10"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKGUARD_") and k != "PYTHONPATH"}
    env.update(accelerator_env())  # the accelerator-off pass (scripts/test) runs the child without it too
    env.update(
        SOCKGUARD_ALLOW="198.51.100.10:443,10.0.0.0/8:5432,2001:db8::10",
        SOCKGUARD_ALLOW_LOOPBACK="0",
        SOCKGUARD_BREAKER="off",
    )
    result = subprocess.run([sys.executable, "-c", CHILD, "600"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout + result.stderr[-4000:]
