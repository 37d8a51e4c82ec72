"""Checks shared by the engines, the files they read and the commands: one line per bad value.

Two faces of one set of rules:

* ``check_int``, ``check_ints``, ``check_seconds``, ``check_seed``: plain functions for
  arguments given in Python (one-line :class:`XbqError`);
* :func:`Int`, :func:`Seconds`, :func:`Number`, :data:`Switch`, :data:`Text`: the same rules as
  typed fields of pydantic models (parameter files, sweep files, points, fio's JSON), so a
  file is checked whole by its model before anything compiles or starts, and the models give
  the JSON Schemas that docs and editors use (:mod:`xbq.cli.schema`). :func:`refusal` turns a
  model's ``ValidationError`` into one line naming the field.

Both raise the same words ("jobs must be between 1 and 4096, not 0"). The limits below are
where the kit (or the kernel) stops sizing things; each is named in the error that refuses a
larger value. :func:`read_config` reads a settings file (TOML or JSON) safely: only a
regular file, of bounded size, whatever its numbers or nesting.
"""

from __future__ import annotations

import math
import numbers
import os
import stat
from functools import partial
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, WithJsonSchema
from pydantic_core import PydanticCustomError

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
#: Longest measured window or warm-up of either engine (seconds, virtual or real).
MAX_DURATION_S = 1000.0
#: Largest settings file read (bytes): sweep and parameter files are a few kB.
MAX_CONFIG_BYTES = 1 << 20


def show(value) -> str:
    """``repr(value)`` cut to 40 characters (a 5000-digit number stays one short line)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"a {len(str(abs(value)))}-digit integer"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(kind: str, message: str, value) -> PydanticCustomError:
    return PydanticCustomError(kind, message + ", not {value}", {"value": show(value)})


def as_int(value, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``: an integer, or a float with no fractional part
    (``16.0``, as JSON writers put counts); never a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail("int_type", "must be an integer", value)
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(value) or not float(value).is_integer():
            raise _fail("int_type", "must be an integer", value)
        value = int(value)
    if not lo <= value <= hi:
        raise _fail("int_range", f"must be between {lo} and {hi}", value)
    return int(value)


def as_number(value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail("float_type", "must be a number", value)
    try:
        v = float(value)
    except OverflowError:
        raise _fail("float_range", f"must be at most {hi:g}", value) from None
    if not math.isfinite(v):
        raise _fail("float_finite", "must be finite", value)
    if (v <= lo if lo_open else v < lo) or v > hi:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise _fail("float_range", f"must be {low} and at most {hi:g}", value)
    return v


def as_switch(value) -> bool:
    """A switch: ``true``/``false``, or 1/0 (also 1.0/0.0, as older files wrote them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    raise _fail("bool_type", "must be true or false (or 1 or 0)", value)


def as_text(value, max_len: int) -> str:
    """A string of at most ``max_len`` characters (never a number or a list)."""
    if not isinstance(value, str):
        raise _fail("str_type", "must be a string", value)
    if len(value) > max_len:
        raise _fail("str_len", f"must be at most {max_len} characters long",
                    value[:20] + "...")
    return value


def Int(lo: int, hi: int):  # noqa: N802 - a type factory, used like a type
    """A typed integer field in ``[lo, hi]`` (see :func:`as_int`)."""
    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(partial(as_int, lo=lo, hi=hi))]


def Number(lo: float, hi: float, *, lo_open: bool = False):  # noqa: N802
    """A typed finite float field in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    bound = Field(gt=lo, le=hi) if lo_open else Field(ge=lo, le=hi)
    return Annotated[float, bound, BeforeValidator(partial(as_number, lo=lo, hi=hi,
                                                           lo_open=lo_open))]


def Seconds(hi: float = MAX_DURATION_S, *, positive: bool = True):  # noqa: N802
    """A number of seconds in ``(0, hi]`` (``[0, hi]`` unless ``positive``)."""
    return Number(0.0, hi, lo_open=positive)


#: A boolean switch (see :func:`as_switch`).
Switch = Annotated[bool, BeforeValidator(as_switch),
                   WithJsonSchema({"anyOf": [{"type": "boolean"}, {"enum": [0, 1]}]})]
#: A short string (a name, a bssplit, a path).
Text = Annotated[str, Field(max_length=4096), BeforeValidator(partial(as_text, max_len=4096))]


def _say(name: str, exc: PydanticCustomError) -> XbqError:
    return XbqError(f"{name} {exc.message()}")


def check_int(name: str, value, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``, or a one-line :class:`XbqError`."""
    try:
        return as_int(value, lo, hi)
    except PydanticCustomError as exc:
        raise _say(name, exc) from None


