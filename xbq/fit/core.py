"""``fit``: bounded least squares of a named model to a tidy IOPS table, with uncertainty.

Relative-error weighting by default (IOPS noise grows with the level), multi-start TRF for
the point estimate, Jacobian standard errors, residual or parametric bootstrap (vectorised
LM refits of all replicates at once) for parameters and the derived peak, leave-one-out
and forward tests. See :class:`~xbq.fit.result.FitResult` for what comes back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from xbq.errors import XbqError
from xbq.fit._engine import Problem, lm_batch, solve, starts
from xbq.fit.repeats import check_repetitions, has_repetitions, point_means, se_weighting
from xbq.fit.result import FitResult
from xbq.models.registry import ModelSpec, get_model

FORWARD_TRAIN_MAX = 16
LEVEL = 0.95


#: Throughput level the registry's defaults and bounds are built for (IOPS of a PV disk).
Y_REF = 1e5
#: Geometric means of throughput taken as IOPS: a real disk's 10^3 to an engine's 10^8.
IOPS_RANGE = (1e3, 1e8)
#: Concurrency columns tried, in order, when the table lacks the one asked for.
X_ALIASES = ("jobs", "cores", "threads", "cpus", "vcpus")
#: Concurrency columns that count CPUs: without a ``vcpus`` column, every one of them spins.
CPU_AXES = ("cores", "threads", "cpus", "vcpus")


def data_scale(y: np.ndarray) -> float:
    """Power of ten that brings the geometric mean of ``y`` nearest :data:`Y_REF`.

    1 for IOPS-sized data (the seed table), 1e-4 for speed-ups of 1-12, 1e2 for 10^7 ops/s.
    """
    gm = float(np.exp(np.mean(np.log(y))))
    return float(10.0 ** round(np.log10(gm / Y_REF)))


def unit_factor(unit: str, scale: float) -> float:
    """How a parameter of ``unit`` moves with the data's scale: throughput with it, time
    against it (a rate of ``1/t`` per µs is a throughput), everything else not at all."""
    if unit == "IOPS":
        return scale
    if unit == "µs":
        return 1.0 / scale
    return 1.0


def resolve_x(spec: ModelSpec, df: pd.DataFrame, x: str) -> tuple[str, pd.DataFrame, list[str]]:
    """The concurrency column to use, the table (with a ``vcpus`` column added when the axis
    counts CPUs and a model needs the vCPU count) and notes on what was assumed."""
    notes = []
    if x not in df.columns and x == "jobs":
        found = [c for c in X_ALIASES if c in df.columns]
        if found:
            x = found[0]
            notes.append(f"no 'jobs' column: concurrency is {x!r}")
    needs_cpus = any(p.column == "vcpus" and p.fixed for p in spec.params)
    if x in CPU_AXES and x != "vcpus" and "vcpus" not in df.columns and needs_cpus \
            and x in df.columns:
        df = df.copy()
        df["vcpus"] = df.groupby("series")[x].transform("max") if "series" in df \
            else df[x].max()
        notes.append(f"no 'vcpus' column: each series has as many CPUs as its largest {x} "
                     "(every contender runs)")
    return x, df, notes


def build_problems(spec: ModelSpec, df: pd.DataFrame, *, x: str = "jobs", joint: bool = False,
                   fix: dict[str, float] | None = None, free: tuple[str, ...] = (),
                   weighting: str = "auto") -> list[Problem]:
    """Split a tidy table into fitting problems: one per series, or one joint problem.

    Each problem works in the data's own throughput unit: the defaults and bounds of
    throughput and time parameters are moved by :func:`data_scale` of its points, so
    ``--fix`` values, the reported parameters and the predictions are all in the data's
    units (times in µs when the data are IOPS; in µs divided by the scale otherwise).

    Rows of a series at the same ``x`` are repetitions of one point (see
    :mod:`xbq.fit.repeats`): the problem fits their means, with ``weighting="auto"``
    weighted by ``1/SE²`` when every point has five or more repetitions with some spread and
    by relative errors otherwise; ``relative`` or ``absolute`` errors when asked for.
    """
    fix = dict(fix or {})
    for name in list(fix) + list(free):
        spec.param(name)
    if weighting not in ("auto", "relative", "absolute"):
        raise XbqError("weighting must be 'auto', 'relative' or 'absolute' "
                       f"(got {weighting!r})")
    x, df, _ = resolve_x(spec, df, x)
    if x not in df.columns or "iops" not in df.columns:
        raise XbqError(f"the table needs columns {x!r} and 'iops'")
    series = sorted(df["series"].astype(str).unique()) if "series" in df else ["all"]
    xs, ys, consts, parts = {}, {}, {}, {}
    for s in series:
        part = df[df["series"].astype(str) == s] if "series" in df else df
        parts[s] = part
        xv = part[x].to_numpy(float)
        yv = part["iops"].to_numpy(float)
        if np.any(~np.isfinite(yv)) or np.any(yv <= 0):
            raise XbqError(f"series {s!r}: iops must be positive and finite")
        if np.any(~np.isfinite(xv)):
            raise XbqError(f"series {s!r}: {x} must be finite")
        if np.any(xv < 1):
            raise XbqError(f"series {s!r}: {x} must be >= 1")
        if spec.integer_x and np.any(xv != np.rint(xv)):
            raise XbqError(f"model {spec.name} needs integer {x}")
        known = {}
        for p in spec.params:
            if p.column and p.column in part.columns:
                vals = pd.to_numeric(part[p.column], errors="coerce").dropna().unique()
                if not np.all(np.isfinite(vals)):
                    raise XbqError(f"series {s!r}: column {p.column!r} is not finite")
                if len(vals) > 1:
                    raise XbqError(f"series {s!r}: column {p.column!r} is not constant")
                if len(vals) == 1:
                    known[p.name] = float(vals[0])
        xs[s], ys[s], consts[s] = xv, yv, known
    sigma = reps = points = None
    if has_repetitions(xs):
        xs, ys, sigma, reps, use_se, points = _average_repetitions(parts, xs, ys, x, weighting)
        weighting = "se" if use_se else weighting
    if weighting == "auto":
        weighting = "relative"
    is_free = [(not p.fixed or p.name in free) and p.name not in fix for p in spec.params]
    groups = [series] if joint else [[s] for s in series]
    problems = []
    for group in groups:
        scale = data_scale(np.concatenate([ys[s] for s in group]))
        factor = np.array([unit_factor(p.unit, scale) for p in spec.params])
        lo_all = np.array([p.lower for p in spec.params], float) * factor
        hi_all = np.array([p.upper for p in spec.params], float) * factor
        base = {}
        for s in group:
            row = np.array([p.default for p in spec.params], float) * factor
            for i, p in enumerate(spec.params):
                row[i] = consts[s].get(p.name, row[i])
                if p.name in fix:
                    row[i] = fix[p.name]
                    if not (lo_all[i] <= row[i] <= hi_all[i]):
                        raise XbqError(f"--fix {p.name}={fix[p.name]:g} is outside its bounds "
                                       f"[{lo_all[i]:g}, {hi_all[i]:g}]"
                                       + _scale_words(scale))
            base[s] = row
        layout = []
        for p, f in zip(spec.params, is_free, strict=True):
            if not f:
                continue
            if joint and p.local and len(group) > 1:
                layout += [(p.name, s) for s in group]
            else:
                layout.append((p.name, None))
        idx = [spec.names.index(n) for n, _ in layout]
        prob = Problem(spec, list(group), {s: xs[s] for s in group}, {s: ys[s] for s in group},
                       base, layout, lo_all[idx], hi_all[idx], weighting, scale,
                       sigma=None if sigma is None else {s: sigma[s] for s in group},
                       reps=None if reps is None else {s: reps[s] for s in group},
                       points=points)
        distinct = sum(np.unique(xs[s]).size for s in group)
        # every series a single point (fio sections imported as their own series): the
        # cure is naming the series, not fixing parameters
        hint = ("; every series has one point: name them at import (xbq fio import "
                "--series NAME or --series-pattern REGEX)") \
            if len(xs) > 1 and all(np.unique(v).size == 1 for v in xs.values()) \
            else "; add points or fix some with --fix"
        if distinct < prob.k:
            raise XbqError(f"{', '.join(group)}: {distinct} distinct {x} value(s) but {prob.k} "
                           f"free parameters of {spec.name} ({', '.join(prob.labels)})"
                           + hint)
        for s in group:
            own = sum(1 for _, owner in layout if owner == s) \
                + (sum(1 for _, owner in layout if owner is None) if len(group) == 1 else 0)
            if np.unique(xs[s]).size < own:
                raise XbqError(f"series {s!r}: {np.unique(xs[s]).size} distinct {x} value(s) "
                               f"for {own} parameters of its own" + hint)
        problems.append(prob)
    return problems


def _average_repetitions(parts: dict[str, pd.DataFrame], xs: dict, ys: dict, x: str,
                         weighting: str) -> tuple[dict, dict, dict, dict, bool, str]:
    """Means of repeated points: ``x``, ``y``, ``se`` and ``reps`` by series, whether the
    standard errors can weight the fit (every point has five or more repetitions and some
    spread) and the report's line on what was done."""
    for s, part in parts.items():
        check_repetitions(part, x, s)
    means = {s: point_means(xs[s], ys[s]) for s in xs}
    use_se, note = se_weighting(means, weighting)
    if weighting == "auto" and not use_se:
        weighting = "relative"
    return ({s: m.x for s, m in means.items()}, {s: m.y for s, m in means.items()},
            {s: m.se for s, m in means.items()}, {s: m.n for s, m in means.items()},
            use_se, note)


