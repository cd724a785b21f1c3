"""hwsim's control ops and host fault kinds are each declared once, and every way in
reaches them.

- The registry (hwsim.ops, hwsim.opspec) refuses an op declared twice; the fault
  kinds (hwsim.hostfaults.KINDS) are unique and everything about them is derived.
- Every op is reachable from `hwsim ctl` (each of its arguments too) and from
  `HwsimClient`; the page's ops are exactly the catalogue the page is sent.
- No op name and no fault kind is written as a string in client.py, __main__.py,
  web.py or the page's JavaScript: they name ops through the registry (`ops.press`)
  or get them from the hello.
- Requests are checked: an unknown op, a missing, extra or ill-typed argument gets a
  specific error answer, never a traceback.
- hwsim's modules import no circle (ledger and settlement in particular).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import json
import pathlib
import re
from typing import Any

import pytest

from hwsim import hostfaults, ops
from hwsim.__main__ import build_parser, ctl_commands, request_for
from hwsim.client import HwsimClient
from hwsim.control import ControlServer
from hwsim.opspec import Arg, Op, Registry, RequestError
from hwsim.web import PAGE_OPS, STATIC_FILES, TOPICS, WebUI

ROOT = pathlib.Path(__file__).resolve().parent.parent
HWSIM = ROOT / "hw-sim"
NAMES = set(ops.OPS.names())
REQUESTED = [op for op in ops.OPS if not op.stream]  # the streams are the stand-ins' own


# -- declared once ------------------------------------------------------------------------

def test_an_op_declared_twice_is_refused() -> None:
    registry = Registry()

    @registry.op(Arg("n", int, 1), help="one")
    def twice(context: object, n: int) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="declared twice"):
        registry.add(Op("twice", None, (), "again"))
    with pytest.raises(TypeError, match="the handler takes"):
        @registry.op(Arg("n", int), help="arguments that are not the handler's")
        def other(context: object, m: int) -> dict[str, Any]:
            return {}
    assert len(ops.OPS) == len(NAMES)
    for op in ops.OPS:  # each handler takes exactly its declared arguments
        if op.handler is not None:
            assert list(inspect.signature(op.handler).parameters)[1:] == list(op.arg_names)
        assert len(set(op.arg_names)) == len(op.args), op.name


def test_fault_kinds_are_declared_once_and_the_rest_derived() -> None:
    kinds = [k.kind for k in hostfaults.KINDS]
    assert len(kinds) == len(set(kinds))
    assert hostfaults.FAULT_KINDS == set(kinds)
    assert set(hostfaults.MESSAGE_FAULTS) | hostfaults.CONNECTION_FAULTS == set(kinds)
    every_param = {p for k in hostfaults.KINDS for p in k.params}
    assert every_param == set(hostfaults.PARAM_TYPES)
    # the control op takes exactly the kinds' parameters besides kind, count and mti
    assert set(ops.host_fault.arg_names) == {"kind", "count", "mti"} | every_param
    # busy answers 91 ("issuer or switch inoperative") unless told 96; both mean "not
    # processed" in host-interface.md
    busy = hostfaults.BY_KIND["busy"]
    assert busy.params == {"code": "91"} and busy.codes == ("91", "96")
    plan = hostfaults.FaultPlan()
    assert plan.add("busy").code == "91" and plan.add("busy", code="96").code == "96"
    with pytest.raises(ValueError, match="takes code 91 or 96"):
        plan.add("busy", code="05")


# -- reachable from the command line, the client and the page ---------------------------

SAMPLES: dict[type, str] = {int: "1", float: "1.5", str: "x", list: "OK", bytes: "8"}


def _value(arg: Arg) -> list[str]:
    if arg.consts:
        return [next(iter(arg.consts))]
    if arg.kind is bool and arg.words is None:
        return []
    if arg.words is not None:
        return [next(iter(arg.words))]
    return [str(arg.choices[0]) if arg.choices else SAMPLES[arg.kind]]


def _argv(op: Op, every: bool) -> list[str]:
    """A `hwsim ctl` command line for `op`: its required args, or `every` one."""
    argv = ["ctl", "--dir", "d", op.command] + ([op.action] if op.action else [])
    shared: dict[str, list[str]] = {}
    for arg in op.args:
        if not (every or arg.required):
            continue
        if arg.flag == "":
            argv += _value(arg)
        elif arg.flag and sum(a.flag == arg.flag for a in op.args) > 1:
            shared.setdefault(arg.flag, []).extend(_value(arg))
        else:
            flag = next(iter(arg.consts)) if arg.consts else (
                arg.flag or "--" + arg.name.replace("_", "-"))
            argv += [flag] + ([] if arg.consts else _value(arg))
    for flag, values in shared.items():
        argv += [flag, *values]
    return argv


@pytest.mark.parametrize("op", REQUESTED, ids=lambda op: op.name)
def test_every_op_and_every_argument_is_on_the_command_line(op: Op) -> None:
    parser = build_parser()
    for every in (False, True):
        args = parser.parse_args(_argv(op, every))
        if op.name == ops.swipe.name:
            args.pan, args.raw, args.bad = "4761739001010010", None, None  # exactly one
        chosen, params = request_for(args)
        assert chosen is op
        op.arguments(params)  # what the command line sends passes the op's own checks
        if every:
            given = {a.name for a in op.args} - ({"raw", "bad"} if op is ops.swipe else set())
            assert set(params) == given, _argv(op, every)


def test_the_command_lines_people_type_still_work() -> None:
    parser = build_parser()
    cases: list[tuple[list[str], Op, dict[str, Any]]] = [
        (["swipe", "4761739001010010", "--expiry", "2812"], ops.swipe,
         {"pan": "4761739001010010", "expiry": "2812"}),
        (["swipe", "--raw", "abc"], ops.swipe, {"raw": "abc\r"}),
        (["swipe", "--raw", "abc", "--no-cr"], ops.swipe, {"raw": "abc"}),
        (["press", "2000", "OK"], ops.press, {"keys": ["2000", "OK"]}),
        (["receipts", "--last"], ops.receipts, {}),
        (["receipts", "--png", "out"], ops.receipts, {"styled": True}),
        (["fault", "late", "--seconds", "40"], ops.host_fault, {"kind": "late", "seconds": 40.0}),
        (["fault", "busy", "--mti", "0500"], ops.host_fault, {"kind": "busy", "mti": "0500"}),
        (["clear"], ops.host_clear, {}), (["down"], ops.host_down, {}), (["up"], ops.host_up, {}),
        (["out-of-balance", "--clear"], ops.host_out_of_balance, {"clear": True}),
        (["host-latency", "--seconds", "0.1"], ops.host_latency, {"seconds": 0.1}),
        (["printer-fault", "--near-end", "--slow", "2"], ops.printer_fault,
         {"paper_near_end": True, "slow_seconds": 2.0}),
        (["printer-fault", "--paper-near-end"], ops.printer_fault, {"paper_near_end": True}),
        (["paper-load"], ops.printer_load_paper, {}),
        (["reader", "unplug"], ops.reader_unplug, {}), (["reader", "state"], ops.reader_state, {}),
        (["display-fault", "--count", "2", "--power-loss"], ops.display_fault,
         {"count": 2, "power_loss": True}),
        (["gpio"], ops.gpio_state, {}),
        (["gpio", "--set", "25", "0"], ops.gpio_set_input, {"pin": 25, "level": 0}),
        (["battery", "--percent", "12", "--rate", "-3.5"], ops.battery,
         {"percent": 12.0, "rate": -3.5}),
        (["battery", "--fail"], ops.battery, {"failing": True}),
        (["battery", "--answer"], ops.battery, {"failing": False}),
        (["power", "fail"], ops.power, {"state": "fail"}), (["power"], ops.power, {}),
        (["modem", "--sim", "absent", "--registration", "roaming", "--power", "on", "--drop"],
         ops.modem, {"sim_present": False, "registration": 5, "power": True, "drop": True}),
        (["primary", "down", "--mode", "blackhole"], ops.primary,
         {"action": "down", "mode": "blackhole"}),
        (["ledger"], ops.ledger, {}), (["info"], ops.info, {}),
    ]
    for argv, op, params in cases:
        chosen, sent = request_for(parser.parse_args(["ctl", "--dir", "d", *argv]))
        assert (chosen, sent) == (op, params), argv
    with pytest.raises(ValueError, match="exactly one"):
        request_for(parser.parse_args(["ctl", "--dir", "d", "swipe"]))


def test_every_op_is_reachable_from_the_client() -> None:
    tree = ast.parse((HWSIM / "client.py").read_text())
    named = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Name) and node.value.id == "ops"}
    assert named <= NAMES, named - NAMES
    assert {op.name for op in REQUESTED} <= named

    sent: list[tuple[str, dict[str, Any]]] = []

    class Recording(HwsimClient):
        def request(self, op: str, **params: Any) -> dict[str, Any]:
            sent.append((op, params))
            return {"rows": [], "listeners": 0, "refused": 0, "seconds": 0.0, "pending": 1,
                    "mains": True, "served": {}, "level": 1, "data": []}

    client = Recording("unused")
    client.host_down()
    client.power_fail()
    client.swipe("4761739001010010")
    client.host_latency()
    assert sent == [("host_down", {}), ("power", {"state": "fail"}),
                    ("swipe", {"pan": "4761739001010010"}), ("host_latency", {})]
    with pytest.raises(TypeError, match="takes no argument colour"):
        client.call(ops.battery, colour="red")
    # the public methods tests and scripts use are all there
    for name in ("swipe", "press", "display", "wait_display", "receipts", "partial_receipt",
                 "printer_fault", "printer_clear", "printer_load_paper", "printer_state",
                 "reader_unplug", "reader_plug", "reader_state", "display_fault",
                 "display_clear", "i2c_stats", "i2c_log", "display_fault_state", "ledger",
                 "messages", "host_fault", "host_clear", "host_down", "host_up",
                 "host_default", "host_latency", "host_out_of_balance",
                 "host_out_of_balance_clear", "batches", "control_stats", "gpio_state",
                 "gpio_set_input", "battery", "power_fail", "power_restore", "mains", "modem",
                 "modem_state", "primary_down", "primary_up", "primary_state", "info",
                 "request", "from_dir"):
        assert callable(getattr(HwsimClient, name)), name


def test_the_page_is_sent_the_catalogue_of_its_ops_and_the_fault_kinds() -> None:
    page_ops = {op.name for op in ops.OPS if op.page}
    assert PAGE_OPS == page_ops == set(ops.OPS.catalogue())
    assert not page_ops & {n for n in NAMES if n.startswith(("i2c_", "gpio_"))}

    class Sim:
        host = None

    hello = WebUI(Sim())._hello()  # type: ignore[arg-type]
    assert hello["ops"] == ops.OPS.catalogue()
    assert hello["fault_kinds"] == [k.describe() for k in hostfaults.KINDS]
    assert hello["fault_classes"] == [*hostfaults.REQUEST_CLASSES, "*"]
    json.dumps(hello, allow_nan=False)
    press = hello["ops"]["press"]
    assert press["args"] == [{"name": "keys", "type": "strings", "required": True,
                              "help": ops.KEYS_HELP}]
    # every `ops.X` the page's JavaScript names is a page op
    for name, text in _page_scripts().items():
        used = set(re.findall(r"\bops\.(\w+)", text))
        assert used <= page_ops, (name, used - page_ops)


# -- no op name or fault kind written twice ------------------------------------------------

def _page_scripts() -> dict[str, str]:
    return {name: (HWSIM / "webui" / name).read_text() for name in STATIC_FILES
            if name.endswith(".js")}


def _strings(tree: ast.AST) -> set[str]:
    """The string constants of a module, but the keys of its data (a dict literal's keys,
    a subscript's index): an answer's field may share an op's name ("receipts")."""
    keys = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys}
    keys |= {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in keys}


