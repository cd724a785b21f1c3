"""`posterm-fleet`: serve the console, list the fleet, send a command, make a key.

    posterm-fleet serve --broker HOST[:PORT] --ca CA --cert CERT --cert-key KEY \\
                        --db fleet.db --web 127.0.0.1:8590 [--key fleet-key.pem]
    posterm-fleet list [--db fleet.db] [--alerts] [--json]
    posterm-fleet send TID CMD [NAME=VALUE ...] [--args JSON] --broker ... [--key FILE]
    posterm-fleet keygen DIR

The database defaults to $POSTERM_FLEET_DB, else posterm-fleet.db here. `--plain`
connects without TLS (a broker on loopback, tests); `--mqtt auto|5|3.1.1` chooses the
MQTT version (auto: 5, or 3.1.1 with a broker that refuses 5). Exit codes: 0 done (send: the
terminal answered ok), 1 the terminal answered not ok, 2 a usage or configuration
error (said in one line), 3 no reply within --timeout, 4 the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fleet.alerts import Policy
from fleet.commands import CommandError, build, keygen, load_key, parse_args
from fleet.mqtt import CHOICES, Broker, BrokerConfigError, BrokerError, send
from fleet.store import Store

log = logging.getLogger("posterm.fleet")

DEFAULT_DB = "posterm-fleet.db"


def _db(args: argparse.Namespace) -> Path:
    return Path(args.db or os.environ.get("POSTERM_FLEET_DB") or DEFAULT_DB)


def _broker(args: argparse.Namespace) -> Broker:
    return Broker.parse(args.broker, plain=args.plain, ca=args.ca, cert=args.cert,
                        cert_key=args.cert_key, mqtt=args.mqtt)


def _web_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise CommandError(f"--web must be [HOST:]PORT, e.g. 127.0.0.1:8590, not {text!r}")
    return host, int(port)


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(old_after=args.old_after, battery_low=args.battery_low)


# -- list -----------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    from fleet.web import fleet_view  # aiohttp only where the page is served or read

    try:
        store = Store(_db(args), readonly=True)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    try:
        view = fleet_view(store, datetime.now(timezone.utc), _policy(args), args.alerts)
    finally:
        store.close()
    if args.json:
        print(json.dumps(view, indent=1))
        return 0
    rows = view["terminals"]
    print(f"{view['count']} terminals, {view['alerting']} with alerts; newest version "
          f"{view['newest_version'] or '-'}")
    width = max([len(r["tid"]) for r in rows] + [3])
    for r in rows:
        words = "; ".join(a["text"] for a in r["alerts"]) or "ok"
        print(f"{r['tid']:<{width}}  {r['state'] or '?':<7}  {r['version'] or '-':<10}  {words}")
    return 0


# -- send -----------------------------------------------------------------------------

def cmd_send(args: argparse.Namespace) -> int:
    key = load_key(args.key) if args.key else None
    command = build(args.cmd, parse_args(args.pairs, args.args), key,
                    datetime.now(timezone.utc))
    reply = send(_broker(args), args.tid, command, args.timeout)
    if args.db:
        store = Store(_db(args))
        try:
            store.record_command(args.tid, command)
        finally:
            store.close()
    if reply is None:
        print(json.dumps({"id": command["id"], "error": f"no reply within {args.timeout:g} s"}))
        return 3
    print(json.dumps(reply))
    return 0 if reply.get("ok") is True else 1


# -- serve ----------------------------------------------------------------------------

async def _serve(args: argparse.Namespace) -> int:
    from fleet.ingest import Ingest
    from fleet.web import WebUI

    key = load_key(args.key) if args.key else None
    host, port = _web_address(args.web)
    ingest = Ingest(_db(args), _broker(args), client_id=args.client_id)
    await asyncio.to_thread(ingest.start)
    page = WebUI(_db(args), ingest, key, host, port, _policy(args), args.reply_wait)
    try:
        url = await page.start()
    except OSError as exc:
        ingest.stop()
        raise CommandError(f"cannot serve the page on {host}:{port}: "
                           f"{exc.strerror or exc}") from None
    print(f"posterm-fleet: page {url}, database {_db(args)}, broker "
          f"{ingest.broker.host}:{ingest.broker.port}"
          + ("" if key else "; no --key: params, update and restart cannot be sent"),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await page.stop()
    await asyncio.to_thread(ingest.stop)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = keygen(args.folder)
    print(f"{private} (secret: the console's operator keeps it)\n{public} (the terminals' "
          "[fleet] command_key)")
    return 0


# -- the parser -----------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posterm-fleet", description="posterm's fleet console.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True)

    def broker_options(s: argparse.ArgumentParser) -> None:
        s.add_argument("--broker", required=True, help="HOST[:PORT] (8883; 1883 with --plain)")
        s.add_argument("--plain", action="store_true", help="plain TCP, no TLS (tests only)")
        s.add_argument("--ca", type=Path, help="the broker's CA certificate (PEM)")
        s.add_argument("--cert", type=Path, help="the console's client certificate (PEM)")
        s.add_argument("--cert-key", type=Path, help="its private key (PEM)")
        s.add_argument("--mqtt", choices=CHOICES, default="auto",
                       help="MQTT version: auto (5, or 3.1.1 with a broker that refuses 5), "
                            "5 or 3.1.1")
        s.add_argument("--key", type=Path, help="the fleet's Ed25519 signing key (PEM): "
                                                "params, update and restart need it")

    def alert_options(s: argparse.ArgumentParser) -> None:
        s.add_argument("--old-after", type=float, default=Policy.old_after, metavar="S",
                       help="unsent offline sales older than this are an alert (3600 s)")
        s.add_argument("--battery-low", type=int, default=Policy.battery_low, metavar="PCT",
                       help="battery below this is an alert (20%%)")

    s = sub.add_parser("serve", help="subscribe to the broker and serve the page")
    broker_options(s)
    alert_options(s)
    s.add_argument("--db", help=f"the SQLite database (${{POSTERM_FLEET_DB}}, {DEFAULT_DB})")
    s.add_argument("--web", default="127.0.0.1:8590", help="[HOST:]PORT of the page")
    s.add_argument("--client-id", default="posterm-fleet", help="MQTT client id (one per "
                   "console: its session keeps what arrives while it is away)")
    s.add_argument("--reply-wait", type=float, default=15.0, metavar="S",
                   help="how long the page waits for a command's reply")
    s.set_defaults(run=cmd_serve)

    s = sub.add_parser("list", help="the fleet, alerts first")
    alert_options(s)
    s.add_argument("--db")
    s.add_argument("--alerts", action="store_true", help="only terminals with alerts")
    s.add_argument("--json", action="store_true", help="the page's JSON")
    s.set_defaults(run=cmd_list)

    s = sub.add_parser("send", help="send a command and wait for its reply")
    s.add_argument("tid")
    s.add_argument("cmd", help="ping, status, close, restart, logs, params, update")
    s.add_argument("pairs", nargs="*", metavar="NAME=VALUE", help="the command's args")
    s.add_argument("--args", help="the command's args as a JSON object")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")
    s.add_argument("--db", help="also record the command in this database")
    broker_options(s)
    s.set_defaults(run=cmd_send)

    s = sub.add_parser("keygen", help="make the fleet's signing key pair")
    s.add_argument("folder", type=Path)
    s.set_defaults(run=cmd_keygen)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        code: Any = args.run(args)
    except (CommandError, BrokerConfigError, BrokerError, TimeoutError) as exc:
        print(f"posterm-fleet: {exc}", file=sys.stderr)
        return 4 if isinstance(exc, (BrokerError, TimeoutError)) else 2
    except KeyboardInterrupt:
        return 130
    return int(code)
