"""A run pays only for what it uses: which modules a start of mailrun imports.

Each check runs in a fresh interpreter (a subprocess) that watches imports with a meta-path hook:
for every module of HEAVY that gets imported it records the runner modules on the stack at that
moment (innermost first), so a failure names the module that dragged the import in, e.g.
`dataclasses <- runner.engine.run <- runner.suite <- runner.cli`.

No timing is asserted anywhere: only which modules are loaded.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.suite import Run
from runner.transports.base import ConnectInfo, TLSInfo
from tests.support.servers import Server, scripted

REPO = Path(__file__).resolve().parent.parent
T = 60  # seconds: deadline of every subprocess here

#: What a plain warm `mailrun FILE` (console, -j 1, socket, no TLS) has no use for.
HEAVY = (
    "dataclasses",  # with inspect, ast, dis: ~11 ms
    "inspect",
    "typing",
    "threading",  # -j > 1 only
    "queue",
    "traceback",
    "tempfile",  # report files only
    "random",
    "shutil",
    "bz2",
    "lzma",
    "datetime",
    # (not "json": the model cache reads its entries with it; issue 13 dropped the hand-rolled reader)
    "ssl",  # TLS only
    "difflib",  # "did you mean" hints of errors only
    "hashlib",
    # (not "locale": argparse's gettext imports it at the first translated string)
    "pexpect",  # telnet/openssl transports only
    "yaml",  # cold validation only
    "jsonschema",
    "xml.etree.ElementTree",  # JUnit only
    "runner.reporters.json_report",
    "runner.reporters.junit",
    "runner.reporters.transcript",
    "runner.transports.telnet",
    "runner.transports.openssl",
    "runner.transports.spawned",
    "runner.load.build",  # the full load: YAML, schema, semantic checks
    "runner.load.yaml_doc",
    "runner.load.schema",
)

#: Prepended to every probe: records who imports each HEAVY module, then `report()` prints the
#: loaded ones as a Python literal on the last line of stdout.
WATCH = textwrap.dedent(
    """
    import sys

    _HEAVY = set(sys.argv[1].split(","))
    _who = {}

    class _Watch:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name in _HEAVY and name not in _who:
                chain, f = [], sys._getframe(1)
                while f is not None:
                    mod = f.f_globals.get("__name__", "")
                    if not mod.startswith(("importlib", "_frozen_importlib")) and (not chain or chain[-1] != mod):
                        chain.append(mod)
                    f = f.f_back
                _who[name] = [m for i, m in enumerate(chain) if i == 0 or m.startswith("runner")]
            return None

    sys.meta_path.insert(0, _Watch)

    def report(**extra):
        loaded = {name: _who.get(name, ["(before the probe)"]) for name in _HEAVY if name in sys.modules}
        print(repr({"loaded": loaded, **extra}))
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["NO_COLOR"] = "1"
    env.pop("CI", None)
    env.update(extra)
    return env


