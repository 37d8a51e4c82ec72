"""Argument checks shared by the public model functions."""

from __future__ import annotations

import numpy as np

from xbq.errors import XbqError


def concurrency(n, *, integer: bool = False) -> np.ndarray:
    """Return ``n`` as a 1-D float array of positive values (integers when asked)."""
    arr = np.atleast_1d(np.asarray(n, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise XbqError("concurrency must be a non-empty scalar or 1-D array")
    if not np.all(np.isfinite(arr)) or np.any(arr < 1):
        raise XbqError("concurrency values must be finite and >= 1")
    if integer and np.any(arr != np.rint(arr)):
        raise XbqError("this model needs integer concurrency (jobs)")
    return arr


def positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, checking it is finite and > 0 (or >= 0)."""
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise XbqError(f"{name} must be finite and {need} (got {value!r})")
    return v


def shape_out(n, values: np.ndarray):
    """Return a float for scalar ``n`` input, else the array."""
    return float(values[0]) if np.ndim(n) == 0 else values
