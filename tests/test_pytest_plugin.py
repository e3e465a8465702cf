"""The sockguard pytest plugin, driven through pytester: options, ini, pyproject, markers, fixtures,
reports, the whole test lifecycle, child processes and async tests.

Every inner run talks only to counting servers on loopback (tests/test_pytest_plugin_helpers.py) or to names
that must be blocked before DNS (and could not reach a resolver anyway: see ``dns_net``).
"""

from __future__ import annotations

import json
import os

import pytest

from sockguard import active, pytest_plugin
from tests.test_pytest_plugin_helpers import run, text

pytest_plugins = ["pytester", "tests.test_pytest_plugin_helpers"]


def app_line(pytester: pytest.Pytester, needle: str) -> int:
    lines = (pytester.path / "app.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


# --- inactive unless enabled ----------------------------------------------------------------


@pytest.mark.parametrize("pytest_socket", [False, True], ids=["pytest-socket-blocked", "pytest-socket-loaded"])
def test_inactive_unless_enabled(sg, servers, pytest_socket, tmp_path, monkeypatch) -> None:
    """Installed but not enabled: no guard installed, no environment change, no header line."""
    snapshot = tmp_path / "env.json"
    monkeypatch.setenv("SG_SNAPSHOT", str(snapshot))
    monkeypatch.setenv("SG_STATE_ID", str(id(active.in_force)))
    sg.makepyfile(
        test_inner="""
        import json, os, socket
        from sockguard import active

        def test_untouched(request):
            assert request.config.pluginmanager.has_plugin("sockguard")
            assert str(id(active.in_force)) == os.environ["SG_STATE_ID"]
            keys = ["PYTHONPATH", "SOCKGUARD_MODE", "SOCKGUARD_ALLOW", "SOCKGUARD_LOG", "SOCKGUARD_CONFIG"]
            with open(os.environ["SG_SNAPSHOT"], "w") as f:
                json.dump({k: os.environ.get(k) for k in keys}, f)
            socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5).close()
        """
    )
    result = run(sg, "--strict-markers", pytest_socket=pytest_socket)
    result.assert_outcomes(passed=1)
    assert not [line for line in result.outlines if line.startswith("sockguard")]
    seen = json.loads(snapshot.read_text())
    assert seen == {k: os.environ.get(k) for k in seen}
    assert servers["tcp"].count() == 1


def test_options_and_markers_are_registered(sg) -> None:
    result = run(sg, "--help")
    result.stdout.fnmatch_lines(["*--sockguard *", "*--sockguard-allow=RULE*", "*--disable-socket*"])
    markers = run(sg, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.sockguard(*", "@pytest.mark.allow_hosts(*"])


# --- enabling and the rule sources ----------------------------------------------------------


def test_enabled_run_blocks_and_reports_the_call_site_and_rule(sg, servers, dns_net) -> None:
    sg.makepyfile(
        test_inner="""
        import app

        def test_loopback_is_allowed(probe):
            assert probe.tcp() == "ok"

        def test_reaches_out():
            app.fetch()
        """
    )
    result = run(sg, "--sockguard")
    result.assert_outcomes(passed=1, failed=1)
    line = app_line(sg, "return socket.create_connection")
    result.stdout.fnmatch_lines(
        [
            "*LookupBlocked: sockguard blocked DNS lookup to api.example.test:443*",
            "*- sockguard -*",
            "blocked DNS lookup of api.example.test:443 (dns): host is not in the allowlist",
            f"    during call, called from app:fetch:{line}",
            "    to allow it, add the rule 'api.example.test:443': --sockguard-allow=api.example.test:443*",
            "*= sockguard: blocked destinations =*",
            "BLOCKED DNS lookup of api.example.test:443 (host is not in the allowlist); 1 attempt(s)",
            f"    - test_inner.py::test_reaches_out (call) from app:fetch:{line}",
        ]
    )
    assert servers["tcp"].count() == 1
    assert "api.example.test" not in dns_net  # refused before any resolver saw it


def test_ini_enables_and_lists_rules(sg, servers) -> None:
    port = servers["tcp"].port
    sg.makeini(
        f"""
        [pytest]
        addopts = -p no:cacheprovider
        sockguard = true
        sockguard_allow_loopback = false
        sockguard_allow =
            127.0.0.1:{port}
            [::1]:{port}
        """
    )
    sg.makepyfile(
        test_inner="""
        def test_listed(probe):
            assert probe.tcp() == "ok"

        def test_unlisted(probe):
            assert probe.tcp(env="SG_PORT2") == "blocked"
        """
    )
    result = run(sg)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"sockguard: enforce; allow: 127.0.0.1:{port}, [[]::1[]]:{port}; *loopback blocked*"])
    assert (servers["tcp"].count(), servers["tcp2"].count()) == (1, 0)


def test_pyproject_table_enables_and_writes_the_report(sg, servers) -> None:
    port = servers["tcp"].port
    sg.makepyprojecttoml(
        f"""
        [tool.sockguard.pytest]
        enable = true
        allow_loopback = false
        allow = ["127.0.0.1:{port}"]
        report = "out/sockguard.json"
        """
    )
    sg.makepyfile(
        test_inner="""
        def test_listed(probe):
            assert probe.tcp() == "ok"

        def test_unlisted(probe):
            assert probe.tcp(env="SG_PORT2") == "blocked"
        """
    )
    run(sg).assert_outcomes(passed=2)
    assert (servers["tcp"].count(), servers["tcp2"].count()) == (1, 0)
    report = json.loads((sg.path / "out" / "sockguard.json").read_text())
    (destination,) = report["destinations"]
    assert destination["destination"] == f"127.0.0.1:{servers['tcp2'].port}"
    assert destination["suggestion"] == f"127.0.0.1:{servers['tcp2'].port}"
    assert [t["nodeid"] for t in destination["tests"]] == ["test_inner.py::test_unlisted"]


@pytest.mark.parametrize("source", ["ini", "pyproject"])
def test_every_ini_and_table_key(sg, servers, source, tmp_path) -> None:
    """deny, mode, allow_unix, report and swallowed from the ini file and from [tool.sockguard.pytest]."""
    deny = f"127.0.0.1:{servers['tcp2'].port}"
    if source == "ini":
        sg.makeini(
            f"""
            [pytest]
            sockguard = true
            sockguard_mode = monitor
            sockguard_deny = {deny}
            sockguard_allow_unix = false
            sockguard_report = out.json
            sockguard_swallowed = warn
            """
        )
    else:
        sg.makepyprojecttoml(
            f"""
            [tool.sockguard.pytest]
            enable = true
            mode = "monitor"
            deny = ["{deny}"]
            allow_unix = false
            report = "out.json"
            swallowed = "warn"
            """
        )
    sg.makepyfile(
        test_inner="""
        def test_monitored(probe):
            assert (probe.tcp(), probe.tcp(env="SG_PORT2"), probe.unix()) == ("ok", "ok", "ok")
        """
    )
    result = run(sg)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"sockguard: monitor; allow: -; deny: {deny}; loopback allowed; AF_UNIX blocked"])
    data = json.loads((sg.path / "out.json").read_text())
    assert sorted((d["decision"], d["reason"]) for d in data["destinations"]) == [
        ("would-block", "denied"),
        ("would-block", "unix-socket"),
    ]
    assert (servers["tcp"].count(), servers["tcp2"].count(), servers["unix"].count()) == (1, 1, 1)


