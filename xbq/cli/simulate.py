"""``xbq simulate``: the discrete-event twin of a 16-vCPU guest, in virtual time."""

from __future__ import annotations

import argparse

from xbq.cli import (
    add_output_format,
    add_store_flags,
    finite_float,
    int_list,
    nonnegative_int,
    positive_int,
    text_table,
)
from xbq.engines.schema import GUEST_DEFAULTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate fio against blkfront/blkback in virtual time (the discrete-event twin)",
        description="Run fio's IOmeter job against the real blkfront and blkback code in "
        "virtual time: guest vCPUs, spin locks, rings, event channels, blkback's threads on "
        "dom0 and a device, each step charged its cost. Prints one row per jobs value: "
        "IOPS, latency, and where the time went (vCPU busy/spinning/holding locks, backend "
        "and device busy, notifications per request, batch size).",
    )
    p.add_argument("--mode", choices=("sq", "mq1", "mq"), default="mq",
                   help="sq: legacy one ring + io_lock; mq1: blk-mq one queue; mq: per-queue "
                   "rings (default mq)")
    p.add_argument("--jobs", type=int_list, default=[1, 4, 8, 16, 32, 64],
                   help="comma-separated fio numjobs values (default 1,4,8,16,32,64)")
    p.add_argument("--queues", type=positive_int, default=GUEST_DEFAULTS["queues"],
                   help="rings in mq mode (default %(default)s)")
    p.add_argument("--vcpus", type=positive_int, default=GUEST_DEFAULTS["vcpus"],
                   help="guest vCPUs (default %(default)s)")
    p.add_argument("--iodepth", type=positive_int, default=GUEST_DEFAULTS["iodepth"],
                   help="I/Os per job (default %(default)s)")
    p.add_argument("--duration", type=finite_float, default=0.2,
                   help="measured virtual seconds per point, after warm-up (default 0.2)")
    p.add_argument("--warmup", type=finite_float, default=None,
                   help="least virtual seconds discarded first (default 10%% of duration, "
                        ">= 2 ms); the warm-up also lasts until 3 x jobs x iodepth I/Os are done")
    p.add_argument("--seed", type=nonnegative_int, default=1, help="random seed (default 1)")
    p.add_argument("--params", metavar="FILE", default=None,
                   help="TOML or JSON cost overrides (e.g. "
                   "data/calibrated/des-params-determined.json, the calibration to the 2015 "
                   "table; without it the default, uncalibrated costs, which the command says "
                   "on stderr)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="also append the rows to FILE (.csv or .parquet) as they finish; "
                   "points already in FILE are not simulated again")
    add_store_flags(p)
    add_output_format(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from xbq.engines.des.params import DesParams, load_params
    from xbq.engines.des.simulate import points_of, simulate_point
    from xbq.engines.schema import to_frame, to_json_rows
    from xbq.progress import Progress
    from xbq.study.fio import to_fio_json
    from xbq.study.results import ResultsStore, run_points

    params = load_params(args.params) if args.params else DesParams()
    points = points_of(args.mode, args.jobs, queues=args.queues, vcpus=args.vcpus,
                       iodepth=args.iodepth, duration_s=args.duration, warmup_s=args.warmup,
                       seed=args.seed, params=params)
    quiet = args.output_format != "text"
    store = None
    if args.out:
        store = ResultsStore(args.out, meta={"command": "xbq simulate",
                                             "params_file": args.params},
                             axes=("jobs",), existing=args.existing, mixed=args.mixed,
                             wait=args.wait)
    try:
        with Progress(len(points), "simulate", quiet=quiet) as bar:
            rows = run_points(points, lambda pt: simulate_point(pt, quiet=quiet), store,
                              progress=lambda row: bar.update(1, jobs=row["jobs"]))
    finally:
        if store is not None:
            store.close()
    frame = to_frame(rows)
    if args.output_format == "json":
        print(to_json_rows(frame))
        return 0
    if args.output_format == "fio-json":
        print(to_fio_json(frame))
        return 0
    cols = ["mode", "jobs", "queues", "iops", "lat_mean_us", "lat_p99_us", "util_vcpu_busy",
            "util_vcpu_spin", "util_dom0_busy", "util_device", "notify_fe_per_req",
            "notify_be_per_req", "batch_mean"]
    print(text_table(frame, cols))
    if not args.params:  # after a run that succeeded: an error stays one line
        import sys

        print("xbq simulate: the default costs, not calibrated; for the twin calibrated to the "
              "2015 table add --params data/calibrated/des-params-determined.json", file=sys.stderr)
    return 0
