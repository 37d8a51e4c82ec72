"""The whole study, end to end, into one output directory (``xbq reproduce``).

Each step writes its files under ``out`` and a line to the report; a step that fails is
reported in one line and the others still run (the caller learns which failed).
Steps, in order:

1. ``handshake``: the XenStore handshake of the seed's two configurations (16 vCPUs; the
   legacy single ring, and 16 queues), with their trees;
2. ``ring``: I/Os through the real protocol in one thread on both configurations, ramdisk
   data verified, counters and round trips per second;
3. ``seed``: the published table and its summary;
4. ``models``: every queueing model fitted to the seed, the comparison table, the figure;
5. ``twin``: the discrete-event twin of the 16-vCPU guest, with the committed calibration,
   over the seed's job counts, next to the published table;
6. ``native``: real threads on this machine, single ring vs per-ring locks, short runs.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from xbq.errors import XbqError

#: Configurations of the seed experiment: a 16-vCPU guest on a 16-vCPU dom0.
SEED_CONFIGS = {"single_ring": dict(max_queues=1), "multi_ring": dict(max_queues=16)}


def step_handshake(out: Path, quick: bool) -> str:
    from xbq.blkif.negotiate import negotiate

    lines = []
    for name, kw in SEED_CONFIGS.items():
        conn = negotiate(vcpus=16, dom0_vcpus=16, **kw)
        if not conn.connected:
            raise XbqError(f"{name}: handshake failed: {conn.error}")
        (out / f"xenstore-{name}.txt").write_text(conn.store.format_tree() + "\n")
        lines.append(f"{name}: {conn.nr_rings} ring(s) x {conn.nr_ents} slots, "
                     f"persistent grants {conn.features['feature_persistent']}, "
                     f"indirect segments {conn.features['max_indirect_segments']}")
    return "; ".join(lines)


def step_ring(out: Path, quick: bool) -> str:
    from xbq.blkif.loopback import loopback
    from xbq.blkif.negotiate import negotiate

    results, lines = {}, []
    for name, kw in SEED_CONFIGS.items():
        conn = negotiate(vcpus=16, dom0_vcpus=16, sectors=1 << 16, **kw)
        res = loopback(conn, nr_ios=2_000 if quick else 20_000, batch=4, device="ramdisk",
                       seed=1)
        results[name] = res
        lines.append(f"{name}: {res['requests']} requests verified, "
                     f"{res['round_trips_per_s']:,.0f}/s")
    (out / "ring.json").write_text(json.dumps(results, indent=2) + "\n")
    return "; ".join(lines)


def step_seed(out: Path, quick: bool) -> str:
    from xbq.study.datasets import load_seed, summarize

    text = summarize(load_seed())
    (out / "seed.txt").write_text(text + "\n")
    return text.splitlines()[-2] if text else ""


def step_models(out: Path, quick: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from xbq.fit.compare import compare, markdown_table, residual_table
    from xbq.study.datasets import load_seed
    from xbq.study.plots import plot_fits

    seed = load_seed()
    table, fits = compare(seed, bootstrap=100 if quick else 1000, seed=0, return_fits=True)
    table.to_csv(out / "models.csv", index=False)
    (out / "models.md").write_text("# Models fitted to the seed table\n\n"
                                   + markdown_table(table) + "\n\n## Residuals\n\n"
                                   + residual_table(fits) + "\n")
    plot_fits(seed, fits).savefig(out / "models.png", dpi=120, bbox_inches="tight")
    best = table.sort_values("r2", ascending=False).groupby("series").head(1)
    return "; ".join(f"best R² on {r.series}: {r.model} ({r.r2:.3f})" for r in best.itertuples())


def step_twin(out: Path, quick: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from xbq.engines.des.params import load_params
    from xbq.engines.des.simulate import simulate
    from xbq.study.datasets import load_seed
    from xbq.study.paths import data_dir
    from xbq.study.plots import plot_iops
    from xbq.study.results import ResultsStore

    calibrated = sorted((data_dir() / "calibrated").glob("*.json"))
    params = load_params(calibrated[-1]) if calibrated else None
    seed = load_seed()
    jobs = sorted(seed.jobs.unique())
    store = ResultsStore(out / "twin.csv", {"command": "xbq reproduce (twin)"},
                         existing="overwrite")
    frames = []
    for series, mode in (("single_ring", "sq"), ("multi_ring", "mq")):
        for j in jobs:  # each point is stored the moment it is simulated
            df = simulate(mode, int(j), queues=16, vcpus=16, iodepth=64,
                          duration=0.02 if quick else 0.2, seed=1, params=params)
            df = df.assign(series=series)
            store.append(df.to_dict(orient="records"))
            frames.append(df)
    twin = pd.concat(frames, ignore_index=True)
    merged = seed.merge(twin[["series", "jobs", "iops"]], on=["series", "jobs"],
                        suffixes=("_seed", "_twin"))
    merged["rel_error"] = merged.iops_twin / merged.iops_seed - 1
    merged.to_csv(out / "twin_vs_seed.csv", index=False)
    fig = plot_iops({"published (2015)": seed, "discrete-event twin": twin},
                    title="16-vCPU guest, IOmeter, null device")
    fig.savefig(out / "twin.png", dpi=120, bbox_inches="tight")
    err = merged.rel_error.abs()
    source = calibrated[-1].name if calibrated else "default costs (no calibration file)"
    return (f"params {source}: median |error| {err.median():.0%}, max {err.max():.0%} "
            f"over {len(merged)} seed points")


def step_native(out: Path, quick: bool) -> str:
    import os

    import matplotlib

    matplotlib.use("Agg")
    from xbq.engines.native import measure
    from xbq.study.plots import plot_iops
    from xbq.study.results import ResultsStore

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = [1, 2] if quick else [1, 2, 4, 8]
    df = measure(mode=["sq", "mq"], jobs=jobs, queues=max(1, min(cpus, 4)), vcpus=cpus,
                 iodepth=32, device="null", duration=0.2 if quick else 1.0,
                 warmup=0.1 if quick else 0.3, reps=1, seed=0,
                 store=ResultsStore(out / "native.csv", {"command": "xbq reproduce (native)"},
                                    existing="overwrite"))
    fig = plot_iops({f"native threads, {cpus} CPUs": df}, title="measured on this machine")
    fig.savefig(out / "native.png", dpi=120, bbox_inches="tight")
    best = df.groupby("mode").iops.max()
    return ", ".join(f"{m} peak {v:,.0f} IOPS" for m, v in best.items()) + f" on {cpus} CPUs"


STEPS = {"handshake": step_handshake, "ring": step_ring, "seed": step_seed,
         "models": step_models, "twin": step_twin, "native": step_native}


def reproduce(out, *, quick: bool = False, steps=None, echo=print) -> list[str]:
    """Run ``steps`` (default: all, in order) into directory ``out``; write ``REPORT.md``.

    Parameters
    ----------
    out : path
        Output directory (created).
    quick : bool
        Fewer I/Os, shorter runs and fewer bootstrap resamples (a smoke test).
    steps : list of str, optional
        A subset of :data:`STEPS`.
    echo : callable
        Receives one line as each step starts and ends.

    Returns
    -------
    list of str
        The steps that failed (each leaves ``<step>.error.txt`` with its traceback).
    """
    out = Path(out)
    names = list(STEPS) if steps is None else list(steps)
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        raise XbqError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XbqError(f"cannot create {out}: {exc.strerror}") from None
    report, failed = [], []
    for name in names:
        t0 = time.perf_counter()
        echo(f"[{name}] ...")
        try:
            summary = STEPS[name](out, quick)
            status = "ok"
        except Exception as exc:  # report the step, keep going with the others
            summary, status = f"{type(exc).__name__}: {exc}", "FAILED"
            failed.append(name)
            (out / f"{name}.error.txt").write_text(traceback.format_exc())
        dt = time.perf_counter() - t0
        echo(f"[{name}] {status} in {dt:.1f} s: {summary}")
        report.append(f"| {name} | {status} | {dt:.1f} | {summary} |")
    (out / "REPORT.md").write_text(
        "# xbq reproduce\n\n| step | status | seconds | summary |\n|---|---|---|---|\n"
        + "\n".join(report) + "\n")
    echo(f"wrote {out}/REPORT.md")
    return failed