def test_no_op_name_or_fault_kind_is_written_as_a_string_outside_the_registry() -> None:
    # an op's name, or a fault kind that is not also a value an op declares (the primary
    # path's modes are "refuse" and "blackhole" too)
    declared = {str(c) for op in ops.OPS for a in op.args for c in a.choices}
    words = NAMES | (set(hostfaults.FAULT_KINDS) - declared)
    topics = set(TOPICS)  # the page's message types: "display" and "ledger" are topics too
    found: dict[str, set[str]] = {}
    for name in ("client.py", "__main__.py", "web.py"):
        allowed = topics if name == "web.py" else set()
        found[name] = (_strings(ast.parse((HWSIM / name).read_text())) & words) - allowed
    for name, text in _page_scripts().items():
        strings = {m.group(2) for m in re.finditer(r"([\"'`])(\w+)\1", text)}
        found[name] = (strings & words) - topics
    assert {k: v for k, v in found.items() if v} == {}
    assert len(_page_scripts()) >= 5  # main, socket, dom and the panels


def test_every_file_of_the_page_is_packaged() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["hwsim.webui"]
    webui = HWSIM / "webui"
    packaged = {p.relative_to(webui).as_posix() for g in globs for p in webui.glob(g)}
    assert set(STATIC_FILES) | {"index.html"} <= packaged
    assert not (webui / "app.js").exists()


