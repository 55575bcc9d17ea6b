"""The daemon's configuration: YAML -> typed, validated models (pydantic), unknown keys forbidden.

Every error is one line that names the file, the key path, the value and what is allowed, raised as
:class:`edge.errors.ConfigError` (exit code 78). ``edge-tsm config --schema`` prints
:func:`json_schema`. A duplicate key in a mapping is an error too (YAML would silently keep the last).

Sinks and sources are registries: a sink's config class is one member of the ``SinkConfig`` union,
told apart by its ``type`` field, and lives beside the sink; adding a sink is one file in ``edge/sinks/``
and one line in :data:`edge.sinks.SINK_TYPES`.
"""
from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from edge.errors import ConfigError, InputError
from edge.paths import show_path
from edge.schema import NAME, Label, NonNegFloat, PosFloat, Prob, ReconnectConfig, Strict, format_errors, short
from edge.sinks import SinkConfig, StdoutSinkConfig, duplicate_targets

DEFAULT_CONFIG = "/etc/edge-tsm/config.yaml"
MAX_CONFIG_BYTES = 1 << 20


# --- engine -------------------------------------------------------------------------------------------
class EngineConfig(Strict):
    type: Literal["onnxruntime", "openvino"] = Field("onnxruntime", description="the inference engine")
    device: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        "CPU", description="onnxruntime: CPU, cuda, tensorrt, openvino; openvino: CPU, GPU, NPU, AUTO, or e.g. GPU.1")
    precision: Literal["fp32", "int8"] | None = Field(None, description="graph to run (default: the bundle's)")
    threads: Annotated[int, Field(ge=1, le=256)] | None = Field(None, description="engine threads (default: 1 for "
                                                                                  "onnxruntime on CPU, which leaves "
                                                                                  "the other cores to the cameras; "
                                                                                  "else the engine's choice)")
    max_batch: Annotated[int, Field(ge=1, le=64)] = Field(4, description="with several cameras: up to this many "
                                                           "frames (one per camera) in one engine call; 1: off")
    allow_fallback: bool = Field(True, description="fall back to CPU (logged) when the device is not there")
    cache_dir: str | None = Field(None, description="the batched graph, and the compile cache of openvino / the "
                                                    "TensorRT provider: a folder of this user's alone, made 0700 "
                                                    "(default: systemd's CacheDirectory, $CACHE_DIRECTORY; else "
                                                    "$XDG_CACHE_HOME/edge-tsm or ~/.cache/edge-tsm for the batched "
                                                    "graph, no compile cache)")
    step_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0, description="a frame step (preprocess + inference) slower than this is reported, and a step stuck this "
                          "long stops the systemd watchdog pings (so systemd restarts the service)")
    precision_hint: Literal["f32", "default"] = Field(
        "f32", description="f32: full precision (openvino otherwise runs bf16/f16 where the device has it); "
                           "default: the engine's choice")


# --- cameras ------------------------------------------------------------------------------------------
class CameraConfig(Strict):
    name: Annotated[str, Field(pattern=NAME, description="used in events and logs")]
    source: str | int = Field(
        description="V4L2 index (0 to 255: /dev/videoN) or device (/dev/video0), a video file, an rtsp:// or "
                    "http(s):// URL, a GStreamer pipeline ('gst: ...'), or 'synthetic' / 'synthetic:<label>'")
    type: Literal["auto", "v4l2", "file", "url", "gstreamer", "synthetic"] = Field(
        "auto", description="auto: told from source (a number or /dev/video*: v4l2; a URL; 'gst: ...'; "
                            "'synthetic'; else a file)")
    width: Annotated[int, Field(ge=16, le=8192)] | None = Field(None, description="capture width asked of the "
                                                                                  "device (default: its own)")
    height: Annotated[int, Field(ge=16, le=8192)] | None = Field(None, description="capture height asked of "
                                                                                   "the device (default: its own)")
    fps: Annotated[float, Field(gt=0, le=1000)] | None = Field(None, description="frame rate asked of the device "
                                                                                 "(default: its own)")
    fourcc: Annotated[str, Field(pattern=r"^[A-Za-z0-9 ]{4}$")] | None = Field(None, description="e.g. MJPG, YUYV")
    loop: bool = Field(False, description="files: start again at the end")
    realtime: bool = Field(False, description="files: pace at the file's fps (otherwise as fast as possible, "
                                              "no frame skipped)")
    stall_s: PosFloat = Field(5.0, description="no frame for this long: the source is reopened")
    decode_scale: Literal["auto", 1, 2, 4, 8] = Field(
        "auto", description="MJPG cameras and files: decode at 1/N of the size inside the JPEG decoder, much "
                            "cheaper than decoding in full and resizing; auto: the largest N whose frame still covers "
                            "the model's input (and clips.width); 1: full size")
    reconnect: ReconnectConfig = Field(ReconnectConfig(), description="backoff between reopen attempts")
    at_start: Literal["retry", "require"] = Field(
        "retry", description="the daemon (run, check) when the device or file is not there at start: retry: the "
                             "other cameras and the sinks run meanwhile, and it is opened with the reconnect backoff "
                             "when it appears (check warns); require: the daemon does not start (exit 66 or 69)")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | int) -> str | int:
        if isinstance(v, str) and not v.strip():
            raise ValueError("expected a device, file, URL, 'gst: ...' pipeline or 'synthetic'")
        if isinstance(v, int) and not 0 <= v <= 255:
            raise ValueError("a V4L2 index is 0 to 255 (/dev/videoN)")
        return v