def _scale_words(scale: float) -> str:
    if scale == 1.0:
        return ""
    return (f" (bounds in the data's units: throughput x{scale:g}, times x{1 / scale:g} of "
            "the IOPS/µs defaults)")


def iops_sized(y: np.ndarray) -> bool:
    """True when the geometric mean of ``y`` lies in :data:`IOPS_RANGE`: throughput that
    reads as IOPS (or ops/s) of a disk, an engine or a simulation, times then in µs."""
    gm = float(np.exp(np.mean(np.log(y))))
    return IOPS_RANGE[0] <= gm <= IOPS_RANGE[1]


def scale_note(scale: float, y: np.ndarray) -> str | None:
    """The report's line on a data scale other than 1, or None.

    Parameters
    ----------
    scale : float
        The problem's :func:`data_scale`.
    y : numpy.ndarray
        Its throughput: IOPS-sized data (:func:`iops_sized`) get no line, whatever the scale
        (the bounds move with it, but the parameters stay in IOPS and µs).
    """
    if scale == 1.0 or iops_sized(y):
        return None
    return (f"data scale {scale:g}: the throughput is not IOPS-sized, so throughput "
            f"parameters and their bounds are multiplied by {scale:g} and time parameters "
            f"(µs) divided by it; all parameters are in the data's units (a time is "
            f"µs x {1 / scale:g} when the throughput is read as IOPS x {scale:g})")


