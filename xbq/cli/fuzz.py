"""``xbq fuzz``: a malicious frontend (and backend) against the real drivers, long-running."""

from __future__ import annotations

import argparse
import json
import sys

from xbq.cli import nonnegative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuzz",
        help="fuzz blkback with a malicious frontend (and blkfront with a malicious backend)",
        description="Run seeded fuzz cases against the real protocol code: arbitrary request "
        "slots, indirect descriptor pages, grant entries and producer indices against "
        "blkback (--side back), arbitrary responses and producer indices against blkfront "
        "(--side front). Every invariant is checked after every step; the summary counts "
        "outcomes by kind and prints the first violating case as a reproducible byte dump. "
        "Exits 1 on any violation.",
        epilog="Example: xbq fuzz --cases 100000 --seed 0",
    )
    p.add_argument("--cases", type=positive_int, default=1000, help="cases (default 1000)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="campaign seed (default 0)")
    p.add_argument("--side", choices=("back", "front", "both"), default="both",
                   help="which driver to attack (default both, alternating)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbq.blkif.fuzz import campaign
    from xbq.progress import Progress

    with Progress(args.cases, "fuzz", unit="case", quiet=args.json) as bar:
        summary = campaign(args.cases, args.seed, args.side,
                           progress=lambda done, total, bad: bar.update(
                               1, violations=bad))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['cases']} case(s), seed {summary['seed']}, side {summary['side']}: "
              f"{summary['violations']} violation(s) in {summary['seconds']:.1f} s")
        for kind, count in summary["outcomes"].items():
            print(f"  {kind:<28} {count}")
        first = summary["first_failure"]
        if first is not None:
            print(f"first violation, case {first['case']} ({first['side']}): "
                  f"{first['violation']}", file=sys.stderr)
            print(first["dump"], file=sys.stderr)
    return 1 if summary["violations"] else 0
