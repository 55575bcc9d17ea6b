// The viewer: the player, the score timeline and the labelling keys for the open item (a review clip,
// a dataset clip or a recording). Every change is posted at once; undo posts the previous state back.

import { api, ApiError } from "./api.js";
import { Player } from "./player.js";
import { Timeline, colourOf, fmt } from "./timeline.js";
import { $, banner, bundleText, el, saveState, state } from "./ui.js";

export class Viewer {
  constructor() {
    this.item = null; this.info = null; this.scores = null;
    this.segments = []; this.segVersion = null; this.pending = null;
    this.undo = [];
    this.chain = Promise.resolve();   // changes run one after another, in the order the keys came
    this.library = null;    // set by app.js
    this.timeline = new Timeline($("#timeline"), (s) => this.player.seek(s));
    this.player = new Player($("#frame"), (i, t) => this.shown(i, t));
    this.player.onPlaying = (on) => { $("#play").textContent = on ? "❚❚ pause" : "▶ play"; };
    this.player.onError = (m) => this.message(m);
    $("#play").addEventListener("click", () => this.player.toggle());
    $("#prev").addEventListener("click", () => this.player.step(-1));
    $("#next").addEventListener("click", () => this.player.step(1));
    $("#accept").addEventListener("click", () => this.accept());
    $("#skip").addEventListener("click", () => this.assign("skip"));
    $("#undo").addEventListener("click", () => this.undoLast());
    for (const name of ["assign", "accept", "undoLast", "mark", "newClass", "removeSegment"]) {
      const fn = this[name].bind(this);
      this[name] = (...args) => this.serial(() => fn(...args));
    }
    $("#new-class-form").addEventListener("submit", (e) => { e.preventDefault(); this.newClass(); });
    $("#score-model").addEventListener("change", (e) => {
      e.target.blur();   // the keys go back to labelling
      if (this.item && this.info) { delete $("#timeline").dataset.ready; this.loadScores(this.item); }
    });
  }

  /** The timeline's model choices (GET /api/bundles): the server's model, the built-in one, every bundle
   *  under work/bundles (taught here, in this run or an earlier one). One that does not load is shown, disabled. */
  async listModels() {
    let bundles;
    try { bundles = (await api.get("/api/bundles")).bundles; } catch (e) {
      banner(`the models to choose from: ${e.message}`); return;
    }
    const sel = $("#score-model"), was = sel.value;   // read after the wait: a choice made meanwhile is kept
    sel.replaceChildren(...bundles.map((b) => el("option", { value: b.path, disabled: !!b.error, title: b.folder || b.error },
      bundleText(b))));
    sel.value = bundles.some((b) => b.path === was && !b.error) ? was : "default";
    sel.dataset.listed = String(bundles.length);
  }

