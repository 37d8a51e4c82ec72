"""``out/index.html``: the study on one page, made from what the steps wrote.

The question; the published table beside the twin and this machine's measurement; the model
comparison; the claims, each computed from the data it states (never typed) and shown with
its figure; every figure with the command that makes it again; the chapters; the steps; and
the provenance (commit and dirty flag, date, machine, versions). A step that failed is said
at the top. :func:`write_report` also writes ``REPORT.md``, the same steps as a table.
"""

from __future__ import annotations

import html
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from xbq.files import atomic_write
from xbq.study.chapters import CHAPTERS, missing_images

QUESTION = ("Why does one ring behind one lock stop scaling, and how far do per-queue rings "
            "take you? The case study is the Xen PV block driver's 2015 move to multi-queue: "
            "fio's IOmeter job in a 16-vCPU guest on null_blk, the legacy blkfront (one ring, "
            "one io_lock) against blk-mq blkfront with 16 rings.")

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}code{background:#f4f4f4;padding:0 .2em}
.bad{color:#b03a2e;font-weight:bold}.ok{color:#1e8449}.claim{margin:.4em 0}
.note{color:#666;font-size:.9em}
.abstract{background:#f6f8fa;border-left:4px solid #2471a3;padding:.6em 1em}"""


def _e(text) -> str:
    return html.escape(str(text))


def _read(out: Path, name: str) -> pd.DataFrame | None:
    path = out / name
    try:
        return pd.read_csv(path) if path.exists() else None
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def _table(df: pd.DataFrame, fmt: dict | None = None, left=()) -> str:
    fmt = fmt or {}
    head = "".join(f'<th class="{"l" if c in left else ""}">{_e(c)}</th>' for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            text = "—" if v is None or (isinstance(v, float) and v != v) else \
                (fmt[c](v) if c in fmt else v)
            cells.append(f'<td class="{"l" if c in left else ""}">{_e(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _figure(out: Path, rel: str, caption: str, command: str) -> str:
    if not (out / rel).exists():
        return f'<p class="note">(figure {_e(rel)} was not made: its step did not run)</p>'
    return (f'<figure><img src="{_e(rel)}" alt="{_e(caption)}"><figcaption>{_e(caption)} '
            f"Regenerate: <code>{_e(command)}</code></figcaption></figure>")


def _k(v) -> str:
    return f"{v / 1e3:,.0f}k"


def _pct(v) -> str:
    return f"{100 * v:+.1f} %"


# --- the claims, each from its data -----------------------------------------------------------


#: Where the published table comes from (data/seed/xen-blkmq-rfc-2015.md).
SEED_SOURCE = ("Bob Liu, \"[RFC PATCH 00/10] Multi-queue support for xen-block driver\", "
               "LKML and xen-devel, 2015-02-15", "https://lkml.org/lkml/2015/2/15/46")


#: dom0's spin share at which the abstract calls the rings' fall the backend's (and only when
#: it also exceeds the guest's).
BACKEND_BOUND = 0.3


def abstract(seed: pd.DataFrame | None, twin: pd.DataFrame | None) -> str:
    """The page's answer in a few sentences, every figure read from the data: how far the
    published rings go and where they fall, and what the calibrated twin says is spent where
    they fall (dom0's vCPUs spinning on the shared backend lock, the guest's on its own)."""
    if seed is None:
        return ""
    wide = seed.pivot_table(index="jobs", columns="series", values="iops")
    if not {"single_ring", "multi_ring"} <= set(wide.columns):
        return ""
    mq, sq = wide["multi_ring"], wide["single_ring"]
    last = int(wide.index[-1])
    text = (f"In the 2015 measurement the single ring peaks at {_k(sq.max())} IOPS "
            f"({int(sq.idxmax())} jobs); 16 per-queue rings reach {_k(mq.max())} "
            f"({int(mq.idxmax())} jobs, {mq.max() / sq.max():.1f}x) and then fall to "
            f"{_k(mq.iloc[-1])} at {last} jobs.")
    if twin is not None and "util_dom0_spin" in twin:
        t = twin.set_index(["series", "jobs"])
        if ("multi_ring", last) in t.index:
            r = t.loc[("multi_ring", last)]
            dom0, guest = r["util_dom0_spin"], r["util_vcpu_spin"]
            where = (f"In the calibrated twin the rings' fall is the backend's: at {last} jobs "
                     if dom0 >= BACKEND_BOUND and dom0 > guest else
                     f"In the calibrated twin, at {last} jobs, ")
            text += (f" {where}dom0's vCPUs spend {dom0:.0%} of their time spinning on the "
                     f"device-wide backend lock and the guest's vCPUs {guest:.0%} on their "
                     "ring locks; the trust chapter says how far the table identifies that, "
                     "and what would decide it.")
    return text


def seed_claims(seed: pd.DataFrame) -> list[str]:
    """What the published table says: each series' peak, gain and fall; the best ratio."""
    out = []
    wide = seed.pivot_table(index="jobs", columns="series", values="iops")
    for s in wide.columns:
        col = wide[s]
        out.append(f"{s}: peaks at {_k(col.max())} IOPS at {int(col.idxmax())} jobs, "
                   f"{col.max() / col.iloc[0]:.2f}x one job, and keeps "
                   f"{col.iloc[-1] / col.max():.0%} of its peak at {int(col.index[-1])} jobs.")
    if {"single_ring", "multi_ring"} <= set(wide.columns):
        ratio = wide["multi_ring"] / wide["single_ring"]
        out.append(f"Per-queue rings deliver at most {ratio.max():.2f}x the single ring "
                   f"(at {int(ratio.idxmax())} jobs) and {ratio.iloc[0]:.2f}x with one job.")
    return out


def twin_claims(twin: pd.DataFrame) -> list[str]:
    err = twin["rel_error"].abs()
    worst = twin.loc[err.idxmax()]
    return [f"The calibrated twin is within 10 % of the published figure at "
            f"{int((err <= 0.10).sum())} of {len(twin)} points (median |error| "
            f"{err.median():.1%}); its worst point is {worst['series']} at "
            f"{int(worst['jobs'])} jobs ({_pct(worst['rel_error'])})."]


def model_claims(models: pd.DataFrame) -> list[str]:
    out = []
    ok = models.dropna(subset=["r2"])
    for s, g in ok.groupby("series"):
        top = g.sort_values("r2", ascending=False).head(3)
        names = ", ".join(f"{r.model} (R² {r.r2:.3f})" for r in top.itertuples())
        out.append(f"{s}: the best fits are {names}.")
        poor = g[g.r2 < 0.5]
        if len(poor):
            out.append(f"{s}: {', '.join(sorted(poor.model))} cannot follow the curve "
                       f"(R² below 0.5).")
    return out


def _jobs_list(jobs) -> str:
    jobs = [str(int(j)) for j in jobs]
    return jobs[0] if len(jobs) == 1 else ", ".join(jobs[:-1]) + " and " + jobs[-1]


def native_claims(native: pd.DataFrame) -> list[str]:
    """Where the per-queue rings beat the single ring on this machine, checked at every job
    count measured and against the spread of the repetitions: the rings beat it at a count
    only when their worst repetition is above the single ring's best (with one repetition,
    when their figure is higher). "From N jobs on" only when that holds at N and at every
    larger count; counts where the two ranges overlap are named and get no claim."""
    agg = native.groupby(["jobs", "mode"])["iops"].agg(["mean", "min", "max", "size"])
    wide = agg.unstack("mode").sort_index()
    if not {"sq", "mq"} <= set(wide["mean"].columns):
        return []
    wide = wide.dropna(subset=[("mean", "sq"), ("mean", "mq")])
    jobs = wide.index
    beats = wide[("min", "mq")] > wide[("max", "sq")]
    loses = wide[("max", "mq")] < wide[("min", "sq")]
    overlap = ~beats & ~loses
    reps = int(wide["size"].min().min())
    cpus = int(native["usable_cpus"].iloc[0]) if "usable_cpus" in native else None
    if not beats.any():
        where = f"at none of the job counts measured (up to {int(jobs[-1])})"
    elif beats.all():
        where = f"at every job count measured ({_jobs_list(jobs)})"
    else:
        # "not at": where the single ring is ahead; where the ranges overlap, nothing is said
        # here (the overlap sentence below names those counts)
        behind = ~beats & ~overlap if reps > 1 else ~beats
        first = int(np.flatnonzero(~beats.to_numpy())[-1]) + 1  # after the last miss
        start = (f"from {int(jobs[first])} jobs on" if first < len(beats)
                 else f"at {_jobs_list(jobs[beats])} jobs")
        where = start + (f" (not at {_jobs_list(jobs[behind])})" if first < len(beats)
                         and behind.any() else
                         f", not at {_jobs_list(jobs[behind])}" if behind.any() else "")
    spread = (f" (each point {reps} repetitions; beating means the rings' worst repetition "
              "above the single ring's best)" if reps > 1 else " (one run a point)")
    text = (f"On this machine ({cpus} CPUs) the per-queue rings beat the single ring "
            f"{where}{spread}; the single ring's best mean is {_k(wide[('mean', 'sq')].max())}"
            f" IOPS, the rings' {_k(wide[('mean', 'mq')].max())}.")
    if reps > 1 and overlap.any():
        text += (f" At {_jobs_list(jobs[overlap])} jobs the two overlap within their "
                 "repetitions' spread: no claim either way.")
    return [text]


def time_claims(tt: pd.DataFrame) -> list[str]:
    out = []
    for s, g in tt.groupby("series"):
        last = g.sort_values("jobs").iloc[-1]
        out.append(f"{s} at {int(last['jobs'])} jobs: guest vCPUs {last['util_vcpu_busy']:.0%} "
                   f"busy, {last['util_vcpu_spin']:.0%} spinning on a driver lock; dom0's "
                   f"vCPUs {last['util_dom0_busy']:.0%} busy; "
                   f"{last['notify_fe_per_req']:.2f} frontend notifications and "
                   f"{last['batch_mean']:.1f} requests per backend batch.")
    return out


def whatif_claims(wi: pd.DataFrame, at_jobs=(16, 64)) -> list[str]:
    out = []
    for (s, jobs), g in ((k, g) for k, g in wi.groupby(["series", "jobs"])
                         if k[1] in at_jobs):
        at = g.set_index("variant")["iops"]
        if "baseline" not in at:
            continue
        gains = (at / at["baseline"] - 1).drop("baseline").sort_values(ascending=False)
        text = ", ".join(f"{v} {_pct(x)}" for v, x in gains.items())
        out.append(f"{s} at {jobs} jobs, against the calibrated baseline "
                   f"({_k(at['baseline'])} IOPS): {text}.")
    return out


def own_data_claims(models: pd.DataFrame) -> list[str]:
    if "r2" not in models:
        return []
    fitted = models.dropna(subset=["r2"])
    out = []
    if len(fitted):
        best = fitted.sort_values("r2", ascending=False).iloc[0]
        out.append(f"On the example fio results the best fit is {best['model']} "
                   f"(R² {best['r2']:.3f}).")
    if "note" in models:
        skipped = models[models["note"].notna()]
        if len(skipped):
            out.append(f"{len(skipped)} model(s) could not be fitted to so few points: "
                       f"{', '.join(skipped.model)} (the chapter says why).")
    return out


# --- provenance -------------------------------------------------------------------------------


def provenance(quick: bool) -> dict:
    """Commit and dirty flag, date, command, machine and versions."""
    import matplotlib
    import numba
    import numpy
    import scipy

    from xbq import __version__
    from xbq.study.paths import git_commit
    from xbq.study.results import machine_info

    info = machine_info()
    commit = git_commit() or "not a git checkout"
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {"commit": commit.removesuffix("-dirty"),
            "dirty": "yes (uncommitted changes)" if commit.endswith("-dirty") else "no",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": " ".join(["xbq reproduce", *(["--quick"] if quick else [])]),
            "CPU": info["cpu_model"],
            "cores": f"{info['logical_cpus']} logical, {info['usable_cpus']} usable",
            "memory": mem or "unknown", "platform": platform.platform(),
            "Python": sys.version.split()[0], "numba": numba.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "pandas": pd.__version__,
            "matplotlib": matplotlib.__version__, "xbq": __version__}


# --- the page ---------------------------------------------------------------------------------


def _claims(items: list[str]) -> str:
    return "".join(f'<p class="claim">{_e(c)}</p>' for c in items) or \
        '<p class="note">(not available: its step did not run)</p>'


def _steps_md(state: dict) -> str:
    lines = ["| step | status | seconds | summary |", "|---|---|---|---|"]
    for name, s in state.items():
        status = s.get("status", "?") + (" (reused)" if s.get("reused") else "")
        lines.append(f"| {name} | {status} | {s.get('seconds', 0):.1f} | "
                     f"{s.get('summary', '')} |")
    return "\n".join(lines)


def write_report(out, state: dict, *, quick: bool = False) -> tuple[Path, list[str]]:
    """Write ``out/index.html`` and ``out/REPORT.md`` from the steps' outputs.

    Returns
    -------
    (Path, list of str)
        The page, and its problems (images it references that do not exist); a failed step
        is reported on the page itself.
    """
    out = Path(out)
    prov = provenance(quick)
    failed = [n for n, s in state.items() if s.get("status") == "FAILED" and n != "report"]
    seed, twin = _read(out, "seed.csv"), _read(out, "twin.csv")
    native, models = _read(out, "native.csv"), _read(out, "models.csv")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>xbq: one ring or many"
             f"</title><style>{CSS}</style></head><body>",
             "<h1>xbq: one ring behind one lock, or per-queue rings</h1>",
             f"<p>{_e(QUESTION)}</p>"]
    summary = abstract(seed, twin)
    if summary:
        parts.append(f'<p class="abstract"><b>Answer.</b> {_e(summary)}</p>')
    if failed:
        parts.append(f'<p class="bad">Step(s) failed: {_e(", ".join(failed))}; see the steps '
                     "table and <code>&lt;step&gt;.error.txt</code>. Sections that need them "
                     "are missing below.</p>")
    else:
        parts.append('<p class="ok">Every step ran'
                     f'{" (quick settings: short runs, for a smoke test)" if quick else ""}.'
                     "</p>")
    parts.append(f'<p class="note">Commit {_e(prov["commit"])}, uncommitted changes: '
                 f'{_e(prov["dirty"])}; {_e(prov["date"])}; {_e(prov["CPU"])}, '
                 f'{_e(prov["cores"])}.</p>')

    parts.append("<h2>1. The published table, the twin and this machine</h2>")
    if seed is not None:
        view = seed.pivot_table(index="jobs", columns="series", values="iops").reset_index()
        view.columns = ["jobs"] + [f"published {c}" for c in view.columns[1:]]
        if twin is not None:
            t = twin.pivot_table(index="jobs", columns="series", values="iops")
            e = twin.pivot_table(index="jobs", columns="series", values="rel_error")
            for c in t.columns:
                view[f"twin {c}"] = view["jobs"].map(t[c])
                view[f"twin error {c}"] = view["jobs"].map(e[c])
        fmt = {c: (_pct if "error" in c else _k) for c in view.columns if c != "jobs"}
        fmt["jobs"] = lambda v: f"{int(v)}"
        parts.append(f'<p class="note">Table 1. IOPS of the 16-vCPU guest as published '
                     f'({_e(SEED_SOURCE[0])}, <a href="{SEED_SOURCE[1]}">{SEED_SOURCE[1]}</a>;'
                     " data/seed/xen-blkmq-rfc-2015.md), and the calibrated twin at the same "
                     "points with its error.</p>")
        parts.append(_table(view, fmt))
        parts.append(_claims(seed_claims(seed) + (twin_claims(twin) if twin is not None
                                                  else [])))
    if native is not None:  # this machine: another guest, its own table
        g = native.groupby(["jobs", "mode"])["iops"]
        n, lo, hi = (g.mean().unstack("mode"), g.min().unstack("mode"),
                     g.max().unstack("mode"))
        here = pd.DataFrame({"jobs": n.index})
        for c in n.columns:
            here[f"{c} mean (min-max)"] = [f"{_k(n.loc[j, c])} ({_k(lo.loc[j, c])}-"
                                           f"{_k(hi.loc[j, c])})" for j in n.index]
        cpus = int(native["usable_cpus"].iloc[0]) if "usable_cpus" in native else "?"
        reps = int(g.size().min())
        runs = f"{reps} runs" if reps > 1 else "1 run"
        parts.append(f'<p class="note">Table 2. The native engine on this machine ({cpus} '
                     f"CPUs, {runs} a point): another guest on other hardware, not "
                     "comparable point for point with Table 1.</p>")
        parts.append(_table(here, {"jobs": lambda v: f"{int(v)}"}))
        parts.append(_claims(native_claims(native)))
    parts.append(_figure(out, "figures/twin.png", "The published table (left) and the "
                         "discrete-event twin with the committed calibration (right).",
                         "xbq reproduce --steps twin --force"))
    parts.append(_figure(out, "figures/native.png", "The native engine: real threads and "
                         "spinlocks on this machine (1-second runs: the mean of the "
                         "repetitions a point, bars from the lowest to the highest).",
                         "xbq reproduce --steps native --force"))
    parts.append(_figure(out, "figures/engines-views.png", "All views side by side, with the "
                         "committed 2-core sweep (data/measured).",
                         "xbq reproduce --steps engines --force"))

    parts.append("<h2>2. The queueing models on the published table</h2>")
    if models is not None:
        cols = [c for c in ("model", "series", "fit", "k", "r2", "loo_rmse", "peak_x",
                            "peak_iops") if c in models]
        parts.append(_table(models[cols], {"r2": lambda v: f"{v:.3f}",
                                           "loo_rmse": _k, "peak_iops": _k,
                                           "peak_x": lambda v: f"{v:g}"},
                            left=("model", "series", "fit")))
        parts.append(_claims(model_claims(models)))
    parts.append(_figure(out, "figures/models.png", "Every model fitted to the seed, with "
                         "bootstrap bands (R² in each title).",
                         "xbq reproduce --steps models --force"))
    parts.append(_figure(out, "figures/fit_models-residuals.png", "Relative residuals of "
                         "every model.", "xbq reproduce --steps fit_models --force"))

    parts.append("<h2>3. Where the time goes in the twin</h2>")
    tt = _read(out, "twin_time.csv")
    parts.append(_claims(time_claims(tt) if tt is not None else []))
    parts.append(_figure(out, "figures/twin_time-states.png", "CPU time by state, guest and "
                         "dom0, at each job count.", "xbq reproduce --steps twin_time --force"))
    parts.append(_figure(out, "figures/twin_time-per-request.png", "Notifications, "
                         "interrupts, context switches and batching per request.",
                         "xbq reproduce --steps twin_time --force"))

    parts.append("<h2>4. What-ifs in the twin</h2>")
    wi = _read(out, "whatif.csv")
    parts.append(_claims(whatif_claims(wi) if wi is not None else []))
    parts.append(_figure(out, "figures/whatif-iops.png", "One change at a time to the "
                         "calibrated machine, nothing refitted.",
                         "xbq reproduce --steps whatif --force"))

    parts.append("<h2>5. Your own data</h2>")
    od = _read(out, "own_data-models.csv")
    parts.append("<p>Rerun the 2015 experiment on a Xen guest: <code>xbq fio job --filename "
                 "/dev/xvdb --out iometer.fio</code>, <code>fio --output-format=json+ "
                 "iometer.fio &gt; r.json</code>, <code>xbq fio import r.json --series "
                 "multi_ring --out mine.csv</code>, then <code>xbq fit mine.csv --model "
                 "usl-capped</code> or the <code>own_data</code> notebook.</p>")
    parts.append(_claims(own_data_claims(od) if od is not None else []))
    parts.append(_figure(out, "figures/own_data-fits.png", "The models on the example fio "
                         "results (data/examples).", "xbq reproduce --steps own_data --force"))

    parts.append("<h2>Chapters</h2><ul>")
    for name, title in CHAPTERS.items():
        s = state.get(name, {})
        page = out / "chapters" / f"{name}.html"
        status = s.get("status", "not run")
        link = f'<a href="chapters/{name}.html">{_e(title)}</a>' if page.exists() else \
            _e(title)
        cls = "bad" if status == "FAILED" else ""
        parts.append(f'<li>{link} <span class="{cls}">({_e(status)}'
                     f'{", reused" if s.get("reused") else ""})</span> — '
                     f"<code>notebooks/{name}.ipynb</code></li>")
    parts.append("</ul>")

    parts.append("<h2>Steps</h2>")
    steps = pd.DataFrame([{"step": n, "status": s.get("status"),
                           "reused": "yes" if s.get("reused") else "",
                           "seconds": s.get("seconds", 0.0), "summary": s.get("summary", "")}
                          for n, s in state.items() if n != "report"])
    if len(steps):
        parts.append(_table(steps, {"seconds": lambda v: f"{v:.1f}"},
                            left=("step", "status", "summary")))

    parts.append("<h2>Provenance</h2>")
    parts.append(_table(pd.DataFrame({"": list(prov), "value": list(prov.values())}),
                        left=("", "value")))
    parts.append("</body></html>")
    page = out / "index.html"
    atomic_write(page, "\n".join(parts).encode("utf-8"))
    (out / "REPORT.md").write_text("# xbq reproduce\n\n" + _steps_md(state) + "\n\nSee "
                                   "index.html for the study.\n")
    return page, missing_images(page)
