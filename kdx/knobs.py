"""Declared types and ranges of settings ("knobs"), checked before a trial does any work.

A component declares its knobs where they are defined: in its constructor's signature, with the
aliases below (`alpha: Weight = 0.5`, `temperature: Positive = 2.0`, `norm: Literal["l2", "sign"]`),
or in a table for config groups that have no constructor (kdx/settings.py). `problem(value, kind)`
says what is wrong with one value, in words that name the valid range; the caller adds the key.
"""

import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from kdx.errors import KdxError


@dataclass(frozen=True)
class Range:
    """low <= value <= high (`low_open`/`high_open`: strict); None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        low, high = (f"{b}" if isinstance(b, int) else f"{b:g}" for b in (self.low, self.high))
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


# The common kinds of knob.
Positive = Annotated[float, Range(0, low_open=True)]           # temperatures, learning rates, step sizes
NonNegative = Annotated[float, Range(0)]                       # margins, weights of added terms, decay
Weight = Annotated[float, Range(0, 1)]                         # a mixing weight: w·A + (1-w)·B
Fraction = Annotated[float, Range(0, 1)]                       # a share of something (rates, probabilities)
OpenFraction = Annotated[float, Range(0, 1, low_open=True, high_open=True)]
Probability = Annotated[float, Range(0, 1, low_open=True)]        # a rate that must not be 0 (a mask rate)
Count = Annotated[int, Range(1)]                               # batch sizes, epochs, layers, steps
NonNegativeInt = Annotated[int, Range(0)]
Seed = Annotated[int, Range(0, 2**32 - 1)]
Limit = Annotated[int, Range(-1)]                              # Lightning's limits: -1 (or None) = no limit


def _unwrap(kind):
    """(base type, range or None) of an Annotated kind."""
    if typing.get_origin(kind) is Annotated:
        base, *extras = typing.get_args(kind)
        return base, next((e for e in extras if isinstance(e, Range)), None)
    return kind, None


def describe(kind) -> str:
    """A kind in words: "a number > 0", "one of ['l2', 'sign']", "an integer >= 1 or null"."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        words = " or ".join(describe(a) for a in options)
        return words + (" or null" if len(options) < len(typing.get_args(kind)) else "")
    if origin is Literal:
        return f"one of {list(typing.get_args(kind))}"
    base, valid = _unwrap(kind)
    name = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
            list: "a list", tuple: "a list"}.get(typing.get_origin(base) or base, str(base))
    return f"{name} {valid}" if valid else name


def problem(value, kind) -> str | None:
    """None when `value` is a valid `kind`, else what the valid values are."""
    return None if _fits(value, kind) else describe(kind)


def _fits(value, kind) -> bool:
    if kind is Any or kind is inspect.Parameter.empty or kind is object:
        return True
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(kind))
    if kind is type(None) or kind is None:
        return value is None
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(kind))
    base, valid = _unwrap(kind)
    container = typing.get_origin(base)
    if container in (list, tuple, typing.Sequence) or base in (list, tuple):
        items = typing.get_args(base)
        return isinstance(value, (list, tuple)) and all(_fits(v, items[0]) for v in value) if items \
            else isinstance(value, (list, tuple))
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:   # an integer is a fine number (`method.temperature=2`); nan/inf are not
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif base is str:
        ok = isinstance(value, str)
    elif base is dict:
        ok = isinstance(value, dict)
    elif isinstance(base, type):
        ok = isinstance(value, base)
    else:
        return True   # a kind this checker does not read (a callable's own annotation): no claim
    return ok and (valid is None or valid.contains(value))


def closest(key: str, valid) -> str | None:
    """The valid key a typo most likely meant (`alpah` → `alpha`), if any is close."""
    import difflib

    match = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_key_fix(key: str, valid) -> str:
    """The fix for an unknown key: the closest valid one, then the full list."""
    valid = [v for v in map(str, valid) if not v.startswith("_")]
    guess = closest(key.rpartition(".")[2], valid)
    listing = f"valid keys: {sorted(valid)}"
    return f"did you mean {key.rpartition('.')[0] + '.' if '.' in key else ''}{guess}? ({listing})" \
        if guess else listing


def check_value(key: str, value, kind, default=inspect.Parameter.empty) -> None:
    """A KdxError naming the key, the value, the valid range and the fix when `value` is not a `kind`."""
    if problem(value, kind):
        example = "" if default is inspect.Parameter.empty else f" (its default is {default!r})"
        raise KdxError(f"{key}={value!r} is invalid: {key} must be {describe(kind)}",
                       f"set {key} to {describe(kind)}{example}")
