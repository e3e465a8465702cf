"""Drop-in compatibility with pytest-socket, and the comparison behind docs/pytest-plugin.md.

The same inner suites run twice in-process: under pytest-socket (``-p no:sockguard``) and under sockguard
handling pytest-socket's names (``-p no:socket``). Where the two agree the test asserts one expectation for
both; where sockguard is meant to differ the test asserts both outcomes, one per comparison-table row.
"""

from __future__ import annotations

import gc

import pytest

from tests.test_pytest_plugin_helpers import BASE_INI, PROBE, Counter, run, text

PROBE_CONFTEST = PROBE

pytest_plugins = ["pytester", "tests.test_pytest_plugin_helpers"]

PLUGINS = ["pytest-socket", "sockguard"]

# Event loops pytest-socket stopped half-way (socketpair blocked) complain in __del__; collected right after
# each run (see run_under) so that complaint is theirs and is ignored here.
pytestmark = pytest.mark.filterwarnings("ignore:Exception ignored in. <function BaseEventLoop.__del__")


def run_under(pytester: pytest.Pytester, plugin: str, *args: str) -> pytest.RunResult:
    if plugin != "pytest-socket":
        return run(pytester, *args)

    # No cyclic collection during the run: a finaliser of what pytest-socket stopped half-way (an event loop, a
    # socket accept() could not wrap) running inside one of pytest's ast.parse calls trips CPython 3.11.7's "AST
    # constructor recursion depth mismatch", an INTERNALERROR that skips pytest-socket's teardown and leaves
    # socket.getaddrinfo patched for every later test of this process. Collected right after the run instead.
    enabled = gc.isenabled()
    gc.disable()
    try:
        result = run(pytester, "-p", "no:sockguard", *args, pytest_socket=True)
    finally:
        if enabled:
            gc.enable()
        gc.collect()
    return result


# --- options, markers and fixtures behave the same ------------------------------------------------


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize(
    ("args", "expected", "counts"),
    [
        (["--disable-socket"], "blocked blocked blocked", (0, 0, 0)),
        (["--disable-socket", "--allow-unix-socket"], "blocked blocked ok", (0, 0, 1)),
        (["--allow-hosts=127.0.0.1"], "ok ok blocked", (1, 1, 0)),
        (["--allow-hosts=127.0.0.0/8,::1", "--allow-unix-socket"], "ok ok ok", (1, 1, 1)),
        (["--allow-hosts", "127.0.0.2", "--disable-socket"], "blocked ok blocked", (0, 1, 0)),
        (["--disable-socket", "--force-enable-socket"], "ok ok ok", (1, 1, 1)),
    ],
    ids=["disable", "disable+unix", "allow-hosts", "allow-cidr+unix", "allow-other-udp", "force-enable"],
)
def test_command_line_options(sg, servers, plugin, args, expected, counts) -> None:
    """UDP is the one divergence here, and it is sockguard's: pytest-socket checks only connect()."""
    if plugin == "sockguard" and args[:2] == ["--allow-hosts", "127.0.0.2"]:
        expected, counts = "blocked blocked blocked", (0, 0, 0)
    sg.makepyfile(
        test_inner=f"""
        def test_probe(probe):
            assert " ".join([probe.tcp(), probe.udp(), probe.unix()]) == {expected!r}
        """
    )
    run_under(sg, plugin, *args).assert_outcomes(passed=1)
    assert (servers["tcp"].count(), servers["udp"].count(), servers["unix"].count()) == counts


def test_sockguard_options_refine_pytest_socket_options(sg, servers) -> None:
    port = servers["tcp"].port
    sg.makepyfile(
        test_inner="""
        def test_probe(probe):
            assert (probe.tcp(), probe.tcp(env="SG_PORT2"), probe.udp()) == ("ok", "blocked", "blocked")
        """
    )
    result = run(sg, "--allow-hosts=127.0.0.2", f"--sockguard-allow=127.0.0.1:{port}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [f"sockguard: enforce; allow: 127.0.0.2, localhost, 127.0.0.1:{port}; *options: --allow-hosts=127.0.0.2"]
    )
    assert (servers["tcp"].count(), servers["tcp2"].count(), servers["udp"].count()) == (1, 0, 0)


