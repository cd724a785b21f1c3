"""End-to-end rig: hwsim and the firmware as two real processes, driven like a person would.

    with Rig(tmp_path) as rig:
        rig.start()                       # hwsim, then posterm against it
        rig.sale("1250", "4761739001010010")
        rig.hw.wait_display("APPROVED")

The firmware's stderr goes to `rig.log_path`; `rig.restart()` waits for the new
process's "posterm ready" line. The simulator keeps its state (paper, ledger)
across firmware restarts, as real hardware would.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hwsim.client import HwsimClient
from hwsim.fwconfig import render_config, write_pin_key

ROOT = pathlib.Path(__file__).resolve().parent.parent
T = TypeVar("T")
FAST = {
    "timeouts": {"result": 1.0, "busy_backoff": 0.1, "sale_budget": 8.0},
    "host": {"connect_timeout": 2.0, "response_timeout": 2.0, "repeat_backoff_base": 0.2,
             "repeat_backoff_cap": 1.0},
    "offline": {"probe_base": 0.3, "probe_cap": 1.0},
    # no daily restart unless a test asks for one: what a test sees must not depend on
    # the time of day it runs at (the default window is 03:00-05:00)
    "maintenance": {"restart_window": ""},
}


def wait_until(check: Callable[[], T], timeout: float, what: str | Callable[[], str],
               *, every: float = 0.02) -> T:
    """Look at `check` until it gives something true, and give that; AssertionError
    naming `what` (text, or a function giving it: the state when it gave up) after
    `timeout` seconds. The tests' one way to wait for something to happen: the pause
    between looks is short, so a test waits as long as the thing takes, no longer."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not within {timeout:g} s: {said}")
        time.sleep(every)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["ESCPOS_CAPABILITIES_PICKLE_DIR"] = str(ROOT / ".cache" / "escpos")
    env.pop("POSTERM_FAILPOINT", None)
    env.pop("POSTERM_RAISE", None)
    env.update(extra or {})
    return env


