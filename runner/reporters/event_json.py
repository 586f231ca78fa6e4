"""Events ⇄ JSON: the one mapping between the event stream (runner.events) and the `events` list
of a scenario in the JSON report. The JSON reporter records with `EventRecorder`; the replay
(runner.reporters.replay) reads back with `decode`, so `mailrun report merge` can hand every
reporter the same stream a live run gave it.

An event becomes `{"type": "Sent", "at": 1765069353.123456, ...}`: its class name, then its
fields. Sent/Received carry `text` (the masked bytes, when they are UTF-8) or else `base64`.
Connected/TLSStarted carry `info` as an object. The three events that carry a result refer to it
by position instead of repeating it: StepFinished `step` (an index into the scenario's `steps`),
SessionFinished `session` (into `sessions`); ScenarioFinished is the scenario itself.
"""

from __future__ import annotations

import base64

from runner import events as E
from runner.transports.base import ConnectInfo, TLSInfo

#: wire bytes (Sent/Received) kept per scenario run; later ones are counted, not kept
MAX_WIRE_CHARS = 1 << 20
#: wire events and notes kept per scenario run (a server dripping one byte per read makes many);
#: the others (a session, a step, a handshake, the scenario's end) are always kept
MAX_EVENTS = 20_000

_PLAIN = (str, int, float, bool, type(None))
_INFO = {"Connected": ConnectInfo, "TLSStarted": TLSInfo}


def info_dict(info) -> dict | None:
    """A ConnectInfo or TLSInfo (any read-only record) as a dict of its fields, each one as JSON
    holds it (a record as a dict, a sequence as a list, anything else not plain as its text). A
    record that says its own facts as plain data (a `facts()` method, as a TLSInfo that carries
    a certificate does) is those facts."""
    if info is None:
        return None
    if callable(getattr(info, "facts", None)):
        return {str(k): _json_value(v) for k, v in info.facts().items()}
    return {k: _json_value(v) for k, v in _fields(info).items()}


def _json_value(v):
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, list | tuple):
        return [_json_value(i) for i in v]
    if isinstance(v, dict):
        return {str(k): _json_value(i) for k, i in v.items()}
    return info_dict(v) if hasattr(v, "__slots__") else str(v)


def tls_info(d: dict | None) -> TLSInfo | None:
    """A TLSInfo back from info_dict(): what TLSInfo.facts() flattened, the certificate's
    facts among them, rebuilt."""
    if d is None:
        return None
    cert = None
    if d.get("not_after") is not None:
        from runner.transports.certinfo import CertFacts

        subject = d.get("peer_subject")
        names = tuple(p[3:] for p in (subject or "").split(", ") if p.startswith("CN="))
        sans = tuple(d.get("sans") or ())
        cert = CertFacts(
            subject,
            d.get("peer_issuer"),
            sans,
            names,
            d.get("not_before"),
            d["not_after"],
            d.get("days_left"),
        )
    return TLSInfo(
        d["version"],
        d["cipher"],
        d.get("peer_subject"),
        d.get("peer_issuer"),
        d.get("verified", True),
        cert=cert,
        sni=d.get("sni"),
    )


def field_names(cls) -> list[str]:
    """The public fields of a record class: its slots and its bases' (runner.records)."""
    names = [n for c in reversed(cls.__mro__) for n in getattr(c, "__slots__", ())]
    return [n for n in dict.fromkeys(names) if not n.startswith("_")]


def _fields(obj) -> dict:
    return {k: getattr(obj, k) for k in field_names(type(obj))}


class EventRecorder:
    """Records one scenario run's events as JSON-ready dicts. `handle(event)` each event;
    `take(result)` at its ScenarioFinished gives (events, how many were left out)."""

    def __init__(self):
        self.items: list[tuple[dict, object]] = []  # (dict, the result it refers to, or None)
        self.wire = 0
        self.kept = 0  # wire events and notes
        self.omitted = 0

    def handle(self, ev) -> None:
        if isinstance(ev, E.Sent | E.Received | E.Note):
            if self.kept >= MAX_EVENTS:
                self.omitted += 1
                return
            self.kept += 1
        name = type(ev).__name__
        d: dict = {"type": name, "at": ev.at}  # (unrounded: a merge computes the same durations)
        ref = None
        if isinstance(ev, E.Sent | E.Received):
            data = ev.data
            if self.wire + len(data) > MAX_WIRE_CHARS:
                self.omitted += 1
                return
            self.wire += len(data)
            try:
                d["text"] = data.decode("utf-8")
            except UnicodeDecodeError:
                d["base64"] = base64.b64encode(data).decode("ascii")
        elif isinstance(ev, E.StepFinished | E.SessionFinished | E.ScenarioFinished):
            ref = ev.result
        elif name in _INFO:
            d["info"] = info_dict(ev.info)
        else:
            fields = {k: v for k, v in _fields(ev).items() if k != "at"}
            if not all(isinstance(v, _PLAIN) for v in fields.values()):
                return  # an event this mapping does not know how to write
            d.update(fields)
        self.items.append((d, ref))

    def take(self, result) -> tuple[list[dict], int]:
        """The recorded events, results referred to by position in `result`."""
        steps = {id(st): i for i, st in enumerate(st for s in result.sessions for st in s.steps)}
        sessions = {id(s): i for i, s in enumerate(result.sessions)}
        out = []
        for d, ref in self.items:
            if isinstance(ref, type(result)):
                pass
            elif id(ref) in steps:
                d["step"] = steps[id(ref)]
            elif id(ref) in sessions:
                d["session"] = sessions[id(ref)]
            elif ref is not None:
                continue  # a result that is not part of this scenario's
            out.append(d)
        return out, self.omitted


def decode(d: dict, result):
    """One event back from its dict; results come from `result` (a ScenarioResult); None for an
    event of a type this version does not know."""
    name, at = d.get("type"), d.get("at", 0.0)
    cls = getattr(E, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, E.Plain) and cls.__module__ == E.__name__):
        return None
    if cls in (E.Sent, E.Received):
        data = base64.b64decode(d["base64"]) if "base64" in d else d.get("text", "").encode("utf-8")
        return cls(data, at)
    if cls is E.StepFinished:
        return cls(result.steps[d["step"]], at)
    if cls is E.SessionFinished:
        return cls(result.sessions[d["session"]], at)
    if cls is E.ScenarioFinished:
        return cls(result, at)
    if cls is E.TLSStarted:
        return cls(tls_info(d["info"]), at)
    if cls is E.Connected:
        info = dict(d["info"])
        info["tls"] = tls_info(info.get("tls"))
        return cls(ConnectInfo(**{k: v for k, v in info.items() if k in field_names(ConnectInfo)}), at)
    fields = {k: v for k, v in d.items() if k in field_names(cls)}
    return cls(**fields)
