"""The whole study, end to end, into one output directory (``xbq reproduce``).

Data steps compute the study's tables and figures; chapter steps execute the notebooks
(:mod:`xbq.study.chapters`) into ``out/chapters/`` as notebooks and HTML; the last step
writes ``out/index.html`` (:mod:`xbq.study.report`) and ``out/REPORT.md``. Steps, in order:

1. ``handshake``: the XenStore handshake of the seed's two configurations (16 vCPUs; the
   legacy single ring, and 16 queues), with their trees;
2. ``ring``: I/Os through the real protocol in one thread on both configurations, ramdisk
   data verified, counters and round trips per second;
3. ``seed``: the published table and its summary;
4. ``models``: every queueing model fitted to the seed, the comparison table, the figure;
5. ``twin``: the discrete-event twin of the 16-vCPU guest, with the committed calibration,
   on every seed point, next to the published table;
6. ``native``: real threads on this machine, single ring vs per-ring locks, short runs;
7. the chapters (:data:`xbq.study.chapters.CHAPTERS`), each a notebook with its
   ``parameters`` cell set from here;
8. ``report``: ``index.html``.

A step whose inputs and code are unchanged is reused: its key (:func:`step_key`: the commit
and dirty flag, a hash of every source file of ``xbq/``, the notebook, the data files, the
``quick`` switch and the keys of the steps it reads) is kept in ``out/.reproduce.json`` with
its outcome, and a step whose key matches and whose outputs all exist is not run again
(``force`` reruns everything). A step that fails is reported in one line, leaves
``<step>.error.txt``, and the others still run; the report shows the failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from xbq.errors import XbqError
from xbq.study.chapters import CHAPTERS
from xbq.study.paths import PACKAGE_DIR, git_commit

#: Configurations of the seed experiment: a 16-vCPU guest on a 16-vCPU dom0.
SEED_CONFIGS = {"single_ring": dict(max_queues=1), "multi_ring": dict(max_queues=16)}
STATE_FILE = ".reproduce.json"


@dataclass
class Context:
    """What a step needs: the output directory and the switches."""

    out: Path
    quick: bool
    progress: bool = False
    #: The reader's own fio JSON files for the own_data chapter (``--own``), and their
    #: guest's vCPUs and rings (None: not stated).
    own: tuple = ()
    own_vcpus: int | None = None
    own_queues: int | None = None

    @property
    def figures(self) -> Path:
        path = self.out / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _agg():
    import matplotlib

    matplotlib.use("Agg")


def step_handshake(ctx: Context) -> str:
    from xbq.blkif.negotiate import negotiate

    lines = []
    for name, kw in SEED_CONFIGS.items():
        conn = negotiate(vcpus=16, dom0_vcpus=16, **kw)
        if not conn.connected:
            raise XbqError(f"{name}: handshake failed: {conn.error}")
        (ctx.out / f"xenstore-{name}.txt").write_text(conn.store.format_tree() + "\n")
        lines.append(f"{name}: {conn.nr_rings} ring(s) x {conn.nr_ents} slots, "
                     f"persistent grants {conn.features['feature_persistent']}, "
                     f"indirect segments {conn.features['max_indirect_segments']}")
    return "; ".join(lines)


def step_ring(ctx: Context) -> str:
    from xbq.blkif.loopback import loopback
    from xbq.blkif.negotiate import negotiate

    results, lines = {}, []
    for name, kw in SEED_CONFIGS.items():
        conn = negotiate(vcpus=16, dom0_vcpus=16, sectors=1 << 16, **kw)
        res = loopback(conn, nr_ios=2_000 if ctx.quick else 20_000, batch=4,
                       device="ramdisk", seed=1)
        results[name] = res
        lines.append(f"{name}: {res['requests']} requests verified, "
                     f"{res['round_trips_per_s']:,.0f}/s")
    (ctx.out / "ring.json").write_text(json.dumps(results, indent=2) + "\n")
    return "; ".join(lines)


def step_seed(ctx: Context) -> str:
    from xbq.study.datasets import load_seed, summarize

    seed = load_seed()
    text = summarize(seed)
    (ctx.out / "seed.txt").write_text(text + "\n")
    seed.to_csv(ctx.out / "seed.csv", index=False)
    return text.splitlines()[-2] if text else ""


def step_models(ctx: Context) -> str:
    _agg()
    from xbq.fit.compare import compare, markdown_table, residual_table
    from xbq.study.datasets import load_seed
    from xbq.study.plots import plot_fits
    from xbq.study.tables import parameter_table

    seed = load_seed()
    table, fits = compare(seed, bootstrap=100 if ctx.quick else 1000, seed=0,
                          return_fits=True)
    table.to_csv(ctx.out / "models.csv", index=False)
    parameter_table(fits).to_csv(ctx.out / "models-parameters.csv", index=False)
    (ctx.out / "models.md").write_text("# Models fitted to the seed table\n\n"
                                       + markdown_table(table) + "\n\n## Residuals\n\n"
                                       + residual_table(fits) + "\n")
    plot_fits(seed, fits).savefig(ctx.figures / "models.png", dpi=120, bbox_inches="tight")
    best = table.sort_values("r2", ascending=False).groupby("series").head(1)
    return "; ".join(f"best R² on {r.series}: {r.model} ({r.r2:.3f})" for r in best.itertuples())


def calibrated_params():
    """The committed calibration of the twin (:func:`xbq.study.paths.calibration_file`), or
    None."""
    from xbq.engines.des.params import load_params
    from xbq.study.paths import calibration_file

    path = calibration_file()
    return load_params(path) if path.exists() else None


def step_twin(ctx: Context) -> str:
    _agg()
    from xbq.engines.des.table import simulate_table
    from xbq.study.calibrate import as_verified
    from xbq.study.datasets import load_seed
    from xbq.study.plots import plot_iops

    seed = load_seed()
    params = calibrated_params()
    if params is not None:  # as the calibration verified its points
        params = as_verified(params)
    twin = simulate_table(seed, params, requests=2_000 if ctx.quick else 20_000, seed=1,
                          quiet=not ctx.progress)
    twin.to_csv(ctx.out / "twin.csv", index=False)
    fig = plot_iops({"published (2015)": seed, "discrete-event twin": twin},
                    title="16-vCPU guest, IOmeter, null device")
    fig.savefig(ctx.figures / "twin.png", dpi=120, bbox_inches="tight")
    err = twin.rel_error.abs()
    from xbq.study.paths import CALIBRATION

    source = CALIBRATION if params is not None else "default costs (no calibration)"
    return (f"params {source}: median |error| {err.median():.0%}, max {err.max():.0%}, "
            f"{int((err <= 0.10).sum())} of {len(twin)} seed points within 10 %")


#: Repetitions of each native point (their spread is drawn and bounds the claims).
NATIVE_REPS = 3


def step_native(ctx: Context) -> str:
    _agg()
    from xbq.engines.native import measure_point, points
    from xbq.engines.schema import to_frame
    from xbq.study.plots import plot_iops
    from xbq.study.results import ResultsStore, run_points

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = [1, 2] if ctx.quick else [1, 2, 4, 8, 16]
    pts = points(mode=["sq", "mq"], jobs=jobs, queues=max(1, min(cpus, 4)), vcpus=cpus,
                 iodepth=32, device="null", duration=0.2 if ctx.quick else 1.0,
                 warmup=0.1 if ctx.quick else 0.3, reps=1 if ctx.quick else NATIVE_REPS,
                 seed=0)
    with ResultsStore(ctx.out / "native.csv", {"command": "xbq reproduce (native)"},
                      axes=("mode", "jobs"), existing="overwrite") as store:
        df = to_frame(run_points(pts, measure_point, store))
    fig = plot_iops({f"native threads, {cpus} CPUs": df}, title="measured on this machine")
    fig.savefig(ctx.figures / "native.png", dpi=120, bbox_inches="tight")
    best = df.groupby(["mode", "jobs"]).iops.mean().groupby("mode").max()
    return ", ".join(f"{m} peak {v:,.0f} IOPS" for m, v in best.items()) + f" on {cpus} CPUs"


#: Extra parameters of each chapter (beyond ``quick`` and ``out_dir``), from the context.
CHAPTER_PARAMS = {
    "engines": lambda ctx: {"native_csv": str(ctx.out / "native.csv"),
                            "twin_csv": str(ctx.out / "twin.csv")},
    "own_data": lambda ctx: {"fio_files": [str(p) for p in ctx.own], "vcpus": ctx.own_vcpus,
                             "queues": ctx.own_queues} if ctx.own else {},
}
#: The data steps each chapter reads.
CHAPTER_DEPS = {"engines": ("twin", "native")}
#: Files each chapter leaves (besides its notebook and HTML), for the reuse check.
CHAPTER_OUTPUTS = {
    "fit_models": ("figures/fit_models-fits.png", "figures/fit_models-residuals.png"),
    "engines": ("figures/engines-views.png", "figures/engines-fits.png"),
    "twin_time": ("twin_time.csv", "figures/twin_time-states.png",
                  "figures/twin_time-per-request.png"),
    "whatif": ("whatif.csv", "figures/whatif-iops.png"),
    "trust": ("figures/trust-native.png",),
    "own_data": ("own_data-models.csv", "figures/own_data-iops.png",
                 "figures/own_data-fits.png"),
}


def _chapter_step(name: str):
    def run(ctx: Context) -> str:
        from xbq.study.chapters import error_outputs, execute, missing_images, to_html

        params = {"quick": ctx.quick, "out_dir": str(ctx.out)}
        params.update(CHAPTER_PARAMS.get(name, lambda c: {})(ctx))
        nb = execute(name, ctx.out, params, progress=ctx.progress)
        errors = error_outputs(nb)
        if errors:
            raise XbqError(f"chapter {name}: error output(s): {'; '.join(errors)}")
        page = to_html(nb)
        missing = missing_images(page)
        if missing:
            raise XbqError("; ".join(missing))
        return f"{page.relative_to(ctx.out)} ({page.stat().st_size / 1e3:.0f} kB)"
    return run


def step_report(ctx: Context) -> str:
    from xbq.study.report import write_report

    page, problems = write_report(ctx.out, load_state(ctx.out), quick=ctx.quick)
    if problems:
        raise XbqError("; ".join(problems))
    return f"{page.name} ({page.stat().st_size / 1e3:.0f} kB)"


@dataclass(frozen=True)
class Step:
    """One step: what it runs, what it reads (for its key) and what it leaves."""

    name: str
    title: str
    run: object
    outputs: tuple = ()
    inputs: tuple = ()  # files under the repository, hashed into the key
    deps: tuple = ()  # steps whose outputs it reads
    cache: bool = True  # False: run every time


def _steps() -> dict[str, Step]:
    steps = [
        Step("handshake", "XenStore handshake", step_handshake,
             ("xenstore-single_ring.txt", "xenstore-multi_ring.txt")),
        Step("ring", "protocol in one thread", step_ring, ("ring.json",)),
        Step("seed", "the published table", step_seed, ("seed.txt", "seed.csv"),
             ("data/seed",)),
        Step("models", "models fitted to the seed", step_models,
             ("models.csv", "models.md", "models-parameters.csv", "figures/models.png"),
             ("data/seed",)),
        Step("twin", "the twin on the seed's points", step_twin,
             ("twin.csv", "figures/twin.png"), ("data/seed", "data/calibrated")),
        Step("native", "native threads on this machine", step_native,
             ("native.csv", "figures/native.png")),
    ]
    for name, title in CHAPTERS.items():
        steps.append(Step(name, title, _chapter_step(name),
                          (f"chapters/{name}.ipynb", f"chapters/{name}.html",
                           *CHAPTER_OUTPUTS.get(name, ())),
                          (f"notebooks/{name}.ipynb", "data"), CHAPTER_DEPS.get(name, ())))
    steps.append(Step("report", "index.html", step_report, ("index.html", "REPORT.md"),
                      cache=False))
    return {s.name: s for s in steps}


STEPS = _steps()


def _hash_paths(h, paths) -> None:
    root = PACKAGE_DIR.parent
    for rel in paths:
        p = root / rel
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.exists() and "__pycache__" not in f.parts:
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())


def code_hash() -> str:
    """Hash of every source file of the package (what a step's code is)."""
    h = hashlib.sha256()
    _hash_paths(h, sorted(p.relative_to(PACKAGE_DIR.parent).as_posix()
                          for p in PACKAGE_DIR.rglob("*.py")))
    return h.hexdigest()


def step_key(step: Step, quick: bool, code: str, commit: str | None, dep_keys: dict,
             extra: str | None = None) -> str:
    """The key a step's outcome is reused under (see the module docstring); ``extra`` keys
    what else it reads (the reader's own files)."""
    what = {"step": step.name, "quick": quick, "code": code, "commit": commit,
            "deps": dep_keys}
    if extra is not None:
        what["extra"] = extra
    h = hashlib.sha256(json.dumps(what, sort_keys=True).encode())
    _hash_paths(h, step.inputs)
    return h.hexdigest()[:24]


def load_state(out) -> dict:
    """The outcomes of the last run into ``out`` (``{}`` if none or unreadable)."""
    try:
        return json.loads((Path(out) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(out: Path, state: dict) -> None:
    tmp = out / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, out / STATE_FILE)


def _own_files(own, vcpus, queues) -> tuple[tuple, str | None]:
    """The reader's fio files as absolute paths, checked, and the key of their contents."""
    if not own:
        return (), None
    paths = tuple(Path(p).resolve() for p in own)
    h = hashlib.sha256(json.dumps({"vcpus": vcpus, "queues": queues}).encode())
    for p in paths:
        if not p.is_file():
            raise XbqError(f"--own {p}: no such file")
        try:
            h.update(p.read_bytes())
        except OSError as exc:
            raise XbqError(f"--own {p}: {exc.strerror}") from None
    return paths, h.hexdigest()[:24]


def reproduce(out, *, quick: bool = False, steps=None, force: bool = False,
              progress: bool = True, echo=print, own=(), own_vcpus: int | None = None,
              own_queues: int | None = None) -> list[str]:
    """Run the study's steps (default: all, in order) into directory ``out``.

    Parameters
    ----------
    out : path
        Output directory (created).
    quick : bool
        Fewer I/Os, shorter runs and fewer bootstrap resamples (a smoke test).
    steps : list of str, optional
        A subset of :data:`STEPS` (the report is always written last).
    force : bool
        Run every step, even those whose outcome could be reused.
    progress : bool
        A progress bar over the steps on a terminal.
    echo : callable
        Receives one line as each step starts and ends.
    own : sequence of path
        Your own fio JSON results: the own_data chapter fits them instead of the example
        (``own_vcpus``, ``own_queues``: the guest's vCPUs and rings they were measured on).

    Returns
    -------
    list of str
        The steps that failed (each leaves ``<step>.error.txt`` with its traceback).
    """
    from xbq.progress import Progress

    out = Path(out)
    names = list(STEPS) if steps is None else list(dict.fromkeys(steps))
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        raise XbqError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    if "report" in names:
        names.remove("report")
    names.append("report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise XbqError(f"cannot create {out}: {exc.strerror}") from None
    own, own_key = _own_files(own, own_vcpus, own_queues)
    state = load_state(out)
    code, commit = code_hash(), git_commit()
    failed = []
    with Progress(len(names), "reproduce", unit="step", quiet=not progress) as bar:
        ctx = Context(out.resolve(), quick, progress=bar.active, own=own,
                      own_vcpus=own_vcpus, own_queues=own_queues)
        say = bar.write if bar.active else echo
        for name in names:
            step = STEPS[name]
            deps = {d: state.get(d, {}).get("key") for d in step.deps}
            key = step_key(step, quick, code, commit, deps,
                           own_key if name == "own_data" else None)
            old = state.get(name, {})
            if (step.cache and not force and old.get("key") == key
                    and old.get("status") == "ok"
                    and all((out / o).exists() for o in step.outputs)):
                say(f"[{name}] reused ({old.get('seconds', 0):.1f} s when made): "
                     f"{old.get('summary', '')}")
                state[name] = {**old, "reused": True}
                bar.update(1, step=name)
                continue
            say(f"[{name}] ...")
            t0 = time.perf_counter()
            (out / f"{name}.error.txt").unlink(missing_ok=True)
            try:
                summary, status = step.run(ctx), "ok"
            except Exception as exc:  # report the step, keep going with the others
                summary, status = f"{type(exc).__name__}: {exc}", "FAILED"
                failed.append(name)
                (out / f"{name}.error.txt").write_text(traceback.format_exc())
            dt = time.perf_counter() - t0
            state[name] = {"key": key, "status": status, "summary": summary, "seconds": dt,
                           "title": step.title, "reused": False,
                           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            _save_state(out, state)
            say(f"[{name}] {status} in {dt:.1f} s: {summary}")
            bar.update(1, step=name)
    _save_state(out, state)
    return failed


__all__ = ["STEPS", "reproduce", "step_key", "load_state", "Context"]
