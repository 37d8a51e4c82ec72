"""The results schema both engines share: one row per measured point.

``xbq measure`` (native threads) and ``xbq simulate`` (the discrete-event twin) return the
same tidy table, one row per measured point; the ``engine`` column tells them apart. Columns
are listed in :data:`COLUMNS` with their unit. Engines may add columns of their own (lock and
resource statistics); the common ones are always present, in this order. Every row carries
its configuration's :func:`point_key`, so a results store can tell which points of a sweep it
already holds (:mod:`xbq.study.results`).
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

from xbq.errors import XbqError

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


def point_key(config: dict) -> str:
    """A stable key of a point's configuration: 16 hex digits of a SHA-256 of its JSON.

    The same configuration gives the same key on every run and machine (keys sorted, floats
    in ``repr`` form), so a store can tell which points of a sweep it already holds.
    """
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
