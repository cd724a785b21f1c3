/* hwsim web page: shows the simulated terminal live and lets a person use it.
 *
 * Plain ES modules, no framework, no build step, no external resources:
 * socket.js is the WebSocket to hw-sim/web.py and the requests; dom.js the small
 * helpers; panels/ one module per part of the page (display and keypad, card slot,
 * status widgets, host controls, ledger, paper roll, wire). This module routes the
 * server's messages to them and starts the page.
 *
 * The hello says what this simulator has: its test cards and bad reads, the page
 * ops and their arguments (hwsim.ops), the host fault kinds with their defaults
 * (hwsim.hostfaults), the message classes. Nothing of it is written here again.
 *
 * Server data is only ever put into the page with textContent or as attribute
 * values, never as HTML. A full card number appears only on the card buttons.
 */
import { arr, bindErrorBox, on } from "./dom.js";
import { connect, page, setCatalogue } from "./socket.js";
import { bindCardSlot, bindChipSlot, buildBadReads, buildCards, loadChipCards } from "./panels/card.js";
import { bindKeypad, blankDisplay, onDisplay, resetDisplay } from "./panels/display.js";
import { bindHostControls, buildFaultButtons, buildFaultClasses, updateHostVisibility } from "./panels/host.js";
import { onLedger } from "./panels/ledger.js";
import { onPaper, onPaperScroll, resetPaper } from "./panels/paper.js";
import { bindStatusControls, onOutputs, onStatus } from "./panels/status.js";
import { onWire, resetWire } from "./panels/wire.js";

function onHello(msg) {
  page.state.hello = msg;
  setCatalogue(msg.ops);
  resetDisplay();
  resetPaper();
  resetWire();
  buildCards(arr(msg.cards));
  buildBadReads(arr(msg.bad_kinds));
  loadChipCards();
  buildFaultButtons(arr(msg.fault_kinds));
  buildFaultClasses(arr(msg.fault_classes));
  updateHostVisibility();
}

const HANDLERS = {
  hello: onHello,
  display: onDisplay,
  outputs: onOutputs,
  status: onStatus,
  ledger: onLedger,
  paper: onPaper,
  wire: onWire
};

function onMessage(msg) {
  const handler = Object.prototype.hasOwnProperty.call(HANDLERS, msg.type) ? HANDLERS[msg.type] : null;
  if (handler) handler(msg); // unknown message types are ignored
}

function start() {
  blankDisplay();
  on("paper", "scroll", onPaperScroll);
  bindErrorBox();
  bindKeypad();
  bindCardSlot();
  bindChipSlot();
  bindStatusControls();
  bindHostControls();
  connect(onMessage);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