# -- requests are checked -------------------------------------------------------------------

class FakeLcd:
    def rows(self) -> list[str]:
        return ["HELLO".ljust(20)] + [" " * 20] * 3


class FakeSim:
    lcd = FakeLcd()


def _dispatch(request: dict[str, Any]) -> dict[str, Any]:
    server = ControlServer(ops.OPS, FakeSim(), keypad=None)  # type: ignore[arg-type]
    return asyncio.run(server.dispatch(request))


@pytest.mark.parametrize(("request_", "error"), [
    ({"op": "fly"}, "unknown op 'fly'; known ops: batches, battery"),
    ({}, 'a request needs an "op" string'),
    ({"op": "i2c_write", "addr": 39}, "i2c_write: missing 'data'"),
    ({"op": "i2c_write", "addr": 39, "data": [300]}, "'data' must be a list of bytes (0..255)"),
    ({"op": "i2c_write", "addr": True, "data": [1]}, "'addr' must be int, not True"),
    ({"op": "gpio_setup", "pin": "x", "direction": "out"}, "'pin' must be int, not 'x'"),
    ({"op": "display", "colour": "red"}, "display: unknown colour; known: nothing"),
    ({"op": "host_out_of_balance", "colour": "red"}, "unknown colour; known: count, clear"),
    ({"op": "modem", "colour": "red"}, "modem: unknown setting colour; known: sim_present"),
    ({"op": "press", "keys": "1"}, "'keys' must be a list of strings, not '1'"),
    ({"op": "press", "keys": [1]}, "'keys' must be a list of strings"),
    ({"op": "battery", "rate": float("inf")}, "'rate' must be a finite number"),
    ({"op": "power", "state": "off"}, "'state' must be one of fail, restore, not 'off'"),
    ({"op": "primary", "action": "sideways"}, "'action' must be one of down, up, state"),
    ({"op": "swipe", "raw": ["%B4761739001010010^X^3012?"]}, "'raw' must be str, not list"),
    ({"op": "keypad_listen"}, "keypad_listen is a stream"),
])
def test_a_bad_request_gets_a_specific_error(request_: dict[str, Any], error: str) -> None:
    answer = _dispatch(request_)
    assert answer["ok"] is False and error in answer["error"], answer
    assert "Traceback" not in answer["error"] and "4761739001010010" not in answer["error"]


