"""A results store that never loses a measured point, and the machine a result came from.

:class:`ResultsStore` appends each point to its file the moment it is measured (CSV: one
flushed, fsynced line; Parquet: the whole table rewritten atomically through a temporary
file, fsync and rename), with a JSON sidecar ``FILE.meta.json`` describing the machine and
the command. An existing file is never deleted unless asked (``--overwrite``): by default a
rerun resumes it, skipping every point whose ``point_key`` (a hash of its
configuration) is already stored, after dropping a torn last line that ``kill -9`` may have
left. An interrupted sweep therefore keeps every point already measured.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from xbq.engines.schema import COLUMNS, to_frame
from xbq.errors import XbqError
from xbq.study.paths import git_commit


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


#: How a store treats an output file that already exists.
STORE_MODES = ("resume", "overwrite", "refuse")


class ResultsStore:
    """Append-as-you-go results file (``.csv`` or ``.parquet``) that never loses a point.

    Parameters
    ----------
    path : str or Path
        Output file; its suffix picks the format.
    meta : dict
        Metadata of this run (command, parameters), stored with :func:`machine_info` in the
        sidecar ``path + ".meta.json"``; on resume the sidecar lists every run.
    existing : {"resume", "overwrite", "refuse"}
        What to do with a file that already exists. ``resume`` (the default) keeps every
        point in it, and :meth:`done` tells the caller which configurations to skip; a torn
        last line (a run killed while writing it) is dropped first and said so.
        ``overwrite`` deletes it. ``refuse`` raises a one-line :class:`XbqError` naming
        ``--resume`` and ``--overwrite``.

    Notes
    -----
    CSV rows are appended with one write, flushed and fsynced before :meth:`append` returns.
    A row with columns the file lacks rewrites the file with the wider header (through a
    temporary file, fsync and rename), never drops a value. Parquet files are always
    rewritten that way. Nothing is touched before the first :meth:`append` but the sidecar.
    """

    def __init__(self, path, meta: dict | None = None, *, existing: str = "resume"):
        self.path = Path(path)
        if existing not in STORE_MODES:
            raise XbqError(f"existing must be one of {', '.join(STORE_MODES)}")
        if self.path.suffix not in (".csv", ".parquet"):
            raise XbqError(f"output {self.path} must end in .csv or .parquet")
        if not self.path.parent.exists():
            raise XbqError(f"directory {self.path.parent} does not exist")
        self.sidecar = self.path.with_name(self.path.name + ".meta.json")
        self.notes: list[str] = []
        self.frame = None
        if self.path.exists():
            if existing == "refuse":
                raise XbqError(f"{self.path} exists; pass --resume to add to it (points already "
                               "in it are skipped) or --overwrite to replace it")
            if existing == "overwrite":
                self.path.unlink()
            else:
                self.frame = self._load()
        info = {"machine": machine_info(), "columns": {k: v[0] for k, v in COLUMNS.items()}}
        info.update(meta or {})
        runs = []
        if self.frame is not None and self.sidecar.exists():
            try:
                old = json.loads(self.sidecar.read_text())
                runs = old.get("runs") or [{k: v for k, v in old.items() if k != "runs"}]
            except (OSError, ValueError):
                runs = []
        runs.append(info)
        _atomic_write(self.sidecar, json.dumps({**info, "runs": runs}, indent=2,
                                               default=str).encode())

    def _load(self) -> pd.DataFrame | None:
        try:
            if self.path.suffix == ".csv":
                self._drop_torn_line()
                if self.path.stat().st_size == 0:
                    return None
                return pd.read_csv(self.path)
            return pd.read_parquet(self.path)
        except XbqError:
            raise
        except Exception as exc:  # a corrupt file: say so, never overwrite it silently
            raise XbqError(f"cannot resume from {self.path}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''} "
                           "(pass --overwrite to replace it)") from None

    def _drop_torn_line(self) -> None:
        """Cut a last line without its newline (``kill -9`` while writing it)."""
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        with open(self.path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        note = (f"dropped a torn last line ({len(data) - keep} bytes) that an interrupted run "
                f"left in {self.path}")
        self.notes.append(note)
        print(f"xbq: {note}", file=sys.stderr)

    def done(self, keys: list[str] | None = None) -> set:
        """The points already stored: their ``point_key`` values (default), or the tuples of
        ``keys`` column values."""
        if self.frame is None or self.frame.empty:
            return set()
        if keys is None:
            if "point_key" not in self.frame.columns:
                return set()
            return set(self.frame["point_key"].astype(str))
        return set(self.frame[keys].itertuples(index=False, name=None))

    def rows(self, point_keys) -> list[dict]:
        """The stored rows of the given point keys (in the file's order)."""
        if self.frame is None or "point_key" not in self.frame.columns:
            return []
        wanted = set(point_keys)
        part = self.frame[self.frame["point_key"].astype(str).isin(wanted)]
        return part.to_dict(orient="records")

    def append(self, rows: list[dict]) -> None:
        """Store measured rows now, durably, before the next point starts."""
        new = to_frame(rows)
        old = self.frame
        if self.path.suffix == ".csv" and self.path.exists() and old is not None \
                and set(new.columns) <= set(old.columns):
            with open(self.path, "a", encoding="utf-8") as fh:
                new.reindex(columns=old.columns).to_csv(fh, header=False, index=False)
                fh.flush()
                os.fsync(fh.fileno())
            self.frame = pd.concat([old, new.reindex(columns=old.columns)], ignore_index=True)
            return
        frame = new if old is None else pd.concat([old, new], ignore_index=True)
        if old is not None:  # keep the file's column order, new columns at the end
            frame = frame[list(old.columns) + [c for c in new.columns if c not in old.columns]]
        tmp = self.path.with_name(self.path.name + ".tmp")
        if self.path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        _fsync_replace(tmp, self.path)
        self.frame = frame


def _fsync_replace(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it over ``path``, fsync the directory."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    _fsync_replace(tmp, path)
