"""The first command a person types: `./run demo`, any number of times in a row.

Runs scripts/demo.py as `./run demo` does (its own state under a temporary
directory), twice in a row, then once with --keep followed by a plain run, which
must stop the demo left running first. Each run must end with a sale approved
and the host's ledger entry for it: a fresh world each time, the firmware's
journal and the host's ledger from the same run.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.rig import ROOT, _env


def _demo(base: pathlib.Path, *extra: str) -> str:
    # output to a file, not a pipe: with --keep, hwsim and posterm keep the demo's stdout
    out_path = base.parent / f"demo-{len(list(base.parent.glob('demo-*.txt')))}.txt"
    with open(out_path, "w") as out:
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--dir",
                               str(base), *extra], env=_env(), stdout=out,
                              stderr=subprocess.STDOUT, timeout=120)
    text = out_path.read_text()
    assert done.returncode == 0, text
    assert "APPROVED" in text and "charged=True" in text, text
    return text


def _running(base: pathlib.Path) -> list[int]:
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(base).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_the_demo_runs_twice_in_a_row(tmp_path: pathlib.Path) -> None:
    base = tmp_path / "demo"
    first = _demo(base)
    second = _demo(base)
    for out in (first, second):
        # a new ledger each time: the demo's sale is the host's first one
        assert "== host ledger: stan 000002 amount 1250 charged=True" in out, out
    assert _running(base) == []


def test_a_demo_left_running_is_stopped_by_the_next(tmp_path: pathlib.Path) -> None:
    base = tmp_path / "demo"
    _demo(base, "--keep")
    kept = _running(base)
    assert len(kept) == 2, kept  # hwsim and posterm left running
    try:
        out = _demo(base)
        assert out.count("stopped the demo left running") == 2, out
        assert _running(base) == []
    finally:
        for pid in _running(base):
            os.kill(pid, 9)
