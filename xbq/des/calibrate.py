"""Fit a few cost parameters of the twin to a tidy IOPS table (the 2015 seed by default).

One machine, two drivers: the fitted costs are shared by both series (``single_ring`` runs
as mode ``sq``, ``multi_ring`` as ``mq`` with the row's ``queues``); every other parameter
keeps its documented default. The objective is the vector of relative errors
``simulated / measured - 1`` over all points, minimised by :func:`scipy.optimize.least_squares`
(trust-region reflective) inside each parameter's physical bounds, on the logarithm of the
parameter. Every evaluation reuses the same seed (common random numbers), so the objective
changes smoothly enough for finite differences with a coarse step. The fit runs on short
simulations; the reported errors come from one final run of every point with at least
``final_requests`` completed requests.

The table itself is only read, never written into code: change the CSV and the fit follows.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from xbq.des.params import DesParams
from xbq.errors import XbqError

#: Parameters fitted by default: the costs neither the literature nor the seed pins down.
FIT_PARAMS = ("submit_ns", "sq_locked_ns", "fe_cs_ns", "handoff_per_waiter_ns", "be_req_ns",
              "be_shared_lock_ns")
#: Starting point of the fit (a rough guess from the 1-job points: ~17 us of guest work per I/O).
START = {"submit_ns": 12000.0, "be_shared_lock_ns": 1000.0}
SERIES_MODE = {"single_ring": "sq", "multi_ring": "mq"}
#: fio iodepth of the IOmeter job file (data/seed/xen-blkmq-rfc-2015.md).
SEED_IODEPTH = 64


def _bounds(name: str) -> tuple[float, float]:
    f = {f.name: f for f in dataclasses.fields(DesParams)}[name]
    lo, hi = f.metadata["bounds"]
    return max(lo, 10.0), hi  # log scale: a zero lower bound becomes 10 ns


def _simulate_points(table, params, duration, seed, durations=None):
    from xbq.des.simulate import simulate

    out = []
    for i, row in enumerate(table.itertuples(index=False)):
        mode = SERIES_MODE[row.series]
        dur = duration if durations is None else durations[i]
        df = simulate(mode, int(row.jobs), queues=int(row.queues), vcpus=int(row.vcpus),
                      iodepth=SEED_IODEPTH, duration=dur, seed=seed, params=params)
        out.append(float(df["iops"].iloc[0]))
    return np.array(out)


def calibrate(table=None, *, fit: tuple[str, ...] = FIT_PARAMS, base: DesParams | None = None,
              duration: float = 0.03, seed: int = 1, max_nfev: int = 40,
              final_requests: int = 200_000, progress=None) -> dict:
    """Fit ``fit`` (names of :class:`DesParams` fields) to an IOPS table.

    Parameters
    ----------
    table : pandas.DataFrame or path, optional
        Tidy table with ``series`` (single_ring/multi_ring), ``jobs``, ``queues``, ``vcpus``,
        ``iops``; default the seed table.
    duration : float
        Virtual seconds per point during the fit (short, common random numbers).
    max_nfev : int
        Most objective evaluations (each simulates every point once).
    final_requests : int
        Requests each point completes in the final verification run.

    Returns
    -------
    dict
        ``params`` (all parameters, fitted ones replaced), ``fitted`` (name, value, unit
        bounds, at_bound), ``points`` (series, jobs, measured, simulated, rel_error),
        ``median_rel_error``, ``max_rel_error``, ``within_10pct``, ``fit`` (method, nfev,
        seconds, seed, durations).
    """
    from scipy.optimize import least_squares

    from xbq.datasets import load_iops_table, load_seed

    if table is None:
        table = load_seed()
    elif not hasattr(table, "itertuples"):
        table = load_iops_table(table, required=("series", "jobs", "queues", "vcpus", "iops"))
    unknown = sorted(set(table["series"]) - set(SERIES_MODE))
    if unknown:
        raise XbqError(f"series {', '.join(unknown)} not understood (expected "
                       f"{', '.join(SERIES_MODE)})")
    names = list(fit)
    bad = [n for n in names if n not in DesParams.__dataclass_fields__]
    if bad:
        raise XbqError(f"unknown parameter(s) to fit: {', '.join(bad)}")
    base = base or DesParams().replace(**START)
    measured = table["iops"].to_numpy(float)
    lo = np.log([_bounds(n)[0] for n in names])
    hi = np.log([_bounds(n)[1] for n in names])
    x0 = np.clip(np.log([max(getattr(base, n), 10.0) for n in names]), lo + 1e-9, hi - 1e-9)
    calls = [0]

    def params_of(x):
        return base.replace(**{n: float(np.exp(v)) for n, v in zip(names, x, strict=True)})

    def residuals(x):
        calls[0] += 1
        sim = _simulate_points(table, params_of(x), duration, seed)
        r = sim / measured - 1.0
        if progress:
            progress(calls[0], params_of(x), r)
        return r

    t0 = time.perf_counter()
    res = least_squares(residuals, x0, bounds=(lo, hi), method="trf", diff_step=0.05,
                        x_scale=1.0, max_nfev=max_nfev, xtol=1e-3, ftol=1e-4)
    fitted = params_of(res.x)
    fit_s = time.perf_counter() - t0
    # final verification: long runs, same seed
    durations = [max(final_requests / m * 1.15, duration) for m in measured]
    sim = _simulate_points(table, fitted, duration, seed, durations)
    rel = sim / measured - 1.0
    points = [{"series": s, "jobs": int(j), "measured": float(m), "simulated": float(v),
               "rel_error": float(e)}
              for s, j, m, v, e in zip(table["series"], table["jobs"], measured, sim, rel,
                                       strict=True)]
    fitted_info = []
    for n in names:
        f = DesParams.__dataclass_fields__[n]
        v = getattr(fitted, n)
        lo_n, hi_n = _bounds(n)
        fitted_info.append({"name": n, "value": v, "unit": f.metadata["unit"],
                            "min": f.metadata["bounds"][0], "max": hi_n,
                            "at_bound": bool(v <= lo_n * 1.01 or v >= hi_n * 0.99)})
    return {
        "params": fitted.to_dict(),
        "fitted": fitted_info,
        "points": points,
        "median_rel_error": float(np.median(np.abs(rel))),
        "max_rel_error": float(np.max(np.abs(rel))),
        "within_10pct": int(np.sum(np.abs(rel) <= 0.10)),
        "fit": {"method": "scipy.optimize.least_squares trf, log-parameters, diff_step 0.05",
                "nfev": int(calls[0]), "seconds": fit_s, "seed": seed,
                "fit_duration_s": duration, "final_durations_s": durations,
                "status": int(res.status), "message": str(res.message)},
    }


def provenance(command: str) -> dict:
    """Date, commit and command of a calibration (for the JSON and its README)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit or None}


def write_result(result: dict, path) -> None:
    """Write a calibration result as JSON (``xbq simulate --params`` reads its ``params``)."""
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
