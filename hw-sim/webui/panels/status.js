/* The peripherals' widgets: the online LED and the buzzer, power and battery, the 4G
 * modem, the primary path, the printer, the card reader's plug and the display's I²C
 * fault; each shows the simulator's state and drives it. */
import {
  $, num, obj, on, onEnter, setChecked, setFlags, setState, setValueIfIdle, showError, str,
  trackDrag
} from "../dom.js";
import { ops, page, send } from "../socket.js";
import { applyChip } from "./card.js";
import { applyHost, updateHostVisibility } from "./host.js";

const CHARGE_RATE = 10.0; // %/h sent for "charging"
const DISCHARGE_RATE = -1.0; // %/h sent for "not charging"
const REGISTRATION_WORDS = { 0: "not registered", 1: "registered", 2: "searching", 3: "denied", 5: "roaming" };
const PRINTER_FAULT_WORDS = { paper_out: "paper out", paper_near_end: "paper near end",
  cover_open: "cover open", offline: "offline", mute: "mute" };

// ---- outputs: LED and buzzer -----------------------------------------------------------

let buzzerWasOn = false;
let userGesture = false;
let audioCtx = null;

function beep() {
  const box = $("beep");
  if (!userGesture || (box && !box.checked)) return;
  try {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    if (!audioCtx) audioCtx = new AC();
    if (audioCtx.state === "suspended" && audioCtx.resume) {
      const r = audioCtx.resume();
      if (r && r.catch) r.catch(function () {});
    }
    const osc = audioCtx.createOscillator();
    const gain = audioCtx.createGain();
    osc.type = "square";
    osc.frequency.value = 2300;
    gain.gain.value = 0.03;
    osc.connect(gain);
    gain.connect(audioCtx.destination);
    const t = audioCtx.currentTime;
    osc.start(t);
    osc.stop(t + 0.12);
  } catch (e) {
    /* no audio here: the indicator is enough */
  }
}

export function onOutputs(msg) {
  page.state.outputs = msg;
  const led = $("led");
  const buzzer = $("buzzer");
  const ledOn = Number(msg.led) === 1;
  const buzzOn = Number(msg.buzzer) === 1;
  if (led) {
    led.classList.toggle("on", ledOn);
    led.setAttribute("aria-label", "online LED: " + (ledOn ? "on" : "off"));
  }
  if (buzzer) {
    buzzer.classList.toggle("on", buzzOn);
    buzzer.setAttribute("aria-label", "buzzer: " + (buzzOn ? "sounding" : "silent"));
  }
  if (buzzOn && !buzzerWasOn) beep();
  buzzerWasOn = buzzOn;
}

// ---- the status message ----------------------------------------------------------------

export function onStatus(msg) {
  page.state.status = msg;
  applyBattery(obj(msg.battery));
  applyMains(msg.mains);
  applyModem(obj(msg.modem));
  applyPrimary(obj(msg.primary));
  applyPrinter(obj(msg.printer));
  applyReader(obj(msg.reader));
  applyChip(msg.chip);
  applyDisplayFault(obj(msg.display_fault));
  applyHost(obj(msg.host));
  updateHostVisibility();
}

function reapplyStatus() {
  if (page.state.status) onStatus(page.state.status);
}

// Send and, if refused, show the last state again (a checkbox goes back).
function sendAndSync(op, params) {
  return send(op, params).then(function (reply) {
    if (!reply || reply.ok === false) reapplyStatus();
    return reply;
  });
}

function applyBattery(b) {
  const percent = num(b.percent);
  const bar = $("battery-bar");
  const mini = $("mini-battery-fill");
  const p = percent === null ? 0 : Math.max(0, Math.min(100, percent));
  if (bar) {
    bar.style.width = p + "%";
    bar.classList.toggle("low", p < 15);
    bar.classList.toggle("mid", p >= 15 && p < 40);
    bar.classList.toggle("charging", !!b.charging);
    bar.classList.toggle("failing", !!b.failing);
  }
  if (mini) {
    mini.style.width = p + "%";
    mini.classList.toggle("low", p < 15);
  }
  let text = percent === null ? "—" : (Math.round(percent * 10) / 10) + " %";
  if (num(b.voltage) !== null) text += " · " + b.voltage.toFixed(2) + " V";
  const bt = $("battery-text");
  if (bt) bt.textContent = text;
  const mt = $("mini-battery-text");
  if (mt) mt.textContent = percent === null ? "—" : Math.round(percent) + "%" + (b.charging ? "+" : "");
  const flags = [];
  flags.push(b.charging ? ["charging", "good"] : ["not charging", ""]);
  if (b.failing) flags.push(["gauge not answering", "bad"]);
  if (percent !== null && percent < 10) flags.push(["low", "bad"]);
  setFlags("battery-flags", flags);
  if (percent !== null) {
    setValueIfIdle("battery-range", String(Math.round(percent)));
    const out = $("battery-range-value");
    const range = $("battery-range");
    if (out && range && range.dataset.dragging !== "1" && document.activeElement !== range) {
      out.textContent = Math.round(percent) + " %";
    }
  }
  setChecked("battery-charging", b.charging);
  setChecked("battery-failing", b.failing);
}

