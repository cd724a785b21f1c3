"""The fleet console's page in a real browser: alerts first, a terminal's events, a command.

`posterm-fleet serve` runs in its own process against a Mosquitto started by the test,
fake terminals publish as docs/fleet.md says (tests/test_fleet_console.py), and
Debian's Chromium (Playwright pointed at it: tests/browser.py) opens the page. Skips
cleanly without the broker or the browser. Screenshots go to test-artifacts/fleet/.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import pytest

from tests.browser import find_chromium
from tests.test_web_browser import browser  # noqa: F401  (the fixture)
from tests.test_fleet_console import (  # noqa: F401  (mosquitto, terminals: the fixtures)
    WAIT,
    Mosquitto,
    facts,
    mosquitto,
    run_cli,
    serving,
    terminals,
)

pytestmark = pytest.mark.xdist_group("browser")  # one browser at a time, on one worker

CHROMIUM, WHY_NOT = find_chromium()
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError as exc:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]
    WHY_NOT = WHY_NOT or f"the Python package playwright is not installed ({exc})"

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARTIFACTS = pathlib.Path(os.environ.get("POSTERM_ARTIFACTS", ROOT / "test-artifacts")) / "fleet"


def test_the_page_lists_alerts_first_shows_events_and_sends_commands(
        browser: Any, tmp_path: pathlib.Path, mosquitto: Mosquitto,  # noqa: F811
        terminals: Any) -> None:  # noqa: F811
    from cryptography.hazmat.primitives import serialization

    assert run_cli("keygen", str(tmp_path / "keys")).returncode == 0
    public = serialization.load_pem_public_key((tmp_path / "keys" / "fleet-key.pub").read_bytes())
    db = tmp_path / "fleet.db"
    with serving(db, mosquitto.port, "--key", str(tmp_path / "keys" / "fleet-key.pem")) as url:
        fine = terminals("T0000001", version="0.3.0", public=public)
        fine.telemetry(**facts(version="0.3.0"))
        for seq in (1, 2):
            fine.event(seq, "sale", sale_id=seq, kind="purchase", amount=250, status="approved",
                       entry="swipe")
        paper = terminals("T0000009", version="0.3.0", public=public)
        paper.telemetry(**facts(printer="PAPER OUT", version="0.3.0"))
        behind = terminals("T0000005", version="0.2.0", public=public)
        behind.telemetry(**facts(version="0.2.0"))
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page: Page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: d.accept())  # restart asks "restart on T...?"
        page.goto(url)
        # the table: alerts first (the most urgent first), then the rest by id
        rows = page.locator("#fleet tbody tr")
        expect(page.locator("#summary")).to_contain_text("3 terminals, 2 with alerts",
                                                         timeout=WAIT * 1000)
        expect(rows).to_have_count(3)
        assert [rows.nth(i).get_attribute("data-tid") for i in range(3)] == \
            ["T0000009", "T0000005", "T0000001"]
        expect(rows.nth(0)).to_contain_text("paper out")
        expect(rows.nth(1)).to_contain_text("version 0.2.0, newest 0.3.0")
        expect(rows.nth(2).locator(".badge")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "fleet.png"), full_page=True)
        # a click: the terminal's detail and its events
        page.click('#fleet tr[data-tid="T0000001"]')
        expect(page.locator("#detail-tid")).to_have_text("T0000001")
        events = page.locator("#events tbody tr")
        expect(events).to_have_count(2)
        assert events.nth(0).get_attribute("data-seq") == "2"
        expect(events.nth(1)).to_contain_text('"amount":250')
        expect(page.locator("#events-note")).to_contain_text("2 events kept, last seq 2")
        # a command: sent, and its reply shown
        page.click('.commands button[data-cmd="ping"]')
        reply = page.locator("#reply")
        expect(reply).to_have_attribute("data-state", "replied", timeout=WAIT * 1000)
        expect(reply).to_contain_text('"pong": "T0000001"')
        # a dangerous one: signed by the console's key, checked by the terminal
        page.click('.commands button[data-cmd="restart"]')
        expect(reply).to_contain_text("restart →", timeout=WAIT * 1000)
        expect(reply).to_contain_text('"ok": true')
        restart = next(c for c in fine.commands if c["cmd"] == "restart")
        assert "sig" in restart and reply.get_attribute("data-id") == restart["id"]
        # an argument the console refuses is told, and nothing is sent
        page.fill("#logs-lines", "0")
        page.click('.commands button[data-cmd="logs"]')
        expect(reply).to_have_attribute("data-state", "refused")
        expect(reply).to_contain_text("lines must be")
        assert not [c for c in fine.commands if c["cmd"] == "logs"]
        # the sent commands with their replies, in the detail
        expect(page.locator("#commands tbody tr")).to_have_count(2, timeout=WAIT * 1000)
        expect(page.locator("#commands tbody")).to_contain_text("pong")
        page.screenshot(path=str(ARTIFACTS / "terminal.png"), full_page=True)
        # only alerts
        page.check("#only-alerts")
        expect(rows).to_have_count(2)
        context.close()
        # the one error: the browser's note of the refused command's 400
        assert problems == ["console error: Failed to load resource: the server responded "
                            "with a status of 400 (Bad Request)"], problems
    stored = json.loads(run_cli("list", "--db", str(db), "--json").stdout)
    assert stored["alerting"] == 2
