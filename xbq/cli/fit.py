"""``xbq fit``: fit a queueing model to a tidy IOPS table and report it (or print JSON)."""

from __future__ import annotations

import argparse
import math

MODEL_NAMES = ("amdahl", "usl", "usl-capped", "mva", "repairman", "ticket", "mcs", "xenblk")


def register(sub: argparse._SubParsersAction) -> None:
    from xbq.cli import nonnegative_int

    p = sub.add_parser(
        "fit",
        help="fit Amdahl/USL/MVA/repairman/lock/xen-blk models to an IOPS table",
        description="Fit a model to a tidy IOPS CSV (columns: series (optional; else "
        "mode), the concurrency column, iops; known constants vcpus and queues as columns) "
        "by bounded least squares on relative errors, with Jacobian errors, bootstrap "
        "intervals, leave-one-out and forward (fit x <= 16, predict beyond) tests. "
        "xbq measure and xbq simulate output reads as written: repetitions are fitted as "
        "their means (weighted by their standard errors from 5 repetitions a point).",
    )
    p.add_argument("file", help="tidy IOPS table (.csv or .parquet)")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="one of: " + ", ".join(MODEL_NAMES))
    p.add_argument("--x", default="jobs",
                   help="concurrency column (default: jobs, else cores, threads or cpus)")
    p.add_argument("--y", default="iops",
                   help="throughput column in any unit: IOPS, ops/s, speed-up (default: "
                   "iops, else throughput, ops_per_s, ops or speedup); parameters come out "
                   "in the data's units")
    p.add_argument("--series", default="series",
                   help="series column (default: series, else mode as xbq measure and xbq "
                   "simulate write it; neither = one series 'all')")
    p.add_argument("--joint", action="store_true",
                   help="fit all series together, sharing the machine's parameters")
    p.add_argument("--fix", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="fix a parameter for every series, e.g. --fix cap=16")
    p.add_argument("--free", action="extend", nargs="+", default=[], metavar="NAME",
                   help="fit a parameter that is fixed by default (e.g. ring_size)")
    p.add_argument("--weighting", choices=("auto", "relative", "absolute"), default="auto",
                   help="residuals relative to the observed IOPS or absolute; auto (default): "
                   "relative, except that repeated points (several rows per series and x), "
                   "fitted as their means, are weighted by their standard errors when each "
                   "has 5+ repetitions with some spread")
    p.add_argument("--bootstrap", type=nonnegative_int, default=1000, metavar="N",
                   help="bootstrap resamples for intervals (default 1000; 0 = none)")
    p.add_argument("--resample", choices=("parametric", "residual"), default="parametric",
                   help="parametric: Gaussian noise with sigma drawn from its sampling "
                   "distribution (default); residual: resample leverage-adjusted residuals")
    p.add_argument("--seed", type=int, default=0, help="seed for starts and resampling")
    p.add_argument("--profile", metavar="PARAM",
                   help="also compute the profile-likelihood interval of one parameter")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def parse_fix(items: list[str]) -> dict[str, float]:
    """Parse ``name=value`` items into a dict (XbqError on bad input)."""
    from xbq.errors import XbqError

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise XbqError(f"--fix expects NAME=VALUE (got {item!r})")
        try:
            v = float(value)
        except ValueError:
            raise XbqError(f"--fix {name}: {value!r} is not a number") from None
        if not math.isfinite(v):
            raise XbqError(f"--fix {name}: value must be finite")
        out[name.strip()] = v
    return out


def run(args: argparse.Namespace) -> int:
    import json

    from xbq.errors import XbqError
    from xbq.fit import fit, profile
    from xbq.fit.core import resolve_x
    from xbq.models.registry import get_model
    from xbq.study.datasets import load_iops_table

    spec = get_model(args.model)
    fix = parse_fix(args.fix)
    for name in list(fix) + list(args.free):
        spec.param(name)
    # an explicitly named series column must exist (the default may be absent: one series)
    need = (args.series,) if args.series != "series" else ()
    df = load_iops_table(args.file, x=args.x, y=args.y, series=args.series, required=need)
    _, resolved, _ = resolve_x(spec, df, args.x)
    missing = [p for p in spec.params if p.column and p.fixed and p.name not in fix
               and p.column not in resolved.columns]
    if missing:  # every missing setting at once, and where each can come from
        flags = " ".join(f"--{p.column} N" for p in missing if p.column in ("vcpus", "queues"))
        raise XbqError(f"model {spec.name} needs " + ", ".join(
            f"{p.name} ({p.meaning})" for p in missing) + ": add column(s) " + ", ".join(
            repr(p.column) for p in missing) + (f" (xbq fio import {flags})" if flags else "")
            + " or pass " + " ".join(f"--fix {p.name}=VALUE" for p in missing))
    result = fit(df, spec, x=args.x, joint=args.joint, fix=fix, free=tuple(args.free),
                 weighting=args.weighting, bootstrap=args.bootstrap,
                 bootstrap_kind=args.resample,
                 seed=args.seed)
    prof = None
    if args.profile:
        prof = profile(df, spec, args.profile, x=args.x, joint=args.joint, fix=fix,
                       free=tuple(args.free), weighting=args.weighting, seed=args.seed)
    if args.json:
        out = result.to_dict()
        if prof is not None:
            out["profile"] = {"param": prof["param"], "best": prof["best"],
                              "interval": prof["interval"], "level": prof["level"]}
        print(json.dumps(out))
    else:
        print(result.report())
        if prof is not None:
            lo, hi = prof["interval"]
            fmt = lambda v: "not reached" if v is None else f"{v:.6g}"  # noqa: E731
            print(f"[[Profile likelihood]] {prof['param']}: best {prof['best']:.6g}, "
                  f"{prof['level']:.0%} interval [{fmt(lo)}, {fmt(hi)}]")
    failed = sorted({e["failed"] for e in result.series.values() if e.get("failed")})
    if failed:  # reported above; the exit status says it too
        import sys

        print(f"xbq fit: fit failed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0
