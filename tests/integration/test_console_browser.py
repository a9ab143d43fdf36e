"""The console in a real headless browser, against a real broker and pipeline.

A `stormwatch gateway` process (bearer token) in front of `stormwatch ingest` and
`stormwatch correlate`; Debian's Chromium, driven by selenium through Debian's chromedriver
(nothing is downloaded: both paths are given, so Selenium Manager is never asked). The tests sign
in, open the incident list and an incident, acknowledge it and watch the timeline change without a
reload, create a silence from the matcher preview and see the alerts marked, and check that an
alert carrying HTML and script renders as inert text.

Screenshots go to the test's tmp dir; with STORMWATCH_UPDATE_SCREENSHOTS=1 they also replace
docs/images/console-*.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.pipeline import PipelineRun
from tests.kit.ports import free_port
from tests.kit.waits import wait_for

CHROMIUM = os.environ.get("STORMWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("STORMWATCH_CHROMEDRIVER", "/usr/bin/chromedriver")

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])"
)
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
        reason=f"no headless browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
        "(apt-get install chromium chromium-driver; `make test` installs them as root)",
    ),
]

TOKEN = "console-token-0123456789"
RULES = """
defaults: {group_wait: 1s, group_interval: 2s, resolve_timeout: 10m, reopen_window: 5s, close_after: 5s}
allowed_lateness: 100ms
state_time_resolution: 1s
"""
ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = """
workflows:
  - name: restart-console
    trigger: {events: [opened]}
    conditions: {match: ['alertname="ConsoleApprove"']}
    steps:
      - name: restart
        action: log
        target: "{{ labels.service }}"
        params: {message: "restart {{ labels.service }}"}
        approval: required
        approval_ttl: 10m
"""
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


class Stack:
    def __init__(self, run: PipelineRun, workdir: Path) -> None:
        self.run = run
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token_file = workdir / "token"
        token_file.write_text(TOKEN)
        run.start_gateway(token_file, self.port)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None

    def post_alerts(self, run_id: str, name: str, count: int, **extra: str) -> None:
        alerts = [
            {
                "labels": {"alertname": name, "run": run_id, "instance": f"i{i}", **extra},
                "annotations": {
                    "summary": f"{name} on i{i}",
                    **({"description": extra["payload"]} if "payload" in extra else {}),
                },
            }
            for i in range(count)
        ]
        self.api("POST", "/api/v2/alerts", alerts)

    def incident_of(self, run_id: str, name: str) -> str:
        """The incident the alerts of ``name`` in this run joined (from the audit log)."""

        def probe() -> str | None:
            self.run.assert_alive()
            for event in self.run.events():
                for change in event.alerts:
                    labels = change.labels or {}
                    if labels.get("run") == run_id and labels.get("alertname") == name:
                        return event.incident_id
            return None

        return wait_for(f"an incident for {name}", probe, 60, interval_s=1.0)


def _warnings(stack: Stack, *workers: str) -> str:
    """The last warnings and errors the workers logged: what a failed wait shows (a CI run's
    temporary directories are gone when its log is read)."""
    out = []
    for name in workers:
        lines = stack.run.workers.logs[name].read_text(errors="replace").splitlines()
        noted = [line[:300] for line in lines if '"WARNING"' in line or '"ERROR"' in line][-10:]
        out.append(f"{name} warnings and errors (last 10): " + ("\n  ".join(["", *noted]) or " none"))
    return "\n".join(out)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("console")
    run = PipelineRun(kafka_bootstrap, workdir, rules=RULES, partitions=2)
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    workflows = workdir / "workflows.yaml"
    workflows.write_text(WORKFLOWS)
    agent = [sys.executable, "-m", "stormwatch.cli", "--config", str(run.config_path), "agent"]
    run.workers.start("agent:a1", [*agent, "--workflows", str(workflows)], workdir / "agent.log")
    try:
        stack = Stack(run, workdir)

        def ready() -> bool | None:
            run.assert_alive()
            try:
                body = stack.api("GET", "/api/v2/status")
            except OSError:
                return None
            return body["cluster"]["status"] == "ready" or None

        wait_for("the gateway's read model to catch up", ready, 60, interval_s=0.5)
        yield stack
    finally:
        run.stop_all()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"console-{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("STORMWATCH_UPDATE_SCREENSHOTS") == "1":
        images = ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, images / path.name)


def sign_in(driver: WebDriver, stack: Stack, name: str = "alice") -> None:
    driver.get(f"{stack.url}/console/")
    if "Sign in" not in driver.title:
        return
    driver.find_element(By.NAME, "token").send_keys(TOKEN)
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(driver, 10).until(lambda d: "Incidents" in d.title)


def wait_css(driver: WebDriver, css: str, timeout_s: float = 30) -> Any:
    return WebDriverWait(driver, timeout_s).until(lambda d: d.find_elements(By.CSS_SELECTOR, css) or None)


def click(driver: WebDriver, css: str) -> None:
    """Click ``css``, found afresh: a live update may replace the element between find and click."""
    WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True
    )


def gone(element: Any) -> Any:
    """A wait condition: ``element``'s page was replaced. Chromedriver reports a node of a page
    being replaced either as stale or as not belonging to the document (seen in CI), where
    selenium's ``staleness_of`` takes only the first."""

    def check(_driver: WebDriver) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


