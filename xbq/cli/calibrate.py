"""``xbq calibrate``: fit the twin's shared cost parameters to a tidy IOPS table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xbq.cli import nonnegative_int, positive_int
from xbq.engines.des.table import TABLE_COLUMNS
from xbq.study.calibrate import FIT_PARAMS


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
    p.add_argument("--fit", metavar="NAMES", default=",".join(FIT_PARAMS),
                   help="comma-separated parameters to fit (default %(default)s)")
    p.add_argument("--pcpus", metavar="LIST", default="0",
                   help="physical CPU counts to try, e.g. 0,16,24,32 (0: a pCPU per vCPU; "
                        "default 0); the best fit is kept, every one reported")
    p.add_argument("--pcpu-boost", metavar="LIST", default="1",
                   help="scheduler boost settings to try with each pCPU count (default 1)")
    p.add_argument("--job-placement", metavar="LIST", default="0",
                   help="job placements to try: 0 round-robin, 1 random (default 0)")
    p.add_argument("--dom0-vcpus", metavar="LIST", default="16",
                   help="dom0 vCPU counts (the backend threads' CPUs) to try (default 16)")
    p.add_argument("--irq-spread", metavar="LIST", default="1",
                   help="where the rings' interrupts go, to try: 1 ring r's to vCPU r, 0 all "
                        "to vCPU 0 (Xen's default binding) (default 1)")
    p.add_argument("--fe-lock-per-ring", metavar="LIST", default="1",
                   help="blkfront's lock to try: 1 one per ring, 0 one io_lock per device "
                        "(default 1)")
    p.add_argument("--placements", type=positive_int, default=None, metavar="N",
                   help="with random job placement, placements each point is averaged over "
                        "during the fit (default 16)")
    p.add_argument("--final-placements", type=positive_int, default=64, metavar="N",
                   help="... and in the final check (default %(default)s)")
    p.add_argument("--polish-nfev", type=nonnegative_int, default=0, metavar="N",
                   help="with random placement, refit the kept setting for at most N "
                        "evaluations on the final check's placements (default 0: none)")
    p.add_argument("--fit-requests", type=positive_int, default=20_000,
                   help="requests per point per evaluation during the fit (default 20000)")
    p.add_argument("--max-nfev", type=positive_int, default=120,
                   help="most objective evaluations per machine setting (default 120)")
    p.add_argument("--final-requests", type=positive_int, default=200_000,
                   help="requests per point in the final check (default 200000)")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="random seed (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="fit the machine settings in parallel on a local Dask cluster of N "
                   "processes (default: one after another in this process)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="fit the machine settings on an existing Dask cluster")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--verbose", action="store_true",
                   help="a line per evaluation on stderr instead of the progress bar (the bar "
                   "shows only on a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbq.engines.des.params import DesParams
    from xbq.errors import XbqError
    from xbq.progress import Progress
    from xbq.study.calibrate import START, calibrate, write_result
    from xbq.study.datasets import load_iops_table, load_seed
    from xbq.study.paths import provenance
    from xbq.sweep import mapper as sweep_mapper

    def numbers(text, flag):
        try:
            return [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise XbqError(f"{flag} takes comma-separated numbers, not {text!r}") from None

    names = tuple(n.strip() for n in args.fit.split(",") if n.strip())
    if not names:
        raise XbqError("--fit needs at least one parameter name")
    # A value outside its parameter's bounds (--pcpus -16) is refused by calibrate() before
    # anything runs; only a pool (pcpus > 0) has a boost setting to try.
    machines = [dict({"pcpus": pc, "pcpu_boost": b} if pc > 0 else {"pcpus": pc},
                     job_placement=jp, dom0_vcpus=d0, irq_spread=irq, fe_lock_per_ring=fl)
                for pc in numbers(args.pcpus, "--pcpus")
                for b in numbers(args.pcpu_boost, "--pcpu-boost")
                for jp in numbers(args.job_placement, "--job-placement")
                for d0 in numbers(args.dom0_vcpus, "--dom0-vcpus")
                for irq in numbers(args.irq_spread, "--irq-spread")
                for fl in numbers(args.fe_lock_per_ring, "--fe-lock-per-ring")]
    machines = [m for k, m in enumerate(machines) if m not in machines[:k]]

    quiet = args.quiet or args.json
    bar = Progress(len(machines), "calibrate", unit="setting", quiet=quiet or args.verbose)

    def progress(info):
        best = info["best_max_rel_error"]
        best_s = "-" if best is None else f"{best:.1%}"
        if info["event"] == "eval":
            line = (f"setting {info['machine'] + 1}/{info['machines']} {info['fixed'] or ''} "
                    f"eval {info['eval']}: max |rel err| {info['max_rel_error']:.3f}, median "
                    f"{info['median_rel_error']:.3f}; best max so far {best_s}")
            if args.verbose and not quiet:
                bar.write(line, file=sys.stderr)
            bar.update(0, eval=info["eval"], err=f"{info['max_rel_error']:.1%}", best=best_s)
        else:
            bar.update(1, best=f"{info['best_max_rel_error']:.1%}")

    started = provenance("xbq calibrate " + " ".join(sys.argv[2:]))  # the code that runs
    table = load_seed() if args.file is None else load_iops_table(args.file,
                                                                  required=TABLE_COLUMNS)
    if args.out and not Path(args.out).parent.is_dir():
        raise XbqError(f"directory {Path(args.out).parent} does not exist")
    # each machine setting's fit is kept beside --out as it ends; a rerun resumes from it
    checkpoint = f"{args.out}.partial.jsonl" if args.out else None
    client = None
    if args.workers or args.scheduler:
        from xbq.sweep import connect, local_client

        client = connect(args.scheduler) if args.scheduler else local_client(args.workers)
    try:
        with bar:
            base = None if args.placements is None else \
                DesParams().replace(**{**START, "placements": args.placements})
            fitted = calibrate(table, fit=names, machines=machines, seed=args.seed, base=base,
                               fit_requests=args.fit_requests, max_nfev=args.max_nfev,
                               final_requests=args.final_requests,
                               final_placements=args.final_placements,
                               polish_nfev=args.polish_nfev, progress=progress,
                               checkpoint=checkpoint,
                               mapper=None if client is None else sweep_mapper(client))
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None and args.workers:
                cluster.close()
    result = {**fitted.to_dict(), "provenance": started}
    if args.out:
        write_result(result, args.out)
        Path(checkpoint).unlink(missing_ok=True)
    if args.json:
        keys = ("params", "points", "median_rel_error", "max_rel_error")
        print(json.dumps({k: result[k] for k in keys}))
        return 0
    if len(result["machines"]) > 1:
        print("machine settings tried (fit runs; the best is kept):")
        for m in result["machines"]:
            print(f"  {m['fixed']}: sum of squares {m['cost']:.4f}, median |rel error| "
                  f"{m['median_rel_error']:.1%}, max {m['max_rel_error']:.1%}")
    print(f"kept: {result['machine'] or 'the defaults'}")
    pol = result["fit"].get("polish")
    if pol:
        print(f"refitted on {pol['placements']} placements ({pol['nfev']} evaluations): max "
              f"|rel error| {pol['search_max_rel_error']:.1%} -> {pol['max_rel_error']:.1%}")
    print("fitted parameters (shared by both series):")
    for f in result["fitted"]:
        flag = "  AT BOUND" if f["at_bound"] else ""
        print(f"  {f['name']:<24} {f['value']:>10.1f} {f['unit']:<3} "
              f"[{f['min']:g}, {f['max']:g}]{flag}")
    print(f"{'series':<12} {'jobs':>4} {'measured':>10} {'simulated':>10} {'rel_error':>9}")
    for p in result["points"]:
        se = f" (SE {p['rel_se']:.2%})" if p.get("rel_se") else ""
        print(f"{p['series']:<12} {p['jobs']:>4} {p['measured']:>10.0f} {p['simulated']:>10.0f} "
              f"{p['rel_error']:>+9.1%}{se}")
    print(f"median |rel error| {result['median_rel_error']:.1%}, "
          f"max {result['max_rel_error']:.1%}, {result['within_10pct']}/"
          f"{len(result['points'])} points within 10%")
    return 0