PRECEDENCE = """
import pytest

EXPECT = {expect!r}


@pytest.fixture
def expect(request):
    return EXPECT[request.node.name]


def test_cli(probe, expect):
    assert probe.tcp() == expect


@pytest.mark.enable_socket
def test_enable_marker(probe, expect):
    assert probe.tcp() == expect


def test_enable_fixture(socket_enabled, probe, expect):
    assert probe.tcp() == expect


@pytest.mark.disable_socket
def test_disable_marker(probe, expect):
    assert probe.tcp() == expect


def test_disable_fixture(socket_disabled, probe, expect):
    assert probe.tcp() == expect


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_allow_hosts_list(probe, expect):
    assert probe.tcp() == expect


@pytest.mark.allow_hosts("127.0.0.2, 127.0.0.1")
def test_allow_hosts_csv(probe, expect):
    assert probe.tcp() == expect


@pytest.mark.allow_hosts(["127.0.0.2"])
def test_allow_hosts_other(probe, expect):
    assert probe.tcp() == expect


@pytest.mark.enable_socket
@pytest.mark.disable_socket
def test_enable_beats_disable(probe, expect):
    assert probe.tcp() == expect


@pytest.mark.disable_socket
def test_enable_fixture_beats_disable_marker(socket_enabled, probe, expect):
    assert probe.tcp() == expect


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_disable_fixture_beats_allow_hosts(socket_disabled, probe, expect):
    assert probe.tcp() == expect


@pytest.mark.disable_socket
@pytest.mark.allow_hosts(["127.0.0.1"])
def test_disable_marker_beats_allow_hosts(probe, expect):
    assert probe.tcp() == expect


@pytest.mark.disable_socket
def test_dynamic_enable(request, probe):
    assert probe.tcp() == "blocked"
    request.getfixturevalue("socket_enabled")
    assert probe.tcp() == "ok"


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_dynamic_disable(request, probe, expect):
    assert probe.tcp() == "ok"
    request.getfixturevalue("socket_disabled")
    assert probe.tcp() == expect
"""

OK, BLOCKED = "ok", "blocked"
MARKERS = {  # outcomes decided by the test's own markers and fixtures, whatever the command line says
    "test_enable_marker": OK,
    "test_enable_fixture": OK,
    "test_disable_marker": BLOCKED,
    "test_disable_fixture": BLOCKED,
    "test_allow_hosts_list": OK,
    "test_allow_hosts_csv": OK,
    "test_allow_hosts_other": BLOCKED,
    "test_enable_beats_disable": OK,
    "test_enable_fixture_beats_disable_marker": OK,
    "test_disable_fixture_beats_allow_hosts": BLOCKED,
    "test_disable_marker_beats_allow_hosts": BLOCKED,
    "test_dynamic_disable": BLOCKED,
}


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize(
    ("args", "cli"),
    [([], OK), (["--disable-socket"], BLOCKED), (["--allow-hosts=127.0.0.2"], BLOCKED)],
    ids=["no-option", "disable", "allow-hosts"],
)
def test_precedence_matches_pytest_socket(sg, servers, plugin, args, cli) -> None:
    """force-enable > enable marker/fixture > disable marker/fixture > allow_hosts marker > command line."""
    sg.makepyfile(test_precedence=PRECEDENCE.format(expect={**MARKERS, "test_cli": cli}))
    result = run_under(sg, plugin, *args)
    result.assert_outcomes(passed=len(MARKERS) + 2)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_force_enable_as_pytest_socket_has_it(sg, servers, plugin) -> None:
    """--force-enable-socket beats every marker and --disable-socket, but the socket_disabled fixture's body
    disables sockets when it runs, after the option enabled them (pytest-socket's order, kept exactly)."""
    expect = dict.fromkeys([*MARKERS, "test_cli"], OK)
    expect["test_disable_fixture"] = expect["test_disable_fixture_beats_allow_hosts"] = BLOCKED
    expect["test_dynamic_disable"] = BLOCKED
    sg.makepyfile(test_precedence=PRECEDENCE.format(expect=expect).replace('== "blocked"', "in ('ok', 'blocked')"))
    run_under(sg, plugin, "--force-enable-socket", "--disable-socket").assert_outcomes(passed=len(MARKERS) + 2)


