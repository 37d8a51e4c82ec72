"""Profile-likelihood interval of one parameter (F form, as lmfit's ``conf_interval``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import stats

from xbq.errors import XbqError
from xbq.fit._engine import solve, starts
from xbq.fit.core import build_problems


def profile(df, model, param: str, *, series: str | None = None, x: str = "jobs",
            joint: bool = False, fix=None, free=(), weighting: str = "auto",
            level: float = 0.95, n_grid: int = 25, span: float = 4.0, seed: int = 0) -> dict:
    """Profile one free parameter: fix it on a grid, refit the rest, find the interval.

    The interval keeps values with ``(RSS(v)/RSS_min - 1) * (n - k) <= F(1, n - k; level)``.

    Parameters
    ----------
    df, model, x, joint, fix, free, weighting
        As for :func:`xbq.fit.fit`.
    param : str
        Parameter label (``name`` or ``name[series]`` in joint fits with local parameters).
    series : str, optional
        Which series' problem (separate fits); default the first.
    n_grid : int
        Grid points on each side of the optimum.
    span : float
        Grid reaches ``best/span`` .. ``best*span`` (clipped to the bounds).

    Returns
    -------
    dict
        ``values``, ``rss``, ``best``, ``interval`` (``[lo, hi]``, None on a side where the
        profile never crosses the threshold: practically non-identifiable there),
        ``threshold``.
    """
    from xbq.models.registry import get_model

    spec = get_model(model) if isinstance(model, str) else model
    probs = build_problems(spec, df, x=x, joint=joint, fix=fix, free=free, weighting=weighting)
    prob = probs[0]
    if series is not None:
        match = [p for p in probs if series in p.series]
        if not match:
            raise XbqError(f"no series {series!r}")
        prob = match[0]
    if param not in prob.labels:
        raise XbqError(f"{param!r} is not a free parameter (free: {', '.join(prob.labels)})")
    j = prob.labels.index(param)
    rng = np.random.default_rng(seed)
    best = solve(prob, starts(prob, 8, rng))
    n, k = prob.n, prob.k
    if n - k <= 0:
        raise XbqError("profile needs more points than parameters")
    rss_min = 2 * best.cost
    thr = stats.f.ppf(level, 1, n - k)
    v0 = best.x[j]
    lo_b, hi_b = prob.lower[j], prob.upper[j]
    base = v0 if v0 > 0 else max(abs(hi_b - lo_b) * 1e-3, 1e-6)
    left = np.clip(base / np.geomspace(1.0, span, n_grid + 1)[1:], lo_b, hi_b)
    right = np.clip(base * np.geomspace(1.0, span, n_grid + 1)[1:], lo_b, hi_b)
    keep = [i for i in range(k) if i != j]
    sub = replace(prob, free=[prob.free[i] for i in keep], lower=prob.lower[keep],
                  upper=prob.upper[keep])

    def rss_at(v):
        for s in sub.series:
            owner = prob.free[j][1]
            if owner is None or owner == s:
                sub.base[s] = sub.base[s].copy()
                sub.base[s][spec.names.index(prob.free[j][0])] = v
        if not keep:
            r = sub.residuals(np.zeros((1, 0)))[0]
            return float(r @ r)
        return 2 * solve(sub, best.x[keep][None, :]).cost

    sub.base = {s: prob.base[s].copy() for s in prob.series}
    values, rss, bounds = [v0], [rss_min], [None, None]
    for side, grid in ((0, left), (1, right)):
        for v in grid:
            r = rss_at(v)
            values.append(v)
            rss.append(r)
            if (r / rss_min - 1.0) * (n - k) > thr:
                bounds[side] = float(v)
                break
    order = np.argsort(values)
    return dict(param=param, best=float(v0), values=np.asarray(values)[order],
                rss=np.asarray(rss)[order], interval=bounds, threshold=float(thr),
                level=level)
