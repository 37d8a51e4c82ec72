"""``xbq reproduce``: the whole study, end to end, into one output directory.

The steps are :mod:`xbq.study.reproduce`'s; this module only parses the arguments.
"""

from __future__ import annotations

import argparse

from xbq.cli import positive_int
from xbq.errors import XbqError
from xbq.study.reproduce import STEPS, reproduce


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the whole study end to end and publish it as out/index.html",
        description="Run every step of the study (handshake, protocol exchange, seed table, "
        "model fits, twin, native measurement), execute the notebooks as its chapters, and "
        "write tables, figures, the chapters as HTML and out/index.html. Steps whose inputs "
        "and code are unchanged are reused from --out.",
    )
    p.add_argument("--out", default="out", help="output directory (default: out)")
    p.add_argument("--quick", action="store_true",
                   help="fewer I/Os, shorter runs and bootstrap resamples (a smoke test)")
    p.add_argument("--steps", default=None,
                   help=f"comma-separated subset of steps (default all: {','.join(STEPS)})")
    p.add_argument("--force", action="store_true", help="rerun steps that could be reused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--own", nargs="+", metavar="FIO_JSON", default=(),
                   help="your own fio JSON results: the own_data chapter of the published "
                   "page fits them instead of the example")
    p.add_argument("--own-vcpus", type=positive_int, default=None, metavar="N",
                   help="the vCPUs of the guest your fio results come from")
    p.add_argument("--own-queues", type=positive_int, default=None, metavar="N",
                   help="the rings its disk negotiated")
    p.add_argument("--archive", metavar="FILE.tar.gz", default=None,
                   help="then pack the site (self-contained pages), the data, the source at "
                   "its commit, the exact environment and the one command that reruns it "
                   "into this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    steps = None if args.steps is None else [s.strip() for s in args.steps.split(",")]
    if (args.own_vcpus or args.own_queues) and not args.own:
        raise XbqError("--own-vcpus and --own-queues describe the files of --own: give them")
    if args.archive:  # refused before anything runs
        from xbq.study.archive import check_target

        check_target(args.archive)
    failed = reproduce(args.out, quick=args.quick, steps=steps, force=args.force,
                       progress=not args.no_progress,
                       echo=lambda line: print(line, flush=True), own=args.own,
                       own_vcpus=args.own_vcpus, own_queues=args.own_queues)
    if failed:
        raise XbqError(f"step(s) failed: {', '.join(failed)} (see {args.out}/<step>.error.txt "
                       f"and {args.out}/index.html)")
    print(f"wrote {args.out}/index.html")
    if args.archive:
        from xbq.study.archive import write_archive

        info = write_archive(args.out, args.archive, quick=args.quick, steps=steps,
                             own=args.own, own_vcpus=args.own_vcpus,
                             own_queues=args.own_queues)
        print(f"wrote {info['path']}: {info['bytes'] / 1e6:.1f} MB, {info['members']} files; "
              f"rerun with: tar xzf {info['path']} && {info['command']}")
    return 0
