"""The web console in a real Chromium (Debian's), driven by Playwright, against a real node.

An operator watches the lanes, sees the quarantine, and breaks the glass to
read one record; a clinician reads a critical result, locks the workstation
and resumes with the PIN on the same patient. Text from messages that looks
like markup stays text. The session cookie is out of the page's reach, and a
call without the page's CSRF token is refused. Every look is in the log.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.auth import Role, Setting
from engine.core.mllp import MLLPDecoder
from engine.core.model import RecordAccessed
from engine.wal import OSFiles, iter_records
from tests.harness.helpers import hl7
from tests.harness.nats_server import nats_server
from tests.harness.node_process import NO_PID, exchange, http_node
from tests.harness.sessions import PASSWORD, PIN, add_user, register_workstation

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is installed by bin/test (dev extra)")

CHROMIUM = os.environ.get("VIGIL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (bin/test installs Debian's chromium; or set VIGIL_CHROMIUM)"
)
KEY = "GENHOSP|MRN77"
PID_XSS = 'PID|1||MRN77^^^GENHOSP^MR||<img src=x onerror="window.__xss=1">^Ann||19700101|F'
MSH = "MSH|^~\\&|{app}|GENHOSP|VIGIL|GENHOSP|20261124101500||{type}|{cid}|P|2.5.1"
FEED = [
    hl7(MSH.format(app="ADT", type="ADT^A01", cid="B1"), PID_XSS, "PV1|1|I|W1^101^A"),
    hl7(
        MSH.format(app="LAB", type="ORU^R01", cid="B2"),
        PID_XSS,
        "OBR|1|P1|F1|2823-3^K^LN|||20261124095500",
        "OBX|1|NM|2823-3^Potassium^LN||6.9|mmol/L|3.5-5.1|HH|||F|||20261124095500",
        "OBX|2|ST|8251-1^Note^LN||<script>window.__xss=2</script>||||||F",
        f"OBX|3|ST|48767-8^Comment^LN||{'N' * 400}||||||F",  # one long word: it wraps, never widens the page
    ),
    hl7(  # the potassium corrected: the record keeps both versions
        MSH.format(app="LAB", type="ORU^R01", cid="B3"),
        PID_XSS,
        "OBR|1|P1|F1|2823-3^K^LN|||20261124095500",
        "OBX|1|NM|2823-3^Potassium^LN||5.9|mmol/L|3.5-5.1|H|||C|||20261124095500",
    ),
    NO_PID,
]
_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture
def console(tmp_path: Path, pg_dsn: str, pg_schema: str) -> Iterator[tuple[str, Path, Any]]:
    """A node with HTTP and a read side (the worklist), the feed sent, three people, and a Chromium."""
    config = tmp_path / "http.toml"
    config.write_text(
        '[http]\nlisten = "127.0.0.1:0"\n'
        f'[projections]\ndsn_env = "VIGIL_TEST_NO_SUCH_VARIABLE"\ndsn = "{pg_dsn}"\nschema = "{pg_schema}"\n'
        '[alerts]\ninterval_s = 0.2\n[[alerts.quiet]]\nsender = "PHARM^GENHOSP"\nwithin_s = 0.5\n'  # never heard
    )
    data = tmp_path / "data"
    with http_node(data, config) as (_proc, mllp_port, http_port):
        add_user(data, "op.kim", Role.OPERATOR)
        add_user(data, "dr.osei", Role.CLINICIAN)
        add_user(data, "po.diaz", Role.PRIVACY_OFFICER)
        with socket.create_connection(("127.0.0.1", mllp_port), timeout=30) as conn:
            acks = [exchange(conn, m, MLLPDecoder()).split(b"\r")[1][:6] for m in FEED]
        assert acks == [b"MSA|AA", b"MSA|AA", b"MSA|AA", b"MSA|AR"]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
            try:
                yield f"http://127.0.0.1:{http_port}/console", data, browser
            finally:
                browser.close()


def _accesses(data: Path) -> list[RecordAccessed]:
    """The audit events in the log so far (read beside the live node, as `vigil log` does)."""
    return [
        e for r in iter_records(data / "wal", OSFiles()) for e in r.envelope.events if isinstance(e, RecordAccessed)
    ]


def _reload_until(page: Any, selector: str, timeout_s: float = 20.0) -> None:
    """Reload the view until `selector` is there: the read side projects what the log holds a moment later."""
    deadline = time.monotonic() + timeout_s
    while page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} did not appear"
        page.reload()
        page.wait_for_load_state("networkidle")


def _fits(page: Any) -> None:
    """The page needs no sideways scrolling at its screen's width (a ward workstation's 1366, a laptop's 1280)."""
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url}: {width[0]} px wide on a {width[1]} px screen"


