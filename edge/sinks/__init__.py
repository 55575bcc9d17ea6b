"""Event sinks, chosen by the config's ``type``.

One list, :data:`SINK_TYPES`, names each sink once; the config's tagged union :data:`SinkConfig` (which
:mod:`edge.config` uses for ``sinks:``) and the registry :data:`SINKS` are both made from it. Each sink
is one module here holding its config model (a :class:`SinkConfigBase` with a ``type`` literal, every
field described) and its :class:`Sink` subclass, which names that model in ``config``.

Adding a sink: one file here, one line in :data:`SINK_TYPES`.

Importing this package (as ``edge.config`` does) loads no sink's driver package: pyserial and paho-mqtt
are imported when such a sink is made (a missing one is a SinkError saying what to install), gpiod and
Jetson.GPIO when the GPIO lines are opened, so a device without pyserial still runs a log sink.
"""
from __future__ import annotations

import functools
import operator
import os
import typing
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from edge.errors import ConfigError
from edge.paths import show_path
from edge.sinks.base import Sink, SinkConfigBase
from edge.sinks.gpio import GpioSink, GpioSinkConfig
from edge.sinks.log import LogSink, LogSinkConfig
from edge.sinks.mqtt import MqttSink, MqttSinkConfig, MqttTlsConfig, default_device
from edge.sinks.serial import SerialSink, SerialSinkConfig
from edge.sinks.stdout import StdoutSink, StdoutSinkConfig
from edge.sinks.unix import UnixSink, UnixSinkConfig

SinkFactory = Callable[[Any, str], Sink]

# The one list: every sink type once (this order is the order config errors list the types in).
SINK_TYPES: tuple[type[Sink], ...] = (StdoutSink, LogSink, SerialSink, GpioSink, MqttSink, UnixSink)


def config_tag(model: type[SinkConfigBase]) -> str:
    """The ``type`` a sink config model stands for (its ``type: Literal[...]``)."""
    return typing.get_args(model.model_fields["type"].annotation)[0]


SINKS: dict[str, SinkFactory] = {config_tag(cls.config): cls for cls in SINK_TYPES}

SinkConfig = Annotated[functools.reduce(operator.or_, (cls.config for cls in SINK_TYPES)),  # type: ignore[valid-type]
                       Field(discriminator="type")]


def target_of(cfg: Any) -> str | None:
    """What a sink writes to, in words, when two sinks cannot share it: a log file, a socket, a serial port
    (paths normalised: ``..`` and ``.`` resolved, relative ones made absolute; symlinks are not followed),
    an MQTT client id at a broker (the broker drops one of two connections with the same id)."""
    if cfg.type in ("log", "unix", "serial"):
        raw = cfg.port if cfg.type == "serial" else cfg.path
        try:
            path = os.path.normpath(os.path.abspath(raw))
        except (OSError, ValueError):  # a NUL byte, a vanished working folder: the open will say
            path = raw
        return f"{'port' if cfg.type == 'serial' else 'path'} {show_path(path)}"
    if cfg.type == "mqtt":
        port = cfg.port or (8883 if cfg.tls is not None else 1883)
        client = cfg.client_id or f"edge-tsm-{cfg.device or default_device()}"
        return f"client id {client!r} at broker {cfg.host.lower()}:{port}"
    return None


def duplicate_targets(sinks: list[Any], names: list[str]) -> str | None:
    """The first two sinks (config models, with their names from :func:`edge.config.sink_names`) that would
    write to the same file, socket, port or MQTT client id, as one line; None when there are none."""
    seen: dict[str, str] = {}
    for cfg, name in zip(sinks, names, strict=True):
        target = target_of(cfg)
        if target is None:
            continue
        if target in seen:
            return (f"sinks: {seen[target]!r} and {name!r} both write to {target} (every event would go there "
                    f"twice, or the two would fight over it); give each sink its own")
        seen[target] = name
    return None


def create_sink(cfg: Any, name: str) -> Sink:
    """A sink (not yet opened) for one sink config model; ``name`` from :func:`edge.config.sink_names`.

    Raises:
        ConfigError: the type has no sink here.
        SinkError: the sink's package is not installed.
    """
    factory = SINKS.get(cfg.type)
    if factory is None:
        raise ConfigError(f"sinks: type {cfg.type!r} is not known (known: {', '.join(SINKS)})")
    return factory(cfg, name)


__all__ = ["SINKS", "SINK_TYPES", "GpioSinkConfig", "LogSinkConfig", "MqttSinkConfig", "MqttTlsConfig",
           "SerialSinkConfig", "Sink", "SinkConfig", "SinkConfigBase", "SinkFactory", "StdoutSinkConfig",
           "UnixSinkConfig", "config_tag", "create_sink", "duplicate_targets", "target_of"]
