"""Model bundles: ``model.yaml`` + ONNX graph(s), loaded, type-checked and checked against the graph.

See ``docs/bundle.md`` for the contract. :func:`load_bundle` reads and validates ``model.yaml`` (unknown
keys are errors) and, by default, :func:`validate_graph` checks the graph's inputs and outputs against
it, naming everything that disagrees in one line.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from edge.errors import InputError, ModelError
from edge.paths import probe, show_path, usable_name
from edge.schema import Strict, format_errors, short

logger = logging.getLogger(__name__)

MAX_ERRORS = 10  # model.yaml errors named in one message


# --- value rules (each says what is allowed) -------------------------------------------------------
def _rule(ok: Callable[[Any], bool], what: str, before: bool = True, to: Callable[[Any], Any] | None = None) -> Any:
    """A pydantic validator that raises ``expected <what>`` unless ``ok(value)``; ``to`` converts what passed."""
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"expected {what}")
        return to(value) if to is not None else value
    return BeforeValidator(check) if before else AfterValidator(check)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _ints(v: Any, n: int | None = None) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and (n is None or len(v) == n)
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v))


def _triple(v: Any, positive: bool) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_number(x) and (x > 0 or not positive) for x in v)


def _none_is(empty: Any) -> Any:
    """``key: null`` (or an empty key) in model.yaml means the default."""
    return BeforeValidator(lambda v: empty() if v is None else v)


_Size = Annotated[tuple[int, int], _rule(lambda v: _ints(v, 2), "[H, W] of positive ints", to=tuple)]
_Shape = Annotated[tuple[int, ...], _rule(_ints, "a list of positive ints", to=tuple)]
_Mean = Annotated[tuple[float, float, float], _rule(lambda v: _triple(v, False),
                                                    "3 numbers (one per input channel, 0..1 scale)", to=tuple)]
_Std = Annotated[tuple[float, float, float], _rule(lambda v: _triple(v, True),
                                                   "3 positive numbers (one per input channel, 0..1 scale)", to=tuple)]
_PosFloat = Annotated[float, _rule(lambda v: v > 0, "a positive number", before=False)]
_PosInt = Annotated[int, _rule(lambda v: v > 0, "a positive integer", before=False)]
_Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


def _unique_labels(v: list[str]) -> list[str]:
    dup = sorted({x for x in v if v.count(x) > 1})
    if not v or dup:
        raise ValueError(f"expected unique label names, {', '.join(dup)} repeated" if dup
                         else "expected a non-empty list of label names")
    return v


# --- the bundle: one pydantic model family, validated from model.yaml and used as is by the runtime ------
class InputSpec(Strict):
    """How to turn a camera frame into the graph input (see :class:`edge.preprocess.Preprocessor`)."""

    name: str
    size: _Size = Field(description="[H, W] of the graph input")
    layout: Literal["NCHW", "NTCHW"] = "NCHW"
    colour: Literal["RGB", "BGR"] = Field("RGB", description="channel order the graph expects")
    mean: _Mean
    std: _Std
    resize: Literal["short_side_crop", "stretch"] = "short_side_crop"
    crop_scale: Annotated[float, _rule(lambda v: 0 < v <= 1, "a number in (0, 1]", before=False)] = 1.0


class OutputSpec(Strict):
    name: str


class StateSpec(Strict):
    """One shifted block's state: fed as ``input``, read back from ``output``."""

    input: str
    output: str
    shape: _Shape


class TemporalSpec(Strict):
    shift: Literal["causal", "bidirectional", "none"] = "causal"
    fps: _PosFloat = Field(15.0, description="the frame rate the model was trained at")
    frame_stride: _PosInt = 1
    clip_frames: _PosInt = 8


