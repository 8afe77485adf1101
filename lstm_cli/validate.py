"""One validation vocabulary: constraints declared as data and the one error sentence.

Config keys, optimizer and model arguments, data sizes: every value a user gives is
checked by one of the constraints below, and every failure says it the same way
(scikit-learn's wording)::

    The 'hidden_size' parameter must be an int in the range [1, inf). Got 0 instead.

``check(name, value, constraint, owner=...)`` returns the converted value or raises that
sentence as ``LstmCliError`` (or the error class given); ``config`` adds the file and key.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
import reprlib
from typing import Any

from .errors import LstmCliError

# A number written as a string: PyYAML (YAML 1.1) loads `1e-3`, `5e-4`, `1E+2` as str.
# (\d+(\.\d*)?, not \d+\.?\d*: the latter backtracks quadratically on a long digit string.)
NUMBER_RE = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")

# repr of a user's value in a message, cut short: a 400-byte YAML file of nested aliases
# (each a list of 9 aliases of the one before) is a list of 9**9 items once written out.
_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40
_MAX_SHOWN = 200


def show(value: Any) -> str:
    """repr(value) cut to at most _MAX_SHOWN characters; looks at a few items of it only."""
    text = _REPR.repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


BOOL_HINT = (
    "YAML reads unquoted yes, no, on, off, true and false as booleans; put the value in quotes."
)


class Invalid(Exception):
    """Raised by a constraint; the caller turns it into a ConfigError."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


def _fmt_bound(x: float | None, sign: str) -> str:
    """repr of a range bound; None is -inf (sign "-") or inf (sign "+")."""
    if x is None:
        return "-inf" if sign == "-" else "inf"
    return repr(x)


def as_float(value: Any) -> float:
    """Return value as a float: ints and number strings ('1e-3') are accepted, bools not."""
    if isinstance(value, bool):
        raise Invalid()
    if isinstance(value, numbers.Real) or (
        isinstance(value, str) and NUMBER_RE.fullmatch(value.strip())
    ):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            raise Invalid() from None
    raise Invalid()


class Constraint:
    nullable = False

    def describe(self) -> str:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        raise NotImplementedError

    def description(self) -> str:
        return self.describe() + (" or null (None)" if self.nullable else "")  # YAML (Python)

    def check(self, value: Any) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise Invalid()
        return self.convert(value)


class Interval(Constraint):
    """An int or float in a range; ``closed`` is one of left/right/both/neither."""

    def __init__(self, kind, low=None, high=None, closed="left", nullable=False):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.nullable = nullable

    def describe(self) -> str:
        left = "[" if self.closed in ("left", "both") and self.low is not None else "("
        right = "]" if self.closed in ("right", "both") and self.high is not None else ")"
        lo, hi = _fmt_bound(self.low, "-"), _fmt_bound(self.high, "+")
        article = "an" if self.kind is int else "a"
        return f"{article} {self.kind.__name__} in the range {left}{lo}, {hi}{right}"

    def convert(self, value: Any) -> Any:
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise Invalid()
            x = int(value)
        else:
            x = as_float(value)
        closed_low = self.closed in ("left", "both")
        closed_high = self.closed in ("right", "both")
        if self.low is not None and not (x >= self.low if closed_low else x > self.low):
            raise Invalid()
        if self.high is not None and not (x <= self.high if closed_high else x < self.high):
            raise Invalid()
        if not math.isfinite(x):  # nan fails every comparison above; inf is out of range
            raise Invalid()
        return x


class Options(Constraint):
    """One of a fixed set of strings."""

    def __init__(self, *options: str):
        self.options = options

    def describe(self) -> str:
        return "a str among {" + ", ".join(repr(o) for o in self.options) + "}"

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise Invalid(BOOL_HINT)
        if value not in self.options:
            text = value.lower() if isinstance(value, str) else ""  # str(a list) may be huge
            close = difflib.get_close_matches(text, self.options, n=1)
            raise Invalid(f"Did you mean {close[0]!r}?" if close else "")
        return value


class Bool(Constraint):
    """true or false; with ``auto``, also the string 'auto' (resolved from the data)."""

    def __init__(self, auto: bool = False):
        self.auto = auto

    def describe(self) -> str:
        return "a bool (true or false)" + (" or 'auto'" if self.auto else "")

    def convert(self, value: Any) -> Any:
        if self.auto and value == "auto":
            return value
        if not isinstance(value, bool):
            hint = "Write true or false without quotes." if isinstance(value, str) else ""
            if self.auto and isinstance(value, str) and value.strip().lower() == "auto":
                hint = "Did you mean 'auto'?"
            raise Invalid(hint)
        return value


class Str(Constraint):
    """A non-empty string (a column name or a path)."""

    def __init__(self, what: str = "a non-empty str", nullable: bool = False):
        self.what, self.nullable = what, nullable

    def describe(self) -> str:
        return self.what

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise Invalid(BOOL_HINT)
        if not isinstance(value, str) or not value.strip():
            hint = "Put the value in quotes." if isinstance(value, numbers.Number) else ""
            raise Invalid(hint)
        if "\0" in value:  # no file system takes one, and os calls raise on it
            raise Invalid("It holds a NUL character.")
        return value


class StrList(Constraint):
    """A non-empty list of distinct non-empty strings, stored as a tuple."""

    def __init__(self, nullable: bool = False):
        self.nullable = nullable

    def describe(self) -> str:
        return "a non-empty list of distinct str"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise Invalid()
        for item in value:
            if isinstance(item, bool):
                raise Invalid(BOOL_HINT)
            if not isinstance(item, str) or not item.strip():
                raise Invalid()
        if len(set(value)) != len(value):
            raise Invalid("A column is listed twice.")
        return tuple(value)


def is_int(x: Any) -> bool:
    """True for an int (Python or NumPy), False for a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """True for a finite int or float (Python or NumPy), False for a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def param_error(
    name: str,
    expected: str,
    value: Any,
    owner: str | None = None,
    hint: str = "",
    error: type[Exception] = LstmCliError,
) -> Exception:
    """The one sentence for a value outside its constraint."""
    of = f" of {owner}" if owner else ""
    tail = f" {hint}" if hint else ""
    return error(f"The {name!r} parameter{of} must be {expected}. Got {show(value)} instead.{tail}")


def check(
    name: str,
    value: Any,
    constraint: Constraint,
    owner: str | None = None,
    error: type[Exception] = LstmCliError,
) -> Any:
    """``value`` converted by ``constraint``, or the one sentence raised as ``error``."""
    try:
        return constraint.check(value)
    except Invalid as bad:
        raise param_error(name, constraint.description(), value, owner, bad.hint, error) from None
