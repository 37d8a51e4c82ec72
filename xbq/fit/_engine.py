"""The fitting problem (parameter layout over series) and a batched bounded LM solver."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from xbq.errors import XbqError
from xbq.models.registry import ModelSpec


@dataclass
class Problem:
    """Points of one or more series fitted with one parameter vector ``theta``.

    ``free`` lists ``(param name, series or None)``: None means shared by every series of
    the problem. ``base[s]`` is the full parameter row of series ``s`` (defaults, data
    constants and ``--fix`` values) into which ``theta`` is written. ``data_scale`` is the
    power of ten that maps the data's throughput onto the registry's IOPS-sized defaults:
    bounds and defaults of throughput parameters are multiplied by it and those of time
    parameters divided by it, so a fit works alike on IOPS, ops/s or speed-ups.

    When the table repeats points, ``y`` holds the means, ``reps`` the repetitions behind
    each, ``sigma`` the standard errors of the means and ``points`` the report's line on
    them; ``weighting`` is then ``"se"`` when the residuals are divided by ``sigma``.
    """

    spec: ModelSpec
    series: list[str]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    base: dict[str, np.ndarray]
    free: list[tuple[str, str | None]]
    lower: np.ndarray
    upper: np.ndarray
    weighting: str = "relative"
    data_scale: float = 1.0
    sigma: dict[str, np.ndarray] | None = None
    reps: dict[str, np.ndarray] | None = None
    points: str | None = None

    @property
    def n(self) -> int:
        return int(sum(v.size for v in self.y.values()))

    @property
    def k(self) -> int:
        return len(self.free)

    @property
    def y_all(self) -> np.ndarray:
        return np.concatenate([self.y[s] for s in self.series])

    @property
    def labels(self) -> list[str]:
        return [f"{name}[{s}]" if s is not None else name for name, s in self.free]

    def rows(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Full parameter rows (B, n_params) per series for parameter rows ``theta`` (B, k)."""
        theta = np.atleast_2d(theta)
        out = {}
        names = self.spec.names
        for s in self.series:
            P = np.repeat(self.base[s][None, :], theta.shape[0], axis=0)
            for j, (name, owner) in enumerate(self.free):
                if owner is None or owner == s:
                    P[:, names.index(name)] = theta[:, j]
            out[s] = P
        return out

    def start_values(self) -> np.ndarray:
        """Default of each free parameter in the data's units (its value in ``base``)."""
        names = self.spec.names
        return np.array([self.base[owner or self.series[0]][names.index(name)]
                         for name, owner in self.free], float)

    def predict(self, theta: np.ndarray, x: dict[str, np.ndarray] | None = None) -> dict:
        """IOPS (B, m_s) per series at ``x`` (default: the data's x)."""
        x = self.x if x is None else x
        rows = self.rows(theta)
        return {s: self.spec.evaluate(np.asarray(x[s], float), rows[s]) for s in self.series}

    def predict_all(self, theta: np.ndarray) -> np.ndarray:
        pred = self.predict(theta)
        return np.concatenate([pred[s] for s in self.series], axis=1)

    def scale(self, y: np.ndarray) -> np.ndarray:
        """Per-point divisor of the residuals: y (relative), the mean level (absolute) or the
        standard error of each mean (se)."""
        if self.weighting == "relative":
            return y
        if self.weighting == "se":
            return np.concatenate([self.sigma[s] for s in self.series])
        return np.full_like(y, float(np.mean(self.y_all)))

    def residuals(self, theta: np.ndarray, y: np.ndarray | None = None,
                  mask: np.ndarray | None = None) -> np.ndarray:
        """Weighted residuals (B, n): ``(model - y)/scale``, zero where ``mask`` is False."""
        y = self.y_all if y is None else y
        r = (self.predict_all(theta) - y) / self.scale(y)
        r = np.where(np.isfinite(r), r, 1e6)
        if mask is not None:
            r = r * mask
        return r


def starts(problem: Problem, n_starts: int, rng: np.random.Generator) -> np.ndarray:
    """Start points: the (data-scaled) defaults, throughput ones from the data's first point,
    plus log-uniform draws around them."""
    lo, hi = problem.lower, problem.upper
    x0 = problem.start_values()
    for j, (name, owner) in enumerate(problem.free):
        if problem.spec.param(name).unit == "IOPS":
            s = owner or problem.series[0]
            x0[j] = problem.y[s][0] / problem.x[s][0]
    first = np.clip(x0, lo, hi)
    out = [first]
    for _ in range(max(0, n_starts - 1)):
        centre = np.where(first > 0, first, np.where(hi < np.inf, (lo + hi) / 4, 1.0))
        centre = np.where(centre > 0, centre, 1e-3)
        draw = centre * np.exp(rng.uniform(np.log(0.1), np.log(10.0), size=centre.size))
        out.append(np.clip(draw, lo, hi))
    return np.array(out)


