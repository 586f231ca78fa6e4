"""Setting runs up, the part `mailrun run` (runner.cli.run) and the pytest plugin
(runner.pytest_plugin) share: the names a load may take as defined, loading every file so one
pass names every invalid one, the environment variables nobody set, and the sandbox
(`--sandbox`, `--mailrun-sandbox`): what it puts in an unset variable and how it points every
session at itself. Nothing here prints except `fill_sandbox_env`'s notes (to `say`)."""

from __future__ import annotations

import sys
from pathlib import Path

from runner.errors import MailrunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from runner.model.config import ConnectConfig
    from runner.model.scenario import Scenario
    from runner.sandbox.server import Sandbox

#: what the sandbox puts in an environment variable the scenario needs but nobody set
SANDBOX_USER = "alice@mailrun.test"
SANDBOX_PASSWORD = "wonderland"


def defined_names(variables: Iterable[str], matrix: Sequence[tuple[str, Mapping[str, str]]]) -> set[str]:
    """The names a scenario may use without defining them: the command line's variables and
    every provider file's (`--matrix`)."""
    return set(variables) | {name for _, values in matrix for name in values}


def load_all(files, defined: set[str]) -> tuple[list, list[str], list[str]]:
    """(scenarios, problems, invalid files): every file is loaded, so that one run names every
    invalid one."""
    from runner.load.api import load_scenario

    scenarios, problems, invalid = [], [], []
    for f in files:
        try:
            scenarios.append(load_scenario(f, defined=defined))
        except MailrunError as exc:
            problems.append(str(exc))
            invalid.append(str(f))
    return scenarios, problems, invalid


def unset_env(
    chosen: Iterable[Scenario],
    matrix_env: Mapping[str, str],
    env: Mapping[str, str],
    unneeded: Mapping[Path, Iterable[str]] | None = None,
) -> list[str]:
    """One line per environment variable a chosen scenario or a provider file needs and nobody
    set (`unneeded`: per scenario path, the names nobody needs: they count as set)."""
    from runner.model.scenario import env_warnings

    unneeded = unneeded or {}
    unset = [
        w for sc in chosen for w in env_warnings(sc, {**dict.fromkeys(unneeded.get(sc.path, ()), ""), **env})
    ]
    unset += [
        f"matrix {where} needs environment variable {name}, which is not set"
        for name, where in matrix_env.items()
        if name not in env
    ]
    return unset


def sandbox_value(name: str) -> str:
    """What the sandbox puts in an environment variable the scenario needs but nobody set."""
    n = name.upper()
    if any(k in n for k in ("PASS", "TOKEN", "SECRET", "KEY")):
        return SANDBOX_PASSWORD
    if "HOST" in n or "SERVER" in n:  # MAIL_HOST (what `mailrun import` writes): a host name
        return "localhost"
    if any(k in n for k in ("USER", "LOGIN", "MAIL", "ADDR", "FROM", "TO")):
        return SANDBOX_USER
    return "sandbox"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def fill_sandbox_env(
    env: dict[str, str], needed: Iterable[str], say: Callable[[str], None] = _stderr
) -> None:
    """Every needed environment variable nobody set gets the sandbox's value (said, a password
    masked)."""
    for name in dict.fromkeys(needed):
        if name not in env:
            env[name] = sandbox_value(name)
            shown = "****" if env[name] == SANDBOX_PASSWORD else env[name]
            say(f"sandbox: {name} is not set; using the sandbox's {shown}")


def new_sandbox() -> Sandbox:
    """The sandbox a run is pointed at, started: any login is accepted, new mailboxes welcomed."""
    from runner.sandbox.server import Sandbox

    return Sandbox(accept_any_login=True).start()


def pointing_at(sb: Sandbox) -> Callable[[ConnectConfig], ConnectConfig]:
    """The RunOptions.adjust_connect that sends every session to the sandbox `sb`: the port of
    its protocol and TLS mode, the sandbox's CA, certificates verified."""

    def adjust(config: ConnectConfig) -> ConnectConfig:
        return config.replace(
            host=sb.host,
            port=sb.port_for(config.protocol, config.tls, proxy=config.proxy is not None),
            unix=sb.unix_for(config.protocol, config.unix),
            ca=Path(sb.ca_path),
            tls_verify=True,
            server_name=None,
        )

    return adjust
