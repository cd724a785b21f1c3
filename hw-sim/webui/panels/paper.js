/* The paper roll: each receipt as the printer model decoded it, drawn by the server as
 * an image, with Save PNG; and the paper above the cutter, not cut yet. */
import { $, arr, el, isObj, nearBottom, obj, str } from "../dom.js";

let shownReceipts = new Set();
let partialUrl = null;

export function resetPaper() {
  let paper = $("paper");
  shownReceipts.clear();
  partialUrl = null;
  if (!paper) return;
  Array.prototype.slice.call(paper.querySelectorAll(".receipt-item, .partial-wrap")).forEach(function (n) { n.remove(); });
  updatePaperEmpty();
}

function updatePaperEmpty() {
  let empty = $("paper-empty");
  if (empty) empty.hidden = shownReceipts.size > 0 || partialUrl !== null;
}

function safeUrl(url, fallback) {
  let u = str(url);
  return /^\/receipts\/[A-Za-z0-9._-]+(\?[A-Za-z0-9=&._-]*)?$/.test(u) ? u : fallback;
}

function scrollPaperDown() {
  let paper = $("paper");
  if (paper) paper.scrollTop = paper.scrollHeight;
}

// The roll follows the newest paper unless the person scrolled up to read an old receipt.
let paperFollow = true;

export function onPaperScroll() {
  let paper = $("paper");
  if (paper) paperFollow = nearBottom(paper);
}

function onImageLoad() {
  if (paperFollow) scrollPaperDown();
}

export function onPaper(msg) {
  let paper = $("paper");
  if (!paper) return;
  let newReceipt = false;
  if (typeof msg.count === "number" && msg.count < shownReceipts.size) resetPaper();
  arr(msg.receipts).forEach(function (r) {
    r = obj(r);
    let n = parseInt(r.index, 10);
    if (!isFinite(n) || n < 1 || shownReceipts.has(n)) return;
    let item = el("div", "receipt-item");
    item.dataset.index = String(n);
    let img = el("img", "receipt");
    img.alt = "receipt " + n;
    img.addEventListener("load", onImageLoad);
    img.src = safeUrl(r.url, "/receipts/" + n + ".png");
    item.appendChild(img);
    let meta = el("div", "receipt-meta");
    meta.appendChild(el("span", null, "receipt " + n));
    let a = el("a", "save-png", "Save PNG");
    a.href = "/receipts/" + n + ".png";
    a.setAttribute("download", "receipt-" + n + ".png");
    a.setAttribute("aria-label", "save receipt " + n + " as PNG");
    meta.appendChild(a);
    item.appendChild(meta);
    // receipts in the order of their numbers, above the paper not cut yet
    let before = null;
    paper.querySelectorAll(".receipt-item, .partial-wrap").forEach(function (other) {
      if (before) return;
      if (other.classList.contains("partial-wrap") || parseInt(other.dataset.index, 10) > n) before = other;
    });
    paper.insertBefore(item, before);
    shownReceipts.add(n);
    newReceipt = true;
  });

  if ("partial" in msg) {
    let wrap = paper.querySelector(".partial-wrap");
    let part = msg.partial;
    if (isObj(part)) {
      let purl = safeUrl(part.url, "/receipts/partial.png?v=" + Date.now());
      if (!wrap) {
        wrap = el("div", "partial-wrap");
        wrap.appendChild(el("p", "partial-label", "not cut yet"));
        let pimg = el("img", "partial");
        pimg.alt = "paper above the cutter, not cut yet";
        pimg.addEventListener("load", onImageLoad);
        wrap.appendChild(pimg);
        paper.appendChild(wrap);
      }
      let img2 = wrap.querySelector("img.partial");
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
