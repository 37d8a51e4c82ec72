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


def summarize(df) -> str:
    """Return a wide, human-readable view of a tidy IOPS table with peaks and speed-ups."""
    wide = df.pivot_table(index="series", columns="jobs", values="iops", aggfunc="mean")
    lines = ["IOPS by fio jobs (k = thousand):"]
    header = "series".ljust(14) + "".join(f"{int(j):>8}" for j in wide.columns)
    lines.append(header)
    for name, row in wide.iterrows():
        lines.append(name.ljust(14) + "".join(f"{v / 1e3:>7.0f}k" for v in row.values))
    lines.append("")
    for name, row in wide.iterrows():
        peak_jobs = row.idxmax()
        lines.append(
            f"{name}: peak {row.max() / 1e3:.0f}k at {int(peak_jobs)} jobs = "
            f"{row.max() / row.iloc[0]:.2f}x one job; at {int(row.index[-1])} jobs "
            f"{row.iloc[-1] / row.max():.0%} of peak"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from xbq.datasets import load_iops_table, load_seed

    df = load_seed() if args.file is None else load_iops_table(args.file)
    if args.json:
        print(json.dumps(df.to_dict(orient="records")))
    else:
        print(summarize(df))
    return 0
