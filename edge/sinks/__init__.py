"""Event sinks, chosen by the config's ``type`` from a plain registry.

Each sink lives in its own module, imported only when its factory is called, so a device without
pyserial can still run a log sink, and a failed import says what to install instead of making the
sink vanish. Adding a sink: one config class in :mod:`edge.config`, one file here, one line in
:data:`SINKS`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.errors import ConfigError, SinkError
from edge.sinks.base import Sink

SinkFactory = Callable[..., Sink]


def _stdout(cfg: Any, name: str) -> Sink:
    from edge.sinks.stdout import StdoutSink
    return StdoutSink(cfg, name)


def _log(cfg: Any, name: str) -> Sink:
    from edge.sinks.log import LogSink
    return LogSink(cfg, name)


def _serial(cfg: Any, name: str) -> Sink:
    try:
        from edge.sinks.serial import SerialSink
    except ImportError as e:
        detail = "" if e.name == "serial" else f" (importing it failed: {' '.join(str(e).split())})"
        raise SinkError(f"sink {name}: type 'serial' needs the pyserial package: pip install pyserial{detail}") \
            from None
    return SerialSink(cfg, name)


def _gpio(cfg: Any, name: str) -> Sink:
    from edge.sinks.gpio import GpioSink  # its driver's package (gpiod, Jetson.GPIO) is imported at open
    return GpioSink(cfg, name)


def _mqtt(cfg: Any, name: str) -> Sink:
    try:
        from edge.sinks.mqtt import MqttSink
    except ImportError as e:
        if e.name == "paho.mqtt.enums":
            need = "paho-mqtt 2.0 or later (an older one is installed)"
        elif e.name in ("paho", "paho.mqtt", "paho.mqtt.client"):
            need = "the paho-mqtt package"
        else:
            need = f"paho-mqtt, whose import failed: {' '.join(str(e).split())}"
        raise SinkError(f"sink {name}: type 'mqtt' needs {need}: pip install 'edge-tsm[mqtt]' "
                        f"(or pip install 'paho-mqtt>=2.0')") from None
    return MqttSink(cfg, name)


def _unix(cfg: Any, name: str) -> Sink:
    from edge.sinks.unix import UnixSink
    return UnixSink(cfg, name)


SINKS: dict[str, SinkFactory] = {"stdout": _stdout, "log": _log, "serial": _serial, "gpio": _gpio, "mqtt": _mqtt,
                                 "unix": _unix}


def create_sink(cfg: Any, name: str) -> Sink:
    """A sink (not yet opened) for one ``*SinkConfig`` model; ``name`` from :func:`edge.config.sink_names`.

    Raises:
        ConfigError: the type has no sink here.
        SinkError: the sink's package is not installed.
    """
    factory = SINKS.get(cfg.type)
    if factory is None:
        raise ConfigError(f"sinks: type {cfg.type!r} is not known (known: {', '.join(SINKS)})")
    return factory(cfg, name)


__all__ = ["SINKS", "Sink", "SinkFactory", "create_sink"]
