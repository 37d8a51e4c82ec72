"""Figures of the study (matplotlib/seaborn), shared by ``xbq reproduce`` and the notebooks.

Each function takes tidy frames or fit results and returns a matplotlib ``Figure``; saving
and showing are the caller's business.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

SERIES_COLORS = {"single_ring": "#c0392b", "multi_ring": "#2471a3"}
#: One name per series in every figure: the engines' modes by the seed's series names.
MODE_SERIES = {"sq": "single_ring", "mq": "multi_ring", "mq1": "one blk-mq queue"}


def _color(series: str, k: int) -> str:
    return SERIES_COLORS.get(series, sns.color_palette()[k % 10])


def plot_fits(data: pd.DataFrame, fits: dict, *, x: str = "jobs", ncols: int = 4):
    """One panel per model: the data, the fitted curve (and band) of each series, log x.

    Parameters
    ----------
    data : pandas.DataFrame
        Tidy IOPS table (``series``, ``x``, ``iops``).
    fits : dict
        ``{model name: FitResult}``.
    """
    names = list(fits)
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        pred = fits[name].predictions()
        for k, (s, g) in enumerate(pred.groupby("series", sort=True)):
            c = _color(s, k)
            curve = g[g.kind == "curve"]
            ax.plot(curve.x, curve.fit / 1e3, color=c, lw=1.5)
            if curve.lo.notna().any():
                ax.fill_between(curve.x, curve.lo / 1e3, curve.hi / 1e3, color=c, alpha=0.2,
                                lw=0)
            pts = data[data.series == s]
            ax.scatter(pts[x], pts.iops / 1e3, color=c, s=18, zorder=3, label=s)
        r2 = ", ".join("failed" if v.get("failed") else f"{v['r2']:.2f}"
                       for v in fits[name].series.values())
        ax.set_title(f"{name} (R² {r2})", fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("kIOPS")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_iops(frames: dict[str, pd.DataFrame], *, x: str = "jobs", title: str | None = None):
    """IOPS against ``x`` for several tidy tables side by side (e.g. seed, twin, native).

    Parameters
    ----------
    frames : dict
        ``{panel title: frame}``; each frame has ``series`` (or ``mode``), ``x`` and ``iops``
        (repetitions are averaged, with their range as error bars).
    """
    ncols = min(len(frames), 2)  # at most two panels a row: readable at the page's width
    nrows = -(-len(frames) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (name, df) in zip(axes.flat, frames.items(), strict=False):
        key = "series" if "series" in df else "mode"
        for k, (s, g) in enumerate(df.groupby(key, sort=True)):
            label = MODE_SERIES.get(s, s)
            agg = g.groupby(x)["iops"].agg(["mean", "min", "max"]).reset_index()
            err = np.vstack([agg["mean"] - agg["min"], agg["max"] - agg["mean"]]) / 1e3
            ax.errorbar(agg[x], agg["mean"] / 1e3, yerr=err, marker="o", ms=4, capsize=2,
                        color=_color(label, k), label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("fio jobs" if x == "jobs" else x)
        ax.set_ylabel("IOPS (thousands)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(frames):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


STATE_COLORS = {"spinning on a lock": "#c0392b", "holding a lock": "#e67e22",
                "other work": "#2471a3", "idle": "#d5d8dc"}


def plot_time_breakdown(long: pd.DataFrame):
    """Stacked bars: each CPU group's time by state at each job count, one panel per group
    and series (:func:`xbq.study.breakdown.time_breakdown`)."""
    key = "series" if "series" in long else "mode"
    groups = list(dict.fromkeys(long["group"]))
    series = sorted(long[key].unique())
    fig, axes = plt.subplots(len(groups), len(series), figsize=(4.4 * len(series),
                             2.8 * len(groups)), sharey=True, squeeze=False)
    for i, g in enumerate(groups):
        for j, s in enumerate(series):
            ax = axes[i, j]
            part = long[(long.group == g) & (long[key] == s)]
            wide = part.pivot_table(index="jobs", columns="state", values="fraction",
                                    sort=True)
            bottom = np.zeros(len(wide))
            xs = np.arange(len(wide))
            for state, color in STATE_COLORS.items():
                if state in wide:
                    ax.bar(xs, wide[state].to_numpy(), bottom=bottom, color=color,
                           label=state, width=0.75)
                    bottom += wide[state].to_numpy()
            ax.set_xticks(xs, [str(v) for v in wide.index])
            ax.set_title(f"{s}: {g}", fontsize=9)
            ax.set_ylim(0, 1)
            if j == 0:
                ax.set_ylabel("share of CPU time")
            if i == len(groups) - 1:
                ax.set_xlabel("fio jobs")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_per_request(long: pd.DataFrame):
    """Counts per request against job count, one panel per metric
    (:func:`xbq.study.breakdown.per_request`)."""
    key = "series" if "series" in long else "mode"
    metrics = list(dict.fromkeys(long["metric"]))
    ncols = 3
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.7 * nrows), squeeze=False)
    for ax, m in zip(axes.flat, metrics, strict=False):
        part = long[long.metric == m]
        for k, (s, g) in enumerate(part.groupby(key, sort=True)):
            g = g.sort_values("jobs")
            ax.plot(g.jobs, g.value, marker="o", ms=3, color=_color(s, k), label=s)
        ax.set_xscale("log", base=2)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("fio jobs")
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_whatifs(frame: pd.DataFrame):
    """IOPS against job count for every what-if variant, one panel per series
    (:func:`xbq.study.whatif.run_whatifs`)."""
    series = sorted(frame["series"].unique())
    fig, axes = plt.subplots(1, len(series), figsize=(5.0 * len(series), 3.4), sharey=True,
                             squeeze=False)
    for ax, s in zip(axes.flat, series, strict=True):
        part = frame[frame.series == s]
        for k, (v, g) in enumerate(part.groupby("variant", sort=False)):
            g = g.sort_values("jobs")
            ax.plot(g.jobs, g.iops / 1e3, marker="o", ms=3, label=v,
                    color="k" if v == "baseline" else sns.color_palette()[k % 10],
                    lw=2.0 if v == "baseline" else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_title(s, fontsize=10)
        ax.set_xlabel("fio jobs")
        ax.set_ylabel("kIOPS")
    axes.flat[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig



def plot_twin_native(table: pd.DataFrame):
    """Measured native IOPS (mean over repetitions, min-max as error bars) and the twin's
    prediction from the microbenchmarked costs (dashed), one panel per sweep.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`xbq.study.twin_native.compare`'s rows: ``source``, ``mode``, ``jobs``,
        ``iops_mean``, ``iops_min``, ``iops_max``, ``twin_iops``.
    """
    sources = list(dict.fromkeys(table["source"]))
    ncols = min(len(sources), 4)
    nrows = -(-len(sources) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False,
                             sharey=False)
    for ax, src in zip(axes.flat, sources, strict=False):
        for mode, g in table[table["source"] == src].groupby("mode", sort=True):
            g = g.sort_values("jobs")
            name = MODE_SERIES.get(mode, mode)
            c = SERIES_COLORS.get(name, "#555555")
            err = np.vstack([g["iops_mean"] - g["iops_min"], g["iops_max"] - g["iops_mean"]])
            ax.errorbar(g["jobs"], g["iops_mean"] / 1e3, yerr=err / 1e3, marker="o", ms=4,
                        capsize=2, color=c, label=f"{name} measured")
            ax.plot(g["jobs"], g["twin_iops"] / 1e3, ls="--", marker="x", color=c,
                    label=f"{name} twin")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("fio jobs")
        ax.set_ylabel("IOPS (thousands)")
        ax.set_title(src, fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(sources):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_fit_bands(pred: pd.DataFrame):
    """Each model's fitted curves with their bootstrap bands and the data, one panel per model.

    Parameters
    ----------
    pred : pandas.DataFrame
        :meth:`xbq.fit.FitResult.predictions` of several fits concatenated: ``model``,
        ``series``, ``kind`` (``curve`` or ``data``), ``x``, ``fit``, ``lo``, ``hi``, ``iops``.
    """
    curves = pred[pred.kind == "curve"]
    data = pred[pred.kind == "data"]
    g = sns.FacetGrid(curves, col="model", col_wrap=4, hue="series", sharey=False, height=2.6)
    g.map_dataframe(sns.lineplot, x="x", y="fit")
    for ax, (name, sub) in zip(g.axes.flat, curves.groupby("model", sort=False), strict=False):
        for i, (_s, part) in enumerate(sub.groupby("series")):
            ax.fill_between(part.x, part.lo, part.hi, alpha=0.2, color=f"C{i}")
        d = data[data.model == name]
        for i, (_s, part) in enumerate(d.groupby("series")):
            ax.scatter(part.x, part.iops, color=f"C{i}", s=14, zorder=3)
        ax.set_xscale("log", base=2)
    g.add_legend()
    g.set_axis_labels("fio jobs", "IOPS")
    return g.figure


def plot_residuals(data: pd.DataFrame):
    """Relative residuals of every model against the job count, one panel per series.

    Parameters
    ----------
    data : pandas.DataFrame
        The ``kind == "data"`` rows of :meth:`xbq.fit.FitResult.predictions`: ``series``,
        ``model``, ``x`` (fio jobs), ``rel_residual``.
    """
    series = sorted(data["series"].unique())
    fig, ax = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.6), sharey=True,
                           squeeze=False)
    for axis, s in zip(ax.flat, series, strict=True):
        part = data[data["series"] == s]
        sns.lineplot(part, x="x", y="rel_residual", hue="model", marker="o", ax=axis)
        axis.axhline(0, color="k", lw=0.8)
        axis.set_xscale("log", base=2)
        axis.set_title(s)
        axis.set_xlabel("fio jobs")
        axis.set_ylabel("relative residual, (observed - fit) / fit")
    fig.tight_layout()
    return fig


def plot_rings(pred_wide: pd.DataFrame, *, jobs: int = 16, vcpus: int = 16):
    """Predicted IOPS against the ring count, one line per variant.

    Parameters
    ----------
    pred_wide : pandas.DataFrame
        Index: rings; one column of IOPS per variant.
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in pred_wide.columns:
        ax.plot(pred_wide.index, pred_wide[name] / 1e3, marker="o", label=name)
    ax.set(xscale="log", xlabel=f"rings ({jobs} fio jobs, {vcpus} vCPUs)",
           ylabel="IOPS (thousands)", title="the calibrated twin's predictions")
    ax.set_xticks(pred_wide.index, [str(int(q)) for q in pred_wide.index])
    ax.legend(fontsize=8)
    return fig