# --- events -------------------------------------------------------------------------------------------
_ENTER = "smoothed score at or above which an event starts (0..1; default 0.6)"
_EXIT = "smoothed score below which the event ends (0..1, <= enter; default 0.4)"
_MIN_FRAMES = "decisions in a row at or above enter before an event starts (default 2)"
_COOLDOWN = "seconds after an event of a label ends before it may start again (default 0.5)"


class ClassThresholds(Strict):
    enter: Prob | None = Field(None, description=_ENTER.replace("default 0.6", "default: events.enter"))
    exit: Prob | None = Field(None, description=_EXIT.replace("default 0.4", "default: events.exit"))
    min_frames: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        None, description=_MIN_FRAMES.replace("default 2", "default: events.min_frames"))
    cooldown_s: NonNegFloat | None = Field(None, description=_COOLDOWN.replace("default 0.5",
                                                                               "default: events.cooldown_s"))


class EventsConfig(Strict):
    """Unset values come from the model's decision rate (about 0.6 s of smoothing, see
    :func:`edge.events.default_event_settings`)."""

    window: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        None, description="decisions the scores are smoothed over (default: 0.6 s worth at the model's rate)")
    warmup: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        None, description="decisions ignored after a start or a capture gap, while the model's temporal states "
                          "fill (default: 0.6 s worth for online bundles, 0 for clip bundles)")
    smoothing: Literal["mean", "ema"] = Field("mean", description="mean: moving average over window; ema: "
                                                                  "exponential moving average")
    ema_alpha: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="smoothing ema: weight of the newest decision (default 2 / (window + 1))")
    enter: Prob | None = Field(None, description=_ENTER)
    exit: Prob | None = Field(None, description=_EXIT)
    min_frames: Annotated[int, Field(ge=1, le=10_000)] | None = Field(None, description=_MIN_FRAMES)
    cooldown_s: NonNegFloat | None = Field(None, description=_COOLDOWN)
    ignore: list[Label] | None = Field(None, description="labels that never start an event (default: no_motion and "
                                                       "similar background labels of the model)")
    classes: dict[Label, ClassThresholds] = Field({}, description="label -> its own enter, exit, min_frames, "
                                                                   "cooldown_s (unset: the values above)")

    @model_validator(mode="after")
    def _hysteresis(self) -> EventsConfig:
        if self.enter is not None and self.exit is not None and self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must be <= enter ({self.enter})")
        return self


# --- sinks --------------------------------------------------------------------------------------------
# Each sink's config model lives beside the sink (edge/sinks/<type>.py); SinkConfig is their tagged union,
# made from the one list of sink types in edge.sinks.


