"""The twin's calibration put to a referee's checks (issue 21): one command, one JSON.

``python -m xbq.study.trust --out data/calibrated/trust.json`` runs, each step kept in the
file the moment it ends (a rerun skips the steps already there):

``identify_all``
    The Jacobian of the 12 relative residuals at the eleven-cost calibration
    (``data/calibrated/des-params.json``), on common random numbers over ``--seeds``:
    singular values, standard errors in e-folds, correlations, the costs it determines
    (:mod:`xbq.study.identify`).
``calibration``
    The twin refitted with only the determined costs free, every other cost at its
    documented default (``docs/des.md``, "Parameters"), the objective the mean over
    ``--seeds``, the machine setting chosen among the 8 of the eleven-cost calibration;
    written to ``--params-out``; then the Jacobian at its own optimum.
``seeds``
    Both calibrations checked on seeds neither used (``--unseen``): per seed, the points
    within 10 % and the largest error.
``selection``
    AIC, AICc and BIC on the relative residuals, with every discrete choice counted: the
    machine setting picked among 8 (3 binary choices) and the three mechanisms switched on
    after looking at the table (``tag_wait``, ``vcpu_wake_ns``, ``be_shared_lock_ns``), beside
    the analytic models fitted jointly to the same points (:func:`xbq.fit.fit`).
``forward``
    The machine setting chosen, and the costs fitted, on jobs <= 16 only; 32 and 64 jobs
    predicted; beside holding each series' 16-job value flat and the xen-blk model's forward
    errors.
``loo``
    Leave-one-point-out: for each of the 12 points the determined costs refitted on the
    other 11 (kept machine setting, from the optimum) and the left-out point predicted;
    beside the analytic models' leave-one-out predictions.
``mechanisms``
    What the twin's two candidate mechanisms predict differently: its internal counters
    (dom0 spin share, tag sleeps, rings in use, batch sizes) at 16 and 64 jobs, rings at
    16 jobs, pinned against unpinned jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from xbq.engines.des.params import DesParams
from xbq.errors import XbqError
from xbq.study import identify
from xbq.study.calibrate import _simulate_points, calibrate, fit_machine, write_result
from xbq.study.paths import provenance

#: The 8 machine settings of the eleven-cost calibration (data/calibrated/README.md).
MACHINES = [{"job_placement": float(jp), "irq_spread": float(irq), "fe_lock_per_ring": float(fl)}
            for jp in (0, 1) for irq in (0, 1) for fl in (0, 1)]
#: Discrete choices made with the table in view: the machine setting (one of 8: 3 binary
#: choices) and the three mechanisms switched on after seeing it, each counted only where
#: the calibration has it on (:func:`choices_of`).
CHOICES = {"machine setting (1 of 8)": 3, "tag_wait": 1, "vcpu_wake_ns on": 1,
           "be_shared_lock_ns on": 1}


def choices_of(params: dict) -> dict:
    """The discrete choices a calibration made (:data:`CHOICES`), as its parameters show."""
    on = {"tag_wait": params.get("tag_wait", 0) > 0,
          "vcpu_wake_ns on": params.get("vcpu_wake_ns", 0) > 0,
          "be_shared_lock_ns on": params.get("be_shared_lock_ns", 0) > 0}
    return {c: n for c, n in CHOICES.items() if on.get(c, True)}
#: The mechanisms switched on (not fitted) in every calibration since issue 13.
MECHANISMS = {"tag_wait": 1.0, "placements": 16.0}
ANALYTIC = ("usl", "ticket", "mva", "repairman", "xenblk")
#: The forward test trains on jobs <= this.
TRAIN_MAX_JOBS = 16
#: The twin's counters that tell its mechanisms apart (frame columns).
COUNTERS = ("iops", "util_vcpu_spin", "util_dom0_busy", "util_dom0_spin", "util_dom0_hold",
            "batch_mean", "irq_per_req", "ctx_per_req", "tag_wait_per_req", "lat_mean_us")


def _rel_stats(rel):
    rel = np.abs(np.asarray(rel, float))
    return {"within_10pct": int(np.sum(rel <= 0.10)), "max_abs": float(rel.max()),
            "median_abs": float(np.median(rel))}


def _information(rss, n, k):
    aic = n * np.log(rss / n) + 2 * k
    return {"k": int(k), "aic": float(aic), "bic": float(n * np.log(rss / n) + k * np.log(n)),
            "aicc": float(aic + 2 * k * (k + 1) / (n - k - 1)) if n - k - 1 > 0 else None}


class Steps:
    """The JSON file of the checks, each step written whole the moment it ends."""

    def __init__(self, path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, name, fn):
        if name in self.data:
            print(f"[{name}] kept from {self.path}", file=sys.stderr)
            return self.data[name]
        t0 = time.perf_counter()
        print(f"[{name}] running", file=sys.stderr)
        out = fn()
        out["seconds"] = round(time.perf_counter() - t0, 1)
        out["provenance"] = provenance("python -m xbq.study.trust " + " ".join(sys.argv[1:]))
        self.data[name] = out
        write_result(self.data, self.path)
        print(f"[{name}] done in {out['seconds']:.0f} s", file=sys.stderr)
        return out


def run(args) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from xbq.study.calibration import map_in_order, pool_mapper
    from xbq.study.datasets import load_seed

    table = load_seed()
    measured = table["iops"].to_numpy(float)
    seeds = [int(s) for s in args.seeds.split(",")]
    unseen = [int(s) for s in args.unseen.split(",")]
    if set(seeds) & set(unseen):
        raise XbqError("--unseen seeds must differ from the calibration's --seeds")
    durations = [args.fit_requests / m for m in measured]
    old = json.loads(Path(args.params).read_text())
    old_params = DesParams(**old["params"])
    old_names = [f["name"] for f in old["fitted"]]
    steps = Steps(args.out)
    pool = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    mapper = pool_mapper(pool) if pool else None

    def jac(params, names):
        d = identify.jacobian(table, params, names, durations, seeds, mapper=mapper)
        rms = float(np.sqrt(np.mean(d["residual"] ** 2)))
        return {"names": d["names"], "J": d["J"].tolist(), "residual": d["residual"].tolist(),
                "nfev": d["nfev"], "seeds": seeds, "fit_requests": args.fit_requests,
                "placements": int(params.placements),
                "at_5pct": identify.analyse(d["J"], names, sigma=0.05),
                "at_residual_rms": identify.analyse(d["J"], names, sigma=rms)}

    try:
        ident = steps.run("identify_all", lambda: jac(old_params.replace(
            placements=args.placements), old_names))
        chosen = ident["at_5pct"]["selected"]

        def new_calibration():
            defaults = DesParams()
            start = {n: getattr(old_params, n) for n in chosen}
            base = defaults.replace(**MECHANISMS, **start)
            res = calibrate(table, fit=tuple(chosen), machines=MACHINES, base=base,
                            fit_requests=args.fit_requests, seed=seeds, max_nfev=args.max_nfev,
                            final_requests=args.final_requests, mapper=mapper,
                            checkpoint=f"{args.out}.calibration.partial.jsonl")
            out = {**res.to_dict(), "provenance": provenance(
                "python -m xbq.study.trust " + " ".join(sys.argv[1:]))}
            fixed = [n for n in old_names if n not in chosen]
            out["fixed_at_documented_default"] = {n: getattr(defaults, n) for n in fixed}
            write_result(out, args.params_out)
            new = DesParams(**out["params"]).replace(placements=args.placements)
            live = [n for n in old_names if getattr(new, n) > 0]
            return {"file": str(args.params_out), "fitted": chosen,
                    "fixed_at_documented_default": out["fixed_at_documented_default"],
                    "machine": out["machine"], "points": out["points"],
                    **_rel_stats([p["rel_error"] for p in out["points"]]),
                    "identify_at_optimum": jac(new, live)}
        cal = steps.run("calibration", new_calibration)
        Path(f"{args.out}.calibration.partial.jsonl").unlink(missing_ok=True)
        new_params = DesParams(**json.loads(Path(cal["file"]).read_text())["params"])
        both = {"eleven costs (des-params.json)": old_params,
                f"{len(chosen)} determined costs": new_params}

        def per_seed():
            fin = [args.check_requests / m for m in measured]
            out = {"unseen_seeds": unseen, "check_requests": args.check_requests,
                   "placements": 64, "calibrations": {}}
            for label, p in both.items():
                rows = []
                for s in unseen:
                    rel = _simulate_points(table, p.replace(placements=64), fin, s) \
                        / measured - 1.0
                    rows.append({"seed": s, "rel_error": rel.tolist(), **_rel_stats(rel)})
                    print(f"  {label} seed {s}: {rows[-1]['within_10pct']}/12, max "
                          f"{rows[-1]['max_abs']:.1%}", file=sys.stderr)
                out["calibrations"][label] = rows
            return out
        steps.run("seeds", per_seed)

        def selection():
            from xbq.fit import fit

            n = len(table)
            rows = []
            for label, src in (("eleven costs (des-params.json)", old),
                               (f"{len(chosen)} determined costs",
                                json.loads(Path(cal["file"]).read_text()))):
                rel = np.array([p["rel_error"] for p in src["points"]])
                made = choices_of(src["params"])
                k = len(src["fitted"]) + sum(made.values())
                rows.append({"model": "twin, " + label, "costs": len(src["fitted"]),
                             "choices": sum(made.values()), "choices_made": list(made),
                             "rss": float(rel @ rel), **_information(float(rel @ rel), n, k)})
            for m in ANALYTIC:
                try:
                    res = fit(table, m, joint=True, loo=False, forward=False, seed=0)
                except XbqError as exc:
                    rows.append({"model": m + " (joint)", "error": str(exc)})
                    continue
                rel = np.concatenate([
                    res.predict(s, sub["jobs"].to_numpy(float)) / sub["iops"].to_numpy(float)
                    - 1.0 for s, sub in table.groupby("series")])
                k = sum(g["k"] for g in res.groups)
                rows.append({"model": m + " (joint)", "costs": int(k), "choices": 0,
                             "rss": float(rel @ rel), **_information(float(rel @ rel), n, k)})
            return {"n": n, "choices": CHOICES, "rows": rows}
        steps.run("selection", selection)

        def forward():
            from xbq.fit import fit
            from xbq.study.calibrate import as_verified

            train = table[table["jobs"] <= TRAIN_MAX_JOBS].reset_index(drop=True)
            test = table[table["jobs"] > TRAIN_MAX_JOBS].reset_index(drop=True)
            base = DesParams().replace(**MECHANISMS, **{n: getattr(old_params, n)
                                                       for n in chosen})
            res = calibrate(train, fit=tuple(chosen), machines=MACHINES, base=base,
                            fit_requests=args.fit_requests, seed=seeds,
                            max_nfev=args.max_nfev, final_requests=args.check_requests,
                            mapper=mapper, checkpoint=f"{args.out}.forward.partial.jsonl")
            fitted = as_verified(DesParams(**res.values))
            obs = test["iops"].to_numpy(float)
            pred = _simulate_points(test, fitted, [args.check_requests / m for m in obs], seeds)
            flat = np.array([table[(table["series"] == s) & (table["jobs"] == TRAIN_MAX_JOBS)]
                             ["iops"].iloc[0] for s in test["series"]])
            xb = fit(table, "xenblk", joint=True, loo=False, forward=True, seed=0)
            xbe = {(s, int(x)): float(r) for s, e in xb.series.items()
                   for x, r in zip((e.get("forward") or {}).get("x", []),
                                   (e.get("forward") or {}).get("rel_err", []), strict=True)}
            points = [{"series": s, "jobs": int(j), "measured": float(m),
                       "twin": float(p), "twin_rel_error": float(p / m - 1),
                       "flat_rel_error": float(f / m - 1),
                       "xenblk_rel_error": xbe.get((s, int(j)))}
                      for s, j, m, p, f in zip(test["series"], test["jobs"], obs, pred, flat,
                                               strict=True)]
            return {"train_max_jobs": TRAIN_MAX_JOBS, "machine": res.machine,
                    "machines": res.machines, "train_costs": {n: res.values[n] for n in chosen},
                    "train_max_abs": float(np.max(np.abs(res.residual))), "points": points}
        steps.run("forward", forward)
        Path(f"{args.out}.forward.partial.jsonl").unlink(missing_ok=True)

        def loo():
            from xbq.fit import fit
            from xbq.study.calibrate import as_verified

            base = new_params.replace(placements=args.placements)
            tasks = []
            for i in range(len(table)):
                train = table.drop(index=i).reset_index(drop=True)
                tasks.append((train, list(chosen), base,
                              [args.fit_requests / m for m in train["iops"]], seeds,
                              args.loo_nfev))
            fits = map_in_order(fit_machine, tasks, mapper)
            points = []
            for i, f in enumerate(fits):
                one = table.iloc[[i]].reset_index(drop=True)
                m = float(one["iops"].iloc[0])
                p = float(_simulate_points(one, as_verified(DesParams(**f["params"])),
                                           [args.check_requests / m], seeds)[0])
                points.append({"series": one["series"].iloc[0], "jobs": int(one["jobs"].iloc[0]),
                               "measured": m, "twin": p, "twin_rel_error": p / m - 1,
                               "nfev": f["nfev"]})
            models = {}
            for name in ANALYTIC:
                try:
                    res = fit(table, name, joint=True, loo=True, forward=False, seed=0)
                except XbqError as exc:
                    models[name] = {"error": str(exc)}
                    continue
                rel = {}
                for s, e in res.series.items():
                    lo = e.get("loo") or {}
                    obs = dict(zip(table[table["series"] == s]["jobs"],
                                   table[table["series"] == s]["iops"], strict=True))
                    for x, pr in zip(lo.get("x", []), lo.get("pred", []), strict=True):
                        rel[f"{s}:{int(x)}"] = float(pr / obs[int(x)] - 1)
                models[name] = rel
            for p in points:
                for name, rel in models.items():
                    p[name + "_rel_error"] = rel.get(f"{p['series']}:{p['jobs']}")
            return {"max_nfev": args.loo_nfev, "points": points,
                    "twin": _rel_stats([p["twin_rel_error"] for p in points]),
                    "models": {n: (_rel_stats(list(r.values())) if r and "error" not in r
                                   else r) for n, r in models.items()}}
        steps.run("loo", loo)
        steps.run("mechanisms", lambda: mechanisms(table, new_params, args.check_requests))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return steps.data


def mechanisms(table, params: DesParams, requests: int) -> dict:
    """The twin's counters where its mechanisms part ways (mq: 16 rings; sq: one ring):
    jobs 8/16/64 as calibrated; unpinned against pinned jobs; a device-wide against a
    per-ring backend lock (``be_pools_per_ring``, what Linux 4.6 merged); rings at 16
    jobs. Each row: the configuration and :data:`COUNTERS`."""
    from xbq.engines.des.simulate import simulate

    iops = {(s, int(j)): float(v) for s, j, v in
            zip(table["series"], table["jobs"], table["iops"], strict=True)}
    cases = []
    for mode, series, jobs in (("mq", "multi_ring", 8), ("mq", "multi_ring", 16),
                               ("mq", "multi_ring", 64), ("sq", "single_ring", 16),
                               ("sq", "single_ring", 64)):
        for label, change in (("as calibrated", {}), ("jobs pinned", {"job_placement": 0.0}),
                              ("backend lock per ring", {"be_pools_per_ring": 1.0})):
            if mode == "sq" and label != "as calibrated":
                continue
            cases.append((label, mode, jobs, 16 if mode == "mq" else 1, change,
                          iops[(series, jobs)]))
    for q in (1, 2, 4, 8):
        cases.append(("rings", "mq", 16, q, {}, iops[("multi_ring", 16)]))
    rows = []
    for label, mode, jobs, queues, change, scale in cases:
        p = params.replace(**change)
        p = p.replace(placements=64) if p.job_placement else p
        df = simulate(mode, jobs, queues=queues, vcpus=16, iodepth=64,
                      duration=requests / scale, seed=1, params=p, quiet=True)
        r = df.iloc[0]
        rows.append({"case": label, "mode": mode, "jobs": jobs, "queues": queues,
                     **{c: float(r[c]) for c in COUNTERS if c in df.columns}})
    return {"requests": requests, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xbq.study.trust",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="data/calibrated/des-params.json")
    ap.add_argument("--params-out", default="data/calibrated/des-params-determined.json")
    ap.add_argument("--out", default="data/calibrated/trust.json")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--unseen", default="11,12,13,14,15,16,17,18")
    ap.add_argument("--placements", type=int, default=16)
    ap.add_argument("--fit-requests", type=int, default=8000)
    ap.add_argument("--max-nfev", type=int, default=40)
    ap.add_argument("--final-requests", type=int, default=50_000)
    ap.add_argument("--check-requests", type=int, default=20_000)
    ap.add_argument("--loo-nfev", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        run(args)
    except (XbqError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
