"""TLS, and the one clear message for a bad device path or an unreachable host."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

from hwsim import testca as tlsutil
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


def test_host_signed_by_another_ca_is_refused(tmp_path: pathlib.Path) -> None:
    _test_ca_for_hwsim(tmp_path)
    other_ca, _ = tlsutil.make_ca(str(tmp_path / "other"))
    with Rig(tmp_path, tls=True) as rig:
        rig.start_sim()
        rig.write_config(host={"tls": True, "ca_file": other_ca},
                         timeouts={"busy_retries": 1})
        rig.start_fw()
        rig.sale("9000", PAN)  # over the offline floor limit
        rig.hw.wait_display("HOST UNAVAILABLE", timeout=20)
        log = rig.log()
        assert "TLS certificate is not trusted" in log
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
        rig.write_config(card_reader={"port": "/dev/ttyNOSUCH0"})
        out = subprocess.run([sys.executable, "-m", "firmware", "--config",
                              str(rig.config_path)], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 3
        assert "card reader: cannot open /dev/ttyNOSUCH0" in out.stderr
        assert "Traceback" not in out.stderr


def test_help_texts() -> None:
    for args in (["-m", "firmware", "--help"], ["-m", "hwsim", "--help"],
                 ["-m", "hwsim", "ctl", "--help"]):
        out = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 0 and "usage:" in out.stdout