def solve(problem: Problem, x0s: np.ndarray, mask: np.ndarray | None = None,
          y: np.ndarray | None = None, polish_nfev: int = 400):
    """Best fit from several starts: batched LM from all starts at once, then TRF polish.

    Returns scipy's ``OptimizeResult`` of the polish (``x``, ``fun``, ``jac``, ``cost``,
    ``success``, ``nfev``, ``active_mask``) started at the best LM point.
    """
    lo, hi = problem.lower, problem.upper
    y_row = problem.y_all if y is None else y
    x0s = np.clip(np.atleast_2d(np.asarray(x0s, float)), lo, hi)
    B = x0s.shape[0]
    m = None if mask is None else np.repeat(np.asarray(mask, float)[None, :], B, axis=0)
    th, cost = lm_batch(problem, x0s, np.repeat(y_row[None, :], B, axis=0), m)
    cost = np.where(np.isfinite(cost), cost, np.inf)
    x0 = th[int(np.argmin(cost))]
    inside = lo < hi
    span = np.where(np.isfinite(hi - lo), hi - lo, np.abs(x0) + 1.0)
    x0 = np.where(inside, np.clip(x0, lo + 1e-12 * span, hi - 1e-12 * span), x0)

    def fun(t):
        return problem.residuals(t[None, :], y=y, mask=mask)[0]

    try:
        res = least_squares(fun, x0, bounds=(lo, hi), method="trf", x_scale="jac",
                        max_nfev=polish_nfev)
    except ValueError as exc:  # non-finite residuals at the start
        raise XbqError(f"cannot fit {problem.spec.name}: {exc}") from None
    return res


def jacobian_batch(problem, theta, r0, y, mask, typical):
    """Forward-difference Jacobian (B, n, k) of the weighted residuals."""
    B, k = theta.shape
    J = np.empty((B, r0.shape[1], k))
    for j in range(k):
        h = 1e-6 * np.maximum(np.abs(theta[:, j]), typical[j])
        t = theta.copy()
        up = t[:, j] + h
        back = up > problem.upper[j]
        t[:, j] = np.where(back, t[:, j] - h, up)
        r1 = problem.residuals(t, y=y, mask=mask)
        J[:, :, j] = (r1 - r0) / np.where(back, -h, h)[:, None]
    return J


def lm_batch(problem: Problem, theta0: np.ndarray, y: np.ndarray, mask=None, *,
             max_iter: int = 200, ftol: float = 1e-9, xtol: float = 1e-7):
    """Projected Levenberg–Marquardt on B independent problems at once.

    Parameters
    ----------
    problem : Problem
    theta0 : ndarray (B, k)
        Starts (usually the best fit repeated).
    y : ndarray (B, n)
        Data for each replicate.
    mask : ndarray (B, n), optional
        1 where a point counts, 0 where it is held out.

    ftol, xtol : float
        A replicate stops when an accepted step gains less than ``ftol`` of its cost, when
        a step changes no parameter by more than ``xtol`` relative to its scale, or when the
        undamped Gauss-Newton step predicts a gain below ``ftol`` of its cost.

    Returns
    -------
    theta : ndarray (B, k), cost : ndarray (B,) (sum of squared weighted residuals).
    """
    lo, hi = problem.lower, problem.upper
    th = np.clip(np.array(theta0, float), lo, hi)
    B, k = th.shape
    typical = np.maximum(np.abs(th).mean(axis=0), 1e-12)
    r = problem.residuals(th, y=y, mask=mask)
    cost = (r * r).sum(axis=1)
    lam = np.full(B, 1e-3)
    active = np.ones(B, dtype=bool)
    eye = np.eye(k)
    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        t, r0 = th[idx], r[idx]
        yy = y[idx]
        mm = None if mask is None else mask[idx]
        J = jacobian_batch(problem, t, r0, yy, mm, typical)
        A = np.einsum("bni,bnj->bij", J, J)
        g = np.einsum("bni,bn->bi", J, r0)
        d = np.einsum("bii->bi", A)
        d = np.maximum(d, 1e-12 * np.maximum(d.max(axis=1, keepdims=True), 1e-300))
        # directions blocked by an active bound (the gradient pushes out of the box) are
        # frozen for this step, so the free parameters get a proper (reduced) LM step
        # instead of a clipped one
        blocked = ((t <= lo + 1e-12 * (np.abs(lo) + typical)) & (g > 0)) | (
            (t >= hi - 1e-12 * (np.abs(hi) + typical)) & (g < 0))
        gf = np.where(blocked, 0.0, g)
        Af = np.where(blocked[:, :, None] | blocked[:, None, :], 0.0, A) + (
            blocked[:, :, None] * eye[None])
        df_ = np.where(blocked, 1.0, d)
        M = Af + lam[idx, None, None] * df_[:, :, None] * eye[None]
        try:
            step = np.linalg.solve(M, -gf[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = -np.einsum("bij,bj->bi", np.linalg.pinv(M), gf)
        t_new = np.clip(t + step, lo, hi)
        r_new = problem.residuals(t_new, y=yy, mask=mm)
        c_new = (r_new * r_new).sum(axis=1)
        better = c_new < cost[idx]
        gain = np.where(better, cost[idx] - c_new, 0.0)
        upd = idx[better]
        th[upd], r[upd], cost[upd] = t_new[better], r_new[better], c_new[better]
        lam[upd] *= 0.3
        lam[idx[~better]] *= 4.0
        # converged: an accepted step gained (almost) nothing, the step is negligible, or
        # the undamped Gauss-Newton step over the free directions predicts no real gain
        dstep = t_new - t
        floor = ftol * np.maximum(cost[idx], 1e-300)
        small_step = better & np.all(np.abs(dstep) <= xtol * (np.abs(t) + typical), axis=1)
        done = (better & (gain <= floor)) | (lam[idx] > 1e12) | small_step
        try:
            gn = np.linalg.solve(Af + 1e-12 * df_[:, :, None] * eye[None],
                                 gf[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            gn = np.einsum("bij,bj->bi", np.linalg.pinv(Af), gf)
        done |= np.einsum("bi,bi->b", gf, gn) <= floor
        active[idx[done]] = False
    return th, cost
