"""``edge-tsm studio``: check the folders, bind, print the URL with the token, serve until Ctrl-C."""
from __future__ import annotations

import argparse
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.errors import InputError, UsageError
from edge.util import lazy_import

logger = logging.getLogger(__name__)

INSTALL = "pip install 'edge-tsm[studio]'"


def settings_from_args(a: argparse.Namespace, port: int):  # noqa: ANN201 - StudioSettings (imported late)
    from edge.studio.settings import StudioSettings
    folders: dict[str, Path] = {}
    for key in ("data", "spool", "recordings"):
        value = getattr(a, key)
        if value is None:
            continue
        p = Path(value)
        if not p.is_dir():
            raise InputError(f"--{key} {value}: not a folder")
        folders[key] = p
    work = Path(a.work) if a.work else (Path(a.data) / ".studio" if a.data else Path(".edge-tsm-studio"))
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--work {work}: cannot create ({e.strerror or e})") from None
    folders["work"] = work
    model, engine, config = a.model, {"type": "onnxruntime", "device": "CPU"}, None
    if a.config:
        from edge.config import load_config
        cfg = load_config(a.config)
        config = Path(a.config)
        model = model or cfg.model
        engine = cfg.engine.model_dump(exclude_none=True)
    return StudioSettings(folders, model=model or "default", config=config, host=a.host, port=port, engine=engine)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the printed URL has the real port before serving.

    Raises:
        UsageError: the address cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on sockets that say TCP; without it a
        # response written in two parts waited 40 ms for the browser's delayed ACK on a kept-alive connection
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def _server_class(uvicorn: Any) -> Any:
    class Server(uvicorn.Server):
        """uvicorn's server, except that a Ctrl-C or SIGTERM ends it with exit 0 after its graceful shutdown
        (uvicorn raises the signal again, so the process would die of it)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    getattr(self, "_captured_signals", []).clear()
    return Server


def serve(a: argparse.Namespace) -> int:
    lazy_import("starlette", what="edge-tsm studio", package="starlette", install=INSTALL)
    uvicorn = lazy_import("uvicorn", what="edge-tsm studio", package="uvicorn", install=INSTALL)
    from edge.studio.app import create_app
    if not 0 <= a.port <= 65535:
        raise UsageError(f"--port {a.port}: expected 0..65535 (0: a free port)")
    sock = bind(a.host, a.port)
    try:
        s = settings_from_args(a, sock.getsockname()[1])
        app = create_app(s)
        host = f"[{s.host}]" if ":" in s.host else s.host
        print(f"studio: http://{host}:{s.port}/?token={s.token}", flush=True)
        if not s.loopback:
            logger.warning("studio on %s: reachable from the network; every request needs the token", s.host)
        server = _server_class(uvicorn)(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
