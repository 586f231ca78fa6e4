"""`mailrun record HOST [PORT]` and `mailrun import TRANSCRIPT`: a conversation, live or pasted,
written as a scenario (runner.record). The written file is loaded back through the scenario
loader before the command says it is done, so what it writes validates."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from runner import protocols
from runner.errors import ExitClass, MailrunError, ScenarioError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from runner.record.live import LiveSession
    from runner.record.write import SessionOut

MAX_INPUT = 64 << 20  # a script or transcript larger than this is not a conversation


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 1..65535")
    return int(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the scenario to write ('-': stdout)"
    )
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--name", help="the scenario's name (default: from the host or the transcript)")
    p.add_argument(
        "--protocol",
        choices=protocols.NAMES,
        help="how replies are framed (default: the usual protocol of the port; on another port, what the greeting says)",
    )


def build_record_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mailrun record",
        description="Talk to a server as with telnet (or play --script FILE one line at a time) and "
        "write what it answered as a scenario. Credentials are never written: they become "
        "{{ env.MAIL_USER }} / {{ env.MAIL_PASSWORD }}.",
    )
    p.add_argument("host")
    p.add_argument("port", nargs="?", type=_port, help="default: the protocol's usual port")
    _common(p)
    p.add_argument("--tls", choices=("none", "implicit", "starttls"), default="none")
    p.add_argument("--ca", type=Path, help="CA certificates (PEM) to verify the server with")
    p.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    p.add_argument("--server-name", help="SNI and certificate name (default: HOST)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply (10)")
    p.add_argument("--script", type=Path, metavar="FILE", help="client lines to send, one at a time")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=4)
    fam.add_argument("-6", dest="family", action="store_const", const=6)
    return p


def build_import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mailrun import",
        description="Turn a pasted conversation (S:/C: lines, a mailrun or swaks transcript, a "
        "telnet session) into a scenario, without connecting.",
    )
    p.add_argument("transcript", help="the transcript file ('-': stdin)")
    _common(p)
    p.add_argument("--host", help="the server (default: from the transcript)")
    p.add_argument("--port", type=_port)
    p.add_argument("--tls", choices=("none", "implicit", "starttls"))
    return p


# ------------------------------------------------------------------ record
def cmd_record(argv: list[str]) -> int:
    from runner.model.config import DEFAULT_PORTS, ConnectConfig, seconds_problem
    from runner.record.live import LiveSession
    from runner.record.write import SessionOut

    args = build_record_parser().parse_args(argv)
    problem = seconds_problem(args.timeout)
    if problem:
        raise UsageError(f"--timeout: {problem}")
    protocol = args.protocol or _by_port(args.port, args.tls == "implicit")
    port = args.port or DEFAULT_PORTS.get((protocol or "smtp", args.tls == "implicit"))
    if port is None:
        raise UsageError(f"give the port: protocol {protocol} has no usual one")
    _check_output(args.output, args.force)
    script = _read_input(args.script) if args.script else None
    config = ConnectConfig(
        host=args.host, port=port, tls=args.tls, timeout=args.timeout, connect_timeout=args.timeout,
        tls_verify=not args.insecure, ca=args.ca.resolve() if args.ca else None,
        server_name=args.server_name, family=args.family, protocol=protocol or "smtp",
    )  # fmt: skip
    interactive = script is None and sys.stdin.isatty()
    display = sys.stderr if args.output == "-" else sys.stdout
    live = LiveSession(
        config, protocol, lambda text: print(text, file=display, flush=True), echo=not interactive
    )
    if args.insecure:
        print("mailrun: TLS certificate verification is OFF (--insecure)", file=sys.stderr)
    lines = script.splitlines() if script is not None else _typed(live, interactive)
    recording = live.run(iter(lines))
    protocol = recording.conversation.protocol_name  # (told by the greeting when not given)
    connect = {"host": args.host, "port": port, "tls": "implicit" if args.tls == "implicit" else None}
    if live.conversation.upgraded:
        connect["tls"] = "starttls"
    elif args.tls == "starttls":  # (tls: starttls needs the step that upgraded: there is none)
        print(
            "mailrun: --tls starttls, but no STARTTLS succeeded: the scenario speaks plain text",
            file=sys.stderr,
        )
    if args.ca:
        connect["ca"] = str(args.ca.resolve())
    if args.insecure:
        connect["tls_verify"] = False
    session = SessionOut(protocol, protocol, connect, recording.conversation)
    how = f"mailrun record {args.host} {port}" + (f" --script {args.script}" if args.script else "")
    header = [f"Recorded by `{how}` on {_now()}."]
    if recording.error is not None:
        header.append(
            f"The session ended in an error: {live.conversation.credentials.redact(str(recording.error))}"
        )
    name = args.name or f"Recorded {protocol.upper()} session with {args.host}:{port}"
    _write(args.output, name, [session], header)
    if recording.error is not None:
        shown = live.conversation.credentials.redact(str(recording.error))
        print(f"mailrun: the session ended in an error: {shown}", file=sys.stderr)
        return int(recording.error.exit_class)
    return int(ExitClass.INTERRUPTED) if recording.interrupted else 0


def _by_port(port: int | None, implicit: bool) -> str | None:
    """The protocol a usual port says (None for another port: the greeting tells); no port: SMTP."""
    if port is None:
        return "smtp"
    from runner.model.config import DEFAULT_PORTS

    usual = [name for (name, tls), number in DEFAULT_PORTS.items() if number == port and tls == implicit]
    return usual[0] if usual else None


def _typed(live: LiveSession, interactive: bool) -> Iterator[str]:
    """Lines from the terminal (a password asked for without echo) or from a pipe."""
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\r\n")
        return
    print(
        "mailrun record: type client lines; end with Ctrl-D (the scenario is then written)", file=sys.stderr
    )
    while True:
        try:
            secret = live.conversation.awaits_secret
            yield getpass.getpass("C: (not shown) ") if secret else input("C: ")
        except EOFError:
            return


# ------------------------------------------------------------------ import
def cmd_import(argv: list[str]) -> int:
    from runner.record.transcript import read_transcript

    args = build_import_parser().parse_args(argv)
    _check_output(args.output, args.force)
    source = "<stdin>" if args.transcript == "-" else args.transcript
    text = _read_input(None if args.transcript == "-" else Path(args.transcript))
    connect = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    imported = read_transcript(text, source, args.protocol, connect)
    for s in imported.sessions:
        if args.tls == "starttls" and not s.conversation.upgraded:
            print(
                f"mailrun: --tls starttls, but session {s.name!r} has no STARTTLS: left plain",
                file=sys.stderr,
            )
        elif args.tls:
            s.connect["tls"] = None if args.tls == "none" else args.tls
    header = [f"Imported by `mailrun import {source}` on {_now()}."]
    stem = Path(source).stem if source != "<stdin>" else "transcript"
    name = args.name or f"Imported from {stem}"
    _write(args.output, name, imported.sessions, header)
    return 0


# ------------------------------------------------------------------ shared
def _read_input(path: Path | None) -> str:
    """A script or transcript: a regular file (or stdin) of at most MAX_INPUT bytes."""
    if path is None:
        data = sys.stdin.buffer.read(MAX_INPUT + 1)
        where = "stdin"
    else:
        where = str(path)
        try:
            if not path.is_file():
                raise UsageError(
                    f"{path}: not a regular file" if path.exists() else f"{path}: file not found"
                )
            with path.open("rb") as f:
                data = f.read(MAX_INPUT + 1)
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_INPUT:
        raise UsageError(f"{where}: larger than {MAX_INPUT >> 20} MiB; not a conversation")
    return data.decode("utf-8", "surrogateescape")


def _check_output(output: str, force: bool) -> None:
    if output == "-":
        return
    path = Path(output)
    if path.exists() and not force:
        raise UsageError(f"{output} exists; give --force to overwrite it")
    if not path.parent.is_dir():
        raise UsageError(f"{output}: the folder {path.parent} does not exist")


def _write(output: str, name: str, sessions: list[SessionOut], header: list[str]) -> None:
    """Writes the scenario (atomically), checks it loads, and says what was replaced."""
    from runner.record.write import scenario_text

    warnings = [w for s in sessions for w in s.conversation.credentials.warnings]
    users = any(s.conversation.credentials.uses_user for s in sessions)
    secrets = [n for s in sessions for n in s.conversation.credentials.secrets]
    needs = sorted({n.removeprefix("env.") for n in secrets} | ({"MAIL_USER"} if users else set()))
    if needs:
        header.append(f"Credentials were not written: set {', '.join(needs)} in the environment to replay.")
    if any(s.connect.get("host") == "{{ env.MAIL_HOST }}" for s in sessions):
        header.append("The transcript does not name the server: set MAIL_HOST (or edit connect.host).")
    header.append("Replies are matched by their codes: edit the S: patterns to check more.")
    text = scenario_text(name, sessions, header)
    if output == "-":
        _check_loads(text, None)
        sys.stdout.write(text)
    else:
        _check_loads(text, Path(output))
        _atomic_write(Path(output), text)
        steps = sum(1 for s in sessions for t in s.conversation.turns if not t.merged)
        print(f"mailrun: wrote {output} ({steps} steps)", file=sys.stderr)
    for w in warnings:
        print(f"mailrun: {w}", file=sys.stderr)


def _check_loads(text: str, target: Path | None) -> None:
    """The scenario, written beside its target (relative paths resolve the same), must load."""
    from runner.load.api import load_scenario

    folder = target.parent if target is not None else Path.cwd()
    fd, tmp = tempfile.mkstemp(prefix=".mailrun-record-", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        load_scenario(tmp, use_cache=False)
    except ScenarioError as exc:
        raise MailrunError(
            "internal error: the recorded scenario does not validate:\n" + "\n".join(exc.problems)
        ) from None
    finally:
        os.unlink(tmp)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
