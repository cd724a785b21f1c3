"""hwsim's web page, server side: what the page is sent and what it may ask for.

The simulator and the firmware run as real processes (tests/rig.py) and the tests
talk to the page's server as a browser would: HTTP for the page and the receipt
images, a WebSocket for the live state and the requests. The browser itself is
in test_web_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from hwsim.client import HwsimError
from hwsim.control import StartError
from hwsim.hostproto import wire_view
from hwsim.receipt_image import receipt_png
from hwsim.web import STATIC_FILES, is_loopback, parse_web_address
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
            assert {"main.js", "socket.js", "style.css"} <= set(STATIC_FILES)
            for name, kind in STATIC_FILES.items():  # every file of the page, ES modules too
                async with s.get(rig.web_url + "static/" + name) as r:
                    assert r.status == 200 and r.content_type == kind, name
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


def test_bound_to_every_address_it_still_refuses_names_that_could_be_rebound() -> None:
    from hwsim.web import WebUI

    ui = WebUI(sim=None, host="0.0.0.0", port=8580)  # type: ignore[arg-type]
    assert ui.url == "http://127.0.0.1:8580/"
    assert ui.host_allowed("192.168.1.20") and ui.host_allowed("::1")
    assert ui.host_allowed("localhost") and ui.host_allowed(socket.gethostname())
    assert not ui.host_allowed("evil.example") and not ui.host_allowed("127.0.0.1.nip.io")
    loop = WebUI(sim=None, host="127.0.0.1", port=8580)  # type: ignore[arg-type]
    assert loop.host_allowed("localhost") and not loop.host_allowed("192.168.1.20")


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
            assert hello["simulator"] is True
            kinds = {k["kind"]: k for k in hello["fault_kinds"]}
            assert "swallow" in kinds and kinds["busy"]["params"] == {"code": "91"}
            assert set(hello["ops"]) >= {"press", "swipe", "host_fault"}
            assert "i2c_write" not in hello["ops"]
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
            start = len(page.frames)
            assert (await page.send("host_fault", kind="swallow", count=1, mti="0200"))["ok"]
            status = await page.wait(lambda f: f["type"] == "status"
                                     and f["host"]["faults"], start=start)
            with_fault = page.frames.index(status)
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
            await page.wait(lambda f: f["type"] == "status" and not f["host"]["faults"],
                            start=with_fault + 1)
            assert rig.hw.request("host_faults")["faults"] == []
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
                         for p in ["", *(f"static/{name}" for name in STATIC_FILES)]]
        return "\n".join(page.raw + pages)

    sent = run(go())
    masked = pan[:6] + "*" * 6 + pan[-4:]
    assert masked in sent  # the sale happened and shows, masked
    assert pan not in sent
    assert "TESTER/PAGE" not in sent and "=2909" not in sent and "^2909" not in sent


def test_errors_never_echo_a_card_number_or_a_track(rig: Rig) -> None:
    """Every refusal quoting what it was given, from the page and from the control
    socket, and hwsim's log: a card number comes back masked, a track never."""
    pan = luhn_pan("45399999")
    track = f";{pan}=29091010000000?"
    bad_requests = [
        ("swipe", {"pan": int(pan)}), ("swipe", {"raw": [track]}), ("swipe", {"bad": track}),
        ("host_fault", {"kind": "busy", "code": pan}), ("host_fault", {"kind": track}),
        ("host_fault", {"kind": "delay", "seconds": pan}), ("modem", {pan: 1}),
        ("printer_fault", {track: True}), ("primary", {"action": track}),
        ("power", {"state": pan}), ("battery", {"percent": track}), (pan, {}),
    ]

    async def go() -> list[str]:
        async with Page(rig.web_url) as page:
            replies = [await page.send(op, **params) for op, params in bad_requests]
        return [json.dumps(r) for r in replies]

    from_page = run(go())
    from_socket = []
    for op, params in bad_requests:
        with pytest.raises(HwsimError) as err:
            rig.hw.request(op, **params)
        from_socket.append(str(err.value))
    for text in from_page + from_socket + [(rig.tmp / "hwsim.log").read_text()]:
        assert pan not in text and "=2909101" not in text, text[-400:]
    assert any(pan[:6] + "******" + pan[-4:] in t for t in from_page)


