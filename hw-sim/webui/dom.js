/* Small helpers of hwsim's web page: finding and making elements, reading server
 * data defensively, formatting, and the message area.
 *
 * Server data is only ever put into the page with textContent or as attribute
 * values, never as HTML. */

const ERROR_SHOW_MS = 6000;
const CURRENCIES = { "978": "EUR", "840": "USD", "826": "GBP", "756": "CHF", "752": "SEK", "985": "PLN" };

export function $(id) { return document.getElementById(id); }

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function on(id, event, fn) {
  const node = typeof id === "string" ? $(id) : id;
  if (node) node.addEventListener(event, fn);
}

export function isObj(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }
export function obj(v) { return isObj(v) ? v : {}; }
export function arr(v) { return Array.isArray(v) ? v : []; }
export function str(v) { return v === null || v === undefined ? "" : String(v); }
export function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

export function pad(n, width) {
  let s = String(n);
  while (s.length < width) s = "0" + s;
  return s;
}

// A run of 13 to 19 digits shown anywhere but the card slot keeps only its first 6
// and last 4 digits (the server masks already; this is a second line of defence).
export function maskPans(text) {
  return str(text).replace(/\d{13,19}/g, function (run) {
    return run.slice(0, 6) + new Array(run.length - 9).join("*") + run.slice(-4);
  });
}

export function groupPan(pan) { return str(pan).replace(/(.{4})(?=.)/g, "$1 "); }

export function formatAmount(cents, currency) {
  let c = typeof cents === "number" ? cents : parseInt(str(cents), 10);
  const code = CURRENCIES[str(currency)] || (currency ? str(currency) : "EUR");
  if (!isFinite(c)) return code + " ?";
  c = Math.round(c);
  const sign = c < 0 ? "-" : "";
  const a = Math.abs(c);
  return code + " " + sign + Math.floor(a / 100) + "." + pad(a % 100, 2);
}

export function clockTime(t) {
  const d = new Date(typeof t === "number" ? t * 1000 : Date.now());
  return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) +
    "." + pad(d.getMilliseconds(), 3);
}

export function nearBottom(node) {
  return node.scrollHeight - node.scrollTop - node.clientHeight < 24;
}

// ---- the message area ----------------------------------------------------------------

let errorTimer = null;

export function showError(text) {
  const box = $("error");
  if (!box) return;
  box.textContent = maskPans(text) || "error";
  box.hidden = false;
  if (errorTimer) clearTimeout(errorTimer);
  errorTimer = setTimeout(function () { box.hidden = true; errorTimer = null; }, ERROR_SHOW_MS);
}

export function bindErrorBox() {
  on("error", "click", function () { const box = $("error"); if (box) box.hidden = true; });
}

// ---- state widgets ---------------------------------------------------------------------

export function setState(id, text, tone) {
  const node = $(id);
  if (!node) return;
  node.textContent = text;
  node.classList.remove("good", "bad", "warn");
  if (tone) node.classList.add(tone);
}

export function setFlags(id, flags) {
  const box = $(id);
  if (!box) return;
  box.textContent = "";
  flags.forEach(function (f) { box.appendChild(el("span", "flag" + (f[1] ? " " + f[1] : ""), f[0])); });
}

export function setChecked(id, value) {
  const box = typeof id === "string" ? $(id) : id;
  if (box) box.checked = !!value;
}

// Leave a control alone while the person is using it.
export function setValueIfIdle(id, value) {
  const input = $(id);
  if (!input || document.activeElement === input || input.dataset.dragging === "1") return;
  input.value = value;
}

export function trackDrag(id) {
  const input = $(id);
  if (!input) return;
  input.addEventListener("pointerdown", function () { input.dataset.dragging = "1"; });
  document.addEventListener("pointerup", function () { input.dataset.dragging = ""; });
}

export function onEnter(id, fn) {
  on(id, "keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); fn(); } });
}