def _sign_in(page: Any, url: str, user: str, setting: str, data: Path) -> None:
    """The sign-in page names its device; an administrator registers it with its setting (here straight into the
    store, as `vigil workstation register` does); the page, reloaded, says what its sessions will get."""
    page.goto(url)
    note = page.locator("#workstation")
    note.wait_for()
    device = note.text_content().rsplit("vigil workstation register ", 1)[1].split()[0]
    register_workstation(data, device, Setting(setting))
    page.reload()
    page.wait_for_selector(f"#workstation:has-text('({setting.replace('_', ' ')})')")
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("#login-go")


def test_an_operator_watches_the_lanes_and_breaks_the_glass_for_one_record(console: tuple[str, Path, Any]) -> None:
    url, data, browser = console
    page = browser.new_page(viewport={"width": 1280, "height": 800})  # a ward workstation's screen
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(page, url, "op.kim", "operator_console", data)
    lanes = page.locator("#lanes")
    lanes.wait_for()
    assert [lanes.locator("tr").nth(i).locator("td").first.text_content() for i in (1, 2, 3)] == [
        "critical",
        "standard",
        "batch",
    ]
    _fits(page)
    # The pharmacy's feed was never heard: the operator sees the alert on the status page (polled).
    page.wait_for_selector("#alerts >> text=PHARM^GENHOSP", timeout=20_000)
    assert "feed_quiet" in page.locator("#alerts").text_content()
    page.click("text=Quarantine")
    page.wait_for_selector("text=BAD1")
    _fits(page)
    assert "1 open" in page.locator("h1").text_content()

    page.fill("#find-key", KEY)
    page.click("text=Open record")
    page.wait_for_selector("#glass-open")
    assert "may not" in page.locator(".banner").text_content()
    page.click("#glass-open")
    page.select_option("#glass-reason", "message_investigation")
    page.fill("#glass-note", "ticket 4411: results not reaching the ward")
    page.fill("#glass-secret", PASSWORD)
    page.click("#glass-go")
    name = page.locator("#patient-name")
    name.wait_for()
    # The name came in a message: it is shown as the text it is, never run.
    assert name.text_content() == '<img src=x onerror="window.__xss=1">, Ann'
    assert page.locator("#results").text_content().count("<script>window.__xss=2</script>") == 2  # value, version
    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    _fits(page)

    accesses = [(e.user, e.action, e.outcome, e.reason) for e in _accesses(data)]
    assert ("op.kim", "break_glass", "allowed", "message_investigation") in accesses
    assert ("op.kim", "record", "allowed", "message_investigation") in accesses

    # The privacy officer sees the review, closes it, and sees who looked at the record.
    officer = browser.new_page(viewport={"width": 1366, "height": 768})
    _sign_in(officer, url, "po.diaz", "office", data)
    officer.locator("#lanes").wait_for()
    officer.click("text=Reviews")
    reviews = officer.locator("#reviews")
    reviews.wait_for()
    assert "ticket 4411" in reviews.text_content()
    _fits(officer)
    officer.click("#reviews >> text=appropriate")
    officer.wait_for_selector("text=0 open")
    officer.goto(f"{url}#/accesses/{KEY.replace('|', '%7C')}")
    who = officer.locator("#accesses")
    who.wait_for()
    assert "op.kim" in who.text_content()
    assert "message_investigation" in who.text_content()
    _fits(officer)