def test_pytest_socket_installed_keeps_its_names_and_sockguard_says_so_once(sg) -> None:
    sg.makepyfile(
        test_inner="""
        import socket
        import pytest
        import pytest_socket

        def test_pytest_socket_handles_disable_socket():
            with pytest.raises(pytest_socket.SocketBlockedError):
                socket.socket()

        @pytest.mark.sockguard(allow=["api.example.test:443"])
        def test_sockguard_marker_still_works(sockguard):
            assert sockguard.rules.allow == ("api.example.test:443",)
        """
    )
    result = run(sg, "--sockguard", "--disable-socket", pytest_socket=True)
    result.assert_outcomes(passed=2)
    note = "sockguard: pytest-socket is installed, so --disable-socket, --allow-hosts, --allow-unix-socket, "
    assert [line for line in result.outlines if line.startswith(note)] == [
        note + "--force-enable-socket and its markers and fixtures stay with it (-p no:socket hands them to sockguard)"
    ]
    help_text = run(sg, "--help", pytest_socket=True).stdout.str()
    assert [line for line in help_text.splitlines() if line.split()[:1] == ["--disable-socket"]] == [
        "  --disable-socket      Disable socket.socket by default to block network calls."
    ]
    assert "Block all network access (sockguard)" not in help_text


# --- a pytest-socket suite, migrated without changes ------------------------------------------------------


MIGRATED_INI = """
[pytest]
addopts = -p no:cacheprovider --disable-socket --allow-unix-socket
asyncio_default_fixture_loop_scope = function
"""

MIGRATED_SUITE = """
import asyncio
import os
import socket

import pytest

PORT = int(os.environ["SG_PORT"])


def connect(host="127.0.0.1"):
    socket.create_connection((host, PORT), timeout=5).close()


def test_pure_logic():
    assert sum(range(4)) == 6


def test_network_is_off():
    with pytest.raises(Exception):
        connect()


@pytest.mark.enable_socket
def test_enabled_by_marker():
    connect()


def test_enabled_by_fixture(socket_enabled):
    connect()


@pytest.mark.allow_hosts(["127.0.0.1"])
def test_allowed_host_list():
    connect()


@pytest.mark.allow_hosts("127.0.0.1,::1")
class TestAllowedHostsOnAClass:
    def test_in_class(self):
        connect()


@pytest.mark.asyncio
async def test_asyncio_event_loop():
    await asyncio.sleep(0)


def test_unix_socket_pair():
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close()
    b.close()


@pytest.mark.enable_socket
def test_in_process_server():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=5)
        conn, _ = server.accept()
        client.sendall(b"hi")
        assert conn.recv(2) == b"hi"
        conn.close()
        client.close()
"""


@pytest.mark.parametrize("plugin", PLUGINS)
def test_pytest_socket_suite_runs_unchanged(sg, servers, plugin) -> None:
    sg.makeini(MIGRATED_INI)
    sg.makepyfile(test_suite=MIGRATED_SUITE)
    result = run_under(sg, plugin)
    result.assert_outcomes(passed=9)
    assert servers["tcp"].count() == 4


