"""Model bundles: ``model.yaml`` + ONNX graph(s), loaded, type-checked and checked against the graph.

See ``docs/bundle.md`` for the contract. :func:`load_bundle` reads and validates ``model.yaml`` (unknown
keys are errors) and, by default, :func:`validate_graph` checks the graph's inputs and outputs against
it, naming everything that disagrees in one line.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from edge.errors import InputError, ModelError

logger = logging.getLogger(__name__)

# --- the dataclasses the runtime uses ----------------------------------------------------------------
@dataclass(frozen=True)
class InputSpec:
    """How to turn a camera frame into the graph input (see :class:`edge.preprocess.Preprocessor`)."""

    name: str
    size: tuple[int, int]                 # H, W
    layout: str = "NCHW"
    colour: str = "RGB"                   # channel order the graph expects
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "short_side_crop"       # short_side_crop | stretch
    crop_scale: float = 1.0


@dataclass(frozen=True)
class StateSpec:
    input: str
    output: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TemporalSpec:
    shift: str = "causal"
    fps: float = 15.0
    frame_stride: int = 1
    clip_frames: int = 8


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated bundle; ``root`` is its folder, ``files`` maps precision -> file name."""

    name: str
    kind: str
    arch: str
    labels: list[str]
    input: InputSpec
    output_name: str
    states: list[StateSpec]
    temporal: TemporalSpec
    precision: str
    files: dict[str, str]
    provenance: dict[str, Any]
    root: Path
    width: float | None = None
    format: int = 1
    quantization: dict[str, Any] | None = None   # how files.int8 was made (written by edge-tsm quantize)

    @property
    def yaml_path(self) -> Path:
        return self.root / "model.yaml"

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def graph_path(self, precision: str | None = None) -> Path:
        """The graph file of ``precision`` (default: the bundle's).

        Raises:
            ModelError: the bundle has no file for that precision.
        """
        precision = precision or self.precision
        if precision not in self.files:
            raise ModelError(f"model.yaml {self.yaml_path}: precision {precision!r} has no graph file "
                             f"(this bundle has: {', '.join(self.files)})")
        return self.root / self.files[precision]


# --- model.yaml schema (pydantic, strict, unknown keys forbidden) ----------------------------------------
def _rule(ok: Callable[[Any], bool], what: str, before: bool = True) -> Any:
    """A pydantic validator that raises ``expected <what>`` unless ``ok(value)``."""
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"expected {what}")
        return value
    return BeforeValidator(check) if before else AfterValidator(check)


def _ints(v: Any, n: int | None = None) -> bool:
    return (isinstance(v, list) and len(v) > 0 and (n is None or len(v) == n)
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v))


def _triple(v: Any, positive: bool) -> bool:
    return (isinstance(v, list) and len(v) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and (x > 0 or not positive) for x in v))


_Size = Annotated[list[int], _rule(lambda v: _ints(v, 2), "[H, W] of positive ints")]
_Shape = Annotated[list[int], _rule(_ints, "a list of positive ints")]
_Mean = Annotated[list[float], _rule(lambda v: _triple(v, False), "3 numbers (one per input channel, 0..1 scale)")]
_Std = Annotated[list[float], _rule(lambda v: _triple(v, True),
                                    "3 positive numbers (one per input channel, 0..1 scale)")]
_PosFloat = Annotated[float, _rule(lambda v: v > 0, "a positive number", before=False)]
_PosInt = Annotated[int, _rule(lambda v: v > 0, "a positive integer", before=False)]
_Precision = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Input(_Strict):
    name: str
    size: _Size
    layout: Literal["NCHW", "NTCHW"] = "NCHW"
    colour: Literal["RGB", "BGR"] = "RGB"
    mean: _Mean
    std: _Std
    resize: Literal["short_side_crop", "stretch"] = "short_side_crop"
    crop_scale: Annotated[float, _rule(lambda v: 0 < v <= 1, "a number in (0, 1]", before=False)] = 1.0


class _Output(_Strict):
    name: str


class _State(_Strict):
    input: str
    output: str
    shape: _Shape


class _Temporal(_Strict):
    shift: Literal["causal", "bidirectional", "none"] = "causal"
    fps: _PosFloat = 15.0
    frame_stride: _PosInt = 1
    clip_frames: _PosInt = 8


def _unique_labels(v: list[str]) -> list[str]:
    dup = sorted({x for x in v if v.count(x) > 1})
    if not v or dup:
        raise ValueError(f"expected unique label names, {', '.join(dup)} repeated" if dup
                         else "expected a non-empty list of label names")
    return v


class _Spec(_Strict):
    format: Literal[1] = 1
    kind: Literal["online", "clip"] = "online"
    name: str | None = None
    arch: str = "unknown"
    width: float | None = None
    labels: Annotated[list[str], AfterValidator(_unique_labels)]
    input: _Input
    output: _Output
    states: list[_State] | None = None
    temporal: _Temporal | None = None
    precision: _Precision | None = None
    files: Annotated[dict[_Precision, str], _rule(bool, "at least one precision -> graph file, e.g. {fp32: model.onnx}",
                                                 before=False)]
    provenance: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None


