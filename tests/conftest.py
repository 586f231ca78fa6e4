"""Shared pytest fixtures: the real Postfix/Dovecot test bed, free ports, marker handling.

- `testbed` (session): a started `tests.servers.testbed.Testbed` (host, ports, users, domain,
  address(), ca_path, ssl_context(), maildir(), wait_for_message(), clear_mailbox(), logs()).
  Started on first use, stopped at the end of the session (and checked: no process left).
- `free_port`: a function returning a free TCP port on 127.0.0.1 (or the host given).
- Tests marked `testbed` or using the fixture are skipped with the reason when the bed cannot
  run here (not root, packages missing) — unless CI is set, where that is an error. Tests marked
  `telnet` are treated the same way when the `telnet` binary is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests.…` imports work with plain `pytest` too, not only `python -m`
    sys.path.insert(0, str(REPO))

from tests.servers.testbed import Testbed, TestbedError, free_ports, missing_requirements  # noqa: E402


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    """Skip (or, under CI, fail) the current test because `reason`."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(config, items):
    # A test using the fixture is a test-bed test, marked or not (so `-m testbed` selects it).
    for item in items:
        if "testbed" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("testbed"):
            item.add_marker(pytest.mark.testbed)


def pytest_runtest_setup(item):
    if item.get_closest_marker("testbed"):
        reason = missing_requirements()
        if reason:
            _unavailable(reason)
    if item.get_closest_marker("telnet") and shutil.which("telnet") is None:
        _unavailable("the telnet binary is missing (Debian package 'telnet'; scripts/test installs it)")


@pytest.fixture(scope="session")
def testbed():
    """The running test bed (see tests/servers/testbed.py). Started once per session."""
    reason = missing_requirements()
    if reason:
        _unavailable(reason)
    bed = Testbed()
    try:
        bed.start()
    except TestbedError as exc:  # pytest keeps this failure for every later test that asks
        pytest.fail(f"the test bed did not start: {exc}", pytrace=False)
    print(f"\n[testbed] up in {bed.startup_seconds:.2f} s: {bed.ports}")
    yield bed
    bed.stop()  # raises TestbedError (a teardown error) if a process had to be killed


@pytest.fixture
def free_port():
    """`free_port()` -> a TCP port on 127.0.0.1 free a moment ago; `free_port("::1")` for IPv6."""

    def pick(host: str = "127.0.0.1") -> int:
        return free_ports(1, host)[0]

    return pick
