"""What the config and the model bundle share: strict pydantic models and one formatter of their errors.

Every validation error a user sees is one line: ``<where>: key.path: what is wrong, got VALUE``, with
the allowed keys for an unknown one. :func:`format_errors` makes it for any root model (the daemon's
config, a bundle's model.yaml), so both say things the same way.
"""
from __future__ import annotations

import re
import reprlib
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

MAX_STR = 16_384  # characters in any string value: a path is at most 4096 bytes, a URL or a GStreamer pipeline a few kB


def _longest(v: Any) -> int:
    """The length of the longest string in ``v``: itself, or the items of a list, or the keys and values of a
    mapping (a nested model's own fields are checked by that model, so the error names the exact key)."""
    if isinstance(v, str):
        return len(v)
    items = [*v.keys(), *v.values()] if isinstance(v, dict) else v if isinstance(v, (list, tuple)) else ()
    return max((len(x) for x in items if isinstance(x, str)), default=0)


class Strict(BaseModel):
    """Unknown keys are errors; numbers are not silently taken from strings (``fps: "30"``); no inf or nan;
    no string over :data:`MAX_STR` characters."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _not_huge(cls, data: Any) -> Any:
        # Not str_max_length: pydantic's constrained strings refuse lone surrogates, which is how Python holds
        # a file name whose bytes are not UTF-8 (legal on Linux, and a path a config may name).
        for key, v in data.items() if isinstance(data, dict) else ():
            n = _longest(v)
            if n > MAX_STR:
                raise PydanticCustomError("string_too_long", "too long",
                                          {"max_length": MAX_STR, "given": n, "key": str(key)[:60], "value": short(v)})
        return data

DAY_S = 86_400
# Every float of a config or model.yaml is finite (Strict); one that becomes a time is also bounded, so no
# value reaches a timer, a sleep or a backoff that overflows it (1e300 s) or that means "never" by accident.
Seconds = Annotated[float, Field(gt=0, le=DAY_S, allow_inf_nan=False)]
NonNegSeconds = Annotated[float, Field(ge=0, le=DAY_S, allow_inf_nan=False)]
PosFloat = Seconds          # the older names, used for durations only (the sinks' timeouts among them)
NonNegFloat = NonNegSeconds
Prob = Annotated[float, Field(ge=0, le=1)]
QueueSize = Annotated[int, Field(ge=1, le=1_000_000)]
Label = Annotated[str, Field(min_length=1, max_length=128)]  # a model's label named in a config
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ReconnectConfig(Strict):
    """Backoff between reopen attempts of a camera or a sink (doubling from initial_s up to max_s, jittered)."""

    initial_s: Annotated[float, Field(gt=0, le=3600)] = Field(0.5, description="first wait before reopening "
                                                                                "(seconds)")
    max_s: Annotated[float, Field(gt=0, le=86400)] = Field(30.0, description="longest wait between attempts "
                                                                              "(seconds)")

    @model_validator(mode="after")
    def _order(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


# --- one-line errors ----------------------------------------------------------------------------------
_TYPE_WORDS = {
    "string_type": "expected a string", "int_type": "expected an integer", "int_parsing": "expected an integer",
    "int_from_float": "expected an integer", "float_type": "expected a number", "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "list_type": "expected a list", "dict_type": "expected a mapping", "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping", "bool_type": "expected true or false",
    "bool_parsing": "expected true or false", "union_tag_not_found": "needs a 'type' key",
}
_UNION = (Union, types.UnionType)


class _Shown(str):
    """A value already cut by :func:`short`: shown as it is."""

    def __repr__(self) -> str:
        return str(self)


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters; a huge value (a 50 MB string, a list of a million
    items, deep nesting) is never repr'd in full (reprlib), so no error line grows with the input."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlevel = 3


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in _UNION:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _flatten(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in _UNION:
        return [x for a in typing.get_args(tp) for x in _flatten(a)]
    return [tp]


def models_and_fields(root: type[BaseModel], kinds: tuple[type, ...] = (float, int)) \
        -> tuple[list[type[BaseModel]], list[tuple[type[BaseModel], str, type]]]:
    """Every model reachable from ``root`` (nested, in lists, dicts and unions), and every field of those
    that holds a value of one of ``kinds``: (model, field name, kind). Tests use it to hold each number
    finite and bounded, each string short in messages, and each model strict."""
    models: list[type[BaseModel]] = []
    numbers: list[tuple[type[BaseModel], str, type]] = []

    def leaves(tp: Any) -> list[Any]:
        out = []
        for a in _flatten(tp):
            if typing.get_origin(a) in (list, dict, tuple, set):
                out += [x for arg in typing.get_args(a) if arg is not Ellipsis for x in leaves(arg)]
            else:
                out.append(a)
        return out

    def visit(model: type[BaseModel]) -> None:
        if model in models:
            return
        models.append(model)
        for name, f in model.model_fields.items():
            for leaf in leaves(f.annotation):
                if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                    visit(leaf)
                elif leaf in kinds and (model, name, leaf) not in numbers:
                    numbers.append((model, name, leaf))
    visit(root)
    return models, numbers


def _tagged(tp: Any, tag: str) -> type[BaseModel] | None:
    """The member of a tagged union (``type: log``) whose tag is ``tag``."""
    for a in _flatten(tp):
        if isinstance(a, type) and issubclass(a, BaseModel) and "type" in a.model_fields \
                and tag in typing.get_args(a.model_fields["type"].annotation):
            return a
    return None


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, list[bool]]:
    """The type at ``loc`` under ``root``, and for each part whether it is a union's tag (not a key)."""
    model: Any = root
    tags = []
    for part in loc:
        model = _unwrap(model)
        is_tag = False
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(str(part))
            model = field.annotation if field is not None else None
        elif isinstance(part, int):
            args = typing.get_args(model)
            model = args[0] if args else None
        elif part == "[key]":
            model = None
        elif isinstance(part, str):
            member = _tagged(model, part)
            if member is not None:
                model, is_tag = member, True
            elif typing.get_origin(model) is dict:
                model = typing.get_args(model)[1]
            else:  # a plain union's member label ('str', 'constrained-int'): not a key, not shown
                model, is_tag = None, typing.get_origin(model) in _UNION
        tags.append(is_tag)
        if model is None:
            tags += [False] * (len(loc) - len(tags))
            break
    return _unwrap(model), tags


