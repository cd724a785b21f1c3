/* The page's one WebSocket to hwsim (hw-sim/web.py, at /ws), and its requests.
 *
 * The server pushes `hello`, `display`, `outputs`, `status`, `ledger`, `paper`,
 * `wire` and `reply` messages; the page sends {"id": n, "op": ..., ...params}.
 * Which ops the page may send, and their arguments, come in the hello's catalogue
 * (`ops`, declared once in hwsim.ops): a control names its op as `ops.press`, and
 * `send` refuses an op or an argument the catalogue does not have.
 *
 * For tests and benchmarks: window.hwsimPage = {send(op, params) -> Promise of the
 * reply, latencies: [ms, ...], displayLog: [{t, rows}, ...], connected: bool}.
 */
import { $, isObj, str, showError } from "./dom.js";

const BACKOFF_MIN = 500;
const BACKOFF_MAX = 5000;
const REPLY_TIMEOUT_MS = 30000;

export const page = window.hwsimPage = window.hwsimPage || {};
page.latencies = [];
page.displayLog = [];
page.connected = false;
page.send = send;
page.state = { hello: null, status: null, outputs: null, display: null };

// The page ops this simulator offers, by name (the hello's catalogue).
export const ops = {};

export function setCatalogue(catalogue) {
  Object.keys(ops).forEach(function (name) { delete ops[name]; });
  Object.keys(isObj(catalogue) ? catalogue : {}).forEach(function (name) {
    const spec = catalogue[name];
    if (isObj(spec) && spec.name === name) ops[name] = spec;
  });
}

let ws = null;
let backoff = BACKOFF_MIN;
let retryTimer = null;
let nextId = 1;
const pending = new Map(); // id -> {resolve, timer}
let dispatchMessage = function () {};

function setConn(state) {
  const box = $("conn");
  page.connected = state === "connected";
  document.body.classList.toggle("offline", state !== "connected");
  if (!box) return;
  box.dataset.state = state;
  box.textContent = state === "connected" ? "connected"
    : state === "disconnected" ? "disconnected — retrying" : "connecting…";
}

// Connect, and keep connecting; each message from the server goes to `onMessage`.
export function connect(onMessage) {
  dispatchMessage = onMessage;
  setConn("connecting");
  open();
}

function open() {
  retryTimer = null;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  let sock;
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
    receive(ev.data);
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
  const delay = backoff;
  backoff = Math.min(backoff * 2, BACKOFF_MAX);
  retryTimer = setTimeout(open, delay);
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

function refused(error) {
  return Promise.resolve(finish({ type: "reply", ok: false, error: error }));
}

// Send one request for `op` (a catalogue entry, or its name); a Promise of the reply (ok
// false when the op or an argument is not offered, when not connected or no answer).
export function send(op, params) {
  const spec = typeof op === "string" ? ops[op] : op;
  if (!isObj(spec) || ops[spec.name] !== spec) {
    return refused(str(typeof op === "string" ? op : "this control") +
      ": not offered by this simulator");
  }
  const name = spec.name;
  params = isObj(params) ? params : {};
  const known = (Array.isArray(spec.args) ? spec.args : []).map(function (a) { return a.name; });
  const unknown = Object.keys(params).filter(function (k) { return known.indexOf(k) < 0; });
  if (unknown.length) return refused(name + ": the page sent unknown " + unknown.join(", "));
  return new Promise(function (resolve) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      resolve(finish({ type: "reply", ok: false, error: name + ": not connected to hwsim" }));
      return;
    }
    const id = nextId++;
    const message = Object.assign({}, params, { id: id, op: name });
    const timer = setTimeout(function () {
      if (!pending.has(id)) return;
      pending.delete(id);
      resolve(finish({ type: "reply", id: id, ok: false, error: name + ": no answer from hwsim" }));
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
      resolve(finish({ type: "reply", id: id, ok: false, error: name + ": could not send" }));
    }
  });
}

function receive(data) {
  let msg;
  try { msg = JSON.parse(data); } catch (e) { return; }
  if (!isObj(msg) || typeof msg.type !== "string") return;
  if (msg.type === "reply") {
    onReply(msg);
    return;
  }
  try {
    dispatchMessage(msg);
  } catch (e) {
    if (window.console && console.warn) console.warn("hwsim page: could not show", msg.type, e);
  }
}

function onReply(msg) {
  const p = pending.get(msg.id);
  if (!p) {
    if (msg.ok === false) showError(str(msg.error) || "request refused");
    return;
  }
  pending.delete(msg.id);
  clearTimeout(p.timer);
  p.resolve(msg);
}
