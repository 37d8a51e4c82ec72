"""The summary of a sweep: replications of each point pooled into a mean and a t-interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

#: Figures summarised per point (when the engine reports them).
FIGURES = ("iops", "lat_mean_us", "lat_p99_us")


def summarize(frame: pd.DataFrame, by, *, level: float = 0.95) -> pd.DataFrame:
    """Mean, standard deviation and ``level`` t-interval of each figure over replications.

    Parameters
    ----------
    frame : pandas.DataFrame
        A sweep's rows (:func:`xbq.sweep.run`); failed rows are counted, not averaged.
    by : list of str
        The settings that define a point (the sweep's axes; not the seed).

    Returns
    -------
    pandas.DataFrame
        One row per point: ``by``, ``n`` (replications that ran), ``failed``, and for each
        figure ``<fig>_mean``, ``<fig>_std``, ``<fig>_ci_lo``, ``<fig>_ci_hi`` (NaN with
        fewer than two replications).
    """
    by = [b for b in by if b in frame]
    failed = frame["error"].notna() if "error" in frame else pd.Series(False, frame.index)
    rows = []
    groups = frame.groupby(by, sort=False, dropna=False) if by else [((), frame)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        ok = g[~failed.loc[g.index]]
        row = dict(zip(by, key, strict=True))
        row["n"] = len(ok)
        row["failed"] = int(failed.loc[g.index].sum())
        for fig in FIGURES:
            if fig not in ok:
                continue
            v = ok[fig].astype(float).to_numpy()
            v = v[np.isfinite(v)]
            m = float(v.mean()) if v.size else float("nan")
            sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
            half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * sd / np.sqrt(v.size)) \
                if v.size > 1 else float("nan")
            row.update({f"{fig}_mean": m, f"{fig}_std": sd, f"{fig}_ci_lo": m - half,
                        f"{fig}_ci_hi": m + half})
        rows.append(row)
    return pd.DataFrame(rows)
