"""The chip reader's test rig: a private pcscd with a vpcd reader per test.

`pcsc` (a pytest fixture) starts pcscd as root in a mount namespace of its own:
its socket directory, fixed at build time to /run/pcscd, is a directory of the
test's bind-mounted there; its configuration directory holds one vpcd reader on a
free port pair P, P + 1 (vpcd listens on both, on all interfaces). A PC/SC client
reaches it with `PCSCLITE_CSOCK_NAME` set to that socket (pcsc-lite's client
library honours it, the daemon does not: hence the mount). The client library
reads the variable once per process, so the driver under test runs in a child
process (`ReaderProcess`, this module run as `python -m tests.chiprig READER`),
which prints each event and each command's result as a JSON line.

Everything is per test: several tests (pytest-xdist workers) run side by side.
Without root, pcscd, vpcd's driver or pyscard the tests skip and say how to get
them (`./run test` as root installs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
READER = "Virtual PCD"  # vpcd's readers: "Virtual PCD 00 00" (port P), "... 00 01" (P + 1)
HOW = ("run the tests as root with `./run test`, which installs Debian's pcscd and "
       "vsmartcard-vpcd and pyscard")


def missing() -> str:
    """Why the PC/SC tests cannot run here ("" when they can)."""
    if os.geteuid() != 0:
        return "the PC/SC tests start their own pcscd and need root"
    if shutil.which("pcscd") is None and not os.path.exists("/usr/sbin/pcscd"):
        return "pcscd is not installed"
    if not os.path.exists(VPCD_DRIVER):
        return f"vpcd's driver {VPCD_DRIVER} is not installed"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed"
    return ""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port P with P and P + 1 free on all interfaces (as vpcd binds them)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 60000, 2)
        if _port_free(port) and _port_free(port + 1):
            return port
    raise RuntimeError("no free port pair for vpcd")


@dataclasses.dataclass
class Pcscd:
    """A private pcscd with one vpcd reader."""

    dir: pathlib.Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    reader: str = READER

    @property
    def socket(self) -> str:
        return str(self.dir / "sock" / "pcscd.comm")

    @property
    def env(self) -> dict[str, str]:
        """The environment for a PC/SC client of this pcscd."""
        return {**os.environ, "PCSCLITE_CSOCK_NAME": self.socket,
                "PYTHONPATH": str(ROOT)}

    def start(self) -> Pcscd:
        for _ in range(5):
            if not self.port:
                self.port = free_port_pair()
            self._write_conf()
            self._spawn()
            if self._reader_listening():
                return self
            self.stop()
            self.port = 0  # taken meanwhile by someone else: another pair
        raise RuntimeError(f"pcscd did not start its vpcd reader; its log:\n{self.log()}")

    def restart(self) -> Pcscd:
        """Start it again on the same port (after `kill`)."""
        self._spawn()
        if not self._reader_listening():
            raise RuntimeError(f"pcscd did not come back; its log:\n{self.log()}")
        return self

    def kill(self) -> None:
        """pcscd dies (SIGKILL): no clean goodbye to its clients."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "pcscd.log").read_text(errors="replace")
        return ""

    def _write_conf(self) -> None:
        conf = self.dir / "conf"
        conf.mkdir(exist_ok=True)
        (conf / "vpcd").write_text(
            f'FRIENDLYNAME "{READER}"\nDEVICENAME /dev/null:{self.port}\n'
            f"LIBPATH {VPCD_DRIVER}\nCHANNELID {self.port}\n")

    def _spawn(self) -> None:
        sock = self.dir / "sock"
        sock.mkdir(exist_ok=True)
        for stale in sock.iterdir():
            stale.unlink()
        os.makedirs("/run/pcscd", exist_ok=True)
        script = f"mount --bind {sock} /run/pcscd && exec pcscd -f -c {self.dir / 'conf'}"
        with open(self.dir / "pcscd.log", "ab") as out:
            self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    def _reader_listening(self) -> bool:
        """True once pcscd answers on its socket with the reader listed (asked by a child:
        this process must not load pcsc-lite's client with another socket name)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            if os.path.exists(self.socket):
                break
            time.sleep(0.05)
        else:
            return False
        check = ("from smartcard import scard\n"
                 "hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)\n"
                 "hr, names = scard.SCardListReaders(ctx, [])\n"
                 "print('\\n'.join(names))\n")
        out = subprocess.run([sys.executable, "-c", check], env=self.env, capture_output=True,
                             text=True, timeout=30)
        return any(n.startswith(READER) for n in out.stdout.splitlines()) \
            and "Address already in use" not in self.log()


@pytest.fixture
def pcsc() -> Iterator[Pcscd]:
    """A private pcscd with a vpcd reader: `.socket`, `.env`, `.port`, `.reader`."""
    why = missing()
    if why:
        pytest.skip(f"{why}: {HOW}")
    rig = Pcscd(pathlib.Path(tempfile.mkdtemp(prefix="pcsc-", dir="/tmp")))
    try:
        yield rig.start()
    finally:
        rig.stop()
        shutil.rmtree(rig.dir, ignore_errors=True)


class ReaderProcess:
    """`drivers.chipreader.PcscReader` running in a child process against a `Pcscd`."""

    def __init__(self, pcscd: Pcscd, reader: str = READER) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chiprig", reader], cwd=ROOT, env=pcscd.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1)
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            item = json.loads(line)
            (self._events if "event" in item else self._replies).put(item)

    def _pump_err(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def event(self, timeout: float = 15) -> dict[str, Any]:
        """The next event the driver emitted."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no event from the chip reader; its log:\n"
                                 + "\n".join(self.stderr)) from None

    def no_event(self, within: float = 1.0) -> dict[str, Any] | None:
        """An event if one comes within `within` seconds, else None."""
        try:
            return self._events.get(timeout=within)
        except queue.Empty:
            return None

    def call(self, op: str, arg: str = "") -> dict[str, Any]:
        """Run `power_on`, `transmit` (hex APDU) or `power_off` in the child."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, "arg": arg}) + "\n")
        self._proc.stdin.flush()
        try:
            return self._replies.get(timeout=30)
        except queue.Empty:
            raise AssertionError("no reply from the chip reader; its log:\n"
                                 + "\n".join(self.stderr)) from None

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)


async def _child(reader: str) -> None:
    """The child: the driver's events and its commands' results as JSON lines."""
    import logging

    from drivers.chipreader import PcscReader
    from firmware.errors import ChipError

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def out(item: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(item) + "\n")
        sys.stdout.flush()

    def emit(event: Any) -> None:
        out({"event": type(event).__name__, **dataclasses.asdict(event)})

    driver = PcscReader(reader, retry_base=0.2, retry_cap=0.4)
    watch = asyncio.create_task(driver.run(emit))
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            request = json.loads(line)
            op, arg = request["op"], request["arg"]
            try:
                if op == "power_on":
                    atr = await asyncio.to_thread(driver.power_on)
                    out({"ok": True, "atr": atr.hex().upper()})
                elif op == "transmit":
                    data, sw = await asyncio.to_thread(driver.transmit, bytes.fromhex(arg))
                    out({"ok": True, "data": data.hex().upper(), "sw": f"{sw:04X}"})
                else:
                    await asyncio.to_thread(driver.power_off)
                    out({"ok": True})
            except ChipError as exc:
                out({"ok": False, "error": type(exc).__name__, "message": str(exc)})
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        driver.close()


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1]))
