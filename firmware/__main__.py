"""posterm: the terminal firmware's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path

from firmware import config as config_mod
from firmware.errors import (
    ConfigError, DeviceError, HostError, JournalError, KeyStoreError, PostermError,
)

DEFAULT_CONFIG = "/etc/posterm/posterm.toml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posterm",
        description="posterm card-payment terminal firmware. Runs the terminal: keypad, "
                    "card reader, display, printer and the acquirer host link, as the "
                    "configuration file describes (real devices or hwsim).")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"configuration file (TOML), default {DEFAULT_CONFIG}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the terminal (the default)")
    sub.add_parser("check-config", help="validate the configuration file and exit")
    st = sub.add_parser(
        "status", help="how the terminal is: link, queues, last sale, journal, key",
        description="Ask the running terminal (its status socket) or, when it is not "
        "running, read the journal read-only. Exit codes: 0 healthy, 1 degraded (bank "
        "slow or offline, reversals or offline sales waiting, refused offline sales, "
        "printer fault), 2 down or broken (not running, journal damaged, key missing).")
    st.add_argument("--json", action="store_true", help="one JSON document, for machines")
    up = sub.add_parser(
        "update", help="install a signed update bundle, rolling back if it does not come up",
        description="Verify BUNDLE (Ed25519 signature under the key installed with the "
        "package, hashes, newer version), wait for an idle terminal, snapshot the journal, "
        "install, restart, and roll back to the previous version and journal if the new one "
        "is not READY and signed on in time. Exit codes: 0 updated, 1 refused (nothing "
        "changed), 3 rolled back, 4 the rollback failed. With --fleet-request (root's "
        "posterm-fleet-update.service, started when the firmware hands over a fleet update): "
        "the request FILE is taken and removed, the bundle it names must lie in "
        "state_dir/fleet-update/ and is copied to [update] keep_dir before it is verified, "
        "the configuration file is read without the fleet's parameters, and the outcome is "
        "written to result.json beside FILE for the firmware.")
    up.add_argument("bundle", nargs="?", help="the update bundle (posterm-bundle make)")
    up.add_argument("--fleet-request", metavar="FILE",
                    help="take the bundle from the firmware's request FILE instead")
    sub.add_parser(
        "device-allow", help="print a systemd drop-in allowing exactly the configured devices",
        description="Print the [Service] drop-in that lets posterm.service open exactly the "
        "devices this configuration names (and no other): sudo posterm device-allow | sudo "
        "tee /etc/systemd/system/posterm.service.d/devices.conf, then systemctl "
        "daemon-reload. Run it again after changing a device in the configuration.")
    sub.add_parser(
        "pin-hash", help="make the [operator] pin_hash line for a supervisor PIN",
        description="Read a supervisor PIN (4 to 8 digits) and print the line to paste into "
        "the [operator] table of the configuration: pin_hash = \"scrypt$...\". On a terminal "
        "the PIN is asked twice without echo; otherwise it is read from the first line of "
        "standard input. The PIN itself is never printed or stored. Needs no configuration "
        "file.")
    kl = sub.add_parser(
        "key-load", help="load the DUKPT initial key that online PINs are enciphered under",
        description="Key injection: read the terminal's DUKPT initial key once, from SOURCE "
        "(a file readable by its owner alone) or standard input, as lines \"initial_key = "
        "<hex>\", \"initial_key_id = <16 hex>\" (AES DUKPT) or \"initial_ksn = <20 hex>\" "
        "(TDES DUKPT), and \"check_value = <hex>\" (AES: AES-CMAC of a zero block, 3 to 5 "
        "bytes; TDES: TDES of a zero block, 3 bytes), and write it to [pin] key_file "
        "(mode 600, owned by the service user). The key is never printed. Refused while "
        "posterm runs, when the check value does not match, and when a key is already "
        "loaded while the journal has unfinished sales. Exit codes: 0 loaded, 1 refused "
        "(nothing changed).")
    kl.add_argument("source", nargs="?", default="-",
                    help='the key\'s file, or "-" (the default) for standard input')
    return parser


def setup_logging(level: str) -> None:
    from firmware.runtime import journald

    journald.setup(level)


# Exit codes for systemd and operators: one line on stderr, never a traceback.
EXIT_CODES: tuple[tuple[type[PostermError], str, int], ...] = (
    (ConfigError, "configuration error", 2),
    (DeviceError, "device error", 3),
    (KeyStoreError, "storage error", 4),
    (JournalError, "storage error", 4),
    (HostError, "host error", 5),
    (PostermError, "error", 1),
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "pin-hash":
        return _pin_hash()
    if args.command == "update" and (args.bundle is None) == (args.fleet_request is None):
        parser.error("update: give a BUNDLE or --fleet-request FILE (one of them)")
    if args.command == "update" and args.fleet_request:  # before the configuration: the
        from firmware.runtime import update_request  # request is taken whatever it says

        return update_request.take(args.config, Path(args.fleet_request))
    try:
        # `posterm update` runs as root: the file alone, never the fleet's parameters in a
        # state directory the service user can write (they could name another [update] key)
        cfg = config_mod.load(args.config, overlay=args.command != "update")
        if args.command == "check-config":
            print(f"{args.config}: configuration is valid")
            return 0
        if args.command == "key-load":
            return _key_load(cfg, args.source)
        if args.command == "status":
            return _status(cfg, as_json=args.json)
        if args.command == "device-allow":
            from firmware.runtime.devices import drop_in

            print(drop_in(cfg), end="")
            return 0
        if args.command == "update":
            from firmware.runtime.update import Updater

            return Updater(cfg).apply(Path(args.bundle))
        setup_logging(cfg.log_level)
        code = asyncio.run(_run(cfg))
        if code == RESTART:
            _restart()
        return code
    except KeyboardInterrupt:
        return 0
    except PostermError as exc:
        label, code = next((label, code) for kind, label, code in EXIT_CODES
                           if isinstance(exc, kind))
        print(f"posterm: {label}: {exc}", file=sys.stderr)
        return code


def _pin_hash() -> int:
    """`posterm pin-hash`: read the PIN (twice on a tty), print the configuration line."""
    import getpass

    from firmware.runtime.operator import PIN_RE, PIN_WHAT, hash_pin

    try:
        if sys.stdin.isatty():
            pin = getpass.getpass("supervisor PIN (4 to 8 digits): ")
            if PIN_RE.fullmatch(pin) and getpass.getpass("same PIN again: ") != pin:
                print("posterm: pin-hash: the two PINs differ; nothing printed",
                      file=sys.stderr)
                return 1
        else:
            pin = sys.stdin.readline().rstrip("\r\n")
    except (EOFError, KeyboardInterrupt):
        print("posterm: pin-hash: no PIN given; nothing printed", file=sys.stderr)
        return 1
    if not PIN_RE.fullmatch(pin):
        print(f"posterm: pin-hash: {PIN_WHAT} (0-9 only); nothing printed", file=sys.stderr)
        return 1
    print(f'pin_hash = "{hash_pin(pin)}"')
    return 0


def _key_load(cfg: config_mod.Config, source: str) -> int:
    """`posterm key-load`: one line on success or refusal; the key is never printed."""
    from firmware.errors import PinKeyError
    from firmware.runtime import pinkeys

    path = pinkeys.key_path(cfg.pin.key_file, cfg.state_dir)
    try:
        text = pinkeys.read_source(source)
        print(pinkeys.install(text, path, cfg.pin.method, cfg.state_dir))
    except PinKeyError as exc:
        print(f"posterm: key-load: {exc}; nothing loaded", file=sys.stderr)
        return 1
    return 0


def _status(cfg: config_mod.Config, *, as_json: bool) -> int:
    import json

    from firmware.runtime import pinkeys, status

    doc = status.ask(status.socket_paths(cfg.runtime_dir, cfg.state_dir))
    pin = (pinkeys.key_path(cfg.pin.key_file, cfg.state_dir), cfg.pin.method) \
        if cfg.pin.enabled else None
    facts = status.Facts.from_doc(doc) if doc is not None else \
        status.read_journal(cfg.state_dir / "journal.sqlite3", cfg.state_dir / "card.key", pin)
    code, reasons = status.health(facts)
    if as_json:
        print(json.dumps({**facts.to_doc(), "health": code, "reasons": reasons}, indent=2,
                         default=str))
    else:
        print(status.render(facts))
    return code


async def _run(cfg: config_mod.Config) -> int:
    from firmware.runtime import statedir
    from firmware.runtime.app import App
    from firmware.runtime.journal import Journal
    from firmware.runtime.sdnotify import Notifier
    from firmware.runtime.vault import Vault
    from firmware.runtime.wiring import open_devices
    from firmware.runtime import threads

    # asyncio.to_thread's workers (status, PIN checks, the modem's setup), named for the kernel
    asyncio.get_running_loop().set_default_executor(threads.pool("worker", 4))
    threads.set_os_name("posterm")  # the event loop's thread: what ps and top show
    state_dir = Path(cfg.state_dir)
    lock = statedir.prepare(state_dir)  # private, writable, and ours alone
    try:
        journal_path = state_dir / "journal.sqlite3"
        # the journal is checked first: no key file is made for a journal that cannot open
        sealed = Journal.has_sealed_data(journal_path)
        vault = Vault.open(state_dir / "card.key", create=not sealed)
        try:
            journal = Journal(journal_path, vault)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {journal_path} cannot be opened: {exc}") from None
        try:
            devices = open_devices(cfg)
        except BaseException:
            journal.close()
            raise
        stop, stop_now = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:  # the first asks for a clean stop, a second for a quick one
            (stop_now if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        notifier = Notifier()
        app = App(cfg, devices, journal, notifier)
        try:
            await app.run(stop, stop_now)
            journal.checkpoint()
        except sqlite3.Error as exc:  # disk full, I/O error: never take a sale unjournaled
            raise JournalError(f"journal {journal_path} cannot be written: {exc}; the "
                               "terminal stops rather than take sales it cannot "
                               "record") from None
        finally:
            notifier.stopping("stopping: closing devices and the journal")
            devices.close()
            journal.close()
            notifier.close()
    finally:
        lock.release()
    if app.restart_requested:
        global _RESTART_REASON
        _RESTART_REASON = app.restart_reason or "restart requested"
        return RESTART
    logging.getLogger("posterm").info("posterm stopped")
    return 0


RESTART = -1  # _run's answer for a restart in place (the daily restart, mains back)
_RESTART_REASON = "daily restart"


def _restart() -> None:
    """Start again in this process (exec): all memory is new, the pid stays the one systemd
    supervises, and the new image signs on, recovers and reports READY as at any start."""
    logging.getLogger("posterm").info("posterm restarting (%s)", _RESTART_REASON)
    logging.shutdown()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


if __name__ == "__main__":
    sys.exit(main())