  /** Run a change after the ones before it have finished (a fast "x" then "u" undoes the skip, not the one before). */
  serial(fn) {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => {});
    return run;
  }

  isOpen(item) { return !!this.item && this.item.path === item.path; }

  message(text) { const m = $("#player-msg"); m.textContent = text || ""; m.hidden = !text; }

  /** Open an item; ``#frame``'s ``data-opened`` is its path once its frame, info and segments are there
   *  (cleared at once: a second open of the same item is not mistaken for the first). */
  async open(item, at = 0) {
    this.item = item; this.pending = null; this.scores = null;
    delete $("#frame").dataset.opened;
    this.library.select(item);
    this.message("");
    $("#now-title").textContent = item.clip || item.path;
    $("#segments-box").hidden = item.kind !== "recording";
    this.renderKeys();
    this.timeline.pending = null;
    delete $("#timeline").dataset.ready;
    this.timeline.set({ t: [], probs: [], labels: [], events: [], segments: [], marks: [], duration: 0 });
    let info;
    try { info = await api.get("/api/video/info", { path: item.path }); } catch (e) {
      if (this.item !== item) return;
      this.message(e.message); $("#now-info").textContent = ""; this.info = null;
      return;
    }
    if (this.item !== item) return;
    this.info = info;
    $("#now-info").textContent = `${info.frames} frames · ${info.fps} fps · ${info.width}×${info.height}`;
    $("#fps").textContent = `${info.fps} fps`;
    this.timeline.set({ duration: info.duration_s || info.frames / info.fps, marks: state.evalMarks.get(item.path) || [] });
    await this.player.open(item.path, info);
    if (at) await this.player.seek(at);
    if (item.kind === "recording") await this.loadSegments();
    if (this.item !== item) return;
    $("#frame").dataset.opened = item.path;
    this.loadScores(item);
  }

  async loadScores(item) {
    $("#suggestion").textContent = item.kind === "spool" && item.predicted ? `model: ${item.predicted}` : "";
    $("#legend").replaceChildren(el("span", { class: "muted" }, "computing the model's scores…"));
    let s;
    const model = $("#score-model").value || "default";
    try { s = await api.get("/api/scores", { path: item.path, model }); } catch (e) {
      if (this.item === item) { $("#legend").replaceChildren(el("span", { class: "bad" }, e.message)); }
      return;
    }
    if (this.item !== item || ($("#score-model").value || "default") !== model) return;
    this.scores = s;
    this.timeline.set({ t: s.t, probs: s.probs, labels: s.labels, events: s.events });
    $("#legend").replaceChildren(...s.labels.map((l) => el("span", { style: `--c:${colourOf(l)}` }, l)),
      el("span", { class: "muted", dataset: { events: String(s.events.length) } },
        `· ${s.events.length} event${s.events.length === 1 ? "" : "s"} with the current settings${s.cached ? "" : " (computed now)"}`));
    $("#timeline").dataset.ready = item.path;
    $("#timeline").dataset.model = model;
  }

  shown(i, t) {
    $("#frame-pos").textContent = `frame ${i + 1} / ${this.player.frames}`;
    $("#frame-time").textContent = `${t.toFixed(2)} s`;
    this.timeline.cursor(t);
    this.renderPending();
  }

  renderKeys() {
    const box = $("#class-keys");
    const current = this.item ? this.item.label : null;
    box.replaceChildren(...state.classes.map((c, k) => el("button", {
      "aria-pressed": String(current === c), "aria-label": `label ${c}${k < 10 ? ` (key ${(k + 1) % 10})` : ""}`,
      dataset: { class: c }, onclick: () => this.assign(c),
    }, k < 10 ? el("kbd", {}, String((k + 1) % 10)) : null, el("span", { style: `color:${colourOf(c)}` }, "■ "), c)));
  }

  /** A number key: a class for the open clip, or the label of the pending segment on a recording. */
  key(n) {
    const c = state.classes[n === 0 ? 9 : n - 1];
    if (c) this.assign(c);
  }

  async assign(label) {
    const it = this.item;
    if (!it) return;
    if (it.kind === "recording") return this.addSegment(label);
    if (it.kind === "spool") return this.labelClip(it, label, it.label ?? null, true);
    if (it.kind === "data") {
      if (label === "skip") return this.next(1);
      return this.moveClip(it, label, true);
    }
  }

  accept() {
    if (this.item && this.item.kind === "spool" && this.item.predicted) this.assign(this.item.predicted);
  }

  async save(what, fn) {
    saveState("saving", `saving ${what}…`);
    try {
      const r = await fn();
      saveState("saved", `saved ${what} · ${new Date().toLocaleTimeString()}`);
      return r;
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) saveState("conflict", `conflict: ${e.message}`);
      else saveState("error", `not saved: ${e.message}`);
      throw e;
    }
  }

  async labelClip(it, label, was, record) {
    try {
      await this.save(`${it.clip}: ${label ?? "no label"}`,
        () => api.post("/api/labels/clip", { path: it.path, label, was }));
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && e.body) {   // another tab: show what is on disk now
        it.label = e.body.current ?? null; this.library.relabel(it); this.renderKeys();
      }
      return;
    }
    if (record) this.undo.push({ kind: "clip", item: it, before: was, after: label ?? null });
    this.library.countLabel(it.label ?? null, label ?? null);
    it.label = label ?? null;
    this.library.relabel(it);
    this.renderKeys();
    if (record) this.next(1, true);
  }

  async moveClip(it, label, record) {
    const from = it.path;
    if (label === it.label) return;
    let r;
    try { r = await this.save(`${from.split("/").pop()} → ${label}`, () => api.post("/api/dataset/move", { path: from, label })); } catch { return; }
    const before = it.label;
    it.path = r.path; it.label = label;
    if (record) this.undo.push({ kind: "move", item: it, before });
    await this.library.load();
    this.open(it);
  }

  async next(dir, unlabelledOnly = false) {
    if (!this.library) return;
    if (!this.item) {   // nothing open yet: j starts at the top of the review queue (else the dataset's clips)
      const first = this.library.queue.items.find((x) => !x.label) || this.library.queue.items[0] || this.library.data.items[0];
      if (first) { this.library.list = first.kind === "spool" ? this.library.queue.items : this.library.data.items; this.open(first); }
      return;
    }
    let n = this.library.neighbour(this.item, dir, unlabelledOnly);
    if (!n && this.item.kind === "spool") n = await this.library.queuePage(dir, unlabelledOnly);
    if (n) this.open(n);
  }

  // --- recordings: segments -------------------------------------------------------------------------
  async loadSegments() {
    const r = await api.get("/api/segments", { path: this.item.path });
    this.segments = r.segments; this.segVersion = r.version;
    this.renderSegments();
  }

  mark(which) {
    if (!this.item || this.item.kind !== "recording" || !this.info) return;
    const i = this.player.i, fps = this.info.fps;
    if (which === "in") this.pending = { start: i / fps, end: null };
    else {
      // out: the frame under the cursor is the segment's last (frames with start <= i/fps < end)
      if (!this.pending) this.pending = { start: 0, end: null };
      this.pending.end = (i + 1) / fps;
      if (this.pending.end <= this.pending.start) this.pending = { start: i / fps, end: (i + 1) / fps };
    }
    this.timeline.pending = this.pending;
    this.renderPending();
  }

  renderPending() {
    const p = this.pending, box = $("#pending");
    if (!box) return;
    if (!p) { box.textContent = "no segment open: [ at its first frame, ] at its last, then a number key"; return; }
    box.textContent = p.end === null ? `in at ${fmt(p.start)} s: ] at the last frame` :
      `${fmt(p.start)} – ${fmt(p.end)} s: a number key gives its label`;
    this.timeline.draw();
  }

  async addSegment(label) {
    const p = this.pending;
    if (!p) { saveState("error", "set a segment first: [ at its first frame, ] at its last"); return; }
    if (p.end === null) { saveState("error", "the segment has no end yet: ] at its last frame"); return; }
    if (label === "skip") { this.pending = null; this.timeline.pending = null; this.renderPending(); return; }
    const before = this.segments.map((s) => ({ ...s }));
    const after = [...before, { start: round3(p.start), end: round3(p.end), label }].sort((a, b) => a.start - b.start);
    if (await this.saveSegments(after, true, before)) {
      this.pending = null; this.timeline.pending = null; this.renderPending();
    }
  }

  async removeSegment(k) {
    const before = this.segments.map((s) => ({ ...s }));
    await this.saveSegments(before.filter((_, j) => j !== k), true, before);
  }

  async saveSegments(list, record, before) {
    const it = this.item;
    let r;
    try {
      r = await this.save(`${list.length} segment${list.length === 1 ? "" : "s"} of ${it.path.split("/").pop()}`,
        () => api.post("/api/segments", { path: it.path, version: this.segVersion, segments: list }));
    } catch (e) {
      if (e instanceof ApiError && e.status === 409 && e.body && this.item === it) {
        this.segments = e.body.segments || []; this.segVersion = e.body.version ?? null; this.renderSegments();
      }
      return false;
    }
    if (this.item !== it) return true;
    this.segments = r.segments; this.segVersion = r.version;
    if (record) this.undo.push({ kind: "segments", item: it, before });
    this.renderSegments();
    this.library.segmentsSaved(it.path, this.segments.length);
    return true;
  }

  renderSegments() {
    this.timeline.set({ segments: this.segments });
    $("#segments tbody").replaceChildren(...this.segments.map((s, k) => el("tr", {},
      el("td", {}, s.start.toFixed(3)), el("td", {}, s.end.toFixed(3)),
      el("td", {}, el("span", { style: `color:${colourOf(s.label)}` }, "■ "), s.label),
      el("td", {}, el("button", { "aria-label": `remove segment ${k + 1}`, onclick: () => this.removeSegment(k) }, "×")))));
    this.renderPending();
  }

  // --- undo and new classes -------------------------------------------------------------------------
  async undoLast() {
    const u = this.undo.pop();
    if (!u) { saveState("idle", "nothing to undo"); return; }
    if (u.kind === "clip") {
      if (this.item !== u.item) await this.open(u.item);
      await this.labelClip(u.item, u.before, u.after, false);
    } else if (u.kind === "segments") {
      if (this.item !== u.item) await this.open(u.item);
      await this.saveSegments(u.before, false);
    } else if (u.kind === "move") {
      await this.moveClip(u.item, u.before, false);
    }
  }

  async newClass() {
    const input = $("#new-class"), name = input.value.trim();
    if (!name) return;
    try {
      const r = await this.save(`class ${name}`, () => api.post("/api/classes", { name }));
      state.classes = r.classes;
      input.value = "";
      this.renderKeys();
      input.blur();
    } catch { /* the badge says why */ }
  }
}

// Times go to the CSV with 3 decimals. Rounded down, a frame boundary k/fps stays on frame k for
// from-recording (a segment holds the frames with start <= i/fps < end); rounded up it could lose one.
const round3 = (x) => Math.floor(x * 1000 + 1e-6) / 1000;