def test_command_line_beats_ini(sg, servers, monkeypatch) -> None:
    sg.makeini("[pytest]\nsockguard = true\nsockguard_mode = monitor\nsockguard_allow_loopback = false\n")
    sg.makepyfile(
        test_inner="""
        import os
        import pytest

        def test_unmarked(probe):
            assert probe.tcp() == os.environ["SG_EXPECT"]

        @pytest.mark.sockguard(mode="enforce")
        def test_marked(probe):
            assert probe.tcp() == "blocked"
        """
    )
    monkeypatch.setenv("SG_EXPECT", "ok")
    run(sg, "--sockguard-mode=off").assert_outcomes(passed=2)  # off for the session; markers still apply
    monkeypatch.setenv("SG_EXPECT", "blocked")
    run(sg, "--sockguard-mode=enforce").assert_outcomes(passed=2)
    assert servers["tcp"].count() == 1


def test_cli_rules_repeat_and_deny_wins(sg, servers, monkeypatch) -> None:
    p1, p2 = servers["tcp"].port, servers["tcp2"].port
    sg.makepyfile(
        test_inner="""
        import os

        def test_both(probe):
            assert probe.tcp() == os.environ["SG_EXPECT1"]
            assert probe.tcp(env="SG_PORT2") == os.environ["SG_EXPECT2"]
        """
    )
    monkeypatch.setenv("SG_EXPECT1", "ok")
    monkeypatch.setenv("SG_EXPECT2", "ok")
    args = ["--sockguard", "--sockguard-no-loopback", f"--sockguard-allow=127.0.0.1:{p1}"]
    run(sg, *args, "--sockguard-allow", f"127.0.0.1:{p2}").assert_outcomes(passed=1)
    monkeypatch.setenv("SG_EXPECT2", "blocked")
    result = run(sg, "--sockguard", f"--sockguard-deny=127.0.0.1:{p2}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"BLOCKED connection to 127.0.0.1:{p2} (matches a deny rule)*",
            f"*deny rule '127.0.0.1:{p2}'; remove or narrow*",
        ]
    )
    assert (servers["tcp"].count(), servers["tcp2"].count()) == (2, 1)


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (None, ["--sockguard-allow=http://api.example.test"], "sockguard: --sockguard-allow: rule * looks like a URL*"),
        (None, ["--sockguard-deny=*.*.example.test"], "sockguard: --sockguard-deny: rule *'*' is only allowed*"),
        (
            "ini",
            ["--sockguard"],
            "sockguard: ini option sockguard_mode must be one of enforce, monitor, off, got 'loud'",
        ),
        ("table", [], "sockguard: *pyproject.toml [[]tool.sockguard.pytest[]]: unknown key 'enabled'*"),
        ("swallowed", [], "sockguard: ini option sockguard_swallowed must be one of fail, warn, got 'ignore'"),
    ],
)
def test_bad_configuration_is_a_usage_error(sg, setup, args, message) -> None:
    if setup == "ini":
        sg.makeini("[pytest]\nsockguard_mode = loud\n")
    elif setup == "table":
        sg.makepyprojecttoml("[tool.sockguard.pytest]\nenabled = true\n")
    elif setup == "swallowed":
        sg.makeini("[pytest]\nsockguard_swallowed = ignore\n")
    sg.makepyfile(test_inner="def test_x(): pass")
    result = run(sg, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_monitor_mode_reports_without_blocking(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import app

        def test_connects(probe):
            assert probe.tcp() == "ok"

        def test_swallowing_app_still_passes():
            import os
            assert app.fetch_quietly("127.0.0.1", int(os.environ["SG_PORT"])) == "ok"
        """
    )
    result = run(sg, "--sockguard-mode=monitor", "--sockguard-no-loopback")
    result.assert_outcomes(passed=2)
    port = servers["tcp"].port
    result.stdout.fnmatch_lines(
        [
            "sockguard: monitor; *",
            f"WOULD BLOCK connection to 127.0.0.1:{port} (raw IP address not covered by an IP/CIDR rule); 2 attempt(s)",
            f"    to allow it, add the rule '127.0.0.1:{port}'*",
        ]
    )
    assert servers["tcp"].count() == 2


@pytest.mark.parametrize(
    ("args", "expected", "counts"),
    [
        (["--sockguard"], ("ok", "ok", "ok"), (1, 1, 1)),
        (["--sockguard", "--sockguard-no-unix"], ("ok", "ok", "blocked"), (1, 1, 0)),
        (["--sockguard", "--sockguard-no-loopback"], ("blocked", "blocked", "ok"), (0, 0, 1)),
    ],
    ids=["defaults", "no-unix", "no-loopback"],
)
def test_loopback_and_unix_are_allowed_by_default_and_switchable(sg, servers, args, expected, counts) -> None:
    sg.makepyfile(
        test_inner=f"""
        def test_local(probe):
            assert (probe.tcp(), probe.udp(), probe.unix()) == {expected!r}
        """
    )
    run(sg, *args).assert_outcomes(passed=1)
    assert (servers["tcp"].count(), servers["udp"].count(), servers["unix"].count()) == counts


# --- markers ----------------------------------------------------------------------------------------


def test_marker_layers_module_class_function(sg, servers) -> None:
    p1, p2 = servers["tcp"].port, servers["tcp2"].port
    sg.makepyfile(
        test_inner=f"""
        import pytest

        pytestmark = pytest.mark.sockguard(allow_loopback=False)

        def test_module_marker_blocks_loopback(probe):
            assert probe.tcp() == "blocked"

        @pytest.mark.sockguard("127.0.0.1:{p1}")
        class TestClass:
            def test_class_rule(self, probe):
                assert (probe.tcp(), probe.tcp(env="SG_PORT2")) == ("ok", "blocked")

            @pytest.mark.sockguard(allow=["127.0.0.1:{p2}"], deny=["127.0.0.1:{p1}"])
            def test_function_adds_and_denies(self, probe):
                assert (probe.tcp(), probe.tcp(env="SG_PORT2")) == ("blocked", "ok")

            @pytest.mark.sockguard(mode="off")
            def test_off(self, probe):
                assert (probe.tcp(), probe.tcp(env="SG_PORT2")) == ("ok", "ok")

        @pytest.mark.sockguard(allow_loopback=True, allow_unix=False)
        def test_function_overrides_module(probe):
            assert (probe.tcp(), probe.unix()) == ("ok", "blocked")

        @pytest.mark.sockguard(mode="monitor")
        def test_monitor(probe):
            assert probe.tcp(env="SG_PORT2") == "ok"
        """
    )
    # Not enabled for the session: the markers alone guard their tests.
    run(sg).assert_outcomes(passed=6)
    assert (servers["tcp"].count(), servers["tcp2"].count(), servers["unix"].count()) == (3, 3, 0)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("sockguard(alow=['x.test'])", "*@pytest.mark.sockguard got unknown argument 'alow'*"),
        ("sockguard(mode='strict')", "*mode=...) must be one of enforce, monitor, off, got 'strict'*"),
        ("sockguard(allow=['https://x.test'])", "*allow=...): rule 'https://x.test'*looks like a URL*"),
        ("sockguard(allow_unix='maybe')", "*allow_unix=...) must be true or false, got 'maybe'*"),
    ],
)
def test_bad_marker_is_a_clear_setup_error(sg, marker, message) -> None:
    sg.makepyfile(
        test_inner=f"""
        import pytest

        @pytest.mark.{marker}
        def test_x():
            pass
        """
    )
    result = run(sg, "--sockguard")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*sockguard: test_inner.py::test_x: {message}"])


# --- the sockguard fixture -------------------------------------------------------------------------


def test_fixture_relaxes_and_tightens_inside_a_test(sg, servers) -> None:
    p1, p2 = servers["tcp"].port, servers["tcp2"].port
    sg.makepyfile(
        test_inner=f"""
        import pytest

        @pytest.fixture
        def api(sockguard):
            sockguard.allow("127.0.0.1:{p2}")  # a fixture relaxes the policy for the whole test

        def test_allow_for_the_rest_of_the_test(sockguard, probe):
            assert probe.tcp() == "blocked"
            sockguard.allow("127.0.0.1:{p1}")
            assert probe.tcp() == "ok"
            assert sockguard.rules.allow == ("127.0.0.1:{p1}",)

        def test_allow_in_a_with_block(sockguard, probe):
            with sockguard.allow("127.0.0.1:{p1}"):
                assert probe.tcp() == "ok"
            assert probe.tcp() == "blocked"
            assert [b.destination for b in sockguard.blocked] == ["127.0.0.1:{p1}"]

        def test_fixture_relaxes(api, probe):
            assert (probe.tcp(), probe.tcp(env="SG_PORT2")) == ("blocked", "ok")

        def test_tighten(sockguard, probe):
            with sockguard.policy(allow_unix=False, deny=["127.0.0.1:{p2}"]):
                assert (probe.unix(), probe.tcp(env="SG_PORT2")) == ("blocked", "blocked")
            with sockguard.policy(mode="off"):
                assert probe.tcp() == "ok"

        def test_bad_rule(sockguard):
            with pytest.raises(ValueError, match=r"fixture's allow: rule 'http://x\\.test'.*looks like a URL"):
                sockguard.allow("http://x.test")
        """
    )
    run(sg, "--sockguard", "--sockguard-no-loopback").assert_outcomes(passed=5)
    assert (servers["tcp"].count(), servers["tcp2"].count(), servers["unix"].count()) == (3, 1, 0)


def test_fixture_guards_a_test_in_an_unguarded_run(sg, servers, dns_net) -> None:
    sg.makepyfile(
        test_inner="""
        def test_guarded(sockguard, probe):
            assert sockguard.rules is not None and sockguard.rules.mode == "enforce"
            assert (probe.tcp(), probe.lookup("api.example.test")) == ("ok", "blocked")

        def test_unguarded(probe):
            assert probe.tcp() == "ok"
        """
    )
    run(sg).assert_outcomes(passed=2)
    assert servers["tcp"].count() == 2
    assert "api.example.test" not in dns_net


def test_expect_blocked(sg) -> None:
    sg.makepyfile(
        test_inner="""
        import pytest
        import app

        def test_swallowed_but_expected(sockguard):
            with sockguard.expect_blocked() as blocked:
                assert app.fetch_quietly() is None
            assert [(b.operation, b.host) for b in blocked] == [("resolve", "api.example.test")]

        def test_nothing_blocked(sockguard):
            with sockguard.expect_blocked():
                pass
        """
    )
    result = run(sg, "--sockguard")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: sockguard.expect_blocked(): nothing was blocked inside the block"])


# --- swallowed errors ------------------------------------------------------------------------------


def test_swallowed_block_fails_the_test(sg) -> None:
    sg.makepyfile(
        test_inner="""
        import app
        import pytest
        from sockguard import EgressBlocked

        def test_app_swallows():
            assert app.fetch_quietly() is None  # passes on its own: the app hid the block

        def test_test_expects_it():
            with pytest.raises(EgressBlocked):
                app.fetch()

        def test_test_expects_the_wrapping_error():
            with pytest.raises(RuntimeError, match="backend unreachable"):
                app.fetch_or_raise()
        """
    )
    result = run(sg, "--sockguard")
    result.assert_outcomes(passed=2, failed=1)
    line = app_line(sg, "socket.create_connection((host, port), timeout=5).close()")
    result.stdout.fnmatch_lines(
        [
            "*_ test_app_swallows _*",
            "sockguard blocked 1 attempt(s) during call of test_inner.py::test_app_swallows, and the code under "
            "test swallowed the exception: the test passed without seeing it.",
            "blocked DNS lookup of api.example.test:443 (dns): host is not in the allowlist",
            f"    during call, called from app:fetch_quietly:{line}",
            "    to allow it, add the rule 'api.example.test:443'*",
            "If the test means to exercise a blocked path, wrap it in `with sockguard.expect_blocked():`*",
        ]
    )
    assert "test_test_expects_it" not in "\n".join(result.stdout.lines[-3:])


def test_swallowed_block_warns_when_asked(sg) -> None:
    sg.makepyfile(
        test_inner="""
        import app

        def test_app_swallows():
            assert app.fetch_quietly() is None
        """
    )
    result = run(sg, "--sockguard", "--sockguard-swallowed=warn")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*SockguardWarning: sockguard blocked 1 attempt(s) during call*"])


# --- the whole lifecycle -----------------------------------------------------------------------------


def test_higher_scope_fixtures_run_under_their_scope_policy(sg, servers) -> None:
    """A module fixture does not borrow the relaxed policy of the first test that happens to need it."""
    p1, p2 = servers["tcp"].port, servers["tcp2"].port
    sg.makepyfile(
        test_a="""
        import pytest

        @pytest.fixture(scope="module")
        def warm_cache(probe_module):
            return probe_module.tcp()

        @pytest.mark.sockguard(allow=["127.0.0.1:{p1}"])
        def test_first_relaxed(warm_cache, probe):
            assert warm_cache == "blocked"  # set up under the module's policy, not this test's
            assert probe.tcp() == "ok"
        """.replace("{p1}", str(p1)),
        test_b=f"""
        import pytest

        pytestmark = pytest.mark.sockguard(allow=["127.0.0.1:{p1}"])

        @pytest.fixture(scope="module")
        def warm_cache(probe_module):
            return probe_module.tcp()

        class TestC:
            @pytest.fixture(scope="class")
            def per_class(self, probe_module):
                return probe_module.tcp(env="SG_PORT2")

            def test_module_marker_covers_module_fixture(self, warm_cache, per_class):
                assert (warm_cache, per_class) == ("ok", "blocked")

        @pytest.mark.sockguard("127.0.0.1:{p2}")
        class TestD:
            @pytest.fixture(scope="class")
            def per_class(self, probe_module):
                return probe_module.tcp(env="SG_PORT2")

            def test_class_marker_covers_class_fixture(self, per_class):
                assert per_class == "ok"
        """,
    )
    sg.makeconftest(
        (sg.path / "conftest.py").read_text()
        + """
import sys

@pytest.fixture(scope="session")
def probe_module():
    return sys.modules[__name__]
"""
    )
    run(sg, "--sockguard", "--sockguard-no-loopback").assert_outcomes(passed=3)
    assert (servers["tcp"].count(), servers["tcp2"].count()) == (2, 1)


def test_teardown_of_every_scope_is_guarded(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import os
        import socket
        import pytest

        def dial(env):
            socket.create_connection(("127.0.0.1", int(os.environ[env])), timeout=5).close()

        @pytest.fixture(scope="session")
        def session_resource():
            yield
            dial("SG_PORT")  # e.g. a client flushing on close

        @pytest.fixture
        def function_resource():
            yield
            dial("SG_PORT2")

        def test_one(session_resource, function_resource):
            pass
        """
    )
    result = run(sg, "--sockguard", "--sockguard-no-loopback")
    result.assert_outcomes(passed=1, errors=1)
    port1, port2 = servers["tcp"].port, servers["tcp2"].port
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_one*",
            f"*blocked connection to 127.0.0.1:{port1}*",
            f"*blocked connection to 127.0.0.1:{port2}*",
        ]
    )
    out = text(result)
    assert f"connection to 127.0.0.1:{port1}" in out and "teardown of fixture 'session_resource' (session scope)" in out
    assert (servers["tcp"].count(), servers["tcp2"].count()) == (0, 0)


