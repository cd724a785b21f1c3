"""What the journal keeps of a chip sale, in clear: the receipt's EMV data (no card data:
no PAN, track, name or expiry), how the card was read, whether the card still has to
give its decision on an approval, and the final cryptogram a batch upload carries
(host-interface 4, 0320). The sale's field 55 itself is sealed with its card data
(journal_base), and deleted with it once nothing pending needs it."""

from __future__ import annotations

import json
from typing import Any

from firmware.core.emv import tlv
from firmware.core.emv.steps import ChipData

SEALED = ("2", "14", "35", "55")  # never in a sale's public fields


def chip_json(entry: str, chip: ChipData | None, **extra: str) -> str:
    """What the journal keeps of a chip sale in clear: the receipt's EMV data (no card
    data: no PAN, track, name or expiry), and how the card was read."""
    if chip is None:
        return json.dumps({"entry": "FALLBACK"}) if entry.startswith("80") else ""
    return json.dumps({"entry": "CHIP", "aid": chip.aid, "label": chip.label,
                       "tvr": chip.tvr, "tsi": chip.tsi, "cvm": chip.cvm, "ac": chip.kind,
                       "cryptogram": chip.cryptogram, **extra})


UPLOAD_TAGS = (0x9F26, 0x9F27, 0x9F36, 0x95, 0x9B, 0x9F5B)


def upload_icc(chip: ChipData, script_results: str = "") -> str:
    """Field 55 of a chip sale's 0320 (host-interface 4, 0320): 9F26 9F27 9F36 95 9B of
    its final cryptogram and the issuer script results 9F5B, hex."""
    values = {0x9F26: chip.cryptogram, 0x9F27: f"{chip.cid:02X}", 0x9F36: chip.atc,
              0x95: chip.tvr, 0x9B: chip.tsi, 0x9F5B: script_results}
    return tlv.encode_all((tag, bytes.fromhex(v)) for tag in UPLOAD_TAGS
                          if (v := values[tag])).hex().upper()


def chip_view(raw: str) -> dict[str, Any]:
    """SaleRecord's entry and emv from the chip column."""
    if not raw:
        return {}
    data = json.loads(raw)
    if data.get("entry") != "CHIP":
        return {"entry": data.get("entry", "")}
    pairs = (("AID", data.get("aid", "")), ("APP", data.get("label", "")),
             ("TVR", data.get("tvr", "")), ("TSI", data.get("tsi", "")),
             (data.get("ac", "AC"), data.get("cryptogram", "")), ("CVM", data.get("cvm", "")))
    return {"entry": "CHIP", "emv": tuple((k, v) for k, v in pairs if v)}
