/* The simulated acquirer host's controls: down and up, latency, out of balance, and a
 * button for each fault kind. The kinds, their words and their default arguments come
 * from the hello (declared once, in hwsim.hostfaults); the pending faults are listed
 * from the status. */
import { $, arr, el, num, obj, on, onEnter, setState, setValueIfIdle, showError, str } from "../dom.js";
import { ops, page, send } from "../socket.js";

let faultKinds = {}; // kind -> {kind, label, help, params, codes, connection}

function label(kind) {
  const spec = faultKinds[kind];
  return spec ? str(spec.label) : str(kind).replace(/_/g, " ");
}

// The hello's fault kinds: a button each, and the code field's hint from their defaults.
export function buildFaultButtons(kinds) {
  faultKinds = {};
  const box = $("fault-buttons");
  if (box) box.textContent = "";
  const hints = [];
  kinds.forEach(function (spec) {
    spec = obj(spec);
    const kind = str(spec.kind);
    if (!kind) return;
    faultKinds[kind] = spec;
    const code = obj(spec.params).code;
    if (code !== undefined && code !== null) {
      const codes = arr(spec.codes);
      hints.push({ kind: kind, code: str(code),
        text: kind + (codes.length ? " " + codes.join(" or ") : "") + " (default " + str(code) + ")" });
    }
    if (!box) return;
    const b = el("button", null, str(spec.label) || kind.replace(/_/g, " "));
    b.type = "button";
    b.dataset.fault = kind;
    b.title = kind + ": " + (str(spec.help) || "host fault");
    b.addEventListener("click", function () { injectFault(kind); });
    box.appendChild(b);
  });
  const codeField = $("fault-code");
  if (codeField) {
    codeField.placeholder = hints.map(function (h) { return h.code; }).join(" / ");
    codeField.title = "answer code: " + hints.map(function (h) { return h.text; }).join(", ");
  }
}

export function buildFaultClasses(classes) {
  const select = $("fault-mti");
  if (!select) return;
  const before = select.value || "0200";
  select.textContent = "";
  classes.forEach(function (c) {
    c = str(c);
    if (!c) return;
    const o = el("option", null, c === "*" ? "* (any)" : c);
    o.value = c;
    select.appendChild(o);
  });
  select.value = before;
  if (select.value !== before && select.options.length) select.selectedIndex = 0;
}

function injectFault(kind) {
  const spec = obj(faultKinds[kind]);
  const count = parseInt(($("fault-count") || {}).value, 10);
  if (!isFinite(count) || count < 0) {
    showError("host fault: count must be a whole number, 0 = until cleared");
    return;
  }
  const params = { kind: kind, count: count };
  const mti = ($("fault-mti") || {}).value;
  if (mti) params.mti = mti;
  const wanted = obj(spec.params);
  if ("seconds" in wanted) {
    const seconds = parseFloat(($("fault-seconds") || {}).value);
    if (!isFinite(seconds) || seconds < 0) {
      showError("host fault: seconds must be a number, 0 or more");
      return;
    }
    params.seconds = seconds;
  }
  if ("code" in wanted) {
    const code = str(($("fault-code") || {}).value).trim();
    if (code) params.code = code; // else the kind's own default
  }
  send(ops.host_fault, params);
}

export function applyHost(h) {
  setState("host-state", h.down ? "DOWN (refuses connections)" : "up", h.down ? "bad" : "good");
  if (num(h.latency) !== null) setValueIfIdle("host-latency", String(h.latency));
  const list = $("host-faults");
  if (list) {
    list.textContent = "";
    arr(h.faults).forEach(function (f) {
      f = obj(f);
      const left = f.left !== undefined ? f.left : f.remaining;
      const parts = [label(f.kind)];
      if (f.mti && !obj(faultKinds[str(f.kind)]).connection) parts.push(str(f.mti));
      if (num(f.seconds) !== null) parts.push(f.seconds + " s");
      if (f.code) parts.push("code " + str(f.code));
      parts.push(Number(left) === 0 ? "until cleared" : "×" + str(left));
      const li = el("li", null, parts.join(" · "));
      li.dataset.kind = str(f.kind);
      list.appendChild(li);
    });
    if (!list.childElementCount) list.appendChild(el("li", "none", "none"));
  }
  const oob = $("host-oob-state");
  if (oob) {
    const v = h.out_of_balance;
    oob.textContent = v === null ? "every close answered 95 until cleared"
      : typeof v === "number" && v > 0 ? "next " + v + " close(s) answered 95" : "";
  }
}

export function updateHostVisibility() {
  const panel = $("host-panel");
  if (!panel) return;
  const hello = obj(page.state.hello);
  const host = obj(obj(page.state.status).host);
  panel.hidden = !(host.simulated === true && hello.external_host !== true);
}

export function bindHostControls() {
  const list = $("host-faults");
  if (list && !list.childElementCount) list.appendChild(el("li", "none", "none"));
  on("host-down", "click", function () { send(ops.host_down, {}); });
  on("host-up", "click", function () { send(ops.host_up, {}); });
  on("host-clear", "click", function () { send(ops.host_clear, {}); });
  on("host-pin-reset", "click", function () { send(ops.pin_reset, {}); });
  const setLatency = function () {
    const v = parseFloat(($("host-latency") || {}).value);
    if (!isFinite(v) || v < 0) { showError("host latency: a number of seconds, 0 or more"); return; }
    send(ops.host_latency, { seconds: v });
  };
  on("host-latency-set", "click", setLatency);
  onEnter("host-latency", setLatency);
  on("host-oob", "click", function () { send(ops.host_out_of_balance, { count: 1 }); });
  on("chip-wrong-arpc", "click", function () { send(ops.chip_wrong_arpc, { count: 1 }); });
  on("chip-scripts", "click", function () {
    const templates = ($("chip-script-templates") || {}).value || "72";
    send(ops.chip_scripts, { templates: templates });
  });
  on("host-oob-clear", "click", function () { send(ops.host_out_of_balance, { clear: true }); });
}
