"""Start-to-READY: how long posterm takes from exec to systemd's READY=1.

Starts hwsim once, then posterm N times as its own process with NOTIFY_SOCKET
pointing at a socket this script owns, and measures the time from spawning the
process to the READY=1 datagram: first with an empty state directory (new
journal, new key, escpos capability cache built), then with the state kept.
Also reports the time to the first sign-on with the host. Prints its figures.

    .venv/bin/python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rig import Rig, _env  # noqa: E402


def one_start(rig: Rig, notify: socket.socket, fresh: bool) -> tuple[float, float]:
    if fresh:
        shutil.rmtree(rig.state_dir, ignore_errors=True)
        shutil.rmtree(ROOT / ".cache" / "bench-escpos", ignore_errors=True)
    env = _env({"NOTIFY_SOCKET": notify.getsockname()})
    if fresh:
        env["ESCPOS_CAPABILITIES_PICKLE_DIR"] = str(ROOT / ".cache" / "bench-escpos")
    log = open(rig.log_path, "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "--config", str(rig.config_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    ready = signed = 0.0
    deadline = t0 + 30
    while not ready and time.monotonic() < deadline:
        try:
            data = notify.recv(4096).decode()
        except TimeoutError:
            continue
        if "READY=1" in data:
            ready = time.monotonic() - t0
    while not signed and time.monotonic() < deadline:
        if rig.log().count("signed on to host") > rig._signed:
            signed = time.monotonic() - t0
        time.sleep(0.005)
    rig._signed = rig.log().count("signed on to host")
    proc.terminate()
    proc.wait(timeout=30)
    log.close()
    return ready, signed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="posterm-bench-startup-"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(0.01)
    rig = Rig(tmp)
    rig._signed = 0  # type: ignore[attr-defined]
    try:
        rig.start_sim()
        rig.write_config()
        results = {}
        for label, fresh in (("empty state directory", True), ("state kept", False)):
            runs = [one_start(rig, notify, fresh) for _ in range(args.runs)]
            results[label] = runs
        print(f"start to READY=1 over {args.runs} runs each (this machine, hwsim on loopback):")
        for label, runs in results.items():
            ready = [r for r, _ in runs]
            signed = [s for _, s in runs]
            print(f"  {label:22s} READY median {statistics.median(ready) * 1000:6.0f} ms "
                  f"(max {max(ready) * 1000:.0f}); signed on median "
                  f"{statistics.median(signed) * 1000:6.0f} ms")
    finally:
        rig.stop()
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
