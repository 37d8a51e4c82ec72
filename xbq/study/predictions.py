"""Predictions of the calibrated twin, made before any data of them is fitted.

The merged Linux series (v4, Nov 2015; Linux 4.6) made blkback's persistent-grant tree and
free-page pool per ring instead of per device, and reported that multi-queue then scaled
further. With the costs calibrated on the 2015 RFC table and nothing refitted, the twin
predicts IOPS against the number of rings at 16 fio jobs for each variant of
:data:`VARIANTS`: the shared (RFC) and per-ring backend pools, MCS instead of ticket
spinlocks, ring-page-order 2 instead of 0. ``python -m xbq.study.predictions`` writes the
table and its provenance to ``data/predictions/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from xbq.engines.des.params import DesParams

#: name -> (what it changes, DesParams changes)
VARIANTS = {
    "shared pools (RFC)": ("the calibrated twin: one backend lock per device", {}),
    "per-ring pools": ("blkback's persistent grants and free pages per ring",
                       {"be_pools_per_ring": 1.0}),
    "MCS locks": ("MCS queue locks instead of ticket spinlocks (shared pools)",
                  {"lock_mcs": 1.0}),
    "ring order 2": ("ring-page-order 2: 128 slots a ring (shared pools)",
                     {"ring_page_order": 2.0}),
}
RINGS = (1, 2, 4, 8, 16)
JOBS = 16
#: The merged series' own figures (v4 cover letter, Nov 2015: null_blk, 16-vCPU dom0 and
#: domU, a different machine from the RFC's): rings -> (rings alone, with per-ring pools),
#: IOPS. Printed beside the prediction as ratios; never fitted.
V4_PUBLISHED = {4: (1024e3, 1600e3), 8: (800e3, 1450e3), 16: (750e3, 1320e3)}


def predict_rings(params: DesParams, *, rings=RINGS, jobs: int = JOBS, variants=None,
                  duration: float = 0.2, seed: int = 1, progress=None) -> pd.DataFrame:
    """IOPS of the multi-queue driver against its ring count, for each variant.

    Parameters
    ----------
    params : DesParams
        The calibrated machine (not refitted).
    rings : sequence of int
        Ring (hardware queue) counts of the 16-vCPU guest.
    jobs : int
        fio jobs.
    variants : sequence of str, optional
        Names of :data:`VARIANTS` (default all).
    duration : float
        Virtual seconds per point.
    seed : int
    progress : callable, optional
        Called with ``(variant, frame)`` after each variant.

    Returns
    -------
    pandas.DataFrame
        ``variant``, ``queues``, ``jobs``, ``iops`` and where the time went
        (``util_vcpu_busy``, ``util_dom0_busy``, ``util_dom0_spin``, ``lat_mean_us``).
    """
    from xbq.engines.des.simulate import simulate

    names = list(VARIANTS) if variants is None else list(variants)
    frames = []
    for name in names:
        p = params.replace(**VARIANTS[name][1])
        rows = [simulate("mq", [jobs], queues=int(q), vcpus=16, duration=duration, seed=seed,
                         params=p, quiet=True) for q in rings]
        df = pd.concat(rows, ignore_index=True).assign(variant=name)
        frames.append(df)
        if progress is not None:
            progress(name, df)
    cols = ["variant", "queues", "jobs", "iops", "util_vcpu_busy", "util_dom0_busy",
            "util_dom0_spin", "lat_mean_us"]
    return pd.concat(frames, ignore_index=True)[cols]


def _shown(path) -> str:
    """``path`` relative to the project when it lies inside it (the README is committed)."""
    from xbq.study.paths import data_dir

    try:
        return str(Path(path).resolve().relative_to(data_dir().resolve().parent))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    """Write ``rings-16jobs.csv`` and ``README.md`` (command, commit, parameters) to --out."""
    from xbq.engines.des.params import load_params
    from xbq.errors import XbqError
    from xbq.study.calibrate import as_verified
    from xbq.study.paths import calibration_file, data_dir, provenance

    ap = argparse.ArgumentParser(prog="python -m xbq.study.predictions",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(calibration_file()))
    ap.add_argument("--out", default=str(data_dir() / "predictions"))
    ap.add_argument("--duration", type=float, default=0.2)
    args = ap.parse_args(argv)
    try:
        params = as_verified(load_params(args.params))  # placements as its final check
        prov = provenance("python -m xbq.study.predictions "
                          + " ".join(argv or sys.argv[1:]))
        df = predict_rings(params, duration=args.duration,
                           progress=lambda n, d: print(f"{n}: " + ", ".join(
                               f"{int(q)}: {v / 1e3:.0f}k" for q, v in
                               zip(d["queues"], d["iops"], strict=True)), file=sys.stderr))
    except XbqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "rings-16jobs.csv", index=False, float_format="%.6g")
    wide = df.pivot(index="queues", columns="variant", values="iops")[list(VARIANTS)]
    lines = ["# Predictions of the calibrated twin (nothing refitted)", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"- command: `{prov['command']}`", f"- commit: `{prov['commit']}`",
             f"- date: {prov['date']}", f"- parameters: `{_shown(args.params)}`",
             f"- {JOBS} fio jobs, 16-vCPU guest, {args.duration:g} virtual s a point, seed 1, "
             + (f"jobs unpinned: {int(params.placements)} stratified placements a point"
                if params.job_placement else "jobs pinned round-robin"),
             "", "IOPS (thousands) by rings:", "",
             "| rings | " + " | ".join(wide.columns) + " |",
             "|---|" + "---|" * len(wide.columns)]
    for q, row in wide.iterrows():
        lines.append(f"| {int(q)} | " + " | ".join(f"{v / 1e3:.0f}k" for v in row) + " |")
    lines += ["", "Variants:", ""] + [f"- **{k}**: {v[0]}" for k, v in VARIANTS.items()]
    lines += ["", "Against the merged series' own figures (v4 cover letter, Nov 2015, a "
              "different machine: 16-vCPU dom0, 690k IOPS baseline), as the gain of per-ring "
              "pools over shared ones at the same ring count (absolute IOPS are not "
              "comparable across the machines):", "",
              "| rings | v4 published: per-ring / shared | twin predicted: per-ring / shared |",
              "|---|---|---|"]
    for q, (shared, per_ring) in V4_PUBLISHED.items():
        if q in wide.index:
            twin = wide.loc[q, "per-ring pools"] / wide.loc[q, "shared pools (RFC)"]
            lines.append(f"| {q} | {per_ring / shared:.2f} | {twin:.2f} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    print(wide.round(0).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