# --- the whole file -----------------------------------------------------------------------------------
class MetricsConfig(Strict):
    interval_s: Annotated[float, Field(ge=0.5, le=3600)] = Field(5.0, description="how often status.json (in "
                                                                                   "state_dir) and the textfile are "
                                                                                   "written")
    textfile: str | None = Field(None, description="Prometheus node-exporter textfile to write, e.g. "
                                                   "/var/lib/node_exporter/textfile_collector/edge_tsm.prom")
    listen_any: bool = Field(False, description="let metrics.listen be an address other than loopback (the "
                                                "endpoint has no authentication: camera names, labels and counts go "
                                                "to anyone who can reach it)")
    listen: str | None = Field(None, description="serve Prometheus text on HOST:PORT (e.g. 127.0.0.1:9108); a "
                                                 "non-loopback HOST needs listen_any: true. Under the unit, "
                                                 "install-service adds the drop-in that gives it the network")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        host, _port = listen_address(v)
        if not is_loopback(host) and not info.data.get("listen_any"):
            raise ValueError("a HOST other than loopback serves the status (camera names, labels, counts) to the "
                             "network without authentication; use 127.0.0.1:PORT, or set metrics.listen_any: true")
        return v


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port).

    Raises:
        ValueError: not of that form, or the port is not 0..65535.
    """
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:9108")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1); a name other than localhost may
    resolve to anything, so it is not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_changes(old: Config, new: Config) -> list[str]:
    """What a reload (SIGHUP) cannot apply in ``metrics``, one line each: the status writer and its HTTP
    listener are made once at start, so a change takes effect at the next restart. Empty when unchanged."""
    out = []
    for key in MetricsConfig.model_fields:
        was, now = getattr(old.metrics, key), getattr(new.metrics, key)
        if was != now:
            out.append(f"metrics.{key} changed from {short(was)} to {short(now)}: it takes effect at the next "
                       f"restart (the running daemon keeps {short(was)})")
    return out


class JournalConfig(Strict):
    fsync: Literal["always", "interval", "never"] = Field("interval", description="always: every event survives a "
                                                          "power cut (a disk write each); interval: at most "
                                                          "fsync_interval_s of events may be lost; never: the OS "
                                                          "decides")
    fsync_interval_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        1.0, description="fsync: interval: at most this many seconds between fsyncs")
    max_mb: Annotated[float, Field(gt=0, le=100_000)] = Field(64.0, description="size bound; the oldest events go "
                                                                                "first (a sink that is down that long "
                                                                                "loses them, counted)")


class UncertainTrigger(Strict):
    low: Prob = Field(0.4, description="the top smoothed score at or above this ...")
    high: Prob = Field(0.75, description="... and below this counts as unsure")
    min_s: Annotated[float, Field(ge=0, le=60)] = Field(
        1.0, description="unsure for at least this long (seconds) before a clip is kept (the frame ring holds this "
                         "much more)")
    cooldown_s: NonNegFloat = Field(60.0, description="at most one unsure clip per camera in this many seconds")

    @model_validator(mode="after")
    def _band(self) -> UncertainTrigger:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class ClipsConfig(Strict):
    """Field clips for annotation: short videos around events or unsure periods, with a JSON sidecar
    (scores per frame, model name and hash) each, in a spool with a size quota (oldest removed first)."""

    dir: str | None = Field(None, description="the spool folder (default: <state_dir>/clips)")
    triggers: Annotated[list[Literal["event", "uncertain"]], Field(min_length=1)] = Field(
        ["uncertain"], description="event: a clip of every event (start - pre_s .. end + post_s); uncertain: "
                                   "of periods where the top score sits in the uncertain band")
    labels: list[Label] | None = Field(None, description="event trigger: only events of these labels (default: all)")
    cameras: list[str] | None = Field(None, description="only these cameras (default: all)")
    uncertain: UncertainTrigger = Field(UncertainTrigger(), description="when the uncertain trigger keeps a "
                                                                         "clip (the model unsure for a while)")
    pre_s: Annotated[float, Field(ge=0, le=60)] = Field(2.0, description="seconds kept before the trigger")
    post_s: Annotated[float, Field(ge=0, le=60)] = Field(2.0, description="seconds kept after it ends")
    max_s: Annotated[float, Field(gt=0, le=600)] = Field(20.0, description="longest clip (seconds); a longer "
                                                                          "event is cut here")
    fps: Annotated[float, Field(gt=0, le=240)] | None = Field(None, description="frames per second written "
                                                               "(default: the model's training fps)")
    width: Annotated[int, Field(ge=16, le=8192)] | None = Field(320, description="frames scaled down to at most "
                                                                    "this width (null: as captured)")
    codec: Literal["mjpg", "mp4v"] = Field("mjpg", description="mjpg: .avi (Motion JPEG); mp4v: .mp4 (MPEG-4 part 2)")
    max_mb: Annotated[float, Field(gt=0, le=10_000_000)] = Field(1024.0, description="spool size quota; the "
                                                                 "oldest clips are removed first")


class Config(Strict):
    model: str = Field("default", description="a bundle name ('default') or folder")
    engine: EngineConfig = Field(EngineConfig(), description="the inference engine and its device")
    cameras: Annotated[list[CameraConfig], Field(min_length=1, max_length=64, description="the video sources "
                                                                                          "(1 to 64)")]
    events: EventsConfig = Field(EventsConfig(), description="how scores become start/end events (defaults "
                                                             "suit the model's decision rate)")
    sinks: list[SinkConfig] = Field(default_factory=lambda: [StdoutSinkConfig(type="stdout")], max_length=64,
                                    description="where events go (default: stdout)")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="the log's level "
                                                                    "(-q / -v on the command line win)")
    status_interval_s: NonNegFloat = Field(300.0, description="log a status line this often (0: never)")
    state_dir: str | None = Field(None, description="where the event journal, the sinks' cursors and status.json "
                                                    "live (default: systemd's StateDirectory, $STATE_DIRECTORY; "
                                                    "outside systemd $XDG_STATE_HOME/edge-tsm, else "
                                                    "~/.local/state/edge-tsm)")
    journal: JournalConfig = Field(JournalConfig(), description="the event journal in state_dir (durable "
                                                                "sinks resume from it)")
    metrics: MetricsConfig = Field(MetricsConfig(), description="status.json, Prometheus textfile and endpoint")
    clips: ClipsConfig | None = Field(None, description="keep field clips for annotation (off unless given)")

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names = [c.name for c in self.cameras]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"cameras: name {dup!r} is used twice (camera names must be unique)")
        sinks = sink_names(self)
        dup = next((n for n in sinks if sinks.count(n) > 1), None)
        if dup:
            raise ValueError(f"sinks: name {dup!r} is used twice (give each sink its own name)")
        if (clash := duplicate_targets(self.sinks, sinks)) is not None:
            raise ValueError(clash)
        for i, s in enumerate(self.sinks):
            for cam in s.cameras or ():
                if cam not in names:
                    raise ValueError(f"sinks[{i}].cameras: {short(cam)} is not a configured camera "
                                     f"({', '.join(names)})")
        for cam in (self.clips.cameras or ()) if self.clips else ():
            if cam not in names:
                raise ValueError(f"clips.cameras: {short(cam)} is not a configured camera ({', '.join(names)})")
        return self


def sink_names(cfg: Config) -> list[str]:
    """Each sink's name: its ``name``, else its type, numbered when the type repeats (``log``, ``log2``)."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for s in cfg.sinks:
        if s.name:
            out.append(s.name)
            continue
        seen[s.type] = seen.get(s.type, 0) + 1
        out.append(s.type if seen[s.type] == 1 else f"{s.type}{seen[s.type]}")
    return out


