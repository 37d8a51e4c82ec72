"""The results schema both engines share: one row per measured point.

``xbq measure`` (native threads) and ``xbq simulate`` (the discrete-event twin) return the
same tidy table, one row per measured point; the ``engine`` column tells them apart. Columns
are listed in :data:`COLUMNS` with their unit. Engines may add columns of their own (lock and
resource statistics); the common ones are always present, in this order. Every row carries
its configuration (``config``, the canonical JSON of its :class:`Point`) and that text's
:func:`point_key`, so a results store can tell which points of a sweep it already holds, and
that a stored row is the point it claims to be (:mod:`xbq.study.results`).

:class:`Point` is the base of every engine's point (:class:`xbq.engines.des.point.DesPoint`,
:class:`xbq.engines.native.point.NativePoint`): a frozen, typed model of everything that
determines a run, checked whole when it is made, with one key recipe for every engine and
the sweep.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from xbq.checks import Text, refusal
from xbq.errors import XbqError
from xbq.workload.fio import parse_bssplit

#: name -> (unit, meaning). Every engine's frame starts with these columns.
COLUMNS = {
    "engine": ("", "native (real threads) or des (discrete-event twin)"),
    "mode": ("", "sq: one ring, one io_lock; mq1: blk-mq, one queue; mq: per-ring locks"),
    "jobs": ("", "fio jobs (threads), each keeping iodepth requests in flight"),
    "queues": ("", "rings negotiated with the backend"),
    "vcpus": ("", "guest vCPUs the jobs are placed on"),
    "iodepth": ("", "requests in flight per job"),
    "rep": ("", "repetition index"),
    "seed": ("", "seed of the point's random streams"),
    "duration_s": ("s", "measured interval (after warm-up)"),
    "iops": ("1/s", "completed I/Os per second, reads and writes"),
    "read_iops": ("1/s", "completed reads per second"),
    "write_iops": ("1/s", "completed writes per second"),
    "mbps": ("MB/s", "payload moved, 10^6 bytes per second"),
    "lat_mean_us": ("us", "mean submit-to-completion latency"),
    "lat_p50_us": ("us", "median latency"),
    "lat_p99_us": ("us", "99th percentile latency"),
    "lat_p999_us": ("us", "99.9th percentile latency"),
    "submitted": ("", "I/Os submitted during the whole run"),
    "completed": ("", "I/Os completed during the whole run"),
    "lost": ("", "submitted I/Os that never completed (must be 0)"),
    "duplicated": ("", "completions of an I/O already completed (must be 0)"),
    "notify_fe_per_req": ("", "frontend-to-backend event-channel notifications per request"),
    "notify_be_per_req": ("", "backend-to-frontend notifications per request"),
    "ring_full": ("", "times a submitter found its ring full"),
    "config": ("", "the point's whole configuration, canonical JSON (what point_key hashes)"),
    "point_key": ("", "hash of the point's configuration; a resumed run skips stored keys"),
}


def empty_frame() -> pd.DataFrame:
    """An empty frame with the common columns."""
    return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Turn row dicts into a frame with the common columns first.

    Raises
    ------
    XbqError
        If a row lacks a common column (an engine bug, reported in one line).
    """
    for row in rows:
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise XbqError(f"result row lacks column(s) {', '.join(missing)}")
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[list(COLUMNS) + extra] if rows else empty_frame()


def to_json_rows(frame: pd.DataFrame) -> str:
    """Serialise a results frame as a JSON array of row objects (NaN becomes null)."""
    return frame.to_json(orient="records", double_precision=6)


def config_json(config: dict) -> str:
    """The canonical JSON of a configuration: keys sorted, no spaces, floats in ``repr``
    form, so the same configuration is the same text on every run and machine."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)


def key_of(text: str) -> str:
    """16 hex digits of the SHA-256 of a configuration's canonical JSON."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def point_key(config: dict) -> str:
    """A stable key of a configuration: :func:`key_of` its :func:`config_json`."""
    return key_of(config_json(config))


def flatten(config: dict, prefix: str = "") -> dict:
    """A nested configuration as one level: ``{"params": {"lock_mcs": 1}}`` becomes
    ``{"params.lock_mcs": 1}``."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_bssplit(value: str) -> str:
    try:
        parse_bssplit(value)
    except XbqError as exc:
        raise ValueError(str(exc)) from None
    return value


#: A fio ``bssplit`` field: a string its parser accepts (``4k/80:64k/20``).
Bssplit = Annotated[Text, AfterValidator(_check_bssplit)]


#: Defaults ``xbq measure`` and ``xbq simulate`` share where they mean the same: the 2015
#: cover letter's guest (16 vCPUs, 16 rings) running fio's IOmeter job (iodepth 64).
GUEST_DEFAULTS = {"queues": 16, "vcpus": 16, "iodepth": 64}


class Point(BaseModel):
    """Everything that determines one run of an engine: frozen, typed, checked whole.

    Subclasses declare the fields; a bad value raises a one-line :class:`XbqError` naming
    it. :meth:`config` is the point as plain JSON values, :attr:`key` its
    :func:`point_key`: one recipe for every engine and the sweep.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise refusal(exc) from None

    def config(self) -> dict:
        """The point as JSON values (nested models as tables)."""
        return self.model_dump(mode="json")

    def config_json(self) -> str:
        """The point's canonical JSON (the ``config`` column of its row)."""
        return config_json(self.config())

    @property
    def key(self) -> str:
        """The point's :func:`point_key` (the ``point_key`` column of its row)."""
        return key_of(self.config_json())

    def stamp(self, row: dict) -> dict:
        """``row`` with this point's ``config`` and ``point_key`` (in place; returned)."""
        text = self.config_json()
        row["config"] = text
        row["point_key"] = key_of(text)
        return row
