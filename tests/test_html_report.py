"""The HTML report (runner/reporters/html.py), read as a parser reads it: sections per scenario
run and provider, the chat, decoded challenges, masked secrets, TLS facts, failures expanded,
escaping of hostile server text, and a page that can fetch nothing. The real browser test is
tests/test_html_browser.py.

Runs are the real `mailrun` command against the built-in sandbox or loopback helper servers."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

from runner import events as E
from runner.reporters.html import HtmlReporter
from runner.results import ScenarioResult, SessionResult, StepResult
from runner.transports.base import TLSInfo
from tests.support.servers import Server, scripted
from tests.test_suite import mailrun, report, smtp_scenario, write

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "wonderland"  # the sandbox scenarios' password
SECRET_FORMS = (PASSWORD, base64.b64encode(PASSWORD.encode()).decode())


class Page(HTMLParser):
    """Every start tag (name, attributes), the text outside <script>/<style>, and the script."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag
            if tag == "script":
                self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in is None:
            self.text.append(data)

    def all_text(self) -> str:
        return "".join(self.text)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def test_hostile_server_text_is_shown_as_text_never_markup(tmp_path):
    evil = b"<script>window.__pwned=1</script><img src=x onerror=alert(1)>"
    greeting = b"220 " + evil + b" ready\r\n"
    replies = {b"NOOP": b"550 </pre></section><b>" + evil + b"\r\n", b"QUIT": b"221 bye\r\n"}
    with Server(scripted(greeting, replies)) as srv:
        steps = '  - C: "NOOP <b>client</b>"\n    S: 250\n'
        scen = smtp_scenario(tmp_path / "evil.yaml", '"evil <i>name</i>"', srv.port, extra_steps=steps)
        res = mailrun(scen, "--report", f"html={tmp_path / 'r.html'}")
    assert res.returncode == 1, res.stdout + res.stderr
    text = (tmp_path / "r.html").read_text()
    page = Page(text)
    assert not page.find("img") and not page.find("i") and not page.find("b")
    assert len(page.scripts) == 1 and "__pwned" not in page.scripts[0]
    shown = page.all_text()
    assert "220 <script>window.__pwned=1</script><img src=x onerror=alert(1)> ready" in shown
    assert "550 </pre></section><b><script>" in shown  # the failing reply, in the chat and the problem
    assert "NOOP <b>client</b>" in shown and "evil <i>name</i>" in shown
    assert "&lt;script&gt;window.__pwned" in text


