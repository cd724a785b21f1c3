/* The host's ledger: every original financial message it processed, with the totals
 * charged and credited. Card numbers come masked, and are masked again here. */
import { $, arr, el, formatAmount, maskPans, nearBottom, num, obj, str } from "../dom.js";

function entryType(e) {
  let pc = str(e.processing_code);
  let base = pc.slice(0, 2) === "00" ? "purchase" : pc.slice(0, 2) === "20" ? "refund" : str(e.kind) || "other";
  return e.offline_approval ? { text: "advice", title: base + " approved offline (" + str(e.offline_approval) + ")" }
    : { text: base, title: base + " (" + str(e.mti) + ", processing code " + pc + ")" };
}

function entryState(e) {
  if (e.reversed) return "reversed";
  if (e.voided) return "voided";
  if (e.charged) return "charged";
  if (e.credited) return "credited";
  if (e.code && e.code !== "00") return "declined";
  return "—";
}

export function onLedger(msg) {
  let entries = arr(msg.entries);
  let currency = entries.length ? obj(entries[0]).currency : "978";
  let ct = $("charged-total");
  let cr = $("credited-total");
  if (ct) ct.textContent = formatAmount(num(msg.charged_total) || 0, currency);
  if (cr) cr.textContent = formatAmount(num(msg.credited_total) || 0, currency);
  let table = $("ledger");
  if (!table) return;
  let body = table.tBodies[0] || table.appendChild(document.createElement("tbody"));
  let scroller = table.parentElement;
  let stick = scroller ? nearBottom(scroller) : false;
  body.textContent = "";
  entries.forEach(function (e) {
    e = obj(e);
    let state = entryState(e);
    let type = entryType(e);
    let tr = el("tr", "st-" + (state === "—" ? "none" : state));
    tr.dataset.stan = str(e.stan);
    tr.appendChild(el("td", null, str(e.stan)));
    // e.pin: the sale carried an online PIN (never its digits or block)
    let td = el("td", null, type.text + (e.pin === true ? " · PIN" : ""));
    td.title = type.title + (e.pin === true ? ", online PIN" : "");
    tr.appendChild(td);
    tr.appendChild(el("td", null, maskPans(e.pan)));
    tr.appendChild(el("td", "num-col", formatAmount(e.amount, e.currency)));
    let code = el("td", null, str(e.code));
    if (e.approval) code.title = "approval " + str(e.approval) + (e.rrn ? ", RRN " + str(e.rrn) : "");
    tr.appendChild(code);
    tr.appendChild(el("td", "st", state));
    body.appendChild(tr);
  });
  if (!entries.length) {
    let empty = el("tr");
    let cell = el("td", "muted", "no transactions yet");
    cell.colSpan = 6;
    empty.appendChild(cell);
    body.appendChild(empty);
  }
  if (scroller && stick) scroller.scrollTop = scroller.scrollHeight;
}
