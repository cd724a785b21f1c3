"""`posterm status`: asks the running terminal, or reads the journal; exit codes for monitoring."""

from __future__ import annotations

import json
import pathlib
import stat
import subprocess
import sys

from tests.rig import ROOT, Rig, _env

PAN = "4761739001010010"


def status(rig: Rig, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware", "--config", str(rig.config_path),
                           "status", *extra], capture_output=True, text=True, timeout=30,
                          env=_env(), cwd=ROOT)


def test_healthy_degraded_and_down(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"offline": {"down_after": 1}}) as rig:
        rig.start()
        rig.wait_led(True)
        rig.sale("1800", PAN)
        rig.hw.wait_display("APPROVED")
        out = status(rig)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "healthy" in out.stdout.splitlines()[0]
        assert "bank link:      UP via ETH" in out.stdout
        assert "#1" in out.stdout and "APPROVED" in out.stdout and "476173******0010" in out.stdout
        doc = json.loads(status(rig, "--json").stdout)
        assert doc["running"] and doc["health"] == 0 and doc["journal"]["integrity"] == "ok"
        assert doc["key"] == {"present": True, "readable": True}
        assert doc["last_sale"]["outcome"] == "APPROVED" and doc["version"]
        sock = rig.state_dir / "status.sock"  # no runtime dir here: the state dir holds it
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600

        rig.hw.host_down()
        rig.hw.press("CANCEL")
        rig.sale("1900", PAN)
        rig.hw.wait_display("APPROVED OFFLINE", timeout=15)
        out = status(rig)
        assert out.returncode == 1, out.stdout
        assert "1 offline sale(s) not yet sent" in out.stdout and "DOWN" in out.stdout

        rig.kill_fw()
        out = status(rig, "--json")
        doc = json.loads(out.stdout)
        assert out.returncode == 2 and not doc["running"]
        assert "posterm is not running" in doc["reasons"]
        assert doc["queue"]["advices"] == 1 and doc["last_sale"]["amount"] == 1900
        assert PAN not in out.stdout


def test_damaged_journal_is_down(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start()
        rig.kill_fw()
        for suffix in ("-wal", "-shm"):
            (rig.state_dir / f"journal.sqlite3{suffix}").unlink(missing_ok=True)
        rig.journal_path.write_bytes(b"garbage" * 1000)
        out = status(rig)
        assert out.returncode == 2
        assert "journal: cannot be read" in out.stdout
        assert "Traceback" not in out.stderr
