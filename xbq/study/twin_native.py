"""Does the twin, given this machine's microbenchmarked costs, predict the native engine?

The native sweeps ``data/measured/guest-2core-{ticket,pv}-v{16,2}.csv`` (``xbq measure``, 5
repetitions a point) are read point by point; each point is simulated by the twin at the
same configuration with the parameter file :mod:`xbq.study.hostcosts` wrote, nothing
refitted:

* the mode: native ``mq`` is the twin's ``mq`` with the point's queues; native ``sq`` is
  blk-mq with one hardware queue behind ``io_lock`` and 32 tags, which is the twin's
  ``mq1`` (the twin's ``sq`` is the legacy request_fn path, 128 requests and
  ``sq_locked_ns``; ``--sq-as sq`` runs that instead);
* jobs, vCPUs, iodepth, the workload, the ring page order and the job placement from the
  point's ``config``; ``dom0_vcpus`` from its ``config`` (the native engine runs
  ``min(dom0_vcpus, rings)`` dom0 threads; the twin's other dom0 vCPUs stay idle);
* ``pcpus`` from the row's ``host_cpus`` (the CPUs the native run had);
* the lock: the twin has ticket and MCS spinlocks but no paravirtual lock, so ``--lock pv``
  points are simulated with the ticket lock and flagged ``twin has no pv lock``.

Each row of the comparison gives the measured mean of the repetitions with their min-max
and standard deviation, the twin's prediction, and the relative error
``twin / mean - 1``; the summary counts the points within :data:`TOLERANCE` (15 %), all of
them and the unflagged ones. ``python -m xbq.study.twin_native --params FILE --out STEM``
writes ``STEM.csv`` and ``STEM.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xbq.errors import XbqError

#: The native sweeps compared (in ``data/measured``).
SWEEPS = ("guest-2core-ticket-v16.csv", "guest-2core-ticket-v2.csv",
          "guest-2core-pv-v16.csv", "guest-2core-pv-v2.csv")
#: A prediction within this relative error of the measured mean counts as a hit.
TOLERANCE = 0.15
#: Twin lock per native lock: (lock_mcs, flag or "").
LOCKS = {"ticket": (False, ""), "mcs": (True, ""),
         "pv": (False, "twin has no pv lock (simulated with the ticket lock)"),
         "ttas": (False, "twin has no ttas lock (simulated with the ticket lock)")}
#: What a configuration is made of, read from each row's ``config``.
CONFIG_KEYS = ("mode", "jobs", "queues", "vcpus", "iodepth", "lock", "device", "dom0_vcpus",
               "job_placement", "ring_page_order", "bssplit", "rwmixread")


def default_sweeps() -> list[Path]:
    """The four committed native sweeps (:data:`SWEEPS`)."""
    from xbq.study.paths import data_dir

    return [data_dir() / "measured" / name for name in SWEEPS]


def load_measured(paths) -> pd.DataFrame:
    """Rows of native sweeps (``xbq measure --out`` CSVs), with the configuration of each
    row from its ``config`` column and the file it came from (``source``, the file's stem).

    Raises
    ------
    XbqError
        A missing or unreadable file, a file without the columns needed (``engine``,
        ``config``, ``iops``, ``host_cpus``) or with rows of another engine.
    """
    frames = []
    for path in map(Path, paths):
        try:
            f = pd.read_csv(path, keep_default_na=False, na_values=[""])
        except (OSError, ValueError) as exc:
            raise XbqError(f"{path}: {exc}") from None
        missing = [c for c in ("engine", "config", "iops", "host_cpus") if c not in f.columns]
        if missing:
            raise XbqError(f"{path}: not a native sweep (no column {', '.join(missing)})")
        if (f["engine"] != "native").any():
            raise XbqError(f"{path}: rows of engine(s) {sorted(set(f['engine']) - {'native'})}"
                           ", not the native engine's")
        try:
            conf = [json.loads(c) for c in f["config"]]
        except (TypeError, ValueError) as exc:
            raise XbqError(f"{path}: a config that is not JSON ({exc})") from None
        lack = sorted({k for c in conf for k in CONFIG_KEYS if k not in c})
        if lack:
            raise XbqError(f"{path}: configs without {', '.join(lack)}")
        out = pd.DataFrame({k: [c[k] for c in conf] for k in CONFIG_KEYS})
        out["point"] = [json.dumps({k: v for k, v in c.items() if k != "rep"}, sort_keys=True)
                        for c in conf]
        out["source"] = path.stem
        out["iops"] = pd.to_numeric(f["iops"], errors="coerce")
        out["host_cpus"] = pd.to_numeric(f["host_cpus"], errors="coerce")
        out["threads"] = pd.to_numeric(f["threads"], errors="coerce") \
            if "threads" in f.columns else np.nan
        out["rep"] = [c.get("rep", 0) for c in conf]
        if out[["iops", "host_cpus"]].isna().any().any():
            raise XbqError(f"{path}: rows without a number in iops or host_cpus")
        frames.append(out)
    if not frames:
        raise XbqError("no measured sweep given")
    return pd.concat(frames, ignore_index=True)


def native_points(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per measured configuration (source, configuration, ``host_cpus``): the
    repetitions' ``reps``, ``iops_mean``, ``iops_min``, ``iops_max``, ``iops_std`` (sample
    standard deviation, 0 for one repetition) and ``threads``.

    Raises
    ------
    XbqError
        One configuration whose repetitions ran on different numbers of host CPUs.
    """
    keys = ["source", "point"]
    out = []
    for (src, point), g in rows.groupby(keys, sort=False):
        if g["host_cpus"].nunique() != 1:
            raise XbqError(f"{src}: repetitions of one point ran on {sorted(g['host_cpus'])} "
                           "host CPUs")
        first = g.iloc[0]
        rec = {k: first[k] for k in CONFIG_KEYS}
        x = g["iops"].to_numpy(float)
        rec.update(source=src, point=point, host_cpus=int(first["host_cpus"]),
                   threads=first["threads"], reps=int(x.size), iops_mean=float(x.mean()),
                   iops_min=float(x.min()), iops_max=float(x.max()),
                   iops_std=float(x.std(ddof=1)) if x.size > 1 else 0.0)
        out.append(rec)
    return pd.DataFrame(out)


def twin_point(row, params, *, duration: float = 0.2, seed: int = 1, sq_as: str = "mq1"):
    """The twin's :class:`~xbq.engines.des.point.DesPoint` of a native configuration (a row
    of :func:`native_points`), and the flags of what the twin cannot reproduce.

    Parameters
    ----------
    row : mapping
        ``mode``, ``jobs``, ``queues``, ``vcpus``, ``iodepth``, ``lock``, ``device``,
        ``dom0_vcpus``, ``job_placement``, ``ring_page_order``, ``bssplit``, ``rwmixread``,
        ``host_cpus``.
    params : DesParams
        The microbenchmarked costs (not refitted; the machine's settings of the point
        replace its own).
    duration : float
        Virtual seconds measured after the warm-up.
    seed : int
    sq_as : {"mq1", "sq"}
        The twin mode of a native ``sq`` point.

    Returns
    -------
    point : DesPoint
    flags : list of str
    """
    if sq_as not in ("mq1", "sq"):
        raise XbqError(f"sq_as must be 'mq1' or 'sq', not {sq_as!r}")
    from xbq.engines.des.point import DesPoint

    lock = str(row["lock"])
    if lock not in LOCKS:
        raise XbqError(f"unknown native lock {lock!r}")
    mcs, flag = LOCKS[lock]
    flags = [flag] if flag else []
    if row["device"] != "null":
        flags.append(f"twin's device is null, the native one {row['device']}")
    placed = bool(row["job_placement"])
    p = params.replace(pcpus=int(row["host_cpus"]), dom0_vcpus=int(row["dom0_vcpus"]),
                       ring_page_order=int(row["ring_page_order"]), job_placement=placed,
                       placements=params.placements if placed else 1, lock_mcs=mcs)
    native_mode = str(row["mode"])
    if native_mode not in ("sq", "mq"):
        raise XbqError(f"unknown native mode {native_mode!r}")
    mode = sq_as if native_mode == "sq" else "mq"
    pt = DesPoint(mode=mode, jobs=int(row["jobs"]),
                  queues=int(row["queues"]) if mode == "mq" else 1, vcpus=int(row["vcpus"]),
                  iodepth=int(row["iodepth"]), duration_s=duration, seed=seed,
                  bssplit=str(row["bssplit"]), rwmixread=float(row["rwmixread"]), params=p)
    return pt, flags


def compare(points: pd.DataFrame, params, *, duration: float = 0.2, seed: int = 1,
            sq_as: str = "mq1", tolerance: float = TOLERANCE, simulate=None,
            progress=None) -> pd.DataFrame:
    """Simulate each configuration of ``points`` (:func:`native_points`) and set the twin's
    IOPS beside the measured ones.

    Configurations the twin cannot tell apart (the same native point with a pv and a ticket
    lock) are simulated once.

    Parameters
    ----------
    points : DataFrame
    params : DesParams
    duration, seed, sq_as :
        As :func:`twin_point`.
    tolerance : float
        The relative error that counts as a hit (``within``).
    simulate : callable, optional
        ``simulate(point) -> row`` (default :func:`xbq.engines.des.simulate.simulate_point`);
        a test hook.
    progress : callable, optional
        Called with each finished row.

    Returns
    -------
    DataFrame
        ``config`` (source and mode), ``jobs``, the measured ``iops_mean`` / ``iops_min`` /
        ``iops_max`` / ``iops_std`` / ``reps``, ``twin_mode``, ``pcpus``, ``twin_iops``,
        ``rel_error``, ``within``, ``flag``, ``twin_wall_s`` and the configuration.
    """
    _check_tolerance(tolerance)
    if len(points) == 0:
        raise XbqError("no native point to compare")
    if simulate is None:
        from xbq.engines.des.simulate import simulate_point

        def simulate(pt):
            return simulate_point(pt, quiet=True)
    cache: dict = {}
    out = []
    for rec in points.to_dict("records"):
        pt, flags = twin_point(rec, params, duration=duration, seed=seed, sq_as=sq_as)
        key = pt.key
        if key not in cache:
            t0 = time.perf_counter()
            row = simulate(pt)
            cache[key] = (float(row["iops"]), time.perf_counter() - t0,
                          float(row.get("util_pcpu", math.nan)))
        twin, wall, upcpu = cache[key]
        rel = twin / rec["iops_mean"] - 1.0 if rec["iops_mean"] > 0 else math.nan
        res = {"config": f"{rec['source']} {rec['mode']}", "source": rec["source"],
               "lock": rec["lock"], "mode": rec["mode"], "twin_mode": pt.mode,
               "jobs": int(rec["jobs"]), "queues": pt.rings, "vcpus": int(rec["vcpus"]),
               "iodepth": int(rec["iodepth"]), "dom0_vcpus": int(rec["dom0_vcpus"]),
               "pcpus": int(pt.params.pcpus), "threads": rec["threads"],
               "reps": int(rec["reps"]), "iops_mean": rec["iops_mean"],
               "iops_min": rec["iops_min"], "iops_max": rec["iops_max"],
               "iops_std": rec["iops_std"], "twin_iops": twin, "rel_error": rel,
               "within": bool(abs(rel) <= tolerance), "flag": "; ".join(flags),
               "twin_util_pcpu": upcpu, "twin_wall_s": wall, "twin_point_key": key}
        out.append(res)
        if progress is not None:
            progress(res)
    return pd.DataFrame(out)


def _check_tolerance(tolerance) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or \
            not 0 < tolerance < 10:
        raise XbqError(f"tolerance must be a relative error in (0, 10), not {tolerance!r}")


def summarise(table: pd.DataFrame, tolerance: float = TOLERANCE) -> dict:
    """Counts within ``tolerance`` (a relative error, 0.15 for 15 %): all points, unflagged
    points, and per ``config``; the median and largest absolute relative errors."""
    _check_tolerance(tolerance)
    def counts(t):
        err = t["rel_error"].abs()
        return {"points": int(len(t)), "within": int((err <= tolerance).sum()),
                "median_abs_rel_error": float(err.median()) if len(t) else math.nan,
                "max_abs_rel_error": float(err.max()) if len(t) else math.nan}

    clean = table[table["flag"] == ""]
    return {"tolerance": tolerance, "all": counts(table), "unflagged": counts(clean),
            "by_config": {c: counts(g) for c, g in table.groupby("config", sort=False)}}


def text_table(table: pd.DataFrame) -> str:
    """The comparison as a person reads it: measured mean (min-max), twin, error, flag."""
    lines = [f"{'config':<26} {'jobs':>4} {'measured kIOPS (min-max)':>26} {'twin kIOPS':>10} "
             f"{'rel err':>8}  flag"]
    for r in table.itertuples(index=False):
        meas = f"{r.iops_mean / 1e3:,.0f} ({r.iops_min / 1e3:,.0f}-{r.iops_max / 1e3:,.0f})"
        lines.append(f"{r.config:<26} {r.jobs:>4} {meas:>26} {r.twin_iops / 1e3:>10,.0f} "
                     f"{r.rel_error:>+8.1%}  {'*' if r.within else ' '} {r.flag}")
    return "\n".join(lines)


def _machines(paths, params_doc: dict) -> dict:
    """The CPU model of the sweeps (their sidecars) and of the microbenchmarks."""
    sweeps = {}
    for p in map(Path, paths):
        side = p.with_name(p.name + ".meta.json")
        try:
            sweeps[p.stem] = json.loads(side.read_text()).get("machine", {}).get("cpu_model")
        except (OSError, ValueError):
            sweeps[p.stem] = None
    bench = ((params_doc.get("provenance") or {}).get("machine") or {}).get("cpu_model")
    return {"sweeps": sweeps, "microbench": bench,
            "same_cpu_model": bool(bench) and all(v == bench for v in sweeps.values())}


def main(argv=None) -> int:
    import argparse

    from xbq.engines.des.params import load_params
    from xbq.files import atomic_write
    from xbq.study.paths import provenance

    ap = argparse.ArgumentParser(
        prog="python -m xbq.study.twin_native",
        description="Simulate every point of the native sweeps with the twin and the "
        "microbenchmarked costs (nothing refitted); compare with the measured means.")
    ap.add_argument("--params", required=True, metavar="FILE",
                    help="the twin parameter file of python -m xbq.study.hostcosts")
    ap.add_argument("--out", required=True, metavar="STEM",
                    help="write STEM.csv and STEM.json (a .csv or .json suffix is dropped)")
    ap.add_argument("--measured", nargs="+", metavar="CSV", default=None,
                    help="native sweeps (default: data/measured/guest-2core-{ticket,pv}-"
                    "v{16,2}.csv)")
    ap.add_argument("--duration", type=float, default=0.2,
                    help="virtual seconds per twin point after its warm-up (default 0.2)")
    ap.add_argument("--seed", type=int, default=1, help="the twin's seed (default 1)")
    ap.add_argument("--sq-as", choices=("mq1", "sq"), default="mq1",
                    help="the twin mode of native sq points (default mq1: blk-mq, one queue)")
    ap.add_argument("--jobs", default=None,
                    help="only these jobs values, comma-separated (default: all)")
    args = ap.parse_args(argv)
    prog = "python -m xbq.study.twin_native"
    try:
        paths = args.measured or default_sweeps()
        params = load_params(args.params)
        try:
            doc = json.loads(Path(args.params).read_text())
        except (OSError, ValueError):
            doc = {}
        points = native_points(load_measured(paths))
        if args.jobs:
            try:
                keep = {int(j) for j in args.jobs.split(",")}
            except ValueError:
                raise XbqError(f"--jobs {args.jobs!r} is not a list of integers") from None
            points = points[points["jobs"].isin(keep)]
        stem = Path(args.out)
        if stem.suffix in (".csv", ".json"):
            stem = stem.with_suffix("")
        if not stem.parent.is_dir():  # before the simulations, not after
            raise XbqError(f"{stem.parent}: no such folder")
        t0 = time.perf_counter()
        table = compare(points, params, duration=args.duration, seed=args.seed,
                        sq_as=args.sq_as, progress=lambda r: print(
                            f"twin_native: {r['config']} jobs {r['jobs']}: twin "
                            f"{r['twin_iops'] / 1e3:,.0f}k ({r['rel_error']:+.1%})",
                            file=sys.stderr, flush=True))
        summary = summarise(table)
        result = {
            "summary": summary, "rows": json.loads(table.to_json(orient="records")),
            "params_file": str(args.params), "params": params.to_dict(),
            "settings": {"duration_s": args.duration, "seed": args.seed,
                         "sq_as": args.sq_as, "measured": [str(p) for p in paths]},
            "machines": _machines(paths, doc),
            "provenance": provenance(f"{prog} " + " ".join(argv if argv is not None
                                                           else sys.argv[1:])),
            "wall_s": time.perf_counter() - t0,
        }
        atomic_write(stem.with_suffix(".csv"), table.to_csv(index=False).encode())
        atomic_write(stem.with_suffix(".json"),
                     (json.dumps(result, indent=1, default=str) + "\n").encode())
    except XbqError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    print(text_table(table))
    a, u = summary["all"], summary["unflagged"]
    print(f"\nwithin {summary['tolerance']:.0%}: {a['within']} of {a['points']} points; "
          f"unflagged {u['within']} of {u['points']}; median |error| "
          f"{a['median_abs_rel_error']:.1%}")
    if not result["machines"]["same_cpu_model"]:
        print(f"note: the microbenchmarks ran on {result['machines']['microbench']!r}, the "
              f"sweeps on {sorted(set(map(str, result['machines']['sweeps'].values())))}",
              file=sys.stderr)
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