def check_ints(name: str, values, lo: int, hi: int) -> list[int]:
    """A non-empty list of ints in ``[lo, hi]`` (one value is a list of one)."""
    seq = [values] if isinstance(values, numbers.Real) else list(values)
    if not seq:
        raise XbqError(f"{name} must not be empty")
    return [check_int(name, v, lo, hi) for v in seq]


def check_seconds(name: str, value, hi: float, *, positive: bool = True) -> float:
    """A finite number of seconds in ``(0, hi]`` (``[0, hi]`` unless ``positive``)."""
    try:
        return as_number(value, 0.0, hi, lo_open=positive)
    except PydanticCustomError as exc:
        raise _say(name, exc) from None


def check_seed(value) -> int:
    """A seed: an integer in ``[0, 2**63 - 1]``."""
    return check_int("seed", value, 0, MAX_SEED)


# --- a model's refusal in one line -------------------------------------------------------------

#: pydantic's own wording, shortened to the kit's ("must be ...").
_WORDS = (("Input should be a valid ", "must be a "), ("Input should be ", "must be "),
          ("greater than or equal to ", ">= "), ("less than or equal to ", "<= "),
          ("greater than ", "> "), ("less than ", "< "), ("Value error, ", ""))


def _where(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        elif part in ("function-after", "function-before", "function-plain") or \
                str(part).startswith(("function-", "tagged-union", "union[")):
            continue
        else:
            out += f".{part}"
    return out


def error_line(err: dict) -> str:
    """One pydantic error as ``field what``: ``jobs[2] must be between 1 and 4096, not 0``."""
    where = _where(err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown setting {where!r}"
    if kind == "missing":
        return f"{where} is missing"
    if kind in ("too_short", "too_long"):
        ctx = err.get("ctx", {})
        bound = ("at least", ctx.get("min_length")) if kind == "too_short" else \
            ("at most", ctx.get("max_length"))
        return f"{where} must hold {bound[0]} {bound[1]} item(s), not {ctx.get('actual_length')}"
    msg = err.get("msg", "")
    for old, new in _WORDS:
        msg = msg.replace(old, new)
    if "input" in err and ", not " not in msg and kind not in ("value_error",
                                                              "assertion_error"):
        msg += f", not {show(err['input'])}"  # our own validators name it already
    return f"{where} {msg}" if where else msg


def refusal(exc: ValidationError, where: str = "") -> XbqError:
    """A model's ``ValidationError`` as one line: the first problem, named by its field, and
    how many more there are."""
    errors = exc.errors(include_url=False)
    line = error_line(errors[0]) if errors else str(exc).splitlines()[0]
    more = len(errors) - 1
    if more:
        line += f" (and {more} more problem{'s' if more > 1 else ''})"
    return XbqError(f"{where}: {line}" if where else line)


# --- settings files ------------------------------------------------------------------------------


def read_regular(path, *, what: str = "", limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; one line otherwise.

    A FIFO, a device (``/dev/zero``) or a directory is refused before it is read, so
    nothing blocks or fills memory.
    """
    label = f"{what} {path}" if what else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise XbqError(f"cannot read {label}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise XbqError(f"cannot read {label}: not a regular file")
        if st.st_size > limit:
            raise XbqError(f"{label} is {st.st_size} bytes, more than the {limit} this kind "
                           "of file may have")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise XbqError(f"{label} grew past {limit} bytes while being read")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise XbqError(f"cannot read {label}: {exc.strerror}") from None
    finally:
        os.close(fd)


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with every failure as one line: bad syntax, numbers of thousands of
    digits, nesting too deep for the parser."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise XbqError(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno} column "
                       f"{exc.colno}") from None
    except RecursionError:
        raise XbqError(f"{where}: not valid JSON: nested too deeply") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise XbqError(f"{where}: not valid JSON: a number of thousands of digits") from None


def read_config(path, *, what: str = "", default: str = "toml") -> Any:
    """Parse a settings file: TOML, or JSON when it ends in ``.json`` (``.toml`` and
    ``default`` otherwise decide). One line for a file that cannot be read or parsed.

    ``what`` names the file in the read error (``cannot read parameters FILE``).
    """
    import tomllib
    from pathlib import Path

    p = Path(path)
    raw = read_regular(p, what=what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise XbqError(f"{p}: not UTF-8 text") from None
    fmt = {".json": "json", ".toml": "toml"}.get(p.suffix, default)
    if fmt == "json":
        return parse_json(text, str(p))
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise XbqError(f"{p}: not valid TOML: {exc}") from None
    except (RecursionError, ValueError) as exc:
        raise XbqError(f"{p}: not valid TOML: {type(exc).__name__}") from None
