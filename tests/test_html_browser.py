"""The HTML report in a real browser: headless Chromium (Debian's `chromium`, driven through
`chromium-driver` by Selenium). The page loads with no console message of level error or worse
(a Content-Security-Policy violation, a failed fetch and a script error are all reported
there), fetches nothing, its counts are the JSON report's, its filter buttons show what they say,
hostile server text stays text, and no secret is anywhere in the DOM.

Skipped, with the reason, where Chromium, its driver or Selenium is missing; under CI=true
that is a failure (scripts/test installs the Debian packages; Selenium is a test extra)."""

from __future__ import annotations

import base64
import shutil
import tempfile

import pytest
from conftest import _unavailable

from tests.support.servers import Server, scripted
from tests.test_suite import mailrun, report, smtp_scenario, write

PASSWORD = "wonderland"
SECRETS = (
    PASSWORD,
    base64.b64encode(PASSWORD.encode()).decode(),
    base64.b64encode(b"\0alice@mailrun.test\0" + PASSWORD.encode()).decode(),
)
#: the network is closed here: nothing of Chromium's own may try to reach out
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _missing() -> str | None:
    for binary, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(binary) is None:
            return f"{binary} is missing (Debian package '{package}'; scripts/test installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing (a test extra: pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        _unavailable(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mailrun-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A suite with passes (the sandbox, TLS and AUTH with the password), a failure whose reply
    carries markup and a script, and an error (a refused port), in JSON and HTML."""
    d = tmp_path_factory.mktemp("browser")
    evil = b"550 <script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>\r\n"
    with Server(scripted(b"220 hi\r\n", {b"NOOP": evil, b"QUIT": b"221 bye\r\n"})) as srv:
        smtp_scenario(d / "s" / "evil.yaml", "hostile reply", srv.port)
        write(
            d / "s" / "refused.yaml",
            "name: refused\nprotocol: smtp\nconnect: {host: 127.0.0.1, port: 1, timeout: 2}\nsteps:\n  - S: 220\n",
        )
        live = mailrun(d / "s", "--report", f"json={d / 'hostile.json'}")
    assert live.returncode == 3, live.stdout + live.stderr
    res = mailrun(
        "--sandbox",
        "scenarios/sandbox_send.yaml",
        "scenarios/sandbox_receive.yaml",
        "scenarios/smtp_probe.yaml",
        "--report",
        f"json={d / 'sandbox.json'}",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # the page is the merge of both runs' reports, so the merged HTML is what is tested
    res = mailrun(
        "report",
        "merge",
        d / "hostile.json",
        d / "sandbox.json",
        "--report",
        f"html={d / 'r.html'}",
        "--report",
        f"json={d / 'r.json'}",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return d / "r.html", report(d / "r.json")


@pytest.fixture(scope="module")
def loaded(browser, reports):
    page, doc = reports
    browser.get_log("browser")  # (drop anything from before)
    browser.get(page.resolve().as_uri())
    browser.find_element("id", "summary")
    return browser, doc


def _visible_sections(driver) -> list:
    return [s for s in driver.find_elements("css selector", "section.scenario") if s.is_displayed()]


def test_the_page_loads_with_no_console_error_and_fetches_nothing(loaded):
    driver, _ = loaded
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "ERROR")] == [], logs
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources == []
    assert driver.execute_script("return document.title").startswith("mailrun report: 3 of 5 passed")


def test_the_counts_at_the_top_are_the_json_reports(loaded):
    driver, doc = loaded
    shown = {
        el.get_attribute("data-count"): el.find_element("tag name", "dd").text
        for el in driver.find_elements("css selector", "#summary [data-count]")
    }
    assert shown == {k: str(v) for k, v in doc["summary"].items() if isinstance(v, int)}
    assert (doc["summary"]["passed"], doc["summary"]["failed"], doc["summary"]["error"]) == (3, 1, 1)


def test_the_filter_buttons_show_what_they_say(loaded):
    driver, doc = loaded
    by_status = {}
    for sc in doc["scenarios"]:
        by_status.setdefault(sc["status"], []).append(sc["display_name"])

    def click(name: str) -> list[str]:
        button = driver.find_element("css selector", f'#filters button[data-filter="{name}"]')
        button.click()
        assert button.get_attribute("aria-pressed") == "true"
        return [s.find_element("tag name", "h2").text for s in _visible_sections(driver)]

    assert click("failed") == by_status["failed"] + by_status["error"] == ["hostile reply", "refused"]
    assert sorted(click("passed")) == sorted(by_status["passed"]) and len(by_status["passed"]) == 3
    assert click("skipped") == []
    assert len(click("all")) == len(doc["scenarios"]) == 5
    pressed = driver.find_elements("css selector", '#filters button[aria-pressed="true"]')
    assert [b.get_attribute("data-filter") for b in pressed] == ["all"]


def test_a_failure_is_open_and_shows_expected_and_received_as_text(loaded):
    driver, _ = loaded
    section = next(
        s
        for s in driver.find_elements("css selector", "section.scenario")
        if s.find_element("tag name", "h2").text == "hostile reply"
    )
    assert section.find_element("css selector", "details.run").get_attribute("open") is not None
    problem = section.find_element("css selector", ".problem")
    assert problem.is_displayed()
    assert "expected\n250" in problem.text
    assert "<script>window.__pwned = 1</script><img src=x" in problem.text
    assert driver.execute_script("return window.__pwned === undefined")  # nothing ran
    assert driver.find_elements("css selector", "main img, main script") == []
    # collapse all / expand all fold every section
    driver.find_element("id", "collapse").click()
    assert not problem.is_displayed()
    driver.find_element("id", "expand").click()
    assert problem.is_displayed()


def test_no_secret_is_in_the_dom(loaded):
    driver, _ = loaded
    dom = driver.execute_script("return document.documentElement.outerHTML")
    driver.find_element("id", "expand").click()
    for el in driver.find_elements("css selector", "details.wire"):
        driver.execute_script("arguments[0].open = true", el)
    text = driver.execute_script("return document.body.innerText")
    assert "AUTH LOGIN" in text and "decoded: Password:" in text and "****" in text
    for secret in SECRETS:
        assert secret not in dom and secret not in text