# --- where sockguard differs (each is a row of the comparison table) ---------------------------------


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k in ("passed", "failed", "errors", "error")}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_asyncio_under_disable_needs_allow_unix_socket(sg, plugin) -> None:
    """The event loop's socketpair is a socket creation: refused under --disable-socket alone, as pytest-socket does."""
    sg.makepyfile(
        test_inner="""
        import asyncio
        import pytest

        @pytest.mark.asyncio
        async def test_loop():
            await asyncio.sleep(0)
        """
    )
    assert outcomes(run_under(sg, plugin, "--disable-socket")) == {"errors": 1}  # socketpair refused
    assert outcomes(run_under(sg, plugin, "--disable-socket", "--allow-unix-socket")) == {"passed": 1}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_accept_is_a_socket_creation(sg, plugin) -> None:
    """accept() makes a socket object: refused while sockets are disabled, as pytest-socket does."""
    sg.makepyfile(
        test_inner="""
        import socket
        import pytest

        CLIENTS = []

        @pytest.fixture(scope="module")
        def listener():
            with socket.create_server(("127.0.0.1", 0)) as server:
                yield server

        @pytest.mark.enable_socket
        def test_1_client_connects(listener):
            CLIENTS.append(socket.create_connection(listener.getsockname(), timeout=5))

        def test_2_server_accepts_while_the_network_is_off(listener):
            conn, _ = listener.accept()
            conn.close()
            CLIENTS.pop().close()
        """
    )
    assert outcomes(run_under(sg, plugin, "--disable-socket")) == {"passed": 1, "failed": 1}


def test_row_module_fixture_does_not_escape(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import pytest

        import os, socket

        @pytest.fixture(scope="module")
        def warm_cache():
            try:
                socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5).close()
            except Exception:
                return "blocked"
            return "ok"

        @pytest.mark.enable_socket
        def test_first_needs_network(warm_cache):
            pass

        def test_second(warm_cache):
            pass
        """
    )
    run_under(sg, "pytest-socket", "--disable-socket").assert_outcomes(passed=2)
    assert servers["tcp"].count() == 1  # set up under the first test's enable_socket: it got out
    run_under(sg, "sockguard", "--disable-socket").assert_outcomes(passed=2)
    assert servers["tcp"].count() == 1  # the module's policy (no network) applied: nothing more arrived


def test_row_session_teardown_is_guarded(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import os, socket
        import pytest

        @pytest.fixture(scope="session")
        def client():
            yield
            socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5).close()

        def test_uses_client(client):
            pass
        """
    )
    assert outcomes(run_under(sg, "pytest-socket", "--disable-socket")) == {"passed": 1}
    assert servers["tcp"].count() == 1
    result = run_under(sg, "sockguard", "--disable-socket")
    assert outcomes(result) == {"passed": 1, "errors": 1}
    result.stdout.fnmatch_lines(["*during teardown of fixture 'client' (session scope)*"])
    assert servers["tcp"].count() == 1


