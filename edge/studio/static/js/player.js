// Frame-accurate player over the server's per-frame JPEGs (GET /api/video/frame): a frame index is the
// state; stepping draws exactly that frame; playback advances by the clock at the clip's own rate and
// prefetches ahead, so a slow frame is late rather than skipped past silently.

import { api } from "./api.js";

const CACHE = 600;       // frames kept decoded (a 40 s recording at 15 fps)
const AHEAD = 24;        // frames fetched ahead while playing

export class Player {
  constructor(canvas, onFrame) {
    this.canvas = canvas;
    this.onFrame = onFrame;          // (index, seconds) after a frame is shown
    this.path = null; this.info = null; this.i = 0;
    this.cache = new Map();          // index -> Promise<HTMLImageElement>
    this.playing = false; this.raf = 0; this.errors = 0;
    this.token = 0;                  // bumps on open(): late images of a previous video are dropped
  }

  /** Open a video: info = GET /api/video/info's object. Shows frame 0. */
  async open(path, info) {
    this.stop();
    this.path = path; this.info = info; this.i = 0; this.cache.clear(); this.token++;
    this.canvas.width = info.width; this.canvas.height = info.height;
    this.canvas.dataset.path = path;
    delete this.canvas.dataset.frame;   // the previous video's frame number must not pass for this one's
    await this.show(0);
  }

  get frames() { return this.info ? this.info.frames : 0; }
  get fps() { return this.info ? this.info.fps : 0; }
  time(i = this.i) { return this.fps ? i / this.fps : 0; }
  indexAt(seconds) { return Math.min(this.frames - 1, Math.max(0, Math.floor(seconds * this.fps + 1e-6))); }

  load(i) {
    if (!this.cache.has(i)) {
      const img = new Image();
      img.decoding = "async";
      const p = new Promise((resolve, reject) => {
        img.onload = () => resolve(img);
        img.onerror = () => reject(new Error(`frame ${i} of ${this.path} could not be loaded`));
      });
      p.catch(() => {});
      img.src = api.frameUrl(this.path, i);
      this.cache.set(i, p);
      if (this.cache.size > CACHE) this.cache.delete(this.cache.keys().next().value);
    }
    return this.cache.get(i);
  }

  /** Show frame i (clamped). Resolves once it is drawn. */
  async show(i) {
    if (!this.info || this.frames < 1) return;
    i = Math.min(this.frames - 1, Math.max(0, i));
    this.i = i;
    const token = this.token;
    let img;
    try { img = await this.load(i); } catch (e) {
      this.cache.delete(i);
      if (token === this.token) this.fail(e.message);
      return;
    }
    if (token !== this.token || this.i !== i) return;   // a later request won
    const g = this.canvas.getContext("2d");
    g.drawImage(img, 0, 0, this.canvas.width, this.canvas.height);
    this.canvas.dataset.frame = String(i);
    if (this.onFrame) this.onFrame(i, this.time(i));
  }

  step(n) { this.stop(); return this.show(this.i + n); }
  seek(seconds) { this.stop(); return this.show(this.indexAt(seconds)); }

  toggle() { if (this.playing) this.stop(); else this.play(); }

  play() {
    if (!this.info || this.playing) return;
    if (this.i >= this.frames - 1) this.i = 0;
    this.playing = true;
    const start = performance.now(), from = this.i, token = this.token;
    this.setPlaying(true);
    const tick = async (now) => {
      if (!this.playing || token !== this.token) return;
      // the first frame's timestamp may precede ``start`` (it is when the frame began): never before ``from``
      const want = from + Math.floor((Math.max(0, now - start) / 1000) * this.fps);
      for (let k = want; k < Math.min(this.frames, want + AHEAD); k++) this.load(k);
      if (want >= this.frames) { await this.show(this.frames - 1); this.stop(); return; }
      if (want !== this.i || this.canvas.dataset.frame !== String(want)) await this.show(want);
      this.raf = requestAnimationFrame(tick);
    };
    this.raf = requestAnimationFrame(tick);
  }

  stop() {
    if (this.playing) { this.playing = false; cancelAnimationFrame(this.raf); this.setPlaying(false); }
  }

  setPlaying(on) { if (this.onPlaying) this.onPlaying(on); }
  fail(message) { if (this.onError) this.onError(message); }
}