function applyMains(mains) {
  const sw = $("power-switch");
  if (!sw) return;
  const ok = mains !== false;
  sw.setAttribute("aria-pressed", ok ? "true" : "false");
  sw.textContent = ok ? "mains on" : "mains FAILED";
  sw.title = ok ? "mains power present: click to fail it (power-fail line low)"
    : "mains power failed: click to restore it";
}

function signalBars(rssi) {
  if (rssi === null || rssi === 99 || rssi < 0) return 0;
  if (rssi >= 20) return 4;
  if (rssi >= 15) return 3;
  if (rssi >= 10) return 2;
  if (rssi >= 2) return 1;
  return 0;
}

function applyModem(m) {
  const rssi = num(m.rssi);
  const sig = $("modem-signal");
  const noSignal = rssi === null || rssi === 99;
  const bars = m.powered === false ? 0 : signalBars(rssi);
  if (sig) {
    sig.dataset.bars = String(bars);
    sig.classList.toggle("none", noSignal || m.powered === false);
    sig.setAttribute("aria-label", "signal: " + (noSignal ? "none" : bars + " of 4 bars"));
  }
  const rt = $("modem-rssi");
  if (rt) rt.textContent = rssi === null ? "—" : rssi === 99 ? "rssi 99: no signal"
    : "rssi " + rssi + " (" + (-113 + 2 * rssi) + " dBm)";
  const reg = num(m.registration);
  const word = str(m.registration_word) || (reg !== null ? REGISTRATION_WORDS[reg] || "state " + reg : "—");
  const tone = reg === 1 || reg === 5 ? "good" : reg === 3 ? "bad" : "warn";
  const rw = $("modem-reg-word");
  if (rw) {
    rw.textContent = m.powered === false ? "off" : word;
    rw.classList.remove("good", "bad", "warn");
    rw.classList.add(m.powered === false ? "warn" : tone);
  }
  const flags = [];
  if (m.powered === false) flags.push(["powered off", "bad"]);
  else if (m.powered) flags.push([m.booted ? "booted" : "booting…", m.booted ? "good" : "warn"]);
  if (m.sim_present === false) flags.push(["no SIM", "bad"]);
  else if (m.sim_present) flags.push(["SIM", ""]);
  if (m.net_open) flags.push(["data open", "good"]);
  if (m.link_open) flags.push(["link open", "good"]);
  if (num(m.latency) !== null && m.latency > 0) flags.push(["latency " + m.latency + " s", ""]);
  setFlags("modem-flags", flags);
  if (rssi !== null && rssi !== 99) {
    setValueIfIdle("modem-rssi-range", String(rssi));
    const out = $("modem-rssi-value");
    const range = $("modem-rssi-range");
    if (out && range && range.dataset.dragging !== "1" && document.activeElement !== range) out.textContent = String(rssi);
  } else {
    const o2 = $("modem-rssi-value");
    if (o2) o2.textContent = "—";
  }
  const sel = $("modem-registration");
  if (sel && reg !== null && document.activeElement !== sel) {
    sel.value = String(reg);
    if (sel.value !== String(reg)) sel.selectedIndex = -1;
  }
  setChecked("modem-sim", m.sim_present);
  setChecked("modem-power", m.powered);
}

function applyPrimary(p) {
  const mode = str(p.mode) || (p.up === false ? "refuse" : p.up ? "up" : "");
  const text = mode === "up" ? "up" : mode === "refuse" ? "down (refuses connections)"
    : mode === "blackhole" ? "down (black-hole)" : mode || "—";
  setState("primary-state", text, mode === "up" ? "good" : mode ? "bad" : "");
  document.querySelectorAll("[data-primary]").forEach(function (b) {
    b.setAttribute("aria-pressed", b.dataset.primary === mode ? "true" : "false");
  });
}

