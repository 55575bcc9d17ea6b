"""MQTT sink (paho-mqtt >= 2.0): each event as one JSON message on a broker.

Topics (``prefix`` defaults to ``edge-tsm/<device>``, ``device`` to the hostname):

- ``<prefix>/events/<camera>``: one message per event, the event's compact JSON (the log sink's line
  without its newline); ``<prefix>/events/#`` subscribes to every camera.
- ``<prefix>/availability``: retained; ``online`` after each connect, ``offline`` on a clean close,
  and ``offline`` as the last will, which the broker publishes when the connection dies.
- ``<ha_prefix>/sensor/<node>/<camera>/config`` (``ha_discovery``): a retained Home Assistant sensor
  config per camera whose state is the camera's last label.

Delivery is durable by default: events come from the journal, one at a time, and an event counts
as delivered (the sink's cursor moves past it) only when the broker acknowledged it (PUBACK for
QoS 1) within ``timeout_s``. A timeout or a lost connection is a failed write: the client is torn
down, the base class reconnects with backoff and jitter, and sending resumes at the event that was
not acknowledged. That is at-least-once: an event whose PUBACK was lost in an outage is sent again,
so a consumer that must not count twice dedupes by ``seq``.

At start, a broker that does not answer is retried in the background (``connect_at_start: retry``,
the journal keeps the events) or is an error, exit 69 (``require``). A broker that refuses the
connection (credentials), unreadable TLS or password files, or a failed TLS handshake are errors
at start either way: retrying would not fix them.
"""
from __future__ import annotations

import errno
import importlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edge import __version__
from edge.errors import SinkError
from edge.paths import cause, path_error, show_path
from edge.schema import NAME, PosFloat, ReconnectConfig, Strict
from edge.sinks.base import Sink, SinkConfigBase, json_line
from edge.util import lazy_import

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

logger = logging.getLogger(__name__)

_CLOSE_WAIT_S = 1.0   # clean close: longest wait for the 'offline' PUBACK, then for the DISCONNECT to go out
_POLL_S = 0.1         # waits look at close()'s abort flag this often
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_PLAIN = ("", "Success", "Unspecified error", "Normal disconnection")  # paho's reasons that add nothing


class MqttTlsConfig(Strict):
    ca_file: str | None = Field(None, description="CA certificates (PEM) that sign the broker's certificate "
                                                  "(default: the system's CA store)")
    cert_file: str | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: str | None = Field(None, description="the client certificate's private key (PEM; default: in "
                                                   "cert_file)")
    insecure: bool = Field(False, description="do not check that the broker's certificate names `host` (the "
                                              "certificate is still verified against the CA); for tests only")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttTlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        return self


class MqttSinkConfig(SinkConfigBase):
    type: Literal["mqtt"] = Field(description="each event as an MQTT message (paho-mqtt 2, pip install "
                                              "'edge-tsm[mqtt]')")
    host: Annotated[str, Field(min_length=1, max_length=253, description="the broker's host name or address")]
    port: Annotated[int, Field(ge=1, le=65535)] | None = Field(None, description="default: 1883, 8883 with tls")
    tls: MqttTlsConfig | None = Field(None, description="TLS to the broker ({} for the system's CA store); "
                                                        "null: plain TCP")
    username: str | None = Field(None, description="user name at the broker (default: none, anonymous)")
    password_file: str | None = Field(None, description="file holding the password (one line; never inline in the "
                                                        "config); under systemd e.g. a LoadCredential= file")
    client_id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="default: edge-tsm-<device>")
    device: Annotated[str, Field(pattern=NAME)] | None = Field(None, description="this device's name in topics and "
                                                                                  "discovery (default: the hostname)")
    topic_prefix: Annotated[str, Field(max_length=1024)] | None = Field(
        None, description="default: edge-tsm/<device>; events go to <prefix>/events/<camera>, availability to "
                          "<prefix>/availability")
    qos: Literal[0, 1, 2] = Field(1, description="1: an event counts as delivered when the broker acknowledged it "
                                                 "(PUBACK); at-least-once, so consumers dedupe by seq")
    retain_events: bool = Field(False, description="the broker keeps each camera's last event for new subscribers")
    keepalive_s: Annotated[int, Field(ge=5, le=65535)] = Field(60, description="MQTT keep-alive interval (seconds)")
    timeout_s: PosFloat = Field(10.0, description="connecting (TCP, TLS, CONNACK) and each acknowledgement; "
                                                  "slower is a failed write (reconnect, resend)")
    availability: bool = Field(True, description="retained <prefix>/availability: 'online' while connected, "
                                                 "'offline' on a clean close and as the last will")
    ha_discovery: bool = Field(False, description="Home Assistant MQTT discovery: one retained sensor config per "
                                                  "camera (state: the last label)")
    ha_prefix: Annotated[str, Field(max_length=1024)] = Field("homeassistant", description="Home Assistant's "
                                                                                          "discovery prefix")
    connect_at_start: Literal["retry", "require"] = Field(
        "retry", description="broker unreachable at start: retry (start anyway, log it, keep retrying with backoff; "
                             "durable events wait in the journal) or require (fail: exit 69, as `check` does then)")
    reconnect: ReconnectConfig = Field(ReconnectConfig(), description="backoff for reconnecting after a lost "
                                                                      "connection or a missing acknowledgement")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        """A name the resolver can take (an IPv6 address has colons and no labels to check)."""
        labels = v.rstrip(".").split(".")
        if any(c.isspace() for c in v) or (":" not in v and any(not 1 <= len(p) <= 63 for p in labels)):
            raise ValueError("expected a host name (dot-separated labels of 1 to 63 characters, no spaces) or an "
                             "IP address")
        return v

    @field_validator("topic_prefix", "ha_prefix")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in "+#\x00") or v.startswith("/") or v.endswith("/")):
            raise ValueError("expected topic levels joined by '/' (no '+', '#', no '/' at either end)")
        return v

    @model_validator(mode="after")
    def _password_needs_user(self) -> MqttSinkConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self


