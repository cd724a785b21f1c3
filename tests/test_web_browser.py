"""hwsim's web page in a real browser: a person clicks, types, swipes and breaks things.

Debian's Chromium, driven by Playwright (tests/browser.py), opens the page of a
simulator that the real firmware is running against (tests/rig.py). The tests
click keys and cards, type on the computer keyboard, inject faults with the
page's buttons, and check what the page shows against what the simulator's
models hold. Screenshots go to test-artifacts/web/ (POSTERM_ARTIFACTS to move
it), with the key-to-display times the page measured.

The chip card tests also need the chip reader's rig (tests/chiprig.py: root, pcscd,
vpcd): the page's chip slot puts hwsim's test chip cards into vpcd's reader, which the
firmware reads through its own pcscd. Without it they skip and say how to get it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from hwsim.receipt_image import PAPER_WIDTH
from tests.browser import find_chromium, launch
from tests.chiprig import Pcscd, pcsc  # noqa: F401  (the fixture)
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
def chip_rig(tmp_path: pathlib.Path, pcsc: Pcscd) -> Iterator[Rig]:  # noqa: F811
    # hwsim's chip slot plugs into the private pcscd's vpcd reader, the firmware reads it
    with Rig(tmp_path, web=True, pcsc=pcsc) as rig:
        rig.start()
        yield rig


@contextlib.contextmanager
def _opened(browser: Any, rig: Rig) -> Iterator[Page]:
    """The page of `rig`'s simulator in a new browser context, once it shows the settled
    idle screen; no console error nor page error while it was open."""
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


@pytest.fixture
def page(browser: Any, rig: Rig) -> Iterator[Page]:
    with _opened(browser, rig) as page:
        yield page


@pytest.fixture
def chip_page(browser: Any, chip_rig: Rig) -> Iterator[Page]:
    with _opened(browser, chip_rig) as page:
        yield page


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


def _key_amount(page: Page, keys: str, shown: str) -> None:
    for key in keys:
        page.click(f'[data-key="{key}"]')
    expect(page.locator("#display")).to_contain_text(shown)
    page.click('[data-key="OK"]')
    expect(page.locator("#display")).to_contain_text("SWIPE OR INSERT CARD")


def _record_screens(page: Page) -> None:
    """From now on the page keeps each screen its display shows (rows joined by |), so a
    screen that lasts less than a look is still seen: window.shownScreens."""
    page.evaluate("""() => {
        const display = document.querySelector('#display');
        const rows = () => Array.from(display.querySelectorAll('.row'),
                                      r => r.textContent).join('|');
        window.shownScreens = [rows()];
        new MutationObserver(() => {
            const now = rows();
            if (window.shownScreens[window.shownScreens.length - 1] !== now) {
                window.shownScreens.push(now);
            }
        }).observe(display, {subtree: true, childList: true, characterData: true});
    }""")


def _screens(page: Page) -> list[str]:
    return [str(s) for s in page.evaluate("window.shownScreens")]


def _slot_card(rig: Rig) -> Any:
    """The card in hwsim's chip slot, as its status says (None: empty)."""
    return rig.hw.chip_cards()["slot"]["card"]


def test_a_chip_card_inserted_from_the_page_is_read_approved_and_removed(
        chip_page: Page, chip_rig: Rig) -> None:
    page, rig = chip_page, chip_rig
    slot = page.locator("#chip-slot")
    expect(slot).to_be_visible()
    expect(page.locator("#chip-state")).to_have_text("empty")
    expect(page.locator("#chip-remove")).to_be_disabled()
    # the terminal offers the chip: SWIPE OR INSERT CARD
    _key_amount(page, "2000", "EUR 20.00")
    # the profile chosen in the select, what it is meant for shown under it
    page.select_option("#chip-profile", "online-pin")
    expect(page.locator("#chip-profile-about")).to_contain_text("4761739001010218")
    _record_screens(page)
    page.click("#chip-insert")
    # the slot, from hwsim's status: the card is in
    expect(page.locator("#chip-state")).to_have_text("online-pin inserted")
    expect(page.locator("#chip-insert")).to_be_disabled()
    expect(page.locator("#chip-remove")).to_be_enabled()
    assert _slot_card(rig) == "online-pin"
    # the chip at work, then the result with REMOVE CARD while the card is in
    expect(page.locator("#display")).to_contain_text("APPROVED", timeout=30_000)
    expect(page.locator("#display .row").nth(3)).to_have_text(re.compile(r"^REMOVE CARD"))
    screens = _screens(page)
    assert any("PLEASE WAIT" in s and "DO NOT REMOVE CARD" in s for s in screens), screens
    assert display(page) == rig.hw.display()
    # the chip receipt on the paper roll, the host's ledger with the card masked
    expect(page.locator("#paper img.receipt").first).to_have_attribute(
        "src", "/receipts/1.png", timeout=15_000)
    receipt = rig.wait_receipts(1)[-1]
    for word in ("CHIP", "F0000000011010", "TC", "SIGNATURE"):
        assert word in receipt, receipt
    expect(page.locator("#ledger")).to_contain_text("476173******0218")
    expect(page.locator("#ledger")).to_contain_text("20.00")
    outside = page.evaluate("""() => {
        const copy = document.body.cloneNode(true);
        copy.querySelector('#card-slot')?.remove();
        return copy.textContent + ' ' + copy.innerHTML;
    }""")
    assert "4761739001010218" not in outside  # the full number only in the card slot
    shot(page, "chip-approved")
    # taken out from the page: the slot is empty, the terminal back to idle
    page.click("#chip-remove")
    expect(page.locator("#chip-state")).to_have_text("empty")
    expect(page.locator("#chip-insert")).to_be_enabled()
    assert _slot_card(rig) is None
    expect(page.locator("#display")).to_contain_text("ENTER AMOUNT", timeout=15_000)
    ledger = rig.hw.ledger()
    assert len(ledger) == 1 and ledger[0]["charged"] and ledger[0]["amount"] == 2000, ledger
    assert str(ledger[0].get("entry_mode", "")).startswith("05"), ledger


def test_the_cardholder_chooses_the_application_with_the_pages_keys(
        chip_page: Page, chip_rig: Rig) -> None:
    page, rig = chip_page, chip_rig
    _key_amount(page, "1500", "EUR 15.00")
    page.select_option("#chip-profile", "no-pse")
    page.click("#chip-insert")
    expect(page.locator("#chip-state")).to_have_text("no-pse inserted")
    expect(page.locator("#display")).to_contain_text("SELECT 1-2", timeout=20_000)
    shot(page, "chip-choose")
    page.click('[data-key="2"]')
    expect(page.locator("#display")).to_contain_text("APPROVED", timeout=30_000)
    assert "F0000000012010" in rig.wait_receipts(1)[-1]
    page.click("#chip-remove")
    expect(page.locator("#chip-state")).to_have_text("empty")
    expect(page.locator("#display")).to_contain_text("ENTER AMOUNT", timeout=15_000)


def _pending(rig: Rig) -> list[str]:
    """The kinds of the host faults still pending, from the simulator itself."""
    return [f["kind"] for f in rig.hw.request("host_faults")["faults"]]


def _has(name: str) -> Any:
    import re

    return re.compile(rf"(^|\s){name}(\s|$)")
