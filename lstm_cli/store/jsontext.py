"""Standard JSON text for the files and reports lstm_cli writes.

Python's ``json.dumps`` writes a non-finite float as ``NaN`` or ``Infinity``, which are
not JSON (RFC 8259): other readers refuse them. Where such a value is a legitimate
result (a diverged validation loss, a gradient norm that overflowed) it is written as
``null``; ``allow_nan=False`` makes anything else that is not JSON an error, never a token.
"""

from __future__ import annotations

import json
import math


def finite_or_null(obj):
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, through dicts,
    lists and tuples (tuples become lists, as JSON writes them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def json_text(obj, **kwargs) -> str:
    """``json.dumps(obj, **kwargs)`` with non-finite floats written as null."""
    return json.dumps(finite_or_null(obj), allow_nan=False, **kwargs)