def peak_grid(problem: Problem) -> dict[str, np.ndarray]:
    """Concurrency grid for the peak: integers 1..max(x) (or 400 log-spaced points)."""
    out = {}
    for s in problem.series:
        top = float(problem.x[s].max())
        if problem.spec.integer_x or top <= 1024:
            g = np.arange(1.0, np.floor(top) + 1.0)
        else:
            g = np.geomspace(1.0, top, 400)
        out[s] = g
    return out


def fit(df: pd.DataFrame, model: str | ModelSpec, *, x: str = "jobs", joint: bool = False,
        fix: dict[str, float] | None = None, free: tuple[str, ...] = (),
        weighting: str = "auto", bootstrap: int = 0, bootstrap_kind: str = "parametric",
        seed: int = 0, n_starts: int = 8, loo: bool = True, forward: bool = True,
        level: float = LEVEL) -> FitResult:
    """Fit ``model`` to a tidy IOPS table.

    Parameters
    ----------
    df : pandas.DataFrame
        Tidy table: ``series`` (optional), the concurrency column ``x`` and ``iops``; known
        constants (``vcpus``, ``queues``) as columns when available. Several rows of a
        series at one ``x`` are repetitions of that point.
    model : str or ModelSpec
        A registry name (``amdahl``, ``usl``, ``usl-capped``, ``mva``, ``repairman``,
        ``ticket``, ``mcs``, ``xenblk``) or a spec.
    x : str
        Concurrency column; when the table has no ``jobs`` column, the first of
        ``cores``, ``threads``, ``cpus`` present. On a CPU axis without a ``vcpus`` column
        the vCPU count (the contender cap) is the largest x of each series.
    joint : bool
        Fit all series together: parameters marked ``local`` are per series, the rest shared.
    fix : dict, optional
        ``{name: value}`` fixed for every series (overrides data columns).
    free : tuple of str
        Parameters fixed by default that should be fitted.
    weighting : {"auto", "relative", "absolute"}
        Residuals divided by the observed IOPS or by the mean level. Repeated points
        (several rows of a series at one ``x``) are fitted as their means; with ``auto``
        (the default) each mean is divided by its standard error when every point has five
        or more repetitions with some spread (the result's ``weighting`` is then ``"se"``),
        else relative errors are used, as they are for a table without repetitions;
        ``FitResult.points`` says which.
    bootstrap : int
        Bootstrap resamples (0: none).
    bootstrap_kind : {"parametric", "residual"}
        ``parametric`` (default): Gaussian noise (relative, or absolute) with sigma drawn per
        replicate from its n - k degree-of-freedom sampling distribution; ``residual``:
        resample leverage-adjusted residuals. With 6-12 points the residual percentile
        intervals under-cover (about 0.85-0.92 for nominal 0.95 in the slow coverage test);
        the parametric ones come closer (0.91-0.98).
    seed : int
        Seed for starts and resampling.
    n_starts : int
        Multi-start count for the point estimate (at least the model's own ``n_starts``).
    loo, forward : bool
        Compute leave-one-out RMSE and the forward test (fit x <= 16, predict larger x).
    level : float
        Interval level.

    Returns
    -------
    FitResult
    """
    spec = get_model(model) if isinstance(model, str) else model
    if bootstrap_kind not in ("residual", "parametric"):
        raise XbqError("bootstrap_kind must be 'residual' or 'parametric'")
    x, df, notes = resolve_x(spec, df, x)
    problems = build_problems(spec, df, x=x, joint=joint, fix=fix, free=free,
                              weighting=weighting)
    rng = np.random.default_rng(seed)
    n_starts = max(n_starts, spec.n_starts)
    groups = []
    for prob in problems:
        groups.append(_fit_group(prob, rng, n_starts=n_starts, bootstrap=bootstrap,
                                 kind=bootstrap_kind, loo=loo, forward=forward, level=level))
    result = FitResult.from_groups(spec, x, joint, problems[0].weighting, groups, bootstrap,
                                   bootstrap_kind, seed, level)
    result.points = problems[0].points
    result.warnings[:0] = notes
    return result


