// The per-frame probability timeline: one line per class, event bars, annotated segments and a cursor.
// Drawn on a canvas; a click or drag seeks. Times are seconds from the start of the video.

export const PALETTE = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#17becf", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];

const named = new Map();
/** One colour per class name, the same everywhere on the page (first come, first served). */
export function colourOf(name) {
  if (!named.has(name)) named.set(name, PALETTE[named.size % PALETTE.length]);
  return named.get(name);
}

export class Timeline {
  /** canvas: the element; onSeek(seconds): called on click/drag. */
  constructor(canvas, onSeek) {
    this.canvas = canvas;
    this.onSeek = onSeek;
    this.data = { t: [], probs: [], labels: [], events: [], segments: [], marks: [], duration: 0, origin: 0 };
    this.at = 0;
    this.pending = null;   // a segment being set: {start}
    let dragging = false;
    const seek = (e) => {
      const r = canvas.getBoundingClientRect();
      const x = Math.min(Math.max(e.clientX - r.left, 0), r.width);
      if (this.data.duration > 0 && this.onSeek) this.onSeek((this.data.origin || 0) + (x / r.width) * this.data.duration);
    };
    canvas.addEventListener("pointerdown", (e) => { dragging = true; seek(e); });
    window.addEventListener("pointerup", () => { dragging = false; });
    canvas.addEventListener("pointermove", (e) => { if (dragging) seek(e); });
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** Replace what is drawn: any of t, probs (frames x classes), labels, events, segments, marks, duration. */
  set(part) { Object.assign(this.data, part); this.dirty = true; this.draw(); }

  cursor(seconds) { this.at = seconds; this.draw(); }

  /** The cursor and an open segment over a cached picture of the rest (a long recording's lines are
   * drawn once per change, not once per frame of playback). */
  draw() {
    const c = this.canvas, d = this.data;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); this.dirty = true;
    }
    const geo = this.geometry(w, h);
    if (this.dirty || !this.bg) {
      this.bg = this.bg || document.createElement("canvas");
      this.bg.width = c.width; this.bg.height = c.height;
      const b = this.bg.getContext("2d");
      b.setTransform(dpr, 0, 0, dpr, 0, 0);
      this.paint(b, w, h, geo);
      this.dirty = false;
    }
    const g = c.getContext("2d");
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, c.width, c.height);
    g.drawImage(this.bg, 0, 0);
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const { x, plotH, laneH } = geo;
    if (this.pending) {
      const a = this.pending.start, b = this.pending.end ?? Math.max(this.pending.start, this.at);
      g.fillStyle = "#00000033"; g.fillRect(x(a), plotH + 2, Math.max(2, x(b) - x(a)), laneH - 2);
      g.strokeStyle = "#000"; g.lineWidth = 1; g.strokeRect(x(a) + .5, plotH + 2.5, Math.max(2, x(b) - x(a)) - 1, laneH - 3);
    }
    g.strokeStyle = "#000"; g.lineWidth = 1;
    const cx = Math.round(x(this.at)) + 0.5;
    g.beginPath(); g.moveTo(cx, 0); g.lineTo(cx, h); g.stroke();
  }

  geometry(w, h) {
    const d = this.data;
    const dur = d.duration || (d.t.length ? d.t[d.t.length - 1] : 0) || 1;
    const o = d.origin || 0;
    const lanes = 3;                   // segments, events, eval marks under the plot
    const laneH = 10;
    return { dur, o, laneH, plotH: h - lanes * laneH - 4, x: (s) => ((s - o) / dur) * w };
  }

  paint(g, w, h, { dur, o, laneH, plotH, x }) {
    const d = this.data;
    g.clearRect(0, 0, w, h);
    // grid: 0, 0.5, 1
    g.strokeStyle = "#eee"; g.lineWidth = 1;
    for (const v of [0, 0.5, 1]) {
      const yy = Math.round(plotH - v * (plotH - 4)) + 0.5;
      g.beginPath(); g.moveTo(0, yy); g.lineTo(w, yy); g.stroke();
    }
    // seconds ticks
    g.fillStyle = "#999"; g.font = "10px sans-serif";
    const step = niceStep(dur, w / 70);
    for (let s = 0; s <= dur + 1e-9; s += step) {
      g.fillRect(Math.round(x(s + o)), plotH - 3, 1, 3);
      if (s > 0) g.fillText(fmt(s), x(s + o) + 2, 10);
    }
    // one line per class
    const n = d.labels.length;
    for (let k = 0; k < n; k++) {
      g.strokeStyle = colourOf(d.labels[k]); g.lineWidth = 1.3; g.beginPath();
      for (let i = 0; i < d.t.length; i++) {
        const px = x(d.t[i]), py = plotH - d.probs[i][k] * (plotH - 4);
        if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
      }
      g.stroke();
    }
    // lane 1: annotated segments (labels); lane 2: events the detector emits; lane 3: eval marks
    const bar = (lane, a, b, fill, stroke) => {
      const y = plotH + 2 + lane * laneH;
      g.fillStyle = fill; g.fillRect(x(a), y, Math.max(2, x(b) - x(a)), laneH - 2);
      if (stroke) { g.strokeStyle = stroke; g.lineWidth = 1; g.strokeRect(x(a) + .5, y + .5, Math.max(2, x(b) - x(a)) - 1, laneH - 3); }
    };
    for (const s of d.segments) bar(0, s.start, s.end, colourOf(s.label) + "99", colourOf(s.label));
    for (const e of d.events) bar(1, e.start, e.end ?? o + dur, colourOf(e.label));
    const markColour = { false: "#b3261e", missed: "#a15c00", matched: "#1b7f3b" };
    for (const m of d.marks) bar(2, m.start, m.end ?? dur + o, markColour[m.kind] || colourOf(m.label));
  }
}

function niceStep(dur, maxTicks) {
  const raw = dur / Math.max(1, maxTicks);
  for (const s of [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600]) if (s >= raw) return s;
  return 1200;
}

export function fmt(s) {
  if (s < 60) return (Math.round(s * 100) / 100).toString();
  const m = Math.floor(s / 60), r = s - m * 60;
  return `${m}:${r.toFixed(1).padStart(4, "0")}`;
}