# --- loading ------------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {short(key)}",
                                                    key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {short(key)} (first at line {seen[key].line + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 (PyYAML) reads 1e-9, 1e3 and 2.5e3 as strings: its floats need a dot and a signed exponent.
# Read them as numbers, as YAML 1.2 and every user do (the class gets its own copy of the resolvers).
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python data; a syntax error or a duplicate key is one ConfigError line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML{at}: {' '.join(str(problem).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file.

    Raises:
        InputError: the file is missing or unreadable (exit 66).
        ConfigError: not YAML, or a key or value is wrong (exit 78).
    """
    p = Path(path)
    where = f"config {show_path(p)}"
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{where}: no such file (give --config PATH; the default is {DEFAULT_CONFIG})") from None
    except IsADirectoryError:
        raise InputError(f"{where}: is a directory, expected a YAML file") from None
    except OSError as e:
        raise InputError(f"{where}: cannot read ({e.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:  # YAML parses ~1 MB/s: a huge file would stall start (and every HUP)
        raise ConfigError(f"{where}: more than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few kB of YAML (is this "
                          "the right file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start}); expected a YAML file") from None
    if "\x00" in text:
        raise ConfigError(f"{where}: contains NUL bytes; expected a YAML text file")
    return config_from_data(parse_yaml(text, where), where)


def config_from_data(data: Any, where: str = "config") -> Config:
    """Validate already parsed data (a mapping) into a :class:`Config`."""
    if data is None:
        raise ConfigError(f"{where}: empty; expected a mapping with at least 'cameras'")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys (model, engine, cameras, events, sinks), "
                          f"got {short(data)}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, Config, where)) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None


def json_schema() -> str:
    return json.dumps(Config.model_json_schema(), indent=1)


def normalise_camera_source(cam: CameraConfig) -> tuple[str, str | int]:
    """(kind, target) for a camera: kind in v4l2, file, url, gstreamer, synthetic."""
    src = cam.source
    if cam.type != "auto":
        if cam.type == "gstreamer" and isinstance(src, str):
            return "gstreamer", re.sub(r"^gst:\s*", "", src)
        return cam.type, src
    if isinstance(src, int):
        return "v4l2", src
    s = src.strip()
    if s.startswith("gst:"):
        return "gstreamer", s[4:].strip()
    if s == "synthetic" or s.startswith("synthetic:"):
        return "synthetic", s
    if re.match(r"^[a-z][a-z0-9+.-]*://", s, re.I):
        return "url", s
    if s.startswith("/dev/video") or s.startswith("/dev/v4l/") or s.isdigit():
        return "v4l2", int(s) if s.isdigit() else s
    return "file", s
