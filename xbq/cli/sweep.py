"""``xbq sweep``: run a sweep file (either engine, a grid of settings, replications) on a
local Dask cluster, an existing one, or serially; resumable."""

from __future__ import annotations

import argparse

from xbq.cli import add_store_flags, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of engine settings x seeds, in parallel on Dask, resumable",
        description="Run every point of a sweep file (TOML or JSON: engine, fixed settings, "
        "axes to cross, seeds, the output) as Dask tasks: on a local cluster sized to this "
        "machine by default, or on an existing cluster with --scheduler. Each point is "
        "stored the moment it finishes; a rerun skips the points already stored. Prints the "
        "summary: each point's mean and 95%% t-interval over its seeds.",
        epilog="Example: xbq sweep whatif.toml --workers 2 --out whatif.csv")
    p.add_argument("file", help="the sweep file (.toml or .json)")
    p.add_argument("--out", default=None,
                   help="results store (.csv or .parquet; default: the file's 'out')")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="an existing Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="local cluster of N worker processes (default: the usable CPUs)")
    g.add_argument("--serial", action="store_true", help="no Dask: one point after another")
    add_store_flags(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import pandas as pd

    from xbq.progress import Progress
    from xbq.sweep import load_spec, summarize
    from xbq.sweep import run as run_sweep

    spec = load_spec(args.file)
    n = len(spec.points())
    with Progress(n, f"sweep {spec.name}", quiet=args.json) as bar:
        def progress(row):
            err = row.get("error")
            failed = isinstance(err, str)
            bar.update(1, jobs=row.get("jobs"), failed=int(failed))
            if failed and not args.json:
                bar.write(f"point {row.get('point_key')} failed: {err}", file=sys.stderr)

        frame = run_sweep(spec, out=args.out, workers=args.workers, scheduler=args.scheduler,
                          serial=args.serial, existing=args.existing, mixed=args.mixed,
                          wait=args.wait, progress=progress,
                          notes=lambda line: None if args.json else bar.write(
                              line, file=sys.stderr))
    summary = summarize(frame, spec.varied())
    if args.json:
        print(summary.to_json(orient="records"))
        return 0
    failed = int(frame["error"].notna().sum()) if "error" in frame else 0
    cols = [c for c in summary.columns if not c.startswith(("lat_mean", "lat_p99_us_ci"))]
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = args.out or spec.out
    print(f"{len(frame)} point(s), {failed} failed" + (f", in {out}" if out else ""))
    return 1 if failed else 0
