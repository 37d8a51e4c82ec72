"""``xbq fio``: write the seed's fio job file, or import fio JSON results as a tidy table."""

from __future__ import annotations

import argparse
import sys

from xbq.cli import Parser, finite_float, int_list, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fio",
        help="write the 2015 IOmeter fio job file, or import fio JSON results",
        description="fio in and out: 'xbq fio job' writes fio's IOmeter file-server job with "
        "one section per job count, to rerun the 2015 experiment on a real Xen guest; "
        "'xbq fio import' reads fio's --output-format=json or json+ into the tidy IOPS table "
        "that 'xbq fit', 'xbq calibrate' and the notebooks read.",
    )
    fio = p.add_subparsers(dest="fio_command", metavar="ACTION", parser_class=Parser,
                           required=True)
    j = fio.add_parser("job", help="write the IOmeter job file (stdout or --out)",
                       description="Write fio's IOmeter file-server job (bssplit, 80 %% "
                       "reads, random, direct, libaio, time based), one stonewalled section "
                       "per job count.",
                       epilog="Example: xbq fio job --jobs 1,4,8,16,32,64 --filename /dev/xvdb "
                       "--out iometer.fio && fio --output-format=json+ iometer.fio > r.json")
    j.add_argument("--jobs", type=int_list, default=[1, 4, 8, 16, 32, 64],
                   help="numjobs of each section (default 1,4,8,16,32,64)")
    j.add_argument("--iodepth", type=positive_int, default=64, help="default 64")
    j.add_argument("--filename", default="/dev/xvdb", help="device or file (default /dev/xvdb)")
    j.add_argument("--runtime", type=finite_float, default=60.0, metavar="S",
                   help="measured seconds per section (default 60)")
    j.add_argument("--ramp", type=finite_float, default=5.0, metavar="S",
                   help="ramp seconds before each (default 5)")
    j.add_argument("--size", default="4g", help="fio size (default 4g)")
    j.add_argument("--ioengine", default="libaio", help="default libaio")
    j.add_argument("--name", default="iometer", help="section prefix (default iometer)")
    j.add_argument("--no-group-reporting", action="store_true",
                   help="report every cloned job separately")
    j.add_argument("--out", default=None, help="write here instead of stdout")
    j.set_defaults(func=run_job, prog="xbq fio job")
    i = fio.add_parser("import", help="read fio JSON results into a tidy IOPS table",
                       description="Read fio --output-format=json or json+ files (per job or "
                       "group_reporting) into a tidy table: one row per job section, jobs "
                       "from numjobs, iops = read + write, latency percentiles kept.",
                       epilog="Example: xbq fio import r.json --series multi_ring --out t.csv")
    i.add_argument("files", nargs="+", help="fio JSON result files")
    g = i.add_mutually_exclusive_group()
    g.add_argument("--series", default=None, help="series name of every row")
    g.add_argument("--series-pattern", default=None, metavar="REGEX",
                   help="take the series from each job name (group 'series' or group 1)")
    i.add_argument("--vcpus", type=positive_int, default=None, metavar="N",
                   help="the guest's vCPUs, recorded on every row (the models' contender "
                   "cap: usl-capped, mva, repairman, ticket, mcs, xenblk need it)")
    i.add_argument("--queues", type=positive_int, default=None, metavar="N",
                   help="the rings the guest's disk negotiated, recorded on every row "
                   "(xenblk needs it)")
    i.add_argument("--out", default=None, help="write the table here (.csv or .parquet); an "
                   "existing file is kept unless --overwrite is given and it is a table "
                   "'xbq fio import' wrote")
    i.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a table this command wrote before")
    i.add_argument("--json", action="store_true", help="print the rows as JSON")
    i.set_defaults(func=run_import, prog="xbq fio import")


def run_job(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xbq.errors import XbqError
    from xbq.files import atomic_write, check_folder
    from xbq.study.fio import job_file

    text = job_file(args.jobs, iodepth=args.iodepth, filename=args.filename,
                    runtime_s=args.runtime, ramp_s=args.ramp, size=args.size,
                    ioengine=args.ioengine, name=args.name,
                    group_reporting=not args.no_group_reporting)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    try:
        check_folder(out)
        atomic_write(out, text.encode())  # never through a symlink, never into a FIFO
    except OSError as exc:
        raise XbqError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"wrote {args.out}: {len(args.jobs)} section(s)", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from xbq.study.fio import import_fio
    from xbq.study.results import write_table

    df = import_fio(args.files, series=args.series, series_pattern=args.series_pattern,
                    vcpus=args.vcpus, queues=args.queues)
    if args.out:
        write_table(df, args.out, "fio-import",
                    {"command": "xbq fio import", "files": [str(f) for f in args.files],
                     "series": args.series, "series_pattern": args.series_pattern,
                     "vcpus": args.vcpus, "queues": args.queues},
                    existing="overwrite" if args.overwrite else "refuse")
    unsaid = [f"--{k}" for k in ("vcpus", "queues") if getattr(args, k) is None]
    if unsaid:
        print(f"note: without {' and '.join(unsaid)} the table does not say the guest's "
              + ("vCPUs (the fits of usl-capped, mva, repairman, ticket, mcs and xenblk "
                 "need them)" if args.vcpus is None else "")
              + (" and " if len(unsaid) == 2 else "")
              + ("rings (xenblk needs them)" if args.queues is None else ""),
              file=sys.stderr)
    if args.json:
        print(df.to_json(orient="records"))
    elif args.out:
        print(f"{len(df)} row(s) from {len(args.files)} file(s) in {args.out}")
    else:
        cols = ["series", "jobs", "iodepth", "iops", "read_iops", "write_iops",
                "lat_mean_us", "lat_p99_us", "file"]
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    return 0