def test_row_collection_is_guarded(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import os, socket
        socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5).close()

        def test_x():
            pass
        """
    )
    assert outcomes(run_under(sg, "pytest-socket", "--disable-socket")) == {"passed": 1}
    assert servers["tcp"].count() == 1
    assert outcomes(run_under(sg, "sockguard", "--disable-socket")) == {"errors": 1}
    assert servers["tcp"].count() == 1


def test_row_swallowed_blocks_are_reported(sg, servers) -> None:
    sg.makepyfile(
        app_quiet="""
        import socket

        def fetch_quietly(port):
            try:
                with socket.socket() as sock:
                    sock.connect(("127.0.0.1", port))
            except Exception:
                return None
            return "ok"
        """,
        test_inner="""
        import os
        import app_quiet

        def test_app_hides_the_error():
            assert app_quiet.fetch_quietly(int(os.environ["SG_PORT"])) is None
        """,
    )
    pytest_socket = run_under(sg, "pytest-socket", "--disable-socket")
    pytest_socket.assert_outcomes(passed=1, warnings=1)
    assert "app_quiet:fetch_quietly" not in text(pytest_socket)
    compatible = run_under(sg, "sockguard", "--disable-socket")
    compatible.assert_outcomes(passed=1, warnings=1)  # pytest-socket's warning, sockguard's detail after its line
    compatible.stdout.fnmatch_lines(
        ["*UserWarning: A test tried to use socket.socket.", "*called from app_quiet:fetch_quietly:*"]
    )
    strict = run_under(sg, "sockguard", "--disable-socket", "--sockguard")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*and the code under test swallowed the exception*"])
    assert servers["tcp"].count() == 0


def test_row_errors_are_oserrors_so_app_error_handling_runs(sg, servers) -> None:
    sg.makepyfile(
        app_http="""
        import os
        import urllib.request

        def status():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{os.environ['SG_PORT']}/", timeout=5)
            except OSError:
                return "offline"
            return "online"
        """,
        test_inner="""
        import app_http

        def test_offline_path():
            assert app_http.status() == "offline"
        """,
    )
    pytest_socket = run_under(sg, "pytest-socket", "--disable-socket")
    pytest_socket.assert_outcomes(failed=1)
    pytest_socket.stdout.fnmatch_lines(["*SocketBlockedError*"])  # a RuntimeError: escapes `except OSError`
    sockguard = run_under(sg, "sockguard", "--disable-socket")
    sockguard.assert_outcomes(passed=1, warnings=1)  # the app handled it; the swallowed block is still reported
    sockguard.stdout.fnmatch_lines(["*UserWarning: A test tried to use socket.getaddrinfo.", "*called from *"])


def test_row_udp_is_checked_under_allow_hosts(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        def test_send(probe):
            probe.udp()
        """
    )
    run_under(sg, "pytest-socket", "--allow-hosts=127.0.0.2").assert_outcomes(passed=1)
    assert servers["udp"].count() == 1
    run_under(sg, "sockguard", "--allow-hosts=127.0.0.2").assert_outcomes(passed=1)
    assert servers["udp"].count() == 1


def test_row_child_processes_are_guarded(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import os, subprocess, sys

        CHILD = "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['SG_PORT'])), timeout=5)"

        def test_child():
            subprocess.run([sys.executable, "-c", CHILD], capture_output=True)
        """
    )
    run_under(sg, "pytest-socket", "--disable-socket").assert_outcomes(passed=1)
    assert servers["tcp"].count() == 1
    result = run_under(sg, "sockguard", "--disable-socket")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*- test_inner.py::test_child (call) from __main__:<module>:1 [[]child process*"])
    assert servers["tcp"].count() == 1


def test_row_dns_lookups_are_checked_under_allow_hosts(pytester, netlab) -> None:
    """pytest-socket lets every lookup out under --allow-hosts; sockguard refuses unlisted names before DNS.
    Needs the lab (no dns_net here): the lookup really leaves the process under pytest-socket."""
    sg = pytester
    sg.makeini(BASE_INI)
    sg.makepyfile(
        test_inner="""
        import socket

        def test_lookup():
            try:
                socket.getaddrinfo("leak.example.test", 443)
            except Exception:
                pass
        """
    )
    netlab.dns.clear_log()
    run_under(sg, "pytest-socket", "--allow-hosts=127.0.0.1").assert_outcomes(passed=1)
    assert netlab.dns.queries("leak.example.test") >= 1
    netlab.dns.clear_log()
    run_under(sg, "sockguard", "--allow-hosts=127.0.0.1").assert_outcomes(passed=1)
    assert netlab.dns.queries("leak.example.test") == 0


def test_row_failure_names_call_site_and_rule(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import os
        import app

        def test_fetch():
            app.fetch("127.0.0.1", int(os.environ["SG_PORT"]))
        """
    )
    pytest_socket = text(run_under(sg, "pytest-socket", "--allow-hosts=127.0.0.2"))
    assert "called from" not in pytest_socket and "to allow it" not in pytest_socket
    result = run_under(sg, "sockguard", "--allow-hosts=127.0.0.2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            'E*SocketConnectBlockedError: A test tried to use socket.socket.connect() with host "127.0.0.1" '
            '(allowed: "127.0.0.2").',
            "E*sockguard blocked connection to 127.0.0.1:*: raw IP address not covered by an IP/CIDR rule; called "
            "from app:fetch:*. To allow it, list the host in @pytest.mark.allow_hosts(*) or --allow-hosts; *",
            "*- sockguard -*",
            "blocked connection to 127.0.0.1:* (tcp): raw IP address not covered by an IP/CIDR rule",
            "    during call, called from app:fetch:*",
            "    to allow it, list '127.0.0.1' in @pytest.mark.allow_hosts(*) or --allow-hosts, or use "
            "@pytest.mark.enable_socket; sockguard's own rule: @pytest.mark.sockguard(allow=*'127.0.0.1:*'*)",
            "*= sockguard: blocked destinations =*",
        ]
    )


