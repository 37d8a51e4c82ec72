"""Fit a few cost parameters of the twin to a tidy IOPS table (the 2015 seed by default).

One machine, two drivers: the fitted costs are shared by both series (``single_ring`` runs
as mode ``sq``, ``multi_ring`` as ``mq`` with the row's ``queues``); every other parameter
keeps its documented default. The objective is the vector of relative errors
``simulated / measured - 1`` over all points, minimised by :func:`scipy.optimize.least_squares`
(trust-region reflective) inside each parameter's physical bounds, on the logarithm of the
parameter. Every evaluation reuses the same seed (common random numbers), so the objective
changes smoothly enough for finite differences with a coarse step. The fit runs on short
simulations (``fit_requests`` per point, after a warm-up that lets the start-up burst drain);
the reported errors come from one final run of every point with ``final_requests``
completed requests. Settings the table does not state and that are not continuous (the
physical CPU count, the scheduler's boost, the jobs' placement, dom0's vCPU count, the vCPU
the rings' interrupts go to, blkfront's lock per ring or per device) are tried one by one
(``machines``): the fit runs for each, the best is kept, and all are reported. With jobs
placed at random every evaluation averages each point over ``placements`` placements (the
same draws every time: common random numbers) and the final verification over
``final_placements``.

The table itself is only read, never written into code: change the CSV and the fit follows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xbq.engines.des.params import COST_FIELDS, FIELDS, PHYSICAL, UNITS, DesParams
from xbq.engines.des.table import TABLE_COLUMNS, check_table, simulate_table
from xbq.engines.schema import point_key
from xbq.errors import XbqError
from xbq.files import atomic_write
from xbq.study.results import JsonLinesStore, run_points

#: Parameters fitted by default: the costs neither the literature nor the seed pins down.
FIT_PARAMS = ("submit_ns", "sq_locked_ns", "fe_cs_ns", "handoff_per_waiter_ns", "be_req_ns",
              "be_shared_lock_ns", "ctx_switch_ns", "vcpu_wake_ns", "be_wake_ns",
              "irq_entry_ns", "complete_ns")
#: Starting point of the fit (a rough guess from the 1-job points: ~17 us of guest work per
#: I/O), with the mechanisms of a 2015 guest switched on: fio threads sleep for a free
#: blk-mq request, an idle vCPU is woken through Xen's scheduler, and a point with jobs
#: placed at random (``job_placement`` = 1, a machine setting) is the mean over 16
#: placements.
START = {"submit_ns": 12000.0, "be_shared_lock_ns": 1000.0, "tag_wait": 1.0,
         "vcpu_wake_ns": 5000.0, "placements": 16.0}
#: Placements of the final verification runs (random placement only): the standard error
#: of a point's mean IOPS is then half of the fit's.
FINAL_PLACEMENTS = 64


def as_verified(params: DesParams, placements: int = FINAL_PLACEMENTS) -> DesParams:
    """``params`` as a calibration's final check runs them: with jobs placed at random, on
    ``placements`` placements a point (pinned jobs: unchanged)."""
    return params.replace(placements=placements) if params.job_placement else params


@dataclass(frozen=True)
class MachineFit:
    """One machine setting's fit as :func:`xbq.study.results.run_points` runs it: ``task``
    for :func:`fit_machine`, and ``key``, the hash of everything that determines it (the
    table, the costs fitted, the setting, the start, the seed, the evaluations)."""

    index: int
    settings: dict
    task: tuple

    @property
    def key(self) -> str:
        return point_key(self.settings)

    def config(self) -> dict:
        return self.settings


def _bounds(name: str) -> tuple[float, float]:
    lo, hi = PHYSICAL[name]
    return max(lo, 10.0), hi  # log scale: a zero lower bound becomes 10 ns


def seeds_of(seed) -> tuple[int, ...]:
    """``seed`` (an int, or a sequence of ints for common random numbers over several
    seeds) as a tuple of ints."""
    return (int(seed),) if np.ndim(seed) == 0 else tuple(int(s) for s in seed)


def _simulate_points(table, params, durations, seed, se=False):
    """Each point's IOPS, the mean over ``seed`` (one seed or several: common random numbers
    over seeds); with ``se`` also its standard error (the placements' standard errors of
    the independent seeds combined)."""
    frames = [simulate_table(table, params, duration=durations, seed=s)
              for s in seeds_of(seed)]
    iops = np.mean([f["iops"].to_numpy(float) for f in frames], axis=0)
    if not se:
        return iops
    var = np.sum([f["iops_se"].to_numpy(float) ** 2 for f in frames], axis=0)
    return iops, np.sqrt(var) / len(frames)


def fit_machine(task, progress=None) -> dict:
    """Fit one machine setting: ``task`` is ``(table, names, base, durations, seed,
    max_nfev)``; returns its fitted ``params``, residuals ``fun``, ``nfev``, ``status`` and
    ``message`` (picklable: a sweep task)."""
    table, names, base, durations, seed, max_nfev = task
    fitted, res, calls = _fit_one(table, names, base, durations, seed, max_nfev, progress)
    return {"params": fitted.to_dict(), "fun": [float(v) for v in res.fun], "nfev": calls,
            "status": int(res.status), "message": str(res.message)}


def _fit_one(table, names, base, durations, seed, max_nfev, progress):
    """Least squares of the relative errors over ``names`` (log scale) from ``base``."""
    from scipy.optimize import least_squares

    measured = table["iops"].to_numpy(float)
    lo = np.log([_bounds(n)[0] for n in names])
    hi = np.log([_bounds(n)[1] for n in names])
    x0 = np.clip(np.log([max(getattr(base, n), 10.0) for n in names]), lo + 1e-9, hi - 1e-9)
    calls = [0]

    def params_of(x):
        return base.replace(**{n: float(np.exp(v)) for n, v in zip(names, x, strict=True)})

    def residuals(x):
        calls[0] += 1
        r = _simulate_points(table, params_of(x), durations, seed) / measured - 1.0
        if progress:
            progress(calls[0], r)
        return r

    res = least_squares(residuals, x0, bounds=(lo, hi), method="trf", diff_step=0.05,
                        x_scale=1.0, max_nfev=max_nfev, xtol=1e-3, ftol=1e-4)
    return params_of(res.x), res, calls[0]


def calibrate(table, *, fit: tuple[str, ...] = FIT_PARAMS, machines=None,
              base: DesParams | None = None, fit_requests: int = 20_000, seed: int = 1,
              max_nfev: int = 120, final_requests: int = 200_000,
              final_placements: int = FINAL_PLACEMENTS, polish_nfev: int = 0,
              progress=None, checkpoint=None, mapper=None) -> dict:
    """Fit ``fit`` (names of :class:`DesParams` fields) to an IOPS table.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy table with ``series`` (single_ring/multi_ring), ``jobs``, ``queues``, ``vcpus``,
        ``iops`` (the seed: :func:`xbq.study.datasets.load_seed`).
    machines : list of dict, optional
        Fixed settings the table does not state (e.g. ``{"pcpus": 24, "pcpu_boost": 1}``):
        the fit runs once for each, and the one with the smallest sum of squared relative
        errors is kept; every one is reported. Default: one, ``base`` as it is.
    fit_requests : int
        Requests each point completes per evaluation during the fit (its virtual duration
        is ``fit_requests / measured IOPS``, after the warm-up).
    seed : int or sequence of int
        The seed of every evaluation (common random numbers), or several: each point is
        then the mean over them, in every evaluation and in the final check.
    max_nfev : int
        Most objective evaluations per machine (each simulates every point once).
    final_requests : int
        Requests each point completes in the final verification run (in each placement).
    final_placements : int
        Placements of each point in the final verification run when the kept setting
        places jobs at random (the fit uses ``base.placements``).
    polish_nfev : int
        With jobs placed at random, refit the kept setting from its optimum for at most
        this many evaluations on ``final_placements`` placements (0: no second stage).
    progress : callable, optional
        Called with a dict: ``event`` ("eval" after each objective evaluation, "machine" when
        a setting is done), ``machine`` (index) of ``machines`` (count), ``fixed`` (the
        setting), ``best_max_rel_error`` of the settings done so far, and the evaluation's
        ``eval``, ``max_rel_error``, ``median_rel_error`` (or the setting's summary).
    mapper : callable, optional
        ``mapper(fn, tasks)`` yielding ``(index, fn(task))`` in any order: the machine
        settings then run as parallel tasks (:func:`xbq.sweep.mapper` on a Dask client).
        Default: one after another. The result is the same either way.
    checkpoint : path, optional
        A JSON-lines file: each machine setting's fit is appended (and fsynced) the moment it
        ends, keyed by everything that determines it; a rerun with the same file takes the
        settings already fitted from it instead of fitting them again.

    Returns
    -------
    CalibrationResult
        lmfit-shaped: ``params`` (the fitted costs), ``residual`` (the final check's relative
        errors), ``nfev``, ``success``, ``chisqr``, ``aic``, ``bic``...; ``values`` (every
        parameter), ``points`` (series, jobs, measured, simulated, rel_error, rel_se),
        ``machines`` (each setting tried: its overrides, fit cost and errors), ``machine``
        (the kept one); :meth:`CalibrationResult.to_dict` the calibration file.
    """
    check_table(table)
    names = list(fit)
    bad = [n for n in names if n not in COST_FIELDS]
    if bad:
        kind = "machine setting(s), chosen not fitted" if set(bad) <= set(FIELDS) else \
            "unknown parameter(s)"
        raise XbqError(f"only costs (*_ns) are fitted; {', '.join(bad)}: {kind}")
    if fit_requests < 1 or final_requests < 1 or max_nfev < 1 or final_placements < 1:
        raise XbqError("fit_requests, final_requests, final_placements and max_nfev must be "
                       "at least 1")
    base = base or DesParams().replace(**START)
    machines = [{}] if not machines else [dict(m) for m in machines]
    for m in machines:
        clash = sorted(set(m) & set(names))
        if clash:
            raise XbqError(f"{', '.join(clash)} cannot be both fitted and fixed")
        base.replace(**m)  # validates names and bounds up front
    measured = table["iops"].to_numpy(float)
    fit_durations = [fit_requests / m for m in measured]
    t0 = time.perf_counter()
    seed = seed if np.ndim(seed) == 0 else list(seeds_of(seed))
    table_cols = {k: list(v) for k, v in table[list(TABLE_COLUMNS)].to_dict(orient="list")
                  .items()}
    fits = [MachineFit(i, {"table": table_cols, "fit": names, "fixed": m,
                           "base": base.to_dict(), "seed": seed, "fit_requests": fit_requests,
                           "max_nfev": max_nfev},
                       (table, names, base.replace(**m), fit_durations, seed, max_nfev))
            for i, m in enumerate(machines)]
    best_err = [None]

    def report(event, i, **info):
        if progress is not None:
            progress({"event": event, "machine": i, "machines": len(machines),
                      "fixed": machines[i], "best_max_rel_error": best_err[0], **info})

    def row_of(mf, entry):
        return {"point_key": mf.key, "fixed": machines[mf.index], **entry}

    def fit_one(mf):  # serial: a progress event per evaluation
        return row_of(mf, fit_machine(mf.task, lambda n, r: report(
            "eval", mf.index, eval=n, max_rel_error=float(np.max(np.abs(r))),
            median_rel_error=float(np.median(np.abs(r))))))

    def finished(row):  # a setting's fit is kept (checkpointed) the moment it ends
        i = next(mf.index for mf in fits if mf.key == row["point_key"])
        entries[i] = row
        err = float(np.max(np.abs(row["fun"])))
        best_err[0] = err if best_err[0] is None else min(best_err[0], err)
        report("machine", i, max_rel_error=err, nfev=row["nfev"])

    entries: dict[int, dict] = {}
    store = None if checkpoint is None else JsonLinesStore(checkpoint, "xbq calibrate")
    try:
        resumed = {r["point_key"] for r in store.rows([mf.key for mf in fits])} \
            if store is not None else set()
        if mapper is None:
            run_points(fits, fit_one, store, progress=finished)
        else:  # each setting a task; they finish in any order, the result is the same
            for r in (store.rows([mf.key for mf in fits]) if store is not None else []):
                finished(r)
            todo = [mf for mf in fits if mf.index not in entries]
            for j, entry in mapper(fit_machine, [mf.task for mf in todo]):
                row = row_of(todo[j], entry)
                if store is not None:
                    store.append([row])
                finished(row)
    finally:
        if store is not None:
            store.close()
    tried, best, nfev = [], None, 0
    for i, m in enumerate(machines):  # in the given order, as the serial run compares them
        entry = entries[i]
        nfev += entry["nfev"]
        r = np.asarray(entry["fun"])
        tried.append({"fixed": m, "cost": float(np.sum(r ** 2)),
                      "median_rel_error": float(np.median(np.abs(r))),
                      "max_rel_error": float(np.max(np.abs(r))), "nfev": entry["nfev"],
                      "status": entry["status"], "resumed": fits[i].key in resumed})
        if best is None or tried[-1]["cost"] < best[0]:
            best = (tried[-1]["cost"], entry, tried[-1]["max_rel_error"])
    _, entry, _ = best
    fitted, chosen = DesParams(**entry["params"]), entry["fixed"]
    polish = None
    if polish_nfev and fitted.job_placement:
        # the kept setting refitted from its optimum on the final check's placements, so the
        # fit no longer follows the noise of the fewer placements of the search
        fine = fitted.replace(placements=final_placements)
        out = fit_machine((table, names, fine, fit_durations, seed, polish_nfev))
        polish = {"nfev": out["nfev"], "placements": final_placements,
                  "search_max_rel_error": float(np.max(np.abs(entry["fun"]))),
                  "max_rel_error": float(np.max(np.abs(out["fun"])))}
        fitted = DesParams(**out["params"]).replace(placements=fitted.placements)
    fit_s = time.perf_counter() - t0
    # final verification: long runs, same seed, more placements
    durations = [final_requests / m for m in measured]
    check = as_verified(fitted, final_placements)
    sim, se = _simulate_points(table, check, durations, seed, se=True)
    rel = sim / measured - 1.0
    points = [{"series": s, "jobs": int(j), "measured": float(m), "simulated": float(v),
               "rel_error": float(e), "rel_se": float(q / m)}
              for s, j, m, v, e, q in zip(table["series"], table["jobs"], measured, sim, rel,
                                          se, strict=True)]
    fitted_info = []
    for n in names:
        v = getattr(fitted, n)
        lo_n, hi_n = _bounds(n)
        fitted_info.append({"name": n, "value": v, "unit": UNITS[n],
                            "min": PHYSICAL[n][0], "max": hi_n,
                            "at_bound": bool(v <= lo_n * 1.01 or v >= hi_n * 0.99)})
    return CalibrationResult(
        params={f["name"]: Parameter(f["name"], f["value"], f["min"], f["max"], True,
                                     f["unit"], f["at_bound"]) for f in fitted_info},
        residual=rel, nfev=int(nfev), success=entry["status"] > 0,
        message=str(entry["message"]),
        method="scipy.optimize.least_squares trf, log-parameters, diff_step 0.05",
        values=fitted.to_dict(), points=points, machines=tried, machine=chosen,
        fit={"nfev": int(nfev), "seconds": fit_s, "seed": seed,
             "fit_requests": fit_requests, "final_requests": final_requests,
             "final_durations_s": durations, "final_placements": int(check.placements),
             "polish": polish, "status": entry["status"]})


@dataclass(frozen=True)
class Parameter:
    """A fitted cost, as lmfit's ``Parameter``: its value, bounds (physical, ns), whether it
    varied, its unit, and whether it ended at a bound."""

    name: str
    value: float
    min: float
    max: float
    vary: bool
    unit: str
    at_bound: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit, "min": self.min,
                "max": self.max, "at_bound": self.at_bound}


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate` returns, shaped as lmfit's ``MinimizerResult``.

    Attributes
    ----------
    params : dict of str to Parameter
        The fitted costs.
    residual : numpy.ndarray
        The final check's relative errors, ``simulated / measured - 1``, one per point.
    nfev, success, message, method :
        Objective evaluations (every setting's), whether the kept fit converged, its message,
        the method.
    values : dict
        Every parameter of the twin (the fitted costs, the kept machine, the rest as given):
        what ``xbq simulate --params`` reads.
    points, machines, machine, fit :
        Each point's figures; each machine setting tried; the kept one; the fit's settings.

    ``chisqr``, ``ndata``, ``nvarys``, ``nfree``, ``redchi``, ``aic`` and ``bic`` follow
    lmfit's definitions on the relative residuals (the machine settings tried are not
    counted in ``nvarys``). :meth:`to_dict` is the JSON ``xbq calibrate --out`` writes.
    """

    params: dict
    residual: np.ndarray
    nfev: int
    success: bool
    message: str
    method: str
    values: dict
    points: list
    machines: list
    machine: dict
    fit: dict

    @property
    def ndata(self) -> int:
        return int(self.residual.size)

    @property
    def nvarys(self) -> int:
        return sum(p.vary for p in self.params.values())

    @property
    def nfree(self) -> int:
        return self.ndata - self.nvarys

    @property
    def chisqr(self) -> float:
        return float(np.sum(self.residual ** 2))

    @property
    def redchi(self) -> float | None:
        return self.chisqr / self.nfree if self.nfree > 0 else None

    @property
    def aic(self) -> float:
        return self.ndata * float(np.log(self.chisqr / self.ndata)) + 2 * self.nvarys

    @property
    def bic(self) -> float:
        return self.ndata * float(np.log(self.chisqr / self.ndata)) \
            + float(np.log(self.ndata)) * self.nvarys

    def to_dict(self) -> dict:
        """The result as the calibration file holds it (``params`` is every parameter)."""
        rel = np.abs(self.residual)
        return {
            "params": self.values,
            "fitted": [p.to_dict() for p in self.params.values()],
            "points": self.points,
            "median_rel_error": float(np.median(rel)),
            "max_rel_error": float(np.max(rel)),
            "within_10pct": int(np.sum(rel <= 0.10)),
            "statistics": {"ndata": self.ndata, "nvarys": self.nvarys, "nfree": self.nfree,
                           "chisqr": self.chisqr, "redchi": self.redchi, "aic": self.aic,
                           "bic": self.bic},
            "machines": self.machines,
            "machine": self.machine,
            "fit": {"method": self.method, **self.fit, "success": self.success,
                    "message": self.message},
        }


def write_result(result, path) -> None:
    """Write a calibration result as JSON (``xbq simulate --params`` reads its ``params``),
    through a temporary file and a rename, so an existing file is replaced whole or not at
    all."""
    data = result.to_dict() if isinstance(result, CalibrationResult) else result
    atomic_write(Path(path), (json.dumps(data, indent=2) + "\n").encode())
