"""``xbq measure``: IOPS of blkfront/blkback on real threads (the native engine)."""

from __future__ import annotations

import argparse

from xbq.cli import (
    add_output_format,
    add_store_flags,
    int_list,
    nonnegative_int,
    positive_int,
)
from xbq.engines.schema import GUEST_DEFAULTS

LOCKS = ("ticket", "ttas", "mcs", "pv")
DEVICES = ("null", "ramdisk")


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("sq", "mq")]
    if not modes or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: modes are sq and mq (or sq,mq)")
    return modes


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="measure IOPS of the blkif protocol on real threads (native engine)",
        description="Run fio-like jobs against blkfront/blkback on a guest of V vCPU threads "
        "and dom0 vCPU threads executing nogil numba code (each vCPU runs the jobs placed on "
        "it and the interrupts bound to it, and halts when idle), in the legacy single-ring "
        "mode (one io_lock) or the blk-mq "
        "per-ring mode (a ring_lock per queue), and report one row per point: IOPS, MB/s, "
        "latency percentiles, lock statistics, notifications per request, ring-full events, "
        "CPU time. Each point checks that every request completed exactly once and, with the "
        "ramdisk, that every byte read back is what was written.",
        epilog="Example: xbq measure --mode sq,mq --jobs 1,4,8 --queues 4 --duration 2 "
        "--out iops.csv",
    )
    p.add_argument("--mode", type=_modes, default=["mq"], metavar="sq|mq",
                   help="sq: one ring, one io_lock; mq: per-queue rings (default mq; "
                   "'sq,mq' measures both)")
    p.add_argument("--queues", type=positive_int, default=GUEST_DEFAULTS["queues"],
                   metavar="Q", help="rings in mq mode (default %(default)s, as xbq simulate: "
                   "the 2015 guest's)")
    p.add_argument("--vcpus", type=positive_int, default=GUEST_DEFAULTS["vcpus"], metavar="V",
                   help="guest vCPUs, one thread each (default %(default)s)")
    p.add_argument("--dom0-vcpus", type=positive_int, default=16, metavar="D",
                   help="dom0 vCPUs running the rings' backends, ring r on r %% D "
                   "(default 16, as the twin)")
    p.add_argument("--placement", choices=("pinned", "unpinned"), default="pinned",
                   help="pinned: job j on vCPU j %% V (fio's cpus_allowed); unpinned: each job "
                   "on a random vCPU (the twin's job_placement) (default pinned)")
    p.add_argument("--backend-max-queues", type=positive_int, default=16, metavar="N",
                   help="blkback's max_queues (default 16, dom0's vCPUs)")
    p.add_argument("--jobs", type=int_list, default=[1, 4, 8], metavar="1,4,8",
                   help="fio jobs per point, comma-separated (default 1,4,8)")
    p.add_argument("--iodepth", type=positive_int, default=GUEST_DEFAULTS["iodepth"],
                   metavar="N", help="I/Os in flight per job (default %(default)s, fio's "
                   "IOmeter job, as xbq simulate)")
    p.add_argument("--workload", default="iometer", choices=["iometer"],
                   help="fio IOmeter file-server mix (default)")
    p.add_argument("--bssplit", default=None, metavar="SPLIT",
                   help="fio bssplit overriding the workload's, e.g. 4k/100 or 4k/80:64k/20")
    p.add_argument("--rwmixread", type=float, default=None, metavar="PCT",
                   help="percentage of reads overriding the workload's (iometer: 80)")
    p.add_argument("--device", choices=DEVICES, default="null",
                   help="null (no data) or ramdisk (data copied and verified)")
    p.add_argument("--ring-page-order", type=nonnegative_int, default=0, metavar="K",
                   help="blkfront's max_ring_page_order: 2**K pages per ring (0..4, default 0)")
    p.add_argument("--lock", choices=LOCKS, default="ticket",
                   help="the spinlock behind io_lock/ring_lock (default ticket, as in 2015; "
                   "pv: Xen's paravirtual ticket lock, which blocks until kicked)")
    p.add_argument("--duration", type=_seconds, default=2.0, metavar="S",
                   help="measured seconds per point (default 2)")
    p.add_argument("--warmup", type=_seconds, default=0.5, metavar="S",
                   help="warm-up seconds before each point (default 0.5)")
    p.add_argument("--reps", type=positive_int, default=1, metavar="N",
                   help="repetitions of each point (default 1)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed (default 0)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="append each point to FILE (.csv or .parquet) as it is measured, "
                   "with a FILE.meta.json machine sidecar; points already in FILE are not "
                   "measured again")
    add_store_flags(p)
    add_output_format(p)
    p.set_defaults(func=run)


SUMMARY = ("mode", "jobs", "queues", "iops", "mbps", "lat_p50_us", "lat_p99_us",
           "lock_contended_frac", "tag_wait_per_req", "util_vcpu_halted", "threads",
           "cpu_util")


def _line(row: dict) -> str:
    return (f"{row['mode']:>3} jobs={row['jobs']:<3} queues={row['queues']:<2} "
            f"iops={row['iops'] / 1e3:8.1f}k  MB/s={row['mbps']:7.1f}  "
            f"p50={row['lat_p50_us']:8.1f}us p99={row['lat_p99_us']:8.1f}us  "
            f"lock contended={row['lock_contended_frac']:5.1%}  "
            f"tag waits/IO={row['tag_wait_per_req']:5.2f}  "
            f"vCPUs halted={row['util_vcpu_halted']:4.0%}  threads={row['threads']}"
            f"{' (oversubscribed)' if row['oversubscribed'] else ''}  "
            f"cpu={row['cpu_util']:4.2f}  lost={row['lost']} dup={row['duplicated']}")


def run(args: argparse.Namespace) -> int:
    from xbq.engines.native import measure_point, points
    from xbq.engines.schema import to_frame, to_json_rows
    from xbq.progress import Progress
    from xbq.study.fio import to_fio_json
    from xbq.study.results import ResultsStore, run_points

    text = args.output_format == "text"
    pts = points(mode=args.mode, jobs=args.jobs, queues=args.queues, vcpus=args.vcpus,
                 dom0_vcpus=args.dom0_vcpus, job_placement=args.placement == "unpinned",
                 iodepth=args.iodepth, workload=args.workload, device=args.device,
                 ring_page_order=args.ring_page_order, lock=args.lock,
                 duration=args.duration, warmup=args.warmup, reps=args.reps, seed=args.seed,
                 bssplit=args.bssplit, rwmixread=args.rwmixread,
                 backend_max_queues=args.backend_max_queues)
    bar = Progress(len(pts), "measure", quiet=not text)

    def progress(row):
        if text:
            bar.write(_line(row))
        bar.update(1, jobs=row["jobs"], iops=f"{row['iops'] / 1e3:.0f}k")

    arguments = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    store = None
    if args.out:
        store = ResultsStore(args.out, {"engine": "native", "command": "xbq measure",
                                        "arguments": arguments},
                             axes=("mode", "jobs"), existing=args.existing, mixed=args.mixed,
                             wait=args.wait)
    try:
        with bar:
            df = to_frame(run_points(pts, measure_point, store, progress))
    finally:
        if store is not None:
            store.close()
    if args.output_format == "json":
        print(to_json_rows(df))
    elif args.output_format == "fio-json":
        print(to_fio_json(df))
    elif args.out:
        print(f"{len(df)} point(s) in {args.out}")
    return 0
