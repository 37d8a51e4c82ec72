"""What-ifs in the twin: one change at a time to the calibrated machine, over the seed's job
counts, both drivers.

Each variant of :data:`WHATIFS` changes costs or switches of :class:`DesParams` and/or the
machine's shape (vCPUs, queues); nothing is refitted, so the difference from ``baseline`` is
the twin's prediction of what the change buys. ``per-ring backend pools`` gives each ring's
thread its own backend lock (``be_pools_per_ring``: the same hold time per request, no
cross-ring contention), as the merged Linux series made blkback's persistent-grant tree and
free-page pool per ring.
"""

from __future__ import annotations

import pandas as pd

from xbq.engines.des.params import DesParams
from xbq.errors import XbqError

#: name -> (what it changes, DesParams changes, simulate() changes)
WHATIFS = {
    "baseline": ("the calibrated twin as it is", {}, {}),
    "MCS locks": ("MCS queue locks instead of ticket spinlocks", {"lock_mcs": 1.0}, {}),
    "per-ring backend pools": ("blkback's persistent grants and free pages per ring, not per "
                               "device (be_pools_per_ring = 1)", {"be_pools_per_ring": 1.0},
                               {}),
    "4-page rings": ("ring-page-order 2: 128 slots a ring instead of 32",
                     {"ring_page_order": 2.0}, {}),
    "32 vCPUs": ("a 32-vCPU guest with 32 queues (dom0 as calibrated)", {},
                 {"vcpus": 32, "queues": 32}),
}
SEED_JOBS = (1, 4, 8, 16, 32, 64)


def run_whatifs(params: DesParams | None = None, jobs=SEED_JOBS, *, names=None,
                modes=("sq", "mq"), duration: float = 0.05, seed: int = 1,
                iodepth: int = 64, progress=None) -> pd.DataFrame:
    """Simulate each variant (default: all of :data:`WHATIFS`) for both drivers.

    Parameters
    ----------
    params : DesParams, optional
        The machine (default :class:`DesParams()`; the notebooks pass the calibrated one).
    jobs : sequence of int
        fio job counts.
    names : sequence of str, optional
        Variants to run, in order.
    modes : sequence of {"sq", "mq1", "mq"}
    duration : float
        Virtual seconds per point.
    seed, iodepth : int
    progress : callable, optional
        Called with ``(variant, mode, frame)`` after each (variant, mode).

    Returns
    -------
    pandas.DataFrame
        The twin's rows, with ``variant`` and ``series`` (``single_ring`` for sq,
        ``multi_ring`` for mq).
    """
    from xbq.engines.des.simulate import simulate

    base = params if params is not None else DesParams()
    names = list(WHATIFS) if names is None else list(names)
    unknown = [n for n in names if n not in WHATIFS]
    if unknown:
        raise XbqError(f"unknown what-if(s) {', '.join(unknown)}; choose from "
                       f"{', '.join(WHATIFS)}")
    series = {"sq": "single_ring", "mq1": "multi_ring_1q", "mq": "multi_ring"}
    frames = []
    for name in names:
        _, changes, shape = WHATIFS[name]
        p = base.replace(**changes)
        kw = {"vcpus": 16, "queues": 16, **shape}
        for mode in modes:
            df = simulate(mode, list(jobs), iodepth=iodepth, duration=duration, seed=seed,
                          params=p, **kw).assign(variant=name, series=series[mode])
            frames.append(df)
            if progress is not None:
                progress(name, mode, df)
    return pd.concat(frames, ignore_index=True)
