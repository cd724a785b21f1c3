"""docs/architecture.md matches the tree, and the import rules it states hold.

- Every module under firmware/, drivers/ and hw-sim/ is named in the document
  (a new module means a new line there).
- Who may import whom, read from each module's own import statements (ast):
  core imports only core; firmware/ outside runtime never imports the runtime;
  drivers import only the core's vocabulary, the ports, the errors and other
  drivers; hwsim never imports the runtime nor the drivers, but for the shared
  helpers of SHARED_WITH_HWSIM, which import nothing from the project; the fleet
  console (fleet/) imports only itself and SHARED_WITH_FLEET, which import nothing from
  the project either.
- A hardware library is imported only by its own driver.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
HARDWARE = {  # library -> the only driver modules that may import it
    "evdev": {"drivers/keypad.py"},
    "serial": {"drivers/magstripe.py", "drivers/modemport.py", "drivers/printer.py"},
    "smbus2": {"drivers/lcd.py", "drivers/gauge.py"},
    "RPi": {"drivers/gpio.py"},
    "escpos": {"drivers/printer.py"},
    "smartcard": {"drivers/chipreader.py"},
}
DRIVER_MAY = ("firmware.core.events", "firmware.core.card", "firmware.ports", "firmware.errors",
              "drivers")
SHARED_WITH_HWSIM = ("drivers.fdpump",)  # mechanism without protocol: bytes in and out of an fd
# what the console must do exactly as the terminal does: version order, the update's checks
SHARED_WITH_FLEET = ("firmware.debversion", "firmware.updateargs", "firmware.mqtt5")


def _modules(folder: str) -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py")
                  if p.name != "__init__.py" and "webui" not in p.parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module name the file imports (absolute), at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("folder", ["firmware", "drivers", "hw-sim"])
def test_every_module_is_in_the_architecture_document(folder: str) -> None:
    missing = [_rel(p) for p in _modules(folder) if f"`{p.name}`" not in DOC]
    assert missing == [], f"docs/architecture.md does not name: {missing}"


def test_the_core_imports_only_the_core() -> None:
    bad = {_rel(p): sorted(n for n in _imports(p) if _under(n, "firmware", "drivers", "hwsim")
                           and not _under(n, "firmware.core"))
           for p in _modules("firmware/core")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_nothing_outside_the_runtime_imports_the_runtime() -> None:
    outside = [p for p in _modules("firmware") if "runtime" not in p.parts
               and p.name != "__main__.py"]  # the command line starts the runtime
    outside += _modules("drivers") + _modules("hw-sim")
    bad = {_rel(p): sorted(n for n in _imports(p) if _under(n, "firmware.runtime"))
           for p in outside}
    assert {k: v for k, v in bad.items() if v} == {}


def test_drivers_import_only_the_core_vocabulary_ports_and_errors() -> None:
    bad = {_rel(p): sorted(n for n in _imports(p) if _under(n, "firmware", "drivers", "hwsim")
                           and not _under(n, *DRIVER_MAY))
           for p in _modules("drivers")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_hwsim_imports_neither_the_runtime_nor_the_drivers() -> None:
    bad = {_rel(p): sorted(n for n in _imports(p) if _under(n, "firmware.runtime", "drivers")
                           and n not in SHARED_WITH_HWSIM)
           for p in _modules("hw-sim")}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("module", SHARED_WITH_HWSIM)
def test_what_hwsim_shares_with_the_drivers_imports_nothing_from_the_project(module: str) -> None:
    """A helper hwsim may import from drivers/ brings no driver, no firmware along: what
    the simulator and the firmware share is mechanism, never how a device is spoken to."""
    path = ROOT / (module.replace(".", "/") + ".py")
    assert sorted(n for n in _imports(path) if _under(n, "firmware", "drivers", "hwsim")) == []


def _imports_named(path: pathlib.Path) -> set[str]:
    """As `_imports`, and `from package import module` names the module itself."""
    names = _imports(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(f"{node.module}.{a.name}" for a in node.names)
            if any(f"{node.module}.{a.name}" in SHARED_WITH_FLEET for a in node.names):
                names.discard(node.module)
    return names


def test_the_fleet_console_imports_only_itself_and_what_it_shares() -> None:
    bad = {_rel(p): sorted(n for n in _imports_named(p) if n.split(".")[0] in
                           ("firmware", "drivers", "hwsim")
                           and n not in SHARED_WITH_FLEET and not any(
                               n.startswith(s + ".") for s in SHARED_WITH_FLEET))
           for p in sorted((ROOT / "fleet").rglob("*.py"))}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("module", SHARED_WITH_FLEET)
def test_what_the_console_shares_with_the_firmware_imports_nothing_from_the_project(
        module: str) -> None:
    """The console brings no part of the terminal along: only pure functions both must
    apply the same way."""
    path = ROOT / (module.replace(".", "/") + ".py")
    assert sorted(n for n in _imports(path) if _under(n, "firmware", "drivers", "hwsim",
                                                      "fleet")) == []


def test_a_hardware_library_is_imported_only_by_its_driver() -> None:
    everything = _modules("firmware") + _modules("drivers") + _modules("hw-sim")
    bad = {}
    for path in everything:
        for lib, allowed in HARDWARE.items():
            if any(_under(n, lib) for n in _imports(path)) and _rel(path) not in allowed:
                bad.setdefault(_rel(path), []).append(lib)
    assert bad == {}


def test_every_effect_the_core_can_ask_for_has_a_runner() -> None:
    """One table (firmware/runtime/runners.py `table`) runs the effects: each type in
    the core's Effect union has its entry, so a new effect cannot be forgotten."""
    import typing

    from firmware.core.effects import Effect
    from firmware.runtime import runners
    from firmware.runtime.current import Current
    from firmware.runtime.decisions import Decisions
    from firmware.runtime.graph import Parts

    parts = Parts.__new__(Parts)  # the table only, no devices: its parts as bare objects
    parts.decisions = Decisions.__new__(Decisions)
    table = runners.table(parts, Current(), None, spawn=print,  # type: ignore[arg-type]
                          answer=print, start_timer=print)
    assert set(typing.get_args(Effect)) == set(table)


