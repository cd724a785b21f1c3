"""Idle: how often a terminal at rest wakes up, and what it costs in CPU.

Starts hwsim and posterm as two real processes (tests/rig.py, the configuration
hwsim writes: card reader, keypad, printer, display, GPIO, battery gauge and 4G
modem all present), makes one sale, waits until the terminal is back at the
idle screen and has settled, then watches it for `--seconds` (60 by default)
without touching it. From /proc it reads, for every thread of posterm with the
name the kernel knows it by (firmware/runtime/threads.py names them), the
voluntary context switches (the thread went to sleep waiting for something:
each is one wake-up) and the involuntary ones (the thread was put off the CPU
by other work on the machine: not a wake-up, and shown apart), and the CPU
time (/proc/.../schedstat, nanoseconds). Goal (the speed issue, item 7): at most 1
wake-up per second on average across all threads, CPU <= 0.05 %.

What would not happen on a terminal is counted apart:
- threads named `hwsim-*` are the stand-ins' own (drivers/remote.py), and
- every request posterm's stand-ins send to hwsim's control socket (I2C reads
  and writes, GPIO calls) is a round trip that wakes the thread that asked;
  hwsim counts them by op. On a terminal each is an I2C transfer or a GPIO
  register access instead, which blocks the thread for a bus transfer or not
  at all. "firmware's own" is the total less both.

hwsim's own process (the device models and the host) is shown on its own line:
it is the simulator, not the terminal.

The real deadlines that remain, with their defaults: the idle echo test to the
host every 60 s ([host] echo_interval), the battery gauge every 60 s
([battery] interval), the printer's status every 30 s ([printer]
status_interval), the modem's registration and signal every 30 s ([modem]
poll_interval), the power-fail input read once a minute in case an edge was
missed, and systemd's watchdog ping (WatchdogSec / 3; not set here).

    ./run bench        or     .venv/bin/python bench/idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rig import Rig  # noqa: E402

GOAL_WAKEUPS = 1.0  # per second, all threads
GOAL_CPU = 0.05  # percent of one core


Sample = tuple[str, int, int, int]  # name, voluntary, involuntary switches, CPU ns


def threads(pid: int) -> dict[int, Sample]:
    """tid -> (name, voluntary switches, involuntary switches, CPU ns) for each thread."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            name = pathlib.Path(f"{base}/comm").read_text().strip()
            counts = {line.split(":")[0]: int(line.split()[1]) for line in open(f"{base}/status")
                      if "ctxt_switches" in line}
            cpu = int(pathlib.Path(f"{base}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while being read
        out[int(tid)] = (name, counts["voluntary_ctxt_switches"],
                         counts["nonvoluntary_ctxt_switches"], cpu)
    return out


def delta(before: dict[int, Sample],
          after: dict[int, Sample]) -> dict[str, tuple[int, int, int, int]]:
    """name -> (threads, wake-ups, preemptions, CPU ns) over the window, by name."""
    rows: dict[str, tuple[int, int, int, int]] = {}
    for tid, (name, vol, invol, cpu) in after.items():
        _, v0, i0, c0 = before.get(tid, (name, 0, 0, 0))
        n, v, i, c = rows.get(name, (0, 0, 0, 0))
        rows[name] = (n + 1, v + vol - v0, i + invol - i0, c + cpu - c0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds at idle before the window opens")
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="posterm-bench-idle-"))
    rig = Rig(tmp, overrides={"maintenance": {"restart_window": ""}})
    try:
        rig.start()
        rig.wait_idle()
        rig.sale("1250")
        rig.hw.wait_display("APPROVED", timeout=30)
        rig.wait_idle(timeout=30)
        time.sleep(args.settle)
        assert rig.fw is not None and rig.sim is not None
        fw, sim = rig.fw.pid, rig.sim.pid
        served0 = rig.hw.control_stats()
        fw0, sim0 = threads(fw), threads(sim)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        fw1, sim1 = threads(fw), threads(sim)
        seconds = time.monotonic() - t0
        served1 = rig.hw.control_stats()
        assert "ENTER AMOUNT" in " ".join(rig.hw.display()), "the terminal left the idle screen"
    finally:
        rig.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = delta(fw0, fw1)
    total = sum(v for _, v, _, _ in rows.values())
    preempted = sum(i for _, _, i, _ in rows.values())
    cpu = sum(c for _, _, _, c in rows.values())
    standin = sum(v for name, (_, v, _, _) in rows.items() if name.startswith("hwsim-"))
    requests = {op: n - served0.get(op, 0) for op, n in served1.items()
                if op != "control_stats" and n - served0.get(op, 0)}
    own = total - standin - sum(requests.values())
    print(f"posterm at rest under hwsim for {seconds:.0f} s (goal: <= {GOAL_WAKEUPS:g} "
          f"wake-up/s, CPU <= {GOAL_CPU:g} %):")
    print(f"  {'thread':16s} {'threads':>7s} {'wake-ups':>9s} {'per s':>7s} {'preempted':>10s} "
          f"{'CPU ms':>8s}")
    for name, (n, v, i, c) in sorted(rows.items(), key=lambda r: -r[1][1]):
        print(f"  {name:16s} {n:7d} {v:9d} {v / seconds:7.2f} {i:10d} {c / 1e6:8.1f}")
    print(f"  {'all threads':16s} {len(fw1):7d} {total:9d} {total / seconds:7.2f} "
          f"{preempted:10d} {cpu / 1e6:8.1f}")
    print(f"  wake-ups per second: {total / seconds:.2f} in all; "
          f"{own / seconds:.2f} the firmware's own, after "
          f"{standin} in hwsim's stand-in threads and {sum(requests.values())} control-socket "
          f"round trips ({', '.join(f'{op} {n}' for op, n in sorted(requests.items())) or 'none'})")
    print(f"  context switches of all kinds: {(total + preempted) / seconds:.2f} per second "
          f"({preempted} involuntary: the machine's other work)")
    print(f"  CPU: {cpu / 1e9 / seconds * 100:.3f} % of one core "
          f"({cpu / 1e6:.1f} ms in {seconds:.0f} s)")
    sim_rows = delta(sim0, sim1)
    sim_total = sum(v for _, v, _, _ in sim_rows.values())
    sim_cpu = sum(c for _, _, _, c in sim_rows.values())
    print(f"  hwsim itself (the simulator, not the terminal): {sim_total / seconds:.2f} "
          f"wake-ups/s, CPU {sim_cpu / 1e9 / seconds * 100:.3f} %")
    verdict = total / seconds <= GOAL_WAKEUPS and cpu / 1e9 / seconds * 100 <= GOAL_CPU
    print(f"  goal {'met' if verdict else 'NOT met'}")


if __name__ == "__main__":
    main()
