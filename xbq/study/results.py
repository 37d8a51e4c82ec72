"""A results store that never loses a measured point, holds one configuration, and says where
each result came from.

:class:`ResultsStore` keeps an engine's rows in a ``.csv`` or ``.parquet`` file, with a JSON
sidecar ``FILE.meta.json`` describing the machine and every command that wrote it, and a
lock file ``FILE.lock``. :func:`run_points` is the one loop that runs points into it: it
skips the points already stored, runs the others one by one, and stores each row the moment
it exists. The rules:

* **One writer.** A store is opened under an exclusive lock held until it is closed
  (:class:`xbq.files.WriterLock`): a second writer gets one line naming the holder's pid, or
  waits with ``wait=True`` (``--wait``) and then resumes what the first one stored.
* **Never lost.** CSV rows are appended with one write and fsynced before the next point
  starts; a file that must be rewritten (Parquet, a wider header) is replaced whole through
  an exclusive temporary file and a rename (:func:`xbq.files.atomic_write`). A last line
  without its newline is kept when it is a whole row (its ``point_key`` is the hash of its
  ``config``) and cut only when it is torn. An existing store is never deleted: it is
  resumed, refused (``existing="refuse"``), or, with ``existing="overwrite"``, replaced when
  the first new row is stored, and only if xbq wrote it as a store of the same kind.
* **One configuration.** Every row carries its whole configuration (``config``, the
  canonical JSON of its point) and ``point_key``, the hash of that text; a row whose key is
  not its configuration's hash is refused on load. A store holds the points of one
  configuration: the values of its *axes* (the settings a command varies, such as ``jobs``
  and ``seed``) differ between rows, nothing else. A point of another configuration is
  refused, naming the settings that differ, unless the store is opened with ``mixed=True``
  (``--mixed``).
* **Only regular files**, never through a symlink (:mod:`xbq.files`); keys are read and
  written as strings.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from xbq.engines.schema import COLUMNS, Point, flatten, key_of, to_frame
from xbq.errors import XbqError
from xbq.files import (
    WriterLock,
    append_bytes,
    atomic_write,
    check_folder,
    check_target,
    read_bytes,
)
from xbq.study.paths import git_commit

#: The store format this code writes (the sidecar's ``xbq_store.version``).
STORE_VERSION = 2
#: How a store treats an output file that already exists.
STORE_MODES = ("resume", "overwrite", "refuse")
#: Columns every stored row has, in the order they close a CSV line: a torn line almost
#: always breaks the hash check of the last one.
LAST_COLUMNS = ("config", "point_key")
#: Settings that are replications, not configuration: every store may vary them.
REPLICATIONS = ("seed", "rep")


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


def sidecar_of(path: Path) -> Path:
    """The metadata sidecar of a file xbq writes: ``FILE.meta.json``."""
    return path.with_name(path.name + ".meta.json")


def written_kind(path: Path) -> str | None:
    """The kind of store xbq wrote at ``path`` (its sidecar's ``xbq_store.kind``), or None
    when no readable sidecar says xbq wrote it."""
    side = sidecar_of(path)
    try:
        if not check_target(side):
            return None
        meta = json.loads(read_bytes(side))
        if "xbq_store" not in meta and {"machine", "columns"} <= set(meta):
            return "results"  # a store of the first format (before the kind was written)
        return str(meta["xbq_store"]["kind"])
    except (XbqError, ValueError, KeyError, TypeError):
        return None


def check_replaceable(path: Path, kind: str, existing: str) -> bool:
    """Whether an output of ``kind`` may be written at ``path``: True if it exists and is to
    be resumed or replaced, False if it does not exist; one line if it must be kept."""
    if not check_target(path):
        return False
    if existing == "refuse" or (existing == "resume" and kind != "results"):
        flag = "pass --resume to add to it (points already in it are skipped) or " \
            if kind == "results" else "pass "
        raise XbqError(f"{path} exists; {flag}--overwrite to replace it")
    if existing == "overwrite" and written_kind(path) != kind:
        raise XbqError(f"{path} was not written by xbq as a {kind} file (its sidecar "
                       f"{sidecar_of(path).name} does not say so); not replacing it: move it "
                       "away or choose another output")
    return True


class _LockedStore:
    """What every store shares: the writer's lock, held from opening to :meth:`close`."""

    _lock: WriterLock | None = None

    def close(self) -> None:
        """Release the lock (idempotent)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


class ResultsStore(_LockedStore):
    """Append-as-you-go results file (``.csv`` or ``.parquet``) that never loses a point.

    Parameters
    ----------
    path : str or Path
        Output file; its suffix picks the format.
    meta : dict
        Metadata of this run (command, arguments), stored with :func:`machine_info` in the
        sidecar; a resumed store's sidecar lists every run.
    axes : sequence of str
        The settings this writer varies (flattened configuration names, e.g. ``"jobs"``,
        ``"params.lock_mcs"``); :data:`REPLICATIONS` always are. Every other setting of a
        point must equal the store's.
    existing : {"resume", "overwrite", "refuse"}
        What to do with a file that exists (see the module docstring).
    mixed : bool
        Let the store hold points of several configurations (each row still carries its own).
    wait : bool
        Wait for another writer of the same file to finish instead of failing.

    Notes
    -----
    Use it as a context manager (or call :meth:`close`): the lock is held until then.
    Nothing but the lock and the sidecar is touched before the first :meth:`append`.
    """

    def __init__(self, path, meta: dict | None = None, *, axes: Sequence[str] = ("jobs",),
                 existing: str = "resume", mixed: bool = False, wait: bool = False):
        self.path = Path(path)
        if existing not in STORE_MODES:
            raise XbqError(f"existing must be one of {', '.join(STORE_MODES)}")
        if self.path.suffix not in (".csv", ".parquet"):
            raise XbqError(f"output {self.path} must end in .csv or .parquet")
        check_folder(self.path)
        self.sidecar = sidecar_of(self.path)
        check_target(self.sidecar)
        self.axes = tuple(dict.fromkeys([*axes, *REPLICATIONS]))
        self.mixed = bool(mixed)
        self.notes: list[str] = []
        self.frame: pd.DataFrame | None = None
        self._replace = False
        meta = dict(meta or {})
        self._lock = WriterLock(self.path, str(meta.get("command", "xbq")), wait=wait)
        try:
            if check_replaceable(self.path, "results", existing):
                if existing == "overwrite":
                    self._replace = True
                else:
                    self.frame = self._load()
            self._write_sidecar(meta)
        except BaseException:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------------

    def _write_sidecar(self, meta: dict) -> None:
        runs = []
        if self.frame is not None and check_target(self.sidecar):
            try:
                old = json.loads(read_bytes(self.sidecar))
                runs = list(old.get("runs") or [])
            except (ValueError, AttributeError, XbqError):
                runs = []
        info = {"machine": machine_info(), **meta, "axes": list(self.axes),
                "mixed": self.mixed}
        runs.append(info)
        side = {"xbq_store": {"kind": "results", "version": STORE_VERSION},
                "columns": {k: v[0] for k, v in COLUMNS.items()}, **info, "runs": runs}
        atomic_write(self.sidecar, json.dumps(side, indent=2, default=str).encode())

    def _load(self) -> pd.DataFrame | None:
        data = read_bytes(self.path)
        if self.path.suffix == ".csv":
            data = self._mend_last_line(data)
            if not data.strip():
                return None
        try:
            if self.path.suffix == ".csv":
                frame = pd.read_csv(io.BytesIO(data), dtype={c: str for c in LAST_COLUMNS},
                                    keep_default_na=True)
            else:
                frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # a corrupt file: say so, never overwrite it silently
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise XbqError(f"cannot resume from {self.path}: {type(exc).__name__}: {first} "
                           "(write to another file)") from None
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise XbqError(f"{self.path} is not an xbq results store of this version: it lacks "
                           f"column(s) {', '.join(missing[:5])}; not adding to it (write to "
                           "another file)")
        for i, (text, key) in enumerate(zip(frame["config"], frame["point_key"],
                                            strict=True)):
            if not isinstance(text, str) or not isinstance(key, str) or key_of(text) != key:
                raise XbqError(f"{self.path}, row {i + 1}: its point_key is not the hash of "
                               "its config (the row was edited or belongs to another point); "
                               "not resuming from it (fix or remove the row)")
        return frame

    def _mend_last_line(self, data: bytes) -> bytes:
        """Complete a last row whose newline a kill cut, or cut a torn one (both said)."""
        if not data or data.endswith(b"\n"):
            return data
        keep = data.rfind(b"\n") + 1
        if keep and _whole_row(data[:keep], data[keep:]):
            append_bytes(self.path, b"\n")
            self._note(f"completed the last row of {self.path} (its newline was missing)")
            return data + b"\n"
        atomic_write(self.path, data[:keep])
        self._note(f"dropped a torn last line ({len(data) - keep} bytes) that an interrupted "
                   f"run left in {self.path}")
        return data[:keep]

    def _note(self, note: str) -> None:
        self.notes.append(note)
        print(f"xbq: {note}", file=sys.stderr)

    def _rows_ok(self) -> pd.DataFrame:
        frame = self.frame
        if frame is None or frame.empty:
            return pd.DataFrame()
        if "error" in frame:
            frame = frame[frame["error"].isna()]
        return frame

    def done(self) -> set[str]:
        """The point keys stored without an error."""
        return set(self._rows_ok().get("point_key", pd.Series(dtype=str)))

    def rows(self, point_keys) -> list[dict]:
        """The stored rows (without an error) of the given point keys, in the file's order
        (a key stored twice: its last row)."""
        frame = self._rows_ok()
        if frame.empty:
            return []
        part = frame[frame["point_key"].isin(set(point_keys))]
        return list({r["point_key"]: r for r in part.to_dict(orient="records")}.values())

    # -- configurations --------------------------------------------------------------------

    def _fixed(self, config: dict) -> dict:
        return {k: v for k, v in flatten(config).items() if k not in self.axes}

    def check(self, points: Sequence[Point]) -> None:
        """Refuse (one line) points whose configuration is not the store's, unless it is
        mixed: run before the first of them runs."""
        if self.mixed or self.frame is None or self.frame.empty:
            return
        held = {}
        for text in self.frame["config"]:
            fixed = self._fixed(json.loads(text))
            held[json.dumps(fixed, sort_keys=True)] = fixed
        for p in points:
            mine = self._fixed(p.config())
            if json.dumps(mine, sort_keys=True) in held:
                continue
            theirs = next(iter(held.values()))
            diff = sorted(set(mine) ^ set(theirs) |
                          {k for k in set(mine) & set(theirs) if mine[k] != theirs[k]})
            shown = "; ".join(f"{k} {_short(theirs.get(k))} there, {_short(mine.get(k))} here"
                              for k in diff[:3])
            more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
            raise XbqError(f"{self.path} holds another configuration: {shown}{more}; pass "
                           "--mixed to keep several configurations in one store, or write to "
                           "another file")

    # -- writing ---------------------------------------------------------------------------

    def append(self, rows: list[dict]) -> None:
        """Store measured rows now, durably, before the next point starts."""
        new = _ordered(to_frame(rows))
        old = None if self._replace else self.frame
        if self.path.suffix == ".csv" and old is not None and not old.empty \
                and set(new.columns) <= set(old.columns):
            new = new.reindex(columns=old.columns)
            append_bytes(self.path, new.to_csv(header=False, index=False).encode())
            self.frame = pd.concat([old, new], ignore_index=True)
            return
        frame = new if old is None or old.empty else _ordered(
            pd.concat([old, new], ignore_index=True)[
                list(old.columns) + [c for c in new.columns if c not in old.columns]])
        if self.path.suffix == ".csv":
            data = frame.to_csv(index=False).encode()
        else:
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            data = buf.getvalue()
        atomic_write(self.path, data)
        self.frame, self._replace = frame, False


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame's columns with :data:`LAST_COLUMNS` moved to the end."""
    return frame[[c for c in frame.columns if c not in LAST_COLUMNS] + list(LAST_COLUMNS)]


def _whole_row(head: bytes, last: bytes) -> bool:
    """Whether ``last`` (a line without its newline) is a whole row of the CSV whose header
    and rows are ``head``: as many fields as the header, its key the hash of its config."""
    try:
        header = next(csv.reader(io.StringIO(head.decode())))
        fields = list(csv.reader(io.StringIO(last.decode())))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return False
    if len(fields) != 1 or len(fields[0]) != len(header):
        return False
    row = dict(zip(header, fields[0], strict=True))
    return "config" in row and "point_key" in row and key_of(row["config"]) == row["point_key"]


def run_points(points: Sequence[Point], run_one: Callable[[Point], dict],
               store: ResultsStore | None = None,
               progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Run points into a store: the one resume loop of the kit.

    Every point's configuration is checked against the store first; then, in order, a point
    the store holds comes back from it, any other is run (``run_one(point) -> row``) and its
    row stored before the next one starts. A point listed twice runs once.

    Returns
    -------
    list of dict
        One row per point, in the order given.
    """
    stored = {}
    if store is not None:
        store.check(points)
        stored = {r["point_key"]: r for r in store.rows({p.key for p in points})}
    rows = []
    for p in points:
        key = p.key
        row = stored.get(key)
        if row is None:
            row = run_one(p)
            if store is not None:
                store.append([row])
            stored[key] = row
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def write_table(frame: pd.DataFrame, path, kind: str, meta: dict | None = None, *,
                existing: str = "refuse", wait: bool = False) -> None:
    """Write a whole table that is not a results store (``xbq fio import``'s), under the
    same rules: one writer, only regular files, replaced whole through an exclusive
    temporary file, and an existing file replaced only with ``existing="overwrite"`` and
    only if xbq wrote it as a table of the same ``kind`` (its sidecar says so)."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise XbqError(f"output {path} must end in .csv or .parquet")
    check_folder(path)
    check_target(sidecar_of(path))
    meta = dict(meta or {})
    lock = WriterLock(path, str(meta.get("command", "xbq")), wait=wait)
    try:
        check_replaceable(path, kind, existing)
        if path.suffix == ".csv":
            data = frame.to_csv(index=False).encode()
        else:
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            data = buf.getvalue()
        side = {"xbq_store": {"kind": kind, "version": STORE_VERSION},
                "machine": machine_info(), **meta}
        atomic_write(path, data)
        atomic_write(sidecar_of(path), json.dumps(side, indent=2, default=str).encode())
    finally:
        lock.release()


class JsonLinesStore(_LockedStore):
    """A store of rows as JSON lines (the calibration's checkpoint): the same contract as
    :class:`ResultsStore` for :func:`run_points` (one writer under a lock, each row fsynced
    the moment it exists, a torn last line ignored, only regular files), for rows that are
    not an engine's (nested values, no schema of columns).

    Parameters
    ----------
    path : str or Path
        The file (created at the first row).
    command : str
        Named to a second writer.
    """

    def __init__(self, path, command: str = "xbq", *, wait: bool = False):
        self.path = Path(path)
        check_folder(self.path)
        self._lock = WriterLock(self.path, command, wait=wait)
        self._rows: dict[str, dict] = {}
        try:
            if check_target(self.path):
                for line in read_bytes(self.path).decode(errors="replace").splitlines():
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # the line a killed run was writing
                    if isinstance(row, dict) and isinstance(row.get("point_key"), str):
                        self._rows[row["point_key"]] = row
        except BaseException:
            self.close()
            raise

    def check(self, points) -> None:
        """Every configuration may live in a checkpoint: nothing to refuse."""

    def rows(self, point_keys) -> list[dict]:
        return [self._rows[k] for k in point_keys if k in self._rows]

    def append(self, rows: list[dict]) -> None:
        data = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows).encode()
        append_bytes(self.path, data, create=True)
        for r in rows:
            self._rows[r["point_key"]] = r
