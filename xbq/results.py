"""The results schema both engines share, and a store that never loses a measured point.

``xbq measure`` (native threads) and ``xbq simulate`` (the discrete-event twin) return the
same tidy table, one row per measured point; the ``engine`` column tells them apart. Columns
are listed in :data:`COLUMNS` with their unit. Engines may add columns of their own (lock and
resource statistics); the common ones are always present, in this order.

:class:`ResultsStore` appends each point to its file the moment it is measured (CSV: one
flushed, fsynced line; Parquet: the whole table rewritten atomically through a temporary file),
with a JSON sidecar ``FILE.meta.json`` describing the machine and the command. An interrupted
sweep therefore keeps every point already measured, and a rerun with the same file can skip
them (:meth:`ResultsStore.done`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from xbq.errors import XbqError
from xbq.paths import git_commit

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


def machine_info() -> dict:
    """Describe the machine and software a result came from."""
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from xbq import __version__

    return {
        "cpu_model": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "pandas": pd.__version__,
        "xbq": __version__,
        "git_commit": git_commit(),
    }


class ResultsStore:
    """Append-as-you-go results file (``.csv`` or ``.parquet``) with a metadata sidecar.

    Parameters
    ----------
    path : str or Path
        Output file; its suffix picks the format.
    meta : dict
        Extra metadata (command, parameters) stored with :func:`machine_info` in
        ``path + ".meta.json"``.
    resume : bool
        Keep the points already in the file (and :meth:`done` reports them); otherwise the
        file is started afresh.
    """

    def __init__(self, path, meta: dict | None = None, *, resume: bool = False):
        self.path = Path(path)
        if self.path.suffix not in (".csv", ".parquet"):
            raise XbqError(f"output {self.path} must end in .csv or .parquet")
        if not self.path.parent.exists():
            raise XbqError(f"directory {self.path.parent} does not exist")
        self.frame = self._load() if resume and self.path.exists() else None
        if not resume and self.path.exists():
            self.path.unlink()
        self.sidecar = self.path.with_name(self.path.name + ".meta.json")
        info = {"machine": machine_info(), "columns": {k: v[0] for k, v in COLUMNS.items()}}
        info.update(meta or {})
        _atomic_write(self.sidecar, json.dumps(info, indent=2, default=str).encode())

    def _load(self) -> pd.DataFrame:
        try:
            if self.path.suffix == ".csv":
                return pd.read_csv(self.path)
            return pd.read_parquet(self.path)
        except Exception as exc:  # a corrupt file: say so, never overwrite it silently
            raise XbqError(f"cannot resume from {self.path}: {exc}") from None

    def done(self, keys: list[str]) -> set[tuple]:
        """Tuples of ``keys`` values of the points already stored."""
        if self.frame is None or self.frame.empty:
            return set()
        return set(self.frame[keys].itertuples(index=False, name=None))

    def append(self, rows: list[dict]) -> None:
        """Store measured rows now, durably, before the next point starts."""
        new = to_frame(rows)
        old = self.frame
        if self.path.suffix == ".csv":
            header = not self.path.exists()
            if not header and old is not None and list(old.columns) != list(new.columns):
                new = new.reindex(columns=old.columns)  # a CSV keeps its first header
            with open(self.path, "a", encoding="utf-8") as fh:
                new.to_csv(fh, header=header, index=False)
                fh.flush()
                os.fsync(fh.fileno())
        self.frame = new if old is None else pd.concat([old, new], ignore_index=True)
        if self.path.suffix == ".parquet":
            tmp = self.path.with_name(self.path.name + ".tmp")
            self.frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.path)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
