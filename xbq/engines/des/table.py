"""The twin on every point of a tidy IOPS table, next to the table's own figures.

One implementation of "simulate the seed (or any measured table) and compare", used by the
calibration, ``xbq reproduce`` and the notebooks: each row (``series``, ``jobs``,
``queues``, ``vcpus``, ``iops``) runs as one point, ``single_ring`` as mode ``sq`` and
``multi_ring`` as ``mq`` with the row's queue count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xbq.engines.des.params import DesParams
from xbq.engines.schema import to_frame
from xbq.errors import XbqError

SERIES_MODE = {"single_ring": "sq", "multi_ring": "mq"}
#: fio iodepth of the IOmeter job file (data/seed/xen-blkmq-rfc-2015.md).
SEED_IODEPTH = 64
TABLE_COLUMNS = ("series", "jobs", "queues", "vcpus", "iops")


def check_table(table) -> None:
    """One-line :class:`XbqError` unless ``table`` has :data:`TABLE_COLUMNS` and only the
    series of :data:`SERIES_MODE`."""
    missing = [c for c in TABLE_COLUMNS if c not in table]
    if missing:
        raise XbqError(f"the table lacks column(s) {', '.join(missing)}")
    unknown = sorted(set(table["series"]) - set(SERIES_MODE))
    if unknown:
        raise XbqError(f"series {', '.join(map(str, unknown))} not understood (expected "
                       f"{', '.join(SERIES_MODE)})")


def simulate_table(table: pd.DataFrame, params: DesParams | None = None, *,
                   duration=None, requests: float | None = None, seed: int = 1,
                   iodepth: int = SEED_IODEPTH, progress=None,
                   quiet: bool = False) -> pd.DataFrame:
    """Simulate every row of ``table``; return the twin's rows with the table's figure.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy IOPS table with :data:`TABLE_COLUMNS` (the seed: :func:`xbq.study.datasets.load_seed`).
    params : DesParams, optional
        The costs (default :class:`DesParams()`).
    duration : float or sequence of float, optional
        Virtual seconds of the measured window, one for all points or one per row.
    requests : float, optional
        Instead of ``duration``: each point's window lasts ``requests / table iops`` (so
        every point completes about that many requests).
    seed, iodepth : int
        Seed of every point (common random numbers) and fio's iodepth.
    progress : callable, optional
        Called with each point's row as it finishes.
    quiet : bool
        No compile notice.

    Returns
    -------
    pandas.DataFrame
        The twin's columns (:data:`xbq.engines.schema.COLUMNS` and the twin's extras), then
        ``series``, ``iops_table`` (the table's figure) and ``rel_error``
        (``iops / iops_table - 1``), one row per table row, in its order.
    """
    from xbq.engines.des.simulate import simulate

    check_table(table)
    measured = table["iops"].to_numpy(float)
    if (duration is None) == (requests is None):
        raise XbqError("give a duration or a number of requests per point, not both")
    if requests is not None:
        durations = [requests / m for m in measured]
    elif np.ndim(duration) == 0:
        durations = [float(duration)] * len(table)
    else:
        durations = [float(d) for d in duration]
        if len(durations) != len(table):
            raise XbqError(f"{len(durations)} durations for {len(table)} points")
    rows = []
    for row, dur in zip(table.itertuples(index=False), durations, strict=True):
        df = simulate(SERIES_MODE[row.series], int(row.jobs), queues=int(row.queues),
                      vcpus=int(row.vcpus), iodepth=iodepth, duration=float(dur), seed=seed,
                      params=params, quiet=quiet)
        r = df.iloc[0].to_dict()
        r["series"] = row.series
        r["iops_table"] = float(row.iops)
        r["rel_error"] = r["iops"] / float(row.iops) - 1.0
        rows.append(r)
        if progress is not None:
            progress(r)
    return to_frame(rows)