def test_a_clinician_locks_and_resumes_with_the_pin_on_the_same_patient(console: tuple[str, Path, Any]) -> None:
    url, data, browser = console
    context = browser.new_context(viewport={"width": 1366, "height": 768})  # a ward workstation
    page = context.new_page()
    page.clock.install()  # the page's own time, which the test moves on for the idle lock
    _sign_in(page, url, "dr.osei", "ward", data)
    page.locator("#lanes").wait_for()
    page.goto(f"{url}#/worklist")
    _reload_until(page, "#worklist >> text=Acknowledge")  # once the read side has it
    _fits(page)
    page.click("#worklist >> text=Acknowledge")
    _reload_until(page, "text=Critical results: 0 open")

    page.goto(f"{url}#/patient/{KEY.replace('|', '%7C')}")
    results = page.locator("#results")
    results.wait_for()
    row = results.locator("tr").nth(1)
    assert row.locator("td").nth(1).text_content() == "5.9"  # the corrected value, and both versions beside it
    versions = row.locator("td").nth(7).text_content()
    assert versions.startswith("6.9 F")
    assert "5.9 C" in versions
    assert "acknowledged by dr.osei" in row.text_content()
    _fits(page)
    page.fill("#known-at", "2020-01-01")  # before anything was known: an empty record
    page.click("#moment >> text=Show")
    page.wait_for_function("location.hash.includes('known_at=2020-01-01')")
    assert page.locator("#results tr").count() == 1  # the headings only
    page.goto(f"{url}#/patient/{KEY.replace('|', '%7C')}")
    results.locator("tr").nth(1).wait_for()

    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["vigil_session"]["httpOnly"] is True
    assert cookies["vigil_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # nothing the page's script (or an injected one) could read
    refused = page.evaluate(
        "fetch('/console/api/patient', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        f" body: JSON.stringify({{key: '{KEY}'}})}}).then(r => r.status)"
    )
    assert refused == 403  # the session cookie alone is not enough: the page's CSRF token is needed too

    page.click("#lock")
    page.locator("#pin-dialog[open]").wait_for()
    page.fill("#pin", "0000")
    page.click("#pin-go")
    page.wait_for_selector("text=wrong PIN")
    page.fill("#pin", PIN)
    page.click("#pin-go")
    page.locator("#pin-dialog").wait_for(state="hidden")
    page.locator("#results").wait_for()
    assert page.url.endswith(f"#/patient/{KEY.replace('|', '%7C')}")
    assert "5.9" in page.locator("#results").text_content()

    # Left idle for the ward's ten minutes (the page's clock, moved on; not a sleep), the screen locks itself:
    # the record is taken off it, and the PIN brings the clinician back to the same patient.
    page.clock.fast_forward("10:01")
    page.locator("#pin-dialog[open]").wait_for()
    assert "locked after being idle" in page.locator("#pin-why").text_content()
    assert page.locator("#results").count() == 0
    assert "Ann" not in page.locator("main").text_content()
    page.fill("#pin", PIN)
    page.click("#pin-go")
    page.locator("#results").wait_for()
    assert page.url.endswith(f"#/patient/{KEY.replace('|', '%7C')}")

    actions = [(e.user, e.action, e.outcome) for e in _accesses(data)]
    assert actions.count(("dr.osei", "lock", "allowed")) >= 2  # the button's, then the idle screen's
    assert ("dr.osei", "lock", "allowed") in actions
    assert ("dr.osei", "unlock", "denied") in actions
    assert ("dr.osei", "unlock", "allowed") in actions
    assert actions.count(("dr.osei", "record", "allowed")) >= 2


def test_an_operator_sees_each_partitions_owner_in_a_cluster(tmp_path: Path) -> None:
    """A cluster node's console shows its partitions: each one's owner and epoch, and which it serves."""
    config = tmp_path / "cluster.toml"
    config.write_text(
        '[http]\nlisten = "127.0.0.1:0"\n[cluster]\nreplicas = 1\nlease_ttl_s = 2.0\nrenew_interval_s = 0.4\n'
    )
    data = tmp_path / "data"
    with (
        nats_server(tmp_path / "nats") as url,
        http_node(data, config, "--nats", url, "--node-id", "node0") as (_proc, _mllp, http_port),
        playwright.sync_playwright() as p,
    ):
        add_user(data, "op.kim", Role.OPERATOR)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            page = browser.new_page()
            _sign_in(page, f"http://127.0.0.1:{http_port}/console", "op.kim", "operator_console", data)
            page.wait_for_selector("#partitions >> text=serving", timeout=30_000)
            deadline = time.monotonic() + 30
            while page.locator("#partitions >> text=serving").count() < 16:  # the node takes them one by one
                assert time.monotonic() < deadline, "the node never served every partition"
                page.wait_for_timeout(500)
            rows = page.locator("#partitions tr")
            assert rows.count() == 17  # the heading and 16 partitions
            assert [rows.nth(1).locator("td").nth(i).text_content() for i in (0, 1, 3)] == ["0", "node0", "serving"]
        finally:
            browser.close()