_SECTIONS: dict[str, type[BaseModel]] = {"input": _Input, "output": _Output, "states": _State, "temporal": _Temporal}
_TYPE_WORDS = {
    "string_type": "expected a string", "int_type": "expected an integer", "int_parsing": "expected an integer",
    "int_from_float": "expected an integer", "float_type": "expected a number", "float_parsing": "expected a number",
    "list_type": "expected a list", "dict_type": "expected a mapping", "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping", "bool_type": "expected true or false",
}


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        if p == "[key]":
            out += " (key)"
        elif isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(err: dict[str, Any]) -> str:
    loc, typ = _loc(err["loc"]), err["type"]
    if typ == "missing":
        return f"{loc}: required key missing"
    if typ == "extra_forbidden":
        model = _SECTIONS.get(str(err["loc"][0]), _Spec) if len(err["loc"]) > 1 else _Spec
        return f"{loc}: unknown key (allowed: {', '.join(model.model_fields)})"
    if typ == "literal_error":
        msg = f"expected {err['ctx']['expected']}"
    elif typ == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
    else:
        msg = _TYPE_WORDS.get(typ, err["msg"])
    return f"{loc}: {msg}, got {_short(err.get('input'))}"


# --- loading ------------------------------------------------------------------------------------------
def _resolve(ref: str | Path) -> Path:
    """``default``, a bundle folder or a model.yaml path -> the model.yaml path (which exists)."""
    if str(ref) == "default":
        import edge.models
        root = Path(edge.models.__file__).parent / "default"
        if not (root / "model.yaml").is_file():
            raise InputError(f"model 'default': the built-in bundle is missing ({root / 'model.yaml'} not found); "
                             "reinstall edge-tsm or give a bundle folder")
        return root / "model.yaml"
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "model.yaml").is_file():
            raise InputError(f"model {path}: no model.yaml in this folder (a bundle holds model.yaml + model.onnx)")
        return path / "model.yaml"
    if path.is_file():
        return path
    raise InputError(f"model {str(ref)!r}: no such bundle (expected 'default', a bundle folder or a model.yaml path)")


def load_bundle(ref: str | Path, *, validate: bool = True) -> Bundle:
    """Load the bundle ``ref`` ('default', a folder or a model.yaml path) and check it.

    With ``validate`` the graph of the bundle's own precision is checked against the yaml too.
    Raises:
        InputError: the folder, model.yaml or a listed graph file is missing or unreadable.
        ModelError: model.yaml is malformed or disagrees with the graph.
    """
    yaml_path = _resolve(ref)
    where = f"model.yaml {yaml_path}"
    try:
        raw = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: cannot read ({e})") from None
    except yaml.YAMLError as e:
        raise ModelError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: expected a mapping of keys (name, labels, input, ...), got {_short(raw)}")
    try:
        spec = _Spec.model_validate(raw)
    except ValidationError as e:
        raise ModelError(f"{where}: " + "; ".join(_describe(err) for err in e.errors())) from None
    bundle = _to_bundle(spec, yaml_path.parent.resolve(), where)
    for prec, name in bundle.files.items():
        if not (bundle.root / name).is_file():
            raise InputError(f"{where}: files.{prec}: {bundle.root / name} not found")
    if validate:
        validate_graph(bundle, bundle.precision)
    logger.debug("bundle %s (%s, %d labels, %d states) from %s", bundle.name, bundle.kind, len(bundle.labels),
                 len(bundle.states), bundle.root)
    return bundle


def _to_bundle(spec: _Spec, root: Path, where: str) -> Bundle:
    states = [StateSpec(s.input, s.output, tuple(s.shape)) for s in spec.states or []]
    files = dict(spec.files)
    precision = spec.precision or ("fp32" if "fp32" in files else next(iter(files)))
    problems = []
    if precision not in files:
        problems.append(f"precision: {precision!r} has no entry in files (files has: {', '.join(files)})")
    if spec.kind == "online" and spec.input.layout != "NCHW":
        problems.append(f"input.layout: kind online expects NCHW, got {spec.input.layout!r}")
    if spec.kind == "clip" and states:
        problems.append("states: kind clip takes no state tensors (the window is the input), "
                        f"got {len(states)}")
    names = [spec.input.name, spec.output.name] + [s.input for s in states] + [s.output for s in states]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"tensor names must differ (input, output, state inputs and outputs): "
                        f"{', '.join(dup)} repeated")
    if problems:
        raise ModelError(f"{where}: " + "; ".join(problems))
    i = spec.input
    t = spec.temporal or _Temporal()
    return Bundle(
        name=spec.name or root.name, kind=spec.kind, arch=spec.arch, labels=list(spec.labels),
        input=InputSpec(i.name, (i.size[0], i.size[1]), i.layout, i.colour, tuple(i.mean), tuple(i.std),
                        i.resize, float(i.crop_scale)),
        output_name=spec.output.name, states=states,
        temporal=TemporalSpec(t.shift, float(t.fps), int(t.frame_stride), int(t.clip_frames)),
        precision=precision, files=files, provenance=dict(spec.provenance or {}), root=root,
        width=spec.width, format=spec.format,
        quantization=dict(spec.quantization) if spec.quantization is not None else None)