def test_collection_is_guarded(sg, servers) -> None:
    sg.makepyfile(
        test_imports="""
        import os, socket

        socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5)

        def test_never_runs():
            pass
        """,
        test_quiet_import="""
        import app

        CLIENT = app.fetch_quietly()  # import-time network, error hidden

        def test_runs():
            pass
        """,
    )
    result = run(sg, "--sockguard", "--sockguard-no-loopback")
    result.assert_outcomes(errors=2)
    port = servers["tcp"].port
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_imports.py*",
            f"*EgressBlocked: sockguard blocked connection to 127.0.0.1:{port}*",
            "*ERROR collecting test_quiet_import.py*",
            "sockguard blocked 1 attempt(s) during collect of test_quiet_import.py, and the code under test swallowed*",
            "    during collection of test_quiet_import.py, called from app:fetch_quietly:*",
        ]
    )
    assert servers["tcp"].count() == 0


def test_session_summary_groups_destinations_and_tests(sg, tmp_path) -> None:
    sg.makepyfile(
        test_inner="""
        import pytest
        import app

        @pytest.mark.parametrize("n", [1, 2])
        def test_api(n, sockguard):
            with sockguard.expect_blocked():
                app.fetch_quietly()

        def test_other(probe):
            assert probe.lookup("metrics.example.test") == "blocked"
            assert probe.lookup("metrics.example.test") == "blocked"
        """
    )
    report = tmp_path / "report.json"
    result = run(sg, "--sockguard", f"--sockguard-report={report}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "BLOCKED DNS lookup of api.example.test:443 (host is not in the allowlist); 2 attempt(s)",
            "    - test_inner.py::test_api[[]1[]] (call) from app:fetch_quietly:* [[]expected[]]",
            "    - test_inner.py::test_api[[]2[]] (call) from app:fetch_quietly:* [[]expected[]]",
            "BLOCKED DNS lookup of metrics.example.test:443 (host is not in the allowlist); 2 attempt(s)",
            "    - test_inner.py::test_other (call) from conftest:go:*",
            f"sockguard: JSON report written to {report}",
        ]
    )
    data = json.loads(report.read_text())
    assert data["attempts"] == 4
    by_destination = {d["destination"]: d for d in data["destinations"]}
    assert set(by_destination) == {"api.example.test:443", "metrics.example.test:443"}
    api = by_destination["api.example.test:443"]
    assert (api["operation"], api["decision"], api["suggestion"], api["attempts"]) == (
        "resolve",
        "block",
        "api.example.test:443",
        2,
    )
    assert [t["nodeid"] for t in api["tests"]] == ["test_inner.py::test_api[1]", "test_inner.py::test_api[2]"]
    assert by_destination["metrics.example.test:443"]["tests"][0]["count"] == 2