def probe(body: str, *, env: dict[str, str] | None = None, watch=HEAVY) -> dict:
    """Run WATCH + body in a fresh interpreter; the body ends by calling report(...)."""
    proc = subprocess.run(
        [sys.executable, "-c", WATCH + textwrap.dedent(body), ",".join(watch)],
        capture_output=True,
        text=True,
        timeout=T,
        env=env or _env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def dragged(loaded: dict[str, list[str]]) -> str:
    """'dataclasses <- runner.engine.run <- runner.suite; typing <- ...' for an assertion message."""
    return "; ".join(f"{name} <- {' <- '.join(chain)}" for name, chain in sorted(loaded.items()))


# ------------------------------------------------------------------ the modules of the run path
def test_importing_the_run_path_modules_loads_nothing_heavy():
    """suite, the console reporter, the factories, errors: importing them costs only themselves."""
    out = probe(
        """
        import runner, runner.errors, runner.transports.base, runner.transports, runner.protocols
        import runner.reporters, runner.reporters.console, runner.suite
        report()
        """
    )
    assert out["loaded"] == {}, dragged(out["loaded"])


def test_factories_import_only_the_protocol_and_transport_asked_for():
    out = probe(
        """
        from types import SimpleNamespace
        import runner.protocols, runner.transports

        proto = runner.protocols.create("pop3")
        sock = runner.transports.create(
            SimpleNamespace(transport="socket", host="127.0.0.1", port=110, tls="none")
        )
        after_socket = sorted(m for m in sys.modules if m.startswith(("runner.protocols.", "runner.transports.")))
        pexpect_after_socket = "pexpect" in sys.modules
        tel = runner.transports.create(
            SimpleNamespace(transport="telnet", host="127.0.0.1", port=110, tls="none")
        )
        report(
            proto=type(proto).__name__,
            sock=type(sock).__name__,
            tel=type(tel).__name__,
            after_socket=after_socket,
            pexpect_after_socket=pexpect_after_socket,
            pexpect_after_telnet="pexpect" in sys.modules,
        )
        """
    )
    assert (out["proto"], out["sock"], out["tel"]) == ("POP3", "SocketTransport", "TelnetTransport")
    assert out["after_socket"] == [
        "runner.protocols.base",
        "runner.protocols.lines",  # every framer's reply lines (runner.protocols.lines.Layout)
        "runner.protocols.pop3",
        "runner.transports.base",
        "runner.transports.socket",
    ]
    assert not out["pexpect_after_socket"]
    assert out["pexpect_after_telnet"]  # the telnet transport did load what it needs
    # only the socket transport's own needs: no ssl before a TLS connection
    socket_only = {k: v for k, v in out["loaded"].items() if k not in ("pexpect", "runner.transports.telnet")}
    socket_only.pop("runner.transports.spawned", None)
    assert "ssl" not in socket_only, dragged(socket_only)


def test_registries_name_every_protocol_and_transport_and_faces_re_export_nothing():
    """The protocol and transport registries are the one list of names (the model, the pattern
    parser and the schema use it); a package face is its registry, never a second path to a
    name that lives in a module."""
    import json
    from pathlib import Path

    from runner import protocols, reporters, transports
    from runner.lang import pattern_parse
    from runner.model import config

    assert (
        protocols.NAMES
        == config.PROTOCOLS
        == pattern_parse.PROTOCOLS
        == ("smtp", "lmtp", "pop3", "imap", "line")
    )
    assert transports.NAMES == config.TRANSPORTS == ("socket", "telnet", "openssl")
    schema = json.loads((Path(config.__file__).parent.parent / "data" / "scenario.schema.json").read_text())
    text = json.dumps(schema)
    assert json.dumps(list(protocols.NAMES)) in text and json.dumps(list(transports.NAMES)) in text
    for name in protocols.NAMES:
        assert type(protocols.create(name)).__module__ == f"runner.protocols.{name}"
    for mod, name in ((protocols, "SMTP"), (transports, "SocketTransport"), (reporters, "JUnitReporter")):
        with pytest.raises(AttributeError, match=name):
            getattr(mod, name)
    with pytest.raises(ValueError, match="unknown protocol 'smtps'"):
        protocols.create("smtps")
    from types import SimpleNamespace

    from runner.errors import UsageError

    with pytest.raises(UsageError, match="unknown transport 'ssh'"):
        transports.create(SimpleNamespace(transport="ssh"))


# ------------------------------------------------------------------ whole runs
def _scenario(path: Path, name: str, port: int) -> Path:
    path.write_text(
        f"name: {name}\nprotocol: smtp\n"
        f"connect: {{host: 127.0.0.1, port: {port}, timeout: 5, connect_timeout: 3}}\n"
        "steps:\n  - S: 220\n  - C: EHLO lean.test\n    S: 250\n  - C: NOOP\n    S: 250\n"
        "finally:\n  - C: QUIT\n    S: 221\n"
    )
    return path


def _server() -> Server:
    return Server(scripted(b"220 lean ready\r\n", {b"QUIT": b"221 bye\r\n", b"*": b"250 ok\r\n"}))


def _run_probe(args: list[str], env: dict[str, str]) -> dict:
    return probe(
        f"""
        import io
        from runner.cli.main import main
        out = io.StringIO()
        real, sys.stdout = sys.stdout, out
        try:
            rc = main({args!r})
        finally:
            sys.stdout = real
        report(rc=rc, out=out.getvalue())
        """,
        env=env,
    )


def _warm_up(files: list[Path], env: dict[str, str]) -> None:
    """A first (cold) run fills the validation cache, as a user's first run does."""
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=T,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_warm_single_file_run_imports_only_what_it_uses(tmp_path):
    """`mailrun FILE`: one file, console, -j 1, plain socket, validation cached."""
    env = _env(MAILRUN_CACHE_DIR=str(tmp_path / "cache"))
    with _server() as srv:
        f = _scenario(tmp_path / "lean.yaml", "lean", srv.port)
        _warm_up([f], env)
        out = _run_probe([str(f)], env)
        assert len(srv.conns) == 2  # both runs really talked to the server
    assert out["rc"] == 0, out["out"]
    assert "PASS lean" in out["out"]
    assert out["loaded"] == {}, dragged(out["loaded"])


def test_threads_only_for_parallel_suites(tmp_path):
    """-j 1 runs a two-file suite without threading/queue; -j 2 uses them (and still passes)."""
    env = _env(MAILRUN_CACHE_DIR=str(tmp_path / "cache"))
    with _server() as srv:
        files = [_scenario(tmp_path / f"s{i}.yaml", f"lean{i}", srv.port) for i in (1, 2)]
        _warm_up(files, env)
        serial = _run_probe([*map(str, files), "-j", "1"], env)
        parallel = _run_probe([*map(str, files), "-j", "2"], env)
        assert len(srv.conns) == 6
    for out in (serial, parallel):
        assert out["rc"] == 0, out["out"]
        assert "PASS lean1" in out["out"] and "PASS lean2" in out["out"]
    assert {"threading", "queue"} <= set(parallel["loaded"])
    threads = {k: v for k, v in serial["loaded"].items() if k in ("threading", "queue")}
    assert threads == {}, dragged(threads)


# ------------------------------------------------------------------ start-up of the project's venv
def test_project_venv_has_no_editable_import_hook():
    """scripts/test installs editable in compat mode (a .pth path entry): no import hook that
    every start in .venv would pay for (pathlib, urllib, ipaddress...)."""
    py = REPO / ".venv" / "bin" / "python"
    if not py.exists():
        pytest.skip("no .venv here (scripts/test creates it)")
    proc = subprocess.run(
        [str(py), "-I", "-c", "import sys, runner; print(runner.__file__); print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=T,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    where, modules = proc.stdout.splitlines()
    assert Path(where).resolve() == (REPO / "runner" / "__init__.py").resolve()  # the working tree
    loaded = ast.literal_eval(modules)
    assert [m for m in loaded if m.startswith("__editable__")] == []
    assert "pathlib" not in loaded


# ------------------------------------------------------------------ value classes
def test_tls_and_connect_info_behave_as_values():
    a = TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=localhost")
    assert (a.peer_issuer, a.verified) == (None, True)
    b = TLSInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", peer_subject="CN=localhost")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", "CN=localhost", verified=False)
    assert a != "TLSv1.3" and a is not None
    assert repr(a) == (
        "TLSInfo(version='TLSv1.3', cipher='TLS_AES_256_GCM_SHA384', peer_subject='CN=localhost', "
        "peer_issuer=None, verified=True, cert=None, sni=None)"
    )
    assert a.describe() == "TLSv1.3 TLS_AES_256_GCM_SHA384, certificate CN=localhost"
    c = ConnectInfo("127.0.0.1:25", "socket", a)
    assert c == ConnectInfo(peer="127.0.0.1:25", transport="socket", tls=b, note=None)
    assert c != ConnectInfo("127.0.0.1:25", "socket")
    assert c.note is None and repr(c).startswith(
        "ConnectInfo(peer='127.0.0.1:25', transport='socket', tls=TLSInfo("
    )
    with pytest.raises(AttributeError, match="read-only"):
        a.verified = False
    with pytest.raises(AttributeError):
        c.extra = 1  # __slots__: no new attributes either
    with pytest.raises(AttributeError, match="read-only"):
        del c.peer
    assert a.verified is True and c.peer == "127.0.0.1:25"
    with pytest.raises(TypeError):
        TLSInfo("TLSv1.3")  # cipher and peer_subject are required, as before


def test_run_defaults_are_not_shared():
    r1, r2 = Run(0, "scenario-a"), Run(1, "scenario-b", "gmx", {"user": "u"})
    r1.events.append("ev")
    r1.provider_vars["x"] = "1"
    assert r2.events == [] and r2.provider_vars == {"user": "u"}
    assert (r1.provider, r1.result, r1.interrupted) == (None, None, False)
    assert Run(0, "s") == Run(0, "s") and Run(0, "s") != Run(1, "s")
    assert repr(Run(3, "s")).startswith("Run(index=3, scenario='s', provider=None")
