"""One sweep point, run where a worker runs it: the twin or the native engine, its row with
the sweep's labels; an error becomes a row that says what failed, never an exception that
stops the sweep."""

from __future__ import annotations

import math
import socket
from contextlib import nullcontext

from xbq.engines.schema import COLUMNS
from xbq.sweep.spec import SweepPoint


def _native_lock():
    """Native points never run two at a time on one host (they would measure each other):
    inside a Dask worker, a cluster-wide lock named after the host serialises them."""
    try:
        from distributed import Lock, get_worker

        get_worker()
    except (ImportError, ValueError):
        return nullcontext()
    return Lock(f"xbq-native-{socket.gethostname()}")


def _run(sp: SweepPoint) -> dict:
    if sp.point.engine == "des":
        from xbq.engines.des.simulate import simulate_point

        return simulate_point(sp.point, quiet=True)
    from xbq.engines.native import measure_point

    with _native_lock():
        return measure_point(sp.point)


def failed_row(sp: SweepPoint, error: str) -> dict:
    """The row of a point that could not run: NaN figures, its settings, labels and key, the
    error."""
    row = dict.fromkeys(COLUMNS, math.nan)
    config = sp.config()
    row.update({k: v for k, v in config.items() if k in COLUMNS})
    row.update(sp.labels)
    sp.point.stamp(row)
    row["error"] = error
    return row


def run_point(sp: SweepPoint) -> dict:
    """Run one sweep point; return its row (the engine's, with the sweep's labels as columns)
    or, when it fails, :func:`failed_row`."""
    try:
        row = _run(sp)
    except Exception as exc:  # recorded in the store; the sweep goes on
        return failed_row(sp, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    for k, v in sp.labels.items():
        row.setdefault(k, v)
    row["worker_host"] = socket.gethostname()
    return row


def run_batch(batch: list[SweepPoint]) -> list[dict]:
    """Run sweep points one after another on one worker (one task for many short points)."""
    return [run_point(sp) for sp in batch]


def warm_kernels(engine: str) -> None:
    """Load (or compile) the twin's kernels in this process: a tiny point, its row discarded,
    so the sweep's own points never wait for them. (Native points are long and run one at a
    time per host: nothing to gain.)"""
    if engine == "des":
        from xbq.engines.des.point import DesPoint
        from xbq.engines.des.simulate import simulate_point

        simulate_point(DesPoint(jobs=1, queues=1, vcpus=1, iodepth=1, duration_s=1e-4),
                       quiet=True)
