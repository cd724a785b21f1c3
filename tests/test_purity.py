"""The core imports no I/O: the project's own check and the architecture's check agree."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "threading", "subprocess", "time",
             "sqlite3", "serial", "evdev", "smbus2", "RPi", "escpos", "drivers", "hwsim",
             "random", "os"}


def test_core_imports_nothing_forbidden() -> None:
    bad = []
    for path in sorted((ROOT / "firmware" / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert bad == []


def test_core_loads_without_drivers_or_hwsim() -> None:
    code = ("import sys, firmware.core.machine, firmware.core.iso, firmware.core.receipt;"
            "bad=[m for m in ('drivers','hwsim','asyncio','socket','serial','evdev','smbus2',"
            "'escpos','sqlite3') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_shared_purity_check_passes_when_available() -> None:
    check = ROOT.parent / "shared" / "checks" / "core_purity.py"
    if not check.exists():
        return
    out = subprocess.run([sys.executable, str(check), str(ROOT)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout
