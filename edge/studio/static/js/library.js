// The library: dataset classes (counts, balance warnings), the review queue (most uncertain first, paged),
// recordings and the dataset's clips. Picking an item opens it in the viewer.

import { api } from "./api.js";
import { $, el, banner, notice, pager, saveState, state } from "./ui.js";
import { colourOf } from "./timeline.js";

const QUEUE_PAGE = 50, DATA_PAGE = 100;

/** "2026-11-24T14:03:05.123Z" -> "11-24 14:03:05" (a clip's name in the queue: its camera and when). */
const clock = (ts) => (ts ? ts.slice(5, 19).replace("T", " ") : "");

export class Library {
  constructor(viewer) {
    this.viewer = viewer;
    this.queue = { offset: 0, items: [], total: 0 };
    this.data = { offset: 0, items: [], total: 0, label: "" };
    this.list = [];          // the items of the list the viewer's item came from (j/k walk it)
    $("#data-class").addEventListener("change", (e) => { e.target.blur(); this.data.label = e.target.value; this.loadData(0); });
    $("#export-clips").addEventListener("click", () => this.export("/api/export/clips", {}, "the labelled clips"));
    $("#export-recording").addEventListener("click", () => this.viewer.item && this.viewer.item.kind === "recording" &&
      this.export("/api/export/recording", { path: this.viewer.item.path }, `the segments of ${this.viewer.item.path}`));
  }

  async load() {
    // the queue's first page is asked for at the same time as the library (a 5000-clip spool: both take a while)
    const queue = api.get("/api/spool", { offset: this.queue.offset, limit: QUEUE_PAGE, order: "uncertain", show: "all" });
    queue.catch(() => {});
    const lib = await api.get("/api/library");
    state.library = lib;
    state.classes = lib.classes;
    for (const c of [...(lib.model ? lib.model.labels : []), ...lib.classes]) colourOf(c);  // the model's order first
    const roots = Object.entries(lib.roots).filter(([, v]) => v).map(([k, v]) => `${k}: ${v}`).join(" · ");
    $("#where").textContent = `model ${lib.model ? lib.model.name : "?"}`;
    $("#where").title = roots;
    this.renderClasses();
    this.renderRecordings();
    const sel = $("#data-class");
    sel.replaceChildren(el("option", { value: "" }, "all classes"),
      ...(lib.dataset.classes || []).map((c) => el("option", { value: c.name }, `${c.name} (${c.clips})`)));
    sel.value = this.data.label;
    await Promise.all([this.loadQueue(this.queue.offset, queue), this.loadData(this.data.offset)]);
    this.viewer.renderKeys();
  }

  renderClasses() {
    const lib = state.library, ds = lib.dataset;
    $("#dataset-root").textContent = lib.roots.data || "no --data folder";
    const body = $("#classes tbody");
    body.replaceChildren(...(ds.classes || []).map((c) => el("tr", { dataset: { class: c.name } },
      el("td", {}, el("span", { style: `color:${colourOf(c.name)}` }, "■ "), c.name),
      el("td", { class: "num" }, c.clips),
      el("td", { class: "small muted" }, c.clips < 3 ? "needs 3+" : ""))));
    $("#balance").replaceChildren(...(ds.warnings || []).map((w) => el("li", {}, w)));
    if (ds.error) $("#balance").append(el("li", { class: "bad" }, ds.error));
  }

  renderRecordings() {
    const recs = state.library.recordings || [];
    const ul = $("#recordings");
    if (!state.library.roots.recordings) {
      ul.replaceChildren(el("li", { class: "muted" }, "no --recordings folder"));
      return;
    }
    ul.replaceChildren(...recs.map((r) => this.row(r.path.split("/").pop(),
      r.segments ? `${r.segments} segment${r.segments === 1 ? "" : "s"}` : "not annotated", null,
      { kind: "recording", path: r.path }, () => recs.map((x) => ({ kind: "recording", path: x.path })))));
    if (!recs.length) ul.append(el("li", { class: "muted" }, "no videos in the recordings folder"));
    $("#rec-pager").textContent = `${recs.length} in all`;
  }

  async loadQueue(offset, asked = null) {
    if (!state.library.roots.spool) {
      $("#queue").replaceChildren(el("li", { class: "muted" }, "no --spool folder"));
      return;
    }
    if (state.library.spool.error) banner(state.library.spool.error);
    const r = await (asked || api.get("/api/spool", { offset, limit: QUEUE_PAGE, order: "uncertain", show: "all" }));
    Object.assign(this.queue, { offset: r.offset, items: r.items.map((it) => ({ kind: "spool", ...it })), total: r.total });
    this.renderQueue();
  }