def _fit_group(prob: Problem, rng, *, n_starts, bootstrap, kind, loo, forward, level) -> dict:
    res = solve(prob, starts(prob, n_starts, rng))
    theta = res.x
    r = res.fun
    n, k = prob.n, prob.k
    rss_w = float(r @ r)
    dof = n - k
    warnings = [w for w in [scale_note(prob.data_scale, prob.y_all)] if w]
    cov = None
    if dof > 0:
        J = res.jac
        s2 = rss_w / dof
        try:
            cov = s2 * normal_inverse(J)
        except np.linalg.LinAlgError:
            cov = None
        if cov is not None and np.linalg.matrix_rank(J) < k:
            warnings.append("Jacobian is rank deficient: some parameters are not identifiable "
                            "separately (standard errors unreliable)")
    else:
        warnings.append(f"{n} points for {k} parameters: no residual degrees of freedom, "
                        "no standard errors or bootstrap")
    grid = peak_grid(prob)
    pred_grid = prob.predict(theta[None, :], grid)
    peaks = {}
    for s in prob.series:
        i = int(first_max(pred_grid[s])[0])
        peaks[s] = (float(grid[s][i]), float(pred_grid[s][0, i]))
    group = dict(problem=prob, theta=theta, cov=cov, rss_w=rss_w, warnings=warnings,
                 peaks=peaks, success=bool(res.success), nfev=int(res.nfev), boot=None,
                 grid=grid)
    # a parameter the residuals do not depend on (its Jacobian column, in units of the
    # parameter, a millionth of the largest or less) never moves from the start it was
    # given: the data do not constrain it
    typical = np.maximum(np.abs(theta), np.abs(prob.start_values()))
    sens = np.linalg.norm(res.jac, axis=0) * typical
    group["unmoved"] = sens <= 1e-6 * max(float(sens.max()), 1e-300)
    if bootstrap and dof > 0:
        group["boot"] = _bootstrap(prob, theta, res.fun, bootstrap, kind, rng, grid, level,
                                   jac=res.jac)
    elif bootstrap:
        group["warnings"].append("bootstrap skipped: no residual degrees of freedom")
    if loo:
        group["loo"] = _loo(prob, theta)
    if forward:
        group["forward"] = _forward(prob, rng, n_starts)
    return group