def paho_client(name: str) -> Any:
    """The ``paho.mqtt.client`` module, 2.0 or later.

    Raises:
        SinkError: paho-mqtt is missing, older than 2.0, or fails to import; the line says what to install.
    """
    what, install = f"sink {name}: type 'mqtt'", "pip install 'edge-tsm[mqtt]' (or pip install 'paho-mqtt>=2.0')"
    try:
        importlib.import_module("paho.mqtt.enums")  # new in paho-mqtt 2.0
    except ImportError as e:
        if e.name == "paho.mqtt.enums":
            raise SinkError(f"{what} needs paho-mqtt 2.0 or later (an older one is installed): {install}") from None
    return lazy_import("paho.mqtt.client", what=what, package="paho-mqtt", install=install, error=SinkError,
                       missing=("paho", "paho.mqtt", "paho.mqtt.client"))


class _Unreachable(SinkError):
    """The broker did not answer (network, DNS, timeout): worth retrying, unlike a refusal."""


def default_device() -> str:
    """The hostname's first label, safe for topics and Home Assistant ids."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:64].strip("-.")
    return name or "device"


class MqttSink(Sink):
    """Events as MQTT messages, acknowledged by the broker before they count as delivered."""

    type = "mqtt"
    config = MqttSinkConfig
    durable_default = True

    def __init__(self, cfg: MqttSinkConfig, name: str) -> None:
        """Raises: SinkError when paho-mqtt 2 is not installed."""
        super().__init__(cfg, name)
        self._mqtt = paho_client(name)
        self.device = cfg.device or default_device()
        self.prefix = cfg.topic_prefix or f"edge-tsm/{self.device}"
        self.client_id = cfg.client_id or f"edge-tsm-{self.device}"
        self.port = cfg.port or (8883 if cfg.tls is not None else 1883)
        self.availability_topic = f"{self.prefix}/availability"
        self.target = f"broker {cfg.host}:{self.port}"
        self.retry_s = (cfg.reconnect.initial_s, cfg.reconnect.max_s)
        self._cv = threading.Condition()       # guards the connection state below; paho's callbacks notify it
        self._client: mqtt.Client | None = None
        self._connack: Any = None               # the CONNACK's reason code
        self._lost: str | None = None           # 'connection lost (why)' once it dropped
        self._acked: set[int] = set()           # message ids the broker acknowledged
        self._interrupted = False
        self._healthy = False                   # connected and the last publish was acknowledged
        self._away_at_start = False
        self._ha_cameras: list[str] = list(cfg.cameras or ())  # discovery configs go out for these at each connect

    def event_topic(self, camera: Any) -> str:
        """``<prefix>/events/<camera>`` (characters MQTT gives meaning to are replaced)."""
        return f"{self.prefix}/events/{re.sub(r'[/+#]', '_', str(camera))}"

    def discovery_topic(self, camera: str) -> str:
        return f"{self.cfg.ha_prefix}/sensor/{_UNSAFE.sub('_', self.device)}/{_UNSAFE.sub('_', camera)}/config"

    def announce(self, cameras: Iterable[str]) -> None:
        """Cameras to publish Home Assistant discovery configs for at each connect (call before open());
        any other camera is announced just before its first event."""
        for cam in cameras:
            if cam not in self._ha_cameras:
                self._ha_cameras.append(cam)

    def _details(self) -> str:
        c = self.cfg
        extra = "".join([", TLS" if c.tls is not None else "", ", HA discovery" if c.ha_discovery else "",
                         "; not connected yet, retrying" if self._away_at_start else ""])
        return f" (client {self.client_id}, {self.prefix}/events/<camera>, QoS {c.qos}{extra})"

    # --- start ------------------------------------------------------------------------------------
    def _open_at_start(self) -> str | None:
        """Connect; a broker that does not answer is retried by the worker (``connect_at_start: retry``).

        Raises:
            SinkError: the broker refused the connection, a TLS or password file cannot be read, or
                (``connect_at_start: require``) the broker cannot be reached (exit 69).
        """
        try:
            self._connect()
        except _Unreachable as e:
            if self.cfg.connect_at_start == "require":
                raise
            self._away_at_start = True
            return f"{e}; running without it and retrying with backoff (connect_at_start: retry)"
        return None

    def _open_device(self) -> None:
        self._connect()

    def _connect(self) -> None:
        """A new client: TLS, credentials, last will; connect, wait for CONNACK, announce.

        Raises:
            _Unreachable: no answer (network, DNS, timeout); SinkError: refused or misconfigured.
        """
        import ssl  # loaded with paho anyway; not at import, so the config stays light

        c, mqtt = self.cfg, self._mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        if c.username is not None:
            client.username_pw_set(c.username, self._password())
        if c.tls is not None:
            self._tls(client)
        if c.availability:
            client.will_set(self.availability_topic, "offline", qos=1, retain=True)
        client.on_connect, client.on_disconnect, client.on_publish = self._on_connect, self._on_disconnect, \
            self._on_publish
        client.connect_timeout = c.timeout_s
        with self._cv:
            self._client, self._connack, self._lost, self._interrupted = client, None, None, False
        try:
            client.connect(c.host, self.port, keepalive=c.keepalive_s)
        except ssl.SSLError as e:
            self._teardown(clean=False)
            raise SinkError(f"{self.where}: TLS handshake failed ({e.reason or cause(e)})") from None
        except OSError as e:  # refused, unreachable, DNS, timeout
            self._teardown(clean=False)
            raise _Unreachable(f"{self.where}: cannot connect ({cause(e)})") from None
        client.loop_start()
        with self._cv:
            self._wait(lambda: self._connack is not None or self._lost is not None, c.timeout_s)
            connack, lost = self._connack, self._lost
        if connack is None or connack.is_failure:
            self._teardown(clean=False)
            if connack is not None:
                raise SinkError(f"{self.where}: the broker refused the connection ({connack})")
            raise _Unreachable(f"{self.where}: " + (f"{lost} before CONNACK" if lost else
                                                    f"no CONNACK within {c.timeout_s:g} s"))
        try:
            if c.availability:
                self._publish(self.availability_topic, "online", retain=True)
            if c.ha_discovery:
                for cam in self._ha_cameras:
                    self._publish(self.discovery_topic(cam), self._discovery(cam), retain=True)
        except OSError as e:
            self._teardown(clean=False)
            raise _Unreachable(f"{self.where}: {cause(e)}") from None
        self._healthy = True

    def _password(self) -> str:
        path = self.cfg.password_file
        if path is None:
            return ""
        try:
            with open(path, encoding="utf-8") as f:
                return (f.read().splitlines() or [""])[0]
        except (OSError, ValueError) as e:
            why = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"cannot read ({_read_error(e, path)})"
            raise SinkError(f"{self.where}: password_file {show_path(path)}: {why}") from None

    def _tls(self, client: mqtt.Client) -> None:
        import ssl

        t = self.cfg.tls
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(t, key)
            try:
                if path is not None:
                    open(path, "rb").close()  # noqa: SIM115 - readable? (the message names the key)
            except (OSError, ValueError) as e:
                raise SinkError(f"{self.where}: tls.{key} {show_path(path)}: cannot read "
                                f"({_read_error(e, path)})") from None
        try:
            client.tls_set(ca_certs=t.ca_file, certfile=t.cert_file, keyfile=t.key_file,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise SinkError(f"{self.where}: tls: cannot load the certificates ({cause(e)})") from None
        if t.insecure:
            client.tls_insecure_set(True)

    def _discovery(self, camera: str) -> str:
        """A Home Assistant MQTT discovery config: a sensor whose state is the camera's last label."""
        node = _UNSAFE.sub("_", self.device)
        cfg: dict[str, Any] = {
            "name": f"{camera} activity", "unique_id": f"edge_tsm_{node}_{_UNSAFE.sub('_', camera)}",
            "state_topic": self.event_topic(camera), "value_template": "{{ value_json.label }}",
            "json_attributes_topic": self.event_topic(camera), "icon": "mdi:motion-sensor",
            "device": {"identifiers": [f"edge_tsm_{node}"], "name": f"edge-tsm {self.device}",
                       "manufacturer": "edge-tsm", "model": "online video classifier", "sw_version": __version__}}
        if self.cfg.availability:
            cfg.update(availability_topic=self.availability_topic, payload_available="online",
                       payload_not_available="offline")
        return json.dumps(cfg, separators=(",", ":"))

    # --- paho's callbacks (its network thread) ------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        with self._cv:
            if client is self._client:
                self._connack = reason
                self._cv.notify_all()

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        with self._cv:
            if client is self._client:
                why = str(reason) if reason is not None else ""
                self._lost = "connection lost" + ("" if why in _PLAIN else f" ({why})")
                self._healthy = False
                self._cv.notify_all()

    def _on_publish(self, client: mqtt.Client, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        with self._cv:
            if client is self._client:
                self._acked.add(mid)
                self._cv.notify_all()

    # --- sending ------------------------------------------------------------------------------------
    def _publish(self, topic: str, payload: str, retain: bool, timeout: float | None = None) -> None:
        """Publish and wait until the broker acknowledged it; OSError when it did not."""
        with self._cv:
            client, self._healthy = self._client, False
            self._acked.clear()
            if self._lost is not None:
                raise OSError(errno.ECONNRESET, self._lost)
            if client is None:
                raise OSError(errno.ENOTCONN, "not connected")
        info = client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise OSError(errno.ENOTCONN, f"publish failed ({self._mqtt.error_string(info.rc)})")
        limit = self.cfg.timeout_s if timeout is None else timeout
        with self._cv:
            self._wait(lambda: info.mid in self._acked or self._lost is not None, limit)
            if info.mid in self._acked:
                self._healthy = True
                return
            if self._interrupted or self._abort.is_set():
                raise OSError(errno.EINTR, "interrupted by close")
            if self._lost is not None:
                raise OSError(errno.ECONNRESET, self._lost)
        raise OSError(errno.ETIMEDOUT, f"no acknowledgement from the broker within {limit:g} s")

    def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait (``_cv`` held) until ``done()``, ``timeout`` s pass, or close() gives up on us."""
        deadline = time.monotonic() + timeout
        while not done() and not self._interrupted and not self._abort.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cv.wait(min(left, _POLL_S))  # notified by paho's callbacks; the slice notices _abort

    def _write(self, event: dict[str, Any]) -> None:
        camera = event.get("camera")
        if self.cfg.ha_discovery and isinstance(camera, str) and camera not in self._ha_cameras:
            self._publish(self.discovery_topic(camera), self._discovery(camera), retain=True)
            self._ha_cameras.append(camera)
        self._publish(self.event_topic(camera), json_line(event).rstrip("\n"), retain=self.cfg.retain_events)

    def _interrupt(self) -> None:
        with self._cv:
            self._interrupted = True
            self._cv.notify_all()

    def _close_device(self) -> None:
        self._teardown(clean=self._closing_cleanly() and self._healthy)

    def _teardown(self, clean: bool) -> None:
        """Clean: 'offline' (retained) and DISCONNECT, so the will is not sent. Otherwise the socket is
        cut without DISCONNECT, and the broker publishes the last will."""
        client = self._client
        if client is None:
            return
        if clean:
            try:
                if self.cfg.availability:
                    self._publish(self.availability_topic, "offline", retain=True,
                                  timeout=min(self.cfg.timeout_s, _CLOSE_WAIT_S))
                client.disconnect()
                with self._cv:
                    self._wait(lambda: self._lost is not None, _CLOSE_WAIT_S)
            except OSError as e:
                logger.debug("%s: no clean disconnect (%s)", self.where, cause(e))
        with self._cv:
            self._client, self._healthy = None, False
            self._cv.notify_all()
        sock = client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes paho's loop; the broker sees the connection die
            except OSError:
                pass
        client.loop_stop()


def _read_error(e: BaseException, path: str) -> str:
    """Why a file named in the config cannot be read (a NUL byte in the path is a ValueError, not an OSError)."""
    return path_error(e, path) if isinstance(e, ValueError) else cause(e)
