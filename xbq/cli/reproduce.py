"""``xbq reproduce``: the whole study, end to end, into one output directory.

The steps are :mod:`xbq.study.reproduce`'s; this module only parses the arguments.
"""

from __future__ import annotations

import argparse

from xbq.errors import XbqError
from xbq.study.reproduce import STEPS, reproduce


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the whole study end to end and write its results to a directory",
        description="Run every step of the study (handshake, protocol exchange, seed table, "
        "model fits, twin, native measurement) and write tables, figures and a report to "
        "--out.",
    )
    p.add_argument("--out", default="out", help="output directory (default: out)")
    p.add_argument("--quick", action="store_true",
                   help="fewer I/Os and bootstrap resamples (for a smoke test)")
    p.add_argument("--steps", default=None,
                   help=f"comma-separated subset of steps (default all: {','.join(STEPS)})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    steps = None if args.steps is None else [s.strip() for s in args.steps.split(",")]
    failed = reproduce(args.out, quick=args.quick, steps=steps,
                       echo=lambda line: print(line, flush=True))
    if failed:
        raise XbqError(f"step(s) failed: {', '.join(failed)} (see {args.out}/<step>.error.txt)")
    return 0
