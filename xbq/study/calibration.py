"""Checks of a calibration of the twin: how well its costs are determined, and whether it
predicts points it was not fitted to.

* :func:`seed_intervals` refits the kept machine setting from the fitted costs on other
  seeds (other random draws of every point): the spread of each cost over the refits is how
  far the simulation noise and the table leave it free;
* :func:`forward_test` calibrates on the points with ``jobs <= 16`` only (the kept machine
  setting, from the default start) and predicts the rest; the errors sit next to the xen-blk
  model's forward errors (:func:`xbq.fit.fit`, fitted on the same points).

``python -m xbq.study.calibration FILE`` adds both to a calibration file (``intervals``,
``forward``) and prints them.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from xbq.engines.des.params import DesParams
from xbq.engines.des.table import simulate_table
from xbq.study.calibrate import START, as_verified, fit_machine

TRAIN_MAX_JOBS = 16


def seed_intervals(table, result: dict, *, seeds=(2, 3, 4, 5), max_nfev: int = 40,
                   mapper=None) -> dict:
    """Refit the fitted costs of ``result`` on each of ``seeds``; per cost its value, the
    refits, their min/max and relative spread ((max - min) / value).

    ``mapper(fn, tasks)`` (as :func:`xbq.study.calibrate.calibrate` takes) runs the
    refits in parallel; default one after another.
    """
    names = [f["name"] for f in result["fitted"]]
    base = DesParams(**result["params"])
    fit_durations = [result["fit"]["fit_requests"] / m for m in table["iops"].to_numpy(float)]
    tasks = [(table, names, base, fit_durations, int(s), max_nfev) for s in seeds]
    outs = map_in_order(fit_machine, tasks, mapper)
    out = {"seeds": list(map(int, seeds)), "max_nfev": max_nfev, "params": {}}
    for n in names:
        v = float(getattr(base, n))
        refits = [float(o["params"][n]) for o in outs]
        lo, hi = min(refits + [v]), max(refits + [v])
        out["params"][n] = {"value": v, "refits": refits, "min": lo, "max": hi,
                            "rel_spread": (hi - lo) / v if v else float("nan")}
    return out


def forward_test(table, result: dict, *, max_nfev: int = 60, final_requests: int = 100_000,
                 xenblk: bool = True) -> dict:
    """Calibrate on ``jobs <= 16`` (kept machine setting, default start), predict the rest.

    Returns ``train`` (the training fit's costs), ``points`` (series, jobs, measured,
    predicted, rel_error for every held-out point) and, with ``xenblk``, the xen-blk
    model's forward errors at the same points.
    """
    names = [f["name"] for f in result["fitted"]]
    fixed = result.get("machine") or {}
    base = DesParams().replace(**{**START, **fixed})
    train = table[table["jobs"] <= TRAIN_MAX_JOBS].reset_index(drop=True)
    test = table[table["jobs"] > TRAIN_MAX_JOBS].reset_index(drop=True)
    durations = [result["fit"]["fit_requests"] / m for m in train["iops"].to_numpy(float)]
    seed = result["fit"]["seed"]
    fitted = DesParams(**fit_machine((train, names, base, durations, seed, max_nfev))["params"])
    # predicted with as many placements as the final verification
    fitted = as_verified(fitted, result["fit"].get("final_placements", fitted.placements))
    measured = test["iops"].to_numpy(float)
    pred = simulate_table(test, fitted, duration=[final_requests / m for m in measured],
                          seed=seed)["iops"].to_numpy(float)
    rel = pred / measured - 1.0
    points = [{"series": s, "jobs": int(j), "measured": float(m), "predicted": float(p),
               "rel_error": float(e)}
              for s, j, m, p, e in zip(test["series"], test["jobs"], measured, pred, rel,
                                       strict=True)]
    out = {"train_max_jobs": TRAIN_MAX_JOBS, "train": {n: getattr(fitted, n) for n in names},
           "points": points, "max_rel_error": float(np.max(np.abs(rel)))}
    if xenblk:
        from xbq.fit import fit

        res = fit(table, "xenblk", joint=True, loo=False, forward=True)
        model = []
        for s, e in res.series.items():
            f = e.get("forward") or {}
            for x, r in zip(f.get("x", []), f.get("rel_err", []), strict=True):
                model.append({"series": s, "jobs": int(x), "rel_error": float(r)})
        out["xenblk"] = model
        out["xenblk_max_rel_error"] = float(max(abs(m["rel_error"]) for m in model)) \
            if model else None
    return out


def report(checks: dict) -> str:
    """The intervals and forward test as text."""
    L = []
    iv = checks.get("intervals")
    if iv:
        L.append(f"cost intervals: refits on seeds {iv['seeds']} from the fit "
                 f"(at most {iv['max_nfev']} evaluations each)")
        for n, d in iv["params"].items():
            L.append(f"  {n:<24} {d['value']:>10.0f} ns  [{d['min']:.0f}, {d['max']:.0f}]"
                     f"  spread {d['rel_spread']:.0%}")
    fw = checks.get("forward")
    if fw:
        L.append(f"forward test: calibrated on jobs <= {fw['train_max_jobs']}, predicted:")
        model = {(m["series"], m["jobs"]): m["rel_error"] for m in fw.get("xenblk", [])}
        for p in fw["points"]:
            xb = model.get((p["series"], p["jobs"]))
            xbt = f"   xen-blk model {xb:+.1%}" if xb is not None else ""
            L.append(f"  {p['series']:<12} {p['jobs']:>3} jobs: measured {p['measured']:>8.0f}"
                     f" twin {p['predicted']:>8.0f} ({p['rel_error']:+.1%}){xbt}")
    return "\n".join(L)


def map_in_order(fn, tasks, mapper=None) -> list:
    """``fn`` over ``tasks``, the results in the tasks' order: one after another, or through
    ``mapper(fn, tasks)``, which yields ``(index, result)`` in any order (:func:`pool_mapper`,
    :func:`xbq.sweep.mapper`)."""
    if mapper is None:
        return [fn(t) for t in tasks]
    out = [None] * len(tasks)
    for j, res in mapper(fn, tasks):
        out[j] = res
    return out


def pool_mapper(pool):
    """A ``mapper(fn, tasks)`` on a :class:`concurrent.futures.Executor`: yields
    ``(index, fn(task))`` as the tasks finish."""
    def run_all(fn, items):
        futs = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for fut in as_completed(futs):
            yield futs[fut], fut.result()
    return run_all


def main(argv=None) -> int:
    import argparse
    import json
    import sys
    from pathlib import Path

    from xbq.errors import XbqError
    from xbq.study.calibrate import write_result
    from xbq.study.datasets import load_seed

    ap = argparse.ArgumentParser(prog="python -m xbq.study.calibration",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("file", help="a calibration JSON (xbq calibrate --out), updated in place")
    ap.add_argument("--seeds", default="2,3,4,5")
    ap.add_argument("--workers", type=int, default=0,
                    help="refit the seeds in parallel on N local processes")
    args = ap.parse_args(argv)
    pool = None
    try:
        result = json.loads(Path(args.file).read_text())
        table = load_seed()
        seeds = [int(s) for s in args.seeds.split(",")]
        mapper = None
        if args.workers > 0:
            pool = ProcessPoolExecutor(args.workers)
            mapper = pool_mapper(pool)
        result["intervals"] = seed_intervals(table, result, seeds=seeds, mapper=mapper)
        result["forward"] = forward_test(table, result)
    except (XbqError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    write_result(result, args.file)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
