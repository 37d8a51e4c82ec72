"""Which of the twin's costs a table determines: the Jacobian at an optimum and what follows.

At a calibration's optimum the relative residuals ``r = simulated / measured - 1`` are
differentiated in the logarithm of each fitted cost (central differences, every evaluation
on the same seeds and placements: common random numbers). With the residuals' noise
``sigma`` (relative), the Fisher information is ``J^T J / sigma^2``; its inverse is the
covariance of the log-costs, so a cost's standard error is in e-folds (0.5 e-folds: known to
a factor 1.65). Reported: the singular values of ``J`` and its condition number, each cost's
standard error, the correlation matrix, the effective number of parameters with a prior of
one e-fold on every cost (``sum(s^2 / (s^2 + sigma^2))``, 0 for a direction the data do not
see, 1 for one they pin down), and :func:`select`: the largest set of costs each determined
to ``threshold`` e-folds when the others are held fixed (the worst-determined cost is fixed
first, then the standard errors of the rest recomputed).
"""

from __future__ import annotations

import numpy as np

from xbq.engines.des.params import PHYSICAL, DesParams
from xbq.errors import XbqError

#: A cost is "determined" when its standard error is at most this many e-folds.
THRESHOLD = 0.5
#: The step of the central differences, in e-folds (10 %: well above the noise that common
#: random numbers leave, well inside the region where the residuals are smooth).
STEP = 0.1


def _evaluate(task):
    """One objective evaluation (a picklable task): ``(table, params dict, durations,
    seeds)`` -> each point's mean IOPS over the seeds."""
    from xbq.study.calibrate import _simulate_points

    table, values, durations, seeds = task
    return _simulate_points(table, DesParams(**values), durations, seeds)


def jacobian(table, params: DesParams, names, durations, seeds, *, step: float = STEP,
             mapper=None) -> dict:
    """Central-difference Jacobian of the relative residuals in ``ln(cost)``.

    Parameters
    ----------
    table : pandas.DataFrame
        The IOPS table (:data:`xbq.engines.des.table.TABLE_COLUMNS`).
    params : DesParams
        The point to differentiate at (a calibration's optimum).
    names : sequence of str
        Costs (``*_ns`` fields, each > 0 at ``params``).
    durations : sequence of float
        Each point's virtual window (s).
    seeds : sequence of int
        The evaluations' seeds (common random numbers: the same in every evaluation).
    step : float
        Central-difference step in e-folds (clipped at the physical bounds, then one-sided).
    mapper : callable, optional
        ``mapper(fn, tasks)`` yielding ``(index, fn(task))``: evaluations in parallel.

    Returns
    -------
    dict
        ``names``, ``residual`` (at ``params``), ``J`` (points x costs, per e-fold) and
        ``nfev``.
    """
    names = list(names)
    bad = [n for n in names if n not in PHYSICAL or not n.endswith("_ns")
           or getattr(params, n) <= 0]
    if bad:
        raise XbqError(f"cannot differentiate in ln(cost) at {', '.join(bad)}: "
                       "costs (*_ns) above 0 only")
    measured = table["iops"].to_numpy(float)
    seeds = [int(s) for s in seeds]
    base = params.to_dict()
    tasks, steps = [(table, base, list(durations), seeds)], []
    for n in names:
        v = getattr(params, n)
        lo, hi = max(PHYSICAL[n][0], 1e-9), PHYSICAL[n][1]
        up = min(np.log(v) + step, np.log(hi))
        dn = max(np.log(v) - step, np.log(lo))
        steps.append(up - dn)
        for x in (up, dn):
            tasks.append((table, {**base, n: float(np.exp(x))}, list(durations), seeds))
    from xbq.study.calibration import map_in_order

    r = [np.asarray(o, float) / measured - 1.0 for o in map_in_order(_evaluate, tasks, mapper)]
    J = np.column_stack([(r[1 + 2 * k] - r[2 + 2 * k]) / steps[k]
                         for k in range(len(names))])
    return {"names": names, "residual": r[0], "J": J, "nfev": len(tasks)}


#: Singular values at or below this fraction of the largest are directions the data do not
#: see: a cost with weight on one has an infinite standard error.
RCOND = 1e-10