  renderQueue() {
    const items = this.queue.items;
    $("#queue").replaceChildren(...items.map((it) => this.row(`${it.camera} ${clock(it.start_ts)}`,
      `${it.predicted ?? "?"} ${it.score === null || it.score === undefined ? "" : it.score.toFixed(2).replace(/^0/, "")}`,
      it.label, it, () => this.queue.items,
      `${it.path}\n${it.trigger} clip, ${it.duration_s} s; model: ${it.predicted} ${it.score}, then ${it.second} (margin ${it.margin})`)));
    const sp = state.library.spool || {};
    $("#queue-count").textContent = sp.clips === undefined ? "" : `${sp.clips} clips, ${sp.labelled} labelled`;
    if (!items.length) $("#queue").append(el("li", { class: "muted" }, "the spool has no clips"));
    pager($("#queue-pager"), this.queue.total, this.queue.offset, QUEUE_PAGE, (o) => this.loadQueue(o));
  }

  async loadData(offset) {
    if (!state.library.roots.data) return;
    const r = await api.get("/api/dataset/clips", { label: this.data.label || undefined, offset, limit: DATA_PAGE });
    Object.assign(this.data, { offset: r.offset, items: r.items.map((it) => ({ kind: "data", ...it })), total: r.total });
    $("#data-clips").replaceChildren(...this.data.items.map((it) => this.row(it.path.split("/").slice(2).join("/"),
      "", it.label, it, () => this.data.items)));
    pager($("#data-pager"), r.total, r.offset, DATA_PAGE, (o) => this.loadData(o));
  }

  row(name, tag, label, item, list, title) {
    const li = el("li", { role: "option", tabindex: "-1", "aria-selected": String(this.viewer.isOpen(item)),
      dataset: { path: item.path }, title: title || item.path,
      onclick: () => { this.list = list(); this.viewer.open(item); } },
      el("span", { class: "name" }, name), el("span", { class: "tag" }, tag),
      el("span", { class: "lab", style: label && label !== "skip" ? `color:${colourOf(label)}` : "" }, label ?? ""));
    return li;
  }

  /** Copy labelled clips / cut a recording's segments into --data, in the command line's way; then recount. */
  async export(url, body, what) {
    saveState("saving", `exporting ${what}…`);
    let r;
    try { r = await api.post(url, body); } catch (e) { saveState("error", `not exported: ${e.message}`); return; }
    const per = Object.entries(r.per_label || {}).map(([k, v]) => `${k} ${v}`).join(", ");
    const gone = r.gone ? `; ${r.gone} no longer in the spool` : "";
    saveState("saved", `exported ${what}`);
    notice(`${what} → ${r.out}: ${r.clips} clip${r.clips === 1 ? "" : "s"}${per ? ` (${per})` : ""}${gone}`);
    await this.load();
  }

  /** A review clip's label went from ``was`` to ``now``: the queue's count of labelled clips follows. */
  countLabel(was, now) {
    const sp = state.library.spool;
    if (!sp || !was === !now) return;
    sp.labelled += now ? 1 : -1;
    $("#queue-count").textContent = `${sp.clips} clips, ${sp.labelled} labelled`;
  }

  /** Segments of a recording were saved: its row says how many. */
  segmentsSaved(path, n) {
    const r = (state.library.recordings || []).find((x) => x.path === path);
    if (r) { r.segments = n; this.renderRecordings(); this.select({ path }); }
  }

  /** The item the viewer opened changed its label: redraw its row. */
  relabel(item) {
    for (const li of document.querySelectorAll(`li[data-path]`)) {
      if (li.dataset.path === item.path) li.querySelector(".lab").textContent = item.label ?? "";
    }
  }

  select(item) {
    for (const li of document.querySelectorAll("ul.list li[data-path]")) {
      const on = li.dataset.path === item.path;
      li.setAttribute("aria-selected", String(on));
      if (on) li.scrollIntoView({ block: "nearest" });
    }
  }

  /** The review queue's next (+1) or previous (-1) page, loaded; its first (unlabelled) or last clip. */
  async queuePage(dir, unlabelledOnly) {
    const q = this.queue;
    for (let offset = q.offset + dir * QUEUE_PAGE; offset >= 0 && offset < q.total; offset += dir * QUEUE_PAGE) {
      await this.loadQueue(offset);
      this.list = q.items;
      const items = dir > 0 ? q.items : [...q.items].reverse();
      const hit = items.find((x) => !unlabelledOnly || !x.label);
      if (hit) return hit;
    }
    return null;
  }

  /** The item after (+1) or before (-1) the open one in its list; for a review clip, the next unlabelled. */
  neighbour(item, dir, unlabelledOnly = false) {
    const list = this.list.length ? this.list : this.queue.items;
    let k = list.findIndex((x) => x.path === item.path);
    for (let n = 0; n < list.length; n++) {
      k += dir;
      if (k < 0 || k >= list.length) return null;
      if (!unlabelledOnly || !list[k].label) return list[k];
    }
    return null;
  }
}
