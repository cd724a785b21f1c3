/* posterm fleet page: the table (alerts first, as the server orders it), one terminal's
 * detail, its commands. Plain ES module, no build step, no external resources; data from
 * the server goes into the page as textContent only, never as HTML.
 *
 * window.fleetPage.loaded is the time (performance.now()) the first table was drawn,
 * for the benchmark; body[data-rows] the rows drawn.
 */
const $ = (sel) => document.querySelector(sel);
const REFRESH_MS = 5000;
const MINOR = new Set(["battery_low", "mains_lost", "version_behind"]);
const state = { selected: null, lastFleet: "" };
window.fleetPage = { loaded: null };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function showError(text) {
  const box = $("#error");
  box.textContent = text;
  box.hidden = !text;
}

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  const text = await r.text();
  if (!r.ok) throw new Error(JSON.parse(text).error || r.statusText);
  return [text, JSON.parse(text)];
}

function badges(alerts) {
  const td = el("td");
  for (const a of alerts) td.append(el("span", a.text, MINOR.has(a.code) ? "badge minor" : "badge"));
  return td;
}

function drawFleet(view) {
  const body = $("#fleet tbody");
  const rows = document.createDocumentFragment();
  for (const t of view.terminals) {
    const tr = el("tr");
    tr.dataset.tid = t.tid;
    if (t.alerts.length) tr.classList.add("alerting");
    if (t.tid === state.selected) tr.classList.add("selected");
    tr.append(el("td", t.tid), el("td", t.state || "?", t.state === "offline" ? "state-offline" : ""),
      el("td", t.version || "-"), el("td", t.battery == null ? "-" : `${t.battery}%`),
      el("td", t.printer || "-"), el("td", t.offline_count ?? "-"), badges(t.alerts));
    rows.append(tr);
  }
  body.replaceChildren(rows);
  $("#summary").textContent = `${view.count} terminals, ${view.alerting} with alerts; ` +
    `newest version ${view.newest_version || "-"}`;
  document.body.dataset.rows = String(view.terminals.length);
}

async function loadFleet() {
  try {
    const only = $("#only-alerts").checked ? "?alerts=1" : "";
    const [text, view] = await getJSON(`/api/fleet${only}`);
    if (text !== state.lastFleet) {
      state.lastFleet = text;
      drawFleet(view);
    }
    if (window.fleetPage.loaded === null) window.fleetPage.loaded = performance.now();
    showError("");
  } catch (err) {
    showError(`cannot read the fleet: ${err.message}`);
  }
}

function short(obj) {
  return obj == null ? "" : JSON.stringify(obj);
}

function drawDetail(t) {
  $("#detail").hidden = false;
  $("#detail-tid").textContent = t.tid;
  $("#detail-state").textContent = `${t.state || "state unknown"} since ${t.since || "?"}, ` +
    `version ${t.version || "?"}, last heard ${t.seen || "never"}`;
  $("#detail-alerts").replaceChildren(...t.alerts.map((a) => el("li", a.text)));
  $("#facts").textContent = JSON.stringify(t.facts, null, 1);
  const missing = t.last_seq - t.events_kept;
  $("#events-note").textContent = `${t.events_kept} events kept, last seq ${t.last_seq}` +
    (missing > 0 ? `; ${missing} never received` : "");
  $("#events tbody").replaceChildren(...t.events.map((e) => {
    const tr = el("tr");
    tr.dataset.seq = String(e.seq);
    tr.append(el("td", e.seq), el("td", e.t), el("td", e.kind), el("td", short(e.data)));
    return tr;
  }));
  $("#commands tbody").replaceChildren(...t.commands.map((c) => {
    const tr = el("tr");
    tr.dataset.id = c.id;
    tr.append(el("td", c.t), el("td", c.cmd), el("td", short(c.args)),
      el("td", c.reply ? short(c.reply) : "no reply yet"));
    return tr;
  }));
}

async function select(tid) {
  state.selected = tid;
  for (const tr of document.querySelectorAll("#fleet tr.selected")) tr.classList.remove("selected");
  document.querySelector(`#fleet tr[data-tid="${CSS.escape(tid)}"]`)?.classList.add("selected");
  try {
    const [, t] = await getJSON(`/api/terminals/${encodeURIComponent(tid)}`);
    if (state.selected === tid) drawDetail(t);
  } catch (err) {
    showError(`cannot read ${tid}: ${err.message}`);
  }
}

function argsFor(cmd) {
  if (cmd === "logs") return { lines: Number($("#logs-lines").value) };
  if (cmd === "update") return { url: $("#update-url").value.trim(), sha256: $("#update-sha256").value.trim() };
  if (cmd === "params") return JSON.parse($("#params-json").value || "{}");
  return {};
}

async function sendCommand(button) {
  const tid = state.selected;
  const cmd = button.dataset.cmd;
  const out = $("#reply");
  if (button.classList.contains("danger") && !window.confirm(`${cmd} on ${tid}?`)) return;
  let args;
  try {
    args = argsFor(cmd);
  } catch (err) {
    out.textContent = `${cmd}: the arguments are not JSON (${err.message})`;
    out.className = "reply failed";
    return;
  }
  out.textContent = `${cmd} sent to ${tid}, waiting for the reply…`;
  out.className = "reply";
  out.dataset.state = "waiting";
  const r = await fetch(`/api/terminals/${encodeURIComponent(tid)}/commands`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ cmd, args }),
  });
  const answer = await r.json();
  if (!r.ok) {
    out.textContent = `${cmd} not sent: ${answer.error}`;
    out.className = "reply failed";
    out.dataset.state = "refused";
  } else if (answer.reply === null) {
    out.textContent = `${cmd} (${answer.command.id}): no reply yet; it shows below when it comes`;
    out.dataset.state = "no-reply";
  } else {
    out.textContent = `${cmd} → ${JSON.stringify(answer.reply, null, 1)}`;
    out.className = answer.reply.ok ? "reply" : "reply failed";
    out.dataset.state = "replied";
  }
  out.dataset.id = answer.command ? answer.command.id : "";
  if (state.selected === tid) select(tid);
}

$("#fleet tbody").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-tid]");
  if (tr) select(tr.dataset.tid);
});
for (const b of document.querySelectorAll(".commands button")) {
  b.addEventListener("click", () => sendCommand(b));
}
$("#only-alerts").addEventListener("change", loadFleet);
loadFleet();
setInterval(() => {
  loadFleet();
  if (state.selected) select(state.selected);
}, REFRESH_MS);
