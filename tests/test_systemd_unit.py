"""The systemd unit: `systemd-analyze verify` passes and the exposure score stays low.

The score is printed (run pytest with -s to see it) and must not rise above
EXPOSURE_MAX, the figure the README states.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNITS = ("posterm.service", "posterm-retry.timer", "posterm-retry.service",
         "posterm-fleet-update.path", "posterm-fleet-update.service")
EXPOSURE_MAX = 1.5

analyze = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(analyze is None,
                                reason="systemd-analyze is not installed on this machine")


def _units(tmp: pathlib.Path) -> pathlib.Path:
    """The units as shipped, with ExecStart pointing at this checkout's posterm (verify
    checks that the command exists)."""
    posterm = pathlib.Path(sys.executable).parent / "posterm"
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text()
        (tmp / name).write_text(text.replace("/opt/posterm/.venv/bin/posterm", str(posterm)))
    return tmp


def test_units_verify(tmp_path: pathlib.Path) -> None:
    units = _units(tmp_path)
    out = subprocess.run([str(analyze), "verify", *(str(units / u) for u in UNITS)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ours = [line for line in out.stderr.splitlines() if "posterm" in line]
    assert ours == [], ours


def test_exposure_score(tmp_path: pathlib.Path) -> None:
    unit = _units(tmp_path) / "posterm.service"
    out = subprocess.run([str(analyze), "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for posterm\.service: ([0-9.]+)", out.stdout)
    assert found, out.stdout + out.stderr
    score = float(found.group(1))
    print(f"\nposterm.service exposure score: {score} (must stay <= {EXPOSURE_MAX})")
    worst = [line for line in out.stdout.splitlines() if line.startswith("✗")]
    print("\n".join(worst))
    assert score <= EXPOSURE_MAX


# root's fleet update service runs dpkg and systemctl: the file system stays writable and
# it keeps the capabilities to own files, but no network, devices, namespaces or kernel
EXPOSURE_MAX_ROOT_SIDE = 2.5


def test_fleet_update_service_exposure_and_path(tmp_path: pathlib.Path) -> None:
    unit = _units(tmp_path) / "posterm-fleet-update.service"
    out = subprocess.run([str(analyze), "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for posterm-fleet-update\.service: ([0-9.]+)",
                      out.stdout)
    assert found, out.stdout + out.stderr
    score = float(found.group(1))
    print(f"\nposterm-fleet-update.service exposure score: {score} "
          f"(must stay <= {EXPOSURE_MAX_ROOT_SIDE})")
    assert score <= EXPOSURE_MAX_ROOT_SIDE
    text = unit.read_text()
    for line in ("Type=oneshot", "NoNewPrivileges=yes", "PrivateNetwork=yes",
                 "RestrictAddressFamilies=AF_UNIX", "--fleet-request "
                 "/var/lib/posterm/fleet-update/request.json"):
        assert line in text, line
    path = (ROOT / "systemd" / "posterm-fleet-update.path").read_text()
    assert "PathExists=/var/lib/posterm/fleet-update/request.json" in path
    assert "WantedBy=paths.target" in path


def test_unit_is_notify_with_watchdog_and_never_gives_up() -> None:
    text = (ROOT / "systemd" / "posterm.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StateDirectory=posterm",
                 "ConfigurationDirectory=posterm", "RuntimeDirectory=posterm",
                 "OnFailure=posterm-retry.timer", "DevicePolicy=closed"):
        assert line in text, line


def test_device_allow_drop_in_names_exactly_the_configured_devices(tmp_path: pathlib.Path
                                                                     ) -> None:
    from firmware.config import parse
    from firmware.runtime.devices import drop_in

    cfg = parse({
        "terminal": {"id": "T1", "merchant_id": "M1", "merchant_name": "SHOP",
                     "currency": "978", "state_dir": str(tmp_path / "state")},
        "host": {"host": "127.0.0.1", "port": 5000, "tls": False},
        "card_reader": {"backend": "serial", "port": "/dev/ttyUSB3"},
        "keypad": {"backend": "evdev", "path": "/dev/input/event7"},
        "printer": {"backend": "serial", "device": "/dev/ttyS2"},
        "display": {"backend": "smbus2", "bus": 3},
        "gpio": {"backend": "rpi"},
    })
    text = drop_in(cfg)
    allowed = [line for line in text.splitlines() if line.startswith("DeviceAllow=")]
    assert allowed == ["DeviceAllow=", "DeviceAllow=/dev/ttyUSB3 rw", "DeviceAllow=/dev/ttyS2 rw",
                       "DeviceAllow=/dev/i2c-3 rw", "DeviceAllow=/dev/input/event7 r",
                       "DeviceAllow=/dev/gpiomem rw", "DeviceAllow=/dev/gpiochip0 rw"]
    assert "DevicePolicy=closed" in text
    # with the simulator only the card reader's pseudo-terminal is a device node
    sim = parse({**{k: v for k, v in cfg.raw.items()},
                 "card_reader": {"backend": "serial", "port": "socket://127.0.0.1:7"},
                 "keypad": {"backend": "hwsim", "socket": str(tmp_path / "c.sock")},
                 "printer": {"backend": "network", "host": "127.0.0.1"},
                 "display": {"backend": "hwsim", "socket": str(tmp_path / "c.sock")},
                 "gpio": {"backend": "none"}})
    assert [line for line in drop_in(sim).splitlines()
            if line.startswith("DeviceAllow=")] == ["DeviceAllow="]
    unit_dir = _units(tmp_path)
    (unit_dir / "posterm.service.d").mkdir()
    (unit_dir / "posterm.service.d" / "devices.conf").write_text(text)
    out = subprocess.run([str(analyze), "verify", str(unit_dir / "posterm.service")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
