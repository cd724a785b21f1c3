"""The fleet's page: the table (alerts first), one terminal's detail, its commands.

aiohttp serves `webui/` (plain HTML, CSS and an ES module; no build step) and a small
JSON API the page and scripts read:

- `GET /api/fleet[?alerts=1]`: every terminal (or those with alerts), in the table's
  order (`fleet.alerts.order_key`), with its alerts and the facts the table shows,
  and the newest version seen.
- `GET /api/terminals/{tid}`: one terminal: its state, facts, alerts, newest events
  and the commands sent to it with their replies.
- `POST /api/terminals/{tid}/commands` `{"cmd", "args"}`: built and signed here
  (`fleet.commands`), published, and answered with the reply when it comes within
  `reply_wait` seconds (else `"reply": null`: it shows in the detail when it comes).
- `GET /api/commands/{id}`: one command and its reply.

Security: the page can restart terminals and push parameters, and it has no login of
its own: it binds to loopback unless told otherwise (put it behind an authenticating
proxy to serve it further) and answers only requests addressed to a loopback name
there (no DNS rebinding); a command must come from the page's own origin with a JSON
body (another site open in the same browser cannot post one); every answer carries a
CSP that allows only the page's own files. The signing key never leaves the process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import pathlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.alerts import Policy, alerts, order_key, part
from fleet.alerts import newest as newest_of
from fleet.commands import CommandError, build
from fleet.ingest import Ingest
from fleet.store import Store

log = logging.getLogger("posterm.fleet.web")

PAGE_DIR = pathlib.Path(__file__).resolve().parent / "webui"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
CSP = ("default-src 'self'; img-src 'self'; connect-src 'self'; style-src 'self'; "
       "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'none'")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
EVENTS_SHOWN, COMMANDS_SHOWN = 200, 50
Clock = Callable[[], datetime]


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _summary(f: dict[str, Any]) -> dict[str, Any]:
    device, queue, conn = part(f, "device"), part(f, "queue"), part(f, "connectivity")
    return {"battery": device.get("battery_level"), "power": device.get("power_source"),
            "printer": f.get("printer"), "link": conn.get("link"),
            "offline_count": queue.get("offline_count")}


def newest_version(store: Store) -> str | None:
    return newest_of(store.versions())


def fleet_view(store: Store, now: datetime, policy: Policy,
               only_alerts: bool = False) -> dict[str, Any]:
    """The table: every terminal with its alerts, alerts first (also `list --json`)."""
    every = store.facts()
    newest = newest_version(store)
    rows = []
    for f, row in every:
        found = alerts(f, newest, now, policy)
        if only_alerts and not found:
            continue
        rows.append((order_key(f.tid, found), {
            "tid": f.tid, "state": f.state, "version": f.version, "since": row["since"],
            "seen": row["seen"], "alerts": found, **_summary(f.facts)}))
    rows.sort(key=lambda r: r[0])
    return {"newest_version": newest, "count": len(every),
            "alerting": sum(1 for _, r in rows if r["alerts"]),
            "terminals": [r for _, r in rows]}


def terminal_view(store: Store, tid: str, now: datetime,
                  policy: Policy) -> dict[str, Any] | None:
    row = store.terminal(tid)
    if row is None:
        return None
    f = store.facts_of(row)
    newest = newest_version(store)
    return {"tid": tid, "state": row["state"], "version": row["version"],
            "since": row["since"], "seen": row["seen"], "facts": f.facts,
            "facts_t": row["facts_t"], "last_seq": row["last_seq"],
            "events_kept": row["events"], "alerts": alerts(f, newest, now, policy),
            "events": store.events(tid, EVENTS_SHOWN), "commands": store.commands(tid,
                                                                                   COMMANDS_SHOWN)}


class WebUI:
    """The page's server over a store, and (when serving) the subscriber that sends."""

    def __init__(self, db: pathlib.Path, ingest: Ingest | None, key: Ed25519PrivateKey | None,
                 host: str = "127.0.0.1", port: int = 8590, policy: Policy | None = None,
                 reply_wait: float = 15.0,
                 clock: Clock = lambda: datetime.now(timezone.utc)) -> None:
        self.db, self.ingest, self.key = db, ingest, key
        self.host, self.port, self.policy = host, port, policy or Policy()
        self.reply_wait, self.clock = reply_wait, clock
        self.loopback_only = is_loopback(host)
        self._runner: web.AppRunner | None = None
        self._store: Store | None = None
        self._lock = asyncio.Lock()  # one reader of the store's connection at a time

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    async def start(self) -> str:
        self._store = Store(self.db)
        app = web.Application(middlewares=[self._guard], client_max_size=1 << 16)
        app.add_routes([
            web.get("/", self._index),
            web.get("/static/{name}", self._static),
            web.get("/favicon.ico", self._no_icon),
            web.get("/api/fleet", self._fleet),
            web.get("/api/terminals/{tid}", self._terminal),
            web.post("/api/terminals/{tid}/commands", self._command),
            web.get("/api/commands/{id}", self._one_command),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        if not self.loopback_only:
            log.warning("fleet page on %s is reachable from the network and has no login: "
                        "anyone who reaches it can send commands", self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._store is not None:
            self._store.close()

    async def _read(self, fn: Callable[[Store], Any]) -> Any:
        assert self._store is not None
        store = self._store
        async with self._lock:
            return await asyncio.to_thread(fn, store)

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        name = _hostname(request.host)
        if self.loopback_only and not is_loopback(name):
            return web.Response(status=421, text="the fleet page answers only to localhost "
                                                 "or 127.0.0.1\n")
        if request.method != "GET":
            origin = request.headers.get("Origin")
            if origin != f"{request.scheme}://{request.host}" \
                    or request.content_type != "application/json":
                return web.json_response({"error": "commands come from the page's own "
                                                   "origin, as JSON"}, status=403)
        response = await handler(request)
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
        if name not in STATIC:
            raise web.HTTPNotFound(text=f"no such file: {name}\n")
        return web.FileResponse(PAGE_DIR / name,
                                headers={"Content-Type": f"{STATIC[name]}; charset=utf-8"})

    async def _no_icon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _fleet(self, request: web.Request) -> web.StreamResponse:
        only = request.query.get("alerts") in ("1", "true", "yes")
        now = self.clock()
        view = await self._read(lambda s: fleet_view(s, now, self.policy, only))
        return web.json_response(view, dumps=lambda d: json.dumps(d, separators=(",", ":")))

    async def _terminal(self, request: web.Request) -> web.StreamResponse:
        tid, now = request.match_info["tid"], self.clock()
        view = await self._read(lambda s: terminal_view(s, tid, now, self.policy))
        if view is None:
            return web.json_response({"error": f"no terminal {tid} has been heard of"},
                                     status=404)
        return web.json_response(view)

    async def _one_command(self, request: web.Request) -> web.StreamResponse:
        cid = request.match_info["id"]
        found = await self._read(lambda s: s.command(cid))
        if found is None:
            return web.json_response({"error": f"no command {cid}"}, status=404)
        return web.json_response(found)

    async def _command(self, request: web.Request) -> web.StreamResponse:
        tid = request.match_info["tid"]
        if self.ingest is None:
            return web.json_response({"error": "this page only reads (no broker)"},
                                     status=503)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("cmd"), str):
            return web.json_response({"error": 'send {"cmd": ..., "args": {...}}'}, status=400)
        args = body.get("args") or {}
        if not isinstance(args, dict):
            return web.json_response({"error": "args must be an object"}, status=400)
        known = await self._read(lambda s: s.terminal(tid) is not None)
        if not known:
            return web.json_response({"error": f"no terminal {tid} has been heard of"},
                                     status=404)
        try:
            command = build(body["cmd"], args, self.key, self.clock())
        except CommandError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        await self._read(lambda s: s.record_command(tid, command))
        ingest = self.ingest
        ingest.expect(command["id"])
        try:
            await asyncio.to_thread(ingest.publish, tid, command)
        except (RuntimeError, ValueError) as exc:
            ingest.wait_reply(command["id"], 0)
            return web.json_response({"error": f"not sent: {exc}", "command": command},
                                     status=502)
        log.info("command %s %s sent to %s", command["id"], command["cmd"], tid)
        reply = await asyncio.to_thread(ingest.wait_reply, command["id"], self.reply_wait)
        return web.json_response({"command": command, "reply": reply})