# --- child processes -------------------------------------------------------------------------------


def test_child_python_processes_are_guarded(sg, servers) -> None:
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "SOCKGUARD_MODE", "SOCKGUARD_LOG")}
    sg.makepyfile(
        test_inner="""
        import os, subprocess, sys
        import pytest

        CHILD = (
            "import os, socket\\n"
            "try:\\n"
            "    socket.create_connection(('127.0.0.1', int(os.environ['SG_PORT'])), timeout=5).close()\\n"
            "except OSError as exc:\\n"
            "    print(type(exc).__name__, exc)\\n"
            "    raise SystemExit(3)\\n"
        )

        def child():
            return subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True)

        def test_child_blocked():
            result = child()
            assert result.returncode == 3 and "EgressBlocked" in result.stdout, result.stderr

        @pytest.mark.sockguard(allow=["127.0.0.1:{port}"])
        def test_child_follows_the_test_policy():
            assert child().returncode == 0

        def test_grandchild_blocked_and_reported():
            code = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"
            subprocess.run([sys.executable, "-c", code, CHILD], check=True)
            assert False, "show the report"
        """.replace("{port}", str(servers["tcp"].port))
    )
    result = run(sg, "--sockguard", "--sockguard-no-loopback")
    result.assert_outcomes(passed=2, failed=1)
    port = servers["tcp"].port
    result.stdout.fnmatch_lines(
        [
            "*- sockguard -*",
            f"blocked connection to 127.0.0.1:{port} (tcp) in child process *: raw IP address*",
            f"BLOCKED connection to 127.0.0.1:{port} (raw IP address not covered by an IP/CIDR rule); 2 attempt(s)",
            "    - test_inner.py::test_child_blocked (call) from __main__:<module>:3 [[]child process *[]]",
            "    - test_inner.py::test_grandchild_blocked_and_reported (call) from __main__:<module>:3 [[]child*",
        ]
    )
    assert servers["tcp"].count() == 1
    assert {k: os.environ.get(k) for k in saved} == saved


