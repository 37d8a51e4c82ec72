"""The model comparison table (used by docs/models.md and the notebook)."""

from __future__ import annotations

import pandas as pd

from xbq.errors import XbqError
from xbq.fit.core import fit
from xbq.models.registry import MODELS

#: Models fitted jointly by default in the comparison (their parameters describe the machine).
JOINT = ("xenblk",)


def compare(df: pd.DataFrame, models=None, *, x: str = "jobs", bootstrap: int = 1000,
            seed: int = 0, joint=JOINT, fix=None, return_fits: bool = False,
            on_error: str = "raise"):
    """Fit each model and tabulate fit quality, out-of-sample error and the peak.

    Parameters
    ----------
    df : pandas.DataFrame
        Tidy IOPS table.
    models : iterable of str, optional
        Registry names (default: all that apply: ``host``, a model of the machine the native
        engine measured on, only when the table has its ``host_cpus`` column).
    bootstrap : int
        Parametric-bootstrap resamples per fit (for the parameter and peak intervals).
    joint : iterable of str
        Models fitted jointly across series (parameters shared unless marked local).
    fix : dict, optional
        ``{model: {param: value}}`` fixed values.
    on_error : {"raise", "note"}
        A model that cannot be fitted to this table (e.g. fewer distinct points than free
        parameters) raises, or becomes one row with the reason in a ``note`` column and no
        figures (then the table has that column).

    Returns
    -------
    pandas.DataFrame
        One row per (model, series): ``model``, ``fit`` (``separate`` or ``joint``), ``k``
        (free parameters of that fit), ``n``, ``r2`` (None when the fit failed: then a
        ``failed`` column says why, no parameter moved from its start), ``rmse``,
        ``loo_rmse``, ``aicc``,
        ``peak_x`` with ``peak_x_lo``/``peak_x_hi`` and ``peak_iops`` with its interval,
        ``fwd_err_32``/``fwd_err_64`` (relative error when fitted on x <= 16) and
        ``fwd_undetermined`` (parameters the training points leave free). With
        ``return_fits`` also the dict of :class:`~xbq.fit.FitResult`.
    """
    if models is None:
        models = [m for m in MODELS if m != "host" or "host_cpus" in df]
    models = list(models)
    if on_error not in ("raise", "note"):
        raise XbqError(f"on_error must be 'raise' or 'note', not {on_error!r}")
    fix = fix or {}
    rows, fits = [], {}
    for name in models:
        try:
            res = fit(df, name, x=x, joint=name in joint, bootstrap=bootstrap, seed=seed,
                      fix=fix.get(name))
        except XbqError as exc:
            if on_error == "raise":
                raise
            rows.append(dict(model=name, fit="joint" if name in joint else "separate",
                             series="all", note=str(exc)))
            continue
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
                fwd_err_64=ferr.get(64.0),
                fwd_undetermined=",".join(fwd.get("undetermined", [])),
                **({"failed": e["failed"]} if e.get("failed") else {})))
    table = pd.DataFrame(rows)
    return (table, fits) if return_fits else table


def _num(v, fmt):
    return "—" if v is None or v != v else format(v, fmt)


#: The comparison's columns as a reader sees them (units in the headers).
COMPARISON_COLUMNS = ("model", "fit", "series", "k", "R²", "RMSE (kIOPS)", "LOO RMSE (kIOPS)",
                      "AICc", "peak jobs [95% CI]", "peak kIOPS [95% CI]", "fwd err 32 / 64")


def comparison_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison table formatted for reading: one row per (model, series), the columns
    of :data:`COMPARISON_COLUMNS` as text (k, R², RMSE, LOO RMSE, AICc, peak, forward test);
    a notebook displays it as an HTML table."""
    rows = []
    for r in table.itertuples():
        peak_x = f"{r.peak_x:g} [{_num(r.peak_x_lo, 'g')}, {_num(r.peak_x_hi, 'g')}]"
        peak_y = (f"{r.peak_iops / 1e3:.0f} [{_num(r.peak_iops_lo / 1e3, '.0f')}, "
                  f"{_num(r.peak_iops_hi / 1e3, '.0f')}]")
        fwd = (f"{_num(100 * r.fwd_err_32, '+.0f')}% / {_num(100 * r.fwd_err_64, '+.0f')}%"
               if r.fwd_err_32 is not None else "—")
        if getattr(r, "fwd_undetermined", ""):
            fwd += f" († {r.fwd_undetermined} not determined by jobs <= 16)"
        loo = _num(None if r.loo_rmse is None else r.loo_rmse / 1e3, ".1f")
        r2 = "failed" if isinstance(getattr(r, "failed", None), str) else _num(r.r2, ".3f")
        rows.append((r.model, r.fit, r.series, r.k, r2, f"{r.rmse / 1e3:.1f}", loo,
                     _num(r.aicc, ".1f"), peak_x, peak_y, fwd))
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def markdown_table(table: pd.DataFrame) -> str:
    """The comparison table as Markdown (the rows of :func:`comparison_frame`)."""
    frame = comparison_frame(table)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def residual_table(fits: dict) -> str:
    """Relative residuals ``(observed - fit)/fit`` of every model at every point, Markdown."""
    frames = [f.predictions().query("kind == 'data'") for f in fits.values()]
    df = pd.concat(frames)
    wide = df.pivot_table(index=["series", "x"], columns="model", values="rel_residual",
                          sort=False)
    wide = wide[[m for m in fits if m in wide.columns]]
    cols = list(wide.columns)
    lines = ["| series | jobs | " + " | ".join(cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for (s, x), row in wide.iterrows():
        lines.append(f"| {s} | {x:g} | " + " | ".join(f"{100 * v:+.1f}%" for v in row) + " |")
    return "\n".join(lines)
