"""hwsim's web page: the simulated terminal in a browser, live.

`WebUI` serves one page (hw-sim/webui/: plain HTML, CSS and JavaScript) and a
WebSocket at /ws, with aiohttp on hwsim's own event loop. The page is a view of
the simulator's models and a client of its control interface, nothing more:

- the models tell the server when they change (`Simulator.changed`: the LCD
  after each transfer, the printer when paper comes out, the GPIO outputs, the
  host's wire events, every control request carried out); the server gathers
  the changes of one turn of the loop, rebuilds what the page shows of each
  changed part and sends it to every page only if it differs from what was sent
  last. Nothing polls.
- what a page asks for is a control request (`{"id": n, "op": ..., ...}`) run by
  the same `ControlServer.dispatch` that serves `hwsim ctl`, limited to the ops
  a person at the page uses: those declared `page=True` in the registry
  (`hwsim.ops`): keys, swipes, faults. The firmware's own ops (I2C, GPIO) are
  not among them. The page's hello carries that catalogue (each op and its
  arguments) and the host's fault kinds with their defaults
  (`hwsim.hostfaults.KINDS`), so the page declares none of them again.
- the page is plain ES modules in webui/ (main.js, socket.js, dom.js,
  panels/*.js), each file served as it is: no build step.
- receipts are PNG images (`hwsim.receipt_image`), the same `hwsim ctl
  receipts --png` writes.

Security: it binds to loopback unless told otherwise, and then answers only
requests addressed to a loopback name (a DNS-rebinding page cannot reach it);
the WebSocket accepts only a page of its own origin (another site open in the
same browser cannot press keys or inject faults); every answer carries a CSP
that allows nothing but the page's own files. Card data never leaves the server
unmasked: the display and receipts are what the firmware made of the card
(masked), and the wire timeline is built by `hostproto.wire_view`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import pathlib
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from hwsim.cards import BAD_SWIPE_KINDS, TEST_CARDS
from hwsim.control import StartError, parse_request
from hwsim.gpio import PIN_BUZZER, PIN_LED_ONLINE, PIN_POWER_FAIL
from hwsim.hostfaults import KINDS, REQUEST_CLASSES
from hwsim.hostproto import mask_card_numbers
from hwsim.keypad import KEY_CODES
from hwsim.ops import OPS
from hwsim.printer import receipt_text

if TYPE_CHECKING:
    from hwsim.sim import Simulator

log = logging.getLogger(__name__)

PAGE_DIR = pathlib.Path(__file__).resolve().parent / "webui"
CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# The page's files under /static/, by their path in webui/ (only these are served).
STATIC_FILES = {path.relative_to(PAGE_DIR).as_posix(): CONTENT_TYPES[path.suffix]
                for path in sorted(PAGE_DIR.rglob("*")) if path.suffix in CONTENT_TYPES}
DEFAULT_PORT = 8580
WIRE_KEPT = 500  # wire events kept for a page that connects later
LEDGER_SHOWN = 200  # newest ledger entries sent to the page
RECEIPTS_SHOWN = 50  # newest receipts on the roll of a page that connects
CLIENT_BACKLOG = 8 << 20  # bytes queued for one page before it is closed as too slow
MAX_REQUEST = 1 << 16  # bytes of one request from the page
TOPICS = ("display", "outputs", "status", "ledger", "paper", "wire")
# The ops a person at the page may ask for (declared page=True in hwsim.ops); the
# firmware's own (I2C, GPIO) are not among them.
PAGE_OPS = frozenset(op.name for op in OPS.page_ops())
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
CSP = ("default-src 'self'; img-src 'self'; connect-src 'self'; style-src 'self'; "
       "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'none'")  # fmt: skip

Message = dict[str, Any]


def parse_web_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` (HOST may be [v6]); HOST defaults to 127.0.0.1. A clear StartError
    for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise StartError(f"--web must be [HOST:]PORT, e.g. 8580 or 127.0.0.1:8580, not {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """One open page: its WebSocket, what waits to be sent to it, and what it was sent
    last of each part (so each page gets each change once, whenever it connected)."""

    def __init__(self, ws: web.WebSocketResponse, receipts: int, wire: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.queued = 0  # bytes in the queue
        self.last: dict[str, str] = {}  # topic -> JSON last sent (whole-state topics)
        self.receipts = receipts  # receipts it has, counted from the first
        self.wire = wire  # sequence number of the last wire event it has
        self.closed = False

    def put(self, text: str) -> bool:
        """Queue `text`; False (and the page closed) when it is too far behind."""
        if self.closed:
            return False
        if self.queued + len(text) > CLIENT_BACKLOG:
            log.warning("web page too slow (%d bytes waiting for it): closed; it reconnects "
                        "and starts afresh", self.queued)
            self.close()
            return False
        self.queued += len(text)
        self.queue.put_nowait(text)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            asyncio.ensure_future(self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER,
                                                message=b"too slow"))


class WebUI:
    """The page's server, attached to a started `Simulator` (see the module docstring)."""

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.loopback_only = is_loopback(host)
        self._runner: web.AppRunner | None = None
        self._clients: set[Client] = set()
        self._dirty: set[str] = set()
        self._flush_pending = False
        self._wire: deque[Message] = deque(maxlen=WIRE_KEPT)
        self._wire_seq = 0
        self._pngs: dict[int, bytes] = {}  # receipt number -> its image (receipts never change)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # every address: this machine's own is one
            host = "127.0.0.1" if host != "::" else "::1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def host_allowed(self, name: str) -> bool:
        """Whether a request for host `name` is answered. On loopback: loopback names only.
        On another address: IP addresses, localhost and this machine's own names, never
        another name (a page of another site, its name rebound to this address, must not
        reach it)."""
        if self.loopback_only:
            return is_loopback(name)
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        own = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
        return name.lower() in own

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> str:
        """Listen; returns the page's address."""
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._guard])
        app.add_routes([
            web.get("/", self._index),
            web.get("/static/{name:.+}", self._static),
            web.get("/favicon.ico", self._no_icon),
            web.get("/receipts/partial.png", self._partial_png),
            web.get("/receipts/{number:[0-9]+}.png", self._receipt_png),
            web.get("/ws", self._websocket),
        ])  # fmt: skip
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartError(f"cannot serve the web page on {self.host}:{self.port}: "
                             f"{exc.strerror or exc} (choose another with --web PORT)") from None
        self._runner = runner
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        if not self.loopback_only:
            log.warning("web page on %s: reachable from the network; it lets anyone who "
                        "reaches it press keys and inject faults", self.url)
        log.info("web page %s", self.url)
        return self.url

    async def stop(self) -> None:
        for client in list(self._clients):
            client.closed = True
            client.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await client.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what the models report ---------------------------------------------------

    def changed(self, topic: str) -> None:
        """Something the page shows changed; sent at the end of this turn of the loop."""
        if not self._clients:
            return  # nobody looks: the next page to connect gets everything afresh
        self._dirty.add(topic)
        if not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def wire_event(self, event: Message) -> None:
        """An event on the host's wire (already masked by the host)."""
        self._wire_seq += 1
        self._wire.append({"seq": self._wire_seq, **event})
        self.changed("wire")
        self.changed("ledger")
        self.changed("status")  # a fault may have been used up

    def _flush(self) -> None:
        self._flush_pending = False
        dirty, self._dirty = self._dirty, set()
        for topic in TOPICS:
            if topic not in dirty:
                continue
            if topic in ("paper", "wire"):  # what is new to each page
                for client in list(self._clients):
                    self._send_news(client, topic)
                continue
            text = _json(self._build(topic))
            for client in list(self._clients):
                if client.last.get(topic) != text:
                    client.last[topic] = text
                    client.put(text)

    def _send_news(self, client: Client, topic: str) -> None:
        if topic == "paper":
            message = self._paper(client)
            state = _json({"count": message["count"], "partial": message["partial"]})
            if message["receipts"] or client.last.get("paper") != state:
                client.last["paper"] = state  # what it has besides the receipts
                client.put(_json(message))
        else:
            events = [e for e in self._wire if e["seq"] > client.wire]
            client.wire = self._wire_seq
            if events:
                client.put(_json({"type": "wire", "events": events}))

    # -- what the page shows --------------------------------------------------------

    def _build(self, topic: str) -> Message:
        """The whole state of a part the page shows (display, outputs, status, ledger)."""
        if topic == "display":
            return self._display()
        if topic == "outputs":
            return self._outputs()
        if topic == "status":
            return self._status()
        return self._ledger()

    def _hello(self) -> Message:
        return {
            "type": "hello", "simulator": True,
            "cards": [{"pan": c.pan, "service_code": c.service_code, "meant_for": c.meant_for}
                      for c in TEST_CARDS],
            "bad_kinds": list(BAD_SWIPE_KINDS),
            "ops": OPS.catalogue(),
            "fault_kinds": [k.describe() for k in KINDS],
            "fault_classes": [*REQUEST_CLASSES, "*"],
            "keys": list(KEY_CODES),
            "external_host": self.sim.host is None,
        }  # fmt: skip

    def _display(self) -> Message:
        lcd = self.sim.lcd
        return {"type": "display", "rows": lcd.rows(), "backlight": lcd.backlight,
                "on": lcd.display_on}

    def _outputs(self) -> Message:
        gpio = self.sim.gpio
        return {"type": "outputs", "led": gpio.level(PIN_LED_ONLINE),
                "buzzer": gpio.level(PIN_BUZZER)}

    def _status(self) -> Message:
        sim = self.sim
        printer = sim.printer.state()
        gauge = sim.gauge.state()
        modem = sim.modem.state()
        primary = sim.primary.state() if sim.primary is not None else {"mode": "up", "up": True}
        host: Message = {"simulated": sim.host is not None}
        if sim.host is not None:
            host.update(down=sim.host.is_down, latency=sim.host.latency,
                        faults=sim.host.faults(), out_of_balance=sim.host.out_of_balance_pending())
        return {
            "type": "status",
            "printer": {k: printer[k] for k in ("paper_out", "paper_near_end", "cover_open",
                                                "offline", "mute", "slow_seconds")},
            "battery": {k: gauge[k] for k in ("percent", "voltage", "rate", "charging",
                                              "failing")},
            "mains": bool(sim.gpio.level(PIN_POWER_FAIL)),
            "modem": {k: modem[k] for k in ("powered", "booted", "sim_present", "registration",
                                            "registration_word", "rssi", "net_open",
                                            "link_open", "latency")},
            "primary": {"mode": primary["mode"], "up": primary["up"]},
            "reader": {"plugged": sim.card_reader.plugged},
            "chip": sim.chip_slot.state() if sim.chip_slot is not None else None,
            "display_fault": {"active": sim.expander.fault.active},
            "host": host,
        }  # fmt: skip

    def _ledger(self) -> Message:
        if self.sim.host is None:
            return {"type": "ledger", "entries": [], "charged_total": 0, "credited_total": 0}
        entries = self.sim.host.ledger()
        return {"type": "ledger", "entries": entries[-LEDGER_SHOWN:],
                "charged_total": sum(e["amount"] for e in entries if e["charged"]),
                "credited_total": sum(e["amount"] for e in entries if e["credited"])}

    def _paper(self, client: Client) -> Message:
        """The receipts `client` does not have yet (the newest RECEIPTS_SHOWN at most) and
        what is above the cutter."""
        printer = self.sim.printer
        count = printer.receipt_count()
        start = max(client.receipts, count - RECEIPTS_SHOWN)
        new = printer.receipt_lines(start)
        client.receipts = start + len(new)
        partial_lines = printer.partial_lines()
        partial = None
        if partial_lines:
            version = hashlib.sha1(
                _json([line.as_dict() for line in partial_lines]).encode()).hexdigest()[:12]
            partial = {"url": f"/receipts/partial.png?v={version}",
                       "text": receipt_text(partial_lines)}
        return {"type": "paper", "count": count, "partial": partial,
                "receipts": [{"index": start + i + 1, "url": f"/receipts/{start + i + 1}.png",
                              "text": receipt_text(lines)} for i, lines in enumerate(new)]}

    # -- HTTP ---------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Only names that cannot be rebound to it (see `host_allowed`), and strict headers
        on answers."""
        if not self.host_allowed(_hostname(request.host)):
            log.warning("web page: refused a request for host %r", request.host)
            return web.Response(status=421, text="this simulator page answers only to "
                                + ("localhost or 127.0.0.1" if self.loopback_only else
                                   "an IP address, localhost or this machine's name") + "\n")
        response = await handler(request)
        if not response.prepared:
            response.headers["Content-Security-Policy"] = CSP
            response.headers["X-Content-Type-Options"] = "nosniff"
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["Cache-Control"] = "no-store"
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE_DIR / "index.html",
                                headers={"Content-Type": "text/html; charset=utf-8"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound(text=f"no such file: {name}\n")
        return web.FileResponse(PAGE_DIR / name,
                                headers={"Content-Type": f"{STATIC_FILES[name]}; charset=utf-8"})

    async def _no_icon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)  # the page names its icon; this is for other clients

    async def _receipt_png(self, request: web.Request) -> web.StreamResponse:
        number = int(request.match_info["number"])
        png = self._pngs.get(number)
        if png is None:
            count = self.sim.printer.receipt_count()
            if not 1 <= number <= count:
                raise web.HTTPNotFound(text=f"no receipt {number}: {count} printed\n")
            lines = self.sim.printer.receipt_lines(number - 1)[0]
            png = await asyncio.to_thread(_render, lines, True)
            self._pngs[number] = png
        return web.Response(body=png, content_type="image/png")

    async def _partial_png(self, request: web.Request) -> web.StreamResponse:
        lines = self.sim.printer.partial_lines()
        if not lines:
            raise web.HTTPNotFound(text="nothing on the paper above the cutter\n")
        png = await asyncio.to_thread(_render, lines, False)
        return web.Response(body=png, content_type="image/png")

    # -- the WebSocket --------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if urlsplit(origin).netloc.lower() != request.host.lower():
            log.warning("web page: refused a WebSocket from origin %r", origin)
            return web.Response(status=403, text="WebSocket only from this simulator's own "
                                "page (origin mismatch)\n")
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_REQUEST)
        await ws.prepare(request)
        if self._flush_pending:
            self._flush()  # the pages already open get what changed before this one came
        client = Client(ws, receipts=0, wire=0)
        client.put(_json(self._hello()))
        for topic in TOPICS:
            if topic in ("paper", "wire"):
                self._send_news(client, topic)
            else:
                client.last[topic] = _json(self._build(topic))
                client.put(client.last[topic])
        self._clients.add(client)
        sender = asyncio.create_task(self._send_loop(client))
        log.info("web page connected (%d open)", len(self._clients))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if not client.put(_json(await self._answer(msg.data))):
                        break  # too far behind: closed, it reconnects
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._clients.discard(client)
            client.closed = True
            client.queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
            log.info("web page disconnected (%d open)", len(self._clients))
        return ws

    async def _send_loop(self, client: Client) -> None:
        while (text := await client.queue.get()) is not None:
            client.queued -= len(text)
            if client.ws.closed:
                return
            try:
                await client.ws.send_str(text)
            except ConnectionError:
                return

    async def _answer(self, data: str) -> Message:
        """One request from the page: the control reply, with the request's id."""
        request, problem = parse_request(data.encode("utf-8", "surrogatepass"))
        if request is None:
            return {"type": "reply", "id": None, "ok": False, "error": problem}
        ident = request.pop("id", None)
        if not isinstance(ident, int | str) or isinstance(ident, bool):
            ident = None
        op = request.get("op")
        if not isinstance(op, str) or op not in PAGE_OPS:
            shown = mask_card_numbers(repr(op))[:40]
            return {"type": "reply", "id": ident, "ok": False,
                    "error": f"op {shown} is not available from the page; "
                             f"available: {', '.join(sorted(PAGE_OPS))}"}
        assert self.sim.control is not None
        reply = await self.sim.control.dispatch(request)  # errors come back masked
        return {"type": "reply", "id": ident, **reply}


def _json(message: object) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def _render(lines: Any, cut: bool) -> bytes:
    from hwsim.receipt_image import receipt_png

    return receipt_png(lines, cut=cut)


def _hostname(host_header: str) -> str:
    """The name in a Host header, without the port ("[::1]:80" -> "::1")."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if ":" in host_header else host_header
