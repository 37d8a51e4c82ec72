"""Compare fitted outputs with their golden copy at tolerances that rounding never exceeds and a
real change does.

Fits are floating point: another BLAS kernel (``OPENBLAS_CORETYPE``), thread count or CPU
rounds differently, a converged optimiser stops a few ulps elsewhere, and an ill-conditioned
leave-one-out refit can move a held-out prediction by 1e-4 of itself (measured: LOO RMSE
16080.9 vs 16071.6 IOPS between the Haswell and SkylakeX kernels; every other figure within
8e-6). So each figure is compared on the scale where it means something:

* R² as ``1 - R²``, forward-test errors as ``1 + error`` (ratios of predicted to measured):
  relative :data:`RTOL`;
* correlations absolutely (:data:`RTOL`); a covariance relative to ``sqrt(c_ii c_jj)``;
* figures in IOPS (RMSE, LOO RMSE, peak IOPS and its interval): within :data:`RTOL` of the
  value or :data:`DATA_TOL` of the data's largest IOPS, whichever is larger;
* every other float relative :data:`RTOL`;
* the optimiser's evaluation counts (``nfev``) are not compared: how many steps it takes to
  converge depends on rounding, where it converges is what is compared;
* everything else (strings, integers, booleans, shapes) exactly.

A model changed by one part in a thousand moves its fitted parameters by more than
:data:`RTOL` (``tests/test_golden.py`` checks that this comparison catches it).
"""

from __future__ import annotations

import math

#: Relative tolerance of a fitted figure (1e-4: 12x the largest rounding difference seen).
RTOL = 1e-4
#: Absolute tolerance of a figure in IOPS, as a fraction of the data's largest IOPS.
DATA_TOL = 1e-3
#: Figures in the data's unit (IOPS).
IOPS_KEYS = ("rmse", "loo_rmse", "peak_iops", "peak_iops_lo", "peak_iops_hi")
#: Optimiser path lengths: not results.
PATH_KEYS = ("nfev",)


def _key(path: str) -> str:
    return path.rsplit(".", 1)[-1].split("[", 1)[0]


def _float_ok(got: float, want: float, key: str, scale: float) -> bool:
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    if math.isinf(want) or math.isinf(got):
        return got == want
    if key == "r2":
        got, want = 1.0 - got, 1.0 - want
    elif key.startswith("fwd_err"):
        got, want = 1.0 + got, 1.0 + want
    elif key == "corr":
        return abs(got - want) <= RTOL
    atol = DATA_TOL * scale if key in IOPS_KEYS else 1e-12
    return abs(got - want) <= max(RTOL * abs(want), atol)


def mismatches(got, want, scale: float, path: str = "fit") -> list[str]:
    """Where ``got`` differs from ``want`` beyond the tolerances above; ``scale`` is the
    data's largest IOPS."""
    bad: list[str] = []
    key = _key(path)
    if key in PATH_KEYS:
        return bad
    if isinstance(want, dict) and isinstance(got, dict):
        if got.keys() != want.keys():
            return [f"{path}: keys {sorted(got.keys() ^ want.keys())} differ"]
        for k in want:
            bad += mismatches(got[k], want[k], scale, f"{path}.{k}")
    elif key == "cov" and isinstance(want, list) and isinstance(got, list):
        n = len(want)
        if len(got) != n:
            return [f"{path}: shape differs"]
        for i in range(n):
            for j in range(n):
                s = math.sqrt(abs(want[i][i] * want[j][j])) or 1e-300
                if not abs(got[i][j] - want[i][j]) <= RTOL * s:
                    bad.append(f"{path}[{i}][{j}]: {got[i][j]!r} != {want[i][j]!r}")
    elif isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{path}: length {len(got)} != {len(want)}"]
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            bad += mismatches(g, w, scale, f"{path}[{i}]")
    elif isinstance(want, float) and isinstance(got, float | int) \
            and not isinstance(got, bool):
        if not _float_ok(float(got), want, key, scale):
            bad.append(f"{path}: {got!r} != {want!r}")
    elif got != want:
        bad.append(f"{path}: {got!r} != {want!r}")
    return bad
