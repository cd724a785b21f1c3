"""The `hwsim` command: run the simulator, or control a running one.

    hwsim run --dir DIR [--tls] [--host-port N] [--external-host HOST:PORT] [--seed N]
              [--web [HOST:]PORT] [--vpcd-port N]
    hwsim ctl --dir DIR OP ...      (swipe, press, display, receipts, fault, ...)

`run` serves until SIGINT or SIGTERM and logs to stderr. `ctl` sends one
request over DIR/control.sock and prints the answer for a person
(`hwsim.ctlview`), or as JSON with --json. Its subcommands, their arguments and
help are built from the registry of ops (`hwsim.ops`): each op's command, each
argument's option, type and default as declared there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hwsim import ctlview
from hwsim.chipslot import DEFAULT_VPCD_PORT
from hwsim.client import HwsimClient, HwsimError, HwsimUnavailable
from hwsim.ops import OPS
from hwsim.opspec import Arg, Op

log = logging.getLogger("hwsim")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwsim",
        description="posterm's hardware and acquirer-host simulator. `hwsim run` starts it; "
        "`hwsim ctl` drives a running one (swipe cards, press keys, read the display, "
        "inject faults).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the simulator until SIGINT/SIGTERM",
        description="Start the card reader (a pty), printer and acquirer host (TCP on "
        "127.0.0.1), display, keypad and GPIO models and the control socket DIR/control.sock; "
        "write DIR/hwsim.json and the firmware configuration DIR/posterm.toml.",
    )  # fmt: skip
    run.add_argument("--dir", required=True, help="state directory (created if missing)")
    run.add_argument("--tls", action="store_true",
                     help="serve the host over TLS with a test CA made in DIR/tls/")
    run.add_argument("--host-port", type=int, default=0, metavar="N",
                     help="TCP port of the simulated host (default: any free port)")
    run.add_argument("--external-host", metavar="HOST:PORT",
                     help="do not simulate the host: point the firmware at this one")
    run.add_argument("--seed", type=int, metavar="N",
                     help="seed the host's random choices (approval codes, references)")
    run.add_argument("--web", metavar="[HOST:]PORT", nargs="?", const=str(8580),
                     help="serve the simulated terminal as a web page (live display, keypad, "
                     "card slot, receipts, faults) on PORT of HOST, 127.0.0.1 unless given; "
                     "--web alone: 127.0.0.1:8580, 0: any free port")
    run.add_argument("--vpcd-port", type=int, default=DEFAULT_VPCD_PORT, metavar="N",
                     help="port of vpcd's virtual reader that the chip card slot connects "
                     f"to (default {DEFAULT_VPCD_PORT}; 0: no chip slot)")
    run.add_argument("-v", "--verbose", action="store_true", help="log debug detail")

    ctl = commands.add_parser(
        "ctl", help="control a running simulator",
        description="Send one request to the simulator running in DIR.",
    )  # fmt: skip
    ctl.add_argument("--dir", required=True, help="the directory given to `hwsim run`")
    ctl.add_argument("--json", action="store_true", help="print the raw answer as JSON")
    subcommands = ctl.add_subparsers(dest="ctl", required=True, metavar="OP")
    for name, group in ctl_commands().items():
        _add_command(subcommands, name, group)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return _ctl(args)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    from hwsim.control import StartError
    from hwsim.sim import Simulator

    async def serve() -> None:
        web = None
        if args.web is not None:
            from hwsim.web import parse_web_address

            web = parse_web_address(args.web)
        sim = Simulator(args.dir, tls=args.tls, host_port=args.host_port,
                        external_host=args.external_host, seed=args.seed, web=web,
                        vpcd_port=args.vpcd_port)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await sim.start()
        try:
            await stop.wait()
        finally:
            await sim.stop()

    try:
        asyncio.run(serve())
    except (StartError, OSError, ValueError) as exc:
        log.error("hwsim cannot run: %s", exc)
        return 1
    except ModuleNotFoundError as exc:
        if args.web is None or exc.name not in ("aiohttp", "PIL"):
            raise
        log.error("hwsim cannot run: the web page needs the Python package %s, which is not "
                  "installed (pip install 'posterm[web]', or ./run sets it up)", exc.name)
        return 1
    return 0


def ctl_commands() -> dict[str, list[Op]]:
    """`hwsim ctl`'s subcommands: each op's command, ops sharing one grouped, in the
    order the ops are declared (streams are for the firmware's stand-ins only)."""
    commands: dict[str, list[Op]] = {}
    for op in OPS:
        if not op.stream:
            commands.setdefault(op.command, []).append(op)
    return commands


def _add_command(subcommands: Any, name: str, group: list[Op]) -> None:
    short = " / ".join(op.help for op in group)
    about = " ".join(op.about for op in group if op.about) or "; ".join(
        f"{op.action}: {op.help}" if op.action else op.help for op in group) + "."
    parser = subcommands.add_parser(name, help=_escape(short), description=_escape(about))
    if all(op.action for op in group) and len(group) > 1:
        parser.add_argument("action", choices=[op.action for op in group])
    shared: dict[str, list[Arg]] = {}
    for op in group:
        for arg in op.args:
            if arg.flag and sum(a.flag == arg.flag for a in op.args) > 1:
                shared.setdefault(arg.flag, []).append(arg)
            else:
                _add_arg(parser, arg)
        for option in op.cli_options:
            parser.add_argument(*option.flags, **option.options)
    for flag, args in shared.items():
        parser.add_argument(flag, nargs=len(args), type=_TYPES[args[0].kind], dest=flag,
                            metavar=tuple(a.metavar or a.name.upper() for a in args),
                            help=_escape(args[0].help if len(group) == 1 else
                                         next(op.help for op in group if args[0] in op.args)))


_TYPES: dict[type, Callable[[str], Any]] = {int: int, float: float, str: str, bool: str,
                                            list: str, bytes: int}  # fmt: skip


def _add_arg(parser: argparse.ArgumentParser, arg: Arg) -> None:
    """One argument of an op on its command line (see `hwsim.opspec.Arg`)."""
    text = arg.help
    if not arg.required and arg.default not in (None, False):
        text += f" (default {arg.default})"
    kw: dict[str, Any] = {"help": _escape(text), "dest": arg.name, "default": None}
    if arg.consts:
        first = next(iter(arg.consts))
        for flag, const in arg.consts.items():
            parser.add_argument(flag, action="store_const", const=const,
                                **(kw if flag == first else {**kw, "help": f"see {first}"}))
        return
    if arg.words is not None:
        kw["choices"] = list(arg.words)
    elif arg.choices:
        kw["choices"] = list(arg.choices)
    if arg.kind is bool and arg.words is None:
        kw["action"] = "store_true"
    else:
        kw["type"] = str if arg.words is not None else _TYPES[arg.kind]
        if arg.metavar and "choices" not in kw:
            kw["metavar"] = arg.metavar
    if arg.kind in (list, bytes):
        kw["nargs"] = "+"
    if arg.flag == "":
        del kw["dest"]
        kw["nargs"] = arg.nargs or kw.get("nargs") or (None if arg.required else "?")
        parser.add_argument(arg.name, **kw)
    else:
        flag = arg.flag or "--" + arg.name.replace("_", "-")
        parser.add_argument(flag, *arg.aliases, required=arg.required, **kw)


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def request_for(args: argparse.Namespace) -> tuple[Op, dict[str, Any]]:
    """The op a `ctl` command line asks for and the request's arguments."""
    group = ctl_commands()[args.ctl]
    for flag, values in list(vars(args).items()):
        if flag.startswith("--"):  # one option for several args: each its value
            for op in group:
                named = [a for a in op.args if a.flag == flag]
                for arg, value in zip(named, values or [None] * len(named), strict=bool(named)):
                    setattr(args, arg.name, value)
    if len(group) == 1:
        op = group[0]
    elif all(op.action for op in group):
        op = next(op for op in group if op.action == args.action)
    else:  # the first whose required args are all given; else the one that needs none
        op = next((op for op in group if any(a.required for a in op.args)
                   and all(getattr(args, a.name) is not None for a in op.args if a.required)),
                  next(op for op in group if not any(a.required for a in op.args)))
    params = {}
    for arg in op.args:
        value = getattr(args, arg.name, None)
        if value is not None:
            params[arg.name] = arg.words[value] if arg.words is not None else value
    if op.cli_prepare is not None:
        params = op.cli_prepare(args, params)
    return op, params


def _ctl(args: argparse.Namespace) -> int:
    client = HwsimClient.from_dir(args.dir)
    try:
        op, params = request_for(args)
        reply = client.request(op.name, **params)
    except HwsimUnavailable:
        print(f"hwsim is not running in {args.dir}: start it with `hwsim run --dir {args.dir}`",
              file=sys.stderr)  # fmt: skip
        return 2
    except (HwsimError, ValueError) as exc:
        print(f"hwsim: {exc}", file=sys.stderr)
        return 1
    text = ""
    if not args.json or getattr(args, "png", None) is not None:  # --png writes even with --json
        show = op.show or ctlview.fields
        try:
            text = show(reply, args)
        except OSError as exc:  # receipts --png: OUTDIR cannot be written
            print(f"hwsim: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    elif text:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