def test_numbers_json_does_not_allow_are_refused_everywhere(rig: Rig) -> None:
    async def go() -> None:
        async with Page(rig.web_url) as page:
            for text in ('{"id": 1, "op": "printer_fault", "slow_seconds": NaN}',
                         '{"id": 2, "op": "host_fault", "kind": "delay", "seconds": Infinity}',
                         '{"id": 3, "op": "battery", "rate": -Infinity}',
                         '{"id": 4, "op": ' + "[" * 10_000 + "]" * 10_000 + "}"):
                await page.ws.send_str(text)
            await page.ws.send_str(json.dumps({"id": 5, "op": ["press"]}))
            await page.wait(lambda f: f["type"] == "reply" and f["id"] == 5)
            errors = [f["error"] for f in page.frames if f["type"] == "reply"]
            assert len(errors) == 5 and all(errors), errors
            assert sum("is not a number JSON allows" in e for e in errors) == 3, errors
            assert "nested too deeply" in errors[3] and "not available" in errors[4]
            # the page is still served, and its state is valid JSON for a browser
            assert (await page.send("press", keys=["1"]))["ok"]
            await page.wait_display("EUR 0.01")
            assert all("NaN" not in raw and "Infinity" not in raw for raw in page.raw
                       if '"type":"reply"' not in raw)
    run(go())
    for request in ('{"op": "printer_fault", "slow_seconds": NaN}',
                    '{"op": "host_fault", "kind": "late", "seconds": 1e999}'):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(rig.sim_dir / "control.sock"))
        sock.sendall(request.encode() + b"\n")
        answer = json.loads(sock.makefile().readline())
        sock.close()
        assert answer["ok"] is False and ("JSON allows" in answer["error"]
                                          or "finite" in answer["error"]
                                          or "0 or more" in answer["error"]), answer
    state = rig.hw.request("printer_state")
    assert state["slow_seconds"] == 0.0


def test_a_page_that_reads_nothing_is_closed_and_costs_hwsim_nothing(rig: Rig) -> None:
    assert rig.sim is not None
    rss_before = _rss_kb(rig.sim.pid)
    long_op = "x" * 200  # each refusal lists the ops: some 400 bytes a reply

    # a client that never reads (a small receive buffer it never empties): its socket
    # fills, then hwsim's queue for it
    host, port = rig.web_url[len("http://"):].rstrip("/").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n\r\n"
                  ).encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert b" 101 " in answer.split(b"\r\n")[0]
    request = _masked_frame(json.dumps({"op": long_op}).encode())
    sock.settimeout(5)
    with contextlib.suppress(OSError):  # the server closes it: a reset or a timeout
        for _ in range(40_000):
            sock.sendall(request)
    deadline = time.monotonic() + 20
    while "web page too slow" not in (rig.tmp / "hwsim.log").read_text():
        assert time.monotonic() < deadline, "the page that read nothing was never closed"
        time.sleep(0.1)
    sock.close()
    assert _rss_kb(rig.sim.pid) - rss_before < 60_000  # bounded by the 8 MB backlog
    started = time.monotonic()
    rig.hw.display()  # hwsim still answers at once
    assert time.monotonic() - started < 1.0
    rig.sale("300")
    rig.hw.wait_display("APPROVED")


def test_a_card_port_nobody_reads_refuses_swipes_and_hwsim_goes_on(tmp_path: pathlib.Path
                                                                   ) -> None:
    """Without the firmware nothing reads the reader's port: swipes fill it, and then
    are refused with a reason instead of stopping the simulator. A line longer than any
    reader sends is refused outright."""
    with Rig(tmp_path, web=True) as rig:
        rig.start_sim()
        with pytest.raises(HwsimError, match="reader line is at most 512"):
            rig.hw.swipe(raw="0" * 600)
        with pytest.raises(HwsimError, match="port is full, nothing reads it"):
            for _ in range(1000):
                rig.hw.swipe(bad="overlong")
        started = time.monotonic()
        assert len(rig.hw.display()) == 4
        assert time.monotonic() - started < 1.0


def test_a_display_fault_that_runs_out_shows_as_ended(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, web=True) as rig:
        rig.start_sim()  # no firmware: the only transfers are the test's

        async def go() -> None:
            async with Page(rig.web_url) as page:
                await page.send("display_fault", count=1)
                await page.wait(lambda f: f["type"] == "status"
                                and f["display_fault"]["active"])
                start = len(page.frames)
                with pytest.raises(HwsimError):
                    rig.hw.request("i2c_write", bus=1, addr=0x27, data=[0x08])
                await page.wait(lambda f: f["type"] == "status"
                                and not f["display_fault"]["active"], start=start)
        run(go())


def test_pages_opened_at_different_times_see_the_same_terminal(rig: Rig) -> None:
    async def go() -> None:
        async with Page(rig.web_url) as first:
            rig.sale("110")
            rig.hw.wait_display("APPROVED")
            rig.wait_receipts(1)
            rig.hw.press("OK")
            async with Page(rig.web_url) as second:
                rig.sale("220")
                rig.hw.wait_display("APPROVED")
                rig.wait_receipts(2)
                for page in (first, second):
                    await page.wait(lambda f: f["type"] == "paper" and f["count"] == 2)
                await asyncio.sleep(0.5)
                rows = rig.hw.display()
                for page in (first, second):
                    got = [r["index"] for f in page.frames if f["type"] == "paper"
                           for r in f["receipts"]]
                    assert got == [1, 2]  # each receipt once
                    assert page.latest("display")["rows"] == rows
                    assert page.latest("ledger")["charged_total"] == 330
                    seqs = [e["seq"] for f in page.frames if f["type"] == "wire"
                            for e in f["events"]]
                    assert seqs == sorted(set(seqs)) and seqs[-1] - seqs[0] + 1 >= len(seqs)
                assert first.latest("status") == second.latest("status")
                wire_first = {e["seq"] for f in first.frames if f["type"] == "wire"
                              for e in f["events"]}
                wire_second = {e["seq"] for f in second.frames if f["type"] == "wire"
                               for e in f["events"]}
                assert wire_second <= wire_first and max(wire_second) == max(wire_first)
    run(go())


