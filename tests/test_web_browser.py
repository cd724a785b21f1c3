"""hwsim's web page in a real browser: a person clicks, types, swipes and breaks things.

Debian's Chromium, driven by Playwright (tests/browser.py), opens the page of a
simulator that the real firmware is running against (tests/rig.py). The tests
click keys and cards, type on the computer keyboard, inject faults with the
page's buttons, and check what the page shows against what the simulator's
models hold. Screenshots go to test-artifacts/web/ (POSTERM_ARTIFACTS to move
it), with the key-to-display times the page measured.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from hwsim.receipt_image import PAPER_WIDTH
from tests.browser import find_chromium, launch
from tests.rig import ROOT, Rig

pytestmark = pytest.mark.xdist_group("browser")  # one browser at a time, on one worker

CHROMIUM, WHY_NOT = find_chromium()
try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError as exc:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]
    WHY_NOT = WHY_NOT or f"the Python package playwright is not installed ({exc})"

ARTIFACTS = pathlib.Path(os.environ.get("POSTERM_ARTIFACTS", ROOT / "test-artifacts")) / "web"
CARD = "4761739001010010"
MASKED = "476173******0010"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or sync_playwright is None:
        pytest.skip(f"browser tests need a browser: {WHY_NOT}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = launch(playwright, CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def rig(tmp_path: pathlib.Path) -> Iterator[Rig]:
    # the battery gauge read every second, so the firmware sees a change made on the page soon
    with Rig(tmp_path, web=True, overrides={"battery": {"interval": 1.0}}) as rig:
        rig.start()
        yield rig


@pytest.fixture
def page(browser: Any, rig: Rig) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    rig.wait_online()
    page.goto(rig.web_url)
    expect(page.locator("#conn")).to_contain_text("connected")
    # the idle screen once it has settled (path, then battery come in after start)
    expect(page.locator("#display")).to_contain_text("BAT 87%")
    yield page
    context.close()
    assert problems == [], problems


def display(page: Page) -> list[str]:
    return [page.locator("#display .row").nth(i).text_content() or "" for i in range(4)]


def shot(page: Page, name: str) -> pathlib.Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_a_sale_by_clicks_shows_on_the_display_and_prints_a_receipt(page: Page,
                                                                    rig: Rig) -> None:
    # the banner says what this is
    expect(page.locator("body")).to_contain_text("SIMULATOR")
    rows = display(page)
    assert rows == rig.hw.display()  # the glass, spaces and all
    assert all(len(r) == 20 for r in rows), rows
    assert page.locator("#display").get_attribute("data-backlight") == "on"
    # each key, then its screen: the page times each one
    for key, screen in (("1", "EUR 0.01"), ("2", "EUR 0.12"), ("5", "EUR 1.25"),
                        ("0", "EUR 12.50"), ("OK", "SWIPE CARD")):
        page.click(f'[data-key="{key}"]')
        expect(page.locator("#display")).to_contain_text(screen)
    page.click(f'#card-slot [data-pan="{CARD}"]')
    expect(page.locator("#display")).to_contain_text("APPROVED", timeout=15_000)
    # the paper roll: receipt 1 as the printer model decoded it, drawn as an image
    receipt = page.locator("#paper img.receipt").first
    expect(receipt).to_have_attribute("src", "/receipts/1.png", timeout=15_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=receipt.element_handle())
    assert receipt.evaluate("img => img.naturalWidth") == PAPER_WIDTH
    save = page.locator("#paper a.save-png").first
    assert save.get_attribute("href") == "/receipts/1.png"
    assert save.get_attribute("download") == "receipt-1.png"
    with page.expect_download() as download:
        save.click()
    saved = ARTIFACTS / "receipt-1.png"
    download.value.save_as(saved)
    styled = rig.hw.request("receipts", styled=True)["lines"][0]
    from hwsim.receipt_image import receipt_png
    assert saved.read_bytes() == receipt_png(styled, cut=True)
    # the host panel: the ledger and the wire, card number masked
    expect(page.locator("#ledger")).to_contain_text(MASKED)
    expect(page.locator("#ledger")).to_contain_text("12.50")
    expect(page.locator("#wire")).to_contain_text("0210")
    expect(page.locator("#led")).to_have_class(_has("on"))
    rows = display(page)
    assert any("APPROVED" in r for r in rows) or any("ENTER AMOUNT" in r for r in rows)
    shot(page, "sale")
    latencies = page.evaluate("window.hwsimPage.latencies")
    assert len(latencies) >= 5 and all(0 < ms < 5000 for ms in latencies), latencies
    (ARTIFACTS / "key-to-display-ms.json").write_text(json.dumps(latencies) + "\n")


def test_a_timeout_injected_with_a_click_shows_no_response_not_charged(page: Page,
                                                                       rig: Rig) -> None:
    page.click('[data-fault="swallow"]')
    pending = page.locator('#host-faults li[data-kind="swallow"]')
    expect(pending).to_have_count(1)  # listed from the simulator's state: it was added
    assert _pending(rig) == ["swallow"]
    # keyed on the computer's keyboard this time
    page.locator("body").click(position={"x": 5, "y": 5})
    for key in ("5", "0", "0", "Enter"):
        page.keyboard.press(key)
    expect(page.locator("#display")).to_contain_text("SWIPE CARD")
    page.click(f'#card-slot [data-pan="{CARD}"]')
    expect(page.locator("#display")).to_contain_text("NO RESPONSE", timeout=20_000)
    expect(page.locator("#display")).to_contain_text("NOT CHARGED")
    shot(page, "timeout")
    expect(page.locator("#wire")).to_contain_text("swallowed")
    expect(page.locator("#ledger")).to_contain_text("reversed", timeout=20_000)
    expect(pending).to_have_count(0)
    assert _pending(rig) == []
    assert not any(e["charged"] for e in rig.hw.ledger())


def test_switches_on_the_page_drive_the_simulated_hardware(page: Page, rig: Rig) -> None:
    page.click("#power-switch")
    expect(page.locator("#display")).to_contain_text("MAINS POWER LOST", timeout=10_000)
    assert rig.hw.request("power")["mains"] is False
    shot(page, "mains-lost")
    page.click("#power-switch")
    expect(page.locator("#display")).to_contain_text("ENTER AMOUNT", timeout=10_000)
    assert rig.hw.request("power")["mains"] is True
    # the battery slider: the gauge model changes, the firmware reads it and stops sales
    page.locator("#battery-range").fill("7")
    expect(page.locator("#mini-battery-text")).to_have_text("7%")
    assert round(rig.hw.request("battery")["percent"]) == 7
    expect(page.locator("#display")).to_contain_text("BATTERY LOW", timeout=15_000)
    shot(page, "battery-low")
    # a change made elsewhere (hwsim ctl) shows on the page too
    rig.hw.request("battery", percent=50)
    expect(page.locator("#mini-battery-text")).to_have_text("50%")
    expect(page.locator("#display")).to_contain_text("ENTER AMOUNT", timeout=15_000)


def test_a_raw_reader_line_typed_in_the_card_slot_shows_nowhere_else(page: Page) -> None:
    pan = "4539999977777775"  # valid check digit, not a test card
    page.keyboard.type("740")
    page.keyboard.press("Enter")
    expect(page.locator("#display")).to_contain_text("SWIPE CARD")
    page.fill("#raw-line", f"%B{pan}^TESTER/PAGE^2909101000000000000?;{pan}=2909101000000?")
    page.click("#raw-swipe")
    expect(page.locator("#display")).to_contain_text("APPROVED", timeout=15_000)
    expect(page.locator("#ledger")).to_contain_text(pan[:6] + "******" + pan[-4:])
    assert page.input_value("#raw-line") == ""
    outside = page.evaluate("""() => {
        const copy = document.body.cloneNode(true);
        copy.querySelector('#card-slot')?.remove();
        return copy.textContent + ' ' + copy.innerHTML;
    }""")
    assert pan not in outside and "TESTER/PAGE" not in outside and "=2909" not in outside


def _pending(rig: Rig) -> list[str]:
    """The kinds of the host faults still pending, from the simulator itself."""
    return [f["kind"] for f in rig.hw.request("host_faults")["faults"]]


def _has(name: str) -> Any:
    import re

    return re.compile(rf"(^|\s){name}(\s|$)")