function applyPrinter(p) {
  const faults = [];
  Object.keys(PRINTER_FAULT_WORDS).forEach(function (k) { if (p[k]) faults.push(PRINTER_FAULT_WORDS[k]); });
  const slow = num(p.slow_seconds);
  if (slow) faults.push("slow " + slow + " s");
  const hard = p.paper_out || p.cover_open || p.offline || p.mute;
  const text = faults.length ? faults.join(", ") : "ready";
  setState("printer-state", text, hard ? "bad" : faults.length ? "warn" : "good");
  const summary = $("printer-summary");
  if (summary) {
    summary.textContent = text;
    summary.classList.toggle("fault", !!hard);
  }
  document.querySelectorAll("[data-printer-fault]").forEach(function (box) {
    box.checked = !!p[box.dataset.printerFault];
  });
  if (slow !== null) setValueIfIdle("printer-slow", String(slow));
}

function applyReader(r) {
  const plugged = r.plugged !== false;
  setState("reader-state", "plugged" in r ? (plugged ? "plugged in" : "unplugged") : "—",
    "plugged" in r ? (plugged ? "good" : "bad") : "");
  setChecked("reader-plugged", plugged);
}

function applyDisplayFault(d) {
  setState("display-fault-state", d.active ? "I²C fault active" : "answering",
    d.active ? "bad" : "good");
}

// ---- the controls ------------------------------------------------------------------------

export function bindStatusControls() {
  const gesture = function () { userGesture = true; };
  document.addEventListener("pointerdown", gesture, true);
  document.addEventListener("keydown", gesture, true);

  // power and battery
  trackDrag("battery-range");
  on("battery-range", "input", function (e) {
    const out = $("battery-range-value");
    if (out) out.textContent = e.target.value + " %";
  });
  on("battery-range", "change", function (e) {
    sendAndSync(ops.battery, { percent: Number(e.target.value) });
  });
  on("battery-charging", "change", function (e) {
    sendAndSync(ops.battery, { rate: e.target.checked ? CHARGE_RATE : DISCHARGE_RATE });
  });
  on("battery-failing", "change", function (e) {
    sendAndSync(ops.battery, { failing: e.target.checked });
  });
  on("power-switch", "click", function () {
    const mains = obj(page.state.status).mains !== false;
    sendAndSync(ops.power, { state: mains ? "fail" : "restore" });
  });

  // modem
  trackDrag("modem-rssi-range");
  on("modem-rssi-range", "input", function (e) {
    const out = $("modem-rssi-value");
    if (out) out.textContent = e.target.value;
  });
  on("modem-rssi-range", "change", function (e) {
    sendAndSync(ops.modem, { rssi: parseInt(e.target.value, 10) });
  });
  on("modem-no-signal", "click", function () { sendAndSync(ops.modem, { rssi: 99 }); });
  on("modem-registration", "change", function (e) {
    sendAndSync(ops.modem, { registration: parseInt(e.target.value, 10) });
  });
  on("modem-sim", "change", function (e) { sendAndSync(ops.modem, { sim_present: e.target.checked }); });
  on("modem-power", "change", function (e) { sendAndSync(ops.modem, { power: e.target.checked }); });

  // primary path
  document.querySelectorAll("[data-primary]").forEach(function (b) {
    b.addEventListener("click", function () {
      const mode = b.dataset.primary;
      sendAndSync(ops.primary, mode === "up" ? { action: "up" } : { action: "down", mode: mode });
    });
  });

  // printer
  document.querySelectorAll("[data-printer-fault]").forEach(function (box) {
    box.addEventListener("change", function () {
      const params = {};
      params[box.dataset.printerFault] = box.checked;
      sendAndSync(ops.printer_fault, params);
    });
  });
  const setSlow = function () {
    const v = parseFloat(($("printer-slow") || {}).value);
    if (!isFinite(v) || v < 0) { showError("printer: slow must be a number of seconds, 0 or more"); return; }
    sendAndSync(ops.printer_fault, { slow_seconds: v });
  };
  on("printer-slow-set", "click", setSlow);
  onEnter("printer-slow", setSlow);
  on("printer-load", "click", function () { send(ops.printer_load_paper, {}); });
  on("printer-clear", "click", function () { send(ops.printer_clear, {}); });

  // card reader, display
  on("reader-plugged", "change", function (e) {
    sendAndSync(e.target.checked ? ops.reader_plug : ops.reader_unplug, {});
  });
  on("display-fault", "click", function () { send(ops.display_fault, { count: 0, power_loss: false }); });
  on("display-fault-power", "click", function () { send(ops.display_fault, { count: 0, power_loss: true }); });
  on("display-clear", "click", function () { send(ops.display_clear, {}); });
}
