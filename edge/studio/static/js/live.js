// The live page: a camera through the server's own pipeline. Frames, the scores of the last minute
// scrolling under them, events as they fire; event thresholds tuned against the last minute's scores
// (POST /api/live/{id}/replay) and saved into the config (POST /api/config/events).

import { api } from "./api.js";
import { Timeline, colourOf } from "./timeline.js";
import { $, el, saveState } from "./ui.js";

const POLL_MS = 200, KEEP_S = 60;
const SLIDERS = [
  ["enter", "enter threshold", 0, 1, 0.01], ["exit", "exit threshold", 0, 1, 0.01],
  ["window", "smoothing window", 1, 32, 1], ["min_frames", "min frames", 1, 30, 1],
  ["cooldown_s", "cooldown (s)", 0, 10, 0.1],
];

export class Live {
  constructor() {
    this.id = null; this.labels = []; this.t = []; this.probs = []; this.events = []; this.open = new Map();
    this.next = 0; this.settings = null; this.config = null; this.timer = 0; this.replayTimer = 0;
    this.frameSeq = -1; this.frameBusy = false;
    this.timeline = new Timeline($("#live-timeline"), null);
    $("#live-form").addEventListener("submit", (e) => { e.preventDefault(); this.start(); });
    $("#live-stop").addEventListener("click", () => this.stop());
    $("#live-save").addEventListener("click", () => this.save());
    const img = $("#live-frame");
    img.addEventListener("load", () => { this.frameBusy = false; img.dataset.seq = String(this.shownSeq); });
    img.addEventListener("error", () => { this.frameBusy = false; });
  }

  async show() {
    let src;
    try { src = await api.get("/api/live/sources"); } catch (e) { this.msg(e.message); return; }
    const sel = $("#live-camera"), was = sel.value;
    const opt = (value, text) => el("option", { value }, text);
    sel.replaceChildren(
      ...src.cameras.map((c) => opt(JSON.stringify({ camera: c.name }), `${c.name} (${c.source})`)),
      ...src.devices.map((d) => opt(JSON.stringify({ source: d }), d)),
      ...src.files.map((f) => opt(JSON.stringify({ source: f }), `${f} (file, looped)`)));
    if (was) sel.value = was;
    if (!sel.options.length) this.msg("no camera: give --config with cameras, plug one in, or --recordings with a video");
    try { this.config = await api.get("/api/config"); } catch { this.config = null; }
    $("#live-save").disabled = !this.config || !this.config.path;
    $("#live-saved").textContent = this.config && this.config.path ? `config: ${this.config.path}` : "no --config: nothing to save to";
  }

  msg(text) { $("#live-msg").replaceChildren(...(text ? [el("div", { class: "msg error" }, text)] : [])); }

  async start() {
    this.msg("");
    const body = JSON.parse($("#live-camera").value || "{}");
    let r;
    try { r = await api.post("/api/live/start", body); } catch (e) { this.msg(e.message); return; }
    Object.assign(this, { id: r.id, labels: r.labels, t: [], probs: [], events: [], next: 0, settings: r.settings });
    this.open.clear();
    $("#live-info").textContent = `${r.labels.length} classes · ${r.fps} fps`;
    $("#live-legend").replaceChildren(...r.labels.map((l) => el("span", { style: `--c:${colourOf(l)}` }, l)));
    $("#live-events").replaceChildren();
    this.renderSliders();
    $("#live-start").disabled = true; $("#live-stop").disabled = false;
    clearTimeout(this.timer);
    this.poll();
  }

  async stop() {
    clearTimeout(this.timer);
    this.id = null;
    try { await api.post("/api/live/stop", {}); } catch (e) { this.msg(e.message); }
    $("#live-start").disabled = false; $("#live-stop").disabled = true;
  }

  /** Leaving the page stops polling (the session on the server goes on until stopped or replaced). */
  hide() { clearTimeout(this.timer); if (this.id) this.stop(); }

  async poll() {
    const id = this.id;
    if (!id) return;
    let r;
    try { r = await api.get(`/api/live/${encodeURIComponent(id)}`, { since: this.next }); } catch (e) {
      this.msg(e.message); $("#live-start").disabled = false; $("#live-stop").disabled = true; return;
    }
    if (id !== this.id) return;
    this.next = r.next;
    for (let k = 0; k < r.t.length; k++) { this.t.push(r.t[k]); this.probs.push(r.probs[k]); }
    const now = this.t.length ? this.t[this.t.length - 1] : 0;
    while (this.t.length && this.t[0] < now - KEEP_S) { this.t.shift(); this.probs.shift(); }
    for (const e of r.events) this.event(e);
    this.events = this.events.filter((e) => (e.end ?? now) >= now - KEEP_S);
    this.timeline.set({ t: this.t, probs: this.probs, labels: this.labels, events: this.events,
      origin: Math.max(0, now - KEEP_S), duration: KEEP_S });
    this.timeline.cursor(now);
    if (this.probs.length) {
      const p = this.probs[this.probs.length - 1];
      const k = p.indexOf(Math.max(...p));
      $("#live-top").textContent = `${this.labels[k]} ${p[k].toFixed(2)} · ${r.fps ? r.fps.toFixed(1) : "?"} fps · ${r.frames} frames`;
      $("#live-top").dataset.frames = String(r.frames);
    }
    if (r.frame_seq !== undefined && r.frame_seq !== this.frameSeq && !this.frameBusy && r.frame_seq >= 0) {
      this.frameBusy = true; this.frameSeq = r.frame_seq; this.shownSeq = r.frame_seq;
      $("#live-frame").src = api.liveFrameUrl(id, r.frame_seq);
    }
    if (r.error) this.msg(r.error);
    if (!r.running) { $("#live-start").disabled = false; $("#live-stop").disabled = true; this.id = null; return; }
    this.timer = setTimeout(() => this.poll(), POLL_MS);
  }

