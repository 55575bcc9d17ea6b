"""What the config and the model bundle share: strict pydantic models and one formatter of their errors.

Every validation error a user sees is one line: ``<where>: key.path: what is wrong, got VALUE``, with
the allowed keys for an unknown one. :func:`format_errors` makes it for any root model (the daemon's
config, a bundle's model.yaml), so both say things the same way.
"""
from __future__ import annotations

import re
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Strict(BaseModel):
    """Unknown keys are errors; numbers are not silently taken from strings (``fps: "30"``); no inf or nan."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Prob = Annotated[float, Field(ge=0, le=1)]
QueueSize = Annotated[int, Field(ge=1, le=1_000_000)]
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


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
            else:
                model = None
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
            p = str(p) if re.fullmatch(r"[\w.-]+", str(p)) else repr(p)  # a key with odd characters: quoted
            out += f".{p}" if out else p
    return out


def describe_error(err: Any, root: type[BaseModel]) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) -> ``key.path: what is wrong, got VALUE``."""
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
        msg = "expected a number " + words[typ].format(**ctx)
    elif typ == "string_pattern_mismatch":
        msg = "expected letters, digits, '_', '.', '-' (up to 64, starting with a letter or digit)" \
            if ctx["pattern"] == NAME else f"expected to match {ctx['pattern']}"
    elif typ == "too_short":
        msg = f"expected at least {ctx['min_length']} item(s)"
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
