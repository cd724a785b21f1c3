"""How `hwsim ctl` prints the simulator's answers for a person.

Each function turns one op's answer (and, where it matters, the parsed command
line) into text; `hwsim.ops` names which op uses which. No I/O but the receipt
images `receipts --png` writes.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

Reply = dict[str, Any]


def draw_display(rows: list[str], width: int = 20) -> str:
    """The rows in a box, as a person sees the LCD."""
    edge = "+" + "-" * width + "+"
    body = [f"|{row[:width].ljust(width)}|" for row in rows]
    return "\n".join([edge, *body, edge])


def fields(reply: Reply, args: argparse.Namespace | None = None) -> str:
    """Each key of the answer and its value, one a line."""
    return "\n".join(f"{k}: {v}" for k, v in reply.items())


def display(reply: Reply, args: argparse.Namespace | None = None) -> str:
    return draw_display(reply["rows"])


def receipts(reply: Reply, args: argparse.Namespace) -> str:
    """The receipts' text (`--last`: the last only), or with `--png` their images."""
    if args.png is not None:
        return write_receipt_pngs(reply, args.png, last=args.last)
    return show_receipts(reply, last=args.last)


def records(empty: str, key: str) -> Any:
    """A show function for a list of records under `key`, `empty` when there is none."""
    return lambda reply, args=None: show_records(reply[key], empty)


def modem(r: Reply, args: argparse.Namespace | None = None) -> str:
    power = "hung" if r["hung"] else "on" if r["booted"] else "booting" if r["powered"] else "off"
    link = f"link 0 open to {r['link_peer']}" if r["link_open"] else "no link"
    return "\n".join([
        f"modem {power} on {r['path']}; SIM {'present' if r['sim_present'] else 'ABSENT'}, "
        f"{r['registration_word']}, rssi {r['rssi']}",
        f"data session {'open' if r['net_open'] else 'closed'} (apn {r['apn'] or '-'}), {link}",
        f"faults: netopen_error {r['netopen_error']}, cipopen_error {r['cipopen_error']}, "
        f"latency {r['latency']:g} s, boot time {r['boot_time']:g} s",
        f"counters: {r['commands']} commands, {r['bytes_sent']} bytes sent, "
        f"{r['bytes_received']} received, {r['connections']} connections, "
        f"{r['power_cycles']} power-ons, {r['resets']} resets",
    ])  # fmt: skip


def show_receipts(reply: dict[str, Any], *, last: bool) -> str:
    receipts: list[str] = reply["receipts"][-1:] if last else reply["receipts"]
    parts = [f"--- receipt {i} ---\n{text}" for i, text in enumerate(receipts, 1)]
    if reply.get("partial"):
        parts.append(f"--- not cut yet ---\n{reply['partial']}")
    return "\n".join(parts) if parts else "no receipts printed"


def write_receipt_pngs(reply: dict[str, Any], outdir: str, *, last: bool) -> str:
    """Draw each cut receipt of a styled `receipts` answer as OUTDIR/receipt-<n>.png (only
    the last one, keeping its number, with `last`); say which files were written."""
    from hwsim.receipt_image import receipt_png  # Pillow only when images are asked for

    receipts: list[list[dict[str, Any]]] = reply["lines"]
    numbered = list(enumerate(receipts, 1))[-1:] if last else list(enumerate(receipts, 1))
    folder = pathlib.Path(outdir)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n, lines in numbered:
            path = folder / f"receipt-{n}.png"
            path.write_bytes(receipt_png(lines, cut=True))
            written.append(f"wrote {path}")
    except OSError as exc:
        raise OSError(f"cannot write the receipt images to {outdir}: "
                      f"{exc.strerror or exc}") from exc
    if reply.get("partial_lines"):
        written.append(f"not cut yet: {len(reply['partial_lines'])} line(s) above the cutter, "
                       "no image")
    return "\n".join(written) if written else "no receipts printed"


def reader(reply: Reply, args: argparse.Namespace | None = None) -> str:
    if reply["plugged"]:
        return f"card reader plugged in at {reply['path']} ({reply['pty']})"
    return f"card reader unplugged ({reply['path']} is gone)"


def batches(reply: Reply, args: argparse.Namespace | None = None) -> str:
    if not reply["batches"]:
        return "no batch close or upload yet"

    def totals(t: dict[str, int] | None) -> str:
        if t is None:
            return "-"
        return (f"{t['purchases']} purchases {t['purchase_amount']}, "
                f"{t['refunds']} refunds {t['refund_amount']}")

    lines = []
    for b in reply["batches"]:
        lines.append(f"terminal {b['tid']!r} batch {b['batch']}: "
                     f"{'CLOSED' if b['closed'] else 'open'}; host now: {totals(b['host_now'])}")
        for c in b["closes"]:
            lines.append(f"  0500 {c['processing_code']} stan={c['stan']}: answered {c['code']}"
                         f"{' (forced)' if c['forced'] else ''}")
            lines.append(f"    terminal: {totals(c['terminal'])}")
            lines.append(f"    host:     {totals(c['host'])}")
            if c["upload"] is not None:
                lines.append(f"    uploaded: {totals(c['upload'])}")
            lines += [f"    differs: {d}" for d in c["differences"]]
        for u in b["uploads"]:
            lines.append(f"  0320 stan={u['stan']} of {u['original'][:4]} "
                         f"stan={u['original'][4:10]}: {u['kind']} {u['amount']} "
                         f"invoice {u['invoice']}: {u['status']}")
    return "\n".join(lines)


def show_records(records: list[dict[str, Any]], empty: str) -> str:
    if not records:
        return empty
    return "\n".join(" ".join(f"{k}={v}" for k, v in rec.items()) for rec in records)


def battery(reply: Reply, args: argparse.Namespace | None = None) -> str:
    rate = reply["rate"]
    trend = "charging" if rate > 0 else "discharging" if rate < 0 else "steady"
    gauge = "NOT ANSWERING" if reply["failing"] else f"answering ({reply['reads']} reads)"
    return (f"battery {reply['percent']:g} %, {reply['voltage']:.3f} V, {rate:+g} %/h "
            f"({trend}); gauge {gauge}")


def gpio(reply: Reply, args: argparse.Namespace | None = None) -> str:
    lines = []
    for pin, p in reply["pins"].items():
        pull = f", pull {p['pull']}" if p["pull"] != "off" else ""
        lines.append(f"pin {pin}: {p['direction']}, level {p['level']}{pull}")
    lines.append(f"online LED {'on' if reply['led_online'] else 'off'}, "
                 f"mains {'present' if reply['power_ok'] else 'LOST'}")  # fmt: skip
    recent = reply["history"][-10:]
    if recent:
        lines.append("recent output changes:")
        lines += [f"  {h['t']:.3f} pin {h['pin']} -> {h['level']}" for h in recent]
    return "\n".join(lines)


def chip_slot(slot: Reply | None) -> str:
    """The chip reader's slot: the card in it, or empty; its vpcd port."""
    if slot is None:
        return "no chip slot (hwsim runs with --vpcd-port 0)"
    card = slot.get("card")
    return (f"chip reader (vpcd port {slot['port']}): "
            + (f"card {card} inserted" if card else "empty"))


def chip_cards(reply: Reply, args: argparse.Namespace | None = None) -> str:
    """The chip card profiles, one a line, then the slot."""
    lines = [f"{p['name']}: {p['describe']}" if p.get("describe") else p["name"]
             for p in reply["profiles"]] or ["no chip card profiles"]
    return "\n".join([*lines, chip_slot(reply["slot"])])