def test_a_good_request_and_defaults() -> None:
    assert _dispatch({"op": "display"}) == {"ok": True, "rows": FakeLcd().rows()}
    assert _dispatch({"op": "display", "nothing": None})["ok"] is False  # unknown even if null
    args = ops.host_fault.arguments({"op": "host_fault", "kind": "busy", "count": None})
    assert args == {"kind": "busy", "count": 1, "mti": "0200", "seconds": None, "code": None}
    assert ops.battery.arguments({"percent": 5})["percent"] == 5.0  # an int for a float
    with pytest.raises(RequestError, match="missing 'kind'"):
        ops.host_fault.arguments({})


def test_the_command_line_refuses_an_unknown_op() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ctl", "--dir", "d", "fly"])
    assert set(ctl_commands()) >= {"swipe", "fault", "reader", "gpio", "out-of-balance"}
    assert isinstance(build_parser(), argparse.ArgumentParser)


# -- no import circle -----------------------------------------------------------------------

def _runtime_imports(path: pathlib.Path) -> set[str]:
    """The hwsim modules `path` imports at module level, outside `if TYPE_CHECKING:`
    (those name types only)."""
    out: set[str] = set()
    local = {p.stem for p in HWSIM.glob("*.py")}

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.level == 1:
                    out.add(node.module.split(".")[0])
                elif node.module.startswith("hwsim."):
                    out.add(node.module.split(".")[1])
                elif node.module == "hwsim":
                    out.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name.split(".")[1] for a in node.names
                           if a.name.startswith("hwsim."))

    visit(ast.parse(path.read_text()).body)
    return out & local


def test_hwsim_modules_import_no_circle() -> None:
    graph = {p.stem: _runtime_imports(p) for p in HWSIM.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert circles == []
    # the books and the settlement share their entries' module, not each other (not even
    # for type hints)
    for a, b in (("ledger", "settlement"), ("settlement", "ledger")):
        text = (HWSIM / f"{a}.py").read_text()
        assert f"from .{b} import" not in text or a == "ledger", (a, b)
    assert "ledger" not in re.findall(r"from \.(\w+) import", (HWSIM / "settlement.py").read_text())