# runtime modules that read the machine's clocks themselves: clock.py; the updater, which
# runs outside the firmware's loop (posterm-update); and two journal reads whose `now`
# argument defaults to the machine's time (their callers in the loop pass the clock's)
READS_TIME_ITSELF = {"clock.py", "update.py", "journal_void.py", "journal_view.py"}


def test_runtime_parts_take_the_clock_they_are_given() -> None:
    """`time.monotonic()`, `time.time()` and `datetime.now()` are called only in the
    modules listed above; every other part takes the clock it is given (clock.py)."""
    import re

    calls = re.compile(r"\btime\.(monotonic|time)\(\)|\bdatetime\.now\(")
    bad = sorted(p.name for p in (ROOT / "firmware" / "runtime").glob("*.py")
                 if p.name not in READS_TIME_ITSELF and calls.search(p.read_text()))
    assert bad == [], f"read the clock themselves: {bad}"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports when it is loaded (module level, outside
    `if TYPE_CHECKING:`; an import inside a function is a deliberate late binding)."""
    modules: dict[str, pathlib.Path] = {}
    for folder, package in (("firmware", "firmware"), ("drivers", "drivers"),
                            ("hw-sim", "hwsim")):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            modules[".".join((package, *parts)).removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        body = ast.parse(path.read_text()).body
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef,
                                                                ast.AsyncFunctionDef,
                                                                ast.ClassDef)) else ():
                if isinstance(sub, ast.Import):
                    deps |= {a.name for a in sub.names if a.name in modules}
                elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                    deps |= {sub.module} & modules.keys()
                    deps |= {f"{sub.module}.{a.name}" for a in sub.names} & modules.keys()
        graph[name] = deps - {name}
    return graph


def test_no_import_circle() -> None:
    graph = _import_graph()
    circles: list[str] = []

    def visit(node: str, trail: list[str], done: set[str]) -> None:
        if node in trail:
            circles.append(" -> ".join(trail[trail.index(node):] + [node]))
            return
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, trail + [node], done)
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [], done)
    assert circles == []


def test_modules_stay_small_enough_to_hold_in_mind() -> None:
    """No module under firmware/ or drivers/ over 450 lines; the loop (app.py) under 300."""
    sizes = {_rel(p): len(p.read_text().splitlines())
             for folder in ("firmware", "drivers") for p in (ROOT / folder).rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > 450} == {}
    assert sizes["firmware/runtime/app.py"] < 300
