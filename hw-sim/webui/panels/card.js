/* The card slot: the test cards, the bad reads and a raw reader line; and the chip
 * reader: a test chip card by profile inserted into vpcd's reader, or removed. The slot
 * is the only place a full card number shows. */
import { $, arr, el, groupPan, obj, on, setState, showError, str } from "../dom.js";
import { ops, send } from "../socket.js";

const BAD_LABELS = {
  track2_error: "track 2 error",
  both_error: "both tracks error",
  noise: "noise",
  partial: "partial read",
  overlong: "overlong line"
};

export function buildCards(cards) {
  const box = $("cards");
  if (!box) return;
  box.textContent = "";
  cards.forEach(function (card) {
    card = obj(card);
    const pan = str(card.pan).replace(/\D/g, "");
    if (!pan) return;
    const b = el("button", "card");
    b.type = "button";
    b.dataset.pan = pan;
    b.appendChild(el("span", "card-pan", groupPan(pan)));
    if (card.meant_for) b.appendChild(el("span", "card-for", card.meant_for));
    if (card.service_code) b.appendChild(el("span", "card-sc", "service code " + str(card.service_code)));
    b.setAttribute("aria-label", "swipe test card " + groupPan(pan) +
      (card.meant_for ? ": " + str(card.meant_for) : ""));
    b.addEventListener("click", function () { send(ops.swipe, { pan: pan }); });
    box.appendChild(b);
  });
  if (!box.childElementCount) box.appendChild(el("span", "muted", "no test cards"));
}

export function buildBadReads(kinds) {
  const box = $("bad-reads");
  if (!box) return;
  box.textContent = "";
  kinds.forEach(function (kind) {
    kind = str(kind);
    if (!kind) return;
    const b = el("button", "small", BAD_LABELS[kind] || kind.replace(/_/g, " "));
    b.type = "button";
    b.dataset.bad = kind;
    b.title = "swipe a bad read: " + kind;
    b.addEventListener("click", function () { send(ops.swipe, { bad: kind }); });
    box.appendChild(b);
  });
}

// The raw reader line: sent, never shown anywhere, the field cleared.
export function bindCardSlot() {
  const raw = $("raw-line");
  const swipeRaw = function () {
    if (!raw) return;
    const text = raw.value;
    raw.value = "";
    if (!text) return;
    send(ops.swipe, { raw: text + "\r" });
  };
  on("raw-swipe", "click", swipeRaw);
  on(raw, "keydown", function (e) {
    if (e.key === "Enter") { e.preventDefault(); swipeRaw(); }
  });
}

// ---- the chip reader -------------------------------------------------------------------

let chipAbout = {}; // profile -> what it is meant for

// The chip card profiles, asked for once the catalogue is known (the hello).
export function loadChipCards() {
  if (!ops.chip_cards) return;
  send(ops.chip_cards, {}).then(function (reply) {
    reply = obj(reply);
    const select = $("chip-profile");
    if (!select || reply.ok === false) return;
    const before = select.value;
    select.textContent = "";
    chipAbout = {};
    arr(reply.profiles).forEach(function (p) {
      p = obj(p);
      const name = str(p.name);
      if (!name) return;
      chipAbout[name] = str(p.describe);
      const o = el("option", null, name);
      o.value = name;
      select.appendChild(o);
    });
    if (before) select.value = before;
    showChipAbout();
    applyChip(reply.slot);
  });
}

function showChipAbout() {
  const select = $("chip-profile");
  const about = $("chip-profile-about");
  if (select && about) about.textContent = chipAbout[select.value] || "";
}

// The slot as the status says: the card in it, or empty; hidden without a chip slot.
export function applyChip(slot) {
  const box = $("chip-slot");
  if (!box) return;
  box.hidden = slot === null || slot === undefined;
  if (box.hidden) return;
  slot = obj(slot);
  const card = str(slot.card);
  setState("chip-state", card ? card + " inserted" : "empty", card ? "good" : "");
  const insert = $("chip-insert");
  const remove = $("chip-remove");
  if (insert) insert.disabled = !!card;
  if (remove) remove.disabled = !card;
}

export function bindChipSlot() {
  on("chip-profile", "change", showChipAbout);
  on("chip-insert", "click", function () {
    const select = $("chip-profile");
    const profile = select ? select.value : "";
    if (!profile) { showError("insert: no chip card profile chosen"); return; }
    send(ops.chip_insert, { profile: profile });
  });
  on("chip-remove", "click", function () { send(ops.chip_remove, {}); });
}
