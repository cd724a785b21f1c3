/* The card slot: the test cards, the bad reads and a raw reader line. The slot is
 * the only place a full card number shows. */
import { $, el, groupPan, obj, on, str } from "../dom.js";
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
