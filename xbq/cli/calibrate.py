"""``xbq calibrate``: fit the twin's shared cost parameters to a tidy IOPS table."""

from __future__ import annotations

import argparse
import json
import sys

from xbq.cli import nonnegative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit the discrete-event twin's shared costs to the seed table",
        description="Fit a small, documented set of cost parameters of the discrete-event "
        "twin, shared by both series (one machine, two drivers), so that it reproduces a "
        "tidy IOPS table (default: the 2015 seed). Reports every point's measured and "
        "simulated IOPS and relative error, and the fitted parameters with their bounds; "
        "--out writes a file that 'xbq simulate --params' reads.",
    )
    p.add_argument("file", nargs="?", default=None,
                   help="tidy IOPS CSV (default data/seed/xen-blkmq-rfc-2015.csv)")
    p.add_argument("--out", metavar="FILE", default=None, help="write the result JSON here")
    p.add_argument("--json", action="store_true",
                   help="print {params, points, median_rel_error, max_rel_error} as JSON")
    p.add_argument("--duration", type=float, default=0.03,
                   help="virtual seconds per point during the fit (default 0.03)")
    p.add_argument("--max-nfev", type=positive_int, default=40,
                   help="most objective evaluations (default 40)")
    p.add_argument("--final-requests", type=positive_int, default=200_000,
                   help="requests per point in the final check (default 200000)")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="random seed (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbq.des.calibrate import calibrate, provenance, write_result
    from xbq.errors import XbqError

    if not args.duration > 0:
        raise XbqError(f"--duration must be positive, not {args.duration}")

    def progress(n, params, r):
        if not args.quiet:
            print(f"eval {n}: max |rel err| {abs(r).max():.3f}, median {sorted(abs(r))[6]:.3f}",
                  file=sys.stderr, flush=True)

    result = calibrate(args.file, duration=args.duration, seed=args.seed,
                       max_nfev=args.max_nfev, final_requests=args.final_requests,
                       progress=progress)
    result["provenance"] = provenance("xbq calibrate " + " ".join(sys.argv[2:]))
    if args.out:
        write_result(result, args.out)
    if args.json:
        keys = ("params", "points", "median_rel_error", "max_rel_error")
        print(json.dumps({k: result[k] for k in keys}))
        return 0
    print("fitted parameters (shared by both series):")
    for f in result["fitted"]:
        flag = "  AT BOUND" if f["at_bound"] else ""
        print(f"  {f['name']:<24} {f['value']:>10.1f} {f['unit']:<3} "
              f"[{f['min']:g}, {f['max']:g}]{flag}")
    print(f"{'series':<12} {'jobs':>4} {'measured':>10} {'simulated':>10} {'rel_error':>9}")
    for p in result["points"]:
        print(f"{p['series']:<12} {p['jobs']:>4} {p['measured']:>10.0f} {p['simulated']:>10.0f} "
              f"{p['rel_error']:>+9.1%}")
    print(f"median |rel error| {result['median_rel_error']:.1%}, "
          f"max {result['max_rel_error']:.1%}, {result['within_10pct']}/"
          f"{len(result['points'])} points within 10%")
    return 0
