// Teach and evaluate: background jobs on the server (POST /api/jobs, then GET /api/jobs/{id} until done).

import { api } from "./api.js";
import { $, bundleText, el, pct, state } from "./ui.js";
import { colourOf } from "./timeline.js";

const POLL_MS = 250;

async function follow(id, onProgress) {
  for (;;) {
    const j = await api.get(`/api/jobs/${encodeURIComponent(id)}`);
    onProgress(j);
    if (["done", "failed", "cancelled"].includes(j.state)) return j;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function progressText(j) {
  const p = j.progress || {};
  const of = p.total ? ` ${p.done}/${p.total}` : "";
  return `${j.state}${p.stage ? `: ${p.stage}${of}` : ""} · ${(j.seconds || 0).toFixed(1)} s`;
}

/** The form's choices as teach's TeachOptions (API.md): quick = no extra samplings, no augmentation. */
function teachOptions() {
  const o = { cross_validate: $("#teach-cv").checked };
  if ($("#teach-quick").checked) Object.assign(o, { phases: false, augment: 0 });
  return o;
}

export class Teach {
  constructor(viewer, go) {
    this.viewer = viewer; this.go = go; this.job = null;
    $("#teach-form").addEventListener("submit", (e) => { e.preventDefault(); this.start(); });
    $("#teach-cancel").addEventListener("click", () => this.job && api.post(`/api/jobs/${this.job}/cancel`));
    $("#teach-evaluate").addEventListener("click", () => {
      $("#eval-model").value = this.bundle; this.go("evaluate");
    });
  }

  show() {
    const lib = state.library;
    $("#teach-base").value = lib && lib.model ? lib.model.name : "default";
    $("#teach-base").readOnly = true;
    $("#teach-base").title = "the server's --model";
    if (!$("#teach-out").value) $("#teach-out").value = `taught-${new Date().toISOString().slice(0, 16).replace(/[-:T]/g, "")}`;
  }

  async start() {
    const msg = $("#teach-msg");
    msg.replaceChildren();
    $("#teach-result").hidden = true;
    $("#teach-evaluate").hidden = true;
    let j;
    try { j = await api.post("/api/jobs", { kind: "teach", name: $("#teach-out").value.trim(), options: teachOptions() }); } catch (e) {
      msg.replaceChildren(el("div", { class: "msg error" }, e.message)); return;
    }
    this.job = j.id;
    $("#teach-start").disabled = true; $("#teach-cancel").disabled = false; $("#teach-progress").hidden = false;
    let done;
    try {
      done = await follow(j.id, (s) => {
        const p = s.progress || {};
        $("#teach-stage").textContent = progressText(s);
        $("#teach-bar").max = p.total || 1; $("#teach-bar").value = p.total ? p.done : 0;
      });
    } catch (e) { msg.replaceChildren(el("div", { class: "msg error" }, e.message)); }
    $("#teach-start").disabled = false; $("#teach-cancel").disabled = true;
    this.job = null;
    if (!done) return;
    if (done.state !== "done") {
      msg.replaceChildren(el("div", { class: "msg error" }, done.error || `teach ${done.state}`)); return;
    }
    this.render(done.result, done);
  }

  render(r, job) {
    $("#teach-result").hidden = false;
    $("#teach-accuracy").textContent = r.accuracy === null ? "not cross-validated" : pct(r.accuracy);
    $("#teach-meta").textContent = `${r.labels.length} classes, ${Object.values(r.clips_per_class).reduce((a, b) => a + b, 0)} clips, ` +
      `${(r.seconds ?? job.seconds).toFixed(1)} s · saved in ${r.folder || r.out} (point the daemon's model: at it)` +
      (r.skipped && r.skipped.length ? ` · ${r.skipped.length} clips skipped` : "");
    $("#teach-msg").replaceChildren(el("div", { class: "msg info" }, `bundle saved: ${r.folder || r.out}`));
    this.bundle = r.out;
    $("#teach-evaluate").hidden = false;
    $("#teach-recall tbody").replaceChildren(...r.labels.map((l) => el("tr", {},
      el("td", {}, el("span", { style: `color:${colourOf(l)}` }, "■ "), l),
      el("td", { class: "num" }, r.clips_per_class[l] ?? 0),
      el("td", { class: "num" }, pct(r.per_class_recall[l])))));
    $("#teach-confusion").replaceChildren(confusion(r.labels, r.confusion));
    const wrong = $("#teach-wrong");
    wrong.replaceChildren(...r.misclassified.map((m) => el("li", {
      role: "button", tabindex: "0", title: m.path, dataset: { path: m.path },
      onclick: () => this.openClip(m, r.misclassified),
      onkeydown: (e) => { if (e.key === "Enter") this.openClip(m, r.misclassified); },
    }, el("span", { class: "name" }, m.path), el("span", { class: "tag" }, `${m.label} → ${m.predicted}`))));
    if (!r.misclassified.length) wrong.append(el("li", { class: "muted" }, "none"));
  }

  openClip(m, all) {
    this.go("library");
    const items = all.map((x) => ({ kind: "data", path: x.path, label: x.label }));
    this.viewer.library.list = items;
    this.viewer.open(items.find((x) => x.path === m.path));
  }
}

/** The confusion matrix as a table (rows: true label, columns: predicted), cells shaded by row share. */
export function confusion(labels, m) {
  const head = el("tr", {}, el("th", {}, "true \\ predicted"), ...labels.map((l) => el("th", { class: "rot", title: l }, l)));
  const rows = labels.map((l, i) => {
    const n = m[i].reduce((a, b) => a + b, 0) || 1;
    return el("tr", {}, el("th", {}, l), ...m[i].map((v, j) => el("td", {
      style: `background: ${i === j ? `rgba(27,127,59,${(0.12 + 0.6 * v / n).toFixed(2)})` : v ? `rgba(179,38,30,${(0.12 + 0.6 * v / n).toFixed(2)})` : "transparent"}`,
      title: `${l} predicted as ${labels[j]}: ${v}`,
    }, v)));
  });
  return el("table", { class: "matrix", "aria-label": "Confusion matrix" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

export class Evaluate {
  constructor(viewer, go) {
    this.viewer = viewer; this.go = go;
    $("#eval-form").addEventListener("submit", (e) => { e.preventDefault(); this.start(); });
  }

  async show() {
    try { state.library = await api.get("/api/library"); } catch (e) {
      $("#eval-msg").replaceChildren(el("div", { class: "msg error" }, e.message)); return;
    }
    const recs = state.library.recordings || [];
    try {   // the models to choose from (GET /api/bundles): the server's, the built-in one, those under work/bundles
      const bundles = (await api.get("/api/bundles")).bundles.filter((b) => !b.error);
      $("#bundles").replaceChildren(...bundles.map((b) => el("option", { value: b.path }, bundleText(b))));
      $("#bundles").dataset.listed = String(bundles.length);
    } catch (e) {   // the field still takes a path typed by hand
      $("#eval-msg").replaceChildren(el("div", { class: "msg error" }, `the models to choose from: ${e.message}`));
    }
    const sel = $("#eval-rec"), was = sel.value;
    sel.replaceChildren(...recs.map((r) => el("option", { value: r.path, disabled: !r.segments },
      `${r.path.split("/").pop()} (${r.segments ? `${r.segments} segments` : "not annotated"})`)));
    if (was) sel.value = was;
    if (!recs.length) $("#eval-msg").replaceChildren(el("div", { class: "msg info" }, "no recordings (--recordings)"));
  }

  async start() {
    const path = $("#eval-rec").value, model = $("#eval-model").value.trim() || "default";
    $("#eval-msg").replaceChildren(); $("#eval-result").hidden = true;
    let done;
    try {
      const j = await api.post("/api/jobs", { kind: "eval-events", path, model });
      done = await follow(j.id, (s) => { $("#eval-progress").textContent = progressText(s); });
    } catch (e) { $("#eval-msg").replaceChildren(el("div", { class: "msg error" }, e.message)); return; }
    if (done.state !== "done") {
      $("#eval-msg").replaceChildren(el("div", { class: "msg error" }, done.error || `eval-events ${done.state}`)); return;
    }
    this.render(path, done.result);
  }

  render(path, r) {
    $("#eval-result").hidden = false;
    const pc = r.per_class || {};
    const lat = r.latency_s && r.latency_s.p50 !== null && r.latency_s.p50 !== undefined ? `${r.latency_s.p50.toFixed(2)} (p50)` : "–";
    const row = (name, x, latency) => el("tr", {}, el("td", {}, name), el("td", { class: "num" }, pct(x.precision)),
      el("td", { class: "num" }, pct(x.recall)), el("td", { class: "num" }, pct(x.f1)), el("td", { class: "num" }, latency));
    $("#eval-table tbody").replaceChildren(row(`all (${r.tp ?? 0} matched, ${r.fp ?? 0} false, ${r.fn ?? 0} missed)`, r, lat),
      ...Object.entries(pc).map(([k, v]) => row(k, v, "")));
    const marks = [];
    for (const e of r.events || []) marks.push({ kind: e.matched ? "matched" : "false", start: e.start, end: e.end ?? e.fired, label: e.label });
    for (const m of r.missed || []) marks.push({ kind: "missed", start: m.start_s, end: m.end_s, label: m.label });
    state.evalMarks.set(path, marks);
    const open = (at) => { this.go("library"); this.viewer.library.list = []; this.viewer.open({ kind: "recording", path }, at); };
    $("#eval-list").replaceChildren(
      ...(r.false_events || []).map((f) => el("li", { onclick: () => open(f.fired_s), tabindex: "0" },
        el("span", { class: "name bad" }, `false ${f.label} at ${f.fired_s.toFixed(2)} s`),
        el("span", { class: "tag" }, [f.truth ? `truth: ${f.truth}` : "", f.why || ""].filter(Boolean).join(" · ")))),
      ...(r.missed || []).map((m) => el("li", { onclick: () => open(m.start_s), tabindex: "0" },
        el("span", { class: "name warn" }, `missed ${m.label} ${m.start_s.toFixed(2)}–${m.end_s.toFixed(2)} s`),
        el("span", { class: "tag" }, m.why_text || ""))));
    if (!$("#eval-list").children.length) $("#eval-list").append(el("li", { class: "muted" }, "none: every event matched"));
  }
}
