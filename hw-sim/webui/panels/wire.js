/* The host's wire, both directions: each message's MTI, STAN, processing code, amount,
 * card number (masked by the server, and again here) and response code; click a line
 * for all the fields the server shows. */
import { $, arr, clockTime, el, formatAmount, maskPans, nearBottom, num, obj, str } from "../dom.js";

const WIRE_MAX = 500;

let lastSeq = -Infinity;

export function resetWire() {
  let wire = $("wire");
  lastSeq = -Infinity;
  if (wire) wire.textContent = "";
}

function addField(line, label, value, cls) {
  let span = el("span", cls || "w-f");
  if (label) span.appendChild(el("span", "w-k", label + " "));
  span.appendChild(document.createTextNode(value));
  line.appendChild(span);
}

function wireLine(ev) {
  let dir = str(ev.dir);
  let fields = obj(ev.fields);
  let line = el("div", "wire-line " + (dir === "in" ? "w-in" : dir === "out" ? "w-out" : "w-note"));
  if (typeof ev.seq === "number") line.dataset.seq = String(ev.seq);
  line.appendChild(el("span", "w-time", clockTime(num(ev.t))));
  let arrow = el("span", "w-dir", dir === "in" ? "T→H" : dir === "out" ? "H→T" : "•");
  arrow.title = dir === "in" ? "terminal → host" : dir === "out" ? "host → terminal" : "note";
  line.appendChild(arrow);
  if (fields.t) line.appendChild(el("span", "w-mti", maskPans(fields.t)));
  if (fields["11"] !== undefined) addField(line, "STAN", maskPans(fields["11"]));
  if (fields["3"] !== undefined) addField(line, "pc", maskPans(fields["3"]));
  if (fields["4"] !== undefined) {
    let cents = parseInt(str(fields["4"]), 10);
    addField(line, null, isFinite(cents) && /^\d+$/.test(str(fields["4"]))
      ? formatAmount(cents, fields["49"] || "978") : maskPans(fields["4"]));
  }
  if (fields["2"] !== undefined) addField(line, null, maskPans(fields["2"]));
  if (fields["39"] !== undefined) {
    let code = str(fields["39"]);
    addField(line, "rc", maskPans(code), code === "00" ? "w-code-ok" : "w-code-bad");
  }
  if (ev.fault) line.appendChild(el("span", "w-badge", str(ev.fault)));
  if (ev.text) line.appendChild(el("span", "w-text", maskPans(ev.text)));
  if (ev.error) line.appendChild(el("span", "w-error", "error: " + maskPans(ev.error)));
  if (num(ev.bytes) !== null) line.appendChild(el("span", "w-bytes", "(" + ev.bytes + " B)"));

  let detail = [];
  Object.keys(fields).forEach(function (k) {
    detail.push((k === "t" ? "MTI" : "field " + k) + ": " + maskPans(fields[k]));
  });
  if (ev.fault) detail.push("fault: " + str(ev.fault));
  if (ev.error) detail.push("error: " + maskPans(ev.error));
  if (ev.text) detail.push(maskPans(ev.text));
  if (num(ev.bytes) !== null) detail.push(ev.bytes + " bytes");
  let detailText = detail.join("\n");
  line.title = detailText;
  let box = el("div", "wire-detail", detailText);
  line.appendChild(box);
  line.addEventListener("click", function (e) {
    if (box.contains(e.target)) return;
    let sel = window.getSelection && window.getSelection();
    if (sel && !sel.isCollapsed) return;
    line.classList.toggle("open");
  });
  return line;
}

export function onWire(msg) {
  let wire = $("wire");
  if (!wire) return;
  let stick = nearBottom(wire);
  let frag = document.createDocumentFragment();
  arr(msg.events).forEach(function (ev) {
    ev = obj(ev);
    if (typeof ev.seq === "number") {
      if (ev.seq <= lastSeq) return;
      lastSeq = ev.seq;
    }
    frag.appendChild(wireLine(ev));
  });
  wire.appendChild(frag);
  let extra = wire.childElementCount - WIRE_MAX;
  if (extra > 0) {
    let heightBefore = wire.scrollHeight;
    while (extra-- > 0 && wire.firstElementChild) wire.removeChild(wire.firstElementChild);
    if (!stick) wire.scrollTop = Math.max(0, wire.scrollTop - (heightBefore - wire.scrollHeight));
  }
  if (stick) wire.scrollTop = wire.scrollHeight;
}