def _loc(root: type[BaseModel], parts: tuple[Any, ...]) -> str:
    _model, tags = _walk(root, parts)
    out = ""
    for p, is_tag in zip(parts, tags, strict=False):
        if is_tag:
            continue  # the union member's tag, not a key
        if p == "[key]":
            out += " (key)"
        elif isinstance(p, int):
            out += f"[{p}]"
        else:
            # a key with odd characters: quoted; a long one cut
            p = str(p) if len(str(p)) <= 60 and re.fullmatch(r"[\w.-]+", str(p)) else short(p)
            out += f".{p}" if out else p
    return out


def describe_error(err: Any, root: type[BaseModel]) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) -> ``key.path: what is wrong, got VALUE``."""
    if "key" in err.get("ctx", {}):  # raised by a model for one of its keys (Strict._not_huge)
        err = {**err, "loc": (*err["loc"], err["ctx"]["key"]), "input": _Shown(err["ctx"]["value"])}
    loc, typ = _loc(root, err["loc"]), err["type"]
    if typ == "missing":
        return f"{loc}: required key missing"
    if typ == "extra_forbidden":
        model, _ = _walk(root, err["loc"][:-1])
        allowed = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else None
        return f"{loc}: unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if typ == "union_tag_invalid":
        return f"{loc}.type: expected {err['ctx']['expected_tags']}, got {short(err['ctx']['tag'])}"
    ctx = err.get("ctx", {})
    if typ == "literal_error":
        msg = f"expected {ctx['expected']}"
    elif typ == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
    elif typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
                 "less_than_equal": "<= {le}"}
        msg = "expected a number " + words[typ].format(**{k: f"{v:g}" if isinstance(v, float) else v
                                                          for k, v in ctx.items()})
    elif typ == "string_pattern_mismatch":
        msg = "expected letters, digits, '_', '.', '-' (up to 64, starting with a letter or digit)" \
            if ctx["pattern"] == NAME else f"expected to match {ctx['pattern']}"
    elif typ == "too_short":
        msg = f"expected at least {ctx['min_length']} item(s)"
    elif typ == "string_too_long":
        given = ctx.get("given", len(err.get("input") or ""))
        msg = f"expected at most {ctx['max_length']} characters ({given} given)"
    elif typ == "too_long":
        msg = f"expected at most {ctx['max_length']} items"
    else:
        msg = _TYPE_WORDS.get(typ, str(err["msg"]))
    if not loc:
        return msg
    return f"{loc}: {msg}, got {short(err.get('input'))}"


def format_errors(e: ValidationError, root: type[BaseModel], where: str, limit: int = 1) -> str:
    """``<where>: <first error>[; <second> ...]``: up to ``limit`` errors, one line."""
    errs = e.errors()
    text = "; ".join(describe_error(err, root) for err in errs[:limit])
    more = len(errs) - limit
    return f"{where}: {text}" + (f" (and {more} more)" if more > 0 and limit > 1 else "")
