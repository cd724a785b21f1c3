/* The terminal's 20x4 display and its keypad (clicks and the computer's keyboard),
 * and the key-to-display time the page measures.
 *
 * A PIN's digits never show on the page: the display mirrors the terminal's, which
 * shows one star a digit; no key press is logged or listed; and while the display asks
 * for a PIN, a digit typed on the computer's keyboard flashes the whole keypad, not its
 * key (someone watching the screen must not read the PIN from the flashes). */
import { $, el, str } from "../dom.js";
import { ops, page, send } from "../socket.js";

const ROWS = 4;
const COLS = 20;
const DISPLAY_LOG_MAX = 1000;
const LATENCIES_MAX = 10000;

let lastRows = null;
let keyTime = null;

export function resetDisplay() {
  keyTime = null;
  lastRows = null;
}

function normRows(rows) {
  const out = [];
  for (let i = 0; i < ROWS; i++) {
    let r = Array.isArray(rows) && typeof rows[i] === "string" ? rows[i] : "";
    while (r.length < COLS) r += " ";
    out.push(r);
  }
  return out;
}

function renderRow(rowEl, text) {
  const chars = Array.from(text);
  if (rowEl.childElementCount !== chars.length) {
    rowEl.textContent = "";
    chars.forEach(function () { rowEl.appendChild(el("span", "cell")); });
  }
  const cells = rowEl.children;
  for (let i = 0; i < chars.length; i++) {
    if (cells[i].textContent !== chars[i]) cells[i].textContent = chars[i];
  }
}

// The display starts as 4 blank rows of 20 cells.
export function blankDisplay() {
  const display = $("display");
  if (!display) return;
  const blank = normRows([]);
  display.querySelectorAll(".row").forEach(function (row, i) { renderRow(row, blank[i] || ""); });
}

export function onDisplay(msg) {
  const received = performance.now();
  const rows = normRows(msg.rows);
  const display = $("display");
  page.state.display = msg;
  page.displayLog.push({ t: received, rows: rows.slice() });
  if (page.displayLog.length > DISPLAY_LOG_MAX) page.displayLog.splice(0, page.displayLog.length - DISPLAY_LOG_MAX);
  const changed = lastRows !== null && rows.some(function (r, i) { return r !== lastRows[i]; });
  lastRows = rows;

  if (display) {
    display.dataset.backlight = msg.backlight === false ? "off" : "on";
    display.dataset.power = msg.on === false ? "off" : "on";
    const rowEls = display.querySelectorAll(".row");
    for (let i = 0; i < rowEls.length && i < ROWS; i++) renderRow(rowEls[i], rows[i]);
    display.setAttribute("aria-label", msg.on === false ? "display: off"
      : "display: " + rows.map(function (r) { return r.trim(); }).join(" / "));
  }

  // key -> display: from the key press to this new screen being in the page
  if (changed && keyTime !== null) {
    const ms = performance.now() - keyTime;
    keyTime = null;
    page.latencies.push(ms);
    if (page.latencies.length > LATENCIES_MAX) page.latencies.shift();
    const lat = $("latency");
    if (lat) lat.textContent = "key → display: " + Math.round(ms) + " ms";
  }
}

// ---- keypad ----------------------------------------------------------------------------

const flashTimers = new Map();

function flash(key) {
  const b = document.querySelector('.keypad [data-key="' + key + '"]');
  if (!b) return;
  b.classList.add("flash");
  if (flashTimers.has(b)) clearTimeout(flashTimers.get(b));
  flashTimers.set(b, setTimeout(function () { b.classList.remove("flash"); flashTimers.delete(b); }, 140));
}

// Whether the display asks for a PIN (the cardholder's or the supervisor's).
function pinEntry() {
  return lastRows !== null && lastRows.some(function (r) { return /\bPIN\b/.test(r); });
}

function flashKeypad() {
  const pad = document.querySelector(".keypad");
  if (!pad) return;
  pad.classList.add("flash");
  if (flashTimers.has(pad)) clearTimeout(flashTimers.get(pad));
  flashTimers.set(pad, setTimeout(function () { pad.classList.remove("flash"); flashTimers.delete(pad); }, 140));
}

function pressKey(key) {
  keyTime = performance.now();
  if (/^[0-9]$/.test(key) && pinEntry()) flashKeypad();
  else flash(key);
  send(ops.press, { keys: [key] });
}

function keyFromEvent(e) {
  const code = str(e.code);
  const m = /^(?:Digit|Numpad)([0-9])$/.exec(code);
  if (m) return m[1];
  const k = str(e.key);
  if (/^[0-9]$/.test(k)) return k;
  if (k === "Enter" || code === "NumpadEnter") return "OK";
  if (k === "Backspace") return "CLEAR";
  if (k === "Escape" || k === "Esc") return "CANCEL";
  if (k === "F1" || k === "F2" || k === "F3" || k === "F4") return k;
  return null;
}

const NON_TEXT_INPUTS = { button: 1, checkbox: 1, radio: 1, submit: 1, reset: 1, range: 1, color: 1, file: 1, image: 1 };

function typingTarget(t) {
  if (!t || t.nodeType !== 1) return false;
  if (t.isContentEditable) return true;
  const tag = t.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  if (tag === "INPUT") return !NON_TEXT_INPUTS[str(t.type).toLowerCase()];
  return false;
}

function onKeyDown(e) {
  if (e.defaultPrevented || e.ctrlKey || e.altKey || e.metaKey) return;
  if (typingTarget(e.target)) return;
  const key = keyFromEvent(e);
  if (!key) return;
  e.preventDefault();
  if (e.repeat) return; // the keypad driver ignores repeats too
  pressKey(key);
}

export function bindKeypad() {
  document.querySelectorAll(".keypad [data-key]").forEach(function (b) {
    b.addEventListener("click", function () { pressKey(b.dataset.key); });
  });
  document.addEventListener("keydown", onKeyDown);
}
