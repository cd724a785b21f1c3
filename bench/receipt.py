"""Receipt benchmark: the data path of one receipt through the real printer driver.

Prints a real sale receipt (firmware.core.receipt) N times through the real
EscposPrinter driver (network backend) into hwsim's printer model, which runs in
a process of its own as it does under `hwsim run`. For each receipt it measures:

- data path: from the first byte of the print job leaving the driver to the
  printer model's confirmation (GS r answered) reaching it, the figure the
  paper's own speed would add to on real hardware;
- the whole `print_lines` call (the three DLE EOT status requests first);
- the writes the driver makes on the printer's socket, and the bytes.

Next to them, measured in the same run: the floor of this machine, one round
trip of a minimal job (ESC @, GS r 1) through the same model on a bare socket.
`--compare-with REV` also measures drivers/printer.py as it was at git revision
REV, in the same run and conditions, so before and after are comparable on a
noisy machine. Last, the import cost of the escpos stack (escpos, PIL, qrcode,
barcode), with its capabilities cache present and with an empty cache folder.

    ./run bench        or        .venv/bin/python bench/receipt.py --count 200 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from types import ModuleType
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware.core.iso import Identity  # noqa: E402
from firmware.core.model import CoreConfig, SaleRecord, SaleStatus  # noqa: E402
from firmware.core.receipt import sale_receipt  # noqa: E402

CFG = CoreConfig(identity=Identity("TERM0001", "MERCHANT0000001", "978"),
                 merchant_name="POSTERM TEST SHOP", address=("12 HIGH STREET", "LONDON"),
                 currency_code="EUR", max_amount=500000)
SALE = SaleRecord(sale_id=7, kind="purchase", amount=1250, pan_masked="476173******0010",
                  local=datetime(2026, 3, 4, 10, 20, 30), status=SaleStatus.APPROVED,
                  response_code="00", approval="123456", rrn="000000000042", stan="000012",
                  batch=3, invoice=5)
LINES = sale_receipt(CFG, SALE)
DLE_EOT = b"\x10\x04"


# -- the printer model, in a process of its own -------------------------------------------

def serve_printer() -> None:
    """Child process: hwsim's PrinterSim on a free port; prints the port, then answers
    "receipts" on stdin with the count of receipts cut, until stdin closes."""
    from hwsim.printer import PrinterSim

    async def main() -> None:
        sim = PrinterSim()
        port = await sim.start("127.0.0.1", 0)
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "receipts":
                print(json.dumps([len(sim.receipts()), sim.receipts()[-1:]]), flush=True)
        await sim.stop()

    asyncio.run(main())


class PrinterProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-printer"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def receipts(self) -> tuple[int, list[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("receipts\n")
        self.proc.stdin.flush()
        count, last = json.loads(self.proc.stdout.readline())
        return int(count), list(last)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# -- counting what the driver writes --------------------------------------------------------

class WireCounter:
    """Counts send()/sendall() calls on sockets connected to `port` (the driver's side)
    and notes when the first byte of a print job (anything but DLE EOT) left."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writes = self.bytes = self.job_writes = self.job_bytes = 0
        self.first_job_byte: float | None = None

    def reset(self) -> None:
        self.writes = self.bytes = self.job_writes = self.job_bytes = 0
        self.first_job_byte = None

    def note(self, sock: socket.socket, data: Any) -> None:
        try:
            if sock.getpeername()[1] != self.port:
                return
        except OSError:
            return
        size = len(memoryview(data))
        self.writes += 1
        self.bytes += size
        if bytes(data[:2]) != DLE_EOT:
            self.job_writes += 1
            self.job_bytes += size
            if self.first_job_byte is None:
                self.first_job_byte = time.perf_counter()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        cls: Any = socket.socket
        saved = cls.sendall, cls.send
        counter = self

        def sendall(sock: socket.socket, data: Any, *args: Any) -> None:
            counter.note(sock, data)
            saved[0](sock, data, *args)

        def send(sock: socket.socket, data: Any, *args: Any) -> int:
            counter.note(sock, data)
            sent: int = saved[1](sock, data, *args)
            return sent

        cls.sendall, cls.send = sendall, send
        try:
            yield
        finally:
            cls.sendall, cls.send = saved


# -- the drivers under test ----------------------------------------------------------------

def driver_module(rev: str | None) -> ModuleType:
    """drivers.printer as it is now, or as it was at git revision `rev`."""
    if rev is None:
        import drivers.printer

        return drivers.printer
    source = subprocess.run(["git", "show", f"{rev}:drivers/printer.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = pathlib.Path(tempfile.mkdtemp(prefix="printer-rev-")) / "printer_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"printer_at_{rev}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_run(module: ModuleType, printer: PrinterProcess, count: int,
            cache: str) -> dict[str, float]:
    counter = WireCounter(printer.port)
    p = module.EscposPrinter("network", host="127.0.0.1", port=printer.port, cache_dir=cache)
    data_path: list[float] = []
    whole: list[float] = []
    writes: list[int] = []
    job_writes: list[int] = []
    job_bytes: list[int] = []
    before, _ = printer.receipts()
    with counter.installed():
        p.open()
        for _ in range(5):  # warm up: connection, code tables, caches
            p.print_lines(LINES)
        for _ in range(count):
            counter.reset()
            start = time.perf_counter()
            p.print_lines(LINES)
            end = time.perf_counter()
            assert counter.first_job_byte is not None
            data_path.append((end - counter.first_job_byte) * 1e3)
            whole.append((end - start) * 1e3)
            writes.append(counter.writes)
            job_writes.append(counter.job_writes)
            job_bytes.append(counter.job_bytes)
    p.close()
    after, last = printer.receipts()
    if after - before != count + 5:
        raise SystemExit(f"the printer model cut {after - before} receipts, "
                         f"expected {count + 5}")
    expected = "\n".join(line.removeprefix("\x00B").rstrip() for line in LINES).rstrip()
    if last != [expected]:
        raise SystemExit(f"the printer model printed {last!r}, expected {expected!r}")
    return {"p50": pct(data_path, 0.5), "p99": pct(data_path, 0.99),
            "whole_p50": pct(whole, 0.5), "whole_p99": pct(whole, 0.99),
            "writes": statistics.median(writes), "job_writes": statistics.median(job_writes),
            "job_bytes": statistics.median(job_bytes)}


def floor_run(port: int, count: int) -> dict[str, float]:
    """One minimal job (ESC @, GS r 1) and its answer on a bare socket, per round."""
    times: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(count + 5):
            start = time.perf_counter()
            s.sendall(b"\x1b@\x1dr\x01")
            if not s.recv(1):
                raise SystemExit("the printer model closed the connection")
            if i >= 5:
                times.append((time.perf_counter() - start) * 1e3)
    return {"p50": pct(times, 0.5), "p99": pct(times, 0.99)}


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return "/".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                            max(values)))


