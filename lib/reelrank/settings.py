"""The building blocks of reelrank's config: frozen pydantic v2 dataclasses that forbid unknown keys.

A component declares its own section beside it as ``@pydantic.dataclasses.dataclass(frozen=True, config=SECTION)``
with the strict field types here
(``PositiveInt``, ``Fraction``, ``Identifier`` ...); :func:`validate` builds a whole config from TOML data and
turns pydantic's first error into one :class:`ConfigError` line naming the file and the dotted key, as
``FILE: KEY must be > 0, got -1``. Sections stay ``dataclasses`` (``dataclasses.replace`` re-validates), and
scalar types are strict, so TOML's ``true`` is no int and ``"5"`` no number (LensKit's component configs are
the model). Imports no Spark: the command line's ``--help`` loads the config.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError

from reelrank.metric_keys import RankingMetric, parse_metric_key


class ConfigError(ValueError):
    """A configuration file is missing, malformed, or holds an unknown key, a wrong type or a value out of range."""


SECTION = ConfigDict(extra="forbid")
"""Every section: unknown keys are errors. Strictness sits on the scalar types below, not here: a strict
pydantic dataclass accepts only instances of its nested sections, never the TOML tables they come from."""

T = TypeVar("T")


class _Expect:
    """What a valid value is, completing "KEY must be ...", kept on a field's metadata for the error line."""

    def __init__(self, text: str) -> None:
        self.text = text


def _check(test: Callable[[Any], bool], expect: str) -> tuple[AfterValidator, _Expect]:
    def run(value: Any) -> Any:
        if not test(value):
            raise ValueError(expect)
        return value

    return AfterValidator(run), _Expect(expect)


def _is_metric_key(key: str) -> bool:
    try:
        parse_metric_key(key)
        return True
    except ValueError:
        return False


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
"""Strict floats still take TOML integers (``lam = 500``), as a float."""
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
Fraction = Annotated[float, Strict(), Field(ge=0, le=1)]
"""In [0, 1]."""
Dropout = Annotated[float, Strict(), Field(ge=0, lt=1)]
"""In [0, 1)."""
Identifier = Annotated[str, Strict(), *_check(lambda v: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", v) is not None,
                                              "an SQL identifier (a letter or _, then letters, digits or _; "
                                              "at most 128)")]
"""Names that go into SQL text (the database), checked before any SQL is built."""
MemorySize = Annotated[str, Strict(), *_check(lambda v: re.fullmatch(r"[1-9][0-9]*[kmgtKMGT]?", v) is not None,
                                              "a JVM memory size, a positive number with an optional unit k, m, g "
                                              "or t (e.g. 4g)")]
MetricKey = Annotated[str, Strict(), *_check(_is_metric_key, "rmse, mae or NAME@K (NAME one of "
                                             + ", ".join(typing.get_args(RankingMetric)) + "; K a positive integer)")]

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_TYPE_NAMES = {"int_type": "int", "float_type": "float", "bool_type": "bool", "string_type": "str",
               "int_from_float": "int"}
_TABLES = {"dataclass_type", "dataclass_exact_type", "model_type", "dict_type"}


def validate(cls: type[T], data: Any, where: str, prefix: tuple[str, ...] = ()) -> T:
    """``cls`` (a section) built from TOML ``data``, or a :class:`ConfigError` for its first problem; ``prefix`` is
    where ``data`` sits in the whole config (``("candidates",)``), for the key the error names."""
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {describe(cls, e.errors(include_url=False)[0], prefix)}") from None


def describe(cls: type, error: Any, prefix: tuple[str, ...] = ()) -> str:
    """One pydantic error as "KEY must be ..., got VALUE" in the words the config's users know."""
    loc, kind, value, ctx = error["loc"], error["type"], error.get("input"), error.get("ctx") or {}
    key = _dotted(prefix + tuple(loc))
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = ", ".join(sorted(f.name for f in dataclasses.fields(_section_at(cls, loc[:-1]))))
        return f"unknown key {key} (known: {known})"
    if kind == "missing":
        return f"missing key {key}"
    if kind in _TABLES:
        return f"[{key}] must be a table, got {type(value).__name__}"
    if kind == "literal_error":
        allowed = ", ".join(repr(a) for a in _literal_choices(cls, loc))
        return f"{key} must be one of {allowed}, got {value!r}"
    if kind in _TYPE_NAMES:
        return f"{key} must be {_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}"
    if kind == "list_type":
        return f"{key} must be a list, got {value!r}"
    if any(b in ctx for b in _BOUNDS):
        meta = _field_bounds(cls, loc)
        if _strip(_field_type(cls, loc)) is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # as the field holds it: TOML's 1 in a float field is 1.0
        if meta.get("ge") == 0 and meta.get("le") == 1:
            return f"{key} must be in [0, 1], got {value!r}"
        if meta.get("ge") == 0 and meta.get("lt") == 1:
            return f"{key} must be in [0, 1), got {value!r}"
        return f"{key} must be " + " and ".join(f"{_BOUNDS[b]} {meta[b]:g}" for b in _BOUNDS if b in meta) + \
            f", got {value!r}"
    if kind == "value_error":
        return f"{key} must be {str(ctx.get('error', error['msg']))}, got {value!r}"
    return f"{key}: {error['msg']}, got {value!r}"


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _section_at(cls: type, loc: tuple) -> type:
    """The section class at ``loc`` (field names from the top section)."""
    for part in loc:
        if isinstance(part, int):
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        cls = _strip(hints[part])
    return cls


def _field_type(cls: type, loc: tuple) -> Any:
    names = [p for p in loc if not isinstance(p, int)]
    owner = _section_at(cls, tuple(names[:-1]))
    tp = typing.get_type_hints(owner, include_extras=True)[names[-1]]
    if isinstance(loc[-1], int) or (len(loc) > 1 and isinstance(loc[-2], int)):
        tp = _strip(tp)
        args = typing.get_args(tp)
        tp = args[-1] if args else tp
    elif typing.get_origin(_strip(tp)) is dict:
        tp = typing.get_args(_strip(tp))[-1]
    return tp


def _literal_choices(cls: type, loc: tuple) -> tuple:
    tp = _strip(_field_type(cls, loc))
    if typing.get_origin(tp) is list:
        tp = _strip(typing.get_args(tp)[0])
    return typing.get_args(tp)


def _field_bounds(cls: type, loc: tuple) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tp = _field_type(cls, loc)
    if typing.get_origin(_strip(tp)) is list:
        tp = typing.get_args(_strip(tp))[0]
    for meta in typing.get_args(tp)[1:] if typing.get_origin(tp) is Annotated else ():
        for m in getattr(meta, "metadata", [meta]):
            for b in ("gt", "ge", "lt", "le"):
                if getattr(m, b, None) is not None:
                    out[b] = getattr(m, b)
    return out


def _strip(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