# --- async tests and in-process servers ----------------------------------------------------------------


def test_asyncio_tests_servers_and_blocks(sg, servers, dns_net) -> None:
    sg.makepyfile(
        test_inner="""
        import asyncio, os
        import pytest
        import pytest_asyncio
        from sockguard import EgressBlocked

        @pytest_asyncio.fixture
        async def echo_server():
            async def handle(reader, writer):
                writer.write(await reader.readline())
                await writer.drain()
                writer.close()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            yield server.sockets[0].getsockname()[1]
            server.close()
            await server.wait_closed()

        @pytest.mark.asyncio
        async def test_in_process_server(echo_server):
            reader, writer = await asyncio.open_connection("127.0.0.1", echo_server)
            writer.write(b"ping\\n")
            assert await reader.readline() == b"ping\\n"
            writer.close()

        @pytest.mark.asyncio
        async def test_blocked_name():
            with pytest.raises(EgressBlocked):
                await asyncio.open_connection("api.example.test", 443)

        @pytest.mark.asyncio
        @pytest.mark.sockguard(allow_loopback=False)
        async def test_blocked_loopback():
            with pytest.raises(EgressBlocked):
                await asyncio.open_connection("127.0.0.1", int(os.environ["SG_PORT"]))
        """
    )
    run(sg, "--sockguard").assert_outcomes(passed=3)
    assert servers["tcp"].count() == 0
    assert "api.example.test" not in dns_net