# -- the escpos import ---------------------------------------------------------------------

_IMPORT_PROBE = """
import json, os, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
sys.path.insert(0, {root!r})
r0 = rss(); t0 = time.perf_counter()
from drivers.printer import _load_escpos
_load_escpos({cache!r})
t1 = time.perf_counter()
print(json.dumps([t1 - t0, rss() - r0]))
"""


def import_cost(runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"warm_s": [], "warm_mb": [], "cold_s": [], "cold_mb": []}
    env = {k: v for k, v in os.environ.items() if k != "ESCPOS_CAPABILITIES_PICKLE_DIR"}
    with tempfile.TemporaryDirectory() as tmp:
        warm = os.path.join(tmp, "warm")
        for i in range(runs + 1):
            for kind in ("cold", "warm"):
                cache = os.path.join(tmp, f"cold{i}") if kind == "cold" else warm
                code = _IMPORT_PROBE.format(root=str(ROOT), cache=cache)
                res = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, env=env, check=True)
                seconds, mb = json.loads(res.stdout)
                if i:  # the first round fills the page cache and the warm folder
                    out[f"{kind}_s"].append(seconds)
                    out[f"{kind}_mb"].append(mb)
    return out


# -- main ----------------------------------------------------------------------------------

def measure(label: str, module: ModuleType, printer: PrinterProcess, count: int, runs: int,
            cache: str, floor: Callable[[], dict[str, float]]) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {}
    for _ in range(runs):
        res = one_run(module, printer, count, cache)
        res["floor_p50"] = floor()["p50"]
        for key, value in res.items():
            rows.setdefault(key, []).append(value)
    print(f"  {label}:")
    print(f"    data path, first job byte to confirmation: p50 {spread(rows['p50'])} ms, "
          f"p99 {spread(rows['p99'])} ms (min/median/max of {runs} runs)")
    print(f"    whole print_lines (3 status requests first): p50 {spread(rows['whole_p50'])} "
          f"ms, p99 {spread(rows['whole_p99'])} ms")
    print(f"    writes per receipt: {spread(rows['writes'], '{:.0f}')} in all, "
          f"{spread(rows['job_writes'], '{:.0f}')} of them the job "
          f"({spread(rows['job_bytes'], '{:.0f}')} bytes)")
    ratios = [a / b for a, b in zip(rows["p50"], rows["floor_p50"], strict=True)]
    print(f"    data path p50 / bare round trip p50 of the same run: {spread(ratios)} "
          f"(bare round trip {spread(rows['floor_p50'], '{:.3f}')} ms)")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="receipts per run")
    parser.add_argument("--runs", type=int, default=3, help="repeated runs")
    parser.add_argument("--compare-with", metavar="REV",
                        help="also measure drivers/printer.py as at this git revision")
    parser.add_argument("--serve-printer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_printer:
        serve_printer()
        return 0
    print(f"receipt: {len(LINES)}-line sale receipt x {args.count}, {args.runs} runs, "
          "network backend into hwsim's printer model (own process)")
    printer = PrinterProcess()
    try:
        with tempfile.TemporaryDirectory() as cache:
            floor = lambda: floor_run(printer.port, args.count)  # noqa: E731
            if args.compare_with:
                measure(f"drivers/printer.py at {args.compare_with}",
                        driver_module(args.compare_with), printer, args.count, args.runs,
                        cache, floor)
            measure("drivers/printer.py now", driver_module(None), printer, args.count,
                    args.runs, cache, floor)
    finally:
        printer.close()
    cost = import_cost(args.runs)
    print(f"  escpos stack import (escpos, PIL, qrcode, barcode), {args.runs} runs: "
          f"cache kept {spread(cost['warm_s'], '{:.3f}')} s "
          f"+{spread(cost['warm_mb'], '{:.1f}')} MB RSS; "
          f"empty cache folder {spread(cost['cold_s'], '{:.3f}')} s "
          f"+{spread(cost['cold_mb'], '{:.1f}')} MB RSS")
    print("  goal: data path under 5 ms in hwsim")
    return 0


if __name__ == "__main__":
    sys.exit(main())