def _masked_frame(data: bytes) -> bytes:
    """One WebSocket text frame as a client sends it (masked; the mask is fixed here)."""
    mask = b"\x01\x02\x03\x04"
    size = len(data)
    head = bytes([0x81, 0x80 | size]) if size < 126 else \
        bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _rss_kb(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_pin_typed_through_the_page_reaches_nothing_the_page_gets(rig: Rig) -> None:
    """hardware.md "PIN entry": a PIN keyed through the page's key op (here the
    supervisor's, the PIN entry this terminal has) shows as stars and nowhere else: not
    in the display, the replies to the key presses, the status, the ledger, the wire,
    nor hwsim's log; and the page's own code logs and lists no key press."""
    pin = "97531864"  # the longest supervisor PIN (8 digits); not the configured one

    async def go() -> tuple[list[str], Frames, Frames]:
        async with Page(rig.web_url) as page:
            await page.wait_display("ENTER AMOUNT")
            await page.send("press", keys=["F1"])
            await page.wait_display("MENU")
            await page.send("press", keys=["5"])
            await page.wait_display("SUPERVISOR PIN")
            typed = len(page.frames)
            replies = [await page.send("press", keys=[digit]) for digit in pin]
            await page.wait_display("*" * len(pin))
            done = len(page.frames)
            await page.send("press", keys=["OK"])
            await page.wait(lambda f: f["type"] == "display"
                            and "*" * len(pin) not in " ".join(f["rows"]), start=done)
            await page.send("press", keys=["CANCEL"])
            await asyncio.sleep(0.5)
            return page.raw[typed:], page.frames[typed:], replies

    raw, frames, replies = run(go())
    assert all(set(r) == {"type", "id", "ok", "listeners"} and r["ok"] for r in replies)
    entry = [f for f in frames if f["type"] == "display" and "SUPERVISOR PIN" in f["rows"][0]]
    assert len(entry) >= len(pin)
    for frame in entry:  # the digits never, one star each
        assert not any(ch.isdigit() for ch in " ".join(frame["rows"])), frame
    everything = "\n".join(raw) + (rig.tmp / "hwsim.log").read_text()
    assert pin not in everything
    strings: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    collect(frames)
    assert not any(pin[:4] in s for s in strings)  # no part of it, in any text
    code = "\n".join((pathlib.Path(__file__).parents[1] / "hw-sim" / "webui" / name
                      ).read_text() for name in STATIC_FILES if name.endswith(".js"))
    assert "console.log" not in code  # the page writes no key press to the console


def test_the_wire_and_the_ledger_keep_pin_data_hidden_9_2() -> None:
    """Host-interface 9.2: the wire log shows field 52 as zero bytes of its length and
    field 53 as its first 6 and last 4 hex digits; the ledger says only that a sale
    carried a PIN."""
    import random

    from hwsim.ledger import Books

    block, ksn = "A912150391AB65A67E52883D81CE2D15", "123456789012345600000001"
    sale = {"t": "0200", "2": "4111111111111111", "3": "000000", "4": "000000001000",
            "7": "1207101500", "11": "000001", "12": "101500", "13": "1207", "14": "3012",
            "22": "901", "25": "00", "41": "TERM0001", "42": "MERCHANT0000001", "49": "978",
            "52": block, "53": ksn, "60": "000001", "62": "000001"}
    view = json.dumps(wire_view(sale))
    assert block not in view and ksn not in view and ksn[6:-4] not in view
    assert wire_view(sale)["52"] == "0" * 32 and wire_view(sale)["53"] == "123456**************0001"
    books = Books(random.Random(1))
    books.pin_check = lambda req: None
    assert books.answer(sale)["39"] == "00"
    entry = books.entries()[0]
    assert entry["pin"] is True and block not in json.dumps(entry) and ksn not in json.dumps(entry)


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
    for field in ("14", "35", "45", "63"):
        assert view[field] == f"[{len(message[field])} characters hidden]"
    assert view["52"] == "0" * 16  # host-interface 9.2: zero bytes of its length
    assert view["55"] == "9F26=AABBCCDDEEFF0011"  # object by object, never card data (8.1)
    assert view["3"] == "000000" and view["4"] == "000000001250" and view["t"] == "0200"
    # a card number run together with other digits is masked all the same
    joined = wire_view({"t": "0200", "62": pan + "3012", "60": "000001"})
    assert pan not in json.dumps(joined) and joined["62"].startswith("476173")
    assert joined["60"] == "000001"
    # field 90 names an original: shown split; anything else in it is masked
    original = "0200" + "000123" + "1124031135" + "0" * 22
    assert wire_view({"t": "0400", "90": original})["90"] == \
        "0200 000123 1124031135 " + "0" * 22
    assert pan not in json.dumps(wire_view({"t": "0400", "90": pan + "0" * 26}))


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