class Bundle(Strict):
    """A loaded, validated bundle: model.yaml's keys, plus ``root`` (its folder) once loaded.

    Built by :func:`load_bundle`; a changed copy is ``bundle.model_copy(update={...})`` (the folder goes
    with it). ``name`` defaults to the folder's name, ``precision`` to fp32 when files has it (else the
    first file's).
    """

    format: Literal[1] = 1
    kind: Literal["online", "clip"] = "online"
    name: str
    arch: str = "unknown"
    width: float | None = None
    labels: Annotated[list[str], AfterValidator(_unique_labels)]
    input: InputSpec
    output: OutputSpec
    states: Annotated[list[StateSpec], _none_is(list)] = Field(default_factory=list)
    temporal: Annotated[TemporalSpec, _none_is(dict)] = Field(default_factory=TemporalSpec)
    precision: _Precision
    files: Annotated[dict[_Precision, str], _rule(bool, "at least one precision -> graph file, e.g. {fp32: model.onnx}",
                                                 before=False)]
    provenance: Annotated[dict[str, Any], _none_is(dict)] = Field(default_factory=dict)
    quantization: dict[str, Any] | None = Field(None, description="how files.int8 was made (edge-tsm quantize)")
    _root: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """The defaults that depend on other keys or on the folder: name and precision."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        root = (info.context or {}).get("root")
        if data.get("name") is None and root is not None:
            data["name"] = Path(root).name
        if data.get("precision") is None:  # without usable files that key's own error is the one to show
            files = data.get("files")
            known = [k for k in files if k in PRECISIONS] if isinstance(files, dict) else []
            data["precision"] = known[0] if known and "fp32" not in known else "fp32"
        return data

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Bundle:
        problems = []
        if self.precision not in self.files:
            problems.append(f"precision: {self.precision!r} has no entry in files (files has: {', '.join(self.files)})")
        if self.kind == "online" and self.input.layout != "NCHW":
            problems.append(f"input.layout: kind online expects NCHW, got {self.input.layout!r}")
        if self.kind == "clip" and self.states:
            problems.append("states: kind clip takes no state tensors (the window is the input), "
                            f"got {len(self.states)}")
        names = [self.input.name, self.output.name] + [s.input for s in self.states] + [s.output for s in self.states]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"tensor names must differ (input, output, state inputs and outputs): "
                            f"{', '.join(dup)} repeated")
        if problems:
            raise ValueError("; ".join(problems))
        root = (info.context or {}).get("root")
        if root is not None:
            self._root = Path(root)
        return self

    @property
    def root(self) -> Path:
        """The bundle's folder (graph file names in ``files`` are relative to it).

        Raises:
            ModelError: a bundle validated without a folder (not from :func:`load_bundle`).
        """
        if self._root is None:
            raise ModelError(f"bundle {self.name}: has no folder (not loaded with load_bundle)")
        return self._root

    @property
    def output_name(self) -> str:
        return self.output.name

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

    @property
    def synth_generator(self) -> int:
        """The synthetic generator the bundle was trained on (its held-out set, calibration set and INT8 sample
        come from the same one): ``provenance.generator`` when training recorded it, else 4 (every bundle made
        before generator 5)."""
        prov = self.provenance or {}
        value = prov.get("generator", (prov.get("synth") or {}).get("generator", 4))
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 4


# --- loading ------------------------------------------------------------------------------------------
def default_root() -> Path | None:
    """The built-in default bundle's folder (``default/`` in the edge.models package), found without
    importing that package (it is the toolchain's); None when edge.models is not installed."""
    spec = importlib.util.find_spec("edge.models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "default"


def _resolve(ref: str | Path) -> Path:
    """``default``, a bundle folder or a model.yaml path -> the model.yaml path (which exists)."""
    if str(ref) == "default":
        root = default_root()
        if root is None or not (root / "model.yaml").is_file():
            where = "edge.models is not installed" if root is None else f"{root / 'model.yaml'} not found"
            raise InputError(f"model 'default': the built-in bundle is missing ({where}); "
                             "reinstall edge-tsm or give a bundle folder")
        return root / "model.yaml"
    path = Path(ref).expanduser()
    why = usable_name(path) or probe(Path.exists, path) or probe(Path.exists, path / "model.yaml")
    if why is not None:
        raise InputError(f"model {show_path(ref)}: cannot be read ({why})")
    if path.is_dir():
        if not (path / "model.yaml").is_file():
            raise InputError(f"model {show_path(path)}: no model.yaml in this folder (a bundle holds model.yaml + "
                             "model.onnx)")
        return path / "model.yaml"
    if path.is_file():
        return path
    raise InputError(f"model {show_path(ref)!r}: no such bundle (expected 'default', a bundle folder or a model.yaml "
                     "path)")


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
        raise ModelError(f"{where}: expected a mapping of keys (name, labels, input, ...), got {short(raw)}")
    try:
        bundle = Bundle.model_validate(raw, context={"root": yaml_path.parent.resolve()})
    except ValidationError as e:
        raise ModelError(format_errors(e, Bundle, where, limit=MAX_ERRORS)) from None
    for prec, name in bundle.files.items():
        if not (bundle.root / name).is_file():
            raise InputError(f"{where}: files.{prec}: {bundle.root / name} not found")
    if validate:
        validate_graph(bundle, bundle.precision)
    logger.debug("bundle %s (%s, %d labels, %d states) from %s", bundle.name, bundle.kind, len(bundle.labels),
                 len(bundle.states), bundle.root)
    return bundle


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
