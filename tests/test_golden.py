"""Today's code reproduces the golden outputs recorded before the state redesign.

``tests/golden/record.py`` wrote them; see its docstring. Discrete-event frames and the
loopback and handshake outputs must match exactly (the frames as text at 17 significant
digits, i.e. bit for bit). Fitted numbers are floating point and round differently with
another BLAS kernel, thread count or CPU: they are compared by ``tests/golden/compare.py``
at tolerances that rounding never exceeds and a changed model does, and the comparison is
shown to hold under other OpenBLAS kernels and thread counts, and to fail for a model
changed by one part in a thousand.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
import compare  # noqa: E402
import record  # noqa: E402

#: Frame columns added since the golden outputs were recorded (``config``, the point's JSON,
#: is left out by ``record.des_frames``: the file's column of that name is the golden
#: configuration's label, ``golden`` in today's frames).
NEW_COLUMNS = ("tag_wait_per_req", "iops_se", "placement_left_out")


def test_des_frames_bit_for_bit():
    """Every column bit for bit, except ``point_key``: it hashes every setting, so the
    parameters added since (``vcpu_wake_ns``, ``tag_wait``, ``be_pools_per_ring``, all off
    here) give new keys to the same runs."""
    import pandas as pd

    frames = record.des_frames()
    buf = io.StringIO()
    frames.drop(columns=list(NEW_COLUMNS)).to_csv(buf, index=False, float_format="%.17g")
    old = pd.read_csv(GOLDEN / "des.csv", dtype=str, keep_default_na=False).rename(
        columns={"config": "golden"})
    new = pd.read_csv(io.StringIO(buf.getvalue()), dtype=str, keep_default_na=False)
    assert list(new.columns) == list(old.columns), "columns differ"
    keep = [c for c in old.columns if c != "point_key"]
    want = old[keep].to_csv(index=False).splitlines()
    got = new[keep].to_csv(index=False).splitlines()
    assert got[0] == want[0], "columns differ"
    bad = [(w.split(",")[-1], i) for i, (g, w) in enumerate(zip(got, want, strict=True))
           if g != w]
    assert not bad, f"frames differ for {bad[:5]}"


def test_des_placement_frames_bit_for_bit():
    """Points averaged over several placements of the jobs: every column bit for bit."""
    import pandas as pd

    buf = io.StringIO()
    record.des_placement_frames().to_csv(buf, index=False, float_format="%.17g")
    old = pd.read_csv(GOLDEN / "des-placements.csv", dtype=str, keep_default_na=False)
    new = pd.read_csv(io.StringIO(buf.getvalue()), dtype=str, keep_default_na=False)
    assert list(new.columns) == list(old.columns), "columns differ"
    bad = [(name, c) for c in old.columns for name, a, b in
           zip(old["golden"], old[c], new[c], strict=True) if a != b]
    assert not bad, f"frames differ: {bad[:8]}"


_CHECK_DES = """
import io, sys
sys.path.insert(0, {golden!r})
import record
buf = io.StringIO()
record.des_placement_frames().to_csv(buf, index=False, float_format="%.17g")
sys.exit(0 if buf.getvalue() == open({csv!r}).read() else 1)
"""


def test_des_placement_frames_under_another_blas():
    """The placement-weighted means are the same bits under OpenBLAS's SandyBridge kernel
    (no FMA): they used np.dot, whose summation order the BLAS kernel chooses."""
    code = _CHECK_DES.format(golden=str(GOLDEN), csv=str(GOLDEN / "des-placements.csv"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OPENBLAS_CORETYPE": "SandyBridge"}, timeout=900,
                         cwd=GOLDEN.parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


#: Counters added since the golden outputs were recorded (each zero in every golden run).
NEW_COUNTERS = {"back": {"map_errors"}}


def test_loopback_outputs():
    """Equal, except the backend's new ``map_errors`` counter (grant maps that failed: the
    old code folded them into the error responses; the golden runs have none)."""
    want = json.loads((GOLDEN / "loopback.json").read_text())
    got = json.loads(json.dumps(record.loopbacks(), sort_keys=True))
    assert got.keys() == want.keys()
    for name, run in got.items():
        for side, new in NEW_COUNTERS.items():
            assert all(run[side].pop(k) == 0 for k in new), (name, side)
    assert got == want


def test_handshake_outputs():
    want = json.loads((GOLDEN / "negotiate.json").read_text())
    assert json.loads(json.dumps(record.handshakes(), sort_keys=True)) == want


def _seed_scale() -> float:
    from xbq.study.datasets import load_seed

    return float(load_seed()["iops"].max())


def test_fit_outputs():
    want = json.loads((GOLDEN / "fit.json").read_text())
    got = json.loads(json.dumps(record.fits(), sort_keys=True))
    bad = compare.mismatches(got, want, _seed_scale())
    assert not bad, bad[:10]


#: Other machines' linear algebra: OpenBLAS thread counts and kernels (Haswell is the kernel
#: AMD EPYC (Zen) runs; SandyBridge has no FMA; Prescott is the SSE3 baseline).
BLAS = [{"OPENBLAS_NUM_THREADS": "1"}, {"OPENBLAS_NUM_THREADS": "2"},
        {"OPENBLAS_CORETYPE": "Haswell"}, {"OPENBLAS_CORETYPE": "SandyBridge"},
        {"OPENBLAS_CORETYPE": "Prescott"}]
_CHECK = """
import json, sys
sys.path.insert(0, {golden!r})
import compare, record
from xbq.study.datasets import load_seed
want = json.loads(open({fit!r}).read())
got = json.loads(json.dumps(record.fits(), sort_keys=True))
bad = compare.mismatches(got, want, float(load_seed()["iops"].max()))
print(len(bad), bad[:5])
sys.exit(1 if bad else 0)
"""


@pytest.mark.parametrize("env", BLAS, ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()))
def test_fit_outputs_under_other_blas(env):
    """The same comparison in a fresh process whose OpenBLAS uses another kernel or thread
    count (the variables are read when the library loads)."""
    code = _CHECK.format(golden=str(GOLDEN), fit=str(GOLDEN / "fit.json"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=600,
                         cwd=GOLDEN.parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_fit_comparison_catches_a_model_changed_by_one_part_in_a_thousand(monkeypatch):
    """A test of the test: USL bent by 0.1 % at 64 jobs (a shape its parameters cannot
    absorb) must fail the golden comparison, and only in USL's rows."""
    import dataclasses

    import numpy as np

    from xbq.models import registry

    spec = registry.MODELS["usl"]
    bent = dataclasses.replace(spec, evaluate=lambda x, P: spec.evaluate(x, P) * (
        1.0 + 1e-3 * np.log(np.asarray(x, float)) / np.log(64.0)))
    monkeypatch.setitem(registry.MODELS, "usl", bent)
    want = json.loads((GOLDEN / "fit.json").read_text())
    got = json.loads(json.dumps(record.fits(), sort_keys=True))
    bad = compare.mismatches(got, want, _seed_scale())
    rows = {int(b.split("[", 1)[1].split("]", 1)[0]) for b in bad if b.startswith("fit.compare[")}
    assert bad and rows, "a changed model passed the golden comparison"
    assert {want["compare"][r]["model"] for r in rows} == {"usl"}, bad[:5]
