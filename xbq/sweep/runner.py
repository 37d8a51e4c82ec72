"""Run a sweep: every point a task, on a Dask cluster (a local one by default) or serially,
results streamed into a results store by the client alone.

The client is the only writer, under the store's lock (:class:`xbq.study.results.ResultsStore`):
each finished point is appended to the store (and fsynced) the moment its result arrives,
once per key (a point that finishes twice, because Dask ran it again after a worker died, is
stored once). A rerun with the same store skips every point already stored without an error
(the serial path is :func:`xbq.study.results.run_points` itself), so a sweep killed at any
moment loses nothing it had finished and repeats nothing. A point that fails is stored with
its error and the sweep goes on; the next run tries it again.
"""

from __future__ import annotations

import logging
import os

import pandas as pd

from xbq.errors import XbqError
from xbq.study.results import ResultsStore, run_points
from xbq.sweep.spec import SweepSpec, load_spec, spec_from_dict
from xbq.sweep.tasks import failed_row, run_batch, run_point, warm_kernels


def _spec(spec) -> SweepSpec:
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, dict):
        return spec_from_dict(spec)
    return load_spec(spec)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def local_client(workers: int | None = None):
    """A Dask client on a new local cluster: ``workers`` processes (default: the usable
    CPUs), one thread each, no dashboard. Close it (and its cluster) when done."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers or _cpus(), threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster)


def connect(scheduler: str):
    """A Dask client on the cluster whose scheduler listens at ``scheduler``
    (``tcp://host:8786``); one line if it cannot be reached."""
    from distributed import Client

    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise XbqError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None


def run(spec, client=None, *, out=None, workers: int | None = None,
        scheduler: str | None = None, serial: bool = False, existing: str = "resume",
        mixed: bool = False, wait: bool = False, progress=None, notes=None) -> pd.DataFrame:
    """Run every point of a sweep; return the tidy frame (one row per point, spec order).

    Parameters
    ----------
    spec : SweepSpec, dict or path
        The sweep (:mod:`xbq.sweep.spec`).
    client : distributed.Client, optional
        Run on this cluster. Without one: ``scheduler`` (an address), else a local cluster of
        ``workers`` processes made for this sweep and closed after it; ``serial`` runs the
        points one after another in this process instead.
    out : path, optional
        The results store (default: the spec's ``out``; none: nothing is stored).
    existing : {"resume", "overwrite", "refuse"}
        What to do with a store that exists (:class:`xbq.study.results.ResultsStore`).
    mixed, wait : bool
        Let the store hold several configurations; wait for another writer of it.
    progress : callable, optional
        Called with each row as it is stored (or found in the store).
    notes : callable, optional
        Called with a line about how the sweep runs (native points serialised, reuse).

    Returns
    -------
    pandas.DataFrame
        The engine's columns, then every configuration entry; failed points have NaN
        figures and an ``error``.
    """
    spec = _spec(spec)
    points = spec.points()
    out = out if out is not None else spec.out
    store = None
    if out is not None:
        store = ResultsStore(out, {"command": "xbq sweep", "sweep": spec.name,
                                   "engine": spec.engine, "axes": spec.axes,
                                   "fixed": spec.fixed, "seeds": spec.seeds},
                             axes=spec.store_axes(), existing=existing, mixed=mixed,
                             wait=wait)
    try:
        rows = _run_all(spec, points, store, client, workers, scheduler, serial, progress,
                        notes or (lambda line: None))
    finally:
        if store is not None:
            store.close()
    frame = pd.DataFrame(rows)
    from xbq.engines.schema import COLUMNS

    first = [c for c in COLUMNS if c in frame]
    return frame[first + [c for c in frame.columns if c not in first]]


def _run_all(spec, points, store, client, workers, scheduler, serial, progress, say) -> list:
    if serial:
        return run_points(points, run_point, store, progress)
    done = {}
    if store is not None:
        store.check(points)
        done = {r["point_key"]: r for r in store.rows({p.key for p in points})}
    rows = dict(done)
    todo = list({p.key: p for p in points if p.key not in done}.values())
    if done:
        say(f"{len(points) - len(todo)} of {len(points)} point(s) already in {store.path}")
    for p in points:
        if p.key in done and progress is not None:
            progress(done[p.key])

    def keep(row):
        key = row["point_key"]
        if key in rows and "error" not in row:
            return  # finished twice (rerun after a worker died): stored once
        rows[key] = row
        if store is not None:
            store.append([row])
        if progress is not None:
            progress(row)

    if todo:
        own = client is None
        if own:
            client = connect(scheduler) if scheduler else local_client(workers)
        try:
            _run_dask(client, spec, todo, keep, say)
        finally:
            if own:
                cluster = getattr(client, "cluster", None)
                client.close()
                if cluster is not None:
                    cluster.close()
    return [rows[p.key] for p in points]


#: Tasks per worker a sweep's points are dealt into: enough to balance points of unequal
#: cost, few enough that a task's round trip through the scheduler is small beside its work.
TASKS_PER_WORKER = 4


def _batches(todo: list, n: int) -> list[list]:
    """``todo`` dealt round-robin into at most ``n`` batches (neighbouring points, often of
    similar cost, go to different batches)."""
    n = max(1, min(n, len(todo)))
    return [todo[i::n] for i in range(n)]


def _run_dask(client, spec: SweepSpec, todo: list, keep, say) -> None:
    from distributed import as_completed

    if spec.engine == "native":
        say("native points run one at a time on each worker host (they would measure "
            "each other): a cluster-wide lock per host serialises them")
    # The first point alone: it compiles the kernels into the shared JIT cache once; then
    # every worker loads them (warm_kernels) before the batches start.
    first = client.submit(run_point, todo[0], pure=False, key=f"xbq-{todo[0].key}")
    keep(_result(first, todo[0]))
    rest = todo[1:]
    if not rest:
        return
    try:
        client.run(warm_kernels, spec.engine)
    except Exception:  # noqa: BLE001 - a worker lost meanwhile: its points just run cold
        pass
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    batches = _batches(rest, TASKS_PER_WORKER * workers)
    futs = client.map(run_batch, batches, pure=False)
    futures = dict(zip(futs, batches, strict=True))
    for fut in as_completed(futs):
        for row in _batch_result(fut, futures[fut]):
            keep(row)


def _batch_result(fut, batch) -> list[dict]:
    try:
        return fut.result()
    except Exception as exc:  # the task could not run at all (e.g. its worker kept dying)
        err = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return [failed_row(p, err) for p in batch]


def _result(fut, point) -> dict:
    try:
        return fut.result()
    except Exception as exc:  # the task could not run at all (e.g. its worker kept dying)
        return failed_row(point, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