class Rig:
    def __init__(self, tmp: pathlib.Path, *, tls: bool = False, web: bool = False,
                 overrides: dict[str, dict[str, Any]] | None = None,
                 pcsc: Any = None, pin: bool | str = False) -> None:
        self.tmp = tmp
        # [pin] on, with hwsim's test DUKPT key in the state directory: True (AES) or
        # "tdes" (TDES DUKPT, [pin] method = "tdes")
        self.pin = pin
        # a private pcscd with a vpcd reader (tests/chiprig.py): hwsim's chip slot plugs
        # into it and the firmware's [chip] reader is its reader
        self.pcsc = pcsc
        self.sim_dir = tmp / "hwsim"
        self.state_dir = tmp / "state"
        self.tls = tls
        self.web = web  # serve the web page on a free loopback port (self.web_url)
        self.overrides = {k: dict(v) for k, v in FAST.items()}
        if pin == "tdes":
            self.overrides["pin"] = {"method": "tdes"}
        for table, keys in (overrides or {}).items():
            self.overrides.setdefault(table, {}).update(keys)
        self.sim: subprocess.Popen[bytes] | None = None
        self.fw: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "posterm.log"
        self.config_path = tmp / "posterm.toml"
        self.info: dict[str, Any] = {}
        self._hw: HwsimClient | None = None
        self._ready_seen = 0

    # -- processes ------------------------------------------------------------
    def start_sim(self) -> None:
        args = [sys.executable, "-m", "hwsim", "run", "--dir", str(self.sim_dir), "--seed", "7"]
        if self.tls:
            args.append("--tls")
        if self.web:
            args += ["--web", "127.0.0.1:0"]
        args += ["--vpcd-port", str(self.pcsc.port if self.pcsc is not None else 0)]
        self.sim = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=open(self.tmp / "hwsim.log", "ab"))
        info_path = self.sim_dir / "hwsim.json"
        sim = self.sim

        def started() -> bool:
            if sim.poll() is not None:
                raise RuntimeError("hwsim died:\n" + (self.tmp / "hwsim.log").read_text())
            return info_path.exists()

        wait_until(started, 20, "hwsim did not start")
        self.info = json.loads(info_path.read_text())
        self._hw = HwsimClient.from_dir(str(self.sim_dir))

    @property
    def web_url(self) -> str:
        """The web page's address (a Rig made with web=True)."""
        return str(self.info["web"])

    def write_config(self, **extra: dict[str, Any]) -> pathlib.Path:
        overrides = {k: dict(v) for k, v in self.overrides.items()}
        for table, keys in extra.items():
            overrides.setdefault(table, {}).update(keys)
        self.config_path.write_text(render_config(self.info, state_dir=str(self.state_dir),
                                                  overrides=overrides,
                                                  chip=self.pcsc is not None,
                                                  pin=bool(self.pin)))
        if self.pin:
            write_pin_key(self.state_dir, "tdes" if self.pin == "tdes" else "aes")
        return self.config_path

    def start_fw(self, *, failpoint: str | None = None, raise_at: str | None = None,
                 wait: bool = True, env: dict[str, str] | None = None) -> None:
        """Start posterm; `failpoint` SIGKILLs it at that point, `raise_at` makes that point
        raise an unexpected exception once (firmware/runtime/failpoints.py)."""
        if not self.config_path.exists():
            self.write_config()
        extra = {"POSTERM_FAILPOINT": failpoint} if failpoint else {}
        if self.pcsc is not None:
            extra["PCSCLITE_CSOCK_NAME"] = self.pcsc.socket
        if raise_at:
            extra["POSTERM_RAISE"] = raise_at
        extra.update(env or {})
        env = _env(extra)
        self.fw = subprocess.Popen(
            [sys.executable, "-m", "firmware", "--config", str(self.config_path)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"))
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        want = self._ready_seen + 1

        def ready() -> bool:
            # the log first: a process armed to die early may be gone once it said ready
            if self.log().count("posterm ready") >= want:
                return True
            if self.fw is not None and self.fw.poll() is not None:
                raise RuntimeError(f"posterm exited with {self.fw.returncode}:\n{self.log()}")
            return False

        wait_until(ready, timeout, lambda: "posterm did not become ready:\n" + self.log())
        self._ready_seen = want

    def start(self) -> Rig:
        self.start_sim()
        self.start_fw()
        return self

    def kill_fw(self, sig: int = signal.SIGKILL) -> int:
        assert self.fw is not None
        if self.fw.poll() is None:
            self.fw.send_signal(sig)
        code = self.fw.wait(timeout=15)
        return code

    def wait_fw_exit(self, timeout: float = 20.0) -> int:
        assert self.fw is not None
        return self.fw.wait(timeout=timeout)

    def restart_fw(self, *, failpoint: str | None = None) -> None:
        if self.fw is not None and self.fw.poll() is None:
            self.kill_fw(signal.SIGTERM)
        self.start_fw(failpoint=failpoint)

    def stop(self) -> None:
        for proc in (self.fw, self.sim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- people ---------------------------------------------------------------
    @property
    def hw(self) -> HwsimClient:
        assert self._hw is not None, "start the simulator first"
        return self._hw

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def key_amount(self, digits: str) -> None:
        self.hw.press(digits)
        self.hw.press("OK")
        self.hw.wait_display("SWIPE")  # SWIPE CARD, or SWIPE OR INSERT CARD with [chip]

    def sale(self, digits: str, pan: str = "4761739001010010", **swipe: Any) -> None:
        self.hw.wait_display("ENTER AMOUNT")
        self.key_amount(digits)
        self.hw.swipe(pan, **swipe)

    def chip_sale(self, digits: str, profile: str) -> None:
        """Key the amount, then insert a chip card of that profile (a Rig with pcsc)."""
        self.hw.wait_display("ENTER AMOUNT")
        self.key_amount(digits)
        self.hw.chip_insert(profile)

    def wait_online(self, timeout: float = 20.0) -> None:
        """Wait until the idle screen no longer shows the OFFLINE indicator."""
        rows: list[str] = []

        def online() -> bool:
            rows[:] = self.hw.display()
            return "ENTER AMOUNT" in " ".join(rows) and "OFFLINE" not in rows[0]

        wait_until(online, timeout, lambda: f"terminal still offline: {rows}")

    def wait_led(self, on: bool, timeout: float = 5.0) -> None:
        """Wait for the "online" LED (GPIO 24) to show the link state; it follows the
        display by a few milliseconds (it is set in a worker thread)."""
        wait_until(lambda: self.hw.gpio_state()["led_online"] == int(on), timeout,
                   f"online LED is not {'on' if on else 'off'}")

    def wait_idle(self, timeout: float = 20.0) -> list[str]:
        return self.hw.wait_display("ENTER AMOUNT", timeout=timeout)

    def wait_receipts(self, count: int, timeout: float = 10.0) -> list[str]:
        receipts: list[str] = []

        def printed() -> bool:
            receipts[:] = self.hw.receipts()
            return len(receipts) >= count

        wait_until(printed, timeout, lambda: f"expected {count} receipts, got {receipts!r}")
        return receipts

    @property
    def journal_path(self) -> pathlib.Path:
        return self.state_dir / "journal.sqlite3"