def normal_inverse(jac: np.ndarray) -> np.ndarray:
    """``(J^T J)^+`` of a (weighted) Jacobian, inverted on unit-norm columns.

    A throughput parameter of millions of IOPS beside a coefficient of 1e-3 makes ``J^T J``
    span more than the 1e-15 that ``pinv`` keeps: unscaled, the throughput's direction is
    cut off and its standard error comes out as 1e-10.
    """
    d = np.linalg.norm(jac, axis=0)
    d = np.where(d > 0, d, 1.0)
    js = jac / d
    return np.linalg.pinv(js.T @ js) / np.outer(d, d)


def leverages(jac: np.ndarray) -> np.ndarray:
    """Diagonal of the hat matrix ``J (J^T J)^+ J^T`` of a (weighted) Jacobian."""
    return np.einsum("ij,ji->i", jac, normal_inverse(jac) @ jac.T)


def first_max(curves: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """Index of the first grid point within ``rtol`` of each row's maximum.

    On a plateau (a capped or saturating model) this is where the plateau starts, not an
    arbitrary point of it chosen by rounding noise.
    """
    top = curves.max(axis=1, keepdims=True)
    return np.argmax(curves >= top * (1.0 - rtol), axis=1)


def _bootstrap(prob: Problem, theta, resid_w, B, kind, rng, grid, level, jac=None) -> dict:
    n, k = prob.n, prob.k
    y = prob.y_all
    fitted = prob.predict_all(theta[None, :])[0]
    scale = prob.scale(y)
    if kind == "residual":
        # residuals on the fitted curve's scale, leverage-adjusted (Davison & Hinkley 1997,
        # alg. 6.3: e_i / sqrt(1 - h_ii)) and centred; without a Jacobian, inflated by
        # sqrt(n/(n-k)) instead
        e = (y - fitted) / (fitted if prob.weighting == "relative" else scale)
        if jac is not None:
            h = np.clip(leverages(jac), 0.0, 0.99)
            e = e / np.sqrt(1.0 - h)
        else:
            e = e * np.sqrt(n / (n - k))
        e = e - e.mean()
        draws = e[rng.integers(0, n, size=(B, n))]
    else:
        # sigma itself is uncertain with n - k degrees of freedom: draw it per replicate
        # from s^2 (n-k)/chi2(n-k), so the intervals widen like t rather than z quantiles
        s2 = float(resid_w @ resid_w) / (n - k)
        sigma = np.sqrt(s2 * (n - k) / rng.chisquare(n - k, size=(B, 1)))
        draws = rng.normal(0.0, 1.0, size=(B, n)) * sigma
    if prob.weighting == "relative" and kind == "parametric":
        # multiplicative noise, log-normal so that a large drawn sigma cannot make IOPS <= 0
        ystar = fitted[None, :] * np.exp(draws)
    elif prob.weighting == "relative":
        ystar = fitted[None, :] * (1.0 + draws)
    else:
        ystar = fitted[None, :] + draws * scale[None, :]
    ystar = np.maximum(ystar, 1e-9 * fitted.max())
    th, _ = lm_batch(prob, np.repeat(theta[None, :], B, axis=0), ystar)
    curves = prob.predict(th, grid)
    peak_x, peak_y, bands = {}, {}, {}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    for s in prob.series:
        c = curves[s]
        i = first_max(c)
        peak_x[s] = grid[s][i]
        peak_y[s] = c[np.arange(B), i]
        bands[s] = np.percentile(c, q, axis=0)
    typical = np.abs(prob.start_values())
    tol = 1e-6 * np.maximum(np.maximum(np.abs(th), typical), np.abs(prob.lower))
    tol_hi = 1e-6 * np.maximum(np.maximum(np.abs(th), typical), np.abs(prob.upper))
    at_bound = np.mean((np.abs(th - prob.lower) <= tol) | (np.abs(th - prob.upper) <= tol_hi),
                       axis=0)
    return dict(theta=th, peak_x=peak_x, peak_y=peak_y, bands=bands, at_bound=at_bound,
                kind=kind, B=B)


def _loo(prob: Problem, theta) -> dict:
    n, k = prob.n, prob.k
    if n - 1 < k:
        return dict(note=f"not enough points: {n - 1} left for {k} parameters")
    y = np.repeat(prob.y_all[None, :], n, axis=0)
    mask = 1.0 - np.eye(n)
    th, _ = lm_batch(prob, np.repeat(theta[None, :], n, axis=0), y, mask)
    pred = prob.predict_all(th)
    held = pred[np.arange(n), np.arange(n)]
    return dict(pred=held, note=None if n - 1 > k else "exactly determined after dropping")


def _forward(prob: Problem, rng, n_starts) -> dict:
    train = np.concatenate([prob.x[s] <= FORWARD_TRAIN_MAX for s in prob.series])
    test = ~train
    if not test.any():
        return dict(note=f"no points beyond {FORWARD_TRAIN_MAX}")
    if train.sum() < prob.k:
        return dict(note=f"{int(train.sum())} training points for {prob.k} parameters")
    res = solve(prob, starts(prob, n_starts, rng), mask=train.astype(float))
    pred = prob.predict_all(res.x[None, :])[0]
    # parameters the training points do not constrain (their Jacobian column vanishes)
    J = res.jac[train]
    typical = np.abs(prob.start_values())
    norms = np.linalg.norm(J * np.maximum(np.abs(res.x), typical), axis=0)
    blind = [prob.labels[j] for j in range(prob.k) if norms[j] <= 1e-6 * max(norms.max(), 1e-300)]
    return dict(pred=pred, test=test, theta=res.x, undetermined=blind)