def test_anyio_tests_on_asyncio_and_trio(sg, servers) -> None:
    sg.makepyfile(
        test_inner="""
        import os
        import anyio
        import pytest

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_allowed():
            stream = await anyio.connect_tcp("127.0.0.1", int(os.environ["SG_PORT"]))
            await stream.aclose()

        def chain(exc):
            while exc is not None:
                yield exc
                yield from getattr(exc, "exceptions", ())
                exc = exc.__cause__ or exc.__context__

        @pytest.mark.anyio
        async def test_blocked():
            with pytest.raises(OSError) as info:
                await anyio.connect_tcp("127.0.0.1", int(os.environ["SG_PORT2"]))
            assert any(type(e).__name__ == "EgressBlocked" for e in chain(info.value))
        """
    )
    port = servers["tcp"].port
    run(sg, "--sockguard", "--sockguard-no-loopback", f"--sockguard-allow=127.0.0.1:{port}").assert_outcomes(passed=4)
    assert (servers["tcp"].count(), servers["tcp2"].count()) == (2, 0)


def test_plugin_exports() -> None:
    assert set(pytest_plugin.__all__) == {"Blocked", "Controller", "Rules", "SockguardWarning"}


def test_block_hints_name_pytest_s_options_not_the_runtime_s(sg, servers) -> None:
    """Issue 13: the exception a test sees says how to allow the destination in a pytest run."""
    sg.makepyfile(
        test_inner="""
        import os, socket
        import pytest
        from sockguard import EgressBlocked

        def test_hint():
            with pytest.raises(EgressBlocked) as info:
                socket.create_connection(("127.0.0.1", int(os.environ["SG_PORT"])), timeout=5)
            text = str(info.value)
            assert "--sockguard-allow, the sockguard_allow ini option, or @pytest.mark.sockguard" in text
            assert "SOCKGUARD_ALLOW" not in text
        """
    )
    run(sg, "--sockguard", "--sockguard-no-loopback").assert_outcomes(passed=1)
    assert servers["tcp"].count() == 0