def test_the_page_can_fetch_nothing_and_runs_only_its_own_script(tmp_path):
    out = tmp_path / "r.html"
    res = mailrun("--sandbox", "scenarios/smtp_probe.yaml", "--report", f"html={out}")
    assert res.returncode == 0, res.stdout + res.stderr
    page = Page(out.read_text())
    for tag, attrs in page.tags:  # nothing to load: no src, no href but the empty data: icon
        assert "src" not in attrs, (tag, attrs)
        if "href" in attrs:
            assert (tag, attrs["href"]) == ("link", "data:,")
    (csp,) = page.find("meta", **{"http-equiv": "Content-Security-Policy"})
    policy = dict(p.strip().split(" ", 1) for p in csp["content"].split(";"))
    assert policy["default-src"] == "'none'" and policy["img-src"] == "data:"
    digest = base64.b64encode(hashlib.sha256(page.scripts[0].encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"  # the one script, by hash
    assert not re.search(r"https?://", out.read_text())


def _sections(page: Page) -> list[dict]:
    return page.find("section")


def test_one_section_per_scenario_and_provider_and_the_json_counts(tmp_path):
    rh, rj = tmp_path / "r.html", tmp_path / "r.json"
    res = mailrun(
        "--sandbox",
        "--matrix",
        "providers/",
        "scenarios/matrix/",
        "--report",
        f"html={rh}",
        "--report",
        f"json={rj}",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc, text = report(rj), rh.read_text()
    page = Page(text)
    assert len(_sections(page)) == len(doc["scenarios"]) == 12
    titles = re.findall(r"<h2>([^<]*)</h2>", text)
    assert titles == [s["display_name"] for s in doc["scenarios"]]
    providers = sorted(f.stem for f in (REPO / "providers").glob("*.yaml"))
    assert sorted(t.rpartition("[")[2].rstrip("]") for t in titles) == sorted(providers * 2)
    counts = dict(re.findall(r'<div data-count="(\w+)"><dt>[^<]*</dt><dd>(\d+)</dd>', text))
    assert counts == {k: str(v) for k, v in doc["summary"].items() if isinstance(v, int)}
    buttons = dict(re.findall(r'data-filter="(\w+)"[^>]*>\w+ \(<span class="n">(\d+)</span>\)', text))
    assert buttons == {"all": "12", "passed": "12", "failed": "0", "skipped": "0"}


def test_the_chat_decodes_challenges_masks_secrets_and_shows_tls(tmp_path):
    out = tmp_path / "r.html"
    res = mailrun("--sandbox", "scenarios/sandbox_send.yaml", "--report", f"html={out}")
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    for secret in SECRET_FORMS:
        assert secret not in text
    shown = Page(text).all_text()
    assert "334 VXNlcm5hbWU6" in shown and "decoded: Username:" in shown
    assert "334 UGFzc3dvcmQ6" in shown and "decoded: Password:" in shown
    # the client's lines and the server's replies are bubbles of their own side
    client = re.findall(r'<div class="bubble c"><span class="who">C:</span><pre>([^<]*)</pre>', text)
    server = re.findall(r'<div class="bubble s"><span class="who">S:</span><pre>([^<]*)</pre>', text)
    assert client[:2] == ["EHLO client.mailrun.test", "STARTTLS"] and "****" in client
    assert server[0].startswith("220 ") and server[1].startswith("250-")
    (tls,) = re.findall(r'<li class="tls"><strong>TLS started</strong><dl>(.*?)</dl></li>', text)
    facts = dict(re.findall(r"<dt>([^<]*)</dt><dd>([^<]*)</dd>", tls))
    assert facts["version"].startswith("TLSv1.") and facts["cipher"] and facts["verified"] == "yes"
    assert "CN=localhost" in facts["peer subject"]
    # the handshake shows after the STARTTLS step, before the EHLO over TLS
    assert text.index('<span class="label">step 3</span>') < text.index('<li class="tls">')
    assert text.index('<li class="tls">') < text.index('<span class="label">step 4</span>')
    assert re.search(r'<span class="bar" style="width:100\.0%">', text)  # the slowest step's bar


def test_a_failed_step_is_expanded_with_expected_and_received(tmp_path):
    with Server(scripted(b"220 hi\r\n", {b"NOOP": b"550 5.7.1 no\r\n", b"QUIT": b"221 bye\r\n"})) as srv:
        scen = smtp_scenario(tmp_path / "no.yaml", "refused noop", srv.port)
        ok = smtp_scenario(
            tmp_path / "ok.yaml", "expected refusal", srv.port, extra_steps="  - C: NOOP\n    S: 550\n"
        )
        res = mailrun(scen, ok, "--report", f"html={tmp_path / 'r.html'}")
    assert res.returncode == 1, res.stdout + res.stderr
    text = (tmp_path / "r.html").read_text()
    (problem,) = re.findall(r'<div class="problem"><dl>(.*?)</dl></div>', text)
    rows = dict(re.findall(r"<dt>([^<]*)</dt><dd>(.*?)</dd>", problem))
    assert rows["expected"] == "<pre>250</pre>" and rows["received"] == "<pre>550 5.7.1 no</pre>"
    sections = re.findall(
        r'<section class="scenario (status-\w+)"[^>]*>\n<details class="run"( open)?>', text
    )
    assert sections == [("status-failed", " open"), ("status-passed", "")]  # given order, failure open


def test_fields_other_parts_add_are_rendered_when_present(tmp_path):
    """Statuses beyond today's, a snapshot diff on a step, more TLS facts (as fields, or as a
    certificate's facts that facts() flattens): the reporter shows what a result carries
    (records subclassed here as the other changes extend them)."""

    class SnapStep(StepResult):
        __slots__ = ("snapshot", "snapshot_diff")

    class CondStep(StepResult):
        __slots__ = ("condition",)

    class MoreTLS(TLSInfo):
        __slots__ = ("alpn",)

        def __init__(self, *a, alpn=None, **kw):
            super().__init__(*a, **kw)
            object.__setattr__(self, "alpn", alpn)

    class CertTLS(TLSInfo):
        __slots__ = ("cert",)

        def __init__(self, *a, cert=None, **kw):
            super().__init__(*a, **kw)
            object.__setattr__(self, "cert", cert)

        def facts(self) -> dict:
            return {"version": self.version, "sans": list(self.cert["sans"]), "days_left": self.cert["days"]}

    diffed = SnapStep(2, "steps", "x.yaml:5", None, "send", "failed", sent="EHLO x", expected="snapshot")
    diffed.snapshot, diffed.snapshot_diff = (
        "differs",
        "--- snapshot\n+++ received\n@@ -1 +1 @@\n-250 old\n+250 new",
    )
    steps = [
        CondStep(1, "steps", "x.yaml:3", None, "read", "not needed", reason="capability absent"),
        diffed,
        StepResult(3, "steps", "x.yaml:7", None, "send", "interrupted", sent="QUIT"),
    ]
    steps[0].condition = "smtp.ext.PIPELINING"
    sess = SessionResult(
        "main", "smtp", 1, 1, steps=steps, status="failed", tls=MoreTLS("TLSv1.3", "C", None)
    )
    result = ScenarioResult("x.yaml", "future", sessions=[sess], status="interrupted")
    rep = HtmlReporter(tmp_path / "r.html")
    rep.handle(E.ScenarioStarted("x.yaml", "future", None, 1.0))
    from runner.transports.certinfo import CertFacts

    cert = CertFacts(
        "CN=x", "CN=ca", ("DNS:x.test",), ("x",), "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", 25
    )
    rep.handle(
        E.TLSStarted(TLSInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", "CN=x", cert=cert, sni="x.test"), 1.1)
    )
    for st in steps:
        rep.handle(E.StepFinished(st, 1.2))
    rep.handle(
        E.TLSStarted(CertTLS("TLSv1.2", "X", None, cert={"sans": ("a.test", "b.test"), "days": 30}), 1.25)
    )
    rep.handle(E.SessionFinished(sess, 1.3))
    rep.handle(E.ScenarioFinished(result, 1.4))
    rep.close()
    text = (tmp_path / "r.html").read_text()
    assert 'class="step status-not-needed" data-status="not needed"' in text
    assert (
        'class="step status-interrupted"' in text
        and "capability absent; condition: smtp.ext.PIPELINING" in text
    )
    assert (
        '<section class="scenario status-interrupted" data-status="interrupted" data-group="failed">' in text
    )
    assert '<span class="del">-250 old</span>\n<span class="add">+250 new</span>' in text
    assert '<span class="hunk">@@ -1 +1 @@</span>' in text and "<dt>snapshot differs</dt>" in text
    assert "<dt>sni</dt><dd>x.test</dd>" in text and "<dt>not after</dt><dd>2027-01-01T00:00:00Z</dd>" in text
    assert "<dt>sans</dt><dd>a.test, b.test</dd><dt>days left</dt><dd>30</dd>" in text
    assert text.count('<li class="tls">') == 2  # the session's own facts are the events': not again


def test_json_and_html_agree_on_a_failing_suite(tmp_path):
    """The counts at the top are the JSON report's, also with failures and errors."""
    with Server(scripted(b"220 hi\r\n", {b"NOOP": b"550 no\r\n", b"QUIT": b"221 bye\r\n"})) as srv:
        for name, code in (("a", 250), ("b", 550)):
            smtp_scenario(
                tmp_path / "s" / f"{name}.yaml", name, srv.port, extra_steps=f"  - C: NOOP\n    S: {code}\n"
            )
        write(
            tmp_path / "s" / "c.yaml",
            "name: c\nprotocol: smtp\nconnect: {host: 127.0.0.1, port: 1, timeout: 2}\nsteps:\n  - S: 220\n",
        )
        res = mailrun(
            tmp_path / "s",
            "--report",
            f"html={tmp_path / 'r.html'}",
            "--report",
            f"json={tmp_path / 'r.json'}",
        )
    assert res.returncode == 3, res.stdout + res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    text = (tmp_path / "r.html").read_text()
    counts = dict(re.findall(r'<div data-count="(\w+)"><dt>[^<]*</dt><dd>(\d+)</dd>', text))
    assert counts == {k: str(v) for k, v in doc["summary"].items() if isinstance(v, int)}
    assert (counts["passed"], counts["failed"], counts["error"]) == ("1", "1", "1")
    groups = re.findall(r'data-group="(\w+)"', text)
    assert groups == ["failed", "passed", "failed"]  # a (250 expected), b, c (refused: error)
