"""Typed values, coerced and checked once at the edge (CLI ``--set``, config files, profiles, Python API).

Annotated types for the pydantic models of :mod:`kdrepro.config`, the loss terms and the curriculum parts:

* integers are integers: ``true`` is not 1, ``30.0`` is not 30, ``"30"`` (a string from a JSON file) is;
* floats accept integers and numeric strings (YAML 1.1 reads ``1e-3`` as a *string*: ``--set lr=1e-3``
  is the most common thing a user types), never booleans, never NaN or infinity;
* booleans are booleans: ``true``/``false`` (and YAML's ``yes``/``no``, ``on``/``off``), never ``"maybe"``
  or ``1``.

:func:`explain` turns a pydantic ``ValidationError`` into one line that names the key, the value and
what is allowed.
"""
from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationError



class ConfigError(ValueError):
    """A bad configuration key or value. The message is one line naming the key."""


_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v)
    raise ValueError("must be an integer")


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(v, (int, float)):
        try:
            out = float(v)
        except OverflowError:  # an integer beyond float's range
            raise ValueError("must be a finite number") from None
    elif isinstance(v, str):
        try:
            out = float(v)
        except ValueError:
            raise ValueError("must be a number") from None
    else:
        raise ValueError("must be a number")
    if not math.isfinite(out):
        raise ValueError("must be a finite number")
    return out


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    raise ValueError("must be true or false")


def _check(cond, msg: str):
    def check(v):
        if not cond(v):
            raise ValueError(msg)
        return v
    return check


Int = Annotated[int, BeforeValidator(_int)]
PositiveInt = Annotated[int, BeforeValidator(_int), AfterValidator(_check(lambda v: v >= 1, "must be an integer >= 1"))]
NonNegativeInt = Annotated[int, BeforeValidator(_int), AfterValidator(_check(lambda v: v >= 0, "must be an integer >= 0"))]
#: a seed torch accepts (``torch.manual_seed`` takes 64-bit values)
Seed = Annotated[int, BeforeValidator(_int),
                 AfterValidator(_check(lambda v: -(2**63) <= v < 2**64, "must be an integer in [-2^63, 2^64)"))]
#: torch threads: at least 1, at most :data:`MAX_THREADS` (far more threads than cores only thrashes, and
#: an absurd count crashes the OpenMP runtime)
MAX_THREADS = 1024
Threads = Annotated[int, BeforeValidator(_int),
                    AfterValidator(_check(lambda v: 1 <= v <= MAX_THREADS, f"must be an integer in 1..{MAX_THREADS}"))]
Float = Annotated[float, BeforeValidator(_float)]
PositiveFloat = Annotated[float, BeforeValidator(_float), AfterValidator(_check(lambda v: v > 0, "must be > 0"))]
NonNegativeFloat = Annotated[float, BeforeValidator(_float), AfterValidator(_check(lambda v: v >= 0, "must be >= 0"))]
Fraction = Annotated[float, BeforeValidator(_float), AfterValidator(_check(lambda v: 0 < v <= 1, "must be in (0, 1]"))]
Bool = Annotated[bool, BeforeValidator(_bool)]
#: a distillation temperature (KD, DKD): softmax(z / T) is one-hot below 0.1 and uniform above 100
Temperature = Annotated[float, BeforeValidator(_float),
                        AfterValidator(_check(lambda v: 0.1 <= v <= 100, "must be in [0.1, 100]"))]
#: a loss term's weight: 0 (off) up to 100,000 (the largest published weight is PKT's 30,000)
Weight = Annotated[float, BeforeValidator(_float),
                   AfterValidator(_check(lambda v: 0 <= v <= 100_000, "must be in [0, 100000]"))]


#: how many characters of a value an error message shows
SHORT = 60


def short(value: Any, limit: int = SHORT) -> str:
    """``repr(value)`` cut to ``limit`` characters (with ``...``): a value printed in a message is never long."""
    return cut(repr(value), limit)


def cut(text: str, limit: int = SHORT) -> str:
    """``text`` cut to ``limit`` characters (with ``...``)."""
    return text if len(text) <= limit else text[:limit] + "..."


def _loc(loc: tuple, prefix: str) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith(("function-", "json-or-python")))]
    return ".".join(([prefix] if prefix else []) + parts)


def explain(err: ValidationError, prefix: str = "", data: Any = None) -> str:
    """One line for the first error of ``err``: ``key=value: what is allowed``."""
    e = err.errors(include_url=False)[0]
    key = _loc(e["loc"], prefix)
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if e["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if e["type"] == "missing":
        return f"{key}: missing (required)"
    value = e.get("input")
    kind = e["type"]
    shown = short(value)
    if kind == "dict_type":
        msg = "must be a mapping"
    elif kind in ("list_type", "tuple_type"):
        msg = "must be a list"
    elif kind == "string_type":
        msg = "must be a string"
    elif kind == "literal_error":
        msg = "choose one of " + msg.removeprefix("Input should be ")
    return f"{key}={shown}: {msg}"


def typed_options(model: type, options: dict, prefix: str, owner: str) -> dict:
    """``options`` (the given keys only) coerced by the pydantic ``model`` of a component's options: one
    ``ValueError`` line naming an unknown option (``<prefix>.<key>: <owner> takes no option ...; it accepts:
    ...``) or a bad value (:func:`explain`)."""
    from .registry import nearest

    accepted = list(model.model_fields)
    for key in options:
        if key not in accepted:
            raise ValueError(f"{prefix}.{key}: {owner} takes no option {key!r}; it accepts: "
                             f"{', '.join(accepted) or 'none'}{nearest(key, accepted)}")
    try:
        typed = model(**options)
    except ValidationError as err:
        raise ValueError(explain(err, prefix=prefix)) from None
    return {key: getattr(typed, key) for key in options}