  event(e) {
    if (e.event === "start") {
      const bar = { id: e.id, label: e.label, start: e.start ?? e.t, end: null };
      this.open.set(e.id, bar); this.events.push(bar);
    } else if (e.event === "end" && this.open.has(e.id)) {
      this.open.get(e.id).end = e.t; this.open.delete(e.id);
    }
    const ul = $("#live-events");
    ul.prepend(el("li", { dataset: { event: e.event, label: e.label } },
      el("span", { class: "name" }, el("span", { style: `color:${colourOf(e.label)}` }, "■ "), `${e.event} ${e.label}`),
      el("span", { class: "tag" }, `${(e.score ?? 0).toFixed(2)} · ${e.t.toFixed(1)} s`)));
    while (ul.children.length > 100) ul.lastChild.remove();
  }

  renderSliders() {
    const box = $("#live-settings"), s = this.settings || {};
    box.replaceChildren(...SLIDERS.filter(([k]) => s[k] !== undefined).map(([k, name, lo, hi, step]) => {
      const out = el("output", { id: `live-${k}-value` }, String(s[k]));
      const input = el("input", { type: "range", min: lo, max: hi, step, value: s[k], id: `live-${k}`, "aria-label": name,
        oninput: (e) => { s[k] = Number(e.target.value); out.textContent = e.target.value; this.couple(k); this.replaySoon(); } });
      return el("label", { for: `live-${k}` }, name, input, out);
    }));
    $("#live-effect").textContent = "";
    const sel = $("#live-class"), ignore = new Set(s.ignore || []);
    sel.replaceChildren(el("option", { value: "" }, "(all classes alike)"),
      ...this.labels.filter((l) => !ignore.has(l)).map((l) => el("option", { value: l },
        `${l}${s.classes && s.classes[l] ? " *" : ""}`)));
    sel.onchange = () => this.renderClassSlider();
    this.renderClassSlider();
  }

  /** enter for one class (events: classes: LABEL: enter), falling back to the global one until moved. */
  renderClassSlider() {
    const s = this.settings, label = $("#live-class").value, box = $("#live-class-slider");
    if (!label) { box.replaceChildren(); return; }
    s.classes = s.classes || {};
    const own = s.classes[label] || {};
    const value = own.enter ?? s.enter;
    const out = el("output", {}, own.enter === undefined ? `${value} (global)` : String(value));
    const input = el("input", { type: "range", min: 0, max: 1, step: 0.01, value, id: "live-class-enter",
      "aria-label": `enter threshold of ${label}`,
      oninput: (e) => {
        const v = Number(e.target.value), c = (s.classes[label] = s.classes[label] || {});
        c.enter = v;
        if ((c.exit ?? s.exit) > v) c.exit = v;      // exit <= enter for the class too
        out.textContent = String(v);
        this.replaySoon();
      } });
    const clear = el("button", { type: "button", "aria-label": `use the global thresholds for ${label}`,
      onclick: () => { delete s.classes[label]; this.renderClassSlider(); this.replaySoon(); } }, "global");
    box.replaceChildren(el("label", { class: "sliders", for: "live-class-enter" },
      el("span", {}, `${label} enter`), input, out), clear);
  }

  /** exit <= enter (the detector needs it): moving one past the other drags the other along. */
  couple(k) {
    const s = this.settings;
    if (s.enter === undefined || s.exit === undefined || s.exit <= s.enter) return;
    const other = k === "enter" ? "exit" : k === "exit" ? "enter" : null;
    if (!other) return;
    s[other] = s[k];
    const input = $(`#live-${other}`);
    if (input) { input.value = String(s[k]); $(`#live-${other}-value`).textContent = String(s[k]); }
  }

  replaySoon() { clearTimeout(this.replayTimer); this.replayTimer = setTimeout(() => this.replay(), 150); }

  async replay() {
    if (!this.id) return;
    let r;
    try { r = await api.post(`/api/live/${encodeURIComponent(this.id)}/replay`, { events: this.settings }); } catch (e) {
      $("#live-effect").textContent = e.message; return;
    }
    const per = {};
    for (const e of r.events) per[e.label] = (per[e.label] || 0) + 1;
    const now = this.events.filter((e) => e.start >= (this.t[0] ?? 0)).length;
    $("#live-effect").textContent = `with these settings: ${r.events.length} events in the last ${Math.round(r.seconds)} s` +
      (r.events.length ? ` (${Object.entries(per).map(([k, v]) => `${k} ${v}`).join(", ")})` : "") + `; as running: ${now}`;
    this.timeline.set({ marks: r.events.map((e) => ({ kind: "replay", start: e.start, end: e.end, label: e.label })) });
  }

  async save() {
    if (!this.config || !this.settings) return;
    try {
      const r = await api.post("/api/config/events", { events: this.settings, version: this.config.version });
      this.config.version = r.version;
      saveState("saved", `events: saved in ${this.config.path} (backup ${r.backup}); systemctl reload edge-tsm applies it`);
      $("#live-saved").textContent = `saved · backup ${r.backup}`;
    } catch (e) {
      saveState(e.status === 409 ? "conflict" : "error", `config not saved: ${e.message}`);
    }
  }
}