def text_of(driver: WebDriver, css: str) -> str:
    found: str = WebDriverWait(driver, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, css).text
    )
    return found


def test_list_incident_ack_live_and_silence_from_preview(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    run_id = uuid.uuid4().hex[:8]
    stack.post_alerts(run_id, "ConsoleDown", 3)
    incident_id = stack.incident_of(run_id, "ConsoleDown")

    sign_in(browser, stack)
    browser.get(f"{stack.url}/console/")
    wait_css(browser, f'tr[data-incident="{incident_id}"]')
    assert "open" in text_of(browser, f'tr[data-incident="{incident_id}"]')
    screenshot(browser, tmp_path, "incidents")

    click(browser, f'tr[data-incident="{incident_id}"] a')
    wait_css(browser, "#timeline-rows tr[data-type=opened]")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#incident-alerts tr[data-fingerprint]")) == 3
    wait_css(browser, "#live")  # the event stream is open
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "live").text.startswith(("live", "updated"))
    )

    # Acknowledge: the timeline gets the event through the event stream, not a reload.
    browser.execute_script("window.__not_reloaded = true;")
    click(browser, 'form[data-action="ack"] button')
    wait_css(browser, "#timeline-rows tr[data-type=acknowledged]", 30)
    assert browser.execute_script("return window.__not_reloaded;") is True
    assert "operator:alice" in text_of(browser, "#timeline-rows tr[data-type=acknowledged]")
    WebDriverWait(browser, 10).until(lambda d: "acknowledged" in text_of(d, "#facts"))

    # A silence from the preview: the preview lists the alerts it would mute, then they are marked.
    browser.get(f"{stack.url}/console/silences")
    browser.find_element(By.NAME, "matchers").send_keys(
        f'alertname="ConsoleDown"\nrun="{run_id}"\ninstance=~"i[01]"'
    )
    browser.find_element(By.NAME, "comment").send_keys("browser test")
    browser.find_element(By.ID, "preview-button").click()
    wait_css(browser, "#preview-alerts tr[data-fingerprint]")
    assert browser.find_element(By.CSS_SELECTOR, ".preview-count").get_attribute("data-count") == "2"
    screenshot(browser, tmp_path, "silences")
    browser.find_element(By.ID, "create-button").click()
    wait_css(browser, '#silences tr[data-state="active"]')

    browser.get(f"{stack.url}/console/incidents/{incident_id}")

    def marked(d: WebDriver) -> bool:
        return len(d.find_elements(By.CSS_SELECTOR, '#incident-alerts tr[data-state="suppressed"]')) == 2

    WebDriverWait(browser, 30).until(marked)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#incident-alerts .badge.silenced")) == 2
    screenshot(browser, tmp_path, "incident")  # acknowledged, two of its alerts silenced
    browser.get(f"{stack.url}/console/")
    wait_css(browser, f'tr[data-incident="{incident_id}"]')
    assert "silenced 2" in text_of(browser, f'tr[data-incident="{incident_id}"]')


