"""A real mosquitto broker on a free loopback port, and a paho subscriber that records what arrives.

Without the mosquitto binary the MQTT tests are skipped, except in CI (``CI`` set), where that is a
failure: .ci/apt-packages.txt installs Debian's mosquitto.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)


def require_mosquitto() -> str:
    """The mosquitto binary; skips the test without it (fails in CI)."""
    if MOSQUITTO is None:
        msg = "mosquitto not installed (apt-get install mosquitto mosquitto-clients; CI installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install 'edge-tsm[dev]')")
    return MOSQUITTO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``mosquitto -c conf`` listening on 127.0.0.1:``port``; ``persist`` keeps sessions across a restart."""

    def __init__(self, folder: Path, persist: bool = False, extra: str = "", port: int | None = None) -> None:
        self.binary = require_mosquitto()
        self.folder, self.port = folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"persistence {str(persist).lower()}",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if persist:
            lines += [f"persistence_location {folder}/", "autosave_interval 0"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to the mosquitto user, who cannot read our folder
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen | None = None
        self.log = folder / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> Broker:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto not listening on {self.port} within {timeout} s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (a persistent broker saves its sessions), then wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscriber:
    """A paho client subscribed (QoS 1) to ``topics``; reconnects and resubscribes after a broker restart.
    ``session``: a persistent session (clean_session false) under that client id."""

    def __init__(self, port: int, *topics: str, session: str | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.messages: list[Message] = []
        self.cond = threading.Condition()
        self.topics = topics
        self.connects = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=session or "",
                                  clean_session=session is None, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect, self.client.on_message, self.client.on_subscribe = \
            self._on_connect, self._on_message, self._on_subscribe
        self.subscribed = 0
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        with self.cond:
            assert self.cond.wait_for(lambda: self.subscribed >= 1, 10), "no SUBACK"

    def _on_connect(self, client, _u, _flags, reason, _p) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])
            with self.cond:
                self.connects += 1

    def _on_subscribe(self, _c, _u, _mid, _codes, _p) -> None:
        with self.cond:
            self.subscribed += 1
            self.cond.notify_all()

    def _on_message(self, _c, _u, msg) -> None:
        with self.cond:
            self.messages.append(Message(msg.topic, msg.payload, msg.qos, msg.retain))
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 10.0) -> list[Message]:
        """The messages once ``pred(messages)`` holds; AssertionError after ``timeout`` s."""
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.messages), timeout), \
                f"timed out; got {[(m.topic, m.payload[:80]) for m in self.messages]}"
            return list(self.messages)

    def on(self, topic: str) -> list[Message]:
        with self.cond:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
