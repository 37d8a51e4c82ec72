"""Where the time goes in the twin: its per-resource utilisation and per-request counts as
tidy long frames, ready for stacked plots (:func:`xbq.study.plots.plot_time_breakdown`).

The twin measures, over its window, the fraction of each CPU group's time spent busy,
spinning on a driver lock and holding one (``util_*_busy``, ``_spin``, ``_hold``, spin and
hold both within busy), and per request the notifications, interrupts, context switches and
the backend's batch size. :func:`time_breakdown` splits each group's time into disjoint
states that add up to one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xbq.errors import XbqError

#: The CPU groups of the twin: guest vCPUs (fio jobs, interrupts) and dom0's (blkback).
GROUPS = {"vcpu": "guest vCPUs", "dom0": "dom0 vCPUs"}
#: Disjoint states of a CPU's time, in stacking order.
STATES = ("spinning on a lock", "holding a lock", "other work", "idle")
#: Counts per driver request (or per batch), their labels.
PER_REQUEST = {"notify_fe_per_req": "frontend notifications / request",
               "notify_be_per_req": "backend notifications / response",
               "irq_per_req": "guest interrupts / request",
               "ctx_per_req": "context switches / request",
               "parked_per_req": "requests parked on a full ring / I/O",
               "tag_wait_per_req": "sleeps for a free request (tag) / I/O",
               "batch_mean": "requests per backend batch"}


def _need(frame: pd.DataFrame, cols) -> None:
    missing = [c for c in cols if c not in frame]
    if missing:
        raise XbqError(f"not a twin frame: it lacks {', '.join(missing)}")


def time_breakdown(twin: pd.DataFrame) -> pd.DataFrame:
    """The share of each CPU group's time in each state, per point.

    Returns
    -------
    pandas.DataFrame
        Long: ``series`` (or ``mode``), ``jobs``, ``group`` (:data:`GROUPS` label),
        ``state`` (:data:`STATES`), ``fraction``; the four states of a point and group sum
        to 1 (busy is capped at 1).
    """
    key = "series" if "series" in twin else "mode"
    cols = [f"util_{g}_{s}" for g in GROUPS for s in ("busy", "spin", "hold")]
    _need(twin, [key, "jobs", *cols])
    rows = []
    for _, r in twin.iterrows():
        for g, label in GROUPS.items():
            busy = float(np.clip(r[f"util_{g}_busy"], 0.0, 1.0))
            spin = float(np.clip(r[f"util_{g}_spin"], 0.0, busy))
            hold = float(np.clip(r[f"util_{g}_hold"], 0.0, busy - spin))
            parts = (spin, hold, busy - spin - hold, 1.0 - busy)
            rows += [{key: r[key], "jobs": int(r["jobs"]), "group": label, "state": st,
                      "fraction": v} for st, v in zip(STATES, parts, strict=True)]
    return pd.DataFrame(rows)


def per_request(twin: pd.DataFrame) -> pd.DataFrame:
    """Notifications, interrupts, context switches, parked requests and batch size per point.

    Returns
    -------
    pandas.DataFrame
        Long: ``series`` (or ``mode``), ``jobs``, ``metric`` (a :data:`PER_REQUEST` label),
        ``value``.
    """
    key = "series" if "series" in twin else "mode"
    _need(twin, [key, "jobs", *PER_REQUEST])
    long = twin[[key, "jobs", *PER_REQUEST]].melt(id_vars=[key, "jobs"], var_name="metric")
    long["metric"] = long["metric"].map(PER_REQUEST)
    return long
