// Small shared pieces: the element helper, the save-state badge, the error banner and the class list.

export const $ = (sel, root = document) => root.querySelector(sel);

/** el("li", {class: "x", onclick}, "text", child...) */
export function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== undefined && k !== null) e.append(k instanceof Node ? k : String(k));
  return e;
}

/** The badge in the header: idle | saving | saved | conflict | error, with one line of text. */
export function saveState(state, text) {
  const b = $("#save-state");
  b.dataset.state = state;
  b.textContent = text;
  b.title = text;
}

/** One line in the banner (errors that are not about a save); empty hides it. */
export function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

/** One line of news (an export's summary); empty hides it. */
export function notice(text) {
  const b = $("#notice");
  b.textContent = text || "";
  b.hidden = !text;
}

/** One line for a model of GET /api/bundles: name, precision, when made, accuracy when teach measured it. */
export function bundleText(b) {
  if (b.error) return `${b.path.split("/").pop()}: ${b.error}`;
  const made = b.made ? ` · ${b.made.slice(0, 16).replace("T", " ")} UTC` : "";
  const acc = b.accuracy === null || b.accuracy === undefined ? "" : ` · ${(100 * b.accuracy).toFixed(1)} %`;
  const who = b.path === "default" ? "the server's model: " : b.path === "builtin" ? "built-in: " : "";
  return `${who}${b.name} (${b.labels.length} classes, ${b.precision}${made}${acc})`;
}

export const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`);

export function pager(box, total, offset, limit, go) {
  box.replaceChildren();
  if (total <= limit) { box.append(el("span", { class: "muted" }, `${total} in all`)); return; }
  const last = Math.floor((total - 1) / limit) * limit;
  box.append(
    el("button", { "aria-label": "Previous page", disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, "‹"),
    el("span", {}, `${offset + 1}–${Math.min(total, offset + limit)} of ${total}`),
    el("button", { "aria-label": "Next page", disabled: offset >= last, onclick: () => go(offset + limit) }, "›"));
}

/** What the page shares: the library's answer and the classes the number keys give. */
export const state = { library: null, classes: [], evalMarks: new Map() };