# --- the graph against the yaml ---------------------------------------------------------------------------
Shape = tuple  # of int | None (None: a symbolic or unknown dimension)
_IO = dict[str, tuple[Shape | None, str]]


def _graph_io(path: Path) -> tuple[dict[str, tuple[Shape | None, str]], dict[str, tuple[Shape | None, str]]]:
    """Graph inputs (initializers excluded) and outputs: name -> (shape or None, element type)."""
    try:
        import onnx
    except ImportError:
        return _graph_io_from_engine(path)
    from google.protobuf.message import DecodeError
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(f"model.onnx {path}: not a valid ONNX file ({' '.join(str(e).split())})") from None
    except OSError as e:
        raise InputError(f"model.onnx {path}: cannot read ({e})") from None

    def info(vi: Any) -> tuple[Shape | None, str]:
        tt = vi.type.tensor_type
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower() if tt.elem_type else "unknown"
        dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
        if not tt.HasField("shape"):
            return None, dtype
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim), dtype

    inits = {t.name for t in model.graph.initializer}
    inputs = {vi.name: info(vi) for vi in model.graph.input if vi.name not in inits}
    outputs = {vi.name: info(vi) for vi in model.graph.output}
    return inputs, outputs


def _graph_io_from_engine(path: Path) -> tuple[_IO, _IO]:
    """Without the onnx package: ask ONNX Runtime for the graph's inputs and outputs."""
    try:
        import onnxruntime as ort

        from edge.backends.onnxruntime import ORT_ERRORS
    except ImportError:
        raise ModelError(f"model.onnx {path}: cannot check the graph: neither onnx nor onnxruntime is "
                         "installed (pip install onnx)") from None
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except ORT_ERRORS as e:
        raise ModelError(f"model.onnx {path}: not a valid ONNX file ({' '.join(str(e).split())})") from None

    def info(arg: Any) -> tuple[Shape | None, str]:
        dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(arg.type, arg.type)
        return tuple(d if isinstance(d, int) else None for d in arg.shape), dtype

    return {a.name: info(a) for a in sess.get_inputs()}, {a.name: info(a) for a in sess.get_outputs()}


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _shape_problem(what: str, key: str, want: Shape, got: Shape | None) -> str | None:
    if got is None:
        return None  # the graph does not say: nothing to compare
    if len(got) != len(want) or any(g is not None and g != w for g, w in zip(got, want, strict=False)):
        return f"{what} is {_fmt(got)} in the graph, {key} says {_fmt(want)}"
    return None


def validate_graph(bundle: Bundle, precision: str | None = None) -> None:
    """Check the graph of ``precision`` against model.yaml; name every disagreement in one line.

    Raises:
        InputError: the graph file is missing.
        ModelError: it is not ONNX, or its inputs/outputs differ from model.yaml.
    """
    path = bundle.graph_path(precision)
    if not path.is_file():
        raise InputError(f"model.onnx {path}: not found (model.yaml files.{precision or bundle.precision})")
    inputs, outputs = _graph_io(path)
    problems: list[str] = []
    h, w = bundle.input.size
    if bundle.kind == "clip":
        want_in: Shape = (1, bundle.temporal.clip_frames, 3, h, w)
        in_key = "model.yaml (input.size, temporal.clip_frames)"
    else:
        want_in, in_key = (1, 3, h, w), "model.yaml input.size"
    name = bundle.input.name
    if name not in inputs:
        problems.append(f"input {name!r} (input.name) is not a graph input "
                        f"(graph inputs: {', '.join(inputs) or 'none'})")
    else:
        problems.append(_shape_problem(f"input {name!r}", in_key, want_in, inputs[name][0]) or "")
        if inputs[name][1] not in ("float32", "unknown"):
            problems.append(f"input {name!r} is {inputs[name][1]} in the graph, the runtime feeds float32")
    for i, s in enumerate(bundle.states):
        for tname, table, side in ((s.input, inputs, "input"), (s.output, outputs, "output")):
            if tname not in table:
                problems.append(f"state {side} {tname!r} (states[{i}].{side}) is not a graph {side} "
                                f"(graph {side}s: {', '.join(table) or 'none'})")
            else:
                problems.append(_shape_problem(f"state {side} {tname!r}", f"states[{i}].shape", s.shape,
                                               table[tname][0]) or "")
    out = bundle.output_name
    if out not in outputs:
        problems.append(f"output {out!r} (output.name) is not a graph output (graph outputs: {', '.join(outputs)})")
    else:
        problems.append(_shape_problem(f"output {out!r}", f"labels ({len(bundle.labels)})",
                                       (1, len(bundle.labels)), outputs[out][0]) or "")
    fed = {name} | {s.input for s in bundle.states}
    for extra in inputs:
        if extra not in fed:
            problems.append(f"graph input {extra!r} is fed by nothing in model.yaml (neither input.name nor a "
                            "states[].input)")
    problems = [p for p in problems if p]
    if problems:
        raise ModelError(f"model.onnx {path}: " + "; ".join(problems))
