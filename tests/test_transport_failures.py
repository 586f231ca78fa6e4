"""Failures look the same on every transport: a refused port, an unknown host and a connect
deadline give the same ConnectError message on the socket, telnet and openssl transports; a
silent server and one dripping bytes slower than the deadline give DeadlineError on time."""

from __future__ import annotations

import shutil
import time

import pytest

from runner.errors import ConnectError, DeadlineError
from runner.model.config import ConnectConfig
from runner.transports import create
from tests.support.servers import Server, drip, full_backlog_port, silent

PROGRAMS = {"telnet": "telnet", "openssl": "openssl"}
ALL = ["socket", "telnet", "openssl"]
PLAIN = ["socket", "telnet"]  # the read deadlines of openssl (over TLS) are in its own tests


def cfg(transport: str, port: int, host: str = "127.0.0.1", **kw) -> ConnectConfig:
    program = PROGRAMS.get(transport)
    if program and shutil.which(program) is None:
        pytest.skip(f"no {program} binary")
    kw.setdefault("timeout", 5.0)
    kw.setdefault("connect_timeout", 5.0)
    tls = "implicit" if transport == "openssl" else "none"
    return ConnectConfig(host=host, port=port, transport=transport, tls=tls, **kw)


@pytest.mark.parametrize("transport", ALL)
def test_refused_port(transport):
    with pytest.raises(ConnectError, match=r"^connection to 127\.0\.0\.1:1 refused$"):
        create(cfg(transport, 1)).connect()


@pytest.mark.parametrize("transport", ALL)
def test_unknown_host(transport):
    with pytest.raises(ConnectError, match=r"^cannot resolve 'nohost\.invalid': Name or service not known$"):
        create(cfg(transport, 25, host="nohost.invalid")).connect()


@pytest.mark.parametrize("transport", PLAIN)
def test_connect_deadline_with_a_full_backlog(transport):
    lst, fillers = full_backlog_port()
    try:
        port = lst.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(ConnectError, match=rf"^connect to 127\.0\.0\.1:{port} timed out after 0\.5s$"):
            create(cfg(transport, port, connect_timeout=0.5)).connect()
        assert time.monotonic() - t0 < 2
    finally:
        for s in [lst, *fillers]:
            s.close()


@pytest.mark.parametrize("transport", PLAIN)
def test_deadline_on_a_silent_server(transport):
    with Server(silent()) as srv, create(cfg(transport, srv.port)) as t:
        t.connect()
        t0 = time.monotonic()
        with pytest.raises(DeadlineError):
            t.recv(time.monotonic() + 0.3)
        assert 0.25 < time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("transport", PLAIN)
def test_deadline_holds_for_a_dripping_reply(transport):
    with (
        Server(drip(b"250-a long reply\r\n250 dripping\r\n", 0.1)) as srv,
        create(cfg(transport, srv.port)) as t,
    ):
        t.connect()
        deadline = time.monotonic() + 0.55
        buf = b""
        with pytest.raises(DeadlineError):
            while True:
                chunk = t.recv(deadline)
                assert chunk, "the drip server does not close"
                buf += chunk
        assert 2 <= len(buf) <= 8  # a byte every 0.1 s: the deadline, not the reply, ended it
        assert time.monotonic() < deadline + 0.5
