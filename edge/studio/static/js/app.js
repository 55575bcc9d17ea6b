// edge-tsm studio: the page. Hash routes (#library, #teach, #evaluate, #live), one keyboard handler.

import { Library } from "./library.js";
import { Viewer } from "./viewer.js";
import { Teach, Evaluate } from "./jobs.js";
import { Live } from "./live.js";
import { $, banner, notice } from "./ui.js";

const viewer = new Viewer();
const library = new Library(viewer);
viewer.library = library;
const pages = ["library", "teach", "evaluate", "live"];
let current = null;

function go(page) {
  if (location.hash !== `#${page}`) history.pushState(null, "", `#${page}`);
  route();
}

const teach = new Teach(viewer, go), evaluate = new Evaluate(viewer, go), live = new Live();
window.studio = { viewer, library, teach, evaluate, live };   // for the console (and the browser tests)

function route() {
  const page = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : "library";
  if (page === current) return;
  if (current === "live") live.hide();
  if (current) notice("");
  current = page;
  for (const p of pages) {
    $(`#page-${p}`).hidden = p !== page;
    const a = document.querySelector(`nav a[data-page="${p}"]`);
    if (p === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (page === "teach") teach.show();
  if (page === "evaluate") evaluate.show();
  if (page === "live") live.show();
  if (page === "library") { viewer.listModels(); if (viewer.player.info) viewer.timeline.draw(); }
}

window.addEventListener("hashchange", route);

document.addEventListener("keydown", (e) => {
  if (current !== "library") return;
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  if (e.altKey || e.metaKey) return;
  const k = e.key;
  if (e.ctrlKey) {
    if (k === "z") { e.preventDefault(); viewer.undoLast(); }
    return;
  }
  const act = {
    ArrowRight: () => viewer.player.step(e.shiftKey ? 10 : 1),
    ArrowLeft: () => viewer.player.step(e.shiftKey ? -10 : -1),
    Home: () => viewer.player.seek(0),
    End: () => viewer.player.show(viewer.player.frames - 1),
    " ": () => viewer.player.toggle(),
    Enter: () => viewer.accept(),
    x: () => viewer.assign("skip"),
    u: () => viewer.undoLast(),
    "[": () => viewer.mark("in"),
    "]": () => viewer.mark("out"),
    j: () => viewer.next(1),
    k: () => viewer.next(-1),
    n: () => $("#new-class").focus(),
  }[k];
  if (act) { e.preventDefault(); act(); return; }
  if (/^[0-9]$/.test(k)) { e.preventDefault(); viewer.key(Number(k)); }
});

async function start() {
  route();
  try {
    await library.load();
    document.body.dataset.ready = "1";
  } catch (e) {
    banner(e.message);
  }
}

start();
