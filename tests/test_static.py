"""The project's conventions, checked: mypy --strict on firmware/, ruff on everything."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mypy_strict_on_firmware() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "firmware/"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_lint() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "firmware", "drivers",
                          "hw-sim", "tests", "bench", "scripts"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