def test_alert_with_html_and_script_renders_inert(stack: Stack, browser: WebDriver, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:8]
    stack.post_alerts(run_id, "ConsoleXss", 1, payload=XSS)
    incident_id = stack.incident_of(run_id, "ConsoleXss")
    sign_in(browser, stack)
    browser.get(f"{stack.url}/console/incidents/{incident_id}")
    wait_css(browser, "#incident-alerts tr[data-fingerprint]")
    # the markup shows as text, in the labels and the annotations
    cells = text_of(browser, "#incident-alerts")
    assert cells.count("<script>window.__xss=1</script>") == 2
    assert browser.execute_script("return window.__xss;") is None
    with pytest.raises(NoSuchElementException):
        browser.find_element(By.CSS_SELECTOR, "#incident-alerts img")
    browser.get(f"{stack.url}/console/")
    wait_css(browser, f'tr[data-incident="{incident_id}"]')
    assert browser.execute_script("return window.__xss;") is None
    screenshot(browser, tmp_path, "xss")


def test_approve_a_pending_step_and_see_the_overview(
    stack: Stack, browser: WebDriver, tmp_path: Path
) -> None:
    run_id = uuid.uuid4().hex[:8]
    stack.post_alerts(run_id, "ConsoleApprove", 2, service="payments")
    incident_id = stack.incident_of(run_id, "ConsoleApprove")
    sign_in(browser, stack)  # alice, as the module's other tests

    # The agent asks for an approval; the approvals page lists the step with its incident.
    browser.get(f"{stack.url}/console/approvals")
    row = '#approvals tr[data-status="awaiting_approval"]'

    def listed(d: WebDriver) -> bool:
        if d.find_elements(By.CSS_SELECTOR, row):
            return True
        d.refresh()  # the agent and the correlator are still at it: look again
        return False

    WebDriverWait(browser, 60, poll_frequency=1).until(listed)
    assert incident_id in text_of(browser, row) and "payments" in text_of(browser, row)
    screenshot(browser, tmp_path, "approvals")
    browser.find_element(
        By.CSS_SELECTOR, f'{row} form[data-decision="approve"] input[name="note"]'
    ).send_keys("go ahead")
    page = browser.find_element(By.TAG_NAME, "html")
    click(browser, f'{row} form[data-decision="approve"] button')
    # The form's answer (a redirect back here once the read model has the decision) is a page
    # load of its own: leaving before it lands would see it take the browser back (seen in CI).
    WebDriverWait(browser, 30).until(gone(page))

    # The answer is the agent's `approved`, recorded with the operator's name on the incident's steps.
    incident_page = f"{stack.url}/console/incidents/{incident_id}"
    browser.get(incident_page)

    seen = [""]

    def approved(d: WebDriver) -> bool:
        # A live update replaces the steps and the timeline while they are read: read them again.
        try:
            steps = d.find_elements(
                By.CSS_SELECTOR, '#steps tr[data-status="approved"], #steps tr[data-status="requested"]'
            )
            seen[0] = d.find_element(By.ID, "timeline-rows").text
        except StaleElementReferenceException:
            return False
        except NoSuchElementException:
            seen[0] = f"(no timeline on the page {d.title!r})"
            d.get(incident_page)
            return False
        if steps and "operator:alice" in seen[0]:
            return True
        d.get(incident_page)
        return False

    try:
        WebDriverWait(browser, 60, poll_frequency=1).until(approved)
    except TimeoutException:
        raise AssertionError(
            f"no approval by alice on the page {browser.title!r}; timeline:\n{seen[0]}\n"
            f"the audit log has {[e.type.value for e in stack.run.events() if e.incident_id == incident_id]}\n"
            f"{_warnings(stack, 'gateway:g1', 'agent:a1')}"
        ) from None
    assert "approved" in text_of(browser, "#timeline-rows")
    assert not browser.find_elements(By.CSS_SELECTOR, '#steps form[data-decision="approve"]')

    # Storm suppression at a glance: this module's incidents are in the last 15 minutes.
    browser.get(f"{stack.url}/console/overview?window=15m")
    wait_css(browser, '#overview [data-tile="incidents"]')
    assert int(text_of(browser, '#overview [data-tile="incidents"] .tile-value')) >= 1
    assert int(text_of(browser, '#overview [data-tile="notifications"] .tile-value').replace(",", "")) >= 2
    screenshot(browser, tmp_path, "overview")
