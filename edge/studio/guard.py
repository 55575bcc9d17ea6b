"""The studio's door: Host, token, same-origin and body-size checks in front of every request (ASGI).

* Host header: on a loopback bind only the loopback names of the served port (a DNS-rebinding page
  cannot reach the API through its own name).
* Token (printed at start, as Jupyter's): ``?token=`` on any URL (then set as an HttpOnly, SameSite=Strict
  cookie), the cookie, or the ``X-Studio-Token`` header. Off loopback every request needs it; on loopback
  every state-changing request (anything but GET/HEAD) does.
* Same origin (state-changing requests): ``Origin`` equal to ``http://<Host>``, or without an Origin
  ``Sec-Fetch-Site: same-origin``.
* Bodies: at most ``max_body`` bytes (413), read here whole and handed on.
"""
from __future__ import annotations

import hmac
import json
import logging
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from edge.studio.settings import StudioSettings

logger = logging.getLogger(__name__)

COOKIE = "studio_token"
HEADER = b"x-studio-token"
SAFE = ("GET", "HEAD")


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for k, v in scope.get("headers", ()):
        out.setdefault(k.lower(), v)
    return out


class Guard:
    """ASGI middleware: refuses with 403/413 (one JSON line, one log line) before the app sees the request."""

    def __init__(self, app: Any, settings: StudioSettings) -> None:
        self.app = app
        self.s = settings

    def allowed_hosts(self) -> set[str] | None:
        """Host header values accepted; None: any (off loopback the token guards every request)."""
        if not self.s.loopback:
            return None
        p = self.s.port
        return {f"127.0.0.1:{p}", f"localhost:{p}", f"[::1]:{p}", f"{self.s.host}:{p}"}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        h = _headers(scope)
        method = scope["method"]
        host = h.get(b"host", b"").decode("latin-1")
        hosts = self.allowed_hosts()
        if hosts is not None and host not in hosts:
            await self._refuse(scope, send, 403, f"host {host!r} is not this studio's address "
                                                 f"(open http://127.0.0.1:{self.s.port}/)")
            return
        query_token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        given = [query_token, _cookie(h), h.get(HEADER, b"").decode("latin-1") or None]
        good = [t is not None and hmac.compare_digest(t.encode(), self.s.token.encode()) for t in given]
        token_ok = any(good)
        state_changing = method not in SAFE
        if not token_ok and (state_changing or not self.s.loopback):
            why = "a request that changes something" if state_changing else f"a request to a studio on {self.s.host}"
            await self._refuse(scope, send, 403, f"{why} needs the token printed at start "
                                                 "(open the printed URL with ?token=...)")
            return
        if state_changing:
            origin = h.get(b"origin", b"").decode("latin-1")
            site = h.get(b"sec-fetch-site", b"").decode("latin-1")
            if origin != f"http://{host}" and not (not origin and site == "same-origin"):
                await self._refuse(scope, send, 403, f"origin {origin or '(none)'!r} is not this page's "
                                                     f"(http://{host}): cross-site requests are refused")
                return
            body = await self._body(scope, receive, send, h)
            if body is None:
                return
            receive = _replay(body, receive)
        if good[0]:   # the printed URL was opened: later requests of the page carry the cookie
            send = _with_cookie(send, self.s.token)
        await self.app(scope, receive, send)

    async def _body(self, scope: dict[str, Any], receive: Any, send: Any, h: dict[bytes, bytes]) -> bytes | None:
        limit = self.s.max_body
        try:
            declared = int(h.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        too_big = f"request body over {limit} bytes"
        if declared > limit:
            await self._refuse(scope, send, 413, too_big)
            return None
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, send, 413, too_big)
                return None
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def _refuse(self, scope: dict[str, Any], send: Any, status: int, message: str) -> None:
        logger.warning("%s %s: %d %s", scope["method"], scope["path"], status, message)
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _cookie(h: dict[bytes, bytes]) -> str | None:
    raw = h.get(b"cookie")
    if not raw:
        return None
    c: SimpleCookie = SimpleCookie()
    try:
        c.load(raw.decode("latin-1"))
    except Exception:  # noqa: BLE001 - a malformed cookie header is no token
        return None
    return c[COOKIE].value if COOKIE in c else None


def _replay(body: bytes, original: Any) -> Any:
    """The body read here, then the client's own messages (a disconnect when it goes)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await original()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


def _with_cookie(send: Any, token: str) -> Any:
    async def wrapped(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/".encode()
            msg = {**msg, "headers": [*msg.get("headers", []), (b"set-cookie", cookie)]}
        await send(msg)
    return wrapped