@pytest.mark.parametrize("plugin", PLUGINS)
def test_allow_hosts_with_a_name_runs(sg, servers, plugin) -> None:
    """Issue 13: --allow-hosts with a host name ended in INTERNALERROR (exit 3)."""
    sg.makepyfile(
        test_inner="""
        def test_probe(probe):
            assert probe.tcp() == "ok"
        """
    )
    result = run_under(sg, plugin, "--disable-socket", "--allow-hosts=localhost,127.0.0.1")
    result.assert_outcomes(passed=1)
    assert result.ret == 0


# --- issue 13: every --allow-hosts spelling, lenient parsing, the errors, the pytest_socket module ----------

SPELLINGS = """
def test_probe(probe):
    assert (probe.tcp(), probe.tcp(host="127.0.0.2", env="SG_PORT_B")) == {expect!r}
"""


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize(
    ("args", "ini", "expect"),
    [
        (["--allow-hosts=127.0.0.1"], "", ("ok", "blocked")),
        (["--allow-hosts=localhost"], "", ("ok", "blocked")),
        (["--allow-hosts=127.0.0.0/8"], "", ("ok", "ok")),
        (["--allow-hosts=127.0.0.1/8"], "", ("ok", "ok")),  # host bits masked, as pytest-socket does
        (["--allow-hosts=127.0.0.2,::1"], "", ("blocked", "ok")),
        (["--allow-hosts= 127.0.0.2 , localhost "], "", ("ok", "ok")),
        (["--allow-hosts=10.0.0.0/notanumber"], "", ("blocked", "blocked")),  # a host name that never matches
        (["--allow-hosts=127.0.0.1", "--allow-hosts=127.0.0.2"], "", ("blocked", "ok")),  # the last one counts
        ([], "--allow-hosts=127.0.0.2", ("blocked", "ok")),
        ([], "--disable-socket --allow-hosts=localhost,127.0.0.2", ("ok", "ok")),
    ],
    ids=["ip", "localhost", "cidr", "cidr-host-bits", "mixed", "spaces", "bad-cidr", "repeated", "ini", "ini-disable"],
)
def test_allow_hosts_spellings(sg, servers, plugin, args, ini, expect, monkeypatch) -> None:
    second = Counter("127.0.0.2")
    monkeypatch.setenv("SG_PORT_B", str(second.port))
    try:
        if ini:  # the flags in the ini file's addopts
            sg.makeini(BASE_INI.replace("addopts = -p no:cacheprovider", f"addopts = -p no:cacheprovider {ini}"))
        sg.makepyfile(test_inner=SPELLINGS.format(expect=expect))
        result = run_under(sg, plugin, *args)
        result.assert_outcomes(passed=1)
        assert result.ret == 0
        assert (servers["tcp"].count(), second.count()) == tuple(int(e == "ok") for e in expect)
    finally:
        second.close()


