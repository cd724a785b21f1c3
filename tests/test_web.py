"""hwsim's web page, server side: what the page is sent and what it may ask for.

The simulator and the firmware run as real processes (tests/rig.py) and the tests
talk to the page's server as a browser would: HTTP for the page and the receipt
images, a WebSocket for the live state and the requests. The browser itself is
in test_web_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from hwsim.control import StartError
from hwsim.hostproto import wire_view
from hwsim.receipt_image import receipt_png
from hwsim.web import is_loopback, parse_web_address
from tests.rig import Rig, _env

Frames = list[dict[str, Any]]


def luhn_pan(prefix: str, length: int = 16) -> str:
    """A card number with a valid check digit, not one of the test cards."""
    body = prefix.ljust(length - 1, "7")
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


class Page:
    """A WebSocket client of the page's server, keeping every frame it was sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: Frames = []
        self.raw: list[str] = []
        self._next_id = 0

    async def __aenter__(self) -> Page:
        self._session = aiohttp.ClientSession()
        origin = self.url.rstrip("/")
        self.ws = await self._session.ws_connect(self.url + "ws", headers={"Origin": origin})
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self._session.close()

    async def _read(self) -> None:
        async for msg in self.ws:
            self.raw.append(msg.data)
            self.frames.append(json.loads(msg.data))

    async def send(self, op: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        await self.ws.send_str(json.dumps({"id": ident, "op": op, **params}))
        return await self.wait(lambda f: f["type"] == "reply" and f["id"] == ident)

    async def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                   start: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames[start:]:
                if pred(frame):
                    return frame
            if time.monotonic() > deadline:
                raise AssertionError(f"no such frame within {timeout} s; last frames: "
                                     f"{self.frames[-5:]}")
            await asyncio.sleep(0.02)

    async def wait_display(self, text: str, timeout: float = 15.0) -> list[str]:
        frame = await self.wait(lambda f: f["type"] == "display"
                                and any(text in row for row in f["rows"]), timeout)
        return list(frame["rows"])

    def latest(self, kind: str) -> dict[str, Any]:
        return [f for f in self.frames if f["type"] == kind][-1]


@pytest.fixture
def rig(tmp_path: pathlib.Path):
    with Rig(tmp_path, web=True) as rig:
        rig.start()
        yield rig


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_page_is_served_on_loopback_and_says_it_is_a_simulator(rig: Rig) -> None:
    assert rig.web_url.startswith("http://127.0.0.1:")

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(rig.web_url) as r:
                assert r.status == 200
                page = await r.text()
                assert "SIMULATOR" in page
                csp = r.headers["Content-Security-Policy"]
                assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            for name in ("app.js", "style.css"):
                async with s.get(rig.web_url + "static/" + name) as r:
                    assert r.status == 200, name
            async with s.get(rig.web_url + "static/web.py") as r:
                assert r.status == 404
            async with s.get(rig.web_url + "static/..%2Fweb.py") as r:
                assert r.status == 404
    run(go())


def test_other_sites_can_neither_reach_the_page_nor_open_its_websocket(rig: Rig) -> None:
    port = rig.web_url.rsplit(":", 1)[1].rstrip("/")

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            # a DNS-rebinding page: the browser sends its own name as Host
            async with s.get(rig.web_url, headers={"Host": f"evil.example:{port}"}) as r:
                assert r.status == 421
            for headers in ({"Origin": "http://evil.example"}, {},
                            {"Origin": f"http://127.0.0.1:{int(port) + 1}"}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                    await s.ws_connect(rig.web_url + "ws", headers=headers)
                assert err.value.status == 403, headers
            async with s.get(f"http://localhost:{port}/") as r:
                assert r.status == 200
    run(go())
    rig.hw.wait_display("ENTER AMOUNT")  # nothing was pressed from outside


def test_the_page_may_ask_only_for_what_a_person_at_the_terminal_does(rig: Rig) -> None:
    async def go() -> None:
        async with Page(rig.web_url) as page:
            for op, params in (("i2c_write", {"bus": 1, "addr": 0x27, "data": [1]}),
                               ("gpio_output", {"pin": 24, "level": 0}),
                               ("info", {}), ("", {}), ("press", {"keys": "1"})):
                reply = await page.send(op, **params)
                assert reply["ok"] is False and reply["error"], op
            assert "not available from the page" in (await page.send("gpio_setup"))["error"]
            await page.ws.send_str("{not json")
            bad = await page.wait(lambda f: f["type"] == "reply" and f["id"] is None)
            assert bad["ok"] is False and "JSON" in bad["error"]
            reply = await page.send("swipe", raw="\u20ac")
            assert reply["ok"] is False and "Latin-1" in reply["error"]
    run(go())
    assert "ENTER AMOUNT" in " ".join(rig.hw.display())


def test_a_sale_driven_from_the_page(rig: Rig) -> None:
    async def go() -> dict[str, Any]:
        async with Page(rig.web_url) as page:
            hello = await page.wait(lambda f: f["type"] == "hello")
            assert hello["simulator"] is True and "swallow" in hello["fault_kinds"]
            assert {c["pan"] for c in hello["cards"]} >= {"4761739001010010"}
            await page.wait_display("ENTER AMOUNT")
            for key in "1250":
                assert (await page.send("press", keys=[key]))["ok"]
            await page.wait_display("EUR 12.50")
            await page.send("press", keys=["OK"])
            await page.wait_display("SWIPE CARD")
            await page.send("swipe", pan="4761739001010010")
            rows = await page.wait_display("APPROVED")
            assert any("EUR 12.50" in r for r in rows)
            paper = await page.wait(lambda f: f["type"] == "paper" and f["receipts"])
            receipt = paper["receipts"][0]
            assert receipt["index"] == 1 and receipt["url"] == "/receipts/1.png"
            assert "476173******0010" in receipt["text"] and "12.50" in receipt["text"]
            ledger = await page.wait(lambda f: f["type"] == "ledger" and f["entries"])
            assert ledger["charged_total"] == 1250
            assert ledger["entries"][0]["charged"] and ledger["entries"][0]["pan"] == \
                "476173******0010"
            wire = [e for f in page.frames if f["type"] == "wire" for e in f["events"]]
            asked = [e for e in wire if e["dir"] == "in" and e["fields"]["t"] == "0200"]
            answered = [e for e in wire if e["dir"] == "out" and e["fields"]["t"] == "0210"]
            assert asked and answered and answered[-1]["fields"]["39"] == "00"
            assert asked[-1]["fields"]["2"] == "476173******0010"
            assert asked[-1]["fields"]["35"].startswith("[")
            async with aiohttp.ClientSession() as s:
                async with s.get(rig.web_url + "receipts/1.png") as r:
                    assert r.status == 200 and r.content_type == "image/png"
                    png = await r.read()
                async with s.get(rig.web_url + "receipts/2.png") as r:
                    assert r.status == 404
            return {"png": png}
    got = run(go())
    lines = rig.hw.request("receipts", styled=True)["lines"]
    assert got["png"] == receipt_png(lines[0], cut=True)  # the same image as ctl --png


def test_changes_are_pushed_and_nothing_is_sent_while_nothing_changes(rig: Rig) -> None:
    rig.wait_online()
    deadline = time.monotonic() + 20
    while not rig.hw.request("modem_state")["net_open"]:  # the 4G path comes up by itself
        assert time.monotonic() < deadline, "the modem never opened its data session"
        time.sleep(0.05)

    async def go() -> None:
        async with Page(rig.web_url) as page:
            await page.wait(lambda f: f["type"] == "wire")  # the last of the first state
            await asyncio.sleep(1.5)
            settled = len(page.frames)
            await asyncio.sleep(2.0)
            assert page.frames[settled:] == []  # no polling chatter
            # a change made through the control socket, not the page, shows on the page
            start = len(page.frames)
            rig.hw.request("printer_fault", cover_open=True)
            status = await page.wait(lambda f: f["type"] == "status"
                                     and f["printer"]["cover_open"], start=start)
            assert status["mains"] is True
            rig.hw.request("battery", percent=50)
            await page.wait(lambda f: f["type"] == "status"
                            and f["battery"]["percent"] == 50)
            rig.hw.press("7")
            rows = await page.wait_display("EUR 0.07")
            assert rows == rig.hw.display()
            displays = [f for f in page.frames[start:] if f["type"] == "display"]
            assert len({json.dumps(f) for f in displays}) == len(displays)  # no repeats
    run(go())


def test_a_timeout_injected_from_the_page_shows_and_is_reversed(rig: Rig) -> None:
    async def go() -> None:
        async with Page(rig.web_url) as page:
            assert (await page.send("host_fault", kind="swallow", count=1, mti="0200"))["ok"]
            status = await page.wait(lambda f: f["type"] == "status"
                                     and f["host"]["faults"])
            assert status["host"]["faults"][0]["kind"] == "swallow"
            await page.send("press", keys=list("500") + ["OK"])
            await page.wait_display("SWIPE CARD")
            await page.send("swipe", pan="4761739001010010")
            rows = await page.wait_display("NO RESPONSE", timeout=30)
            assert any("NOT CHARGED" in r for r in rows)
            notes = await page.wait(lambda f: f["type"] == "wire" and any(
                "swallowed" in e.get("text", "") for e in f["events"]))
            assert notes
            await page.wait(lambda f: f["type"] == "ledger" and f["entries"]
                            and f["entries"][-1]["reversed"], timeout=30)
            await page.wait(lambda f: f["type"] == "status" and not f["host"]["faults"])
    run(go())
    entries = rig.hw.ledger()
    assert entries and not any(e["charged"] for e in entries)


def test_no_card_data_leaves_the_server_unmasked(rig: Rig) -> None:
    """Every byte the page is sent, through a sale with a card that is not a test card
    (so it is not in the card slot's list), a raw swipe and a bad read: the card number
    appears only masked, the track never."""
    pan = luhn_pan("45399999")
    track2 = f";{pan}=2909101000000000000?"
    raw = f"%B{pan}^TESTER/PAGE^2909101000000000000?{track2}\r"

    async def go() -> str:
        async with Page(rig.web_url) as page:
            await page.wait_display("ENTER AMOUNT")
            await page.send("press", keys=list("1999") + ["OK"])
            await page.wait_display("SWIPE CARD")
            await page.send("swipe", raw=raw)
            await page.wait_display("APPROVED")
            await page.wait(lambda f: f["type"] == "paper" and f["receipts"])
            await page.send("press", keys=list("250") + ["OK"])
            await page.wait_display("SWIPE CARD")
            await page.send("swipe", bad="partial")
            await asyncio.sleep(1.0)
            async with aiohttp.ClientSession() as s:
                pages = [await (await s.get(rig.web_url + p)).text()
                         for p in ("", "static/app.js", "static/style.css")]
        return "\n".join(page.raw + pages)

    sent = run(go())
    masked = pan[:6] + "*" * 6 + pan[-4:]
    assert masked in sent  # the sale happened and shows, masked
    assert pan not in sent
    assert "TESTER/PAGE" not in sent and "=2909" not in sent and "^2909" not in sent


def test_wire_view_masks_every_kind_of_card_data() -> None:
    pan = "4761739001010010"
    message = {"t": "0200", "2": pan, "3": "000000", "4": "000000001250", "14": "3012",
               "35": f"{pan}=3012101000", "45": f"B{pan}^NAME^3012101", "52": "A1B2C3D4E5F60718",
               "55": "9F2608AABBCCDDEEFF0011", "62": f"X{pan}Y", "63": "anything"}
    view = wire_view(message)
    text = json.dumps(view)
    assert pan not in text and "3012" not in text and "NAME" not in text
    assert view["2"] == "476173******0010"
    assert view["62"] == "X476173******0010Y"  # a PAN where none belongs is masked too
    for field in ("14", "35", "45", "52", "55", "63"):
        assert view[field] == f"[{len(message[field])} characters hidden]"
    assert view["3"] == "000000" and view["4"] == "000000001250" and view["t"] == "0200"


def test_web_address_parsing() -> None:
    assert parse_web_address("8580") == ("127.0.0.1", 8580)
    assert parse_web_address("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_web_address("[::1]:9000") == ("::1", 9000)
    assert parse_web_address(":0") == ("127.0.0.1", 0)
    for bad in ("", "web", "1.2.3.4:", "1.2.3.4:99999", "host:-1"):
        with pytest.raises(StartError, match="--web must be"):
            parse_web_address(bad)
    assert is_loopback("127.0.0.2") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_a_web_port_in_use_stops_hwsim_with_a_clear_message(tmp_path: pathlib.Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "hwsim", "run", "--dir", str(tmp_path / "sim"),
             "--web", f"127.0.0.1:{port}"],
            env=_env(), capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert done.returncode == 1
    assert f"cannot serve the web page on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "sim" / "hwsim.json").exists()
