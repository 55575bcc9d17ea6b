// The server's HTTP API (edge/studio/API.md). Every call is JSON; errors become ApiError with the
// server's one-line message and the HTTP status (409 carries the server's current state in .body).

const params = new URLSearchParams(location.search);
const TOKEN_KEY = "edge-tsm-studio-token";
if (params.get("token")) sessionStorage.setItem(TOKEN_KEY, params.get("token"));
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

export class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

async function call(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["X-Studio-Token"] = token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                            credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, `the studio server does not answer (${e.message}); is edge-tsm studio still running?`);
  }
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const msg = (data && data.error) || `${method} ${path}: HTTP ${r.status}`;
    throw new ApiError(r.status, msg, data);
  }
  return data;
}

const q = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== undefined && v !== null)).toString();

export const api = {
  get: (path, query) => call("GET", query ? `${path}?${q(query)}` : path),
  post: (path, body = {}) => call("POST", path, body),
  frameUrl: (path, i, w) => `/api/video/frame?${q({ path, i, w })}`,
  liveFrameUrl: (id, seq) => `/api/live/${encodeURIComponent(id)}/frame?${q({ seq })}`,
};