ERRORS_SUITE = """
import os, pickle, socket, warnings

import pytest
from pytest_socket import SocketBlockedError, SocketConnectBlockedError

PORT = int(os.environ["SG_PORT"])


@pytest.mark.disable_socket
def test_creation_is_refused_with_pytest_socket_text():
    with pytest.raises(SocketBlockedError) as info:
        socket.socket()
    assert str(info.value).splitlines()[0] == "A test tried to use socket.socket."


@pytest.mark.allow_hosts(["127.0.0.2"])
def test_connect_is_refused_with_pytest_socket_text():
    with pytest.raises(SocketConnectBlockedError) as info:
        socket.create_connection(("127.0.0.1", PORT), timeout=5)
    assert str(info.value).splitlines()[0] == (
        'A test tried to use socket.socket.connect() with host "127.0.0.1" (allowed: "127.0.0.2").'
    )


@pytest.mark.disable_socket
def test_a_block_warns():
    with pytest.warns(UserWarning, match="A test tried to use socket.socket."):
        with pytest.raises(SocketBlockedError):
            socket.socket()


def test_constructors_and_pickling():
    assert str(SocketBlockedError()) == "A test tried to use socket.socket."
    error = SocketConnectBlockedError(["a", "b"], "h")
    assert str(error) == 'A test tried to use socket.socket.connect() with host "h" (allowed: "a,b").'
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is SocketConnectBlockedError and str(again) == str(error)
"""


def test_errors_are_pytest_socket_s_and_egress_blocked(sg, servers) -> None:
    sg.makepyfile(test_errors=ERRORS_SUITE)
    run_under(sg, "pytest-socket").assert_outcomes(passed=4)
    sg.makepyfile(
        test_oserror="""
        import os, socket
        import pytest
        from pytest_socket import SocketBlockedError, SocketConnectBlockedError
        from sockguard import EgressBlocked

        @pytest.mark.disable_socket
        def test_also_an_oserror_and_egress_blocked():
            with pytest.raises(OSError) as info:
                socket.socket()
            assert isinstance(info.value, EgressBlocked) and isinstance(info.value, SocketBlockedError)
            assert "sockguard blocked a socket (AF_INET)" in str(info.value).splitlines()[1]

        @pytest.mark.disable_socket
        def test_a_lookup_is_also_a_gaierror():
            with pytest.raises(socket.gaierror) as info:
                socket.getaddrinfo("127.0.0.1", 80)
            assert str(info.value).splitlines()[0] == "A test tried to use socket.getaddrinfo."
            assert isinstance(info.value, SocketBlockedError)
        """
    )
    run_under(sg, "sockguard").assert_outcomes(passed=6)
    assert servers["tcp"].count() == 0


def test_pytest_socket_functions_from_a_conftest(sg, servers) -> None:
    """The README's pattern: a conftest calling pytest_socket.disable_socket() for every test."""
    sg.makeconftest(
        PROBE_CONFTEST
        + """
import pytest_socket

def pytest_runtest_setup(item):
    pytest_socket.disable_socket(allow_unix_socket=True)
"""
    )
    sg.makepyfile(
        test_inner="""
        import socket
        import pytest
        import pytest_socket

        def test_disabled(probe):
            assert probe.tcp() == "blocked"
            socket.socket(socket.AF_UNIX).close()

        @pytest.mark.enable_socket
        def test_marker_wins_over_the_conftest(probe):
            assert probe.tcp() == "ok"

        def test_enable_then_allow(probe):
            pytest_socket.enable_socket()
            pytest_socket.socket_allow_hosts(["127.0.0.1"])
            assert probe.tcp() == "ok"
        """
    )
    for plugin in PLUGINS:
        run_under(sg, plugin).assert_outcomes(passed=3)
    assert servers["tcp"].count() == 4
