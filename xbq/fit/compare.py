"""The model comparison table (used by docs/models.md and the notebook)."""

from __future__ import annotations

import pandas as pd

from xbq.fit.core import fit
from xbq.models.registry import MODELS

#: Models fitted jointly by default in the comparison (their parameters describe the machine).
JOINT = ("xenblk",)


def compare(df: pd.DataFrame, models=None, *, x: str = "jobs", bootstrap: int = 1000,
            seed: int = 0, joint=JOINT, fix=None, return_fits: bool = False):
    """Fit each model and tabulate fit quality, out-of-sample error and the peak.

    Parameters
    ----------
    df : pandas.DataFrame
        Tidy IOPS table.
    models : iterable of str, optional
        Registry names (default: all).
    bootstrap : int
        Residual-bootstrap resamples per fit (for the peak interval).
    joint : iterable of str
        Models fitted jointly across series (parameters shared unless marked local).
    fix : dict, optional
        ``{model: {param: value}}`` fixed values.

    Returns
    -------
    pandas.DataFrame
        One row per (model, series): ``model``, ``fit`` (``separate`` or ``joint``), ``k``
        (free parameters of that fit), ``n``, ``r2``, ``rmse``, ``loo_rmse``, ``aicc``,
        ``peak_x`` with ``peak_x_lo``/``peak_x_hi`` and ``peak_iops`` with its interval,
        ``fwd_err_32``/``fwd_err_64`` (relative error when fitted on x <= 16). With
        ``return_fits`` also the dict of :class:`~xbq.fit.FitResult`.
    """
    models = list(MODELS) if models is None else list(models)
    fix = fix or {}
    rows, fits = [], {}
    for name in models:
        res = fit(df, name, x=x, joint=name in joint, bootstrap=bootstrap, seed=seed,
                  fix=fix.get(name))
        fits[name] = res
        for s, e in res.series.items():
            pc = e.get("peak_ci") or {"x": [None, None], "iops": [None, None]}
            fwd = e.get("forward") or {}
            ferr = dict(zip(fwd.get("x", []), fwd.get("rel_err", []), strict=True))
            rows.append(dict(
                model=name, fit="joint" if res.joint else "separate", series=s,
                k=e["k"], n=e["n_fit"], r2=e["r2"], rmse=e["rmse"], loo_rmse=e["loo_rmse"],
                aicc=e["aicc"], peak_x=e["peak_x"], peak_x_lo=pc["x"][0], peak_x_hi=pc["x"][1],
                peak_iops=e["peak_iops"], peak_iops_lo=pc["iops"][0],
                peak_iops_hi=pc["iops"][1], fwd_err_32=ferr.get(32.0),
                fwd_err_64=ferr.get(64.0)))
    table = pd.DataFrame(rows)
    return (table, fits) if return_fits else table
