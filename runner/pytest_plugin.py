"""The pytest plugin (entry point `pytest11`): scenarios as pytest items, and fixtures for an
application's own tests.

pytest loads it in every run of an environment where mailrun is installed, so importing it
imports nothing of mailrun: the loader, the engine and the sandbox come in when a scenario file
is collected or a fixture is used. What it collects: files named `*.mailrun.yaml` (or `.yml`)
anywhere, and every scenario file (any `*.yaml`/`*.yml`, fragments skipped, as `mailrun DIR`)
at or below a path of the ini option `mailrun_paths`. One item per scenario and matrix provider,
`file.yaml::scenario name[provider]`; its tags become markers, and every item is marked
`mailrun`. A failing item shows the masked conversation, the failing step with expected vs
received, and the verdict line: what `mailrun -v` prints.

The run is set up the way `mailrun run` sets it up (runner.prepare, runner.suite: load with the
defined names, matrix, unset environment variables, the sandbox, one executor), with the options
`--mailrun-var`, `--mailrun-matrix`, `--mailrun-sandbox` and `--mailrun-shard`. Fixtures:
`mailrun_sandbox` (the session's sandbox: host, ports, ca_path, users, messages(user)) and
`mailrun_run(path, vars=...)` (plays a scenario, returns its ScenarioResult).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from runner.model.scenario import Scenario
    from runner.results import ScenarioResult
    from runner.sandbox.server import Sandbox
    from runner.shard import Shard

SUFFIXES = (".mailrun.yaml", ".mailrun.yml")
#: a tag that can be a marker: a name `-m` can say, without the ':' of a marker registration
MARKER = re.compile(r"[A-Za-z0-9][\w.+-]*")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailrun", "mailrun scenarios (*.mailrun.yaml, ini mailrun_paths)")
    group.addoption(
        "--mailrun-var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a scenario variable (wins over the scenario's vars and the matrix's)",
    )
    group.addoption(
        "--mailrun-matrix",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="provider vars files: one item per scenario and provider, id name[provider]",
    )
    group.addoption(
        "--mailrun-sandbox",
        action="store_true",
        help="point every scenario at a session-scoped built-in sandbox mail server",
    )
    group.addoption(
        "--mailrun-shard", metavar="I/N", help="run only the scenario items of shard I of N (stable hash)"
    )
    parser.addini(
        "mailrun_paths",
        type="paths",
        default=[],
        help="scenario files or directories collected as mailrun items (besides *.mailrun.yaml)",
    )


STATE = pytest.StashKey["_State"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mailrun: a mailrun scenario run (from the mailrun plugin)")
    state = config.stash[STATE] = _State(config)
    if config.getoption("mailrun_var") or config.getoption("mailrun_matrix"):
        state.setup()
    if config.getoption("mailrun_shard"):
        from runner.errors import UsageError
        from runner.shard import parse_shard

        try:
            state.shard = parse_shard(config.getoption("mailrun_shard"), "--mailrun-shard")
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    if state.listed and config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest` alone: the listed paths are collected even outside testpaths / the current dir
        walked = [Path(config.invocation_params.dir, a.split("::")[0]).resolve() for a in config.args]
        for p in state.listed:
            if not any(p == w or w in p.parents for w in walked):
                config.args.append(str(p))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if parent.config.stash[STATE].wants(file_path):
        return MailrunFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--mailrun-shard I/N: only the scenario items of that shard (runner.shard, as `--shard`);
    other tests are left alone."""
    shard = config.stash[STATE].shard
    if shard is None:
        return
    keep, drop = [], []
    for item in items:
        mine = not isinstance(item, MailrunItem) or shard.keeps(item.scenario.path, item.provider)
        (keep if mine else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class MailrunFailed(Exception):
    """A scenario run that did not pass (or could not start): `text` is what the report shows,
    its last line the verdict (`headline`), `where` the failing step's 'file:line' if known."""

    def __init__(self, text: str, where: str | None = None):
        super().__init__(text)
        self.text = text
        self.headline = (text.strip().splitlines() or ["failed"])[-1]
        self.where = where

    def longrepr(self, path: Path):
        """As pytest shows a native traceback: the text as it is, and the headline for the short
        summary and JUnit's `message` (pytest's own repr classes; a plain string if they moved)."""
        file, _, line = (self.where or "").rpartition(":")
        lines = [ln + "\n" for ln in self.text.splitlines()]
        try:
            from _pytest._code.code import ReprExceptionInfo, ReprFileLocation, ReprTracebackNative

            crash = ReprFileLocation(file or str(path), int(line) if line.isdigit() else 0, self.headline)
            return ReprExceptionInfo(reprtraceback=ReprTracebackNative(lines), reprcrash=crash)
        except (ImportError, TypeError):
            return self.text


class _State:
    """One pytest session's mailrun settings, worked out when first needed (a session that
    collects no scenario never imports mailrun's loader or engine), and its sandbox."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.listed = [Path(p).resolve() for p in config.getini("mailrun_paths")]
        self._ready = False
        self.shard: Shard | None = None  # --mailrun-shard
        self.markers: set[str] = set()  # tags registered as markers
        self._sandbox: Sandbox | None = None
        self.run_id = os.urandom(6).hex()

    def wants(self, path: Path) -> bool:
        if path.name.endswith(SUFFIXES):
            return True
        if path.suffix not in (".yaml", ".yml") or not self.listed:
            return False
        full = path.resolve()
        return any(full == p or p in full.parents for p in self.listed)

    def setup(self) -> None:
        """--mailrun-var and --mailrun-matrix, read once; pytest_configure calls this when
        either is given, so a bad one stops the session before collection (pytest.UsageError)."""
        if self._ready:
            return
        from runner.errors import MailrunError
        from runner.prepare import defined_names
        from runner.suite import load_matrix

        opt = self.config.getoption
        self.variables: dict[str, str] = {}
        for text in opt("mailrun_var"):
            name, sep, value = text.partition("=")
            if not sep or not name.strip():
                raise pytest.UsageError(f"--mailrun-var wants NAME=VALUE, got {text!r}")
            self.variables[name.strip()] = value
        try:
            self.matrix = load_matrix(opt("mailrun_matrix")) if opt("mailrun_matrix") else []
        except MailrunError as exc:
            raise pytest.UsageError(f"--mailrun-matrix: {exc}") from None
        self.defined = defined_names(self.variables, self.matrix)
        self.env = dict(os.environ)
        self._ready = True

    def load(self, path: Path, more: Mapping[str, str] | None = None) -> Scenario | None:
        """The scenario of `path` (None for an include fragment); an invalid file raises
        MailrunFailed listing every problem, file:line:col."""
        from runner.errors import MailrunError
        from runner.load.api import is_fragment, load_scenario

        self.setup()
        try:
            return load_scenario(path, defined=self.defined | set(more or ()))
        except MailrunError as exc:
            if is_fragment(path):
                return None
            raise MailrunFailed(f"{exc}\nmailrun: invalid scenario file; nothing was sent") from None

    def sandbox(self) -> Sandbox:
        """The session's sandbox, started at first use (runner.prepare.new_sandbox, as --sandbox)."""
        if self._sandbox is None:
            from runner.prepare import new_sandbox

            self._sandbox = new_sandbox()
        return self._sandbox

    def play(
        self,
        scenario: Scenario,
        provider: str | None = None,
        provider_vars: Mapping[str, str] | None = None,
        *,
        more: Mapping[str, str] | None = None,
        sandbox: bool | None = None,
    ) -> tuple[ScenarioResult, str]:
        """One run, set up as `mailrun run` sets it up: (its result, the masked `-v` console
        text). MailrunFailed, before anything is sent, for unset environment variables."""
        from runner.cli.variables import matrix_env_refs
        from runner.engine.run import RunOptions
        from runner.prepare import fill_sandbox_env, pointing_at, unset_env

        self.setup()
        if sandbox is None:
            sandbox = self.config.getoption("mailrun_sandbox")
        matrix_env = matrix_env_refs([(provider, provider_vars)]) if provider and provider_vars else {}
        if sandbox:
            fill_sandbox_env(self.env, [*scenario.env_refs, *matrix_env])
        unset = unset_env([scenario], matrix_env, self.env)
        if unset:
            raise MailrunFailed(
                "\n".join([*unset, "mailrun: set these environment variables; nothing was sent"])
            )
        options = RunOptions(
            env=self.env,
            variables={**self.variables, **(more or {})},
            adjust_connect=pointing_at(self.sandbox()) if sandbox else None,
            run_id=self.run_id,
        )
        return _play_one(scenario, provider, provider_vars, options)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None


def _play_one(scenario, provider, provider_vars, options) -> tuple[ScenarioResult, str]:
    """The run through the suite's one executor, the verbose console listening (no colour)."""
    import io

    from runner.reporters.console import ConsoleReporter
    from runner.suite import Listener, Run, execute

    console = ConsoleReporter(io.StringIO(), verbose=True, color=False)
    run = Run(0, scenario, provider, provider_vars)
    execute([run], options, Listener(ordered=[console]))
    console.close()
    assert run.result is not None  # execute gives every run a result (a crash too)
    return run.result, console.stream.getvalue()


def _shown(path: Path, base: Path) -> Path:
    """`path` relative to `base` when it lies below it (locations then read 'dir/x.yaml:12')."""
    try:
        return path.relative_to(base)
    except ValueError:
        return path


class MailrunFile(pytest.File):
    """A scenario file: one item per matrix provider (one without a matrix)."""

    def collect(self) -> Iterator[MailrunItem]:
        from runner.suite import plan

        state = self.config.stash[STATE]
        try:
            scenario = state.load(_shown(self.path, self.config.invocation_params.dir))
        except MailrunFailed as exc:
            raise self.CollectError(str(exc)) from None
        if scenario is None:
            return
        for run in plan([scenario], state.matrix):
            name = f"{scenario.name}[{run.provider}]" if run.provider else scenario.name
            yield MailrunItem.from_parent(
                self, name=name, scenario=scenario, provider=run.provider, provider_vars=run.provider_vars
            )


class MailrunItem(pytest.Item):
    """One scenario run: passes when the scenario passes; tags are markers."""

    def __init__(self, *, scenario: Scenario, provider: str | None, provider_vars: Mapping[str, str], **kw):
        super().__init__(**kw)
        self.scenario = scenario
        self.provider = provider
        self.provider_vars = provider_vars
        self.add_marker("mailrun")
        state = self.config.stash[STATE]
        for tag in scenario.tags:
            if not MARKER.fullmatch(tag):  # what `-m` cannot name (or an ini line cannot hold)
                continue
            if tag not in state.markers:  # registered, so --strict-markers accepts it
                state.markers.add(tag)
                self.config.addinivalue_line("markers", f"{tag}: mailrun scenario tag")
            self.add_marker(tag)
        if provider:
            self.user_properties.append(("provider", provider))

    def runtest(self) -> None:
        result, text = self.config.stash[STATE].play(self.scenario, self.provider, self.provider_vars)
        if result.status != "passed":
            failed = next((st for st in result.steps if not st.ok), None)
            raise MailrunFailed(text.rstrip("\n"), where=failed.location if failed else None)
        self.add_report_section("call", "mailrun", text)  # (shown by -rP)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, MailrunFailed):
            return excinfo.value.longrepr(self.path)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"mailrun: {self.name}"


class MailrunRunner:
    """`mailrun_run(path, vars={...}, sandbox=None)`: plays the scenario at `path` (relative to
    the current directory) with these variables over --mailrun-var's, against the session's
    sandbox when `sandbox` (None: as --mailrun-sandbox says), and returns its ScenarioResult.
    `output` is the masked console text of the last run (also shown with a failing test). An
    invalid file or an unset environment variable fails the test, nothing sent."""

    def __init__(self, state: _State, node: pytest.Item):
        self.state = state
        self.node = node
        self.output = ""

    def __call__(
        self, path: str | os.PathLike, vars: Mapping[str, str] | None = None, *, sandbox: bool | None = None
    ) -> ScenarioResult:
        more = {k: str(v) for k, v in (vars or {}).items()}
        try:
            scenario = self.state.load(Path(path), more)
            if scenario is None:
                raise MailrunFailed(f"{path}: is an include fragment, not a scenario")
            result, self.output = self.state.play(scenario, more=more, sandbox=sandbox)
        except MailrunFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        self.node.add_report_section("call", f"mailrun {path}", self.output)
        return result


@pytest.fixture(scope="session")
def mailrun_sandbox(request: pytest.FixtureRequest) -> Sandbox:
    """The session's sandbox (the one --mailrun-sandbox points scenarios at): `host`, `ports`
    ({'smtp': N, 'smtps': N, 'pop3': ..., 'imaps': ...}), `port_for(protocol, tls)`, `ca_path`,
    `users`, `domain`; `messages(user)` the messages delivered to a mailbox, oldest first.
    Any login is accepted."""
    return request.config.stash[STATE].sandbox()


@pytest.fixture
def mailrun_run(request: pytest.FixtureRequest) -> MailrunRunner:
    """Plays a scenario file and returns its result: `mailrun_run("x.yaml", vars={...})`."""
    return MailrunRunner(request.config.stash[STATE], request.node)
