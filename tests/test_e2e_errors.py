"""TLS, and the one clear message for a bad device path or an unreachable host."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

from hwsim import testca as tlsutil
from hwsim.fwconfig import dumps
from tests.rig import Rig

PAN = "4761739001010010"


def _test_ca_for_hwsim(tmp: pathlib.Path) -> pathlib.Path:
    """A CA made by the test, and a host certificate it signed, where hwsim --tls looks."""
    tls_dir = tmp / "hwsim" / "tls"
    tls_dir.mkdir(parents=True)
    ca_cert, ca_key = tlsutil.make_ca(str(tmp / "ca"))
    cert, key = tlsutil.make_server_cert(str(tmp / "ca"), ca_cert, ca_key)
    shutil.copy(ca_cert, tls_dir / "ca.pem")
    shutil.copy(cert, tls_dir / "cert.pem")
    shutil.copy(key, tls_dir / "cert.key")
    return pathlib.Path(ca_cert)


def test_sale_over_tls_verified_against_the_test_ca(tmp_path: pathlib.Path) -> None:
    ca = _test_ca_for_hwsim(tmp_path)
    with Rig(tmp_path, tls=True) as rig:
        rig.start_sim()
        rig.write_config(host={"tls": True, "ca_file": str(ca)})
        rig.start_fw()
        rig.sale("4200", PAN)
        rig.hw.wait_display("APPROVED")
        assert "(TLS)" in rig.log()
        assert [e["amount"] for e in rig.hw.ledger() if e["charged"]] == [4200]


@pytest.mark.parametrize("wrong", ["ca", "name"])
def test_untrusted_host_is_not_busy(tmp_path: pathlib.Path, wrong: str) -> None:
    """A TLS identity that does not verify is a configuration error or an attack: shown as
    HOST NOT TRUSTED from start-up, in the status screen, never retried as "busy"."""
    ca = _test_ca_for_hwsim(tmp_path)
    if wrong == "ca":
        ca, _ = tlsutil.make_ca(str(tmp_path / "other"))
    host = {"tls": True, "ca_file": str(ca)}
    if wrong == "name":
        host["server_name"] = "not-the-host.example"
    with Rig(tmp_path, tls=True) as rig:
        rig.start_sim()
        rig.write_config(host=host, timeouts={"busy_retries": 2})
        rig.start_fw()
        rows = rig.hw.wait_display("HOST NOT TRUSTED", timeout=15)  # before any sale
        assert "OFFLINE" in rows[0], rows
        rig.sale("9000", PAN)  # over the offline floor limit
        rows = rig.hw.wait_display("OVER FLOOR LIMIT", timeout=20)
        assert [r.rstrip() for r in rows[:3]] == ["NOT COMPLETED", "HOST NOT TRUSTED",
                                                  "OVER FLOOR LIMIT"], rows
        rig.hw.wait_display("NOT CHARGED")  # the slip is out: the result screen takes OK
        rig.hw.press("OK")
        rig.wait_idle()
        rig.hw.press("F1")
        rig.hw.wait_display("MENU")
        rig.hw.press("3")
        rig.hw.wait_display("BANK NOT TRUSTED")
        log = rig.log()
        assert "NOT TRUSTED" in log and "HOST BUSY" not in log.upper()
        assert "host busy" not in log and "retry 1" not in log
        assert "Traceback" not in log
        assert rig.hw.ledger() == []


def test_unreachable_host_gives_one_clear_message(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path, overrides={"timeouts": {"busy_retries": 1}}) as rig:
        rig.start()
        rig.hw.host_down()
        rig.sale("9000", PAN)  # over the offline floor limit
        rig.hw.wait_display("HOST UNAVAILABLE", timeout=20)
        rows = rig.hw.display()
        assert any("NOT COMPLETED" in r for r in rows), rows
        assert "Traceback" not in rig.log()
        assert "connection refused" in rig.log().lower() or "refused" in rig.log().lower()
        rig.hw.host_up()
        rig.hw.press("OK")
        rig.wait_online()
        rig.sale("9001", PAN)
        rig.hw.wait_display("APPROVED")


def test_missing_device_path_is_one_clear_message(tmp_path: pathlib.Path) -> None:
    with Rig(tmp_path) as rig:
        rig.start_sim()
        # the card reader may be missing at start (it is retried); the keypad may not
        rig.write_config()
        data = tomllib.loads(rig.config_path.read_text())
        data["keypad"] = {"backend": "evdev", "path": "/dev/input/NOSUCH0"}
        rig.config_path.write_text(dumps(data))
        out = subprocess.run([sys.executable, "-m", "firmware", "--config",
                              str(rig.config_path)], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 3, out.stderr
        assert "/dev/input/NOSUCH0" in out.stderr.strip().splitlines()[-1], out.stderr
        assert "Traceback" not in out.stderr


def test_help_texts() -> None:
    for args in (["-m", "firmware", "--help"], ["-m", "hwsim", "--help"],
                 ["-m", "hwsim", "ctl", "--help"]):
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and "usage:" in out.stdout
