/* hwsim web page: shows the simulated terminal live and lets a person use it.
 *
 * Plain script, no framework, no build step, no external resources. Talks to the
 * server (hw-sim/web.py) over one WebSocket at /ws: the server pushes `hello`,
 * `display`, `outputs`, `status`, `ledger`, `paper`, `wire` and `reply` messages;
 * the page sends {"id": n, "op": ..., ...params} requests.
 *
 * Server data is only ever put into the page with textContent or as attribute
 * values, never as HTML. A full card number appears only on the card buttons.
 *
 * For tests and benchmarks: window.hwsimPage = {send(op, params) -> Promise of the
 * reply, latencies: [ms, ...], displayLog: [{t, rows}, ...], connected: bool}.
 */
(function () {
  "use strict";

  var ROWS = 4;
  var COLS = 20;
  var DISPLAY_LOG_MAX = 1000;
  var LATENCIES_MAX = 10000;
  var WIRE_MAX = 500;
  var BACKOFF_MIN = 500;
  var BACKOFF_MAX = 5000;
  var REPLY_TIMEOUT_MS = 30000;
  var ERROR_SHOW_MS = 6000;
  var CHARGE_RATE = 10.0; // %/h sent for "charging"
  var DISCHARGE_RATE = -1.0; // %/h sent for "not charging"

  var DEFAULT_FAULT_KINDS = ["delay", "late", "swallow", "drop_after_post", "drop_before_read",
    "busy", "malformed", "decline", "refuse", "blackhole"];
  var DEFAULT_FAULT_CLASSES = ["0200", "0220", "0320", "0400", "0500", "0800", "*"];
  var FAULT_LABELS = {
    delay: "delay answer",
    late: "late answer",
    swallow: "swallow answer",
    drop_after_post: "drop after post",
    drop_before_read: "drop before read",
    busy: "busy (91/96)",
    malformed: "garbage frame",
    decline: "decline",
    refuse: "refuse connection",
    blackhole: "black-hole"
  };
  var FAULT_HELP = {
    delay: "answer after the given seconds",
    late: "answer after the given seconds (meant to arrive after the terminal gave up)",
    swallow: "decide the answer but never send it",
    drop_after_post: "decide the answer, then drop the connection without sending it",
    drop_before_read: "drop the connection before reading the request",
    busy: "answer 91 or 96 (code field; default 96)",
    malformed: "answer with a frame that does not parse",
    decline: "decline with the code field (default 05)",
    refuse: "reset the next connection attempts (any message class)",
    blackhole: "discard the next requests silently (any message class)"
  };
  var BAD_LABELS = {
    track2_error: "track 2 error",
    both_error: "both tracks error",
    noise: "noise",
    partial: "partial read",
    overlong: "overlong line"
  };
  var REGISTRATION_WORDS = { 0: "not registered", 1: "registered", 2: "searching", 3: "denied", 5: "roaming" };
  var CURRENCIES = { "978": "EUR", "840": "USD", "826": "GBP", "756": "CHF", "752": "SEK", "985": "PLN" };

  // ---- the test/benchmark hook ----------------------------------------------------

  var page = window.hwsimPage = window.hwsimPage || {};
  page.latencies = [];
  page.displayLog = [];
  page.connected = false;
  page.send = send;
  page.state = { hello: null, status: null, outputs: null, display: null };

  // ---- small helpers ---------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function on(id, event, fn) {
    var node = typeof id === "string" ? $(id) : id;
    if (node) node.addEventListener(event, fn);
  }

  function isObj(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }
  function obj(v) { return isObj(v) ? v : {}; }
  function arr(v) { return Array.isArray(v) ? v : []; }
  function str(v) { return v === null || v === undefined ? "" : String(v); }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : null; }

  function pad(n, width) {
    var s = String(n);
    while (s.length < width) s = "0" + s;
    return s;
  }

  // A run of 13 to 19 digits shown anywhere but the card slot keeps only its first 6
  // and last 4 digits (the server masks already; this is a second line of defence).
  function maskPans(text) {
    return str(text).replace(/\d{13,19}/g, function (run) {
      return run.slice(0, 6) + new Array(run.length - 9).join("*") + run.slice(-4);
    });
  }

  function groupPan(pan) { return str(pan).replace(/(.{4})(?=.)/g, "$1 "); }

  function formatAmount(cents, currency) {
    var c = typeof cents === "number" ? cents : parseInt(str(cents), 10);
    var code = CURRENCIES[str(currency)] || (currency ? str(currency) : "EUR");
    if (!isFinite(c)) return code + " ?";
    c = Math.round(c);
    var sign = c < 0 ? "-" : "";
    var a = Math.abs(c);
    return code + " " + sign + Math.floor(a / 100) + "." + pad(a % 100, 2);
  }

  function clockTime(t) {
    var d = new Date(typeof t === "number" ? t * 1000 : Date.now());
    return pad(d.getHours(), 2) + ":" + pad(d.getMinutes(), 2) + ":" + pad(d.getSeconds(), 2) +
      "." + pad(d.getMilliseconds(), 3);
  }

  function nearBottom(node) {
    return node.scrollHeight - node.scrollTop - node.clientHeight < 24;
  }

  // ---- the message area ------------------------------------------------------------

  var errorTimer = null;
  function showError(text) {
    var box = $("error");
    if (!box) return;
    box.textContent = maskPans(text) || "error";
    box.hidden = false;
    if (errorTimer) clearTimeout(errorTimer);
    errorTimer = setTimeout(function () { box.hidden = true; errorTimer = null; }, ERROR_SHOW_MS);
  }

  // ---- the connection --------------------------------------------------------------

  var ws = null;
  var backoff = BACKOFF_MIN;
  var retryTimer = null;
  var nextId = 1;
  var pending = new Map(); // id -> {resolve, timer}

  function setConn(state) {
    var box = $("conn");
    page.connected = state === "connected";
    document.body.classList.toggle("offline", state !== "connected");
    if (!box) return;
    box.dataset.state = state;
    box.textContent = state === "connected" ? "connected"
      : state === "disconnected" ? "disconnected — retrying" : "connecting…";
  }

  function connect() {
    retryTimer = null;
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    var sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      setConn("disconnected");
      scheduleRetry();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      if (ws !== sock) return;
      backoff = BACKOFF_MIN;
      setConn("connected");
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      onMessage(ev.data);
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null;
      setConn("disconnected");
      failPending("the connection to hwsim closed before the answer");
      scheduleRetry();
    };
    sock.onerror = function () { /* a close event follows */ };
  }

  function scheduleRetry() {
    if (retryTimer) return;
    var delay = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX);
    retryTimer = setTimeout(connect, delay);
  }

  function failPending(why) {
    pending.forEach(function (p, id) {
      clearTimeout(p.timer);
      p.resolve({ type: "reply", id: id, ok: false, error: why });
    });
    pending.clear();
  }

  function finish(reply) {
    if (reply && reply.ok === false) showError(str(reply.error) || "request refused");
    return reply;
  }

  // Send one request; a Promise of the reply (ok false when not connected or no answer).
  function send(op, params) {
    return new Promise(function (resolve) {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        resolve(finish({ type: "reply", ok: false, error: op + ": not connected to hwsim" }));
        return;
      }
      var id = nextId++;
      var message = Object.assign({}, isObj(params) ? params : {}, { id: id, op: op });
      var timer = setTimeout(function () {
        if (!pending.has(id)) return;
        pending.delete(id);
        resolve(finish({ type: "reply", id: id, ok: false, error: op + ": no answer from hwsim" }));
      }, REPLY_TIMEOUT_MS);
      pending.set(id, {
        timer: timer,
        resolve: function (reply) { resolve(finish(reply)); }
      });
      try {
        ws.send(JSON.stringify(message));
      } catch (e) {
        clearTimeout(timer);
        pending.delete(id);
        resolve(finish({ type: "reply", id: id, ok: false, error: op + ": could not send" }));
      }
    });
  }

  function onMessage(data) {
    var msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (!isObj(msg) || typeof msg.type !== "string") return;
    var handler = Object.prototype.hasOwnProperty.call(HANDLERS, msg.type) ? HANDLERS[msg.type] : null;
    if (!handler) return; // unknown message types are ignored
    try {
      handler(msg);
    } catch (e) {
      if (window.console && console.warn) console.warn("hwsim page: could not show", msg.type, e);
    }
  }

  function onReply(msg) {
    var p = pending.get(msg.id);
    if (!p) {
      if (msg.ok === false) showError(str(msg.error) || "request refused");
      return;
    }
    pending.delete(msg.id);
    clearTimeout(p.timer);
    p.resolve(msg);
  }

  // ---- hello: what this simulator has ---------------------------------------------

  function onHello(msg) {
    page.state.hello = msg;
    keyTime = null;
    lastRows = null;
    resetPaper();
    resetWire();
    buildCards(arr(msg.cards));
    buildBadReads(arr(msg.bad_kinds));
    buildFaultButtons(arr(msg.fault_kinds).length ? arr(msg.fault_kinds) : DEFAULT_FAULT_KINDS);
    buildFaultClasses(arr(msg.fault_classes).length ? arr(msg.fault_classes) : DEFAULT_FAULT_CLASSES);
    updateHostVisibility();
  }

  function buildCards(cards) {
    var box = $("cards");
    if (!box) return;
    box.textContent = "";
    cards.forEach(function (card) {
      card = obj(card);
      var pan = str(card.pan).replace(/\D/g, "");
      if (!pan) return;
      var b = el("button", "card");
      b.type = "button";
      b.dataset.pan = pan;
      b.appendChild(el("span", "card-pan", groupPan(pan)));
      if (card.meant_for) b.appendChild(el("span", "card-for", card.meant_for));
      if (card.service_code) b.appendChild(el("span", "card-sc", "service code " + str(card.service_code)));
      b.setAttribute("aria-label", "swipe test card " + groupPan(pan) +
        (card.meant_for ? ": " + str(card.meant_for) : ""));
      b.addEventListener("click", function () { send("swipe", { pan: pan }); });
      box.appendChild(b);
    });
    if (!box.childElementCount) box.appendChild(el("span", "muted", "no test cards"));
  }

  function buildBadReads(kinds) {
    var box = $("bad-reads");
    if (!box) return;
    box.textContent = "";
    kinds.forEach(function (kind) {
      kind = str(kind);
      if (!kind) return;
      var b = el("button", "small", BAD_LABELS[kind] || kind.replace(/_/g, " "));
      b.type = "button";
      b.dataset.bad = kind;
      b.title = "swipe a bad read: " + kind;
      b.addEventListener("click", function () { send("swipe", { bad: kind }); });
      box.appendChild(b);
    });
  }

  function buildFaultButtons(kinds) {
    var box = $("fault-buttons");
    if (!box) return;
    box.textContent = "";
    kinds.forEach(function (kind) {
      kind = str(kind);
      if (!kind) return;
      var b = el("button", null, FAULT_LABELS[kind] || kind.replace(/_/g, " "));
      b.type = "button";
      b.dataset.fault = kind;
      b.title = kind + ": " + (FAULT_HELP[kind] || "host fault");
      b.addEventListener("click", function () { injectFault(kind); });
      box.appendChild(b);
    });
  }

  function buildFaultClasses(classes) {
    var select = $("fault-mti");
    if (!select) return;
    var before = select.value || "0200";
    select.textContent = "";
    classes.forEach(function (c) {
      c = str(c);
      if (!c) return;
      var o = el("option", null, c === "*" ? "* (any)" : c);
      o.value = c;
      select.appendChild(o);
    });
    select.value = before;
    if (select.value !== before) select.value = "0200";
    if (!select.value && select.options.length) select.selectedIndex = 0;
  }

  function injectFault(kind) {
    var count = parseInt(($("fault-count") || {}).value, 10);
    if (!isFinite(count) || count < 0) {
      showError("host fault: count must be a whole number, 0 = until cleared");
      return;
    }
    var params = { kind: kind, count: count, mti: ($("fault-mti") || {}).value || "0200" };
    if (kind === "delay" || kind === "late") {
      var seconds = parseFloat(($("fault-seconds") || {}).value);
      if (!isFinite(seconds) || seconds < 0) {
        showError("host fault: seconds must be a number, 0 or more");
        return;
      }
      params.seconds = seconds;
    }
    var code = str(($("fault-code") || {}).value).trim();
    if (kind === "busy") params.code = code || "96";
    if (kind === "decline") params.code = code || "05";
    send("host_fault", params);
  }

  // ---- the display -------------------------------------------------------------------

  var lastRows = null;
  var keyTime = null;

  function normRows(rows) {
    var out = [];
    for (var i = 0; i < ROWS; i++) {
      var r = Array.isArray(rows) && typeof rows[i] === "string" ? rows[i] : "";
      while (r.length < COLS) r += " ";
      out.push(r);
    }
    return out;
  }

  function renderRow(rowEl, text) {
    var chars = Array.from(text);
    if (rowEl.childElementCount !== chars.length) {
      rowEl.textContent = "";
      chars.forEach(function () { rowEl.appendChild(el("span", "cell")); });
    }
    var cells = rowEl.children;
    for (var i = 0; i < chars.length; i++) {
      if (cells[i].textContent !== chars[i]) cells[i].textContent = chars[i];
    }
  }

  function onDisplay(msg) {
    var received = performance.now();
    var rows = normRows(msg.rows);
    var display = $("display");
    page.state.display = msg;
    page.displayLog.push({ t: received, rows: rows.slice() });
    if (page.displayLog.length > DISPLAY_LOG_MAX) page.displayLog.splice(0, page.displayLog.length - DISPLAY_LOG_MAX);
    var changed = lastRows !== null && rows.some(function (r, i) { return r !== lastRows[i]; });
    lastRows = rows;

    if (display) {
      display.dataset.backlight = msg.backlight === false ? "off" : "on";
      display.dataset.power = msg.on === false ? "off" : "on";
      var rowEls = display.querySelectorAll(".row");
      for (var i = 0; i < rowEls.length && i < ROWS; i++) renderRow(rowEls[i], rows[i]);
      display.setAttribute("aria-label", msg.on === false ? "display: off"
        : "display: " + rows.map(function (r) { return r.trim(); }).join(" / "));
    }

    // key -> display: from the key press to this new screen being in the page
    if (changed && keyTime !== null) {
      var ms = performance.now() - keyTime;
      keyTime = null;
      page.latencies.push(ms);
      if (page.latencies.length > LATENCIES_MAX) page.latencies.shift();
      var lat = $("latency");
      if (lat) lat.textContent = "key → display: " + Math.round(ms) + " ms";
    }
  }

  // ---- keypad -------------------------------------------------------------------------

  var flashTimers = new Map();
  function flash(key) {
    var b = document.querySelector('.keypad [data-key="' + key + '"]');
    if (!b) return;
    b.classList.add("flash");
    if (flashTimers.has(b)) clearTimeout(flashTimers.get(b));
    flashTimers.set(b, setTimeout(function () { b.classList.remove("flash"); flashTimers.delete(b); }, 140));
  }

  function pressKey(key) {
    keyTime = performance.now();
    flash(key);
    send("press", { keys: [key] });
  }

  function keyFromEvent(e) {
    var code = str(e.code);
    var m = /^(?:Digit|Numpad)([0-9])$/.exec(code);
    if (m) return m[1];
    var k = str(e.key);
    if (/^[0-9]$/.test(k)) return k;
    if (k === "Enter" || code === "NumpadEnter") return "OK";
    if (k === "Backspace") return "CLEAR";
    if (k === "Escape" || k === "Esc") return "CANCEL";
    if (k === "F1" || k === "F2" || k === "F3" || k === "F4") return k;
    return null;
  }

  var NON_TEXT_INPUTS = { button: 1, checkbox: 1, radio: 1, submit: 1, reset: 1, range: 1, color: 1, file: 1, image: 1 };
  function typingTarget(t) {
    if (!t || t.nodeType !== 1) return false;
    if (t.isContentEditable) return true;
    var tag = t.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    if (tag === "INPUT") return !NON_TEXT_INPUTS[str(t.type).toLowerCase()];
    return false;
  }

  function onKeyDown(e) {
    if (e.defaultPrevented || e.ctrlKey || e.altKey || e.metaKey) return;
    if (typingTarget(e.target)) return;
    var key = keyFromEvent(e);
    if (!key) return;
    e.preventDefault();
    if (e.repeat) return; // the keypad driver ignores repeats too
    pressKey(key);
  }

  // ---- outputs: LED and buzzer --------------------------------------------------------

  var buzzerWasOn = false;
  var userGesture = false;
  var audioCtx = null;

  function beep() {
    var box = $("beep");
    if (!userGesture || (box && !box.checked)) return;
    try {
      var AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return;
      if (!audioCtx) audioCtx = new AC();
      if (audioCtx.state === "suspended" && audioCtx.resume) {
        var r = audioCtx.resume();
        if (r && r.catch) r.catch(function () {});
      }
      var osc = audioCtx.createOscillator();
      var gain = audioCtx.createGain();
      osc.type = "square";
      osc.frequency.value = 2300;
      gain.gain.value = 0.03;
      osc.connect(gain);
      gain.connect(audioCtx.destination);
      var t = audioCtx.currentTime;
      osc.start(t);
      osc.stop(t + 0.12);
    } catch (e) {
      /* no audio here: the indicator is enough */
    }
  }

  function onOutputs(msg) {
    page.state.outputs = msg;
    var led = $("led");
    var buzzer = $("buzzer");
    var ledOn = Number(msg.led) === 1;
    var buzzOn = Number(msg.buzzer) === 1;
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

  // ---- status widgets ---------------------------------------------------------------

  function setState(id, text, tone) {
    var node = $(id);
    if (!node) return;
    node.textContent = text;
    node.classList.remove("good", "bad", "warn");
    if (tone) node.classList.add(tone);
  }

  function setFlags(id, flags) {
    var box = $(id);
    if (!box) return;
    box.textContent = "";
    flags.forEach(function (f) { box.appendChild(el("span", "flag" + (f[1] ? " " + f[1] : ""), f[0])); });
  }

  function setChecked(id, value) {
    var box = typeof id === "string" ? $(id) : id;
    if (box) box.checked = !!value;
  }

  // Leave a control alone while the person is using it.
  function setValueIfIdle(id, value) {
    var input = $(id);
    if (!input || document.activeElement === input || input.dataset.dragging === "1") return;
    input.value = value;
  }

  function onStatus(msg) {
    page.state.status = msg;
    applyBattery(obj(msg.battery));
    applyMains(msg.mains);
    applyModem(obj(msg.modem));
    applyPrimary(obj(msg.primary));
    applyPrinter(obj(msg.printer));
    applyReader(obj(msg.reader));
    applyDisplayFault(obj(msg.display_fault));
    applyHost(obj(msg.host));
    updateHostVisibility();
  }

  function reapplyStatus() {
    if (page.state.status) onStatus(page.state.status);
  }

  function applyBattery(b) {
    var percent = num(b.percent);
    var bar = $("battery-bar");
    var mini = $("mini-battery-fill");
    var p = percent === null ? 0 : Math.max(0, Math.min(100, percent));
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
    var text = percent === null ? "—" : (Math.round(percent * 10) / 10) + " %";
    if (num(b.voltage) !== null) text += " · " + b.voltage.toFixed(2) + " V";
    var bt = $("battery-text");
    if (bt) bt.textContent = text;
    var mt = $("mini-battery-text");
    if (mt) mt.textContent = percent === null ? "—" : Math.round(percent) + "%" + (b.charging ? "+" : "");
    var flags = [];
    flags.push(b.charging ? ["charging", "good"] : ["not charging", ""]);
    if (b.failing) flags.push(["gauge not answering", "bad"]);
    if (percent !== null && percent < 10) flags.push(["low", "bad"]);
    setFlags("battery-flags", flags);
    if (percent !== null) {
      setValueIfIdle("battery-range", String(Math.round(percent)));
      var out = $("battery-range-value");
      var range = $("battery-range");
      if (out && range && range.dataset.dragging !== "1" && document.activeElement !== range) {
        out.textContent = Math.round(percent) + " %";
      }
    }
    setChecked("battery-charging", b.charging);
    setChecked("battery-failing", b.failing);
  }

  function applyMains(mains) {
    var sw = $("power-switch");
    if (!sw) return;
    var ok = mains !== false;
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
    var rssi = num(m.rssi);
    var sig = $("modem-signal");
    var noSignal = rssi === null || rssi === 99;
    var bars = m.powered === false ? 0 : signalBars(rssi);
    if (sig) {
      sig.dataset.bars = String(bars);
      sig.classList.toggle("none", noSignal || m.powered === false);
      sig.setAttribute("aria-label", "signal: " + (noSignal ? "none" : bars + " of 4 bars"));
    }
    var rt = $("modem-rssi");
    if (rt) rt.textContent = rssi === null ? "—" : rssi === 99 ? "rssi 99: no signal"
      : "rssi " + rssi + " (" + (-113 + 2 * rssi) + " dBm)";
    var reg = num(m.registration);
    var word = str(m.registration_word) || (reg !== null ? REGISTRATION_WORDS[reg] || "state " + reg : "—");
    var tone = reg === 1 || reg === 5 ? "good" : reg === 3 ? "bad" : "warn";
    var rw = $("modem-reg-word");
    if (rw) {
      rw.textContent = m.powered === false ? "off" : word;
      rw.classList.remove("good", "bad", "warn");
      rw.classList.add(m.powered === false ? "warn" : tone);
    }
    var flags = [];
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
      var out = $("modem-rssi-value");
      var range = $("modem-rssi-range");
      if (out && range && range.dataset.dragging !== "1" && document.activeElement !== range) out.textContent = String(rssi);
    } else {
      var o2 = $("modem-rssi-value");
      if (o2) o2.textContent = "—";
    }
    var sel = $("modem-registration");
    if (sel && reg !== null && document.activeElement !== sel) {
      sel.value = String(reg);
      if (sel.value !== String(reg)) sel.selectedIndex = -1;
    }
    setChecked("modem-sim", m.sim_present);
    setChecked("modem-power", m.powered);
  }

  function applyPrimary(p) {
    var mode = str(p.mode) || (p.up === false ? "refuse" : p.up ? "up" : "");
    var text = mode === "up" ? "up" : mode === "refuse" ? "down (refuses connections)"
      : mode === "blackhole" ? "down (black-hole)" : mode || "—";
    setState("primary-state", text, mode === "up" ? "good" : mode ? "bad" : "");
    document.querySelectorAll("[data-primary]").forEach(function (b) {
      b.setAttribute("aria-pressed", b.dataset.primary === mode ? "true" : "false");
    });
  }

  var PRINTER_FAULT_WORDS = { paper_out: "paper out", paper_near_end: "paper near end",
    cover_open: "cover open", offline: "offline", mute: "mute" };

  function applyPrinter(p) {
    var faults = [];
    Object.keys(PRINTER_FAULT_WORDS).forEach(function (k) { if (p[k]) faults.push(PRINTER_FAULT_WORDS[k]); });
    var slow = num(p.slow_seconds);
    if (slow) faults.push("slow " + slow + " s");
    var hard = p.paper_out || p.cover_open || p.offline || p.mute;
    var text = faults.length ? faults.join(", ") : "ready";
    setState("printer-state", text, hard ? "bad" : faults.length ? "warn" : "good");
    var summary = $("printer-summary");
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
    var plugged = r.plugged !== false;
    setState("reader-state", "plugged" in r ? (plugged ? "plugged in" : "unplugged") : "—",
      "plugged" in r ? (plugged ? "good" : "bad") : "");
    setChecked("reader-plugged", plugged);
  }

  function applyDisplayFault(d) {
    setState("display-fault-state", d.active ? "I²C fault active" : "answering",
      d.active ? "bad" : "good");
  }

  function applyHost(h) {
    setState("host-state", h.down ? "DOWN (refuses connections)" : "up", h.down ? "bad" : "good");
    if (num(h.latency) !== null) setValueIfIdle("host-latency", String(h.latency));
    var list = $("host-faults");
    if (list) {
      list.textContent = "";
      arr(h.faults).forEach(function (f) {
        f = obj(f);
        var left = f.left !== undefined ? f.left : f.remaining;
        var parts = [FAULT_LABELS[str(f.kind)] || str(f.kind)];
        if (f.mti && f.kind !== "refuse" && f.kind !== "blackhole") parts.push(str(f.mti));
        if (num(f.seconds) !== null) parts.push(f.seconds + " s");
        if (f.code) parts.push("code " + str(f.code));
        parts.push(Number(left) === 0 ? "until cleared" : "×" + str(left));
        var li = el("li", null, parts.join(" · "));
        li.dataset.kind = str(f.kind);
        list.appendChild(li);
      });
      if (!list.childElementCount) list.appendChild(el("li", "none", "none"));
    }
    var oob = $("host-oob-state");
    if (oob) {
      var v = h.out_of_balance;
      oob.textContent = v === null ? "every close answered 95 until cleared"
        : typeof v === "number" && v > 0 ? "next " + v + " close(s) answered 95" : "";
    }
  }

  function updateHostVisibility() {
    var panel = $("host-panel");
    if (!panel) return;
    var hello = obj(page.state.hello);
    var host = obj(obj(page.state.status).host);
    panel.hidden = !(host.simulated === true && hello.external_host !== true);
  }

  // ---- ledger ----------------------------------------------------------------------

  function entryType(e) {
    var pc = str(e.processing_code);
    var base = pc.slice(0, 2) === "00" ? "purchase" : pc.slice(0, 2) === "20" ? "refund" : str(e.kind) || "other";
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

  function onLedger(msg) {
    var entries = arr(msg.entries);
    var currency = entries.length ? obj(entries[0]).currency : "978";
    var ct = $("charged-total");
    var cr = $("credited-total");
    if (ct) ct.textContent = formatAmount(num(msg.charged_total) || 0, currency);
    if (cr) cr.textContent = formatAmount(num(msg.credited_total) || 0, currency);
    var table = $("ledger");
    if (!table) return;
    var body = table.tBodies[0] || table.appendChild(document.createElement("tbody"));
    var scroller = table.parentElement;
    var stick = scroller ? nearBottom(scroller) : false;
    body.textContent = "";
    entries.forEach(function (e) {
      e = obj(e);
      var state = entryState(e);
      var type = entryType(e);
      var tr = el("tr", "st-" + (state === "—" ? "none" : state));
      tr.dataset.stan = str(e.stan);
      tr.appendChild(el("td", null, str(e.stan)));
      var td = el("td", null, type.text);
      td.title = type.title;
      tr.appendChild(td);
      tr.appendChild(el("td", null, maskPans(e.pan)));
      tr.appendChild(el("td", "num-col", formatAmount(e.amount, e.currency)));
      var code = el("td", null, str(e.code));
      if (e.approval) code.title = "approval " + str(e.approval) + (e.rrn ? ", RRN " + str(e.rrn) : "");
      tr.appendChild(code);
      tr.appendChild(el("td", "st", state));
      body.appendChild(tr);
    });
    if (!entries.length) {
      var empty = el("tr");
      var cell = el("td", "muted", "no transactions yet");
      cell.colSpan = 6;
      empty.appendChild(cell);
      body.appendChild(empty);
    }
    if (scroller && stick) scroller.scrollTop = scroller.scrollHeight;
  }

  // ---- paper -----------------------------------------------------------------------

  var shownReceipts = new Set();
  var partialUrl = null;

  function resetPaper() {
    var paper = $("paper");
    shownReceipts.clear();
    partialUrl = null;
    if (!paper) return;
    Array.prototype.slice.call(paper.querySelectorAll(".receipt-item, .partial-wrap")).forEach(function (n) { n.remove(); });
    updatePaperEmpty();
  }

  function updatePaperEmpty() {
    var empty = $("paper-empty");
    if (empty) empty.hidden = shownReceipts.size > 0 || partialUrl !== null;
  }

  function safeUrl(url, fallback) {
    var u = str(url);
    return /^\/receipts\/[A-Za-z0-9._-]+(\?[A-Za-z0-9=&._-]*)?$/.test(u) ? u : fallback;
  }

  function scrollPaperDown() {
    var paper = $("paper");
    if (paper) paper.scrollTop = paper.scrollHeight;
  }

  // The roll follows the newest paper unless the person scrolled up to read an old receipt.
  var paperFollow = true;

  function onPaperScroll() {
    var paper = $("paper");
    if (paper) paperFollow = nearBottom(paper);
  }

  function onImageLoad() {
    if (paperFollow) scrollPaperDown();
  }

  function onPaper(msg) {
    var paper = $("paper");
    if (!paper) return;
    var newReceipt = false;
    if (typeof msg.count === "number" && msg.count < shownReceipts.size) resetPaper();
    arr(msg.receipts).forEach(function (r) {
      r = obj(r);
      var n = parseInt(r.index, 10);
      if (!isFinite(n) || n < 1 || shownReceipts.has(n)) return;
      var item = el("div", "receipt-item");
      item.dataset.index = String(n);
      var img = el("img", "receipt");
      img.alt = "receipt " + n;
      img.addEventListener("load", onImageLoad);
      img.src = safeUrl(r.url, "/receipts/" + n + ".png");
      item.appendChild(img);
      var meta = el("div", "receipt-meta");
      meta.appendChild(el("span", null, "receipt " + n));
      var a = el("a", "save-png", "Save PNG");
      a.href = "/receipts/" + n + ".png";
      a.setAttribute("download", "receipt-" + n + ".png");
      a.setAttribute("aria-label", "save receipt " + n + " as PNG");
      meta.appendChild(a);
      item.appendChild(meta);
      // receipts in the order of their numbers, above the paper not cut yet
      var before = null;
      paper.querySelectorAll(".receipt-item, .partial-wrap").forEach(function (other) {
        if (before) return;
        if (other.classList.contains("partial-wrap") || parseInt(other.dataset.index, 10) > n) before = other;
      });
      paper.insertBefore(item, before);
      shownReceipts.add(n);
      newReceipt = true;
    });

    if ("partial" in msg) {
      var wrap = paper.querySelector(".partial-wrap");
      var part = msg.partial;
      if (isObj(part)) {
        var purl = safeUrl(part.url, "/receipts/partial.png?v=" + Date.now());
        if (!wrap) {
          wrap = el("div", "partial-wrap");
          wrap.appendChild(el("p", "partial-label", "not cut yet"));
          var pimg = el("img", "partial");
          pimg.alt = "paper above the cutter, not cut yet";
          pimg.addEventListener("load", onImageLoad);
          wrap.appendChild(pimg);
          paper.appendChild(wrap);
        }
        var img2 = wrap.querySelector("img.partial");
        if (img2 && partialUrl !== purl) img2.src = purl;
        partialUrl = purl;
      } else {
        if (wrap) wrap.remove();
        partialUrl = null;
      }
    }
    updatePaperEmpty();
    if (newReceipt) paperFollow = true;
    if (paperFollow) scrollPaperDown();
  }

  // ---- wire timeline ----------------------------------------------------------------

  var lastSeq = -Infinity;

  function resetWire() {
    var wire = $("wire");
    lastSeq = -Infinity;
    if (wire) wire.textContent = "";
  }

  function addField(line, label, value, cls) {
    var span = el("span", cls || "w-f");
    if (label) span.appendChild(el("span", "w-k", label + " "));
    span.appendChild(document.createTextNode(value));
    line.appendChild(span);
  }

  function wireLine(ev) {
    var dir = str(ev.dir);
    var fields = obj(ev.fields);
    var line = el("div", "wire-line " + (dir === "in" ? "w-in" : dir === "out" ? "w-out" : "w-note"));
    if (typeof ev.seq === "number") line.dataset.seq = String(ev.seq);
    line.appendChild(el("span", "w-time", clockTime(num(ev.t))));
    var arrow = el("span", "w-dir", dir === "in" ? "T→H" : dir === "out" ? "H→T" : "•");
    arrow.title = dir === "in" ? "terminal → host" : dir === "out" ? "host → terminal" : "note";
    line.appendChild(arrow);
    if (fields.t) line.appendChild(el("span", "w-mti", maskPans(fields.t)));
    if (fields["11"] !== undefined) addField(line, "STAN", maskPans(fields["11"]));
    if (fields["3"] !== undefined) addField(line, "pc", maskPans(fields["3"]));
    if (fields["4"] !== undefined) {
      var cents = parseInt(str(fields["4"]), 10);
      addField(line, null, isFinite(cents) && /^\d+$/.test(str(fields["4"]))
        ? formatAmount(cents, fields["49"] || "978") : maskPans(fields["4"]));
    }
    if (fields["2"] !== undefined) addField(line, null, maskPans(fields["2"]));
    if (fields["39"] !== undefined) {
      var code = str(fields["39"]);
      addField(line, "rc", maskPans(code), code === "00" ? "w-code-ok" : "w-code-bad");
    }
    if (ev.fault) line.appendChild(el("span", "w-badge", str(ev.fault)));
    if (ev.text) line.appendChild(el("span", "w-text", maskPans(ev.text)));
    if (ev.error) line.appendChild(el("span", "w-error", "error: " + maskPans(ev.error)));
    if (num(ev.bytes) !== null) line.appendChild(el("span", "w-bytes", "(" + ev.bytes + " B)"));

    var detail = [];
    Object.keys(fields).forEach(function (k) {
      detail.push((k === "t" ? "MTI" : "field " + k) + ": " + maskPans(fields[k]));
    });
    if (ev.fault) detail.push("fault: " + str(ev.fault));
    if (ev.error) detail.push("error: " + maskPans(ev.error));
    if (ev.text) detail.push(maskPans(ev.text));
    if (num(ev.bytes) !== null) detail.push(ev.bytes + " bytes");
    var detailText = detail.join("\n");
    line.title = detailText;
    var box = el("div", "wire-detail", detailText);
    line.appendChild(box);
    line.addEventListener("click", function (e) {
      if (box.contains(e.target)) return;
      var sel = window.getSelection && window.getSelection();
      if (sel && !sel.isCollapsed) return;
      line.classList.toggle("open");
    });
    return line;
  }

  function onWire(msg) {
    var wire = $("wire");
    if (!wire) return;
    var stick = nearBottom(wire);
    var frag = document.createDocumentFragment();
    arr(msg.events).forEach(function (ev) {
      ev = obj(ev);
      if (typeof ev.seq === "number") {
        if (ev.seq <= lastSeq) return;
        lastSeq = ev.seq;
      }
      frag.appendChild(wireLine(ev));
    });
    wire.appendChild(frag);
    var extra = wire.childElementCount - WIRE_MAX;
    if (extra > 0) {
      var heightBefore = wire.scrollHeight;
      while (extra-- > 0 && wire.firstElementChild) wire.removeChild(wire.firstElementChild);
      if (!stick) wire.scrollTop = Math.max(0, wire.scrollTop - (heightBefore - wire.scrollHeight));
    }
    if (stick) wire.scrollTop = wire.scrollHeight;
  }

  var HANDLERS = {
    hello: onHello,
    display: onDisplay,
    outputs: onOutputs,
    status: onStatus,
    ledger: onLedger,
    paper: onPaper,
    wire: onWire,
    reply: onReply
  };

  // ---- controls ----------------------------------------------------------------------

  // Send and, if refused, show the last state again (a checkbox goes back).
  function sendAndSync(op, params) {
    return send(op, params).then(function (reply) {
      if (!reply || reply.ok === false) reapplyStatus();
      return reply;
    });
  }

  function trackDrag(id) {
    var input = $(id);
    if (!input) return;
    input.addEventListener("pointerdown", function () { input.dataset.dragging = "1"; });
    document.addEventListener("pointerup", function () { input.dataset.dragging = ""; });
  }

  function bindControls() {
    // keypad
    document.querySelectorAll(".keypad [data-key]").forEach(function (b) {
      b.addEventListener("click", function () { pressKey(b.dataset.key); });
    });
    document.addEventListener("keydown", onKeyDown);
    var gesture = function () { userGesture = true; };
    document.addEventListener("pointerdown", gesture, true);
    document.addEventListener("keydown", gesture, true);

    // raw reader line: sent, never shown anywhere, field cleared
    var raw = $("raw-line");
    var swipeRaw = function () {
      if (!raw) return;
      var text = raw.value;
      raw.value = "";
      if (!text) return;
      send("swipe", { raw: text + "\r" });
    };
    on("raw-swipe", "click", swipeRaw);
    on(raw, "keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); swipeRaw(); }
    });

    // power and battery
    trackDrag("battery-range");
    on("battery-range", "input", function (e) {
      var out = $("battery-range-value");
      if (out) out.textContent = e.target.value + " %";
    });
    on("battery-range", "change", function (e) {
      sendAndSync("battery", { percent: Number(e.target.value) });
    });
    on("battery-charging", "change", function (e) {
      sendAndSync("battery", { rate: e.target.checked ? CHARGE_RATE : DISCHARGE_RATE });
    });
    on("battery-failing", "change", function (e) {
      sendAndSync("battery", { failing: e.target.checked });
    });
    on("power-switch", "click", function () {
      var mains = obj(page.state.status).mains !== false;
      sendAndSync("power", { state: mains ? "fail" : "restore" });
    });

    // modem
    trackDrag("modem-rssi-range");
    on("modem-rssi-range", "input", function (e) {
      var out = $("modem-rssi-value");
      if (out) out.textContent = e.target.value;
    });
    on("modem-rssi-range", "change", function (e) {
      sendAndSync("modem", { rssi: parseInt(e.target.value, 10) });
    });
    on("modem-no-signal", "click", function () { sendAndSync("modem", { rssi: 99 }); });
    on("modem-registration", "change", function (e) {
      sendAndSync("modem", { registration: parseInt(e.target.value, 10) });
    });
    on("modem-sim", "change", function (e) { sendAndSync("modem", { sim_present: e.target.checked }); });
    on("modem-power", "change", function (e) { sendAndSync("modem", { power: e.target.checked }); });

    // primary path
    document.querySelectorAll("[data-primary]").forEach(function (b) {
      b.addEventListener("click", function () {
        var mode = b.dataset.primary;
        sendAndSync("primary", mode === "up" ? { action: "up" } : { action: "down", mode: mode });
      });
    });

    // printer
    document.querySelectorAll("[data-printer-fault]").forEach(function (box) {
      box.addEventListener("change", function () {
        var params = {};
        params[box.dataset.printerFault] = box.checked;
        sendAndSync("printer_fault", params);
      });
    });
    var setSlow = function () {
      var v = parseFloat(($("printer-slow") || {}).value);
      if (!isFinite(v) || v < 0) { showError("printer: slow must be a number of seconds, 0 or more"); return; }
      sendAndSync("printer_fault", { slow_seconds: v });
    };
    on("printer-slow-set", "click", setSlow);
    on("printer-slow", "keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); setSlow(); } });
    on("printer-load", "click", function () { send("printer_load_paper", {}); });
    on("printer-clear", "click", function () { send("printer_clear", {}); });

    // card reader, display
    on("reader-plugged", "change", function (e) {
      sendAndSync(e.target.checked ? "reader_plug" : "reader_unplug", {});
    });
    on("display-fault", "click", function () { send("display_fault", { count: 0, power_loss: false }); });
    on("display-fault-power", "click", function () { send("display_fault", { count: 0, power_loss: true }); });
    on("display-clear", "click", function () { send("display_clear", {}); });

    // host
    on("host-down", "click", function () { send("host_down", {}); });
    on("host-up", "click", function () { send("host_up", {}); });
    on("host-clear", "click", function () { send("host_clear", {}); });
    var setLatency = function () {
      var v = parseFloat(($("host-latency") || {}).value);
      if (!isFinite(v) || v < 0) { showError("host latency: a number of seconds, 0 or more"); return; }
      send("host_latency", { seconds: v });
    };
    on("host-latency-set", "click", setLatency);
    on("host-latency", "keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); setLatency(); } });
    on("host-oob", "click", function () { send("host_out_of_balance", { count: 1 }); });
    on("host-oob-clear", "click", function () { send("host_out_of_balance", { clear: true }); });
  }

  function start() {
    // the display starts as 4 blank rows of 20 cells
    var display = $("display");
    if (display) {
      var blank = normRows([]);
      display.querySelectorAll(".row").forEach(function (row, i) { renderRow(row, blank[i] || ""); });
    }
    buildFaultButtons(DEFAULT_FAULT_KINDS);
    buildFaultClasses(DEFAULT_FAULT_CLASSES);
    var list = $("host-faults");
    if (list && !list.childElementCount) list.appendChild(el("li", "none", "none"));
    on("paper", "scroll", onPaperScroll);
    on("error", "click", function () { var box = $("error"); if (box) box.hidden = true; });
    bindControls();
    setConn("connecting");
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
