"""Argument checks shared by the engines and the commands: one line per bad value.

Every engine entry point (``measure``, ``simulate``, ``calibrate``) checks all of its
arguments with these before it builds or compiles anything, so a bad value costs nothing
and says what is wrong. The limits below are where the kit (or the kernel) stops sizing
things; each is named in the error that refuses a larger value.
"""

from __future__ import annotations

import math
import numbers

from xbq.errors import XbqError

#: blk-mq queues / blkif rings: Linux blk-mq and the xenbus handshake model stop here.
MAX_QUEUES = 1024
#: Guest vCPUs the engines place jobs on.
MAX_VCPUS = 1024
#: fio jobs: the twin sizes per-job arrays, the native engine starts a thread per job.
MAX_JOBS = 4096
MAX_NATIVE_JOBS = 1024
#: I/Os in flight per job (Linux's default ``aio-max-nr`` is 65536 events).
MAX_IODEPTH = 65536
#: Largest seed (seeds feed int64 configuration words and ``SeedSequence``).
MAX_SEED = (1 << 63) - 1


def check_int(name: str, value, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``, or a one-line :class:`XbqError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise XbqError(f"{name} must be an integer, not {value!r}")
    if not lo <= int(value) <= hi:
        raise XbqError(f"{name} must be between {lo} and {hi}, not {int(value)}")
    return int(value)


def check_ints(name: str, values, lo: int, hi: int) -> list[int]:
    """A non-empty list of ints in ``[lo, hi]`` (one value is a list of one)."""
    seq = [values] if isinstance(values, numbers.Integral) else list(values)
    if not seq:
        raise XbqError(f"{name} must not be empty")
    return [check_int(name, v, lo, hi) for v in seq]


def check_seconds(name: str, value, hi: float, *, positive: bool = True) -> float:
    """A finite number of seconds in ``(0, hi]`` (``[0, hi]`` unless ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise XbqError(f"{name} must be a number of seconds, not {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise XbqError(f"{name} must be finite, not {v}")
    if (v <= 0 if positive else v < 0) or v > hi:
        low = "> 0" if positive else ">= 0"
        raise XbqError(f"{name} must be {low} and at most {hi:g} s, not {v:g}")
    return v


def check_seed(value) -> int:
    """A seed: an integer in ``[0, 2**63 - 1]``."""
    return check_int("seed", value, 0, MAX_SEED)


def read_config(path, *, what: str = "", default: str = "toml") -> dict | list:
    """Parse a settings file: TOML, or JSON when it ends in ``.json`` (``.toml`` and
    ``default`` otherwise decide). One line for a file that cannot be read or parsed.

    ``what`` names the file in the read error (``cannot read parameters FILE``).
    """
    import json
    import tomllib
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise XbqError(f"cannot read {what + ' ' if what else ''}{p}: {exc.strerror}") \
            from None
    fmt = {".json": "json", ".toml": "toml"}.get(p.suffix, default)
    try:
        return json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise XbqError(f"{p}: not valid {fmt.upper()}: {exc}") from None