def _standard_errors(J, sigma):
    """Covariance of the log-costs (inverse Fisher information, ``sigma^2 (J^T J)^-1``) and
    the standard errors; through the SVD, so a direction the data do not see gives the
    costs along it an infinite error (a pseudo-inverse would give them none)."""
    _, s, vt = np.linalg.svd(np.asarray(J, float), full_matrices=False)
    k = vt.shape[1]
    if s.size < k:  # fewer points than costs: the missing directions are unseen too
        s = np.concatenate([s, np.zeros(k - s.size)])
        vt = np.linalg.svd(np.vstack([J, np.zeros((k - J.shape[0], k))]))[2]
    seen = s > RCOND * max(s[0], 1e-300)
    w = np.where(seen, sigma ** 2 / np.where(seen, s, 1.0) ** 2, 0.0)
    cov = (vt.T * w) @ vt
    blind = np.any(np.abs(vt[~seen]) > 1e-8, axis=0) if (~seen).any() else np.zeros(k, bool)
    se = np.where(blind, np.inf, np.sqrt(np.clip(np.diag(cov), 0.0, None)))
    return cov, se


def analyse(J, names, *, sigma: float, threshold: float = THRESHOLD) -> dict:
    """Identifiability of ``names`` from ``J`` (points x costs, relative residual per
    e-fold) at relative noise ``sigma``.

    Returns
    -------
    dict
        ``sigma``; ``singular_values`` (largest first) and ``condition``; ``effective``
        (effective parameters with a one-e-fold prior); per cost ``se_efolds`` (standard
        error of ln(cost), all costs free) and ``determined`` (``se <= threshold``);
        ``correlation`` (matrix, ``names`` order) and ``strong_correlations`` (pairs with
        ``|rho| >= 0.9``); ``selected`` (:func:`select`) and their standard errors
        ``selected_se_efolds`` when only they are free.
    """
    J = np.asarray(J, float)
    if sigma <= 0:
        raise XbqError("sigma must be positive")
    s = np.linalg.svd(J, compute_uv=False)
    cov, se = _standard_errors(J, sigma)
    d = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(d, d)
    strong = [{"a": names[i], "b": names[j], "rho": float(corr[i, j])}
              for i in range(len(names)) for j in range(i + 1, len(names))
              if abs(corr[i, j]) >= 0.9]
    strong.sort(key=lambda c: -abs(c["rho"]))
    chosen = select(J, names, sigma=sigma, threshold=threshold)
    idx = [names.index(n) for n in chosen]
    _, se_sel = _standard_errors(J[:, idx], sigma) if idx else (None, np.array([]))
    return {"sigma": float(sigma), "threshold_efolds": float(threshold),
            "singular_values": [float(v) for v in s],
            "condition": float(s[0] / s[-1]) if s[-1] > 0 else float("inf"),
            "effective": float(np.sum(s ** 2 / (s ** 2 + sigma ** 2))),
            "se_efolds": {n: float(v) for n, v in zip(names, se, strict=True)},
            "determined": [n for n, v in zip(names, se, strict=True) if v <= threshold],
            "correlation": [[float(v) for v in row] for row in corr],
            "strong_correlations": strong, "selected": chosen,
            "selected_se_efolds": {n: float(v) for n, v in zip(chosen, se_sel, strict=True)}}


def select(J, names, *, sigma: float, threshold: float = THRESHOLD) -> list[str]:
    """The costs a fit can name: drop the worst-determined cost (largest standard error with
    the others still free) until every cost left is determined to ``threshold`` e-folds."""
    keep = list(range(len(names)))
    while keep:
        _, se = _standard_errors(np.asarray(J, float)[:, keep], sigma)
        worst = int(np.argmax(se))
        if se[worst] <= threshold:
            break
        keep.pop(worst)
    return [names[i] for i in keep]


def report(info: dict) -> str:
    """The analysis as text: singular values, standard errors, strong correlations."""
    L = [f"identifiability at relative noise {info['sigma']:.1%}: singular values "
         + ", ".join(f"{v:.3g}" for v in info["singular_values"])
         + f" (condition {info['condition']:.0f}); effective parameters "
         f"{info['effective']:.1f} of {len(info['se_efolds'])}"]
    for n, v in info["se_efolds"].items():
        sel = info["selected_se_efolds"].get(n)
        tag = f"fitted (+-{sel:.2f} e-folds alone)" if sel is not None else "fixed"
        L.append(f"  {n:<24} +-{v:6.2f} e-folds with all free   -> {tag}")
    for c in info["strong_correlations"]:
        L.append(f"  correlation {c['a']} / {c['b']}: {c['rho']:+.3f}")
    return "\n".join(L)
