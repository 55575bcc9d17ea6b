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
import typing
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from edge.errors import ConfigError
from edge.sinks.base import Sink, SinkConfigBase
from edge.sinks.gpio import GpioSink, GpioSinkConfig
from edge.sinks.log import LogSink, LogSinkConfig
from edge.sinks.mqtt import MqttSink, MqttSinkConfig, MqttTlsConfig
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
           "UnixSinkConfig", "config_tag", "create_sink"]
