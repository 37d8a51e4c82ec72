"""``xbq seed``: print the published 2015 table (or any tidy IOPS table) and its summary."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "seed",
        help="print the published 2015 single-ring vs multi-ring IOPS table",
        description="Print the seed table of the 2015 multi-queue RFC (or another tidy IOPS "
        "CSV) as a wide table with each series' peak and its ratio to one job.",
    )
    p.add_argument("file", nargs="?",
                   help="a tidy IOPS CSV (default: data/seed/xen-blkmq-rfc-2015.csv)")
    p.add_argument("--json", action="store_true", help="print the tidy rows as a JSON array")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbq.study.datasets import load_iops_table, load_seed, summarize

    df = load_seed() if args.file is None else load_iops_table(args.file)
    if args.json:
        print(json.dumps(df.to_dict(orient="records")))
    else:
        print(summarize(df))
    return 0
